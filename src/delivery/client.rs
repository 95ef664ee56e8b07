//! The [`Deliverer`]: one HTTP attempt of one webhook event to one endpoint, returned as an
//! [`Attempt`] (data, never an error to unwrap).
//!
//! Guarantees:
//! - every request is a POST of `event.body`, byte for byte, with `content-type`,
//!   `user-agent`, `webhook-id`, a `webhook-timestamp` of this very request and, when the
//!   endpoint has a signing key, a `webhook-signature` computed over that timestamp (so retries
//!   never carry a stale signature). These headers, and `authorization`, win over custom headers
//!   of the same name;
//! - redirects are never followed (a 3xx is the outcome) and no request reaches a non-public
//!   address or plain http unless the organization allows it (see [`super::guard`]); webhooks
//!   go through [`super::http`]'s pooled client, token requests through reqwest;
//! - once a status line arrives, the outcome is that status. The response body is read up to
//!   `max_response_body_bytes` and then dropped; an error while reading it (timeout, reset)
//!   does not change the outcome, so a 2xx whose body fails is delivered — the receiver has
//!   already said it accepted the event;
//! - with OAuth, a 401 invalidates the token and the request is re-sent once, at once, with a
//!   new token; the attempt reports the final response, and says it was re-sent
//!   ([`Attempt::reauthorized`], counted in `oauth_reauthorizations_total`);
//! - a token URL the address guard refuses ends the attempt as `address_refused`, like an
//!   endpoint URL; any other token failure as `oauth_token`;
//! - URLs and error texts are logged through [`super::redact`]: never a user info or query
//!   string (where API keys hide);
//! - each exchange (token request or POST, its response body included) is bounded by
//!   `request_timeout`, the whole attempt by [`Deliverer::max_attempt_duration`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::http::{Method, Request};
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT,
};
use tokio::time::Instant;

use crate::config::{DeliverySettings, OrganizationSettings};
use crate::webhook::WebhookEvent;

use super::attempt::{parse_retry_after, Attempt, AttemptError, AttemptOutcome};
use super::guard::{GuardedResolver, UrlPolicy};
use super::http::{self, Destination, HttpClient, POOL_IDLE_TIMEOUT, TCP_KEEPALIVE};
use super::oauth::{AccessToken, TokenSource};
use super::redact;
/// An OAuth attempt makes at most four exchanges: token, POST, and after a 401 token, POST.
const MAX_EXCHANGES_PER_ATTEMPT: u32 = 4;

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

#[derive(Debug, thiserror::Error)]
pub enum DeliveryInitError {
    #[error("user agent {0:?} is not a valid header value (visible ASCII only), e.g. \"consent-webhooks/1.0\"")]
    UserAgent(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    Tls(#[from] http::TlsInitError),
}

/// The two clients of one guard setting: webhooks and OAuth token requests.
#[derive(Clone)]
struct Clients {
    webhooks: HttpClient,
    tokens: reqwest::Client,
}

impl Clients {
    fn new(
        settings: &DeliverySettings,
        resolver: GuardedResolver,
    ) -> Result<Self, DeliveryInitError> {
        Ok(Clients {
            webhooks: http::build(settings, resolver)?,
            tokens: build_token_client(settings, resolver)?,
        })
    }
}

#[derive(Clone)]
pub struct Deliverer {
    /// Resolves through the guard: public addresses only.
    guarded: Clients,
    /// For organizations with `allow_private_addresses` (development).
    permissive: Clients,
    user_agent: HeaderValue,
    request_timeout: Duration,
    max_response_body_bytes: usize,
}

impl fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deliverer")
            .field("user_agent", &self.user_agent)
            .field("request_timeout", &self.request_timeout)
            .field("max_response_body_bytes", &self.max_response_body_bytes)
            .finish_non_exhaustive()
    }
}

/// One organization's endpoint, ready for attempts. Build it once per organization (it owns the
/// OAuth token cache) and share it; cloning is cheap.
#[derive(Clone)]
pub struct Endpoint {
    pub organization_id: String,
    pub settings: Arc<OrganizationSettings>,
    /// `None`: the URL is not a valid request target, and every attempt fails as `request`.
    destination: Option<Destination>,
    policy: UrlPolicy,
    /// The custom headers, or the name of the first invalid one.
    headers: Result<HeaderMap, String>,
    token_source: Option<Arc<TokenSource>>,
}

impl Endpoint {
    /// The OAuth token source, for its metrics counters.
    pub fn token_source(&self) -> Option<&Arc<TokenSource>> {
        self.token_source.as_ref()
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("organization_id", &self.organization_id)
            .field("url", &redact::url(&self.settings.url))
            .field("policy", &self.policy)
            .field("token_source", &self.token_source)
            .finish_non_exhaustive()
    }
}

