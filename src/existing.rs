//! The DGDs already in a cluster, read from `--existing` text (what `kubectl get dgd -A -o yaml`
//! prints): the projection the uniqueness rules need.
//!
//! Documents are parsed straight into [`DgdStub`]s, so only names, annotations and the path are
//! kept while reading; 10,000 DGDs never exist as whole JSON trees at once.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::cache::stub::{DgdStub, StubSpec};
use crate::engine::DgdIndex;

pub const DGD_KIND: &str = "DynamoGraphDeployment";

/// A document as far as `--existing` cares: a DGD, a List of documents, or anything else.
#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    #[serde(default)]
    spec: Option<StubSpec>,
    #[serde(default)]
    items: Option<Vec<Document>>,
}

impl Document {
    /// The DGDs in this document, each with the line the document starts on.
    fn collect(self, line: u64, out: &mut Vec<(u64, DgdStub)>) {
        match (self.kind.as_deref(), self.items) {
            (Some(kind), Some(items)) if kind.ends_with("List") => {
                for item in items {
                    item.collect(line, out);
                }
            }
            (Some(DGD_KIND), _) => out.push((
                line,
                DgdStub {
                    metadata: self.metadata.unwrap_or_default(),
                    spec: self.spec.unwrap_or_default(),
                },
            )),
            _ => {}
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Builds the view from YAML or JSON text. Non-DGD objects are ignored; a DGD without a name is an
/// error.
pub fn index_from_text(text: &str, default_namespace: &str) -> Result<DgdIndex, String> {
    let trimmed = text.trim_start();
    let json_line = 1 + text[..text.len() - trimmed.len()].matches('\n').count() as u64;
    let documents: Vec<(u64, Document)> = if trimmed.starts_with('{') {
        let document = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        vec![(json_line, document)]
    } else if trimmed.starts_with('[') {
        let documents: Vec<Document> =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        documents.into_iter().map(|d| (json_line, d)).collect()
    } else {
        serde_saphyr::from_multiple_with_options::<Spanned<Document>>(
            text,
            crate::documents::yaml_options(text),
        )
        .map_err(|e| format!("invalid YAML: {}", first_line(&e.to_string())))?
        .into_iter()
        .map(|d| (d.referenced.line().max(1), d.value))
        .collect()
    };
    let mut stubs = Vec::new();
    for (line, document) in documents {
        document.collect(line, &mut stubs);
    }
    let mut index = DgdIndex::new();
    for (line, stub) in &stubs {
        if stub.metadata.name.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "line {line}: DGD has no metadata.name; give every existing DGD its name"
            ));
        }
        index.upsert(stub.record(default_namespace));
    }
    Ok(index)
}
