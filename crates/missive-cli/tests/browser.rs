//! The page in a real browser: each scenario of `web/e2e/run.mjs`
//! (Playwright, `playwright-core` from `web/node_modules`) runs against a
//! real `missive-server` (plaintext WebSocket on 127.0.0.1, a temporary
//! data directory) and a headless Chromium the test owns
//! ([`missive_testkit::Chromium`]), one test per scenario, one at a time.
//!
//! The script gets, in its environment: `MISSIVE_CDP` (Chromium's DevTools
//! URL, for `chromium.connectOverCDP`), `MISSIVE_URL` (the page,
//! `http://127.0.0.1:PORT/`), `MISSIVE_CLI` (the `missive` binary),
//! `MISSIVE_CLI_SERVER` (`ws://127.0.0.1:PORT/`), `MISSIVE_HOME` (a
//! temporary directory for CLI runs) and `MISSIVE_SCREENSHOT` (the PNG it
//! must write: `SCENARIO.png` in `target/tmp/screenshots/`, or in the
//! directory `MISSIVE_SCREENSHOTS` names — `MISSIVE_SCREENSHOTS=docs/screenshots`
//! refreshes the committed ones). Exit status 0 is a pass.
//!
//! The control channel: a line `MISSIVE-CONTROL restart-server-fresh` on
//! the script's standard output makes the runner stop the server
//! (SIGTERM), wipe its data and start a new one on the same WebSocket port
//! (same origin, so the page keeps its IndexedDB), then write `restarted`
//! to the script's standard input.
//!
//! Skipped, with a message, when node, `web/node_modules/playwright-core`
//! (`npm ci` in web/) or Chromium is missing, unless
//! `MISSIVE_REQUIRE_SERVICES=1`. A missing scenario script is a failure.

mod server_process;

use missive_testkit::{Chromium, skip_unless_required};
use server_process::ServerProcess;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

const CLI: &str = env!("CARGO_BIN_EXE_missive");

/// How long one scenario may run before its node process is killed.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

/// The line a scenario prints to have the server restarted with no data.
const RESTART_FRESH: &str = "MISSIVE-CONTROL restart-server-fresh";

/// What the runner answers once the new server listens.
const RESTARTED: &str = "restarted";

/// The machine has few cores: one browser scenario at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// What a browser test needs besides Chromium: node, and playwright-core
/// installed in web/ (`npm ci`).
fn node_and_playwright(web: &Path) -> Result<(), String> {
    match Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => return Err(format!("node --version failed ({status})")),
        Err(e) => return Err(format!("node not found: {e}")),
    }
    let playwright = web.join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        return Err(format!(
            "{} missing (run `npm ci` in web/)",
            playwright.display()
        ));
    }
    Ok(())
}

/// A running `missive-server` whose WebSocket port survives a restart.
struct Server {
    process: Option<ServerProcess>,
    data: PathBuf,
    ws_port: u16,
}

impl Server {
    fn start(data: PathBuf, ws_listen: &str) -> Self {
        let process = ServerProcess::start(
            &data,
            "127.0.0.1:0",
            &["--plaintext", "--ws-listen", ws_listen],
        );
        let ws_url = process.ws_url.clone().expect("a WebSocket listener");
        let ws_port = ws_url
            .strip_prefix("ws://127.0.0.1:")
            .and_then(|rest| rest.strip_suffix('/'))
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected WebSocket URL {ws_url:?}"));
        Self {
            process: Some(process),
            data,
            ws_port,
        }
    }

    /// SIGTERM (a clean exit), the data wiped, a new server on the same
    /// WebSocket port.
    fn restart_fresh(&mut self) {
        if let Some(process) = self.process.take() {
            process.terminate();
        }
        std::fs::remove_dir_all(&self.data).expect("wiping the server's data");
        *self = Self::start(self.data.clone(), &format!("127.0.0.1:{}", self.ws_port));
    }

