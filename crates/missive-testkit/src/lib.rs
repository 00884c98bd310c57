//! # missive-testkit: services for Missive's tests
//!
//! One place for the throwaway services tests start, reused by every test
//! that needs them (the PostgreSQL store's conformance and fault tests, the
//! `missive-server` crash tests, later the cluster).
//!
//! [`ClusterNode`] runs a `missive-server --cluster …` process, killed
//! when dropped, with `sigkill`, `sigstop` and `sigcont` for the failover
//! tests.
//!
//! [`PostgresServer`] runs a private PostgreSQL server: `initdb` into a
//! temporary directory (as the `postgres` user when the tests run as root,
//! since `initdb` refuses root), `pg_ctl start` on a free 127.0.0.1 port with
//! its Unix socket inside that directory, and `pg_ctl stop -m fast` when
//! dropped, also while a panic unwinds. A watchdog shell tied to the test
//! process by a pipe stops the server and removes the directory when the test
//! process ends in any other way (even SIGKILL), so no server outlives a test
//! run, including the one [`PostgresServer::shared`] keeps for a whole test
//! binary.
//!
//! The binaries are looked up in `/usr/lib/postgresql/*/bin` (newest first;
//! Debian's package does not put `initdb` on `PATH`), then on `PATH`. Where
//! they are missing, [`PostgresServer::start_or_skip`] prints why and returns
//! `None` so the test can skip, unless `MISSIVE_REQUIRE_SERVICES=1` is set
//! (CI sets it after installing PostgreSQL): then it panics.
//!
//! [`PostgresServer::start_tls`] (and [`PostgresServer::shared_tls`]) start
//! one with `ssl = on`, its certificate (for `127.0.0.1` and `localhost`)
//! issued by a [`TestCa`] made for it: clients trust
//! [`PostgresServer::ca_file`] and connect with
//! [`PostgresServer::url_tls`] (`sslmode=require`).
//!
//! [`Chromium`] runs a headless Chromium (`/usr/bin/chromium`, or
//! `$MISSIVE_CHROMIUM`) in its own process group with a throwaway profile
//! and DevTools on a free port ([`Chromium::cdp_url`], for Playwright's
//! `connectOverCDP`); dropping it kills the whole group and waits, a
//! watchdog does the same when the test process ends any other way. It
//! skips like the others.
//!
//! [`NatsServer`] runs a private `nats-server` (core NATS only, no
//! JetStream) on a free 127.0.0.1 port, found on `PATH` or in `/usr/sbin`
//! (Debian's package), killed and reaped when dropped, with the same kind
//! of watchdog and the same skip rule.
//!
//! ```no_run
//! use missive_testkit::PostgresServer;
//!
//! let Some(mut pg) = PostgresServer::start_or_skip() else {
//!     return; // no PostgreSQL here: skipped (and said why)
//! };
//! let url = pg.create_database(); // postgres://postgres:…@127.0.0.1:PORT/missive_test_N
//! pg.kill9(); // crash it
//! pg.restart(); // crash recovery, same port and password
//! # drop(url);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod chromium;
mod node;
mod watchdog;

pub use chromium::{CHROMIUM_ENV, Chromium, DEFAULT_CHROMIUM};
pub use node::{ClusterNode, NodeArgs};
use watchdog::Watchdog;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Set to `1` to make a missing service a test failure instead of a skip.
pub const REQUIRE_SERVICES_ENV: &str = "MISSIVE_REQUIRE_SERVICES";

/// The superuser of every test server.
const SUPERUSER: &str = "postgres";

