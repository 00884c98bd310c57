//! `missive-server admin …`: the operator's commands. They ask the running
//! server over its admin socket; with no server answering there and a redb
//! data directory, they open the store themselves (offline mode). `verify`
//! and `restore` never touch a running server's store.

use super::DEFAULT_DATA;
use clap::{Parser, Subcommand};
use missive_core::UserName;
use missive_core::server::PersistCmd;
use missive_runtime::admin::{
    AdminError, AdminRequest, AdminResponse, MailboxRow, UserRow, backed_up, mailbox_rows,
    user_rows,
};
use missive_store::{RedbStore, Store, StoreCounts, VerifyError};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The admin socket's name in the data directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// Exit status of a command that failed or was refused.
const FAILED: u8 = 1;
/// Exit status of a usage error (clap's).
const USAGE: u8 = 2;
/// Exit status of `verify` when the store does not verify.
const DAMAGED: u8 = 3;

/// Operate a Missive server: list users and mailboxes, back up, restore,
/// remove a user, verify a store.
///
/// Commands go to the running server over its admin socket (--admin-socket,
/// else DATA/admin.sock). With no server there, users, mailboxes, backup
/// and remove-user open the data directory's store themselves.
///
/// Exit status: 0 done, 1 failed or refused, 2 usage, 3 (verify) the store
/// is damaged or inconsistent.
#[derive(Debug, Parser)]
#[command(
    name = "missive-server admin",
    bin_name = "missive-server admin",
    version
)]
struct AdminArgs {
    /// The server's data directory [default: ./missive-data].
    #[arg(long, global = true, env = "MISSIVE_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// The server's admin socket [default: DATA/admin.sock].
    #[arg(long, global = true, env = "MISSIVE_ADMIN_SOCKET", value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Take --data and --admin-socket from the server's configuration file.
    #[arg(long, global = true, env = "MISSIVE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON (one object) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List users: name, key fingerprint, queued items.
    Users,
    /// The deepest mailboxes: items, envelope bytes, age of the oldest.
    Mailboxes {
        /// How many.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Copy the store, consistently, while the server serves, into DEST
    /// (a new or empty directory; the server writes it).
    Backup {
        /// Where.
        dest: PathBuf,
    },
    /// Restore a backup into the data directory of --data, which must be
    /// empty or absent (the backup is verified first).
    Restore {
        /// The backup directory (or its missive.redb).
        backup: PathBuf,
    },
    /// Remove a user and its queue (persisted; the name is free again).
    RemoveUser {
        /// Who.
        user: String,
    },
    /// Check a stopped server's data directory or a backup: checksums,
    /// rows, keys; print counts.
    Verify {
        /// The directory or file [default: DATA].
        path: Option<PathBuf>,
    },
}

/// Where the server's files are.
struct Place {
    data: PathBuf,
    socket: PathBuf,
}

/// Why a command failed, and its exit status.
struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: FAILED,
        }
    }
}

/// Runs `missive-server admin …` (the first argument is `admin`).
pub fn main() -> ExitCode {
    let arguments = std::env::args_os()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, a)| a);
    let args = match AdminArgs::try_parse_from(arguments) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(USAGE));
        }
    };
    match run(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("missive-server admin: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}

fn run(args: &AdminArgs) -> Result<String, Failure> {
    let place = place(args)?;
    match &args.command {
        Command::Users => ask_or_open(&place, args.json, AdminRequest::Users),
        Command::Mailboxes { top } => {
            ask_or_open(&place, args.json, AdminRequest::Mailboxes { top: *top })
        }
        Command::Backup { dest } => {
            let dest = std::path::absolute(dest).map_err(|e| Failure::new(e.to_string()))?;
            ask_or_open(&place, args.json, AdminRequest::Backup { dest })
        }
        Command::RemoveUser { user } => {
            let user = UserName::new(user).map_err(|e| Failure::new(format!("{user:?}: {e}")))?;
            ask_or_open(&place, args.json, AdminRequest::RemoveUser { user })
        }
        Command::Restore { backup } => restore(&place, backup, args.json),
        Command::Verify { path } => verify(&place, path.as_deref(), args.json),
    }
}

fn place(args: &AdminArgs) -> Result<Place, Failure> {
    let file = match &args.config {
        Some(path) => Some(super::settings::read_file(path).map_err(|e| Failure {
            message: e.to_string(),
            status: USAGE,
        })?),
        None => None,
    };
    let data = args
        .data
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.data.clone()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
    let socket = args
        .admin_socket
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.admin_socket.clone()))
        .unwrap_or_else(|| data.join(SOCKET_NAME));
    Ok(Place { data, socket })
}

