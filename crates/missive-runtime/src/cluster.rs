//! The engine's side of a cluster node (docs/CLUSTER.md): the channel
//! between the [`ServerEngine`](crate::ServerEngine) and the coordinator
//! that holds the node's shard leases and carries calls between nodes
//! (`missive-cluster`, on its own thread and runtime).
//!
//! The channel is `futures-channel`, so any serve loop polls it:
//! [`cluster_link`] gives the engine's end, a [`ClusterLink`] (attach it
//! with [`BoundServer::with_cluster`](crate::driver::BoundServer::with_cluster)),
//! and the coordinator's end, a [`ClusterPort`]. What the coordinator
//! reports ([`ClusterEvent`]) becomes the core's cluster inputs; what the
//! core asks of other nodes ([`ClusterCommand::Forward`]), its answers to
//! their calls ([`ClusterCommand::Reply`]) and the shards the store fenced
//! ([`ClusterCommand::Fenced`]) go the other way.

use futures_channel::mpsc;
use futures_util::Stream;
use missive_core::cluster::{CallId, ForwardId, RemoteCall, RemoteReply, Shard};
use missive_core::server::PersistCmd;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What the coordinator reports to the engine; each becomes the core input
/// of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// The node now owns `shard`, whose stored content is `state`
    /// (`Input::ShardAcquired`).
    Acquired {
        /// The shard.
        shard: Shard,
        /// The epoch of the lease taken (the store writes the commands the
        /// core issues for the shard under it).
        epoch: u64,
        /// Its users' stored commands, read after the lease was taken.
        state: Vec<PersistCmd>,
    },
    /// The node no longer owns `shard` (`Input::ShardLost`).
    Lost(Shard),
    /// The owner of `shard` is reachable at `address`, or there is none
    /// (`Input::OwnerChanged`).
    Owner {
        /// The shard.
        shard: Shard,
        /// The owner's advertised address.
        address: Option<String>,
    },
    /// The answer to a forward (`Input::Forwarded`).
    Forwarded {
        /// Which forward.
        request: ForwardId,
        /// The owner's answer, or [`RemoteReply::Unreachable`].
        reply: RemoteReply,
    },
    /// Another node's call to this one (`Input::Remote`).
    Remote {
        /// Names the call for [`ClusterCommand::Reply`].
        call: CallId,
        /// What is asked.
        request: RemoteCall,
    },
}

/// What the engine asks of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterCommand {
    /// Ask the owner of `shard` and report [`ClusterEvent::Forwarded`].
    Forward {
        /// Names the forward.
        request: ForwardId,
        /// The shard whose owner must answer.
        shard: Shard,
        /// What to ask.
        call: RemoteCall,
    },
    /// Answer the call reported as [`ClusterEvent::Remote`].
    Reply {
        /// Which call.
        call: CallId,
        /// The answer.
        reply: RemoteReply,
    },
    /// The store refused writes of these shards (their leases moved on):
    /// the core has been told they are lost; stop serving them.
    Fenced(Vec<Shard>),
    /// The server stopped and everything it accepted is durable: release
    /// the leases and stop.
    Shutdown,
}

/// The engine's end of the cluster channel.
#[derive(Debug)]
pub struct ClusterLink {
    pub(crate) events: ClusterEvents,
    pub(crate) commands: ClusterCommands,
}

/// The coordinator's end of the cluster channel.
#[derive(Debug)]
pub struct ClusterPort {
    /// Where the coordinator reports.
    pub events: mpsc::UnboundedSender<ClusterEvent>,
    /// What the engine asks, in order; ends when the engine is gone.
    pub commands: mpsc::UnboundedReceiver<ClusterCommand>,
}

/// A cluster channel: the engine's end and the coordinator's.
pub fn cluster_link() -> (ClusterLink, ClusterPort) {
    let (events_tx, events_rx) = mpsc::unbounded();
    let (commands_tx, commands_rx) = mpsc::unbounded();
    (
        ClusterLink {
            events: ClusterEvents { rx: events_rx },
            commands: ClusterCommands { tx: commands_tx },
        },
        ClusterPort {
            events: events_tx,
            commands: commands_rx,
        },
    )
}

impl ClusterLink {
    /// Splits into the stream of the coordinator's reports (for the serve
    /// loop) and the sender of the engine's commands.
    pub fn split(self) -> (ClusterEvents, ClusterCommands) {
        (self.events, self.commands)
    }
}

/// The coordinator's reports, in order: a `Stream` that ends when the
/// coordinator is gone.
#[derive(Debug)]
pub struct ClusterEvents {
    rx: mpsc::UnboundedReceiver<ClusterEvent>,
}

impl Stream for ClusterEvents {
    type Item = ClusterEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClusterEvent>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

/// The engine's sender of [`ClusterCommand`]s.
#[derive(Debug, Clone)]
pub struct ClusterCommands {
    tx: mpsc::UnboundedSender<ClusterCommand>,
}

impl ClusterCommands {
    /// Sends `command`; `false` if the coordinator is gone.
    pub fn send(&self, command: ClusterCommand) -> bool {
        self.tx.unbounded_send(command).is_ok()
    }
}
