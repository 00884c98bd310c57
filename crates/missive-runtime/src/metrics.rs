//! The server's metrics (Prometheus, through `prometheus-client`): one
//! [`Metrics`] per server, cheap to clone (an `Arc`), updated by the
//! drivers from the core's events and outputs and the store thread's commit
//! reports — never by the core — and read by the admin listener
//! ([`crate::driver::AdminListener`]) as the text exposition format.
//!
//! Every name starts with `missive_`; counters end in `_total`, units are
//! in the names (`_seconds`, `_bytes`). The readiness the admin listener
//! reports (`/readyz`) is read here too: the server serves and its store is
//! available ([`Metrics::set_store_available`]).

use missive_core::crypto::ChannelBinding;
use missive_core::server::ServerEvent;
use missive_core::wire::{ErrorCode, Framing, Link};
use missive_store::CommitReport;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::fmt::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The content type of [`Metrics::encode`]'s text (OpenMetrics 1.0, which
/// Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a connection runs over: a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// The protocol right on TCP (`--plaintext`).
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket without TLS.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl TransportKind {
    /// Every kind, in label order.
    pub const ALL: [TransportKind; 4] = [Self::Tcp, Self::Tls, Self::Ws, Self::Wss];

    /// The label value: `tcp`, `tls`, `ws`, `wss`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    /// What `link` tells: a byte stream is TCP or TLS by its channel
    /// binding; a message transport is WebSocket (a wss connection carries
    /// no binding, so its transport says [`TransportKind::Wss`] itself).
    pub fn of(link: &Link) -> Self {
        let tls = matches!(link.binding, ChannelBinding::TlsExporter(_));
        match (link.framing == Framing::Messages, tls) {
            (false, false) => Self::Tcp,
            (false, true) => Self::Tls,
            (true, false) => Self::Ws,
            (true, true) => Self::Wss,
        }
    }
}

impl EncodeLabelValue for TransportKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// A connection's state, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ConnState {
    Open,
    LoggedIn,
}

