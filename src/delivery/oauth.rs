//! OAuth 2.0 client credentials (RFC 6749 §4.4), one [`TokenSource`] per organization.
//!
//! Guarantees:
//! - at most one token request is in flight per source: concurrent callers wait for it and
//!   share its result (a `tokio::sync::Mutex` is held across the fetch; a caller that gives up
//!   waiting releases nothing it did not hold);
//! - a cached token is reused until shortly before it expires: the refresh margin is 10% of its
//!   lifetime capped at 30 s, but at least 1 s (a token with under a second left could expire
//!   on the wire, so a 1 s token is never reused). A response without `expires_in` is cached for
//!   [`LIFETIME_WITHOUT_EXPIRY`] (5 min) or until the endpoint rejects it with a 401;
//! - token requests go through the caller's (guarded) HTTP client, never follow redirects, and
//!   are checked against the organization's [`UrlPolicy`];
//! - neither the client secret nor any token is ever logged or shown by `Debug`, and the token
//!   URL is logged and shown without user info or query string (nor do error texts carry it);
//! - a failed fetch is shared: it clears the cached token, and every caller that was waiting
//!   for it, or comes within [`FAILURE_TTL`] (a few seconds), gets the same failure without a
//!   request of its own ([`OAuthError::Shared`]). So a hanging or failing token endpoint costs
//!   one request timeout per few seconds, not one per waiting delivery in turn.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicTokenType};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse,
    RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;
use secrecy::ExposeSecret;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{AuthStyle, OAuthSettings};

use super::attempt::AttemptError;
use super::guard::{GuardError, UrlPolicy};
use super::redact;

/// How long a token without `expires_in` is reused.
pub const LIFETIME_WITHOUT_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// How long a failed fetch is handed to callers before the next one tries again.
pub const FAILURE_TTL: Duration = Duration::from_secs(5);
/// Largest token response read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

type TokenClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// An access token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// The token itself, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// Why no token was obtained. All are retryable for the delivery (`AttemptError::OAuthToken`).
/// Messages never contain the secret, a token, or the response body.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("token URL refused: {0}")]
    Guard(#[from] GuardError),
    #[error("token request failed: {0}")]
    Transport(#[source] TransportError),
    #[error("token endpoint answered with an error: {0}")]
    Server(String),
    #[error("token endpoint answer could not be read: {0}")]
    Invalid(String),
    #[error("token type {0:?} is not supported (only bearer)")]
    UnsupportedTokenType(String),
    #[error("extra token request header {0:?} is not a valid header")]
    InvalidHeader(String),
    /// A failed fetch, as every caller sees it: the one that made the request, those that
    /// waited for it, and those that came within the failure TTL (no request of their own).
    #[error(transparent)]
    Shared(Arc<OAuthError>),
}

impl OAuthError {
    /// How the delivery attempt ends: a token URL the address guard refuses is
    /// `address_refused` (like an endpoint URL: dead-lettered, not retried); anything else is
    /// `oauth_token` (retried).
    pub fn attempt_error(&self) -> AttemptError {
        let refused = match self {
            OAuthError::Guard(guard) => guard.attempt_error() == AttemptError::AddressRefused,
            OAuthError::Transport(TransportError::Http(e)) => {
                AttemptError::classify(e) == AttemptError::AddressRefused
            }
            OAuthError::Shared(inner) => return inner.attempt_error(),
            OAuthError::Transport(_)
            | OAuthError::Server(_)
            | OAuthError::Invalid(_)
            | OAuthError::UnsupportedTokenType(_)
            | OAuthError::InvalidHeader(_) => false,
        };
        if refused {
            AttemptError::AddressRefused
        } else {
            AttemptError::OAuthToken
        }
    }
}

/// The token request's transport failure (our HTTP client, seen through oauth2). The reqwest
/// error is kept without its URL (the token URL may carry a secret in its query string).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{}", redact::chain(.0))]
    Http(reqwest::Error),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot build the response: {0}")]
    Build(#[from] oauth2::http::Error),
}

impl From<reqwest::Error> for TransportError {
    fn from(error: reqwest::Error) -> Self {
        TransportError::Http(error.without_url())
    }
}

struct Cached {
    token: AccessToken,
    /// From here on the token is refetched.
    refresh_at: Instant,
}

/// What the single-flight lock guards: the token, or the last failure while it is fresh.
#[derive(Default)]
enum CacheState {
    #[default]
    Empty,
    Token(Cached),
    Failed {
        error: Arc<OAuthError>,
        until: Instant,
    },
}

pub struct TokenSource {
    client: TokenClient,
    token_url: Url,
    scopes: Vec<Scope>,
    headers: Result<Vec<(HeaderName, HeaderValue)>, String>,
    http: reqwest::Client,
    policy: UrlPolicy,
    cached: Mutex<CacheState>,
    failure_ttl: Duration,
    fetches: AtomicU64,
    failures: AtomicU64,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &redact::url(&self.token_url))
            .field("scopes", &self.scopes.len())
            .field("policy", &self.policy)
            .field("fetches", &self.fetches())
            .field("failures", &self.failures())
            .finish_non_exhaustive()
    }
}

