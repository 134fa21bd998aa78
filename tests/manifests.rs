//! The deployable manifests (`manifests/`) and the CRD patch, checked against the code they deploy:
//! each overlay is rendered with `kubectl kustomize` (kubectl is on the CI machine: a missing one is
//! a failure, not a skip) and its objects, parsed with k8s-openapi's types, must agree with the
//! server's routes, its command line and the rules; the CRD patch is applied to the upstream CRD and
//! its pattern compared with the engine's path grammar.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhookConfiguration, RuleWithOperations,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use dynamo_tenancy::engine::DynamoPath;
use dynamo_tenancy::engine::dgd::PATH_ANNOTATION;
use dynamo_tenancy::engine::path::{MAX_LEN, MAX_SEGMENTS};
use dynamo_tenancy::engine::pod::{DGD_LABEL, ENV_PREFIX, ENV_TOKEN, PATH_LABEL};
use dynamo_tenancy::server::app::{MUTATE_PATH, VALIDATE_PATH, parse_go_duration};
use dynamo_tenancy::server::health::{HEALTHZ_PATH, READYZ_PATH};

const WEBHOOK_NAMESPACE: &str = "dynamo-tenancy";
const TLS_SECRET: &str = "dynamo-tenancy-tls";
const DGD_MUTATE: &str = "dgd.mutate.dynamo-tenancy.nvidia.com";
const POD_MUTATE: &str = "pod.mutate.dynamo-tenancy.nvidia.com";
const DGD_VALIDATE: &str = "dgd.validate.dynamo-tenancy.nvidia.com";
const POD_VALIDATE: &str = "pod.validate.dynamo-tenancy.nvidia.com";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared(path: &str) -> PathBuf {
    std::env::var_os("DYNAMO_TENANCY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared"))
        .join(path)
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// `kubectl kustomize DIR`: the text it prints. Panics (never skips) without kubectl.
fn kustomize(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `kubectl kustomize` ({e}): the manifest tests need kubectl (v1.27 or \
                 later, with kustomize v5) on PATH"
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}

/// One rendered install: every document, by kind.
struct Render {
    docs: Vec<Value>,
}

impl Render {
    fn parse(text: &str) -> Render {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text)
            .unwrap_or_else(|e| panic!("the render is not YAML: {e}"));
        let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
        assert!(!docs.is_empty(), "empty render");
        for doc in &docs {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "a document without apiVersion/kind: {doc}"
            );
        }
        Render { docs }
    }

    fn kinds(&self) -> BTreeMap<String, usize> {
        let mut kinds = BTreeMap::new();
        for doc in &self.docs {
            *kinds.entry(kind_of(doc)).or_default() += 1;
        }
        kinds
    }

    fn all_raw(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| kind_of(d) == kind).collect()
    }

    fn all<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Vec<T> {
        self.all_raw(kind)
            .into_iter()
            .map(|doc| {
                serde_json::from_value(normalise_base64(doc.clone()))
                    .unwrap_or_else(|e| panic!("{kind} does not parse as k8s-openapi's type: {e}"))
            })
            .collect()
    }

    fn one<T: serde::de::DeserializeOwned>(&self, kind: &str) -> T {
        let mut all = self.all::<T>(kind);
        assert_eq!(all.len(), 1, "expected exactly one {kind}");
        all.remove(0)
    }
}

fn kind_of(doc: &Value) -> String {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let group = api.rsplit_once('/').map_or("", |(g, _)| g);
    let kind = doc["kind"].as_str().unwrap_or_default();
    if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    }
}

/// kustomize wraps long base64 values (Secret data, and the caBundle copied from it) at 70
/// characters. The API server's Go decoder ignores the line breaks; k8s-openapi's `ByteString`
/// does not, so they are removed before the typed parse.
fn normalise_base64(mut doc: Value) -> Value {
    let strip = |v: &mut Value| {
        if let Some(s) = v.as_str() {
            *v = Value::String(s.split_whitespace().collect());
        }
    };
    if doc["kind"] == "Secret"
        && let Some(data) = doc.get_mut("data").and_then(Value::as_object_mut)
    {
        data.values_mut().for_each(strip);
    }
    if let Some(hooks) = doc.get_mut("webhooks").and_then(Value::as_array_mut) {
        for hook in hooks {
            if let Some(bundle) = hook.pointer_mut("/clientConfig/caBundle") {
                strip(bundle);
            }
        }
    }
    doc
}

