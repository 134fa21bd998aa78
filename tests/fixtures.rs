//! The table-driven fixture suite. One trial per file under `tests/fixtures/cases/` (see
//! `tests/fixtures/README.md` for the format), plus one trial per DGD in the upstream Dynamo
//! manifests of `../shared/upstream/dynamo/`, wrapped into a CREATE review here.
//!
//! Every trial runs the request through the same functions the server and `review` call, encodes
//! the answer in the wire form, and checks it as the API server would read it: verdict, rule id,
//! warnings, and the object after applying the patch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use dynamo_tenancy::documents::parse_documents;
use dynamo_tenancy::engine::review::{encode_review, parse_request, respond};
use dynamo_tenancy::engine::{
    Context, DgdIndex, DgdRecord, Phase, Policy, RuleId, decide, review_both,
};
use kube::core::DynamicObject;
use libtest_mimic::{Arguments, Failed, Trial};
use serde::Deserialize;
use serde_json::{Value, json};

const MAX_MESSAGE: usize = 250;
const MAX_WARNING: usize = 120;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    phase: PhaseName,
    /// Like `review --namespace`: for requests and existing DGDs that name none.
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default)]
    policy: CasePolicy,
    #[serde(default)]
    existing: Vec<Value>,
    review: Option<Value>,
    /// A review file under `../shared/`, instead of `review`.
    review_file: Option<String>,
    expect: Expect,
}

