//! The server, on any [`Runtime`] and any [`Listener`].
//!
//! One task owns the [`ServerEngine`] (and so the core server). It waits
//! for: the shutdown signal, requests from [`ServerHandle`]s, durability
//! reports of the store thread, [`ConnEvent`]s from the connections'
//! readers, new connections, the core's next timer and, on a cluster node,
//! the reports of the cluster coordinator — taking turns, so
//! that no source starves the others under load. Every connection is one
//! task running two loops side by side: its reader (reading into its
//! thread's buffer: an idle connection holds none) forwarding
//! chunks through one bounded channel to the owner task, and its writer
//! draining the connection's bounded outbound queue with vectored writes.
//! One task rather than two halves what a connection costs in task cells
//! and handles.

use super::runtime::{Alarm, Runtime, Task, sleep, timeout};
use super::tls::TlsListener;
use super::transport::{Both, Listener, ReadHalf, Transport, WriteHalf};
use crate::cluster::{ClusterEvent, ClusterEvents, ClusterLink};
use crate::engine::{ConnEvent, EngineError, ServerEngine, StoreEvents};
use crate::queue::{OutboundReceiver, StopSignal, WriterStep};
use crate::serve::{
    ServeError, ServeReport, ServerHandle, ServerOptions, ServerRequest, ServerRequests, control,
};
use futures_channel::mpsc;
use futures_util::future::{Either, join, select};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, Stream};
use missive_core::ConnId;
use missive_core::server::ServerConfig;
use missive_store::{Store, StoreEvent};
use std::future::{Future, poll_fn};
use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// How long a closed connection's reader drains input before giving up.
const LINGER: Duration = Duration::from_secs(2);
/// How long a writer waits for the end of its output to be acknowledged.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Sources the owner task waits on besides the shutdown signal.
const SOURCES: usize = 6;

/// A server bound to its address with its store loaded, not yet serving.
pub struct BoundServer<R: Runtime, L: Listener = <R as Runtime>::TcpListener> {
    listener: L,
    local_addr: SocketAddr,
    engine: ServerEngine,
    store_events: StoreEvents,
    cluster_events: Option<ClusterEvents>,
    options: ServerOptions,
    handle: ServerHandle,
    requests: ServerRequests,
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime, L: Listener> std::fmt::Debug for BoundServer<R, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("local_addr", &self.local_addr)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// What woke the owner task.
enum Wake<T> {
    Shutdown,
    Request(Option<ServerRequest>),
    Store(Option<StoreEvent>),
    Inbound(ConnEvent),
    Accepted(io::Result<(T, Option<SocketAddr>)>),
    Timer,
    Cluster(Option<ClusterEvent>),
}

impl<R: Runtime> BoundServer<R> {
    /// Binds `addr` over TCP, loads `store` and starts its thread, with the
    /// default [`ServerOptions`].
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        store: Box<dyn Store>,
    ) -> Result<Self, ServeError> {
        Self::bind_with(addr, config, store, ServerOptions::default()).await
    }

    /// Binds `addr` over TCP (the first of its addresses that can be
    /// bound), loads `store` and starts its thread.
    pub async fn bind_with(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        store: Box<dyn Store>,
        options: ServerOptions,
    ) -> Result<Self, ServeError> {
        let listener = listen_tcp::<R>(addr).await?;
        Self::with_listener(listener, config, store, options).await
    }
}

impl<R: Runtime> BoundServer<R, TlsListener<R, R::TcpListener>> {
    /// Binds `addr` over TCP (the first of its addresses that can be
    /// bound) and serves TLS with `tls` on it; loads `store` and starts its
    /// thread.
    pub async fn bind_tls(
        addr: impl ToSocketAddrs,
        tls: Arc<rustls::ServerConfig>,
        config: ServerConfig,
        store: Box<dyn Store>,
        options: ServerOptions,
    ) -> Result<Self, ServeError> {
        let listener =
            TlsListener::new(listen_tcp::<R>(addr).await?, tls).counting_failures(&options.metrics);
        Self::with_listener(listener, config, store, options).await
    }
}

