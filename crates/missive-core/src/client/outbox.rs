//! The durable outbox: queueing, sealing, sending, and the server's answers.

use super::Client;
use super::events::{ClientEvent, SendError, SendFailure};
use super::session::{Phase, Request};
use super::state::OutboxEntry;
use crate::SharedBytes;
use crate::crypto::{self, ENVELOPE_VERSION, EnvelopeHeader, PublicKey};
use crate::rng;
use crate::time::Instant;
use crate::types::{MessageId, UserName};
use crate::wire::{ClientPacket, ErrorCode};
use std::collections::BTreeSet;

/// Least overhead of a sealed envelope over its body: an RSA-2048 wrapped
/// key, an RSA-2048 signature and the AEAD tag (keys are at least 2048 bits).
pub(super) const MIN_SEAL_OVERHEAD: usize = 256 + 256 + 16;

impl Client {
    pub(super) fn enqueue(
        &mut self,
        now: Instant,
        to: UserName,
        body: Vec<u8>,
    ) -> Result<MessageId, SendError> {
        if self.state.outbox.len() >= self.config.max_outbox {
            return Err(SendError::OutboxFull {
                max: self.config.max_outbox,
            });
        }
        let max = self.max_envelope.unwrap_or(self.config.max_frame) as usize;
        if body.len().saturating_add(MIN_SEAL_OVERHEAD) > max {
            return Err(SendError::TooLarge {
                len: body.len(),
                max,
            });
        }
        let id = loop {
            let id = MessageId(rng::bytes(&mut self.rng));
            if self.state.outbox_position(&id).is_none() {
                break id;
            }
        };
        let sent_at = self.unix_ms(now);
        self.state.outbox.push_back(OutboxEntry {
            id,
            to,
            body,
            sealed: None,
            seal_seed: Some(rng::bytes(&mut self.rng)),
            sent_at,
        });
        self.out.changed();
        self.pump();
        Ok(id)
    }

    /// Sends what can be sent: outbox entries (sealing them first) up to the
    /// in-flight limit, and key fetches for recipients and parked senders
    /// without a pinned key.
    pub(super) fn pump(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.phase != Phase::LoggedIn {
            return;
        }
        let Some(server) = conn.server else { return };
        let max_in_flight = self.config.max_sends_in_flight.max(1);
        // Recipients with a message waiting to be retried: what follows it
        // for them waits too, so that order per recipient holds.
        let mut held_back: Vec<UserName> = Vec::new();
        let mut i = 0;
        while i < self.state.outbox.len() {
            let entry = &self.state.outbox[i];
            if conn.retry_at.contains_key(&entry.id) {
                held_back.push(entry.to.clone());
                i += 1;
                continue;
            }
            if conn.in_flight.contains(&entry.id) || held_back.contains(&entry.to) {
                i += 1;
                continue;
            }
            if conn.in_flight.len() >= max_in_flight {
                break;
            }
            if entry.sealed.is_none() {
                let confirmed = conn.confirmed_keys.contains(&entry.to);
                let Some(key_der) = self.state.pinned.get(&entry.to).filter(|_| confirmed) else {
                    i += 1; // waits for the key (or its confirmation)
                    continue;
                };
                let header = EnvelopeHeader {
                    version: ENVELOPE_VERSION,
                    sender: self.config.user.clone(),
                    recipient: entry.to.clone(),
                    id: entry.id,
                    sent_at: entry.sent_at,
                };
                let seal_seed = entry.seal_seed.unwrap_or_else(|| rng::bytes(&mut self.rng));
                let mut seal_rng = rng::from_seed(seal_seed);
                let sealed = PublicKey::from_spki_der(key_der)
                    .map_err(|_| SendFailure::BadKey)
                    .and_then(|key| {
                        crypto::seal(
                            &mut seal_rng,
                            &self.identity,
                            &header,
                            &key,
                            &entry.body,
                            server.limits.max_envelope as usize,
                        )
                        .map_err(|_| SendFailure::TooLarge)
                    });
                match sealed {
                    Ok(bytes) => {
                        let entry = &mut self.state.outbox[i];
                        entry.sealed = Some(bytes);
                        entry.seal_seed = Some(seal_seed);
                        self.out.changed();
                    }
                    Err(reason) => {
                        if let Some(entry) = self.state.outbox.remove(i) {
                            self.out.changed();
                            self.out.event(ClientEvent::SendFailed {
                                to: entry.to,
                                id: entry.id,
                                reason,
                            });
                        }
                        continue;
                    }
                }
            }
            let entry = &self.state.outbox[i];
            let Some(envelope) = entry.sealed.as_deref().map(SharedBytes::from) else {
                i += 1;
                continue;
            };
            let packet = ClientPacket::Send {
                id: entry.id,
                to: entry.to.clone(),
                envelope,
            };
            if self
                .out
                .frame(conn.framing, conn.max_frame, &packet)
                .is_ok()
            {
                conn.in_flight.insert(entry.id);
                i += 1;
            } else if let Some(entry) = self.state.outbox.remove(i) {
                self.out.changed();
                self.out.event(ClientEvent::SendFailed {
                    to: entry.to,
                    id: entry.id,
                    reason: SendFailure::TooLarge,
                });
            }
        }

        let pinned = &self.state.pinned;
        // Recipients of unsealed messages whose key this connection has not
        // confirmed, and senders of parked envelopes with no pinned key.
        let unconfirmed_recipients = self
            .state
            .outbox
            .iter()
            .filter(|e| e.sealed.is_none())
            .map(|e| &e.to)
            .filter(|u| !(pinned.contains_key(*u) && conn.confirmed_keys.contains(*u)));
        let unknown_senders = self
            .state
            .parked
            .iter()
            .map(|p| &p.from)
            .filter(|u| !pinned.contains_key(*u));
        let wanted: BTreeSet<&UserName> = unconfirmed_recipients
            .chain(unknown_senders)
            .filter(|u| !conn.fetching.contains(*u) && !conn.fetch_retry.contains_key(*u))
            .collect();
        for user in wanted {
            if self
                .out
                .frame(
                    conn.framing,
                    conn.max_frame,
                    &ClientPacket::FetchKey { user: user.clone() },
                )
                .is_ok()
            {
                conn.fetching.insert(user.clone());
                conn.requests.push_back(Request::FetchKey(user.clone()));
            }
        }
    }

