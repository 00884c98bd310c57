//! The store's health (`Input::StorageAvailable`). While the store cannot
//! make anything durable (a full disk: its commits fail and are retried),
//! requests that need new durable state are refused with
//! `StorageUnavailable` before anything is done; everything else goes on.
//! Logins, key fetches and presence need nothing durable; items already
//! durable are delivered; acks and the notices they queue are emitted as
//! usual and become durable once the store is back (an ack lost in a crash
//! meanwhile only means a redelivery, which clients deduplicate).

use super::state::UserId;
use super::{CloseReason, Server, ServerEvent};
use crate::time::Instant;
use crate::types::{ConnId, MessageId, UserName};
use crate::wire::ErrorCode;

impl Server {
    /// Whether the store can make changes durable now, as the driver last
    /// said (`Input::StorageAvailable`; `true` at start).
    pub fn storage_available(&self) -> bool {
        self.storage_available
    }

    pub(super) fn on_storage_available(&mut self, available: bool) {
        if std::mem::replace(&mut self.storage_available, available) != available {
            self.event(ServerEvent::StorageAvailability { available });
        }
    }

    /// Refuses the `send` `id` while the store is unavailable (nothing is
    /// queued; the client retries later, like `RateLimited`). Whether it
    /// did.
    ///
    /// Order per (sender, recipient) must hold across the outage: a send
    /// pipelined behind a refused one could otherwise be taken once the
    /// store is back, before the refused one is retried. So after a refusal
    /// the connection's later sends are refused too, until the first
    /// refused id comes again with the store available (the client retries
    /// in order, §5).
    pub(super) fn refuse_send_without_storage(
        &mut self,
        now: Instant,
        conn: ConnId,
        from: UserId,
        id: MessageId,
    ) -> bool {
        let available = self.storage_available;
        let refused = &mut self.runtime(from, now).refused_for_storage;
        // A refusal on an earlier connection of the user no longer counts.
        let first = refused
            .filter(|(on, _)| *on == conn)
            .map(|(_, first)| first);
        match first {
            None if available => {
                *refused = None;
                return false;
            }
            Some(first) if available && first == id => {
                *refused = None;
                return false;
            }
            None => *refused = Some((conn, id)),
            Some(_) => {}
        }
        self.send_error(
            conn,
            ErrorCode::StorageUnavailable,
            Some(id),
            None,
            "the server cannot store messages now; retry later",
        );
        true
    }

    /// Refuses a registration of `user` while the store is unavailable: the
    /// error, then the connection closes (the handshake cannot go on, as
    /// with `Unavailable`, §2.7); the client reconnects after a pause.
    /// Whether it did.
    pub(super) fn refuse_registration_without_storage(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: &UserName,
    ) -> bool {
        if self.storage_available {
            return false;
        }
        let code = ErrorCode::StorageUnavailable;
        let detail = "the server cannot register anyone now; retry later";
        self.send_error(conn, code, None, Some(user.clone()), detail);
        self.close(now, conn, CloseReason::Error(code));
        true
    }
}

#[cfg(test)]
mod tests;
