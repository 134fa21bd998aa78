//! Pod admission: what a pod of a DGD is told (SPEC section 4) and the pod rules (SPEC section 6).

use kube::core::DynamicObject;
use serde_json::{Map, Value, json};

use super::Context;
use super::dgd::PATH_ANNOTATION;
use super::patch::PatchBuilder;
use super::path::{DynamoPath, quote};
use super::rules::{Finding, Findings, RuleId};
use super::view::{DgdRecord, DgdState};

/// The operator's label naming a pod's DGD.
pub const DGD_LABEL: &str = "nvidia.com/dynamo-graph-deployment-name";
/// The operator's label naming a pod's component type.
pub const COMPONENT_LABEL: &str = "nvidia.com/dynamo-component-type";
/// This webhook's label: the path with `/` as `.`.
pub const PATH_LABEL: &str = "nvidia.com/dynamo-namespace-path";

pub const ENV_PATH: &str = "DYNAMO_NAMESPACE";
pub const ENV_TOKEN: &str = "DYN_NAMESPACE";
pub const ENV_PREFIX: &str = "DYN_NAMESPACE_PREFIX";

/// Component types whose runtime serves a subtree, and so get `DYN_NAMESPACE_PREFIX`.
const PREFIX_COMPONENTS: [&str; 2] = ["frontend", "epp"];
const CONTAINER_LISTS: [&str; 2] = ["containers", "initContainers"];

/// How a pod relates to the DGDs the view knows.
enum Membership<'v> {
    /// No DGD label.
    None,
    Unknown(&'v str),
    Unmanaged,
    Managed {
        path: &'v DynamoPath,
        token: &'v str,
    },
}

fn membership<'v>(pod: &'v DynamicObject, namespace: &str, ctx: &Context<'v>) -> Membership<'v> {
    let Some(name) = label(pod, DGD_LABEL) else {
        return Membership::None;
    };
    match ctx.view.dgd(namespace, name) {
        None => Membership::Unknown(name),
        Some(DgdRecord {
            state: DgdState::Managed { path, token },
            ..
        }) => Membership::Managed { path, token },
        Some(_) => Membership::Unmanaged,
    }
}

fn label<'a>(obj: &'a DynamicObject, key: &str) -> Option<&'a str> {
    obj.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn annotation<'a>(obj: &'a DynamicObject, key: &str) -> Option<&'a str> {
    obj.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Whether an env var is added where missing, or only corrected where present.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    ReplaceOnly,
}

/// The env entries a pod of a managed DGD must carry.
fn expected_env<'a>(
    pod: &DynamicObject,
    path: &'a DynamoPath,
    token: &'a str,
    ctx: &Context<'_>,
) -> Vec<(&'static str, &'a str, Presence)> {
    let mut env = vec![(ENV_PATH, path.as_str(), Presence::Required)];
    if ctx.policy.dyn_compat {
        let serves_subtree =
            label(pod, COMPONENT_LABEL).is_some_and(|c| PREFIX_COMPONENTS.contains(&c));
        let prefix = if serves_subtree {
            Presence::Required
        } else {
            Presence::ReplaceOnly
        };
        env.push((ENV_TOKEN, token, Presence::Required));
        env.push((ENV_PREFIX, token, prefix));
    }
    env
}

/// Every container and init container: (list name, index, container).
fn containers(
    pod: &DynamicObject,
) -> impl Iterator<Item = (&'static str, usize, &Map<String, Value>)> {
    let spec = pod.data.get("spec");
    CONTAINER_LISTS.into_iter().flat_map(move |list| {
        spec.and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(move |(i, c)| c.as_object().map(|c| (list, i, c)))
    })
}

/// Where the parts of a pod the rules read have a JSON type that the API server's decoding of a
/// Pod refuses: spec not a map, a container list not a list, a container or env entry not a map,
/// an env list not a list, an env name or value not a string. `null` is Kubernetes' "unset" and
/// passes. The API server decodes a pod before any webhook sees it, so it never sends such a pod.
pub fn shape_problem(pod: &DynamicObject) -> Option<String> {
    use super::dgd::json_type as kind;
    let spec = match pod.data.get("spec") {
        None | Some(Value::Null) => return None,
        Some(Value::Object(spec)) => spec,
        Some(other) => return Some(format!("spec is {}, not a map", kind(other))),
    };
    for list in CONTAINER_LISTS {
        let containers = match spec.get(list) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(containers)) => containers,
            Some(other) => return Some(format!("spec.{list} is {}, not a list", kind(other))),
        };
        for (i, container) in containers.iter().enumerate() {
            let env = match container {
                Value::Null => continue,
                Value::Object(container) => container.get("env"),
                other => return Some(format!("spec.{list}[{i}] is {}, not a map", kind(other))),
            };
            let entries = match env {
                None | Some(Value::Null) => continue,
                Some(Value::Array(entries)) => entries,
                Some(other) => {
                    return Some(format!(
                        "spec.{list}[{i}].env is {}, not a list",
                        kind(other)
                    ));
                }
            };
            for (j, entry) in entries.iter().enumerate() {
                // Only a problem is worth a string: this runs over every env entry of every pod.
                let at = || format!("spec.{list}[{i}].env[{j}]");
                let entry = match entry {
                    Value::Null => continue,
                    Value::Object(entry) => entry,
                    other => return Some(format!("{} is {}, not a map", at(), kind(other))),
                };
                for field in ["name", "value"] {
                    match entry.get(field) {
                        None | Some(Value::Null | Value::String(_)) => {}
                        Some(other) => {
                            return Some(format!(
                                "{}.{field} is {}, not a string",
                                at(),
                                kind(other)
                            ));
                        }
                    }
                }
            }
        }
    }
    None
}

