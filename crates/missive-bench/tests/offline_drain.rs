//! `missive-bench offline-drain` against an in-process server whose queues
//! hold fewer messages than the senders send: the refusals are counted by
//! reason, nothing accepted is lost, and the receivers stop once they have
//! what was accepted (long before the deadline).

use missive_core::server::ServerConfig;
use missive_store::MemoryStore;
use missive_tokio::BoundServer;

mod common;
use common::run_bench;

const PAIRS: u64 = 2;
const MSGS: u64 = 12;
const TIMEOUT_S: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_reason_and_not_lost() {
    let mut config = ServerConfig::default();
    config.queue_max_messages = 8;
    config.sender_share_percent = 50; // 4 accepted per sender, 8 refused
    config.send_rate_per_sec = 10_000; // no RateLimited
    let server = BoundServer::bind("127.0.0.1:0", config, Box::new(MemoryStore::new()))
        .await
        .unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());

    let (pairs, msgs, timeout) = (PAIRS.to_string(), MSGS.to_string(), TIMEOUT_S.to_string());
    let v = run_bench(
        addr,
        &[
            "offline-drain",
            "--prefix",
            "t",
            "--pairs",
            &pairs,
            "--msgs",
            &msgs,
            "--timeout",
            &timeout,
        ],
    )
    .await;
    handle.shutdown();
    let _ = serving.await;

    let sent = PAIRS * MSGS;
    let accepted = v["enqueue_accepted"].as_u64().unwrap();
    assert_eq!(accepted, PAIRS * 4, "{v}");
    assert_eq!(v["enqueue_refused"]["queue_full"], sent - accepted, "{v}");
    assert_eq!(v["sent"], sent, "{v}");
    assert_eq!(v["owed"], accepted, "{v}");
    assert_eq!(v["delivered_unique"], accepted, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["incomplete_receivers"], 0, "{v}");
    // The receivers did not wait for the refused messages until the deadline.
    assert!(v["drain_elapsed_s"].as_f64().unwrap() < 10.0, "{v}");
}
