//! The client's events as the page sees them: [`WebEvent`], one plain
//! object per [`ClientEvent`], with a field `type` and snake_case names.
//!
//! Reasons are short machine-readable words the page switches on; every
//! `message` is a sentence a user can read, written from the typed error.

use missive_core::client::{ClientEvent, ConnectionError, LoginError, SendFailure};
use missive_core::wire::ErrorCode;
use missive_core::{MessageId, UnixMillis, UserName};
use serde::Serialize;

/// One [`ClientEvent`] for JavaScript (see the crate docs for the list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WebEvent {
    /// The user was registered with this key.
    Registered,
    /// Login succeeded.
    LoggedIn {
        /// Items waiting in the mailbox at login.
        #[serde(serialize_with = "js_number")]
        queued: u64,
    },
    /// Registration or login was refused; the socket is closed next.
    LoginFailed {
        /// One of `not_registered`, `name_taken`, `signature_rejected`,
        /// `key_rejected`, `refused`, `other`.
        reason: &'static str,
        /// What went wrong, for the user.
        message: String,
    },
    /// A message was received and verified.
    Message {
        /// The sender.
        from: String,
        /// The message id (32 hex digits).
        id: String,
        /// The sender's clock when sealing (Unix milliseconds; any value
        /// the sender chose).
        #[serde(serialize_with = "js_number")]
        sent_at: UnixMillis,
        /// The text (invalid UTF-8 replaced by U+FFFD).
        text: String,
    },
    /// The server holds the message.
    Accepted {
        /// The message id.
        id: String,
        /// The recipient.
        to: String,
    },
    /// The recipient received the message.
    Delivered {
        /// The message id.
        id: String,
        /// The recipient.
        to: String,
    },
    /// The message expired unread on the server.
    Expired {
        /// The message id.
        id: String,
        /// The recipient.
        to: String,
    },
    /// The message left the outbox without being accepted.
    SendFailed {
        /// The message id.
        id: String,
        /// The recipient.
        to: String,
        /// One of `unknown_user`, `queue_full`, `key_changed`, `too_large`,
        /// `bad_key`, `id_reused`, `rejected`, `other`.
        reason: &'static str,
        /// What went wrong, for the user.
        message: String,
    },
    /// Answer to a presence query.
    Presence {
        /// Whose presence.
        user: String,
        /// Online now.
        online: bool,
        /// When last online (Unix milliseconds), `null` if unknown.
        #[serde(serialize_with = "optional_js_number")]
        last_seen: Option<UnixMillis>,
    },
    /// Answer to a presence query: the server does not know the user.
    PresenceUnknown {
        /// The user asked about.
        user: String,
    },
    /// The server offered another key than the pinned one; the pinned one
    /// stays in use until `trust_key`.
    KeyChanged {
        /// Whose key.
        user: String,
        /// Fingerprint of the pinned key.
        pinned: String,
        /// Fingerprint of the offered key.
        offered: String,
    },
    /// A received message could not be opened (the sender learns nothing).
    Undecryptable {
        /// The sender as named by the server.
        from: String,
        /// The message id.
        id: String,
    },
    /// The connection failed; the socket is closed next.
    ConnectionLost {
        /// The [`ConnectionError`] variant in snake_case, or `other`.
        reason: &'static str,
        /// What went wrong, for the user.
        message: String,
    },
    /// The connection is gone; the page may reconnect.
    Disconnected,
    /// Cluster: connect to `address` instead.
    Redirected {
        /// `host:port` or a `ws://` / `wss://` URL.
        address: String,
    },
    /// The server refused a request the client cannot attribute
    /// (diagnostics only).
    RequestRefused {
        /// The server's error code.
        code: u16,
        /// The user the server named, `null` if none.
        user: Option<String>,
        /// The server's explanation.
        detail: String,
    },
    /// An event newer than this crate.
    Other {
        /// A description of it.
        message: String,
    },
}

