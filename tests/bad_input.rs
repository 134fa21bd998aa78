//! The bad-input corpus (issue 6): every file under `tests/fixtures/bad-input/` is a request body,
//! sent to the real binary (`serve --dev`) over TLS and HTTP/2 as the API server sends it, and
//! answered with a 4xx or a well-formed AdmissionReview, never a crash, a hang or a 5xx. The
//! format (raw bodies, generator recipes, `cases.yaml`) is in `tests/fixtures/bad-input/README.md`.
//!
//! One trial per case; after them all, the server must still answer a good review and `/healthz`,
//! and must not have counted a handler panic.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use hyper::Version;
use libtest_mimic::{Arguments, Failed, Trial};
use serde::Deserialize;
use serde_json::Value;

/// Every answer must arrive within this (the API server's `timeoutSeconds: 5`).
const DEADLINE: Duration = Duration::from_secs(5);
const QUERY: &str = "?timeout=5s";
const MAX_MESSAGE: usize = 250;
const MAX_WARNING: usize = 120;
/// The registry DGD the pod cases belong to: `team-a/llama` at `default/llama/fast`.
const REGISTRY_DGD: &str = "examples/reviews/dgd-create.json";
const GOOD_POD: &str = "examples/reviews/pod-create.json";

fn corpus_dir() -> PathBuf {
    repo("tests/fixtures/bad-input")
}

/// One entry of `cases.yaml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[allow(dead_code)]
    about: String,
    /// Expected class at `/mutate`; the case is not sent there when absent.
    mutate: Option<Value>,
    /// Expected class at `/validate`.
    validate: Option<Value>,
    #[serde(default = "json_content_type")]
    content_type: String,
    #[serde(default)]
    message_contains: OneOrMany,
    /// A reported bug: the case still runs and its trial fails, loudly, until the bug is fixed.
    known_failure: Option<String>,
}

fn json_content_type() -> String {
    "application/json".to_owned()
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// What an endpoint must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// An HTTP error with a Kubernetes `Status` body (400 or 413).
    Status(u16),
    /// 200, allowed; `unchanged` = without a patch.
    Allow { unchanged: bool },
    /// 200, allowed: false, code 403, the message starting with `[DT0` (or with this rule).
    Deny { rule: Option<String> },
}

impl Expect {
    fn parse(value: &Value) -> Result<Expect, String> {
        let text = match value {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            other => {
                return Err(format!(
                    "an expectation is a string or a number, not {other}"
                ));
            }
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["400"] => Ok(Expect::Status(400)),
            ["413"] => Ok(Expect::Status(413)),
            ["allow"] => Ok(Expect::Allow { unchanged: false }),
            ["allow", "unchanged"] => Ok(Expect::Allow { unchanged: true }),
            ["deny"] => Ok(Expect::Deny { rule: None }),
            ["deny", rule] if rule.len() == 5 && rule.starts_with("DT0") => Ok(Expect::Deny {
                rule: Some((*rule).to_owned()),
            }),
            _ => Err(format!(
                "unknown expectation {text:?}: use 400, 413, allow, allow unchanged, deny or deny DT0nn"
            )),
        }
    }
}

/// A case ready to send.
struct Case {
    name: String,
    file: PathBuf,
    content_type: String,
    endpoints: Vec<(&'static str, Expect)>,
    message_contains: Vec<String>,
    known_failure: Option<String>,
}

/// Reads `cases.yaml` and pairs every entry with its body file; a body without an entry, or an
/// entry without a body, is an error (so no case is silently skipped).
fn load_cases() -> Result<Vec<Case>, String> {
    let dir = corpus_dir();
    let index =
        std::fs::read_to_string(dir.join("cases.yaml")).map_err(|e| format!("cases.yaml: {e}"))?;
    let entries: BTreeMap<String, Entry> =
        serde_saphyr::from_str(&index).map_err(|e| format!("cases.yaml: {e}"))?;
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for item in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = item.map_err(|e| e.to_string())?.path();
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        let name = if let Some(name) = file_name.strip_suffix(".gen.json") {
            name
        } else if let Some(name) = file_name.strip_suffix(".json") {
            name
        } else {
            continue;
        };
        if files.insert(name.to_owned(), path.clone()).is_some() {
            return Err(format!("{name}: both a raw body and a recipe"));
        }
    }
    let mut problems = Vec::new();
    for name in files.keys().filter(|n| !entries.contains_key(*n)) {
        problems.push(format!(
            "{name}: a body file without an entry in cases.yaml"
        ));
    }
    let mut cases = Vec::new();
    for (name, entry) in entries {
        let Some(file) = files.get(&name) else {
            problems.push(format!(
                "{name}: in cases.yaml but there is no {name}.json or {name}.gen.json"
            ));
            continue;
        };
        let mut endpoints = Vec::new();
        for (endpoint, value) in [("mutate", &entry.mutate), ("validate", &entry.validate)] {
            if let Some(value) = value {
                match Expect::parse(value) {
                    Ok(expect) => endpoints.push((endpoint, expect)),
                    Err(err) => problems.push(format!("{name}: {endpoint}: {err}")),
                }
            }
        }
        if endpoints.is_empty() {
            problems.push(format!("{name}: names neither mutate nor validate"));
        }
        cases.push(Case {
            name,
            file: file.clone(),
            content_type: entry.content_type,
            endpoints,
            message_contains: entry
                .message_contains
                .items()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            known_failure: entry.known_failure,
        });
    }
    if problems.is_empty() {
        Ok(cases)
    } else {
        Err(problems.join("\n"))
    }
}