fn default_namespace() -> String {
    "default".to_owned()
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum PhaseName {
    Mutate,
    Validate,
    #[default]
    Both,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasePolicy {
    #[serde(default = "yes")]
    dyn_compat: bool,
    #[serde(default)]
    deny_warnings: Vec<RuleId>,
}

fn yes() -> bool {
    true
}

impl Default for CasePolicy {
    fn default() -> Self {
        CasePolicy {
            dyn_compat: true,
            deny_warnings: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// The review is refused as input (the server answers 400, `review` exits 2).
    error: Option<String>,
    allowed: Option<bool>,
    /// The denial's rule id; the message must start with `[rule] `.
    rule: Option<RuleId>,
    #[serde(default)]
    message_contains: Vec<String>,
    /// Warning rule ids, in order.
    #[serde(default)]
    warnings: Vec<RuleId>,
    #[serde(default)]
    warnings_contain: Vec<String>,
    /// No patch at all.
    #[serde(default)]
    unchanged: bool,
    /// The object after applying the patch, as changes to the request's object.
    patched: Option<Changes>,
    /// The path the validating phase asks the server to claim (SPEC section 7), or `none`.
    claim: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Changes {
    #[serde(default)]
    set: BTreeMap<String, Value>,
    #[serde(default)]
    remove: Vec<String>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the checkout, or `$DYNAMO_TENANCY_SHARED`.
fn shared_dir() -> PathBuf {
    std::env::var_os("DYNAMO_TENANCY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"))
}

fn read(path: &Path) -> Result<String, Failed> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn yaml_value(text: &str) -> Result<Value, Failed> {
    let mut docs = parse_documents(text)?;
    if docs.len() != 1 {
        return Err(format!("expected one YAML document, found {}", docs.len()).into());
    }
    Ok(docs.remove(0).value)
}

fn run_case_file(path: &Path) -> Result<(), Failed> {
    let case: Case =
        serde_json::from_value(yaml_value(&read(path)?)?).map_err(|e| format!("case file: {e}"))?;
    let review = match (&case.review, &case.review_file) {
        (Some(review), None) => review.clone(),
        (None, Some(file)) => serde_json::from_str(&read(&shared_dir().join(file))?)
            .map_err(|e| format!("{file}: {e}"))?,
        _ => return Err("give exactly one of `review` and `review_file`".into()),
    };
    let policy = Policy {
        dyn_compat: case.policy.dyn_compat,
        deny_warnings: case.policy.deny_warnings.iter().copied().collect(),
    };
    let mut view = DgdIndex::new();
    for obj in &case.existing {
        let obj: DynamicObject =
            serde_json::from_value(obj.clone()).map_err(|e| format!("existing: {e}"))?;
        view.upsert(DgdRecord::from_object(&obj, &case.namespace));
    }
    check(
        &review,
        case.phase,
        &case.namespace,
        &view,
        &policy,
        &case.expect,
    )
}

/// Runs `review` through the engine and checks the wire answer against `expect`.
fn check(
    review: &Value,
    phase: PhaseName,
    namespace: &str,
    view: &DgdIndex,
    policy: &Policy,
    expect: &Expect,
) -> Result<(), Failed> {
    let ctx = Context { view, policy };
    let body = serde_json::to_vec(review).unwrap();
    let answer = parse_request(&body).and_then(|mut req| {
        if req.namespace.as_deref().is_none_or(str::is_empty) {
            req.namespace = Some(namespace.to_owned());
        }
        let (response, decision) = match phase {
            PhaseName::Both => review_both(&req, &ctx)?,
            PhaseName::Mutate => {
                let decision = decide(&req, Phase::Mutate, &ctx)?;
                (respond(&req, &decision), decision)
            }
            PhaseName::Validate => {
                let decision = decide(&req, Phase::Validate, &ctx)?;
                (respond(&req, &decision), decision)
            }
        };
        Ok((req, response, decision.claim))
    });
    if let Some(wanted) = &expect.error {
        return match answer {
            Err(err) if err.to_string().contains(wanted.as_str()) => {
                let text = err.to_string();
                ensure(
                    !text.contains('\n'),
                    format!("error is not one line: {text}"),
                )
            }
            Err(err) => Err(format!("error {err:?} lacks {wanted:?}").into()),
            Ok(_) => Err(format!("expected the error {wanted:?}, got an answer").into()),
        };
    }
    let (req, response, claim) = answer.map_err(|e| format!("unexpected error: {e}"))?;
    if let Some(wanted) = &expect.claim {
        let got = claim.as_ref().map_or("none", |c| c.path.as_str());
        ensure(
            got == wanted,
            format!("claim of {got:?}, expected {wanted:?}"),
        )?;
        if let Some(claim) = &claim {
            let meta = &review["request"]["object"]["metadata"];
            ensure(
                meta["uid"].as_str() == claim.uid.as_deref()
                    && (meta["name"] == claim.name.as_str()
                        || review["request"]["name"] == claim.name.as_str()),
                format!(
                    "claim held by {}/{:?}, not the request's object",
                    claim.name, claim.uid
                ),
            )?;
        }
    }
    let wire: Value = serde_json::from_slice(&encode_review(&response, false)).unwrap();
    let response = &wire["response"];
    ensure(
        wire["apiVersion"] == "admission.k8s.io/v1" && wire["kind"] == "AdmissionReview",
        format!("not an admission.k8s.io/v1 AdmissionReview: {wire}"),
    )?;
    ensure(
        response["uid"] == review["request"]["uid"],
        "uid not echoed".to_owned(),
    )?;
    let allowed = response["allowed"].as_bool().unwrap_or(false);
    let wanted_allowed = expect.allowed.ok_or("expect.allowed is required")?;
    let message = response["status"]["message"].as_str().unwrap_or("");
    ensure(
        allowed == wanted_allowed,
        format!("allowed is {allowed}, expected {wanted_allowed}; message: {message:?}"),
    )?;
    if allowed {
        ensure(
            expect.rule.is_none(),
            "expect.rule given for an allowed case".into(),
        )?;
    } else {
        let rule = expect.rule.ok_or("expect.rule is required when denied")?;
        let prefix = format!("[{rule}] ");
        ensure(
            message.starts_with(&prefix),
            format!("message does not start with {prefix:?}: {message:?}"),
        )?;
        ensure(
            message.chars().count() < MAX_MESSAGE && !message.contains('\n'),
            format!("message is not one line under {MAX_MESSAGE} characters: {message:?}"),
        )?;
        ensure(
            response["status"]["code"] == 403,
            "denial without code 403".into(),
        )?;
        ensure(
            response.get("patch").is_none(),
            "a denial carries a patch".into(),
        )?;
    }
    for part in &expect.message_contains {
        ensure(
            message.contains(part.as_str()),
            format!("message {message:?} lacks {part:?}"),
        )?;
    }
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let ids: Vec<String> = warnings
        .iter()
        .map(|w| w.get(1..6).unwrap_or("").to_owned())
        .collect();
    let wanted_ids: Vec<String> = expect.warnings.iter().map(|r| r.to_string()).collect();
    ensure(
        ids == wanted_ids,
        format!("warnings {warnings:?}, expected ids {wanted_ids:?}"),
    )?;
    for warning in &warnings {
        ensure(
            warning.starts_with('[') && warning.chars().count() < MAX_WARNING,
            format!("warning not under {MAX_WARNING} characters with its id: {warning:?}"),
        )?;
    }
    for part in &expect.warnings_contain {
        ensure(
            warnings.iter().any(|w| w.contains(part.as_str())),
            format!("no warning contains {part:?}: {warnings:?}"),
        )?;
    }
    check_patch(review, response, expect)?;
    if allowed && phase != PhaseName::Validate {
        check_idempotent(review, response, &req, &ctx)?;
    }
    Ok(())
}

fn decode_patch(response: &Value) -> Result<Option<json_patch::Patch>, Failed> {
    let Some(patch) = response.get("patch") else {
        ensure(
            response.get("patchType").is_none(),
            "patchType without a patch".into(),
        )?;
        return Ok(None);
    };
    ensure(
        response["patchType"] == "JSONPatch",
        "patch without patchType JSONPatch".into(),
    )?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().ok_or("patch is not a base64 string")?)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    Ok(Some(
        serde_json::from_slice(&bytes).map_err(|e| format!("patch is not a JSON patch: {e}"))?,
    ))
}

/// The object after the patch must equal the request's object with the expected changes.
fn check_patch(review: &Value, response: &Value, expect: &Expect) -> Result<(), Failed> {
    let patch = decode_patch(response)?;
    let original = &review["request"]["object"];
    if expect.unchanged || expect.allowed == Some(false) {
        ensure(
            expect.patched.is_none(),
            "`unchanged` and `patched` both given".into(),
        )?;
        return match patch {
            None => Ok(()),
            Some(p) => Err(format!("expected no patch, got {}", serde_json::to_string(&p)?).into()),
        };
    }
    let changes = expect
        .patched
        .as_ref()
        .ok_or("an allowed case needs `unchanged: true` or `patched`")?;
    let mut actual = original.clone();
    if let Some(patch) = &patch {
        json_patch::patch(&mut actual, patch).map_err(|e| format!("patch does not apply: {e}"))?;
    }
    let mut wanted = original.clone();
    for pointer in &changes.remove {
        remove_pointer(&mut wanted, pointer)?;
    }
    for (pointer, value) in &changes.set {
        set_pointer(&mut wanted, pointer, value.clone())?;
    }
    if actual != wanted {
        return Err(format!(
            "patched object differs from the expectation\n  patch: {}\n  diff (expected -> actual): {}",
            serde_json::to_string(&patch)?,
            serde_json::to_string(&json_patch::diff(&wanted, &actual))?
        )
        .into());
    }
    Ok(())
}

/// Mutating the patched object again must give no patch.
fn check_idempotent(
    review: &Value,
    response: &Value,
    req: &kube::core::admission::AdmissionRequest<DynamicObject>,
    ctx: &Context<'_>,
) -> Result<(), Failed> {
    let Some(patch) = decode_patch(response)? else {
        return Ok(());
    };
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).map_err(|e| format!("patch does not apply: {e}"))?;
    let mut again = req.clone();
    again.object = Some(serde_json::from_value(object)?);
    let second = decide(&again, Phase::Mutate, ctx).map_err(|e| e.to_string())?;
    ensure(
        second.patch.is_empty(),
        format!(
            "mutation is not idempotent: second patch {}",
            serde_json::to_string(&second.patch)?
        ),
    )
}

fn tokens(pointer: &str) -> Result<Vec<String>, Failed> {
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("pointer {pointer:?} must start with '/'"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// Sets `pointer` in `doc`, creating missing maps; an array index equal to the length appends.
fn set_pointer(doc: &mut Value, pointer: &str, value: Value) -> Result<(), Failed> {
    let tokens = tokens(pointer)?;
    let (last, parents) = tokens.split_last().ok_or("empty pointer")?;
    let mut at = doc;
    for token in parents {
        at = match at {
            Value::Object(map) => map.entry(token.clone()).or_insert_with(|| json!({})),
            Value::Array(items) => {
                let i: usize = token
                    .parse()
                    .map_err(|_| format!("bad index in {pointer}"))?;
                items
                    .get_mut(i)
                    .ok_or_else(|| format!("{pointer}: no element {i}"))?
            }
            _ => return Err(format!("{pointer}: {token} is not in a map or list").into()),
        };
    }
    match at {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad index in {pointer}"))?;
            match i.cmp(&items.len()) {
                std::cmp::Ordering::Less => items[i] = value,
                std::cmp::Ordering::Equal => items.push(value),
                std::cmp::Ordering::Greater => {
                    return Err(format!("{pointer}: index past the end").into());
                }
            }
        }
        _ => return Err(format!("{pointer}: parent is not a map or list").into()),
    }
    Ok(())
}

fn remove_pointer(doc: &mut Value, pointer: &str) -> Result<(), Failed> {
    let escaped = json_patch::jsonptr::PointerBuf::parse(pointer.to_owned())
        .map_err(|e| format!("{pointer}: {e}"))?;
    escaped
        .delete(doc)
        .map(|_| ())
        .ok_or_else(|| format!("{pointer}: nothing to remove").into())
}

fn ensure(condition: bool, message: String) -> Result<(), Failed> {
    if condition {
        Ok(())
    } else {
        Err(message.into())
    }
}

/// One trial per case file.
fn case_trials() -> Vec<Trial> {
    let root = repo_root().join("tests/fixtures/cases");
    let mut files = Vec::new();
    collect_yaml(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let name = file
                .strip_prefix(&root)
                .unwrap()
                .with_extension("")
                .display()
                .to_string();
            Trial::test(format!("case::{name}"), move || run_case_file(&file))
        })
        .collect()
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

#[derive(Deserialize)]
struct UpstreamPaths {
    /// Canonical path by upstream file name, where it is not the root.
    paths: BTreeMap<String, String>,
    namespace: String,
}

/// One trial per DGD in the upstream manifests: a CREATE of it alone is admitted at its path.
fn upstream_trials() -> Vec<Trial> {
    let dir = shared_dir().join("upstream/dynamo");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|f| {
        let name = f.file_name().unwrap().to_string_lossy();
        name.ends_with(".yaml") && !name.starts_with("crd-bases")
    });
    files.sort();
    if files.is_empty() {
        return vec![Trial::test("upstream::manifests-present", move || {
            Err(format!(
                "no upstream manifests under {}; put shared/ beside the checkout or set DYNAMO_TENANCY_SHARED",
                dir.display()
            )
            .into())
        })];
    }
    let expected: UpstreamPaths = serde_json::from_value(
        yaml_value(
            &std::fs::read_to_string(repo_root().join("tests/fixtures/upstream-paths.yaml"))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut trials = Vec::new();
    for file in files {
        let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
        let docs = match read(&file).and_then(|t| parse_documents(&t).map_err(Failed::from)) {
            Ok(docs) => docs,
            Err(err) => {
                let msg = err.message().map(str::to_owned);
                trials.push(Trial::test(format!("upstream::{file_name}"), move || {
                    Err(msg.unwrap_or_default().into())
                }));
                continue;
            }
        };
        for doc in docs
            .into_iter()
            .filter(|d| d.value["kind"] == "DynamoGraphDeployment")
        {
            let name = doc.value["metadata"]["name"]
                .as_str()
                .unwrap_or("?")
                .to_owned();
            let path = expected
                .paths
                .get(&file_name)
                .cloned()
                .unwrap_or_else(|| "default".to_owned());
            let namespace = expected.namespace.clone();
            trials.push(Trial::test(
                format!("upstream::{file_name}::{name}"),
                move || upstream_create_admitted(doc.value, &namespace, &path),
            ));
        }
    }
    trials
}

fn upstream_create_admitted(dgd: Value, namespace: &str, path: &str) -> Result<(), Failed> {
    let has_annotations = dgd["metadata"].get("annotations").is_some();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000001",
            "kind": {"group": "nvidia.com", "version": "v1alpha1", "kind": "DynamoGraphDeployment"},
            "resource": {"group": "nvidia.com", "version": "v1alpha1", "resource": "dynamographdeployments"},
            "name": dgd["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": dgd,
            "oldObject": null,
            "dryRun": false,
        }
    });
    let mut set = BTreeMap::new();
    set.insert("/spec/dynamoNamespace".to_owned(), json!(path));
    if has_annotations {
        set.insert(
            "/metadata/annotations/nvidia.com~1dynamo-namespace-path".to_owned(),
            json!(path),
        );
    } else {
        set.insert(
            "/metadata/annotations".to_owned(),
            json!({"nvidia.com/dynamo-namespace-path": path}),
        );
    }
    let expect = Expect {
        error: None,
        allowed: Some(true),
        rule: None,
        message_contains: vec![],
        warnings: vec![],
        warnings_contain: vec![],
        unchanged: false,
        patched: Some(Changes {
            set,
            remove: vec![],
        }),
        claim: Some(path.to_string()),
    };
    check(
        &review,
        PhaseName::Both,
        namespace,
        &DgdIndex::new(),
        &Policy::default(),
        &expect,
    )
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = case_trials();
    trials.extend(upstream_trials());
    libtest_mimic::run(&args, trials).exit();
}
