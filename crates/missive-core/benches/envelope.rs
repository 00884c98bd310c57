//! Cost of end-to-end envelopes, and where it goes.
//!
//! * `envelope/seal` and `envelope/open` for 256-byte and 64 KiB bodies
//!   between two 2048-bit identities (the public API, as a client uses it);
//! * `rsa2048/*`: the four RSA operations an envelope (and a login) costs,
//!   done with the same `rsa` calls and parameters the core uses: PSS-SHA256
//!   sign and verify over a 32-byte digest, OAEP-SHA256 wrap and unwrap of a
//!   32-byte content key;
//! * `bulk/*`: the symmetric part for a 64 KiB body: ChaCha20-Poly1305 and
//!   SHA-256 (the signed digest covers the ciphertext).
//!
//! seal ≈ PSS sign + OAEP wrap + bulk; open ≈ PSS verify + OAEP unwrap +
//! bulk (+ CBOR parsing).
//!
//! Run: `cargo bench -p missive-core --bench envelope`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use missive_core::crypto::{ENVELOPE_VERSION, EnvelopeHeader, Identity, open, seal};
use missive_core::{MessageId, UserName, rng};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::time::Duration;

const MAX_LEN: usize = 256 * 1024;

fn bench_envelope(c: &mut Criterion) {
    let mut key_rng = rng::from_seed([42; 32]);
    let alice = Identity::generate(&mut key_rng, 2048).expect("key");
    let bob = Identity::generate(&mut key_rng, 2048).expect("key");
    let header = EnvelopeHeader {
        version: ENVELOPE_VERSION,
        sender: UserName::new("alice").expect("name"),
        recipient: UserName::new("bob").expect("name"),
        id: MessageId([7; 16]),
        sent_at: 1_700_000_000_000,
    };

    let mut group = c.benchmark_group("envelope");
    group.measurement_time(Duration::from_secs(5));
    for (label, len) in [("256B", 256usize), ("64KiB", 64 * 1024)] {
        let body = vec![0x42u8; len];
        let mut seal_rng = rng::from_seed([1; 32]);
        group.bench_function(format!("seal/{label}"), |b| {
            b.iter(|| {
                seal(
                    &mut seal_rng,
                    &alice,
                    &header,
                    bob.public_key(),
                    black_box(&body),
                    MAX_LEN,
                )
                .expect("seals")
            })
        });
        let sealed = seal(
            &mut seal_rng,
            &alice,
            &header,
            bob.public_key(),
            &body,
            MAX_LEN,
        )
        .expect("seals");
        group.bench_function(format!("open/{label}"), |b| {
            b.iter(|| {
                open(
                    &bob,
                    &header.recipient,
                    &header.sender,
                    alice.public_key(),
                    black_box(&sealed),
                    MAX_LEN,
                )
                .expect("opens")
            })
        });
    }
    group.finish();

    // The RSA operations on their own, with the calls the core makes.
    let private = rsa::PrivateKey::from_pkcs8_der(&alice.to_pkcs8_der()).expect("pkcs8");
    let public =
        rsa::PublicKey::from_public_key_der(alice.public_key().to_spki_der()).expect("spki");
    let digest: [u8; 32] = Sha256::digest(b"transcript or envelope").into();
    let mut op_rng = rng::from_seed([2; 32]);
    let content_key = [0x33u8; 32];

    let mut group = c.benchmark_group("rsa2048");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("pss_sign", |b| {
        b.iter(|| {
            private
                .pss_sign_prehash_with_rng::<Sha256, _>(&mut op_rng, black_box(&digest))
                .expect("signs")
        })
    });
    let signature = private
        .pss_sign_prehash_with_rng::<Sha256, _>(&mut op_rng, &digest)
        .expect("signs");
    group.bench_function("pss_verify", |b| {
        b.iter(|| {
            public
                .pss_verify_prehash::<Sha256>(black_box(&digest), black_box(&signature))
                .expect("verifies")
        })
    });
    group.bench_function("oaep_wrap", |b| {
        b.iter(|| {
            public
                .oaep_encrypt_with_rng::<Sha256, _>(&mut op_rng, black_box(&content_key))
                .expect("wraps")
        })
    });
    let wrapped = public
        .oaep_encrypt_with_rng::<Sha256, _>(&mut op_rng, &content_key)
        .expect("wraps");
    group.bench_function("oaep_unwrap", |b| {
        b.iter(|| {
            private
                .oaep_decrypt_with_rng::<Sha256, _>(&mut op_rng, black_box(&wrapped))
                .expect("unwraps")
        })
    });
    group.finish();

    // The symmetric work of a 64 KiB envelope.
    let body = vec![0x42u8; 64 * 1024];
    let aead = ChaCha20Poly1305::new(&content_key.into());
    let mut group = c.benchmark_group("bulk");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("chacha20poly1305_seal/64KiB", |b| {
        b.iter(|| {
            aead.encrypt(
                &Nonce::default(),
                Payload {
                    msg: black_box(&body),
                    aad: b"header",
                },
            )
            .expect("encrypts")
        })
    });
    let ciphertext = aead
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: &body,
                aad: b"header",
            },
        )
        .expect("encrypts");
    group.bench_function("chacha20poly1305_open/64KiB", |b| {
        b.iter(|| {
            aead.decrypt(
                &Nonce::default(),
                Payload {
                    msg: black_box(ciphertext.as_slice()),
                    aad: b"header",
                },
            )
            .expect("decrypts")
        })
    });
    group.bench_function("sha256/64KiB", |b| {
        b.iter(|| Sha256::digest(black_box(&body)))
    });
    group.finish();
}

criterion_group!(benches, bench_envelope);
criterion_main!(benches);
