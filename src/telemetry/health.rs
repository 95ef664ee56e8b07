//! The operations endpoint: `/healthz`, `/readyz` and `/metrics` on one port.
//!
//! - `/healthz`: 200 while the process serves requests at all (liveness).
//! - `/readyz`: 200 while the consumer has partitions assigned, or is in the group waiting for
//!   them with a live broker connection, and is not draining; 503 otherwise (readiness).
//! - `/metrics`: the Prometheus text format: the service's metrics, then `process_*`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::ingest::IngestState;

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    ingest: Arc<IngestState>,
    /// Called before each scrape, to bring pull-style values (token counters) up to date.
    refresh: Arc<dyn Fn() + Send + Sync>,
}

/// Binds `listen` (fails at start if it cannot) and serves until `stop` is cancelled. Returns
/// the bound address (useful when `listen` asks for port 0).
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    ingest: Arc<IngestState>,
    refresh: Arc<dyn Fn() + Send + Sync>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Health {
            metrics,
            ingest,
            refresh,
        });
    tokio::spawn(async move {
        let shutdown = async move { stop.cancelled().await };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "operations endpoint stopped");
        }
    });
    Ok(address)
}

/// Whether the instance should receive traffic (and count as a live replica).
pub fn is_ready(ingest: &IngestState) -> bool {
    !ingest.draining.load(Ordering::SeqCst)
        && (ingest.assigned.load(Ordering::SeqCst) || ingest.broker_up.load(Ordering::SeqCst))
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if is_ready(&health.ingest) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text(State(health): State<Health>) -> impl IntoResponse {
    (health.refresh)();
    health
        .metrics
        .ready
        .set(i64::from(is_ready(&health.ingest)));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        health.metrics.render() + &super::process::render(),
    )
}
