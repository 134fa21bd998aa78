//! What the validator reads of a document before judging it: its kind, name and namespace, and
//! for a DGD whether it can be judged at all (an unrendered template or a missing name cannot).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::{DGD_API_VERSION, DGD_KIND};
use crate::engine::dgd::PATH_ANNOTATION;

/// The identifying fields of one document.
pub struct Shape<'a> {
    pub api_version: Option<&'a str>,
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
    value: &'a Value,
}

/// `${VAR}`, `$VAR` (envsubst) and `{{ ... }}` (Helm, Go templates): text that a renderer was
/// meant to replace.
static TEMPLATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\{\{.*?\}\}").expect("a valid regex")
});

impl<'a> Shape<'a> {
    /// `None` for a document that is not a Kubernetes object (no `kind`).
    pub fn of(value: &'a Value) -> Option<Self> {
        let kind = value.get("kind")?.as_str().filter(|k| !k.is_empty())?;
        let metadata = value.get("metadata");
        let text = |key: &str| {
            metadata
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        Some(Shape {
            api_version: value.get("apiVersion").and_then(Value::as_str),
            kind,
            name: text("name"),
            namespace: text("namespace"),
            value,
        })
    }

    pub fn is_dgd(&self) -> bool {
        self.kind == DGD_KIND
    }

    /// Why this DGD cannot be judged, with the fix; `None` when it can.
    pub fn dgd_problem(&self) -> Option<String> {
        if let Some((field, value)) = self.unrendered() {
            return Some(format!(
                "unrendered template: {field} is {}; render the manifest first (envsubst, helm \
                 template, kustomize build) and validate the output",
                crate::engine::path::quote_within(&value, 48)
            ));
        }
        match self.api_version {
            Some(DGD_API_VERSION) => {}
            Some(other) => {
                return Some(format!(
                    "apiVersion {other:?} is not supported; the rules are defined for \
                     {DGD_API_VERSION}"
                ));
            }
            None => {
                return Some(format!(
                    "apiVersion is missing; set apiVersion: {DGD_API_VERSION}"
                ));
            }
        }
        let metadata = self.value.get("metadata");
        if metadata.is_some_and(|m| !m.is_object() && !m.is_null()) {
            return Some("metadata must be a map; fix the manifest's structure".to_owned());
        }
        if self.name.is_none() {
            let generated = metadata.and_then(|m| m.get("generateName")).is_some();
            return Some(if generated {
                "metadata.generateName is not enough: a DGD's path is claimed by its name; set \
                 metadata.name"
                    .to_owned()
            } else {
                "metadata.name is missing or not a string; give the DGD a name".to_owned()
            });
        }
        None
    }

    /// The first field that decides a DGD's identity or path and still holds template text.
    fn unrendered(&self) -> Option<(String, String)> {
        let template = |v: &Value| {
            v.as_str()
                .filter(|s| TEMPLATE.is_match(s))
                .map(str::to_owned)
        };
        let metadata = self.value.get("metadata");
        let mut fields: Vec<(String, Option<&Value>)> = vec![
            ("apiVersion".to_owned(), self.value.get("apiVersion")),
            (
                "metadata.name".to_owned(),
                metadata.and_then(|m| m.get("name")),
            ),
            (
                "metadata.namespace".to_owned(),
                metadata.and_then(|m| m.get("namespace")),
            ),
            (
                format!("metadata.annotations[{PATH_ANNOTATION}]"),
                metadata
                    .and_then(|m| m.get("annotations"))
                    .and_then(|a| a.get(PATH_ANNOTATION)),
            ),
        ];
        let spec = self.value.get("spec");
        fields.push((
            "spec.dynamoNamespace".to_owned(),
            spec.and_then(|s| s.get("dynamoNamespace")),
        ));
        if let Some(services) = spec
            .and_then(|s| s.get("services"))
            .and_then(Value::as_object)
        {
            for (name, service) in services {
                if TEMPLATE.is_match(name) {
                    return Some(("a key of spec.services".to_owned(), name.to_owned()));
                }
                for key in ["dynamoNamespace", "globalDynamoNamespace"] {
                    fields.push((format!("spec.services.{name}.{key}"), service.get(key)));
                }
            }
        }
        fields
            .into_iter()
            .find_map(|(field, value)| value.and_then(template).map(|v| (field, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problem(value: Value) -> Option<String> {
        Shape::of(&value).unwrap().dgd_problem()
    }

    fn dgd(metadata: Value, spec: Value) -> Value {
        json!({"apiVersion": DGD_API_VERSION, "kind": DGD_KIND, "metadata": metadata, "spec": spec})
    }

    #[test]
    fn templates_in_identity_fields_are_errors() {
        let err = problem(dgd(json!({"name": "${NAME}"}), json!({}))).unwrap();
        assert!(
            err.starts_with("unrendered template: metadata.name is \"${NAME}\""),
            "{err}"
        );
        let err = problem(dgd(
            json!({"name": "a"}),
            json!({"services": {"Frontend": {"dynamoNamespace": "{{ .Values.ns }}"}}}),
        ))
        .unwrap();
        assert!(
            err.contains("spec.services.Frontend.dynamoNamespace"),
            "{err}"
        );
        let err = problem(dgd(json!({"name": "a", "namespace": "$NS"}), json!({}))).unwrap();
        assert!(err.contains("metadata.namespace"), "{err}");
    }

    #[test]
    fn templates_elsewhere_are_fine() {
        let value = dgd(
            json!({"name": "a"}),
            json!({"services": {"W": {"extraPodSpec": {"mainContainer": {"image": "${IMAGE}"}}}}}),
        );
        assert_eq!(problem(value), None);
    }

    #[test]
    fn names_and_versions_are_required() {
        assert!(
            problem(dgd(json!({"generateName": "a-"}), json!({})))
                .unwrap()
                .contains("metadata.name")
        );
        let mut value = dgd(json!({"name": "a"}), json!({}));
        value["apiVersion"] = json!("nvidia.com/v1beta1");
        assert!(problem(value).unwrap().contains("not supported"));
        assert!(Shape::of(&json!({"a": 1})).is_none());
        assert!(Shape::of(&json!("text")).is_none());
    }
}
