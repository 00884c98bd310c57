//! Work this node sends to the owners of other shards: sends, notices and
//! queries (`Output::Forward`), their answers (`Input::Forwarded`) and
//! retries.
//!
//! Sends from one sender to one shard travel in a lane, one forward in
//! flight at a time, so their order holds across retries. A forward that
//! finds no owner (`not_owner`, `Unreachable`) is tried again after
//! `forward_retry`, under a new [`ForwardId`]: sends and notices for as
//! long as this node owns the shard they come from, queries until
//! `query_deadline` (then the client is told `unavailable`).

use super::super::limits::{SendDigest, UsedId};
use super::super::state::UserId;
use super::{Node, Server, ServerEvent};
use crate::cluster::{ForwardId, RemoteCall, RemoteReply, Shard};
use crate::time::Instant;
use crate::types::{ConnId, Lsn, MessageId, UserName};
use crate::wire::{ErrorCode, Notice, ServerPacket};
use std::cmp::Reverse;
use std::collections::HashSet;

use super::super::Output;

/// A forward of this node's.
#[derive(Debug)]
pub(in crate::server) struct Forward {
    /// The shard whose owner must answer.
    shard: Shard,
    call: RemoteCall,
    purpose: Purpose,
    /// Waiting for its retry time (no answer is expected meanwhile).
    waiting: bool,
}

/// What a forward is for, and who gets its answer.
#[derive(Debug)]
enum Purpose {
    /// The front of the lane (`from`, `shard`).
    Send { from: UserId },
    /// A notice produced by a user of `origin`.
    Notice { origin: Shard },
    /// A client's `fetch_key` or `query_presence` (`conn` is cleared when
    /// the connection closes).
    Query {
        conn: Option<ConnId>,
        user: UserName,
        deadline: Instant,
    },
}

/// A send waiting in its lane.
#[derive(Debug)]
pub(in crate::server) struct OutgoingSend {
    id: MessageId,
    to: UserName,
    envelope: Vec<u8>,
    digest: SendDigest,
    sent_at: crate::types::UnixMillis,
    /// Who hears the answer (cleared when the connection closes; set again
    /// by a resend of the same id).
    conn: Option<ConnId>,
    /// Its forward, once it is the lane's front.
    forward: Option<ForwardId>,
}

/// Where a notice for a message's sender goes.
pub(in crate::server) enum NoticeTo {
    /// A user registered here.
    Local(UserId),
    /// A user of a shard this node does not own.
    Remote(UserName),
    /// Nobody (the sender is not registered).
    Nowhere,
}

impl NoticeTo {
    pub(in crate::server) fn local(&self) -> Option<UserId> {
        match self {
            NoticeTo::Local(id) => Some(*id),
            _ => None,
        }
    }
}

impl Node {
    fn new_forward_id(&mut self) -> ForwardId {
        self.next_forward += 1;
        ForwardId(self.next_forward)
    }
}

impl Server {
    /// Where a notice for `from`, the sender of a message, goes.
    pub(in crate::server) fn notice_to(&self, from: &UserName) -> NoticeTo {
        match self.state.id_of(from) {
            Some(id) => NoticeTo::Local(id),
            None if self.foreign_shard(from).is_some() => NoticeTo::Remote(from.clone()),
            None => NoticeTo::Nowhere,
        }
    }

    /// Queues `notice` for the sender of a message (the notice names the
    /// message's recipient, a user served here).
    pub(in crate::server) fn notify_sender(&mut self, now: Instant, to: NoticeTo, notice: Notice) {
        match to {
            NoticeTo::Local(id) => {
                self.enqueue_notice(now, id, notice);
            }
            NoticeTo::Remote(to) => {
                let Some(node) = self.cluster.as_ref() else {
                    return;
                };
                let (Notice::Delivered { to: recipient, .. }
                | Notice::Expired { to: recipient, .. }) = &notice;
                let (shard, origin) = (node.shard_of(&to), node.shard_of(recipient));
                self.start_forward(
                    shard,
                    RemoteCall::Notice { to, notice },
                    Purpose::Notice { origin },
                );
            }
            NoticeTo::Nowhere => {}
        }
    }

