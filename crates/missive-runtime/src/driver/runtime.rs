//! What the driver needs from an async runtime, and nothing more: spawning
//! tasks (and blocking work), a resettable timer, and TCP. An adapter crate
//! implements [`Runtime`] for its runtime (a zero-sized type); the generic
//! server and client drivers do the rest.

use super::transport::{ByteStream, Listener};
use futures_util::FutureExt;
use futures_util::future::{Either, RemoteHandle, select};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// An async runtime, as the driver uses it. Implemented by a zero-sized type
/// in each adapter crate (`missive-tokio`, `missive-async-std`).
pub trait Runtime: Send + Sync + 'static {
    /// A timer that fires at an instant and can be set again (re-registering
    /// a fresh timer on every wake-up would cost a lock each time).
    type Timer: Future + Send + Unpin + 'static;
    /// A TCP listener (accepting connections with `TCP_NODELAY` set).
    type TcpListener: Listener<Transport = Self::TcpStream>;
    /// A TCP connection.
    type TcpStream: ByteStream;

    /// Runs `future` on the runtime, detached.
    fn spawn(future: impl Future<Output = ()> + Send + 'static);

    /// Runs blocking `work` on a thread where blocking is allowed.
    fn spawn_blocking<T: Send + 'static>(
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, TaskFailed>> + Send;

    /// A timer firing at `at`.
    fn timer(at: Instant) -> Self::Timer;

    /// Sets `timer` to fire at `at` instead.
    fn reset_timer(timer: &mut Self::Timer, at: Instant);

    /// Binds a TCP listener to `addr`.
    fn listen_tcp(addr: SocketAddr) -> impl Future<Output = io::Result<Self::TcpListener>> + Send;

    /// Connects to `addr` (`host:port`, resolved by the runtime) with
    /// `TCP_NODELAY`.
    fn connect_tcp(
        addr: String,
    ) -> impl Future<Output = io::Result<Self::TcpStream>> + Send + 'static;

    /// The monotonic clock now.
    fn now() -> Instant {
        Instant::now()
    }
}

/// A task ended without a result (it panicked, or the runtime cancelled it).
#[derive(Debug, thiserror::Error)]
#[error("a task failed: {0}")]
pub struct TaskFailed(pub String);

/// A spawned task to await or cancel: dropping it cancels the task (see
/// [`detach`](Task::detach)).
#[derive(Debug)]
pub struct Task<T>(RemoteHandle<T>);

impl<T: Send + 'static> Task<T> {
    /// Spawns `future` on `R`.
    pub fn spawn<R: Runtime>(future: impl Future<Output = T> + Send + 'static) -> Self {
        let (remote, handle) = future.remote_handle();
        R::spawn(remote);
        Self(handle)
    }

    /// Lets the task run to its end without anyone waiting for it.
    pub fn detach(self) {
        self.0.forget();
    }
}

impl<T: 'static> Future for Task<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Waits for `duration`.
pub async fn sleep<R: Runtime>(duration: Duration) {
    R::timer(R::now() + duration).await;
}

/// Runs `future` for at most `limit`: `None` if the time ran out first.
pub async fn timeout<R: Runtime, F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    match select(pin!(future), R::timer(R::now() + limit)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// A deadline that comes and goes (a state machine's next timeout): one
/// timer of the runtime, set again only when the deadline changes.
pub(crate) struct Alarm<R: Runtime> {
    timer: Option<R::Timer>,
    armed: Option<Instant>,
}

impl<R: Runtime> Alarm<R> {
    /// An alarm set to nothing.
    pub(crate) fn new() -> Self {
        Self {
            timer: None,
            armed: None,
        }
    }

    /// Sets the alarm to `deadline` (`None`: never).
    pub(crate) fn set(&mut self, deadline: Option<Instant>) {
        if self.armed == deadline {
            return;
        }
        self.armed = deadline;
        if let Some(at) = deadline {
            match &mut self.timer {
                Some(timer) => R::reset_timer(timer, at),
                None => self.timer = Some(R::timer(at)),
            }
        }
    }

    /// Ready once when the deadline comes (then the alarm is unset).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(_), Some(timer)) = (self.armed, self.timer.as_mut()) else {
            return Poll::Pending;
        };
        match Pin::new(timer).poll(cx) {
            Poll::Ready(_) => {
                self.armed = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
