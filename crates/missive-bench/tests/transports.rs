//! `missive-bench --tls` (and `--ws`) against in-process servers: the
//! online scenario completes over each transport, and over TLS every login
//! is bound to the connection's exporter value (the server checks it
//! against its own, so a login signing binding `none` would fail).

use missive_core::server::ServerConfig;
use missive_runtime::driver::{
    BoundServer, CertifiedKey, Listener, TlsListener, WsListener, listen_tcp,
    load_or_create_self_signed, server_config, websocket_server_config,
};
use missive_store::MemoryStore;
use missive_tokio::{ServeError, ServeReport, ServerHandle, ServerOptions, TlsBoundServer, Tokio};
use serde_json::Value;
use std::path::PathBuf;

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

/// The server's self-signed certificate and the PEM file the bench trusts
/// (`--ca`), made once in a directory of `test` (tests run in parallel).
fn certificate(test: &str) -> (CertifiedKey, PathBuf) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-{test}"));
    let certificate = load_or_create_self_signed(&dir, vec!["127.0.0.1".into()]).unwrap();
    (certificate, dir.join("cert.pem"))
}

/// Serves `listener` with `config` and a memory store: its address, handle
/// and serving task.
async fn serve<L: Listener>(
    listener: L,
    config: ServerConfig,
) -> (
    std::net::SocketAddr,
    ServerHandle,
    tokio::task::JoinHandle<Result<ServeReport, ServeError>>,
) {
    let store = Box::new(MemoryStore::new());
    let server =
        BoundServer::<Tokio, _>::with_listener(listener, config, store, ServerOptions::default())
            .await
            .unwrap();
    let (addr, handle) = (server.local_addr(), server.handle());
    (addr, handle, tokio::spawn(server.serve()))
}

/// Runs the online scenario with `transport_flags` against a WebSocket
/// server (over TLS with `tls`) and returns its JSON line.
async fn online_over_websocket(tls: bool, transport_flags: &[&str]) -> Value {
    let mut config = ServerConfig::default();
    config.send_rate_per_sec = 10_000;
    let max_frame = config.max_frame;
    let tcp = listen_tcp::<Tokio>("127.0.0.1:0").await.unwrap();
    let (certificate, ca) = certificate(if tls { "wss" } else { "ws" });
    let (addr, handle, serving) = if tls {
        let tls = server_config(certificate.chain, certificate.key).unwrap();
        let tls = TlsListener::<Tokio, _>::new(tcp, websocket_server_config(&tls));
        serve(WsListener::<Tokio, _>::new(tls, max_frame), config).await
    } else {
        serve(WsListener::<Tokio, _>::new(tcp, max_frame), config).await
    };
    let (pairs, msgs) = (PAIRS.to_string(), MSGS.to_string());
    let ca = ca.to_str().unwrap();
    let mut args = vec![
        "online",
        "--pairs",
        &pairs,
        "--msgs",
        &msgs,
        "--timeout",
        "30",
    ];
    args.extend_from_slice(transport_flags);
    if tls {
        args.extend_from_slice(&["--ca", ca]);
    }
    let v = run_bench(addr, &args).await;
    handle.shutdown();
    let _ = serving.await;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_over_websocket_sends_one_packet_per_message() {
    let v = online_over_websocket(false, &["--ws"]).await;
    assert_eq!(v["transport"], "ws", "{v}");
    assert_all_delivered(&v);
}

/// wss: TLS with ALPN `http/1.1`, logins with binding `none` (what a
/// browser can sign).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_over_websocket_on_tls() {
    let v = online_over_websocket(true, &["--ws", "--tls"]).await;
    assert_eq!(v["transport"], "wss", "{v}");
    assert_all_delivered(&v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_over_tls_logs_in_with_the_exporter_binding() {
    let (certificate, ca) = certificate("tls");
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
