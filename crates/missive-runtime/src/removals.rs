//! Operators' removals of users waiting for the core's answer (see
//! [`ServerEngine::remove_user`](crate::ServerEngine::remove_user)).

use futures_channel::oneshot;
use missive_core::UserName;
use missive_core::server::{RemoveUserError, ServerEvent};

/// A user removed by an operator, durably.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserRemoved {
    /// Who.
    pub user: UserName,
    /// Items its mailbox held, dropped.
    pub items: usize,
    /// Its connections closed.
    pub sessions_closed: usize,
}

/// Where the answer to a removal goes.
pub(crate) type RemovalReply = oneshot::Sender<Result<UserRemoved, RemoveUserError>>;

/// Removals asked for and not answered yet, by user.
#[derive(Debug, Default)]
pub(crate) struct Removals {
    waiting: Vec<(UserName, RemovalReply)>,
}

impl Removals {
    /// Waits for the core's answer about `user`.
    pub(crate) fn wait(&mut self, user: UserName, reply: RemovalReply) {
        self.waiting.push((user, reply));
    }

    /// Answers those waiting for `event`'s user, if it is a removal's
    /// answer.
    pub(crate) fn on_event(&mut self, event: &ServerEvent) {
        let (user, answer) = match event {
            ServerEvent::UserRemoved {
                user,
                items,
                sessions_closed,
            } => (
                user,
                Ok(UserRemoved {
                    user: user.clone(),
                    items: *items,
                    sessions_closed: *sessions_closed,
                }),
            ),
            ServerEvent::UserNotRemoved { user, error } => (user, Err(*error)),
            _ => return,
        };
        let Some(at) = self.waiting.iter().position(|(name, _)| name == user) else {
            return;
        };
        let (_, reply) = self.waiting.swap_remove(at);
        let _ = reply.send(answer);
    }
}
