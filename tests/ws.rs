//! WebSocket refusals and failures, on real loopback sockets (async-std
//! driver; the conformance suite runs every pairing over WebSocket): a
//! handshake without the `missive.v1` subprotocol is refused (400), a
//! disallowed Origin is refused (403) and reaches the client library typed,
//! a text message closes the connection with 1003, an oversize message with
//! 1009 before the server buffers it, a WebSocket login on a server that
//! requires channel binding fails typed, and one server serves TCP and
//! WebSocket at once.

mod support;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::{HeaderValue, header};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{self, Message};
use futures_util::{AsyncWriteExt, StreamExt};
use missive::core::client::ConnectionError;
use missive::core::server::ServerConfig;
use missive::store::MemoryStore;
use missive_async_std::AsyncStd;
use missive_runtime::client::ConnectError;
use missive_runtime::driver::{
    AllowedOrigins, BoundServer, ClientHandle, Listener, SUBPROTOCOL, TlsListener, WebSocketError,
    WsConnector, WsListener, listen_tcp, websocket_server_config,
};
use missive_runtime::serve::ServerHandle;
use std::net::SocketAddr;
use std::time::Duration;
use support::{opts, tls};

/// A WebSocket server (`ws`, or `wss` with `tls`) with `config` and
/// `origins` on a fresh loopback port; its address and handle.
async fn ws_server(
    config: ServerConfig,
    origins: AllowedOrigins,
    tls: bool,
) -> (SocketAddr, ServerHandle) {
    let max_frame = config.max_frame;
    let tcp = listen_tcp::<AsyncStd>("127.0.0.1:0").await.unwrap();
    let store = Box::new(MemoryStore::new());
    let options = Default::default();
    if tls {
        let tls_listener =
            TlsListener::<AsyncStd, _>::new(tcp, websocket_server_config(&support::tls().0));
        let ws =
            WsListener::<AsyncStd, _>::new(tls_listener, max_frame).with_allowed_origins(origins);
        let server = BoundServer::<AsyncStd, _>::with_listener(ws, config, store, options)
            .await
            .unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        async_std::task::spawn(server.serve());
        (addr, handle)
    } else {
        let ws = WsListener::<AsyncStd, _>::new(tcp, max_frame).with_allowed_origins(origins);
        let server = BoundServer::<AsyncStd, _>::with_listener(ws, config, store, options)
            .await
            .unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        async_std::task::spawn(server.serve());
        (addr, handle)
    }
}

/// A raw WebSocket handshake to `addr` offering `protocol` and sending
/// `origin`.
async fn raw_connect(
    addr: SocketAddr,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<WebSocketStream<async_std::net::TcpStream>, tungstenite::Error> {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(p) = protocol {
        request.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(p).unwrap(),
        );
    }
    if let Some(o) = origin {
        request
            .headers_mut()
            .insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
    }
    let tcp = async_std::net::TcpStream::connect(addr).await.unwrap();
    let (ws, response) = async_tungstenite::client_async(request, tcp).await?;
    assert_eq!(
        response
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .unwrap(),
        SUBPROTOCOL,
        "the subprotocol is echoed"
    );
    Ok(ws)
}

/// The close code the server ends `ws` with (within a few seconds).
async fn close_code(ws: &mut WebSocketStream<async_std::net::TcpStream>) -> CloseCode {
    let next = async_std::future::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.expect("a close code").code,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    });
    next.await.expect("the server closes in time")
}

