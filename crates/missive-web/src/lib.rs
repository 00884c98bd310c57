//! # missive-web: the Missive client core in the browser
//!
//! The core's [`Client`](missive_core::client::Client) compiled to
//! WebAssembly and exported with wasm-bindgen (`web/pkg/missive_web.js`,
//! built by `scripts/build-web.sh`), plus key generation, PEM import and
//! export in the CLI's form, and the core's sealing and opening. The crate
//! adds no protocol logic: the page owns the WebSocket and the timer, this
//! crate turns their events into the core's inputs and the core's outputs
//! into plain JavaScript objects. It builds natively too, where its tests
//! run.
//!
//! ## The drive loop
//!
//! A [`WebClient`] is driven like every other driver drives the core
//! (docs/ARCHITECTURE.md, "The drive loop"):
//!
//! 1. **Feed** what happened: `connected()` when the WebSocket opens,
//!    `receive(bytes)` for each binary message (exactly one packet),
//!    `disconnected()` when it closes or fails, `timeout()` when the timer
//!    fires. The page's own calls (`send`, `set_presence`,
//!    `query_presence`, `trust_key`) feed it too.
//! 2. **Drain** `poll_output()` until it returns `undefined`, after every
//!    call above, and act on each object by its `kind`:
//!    `"transmit"` — send `bytes` as one binary message; `"close"` — close
//!    the socket, then call `disconnected()`; `"state"` — persist `state`
//!    (the client's durable state: pinned keys, the outbox, ...) and pass
//!    it to the constructor next time; `"event"` — show `event` (its
//!    `type` says what happened, see [`WebEvent`]).
//! 3. **Arm the timer** for `next_timeout_ms()` (milliseconds from now, or
//!    `undefined`: none).
//!
//! The WebSocket uses the subprotocol `missive.v1` and
//! `binaryType = "arraybuffer"` (docs/PROTOCOL.md §2.6). Messages from
//! [`WebClient::send`] wait in the durable outbox while disconnected and
//! go out after the next login; after `{type: "disconnected"}` the page
//! may open a new socket and call `connected()` again.
//!
//! ```js
//! import init, { WebClient } from "./pkg/missive_web.js";
//! await init();
//! const client = new WebClient("alice", identityDer, savedState, false);
//! const ws = new WebSocket("ws://" + location.host + "/", "missive.v1");
//! ws.binaryType = "arraybuffer";
//! let timer;
//! function drain() {
//!   for (let out; (out = client.poll_output()) !== undefined; ) {
//!     if (out.kind === "transmit") ws.send(out.bytes);
//!     else if (out.kind === "close") { ws.close(); client.disconnected(); }
//!     else if (out.kind === "state") save(out.state);
//!     else show(out.event);
//!   }
//!   clearTimeout(timer);
//!   const ms = client.next_timeout_ms();
//!   if (ms !== undefined) timer = setTimeout(() => { client.timeout(); drain(); }, ms);
//! }
//! ws.onopen = () => { client.connected(); drain(); };
//! ws.onmessage = (e) => { client.receive(new Uint8Array(e.data)); drain(); };
//! ws.onclose = () => { client.disconnected(); drain(); };
//! // later: client.send("bob", "hi bob"); drain();
//! ```
//!
//! Calls that take a user name throw an `Error` with a readable message for
//! an invalid one; so do the constructor and `send` for their refusals.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod events;
mod keys;
mod session;
#[cfg(test)]
mod test_keys;

pub use events::WebEvent;
pub use keys::{
    GenerateError, IdentityError, ImportError, OpenRequest, OpenTextError, SealRequest,
    SealTextError,
};
pub use session::{InvalidName, NewSessionError, PendingMessage, Session, WebOutput, WebSendError};

use missive_core::UnixMillis;
use missive_core::time::Instant;
use serde::Serialize;
use wasm_bindgen::prelude::*;

/// The browser's (or the OS's) random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the random generator failed: {0}")]
pub struct RandomError(getrandom::Error);

