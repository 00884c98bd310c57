//! HTTP on the WebSocket listener (docs/PROTOCOL.md §2.6): the request head
//! of every connection is read here, bounded by [`MAX_REQUEST_HEAD`] (and by
//! the listener's handshake deadline). A WebSocket upgrade goes on to the
//! WebSocket handshake with the bytes already read in front of the stream
//! ([`Replayed`]); any other request is answered from a [`StaticSite`] (the
//! chat page, embedded in the binary), or refused with 400 when none is
//! served. One request per connection: every answer closes it.

use super::runtime::{Runtime, timeout};
use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The longest request head read (request line and headers), in bytes: a
/// longer one is refused with 400.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Most headers in a request head (more: 400).
const MAX_HEADERS: usize = 96;
/// Bytes read at once while looking for the end of the head.
const HEAD_CHUNK: usize = 2048;
/// Most bytes read and thrown away after an answer, so that the peer reads
/// the answer before the connection closes (closing a socket with unread
/// input resets the connection, and the peer may lose the answer).
const MAX_DRAINED: usize = 64 * 1024;
/// Longest wait, after an answer, for the peer to close its end. Where the
/// runtime's close does not shut the socket down for writing (async-io's),
/// a peer that waits for the end of the connection rather than reading
/// `Content-Length` bytes gets it after this.
const LINGER: Duration = Duration::from_secs(1);

/// The `Content-Security-Policy` of every answer: the page's own scripts,
/// styles, worker and WebAssembly, WebSocket to its own origin, nothing else
/// (docs/SECURITY.md explains each directive).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; \
    script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; \
    style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Headers every answer carries besides its content headers.
const COMMON_HEADERS: [(&str, &str); 5] = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
    ("Connection", "close"),
];

/// The methods a site answers.
const ALLOWED_METHODS: &str = "GET, HEAD";

/// The `Content-Type` of a file, from the extension of its `path`
/// (`application/octet-stream` for any other).
pub fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let extension = name.rsplit_once('.').map(|(_, extension)| extension);
    match extension.map(str::to_ascii_lowercase).as_deref() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// One file of a [`StaticSite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteFile {
    /// Its `Content-Type` (from its extension, [`content_type`]).
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The files a WebSocket listener serves over HTTP GET and HEAD, by URL
/// path (`/` is `/index.html`); every other path is 404. The files are
/// looked up in this table only, never on a file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticSite {
    files: BTreeMap<String, SiteFile>,
}

impl StaticSite {
    /// A site of `files`: (URL path such as `/index.html` or
    /// `/pkg/missive_web_bg.wasm`, contents); a path without its leading
    /// `/` gets one. The content type of each comes from its extension.
    pub fn new(files: impl IntoIterator<Item = (&'static str, &'static [u8])>) -> Self {
        let files = files
            .into_iter()
            .map(|(path, body)| {
                let path = format!("/{}", path.trim_start_matches('/'));
                let content_type = content_type(&path);
                (path, SiteFile { content_type, body })
            })
            .collect();
        Self { files }
    }

    /// The file at URL path `path` (without a query): `/` is `/index.html`.
    pub fn file(&self, path: &str) -> Option<SiteFile> {
        let path = if path == "/" { "/index.html" } else { path };
        self.files.get(path).copied()
    }

    /// The URL paths served, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Whether the site has no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// What matters of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// The method (`GET`, `HEAD`, …), as sent.
    pub(crate) method: String,
    /// The request target, as sent (path and query).
    pub(crate) target: String,
    /// Whether it asks for a WebSocket upgrade (`Upgrade: websocket` and
    /// `Connection: upgrade`).
    pub(crate) upgrade: bool,
}

