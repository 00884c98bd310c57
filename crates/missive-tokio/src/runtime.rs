//! [`Tokio`]: the driver's [`Runtime`] on tokio, and its TCP transport
//! (tokio's I/O traits bridged to `futures-io`).

use missive_runtime::driver::{ByteStream, Listener, Runtime, TaskFailed};
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The tokio runtime, as the Missive driver uses it. Servers and clients
/// spawn on the ambient runtime (`tokio::spawn`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Timer = Pin<Box<tokio::time::Sleep>>;
    type TcpListener = TcpListener;
    type TcpStream = TcpStream;

    fn spawn(future: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(future);
    }

    fn spawn_blocking<T: Send + 'static>(
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, TaskFailed>> + Send {
        let task = tokio::task::spawn_blocking(work);
        async move { task.await.map_err(|e| TaskFailed(e.to_string())) }
    }

    fn timer(at: Instant) -> Self::Timer {
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn reset_timer(timer: &mut Self::Timer, at: Instant) {
        timer.as_mut().reset(at.into());
    }

    async fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
        tokio::net::TcpListener::bind(addr).await.map(TcpListener)
    }

    async fn connect_tcp(addr: String) -> io::Result<TcpStream> {
        let stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
        stream.set_nodelay(true)?;
        Ok(TcpStream(stream))
    }
}

/// A TCP listener on tokio; accepted connections have `TCP_NODELAY`.
#[derive(Debug)]
pub struct TcpListener(tokio::net::TcpListener);

impl Listener for TcpListener {
    type Transport = TcpStream;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, Option<SocketAddr>)>> {
        let (stream, peer) = ready!(self.0.poll_accept(cx))?;
        let _ = stream.set_nodelay(true);
        Poll::Ready(Ok((TcpStream(stream), Some(peer))))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP connection on tokio.
#[derive(Debug)]
pub struct TcpStream(tokio::net::TcpStream);

impl ByteStream for TcpStream {
    type Reader = Compat<OwnedReadHalf>;
    type Writer = Compat<OwnedWriteHalf>;

    fn split(self) -> (Self::Reader, Self::Writer) {
        let (reader, writer) = self.0.into_split();
        (Compat(reader), Compat(writer))
    }
}

/// A tokio reader or writer seen through the `futures-io` traits.
#[derive(Debug)]
pub struct Compat<T>(T);

impl<T: AsyncRead + Unpin> futures_util::AsyncRead for Compat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    }
}

impl<T: AsyncWrite + Unpin> futures_util::AsyncWrite for Compat<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
