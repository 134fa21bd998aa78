//! Property tests of the engine: idempotent mutation, stable canonical form, foreign fields left
//! alone, and a verdict (never a panic) for any string given as a path.

use dynamo_tenancy::engine::review::parse_request;
use dynamo_tenancy::engine::{
    Context, DgdIndex, DgdRecord, DynamoPath, Phase, Policy, RuleId, decide, review_both,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const PATH_KEY: &str = "nvidia.com/dynamo-namespace-path";
const MANAGED_ENV: [&str; 3] = ["DYNAMO_NAMESPACE", "DYN_NAMESPACE", "DYN_NAMESPACE_PREFIX"];

fn review(kind: &str, operation: &str, object: Value, old: Option<Value>) -> Value {
    let (group, version, resource) = if kind == "Pod" {
        ("", "v1", "pods")
    } else {
        ("nvidia.com", "v1alpha1", "dynamographdeployments")
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "prop",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "namespace": "team-x",
            "operation": operation,
            "userInfo": {"username": "prop"},
            "object": object,
            "oldObject": old,
            "dryRun": false,
        }
    })
}

fn view() -> DgdIndex {
    DgdIndex::from_records([
        DgdRecord::managed(
            "team-x",
            "graph",
            Some("u1"),
            DynamoPath::parse("llama").unwrap(),
        ),
        DgdRecord::managed(
            "team-y",
            "other",
            Some("u2"),
            DynamoPath::parse("llama").unwrap(),
        ),
    ])
}

/// Mutates `object`, returning the patched object (or None when denied).
fn mutate(kind: &str, operation: &str, object: &Value, old: Option<&Value>) -> Option<Value> {
    let view = view();
    let policy = Policy::default();
    let ctx = Context {
        view: &view,
        policy: &policy,
    };
    let body = serde_json::to_vec(&review(kind, operation, object.clone(), old.cloned())).unwrap();
    let req = parse_request(&body).unwrap();
    let decision = decide(&req, Phase::Mutate, &ctx).unwrap();
    if decision.findings.denied() {
        return None;
    }
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &decision.patch).expect("the patch applies to its object");
    Some(patched)
}

fn segment() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,6}"
}

fn valid_path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..4).prop_map(|s| {
        if s.is_empty() {
            "default".to_owned()
        } else {
            s.join("/")
        }
    })
}

/// Arbitrary JSON, a few levels deep, for foreign fields.
fn junk() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z~/._-]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn extras() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("x-[a-z~/]{1,6}", junk(), 0..3)
        .prop_map(|m| m.into_iter().collect())
}

fn merge(target: &mut Value, extra: &Map<String, Value>) {
    if let Value::Object(map) = target {
        for (k, v) in extra {
            map.insert(k.clone(), v.clone());
        }
    }
}

prop_compose! {
    fn dgd()(
        spec_path in prop::option::of(valid_path()),
        annotate in any::<bool>(),
        services in prop::collection::btree_map("[A-Z][a-zA-Z]{0,6}", extras(), 1..4),
        global in any::<bool>(),
        meta_extra in extras(),
        spec_extra in extras(),
        top_extra in extras(),
        other_annotations in prop::collection::btree_map("[a-z./]{1,10}", ".{0,8}", 0..3),
    ) -> Value {
        let mut annotations: Map<String, Value> = other_annotations
            .into_iter()
            .filter(|(k, _)| k != PATH_KEY)
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        if annotate && let Some(p) = &spec_path {
            annotations.insert(PATH_KEY.into(), Value::from(p.clone()));
        }
        let services: Map<String, Value> = services
            .into_iter()
            .map(|(name, extra)| {
                let mut svc = json!({"componentType": "worker", "replicas": 1});
                if global && spec_path.is_none() {
                    svc["globalDynamoNamespace"] = json!(true);
                }
                merge(&mut svc, &extra);
                (name, svc)
            })
            .collect();
        let mut spec = json!({"services": services});
        if let Some(p) = &spec_path {
            spec["dynamoNamespace"] = json!(p);
        }
        merge(&mut spec, &spec_extra);
        let mut metadata = json!({"name": "graph", "namespace": "team-x"});
        if !annotations.is_empty() {
            metadata["annotations"] = Value::Object(annotations);
        }
        merge(&mut metadata, &meta_extra);
        let mut dgd = json!({
            "apiVersion": "nvidia.com/v1alpha1",
            "kind": "DynamoGraphDeployment",
            "metadata": metadata,
            "spec": spec,
        });
        merge(&mut dgd, &top_extra);
        dgd
    }
}

fn env_entry() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just("DYNAMO_NAMESPACE".to_owned()),
        Just("DYN_NAMESPACE".to_owned()),
        Just("DYN_NAMESPACE_PREFIX".to_owned()),
        Just("DYN_NAMESPACE_WORKER_SUFFIX".to_owned()),
        "[A-Z_]{1,8}",
    ];
    (name, prop::option::of(".{0,10}"), any::<bool>()).prop_map(|(name, value, from)| {
        if from {
            json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        } else {
            json!({"name": name, "value": value.unwrap_or_default()})
        }
    })
}

fn container() -> impl Strategy<Value = Value> {
    (
        "[a-z]{1,6}",
        prop::option::of(prop::collection::vec(env_entry(), 0..5)),
        extras(),
    )
        .prop_map(|(name, env, extra)| {
            let mut c = json!({"name": name, "image": "nvcr.io/dynamo:1"});
            if let Some(env) = env {
                c["env"] = Value::from(env);
            }
            merge(&mut c, &extra);
            c
        })
}

