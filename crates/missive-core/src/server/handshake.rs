//! Version negotiation, registration, login and the key directory.

use super::conn::{Challenge, ChallengePurpose, InFlight, LoggedIn, Phase};
use super::{Held, PersistCmd, Server, ServerEvent};
use crate::cluster::RemoteCall;
use crate::crypto::{AuthContext, AuthTranscript, ChannelBinding, PublicKey, TranscriptVersion};
use crate::rng;
use crate::time::Instant;
use crate::types::{ConnId, Lsn, UserName};
use crate::wire::{ErrorCode, Nonce, PROTOCOL_VERSION, PROTOCOL_VERSION_V1, ServerPacket};

impl Server {
    /// Picks the version (§2.3): 2 whenever offered; 1 only on a connection
    /// whose binding is `none` (on a TLS connection a v1 login, which signs
    /// no binding, could be relayed); binding `none` not at all when the
    /// configuration requires channel binding.
    pub(super) fn on_hello(&mut self, now: Instant, conn: ConnId, versions: &[u16]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let binding = c.binding;
        if binding == ChannelBinding::None && self.config.require_channel_binding {
            let detail = "this server requires channel binding (connect over TLS)";
            return self.fatal(now, conn, ErrorCode::UnsupportedVersion, detail);
        }
        let (version, transcript) = if versions.contains(&PROTOCOL_VERSION) {
            (PROTOCOL_VERSION, TranscriptVersion::V2(binding))
        } else if versions.contains(&PROTOCOL_VERSION_V1) && binding == ChannelBinding::None {
            (PROTOCOL_VERSION_V1, TranscriptVersion::V1)
        } else {
            let detail = match binding {
                ChannelBinding::None => format!(
                    "this server speaks versions {PROTOCOL_VERSION} and {PROTOCOL_VERSION_V1}"
                ),
                ChannelBinding::TlsExporter(_) => format!(
                    "this server speaks version {PROTOCOL_VERSION} only on a TLS connection"
                ),
            };
            return self.fatal(now, conn, ErrorCode::UnsupportedVersion, &detail);
        };
        c.phase = Phase::Open(transcript);
        let welcome = ServerPacket::Welcome {
            version,
            server_id: self.server_id,
            session_id: c.session_id,
            ping_interval_ms: self.config.ping_interval.as_millis() as u64,
            limits: self.config.wire_limits(),
        };
        self.send(conn, &welcome);
    }

    pub(super) fn on_register(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: UserName,
        public_key: &[u8],
    ) {
        if self.refuse_if_logged_in(conn)
            || self.refuse_unowned(now, conn, &user)
            || self.refuse_registration_without_storage(now, conn, &user)
        {
            return;
        }
        let key = match PublicKey::from_spki_der(public_key) {
            Ok(key) => key,
            Err(e) => {
                return self.send_error(conn, ErrorCode::BadKey, None, Some(user), &e.to_string());
            }
        };
        if let Some(record) = self.state.user(&user)
            && record.public_key != key.to_spki_der()
        {
            return self.send_error(
                conn,
                ErrorCode::NameTaken,
                None,
                Some(user),
                "name registered with another key",
            );
        }
        self.challenge(
            now,
            conn,
            ChallengePurpose::Register {
                user,
                key: Box::new(key),
            },
        );
    }

    pub(super) fn on_login(&mut self, now: Instant, conn: ConnId, user: UserName) {
        if self.refuse_if_logged_in(conn) || self.refuse_unowned(now, conn, &user) {
            return;
        }
        if self.state.user(&user).is_none() {
            self.event(ServerEvent::LoginFailed {
                conn,
                code: ErrorCode::UnknownUser,
            });
            return self.send_error(
                conn,
                ErrorCode::UnknownUser,
                None,
                Some(user),
                "no such user",
            );
        }
        self.challenge(now, conn, ChallengePurpose::Login { user });
    }

    fn refuse_if_logged_in(&mut self, conn: ConnId) -> bool {
        let logged_in = self.conns.get(&conn).is_some_and(|c| c.user().is_some());
        if logged_in {
            self.send_error(
                conn,
                ErrorCode::AlreadyAuthenticated,
                None,
                None,
                "already logged in",
            );
        }
        logged_in
    }

    fn challenge(&mut self, now: Instant, conn: ConnId, purpose: ChallengePurpose) {
        let nonce: Nonce = rng::bytes(&mut self.rng);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // Register and Login reach here in the Open phase only (Hello comes
        // first; a logged-in connection is refused before).
        let Phase::Open(transcript) = c.phase else {
            return;
        };
        // Challenges exist before login only, when the connection closes at
        // the handshake deadline: no challenge outlives it, and
        // `expires_in_ms` tells the time the client really has.
        let expires =
            (now + self.config.challenge_ttl).min(self.config.handshake_deadline(c.connected_at));
        c.challenge = Some(Box::new(Challenge {
            nonce,
            transcript,
            expires,
            purpose,
        }));
        self.send(
            conn,
            &ServerPacket::Challenge {
                nonce,
                expires_in_ms: expires.saturating_duration_since(now).as_millis() as u64,
            },
        );
    }

