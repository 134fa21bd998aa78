//! A claim as a `coordination.k8s.io/v1` Lease: its name, its content, and who holds it. Pure:
//! the API calls are in the parent module.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

use crate::engine::dgd::PATH_ANNOTATION;
use crate::engine::pod::DGD_LABEL;
use crate::engine::{Claim, DynamoPath};

/// Marks the Leases this webhook owns; the collector lists by it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "dynamo-tenancy";
/// The plain path, readable by label selectors (`/` as `.`, like the pods' label).
pub const PATH_LABEL: &str = PATH_ANNOTATION;

/// The Lease name of a path's claim in its k8s namespace: `claim-` and 128 bits of the path's
/// SHA-256, so every path has exactly one name and a collision would take 2^64 paths.
pub fn name(path: &DynamoPath) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, path.as_str().as_bytes());
    let mut name = String::with_capacity(6 + 32);
    name.push_str("claim-");
    for byte in &digest.as_ref()[..16] {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// A new claim for `claim`, owned by its DGD so that garbage collection frees it with the DGD.
pub fn build(claim: &Claim, now: Timestamp) -> Lease {
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (PATH_LABEL.to_owned(), claim.path.label_value()),
    ]);
    // Label values are at most 63 characters; a DGD name may be longer (it is in the owner
    // reference and the holder identity either way).
    if claim.name.len() <= 63 {
        labels.insert(DGD_LABEL.to_owned(), claim.name.clone());
    }
    Lease {
        metadata: ObjectMeta {
            name: Some(name(&claim.path)),
            namespace: Some(claim.namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                PATH_ANNOTATION.to_owned(),
                claim.path.as_str().to_owned(),
            )])),
            owner_references: owner(claim),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(claim.holder_identity()),
            acquire_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

/// `existing`, handed to `claim`: same name and resourceVersion (the update's precondition).
pub fn taken_over(existing: &Lease, claim: &Claim, now: Timestamp) -> Lease {
    let mut lease = build(claim, now);
    lease.metadata.resource_version = existing.metadata.resource_version.clone();
    let transitions = existing
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0);
    if let Some(spec) = &mut lease.spec {
        spec.lease_transitions = Some(transitions.saturating_add(1));
    }
    lease
}

fn owner(claim: &Claim) -> Option<Vec<OwnerReference>> {
    // An owner reference needs the uid; without one (never on a real CREATE) the claim is freed
    // by the collector instead of the garbage collector.
    let uid = claim.uid.clone()?;
    Some(vec![OwnerReference {
        api_version: "nvidia.com/v1alpha1".to_owned(),
        kind: "DynamoGraphDeployment".to_owned(),
        name: claim.name.clone(),
        uid,
        ..OwnerReference::default()
    }])
}

/// Who holds a claim, as the Lease records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    /// The path the claim records (the annotation), to tell a hash collision from a holder.
    pub path: Option<String>,
    /// When the holder took the claim: `spec.acquireTime`, else the Lease's creation.
    pub acquired: Option<Timestamp>,
}

/// How a claim stands towards a requester.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The requester holds it already (the API server retried the same request).
    Own,
    /// Another DGD holds it.
    Other,
    /// It records another path: two paths with one hashed name.
    Collision,
}