/// Why a [`PostgresServer`] could not be started or controlled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The Chromium binary was not found.
    #[error("Chromium not found at {} (set MISSIVE_CHROMIUM to its path)", path.display())]
    ChromiumMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// `nats-server` was not found.
    #[error("nats-server not found (looked in {searched})")]
    NatsMissing {
        /// The directories searched.
        searched: String,
    },
    /// A server started but did not accept connections in time.
    #[error("{what} did not accept connections within {waited:?}: {detail}")]
    NotReady {
        /// The server.
        what: String,
        /// How long the harness waited.
        waited: Duration,
        /// Its exit status or output, if any.
        detail: String,
    },
    /// `initdb`, `pg_ctl`, `psql` and `postgres` were not found together.
    #[error(
        "PostgreSQL binaries not found (looked for initdb, pg_ctl, psql, postgres in {searched})"
    )]
    BinariesMissing {
        /// The directories searched.
        searched: String,
    },
    /// A file-system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A test certificate could not be made.
    #[error("cannot make a test certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A PostgreSQL program exited unsuccessfully.
    #[error("{what} failed: {detail}")]
    Command {
        /// The program and what it was asked to do.
        what: String,
        /// Its exit status and output.
        detail: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// A private PostgreSQL server in a temporary directory; see the crate
/// documentation.
pub struct PostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    /// Stops the server when the test process ends without dropping this
    /// (its standard input closes).
    watchdog: Option<Watchdog>,
    running: bool,
    /// Whether it serves TLS (`ssl = on`; see [`start_tls`](Self::start_tls)).
    tls: bool,
}

/// A throwaway certificate authority for tests (ECDSA P-256, made with
/// rcgen): issues server certificates.
pub struct TestCa {
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA whose certificate's common name is `name`.
    pub fn new(name: &str) -> Result<Self, HarnessError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key)?;
        Ok(Self { certificate, key })
    }

    /// The CA's certificate (PEM): what clients trust.
    pub fn certificate_pem(&self) -> String {
        self.certificate.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses) and
    /// its private key, both PEM.
    pub fn issue_server(&self, names: &[&str]) -> Result<(String, String), HarnessError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, &self.certificate, &self.key)?;
        Ok((certificate.pem(), key.serialize_pem()))
    }
}

