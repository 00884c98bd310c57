//! What every server driver exposes around its serve loop, whatever the
//! runtime: the driver settings ([`ServerOptions`]), the report of a stopped
//! server ([`ServeReport`]) or why it could not start or went on
//! ([`ServeError`]), and the control channel — a cloneable
//! [`ServerHandle`] for the application and the [`ServerRequests`] stream the
//! serve loop selects over (each [`ServerRequest`] is either "stop" or a
//! closure to run on the engine).
//!
//! The channel is `futures-channel`, so it works under any executor.

use crate::driver::TaskFailed;
use crate::engine::{EngineStats, ServerEngine, UserRemoved};
use crate::metrics::Metrics;
use crate::queue::QueueLimits;
use futures_channel::{mpsc, oneshot};
use futures_util::Stream;
use missive_core::UserName;
use missive_core::server::{RemoveUserError, Server};
use missive_store::{StoreError, StoreStats};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Driver settings (the protocol settings are in
/// [`ServerConfig`](missive_core::server::ServerConfig)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Limits of each connection's outbound queue; a connection whose queue
    /// is full is dropped as a slow consumer (default 1024 buffers, 8 MiB).
    pub queue: QueueLimits,
    /// Capacity of the channel from the readers to the core task (default
    /// 1024 chunks); readers wait when it is full.
    pub inbound_capacity: usize,
    /// Most simultaneous connections; beyond it new ones are closed at once
    /// (default 10,000).
    pub max_connections: usize,
    /// Time given to writers to flush their queues at shutdown (default 5 s).
    pub drain_timeout: Duration,
    /// Where the server counts (a fresh set by default; give a clone of the
    /// one an [`AdminListener`](crate::driver::AdminListener) serves).
    pub metrics: Metrics,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            queue: QueueLimits::default(),
            inbound_capacity: 1024,
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(5),
            metrics: Metrics::new(),
        }
    }
}

