//! [`Chromium`]: a headless Chromium for the browser tests, driven over
//! the Chrome DevTools Protocol (Playwright's `connectOverCDP`), killed
//! with its whole process group when dropped (and by a watchdog when the
//! test process ends any other way).

use crate::watchdog::Watchdog;
use crate::{HarnessError, io_error, skip_unless_required};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Overrides the Chromium binary ([`DEFAULT_CHROMIUM`]).
pub const CHROMIUM_ENV: &str = "MISSIVE_CHROMIUM";

/// Debian's `chromium` package.
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// How long Chromium gets to print its DevTools URL.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Drop`] waits for the killed process group to be gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// How many of Chromium's last standard-error lines errors quote.
const STDERR_LINES_KEPT: usize = 30;

/// What Chromium prints on standard error once it accepts DevTools
/// connections, followed by the browser's WebSocket URL.
const DEVTOOLS_BANNER: &str = "DevTools listening on ";

/// The flags of every run: headless, no sandbox (the tests run as root in
/// CI), nothing that talks to the network on its own, DevTools on a free
/// port (the profile directory is added).
///
/// Debian's build starts crash handlers (crashpad) that leave the process
/// group (`setsid`); `--disable-crashpad-for-testing` would keep them away
/// but makes the network service crash in a loop. So `HOME` is the
/// profile directory: the handlers' database is private to this browser
/// (one shared in `~/.config/chromium` with another running Chromium
/// makes its network service crash too: "FD ownership violation"), and
/// their `--database=` argument names the profile, where [`kill_all`]
/// finds them.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
];

/// A headless Chromium in its own process group with a throwaway profile;
/// see the module documentation.
///
/// ```no_run
/// use missive_testkit::Chromium;
/// let Some(chromium) = Chromium::start_or_skip() else {
///     return; // no Chromium here: skipped (and said why)
/// };
/// let url = chromium.cdp_url(); // ws://127.0.0.1:PORT/devtools/browser/…
/// # drop(url);
/// ```
pub struct Chromium {
    child: Child,
    cdp_url: String,
    /// Its last lines of standard error (drained by a thread until it
    /// exits, so that it never blocks on a full pipe).
    stderr: Arc<Mutex<Vec<String>>>,
    /// The profile (`--user-data-dir`); removed after the kill.
    profile: Option<tempfile::TempDir>,
    /// Kills the process group when the test process ends without
    /// dropping this (its standard input closes).
    watchdog: Option<Watchdog>,
}

impl std::fmt::Debug for Chromium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chromium")
            .field("pid", &self.child.id())
            .field("cdp_url", &self.cdp_url)
            .finish_non_exhaustive()
    }
}

impl Chromium {
    /// Starts Chromium, or returns `None` after printing why it cannot
    /// (not installed, or it failed).
    ///
    /// # Panics
    ///
    /// Instead of returning `None`, when `MISSIVE_REQUIRE_SERVICES=1`.
    pub fn start_or_skip() -> Option<Self> {
        skip_unless_required("Chromium", Self::start())
    }