/// The client of OAuth token requests: the same guard, timeouts and pool rules as webhooks.
fn build_token_client(
    settings: &DeliverySettings,
    resolver: GuardedResolver,
) -> Result<reqwest::Client, DeliveryInitError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .dns_resolver(Arc::new(resolver))
        // A proxy would resolve the target itself, out of the guard's sight.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .user_agent(settings.user_agent.clone())
        // Idle keep-alive connections per host: as many as can be in flight, so that endpoints
        // sharing a host never reconnect under load; the idle timeout bounds them.
        .pool_max_idle_per_host(settings.max_in_flight_requests)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_keepalive(TCP_KEEPALIVE)
        .tcp_nodelay(true)
        .build()
        .map_err(DeliveryInitError::Client)
}

impl Deliverer {
    pub fn new(settings: &DeliverySettings) -> Result<Self, DeliveryInitError> {
        let user_agent = HeaderValue::from_str(&settings.user_agent)
            .map_err(|_| DeliveryInitError::UserAgent(settings.user_agent.clone()))?;
        Ok(Deliverer {
            guarded: Clients::new(settings, GuardedResolver::guarded())?,
            permissive: Clients::new(settings, GuardedResolver::permissive())?,
            user_agent,
            request_timeout: settings.request_timeout,
            max_response_body_bytes: settings.max_response_body_bytes,
        })
    }

    /// Upper bound of one [`attempt`](Self::attempt), OAuth included.
    pub fn max_attempt_duration(&self) -> Duration {
        self.request_timeout * MAX_EXCHANGES_PER_ATTEMPT
    }