/// Why a server could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address to listen on could not be resolved.
    #[error("cannot resolve the address to listen on: {0}")]
    Resolve(#[source] io::Error),
    /// The address to listen on resolved to nothing.
    #[error("no address to listen on")]
    NoAddress,
    /// Another socket listens on the address.
    #[error("{addr} is already in use")]
    AddressInUse {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Listening on the address failed otherwise (permissions, no such
    /// interface...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The listener could not say its address.
    #[error("the listener failed: {0}")]
    Listener(#[source] io::Error),
    /// The store could not be loaded (unreadable or corrupt).
    #[error("cannot load the store: {0}")]
    Store(#[source] StoreError),
    /// The OS random generator failed.
    #[error("cannot seed the server: {0}")]
    Seed(#[source] io::Error),
    /// The store failed while serving: nothing more could be made durable,
    /// so the server stopped.
    #[error("the store failed: {0}")]
    StoreFailed(#[source] StoreError),
    /// The cluster coordinator stopped: the node could no longer hold its
    /// shards, so it stopped serving.
    #[error(transparent)]
    Cluster(#[from] crate::engine::CoordinatorGone),
    /// A task of the driver (on a blocking thread) panicked or was
    /// cancelled.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

impl ServeError {
    /// Why binding `addr` failed: [`ServeError::AddressInUse`] or
    /// [`ServeError::Bind`].
    pub fn bind(addr: SocketAddr, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::AddrInUse {
            ServeError::AddressInUse { addr, source }
        } else {
            ServeError::Bind { addr, source }
        }
    }
}

/// What a server did, returned when it stops.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ServeReport {
    /// The store thread's counters (commits, commands).
    pub store: StoreStats,
    /// The engine's counters (connections, slow consumers).
    pub engine: EngineStats,
}

impl ServeReport {
    /// A report from the two sets of counters.
    pub fn new(store: StoreStats, engine: EngineStats) -> Self {
        Self { store, engine }
    }

    /// What a serve loop returns once stopped: the `failure` that stopped it
    /// (from [`ServerEngine::store_report`] or
    /// [`ServerEngine::cluster_report`]) if any, else the outcome of
    /// [`ServerEngine::shutdown`] (`stopped`) with the `engine`'s counters.
    pub fn outcome(
        failure: Option<ServeError>,
        stopped: Result<StoreStats, StoreError>,
        engine: EngineStats,
    ) -> Result<Self, ServeError> {
        if let Some(e) = failure {
            return Err(e);
        }
        let store = stopped.map_err(ServeError::StoreFailed)?;
        tracing::info!(
            commits = store.commits,
            commands = store.commands,
            "stopped"
        );
        Ok(Self::new(store, engine))
    }
}

type Inspect = Box<dyn FnOnce(&mut ServerEngine) + Send>;

/// A request from a [`ServerHandle`] to the serve loop.
pub enum ServerRequest {
    /// Stop gracefully.
    Shutdown,
    /// Run a closure on the engine (see [`ServerRequest::run`]).
    Inspect(InspectRequest),
}

/// A closure to run on the engine inside the serve loop.
pub struct InspectRequest(Inspect);

impl InspectRequest {
    /// Runs the closure on `engine` (its answer goes back to the handle).
    pub fn run(self, engine: &mut ServerEngine) {
        (self.0)(engine)
    }
}

impl ServerRequest {
    /// Handles the request on `engine`: runs an inspection and returns
    /// `false`, or returns `true` for a shutdown.
    pub fn run(self, engine: &mut ServerEngine) -> bool {
        match self {
            ServerRequest::Shutdown => true,
            ServerRequest::Inspect(f) => {
                f.run(engine);
                false
            }
        }
    }
}

impl fmt::Debug for ServerRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerRequest::Shutdown => f.write_str("Shutdown"),
            ServerRequest::Inspect(_) => f.write_str("Inspect"),
        }
    }
}

/// A cheap, cloneable handle to a running server: stop it, or look at its
/// state.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    tx: mpsc::UnboundedSender<ServerRequest>,
}

/// The serve loop's end of the control channel: a `Stream` of
/// [`ServerRequest`]s that ends once every [`ServerHandle`] is gone.
#[derive(Debug)]
pub struct ServerRequests {
    rx: mpsc::UnboundedReceiver<ServerRequest>,
}

/// A control channel: the handle to give out and the stream to serve.
pub fn control() -> (ServerHandle, ServerRequests) {
    let (tx, rx) = mpsc::unbounded();
    (ServerHandle { tx }, ServerRequests { rx })
}

impl ServerRequests {
    /// The next request (`None` once every handle is gone).
    pub async fn recv(&mut self) -> Option<ServerRequest> {
        std::future::poll_fn(|cx| Pin::new(&mut self.rx).poll_next(cx)).await
    }
}

impl Stream for ServerRequests {
    type Item = ServerRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServerRequest>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl ServerHandle {
    /// Asks the server to shut down gracefully.
    pub fn shutdown(&self) {
        let _ = self.tx.unbounded_send(ServerRequest::Shutdown);
    }

    /// Runs `f` on the core server inside the server's task and returns its
    /// result (`None` if the server has stopped). For metrics and tests.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Server) -> R + Send + 'static,
    ) -> Option<R> {
        self.on_engine(move |engine| f(engine.server())).await
    }

    /// The engine's counters (`None` if the server has stopped).
    pub async fn stats(&self) -> Option<EngineStats> {
        self.on_engine(|engine| engine.stats()).await
    }

    /// An operator removes `user` (its sessions close, its mailbox goes;
    /// see [`Input::RemoveUser`](missive_core::server::Input::RemoveUser)):
    /// the answer comes once the removal is durable. `None` if the server
    /// stopped first.
    pub async fn remove_user(
        &self,
        user: UserName,
    ) -> Option<Result<UserRemoved, RemoveUserError>> {
        let (tx, rx) = oneshot::channel();
        self.on_engine(move |engine| engine.remove_user(user, tx))
            .await?;
        rx.await.ok()
    }

    /// Runs `f` on the engine inside the server's task.
    async fn on_engine<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ServerEngine) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let request: Inspect = Box::new(move |engine: &mut ServerEngine| {
            let _ = tx.send(f(engine));
        });
        self.tx
            .unbounded_send(ServerRequest::Inspect(InspectRequest(request)))
            .ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use missive_core::server::ServerConfig;
    use missive_store::MemoryStore;
    use std::future::Future;
    use std::task::Waker;

    /// Polls `f` until it is ready (everything here is in-process channels).
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
        }
        panic!("future never completed");
    }

    #[test]
    fn requests_reach_the_engine_and_end_with_the_handles() {
        let (mut engine, _events) = ServerEngine::start(
            ServerConfig::default(),
            Box::new(MemoryStore::new()),
            QueueLimits::default(),
        )
        .unwrap();
        let (handle, mut requests) = control();
        let clone = handle.clone();
        let serve = async {
            while let Some(request) = requests.next().await {
                if request.run(&mut engine) {
                    break;
                }
            }
        };
        let ask = async {
            let users = clone.inspect(|s| s.state().user_count()).await;
            let stats = clone.stats().await.unwrap();
            clone.shutdown();
            (users, stats)
        };
        let ((users, stats), ()) = block_on(futures_util::future::join(ask, serve));
        assert_eq!(users, Some(0));
        assert_eq!(stats.accepted, 0);
        drop(handle);
        drop(clone);
        assert!(block_on(requests.recv()).is_none());
    }
}
