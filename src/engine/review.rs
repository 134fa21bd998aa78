//! AdmissionReview v1 in, AdmissionReview v1 out: routing by kind and operation, and the
//! `both` chain the API server runs (mutate, apply the patch, validate).

use std::fmt;

use json_patch::PatchOperation;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use super::Context;
use super::claim::Claim;
use super::patch::PatchBuilder;
use super::rules::Findings;
use super::wire::WireReview;
use super::{dgd, pod};

/// Which webhook is answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Mutate,
    Validate,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Mutate => "mutate",
            Phase::Validate => "validate",
        }
    }
}

/// What the request was about, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Dgd,
    Pod,
    /// Allowed without work; the reason says why.
    Skipped(String),
}

/// The engine's answer to one request in one phase.
#[derive(Debug, Default)]
pub struct Decision {
    pub findings: Findings,
    pub patch: Vec<PatchOperation>,
    pub subject: Option<Subject>,
    /// Validating phase: the (namespace, path) the server must claim before the admission stands
    /// (SPEC section 7). Set only when nothing else denies.
    pub claim: Option<Claim>,
}

/// A request the engine cannot judge: the API server never sends one, so it is the caller's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewError {
    Malformed(String),
    MissingRequest,
    MissingObject(&'static str),
    /// Well-formed JSON that no API server sends: a kind and a resource that disagree, an object
    /// of another kind, a pod its decoding would refuse. Judging it would mean guessing.
    NotFromApiServer(String),
}

impl fmt::Display for ReviewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReviewError::Malformed(err) => write!(
                f,
                "body is not an admission.k8s.io/v1 AdmissionReview: {err}"
            ),
            ReviewError::MissingRequest => f.write_str(
                "AdmissionReview has no \"request\"; send the review the API server sends",
            ),
            ReviewError::MissingObject(field) => write!(
                f,
                "AdmissionReview request has no \"{field}\", which this operation needs"
            ),
            ReviewError::NotFromApiServer(what) => write!(
                f,
                "AdmissionReview request {what}; an API server never sends that, send the review it sends"
            ),
        }
    }
}

impl std::error::Error for ReviewError {}

const DGD_GROUP: &str = "nvidia.com";
const DGD_VERSION: &str = "v1alpha1";
const DGD_KIND: &str = "DynamoGraphDeployment";
const DGD_RESOURCE: &str = "dynamographdeployments";

/// The k8s namespace of the request's object.
pub fn namespace_of(req: &AdmissionRequest<DynamicObject>) -> &str {
    req.namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .or_else(|| {
            [&req.object, &req.old_object]
                .into_iter()
                .flatten()
                .find_map(|o| o.metadata.namespace.as_deref())
        })
        .unwrap_or("default")
}

fn skipped(reason: String) -> Decision {
    Decision {
        subject: Some(Subject::Skipped(reason)),
        ..Decision::default()
    }
}

/// A request about a handled kind agrees with itself, as every request an API server sends does:
/// `resource` is the kind's, and `object` and `oldObject`, where they name their type, are of it.
fn check_consistent(
    req: &AdmissionRequest<DynamicObject>,
    subject: &Subject,
) -> Result<(), ReviewError> {
    use super::path::quote_within;
    let (group, resource) = match subject {
        Subject::Dgd => (DGD_GROUP, DGD_RESOURCE),
        Subject::Pod => ("", "pods"),
        Subject::Skipped(_) => return Ok(()),
    };
    let kind = &req.kind;
    let given = &req.resource;
    if given.group != group || given.version != kind.version || given.resource != resource {
        return Err(ReviewError::NotFromApiServer(format!(
            "has kind {} but resource {}",
            quote_within(&kind.kind, 40),
            quote_within(
                &format!("{}/{}/{}", given.group, given.version, given.resource),
                60
            )
        )));
    }
    let api_version = if group.is_empty() {
        kind.version.clone()
    } else {
        format!("{group}/{}", kind.version)
    };
    for (field, object) in [("object", &req.object), ("oldObject", &req.old_object)] {
        if let Some(types) = object.as_ref().and_then(|o| o.types.as_ref())
            && (types.kind != kind.kind || types.api_version != api_version)
        {
            return Err(ReviewError::NotFromApiServer(format!(
                "is about a {} but its {field} is a {}",
                quote_within(&kind.kind, 40),
                quote_within(&format!("{} {}", types.api_version, types.kind), 60)
            )));
        }
    }
    Ok(())
}

