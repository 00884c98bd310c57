//! The Missive core in a hand-written blocking server: `std::net`, plain
//! threads and channels, the in-memory store — no async runtime at all.
//!
//! ```text
//! cargo run --example blocking_server -- [ADDR]     (default 127.0.0.1:7878)
//! ```
//!
//! It serves until the process is killed; any Missive client (the tokio or
//! the async-std driver, the `missive` CLI) can talk to it. The point is the
//! shape, which is how the core plugs into a runtime we did not write:
//!
//! ```text
//!  acceptor thread --Accepted--+
//!  reader thread per conn -----+--> one channel --> core thread (owns Server)
//!                              |                      | Transmit: bounded queue
//!                              |                      v  of the conn's writer thread
//!                              +                    writer thread per conn
//! ```
//!
//! The core thread is the only one touching the [`Server`]: it feeds every
//! event with `handle_input`, drains `poll_output` after each, and waits for
//! the next event no longer than `poll_timeout`. Persistence is synchronous
//! here: after each drain, the `Persist` commands are committed to the store
//! in one batch and `Durable` is fed back (a real disk store would commit on
//! its own thread, as `missive_store::StoreThread` does).

use missive::core::server::{Input, Output, PersistCmd, Server, ServerConfig, ServerEvent};
use missive::core::{ConnId, Lsn};
use missive::store::{MemoryStore, Store};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Frames waiting for one connection's writer before it counts as a slow
/// consumer and is dropped.
const WRITE_QUEUE: usize = 1024;
/// How often the core thread looks at the stop flag when nothing happens.
const TICK: Duration = Duration::from_millis(50);

/// What the other threads tell the core thread.
enum Event {
    Accepted(TcpStream),
    Bytes(ConnId, Vec<u8>),
    Closed(ConnId),
}

/// One connection as the core thread sees it.
struct Conn {
    stream: TcpStream,
    /// Frames for the writer thread; dropping it closes the connection
    /// after what is queued.
    out: SyncSender<Vec<u8>>,
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    let listener = TcpListener::bind(&addr)?;
    println!("blocking Missive server on {}", listener.local_addr()?);
    run(listener, Arc::new(AtomicBool::new(false)))
}

