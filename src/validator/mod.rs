//! The policy validator: manifests judged offline by the webhook's own engine, as the API server
//! would judge them if they were applied together.
//!
//! Every DGD given is reviewed as the chain of mutating and validating webhooks would review its
//! `kubectl apply`: a CREATE, or an UPDATE of the DGD of the same name in `--existing`. The
//! uniqueness rules see the existing DGDs plus every DGD given, each as the mutating webhook would
//! record it, so two DGDs that share a path are both reported. Text in, a [`Report`] out: reading
//! files and printing are the CLI's job.

mod report;
mod shape;

use std::collections::HashMap;

use kube::core::admission::{AdmissionRequest, Operation};
use kube::core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use serde_json::Value;

use crate::documents::{Document, parse_for_judgement};
use crate::engine::{
    ClusterView, Context, Decision, DgdIndex, DgdRecord, DgdState, Phase, Policy, ReviewError,
    apply_mutation, chain, decide,
};

pub use report::{ObjectReport, Report, SourceError, Summary, Verdict};

pub const DGD_API_GROUP: &str = "nvidia.com";
pub const DGD_API_VERSION: &str = "nvidia.com/v1alpha1";
pub const DGD_KIND: &str = "DynamoGraphDeployment";

/// Collects manifests, then judges them all at once in [`Validator::finish`].
pub struct Validator {
    policy: Policy,
    default_namespace: String,
    /// What the cluster holds before anything given is applied.
    existing: DgdIndex,
    /// The existing DGDs plus every DGD given, as the mutating webhook would record it.
    view: DgdIndex,
    entries: Vec<Entry>,
    sources: usize,
    documents: usize,
    skipped: usize,
    source_errors: Vec<SourceError>,
}

/// One object found in the input, before judgement.
struct Entry {
    source: String,
    doc: Location,
    kind: String,
    namespace: String,
    name: String,
    body: Body,
}

#[derive(Clone, Copy)]
struct Location {
    line: u64,
    item: Option<usize>,
}

enum Body {
    Dgd(Box<DynamicObject>),
    /// A DGD that cannot be judged: the message says why and how to fix it.
    Invalid(String),
    /// Another kind; kept only to find name clashes.
    Other,
}

impl Validator {
    /// `existing` holds the DGDs already in the cluster; `default_namespace` is the k8s namespace
    /// of documents that name none.
    pub fn new(existing: DgdIndex, default_namespace: &str, policy: Policy) -> Self {
        Validator {
            policy,
            default_namespace: default_namespace.to_owned(),
            view: existing.clone(),
            existing,
            entries: Vec::new(),
            sources: 0,
            documents: 0,
            skipped: 0,
            source_errors: Vec::new(),
        }
    }

    /// Adds the manifests in `text`, which came from `source` (a file name, or `-`).
    pub fn add_text(&mut self, source: &str, text: &str) {
        self.sources += 1;
        match parse_for_judgement(text) {
            Ok(documents) => {
                for document in documents {
                    self.add_document(source, document);
                }
            }
            Err(message) => self.source_errors.push(SourceError {
                source: source.to_owned(),
                message,
            }),
        }
    }

    /// Records input that could not be read at all.
    pub fn add_source_error(&mut self, source: &str, message: String) {
        self.sources += 1;
        self.source_errors.push(SourceError {
            source: source.to_owned(),
            message,
        });
    }

    fn add_document(&mut self, source: &str, document: Document) {
        self.documents += 1;
        let Document { line, item, value } = document;
        let doc = Location { line, item };
        let Some(shape) = shape::Shape::of(&value) else {
            self.skipped += 1;
            return;
        };
        let namespace = shape
            .namespace
            .unwrap_or(&self.default_namespace)
            .to_owned();
        let name = shape.name.unwrap_or_default().to_owned();
        let kind = shape.kind.to_owned();
        let body = if shape.is_dgd() {
            match shape.dgd_problem() {
                Some(problem) => Body::Invalid(problem),
                None => match serde_json::from_value::<DynamicObject>(value) {
                    Ok(obj) => Body::Dgd(Box::new(obj)),
                    Err(err) => Body::Invalid(format!(
                        "not a valid object ({err}); fix the manifest's structure"
                    )),
                },
            }
        } else {
            if shape.name.is_none() {
                self.skipped += 1;
                return;
            }
            Body::Other
        };
        self.entries.push(Entry {
            source: source.to_owned(),
            doc,
            kind,
            namespace,
            name,
            body,
        });
    }