fn http_status(error: tungstenite::Error) -> u16 {
    match error {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[test]
fn a_handshake_without_the_subprotocol_is_refused() {
    async_std::task::block_on(async {
        let (addr, handle) = ws_server(ServerConfig::default(), AllowedOrigins::Any, false).await;
        let refused = raw_connect(addr, None, None).await.expect_err("refused");
        assert_eq!(http_status(refused), 400);
        let refused = raw_connect(addr, Some("missive.v2"), None)
            .await
            .expect_err("refused");
        assert_eq!(http_status(refused), 400);
        raw_connect(addr, Some("chat, missive.v1"), None)
            .await
            .expect("accepted");
        handle.shutdown();
    });
}

#[test]
fn a_disallowed_origin_is_refused_and_the_client_hears_it_typed() {
    async_std::task::block_on(async {
        let origins = AllowedOrigins::Only(vec!["https://chat.example.org".into()]);
        let (addr, handle) = ws_server(ServerConfig::default(), origins, false).await;
        let refused = raw_connect(addr, Some(SUBPROTOCOL), Some("https://evil.example"))
            .await
            .expect_err("refused");
        assert_eq!(http_status(refused), 403);
        raw_connect(addr, Some(SUBPROTOCOL), Some("https://chat.example.org"))
            .await
            .expect("a listed origin is let in");

        let home = tempfile::tempdir().unwrap();
        let options = opts(addr, home.path(), "alice", 0).client_options();
        let connector = WsConnector::<AsyncStd, _>::plain().with_origin("https://evil.example");
        match ClientHandle::<AsyncStd, _>::connect_with(connector, options).await {
            Err(ConnectError::WebSocket(WebSocketError::Refused { status: 403 })) => {}
            Err(e) => panic!("expected a typed 403 refusal, got {e:?}"),
            Ok(_) => panic!("a disallowed origin logged in"),
        }
        handle.shutdown();
    });
}

#[test]
fn a_text_message_closes_with_1003() {
    async_std::task::block_on(async {
        let (addr, handle) = ws_server(ServerConfig::default(), AllowedOrigins::Any, false).await;
        let mut ws = raw_connect(addr, Some(SUBPROTOCOL), None).await.unwrap();
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(close_code(&mut ws).await, CloseCode::Unsupported);
        handle.shutdown();
    });
}

#[test]
fn an_oversize_message_closes_with_1009_before_it_is_buffered() {
    async_std::task::block_on(async {
        let (addr, handle) = ws_server(ServerConfig::default(), AllowedOrigins::Any, false).await;
        let mut ws = raw_connect(addr, Some(SUBPROTOCOL), None).await.unwrap();
        // A masked binary frame announcing 1 GiB, of which nothing follows:
        // the server must refuse it on its header, not wait for (and
        // buffer) its payload.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 30).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        ws.get_mut().write_all(&header).await.unwrap();
        assert_eq!(close_code(&mut ws).await, CloseCode::Size);

        // A message just over the frame limit, in small fragments, too.
        let max_frame = ServerConfig::default().max_frame as usize;
        let mut ws = raw_connect(addr, Some(SUBPROTOCOL), None).await.unwrap();
        ws.send(Message::binary(vec![0u8; max_frame + 1]))
            .await
            .unwrap();
        assert_eq!(close_code(&mut ws).await, CloseCode::Size);
        handle.shutdown();
    });
}

/// A server that closes the WebSocket with 1009 (or 1003) before the login
/// fails the client's connect with that close code, typed.
#[test]
#[allow(
    clippy::result_large_err,
    reason = "the signature of tungstenite's handshake callback"
)]
fn a_close_with_1009_before_the_login_reaches_the_client_typed() {
    async_std::task::block_on(async {
        for code in [CloseCode::Size, CloseCode::Unsupported] {
            let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let server = async_std::task::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let echo =
                    |_: &tungstenite::handshake::server::Request,
                     mut response: tungstenite::handshake::server::Response| {
                        response.headers_mut().insert(
                            header::SEC_WEBSOCKET_PROTOCOL,
                            HeaderValue::from_static(SUBPROTOCOL),
                        );
                        Ok(response)
                    };
                let mut ws = async_tungstenite::accept_hdr_async(tcp, echo)
                    .await
                    .unwrap();
                // The client's Hello, answered with a close.
                let _hello = ws.next().await;
                let frame = tungstenite::protocol::CloseFrame {
                    code,
                    reason: "".into(),
                };
                ws.close(Some(frame)).await.unwrap();
                while ws.next().await.is_some() {}
            });
            let home = tempfile::tempdir().unwrap();
            let options = opts(addr, home.path(), "alice", 0).client_options();
            let connector = WsConnector::<AsyncStd, _>::plain();
            let expected = u16::from(code);
            match ClientHandle::<AsyncStd, _>::connect_with(connector, options).await {
                Err(ConnectError::WebSocket(WebSocketError::Closed { code })) => {
                    assert_eq!(code, expected)
                }
                Err(e) => panic!("expected a typed close {expected}, got {e:?}"),
                Ok(_) => panic!("logged in to a server that closed"),
            }
            server.await;
        }
    });
}

