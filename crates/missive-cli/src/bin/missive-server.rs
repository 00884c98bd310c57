//! `missive-server`: the Missive chat server (TLS 1.3 over TCP by default,
//! tokio, embedded redb store).
#![forbid(unsafe_code)]

use clap::Parser;
use missive_cluster::{Coordinator, CoordinatorOptions};
use missive_core::cluster::ClusterConfig;
use missive_core::server::ServerConfig;
use missive_runtime::Metrics;
use missive_runtime::cluster::cluster_link;
use missive_runtime::driver::AdminListener;
use missive_runtime::driver::{
    self, AllowedOrigins, BoundServer, ByteStream, CertifiedKey, Listener, StaticSite, TlsListener,
    WsListener, certificate_fingerprint, listen_tcp, load_certificate, load_or_create_self_signed,
    self_signed, websocket_server_config,
};
use missive_store::postgres::{Fence, PostgresTls};
use missive_store::{MemoryStore, PostgresStore, RedbStore, Store};
use missive_tokio::{QueueLimits, ServerOptions, Tokio};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[path = "../logging.rs"]
mod logging;

/// The browser chat page: the files of `web/` when this binary was built
/// (build.rs), served on the WebSocket listener.
mod web_page {
    include!(concat!(env!("OUT_DIR"), "/web_page.rs"));
}

#[path = "missive-server/settings.rs"]
mod settings;

#[path = "missive-server/admin.rs"]
mod admin;

#[path = "missive-server/admin_socket.rs"]
mod admin_socket;

/// Where the server listens unless told otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// The durable store's directory unless told otherwise.
const DEFAULT_DATA: &str = "./missive-data";