    /// Judges everything added so far.
    pub fn finish(mut self) -> Report {
        let clashes = self.find_clashes();
        let mut objects: Vec<Option<ObjectReport>> = Vec::with_capacity(self.entries.len());
        // Reviews whose validating phase waits until every DGD given is in the view.
        let mut pending: Vec<(usize, AdmissionRequest<DynamicObject>, Decision)> = Vec::new();
        let entries = std::mem::take(&mut self.entries);
        for (index, entry) in entries.into_iter().enumerate() {
            let mut report = ObjectReport::new(
                &entry.source,
                entry.doc.line,
                entry.doc.item,
                &entry.kind,
                &entry.namespace,
                &entry.name,
            );
            let clash = clashes.get(&index);
            match (entry.body, clash) {
                (Body::Invalid(problem), _) => report.error(problem),
                (Body::Other, None) => {
                    self.skipped += 1;
                    objects.push(None);
                    continue;
                }
                (Body::Other, Some(message)) => report.clash(message.clone()),
                (Body::Dgd(obj), clash) => {
                    let existing = self.existing.dgd(&entry.namespace, &entry.name);
                    let req = request(*obj, &entry.namespace, existing);
                    let ctx = Context {
                        view: &self.view,
                        policy: &self.policy,
                    };
                    let outcome = decide(&req, Phase::Mutate, &ctx)
                        .and_then(|mutated| apply_mutation(&req, &mutated).map(|p| (p, mutated)));
                    match outcome {
                        Err(err) => report.error(review_error(err)),
                        Ok((_, mutated)) if mutated.findings.denied() => {
                            report.judged(&mutated, None);
                        }
                        Ok((patched, mutated)) => {
                            let record = DgdRecord::from_object(
                                patched.object.as_ref().expect("a CREATE or UPDATE has one"),
                                &entry.namespace,
                            );
                            report.canonical_path = record.path().map(|p| p.as_str().to_owned());
                            report.token = Some(record.token().to_owned());
                            // Of several objects with one name only the first joins the view:
                            // applied together, the last one would replace it, but either way
                            // the cluster holds one DGD of that name.
                            if clash.is_none() || clashes.first_of(index) {
                                self.view.upsert(record);
                            }
                            if clash.is_none() {
                                pending.push((index, patched, mutated));
                            }
                        }
                    }
                    if let Some(message) = clash {
                        report.clash(message.clone());
                    }
                }
            }
            objects.push(Some(report));
        }
        let ctx = Context {
            view: &self.view,
            policy: &self.policy,
        };
        for (index, patched, mutated) in pending {
            let report = objects[index].as_mut().expect("pending DGDs have a report");
            match decide(&patched, Phase::Validate, &ctx) {
                Ok(validated) => {
                    let path = report.canonical_path.take();
                    report.judged(&chain(mutated, validated), path);
                }
                Err(err) => report.error(review_error(err)),
            }
        }
        let objects: Vec<ObjectReport> = objects.into_iter().flatten().collect();
        Report::new(
            objects,
            self.source_errors,
            self.sources,
            self.documents,
            self.skipped,
        )
    }

    /// Objects of one kind, namespace and name given more than once: each gets a message naming
    /// the other places.
    fn find_clashes(&self) -> Clashes {
        let mut groups: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        for (index, entry) in self.entries.iter().enumerate() {
            if entry.name.is_empty() {
                continue;
            }
            groups
                .entry((&entry.kind, &entry.namespace, &entry.name))
                .or_default()
                .push(index);
        }
        let mut clashes = Clashes::default();
        for ((kind, namespace, name), indexes) in groups {
            if indexes.len() < 2 {
                continue;
            }
            clashes.first.push(indexes[0]);
            for &index in &indexes {
                let others: Vec<String> = indexes
                    .iter()
                    .filter(|&&other| other != index)
                    .map(|&other| self.entries[other].place())
                    .collect();
                clashes.messages.insert(
                    index,
                    format!(
                        "name clash: {kind} {namespace}/{name} is also defined at {}; applied \
                         together, one replaces the other. Give each object its own name",
                        others.join(", ")
                    ),
                );
            }
        }
        clashes
    }
}

impl Entry {
    fn place(&self) -> String {
        report::place(&self.source, self.doc.line, self.doc.item)
    }
}

#[derive(Default)]
struct Clashes {
    messages: HashMap<usize, String>,
    first: Vec<usize>,
}

impl Clashes {
    fn get(&self, index: &usize) -> Option<&String> {
        self.messages.get(index)
    }

    fn first_of(&self, index: usize) -> bool {
        self.first.contains(&index)
    }
}

fn review_error(err: ReviewError) -> String {
    format!("cannot be reviewed: {err}")
}

/// The admission request `kubectl apply` of `obj` would cause: an UPDATE of `existing` when the
/// cluster already holds a DGD of that name, else a CREATE.
fn request(
    mut obj: DynamicObject,
    namespace: &str,
    existing: Option<&DgdRecord>,
) -> AdmissionRequest<DynamicObject> {
    obj.metadata.namespace = Some(namespace.to_owned());
    let old_object = existing.map(|record| {
        obj.metadata.uid = record.uid.clone();
        stored_object(record)
    });
    AdmissionRequest {
        types: TypeMeta {
            api_version: "admission.k8s.io/v1".to_owned(),
            kind: "AdmissionReview".to_owned(),
        },
        uid: String::new(),
        kind: GroupVersionKind::gvk(DGD_API_GROUP, "v1alpha1", DGD_KIND),
        resource: GroupVersionResource::gvr(DGD_API_GROUP, "v1alpha1", "dynamographdeployments"),
        sub_resource: None,
        request_kind: None,
        request_resource: None,
        request_sub_resource: None,
        name: obj.metadata.name.clone().unwrap_or_default(),
        namespace: Some(namespace.to_owned()),
        operation: if old_object.is_some() {
            Operation::Update
        } else {
            Operation::Create
        },
        user_info: Default::default(),
        object: Some(obj),
        old_object,
        dry_run: true,
        options: None,
    }
}

/// What the stored object of an existing DGD shows the engine: its identity and the path this
/// webhook recorded, if any.
fn stored_object(record: &DgdRecord) -> DynamicObject {
    let mut value = serde_json::json!({
        "apiVersion": DGD_API_VERSION,
        "kind": DGD_KIND,
        "metadata": {
            "name": record.name,
            "namespace": record.namespace,
        },
        "spec": {},
    });
    if let Some(uid) = &record.uid {
        value["metadata"]["uid"] = Value::from(uid.as_str());
    }
    if let DgdState::Managed { path, .. } = &record.state {
        value["metadata"]["annotations"] =
            serde_json::json!({ crate::engine::dgd::PATH_ANNOTATION: path.as_str() });
        value["spec"]["dynamoNamespace"] = Value::from(path.as_str());
    }
    serde_json::from_value(value).expect("a literal object is a valid DynamicObject")
}
