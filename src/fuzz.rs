//! The fuzzers' entry points, and the corpus replay's.
//!
//! Each function takes arbitrary bytes, drives the real code with them and panics if an invariant
//! breaks. `fuzz/fuzz_targets/*.rs` (cargo-fuzz, nightly) call them under libFuzzer;
//! `tests/fuzz_corpus.rs` (stable, part of `cargo test`) replays the committed seeds and every
//! crash ever found through the same functions. See `docs/fuzzing.md`.
//!
//! - [`review_body`]: an HTTP body POSTed to `/mutate` and `/validate` of the real router.
//! - [`path`]: a `spec.dynamoNamespace` value given to [`DynamoPath::parse`].
//! - [`validate_input`]: the text of a manifest stream given to the offline validator.

use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use crate::cache::DgdCache;
use crate::engine::path::{MAX_LEN, MAX_SEGMENTS, ROOT, TOKEN_SEPARATOR, quote};
use crate::engine::review::parse_request;
use crate::engine::rules::{MAX_MESSAGE_CHARS, MAX_WARNING_CHARS};
use crate::engine::view::operator_token;
use crate::engine::{DgdIndex, DgdRecord, DgdState, DynamoPath, Policy};
use crate::existing::index_from_text;
use crate::server::app::{AppState, MAX_BODY, MUTATE_PATH, VALIDATE_PATH, router};
use crate::validator::{Report, Validator};

/// The DGDs the fuzzed reviews meet: managed ones at the root and below it in two k8s namespaces
/// (one the captured reviews' `team-x/vllm-agg`, so their pods find their DGD), and an unmanaged
/// one, so the uniqueness, token and pod rules all have something to find.
fn seeded_index() -> DgdIndex {
    let path = |raw: &str| DynamoPath::parse(raw).expect("a valid seed path");
    DgdIndex::from_records([
        DgdRecord::managed("team-x", "vllm-agg", None, path("default/model1")),
        DgdRecord::managed("team-y", "llama", Some("uid-llama"), path("llama/fast")),
        DgdRecord::managed("team-y", "root", Some("uid-root"), DynamoPath::root()),
        DgdRecord {
            namespace: "team-z".to_owned(),
            name: "legacy.v1".to_owned(),
            uid: Some("uid-legacy".to_owned()),
            state: DgdState::Unmanaged {
                operator_token: operator_token("team-z", "legacy.v1"),
            },
        },
    ])
}

/// Built once per process: the runtime and the router, as `serve` builds them (without a live
/// lookup or claims, which need a cluster, and without the dev registry, so that one input's
/// outcome never depends on the inputs before it).
struct Webhook {
    runtime: tokio::runtime::Runtime,
    router: crate::server::app::Admission,
}

static WEBHOOK: LazyLock<Webhook> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // One review at a time: never shed.
    let state = Arc::new(AppState::standalone(
        Arc::new(DgdCache::synced_with(seeded_index())),
        256,
    ));
    Webhook {
        runtime,
        router: router(state),
    }
});

/// An HTTP body POSTed as `application/json` to `/mutate` and to `/validate` of the real router.
///
/// Invariants: the status is 200 or 4xx, never 5xx (the router answers a handler's panic with a
/// 500); a 200 is an AdmissionReview of the request's version whose `response.uid` echoes
/// the request's uid; a denial's message is one line under 250 characters, each warning one line
/// under 120; a patch is base64 of a JSONPatch that applies to the request's object; an error
/// answer is a Kubernetes `Status`.
pub fn review_body(data: &[u8]) {
    let webhook = &*WEBHOOK;
    for endpoint in [MUTATE_PATH, VALIDATE_PATH] {
        let request = Request::post(endpoint)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(data.to_vec()))
            .expect("a valid request");
        let (status, body) = webhook.runtime.block_on(async {
            let response = webhook
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), MAX_BODY)
                .await
                .expect("the answer is read whole");
            (status, body)
        });
        check_answer(endpoint, data, status, &body);
    }
}

