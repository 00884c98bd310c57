//! Per-connection state inside the server.

use crate::crypto::PublicKey;
use crate::types::{Seq, UserName};
use crate::wire::{FrameDecoder, Nonce};
use std::collections::HashSet;
use std::time::Instant;

/// Where a connection is in the handshake.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for Hello.
    AwaitHello,
    /// Hello done; Register / Login / FetchKey allowed.
    Open,
    /// Logged in as `user`.
    LoggedIn(LoggedIn),
}

/// A logged-in session.
#[derive(Debug)]
pub(crate) struct LoggedIn {
    pub user: UserName,
    /// Listening: deliveries flow.
    pub online: bool,
    /// Next mailbox sequence number to deliver.
    pub cursor: Seq,
    /// Delivered, not yet acknowledged.
    pub in_flight: HashSet<Seq>,
}

/// A pending challenge.
#[derive(Debug)]
pub(crate) struct Challenge {
    pub nonce: Nonce,
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
    pub challenge: Option<Challenge>,
    /// Presence the session starts with (SetPresence before login sets it).
    pub start_online: bool,
    pub connected_at: Instant,
    /// When this connection's one live entry in the timer heap fires
    /// (entries with another time are stale and skipped).
    pub timer_at: Option<Instant>,
    /// Last time any packet arrived.
    pub last_heard: Instant,
    /// Frames waiting to be handed out as one Transmit.
    pub tx: Vec<u8>,
}

impl Conn {
    pub fn new(max_frame: u32, session_id: [u8; 16], now: Instant) -> Self {
        Self {
            decoder: FrameDecoder::new(max_frame),
            phase: Phase::AwaitHello,
            session_id,
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