impl EncodeLabelValue for ConnState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        encoder.write_str(match self {
            Self::Open => "open",
            Self::LoggedIn => "logged_in",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConnLabels {
    transport: TransportKind,
    state: ConnState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabel {
    transport: TransportKind,
}

/// An error code's name (docs/PROTOCOL.md §2.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl ReasonLabel {
    fn of(code: ErrorCode) -> Self {
        Self {
            reason: code.name(),
        }
    }
}

/// The metrics of one server. Clones share them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    connections: Family<ConnLabels, Gauge>,
    connections_accepted: Family<TransportLabel, Counter>,
    logins: Counter,
    login_failures: Family<ReasonLabel, Counter>,
    registrations: Counter,
    messages_accepted: Counter,
    message_bytes_accepted: Counter,
    messages_refused: Family<ReasonLabel, Counter>,
    messages_delivered: Counter,
    notices_delivered: Counter,
    messages_acknowledged: Counter,
    messages_expired: Counter,
    queue_items: Gauge,
    queue_bytes: Gauge,
    commits: Counter,
    commit_seconds: Histogram,
    commit_batch: Histogram,
    tls_handshake_failures: Counter,
    slow_consumers: Counter,
    store_available: Gauge,
    /// The serve loop runs (accepts connections).
    serving: AtomicBool,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, the store not available, not serving.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("missive");
        let connections = Family::<ConnLabels, Gauge>::default();
        registry.register(
            "connections",
            "Open connections by transport, and those logged in",
            connections.clone(),
        );
        let connections_accepted = Family::<TransportLabel, Counter>::default();
        registry.register(
            "connections_accepted",
            "Connections accepted, by transport",
            connections_accepted.clone(),
        );
        let logins = Counter::default();
        registry.register("logins", "Successful logins", logins.clone());
        let login_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "login_failures",
            "Logins refused, by error code",
            login_failures.clone(),
        );
        let registrations = Counter::default();
        registry.register(
            "registrations",
            "User names registered (durably)",
            registrations.clone(),
        );
        let messages_accepted = Counter::default();
        registry.register(
            "messages_accepted",
            "Messages queued for their recipient",
            messages_accepted.clone(),
        );
        let message_bytes_accepted = Counter::default();
        registry.register_with_unit(
            "messages_accepted",
            "Envelope bytes of the messages queued",
            Unit::Bytes,
            message_bytes_accepted.clone(),
        );
        let messages_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "messages_refused",
            "Sends refused, by error code",
            messages_refused.clone(),
        );
        let messages_delivered = Counter::default();
        registry.register(
            "messages_delivered",
            "Messages written to their recipient's connection (redeliveries included)",
            messages_delivered.clone(),
        );
        let notices_delivered = Counter::default();
        registry.register(
            "notices_delivered",
            "Notices (delivered, expired) written to their owner's connection",
            notices_delivered.clone(),
        );
        let messages_acknowledged = Counter::default();
        registry.register(
            "messages_acknowledged",
            "Messages acknowledged by their recipient (removed from the queue)",
            messages_acknowledged.clone(),
        );
        let messages_expired = Counter::default();
        registry.register(
            "messages_expired",
            "Messages removed undelivered at their deadline",
            messages_expired.clone(),
        );
        let queue_items = Gauge::default();
        registry.register(
            "queue_items",
            "Items (messages and notices) queued in all mailboxes",
            queue_items.clone(),
        );
        let queue_bytes = Gauge::default();
        registry.register_with_unit(
            "queue",
            "Envelope bytes of the messages queued in all mailboxes",
            Unit::Bytes,
            queue_bytes.clone(),
        );
        let commits = Counter::default();
        registry.register(
            "store_commits",
            "Store commits (transactions; an fsync each for a durable store)",
            commits.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "store_commit_duration",
            "Time a store commit took",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "store_commit_batch_commands",
            "Commands in one store commit",
            commit_batch.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or did not end in time",
            tls_handshake_failures.clone(),
        );
        let slow_consumers = Counter::default();
        registry.register(
            "slow_consumer_drops",
            "Connections dropped because their outbound queue was full",
            slow_consumers.clone(),
        );
        let store_available = Gauge::default();
        registry.register(
            "store_available",
            "1 while the store is loaded and takes commits, else 0",
            store_available.clone(),
        );
        let inner = Inner {
            registry,
            connections,
            connections_accepted,
            logins,
            login_failures,
            registrations,
            messages_accepted,
            message_bytes_accepted,
            messages_refused,
            messages_delivered,
            notices_delivered,
            messages_acknowledged,
            messages_expired,
            queue_items,
            queue_bytes,
            commits,
            commit_seconds,
            commit_batch,
            tls_handshake_failures,
            slow_consumers,
            store_available,
            serving: AtomicBool::new(false),
        };
        // Every transport shows, at zero, before its first connection.
        for transport in TransportKind::ALL {
            for state in [ConnState::Open, ConnState::LoggedIn] {
                let _ = inner
                    .connections
                    .get_or_create(&ConnLabels { transport, state });
            }
            let _ = inner
                .connections_accepted
                .get_or_create(&TransportLabel { transport });
        }
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Whether the server is ready for clients (`/readyz`): `Err` with the
    /// reason when not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.inner.serving.load(Ordering::Relaxed) {
            return Err("not serving (starting or stopping)");
        }
        if self.inner.store_available.get() != 1 {
            return Err("the store is not available");
        }
        Ok(())
    }

    /// The serve loop started (`true`) or stopped accepting (`false`).
    pub fn set_serving(&self, serving: bool) {
        self.inner.serving.store(serving, Ordering::Relaxed);
    }

    /// The store is loaded and takes commits (`true`), or not
    /// (`missive_store_available`, which `/readyz` reads).
    pub fn set_store_available(&self, available: bool) {
        self.inner.store_available.set(i64::from(available));
    }

    /// A connection over `transport` was accepted.
    pub fn connection_opened(&self, transport: TransportKind) {
        self.inner
            .connections_accepted
            .get_or_create(&TransportLabel { transport })
            .inc();
        self.connections(transport, ConnState::Open).inc();
    }

    /// A connection over `transport` logged in.
    pub fn connection_logged_in(&self, transport: TransportKind) {
        self.inner.logins.inc();
        self.connections(transport, ConnState::LoggedIn).inc();
    }

    /// A connection over `transport` ended (it was logged in, or not).
    pub fn connection_closed(&self, transport: TransportKind, logged_in: bool) {
        self.connections(transport, ConnState::Open).dec();
        if logged_in {
            self.connections(transport, ConnState::LoggedIn).dec();
        }
    }

    fn connections(&self, transport: TransportKind, state: ConnState) -> Gauge {
        self.inner
            .connections
            .get_or_create(&ConnLabels { transport, state })
            .clone()
    }

    /// Counts what `event` tells, but for the connection events (which need
    /// the connection's transport: [`Self::connection_logged_in`],
    /// [`Self::connection_closed`]).
    pub fn server_event(&self, event: &ServerEvent) {
        let m = &self.inner;
        match event {
            ServerEvent::UserRegistered { .. } => {
                m.registrations.inc();
            }
            ServerEvent::LoginFailed { code, .. } => {
                m.login_failures
                    .get_or_create(&ReasonLabel::of(*code))
                    .inc();
            }
            ServerEvent::MessageAccepted { bytes } => {
                m.messages_accepted.inc();
                m.message_bytes_accepted.inc_by(*bytes as u64);
            }
            ServerEvent::MessageRefused { code, .. } => {
                m.messages_refused
                    .get_or_create(&ReasonLabel::of(*code))
                    .inc();
            }
            ServerEvent::Delivered {
                messages, notices, ..
            } => {
                m.messages_delivered.inc_by(u64::from(*messages));
                m.notices_delivered.inc_by(u64::from(*notices));
            }
            ServerEvent::Acknowledged { message: true, .. } => {
                m.messages_acknowledged.inc();
            }
            ServerEvent::Expired { message: true } => {
                m.messages_expired.inc();
            }
            ServerEvent::StorageAvailability { available } => {
                self.set_store_available(*available);
            }
            _ => {}
        }
    }

    /// The queues hold `items` items and `bytes` envelope bytes.
    pub fn set_queued(&self, items: usize, bytes: u64) {
        self.inner.queue_items.set(saturating_i64(items as u64));
        self.inner.queue_bytes.set(saturating_i64(bytes));
    }

    /// A store commit ended (called on the store thread).
    pub fn commit(&self, report: &CommitReport) {
        self.inner.commits.inc();
        self.inner
            .commit_seconds
            .observe(report.duration.as_secs_f64());
        self.inner.commit_batch.observe(report.commands as f64);
    }

    /// A connection was dropped as a slow consumer.
    pub fn slow_consumer(&self) {
        self.inner.slow_consumers.inc();
    }

    /// The counter of failed TLS handshakes (a listener increments it).
    pub fn tls_handshake_failures(&self) -> Counter {
        self.inner.tls_handshake_failures.clone()
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_core::ConnId;
    use std::time::Duration;

    /// The value of the sample `name{labels}` in `text` (labels as written
    /// by the encoder, `""` for none).
    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{labels}}}")
        };
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (k, v) = line.rsplit_once(' ')?;
                (k == key).then(|| v.parse().unwrap())
            })
    }

    #[test]
    fn events_are_counted_under_their_names() {
        let metrics = Metrics::new();
        let conn = ConnId(1);
        for event in [
            ServerEvent::LoginFailed {
                conn,
                code: ErrorCode::AuthFailed,
            },
            ServerEvent::LoginFailed {
                conn,
                code: ErrorCode::AuthFailed,
            },
            ServerEvent::MessageAccepted { bytes: 100 },
            ServerEvent::MessageRefused {
                conn,
                code: ErrorCode::QueueFull,
            },
            ServerEvent::Delivered {
                conn,
                messages: 3,
                notices: 1,
            },
            ServerEvent::Acknowledged {
                conn,
                message: true,
            },
            ServerEvent::Acknowledged {
                conn,
                message: false,
            },
            ServerEvent::Expired { message: true },
            ServerEvent::Expired { message: false },
        ] {
            metrics.server_event(&event);
        }
        metrics.connection_opened(TransportKind::Wss);
        metrics.connection_opened(TransportKind::Wss);
        metrics.connection_logged_in(TransportKind::Wss);
        metrics.connection_closed(TransportKind::Wss, false);
        metrics.set_queued(7, 700);
        metrics.commit(&CommitReport::new(5, Duration::from_millis(3)));
        metrics.slow_consumer();
        metrics.tls_handshake_failures().inc();
        let text = metrics.encode();
        let value = |name, labels| {
            sample(&text, name, labels).unwrap_or_else(|| panic!("{name}{{{labels}}} in\n{text}"))
        };
        assert_eq!(
            value("missive_login_failures_total", "reason=\"AuthFailed\""),
            2.0
        );
        assert_eq!(value("missive_logins_total", ""), 1.0);
        assert_eq!(value("missive_messages_accepted_total", ""), 1.0);
        assert_eq!(value("missive_messages_accepted_bytes_total", ""), 100.0);
        assert_eq!(
            value("missive_messages_refused_total", "reason=\"QueueFull\""),
            1.0
        );
        assert_eq!(value("missive_messages_delivered_total", ""), 3.0);
        assert_eq!(value("missive_notices_delivered_total", ""), 1.0);
        assert_eq!(value("missive_messages_acknowledged_total", ""), 1.0);
        assert_eq!(value("missive_messages_expired_total", ""), 1.0);
        assert_eq!(
            value("missive_connections", "transport=\"wss\",state=\"open\""),
            1.0
        );
        assert_eq!(
            value(
                "missive_connections",
                "transport=\"wss\",state=\"logged_in\""
            ),
            1.0
        );
        assert_eq!(
            value("missive_connections", "transport=\"tcp\",state=\"open\""),
            0.0,
            "every transport shows before its first connection"
        );
        assert_eq!(
            value("missive_connections_accepted_total", "transport=\"wss\""),
            2.0
        );
        assert_eq!(value("missive_queue_items", ""), 7.0);
        assert_eq!(value("missive_queue_bytes", ""), 700.0);
        assert_eq!(value("missive_store_commits_total", ""), 1.0);
        assert_eq!(
            value("missive_store_commit_duration_seconds_count", ""),
            1.0
        );
        assert_eq!(value("missive_store_commit_batch_commands_sum", ""), 5.0);
        assert_eq!(value("missive_slow_consumer_drops_total", ""), 1.0);
        assert_eq!(value("missive_tls_handshake_failures_total", ""), 1.0);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn ready_only_while_serving_with_the_store_available() {
        let metrics = Metrics::new();
        assert!(metrics.readiness().is_err(), "not serving yet");
        metrics.set_store_available(true);
        assert!(metrics.readiness().is_err(), "not serving yet");
        metrics.set_serving(true);
        assert_eq!(metrics.readiness(), Ok(()));
        metrics.clone().set_store_available(false);
        assert_eq!(metrics.readiness(), Err("the store is not available"));
        assert!(metrics.encode().contains("missive_store_available 0"));
    }

    #[test]
    fn a_link_tells_its_transport() {
        assert_eq!(TransportKind::of(&Link::PLAINTEXT), TransportKind::Tcp);
        assert_eq!(TransportKind::Wss.as_str(), "wss");
    }
}