/// Missive chat server: end-to-end encrypted asynchronous 1:1 chat.
///
/// Prints `listening on ADDR (TLS, certificate SHA256:…)` on standard
/// output once it accepts connections. TLS 1.3 is on by default: with the
/// certificate of --tls-cert/--tls-key, or else a self-signed one made on
/// the first start in DATA/tls/ (an ephemeral one with --memory). SIGINT or SIGTERM shut it down gracefully (exit status 0).
/// Logs go to standard error; set RUST_LOG to change the level (default
/// info).
///
/// Durations accept a unit: `250ms`, `30s`, `5m`, `2h`, `30d` (a bare number
/// is seconds).
///
/// `missive-server admin --help`: the operator's commands (users,
/// mailboxes, online backup, restore, remove-user, verify).
///
/// Every setting can be given in a TOML file (--config FILE) under the
/// flag's name (`max-frame = 65536`, `ping-interval = "30s"`,
/// `plaintext = true`, `ws-allowed-origin = ["https://a.example"]`); flags
/// and environment variables override it (a list on the command line
/// replaces the file's). --print-config prints the effective configuration
/// in that format.
///
/// With --cluster the server is one node of a cluster (docs/CLUSTER.md):
/// the state is in the PostgreSQL database of --postgres, shared by every
/// node, which also holds the shard leases; nodes call each other over the
/// NATS server of --nats. Give every node a certificate from one CA
/// (--tls-cert/--tls-key, with the names of its --advertise address), and
/// clients that CA (`missive --ca FILE`): clients are redirected from node
/// to node. TLS to PostgreSQL as for a single server (`sslmode=require` in
/// the --postgres URL, --postgres-ca for a private CA). TLS to NATS: a
/// `tls://host:port` URL, its certificate verified against the system's
/// root certificates or the CA of --nats-ca.
#[derive(Debug, Default, Clone, PartialEq, Parser, Serialize, Deserialize)]
#[command(name = "missive-server", version)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct Args {
    /// Read the settings from this TOML file (keys named as the flags);
    /// flags override it.
    #[arg(long, env = "MISSIVE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Print the effective configuration (defaults, --config file, flags)
    /// as TOML and exit.
    #[arg(long)]
    #[serde(skip)]
    print_config: bool,
    /// How logs are written to standard error: `text` (colours only on a
    /// terminal) or `json` (one object a line).
    #[arg(long, env = "MISSIVE_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    log_format: Option<logging::LogFormat>,
    /// Address to listen on.
    #[arg(long, env = "MISSIVE_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Directory of the durable store (created if missing).
    #[arg(long, env = "MISSIVE_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// Keep everything in memory (nothing survives a restart).
    #[arg(long, conflicts_with = "postgres")]
    memory: bool,
    /// Serve `missive-server admin` on this Unix socket (mode 0600)
    /// [default: DATA/admin.sock with the embedded store; none with
    /// --memory or --postgres].
    #[arg(long, env = "MISSIVE_ADMIN_SOCKET", value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Keep the state in this PostgreSQL database instead of the embedded
    /// store (a `postgres://USER:PASSWORD@HOST:PORT/DATABASE` URL; the
    /// schema is created or migrated at start). DATA still holds the
    /// self-signed certificate. If the database fails while serving, the
    /// server exits with a non-zero status: restart it with a supervisor.
    /// TLS: add `?sslmode=require` (TLS or no connection) or
    /// `sslmode=prefer` (TLS if the server offers it); without `sslmode`
    /// the connection is plaintext. The server's certificate is always
    /// verified (libpq's `verify-full`), against the web PKI roots and
    /// --postgres-ca; TLS 1.3 only.
    #[arg(
        long,
        env = "MISSIVE_POSTGRES",
        value_name = "URL",
        hide_env_values = true
    )]
    postgres: Option<String>,
    /// CA certificates (PEM) the PostgreSQL server's TLS certificate may
    /// be issued by, besides the web PKI roots (a private CA; libpq's
    /// `sslrootcert`, which the URL cannot carry here).
    #[arg(
        long,
        env = "MISSIVE_POSTGRES_CA",
        value_name = "FILE",
        requires = "postgres"
    )]
    postgres_ca: Option<PathBuf>,
    /// Certificate chain (PEM, end-entity first) [default: a self-signed
    /// one in DATA/tls/cert.pem].
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "plaintext"
    )]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        conflicts_with = "plaintext"
    )]
    tls_key: Option<PathBuf>,
    /// No TLS: the protocol right on TCP (benchmarks, behind a TLS
    /// terminator).
    #[arg(long)]
    plaintext: bool,
    /// Also serve WebSocket (subprotocol missive.v1) on ADDR: wss with the
    /// same certificate, ws with --plaintext. WebSocket logins are not
    /// channel-bound (browsers cannot read the TLS exporter), so
    /// --require-channel-binding refuses them. The browser chat page is
    /// served on the same address (https://ADDR/, http://ADDR/ with
    /// --plaintext) unless --no-web-page.
    #[arg(long, value_name = "ADDR")]
    ws_listen: Option<String>,
    /// Do not serve the browser chat page on the --ws-listen address (HTTP
    /// requests other than WebSocket upgrades get 400).
    #[arg(long, requires = "ws_listen")]
    no_web_page: bool,
    /// Let in WebSocket connections from browser pages of ORIGIN only
    /// (repeatable; e.g. https://chat.example.org) [default: any origin].
    /// Requests without an Origin (not from a browser) are always let in.
    #[arg(long, value_name = "ORIGIN", requires = "ws_listen")]
    ws_allowed_origin: Vec<String>,
    /// Serve /metrics (Prometheus), /healthz and /readyz over plain HTTP on
    /// ADDR (e.g. 127.0.0.1:9090). Off unless set; keep it on loopback or
    /// a private network.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Refuse logins without a channel binding (docs/PROTOCOL.md §3.2):
    /// only TLS connections can log in. Leave it off behind a TLS
    /// terminator, which turns every connection into a plaintext one.
    #[arg(long, conflicts_with = "plaintext")]
    require_channel_binding: bool,
    /// Largest frame payload in bytes.
    #[arg(long, value_name = "BYTES")]
    max_frame: Option<u32>,
    /// Largest envelope in bytes (max-frame - 1024 unless set).
    #[arg(long, value_name = "BYTES")]
    max_envelope: Option<u32>,
    /// Unacknowledged deliveries per connection.
    #[arg(long, value_name = "N")]
    window: Option<u32>,
    /// Ping interval announced to clients.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(with = "settings::duration_text")]
    ping_interval: Option<Duration>,
    /// Silent ping intervals before a client is dropped.
    #[arg(long, value_name = "N")]
    missed_pings: Option<u32>,
    /// Time a new connection has to log in.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(with = "settings::duration_text")]
    handshake_timeout: Option<Duration>,
    /// Messages queued per recipient.
    #[arg(long, value_name = "N")]
    queue_max_messages: Option<u32>,
    /// Envelope bytes queued per recipient.
    #[arg(long, value_name = "BYTES")]
    queue_max_bytes: Option<u64>,
    /// Share of a recipient's queue one sender may fill, percent.
    #[arg(long, value_name = "PERCENT", value_parser = parse_sender_share)]
    #[serde(deserialize_with = "sender_share_in_file")]
    sender_share: Option<u8>,
    /// Messages a user may have queued anywhere plus notices for them.
    #[arg(long, value_name = "N")]
    max_outstanding: Option<u32>,
    /// Sustained sends per second per user.
    #[arg(long, value_name = "N")]
    send_rate: Option<u32>,
    /// Burst of sends per user.
    #[arg(long, value_name = "N")]
    send_burst: Option<u32>,
    /// Lifetime of a queued message.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(with = "settings::duration_text")]
    message_ttl: Option<Duration>,
    /// Frames waiting for a slow client before it is dropped.
    #[arg(long, value_name = "N")]
    outbound_frames: Option<usize>,
    /// Bytes waiting for a slow client before it is dropped.
    #[arg(long, value_name = "BYTES")]
    outbound_bytes: Option<usize>,
    /// Most simultaneous connections.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Threads serving the connections (default 1: one thread reads,
    /// routes and writes every connection, with the fewest wake-ups; more
    /// spread socket I/O and TLS over cores, the core stays on one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Run as one node of a cluster (needs --node-id, --advertise,
    /// --postgres and --nats).
    #[arg(
        long,
        requires_all = ["node_id", "advertise", "postgres", "nats"],
        conflicts_with = "memory"
    )]
    cluster: bool,
    /// This node's name, unique in the cluster.
    #[arg(long, env = "MISSIVE_NODE_ID", value_name = "ID", requires = "cluster")]
    node_id: Option<String>,
    /// Where clients reach this node (`host:port`, or a ws:// / wss:// URL):
    /// clients of its users are redirected there.
    #[arg(long, value_name = "ADDR", requires = "cluster")]
    advertise: Option<String>,
    /// The NATS server the nodes call each other through
    /// (`nats://host:port`, `tls://host:port` for TLS).
    #[arg(
        long,
        env = "MISSIVE_NATS",
        value_name = "URL",
        requires = "cluster",
        hide_env_values = true
    )]
    nats: Option<String>,
    /// Verify a tls:// NATS server's certificate against the CAs in FILE
    /// (PEM) instead of the system's root certificates.
    #[arg(long, value_name = "FILE", requires = "nats")]
    nats_ca: Option<PathBuf>,
    /// Shards the users are spread over: a power of two up to 65536, fixed
    /// when the cluster is created (every node must say the same).
    #[arg(long, value_name = "N", requires = "cluster", value_parser = parse_shards)]
    #[serde(deserialize_with = "shards_in_file")]
    shards: Option<u32>,
    /// How long a node's shard leases last without renewal.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "cluster")]
    #[serde(with = "settings::duration_text")]
    lease_ttl: Option<Duration>,
}

