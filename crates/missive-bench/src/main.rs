//! `missive-bench`: end-to-end load generator for a running `missive-server`.
//!
//! Same scenarios, flags and JSON fields as the peer harness
//! (`/work/shared/peer-bench`: mosquitto and a raw relay), so the numbers sit
//! side by side. One JSON line per run on standard output.
//!
//! By default the clients do no per-message crypto, so the bench measures the
//! server and not the clients' RSA: every user logs in once with a real RSA-PSS
//! signature (register, then login), then senders pump `send` frames whose
//! envelope is opaque bytes of `--payload` length (the server never parses
//! envelopes), keeping at most `--window` sends unanswered (`accepted` or
//! refused with an `error`), and every receiver acks every `message` (and
//! senders every `delivered` notice). Refusals are counted by reason
//! (`refused`); receivers wait only for the messages their sender got
//! `accepted` for, and `lost` counts those that never arrived. The first 20 envelope bytes carry send time, sequence number and
//! sender, so latency is `send` written → `message` read. `--real-crypto`
//! seals every message with the core's `seal` and opens it with `open`.
//!
//! Scenarios:
//! * `online`: pairs of sender/receiver, both logged in; closed loop
//!   (`--rate 0`) or a fixed aggregate rate.
//! * `offline-drain`: receivers registered but offline; senders enqueue
//!   everything (what the queue limits let in is `accepted`, the rest
//!   refused), then receivers log in and drain.
//! * `idle-conns`: `--conns` users registered (phase 1, not counted), then
//!   that many connections logged in and idle; server RSS per connection.
//!
//! Transports (docs/PROTOCOL.md §3): plain TCP by default (a server started
//! with `--plaintext`); `--tls` is TLS 1.3 with ALPN `missive/1` through the
//! driver's own connector, the server trusted by `--ca` (for a self-signed
//! server, its `DATA/tls/cert.pem`), and every login signs the v2 transcript
//! bound to the connection's TLS exporter value; `--ws` is a WebSocket
//! (subprotocol `missive.v1`, one packet per binary message, binding type
//! `none`), over TLS (wss) with `--tls`.

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use clap::{Parser, ValueEnum};
use futures_util::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, SinkExt, StreamExt,
};
use missive_core::crypto::{
    AuthContext, AuthTranscript, ChannelBinding, ENVELOPE_VERSION, EnvelopeHeader, Identity,
    TranscriptVersion, open, seal,
};
use missive_core::rng::{CoreRng, bytes, derive, from_seed};
use missive_core::wire::ErrorCode;
use missive_core::wire::{
    ClientPacket, DEFAULT_MAX_FRAME, FrameDecoder, Notice, PROTOCOL_VERSION, ServerPacket,
    decode_packet, encode_frame_into, encode_packet_into,
};
use missive_core::{MessageId, UserName};
use missive_runtime::driver::{
    ByteStream, Connector, Joined, SUBPROTOCOL, TcpConnector, TlsConnector, client_config,
    load_certificate_authorities, web_pki_roots, websocket_client_config,
};
use missive_tokio::Tokio;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout_at;

type Res<T> = Result<T, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Online,
    OfflineDrain,
    IdleConns,
}

/// Where a cluster benchmark's receivers are served (`--pairing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pairing {
    /// By the sender's node: no forward between nodes.
    SameNode,
    /// By another node: every message is forwarded over NATS.
    CrossNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    All,
    Enqueue,
    Drain,
}

/// End-to-end load generator for missive-server (see the crate docs).
#[derive(Debug, Clone, Parser)]
#[command(name = "missive-bench", version)]
struct Cfg {
    /// Scenario to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Server address (loopback only in this project).
    #[arg(long, default_value = "127.0.0.1:7878")]
    addr: String,
    /// Sender/receiver pairs (online, offline-drain).
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 1000)]
    msgs: u64,
    /// Payload bytes (>= 20): the envelope length, or the body with --real-crypto.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Most unacknowledged (not yet `accepted`) sends per sender.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Aggregate offered msgs/s over all senders (0: as fast as the window allows).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Idle connections (idle-conns).
    #[arg(long, default_value_t = 5000)]
    conns: usize,
    /// Concurrent connection attempts (idle-conns).
    #[arg(long, default_value_t = 100)]
    connect_par: usize,
    /// idle-conns: seconds to wait after connecting before reading RSS.
    #[arg(long, default_value_t = 5)]
    hold: u64,
    /// Server pid, for CPU time and VmRSS from /proc (repeat it for the
    /// nodes of a cluster: their CPU times are added up, VmRSS is the
    /// first's).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Cluster (online): pair each sender with a receiver served by the
    /// same node, or by another node. Users land on their shard's owner by
    /// following redirects; the pairing is chosen from where they landed.
    #[arg(long, value_enum)]
    pairing: Option<Pairing>,
    /// offline-drain: all, or enqueue / drain (to restart the server in between).
    #[arg(long, value_enum, default_value_t = Phase::All)]
    phase: Phase,
    /// User-name prefix (default: derived from the time; must match across phases).
    #[arg(long)]
    prefix: Option<String>,
    /// Per-phase deadline, seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Seal and open every message with the core's crypto (RSA per message).
    #[arg(long)]
    real_crypto: bool,
    /// PKCS#8 DER key shared by all bench users (generated and saved if missing).
    #[arg(long, default_value = "/tmp/missive-bench-key.der")]
    key_file: String,
    /// TLS 1.3 (ALPN `missive/1`), logins bound to the TLS exporter; with
    /// --ws: wss.
    #[arg(long)]
    tls: bool,
    /// --tls: trust the certificate authorities in this PEM file (a
    /// self-signed server's own DATA/tls/cert.pem) instead of the web PKI.
    #[arg(long, requires = "tls")]
    ca: Option<PathBuf>,
    /// WebSocket (subprotocol `missive.v1`, one packet per binary message).
    #[arg(long)]
    ws: bool,
    /// Copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
}

impl Cfg {
    /// The transport's name in the JSON line: `tcp`, `tls`, `ws` or `wss`.
    fn transport(&self) -> &'static str {
        match (self.ws, self.tls) {
            (false, false) => "tcp",
            (false, true) => "tls",
            (true, false) => "ws",
            (true, true) => "wss",
        }
    }
}

static BASE: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn rss_kb(pid: Option<u32>) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime+stime of a process in seconds (100 clock ticks/s, the Linux default).
/// CPU seconds of the server processes (added up), or of this process
/// with no pid.
fn cpu_s(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return cpu_of("/proc/self/stat");
    }
    pids.iter()
        .map(|p| cpu_of(&format!("/proc/{p}/stat")))
        .sum()
}

