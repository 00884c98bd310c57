//! The `missive-server` binary as a child process, shared by the CLI's
//! integration tests (tests/cli.rs, tests/browser.rs).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVER: &str = env!("CARGO_BIN_EXE_missive-server");

/// Plaintext, and the per-user limits out of the way of a load from one
/// sender (tests/admin.rs, tests/disk_full.rs).
pub const LOAD_FLAGS: [&str; 13] = [
    "--plaintext",
    "--queue-max-messages",
    "100000",
    "--queue-max-bytes",
    "1000000000",
    "--sender-share",
    "100",
    "--max-outstanding",
    "100000",
    "--send-rate",
    "100000",
    "--send-burst",
    "100000",
];

pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
    /// What the server said of its transport: `TLS, certificate SHA256:…`
    /// or `plaintext`.
    pub note: String,
    /// The URL of its WebSocket listener (`--ws-listen`), from its second
    /// line `listening on ws[s]://ADDR/ (WebSocket, NOTE)`.
    pub ws_url: Option<String>,
    /// The address of its admin listener (`--admin-listen`), from its line
    /// `admin on http://ADDR/ (…)`.
    pub admin_addr: Option<String>,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts the server binary and waits for its `listening on ADDR (NOTE)`
    /// line.
    pub fn start(data: &Path, listen: &str, extra: &[&str]) -> Self {
        let log = data.with_extension(format!("log.{}", listen.replace([':', '.'], "_")));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(SERVER)
            .arg("--listen")
            .arg(listen)
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let (addr, note) = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|rest| rest.split_once(" ("))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}, see {}", log.display()));
        let (addr, note) = (addr.to_string(), note.to_string());
        let ws_url = extra.contains(&"--ws-listen").then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.strip_prefix("listening on ")
                .and_then(|rest| rest.split_once(" (WebSocket, "))
                .map(|(url, _)| url.to_string())
                .unwrap_or_else(|| panic!("unexpected WebSocket line {line:?}"))
        });
        let admin_addr = extra.contains(&"--admin-listen").then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            admin_address(&line)
        });
        Self {
            child,
            addr,
            note,
            ws_url,
            admin_addr,
            log,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, and the exit status must be 0.
    pub fn terminate(mut self) {
        self.signal("TERM");
        let status = wait_timeout(&mut self.child, Duration::from_secs(10));
        assert!(
            status.success(),
            "server exit status {status:?}, see {}",
            self.log.display()
        );
    }

    /// Waits for the server to exit on its own.
    pub fn wait_exit(mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_timeout(&mut self.child, timeout)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the server's line `admin on http://ADDR/ (…)`.
pub fn admin_address(line: &str) -> String {
    line.trim()
        .strip_prefix("admin on http://")
        .and_then(|rest| rest.split_once("/ ("))
        .map(|(addr, _)| addr.to_string())
        .unwrap_or_else(|| panic!("unexpected admin line {line:?}"))
}

/// `GET path` on `addr` (the admin listener): the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, body.to_owned())
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(10));
    }
}
