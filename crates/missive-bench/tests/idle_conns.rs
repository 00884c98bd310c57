//! `missive-bench idle-conns` registers its users without holding their
//! connections open: only phase 2 holds `--conns` connections, so the
//! server's RSS before phase 2 is not the high-water mark of all of them
//! (which the allocator keeps after they close, and phase 2 then reuses,
//! hiding the cost of a connection).

use missive_core::server::ServerConfig;
use missive_store::MemoryStore;
use missive_tokio::{BoundServer, ServerOptions};

mod common;
use common::run_bench;

const MAX_CONNECTIONS: usize = 5;
const CONNS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_holds_at_most_connect_par_connections() {
    let mut options = ServerOptions::default();
    options.max_connections = MAX_CONNECTIONS;
    let server = BoundServer::bind_with(
        "127.0.0.1:0",
        ServerConfig::default(),
        Box::new(MemoryStore::new()),
        options,
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());

    let conns = CONNS.to_string();
    let v = run_bench(
        addr,
        &[
            "idle-conns",
            "--conns",
            &conns,
            "--connect-par",
            "2",
            "--hold",
            "0",
            "--timeout",
            "30",
        ],
    )
    .await;
    handle.shutdown();
    let _ = serving.await;

    // Every user registered (phase 1 fits under the limit), and phase 2
    // held as many connections as the server admits.
    assert_eq!(v["conns_ok"], MAX_CONNECTIONS, "{v}");
    assert_eq!(v["conns_failed"], CONNS - MAX_CONNECTIONS, "{v}");
}