/// A shard count: a power of two from 1 to 65536.
fn parse_shards(text: &str) -> Result<u32, String> {
    let n = text
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("`{text}` is not a power of two from 1 to 65536"))?;
    check_shards(n)
}

fn check_shards(n: u32) -> Result<u32, String> {
    if n.is_power_of_two() && n <= 65_536 {
        Ok(n)
    } else {
        Err(format!("{n} is not a power of two from 1 to 65536"))
    }
}

fn shards_in_file<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    settings::checked(d, check_shards)
}

/// A share in percent, from 1 to 100.
fn parse_sender_share(text: &str) -> Result<u8, String> {
    let n = text
        .trim()
        .parse::<u8>()
        .map_err(|_| format!("`{text}` is not a percentage from 1 to 100"))?;
    check_sender_share(n)
}

fn check_sender_share(n: u8) -> Result<u8, String> {
    if (1..=100).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not a percentage from 1 to 100"))
    }
}

fn sender_share_in_file<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    settings::checked(d, check_sender_share)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 250ms, 30s, 5m"))?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{text}` is too long"))
    };
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        other => Err(format!("unknown unit `{other}` (use ms, s, m, h or d)")),
    }
}

/// A duration as [`parse_duration`] reads it, in its largest exact unit.
fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() != 0 || duration.is_zero() {
        return format!("{}ms", duration.as_millis());
    }
    let seconds = duration.as_secs();
    [(86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(unit, _)| seconds.is_multiple_of(*unit))
        .map_or_else(
            || format!("{seconds}s"),
            |(unit, name)| format!("{}{name}", seconds / unit),
        )
}

impl Args {
    fn listen(&self) -> &str {
        self.listen.as_deref().unwrap_or(DEFAULT_LISTEN)
    }

