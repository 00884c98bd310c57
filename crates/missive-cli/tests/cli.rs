//! The `missive-server` and `missive` binaries end to end, and a crash test:
//! SIGKILL of the server in the middle of a load.

#[path = "../../missive-tokio/tests/common/mod.rs"]
mod common;
mod server_process;

use common::{options, user};
use missive_core::client::{ClientEvent, Registration};
use missive_testkit::PostgresServer;
use missive_tokio::ClientHandle;
use server_process::{SERVER, ServerProcess};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_missive");

/// Runs the CLI as `user` against `server` with `home`.
fn cli(home: &Path, server: &str, user: &str, args: &[&str]) -> Output {
    cli_stdin(home, server, user, args, None)
}

fn cli_stdin(home: &Path, server: &str, user: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(CLI)
        .env_remove("MISSIVE_SERVER")
        .env_remove("MISSIVE_HOME")
        .env_remove("MISSIVE_USER")
        .env_remove("RUST_LOG")
        .arg("--server")
        .arg(server)
        .arg("--home")
        .arg(home)
        .arg("--user")
        .arg(user)
        .arg("--wait")
        .arg("10")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `--ws-listen` serves wss beside TLS (same certificate, same users): a
/// client on `wss://` registers and sends, one on TLS receives; a `ws://`
/// client on the wss port fails cleanly.
/// Also the server on two threads (`--threads 2`, what TLS-heavy servers
/// use); every other test runs it on one, the default.
#[test]
fn cli_over_websocket_beside_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let home = tmp.path().join("home");
    let server = ServerProcess::start(
        &data,
        "127.0.0.1:0",
        &["--ws-listen", "127.0.0.1:0", "--threads", "2"],
    );
    let addr = server.addr.clone();
    let url = server.ws_url.clone().unwrap();
    let ws_addr = url
        .strip_prefix("wss://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("not wss: {url}"));

    let out = cli(&home, &url, "alice", &["register"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("registered alice"),
        "{}",
        stdout(&out)
    );
    let known = std::fs::read_to_string(home.join("known_servers")).unwrap();
    assert!(known.starts_with(&format!("{ws_addr} SHA256:")), "{known}");
    assert_exit(&cli(&home, &addr, "bob", &["register"]), 0);
    assert_exit(&cli(&home, &url, "alice", &["send", "bob", "over wss"]), 0);
    let received = cli(
        &home,
        &addr,
        "bob",
        &["listen", "--count", "1", "--timeout", "20"],
    );
    assert_exit(&received, 0);
    assert!(
        stdout(&received).contains("over wss"),
        "{}",
        stdout(&received)
    );

    let plain = cli(
        &home,
        &format!("ws://{ws_addr}/"),
        "alice",
        &["presence", "bob"],
    );
    assert!(!plain.status.success(), "{}", stdout(&plain));
    server.terminate();
}

#[test]
fn cli_end_to_end_with_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let home = tmp.path().join("home");
    let server = ServerProcess::start(&data, "127.0.0.1:0", &[]);
    let addr = server.addr.clone();
    // TLS by default, with a self-signed certificate made in the data
    // directory.
    let fingerprint = server
        .note
        .strip_prefix("TLS, certificate ")
        .unwrap_or_else(|| panic!("not TLS: {}", server.note))
        .to_string();
    assert!(data.join("tls/cert.pem").exists());

    // Registration generates the key (mode 0600) and is idempotent; the
    // server's self-signed certificate is trusted on first use, and shown.
    let out = cli(&home, &addr, "alice", &["register"]);
    assert_exit(&out, 0);
    assert!(
        stderr_of(&out).contains("on first use") && stderr_of(&out).contains(&fingerprint),
        "{}",
        stderr_of(&out)
    );
    let known = std::fs::read_to_string(home.join("known_servers")).unwrap();
    assert_eq!(known, format!("{addr} {fingerprint}\n"));
    // A plaintext client on the TLS port fails cleanly.
    let plain = cli(&home, &addr, "alice", &["--plaintext", "presence", "alice"]);
    assert!(!plain.status.success(), "{}", stdout(&plain));
    assert!(
        stdout(&out).contains("registered alice"),
        "{}",
        stdout(&out)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("alice/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let own = cli(&home, &addr, "alice", &["fingerprint"]);
    assert_exit(&own, 0);
    assert!(
        stdout(&out).contains(stdout(&own).trim()),
        "register prints the fingerprint"
    );
    let out = cli(&home, &addr, "alice", &["register"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("registered alice"));
    let out = cli(&home, &addr, "bob", &["register"]);
    assert_exit(&out, 0);
    // Another home, another key: the server answers the registration with
    // NameTaken.
    let other_home = tmp.path().join("other-home");
    let out = cli(&other_home, &addr, "bob", &["register"]);
    assert_exit(&out, 8);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the name bob is taken (registered with another key)"),
        "{stderr}"
    );

    // Alice sends while bob is offline: the text argument, then stdin.
    let out = cli(&home, &addr, "alice", &["send", "bob", "hello bob"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).trim().len(), 32, "prints the message id");
    let out = cli_stdin(
        &home,
        &addr,
        "alice",
        &["send", "bob"],
        Some("from stdin\n"),
    );
    assert_exit(&out, 0);
    let out = cli(
        &home,
        &addr,
        "alice",
        &["send", "bob", "three", "words", "here"],
    );
    assert_exit(&out, 0);

    // Errors and their exit codes.
    assert_exit(&cli(&home, &addr, "alice", &["send", "carol", "hi"]), 5);
    assert_exit(&cli(&home, &addr, "carol", &["send", "bob", "hi"]), 4);
    assert_exit(&cli(&home, &addr, "Carol", &["send", "bob", "hi"]), 2);
    assert_exit(&cli(&home, &addr, "alice", &["presence", "carol"]), 5);
    let out = cli(&home, &addr, "alice", &["presence", "bob"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("bob is offline"), "{}", stdout(&out));
    // Alice pinned bob's key on the first send.
    let pinned = cli(&home, &addr, "alice", &["fingerprint", "bob"]);
    assert_exit(&pinned, 0);
    let bobs = cli(&home, &addr, "bob", &["fingerprint"]);
    assert_eq!(stdout(&pinned), stdout(&bobs));
    assert_exit(&cli(&home, &addr, "bob", &["fingerprint", "dave"]), 5);

    // Graceful stop, and what a client sees meanwhile.
    server.terminate();
    assert_exit(
        &cli(&home, &addr, "alice", &["send", "bob", "nobody home"]),
        3,
    );

    // Restart on the same data and address: bob gets the messages.
    // `--count 1` stops after the first message, but prints every message
    // that came with it (they are acknowledged): none is lost.
    let server = ServerProcess::start(&data, &addr, &[]);
    // Only `listen` takes deliveries: bob's other commands start their
    // sessions offline, so they receive (and acknowledge) none of the
    // messages waiting for him.
    assert_exit(&cli(&home, &addr, "bob", &["register"]), 0);
    assert_exit(&cli(&home, &addr, "bob", &["presence", "alice"]), 0);
    assert_exit(&cli(&home, &addr, "bob", &["send", "alice", "hi alice"]), 0);
    let first = cli(
        &home,
        &addr,
        "bob",
        &["listen", "--count", "1", "--timeout", "20"],
    );
    assert_exit(&first, 0);
    assert!(!stdout(&first).is_empty());
    let rest = cli(&home, &addr, "bob", &["listen", "--timeout", "3"]);
    assert_exit(&rest, 0);
    assert_eq!(
        stdout(&first) + &stdout(&rest),
        "alice: hello bob\nalice: from stdin\nalice: three words here\n"
    );

    // JSON lines, while listening.
    let listener = Command::new(CLI)
        .args([
            "--server",
            &addr,
            "--user",
            "bob",
            "listen",
            "--json",
            "--count",
            "1",
            "--timeout",
            "20",
        ])
        .arg("--home")
        .arg(&home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until bob is online so that the message is delivered live.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cli(&home, &addr, "alice", &["presence", "bob"]);
        if stdout(&out).contains("bob is online") {
            break;
        }
        assert!(Instant::now() < deadline, "bob never came online");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_exit(
        &cli(&home, &addr, "alice", &["send", "bob", "json please"]),
        0,
    );
    let out = listener.wait_with_output().unwrap();
    assert_exit(&out, 0);
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(line["from"], "alice");
    assert_eq!(line["body"], "json please");
    assert_eq!(line["id"].as_str().unwrap().len(), 32);
    assert!(line["sent_at"].as_u64().unwrap() > 1_600_000_000_000);

    // Nothing is left: a later listen times out quietly.
    let out = cli(&home, &addr, "bob", &["listen", "--timeout", "0.5"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "");
    let out = cli(
        &home,
        &addr,
        "bob",
        &["listen", "--count", "1", "--timeout", "0.5"],
    );
    assert_exit(&out, 9);
    // Alice gets bob's message, which her own `send`s did not take either.
    let out = cli(
        &home,
        &addr,
        "alice",
        &["listen", "--count", "1", "--timeout", "20"],
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "bob: hi alice\n");
    server.terminate();

    // A new certificate on the same address is refused (exit 10) until
    // `trust-server`; then it is pinned on first use again.
    std::fs::remove_dir_all(data.join("tls")).unwrap();
    let server = ServerProcess::start(&data, &addr, &[]);
    let changed = server.note.strip_prefix("TLS, certificate ").unwrap();
    assert_ne!(changed, fingerprint);
    let out = cli(&home, &addr, "alice", &["presence", "bob"]);
    assert_exit(&out, 10);
    assert!(
        stderr_of(&out).contains("trust-server"),
        "{}",
        stderr_of(&out)
    );
    assert_exit(&cli(&home, &addr, "alice", &["trust-server"]), 0);
    let out = cli(&home, &addr, "alice", &["presence", "bob"]);
    assert_exit(&out, 0);
    assert!(stderr_of(&out).contains(changed), "{}", stderr_of(&out));
    server.terminate();
}

/// Runs missive-server on `url` (from `--postgres`, or from
/// `MISSIVE_POSTGRES` when `from_env`), which must fail to start: returns its
/// standard error after checking the exit status is 1 and nothing panicked.
fn postgres_start_error(url: &str, from_env: bool) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let mut command = Command::new(SERVER);
    command
        .args(["--plaintext", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path())
        .env_remove("MISSIVE_POSTGRES");
    if from_env {
        command.env("MISSIVE_POSTGRES", url);
    } else {
        command.args(["--postgres", url]);
    }
    let output = command.stdin(Stdio::null()).output().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stdout(&output).is_empty(),
        "never listened: {}",
        stdout(&output)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("missive-server: cannot open the PostgreSQL store: "),
        "{stderr}"
    );
    stderr
}

/// PostgreSQL unreachable, a wrong password, a missing database, a schema
/// from a newer build: a clear message and exit status 1 at start.
#[test]
fn postgres_start_errors() {
    let Some(pg) = PostgresServer::start_or_skip() else {
        return;
    };
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("postgres://postgres:secret@127.0.0.1:{free_port}/postgres");
    let stderr = postgres_start_error(&unreachable, false);
    assert!(
        stderr.contains(&format!(
            "cannot connect to postgres@127.0.0.1:{free_port}/postgres: error connecting to server"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "the password is not shown: {stderr}"
    );

    let url = pg.create_database();
    let wrong_password = url.replace(pg.password(), "not-the-password");
    let stderr = postgres_start_error(&wrong_password, true);
    assert!(
        stderr.contains("password authentication failed for user \"postgres\""),
        "{stderr}"
    );

    let stderr = postgres_start_error(&pg.url("no_such_database"), false);
    assert!(
        stderr.contains("database \"no_such_database\" does not exist"),
        "{stderr}"
    );

    // A schema written by a newer build: the version table says 999.
    let database = url.rsplit('/').next().unwrap();
    pg.psql(
        database,
        "CREATE TABLE schema_version (version integer PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO schema_version (version) VALUES (999)",
    )
    .unwrap();
    let stderr = postgres_start_error(&url, false);
    assert!(
        stderr.contains("unsupported store format version 999 (this build reads version 2)"),
        "{stderr}"
    );
}

/// Sends of the crash test, `CONCURRENCY` at a time.
struct Load {
    alice: Arc<ClientHandle>,
    accepted: Arc<Mutex<BTreeSet<usize>>>,
    permits: Arc<tokio::sync::Semaphore>,
    sends: tokio::task::JoinSet<Result<(), String>>,
}

impl Load {
    async fn send(&mut self, i: usize) {
        let permit = Arc::clone(&self.permits).acquire_owned().await.unwrap();
        let (alice, accepted) = (Arc::clone(&self.alice), Arc::clone(&self.accepted));
        self.sends.spawn(async move {
            let result = alice.send(user("bob"), format!("message {i}")).await;
            drop(permit);
            match result {
                Ok(_) => {
                    accepted.lock().unwrap().insert(i);
                    Ok(())
                }
                Err(e) => Err(format!("message {i}: {e}")),
            }
        });
    }
}

/// SIGKILL of the server during a load of sends: every message whose
/// `accepted` reached the sender is delivered after the restart, exactly
/// once to the application; the sender's outbox brings the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_test_sigkill_mid_load() {
    crash_test(&[], Fault::KillServer).await;
}

/// The same on the PostgreSQL store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_test_sigkill_mid_load_postgres() {
    let Some(pg) = PostgresServer::start_or_skip() else {
        return;
    };
    let url = pg.create_database();
    crash_test(&["--postgres", &url], Fault::KillServer).await;
}

/// SIGKILL of PostgreSQL during a load: missive-server keeps running,
/// refuses what it cannot make durable (`StorageUnavailable`, which the
/// client retries) and retries the store; once PostgreSQL is restarted it
/// reconnects by itself, and every accepted message is delivered exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_test_postgres_sigkill_mid_load() {
    let Some(mut pg) = PostgresServer::start_or_skip() else {
        return;
    };
    let url = pg.create_database();
    crash_test(&["--postgres", &url], Fault::KillPostgres(&mut pg)).await;
}

/// What fails in the middle of a crash test's load.
enum Fault<'a> {
    /// SIGKILL of missive-server; then it is restarted.
    KillServer,
    /// SIGKILL of PostgreSQL (postmaster and backends): missive-server must
    /// keep running; then PostgreSQL is restarted.
    KillPostgres(&'a mut PostgresServer),
}

/// A load of sends, `fault` once a third is accepted, restarts, and the
/// checks: every message accepted is delivered exactly once. `store` selects
/// the store (none: redb in the test's data directory).
async fn crash_test(store: &[&str], fault: Fault<'_>) {
    const N: usize = 2_000;
    const CONCURRENCY: usize = 256;
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let home = tmp.path().join("home");
    let mut limits = vec![
        "--plaintext",
        "--queue-max-messages",
        "10000",
        "--sender-share",
        "100",
        "--send-rate",
        "100000",
        "--send-burst",
        "100000",
    ];
    limits.extend_from_slice(store);
    // The library client here speaks plaintext.
    let server = ServerProcess::start(&data, "127.0.0.1:0", &limits);
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();

    let (bob, _e) = ClientHandle::connect(options(addr, &home, "bob", 1))
        .await
        .unwrap();
    bob.close().await.unwrap();
    let mut alice_options = options(addr, &home, "alice", 0);
    alice_options.state_save_delay = Duration::from_millis(100);
    let (alice, _alice_events) = ClientHandle::connect(alice_options).await.unwrap();
    let alice = Arc::new(alice);

    // The load: N sends, CONCURRENCY at a time; record who was accepted.
    let load = Load {
        alice: Arc::clone(&alice),
        accepted: Arc::default(),
        permits: Arc::new(tokio::sync::Semaphore::new(CONCURRENCY)),
        sends: tokio::task::JoinSet::new(),
    };
    let mut load = load;
    let mut next = 0;
    // Mid-load: once a third is accepted, SIGKILL.
    while next < N && load.accepted.lock().unwrap().len() < N / 3 {
        load.send(next).await;
        next += 1;
    }
    let mut fault_name = "SIGKILL of missive-server";
    let killed_after;
    let accepted_before_kill;
    let submitted_before_kill = next;
    let server = match fault {
        Fault::KillServer => {
            server.kill();
            killed_after = started.elapsed();
            accepted_before_kill = load.accepted.lock().unwrap().clone();
            // Restart on the same data and port; the client reconnects on
            // its own, resends its outbox, and the rest of the load follows.
            tokio::time::sleep(Duration::from_millis(200)).await;
            ServerProcess::start(&data, &addr.to_string(), &limits)
        }
        Fault::KillPostgres(pg) => {
            fault_name = "SIGKILL of PostgreSQL";
            pg.kill9();
            killed_after = started.elapsed();
            accepted_before_kill = load.accepted.lock().unwrap().clone();
            // A registration is a write the store must fail, in case no
            // send was waiting for a commit.
            let mut carol = options(addr, &home, "carol", 2);
            carol.backoff_max = Duration::from_secs(30);
            let write = tokio::spawn(ClientHandle::connect(carol));
            // missive-server keeps running without its database: it
            // refuses what it cannot make durable and retries the store.
            let mut server = server;
            let deadline = Instant::now() + Duration::from_secs(30);
            let log = loop {
                let log = std::fs::read_to_string(&server.log).unwrap();
                if log.contains("store commit failed, retrying") {
                    break log;
                }
                assert!(Instant::now() < deadline, "no store failure logged: {log}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert!(!log.contains("panicked"), "{log}");
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "missive-server stopped without its database: {log}"
            );
            write.abort();
            // PostgreSQL comes back: the same server reconnects by itself.
            pg.restart();
            server
        }
    };
    // Bob receives after the recovery, while Alice's outbox drains and the
    // rest of the load goes out (on the other core).
    let mut bob_options = options(addr, &home, "bob", 1);
    bob_options.registration = Registration::Never;
    let receiver = tokio::spawn(async move {
        let (bob, mut events) = ClientHandle::connect(bob_options).await.unwrap();
        let mut delivered: HashMap<usize, usize> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let mut quiet_until = None;
        loop {
            let wait_until = quiet_until.unwrap_or(deadline);
            match tokio::time::timeout_at(wait_until, events.recv()).await {
                Ok(Some(ClientEvent::MessageReceived { body, from, .. })) => {
                    assert_eq!(from, user("alice"));
                    let text = String::from_utf8(body).unwrap();
                    let i: usize = text.strip_prefix("message ").unwrap().parse().unwrap();
                    *delivered.entry(i).or_default() += 1;
                    if delivered.len() == N {
                        // Linger a little to catch any duplicate.
                        quiet_until =
                            Some(tokio::time::Instant::now() + Duration::from_millis(300));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("bob's client stopped"),
                Err(_) => break,
            }
        }
        bob.close().await.unwrap();
        delivered
    });
    while next < N {
        load.send(next).await;
        next += 1;
    }
    let mut failures = Vec::new();
    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(result) = load.sends.join_next().await {
            if let Err(e) = result.unwrap() {
                failures.push(e);
            }
        }
    })
    .await;
    assert!(finished.is_ok(), "sends did not finish");
    assert!(failures.is_empty(), "{failures:?}");
    let accepted_total = load.accepted.lock().unwrap().clone();
    let all_accepted_after = started.elapsed();
    assert_eq!(accepted_total.len(), N, "every send is accepted in the end");
    drop(load);
    let delivered = receiver.await.unwrap();
    let delivered_after = started.elapsed();
    let alice = Arc::try_unwrap(alice).unwrap();
    alice.close().await.unwrap();
    server.terminate();

    let duplicates: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    let lost_after_accept: Vec<_> = accepted_before_kill
        .iter()
        .filter(|i| !delivered.contains_key(i))
        .collect();
    println!(
        "crash test ({fault_name}, {} store): sent {N} ({submitted_before_kill} before the fault), accepted before it {}, \
         accepted in total {}, delivered after the recovery {} ({} duplicates, {} accepted-but-lost) in {:.1} s",
        if store.is_empty() {
            "redb"
        } else {
            "PostgreSQL"
        },
        accepted_before_kill.len(),
        accepted_total.len(),
        delivered.len(),
        duplicates.len(),
        lost_after_accept.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "crash test timeline: fault at {:.1} s, all accepted at {:.1} s, all delivered at {:.1} s",
        killed_after.as_secs_f64(),
        all_accepted_after.as_secs_f64(),
        delivered_after.as_secs_f64()
    );
    assert!(
        lost_after_accept.is_empty(),
        "accepted but lost: {lost_after_accept:?}"
    );
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    assert_eq!(
        delivered.len(),
        accepted_total.len(),
        "everything accepted is delivered"
    );
}
