//! `dynamo-tenancy validate`, run as CI pipelines run it: the real binary over files on disk.
//!
//! One trial per case under `tests/fixtures/validate/` (format in its README), and the upstream
//! Dynamo manifests of `../shared/upstream/dynamo/`: every file alone, and the whole folder at
//! once, against the verdicts listed in `tests/fixtures/validate-upstream.yaml`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dynamo_tenancy::documents::parse_documents;
use libtest_mimic::{Arguments, Failed, Trial};
use serde::Deserialize;
use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared_dir() -> PathBuf {
    std::env::var_os("DYNAMO_TENANCY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"))
}

fn read(path: &Path) -> Result<String, Failed> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Failed> {
    let mut docs = parse_documents(&read(path)?)?;
    if docs.len() != 1 {
        return Err(format!("{}: expected one YAML document", path.display()).into());
    }
    serde_json::from_value(docs.remove(0).value)
        .map_err(|e| format!("{}: {e}", path.display()).into())
}

fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<(), Failed> {
    if ok { Ok(()) } else { Err(message().into()) }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    description: String,
    /// Files written under a fresh directory, by path relative to it.
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// Text for `--existing`.
    existing: Option<String>,
    /// Text on stdin (give `-` in `paths`).
    stdin: Option<String>,
    /// What to validate, relative to the directory (default: the directory itself).
    #[serde(default)]
    paths: Vec<String>,
    /// More arguments, e.g. `[--namespace, team-x]`.
    #[serde(default)]
    args: Vec<String>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    exit: i32,
    /// Every object reported, in order.
    #[serde(default)]
    objects: Vec<ExpectObject>,
    /// Summary counts that must match (the others are not checked).
    #[serde(default)]
    summary: BTreeMap<String, u64>,
    /// Source errors: substrings, one per error line on stderr, in order.
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectObject {
    /// `file:line` or `file:line (item N)`, the file relative to the case directory.
    at: Option<String>,
    /// `namespace/name`.
    object: String,
    #[serde(default = "dgd_kind")]
    kind: String,
    verdict: String,
    /// Rule ids that fired, exactly (denial first, then warnings).
    #[serde(default)]
    rules: Vec<String>,
    /// The canonical path; `~` for none. Unchecked when absent.
    #[serde(default, deserialize_with = "some_value")]
    path: Option<Value>,
    #[serde(default, deserialize_with = "some_value")]
    token: Option<Value>,
    #[serde(default)]
    message_contains: Vec<String>,
    #[serde(default)]
    warnings_contain: Vec<String>,
}

/// Keeps an explicit `null` apart from an absent field.
fn some_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn dgd_kind() -> String {
    "DynamoGraphDeployment".to_owned()
}

fn run_binary(dir: &Path, args: &[String], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dynamo-tenancy"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default().as_bytes());
    child.wait_with_output().unwrap()
}

fn case_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dynamo-tenancy-validate-{}-{}",
        std::process::id(),
        name.replace('/', "_")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_case(name: &str, file: &Path) -> Result<(), Failed> {
    let case: Case = yaml(file)?;
    let dir = case_dir(name);
    for (path, text) in &case.files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let mut args = vec!["validate".to_owned(), "-o".to_owned(), "json".to_owned()];
    if let Some(existing) = &case.existing {
        std::fs::write(dir.join(".existing.yaml"), existing).unwrap();
        args.extend(["--existing".to_owned(), ".existing.yaml".to_owned()]);
    }
    args.extend(case.args.iter().cloned());
    if case.paths.is_empty() {
        args.push(".".to_owned());
    } else {
        args.extend(case.paths.iter().cloned());
    }
    let out = run_binary(&dir, &args, case.stdin.as_deref());
    let result = check_output(&out, &case.expect);
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The report's source, relative to the case directory.
fn relative(source: &str) -> &str {
    source.strip_prefix("./").unwrap_or(source)
}

fn check_output(out: &Output, expect: &Expect) -> Result<(), Failed> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure(out.status.code() == Some(expect.exit), || {
        format!(
            "exit {:?}, expected {}; stderr: {stderr}; stdout: {}",
            out.status.code(),
            expect.exit,
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    ensure(!stderr.contains("panicked"), || format!("panic: {stderr}"))?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("stdout is not JSON ({e}); stderr: {stderr}"))?;
    ensure(report["schema"] == "dynamo-tenancy.validate/v1", || {
        format!("schema: {}", report["schema"])
    })?;
    let lines: Vec<&str> = stderr.lines().collect();
    ensure(lines.len() == expect.errors.len(), || {
        format!(
            "stderr has {} lines, expected {}: {stderr}",
            lines.len(),
            expect.errors.len()
        )
    })?;
    for (line, wanted) in lines.iter().zip(&expect.errors) {
        ensure(line.contains(wanted.as_str()), || {
            format!("stderr line {line:?} lacks {wanted:?}")
        })?;
    }
    let objects = report["objects"].as_array().cloned().unwrap_or_default();
    ensure(objects.len() == expect.objects.len(), || {
        format!(
            "{} objects reported, expected {}: {}",
            objects.len(),
            expect.objects.len(),
            serde_json::to_string_pretty(&objects).unwrap()
        )
    })?;
    for (got, want) in objects.iter().zip(&expect.objects) {
        check_object(got, want).map_err(|e| {
            Failed::from(format!(
                "{}: {}\n{}",
                want.object,
                e.message().unwrap_or_default(),
                serde_json::to_string_pretty(got).unwrap()
            ))
        })?;
    }
    for (key, wanted) in &expect.summary {
        ensure(report["summary"][key] == *wanted, || {
            format!(
                "summary.{key} is {}, expected {wanted}",
                report["summary"][key]
            )
        })?;
    }
    Ok(())
}

fn check_object(got: &Value, want: &ExpectObject) -> Result<(), Failed> {
    let text = |key: &str| got[key].as_str().unwrap_or_default().to_owned();
    let object = format!("{}/{}", text("namespace"), text("name"));
    ensure(object == want.object, || format!("object is {object}"))?;
    ensure(text("kind") == want.kind, || {
        format!("kind is {}", text("kind"))
    })?;
    ensure(text("verdict") == want.verdict, || {
        format!("verdict is {}", text("verdict"))
    })?;
    if let Some(at) = &want.at {
        let mut place = format!("{}:{}", relative(&text("source")), got["line"]);
        if let Some(item) = got["item"].as_u64() {
            place.push_str(&format!(" (item {item})"));
        }
        ensure(&place == at, || format!("at {place}, expected {at}"))?;
    }
    let rules: Vec<String> = got["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    ensure(rules == want.rules, || format!("rules are {rules:?}"))?;
    if let Some(path) = &want.path {
        ensure(&got["canonicalPath"] == path, || {
            format!("canonicalPath is {}", got["canonicalPath"])
        })?;
    }
    if let Some(token) = &want.token {
        ensure(&got["token"] == token, || {
            format!("token is {}", got["token"])
        })?;
    }
    let messages = got["messages"].as_array().cloned().unwrap_or_default();
    for message in &messages {
        let message = message.as_str().unwrap_or_default();
        ensure(
            !message.contains('\n') && message.chars().count() < 250,
            || format!("message is not one short line: {message:?}"),
        )?;
    }
    // A denial's message opens with its rule id.
    if text("verdict") == "denied" {
        let first = messages.first().and_then(Value::as_str).unwrap_or_default();
        ensure(first.starts_with(&format!("[{}] ", rules[0])), || {
            format!("denial {first:?} does not start with its rule id")
        })?;
    }
    for wanted in &want.message_contains {
        ensure(
            messages
                .iter()
                .any(|m| m.as_str().unwrap_or_default().contains(wanted.as_str())),
            || format!("no message contains {wanted:?}"),
        )?;
    }
    let warnings = got["warnings"].as_array().cloned().unwrap_or_default();
    for wanted in &want.warnings_contain {
        ensure(
            warnings
                .iter()
                .any(|m| m.as_str().unwrap_or_default().contains(wanted.as_str())),
            || format!("no warning contains {wanted:?}"),
        )?;
    }
    Ok(())
}

fn case_trials() -> Vec<Trial> {
    let root = repo_root().join("tests/fixtures/validate");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let name = file.file_stem().unwrap().to_string_lossy().into_owned();
            Trial::test(format!("validate::{name}"), move || run_case(&name, &file))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upstream {
    /// The verdicts of each upstream file validated alone.
    files: BTreeMap<String, Expect>,
    /// The verdicts of the whole folder validated at once.
    folder: Expect,
}

fn upstream_trials() -> Vec<Trial> {
    let table = repo_root().join("tests/fixtures/validate-upstream.yaml");
    let upstream = match yaml::<Upstream>(&table) {
        Ok(upstream) => upstream,
        Err(err) => {
            let message = err.message().unwrap_or_default().to_owned();
            return vec![Trial::test("upstream::table", move || Err(message.into()))];
        }
    };
    let dir = shared_dir().join("upstream/dynamo");
    let mut trials = Vec::new();
    // Every manifest in the folder must have its row: a new upstream file is a new row.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".yaml"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let listed: Vec<String> = upstream.files.keys().cloned().collect();
    {
        let names = names.clone();
        trials.push(Trial::test("upstream::every-file-listed", move || {
            ensure(names == listed, || {
                format!("files {names:?}\nlisted {listed:?}")
            })
        }));
    }
    for (name, expect) in upstream.files {
        let dir = dir.clone();
        trials.push(Trial::test(format!("upstream::alone::{name}"), move || {
            let args = ["validate", "-o", "json", &name].map(str::to_owned);
            check_output(&run_binary(&dir, &args, None), &expect)
        }));
    }
    let folder = upstream.folder;
    trials.push(Trial::test("upstream::folder-at-once", move || {
        let args = ["validate", "-o", "json", "."].map(str::to_owned);
        check_output(&run_binary(&dir, &args, None), &folder)
    }));
    trials
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = case_trials();
    trials.extend(upstream_trials());
    libtest_mimic::run(&args, trials).exit();
}
