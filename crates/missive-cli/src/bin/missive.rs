//! `missive`: the Missive command-line client.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use missive_core::UserName;
use missive_core::client::{
    Client, ClientConfig, ClientEvent, LoginError, Registration, SendFailure,
};
use missive_core::crypto::Fingerprint;
use missive_runtime::driver::{
    ClientHandle, Connector, KnownServers, TcpConnector, TlsConnector, WsAddress, WsConnector,
    load_certificate_authorities, pinning_client_config, web_pki_roots,
};
use missive_runtime::{ClientHome, UserHome, os_seed, unix_ms_now};
use missive_tokio::{ClientOptions, ConnectError, PresenceError, SendError, Tokio};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[path = "../logging.rs"]
mod logging;

const EXIT_HELP: &str = "\
Exit status:
  0  success
  1  other error (I/O, home directory, unexpected server answer)
  2  bad input (usage, invalid user name)
  3  server unreachable (or the connection dropped before login)
  4  not registered (the server does not know --user, or HOME has no key for it)
  5  unknown user (the recipient or queried user does not exist / has no pinned key)
  6  key changed (the recipient's key differs from the pinned one; see `trust`)
  7  queue full (the recipient's queue is full; try again later)
  8  name taken (`register`: the name belongs to another key)
  9  timed out (no answer in time, or `listen --count` not reached)
 10  server certificate changed (differs from the pinned one; see `trust-server`)
 11  redirected to an untrusted node (its certificate does not chain to --ca)

TLS: the server's certificate must chain to the web PKI roots (or to --ca);
a self-signed one is trusted on first use and its fingerprint pinned in
HOME/known_servers, like SSH's known_hosts.

Cluster: a node that does not serve --user redirects the client to the one
that does, and the client follows (at most 3 redirects in a row). Give the
cluster's CA with --ca: a node redirected to must present a certificate of
that CA naming its address; a pinned self-signed certificate is never
extended to another node.";

/// Missive: end-to-end encrypted asynchronous 1:1 chat.
///
/// Keys and state live in HOME/USER/ (private key `key.pem`, mode 0600).
/// Start with `missive --user NAME register`.
#[derive(Debug, Parser)]
#[command(name = "missive", version, after_help = EXIT_HELP)]
struct Args {
    /// Server address: host:port (TLS, or plain TCP with --plaintext), or a
    /// WebSocket URL ws://host:port/ or wss://host:port/.
    #[arg(
        long,
        global = true,
        env = "MISSIVE_SERVER",
        default_value = "127.0.0.1:7878"
    )]
    server: String,
    /// Client home directory [default: ~/.missive].
    #[arg(long, global = true, env = "MISSIVE_HOME")]
    home: Option<PathBuf>,
    /// Your user name (1-32 characters of a-z 0-9 . _ -).
    #[arg(long, global = true, env = "MISSIVE_USER")]
    user: Option<String>,
    /// Talk to a plaintext server (no TLS).
    #[arg(long, global = true)]
    plaintext: bool,
    /// Trust the certificate authorities in FILE (PEM) instead of the web
    /// PKI roots.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Seconds to wait for the server's answers.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECONDS")]
    wait: u64,
    /// How logs are written to standard error: `text` (colours only on a
    /// terminal) or `json` (one object a line).
    #[arg(
        long,
        global = true,
        env = "MISSIVE_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create your key (if needed) and register your user name.
    Register,
    /// Send a message (the text argument, or standard input).
    Send {
        /// Recipient.
        to: String,
        /// Text of the message (several words are joined with spaces);
        /// read from standard input when absent.
        #[arg(value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Receive messages and print them as `sender: text` lines.
    Listen {
        /// Print JSON lines: {"from", "id", "sent_at", "body"}.
        #[arg(long)]
        json: bool,
        /// Stop after N messages (messages that arrived with the last one
        /// are printed too: the client has acknowledged them).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Stop after S seconds (exit 9 if --count was not reached).
        #[arg(long, value_name = "S")]
        timeout: Option<f64>,
    },
    /// Show your key's fingerprint, or the one pinned for USER.
    Fingerprint {
        /// Whose pinned key (default: your own key).
        #[arg(value_name = "USER")]
        whose: Option<String>,
    },
    /// Show whether USER is online.
    Presence {
        /// Whose presence.
        #[arg(value_name = "USER")]
        whose: String,
    },
    /// Trust USER's new key after a key change (forget the pinned one).
    Trust {
        /// Whose key.
        #[arg(value_name = "USER")]
        whose: String,
    },
    /// Trust the server's new certificate after a change (forget the
    /// pinned one; the next connection pins the certificate it presents).
    TrustServer,
}

/// A failure: the message for standard error and the exit status.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

const OTHER: u8 = 1;
const BAD_INPUT: u8 = 2;
const UNREACHABLE: u8 = 3;
const NOT_REGISTERED: u8 = 4;
const UNKNOWN_USER: u8 = 5;
const KEY_CHANGED: u8 = 6;
const QUEUE_FULL: u8 = 7;
const NAME_TAKEN: u8 = 8;
const TIMED_OUT: u8 = 9;
const CERTIFICATE_CHANGED: u8 = 10;
const UNTRUSTED_REDIRECT: u8 = 11;

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Self {
        let code = match &e {
            ConnectError::Unreachable { .. }
            | ConnectError::Disconnected
            | ConnectError::RedirectLoop { .. } => UNREACHABLE,
            ConnectError::NoKey { .. } | ConnectError::Login(LoginError::NotRegistered { .. }) => {
                NOT_REGISTERED
            }
            ConnectError::Login(LoginError::NameTaken { .. }) => NAME_TAKEN,
            ConnectError::ServerCertificateChanged(_) => CERTIFICATE_CHANGED,
            ConnectError::UntrustedRedirect { .. } => UNTRUSTED_REDIRECT,
            _ => OTHER,
        };
        let hint = match &e {
            ConnectError::NoKey { user }
            | ConnectError::Login(LoginError::NotRegistered { user }) => {
                format!(" (run `missive --user {user} register` first)")
            }
            _ => String::new(),
        };
        Failure::new(code, format!("{e}{hint}"))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(args.log_format, "warn");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("missive: cannot start the runtime: {e}");
            return ExitCode::from(OTHER);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("missive: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn user_name(name: &str) -> Result<UserName, Failure> {
    UserName::new(name)
        .map_err(|e| Failure::new(BAD_INPUT, format!("invalid user name `{name}`: {e}")))
}

async fn run(args: Args) -> Result<(), Failure> {
    let Some(user) = args.user.as_deref() else {
        return Err(Failure::new(
            BAD_INPUT,
            "no user: pass --user NAME or set MISSIVE_USER",
        ));
    };
    let user = user_name(user)?;
    let home = match args.home.clone().or_else(ClientHome::default_root) {
        Some(home) => home,
        None => {
            return Err(Failure::new(
                BAD_INPUT,
                "no home directory: pass --home DIR or set MISSIVE_HOME",
            ));
        }
    };
    let wait = Duration::from_secs(args.wait.max(1));
    let websocket = WsAddress::parse(&args.server);
    if args.server.contains("://") && websocket.is_none() {
        return Err(Failure::new(
            BAD_INPUT,
            format!(
                "bad --server {}: use host:port, ws://host:port/ or wss://host:port/",
                args.server
            ),
        ));
    }
    // The address the connection (and the pinned certificate) goes by.
    let server = websocket
        .as_ref()
        .map_or(args.server.clone(), |ws| ws.addr.clone());
    let mut options = ClientOptions::new(server.clone(), home.clone(), user.clone());
    options.registration = Registration::Never;
    options.generate_key = false;
    options.connect_timeout = wait;
    // Only `listen` takes deliveries: every other command's session starts
    // offline (the core says so before logging in), so that it never
    // receives, and acknowledges, a message meant for `listen`.
    options.start_online = false;
    let user_home = ClientHome::new(&home).user(&user);
    let known = KnownServers::new(home.join("known_servers"));
    let command = match args.command {
        Command::Fingerprint { whose } => return fingerprint(&user_home, whose),
        Command::Trust { whose: other } => return trust(&user_home, user_name(&other)?),
        Command::TrustServer => return trust_server(&known, &server),
        command => command,
    };
    if let Some(ws) = &websocket
        && !ws.tls
    {
        let connector = WsConnector::<Tokio, _>::plain();
        return networked(connector, command, options, &user_home, wait).await;
    }
    if args.plaintext {
        if websocket.is_some() {
            return Err(Failure::new(
                BAD_INPUT,
                "--plaintext contradicts a wss:// server",
            ));
        }
        return networked(
            TcpConnector::<Tokio>::default(),
            command,
            options,
            &user_home,
            wait,
        )
        .await;
    }
    let roots = match &args.ca {
        Some(ca) => load_certificate_authorities(ca)
            .map_err(|e| Failure::new(BAD_INPUT, format!("--ca: {e}")))?,
        None => web_pki_roots(),
    };
    let first_use = known
        .pinned(&server)
        .map_err(|e| Failure::new(OTHER, format!("{}: {e}", known.path().display())))?
        .is_none();
    let config = pinning_client_config(&server, roots, known.clone())
        .map_err(|e| Failure::new(OTHER, format!("TLS: {e}")))?;
    let result = if websocket.is_some() {
        let connector = WsConnector::<Tokio, _>::tls(&config);
        networked(connector, command, options, &user_home, wait).await
    } else {
        let connector = TlsConnector::<Tokio>::new(config);
        networked(connector, command, options, &user_home, wait).await
    };
    if first_use && let Ok(Some(pinned)) = known.pinned(&server) {
        eprintln!(
            "trusted the self-signed certificate of {server} on first use: {pinned} (pinned in {})",
            known.path().display()
        );
    }
    result
}

/// The commands that talk to the server, over `connector`.
async fn networked<C: Connector>(
    connector: C,
    command: Command,
    options: ClientOptions,
    user_home: &UserHome,
    wait: Duration,
) -> Result<(), Failure> {
    match command {
        Command::Register => register(connector, options, user_home).await,
        Command::Send { to, text } => {
            let to = user_name(&to)?;
            let body = if text.is_empty() {
                read_stdin()?
            } else {
                text.join(" ")
            };
            send(connector, options, to, body, wait).await
        }
        Command::Listen {
            json,
            count,
            timeout,
        } => {
            let timeout = match timeout {
                Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
                Some(s) => return Err(Failure::new(BAD_INPUT, format!("bad --timeout {s}"))),
                None => None,
            };
            listen(connector, options, json, count, timeout).await
        }
        Command::Presence { whose: other } => {
            presence(connector, options, user_name(&other)?, wait).await
        }
        Command::Fingerprint { .. } | Command::Trust { .. } | Command::TrustServer => {
            unreachable!("answered without the server")
        }
    }
}

/// Shows the user's key's fingerprint, or the one pinned for `whose`.
fn fingerprint(user_home: &UserHome, whose: Option<String>) -> Result<(), Failure> {
    match whose {
        None => {
            let identity = load_identity(user_home)?;
            println!("{}", identity.public_key().fingerprint());
            Ok(())
        }
        Some(other) => {
            let other = user_name(&other)?;
            let state = user_home
                .load_state()
                .map_err(|e| Failure::new(OTHER, e.to_string()))?;
            match state.pinned_key(&other) {
                Some(der) => {
                    println!("{}", Fingerprint::of_spki_der(der));
                    Ok(())
                }
                None => Err(Failure::new(
                    UNKNOWN_USER,
                    format!(
                        "no key pinned for {other} (keys are pinned on the first message to them)"
                    ),
                )),
            }
        }
    }
}

/// Forgets the certificate pinned for `server`.
fn trust_server(known: &KnownServers, server: &str) -> Result<(), Failure> {
    let pinned = known
        .pinned(server)
        .and_then(|pinned| known.forget(server).map(|_| pinned))
        .map_err(|e| Failure::new(OTHER, format!("{}: {e}", known.path().display())))?;
    match pinned {
        Some(fingerprint) => println!(
            "forgot the certificate pinned for {server} ({fingerprint}): the next connection pins the one it presents"
        ),
        None => println!("no certificate pinned for {server}"),
    }
    Ok(())
}

fn read_stdin() -> Result<String, Failure> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        Failure::new(
            BAD_INPUT,
            format!("cannot read the message from standard input: {e}"),
        )
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

fn load_identity(home: &UserHome) -> Result<missive_core::crypto::Identity, Failure> {
    match home.load_identity() {
        Ok(Some(identity)) => Ok(identity),
        Ok(None) => Err(Failure::new(
            NOT_REGISTERED,
            format!(
                "no key for {} in {} (run `missive --user {} register` first)",
                home.user(),
                home.dir().display(),
                home.user()
            ),
        )),
        Err(e) => Err(Failure::new(OTHER, e.to_string())),
    }
}

async fn register<C: Connector>(
    connector: C,
    mut options: ClientOptions,
    home: &UserHome,
) -> Result<(), Failure> {
    if !home.has_identity() {
        let bits = options.key_bits;
        let home = home.clone();
        let interactive = std::io::stderr().is_terminal();
        eprintln!("generating a {bits}-bit RSA key for {}...", home.user());
        tokio::task::spawn_blocking(move || {
            home.load_or_generate_identity(bits, |elapsed| {
                if interactive {
                    eprint!("\r  {:.1} s", elapsed.as_secs_f64());
                    let _ = std::io::stderr().flush();
                }
            })
        })
        .await
        .map_err(|e| Failure::new(OTHER, e.to_string()))?
        .map_err(|e| Failure::new(OTHER, e.to_string()))?;
        if interactive {
            eprintln!();
        }
    }
    // Registering again with the same key succeeds; a name registered
    // with another key fails with NameTaken.
    options.registration = Registration::Always;
    let user = options.user.clone();
    let (client, _events) = ClientHandle::<Tokio, C>::connect_with(connector, options).await?;
    println!("registered {user}");
    println!("fingerprint {}", client.fingerprint());
    client
        .close()
        .await
        .map_err(|e| Failure::new(OTHER, e.to_string()))
}

async fn send<C: Connector>(
    connector: C,
    options: ClientOptions,
    to: UserName,
    body: String,
    wait: Duration,
) -> Result<(), Failure> {
    let (client, _events) = ClientHandle::<Tokio, C>::connect_with(connector, options).await?;
    let result = tokio::time::timeout(wait, client.send(to.clone(), body)).await;
    let closed = client.close().await;
    let id = match result {
        Err(_) => {
            return Err(Failure::new(
                TIMED_OUT,
                format!(
                    "no answer from the server in {wait:?}; the message stays in the outbox and goes out with the next command"
                ),
            ));
        }
        Ok(Ok(id)) => id,
        Ok(Err(e)) => {
            let code = match &e {
                SendError::Refused { reason, .. } => match reason {
                    SendFailure::UnknownUser => UNKNOWN_USER,
                    SendFailure::KeyChanged => KEY_CHANGED,
                    SendFailure::QueueFull => QUEUE_FULL,
                    SendFailure::TooLarge => BAD_INPUT,
                    _ => OTHER,
                },
                SendError::NotQueued(_) => BAD_INPUT,
                _ => OTHER,
            };
            let hint = match &e {
                SendError::Refused {
                    to,
                    reason: SendFailure::KeyChanged,
                } => format!(
                    " (check `missive fingerprint {to}` with them, then `missive trust {to}`)"
                ),
                _ => String::new(),
            };
            return Err(Failure::new(code, format!("{e}{hint}")));
        }
    };
    closed.map_err(|e| Failure::new(OTHER, e.to_string()))?;
    println!("{id}");
    Ok(())
}

async fn listen<C: Connector>(
    connector: C,
    mut options: ClientOptions,
    json: bool,
    count: Option<u64>,
    timeout: Option<Duration>,
) -> Result<(), Failure> {
    let deadline = timeout.map(|t| Instant::now() + t);
    options.start_online = true;
    let (client, mut events) = ClientHandle::<Tokio, C>::connect_with(connector, options).await?;
    let mut received = 0u64;
    let lost = loop {
        if count.is_some_and(|n| received >= n) {
            break false;
        }
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            event = events.recv() => event,
            () = sleep => break false,
            _ = tokio::signal::ctrl_c() => break false,
        };
        match event {
            Some(event) => received += show(event, json),
            None => break true,
        }
    };
    client
        .close()
        .await
        .map_err(|e| Failure::new(OTHER, e.to_string()))?;
    // The client acknowledges every message it receives: print those that
    // arrived with the last ones too, so that none is lost.
    while let Ok(Some(event)) = events.try_recv() {
        received += show(event, json);
    }
    if lost {
        // Stopped by itself: why, typed, when reconnecting could not help
        // (e.g. the server's certificate changed: exit status 10).
        return Err(match events.gave_up() {
            Some(reason) => reason.into(),
            None => Failure::new(UNREACHABLE, "the connection to the server was lost"),
        });
    }
    match count {
        Some(n) if received < n => Err(Failure::new(
            TIMED_OUT,
            format!("received {received} of {n} messages before the timeout"),
        )),
        _ => Ok(()),
    }
}

/// Prints a message on standard output (other events on standard error);
/// returns 1 for a message, 0 otherwise.
fn show(event: ClientEvent, json: bool) -> u64 {
    match event {
        ClientEvent::MessageReceived {
            from,
            id,
            sent_at,
            body,
        } => {
            let text = String::from_utf8_lossy(&body);
            let line = if json {
                serde_json::json!({
                    "from": from.as_str(),
                    "id": id.to_string(),
                    "sent_at": sent_at,
                    "body": text,
                })
                .to_string()
            } else {
                format!("{from}: {text}")
            };
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
            return 1;
        }
        ClientEvent::UndecryptableMessage { from, id, error } => {
            eprintln!("missive: a message from {from} ({id}) could not be opened: {error}");
        }
        ClientEvent::KeyChanged {
            user,
            pinned,
            offered,
        } => {
            eprintln!("missive: WARNING: {user}'s key changed: pinned {pinned}, offered {offered}");
        }
        ClientEvent::Delivered { to, id } => tracing::info!(%to, %id, "delivered"),
        ClientEvent::Expired { to, id } => {
            eprintln!("missive: message {id} to {to} expired unread");
        }
        ClientEvent::ConnectionLost { reason } => tracing::warn!("connection lost: {reason}"),
        ClientEvent::Disconnected => tracing::info!("disconnected; reconnecting"),
        _ => {}
    }
    0
}

async fn presence<C: Connector>(
    connector: C,
    options: ClientOptions,
    user: UserName,
    wait: Duration,
) -> Result<(), Failure> {
    let (client, _events) = ClientHandle::<Tokio, C>::connect_with(connector, options).await?;
    let answer = tokio::time::timeout(wait, client.query_presence(user.clone())).await;
    let _ = client.close().await;
    match answer {
        Err(_) => Err(Failure::new(TIMED_OUT, "no answer from the server in time")),
        Ok(Err(PresenceError::UnknownUser(user))) => {
            Err(Failure::new(UNKNOWN_USER, format!("unknown user {user}")))
        }
        Ok(Err(e)) => Err(Failure::new(UNREACHABLE, e.to_string())),
        Ok(Ok(p)) if p.online => {
            println!("{user} is online");
            Ok(())
        }
        Ok(Ok(p)) => {
            match p.last_seen_ms {
                Some(ms) => {
                    let ago = unix_ms_now().saturating_sub(ms) / 1000;
                    println!("{user} is offline (last seen {ago} s ago)");
                }
                None => println!("{user} is offline (not seen since the server started)"),
            }
            Ok(())
        }
    }
}

fn trust(home: &UserHome, other: UserName) -> Result<(), Failure> {
    let identity = load_identity(home)?;
    let state = home
        .load_state()
        .map_err(|e| Failure::new(OTHER, e.to_string()))?;
    if state.pinned_key(&other).is_none() {
        println!(
            "no key pinned for {other}: the next message to them pins the key the server offers"
        );
        return Ok(());
    }
    let seed = os_seed().map_err(|e| Failure::new(OTHER, e.to_string()))?;
    let mut client = Client::new(
        ClientConfig::new(home.user().clone()),
        identity,
        state,
        seed,
        Instant::now(),
        unix_ms_now(),
    );
    client.trust_key(&other);
    home.save_state(client.state())
        .map_err(|e| Failure::new(OTHER, e.to_string()))?;
    println!(
        "forgot {other}'s pinned key: the next message to {other} pins the key the server offers now"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn positional_user_is_not_the_global_user() {
        let args =
            Args::try_parse_from(["missive", "--user", "alice", "fingerprint", "bob"]).unwrap();
        assert_eq!(args.user.as_deref(), Some("alice"));
        assert!(matches!(args.command, Command::Fingerprint { whose: Some(ref w) } if w == "bob"));
        let args = Args::try_parse_from(["missive", "--user", "alice", "fingerprint"]).unwrap();
        assert!(matches!(args.command, Command::Fingerprint { whose: None }));
        let args = Args::try_parse_from(["missive", "send", "bob", "hello", "there"]).unwrap();
        assert!(
            matches!(args.command, Command::Send { ref text, .. } if text.join(" ") == "hello there")
        );
    }
}