    fn data(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA))
    }

    /// The admin socket: --admin-socket, or DATA/admin.sock on the
    /// embedded store (`on_data`).
    fn admin_socket_path(&self, on_data: bool) -> Option<PathBuf> {
        self.admin_socket
            .clone()
            .or_else(|| on_data.then(|| self.data().join(admin::SOCKET_NAME)))
    }

    /// Threads serving the connections.
    fn threads(&self) -> u16 {
        self.threads.unwrap_or(1)
    }

    /// How long this node's shard leases last.
    fn lease_ttl(&self) -> Duration {
        self.lease_ttl
            .unwrap_or_else(|| CoordinatorOptions::new("", "", "", "").lease_ttl)
    }

    /// Every setting given, with its default where unset (the cluster's
    /// only for a cluster node): what --print-config shows.
    fn with_defaults(self) -> Self {
        let config = self.config();
        let options = self.options();
        Self {
            listen: Some(self.listen().to_owned()),
            log_format: Some(self.log_format.unwrap_or_default()),
            data: Some(self.data()),
            max_frame: Some(config.max_frame),
            max_envelope: Some(config.max_envelope),
            window: Some(config.window),
            ping_interval: Some(config.ping_interval),
            missed_pings: Some(config.missed_pings),
            handshake_timeout: Some(config.handshake_timeout),
            queue_max_messages: Some(config.queue_max_messages),
            queue_max_bytes: Some(config.queue_max_bytes),
            sender_share: Some(config.sender_share_percent),
            max_outstanding: Some(config.max_outstanding_per_sender),
            send_rate: Some(config.send_rate_per_sec),
            send_burst: Some(config.send_burst),
            message_ttl: Some(config.message_ttl),
            outbound_frames: Some(options.queue.max_frames),
            outbound_bytes: Some(options.queue.max_bytes),
            max_connections: Some(options.max_connections),
            threads: Some(self.threads()),
            shards: self.cluster.then(|| self.shard_count()),
            lease_ttl: self.cluster.then(|| self.lease_ttl()),
            ..self
        }
    }

    fn config(&self) -> ServerConfig {
        let mut c = ServerConfig::default();
        c.require_channel_binding = self.require_channel_binding;
        if let Some(v) = self.max_frame {
            c.max_frame = v;
            c.max_envelope = v.saturating_sub(1024);
        }
        if let Some(v) = self.max_envelope {
            c.max_envelope = v;
        }
        if let Some(v) = self.window {
            c.window = v;
        }
        if let Some(v) = self.ping_interval {
            c.ping_interval = v;
        }
        if let Some(v) = self.missed_pings {
            c.missed_pings = v;
        }
        if let Some(v) = self.handshake_timeout {
            c.handshake_timeout = v;
        }
        if let Some(v) = self.queue_max_messages {
            c.queue_max_messages = v;
        }
        if let Some(v) = self.queue_max_bytes {
            c.queue_max_bytes = v;
        }
        if let Some(v) = self.sender_share {
            c.sender_share_percent = v;
        }
        if let Some(v) = self.max_outstanding {
            c.max_outstanding_per_sender = v;
        }
        if let Some(v) = self.send_rate {
            c.send_rate_per_sec = v;
        }
        if let Some(v) = self.send_burst {
            c.send_burst = v;
        }
        if let Some(v) = self.message_ttl {
            c.message_ttl = v;
        }
        if self.cluster {
            c.cluster = Some(ClusterConfig {
                shards: self.shard_count(),
                ..ClusterConfig::default()
            });
        }
        c
    }

    /// What TLS connections to PostgreSQL trust (--postgres-ca).
    fn postgres_tls(&self) -> PostgresTls {
        self.postgres_ca
            .as_ref()
            .map_or_else(PostgresTls::default, PostgresTls::with_ca_file)
    }

    fn shard_count(&self) -> u32 {
        self.shards.unwrap_or(ClusterConfig::default().shards)
    }

    /// How this node joins its cluster, with --cluster.
    fn coordinator(&self) -> Option<CoordinatorOptions> {
        let (true, Some(node_id), Some(advertise), Some(postgres), Some(nats)) = (
            self.cluster,
            &self.node_id,
            &self.advertise,
            &self.postgres,
            &self.nats,
        ) else {
            return None;
        };
        let mut options = CoordinatorOptions::new(node_id, advertise, postgres, nats);
        options.postgres_tls = self.postgres_tls();
        options.shards = self.shard_count();
        options.nats_ca = self.nats_ca.clone();
        options.lease_ttl = self.lease_ttl();
        Some(options)
    }

    fn options(&self) -> ServerOptions {
        let mut o = ServerOptions::default();
        let defaults = QueueLimits::default();
        o.queue = QueueLimits::new(
            self.outbound_frames.unwrap_or(defaults.max_frames),
            self.outbound_bytes.unwrap_or(defaults.max_bytes),
        );
        if let Some(v) = self.max_connections {
            o.max_connections = v;
        }
        o
    }

    fn allowed_origins(&self) -> AllowedOrigins {
        if self.ws_allowed_origin.is_empty() {
            AllowedOrigins::Any
        } else {
            AllowedOrigins::Only(self.ws_allowed_origin.clone())
        }
    }

    /// The chat page to serve on the WebSocket listener: none with
    /// --no-web-page, or when the binary was built without one.
    fn web_page(&self) -> Option<StaticSite> {
        if self.no_web_page {
            return None;
        }
        let site = StaticSite::new(web_page::FILES.iter().copied());
        if site.is_empty() {
            tracing::warn!("built without the chat page (web/ was empty): not serving it");
            return None;
        }
        Some(site)
    }

    /// The WebSocket listener over `inner` (TCP, or TLS when
    /// `page_scheme` is `https`), with the allowed origins and the chat page.
    fn ws_listener<L: Listener>(
        &self,
        inner: L,
        max_frame: u32,
        page_scheme: &str,
    ) -> WsListener<Tokio, L>
    where
        L::Transport: ByteStream,
    {
        let ws = WsListener::<Tokio, _>::new(inner, max_frame)
            .with_allowed_origins(self.allowed_origins());
        let Some(site) = self.web_page() else {
            return ws;
        };
        match ws.local_addr() {
            Ok(addr) => tracing::info!("serving the chat page at {page_scheme}://{addr}/"),
            Err(e) => tracing::info!("serving the chat page ({e})"),
        }
        ws.with_site(site)
    }

    /// The admin listener serving `metrics`, if --admin-listen asks for
    /// one: bound and answering (`/readyz` says 503 until the server
    /// serves). Its address, to announce.
    async fn admin_listener(&self, metrics: &Metrics) -> Result<Option<SocketAddr>, String> {
        let Some(addr) = &self.admin_listen else {
            return Ok(None);
        };
        let admin = AdminListener::<Tokio>::bind(addr.as_str(), metrics.clone())
            .await
            .map_err(|e| format!("cannot start the admin listener on {addr}: {e}"))?;
        let local = admin.local_addr();
        if !local.ip().is_loopback() {
            tracing::warn!(
                addr = %local,
                "the admin listener (metrics, health) on a non-loopback address: plain HTTP, no authentication"
            );
        }
        tracing::info!(addr = %local, "admin listener: /metrics, /healthz, /readyz");
        tokio::spawn(admin.serve());
        Ok(Some(local))
    }

    /// The WebSocket listener's TCP listener, if --ws-listen asks for one.
    async fn ws_tcp(&self) -> Result<Option<missive_tokio::TcpListener>, String> {
        let Some(addr) = &self.ws_listen else {
            return Ok(None);
        };
        listen_tcp::<Tokio>(addr.as_str())
            .await
            .map(Some)
            .map_err(|e| format!("cannot start WebSocket on {addr}: {e}"))
    }
}

