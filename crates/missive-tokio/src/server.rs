//! The TCP server on tokio.
//!
//! One task owns the [`ServerEngine`] (and so the core server). It selects
//! over: new connections, [`ConnEvent`]s from the connections' readers,
//! durability reports of the store thread, the core's next timer, requests
//! from [`ServerHandle`]s, and the shutdown signal. Every connection has a
//! reader task (a 16 KiB buffer on its stack only while a read is ready; it
//! holds no buffer while idle) forwarding chunks through one bounded channel
//! to the owner task, and a writer task draining the connection's bounded
//! outbound queue with vectored writes.

use missive_core::server::ServerConfig;
use missive_runtime::engine::{ConnEvent, EngineError, ServerEngine, StoreEvents};
use missive_runtime::queue::{OutboundReceiver, StopSignal, WriterStep};
use missive_runtime::serve::{ServeReport, ServerHandle, ServerOptions, ServerRequests, control};
use missive_store::Store;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// How long a closed connection's reader drains input before giving up.
const LINGER: Duration = Duration::from_secs(2);

/// A server bound to its address with its store loaded, not yet serving.
///
/// ```no_run
/// use missive_core::server::ServerConfig;
/// use missive_store::MemoryStore;
/// use missive_tokio::BoundServer;
///
/// # async fn run() -> std::io::Result<()> {
/// let server = BoundServer::bind("127.0.0.1:0", ServerConfig::default(), Box::new(MemoryStore::new())).await?;
/// println!("listening on {}", server.local_addr());
/// server.serve_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
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
            tokio::task::spawn_blocking(move || ServerEngine::start(config, store, queue))
                .await
                .map_err(io::Error::other)?
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
        let mut tasks = JoinSet::new();
        let mut failure: Option<io::Error> = None;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut handles_alive = true;
        tracing::info!(%local_addr, "serving");

        loop {
            let deadline = engine.poll_timeout();
            // Not biased: under load every source (timers, new connections,
            // bytes, durability reports) gets its turn.
            tokio::select! {
                () = &mut shutdown => break,
                request = requests.recv(), if handles_alive => match request {
                    Some(request) => if request.run(&engine) { break },
                    None => handles_alive = false, // every handle is gone
                },
                event = store_events.recv() => {
                    if let Err(e) = engine.store_report(Instant::now(), event) {
                        failure = Some(e);
                        break;
                    }
                },
                // The owner task holds a sender: never `None`.
                Some(event) = inbound.recv() => {
                    engine.conn_events(Instant::now(), event, || inbound.try_recv().ok());
                },
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        while tasks.try_join_next().is_some() {}
                        let Some((conn, queue, stop)) =
                            engine.admit(Instant::now(), options.max_connections, Some(peer))
                        else {
                            continue; // dropping the stream closes it
                        };
                        let _ = stream.set_nodelay(true);
                        let (rd, wr) = stream.into_split();
                        tasks.spawn(read_loop(conn, rd, stop, inbound_tx.clone()));
                        tasks.spawn(write_loop(wr, queue));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off a bit.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = sleep_until(deadline), if deadline.is_some() => engine.timeout(Instant::now()),
            }
        }

        tracing::info!("shutting down");
        drop(listener);
        let engine_stats = engine.stats();
        // Readers' last words are no longer needed.
        drop(inbound);
        let stopped = tokio::task::spawn_blocking(move || engine.shutdown(Instant::now()))
            .await
            .map_err(io::Error::other)?;
        // Let writers flush what is queued (the Shutting-down errors).
        let drained = tokio::time::timeout(options.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some connections did not drain in time");
        }
        tasks.shutdown().await;
        ServeReport::outcome(failure, stopped, engine_stats)
    }
}

/// Sleeps until `deadline` (forever if `None`; the branch is then disabled).
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Reads chunks from the socket and forwards them to the core task until the
/// peer closes, an error occurs, or the engine is done with the connection.
/// The read buffer lives on the stack only while a read is ready.
async fn read_loop(
    conn: missive_core::ConnId,
    rd: OwnedReadHalf,
    stop: StopSignal,
    tx: mpsc::Sender<ConnEvent>,
) {
    loop {
        tokio::select! {
            biased;
            () = stop.stopped() => break,
            ready = rd.readable() => if ready.is_err() { break },
        }
        let chunk = {
            let mut buf = [0u8; READ_CHUNK];
            match rd.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => buf[..n].to_vec(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::debug!(conn = conn.0, "read failed: {e}");
                    break;
                }
            }
        };
        tokio::select! {
            biased;
            () = stop.stopped() => break,
            sent = tx.send(ConnEvent::Bytes(conn, chunk)) => if sent.is_err() { return },
        }
    }
    if stop.is_closing() {
        // The server closed the connection after a last frame (an error):
        // read and discard until the peer closes, for a little while, so
        // that unread input does not turn the close into a reset that could
        // destroy that frame.
        let _ = tokio::time::timeout(LINGER, async {
            loop {
                if rd.readable().await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                match rd.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }
    let _ = tx.send(ConnEvent::Closed(conn)).await;
}

/// Writes what the engine queues for the connection, in batches.
async fn write_loop(mut wr: OwnedWriteHalf, mut queue: OutboundReceiver) {
    let mut batch: Vec<Vec<u8>> = Vec::new();
    loop {
        match queue.next_batch(&mut batch).await {
            WriterStep::Write => {
                let written = tokio::select! {
                    biased;
                    () = queue.aborted() => return,
                    written = write_batch(&mut wr, &batch) => written,
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
                let _ = tokio::time::timeout(Duration::from_secs(5), wr.shutdown()).await;
                return;
            }
            WriterStep::Abort => return,
        }
    }
}

/// Writes every buffer of `batch`, with vectored writes.
async fn write_batch(wr: &mut OwnedWriteHalf, batch: &[Vec<u8>]) -> io::Result<()> {
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

/// Connects to `addr` with `TCP_NODELAY`.
pub(crate) async fn connect_tcp(addr: String) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr.as_str()).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection costs its reader no read buffer: the 16 KiB
    /// buffer lives on the stack only while a read is ready.
    #[tokio::test]
    async fn idle_reader_holds_no_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (rd, _wr) = client.into_split();
        let (_tx, _rx, stop) =
            missive_runtime::queue::outbound(missive_runtime::queue::QueueLimits::default());
        let (events, _inbound) = mpsc::channel(1);
        let reader = read_loop(missive_core::ConnId(1), rd, stop, events);
        let size = std::mem::size_of_val(&reader);
        assert!(size < 2048, "reader future is {size} bytes");
        let (_tx, queue, _stop) =
            missive_runtime::queue::outbound(missive_runtime::queue::QueueLimits::default());
        let (_rd, wr) = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap()
            .into_split();
        let writer = write_loop(wr, queue);
        let size = std::mem::size_of_val(&writer);
        assert!(size < 2048, "writer future is {size} bytes");
    }
}
