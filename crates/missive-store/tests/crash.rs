//! Crash safety of `RedbStore` under group commit: a child process commits
//! as fast as it can and prints every LSN reported durable; the parent kills
//! it with SIGKILL mid-stream, reopens the directory and checks that every
//! command reported durable is there (and that the state is exactly a prefix
//! of the command stream: batches are atomic).
//!
//! The child is this test binary itself, re-run with `CHILD_ENV` set so that
//! only `crash_child` does anything.

use missive_core::Lsn;
use missive_core::server::{MailItem, PersistCmd, ServerState};
use missive_core::wire::Notice;
use missive_core::{MessageId, UserName};
use missive_store::{RedbStore, Store, StoreEvent, StoreThread};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "MISSIVE_STORE_CRASH_CHILD_DIR";
const USERS: u64 = 8;
/// Each user's mailbox keeps about this many items: older ones are acked
/// or expired.
const BACKLOG: u64 = 40;
/// The child submits bursts of at most this many commands, then flushes.
const MAX_BURST: u64 = 64;

fn user(i: u64) -> UserName {
    UserName::new(format!("user-{i}")).unwrap()
}

/// The `n`-th command (LSNs start at 1) of the deterministic stream.
fn cmd(n: u64) -> PersistCmd {
    if n == 1 {
        return PersistCmd::SetServerId {
            server_id: [0xab; 16],
        };
    }
    if n <= 1 + USERS {
        let i = n - 2;
        return PersistCmd::RegisterUser {
            user: user(i),
            public_key: vec![i as u8; 270],
        };
    }
    // Ticks of 2 * USERS commands: one enqueue per user, then one removal
    // per user of the item enqueued BACKLOG ticks earlier.
    let k = n - 2 - USERS;
    let (tick, i) = (k / (2 * USERS), k % (2 * USERS));
    if i < USERS {
        let item = if tick % 4 == 0 {
            MailItem::Notice {
                notice: Notice::Delivered {
                    to: user((i + 1) % USERS),
                    id: MessageId([tick as u8; 16]),
                },
                enqueued_at: tick,
            }
        } else {
            let len = 100 + ((tick * 37 + i * 11) % 900) as usize;
            MailItem::Message {
                from: user((i + 3) % USERS),
                id: MessageId([i as u8; 16]),
                envelope: (0..len).map(|b| (b as u64 ^ tick) as u8).collect(),
                enqueued_at: tick,
            }
        };
        PersistCmd::Enqueue {
            user: user(i),
            seq: tick,
            item,
        }
    } else {
        let (user, seq) = (user(i - USERS), tick.saturating_sub(BACKLOG));
        if tick % 3 == 0 {
            PersistCmd::Expire { user, seq }
        } else {
            PersistCmd::Ack { user, seq }
        }
    }
}

/// The child: commit the stream forever, printing `durable <lsn>` lines.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // run as a normal test: nothing to do
    };
    let mut store = RedbStore::open(Path::new(&dir)).unwrap();
    assert_eq!(store.load().unwrap(), ServerState::new());
    let thread = StoreThread::spawn(store, |event| match event {
        StoreEvent::Durable(Lsn(lsn)) => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "durable {lsn}").unwrap();
            out.flush().unwrap();
        }
        other => panic!("{other:?}"),
    });
    let mut n = 1;
    let mut burst = 1;
    loop {
        for _ in 0..burst {
            thread.submit(Lsn(n), cmd(n)).unwrap();
            n += 1;
        }
        thread.flush().unwrap();
        burst = burst * 7 % MAX_BURST + 1;
    }
}

/// Runs a child, kills it `delay` after it reported `kill_after` commands
/// durable, and returns the highest LSN it reported.
fn run_child_and_kill(dir: &Path, kill_after: u64, delay: Duration) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reported = 0;
    let mut killed = false;
    for line in lines {
        let line = line.unwrap();
        if let Some(lsn) = line.strip_prefix("durable ") {
            let lsn: u64 = lsn.parse().unwrap();
            assert!(lsn > reported, "durable LSNs go backwards");
            reported = lsn;
            if !killed && reported >= kill_after {
                // Busy-wait: sleeps are too coarse to vary where in a
                // commit the kill lands.
                let start = Instant::now();
                while start.elapsed() < delay {
                    std::hint::spin_loop();
                }
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
    }
    // Lines written before the kill were read to EOF above: all count.
    let status = child.wait().unwrap();
    assert!(killed, "child exited on its own: {status}");
    reported
}

/// Checks the store in `dir` holds exactly the first L' commands of the
/// stream for some L' ≥ `reported`, and returns L'.
fn check_prefix(dir: &Path, reported: u64) -> u64 {
    let loaded = RedbStore::open(dir).unwrap().load().unwrap();
    let mut expected = ServerState::replay(&(1..=reported).map(cmd).collect::<Vec<_>>());
    // The child flushes after every burst, so at most one burst (plus the
    // batch whose line was not printed yet) can be durable but unreported.
    for extra in 0..=2 * MAX_BURST {
        if loaded == expected {
            return reported + extra;
        }
        expected.apply(&cmd(reported + extra + 1));
    }
    panic!(
        "state after the crash is not a prefix of the stream at or after reported LSN {reported}: \
         {} users, {} items",
        loaded.user_count(),
        loaded.queued_items()
    );
}

#[test]
fn killed_mid_commit_keeps_every_reported_command() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // inside a child
    }
    for (kill_after, delay_us) in [
        (1, 0),
        (40, 100),
        (300, 250),
        (1_000, 400),
        (2_500, 700),
        (5_000, 1_100),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let delay = Duration::from_micros(delay_us);
        let reported = run_child_and_kill(dir.path(), kill_after, delay);
        assert!(reported >= kill_after);
        let durable = check_prefix(dir.path(), reported);

        // The recovered database takes new commits and keeps them.
        let mut store = RedbStore::open(dir.path()).unwrap();
        let mut state = store.load().unwrap();
        let more: Vec<PersistCmd> = (durable + 1..=durable + 100).map(cmd).collect();
        store.commit(&more).unwrap();
        drop(store);
        for c in &more {
            state.apply(c);
        }
        assert_eq!(RedbStore::open(dir.path()).unwrap().load().unwrap(), state);
        eprintln!(
            "killed {delay_us} us after LSN {kill_after}: reported {reported}, found {durable}"
        );
    }
}