    pub(super) fn on_accepted(&mut self, id: MessageId) {
        if let Some(conn) = self.conn.as_mut() {
            conn.in_flight.remove(&id);
            conn.retry_at.remove(&id);
        }
        if let Some(entry) = self
            .state
            .outbox_position(&id)
            .and_then(|p| self.state.outbox.remove(p))
        {
            self.out.changed();
            self.out.event(ClientEvent::Accepted { id, to: entry.to });
        }
        self.pump();
    }

    /// A non-fatal `Error` while logged in: attributed to an outbox entry
    /// (by id), to a pending request (by user), or reported as is.
    pub(super) fn on_request_error(
        &mut self,
        now: Instant,
        code: ErrorCode,
        id: Option<MessageId>,
        user: Option<UserName>,
        detail: String,
    ) {
        let retry_at = now.checked_add(self.config.retry_after).unwrap_or(now);
        // `unavailable` (cluster, §2.7): the owner of the recipient's
        // shard is moving; `storage_unavailable`: the server's disk is
        // full. The send or key fetch stays and is retried.
        let retry = matches!(
            code,
            ErrorCode::RateLimited
                | ErrorCode::Busy
                | ErrorCode::Unavailable
                | ErrorCode::StorageUnavailable
        );
        if let Some(pos) = id.and_then(|id| self.state.outbox_position(&id)) {
            let id = self.state.outbox[pos].id;
            if let Some(conn) = self.conn.as_mut() {
                conn.in_flight.remove(&id);
                if retry {
                    conn.retry_at.insert(id, retry_at);
                    return;
                }
            }
            let reason = send_failure(code);
            if let Some(entry) = self.state.outbox.remove(pos) {
                self.out.changed();
                self.out.event(ClientEvent::SendFailed {
                    to: entry.to.clone(),
                    id,
                    reason,
                });
                if reason == SendFailure::UnknownUser {
                    self.fail_entries_for(&entry.to, reason);
                }
            }
            self.pump();
            return;
        }

        let Some(user) = user else {
            self.out.event(ClientEvent::RequestRefused {
                code,
                user: None,
                detail,
            });
            return;
        };
        match self.conn.as_mut().and_then(|c| c.take_request(&user)) {
            Some(Request::FetchKey(_)) => {
                if let Some(conn) = self.conn.as_mut() {
                    conn.fetching.remove(&user);
                    if retry {
                        conn.fetch_retry.insert(user, retry_at);
                        return;
                    }
                }
                let why = match code {
                    ErrorCode::UnknownUser => "the server does not know the sender".to_string(),
                    other => format!("cannot fetch the sender's key: {other:?}"),
                };
                self.fail_entries_for(&user, send_failure(code));
                self.drop_parked_from(&user, &why);
                self.pump();
            }
            Some(Request::QueryPresence(_)) if code == ErrorCode::UnknownUser => {
                self.out.event(ClientEvent::PresenceUnknown { user });
            }
            request => {
                if request.is_none() && code == ErrorCode::UnknownUser {
                    self.fail_entries_for(&user, SendFailure::UnknownUser);
                }
                self.out.event(ClientEvent::RequestRefused {
                    code,
                    user: Some(user),
                    detail,
                });
            }
        }
    }

    /// Removes every outbox entry for `to`, reporting `reason` for each.
    pub(super) fn fail_entries_for(&mut self, to: &UserName, reason: SendFailure) {
        let mut i = 0;
        while i < self.state.outbox.len() {
            if self.state.outbox[i].to != *to {
                i += 1;
                continue;
            }
            if let Some(entry) = self.state.outbox.remove(i) {
                if let Some(conn) = self.conn.as_mut() {
                    conn.in_flight.remove(&entry.id);
                    conn.retry_at.remove(&entry.id);
                }
                self.out.changed();
                self.out.event(ClientEvent::SendFailed {
                    to: entry.to,
                    id: entry.id,
                    reason,
                });
            }
        }
    }
}

/// Why the server's `code` ends a send (or the key fetch it waits for).
fn send_failure(code: ErrorCode) -> SendFailure {
    match code {
        ErrorCode::UnknownUser => SendFailure::UnknownUser,
        ErrorCode::QueueFull => SendFailure::QueueFull,
        ErrorCode::EnvelopeTooLarge => SendFailure::TooLarge,
        ErrorCode::IdReused => SendFailure::IdReused,
        other => SendFailure::Rejected(other),
    }
}