fn container_name(container: &Map<String, Value>) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("?")
}

/// Env entries of `container` named `name`, with their index.
fn env_entries<'a>(
    container: &'a Map<String, Value>,
    name: &'a str,
) -> impl Iterator<Item = (usize, &'a Map<String, Value>)> {
    container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, e)| e.as_object().map(|e| (i, e)))
        .filter(move |(_, e)| e.get("name").and_then(Value::as_str) == Some(name))
}

/// A plain `value` equal to `expected` (a `valueFrom` entry is never equal).
fn has_value(entry: &Map<String, Value>, expected: &str) -> bool {
    entry.get("value").and_then(Value::as_str) == Some(expected) && !entry.contains_key("valueFrom")
}

/// Where a container's env differs from what its DGD needs: the mutating phase closes each gap,
/// the validating phase denies the first (DT010).
enum EnvGap<'a> {
    /// The entry at `at` has another value, or a `valueFrom`.
    Wrong {
        at: usize,
        name: &'static str,
        expected: &'a str,
        entry: &'a Map<String, Value>,
    },
    /// A required variable is absent.
    Missing {
        name: &'static str,
        expected: &'a str,
    },
}

fn env_gaps<'a>(
    container: &'a Map<String, Value>,
    expected: &[(&'static str, &'a str, Presence)],
) -> Vec<EnvGap<'a>> {
    let mut gaps = Vec::new();
    for &(name, value, presence) in expected {
        let mut found = false;
        for (at, entry) in env_entries(container, name) {
            found = true;
            if !has_value(entry, value) {
                gaps.push(EnvGap::Wrong {
                    at,
                    name,
                    expected: value,
                    entry,
                });
            }
        }
        if !found && presence == Presence::Required {
            gaps.push(EnvGap::Missing {
                name,
                expected: value,
            });
        }
    }
    gaps
}

/// DT014. Both phases give it, in the same words: the API server keeps one copy of a warning.
fn unknown_dgd(namespace: &str, name: &str) -> Finding {
    Finding::new(
        RuleId::DT014,
        format_args!(
            "DGD {} is unknown; pod admitted without its dynamo namespace",
            quote(&format!("{namespace}/{name}"))
        ),
    )
}

/// Mutating phase, pod CREATE.
pub fn mutate(
    pod: &DynamicObject,
    namespace: &str,
    findings: &mut Findings,
    patch: &mut PatchBuilder,
    ctx: &Context<'_>,
) {
    let (path, token) = match membership(pod, namespace, ctx) {
        Membership::None | Membership::Unmanaged => return,
        Membership::Unknown(name) => return findings.add(unknown_dgd(namespace, name), ctx.policy),
        Membership::Managed { path, token } => (path, token),
    };
    let expected = expected_env(pod, path, token, ctx);
    for (list, i, container) in containers(pod) {
        let index = i.to_string();
        let base = ["spec", list, index.as_str(), "env"];
        match container.get("env") {
            None | Some(Value::Null) => {
                let entries: Vec<Value> = expected
                    .iter()
                    .filter(|(_, _, presence)| *presence == Presence::Required)
                    .map(|(name, value, _)| json!({ "name": name, "value": value }))
                    .collect();
                patch.add(base, Value::Array(entries));
            }
            Some(Value::Array(_)) => {
                for gap in env_gaps(container, &expected) {
                    match gap {
                        EnvGap::Wrong {
                            at, name, expected, ..
                        } => {
                            let at = at.to_string();
                            patch.replace(
                                base.into_iter().chain([at.as_str()]),
                                json!({ "name": name, "value": expected }),
                            );
                        }
                        EnvGap::Missing { name, expected } => patch.add(
                            base.into_iter().chain(["-"]),
                            json!({ "name": name, "value": expected }),
                        ),
                    }
                }
            }
            // Not a list: the API server's schema refuses such a pod; do not clobber it.
            Some(_) => {}
        }
    }
    patch.set_map_entry(
        &["metadata", "labels"],
        pod.metadata.labels.as_ref(),
        PATH_LABEL,
        &path.label_value(),
    );
    patch.set_map_entry(
        &["metadata", "annotations"],
        pod.metadata.annotations.as_ref(),
        PATH_ANNOTATION,
        path.as_str(),
    );
}

