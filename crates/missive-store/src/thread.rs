//! Group commit: a store on its own OS thread.

use crate::{Store, StoreError};
use missive_core::Lsn;
use missive_core::cluster::Shard;
use missive_core::server::{MailItem, PersistCmd};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most commands in one commit.
const MAX_BATCH_COMMANDS: usize = 4096;

/// Roughly the most bytes (envelopes, keys) in one commit. A batch is closed
/// once it reaches this size, so it may exceed it by one command.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// First pause before a failed commit is tried again (see
/// [`StoreEvent::Unavailable`]); each further failure doubles it.
pub const RETRY_FIRST: Duration = Duration::from_millis(50);

/// Longest pause between two tries of a failed commit: once the store is
/// back (space freed on a full disk, the database server reachable again),
/// service resumes within this long.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

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
    /// A commit failed with an error that may pass
    /// ([`StoreError::is_transient`]: a full disk, an I/O error, a lost
    /// database connection). Nothing is lost: the failed batch, and
    /// everything submitted after it, stays queued in LSN order and is tried
    /// again after [`RETRY_FIRST`], doubling up to [`RETRY_MAX`], until a
    /// commit succeeds; then [`Available`](StoreEvent::Available) comes,
    /// followed by the usual [`Durable`](StoreEvent::Durable). Reported once
    /// per outage (the later failures are only logged). A driver keeps
    /// serving what needs no new durable state and refuses the rest.
    Unavailable(StoreError),
    /// A commit succeeded after [`Unavailable`](StoreEvent::Unavailable):
    /// the store is healthy again.
    Available,
    /// A commit failed for good (an error that retrying cannot cure: a
    /// command or value this store cannot write, a format or cluster
    /// mismatch, corruption). The commands of the failed batch and
    /// everything submitted after it are not durable and never will be; the
    /// thread has stopped and further calls return [`StoreError::Stopped`].
    /// A driver should shut the server down.
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
    handle: Option<JoinHandle<Result<(), StoreError>>>,
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
    /// Fails with [`StoreError::Stopped`] after a commit failed for good
    /// ([`StoreEvent::Failed`]); while the store is
    /// [unavailable](StoreEvent::Unavailable) commands are still queued.
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
    /// [`StoreEvent::Durable`] has been reported): while the store is
    /// [unavailable](StoreEvent::Unavailable), until it is back.
    ///
    /// Fails with [`StoreError::Stopped`] if a commit failed for good.
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
    /// Fails with [`StoreError::Stopped`] if a commit failed for good (or the
    /// store panicked); while the store is
    /// [unavailable](StoreEvent::Unavailable), after one last try, with the
    /// store's error. Either way not everything submitted is durable.
    pub fn shutdown(mut self) -> Result<StoreStats, StoreError> {
        self.close()?;
        Ok(self.stats())
    }

    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        match &self.tx {
            Some(tx) => tx.send(msg).map_err(|_| StoreError::Stopped),
            None => Err(StoreError::Stopped),
        }
    }

    /// Closes the queue and waits for the thread to commit what is queued and
    /// exit (a store that is unavailable gets one last try).
    fn close(&mut self) -> Result<(), StoreError> {
        self.tx = None;
        match self.handle.take() {
            Some(handle) => handle.join().map_err(|_| StoreError::Stopped)?,
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
) -> Result<(), StoreError> {
    let mut inbox = Inbox {
        rx,
        backlog: VecDeque::new(),
        open: true,
    };
    let mut pending = Pending::default();
    let mut outage: Option<Outage> = None;
    loop {
        // Blocks for the first message of each batch; ends when every
        // sender is gone and the queue is empty.
        if pending.is_empty() {
            match inbox.wait() {
                Some(msg) => pending.add(msg),
                None => return Ok(()),
            }
        }
        while !pending.is_full() {
            match inbox.ready() {
                Some(msg) => pending.add(msg),
                None => break,
            }
        }
        let Some(lsn) = pending.highest else {
            pending.answer_waiters();
            continue;
        };
        let started = Instant::now();
        match store.commit_under(&pending.batch, &pending.epochs) {
            Ok(()) => {
                on_commit(&CommitReport::new(pending.batch.len(), started.elapsed()));
                if let Some(outage) = outage.take() {
                    tracing::warn!(
                        failed_tries = outage.failures,
                        outage_ms = outage.since.elapsed().as_millis() as u64,
                        "store available again"
                    );
                    on_event(StoreEvent::Available);
                }
                let n = pending.batch.len() as u64;
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.commands.fetch_add(n, Ordering::Relaxed);
                counters.largest_batch.fetch_max(n, Ordering::Relaxed);
                counters.durable_lsn.store(lsn.0, Ordering::Relaxed);
                tracing::trace!(commands = n, lsn = lsn.0, "committed");
                let fenced = store.take_fenced();
                if !fenced.is_empty() {
                    on_event(StoreEvent::Fenced(fenced));
                }
                on_event(StoreEvent::Durable(lsn));
                pending.committed();
            }
            Err(err) if err.is_transient() && inbox.open => {
                let pause = match &mut outage {
                    None => {
                        tracing::warn!(
                            error = %err,
                            commands = pending.batch.len(),
                            "store commit failed, retrying; nothing new is accepted meanwhile"
                        );
                        on_event(StoreEvent::Unavailable(err));
                        outage.insert(Outage::new()).pause
                    }
                    Some(outage) => {
                        tracing::debug!(error = %err, "store commit failed again");
                        outage.failed_again()
                    }
                };
                inbox.pause(Instant::now() + pause);
            }
            Err(err) if err.is_transient() => {
                // Closed while unavailable: that was the last try.
                tracing::error!(
                    error = %err,
                    commands = pending.batch.len(),
                    "store still unavailable at shutdown: the last commands are not durable"
                );
                return Err(err);
            }
            Err(err) => {
                tracing::error!(error = %err, commands = pending.batch.len(), "store commit failed");
                on_event(StoreEvent::Failed(err));
                // Close the queue before failing the waiters, so that a caller
                // woken by a failed flush finds every later call refused.
                drop(inbox);
                drop(pending);
                return Err(StoreError::Stopped);
            }
        }
    }
}

/// The thread's side of the queue, with what it took off the channel while
/// it waited to retry a failed commit.
struct Inbox {
    rx: Receiver<Msg>,
    backlog: VecDeque<Msg>,
    /// Whether a [`StoreThread`] still holds the sending side.
    open: bool,
}

impl Inbox {
    /// The next message, waiting for one; `None` once closed and empty.
    fn wait(&mut self) -> Option<Msg> {
        if let Some(msg) = self.backlog.pop_front() {
            return Some(msg);
        }
        let msg = self.rx.recv().ok();
        self.open &= msg.is_some();
        msg
    }

    /// The next message if one is waiting.
    fn ready(&mut self) -> Option<Msg> {
        if let Some(msg) = self.backlog.pop_front() {
            return Some(msg);
        }
        match self.rx.try_recv() {
            Ok(msg) => Some(msg),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.open = false;
                None
            }
        }
    }

    /// Waits until `until`, or until the queue closes (a shutdown cuts a
    /// retry pause short), keeping what arrives meanwhile.
    fn pause(&mut self, until: Instant) {
        while self.open {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(msg) => self.backlog.push_back(msg),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => self.open = false,
            }
        }
    }
}

