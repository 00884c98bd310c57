//! The seam between the driver and the wire: a [`Transport`] is a
//! connection split into a [`ReadHalf`] yielding chunks and a [`WriteHalf`]
//! taking batches of packets; a [`Listener`] accepts transports; a
//! [`Connector`] opens one.
//!
//! A byte stream (TCP, TLS: any [`ByteStream`], whose halves are
//! `futures-io` readers and writers) is a transport through one generic
//! wrapper ([`StreamReader`], [`StreamWriter`]): every chunk is any run of
//! bytes, every packet goes out behind its length prefix (the core writes
//! it), batches with vectored writes. A message transport (WebSocket)
//! implements [`Transport`] itself: one whole packet per chunk, one message
//! per packet. [`Transport::link`] tells the core which of the two it is.

use super::runtime::Runtime;
use crate::metrics::TransportKind;
use futures_util::{AsyncRead, AsyncWrite, AsyncWriteExt};
use missive_core::crypto::ChannelBinding;
use missive_core::wire::Link;
use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Bytes read from a byte stream at once.
const READ_CHUNK: usize = 16 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// A connection carrying the protocol's packets.
pub trait Transport: Send + 'static {
    /// The half the reader task reads.
    type Reader: ReadHalf;
    /// The half the writer task writes; closing it ends the output.
    type Writer: WriteHalf;

    /// Splits the connection into its two halves.
    fn split(self) -> (Self::Reader, Self::Writer);

    /// What the core needs to know of the connection: its channel binding
    /// (docs/PROTOCOL.md §3.2) and how packets are framed on it.
    fn link(&self) -> Link;

    /// What it runs over, for the metrics: by default what its
    /// [`link`](Transport::link) tells.
    fn kind(&self) -> TransportKind {
        TransportKind::of(&self.link())
    }
}

/// The reading half of a [`Transport`].
pub trait ReadHalf: Send + Unpin + 'static {
    /// Polls for the next chunk: any bytes of a byte stream (never empty),
    /// exactly one whole packet of a message transport (an empty message is
    /// an empty packet, for the core to refuse); `None` at the end of the
    /// input.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>>;
}

/// The writing half of a [`Transport`].
pub trait WriteHalf: Send + Unpin + 'static {
    /// Writes every packet of `batch`, in order (each buffer is what one
    /// `Transmit` of the core produced).
    fn write_batch<'a>(
        &'a mut self,
        batch: &'a [Vec<u8>],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;

    /// Ends the output (flushes first).
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

/// A connection carrying a byte stream (TCP, TLS): its halves are
/// `futures-io` readers and writers. Every byte stream is a [`Transport`]
/// with [`Framing::Stream`](missive_core::wire::Framing::Stream).
pub trait ByteStream: Send + 'static {
    /// The reading half.
    type Reader: AsyncRead + Unpin + Send + 'static;
    /// The writing half.
    type Writer: AsyncWrite + Unpin + Send + 'static;

    /// Splits the stream into its two halves.
    fn split(self) -> (Self::Reader, Self::Writer);

    /// The channel binding of this connection: `None` for plaintext, the
    /// TLS exporter value for TLS.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::None
    }
}

impl<S: ByteStream> Transport for S {
    type Reader = StreamReader<S::Reader>;
    type Writer = StreamWriter<S::Writer>;

    fn split(self) -> (Self::Reader, Self::Writer) {
        let (reader, writer) = ByteStream::split(self);
        (StreamReader(reader), StreamWriter(writer))
    }

    fn link(&self) -> Link {
        Link::stream(self.channel_binding())
    }
}

thread_local! {
    /// The read buffer of every [`StreamReader`] polled on this thread:
    /// zeroed once per thread, not once per poll (a reader is polled at
    /// every wake-up of its connection's task, mostly to find nothing).
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// The reading half of a byte stream as a [`ReadHalf`]. It reads into its
/// thread's buffer and takes out what came: an idle connection holds no
/// read buffer.
#[derive(Debug)]
pub struct StreamReader<R>(pub R);

impl<R: AsyncRead + Unpin + Send + 'static> ReadHalf for StreamReader<R> {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>> {
        let mut read = |buf: &mut [u8]| {
            Pin::new(&mut self.0)
                .poll_read(cx, buf)
                .map_ok(|n| (n > 0).then(|| buf[..n].to_vec()))
        };
        READ_BUFFER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => read(&mut buf),
            // Only if a reader's poll_read polled another reader.
            Err(_) => read(&mut [0; READ_CHUNK]),
        })
    }
}

/// The writing half of a byte stream as a [`WriteHalf`]: a batch goes out
/// with vectored writes.
#[derive(Debug)]
pub struct StreamWriter<W>(pub W);

impl<W: AsyncWrite + Unpin + Send + 'static> WriteHalf for StreamWriter<W> {
    fn write_batch<'a>(
        &'a mut self,
        batch: &'a [Vec<u8>],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        write_vectored_batch(&mut self.0, batch)
    }

    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.0.close()
    }
}

/// Writes every buffer of `batch`, with vectored writes.
async fn write_vectored_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &[Vec<u8>],
) -> io::Result<()> {
    if let [one] = batch {
        return writer.write_all(one).await;
    }
    for group in batch.chunks(MAX_IOVECS) {
        let mut slices: Vec<IoSlice<'_>> = group.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            let n = writer.write_vectored(rest).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
    }
    Ok(())
}

