//! The DGDs already in a cluster, read from `--existing` text (what `kubectl get dgd -A -o yaml`
//! prints): the projection the uniqueness rules need.

use kube::core::DynamicObject;

use crate::documents::parse_documents;
use crate::engine::{DgdIndex, DgdRecord};

pub const DGD_KIND: &str = "DynamoGraphDeployment";

/// Builds the view from YAML or JSON text. Non-DGD objects are ignored; a DGD without a name is an
/// error naming its line.
pub fn index_from_text(text: &str, default_namespace: &str) -> Result<DgdIndex, String> {
    let mut index = DgdIndex::new();
    for doc in parse_documents(text)? {
        if doc.value.get("kind").and_then(|k| k.as_str()) != Some(DGD_KIND) {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(doc.value)
            .map_err(|e| format!("line {}: DGD is not a valid object: {e}", doc.line))?;
        if obj.metadata.name.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "line {}: DGD has no metadata.name; give every existing DGD its name",
                doc.line
            ));
        }
        index.upsert(DgdRecord::from_object(&obj, default_namespace));
    }
    Ok(index)
}
