//! Kubernetes objects from YAML or JSON text: multi-document YAML, `kind: List`, or single objects,
//! each with the line it starts on. Text in, values out; reading files is the caller's job.

use serde_json::Value;
use serde_saphyr::Spanned;

/// One object and where it starts (1-based line).
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub line: u64,
    /// Its index in the `items` of the List it came from, if it came from one.
    pub item: Option<usize>,
    pub value: Value,
}

/// Parses `text` into objects. Lists (`kind: ...List` with `items`) are flattened, each item
/// keeping its own line in YAML (JSON has no lines: items get the List's line and their index);
/// empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, String> {
    let trimmed = text.trim_start();
    let top: Vec<(u64, Value)> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let line = 1 + text[..text.len() - trimmed.len()].matches('\n').count() as u64;
        let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        match value {
            Value::Array(items) => items.into_iter().map(|value| (line, value)).collect(),
            value => vec![(line, value)],
        }
    } else {
        serde_saphyr::from_multiple::<Spanned<Value>>(text)
            .map_err(|e| format!("invalid YAML: {}", first_line(&e.to_string())))?
            .into_iter()
            .map(|doc| (doc.referenced.line().max(1), doc.value))
            .collect()
    };
    // Item lines need a second, span-only pass; only files that hold a List pay for it.
    let item_lines =
        if top.iter().any(|(_, value)| is_list(value)) && !trimmed.starts_with(['{', '[']) {
            serde_saphyr::from_multiple::<ItemLines>(text)
                .ok()
                .filter(|lines| lines.len() == top.len())
        } else {
            None
        };
    let mut out = Vec::with_capacity(top.len());
    for (index, (line, value)) in top.into_iter().enumerate() {
        if !is_list(&value) {
            out.push(Document {
                line,
                item: None,
                value,
            });
            continue;
        }
        let lines = item_lines.as_ref().map(|all| all[index].0.as_slice());
        let Value::Object(mut map) = value else {
            unreachable!("is_list checked that it is an object")
        };
        if let Some(Value::Array(items)) = map.remove("items") {
            for (item, value) in items.into_iter().enumerate() {
                if value.is_null() {
                    continue;
                }
                let line = lines.and_then(|l| l.get(item).copied()).unwrap_or(line);
                out.push(Document {
                    line,
                    item: Some(item),
                    value,
                });
            }
        }
    }
    Ok(out)
}

fn is_list(value: &Value) -> bool {
    value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array)
}

/// The start line of each element of a document's top-level `items` sequence (empty when the
/// document has none). Accepts a document of any shape.
struct ItemLines(Vec<u64>);

/// A visitor that yields `Default` for every scalar and drains maps; sequences are up to `visit_seq`.
macro_rules! accept_scalars {
    ($out:ty) => {
        fn visit_bool<E>(self, _: bool) -> Result<$out, E> {
            Ok(Default::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<$out, E> {
            Ok(Default::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<$out, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<$out, E> {
            Ok(Default::default())
        }
        fn visit_str<E>(self, _: &str) -> Result<$out, E> {
            Ok(Default::default())
        }
        fn visit_unit<E>(self) -> Result<$out, E> {
            Ok(Default::default())
        }
        fn visit_none<E>(self) -> Result<$out, E> {
            Ok(Default::default())
        }
    };
}

impl<'de> serde::Deserialize<'de> for ItemLines {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

        struct Top;
        #[derive(Default)]
        struct Lines(Vec<u64>);

        impl<'de> serde::Deserialize<'de> for Lines {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(SeqLines)
            }
        }

        struct SeqLines;
        impl<'de> Visitor<'de> for SeqLines {
            type Value = Lines;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            accept_scalars!(Lines);
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lines, A::Error> {
                let mut lines = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<IgnoredAny>>()? {
                    lines.push(item.referenced.line().max(1));
                }
                Ok(Lines(lines))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lines, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lines::default())
            }
        }

        impl<'de> Visitor<'de> for Top {
            type Value = Lines;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML document")
            }
            accept_scalars!(Lines);
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lines, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lines::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lines, A::Error> {
                let mut lines = Lines::default();
                while let Some(key) = map.next_key::<Value>()? {
                    if key == "items" {
                        lines = map.next_value()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(lines)
            }
        }
        deserializer
            .deserialize_any(Top)
            .map(|lines| ItemLines(lines.0))
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
    fn list_items_keep_their_own_lines() {
        let text = "kind: ConfigMap\n---\nkind: List\nitems:\n- kind: A\n  x: 1\n-   kind: B\n";
        let docs = parse_documents(text).unwrap();
        let lines: Vec<(u64, Option<usize>)> = docs.iter().map(|d| (d.line, d.item)).collect();
        assert_eq!(lines, [(1, None), (5, Some(0)), (7, Some(1))]);
        let docs =
            parse_documents(r#"{"kind":"List","items":[{"kind":"A"},{"kind":"B"}]}"#).unwrap();
        assert_eq!(docs[1].item, Some(1));
        assert_eq!(docs[1].line, 1);
    }

    #[test]
    fn bad_input_is_one_line() {
        let err = parse_documents("a: [1,\n").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(parse_documents("{").is_err());
    }
}