/// Messages taken for the next commit: commands in LSN order (kept, with
/// what follows them, until a commit of them succeeds) and the flushes
/// waiting for them.
#[derive(Default)]
struct Pending {
    batch: Vec<PersistCmd>,
    /// The lease epoch of each command (see [`Store::commit_under`]).
    epochs: Vec<Option<u64>>,
    highest: Option<Lsn>,
    bytes: usize,
    waiters: Vec<Sender<()>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.waiters.is_empty()
    }

    fn is_full(&self) -> bool {
        self.batch.len() >= MAX_BATCH_COMMANDS || self.bytes >= MAX_BATCH_BYTES
    }

    fn add(&mut self, msg: Msg) {
        match msg {
            Msg::Cmd(lsn, cmd, epoch) => {
                self.highest = self.highest.max(Some(lsn));
                self.bytes += cmd_size(&cmd);
                self.batch.push(cmd);
                self.epochs.push(epoch);
            }
            Msg::Flush(done) => self.waiters.push(done),
        }
    }

    /// The batch is durable: forget it and answer the flushes.
    fn committed(&mut self) {
        self.batch.clear();
        self.epochs.clear();
        self.highest = None;
        self.bytes = 0;
        self.answer_waiters();
    }

    fn answer_waiters(&mut self) {
        for done in self.waiters.drain(..) {
            let _ = done.send(());
        }
    }
}

/// A run of failed commits.
struct Outage {
    since: Instant,
    failures: u32,
    /// The pause before the next try.
    pause: Duration,
}

impl Outage {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            failures: 1,
            pause: RETRY_FIRST,
        }
    }

    /// Another failure: the next pause, twice the last up to [`RETRY_MAX`].
    fn failed_again(&mut self) -> Duration {
        self.failures += 1;
        self.pause = (self.pause * 2).min(RETRY_MAX);
        self.pause
    }
}

#[cfg(test)]
mod tests;
