//! Replays every committed seed (`corpus/<target>/`) and regression input
//! (`regressions/<target>/`) through its target's checks in a normal build.
//!
//! (Normal builds verify login signatures, unlike fuzzing builds; the
//! recorded sessions carry real signatures, so they log in either way.
//! `run-all.sh` also replays the same files in the fuzzing build.)

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            eprintln!("{}", path.display());
            run(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn frame_decoder() {
    assert!(replay("frame_decoder", missive_fuzz::frames::run) > 0);
}

#[test]
fn packet_decode() {
    assert!(replay("packet_decode", missive_fuzz::packets::run) > 0);
}

/// Fuzzing builds only (`RUSTFLAGS="--cfg fuzzing" cargo test --release`):
/// the target compares the core's `fuzzing` internals.
#[cfg(fuzzing)]
#[test]
fn codec_differential() {
    assert!(replay("codec_differential", missive_fuzz::differential::run) > 0);
}

#[test]
fn server_inputs() {
    assert!(replay("server_inputs", missive_fuzz::server::run) > 0);
}

#[test]
fn envelope_open() {
    assert!(replay("envelope_open", missive_fuzz::envelope::run) > 0);
}

/// The recorded session really gets through login and delivery: it ends
/// with both users registered, nothing queued, and several acks persisted.
#[test]
fn recorded_session_logs_in_and_delivers() {
    use missive_fuzz::server::{Harness, parse};
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/server_inputs/session-raw"),
    )
    .unwrap();
    let (setup, ops) = parse(&data);
    let mut h = Harness::new(setup.config());
    for op in ops {
        h.op(op);
    }
    let state = h.server().state();
    assert_eq!(state.user_count(), 2);
    assert_eq!(state.queued_items(), 0);
    assert!(h.acks_persisted() >= 3, "{} acks", h.acks_persisted());
    h.finish();
}

#[test]
fn client_inputs() {
    assert!(replay("client_inputs", missive_fuzz::client::run) > 0);
}

/// The recorded client session replays exactly: the fuzzed client logs in
/// again, pins bob's key and receives bob's messages.
#[test]
fn recorded_client_session_replays() {
    use missive_fuzz::client::{Harness, parse};
    for file in ["session-raw", "session-packets"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus/client_inputs")
            .join(file);
        let (setup, ops) = parse(&std::fs::read(path).unwrap());
        let mut h = Harness::new(setup.config());
        for op in ops {
            h.op(op);
        }
        let client = h.client();
        assert!(client.is_logged_in(), "{file}");
        assert!(
            client
                .state()
                .pinned_key(&missive_fuzz::codec::name("bob"))
                .is_some(),
            "{file}"
        );
        assert_eq!(client.state().outbox().len(), 0, "{file}");
        assert!(client.state().seen_len() >= 1, "{file}");
    }
}