impl From<ClientEvent> for WebEvent {
    fn from(event: ClientEvent) -> Self {
        match event {
            ClientEvent::Registered => WebEvent::Registered,
            ClientEvent::LoggedIn { queued } => WebEvent::LoggedIn { queued },
            ClientEvent::LoginFailed(error) => WebEvent::LoginFailed {
                reason: login_reason(&error),
                message: login_message(&error),
            },
            ClientEvent::MessageReceived {
                from,
                id,
                sent_at,
                body,
            } => WebEvent::Message {
                from: from.to_string(),
                id: id.to_string(),
                sent_at,
                text: String::from_utf8_lossy(&body).into_owned(),
            },
            ClientEvent::Accepted { id, to } => WebEvent::Accepted {
                id: id.to_string(),
                to: to.to_string(),
            },
            ClientEvent::Delivered { to, id } => WebEvent::Delivered {
                id: id.to_string(),
                to: to.to_string(),
            },
            ClientEvent::Expired { to, id } => WebEvent::Expired {
                id: id.to_string(),
                to: to.to_string(),
            },
            ClientEvent::SendFailed { to, id, reason } => WebEvent::SendFailed {
                reason: send_reason(reason),
                message: send_message(reason, &to, &id),
                id: id.to_string(),
                to: to.to_string(),
            },
            ClientEvent::PresenceChanged {
                user,
                online,
                last_seen_ms,
            } => WebEvent::Presence {
                user: user.to_string(),
                online,
                last_seen: last_seen_ms,
            },
            ClientEvent::PresenceUnknown { user } => WebEvent::PresenceUnknown {
                user: user.to_string(),
            },
            ClientEvent::KeyChanged {
                user,
                pinned,
                offered,
            } => WebEvent::KeyChanged {
                user: user.to_string(),
                pinned: pinned.to_string(),
                offered: offered.to_string(),
            },
            ClientEvent::UndecryptableMessage { from, id, .. } => WebEvent::Undecryptable {
                from: from.to_string(),
                id: id.to_string(),
            },
            ClientEvent::ConnectionLost { reason } => WebEvent::ConnectionLost {
                reason: connection_reason(&reason),
                message: sentence(&reason.to_string()),
            },
            ClientEvent::Disconnected => WebEvent::Disconnected,
            ClientEvent::Redirected { address } => WebEvent::Redirected { address },
            ClientEvent::RequestRefused { code, user, detail } => WebEvent::RequestRefused {
                code: u16::from(code),
                user: user.as_ref().map(UserName::to_string),
                detail,
            },
            other => WebEvent::Other {
                message: format!("{other:?}"),
            },
        }
    }
}

/// A `u64` as a JavaScript number (an `f64`): exact up to 2^53, rounded
/// beyond. serde-wasm-bindgen refuses larger `u64`s, and a sender chooses
/// `sent_at`: a number from a peer must not make `poll_output` throw.
fn js_number<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(*value as f64)
}

/// [`js_number`] for an optional value (`null` when absent).
fn optional_js_number<S: serde::Serializer>(
    value: &Option<u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => js_number(value, serializer),
        None => serializer.serialize_none(),
    }
}

fn login_reason(error: &LoginError) -> &'static str {
    match error {
        LoginError::NotRegistered { .. } => "not_registered",
        LoginError::NameTaken { .. } => "name_taken",
        LoginError::SignatureRejected { .. } => "signature_rejected",
        LoginError::KeyRejected { .. } => "key_rejected",
        LoginError::Refused { .. } => "refused",
        _ => "other",
    }
}

fn login_message(error: &LoginError) -> String {
    match error {
        LoginError::NotRegistered { user } => {
            format!("The name {user} is not registered on this server: register it first.")
        }
        LoginError::NameTaken { user } => {
            format!("The name {user} is already registered with another key.")
        }
        LoginError::SignatureRejected { user } => format!(
            "The server did not accept the login: this key is not the one registered for {user}."
        ),
        LoginError::KeyRejected { detail } => {
            sentence(&format!("the server does not accept this key: {detail}"))
        }
        LoginError::Refused { code, detail } => sentence(&format!(
            "the server refused the login ({}): {detail}",
            code_name(*code)
        )),
        other => sentence(&other.to_string()),
    }
}

