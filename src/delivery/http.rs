//! The HTTP client that POSTs webhooks: hyper connections in a pool of our own, one per host,
//! rustls, and the address guard as the resolver, with nothing in between.
//!
//! Guarantees:
//! - every new connection is resolved through [`GuardedResolver`] (IP-literal URLs never reach a
//!   resolver: [`super::guard::check_url`] runs before each request), and no proxy is ever used,
//!   so the addresses checked are the ones connected to;
//! - TLS is rustls with the Mozilla roots (webpki-roots), HTTP/1.1 or HTTP/2 by ALPN;
//! - keep-alive connections are pooled per scheme and authority, shared by the endpoints of
//!   that host: HTTP/1.1 connections carry one request at a time, and up to
//!   `max_in_flight_requests` of them are kept idle, each for at most [`POOL_IDLE_TIMEOUT`]; an
//!   HTTP/2 connection is shared by all requests to its host;
//! - a connection goes back to the pool only once its response body was read to the end, so a
//!   pooled connection never carries the rest of an earlier response; a request that a reused
//!   connection turns away before sending it (the peer closed it meanwhile) is sent again on
//!   another, never one that may have been sent;
//! - redirects are never followed: there is no redirect layer, a 3xx is a status like any other;
//! - [`classify`] maps every failure of a request to one [`AttemptError`], by the same rules as
//!   for the OAuth client's errors (guard refusal first, then timeout, TLS, connect).
//!
//! Why a pool of our own: reqwest's redirect and retry layers parse the URL again and wrap every
//! exchange even with redirects off, and hyper-util's general-purpose pool looks the host up in
//! a map, races a checkout against a lazy connect and boxes both on every request; each cost
//! about a fifth of a delivery's instructions (docs/performance.md). An endpoint resolves its
//! host's pool once, when it is built. The OAuth token requests, rare and cached, stay on
//! reqwest.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ::http::uri::{Authority, Scheme};
use ::http::{HeaderValue, Request, Response, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::config::DeliverySettings;
use crate::FastHashMap;

use super::attempt::{find_in_chain, has_io_kind, AttemptError};
use super::guard::{GuardError, GuardedResolver};

/// How long an idle keep-alive connection stays in the pool.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on every connection, so that a dead peer is noticed.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;
type Body = Full<Bytes>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The live pools by scheme and authority; an entry dies with the last endpoint of its host.
type Pools = Mutex<FastHashMap<(Scheme, Authority), Weak<HostPool>>>;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS: {0}")]
pub struct TlsInitError(#[from] rustls::Error);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect")]
    Connect(#[source] BoxError),
    #[error("HTTP handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error("request failed")]
    Request(#[source] hyper::Error),
}

/// The client webhooks are POSTed with: the connector and the pools of the hosts in use.
/// Cloning is cheap and shares the pools.
#[derive(Clone)]
pub struct HttpClient {
    connector: Connector,
    pools: Arc<Pools>,
    max_idle_per_host: usize,
}

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
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Ok(HttpClient {
        connector,
        pools: Arc::default(),
        // Idle keep-alive connections per host: as many as can be in flight, so that endpoints
        // sharing a host never reconnect under load; the idle timeout bounds them.
        max_idle_per_host: settings.max_in_flight_requests.max(1),
    })
}

impl HttpClient {
    /// The pool of a scheme and authority, shared by every endpoint of that host (`None` if
    /// they make no URL).
    fn pool(&self, scheme: Scheme, authority: Authority) -> Option<Arc<HostPool>> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let key = (scheme, authority);
        if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
            return Some(pool);
        }
        pools.retain(|_, pool| pool.strong_count() > 0);
        // The host alone, never an endpoint's path or query (where API keys may hide).
        let uri = Uri::builder()
            .scheme(key.0.clone())
            .authority(key.1.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let pool = Arc::new(HostPool {
            connector: self.connector.clone(),
            uri,
            max_idle: self.max_idle_per_host,
            idle: Mutex::default(),
            reaper_started: AtomicBool::new(false),
        });
        pools.insert(key, Arc::downgrade(&pool));
        Some(pool)
    }
}

/// Where an endpoint's requests go, worked out once rather than on every request: the URL as
/// an HTTP/2 target (absolute) and as an HTTP/1.1 one (origin form), the `host` header (the
/// host, and the port when it is not the scheme's default), and the host's pool.
#[derive(Clone)]
pub struct Destination {
    uri: Uri,
    origin_form: Uri,
    pub host: HeaderValue,
    pool: Arc<HostPool>,
}

impl Destination {
    /// `None` when `url` is not a valid request target.
    pub fn of(url: &str, client: &HttpClient) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme()?.clone();
        let authority = uri.authority()?.clone();
        let name = uri.host()?;
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match uri.port_u16() {
            Some(port) if port != default_port => HeaderValue::from_str(&format!("{name}:{port}")),
            _ => HeaderValue::from_str(name),
        }
        .ok()?;
        let origin_form = match uri.path_and_query() {
            Some(target) => Uri::from(target.clone()),
            None => Uri::from_static("/"),
        };
        let pool = client.pool(scheme, authority)?;
        Some(Destination {
            uri,
            origin_form,
            host,
            pool,
        })
    }

    /// Sends `request` (its URI is set here) on a pooled connection, or a new one. Hand the
    /// [`Lease`] back with [`Destination::release`] once the response body has been read to
    /// its end; dropping it instead closes an HTTP/1.1 connection.
    pub async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        loop {
            let (conn, reused) = match self.pool.checkout().await {
                Some(conn) => (conn, true),
                // Boxed: connecting (TLS, HTTP/2 handshake) is a large future, and every attempt
                // would carry its space, and copy it, while almost all find a pooled connection.
                None => (Box::pin(self.pool.connect()).await?, false),
            };
            let turned_away = match conn {
                Conn::H1(mut sender) => {
                    *request.uri_mut() = self.origin_form.clone();
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok((response, Lease(Some(sender)))),
                        Err(e) => e,
                    }
                }
                Conn::H2(mut sender) => {
                    *request.uri_mut() = self.uri.clone();
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok((response, Lease(None))),
                        Err(e) => e,
                    }
                }
            };
            // Only a request the connection gave back unsent may go again, and only when the
            // connection was an old one (a new one failing would fail again).
            let mut turned_away = turned_away;
            match turned_away.take_message() {
                Some(unsent) if reused => request = unsent,
                _ => return Err(SendError::Request(turned_away.into_error())),
            }
        }
    }

    /// Returns a connection whose response was read to its end to the pool.
    pub fn release(&self, lease: Lease) {
        if let Some(sender) = lease.0 {
            self.pool.put(sender);
        }
    }
}