/// File names, inside the server's directory, of its TLS material.
const TLS_CA_FILE: &str = "ca.pem";
const TLS_CERT_FILE: &str = "server.crt";
const TLS_KEY_FILE: &str = "server.key";

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl PostgresServer {
    /// Starts a server, or returns `None` after printing why it cannot (no
    /// PostgreSQL binaries, or they failed).
    ///
    /// # Panics
    ///
    /// Instead of returning `None`, when `MISSIVE_REQUIRE_SERVICES=1`.
    pub fn start_or_skip() -> Option<Self> {
        skip_unless_required("PostgreSQL", Self::start())
    }

    /// One server for the whole test binary, started on first use (`None`
    /// as [`start_or_skip`](Self::start_or_skip)). Tests sharing it create
    /// their own database with [`create_database`](Self::create_database)
    /// and must not stop or kill it. It stops when the test process exits.
    pub fn shared() -> Option<&'static Self> {
        static SHARED: OnceLock<Option<PostgresServer>> = OnceLock::new();
        SHARED.get_or_init(Self::start_or_skip).as_ref()
    }

    /// [`shared`](Self::shared), but a server started with
    /// [`start_tls`](Self::start_tls) (another one).
    pub fn shared_tls() -> Option<&'static Self> {
        static SHARED: OnceLock<Option<PostgresServer>> = OnceLock::new();
        SHARED
            .get_or_init(|| skip_unless_required("PostgreSQL", Self::start_tls()))
            .as_ref()
    }

    /// Creates a database cluster in a new temporary directory and starts a
    /// server on it.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(false)
    }

    /// [`start`](Self::start), serving TLS too (`ssl = on`; plaintext
    /// connections are still accepted): a new [`TestCa`] issues its
    /// certificate for `127.0.0.1` and `localhost`; the CA certificate is
    /// at [`ca_file`](Self::ca_file), the key file is owned by the server's
    /// user with mode 0600 (PostgreSQL refuses it otherwise).
    pub fn start_tls() -> Result<Self, HarnessError> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Self, HarnessError> {
        let bin = find_binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("missive-pg-")
            .tempdir()
            .map_err(io_error("temporary directory"))?;
        let password = format!(
            "pw{:x}{:x}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
            std::process::id()
        );
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).map_err(io_error("password file"))?;
        if running_as_root() {
            run(
                Command::new("chown")
                    .arg("-R")
                    .arg(SUPERUSER)
                    .arg(dir.path()),
                "chown",
            )?;
        }
        let mut server = Self {
            bin,
            port: free_port()?,
            password,
            watchdog: None,
            running: false,
            tls,
            dir,
        };
        if tls {
            server.write_tls_files()?;
        }
        run(
            server
                .as_owner("initdb")
                .arg("--pgdata")
                .arg(server.data_dir())
                .args([
                    "--username",
                    SUPERUSER,
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                ])
                .args(["--auth-local", "trust", "--auth-host", "scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .arg("--no-sync"),
            "initdb",
        )?;
        server.spawn_watchdog()?;
        // The free port may be taken between finding it and the start:
        // then try another.
        let mut attempts = 0;
        loop {
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                Err(e) if attempts < 2 && server.log_tail().contains("could not bind") => {
                    eprintln!("retrying on another port: {e}");
                    attempts += 1;
                    server.port = free_port()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password (password authentication on TCP).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A connection URL for `database` as the superuser, over TCP.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// A connection URL for `database` as the superuser over TLS
    /// (`sslmode=require`); clients must trust [`ca_file`](Self::ca_file).
    ///
    /// # Panics
    ///
    /// If the server was not started with [`start_tls`](Self::start_tls).
    pub fn url_tls(&self, database: &str) -> String {
        assert!(self.tls, "the server was started without TLS");
        format!("{}?sslmode=require", self.url(database))
    }

    /// The PEM file of the CA that issued the server's certificate (a
    /// server started with [`start_tls`](Self::start_tls)).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join(TLS_CA_FILE))
    }

    /// Makes a CA and a server certificate and writes them into the
    /// server's directory, owned by its user; the key with mode 0600.
    fn write_tls_files(&self) -> Result<(), HarnessError> {
        use std::os::unix::fs::PermissionsExt;
        let ca = TestCa::new("missive test PostgreSQL CA")?;
        let (certificate, key) = ca.issue_server(&["127.0.0.1", "localhost"])?;
        for (name, contents, mode) in [
            (TLS_CA_FILE, ca.certificate_pem(), 0o644),
            (TLS_CERT_FILE, certificate, 0o644),
            (TLS_KEY_FILE, key, 0o600),
        ] {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).map_err(io_error(format!("writing {name}")))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(io_error(format!("chmod {name}")))?;
            if running_as_root() {
                run(Command::new("chown").arg(SUPERUSER).arg(&path), "chown")?;
            }
        }
        Ok(())
    }

    /// Creates a new, empty database and returns its [`url`](Self::url).
    ///
    /// # Panics
    ///
    /// If `psql` fails (the server is down).
    pub fn create_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "missive_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("{e}"));
        self.url(&name)
    }

    /// Runs `sql` in `database` with `psql` over the Unix socket; returns
    /// what it printed (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, HarnessError> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(io_error("psql"))?;
        if !output.status.success() {
            return Err(HarnessError::Command {
                what: format!("psql {sql:?}"),
                detail: format!(
                    "{}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Whether the server is running (started and neither stopped nor
    /// killed since).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.postmaster_pid().filter(|pid| alive(*pid))
    }

    /// Kills the postmaster and every backend with SIGKILL (a crash: no
    /// shutdown checkpoint) and waits until they are gone.
    ///
    /// # Panics
    ///
    /// If the server is not running or a process survives SIGKILL.
    pub fn kill9(&mut self) {
        assert!(self.running, "the server is not running");
        let survivors = self.kill_all();
        assert!(survivors.is_empty(), "survived SIGKILL: {survivors:?}");
    }

    /// SIGKILL to the postmaster and its descendants; waits up to 10 s for
    /// them to die and returns those still alive. Once none is, removes
    /// the stale lock files (`postmaster.pid` and the socket's): a killed
    /// postmaster not yet reaped (a zombie) would otherwise make the next
    /// start think a server still runs.
    fn kill_all(&mut self) -> Vec<u32> {
        self.running = false;
        let Some(postmaster) = self.postmaster_pid() else {
            return Vec::new();
        };
        // The postmaster first, so that it does not see its children die.
        let mut pids = vec![postmaster];
        pids.extend(descendants(postmaster));
        // Some may have exited already: kill's status says nothing useful.
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        pids.retain(|p| alive(*p));
        if pids.is_empty() {
            let _ = std::fs::remove_file(self.data_dir().join("postmaster.pid"));
            let socket_lock = format!(".s.PGSQL.{}.lock", self.port);
            let _ = std::fs::remove_file(self.dir.path().join(socket_lock));
        }
        pids
    }

    /// Starts the server again on the same directory and port (after
    /// [`kill9`](Self::kill9): crash recovery).
    ///
    /// # Panics
    ///
    /// If `pg_ctl start` fails.
    pub fn restart(&mut self) {
        if self.running {
            self.stop().unwrap_or_else(|e| panic!("{e}"));
        }
        self.pg_ctl_start().unwrap_or_else(|e| panic!("{e}"));
    }

    /// `pg_ctl stop -m fast`, waiting until the server is down.
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        run(
            self.as_owner("pg_ctl")
                .arg("stop")
                .arg("--pgdata")
                .arg(self.data_dir())
                .args(["--mode", "fast", "--wait", "--timeout", "30"]),
            "pg_ctl stop",
        )
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    fn pg_ctl_start(&mut self) -> Result<(), HarnessError> {
        let mut options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'",
                self.dir.path().join(TLS_CERT_FILE).display(),
                self.dir.path().join(TLS_KEY_FILE).display()
            ));
        }
        run(
            self.as_owner("pg_ctl")
                .arg("start")
                .arg("--pgdata")
                .arg(self.data_dir())
                .arg("--log")
                .arg(self.dir.path().join("server.log"))
                .args(["--wait", "--timeout", "60", "-o", &options]),
            "pg_ctl start",
        )
        .map_err(|e| match e {
            HarnessError::Command { what, detail } => HarnessError::Command {
                what,
                detail: format!("{detail}\nserver log:\n{}", self.log_tail()),
            },
            other => other,
        })?;
        self.running = true;
        Ok(())
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("server.log"))
    }

    /// A shell that waits for its standard input to close (this process
    /// ended), then stops the server and removes the directory.
    fn spawn_watchdog(&mut self) -> Result<(), HarnessError> {
        let prefix = if running_as_root() {
            format!("runuser -u {SUPERUSER} -- ")
        } else {
            String::new()
        };
        let script = format!(
            "{prefix}'{}' stop -D '{}' -m fast -w >/dev/null 2>&1; rm -rf '{}'",
            self.bin.join("pg_ctl").display(),
            self.data_dir().display(),
            self.dir.path().display()
        );
        self.watchdog = Some(Watchdog::spawn(&script)?);
        Ok(())
    }

    /// A command running `program` of the PostgreSQL binaries as the owner
    /// of the data directory.
    fn as_owner(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", SUPERUSER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.current_dir(self.dir.path());
        command
    }
}

