//! A server as one node of a cluster: shards acquired and lost, redirects,
//! forwards to other shards' owners and calls from other nodes
//! (docs/CLUSTER.md).
//!
//! SKELETON: the cluster inputs are accepted and not acted on yet.

use super::{Input, Server};
use std::time::Instant;

impl Server {
    pub(super) fn on_cluster_input(&mut self, _now: Instant, _input: Input<'_>) {}
}