fn send_reason(failure: SendFailure) -> &'static str {
    match failure {
        SendFailure::UnknownUser => "unknown_user",
        SendFailure::QueueFull => "queue_full",
        SendFailure::KeyChanged => "key_changed",
        SendFailure::TooLarge => "too_large",
        SendFailure::BadKey => "bad_key",
        SendFailure::IdReused => "id_reused",
        SendFailure::Rejected(_) => "rejected",
        _ => "other",
    }
}

fn send_message(failure: SendFailure, to: &UserName, id: &MessageId) -> String {
    match failure {
        SendFailure::UnknownUser => format!("There is no user named {to} on this server."),
        SendFailure::QueueFull => format!(
            "The message to {to} was not accepted: their queue on the server is full. Try again later."
        ),
        SendFailure::KeyChanged => format!(
            "The message to {to} was not sent: their key changed. Compare the new fingerprint with {to} before trusting it."
        ),
        SendFailure::TooLarge => {
            format!("The message to {to} is larger than the server accepts.")
        }
        SendFailure::BadKey => {
            format!("The message to {to} was not sent: the server's key for {to} is not usable.")
        }
        SendFailure::IdReused => format!(
            "The message to {to} was not sent: its id {id} was already used for another message."
        ),
        SendFailure::Rejected(code) => format!(
            "The server refused the message to {to} ({}).",
            code_name(code)
        ),
        other => format!("The message to {to} was not sent: {other}."),
    }
}

fn connection_reason(error: &ConnectionError) -> &'static str {
    match error {
        ConnectionError::SessionReplaced => "session_replaced",
        ConnectionError::ShuttingDown => "shutting_down",
        ConnectionError::TimedOut => "timed_out",
        ConnectionError::UnsupportedVersion => "unsupported_version",
        ConnectionError::SlowConsumer => "slow_consumer",
        ConnectionError::Closed { .. } => "closed",
        ConnectionError::Moved => "moved",
        ConnectionError::Unavailable => "unavailable",
        ConnectionError::StorageUnavailable => "storage_unavailable",
        ConnectionError::ProtocolViolation { .. } => "protocol_violation",
        _ => "other",
    }
}

/// An error code as the user may read it: its name (`QueueFull`), as the
/// core's errors print it.
fn code_name(code: ErrorCode) -> String {
    format!("{code:?}")
}

