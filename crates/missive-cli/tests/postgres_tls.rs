//! `missive-server` on a PostgreSQL that serves TLS (the testkit's, its
//! certificate from a test CA): `--postgres URL?sslmode=require` with
//! `--postgres-ca` (or `MISSIVE_POSTGRES_CA`) starts and talks TLS, as a
//! single server and as a cluster node (store and leases); without the CA
//! it refuses to start and says why.

use missive_testkit::{ClusterNode, NatsServer, NodeArgs, PostgresServer};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_missive-server");

/// The database's Missive sessions as `TLS sessions|sessions`.
fn missive_sessions(pg: &PostgresServer, database: &str) -> String {
    pg.psql(
        database,
        &format!(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = '{database}' AND a.application_name = 'missive-server'"
        ),
    )
    .unwrap()
}

/// The shared TLS server and a new database on it (its URL with
/// `sslmode=require`, its name).
fn tls_database() -> Option<(&'static PostgresServer, String, String)> {
    let pg = PostgresServer::shared_tls()?;
    let database = pg.create_database().rsplit('/').next().unwrap().to_owned();
    Some((pg, pg.url_tls(&database), database))
}

/// A single `missive-server` on `url` (DATA in `data`); `ca` from the
/// flag or, with `ca_from_env`, from `MISSIVE_POSTGRES_CA`.
fn single_server(data: &Path, url: &str, ca: Option<&Path>, ca_from_env: bool) -> Command {
    let mut command = Command::new(SERVER);
    command
        .args(["--plaintext", "--listen", "127.0.0.1:0", "--postgres", url])
        .arg("--data")
        .arg(data)
        .env_remove("MISSIVE_POSTGRES")
        .env_remove("MISSIVE_POSTGRES_CA")
        .stdin(Stdio::null());
    match (ca, ca_from_env) {
        (Some(ca), false) => {
            command.arg("--postgres-ca").arg(ca);
        }
        (Some(ca), true) => {
            command.env("MISSIVE_POSTGRES_CA", ca);
        }
        (None, _) => {}
    }
    command
}

/// Kills and reaps the child when dropped (also when a test fails).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn single_server_talks_tls_to_postgres_with_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    for from_env in [false, true] {
        let Some((pg, url, database)) = tls_database() else {
            return;
        };
        let ca = pg.ca_file().unwrap();
        let mut server = Reaped(
            single_server(dir.path(), &url, Some(&ca), from_env)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        BufReader::new(server.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening on "), "{line:?}");
        assert_eq!(
            missive_sessions(pg, &database),
            "1|1",
            "CA from env: {from_env}"
        );
    }
}

#[test]
fn without_the_ca_the_server_does_not_start_and_says_why() {
    let Some((pg, url, _)) = tls_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = single_server(dir.path(), &url, None, false)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the PostgreSQL store: cannot connect to postgres@127.0.0.1:")
            && stderr.contains("invalid peer certificate: UnknownIssuer"),
        "{stderr}"
    );
    assert!(!stderr.contains(pg.password()), "{stderr}");
    // A CA file that is not one: named in the message.
    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "nothing").unwrap();
    let output = single_server(dir.path(), &url, Some(&bad), false)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("CA file {}", bad.display())),
        "{stderr}"
    );
}

#[test]
fn a_cluster_node_talks_tls_to_postgres_for_leases_and_store() {
    let Some((pg, url, database)) = tls_database() else {
        return;
    };
    let Some(nats) = NatsServer::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ca = pg.ca_file().unwrap();
    let mut node = ClusterNode::start(
        SERVER.as_ref(),
        NodeArgs {
            node_id: "n1".into(),
            listen: format!("127.0.0.1:{port}"),
            postgres: url,
            nats: nats.url(),
            shards: 4,
            lease_ttl: "2s".into(),
            data: dir.path().join("n1"),
            extra: vec![
                "--plaintext".into(),
                "--postgres-ca".into(),
                ca.display().to_string(),
            ],
        },
    )
    .unwrap();
    // The node holds every shard (it is alone) once its lease round ran.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = pg
            .psql(
                &database,
                "SELECT count(*) FROM leases WHERE owner = 'n1' AND expires_at > now()",
            )
            .unwrap();
        if held == "4" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leases held: {held}; node log:\n{}",
            node.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The leases' connection and the store's, both TLS.
    assert_eq!(missive_sessions(pg, &database), "2|2");
    assert!(node.terminate(Duration::from_secs(10)).is_some());
}
