//! `missive-server` with an admin listener (`admin-listen` in its
//! configuration file, as the flag `--admin-listen` would): the binary
//! announces it, answers `/healthz`, `/readyz` and `/metrics` over HTTP,
//! and stops on SIGTERM with status 0.

mod server_process;

use server_process::{SERVER, admin_address, http_get as get, wait_timeout};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_admin_listener_of_the_configuration_file_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("server.toml");
    std::fs::write(
        &config,
        "memory = true\nplaintext = true\nlisten = \"127.0.0.1:0\"\n\
         admin-listen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = Command::new(SERVER)
        .arg("--config")
        .arg(&config)
        .env_remove("MISSIVE_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let admin = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no admin line in {lines:?}"
        );
        if line.starts_with("admin on ") {
            assert!(line.ends_with("/ (metrics, healthz, readyz)\n"), "{line:?}");
            break admin_address(&line);
        }
        lines.push(line);
    };
    assert!(lines[0].starts_with("listening on 127.0.0.1:"), "{lines:?}");

    assert_eq!(get(&admin, "/healthz"), (200, "ok\n".to_owned()));
    // The announcement comes after the store is loaded, just before the
    // serve loop starts: ready at once or very soon.
    let mut ready = get(&admin, "/readyz");
    for _ in 0..500 {
        if ready.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        ready = get(&admin, "/readyz");
    }
    assert_eq!(ready, (200, "ready\n".to_owned()));
    let (status, metrics) = get(&admin, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("\nmissive_store_available 1\n"),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert_eq!(get(&admin, "/other").0, 404);

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(wait_timeout(&mut child, Duration::from_secs(10)).success());
}