/// Judges one request in one phase.
pub fn decide(
    req: &AdmissionRequest<DynamicObject>,
    phase: Phase,
    ctx: &Context<'_>,
) -> Result<Decision, ReviewError> {
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return Ok(skipped(format!("{:?} needs no work", req.operation)));
    }
    if let Some(sub) = req.sub_resource.as_deref().filter(|s| !s.is_empty()) {
        return Ok(skipped(format!("subresource {sub} needs no work")));
    }
    let kind = &req.kind;
    let subject = if kind.group == DGD_GROUP && kind.kind == DGD_KIND && kind.version == DGD_VERSION
    {
        Subject::Dgd
    } else if kind.group.is_empty() && kind.kind == "Pod" {
        Subject::Pod
    } else {
        return Ok(skipped(format!(
            "kind {}/{} {} is not handled (check the webhook rules)",
            kind.group, kind.version, kind.kind
        )));
    };
    let obj = req
        .object
        .as_ref()
        .ok_or(ReviewError::MissingObject("object"))?;
    let old = match req.operation {
        Operation::Update => Some(
            req.old_object
                .as_ref()
                .ok_or(ReviewError::MissingObject("oldObject"))?,
        ),
        _ => None,
    };
    check_consistent(req, &subject)?;
    if subject == Subject::Pod
        && req.operation == Operation::Create
        && let Some(problem) = pod::shape_problem(obj)
    {
        return Err(ReviewError::NotFromApiServer(format!("object: {problem}")));
    }
    let namespace = namespace_of(req);
    let mut findings = Findings::default();
    let mut patch = PatchBuilder::default();
    let mut claim = None;
    match (&subject, phase) {
        (Subject::Dgd, Phase::Mutate) => {
            dgd::mutate(&req.operation, obj, old, &mut findings, &mut patch, ctx)
        }
        (Subject::Dgd, Phase::Validate) => {
            claim = dgd::validate(
                &req.operation,
                namespace,
                &req.name,
                obj,
                old,
                &mut findings,
                ctx,
            )
        }
        (Subject::Pod, Phase::Mutate) => {
            if req.operation == Operation::Create {
                pod::mutate(obj, namespace, &mut findings, &mut patch, ctx)
            }
        }
        (Subject::Pod, Phase::Validate) => match old {
            None => pod::validate_create(obj, namespace, &mut findings, ctx),
            Some(old) => pod::validate_update(obj, old, &mut findings, ctx),
        },
        (Subject::Skipped(_), _) => unreachable!("skipped kinds returned above"),
    }
    let patch = if findings.denied() {
        Vec::new()
    } else {
        patch.into_ops()
    };
    Ok(Decision {
        claim: claim.filter(|_| !findings.denied()),
        findings,
        patch,
        subject: Some(subject),
    })
}

/// The AdmissionResponse for a decision: uid echoed, patch as JSONPatch, warnings carried.
pub fn respond(req: &AdmissionRequest<DynamicObject>, decision: &Decision) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req);
    let warnings: Vec<String> = decision
        .findings
        .warnings
        .iter()
        .map(|w| w.message.clone())
        .collect();
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    if let Some(denial) = &decision.findings.denial {
        let mut response = response.deny(&denial.message);
        response.result.code = 403;
        response.result.reason = "Forbidden".to_owned();
        return response;
    }
    if decision.patch.is_empty() {
        return response;
    }
    match response
        .clone()
        .with_patch(json_patch::Patch(decision.patch.clone()))
    {
        Ok(patched) => patched,
        // Serialising plain strings and maps cannot fail; refuse rather than admit unpatched.
        Err(err) => response.deny(format!("internal error serialising the patch: {err}")),
    }
}

