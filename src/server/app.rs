//! The admission endpoints: `POST /mutate` and `POST /validate`. Thin: check the HTTP envelope,
//! parse, let the cache answer a pod's DGD (one live GET on a miss), call the engine, answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::convert::Infallible;
use std::task::Poll;

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tower::Service;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, Version, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};

use tower_http::catch_panic::CatchPanicLayer;

use super::metrics::{Metrics, RequestLabels};
use crate::cache::DgdCache;
use crate::cache::lookup::{LiveLookup, Lookup};
use crate::claims::Claims;
use crate::engine::pod::DGD_LABEL;
use crate::engine::review::{encode_review, namespace_of, parse_request, respond};
use crate::engine::{ClusterView, Context, Decision, DgdRecord, Phase, Policy, Subject, decide};

/// Path of the mutating endpoint (the webhook configurations' `clientConfig.service.path`).
pub const MUTATE_PATH: &str = "/mutate";
/// Path of the validating endpoint.
pub const VALIDATE_PATH: &str = "/validate";
/// Largest accepted body: the API server's own request limit is 3 MiB, objects up to 1.5 MiB in
/// etcd, and a review carries the object twice on UPDATE.
pub const MAX_BODY: usize = 7 * 1024 * 1024;
/// Used when the API server sends no `?timeout=` (its default is 10 s; we keep well inside it).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time kept back from the API server's deadline for the answer to travel.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);
/// A live GET never takes more than this, whatever the deadline.
const MAX_LOOKUP: Duration = Duration::from_secs(2);
/// Kept back from the deadline by a claim, so that its denial is answered rather than cut off.
const CLAIM_MARGIN: Duration = Duration::from_millis(100);

pub struct AppState {
    pub cache: Arc<DgdCache>,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    pub lookup: Option<LiveLookup>,
    /// Claims through the API server (SPEC section 7); `None` in `serve --dev` and `--no-claims`.
    pub claims: Option<Claims>,
    /// `serve --dev`: the DGDs this server admitted are the registry.
    pub dev_registry: bool,
    pub draining: Arc<AtomicBool>,
    /// Reviews answered at once; past this, new ones are shed (`--max-in-flight`).
    pub max_in_flight: usize,
}

impl AppState {
    /// A server with no cluster, claims or draining: `cache` is all it knows. For the fuzzers
    /// and unit tests, which drive the router directly.
    pub fn standalone(cache: Arc<DgdCache>, max_in_flight: usize) -> Self {
        AppState {
            cache,
            policy: Policy::default(),
            metrics: Arc::new(Metrics::new()),
            lookup: None,
            claims: None,
            dev_registry: false,
            draining: Arc::new(AtomicBool::new(false)),
            max_in_flight,
        }
    }
}

pub fn router(state: Arc<AppState>) -> Admission {
    let slots = Arc::new(Semaphore::new(state.max_in_flight));
    let metrics = state.metrics.clone();
    let routes = Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route(VALIDATE_PATH, post(validate));
    Admission {
        router: with_layers(routes, state),
        slots,
        metrics,
    }
}

/// The admission endpoints behind their load limit. A review counts from the moment hyper hands
/// it over (an HTTP/2 stream's headers), not from when its task first runs: when the CPU is
/// short, reviews queue in the runtime, where a limit inside the handler never sees them. Past
/// the limit a review is refused at once, before its body is read: 503 with `Retry-After`, so the
/// API server applies the webhook's failurePolicy now instead of after its timeout, and the
/// reviews being served keep their latency.
#[derive(Clone)]
pub struct Admission {
    router: Router,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl<B> Service<axum::http::Request<B>> for Admission
where
    Router: Service<axum::http::Request<B>, Response = Response, Error = Infallible>,
    <Router as Service<axum::http::Request<B>>>::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        // An axum Router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.shed();
            let mut response = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "the webhook is at capacity; retry",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Box::pin(std::future::ready(Ok(response)));
        };
        let answer = self.router.call(req);
        Box::pin(async move {
            let response = answer.await;
            drop(slot);
            response
        })
    }
}

/// Body limit, panic safety net and draining behaviour around `routes`.
fn with_layers(routes: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    let draining = state.draining.clone();
    let metrics = state.metrics.clone();
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(CatchPanicLayer::custom(
            move |_: Box<dyn std::any::Any + Send + 'static>| {
                metrics.panicked();
                tracing::error!("a review handler panicked; answered 500");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error while reviewing; see the webhook's log",
                )
            },
        ))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let draining = draining.clone();
            close_when_draining(draining, req, next)
        }))
        .with_state(state)
}