/// The running server's answer, or the store's own if no server answers.
fn ask_or_open(place: &Place, json: bool, request: AdminRequest) -> Result<String, Failure> {
    let answer = match UnixStream::connect(&place.socket) {
        Ok(stream) => ask(stream, &request)?,
        Err(_) => answer_offline(&place.data, request)?,
    };
    if let AdminResponse::Refused { error } = &answer {
        return Err(Failure::new(error.to_string()));
    }
    Ok(if json {
        json_line(&answer)
    } else {
        table(&answer)
    })
}

/// One request over the socket, one answer.
fn ask(mut stream: UnixStream, request: &AdminRequest) -> Result<AdminResponse, Failure> {
    let mut line = serde_json::to_string(request).expect("requests serialize");
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| Failure::new(format!("admin socket: {e}")))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| Failure::new(format!("admin socket: {e}")))?;
    serde_json::from_str(&answer)
        .map_err(|e| Failure::new(format!("admin socket: unexpected answer {answer:?}: {e}")))
}

/// A request answered from the data directory's store, no server running.
fn answer_offline(data: &Path, request: AdminRequest) -> Result<AdminResponse, Failure> {
    if !data.join(missive_store::redb_file_name()).is_file() {
        return Err(Failure::new(format!(
            "no server answers and there is no store in {}",
            data.display()
        )));
    }
    if let AdminRequest::Backup { dest } = request {
        return match missive_store::backup_offline(data, &dest) {
            Ok(counts) => Ok(backed_up(dest, counts)),
            Err(e) => Err(Failure::new(format!("backup failed: {e}"))),
        };
    }
    let mut store = RedbStore::open(data).map_err(|e| {
        Failure::new(format!(
            "no server answers on the admin socket and the store in {} cannot be opened \
             (a server without that socket?): {e}",
            data.display()
        ))
    })?;
    let state = store.load().map_err(|e| Failure::new(e.to_string()))?;
    Ok(match request {
        AdminRequest::Users => AdminResponse::Users {
            users: user_rows(&state),
        },
        AdminRequest::Mailboxes { top } => AdminResponse::Mailboxes {
            mailboxes: mailbox_rows(&state, missive_runtime::unix_ms_now(), top),
        },
        AdminRequest::RemoveUser { user } => {
            let Some(record) = state.user(&user) else {
                return Ok(AdminResponse::Refused {
                    error: AdminError::NoSuchUser,
                });
            };
            let items = record.mailbox.items.len();
            store
                .commit(&[PersistCmd::RemoveUser { user: user.clone() }])
                .map_err(|e| Failure::new(e.to_string()))?;
            AdminResponse::UserRemoved {
                user,
                items,
                sessions_closed: 0,
            }
        }
        other => {
            return Err(Failure::new(format!("{other:?} needs a running server")));
        }
    })
}

fn restore(place: &Place, backup: &Path, json: bool) -> Result<String, Failure> {
    if UnixStream::connect(&place.socket).is_ok() {
        return Err(Failure::new(format!(
            "a server answers on {}: stop it first",
            place.socket.display()
        )));
    }
    let counts =
        missive_store::restore(backup, &place.data).map_err(|e| Failure::new(e.to_string()))?;
    Ok(counts_text(json, "restored", &place.data, &counts))
}

