//! Helpers shared by the integration tests.
#![allow(dead_code)]

use missive_core::UserName;
use missive_core::client::ClientEvent;
use missive_core::crypto::Identity;
use missive_core::rng;
use missive_core::server::ServerConfig;
use missive_store::Store;
use missive_tokio::{
    BoundServer, ClientHome, ClientOptions, Events, ServeError, ServeReport, ServerHandle,
    ServerOptions,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Four 2048-bit identities, generated once per test binary.
pub fn identities() -> &'static [Identity; 4] {
    static KEYS: OnceLock<[Identity; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        std::array::from_fn(|i| {
            Identity::generate(&mut rng::from_seed([i as u8 + 40; 32]), 2048).expect("keygen")
        })
    })
}

pub fn user(name: &str) -> UserName {
    UserName::new(name).unwrap()
}

/// Stores identity `index` as `name`'s key in `home` (no key generation in
/// the tests).
pub fn install_key(home: &Path, name: &str, index: usize) {
    let user_home = ClientHome::new(home).user(&user(name));
    if !user_home.has_identity() {
        user_home.save_identity(&identities()[index]).unwrap();
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub task: JoinHandle<Result<ServeReport, ServeError>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig, store: Box<dyn Store>) -> Self {
        Self::start_on("127.0.0.1:0", config, store).await
    }

    /// On a free port, with default limits and a redb store in `dir`.
    pub async fn start_redb(dir: &std::path::Path) -> Self {
        let store = missive_store::RedbStore::open(dir).unwrap();
        Self::start(ServerConfig::default(), Box::new(store)).await
    }

    pub async fn start_on(addr: &str, config: ServerConfig, store: Box<dyn Store>) -> Self {
        Self::start_with(addr, config, store, ServerOptions::default()).await
    }

    pub async fn start_with(
        addr: &str,
        config: ServerConfig,
        store: Box<dyn Store>,
        options: ServerOptions,
    ) -> Self {
        let server = BoundServer::bind_with(addr, config, store, options)
            .await
            .unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let task = tokio::spawn(server.serve());
        Self { addr, handle, task }
    }

    pub async fn stop(self) -> ServeReport {
        self.handle.shutdown();
        self.task.await.unwrap().unwrap()
    }

    /// Items queued in all mailboxes (messages and notices).
    pub async fn queued(&self) -> usize {
        self.handle
            .inspect(|s| s.state().queued_items())
            .await
            .unwrap()
    }

    /// Waits until `f` holds on the server, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&missive_core::server::Server) -> bool + Send + Sync + Clone + 'static,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let g = f.clone();
            if self.handle.inspect(move |s| g(s)).await.unwrap() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Client options for tests: a pre-installed key, quick reconnects.
pub fn options(addr: SocketAddr, home: &Path, name: &str, key: usize) -> ClientOptions {
    install_key(home, name, key);
    let mut options = ClientOptions::new(addr.to_string(), home, user(name));
    options.generate_key = false;
    options.backoff_initial = Duration::from_millis(50);
    options.backoff_max = Duration::from_millis(500);
    options
}

/// The next event matching `f`, or a panic after `timeout`.
pub async fn next_event<T>(
    events: &mut Events,
    timeout: Duration,
    mut f: impl FnMut(ClientEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("timed out waiting for an event")
            .expect("the client stopped");
        if let Some(t) = f(event) {
            return t;
        }
    }
}

/// The next received message as (from, body text).
pub async fn next_message(events: &mut Events, timeout: Duration) -> (String, String) {
    next_event(events, timeout, |e| match e {
        ClientEvent::MessageReceived { from, body, .. } => {
            Some((from.to_string(), String::from_utf8(body).unwrap()))
        }
        _ => None,
    })
    .await
}
