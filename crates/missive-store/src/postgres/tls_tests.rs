//! TLS to a real PostgreSQL (the testkit's, `ssl = on`, its certificate
//! from a test CA): the store and the leases over TLS, what an untrusted
//! certificate does, and what each `sslmode` gives.

use super::*;
use crate::conformance::register;
use missive_testkit::{PostgresServer, TestCa};

/// The shared TLS server, a new database on it and the trust its
/// certificate needs.
fn tls_database() -> Option<(&'static PostgresServer, String, PostgresTls)> {
    let server = PostgresServer::shared_tls()?;
    let url = server.create_database();
    let database = url.rsplit('/').next().expect("database").to_owned();
    let tls = PostgresTls::with_ca_file(server.ca_file().expect("a TLS server"));
    Some((server, database, tls))
}

// The store conformance suite, every connection over TLS.
crate::store_conformance_tests!({
    let Some((server, database, tls)) = tls_database() else {
        return;
    };
    let url = server.url_tls(&database);
    move || Box::new(PostgresStore::connect_with(&url, &tls).expect("connect")) as Box<dyn Store>
});

/// Whether the store's own session is TLS, and its protocol version, as
/// the server reports it.
fn session_ssl(store: &PostgresStore) -> (bool, Option<String>) {
    let row = store
        .runtime
        .block_on(store.client.query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        ))
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

/// `TLS sessions|sessions` of Missive's connections to `database`, seen
/// from another session (psql, over the Unix socket).
fn missive_sessions(server: &PostgresServer, database: &str) -> String {
    server
        .psql(
            database,
            &format!(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.datname = '{database}' AND a.application_name = 'missive-server'"
            ),
        )
        .expect("psql")
}

#[test]
fn the_store_session_is_tls_and_commits() {
    let Some((server, database, tls)) = tls_database() else {
        return;
    };
    let mut store = PostgresStore::connect_with(&server.url_tls(&database), &tls).unwrap();
    assert_eq!(session_ssl(&store), (true, Some("TLSv1.3".to_owned())));
    assert_eq!(missive_sessions(server, &database), "1|1");
    store.commit(&[register("alice")]).unwrap();
    assert_eq!(
        store.load().unwrap(),
        ServerState::replay(&[register("alice")])
    );
}

#[test]
fn sslmode_decides_and_the_default_is_plaintext() {
    let Some((server, database, tls)) = tls_database() else {
        return;
    };
    let plain = server.url(&database);
    for (url, expected) in [
        (plain.clone(), false),
        (format!("{plain}?sslmode=disable"), false),
        (format!("{plain}?sslmode=prefer"), true),
        (format!("{plain}?sslmode=require"), true),
    ] {
        let store = PostgresStore::connect_with(&url, &tls).unwrap();
        assert_eq!(session_ssl(&store).0, expected, "{url}");
    }
}

#[test]
fn an_untrusted_certificate_is_a_clear_connect_error() {
    let Some((server, database, _)) = tls_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(
        &other_ca,
        TestCa::new("another CA").unwrap().certificate_pem(),
    )
    .unwrap();
    let url = server.url_tls(&database);
    // Another CA, or only the web PKI roots: neither issued the server's
    // certificate, so neither `require` nor `prefer` connects.
    for (url, tls) in [
        (url.clone(), PostgresTls::with_ca_file(&other_ca)),
        (url.clone(), PostgresTls::default()),
        (
            url.replace("sslmode=require", "sslmode=prefer"),
            PostgresTls::default(),
        ),
    ] {
        let err = PostgresStore::connect_with(&url, &tls).unwrap_err();
        assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "cannot connect to postgres@127.0.0.1:{}/{database}",
                server.port()
            )) && text.contains("invalid peer certificate")
                && text.contains("UnknownIssuer"),
            "{text}"
        );
        assert!(!text.contains(server.password()), "{text}");
    }
    // A CA file that is not one names the file.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "no certificate here").unwrap();
    let err = PostgresStore::connect_with(&url, &PostgresTls::with_ca_file(&bad)).unwrap_err();
    assert!(matches!(err, StoreError::CaFile { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );
}

#[test]
fn require_fails_on_a_server_without_tls() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = format!("{}?sslmode=require", server.create_database());
    let err = PostgresStore::connect(&url).unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
    // `prefer` falls back to plaintext there, as libpq's does.
    let store = PostgresStore::connect(&url.replace("require", "prefer")).unwrap();
    assert!(!session_ssl(&store).0);
}

#[test]
fn leases_and_a_node_store_connect_and_reconnect_over_tls() {
    let Some((server, database, tls)) = tls_database() else {
        return;
    };
    let url = server.url_tls(&database);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = LeaseOptions {
        node_id: "a".into(),
        address: "a.example:4433".into(),
        shards: 4,
        ttl: Duration::from_secs(60),
    };
    let mut leases = runtime
        .block_on(Leases::connect_with(&url, &tls, options))
        .unwrap();
    assert_eq!(runtime.block_on(leases.heartbeat()).unwrap(), 1);
    let store = PostgresStore::connect_node_with(&url, &tls, Fence::new(), 4).unwrap();
    assert_eq!(session_ssl(&store), (true, Some("TLSv1.3".to_owned())));
    assert_eq!(missive_sessions(server, &database), "2|2");
    // The leases' connection dies; the next call connects again, over TLS
    // with the same trust.
    server
        .psql(
            &database,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{database}' AND application_name = 'missive-server' \
                 AND pid <> {}",
                store
                    .runtime
                    .block_on(store.client.query_one("SELECT pg_backend_pid()", &[]))
                    .unwrap()
                    .get::<_, i32>(0)
            ),
        )
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let alive = loop {
        match runtime.block_on(leases.heartbeat()) {
            Ok(alive) => break alive,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("heartbeat while the connection closes: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("no reconnection: {e}"),
        }
    };
    assert_eq!(alive, 1);
    assert_eq!(missive_sessions(server, &database), "2|2");
}
