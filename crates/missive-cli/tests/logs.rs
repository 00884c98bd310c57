//! The logs of both binaries with standard error on a pipe: text without
//! ANSI escape codes, and `--log-format json` as one JSON object a line.

mod server_process;

use server_process::{SERVER, ServerProcess, wait_timeout};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CLI: &str = env!("CARGO_BIN_EXE_missive");
const ESC: u8 = 0x1b;

/// Runs the server on an in-memory store with standard error on a pipe
/// until it listens, stops it with SIGTERM and returns what it logged.
fn server_log(log_format: &str) -> String {
    let mut child = Command::new(SERVER)
        .args(["--memory", "--listen", "127.0.0.1:0", "--plaintext"])
        .args(["--log-format", log_format])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("MISSIVE_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("listening on "), "{first:?}");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut stderr = child.stderr.take().unwrap();
    let mut log = Vec::new();
    stderr.read_to_end(&mut log).unwrap();
    assert!(wait_timeout(&mut child, Duration::from_secs(10)).success());
    String::from_utf8(log).unwrap()
}

/// Registers `alice` (again) with the client binary, standard error on a pipe and
/// rustls' debug lines on, and returns what it logged.
fn client_log(home: &Path, server: &str, log_format: &str) -> String {
    let output = Command::new(CLI)
        .args(["--server", server, "--user", "alice", "--wait", "10"])
        .arg("--home")
        .arg(home)
        .args(["--log-format", log_format, "register"])
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .env_remove("MISSIVE_LOG_FORMAT")
        .env_remove("MISSIVE_SERVER")
        .env_remove("MISSIVE_HOME")
        .env_remove("MISSIVE_USER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stderr).unwrap()
}

#[track_caller]
fn assert_plain_text(log: &str, expected: &str) {
    assert!(log.contains(expected), "{log}");
    assert!(!log.as_bytes().contains(&ESC), "ANSI escape in {log:?}");
}

/// Every line is a JSON object with a level and a message; returns the
/// messages.
#[track_caller]
fn json_messages(log: &str) -> Vec<String> {
    assert!(!log.as_bytes().contains(&ESC), "ANSI escape in {log:?}");
    log.lines()
        .map(|line| {
            let event: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            let level = event["level"].as_str().unwrap_or_else(|| panic!("{line}"));
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
                "{line}"
            );
            event["message"]
                .as_str()
                .unwrap_or_else(|| panic!("no message: {line}"))
                .to_string()
        })
        .collect()
}

#[test]
fn server_text_log_on_a_pipe_has_no_colours() {
    let log = server_log("text");
    assert_plain_text(&log, "in-memory store: nothing survives a restart");
    assert_plain_text(&log, "SIGTERM received");
}

#[test]
fn server_json_log_is_one_object_a_line() {
    let messages = json_messages(&server_log("json"));
    for expected in [
        "in-memory store: nothing survives a restart",
        "SIGTERM received",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "{expected:?} not in {messages:?}"
        );
    }
}

#[test]
fn client_logs_as_text_without_colours_and_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&tmp.path().join("data"), "127.0.0.1:0", &[]);

    let home = tmp.path().join("home");

    // The first run also says on standard error that it trusts the
    // server's certificate on first use (not a log line).
    let text = client_log(&home, &server.addr, "text");
    assert!(text.contains("on first use"), "{text}");
    assert_plain_text(&text, "DEBUG");

    // Registering again is idempotent and says nothing but logs.
    let messages = json_messages(&client_log(&home, &server.addr, "json"));
    assert!(!messages.is_empty());
    server.terminate();
}
