//! Self-test of the fake API server in `tests/support/fake_api.rs`: real kube-rs 5 clients
//! (a `kube::Client` built from the kubeconfig the fake writes, `kube::runtime::watcher` over
//! `DynamicObject`) work against it, and its answers match the real apiserver's captured ones in
//! `shared/captured/api/` (Status bodies byte for byte, objects byte for byte once the
//! server-generated uid/resourceVersion/timestamps are aligned, lists and watch events by shape).

mod common;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use support::FakeApi;

const WAIT: Duration = Duration::from_secs(5);
const DGDS: &str = "/apis/nvidia.com/v1alpha1/dynamographdeployments";
const TEAM_X_DGDS: &str = "/apis/nvidia.com/v1alpha1/namespaces/team-x/dynamographdeployments";
const TEAM_X_LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/team-x/leases";
const LEASE_NAME: &str = "claim-3f2a9c1e7b5d4a60";

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn shared(path: &str) -> PathBuf {
    std::env::var_os("DYNAMO_TENANCY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join(path)
}

fn captured(name: &str) -> String {
    let path = shared("captured/api").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dgd(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"services": {"Frontend": {"componentType": "frontend", "replicas": 1}}},
    })
}

/// DGD `name` in `ns` with the spec of the captured `dgd-a.json`.
fn captured_dgd(ns: &str, name: &str) -> String {
    let mut v: Value = serde_json::from_str(&captured("requests/dgd-a.json")).unwrap();
    v["metadata"] = json!({"name": name, "namespace": ns});
    v.to_string()
}

fn dgd_resource() -> ApiResource {
    ApiResource {
        group: "nvidia.com".into(),
        version: "v1alpha1".into(),
        api_version: "nvidia.com/v1alpha1".into(),
        kind: "DynamoGraphDeployment".into(),
        plural: "dynamographdeployments".into(),
    }
}

async fn client(fake: &FakeApi) -> kube::Client {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dynamo-tenancy-fake-api-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let path = dir.join("kubeconfig");
    fake.write_kubeconfig(&path);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kubeconfig loads");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(config.cluster_url.to_string(), format!("{}/", fake.url()));
    kube::Client::try_from(config).expect("client")
}

fn key(o: &DynamicObject) -> String {
    format!(
        "{}/{}",
        o.metadata.namespace.as_deref().unwrap_or_default(),
        o.metadata.name.as_deref().unwrap_or_default()
    )
}

fn rv_of(o: &DynamicObject) -> String {
    o.metadata.resource_version.clone().unwrap_or_default()
}

/// Drives a kube-runtime watcher and keeps the view a reflector would.
struct Tracker {
    stream: BoxStream<'static, Result<Event<DynamicObject>, watcher::Error>>,
    buffer: BTreeMap<String, DynamicObject>,
    view: BTreeMap<String, DynamicObject>,
    inits_done: usize,
    log: Vec<String>,
    applied: Vec<DynamicObject>,
    deleted: Vec<DynamicObject>,
    errors: Vec<String>,
}

impl Tracker {
    fn new(api: Api<DynamicObject>, config: watcher::Config) -> Tracker {
        Tracker {
            stream: watcher::watcher(api, config).boxed(),
            buffer: BTreeMap::new(),
            view: BTreeMap::new(),
            inits_done: 0,
            log: Vec::new(),
            applied: Vec::new(),
            deleted: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn record(&mut self, event: Result<Event<DynamicObject>, watcher::Error>) {
        match event {
            Ok(Event::Init) => {
                self.buffer.clear();
                self.log.push("Init".into());
            }
            Ok(Event::InitApply(o)) => {
                self.log.push(format!("InitApply {}", key(&o)));
                self.buffer.insert(key(&o), o);
            }
            Ok(Event::InitDone) => {
                self.view = std::mem::take(&mut self.buffer);
                self.inits_done += 1;
                self.log.push("InitDone".into());
            }
            Ok(Event::Apply(o)) => {
                self.log.push(format!("Apply {}", key(&o)));
                self.view.insert(key(&o), o.clone());
                self.applied.push(o);
            }
            Ok(Event::Delete(o)) => {
                self.log.push(format!("Delete {}", key(&o)));
                self.view.remove(&key(&o));
                self.deleted.push(o);
            }
            Err(watcher::Error::WatchError(status)) => {
                self.log.push(format!("WatchError {}", status.code));
                self.errors.push(format!("WatchError {}", status.code));
            }
            Err(e) => {
                self.log.push(format!("Error {e}"));
                self.errors.push(e.to_string());
            }
        }
    }

    /// Polls the watcher until `done` holds (checked between events), at most `WAIT`.
    async fn drive_until(&mut self, what: &str, done: impl Fn(&Tracker) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; watcher log: {:?}",
                self.log
            );
            match tokio::time::timeout(Duration::from_millis(50), self.stream.next()).await {
                Err(_) => {}
                Ok(None) => panic!("watcher stream ended; log: {:?}", self.log),
                Ok(Some(event)) => self.record(event),
            }
        }
    }

