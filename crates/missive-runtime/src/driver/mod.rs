//! The connection driver, written once for every runtime: the TCP (or any
//! [`Transport`]) server [`BoundServer`] and the client [`ClientHandle`],
//! generic over a small [`Runtime`] trait (spawn, spawn a blocking job, a
//! resettable timer, TCP listen and connect, the clock).
//!
//! A runtime adapter (`missive-tokio`, `missive-async-std`) implements
//! [`Runtime`] for a zero-sized type and names the two types:
//!
//! ```text
//! pub type BoundServer = missive_runtime::driver::BoundServer<Tokio>;
//! pub type ClientHandle = missive_runtime::driver::ClientHandle<Tokio>;
//! ```
//!
//! so the same API on every runtime holds by construction. The bytes go
//! through the `futures-io` traits: a [`Listener`] accepts [`Transport`]s
//! for the server, a [`Connector`] opens one for the client; TCP is the
//! runtime's, and another transport (TLS, WebSocket) plugs in with
//! [`BoundServer::with_listener`] and [`ClientHandle::connect_with`]; one
//! server serves two listeners (say TLS and WebSocket) with
//! [`BoundServer::and_listener`].

mod admin;
mod client;
mod handshake;
mod http;
mod runtime;
mod server;
mod tls;
mod transport;
mod trust;
mod ws;

pub use admin::{ADMIN_TIMEOUT, AdminListener, MAX_ADMIN_CONNECTIONS};
pub use client::ClientHandle;
pub use handshake::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};
pub use http::{CONTENT_SECURITY_POLICY, MAX_REQUEST_HEAD, SiteFile, StaticSite, content_type};
pub use runtime::{Runtime, Task, TaskFailed, sleep, timeout};
/// The TLS library, for its configuration types.
pub use rustls;
pub use server::{BoundServer, listen_tcp};
pub use tls::{
    ALPN, CHANNEL_BINDING_LABEL, CertifiedKey, ExporterValue, HTTP_1_1_ALPN, Joined, TlsConnector,
    TlsListener, TlsTransport, certificate_fingerprint, client_config, self_signed, server_config,
    web_pki_roots, websocket_client_config, websocket_server_config,
};
pub use transport::{
    Both, ByteStream, Connecting, Connector, Either, Listener, ReadHalf, StreamReader,
    StreamWriter, TcpConnector, Transport, WriteHalf,
};
pub use trust::{
    CertificateChanged, CertificateFileError, KnownServers, certificate_refused, load_certificate,
    load_certificate_authorities, load_or_create_self_signed, pinning_client_config,
};
pub use ws::{
    AllowedOrigins, CLIENT_MAX_MESSAGE, SUBPROTOCOL, WebSocketError, WsAddress, WsConnector,
    WsListener, WsReader, WsTransport, WsWriter,
};