/// Validating phase, pod CREATE: DT010 for pods of managed DGDs, DT011 for all others.
pub fn validate_create(
    pod: &DynamicObject,
    namespace: &str,
    findings: &mut Findings,
    ctx: &Context<'_>,
) {
    let finding = match membership(pod, namespace, ctx) {
        Membership::Managed { path, token } => disagreement(pod, path, token, ctx),
        Membership::Unknown(name) => {
            findings.add(unknown_dgd(namespace, name), ctx.policy);
            spoofing(pod, namespace, ctx)
        }
        Membership::None | Membership::Unmanaged => spoofing(pod, namespace, ctx),
    };
    if let Some(finding) = finding {
        findings.add(finding, ctx.policy);
    }
}

/// DT010: the final env or label of a pod of a managed DGD disagrees with its DGD.
fn disagreement(
    pod: &DynamicObject,
    path: &DynamoPath,
    token: &str,
    ctx: &Context<'_>,
) -> Option<Finding> {
    let dgd = label(pod, DGD_LABEL).unwrap_or_default();
    let expected_label = path.label_value();
    let actual_label = label(pod, PATH_LABEL);
    if actual_label != Some(expected_label.as_str()) {
        return Some(Finding::new(
            RuleId::DT010,
            format_args!(
                "label {PATH_LABEL} is {} but DGD {} is at {}; remove the change or recreate the pod",
                actual_label.map_or_else(|| "missing".to_owned(), quote),
                quote(dgd),
                quote(&expected_label)
            ),
        ));
    }
    let expected = expected_env(pod, path, token, ctx);
    let (container, gap) = containers(pod).find_map(|(_, _, container)| {
        env_gaps(container, &expected)
            .into_iter()
            .next()
            .map(|gap| (container, gap))
    })?;
    let container = quote(container_name(container));
    let dgd = quote(dgd);
    Some(match gap {
        EnvGap::Wrong {
            name,
            expected,
            entry,
            ..
        } => {
            let actual = match entry.get("value").and_then(Value::as_str) {
                _ if entry.contains_key("valueFrom") => "a valueFrom".to_owned(),
                Some(v) => quote(v),
                None => "empty".to_owned(),
            };
            Finding::new(
                RuleId::DT010,
                format_args!(
                    "container {container} env {name} is {actual} but DGD {dgd} needs {}; remove the change or recreate the pod",
                    quote(expected)
                ),
            )
        }
        EnvGap::Missing { name, expected } => Finding::new(
            RuleId::DT010,
            format_args!(
                "container {container} lacks env {name}={}, which DGD {dgd} needs; recreate the pod through its DGD",
                quote(expected)
            ),
        ),
    })
}

/// DT011: a pod that is not of a known managed DGD joins or reads another k8s namespace's plane.
fn spoofing(pod: &DynamicObject, namespace: &str, ctx: &Context<'_>) -> Option<Finding> {
    for (_, _, container) in containers(pod) {
        for (_, entry) in env_entries(container, ENV_TOKEN) {
            let Some(value) = entry.get("value").and_then(Value::as_str) else {
                continue;
            };
            let foreign = |record: &DgdRecord| record.namespace == namespace;
            if let Some(owner) = ctx.view.with_token(value, &foreign) {
                return Some(Finding::new(
                    RuleId::DT011,
                    format_args!(
                        "container {} env {ENV_TOKEN} {} is the token of DGD {} in another k8s namespace; a pod may only join its own namespace's plane",
                        quote(container_name(container)),
                        quote(value),
                        owner.display_name()
                    ),
                ));
            }
        }
        for (_, entry) in env_entries(container, ENV_PREFIX) {
            let Some(value) = entry.get("value").and_then(Value::as_str) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            if let Some(owner) = ctx.view.captured_by_prefix(value, namespace) {
                return Some(Finding::new(
                    RuleId::DT011,
                    format_args!(
                        "container {} env {ENV_PREFIX} {} would read DGD {} ({}) of another k8s namespace; use a prefix of your own namespace",
                        quote(container_name(container)),
                        quote(value),
                        owner.display_name(),
                        quote(owner.token())
                    ),
                ));
            }
        }
    }
    None
}

/// Validating phase, pod UPDATE: DT012.
pub fn validate_update(
    pod: &DynamicObject,
    old: &DynamicObject,
    findings: &mut Findings,
    ctx: &Context<'_>,
) {
    let changed = [
        ("label", label(old, PATH_LABEL), label(pod, PATH_LABEL)),
        (
            "annotation",
            annotation(old, PATH_ANNOTATION),
            annotation(pod, PATH_ANNOTATION),
        ),
    ]
    .into_iter()
    .find(|(_, before, after)| before != after);
    if let Some((what, before, after)) = changed {
        let show = |v: Option<&str>| v.map_or_else(|| "absent".to_owned(), quote);
        findings.add(
            Finding::new(
                RuleId::DT012,
                format_args!(
                    "{what} {PATH_LABEL} changed from {} to {}; a running pod keeps its path: recreate it instead",
                    show(before),
                    show(after)
                ),
            ),
            ctx.policy,
        );
    }
}
