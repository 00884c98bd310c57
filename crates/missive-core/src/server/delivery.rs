//! Sending, queuing, delivery, acknowledgements and notices.

use super::conn::Phase;
use super::limits::{SendDigest, UsedId};
use super::state::UserId;
use super::{Held, MailItem, PersistCmd, Server, ServerEvent};
use crate::SharedBytes;
use crate::time::Instant;
use crate::types::{ConnId, Lsn, MessageId, Seq, UserName};
use crate::wire::{EncodeError, ErrorCode, Notice, ServerPacket, hot_frames};

impl Server {
    pub(super) fn on_send(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: MessageId,
        to: UserName,
        envelope: SharedBytes,
    ) {
        let Some((from, from_id)) = self
            .conns
            .get(&conn)
            .and_then(|c| c.session())
            .map(|s| (s.user.clone(), s.id))
        else {
            return self.send_error(conn, ErrorCode::NotLoggedIn, Some(id), None, "log in first");
        };
        if envelope.len() > self.config.max_envelope as usize {
            let detail = format!(
                "envelope of {} bytes, limit {}",
                envelope.len(),
                self.config.max_envelope
            );
            return self.send_error(conn, ErrorCode::EnvelopeTooLarge, Some(id), None, &detail);
        }
        let digest = SendDigest::of(&self.hasher, &to, &envelope);
        if let Some(used) = self.used_id(now, (&from, from_id), &to, &id) {
            if used.digest != digest {
                return self.send_error(
                    conn,
                    ErrorCode::IdReused,
                    Some(id),
                    None,
                    "this id was used for another message",
                );
            }
            // A retry of a message already taken: answer as the first time.
            return self.after_durable(
                now,
                used.lsn,
                Held::Reply {
                    conn,
                    packet: ServerPacket::Accepted { id },
                },
            );
        }
        if self.refuse_send_without_storage(now, conn, from_id, id) {
            return;
        }
        // Cluster: a recipient served elsewhere (or a lane to its shard
        // still busy, which keeps the order per pair) means a forward.
        if let Some(node) = self.cluster.as_ref() {
            let shard = node.shard_of(&to);
            if self.foreign_shard(&to).is_some() || self.lane_busy(from_id, shard) {
                return self.forward_send(
                    now,
                    conn,
                    from_id,
                    id,
                    to,
                    envelope.to_vec(),
                    digest,
                    shard,
                );
            }
        }
        let Some(to_id) = self.state.id_of(&to) else {
            return self.send_error(
                conn,
                ErrorCode::UnknownUser,
                Some(id),
                Some(to),
                "no such user",
            );
        };
        if let Err(detail) = self.check_quota(&from, Some(from_id), to_id, envelope.len() as u64) {
            return self.send_error(conn, ErrorCode::QueueFull, Some(id), Some(to), detail);
        }
        if !self.take_send_token(now, conn, from_id, id) {
            return;
        }
        let key = self.dedupe_key(&from, &to);
        let answer = Held::Reply {
            conn,
            packet: ServerPacket::Accepted { id },
        };
        let enqueued_at = self.wall(now);
        let lsn = self.enqueue_message(
            now,
            (from, Some(from_id)),
            (to, to_id),
            (id, envelope, enqueued_at),
            answer,
        );
        self.remember_id(now, Some(from_id), key, id, UsedId { lsn, digest });
    }

    /// Queues a message from `from` (with its id, if registered here) for
    /// `to`, checked: `answer` goes out, and the message becomes
    /// deliverable, once it is durable. Returns the LSN of its command.
    pub(super) fn enqueue_message(
        &mut self,
        now: Instant,
        (from, from_id): (UserName, Option<UserId>),
        (to_name, to): (UserName, UserId),
        (id, envelope, enqueued_at): (MessageId, SharedBytes, crate::types::UnixMillis),
        answer: Held,
    ) -> Lsn {
        let seq = self.state.record(to).mailbox.next_seq;
        self.event(ServerEvent::MessageAccepted {
            bytes: envelope.len(),
        });
        let item = MailItem::Message {
            from,
            id,
            envelope,
            enqueued_at,
        };
        self.expiry.push(to, seq, &item);
        let lsn = self.persist_resolved(
            PersistCmd::Enqueue {
                user: to_name,
                seq,
                item,
            },
            to,
            from_id,
        );
        self.after_durable(now, lsn, answer);
        self.after_durable(
            now,
            lsn,
            Held::Deliverable {
                user: to,
                end: seq + 1,
            },
        );
        lsn
    }

    /// Takes one send from `from`'s rate limiter; when it is empty, tells
    /// `conn` `RateLimited` for `id` and returns false.
    pub(super) fn take_send_token(
        &mut self,
        now: Instant,
        conn: ConnId,
        from: UserId,
        id: MessageId,
    ) -> bool {
        let (rate, burst) = (self.config.send_rate_per_sec, self.config.send_burst);
        if self.runtime(from, now).bucket.try_take(rate, burst, now) {
            return true;
        }
        self.send_error(
            conn,
            ErrorCode::RateLimited,
            Some(id),
            None,
            "send rate exceeded, retry later",
        );
        false
    }

