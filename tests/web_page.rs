//! The chat page on the WebSocket listener, on real loopback sockets
//! (async-std driver, and tokio for the page and an upgrade; blocking std
//! clients): GET and HEAD of the site's files with their content types and
//! the security headers, 404, 405, 400 for an oversize head or without a
//! site, a head that never ends cut at the handshake deadline; and the
//! protocol on the same port: a WebSocket login whose upgrade request
//! arrives in many TCP segments, and the page and a login over wss.

mod support;

use async_tungstenite::tungstenite::{self, Message};
use missive::core::client::{Client, ClientConfig, ClientEvent, ClientInput, ClientOutput};
use missive::core::crypto::ChannelBinding;
use missive::core::server::ServerConfig;
use missive::core::wire::Link;
use missive::store::MemoryStore;
use missive_async_std::AsyncStd;
use missive_runtime::driver::Runtime;
use missive_runtime::driver::rustls::pki_types::ServerName;
use missive_runtime::driver::{
    BoundServer, CONTENT_SECURITY_POLICY, ClientHandle, SUBPROTOCOL, StaticSite, TlsListener,
    WsConnector, WsListener, listen_tcp, rustls, websocket_client_config, websocket_server_config,
};
use missive_runtime::serve::{ServeError, ServeReport, ServerHandle};
use missive_tokio::Tokio;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::{T, identities, opts, tls, user};

static INDEX: &[u8] =
    b"<!doctype html><title>Missive</title><script type=module src=app.js></script>";
static APP: &[u8] = b"import init from './pkg/missive_web.js';";
/// Not valid WebAssembly: the bytes must come back exactly, whatever they are.
static WASM: &[u8] = b"\0asm\x01\0\0\0\xff\xfe\r\n\r\n\0";

fn site() -> StaticSite {
    StaticSite::new([
        ("/index.html", INDEX),
        ("/app.js", APP),
        ("/pkg/missive_web_bg.wasm", WASM),
    ])
}

/// A server serving.
type Serving = Pin<Box<dyn Future<Output = Result<ServeReport, ServeError>> + Send>>;

/// A server on runtime `R` whose only listener is WebSocket (`wss` with
/// `tls`) serving `site`, with handshake deadline `deadline`, its serving
/// future handed to `spawn`; its address and handle.
async fn page_server_on<R: Runtime>(
    site: Option<StaticSite>,
    tls: bool,
    deadline: Duration,
    spawn: impl FnOnce(Serving),
) -> (SocketAddr, ServerHandle) {
    let config = ServerConfig::default();
    let max_frame = config.max_frame;
    let tcp = listen_tcp::<R>("127.0.0.1:0").await.unwrap();
    let store = Box::new(MemoryStore::new());
    macro_rules! serve {
        ($inner:expr) => {{
            let mut ws =
                WsListener::<R, _>::new($inner, max_frame).with_handshake_timeout(deadline);
            if let Some(site) = site {
                ws = ws.with_site(site);
            }
            let server = BoundServer::<R, _>::with_listener(ws, config, store, Default::default())
                .await
                .unwrap();
            let (addr, handle) = (server.local_addr(), server.handle());
            spawn(Box::pin(server.serve()));
            (addr, handle)
        }};
    }
    if tls {
        let server_config = websocket_server_config(&support::tls().0);
        serve!(TlsListener::<R, _>::new(tcp, server_config))
    } else {
        serve!(tcp)
    }
}

/// [`page_server_on`] async-std.
fn page_server(
    site: Option<StaticSite>,
    tls: bool,
    deadline: Duration,
) -> (SocketAddr, ServerHandle) {
    async_std::task::block_on(page_server_on::<AsyncStd>(site, tls, deadline, |serving| {
        async_std::task::spawn(serving);
    }))
}

/// [`page_server_on`] tokio (the runtime of `missive-server`).
fn tokio_page_server(site: StaticSite) -> (SocketAddr, ServerHandle) {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    rt.block_on(page_server_on::<Tokio>(Some(site), false, T, |serving| {
        rt.spawn(serving);
    }))
}

