//! The TCP server on async-std.
//!
//! One task owns the [`ServerEngine`] (and so the core server). It waits
//! for: the shutdown signal, requests from [`ServerHandle`]s, durability
//! reports of the store thread, [`ConnEvent`]s from the connections'
//! readers, new connections, and the core's next timer — taking turns, so
//! that no source starves the others under load. Every connection has a
//! reader task forwarding chunks through one bounded channel to the owner
//! task, and a writer task draining the connection's bounded outbound queue
//! with vectored writes.

use async_io::Timer;
use async_std::net::{TcpListener, TcpStream, ToSocketAddrs};
use async_std::task::{self, JoinHandle};
use futures_channel::mpsc;
use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;
use futures_util::{AsyncRead, AsyncWrite, AsyncWriteExt, Stream};
use missive_core::ConnId;
use missive_core::server::ServerConfig;
use missive_runtime::engine::{ConnEvent, EngineError, ServerEngine, StoreEvents};
use missive_runtime::queue::{OutboundReceiver, StopSignal, WriterStep};
use missive_runtime::serve::{
    ServeReport, ServerHandle, ServerOptions, ServerRequest, ServerRequests, control,
};
use missive_store::{Store, StoreEvent};
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// How long a closed connection's reader drains input before giving up.
const LINGER: Duration = Duration::from_secs(2);
/// Sources the owner task waits on besides the shutdown signal.
const SOURCES: usize = 5;

/// A server bound to its address with its store loaded, not yet serving.
///
/// ```no_run
/// use missive_async_std::BoundServer;
/// use missive_core::server::ServerConfig;
/// use missive_store::MemoryStore;
///
/// # async fn run() -> std::io::Result<()> {
/// let server = BoundServer::bind("127.0.0.1:0", ServerConfig::default(), Box::new(MemoryStore::new())).await?;
/// println!("listening on {}", server.local_addr());
/// let handle = server.handle();
/// // ... later, from anywhere: handle.shutdown();
/// server.serve().await?;
/// # Ok(()) }
/// ```
pub struct BoundServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    engine: ServerEngine,
    store_events: StoreEvents,
    options: ServerOptions,
    handle: ServerHandle,
    requests: ServerRequests,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("local_addr", &self.local_addr)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// What woke the owner task.
enum Wake {
    Shutdown,
    Request(Option<ServerRequest>),
    Store(Option<StoreEvent>),
    Inbound(ConnEvent),
    Accepted(io::Result<TcpStream>),
    Timer,
}

