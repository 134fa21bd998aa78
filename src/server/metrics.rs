//! Prometheus metrics (text format on the health port's `/metrics`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub kind: &'static str,
    pub operation: &'static str,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Every metric the server exports. Cheap to share: each field is an `Arc` inside.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram>,
    in_flight: Gauge,
    bad_requests: Family<EndpointLabels, Counter>,
    panics: Counter,
    shed: Counter,
    cache_dgds: Gauge,
    cache_synced: Gauge,
    live_lookups: Family<ResultLabels, Counter>,
    cert_expiry: Gauge<f64, AtomicU64>,
    cert_reloads: Family<ResultLabels, Counter>,
    cert_last_reload_ok: Gauge,
    claims: Family<ClaimLabels, Counter>,
    claim_latency: Histogram,
    claims_collected: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    result: &'static str,
    dry_run: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency buckets, in seconds: 100 µs to 5 s.
const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dynamo_tenancy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by endpoint, kind, operation and verdict",
            requests.clone(),
        );
        let latency =
            Family::<EndpointLabels, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "admission_duration_seconds",
            "Time from request body received to response ready",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "admission_in_flight",
            "Admission requests being answered",
            in_flight.clone(),
        );
        let bad_requests = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "admission_bad_requests",
            "Requests refused with a 4xx before review",
            bad_requests.clone(),
        );
        let panics = Counter::default();
        registry.register(
            "handler_panics",
            "Handler panics turned into 500 answers",
            panics.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "admission_shed",
            "Requests refused with 503 because the server was at capacity",
            shed.clone(),
        );
        let cache_dgds = Gauge::default();
        registry.register("cache_dgds", "DGDs in the cache", cache_dgds.clone());
        let cache_synced = Gauge::default();
        registry.register(
            "cache_synced",
            "1 once the cache holds the initial list",
            cache_synced.clone(),
        );
        let live_lookups = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cache_live_lookups",
            "Live GETs of a DGD missing from the cache, by result",
            live_lookups.clone(),
        );
        let cert_expiry = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time)",
            cert_expiry.clone(),
        );
        let cert_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Certificate reloads, by result",
            cert_reloads.clone(),
        );
        let cert_last_reload_ok = Gauge::default();
        cert_last_reload_ok.set(1);
        registry.register(
            "certificate_last_reload_success",
            "1 if the last certificate reload succeeded (or none happened yet), 0 if it was refused",
            cert_last_reload_ok.clone(),
        );
        let claims = Family::<ClaimLabels, Counter>::default();
        registry.register(
            "claims",
            "Path claims made or checked (dry run) for DGD admissions, by result",
            claims.clone(),
        );
        let claim_latency = Histogram::new(BUCKETS);
        registry.register(
            "claim_duration_seconds",
            "Time spent claiming a path at the API server",
            claim_latency.clone(),
        );
        let claims_collected = Counter::default();
        registry.register(
            "claims_collected",
            "Claims deleted by the collector because their DGD was gone",
            claims_collected.clone(),
        );
        Metrics {
            registry,
            claims,
            claim_latency,
            claims_collected,
            requests,
            latency,
            in_flight,
            bad_requests,
            panics,
            shed,
            cache_dgds,
            cache_synced,
            live_lookups,
            cert_expiry,
            cert_reloads,
            cert_last_reload_ok,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn request(&self, labels: RequestLabels, seconds: f64) {
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: labels.endpoint,
            })
            .observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    pub fn bad_request(&self, endpoint: &'static str) {
        self.bad_requests
            .get_or_create(&EndpointLabels { endpoint })
            .inc();
    }

    /// Counts a request as in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn panicked(&self) {
        self.panics.inc();
    }

    pub fn shed(&self) {
        self.shed.inc();
    }

    pub fn cache(&self, size: usize, synced: bool) {
        self.cache_dgds.set(size as i64);
        self.cache_synced.set(synced.into());
    }

    pub fn live_lookup(&self, result: &'static str) {
        self.live_lookups
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn cert_loaded(&self, not_after: i64) {
        self.cert_expiry.set(not_after as f64);
    }

    pub fn cert_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.cert_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        self.cert_last_reload_ok.set(ok.into());
    }
}

impl Metrics {
    pub fn claim(&self, result: &'static str, dry_run: bool, seconds: f64) {
        let dry_run = if dry_run { "true" } else { "false" };
        self.claims
            .get_or_create(&ClaimLabels { result, dry_run })
            .inc();
        self.claim_latency.observe(seconds);
    }

    pub fn claim_collected(&self) {
        self.claims_collected.inc();
    }
}

pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