/// When a token obtained at `requested` (the instant its request was sent) should be refetched.
pub fn refresh_at(requested: Instant, expires_in: Option<Duration>) -> Instant {
    let Some(lifetime) = expires_in else {
        return requested + LIFETIME_WITHOUT_EXPIRY;
    };
    let margin = (lifetime / 10)
        .min(Duration::from_secs(30))
        .max(Duration::from_secs(1));
    requested + lifetime.saturating_sub(margin)
}

impl TokenSource {
    /// A source with the strict URL policy (public addresses, HTTPS); see
    /// [`with_url_policy`](Self::with_url_policy).
    pub fn new(settings: &OAuthSettings, http: reqwest::Client) -> Self {
        let auth_type = match settings.auth_style {
            AuthStyle::Basic => AuthType::BasicAuth,
            AuthStyle::RequestBody => AuthType::RequestBody,
        };
        let client = BasicClient::new(ClientId::new(settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                settings.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_type(auth_type)
            .set_token_uri(TokenUrl::from_url(settings.token_url.clone()));
        let scopes = settings
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(|s| Scope::new(s.to_owned()))
            .collect();
        let headers = settings
            .headers
            .iter()
            .map(|(name, value)| {
                let parsed = (
                    HeaderName::from_bytes(name.as_bytes()),
                    value.to_header_value(),
                );
                match parsed {
                    (Ok(name), Ok(value)) => Ok((name, value)),
                    _ => Err(name.clone()),
                }
            })
            .collect();
        TokenSource {
            client,
            token_url: settings.token_url.clone(),
            scopes,
            headers,
            http,
            policy: UrlPolicy::STRICT,
            cached: Mutex::new(CacheState::Empty),
            failure_ttl: FAILURE_TTL,
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// The organization's guard rules for the token URL (same as for its endpoint URL).
    pub fn with_url_policy(mut self, policy: UrlPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a failure is shared (default [`FAILURE_TTL`]).
    pub fn with_failure_ttl(mut self, ttl: Duration) -> Self {
        self.failure_ttl = ttl;
        self
    }

    /// A valid token: the cached one, or a new one (one fetch at a time per source); or the
    /// failure of a fetch that ended less than the failure TTL ago.
    pub async fn token(&self) -> Result<AccessToken, OAuthError> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        match &*cached {
            CacheState::Token(c) if now < c.refresh_at => return Ok(c.token.clone()),
            CacheState::Failed { error, until } if now < *until => {
                return Err(OAuthError::Shared(error.clone()))
            }
            _ => {}
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        // Boxed: a token request is a large future, and every attempt would carry its space
        // while almost all are served from the cache.
        match Box::pin(self.fetch()).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *cached = CacheState::Token(fresh);
                Ok(token)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let error = Arc::new(e);
                *cached = CacheState::Failed {
                    error: error.clone(),
                    until: Instant::now() + self.failure_ttl,
                };
                Err(OAuthError::Shared(error))
            }
        }
    }

    /// Forgets `token` if it is still the cached one (the endpoint rejected it); a token that was
    /// already replaced by a concurrent caller is left alone.
    pub async fn invalidate(&self, token: &AccessToken) {
        let mut cached = self.cached.lock().await;
        if matches!(&*cached, CacheState::Token(c) if &c.token == token) {
            *cached = CacheState::Empty;
        }
    }

    /// Token fetches started (successful or not, including ones the URL guard stopped).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Token requests that yielded no token.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    async fn fetch(&self) -> Result<Cached, OAuthError> {
        self.policy.check(&self.token_url)?;
        let headers = self
            .headers
            .as_ref()
            .map_err(|name| OAuthError::InvalidHeader(name.clone()))?;
        let requested = Instant::now();
        // The hook returns an owned ('static) future: a borrowing one makes the whole delivery
        // future fail the compiler's higher-ranked `Send` check when spawned.
        let send = |request: HttpRequest| send(self.http.clone(), request, headers.to_vec());
        let response = self
            .client
            .exchange_client_credentials()
            .add_scopes(self.scopes.iter().cloned())
            .request_async(&send)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(e) => OAuthError::Server(e.error().to_string()),
                RequestTokenError::Request(e) => OAuthError::Transport(e),
                // Never keep the body, nor serde's message, which quotes the offending value
                // (it could be the token): only where it failed and what kind of failure.
                RequestTokenError::Parse(e, _body) => OAuthError::Invalid(format!(
                    "the token response does not parse at `{}` ({:?} error)",
                    e.path(),
                    e.inner().classify()
                )),
                RequestTokenError::Other(message) => OAuthError::Invalid(message),
            })?;
        match response.token_type() {
            BasicTokenType::Bearer => {}
            BasicTokenType::Extension(t) if t.eq_ignore_ascii_case("bearer") => {}
            other => return Err(OAuthError::UnsupportedTokenType(other.as_ref().to_owned())),
        }
        let expires_in = response.expires_in();
        tracing::debug!(
            token_url = %redact::url(&self.token_url),
            expires_in_s = expires_in.map(|d| d.as_secs()),
            "OAuth token fetched"
        );
        Ok(Cached {
            token: AccessToken(Arc::from(response.access_token().secret().as_str())),
            refresh_at: refresh_at(requested, expires_in),
        })
    }
}

