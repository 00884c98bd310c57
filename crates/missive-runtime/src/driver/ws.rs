//! WebSocket (RFC 6455) over any [`ByteStream`]: a [`WsListener`] wrapping
//! any listener of byte streams (TCP for `ws`, TLS for `wss`) and a
//! [`WsConnector`] wrapping any connector of them. One implementation
//! (tungstenite through `async-tungstenite`, which speaks `futures-io`)
//! serves every runtime.
//!
//! The mapping (docs/PROTOCOL.md §2.6): subprotocol [`SUBPROTOCOL`],
//! required and echoed; one packet per binary message, no length prefix;
//! messages and frames larger than the core's frame limit are refused by
//! tungstenite before it buffers them, and the connection closes with 1009;
//! a text message closes it with 1003. A WebSocket session's channel binding
//! is `none`, even over TLS (browsers cannot read the TLS exporter).
//!
//! The listener reads each request head itself ([`super::http`]): an
//! upgrade goes on to tungstenite, any other request is answered from the
//! [`StaticSite`] of [`WsListener::with_site`] (the chat page), or refused
//! with 400.

use super::handshake::{HANDSHAKE_TIMEOUT, Handshakes};
use super::http::{Answer, Replayed, StaticSite, read_request_head};
use super::runtime::{Runtime, timeout};
use super::tls::Joined;
use super::transport::{
    ByteStream, Connecting, Connector, Listener, ReadHalf, Transport, WriteHalf,
};
use crate::metrics::TransportKind;
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::client::Request;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{self, Message};
use futures_util::Sink;
use futures_util::Stream;
use missive_core::crypto::ChannelBinding;
use missive_core::wire::Link;
use std::future::poll_fn;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// The WebSocket subprotocol of Missive, which both ends name in the
/// handshake (`Sec-WebSocket-Protocol`).
pub const SUBPROTOCOL: &str = "missive.v1";
/// The bytes tungstenite reads from the stream at once (its read buffer,
/// held by every connection).
const READ_BUFFER: usize = 4 * 1024;
/// The bytes of a batch tungstenite gathers before writing (one flush ends
/// every batch).
const WRITE_BUFFER: usize = 16 * 1024;

/// The largest message a client accepts by default: 16 MiB, far above the
/// default frame limit (256 KiB). The server's real limit is announced only
/// in Welcome, and the core checks every packet against it; this bound
/// only keeps a server from making the client buffer without end.
pub const CLIENT_MAX_MESSAGE: usize = 16 << 20;

/// Why a WebSocket connection failed or was closed, typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebSocketError {
    /// The server refused the handshake with this HTTP status (400: no
    /// `missive.v1` subprotocol; 403: an Origin not allowed).
    #[error("the server refused the WebSocket handshake (HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// The server accepted the handshake without the `missive.v1`
    /// subprotocol.
    #[error("the server did not accept the WebSocket subprotocol {SUBPROTOCOL}")]
    NoSubprotocol,
    /// The peer sent a text message (this end closed with 1003).
    #[error("the peer sent a text message (closed with 1003)")]
    TextMessage,
    /// The peer sent a message over the limit (this end closed with 1009
    /// before buffering it).
    #[error("the peer sent a message over {limit} bytes (closed with 1009)")]
    MessageTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The peer closed the connection with this close code (neither 1000
    /// nor 1001): 1003 for a text message, 1009 for a message too large.
    #[error("the peer closed the WebSocket with code {code}")]
    Closed {
        /// The close code.
        code: u16,
    },
}

impl WebSocketError {
    /// The WebSocket failure inside `error`, if that is why it failed.
    pub fn find(error: &io::Error) -> Option<&WebSocketError> {
        error.get_ref()?.downcast_ref::<WebSocketError>()
    }

    fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

/// A tungstenite error as an I/O error, typed where the caller may care.
fn ws_io_error(error: tungstenite::Error) -> io::Error {
    use tungstenite::error::{ProtocolError, SubProtocolError};
    match error {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::Http(response) => WebSocketError::Refused {
            status: response.status().as_u16(),
        }
        .into_io(),
        tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::NoSubProtocol | SubProtocolError::InvalidSubProtocol,
        )) => WebSocketError::NoSubprotocol.into_io(),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// The WebSocket configuration for messages of at most `max_message` bytes.
fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// The stream under a WebSocket: byte stream `T`, with the request head the
/// listener read replayed in front (nothing on a client).
type WsStream<T> = WebSocketStream<Replayed<Joined<T>>>;

type Shared<T> = Arc<Mutex<WsStream<T>>>;

fn lock<T: ByteStream>(shared: &Shared<T>) -> MutexGuard<'_, WsStream<T>> {
    // A panic while holding it cannot leave the stream half-updated in a way
    // that matters more than the connection: keep going.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `stream` is TLS (it has a TLS exporter value).
fn is_tls(stream: &impl ByteStream) -> bool {
    matches!(stream.channel_binding(), ChannelBinding::TlsExporter(_))
}

/// A WebSocket connection over byte stream `T`: one packet per binary
/// message.
pub struct WsTransport<T: ByteStream> {
    shared: Shared<T>,
    max_message: usize,
    /// Over TLS (wss).
    over_tls: bool,
}

impl<T: ByteStream> std::fmt::Debug for WsTransport<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport")
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

impl<T: ByteStream> WsTransport<T> {
    fn new(stream: WsStream<T>, max_message: usize, over_tls: bool) -> Self {
        Self {
            shared: Arc::new(Mutex::new(stream)),
            max_message,
            over_tls,
        }
    }
}

impl<T: ByteStream> Transport for WsTransport<T> {
    type Reader = WsReader<T>;
    type Writer = WsWriter<T>;

    fn split(self) -> (WsReader<T>, WsWriter<T>) {
        (
            WsReader {
                shared: Arc::clone(&self.shared),
                max_message: self.max_message,
                failing: None,
            },
            WsWriter {
                shared: self.shared,
            },
        )
    }

    /// Messages, and binding type `none`: a browser cannot read the TLS
    /// exporter, so a WebSocket login is never bound to a TLS session.
    fn link(&self) -> Link {
        Link::messages(ChannelBinding::None)
    }

    fn kind(&self) -> TransportKind {
        if self.over_tls {
            TransportKind::Wss
        } else {
            TransportKind::Ws
        }
    }
}

/// The reading half of a [`WsTransport`]: one packet per binary message.
pub struct WsReader<T: ByteStream> {
    shared: Shared<T>,
    max_message: usize,
    /// A violation being answered: the close frame still to send (`None`
    /// once sent) and the error to report after it.
    failing: Option<(Option<CloseFrame>, WebSocketError)>,
}

impl<T: ByteStream> std::fmt::Debug for WsReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsReader")
            .field("failing", &self.failing)
            .finish_non_exhaustive()
    }
}

impl<T: ByteStream> WsReader<T> {
    /// Closes with `code` because of `error`, reported once the close frame
    /// is out.
    fn fail(&mut self, code: CloseCode, error: WebSocketError) {
        let reason = error.to_string();
        self.failing = Some((
            Some(CloseFrame {
                code,
                reason: reason.into(),
            }),
            error,
        ));
    }

    /// Sends the close frame of the violation being answered.
    fn poll_send_close(&mut self, cx: &mut Context<'_>) -> Poll<WebSocketError> {
        let Some((frame, error)) = &mut self.failing else {
            unreachable!("only called while failing");
        };
        let mut ws = lock(&self.shared);
        if frame.is_some() {
            if let Err(e) = ready!(Pin::new(&mut *ws).poll_ready(cx)) {
                tracing::debug!("cannot close the WebSocket: {e}");
                return Poll::Ready(error.clone());
            }
            let close = Message::Close(frame.take());
            if let Err(e) = Pin::new(&mut *ws).start_send(close) {
                tracing::debug!("cannot close the WebSocket: {e}");
                return Poll::Ready(error.clone());
            }
        }
        if let Err(e) = ready!(Pin::new(&mut *ws).poll_flush(cx)) {
            tracing::debug!("cannot close the WebSocket: {e}");
        }
        Poll::Ready(error.clone())
    }
}