fn cpu_of(path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / 100.0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn merge_into(v: &mut Value, extra: Value) {
    if let (Value::Object(a), Value::Object(b)) = (v, extra) {
        a.extend(b);
    }
}

fn cpu_json(server0: Option<f64>, self0: Option<f64>, pids: &[u32], msgs: u64) -> Value {
    let mut v = json!({});
    if let (Some(a), Some(b)) = (self0, cpu_s(&[])) {
        merge_into(&mut v, json!({"bench_cpu_s": round2(b - a)}));
    }
    if let (Some(a), Some(b)) = (server0, cpu_s(pids)) {
        merge_into(
            &mut v,
            json!({"server_cpu_s": round2(b - a),
                "server_cpu_us_per_msg": round2((b - a) * 1e6 / msgs.max(1) as f64)}),
        );
    }
    v
}

/// Payload: send time (ns since bench start), seq, sender, then filler.
fn make_payload(size: usize, seq: u64, sender: u32) -> Vec<u8> {
    let mut p = vec![0xA5u8; size.max(20)];
    p[0..8].copy_from_slice(&now_ns().to_le_bytes());
    p[8..16].copy_from_slice(&seq.to_le_bytes());
    p[16..20].copy_from_slice(&sender.to_le_bytes());
    p
}

fn message_id(seq: u64, sender: u32) -> MessageId {
    let mut id = [0u8; 16];
    id[0..8].copy_from_slice(&seq.to_be_bytes());
    id[8..12].copy_from_slice(&sender.to_be_bytes());
    MessageId(id)
}

/// Per-receiver bookkeeping: unique/duplicate counts and end-to-end latencies.
struct Tracker {
    expect_sender: u32,
    seen: Vec<bool>,
    /// Messages owed to this receiver: those its sender got `accepted` for
    /// (unknown while the sender still runs).
    owed: Option<u64>,
    unique: u64,
    dups: u64,
    foreign: u64,
    lat_ns: Vec<u64>,
    /// When the last new message arrived.
    last_unique_ns: Option<u64>,
}

impl Tracker {
    fn new(expect_sender: u32, msgs: u64) -> Self {
        Tracker {
            expect_sender,
            seen: vec![false; msgs as usize],
            owed: None,
            unique: 0,
            dups: 0,
            foreign: 0,
            lat_ns: Vec::with_capacity(msgs as usize),
            last_unique_ns: None,
        }
    }

    fn on_msg(&mut self, p: &[u8]) {
        let now = now_ns();
        if p.len() < 20 {
            self.foreign += 1;
            return;
        }
        let ts = u64::from_le_bytes(p[0..8].try_into().expect("8 bytes"));
        let seq = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes")) as usize;
        let sender = u32::from_le_bytes(p[16..20].try_into().expect("4 bytes"));
        if sender != self.expect_sender || seq >= self.seen.len() {
            self.foreign += 1;
            return;
        }
        if self.seen[seq] {
            self.dups += 1;
            return;
        }
        self.seen[seq] = true;
        self.unique += 1;
        self.lat_ns.push(now.saturating_sub(ts));
        self.last_unique_ns = Some(now);
    }

    /// Every owed message arrived.
    fn complete(&self) -> bool {
        self.owed.is_some_and(|owed| self.unique >= owed)
    }

    /// Owed messages that never arrived; while the count owed is unknown,
    /// every message the sender was to send.
    fn lost(&self) -> u64 {
        let owed = self.owed.unwrap_or(self.seen.len() as u64);
        owed.saturating_sub(self.unique)
    }
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds (1 decimal).
fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    (sorted[idx] as f64 / 100.0).round() / 10.0
}

fn summarize(trackers: &[Tracker], start_ns: u64) -> Value {
    let mut lat: Vec<u64> = trackers
        .iter()
        .flat_map(|t| t.lat_ns.iter().copied())
        .collect();
    lat.sort_unstable();
    let unique: u64 = trackers.iter().map(|t| t.unique).sum();
    let end = trackers
        .iter()
        .filter(|t| t.complete())
        .filter_map(|t| t.last_unique_ns)
        .max()
        .unwrap_or_else(now_ns);
    let secs = end.saturating_sub(start_ns) as f64 / 1e9;
    json!({
        "owed": trackers.iter().filter_map(|t| t.owed).sum::<u64>(),
        "delivered_unique": unique,
        "lost": trackers.iter().map(Tracker::lost).sum::<u64>(),
        "duplicates": trackers.iter().map(|t| t.dups).sum::<u64>(),
        "foreign": trackers.iter().map(|t| t.foreign).sum::<u64>(),
        "incomplete_receivers": trackers.iter().filter(|t| !t.complete()).count(),
        "elapsed_s": (secs * 1000.0).round() / 1000.0,
        "msgs_per_s": (unique as f64 / secs).round(),
        "lat_p50_us": pct(&lat, 0.50),
        "lat_p99_us": pct(&lat, 0.99),
        "lat_p999_us": pct(&lat, 0.999),
        "lat_max_us": pct(&lat, 1.0),
    })
}

/// How the server answered one sender.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SendOutcomes {
    /// Sends answered `accepted`: durably queued, so owed to the receiver.
    accepted: u64,
    /// Sends answered with an `error` naming the message, by reason.
    refused: BTreeMap<String, u64>,
    /// `error`s that answer no send (e.g. to an ack).
    other_errors: u64,
}

impl SendOutcomes {
    /// Records a packet from the server; returns whether it answered a send
    /// (which frees a slot of the window).
    fn record(&mut self, packet: &ServerPacket) -> bool {
        match packet {
            ServerPacket::Accepted { .. } => {
                self.accepted += 1;
                true
            }
            ServerPacket::Error {
                code, id: Some(_), ..
            } => {
                *self.refused.entry(reason(*code)).or_default() += 1;
                true
            }
            ServerPacket::Error { id: None, .. } => {
                self.other_errors += 1;
                false
            }
            _ => false,
        }
    }

    /// Sends answered so far, either way.
    fn answered(&self) -> u64 {
        self.accepted + self.refused.values().sum::<u64>()
    }

    fn add(&mut self, other: &SendOutcomes) {
        self.accepted += other.accepted;
        for (why, n) in &other.refused {
            *self.refused.entry(why.clone()).or_default() += n;
        }
        self.other_errors += other.other_errors;
    }
}

/// An error code as a JSON key: `QueueFull` → `queue_full`, an unknown
/// code `n` → `code_n`.
fn reason(code: ErrorCode) -> String {
    if let ErrorCode::Unknown(n) = code {
        return format!("code_{n}");
    }
    let mut key = String::new();
    for c in format!("{code:?}").chars() {
        if c.is_ascii_uppercase() {
            if !key.is_empty() {
                key.push('_');
            }
            key.push(c.to_ascii_lowercase());
        } else {
            key.push(c);
        }
    }
    key
}

