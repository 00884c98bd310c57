//! `missive-server`: the Missive chat server (TLS 1.3 over TCP by default,
//! tokio, embedded redb store).
#![forbid(unsafe_code)]

use clap::Parser;
use missive_core::server::ServerConfig;
use missive_runtime::driver::{
    self, AllowedOrigins, BoundServer, CertifiedKey, Listener, TlsListener, WsListener,
    certificate_fingerprint, listen_tcp, load_certificate, load_or_create_self_signed, self_signed,
    websocket_server_config,
};
use missive_store::{MemoryStore, PostgresStore, RedbStore, Store};
use missive_tokio::{QueueLimits, ServerOptions, Tokio};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

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
#[derive(Debug, Parser)]
#[command(name = "missive-server", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MISSIVE_LISTEN", default_value = "127.0.0.1:7878")]
    listen: String,
    /// Directory of the durable store (created if missing).
    #[arg(long, env = "MISSIVE_DATA", default_value = "./missive-data")]
    data: PathBuf,
    /// Keep everything in memory (nothing survives a restart).
    #[arg(long, conflicts_with = "postgres")]
    memory: bool,
    /// Keep the state in this PostgreSQL database instead of the embedded
    /// store (a `postgres://USER:PASSWORD@HOST:PORT/DATABASE` URL; the
    /// schema is created or migrated at start). DATA still holds the
    /// self-signed certificate. If the database fails while serving, the
    /// server exits with a non-zero status: restart it with a supervisor.
    #[arg(
        long,
        env = "MISSIVE_POSTGRES",
        value_name = "URL",
        hide_env_values = true
    )]
    postgres: Option<String>,
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
    /// --require-channel-binding refuses them.
    #[arg(long, value_name = "ADDR")]
    ws_listen: Option<String>,
    /// Let in WebSocket connections from browser pages of ORIGIN only
    /// (repeatable; e.g. https://chat.example.org) [default: any origin].
    /// Requests without an Origin (not from a browser) are always let in.
    #[arg(long, value_name = "ORIGIN", requires = "ws_listen")]
    ws_allowed_origin: Vec<String>,
    /// Refuse logins without a channel binding (docs/PROTOCOL.md §3.2):
    /// only TLS connections can log in. Leave it off behind a TLS
    /// terminator, which turns every connection into a plaintext one.
    #[arg(long, conflicts_with = "plaintext")]
    require_channel_binding: bool,
    /// Largest frame payload in bytes [default: 262144].
    #[arg(long, value_name = "BYTES")]
    max_frame: Option<u32>,
    /// Largest envelope in bytes [default: max-frame - 1024].
    #[arg(long, value_name = "BYTES")]
    max_envelope: Option<u32>,
    /// Unacknowledged deliveries per connection [default: 256].
    #[arg(long, value_name = "N")]
    window: Option<u32>,
    /// Ping interval announced to clients [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ping_interval: Option<Duration>,
    /// Silent ping intervals before a client is dropped [default: 3].
    #[arg(long, value_name = "N")]
    missed_pings: Option<u32>,
    /// Time a new connection has to log in [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    handshake_timeout: Option<Duration>,
    /// Messages queued per recipient [default: 1000].
    #[arg(long, value_name = "N")]
    queue_max_messages: Option<u32>,
    /// Envelope bytes queued per recipient [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    queue_max_bytes: Option<u64>,
    /// Share of a recipient's queue one sender may fill, percent [default: 50].
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    sender_share: Option<u8>,
    /// Messages a user may have queued anywhere plus notices for them [default: 10000].
    #[arg(long, value_name = "N")]
    max_outstanding: Option<u32>,
    /// Sustained sends per second per user [default: 100].
    #[arg(long, value_name = "N")]
    send_rate: Option<u32>,
    /// Burst of sends per user [default: 1000].
    #[arg(long, value_name = "N")]
    send_burst: Option<u32>,
    /// Lifetime of a queued message [default: 30d].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    message_ttl: Option<Duration>,
    /// Frames waiting for a slow client before it is dropped [default: 1024].
    #[arg(long, value_name = "N")]
    outbound_frames: Option<usize>,
    /// Bytes waiting for a slow client before it is dropped [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    outbound_bytes: Option<usize>,
    /// Most simultaneous connections [default: 10000].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
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