/// The HTTP/1.1 connection a response came on, until its body has been read.
pub struct Lease(Option<http1::SendRequest<Body>>);

enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// The connections of one scheme and authority.
struct HostPool {
    connector: Connector,
    /// The host's root URL (scheme and authority): what the connector connects to.
    uri: Uri,
    max_idle: usize,
    idle: Mutex<Idle>,
    reaper_started: AtomicBool,
}

#[derive(Default)]
struct Idle {
    /// Oldest first: connections are taken from the end and put back there.
    h1: Vec<(http1::SendRequest<Body>, Instant)>,
    h2: Option<http2::SendRequest<Body>>,
}

impl Idle {
    fn expire(&mut self, now: Instant) {
        let expired = self
            .h1
            .partition_point(|(_, since)| now.duration_since(*since) >= POOL_IDLE_TIMEOUT);
        self.h1.drain(..expired);
    }
}

impl HostPool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared HTTP/2 connection, else the most recently used idle HTTP/1.1 one that is
    /// still open; `None` when there is none.
    async fn checkout(&self) -> Option<Conn> {
        loop {
            let (mut sender, since) = {
                let mut idle = self.idle();
                if let Some(h2) = &idle.h2 {
                    if !h2.is_closed() {
                        return Some(Conn::H2(h2.clone()));
                    }
                    idle.h2 = None;
                }
                idle.h1.pop()?
            };
            if since.elapsed() >= POOL_IDLE_TIMEOUT || sender.is_closed() {
                continue;
            }
            // Ready at once unless the connection is still finishing the last exchange, or
            // an error if the peer has closed it.
            if sender.ready().await.is_ok() {
                return Some(Conn::H1(sender));
            }
        }
    }

    fn put(&self, sender: http1::SendRequest<Body>) {
        let now = Instant::now();
        let mut idle = self.idle();
        idle.expire(now);
        if idle.h1.len() < self.max_idle && !sender.is_closed() {
            idle.h1.push((sender, now));
        }
    }

    /// A new connection, HTTP/2 when TLS negotiated it (and then shared), else HTTP/1.1.
    async fn connect(self: &Arc<Self>) -> Result<Conn, SendError> {
        self.start_reaper();
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.uri.clone())
            .await
            .map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(SendError::Handshake)?;
            tokio::spawn(drive(connection));
            let mut idle = self.idle();
            if idle.h2.as_ref().is_none_or(|h2| h2.is_closed()) {
                idle.h2 = Some(sender.clone());
            }
            Ok(Conn::H2(sender))
        } else {
            let (sender, connection) = http1::handshake(io).await.map_err(SendError::Handshake)?;
            tokio::spawn(drive(connection));
            Ok(Conn::H1(sender))
        }
    }

    /// Closes the idle connections of a host gone quiet, every half idle timeout, for as long
    /// as the pool lives.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(POOL_IDLE_TIMEOUT / 2);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { break };
                pool.idle().expire(Instant::now());
            }
        });
    }
}

/// Runs a connection until it closes: its errors reach the request they concern.
async fn drive<F: Future<Output = hyper::Result<()>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::trace!(error = %e, "webhook connection closed");
    }
}

/// Classifies a failed request. Order matters: a refusal by the guard resolver comes first (it
/// surfaces as a connect error), then timeouts (a connect that times out is a timeout), then TLS
/// (rustls reports handshake failures as `io::ErrorKind::InvalidData`), then connect failures.
/// Anything else (a connection closed before the status, say) is `request`: the body is bytes
/// in memory, it cannot fail to be read.
pub fn classify(err: &SendError) -> AttemptError {
    if let Some(guard) = find_in_chain::<GuardError>(err) {
        return guard.attempt_error();
    }
    if has_io_kind(err, io::ErrorKind::TimedOut) {
        return AttemptError::Timeout;
    }
    match err {
        SendError::Connect(_) | SendError::Handshake(_) => {
            if has_io_kind(err, io::ErrorKind::InvalidData) {
                AttemptError::Tls
            } else {
                AttemptError::Connect
            }
        }
        SendError::Request(_) => AttemptError::Request,
    }
}

/// The connector's resolver: the guard's lookup, addresses with the port left 0 (the
/// connector sets it).
impl Service<Name> for GuardedResolver {
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

#[cfg(test)]
mod tests;
