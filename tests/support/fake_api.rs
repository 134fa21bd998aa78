//! An in-process fake kube-apiserver for integration tests, modelled on the answers of a real
//! kube-apiserver v1.36 captured in `shared/captured/api/` (see its README).
//!
//! It serves plain HTTP on 127.0.0.1 and speaks the subset of the API that kube-rs 5 uses here:
//! DynamoGraphDeployments (`nvidia.com/v1alpha1`, a CRD, so unstructured JSON with sorted keys)
//! and Leases (`coordination.k8s.io/v1`, a built-in type, so Go struct field order). What it
//! copies from the real server:
//!
//! - one global, increasing resourceVersion (an etcd revision) shared by every kind, so a LIST's
//!   `metadata.resourceVersion` may be newer than all of its items;
//! - LIST paging with `limit`/`continue` (an opaque base64 token like the real one, a consistent
//!   snapshot at the first page's RV, `remainingItemCount` on non-last pages, `"continue":""` on
//!   the last page of a CRD list);
//! - WATCH as `200` + chunked newline-delimited events, replay from an event log after the given
//!   RV, BOOKMARKs carrying only apiVersion/kind/metadata.resourceVersion, a BOOKMARK 2 s before
//!   `timeoutSeconds` and a clean end of the stream at `timeoutSeconds`, the streaming-list form
//!   (`sendInitialEvents=true`) with its `k8s.io/initial-events-end` BOOKMARK, DELETED events that
//!   carry the last state with the deletion's RV, and "too old resource version" as a `200` stream
//!   holding one ERROR event with a 410 Status;
//! - `Status` bodies (kind, apiVersion, metadata, status, message, reason, details, code in that
//!   order), `Content-Type: application/json` everywhere, `Content-Length` under 2 KiB and chunked
//!   framing above (like Go's net/http), Go's JSON string escaping;
//! - create (201, uid, creationTimestamp, generation for CRs, managedFields, dry-run without a
//!   resourceVersion), AlreadyExists, optimistic concurrency on PUT (409 Conflict), no-op updates
//!   that keep the RV, merge/JSON patches, DELETE answering a success `Status`, and finalizers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Public handle
// ---------------------------------------------------------------------------------------------

/// A running fake API server. Cheap to clone; every clone talks to the same server.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Inner>,
}

impl FakeApi {
    /// Binds 127.0.0.1:0 and serves plain HTTP from a task on the current tokio runtime.
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake API server binds 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let inner = Arc::new(Inner {
            addr,
            store: Mutex::new(Store::new()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi { inner }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Writes a kubeconfig whose current context points at this server with a user that has no
    /// credentials (default namespace `default`).
    pub fn write_kubeconfig(&self, path: &Path) {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).expect("kubeconfig directory");
        }
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake-api\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: fake-api\n  user: {{}}\n\
             contexts:\n\
             - name: fake-api\n  context:\n    cluster: fake-api\n    user: fake-api\n    namespace: default\n\
             current-context: fake-api\n\
             preferences: {{}}\n",
            url = self.url()
        );
        std::fs::write(path, text).expect("kubeconfig written");
    }

    /// Creates a DGD (namespace from `metadata.namespace`, else `default`) as `POST` would: sets
    /// uid, resourceVersion, creationTimestamp, generation 1 and managedFields, emits ADDED.
    /// Panics if it exists or is invalid.
    pub fn create_dgd(&self, obj: Value) -> Value {
        let ns = namespace_of(&obj);
        self.inner
            .lock()
            .create(Kind::Dgd, &ns, obj, &WriteCtx::helper())
            .unwrap_or_else(|e| panic!("create_dgd: {}", render(&e.status)))
    }

    /// Replaces a DGD by namespace/name (any resourceVersion in `obj` is ignored), bumps the RV
    /// (and generation if anything outside metadata/status changed) and emits MODIFIED. An
    /// identical object is a no-op, as on the real server. Panics if the DGD does not exist.
    pub fn update_dgd(&self, obj: Value) -> Value {
        let ns = namespace_of(&obj);
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        self.inner
            .lock()
            .replace(Kind::Dgd, &ns, &name, obj, &WriteCtx::helper())
            .unwrap_or_else(|e| panic!("update_dgd: {}", render(&e.status)))
    }

    /// Deletes a DGD as `DELETE` would: emits DELETED carrying the last state with the deletion's
    /// RV. With finalizers it only sets deletionTimestamp (MODIFIED), like the real server.
    /// Panics if the DGD does not exist.
    pub fn delete_dgd(&self, namespace: &str, name: &str) {
        self.inner
            .lock()
            .delete(
                Kind::Dgd,
                namespace,
                name,
                &Value::Null,
                &WriteCtx::helper(),
            )
            .unwrap_or_else(|e| panic!("delete_dgd: {}", render(&e.status)));
    }

    /// Sends a BOOKMARK at the current RV to every open watch that asked for bookmarks.
    pub fn bookmark(&self) {
        let mut st = self.inner.lock();
        let rv = st.rv;
        for w in st.watchers.iter_mut().filter(|w| w.bookmarks) {
            w.last_rv = rv;
            let _ = w.tx.send(Msg::Line(bookmark_line(w.kind, rv, false)));
        }
    }

    /// Ends every open watch stream normally (clean end of the chunked body).
    pub fn drop_watches(&self) {
        let mut st = self.inner.lock();
        for w in st.watchers.drain(..) {
            let _ = w.tx.send(Msg::End);
        }
    }

    /// "Compaction": every open watch gets a 200-stream ERROR event (Status 410 Expired, "too old
    /// resource version") and ends; any later watch from an RV issued before this call gets the
    /// same, a LIST `continue` token issued before it gets HTTP 410, and so does a LIST with
    /// `resourceVersionMatch=Exact` at such an RV.
    pub fn expire(&self) {
        let mut st = self.inner.lock();
        st.rv += 1;
        let compacted = st.rv;
        st.expired_below = compacted;
        for w in st.watchers.drain(..) {
            let err = too_old(w.last_rv, compacted);
            let _ = w.tx.send(Msg::Line(event_line("ERROR", &err.status)));
            let _ = w.tx.send(Msg::End);
        }
    }

    /// The next `count` requests whose method matches (`"*"` for any) and whose `path?query`
    /// starts with `path_prefix` get HTTP `status` with a real-looking `Status` body (429 also
    /// gets `Retry-After: 1`). Requests are still recorded.
    pub fn fail_next(&self, method: &str, path_prefix: &str, status: u16, count: usize) {
        if count == 0 {
            return;
        }
        self.inner.lock().failures.push(FailRule {
            rule: Rule::new(method, path_prefix),
            status,
            remaining: count,
        });
    }

