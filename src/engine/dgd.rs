//! DynamoGraphDeployment admission: the effective path (SPEC section 3), its recording by the
//! mutating phase, and the DGD rules of the validating phase (SPEC section 5).

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::DynamicObject;
use kube::core::admission::Operation;
use serde_json::Value;

use super::Context;
use super::claim::Claim;
use super::patch::PatchBuilder;
use super::path::{DynamoPath, quote, quote_within};
use super::rules::{Finding, Findings, RuleId};
use super::view::DgdRecord;

/// Annotation that records the path (and lets users choose one where the stock CRD is installed).
pub const PATH_ANNOTATION: &str = "nvidia.com/dynamo-namespace-path";
/// The runtime's global namespace, which no DGD may take (DT007).
pub const GLOBAL_TOKEN: &str = "dynamo";

/// Where a path value was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field<'a> {
    Spec,
    Annotation,
    Service(&'a str),
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Spec => f.write_str("spec.dynamoNamespace"),
            Field::Annotation => write!(f, "metadata.annotations[{PATH_ANNOTATION}]"),
            Field::Service(name) => {
                let name: String = name.chars().take(16).collect();
                write!(f, "spec.services.{name}.dynamoNamespace")
            }
        }
    }
}

/// A source that is set, with its raw value.
struct Source<'a> {
    field: Field<'a>,
    value: SourceValue<'a>,
}

