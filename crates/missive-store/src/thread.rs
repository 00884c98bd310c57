//! Group commit: a store on its own OS thread.

use crate::{Store, StoreError};
use missive_core::Lsn;
use missive_core::cluster::Shard;
use missive_core::server::{MailItem, PersistCmd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most commands in one commit.
const MAX_BATCH_COMMANDS: usize = 4096;

/// Roughly the most bytes (envelopes, keys) in one commit. A batch is closed
/// once it reaches this size, so it may exceed it by one command.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// What the store thread reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreEvent {
    /// Every command submitted with an LSN up to and including this one is
    /// durable: feed `Input::Durable(lsn)` to the server.
    Durable(Lsn),
    /// A cluster node's commit dropped these shards' commands (see
    /// [`Store::take_fenced`]): the node must drop the shards. Reported
    /// before the [`Durable`](StoreEvent::Durable) of that commit, so the
    /// commands of these shards it covers are never taken for durable.
    Fenced(Vec<Shard>),
    /// A commit failed. The commands of the failed batch and everything
    /// submitted after it are not durable and never will be; the thread has
    /// stopped and further calls return [`StoreError::Stopped`]. A driver
    /// should shut the server down.
    Failed(StoreError),
}

/// One successful commit, as the store thread reports it to an observer
/// ([`StoreThread::spawn_reporting`]): for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitReport {
    /// Commands in the commit.
    pub commands: usize,
    /// How long the commit took (the transaction and its `fsync`).
    pub duration: Duration,
}

impl CommitReport {
    /// A commit of `commands` that took `duration`.
    pub fn new(commands: usize, duration: Duration) -> Self {
        Self { commands, duration }
    }
}

/// Counters of a [`StoreThread`], for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Successful commits (transactions, and so `fsync`s for a durable store).
    pub commits: u64,
    /// Commands made durable.
    pub commands: u64,
    /// Most commands in one commit.
    pub largest_batch: u64,
    /// The highest LSN reported durable.
    pub durable_lsn: Option<Lsn>,
}

impl StoreStats {
    /// Mean commands per commit (0 before the first commit).
    pub fn mean_batch(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.commands as f64 / self.commits as f64
        }
    }
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    commands: AtomicU64,
    largest_batch: AtomicU64,
    /// 0 for none: LSNs start at 1.
    durable_lsn: AtomicU64,
}

enum Msg {
    /// A command, and the lease epoch of its shard when it was issued.
    Cmd(Lsn, PersistCmd, Option<u64>),
    /// Answer once everything before this message is durable. Dropped
    /// unanswered if the thread stops.
    Flush(Sender<()>),
}

/// Runs a [`Store`] on a dedicated OS thread with group commit.
///
/// [`submit`](StoreThread::submit) queues a command and returns at once. The
/// thread waits for the first queued command, takes everything else already
/// waiting (up to 4096 commands or about 16 MiB), commits it as one batch
/// (one transaction, one `fsync`), then reports
/// [`StoreEvent::Durable`] with the batch's highest LSN. Commands submitted
/// during a commit go into the next one, so the batch size grows with the
/// load and the number of `fsync`s per second stays bounded.
///
/// The callback runs on the store thread; it should hand the event over
/// (e.g. send it on a channel to the server's task) rather than block.
///
/// ```
/// use missive_core::Lsn;
/// use missive_store::{MemoryStore, PersistCmd, Store, StoreEvent, StoreThread};
/// use std::sync::mpsc;
///
/// let store = MemoryStore::new();
/// let (tx, rx) = mpsc::channel();
/// let thread = StoreThread::spawn(store.clone(), move |event| {
///     let _ = tx.send(event);
/// });
/// thread.submit(Lsn(1), PersistCmd::SetServerId { server_id: [1; 16] })?;
/// thread.flush()?; // Lsn(1) is durable now
/// assert!(matches!(rx.recv().unwrap(), StoreEvent::Durable(Lsn(1))));
/// let stats = thread.shutdown()?;
/// assert_eq!(stats.commands, 1);
/// assert_eq!(store.state().server_id(), Some([1; 16]));
/// # Ok::<(), missive_store::StoreError>(())
/// ```
pub struct StoreThread {
    tx: Option<Sender<Msg>>,
    handle: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for StoreThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreThread")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl StoreThread {
    /// Starts the thread. Call [`Store::load`] before, on the same store.
    ///
    /// # Panics
    ///
    /// If the OS cannot create a thread (as [`std::thread::spawn`]).
    pub fn spawn(store: impl Store, on_event: impl Fn(StoreEvent) + Send + 'static) -> Self {
        Self::spawn_reporting(store, on_event, |_| {})
    }

    /// [`spawn`](StoreThread::spawn), with `on_commit` told of every
    /// successful commit (on the store thread, before its
    /// [`StoreEvent::Durable`]; it should be quick: metrics).
    ///
    /// # Panics
    ///
    /// If the OS cannot create a thread (as [`std::thread::spawn`]).
    pub fn spawn_reporting(
        store: impl Store,
        on_event: impl Fn(StoreEvent) + Send + 'static,
        on_commit: impl Fn(&CommitReport) + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let handle = std::thread::Builder::new()
            .name("missive-store".into())
            .spawn(move || run(store, rx, &on_event, &on_commit, &thread_counters))
            .expect("failed to spawn the store thread");
        Self {
            tx: Some(tx),
            handle: Some(handle),
            counters,
        }
    }

