//! Row codecs shared by the database stores ([`crate::RedbStore`],
//! [`crate::PostgresStore`]): user names, CBOR mail items, and the rebuild
//! of a mailbox's `next_seq`.

use crate::StoreError;
use missive_core::server::{MailItem, PersistCmd, ServerState};
use missive_core::{Seq, UserName};

/// A stored user name, checked.
pub(crate) fn user_name(name: &str) -> Result<UserName, StoreError> {
    UserName::new(name).map_err(|e| StoreError::Corrupt(format!("bad user name {name:?}: {e}")))
}

/// Appends the CBOR encoding of `item` to `buf`.
pub(crate) fn encode_item(item: &MailItem, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    ciborium::into_writer(item, buf).map_err(|e| StoreError::Encode {
        what: "mail item",
        detail: e.to_string(),
    })
}

/// Decodes `user`'s item at `seq`.
pub(crate) fn decode_item(bytes: &[u8], user: &UserName, seq: Seq) -> Result<MailItem, StoreError> {
    ciborium::from_reader(bytes)
        .map_err(|e| StoreError::Corrupt(format!("item {seq} of {user} does not decode: {e}")))
}

/// Applies a stored item of `user` to `state`, which must know `user`.
pub(crate) fn restore_item(
    state: &mut ServerState,
    user: UserName,
    seq: Seq,
    bytes: &[u8],
) -> Result<(), StoreError> {
    if state.user(&user).is_none() {
        return Err(StoreError::Corrupt(format!(
            "item {seq} queued for unregistered user {user}"
        )));
    }
    let item = decode_item(bytes, &user, seq)?;
    state.apply(&PersistCmd::Enqueue { user, seq, item });
    Ok(())
}

/// Raises `user`'s mailbox `next_seq` to the stored value `next`, so
/// sequence numbers never go back after a mailbox was emptied.
pub(crate) fn restore_next_seq(
    state: &mut ServerState,
    user: UserName,
    next: Seq,
) -> Result<(), StoreError> {
    let Some(record) = state.user(&user) else {
        return Err(StoreError::Corrupt(format!(
            "next sequence number stored for unregistered user {user}"
        )));
    };
    let current = record.mailbox.next_seq;
    if next < current {
        return Err(StoreError::Corrupt(format!(
            "next sequence number {next} of {user} is below a queued item's ({current})"
        )));
    }
    state.apply(&PersistCmd::SetNextSeq {
        user,
        next_seq: next,
    });
    Ok(())
}