/// Whether header value `value` lists `token` (comma-separated,
/// case-insensitive).
fn lists_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses a request head from the start of `bytes`: `None` while it is
/// incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<RequestHead>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if request.parse(bytes)?.is_partial() {
        return Ok(None);
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Ok(None);
    };
    let has = |name: &str, token: &str| {
        request
            .headers
            .iter()
            .filter(|header| header.name.eq_ignore_ascii_case(name))
            .any(|header| lists_token(header.value, token))
    };
    let upgrade = has("upgrade", "websocket") && has("connection", "upgrade");
    Ok(Some(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        upgrade,
    }))
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RequestHeadError {
    /// The head did not end within [`MAX_REQUEST_HEAD`] bytes (answered
    /// with 400).
    #[error("the HTTP request head is longer than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The head is no HTTP/1.x request head (answered with 400).
    #[error("malformed HTTP request head: {0}")]
    Malformed(#[from] httparse::Error),
    /// The peer closed the connection before the head ended.
    #[error("the connection closed before the end of the HTTP request head")]
    Truncated,
    /// Reading failed.
    #[error("cannot read the HTTP request head: {0}")]
    Io(#[from] io::Error),
}

impl RequestHeadError {
    /// Whether the peer is owed a 400 answer (it sent something that is not
    /// a request head, and is still there to read the answer).
    pub(crate) fn deserves_answer(&self) -> bool {
        matches!(self, Self::TooLarge { .. } | Self::Malformed(_))
    }
}

impl From<RequestHeadError> for io::Error {
    fn from(error: RequestHeadError) -> Self {
        match error {
            RequestHeadError::Io(e) => e,
            RequestHeadError::Truncated => io::Error::new(io::ErrorKind::UnexpectedEof, error),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Reads a request head from `stream`: the head and every byte read (the
/// head, and whatever followed it in the same reads).
pub(crate) async fn read_request_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(RequestHead, Vec<u8>), RequestHeadError> {
    let mut read = Vec::with_capacity(HEAD_CHUNK);
    let mut chunk = [0u8; HEAD_CHUNK];
    loop {
        if let Some(head) = parse_head(&read)? {
            return Ok((head, read));
        }
        let room = MAX_REQUEST_HEAD.saturating_sub(read.len()).min(HEAD_CHUNK);
        if room == 0 {
            return Err(RequestHeadError::TooLarge {
                limit: MAX_REQUEST_HEAD,
            });
        }
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(RequestHeadError::Truncated);
        }
        read.extend_from_slice(&chunk[..n]);
    }
}

/// An HTTP status this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// 200: the file.
    Ok,
    /// 400: no request this listener serves.
    BadRequest,
    /// 404: no such file.
    NotFound,
    /// 405: not GET or HEAD.
    MethodNotAllowed,
    /// 503: not ready (the admin listener's `/readyz`).
    ServiceUnavailable,
}

impl Status {
    /// The status code.
    pub(crate) fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::ServiceUnavailable => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::BadRequest => "Bad Request",
            Self::NotFound => "Not Found",
            Self::MethodNotAllowed => "Method Not Allowed",
            Self::ServiceUnavailable => "Service Unavailable",
        }
    }

    /// The plain-text body of an error status.
    fn explanation(self) -> &'static [u8] {
        match self {
            Self::Ok => b"",
            Self::BadRequest => {
                b"bad request: this address speaks the Missive protocol over \
                WebSocket (subprotocol missive.v1)\n"
            }
            Self::NotFound => b"not found\n",
            Self::MethodNotAllowed => b"method not allowed: only GET and HEAD\n",
            Self::ServiceUnavailable => b"service unavailable\n",
        }
    }
}

/// An HTTP answer: its head and body, to send and then close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Its status.
    pub(crate) status: Status,
    /// The status line and headers, with the blank line that ends them.
    head: Vec<u8>,
    /// The body (empty for HEAD).
    body: Cow<'static, [u8]>,
}

impl Answer {
    /// `status` with a body of `content_type`; the body is left out (its
    /// length stays announced) when `with_body` is false (HEAD).
    pub(crate) fn new(
        status: Status,
        content_type: &str,
        body: impl Into<Cow<'static, [u8]>>,
        with_body: bool,
    ) -> Self {
        let body = body.into();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            status.code(),
            status.reason(),
            body.len()
        );
        if status == Status::MethodNotAllowed {
            head.push_str(&format!("Allow: {ALLOWED_METHODS}\r\n"));
        }
        for (name, value) in COMMON_HEADERS {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        Self {
            status,
            head: head.into_bytes(),
            body: if with_body { body } else { Cow::Borrowed(b"") },
        }
    }

    /// An error `status`, explained in plain text.
    pub(crate) fn error(status: Status, with_body: bool) -> Self {
        let body = status.explanation();
        Self::new(status, content_type(".txt"), body, with_body)
    }

    /// 400 for what is no request head, or no request this listener serves.
    pub(crate) fn bad_request() -> Self {
        Self::error(Status::BadRequest, true)
    }

    /// The answer to `request` (no WebSocket upgrade) from `site`: 400
    /// without a site; 405 for a method other than GET or HEAD; the file
    /// of the path (the query ignored), or 404.
    pub(crate) fn to(site: Option<&StaticSite>, request: &RequestHead) -> Self {
        let with_body = request.method != "HEAD";
        let Some(site) = site else {
            return Self::error(Status::BadRequest, with_body);
        };
        if !matches!(request.method.as_str(), "GET" | "HEAD") {
            return Self::error(Status::MethodNotAllowed, with_body);
        }
        let path = request.target.split(['?', '#']).next().unwrap_or_default();
        match site.file(path) {
            Some(file) => Self::new(Status::Ok, file.content_type, file.body, with_body),
            None => Self::error(Status::NotFound, with_body),
        }
    }