impl Drop for PostgresServer {
    /// Stops the server (`pg_ctl stop -m fast`, waiting), then lets the
    /// watchdog finish.
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping the test PostgreSQL server: {e}; killing it");
            let survivors = self.kill_all();
            if !survivors.is_empty() {
                eprintln!("PostgreSQL processes survived SIGKILL: {survivors:?}");
            }
        }
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.fire();
        }
    }
}

/// What a cluster test runs on: a private PostgreSQL with a fresh database
/// and a private NATS server.
#[derive(Debug)]
pub struct ClusterEngines {
    /// The PostgreSQL server.
    pub pg: PostgresServer,
    /// The NATS server.
    pub nats: NatsServer,
    /// The URL of the fresh database (`--postgres`).
    pub postgres: String,
    /// Its name (for [`PostgresServer::psql`]).
    pub database: String,
}

impl ClusterEngines {
    /// Both engines, or `None` (the test skips, with a message) when one
    /// is not installed; panics instead under `MISSIVE_REQUIRE_SERVICES=1`.
    pub fn start_or_skip() -> Option<Self> {
        let pg = PostgresServer::start_or_skip()?;
        let nats = NatsServer::start_or_skip()?;
        let postgres = pg.create_database();
        let database = postgres.rsplit('/').next().unwrap_or_default().to_owned();
        Some(Self {
            pg,
            nats,
            postgres,
            database,
        })
    }
}