    fn names(&self) -> Vec<String> {
        self.view.keys().cloned().collect()
    }
}

fn count(requests: &[String], exact: &str) -> usize {
    requests.iter().filter(|r| *r == exact).count()
}

fn watch_requests(requests: &[String]) -> Vec<&String> {
    requests
        .iter()
        .filter(|r| r.contains("watch=true"))
        .collect()
}

// Raw HTTP (hyper-util client, no kube layers) for status codes, headers and exact bodies.

struct Raw {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn http() -> HttpClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

async fn send(
    fake: &FakeApi,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", fake.url()));
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    tokio::time::timeout(WAIT, http().request(req))
        .await
        .expect("answer within 5 s")
        .expect("request")
}

async fn raw(fake: &FakeApi, method: &str, path: &str, body: Option<&str>) -> Raw {
    let ct = body.map(|_| "application/json");
    let resp = send(fake, method, path, ct, body.unwrap_or_default()).await;
    read(resp).await
}

async fn read(resp: hyper::Response<hyper::body::Incoming>) -> Raw {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Raw {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

struct RawWatch {
    status: u16,
    headers: hyper::HeaderMap,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl RawWatch {
    async fn open(fake: &FakeApi, path: &str) -> RawWatch {
        let resp = send(fake, "GET", path, None, "").await;
        RawWatch {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next event line (without its `\n`), or None at the clean end of the stream.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(String::from_utf8(line[..line.len() - 1].to_vec()).unwrap());
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("watch line within 5 s");
            match frame {
                None => {
                    assert!(self.buf.is_empty(), "unterminated line at the end");
                    return None;
                }
                Some(frame) => {
                    if let Ok(data) = frame.expect("watch body").into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Rewrites the server-generated values in `mine` (uid, resourceVersion, creationTimestamp, the
/// managedFields time, a Status' details.uid) to the captured ones, so that everything else can be
/// compared byte for byte.
fn align(mine: &str, captured: &str) -> String {
    let m: Value = serde_json::from_str(mine).unwrap();
    let c: Value = serde_json::from_str(captured).unwrap();
    let mut out = mine.to_string();
    for (pointer, key) in [
        ("/metadata/uid", "uid"),
        ("/metadata/resourceVersion", "resourceVersion"),
        ("/metadata/creationTimestamp", "creationTimestamp"),
        ("/metadata/managedFields/0/time", "time"),
        ("/details/uid", "uid"),
    ] {
        if let (Some(a), Some(b)) = (
            m.pointer(pointer).and_then(Value::as_str),
            c.pointer(pointer).and_then(Value::as_str),
        ) {
            out = out.replace(&format!("\"{key}\":\"{a}\""), &format!("\"{key}\":\"{b}\""));
        }
    }
    out
}

/// Replaces every server-generated value with a placeholder, for shape comparisons.
fn masked(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "uid" | "resourceVersion" | "creationTimestamp" | "time" => json!("*"),
                        "continue" if v.as_str().is_some_and(|s| !s.is_empty()) => json!("*"),
                        _ => masked(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(masked).collect()),
        other => other.clone(),
    }
}

fn masked_str(s: &str) -> Value {
    masked(&serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}")))
}

fn decode_token(token: &str) -> Value {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .expect("base64url continue token");
    serde_json::from_slice(&raw).expect("JSON inside the token")
}

fn assert_json_headers(r: &Raw) {
    assert_eq!(r.header("content-type"), Some("application/json"));
    if r.body.len() < 2048 {
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
    } else {
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. initial list, live ADDED/MODIFIED/DELETED, bookmark
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn watcher_lists_then_follows_changes_and_takes_bookmarks() {
    let fake = FakeApi::start().await;
    fake.create_dgd(dgd("team-x", "a"));
    let b = fake.create_dgd(dgd("team-x", "b"));
    fake.create_dgd(dgd("team-y", "c"));
    let list_rv = fake.resource_version();
    let client = client(&fake).await;
    let api = Api::<DynamicObject>::all_with(client.clone(), &dgd_resource());
    let mut t = Tracker::new(api, watcher::Config::default());
    let f = fake.clone();
    t.drive_until("initial list and watch", |t| {
        t.inits_done == 1 && f.watch_count() == 1
    })
    .await;
    assert_eq!(t.names(), ["team-x/a", "team-x/b", "team-y/c"]);
    let requests = fake.requests();
    assert_eq!(requests[0], format!("GET {DGDS}?&limit=500"));
    assert_eq!(
        requests[1],
        format!(
            "GET {DGDS}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={list_rv}"
        )
    );

    fake.create_dgd(dgd("team-x", "d"));
    let mut a = fake.dgds(Some("team-x"))[0].clone();
    a["spec"]["services"]["Frontend"]["replicas"] = json!(2);
    let a2 = fake.update_dgd(a);
    assert_eq!(a2["metadata"]["generation"], 2);
    fake.delete_dgd("team-x", "b");
    let delete_rv = fake.resource_version();
    t.drive_until("ADDED d, MODIFIED a, DELETED b", |t| t.deleted.len() == 1)
        .await;
    assert_eq!(
        t.log[t.log.len() - 3..],
        ["Apply team-x/d", "Apply team-x/a", "Delete team-x/b"]
    );
    assert_eq!(t.names(), ["team-x/a", "team-x/d", "team-y/c"]);
    let modified = &t.view["team-x/a"];
    assert_eq!(rv_of(modified), a2["metadata"]["resourceVersion"]);
    assert_eq!(modified.data["spec"]["services"]["Frontend"]["replicas"], 2);
    // DELETED carries the deletion's RV, not the object's last stored one.
    assert_eq!(rv_of(&t.deleted[0]), delete_rv);
    assert_ne!(rv_of(&t.deleted[0]), b["metadata"]["resourceVersion"]);

    // A Lease write moves the global RV without a DGD event; the bookmark carries it, and the
    // watcher resumes from it after the stream ends.
    let leases: Api<Lease> = Api::namespaced(client, "team-x");
    let lease: Lease = serde_json::from_str(&captured("requests/lease-create.json")).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let bookmark_rv = fake.resource_version();
    assert_ne!(bookmark_rv, delete_rv);
    fake.bookmark();
    fake.drop_watches();
    fake.create_dgd(dgd("team-y", "e"));
    t.drive_until("ADDED e after the re-watch", |t| {
        t.view.contains_key("team-y/e")
    })
    .await;
    let requests = fake.requests();
    let watches = watch_requests(&requests);
    assert_eq!(watches.len(), 2, "{requests:#?}");
    assert!(
        watches[1].ends_with(&format!("&resourceVersion={bookmark_rv}")),
        "{watches:?}"
    );
    assert_eq!(count(&requests, &format!("GET {DGDS}?&limit=500")), 1);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
}

// ---------------------------------------------------------------------------------------------
// 2. dropped streams: re-watch from the last RV, nothing missed
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn watcher_rewatches_from_last_rv_after_dropped_stream() {
    let fake = FakeApi::start().await;
    fake.create_dgd(dgd("team-x", "a"));
    let list_rv = fake.resource_version();
    let api = Api::<DynamicObject>::all_with(client(&fake).await, &dgd_resource());
    let mut t = Tracker::new(api, watcher::Config::default());
    let f = fake.clone();
    t.drive_until("initial list and watch", |t| {
        t.inits_done == 1 && f.watch_count() == 1
    })
    .await;

    fake.drop_watches();
    assert_eq!(fake.watch_count(), 0);
    // All of these happen while no watch is open.
    fake.create_dgd(dgd("team-x", "x"));
    let mut a = fake.dgds(Some("team-x"))[0].clone();
    a["spec"]["services"]["Frontend"]["replicas"] = json!(3);
    fake.update_dgd(a);
    fake.delete_dgd("team-x", "a");
    fake.create_dgd(dgd("team-y", "y"));
    t.drive_until("replayed events", |t| {
        t.view.len() == 2 && t.deleted.len() == 1
    })
    .await;
    assert_eq!(
        t.log[t.log.len() - 4..],
        [
            "Apply team-x/x",
            "Apply team-x/a",
            "Delete team-x/a",
            "Apply team-y/y"
        ]
    );
    assert_eq!(t.names(), ["team-x/x", "team-y/y"]);

    // Again, with the watch now resumed from the last event's RV.
    let last_rv = fake.resource_version();
    t.drive_until("watch reopened", |_| f.watch_count() == 1)
        .await;
    fake.drop_watches();
    fake.create_dgd(dgd("team-x", "z"));
    t.drive_until("ADDED z", |t| t.view.contains_key("team-x/z"))
        .await;
    t.drive_until("watch reopened", |_| f.watch_count() == 1)
        .await;

    let requests = fake.requests();
    assert_eq!(count(&requests, &format!("GET {DGDS}?&limit=500")), 1);
    let watches = watch_requests(&requests);
    assert_eq!(watches.len(), 3, "{requests:#?}");
    assert!(watches[1].ends_with(&format!("&resourceVersion={list_rv}")));
    assert!(watches[2].ends_with(&format!("&resourceVersion={last_rv}")));
    assert!(t.errors.is_empty(), "{:?}", t.errors);
}

// ---------------------------------------------------------------------------------------------
// 3. expire(): 410 ERROR event, relist, correct set
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn watcher_relists_after_expire() {
    let fake = FakeApi::start().await;
    fake.create_dgd(dgd("team-x", "a"));
    fake.create_dgd(dgd("team-x", "b"));
    let api = Api::<DynamicObject>::all_with(client(&fake).await, &dgd_resource());
    let mut t = Tracker::new(api, watcher::Config::default());
    let f = fake.clone();
    t.drive_until("initial list and watch", |t| {
        t.inits_done == 1 && f.watch_count() == 1
    })
    .await;

    fake.expire();
    fake.delete_dgd("team-x", "a");
    fake.create_dgd(dgd("team-y", "c"));
    t.drive_until("relist", |t| t.inits_done == 2).await;
    t.drive_until("final set", |t| t.view.len() == 2 && f.watch_count() == 1)
        .await;
    assert_eq!(t.names(), ["team-x/b", "team-y/c"]);
    assert_eq!(t.errors, ["WatchError 410"]);
    let requests = fake.requests();
    assert_eq!(count(&requests, &format!("GET {DGDS}?&limit=500")), 2);

    // A paged LIST whose continue token predates another expire() restarts from scratch.
    for i in 0..3 {
        fake.create_dgd(dgd("team-z", &format!("p{i}")));
    }
    fake.set_delay(
        "GET",
        &format!("{DGDS}?&limit=2&continue="),
        Duration::from_millis(300),
    );
    let api = Api::<DynamicObject>::all_with(client(&fake).await, &dgd_resource());
    let mut paged = Tracker::new(api, watcher::Config::default().page_size(2));
    let expirer = {
        let f = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            f.expire();
        })
    };
    paged
        .drive_until("paged list after a failed continue", |t| t.inits_done == 1)
        .await;
    expirer.await.unwrap();
    assert_eq!(paged.view.len(), 5);
    assert!(
        paged.errors.iter().any(|e| e.contains("410")),
        "{:?}",
        paged.errors
    );
}

#[tokio::test]
async fn streaming_list_watcher() {
    let fake = FakeApi::start().await;
    fake.create_dgd(dgd("team-x", "a"));
    fake.create_dgd(dgd("team-x", "b"));
    fake.create_dgd(dgd("team-y", "c"));
    let api = Api::<DynamicObject>::all_with(client(&fake).await, &dgd_resource());
    let mut t = Tracker::new(api, watcher::Config::default().streaming_lists());
    let f = fake.clone();
    t.drive_until("initial events", |t| {
        t.inits_done == 1 && f.watch_count() == 1
    })
    .await;
    assert_eq!(t.names(), ["team-x/a", "team-x/b", "team-y/c"]);
    assert_eq!(
        fake.requests()[0],
        format!(
            "GET {DGDS}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0"
        )
    );
    fake.create_dgd(dgd("team-x", "d"));
    t.drive_until("ADDED d", |t| t.view.contains_key("team-x/d"))
        .await;

    fake.expire();
    fake.delete_dgd("team-x", "a");
    t.drive_until("second initial events", |t| t.inits_done == 2)
        .await;
    t.drive_until("final set", |t| t.view.len() == 3).await;
    assert_eq!(t.names(), ["team-x/b", "team-x/d", "team-y/c"]);
    let requests = fake.requests();
    assert!(
        requests.iter().all(|r| r.contains("watch=true")),
        "{requests:#?}"
    );
    assert_eq!(t.errors, ["WatchError 410"]);
}

#[tokio::test]
async fn namespaced_paged_watcher() {
    let fake = FakeApi::start().await;
    fake.create_dgd(dgd("team-x", "a"));
    fake.create_dgd(dgd("team-x", "b"));
    fake.create_dgd(dgd("team-y", "c"));
    let api = Api::<DynamicObject>::namespaced_with(client(&fake).await, "team-x", &dgd_resource());
    let mut t = Tracker::new(api, watcher::Config::default().page_size(1));
    let f = fake.clone();
    t.drive_until("initial list", |t| {
        t.inits_done == 1 && f.watch_count() == 1
    })
    .await;
    assert_eq!(t.names(), ["team-x/a", "team-x/b"]);
    let requests = fake.requests();
    assert_eq!(requests[0], format!("GET {TEAM_X_DGDS}?&limit=1"));
    assert!(requests[1].starts_with(&format!("GET {TEAM_X_DGDS}?&limit=1&continue=")));
    assert!(requests[2].starts_with(&format!("GET {TEAM_X_DGDS}?&watch=true")));
    fake.create_dgd(dgd("team-y", "other"));
    fake.create_dgd(dgd("team-x", "e"));
    t.drive_until("ADDED e", |t| t.view.contains_key("team-x/e"))
        .await;
    assert!(!t.log.iter().any(|l| l.contains("team-y")), "{:?}", t.log);
}

// ---------------------------------------------------------------------------------------------
// 4. GET one DGD
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_dgd_found_and_not_found() {
    let fake = FakeApi::start().await;
    let stored = fake.create_dgd(dgd("team-x", "a"));
    let api = Api::<DynamicObject>::namespaced_with(client(&fake).await, "team-x", &dgd_resource());
    let a = api.get("a").await.expect("200");
    assert_eq!(
        a.metadata.uid.as_deref(),
        stored["metadata"]["uid"].as_str()
    );
    assert_eq!(a.metadata.generation, Some(1));
    assert_eq!(a.data["spec"], stored["spec"]);
    match api.get("zz-missing").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
            assert_eq!(
                status.message,
                "dynamographdeployments.nvidia.com \"zz-missing\" not found"
            );
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    assert!(api.get_opt("zz-missing").await.unwrap().is_none());
    let deleted = api.delete("a", &DeleteParams::default()).await.unwrap();
    let status = deleted.right().expect("a Status, not the object");
    assert!(status.is_success());
    assert!(fake.dgds(None).is_empty());
    assert_eq!(
        fake.requests(),
        [
            format!("GET {TEAM_X_DGDS}/a"),
            format!("GET {TEAM_X_DGDS}/zz-missing"),
            format!("GET {TEAM_X_DGDS}/zz-missing"),
            format!("DELETE {TEAM_X_DGDS}/a?"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Leases through kube-rs, injected failures and delays
// ---------------------------------------------------------------------------------------------

fn api_code(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn lease_lifecycle_and_injected_failures() {
    let fake = FakeApi::start().await;
    let leases: Api<Lease> = Api::namespaced(client(&fake).await, "team-x");
    let pp = PostParams::default();
    let lease: Lease = serde_json::from_str(&captured("requests/lease-create.json")).unwrap();

    let created = leases.create(&pp, &lease).await.expect("201");
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(fake.leases("team-x").len(), 1);

    let (code, reason, message) = api_code(leases.create(&pp, &lease).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(
        message,
        format!("leases.coordination.k8s.io \"{LEASE_NAME}\" already exists")
    );

    let got = leases.get(LEASE_NAME).await.expect("200");
    assert_eq!(got, created);

    let mut next = got.clone();
    next.spec.as_mut().unwrap().holder_identity = Some("team-x/a-replica-1".into());
    let replaced = leases.replace(LEASE_NAME, &pp, &next).await.expect("200");
    assert_ne!(
        replaced.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    assert_eq!(
        fake.leases("team-x")[0]["spec"]["holderIdentity"],
        "team-x/a-replica-1"
    );

    next.spec.as_mut().unwrap().holder_identity = Some("team-x/a-replica-2".into());
    let (code, reason, message) = api_code(leases.replace(LEASE_NAME, &pp, &next).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.ends_with("the object has been modified; please apply your changes to the latest version and try again"));

    // dry run: answered, not stored
    let dry: Lease = serde_json::from_str(&captured("requests/lease-dryrun.json")).unwrap();
    let dry_pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = leases.create(&dry_pp, &dry).await.expect("dry-run 201");
    assert!(answered.metadata.resource_version.is_none());
    assert_eq!(fake.leases("team-x").len(), 1);

    // injected 500: the client sees it; the next request is normal again
    let item = format!("{TEAM_X_LEASES}/{LEASE_NAME}");
    fake.fail_next("GET", &item, 500, 1);
    let (code, reason, _) = api_code(leases.get(LEASE_NAME).await);
    assert_eq!((code, reason.as_str()), (500, "InternalError"));
    leases.get(LEASE_NAME).await.expect("200 after the failure");

    // injected 429 with Retry-After: kube-rs' default retry layer retries it
    fake.fail_next("GET", &item, 429, 1);
    leases.get(LEASE_NAME).await.expect("retried after the 429");
    let requests = fake.requests();
    assert_eq!(count(&requests, &format!("GET {item}")), 5);

    // delay longer than the caller's timeout
    fake.set_delay("GET", &item, Duration::from_secs(2));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), leases.get(LEASE_NAME))
            .await
            .is_err()
    );
    fake.set_delay("GET", &item, Duration::ZERO);
    leases.get(LEASE_NAME).await.expect("no delay any more");

    let deleted = leases
        .delete(LEASE_NAME, &DeleteParams::default())
        .await
        .unwrap();
    let status = deleted.right().expect("a Status, not the object");
    assert!(status.is_success());
    assert_eq!(
        status.details.unwrap().uid,
        created.metadata.uid.clone().unwrap()
    );
    assert!(fake.leases("team-x").is_empty());
    let (code, reason, _) = api_code(leases.delete(LEASE_NAME, &DeleteParams::default()).await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(fake.watch_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Bodies, codes and framing compared with the captured apiserver answers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dgd_answers_match_the_captured_ones() {
    let fake = FakeApi::start().await;
    let post = format!("{TEAM_X_DGDS}?");

    // 00: create
    let r = raw(&fake, "POST", &post, Some(&captured("requests/dgd-a.json"))).await;
    assert_eq!(r.status, 201);
    assert_json_headers(&r);
    let cap = captured("00-dgd-create-a-201.json");
    assert_eq!(align(&r.body, &cap), cap);
    let r = raw(&fake, "POST", &post, Some(&captured_dgd("team-x", "b"))).await;
    assert_eq!(r.status, 201);
    let r = raw(
        &fake,
        "POST",
        "/apis/nvidia.com/v1alpha1/namespaces/team-y/dynamographdeployments?",
        Some(&captured_dgd("team-y", "c")),
    )
    .await;
    assert_eq!(r.status, 201);

    // 07b: missing DGD, byte for byte
    let r = raw(&fake, "GET", &format!("{TEAM_X_DGDS}/zz-missing"), None).await;
    assert_eq!(r.status, 404);
    assert_json_headers(&r);
    assert_eq!(r.body, captured("07b-dgd-get-missing-404.json"));

    // 01: the watcher's LIST (chunked, "continue":"")
    let r = raw(&fake, "GET", &format!("{DGDS}?&limit=500"), None).await;
    assert_eq!(r.status, 200);
    assert_json_headers(&r);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        masked_str(&r.body),
        masked_str(&captured("01-list-all-limit500.json"))
    );
    assert_eq!(
        r.json()["metadata"]["resourceVersion"],
        fake.resource_version()
    );

    // 01d: namespaced LIST
    let r = raw(&fake, "GET", &format!("{TEAM_X_DGDS}?&limit=500"), None).await;
    assert_eq!(
        masked_str(&r.body),
        masked_str(&captured("01d-list-team-x-limit500.json"))
    );

    // 02a/02b: paging
    let page1 = raw(&fake, "GET", &format!("{DGDS}?&limit=2"), None).await;
    assert_eq!(page1.status, 200);
    assert_eq!(
        masked_str(&page1.body),
        masked_str(&captured("02a-list-all-limit2-page1.json"))
    );
    let list_rv = page1.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let token = page1.json()["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    let cap_page1: Value =
        serde_json::from_str(&captured("02a-list-all-limit2-page1.json")).unwrap();
    let mut theirs = decode_token(cap_page1["metadata"]["continue"].as_str().unwrap());
    theirs["rv"] = json!(list_rv.parse::<i64>().unwrap());
    assert_eq!(decode_token(&token), theirs);
    let page2 = raw(
        &fake,
        "GET",
        &format!("{DGDS}?&limit=2&continue={token}"),
        None,
    )
    .await;
    assert_eq!(page2.status, 200);
    assert_json_headers(&page2);
    assert_eq!(
        masked_str(&page2.body),
        masked_str(&captured("02b-list-all-limit2-page2.json"))
    );
    assert_eq!(
        page2.json()["metadata"]["resourceVersion"],
        list_rv.as_str()
    );

    // 03a: watch from the list RV, with create d / merge-patch a / delete b / bookmark
    let mut w = RawWatch::open(
        &fake,
        &format!(
            "{DGDS}?&watch=true&timeoutSeconds=20&allowWatchBookmarks=true&resourceVersion={list_rv}"
        ),
    )
    .await;
    assert_eq!(w.status, 200);
    assert_eq!(w.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(w.headers.get("transfer-encoding").unwrap(), "chunked");
    assert_eq!(fake.watch_count(), 1);

    let r = raw(&fake, "POST", &post, Some(&captured("requests/dgd-d.json"))).await;
    let cap = captured("03m1-dgd-create-d-201.json");
    assert_eq!((r.status, align(&r.body, &cap)), (201, cap));
    let patch = send(
        &fake,
        "PATCH",
        &format!("{TEAM_X_DGDS}/a?"),
        Some("application/merge-patch+json"),
        &captured("requests/patch-a.json"),
    )
    .await;
    let r = read(patch).await;
    let cap = captured("03m2-dgd-patch-a-replicas-200.json");
    assert_eq!((r.status, align(&r.body, &cap)), (200, cap));
    let r = raw(
        &fake,
        "DELETE",
        &format!("{TEAM_X_DGDS}/b?"),
        Some(&captured("requests/delete-body.json")),
    )
    .await;
    let cap = captured("03m3-dgd-delete-b-200.json");
    assert_eq!((r.status, align(&r.body, &cap)), (200, cap));
    fake.bookmark();

    let cap_lines: Vec<String> = captured("03a-watch-all-rv221-timeout20.ndjson")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(cap_lines.len(), 4);
    let mut mine = Vec::new();
    for cap_line in &cap_lines {
        let line = w.line().await.expect("an event line");
        assert_eq!(masked_str(&line), masked_str(cap_line), "{line}");
        mine.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    // DELETED b and the BOOKMARK carry the same (deletion) RV, as in the capture.
    assert_eq!(
        mine[2]["object"]["metadata"]["resourceVersion"],
        mine[3]["object"]["metadata"]["resourceVersion"]
    );
    assert_eq!(
        mine[3]["object"]["metadata"]["resourceVersion"],
        fake.resource_version()
    );

    // 07a: GET after the patch
    let r = raw(&fake, "GET", &format!("{TEAM_X_DGDS}/a"), None).await;
    let cap = captured("07a-dgd-get-a-200.json");
    assert_eq!((r.status, align(&r.body, &cap)), (200, cap));

    // 04a: streaming list
    let mut s = RawWatch::open(
        &fake,
        &format!(
            "{DGDS}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0"
        ),
    )
    .await;
    assert_eq!(s.status, 200);
    let cap_end = captured("04a-watch-streaming-list-kubers.ndjson")
        .lines()
        .nth(3)
        .unwrap()
        .to_string();
    let mut names = Vec::new();
    for _ in 0..3 {
        let ev: Value = serde_json::from_str(&s.line().await.unwrap()).unwrap();
        assert_eq!(ev["type"], "ADDED");
        names.push(
            ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(names, ["a", "d", "c"]);
    let end = s.line().await.unwrap();
    assert_eq!(
        end,
        cap_end.replace("\"215\"", &format!("\"{}\"", fake.resource_version()))
    );

    // 05b/05c/05d: after compaction
    fake.expire();
    for open in [&mut w, &mut s] {
        let ev: Value = serde_json::from_str(&open.line().await.unwrap()).unwrap();
        assert_eq!(ev["type"], "ERROR");
        assert_eq!(ev["object"]["code"], 410);
        assert_eq!(
            open.line().await,
            None,
            "the stream ends after the ERROR event"
        );
    }
    assert_eq!(fake.watch_count(), 0);
    let mut old = RawWatch::open(
        &fake,
        &format!(
            "{DGDS}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={list_rv}"
        ),
    )
    .await;
    assert_eq!(old.status, 200);
    let line = old.line().await.unwrap();
    let message = serde_json::from_str::<Value>(&line).unwrap()["object"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.starts_with(&format!("too old resource version: {list_rv} (")));
    let cap = captured("05c-watch-old-rv-410-error-event.ndjson");
    assert_eq!(
        format!("{line}\n"),
        cap.replace("too old resource version: 253 (273)", &message)
    );
    assert_eq!(old.line().await, None);

    let r = raw(
        &fake,
        "GET",
        &format!("{DGDS}?&resourceVersion={list_rv}&resourceVersionMatch=Exact"),
        None,
    )
    .await;
    assert_eq!(r.status, 410);
    assert_json_headers(&r);
    assert_eq!(r.body, captured("05b-list-exact-old-rv-410.json"));

    let r = raw(
        &fake,
        "GET",
        &format!("{DGDS}?&limit=2&continue={token}"),
        None,
    )
    .await;
    assert_eq!(r.status, 410);
    assert_json_headers(&r);
    let cap: Value = serde_json::from_str(&captured("05d-list-continue-expired-410.json")).unwrap();
    let mine = r.json();
    assert_eq!(masked(&mine), masked(&cap));
    let fresh = decode_token(mine["metadata"]["continue"].as_str().unwrap());
    assert_eq!(fresh["rv"], -1);
    assert_eq!(fresh["start"], "team-x/b\u{0}");
    let r = raw(
        &fake,
        "GET",
        &format!(
            "{DGDS}?&limit=2&continue={}",
            mine["metadata"]["continue"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(
        r.status, 200,
        "the inconsistent token from the 410 still works"
    );
    // Served from the current state after "team-x/b": d (created since) and c.
    let list = r.json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["d", "c"]);
}

#[tokio::test]
async fn lease_answers_match_the_captured_ones() {
    let fake = FakeApi::start().await;
    let post = format!("{TEAM_X_LEASES}?");
    let item = format!("{TEAM_X_LEASES}/{LEASE_NAME}");

    // 06a create, 06b again, 06c get, 06d missing
    let r = raw(
        &fake,
        "POST",
        &post,
        Some(&captured("requests/lease-create.json")),
    )
    .await;
    let cap = captured("06a-lease-create-201.json");
    assert_eq!((r.status, align(&r.body, &cap)), (201, cap));
    assert_json_headers(&r);
    let created = r.json();
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let r = raw(
        &fake,
        "POST",
        &post,
        Some(&captured("requests/lease-create.json")),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_json_headers(&r);
    assert_eq!(
        r.body,
        captured("06b-lease-create-again-409-alreadyexists.json")
    );

    let r = raw(&fake, "GET", &item, None).await;
    let cap = captured("06c-lease-get-200.json");
    assert_eq!((r.status, align(&r.body, &cap)), (200, cap));

    let r = raw(
        &fake,
        "GET",
        &format!("{TEAM_X_LEASES}/claim-missing-ffffffffffffffff"),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, captured("06d-lease-get-missing-404.json"));

    // 06e PUT with the current RV, 06f the same RV again (stale now)
    let with_mine = |body: String| {
        body.replace(
            "\"resourceVersion\":\"247\"",
            &format!("\"resourceVersion\":\"{rv}\""),
        )
        .replace("3eed2ad7-0ca4-4a42-8c8f-ad01ca672887", &uid)
    };
    let r = raw(
        &fake,
        "PUT",
        &format!("{item}?"),
        Some(&with_mine(captured("requests/lease-put-current.json"))),
    )
    .await;
    let cap = captured("06e-lease-put-current-rv-200.json");
    assert_eq!((r.status, align(&r.body, &cap)), (200, cap));
    assert_ne!(r.json()["metadata"]["resourceVersion"], rv.as_str());

    let r = raw(
        &fake,
        "PUT",
        &format!("{item}?"),
        Some(&with_mine(captured("requests/lease-put-stale.json"))),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body, captured("06f-lease-put-stale-rv-409-conflict.json"));

    // 06g dry-run create, 06g2 not stored, 06g3 dry-run of an existing name
    let r = raw(
        &fake,
        "POST",
        &format!("{TEAM_X_LEASES}?&dryRun=All"),
        Some(&captured("requests/lease-dryrun.json")),
    )
    .await;
    let cap = captured("06g-lease-create-dryrun-201.json");
    assert_eq!((r.status, align(&r.body, &cap)), (201, cap));
    let r = raw(
        &fake,
        "GET",
        &format!("{TEAM_X_LEASES}/claim-dryrun-0000000000000000"),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, captured("06g2-lease-get-after-dryrun-404.json"));
    let r = raw(
        &fake,
        "POST",
        &format!("{TEAM_X_LEASES}?&dryRun=All"),
        Some(&captured("requests/lease-create.json")),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.body,
        captured("06g3-lease-create-dryrun-existing-409.json")
    );
    assert_eq!(fake.leases("team-x").len(), 1);

    // 06h delete, 06i again
    let r = raw(
        &fake,
        "DELETE",
        &format!("{item}?"),
        Some(&captured("requests/delete-body.json")),
    )
    .await;
    let cap = captured("06h-lease-delete-200.json");
    assert_eq!((r.status, align(&r.body, &cap)), (200, cap));
    let r = raw(
        &fake,
        "DELETE",
        &format!("{item}?"),
        Some(&captured("requests/delete-body.json")),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, captured("06i-lease-delete-missing-404.json"));
    assert!(fake.leases("team-x").is_empty());
}

#[tokio::test]
async fn injected_failures_and_unknown_paths_are_status_bodies() {
    let fake = FakeApi::start().await;
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let cap404: Value = serde_json::from_str(&captured("07b-dgd-get-missing-404.json")).unwrap();

    let r = raw(&fake, "GET", "/api/v1/namespaces/default/pods", None).await;
    assert_eq!(r.status, 404);
    assert_json_headers(&r);
    assert_eq!(
        r.body,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#.to_string() + "\n"
    );
    assert_eq!(keys(&r.json()), keys(&cap404));

    fake.fail_next("GET", DGDS, 429, 1);
    let r = raw(&fake, "GET", &format!("{DGDS}?&limit=500"), None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["reason"], "TooManyRequests");
    assert_eq!(r.json()["details"]["retryAfterSeconds"], 1);
    assert_eq!(keys(&r.json()), keys(&cap404));

    fake.fail_next("*", "/apis/", 500, 2);
    for _ in 0..2 {
        let r = raw(&fake, "GET", &format!("{DGDS}?&limit=500"), None).await;
        assert_eq!(r.status, 500);
        assert_eq!(r.json()["reason"], "InternalError");
        assert_eq!(r.json()["code"], 500);
    }
    let r = raw(&fake, "GET", &format!("{DGDS}?&limit=500"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        format!(
            r#"{{"apiVersion":"nvidia.com/v1alpha1","items":[],"kind":"DynamoGraphDeploymentList","metadata":{{"continue":"","resourceVersion":"{}"}}}}
"#,
            fake.resource_version()
        )
    );
    assert_eq!(fake.requests().len(), 5);
}

#[tokio::test]
async fn watch_ends_at_timeout_seconds_after_a_bookmark() {
    let fake = FakeApi::start().await;
    fake.create_dgd(dgd("team-x", "a"));
    let rv = fake.resource_version();
    let started = tokio::time::Instant::now();
    let mut w = RawWatch::open(
        &fake,
        &format!(
            "{DGDS}?&watch=true&timeoutSeconds=3&allowWatchBookmarks=true&resourceVersion={rv}"
        ),
    )
    .await;
    // Like the apiserver: a BOOKMARK 2 s before the deadline, then a clean end of the stream.
    let line = w.line().await.expect("bookmark");
    assert_eq!(
        line,
        format!(
            r#"{{"type":"BOOKMARK","object":{{"apiVersion":"nvidia.com/v1alpha1","kind":"DynamoGraphDeployment","metadata":{{"resourceVersion":"{rv}"}}}}}}"#
        )
    );
    assert_eq!(w.line().await, None);
    assert!(started.elapsed() >= Duration::from_millis(2900));
    assert_eq!(fake.watch_count(), 0);
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let fake = FakeApi::start().await;
    let mut obj = dgd("team-x", "a");
    obj["metadata"]["finalizers"] = json!(["example.com/keep"]);
    fake.create_dgd(obj);
    let api = Api::<DynamicObject>::all_with(client(&fake).await, &dgd_resource());
    let mut t = Tracker::new(api, watcher::Config::default());
    let f = fake.clone();
    t.drive_until("initial list and watch", |t| {
        t.inits_done == 1 && f.watch_count() == 1
    })
    .await;
    fake.delete_dgd("team-x", "a");
    let marked = fake.dgds(None).remove(0);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    t.drive_until("MODIFIED with deletionTimestamp", |t| {
        t.view["team-x/a"].metadata.deletion_timestamp.is_some()
    })
    .await;
    let mut released = marked;
    released["metadata"]["finalizers"] = json!([]);
    fake.update_dgd(released);
    t.drive_until("DELETED once the finalizer is gone", |t| t.view.is_empty())
        .await;
    assert!(fake.dgds(None).is_empty());
    assert_eq!(
        t.log[t.log.len() - 2..],
        ["Apply team-x/a", "Delete team-x/a"]
    );
}
