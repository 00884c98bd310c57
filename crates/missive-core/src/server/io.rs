//! What goes into and comes out of the server state machine.

use super::state::PersistCmd;
use crate::cluster::{CallId, ForwardId, RemoteCall, RemoteReply, Shard};
use crate::types::{ConnId, Lsn, Seq, UserName};
use crate::wire::{EncodeError, ErrorCode, Link};

/// An input to [`super::Server::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// A transport connection was accepted. Its [`Link`] says how it frames
    /// packets and its channel binding as this server computed it
    /// (`TlsExporter` after a TLS handshake, `None` on a plaintext listener
    /// or a WebSocket). `ConnId`s are chosen by the driver and never reused
    /// while the server knows the connection.
    Connected(ConnId, Link),
    /// Bytes arrived on a connection: any chunking of the stream on a
    /// [`Framing::Stream`](crate::wire::Framing::Stream) connection, exactly
    /// one message (one packet) on a
    /// [`Framing::Messages`](crate::wire::Framing::Messages) one.
    Bytes(ConnId, &'a [u8]),
    /// The transport connection is gone (peer closed, I/O error, or the
    /// driver dropped a client that does not read).
    Disconnected(ConnId),
    /// Every persistence command up to and including this LSN is durable.
    Durable(Lsn),
    /// The time returned by `poll_timeout` has come (early calls are harmless).
    Timeout,
    /// An operator removes this user (`missive-server admin remove-user`):
    /// its sessions close, its mailbox is dropped and
    /// [`PersistCmd::RemoveUser`] is persisted. Answered by
    /// [`ServerEvent::UserRemoved`] once that is durable, or at once by
    /// [`ServerEvent::UserNotRemoved`].
    RemoveUser(&'a UserName),
    /// The store's health changed: `false` when it cannot make anything
    /// durable for now (a commit failed with an error that may pass, such
    /// as a full disk, and is being retried), `true` once a commit succeeds
    /// again. While it is `false` the server refuses `send` and `register`
    /// with `StorageUnavailable` and serves the rest (logins, deliveries of
    /// durable items, acks, key fetches, presence); the commands it emits
    /// meanwhile (acks, notices, expiries) must stay queued in order and
    /// become durable later.
    StorageAvailable(bool),
    /// Cluster node only: this node now owns `shard`. `state` rebuilds the
    /// shard as stored (its users' `RegisterUser`, `SetNextSeq` and
    /// `Enqueue` commands, as [`ServerState::snapshot`](super::ServerState::snapshot)
    /// gives them), read after the lease was taken.
    ShardAcquired {
        /// The shard.
        shard: Shard,
        /// Its stored content.
        state: &'a [PersistCmd],
    },
    /// Cluster node only: this node no longer owns `shard` (its lease was
    /// not renewed in time, was released, or a write was refused by the
    /// store's fence). Fed before any later `Durable`: nothing the shard's
    /// commands back is reported durable, its sessions close.
    ShardLost(Shard),
    /// Cluster node only: the node serving `shard` is now reachable at
    /// `address` (what clients are redirected to), or nobody owns it.
    OwnerChanged {
        /// The shard.
        shard: Shard,
        /// The owner's advertised address (`None`: no owner).
        address: Option<&'a str>,
    },
    /// Cluster node only: the answer to `Output::Forward { request, .. }`
    /// (or [`RemoteReply::Unreachable`] from the driver).
    Forwarded {
        /// Which forward.
        request: ForwardId,
        /// The owner's answer.
        reply: &'a RemoteReply,
    },
    /// Cluster node only: another node asks this one, as the owner of the
    /// call's shard. Answered by `Output::Reply { call, .. }` (once, maybe
    /// after durability).
    Remote {
        /// Names the call for the reply.
        call: CallId,
        /// What is asked.
        request: &'a RemoteCall,
    },
}

/// An output from [`super::Server::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the connection: one or more whole frames on a
    /// byte stream, exactly one packet (one message) on a message transport.
    Transmit {
        /// Where.
        conn: ConnId,
        /// What.
        bytes: Vec<u8>,
    },
    /// Close the connection after writing what was transmitted before.
    Close {
        /// Which.
        conn: ConnId,
    },
    /// Make this command durable, then report `Input::Durable(lsn)`.
    /// LSNs are strictly increasing; report the highest durable one.
    Persist {
        /// Sequence number of the command.
        lsn: Lsn,
        /// The change.
        cmd: PersistCmd,
    },
    /// Something worth logging or counting happened.
    Event(ServerEvent),
    /// Cluster node only: send `call` to the owner of `shard` and feed its
    /// answer back as `Input::Forwarded { request, .. }`
    /// ([`RemoteReply::Unreachable`] when nobody answers in time).
    Forward {
        /// Names the forward.
        request: ForwardId,
        /// The shard whose owner must answer.
        shard: Shard,
        /// What to ask.
        call: RemoteCall,
    },
    /// Cluster node only: the answer to `Input::Remote { call, .. }`.
    Reply {
        /// Which call.
        call: CallId,
        /// The answer.
        reply: RemoteReply,
    },
}