/// Resolves on SIGINT or SIGTERM, and tells systemd the server is
/// stopping. The handlers are installed by the call itself, so a signal
/// that comes right after READY=1 is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        let received = |signal: std::io::Result<tokio::signal::unix::Signal>| async move {
            match signal {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        (
            received(signal(SignalKind::interrupt())),
            received(signal(SignalKind::terminate())),
        )
    };
    #[cfg(not(unix))]
    let (interrupt, terminate) = (
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        },
        std::future::pending::<()>(),
    );
    async move {
        tokio::select! {
            () = interrupt => tracing::info!("SIGINT received"),
            () = terminate => tracing::info!("SIGTERM received"),
        }
        notify_service_manager(sd_notify::NotifyState::Stopping);
    }
}

/// Tells systemd (a `Type=notify` unit) how the server is doing; nothing
/// without NOTIFY_SOCKET.
fn notify_service_manager(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "admin")
    {
        return admin::main();
    }
    let args = match settings::from_command_line() {
        Ok(args) => args,
        Err(status) => return status,
    };
    if args.print_config {
        return match args.with_defaults().to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("missive-server: cannot print the configuration: {e}");
                ExitCode::FAILURE
            }
        };
    }
    logging::init(args.log_format.unwrap_or_default(), "info");
    let runtime = match serving_runtime(args.threads()) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("missive-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("missive-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime serving the connections: one thread for everything (the
/// default), or `threads` workers for the connections' tasks beside the main
/// thread, which runs the core's task.
fn serving_runtime(threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.into())
            .enable_all()
            .build()
    }
}

