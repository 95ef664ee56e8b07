//! Real HTTP servers for the delivery tests (axum on 127.0.0.1:0): a webhook receiver that
//! records what it gets and answers from a script, and an RFC 6749 §4.4 token endpoint.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use reqwest::Url;
use secrecy::SecretString;

use crate::config::{
    AuthStyle, DeliverySettings, OAuthSettings, OrganizationSettings, RetrySettings,
};
use crate::webhook::{event_id, EventType, WebhookEvent};

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind test server");
    let addr = listener.local_addr().expect("test server address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// Never answer.
    pub hang: bool,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            hang: false,
        }
    }

    pub fn hang() -> Reply {
        Reply {
            hang: true,
            ..Reply::status(200)
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Reply {
        self.body = Bytes::from(body);
        self
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    rejected_tokens: Mutex<HashSet<String>>,
    reject_all_tokens: Mutex<bool>,
}

/// A webhook endpoint at `/hook`: records every request, answers 401 to rejected bearer
/// tokens, then the next scripted reply, else 200.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        Receiver {
            addr: serve(app).await,
            state,
        }
    }

    pub fn url(&self) -> Url {
        format!("http://{}/hook", self.addr)
            .parse()
            .expect("receiver URL")
    }

    pub fn then(&self, reply: Reply) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    pub fn reject_token(&self, token: &str) {
        self.state
            .rejected_tokens
            .lock()
            .unwrap()
            .insert(token.to_owned());
    }

    pub fn reject_all_tokens(&self) {
        *self.state.reject_all_tokens.lock().unwrap() = true;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.received.lock().unwrap().push(Received {
        headers: headers.clone(),
        body,
    });
    if let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        let rejected = *state.reject_all_tokens.lock().unwrap()
            || state.rejected_tokens.lock().unwrap().contains(token);
        if rejected {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let reply = state.script.lock().unwrap().pop_front();
    let reply = reply.unwrap_or_else(|| Reply::status(200));
    if reply.hang {
        std::future::pending::<()>().await;
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in reply.headers {
        response = response.header(name, value);
    }
    response.body(Body::from(reply.body)).unwrap()
}

#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub headers: HeaderMap,
    pub form: Vec<(String, String)>,
}

impl TokenRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct TokenState {
    client_id: String,
    client_secret: String,
    style: AuthStyle,
    requests: Mutex<Vec<TokenRequest>>,
    fail_with: Mutex<Option<u16>>,
    expires_in: Mutex<Option<u64>>,
    delay: Duration,
    issued: AtomicU64,
}

/// A client-credentials token endpoint at `/token`, issuing `tok-1`, `tok-2`, ...
pub struct TokenServer {
    pub addr: SocketAddr,
    state: Arc<TokenState>,
}

pub const CLIENT_ID: &str = "webhooks-client";
pub const CLIENT_SECRET: &str = "s3cr3t-never-logged";

impl TokenServer {
    /// `delay` holds each answer back, so concurrent callers overlap with the fetch.
    pub async fn start(style: AuthStyle, expires_in: Option<u64>, delay: Duration) -> TokenServer {
        let state = Arc::new(TokenState {
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            style,
            requests: Mutex::default(),
            fail_with: Mutex::default(),
            expires_in: Mutex::new(expires_in),
            delay,
            issued: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/token", axum::routing::post(issue))
            .with_state(state.clone());
        TokenServer {
            addr: serve(app).await,
            state,
        }
    }

    pub fn url(&self) -> Url {
        format!("http://{}/token", self.addr)
            .parse()
            .expect("token URL")
    }

    pub fn fail_with(&self, status: Option<u16>) {
        *self.state.fail_with.lock().unwrap() = status;
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn settings(
        &self,
        scope: Option<&str>,
        headers: Vec<(String, crate::config::CustomHeaderValue)>,
    ) -> OAuthSettings {
        OAuthSettings {
            token_url: self.url(),
            client_id: CLIENT_ID.to_owned(),
            client_secret: SecretString::from(CLIENT_SECRET),
            scope: scope.map(str::to_owned),
            auth_style: self.state.style,
            headers,
        }
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

async fn issue(State(state): State<Arc<TokenState>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = oauth2::url::form_urlencoded::parse(&body)
        .into_owned()
        .collect();
    let request = TokenRequest { headers, form };
    state.requests.lock().unwrap().push(request.clone());
    tokio::time::sleep(state.delay).await;
    if let Some(status) = *state.fail_with.lock().unwrap() {
        return (StatusCode::from_u16(status).unwrap(), "upstream trouble").into_response();
    }
    if request.param("grant_type") != Some("client_credentials") {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "unsupported_grant_type"}),
        );
    }
    let (id, secret) = match state.style {
        AuthStyle::Basic => {
            let basic = request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .and_then(|v| String::from_utf8(v).ok())
                .unwrap_or_default();
            let (id, secret) = basic.split_once(':').unwrap_or_default();
            (id.to_owned(), secret.to_owned())
        }
        AuthStyle::RequestBody => (
            request.param("client_id").unwrap_or_default().to_owned(),
            request
                .param("client_secret")
                .unwrap_or_default()
                .to_owned(),
        ),
    };
    if id != state.client_id || secret != state.client_secret {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_client"}),
        );
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let mut answer =
        serde_json::json!({"access_token": format!("tok-{n}"), "token_type": "Bearer"});
    if let Some(expires_in) = *state.expires_in.lock().unwrap() {
        answer["expires_in"] = expires_in.into();
    }
    json(StatusCode::OK, answer)
}

pub fn retry_settings() -> RetrySettings {
    RetrySettings {
        schedule: [5, 20, 50, 110, 200, 290].map(Duration::from_secs).to_vec(),
        max_jitter: Duration::from_secs(10),
        budget: Duration::from_secs(300),
    }
}

pub fn delivery_settings(request_timeout: Duration) -> DeliverySettings {
    DeliverySettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout,
        max_response_body_bytes: 1024,
        retry: retry_settings(),
        endpoint_concurrency: 4,
        max_in_flight_requests: 64,
        max_pending_records: 1000,
        max_parked_in_memory: 1000,
        max_pending_per_organization: 100,
        drain_timeout: Duration::from_secs(5),
        user_agent: "consent-webhooks-test/1.0".to_owned(),
    }
}

/// A development-style organization (http and loopback allowed) posting to `url`.
pub fn organization(url: Url) -> OrganizationSettings {
    OrganizationSettings {
        url,
        event_types: None,
        regulations: BTreeSet::from(["gdpr".to_owned()]),
        headers: Vec::new(),
        signing_key: None,
        previous_signing_key: None,
        oauth: None,
        allow_http: true,
        allow_private_addresses: true,
        concurrency: 4,
        retry: retry_settings(),
        metrics_label: None,
    }
}

pub fn event() -> WebhookEvent {
    WebhookEvent {
        id: event_id("acme", "change-1"),
        event_type: EventType::UserCreated,
        organization_id: "acme".to_owned(),
        regulation: "gdpr".to_owned(),
        change_id: "change-1".to_owned(),
        occurred_at: chrono::Utc::now(),
        body: Bytes::from_static(br#"{"type":"user.created","data":{"user":{"id":"u1"}}}"#),
    }
}
