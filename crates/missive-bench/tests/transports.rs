//! `missive-bench --tls` (and `--ws`) against in-process servers: the
//! online scenario completes over each transport, and over TLS every login
//! is bound to the connection's exporter value (the server checks it
//! against its own, so a login signing binding `none` would fail).

use missive_core::server::ServerConfig;
use missive_runtime::driver::{load_or_create_self_signed, server_config};
use missive_store::MemoryStore;
use missive_tokio::{ServerOptions, TlsBoundServer};
use serde_json::Value;

mod common;
use common::run_bench;

const PAIRS: u64 = 2;
const MSGS: u64 = 25;

/// The online scenario delivered every message exactly once.
fn assert_all_delivered(v: &Value) {
    assert_eq!(v["accepted"], PAIRS * MSGS, "{v}");
    assert_eq!(v["delivered_unique"], PAIRS * MSGS, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["incomplete_receivers"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_over_tls_logs_in_with_the_exporter_binding() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-tls-test");
    let certificate = load_or_create_self_signed(&dir, vec!["127.0.0.1".into()]).unwrap();
    let tls = server_config(certificate.chain, certificate.key).unwrap();
    let mut config = ServerConfig::default();
    config.send_rate_per_sec = 10_000;
    // Binding `none` refused outright, so only a bound login gets in.
    config.require_channel_binding = true;
    let server = TlsBoundServer::bind_tls(
        "127.0.0.1:0",
        tls,
        config,
        Box::new(MemoryStore::new()),
        ServerOptions::default(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());

    let ca = dir.join("cert.pem");
    let (pairs, msgs) = (PAIRS.to_string(), MSGS.to_string());
    let v = run_bench(
        addr,
        &[
            "online",
            "--tls",
            "--ca",
            ca.to_str().unwrap(),
            "--pairs",
            &pairs,
            "--msgs",
            &msgs,
            "--timeout",
            "30",
        ],
    )
    .await;
    handle.shutdown();
    let _ = serving.await;

    assert_eq!(v["transport"], "tls", "{v}");
    assert_all_delivered(&v);
}
