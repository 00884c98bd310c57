//! Transport events and packets from the server: handshake, deliveries,
//! errors, timers.

use super::events::{ClientEvent, ConnectionError, LoginError};
use super::session::{MIN_PING_INTERVAL, Phase, Request, ServerInfo, Session};
use super::state::{NoticeKind, ParkedEnvelope};
use super::{Client, Registration};
use crate::crypto::{AuthContext, AuthTranscript, ChannelBinding, OpenError, TranscriptVersion};
use crate::rng;
use crate::time::Instant;
use crate::types::{MessageId, Seq, UnixMillis, UserName};
use crate::wire::{
    ClientPacket, ErrorCode, Framing, Link, Nonce, Notice, PROTOCOL_VERSION, PROTOCOL_VERSION_V1,
    ServerPacket, WireLimits,
};
use std::time::Duration;

impl Client {
    /// Offers version 2 and, on a plaintext connection only, version 1 (for
    /// servers that predate channel binding; on TLS a v1 login could be
    /// relayed, §2.3).
    pub(super) fn on_connected(&mut self, _now: Instant, link: Link) {
        self.out.drop_connection_outputs();
        self.conn = Some(Session::new(self.config.max_frame, link, &self.hasher));
        let versions = match link.binding {
            ChannelBinding::None => vec![PROTOCOL_VERSION, PROTOCOL_VERSION_V1],
            ChannelBinding::TlsExporter(_) => vec![PROTOCOL_VERSION],
        };
        self.transmit(&ClientPacket::Hello { versions });
    }