    /// A send from a local user to `to`, whose shard `shard` this node does
    /// not own (or whose lane is busy): the checks this node can make, then
    /// into the lane.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::server) fn forward_send(
        &mut self,
        now: Instant,
        conn: ConnId,
        from: UserId,
        id: MessageId,
        to: UserName,
        envelope: Vec<u8>,
        digest: SendDigest,
        shard: Shard,
    ) {
        let Some(node) = self.cluster.as_mut() else {
            return;
        };
        let lane = node.lanes.entry((from, shard)).or_default();
        if let Some(pending) = lane.iter_mut().find(|s| s.id == id) {
            if pending.digest != digest {
                return self.send_error(
                    conn,
                    ErrorCode::IdReused,
                    Some(id),
                    None,
                    "this id was used for another message",
                );
            }
            // A resend while the first is on its way: answered with it.
            pending.conn = Some(conn);
            return;
        }
        if lane.len() >= self.config.max_outstanding_per_sender as usize {
            return self.send_error(
                conn,
                ErrorCode::Busy,
                Some(id),
                None,
                "too many of your messages are on their way",
            );
        }
        if !self.take_send_token(now, conn, from, id) {
            return;
        }
        let sent_at = self.wall(now);
        let Some(node) = self.cluster.as_mut() else {
            return;
        };
        let lane = node.lanes.entry((from, shard)).or_default();
        lane.push_back(OutgoingSend {
            id,
            to,
            envelope,
            digest,
            sent_at,
            conn: Some(conn),
            forward: None,
        });
        if lane.len() == 1 {
            self.start_lane(from, shard);
        }
    }

    /// Whether `from` has sends on their way to `shard` (a new one must
    /// queue behind them, even if the shard became local).
    pub(in crate::server) fn lane_busy(&self, from: UserId, shard: Shard) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|node| node.lanes.contains_key(&(from, shard)))
    }

    /// Forwards the front of the lane (`from`, `shard`).
    fn start_lane(&mut self, from: UserId, shard: Shard) {
        let Some(node) = self.cluster.as_mut() else {
            return;
        };
        let Some(front) = node.lanes.get(&(from, shard)).and_then(|lane| lane.front()) else {
            node.lanes.remove(&(from, shard));
            return;
        };
        let call = RemoteCall::Enqueue {
            from: self.state.name(from).clone(),
            id: front.id,
            to: front.to.clone(),
            envelope: front.envelope.clone(),
            sent_at: front.sent_at,
        };
        let request = self.start_forward(shard, call, Purpose::Send { from });
        if let Some(front) = self
            .cluster
            .as_mut()
            .and_then(|node| node.lanes.get_mut(&(from, shard)))
            .and_then(|lane| lane.front_mut())
        {
            front.forward = request;
        }
    }

    fn start_forward(
        &mut self,
        shard: Shard,
        call: RemoteCall,
        purpose: Purpose,
    ) -> Option<ForwardId> {
        let node = self.cluster.as_mut()?;
        let request = node.new_forward_id();
        self.outputs.push_back(Output::Forward {
            request,
            shard,
            call: call.clone(),
        });
        node.forwards.insert(
            request,
            Forward {
                shard,
                call,
                purpose,
                waiting: false,
            },
        );
        Some(request)
    }

    /// A client query about a user of another shard.
    pub(in crate::server) fn forward_query(
        &mut self,
        now: Instant,
        conn: ConnId,
        shard: Shard,
        call: RemoteCall,
        user: UserName,
    ) {
        let Some(node) = self.cluster.as_ref() else {
            return;
        };
        let deadline = now + node.config.query_deadline;
        self.start_forward(
            shard,
            call,
            Purpose::Query {
                conn: Some(conn),
                user,
                deadline,
            },
        );
    }

    pub(in crate::server) fn on_forwarded(
        &mut self,
        now: Instant,
        request: ForwardId,
        reply: &RemoteReply,
    ) {
        let Some(node) = self.cluster.as_mut() else {
            return;
        };
        let Some(forward) = node.forwards.remove(&request) else {
            return; // dropped meanwhile (its shard was lost)
        };
        if forward.waiting {
            node.forwards.insert(request, forward);
            return;
        }
        if matches!(reply, RemoteReply::NotOwner | RemoteReply::Unreachable) {
            return self.retry_later(now, request, forward);
        }
        match forward.purpose {
            Purpose::Send { from } => self.finish_send(now, from, forward.shard, request, reply),
            Purpose::Notice { .. } => {}
            Purpose::Query { conn, user, .. } => {
                let Some(conn) = conn else {
                    return;
                };
                match reply.clone() {
                    RemoteReply::Key { public_key } => {
                        self.send(conn, &ServerPacket::Key { user, public_key })
                    }
                    RemoteReply::Presence {
                        online,
                        last_seen_ms,
                    } => self.send(
                        conn,
                        &ServerPacket::Presence {
                            user,
                            online,
                            last_seen_ms,
                        },
                    ),
                    RemoteReply::Refused { code, detail } => {
                        self.send_error(conn, code, None, Some(user), &detail)
                    }
                    _ => self.send_error(
                        conn,
                        ErrorCode::Unavailable,
                        None,
                        Some(user),
                        "the owning node gave an unexpected answer",
                    ),
                }
            }
        }
    }

    /// Schedules `forward` again after `forward_retry` (a query only before
    /// its deadline; past it, the client is told `unavailable`).
    fn retry_later(&mut self, now: Instant, request: ForwardId, mut forward: Forward) {
        let Some(node) = self.cluster.as_mut() else {
            return;
        };
        let at = now + node.config.forward_retry;
        if let Purpose::Query {
            conn,
            user,
            deadline,
        } = &forward.purpose
            && at > *deadline
        {
            if let Some(conn) = *conn {
                let user = user.clone();
                self.send_error(
                    conn,
                    ErrorCode::Unavailable,
                    None,
                    Some(user),
                    "no node serving this user answered in time; retry later",
                );
            }
            return;
        }
        forward.waiting = true;
        let shard = forward.shard;
        node.forwards.insert(request, forward);
        node.retries.push(Reverse((at, request)));
        self.event(ServerEvent::ForwardRetried { shard });
    }

    /// Sends the forwards whose retry time has come (new ids: an answer to
    /// an earlier attempt can never be taken for this one).
    pub(in crate::server) fn fire_retries(&mut self, now: Instant) {
        loop {
            let Some(node) = self.cluster.as_mut() else {
                return;
            };
            let Some(Reverse((at, old))) = node.retries.peek().copied() else {
                return;
            };
            if at > now {
                return;
            }
            node.retries.pop();
            let Some(mut forward) = node.forwards.remove(&old) else {
                continue;
            };
            let request = node.new_forward_id();
            forward.waiting = false;
            if let Purpose::Send { from } = forward.purpose
                && let Some(front) = node
                    .lanes
                    .get_mut(&(from, forward.shard))
                    .and_then(|lane| lane.front_mut())
            {
                front.forward = Some(request);
            }
            self.outputs.push_back(Output::Forward {
                request,
                shard: forward.shard,
                call: forward.call.clone(),
            });
            node.forwards.insert(request, forward);
        }
    }

    /// The owner answered the front send of the lane (`from`, `shard`).
    fn finish_send(
        &mut self,
        now: Instant,
        from: UserId,
        shard: Shard,
        request: ForwardId,
        reply: &RemoteReply,
    ) {
        let Some(node) = self.cluster.as_mut() else {
            return;
        };
        let Some(lane) = node.lanes.get_mut(&(from, shard)) else {
            return;
        };
        if lane.front().and_then(|s| s.forward) != Some(request) {
            return;
        }
        let Some(sent) = lane.pop_front() else {
            return;
        };
        match reply {
            RemoteReply::Accepted => {
                let capacity = self.config.dedupe_per_sender;
                let used = UsedId {
                    lsn: Lsn(0),
                    digest: sent.digest,
                };
                self.runtime(from, now)
                    .recent
                    .insert(sent.id, used, capacity);
                if let Some(conn) = sent.conn {
                    self.send(conn, &ServerPacket::Accepted { id: sent.id });
                }
            }
            RemoteReply::Refused { code, detail } => {
                if let Some(conn) = sent.conn {
                    let user = matches!(code, ErrorCode::UnknownUser | ErrorCode::QueueFull)
                        .then_some(sent.to);
                    self.send_error(conn, *code, Some(sent.id), user, detail);
                }
            }
            _ => {
                if let Some(conn) = sent.conn {
                    self.send_error(
                        conn,
                        ErrorCode::Unavailable,
                        Some(sent.id),
                        None,
                        "the owning node gave an unexpected answer",
                    );
                }
            }
        }
        self.start_lane(from, shard);
    }

    /// A connection closed: its forwards' answers go nowhere (connection
    /// ids may be reused), its sends still complete.
    pub(in crate::server) fn forget_conn_forwards(&mut self, conn: ConnId) {
        let Some(node) = self.cluster.as_mut() else {
            return;
        };
        for lane in node.lanes.values_mut() {
            for send in lane.iter_mut().filter(|s| s.conn == Some(conn)) {
                send.conn = None;
            }
        }
        for forward in node.forwards.values_mut() {
            if let Purpose::Query { conn: c, .. } = &mut forward.purpose
                && *c == Some(conn)
            {
                *c = None;
            }
        }
    }

    /// Drops the forwards of senders `ids` (users of `shard`, just lost)
    /// and the notices produced in `shard`.
    pub(super) fn drop_forwards_of(&mut self, ids: &HashSet<UserId>, shard: Shard) {
        let Some(node) = self.cluster.as_mut() else {
            return;
        };
        node.lanes.retain(|(from, _), _| !ids.contains(from));
        node.forwards.retain(|_, forward| match forward.purpose {
            Purpose::Send { from } => !ids.contains(&from),
            Purpose::Notice { origin } => origin != shard,
            Purpose::Query { .. } => true,
        });
    }
}