/// How long [`NatsServer::start`] waits for the server to accept TCP.
const NATS_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A private `nats-server` on a free 127.0.0.1 port (core NATS: no
/// JetStream, no cluster, no authentication); see the crate
/// documentation.
///
/// ```no_run
/// use missive_testkit::NatsServer;
/// let Some(nats) = NatsServer::start_or_skip() else {
///     return; // no nats-server here: skipped (and said why)
/// };
/// let url = nats.url(); // nats://127.0.0.1:PORT
/// # drop(url);
/// ```
pub struct NatsServer {
    child: Child,
    port: u16,
    /// Its log file's directory.
    dir: tempfile::TempDir,
    /// Kills the server when the test process ends without dropping this.
    watchdog: Option<Watchdog>,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("pid", &self.child.id())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl NatsServer {
    /// Starts a server, or returns `None` after printing why it cannot (no
    /// `nats-server`, or it failed).
    ///
    /// # Panics
    ///
    /// Instead of returning `None`, when `MISSIVE_REQUIRE_SERVICES=1`.
    pub fn start_or_skip() -> Option<Self> {
        skip_unless_required("NATS", Self::start())
    }

    /// Starts `nats-server -a 127.0.0.1 -p PORT` on a free port and waits
    /// until it accepts TCP connections (another port if the first was
    /// taken meanwhile).
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), serving TLS only with the certificate
    /// chain `cert` and its key `key` (PEM files): clients connect to
    /// `tls://127.0.0.1:PORT`.
    pub fn start_tls(cert: &Path, key: &Path) -> Result<Self, HarnessError> {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        Self::start_with(&["--tls", "--tlscert", &cert, "--tlskey", &key])
    }

    fn start_with(extra: &[&str]) -> Result<Self, HarnessError> {
        let program = find_nats()?;
        let dir = tempfile::Builder::new()
            .prefix("missive-nats-")
            .tempdir()
            .map_err(io_error("temporary directory"))?;
        let mut attempts = 0;
        loop {
            match Self::spawn_on(&program, dir.path(), free_port()?, extra) {
                Ok((child, port)) => {
                    let mut server = Self {
                        child,
                        port,
                        dir,
                        watchdog: None,
                    };
                    server.spawn_watchdog()?;
                    return Ok(server);
                }
                Err(e) if attempts < 2 => {
                    eprintln!("retrying nats-server on another port: {e}");
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Spawns the server on `port` and waits until it accepts; kills it
    /// if it does not.
    fn spawn_on(
        program: &Path,
        dir: &Path,
        port: u16,
        extra: &[&str],
    ) -> Result<(Child, u16), HarnessError> {
        let log = dir.join("nats.log");
        let mut child = Command::new(program)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_error("nats-server"))?;
        let deadline = Instant::now() + NATS_READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(HarnessError::NotReady {
                    what: "nats-server".into(),
                    waited: NATS_READY_TIMEOUT,
                    detail: format!("exited ({status}): {}", tail(&log)),
                });
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok((child, port));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::NotReady {
                    what: "nats-server".into(),
                    waited: NATS_READY_TIMEOUT,
                    detail: tail(&log),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("nats.log"))
    }

    /// A shell that waits for its standard input to close (this process
    /// ended), then kills the server.
    fn spawn_watchdog(&mut self) -> Result<(), HarnessError> {
        let script = format!("kill -KILL {} 2>/dev/null", self.child.id());
        self.watchdog = Some(Watchdog::spawn(&script)?);
        Ok(())
    }
}

impl Drop for NatsServer {
    /// Stops the watchdog (killed, so that it never signals a process id
    /// reused after the server's), then kills the server and reaps it.
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last 20 lines of the file at `path` (empty if unreadable).
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `nats-server` on `PATH`, else in `/usr/sbin` (Debian installs it there,
/// off a normal user's `PATH`).
fn find_nats() -> Result<PathBuf, HarnessError> {
    let candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin")])
        .collect();
    candidates
        .iter()
        .map(|dir| dir.join("nats-server"))
        .find(|path| path.is_file())
        .ok_or_else(|| HarnessError::NatsMissing {
            searched: candidates
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// What `started` holds, or `None` after printing why `service` cannot
/// run, so that the test skips; a panic instead with
/// [`REQUIRE_SERVICES_ENV`]`=1`.
pub fn skip_unless_required<T, E: std::fmt::Display>(
    service: &str,
    started: Result<T, E>,
) -> Option<T> {
    match started {
        Ok(running) => Some(running),
        Err(e) if required() => panic!("{REQUIRE_SERVICES_ENV}=1 but {service}: {e}"),
        Err(e) => {
            eprintln!("skipping: {e} (set {REQUIRE_SERVICES_ENV}=1 to fail instead)");
            None
        }
    }
}

fn required() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV).is_ok_and(|v| v == "1")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a command to completion; its output goes into the error if it fails.
fn run(command: &mut Command, what: &str) -> Result<(), HarnessError> {
    // Output into a file, not a pipe: `pg_ctl start` leaves the postmaster
    // running, which would hold a pipe open.
    let mut out = tempfile::tempfile().map_err(io_error("output file"))?;
    let status = command
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(io_error("output file"))?)
        .stderr(out.try_clone().map_err(io_error("output file"))?)
        .status()
        .map_err(io_error(what))?;
    if status.success() {
        return Ok(());
    }
    use std::io::{Read, Seek};
    let mut text = String::new();
    let _ = out.seek(std::io::SeekFrom::Start(0));
    let _ = out.read_to_string(&mut text);
    Err(HarnessError::Command {
        what: what.to_owned(),
        detail: format!("{status}: {}", text.trim()),
    })
}

/// The first directory holding `initdb`, `pg_ctl`, `psql` and `postgres`:
/// `/usr/lib/postgresql/*/bin`, newest version first, then `PATH`.
fn find_binaries() -> Result<PathBuf, HarnessError> {
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let candidates: Vec<PathBuf> = versioned
        .into_iter()
        .map(|(_, dir)| dir)
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        )
        .collect();
    first_complete(&candidates)
}

/// The first of `candidates` holding every PostgreSQL program the harness
/// runs.
fn first_complete(candidates: &[PathBuf]) -> Result<PathBuf, HarnessError> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "psql", "postgres"]
            .iter()
            .all(|program| dir.join(program).is_file())
    };
    candidates
        .iter()
        .find(|dir| complete(dir))
        .cloned()
        .ok_or_else(|| HarnessError::BinariesMissing {
            searched: candidates
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn free_port() -> Result<u16, HarnessError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_error("free port"))?;
    Ok(listener.local_addr().map_err(io_error("free port"))?.port())
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).is_some_and(|(state, _)| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Every live descendant of `root`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (_, ppid) = stat_fields(&stat)?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The state and parent pid of a `/proc/PID/stat` line (the command name,
/// in parentheses, may hold spaces).
fn stat_fields(stat: &str) -> Option<(&str, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_found_only_all_together() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("partial");
        let full = dir.path().join("full");
        for (bin, programs) in [
            (&partial, &["initdb", "pg_ctl"][..]),
            (&full, &["initdb", "pg_ctl", "psql", "postgres"][..]),
        ] {
            std::fs::create_dir(bin).unwrap();
            for program in programs {
                std::fs::write(bin.join(program), "").unwrap();
            }
        }
        assert!(matches!(
            first_complete(std::slice::from_ref(&partial)),
            Err(HarnessError::BinariesMissing { .. })
        ));
        assert_eq!(first_complete(&[partial, full.clone()]).unwrap(), full);
    }

    #[test]
    fn stat_fields_handle_spaces_in_the_name() {
        assert_eq!(
            stat_fields("42 (postgres: walwriter ) S 7 42 42 0"),
            Some(("S", 7))
        );
        assert_eq!(stat_fields("garbage"), None);
    }

    #[test]
    fn start_kill_restart_stop_leaves_no_process() {
        let Some(mut pg) = PostgresServer::start_or_skip() else {
            return;
        };
        let postmaster = pg.postmaster_pid().unwrap();
        pg.psql(
            "postgres",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (7)",
        )
        .unwrap();
        pg.kill9();
        assert!(!alive(postmaster));
        assert!(pg.psql("postgres", "SELECT 1").is_err(), "server is down");
        pg.restart();
        assert_eq!(pg.psql("postgres", "SELECT x FROM t").unwrap(), "7");
        let url = pg.create_database();
        assert!(url.starts_with(&format!("postgres://postgres:{}@127.0.0.1:", pg.password())));
        let postmaster = pg.postmaster_pid().unwrap();
        let dir = pg.dir.path().to_owned();
        let children = descendants(postmaster);
        assert!(!children.is_empty(), "backends are found");
        drop(pg);
        assert!(!alive(postmaster));
        assert!(children.iter().all(|p| !alive(*p)));
        assert!(!dir.exists());
    }

    #[test]
    fn nats_accepts_then_leaves_no_process() {
        let Some(nats) = NatsServer::start_or_skip() else {
            return;
        };
        let pid = nats.pid();
        assert!(alive(pid));
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", nats.port())).unwrap();
        // A NATS server greets every client with its INFO line.
        let mut greeting = [0u8; 4];
        std::io::Read::read_exact(&mut stream, &mut greeting).unwrap();
        assert_eq!(&greeting, b"INFO");
        assert_eq!(nats.url(), format!("nats://127.0.0.1:{}", nats.port()));
        drop(nats);
        assert!(!alive(pid));
    }

    #[test]
    fn nats_watchdog_kills_the_server_when_the_process_ends() {
        let Some(mut nats) = NatsServer::start_or_skip() else {
            return;
        };
        let pid = nats.pid();
        assert!(nats.watchdog.take().unwrap().fire());
        // Killed; reaped by the drop below.
        let deadline = Instant::now() + Duration::from_secs(5);
        while nats.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(pid));
    }

    #[test]
    fn drop_after_a_panic_stops_the_server() {
        let Some(pg) = PostgresServer::start_or_skip() else {
            return;
        };
        let postmaster = pg.postmaster_pid().unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _owned = pg;
            panic!("test failure while the server runs");
        }));
        assert!(result.is_err());
        assert!(!alive(postmaster));
    }

    #[test]
    fn watchdog_stops_the_server_when_the_process_ends() {
        let Some(mut pg) = PostgresServer::start_or_skip() else {
            return;
        };
        let postmaster = pg.postmaster_pid().unwrap();
        let dir = pg.dir.path().to_owned();
        // What the end of the test process does: the pipe closes.
        assert!(pg.watchdog.take().unwrap().fire());
        assert!(!alive(postmaster));
        assert!(!dir.exists());
        pg.running = false;
    }
}