    /// Checks the recipient's quotas and the sender's share of them (and,
    /// for a sender registered here, its outstanding limit).
    pub(super) fn check_quota(
        &self,
        from: &UserName,
        from_id: Option<UserId>,
        to: UserId,
        len: u64,
    ) -> Result<(), &'static str> {
        let cfg = &self.config;
        let mailbox = &self.state.record(to).mailbox;
        if mailbox.message_count >= cfg.queue_max_messages
            || mailbox.message_bytes + len > cfg.queue_max_bytes
        {
            return Err("recipient's queue is full");
        }
        let usage = mailbox.per_sender.get(from).copied().unwrap_or_default();
        if usage.messages >= cfg.sender_max_messages() || usage.bytes + len > cfg.sender_max_bytes()
        {
            return Err("your share of the recipient's queue is used up");
        }
        if from_id
            .is_some_and(|id| self.state.record(id).outstanding >= cfg.max_outstanding_per_sender)
        {
            return Err("too many of your messages and notices are outstanding");
        }
        Ok(())
    }

    pub(super) fn on_ack(&mut self, now: Instant, conn: ConnId, seq: Seq) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(session) = c.session_mut() else {
            return self.send_error(conn, ErrorCode::NotLoggedIn, None, None, "log in first");
        };
        if !session.in_flight.remove(seq) {
            return self.send_error(
                conn,
                ErrorCode::UnknownSeq,
                None,
                None,
                "nothing in flight with that seq",
            );
        }
        let user = session.id;
        let delivered = match self.state.record(user).mailbox.items.get(&seq) {
            Some(MailItem::Message { from, id, .. }) => Some((self.notice_to(from), *id)),
            Some(MailItem::Notice { .. }) => None,
            None => return self.pump(now, user), // expired meanwhile
        };
        let name = self.state.name(user).clone();
        let from = delivered.as_ref().and_then(|(from, _)| from.local());
        self.persist_resolved(
            PersistCmd::Ack {
                user: name.clone(),
                seq,
            },
            user,
            from,
        );
        self.event(ServerEvent::Acknowledged {
            conn,
            message: delivered.is_some(),
        });
        if let Some((from, id)) = delivered {
            self.notify_sender(now, from, Notice::Delivered { to: name, id });
        }
        self.pump(now, user);
    }

    /// Queues a notice for `owner` (never refused: notices are bounded by
    /// the sender's outstanding limit checked at Send).
    pub(super) fn enqueue_notice(&mut self, now: Instant, owner: UserId, notice: Notice) -> Lsn {
        let seq = self.state.record(owner).mailbox.next_seq;
        let item = MailItem::Notice {
            notice,
            enqueued_at: self.wall(now),
        };
        self.expiry.push(owner, seq, &item);
        let lsn = self.persist_resolved(
            PersistCmd::Enqueue {
                user: self.state.name(owner).clone(),
                seq,
                item,
            },
            owner,
            None,
        );
        self.after_durable(
            now,
            lsn,
            Held::Deliverable {
                user: owner,
                end: seq + 1,
            },
        );
        lsn
    }

    /// Delivers what `user`'s window and presence allow. Frames are encoded
    /// straight from the mailbox into the connection's buffer (no copy of
    /// the envelope). Nothing here is past its deadline: every input first
    /// expires what is due ([`Server::handle_input`]).
    ///
    /// An item that does not fit in a frame under the `max_frame` in force
    /// (stored under a larger one before a restart) is expired with an
    /// event instead of holding a window slot until its deadline.
    pub(super) fn pump(&mut self, now: Instant, user: UserId) {
        while let Some((seq, error)) = self.deliver(user) {
            self.expire_undeliverable(now, user, seq, error);
        }
    }

    /// [`Self::pump`] up to the first item that does not fit in a frame,
    /// which is returned (not in flight, the cursor past it).
    fn deliver(&mut self, user: UserId) -> Option<(Seq, EncodeError)> {
        let runtime = self.users.get(user.index())?;
        let (Some(conn), end) = (runtime.session, runtime.deliverable_end) else {
            return None;
        };
        let (window, max_frame) = (self.config.window as usize, self.config.max_frame);
        let record = self.state.record(user);
        let c = self.conns.get_mut(&conn)?;
        let was_empty = c.tx.is_empty();
        let Phase::LoggedIn(session) = &mut c.phase else {
            return None;
        };
        if !session.online {
            return None;
        }
        let mut undeliverable = None;
        let (mut messages, mut notices) = (0u32, 0u32);
        for (seq, item) in record.mailbox.items.range(session.cursor..end) {
            if session.in_flight.len() >= window {
                break;
            }
            session.cursor = seq + 1;
            self.spare_tx.fill(&mut c.tx);
            let encoded = match item {
                MailItem::Message {
                    from, id, envelope, ..
                } => {
                    c.tx.reserve(super::TX_MIN + envelope.len().min(max_frame as usize));
                    hot_frames::message(*seq, from, id, envelope, max_frame, &mut c.tx)
                }
                MailItem::Notice { notice, .. } => {
                    c.tx.reserve(super::TX_MIN);
                    hot_frames::notice(*seq, notice, max_frame, &mut c.tx)
                }
            };
            // In flight only once its frame is in the buffer.
            match encoded {
                Ok(()) => {
                    session.in_flight.push(*seq);
                    match item {
                        MailItem::Message { .. } => messages += 1,
                        MailItem::Notice { .. } => notices += 1,
                    }
                }
                Err(error) => {
                    undeliverable = Some((*seq, error));
                    break;
                }
            }
        }
        if was_empty && !c.tx.is_empty() {
            self.dirty.push(conn);
        }
        if messages + notices > 0 {
            self.event(ServerEvent::Delivered {
                conn,
                messages,
                notices,
            });
        }
        undeliverable
    }

    /// Expires `user`'s item at `seq`, which [`Self::pump`] could not
    /// encode, with an event for the operator.
    #[cold]
    fn expire_undeliverable(&mut self, now: Instant, user: UserId, seq: Seq, error: EncodeError) {
        self.event(ServerEvent::Undeliverable {
            user: self.state.name(user).clone(),
            seq,
            error,
        });
        self.expire_item(now, user, seq);
    }
}
