//! The operator's control protocol (`missive-server admin …`): typed
//! requests and answers, one JSON object per line each way, and the
//! server's side of it over a [`ServerHandle`].
//!
//! The transport is the driver's (the CLI serves it on a Unix socket,
//! mode 0600): this crate's runtime abstraction has no Unix sockets. The
//! same [`user_rows`] and [`mailbox_rows`] answer from a store opened
//! offline.
//!
//! ```
//! use missive_runtime::admin::{AdminRequest, AdminResponse};
//! let line = serde_json::to_string(&AdminRequest::Mailboxes { top: 5 }).unwrap();
//! assert_eq!(line, r#"{"request":"mailboxes","top":5}"#);
//! let answer: AdminResponse = serde_json::from_str(r#"{"answer":"users","users":[]}"#).unwrap();
//! assert_eq!(answer, AdminResponse::Users { users: vec![] });
//! ```

use crate::driver::Runtime;
use crate::os::unix_ms_now;
use crate::serve::ServerHandle;
use missive_core::crypto::Fingerprint;
use missive_core::server::{RemoveUserError, ServerState};
use missive_core::{UnixMillis, UserName};
use missive_store::{BackupError, RedbBackup, StoreCounts};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What the operator asks a running server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum AdminRequest {
    /// Every registered user.
    Users,
    /// The `top` deepest mailboxes.
    Mailboxes {
        /// How many.
        top: usize,
    },
    /// A consistent copy of the store, written by the server into `dest`
    /// (an absent or empty directory; an absolute path, as the server
    /// sees it).
    Backup {
        /// Where.
        dest: PathBuf,
    },
    /// Remove `user` and its mailbox (persisted).
    RemoveUser {
        /// Who.
        user: UserName,
    },
}

/// The server's answer to an [`AdminRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AdminResponse {
    /// To [`AdminRequest::Users`]: by name.
    Users {
        /// The users.
        users: Vec<UserRow>,
    },
    /// To [`AdminRequest::Mailboxes`]: deepest first.
    Mailboxes {
        /// The mailboxes.
        mailboxes: Vec<MailboxRow>,
    },
    /// To [`AdminRequest::Backup`]: written.
    BackedUp {
        /// Where.
        dest: PathBuf,
        /// Users copied.
        users: u64,
        /// Queued items copied.
        items: u64,
        /// Size of the copy's database file.
        file_bytes: u64,
    },
    /// To [`AdminRequest::RemoveUser`]: removed, durably.
    UserRemoved {
        /// Who.
        user: UserName,
        /// Items its mailbox held, dropped.
        items: usize,
        /// Its connections closed.
        sessions_closed: usize,
    },
    /// The request was refused or failed; nothing changed.
    Refused {
        /// Why.
        error: AdminError,
    },
}

/// Why an [`AdminRequest`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", content = "detail", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AdminError {
    /// No user of that name.
    #[error("no such user")]
    NoSuchUser,
    /// Removing users is not supported on a cluster node yet.
    #[error("removing a user is not supported on a cluster node yet")]
    ClusterNode,
    /// The server's store is not a redb data directory (`--memory`,
    /// `--postgres`): back up PostgreSQL with its own tools.
    #[error("this server's store cannot be backed up here (not a redb data directory)")]
    NoOnlineBackup,
    /// The backup failed.
    #[error("backup failed: {0}")]
    Backup(String),
    /// The server is stopping.
    #[error("the server is stopping")]
    Stopped,
    /// The line is not a request this server knows.
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    /// The name.
    pub user: UserName,
    /// SHA-256 of the key's SPKI DER, as `missive fingerprint` prints it.
    pub fingerprint: String,
    /// Items waiting in its mailbox.
    pub queued: usize,
}

/// One mailbox's depth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxRow {
    /// The owner.
    pub user: UserName,
    /// Items queued (messages and notices).
    pub items: usize,
    /// Envelope bytes of the queued messages.
    pub bytes: u64,
    /// Age of the oldest item, in milliseconds.
    pub oldest_age_ms: u64,
}

/// Every user of `state`, by name.
pub fn user_rows(state: &ServerState) -> Vec<UserRow> {
    let mut rows: Vec<UserRow> = state
        .users()
        .map(|(user, record)| UserRow {
            user: user.clone(),
            fingerprint: Fingerprint::of_spki_der(&record.public_key).to_string(),
            queued: record.mailbox.items.len(),
        })
        .collect();
    rows.sort_by(|a, b| a.user.cmp(&b.user));
    rows
}