/// While draining, HTTP/1 responses carry `Connection: close` so clients move to another replica.
/// (HTTP/2 connections get a GOAWAY from the graceful shutdown instead.)
async fn close_when_draining(draining: Arc<AtomicBool>, req: Request, next: Next) -> Response {
    let http1 = req.version() < Version::HTTP_2;
    let mut response = next.run(req).await;
    if http1 && draining.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    within_deadline(state, Phase::Mutate, uri, headers, body).await
}

async fn validate(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    within_deadline(state, Phase::Validate, uri, headers, body).await
}

/// Answers before the API server's deadline, or fails fast with a clear error of our own rather
/// than letting the API server time out.
async fn within_deadline(
    state: Arc<AppState>,
    phase: Phase,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let budget = request_timeout(&uri).saturating_sub(DEADLINE_MARGIN);
    let metrics = state.metrics.clone();
    match tokio::time::timeout(budget, review(state, phase, uri, headers, body)).await {
        Ok(response) => response,
        Err(_) => {
            metrics.bad_request(endpoint(phase));
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no answer within the API server's deadline ({budget:?}); retry"),
            )
        }
    }
}

/// An error answer: a Kubernetes `Status` object, which is what API clients expect to read.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": status.canonical_reason().unwrap_or("Error").replace(' ', ""),
        "code": status.as_u16(),
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// The API server's `?timeout=` (a Go duration such as `5s`), capped at its 30 s maximum.
fn request_timeout(uri: &Uri) -> Duration {
    uri.query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(parse_go_duration)
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(Duration::from_secs(30))
}

/// Parses Go's `time.Duration` text: a sequence of numbers with units h, m, s, ms, us/µs, ns.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

fn endpoint(phase: Phase) -> &'static str {
    match phase {
        Phase::Mutate => "mutate",
        Phase::Validate => "validate",
    }
}

async fn review(
    state: Arc<AppState>,
    phase: Phase,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let _in_flight = state.metrics.in_flight();
    let endpoint = endpoint(phase);
    let deadline = started + request_timeout(&uri).saturating_sub(DEADLINE_MARGIN);
    let refuse = |status: StatusCode, message: &str| {
        state.metrics.bad_request(endpoint);
        tracing::warn!(endpoint, status = status.as_u16(), "{message}");
        error_response(status, message)
    };
    if !is_json(&headers) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/json (an admission.k8s.io/v1 AdmissionReview)",
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body is larger than {MAX_BODY} bytes"),
            );
        }
        Err(rejection) => return refuse(rejection.status(), &rejection.body_text()),
    };
    let req = match parse_request(&body) {
        Ok(req) => req,
        Err(err) => return refuse(StatusCode::BAD_REQUEST, &err.to_string()),
    };
    if let Some(lookup) = &state.lookup {
        resolve_pod_dgd(&state, lookup, &req, deadline).await;
    }
    let decision = {
        let view = state.cache.view();
        let ctx = Context {
            view: &*view,
            policy: &state.policy,
        };
        decide(&req, phase, &ctx)
    };
    let mut decision = match decision {
        Ok(decision) => decision,
        Err(err) => return refuse(StatusCode::BAD_REQUEST, &err.to_string()),
    };
    if let (Some(claims), Some(claim)) = (&state.claims, decision.claim.take()) {
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(CLAIM_MARGIN);
        if let Err(denial) = claims.claim(&claim, req.dry_run, budget).await {
            decision.findings.add(denial, &state.policy);
        }
    }
    if state.dev_registry && phase == Phase::Validate {
        record_admitted(&state.cache, &req, &decision);
    }
    let response = respond(&req, &decision);
    let body = encode_review(&response, false);
    let elapsed = started.elapsed();
    let verdict = if response.allowed {
        "allowed"
    } else {
        "denied"
    };
    state.metrics.request(
        RequestLabels {
            endpoint,
            kind: kind_label(&decision),
            operation: operation_label(&req.operation),
            verdict,
        },
        elapsed.as_secs_f64(),
    );
    log_review(endpoint, &req, &decision, verdict, elapsed);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A pod CREATE whose DGD the cache lacks: one live GET, bounded by the request's deadline. A
