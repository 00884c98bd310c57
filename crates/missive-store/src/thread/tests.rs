//! Tests of the store thread: group commit, retries, failures.

use super::*;
use crate::MemoryStore;
use missive_core::server::ServerState;
use std::sync::mpsc::channel;

fn cmd(n: u8) -> PersistCmd {
    PersistCmd::SetServerId { server_id: [n; 16] }
}

/// A store that announces each commit (with its batch size), then
/// blocks until the test lets it through or tells it to fail.
struct Gated {
    inner: MemoryStore,
    entered: Sender<usize>,
    gate: Receiver<bool>,
}

impl Store for Gated {
    fn load(&mut self) -> Result<ServerState, StoreError> {
        self.inner.load()
    }

    fn commit(&mut self, batch: &[PersistCmd]) -> Result<(), StoreError> {
        let _ = self.entered.send(batch.len());
        if !self.gate.recv().unwrap_or(true) {
            return Err(StoreError::Corrupt("injected failure".into()));
        }
        self.inner.commit(batch)
    }
}

fn gated() -> (Gated, Receiver<usize>, Sender<bool>) {
    let (gate_tx, gate) = channel();
    let (entered, entered_rx) = channel();
    let store = Gated {
        inner: MemoryStore::new(),
        entered,
        gate,
    };
    (store, entered_rx, gate_tx)
}

fn durable(event: StoreEvent) -> Lsn {
    match event {
        StoreEvent::Durable(lsn) => lsn,
        other => panic!("{other:?}"),
    }
}

#[test]
fn commands_arriving_during_a_commit_form_the_next_batch() {
    let (store, entered, gate) = gated();
    let memory = store.inner.clone();
    let (events_tx, events) = channel();
    let thread = StoreThread::spawn(store, move |e| events_tx.send(e).unwrap());

    thread.submit(Lsn(1), cmd(1)).unwrap();
    assert_eq!(entered.recv().unwrap(), 1); // inside the first commit
    for n in 2..=10 {
        thread.submit(Lsn(n), cmd(n as u8)).unwrap();
    }
    gate.send(true).unwrap();
    assert_eq!(entered.recv().unwrap(), 9);
    gate.send(true).unwrap();
    thread.flush().unwrap();
    let reported: Vec<Lsn> = events.try_iter().map(durable).collect();
    assert_eq!(reported, vec![Lsn(1), Lsn(10)]);
    let stats = thread.shutdown().unwrap();
    assert_eq!(stats.commits, 2);
    assert_eq!(stats.commands, 10);
    assert_eq!(stats.largest_batch, 9);
    assert_eq!(stats.durable_lsn, Some(Lsn(10)));
    assert_eq!(stats.mean_batch(), 5.0);
    assert_eq!(memory.state().server_id(), Some([10; 16]));
}

#[test]
fn batches_are_capped() {
    let store = MemoryStore::new();
    let (events_tx, events) = channel();
    let thread = StoreThread::spawn(store.clone(), move |e| events_tx.send(e).unwrap());
    let total = 3 * MAX_BATCH_COMMANDS as u64 + 5;
    for n in 1..=total {
        thread.submit(Lsn(n), cmd(n as u8)).unwrap();
    }
    let stats = thread.shutdown().unwrap();
    assert_eq!(stats.commands, total);
    assert!(stats.largest_batch <= MAX_BATCH_COMMANDS as u64);
    assert!(stats.commits >= 4);
    assert_eq!(stats.durable_lsn, Some(Lsn(total)));
    let reported: Vec<Lsn> = events.try_iter().map(durable).collect();
    assert!(reported.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(reported.last(), Some(&Lsn(total)));
}

/// Every successful commit is reported once, with its size, before its
/// durability report; a failed one is not.
#[test]
fn each_commit_is_reported_with_its_size() {
    let (reports_tx, reports) = channel();
    let (events_tx, events) = channel();
    let thread = StoreThread::spawn_reporting(
        MemoryStore::new(),
        move |e| events_tx.send(e).unwrap(),
        move |report: &CommitReport| reports_tx.send(*report).unwrap(),
    );
    for n in 1..=3 {
        thread.submit(Lsn(n), cmd(n as u8)).unwrap();
        thread.flush().unwrap();
    }
    let stats = thread.shutdown().unwrap();
    let reports: Vec<CommitReport> = reports.try_iter().collect();
    assert_eq!(reports.len() as u64, stats.commits);
    assert_eq!(
        reports.iter().map(|r| r.commands as u64).sum::<u64>(),
        stats.commands
    );
    assert_eq!(events.try_iter().count() as u64, stats.commits);
}

#[test]
fn flush_with_nothing_submitted_returns() {
    let thread = StoreThread::spawn(MemoryStore::new(), |_| panic!("no event expected"));
    thread.flush().unwrap();
    assert_eq!(thread.shutdown().unwrap(), StoreStats::default());
}

#[test]
fn failure_is_reported_and_stops_the_thread() {
    let (store, entered, gate) = gated();
    let memory = store.inner.clone();
    let (events_tx, events) = channel();
    let thread = StoreThread::spawn(store, move |e| events_tx.send(e).unwrap());
    gate.send(true).unwrap();
    thread.submit(Lsn(1), cmd(1)).unwrap();
    thread.flush().unwrap();
    gate.send(false).unwrap();
    thread.submit(Lsn(2), cmd(2)).unwrap();
    assert!(matches!(thread.flush(), Err(StoreError::Stopped)));
    assert!(matches!(
        thread.submit(Lsn(3), cmd(3)),
        Err(StoreError::Stopped)
    ));
    assert_eq!(durable(events.recv().unwrap()), Lsn(1));
    assert!(matches!(
        events.recv().unwrap(),
        StoreEvent::Failed(StoreError::Corrupt(_))
    ));
    assert!(events.try_recv().is_err());
    assert!(matches!(thread.shutdown(), Err(StoreError::Stopped)));
    assert_eq!(entered.try_iter().collect::<Vec<_>>(), vec![1, 1]);
    assert_eq!(memory.state().server_id(), Some([1; 16]));
}

/// A store whose disk is full for its first `failures` commits: each
/// fails with `ENOSPC` (as redb reports it) and writes nothing.
struct FullDisk {
    inner: MemoryStore,
    failures: Arc<AtomicU64>,
}

impl FullDisk {
    fn new(failures: u64) -> (Self, MemoryStore, Arc<AtomicU64>) {
        let inner = MemoryStore::new();
        let left = Arc::new(AtomicU64::new(failures));
        let store = FullDisk {
            inner: inner.clone(),
            failures: Arc::clone(&left),
        };
        (store, inner, left)
    }
}

impl Store for FullDisk {
    fn load(&mut self) -> Result<ServerState, StoreError> {
        self.inner.load()
    }

    fn commit(&mut self, batch: &[PersistCmd]) -> Result<(), StoreError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Io {
                path: "missive.redb".into(),
                source: std::io::ErrorKind::StorageFull.into(),
            });
        }
        self.inner.commit(batch)
    }
}