    fn page_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ws_port)
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws_port)
    }

    /// The end of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let Some(process) = &self.process else {
            return String::new();
        };
        let log = std::fs::read_to_string(&process.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The node process, in its own process group: killed with everything it
/// started (CLI runs) when dropped.
struct Node {
    child: Child,
}

impl Node {
    fn kill(&mut self) {
        // The group may be gone already: kill's status says nothing useful.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the runner learns from the script's standard output.
enum FromScript {
    Line(String),
    /// Standard output closed (the script ended).
    End,
}

/// Runs `web/e2e/SCRIPT args…` against a fresh server and Chromium; panics
/// with the script's output when it fails, times out or writes no
/// screenshot at `screenshot`.
fn run_script(script: &str, args: &[&str], screenshot: &Path) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let root = repo_root();
    let web = root.join("web");
    let script_path = web.join("e2e").join(script);
    assert!(
        script_path.is_file(),
        "web/e2e/{script} missing (the page's scenarios, see crates/missive-cli/tests/browser.rs)"
    );
    if skip_unless_required("the browser tests", node_and_playwright(&web)).is_none() {
        return;
    }
    let Some(chromium) = Chromium::start_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let mut server = Server::start(tmp.path().join("data"), "127.0.0.1:0");
    if let Some(dir) = screenshot.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let started_at = SystemTime::now();
    let mut child = Command::new("node")
        .arg(&script_path)
        .args(args)
        .current_dir(&root)
        .env("MISSIVE_CDP", chromium.cdp_url())
        .env("MISSIVE_URL", server.page_url())
        .env("MISSIVE_CLI", CLI)
        .env("MISSIVE_CLI_SERVER", server.ws_url())
        .env("MISSIVE_HOME", &home)
        .env("MISSIVE_SCREENSHOT", screenshot)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting node");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let mut node = Node { child };
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(FromScript::Line(line)).is_err() {
                return;
            }
        }
        let _ = lines_tx.send(FromScript::End);
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let stderr_sink = Arc::clone(&stderr);
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        stderr_sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_str(&text);
    });

    let deadline = Instant::now() + SCENARIO_TIMEOUT;
    let mut transcript = String::new();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(FromScript::Line(line)) => {
                println!("{script}: {line}");
                transcript.push_str(&line);
                transcript.push('\n');
                if line.trim() == RESTART_FRESH {
                    server.restart_fresh();
                    answer(&mut stdin, RESTARTED);
                }
            }
            Ok(FromScript::End) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                break wait_until(&mut node, deadline);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break None,
        }
    };
    let failure = match outcome {
        None => {
            node.kill();
            Some(format!(
                "timed out after {SCENARIO_TIMEOUT:?} (node killed)"
            ))
        }
        Some(status) if !status.success() => Some(format!("node exited with {status}")),
        Some(_) => written_since(screenshot, started_at).err(),
    };
    // Its standard error ends with the process group.
    drop(node);
    let _ = stderr_reader.join();
    if let Some(failure) = failure {
        panic!(
            "{script} {}: {failure}\n--- stdout\n{transcript}--- stderr\n{}\n--- server log\n{}\n--- chromium\n{}",
            args.join(" "),
            stderr.lock().unwrap_or_else(PoisonError::into_inner),
            server.log_tail(),
            chromium.stderr_tail(),
        );
    }
}

/// Writes `line` to the script's standard input (it may have ended: then
/// its exit status tells).
fn answer(stdin: &mut ChildStdin, line: &str) {
    let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
}

/// The exit status of `node`, or `None` if it is still running at
/// `deadline`.
fn wait_until(node: &mut Node, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = node.child.try_wait().expect("waiting for node") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `path` is a PNG file written at or after `since`.
fn written_since(path: &Path, since: SystemTime) -> Result<(), String> {
    let mut magic = [0u8; 8];
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("no screenshot at {}: {e}", path.display()))?;
    let modified = metadata.modified().map_err(|e| e.to_string())?;
    if modified < since {
        return Err(format!(
            "the screenshot {} was not written by this run",
            path.display()
        ));
    }
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    if magic != *b"\x89PNG\r\n\x1a\n" {
        return Err(format!("{} is not a PNG", path.display()));
    }
    Ok(())
}

/// Runs one scenario of `web/e2e/run.mjs`; its screenshot goes to
/// `NAME.png` in `$MISSIVE_SCREENSHOTS` (relative to the repository; the
/// committed ones are `docs/screenshots/`), by default under the build's
/// temporary directory, so that running the tests changes no committed file.
fn scenario(name: &str) {
    let dir = match std::env::var_os("MISSIVE_SCREENSHOTS") {
        Some(dir) => repo_root().join(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
    };
    let screenshot = dir.join(format!("{name}.png"));
    run_script("run.mjs", &[name], &screenshot);
}

/// Two browser contexts register and chat both ways.
#[test]
fn two_browsers() {
    scenario("two_browsers");
}

/// A browser user and a CLI user chat both ways.
#[test]
fn browser_and_cli() {
    scenario("browser_and_cli");
}

/// A message to an offline browser user arrives after reload and login.
#[test]
fn offline_delivery() {
    scenario("offline_delivery");
}

/// The delivered mark appears.
#[test]
fn delivered_mark() {
    scenario("delivered_mark");
}

/// A changed key (the server lost its data; the name registered again
/// under another key) is blocked with the warning.
#[test]
fn key_change_blocked() {
    scenario("key_change_blocked");
}

/// A wrong passphrase is refused.
#[test]
fn wrong_passphrase() {
    scenario("wrong_passphrase");
}

/// An oversize message is refused with a clear message.
#[test]
fn oversize_refused() {
    scenario("oversize_refused");
}

/// The runner itself: `web/e2e/harness-smoke.mjs` connects over CDP,
/// opens the page and checks what the server answered; then it asks for
/// a fresh server and checks that the same origin answers again.
#[test]
fn harness_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    run_script(
        "harness-smoke.mjs",
        &[],
        &tmp.path().join("harness_smoke.png"),
    );
}