impl<T: ByteStream> ReadHalf for WsReader<T> {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>> {
        loop {
            if self.failing.is_some() {
                return self.poll_send_close(cx).map(|e| Err(e.into_io()));
            }
            let next = ready!(Pin::new(&mut *lock(&self.shared)).poll_next(cx));
            match next {
                None => return Poll::Ready(Ok(None)),
                Some(Ok(Message::Binary(packet))) => return Poll::Ready(Ok(Some(packet.into()))),
                Some(Ok(Message::Text(_))) => {
                    self.fail(CloseCode::Unsupported, WebSocketError::TextMessage);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Poll::Ready(match frame.map(|f| f.code) {
                        None | Some(CloseCode::Normal | CloseCode::Away) => Ok(None),
                        Some(code) => Err(WebSocketError::Closed { code: code.into() }.into_io()),
                    });
                }
                // Pings are answered by tungstenite; pongs and raw frames
                // carry nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(tungstenite::Error::Capacity(_))) => {
                    let limit = self.max_message;
                    self.fail(CloseCode::Size, WebSocketError::MessageTooLarge { limit });
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_io_error(e))),
            }
        }
    }
}

/// The writing half of a [`WsTransport`]: one binary message per packet, a
/// batch flushed at once.
pub struct WsWriter<T: ByteStream> {
    shared: Shared<T>,
}

impl<T: ByteStream> std::fmt::Debug for WsWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsWriter").finish_non_exhaustive()
    }
}

impl<T: ByteStream> WriteHalf for WsWriter<T> {
    async fn write_batch(&mut self, batch: &[Vec<u8>]) -> io::Result<()> {
        for packet in batch {
            poll_fn(|cx| Pin::new(&mut *lock(&self.shared)).poll_ready(cx))
                .await
                .map_err(ws_io_error)?;
            Pin::new(&mut *lock(&self.shared))
                .start_send(Message::binary(packet.clone()))
                .map_err(ws_io_error)?;
        }
        poll_fn(|cx| Pin::new(&mut *lock(&self.shared)).poll_flush(cx))
            .await
            .map_err(ws_io_error)
    }

    /// Closes with code 1000 (the end of the session) and flushes.
    async fn close(&mut self) -> io::Result<()> {
        poll_fn(|cx| Pin::new(&mut *lock(&self.shared)).poll_ready(cx))
            .await
            .map_err(ws_io_error)?;
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        Pin::new(&mut *lock(&self.shared))
            .start_send(Message::Close(Some(normal)))
            .map_err(ws_io_error)?;
        poll_fn(|cx| Pin::new(&mut *lock(&self.shared)).poll_close(cx))
            .await
            .map_err(ws_io_error)
    }
}

/// Which browser pages may open WebSocket connections, by their `Origin`
/// header. A request without one (not from a browser) is always let in:
/// login is by signature, the Origin check is a second line against pages
/// that would use a visitor's browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (the default).
    #[default]
    Any,
    /// Only these (compared as ASCII, case-insensitively, e.g.
    /// `https://chat.example.org`).
    Only(Vec<String>),
}

impl AllowedOrigins {
    fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        match (self, origin) {
            (AllowedOrigins::Any, _) | (AllowedOrigins::Only(_), None) => true,
            (AllowedOrigins::Only(list), Some(origin)) => origin
                .to_str()
                .is_ok_and(|origin| list.iter().any(|o| o.eq_ignore_ascii_case(origin))),
        }
    }
}

/// Whether a `Sec-WebSocket-Protocol` request header lists [`SUBPROTOCOL`].
fn offers_subprotocol(request: &Request) -> bool {
    request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == SUBPROTOCOL)
}

/// An HTTP refusal of a handshake.
fn refusal(status: StatusCode, why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why.to_owned()));
    *response.status_mut() = status;
    response
}

