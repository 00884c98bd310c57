//! The seam between the driver and the bytes: a [`Transport`] is a
//! connection split into a reading and a writing half (`futures-io`
//! traits); a [`Listener`] accepts transports; a [`Connector`] opens one.
//! TCP is [`Runtime::TcpStream`]; a TLS or WebSocket transport wraps it (or
//! its listener) and plugs into the same drivers, without touching the
//! runtime adapters.

use super::runtime::Runtime;
use futures_util::{AsyncRead, AsyncWrite};
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A connection carrying the byte stream of the protocol.
pub trait Transport: Send + 'static {
    /// The half the reader task reads.
    type Reader: AsyncRead + Unpin + Send + 'static;
    /// The half the writer task writes; closing it ends the output.
    type Writer: AsyncWrite + Unpin + Send + 'static;

    /// Splits the connection into its two halves.
    fn split(self) -> (Self::Reader, Self::Writer);

    /// The channel binding of this connection, which the core puts into
    /// the login transcript (docs/PROTOCOL.md §3.2): `None` for plaintext,
    /// the TLS exporter value for TLS.
    fn channel_binding(&self) -> missive_core::crypto::ChannelBinding {
        missive_core::crypto::ChannelBinding::None
    }
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