/// An HTTP answer, read to the end of the connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn parse(bytes: &[u8]) -> Self {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no answer head in {:?}", String::from_utf8_lossy(bytes)));
        let head = std::str::from_utf8(&bytes[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").unwrap();
                (name.to_ascii_lowercase(), value.to_owned())
            })
            .collect();
        Self {
            status,
            headers,
            body: bytes[end + 4..].to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an answer from `stream` as a browser does: the head, then
/// `Content-Length` bytes of body (none after HEAD), or up to the end of the
/// connection.
fn read_answer(stream: &mut impl Read, head_only: bool) -> Answer {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let answer = Answer::parse(&bytes[..end + 4]);
            let length: usize = answer
                .header("content-length")
                .expect("a Content-Length")
                .parse()
                .unwrap();
            if head_only || bytes.len() >= end + 4 + length {
                return Answer::parse(&bytes);
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return Answer::parse(&bytes),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            // A TLS connection may end without close_notify being read.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Answer::parse(&bytes),
            Err(e) => panic!("reading the answer: {e} (after {} bytes)", bytes.len()),
        }
    }
}

/// Sends `request` (a whole request, head and body) over plain TCP and
/// reads the answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    tcp.write_all(request).unwrap();
    read_answer(&mut tcp, request.starts_with(b"HEAD "))
}

fn get(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
    exchange(addr, request.as_bytes())
}

/// A TLS connection to `addr` as a browser opens one for a `wss`/`https`
/// page (ALPN `http/1.1`).
fn tls_connect(addr: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let config = websocket_client_config(&tls().1);
    let conn = rustls::ClientConnection::new(config, ServerName::from(addr.ip())).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn get_serves_the_page_and_its_files_with_the_security_headers() {
    let (addr, handle) = page_server(Some(site()), false, T);
    for path in ["/", "/index.html", "/?from=bookmark"] {
        let page = get(addr, "GET", path);
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.body, INDEX, "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(
            page.header("content-length"),
            Some(INDEX.len().to_string().as_str())
        );
        assert_eq!(
            page.header("content-security-policy"),
            Some(CONTENT_SECURITY_POLICY)
        );
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(page.header("cache-control"), Some("no-cache"));
        assert_eq!(page.header("connection"), Some("close"));
    }
    let script = get(addr, "GET", "/app.js");
    assert_eq!((script.status, script.body.as_slice()), (200, APP));
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let wasm = get(addr, "GET", "/pkg/missive_web_bg.wasm");
    assert_eq!(wasm.status, 200);
    assert_eq!(wasm.header("content-type"), Some("application/wasm"));
    assert_eq!(wasm.body, WASM, "the exact bytes");
    handle.shutdown();
}