enum SourceValue<'a> {
    Text(&'a str),
    /// Not a string: the API server's schema would refuse it, but review input may carry it.
    Other(&'a Value),
}

impl<'a> Source<'a> {
    fn from_json(field: Field<'a>, value: Option<&'a Value>) -> Option<Self> {
        match value? {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(Source {
                field,
                value: SourceValue::Text(s),
            }),
            other => Some(Source {
                field,
                value: SourceValue::Other(other),
            }),
        }
    }

    /// DT001 when the value is not a path.
    fn parse(&self) -> Result<DynamoPath, Finding> {
        match self.value {
            SourceValue::Text(raw) => DynamoPath::parse(raw).map_err(|err| {
                Finding::new(
                    RuleId::DT001,
                    format_args!("{}: {err} (got {})", self.field, quote_within(raw, 40)),
                )
            }),
            SourceValue::Other(value) => Err(Finding::new(
                RuleId::DT001,
                format_args!(
                    "{} must be a string path such as \"default/team-a\", not {}",
                    self.field,
                    json_type(value)
                ),
            )),
        }
    }
}

/// "a list", "a map", ...: a JSON value's type, as messages name it.
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn spec(obj: &DynamicObject) -> Option<&serde_json::Map<String, Value>> {
    obj.data.get("spec")?.as_object()
}

fn services(obj: &DynamicObject) -> impl Iterator<Item = (&String, &Value)> {
    spec(obj)
        .and_then(|s| s.get("services"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

fn spec_source(obj: &DynamicObject) -> Option<Source<'_>> {
    Source::from_json(
        Field::Spec,
        spec(obj).and_then(|s| s.get("dynamoNamespace")),
    )
}

fn annotation_source(obj: &DynamicObject) -> Option<Source<'_>> {
    let value = obj.metadata.annotations.as_ref()?.get(PATH_ANNOTATION)?;
    (!value.is_empty()).then_some(Source {
        field: Field::Annotation,
        value: SourceValue::Text(value),
    })
}

/// All set sources, in the order of SPEC section 3.
fn sources(obj: &DynamicObject) -> Vec<Source<'_>> {
    let mut all: Vec<Source<'_>> = spec_source(obj)
        .into_iter()
        .chain(annotation_source(obj))
        .collect();
    all.extend(services(obj).filter_map(|(name, service)| {
        Source::from_json(Field::Service(name), service.get("dynamoNamespace"))
    }));
    all
}

/// The path this webhook recorded in a stored object, if any: what makes a DGD managed.
pub fn recorded_path(obj: &DynamicObject) -> Option<DynamoPath> {
    [spec_source(obj), annotation_source(obj)]
        .into_iter()
        .flatten()
        .find_map(|source| source.parse().ok())
}

/// True when the object sets a source that adopts an unmanaged DGD (per-service values do not).
fn sets_own_source(obj: &DynamicObject) -> bool {
    spec_source(obj).is_some() || annotation_source(obj).is_some()
}

/// The effective path: DT001 for a malformed source, DT002 when sources disagree.
pub fn effective_path(obj: &DynamicObject) -> Result<DynamoPath, Finding> {
    let parsed = sources(obj)
        .into_iter()
        .map(|source| source.parse().map(|path| (source.field, path)))
        .collect::<Result<Vec<_>, _>>()?;
    let Some((first_field, first_path)) = parsed.first() else {
        return Ok(DynamoPath::root());
    };
    if let Some((field, path)) = parsed.iter().find(|(_, path)| path != first_path) {
        let text = match (first_field, field) {
            (Field::Service(a), Field::Service(b)) => format!(
                "per-service dynamoNamespace values disagree, make them equal: {a} has {}, {b} has {}",
                quote(first_path.as_str()),
                quote(path.as_str())
            ),
            _ => format!(
                "path sources disagree, keep one: {first_field} is {}, {field} is {}",
                quote(first_path.as_str()),
                quote(path.as_str())
            ),
        };
        return Err(Finding::new(RuleId::DT002, text));
    }
    Ok(first_path.clone())
}

/// DT001 and DT005 for an UPDATE of a managed DGD whose recorded path is `recorded`.
fn check_unchanged(obj: &DynamicObject, recorded: &DynamoPath) -> Result<(), Finding> {
    for source in sources(obj) {
        let path = source.parse()?;
        if &path != recorded {
            return Err(Finding::new(
                RuleId::DT005,
                format_args!(
                    "{} would move the path {} to {}; a path cannot change: recreate the DGD to move it",
                    source.field,
                    quote(recorded.as_str()),
                    quote(path.as_str())
                ),
            ));
        }
    }
    Ok(())
}

/// What an admission of a DGD means for its path.
enum Plan {
    /// Record `path` and run the checks a new path needs.
    New { path: DynamoPath, adopting: bool },
    /// A managed DGD keeps its path.
    Keep(DynamoPath),
    /// An unmanaged DGD stays unmanaged.
    LeaveUnmanaged,
}

/// DT001 or DT006 when a part the rules read has a JSON type the CRD's schema refuses: a spec
/// or `spec.services` that is not a map, a service that is not a map (its `dynamoNamespace`
/// could not be read), a `globalDynamoNamespace` that is not a boolean (it could not be checked).
/// The API server checks the schema only after the mutating phase, so such a DGD can reach it;
/// judging it by what can be read would overlook the paths and flags it carries.
fn check_shape(obj: &DynamicObject) -> Result<(), Finding> {
    let wrong = |rule, text: String| Err(Finding::new(rule, text));
    let spec = match obj.data.get("spec") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(spec)) => spec,
        Some(other) => {
            return wrong(
                RuleId::DT001,
                format!(
                    "spec must be a map, not {}; the path is read from spec.dynamoNamespace",
                    json_type(other)
                ),
            );
        }
    };
    let services = match spec.get("services") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(services)) => services,
        Some(other) => {
            return wrong(
                RuleId::DT001,
                format!(
                    "spec.services must be a map of services by name, not {}; their dynamoNamespace values are paths",
                    json_type(other)
                ),
            );
        }
    };
    for (name, service) in services {
        let name: String = name.chars().take(16).collect();
        match service {
            Value::Null => {}
            Value::Object(service) => match service.get("globalDynamoNamespace") {
                None | Some(Value::Null | Value::Bool(_)) => {}
                Some(other) => {
                    return wrong(
                        RuleId::DT006,
                        format!(
                            "spec.services.{name}.globalDynamoNamespace must be true or false, not {}",
                            json_type(other)
                        ),
                    );
                }
            },
            other => {
                return wrong(
                    RuleId::DT001,
                    format!(
                        "spec.services.{name} must be a map, not {}; its dynamoNamespace is a path",
                        json_type(other)
                    ),
                );
            }
        }
    }
    Ok(())
}

/// The plan for `obj`, or the mutating-phase denial (DT001, DT002, DT005, or DT006 for a flag
/// that is not a boolean).
fn plan(
    operation: &Operation,
    obj: &DynamicObject,
    old: Option<&DynamicObject>,
) -> Result<Plan, Finding> {
    check_shape(obj)?;
    if *operation == Operation::Update {
        match old.and_then(recorded_path) {
            Some(recorded) => {
                check_unchanged(obj, &recorded)?;
                return Ok(Plan::Keep(recorded));
            }
            None if !sets_own_source(obj) => return Ok(Plan::LeaveUnmanaged),
            None => {
                return effective_path(obj).map(|path| Plan::New {
                    path,
                    adopting: true,
                });
            }
        }
    }
    effective_path(obj).map(|path| Plan::New {
        path,
        adopting: false,
    })
}