    /// Forgets every pending `fail_next`.
    pub fn clear_failures(&self) {
        self.inner.lock().failures.clear();
    }

    /// Delays matching requests (method or `"*"`, `path?query` prefix) before they are answered.
    /// The latest matching rule wins; `Duration::ZERO` removes the delay.
    pub fn set_delay(&self, method: &str, path_prefix: &str, delay: Duration) {
        let mut st = self.inner.lock();
        let rule = Rule::new(method, path_prefix);
        st.delays.retain(|d| d.rule != rule);
        if !delay.is_zero() {
            st.delays.push(DelayRule { rule, delay });
        }
    }

    /// `"METHOD path?query"` of every request received, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().requests.clone()
    }

    /// Stored Leases of one namespace, by name.
    pub fn leases(&self, namespace: &str) -> Vec<Value> {
        self.inner.lock().objects_in(Kind::Lease, Some(namespace))
    }

    /// Stored DGDs of one namespace, or of all namespaces with `None`.
    pub fn dgds(&self, namespace: Option<&str>) -> Vec<Value> {
        self.inner.lock().objects_in(Kind::Dgd, namespace)
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> String {
        self.inner.lock().rv.to_string()
    }

    /// Open watch streams (of any kind).
    pub fn watch_count(&self) -> usize {
        let mut st = self.inner.lock();
        st.watchers.retain(|w| !w.tx.is_closed());
        st.watchers.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dgd = 0,
    Lease = 1,
}

const KINDS: [Kind; 2] = [Kind::Dgd, Kind::Lease];

struct ResDef {
    group: &'static str,
    version: &'static str,
    api_version: &'static str,
    plural: &'static str,
    kind: &'static str,
    list_kind: &'static str,
    /// A built-in Go type (Go field order, omitempty) rather than an unstructured CR.
    typed: bool,
}

const DGD: ResDef = ResDef {
    group: "nvidia.com",
    version: "v1alpha1",
    api_version: "nvidia.com/v1alpha1",
    plural: "dynamographdeployments",
    kind: "DynamoGraphDeployment",
    list_kind: "DynamoGraphDeploymentList",
    typed: false,
};

const LEASE: ResDef = ResDef {
    group: "coordination.k8s.io",
    version: "v1",
    api_version: "coordination.k8s.io/v1",
    plural: "leases",
    kind: "Lease",
    list_kind: "LeaseList",
    typed: true,
};

impl Kind {
    fn def(self) -> &'static ResDef {
        match self {
            Kind::Dgd => &DGD,
            Kind::Lease => &LEASE,
        }
    }

    fn idx(self) -> usize {
        self as usize
    }

    fn lookup(group: &str, version: &str, plural: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| {
            let d = k.def();
            d.group == group && d.version == version && d.plural == plural
        })
    }
}

impl ResDef {
    /// `leases.coordination.k8s.io`, as in Status messages.
    fn qualified(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

// ---------------------------------------------------------------------------------------------
// Status bodies
// ---------------------------------------------------------------------------------------------

struct ApiErr {
    code: u16,
    status: Value,
    retry_after: Option<u64>,
}

fn failure(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> ApiErr {
    let mut m = Map::new();
    m.insert("kind".into(), "Status".into());
    m.insert("apiVersion".into(), "v1".into());
    m.insert("metadata".into(), json!({}));
    m.insert("status".into(), "Failure".into());
    m.insert("message".into(), Value::String(message.into()));
    if !reason.is_empty() {
        m.insert("reason".into(), reason.into());
    }
    if let Some(d) = details {
        m.insert("details".into(), d);
    }
    m.insert("code".into(), code.into());
    ApiErr {
        code,
        status: Value::Object(m),
        retry_after: None,
    }
}

fn item_details(def: &ResDef, name: &str) -> Value {
    json!({"name": name, "group": def.group, "kind": def.plural})
}

fn not_found(def: &ResDef, name: &str) -> ApiErr {
    let msg = format!("{} \"{name}\" not found", def.qualified());
    failure(404, "NotFound", msg, Some(item_details(def, name)))
}

fn already_exists(def: &ResDef, name: &str) -> ApiErr {
    let msg = format!("{} \"{name}\" already exists", def.qualified());
    failure(409, "AlreadyExists", msg, Some(item_details(def, name)))
}

const MODIFIED_MSG: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

fn conflict(def: &ResDef, name: &str, why: &str) -> ApiErr {
    let msg = format!(
        "Operation cannot be fulfilled on {} \"{name}\": {why}",
        def.qualified()
    );
    failure(409, "Conflict", msg, Some(item_details(def, name)))
}

fn bad_request(msg: impl Into<String>) -> ApiErr {
    failure(400, "BadRequest", msg, None)
}

fn invalid(def: &ResDef, name: &str, field: &str, cause: &str, detail: &str) -> ApiErr {
    let msg = format!(
        "{}.{} \"{name}\" is invalid: {field}: {detail}",
        def.kind, def.group
    );
    let details = json!({
        "name": name,
        "group": def.group,
        "kind": def.kind,
        "causes": [{"reason": cause, "message": detail, "field": field}],
    });
    failure(422, "Invalid", msg, Some(details))
}

fn path_not_found() -> ApiErr {
    failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn method_not_allowed() -> ApiErr {
    failure(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

fn unsupported_media_type(content_type: &str) -> ApiErr {
    failure(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/apply-patch+yaml (got {content_type:?})"
        ),
        None,
    )
}

fn too_old(rv: u64, compacted: u64) -> ApiErr {
    failure(
        410,
        "Expired",
        format!("too old resource version: {rv} ({compacted})"),
        None,
    )
}

fn success_status(def: &ResDef, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": def.group, "kind": def.plural, "uid": uid},
    })
}

/// The Status the real server (or its front proxies) sends for an injected HTTP status.
fn injected(code: u16) -> ApiErr {
    const WHY: &str = "fake-api injected failure";
    let mut err = match code {
        400 => bad_request(format!("the server rejected our request: {WHY}")),
        401 => failure(401, "Unauthorized", "Unauthorized", None),
        403 => failure(403, "Forbidden", format!("forbidden: {WHY}"), None),
        404 => path_not_found(),
        405 => method_not_allowed(),
        409 => failure(409, "Conflict", format!("conflict: {WHY}"), None),
        410 => failure(
            410,
            "Expired",
            "The resourceVersion for the provided list is too old.",
            None,
        ),
        422 => failure(422, "Invalid", format!("invalid: {WHY}"), None),
        429 => failure(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            Some(json!({"retryAfterSeconds": 1})),
        ),
        500 => failure(
            500,
            "InternalError",
            format!("Internal error occurred: {WHY}"),
            Some(json!({"causes": [{"message": WHY}]})),
        ),
        503 => failure(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        ),
        504 => failure(
            504,
            "Timeout",
            "Timeout: request did not complete within requested timeout - context deadline exceeded",
            Some(json!({})),
        ),
        other => failure(other, "", WHY, None),
    };
    if code == 429 {
        err.retry_after = Some(1);
    }
    err
}

// ---------------------------------------------------------------------------------------------
// JSON the way the apiserver writes it
// ---------------------------------------------------------------------------------------------

/// Key order for Go structs; everything else (maps, unstructured objects) is sorted, which is
/// also what serde_json's default map does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sch {
    Sorted,
    TypedObj,
    ObjMeta,
    LeaseSpec,
    OwnerRef,
    ManagedField,
    Status,
    StatusDetails,
    Cause,
    ListMeta,
    TypedList,
    Event,
}

fn key_order(s: Sch) -> &'static [&'static str] {
    match s {
        Sch::Sorted => &[],
        Sch::TypedObj => &["kind", "apiVersion", "metadata", "spec", "status"],
        Sch::ObjMeta => &[
            "name",
            "generateName",
            "namespace",
            "selfLink",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
            "managedFields",
        ],
        Sch::LeaseSpec => &[
            "holderIdentity",
            "leaseDurationSeconds",
            "acquireTime",
            "renewTime",
            "leaseTransitions",
            "strategy",
            "preferredHolder",
        ],
        Sch::OwnerRef => &[
            "apiVersion",
            "kind",
            "name",
            "uid",
            "controller",
            "blockOwnerDeletion",
        ],
        Sch::ManagedField => &[
            "manager",
            "operation",
            "apiVersion",
            "time",
            "fieldsType",
            "fieldsV1",
            "subresource",
        ],
        Sch::Status => &[
            "kind",
            "apiVersion",
            "metadata",
            "status",
            "message",
            "reason",
            "details",
            "code",
        ],
        Sch::StatusDetails => &[
            "name",
            "group",
            "kind",
            "uid",
            "causes",
            "retryAfterSeconds",
        ],
        Sch::Cause => &["reason", "message", "field"],
        Sch::ListMeta => &[
            "selfLink",
            "resourceVersion",
            "continue",
            "remainingItemCount",
        ],
        Sch::TypedList => &["kind", "apiVersion", "metadata", "items"],
        Sch::Event => &["type", "object"],
    }
}

fn schema_for(v: &Value) -> Sch {
    match v.get("kind").and_then(Value::as_str) {
        Some("Status") => Sch::Status,
        Some("Lease") => Sch::TypedObj,
        Some("LeaseList") => Sch::TypedList,
        _ => Sch::Sorted,
    }
}

fn child_schema(parent: Sch, key: &str, v: &Value) -> Sch {
    match (parent, key) {
        (Sch::TypedObj, "metadata") => Sch::ObjMeta,
        (Sch::TypedObj, "spec") => Sch::LeaseSpec,
        (Sch::ObjMeta, "ownerReferences") => Sch::OwnerRef,
        (Sch::ObjMeta, "managedFields") => Sch::ManagedField,
        (Sch::Status, "metadata") | (Sch::TypedList, "metadata") => Sch::ListMeta,
        (Sch::Status, "details") => Sch::StatusDetails,
        (Sch::StatusDetails, "causes") => Sch::Cause,
        (Sch::TypedList, "items") => Sch::TypedObj,
        (Sch::Event, "object") => schema_for(v),
        _ => Sch::Sorted,
    }
}

fn render(v: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v, schema_for(v));
    out
}