#[test]
fn head_gives_the_headers_without_the_body() {
    let (addr, handle) = page_server(Some(site()), false, T);
    let head = get(addr, "HEAD", "/pkg/missive_web_bg.wasm");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/wasm"));
    assert_eq!(
        head.header("content-length"),
        Some(WASM.len().to_string().as_str())
    );
    assert!(head.body.is_empty(), "a body after HEAD: {:?}", head.body);

    // One request per connection: the server ends it after the answer.
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    tcp.write_all(format!("HEAD / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_answer(&mut tcp, true).status, 200);
    let mut rest = Vec::new();
    let started = Instant::now();
    tcp.read_to_end(&mut rest).expect("the server closes");
    assert!(rest.is_empty(), "more after the answer: {rest:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed late");
    handle.shutdown();
}

#[test]
fn unknown_paths_are_404_and_other_methods_405() {
    let (addr, handle) = page_server(Some(site()), false, T);
    for path in ["/missing.js", "/pkg/", "/../index.html", "/index.html/"] {
        let missing = get(addr, "GET", path);
        assert_eq!(missing.status, 404, "{path}");
        assert_eq!(
            missing.header("content-security-policy"),
            Some(CONTENT_SECURITY_POLICY)
        );
    }
    // With a body the server does not read: the answer still arrives.
    let body = "x".repeat(20_000);
    let post = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let refused = exchange(addr, post.as_bytes());
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("allow"), Some("GET, HEAD"));
    assert_eq!(get(addr, "DELETE", "/index.html").status, 405);
    handle.shutdown();
}

#[test]
fn an_oversize_or_malformed_head_is_400() {
    let (addr, handle) = page_server(Some(site()), false, T);
    let mut long = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n");
    while long.len() <= 8 * 1024 {
        long.push_str(&format!("X-Filler: {}\r\n", "a".repeat(100)));
    }
    long.push_str("\r\n");
    assert_eq!(exchange(addr, long.as_bytes()).status, 400);
    assert_eq!(
        exchange(addr, b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n").status,
        400
    );
    handle.shutdown();
}

#[test]
fn without_a_site_a_request_that_is_no_upgrade_is_400() {
    let (addr, handle) = page_server(None, false, T);
    let refused = get(addr, "GET", "/");
    assert_eq!(refused.status, 400);
    assert!(
        String::from_utf8_lossy(&refused.body).contains(SUBPROTOCOL),
        "{:?}",
        refused.body
    );
    handle.shutdown();
}

#[test]
fn a_head_that_never_ends_is_cut_at_the_handshake_deadline() {
    let deadline = Duration::from_millis(500);
    let (addr, handle) = page_server(Some(site()), false, deadline);
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let started = Instant::now();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Never: ")
        .unwrap();
    let mut buf = [0u8; 64];
    let ended = match tcp.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    };
    let waited = started.elapsed();
    assert!(ended, "the server answered a head that never ended");
    assert!(
        waited >= deadline - Duration::from_millis(50) && waited < T,
        "closed after {waited:?}"
    );
    handle.shutdown();
}

/// A TCP connection that sends at most a few bytes per write, with a pause
/// after each, while `trickle` is set: every piece is its own segment.
struct Trickle {
    tcp: TcpStream,
    trickle: bool,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.trickle {
            return self.tcp.write(buf);
        }
        let n = self.tcp.write(&buf[..buf.len().min(7)])?;
        std::thread::sleep(Duration::from_millis(3));
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

#[test]
fn a_websocket_upgrade_in_many_segments_logs_in_on_the_page_port() {
    let (addr, handle) = page_server(Some(site()), false, T);
    assert_eq!(get(addr, "GET", "/").status, 200);
    assert!(
        trickle_login(addr, "trickle"),
        "the client closed during login"
    );
    handle.shutdown();
}

#[test]
fn on_tokio_the_page_and_an_upgrade_share_the_port() {
    let (addr, handle) = tokio_page_server(site());
    let page = get(addr, "GET", "/pkg/missive_web_bg.wasm");
    assert_eq!(page.status, 200);
    assert_eq!(page.body, WASM);
    assert_eq!(
        get(addr, "HEAD", "/").header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(get(addr, "GET", "/nowhere").status, 404);
    assert!(
        trickle_login(addr, "tokio"),
        "the client closed during login"
    );
    handle.shutdown();
}

/// Opens a WebSocket to `addr` whose upgrade request goes out in pieces of
/// a few bytes, each its own TCP segment, then logs `name` in (registering
/// it) with the core client over it; whether it logged in.
fn trickle_login(addr: SocketAddr, name: &str) -> bool {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let stream = Trickle { tcp, trickle: true };
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tungstenite::http::HeaderValue::from_static(SUBPROTOCOL),
    );
    request.headers_mut().insert(
        "Origin",
        tungstenite::http::HeaderValue::from_str(&format!("http://{addr}")).unwrap(),
    );
    let (mut ws, response) = tungstenite::client(request, stream).expect("upgraded");
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        SUBPROTOCOL
    );
    ws.get_mut().trickle = false;

    // The core client logs in (registering) over it, one packet per message.
    let mut client = Client::new(
        ClientConfig::new(user(name)),
        identities()[0].clone(),
        Default::default(),
        [3; 32],
        Instant::now(),
        1_760_000_000_000,
    );
    client.handle_input(
        Instant::now(),
        ClientInput::Connected(Link::messages(ChannelBinding::None)),
    );
    'login: loop {
        while let Some(output) = client.poll_output() {
            match output {
                ClientOutput::Transmit(bytes) => ws.send(Message::binary(bytes)).unwrap(),
                ClientOutput::Event(ClientEvent::LoggedIn { .. }) => break 'login true,
                ClientOutput::Close => break 'login false,
                _ => {}
            }
        }
        match ws.read().expect("the server answers") {
            Message::Binary(packet) => {
                client.handle_input(Instant::now(), ClientInput::Bytes(&packet))
            }
            Message::Close(frame) => panic!("closed during login: {frame:?}"),
            _ => {}
        }
    }
}

#[test]
fn over_tls_the_page_and_a_login_share_the_port() {
    let (addr, handle) = page_server(Some(site()), true, T);
    let mut stream = tls_connect(addr);
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let page = read_answer(&mut stream, false);
    assert_eq!(page.status, 200);
    assert_eq!(page.body, INDEX);
    assert_eq!(
        page.header("content-security-policy"),
        Some(CONTENT_SECURITY_POLICY)
    );

    async_std::task::block_on(async {
        let home = tempfile::tempdir().unwrap();
        let connector = WsConnector::<AsyncStd, _>::tls(&tls().1);
        let (alice, _events) = ClientHandle::<AsyncStd, _>::connect_with(
            connector,
            opts(addr, home.path(), "alice", 1).client_options(),
        )
        .await
        .expect("a wss login on the page's port");
        alice.close().await.unwrap();
    });
    handle.shutdown();
}