async fn run(args: Args) -> Result<(), String> {
    let metrics = Metrics::new();
    let admin_http = args.admin_listener(&metrics).await?;
    let cluster = args.coordinator().map(|options| Cluster {
        options,
        fence: Fence::default(),
    });
    let mut backup = None;
    let store: Box<dyn Store> = if let Some(cluster) = &cluster {
        // Creates the cluster on first use, or checks its shard count.
        missive_cluster::connect_leases(&cluster.options)
            .await
            .map_err(|e| format!("cannot join the cluster: {e}"))?;
        let url = cluster.options.postgres.clone();
        let tls = cluster.options.postgres_tls.clone();
        let fence = cluster.fence.clone();
        let shards = cluster.options.shards;
        let store = tokio::task::spawn_blocking(move || {
            PostgresStore::connect_node_with(&url, &tls, fence, shards)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?;
        tracing::info!(
            database = store.target(),
            node = %cluster.options.node_id,
            shards,
            "PostgreSQL store opened as a cluster node"
        );
        Box::new(store)
    } else if args.memory {
        tracing::warn!("in-memory store: nothing survives a restart");
        Box::new(MemoryStore::new())
    } else if let Some(url) = args.postgres.clone() {
        let tls = args.postgres_tls();
        let store = tokio::task::spawn_blocking(move || PostgresStore::connect_with(&url, &tls))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?;
        tracing::info!(database = store.target(), "PostgreSQL store opened");
        Box::new(store)
    } else {
        let data = args.data();
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        let opened = data.clone();
        let store = tokio::task::spawn_blocking(move || RedbStore::open(&opened))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot open the store in {}: {e}", data.display()))?;
        tracing::info!(data = %data.display(), "store opened");
        backup = Some(store.backup_handle());
        Box::new(store)
    };
    let admin = args.admin_socket_path(backup.is_some()).map(|path| Admin {
        path,
        backup,
        required: args.admin_socket.is_some(),
    });
    let max_frame = args.config().max_frame;
    let mut options = args.options();
    options.metrics = metrics.clone();
    if args.plaintext {
        let server = BoundServer::<Tokio>::bind_with(args.listen(), args.config(), store, options)
            .await
            .map_err(|e| format!("cannot start on {}: {e}", args.listen()))?;
        if !server.local_addr().ip().is_loopback() {
            tracing::warn!(
                addr = %server.local_addr(),
                "plaintext on a non-loopback address: the network sees everything but the end-to-end encrypted messages"
            );
        }
        let ws = args
            .ws_tcp()
            .await?
            .map(|tcp| args.ws_listener(tcp, max_frame, "http"));
        return serve(server, "plaintext", ws, "ws", cluster, admin, admin_http).await;
    }
    let certificate = certificate(&args)?;
    let fingerprint = certificate_fingerprint(&certificate.chain[0]);
    let tls = driver::server_config(certificate.chain, certificate.key)
        .map_err(|e| format!("TLS: {e}"))?;
    let ws_tls = websocket_server_config(&tls);
    let server =
        BoundServer::<Tokio, _>::bind_tls(args.listen(), tls, args.config(), store, options)
            .await
            .map_err(|e| format!("cannot start on {}: {e}", args.listen()))?;
    let ws = args.ws_tcp().await?.map(|tcp| {
        let tls = TlsListener::<Tokio, _>::new(tcp, ws_tls).counting_failures(&metrics);
        args.ws_listener(tls, max_frame, "https")
    });
    let note = format!("TLS, certificate {fingerprint}");
    serve(server, &note, ws, "wss", cluster, admin, admin_http).await
}

/// Where `missive-server admin` reaches the server, and the store's backup
/// handle (a redb store's).
struct Admin {
    path: PathBuf,
    backup: Option<missive_store::RedbBackup>,
    /// Given with --admin-socket: failing to listen there stops the
    /// server (the default one only warns).
    required: bool,
}

/// What a cluster node needs besides a server: how to join, and the fence
/// its store checks every write against.
struct Cluster {
    options: CoordinatorOptions,
    fence: Fence,
}

/// The server's certificate: the files given, or the self-signed one of the
/// data directory (made on the first start), or an ephemeral one.
fn certificate(args: &Args) -> Result<CertifiedKey, String> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return load_certificate(cert, key).map_err(|e| e.to_string());
    }
    if args.cluster {
        tracing::warn!(
            "a self-signed certificate on a cluster node: clients refuse redirects to it; \
             give every node a certificate of one CA (--tls-cert, --tls-key) and clients that CA (--ca)"
        );
    }
    let listen = args.listen();
    let host = listen
        .rsplit_once(':')
        .map_or(listen, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !host.is_empty() && !names.iter().any(|n| n == host) {
        names.push(host.to_owned());
    }
    if args.memory {
        return self_signed(names).map_err(|e| e.to_string());
    }
    load_or_create_self_signed(&args.data().join("tls"), names).map_err(|e| e.to_string())
}

/// Prints `listening on ADDR (NOTE)` — and `listening on SCHEME://ADDR/
/// (WebSocket, NOTE)` when it serves `ws` too, then `admin on
/// http://ADDR/` with an `admin` listener — and serves until SIGINT or
/// SIGTERM; as a cluster node, with its coordinator, which it stops last.
async fn serve<L: Listener, W: Listener>(
    server: BoundServer<Tokio, L>,
    note: &str,
    ws: Option<W>,
    scheme: &str,
    cluster: Option<Cluster>,
    admin: Option<Admin>,
    admin_http: Option<SocketAddr>,
) -> Result<(), String> {
    // Removed when it is dropped, once the server has stopped.
    let _admin_socket = match admin {
        Some(Admin {
            path,
            backup,
            required,
        }) => {
            let service = missive_runtime::admin::AdminService::new(server.handle(), backup);
            match admin_socket::AdminSocket::bind(&path, service) {
                Ok(socket) => Some(socket),
                Err(e) if required => return Err(e),
                Err(e) => {
                    tracing::warn!("no admin socket (set --admin-socket): {e}");
                    None
                }
            }
        }
        None => None,
    };
    let (server, coordinator) = match cluster {
        Some(Cluster { options, fence }) => {
            let (link, port) = cluster_link();
            let node = options.node_id.clone();
            let coordinator = Coordinator::spawn(options, fence, port)
                .map_err(|e| format!("cannot start the cluster coordinator: {e}"))?;
            tracing::info!(%node, "cluster coordinator started");
            (server.with_cluster(link), Some(coordinator))
        }
        None => (server, None),
    };
    let served = announce_and_serve(server, note, ws, scheme, admin_http).await;
    if let Some(coordinator) = coordinator {
        // The engine told it to stop (or is gone): it hands its leases back.
        let _ = tokio::task::spawn_blocking(move || coordinator.join()).await;
    }
    served
}

async fn announce_and_serve<L: Listener, W: Listener>(
    server: BoundServer<Tokio, L>,
    note: &str,
    ws: Option<W>,
    scheme: &str,
    admin_http: Option<SocketAddr>,
) -> Result<(), String> {
    let shutdown = shutdown_signal();
    let mut lines = vec![format!("listening on {} ({note})", server.local_addr())];
    if let Some(ws) = &ws {
        let addr = ws.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%addr, "serving WebSocket");
        lines.push(format!(
            "listening on {scheme}://{addr}/ (WebSocket, {note})"
        ));
    }
    if let Some(addr) = admin_http {
        lines.push(format!(
            "admin on http://{addr}/ (metrics, healthz, readyz)"
        ));
    }
    {
        let mut stdout = std::io::stdout().lock();
        for line in lines {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
    }
    notify_service_manager(sd_notify::NotifyState::Ready);
    match ws {
        Some(ws) => run_server(server.and_listener(ws), shutdown).await,
        None => run_server(server, shutdown).await,
    }
}

/// Serves until `shutdown` (SIGINT or SIGTERM).
async fn run_server<L: Listener>(
    server: BoundServer<Tokio, L>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let report = server
        .serve_until(shutdown)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        connections = report.engine.accepted,
        commits = report.store.commits,
        "bye"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn durations_print_as_they_parse() {
        for (duration, text) in [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::ZERO, "0ms"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(30 * 86_400), "30d"),
        ] {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration));
        }
    }

    #[test]
    fn require_channel_binding_reaches_the_core() {
        use clap::Parser;
        let args = Args::parse_from(["missive-server", "--require-channel-binding"]);
        assert!(args.config().require_channel_binding);
        let args = Args::parse_from(["missive-server"]);
        assert!(!args.config().require_channel_binding);
        assert!(
            Args::try_parse_from(["missive-server", "--require-channel-binding", "--plaintext"])
                .is_err()
        );
    }

    #[test]
    fn websocket_flags() {
        use clap::Parser;
        let args = Args::parse_from(["missive-server"]);
        assert_eq!(args.ws_listen, None, "off by default");
        assert_eq!(args.allowed_origins(), AllowedOrigins::Any);
        assert!(!args.no_web_page, "the page is served by default");
        let args = Args::parse_from([
            "missive-server",
            "--ws-listen",
            "127.0.0.1:7879",
            "--ws-allowed-origin",
            "https://a.example",
            "--ws-allowed-origin",
            "https://b.example",
        ]);
        assert_eq!(args.ws_listen.as_deref(), Some("127.0.0.1:7879"));
        assert_eq!(
            args.allowed_origins(),
            AllowedOrigins::Only(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert!(
            Args::try_parse_from(["missive-server", "--ws-allowed-origin", "https://a.example"])
                .is_err(),
            "an origin without --ws-listen"
        );
        let args = Args::parse_from([
            "missive-server",
            "--ws-listen",
            "127.0.0.1:7879",
            "--no-web-page",
        ]);
        assert_eq!(args.web_page(), None);
        assert!(
            Args::try_parse_from(["missive-server", "--no-web-page"]).is_err(),
            "--no-web-page without --ws-listen"
        );
    }

    #[test]
    fn the_embedded_page_leaves_out_the_tests_and_the_npm_files() {
        for (path, _) in web_page::FILES {
            assert!(path.starts_with('/'), "{path}");
            let top = path.split('/').nth(1).unwrap_or_default();
            assert!(
                !["e2e", "node_modules", "package.json", "package-lock.json"].contains(&top),
                "{path} is embedded"
            );
            assert!(
                !path.split('/').any(|part| part.starts_with('.')),
                "{path}: a dotfile"
            );
        }
        let site = Args::parse_from(["missive-server", "--ws-listen", "127.0.0.1:7879"]).web_page();
        match site {
            Some(site) => assert!(site.file("/").is_some(), "web/ without index.html"),
            None => assert!(
                web_page::FILES.is_empty(),
                "built with the page, not served"
            ),
        }
    }

    #[test]
    fn postgres_url_from_flag_or_environment() {
        use clap::Parser;
        let args = Args::parse_from(["missive-server", "--postgres", "postgres://h/db"]);
        assert_eq!(args.postgres.as_deref(), Some("postgres://h/db"));
        assert!(
            Args::try_parse_from([
                "missive-server",
                "--postgres",
                "postgres://h/db",
                "--memory"
            ])
            .is_err()
        );
        // The environment variable is read by clap's `env` (checked end to
        // end in tests/postgres.rs, which sets it on the child process).
        assert_eq!(env_of("postgres").as_deref(), Some("MISSIVE_POSTGRES"));
    }

    /// The environment variable clap reads argument `id` from.
    fn env_of(id: &str) -> Option<String> {
        let command = <Args as clap::CommandFactory>::command();
        let arg = command.get_arguments().find(|a| a.get_id() == id)?;
        arg.get_env().map(|env| env.to_string_lossy().into_owned())
    }

    #[test]
    fn postgres_ca_from_flag_or_environment() {
        use clap::Parser;
        let url = "postgres://h/db?sslmode=require";
        let args = Args::parse_from(["missive-server", "--postgres", url]);
        assert_eq!(args.postgres_tls(), PostgresTls::default());
        let args = Args::parse_from([
            "missive-server",
            "--postgres",
            url,
            "--postgres-ca",
            "ca.pem",
        ]);
        assert_eq!(args.postgres_tls(), PostgresTls::with_ca_file("ca.pem"));
        assert!(
            Args::try_parse_from(["missive-server", "--postgres-ca", "ca.pem"]).is_err(),
            "a CA without --postgres"
        );
        let cluster = Args::parse_from([
            "missive-server",
            "--cluster",
            "--node-id",
            "n1",
            "--advertise",
            "127.0.0.2:7878",
            "--postgres",
            url,
            "--postgres-ca",
            "ca.pem",
            "--nats",
            "nats://127.0.0.1:4222",
        ]);
        assert_eq!(
            cluster.coordinator().unwrap().postgres_tls,
            PostgresTls::with_ca_file("ca.pem"),
            "the leases trust it too"
        );
        assert_eq!(
            env_of("postgres_ca").as_deref(),
            Some("MISSIVE_POSTGRES_CA")
        );
    }

    #[test]
    fn cluster_flags() {
        use clap::Parser;
        let cluster = [
            "missive-server",
            "--cluster",
            "--node-id",
            "n1",
            "--advertise",
            "127.0.0.2:7878",
            "--postgres",
            "postgres://h/db",
            "--nats",
            "nats://127.0.0.1:4222",
        ];
        let args = Args::parse_from(cluster);
        let config = args.config().cluster.expect("cluster mode");
        assert_eq!(config.shards, 256, "the default shard count");
        let options = args.coordinator().unwrap();
        assert_eq!(options.lease_ttl, Duration::from_secs(6));
        assert_eq!(options.advertise, "127.0.0.2:7878");
        let args = Args::parse_from(cluster.iter().copied().chain([
            "--shards",
            "64",
            "--lease-ttl",
            "3s",
        ]));
        assert_eq!(args.config().cluster.unwrap().shards, 64);
        assert_eq!(
            args.coordinator().unwrap().lease_ttl,
            Duration::from_secs(3)
        );
        assert_eq!(
            args.coordinator().unwrap().nats_ca,
            None,
            "the system's roots"
        );
        let args = Args::parse_from(cluster.iter().copied().chain(["--nats-ca", "ca.pem"]));
        assert_eq!(
            args.coordinator().unwrap().nats_ca,
            Some(PathBuf::from("ca.pem"))
        );
        assert!(
            Args::try_parse_from(cluster.iter().copied().chain(["--shards", "100"])).is_err(),
            "not a power of two"
        );
        assert!(
            Args::try_parse_from([
                "missive-server",
                "--cluster",
                "--postgres",
                "postgres://h/db"
            ])
            .is_err(),
            "cluster mode needs NATS, a node id and an address"
        );
        assert!(
            Args::try_parse_from(["missive-server", "--nats", "nats://h:1"]).is_err(),
            "NATS only in cluster mode"
        );
        let single = Args::parse_from(["missive-server"]);
        assert!(
            single.config().cluster.is_none(),
            "a single server by default"
        );
        assert!(single.coordinator().is_none());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
