//! Group-commit throughput of `RedbStore` behind a `StoreThread`.
//!
//! ```text
//! cargo run --release -p missive-store --example group_commit -- [COMMANDS] [ENVELOPE_BYTES] [DIR]
//! ```
//!
//! Submits COMMANDS (default 100,000) `Enqueue` commands with envelopes of
//! ENVELOPE_BYTES (default 256) as fast as possible, spread over 100
//! mailboxes, waits until all are durable and prints commits/s, commands/s
//! and the mean batch size. For comparison it first commits 1,000 commands
//! one per transaction, and afterwards runs a closed loop: 64 writer
//! threads that each submit one command and wait for it to be durable
//! (COMMANDS / 10 commands in all). The database goes in DIR (default: a temporary
//! directory; pick one on the disk you care about).

use missive_core::server::{MailItem, PersistCmd};
use missive_core::{Lsn, MessageId, UserName};
use missive_store::{RedbStore, Store, StoreEvent, StoreThread};
use std::time::Instant;

const USERS: u64 = 100;
const WRITERS: u64 = 64;

fn user(i: u64) -> UserName {
    UserName::new(format!("user-{i}")).expect("valid name")
}

fn enqueue(i: u64, envelope_bytes: usize) -> PersistCmd {
    PersistCmd::Enqueue {
        user: user(i % USERS),
        seq: i / USERS,
        item: MailItem::Message {
            from: user((i + 1) % USERS),
            id: MessageId([(i % 251) as u8; 16]),
            envelope: vec![(i % 256) as u8; envelope_bytes].into(),
            enqueued_at: 1_700_000_000_000 + i,
        },
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let commands: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let envelope_bytes: usize = args.next().map_or(Ok(256), |a| a.parse())?;
    let tmp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| tmp.path().to_owned(), Into::into);

    let mut store = RedbStore::open(&dir)?;
    store.load()?;
    let users: Vec<PersistCmd> = (0..USERS)
        .map(|i| PersistCmd::RegisterUser {
            user: user(i),
            public_key: vec![0x30; 294],
        })
        .collect();
    store.commit(&users)?;

    // Baseline: one command per transaction (one fsync each). These go at
    // seqs above the main run's, in the same mailboxes.
    let single = 1_000;
    let offset = commands + USERS;
    let start = Instant::now();
    for i in 0..single {
        store.commit(&[enqueue(offset + i, envelope_bytes)])?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "one command per commit: {single} commits in {elapsed:.2} s = {:.0} commits/s",
        single as f64 / elapsed
    );

    let thread = StoreThread::spawn(store, |event| {
        if let StoreEvent::Failed(e) = event {
            eprintln!("store failed: {e}");
        }
    });
    let cmds: Vec<PersistCmd> = (0..commands).map(|i| enqueue(i, envelope_bytes)).collect();
    let start = Instant::now();
    for (i, cmd) in cmds.into_iter().enumerate() {
        thread.submit(Lsn(i as u64 + 1), cmd)?;
    }
    let submitted = start.elapsed().as_secs_f64();
    thread.flush()?;
    let elapsed = start.elapsed().as_secs_f64();
    let open_loop = thread.stats();
    let stats = open_loop;
    println!(
        "group commit: {} commands of {envelope_bytes}-byte envelopes (submitted in {submitted:.2} s), \
         durable in {elapsed:.2} s",
        stats.commands
    );
    println!(
        "  {} commits = {:.0} commits/s, {:.0} commands/s, mean batch {:.1}, largest batch {}",
        stats.commits,
        stats.commits as f64 / elapsed,
        stats.commands as f64 / elapsed,
        stats.mean_batch(),
        stats.largest_batch
    );

    // Closed loop: WRITERS threads each submit one command and wait until it
    // is durable (as connections waiting for their acks would).
    let next = std::sync::Mutex::new(commands);
    let per_writer = (commands / 10 / WRITERS).max(1);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..WRITERS {
            scope.spawn(|| {
                for _ in 0..per_writer {
                    {
                        // LSNs must reach the thread in increasing order.
                        let mut n = next.lock().expect("lock");
                        *n += 1;
                        let i = *n;
                        thread
                            .submit(Lsn(i), enqueue(offset + single + i, envelope_bytes))
                            .expect("submit");
                    }
                    thread.flush().expect("flush");
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let stats = thread.shutdown()?;
    let (commits, cmds) = (
        stats.commits - open_loop.commits,
        stats.commands - open_loop.commands,
    );
    println!(
        "closed loop, {WRITERS} writers each waiting for durability: {cmds} commands in {elapsed:.2} s"
    );
    println!(
        "  {commits} commits = {:.0} commits/s, {:.0} commands/s, mean batch {:.1}",
        commits as f64 / elapsed,
        cmds as f64 / elapsed,
        cmds as f64 / commits as f64
    );
    Ok(())
}