/// 32 bytes from the OS generator (`crypto.getRandomValues` in browsers).
fn os_seed() -> Result<[u8; 32], RandomError> {
    let mut seed = [0; 32];
    getrandom::fill(&mut seed).map_err(RandomError)?;
    Ok(seed)
}

/// The wall clock (Unix milliseconds), from JavaScript's `Date.now()`.
fn unix_ms_now() -> UnixMillis {
    // Date.now() is a whole number of milliseconds since 1970.
    js_sys::Date::now() as UnixMillis
}

/// A value as a plain JavaScript object (`null` for a missing value, a
/// `Uint8Array` for bytes).
fn to_js(value: &impl Serialize) -> Result<JsValue, JsError> {
    let serializer = serde_wasm_bindgen::Serializer::new().serialize_missing_as_null(true);
    value.serialize(&serializer).map_err(JsError::from)
}

/// The client of one user, driven by the page (see the crate docs).
#[wasm_bindgen]
pub struct WebClient {
    session: Session,
}

#[wasm_bindgen]
impl WebClient {
    /// `new WebClient(user, identity, state, register)`: a client for
    /// `user` with `identity` (PKCS#8 DER), resuming from `state` (the
    /// bytes of the last `"state"` output, or `undefined` the first time).
    /// `register`: register the name (with this key) on every connection;
    /// otherwise only log in. Throws on an invalid name, identity or state.
    #[wasm_bindgen(constructor)]
    pub fn new(
        user: &str,
        identity: &[u8],
        state: Option<Vec<u8>>,
        register: bool,
    ) -> Result<WebClient, JsError> {
        let session = Session::new(
            user,
            identity,
            state.as_deref(),
            register,
            os_seed()?,
            Instant::now(),
            unix_ms_now(),
        )?;
        Ok(WebClient { session })
    }

    /// The WebSocket opened.
    pub fn connected(&mut self) {
        self.session.connected(Instant::now());
    }

    /// One binary WebSocket message arrived.
    pub fn receive(&mut self, packet: &[u8]) {
        self.session.receive(Instant::now(), packet);
    }

    /// The WebSocket closed or failed.
    pub fn disconnected(&mut self) {
        self.session.disconnected(Instant::now());
    }

    /// The timer armed for `next_timeout_ms()` fired.
    pub fn timeout(&mut self) {
        self.session.timeout(Instant::now());
    }

