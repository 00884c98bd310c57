//! Bounded per-connection outbound queues between the task that owns the
//! server core and a connection's writer (and reader).
//!
//! The engine pushes whole `Transmit` buffers with [`OutboundSender::try_send`];
//! a full queue means the peer does not read fast enough (a *slow consumer*),
//! and the engine drops the connection instead of buffering without bound.
//! The writer takes everything queued at once (with the queue's buffer:
//! an idle connection's queue holds none) with
//! [`OutboundReceiver::next_batch`] and writes it in one vectored write.
//! The reader watches a [`StopSignal`] to learn that the connection is
//! finished on the engine's side.
//!
//! Nothing here depends on an async runtime: wake-ups go through
//! [`std::task::Waker`]s.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Limits of one connection's outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueLimits {
    /// Most `Transmit` buffers waiting (default 1024).
    pub max_frames: usize,
    /// Most bytes waiting (default 8 MiB). A buffer is always accepted into
    /// an empty queue, whatever its size, so one large burst (for example a
    /// full delivery window) never counts as slow consumption by itself.
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_frames: 1024,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

impl QueueLimits {
    /// Limits of `max_frames` buffers and `max_bytes` bytes.
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
        }
    }
}

/// Why [`OutboundSender::try_send`] refused a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The queue is at its limit: the peer does not read fast enough.
    #[error("outbound queue full")]
    Full,
    /// The connection is closing or gone.
    #[error("connection closed")]
    Closed,
}

/// What the writer should do next (see [`OutboundReceiver::next_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterStep {
    /// Write the buffers placed in the batch, then ask again.
    Write,
    /// Everything queued was written: shut the write side down gracefully.
    Finish,
    /// Stop now without writing anything more (the connection was dropped).
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Frames flow.
    Open,
    /// The engine closed the connection: write what is queued, then finish.
    Closing,
    /// The engine dropped the connection: stop at once.
    Aborted,
    /// The writer is gone (write error or finished).
    WriterGone,
}

/// An idle connection's queue holds no heap buffer: the writer takes the
/// frames' buffer with the frames (see [`OutboundReceiver::next_batch`]),
/// and the two stop wakers live inline.
struct Inner {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    phase: Phase,
    /// The writer waiting for frames.
    writer: Option<Waker>,
    /// The [`StopSignal`]'s waiter (the reader): the last one to poll.
    stopped: Option<Waker>,
    /// The [`OutboundReceiver::aborted`] waiter: the last one to poll.
    aborted: Option<Waker>,
}

struct Shared {
    limits: QueueLimits,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves consistent data behind
        // (every update is a few field writes), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves to `phase` (unless already finished) and wakes everyone.
    fn set_phase(&self, phase: Phase) {
        let wakers = {
            let mut inner = self.lock();
            if inner.phase == phase || inner.phase == Phase::WriterGone {
                return;
            }
            if inner.phase == Phase::Aborted && phase == Phase::Closing {
                return;
            }
            inner.phase = phase;
            if phase != Phase::Closing {
                inner.frames.clear();
                inner.bytes = 0;
            }
            [
                inner.writer.take(),
                inner.stopped.take(),
                inner.aborted.take(),
            ]
        };
        wakers.into_iter().flatten().for_each(Waker::wake);
    }
}

/// Creates the queue of one connection: the engine keeps the sender, the
/// writer takes the receiver, the reader a [`StopSignal`].
pub fn outbound(limits: QueueLimits) -> (OutboundSender, OutboundReceiver, StopSignal) {
    let shared = Arc::new(Shared {
        limits: QueueLimits::new(limits.max_frames, limits.max_bytes),
        inner: Mutex::new(Inner {
            frames: VecDeque::new(),
            bytes: 0,
            phase: Phase::Open,
            writer: None,
            stopped: None,
            aborted: None,
        }),
    });
    (
        OutboundSender {
            shared: Arc::clone(&shared),
        },
        OutboundReceiver {
            shared: Arc::clone(&shared),
        },
        StopSignal { shared },
    )
}

/// The engine's end of a connection's outbound queue.
///
/// Dropping it closes the connection gracefully (like
/// [`close`](OutboundSender::close)).
pub struct OutboundSender {
    shared: Arc<Shared>,
}

