//! The admin listener: a small HTTP/1.1 server for operators and their
//! tools, on its own address (`missive-server --admin-listen`, loopback in
//! the usual set-up), serving
//!
//! - `GET /metrics`: the server's [`Metrics`] in the Prometheus text
//!   format (OpenMetrics 1.0);
//! - `GET /healthz`: 200 `ok` while the process answers;
//! - `GET /readyz`: 200 `ready` while the server serves with its store
//!   available, 503 with the reason otherwise.
//!
//! Anything else is 404 (another path) or 405 (another method than GET or
//! HEAD). One request per connection, its head bounded by
//! [`MAX_REQUEST_HEAD`](super::MAX_REQUEST_HEAD) and read within
//! [`ADMIN_TIMEOUT`] (answer included); at most [`MAX_ADMIN_CONNECTIONS`] are
//! answered at once. The request heads are read and answered by the same
//! code as the WebSocket listener's ([`super::http`]).

use super::handshake::Handshakes;
use super::http::{Answer, RequestHead, Status, content_type, read_request_head};
use super::runtime::{Runtime, sleep};
use super::server::listen_tcp;
use super::tls::Joined;
use super::transport::Listener;
use crate::metrics::{self, Metrics};
use crate::serve::ServeError;
use std::convert::Infallible;
use std::future::poll_fn;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Time a client gets to send its request and read the answer.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most requests answered at once (beyond that, the listener waits).
pub const MAX_ADMIN_CONNECTIONS: usize = 16;
/// Pause after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The admin listener, bound, not yet serving. Serves on any [`Runtime`].
pub struct AdminListener<R: Runtime> {
    listener: R::TcpListener,
    local_addr: SocketAddr,
    metrics: Metrics,
    answers: Handshakes<R, Infallible>,
}

impl<R: Runtime> std::fmt::Debug for AdminListener<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> AdminListener<R> {
    /// Binds `addr` (the first of its addresses that can be bound), to
    /// serve `metrics` (give the server the same, in
    /// [`ServerOptions::metrics`](crate::serve::ServerOptions::metrics)).
    pub async fn bind(addr: impl ToSocketAddrs, metrics: Metrics) -> Result<Self, ServeError> {
        let listener = listen_tcp::<R>(addr).await?;
        let local_addr = listener.local_addr().map_err(ServeError::Listener)?;
        let mut answers = Handshakes::new("admin HTTP");
        answers.limit = ADMIN_TIMEOUT;
        answers.max = MAX_ADMIN_CONNECTIONS;
        Ok(Self {
            listener,
            local_addr,
            metrics,
            answers,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Answers requests until the future is dropped.
    pub async fn serve(self) {
        let Self {
            mut listener,
            metrics,
            mut answers,
            ..
        } = self;
        loop {
            let accepted = poll_fn(|cx| {
                answers.poll_accept(&mut listener, cx, |stream| {
                    let metrics = metrics.clone();
                    async move {
                        let mut stream = Joined::new(stream);
                        let answer = match read_request_head(&mut stream).await {
                            Ok((request, _)) => answer(&metrics, &request),
                            Err(error) if error.deserves_answer() => Answer::new(
                                Status::BadRequest,
                                content_type(".txt"),
                                &b"bad request\n"[..],
                                true,
                            ),
                            Err(error) => return Err(error.into()),
                        };
                        answer.send::<R, _>(&mut stream).await?;
                        Ok(None)
                    }
                })
            })
            .await;
            match accepted {
                Ok((never, _)) => match never {},
                Err(e) => {
                    tracing::warn!("admin listener: accept failed: {e}");
                    sleep::<R>(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

/// The answer to `request`.
fn answer(metrics: &Metrics, request: &RequestHead) -> Answer {
    let with_body = request.method != "HEAD";
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return Answer::error(Status::MethodNotAllowed, with_body);
    }
    let text = content_type(".txt");
    let path = request.target.split(['?', '#']).next().unwrap_or_default();
    match path {
        "/metrics" => Answer::new(
            Status::Ok,
            metrics::CONTENT_TYPE,
            metrics.encode().into_bytes(),
            with_body,
        ),
        "/healthz" => Answer::new(Status::Ok, text, &b"ok\n"[..], with_body),
        "/readyz" => match metrics.readiness() {
            Ok(()) => Answer::new(Status::Ok, text, &b"ready\n"[..], with_body),
            Err(reason) => Answer::new(
                Status::ServiceUnavailable,
                text,
                format!("not ready: {reason}\n").into_bytes(),
                with_body,
            ),
        },
        _ => Answer::error(Status::NotFound, with_body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            upgrade: false,
        }
    }

    fn status(metrics: &Metrics, method: &str, target: &str) -> Status {
        answer(metrics, &request(method, target)).status
    }

    #[test]
    fn paths_methods_and_readiness() {
        let metrics = Metrics::new();
        assert_eq!(status(&metrics, "GET", "/metrics"), Status::Ok);
        assert_eq!(status(&metrics, "HEAD", "/metrics"), Status::Ok);
        assert_eq!(status(&metrics, "GET", "/healthz?probe=1"), Status::Ok);
        assert_eq!(
            status(&metrics, "GET", "/readyz"),
            Status::ServiceUnavailable
        );
        metrics.set_store_available(true);
        metrics.set_serving(true);
        assert_eq!(status(&metrics, "GET", "/readyz"), Status::Ok);
        assert_eq!(status(&metrics, "GET", "/"), Status::NotFound);
        assert_eq!(status(&metrics, "GET", "/metrics/x"), Status::NotFound);
        assert_eq!(
            status(&metrics, "POST", "/metrics"),
            Status::MethodNotAllowed
        );
    }
}