/// found DGD joins the cache (the watch will confirm it); any failure leaves the miss path.
async fn resolve_pod_dgd(
    state: &AppState,
    lookup: &LiveLookup,
    req: &AdmissionRequest<DynamicObject>,
    deadline: Instant,
) {
    if req.kind.kind != "Pod" || !req.kind.group.is_empty() || req.operation != Operation::Create {
        return;
    }
    let Some(obj) = &req.object else { return };
    let Some(name) = obj.metadata.labels.as_ref().and_then(|l| l.get(DGD_LABEL)) else {
        return;
    };
    let namespace = namespace_of(req);
    if state.cache.view().dgd(namespace, name).is_some() {
        return;
    }
    let budget = deadline
        .saturating_duration_since(Instant::now())
        .min(MAX_LOOKUP);
    match lookup.dgd(namespace, name, budget).await {
        Lookup::Found(record) => {
            state.metrics.live_lookup("found");
            state.cache.upsert(record);
        }
        Lookup::Absent => state.metrics.live_lookup("absent"),
        Lookup::Failed(err) => {
            state.metrics.live_lookup("failed");
            tracing::warn!(namespace, dgd = %name, error = %err, "live DGD lookup failed; taking the miss path");
        }
    }
}

/// `serve --dev`: the registry is the DGDs this server admitted (non-dry-run CREATE or UPDATE that
/// passed validation), less those it was told were deleted.
fn record_admitted(cache: &DgdCache, req: &AdmissionRequest<DynamicObject>, decision: &Decision) {
    let is_dgd = req.kind.group == "nvidia.com" && req.kind.kind == "DynamoGraphDeployment";
    if !is_dgd || req.dry_run || req.sub_resource.is_some() {
        return;
    }
    let namespace = namespace_of(req);
    match (&req.operation, &req.object) {
        (Operation::Delete, _) => cache.remove(namespace, &req.name),
        (Operation::Create | Operation::Update, Some(obj))
            if decision.subject == Some(Subject::Dgd) && !decision.findings.denied() =>
        {
            // Recorded where the engine judged it: the request's namespace and name are the API
            // server's, whatever the object says.
            let mut obj = obj.clone();
            obj.metadata.namespace = Some(namespace.to_owned());
            if obj.metadata.name.as_deref().is_none_or(str::is_empty) {
                obj.metadata.name = Some(req.name.clone());
            }
            cache.upsert(DgdRecord::from_object(&obj, namespace));
        }
        _ => {}
    }
}

fn kind_label(decision: &Decision) -> &'static str {
    match decision.subject {
        Some(Subject::Dgd) => "DynamoGraphDeployment",
        Some(Subject::Pod) => "Pod",
        _ => "other",
    }
}

fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// One line per request. Never the body, never certificate material.
fn log_review(
    endpoint: &str,
    req: &AdmissionRequest<DynamicObject>,
    decision: &Decision,
    verdict: &str,
    elapsed: Duration,
) {
    let rules: Vec<&str> = decision
        .findings
        .rule_ids()
        .into_iter()
        .map(|r| r.as_str())
        .collect();
    let name = if req.name.is_empty() {
        req.object
            .as_ref()
            .and_then(|o| o.metadata.generate_name.as_deref())
            .unwrap_or("")
    } else {
        &req.name
    };
    let skipped = match &decision.subject {
        Some(Subject::Skipped(reason)) => reason.as_str(),
        _ => "",
    };
    // The API server sends UUIDs and names of at most 253 characters; a hand-made review may not.
    let uid = bounded(&req.uid);
    let namespace = bounded(req.namespace.as_deref().unwrap_or(""));
    tracing::info!(
        endpoint,
        uid,
        kind = bounded(&req.kind.kind),
        object = %format_args!("{namespace}/{}", bounded(name)),
        operation = operation_label(&req.operation),
        dry_run = req.dry_run,
        verdict,
        rules = %rules.join(","),
        skipped,
        latency_us = elapsed.as_micros() as u64,
        "review"
    );
}

/// `text` cut to the longest name Kubernetes allows, so one log line stays one short line.
fn bounded(text: &str) -> &str {
    match text.char_indices().nth(253) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_counted_500() {
        use tower::ServiceExt;
        let state = Arc::new(AppState::standalone(Arc::new(DgdCache::synced_empty()), 8));
        let routes = Router::new().route(
            "/boom",
            post(|| async {
                let fail = true;
                if fail {
                    panic!("boom");
                }
                "unreachable"
            }),
        );
        let app = with_layers(routes, state.clone());
        for _ in 0..2 {
            let request = Request::post("/boom")
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(status["code"], 500);
        }
        assert!(
            state
                .metrics
                .encode()
                .contains("dynamo_tenancy_handler_panics_total 2"),
            "{}",
            state.metrics.encode()
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("5x"), None);
        let uri: Uri = "/mutate?timeout=5s".parse().unwrap();
        assert_eq!(request_timeout(&uri), Duration::from_secs(5));
        let uri: Uri = "/mutate?timeout=99m".parse().unwrap();
        assert_eq!(request_timeout(&uri), Duration::from_secs(30));
        let uri: Uri = "/mutate".parse().unwrap();
        assert_eq!(request_timeout(&uri), DEFAULT_TIMEOUT);
    }
}
