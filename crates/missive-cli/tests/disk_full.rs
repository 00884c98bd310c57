//! A full disk degrades instead of stopping (issue #15): a real
//! `missive-server` on a 24 MiB tmpfs data directory, a ballast file
//! standing for the rest of the volume's users, and an offline flood of
//! messages until the store's commits fail with `No space left on device`.
//! The test shows that the server keeps running and refuses new sends and
//! registrations with the typed `StorageUnavailable`, still delivers what
//! was queued to a recipient who logs in during the outage, recovers by
//! itself once the ballast is deleted, and that nothing acknowledged as
//! accepted is lost (the server is restarted at the end and the mailbox
//! counted). It prints its figures.
//!
//! Mounting a tmpfs needs root; without it the test skips with a message
//! (it fails instead with `MISSIVE_REQUIRE_SERVICES=1`).

#[path = "../../missive-tokio/tests/common/mod.rs"]
mod common;
mod server_process;

use common::identities;
use missive_core::crypto::{
    AuthContext, AuthTranscript, ChannelBinding, Identity, TranscriptVersion,
};
use missive_core::wire::{ClientPacket, ErrorCode, FrameDecoder, ServerPacket, encode_frame};
use missive_core::{MessageId, UserName, rng};
use server_process::{LOAD_FLAGS, ServerProcess, http_get};
use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The data volume.
const VOLUME: &str = "24m";
/// What other users of the volume hold; deleting it frees the space.
const BALLAST_BYTES: usize = 6 << 20;
/// Each flooded message.
const ENVELOPE_BYTES: usize = 16 << 10;
/// Sends the flood keeps in flight.
const IN_FLIGHT: usize = 32;
/// How long the flood waits for an answer before it takes the sends in
/// flight as held by an outage.
const HELD: Duration = Duration::from_secs(2);
/// More sends than the volume can hold.
const FLOOD_MAX: u32 = 4_000;
/// Sends tried (and refused) during the outage.
const REFUSED_TRIES: u32 = 20;
/// Sends accepted after the recovery.
const AFTER_RECOVERY: u32 = 10;
/// Longest wait for any answer of the server.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn user(name: &str) -> UserName {
    UserName::new(name).unwrap()
}

