//! Kubernetes objects from YAML or JSON text: multi-document YAML, `kind: List`, or single objects,
//! each with the line it starts on. Text in, values out; reading files is the caller's job.
//!
//! Two depths: [`parse_documents`] keeps every field; [`parse_for_judgement`] keeps only what the
//! policy engine reads of an object (identity, metadata, the path sources), so that validating
//! thousands of DGDs never holds their pod templates in memory. Large YAML streams are split at
//! document markers and parsed on every core.

use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

/// Every scalar visit of a visitor, as `$wrap(the scalar as a Value)`.
macro_rules! forward_scalars {
    ($wrap:expr) => {
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(($wrap)(Value::Bool(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(($wrap)(Value::from(v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(($wrap)(Value::from(v)))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(($wrap)(Value::from(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(($wrap)(Value::from(v)))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(($wrap)(Value::from(v)))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(($wrap)(Value::Null))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(($wrap)(Value::Null))
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            Value::deserialize(d).map($wrap)
        }
    };
}

/// One object and where it starts (1-based line).
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub line: u64,
    /// Its index in the `items` of the List it came from, if it came from one.
    pub item: Option<usize>,
    pub value: Value,
}

/// serde-saphyr's limits for `text`: its defaults stop YAML bombs (alias storms, deep nesting),
/// but also cap a stream at 1,024 documents and 250,000 nodes, which a directory of real manifests
/// or `kubectl get dgd -A -o yaml` of a big cluster exceeds. Counts that grow with the input are
/// raised in proportion to its size (a document or node takes at least one byte); the alias and
/// depth limits stay as they are.
pub fn yaml_options(text: &str) -> serde_saphyr::Options {
    let len = text.len();
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = budget.max_documents.max(len / 4);
    budget.max_nodes = budget.max_nodes.max(len);
    budget.max_events = budget.max_events.max(2 * len);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Parses `text` into objects with every field. Lists (`kind: ...List` with `items`) are
/// flattened, each item keeping its own line in YAML (JSON has no lines: items get the List's
/// line and their index); empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, String> {
    parse::<false>(text)
}

/// [`parse_documents`], keeping of each object only `apiVersion`, `kind`, `metadata`, and of its
/// `spec` only `dynamoNamespace` and each `services.<name>.dynamoNamespace` and
/// `.globalDynamoNamespace`: every field a DGD's admission reads. A field of the wrong type is
/// kept as it is, so the engine still sees (and reports) it.
pub fn parse_for_judgement(text: &str) -> Result<Vec<Document>, String> {
    parse::<true>(text)
}

/// Streams above this size are parsed in parallel.
const PARALLEL_BYTES: usize = 1 << 20;

fn parse<const JUDGED: bool>(text: &str) -> Result<Vec<Document>, String> {
    let trimmed = text.trim_start();
    let top: Vec<(u64, Node)> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let line = 1 + text[..text.len() - trimmed.len()].matches('\n').count() as u64;
        let mut de = serde_json::Deserializer::from_str(text);
        let top = TopJson::<JUDGED>
            .deserialize(&mut de)
            .and_then(|top| de.end().map(|()| top))
            .map_err(|e| format!("invalid JSON: {e}"))?;
        top.into_iter().map(|node| (line, node)).collect()
    } else {
        parse_yaml::<JUDGED>(text, PARALLEL_BYTES)?
    };
    let mut out = Vec::with_capacity(top.len());
    for (line, node) in top {
        match node.items {
            None => out.push(Document {
                line,
                item: None,
                value: node.value,
            }),
            Some(items) => {
                for (item, (item_line, value)) in items.into_iter().enumerate() {
                    if value.is_null() {
                        continue;
                    }
                    out.push(Document {
                        line: if item_line == 0 { line } else { item_line },
                        item: Some(item),
                        value,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn parse_yaml<const JUDGED: bool>(
    text: &str,
    parallel_from: usize,
) -> Result<Vec<(u64, Node)>, String> {
    let parts = if text.len() >= parallel_from {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    } else {
        1
    };
    let chunks = split_at_document_markers(text, parts);
    if chunks.len() > 1 {
        let results: Vec<Result<Vec<(u64, Node)>, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|&(start, end, line)| {
                    scope.spawn(move || parse_yaml_chunk::<JUDGED>(&text[start..end], line))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("YAML parser panicked".to_owned()))
                })
                .collect()
        });
        if results.iter().all(Result::is_ok) {
            return Ok(results.into_iter().flat_map(Result::unwrap).collect());
        }
        // A chunk failed: parse the whole text once more, for the error's true line numbers.
    }
    parse_yaml_chunk::<JUDGED>(text, 0)
}

fn parse_yaml_chunk<const JUDGED: bool>(
    text: &str,
    line_offset: u64,
) -> Result<Vec<(u64, Node)>, String> {
    Ok(
        serde_saphyr::from_multiple_with_options::<Spanned<Top<JUDGED>>>(text, yaml_options(text))
            .map_err(|e| format!("invalid YAML: {}", first_line(&e.to_string())))?
            .into_iter()
            .map(|doc| {
                let mut node = doc.value.0;
                if let Some(items) = &mut node.items {
                    for (line, _) in items {
                        *line += line_offset;
                    }
                }
                (doc.referenced.line().max(1) + line_offset, node)
            })
            .collect(),
    )
}

/// Splits a YAML stream into at most `parts` pieces of whole documents: `(start, end, lines
/// before start)`. A piece starts at a `---` line; YAML forbids such a line inside any scalar, so
/// the pieces parse exactly as the whole would. A `---` after a directive (`%YAML`) is not a
/// cut, since the directive belongs to the document it precedes.
fn split_at_document_markers(text: &str, parts: usize) -> Vec<(usize, usize, u64)> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut lines_before = 0u64;
    let mut previous_is_directive = false;
    let mut offset = 0;
    let mut next_target = text.len() / parts.max(1);
    for (line_no, line) in (0u64..).zip(text.split_inclusive('\n')) {
        let is_marker = line.starts_with("---")
            && line[3..]
                .chars()
                .next()
                .is_none_or(|c| c == ' ' || c == '\t' || c == '\r' || c == '\n');
        if is_marker && offset >= next_target && offset > start && !previous_is_directive {
            chunks.push((start, offset, lines_before));
            start = offset;
            lines_before = line_no;
            next_target = offset + text.len() / parts.max(1);
        }
        if !line.trim().is_empty() && !line.starts_with('#') {
            previous_is_directive = line.starts_with('%');
        }
        offset += line.len();
    }
    chunks.push((start, text.len(), lines_before));
    chunks
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// A parsed document: the object, and the items of a List with their lines (0 where unknown).
#[derive(Debug)]
struct Node {
    value: Value,
    items: Option<Vec<(u64, Value)>>,
}

/// A YAML document at the top of the stream.
struct Top<const JUDGED: bool>(Node);

impl<'de, const JUDGED: bool> Deserialize<'de> for Top<JUDGED> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor::<JUDGED, true>).map(Top)
    }
}

/// JSON text: one object, or an array of them.
struct TopJson<const JUDGED: bool>;

impl<'de, const JUDGED: bool> DeserializeSeed<'de> for TopJson<JUDGED> {
    type Value = Vec<Node>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Node>, D::Error> {
        struct ArrayOrNode<const JUDGED: bool>;
        impl<'de, const JUDGED: bool> Visitor<'de> for ArrayOrNode<JUDGED> {
            type Value = Vec<Node>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object or an array of objects")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<Node>, A::Error> {
                NodeVisitor::<JUDGED, false>.visit_map(map).map(|n| vec![n])
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Node>, A::Error> {
                let mut nodes = Vec::new();
                while let Some(node) = seq.next_element_seed(NodeSeed::<JUDGED, false>)? {
                    nodes.push(node);
                }
                Ok(nodes)
            }
            forward_scalars!(|v| vec![Node {
                value: v,
                items: None
            }]);
        }
        d.deserialize_any(ArrayOrNode::<JUDGED>)
    }
}

struct NodeSeed<const JUDGED: bool, const SPANS: bool>;

impl<'de, const JUDGED: bool, const SPANS: bool> DeserializeSeed<'de> for NodeSeed<JUDGED, SPANS> {
    type Value = Node;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor::<JUDGED, SPANS>)
    }
}

/// One object. `JUDGED` keeps only the fields [`parse_for_judgement`] names; `SPANS` records the
/// line of each List item (YAML only).
struct NodeVisitor<const JUDGED: bool, const SPANS: bool>;

impl<'de, const JUDGED: bool, const SPANS: bool> Visitor<'de> for NodeVisitor<JUDGED, SPANS> {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut out = Map::new();
        let mut items: Option<Items> = None;
        while let Some(key) = map.next_key::<Value>()? {
            let Value::String(key) = key else {
                // Kubernetes objects have string keys; keep the rest only in full depth.
                let value = map.next_value::<Value>()?;
                if !JUDGED {
                    out.insert(key.to_string(), value);
                }
                continue;
            };
            match key.as_str() {
                "items" => items = Some(map.next_value::<ItemsOf<SPANS>>()?.0),
                "spec" if JUDGED => {
                    let spec = map.next_value::<Pruned<SpecFields>>()?.0;
                    out.insert(key, spec);
                }
                "apiVersion" | "kind" | "metadata" => {
                    out.insert(key, map.next_value::<Value>()?);
                }
                _ if JUDGED => {
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    out.insert(key, map.next_value::<Value>()?);
                }
            }
        }
        let is_list = out
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"));
        let items = match items {
            Some(Items::Seq(items)) if is_list => Some(items),
            Some(other) => {
                if !JUDGED {
                    out.insert("items".to_owned(), other.into_value());
                }
                None
            }
            None => None,
        };
        Ok(Node {
            value: Value::Object(out),
            items,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element::<Value>()? {
            if !JUDGED {
                values.push(value);
            }
        }
        Ok(Node {
            value: Value::Array(values),
            items: None,
        })
    }

    forward_scalars!(|v| Node {
        value: v,
        items: None
    });
}

/// The `items` of a document: a sequence (with lines when known), or whatever else it holds.
enum Items {
    Seq(Vec<(u64, Value)>),
    Other(Value),
}

impl Items {
    fn into_value(self) -> Value {
        match self {
            Items::Seq(items) => Value::Array(items.into_iter().map(|(_, v)| v).collect()),
            Items::Other(value) => value,
        }
    }
}

struct ItemsOf<const SPANS: bool>(Items);

impl<'de, const SPANS: bool> Deserialize<'de> for ItemsOf<SPANS> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const SPANS: bool>;
        impl<'de, const SPANS: bool> Visitor<'de> for V<SPANS> {
            type Value = ItemsOf<SPANS>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                if SPANS {
                    while let Some(item) = seq.next_element::<Spanned<Value>>()? {
                        items.push((item.referenced.line().max(1), item.value));
                    }
                } else {
                    while let Some(item) = seq.next_element::<Value>()? {
                        items.push((0, item));
                    }
                }
                Ok(ItemsOf(Items::Seq(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|v| ItemsOf(Items::Other(v)))
            }
            forward_scalars!(|v| ItemsOf(Items::Other(v)));
        }
        d.deserialize_any(V::<SPANS>)
    }
}

/// Which keys of a map [`Pruned`] keeps, and how it prunes their values.
trait Fields {
    /// `Some(prune the value with F)` to keep `key`, `None` to drop it.
    fn keep(key: &str) -> Option<Keep>;
}

enum Keep {
    Whole,
    Services,
    Service,
}

struct SpecFields;
impl Fields for SpecFields {
    fn keep(key: &str) -> Option<Keep> {
        match key {
            "dynamoNamespace" => Some(Keep::Whole),
            "services" => Some(Keep::Services),
            _ => None,
        }
    }
}

/// Every key of `spec.services` is kept, each service pruned.
struct ServicesFields;
impl Fields for ServicesFields {
    fn keep(_: &str) -> Option<Keep> {
        Some(Keep::Service)
    }
}

struct ServiceFields;
impl Fields for ServiceFields {
    fn keep(key: &str) -> Option<Keep> {
        matches!(key, "dynamoNamespace" | "globalDynamoNamespace").then_some(Keep::Whole)
    }
}

/// A map cut down to the keys `F` keeps; a value that is not a map is kept whole.
struct Pruned<F>(Value, PhantomData<F>);

impl<'de, F: Fields> Deserialize<'de> for Pruned<F> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<F>(PhantomData<F>);
        impl<'de, F: Fields> Visitor<'de> for V<F> {
            type Value = Pruned<F>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Map::new();
                while let Some(key) = map.next_key::<Value>()? {
                    let Value::String(key) = key else {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    let value = match F::keep(&key) {
                        None => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                        Some(Keep::Whole) => map.next_value::<Value>()?,
                        Some(Keep::Services) => map.next_value::<Pruned<ServicesFields>>()?.0,
                        Some(Keep::Service) => map.next_value::<Pruned<ServiceFields>>()?.0,
                    };
                    out.insert(key, value);
                }
                Ok(Pruned(Value::Object(out), PhantomData))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(|v| Pruned(v, PhantomData))
            }
            forward_scalars!(|v| Pruned(v, PhantomData));
        }
        d.deserialize_any(V::<F>(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_yaml_keeps_start_lines() {
        let docs = parse_documents("a: 1\n---\nb: 2\n---\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 1);
        assert_eq!(docs[1].line, 3);
        assert_eq!(docs[1].value, json!({"b": 2}));
    }

    #[test]
    fn lists_are_flattened() {
        let docs =
            parse_documents(r#"{"kind":"List","items":[{"kind":"A"},{"kind":"B"}]}"#).unwrap();
        assert_eq!(docs.len(), 2);
        let docs = parse_documents("kind: DynamoGraphDeploymentList\nitems:\n- kind: A\n").unwrap();
        assert_eq!(docs.len(), 1);
        // `items` of a kind that is not a List is an ordinary field.
        let docs = parse_documents("kind: Thing\nitems: [1, 2]\n").unwrap();
        assert_eq!(docs[0].value, json!({"kind": "Thing", "items": [1, 2]}));
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
    fn judgement_keeps_only_what_the_rules_read() {
        let text = "apiVersion: nvidia.com/v1alpha1\nkind: DynamoGraphDeployment\n\
            metadata: {name: a, annotations: {x: z}}\nstatus: {state: ready}\n\
            spec:\n  dynamoNamespace: default/a\n  envs: [{name: A}]\n  services:\n\
            \x20   Frontend: {replicas: 2, dynamoNamespace: a, globalDynamoNamespace: true, \
            extraPodSpec: {mainContainer: {image: x}}}\n    Odd: [1]\n";
        let docs = parse_for_judgement(text).unwrap();
        assert_eq!(
            docs[0].value,
            json!({
                "apiVersion": "nvidia.com/v1alpha1",
                "kind": "DynamoGraphDeployment",
                "metadata": {"name": "a", "annotations": {"x": "z"}},
                "spec": {
                    "dynamoNamespace": "default/a",
                    "services": {
                        "Frontend": {"dynamoNamespace": "a", "globalDynamoNamespace": true},
                        "Odd": [1],
                    },
                },
            })
        );
        let docs = parse_for_judgement("kind: X\nspec: [1, 2]\n").unwrap();
        assert_eq!(docs[0].value, json!({"kind": "X", "spec": [1, 2]}));
        let docs = parse_for_judgement(r#"[{"kind": "X", "spec": "s", "data": 1}]"#).unwrap();
        assert_eq!(docs[0].value, json!({"kind": "X", "spec": "s"}));
    }

    #[test]
    fn large_streams_split_into_whole_documents() {
        let doc = "kind: A\nspec:\n  text: |\n    --- not a marker when indented\n";
        let text: String = (0..50).map(|i| format!("---\n{doc}  n: {i}\n")).collect();
        let chunks = split_at_document_markers(&text, 4);
        assert_eq!(chunks.len(), 4);
        let mut whole = Vec::new();
        for &(start, end, lines) in &chunks {
            assert!(text[start..].starts_with("---\n"));
            assert_eq!(lines as usize, text[..start].matches('\n').count());
            whole.extend(parse_yaml_chunk::<false>(&text[start..end], lines).unwrap());
        }
        let sequential = parse_yaml_chunk::<false>(&text, 0).unwrap();
        assert_eq!(whole.len(), sequential.len());
        for ((l1, a), (l2, b)) in whole.iter().zip(&sequential) {
            assert_eq!((l1, &a.value), (l2, &b.value));
        }
        // A directive belongs to the document after it: never cut between them.
        let text = "a: 1\n%YAML 1.2\n---\nb: 2\n";
        assert_eq!(split_at_document_markers(text, 2).len(), 1);
    }

    #[test]
    fn a_failing_chunk_reports_the_true_line() {
        let good: String = (0..400)
            .map(|i| format!("---\nkind: A\nn: {i}\n"))
            .collect();
        let text = format!("{good}---\nkind: [B\n");
        let err = parse_yaml::<false>(&text, 1000).unwrap_err();
        assert_eq!(err, parse_yaml_chunk::<false>(&text, 0).unwrap_err());
        assert!(err.contains("line 120"), "{err}");
        let ok = parse_yaml::<false>(&good, 1000).unwrap();
        assert_eq!(ok.len(), 400);
        assert_eq!(ok[399].0, 3 * 399 + 2);
    }

    #[test]
    fn bad_input_is_one_line() {
        let err = parse_documents("a: [1,\n").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(parse_documents("{").is_err());
        assert!(parse_documents("{} x").is_err());
    }
}
