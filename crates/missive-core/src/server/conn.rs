//! Per-connection state inside the server.

use super::state::UserId;
use crate::crypto::{ChannelBinding, PublicKey, TranscriptVersion};
use crate::time::Instant;
use crate::types::{Seq, UserName};
use crate::wire::{FrameDecoder, Framing, Link, Nonce};
use std::collections::VecDeque;

/// Where a connection is in the handshake.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for Hello.
    AwaitHello,
    /// Hello done; Register / Login / FetchKey allowed. Logins and
    /// registrations sign the transcript of the version Welcome chose.
    Open(TranscriptVersion),
    /// Logged in as `user`.
    LoggedIn(LoggedIn),
}

/// A logged-in session.
#[derive(Debug)]
pub(crate) struct LoggedIn {
    pub user: UserName,
    /// The user's number in the server state.
    pub id: UserId,
    /// Listening: deliveries flow.
    pub online: bool,
    /// Next mailbox sequence number to deliver.
    pub cursor: Seq,
    /// Delivered, not yet acknowledged.
    pub in_flight: InFlight,
}

/// Sequence numbers delivered and not yet acknowledged, ascending.
/// Deliveries go out in sequence order, so adding is a push at the back;
/// acknowledgements usually take the front. Bounded by the window.
#[derive(Debug, Default)]
pub(crate) struct InFlight(VecDeque<Seq>);

impl InFlight {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds `seq`, greater than every sequence number held.
    pub fn push(&mut self, seq: Seq) {
        debug_assert!(self.0.back().is_none_or(|&last| last < seq));
        self.0.push_back(seq);
    }

    /// Removes `seq`; whether it was held.
    pub fn remove(&mut self, seq: Seq) -> bool {
        if self.0.front() == Some(&seq) {
            self.0.pop_front();
            return true;
        }
        match self.0.binary_search(&seq) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }
}

/// A pending challenge.
#[derive(Debug)]
pub(crate) struct Challenge {
    pub nonce: Nonce,
    /// The transcript the answer must sign.
    pub transcript: TranscriptVersion,
    pub expires: Instant,
    pub purpose: ChallengePurpose,
}

/// What a challenge will prove.
#[derive(Debug)]
pub(crate) enum ChallengePurpose {
    Login { user: UserName },
    Register { user: UserName, key: Box<PublicKey> },
}

/// One transport connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub decoder: FrameDecoder,
    pub phase: Phase,
    pub session_id: [u8; 16],
    /// The transport's channel binding, as the driver computed it on this
    /// side (never the client's claim).
    pub binding: ChannelBinding,
    /// Frames or bare packets (see `Server::poll_output`).
    pub framing: Framing,
    /// Handshake-only, so out of line: most connections are logged in.
    pub challenge: Option<Box<Challenge>>,
    /// Presence the session starts with (SetPresence before login sets it).
    pub start_online: bool,
    pub connected_at: Instant,
    /// When this connection's one live entry in the timer heap fires
    /// (entries with another time are stale and skipped).
    pub timer_at: Option<Instant>,
    /// Last time any packet arrived.
    pub last_heard: Instant,
    /// Frames waiting to be handed out: as one Transmit on a byte stream,
    /// as one Transmit per packet on a message transport.
    pub tx: Vec<u8>,
}

impl Conn {
    pub fn new(max_frame: u32, session_id: [u8; 16], link: Link, now: Instant) -> Self {
        Self {
            decoder: FrameDecoder::new(max_frame),
            phase: Phase::AwaitHello,
            session_id,
            binding: link.binding,
            framing: link.framing,
            challenge: None,
            start_online: true,
            connected_at: now,
            timer_at: None,
            last_heard: now,
            tx: Vec::new(),
        }
    }

    pub fn user(&self) -> Option<&UserName> {
        match &self.phase {
            Phase::LoggedIn(s) => Some(&s.user),
            _ => None,
        }
    }

    pub fn user_id(&self) -> Option<UserId> {
        match &self.phase {
            Phase::LoggedIn(s) => Some(s.id),
            _ => None,
        }
    }

    pub fn session(&self) -> Option<&LoggedIn> {
        match &self.phase {
            Phase::LoggedIn(s) => Some(s),
            _ => None,
        }
    }

    pub fn session_mut(&mut self) -> Option<&mut LoggedIn> {
        match &mut self.phase {
            Phase::LoggedIn(s) => Some(s),
            _ => None,
        }
    }
}

// Sizes of 64-bit targets.
#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;

    /// Every connection's `Conn` sits in the server's map, handshake or
    /// not: the handshake-only challenge is a pointer there.
    #[test]
    fn handshake_state_is_out_of_line() {
        assert_eq!(std::mem::size_of::<Option<Box<Challenge>>>(), 8);
        // 376 bytes with the challenge (112) inline.
        let conn = std::mem::size_of::<Conn>();
        assert!(conn <= 272, "Conn is {conn} bytes");
    }
}
