//! Presence, liveness and timers.

use super::{Server, ServerEvent};
use crate::cluster::RemoteCall;
use crate::time::Instant;
use crate::types::{ConnId, UnixMillis, UserName};
use crate::wire::{ErrorCode, ServerPacket};
use std::cmp::Reverse;

impl Server {
    pub(super) fn on_set_presence(&mut self, now: Instant, conn: ConnId, online: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(session) = c.session_mut() else {
            // Before login: the presence the session will start with.
            c.start_online = online;
            return;
        };
        if session.online == online {
            return;
        }
        session.online = online;
        let (user, id) = (session.user.clone(), session.id);
        if !online {
            let wall = self.wall(now);
            self.runtime(id, now).last_seen = Some(wall);
        }
        self.event(ServerEvent::PresenceChanged {
            user: user.clone(),
            online,
        });
        if online {
            self.pump(now, id);
        }
    }

    pub(super) fn on_query_presence(&mut self, now: Instant, conn: ConnId, user: UserName) {
        if self.conns.get(&conn).and_then(|c| c.user()).is_none() {
            return self.send_error(conn, ErrorCode::NotLoggedIn, None, None, "log in first");
        }
        if let Some(shard) = self.foreign_shard(&user) {
            let call = RemoteCall::QueryPresence { user: user.clone() };
            return self.forward_query(now, conn, shard, call, user);
        }
        let Some((online, last_seen_ms)) = self.presence_of(now, &user) else {
            return self.send_error(
                conn,
                ErrorCode::UnknownUser,
                None,
                Some(user),
                "no such user",
            );
        };
        self.send(
            conn,
            &ServerPacket::Presence {
                user,
                online,
                last_seen_ms,
            },
        );
    }

    /// Whether a registered `user` is online, and when last seen.
    pub(super) fn presence_of(
        &self,
        now: Instant,
        user: &UserName,
    ) -> Option<(bool, Option<UnixMillis>)> {
        let id = self.state.id_of(user)?;
        let online = self.session_of(id).is_some_and(|(_, online)| online);
        let last_seen_ms = if online {
            Some(self.wall(now))
        } else {
            self.users.get(id.index()).and_then(|r| r.last_seen)
        };
        Some((online, last_seen_ms))
    }

    pub(super) fn on_timeout(&mut self, now: Instant) {
        self.fire_retries(now);
        while let Some(Reverse((at, conn))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let live = self
                .conns
                .get(&conn)
                .is_some_and(|c| c.timer_at == Some(at));
            let Some(deadline) = self.deadline_of(conn).filter(|_| live) else {
                continue; // a stale entry
            };
            if deadline <= now {
                let logged_in = self.conns.get(&conn).is_some_and(|c| c.user().is_some());
                let detail = if logged_in {
                    "no ping within the liveness timeout"
                } else {
                    "handshake deadline passed"
                };
                self.fatal(now, conn, ErrorCode::Timeout, detail);
            } else if let Some(c) = self.conns.get_mut(&conn) {
                c.timer_at = Some(deadline);
                self.timers.push(Reverse((deadline, conn)));
            }
        }
    }

    /// The connection's current deadline: the handshake deadline before
    /// login, the liveness deadline after.
    fn deadline_of(&self, conn: ConnId) -> Option<Instant> {
        let c = self.conns.get(&conn)?;
        Some(match c.user() {
            None => self.config.handshake_deadline(c.connected_at),
            Some(_) => c.last_heard + self.config.liveness_timeout(),
        })
    }
}