impl fmt::Debug for OutboundSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("OutboundSender")
            .field("frames", &inner.frames.len())
            .field("bytes", &inner.bytes)
            .field("phase", &inner.phase)
            .finish()
    }
}

impl OutboundSender {
    /// Queues `bytes` for the writer without waiting.
    pub fn try_send(&self, bytes: Vec<u8>) -> Result<(), TrySendError> {
        let limits = self.shared.limits;
        let waker = {
            let mut inner = self.shared.lock();
            if inner.phase != Phase::Open {
                return Err(TrySendError::Closed);
            }
            let empty = inner.frames.is_empty();
            if !empty
                && (inner.frames.len() >= limits.max_frames
                    || inner.bytes.saturating_add(bytes.len()) > limits.max_bytes)
            {
                return Err(TrySendError::Full);
            }
            inner.bytes += bytes.len();
            inner.frames.push_back(bytes);
            inner.writer.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Closes gracefully: the writer writes what is queued, then shuts the
    /// write side down; the reader stops.
    pub fn close(&self) {
        self.shared.set_phase(Phase::Closing);
    }

    /// Drops the connection now: queued bytes are discarded, writer and
    /// reader stop.
    pub fn abort(&self) {
        self.shared.set_phase(Phase::Aborted);
    }

    /// Buffers and bytes waiting.
    pub fn queued(&self) -> (usize, usize) {
        let inner = self.shared.lock();
        (inner.frames.len(), inner.bytes)
    }
}

impl Drop for OutboundSender {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer's end of a connection's outbound queue.
///
/// Dropping it tells the engine the writer is gone (further sends fail) and
/// stops the reader.
pub struct OutboundReceiver {
    shared: Arc<Shared>,
}

impl fmt::Debug for OutboundReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundReceiver").finish_non_exhaustive()
    }
}

impl OutboundReceiver {
    /// Waits for work: moves every queued buffer into `batch` (which should
    /// be empty: then it takes the queue's own buffer, so that the queue of
    /// an idle connection holds none) and returns [`WriterStep::Write`], or
    /// says to finish or abort.
    pub async fn next_batch(&mut self, batch: &mut Vec<Vec<u8>>) -> WriterStep {
        poll_fn(|cx| self.poll_next_batch(cx, batch)).await
    }

    /// Poll form of [`next_batch`](OutboundReceiver::next_batch).
    pub fn poll_next_batch(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut Vec<Vec<u8>>,
    ) -> Poll<WriterStep> {
        let mut inner = self.shared.lock();
        match inner.phase {
            Phase::Aborted | Phase::WriterGone => return Poll::Ready(WriterStep::Abort),
            Phase::Open | Phase::Closing => {}
        }
        if !inner.frames.is_empty() {
            if batch.is_empty() {
                // Hand the queue's buffer over with its frames (no copy when
                // contiguous): an idle queue keeps no capacity.
                *batch = Vec::from(std::mem::take(&mut inner.frames));
            } else {
                batch.extend(inner.frames.drain(..));
            }
            inner.bytes = 0;
            return Poll::Ready(WriterStep::Write);
        }
        if inner.phase == Phase::Closing {
            return Poll::Ready(WriterStep::Finish);
        }
        inner.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Resolves when the engine dropped the connection: an in-progress write
    /// should be abandoned (the peer is not reading). One waiter at a time.
    pub async fn aborted(&self) {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if matches!(inner.phase, Phase::Aborted | Phase::WriterGone) {
                Poll::Ready(())
            } else {
                register(&mut inner.aborted, cx.waker());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.shared.set_phase(Phase::WriterGone);
    }
}

/// Tells a connection's reader when to stop reading: the engine closed
/// or dropped the connection, or the writer failed.
pub struct StopSignal {
    shared: Arc<Shared>,
}

impl fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSignal")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl StopSignal {
    /// Whether the reader should stop now.
    pub fn is_stopped(&self) -> bool {
        self.shared.lock().phase != Phase::Open
    }

    /// Whether the engine closed the connection gracefully (its last bytes
    /// are being written): the reader may keep draining the socket until the
    /// peer closes, so that the peer gets those bytes rather than a reset.
    pub fn is_closing(&self) -> bool {
        self.shared.lock().phase == Phase::Closing
    }

    /// Resolves once the reader should stop. One waiter at a time.
    pub async fn stopped(&self) {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if inner.phase != Phase::Open {
                Poll::Ready(())
            } else {
                register(&mut inner.stopped, cx.waker());
                Poll::Pending
            }
        })
        .await
    }
}