    pub(super) fn on_disconnected(&mut self) {
        if self.conn.take().is_some() {
            self.out.drop_connection_outputs();
            self.out.event(ClientEvent::Disconnected);
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.phase == Phase::Closed {
            return;
        }
        let mut ping = false;
        if conn.next_ping.is_some_and(|t| t <= now) {
            conn.next_ping = now.checked_add(conn.ping_interval);
            ping = true;
        }
        let before = conn.retry_at.len() + conn.fetch_retry.len();
        conn.retry_at.retain(|_, t| *t > now);
        conn.fetch_retry.retain(|_, t| *t > now);
        let retries_due = conn.retry_at.len() + conn.fetch_retry.len() != before;
        if ping {
            self.transmit(&ClientPacket::Ping);
        }
        if retries_due {
            self.pump();
        }
    }

    pub(super) fn on_bytes(&mut self, now: Instant, bytes: &[u8]) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.phase == Phase::Closed {
            return;
        }
        conn.maybe_switch_decoder();
        if conn.framing == Framing::Messages {
            match conn.decoder.decode_message::<ServerPacket>(bytes) {
                Ok(packet) => self.on_packet(now, packet),
                Err(e) => self.close_on_violation(format!("undecodable data from the server: {e}")),
            }
            return;
        }
        conn.decoder.push(bytes);
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            if conn.phase == Phase::Closed {
                return;
            }
            let next = conn.decoder.next_packet::<ServerPacket>();
            if next.is_ok() {
                conn.maybe_switch_decoder();
            }
            match next {
                Ok(Some(packet)) => self.on_packet(now, packet),
                Ok(None) => return,
                Err(e) => {
                    self.close_on_violation(format!("undecodable data from the server: {e}"));
                    return;
                }
            }
        }
    }

    fn phase(&self) -> Option<Phase> {
        self.conn.as_ref().map(|c| c.phase)
    }

    fn on_packet(&mut self, now: Instant, packet: ServerPacket) {
        let Some(phase) = self.phase() else { return };
        match (phase, packet) {
            (
                Phase::AwaitWelcome,
                ServerPacket::Welcome {
                    version,
                    server_id,
                    session_id,
                    ping_interval_ms,
                    limits,
                },
            ) => self.on_welcome(
                now,
                version,
                server_id,
                session_id,
                ping_interval_ms,
                limits,
            ),
            (Phase::AwaitChallenge(context), ServerPacket::Challenge { nonce, .. }) => {
                self.on_challenge(context, nonce)
            }
            (Phase::AwaitRegistered, ServerPacket::Registered { user }) => self.on_registered(user),
            (Phase::AwaitLoggedIn, ServerPacket::LoggedIn { user, queued }) => {
                self.on_logged_in(user, queued)
            }
            (
                Phase::AwaitChallenge(_) | Phase::AwaitLoggedIn | Phase::AwaitRegistered,
                ServerPacket::Redirect { address },
            ) => self.close_with(ClientEvent::Redirected { address }),
            (
                _,
                ServerPacket::Error {
                    code,
                    id,
                    user,
                    detail,
                },
            ) => self.on_error(now, phase, code, id, user, detail),
            (p, ServerPacket::Pong) if p != Phase::AwaitWelcome => {}
            (Phase::LoggedIn, ServerPacket::Key { user, public_key }) => {
                self.on_key(user, public_key)
            }
            (Phase::LoggedIn, ServerPacket::Accepted { id }) => self.on_accepted(id),
            (
                Phase::LoggedIn,
                ServerPacket::Message {
                    seq,
                    from,
                    id,
                    envelope,
                },
            ) => self.on_message(seq, from, id, envelope),
            (Phase::LoggedIn, ServerPacket::Notice { seq, notice }) => self.on_notice(seq, notice),
            (
                Phase::LoggedIn,
                ServerPacket::Presence {
                    user,
                    online,
                    last_seen_ms,
                },
            ) => self.on_presence(user, online, last_seen_ms),
            (phase, packet) => self.close_on_violation(format!(
                "unexpected packet from the server in state {phase:?}: {}",
                packet_name(&packet)
            )),
        }
    }

    fn on_welcome(
        &mut self,
        now: Instant,
        version: u16,
        server_id: [u8; 16],
        session_id: [u8; 16],
        ping_interval_ms: u64,
        limits: WireLimits,
    ) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let transcript = match (version, conn.binding) {
            (PROTOCOL_VERSION, binding) => TranscriptVersion::V2(binding),
            (PROTOCOL_VERSION_V1, ChannelBinding::None) => TranscriptVersion::V1,
            _ => {
                // The server chose a version this client never offered.
                self.close_with(ClientEvent::ConnectionLost {
                    reason: ConnectionError::UnsupportedVersion,
                });
                return;
            }
        };
        conn.server = Some(ServerInfo {
            server_id,
            session_id,
            limits,
            transcript,
        });
        conn.max_frame = limits.max_frame;
        conn.next_decoder_limit = Some(limits.max_frame);
        conn.maybe_switch_decoder();
        conn.ping_interval = Duration::from_millis(ping_interval_ms).max(MIN_PING_INTERVAL);
        conn.next_ping = now.checked_add(conn.ping_interval);
        self.max_envelope = Some(limits.max_envelope);
        if self.config.registration == Registration::Always {
            self.send_register();
        } else {
            conn.phase = Phase::AwaitChallenge(AuthContext::Login);
            self.send_login();
        }
    }

    /// Sends Register (once per connection).
    fn send_register(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.tried_register = true;
        conn.phase = Phase::AwaitChallenge(AuthContext::Register);
        let public_key = self.identity.public_key().to_spki_der().to_vec();
        self.transmit(&ClientPacket::Register {
            user: self.config.user.clone(),
            public_key,
        });
    }

    /// Sends Login, preceded by the wanted presence when it is offline, so
    /// the new session starts offline and nothing is delivered before the
    /// client says it listens.
    fn send_login(&mut self) {
        if !self.online {
            self.transmit(&ClientPacket::SetPresence { online: false });
        }
        self.transmit(&ClientPacket::Login {
            user: self.config.user.clone(),
        });
    }

    fn on_challenge(&mut self, context: AuthContext, nonce: Nonce) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(server) = conn.server else { return };
        conn.phase = match context {
            AuthContext::Login => Phase::AwaitLoggedIn,
            AuthContext::Register => Phase::AwaitRegistered,
        };
        let client_nonce: Nonce = rng::bytes(&mut self.rng);
        let transcript = AuthTranscript {
            version: server.transcript,
            context,
            server_id: server.server_id,
            session_id: server.session_id,
            user: &self.config.user,
            server_nonce: nonce,
            client_nonce,
        };
        let signature = transcript.sign(&self.identity, &mut self.rng);
        self.transmit(&ClientPacket::Prove {
            client_nonce,
            signature,
        });
    }

    fn on_registered(&mut self, user: UserName) {
        if user != self.config.user {
            self.close_on_violation(format!(
                "server registered {user}, not {}",
                self.config.user
            ));
            return;
        }
        self.out.event(ClientEvent::Registered);
        if let Some(conn) = self.conn.as_mut() {
            conn.phase = Phase::AwaitChallenge(AuthContext::Login);
        }
        self.send_login();
    }

    fn on_logged_in(&mut self, user: UserName, queued: u64) {
        if user != self.config.user {
            self.close_on_violation(format!("server logged in {user}, not {}", self.config.user));
            return;
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.phase = Phase::LoggedIn;
        }
        self.out.event(ClientEvent::LoggedIn { queued });
        for user in std::mem::take(&mut self.queued_queries) {
            self.send_presence_query(user);
        }
        self.open_parked_with_pinned_keys();
        self.pump();
    }

    fn on_error(
        &mut self,
        now: Instant,
        phase: Phase,
        code: ErrorCode,
        id: Option<MessageId>,
        user: Option<UserName>,
        detail: String,
    ) {
        let me = self.config.user.clone();
        let event = match (phase, code) {
            (Phase::LoggedIn, code) if !code.is_fatal() => {
                self.on_request_error(now, code, id, user, detail);
                return;
            }
            (Phase::AwaitLoggedIn | Phase::AwaitRegistered, ErrorCode::AuthFailed) => {
                ClientEvent::LoginFailed(LoginError::SignatureRejected { user: me })
            }
            // The server closes the connection after a fatal error, and
            // after `unavailable` (cluster, §2.7) or `storage_unavailable`
            // during the handshake.
            (_, code)
                if code.is_fatal()
                    || matches!(code, ErrorCode::Unavailable | ErrorCode::StorageUnavailable) =>
            {
                ClientEvent::ConnectionLost {
                    reason: ConnectionError::from_server(code, detail),
                }
            }
            (Phase::AwaitChallenge(AuthContext::Login), ErrorCode::UnknownUser)
                if user.as_ref().is_none_or(|u| *u == me) =>
            {
                let register = self.config.registration != Registration::Never
                    && self.conn.as_ref().is_some_and(|c| !c.tried_register);
                if register {
                    self.send_register();
                    return;
                }
                ClientEvent::LoginFailed(LoginError::NotRegistered { user: me })
            }
            // Before the challenge, or after the proof when another
            // registration of the name won meanwhile (§4.2).
            (
                Phase::AwaitChallenge(AuthContext::Register) | Phase::AwaitRegistered,
                ErrorCode::NameTaken,
            ) => ClientEvent::LoginFailed(LoginError::NameTaken { user: me }),
            (Phase::AwaitChallenge(AuthContext::Register), ErrorCode::BadKey) => {
                ClientEvent::LoginFailed(LoginError::KeyRejected { detail })
            }
            // Any other refusal during the handshake (Busy, ...) leaves
            // nothing to do on this connection.
            (_, code) => ClientEvent::LoginFailed(LoginError::Refused { code, detail }),
        };
        self.close_with(event);
    }

    fn on_message(&mut self, seq: Seq, from: UserName, id: MessageId, envelope: Vec<u8>) {
        // Acknowledge first: the server may forget the item once it is acked,
        // and whatever happens next is local.
        self.transmit(&ClientPacket::Ack { seq });
        if !self
            .state
            .seen
            .insert((from.clone(), id), self.config.seen_capacity)
        {
            return; // a redelivery
        }
        self.out.changed();
        if let Some(key) = self.state.pinned.get(&from) {
            let key = key.to_vec();
            self.open_and_report(&from, id, &envelope, &key);
            return;
        }
        self.state
            .parked
            .push_back(ParkedEnvelope { from, id, envelope });
        while self.state.parked.len() > self.config.max_parked.max(1) {
            if let Some(dropped) = self.state.parked.pop_front() {
                self.out.event(ClientEvent::UndecryptableMessage {
                    from: dropped.from,
                    id: dropped.id,
                    error: OpenError::Malformed(
                        "dropped: too many envelopes waiting for their sender's key".into(),
                    ),
                });
            }
        }
        self.pump();
    }

    fn on_notice(&mut self, seq: Seq, notice: Notice) {
        self.transmit(&ClientPacket::Ack { seq });
        let (kind, to, id) = match notice {
            Notice::Delivered { to, id } => (NoticeKind::Delivered, to, id),
            Notice::Expired { to, id } => (NoticeKind::Expired, to, id),
        };
        if !self
            .state
            .seen_notices
            .insert((kind, to.clone(), id), self.config.seen_capacity)
        {
            return; // a redelivery
        }
        self.out.changed();
        self.out.event(match kind {
            NoticeKind::Delivered => ClientEvent::Delivered { to, id },
            NoticeKind::Expired => ClientEvent::Expired { to, id },
        });
    }

    fn on_presence(&mut self, user: UserName, online: bool, last_seen_ms: Option<UnixMillis>) {
        if let Some(conn) = self.conn.as_mut() {
            conn.take_exact(&Request::QueryPresence(user.clone()));
        }
        self.out.event(ClientEvent::PresenceChanged {
            user,
            online,
            last_seen_ms,
        });
    }
}

/// The packet's name, for diagnostics (never its contents).
fn packet_name(packet: &ServerPacket) -> &'static str {
    match packet {
        ServerPacket::Welcome { .. } => "welcome",
        ServerPacket::Challenge { .. } => "challenge",
        ServerPacket::Registered { .. } => "registered",
        ServerPacket::LoggedIn { .. } => "logged_in",
        ServerPacket::Key { .. } => "key",
        ServerPacket::Accepted { .. } => "accepted",
        ServerPacket::Message { .. } => "message",
        ServerPacket::Notice { .. } => "notice",
        ServerPacket::Pong => "pong",
        ServerPacket::Presence { .. } => "presence",
        ServerPacket::Redirect { .. } => "redirect",
        ServerPacket::Error { .. } => "error",
    }
}