/// The `top` deepest non-empty mailboxes of `state` at wall-clock `now`:
/// most items first, then most bytes, then by name.
pub fn mailbox_rows(state: &ServerState, now: UnixMillis, top: usize) -> Vec<MailboxRow> {
    let mut rows: Vec<MailboxRow> = state
        .users()
        .filter_map(|(user, record)| {
            let mailbox = &record.mailbox;
            let (_, oldest) = mailbox.items.first_key_value()?;
            Some(MailboxRow {
                user: user.clone(),
                items: mailbox.items.len(),
                bytes: mailbox.message_bytes,
                oldest_age_ms: now.saturating_sub(oldest.enqueued_at()),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.items, b.bytes)
            .cmp(&(a.items, a.bytes))
            .then_with(|| a.user.cmp(&b.user))
    });
    rows.truncate(top);
    rows
}

/// The server's side of the protocol: a running server's handle and, on a
/// redb store, its backup handle.
#[derive(Debug, Clone)]
pub struct AdminService {
    handle: ServerHandle,
    backup: Option<RedbBackup>,
}

impl AdminService {
    /// Answers requests to the server of `handle`; `backup` is the store's
    /// backup handle if it is a redb store.
    pub fn new(handle: ServerHandle, backup: Option<RedbBackup>) -> Self {
        Self { handle, backup }
    }

    /// Answers one request line (JSON) with one answer line (JSON and a
    /// newline). A backup runs on a blocking thread of `R`.
    pub async fn answer_line<R: Runtime>(&self, line: &str) -> String {
        let answer = match serde_json::from_str::<AdminRequest>(line) {
            Ok(request) => self.answer::<R>(request).await,
            Err(e) => refused(AdminError::BadRequest(e.to_string())),
        };
        let mut line = serde_json::to_string(&answer).expect("answers serialize");
        line.push('\n');
        line
    }

    /// Answers one request.
    pub async fn answer<R: Runtime>(&self, request: AdminRequest) -> AdminResponse {
        let answered = match request {
            AdminRequest::Users => self
                .handle
                .inspect(|server| AdminResponse::Users {
                    users: user_rows(server.state()),
                })
                .await
                .ok_or(AdminError::Stopped),
            AdminRequest::Mailboxes { top } => self
                .handle
                .inspect(move |server| AdminResponse::Mailboxes {
                    mailboxes: mailbox_rows(server.state(), unix_ms_now(), top),
                })
                .await
                .ok_or(AdminError::Stopped),
            AdminRequest::Backup { dest } => self.backup::<R>(dest).await,
            AdminRequest::RemoveUser { user } => match self.handle.remove_user(user).await {
                Some(Ok(removed)) => Ok(AdminResponse::UserRemoved {
                    user: removed.user,
                    items: removed.items,
                    sessions_closed: removed.sessions_closed,
                }),
                Some(Err(RemoveUserError::NoSuchUser)) => Err(AdminError::NoSuchUser),
                Some(Err(_)) => Err(AdminError::ClusterNode),
                None => Err(AdminError::Stopped),
            },
        };
        answered.unwrap_or_else(refused)
    }

    async fn backup<R: Runtime>(&self, dest: PathBuf) -> Result<AdminResponse, AdminError> {
        let backup = self.backup.clone().ok_or(AdminError::NoOnlineBackup)?;
        let to = dest.clone();
        let written = R::spawn_blocking(move || backup.backup_to(&to))
            .await
            .map_err(|e| AdminError::Backup(e.to_string()))?;
        match written {
            Ok(counts) => Ok(backed_up(dest, counts)),
            Err(BackupError::StoreClosed) => Err(AdminError::Stopped),
            Err(e) => Err(AdminError::Backup(e.to_string())),
        }
    }
}

/// The answer to a backup written to `dest`.
pub fn backed_up(dest: PathBuf, counts: StoreCounts) -> AdminResponse {
    AdminResponse::BackedUp {
        dest,
        users: counts.users,
        items: counts.items,
        file_bytes: counts.file_bytes,
    }
}

fn refused(error: AdminError) -> AdminResponse {
    AdminResponse::Refused { error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_core::server::{MailItem, PersistCmd};

    fn name(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    fn message(to: &str, seq: u64, len: usize, at: UnixMillis) -> PersistCmd {
        PersistCmd::Enqueue {
            user: name(to),
            seq,
            item: MailItem::Message {
                from: name("zed"),
                id: missive_core::MessageId([seq as u8; 16]),
                envelope: vec![0; len].into(),
                enqueued_at: at,
            },
        }
    }

    #[test]
    fn rows_by_name_and_deepest_mailboxes_first() {
        let mut cmds: Vec<PersistCmd> = ["zed", "bob", "amy", "cat"]
            .into_iter()
            .map(|user| PersistCmd::RegisterUser {
                user: name(user),
                public_key: user.as_bytes().to_vec(),
            })
            .collect();
        cmds.extend([
            message("bob", 0, 10, 1_000),
            message("bob", 1, 10, 2_000),
            message("amy", 0, 50, 4_000),
            message("cat", 0, 5, 3_000),
        ]);
        let state = ServerState::replay(&cmds);
        let users = user_rows(&state);
        let names: Vec<&str> = users.iter().map(|r| r.user.as_str()).collect();
        assert_eq!(names, ["amy", "bob", "cat", "zed"]);
        assert_eq!(users[1].queued, 2);
        assert_eq!(
            users[0].fingerprint,
            Fingerprint::of_spki_der(b"amy").to_string()
        );
        let rows = mailbox_rows(&state, 10_000, 2);
        assert_eq!(
            rows,
            vec![
                MailboxRow {
                    user: name("bob"),
                    items: 2,
                    bytes: 20,
                    oldest_age_ms: 9_000
                },
                MailboxRow {
                    user: name("amy"),
                    items: 1,
                    bytes: 50,
                    oldest_age_ms: 6_000
                },
            ]
        );
    }

    #[test]
    fn requests_and_answers_are_one_json_object_each() {
        let request = AdminRequest::RemoveUser { user: name("bob") };
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(line, r#"{"request":"remove-user","user":"bob"}"#);
        assert_eq!(
            serde_json::from_str::<AdminRequest>(&line).unwrap(),
            request
        );
        let refused = refused(AdminError::NoSuchUser);
        let line = serde_json::to_string(&refused).unwrap();
        assert_eq!(
            line,
            r#"{"answer":"refused","error":{"error":"no-such-user"}}"#
        );
        assert_eq!(
            serde_json::from_str::<AdminResponse>(&line).unwrap(),
            refused
        );
        assert!(serde_json::from_str::<AdminRequest>(r#"{"request":"format-disk"}"#).is_err());
        assert!(
            serde_json::from_str::<AdminRequest>(r#"{"request":"remove-user","user":"Bad Name"}"#)
                .is_err()
        );
    }
}