fn message_id(n: u32) -> MessageId {
    let mut id = [0x7e; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    MessageId(id)
}

/// A client that speaks the protocol by hand, so that every answer of the
/// server is seen as sent (a library client retries `StorageUnavailable`
/// quietly).
struct Raw {
    stream: TcpStream,
    decoder: FrameDecoder,
    server_id: [u8; 16],
    session_id: [u8; 16],
    rng: missive_core::rng::CoreRng,
    /// Deliveries (seq, id) seen while waiting for something else.
    deliveries: VecDeque<(u64, MessageId)>,
}

impl Raw {
    /// Connects and says hello (plaintext: version 2, binding `none`).
    fn connect(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        let mut raw = Self {
            stream,
            decoder: FrameDecoder::new(1 << 24),
            server_id: [0; 16],
            session_id: [0; 16],
            rng: rng::from_seed([0x5d; 32]),
            deliveries: VecDeque::new(),
        };
        raw.send(&ClientPacket::Hello {
            versions: vec![2, 1],
        });
        match raw.recv() {
            Some(ServerPacket::Welcome {
                version: 2,
                server_id,
                session_id,
                ..
            }) => {
                raw.server_id = server_id;
                raw.session_id = session_id;
            }
            other => panic!("expected welcome, got {other:?}"),
        }
        raw
    }

    fn send(&mut self, packet: &ClientPacket) {
        self.stream
            .write_all(&encode_frame(packet, 1 << 24).unwrap())
            .unwrap();
    }

    /// The next packet; `None` once the server closed the connection.
    fn recv(&mut self) -> Option<ServerPacket> {
        self.recv_within(ANSWER_TIMEOUT)
            .unwrap_or_else(|| panic!("no answer from the server in {ANSWER_TIMEOUT:?}"))
    }

    /// The next packet (`Some(None)`: the server closed the connection), or
    /// `None` if nothing came within `within`.
    fn recv_within(&mut self, within: Duration) -> Option<Option<ServerPacket>> {
        let mut buf = [0u8; 64 * 1024];
        self.stream.set_read_timeout(Some(within)).unwrap();
        loop {
            if let Some(packet) = self.decoder.next_packet::<ServerPacket>().unwrap() {
                return Some(Some(packet));
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Some(None),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(None),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("cannot read from the server: {e}"),
            }
        }
    }

    /// The next packet that is not a delivery or a notice (deliveries are
    /// kept; notices, of deliveries to bob, are acknowledged).
    fn answer(&mut self) -> ServerPacket {
        self.answer_within(ANSWER_TIMEOUT)
            .unwrap_or_else(|| panic!("no answer from the server in {ANSWER_TIMEOUT:?}"))
    }

    /// [`answer`](Raw::answer), or `None` if none came within `within`.
    fn answer_within(&mut self, within: Duration) -> Option<ServerPacket> {
        loop {
            match self
                .recv_within(within)?
                .expect("the server closed the connection")
            {
                ServerPacket::Message { seq, id, .. } => self.deliveries.push_back((seq, id)),
                ServerPacket::Notice { seq, .. } => self.send(&ClientPacket::Ack { seq }),
                other => return Some(other),
            }
        }
    }

    /// `register` or `login` as `name`, proved with `key`: the answer.
    fn authenticate(&mut self, context: AuthContext, name: &str, key: &Identity) -> ServerPacket {
        self.send(&match context {
            AuthContext::Register => ClientPacket::Register {
                user: user(name),
                public_key: key.public_key().to_spki_der().to_vec(),
            },
            _ => ClientPacket::Login { user: user(name) },
        });
        let nonce = match self.answer() {
            ServerPacket::Challenge { nonce, .. } => nonce,
            other => return other,
        };
        let client_nonce = rng::bytes(&mut self.rng);
        let transcript = AuthTranscript {
            version: TranscriptVersion::V2(ChannelBinding::None),
            context,
            server_id: self.server_id,
            session_id: self.session_id,
            user: &user(name),
            server_nonce: nonce,
            client_nonce,
        };
        let signature = transcript.sign(key, &mut self.rng);
        self.send(&ClientPacket::Prove {
            client_nonce,
            signature,
        });
        self.answer()
    }

    /// Connects and logs in as `name` (registering it first if `register`).
    fn user(addr: &str, name: &str, key: &Identity, register: bool) -> Self {
        let mut raw = Self::connect(addr);
        if register {
            let answer = raw.authenticate(AuthContext::Register, name, key);
            assert!(
                matches!(answer, ServerPacket::Registered { .. }),
                "{answer:?}"
            );
        }
        let answer = raw.authenticate(AuthContext::Login, name, key);
        assert!(
            matches!(answer, ServerPacket::LoggedIn { .. }),
            "{answer:?}"
        );
        raw
    }

    fn send_message(&mut self, n: u32, to: &str) {
        let mut envelope = vec![0xa5; ENVELOPE_BYTES];
        envelope[..4].copy_from_slice(&n.to_be_bytes());
        self.send(&ClientPacket::Send {
            id: message_id(n),
            to: user(to),
            envelope: envelope.into(),
        });
    }

    /// The answer to a `send`: `Ok(id)` for accepted, else the error code
    /// (with the id it names).
    fn send_answer(&mut self) -> Result<MessageId, (ErrorCode, Option<MessageId>)> {
        self.send_answer_within(ANSWER_TIMEOUT)
            .unwrap_or_else(|| panic!("no answer from the server in {ANSWER_TIMEOUT:?}"))
    }

    /// [`send_answer`](Raw::send_answer), or `None` if none came within
    /// `within`.
    fn send_answer_within(
        &mut self,
        within: Duration,
    ) -> Option<Result<MessageId, (ErrorCode, Option<MessageId>)>> {
        Some(match self.answer_within(within)? {
            ServerPacket::Accepted { id } => Ok(id),
            ServerPacket::Error { code, id, .. } => Err((code, id)),
            other => panic!("expected an answer to send, got {other:?}"),
        })
    }

    /// Takes every delivery until `want` ids are in `got`, acknowledging
    /// each.
    fn receive_until(&mut self, got: &mut BTreeSet<MessageId>, want: usize) {
        while got.len() < want {
            let (seq, id) = match self.deliveries.pop_front() {
                Some(delivery) => delivery,
                None => match self.recv().expect("the server closed the connection") {
                    ServerPacket::Message { seq, id, .. } => (seq, id),
                    ServerPacket::Notice { .. } => continue,
                    other => panic!("expected a delivery, got {other:?}"),
                },
            };
            self.send(&ClientPacket::Ack { seq });
            got.insert(id);
        }
    }

    /// Ping, pong: the server serves this connection.
    fn ping(&mut self) {
        self.send(&ClientPacket::Ping);
        assert_eq!(self.answer(), ServerPacket::Pong);
    }
}

/// The ballast: `BALLAST_BYTES` of the volume taken by someone else.
fn write_ballast(path: &Path) {
    std::fs::write(path, vec![0x42; BALLAST_BYTES]).unwrap();
}

#[test]
fn a_full_disk_refuses_sends_delivers_what_is_queued_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("volume");
    let Some(_mount) =
        missive_testkit::skip_unless_required("a tmpfs", Tmpfs::mount(&volume, VOLUME))
    else {
        return;
    };
    let data = volume.join("data");
    let ballast = volume.join("ballast");
    let [alice_key, bob_key, carol_key, _] = identities();

    let mut flags = LOAD_FLAGS.to_vec();
    flags.extend(["--admin-listen", "127.0.0.1:0"]);
    let server = ServerProcess::start(&data, "127.0.0.1:0", &flags);
    let addr = server.addr.clone();
    let admin = server.admin_addr.clone().unwrap();
    let mut bob = Raw::user(&addr, "bob", bob_key, true);
    drop(bob); // offline: the flood queues for him
    let mut alice = Raw::user(&addr, "alice", alice_key, true);
    write_ballast(&ballast);

    // The flood, IN_FLIGHT sends at a time, until the store refuses. (If
    // the disk fills while every send in flight waits to be made durable,
    // none is answered until it recovers: one more send then gets the
    // refusal.)
    let mut accepted: BTreeSet<MessageId> = BTreeSet::new();
    let mut in_flight: usize = 0;
    let mut next = 0u32;
    let mut window = IN_FLIGHT;
    let refused_first = loop {
        while in_flight < window && next < FLOOD_MAX {
            alice.send_message(next, "bob");
            next += 1;
            in_flight += 1;
        }
        assert!(in_flight > 0, "{FLOOD_MAX} messages fit on the volume");
        let Some(answer) = alice.send_answer_within(HELD) else {
            window += 1;
            continue;
        };
        in_flight -= 1;
        match answer {
            Ok(id) => {
                accepted.insert(id);
            }
            Err((ErrorCode::StorageUnavailable, Some(id))) => break id,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    };
    let refused_first = (0..next).find(|n| message_id(*n) == refused_first).unwrap();
    let accepted_before_full = accepted.len();
    let mut refusals = 1;
    // The rest of what was in flight: refused, or accepted later (held
    // until the store can make it durable).
    let mut waiting = in_flight;
    assert!(server_log_mentions(&server, "No space left on device"));

    // The server keeps running and refuses new sends, typed.
    for n in 0..REFUSED_TRIES {
        std::thread::sleep(Duration::from_millis(50));
        alice.send_message(FLOOD_MAX + n, "bob");
        loop {
            match alice.send_answer() {
                Err((ErrorCode::StorageUnavailable, Some(id))) => {
                    refusals += 1;
                    if id == message_id(FLOOD_MAX + n) {
                        break;
                    }
                    waiting -= 1;
                }
                other => panic!("expected StorageUnavailable, got {other:?}"),
            }
        }
    }
    alice.ping();
    assert!(server_is_running(&server));
    // Out of a load balancer's rotation meanwhile, alive all the same.
    assert_eq!(http_get(&admin, "/healthz").0, 200);
    let (status, reason) = http_get(&admin, "/readyz");
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("store"), "{reason}");
    assert!(
        http_get(&admin, "/metrics")
            .1
            .contains("\nmissive_store_available 0\n")
    );
    // Registrations are refused too: the error, then the close.
    let mut carol = Raw::connect(&addr);
    match carol.authenticate(AuthContext::Register, "carol", carol_key) {
        ServerPacket::Error {
            code: ErrorCode::StorageUnavailable,
            ..
        } => assert!(carol.recv().is_none(), "closed after the refusal"),
        other => panic!("expected StorageUnavailable, got {other:?}"),
    }

    // Bob logs in during the outage and gets everything accepted so far.
    bob = Raw::user(&addr, "bob", bob_key, false);
    let mut delivered_during: BTreeSet<MessageId> = BTreeSet::new();
    bob.receive_until(&mut delivered_during, accepted_before_full);
    assert_eq!(delivered_during, accepted, "what was durable is delivered");
    bob.ping(); // his acks reached the server (durable later)

    // Space returns: the server recovers by itself. Alice retries the
    // first refused send, as a client does (the server takes no later send
    // of hers before it, so that order per recipient holds).
    std::fs::remove_file(&ballast).unwrap();
    let space_back = Instant::now();
    let mine = message_id(refused_first);
    let recovered_in = loop {
        alice.send_message(refused_first, "bob");
        let answer = loop {
            match alice.send_answer() {
                Ok(id) if id != mine => {
                    accepted.insert(id); // held from before the outage
                    waiting -= 1;
                }
                Err((ErrorCode::StorageUnavailable, Some(id))) if id != mine => {
                    refusals += 1;
                    waiting -= 1;
                }
                answer => break answer,
            }
        };
        match answer {
            Ok(id) => {
                accepted.insert(id);
                break space_back.elapsed();
            }
            Err((ErrorCode::StorageUnavailable, Some(_))) => {
                refusals += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("unexpected answer {other:?}"),
        }
    };
    let after = FLOOD_MAX + REFUSED_TRIES;
    for n in after..after + AFTER_RECOVERY {
        alice.send_message(n, "bob");
    }
    for _ in 0..AFTER_RECOVERY + waiting as u32 {
        match alice.send_answer() {
            Ok(id) => {
                accepted.insert(id);
            }
            other => panic!("refused after the recovery: {other:?}"),
        }
    }
    assert_eq!(http_get(&admin, "/readyz"), (200, "ready\n".to_owned()));
    let (_, metrics) = http_get(&admin, "/metrics");
    assert!(
        metrics.contains("\nmissive_store_available 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nmissive_messages_refused_total{reason=\"StorageUnavailable\"} "),
        "{metrics}"
    );
    // A registration goes through again.
    drop(carol);
    drop(Raw::user(&addr, "carol", carol_key, true));
    drop(alice);
    drop(bob);

    // Restart: everything accepted and not yet acknowledged is still there;
    // the acks bob sent during the outage became durable after it.
    server.terminate();
    let server = ServerProcess::start(&data, "127.0.0.1:0", &LOAD_FLAGS);
    let mut bob = Raw::user(&server.addr, "bob", bob_key, false);
    let mut delivered_after: BTreeSet<MessageId> = BTreeSet::new();
    let remaining = accepted.len() - delivered_during.len();
    bob.receive_until(&mut delivered_after, remaining);
    assert!(
        delivered_after.is_disjoint(&delivered_during),
        "acks sent during the outage were kept"
    );
    let mut everything = delivered_during.clone();
    everything.extend(&delivered_after);
    assert_eq!(everything, accepted, "nothing accepted is lost");
    bob.ping();
    assert!(bob.deliveries.is_empty(), "nothing else was queued");
    server.terminate();

    println!(
        "disk-full figures ({VOLUME} tmpfs, {} KiB envelopes, {} MiB ballast): \
         accepted before the disk filled: {accepted_before_full}; \
         sends refused with StorageUnavailable during the outage: {refusals}; \
         delivered during the outage: {}; \
         recovered {} ms after the ballast was deleted; \
         accepted in all: {}; lost: 0",
        ENVELOPE_BYTES >> 10,
        BALLAST_BYTES >> 20,
        delivered_during.len(),
        recovered_in.as_millis(),
        accepted.len(),
    );
}

fn server_is_running(server: &ServerProcess) -> bool {
    std::fs::metadata(format!("/proc/{}", server.child.id())).is_ok()
}

fn server_log_mentions(server: &ServerProcess, text: &str) -> bool {
    std::fs::read_to_string(&server.log).unwrap().contains(text)
}