fn verify(place: &Place, path: Option<&Path>, json: bool) -> Result<String, Failure> {
    let path = path.unwrap_or(&place.data);
    if path == place.data && UnixStream::connect(&place.socket).is_ok() {
        return Err(Failure::new(format!(
            "a server answers on {}: verify a backup of it, or stop it first",
            place.socket.display()
        )));
    }
    match missive_store::verify(path) {
        Ok(counts) => Ok(counts_text(json, "verified", path, &counts)),
        Err(e @ VerifyError::NoStore(_)) => Err(Failure::new(e.to_string())),
        Err(e) => Err(Failure {
            message: format!("{} does not verify: {e}", path.display()),
            status: DAMAGED,
        }),
    }
}

/// `verify`'s and `restore`'s report.
fn counts_text(json: bool, what: &str, path: &Path, counts: &StoreCounts) -> String {
    if json {
        let value = serde_json::json!({
            "answer": what,
            "path": path,
            "users": counts.users,
            "items": counts.items,
            "bytes": counts.envelope_bytes,
            "file_bytes": counts.file_bytes,
        });
        return format!("{value}\n");
    }
    format!(
        "{what} {}: {} users, {} items, {} envelope bytes, file {} bytes\n",
        path.display(),
        counts.users,
        counts.items,
        counts.envelope_bytes,
        counts.file_bytes
    )
}

fn json_line(answer: &AdminResponse) -> String {
    let mut line = serde_json::to_string(answer).expect("answers serialize");
    line.push('\n');
    line
}

/// An answer for people.
fn table(answer: &AdminResponse) -> String {
    match answer {
        AdminResponse::Users { users } => columns(
            &["USER", "FINGERPRINT", "QUEUED"],
            users.iter().map(
                |UserRow {
                     user,
                     fingerprint,
                     queued,
                 }| {
                    vec![user.to_string(), fingerprint.clone(), queued.to_string()]
                },
            ),
        ),
        AdminResponse::Mailboxes { mailboxes } => columns(
            &["USER", "ITEMS", "BYTES", "OLDEST"],
            mailboxes.iter().map(|row: &MailboxRow| {
                vec![
                    row.user.to_string(),
                    row.items.to_string(),
                    row.bytes.to_string(),
                    age(row.oldest_age_ms),
                ]
            }),
        ),
        AdminResponse::BackedUp {
            dest,
            users,
            items,
            file_bytes,
        } => format!(
            "backed up to {}: {users} users, {items} items, file {file_bytes} bytes\n",
            dest.display()
        ),
        AdminResponse::UserRemoved {
            user,
            items,
            sessions_closed,
        } => format!(
            "removed {user}: {items} queued items dropped, {sessions_closed} sessions closed\n"
        ),
        other => format!("{other:?}\n"),
    }
}

/// Left-aligned text columns, numbers right-aligned.
fn columns(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows)
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                if i == 0 || i == 1 && header[1] == "FINGERPRINT" {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(999), "0s");
        assert_eq!(age(61_000), "1m 1s");
        assert_eq!(age(2 * 3_600_000 + 5 * 60_000), "2h 5m");
        assert_eq!(age(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }

    #[test]
    fn tables_align_their_columns() {
        let text = columns(
            &["USER", "ITEMS"],
            [
                vec!["alice".into(), "7".into()],
                vec!["bo".into(), "12".into()],
            ]
            .into_iter(),
        );
        assert_eq!(text, "USER   ITEMS\nalice      7\nbo        12\n");
    }

    #[test]
    fn admin_flags_go_before_or_after_the_command() {
        let args =
            AdminArgs::try_parse_from(["missive-server", "restore", "b", "--data", "d", "--json"])
                .unwrap();
        assert_eq!(args.data, Some(PathBuf::from("d")));
        assert!(args.json);
        let args =
            AdminArgs::try_parse_from(["missive-server", "--admin-socket", "s", "users"]).unwrap();
        assert_eq!(args.admin_socket, Some(PathBuf::from("s")));
    }
}
