//! [`AsyncStd`]: the driver's [`Runtime`] on async-std, and its TCP
//! transport. Timers are `async-io`'s (the reactor under async-std and
//! smol); only the tasks and the sockets name async-std.

use async_io::Timer;
use async_std::task;
use missive_runtime::driver::{ByteStream, Listener, Runtime, TaskFailed};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

/// The async-std runtime, as the Missive driver uses it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    type Timer = Timer;
    type TcpListener = TcpListener;
    type TcpStream = TcpStream;

    fn spawn(future: impl Future<Output = ()> + Send + 'static) {
        task::spawn(future);
    }

    async fn spawn_blocking<T: Send + 'static>(
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, TaskFailed> {
        // A panic of `work` resumes here.
        Ok(task::spawn_blocking(work).await)
    }

    fn timer(at: Instant) -> Timer {
        Timer::at(at)
    }

    fn reset_timer(timer: &mut Timer, at: Instant) {
        timer.set_at(at);
    }

    async fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
        let listener = async_std::net::TcpListener::bind(addr).await?;
        Ok(TcpListener {
            listener: Arc::new(listener),
            accepting: None,
        })
    }

    async fn connect_tcp(addr: String) -> io::Result<TcpStream> {
        let stream = async_std::net::TcpStream::connect(addr.as_str()).await?;
        stream.set_nodelay(true)?;
        Ok(TcpStream(stream))
    }
}

type Accepting =
    Pin<Box<dyn Future<Output = io::Result<(async_std::net::TcpStream, SocketAddr)>> + Send>>;

/// A TCP listener on async-std; accepted connections have `TCP_NODELAY`.
pub struct TcpListener {
    listener: Arc<async_std::net::TcpListener>,
    accepting: Option<Accepting>,
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TcpListener").field(&self.listener).finish()
    }
}

impl Listener for TcpListener {
    type Transport = TcpStream;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, Option<SocketAddr>)>> {
        let accepting = self.accepting.get_or_insert_with(|| {
            let listener = Arc::clone(&self.listener);
            Box::pin(async move { listener.accept().await })
        });
        let accepted = ready!(accepting.as_mut().poll(cx));
        self.accepting = None;
        let (stream, peer) = accepted?;
        let _ = stream.set_nodelay(true);
        Poll::Ready(Ok((TcpStream(stream), Some(peer))))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A TCP connection on async-std (both halves share the socket).
#[derive(Debug)]
pub struct TcpStream(async_std::net::TcpStream);

impl ByteStream for TcpStream {
    type Reader = async_std::net::TcpStream;
    type Writer = async_std::net::TcpStream;

    fn split(self) -> (Self::Reader, Self::Writer) {
        (self.0.clone(), self.0)
    }
}
