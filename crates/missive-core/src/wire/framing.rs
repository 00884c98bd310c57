//! How a transport carries packets (docs/PROTOCOL.md §1): the driver tells
//! the core, per connection, with a [`Link`].

use crate::crypto::ChannelBinding;

/// How packets are delimited on a connection.
///
/// The packet codec ([`encode_packet_into`](super::encode_packet_into),
/// [`decode_packet`](super::decode_packet)) is the same for both; only the
/// frame around it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Framing {
    /// A byte stream (TCP, TLS): every packet behind its 4-byte big-endian
    /// length. Received bytes may be chunked any way; a `Transmit` holds
    /// one or more whole frames.
    #[default]
    Stream,
    /// A message transport (WebSocket binary messages): one bare packet per
    /// message, no length prefix. Every received chunk is exactly one
    /// message; every `Transmit` is exactly one packet, to be sent as one
    /// message.
    Messages,
}

/// What the driver knows about a new connection that the protocol needs:
/// its framing and its channel binding (as this side computed it, never a
/// peer's claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The channel binding for the login transcript (§3.2).
    pub binding: ChannelBinding,
    /// How packets are delimited.
    pub framing: Framing,
}

impl Link {
    /// A byte stream with this binding (TCP: [`ChannelBinding::None`]; TLS:
    /// the exporter value).
    pub const fn stream(binding: ChannelBinding) -> Self {
        Self {
            binding,
            framing: Framing::Stream,
        }
    }

    /// A message transport with this binding.
    pub const fn messages(binding: ChannelBinding) -> Self {
        Self {
            binding,
            framing: Framing::Messages,
        }
    }

    /// Plaintext TCP: a byte stream without a channel binding.
    pub const PLAINTEXT: Self = Self::stream(ChannelBinding::None);
}