/// oauth2's HTTP hook: our client (guarded resolver, no redirects, timeouts), plus the extra
/// headers. Headers oauth2 sets itself (authorization, content-type, accept) win.
async fn send(
    http: reqwest::Client,
    request: HttpRequest,
    extra: Vec<(HeaderName, HeaderValue)>,
) -> Result<HttpResponse, TransportError> {
    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    for (name, value) in extra {
        if !headers.contains_key(&name) {
            headers.append(name, value);
        }
    }
    let mut response = http
        .request(parts.method, parts.uri.to_string())
        .headers(headers)
        .body(body)
        .send()
        .await?;
    let mut builder = oauth2::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Err(TransportError::TooLarge(MAX_TOKEN_RESPONSE_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(builder.body(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin_rows() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let rows = [
            (Some(s(3600)), s(3570)), // 10% = 360 s, capped at 30 s
            (Some(s(300)), s(270)),   // 10% = 30 s
            (Some(s(100)), s(90)),    // 10% = 10 s
            (Some(s(5)), s(4)),       // 10% = 0.5 s, raised to 1 s
            (Some(s(1)), s(0)),       // stale at once
            (Some(s(0)), s(0)),
            (None, LIFETIME_WITHOUT_EXPIRY),
        ];
        for (expires_in, reuse_for) in rows {
            assert_eq!(refresh_at(t0, expires_in), t0 + reuse_for, "{expires_in:?}");
        }
    }

    #[test]
    fn token_debug_is_redacted() {
        let token = AccessToken(Arc::from("very-secret-token"));
        assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
        assert_eq!(token.secret(), "very-secret-token");
    }
}