fn write_json(out: &mut String, v: &Value, s: Sch) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(st) => write_str(out, st),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item, s);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let order = key_order(s);
            let typed = s != Sch::Sorted;
            let keys = order
                .iter()
                .copied()
                .filter(|k| m.contains_key(*k))
                .chain(m.keys().map(String::as_str).filter(|k| !order.contains(k)));
            out.push('{');
            let mut first = true;
            for k in keys {
                let val = &m[k];
                // Go structs drop nil pointers (omitempty).
                if typed && val.is_null() {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                write_str(out, k);
                out.push(':');
                write_json(out, val, child_schema(s, k, val));
            }
            out.push('}');
        }
    }
}

/// Go's encoding/json string escaping (HTML-safe).
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn event_line(etype: &str, obj: &Value) -> Bytes {
    let mut ev = Map::new();
    ev.insert("type".into(), etype.into());
    ev.insert("object".into(), obj.clone());
    let mut out = String::new();
    write_json(&mut out, &Value::Object(ev), Sch::Event);
    out.push('\n');
    Bytes::from(out)
}

fn bookmark_line(kind: Kind, rv: u64, initial_events_end: bool) -> Bytes {
    let def = kind.def();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let mut obj = json!({"apiVersion": def.api_version, "kind": def.kind, "metadata": meta});
    if def.typed {
        // A zero Go struct still writes its non-pointer struct fields.
        obj["spec"] = json!({});
    }
    event_line("BOOKMARK", &obj)
}

// ---------------------------------------------------------------------------------------------
// Small helpers: time, ids, object access
// ---------------------------------------------------------------------------------------------

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn random_u64(salt: u64) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    RandomState::new().hash_one((n, nanos, salt))
}

/// A random (version 4 layout) UUID.
fn new_uid() -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&random_u64(1).to_be_bytes());
    b[8..].copy_from_slice(&random_u64(2).to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The 5-character suffix of `generateName` (the apiserver's alphabet).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = random_u64(3);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
            r /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

const FLOWSCHEMA_UID: &str = "ff043bb0-5eb0-4d46-a1eb-c42199c4e678";
const PRIORITYLEVEL_UID: &str = "699afa67-3962-41e6-bf25-a76f5a6787ad";

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn namespace_of(obj: &Value) -> String {
    meta_str(obj, "namespace")
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// `metadata` of an object, created if missing.
fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let m = obj.as_object_mut().expect("object");
    let meta = m
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("metadata object")
}

fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    o
}

/// Everything but metadata and status, to decide whether `generation` moves.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// Sets apiVersion/kind when missing; 400 when they name another type.
fn check_type(obj: &mut Value, def: &ResDef) -> Result<(), ApiErr> {
    let m = obj.as_object_mut().ok_or_else(|| {
        bad_request(format!(
            "the object provided is unrecognized (must be of type {})",
            def.kind
        ))
    })?;
    match m.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != def.api_version => {
            return Err(bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                def.api_version
            )));
        }
        _ => {}
    }
    match m.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != def.kind => {
            return Err(bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
        _ => {}
    }
    m.insert("apiVersion".into(), def.api_version.into());
    m.insert("kind".into(), def.kind.into());
    Ok(())
}