/// `text` as a sentence: capital first letter, final period. For messages
/// that start with a fixed word, never with a user name.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_core::crypto::{Fingerprint, OpenError};
    use serde_json::json;

    fn name(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    const ID: MessageId = MessageId([0xab; 16]);
    const ID_HEX: &str = "abababababababababababababababab";

    fn web(event: ClientEvent) -> serde_json::Value {
        serde_json::to_value(WebEvent::from(event)).unwrap()
    }

    #[test]
    fn handshake_events() {
        assert_eq!(web(ClientEvent::Registered), json!({"type": "registered"}));
        assert_eq!(
            web(ClientEvent::LoggedIn { queued: 3 }),
            json!({"type": "logged_in", "queued": 3.0})
        );
        assert_eq!(
            web(ClientEvent::Disconnected),
            json!({"type": "disconnected"})
        );
    }

    #[test]
    fn login_failures_have_a_reason_and_a_sentence() {
        let cases = [
            (
                LoginError::NotRegistered {
                    user: name("alice"),
                },
                "not_registered",
                "The name alice is not registered on this server: register it first.",
            ),
            (
                LoginError::NameTaken {
                    user: name("alice"),
                },
                "name_taken",
                "The name alice is already registered with another key.",
            ),
            (
                LoginError::SignatureRejected {
                    user: name("alice"),
                },
                "signature_rejected",
                "The server did not accept the login: this key is not the one registered for alice.",
            ),
            (
                LoginError::KeyRejected {
                    detail: "exponent too small".into(),
                },
                "key_rejected",
                "The server does not accept this key: exponent too small.",
            ),
            (
                LoginError::Refused {
                    code: ErrorCode::Busy,
                    detail: "try later".into(),
                },
                "refused",
                "The server refused the login (Busy): try later.",
            ),
        ];
        for (error, reason, message) in cases {
            assert_eq!(
                web(ClientEvent::LoginFailed(error)),
                json!({"type": "login_failed", "reason": reason, "message": message})
            );
        }
    }

    #[test]
    fn received_message_carries_text_and_hex_id() {
        assert_eq!(
            web(ClientEvent::MessageReceived {
                from: name("bob"),
                id: ID,
                sent_at: 1_700_000_000_123,
                body: "héllo".as_bytes().to_vec(),
            }),
            json!({"type": "message", "from": "bob", "id": ID_HEX,
                   "sent_at": 1_700_000_000_123.0, "text": "héllo"})
        );
        // Bytes that are not UTF-8 still show (replaced), never fail.
        let lossy = WebEvent::from(ClientEvent::MessageReceived {
            from: name("bob"),
            id: ID,
            sent_at: 0,
            body: vec![b'a', 0xff],
        });
        assert!(matches!(lossy, WebEvent::Message { text, .. } if text == "a\u{fffd}"));
        // Any time a sender wrote is a number (rounded past 2^53), never
        // an error.
        let far = web(ClientEvent::MessageReceived {
            from: name("bob"),
            id: ID,
            sent_at: u64::MAX,
            body: Vec::new(),
        });
        assert_eq!(far["sent_at"], json!(u64::MAX as f64));
    }

    #[test]
    fn outbox_marks() {
        assert_eq!(
            web(ClientEvent::Accepted {
                id: ID,
                to: name("bob")
            }),
            json!({"type": "accepted", "id": ID_HEX, "to": "bob"})
        );
        assert_eq!(
            web(ClientEvent::Delivered {
                to: name("bob"),
                id: ID
            }),
            json!({"type": "delivered", "id": ID_HEX, "to": "bob"})
        );
        assert_eq!(
            web(ClientEvent::Expired {
                to: name("bob"),
                id: ID
            }),
            json!({"type": "expired", "id": ID_HEX, "to": "bob"})
        );
    }

    #[test]
    fn send_failures_have_a_reason_and_a_sentence() {
        let cases = [
            (
                SendFailure::UnknownUser,
                "unknown_user",
                "There is no user named bob on this server.".to_string(),
            ),
            (
                SendFailure::QueueFull,
                "queue_full",
                "The message to bob was not accepted: their queue on the server is full. Try again later.".into(),
            ),
            (
                SendFailure::KeyChanged,
                "key_changed",
                "The message to bob was not sent: their key changed. Compare the new fingerprint with bob before trusting it.".into(),
            ),
            (
                SendFailure::TooLarge,
                "too_large",
                "The message to bob is larger than the server accepts.".into(),
            ),
            (
                SendFailure::BadKey,
                "bad_key",
                "The message to bob was not sent: the server's key for bob is not usable.".into(),
            ),
            (
                SendFailure::IdReused,
                "id_reused",
                format!("The message to bob was not sent: its id {ID_HEX} was already used for another message."),
            ),
            (
                SendFailure::Rejected(ErrorCode::NotLoggedIn),
                "rejected",
                "The server refused the message to bob (NotLoggedIn).".into(),
            ),
        ];
        for (failure, reason, message) in cases {
            assert_eq!(
                web(ClientEvent::SendFailed {
                    to: name("bob"),
                    id: ID,
                    reason: failure,
                }),
                json!({"type": "send_failed", "id": ID_HEX, "to": "bob",
                       "reason": reason, "message": message})
            );
        }
    }

    #[test]
    fn presence_answers() {
        assert_eq!(
            web(ClientEvent::PresenceChanged {
                user: name("bob"),
                online: false,
                last_seen_ms: Some(1_700_000_000_000),
            }),
            json!({"type": "presence", "user": "bob", "online": false,
                   "last_seen": 1_700_000_000_000.0})
        );
        assert_eq!(
            web(ClientEvent::PresenceChanged {
                user: name("bob"),
                online: true,
                last_seen_ms: None,
            }),
            json!({"type": "presence", "user": "bob", "online": true, "last_seen": null})
        );
        assert_eq!(
            web(ClientEvent::PresenceUnknown { user: name("zed") }),
            json!({"type": "presence_unknown", "user": "zed"})
        );
    }

    #[test]
    fn key_change_shows_both_fingerprints() {
        let pinned = Fingerprint([1; 32]);
        let offered = Fingerprint([2; 32]);
        assert_eq!(
            web(ClientEvent::KeyChanged {
                user: name("bob"),
                pinned,
                offered,
            }),
            json!({"type": "key_changed", "user": "bob",
                   "pinned": pinned.to_string(), "offered": offered.to_string()})
        );
        assert!(pinned.to_string().starts_with("SHA256:0101:"));
    }

    #[test]
    fn undecryptable_names_sender_and_id_only() {
        assert_eq!(
            web(ClientEvent::UndecryptableMessage {
                from: name("bob"),
                id: ID,
                error: OpenError::BadSignature,
            }),
            json!({"type": "undecryptable", "from": "bob", "id": ID_HEX})
        );
    }

    #[test]
    fn connection_losses_have_a_reason_and_a_sentence() {
        let cases = [
            (
                ConnectionError::SessionReplaced,
                "session_replaced",
                "A newer login of the same user replaced this session.",
            ),
            (
                ConnectionError::ShuttingDown,
                "shutting_down",
                "The server is shutting down.",
            ),
            (
                ConnectionError::TimedOut,
                "timed_out",
                "The server timed the connection out.",
            ),
            (
                ConnectionError::UnsupportedVersion,
                "unsupported_version",
                "No common protocol version with the server.",
            ),
            (
                ConnectionError::SlowConsumer,
                "slow_consumer",
                "The server closed the connection: the client reads too slowly.",
            ),
            (
                ConnectionError::Closed {
                    code: ErrorCode::Malformed,
                    detail: "bad frame".into(),
                },
                "closed",
                "The server closed the connection: Malformed: bad frame.",
            ),
            (
                ConnectionError::Moved,
                "moved",
                "The server no longer serves this user; reconnect.",
            ),
            (
                ConnectionError::Unavailable,
                "unavailable",
                "No server serves this user right now; reconnect later.",
            ),
            (
                ConnectionError::ProtocolViolation {
                    detail: "unexpected packet".into(),
                },
                "protocol_violation",
                "The server violated the protocol: unexpected packet.",
            ),
        ];
        for (reason_value, reason, message) in cases {
            assert_eq!(
                web(ClientEvent::ConnectionLost {
                    reason: reason_value
                }),
                json!({"type": "connection_lost", "reason": reason, "message": message})
            );
        }
    }

    #[test]
    fn redirect_and_refusal() {
        assert_eq!(
            web(ClientEvent::Redirected {
                address: "ws://node2:7000/".into()
            }),
            json!({"type": "redirected", "address": "ws://node2:7000/"})
        );
        assert_eq!(
            web(ClientEvent::RequestRefused {
                code: ErrorCode::UnknownUser,
                user: Some(name("bob")),
                detail: "no such user".into(),
            }),
            json!({"type": "request_refused", "code": u16::from(ErrorCode::UnknownUser),
                   "user": "bob", "detail": "no such user"})
        );
        assert_eq!(
            web(ClientEvent::RequestRefused {
                code: ErrorCode::Malformed,
                user: None,
                detail: String::new(),
            })["user"],
            json!(null)
        );
    }

    #[test]
    fn sentences() {
        assert_eq!(sentence("the end"), "The end.");
        assert_eq!(sentence("Done."), "Done.");
        assert_eq!(sentence(""), ".");
    }
}