#[test]
fn transient_failures_are_retried_and_reported_once() {
    let (store, memory, _) = FullDisk::new(3);
    let (events_tx, events) = channel();
    let thread = StoreThread::spawn(store, move |e| events_tx.send(e).unwrap());
    thread.submit(Lsn(1), cmd(1)).unwrap();
    // Unavailable once; nothing durable before the store is back.
    let first = events.recv().unwrap();
    assert!(
        matches!(&first, StoreEvent::Unavailable(e) if e.is_transient()),
        "{first:?}"
    );
    assert!(memory.state().server_id().is_none());
    // Submitted during the outage: queued behind the failed batch.
    thread.submit(Lsn(2), cmd(2)).unwrap();
    thread.submit(Lsn(3), cmd(3)).unwrap();
    thread.flush().unwrap(); // returns once the store is back
    assert!(matches!(events.recv().unwrap(), StoreEvent::Available));
    let reported: Vec<Lsn> = events.try_iter().map(durable).collect();
    assert_eq!(reported.last(), Some(&Lsn(3)));
    assert!(reported.windows(2).all(|w| w[0] < w[1]), "{reported:?}");
    assert_eq!(memory.state().server_id(), Some([3; 16]));
    let stats = thread.shutdown().unwrap();
    assert_eq!(stats.commands, 3);
    assert_eq!(stats.durable_lsn, Some(Lsn(3)));
}

#[test]
fn shutdown_while_unavailable_makes_one_last_try() {
    // The last try fails: the store's error, nothing hangs.
    let (store, memory, _) = FullDisk::new(u64::MAX);
    let (events_tx, events) = channel();
    let thread = StoreThread::spawn(store, move |e| events_tx.send(e).unwrap());
    thread.submit(Lsn(1), cmd(1)).unwrap();
    assert!(matches!(events.recv().unwrap(), StoreEvent::Unavailable(_)));
    match thread.shutdown() {
        Err(StoreError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull)
        }
        other => panic!("{other:?}"),
    }
    assert!(memory.state().server_id().is_none());

    // The disk has room again by the shutdown: the last try commits.
    let (store, memory, failures) = FullDisk::new(u64::MAX);
    let (events_tx, events) = channel();
    let thread = StoreThread::spawn(store, move |e| events_tx.send(e).unwrap());
    thread.submit(Lsn(1), cmd(1)).unwrap();
    assert!(matches!(events.recv().unwrap(), StoreEvent::Unavailable(_)));
    failures.store(0, Ordering::SeqCst);
    let stats = thread.shutdown().unwrap();
    assert_eq!(stats.durable_lsn, Some(Lsn(1)));
    assert_eq!(memory.state().server_id(), Some([1; 16]));
}

#[test]
fn only_errors_that_may_pass_are_retried() {
    let io = StoreError::Io {
        path: "x".into(),
        source: std::io::ErrorKind::StorageFull.into(),
    };
    assert!(io.is_transient());
    let previous_io = StoreError::database(redb::StorageError::PreviousIo);
    assert!(previous_io.is_transient());
    let corrupted = StoreError::database(redb::StorageError::Corrupted("bad".into()));
    assert!(!corrupted.is_transient());
    for fatal in [
        StoreError::UnsupportedCommand("x".into()),
        StoreError::Encode {
            what: "x",
            detail: "y".into(),
        },
        StoreError::UnsupportedFormat {
            found: 2,
            supported: 1,
        },
        StoreError::ClusterMismatch { detail: "x".into() },
        StoreError::Corrupt("x".into()),
        StoreError::Stopped,
    ] {
        assert!(!fatal.is_transient(), "{fatal:?}");
    }
}

#[test]
fn drop_commits_what_is_queued() {
    let store = MemoryStore::new();
    let thread = StoreThread::spawn(store.clone(), |_| {});
    thread.submit(Lsn(1), cmd(4)).unwrap();
    drop(thread);
    assert_eq!(store.state().server_id(), Some([4; 16]));
}
