//! What an operator asks of the server ([`Input::RemoveUser`]).

use super::io::{CloseReason, RemoveUserError, ServerEvent};
use super::{Held, Server};
use crate::time::Instant;
use crate::types::{ConnId, UserName};
use crate::wire::ErrorCode;

impl Server {
    /// Removes `user`: closes its connections, drops its mailbox and
    /// volatile state, persists [`super::PersistCmd::RemoveUser`] and
    /// reports [`ServerEvent::UserRemoved`] once that is durable.
    pub(super) fn on_remove_user(&mut self, now: Instant, user: &UserName) {
        let refused = if self.cluster.is_some() {
            Some(RemoveUserError::ClusterNode)
        } else if self.state.id_of(user).is_none() {
            Some(RemoveUserError::NoSuchUser)
        } else {
            None
        };
        if let Some(error) = refused {
            let user = user.clone();
            return self.event(ServerEvent::UserNotRemoved { user, error });
        }
        let Some(id) = self.state.id_of(user) else {
            return;
        };
        let items = self.state.record(id).mailbox.items.len();
        let sessions: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.user_id() == Some(id))
            .map(|(conn, _)| *conn)
            .collect();
        let sessions_closed = sessions.len();
        for conn in sessions {
            self.send_error(
                conn,
                ErrorCode::UnknownUser,
                None,
                Some(user.clone()),
                "this user was removed by the server's operator",
            );
            self.close(now, conn, CloseReason::Error(ErrorCode::UnknownUser));
        }
        // Deliveries waiting for durability die with the mailbox: the id
        // may be reused by the next registration.
        self.held
            .retain(|(_, held)| !matches!(held, Held::Deliverable { user, .. } if *user == id));
        let lsn = self.persist(super::PersistCmd::RemoveUser { user: user.clone() });
        let fresh = self.new_runtime(now);
        if let Some(runtime) = self.users.get_mut(id.index()) {
            *runtime = fresh;
        }
        // Entries of the dropped mailbox must go before the id is reused.
        self.expiry.rebuild(&self.state);
        let event = ServerEvent::UserRemoved {
            user: user.clone(),
            items,
            sessions_closed,
        };
        self.after_durable(now, lsn, Held::Event(event));
    }
}
