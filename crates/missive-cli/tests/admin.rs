//! `missive-server admin …` against the real binaries: an online backup
//! taken under a stream of sends, restored and served again; verify on a
//! good and a damaged copy; users, mailboxes and remove-user, online and
//! offline, across restarts.

#[path = "../../missive-tokio/tests/common/mod.rs"]
mod common;
mod server_process;

use common::{identities, options, user};
use missive_core::client::{ClientEvent, Registration};
use missive_tokio::ClientHandle;
use server_process::{LOAD_FLAGS, SERVER, ServerProcess};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `missive-server admin ARGS`.
fn admin(args: &[&str]) -> Output {
    Command::new(SERVER)
        .arg("admin")
        .args(args)
        .env_remove("MISSIVE_DATA")
        .env_remove("MISSIVE_ADMIN_SOCKET")
        .env_remove("MISSIVE_CONFIG")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[track_caller]
fn assert_status(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", text(output));
}

/// The JSON answer of a successful `admin --json` command.
#[track_caller]
fn json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = admin(&all);
    assert_status(&output, 0);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)))
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn start(data: &Path) -> (ServerProcess, SocketAddr) {
    let server = ServerProcess::start(data, "127.0.0.1:0", &LOAD_FLAGS);
    let addr = server.addr.parse().unwrap();
    (server, addr)
}

/// Registers `name` (key `key`) and disconnects.
async fn register(addr: SocketAddr, home: &Path, name: &str, key: usize) {
    let (client, _events) = ClientHandle::connect(options(addr, home, name, key))
        .await
        .unwrap();
    client.close().await.unwrap();
}

/// Everything `name` receives until `done` says stop, or `timeout`.
async fn receive(
    addr: SocketAddr,
    home: &Path,
    name: &str,
    key: usize,
    timeout: Duration,
    mut done: impl FnMut(&BTreeSet<String>) -> bool,
) -> BTreeSet<String> {
    let mut opts = options(addr, home, name, key);
    opts.registration = Registration::Never;
    let (client, mut events) = ClientHandle::connect(opts).await.unwrap();
    let mut received = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&received) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ClientEvent::MessageReceived { body, .. })) => {
                received.insert(String::from_utf8(body).unwrap());
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    client.close().await.unwrap();
    received
}

/// The key test: a backup taken while alice sends to offline bob without
/// pause, restored into an empty directory and served by a new server,
/// delivers every message accepted before the backup began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving_then_restore_delivers_everything_accepted_before() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let home = tmp.path().join("home");
    let (server, addr) = start(&data);
    let socket = data.join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the admin socket is the owner's only");
    register(addr, &home, "bob", 1).await;
    let (alice, _events) = ClientHandle::connect(options(addr, &home, "alice", 0))
        .await
        .unwrap();
    let alice = Arc::new(alice);

    // The stream of sends: 32 at a time until told to stop.
    let accepted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = tokio::task::JoinSet::new();
    let load_started = Instant::now();
    for lane in 0..32 {
        let (alice, accepted, stop) = (alice.clone(), accepted.clone(), stop.clone());
        senders.spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = format!("message {lane}-{i}");
                alice.send(user("bob"), body.clone()).await.unwrap();
                accepted.lock().unwrap().insert(body);
                i += 1;
            }
        });
    }
    while accepted.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = accepted.lock().unwrap().clone();
    let rate = before.len() as f64 / load_started.elapsed().as_secs_f64();
    let dest = tmp.path().join("backup");
    let started = Instant::now();
    let backup = {
        let (data, dest) = (data.clone(), dest.clone());
        tokio::task::spawn_blocking(move || {
            json(&["--data", path_str(&data), "backup", path_str(&dest)])
        })
        .await
        .unwrap()
    };
    let took = started.elapsed();
    let during = accepted.lock().unwrap().len() - before.len();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(lane) = senders.join_next().await {
        lane.unwrap();
    }
    let total = accepted.lock().unwrap().len();
    assert_eq!(backup["answer"], "backed-up", "{backup}");
    assert_eq!(backup["users"], 2);
    let items = backup["items"].as_u64().unwrap() as usize;
    assert!(
        items >= before.len(),
        "{items} items, {} accepted before",
        before.len()
    );
    println!(
        "online backup under a load of {rate:.0} accepted sends/s: {} messages accepted before \
         it began, {during} more while it ran ({total} in all), {items} items copied, file {} \
         bytes, in {:.0} ms (the admin process included)",
        before.len(),
        backup["file_bytes"],
        took.as_secs_f64() * 1000.0
    );

    let verified = json(&["verify", path_str(&dest)]);
    assert_eq!(verified["items"].as_u64().unwrap() as usize, items);
    let restored = tmp.path().join("restored");
    let output = admin(&["restore", path_str(&dest), "--data", path_str(&restored)]);
    assert_status(&output, 0);
    Arc::try_unwrap(alice).ok().unwrap().close().await.unwrap();
    server.terminate();
    assert!(!socket.exists(), "the admin socket goes with the server");

    let (server, addr) = start(&restored);
    let received = receive(addr, &home, "bob", 1, Duration::from_secs(60), |got| {
        got.len() >= items
    })
    .await;
    let missing: Vec<_> = before.difference(&received).collect();
    assert!(
        missing.is_empty(),
        "accepted before the backup, lost: {missing:?}"
    );
    assert_eq!(
        received.len(),
        items,
        "the restored server delivers the backup"
    );
    server.terminate();
}