impl BoundServer {
    /// Binds `addr`, loads `store` and starts its thread, with the default
    /// [`ServerOptions`].
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        store: Box<dyn Store>,
    ) -> io::Result<Self> {
        Self::bind_with(addr, config, store, ServerOptions::default()).await
    }

    /// Binds `addr`, loads `store` and starts its thread.
    pub async fn bind_with(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        store: Box<dyn Store>,
        options: ServerOptions,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let queue = options.queue;
        let (engine, store_events) =
            task::spawn_blocking(move || ServerEngine::start(config, store, queue))
                .await
                .map_err(|e: EngineError| io::Error::other(e.to_string()))?;
        let (handle, requests) = control();
        Ok(Self {
            listener,
            local_addr,
            engine,
            store_events,
            options,
            handle,
            requests,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to stop or inspect the server once it serves.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves until [`ServerHandle::shutdown`] is called.
    pub async fn serve(self) -> io::Result<ServeReport> {
        self.serve_until(std::future::pending()).await
    }

    /// Serves until `shutdown` resolves (or [`ServerHandle::shutdown`] is
    /// called), then shuts down gracefully: stops accepting, tells every
    /// client, makes everything durable, lets the writers flush.
    ///
    /// Fails if the store fails (nothing more could be made durable).
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) -> io::Result<ServeReport> {
        let Self {
            listener,
            local_addr,
            mut engine,
            mut store_events,
            options,
            handle,
            mut requests,
        } = self;
        drop(handle);
        let (inbound_tx, mut inbound) = mpsc::channel::<ConnEvent>(options.inbound_capacity.max(1));
        let mut incoming = listener.incoming();
        let mut tasks: FuturesUnordered<JoinHandle<()>> = FuturesUnordered::new();
        let mut failure: Option<io::Error> = None;
        let mut shutdown = pin!(shutdown);
        let mut handles_alive = true;
        let mut timer = Timer::never();
        let mut armed = None;
        let mut turn = 0;
        tracing::info!(%local_addr, "serving");

        loop {
            rearm(&mut timer, &mut armed, engine.poll_timeout());
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
                        3 => match Pin::new(&mut incoming).poll_next(cx) {
                            Poll::Ready(Some(a)) => Poll::Ready(Wake::Accepted(a)),
                            _ => Poll::Pending,
                        },
                        4 => Pin::new(&mut timer).poll(cx).map(|_| Wake::Timer),
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
                    if request.run(&engine) {
                        break;
                    }
                }
                Wake::Request(None) => handles_alive = false, // every handle is gone
                Wake::Store(event) => {
                    if let Err(e) = engine.store_report(Instant::now(), event) {
                        failure = Some(e);
                        break;
                    }
                }
                Wake::Inbound(event) => {
                    engine.conn_events(Instant::now(), event, || inbound.try_recv().ok());
                }
                Wake::Accepted(Ok(stream)) => {
                    let peer = stream.peer_addr().ok();
                    let Some((conn, queue, stop)) =
                        engine.admit(Instant::now(), options.max_connections, peer)
                    else {
                        continue; // dropping the stream closes it
                    };
                    let _ = stream.set_nodelay(true);
                    tasks.push(task::spawn(read_loop(
                        conn,
                        stream.clone(),
                        stop,
                        inbound_tx.clone(),
                    )));
                    tasks.push(task::spawn(write_loop(stream, queue)));
                }
                Wake::Accepted(Err(e)) => {
                    // Out of file descriptors and the like: back off a bit.
                    tracing::warn!("accept failed: {e}");
                    Timer::after(Duration::from_millis(50)).await;
                }
                Wake::Timer => {
                    armed = None;
                    engine.timeout(Instant::now());
                }
            }
        }

        tracing::info!("shutting down");
        drop(incoming);
        drop(listener);
        let engine_stats = engine.stats();
        // Readers' last words are no longer needed.
        drop(inbound);
        let stopped = task::spawn_blocking(move || engine.shutdown(Instant::now())).await;
        // Let writers flush what is queued (the Shutting-down errors).
        let drained = async_std::future::timeout(options.drain_timeout, async {
            while poll_fn(|cx| Pin::new(&mut tasks).poll_next(cx))
                .await
                .is_some()
            {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some connections did not drain in time");
        }
        for task in tasks {
            task.cancel().await;
        }
        ServeReport::outcome(failure, stopped, engine_stats)
    }
}

/// Sets `timer` to `next` unless it is already set to it (re-registering
/// with the reactor on every wake-up would cost a lock each time). `armed`
/// is what the timer is set to; clear it when the timer fires.
pub(crate) fn rearm(timer: &mut Timer, armed: &mut Option<Instant>, next: Option<Instant>) {
    if *armed != next {
        match next {
            Some(at) => timer.set_at(at),
            None => *timer = Timer::never(),
        }
        *armed = next;
    }
}

/// Reads chunks from the socket and forwards them to the owner task until
/// the peer closes, an error occurs, or the engine is done with the
/// connection. The read buffer lives on the stack only during a poll: an
/// idle connection holds none.
async fn read_loop(
    conn: ConnId,
    stream: TcpStream,
    stop: StopSignal,
    mut tx: mpsc::Sender<ConnEvent>,
) {
    let mut stopped = pin!(stop.stopped());
    loop {
        let read = poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            let mut buf = [0u8; READ_CHUNK];
            poll_read_shared(&stream, cx, &mut buf)
                .map(|read| Some(read.map(|n| buf[..n].to_vec())))
        })
        .await;
        let chunk = match read {
            None => break,
            Some(Ok(chunk)) if chunk.is_empty() => break,
            Some(Ok(chunk)) => chunk,
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
        let _ = async_std::future::timeout(
            LINGER,
            poll_fn(|cx| {
                loop {
                    let mut buf = [0u8; 1024];
                    match poll_read_shared(&stream, cx, &mut buf) {
                        Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                        Poll::Ready(Ok(_)) => {}
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }),
        )
        .await;
    }
    // The reader's last word (the owner may be gone: then nobody listens).
    if poll_fn(|cx| tx.poll_ready(cx)).await.is_ok() {
        let _ = tx.start_send(ConnEvent::Closed(conn));
    }
}

/// Writes what the engine queues for the connection, in batches.
async fn write_loop(stream: TcpStream, mut queue: OutboundReceiver) {
    let mut batch: Vec<Vec<u8>> = Vec::new();
    loop {
        match queue.next_batch(&mut batch).await {
            WriterStep::Write => {
                let written = {
                    let mut wr = &stream;
                    let aborted = pin!(queue.aborted());
                    let write = pin!(write_batch(&mut wr, &batch));
                    match select(aborted, write).await {
                        Either::Left(((), _)) => return,
                        Either::Right((written, _)) => written,
                    }
                };
                batch.clear();
                if batch.capacity() > MAX_IOVECS * 4 {
                    batch.shrink_to(MAX_IOVECS);
                }
                if let Err(e) = written {
                    tracing::debug!("write failed: {e}");
                    return; // dropping the queue stops the reader
                }
            }
            WriterStep::Finish => {
                let _ = stream.shutdown(Shutdown::Write);
                return;
            }
            WriterStep::Abort => return,
        }
    }
}

/// Writes every buffer of `batch`, with vectored writes.
pub(crate) async fn write_batch<W: AsyncWrite + Unpin>(
    wr: &mut W,
    batch: &[Vec<u8>],
) -> io::Result<()> {
    if let [one] = batch {
        return wr.write_all(one).await;
    }
    for group in batch.chunks(MAX_IOVECS) {
        let mut slices: Vec<IoSlice<'_>> = group.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            let n = wr.write_vectored(rest).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
    }
    Ok(())
}

/// Polls a read on a socket shared between a reader and a writer.
pub(crate) fn poll_read_shared(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    Pin::new(&mut &*stream).poll_read(cx, buf)
}

/// Connects to `addr` with `TCP_NODELAY`.
pub(crate) async fn connect_tcp(addr: String) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr.as_str()).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_runtime::queue::{QueueLimits, outbound};

    /// An idle connection costs its reader no read buffer: the 16 KiB
    /// buffer lives on the stack only during a poll.
    #[test]
    fn idle_reader_and_writer_hold_no_buffer() {
        task::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let stream = TcpStream::connect(addr).await.unwrap();
            let (_tx, queue, stop) = outbound(QueueLimits::default());
            let (events, _inbound) = mpsc::channel(1);
            let reader = read_loop(ConnId(1), stream.clone(), stop, events);
            let size = std::mem::size_of_val(&reader);
            assert!(size < 2048, "reader future is {size} bytes");
            let writer = write_loop(stream, queue);
            let size = std::mem::size_of_val(&writer);
            assert!(size < 2048, "writer future is {size} bytes");
        });
    }
}
