//! The real binary, run as a user would: `review` through stdin and stdout, exit codes, and one
//! clear line on stderr for bad input.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dynamo-tenancy"))
}

fn shared(path: &str) -> PathBuf {
    std::env::var_os("DYNAMO_TENANCY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join(path)
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // A process that refuses its arguments exits before reading stdin.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn response(out: &Output) -> Value {
    let review: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    review["response"].clone()
}

fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dynamo-tenancy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn review_both_patches_a_captured_dgd_create() {
    let body = std::fs::read(shared(
        "captured/dgd-create-stock-crd-webhook-patch-mutate.json",
    ))
    .unwrap();
    let out = run(&["review"], &body);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response = response(&out);
    assert_eq!(response["allowed"], true);
    assert_eq!(response["uid"], "323b38dc-4f90-43a2-959d-744de18c81c3");
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(
        patch,
        serde_json::json!([
            {"op": "add", "path": "/spec/dynamoNamespace", "value": "default"},
            {"op": "add", "path": "/metadata/annotations",
             "value": {"nvidia.com/dynamo-namespace-path": "default"}},
        ])
    );
}

#[test]
fn review_with_existing_denies_a_clash_and_exits_1() {
    let existing = temp_file(
        "existing.yaml",
        "apiVersion: nvidia.com/v1alpha1\nkind: DynamoGraphDeployment\nmetadata:\n  name: other\n  namespace: team-x\nspec:\n  dynamoNamespace: default/model1\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ignored\n",
    );
    let body = std::fs::read(shared("captured/dgd-create-validate.json")).unwrap();
    let out = run(
        &[
            "review",
            "--phase",
            "validate",
            "--existing",
            existing.to_str().unwrap(),
        ],
        &body,
    );
    assert_eq!(out.status.code(), Some(1));
    let response = response(&out);
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("[DT003] "), "{message}");
    assert!(message.contains("team-x/other"), "{message}");
    assert!(response.get("patch").is_none());
}

#[test]
fn review_logs_an_unhandled_kind_and_allows_it() {
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": "team-x",
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
        }
    });
    let out = run(&["review"], body.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(0));
    let response = response(&out);
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("apps/v1 Deployment is not handled"), "{log}");
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let err = one_line_error(&run(&["review"], b"{not json"));
    assert!(
        err.contains("not an admission.k8s.io/v1 AdmissionReview"),
        "{err}"
    );
    let err = one_line_error(&run(
        &["review"],
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    ));
    assert!(err.contains("no \"request\""), "{err}");
    let err = one_line_error(&run(
        &["review", "--existing", "/nonexistent/dgds.yaml"],
        b"{}",
    ));
    assert!(err.contains("/nonexistent/dgds.yaml"), "{err}");
    let bad = temp_file("bad.yaml", "kind: DynamoGraphDeployment\nmetadata: [\n");
    let err = one_line_error(&run(
        &["review", "--existing", bad.to_str().unwrap()],
        b"{}",
    ));
    assert!(err.contains("invalid YAML"), "{err}");
    let nameless = temp_file(
        "nameless.yaml",
        "kind: DynamoGraphDeployment\nmetadata: {}\n",
    );
    let err = one_line_error(&run(
        &["review", "--existing", nameless.to_str().unwrap()],
        b"{}",
    ));
    assert!(
        err.contains("line 1") && err.contains("metadata.name"),
        "{err}"
    );
    let err = one_line_error(&run(&["review", "--phase", "sideways"], b"{}"));
    assert!(err.contains("sideways"), "{err}");
    let err = one_line_error(&run(&["review", "--deny-warning", "DT003"], b"{}"));
    assert!(err.contains("already denies"), "{err}");
}

#[test]
fn every_subcommand_answers_help() {
    for sub in ["serve", "review", "validate", "certs"] {
        let out = bin().args([sub, "--help"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{sub} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

#[test]
fn validate_prints_one_line_per_object_and_a_summary() {
    let file = temp_file(
        "validate-text.yaml",
        "apiVersion: nvidia.com/v1alpha1\nkind: DynamoGraphDeployment\nmetadata: {name: a, namespace: team-x}\nspec: {dynamoNamespace: llama}\n---\napiVersion: nvidia.com/v1alpha1\nkind: DynamoGraphDeployment\nmetadata: {name: b, namespace: team-x}\nspec: {dynamoNamespace: default/llama}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    let source = file.to_str().unwrap();
    let out = run(&["validate", source], b"");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with(&format!(
            "{source}:1: DynamoGraphDeployment team-x/a: denied at default/llama: [DT003] "
        )),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with("taken by DGD team-x/b"), "{}", lines[0]);
    assert!(
        lines[1].starts_with(&format!(
            "{source}:6: DynamoGraphDeployment team-x/b: denied"
        )),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        "2 DGDs in 1 source: 0 admitted, 2 denied, 0 name clashes, 0 errors, 0 warnings; \
         1 other document skipped"
    );
    assert!(out.stderr.is_empty());

    let alone = temp_file(
        "validate-alone.yaml",
        "apiVersion: nvidia.com/v1alpha1\nkind: DynamoGraphDeployment\nmetadata: {name: a}\n",
    );
    let out = run(&["validate", alone.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(": DynamoGraphDeployment default/a: admitted at default (token default)"),
        "{stdout}"
    );
}

#[test]
fn validate_names_the_unreadable_file_in_one_line_and_exits_2() {
    let out = run(&["validate", "/nonexistent/dgds.yaml"], b"");
    let err = one_line_error(&out);
    assert!(
        err.contains("/nonexistent/dgds.yaml: No such file"),
        "{err}"
    );
    let err = one_line_error(&run(&["validate"], b""));
    assert!(err.contains("PATHS"), "{err}");
    let err = one_line_error(&run(&["validate", "-", "-"], b""));
    assert!(err.contains("given twice"), "{err}");
}

#[test]
fn certs_refuses_to_overwrite_a_key_and_bad_names() {
    let dir = std::env::temp_dir().join(format!("dynamo-tenancy-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out_dir = dir.to_str().unwrap();
    let first = run(&["certs", "--out", out_dir], b"");
    assert_eq!(first.status.code(), Some(0));
    for file in ["ca.crt", "tls.crt", "tls.key", "caBundle"] {
        assert!(dir.join(file).is_file(), "{file} written");
    }
    let key = std::fs::read(dir.join("tls.key")).unwrap();
    let err = one_line_error(&run(&["certs", "--out", out_dir], b""));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(dir.join("tls.key")).unwrap(), key, "key kept");
    let forced = run(&["certs", "--out", out_dir, "--force"], b"");
    assert_eq!(forced.status.code(), Some(0));
    assert_ne!(
        std::fs::read(dir.join("tls.key")).unwrap(),
        key,
        "key replaced"
    );
    let err = one_line_error(&run(
        &["certs", "--out", out_dir, "--service", "Hook_1"],
        b"",
    ));
    assert!(err.contains("--service \"Hook_1\""), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