fn check_answer(endpoint: &str, data: &[u8], status: StatusCode, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert!(
        status == StatusCode::OK || status.is_client_error(),
        "{endpoint} answered {status}: {text}"
    );
    let answer: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("{endpoint} answered {status} with a body that is not JSON ({e}): {text}")
    });
    if status != StatusCode::OK {
        assert_eq!(answer["kind"], "Status", "{endpoint}: {text}");
        assert_eq!(answer["code"], status.as_u16(), "{endpoint}: {text}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{endpoint}: an error without a message: {text}"
        );
        return;
    }
    // The router admitted the body as a review: the engine's parse of it is what it answered.
    let req = parse_request(data).unwrap_or_else(|e| {
        panic!("{endpoint} answered 200 to a body the engine does not parse: {e}")
    });
    // The answer speaks the request's version, as the API server requires.
    let version = Some(req.types.api_version.as_str())
        .filter(|v| !v.is_empty())
        .unwrap_or("admission.k8s.io/v1");
    assert_eq!(answer["apiVersion"], version, "{endpoint}: {text}");
    assert_eq!(answer["kind"], "AdmissionReview", "{endpoint}: {text}");
    let response = &answer["response"];
    assert_eq!(
        response["uid"], req.uid,
        "{endpoint}: the uid is not echoed: {text}"
    );
    let allowed = response["allowed"]
        .as_bool()
        .unwrap_or_else(|| panic!("{endpoint}: no `allowed`: {text}"));
    if !allowed {
        let message = response["status"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{endpoint}: a denial without a message: {text}"));
        assert!(
            is_one_line(message) && message.chars().count() <= MAX_MESSAGE_CHARS,
            "{endpoint}: a denial message that is not one line under 250 characters: {message:?}"
        );
        assert!(
            response.get("patch").is_none(),
            "{endpoint}: a denial with a patch: {text}"
        );
    }
    if let Some(warnings) = response.get("warnings") {
        for warning in warnings.as_array().expect("warnings are a list") {
            let warning = warning.as_str().expect("a warning is a string");
            assert!(
                is_one_line(warning) && warning.chars().count() <= MAX_WARNING_CHARS,
                "{endpoint}: a warning that is not one line under 120 characters: {warning:?}"
            );
        }
    }
    if let Some(patch) = response.get("patch") {
        use base64::Engine as _;
        assert_eq!(
            endpoint, MUTATE_PATH,
            "only the mutating webhook patches: {text}"
        );
        assert_eq!(response["patchType"], "JSONPatch", "{endpoint}: {text}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().expect("the patch is a base64 string"))
            .expect("the patch is base64");
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes).expect("the patch is a JSONPatch");
        // The object as sent, not as the engine's typed parse saw it (which, e.g., cannot tell a
        // missing `metadata` from an empty one). The typed parse skips fields it ignores without
        // checking them, so it accepts some bodies that are not strictly JSON (invalid UTF-8, a
        // lone surrogate escape in an unknown field): then the parsed object stands in.
        let mut object = serde_json::from_str::<Value>(&String::from_utf8_lossy(data))
            .map(|mut review| review["request"]["object"].take())
            .unwrap_or_else(|_| serde_json::to_value(&req.object).expect("an object serialises"));
        json_patch::patch(&mut object, &patch).unwrap_or_else(|e| {
            panic!(
                "{endpoint}: the patch does not apply to the request's object ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
    }
}

fn is_one_line(text: &str) -> bool {
    !text.contains(['\n', '\r'])
}

/// A `spec.dynamoNamespace` value (the bytes as UTF-8, lossily) given to [`DynamoPath::parse`].
///
/// Invariants: a parsed path is canonical (under the root, at most 63 characters and 8 segments)
/// and parses to itself; its token and label value are well-formed; an error's message is one
/// line and its suggestion is a valid path.
pub fn path(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let _ = quote(&raw);
    match DynamoPath::parse(&raw) {
        Ok(path) => {
            let canonical = path.as_str();
            assert!(canonical.len() <= MAX_LEN, "{canonical:?} is too long");
            assert!(
                canonical.split('/').count() <= MAX_SEGMENTS,
                "{canonical:?} has too many segments"
            );
            assert!(
                canonical == ROOT || canonical.starts_with("default/"),
                "{canonical:?} is not under the root"
            );
            assert_eq!(
                DynamoPath::parse(canonical).as_ref(),
                Ok(&path),
                "the canonical form does not parse to itself"
            );
            assert_eq!(path.is_root(), canonical == ROOT);
            if !path.is_root() {
                assert!(path.is_descendant_of(&DynamoPath::root()));
            }
            assert!(!path.is_descendant_of(&path));
            let token = path.token("team-x");
            let below: Vec<&str> = path.below_root().collect();
            assert_eq!(
                token.split(TOKEN_SEPARATOR).count(),
                below.len() + 1,
                "token {token:?} of {canonical:?} does not split back into its segments"
            );
            assert!(!token.contains(['/', '.']), "token {token:?}");
            let label = path.label_value();
            assert!(
                label.len() <= MAX_LEN && !label.contains('/'),
                "label value {label:?}"
            );
            assert_eq!(label.replace('.', "/"), canonical);
        }
        Err(err) => {
            let message = err.to_string();
            assert!(is_one_line(&message), "message {message:?}");
            assert!(
                DynamoPath::parse(&err.suggestion).is_ok(),
                "suggestion {:?} for {raw:?} is not a valid path",
                err.suggestion
            );
        }
    }
}

/// The text of a manifest stream (the bytes as UTF-8, lossily), as `validate` reads a file and as
/// `--existing` reads the cluster's DGDs.
///
/// The text is validated twice: as new manifests, and against itself as the cluster's DGDs (so a
/// DGD meets itself as an UPDATE). Invariants: nothing panics; the report renders as text and as
/// JSON; every message and source error is one line.
pub fn validate_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_report(validate(DgdIndex::new(), &text));
    if let Ok(existing) = index_from_text(&text, "default") {
        check_report(validate(existing, &text));
    }
}

fn validate(existing: DgdIndex, text: &str) -> Report {
    let mut validator = Validator::new(existing, "default", Policy::default());
    validator.add_text("fuzz.yaml", text);
    validator.finish()
}

fn check_report(report: Report) {
    let json: Value = serde_json::from_str(&report.to_json()).expect("the JSON report is JSON");
    assert_eq!(json["summary"]["sources"], 1);
    let _ = report.to_text();
    assert!(report.exit_code() <= 2);
    for object in &report.objects {
        for message in object.messages.iter().chain(&object.warnings) {
            assert!(is_one_line(message), "message {message:?}");
        }
    }
    for error in &report.errors {
        assert!(
            is_one_line(&error.message),
            "source error {:?}",
            error.message
        );
    }
}
