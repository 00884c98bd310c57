//! Public keys of other users: pinning on first use, key changes, and
//! opening received envelopes.

use super::Client;
use super::events::{ClientEvent, SendFailure};
use super::session::Request;
use crate::crypto::{self, Fingerprint, OpenError, PublicKey};
use crate::types::{MessageId, UserName};
use serde_bytes::ByteBuf;
use std::collections::BTreeSet;

impl Client {
    /// A `Key` answer. Pins it if nothing is pinned (and it was asked for);
    /// reports a change if another key is pinned.
    pub(super) fn on_key(&mut self, user: UserName, der: Vec<u8>) {
        let requested = match self.conn.as_mut() {
            Some(conn) => {
                conn.fetch_retry.remove(&user);
                conn.take_exact(&Request::FetchKey(user.clone()));
                conn.fetching.remove(&user)
            }
            None => false,
        };
        match self.state.pinned.get(&user) {
            Some(pinned) if pinned.as_slice() == der.as_slice() => {
                self.confirm_key(&user);
                self.open_parked_from(&user);
            }
            Some(pinned) => {
                let pinned = Fingerprint::of_spki_der(pinned);
                self.out.event(ClientEvent::KeyChanged {
                    user: user.clone(),
                    pinned,
                    offered: Fingerprint::of_spki_der(&der),
                });
                self.fail_entries_for(&user, SendFailure::KeyChanged);
                // Parked envelopes are opened with the key we trust.
                self.open_parked_from(&user);
            }
            None if !requested => {} // unsolicited: pin nothing
            None => match PublicKey::from_spki_der(&der) {
                Ok(key) => {
                    self.state
                        .pinned
                        .insert(user.clone(), ByteBuf::from(key.to_spki_der().to_vec()));
                    self.out.changed();
                    self.confirm_key(&user);
                    self.open_parked_from(&user);
                }
                Err(e) => {
                    self.fail_entries_for(&user, SendFailure::BadKey);
                    self.drop_parked_from(&user, &format!("the sender's key is unusable: {e}"));
                }
            },
        }
        self.pump();
    }

    /// Opens every parked envelope whose sender's key is pinned.
    /// The server answered this connection's fetch with the pinned key.
    fn confirm_key(&mut self, user: &UserName) {
        if let Some(conn) = self.conn.as_mut() {
            conn.confirmed_keys.insert(user.clone());
        }
    }

    pub(super) fn open_parked_with_pinned_keys(&mut self) {
        let senders: BTreeSet<UserName> = self
            .state
            .parked
            .iter()
            .filter(|p| self.state.pinned.contains_key(&p.from))
            .map(|p| p.from.clone())
            .collect();
        for sender in senders {
            self.open_parked_from(&sender);
        }
    }

    /// Opens the envelopes parked for `sender`, if its key is pinned.
    fn open_parked_from(&mut self, sender: &UserName) {
        let Some(key) = self.state.pinned.get(sender).map(|k| k.to_vec()) else {
            return;
        };
        if !self.state.parked.iter().any(|p| p.from == *sender) {
            return;
        }
        let (mine, rest) = std::mem::take(&mut self.state.parked)
            .into_iter()
            .partition(|p| p.from == *sender);
        self.state.parked = rest;
        self.out.changed();
        for parked in mine {
            self.open_and_report(sender, parked.id, &parked.envelope, &key);
        }
    }

    /// Gives up on the envelopes parked for `sender`.
    pub(super) fn drop_parked_from(&mut self, sender: &UserName, why: &str) {
        if !self.state.parked.iter().any(|p| p.from == *sender) {
            return;
        }
        let (mine, rest) = std::mem::take(&mut self.state.parked)
            .into_iter()
            .partition(|p| p.from == *sender);
        self.state.parked = rest;
        self.out.changed();
        for parked in mine {
            self.out.event(ClientEvent::UndecryptableMessage {
                from: parked.from,
                id: parked.id,
                error: OpenError::Malformed(why.to_string()),
            });
        }
    }

    /// Opens one envelope from `from` with its pinned key and reports the
    /// result locally.
    pub(super) fn open_and_report(
        &mut self,
        from: &UserName,
        id: MessageId,
        envelope: &[u8],
        key_der: &[u8],
    ) {
        let max_len = self
            .conn
            .as_ref()
            .map_or(self.config.max_frame, |c| c.max_frame) as usize;
        let opened = PublicKey::from_spki_der(key_der)
            .map_err(|e| OpenError::Malformed(format!("the pinned key is unusable: {e}")))
            .and_then(|key| {
                crypto::open(
                    &self.identity,
                    &self.config.user,
                    from,
                    &key,
                    envelope,
                    max_len,
                )
            });
        let event = match opened {
            Ok(opened) if opened.header.id == id => ClientEvent::MessageReceived {
                from: from.clone(),
                id,
                sent_at: opened.header.sent_at,
                body: opened.body,
            },
            Ok(_) => ClientEvent::UndecryptableMessage {
                from: from.clone(),
                id,
                error: OpenError::Malformed(
                    "the envelope's id differs from the delivered id".into(),
                ),
            },
            Err(error) => ClientEvent::UndecryptableMessage {
                from: from.clone(),
                id,
                error,
            },
        };
        self.out.event(event);
    }
}
