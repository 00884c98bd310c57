//! Per-connection state (forgotten on disconnect) and the output queue.

use super::events::{ClientEvent, ClientOutput};
use crate::crypto::{AuthContext, ChannelBinding, TranscriptVersion};
use crate::time::Instant;
use crate::types::{MessageId, PeerKeyHasher, UserName};
use crate::wire::{
    ClientPacket, EncodeError, FrameDecoder, Framing, Link, WireLimits, encode_frame,
    encode_frame_into, encode_packet_into,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

/// Shortest ping interval honoured, whatever the server announces.
pub(super) const MIN_PING_INTERVAL: Duration = Duration::from_millis(10);

/// Where the connection's handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Hello sent, waiting for Welcome.
    AwaitWelcome,
    /// Login or Register sent, waiting for the challenge.
    AwaitChallenge(AuthContext),
    /// Prove (registration) sent, waiting for Registered.
    AwaitRegistered,
    /// Prove (login) sent, waiting for LoggedIn.
    AwaitLoggedIn,
    /// Logged in: messages flow.
    LoggedIn,
    /// The client asked the driver to close; input is ignored.
    Closed,
}

/// What the server announced in Welcome.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerInfo {
    pub(super) server_id: [u8; 16],
    pub(super) session_id: [u8; 16],
    pub(super) limits: WireLimits,
    /// The transcript the chosen version signs.
    pub(super) transcript: TranscriptVersion,
}

/// A request naming a user, waiting for its answer (to attribute errors
/// that carry only a user name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    FetchKey(UserName),
    QueryPresence(UserName),
}

impl Request {
    pub(super) fn user(&self) -> &UserName {
        match self {
            Request::FetchKey(u) | Request::QueryPresence(u) => u,
        }
    }
}

/// One transport connection.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) phase: Phase,
    /// The transport's channel binding, as this client computed it.
    pub(super) binding: ChannelBinding,
    /// Frames or bare packets.
    pub(super) framing: Framing,
    pub(super) decoder: FrameDecoder,
    /// Frame limit to switch the decoder to once its buffer is empty.
    pub(super) next_decoder_limit: Option<u32>,
    /// Frame limit for encoding.
    pub(super) max_frame: u32,
    pub(super) server: Option<ServerInfo>,
    pub(super) ping_interval: Duration,
    pub(super) next_ping: Option<Instant>,
    pub(super) tried_register: bool,
    /// Sends on the wire, not yet answered.
    pub(super) in_flight: HashSet<MessageId, PeerKeyHasher>,
    /// Sends refused for now, to retry at the given time.
    pub(super) retry_at: HashMap<MessageId, Instant, PeerKeyHasher>,
    /// Users whose key is being fetched.
    pub(super) fetching: HashSet<UserName, PeerKeyHasher>,
    /// Key fetches refused for now, to retry at the given time.
    pub(super) fetch_retry: HashMap<UserName, Instant, PeerKeyHasher>,
    /// Users whose pinned key the server confirmed on this connection (it
    /// answered a fetch with that key, or the key was pinned from it): a new
    /// message to anyone else waits for a fetch, so that a changed key is
    /// seen before sealing (PROTOCOL.md §5).
    pub(super) confirmed_keys: HashSet<UserName, PeerKeyHasher>,
    /// User-naming requests waiting for answers, oldest first.
    pub(super) requests: VecDeque<Request>,
}

impl Session {
    pub(super) fn new(max_frame: u32, link: Link, hasher: &PeerKeyHasher) -> Self {
        Self {
            phase: Phase::AwaitWelcome,
            binding: link.binding,
            framing: link.framing,
            decoder: FrameDecoder::new(max_frame),
            next_decoder_limit: None,
            max_frame,
            server: None,
            ping_interval: Duration::ZERO,
            next_ping: None,
            tried_register: false,
            in_flight: HashSet::with_hasher(hasher.clone()),
            retry_at: HashMap::with_hasher(hasher.clone()),
            fetching: HashSet::with_hasher(hasher.clone()),
            fetch_retry: HashMap::with_hasher(hasher.clone()),
            confirmed_keys: HashSet::with_hasher(hasher.clone()),
            requests: VecDeque::new(),
        }
    }

    /// Applies a pending decoder limit if no partial frame is buffered.
    pub(super) fn maybe_switch_decoder(&mut self) {
        if let Some(limit) = self.next_decoder_limit
            && self.decoder.buffered_len() == 0
        {
            self.decoder = FrameDecoder::new(limit);
            self.next_decoder_limit = None;
        }
    }

    /// Removes the oldest pending request naming `user`.
    pub(super) fn take_request(&mut self, user: &UserName) -> Option<Request> {
        let pos = self.requests.iter().position(|r| r.user() == user)?;
        self.requests.remove(pos)
    }

    /// Removes the oldest pending request equal to `req`.
    pub(super) fn take_exact(&mut self, req: &Request) -> bool {
        match self.requests.iter().position(|r| r == req) {
            Some(pos) => {
                self.requests.remove(pos);
                true
            }
            None => false,
        }
    }

    /// The earliest deadline, if any.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        self.next_ping
            .into_iter()
            .chain(self.retry_at.values().copied())
            .chain(self.fetch_retry.values().copied())
            .min()
    }
}

/// Outputs waiting to be polled, plus the "state changed" flag (reported
/// after everything queued before it).
#[derive(Debug, Default)]
pub(super) struct Outputs {
    queue: VecDeque<ClientOutput>,
    dirty: bool,
}

impl Outputs {
    /// Queues one packet: on a byte stream as a frame, merged into a
    /// preceding Transmit when possible; on a message transport as a
    /// Transmit of its own.
    pub(super) fn frame(
        &mut self,
        framing: Framing,
        max_frame: u32,
        packet: &ClientPacket,
    ) -> Result<(), EncodeError> {
        match (framing, self.queue.back_mut()) {
            (Framing::Stream, Some(ClientOutput::Transmit(buf))) => {
                encode_frame_into(packet, max_frame, buf)
            }
            (Framing::Stream, _) => {
                let frame = encode_frame(packet, max_frame)?;
                self.queue.push_back(ClientOutput::Transmit(frame));
                Ok(())
            }
            (Framing::Messages, _) => {
                let mut message = Vec::new();
                encode_packet_into(packet, max_frame, &mut message)?;
                self.queue.push_back(ClientOutput::Transmit(message));
                Ok(())
            }
        }
    }

    pub(super) fn event(&mut self, event: ClientEvent) {
        self.queue.push_back(ClientOutput::Event(event));
    }

    pub(super) fn close(&mut self) {
        self.queue.push_back(ClientOutput::Close);
    }

    pub(super) fn changed(&mut self) {
        self.dirty = true;
    }

    /// Forgets transmissions and closes meant for a connection that is gone.
    pub(super) fn drop_connection_outputs(&mut self) {
        self.queue
            .retain(|o| !matches!(o, ClientOutput::Transmit(_) | ClientOutput::Close));
    }

    pub(super) fn pop(&mut self) -> Option<ClientOutput> {
        if let Some(out) = self.queue.pop_front() {
            return Some(out);
        }
        if self.dirty {
            self.dirty = false;
            return Some(ClientOutput::StateChanged);
        }
        None
    }
}