/// The parts of a mutating or validating webhook that the checks look at.
struct Hook {
    name: String,
    mutating: bool,
    admission_review_versions: Vec<String>,
    client_config: WebhookClientConfig,
    failure_policy: Option<String>,
    match_conditions: Vec<MatchCondition>,
    match_policy: Option<String>,
    namespace_selector: Option<LabelSelector>,
    object_selector: Option<LabelSelector>,
    reinvocation_policy: Option<String>,
    rules: Vec<RuleWithOperations>,
    side_effects: String,
    timeout_seconds: Option<i32>,
}

/// Each configuration's annotations, and its webhooks.
fn hooks(render: &Render) -> (Vec<BTreeMap<String, String>>, Vec<Hook>) {
    let mutating: MutatingWebhookConfiguration =
        render.one("MutatingWebhookConfiguration.admissionregistration.k8s.io");
    let validating: ValidatingWebhookConfiguration =
        render.one("ValidatingWebhookConfiguration.admissionregistration.k8s.io");
    let annotations = vec![
        mutating.metadata.annotations.clone().unwrap_or_default(),
        validating.metadata.annotations.clone().unwrap_or_default(),
    ];
    let mut all = Vec::new();
    for w in mutating.webhooks.unwrap_or_default() {
        all.push(Hook {
            name: w.name,
            mutating: true,
            admission_review_versions: w.admission_review_versions,
            client_config: w.client_config,
            failure_policy: w.failure_policy,
            match_conditions: w.match_conditions.unwrap_or_default(),
            match_policy: w.match_policy,
            namespace_selector: w.namespace_selector,
            object_selector: w.object_selector,
            reinvocation_policy: w.reinvocation_policy,
            rules: w.rules.unwrap_or_default(),
            side_effects: w.side_effects,
            timeout_seconds: w.timeout_seconds,
        });
    }
    for w in validating.webhooks.unwrap_or_default() {
        all.push(Hook {
            name: w.name,
            mutating: false,
            admission_review_versions: w.admission_review_versions,
            client_config: w.client_config,
            failure_policy: w.failure_policy,
            match_conditions: w.match_conditions.unwrap_or_default(),
            match_policy: w.match_policy,
            namespace_selector: w.namespace_selector,
            object_selector: w.object_selector,
            reinvocation_policy: None,
            rules: w.rules.unwrap_or_default(),
            side_effects: w.side_effects,
            timeout_seconds: w.timeout_seconds,
        });
    }
    (annotations, all)
}

/// The value after `flag` in `args` (`--flag VALUE` or `--flag=VALUE`).
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == flag {
            return iter.next().unwrap_or_else(|| panic!("{flag} has no value"));
        }
        if let Some(value) = arg.strip_prefix(flag).and_then(|v| v.strip_prefix('=')) {
            return value;
        }
    }
    panic!("the container's args lack {flag}: {args:?}")
}

fn port_of(addr: &str) -> i32 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} is not HOST:PORT"))
}

fn duration(text: &str) -> Duration {
    parse_go_duration(text).unwrap_or_else(|| panic!("{text:?} is not a duration"))
}

/// The container port named by `port` (a number or a name).
fn container_port(container: &Container, port: &IntOrString) -> i32 {
    let ports = container.ports.as_deref().unwrap_or_default();
    match port {
        IntOrString::Int(n) => {
            assert!(
                ports.iter().any(|p| p.container_port == *n),
                "port {n} is not a port of container {}",
                container.name
            );
            *n
        }
        IntOrString::String(name) => {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("container {} has no port named {name}", container.name))
                .container_port
        }
    }
}

fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>, what: &str) {
    assert!(
        selector.match_expressions.is_none(),
        "{what}: only matchLabels expected"
    );
    let wanted = selector.match_labels.as_ref().expect("matchLabels");
    assert!(!wanted.is_empty(), "{what}: an empty selector selects all");
    for (k, v) in wanted {
        assert_eq!(
            labels.get(k),
            Some(v),
            "{what} selects {k}={v}, which the webhook's pods do not carry"
        );
    }
}