/// Mutating phase: records the effective path in `spec.dynamoNamespace` and the annotation.
pub fn mutate(
    operation: &Operation,
    obj: &DynamicObject,
    old: Option<&DynamicObject>,
    findings: &mut Findings,
    patch: &mut PatchBuilder,
    ctx: &Context<'_>,
) {
    let path = match plan(operation, obj, old) {
        Err(denial) => return findings.add(denial, ctx.policy),
        Ok(Plan::LeaveUnmanaged) => return,
        Ok(Plan::Keep(path) | Plan::New { path, .. }) => path,
    };
    record(obj, &path, patch);
}

fn record(obj: &DynamicObject, path: &DynamoPath, patch: &mut PatchBuilder) {
    match obj.data.get("spec") {
        Some(Value::Object(spec)) => {
            if spec.get("dynamoNamespace").and_then(Value::as_str) != Some(path.as_str()) {
                patch.add(["spec", "dynamoNamespace"], Value::from(path.as_str()));
            }
        }
        None | Some(Value::Null) => patch.add(
            ["spec"],
            serde_json::json!({ "dynamoNamespace": path.as_str() }),
        ),
        // A spec of the wrong type is the schema's to refuse; the annotation still records.
        Some(_) => {}
    }
    // An empty `metadata` may be a missing one (the typed parse cannot tell them apart), where a
    // pointer below it would not apply: then the member is added whole. An API server always
    // sends a name, so only hand-made reviews take this branch.
    if obj.metadata == ObjectMeta::default() {
        patch.add(
            ["metadata"],
            serde_json::json!({ "annotations": { PATH_ANNOTATION: path.as_str() } }),
        );
        return;
    }
    patch.set_map_entry(
        &["metadata", "annotations"],
        obj.metadata.annotations.as_ref(),
        PATH_ANNOTATION,
        path.as_str(),
    );
}

/// Who is being admitted, for the uniqueness rules' self-exclusion.
struct Identity<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: Option<&'a str>,
}

impl Identity<'_> {
    fn is(&self, record: &DgdRecord) -> bool {
        record.is_same(self.namespace, self.name, self.uid)
    }
}

/// Validating phase: every DGD rule of SPEC section 5.
pub fn validate(
    operation: &Operation,
    namespace: &str,
    request_name: &str,
    obj: &DynamicObject,
    old: Option<&DynamicObject>,
    findings: &mut Findings,
    ctx: &Context<'_>,
) -> Option<Claim> {
    let policy = ctx.policy;
    let plan = match plan(operation, obj, old) {
        Err(denial) => {
            findings.add(denial, policy);
            return None;
        }
        Ok(plan) => plan,
    };
    let (path, check_uniqueness, adopting) = match plan {
        Plan::LeaveUnmanaged => {
            findings.add(
                Finding::new(
                    RuleId::DT013,
                    format_args!(
                        "unmanaged DGD (no path recorded); set annotation {PATH_ANNOTATION} to adopt it"
                    ),
                ),
                policy,
            );
            return None;
        }
        Plan::Keep(path) => (path, false, false),
        Plan::New { path, adopting } => (path, true, adopting),
    };
    let identity = Identity {
        namespace,
        name: obj.metadata.name.as_deref().unwrap_or(request_name),
        uid: obj.metadata.uid.as_deref(),
    };
    check_global(obj, &path, findings, ctx);
    let token = path.token(namespace);
    if token == GLOBAL_TOKEN {
        findings.add(
            Finding::new(
                RuleId::DT007,
                format_args!(
                    "path {} in k8s namespace {} gives the runtime token \"{GLOBAL_TOKEN}\", the runtime's global namespace; choose a path below the root",
                    quote(path.as_str()),
                    quote_within(namespace, 40)
                ),
            ),
            policy,
        );
    }
    if check_uniqueness {
        check_unique(&identity, &path, &token, findings, ctx);
    }
    if adopting && !findings.denied() {
        findings.add(
            Finding::new(
                RuleId::DT013,
                format_args!(
                    "adopted at {}; running pods keep their old namespace until they restart",
                    quote(path.as_str())
                ),
            ),
            policy,
        );
    }
    // A new (namespace, path) is only as unique as the claim the server then makes for it.
    (check_uniqueness && !findings.denied()).then(|| Claim {
        namespace: namespace.to_owned(),
        path,
        name: identity.name.to_owned(),
        uid: identity.uid.map(str::to_owned),
    })
}