/// Serves on `listener` until `stop` is set, then shuts down gracefully
/// (every client is told, queued bytes are written).
pub fn run(listener: TcpListener, stop: Arc<AtomicBool>) -> io::Result<()> {
    let local = listener.local_addr()?;
    let mut store = MemoryStore::new();
    let state = store.load().map_err(io::Error::other)?;
    let mut server = Server::new(
        ServerConfig::default(),
        state,
        seed()?,
        Instant::now(),
        unix_ms(),
    );
    let (tx, rx) = mpsc::channel();
    let acceptor = {
        let (tx, stop) = (tx.clone(), Arc::clone(&stop));
        thread::spawn(move || accept_loop(listener, tx, stop))
    };
    let mut conns: HashMap<ConnId, Conn> = HashMap::new();
    let mut next_conn = 1;
    drain(&mut server, &mut conns, &mut store);

    while !stop.load(Ordering::SeqCst) {
        let wait = server
            .poll_timeout()
            .map_or(TICK, |at| at.saturating_duration_since(Instant::now()))
            .min(TICK);
        match rx.recv_timeout(wait) {
            Ok(event) => {
                let now = Instant::now();
                on_event(&mut server, &mut conns, &mut next_conn, &tx, now, event);
                // Take whatever else is waiting before draining.
                while let Ok(event) = rx.try_recv() {
                    on_event(&mut server, &mut conns, &mut next_conn, &tx, now, event);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Timers are due even while events keep coming.
        let now = Instant::now();
        if server.poll_timeout().is_some_and(|at| at <= now) {
            server.handle_input(now, Input::Timeout);
        }
        drain(&mut server, &mut conns, &mut store);
    }

    // Stop: tell every client, write what is queued, close.
    server.shutdown(Instant::now());
    drain(&mut server, &mut conns, &mut store);
    conns.clear(); // each writer finishes its queue, then shuts the socket down
    wake_acceptor(local);
    let _ = acceptor.join();
    Ok(())
}

/// Feeds one event to the core.
fn on_event(
    server: &mut Server,
    conns: &mut HashMap<ConnId, Conn>,
    next_conn: &mut u64,
    tx: &Sender<Event>,
    now: Instant,
    event: Event,
) {
    match event {
        Event::Accepted(stream) => {
            let conn = ConnId(*next_conn);
            *next_conn += 1;
            match start_conn(conn, stream, tx.clone()) {
                Ok(c) => {
                    conns.insert(conn, c);
                    server.handle_input(
                        now,
                        Input::Connected(conn, missive_core::wire::Link::PLAINTEXT),
                    );
                }
                Err(e) => eprintln!("cannot start connection {}: {e}", conn.0),
            }
        }
        Event::Bytes(conn, bytes) => {
            // Late bytes of a connection the core already closed are dropped.
            if conns.contains_key(&conn) {
                server.handle_input(now, Input::Bytes(conn, &bytes));
            }
        }
        Event::Closed(conn) => {
            if conns.remove(&conn).is_some() {
                server.handle_input(now, Input::Disconnected(conn));
            }
        }
    }
}

/// Acts on every output of the core; commits `Persist` commands in one
/// batch and reports them durable, until the core has nothing more to say.
fn drain(server: &mut Server, conns: &mut HashMap<ConnId, Conn>, store: &mut MemoryStore) {
    loop {
        let mut batch: Vec<PersistCmd> = Vec::new();
        let mut durable: Option<Lsn> = None;
        while let Some(output) = server.poll_output() {
            match output {
                Output::Transmit { conn, bytes } => {
                    let full = match conns.get(&conn) {
                        Some(c) => matches!(c.out.try_send(bytes), Err(TrySendError::Full(_))),
                        None => false,
                    };
                    if full {
                        // A slow consumer: drop it; its undelivered items
                        // stay queued for its next session.
                        if let Some(c) = conns.remove(&conn) {
                            let _ = c.stream.shutdown(Shutdown::Both);
                        }
                        server.handle_input(Instant::now(), Input::Disconnected(conn));
                    }
                }
                Output::Close { conn } => {
                    // Dropping the sender lets the writer finish and close.
                    conns.remove(&conn);
                }
                Output::Persist { lsn, cmd } => {
                    batch.push(cmd);
                    durable = Some(lsn);
                }
                Output::Event(ServerEvent::LoggedIn { conn, user }) => {
                    println!("connection {} logged in as {user}", conn.0);
                }
                Output::Event(_) => {}
                // Cluster nodes only: a single server never forwards.
                Output::Forward { .. } | Output::Reply { .. } => {}
            }
        }
        let Some(lsn) = durable else { return };
        if let Err(e) = store.commit(&batch) {
            // Nothing more can be made durable; a real server would stop.
            eprintln!("store failure: {e}");
            return;
        }
        server.handle_input(Instant::now(), Input::Durable(lsn));
    }
}

/// Accepts connections until `stop` is set.
fn accept_loop(listener: TcpListener, tx: Sender<Event>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                if tx.send(Event::Accepted(stream)).is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Unblocks the acceptor's `accept` so that it sees the stop flag.
fn wake_acceptor(addr: SocketAddr) {
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
}

/// Starts the reader and writer threads of a connection.
fn start_conn(conn: ConnId, stream: TcpStream, tx: Sender<Event>) -> io::Result<Conn> {
    let (out, queue) = mpsc::sync_channel(WRITE_QUEUE);
    let reader = stream.try_clone()?;
    let writer = stream.try_clone()?;
    thread::spawn(move || read_loop(conn, reader, tx));
    thread::spawn(move || write_loop(writer, queue));
    Ok(Conn { stream, out })
}

/// Forwards what the peer sends until it closes or fails.
fn read_loop(conn: ConnId, mut stream: TcpStream, tx: Sender<Event>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.send(Event::Bytes(conn, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Event::Closed(conn));
}

/// Writes queued frames; when the core drops the queue, finishes the
/// connection.
fn write_loop(mut stream: TcpStream, queue: Receiver<Vec<u8>>) {
    for bytes in queue {
        if stream.write_all(&bytes).is_err() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
    // No more frames: the peer reads to the end, then our reader sees its
    // close.
    let _ = stream.shutdown(Shutdown::Write);
}

/// A seed for the core's generator from the operating system (here through
/// `missive-runtime`, which needs no async runtime).
fn seed() -> io::Result<[u8; 32]> {
    missive_runtime::os_seed()
}

/// The wall clock in Unix milliseconds.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