/// Verify passes a good copy and fails a damaged one (status 3), which
/// restore then refuses; restore refuses a non-empty directory and a
/// running server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_good_and_damaged_copies_and_restore_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let home = tmp.path().join("home");
    let (server, addr) = start(&data);
    register(addr, &home, "bob", 1).await;
    let (alice, _events) = ClientHandle::connect(options(addr, &home, "alice", 0))
        .await
        .unwrap();
    for i in 0..20 {
        alice.send(user("bob"), format!("note {i}")).await.unwrap();
    }
    alice.close().await.unwrap();
    let busy = admin(&["verify", "--data", path_str(&data)]);
    assert_status(&busy, 1);
    assert!(text(&busy).contains("a server answers"), "{}", text(&busy));
    let running = admin(&[
        "restore",
        path_str(&tmp.path().join("nothing")),
        "--data",
        path_str(&data),
    ]);
    assert_status(&running, 1);
    server.terminate();

    // Offline: a backup straight from the file, then verify.
    let good = tmp.path().join("good");
    json(&["--data", path_str(&data), "backup", path_str(&good)]);
    let verified = json(&["verify", path_str(&good)]);
    assert_eq!(
        (verified["users"].as_u64(), verified["items"].as_u64()),
        (Some(2), Some(20))
    );
    assert_eq!(json(&["verify", "--data", path_str(&data)])["items"], 20);

    let damaged = tmp.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    let mut bytes = std::fs::read(good.join("missive.redb")).unwrap();
    let at = bytes
        .windows(3)
        .rposition(|w| w == b"bob")
        .expect("a user name in the file");
    for b in &mut bytes[at..at + 3] {
        *b ^= 0xff;
    }
    std::fs::write(damaged.join("missive.redb"), bytes).unwrap();
    let output = admin(&["verify", path_str(&damaged)]);
    assert_status(&output, 3);
    let output = admin(&[
        "restore",
        path_str(&damaged),
        "--data",
        path_str(&tmp.path().join("from-damaged")),
    ]);
    assert_status(&output, 1);
    assert!(!tmp.path().join("from-damaged").exists());
    // Not over a directory that holds something.
    let output = admin(&["restore", path_str(&good), "--data", path_str(&data)]);
    assert_status(&output, 1);
    assert!(
        text(&output).contains("not an empty directory"),
        "{}",
        text(&output)
    );
}

