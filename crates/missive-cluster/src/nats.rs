//! NATS for a node: the connection, forwards as requests to a shard's
//! subject, and the subscription of a shard held.

use crate::{CoordinatorOptions, shard_subject};
use futures_util::StreamExt;
use missive_core::cluster::{RemoteCall, RemoteReply, Shard};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A request from another node, received on a shard's subject.
pub(crate) struct Incoming {
    pub shard: Shard,
    pub message: async_nats::Message,
}

/// Connects in the background: the client works at once, its requests
/// fail until the server is reached, and it reconnects (re-subscribing)
/// for as long as it lives. Only a malformed URL or unusable TLS settings
/// fail here. A `tls://` server's certificate is verified against
/// `options.nats_ca`, or the system's roots.
pub(crate) async fn connect(
    options: &CoordinatorOptions,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let mut connect = async_nats::ConnectOptions::new();
    if let Some(ca) = &options.nats_ca {
        connect = connect.add_root_certificates(ca.clone());
    }
    connect
        .name(format!("missive node {}", options.node_id))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .request_timeout(Some(options.forward_timeout))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                other => tracing::debug!(%other, "NATS event"),
            }
        })
        .connect(options.nats.as_str())
        .await
}

/// Asks the owner of `shard`; whatever goes wrong (no responders, no
/// answer in time, NATS down, an answer that does not decode) is
/// [`RemoteReply::Unreachable`], which the core retries.
pub(crate) async fn forward(
    client: &async_nats::Client,
    shard: Shard,
    call: &RemoteCall,
    limit: std::time::Duration,
) -> RemoteReply {
    let request = client.request(shard_subject(shard), call.encode().into());
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(answer)) => RemoteReply::decode(&answer.payload).unwrap_or_else(|e| {
            tracing::warn!(%shard, "owner's answer not understood: {e}");
            RemoteReply::Unreachable
        }),
        Ok(Err(e)) => {
            tracing::debug!(%shard, "forward failed: {e}");
            RemoteReply::Unreachable
        }
        Err(_) => {
            tracing::debug!(%shard, "forward timed out");
            RemoteReply::Unreachable
        }
    }
}

/// Subscribes `shard`'s subject and passes its requests to `incoming`
/// until aborted (dropping the subscription unsubscribes).
pub(crate) fn subscribe(
    client: async_nats::Client,
    shard: Shard,
    incoming: mpsc::UnboundedSender<Incoming>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut subscriber = match client.subscribe(shard_subject(shard)).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                // Only when the client is closed: the node is stopping.
                tracing::error!(%shard, "cannot subscribe: {e}");
                return;
            }
        };
        while let Some(message) = subscriber.next().await {
            if incoming.send(Incoming { shard, message }).is_err() {
                return;
            }
        }
    })
}