    pub(super) fn on_prove(
        &mut self,
        now: Instant,
        conn: ConnId,
        client_nonce: Nonce,
        signature: &[u8],
    ) {
        if self.refuse_if_logged_in(conn) {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let session_id = c.session_id;
        // Single use: the challenge is gone whatever the outcome.
        let challenge = match c.challenge.take() {
            Some(ch) if ch.expires > now => ch,
            _ => {
                self.event(ServerEvent::LoginFailed {
                    conn,
                    code: ErrorCode::NoChallenge,
                });
                return self.send_error(
                    conn,
                    ErrorCode::NoChallenge,
                    None,
                    None,
                    "no live challenge",
                );
            }
        };
        // Cluster: the user's shard may have moved since the challenge.
        let (ChallengePurpose::Register { user, .. } | ChallengePurpose::Login { user }) =
            &challenge.purpose;
        if self.refuse_unowned(now, conn, user) {
            return;
        }
        let (context, user, key) = match challenge.purpose {
            ChallengePurpose::Register { user, key } => (AuthContext::Register, user, *key),
            ChallengePurpose::Login { user } => {
                let stored = self
                    .state
                    .user(&user)
                    .map(|r| PublicKey::from_spki_der(&r.public_key));
                match stored {
                    Some(Ok(key)) => (AuthContext::Login, user, key),
                    _ => {
                        self.event(ServerEvent::LoginFailed {
                            conn,
                            code: ErrorCode::AuthFailed,
                        });
                        return self.fatal(
                            now,
                            conn,
                            ErrorCode::AuthFailed,
                            "user has no usable key",
                        );
                    }
                }
            }
        };
        let transcript = AuthTranscript {
            version: challenge.transcript,
            context,
            server_id: self.server_id,
            session_id,
            user: &user,
            server_nonce: challenge.nonce,
            client_nonce,
        };
        if transcript.verify(&key, signature).is_err() {
            if context == AuthContext::Login {
                self.event(ServerEvent::LoginFailed {
                    conn,
                    code: ErrorCode::AuthFailed,
                });
            }
            return self.fatal(
                now,
                conn,
                ErrorCode::AuthFailed,
                "signature does not verify",
            );
        }
        match context {
            AuthContext::Register => self.complete_registration(now, conn, user, &key),
            AuthContext::Login => self.complete_login(now, conn, user),
        }
    }

    fn complete_registration(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: UserName,
        key: &PublicKey,
    ) {
        // The store went away since the `register`.
        if self.state.user(&user).is_none()
            && self.refuse_registration_without_storage(now, conn, &user)
        {
            return;
        }
        match self.state.user(&user) {
            Some(record) if record.public_key == key.to_spki_der() => {
                // Idempotent: the same name with the same key again. The
                // first registration may not be durable yet: answer once
                // every command emitted so far (which include it) is.
                let emitted = Lsn(self.next_lsn - 1);
                self.after_durable(
                    now,
                    emitted,
                    Held::Reply {
                        conn,
                        packet: ServerPacket::Registered { user },
                    },
                );
            }
            Some(_) => self.send_error(
                conn,
                ErrorCode::NameTaken,
                None,
                Some(user),
                "name registered with another key",
            ),
            None => {
                let lsn = self.persist(PersistCmd::RegisterUser {
                    user: user.clone(),
                    public_key: key.to_spki_der().to_vec(),
                });
                if let Some(id) = self.state.id_of(&user) {
                    self.runtime(id, now);
                }
                self.after_durable(
                    now,
                    lsn,
                    Held::Reply {
                        conn,
                        packet: ServerPacket::Registered { user: user.clone() },
                    },
                );
                self.after_durable(now, lsn, Held::Event(ServerEvent::UserRegistered { user }));
            }
        }
    }

    fn complete_login(&mut self, now: Instant, conn: ConnId, user: UserName) {
        // Registered: `on_prove` read the key from the state.
        let Some(id) = self.state.id_of(&user) else {
            return;
        };
        let previous = self.runtime(id, now).session.replace(conn);
        if let Some(old) = previous
            && old != conn
        {
            self.fatal(
                now,
                old,
                ErrorCode::SessionReplaced,
                "a newer login replaced this session",
            );
            // `fatal` cleared the session slot if it still named `old`.
            self.runtime(id, now).session = Some(conn);
        }
        // The liveness deadline may come before the handshake deadline.
        let liveness = self
            .conns
            .get(&conn)
            .map(|c| c.last_heard + self.config.liveness_timeout());
        if let Some(at) = liveness {
            self.arm_timer(conn, at);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let online = c.start_online;
        c.decoder.set_max_frame(self.config.max_frame);
        c.phase = Phase::LoggedIn(LoggedIn {
            user: user.clone(),
            id,
            online,
            cursor: 0,
            in_flight: InFlight::default(),
        });
        let queued = self
            .state
            .user(&user)
            .map_or(0, |r| r.mailbox.items.len() as u64);
        self.send(
            conn,
            &ServerPacket::LoggedIn {
                user: user.clone(),
                queued,
            },
        );
        self.event(ServerEvent::LoggedIn {
            conn,
            user: user.clone(),
        });
        if online {
            self.event(ServerEvent::PresenceChanged {
                user: user.clone(),
                online: true,
            });
        }
        self.pump(now, id);
    }

    pub(super) fn on_fetch_key(&mut self, now: Instant, conn: ConnId, user: UserName) {
        if let Some(shard) = self.foreign_shard(&user) {
            let call = RemoteCall::FetchKey { user: user.clone() };
            return self.forward_query(now, conn, shard, call, user);
        }
        match self.state.user(&user) {
            Some(record) => {
                let public_key = record.public_key.clone();
                self.send(conn, &ServerPacket::Key { user, public_key });
            }
            None => self.send_error(
                conn,
                ErrorCode::UnknownUser,
                None,
                Some(user),
                "no such user",
            ),
        }
    }
}