/// Observable happenings, for logs and metrics. Opaque to the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A user name was registered (durably).
    UserRegistered {
        /// The name.
        user: UserName,
    },
    /// A connection logged in.
    LoggedIn {
        /// The connection.
        conn: ConnId,
        /// As whom.
        user: UserName,
    },
    /// A user came online or went offline.
    PresenceChanged {
        /// Who.
        user: UserName,
        /// Now online?
        online: bool,
    },
    /// A connection ended.
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
        /// The user it was logged in as.
        user: Option<UserName>,
        /// Why.
        reason: CloseReason,
    },
    /// A queued item does not fit in a frame under the `max_frame` in force
    /// (it was stored under a larger one before a restart). It was expired
    /// instead of delivered; a message's sender gets `expired` (§4.5).
    Undeliverable {
        /// The mailbox owner.
        user: UserName,
        /// The item's place in the mailbox.
        seq: Seq,
        /// Why it could not be encoded.
        error: EncodeError,
    },
    /// Cluster: this node now serves `shard`.
    ShardAcquired {
        /// The shard.
        shard: Shard,
        /// Its registered users, loaded.
        users: usize,
        /// Items queued in their mailboxes, loaded.
        items: usize,
    },
    /// Cluster: this node no longer serves `shard`; its users were dropped
    /// and their connections closed with `moved`.
    ShardLost {
        /// The shard.
        shard: Shard,
        /// Its users dropped from this node.
        users: usize,
        /// Connections closed with `moved` (sessions, and clients waiting
        /// for an answer the shard's lost writes backed).
        sessions_closed: usize,
    },
    /// Cluster: a forward to the owner of `shard` found no owner (or the
    /// owner moved) and will be tried again after `forward_retry`.
    ForwardRetried {
        /// The shard called.
        shard: Shard,
    },
    /// An operator's [`Input::RemoveUser`] is done and durable.
    UserRemoved {
        /// The removed user.
        user: UserName,
        /// Items its mailbox held, dropped.
        items: usize,
        /// Its connections closed (after an `unknown_user` error).
        sessions_closed: usize,
    },
    /// An operator's [`Input::RemoveUser`] was refused; nothing changed.
    UserNotRemoved {
        /// The name asked for.
        user: UserName,
        /// Why.
        error: RemoveUserError,
    },
    /// The store's health changed (`Input::StorageAvailable`): while
    /// unavailable, sends and registrations are refused.
    StorageAvailability {
        /// Whether the store can make changes durable now.
        available: bool,
    },
    /// A login was refused: `UnknownUser` at `login`, `NoChallenge` or
    /// `AuthFailed` at `prove` (fatal: the connection closes too).
    LoginFailed {
        /// The connection.
        conn: ConnId,
        /// The error it was answered.
        code: ErrorCode,
    },
    /// A message was queued for its recipient (its `accepted` answer
    /// follows once it is durable; a retried send is not counted again).
    MessageAccepted {
        /// Its envelope's size.
        bytes: usize,
    },
    /// A `send` was refused with `code` (any error answer naming a message
    /// id: nothing was queued).
    MessageRefused {
        /// The sender's connection.
        conn: ConnId,
        /// The error it was answered.
        code: ErrorCode,
    },
    /// Queued items were written to a connection (now in flight).
    Delivered {
        /// The recipient's connection.
        conn: ConnId,
        /// Messages among them.
        messages: u32,
        /// Notices among them.
        notices: u32,
    },
    /// A delivery was acknowledged: the item left its mailbox.
    Acknowledged {
        /// The recipient's connection.
        conn: ConnId,
        /// A message (else a notice).
        message: bool,
    },
    /// A queued item reached its deadline (or could not be delivered) and
    /// left its mailbox without being delivered.
    Expired {
        /// A message (else a notice).
        message: bool,
    },
    /// A reply could not be encoded within `max_frame` and was not sent
    /// (a server bug: every reply the server builds is far smaller).
    ReplyNotSent {
        /// The connection it was for.
        conn: ConnId,
        /// Why it could not be encoded.
        error: EncodeError,
    },
}

/// Why [`Input::RemoveUser`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoveUserError {
    /// No user of that name is registered.
    #[error("no such user")]
    NoSuchUser,
    /// A cluster node serves only some shards and the other nodes would
    /// not hear of the removal: not supported yet.
    #[error("removing a user is not supported on a cluster node yet")]
    ClusterNode,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The transport went away (`Input::Disconnected`).
    TransportClosed,
    /// The server closed it after sending this fatal error code (protocol
    /// violation, timeout, replaced session, shutdown).
    Error(ErrorCode),
    /// Cluster: the server redirected the client to the node serving its
    /// user.
    Redirected,
}