    /// Starts [`program`](Self::program) headless on `about:blank` with
    /// DevTools on a free port; returns once it printed the DevTools URL.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_program(&Self::program())
    }

    fn start_program(program: &Path) -> Result<Self, HarnessError> {
        if !program.is_file() {
            return Err(HarnessError::ChromiumMissing {
                path: program.to_owned(),
            });
        }
        let profile = tempfile::Builder::new()
            .prefix("missive-chromium-")
            .tempdir()
            .map_err(io_error("temporary directory"))?;
        let mut child = Command::new(program)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            // Its own group: the zygotes, renderers and utilities it forks
            // are killed with it.
            .process_group(0)
            .env("HOME", profile.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_error(format!("starting {}", program.display())))?;
        // (The shell's own command line names the profile too.)
        let profile_path = profile.path().display().to_string();
        let script = format!(
            "kill -KILL -{group} 2>/dev/null; \
             for p in /proc/[0-9]*; do \
               [ \"${{p#/proc/}}\" = \"$$\" ] || ! grep -qsF '{profile_path}' \"$p/cmdline\" || \
               kill -KILL \"${{p#/proc/}}\" 2>/dev/null; \
             done; rm -rf '{profile_path}'",
            group = child.id(),
        );
        let watchdog = match Watchdog::spawn(&script) {
            Ok(watchdog) => watchdog,
            Err(e) => {
                kill_all(&mut child, profile.path());
                return Err(e);
            }
        };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        let kept = Arc::clone(&stderr);
        std::thread::spawn(move || read_stderr(pipe, &kept, &url_tx));
        let mut chromium = Self {
            child,
            cdp_url: String::new(),
            stderr,
            profile: Some(profile),
            watchdog: Some(watchdog),
        };
        match url_rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => {
                chromium.cdp_url = url;
                Ok(chromium)
            }
            // The channel closed: standard error ended without the banner.
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(HarnessError::NotReady {
                what: program.display().to_string(),
                waited: START_TIMEOUT,
                detail: format!(
                    "exited ({}) before printing its DevTools URL: {}",
                    chromium.exit_status(),
                    chromium.stderr_tail()
                ),
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(HarnessError::NotReady {
                what: program.display().to_string(),
                waited: START_TIMEOUT,
                detail: format!("no DevTools URL: {}", chromium.stderr_tail()),
            }),
        }
    }

    /// The binary: `$MISSIVE_CHROMIUM`, else `/usr/bin/chromium`.
    pub fn program() -> PathBuf {
        std::env::var_os(CHROMIUM_ENV)
            .filter(|path| !path.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_CHROMIUM), PathBuf::from)
    }

    /// The browser's DevTools WebSocket URL
    /// (`ws://127.0.0.1:PORT/devtools/browser/ID`), what Playwright's
    /// `chromium.connectOverCDP` takes.
    pub fn cdp_url(&self) -> &str {
        &self.cdp_url
    }

    /// The browser process's id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its profile directory (`--user-data-dir`).
    pub fn profile(&self) -> &Path {
        self.profile
            .as_ref()
            .expect("the profile lives until the drop")
            .path()
    }

    /// Its last lines of standard error, for error messages.
    pub fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .join("\n")
    }

    /// How it exited, if it did (for error messages).
    fn exit_status(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "still running".into(),
            Err(e) => e.to_string(),
        }
    }
}

/// Reads Chromium's standard error to its end: sends the DevTools URL
/// once seen, keeps the last lines.
fn read_stderr(
    pipe: std::process::ChildStderr,
    kept: &Mutex<Vec<String>>,
    url: &mpsc::Sender<String>,
) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    // Bytes, not `lines()`: a line that is not UTF-8 must not end the
    // draining.
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        line.clear();
        if let Some(found) = text.split_once(DEVTOOLS_BANNER).map(|(_, url)| url.trim()) {
            let _ = url.send(found.to_owned());
        }
        let mut kept = kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() == STDERR_LINES_KEPT {
            kept.remove(0);
        }
        kept.push(text);
    }
}

/// SIGKILL to the process group led by `child` and to every process whose
/// command line names `profile` (the crash handlers outside the group),
/// then reaps the leader and waits until none of them is alive (the
/// others are reaped by init); returns those still alive at the deadline.
fn kill_all(child: &mut Child, profile: &Path) -> Vec<u32> {
    let group = child.id();
    let deadline = Instant::now() + KILL_TIMEOUT;
    let mut reaped = false;
    loop {
        let mut alive = members(group, profile);
        // The group first: one kill for all of its members.
        // It may be gone already: kill's status says nothing useful.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .args(alive.iter().map(u32::to_string))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !reaped {
            let _ = child.wait();
            reaped = true;
        }
        alive.retain(|pid| is_alive(*pid));
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The live processes (not zombies) of process group `group` or whose
/// command line names `profile`.
fn members(group: u32, profile: &Path) -> Vec<u32> {
    let needle = profile.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (state, pgrp) = state_and_group(&stat)?;
            if state == "Z" || state == "X" {
                return None;
            }
            let names_profile = || {
                std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
            };
            (pgrp == group || names_profile()).then_some(pid)
        })
        .collect()
}