/// A TCP listener on the first of the addresses of `addr` that can be bound.
pub async fn listen_tcp<R: Runtime>(
    addr: impl ToSocketAddrs,
) -> Result<R::TcpListener, ServeError> {
    let mut last = ServeError::NoAddress;
    for addr in addr.to_socket_addrs().map_err(ServeError::Resolve)? {
        match R::listen_tcp(addr).await {
            Ok(listener) => return Ok(listener),
            Err(source) => last = ServeError::bind(addr, source),
        }
    }
    Err(last)
}

impl<R: Runtime, L: Listener> BoundServer<R, L> {
    /// Serves the connections of `listener` (any transport): loads `store`
    /// and starts its thread.
    pub async fn with_listener(
        listener: L,
        config: ServerConfig,
        store: Box<dyn Store>,
        options: ServerOptions,
    ) -> Result<Self, ServeError> {
        let local_addr = listener.local_addr().map_err(ServeError::Listener)?;
        let (queue, metrics) = (options.queue, options.metrics.clone());
        let (engine, store_events) =
            R::spawn_blocking(move || ServerEngine::start_with(config, store, queue, metrics))
                .await?
                .map_err(|e| match e {
                    EngineError::Store(e) => ServeError::Store(e),
                    EngineError::Seed(e) => ServeError::Seed(e),
                })?;
        let (handle, requests) = control();
        Ok(Self {
            listener,
            local_addr,
            engine,
            store_events,
            cluster_events: None,
            options,
            handle,
            requests,
            runtime: PhantomData,
        })
    }

    /// The address the server listens on (its first listener's).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listener (or listeners) it serves.
    pub fn listener(&self) -> &L {
        &self.listener
    }

    /// Serves the connections of `other` as well (say WebSocket beside TCP
    /// or TLS): one engine for both, so connection ids stay unique and every
    /// user reaches every other whatever their transport.
    pub fn and_listener<M: Listener>(self, other: M) -> BoundServer<R, Both<L, M>> {
        BoundServer {
            listener: Both::new(self.listener, other),
            local_addr: self.local_addr,
            engine: self.engine,
            store_events: self.store_events,
            cluster_events: self.cluster_events,
            options: self.options,
            handle: self.handle,
            requests: self.requests,
            runtime: PhantomData,
        }
    }

    /// Serves as a cluster node: the core's forwards and replies go to the
    /// coordinator at the other end of `link`, and its reports are fed to
    /// the core (see [`crate::cluster`]). The server's config must say
    /// `cluster`. If the coordinator stops, the server stops with
    /// [`ServeError::Cluster`].
    pub fn with_cluster(mut self, link: ClusterLink) -> Self {
        let (events, commands) = link.split();
        self.engine.attach_cluster(commands);
        self.cluster_events = Some(events);
        self
    }

    /// A handle to stop or inspect the server once it serves.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves until [`ServerHandle::shutdown`] is called.
    pub async fn serve(self) -> Result<ServeReport, ServeError> {
        self.serve_until(std::future::pending()).await
    }

