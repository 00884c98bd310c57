//! The admin listener over real loopback HTTP, beside a real server on a
//! redb store: registrations, a login failure, a refused send, a delivery
//! and its acknowledgement, then `/metrics` scraped and parsed;
//! `/healthz` and `/readyz` before, while and after the server serves.

mod common;

use common::*;
use missive_core::server::ServerConfig;
use missive_runtime::Metrics;
use missive_runtime::driver::AdminListener;
use missive_tokio::{ClientHandle, ServerOptions, Tokio};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(20);

/// `GET path` on `addr`: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(T, stream.read_to_end(&mut answer))
        .await
        .expect("the admin listener closes after its answer")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    assert_eq!(body.len(), length, "the whole body");
    (status, body.to_owned())
}

/// The samples of a Prometheus text exposition: `name{labels}` → value.
/// Every line is a comment, a sample or `# EOF` last.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            if line == "# EOF" {
                assert!(lines.peek().is_none(), "# EOF is the last line");
            }
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name_end = key.find('{').unwrap_or(key.len());
        assert!(
            key[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name in {line:?}"
        );
        assert!(key.starts_with("missive_"), "{line:?}");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a value: {line:?}"));
        assert!(
            samples.insert(key.to_owned(), value).is_none(),
            "{line:?} twice"
        );
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    samples
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

/// `/readyz`'s status, polled until it is `want` (the serve loop starts
/// and stops on its own task).
async fn wait_ready(addr: SocketAddr, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (status, body) = get(addr, "/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stays {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_are_scraped_and_parsed_health_and_readiness_follow_the_server() {
    let metrics = Metrics::new();
    let admin = AdminListener::<Tokio>::bind("127.0.0.1:0", metrics.clone())
        .await
        .unwrap();
    let admin_addr = admin.local_addr();
    let admin_task = tokio::spawn(admin.serve());

    // Before the server: alive, not ready.
    assert_eq!(get(admin_addr, "/healthz").await, (200, "ok\n".into()));
    let (status, body) = get(admin_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: "), "{body}");
    assert_eq!(get(admin_addr, "/nowhere").await.0, 404);

    let data = tempfile::tempdir().unwrap();
    let store = missive_store::RedbStore::open(data.path()).unwrap();
    let mut config = ServerConfig::default();
    config.queue_max_messages = 1;
    let mut server_options = ServerOptions::default();
    server_options.metrics = metrics.clone();
    let server =
        TestServer::start_with("127.0.0.1:0", config, Box::new(store), server_options).await;
    assert_eq!(wait_ready(admin_addr, 200).await, "ready\n");

    let home = tempfile::tempdir().unwrap();
    // Two registrations; bob goes offline.
    let (bob, _e) = ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
        .await
        .unwrap();
    bob.close().await.unwrap();
    let (alice, mut alice_events) =
        ClientHandle::connect(options(server.addr, home.path(), "alice", 0))
            .await
            .unwrap();
    // One message queued; the second finds bob's queue full.
    alice.send(user("bob"), "one").await.unwrap();
    assert!(alice.send(user("bob"), "two").await.is_err(), "queue full");
    // A login with the wrong key.
    let other_home = tempfile::tempdir().unwrap();
    assert!(
        ClientHandle::connect(options(server.addr, other_home.path(), "alice", 2))
            .await
            .is_err()
    );
    // Bob comes back: delivered, acknowledged; alice gets (and
    // acknowledges) the `delivered` notice.
    let (bob, mut bob_events) = ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
        .await
        .unwrap();
    assert_eq!(next_message(&mut bob_events, T).await.1, "one");
    next_event(&mut alice_events, T, |e| {
        matches!(e, missive_core::client::ClientEvent::Delivered { .. }).then_some(())
    })
    .await;
    server
        .wait_for("every item acknowledged", T, |s| {
            s.state().queued_items() == 0
        })
        .await;

    let (status, text) = get(admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    let samples = parse(&text);
    let v = |key: &str| value(&samples, key);
    assert_eq!(v("missive_registrations_total"), 2.0);
    assert_eq!(
        v("missive_login_failures_total{reason=\"AuthFailed\"}"),
        1.0
    );
    // A client logs in first and registers when the name is unknown.
    assert_eq!(
        v("missive_login_failures_total{reason=\"UnknownUser\"}"),
        2.0
    );
    assert_eq!(v("missive_logins_total"), 3.0);
    assert_eq!(v("missive_messages_accepted_total"), 1.0);
    assert!(v("missive_messages_accepted_bytes_total") > 0.0);
    assert_eq!(
        v("missive_messages_refused_total{reason=\"QueueFull\"}"),
        1.0
    );
    assert_eq!(v("missive_messages_delivered_total"), 1.0);
    assert_eq!(v("missive_notices_delivered_total"), 1.0);
    assert_eq!(v("missive_messages_acknowledged_total"), 1.0);
    assert_eq!(v("missive_messages_expired_total"), 0.0);
    assert_eq!(v("missive_queue_items"), 0.0);
    assert_eq!(v("missive_queue_bytes"), 0.0);
    // Alice and bob are connected and logged in, over plain TCP.
    assert_eq!(
        v("missive_connections{transport=\"tcp\",state=\"open\"}"),
        2.0
    );
    assert_eq!(
        v("missive_connections{transport=\"tcp\",state=\"logged_in\"}"),
        2.0
    );
    assert_eq!(
        v("missive_connections{transport=\"tls\",state=\"open\"}"),
        0.0
    );
    assert_eq!(
        v("missive_connections_accepted_total{transport=\"tcp\"}"),
        4.0
    );
    let commits = v("missive_store_commits_total");
    assert!(commits >= 1.0);
    assert_eq!(v("missive_store_commit_duration_seconds_count"), commits);
    assert_eq!(v("missive_store_commit_batch_commands_count"), commits);
    assert!(v("missive_store_commit_batch_commands_sum") >= commits);
    assert_eq!(v("missive_store_available"), 1.0);
    assert_eq!(v("missive_slow_consumer_drops_total"), 0.0);
    assert_eq!(v("missive_tls_handshake_failures_total"), 0.0);

    alice.close().await.unwrap();
    bob.close().await.unwrap();
    server.stop().await;
    // Stopped: still alive (the process answers), no longer ready.
    let body = wait_ready(admin_addr, 503).await;
    assert!(body.contains("not serving"), "{body}");
    assert_eq!(get(admin_addr, "/healthz").await.0, 200);
    admin_task.abort();
}