/// A generator recipe (`<name>.gen.json`): a base review and edits, for bodies too large to keep.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipe {
    /// A file in the repository (`examples/reviews/pod-create.json`) or, with `shared:`, under
    /// `../shared/` (`shared:captured/dgd-update-validate.json`).
    base: String,
    ops: Vec<Op>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Op {
    /// Sets the JSON pointer `at` to `value`, creating missing maps on the way.
    Set { at: String, value: Value },
    /// Removes the member at `at`.
    Remove { at: String },
    /// Sets `at` to `count` copies of `unit` joined by `separator`.
    String {
        at: String,
        unit: String,
        count: usize,
        #[serde(default)]
        separator: String,
    },
    /// Appends `count` copies of `item` to the list at `at` (created when missing) or, with
    /// `key`, to the map at `at` under the key `key`; `{i}` in `key` and in any string of `item`
    /// becomes the copy's number.
    Append {
        at: String,
        item: Value,
        count: usize,
        key: Option<String>,
    },
    /// Sets `at` to `depth` nested lists (`[[[...]]]`) or maps (`{"a":{"a":...}}`) around `0`,
    /// written as text (a value that deep would overflow the stack of any recursive code).
    Nest {
        at: String,
        depth: usize,
        shape: Shape,
    },
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Shape {
    List,
    Map,
}

fn base_file(base: &str) -> PathBuf {
    match base.strip_prefix("shared:") {
        Some(rest) => shared(rest),
        None => repo(base),
    }
}

fn expand(recipe: &Recipe) -> Result<Vec<u8>, String> {
    let base = base_file(&recipe.base);
    let text = std::fs::read(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let mut value: Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", base.display()))?;
    let mut textual = Vec::new();
    for op in &recipe.ops {
        match op {
            Op::Set { at, value: v } => set(&mut value, at, v.clone())?,
            Op::Remove { at } => {
                let (parent, last) = split_pointer(at)?;
                let removed = value
                    .pointer_mut(&parent)
                    .and_then(Value::as_object_mut)
                    .and_then(|m| m.remove(&last));
                if removed.is_none() {
                    return Err(format!("remove: nothing at {at}"));
                }
            }
            Op::String {
                at,
                unit,
                count,
                separator,
            } => set(
                &mut value,
                at,
                Value::from(vec![unit.as_str(); *count].join(separator)),
            )?,
            Op::Append {
                at,
                item,
                count,
                key,
            } => {
                if value.pointer(at).is_none() {
                    let empty = match key {
                        Some(_) => Value::Object(Default::default()),
                        None => Value::Array(Vec::new()),
                    };
                    set(&mut value, at, empty)?;
                }
                match (value.pointer_mut(at), key) {
                    (Some(Value::Array(list)), None) => {
                        list.extend((0..*count).map(|i| numbered(item, i)))
                    }
                    (Some(Value::Object(map)), Some(key)) => map.extend(
                        (0..*count)
                            .map(|i| (key.replace("{i}", &i.to_string()), numbered(item, i))),
                    ),
                    _ => return Err(format!("append: {at} is not a list, or a map with a key")),
                }
            }
            Op::Nest { at, depth, shape } => {
                let placeholder = format!("@@nest-{}@@", textual.len());
                set(&mut value, at, Value::from(placeholder.clone()))?;
                let (open, close) = match shape {
                    Shape::List => ("[", "]"),
                    Shape::Map => ("{\"a\":", "}"),
                };
                let nested = format!("{}0{}", open.repeat(*depth), close.repeat(*depth));
                textual.push((format!("\"{placeholder}\""), nested));
            }
        }
    }
    let mut body = serde_json::to_string(&value).map_err(|e| e.to_string())?;
    for (placeholder, replacement) in textual {
        body = body.replacen(&placeholder, &replacement, 1);
    }
    Ok(body.into_bytes())
}

fn numbered(item: &Value, i: usize) -> Value {
    match item {
        Value::String(s) => Value::from(s.replace("{i}", &i.to_string())),
        Value::Array(items) => Value::Array(items.iter().map(|v| numbered(v, i)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.replace("{i}", &i.to_string()), numbered(v, i)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn split_pointer(at: &str) -> Result<(String, String), String> {
    let (parent, last) = at
        .rsplit_once('/')
        .ok_or_else(|| format!("{at:?} is not a JSON pointer"))?;
    Ok((
        parent.to_owned(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

/// Sets `at`, creating missing maps; a list index equal to the length appends.
fn set(value: &mut Value, at: &str, new: Value) -> Result<(), String> {
    let (parent, last) = split_pointer(at)?;
    if value.pointer(&parent).is_none_or(Value::is_null) {
        set(value, &parent, Value::Object(Default::default()))?;
    }
    match value.pointer_mut(&parent) {
        Some(Value::Object(map)) => {
            map.insert(last, new);
        }
        Some(Value::Array(list)) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("{at}: not a list index"))?;
            match i.cmp(&list.len()) {
                std::cmp::Ordering::Less => list[i] = new,
                std::cmp::Ordering::Equal => list.push(new),
                std::cmp::Ordering::Greater => return Err(format!("{at}: past the end")),
            }
        }
        _ => return Err(format!("{at}: the parent is not a map or a list")),
    }
    Ok(())
}

fn body_of(case: &Case) -> Result<Vec<u8>, String> {
    if case.file.to_string_lossy().ends_with(".gen.json") {
        let text = std::fs::read(&case.file).map_err(|e| e.to_string())?;
        let recipe: Recipe =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", case.file.display()))?;
        expand(&recipe)
    } else {
        std::fs::read(&case.file).map_err(|e| format!("{}: {e}", case.file.display()))
    }
}

/// The running server and a client, shared by every trial.
struct World {
    runtime: tokio::runtime::Runtime,
    server: Server,
    client: HttpsClient,
    _dir: TempDir,
}

impl World {
    fn start() -> World {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = TempDir::new("bad-input");
        let dev_dir = dir.path().join("dev");
        let server = Server::start(&["--dev", "--dev-dir", dev_dir.to_str().unwrap()]);
        let ca = std::fs::read(dev_dir.join("ca.crt")).expect("--dev writes ca.crt");
        let client = {
            let _guard = runtime.enter();
            client(&[&ca], Version::HTTP_2)
        };
        let world = World {
            runtime,
            server,
            client,
            _dir: dir,
        };
        // The pod cases are pods of this DGD, so that they take the mutation's real work.
        let answer = world
            .post(
                "/validate",
                std::fs::read(repo(REGISTRY_DGD)).unwrap(),
                "application/json",
            )
            .expect("the registry DGD is answered");
        assert_eq!(
            answer.json["response"]["allowed"], true,
            "the registry DGD is admitted: {}",
            answer.json
        );
        world
    }

    /// POSTs within [`DEADLINE`]; a timeout or a transport error is an `Err`.
    fn post(&self, endpoint: &str, body: Vec<u8>, content_type: &str) -> Result<Answer, String> {
        let url = self.server.url(&format!("{endpoint}{QUERY}"));
        let started = Instant::now();
        let answer = self.runtime.block_on(async {
            tokio::time::timeout(DEADLINE, post_typed(&self.client, &url, body, content_type)).await
        });
        match answer {
            Err(_) => Err(format!("no answer within {DEADLINE:?} (a hang)")),
            Ok(Err(err)) => Err(format!(
                "no HTTP answer after {:?} (crash or reset?): {err}",
                started.elapsed()
            )),
            Ok(Ok(answer)) => Ok(answer),
        }
    }
}

/// Runs one case at every endpoint it names; all problems are reported, not just the first.
fn run_case(world: &World, case: &Case) -> Result<(), Failed> {
    let body = body_of(case).map_err(|e| format!("the case cannot be built: {e}"))?;
    let sent: Option<Value> = serde_json::from_slice(&body).ok();
    let mut problems = Vec::new();
    for (endpoint, expect) in &case.endpoints {
        let path = format!("/{endpoint}");
        let started = Instant::now();
        match world.post(&path, body.clone(), &case.content_type) {
            Err(err) => problems.push(format!("{path}: {err}")),
            Ok(answer) => {
                let elapsed = started.elapsed();
                for problem in check(case, expect, sent.as_ref(), &answer) {
                    problems.push(format!(
                        "{path} (expected {expect:?}, got {} in {elapsed:?}): {problem}",
                        answer.status
                    ));
                }
            }
        }
    }
    match (&case.known_failure, problems.is_empty()) {
        (None, true) => Ok(()),
        (None, false) => Err(problems.join("\n").into()),
        (Some(bug), false) => Err(format!(
            "KNOWN FAILURE, a reported bug that is not fixed yet: {bug}\n{}",
            problems.join("\n")
        )
        .into()),
        (Some(bug), true) => Err(format!(
            "the case passes now: remove its known_failure from cases.yaml ({bug})"
        )
        .into()),
    }
}

/// Everything wrong with `answer`, as one line each.
fn check(case: &Case, expect: &Expect, sent: Option<&Value>, answer: &Answer) -> Vec<String> {
    let mut problems = Vec::new();
    let status = answer.status.as_u16();
    let json = &answer.json;
    if status >= 500 {
        problems.push(format!("a 5xx is never acceptable: {json}"));
        return problems;
    }
    let message = match expect {
        Expect::Status(code) => {
            if status != *code {
                problems.push(format!("status {status}, not {code}: {}", cut(json)));
            }
            if json["kind"] != "Status" || json["code"] != *code {
                problems.push(format!(
                    "not a Kubernetes Status with code {code}: {}",
                    cut(json)
                ));
            }
            json["message"].as_str().unwrap_or_default().to_owned()
        }
        Expect::Allow { .. } | Expect::Deny { .. } => {
            if status != 200 {
                problems.push(format!("status {status}, not 200: {}", cut(json)));
                return problems;
            }
            problems.extend(check_review(expect, sent, json));
            let response = &json["response"];
            match expect {
                Expect::Deny { .. } => response["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                _ => response["warnings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        }
    };
    for text in &case.message_contains {
        if !message.contains(text.as_str()) {
            problems.push(format!(
                "the message does not contain {text:?}: {message:?}"
            ));
        }
    }
    problems
}

/// A 200 answer read as the API server reads it.
fn check_review(expect: &Expect, sent: Option<&Value>, json: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let response = &json["response"];
    if json["apiVersion"] != "admission.k8s.io/v1" || json["kind"] != "AdmissionReview" {
        problems.push(format!(
            "not an admission.k8s.io/v1 AdmissionReview: {}",
            cut(json)
        ));
    }
    let sent_uid = sent.and_then(|s| s["request"]["uid"].as_str());
    if response["uid"].as_str() != sent_uid || sent_uid.is_none() {
        problems.push(format!(
            "uid not echoed: sent {:?}, got {}",
            sent_uid.map(|u| cut_str(u, 80)),
            cut(&response["uid"])
        ));
    }
    for warning in response["warnings"].as_array().into_iter().flatten() {
        let text = warning.as_str().unwrap_or_default();
        if !text.starts_with("[DT0")
            || text.contains(char::is_control)
            || text.chars().count() >= MAX_WARNING
        {
            problems.push(format!("a malformed warning: {warning}"));
        }
    }
    match expect {
        Expect::Deny { rule } => {
            let message = response["status"]["message"].as_str().unwrap_or_default();
            if response["allowed"] != false {
                problems.push(format!("allowed, not denied: {}", cut(json)));
            } else if response["status"]["code"] != 403 {
                problems.push(format!("a denial without code 403: {}", cut(json)));
            }
            if !message.starts_with("[DT0") {
                problems.push(format!("a denial without a rule id: {message:?}"));
            }
            if let Some(rule) = rule
                && !message.starts_with(&format!("[{rule}] "))
            {
                problems.push(format!("not denied by {rule}: {message:?}"));
            }
            if message.contains(char::is_control) || message.chars().count() >= MAX_MESSAGE {
                problems.push(format!(
                    "a denial is one line under {MAX_MESSAGE} characters: {message:?}"
                ));
            }
            if !response["patch"].is_null() {
                problems.push("a denial carries a patch".to_owned());
            }
        }
        Expect::Allow { unchanged } => {
            if response["allowed"] != true {
                problems.push(format!("denied, not allowed: {}", cut(&response["status"])));
            }
            match (&response["patch"], unchanged) {
                (Value::Null, _) => {}
                (_, true) => problems.push("a patch, where none was expected".to_owned()),
                (patch, false) => {
                    let object = sent.map(|s| &s["request"]["object"]);
                    if let Err(err) = check_patch(patch, &response["patchType"], object) {
                        problems.push(err);
                    }
                }
            }
        }
        Expect::Status(_) => unreachable!("a Status is not a review"),
    }
    problems
}

/// The patch is base64 of a JSON Patch that applies to the object sent.
fn check_patch(patch: &Value, patch_type: &Value, object: Option<&Value>) -> Result<(), String> {
    if patch_type != "JSONPatch" {
        return Err(format!("patchType is {patch_type}, not \"JSONPatch\""));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().ok_or("the patch is not a string")?)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    let ops: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a JSON Patch: {e}"))?;
    if ops.0.is_empty() {
        return Err("an empty patch is sent as no patch".to_owned());
    }
    let mut target = object
        .cloned()
        .ok_or("a patch for a request without an object")?;
    json_patch::patch(&mut target, &ops).map_err(|e| format!("the patch does not apply: {e}"))
}

fn cut(value: &Value) -> String {
    cut_str(&value.to_string(), 400)
}

fn cut_str(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        format!(
            "{}… ({} bytes)",
            text.chars().take(max).collect::<String>(),
            text.len()
        )
    } else {
        text.to_owned()
    }
}

/// After the corpus: the same process still answers, healthily, and never panicked.
fn still_standing(world: &World) -> Result<(), String> {
    let mut problems = Vec::new();
    let pod = std::fs::read(repo(GOOD_POD)).unwrap();
    match world.post("/mutate", pod, "application/json") {
        Ok(answer) => {
            let response = &answer.json["response"];
            let told = response["patch"]
                .as_str()
                .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
                .is_some_and(|p| String::from_utf8_lossy(&p).contains("team-a--llama--fast"));
            if answer.status != 200 || response["allowed"] != true || !told {
                problems.push(format!(
                    "a good pod review is not answered as before: {}",
                    cut(&answer.json)
                ));
            }
        }
        Err(err) => problems.push(format!("a good pod review: {err}")),
    }
    let dgd = review_with(&repo(REGISTRY_DGD), "after-the-corpus", |_| {});
    match world.post("/validate", dgd, "application/json") {
        Ok(answer) if answer.status == 200 && answer.json["response"]["allowed"] == true => {}
        Ok(answer) => problems.push(format!("a good DGD review: {}", cut(&answer.json))),
        Err(err) => problems.push(format!("a good DGD review: {err}")),
    }
    let health = world.runtime.block_on(async {
        let healthz = get(&world.server.health_url("/healthz")).await;
        let metrics = get(&world.server.health_url("/metrics")).await;
        (healthz, metrics)
    });
    match health.0 {
        Ok((200, _)) => {}
        other => problems.push(format!("/healthz: {other:?}")),
    }
    match health.1 {
        Ok((200, metrics)) => {
            let panics = metrics
                .lines()
                .find(|l| l.starts_with("dynamo_tenancy_handler_panics_total"));
            if panics.and_then(|l| l.split_whitespace().nth(1)) != Some("0") {
                problems.push(format!("handler panics: {panics:?}"));
            }
        }
        other => problems.push(format!("/metrics: {other:?}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\nserver log:\n{}",
            problems.join("\n"),
            world.server.log_text()
        ))
    }
}

fn main() {
    let args = Arguments::from_args();
    let cases = match load_cases() {
        Ok(cases) => cases,
        Err(err) => {
            eprintln!("tests/fixtures/bad-input: {err}");
            std::process::exit(101);
        }
    };
    if args.list {
        let trials = cases
            .into_iter()
            .map(|c| Trial::test(c.name, || Ok(())))
            .collect();
        libtest_mimic::run(&args, trials).exit();
    }
    let world = Arc::new(World::start());
    let trials = cases
        .into_iter()
        .map(|case| {
            let world = world.clone();
            Trial::test(case.name.clone(), move || run_case(&world, &case))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let standing = still_standing(&world);
    match &standing {
        Ok(()) => println!("after the corpus: the server still answers, /healthz is 200, 0 panics"),
        Err(err) => eprintln!("after the corpus, the server is not standing:\n{err}"),
    }
    // Stops the server (its Drop) before exiting, which would skip destructors.
    drop(world);
    if standing.is_err() {
        std::process::exit(101);
    }
    conclusion.exit();
}