fn strings(list: &Option<Vec<String>>) -> Vec<&str> {
    list.iter().flatten().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------
// The invariants every install must keep

/// Checks everything the overlays share; returns the webhooks for overlay-specific checks.
fn check_install(render: &Render) -> (Vec<BTreeMap<String, String>>, Vec<Hook>) {
    // The Service and the Deployment behind it.
    let service: Service = render.one("Service");
    let service_name = service.metadata.name.clone().unwrap();
    let service_namespace = service.metadata.namespace.clone().unwrap();
    assert_eq!(service_namespace, WEBHOOK_NAMESPACE);
    let namespaces: Vec<Value> = render.all("Namespace");
    assert_eq!(namespaces.len(), 1, "the install creates its namespace");
    assert_eq!(namespaces[0]["metadata"]["name"], WEBHOOK_NAMESPACE);

    let deployment: Deployment = render.one("Deployment.apps");
    assert_eq!(
        deployment.metadata.namespace.as_deref(),
        Some(WEBHOOK_NAMESPACE)
    );
    let spec = deployment.spec.as_ref().unwrap();
    assert!(spec.replicas.unwrap_or(1) >= 2, "at least two replicas");
    let strategy = spec.strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.as_ref().unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));

    let template = &spec.template;
    let pod_labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    selector_matches(&spec.selector, &pod_labels, "the Deployment's selector");
    let pod = template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("dynamo-tenancy"));
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod_security.run_as_user.is_some_and(|uid| uid > 0));
    assert_eq!(
        pod_security
            .seccomp_profile
            .as_ref()
            .map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );

    let spread = pod
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    let hostname = spread
        .iter()
        .find(|c| c.topology_key == "kubernetes.io/hostname")
        .expect("spread over nodes");
    assert_eq!(hostname.when_unsatisfiable, "DoNotSchedule");
    let zone = spread
        .iter()
        .find(|c| c.topology_key == "topology.kubernetes.io/zone")
        .expect("spread over zones");
    assert_eq!(zone.when_unsatisfiable, "ScheduleAnyway");
    for constraint in spread {
        assert_eq!(constraint.max_skew, 1);
        selector_matches(
            constraint.label_selector.as_ref().unwrap(),
            &pod_labels,
            "a topology spread constraint",
        );
    }

    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    assert!(container.command.is_none(), "the image's entrypoint runs");
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_ne!(security.run_as_non_root, Some(false));
    assert_ne!(security.privileged, Some(true));
    let caps = security.capabilities.as_ref().unwrap();
    assert_eq!(strings(&caps.drop), ["ALL"]);
    assert!(caps.add.is_none());
    let resources = container.resources.as_ref().unwrap();
    let requests = resources.requests.as_ref().unwrap();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    assert!(resources.limits.as_ref().unwrap().contains_key("memory"));

    // Ports: the Service's targetPort is the port `--listen` serves; the probes use the port of
    // `--health-listen` and the health router's paths.
    let listen = port_of(flag(&args, "--listen"));
    let health = port_of(flag(&args, "--health-listen"));
    assert_ne!(listen, health);
    let ports = service.spec.as_ref().unwrap().ports.clone().unwrap();
    assert_eq!(ports.len(), 1, "the Service exposes only the webhook port");
    let service_port = &ports[0];
    assert_eq!(
        container_port(container, service_port.target_port.as_ref().unwrap()),
        listen,
        "the Service's targetPort is not the port that --listen serves"
    );
    selector_matches(
        &LabelSelector {
            match_labels: service.spec.as_ref().unwrap().selector.clone(),
            match_expressions: None,
        },
        &pod_labels,
        "the Service's selector",
    );
    for (probe, path) in [
        (container.readiness_probe.as_ref(), READYZ_PATH),
        (container.liveness_probe.as_ref(), HEALTHZ_PATH),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("no HTTP probe for {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.scheme.as_deref().unwrap_or("HTTP"), "HTTP");
        assert_eq!(container_port(container, &get.port), health, "{path} probe");
    }

    // Shutdown: the kubelet's SIGKILL must come after the server's own deadline.
    let grace = duration(flag(&args, "--shutdown-grace"));
    let drain = duration(flag(&args, "--drain-delay"));
    assert!(
        drain < grace,
        "the drain delay is part of the shutdown grace"
    );
    let termination = pod.termination_grace_period_seconds.unwrap_or(30);
    assert!(
        Duration::from_secs(termination as u64) > grace,
        "terminationGracePeriodSeconds {termination} must exceed --shutdown-grace {grace:?}"
    );

    // The certificate comes from the TLS Secret, mounted as a directory (no subPath: the
    // kubelet's `..data` swap must reach the server's file watch).
    let cert = flag(&args, "--tls-cert");
    let key = flag(&args, "--tls-key");
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    let mount = mounts
        .iter()
        .find(|m| cert.starts_with(&format!("{}/", m.mount_path)))
        .expect("--tls-cert lies in a mounted volume");
    assert!(mount.sub_path.is_none() && mount.sub_path_expr.is_none());
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(cert, format!("{}/tls.crt", mount.mount_path));
    assert_eq!(key, format!("{}/tls.key", mount.mount_path));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let secret = volume.secret.as_ref().expect("the TLS volume is a Secret");
    assert_eq!(secret.secret_name.as_deref(), Some(TLS_SECRET));

    // The arguments are the binary's own: it gets past parsing them and stops at the missing
    // certificate file.
    let out = Command::new(env!("CARGO_BIN_EXE_dynamo-tenancy"))
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&format!("--tls-cert {cert}")),
        "the Deployment's args do not parse: {stderr}"
    );

    // The PodDisruptionBudget keeps one pod through voluntary disruptions.
    let pdb: PodDisruptionBudget = render.one("PodDisruptionBudget.policy");
    let pdb_spec = pdb.spec.unwrap();
    assert_eq!(pdb_spec.min_available, Some(IntOrString::Int(1)));
    assert!(pdb_spec.max_unavailable.is_none());
    selector_matches(
        pdb_spec.selector.as_ref().unwrap(),
        &pod_labels,
        "the PodDisruptionBudget's selector",
    );

    // RBAC: exactly DGD reads and lease claims, bound to the Deployment's ServiceAccount.
    let role: ClusterRole = render.one("ClusterRole.rbac.authorization.k8s.io");
    let granted: BTreeSet<(String, String, String)> = role
        .rules
        .iter()
        .flatten()
        .flat_map(|rule| {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
            let groups = strings(&rule.api_groups);
            let resources = strings(&rule.resources);
            let verbs = rule.verbs.clone();
            let mut out = Vec::new();
            for g in &groups {
                for r in &resources {
                    for v in &verbs {
                        out.push((g.to_string(), r.to_string(), v.clone()));
                    }
                }
            }
            out
        })
        .collect();
    let mut expected = BTreeSet::new();
    for verb in ["get", "list", "watch"] {
        expected.insert((
            "nvidia.com".into(),
            "dynamographdeployments".into(),
            verb.into(),
        ));
    }
    for verb in ["create", "get", "update", "delete", "list", "watch"] {
        expected.insert(("coordination.k8s.io".into(), "leases".into(), verb.into()));
    }
    assert_eq!(
        granted, expected,
        "the ClusterRole grants more or less than it should"
    );
    assert_eq!(render.all_raw("Role.rbac.authorization.k8s.io").len(), 0);
    let binding: ClusterRoleBinding = render.one("ClusterRoleBinding.rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(binding.role_ref.name.as_str()),
        role.metadata.name.as_deref()
    );
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(
        Some(subjects[0].name.as_str()),
        pod.service_account_name.as_deref()
    );
    assert_eq!(subjects[0].namespace.as_deref(), Some(WEBHOOK_NAMESPACE));
    assert_eq!(render.all_raw("ServiceAccount").len(), 1);

    // The webhooks.
    let (annotations, hooks) = hooks(render);
    let names: BTreeSet<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([DGD_MUTATE, POD_MUTATE, DGD_VALIDATE, POD_VALIDATE])
    );
    for hook in &hooks {
        let name = &hook.name;
        assert_eq!(hook.admission_review_versions, ["v1"], "{name}");
        assert_eq!(hook.side_effects, "NoneOnDryRun", "{name}");
        let timeout = hook.timeout_seconds.expect("an explicit timeout");
        assert!((1..=5).contains(&timeout), "{name}: timeout {timeout}s");
        assert_eq!(hook.match_policy.as_deref(), Some("Equivalent"), "{name}");
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"), "{name}");

        assert!(
            hook.client_config.url.is_none(),
            "{name}: through the Service"
        );
        let svc = hook.client_config.service.as_ref().unwrap();
        assert_eq!(svc.name, service_name, "{name}");
        assert_eq!(svc.namespace, service_namespace, "{name}");
        assert_eq!(svc.port.unwrap_or(443), service_port.port, "{name}");
        let path = if hook.mutating {
            MUTATE_PATH
        } else {
            VALIDATE_PATH
        };
        assert_eq!(svc.path.as_deref(), Some(path), "{name}");

        let selector = hook.namespace_selector.as_ref().unwrap();
        assert!(selector.match_labels.is_none(), "{name}");
        let excluded: BTreeSet<&str> = selector
            .match_expressions
            .iter()
            .flatten()
            .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
            .flat_map(|e| strings(&e.values))
            .collect();
        assert!(
            excluded.contains("kube-system") && excluded.contains(service_namespace.as_str()),
            "{name} must exclude kube-system and its own namespace, excludes {excluded:?}"
        );
        assert_eq!(
            selector.match_expressions.as_ref().unwrap().len(),
            1,
            "{name}"
        );

        // Rules: the main resource only (no status), namespaced, and the operations the engine
        // acts on. DELETE is not registered: the engine allows it without work, and with
        // failurePolicy Fail it could only block deletions while the webhook is down.
        assert_eq!(hook.rules.len(), 1, "{name}");
        let rule = &hook.rules[0];
        assert_eq!(rule.scope.as_deref(), Some("Namespaced"), "{name}");
        let (group, version, resource, operations): (&str, &str, &str, &[&str]) =
            match name.as_str() {
                DGD_MUTATE | DGD_VALIDATE => (
                    "nvidia.com",
                    "v1alpha1",
                    "dynamographdeployments",
                    &["CREATE", "UPDATE"],
                ),
                POD_MUTATE => ("", "v1", "pods", &["CREATE"]),
                POD_VALIDATE => ("", "v1", "pods", &["CREATE", "UPDATE"]),
                _ => unreachable!(),
            };
        assert_eq!(strings(&rule.api_groups), [group], "{name}");
        assert_eq!(strings(&rule.api_versions), [version], "{name}");
        assert_eq!(strings(&rule.resources), [resource], "{name}");
        assert_eq!(strings(&rule.operations), operations, "{name}");

        for condition in &hook.match_conditions {
            assert!(!condition.expression.trim().is_empty(), "{name}");
        }
    }
    let hook = |name: &str| hooks.iter().find(|h| h.name == name).unwrap();

    // The mutating pod webhook sees only pods labelled for a DGD, and runs again when a later
    // webhook changes the pod (its mutation is idempotent).
    let pod_mutate = hook(POD_MUTATE);
    let selector = pod_mutate.object_selector.as_ref().expect("objectSelector");
    assert!(selector.match_labels.is_none());
    let exprs = selector.match_expressions.as_ref().unwrap();
    assert_eq!(exprs.len(), 1);
    assert_eq!(exprs[0].key, DGD_LABEL);
    assert_eq!(exprs[0].operator, "Exists");
    assert_eq!(pod_mutate.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert!(pod_mutate.match_conditions.is_empty());

    // The validating pod webhook must see unlabelled pods (DT011), narrowed by CEL to pods that
    // take part in Dynamo. The expressions themselves are evaluated against real and edge-case
    // pods by .ci/check-match-conditions.py; here: they name what the rules look at, and guard
    // every optional field.
    let pod_validate = hook(POD_VALIDATE);
    assert!(pod_validate.object_selector.is_none());
    assert_eq!(pod_validate.match_conditions.len(), 1);
    let cel = &pod_validate.match_conditions[0].expression;
    for needle in [
        format!("'{DGD_LABEL}' in object.metadata.labels"),
        format!("e.name == '{ENV_TOKEN}'"),
        format!("e.name == '{ENV_PREFIX}'"),
        format!("'{PATH_LABEL}' in oldObject.metadata.labels"),
        format!("'{PATH_ANNOTATION}' in oldObject.metadata.annotations"),
        "has(object.spec.initContainers) && object.spec.initContainers.exists(".to_owned(),
        "object.spec.containers.exists(c, has(c.env)".to_owned(),
        "request.operation == 'CREATE'".to_owned(),
    ] {
        assert!(cel.contains(&needle), "{POD_VALIDATE} CEL lacks {needle:?}");
    }
    assert_eq!(
        cel.matches("has(c.env)").count(),
        2,
        "every env list is guarded"
    );
    for name in [DGD_MUTATE, DGD_VALIDATE] {
        let dgd = hook(name);
        assert!(dgd.object_selector.is_none(), "{name}");
        assert_eq!(
            dgd.reinvocation_policy.as_deref().unwrap_or("Never"),
            "Never"
        );
        let conditions: Vec<&str> = dgd
            .match_conditions
            .iter()
            .map(|c| c.expression.as_str())
            .collect();
        assert_eq!(
            conditions,
            ["!(request.operation == 'UPDATE' && has(oldObject.metadata.deletionTimestamp))"],
            "{name}"
        );
    }
    (annotations, hooks)
}