    /// The next thing to do: `{kind: "transmit", bytes}`, `{kind: "close"}`,
    /// `{kind: "state", state}` or `{kind: "event", event}`; `undefined`
    /// when there is nothing left.
    pub fn poll_output(&mut self) -> Result<JsValue, JsError> {
        match self.session.poll_output()? {
            Some(output) => to_js(&output),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// Milliseconds from now until `timeout()` is due (≥ 0), or
    /// `undefined` when nothing waits on time.
    pub fn next_timeout_ms(&self) -> Option<f64> {
        // Milliseconds fit an f64 exactly far beyond any real timer.
        self.session
            .next_timeout(Instant::now())
            .map(|left| left.as_millis() as f64)
    }

    /// Queues `text` for `to` and returns the message id. Throws on an
    /// invalid name, a text too large ("message too large: N bytes, at most
    /// M") or a full outbox.
    pub fn send(&mut self, to: &str, text: &str) -> Result<String, JsError> {
        Ok(self.session.send(Instant::now(), to, text)?)
    }

    /// Announces presence: online (deliveries flow) or offline.
    pub fn set_presence(&mut self, online: bool) {
        self.session.set_presence(Instant::now(), online);
    }

    /// Asks whether `user` is online; answered by a `presence` or
    /// `presence_unknown` event. Throws on an invalid name.
    pub fn query_presence(&mut self, user: &str) -> Result<(), JsError> {
        Ok(self.session.query_presence(Instant::now(), user)?)
    }

    /// Forgets `user`'s pinned key (after a `key_changed` event the user
    /// accepted), so that the next fetch pins the key the server offers
    /// then. Throws on an invalid name.
    pub fn trust_key(&mut self, user: &str) -> Result<(), JsError> {
        Ok(self.session.trust_key(user)?)
    }

    /// This user's key fingerprint (`SHA256:…`, as the CLI prints it).
    pub fn fingerprint(&self) -> String {
        self.session.fingerprint()
    }

    /// The fingerprint of the key pinned for `user`, or `undefined`.
    pub fn pinned_fingerprint(&self, user: &str) -> Option<String> {
        self.session.pinned_fingerprint(user)
    }

    /// The users whose key is pinned.
    pub fn pinned_users(&self) -> Vec<String> {
        self.session.pinned_users()
    }

    /// The messages still in the outbox: an array of `{id, to}`.
    pub fn pending(&self) -> Result<JsValue, JsError> {
        to_js(&self.session.pending())
    }

    /// The user this client is for.
    pub fn user(&self) -> String {
        self.session.user()
    }

    /// Whether the current connection is logged in.
    pub fn is_logged_in(&self) -> bool {
        self.session.is_logged_in()
    }
}

/// A new identity of `bits` bits (2048 to 4096) as PKCS#8 DER. Takes
/// about a second for 2048 bits: call it in a Worker.
#[wasm_bindgen]
pub fn generate_identity(bits: usize) -> Result<Vec<u8>, JsError> {
    Ok(keys::generate_identity(os_seed()?, bits)?)
}

/// An identity (PKCS#8 DER) in the CLI's PKCS#8 PEM form.
#[wasm_bindgen]
pub fn identity_to_pem(der: &[u8]) -> Result<String, JsError> {
    Ok(keys::identity_to_pem(der)?)
}

/// Imports a private key in the CLI's PKCS#8 PEM form; returns its DER.
/// Throws a readable Error for a bad PEM, a key that is not RSA, or a key
/// of a size Missive does not accept.
#[wasm_bindgen]
pub fn identity_from_pem(pem: &str) -> Result<Vec<u8>, JsError> {
    Ok(keys::identity_from_pem(pem)?)
}

/// The fingerprint (`SHA256:…`) of an identity (PKCS#8 DER).
#[wasm_bindgen]
pub fn identity_fingerprint(der: &[u8]) -> Result<String, JsError> {
    Ok(keys::identity_fingerprint(der)?)
}

/// The public key (SPKI DER) of an identity (PKCS#8 DER).
#[wasm_bindgen]
pub fn public_key(der: &[u8]) -> Result<Vec<u8>, JsError> {
    Ok(keys::public_key(der)?)
}

/// Seals `text` from `sender_name` (identity `sender_der`, PKCS#8) for
/// `recipient_name` (key `recipient_spki`) with a fresh id, sent now; the
/// core's `crypto::seal`. For measurements.
#[wasm_bindgen]
pub fn seal(
    sender_der: &[u8],
    sender_name: &str,
    recipient_name: &str,
    recipient_spki: &[u8],
    text: &str,
) -> Result<Vec<u8>, JsError> {
    let request = SealRequest {
        sender: sender_der,
        sender_name,
        recipient_name,
        recipient_key: recipient_spki,
        text,
        sent_at: unix_ms_now(),
    };
    Ok(keys::seal_text(&request, os_seed()?)?)
}

/// Verifies and decrypts an envelope for `recipient_name` (identity
/// `recipient_der`) from `sender_name` (key `sender_spki`); returns the
/// text. The core's `crypto::open`. For measurements.
#[wasm_bindgen]
pub fn open(
    recipient_der: &[u8],
    recipient_name: &str,
    sender_name: &str,
    sender_spki: &[u8],
    envelope: &[u8],
) -> Result<String, JsError> {
    Ok(keys::open_text(&OpenRequest {
        recipient: recipient_der,
        recipient_name,
        sender_name,
        sender_key: sender_spki,
        envelope,
    })?)
}