/// Sets `metadata.namespace` from the URL; 400 if the body names another namespace.
fn check_namespace(obj: &mut Value, ns: &str) -> Result<(), ApiErr> {
    let meta = meta_mut(obj);
    if let Some(n) = meta.get("namespace").and_then(Value::as_str)
        && !n.is_empty()
        && n != ns
    {
        return Err(bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    meta.insert("namespace".into(), ns.into());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// managedFields (one "Update" entry, like a single client without server-side apply)
// ---------------------------------------------------------------------------------------------

fn set_managed_fields(obj: &mut Value, def: &ResDef, manager: &str, now: &str) {
    let fields = fields_v1(obj, def.typed);
    let meta = meta_mut(obj);
    if fields.as_object().is_some_and(Map::is_empty) {
        meta.remove("managedFields");
        return;
    }
    meta.insert(
        "managedFields".into(),
        json!([{
            "manager": manager,
            "operation": "Update",
            "apiVersion": def.api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        }]),
    );
}

fn fields_v1(obj: &Value, typed: bool) -> Value {
    let mut root = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    let mf = metadata_fields(v);
                    if !mf.is_empty() {
                        root.insert("f:metadata".into(), Value::Object(mf));
                    }
                }
                _ => {
                    root.insert(format!("f:{k}"), field_set(v, !typed));
                }
            }
        }
    }
    Value::Object(root)
}

fn field_set(v: &Value, dot: bool) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            if dot {
                out.insert(".".into(), json!({}));
            }
            for (k, c) in m {
                out.insert(format!("f:{k}"), field_set(c, true));
            }
            Value::Object(out)
        }
        _ => json!({}),
    }
}

fn metadata_fields(meta: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    if meta
        .get("generateName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        out.insert("f:generateName".into(), json!({}));
    }
    for key in ["labels", "annotations"] {
        if let Some(m) = meta
            .get(key)
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty())
        {
            let mut set = Map::new();
            set.insert(".".into(), json!({}));
            for k in m.keys() {
                set.insert(format!("f:{k}"), json!({}));
            }
            out.insert(format!("f:{key}"), Value::Object(set));
        }
    }
    if let Some(refs) = meta
        .get("ownerReferences")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
    {
        let mut set = Map::new();
        set.insert(".".into(), json!({}));
        for r in refs {
            let uid = r.get("uid").and_then(Value::as_str).unwrap_or_default();
            set.insert(format!("k:{{\"uid\":{}}}", Value::from(uid)), json!({}));
        }
        out.insert("f:ownerReferences".into(), Value::Object(set));
    }
    if let Some(fins) = meta
        .get("finalizers")
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
    {
        let mut set = Map::new();
        set.insert(".".into(), json!({}));
        for f in fins {
            set.insert(format!("v:{f}"), json!({}));
        }
        out.insert("f:finalizers".into(), Value::Object(set));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Selectors and query strings
// ---------------------------------------------------------------------------------------------

enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

struct FieldReq {
    field: String,
    value: String,
    negate: bool,
}

#[derive(Default)]
struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let ns = meta_str(obj, "namespace").unwrap_or_default();
        if self.namespace.as_deref().is_some_and(|n| n != ns) {
            return false;
        }
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        let fields_ok = self.fields.iter().all(|f| {
            let actual = match f.field.as_str() {
                "metadata.name" => meta_str(obj, "name").unwrap_or_default(),
                _ => ns,
            };
            (actual == f.value) != f.negate
        });
        labels_ok && fields_ok
    }

    fn is_selective(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }
}

fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, String> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for ch in s.chars() {
        match ch {
            '(' => {
                depth += 1;
                cur.push(ch);
            }
            ')' => {
                depth -= 1;
                cur.push(ch);
            }
            ',' if depth == 0 => terms.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    terms.push(cur);
    let set = |v: &str| -> Result<Vec<String>, String> {
        let v = v.trim();
        let inner = v
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .ok_or_else(|| format!("unable to parse requirement: expected a set in {v:?}"))?;
        Ok(inner.split(',').map(|x| x.trim().to_string()).collect())
    };
    let mut reqs = Vec::new();
    for t in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let req = if let Some((k, v)) = t.split_once(" notin ") {
            LabelReq::NotIn(k.trim().to_string(), set(v)?)
        } else if let Some((k, v)) = t.split_once(" in ") {
            LabelReq::In(k.trim().to_string(), set(v)?)
        } else if let Some(k) = t.strip_prefix('!') {
            LabelReq::NotExists(k.trim().to_string())
        } else if let Some((k, v)) = t.split_once("!=") {
            LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else {
            LabelReq::Exists(t.to_string())
        };
        reqs.push(req);
    }
    Ok(reqs)
}

fn parse_field_selector(s: &str) -> Result<Vec<FieldReq>, String> {
    let mut reqs = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (field, value, negate) = if let Some((f, v)) = t.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            (f, v, false)
        } else {
            return Err(format!("invalid selector: '{t}'; can't understand '{t}'"));
        };
        let field = field.trim();
        if field != "metadata.name" && field != "metadata.namespace" {
            return Err(format!("field label not supported: {field}"));
        }
        reqs.push(FieldReq {
            field: field.to_string(),
            value: value.trim().to_string(),
            negate,
        });
    }
    Ok(reqs)
}

struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Params {
        Params(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    fn filter(&self, namespace: Option<&str>) -> Result<Filter, ApiErr> {
        let labels = match self.non_empty("labelSelector") {
            Some(s) => parse_label_selector(s).map_err(bad_request)?,
            None => Vec::new(),
        };
        let fields = match self.non_empty("fieldSelector") {
            Some(s) => parse_field_selector(s).map_err(bad_request)?,
            None => Vec::new(),
        };
        Ok(Filter {
            namespace: namespace.map(str::to_string),
            labels,
            fields,
        })
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                match (
                    b.get(i + 1).and_then(|x| hex(*x)),
                    b.get(i + 2).and_then(|x| hex(*x)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Continue tokens (same layout as the apiserver's: base64url of {"v","rv","start"})
// ---------------------------------------------------------------------------------------------

fn encode_continue(rv: i64, start: &str) -> String {
    let mut json = format!("{{\"v\":\"meta.k8s.io/v1\",\"rv\":{rv},\"start\":");
    write_str(&mut json, start);
    json.push('}');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(token: &str) -> Result<(i64, String), String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err("unsupported continue token version".into());
    }
    let rv = v
        .get("rv")
        .and_then(Value::as_i64)
        .ok_or("continue token has no resourceVersion")?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("continue token has no start key")?;
    Ok((rv, start.to_string()))
}

fn expired_continue(start: &str) -> ApiErr {
    let mut err = failure(
        410,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result. You can \
         start a new list without the continue parameter, or use the continue token in this \
         response to retrieve the remainder of the results. Continuing with the provided token \
         results in an inconsistent list - objects that were created, modified, or deleted \
         between the time the first chunk was returned and now may show up in the list.",
        None,
    );
    err.status["metadata"] = json!({"continue": encode_continue(-1, start)});
    err
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

struct LogEntry {
    rv: u64,
    key: String,
    etype: &'static str,
    object: Value,
}

enum Msg {
    Line(Bytes),
    End,
}

struct Watcher {
    id: u64,
    kind: Kind,
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Msg>,
    last_rv: u64,
}

#[derive(PartialEq, Eq)]
struct Rule {
    method: String,
    prefix: String,
}

impl Rule {
    fn new(method: &str, prefix: &str) -> Rule {
        Rule {
            method: method.to_string(),
            prefix: prefix.to_string(),
        }
    }

    fn matches(&self, method: &str, path_and_query: &str) -> bool {
        (self.method.is_empty() || self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && path_and_query.starts_with(&self.prefix)
    }
}

struct FailRule {
    rule: Rule,
    status: u16,
    remaining: usize,
}

struct DelayRule {
    rule: Rule,
    delay: Duration,
}

struct WriteCtx {
    manager: String,
    dry_run: bool,
    /// Test helpers: skip resourceVersion/uid preconditions.
    force: bool,
}

impl WriteCtx {
    fn helper() -> WriteCtx {
        WriteCtx {
            manager: "unknown".into(),
            dry_run: false,
            force: true,
        }
    }
}

struct Store {
    rv: u64,
    /// Per kind, keyed by "namespace/name" (etcd key order).
    objects: [BTreeMap<String, Value>; 2],
    /// Per kind, every write in RV order; never trimmed (expiry is a threshold).
    log: [Vec<LogEntry>; 2],
    /// Watches from, and continue tokens / exact lists at, an RV below this are expired.
    expired_below: u64,
    watchers: Vec<Watcher>,
    next_watch_id: u64,
    failures: Vec<FailRule>,
    delays: Vec<DelayRule>,
    requests: Vec<String>,
}

impl Store {
    fn new() -> Store {
        Store {
            rv: 100,
            objects: [BTreeMap::new(), BTreeMap::new()],
            log: [Vec::new(), Vec::new()],
            expired_below: 0,
            watchers: Vec::new(),
            next_watch_id: 1,
            failures: Vec::new(),
            delays: Vec::new(),
            requests: Vec::new(),
        }
    }

    fn objects_in(&self, kind: Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects[kind.idx()]
            .values()
            .filter(|o| namespace.is_none_or(|ns| meta_str(o, "namespace") == Some(ns)))
            .cloned()
            .collect()
    }

    fn emit(&mut self, kind: Kind, etype: &'static str, key: &str, obj: &Value, rv: u64) {
        self.log[kind.idx()].push(LogEntry {
            rv,
            key: key.to_string(),
            etype,
            object: obj.clone(),
        });
        let line = event_line(etype, obj);
        self.watchers.retain_mut(|w| {
            if w.kind != kind || !w.filter.matches(obj) {
                return !w.tx.is_closed();
            }
            w.last_rv = rv;
            w.tx.send(Msg::Line(line.clone())).is_ok()
        });
    }

    /// The objects of a kind as of `rv`.
    fn snapshot(&self, kind: Kind, rv: u64) -> BTreeMap<String, Value> {
        if rv >= self.rv {
            return self.objects[kind.idx()].clone();
        }
        let mut m = BTreeMap::new();
        for e in self.log[kind.idx()].iter().take_while(|e| e.rv <= rv) {
            if e.etype == "DELETED" {
                m.remove(&e.key);
            } else {
                m.insert(e.key.clone(), e.object.clone());
            }
        }
        m
    }

    fn get(&self, kind: Kind, ns: &str, name: &str) -> Result<Value, ApiErr> {
        self.objects[kind.idx()]
            .get(&format!("{ns}/{name}"))
            .cloned()
            .ok_or_else(|| not_found(kind.def(), name))
    }

    fn create(
        &mut self,
        kind: Kind,
        ns: &str,
        mut obj: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiErr> {
        let def = kind.def();
        check_type(&mut obj, def)?;
        check_namespace(&mut obj, ns)?;
        let meta = meta_mut(&mut obj);
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            match meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|g| !g.is_empty())
            {
                Some(g) => {
                    name = format!("{g}{}", random_suffix());
                    meta.insert("name".into(), name.clone().into());
                }
                None => {
                    return Err(invalid(
                        def,
                        "",
                        "metadata.name",
                        "FieldValueRequired",
                        "Required value: name or generateName is required",
                    ));
                }
            }
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(failure(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
                None,
            ));
        }
        let key = format!("{ns}/{name}");
        if self.objects[kind.idx()].contains_key(&key) {
            return Err(already_exists(def, &name));
        }
        let now = now_rfc3339();
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.insert("uid".into(), new_uid().into());
        meta.insert("creationTimestamp".into(), now.clone().into());
        if def.typed {
            meta.remove("generation");
        } else {
            meta.insert("generation".into(), 1.into());
        }
        set_managed_fields(&mut obj, def, &ctx.manager, &now);
        if ctx.dry_run {
            return Ok(obj);
        }
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), rv.to_string().into());
        self.objects[kind.idx()].insert(key.clone(), obj.clone());
        self.emit(kind, "ADDED", &key, &obj, rv);
        Ok(obj)
    }

    fn replace(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        mut obj: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiErr> {
        let def = kind.def();
        check_type(&mut obj, def)?;
        let body_name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if body_name != name {
            return Err(bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        check_namespace(&mut obj, ns)?;
        let old = self.get(kind, ns, name)?;
        self.check_preconditions(def, name, &old, &obj, ctx)?;
        self.finish_update(kind, old, obj, ctx)
    }

    fn check_preconditions(
        &self,
        def: &ResDef,
        name: &str,
        old: &Value,
        new: &Value,
        ctx: &WriteCtx,
    ) -> Result<(), ApiErr> {
        if ctx.force {
            return Ok(());
        }
        let body_rv = meta_str(new, "resourceVersion").unwrap_or_default();
        if body_rv.is_empty() {
            // Built-in types allow unconditional updates; custom resources do not.
            if !def.typed {
                return Err(invalid(
                    def,
                    name,
                    "metadata.resourceVersion",
                    "FieldValueInvalid",
                    "Invalid value: 0x0: must be specified for an update",
                ));
            }
        } else if Some(body_rv) != meta_str(old, "resourceVersion") {
            return Err(conflict(def, name, MODIFIED_MSG));
        }
        let body_uid = meta_str(new, "uid").unwrap_or_default();
        let old_uid = meta_str(old, "uid").unwrap_or_default();
        if !body_uid.is_empty() && body_uid != old_uid {
            return Err(conflict(
                def,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {body_uid}, UID in object meta: {old_uid}"
                ),
            ));
        }
        Ok(())
    }

    /// Common tail of PUT and PATCH: server-owned fields, generation, no-op detection,
    /// finalizer-driven deletion, storage and the event.
    fn finish_update(
        &mut self,
        kind: Kind,
        old: Value,
        mut new: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiErr> {
        let def = kind.def();
        {
            let meta = meta_mut(&mut new);
            for field in [
                "uid",
                "creationTimestamp",
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old.get("metadata").and_then(|m| m.get(field)) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
        }
        if !def.typed && spec_part(&old) != spec_part(&new) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), (generation + 1).into());
        }
        if without_managed_fields(&old) == without_managed_fields(&new) {
            return Ok(old);
        }
        set_managed_fields(&mut new, def, &ctx.manager, &now_rfc3339());
        if ctx.dry_run {
            return Ok(new);
        }
        let key = format!(
            "{}/{}",
            meta_str(&new, "namespace").unwrap_or_default(),
            meta_str(&new, "name").unwrap_or_default()
        );
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut new).insert("resourceVersion".into(), rv.to_string().into());
        if new.pointer("/metadata/deletionTimestamp").is_some() && !has_finalizers(&new) {
            self.objects[kind.idx()].remove(&key);
            self.emit(kind, "DELETED", &key, &new, rv);
        } else {
            self.objects[kind.idx()].insert(key.clone(), new.clone());
            self.emit(kind, "MODIFIED", &key, &new, rv);
        }
        Ok(new)
    }

    fn patch(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        content_type: &str,
        patch: Value,
        ctx: &WriteCtx,
    ) -> Result<(u16, Value), ApiErr> {
        let def = kind.def();
        let apply = content_type == "application/apply-patch+yaml";
        let old = match self.get(kind, ns, name) {
            Ok(old) => old,
            Err(_) if apply => {
                let mut obj = patch;
                check_type(&mut obj, def)?;
                meta_mut(&mut obj).insert("name".into(), name.into());
                return self.create(kind, ns, obj, ctx).map(|o| (201, o));
            }
            Err(e) => return Err(e),
        };
        let mut doc = old.clone();
        match content_type {
            "application/merge-patch+json" | "application/apply-patch+yaml" => {
                json_patch::merge(&mut doc, &patch);
            }
            // Leases have no list fields with patch strategies worth modelling.
            "application/strategic-merge-patch+json" if def.typed => {
                json_patch::merge(&mut doc, &patch);
            }
            "application/json-patch+json" => {
                let ops: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| bad_request(format!("json: cannot unmarshal patch: {e}")))?;
                json_patch::patch(&mut doc, &ops.0).map_err(|e| {
                    failure(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                        None,
                    )
                })?;
            }
            other => return Err(unsupported_media_type(other)),
        }
        check_type(&mut doc, def)?;
        {
            let meta = meta_mut(&mut doc);
            meta.insert("name".into(), name.into());
            meta.insert("namespace".into(), ns.into());
        }
        // A patch may carry a resourceVersion precondition.
        if !ctx.force && meta_str(&doc, "resourceVersion") != meta_str(&old, "resourceVersion") {
            return Err(conflict(def, name, MODIFIED_MSG));
        }
        self.finish_update(kind, old, doc, ctx).map(|o| (200, o))
    }

    fn delete(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        options: &Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiErr> {
        let def = kind.def();
        let old = self.get(kind, ns, name)?;
        let old_uid = meta_str(&old, "uid").unwrap_or_default().to_string();
        let old_rv = meta_str(&old, "resourceVersion").unwrap_or_default();
        if let Some(p) = options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .filter(|p| *p != old_uid)
        {
            return Err(conflict(
                def,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {p}, UID in object meta: {old_uid}"
                ),
            ));
        }
        if let Some(p) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .filter(|p| *p != old_rv)
        {
            return Err(conflict(
                def,
                name,
                &format!(
                    "the ResourceVersion in the precondition ({p}) does not match the \
                     ResourceVersion in record ({old_rv}). The object might have been modified"
                ),
            ));
        }
        let dry_run = ctx.dry_run
            || options
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| !d.is_empty());
        let key = format!("{ns}/{name}");
        if has_finalizers(&old) {
            // Graceful: mark for deletion; the object stays until its finalizers are removed.
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut new = old;
            let meta = meta_mut(&mut new);
            meta.insert("deletionTimestamp".into(), now_rfc3339().into());
            meta.insert("deletionGracePeriodSeconds".into(), 0.into());
            if dry_run {
                return Ok(new);
            }
            self.rv += 1;
            let rv = self.rv;
            meta_mut(&mut new).insert("resourceVersion".into(), rv.to_string().into());
            self.objects[kind.idx()].insert(key.clone(), new.clone());
            self.emit(kind, "MODIFIED", &key, &new, rv);
            return Ok(new);
        }
        if !dry_run {
            self.rv += 1;
            let rv = self.rv;
            let mut last = old;
            meta_mut(&mut last).insert("resourceVersion".into(), rv.to_string().into());
            self.objects[kind.idx()].remove(&key);
            self.emit(kind, "DELETED", &key, &last, rv);
        }
        Ok(success_status(def, name, &old_uid))
    }

    fn list(&self, kind: Kind, ns: Option<&str>, params: &Params) -> Result<Value, ApiErr> {
        let def = kind.def();
        let filter = params.filter(ns)?;
        let limit: usize = match params.non_empty("limit") {
            Some(l) => l
                .parse()
                .map_err(|_| bad_request(format!("invalid limit {l:?}")))?,
            None => 0,
        };
        let (at, start) = if let Some(token) = params.non_empty("continue") {
            let (rv, start) = decode_continue(token)
                .map_err(|e| bad_request(format!("continue key is not valid: {e}")))?;
            if rv >= 0 && (rv as u64) < self.expired_below {
                return Err(expired_continue(&start));
            }
            // rv -1: the "inconsistent" token handed out with a 410.
            let at = if rv < 0 { self.rv } else { rv as u64 };
            (at, Some(start))
        } else if let Some(rv) = params.non_empty("resourceVersion")
            && params.get("resourceVersionMatch") == Some("Exact")
        {
            let rv: u64 = rv
                .parse()
                .map_err(|_| bad_request(format!("invalid resourceVersion {rv:?}")))?;
            if rv < self.expired_below {
                return Err(failure(
                    410,
                    "Expired",
                    "The resourceVersion for the provided list is too old.",
                    None,
                ));
            }
            (rv.min(self.rv), None)
        } else {
            (self.rv, None)
        };
        let relative = |key: &str| -> String {
            match ns {
                Some(_) => key
                    .split_once('/')
                    .map(|(_, n)| n)
                    .unwrap_or(key)
                    .to_string(),
                None => key.to_string(),
            }
        };
        let snapshot = self.snapshot(kind, at);
        let mut matching: Vec<(String, &Value)> = snapshot
            .iter()
            .filter(|(_, v)| filter.matches(v))
            .map(|(k, v)| (relative(k), v))
            .filter(|(rel, _)| start.as_deref().is_none_or(|s| rel.as_str() >= s))
            .collect();
        let rest = if limit > 0 && matching.len() > limit {
            matching.split_off(limit)
        } else {
            Vec::new()
        };
        let token = match (rest.is_empty(), matching.last()) {
            (false, Some((rel, _))) => encode_continue(at as i64, &format!("{rel}\u{0}")),
            _ => String::new(),
        };
        let items: Vec<Value> = matching.into_iter().map(|(_, v)| v.clone()).collect();
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), at.to_string().into());
        // CRD lists (unstructured) always write "continue"; typed lists omit it when empty.
        if !def.typed || !token.is_empty() {
            meta.insert("continue".into(), token.into());
        }
        if !rest.is_empty() && !filter.is_selective() {
            meta.insert("remainingItemCount".into(), rest.len().into());
        }
        Ok(json!({
            "apiVersion": def.api_version,
            "kind": def.list_kind,
            "metadata": meta,
            "items": items,
        }))
    }
}

