//! [`ClusterNode`]: a `missive-server --cluster …` process for the cluster
//! tests, killed when dropped (and by a watchdog when the test process
//! ends any other way).

use crate::watchdog::Watchdog;
use crate::{HarnessError, io_error};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a node gets to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What a node's cluster flags say; [`ClusterNode::start`] turns them
/// into `--cluster --node-id … --advertise … --postgres … --nats …
/// --shards … --lease-ttl …` plus `extra` arguments.
#[derive(Debug, Clone)]
pub struct NodeArgs {
    /// `--node-id`.
    pub node_id: String,
    /// `--listen` and `--advertise` (a fixed `host:port`: other nodes
    /// redirect clients there, so it must not change across restarts).
    pub listen: String,
    /// `--postgres`.
    pub postgres: String,
    /// `--nats`.
    pub nats: String,
    /// `--shards`.
    pub shards: u32,
    /// `--lease-ttl` (as the server parses it: `6s`, `1500ms`).
    pub lease_ttl: String,
    /// `--data` (the node's certificate lives there unless `extra` gives
    /// `--tls-cert`).
    pub data: PathBuf,
    /// More arguments (`--plaintext`, `--tls-cert FILE --tls-key FILE`…).
    pub extra: Vec<String>,
}

/// A running cluster node. Dropping it kills it (SIGKILL) and waits.
#[derive(Debug)]
pub struct ClusterNode {
    child: Child,
    args: NodeArgs,
    log: PathBuf,
    /// Kills the node when the test process ends without dropping this
    /// (its standard input closes).
    watchdog: Option<Watchdog>,
}

impl ClusterNode {
    /// Starts `binary` (the `missive-server` of the test, say
    /// `env!("CARGO_BIN_EXE_missive-server")`) with `args`; returns once it
    /// printed `listening on …`. Its log (standard error) goes to
    /// `DATA.log`.
    pub fn start(binary: &Path, args: NodeArgs) -> Result<Self, HarnessError> {
        std::fs::create_dir_all(&args.data).map_err(io_error("node data directory"))?;
        let log = args.data.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_error("node log"))?;
        let mut child = Command::new(binary)
            .arg("--cluster")
            .args(["--node-id", &args.node_id])
            .args(["--listen", &args.listen])
            .args(["--advertise", &args.listen])
            .args(["--postgres", &args.postgres])
            .args(["--nats", &args.nats])
            .args(["--shards", &args.shards.to_string()])
            .args(["--lease-ttl", &args.lease_ttl])
            .arg("--data")
            .arg(&args.data)
            .args(&args.extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(io_error("missive-server"))?;
        let watchdog = Watchdog::spawn(&format!("kill -9 {} 2>/dev/null; true", child.id()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut node = Self {
            child,
            args,
            log,
            watchdog: Some(watchdog),
        };
        // Read the first line on a thread, so that a node that never says
        // it listens cannot hang the test.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut stdout = BufReader::new(stdout);
            let _ = stdout.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining, so that the node never blocks on a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.starts_with("listening on ") => Ok(node),
            Ok(line) => Err(HarnessError::Command {
                what: format!("missive-server {}", node.args.node_id),
                detail: format!("said {line:?} instead of listening: {}", node.log_tail()),
            }),
            Err(_) => {
                node.sigkill();
                Err(HarnessError::Command {
                    what: format!("missive-server {}", node.args.node_id),
                    detail: format!(
                        "not listening within {START_TIMEOUT:?}: {}",
                        node.log_tail()
                    ),
                })
            }
        }
    }

    /// Where clients reach it (`--listen`, `--advertise`).
    pub fn addr(&self) -> &str {
        &self.args.listen
    }

    /// Its node id.
    pub fn node_id(&self) -> &str {
        &self.args.node_id
    }

    /// The arguments it was started with (to start it again).
    pub fn args(&self) -> &NodeArgs {
        &self.args
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last 30 lines of its log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `kill -9` and waits: no chance to clean up.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes it (SIGSTOP): its leases lapse while it cannot notice.
    pub fn sigstop(&self) {
        self.signal("STOP");
    }

    /// Thaws it (SIGCONT).
    pub fn sigcont(&self) {
        self.signal("CONT");
    }

    /// SIGTERM (a graceful stop: leases handed back) and waits at most
    /// `limit` for the exit; `None` if it did not exit (then it is killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal("TERM");
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    self.sigkill();
                    return None;
                }
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, signal: &str) {
        // It may have exited already: kill's status says nothing useful.
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        // A stopped process dies of SIGKILL too.
        self.sigkill();
        // The node is reaped: its pid may be reused, so the watchdog must
        // not kill it any more.
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
    }
}