    /// Serves until `shutdown` resolves (or [`ServerHandle::shutdown`] is
    /// called), then shuts down gracefully: stops accepting, tells every
    /// client, makes everything durable, lets the writers flush.
    ///
    /// Fails if the store fails (nothing more could be made durable).
    pub async fn serve_until(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ServeReport, ServeError> {
        let Self {
            mut listener,
            local_addr,
            mut engine,
            mut store_events,
            mut cluster_events,
            options,
            handle,
            mut requests,
            runtime: _,
        } = self;
        drop(handle);
        let (inbound_tx, mut inbound) = mpsc::channel::<ConnEvent>(options.inbound_capacity.max(1));
        let mut tasks: FuturesUnordered<Task<()>> = FuturesUnordered::new();
        let mut failure = None;
        let mut shutdown = pin!(shutdown);
        let mut handles_alive = true;
        let mut alarm = Alarm::<R>::new();
        let mut turn = 0;
        tracing::info!(%local_addr, "serving");
        let metrics = engine.metrics().clone();
        metrics.set_serving(true);

        loop {
            alarm.set(engine.poll_timeout());
            // Not biased: under load every source (timers, new connections,
            // bytes, durability reports) gets its turn; the first source
            // polled rotates.
            turn = (turn + 1) % SOURCES;
            let wake = poll_fn(|cx| {
                // Reap finished connection tasks.
                while let Poll::Ready(Some(())) = Pin::new(&mut tasks).poll_next(cx) {}
                if shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Shutdown);
                }
                for i in 0..SOURCES {
                    let ready = match (turn + i) % SOURCES {
                        0 if handles_alive => {
                            Pin::new(&mut requests).poll_next(cx).map(Wake::Request)
                        }
                        1 => Pin::new(&mut store_events).poll_next(cx).map(Wake::Store),
                        // The owner task holds a sender: never the end.
                        2 => match Pin::new(&mut inbound).poll_next(cx) {
                            Poll::Ready(Some(e)) => Poll::Ready(Wake::Inbound(e)),
                            _ => Poll::Pending,
                        },
                        3 => listener.poll_accept(cx).map(Wake::Accepted),
                        4 => alarm.poll(cx).map(|()| Wake::Timer),
                        5 => match cluster_events.as_mut() {
                            Some(events) => Pin::new(events).poll_next(cx).map(Wake::Cluster),
                            None => Poll::Pending,
                        },
                        _ => Poll::Pending,
                    };
                    if ready.is_ready() {
                        return ready;
                    }
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Shutdown => break,
                Wake::Request(Some(request)) => {
                    if request.run(&mut engine) {
                        break;
                    }
                }
                Wake::Request(None) => handles_alive = false, // every handle is gone
                Wake::Store(event) => {
                    if let Err(e) = engine.store_report(R::now(), event) {
                        failure = Some(ServeError::StoreFailed(e));
                        break;
                    }
                }
                Wake::Inbound(event) => {
                    engine.conn_events(R::now(), event, || inbound.try_recv().ok());
                }
                Wake::Accepted(Ok((transport, peer))) => {
                    let (link, kind) = (transport.link(), transport.kind());
                    let Some((conn, queue, stop)) =
                        engine.admit(R::now(), options.max_connections, peer, link, kind)
                    else {
                        continue; // dropping the transport closes it
                    };
                    let (reader, writer) = transport.split();
                    let reader = read_loop(conn, reader, stop, inbound_tx.clone(), || {
                        sleep::<R>(LINGER)
                    });
                    let writer = write_loop(writer, queue, || sleep::<R>(CLOSE_TIMEOUT));
                    tasks.push(Task::spawn::<R>(connection(reader, writer)));
                }
                Wake::Accepted(Err(e)) => {
                    tracing::warn!("accept failed: {e}");
                    sleep::<R>(ACCEPT_BACKOFF).await;
                }
                Wake::Timer => engine.timeout(R::now()),
                Wake::Cluster(event) => {
                    if let Err(e) = engine.cluster_report(R::now(), event) {
                        failure = Some(e.into());
                        break;
                    }
                }
            }
        }

        tracing::info!("shutting down");
        metrics.set_serving(false);
        drop(listener);
        let engine_stats = engine.stats();
        // Readers' last words are no longer needed.
        drop(inbound);
        let stopped = R::spawn_blocking(move || engine.shutdown(R::now())).await?;
        // Let writers flush what is queued (the Shutting-down errors).
        let drained = timeout::<R, _>(options.drain_timeout, async {
            while poll_fn(|cx| Pin::new(&mut tasks).poll_next(cx))
                .await
                .is_some()
            {}
        })
        .await;
        if drained.is_none() {
            tracing::warn!("some connections did not drain in time");
        }
        drop(tasks); // cancels the connections left
        ServeReport::outcome(failure, stopped, engine_stats)
    }
}

/// A connection's task: its reader and its writer, each running until its
/// own end (the queue and the [`StopSignal`] tie their ends together). Not
/// an `async fn`: its state would hold the two futures twice (as arguments
/// and inside the join).
fn connection(
    reader: impl Future<Output = ()>,
    writer: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    join(reader, writer).map(|((), ())| ())
}

/// Reads chunks from the connection and forwards them to the owner task
/// until the peer closes, an error occurs, or the engine is done with the
/// connection. An idle connection's reader holds no read buffer (a byte
/// stream's is its thread's). `linger` is the time to
/// drain the input of a connection the server closed.
async fn read_loop<Rd: ReadHalf, Linger: Future<Output = ()>>(
    conn: ConnId,
    mut reader: Rd,
    stop: StopSignal,
    mut tx: mpsc::Sender<ConnEvent>,
    linger: impl FnOnce() -> Linger,
) {
    let mut stopped = pin!(stop.stopped());
    loop {
        let read = poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            reader.poll_chunk(cx).map(Some)
        })
        .await;
        let chunk = match read {
            None | Some(Ok(None)) => break,
            Some(Ok(Some(chunk))) => chunk,
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Some(Err(e)) => {
                tracing::debug!(conn = conn.0, "read failed: {e}");
                break;
            }
        };
        let ready = poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(()));
            }
            tx.poll_ready(cx).map_err(|_| ())
        })
        .await;
        if ready.is_err() || tx.start_send(ConnEvent::Bytes(conn, chunk)).is_err() {
            break;
        }
    }
    if stop.is_closing() {
        // The server closed the connection after a last frame (an error):
        // read and discard until the peer closes, for a little while, so
        // that unread input does not turn the close into a reset that could
        // destroy that frame.
        let drain = poll_fn(|cx| {
            loop {
                match reader.poll_chunk(cx) {
                    Poll::Ready(Ok(None) | Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(Some(_))) => {}
                    Poll::Pending => return Poll::Pending,
                }
            }
        });
        select(pin!(drain), pin!(linger())).await;
    }
    // The reader's last word (the owner may be gone: then nobody listens).
    if poll_fn(|cx| tx.poll_ready(cx)).await.is_ok() {
        let _ = tx.start_send(ConnEvent::Closed(conn));
    }
}

