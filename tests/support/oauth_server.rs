//! A real OAuth 2.0 authorization server's token endpoint (RFC 6749 §4.4, client credentials)
//! on 127.0.0.1, for the tests: checks the client's HTTP Basic credentials (§2.3.1: client id
//! and secret form-urlencoded, then base64) and `grant_type=client_credentials`, issues
//! `tok-1`, `tok-2`, ... with a configurable `expires_in`, records every request, and can be
//! switched to answer 500.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use tokio::sync::Notify;

/// One token request as received.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub at: Instant,
    /// Client id and secret from the Basic `Authorization` header, decoded; `None` without one.
    pub basic: Option<(String, String)>,
    /// The form body's parameters, decoded.
    pub form: Vec<(String, String)>,
    /// The status answered.
    pub status: u16,
    /// The token issued, when one was.
    pub issued: Option<String>,
}

impl TokenRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Inner {
    client_id: String,
    client_secret: String,
    expires_in: Option<u64>,
    failing: AtomicBool,
    requests: Mutex<Vec<TokenRequest>>,
    notify: Notify,
}

/// A running token endpoint; dropped with the test's runtime.
#[derive(Clone)]
pub struct OAuthServer {
    /// The token endpoint URL (`http://127.0.0.1:PORT/token`).
    pub token_url: String,
    inner: Arc<Inner>,
}

impl OAuthServer {
    /// Starts a token endpoint accepting only `client_id`/`client_secret`, issuing tokens that
    /// expire in `expires_in` seconds (`None`: no `expires_in` in the answer).
    pub async fn start(client_id: &str, client_secret: &str, expires_in: Option<u64>) -> Self {
        let inner = Arc::new(Inner {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            expires_in,
            failing: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            notify: Notify::new(),
        });
        let app = Router::new()
            .route("/token", post(token))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let token_url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        OAuthServer { token_url, inner }
    }

    /// From now on, answers every request with a 500 (`true`) or serves tokens again (`false`).
    pub fn fail(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Token requests received so far.
    pub fn count(&self) -> usize {
        self.inner.requests.lock().unwrap().len()
    }

    /// Waits until `done` holds over the requests, or panics at the deadline.
    pub async fn wait_until(
        &self,
        deadline: Duration,
        what: &str,
        done: impl Fn(&[TokenRequest]) -> bool,
    ) {
        let end = Instant::now() + deadline;
        loop {
            let notified = self.inner.notify.notified();
            if done(&self.requests()) {
                return;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                panic!(
                    "timed out after {deadline:?} waiting for {what}; {} token requests",
                    self.count()
                );
            }
        }
    }
}

/// `application/x-www-form-urlencoded` decoding of one component.
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn parse_basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn token(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let basic = parse_basic(&headers);
    let form = parse_form(&body);
    let grant_ok = form
        .iter()
        .any(|(k, v)| k == "grant_type" && v == "client_credentials");
    let credentials_ok = basic
        .as_ref()
        .is_some_and(|(id, secret)| *id == inner.client_id && *secret == inner.client_secret);
    let mut requests = inner.requests.lock().unwrap();
    let (status, issued, response) = if inner.failing.load(Ordering::SeqCst) {
        (
            500,
            None,
            (StatusCode::INTERNAL_SERVER_ERROR, "token endpoint down").into_response(),
        )
    } else if !credentials_ok {
        (
            401,
            None,
            json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"invalid_client"}"#.to_owned(),
            ),
        )
    } else if !grant_ok {
        (
            400,
            None,
            json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"unsupported_grant_type"}"#.to_owned(),
            ),
        )
    } else {
        let issued = requests.iter().filter(|r| r.issued.is_some()).count() + 1;
        let token = format!("tok-{issued}");
        let mut answer = serde_json::json!({ "access_token": token, "token_type": "Bearer" });
        if let Some(expires_in) = inner.expires_in {
            answer["expires_in"] = expires_in.into();
        }
        (200, Some(token), json(StatusCode::OK, answer.to_string()))
    };
    requests.push(TokenRequest {
        at,
        basic,
        form,
        status,
        issued,
    });
    drop(requests);
    inner.notify.notify_waiters();
    response
}