/// Parses an AdmissionReview body and answers it in one phase.
pub fn review_json(
    body: &[u8],
    phase: Phase,
    ctx: &Context<'_>,
) -> Result<(AdmissionResponse, Decision), ReviewError> {
    let req = parse_request(body)?;
    let decision = decide(&req, phase, ctx)?;
    Ok((respond(&req, &decision), decision))
}

/// Parses an AdmissionReview body into its request.
pub fn parse_request(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, ReviewError> {
    let review: WireReview =
        serde_json::from_slice(body).map_err(|err| ReviewError::Malformed(err.to_string()))?;
    review.into_request().ok_or(ReviewError::MissingRequest)
}

/// What the API server's chain does: mutate; if admitted, apply the patch and validate the result.
/// The answer carries the mutating patch, the warnings of both phases without duplicates, and the
/// validating verdict.
pub fn review_both(
    req: &AdmissionRequest<DynamicObject>,
    ctx: &Context<'_>,
) -> Result<(AdmissionResponse, Decision), ReviewError> {
    let mutated = decide(req, Phase::Mutate, ctx)?;
    if mutated.findings.denied() || matches!(mutated.subject, Some(Subject::Skipped(_))) {
        return Ok((respond(req, &mutated), mutated));
    }
    let patched = apply_mutation(req, &mutated)?;
    let validated = decide(&patched, Phase::Validate, ctx)?;
    let decision = chain(mutated, validated);
    Ok((respond(req, &decision), decision))
}

/// The request as the validating phase sees it: `mutated`'s patch applied to the object.
pub fn apply_mutation(
    req: &AdmissionRequest<DynamicObject>,
    mutated: &Decision,
) -> Result<AdmissionRequest<DynamicObject>, ReviewError> {
    let mut patched = req.clone();
    if mutated.patch.is_empty() {
        return Ok(patched);
    }
    let obj = patched
        .object
        .as_mut()
        .ok_or(ReviewError::MissingObject("object"))?;
    patch_object(obj, &mutated.patch)?;
    Ok(patched)
}

/// Applies `ops` to `obj`. The engine's patches add, replace or remove members under `metadata`
/// or the object's other fields, which `DynamicObject` keeps apart (typed `metadata`, untyped
/// `data`): each part is patched where it lives, and only `metadata`, which is small, goes
/// through JSON and back. Anything else takes the round trip of the whole object.
fn patch_object(obj: &mut DynamicObject, ops: &[PatchOperation]) -> Result<(), ReviewError> {
    let fail = |err: json_patch::PatchError| {
        ReviewError::Malformed(format!("the patch does not apply: {err}"))
    };
    let first_token = |op: &PatchOperation| {
        let path = match op {
            PatchOperation::Add(op) => &op.path,
            PatchOperation::Replace(op) => &op.path,
            PatchOperation::Remove(op) => &op.path,
            _ => return None,
        };
        path.tokens().next().map(|t| t.decoded().into_owned())
    };
    let tokens: Option<Vec<String>> = ops.iter().map(first_token).collect();
    let split = tokens.filter(|tokens| {
        obj.data.is_object()
            && tokens
                .iter()
                .all(|t| !matches!(t.as_str(), "apiVersion" | "kind"))
    });
    let Some(tokens) = split else {
        let mut value = serde_json::to_value(&*obj)
            .map_err(|err| ReviewError::Malformed(format!("object: {err}")))?;
        json_patch::patch(&mut value, ops).map_err(fail)?;
        *obj = serde_json::from_value(value)
            .map_err(|err| ReviewError::Malformed(format!("patched object: {err}")))?;
        return Ok(());
    };
    let (metadata_ops, data_ops): (Vec<_>, Vec<_>) = ops
        .iter()
        .zip(&tokens)
        .partition(|(_, token)| token.as_str() == "metadata");
    let data_ops: Vec<PatchOperation> = data_ops.into_iter().map(|(op, _)| op.clone()).collect();
    json_patch::patch(&mut obj.data, &data_ops).map_err(fail)?;
    if !metadata_ops.is_empty() {
        let metadata_ops: Vec<PatchOperation> =
            metadata_ops.into_iter().map(|(op, _)| op.clone()).collect();
        let metadata = serde_json::to_value(&obj.metadata)
            .map_err(|err| ReviewError::Malformed(format!("metadata: {err}")))?;
        let mut wrapper = serde_json::json!({ "metadata": metadata });
        json_patch::patch(&mut wrapper, &metadata_ops).map_err(fail)?;
        obj.metadata = serde_json::from_value(wrapper["metadata"].take())
            .map_err(|err| ReviewError::Malformed(format!("patched metadata: {err}")))?;
    }
    Ok(())
}

/// The chain's combined decision: the validating verdict, the warnings of both phases without
/// duplicates, and the mutating patch unless the request is denied (a denied request is not
/// patched).
pub fn chain(mutated: Decision, mut validated: Decision) -> Decision {
    let mut warnings = mutated.findings.warnings;
    for warning in validated.findings.warnings.drain(..) {
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }
    validated.findings.warnings = warnings;
    validated.patch = if validated.findings.denied() {
        Vec::new()
    } else {
        mutated.patch
    };
    validated
}

/// The AdmissionReview body for `response`, in the API server's wire form.
///
/// kube-core serialises `patch` (a Go `[]byte`) as a JSON array of numbers. Go accepts that, but
/// the documented form is a base64 string, which is also about a third of the size, so the
/// response is written here with the patch in base64 and every other field as kube-core has it.
pub fn encode_review(response: &AdmissionResponse, pretty: bool) -> Vec<u8> {
    use base64::Engine as _;
    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire<'a> {
        api_version: &'a str,
        kind: &'a str,
        response: WireResponse<'a>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct WireResponse<'a> {
        uid: &'a str,
        allowed: bool,
        status: &'a kube::core::Status,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch_type: Option<&'static str>,
        #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
        audit_annotations: &'a std::collections::HashMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        warnings: Option<&'a Vec<String>>,
    }

    let patch = response
        .patch
        .as_ref()
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
    let api_version = if response.types.api_version.is_empty() {
        "admission.k8s.io/v1"
    } else {
        &response.types.api_version
    };
    let wire = Wire {
        api_version,
        kind: "AdmissionReview",
        response: WireResponse {
            uid: &response.uid,
            allowed: response.allowed,
            status: &response.result,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            audit_annotations: &response.audit_annotations,
            warnings: response.warnings.as_ref(),
        },
    };
    let encoded = if pretty {
        serde_json::to_vec_pretty(&wire)
    } else {
        serde_json::to_vec(&wire)
    };
    encoded.expect("plain strings, booleans and maps always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{DgdIndex, DgdRecord, DynamoPath, Policy};

    /// The split patching of `patch_object` gives what patching the whole object's JSON gives.
    #[test]
    fn split_patching_equals_the_round_trip() {
        let mut view = DgdIndex::new();
        view.upsert(DgdRecord::managed(
            "team-a",
            "llama",
            None,
            DynamoPath::parse("default/llama").unwrap(),
        ));
        let policy = Policy::default();
        let ctx = Context {
            view: &view,
            policy: &policy,
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/reviews");
        for file in ["dgd-create.json", "pod-create.json"] {
            let body = std::fs::read(dir.join(file)).unwrap();
            let req = parse_request(&body).unwrap();
            let mutated = decide(&req, Phase::Mutate, &ctx).unwrap();
            assert!(!mutated.patch.is_empty(), "{file}: no patch to test");
            let fast = apply_mutation(&req, &mutated).unwrap().object.unwrap();
            let mut slow = serde_json::to_value(req.object.as_ref().unwrap()).unwrap();
            json_patch::patch(&mut slow, &mutated.patch).unwrap();
            assert_eq!(serde_json::to_value(&fast).unwrap(), slow, "{file}");
        }
    }
}