    /// Prepares an organization's endpoint: picks the client its guard rules call for, and
    /// builds its token source (token requests follow the same rules as the endpoint's).
    pub fn endpoint(&self, organization_id: &str, settings: Arc<OrganizationSettings>) -> Endpoint {
        let policy = UrlPolicy {
            allow_private: settings.allow_private_addresses,
            allow_http: settings.allow_http,
        };
        let clients = if policy.allow_private {
            &self.permissive
        } else {
            &self.guarded
        };
        let token_source = settings.oauth.as_ref().map(|oauth| {
            Arc::new(TokenSource::new(oauth, clients.tokens.clone()).with_url_policy(policy))
        });
        let destination = Destination::of(settings.url.as_str(), &clients.webhooks);
        if destination.is_none() {
            tracing::error!(organization_id, url = %redact::url(&settings.url), "endpoint URL is not a valid request target: every attempt will fail");
        }
        let mut headers = HeaderMap::new();
        let mut invalid = None;
        for (name, value) in &settings.headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                value.to_header_value(),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => {
                    tracing::error!(organization_id, header = %name, "invalid custom header: every attempt will fail");
                    invalid.get_or_insert_with(|| name.clone());
                }
            }
        }
        Endpoint {
            organization_id: organization_id.to_owned(),
            settings,
            destination,
            policy,
            headers: invalid.map_or(Ok(headers), Err),
            token_source,
        }
    }

    /// Makes one attempt. Never fails: every ending is an [`AttemptOutcome`].
    pub async fn attempt(&self, endpoint: &Endpoint, event: &WebhookEvent) -> Attempt {
        let at = Utc::now();
        let started = Instant::now();
        let mut reauthorized = false;
        let exchange = self.exchange(endpoint, event, &mut reauthorized);
        let outcome = if endpoint.token_source.is_some() {
            tokio::time::timeout(self.max_attempt_duration(), exchange)
                .await
                .unwrap_or(AttemptOutcome::Failed(AttemptError::Timeout))
        } else {
            // A single request, already bounded by its own deadline: no second timer.
            exchange.await
        };
        let duration = started.elapsed();
        tracing::debug!(
            organization_id = %endpoint.organization_id,
            event_id = %event.id,
            outcome = %outcome.code(),
            duration_ms = duration.as_millis() as u64,
            "delivery attempt"
        );
        Attempt {
            at,
            duration,
            outcome,
            reauthorized,
        }
    }

    /// The request(s) of one attempt; sets `reauthorized` when a 401 led to a re-send.
    async fn exchange(
        &self,
        endpoint: &Endpoint,
        event: &WebhookEvent,
        reauthorized: &mut bool,
    ) -> AttemptOutcome {
        if let Err(e) = endpoint.policy.check(&endpoint.settings.url) {
            tracing::warn!(organization_id = %endpoint.organization_id, error = %e, "endpoint URL refused");
            return AttemptOutcome::Failed(e.attempt_error());
        }
        let (Ok(custom), Some(destination)) = (&endpoint.headers, &endpoint.destination) else {
            return AttemptOutcome::Failed(AttemptError::Request);
        };
        let Some(tokens) = &endpoint.token_source else {
            return self.post(endpoint, destination, custom, event, None).await;
        };
        let token = match self.token(endpoint, tokens).await {
            Ok(token) => token,
            Err(failed) => return failed,
        };
        let first = self
            .post(endpoint, destination, custom, event, Some(&token))
            .await;
        if first.status() != Some(401) {
            return first;
        }
        // The token may have been revoked early: one fresh token, one immediate re-send.
        tracing::debug!(
            organization_id = %endpoint.organization_id,
            event_id = %event.id,
            "401 with a cached OAuth token: fetching a new one and re-sending once"
        );
        *reauthorized = true;
        tokens.invalidate(&token).await;
        let token = match self.token(endpoint, tokens).await {
            Ok(token) => token,
            Err(failed) => return failed,
        };
        self.post(endpoint, destination, custom, event, Some(&token))
            .await
    }

    async fn token(
        &self,
        endpoint: &Endpoint,
        tokens: &TokenSource,
    ) -> Result<AccessToken, AttemptOutcome> {
        tokens.token().await.map_err(|e| {
            let failed = e.attempt_error();
            tracing::warn!(organization_id = %endpoint.organization_id, error = %e, outcome = failed.code(), "OAuth token fetch failed");
            AttemptOutcome::Failed(failed)
        })
    }

    async fn post(
        &self,
        endpoint: &Endpoint,
        destination: &Destination,
        custom: &HeaderMap,
        event: &WebhookEvent,
        token: Option<&AccessToken>,
    ) -> AttemptOutcome {
        let headers = match self.headers(endpoint, destination, custom, event, token) {
            Ok(headers) => headers,
            Err(failed) => return AttemptOutcome::Failed(failed),
        };
        let mut request = Request::new(Full::new(event.body.clone()));
        *request.method_mut() = Method::POST;
        *request.headers_mut() = headers;
        let deadline = Instant::now() + self.request_timeout;
        let sent = tokio::time::timeout_at(deadline, destination.send(request)).await;
        let (response, lease) = match sent {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => {
                let failed = http::classify(&e);
                tracing::debug!(organization_id = %endpoint.organization_id, error = %redact::chain(&e), "request failed");
                return AttemptOutcome::Failed(failed);
            }
            Err(_elapsed) => return AttemptOutcome::Failed(AttemptError::Timeout),
        };
        let code = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let mut body = response.into_body();
        let mut read = 0;
        while read < self.max_response_body_bytes {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |data| data.len()),
                Ok(None) => {
                    // Read to its end: the connection can carry the next request.
                    destination.release(lease);
                    break;
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(organization_id = %endpoint.organization_id, code, error = %redact::chain(&e), "response body not read");
                    break;
                }
                Err(_elapsed) => {
                    tracing::debug!(organization_id = %endpoint.organization_id, code, "response body not read: request timeout");
                    break;
                }
            }
        }
        AttemptOutcome::Status { code, retry_after }
    }

    /// Custom headers first, then ours over them.
    fn headers(
        &self,
        endpoint: &Endpoint,
        destination: &Destination,
        custom: &HeaderMap,
        event: &WebhookEvent,
        token: Option<&AccessToken>,
    ) -> Result<HeaderMap, AttemptError> {
        let timestamp = Utc::now().timestamp();
        let mut headers = custom.clone();
        headers.insert(HOST, destination.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, self.user_agent.clone());
        let id = HeaderValue::from_str(&event.id).map_err(|_| AttemptError::Request)?;
        headers.insert(WEBHOOK_ID, id);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        if let Some(key) = &endpoint.settings.signing_key {
            let mut signature = key.sign(&event.id, timestamp, &event.body);
            // During a rotation, the retiring secret's signature too: the header is a
            // space-separated list, and a receiver accepts the request when any one verifies.
            if let Some(previous) = &endpoint.settings.previous_signing_key {
                signature.push(' ');
                signature.push_str(&previous.sign(&event.id, timestamp, &event.body));
            }
            let signature = HeaderValue::from_str(&signature).map_err(|_| AttemptError::Request)?;
            headers.insert(WEBHOOK_SIGNATURE, signature);
        }
        if let Some(token) = token {
            let mut bearer = HeaderValue::from_str(&format!("Bearer {}", token.secret()))
                .map_err(|_| AttemptError::OAuthToken)?;
            bearer.set_sensitive(true);
            headers.insert(AUTHORIZATION, bearer);
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests;