    /// The bytes on the wire.
    #[cfg(test)]
    fn to_bytes(&self) -> Vec<u8> {
        [&self.head[..], &self.body[..]].concat()
    }

    /// Sends the answer on `stream` and ends the output, then reads (and
    /// throws away) what the peer still sends until it closes (or for
    /// [`LINGER`] at most), so that it gets the whole answer.
    pub(crate) async fn send<R: Runtime, S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
    ) -> io::Result<()> {
        stream.write_all(&self.head).await?;
        stream.write_all(&self.body).await?;
        stream.close().await?;
        let drain = async {
            let mut drained = 0;
            let mut buf = [0u8; HEAD_CHUNK];
            while drained < MAX_DRAINED {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        };
        timeout::<R, _>(LINGER, drain).await;
        Ok(())
    }
}

/// A stream whose first bytes, already read from it (a request head), are
/// read again before the rest: the WebSocket handshake sees the stream
/// whole.
#[derive(Debug)]
pub(crate) struct Replayed<S> {
    replay: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Replayed<S> {
    /// `inner`, with `replay` read first.
    pub(crate) fn new(replay: Vec<u8>, inner: S) -> Self {
        Self {
            replay,
            at: 0,
            inner,
        }
    }

    /// `inner`, nothing to read again.
    pub(crate) fn none(inner: S) -> Self {
        Self::new(Vec::new(), inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let left = &this.replay[this.at..];
        if left.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        this.at += n;
        if this.at == this.replay.len() {
            this.replay = Vec::new();
            this.at = 0;
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use futures_util::io::Cursor;
    use proptest::prelude::*;

    static INDEX: &[u8] = b"<!doctype html><title>Missive</title>";
    static WASM: &[u8] = b"\0asm\x01\0\0\0";

    fn site() -> StaticSite {
        StaticSite::new([("/index.html", INDEX), ("pkg/missive_web_bg.wasm", WASM)])
    }

    fn head(method: &str, target: &str) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            upgrade: false,
        }
    }

    /// Reads a head from `bytes` (an in-memory stream is always ready).
    fn read(bytes: &[u8]) -> Result<(RequestHead, Vec<u8>), RequestHeadError> {
        read_request_head(&mut Cursor::new(bytes.to_vec()))
            .now_or_never()
            .expect("an in-memory stream never waits")
    }

    /// The value of header `name` in answer `bytes`.
    fn header<'a>(bytes: &'a [u8], name: &str) -> Option<&'a str> {
        let text = std::str::from_utf8(bytes).unwrap();
        let (head, _) = text.split_once("\r\n\r\n").unwrap();
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    }