/// The server's answer to a handshake request: refused without the
/// subprotocol (400) or from an Origin not allowed (403); else accepted,
/// echoing the subprotocol.
#[allow(
    clippy::result_large_err,
    reason = "the signature of tungstenite's handshake callback"
)]
fn answer(
    origins: &AllowedOrigins,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if !offers_subprotocol(request) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "the missive.v1 WebSocket subprotocol is required",
        ));
    }
    if !origins.allows(request.headers().get(header::ORIGIN)) {
        return Err(refusal(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

/// Accepts WebSocket connections over the connections of listener `L` (TCP
/// for `ws`, a [`TlsListener`](super::TlsListener) for `wss`): each
/// handshake runs in its own task and is cut at the handshake deadline, as
/// TLS handshakes are. A request that is no WebSocket upgrade is answered
/// over HTTP from its [`StaticSite`], if it has one (else 400), within the
/// same deadline, and the connection closed.
pub struct WsListener<R: Runtime, L: Listener>
where
    L::Transport: ByteStream,
{
    inner: L,
    origins: Arc<AllowedOrigins>,
    site: Option<Arc<StaticSite>>,
    max_message: usize,
    handshakes: Handshakes<R, WsTransport<L::Transport>>,
}

impl<R: Runtime, L: Listener> std::fmt::Debug for WsListener<R, L>
where
    L::Transport: ByteStream,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsListener")
            .field("origins", &self.origins)
            .field("site", &self.site.as_ref().map(|site| site.paths().count()))
            .field("max_message", &self.max_message)
            .field("handshakes", &self.handshakes)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime, L: Listener> WsListener<R, L>
where
    L::Transport: ByteStream,
{
    /// Serves WebSocket over `inner`, with messages of at most
    /// `max_message` bytes (the core's frame limit, `ServerConfig::max_frame`),
    /// any Origin, the default handshake deadline and limit.
    pub fn new(inner: L, max_message: u32) -> Self {
        Self {
            inner,
            origins: Arc::new(AllowedOrigins::Any),
            site: None,
            max_message: max_message as usize,
            handshakes: Handshakes::new("WebSocket"),
        }
    }

    /// Lets in only the browser pages of `origins`.
    pub fn with_allowed_origins(mut self, origins: AllowedOrigins) -> Self {
        self.origins = Arc::new(origins);
        self
    }

    /// Answers HTTP GET and HEAD requests (not WebSocket upgrades) with the
    /// files of `site`: the chat page and its assets.
    pub fn with_site(mut self, site: StaticSite) -> Self {
        self.site = Some(Arc::new(site));
        self
    }

    /// The files served over HTTP, if any.
    pub fn site(&self) -> Option<&StaticSite> {
        self.site.as_deref()
    }

    /// Sets the time a peer gets to finish its handshake (or HTTP
    /// exchange).
    pub fn with_handshake_timeout(mut self, limit: Duration) -> Self {
        self.handshakes.limit = limit;
        self
    }

    /// The listener underneath.
    pub fn inner(&self) -> &L {
        &self.inner
    }
}

impl<R: Runtime, L: Listener> Listener for WsListener<R, L>
where
    L::Transport: ByteStream,
{
    type Transport = WsTransport<L::Transport>;

    #[allow(
        clippy::result_large_err,
        reason = "the signature of tungstenite's handshake callback"
    )]
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self::Transport, Option<SocketAddr>)>> {
        let (origins, site, max_message) = (&self.origins, &self.site, self.max_message);
        self.handshakes.poll_accept(&mut self.inner, cx, |stream| {
            let origins = Arc::clone(origins);
            let site = site.clone();
            async move {
                let over_tls = is_tls(&stream);
                let mut stream = Joined::new(stream);
                let (request, read) = match read_request_head(&mut stream).await {
                    Ok(head) => head,
                    Err(error) => {
                        if error.deserves_answer() {
                            Answer::bad_request().send::<R, _>(&mut stream).await?;
                        }
                        return Err(error.into());
                    }
                };
                if !request.upgrade {
                    let answer = Answer::to(site.as_deref(), &request);
                    tracing::debug!(
                        method = %request.method,
                        target = %request.target,
                        status = answer.status.code(),
                        "HTTP request answered"
                    );
                    answer.send::<R, _>(&mut stream).await?;
                    return Ok(None);
                }
                let ws = async_tungstenite::accept_hdr_async_with_config(
                    Replayed::new(read, stream),
                    |request: &Request, response: Response| answer(&origins, request, response),
                    Some(ws_config(max_message)),
                )
                .await
                .map_err(ws_io_error)?;
                Ok(Some(WsTransport::new(ws, max_message, over_tls)))
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Opens WebSocket connections over the byte streams of connector `C`:
/// `ws://ADDR/` over TCP, `wss://ADDR/` over TLS (give it a
/// [`TlsConnector`](super::TlsConnector) made with
/// [`websocket_client_config`](super::websocket_client_config)).
pub struct WsConnector<R: Runtime, C: Connector>
where
    C::Transport: ByteStream,
{
    inner: Arc<C>,
    scheme: &'static str,
    origin: Option<String>,
    max_message: usize,
    handshake_timeout: Duration,
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime, C: Connector> std::fmt::Debug for WsConnector<R, C>
where
    C::Transport: ByteStream,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConnector")
            .field("scheme", &self.scheme)
            .field("origin", &self.origin)
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> WsConnector<R, super::TcpConnector<R>> {
    /// `ws://`: WebSocket over plain TCP.
    pub fn plain() -> Self {
        Self::over(super::TcpConnector::default(), "ws")
    }
}

impl<R: Runtime> WsConnector<R, super::TlsConnector<R>> {
    /// `wss://`: WebSocket over TLS, trusting what `config` trusts (its
    /// ALPN becomes `http/1.1`).
    pub fn tls(config: &rustls::ClientConfig) -> Self {
        let tls = super::TlsConnector::new(super::websocket_client_config(config));
        Self::over(tls, "wss")
    }
}

impl<R: Runtime, C: Connector> WsConnector<R, C>
where
    C::Transport: ByteStream,
{
    /// WebSocket over the streams of `inner`, naming `scheme` (`ws` or
    /// `wss`) in the request.
    fn over(inner: C, scheme: &'static str) -> Self {
        Self {
            inner: Arc::new(inner),
            scheme,
            origin: None,
            max_message: CLIENT_MAX_MESSAGE,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            runtime: PhantomData,
        }
    }

    /// Sends `origin` as the `Origin` header, as a browser page would.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Sets the largest message accepted from the server (default
    /// [`CLIENT_MAX_MESSAGE`]).
    pub fn with_max_message_size(mut self, max_message: u32) -> Self {
        self.max_message = max_message as usize;
        self
    }

    /// The handshake request for `addr`.
    fn request(&self, addr: &str) -> io::Result<Request> {
        use tungstenite::client::IntoClientRequest;
        let invalid = |e| io::Error::new(io::ErrorKind::InvalidInput, e);
        let mut request = format!("{}://{addr}/", self.scheme)
            .into_client_request()
            .map_err(invalid)?;
        let headers = request.headers_mut();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        if let Some(origin) = &self.origin {
            let origin = HeaderValue::from_str(origin)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            headers.insert(header::ORIGIN, origin);
        }
        Ok(request)
    }
}

impl<R: Runtime, C: Connector> Connector for WsConnector<R, C>
where
    C::Transport: ByteStream,
{
    type Transport = WsTransport<C::Transport>;

    fn connect(&self, addr: &str) -> Connecting<Self::Transport> {
        let request = self.request(addr);
        let stream = self.inner.connect(addr);
        let (limit, max_message) = (self.handshake_timeout, self.max_message);
        Box::pin(async move {
            let request = request?;
            let stream = stream.await?;
            let over_tls = is_tls(&stream);
            let handshake = async_tungstenite::client_async_with_config(
                request,
                Replayed::none(Joined::new(stream)),
                Some(ws_config(max_message)),
            );
            let (ws, _response) = timeout::<R, _>(limit, handshake)
                .await
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::TimedOut, "WebSocket handshake timed out")
                })?
                .map_err(ws_io_error)?;
            Ok(WsTransport::new(ws, max_message, over_tls))
        })
    }
}

/// A server address given as a WebSocket URL: `ws://HOST:PORT[/]` or
/// `wss://HOST:PORT[/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsAddress {
    /// `wss` (over TLS) or not.
    pub tls: bool,
    /// `HOST:PORT`.
    pub addr: String,
}

impl WsAddress {
    /// Reads `url`; `None` if it is no `ws://` or `wss://` URL with a
    /// `HOST:PORT` and no other path than `/`.
    pub fn parse(url: &str) -> Option<Self> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else {
            (false, url.strip_prefix("ws://")?)
        };
        let addr = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = addr.rsplit_once(':')?;
        if host.is_empty() || addr.contains('/') || port.parse::<u16>().is_err() {
            return None;
        }
        Some(Self {
            tls,
            addr: addr.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(protocol: Option<&str>, origin: Option<&str>) -> Request {
        let mut builder = Request::builder().uri("/");
        if let Some(p) = protocol {
            builder = builder.header(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        if let Some(o) = origin {
            builder = builder.header(header::ORIGIN, o);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_subprotocol_is_required_and_echoed() {
        let any = AllowedOrigins::Any;
        let refused = answer(&any, &request(None, None), Response::default()).unwrap_err();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let refused = answer(
            &any,
            &request(Some("chat, missive.v2"), None),
            Response::default(),
        )
        .unwrap_err();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let accepted = answer(
            &any,
            &request(Some("chat, missive.v1"), None),
            Response::default(),
        )
        .unwrap();
        assert_eq!(
            accepted
                .headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .unwrap(),
            SUBPROTOCOL
        );
    }

    #[test]
    fn origins_are_checked_only_when_listed_and_sent() {
        let only = AllowedOrigins::Only(vec!["https://chat.example.org".into()]);
        // The refusal's status, if refused.
        let refused = |origin| {
            answer(
                &only,
                &request(Some(SUBPROTOCOL), origin),
                Response::default(),
            )
            .err()
            .map(|refusal| refusal.status())
        };
        assert_eq!(refused(Some("https://CHAT.example.org")), None);
        assert_eq!(refused(None), None, "no Origin: not a browser");
        assert_eq!(
            refused(Some("https://evil.example")),
            Some(StatusCode::FORBIDDEN)
        );
        let any = AllowedOrigins::Any;
        assert!(
            answer(
                &any,
                &request(Some(SUBPROTOCOL), Some("https://evil.example")),
                Response::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn websocket_addresses() {
        assert_eq!(
            WsAddress::parse("wss://chat.example.org:443/"),
            Some(WsAddress {
                tls: true,
                addr: "chat.example.org:443".into()
            })
        );
        assert_eq!(
            WsAddress::parse("ws://127.0.0.1:7879"),
            Some(WsAddress {
                tls: false,
                addr: "127.0.0.1:7879".into()
            })
        );
        assert_eq!(
            WsAddress::parse("ws://[::1]:7879/"),
            Some(WsAddress {
                tls: false,
                addr: "[::1]:7879".into()
            })
        );
        assert_eq!(WsAddress::parse("127.0.0.1:7879"), None);
        assert_eq!(WsAddress::parse("ws://host/"), None);
        assert_eq!(WsAddress::parse("ws://host:1/chat"), None);
    }

    #[test]
    fn typed_errors_survive_the_io_error() {
        let e = WebSocketError::MessageTooLarge { limit: 7 }.into_io();
        assert_eq!(
            WebSocketError::find(&e),
            Some(&WebSocketError::MessageTooLarge { limit: 7 })
        );
        assert_eq!(WebSocketError::find(&io::ErrorKind::Other.into()), None);
    }
}