impl Args {
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
        c
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

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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

async fn run(args: Args) -> Result<(), String> {
    let store: Box<dyn Store> = if args.memory {
        tracing::warn!("in-memory store: nothing survives a restart");
        Box::new(MemoryStore::new())
    } else if let Some(url) = args.postgres.clone() {
        let store = tokio::task::spawn_blocking(move || PostgresStore::connect(&url))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?;
        tracing::info!(database = store.target(), "PostgreSQL store opened");
        Box::new(store)
    } else {
        std::fs::create_dir_all(&args.data).map_err(|e| format!("{}: {e}", args.data.display()))?;
        let data = args.data.clone();
        let store = tokio::task::spawn_blocking(move || RedbStore::open(&data))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot open the store in {}: {e}", args.data.display()))?;
        tracing::info!(data = %args.data.display(), "store opened");
        Box::new(store)
    };
    let max_frame = args.config().max_frame;
    let origins = args.allowed_origins();
    if args.plaintext {
        let server = BoundServer::<Tokio>::bind_with(
            args.listen.as_str(),
            args.config(),
            store,
            args.options(),
        )
        .await
        .map_err(|e| format!("cannot start on {}: {e}", args.listen))?;
        if !server.local_addr().ip().is_loopback() {
            tracing::warn!(
                addr = %server.local_addr(),
                "plaintext on a non-loopback address: the network sees everything but the end-to-end encrypted messages"
            );
        }
        let ws = args
            .ws_tcp()
            .await?
            .map(|tcp| WsListener::<Tokio, _>::new(tcp, max_frame).with_allowed_origins(origins));
        return serve(server, "plaintext", ws, "ws").await;
    }
    let certificate = certificate(&args)?;
    let fingerprint = certificate_fingerprint(&certificate.chain[0]);
    let tls = driver::server_config(certificate.chain, certificate.key)
        .map_err(|e| format!("TLS: {e}"))?;
    let ws_tls = websocket_server_config(&tls);
    let server = BoundServer::<Tokio, _>::bind_tls(
        args.listen.as_str(),
        tls,
        args.config(),
        store,
        args.options(),
    )
    .await
    .map_err(|e| format!("cannot start on {}: {e}", args.listen))?;
    let ws = args.ws_tcp().await?.map(|tcp| {
        let tls = TlsListener::<Tokio, _>::new(tcp, ws_tls);
        WsListener::<Tokio, _>::new(tls, max_frame).with_allowed_origins(origins)
    });
    let note = format!("TLS, certificate {fingerprint}");
    serve(server, &note, ws, "wss").await
}

/// The server's certificate: the files given, or the self-signed one of the
/// data directory (made on the first start), or an ephemeral one.
fn certificate(args: &Args) -> Result<CertifiedKey, String> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return load_certificate(cert, key).map_err(|e| e.to_string());
    }
    let host = args
        .listen
        .rsplit_once(':')
        .map_or(args.listen.as_str(), |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !host.is_empty() && !names.iter().any(|n| n == host) {
        names.push(host.to_owned());
    }
    if args.memory {
        return self_signed(names).map_err(|e| e.to_string());
    }
    load_or_create_self_signed(&args.data.join("tls"), names).map_err(|e| e.to_string())
}

/// Prints `listening on ADDR (NOTE)` — and `listening on SCHEME://ADDR/
/// (WebSocket, NOTE)` when it serves `ws` too — and serves until SIGINT or
/// SIGTERM.
async fn serve<L: Listener, W: Listener>(
    server: BoundServer<Tokio, L>,
    note: &str,
    ws: Option<W>,
    scheme: &str,
) -> Result<(), String> {
    let mut lines = vec![format!("listening on {} ({note})", server.local_addr())];
    if let Some(ws) = &ws {
        let addr = ws.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%addr, "serving WebSocket");
        lines.push(format!(
            "listening on {scheme}://{addr}/ (WebSocket, {note})"
        ));
    }
    {
        let mut stdout = std::io::stdout().lock();
        for line in lines {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
    }
    match ws {
        Some(ws) => run_server(server.and_listener(ws)).await,
        None => run_server(server).await,
    }
}

/// Serves until SIGINT or SIGTERM.
async fn run_server<L: Listener>(server: BoundServer<Tokio, L>) -> Result<(), String> {
    let report = server
        .serve_until(shutdown_signal())
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
        let command = <Args as clap::CommandFactory>::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "postgres")
            .unwrap();
        assert_eq!(
            arg.get_env(),
            Some(std::ffi::OsStr::new("MISSIVE_POSTGRES"))
        );
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