// ---------------------------------------------------------------------------------------------
// The overlays

#[test]
fn the_default_render_is_the_cert_manager_overlay() {
    let default = kustomize(&repo().join("manifests"));
    let cert_manager = kustomize(&repo().join("manifests/overlays/cert-manager"));
    assert_eq!(default, cert_manager);
}

#[test]
fn the_cert_manager_overlay_keeps_the_invariants() {
    let text = kustomize(&repo().join("manifests/overlays/cert-manager"));
    assert!(!text.contains("PRIVATE KEY"));
    let render = Render::parse(&text);
    let (annotations, hooks) = check_install(&render);

    let certificates = render.all_raw("Certificate.cert-manager.io");
    let issuers = render.all_raw("Issuer.cert-manager.io");
    let name = |d: &Value| d["metadata"]["name"].as_str().unwrap().to_owned();
    let namespace = |d: &Value| d["metadata"]["namespace"].as_str().unwrap().to_owned();

    // The serving certificate: the Secret the Deployment mounts, every DNS name of the Service.
    let serving = certificates
        .iter()
        .find(|c| c["spec"]["secretName"] == TLS_SECRET)
        .expect("a Certificate writes the TLS Secret");
    assert_eq!(namespace(serving), WEBHOOK_NAMESPACE);
    let dns: Vec<&str> = serving["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The names `dynamo-tenancy certs` puts in its certificate: every form the API server may use.
    assert_eq!(
        dns,
        [
            "dynamo-tenancy",
            "dynamo-tenancy.dynamo-tenancy",
            "dynamo-tenancy.dynamo-tenancy.svc",
            "dynamo-tenancy.dynamo-tenancy.svc.cluster.local",
        ]
    );
    assert_ne!(serving["spec"]["isCA"], true);

    // Its issuer is a CA issuer whose CA is a Certificate from a self-signed issuer.
    let issuer_of = |cert: &Value| {
        let r = &cert["spec"]["issuerRef"];
        assert_eq!(r["kind"], "Issuer");
        let issuer = issuers
            .iter()
            .find(|i| name(i) == r["name"].as_str().unwrap())
            .expect("the issuer is in the render");
        assert_eq!(namespace(issuer), namespace(cert));
        issuer
    };
    let ca_issuer = issuer_of(serving);
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"].as_str().unwrap();
    let ca = certificates
        .iter()
        .find(|c| c["spec"]["secretName"] == ca_secret)
        .expect("a Certificate makes the CA");
    assert_eq!(ca["spec"]["isCA"], true);
    assert!(issuer_of(ca)["spec"]["selfSigned"].is_object());

    // Both configurations take their caBundle from the serving Certificate that exists here.
    for annotations in &annotations {
        let inject = annotations
            .get("cert-manager.io/inject-ca-from")
            .expect("cert-manager.io/inject-ca-from");
        assert_eq!(*inject, format!("{}/{}", namespace(serving), name(serving)));
    }
    for hook in &hooks {
        assert!(
            hook.client_config.ca_bundle.is_none(),
            "{}: the injector fills caBundle",
            hook.name
        );
    }
    assert!(render.all_raw("Secret").is_empty());
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_self_signed_overlay_keeps_the_invariants() {
    // A copy of the layout in the target directory, so that a developer's own certs/self-signed
    // pair is never touched.
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("manifests-self-signed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    copy_tree(&repo().join("manifests"), &work.join("manifests"));
    let certs = work.join("certs/self-signed");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(
        repo().join("certs/self-signed/kustomization.yaml"),
        certs.join("kustomization.yaml"),
    )
    .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_dynamo-tenancy"))
        .args(["certs", "--out"])
        .arg(&certs)
        .args([
            "--service",
            "dynamo-tenancy",
            "--namespace",
            WEBHOOK_NAMESPACE,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = kustomize(&work.join("manifests/overlays/self-signed"));
    let render = Render::parse(&text);
    let (annotations, hooks) = check_install(&render);

    let read = |name: &str| std::fs::read(certs.join(name)).unwrap();
    let bundle_file = String::from_utf8(read("caBundle")).unwrap();
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(bundle_file.trim_end())
        .expect("caBundle is base64 on one line");
    assert_eq!(bundle, read("ca.crt"));

    // The Secret the Deployment mounts holds the pair that was written.
    let secrets: Vec<Secret> = render.all("Secret");
    assert_eq!(secrets.len(), 1);
    let secret = &secrets[0];
    assert_eq!(secret.metadata.name.as_deref(), Some(TLS_SECRET));
    assert_eq!(
        secret.metadata.namespace.as_deref(),
        Some(WEBHOOK_NAMESPACE)
    );
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.clone().unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    for key in keys {
        assert_eq!(data[key], ByteString(read(key)), "Secret data {key}");
    }

    // Every webhook trusts exactly the CA of the generated pair.
    for hook in &hooks {
        assert_eq!(
            hook.client_config.ca_bundle,
            Some(ByteString(bundle.clone())),
            "{}: caBundle is not the generated caBundle",
            hook.name
        );
    }
    for annotations in &annotations {
        assert!(
            !annotations
                .keys()
                .any(|k| k.starts_with("cert-manager.io/"))
        );
    }
    assert!(
        render
            .kinds()
            .keys()
            .all(|k| !k.ends_with(".cert-manager.io"))
    );
    let _ = std::fs::remove_dir_all(&work);
}

// ---------------------------------------------------------------------------------------------
// The CRD patch

fn upstream_crd() -> Value {
    let path = shared("upstream/dynamo/crd-bases__nvidia.com_dynamographdeployments.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; put shared/ beside the checkout or set DYNAMO_TENANCY_SHARED",
            path.display()
        )
    });
    let len = text.len();
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = budget.max_nodes.max(len);
    budget.max_events = budget.max_events.max(2 * len);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    serde_saphyr::from_str_with_options(&text, options).expect("the upstream CRD parses")
}

fn crd_patch() -> json_patch::Patch {
    let text = std::fs::read_to_string(repo().join("manifests/crd-patch.yaml")).unwrap();
    let ops: Value = serde_saphyr::from_str(&text).expect("crd-patch.yaml is YAML");
    assert!(ops.is_array(), "an RFC 6902 patch is a list of operations");
    serde_json::from_value(ops).expect("crd-patch.yaml is an RFC 6902 JSON patch")
}

const SPEC_PROPERTIES: &str = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties";

/// The upstream CRD with the patch applied: (before, after).
fn patched_crd() -> (Value, Value) {
    let before = upstream_crd();
    let mut after = before.clone();
    json_patch::patch(&mut after, &crd_patch()).expect("the patch applies to the upstream CRD");
    (before, after)
}

/// The schema of `spec.dynamoNamespace` that the patch adds.
fn field_schema() -> Value {
    let (_, after) = patched_crd();
    after
        .pointer(&format!("{SPEC_PROPERTIES}/dynamoNamespace"))
        .expect("the patch adds spec.dynamoNamespace")
        .clone()
}

#[test]
fn the_crd_patch_adds_only_spec_dynamo_namespace() {
    let (before, after) = patched_crd();
    assert_eq!(
        before["metadata"]["name"],
        "dynamographdeployments.nvidia.com"
    );
    assert_eq!(after["spec"]["versions"][0]["name"], "v1alpha1");
    assert!(
        before
            .pointer(&format!("{SPEC_PROPERTIES}/dynamoNamespace"))
            .is_none(),
        "the stock CRD has no spec.dynamoNamespace"
    );

    let field = after
        .pointer(&format!("{SPEC_PROPERTIES}/dynamoNamespace"))
        .unwrap();
    assert_eq!(field["type"], "string");
    assert_eq!(field["maxLength"], MAX_LEN as u64);
    assert_eq!(
        field["pattern"],
        format!(
            "^default(/[a-z0-9]+(-[a-z0-9]+)*){{0,{}}}$",
            MAX_SEGMENTS - 1
        )
    );
    assert!(field["description"].as_str().is_some_and(|d| d.len() > 40));
    let keys: BTreeSet<&str> = field
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["description", "maxLength", "pattern", "type"])
    );

    // Everything else is untouched: remove the new field and the documents are equal.
    let mut without = after.clone();
    let spec_properties = without
        .pointer_mut(SPEC_PROPERTIES)
        .unwrap()
        .as_object_mut()
        .unwrap();
    spec_properties.remove("dynamoNamespace");
    assert_eq!(without, before);

    // Applying it twice is harmless (kubectl patch after a second install of the project).
    let mut twice = after.clone();
    json_patch::patch(&mut twice, &crd_patch()).unwrap();
    assert_eq!(twice, after);

    // On a CRD whose first version is not v1alpha1 the patch fails and changes nothing.
    let mut other = before.clone();
    other["spec"]["versions"][0]["name"] = Value::from("v1beta1");
    let original = other.clone();
    assert!(json_patch::patch(&mut other, &crd_patch()).is_err());
    assert_eq!(other, original);
}

/// What the API server accepts for spec.dynamoNamespace: the pattern (Go's RE2, here the regex
/// crate, which has the same semantics for this pattern) and maxLength (in characters).
struct CrdField {
    pattern: regex::Regex,
    max_length: usize,
}

impl CrdField {
    fn load() -> CrdField {
        let schema = field_schema();
        CrdField {
            pattern: regex::Regex::new(schema["pattern"].as_str().unwrap())
                .expect("the pattern compiles (RE2 syntax)"),
            max_length: schema["maxLength"].as_u64().unwrap() as usize,
        }
    }

    fn accepts(&self, value: &str) -> bool {
        value.chars().count() <= self.max_length && self.pattern.is_match(value)
    }
}

/// The engine's view: the value is a path already in canonical form (what the mutating webhook
/// stores, so what the schema sees).
fn engine_accepts(value: &str) -> bool {
    DynamoPath::parse(value).is_ok_and(|p| p.as_str() == value)
}

fn check_agreement(field: &CrdField, value: &str) {
    assert_eq!(
        field.accepts(value),
        engine_accepts(value),
        "CRD and engine disagree on {value:?} (CRD: {}, engine: {:?})",
        field.accepts(value),
        DynamoPath::parse(value).map(|p| p.as_str().to_owned())
    );
}

#[test]
fn the_crd_accepts_exactly_the_canonical_paths() {
    let field = CrdField::load();
    let seg = |n: usize| "a".repeat(n);
    let at_len = |len: usize| format!("default/{}", seg(len - "default/".len()));
    let segments = |n: usize| {
        std::iter::once("default".to_owned())
            .chain((1..n).map(|i| format!("s{i}")))
            .collect::<Vec<_>>()
            .join("/")
    };
    let table: Vec<(String, bool)> = [
        // canonical paths
        ("default", true),
        ("default/llama", true),
        ("default/team-a/llama", true),
        ("default/team-a/llama/fast", true),
        ("default/0", true),
        ("default/9lives", true),
        ("default/a-b-c", true),
        ("default/a1-b2", true),
        ("default/default", true),
        ("default/default/default", true),
        ("default/x-1/y-2/z-3", true),
        // relative: the engine canonicalises them first, the schema never sees them
        ("llama", false),
        ("team-a/llama", false),
        ("defaults", false),
        ("defaultx/a", false),
        ("x/default", false),
        // grammar
        ("", false),
        ("Default", false),
        ("default/Llama", false),
        ("DEFAULT/llama", false),
        ("default/team_a", false),
        ("default/team.a", false),
        ("default/a--b", false),
        ("default/-a", false),
        ("default/a-", false),
        ("default/-", false),
        ("default/--", false),
        ("/default", false),
        ("default/", false),
        ("default//a", false),
        ("//", false),
        ("/", false),
        ("default/a/", false),
        ("default /a", false),
        (" default", false),
        ("default/a b", false),
        ("default\n", false),
        ("default/a\n", false),
        ("\ndefault", false),
        ("default/a\t", false),
        ("default/llamä", false),
        ("default/ℓlama", false),
        ("default/ａ", false),
        ("default/a\u{0}", false),
        ("default\\a", false),
        ("default/a:b", false),
        ("default/a+b", false),
        ("default/*", false),
        ("default/a/b/../c", false),
        ("default/.", false),
    ]
    .into_iter()
    .map(|(s, ok)| (s.to_owned(), ok))
    .chain([
        // lengths: 63 is the limit of the canonical form
        (at_len(62), true),
        (at_len(63), true),
        (at_len(64), false),
        (format!("default/{}/b", seg(53)), true),
        (format!("default/{}/b", seg(54)), false),
        // segments: 8 at most, the root included
        (segments(7), true),
        (segments(8), true),
        (segments(9), false),
        (format!("{}/", segments(8)), false),
        (format!("default/{}", seg(55)), true),
    ])
    .collect();
    assert!(table.len() >= 60, "{} cases", table.len());
    for (value, expected) in &table {
        assert_eq!(
            field.accepts(value),
            *expected,
            "the CRD {} {value:?}",
            if *expected { "rejects" } else { "accepts" }
        );
        check_agreement(&field, value);
    }
    assert_eq!(at_len(63).len(), 63);
    assert_eq!(segments(8).split('/').count(), 8);
}

/// A small deterministic generator (xorshift), so the loop is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn the_crd_and_the_engine_agree_on_generated_strings() {
    let field = CrdField::load();
    // Pieces that make the boundaries likely: the root, separators, hyphens, the characters the
    // grammar refuses, and long runs that cross the 63-character limit.
    let pieces = [
        "default",
        "default/",
        "/",
        "/",
        "-",
        "--",
        "a",
        "b",
        "z",
        "0",
        "9",
        "ab",
        "a-b",
        "team-x",
        "llama",
        "A",
        "_",
        ".",
        " ",
        "é",
        "ß",
        "\n",
        "aaaaaaaaaaaaaaaa",
        "default/default",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    let total = 50_000;
    for _ in 0..total {
        let mut value = String::new();
        if rng.below(3) > 0 {
            value.push_str("default/");
        }
        for _ in 0..rng.below(14) {
            value.push_str(pieces[rng.below(pieces.len())]);
        }
        check_agreement(&field, &value);
        accepted += usize::from(field.accepts(&value));
    }
    // Both sides of the boundary get exercised.
    assert!(accepted > total / 50, "only {accepted} accepted");
    assert!(accepted < total / 2, "{accepted} accepted");

    // Every canonical path of segments from a small alphabet, near the limits.
    for n in 0..9 {
        for len in [1, 2, 6, 7, 8, 9] {
            let value = std::iter::once("default".to_owned())
                .chain((0..n).map(|i| format!("{}{}", "s".repeat(len), i % 10)))
                .collect::<Vec<_>>()
                .join("/");
            check_agreement(&field, &value);
        }
    }
}
