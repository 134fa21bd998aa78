//! Reading an AdmissionReview off the wire in one streaming pass, without `managedFields`.
//!
//! Parsing was two thirds of the server's instructions per review. kube's `AdmissionReview` and
//! `DynamicObject` flatten their type fields, which makes serde buffer the whole request into an
//! intermediate tree before building the real one; and `metadata.managedFields`, a third of a
//! typical pod's bytes, is a deep tree that no rule reads. This reader streams the request into
//! kube's `AdmissionRequest` directly and skips `managedFields` without building it. What it
//! yields is what serde's derived parse yields, less `managedFields` (tests below and in
//! `tests/fixtures.rs` compare the two).

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::AdmissionRequest;
use kube::core::{ApiResource, DynamicObject, DynamicResourceScope, Resource, TypeMeta};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

/// The review as sent: `apiVersion` and `kind` as plain fields, so nothing is buffered.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireReview {
    api_version: String,
    kind: String,
    request: Option<AdmissionRequest<LeanObject>>,
}

impl WireReview {
    /// The request, typed as the engine takes it; `None` when the review carries none.
    pub fn into_request(self) -> Option<AdmissionRequest<DynamicObject>> {
        let r = self.request?;
        Some(AdmissionRequest {
            types: TypeMeta {
                api_version: self.api_version,
                kind: self.kind,
            },
            uid: r.uid,
            kind: r.kind,
            resource: r.resource,
            sub_resource: r.sub_resource,
            request_kind: r.request_kind,
            request_resource: r.request_resource,
            request_sub_resource: r.request_sub_resource,
            name: r.name,
            namespace: r.namespace,
            operation: r.operation,
            user_info: r.user_info,
            object: r.object.map(|o| o.0),
            old_object: r.old_object.map(|o| o.0),
            dry_run: r.dry_run,
            options: r.options,
        })
    }
}

/// A `DynamicObject` read without `metadata.managedFields`.
pub struct LeanObject(pub DynamicObject);

impl Resource for LeanObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        DynamicObject::kind(dt)
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        DynamicObject::group(dt)
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        DynamicObject::version(dt)
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        DynamicObject::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

impl<'de> Deserialize<'de> for LeanObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = LeanObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LeanObject, A::Error> {
        let mut metadata: Option<ObjectMeta> = None;
        let mut data = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "metadata" {
                if metadata.is_some() {
                    return Err(de::Error::duplicate_field("metadata"));
                }
                let value = map.next_value_seed(Metadata)?;
                metadata = Some(ObjectMeta::deserialize(value).map_err(de::Error::custom)?);
            } else {
                let value: Value = map.next_value()?;
                data.insert(key, value);
            }
        }
        // As `DynamicObject`'s flattened `Option<TypeMeta>`: both strings, or no type.
        let types = match (data.get("apiVersion"), data.get("kind")) {
            (Some(Value::String(_)), Some(Value::String(_))) => {
                let text = |v: Option<Value>| match v {
                    Some(Value::String(s)) => s,
                    _ => String::new(),
                };
                Some(TypeMeta {
                    api_version: text(data.remove("apiVersion")),
                    kind: text(data.remove("kind")),
                })
            }
            _ => None,
        };
        Ok(LeanObject(DynamicObject {
            types,
            metadata: metadata.unwrap_or_default(),
            data: Value::Object(data),
        }))
    }
}

/// `metadata` as a JSON value with `managedFields` skipped unread. A repeated key keeps its last
/// value, as the typed parse of `ObjectMeta` (and Go) does.
struct Metadata;

impl<'de> DeserializeSeed<'de> for Metadata {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Metadata {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("object metadata")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "managedFields" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value: Value = map.next_value()?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }

    // Anything but a map is handed on as it is, for `ObjectMeta` to refuse in its own words.
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
}

#[cfg(test)]
mod tests {
    use kube::core::admission::AdmissionReview;

    use super::*;

    /// kube's derived parse, less managedFields: what the engine used to get.
    fn derived(body: &[u8]) -> Value {
        let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).unwrap();
        let mut req: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
        for obj in [&mut req.object, &mut req.old_object].into_iter().flatten() {
            obj.metadata.managed_fields = None;
        }
        serde_json::to_value(&req).unwrap()
    }

    fn lean(body: &[u8]) -> Value {
        let review: WireReview = serde_json::from_slice(body).unwrap();
        serde_json::to_value(review.into_request().unwrap()).unwrap()
    }

    #[test]
    fn reads_what_the_derived_parse_reads_less_managed_fields() {
        let shared = std::env::var_os("DYNAMO_TENANCY_SHARED")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
            });
        let mut files: Vec<_> = std::fs::read_dir(shared.join("captured"))
            .unwrap()
            .chain(
                std::fs::read_dir(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/reviews"),
                )
                .unwrap(),
            )
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter(|p| !p.ends_with("http-request-meta.json"))
            .collect();
        files.sort();
        assert!(files.len() >= 20, "{files:?}");
        let mut with_managed_fields = 0;
        for file in files {
            let body = std::fs::read(&file).unwrap();
            with_managed_fields += usize::from(body.windows(15).any(|w| w == b"\"managedFields\""));
            assert_eq!(lean(&body), derived(&body), "{}", file.display());
        }
        assert!(with_managed_fields > 5);
    }

    #[test]
    fn refuses_what_the_derived_parse_refuses() {
        let base = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":OBJ}}"#;
        for (object, ok) in [
            (r#"{"metadata":{"name":"a"},"spec":{}}"#, true),
            (
                r#"{"metadata":{"name":"a","managedFields":[{"x":1}]}}"#,
                true,
            ),
            (r#"{"metadata":{"name":"a","managedFields":5}}"#, true),
            (r#"null"#, true),
            (r#"{"apiVersion":"v1","metadata":{}}"#, true),
            (r#"{"metadata":{"name":"a","name":"b"}}"#, true),
            (r#"{"metadata":{},"metadata":{}}"#, false),
            (r#"{"metadata":null}"#, false),
            (r#"{"metadata":{"name":5}}"#, false),
            (r#"{"metadata":[]}"#, false),
            (r#""pod""#, false),
            (r#"[1]"#, false),
        ] {
            let body = base.replace("OBJ", object);
            let ours = serde_json::from_slice::<WireReview>(body.as_bytes()).is_ok();
            let theirs =
                serde_json::from_slice::<AdmissionReview<DynamicObject>>(body.as_bytes()).is_ok();
            assert_eq!(ours, ok, "{object}");
            if object.contains("managedFields\":5") {
                // The derived parse refuses a managedFields that is not a list; no rule reads it.
                assert!(!theirs);
            } else {
                assert_eq!(ours, theirs, "{object}");
            }
        }
        assert!(
            lean(base.replace("OBJ", "{}").as_bytes())["object"]["metadata"]
                .as_object()
                .unwrap()
                .is_empty()
        );
    }
}
