//! What the cache reads of a DGD: its metadata and `spec.dynamoNamespace`, nothing else. Parsing
//! into this instead of a whole `DynamicObject` skips the services, pod templates and the like,
//! which is most of a DGD's bytes, and keeps the memory a list of 10,000 DGDs leaves behind small.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{DynamicObject, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::DgdRecord;
use crate::engine::dgd::PATH_ANNOTATION;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct DgdStub {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: StubSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct StubSpec {
    #[serde(
        rename = "dynamoNamespace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamo_namespace: Option<Value>,
}

impl Resource for DgdStub {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "DynamoGraphDeployment".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "nvidia.com".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "dynamographdeployments".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl DgdStub {
    /// The record the engine needs, by the engine's own reading of the recorded path.
    pub fn record(&self, default_namespace: &str) -> DgdRecord {
        let annotations = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get_key_value(PATH_ANNOTATION))
            .map(|(k, v)| [(k.clone(), v.clone())].into_iter().collect());
        let mut data = serde_json::Map::new();
        if let Some(value) = &self.spec.dynamo_namespace {
            data.insert(
                "spec".to_owned(),
                serde_json::json!({ "dynamoNamespace": value }),
            );
        }
        let object = DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: self.metadata.name.clone(),
                namespace: self.metadata.namespace.clone(),
                uid: self.metadata.uid.clone(),
                annotations,
                ..ObjectMeta::default()
            },
            data: Value::Object(data),
        };
        DgdRecord::from_object(&object, default_namespace)
    }
}