struct Inner {
    addr: SocketAddr,
    store: Mutex<Store>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The BOOKMARK the apiserver sends 2 s before a watch's timeoutSeconds.
    fn deadline_bookmark(&self, id: u64) {
        let mut st = self.lock();
        let rv = st.rv;
        if let Some(w) = st.watchers.iter_mut().find(|w| w.id == id) {
            w.last_rv = rv;
            let _ = w.tx.send(Msg::Line(bookmark_line(w.kind, rv, false)));
        }
    }

    fn watch(
        self: &Arc<Self>,
        kind: Kind,
        ns: Option<&str>,
        params: &Params,
    ) -> Result<Response, ApiErr> {
        let filter = params.filter(ns)?;
        let bookmarks = params.flag("allowWatchBookmarks");
        let send_initial = params.flag("sendInitialEvents");
        if send_initial
            && (params.get("resourceVersionMatch") != Some("NotOlderThan") || !bookmarks)
        {
            return Err(failure(
                422,
                "Invalid",
                "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: \
                 sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and \
                 allowWatchBookmarks to true",
                Some(json!({"group": "meta.k8s.io", "kind": "ListOptions"})),
            ));
        }
        let timeout = match params.non_empty("timeoutSeconds") {
            Some(t) => t
                .parse::<u64>()
                .map_err(|_| bad_request(format!("invalid timeoutSeconds {t:?}")))?,
            None => 1800,
        };
        let rv_param = params.get("resourceVersion").unwrap_or_default();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        let last_rv = if rv_param.is_empty() || rv_param == "0" || send_initial {
            // "Start at most recent / any": the current state as ADDED events.
            for obj in st.objects[kind.idx()]
                .values()
                .filter(|o| filter.matches(o))
            {
                let _ = tx.send(Msg::Line(event_line("ADDED", obj)));
            }
            if send_initial {
                let _ = tx.send(Msg::Line(bookmark_line(kind, st.rv, true)));
            }
            st.rv
        } else {
            let from: u64 = rv_param
                .parse()
                .map_err(|_| bad_request(format!("invalid resource version {rv_param:?}")))?;
            if from < st.expired_below {
                let err = too_old(from, st.expired_below);
                drop(st);
                let line = event_line("ERROR", &err.status);
                let body = Body::from_stream(futures::stream::once(async move {
                    Ok::<Bytes, Infallible>(line)
                }));
                return Ok(response(200, body));
            }
            let mut last = from;
            for e in st.log[kind.idx()]
                .iter()
                .filter(|e| e.rv > from && filter.matches(&e.object))
            {
                let _ = tx.send(Msg::Line(event_line(e.etype, &e.object)));
                last = e.rv;
            }
            last
        };
        let id = st.next_watch_id;
        st.next_watch_id += 1;
        st.watchers.push(Watcher {
            id,
            kind,
            filter,
            bookmarks,
            tx,
            last_rv,
        });
        drop(st);
        let deadline = Instant::now() + Duration::from_secs(timeout);
        let state = WatchState {
            rx,
            guard: WatchGuard {
                inner: self.clone(),
                id,
            },
            deadline,
            bookmark_at: (bookmarks && timeout > 2).then(|| deadline - Duration::from_secs(2)),
        };
        Ok(response(200, watch_body(state)))
    }

