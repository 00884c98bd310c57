//! Calls from other nodes to this one as the owner of a shard
//! (`Input::Remote`, answered by `Output::Reply`).
//!
//! An enqueue runs every check of a local send that the owner can make
//! (size, unknown user, the recipient's quotas and the sender's share of
//! them) and answers `accepted` only once the message is durable. The
//! sender's limit on outstanding messages (`max_outstanding_per_sender`)
//! counts what is queued on one node: across nodes it is enforced per
//! node (the recipient's node counts a sender it does not serve as having
//! none outstanding). Rate limits are the sender's node's.

use super::super::limits::{SendDigest, UsedId};
use super::super::{Held, Output};
use super::Server;
use crate::cluster::{CallId, RemoteCall, RemoteReply};
use crate::time::Instant;
use crate::types::{MessageId, UnixMillis, UserName};
use crate::wire::{ErrorCode, Notice};

fn refused(code: ErrorCode, detail: &str) -> RemoteReply {
    RemoteReply::Refused {
        code,
        detail: detail.to_owned(),
    }
}

impl Server {
    pub(in crate::server) fn reply(&mut self, call: CallId, reply: RemoteReply) {
        self.outputs.push_back(Output::Reply { call, reply });
    }

    pub(in crate::server) fn on_remote(
        &mut self,
        now: Instant,
        call: CallId,
        request: &RemoteCall,
    ) {
        let user = match request {
            RemoteCall::Enqueue { to, .. } | RemoteCall::Notice { to, .. } => to,
            RemoteCall::FetchKey { user } | RemoteCall::QueryPresence { user } => user,
        };
        if self.foreign_shard(user).is_some() {
            return self.reply(call, RemoteReply::NotOwner);
        }
        match request.clone() {
            RemoteCall::Enqueue {
                from,
                id,
                to,
                envelope,
                sent_at,
            } => self.on_remote_enqueue(now, call, from, id, to, envelope, sent_at),
            RemoteCall::Notice { to, notice } => self.on_remote_notice(now, call, &to, notice),
            RemoteCall::FetchKey { user } => {
                let reply = match self.state.user(&user) {
                    Some(record) => RemoteReply::Key {
                        public_key: record.public_key.clone(),
                    },
                    None => refused(ErrorCode::UnknownUser, "no such user"),
                };
                self.reply(call, reply);
            }
            RemoteCall::QueryPresence { user } => {
                let reply = match self.presence_of(now, &user) {
                    Some((online, last_seen_ms)) => RemoteReply::Presence {
                        online,
                        last_seen_ms,
                    },
                    None => refused(ErrorCode::UnknownUser, "no such user"),
                };
                self.reply(call, reply);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_remote_enqueue(
        &mut self,
        now: Instant,
        call: CallId,
        from: UserName,
        id: MessageId,
        to: UserName,
        envelope: Vec<u8>,
        sent_at: UnixMillis,
    ) {
        if envelope.len() > self.config.max_envelope as usize {
            let detail = format!(
                "envelope of {} bytes, limit {}",
                envelope.len(),
                self.config.max_envelope
            );
            return self.reply(call, refused(ErrorCode::EnvelopeTooLarge, &detail));
        }
        let digest = SendDigest::of(&self.hasher, &to, &envelope);
        let remembered = self.cluster.as_ref().and_then(|node| {
            node.recent(node.shard_of(&to), &from)
                .and_then(|recent| recent.get(&id))
        });
        if let Some(used) = remembered {
            if used.digest != digest {
                let detail = "this id was used for another message";
                return self.reply(call, refused(ErrorCode::IdReused, detail));
            }
            // A retry: answered like the first time, once that is durable.
            return self.after_durable(
                now,
                used.lsn,
                Held::RemoteReply {
                    call,
                    reply: RemoteReply::Accepted,
                },
            );
        }
        let Some(to_id) = self.state.id_of(&to) else {
            return self.reply(call, refused(ErrorCode::UnknownUser, "no such user"));
        };
        let from_id = self.state.id_of(&from);
        if let Err(detail) = self.check_quota(&from, from_id, to_id, envelope.len() as u64) {
            return self.reply(call, refused(ErrorCode::QueueFull, detail));
        }
        // The deadline counts from when the sender's node took the message.
        let enqueued_at = sent_at.min(self.wall(now));
        let key = self.dedupe_key(&from, &to);
        let answer = Held::RemoteReply {
            call,
            reply: RemoteReply::Accepted,
        };
        let lsn = self.enqueue_message(
            now,
            (from, from_id),
            (to, to_id),
            (id, envelope.into(), enqueued_at),
            answer,
        );
        self.remember_id(now, from_id, key, id, UsedId { lsn, digest });
    }

    /// A notice for `to`, a sender served here. Notices are not
    /// deduplicated: a retried one may be queued twice (a client shows a
    /// `delivered` twice at worst).
    fn on_remote_notice(&mut self, now: Instant, call: CallId, to: &UserName, notice: Notice) {
        let Some(owner) = self.state.id_of(to) else {
            return self.reply(call, refused(ErrorCode::UnknownUser, "no such user"));
        };
        let lsn = self.enqueue_notice(now, owner, notice);
        self.after_durable(
            now,
            lsn,
            Held::RemoteReply {
                call,
                reply: RemoteReply::Accepted,
            },
        );
    }
}
