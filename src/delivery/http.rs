//! The pooled HTTP client that POSTs webhooks: hyper's connection pool, rustls, and the
//! address guard as its resolver, with nothing in between.
//!
//! Guarantees:
//! - every new connection is resolved through [`GuardedResolver`] (IP-literal URLs never reach a
//!   resolver: [`super::guard::check_url`] runs before each request), and no proxy is ever used,
//!   so the addresses checked are the ones connected to;
//! - TLS is rustls with the Mozilla roots (webpki-roots), HTTP/1.1 or HTTP/2 by ALPN;
//! - keep-alive connections are pooled per host: idle ones are kept up to
//!   `max_in_flight_requests` per host and for [`POOL_IDLE_TIMEOUT`];
//! - redirects are never followed: the client has no redirect layer, a 3xx is a status like any
//!   other;
//! - [`classify`] maps every failure of a request to one [`AttemptError`], by the same rules as
//!   for the OAuth client's errors (guard refusal first, then timeout, TLS, connect).
//!
//! Why not reqwest here: its redirect and retry layers parse the URL again and wrap every
//! exchange even with redirects off, about a fifth of a delivery's instructions
//! (docs/performance.md). The OAuth token requests, rare and cached, stay on reqwest.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::DeliverySettings;

use super::attempt::{find_in_chain, has_io_kind, AttemptError};
use super::guard::{GuardError, GuardedResolver};

/// How long an idle keep-alive connection stays in the pool.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on every connection, so that a dead peer is noticed.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The client webhooks are POSTed with.
pub type HttpClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS: {0}")]
pub struct TlsInitError(#[from] rustls::Error);

/// A pooled client resolving through `resolver`, with the connect timeout and pool size of
/// `settings`. The request timeout is the caller's (see [`super::client`]).
pub fn build(
    settings: &DeliverySettings,
    resolver: GuardedResolver,
) -> Result<HttpClient, TlsInitError> {
    let mut tcp = HttpConnector::new_with_resolver(resolver);
    // `https` URLs go through rustls; the scheme itself is checked by the guard.
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(settings.connect_timeout));
    tcp.set_keepalive(Some(TCP_KEEPALIVE));
    tcp.set_nodelay(true);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        // Idle keep-alive connections per host: as many as can be in flight, so that endpoints
        // sharing a host never reconnect under load; the idle timeout bounds them.
        .pool_max_idle_per_host(settings.max_in_flight_requests)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(tls))
}

/// Classifies a failed request. Order matters: a refusal by the guard resolver comes first (it
/// surfaces as a connect error), then timeouts (a connect that times out is a timeout), then TLS
/// (rustls reports handshake failures as `io::ErrorKind::InvalidData`), then connect failures.
/// Anything else (a connection closed before the status, say) is `request`: the body is bytes
/// in memory, it cannot fail to be read.
pub fn classify(err: &hyper_util::client::legacy::Error) -> AttemptError {
    if let Some(guard) = find_in_chain::<GuardError>(err) {
        return guard.attempt_error();
    }
    if has_io_kind(err, io::ErrorKind::TimedOut) {
        return AttemptError::Timeout;
    }
    if err.is_connect() {
        return if has_io_kind(err, io::ErrorKind::InvalidData) {
            AttemptError::Tls
        } else {
            AttemptError::Connect
        };
    }
    AttemptError::Request
}

/// The connector's resolver: the guard's lookup, addresses with the port left 0 (the
/// connector sets it).
impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = GuardError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, GuardError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GuardError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = *self;
        let host = name.as_str().to_owned();
        Box::pin(async move { resolver.lookup(host).await.map(Vec::into_iter) })
    }
}