    #[test]
    fn content_types_come_from_the_extension() {
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/a/b.MJS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("/pkg/x.wasm"), "application/wasm");
        assert_eq!(content_type("/logo.svg"), "image/svg+xml");
        assert_eq!(content_type("/a.png"), "image/png");
        assert_eq!(content_type("/favicon.ico"), "image/x-icon");
        assert_eq!(content_type("/a.json"), "application/json");
        assert_eq!(content_type("/a.txt"), "text/plain; charset=utf-8");
        assert_eq!(content_type("/a.exe"), "application/octet-stream");
        assert_eq!(content_type("/v1.2/README"), "application/octet-stream");
    }

    #[test]
    fn a_site_maps_paths_and_slash_is_the_index() {
        let site = site();
        assert_eq!(
            site.paths().collect::<Vec<_>>(),
            ["/index.html", "/pkg/missive_web_bg.wasm"]
        );
        assert_eq!(site.file("/").unwrap().body, INDEX);
        assert_eq!(site.file("/index.html").unwrap().body, INDEX);
        let wasm = site.file("/pkg/missive_web_bg.wasm").unwrap();
        assert_eq!((wasm.content_type, wasm.body), ("application/wasm", WASM));
        assert_eq!(site.file("/pkg/../index.html"), None);
        assert_eq!(site.file("index.html"), None);
        assert!(StaticSite::new([]).is_empty());
    }

    #[test]
    fn get_answers_the_file_with_the_security_headers() {
        let answer = Answer::to(Some(&site()), &head("GET", "/?from=bookmark"));
        assert_eq!(answer.status, Status::Ok);
        let bytes = answer.to_bytes();
        assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(bytes.ends_with(INDEX));
        assert_eq!(
            header(&bytes, "content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(
            header(&bytes, "content-length"),
            Some(INDEX.len().to_string().as_str())
        );
        assert_eq!(
            header(&bytes, "content-security-policy"),
            Some(CONTENT_SECURITY_POLICY)
        );
        assert_eq!(header(&bytes, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&bytes, "referrer-policy"), Some("no-referrer"));
        assert_eq!(header(&bytes, "cache-control"), Some("no-cache"));
        assert_eq!(header(&bytes, "connection"), Some("close"));
    }

    #[test]
    fn head_announces_the_length_without_the_body() {
        let answer = Answer::to(Some(&site()), &head("HEAD", "/pkg/missive_web_bg.wasm"));
        let bytes = answer.to_bytes();
        assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(bytes.ends_with(b"\r\n\r\n"), "no body");
        assert_eq!(header(&bytes, "content-type"), Some("application/wasm"));
        assert_eq!(
            header(&bytes, "content-length"),
            Some(WASM.len().to_string().as_str())
        );
    }

    #[test]
    fn unknown_paths_other_methods_and_no_site_are_refused() {
        let site = site();
        let status = |method, target| Answer::to(Some(&site), &head(method, target)).status;
        assert_eq!(status("GET", "/missing.js"), Status::NotFound);
        assert_eq!(status("GET", "http://example.org/"), Status::NotFound);
        assert_eq!(status("POST", "/"), Status::MethodNotAllowed);
        assert_eq!(status("DELETE", "/nowhere"), Status::MethodNotAllowed);
        let refused = Answer::to(Some(&site), &head("PUT", "/")).to_bytes();
        assert!(refused.starts_with(b"HTTP/1.1 405 Method Not Allowed\r\n"));
        assert_eq!(header(&refused, "allow"), Some("GET, HEAD"));
        let no_site = Answer::to(None, &head("GET", "/"));
        assert_eq!(no_site.status, Status::BadRequest);
        assert!(no_site.to_bytes().ends_with(b"(subprotocol missive.v1)\n"));
    }

    #[test]
    fn a_head_is_read_up_to_its_end_and_upgrades_are_told_apart() {
        let get = b"GET /app.js?v=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        let (request, bytes) = read(get).unwrap();
        assert_eq!(request, head("GET", "/app.js?v=1"));
        assert_eq!(bytes, get);
        let upgrade = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n\
            Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert!(read(upgrade).unwrap().0.upgrade);
        let no_connection = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        assert!(!read(no_connection).unwrap().0.upgrade);
        let other_upgrade = b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n";
        assert!(!read(other_upgrade).unwrap().0.upgrade);
    }

    #[test]
    fn oversize_malformed_and_truncated_heads_fail_typed() {
        let mut long = b"GET / HTTP/1.1\r\n".to_vec();
        while long.len() <= MAX_REQUEST_HEAD {
            long.extend_from_slice(format!("X-Filler: {}\r\n", "a".repeat(200)).as_bytes());
        }
        let too_large = read(&long).unwrap_err();
        assert!(
            matches!(too_large, RequestHeadError::TooLarge { limit } if limit == MAX_REQUEST_HEAD),
            "{too_large:?}"
        );
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(
            read(many.as_bytes()).unwrap_err(),
            RequestHeadError::Malformed(httparse::Error::TooManyHeaders)
        ));
        assert!(too_large.deserves_answer());
        let malformed = read(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").unwrap_err();
        assert!(matches!(malformed, RequestHeadError::Malformed(_)));
        assert!(malformed.deserves_answer());
        let truncated = read(b"GET / HTTP/1.1\r\nHost").unwrap_err();
        assert!(matches!(truncated, RequestHeadError::Truncated));
        assert!(!truncated.deserves_answer());
    }

    #[test]
    fn a_replayed_stream_reads_its_prefix_then_the_rest() {
        let mut stream = Replayed::new(b"GET ".to_vec(), Cursor::new(b"/ HTTP/1.1".to_vec()));
        let mut all = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = stream.read(&mut buf).now_or_never().unwrap().unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        assert_eq!(all, b"GET / HTTP/1.1");
    }

    proptest! {
        /// Whatever the bytes, reading a head ends (in a head or a typed
        /// error) without panicking, and never reads more than the limit.
        #[test]
        fn reading_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..10_000)) {
            if let Ok((_, read)) = read(&bytes) {
                prop_assert!(read.len() <= MAX_REQUEST_HEAD);
            }
        }

        /// A head split anywhere is read the same as whole, with every byte
        /// replayed.
        #[test]
        fn a_head_reads_the_same_in_pieces(cut in 0usize..60) {
            let whole = b"GET /style.css HTTP/1.1\r\nHost: 127.0.0.1:1\r\nAccept: */*\r\n\r\n";
            let cut = cut.min(whole.len());
            let mut pieces = Cursor::new(whole[..cut].to_vec()).chain(Cursor::new(whole[cut..].to_vec()));
            let (request, bytes) = read_request_head(&mut pieces)
                .now_or_never()
                .unwrap()
                .unwrap();
            prop_assert_eq!(request, head("GET", "/style.css"));
            prop_assert_eq!(bytes, whole.to_vec());
        }
    }
}