impl Holder {
    pub fn of(lease: &Lease) -> Holder {
        let meta = &lease.metadata;
        let spec = lease.spec.as_ref();
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "DynamoGraphDeployment");
        let identity = spec.and_then(|s| s.holder_identity.as_deref());
        let name = match (owner, identity) {
            (Some(owner), _) => owner.name.clone(),
            (None, Some(identity)) => identity
                .split_once('/')
                .map_or(identity, |(_, name)| name)
                .to_owned(),
            (None, None) => String::new(),
        };
        Holder {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name,
            uid: owner.map(|o| o.uid.clone()),
            path: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(PATH_ANNOTATION))
                .cloned(),
            acquired: spec
                .and_then(|s| s.acquire_time.as_ref())
                .map(|t| t.0)
                .or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0)),
        }
    }

    /// `namespace/name`, for messages.
    pub fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn standing(&self, claim: &Claim) -> Standing {
        if self
            .path
            .as_deref()
            .is_some_and(|p| p != claim.path.as_str())
        {
            Standing::Collision
        } else if self.name == claim.name && self.uid == claim.uid {
            Standing::Own
        } else {
            Standing::Other
        }
    }

    /// Whether the claim was taken at least `grace` before `now`. A claim that records no time
    /// counts as old: nothing says a create is in flight.
    pub fn older_than(&self, grace: Duration, now: Timestamp) -> bool {
        self.acquired.is_none_or(|at| {
            now.duration_since(at)
                .try_into()
                .is_ok_and(|age: Duration| age >= grace)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, uid: Option<&str>, path: &str) -> Claim {
        Claim {
            namespace: "team-x".to_owned(),
            path: DynamoPath::parse(path).unwrap(),
            name: name.to_owned(),
            uid: uid.map(str::to_owned),
        }
    }

    #[test]
    fn one_name_per_path_valid_as_an_object_name() {
        let a = name(&DynamoPath::parse("default/llama").unwrap());
        assert_eq!(a, name(&DynamoPath::parse("llama").unwrap()));
        assert_ne!(a, name(&DynamoPath::parse("default/llama-2").unwrap()));
        assert_eq!(a.len(), 38);
        assert!(
            a.strip_prefix("claim-")
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn the_holder_reads_back_from_the_lease() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let lease = build(&claim("a", Some("uid-a"), "default/llama"), now);
        let holder = Holder::of(&lease);
        assert_eq!(holder.namespace, "team-x");
        assert_eq!(holder.name, "a");
        assert_eq!(holder.uid.as_deref(), Some("uid-a"));
        assert_eq!(holder.path.as_deref(), Some("default/llama"));
        assert_eq!(holder.acquired, Some(now));
        assert_eq!(
            lease.metadata.labels.as_ref().unwrap()[PATH_LABEL],
            "default.llama"
        );

        let me = claim("a", Some("uid-a"), "default/llama");
        assert_eq!(holder.standing(&me), Standing::Own);
        let recreated = claim("a", Some("uid-a2"), "default/llama");
        assert_eq!(holder.standing(&recreated), Standing::Other);
        let other = claim("b", Some("uid-b"), "default/llama");
        assert_eq!(holder.standing(&other), Standing::Other);
        let elsewhere = claim("b", Some("uid-b"), "default/other");
        assert_eq!(holder.standing(&elsewhere), Standing::Collision);

        let later = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        assert!(!holder.older_than(Duration::from_secs(30), later(29)));
        assert!(holder.older_than(Duration::from_secs(30), later(30)));
        assert!(!holder.older_than(Duration::from_secs(30), later(-5)));
    }

    #[test]
    fn a_takeover_keeps_the_version_and_counts_the_transition() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut old = build(&claim("a", Some("uid-a"), "default/llama"), now);
        old.metadata.resource_version = Some("41".to_owned());
        let new = taken_over(&old, &claim("b", Some("uid-b"), "default/llama"), now);
        assert_eq!(new.metadata.resource_version.as_deref(), Some("41"));
        assert_eq!(new.metadata.name, old.metadata.name);
        assert_eq!(new.spec.as_ref().unwrap().lease_transitions, Some(1));
        assert_eq!(Holder::of(&new).name, "b");
        assert_eq!(
            new.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-b"
        );
    }

    #[test]
    fn long_names_stay_out_of_labels() {
        let long = "d".repeat(100);
        let lease = build(&claim(&long, Some("u"), "default"), Timestamp::UNIX_EPOCH);
        assert!(
            !lease
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(DGD_LABEL)
        );
        assert_eq!(Holder::of(&lease).name, long);
    }
}
