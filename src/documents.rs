//! Kubernetes objects from YAML or JSON text: multi-document YAML, `kind: List`, or single objects,
//! each with the line it starts on. Text in, values out; reading files is the caller's job.

use serde_json::Value;
use serde_saphyr::Spanned;

/// One object and where it starts (1-based line).
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub line: u64,
    pub value: Value,
}

/// Parses `text` into objects. Lists (`kind: ...List` with `items`) are flattened; empty documents
/// are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, String> {
    let trimmed = text.trim_start();
    let top: Vec<Document> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let line = 1 + text[..text.len() - trimmed.len()].matches('\n').count() as u64;
        let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        match value {
            Value::Array(items) => items
                .into_iter()
                .map(|value| Document { line, value })
                .collect(),
            value => vec![Document { line, value }],
        }
    } else {
        serde_saphyr::from_multiple::<Spanned<Value>>(text)
            .map_err(|e| format!("invalid YAML: {}", first_line(&e.to_string())))?
            .into_iter()
            .map(|doc| Document {
                line: doc.referenced.line().max(1),
                value: doc.value,
            })
            .collect()
    };
    let mut out = Vec::with_capacity(top.len());
    for doc in top {
        flatten(doc, &mut out);
    }
    Ok(out)
}

fn flatten(doc: Document, out: &mut Vec<Document>) {
    match doc.value {
        Value::Null => {}
        Value::Object(ref map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && map.get("items").is_some_and(Value::is_array) =>
        {
            let Value::Object(mut map) = doc.value else {
                unreachable!()
            };
            if let Some(Value::Array(items)) = map.remove("items") {
                for value in items {
                    flatten(
                        Document {
                            line: doc.line,
                            value,
                        },
                        out,
                    );
                }
            }
        }
        _ => out.push(doc),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_keeps_start_lines() {
        let docs = parse_documents("a: 1\n---\nb: 2\n---\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 1);
        assert_eq!(docs[1].line, 3);
    }

    #[test]
    fn lists_are_flattened() {
        let docs =
            parse_documents(r#"{"kind":"List","items":[{"kind":"A"},{"kind":"B"}]}"#).unwrap();
        assert_eq!(docs.len(), 2);
        let docs = parse_documents("kind: DynamoGraphDeploymentList\nitems:\n- kind: A\n").unwrap();
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn bad_input_is_one_line() {
        let err = parse_documents("a: [1,\n").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(parse_documents("{").is_err());
    }
}