/// Keeps `waker` in `slot` unless it would wake the same task as the one
/// there (futures are re-created and re-polled in `select!` loops): one
/// waiter per signal, the last to poll.
fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(kept) if kept.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::Waker;

    fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        pin!(f).poll(&mut cx)
    }

    /// Idle connections are most connections: once its frames are taken,
    /// a queue keeps no buffer, and its waiters need no allocation.
    #[test]
    fn drained_queue_keeps_no_buffer() {
        let (tx, mut rx, stop) = outbound(QueueLimits::default());
        for i in 0..5 {
            tx.try_send(vec![i; 8]).unwrap();
        }
        let mut batch = Vec::new();
        assert_eq!(
            poll_once(rx.next_batch(&mut batch)),
            Poll::Ready(WriterStep::Write)
        );
        assert_eq!(batch.len(), 5);
        assert!(batch.capacity() >= 5, "the batch took the queue's buffer");
        assert_eq!(rx.shared.lock().frames.capacity(), 0);
        // Waiting: the writer for frames, the reader for the stop signal,
        // the writer for an abort.
        batch = Vec::new();
        assert_eq!(poll_once(rx.next_batch(&mut batch)), Poll::Pending);
        assert_eq!(poll_once(stop.stopped()), Poll::Pending);
        assert_eq!(poll_once(rx.aborted()), Poll::Pending);
        let inner = rx.shared.lock();
        assert_eq!(inner.frames.capacity(), 0);
        assert!(inner.writer.is_some() && inner.stopped.is_some() && inner.aborted.is_some());
    }

    #[test]
    fn batches_and_limits() {
        let (tx, mut rx, stop) = outbound(QueueLimits::new(2, 10));
        // An oversized buffer is accepted into an empty queue.
        tx.try_send(vec![0; 100]).unwrap();
        assert_eq!(tx.try_send(vec![1]), Err(TrySendError::Full));
        let mut batch = Vec::new();
        assert_eq!(
            poll_once(rx.next_batch(&mut batch)),
            Poll::Ready(WriterStep::Write)
        );
        assert_eq!(batch.len(), 1);
        batch.clear();
        tx.try_send(vec![1; 4]).unwrap();
        tx.try_send(vec![2; 4]).unwrap();
        assert_eq!(tx.try_send(vec![3]), Err(TrySendError::Full), "frame limit");
        assert_eq!(
            poll_once(rx.next_batch(&mut batch)),
            Poll::Ready(WriterStep::Write)
        );
        assert_eq!(batch, vec![vec![1; 4], vec![2; 4]]);
        batch.clear();
        assert_eq!(poll_once(rx.next_batch(&mut batch)), Poll::Pending);
        assert!(!stop.is_stopped());
        tx.try_send(vec![9]).unwrap();
        tx.close();
        assert!(stop.is_stopped());
        assert_eq!(tx.try_send(vec![1]), Err(TrySendError::Closed));
        assert_eq!(
            poll_once(rx.next_batch(&mut batch)),
            Poll::Ready(WriterStep::Write)
        );
        assert_eq!(batch, vec![vec![9]]);
        batch.clear();
        assert_eq!(
            poll_once(rx.next_batch(&mut batch)),
            Poll::Ready(WriterStep::Finish)
        );
    }

    #[test]
    fn abort_discards() {
        let (tx, mut rx, stop) = outbound(QueueLimits::default());
        tx.try_send(vec![1]).unwrap();
        assert_eq!(poll_once(rx.aborted()), Poll::Pending);
        tx.abort();
        tx.close(); // does not undo the abort
        assert!(stop.is_stopped());
        assert_eq!(poll_once(rx.aborted()), Poll::Ready(()));
        let mut batch = Vec::new();
        assert_eq!(
            poll_once(rx.next_batch(&mut batch)),
            Poll::Ready(WriterStep::Abort)
        );
        assert!(batch.is_empty());
    }

    #[test]
    fn writer_gone() {
        let (tx, rx, stop) = outbound(QueueLimits::default());
        drop(rx);
        assert!(stop.is_stopped());
        assert_eq!(tx.try_send(vec![1]), Err(TrySendError::Closed));
        assert_eq!(poll_once(stop.stopped()), Poll::Ready(()));
    }
}
