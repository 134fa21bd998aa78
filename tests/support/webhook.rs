//! The real binary as a webhook whose cluster is the fake API server, and the reviews the tests
//! send it.

use std::time::{Duration, Instant};

use hyper::Version;
use serde_json::{Value, json};

use super::FakeApi;
use crate::common::*;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn dgd(namespace: &str, name: &str, path: Option<&str>) -> Value {
    let mut obj = json!({
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"services": {"Frontend": {"componentType": "frontend", "replicas": 1}}},
    });
    if let Some(path) = path {
        obj["metadata"]["annotations"] = json!({"nvidia.com/dynamo-namespace-path": path});
    }
    obj
}

/// A validating CREATE review of DGD `namespace/name` at `path`.
pub fn create_review(namespace: &str, name: &str, path: &str) -> Vec<u8> {
    review_with(
        &repo("examples/reviews/dgd-create.json"),
        &format!("uid-{name}"),
        |r| {
            r["request"]["namespace"] = json!(namespace);
            r["request"]["name"] = json!(name);
            let meta = &mut r["request"]["object"]["metadata"];
            meta["namespace"] = json!(namespace);
            meta["name"] = json!(name);
            meta["uid"] = json!(format!("uid-of-{name}"));
            meta["annotations"] = json!({"nvidia.com/dynamo-namespace-path": path});
        },
    )
}

/// A pod CREATE review of a frontend of DGD `namespace/dgd`.
pub fn pod_review(namespace: &str, dgd: &str) -> Vec<u8> {
    review_with(&repo("examples/reviews/pod-create.json"), "uid-pod", |r| {
        r["request"]["namespace"] = json!(namespace);
        let meta = &mut r["request"]["object"]["metadata"];
        meta["namespace"] = json!(namespace);
        meta["labels"]["nvidia.com/dynamo-graph-deployment-name"] = json!(dgd);
    })
}

pub struct Setup {
    pub dir: TempDir,
    pub server: Server,
    pub client: HttpsClient,
}

/// The binary with real certificate files and the fake API server as its cluster.
pub async fn start(api: &FakeApi, extra: &[&str]) -> Setup {
    let dir = TempDir::new("cache");
    let pair = dynamo_tenancy::certs::generate("test CA", &["localhost".to_owned()], 1).unwrap();
    let (cert, key, kubeconfig) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("kubeconfig"),
    );
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    std::fs::write(&key, &pair.key_pem).unwrap();
    api.write_kubeconfig(&kubeconfig);
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let client = client(&[pair.ca_cert_pem.as_bytes()], Version::HTTP_2);
    Setup {
        dir,
        server,
        client,
    }
}

impl Setup {
    pub async fn validate(&self, body: Vec<u8>) -> Answer {
        post(&self.client, &self.server.url("/validate?timeout=5s"), body)
            .await
            .unwrap()
    }

    pub async fn mutate(&self, body: Vec<u8>) -> Answer {
        post(&self.client, &self.server.url("/mutate?timeout=5s"), body)
            .await
            .unwrap()
    }

    /// Waits until a validating CREATE of `name` at `path` gets `rule` (None: allowed).
    pub async fn until_verdict(&self, namespace: &str, name: &str, path: &str, rule: Option<&str>) {
        let started = Instant::now();
        loop {
            let answer = self.validate(create_review(namespace, name, path)).await;
            if denial_rule(&answer).as_deref() == rule {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "CREATE {namespace}/{name} at {path}: expected {rule:?}, still {}",
                answer.json
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn patched(answer: &Answer) -> bool {
    answer.json["response"].get("patch").is_some()
}

impl Setup {
    /// Waits for `/readyz`: the initial list has arrived.
    pub async fn ready(&self) {
        eventually(WAIT, "/readyz", || async {
            matches!(get(&self.server.health_url("/readyz")).await, Ok((200, _)))
        })
        .await;
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        get(&self.server.health_url("/metrics")).await.unwrap().1
    }
}

/// [`create_review`] as a dry run (`kubectl apply --dry-run=server`).
pub fn dry_run(mut review: Vec<u8>) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(&review).unwrap();
    value["request"]["dryRun"] = json!(true);
    review = serde_json::to_vec(&value).unwrap();
    review
}

/// A kube client of the fake API server, as the tests' own hands.
pub fn kube_client(api: &FakeApi) -> kube::Client {
    let config = kube::Config::new(api.url().parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

pub fn message(answer: &Answer) -> String {
    answer.json["response"]["status"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}