prop_compose! {
    fn pod()(
        component in prop_oneof![Just("frontend"), Just("worker"), Just("epp"), Just("planner")],
        containers in prop::collection::vec(container(), 1..3),
        init in prop::option::of(prop::collection::vec(container(), 0..2)),
        annotate in any::<bool>(),
        meta_extra in extras(),
        spec_extra in extras(),
    ) -> Value {
        let mut metadata = json!({
            "generateName": "graph-",
            "namespace": "team-x",
            "labels": {
                "nvidia.com/dynamo-graph-deployment-name": "graph",
                "nvidia.com/dynamo-component-type": component,
                "nvidia.com/dynamo-namespace": "team-x-graph",
            },
        });
        if annotate {
            metadata["annotations"] = json!({"example.com/a": "b"});
        }
        merge(&mut metadata, &meta_extra);
        let mut spec = json!({"containers": containers});
        if let Some(init) = init {
            spec["initContainers"] = Value::from(init);
        }
        merge(&mut spec, &spec_extra);
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    }
}

/// Removes what the webhook manages, so that the rest can be compared.
fn strip_managed(mut obj: Value) -> Value {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("dynamoNamespace");
        for list in ["containers", "initContainers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let Some(c) = c.as_object_mut() else { continue };
                if let Some(Value::Array(env)) = c.get_mut("env") {
                    env.retain(|e| !MANAGED_ENV.contains(&e["name"].as_str().unwrap_or("")));
                    if env.is_empty() {
                        c.remove("env");
                    }
                }
            }
        }
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for map in ["annotations", "labels"] {
            if let Some(Value::Object(m)) = meta.get_mut(map) {
                m.remove(PATH_KEY);
                if m.is_empty() {
                    meta.remove(map);
                }
            }
        }
    }
    obj
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("tests/proptest-regressions.txt"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn dgd_mutation_is_idempotent_and_keeps_foreign_fields(dgd in dgd()) {
        if let Some(once) = mutate("DynamoGraphDeployment", "CREATE", &dgd, None) {
            let twice = mutate("DynamoGraphDeployment", "CREATE", &once, None).unwrap();
            prop_assert_eq!(&twice, &once);
            prop_assert_eq!(strip_managed(once), strip_managed(dgd));
        }
    }

    #[test]
    fn dgd_update_mutation_is_idempotent(dgd in dgd(), old_path in valid_path()) {
        let mut old = dgd.clone();
        old["metadata"]["annotations"] = json!({PATH_KEY: old_path});
        if let Some(once) = mutate("DynamoGraphDeployment", "UPDATE", &dgd, Some(&old)) {
            let twice = mutate("DynamoGraphDeployment", "UPDATE", &once, Some(&old)).unwrap();
            prop_assert_eq!(&twice, &once);
            prop_assert_eq!(strip_managed(once), strip_managed(dgd));
        }
    }

    #[test]
    fn pod_mutation_is_idempotent_and_keeps_foreign_fields(pod in pod()) {
        let once = mutate("Pod", "CREATE", &pod, None).expect("pods of known DGDs are admitted");
        let twice = mutate("Pod", "CREATE", &once, None).unwrap();
        prop_assert_eq!(&twice, &once);
        prop_assert_eq!(strip_managed(once.clone()), strip_managed(pod));
        // Every container now carries the path.
        for c in once["spec"]["containers"].as_array().unwrap() {
            let env = c["env"].as_array().unwrap();
            prop_assert!(env.iter().any(|e| e["name"] == "DYNAMO_NAMESPACE" && e["value"] == "default/llama"));
        }
    }

    #[test]
    fn canonical_form_is_stable(raw in "\\PC{0,70}") {
        if let Ok(path) = DynamoPath::parse(&raw) {
            let again = DynamoPath::parse(path.as_str()).unwrap();
            prop_assert_eq!(again, path);
        }
    }

    #[test]
    fn canonical_form_is_stable_for_plausible_paths(raw in "(default/)?[a-z0-9-]{1,12}(/[a-z0-9-]{1,12}){0,8}") {
        if let Ok(path) = DynamoPath::parse(&raw) {
            prop_assert!(path.as_str() == "default" || path.as_str().starts_with("default/"));
            prop_assert_eq!(DynamoPath::parse(path.as_str()).unwrap(), path);
        }
    }

    #[test]
    fn any_string_as_a_path_gets_a_verdict(raw in "\\PC{0,80}|[a-zA-Z0-9/._ -]{0,80}", place in 0..3usize) {
        let mut dgd = json!({
            "apiVersion": "nvidia.com/v1alpha1",
            "kind": "DynamoGraphDeployment",
            "metadata": {"name": "graph", "namespace": "team-x"},
            "spec": {"services": {"Frontend": {"componentType": "frontend"}}},
        });
        match place {
            0 => dgd["spec"]["dynamoNamespace"] = json!(raw),
            1 => dgd["metadata"]["annotations"] = json!({PATH_KEY: raw}),
            _ => dgd["spec"]["services"]["Frontend"]["dynamoNamespace"] = json!(raw),
        }
        let view = view();
        let policy = Policy::default();
        let ctx = Context { view: &view, policy: &policy };
        let body = serde_json::to_vec(&review("DynamoGraphDeployment", "CREATE", dgd, None)).unwrap();
        let req = parse_request(&body).unwrap();
        let (response, decision) = review_both(&req, &ctx).unwrap();
        if let Some(denial) = &decision.findings.denial {
            prop_assert!(matches!(denial.rule, RuleId::DT001 | RuleId::DT003 | RuleId::DT004 | RuleId::DT006 | RuleId::DT007));
            prop_assert!(!response.allowed);
            prop_assert!(denial.message.chars().count() < 250 && !denial.message.contains('\n'), "{}", denial.message);
        } else {
            prop_assert!(response.allowed);
        }
    }
}