/// Users and mailboxes online; remove-user online drops the queue and
/// frees the name; the removal survives a restart; offline (a stale
/// socket left by a killed server), the same commands open the store
/// themselves, and the next server replaces the stale socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_mailboxes_and_remove_user_online_and_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let home = tmp.path().join("home");
    let d = path_str(&data).to_owned();
    let (server, addr) = start(&data);
    register(addr, &home, "bob", 1).await;
    register(addr, &home, "carol", 2).await;
    let (alice, _events) = ClientHandle::connect(options(addr, &home, "alice", 0))
        .await
        .unwrap();
    for i in 0..3 {
        alice
            .send(user("bob"), format!("to bob {i}"))
            .await
            .unwrap();
    }
    alice.send(user("carol"), "to carol").await.unwrap();
    alice.close().await.unwrap();

    let users = json(&["--data", &d, "users"]);
    let rows = users["users"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["user"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert_eq!(rows[1]["queued"], 3);
    assert_eq!(
        rows[1]["fingerprint"],
        identities()[1].public_key().fingerprint().to_string()
    );
    let table = admin(&["--data", &d, "users"]);
    assert_status(&table, 0);
    assert!(
        String::from_utf8_lossy(&table.stdout).starts_with("USER "),
        "{}",
        text(&table)
    );
    let mailboxes = json(&["mailboxes", "--top", "1", "--data", &d]);
    let rows = mailboxes["mailboxes"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0]["user"].as_str(), rows[0]["items"].as_u64()),
        (Some("bob"), Some(3))
    );

    let removed = json(&["--data", &d, "remove-user", "bob"]);
    assert_eq!(
        (removed["user"].as_str(), removed["items"].as_u64()),
        (Some("bob"), Some(3))
    );
    let again = admin(&["--data", &d, "remove-user", "bob"]);
    assert_status(&again, 1);
    assert!(text(&again).contains("no such user"), "{}", text(&again));
    // The name is free: another key registers it, with an empty queue.
    let other_home = tmp.path().join("other-home");
    register(addr, &other_home, "bob", 3).await;
    let rows = json(&["--data", &d, "users"])["users"].clone();
    assert_eq!(rows[1]["user"], "bob");
    assert_eq!(rows[1]["queued"], 0);
    assert_eq!(
        rows[1]["fingerprint"],
        identities()[3].public_key().fingerprint().to_string()
    );
    // SIGKILL leaves a stale socket behind: the commands see nobody
    // answers there, and the next server replaces it.
    server.kill();
    assert!(data.join("admin.sock").exists());

    // Offline (no server): the store answers; the removal was persisted.
    let rows = json(&["--data", &d, "users"])["users"].clone();
    assert_eq!(rows[1]["queued"], 0);
    let removed = json(&["--data", &d, "remove-user", "carol"]);
    assert_eq!(removed["items"], 1);
    let (server, _addr) = start(&data);
    let rows = json(&["--data", &d, "users"])["users"].clone();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"], "both removals survive the restart");
    assert_eq!(rows[1]["queued"], 0, "the old bob's queue stays gone");
    server.terminate();
}

/// `--admin-socket` serves the commands for a server without a data
/// directory store (`--memory`); backup is refused there, with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_socket_for_a_memory_server() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("memory.sock");
    let mut flags = LOAD_FLAGS.to_vec();
    flags.extend(["--memory", "--admin-socket", path_str(&socket)]);
    let server = ServerProcess::start(&tmp.path().join("unused"), "127.0.0.1:0", &flags);
    let addr: SocketAddr = server.addr.parse().unwrap();
    register(addr, &tmp.path().join("home"), "ann", 0).await;
    let s = path_str(&socket);
    let users = json(&["--admin-socket", s, "users"]);
    assert_eq!(users["users"][0]["user"], "ann");
    let backup = admin(&[
        "--admin-socket",
        s,
        "backup",
        path_str(&tmp.path().join("b")),
    ]);
    assert_status(&backup, 1);
    assert!(
        text(&backup).contains("cannot be backed up here"),
        "{}",
        text(&backup)
    );
    server.terminate();
    assert!(!socket.exists());
}