    fn dispatch(
        self: &Arc<Self>,
        method: &str,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let params = Params::parse(query);
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let result = match segs.as_slice() {
            ["version"] => Ok(json_response(200, VERSION_JSON.to_string())),
            ["healthz"] | ["livez"] | ["readyz"] => Ok(Response::builder()
                .status(200)
                .header("Content-Type", "text/plain; charset=utf-8")
                .body(Body::from("ok"))
                .expect("response")),
            ["apis", group, version, plural] => match Kind::lookup(group, version, plural) {
                None => Err(path_not_found()),
                Some(kind) if method == "GET" => self.list_or_watch(kind, None, &params),
                Some(_) => Err(method_not_allowed()),
            },
            ["apis", group, version, "namespaces", ns, plural] => {
                match Kind::lookup(group, version, plural) {
                    None => Err(path_not_found()),
                    Some(kind) => match method {
                        "GET" => self.list_or_watch(kind, Some(ns), &params),
                        "POST" => parse_body(body).and_then(|obj| {
                            let ctx = write_ctx(&params, headers);
                            let created = self.lock().create(kind, ns, obj, &ctx)?;
                            Ok(json_response(201, render(&created)))
                        }),
                        _ => Err(method_not_allowed()),
                    },
                }
            }
            ["apis", group, version, "namespaces", ns, plural, name] => {
                match Kind::lookup(group, version, plural) {
                    None => Err(path_not_found()),
                    Some(kind) => self.item(kind, method, ns, name, &params, headers, body),
                }
            }
            _ => Err(path_not_found()),
        };
        result.unwrap_or_else(error_response)
    }