struct SendResult {
    outcomes: SendOutcomes,
    first_ns: u64,
    last_ack_ns: u64,
}

fn send_summary(sends: &[SendResult], start_ns: u64) -> Value {
    let mut total = SendOutcomes::default();
    for s in sends {
        total.add(&s.outcomes);
    }
    let first = sends.iter().map(|s| s.first_ns).min().unwrap_or(start_ns);
    let last = sends
        .iter()
        .map(|s| s.last_ack_ns)
        .max()
        .unwrap_or(start_ns);
    let secs = last.saturating_sub(first) as f64 / 1e9;
    json!({"accepted": total.accepted, "refused": total.refused,
        "other_errors": total.other_errors,
        "accept_elapsed_s": (secs * 1000.0).round() / 1000.0,
        "accepted_per_s": (total.accepted as f64 / secs).round()})
}

// ---------------------------------------------------------------- connection

/// Shared, read-only context of one bench process.
struct Ctx {
    cfg: Cfg,
    prefix: String,
    identity: Identity,
    deadline: tokio::time::Instant,
    /// `--tls`: the driver's TLS connector (TLS 1.3, ALPN, exporter).
    tls: Option<TlsConnector<Tokio>>,
    /// `--pairing`: receiver `i` is candidate `receivers[i]` (role `c`).
    receivers: OnceLock<Vec<usize>>,
}

impl Ctx {
    fn user(&self, role: char, i: usize) -> UserName {
        let (role, i) = match (role, self.receivers.get()) {
            ('r', Some(map)) => ('c', map[i]),
            _ => (role, i),
        };
        UserName::new(format!("{}-{role}{i}", self.prefix)).expect("valid bench user name")
    }
}

/// A byte stream: TCP, or TLS over TCP.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}
type Stream = Box<dyn Duplex>;

/// How long closing a connection waits for the server's end to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How packets travel on one connection: the stream and its buffers.
enum Pipe {
    /// Length-prefixed frames on the byte stream (docs/PROTOCOL.md §2.1).
    Frames {
        stream: Stream,
        dec: FrameDecoder,
        buf: Vec<u8>,
        out: Vec<u8>,
    },
    /// One bare packet per binary WebSocket message.
    WebSocket {
        ws: Box<WebSocketStream<Stream>>,
        out: Vec<Vec<u8>>,
        inbox: VecDeque<ServerPacket>,
    },
}

impl Pipe {
    /// Opens the byte stream to `addr` (TCP, or TLS over it with `tls`)
    /// and the channel binding of that stream.
    async fn stream(
        addr: &str,
        tls: Option<&TlsConnector<Tokio>>,
    ) -> Res<(Stream, ChannelBinding)> {
        let Some(tls) = tls else {
            let tcp = TcpConnector::<Tokio>::default()
                .connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            return Ok((Box::new(Joined::new(tcp)), ChannelBinding::None));
        };
        let session = tls
            .connect(addr)
            .await
            .map_err(|e| format!("TLS connect {addr}: {e}"))?;
        let binding = session.channel_binding();
        let (reader, writer) = session.split();
        let stream = reader.reunite(writer).map_err(|e| e.to_string())?;
        Ok((Box::new(stream), binding))
    }

    /// Connects with the transport `cfg` asks for; returns the link and the
    /// channel binding its logins sign.
    async fn open(
        cfg: &Cfg,
        addr: &str,
        tls: Option<&TlsConnector<Tokio>>,
    ) -> Res<(Pipe, ChannelBinding)> {
        let (stream, binding) = Pipe::stream(addr, tls).await?;
        if !cfg.ws {
            let link = Pipe::Frames {
                stream,
                dec: FrameDecoder::new(DEFAULT_MAX_FRAME),
                buf: vec![0; 64 * 1024],
                out: Vec::with_capacity(64 * 1024),
            };
            return Ok((link, binding));
        }
        let scheme = if cfg.tls { "wss" } else { "ws" };
        let mut request = format!("{scheme}://{addr}/")
            .into_client_request()
            .map_err(|e| format!("WebSocket request: {e}"))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let config = WebSocketConfig::default().max_message_size(Some(DEFAULT_MAX_FRAME as usize));
        // The handshake fails unless the server echoes the subprotocol.
        let (ws, _) = async_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| format!("WebSocket handshake {addr}: {e}"))?;
        let link = Pipe::WebSocket {
            ws: Box::new(ws),
            out: Vec::new(),
            inbox: VecDeque::new(),
        };
        // A browser cannot read the TLS exporter: binding `none`, even over wss.
        Ok((link, ChannelBinding::None))
    }
}

/// Most WebSocket messages one `fill` takes.
const WS_BATCH: usize = 256;

/// Queues the packet of one received WebSocket message (or handles a
/// control message); the connection's end or a text message is an error.
fn receive_message(
    inbox: &mut VecDeque<ServerPacket>,
    message: Option<Result<Message, async_tungstenite::tungstenite::Error>>,
) -> Res<()> {
    match message {
        Some(Ok(Message::Binary(packet))) => inbox
            .push_back(decode_packet::<ServerPacket>(&packet).map_err(|e| format!("decode: {e}"))?),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
        Some(Ok(Message::Close(_))) | None => {
            return Err("server closed the connection".into());
        }
        Some(Ok(other)) => return Err(format!("unexpected WebSocket message {other:?}")),
        Some(Err(e)) => return Err(format!("read: {e}")),
    }
    Ok(())
}

/// One protocol connection: its link, its channel binding and the session
/// the server opened.
struct Conn {
    link: Pipe,
    binding: ChannelBinding,
    server_id: [u8; 16],
    session_id: [u8; 16],
    /// Mailbox items waiting at login (`logged_in`'s `queued`).
    queued_at_login: u64,
    /// Why a cluster node turned the last register or login away.
    bounced: Option<Bounce>,
}

impl Conn {
    async fn connect(cfg: &Cfg, addr: &str, tls: Option<&TlsConnector<Tokio>>) -> Res<Conn> {
        let (link, binding) = Pipe::open(cfg, addr, tls).await?;
        let mut c = Conn {
            link,
            binding,
            server_id: [0; 16],
            session_id: [0; 16],
            queued_at_login: 0,
            bounced: None,
        };
        c.push(&ClientPacket::Hello {
            versions: vec![PROTOCOL_VERSION],
        });
        c.flush().await?;
        match c.recv().await? {
            ServerPacket::Welcome {
                server_id,
                session_id,
                ..
            } => {
                c.server_id = server_id;
                c.session_id = session_id;
                Ok(c)
            }
            other => Err(format!("expected welcome, got {other:?}")),
        }
    }

