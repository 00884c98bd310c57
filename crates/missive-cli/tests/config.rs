//! `missive-server --config FILE` end to end: the binary started from a
//! file accepts a client, --print-config round-trips through the binary,
//! a bad file stops it before anything starts (status 2), the example
//! file of contrib/ is valid, and the systemd notifications.

mod server_process;

use server_process::{SERVER, ServerProcess, wait_timeout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const CLI: &str = env!("CARGO_BIN_EXE_missive");

fn server(args: &[&str]) -> Output {
    Command::new(SERVER)
        .args(args)
        .env_remove("MISSIVE_LISTEN")
        .env_remove("MISSIVE_DATA")
        .env_remove("MISSIVE_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// `missive-server ARGS --print-config`: its standard output.
fn print_config(args: &[&str]) -> String {
    let output = server(&[args, &["--print-config"]].concat());
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[test]
fn the_server_starts_from_a_file_and_accepts_a_client() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write(
        tmp.path(),
        "server.toml",
        "memory = true\nplaintext = true\nwindow = 16\nping-interval = \"20s\"\n",
    );
    let data = tmp.path().join("data");
    let server = ServerProcess::start(
        &data,
        "127.0.0.1:0",
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(server.note, "plaintext", "plaintext = true of the file");
    let home = tmp.path().join("home");
    let registered = Command::new(CLI)
        .env_remove("MISSIVE_SERVER")
        .env_remove("MISSIVE_HOME")
        .env_remove("MISSIVE_USER")
        .args(["--server", &server.addr, "--user", "alice", "--wait", "10"])
        .arg("--home")
        .arg(&home)
        .args(["--plaintext", "register"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&registered.stdout).contains("registered alice"),
        "{}{}",
        text(&registered.stdout),
        text(&registered.stderr)
    );
    assert!(!data.exists(), "memory = true of the file: nothing on disk");
    server.terminate();
}

#[test]
fn print_config_round_trips_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "server.toml",
        "listen = \"127.0.0.1:9000\"\nwindow = 16\nmessage-ttl = \"7d\"\n\
         ws-listen = \"127.0.0.1:9001\"\nws-allowed-origin = [\"https://a.example\"]\n",
    );
    let file = file.to_str().unwrap();
    let effective = print_config(&["--config", file, "--window", "32"]);
    assert!(
        effective.contains("window = 32\n"),
        "the flag over the file:\n{effective}"
    );
    assert!(
        effective.contains("listen = \"127.0.0.1:9000\"\n"),
        "{effective}"
    );
    assert!(effective.contains("message-ttl = \"7d\"\n"), "{effective}");
    assert!(
        effective.contains("max-frame = 262144\n"),
        "a default:\n{effective}"
    );
    let printed = write(tmp.path(), "printed.toml", &effective);
    let again = print_config(&["--config", printed.to_str().unwrap()]);
    assert_eq!(again, effective);
}

#[test]
fn the_environment_over_the_file_and_flags_over_both() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "server.toml",
        "listen = \"127.0.0.1:9000\"\ndata = \"/srv/file\"\n",
    );
    let output = Command::new(SERVER)
        .args(["--config", file.to_str().unwrap(), "--data", "/srv/flag"])
        .arg("--print-config")
        .env("MISSIVE_LISTEN", "127.0.0.1:9100")
        .env("MISSIVE_DATA", "/srv/environment")
        .env_remove("MISSIVE_CONFIG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let effective = text(&output.stdout);
    assert!(
        effective.contains("listen = \"127.0.0.1:9100\"\n"),
        "{effective}"
    );
    assert!(effective.contains("data = \"/srv/flag\"\n"), "{effective}");
}

#[test]
fn print_config_without_a_file_prints_the_defaults() {
    let defaults = print_config(&[]);
    for line in [
        "listen = \"127.0.0.1:7878\"",
        "data = \"./missive-data\"",
        "max-frame = 262144",
        "max-envelope = 261120",
        "ping-interval = \"30s\"",
        "message-ttl = \"30d\"",
        "cluster = false",
    ] {
        assert!(defaults.lines().any(|l| l == line), "{line} in\n{defaults}");
    }
}

#[test]
fn a_bad_file_stops_the_server_before_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (contents, named) in [
        ("window = 8\nmax-frames = 4\n", "max-frames"),
        ("window = 8\nping-interval = \"soon\"\n", "ping-interval"),
        ("window = -1\n", "window"),
        (
            "memory = true\npostgres = \"postgres://h/db\"\n",
            "--postgres",
        ),
    ] {
        let file = write(tmp.path(), "bad.toml", contents);
        let output = server(&[
            "--config",
            file.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{contents}: {stderr}");
        assert!(stderr.contains(named), "{contents}: {stderr}");
        assert!(stderr.contains("bad.toml"), "{contents}: {stderr}");
        assert!(output.stdout.is_empty(), "it did not start");
        assert!(!data.exists(), "it did not start");
    }
    let missing = server(&["--config", tmp.path().join("none.toml").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("none.toml"));
}

#[test]
fn the_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/server.toml");
    let effective = print_config(&["--config", example.to_str().unwrap()]);
    assert!(
        effective.contains("data = \"/var/lib/missive\"\n"),
        "the unit file's StateDirectory:\n{effective}"
    );
}

#[cfg(unix)]
#[test]
fn systemd_hears_ready_then_stopping() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(SERVER)
        .args(["--memory", "--plaintext", "--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buffer = [0; 256];
    let received = |buffer: &mut [u8]| {
        let n = socket.recv(buffer).expect("a notification in time");
        text(&buffer[..n])
    };
    assert_eq!(received(&mut buffer), "READY=1\n");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(received(&mut buffer), "STOPPING=1\n");
    assert!(wait_timeout(&mut child, Duration::from_secs(10)).success());
}
