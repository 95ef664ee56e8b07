//! The admin API: the organization registry over HTTP, on its own listener (`[admin] listen`,
//! off by default).
//!
//! - `PUT /v1/organizations/{id}`: registers or changes an organization. The body is its
//!   settings with the keys of an `[organizations.<id>]` section, as a JSON object (or TOML text
//!   with `content-type: application/toml`). 201 when created, 200 when changed or unchanged
//!   (writing the same value again writes nothing); 400 with `check-config`'s error (`key`,
//!   `error`, `example`) when it does not validate.
//! - `GET /v1/organizations/{id}`: its value as stored (secret references, never values).
//! - `GET /v1/organizations?limit=N&after=ID`: a page in id order, with the `next` cursor.
//! - `DELETE /v1/organizations/{id}`: removes it (200 whether it was registered or not).
//! - `POST /v1/organizations/{id}/test`: sends a signed `ping` to its endpoint now (OAuth,
//!   headers and signatures as for an event) and reports the outcome.
//!
//! Guarantees: every request needs `authorization: Bearer <token>` (from the token's secret
//! reference; compared in constant time), else 401; a write answers once this replica has
//! applied it, so the next request here sees it; responses and logs never hold a secret value.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{AdminSettings, ConfigError};
use crate::delivery::{AttemptOutcome, Deliverer};
use crate::registry::{Registry, WriteError, Writer, Written};
use crate::webhook::{EventType, WebhookEvent};

/// What the handlers share.
pub struct Admin {
    registry: Arc<Registry>,
    writer: Writer,
    deliverer: Deliverer,
}

impl Admin {
    pub fn new(registry: Arc<Registry>, writer: Writer, deliverer: Deliverer) -> Arc<Admin> {
        Arc::new(Admin {
            registry,
            writer,
            deliverer,
        })
    }
}

/// Most organizations one page lists.
const MAX_PAGE: usize = 1000;

/// Binds `settings.listen` (fails at start if it cannot) and serves until `stop`, from when
/// `ready` completes (the registry read to its end): until then connections wait in the
/// listener's backlog, so no answer comes from a view older than the start.
pub async fn serve(
    settings: &AdminSettings,
    admin: Arc<Admin>,
    ready: impl std::future::Future<Output = ()> + Send + 'static,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let address = listener.local_addr()?;
    let token: Arc<[u8; 32]> = Arc::new(Sha256::digest(settings.token.expose_secret()).into());
    let app = Router::new()
        .route("/v1/organizations", get(list))
        .route("/v1/organizations/{id}", get(read).put(put).delete(remove))
        .route("/v1/organizations/{id}/test", post(test))
        .with_state(admin)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let token = token.clone();
            async move { authorize(&token, request, next).await }
        }));
    tokio::spawn(async move {
        tokio::select! {
            _ = ready => {}
            _ = stop.cancelled() => return,
        }
        let shutdown = async move { stop.cancelled().await };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "admin API stopped");
        }
    });
    Ok(address)
}

async fn authorize(token: &[u8; 32], request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim())));
    // Digests compared byte by byte without an early exit: no timing hint about the token.
    let matches = given.is_some_and(|given| {
        given
            .iter()
            .zip(token.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if !matches {
        return error(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required: authorization: Bearer <the admin token>",
        );
    }
    next.run(request).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn read(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    match admin.registry.get(&id) {
        Some(entry) => Json(entry.to_json(&id)).into_response(),
        None if admin.registry.in_file(&id) => error(
            StatusCode::NOT_FOUND,
            format!("organization {id} is defined in the config file, not in the registry"),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no organization {id} in the registry"),
        ),
    }
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    after: Option<String>,
}

async fn list(State(admin): State<Arc<Admin>>, Query(page): Query<Page>) -> Response {
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let entries = admin.registry.page(page.after.as_deref(), limit + 1);
    let more = entries.len() > limit;
    let shown: Vec<_> = entries.iter().take(limit).collect();
    let next = more
        .then(|| shown.last().map(|(id, _)| id.clone()))
        .flatten();
    Json(json!({
        "organizations": shown.iter().map(|(id, e)| e.to_json(id)).collect::<Vec<_>>(),
        "next": next,
    }))
    .into_response()
}

async fn put(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/toml"));
    let object = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !toml && !object {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "organizations.{id}: expected a JSON object of the organization's settings (or \
                 TOML text with content-type: application/toml). Example: \
                 {{\"url\": \"https://hooks.example.com/consent\", \"signing_secret\": {{\"env\": \"ACME_SIGNING_SECRET\"}}}}"
            ),
        );
    }
    match admin.writer.put(&id, &body).await {
        Ok(written) => {
            let status = match written {
                Written::Put { created: true, .. } => StatusCode::CREATED,
                _ => StatusCode::OK,
            };
            tracing::info!(organization_id = %id, ?written, "organization put through the admin API");
            let entry = admin.registry.get(&id);
            let mut body = entry.map_or(json!({ "id": id }), |e| e.to_json(&id));
            body["changed"] = json!(!matches!(written, Written::Unchanged));
            (status, Json(body)).into_response()
        }
        Err(e) => write_error(e),
    }
}

fn write_error(e: WriteError) -> Response {
    match e {
        WriteError::Invalid(config) => {
            let example = match &config {
                ConfigError::Invalid { example, .. } => Some(example.clone()),
                _ => None,
            };
            (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({ "error": config.to_string(), "key": config.key(), "example": example }),
                ),
            )
                .into_response()
        }
        WriteError::Value { .. } => error(StatusCode::BAD_REQUEST, e.to_string()),
        WriteError::Kafka(_) | WriteError::NotApplied(_) => {
            tracing::warn!(error = %e, "admin API write failed");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

async fn remove(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    match admin.writer.delete(&id).await {
        Ok(written) => {
            tracing::info!(organization_id = %id, ?written, "organization deleted through the admin API");
            let removed = matches!(written, Written::Removed { .. });
            Json(json!({
                "id": id,
                "removed": removed,
                "defined_in_file": admin.registry.in_file(&id),
            }))
            .into_response()
        }
        Err(e) => write_error(e),
    }
}

async fn test(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let Some(settings) = admin.registry.settings_of(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no organization {id} here (registry or config file)"),
        );
    };
    let endpoint = admin.deliverer.endpoint(&id, settings);
    let ping = ping(&id);
    let attempt = admin.deliverer.attempt(&endpoint, &ping).await;
    let status = attempt.outcome.status();
    Json(json!({
        "id": id,
        "webhook_id": ping.id,
        "delivered": matches!(attempt.outcome, AttemptOutcome::Status { code, .. } if (200..300).contains(&code)),
        "status": status,
        "outcome": attempt.outcome.code(),
        "duration_ms": attempt.duration.as_millis() as u64,
    }))
    .into_response()
}

/// A `ping` webhook: the event envelope with type `ping` and no parameters, signed and
/// authorized like any event. Its event type field is not sent (only filters read it).
fn ping(organization_id: &str) -> WebhookEvent {
    let now = Utc::now();
    let id = format!("ping_{}", uuid::Uuid::new_v4().simple());
    let body = json!({
        "id": id,
        "type": "ping",
        "organization_id": organization_id,
        "created_at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "parameters": {},
    });
    WebhookEvent {
        id,
        event_type: EventType::ALL[0],
        organization_id: organization_id.to_owned(),
        regulation: String::new(),
        change_id: String::new(),
        occurred_at: now,
        body: serde_json::to_vec(&body).expect("JSON serializes").into(),
    }
}