/// Accepts connections for a server.
pub trait Listener: Send + 'static {
    /// What it accepts.
    type Transport: Transport;

    /// Polls for the next connection and its peer's address.
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self::Transport, Option<SocketAddr>)>>;

    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Two listeners serving one server (say TCP or TLS, and WebSocket): what
/// either accepts, taking turns so that neither starves the other. Its
/// address is the first one's.
#[derive(Debug)]
pub struct Both<A, B> {
    first: A,
    second: B,
    second_first: bool,
}

impl<A: Listener, B: Listener> Both<A, B> {
    /// Accepts on `first` and `second`.
    pub fn new(first: A, second: B) -> Self {
        Self {
            first,
            second,
            second_first: false,
        }
    }

    /// The first listener.
    pub fn first(&self) -> &A {
        &self.first
    }

    /// The second listener.
    pub fn second(&self) -> &B {
        &self.second
    }
}

impl<A: Listener, B: Listener> Listener for Both<A, B> {
    type Transport = Either<A::Transport, B::Transport>;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self::Transport, Option<SocketAddr>)>> {
        self.second_first = !self.second_first;
        let mut first = |cx: &mut Context<'_>| {
            self.first
                .poll_accept(cx)
                .map_ok(|(t, peer)| (Either::First(t), peer))
        };
        let mut second = |cx: &mut Context<'_>| {
            self.second
                .poll_accept(cx)
                .map_ok(|(t, peer)| (Either::Second(t), peer))
        };
        if self.second_first {
            if let ready @ Poll::Ready(_) = second(cx) {
                return ready;
            }
            first(cx)
        } else {
            if let ready @ Poll::Ready(_) = first(cx) {
                return ready;
            }
            second(cx)
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.first.local_addr()
    }
}

/// A transport (or a half of one) of either of two kinds.
#[derive(Debug)]
pub enum Either<A, B> {
    /// Of the first kind.
    First(A),
    /// Of the second kind.
    Second(B),
}

impl<A: Transport, B: Transport> Transport for Either<A, B> {
    type Reader = Either<A::Reader, B::Reader>;
    type Writer = Either<A::Writer, B::Writer>;

    fn split(self) -> (Self::Reader, Self::Writer) {
        match self {
            Either::First(t) => {
                let (r, w) = t.split();
                (Either::First(r), Either::First(w))
            }
            Either::Second(t) => {
                let (r, w) = t.split();
                (Either::Second(r), Either::Second(w))
            }
        }
    }

    fn link(&self) -> Link {
        match self {
            Either::First(t) => t.link(),
            Either::Second(t) => t.link(),
        }
    }

    fn kind(&self) -> TransportKind {
        match self {
            Either::First(t) => t.kind(),
            Either::Second(t) => t.kind(),
        }
    }
}

impl<A: ReadHalf, B: ReadHalf> ReadHalf for Either<A, B> {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>> {
        match self {
            Either::First(r) => r.poll_chunk(cx),
            Either::Second(r) => r.poll_chunk(cx),
        }
    }
}

impl<A: WriteHalf, B: WriteHalf> WriteHalf for Either<A, B> {
    async fn write_batch(&mut self, batch: &[Vec<u8>]) -> io::Result<()> {
        match self {
            Either::First(w) => w.write_batch(batch).await,
            Either::Second(w) => w.write_batch(batch).await,
        }
    }

    async fn close(&mut self) -> io::Result<()> {
        match self {
            Either::First(w) => w.close().await,
            Either::Second(w) => w.close().await,
        }
    }
}

/// A connection being opened.
pub type Connecting<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

/// Opens connections for a client.
pub trait Connector: Send + Sync + 'static {
    /// What it opens.
    type Transport: Transport;

    /// Starts connecting to `addr` (`host:port`).
    fn connect(&self, addr: &str) -> Connecting<Self::Transport>;
}

/// Plain TCP on runtime `R`.
pub struct TcpConnector<R>(PhantomData<fn() -> R>);

impl<R> Default for TcpConnector<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<R> std::fmt::Debug for TcpConnector<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TcpConnector")
    }
}

impl<R: Runtime> Connector for TcpConnector<R> {
    type Transport = R::TcpStream;

    fn connect(&self, addr: &str) -> Connecting<R::TcpStream> {
        Box::pin(R::connect_tcp(addr.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `limit` bytes per (vectored) write.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(self.limit - taken);
                self.out.extend_from_slice(&buf[..n]);
                taken += n;
                if taken == self.limit {
                    break;
                }
            }
            Poll::Ready(Ok(taken))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    proptest::proptest! {
        /// Whatever the batch (of frames: never empty) and however little
        /// each write takes, the buffers go out whole and in order (vectored writes of at most
        /// `MAX_IOVECS` buffers, advanced over partial writes).
        #[test]
        fn a_batch_is_written_whole_and_in_order(
            batch in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..40), 0..200),
            limit in 1usize..300,
        ) {
            let mut out = StreamWriter(Trickle { out: Vec::new(), limit });
            futures_util::FutureExt::now_or_never(out.write_batch(&batch))
                .expect("the writer never waits")
                .unwrap();
            proptest::prop_assert_eq!(out.0.out, batch.concat());
        }
    }
}