/// Whether `pid` is a live process (a zombie is not).
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| state_and_group(&stat).map(|(state, _)| state != "Z" && state != "X"))
        .unwrap_or(false)
}

/// The state and process group of a `/proc/PID/stat` line (the command
/// name, in parentheses, may hold spaces): the fields after it are
/// `state ppid pgrp …`.
fn state_and_group(stat: &str) -> Option<(&str, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

impl Drop for Chromium {
    /// Kills the whole process group and the crash handlers (SIGKILL) and
    /// waits until they are gone, stops the watchdog (the group id may be
    /// reused), removes the profile.
    fn drop(&mut self) {
        let profile = self.profile().to_owned();
        let survivors = kill_all(&mut self.child, &profile);
        if !survivors.is_empty() {
            eprintln!("Chromium processes survived SIGKILL: {survivors:?}");
        }
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
        if let Some(profile) = self.profile.take() {
            let _ = profile.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The answer to `GET path` (head and body; the DevTools server keeps
    /// the connection open, so the body is read by its length).
    fn http_get(address: &str, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert!(reader.read_line(&mut head).unwrap() > 0, "{head}");
        }
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no Content-Length: {head}"));
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        head + &String::from_utf8_lossy(&body)
    }

    #[test]
    fn state_and_group_read_past_the_name() {
        assert_eq!(
            state_and_group("42 (chromium (renderer)) S 7 40 40 0"),
            Some(("S", 40))
        );
        assert_eq!(state_and_group("garbage"), None);
    }

    #[test]
    fn a_missing_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-chromium");
        match Chromium::start_program(&missing) {
            Err(HarnessError::ChromiumMissing { path }) => assert_eq!(path, missing),
            other => panic!("expected ChromiumMissing, got {other:?}"),
        }
    }

    /// The DevTools endpoint answers, the browser forked helpers into its
    /// group, and after the drop none of them nor the profile is left.
    #[test]
    fn devtools_answer_then_the_whole_group_is_gone() {
        let Some(chromium) = Chromium::start_or_skip() else {
            return;
        };
        let url = chromium.cdp_url().to_owned();
        let address = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split_once('/'))
            .map(|(address, _)| address.to_owned())
            .unwrap_or_else(|| panic!("unexpected DevTools URL {url:?}"));
        // The HTTP side of the DevTools server names the same browser.
        let answer = http_get(&address, "/json/version");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(&url), "{answer}");
        let group = chromium.pid();
        let profile = chromium.profile().to_owned();
        let started = members(group, &profile);
        assert!(started.len() > 1, "helpers: {started:?}");
        assert!(profile.is_dir());
        drop(chromium);
        assert_eq!(members(group, &profile), Vec::<u32>::new());
        assert!(started.iter().all(|pid| !is_alive(*pid)));
        assert!(!profile.exists());
    }

    #[test]
    fn watchdog_kills_the_group_when_the_process_ends() {
        let Some(mut chromium) = Chromium::start_or_skip() else {
            return;
        };
        let group = chromium.pid();
        let profile = chromium.profile().to_owned();
        let started = members(group, &profile);
        // What the end of the test process does: the pipe closes.
        assert!(chromium.watchdog.take().unwrap().fire());
        let _ = chromium.child.wait();
        let deadline = Instant::now() + KILL_TIMEOUT;
        while started.iter().any(|pid| is_alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(members(group, &profile), Vec::<u32>::new());
        assert!(!profile.exists());
    }
}