    /// Closes the connection, waiting until the server has closed its end,
    /// so the server has released it.
    async fn close(mut self) {
        let closed = async {
            match &mut self.link {
                Pipe::Frames { stream, buf, .. } => {
                    let _ = stream.close().await;
                    while matches!(stream.read(buf).await, Ok(n) if n > 0) {}
                }
                Pipe::WebSocket { ws, .. } => {
                    let _ = WebSocketStream::close(ws, None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closed).await;
    }

    fn push(&mut self, p: &ClientPacket) {
        match &mut self.link {
            Pipe::Frames { out, .. } => {
                encode_frame_into(p, DEFAULT_MAX_FRAME, out).expect("bench frames fit");
            }
            Pipe::WebSocket { out, .. } => {
                let mut message = Vec::new();
                encode_packet_into(p, DEFAULT_MAX_FRAME, &mut message).expect("bench packets fit");
                out.push(message);
            }
        }
    }

    async fn flush(&mut self) -> Res<()> {
        match &mut self.link {
            Pipe::Frames { stream, out, .. } => {
                if !out.is_empty() {
                    stream
                        .write_all(out)
                        .await
                        .map_err(|e| format!("write: {e}"))?;
                    stream.flush().await.map_err(|e| format!("write: {e}"))?;
                    out.clear();
                }
            }
            Pipe::WebSocket { ws, out, .. } => {
                if !out.is_empty() {
                    for packet in out.drain(..) {
                        ws.feed(Message::Binary(packet.into()))
                            .await
                            .map_err(|e| format!("write: {e}"))?;
                    }
                    ws.flush().await.map_err(|e| format!("write: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// Reads once from the connection into its decoder or inbox (cancel
    /// safe).
    async fn fill(&mut self) -> Res<()> {
        match &mut self.link {
            Pipe::Frames {
                stream, dec, buf, ..
            } => {
                let n = stream.read(buf).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("server closed the connection".into());
                }
                dec.push(&buf[..n]);
            }
            Pipe::WebSocket { ws, inbox, .. } => {
                let first = ws.next().await;
                receive_message(inbox, first)?;
                // Then whatever already arrived, without waiting, so that a
                // caller handles a burst of messages as a batch (as a byte
                // stream's one read), not one wake-up per message.
                while inbox.len() < WS_BATCH {
                    match ws.next().now_or_never() {
                        Some(message) => receive_message(inbox, message)?,
                        None => break,
                    }
                }
            }
        }
        Ok(())
    }

    fn next(&mut self) -> Res<Option<ServerPacket>> {
        match &mut self.link {
            Pipe::Frames { dec, .. } => dec
                .next_packet::<ServerPacket>()
                .map_err(|e| format!("decode: {e}")),
            Pipe::WebSocket { inbox, .. } => Ok(inbox.pop_front()),
        }
    }

    async fn recv(&mut self) -> Res<ServerPacket> {
        loop {
            if let Some(p) = self.next()? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    /// Register or log in `user` with a real RSA-PSS signature.
    async fn auth(
        &mut self,
        first: ClientPacket,
        context: AuthContext,
        user: &UserName,
        identity: &Identity,
        rng: &mut CoreRng,
    ) -> Res<ServerPacket> {
        self.push(&first);
        self.flush().await?;
        let nonce = match self.recv().await? {
            ServerPacket::Challenge { nonce, .. } => nonce,
            ServerPacket::Redirect { address } => {
                self.bounced = Some(Bounce::Redirect(address));
                return Err(format!("{user}: redirected"));
            }
            ServerPacket::Error {
                code: ErrorCode::Unavailable,
                ..
            } => {
                self.bounced = Some(Bounce::Unavailable);
                return Err(format!("{user}: no node serves it right now"));
            }
            other => return Err(format!("{user}: expected challenge, got {other:?}")),
        };
        let client_nonce = bytes::<32>(rng);
        let signature = AuthTranscript {
            version: TranscriptVersion::V2(self.binding),
            context,
            server_id: self.server_id,
            session_id: self.session_id,
            user,
            server_nonce: nonce,
            client_nonce,
        }
        .sign(identity, rng);
        self.push(&ClientPacket::Prove {
            client_nonce,
            signature,
        });
        self.flush().await?;
        self.recv().await
    }

    /// Registers `user`; `Some` when a cluster node turned it away.
    async fn register(
        &mut self,
        user: &UserName,
        id: &Identity,
        rng: &mut CoreRng,
    ) -> Res<Option<Bounce>> {
        let first = ClientPacket::Register {
            user: user.clone(),
            public_key: id.public_key().to_spki_der().to_vec(),
        };
        match self
            .first_answer(first, AuthContext::Register, user, id, rng)
            .await?
        {
            Err(bounce) => Ok(Some(bounce)),
            Ok(ServerPacket::Registered { .. }) => Ok(None),
            Ok(other) => Err(format!("{user}: register: {other:?}")),
        }
    }

    /// Logs in as `user`; `Some` when a cluster node turned it away.
    async fn login(
        &mut self,
        user: &UserName,
        id: &Identity,
        rng: &mut CoreRng,
    ) -> Res<Option<Bounce>> {
        let first = ClientPacket::Login { user: user.clone() };
        match self
            .first_answer(first, AuthContext::Login, user, id, rng)
            .await?
        {
            Err(bounce) => Ok(Some(bounce)),
            Ok(ServerPacket::LoggedIn { queued, .. }) => {
                self.queued_at_login = queued;
                Ok(None)
            }
            Ok(other) => Err(format!("{user}: login: {other:?}")),
        }
    }

    /// [`Conn::auth`], or `Err` when a cluster node answered the first
    /// packet with a redirect or `unavailable` (docs/PROTOCOL.md §2.7).
    async fn first_answer(
        &mut self,
        first: ClientPacket,
        context: AuthContext,
        user: &UserName,
        identity: &Identity,
        rng: &mut CoreRng,
    ) -> Res<Result<ServerPacket, Bounce>> {
        match self.auth(first, context, user, identity, rng).await {
            Err(e) => match self.bounced.take() {
                Some(bounce) => Ok(Err(bounce)),
                None => Err(e),
            },
            Ok(packet) => Ok(Ok(packet)),
        }
    }
}

fn rng_for(tag: u64) -> CoreRng {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut seed = [0u8; 32];
    seed[0..8].copy_from_slice(&t.to_le_bytes());
    seed[8..16].copy_from_slice(&tag.to_le_bytes());
    seed[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    let mut root = from_seed(seed);
    derive(&mut root)
}

/// Redirects a session follows in a row before it gives up.
const MAX_REDIRECTS: usize = 3;
/// Pause before asking again when no node serves a user (a failover or a
/// rebalance in progress).
const UNAVAILABLE_PAUSE: Duration = Duration::from_millis(100);

/// Why a cluster node turned a register or login away.
enum Bounce {
    /// Another node serves the user.
    Redirect(String),
    /// No node serves the user right now.
    Unavailable,
}

/// Connect, register `user` (if asked) and log in (if asked), following
/// cluster redirects.
async fn session(ctx: &Ctx, user: &UserName, register: bool, login: bool) -> Res<Conn> {
    Ok(landed_session(ctx, user, register, login).await?.0)
}

/// [`session`], and the address of the node it landed on.
async fn landed_session(
    ctx: &Ctx,
    user: &UserName,
    register: bool,
    login: bool,
) -> Res<(Conn, String)> {
    let mut rng = rng_for(now_ns());
    let mut addr = ctx.cfg.addr.clone();
    let mut redirects = 0;
    loop {
        let mut c = Conn::connect(&ctx.cfg, &addr, ctx.tls.as_ref()).await?;
        let mut bounce = None;
        if register {
            bounce = c.register(user, &ctx.identity, &mut rng).await?;
        }
        if login && bounce.is_none() {
            bounce = c.login(user, &ctx.identity, &mut rng).await?;
        }
        let Some(bounce) = bounce else {
            return Ok((c, addr));
        };
        c.close().await;
        match bounce {
            Bounce::Redirect(to) if redirects < MAX_REDIRECTS => {
                redirects += 1;
                addr = to;
            }
            Bounce::Redirect(_) => {
                return Err(format!("{user}: more than {MAX_REDIRECTS} redirects"));
            }
            Bounce::Unavailable if tokio::time::Instant::now() < ctx.deadline => {
                redirects = 0;
                tokio::time::sleep(UNAVAILABLE_PAUSE).await;
            }
            Bounce::Unavailable => return Err(format!("{user}: no node served it in time")),
        }
    }
}

// ---------------------------------------------------------------- pumps

/// Sender: `msgs` sends to its receiver, at most `window` not yet answered,
/// optionally paced; acks every notice. Stops when every send is answered
/// (accepted or refused) and (if `want_notices`) every delivered notice
/// arrived; then tells its receiver (`owed`) how many were accepted.
async fn sender(
    ctx: Arc<Ctx>,
    mut c: Conn,
    i: usize,
    want_notices: bool,
    mut start: watch::Receiver<bool>,
    owed: watch::Sender<Option<u64>>,
) -> Res<SendResult> {
    let cfg = &ctx.cfg;
    let me = ctx.user('s', i);
    let to = ctx.user('r', i);
    let mut rng = rng_for(i as u64);
    let _ = start.wait_for(|s| *s).await;
    let first_ns = now_ns();
    let mut ticker = (cfg.rate > 0.0).then(|| {
        let per = Duration::from_secs_f64(cfg.pairs as f64 / cfg.rate);
        let first = tokio::time::Instant::now() + per.mul_f64(i as f64 / cfg.pairs as f64);
        let mut t = tokio::time::interval_at(first, per);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let (mut next, mut in_flight, mut tokens) = (0u64, 0usize, 0u64);
    let (mut outcomes, mut notices, mut last_ack_ns) = (SendOutcomes::default(), 0u64, 0u64);
    let mut errors_logged = 0u32;
    loop {
        while next < cfg.msgs && in_flight < cfg.window && (ticker.is_none() || tokens > 0) {
            let payload = make_payload(cfg.payload, next, i as u32);
            let id = message_id(next, i as u32);
            let envelope = if cfg.real_crypto {
                let header = EnvelopeHeader {
                    version: ENVELOPE_VERSION,
                    sender: me.clone(),
                    recipient: to.clone(),
                    id,
                    sent_at: 0,
                };
                let pk = ctx.identity.public_key();
                seal(&mut rng, &ctx.identity, &header, pk, &payload, 261_120)
                    .map_err(|e| e.to_string())?
            } else {
                payload
            };
            c.push(&ClientPacket::Send {
                id,
                to: to.clone(),
                envelope: envelope.into(),
            });
            next += 1;
            in_flight += 1;
            tokens = tokens.saturating_sub(1);
        }
        c.flush().await?;
        if outcomes.answered() >= cfg.msgs && (!want_notices || notices >= outcomes.accepted) {
            break;
        }
        let tick = async {
            match ticker.as_mut() {
                Some(t) if next < cfg.msgs => {
                    t.tick().await;
                }
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = c.fill() => r?,
            () = tick => tokens += 1,
            () = tokio::time::sleep_until(ctx.deadline) => {
                eprintln!(
                    "sender {i}: timeout with {} accepted, {notices} notices",
                    outcomes.accepted
                );
                break;
            }
        }
        while let Some(p) = c.next()? {
            if let ServerPacket::Error { code, detail, .. } = &p {
                if code.is_fatal() {
                    return Err(format!("sender {i}: fatal {code:?}: {detail}"));
                }
                if errors_logged < 3 {
                    errors_logged += 1;
                    eprintln!("sender {i}: error {code:?}: {detail}");
                }
            }
            if outcomes.record(&p) {
                in_flight -= 1;
                last_ack_ns = now_ns();
            }
            if let ServerPacket::Notice { seq, notice } = p {
                if matches!(notice, Notice::Delivered { .. }) {
                    notices += 1;
                }
                c.push(&ClientPacket::Ack { seq });
            }
        }
    }
    owed.send_replace(Some(outcomes.accepted));
    Ok(SendResult {
        outcomes,
        first_ns,
        last_ack_ns,
    })
}

/// Receiver: acks every message and tracks it; stops 300 ms after the last
/// owed message (to catch duplicates) or at the deadline. `owed` is how
/// many messages its sender got accepted (`None` while the sender runs).
async fn receiver(
    ctx: Arc<Ctx>,
    mut c: Conn,
    i: usize,
    mut owed: watch::Receiver<Option<u64>>,
) -> Res<Tracker> {
    let cfg = &ctx.cfg;
    let me = ctx.user('r', i);
    let mut tr = Tracker::new(i as u32, cfg.msgs);
    tr.owed = *owed.borrow_and_update();
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        // Packets may already be buffered (e.g. behind `logged_in`): handle
        // them before waiting for more.
        while let Some(p) = c.next()? {
            match p {
                ServerPacket::Message {
                    seq,
                    from,
                    envelope,
                    ..
                } => {
                    c.push(&ClientPacket::Ack { seq });
                    if cfg.real_crypto {
                        let pk = ctx.identity.public_key();
                        match open(&ctx.identity, &me, &from, pk, &envelope, 261_120) {
                            Ok(o) => tr.on_msg(&o.body),
                            Err(e) => {
                                eprintln!("receiver {i}: open: {e}");
                                tr.foreign += 1;
                            }
                        }
                    } else {
                        tr.on_msg(&envelope);
                    }
                }
                ServerPacket::Notice { seq, .. } => c.push(&ClientPacket::Ack { seq }),
                ServerPacket::Error { code, detail, .. } => {
                    eprintln!("receiver {i}: error {code:?}: {detail}");
                    if code.is_fatal() {
                        return Ok(tr);
                    }
                }
                _ => {}
            }
        }
        c.flush().await?;
        if tr.complete() && grace.is_none() {
            grace = Some(tokio::time::Instant::now() + Duration::from_millis(300));
        }
        let until = grace.unwrap_or(ctx.deadline);
        let told = async {
            match tr.owed {
                // Until the sender is done (if it fails, until the deadline).
                None => {
                    if owed.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                Some(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = timeout_at(until, c.fill()) => match r {
                Err(_) => {
                    if grace.is_none() {
                        eprintln!("receiver {i}: timeout with {} unique", tr.unique);
                    }
                    break;
                }
                Ok(r) => r?,
            },
            () = told => {
                tr.owed = *owed.borrow_and_update();
            }
        }
    }
    Ok(tr)
}

async fn collect<T>(hs: Vec<tokio::task::JoinHandle<Res<T>>>) -> Res<Vec<T>> {
    let mut out = Vec::with_capacity(hs.len());
    for h in hs {
        out.push(h.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// Runs `job` for users 0..`n` of `role`, at most `--connect-par` at a
/// time; their results in user order.
async fn per_user<T, F, Fut>(ctx: &Arc<Ctx>, role: char, n: usize, job: F) -> Res<Vec<T>>
where
    T: Send + 'static,
    F: Fn(Arc<Ctx>, UserName) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Res<T>> + Send,
{
    let par = Arc::new(Semaphore::new(ctx.cfg.connect_par.max(1)));
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let (ctx, par, job) = (ctx.clone(), par.clone(), job.clone());
            tokio::spawn(async move {
                let _permit = par.acquire_owned().await.map_err(|e| e.to_string())?;
                let user = ctx.user(role, i);
                job(ctx, user).await
            })
        })
        .collect();
    collect(hs).await
}

/// Opens `n` sessions, at most `--connect-par` at a time.
async fn sessions(
    ctx: &Arc<Ctx>,
    role: char,
    n: usize,
    register: bool,
    login: bool,
) -> Res<Vec<Conn>> {
    per_user(ctx, role, n, move |ctx, user| async move {
        session(&ctx, &user, register, login).await
    })
    .await
}

/// Registers `n` users, at most `--connect-par` at a time, each on its own
/// connection closed right after: the server never holds more than that
/// many of these connections, so its RSS afterwards is the user directory,
/// not the high-water mark of `n` connections (freed, but kept by the
/// allocator).
async fn register_users(ctx: &Arc<Ctx>, role: char, n: usize) -> Res<()> {
    per_user(ctx, role, n, |ctx, user| async move {
        session(&ctx, &user, true, false).await?.close().await;
        Ok(())
    })
    .await
    .map(drop)
}

/// Receiver candidates registered per pair for `--pairing`.
const CANDIDATES_PER_PAIR: usize = 4;

/// `--pairing`: registers the senders and a pool of candidates (role `c`),
/// notes the node each landed on, and makes receiver `i` a candidate served
/// by sender `i`'s node (same-node) or by another one (cross-node).
async fn choose_receivers(ctx: &Arc<Ctx>, pairing: Pairing) -> Res<()> {
    let landed = |ctx: Arc<Ctx>, user: UserName| async move {
        let (c, addr) = landed_session(&ctx, &user, true, false).await?;
        c.close().await;
        Ok(addr)
    };
    let senders = per_user(ctx, 's', ctx.cfg.pairs, landed).await?;
    let candidates = per_user(ctx, 'c', ctx.cfg.pairs * CANDIDATES_PER_PAIR, landed).await?;
    let mut taken = vec![false; candidates.len()];
    let mut receivers = Vec::with_capacity(senders.len());
    for node in &senders {
        let same = pairing == Pairing::SameNode;
        let j = (0..candidates.len())
            .find(|&j| !taken[j] && (candidates[j] == *node) == same)
            .ok_or_else(|| {
                format!("no {pairing:?} receiver left for a sender on {node} (one node only?)")
            })?;
        taken[j] = true;
        receivers.push(j);
    }
    ctx.receivers
        .set(receivers)
        .map_err(|_| "receivers chosen twice".to_string())
}

async fn online(ctx: Arc<Ctx>) -> Res<Value> {
    let cfg = &ctx.cfg;
    if let Some(pairing) = cfg.pairing {
        choose_receivers(&ctx, pairing).await?;
    }
    let recv_conns = sessions(&ctx, 'r', cfg.pairs, true, true).await?;
    let send_conns = sessions(&ctx, 's', cfg.pairs, true, true).await?;
    let (start_tx, start_rx) = watch::channel(false);
    let (owed_txs, owed_rxs): (Vec<_>, Vec<_>) =
        (0..cfg.pairs).map(|_| watch::channel(None)).unzip();
    let recvs: Vec<_> = recv_conns
        .into_iter()
        .zip(owed_rxs)
        .enumerate()
        .map(|(i, (c, owed))| tokio::spawn(receiver(ctx.clone(), c, i, owed)))
        .collect();
    let sends: Vec<_> = send_conns
        .into_iter()
        .zip(owed_txs)
        .enumerate()
        .map(|(i, (c, owed))| tokio::spawn(sender(ctx.clone(), c, i, true, start_rx.clone(), owed)))
        .collect();
    let (c0, s0) = (cpu_s(&cfg.server_pid), cpu_s(&[]));
    let start_ns = now_ns();
    start_tx.send(true).map_err(|e| e.to_string())?;
    let sends = collect(sends).await?;
    let recvs = collect(recvs).await?;
    let mut v = summarize(&recvs, start_ns);
    merge_into(&mut v, send_summary(&sends, start_ns));
    merge_into(
        &mut v,
        cpu_json(c0, s0, &cfg.server_pid, cfg.pairs as u64 * cfg.msgs),
    );
    Ok(v)
}

async fn offline_drain(ctx: Arc<Ctx>) -> Res<Value> {
    let cfg = &ctx.cfg;
    let pid = cfg.server_pid.as_slice();
    let total = cfg.pairs as u64 * cfg.msgs;
    let mut out = json!({"prefix": ctx.prefix});
    // Per pair, the messages accepted for the receiver (unknown in a
    // drain-only run: then what login reports queued).
    let mut owed: Vec<Option<u64>> = vec![None; cfg.pairs];
    if cfg.phase != Phase::Drain {
        // 1. receivers exist but are offline (registered, never logged in)
        register_users(&ctx, 'r', cfg.pairs).await?;
        let send_conns = sessions(&ctx, 's', cfg.pairs, true, true).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss0 = rss_kb(pid.first().copied());
        // 2. senders enqueue everything
        let (start_tx, start_rx) = watch::channel(false);
        let sends: Vec<_> = send_conns
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let (told, _) = watch::channel(None);
                tokio::spawn(sender(ctx.clone(), c, i, false, start_rx.clone(), told))
            })
            .collect();
        let c0 = cpu_s(pid);
        let start_ns = now_ns();
        start_tx.send(true).map_err(|e| e.to_string())?;
        let sends = collect(sends).await?;
        for (o, s) in owed.iter_mut().zip(&sends) {
            *o = Some(s.outcomes.accepted);
        }
        let s = send_summary(&sends, start_ns);
        if let (Some(a), Some(b)) = (c0, cpu_s(pid)) {
            merge_into(
                &mut out,
                json!({"enqueue_server_cpu_us_per_msg": round2((b - a) * 1e6 / total as f64)}),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss1 = rss_kb(pid.first().copied());
        merge_into(
            &mut out,
            json!({"enqueue_accepted": s["accepted"], "enqueue_refused": s["refused"],
                "enqueue_other_errors": s["other_errors"],
                "enqueue_per_s": s["accepted_per_s"], "enqueue_elapsed_s": s["accept_elapsed_s"]}),
        );
        if let (Some(a), Some(b)) = (rss0, rss1) {
            merge_into(
                &mut out,
                json!({"server_rss_before_enqueue_kb": a, "server_rss_queued_kb": b,
                "server_bytes_per_queued_msg": ((b as f64 - a as f64) * 1024.0 / total as f64).round()}),
            );
        }
    }
    if cfg.phase != Phase::Enqueue {
        // 3. receivers log in and drain
        let c0 = cpu_s(pid);
        let start_ns = now_ns();
        let hs: Vec<_> = owed
            .into_iter()
            .enumerate()
            .map(|(i, owed)| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let c = session(&ctx, &ctx.user('r', i), false, true).await?;
                    let (_, owed) = watch::channel(Some(owed.unwrap_or(c.queued_at_login)));
                    receiver(ctx, c, i, owed).await
                })
            })
            .collect();
        let trackers = collect(hs).await?;
        let s = summarize(&trackers, start_ns);
        merge_into(
            &mut out,
            json!({
                "drain_msgs_per_s": s["msgs_per_s"], "drain_elapsed_s": s["elapsed_s"],
                "sent": total, "owed": s["owed"],
                "delivered_unique": s["delivered_unique"], "lost": s["lost"],
                "duplicates": s["duplicates"], "foreign": s["foreign"],
                "incomplete_receivers": s["incomplete_receivers"],
            }),
        );
        if let (Some(a), Some(b)) = (c0, cpu_s(pid)) {
            merge_into(
                &mut out,
                json!({"drain_server_cpu_us_per_msg": round2((b - a) * 1e6 / total as f64)}),
            );
        }
        if let Some(r) = rss_kb(pid.first().copied()) {
            merge_into(&mut out, json!({"server_rss_after_drain_kb": r}));
        }
    }
    Ok(out)
}

async fn idle_conns(ctx: Arc<Ctx>) -> Res<Value> {
    let cfg = &ctx.cfg;
    let pid = cfg.server_pid.as_slice();
    let rss_start = rss_kb(pid.first().copied());
    // Phase 1 (not counted): register the users, so the RSS delta of phase 2
    // is only the authenticated connections, not the user directory.
    let t0 = Instant::now();
    register_users(&ctx, 'i', cfg.conns).await?;
    let register_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = rss_kb(pid.first().copied());
    // Phase 2: log in every user and hold the connections open.
    let par = Arc::new(Semaphore::new(cfg.connect_par.max(1)));
    let (tx, mut rx) = mpsc::channel::<Res<()>>(cfg.conns.max(1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let t1 = Instant::now();
    let mut handles = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        let (ctx, par, tx, mut stop) = (ctx.clone(), par.clone(), tx.clone(), stop_rx.clone());
        handles.push(tokio::spawn(async move {
            let permit = par.acquire_owned().await;
            let r = session(&ctx, &ctx.user('i', i), false, true).await;
            drop(permit);
            match r {
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
                Ok(c) => {
                    let _ = tx.send(Ok(())).await;
                    drop(tx);
                    let _ = stop.wait_for(|s| *s).await;
                    drop(c);
                }
            }
        }));
    }
    drop(tx);
    let (mut ok, mut failed, mut first_err) = (0usize, 0usize, None);
    while let Some(r) = rx.recv().await {
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
        if ok + failed == cfg.conns {
            break;
        }
    }
    let connect_s = t1.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(cfg.hold)).await;
    let rss1 = rss_kb(pid.first().copied());
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    let mut v = json!({
        "conns_ok": ok, "conns_failed": failed, "first_error": first_err,
        "register_s": round2(register_s),
        "connect_s": (connect_s * 1000.0).round() / 1000.0,
        "connects_per_s": (ok as f64 / connect_s).round(),
        "authenticated": true,
    });
    if let (Some(s), Some(a), Some(b)) = (rss_start, rss0, rss1) {
        merge_into(
            &mut v,
            json!({"server_rss_start_kb": s, "server_rss_before_kb": a, "server_rss_after_kb": b,
                "server_rss_bytes_per_conn": ((b as f64 - a as f64) * 1024.0 / ok.max(1) as f64).round(),
                "server_rss_bytes_per_user_and_conn": ((b as f64 - s as f64) * 1024.0 / ok.max(1) as f64).round()}),
        );
    }
    Ok(v)
}

/// The bench users' shared key: loaded from `path`, else generated and saved.
fn load_identity(path: &str) -> Res<Identity> {
    if let Ok(der) = std::fs::read(path) {
        return Identity::from_pkcs8_der(&der).map_err(|e| format!("{path}: {e}"));
    }
    let id = Identity::generate(&mut rng_for(7), 2048).map_err(|e| e.to_string())?;
    let _ = std::fs::write(path, id.to_pkcs8_der().as_slice());
    Ok(id)
}

/// `--tls`: the TLS connector trusting `--ca` (else the web PKI), with ALPN
/// `missive/1` (`http/1.1` for wss).
fn tls_connector(cfg: &Cfg) -> Res<Option<TlsConnector<Tokio>>> {
    if !cfg.tls {
        return Ok(None);
    }
    let roots = match &cfg.ca {
        Some(ca) => load_certificate_authorities(ca).map_err(|e| e.to_string())?,
        None => web_pki_roots(),
    };
    let config = client_config(roots).map_err(|e| e.to_string())?;
    // wss names HTTP/1.1 in ALPN, as browsers do.
    let config = if cfg.ws {
        websocket_client_config(&config)
    } else {
        config
    };
    Ok(Some(TlsConnector::new(config)))
}

fn head(cfg: &Cfg) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    let scenario = match cfg.scenario {
        Scenario::Online => "online",
        Scenario::OfflineDrain => "offline-drain",
        Scenario::IdleConns => "idle-conns",
    };
    m.insert("scenario".into(), json!(scenario));
    m.insert("target".into(), json!("missive"));
    m.insert("transport".into(), json!(cfg.transport()));
    if !cfg.label.is_empty() {
        m.insert("label".into(), json!(cfg.label));
    }
    if cfg.scenario == Scenario::IdleConns {
        m.insert("conns".into(), json!(cfg.conns));
    } else {
        m.insert("pairs".into(), json!(cfg.pairs));
        m.insert("msgs_per_sender".into(), json!(cfg.msgs));
        m.insert("payload".into(), json!(cfg.payload));
        m.insert("window".into(), json!(cfg.window));
        m.insert("rate".into(), json!(cfg.rate));
        m.insert("real_crypto".into(), json!(cfg.real_crypto));
    }
    m
}

#[tokio::main]
async fn main() {
    now_ns();
    let cfg = Cfg::parse();
    let mut m = head(&cfg);
    let identity = match load_identity(&cfg.key_file) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("missive-bench: key: {e}");
            std::process::exit(1);
        }
    };
    let prefix = cfg.prefix.clone().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("mb{}", t % 100_000_000)
    });
    let tls = match tls_connector(&cfg) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("missive-bench: TLS: {e}");
            std::process::exit(1);
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.timeout);
    let ctx = Arc::new(Ctx {
        cfg,
        prefix,
        identity,
        deadline,
        tls,
        receivers: OnceLock::new(),
    });
    let r = match ctx.cfg.scenario {
        Scenario::Online => online(ctx.clone()).await,
        Scenario::OfflineDrain => offline_drain(ctx.clone()).await,
        Scenario::IdleConns => idle_conns(ctx.clone()).await,
    };
    let failed = r.is_err();
    let v = r.unwrap_or_else(|e| json!({ "error": e }));
    if let Value::Object(o) = v {
        m.extend(o);
    }
    println!("{}", Value::Object(m));
    if failed {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=1000).map(|x| x * 1000).collect();
        assert_eq!(pct(&v, 0.5), 500.0);
        assert_eq!(pct(&v, 0.99), 990.0);
        assert_eq!(pct(&v, 1.0), 1000.0);
        assert!(pct(&[], 0.5).is_nan());
    }

    #[test]
    fn tracker_counts_duplicates_and_foreign() {
        let mut t = Tracker::new(3, 2);
        t.on_msg(&make_payload(64, 0, 3));
        t.on_msg(&make_payload(64, 0, 3));
        t.on_msg(&make_payload(64, 1, 4));
        t.on_msg(&make_payload(64, 1, 3));
        assert_eq!((t.unique, t.dups, t.foreign), (2, 1, 1));
        assert!(!t.complete(), "complete before the count owed is known");
        t.owed = Some(2);
        assert!(t.complete() && t.last_unique_ns.is_some());
    }

    fn refusal(code: ErrorCode, seq: u64) -> ServerPacket {
        ServerPacket::Error {
            code,
            id: Some(message_id(seq, 0)),
            user: None,
            detail: String::new(),
        }
    }

    #[test]
    fn send_outcomes_count_refusals_by_reason() {
        let script = [
            (
                ServerPacket::Accepted {
                    id: message_id(0, 0),
                },
                true,
            ),
            (refusal(ErrorCode::QueueFull, 1), true),
            (refusal(ErrorCode::RateLimited, 2), true),
            (refusal(ErrorCode::QueueFull, 3), true),
            (
                ServerPacket::Error {
                    code: ErrorCode::UnknownSeq,
                    id: None,
                    user: None,
                    detail: String::new(),
                },
                false,
            ),
            (ServerPacket::Pong, false),
            (
                ServerPacket::Accepted {
                    id: message_id(4, 0),
                },
                true,
            ),
        ];
        let mut outcomes = SendOutcomes::default();
        for (packet, answers_a_send) in &script {
            assert_eq!(outcomes.record(packet), *answers_a_send, "{packet:?}");
        }
        assert_eq!(outcomes.accepted, 2);
        assert_eq!(outcomes.other_errors, 1);
        assert_eq!(outcomes.answered(), 5);
        let refused: Vec<_> = outcomes
            .refused
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect();
        assert_eq!(refused, [("queue_full", 2), ("rate_limited", 1)]);

        let mut total = outcomes.clone();
        total.add(&outcomes);
        assert_eq!((total.accepted, total.refused["queue_full"]), (4, 4));
        let sends = [SendResult {
            outcomes,
            first_ns: 0,
            last_ack_ns: 1_000_000,
        }];
        let v = send_summary(&sends, 0);
        assert_eq!(v["accepted"], 2);
        assert_eq!(v["refused"], json!({"queue_full": 2, "rate_limited": 1}));
        assert_eq!(v["other_errors"], 1);
    }

    #[test]
    fn error_codes_become_snake_case_reasons() {
        assert_eq!(reason(ErrorCode::QueueFull), "queue_full");
        assert_eq!(
            reason(ErrorCode::AlreadyAuthenticated),
            "already_authenticated"
        );
        assert_eq!(reason(ErrorCode::Busy), "busy");
        assert_eq!(reason(ErrorCode::Unknown(4000)), "code_4000");
    }

    /// `lost` counts what was accepted and never delivered, not what was
    /// refused.
    #[test]
    fn lost_is_owed_minus_delivered() {
        let mut all_in = Tracker::new(0, 10);
        all_in.owed = Some(3);
        let mut short = Tracker::new(1, 10);
        short.owed = Some(4);
        for seq in 0..3 {
            all_in.on_msg(&make_payload(32, seq, 0));
            short.on_msg(&make_payload(32, seq, 1));
        }
        assert!(all_in.complete() && !short.complete());
        assert_eq!((all_in.lost(), short.lost()), (0, 1));
        let v = summarize(&[all_in, short], 0);
        assert_eq!(v["owed"], 7);
        assert_eq!(v["delivered_unique"], 6);
        assert_eq!(v["lost"], 1);
        assert_eq!(v["incomplete_receivers"], 1);
    }

    #[test]
    fn ids_are_unique_per_sender_and_seq() {
        assert_ne!(message_id(1, 2), message_id(2, 1));
        assert_eq!(message_id(5, 9), message_id(5, 9));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cfg::command().debug_assert();
    }
}
