//! The plain-HTTP health port: `/healthz` (alive), `/readyz` (certificate loaded, cache synced,
//! not draining) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::metrics::Metrics;
use crate::cache::DgdCache;

/// Liveness: answers while the process runs.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness: certificate loaded, DGD cache synced, not shutting down.
pub const READYZ_PATH: &str = "/readyz";
/// Prometheus text.
pub const METRICS_PATH: &str = "/metrics";

pub struct Health {
    pub cache: Arc<DgdCache>,
    pub metrics: Arc<Metrics>,
    pub cert_loaded: Arc<AtomicBool>,
    pub draining: Arc<AtomicBool>,
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route(HEALTHZ_PATH, get(|| async { "ok\n" }))
        .route(READYZ_PATH, get(readyz))
        .route(METRICS_PATH, get(metrics))
        .with_state(health)
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let problems: Vec<&str> = [
        (health.draining.load(Ordering::Relaxed), "shutting down"),
        (
            !health.cert_loaded.load(Ordering::Relaxed),
            "no serving certificate",
        ),
        (!health.cache.is_synced(), "DGD cache not synced"),
    ]
    .into_iter()
    .filter_map(|(bad, why)| bad.then_some(why))
    .collect();
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> Response {
    health
        .metrics
        .cache(health.cache.len(), health.cache.is_synced());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
        .into_response()
}