    fn list_or_watch(
        self: &Arc<Self>,
        kind: Kind,
        ns: Option<&str>,
        params: &Params,
    ) -> Result<Response, ApiErr> {
        if params.flag("watch") {
            self.watch(kind, ns, params)
        } else {
            let list = self.lock().list(kind, ns, params)?;
            Ok(json_response(200, render(&list)))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn item(
        &self,
        kind: Kind,
        method: &str,
        ns: &str,
        name: &str,
        params: &Params,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiErr> {
        let ctx = write_ctx(params, headers);
        match method {
            "GET" => {
                let obj = self.lock().get(kind, ns, name)?;
                Ok(json_response(200, render(&obj)))
            }
            "PUT" => {
                let obj = parse_body(body)?;
                let updated = self.lock().replace(kind, ns, name, obj, &ctx)?;
                Ok(json_response(200, render(&updated)))
            }
            "PATCH" => {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase();
                let patch = parse_body(body)?;
                let (code, obj) = self
                    .lock()
                    .patch(kind, ns, name, &content_type, patch, &ctx)?;
                Ok(json_response(code, render(&obj)))
            }
            "DELETE" => {
                let options = if body.iter().all(u8::is_ascii_whitespace) {
                    Value::Null
                } else {
                    parse_body(body)?
                };
                let out = self.lock().delete(kind, ns, name, &options, &ctx)?;
                Ok(json_response(200, render(&out)))
            }
            _ => Err(method_not_allowed()),
        }
    }
}

const VERSION_JSON: &str = "{\n  \"major\": \"1\",\n  \"minor\": \"36\",\n  \"emulationMajor\": \"1\",\n  \"emulationMinor\": \"36\",\n  \"minCompatibilityMajor\": \"1\",\n  \"minCompatibilityMinor\": \"35\",\n  \"gitVersion\": \"v1.36.2\",\n  \"gitCommit\": \"0000000000000000000000000000000000000000\",\n  \"gitTreeState\": \"clean\",\n  \"buildDate\": \"2026-11-01T00:00:00Z\",\n  \"goVersion\": \"go1.25.4\",\n  \"compiler\": \"gc\",\n  \"platform\": \"linux/amd64\"\n}";

fn parse_body(body: &[u8]) -> Result<Value, ApiErr> {
    serde_json::from_slice(body).map_err(|e| {
        bad_request(format!(
            "the object provided is unrecognized: couldn't get version/kind; json parse error: {e}"
        ))
    })
}

/// The field manager the apiserver derives: `fieldManager`, else the User-Agent's product,
/// else "unknown" (kube-rs sends no User-Agent).
fn write_ctx(params: &Params, headers: &HeaderMap) -> WriteCtx {
    let manager = params
        .non_empty("fieldManager")
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".to_string());
    WriteCtx {
        manager,
        dry_run: params.non_empty("dryRun").is_some(),
        force: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Watch streams
// ---------------------------------------------------------------------------------------------

/// Removes the watcher from the registry when its response body is dropped (stream ended or
/// client gone).
struct WatchGuard {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let id = self.id;
        self.inner.lock().watchers.retain(|w| w.id != id);
    }
}

struct WatchState {
    rx: mpsc::UnboundedReceiver<Msg>,
    guard: WatchGuard,
    deadline: Instant,
    bookmark_at: Option<Instant>,
}

fn watch_body(state: WatchState) -> Body {
    Body::from_stream(futures::stream::unfold(state, |mut ws| async move {
        loop {
            let bookmark_at = ws.bookmark_at;
            tokio::select! {
                biased;
                msg = ws.rx.recv() => {
                    return match msg {
                        Some(Msg::Line(line)) => Some((Ok::<Bytes, Infallible>(line), ws)),
                        Some(Msg::End) | None => None,
                    };
                }
                () = tokio::time::sleep_until(bookmark_at.unwrap_or(ws.deadline)), if bookmark_at.is_some() => {
                    ws.bookmark_at = None;
                    ws.guard.inner.deadline_bookmark(ws.guard.id);
                }
                () = tokio::time::sleep_until(ws.deadline) => return None,
            }
        }
    }))
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing
// ---------------------------------------------------------------------------------------------

fn response(status: u16, body: Body) -> Response {
    Response::builder()
        .status(status)
        .header("Audit-Id", new_uid())
        .header("Cache-Control", "no-cache, private")
        .header("Content-Type", "application/json")
        .header("X-Kubernetes-Pf-Flowschema-Uid", FLOWSCHEMA_UID)
        .header("X-Kubernetes-Pf-Prioritylevel-Uid", PRIORITYLEVEL_UID)
        .body(body)
        .expect("response")
}

/// Go's json.Encoder ends the body with a newline; net/http writes `Content-Length` for a body
/// under 2 KiB and chunks a larger one.
fn json_response(status: u16, mut body: String) -> Response {
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let body = if body.len() < 2048 {
        Body::from(body)
    } else {
        let bytes = Bytes::from(body);
        Body::from_stream(futures::stream::once(async move {
            Ok::<Bytes, Infallible>(bytes)
        }))
    };
    response(status, body)
}

fn error_response(err: ApiErr) -> Response {
    let mut resp = json_response(err.code, render(&err.status));
    if let Some(secs) = err.retry_after {
        resp.headers_mut()
            .insert("Retry-After", HeaderValue::from(secs));
    }
    resp
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |pq| pq.as_str().to_string());
    let (delay, fail) = {
        let mut st = inner.lock();
        st.requests.push(format!("{method} {path_and_query}"));
        let delay = st
            .delays
            .iter()
            .rev()
            .find(|d| d.rule.matches(&method, &path_and_query))
            .map(|d| d.delay);
        let fail = st
            .failures
            .iter_mut()
            .find(|f| f.remaining > 0 && f.rule.matches(&method, &path_and_query))
            .map(|f| {
                f.remaining -= 1;
                f.status
            });
        st.failures.retain(|f| f.remaining > 0);
        (delay, fail)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = fail {
        return error_response(injected(code));
    }
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    inner.dispatch(&method, &path, &query, &headers, &body)
}