/// DT006: `globalDynamoNamespace` would let a tenant escape its subtree.
fn check_global(
    obj: &DynamicObject,
    path: &DynamoPath,
    findings: &mut Findings,
    ctx: &Context<'_>,
) {
    if path.is_root() {
        return;
    }
    let global = services(obj)
        .find(|(_, service)| service.get("globalDynamoNamespace") == Some(&Value::Bool(true)));
    if let Some((name, _)) = global {
        findings.add(
            Finding::new(
                RuleId::DT006,
                format_args!(
                    "spec.services.{}.globalDynamoNamespace is true but the path is {}; only the root \"default\" may be global: remove the flag",
                    name.chars().take(16).collect::<String>(),
                    quote(path.as_str())
                ),
            ),
            ctx.policy,
        );
    }
}

/// DT003, DT004, DT008, DT009: the checks a new (namespace, path) needs.
fn check_unique(
    me: &Identity<'_>,
    path: &DynamoPath,
    token: &str,
    findings: &mut Findings,
    ctx: &Context<'_>,
) {
    let policy = ctx.policy;
    let view = ctx.view;
    let skip_self = |record: &DgdRecord| me.is(record);

    if me.namespace.contains("--") {
        findings.add(
            Finding::new(
                RuleId::DT004,
                format_args!(
                    "k8s namespace {} contains \"--\", so its runtime tokens could equal another namespace's; use a namespace without \"--\"",
                    quote(me.namespace)
                ),
            ),
            policy,
        );
    }
    if let Some(other) = view.managed_at(me.namespace, path, &skip_self) {
        findings.add(
            Finding::new(
                RuleId::DT003,
                format_args!(
                    "path {} is taken in this k8s namespace, choose another spec.dynamoNamespace; taken by DGD {}",
                    quote(path.as_str()),
                    other.display_name()
                ),
            ),
            policy,
        );
    }
    if let Some(other) = view.with_token(token, &skip_self) {
        findings.add(
            Finding::new(
                RuleId::DT004,
                format_args!(
                    "runtime token {} of path {} is taken, choose another path; taken by DGD {}",
                    quote_within(token, 48),
                    quote(path.as_str()),
                    other.display_name()
                ),
            ),
            policy,
        );
    }
    if findings.denied() {
        return;
    }
    if let Some(other) = crosstalk(me, path, token, ctx) {
        findings.add(
            Finding::new(
                RuleId::DT008,
                format_args!(
                    "prefix crosstalk with {}: tokens {} and {}",
                    other.display_name(),
                    quote(token),
                    quote(other.token())
                ),
            ),
            policy,
        );
    }
    if !path.is_root()
        && let Some(other) = view.managed_at_elsewhere(me.namespace, path, &skip_self)
    {
        findings.add(
            Finding::new(
                RuleId::DT009,
                format_args!(
                    "another k8s namespace uses this path too: {} at {}",
                    other.display_name(),
                    quote(path.as_str())
                ),
            ),
            policy,
        );
    }
}

/// DT008: another DGD whose token extends this one at a `-` boundary, or that this one extends,
/// without being an ancestor or descendant in the same k8s namespace.
fn crosstalk<'v>(
    me: &Identity<'_>,
    path: &DynamoPath,
    token: &str,
    ctx: &Context<'v>,
) -> Option<&'v DgdRecord> {
    let skip_self = |record: &DgdRecord| me.is(record);
    if let Some(other) = ctx.view.extending_token(token, &skip_self) {
        return Some(other);
    }
    let is_ancestor = |record: &DgdRecord| {
        record.namespace == me.namespace && record.path().is_some_and(|p| path.is_descendant_of(p))
    };
    token
        .match_indices('-')
        .map(|(at, _)| &token[..at])
        .filter(|prefix| !prefix.is_empty() && !prefix.ends_with('-'))
        .find_map(|prefix| {
            ctx.view
                .with_token(prefix, &|record| skip_self(record) || is_ancestor(record))
        })
}