/// Writes what the engine queues for the connection, in batches. Closing
/// the output at the end waits at most until `close_timeout` resolves.
async fn write_loop<W: WriteHalf, Wait: Future<Output = ()>>(
    mut writer: W,
    mut queue: OutboundReceiver,
    close_timeout: impl FnOnce() -> Wait,
) {
    let mut batch: Vec<Vec<u8>> = Vec::new();
    loop {
        match queue.next_batch(&mut batch).await {
            WriterStep::Write => {
                let written = {
                    let aborted = pin!(queue.aborted());
                    let write = pin!(writer.write_batch(&batch));
                    match select(aborted, write).await {
                        Either::Left(((), _)) => return,
                        Either::Right((written, _)) => written,
                    }
                };
                // The next batch takes the queue's buffer: an idle
                // connection's writer keeps none.
                batch = Vec::new();
                if let Err(e) = written {
                    tracing::debug!("write failed: {e}");
                    return; // dropping the queue stops the reader
                }
            }
            WriterStep::Finish => {
                select(pin!(writer.close()), pin!(close_timeout())).await;
                return;
            }
            WriterStep::Abort => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::transport::{StreamReader, StreamWriter};
    use crate::queue::{QueueLimits, outbound};
    use futures_util::io::{Cursor, sink};

    /// An idle connection costs its reader no read buffer: the 16 KiB
    /// buffer is the thread's.
    #[test]
    fn idle_reader_and_writer_hold_no_buffer() {
        let (_tx, queue, stop) = outbound(QueueLimits::default());
        let (events, _inbound) = mpsc::channel(1);
        let reader = read_loop(
            ConnId(1),
            StreamReader(Cursor::new(Vec::new())),
            stop,
            events,
            || std::future::ready(()),
        );
        let reader_size = std::mem::size_of_val(&reader);
        assert!(reader_size < 2048, "reader future is {reader_size} bytes");
        let writer = write_loop(StreamWriter(sink()), queue, || std::future::ready(()));
        let writer_size = std::mem::size_of_val(&writer);
        assert!(writer_size < 2048, "writer future is {writer_size} bytes");
        // One task per connection: its state is the two loops', once each.
        let task = connection(reader, writer);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= reader_size + writer_size + 16,
            "connection future is {size} bytes"
        );
    }
}