    /// Queues `cmd` for the next commit. Never blocks. LSNs must be strictly
    /// increasing.
    ///
    /// Fails with [`StoreError::Stopped`] after a commit failed.
    pub fn submit(&self, lsn: Lsn, cmd: PersistCmd) -> Result<(), StoreError> {
        self.send(Msg::Cmd(lsn, cmd, None))
    }

    /// [`submit`](StoreThread::submit) on a cluster node: `epoch` is the
    /// lease epoch under which the node serves the command's shard now, as
    /// its core issued the command (see [`Store::commit_under`]). On a node
    /// every command goes through here: one submitted without an epoch is
    /// one of a shard the node does not serve.
    pub fn submit_under(
        &self,
        lsn: Lsn,
        cmd: PersistCmd,
        epoch: Option<u64>,
    ) -> Result<(), StoreError> {
        self.send(Msg::Cmd(lsn, cmd, epoch))
    }

    /// Blocks until every command submitted so far is durable (and its
    /// [`StoreEvent::Durable`] has been reported).
    ///
    /// Fails with [`StoreError::Stopped`] if a commit failed.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (done_tx, done_rx) = mpsc::channel();
        self.send(Msg::Flush(done_tx))?;
        done_rx.recv().map_err(|_| StoreError::Stopped)
    }

    /// The counters so far.
    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            commands: c.commands.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            durable_lsn: match c.durable_lsn.load(Ordering::Relaxed) {
                0 => None,
                lsn => Some(Lsn(lsn)),
            },
        }
    }

    /// Commits everything submitted, stops the thread and returns the final
    /// counters.
    ///
    /// Fails with [`StoreError::Stopped`] if a commit failed (or the store
    /// panicked): then not everything submitted is durable.
    pub fn shutdown(mut self) -> Result<StoreStats, StoreError> {
        let flushed = self.flush();
        let joined = self.close();
        flushed?;
        joined?;
        Ok(self.stats())
    }

    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        match &self.tx {
            Some(tx) => tx.send(msg).map_err(|_| StoreError::Stopped),
            None => Err(StoreError::Stopped),
        }
    }

    /// Closes the queue and waits for the thread to commit what is queued and
    /// exit.
    fn close(&mut self) -> Result<(), StoreError> {
        self.tx = None;
        match self.handle.take() {
            Some(handle) => handle.join().map_err(|_| StoreError::Stopped),
            None => Ok(()),
        }
    }
}

impl Drop for StoreThread {
    /// Commits what is queued and joins the thread, like
    /// [`shutdown`](StoreThread::shutdown) without the result.
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Approximate bytes a command adds to a transaction.
fn cmd_size(cmd: &PersistCmd) -> usize {
    64 + match cmd {
        PersistCmd::RegisterUser { public_key, .. } => public_key.len(),
        PersistCmd::Enqueue {
            item: MailItem::Message { envelope, .. },
            ..
        } => envelope.len(),
        _ => 0,
    }
}

fn run(
    mut store: impl Store,
    rx: Receiver<Msg>,
    on_event: &dyn Fn(StoreEvent),
    on_commit: &dyn Fn(&CommitReport),
    counters: &Counters,
) {
    let mut batch: Vec<PersistCmd> = Vec::new();
    let mut epochs: Vec<Option<u64>> = Vec::new();
    let mut waiters: Vec<Sender<()>> = Vec::new();
    // Blocks for the first message of each batch; ends when every sender
    // is gone and the queue is empty.
    while let Ok(first) = rx.recv() {
        let mut highest: Option<Lsn> = None;
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Cmd(lsn, cmd, epoch) => {
                    highest = highest.max(Some(lsn));
                    bytes += cmd_size(&cmd);
                    batch.push(cmd);
                    epochs.push(epoch);
                }
                Msg::Flush(done) => waiters.push(done),
            }
            if batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(msg) => next = Some(msg),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                }
            }
        }
        if let Some(lsn) = highest {
            let started = Instant::now();
            if let Err(err) = store.commit_under(&batch, &epochs) {
                tracing::error!(error = %err, commands = batch.len(), "store commit failed");
                on_event(StoreEvent::Failed(err));
                // Close the queue before failing the waiters, so that a caller
                // woken by a failed flush finds every later call refused.
                drop(rx);
                drop(waiters);
                return;
            }
            on_commit(&CommitReport::new(batch.len(), started.elapsed()));
            let n = batch.len() as u64;
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.commands.fetch_add(n, Ordering::Relaxed);
            counters.largest_batch.fetch_max(n, Ordering::Relaxed);
            counters.durable_lsn.store(lsn.0, Ordering::Relaxed);
            tracing::trace!(commands = n, lsn = lsn.0, "committed");
            batch.clear();
            epochs.clear();
            let fenced = store.take_fenced();
            if !fenced.is_empty() {
                on_event(StoreEvent::Fenced(fenced));
            }
            on_event(StoreEvent::Durable(lsn));
        }
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn drop_commits_what_is_queued() {
        let store = MemoryStore::new();
        let thread = StoreThread::spawn(store.clone(), |_| {});
        thread.submit(Lsn(1), cmd(4)).unwrap();
        drop(thread);
        assert_eq!(store.state().server_id(), Some([4; 16]));
    }
}