#[test]
fn a_websocket_login_on_a_server_requiring_channel_binding_fails_typed() {
    async_std::task::block_on(async {
        let mut config = ServerConfig::default();
        config.require_channel_binding = true;
        let (addr, handle) = ws_server(config, AllowedOrigins::Any, true).await;
        let home = tempfile::tempdir().unwrap();
        let options = opts(addr, home.path(), "alice", 0).client_options();
        let connector = WsConnector::<AsyncStd, _>::tls(&tls().1);
        match ClientHandle::<AsyncStd, _>::connect_with(connector, options).await {
            Err(ConnectError::ConnectionLost(ConnectionError::UnsupportedVersion)) => {}
            Err(e) => panic!("expected the binding refusal, got {e:?}"),
            Ok(_) => panic!("a WebSocket login passed require_channel_binding"),
        }
        handle.shutdown();
    });
}

#[test]
fn one_server_serves_tcp_and_websocket_at_once() {
    async_std::task::block_on(async {
        let config = ServerConfig::default();
        let tcp = listen_tcp::<AsyncStd>("127.0.0.1:0").await.unwrap();
        let ws_tcp = listen_tcp::<AsyncStd>("127.0.0.1:0").await.unwrap();
        let ws = WsListener::<AsyncStd, _>::new(ws_tcp, config.max_frame);
        let ws_addr = ws.local_addr().unwrap();
        let server = BoundServer::<AsyncStd, _>::with_listener(
            tcp,
            config,
            Box::new(MemoryStore::new()),
            Default::default(),
        )
        .await
        .unwrap()
        .and_listener(ws);
        let (tcp_addr, handle) = (server.local_addr(), server.handle());
        assert_eq!(server.listener().second().local_addr().unwrap(), ws_addr);
        async_std::task::spawn(server.serve());

        let home = tempfile::tempdir().unwrap();
        let (alice, _alice_events) = ClientHandle::<AsyncStd>::connect(
            opts(tcp_addr, home.path(), "alice", 0).client_options(),
        )
        .await
        .unwrap();
        let (bob, mut bob_events) = ClientHandle::<AsyncStd, _>::connect_with(
            WsConnector::<AsyncStd, _>::plain(),
            opts(ws_addr, home.path(), "bob", 1).client_options(),
        )
        .await
        .unwrap();
        let id = alice
            .send(support::user("bob"), "over two transports")
            .await
            .unwrap();
        let received = async_std::future::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(missive::core::client::ClientEvent::MessageReceived {
                    id, body, ..
                }) = bob_events.recv().await
                {
                    return (id, body);
                }
            }
        })
        .await
        .expect("bob receives");
        assert_eq!(received, (id, b"over two transports".to_vec()));
        assert_eq!(
            handle
                .inspect(Box::new(
                    |s: &missive::core::server::Server| s.state().user_count() as u64
                ))
                .await
                .unwrap(),
            2
        );
        alice.close().await.unwrap();
        bob.close().await.unwrap();
        handle.shutdown();
    });
}
