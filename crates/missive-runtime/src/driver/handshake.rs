//! The handshakes of an upgrading listener (TLS, WebSocket): each runs in a
//! task of its own, so that a slow peer holds up nobody, is cut at its
//! deadline, and at most so many run at once (beyond that, the listener
//! stops accepting until one ends). A failed handshake only closes its
//! connection; so does one that answered its connection without upgrading
//! it (an HTTP request on the WebSocket listener).

use super::runtime::{Runtime, Task, timeout};
use super::transport::Listener;
use futures_util::Stream;
use futures_util::stream::FuturesUnordered;
use prometheus_client::metrics::counter::Counter;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Time a peer gets to finish a handshake (as the protocol's own handshake
/// deadline, 10 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes a listener runs at once.
pub const MAX_HANDSHAKES: usize = 1024;

/// A finished (or failed) handshake.
type Handshake<T> = Task<Option<(T, Option<SocketAddr>)>>;

/// The handshakes running for one listener, yielding what they upgrade
/// connections into (`T`).
pub(crate) struct Handshakes<R, T> {
    running: FuturesUnordered<Handshake<T>>,
    /// Time a peer gets.
    pub(crate) limit: Duration,
    /// Most running at once.
    pub(crate) max: usize,
    /// What is upgraded, for the logs.
    what: &'static str,
    /// Counts handshakes that failed or were cut at their deadline.
    pub(crate) failures: Option<Counter>,
    runtime: PhantomData<fn() -> R>,
}

impl<R, T> std::fmt::Debug for Handshakes<R, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshakes")
            .field("what", &self.what)
            .field("running", &self.running.len())
            .field("limit", &self.limit)
            .field("max", &self.max)
            .finish()
    }
}

impl<R: Runtime, T: Send + 'static> Handshakes<R, T> {
    /// No handshake running; [`HANDSHAKE_TIMEOUT`] and [`MAX_HANDSHAKES`].
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            running: FuturesUnordered::new(),
            limit: HANDSHAKE_TIMEOUT,
            max: MAX_HANDSHAKES,
            what,
            failures: None,
            runtime: PhantomData,
        }
    }

    /// Accepts from `inner` (while fewer than the most handshakes run),
    /// starting `upgrade` on each connection; ready with the next connection
    /// whose handshake succeeded. `upgrade` yields `None` for a connection it
    /// answered and closed without upgrading it.
    pub(crate) fn poll_accept<L: Listener, F>(
        &mut self,
        inner: &mut L,
        cx: &mut Context<'_>,
        mut upgrade: impl FnMut(L::Transport) -> F,
    ) -> Poll<io::Result<(T, Option<SocketAddr>)>>
    where
        F: Future<Output = io::Result<Option<T>>> + Send + 'static,
    {
        while self.running.len() < self.max {
            match inner.poll_accept(cx) {
                Poll::Ready(Ok((transport, peer))) => self.start(upgrade(transport), peer),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(done)) = Pin::new(&mut self.running).poll_next(cx) {
            if let Some(accepted) = done {
                return Poll::Ready(Ok(accepted));
            }
        }
        Poll::Pending
    }

    fn start(
        &mut self,
        handshake: impl Future<Output = io::Result<Option<T>>> + Send + 'static,
        peer: Option<SocketAddr>,
    ) {
        let (limit, what) = (self.limit, self.what);
        let failures = self.failures.clone();
        let failed = move || {
            if let Some(failures) = &failures {
                failures.inc();
            }
        };
        self.running.push(Task::spawn::<R>(async move {
            match timeout::<R, _>(limit, handshake).await {
                Some(Ok(Some(upgraded))) => Some((upgraded, peer)),
                Some(Ok(None)) => {
                    tracing::debug!(?peer, "{what}: answered without upgrading");
                    None
                }
                Some(Err(error)) => {
                    tracing::debug!(?peer, %error, "{what} handshake failed");
                    failed();
                    None
                }
                None => {
                    tracing::debug!(?peer, "{what} handshake cut at its deadline");
                    failed();
                    None
                }
            }
        }));
    }
}
