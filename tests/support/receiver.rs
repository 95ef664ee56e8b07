//! A real HTTP webhook receiver (axum on 127.0.0.1) that records every request and answers
//! with a status the test controls: a fixed one, a scripted sequence of replies taken one per
//! request (then the fixed one again), and 401 for requests carrying a rejected bearer token.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::sync::Notify;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    pub fn event_id(&self) -> String {
        self.json()["id"].as_str().unwrap().to_owned()
    }
    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }
}

/// One scripted reply: a status and, optionally, a `Retry-After` header value.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after: None,
        }
    }
    pub fn retry_after(mut self, value: &str) -> Reply {
        self.retry_after = Some(value.to_owned());
        self
    }
}

#[derive(Default)]
struct Inner {
    received: Mutex<Vec<Received>>,
    notify: Notify,
    status: AtomicU16,
    /// Replies taken one per request before `status` applies again.
    script: Mutex<VecDeque<Reply>>,
    /// Bearer tokens answered with 401.
    rejected_tokens: Mutex<HashSet<String>>,
    /// Milliseconds each request waits before it is answered (and recorded); 0 = none.
    delay_ms: AtomicU64,
}

/// A running receiver; dropped with the test's runtime.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts a receiver answering `status` to every POST.
    pub async fn start(status: u16) -> Receiver {
        let inner = Arc::new(Inner::default());
        inner.status.store(status, Ordering::SeqCst);
        let app = Router::new()
            .route("/{*path}", post(handle))
            .route("/", post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, inner }
    }

    /// Changes the status answered from now on.
    pub fn answer(&self, status: u16) {
        self.inner.status.store(status, Ordering::SeqCst);
    }

    /// Delays every answer from now on by `delay` (a slow endpoint). A request is recorded
    /// only once answered, so one whose client went away during the delay is not counted.
    pub fn delay(&self, delay: Duration) {
        self.inner
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Waits until a new request is recorded or `within` passes; returns whether one was.
    pub async fn changed(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.inner.notify.notified())
            .await
            .is_ok()
    }

    /// Queues replies used one per request, in order, before the fixed status applies again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    /// Answers 401 to every request whose `Authorization` is `Bearer <token>`.
    pub fn reject_bearer(&self, token: &str) {
        self.inner
            .rejected_tokens
            .lock()
            .unwrap()
            .insert(token.to_owned());
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Requests answered with a 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits until `done` holds over what was received, or panics at the deadline.
    pub async fn wait_until(
        &self,
        deadline: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) {
        let end = Instant::now() + deadline;
        loop {
            let notified = self.inner.notify.notified();
            if done(&self.received()) {
                return;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                let got = self.received();
                panic!(
                    "timed out after {deadline:?} waiting for {what}; {} requests received",
                    got.len()
                );
            }
        }
    }

    /// Waits until every id of `want` was answered with a 2xx, or panics at the deadline.
    pub async fn wait_delivered(&self, want: &HashSet<String>, deadline: Duration, what: &str) {
        self.wait_until(deadline, what, |received| {
            let got: HashSet<String> = received
                .iter()
                .filter(|r| (200..300).contains(&r.status))
                .map(Received::event_id)
                .collect();
            want.is_subset(&got)
        })
        .await;
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let delay = inner.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let at = Instant::now();
    let rejected = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| inner.rejected_tokens.lock().unwrap().contains(token));
    let reply = if rejected {
        Reply::status(401)
    } else {
        inner
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Reply::status(inner.status.load(Ordering::SeqCst)))
    };
    let status = reply.status;
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    inner.received.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
        status,
        at,
    });
    inner.notify.notify_waiters();
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(value) = reply.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, value.parse().unwrap());
    }
    response
}
