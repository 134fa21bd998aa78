//! The read-only view of the DGDs that already exist, which the uniqueness and pod rules query.
//!
//! The engine sees it only through [`ClusterView`]. [`DgdIndex`] is the one implementation: filled
//! from files by the CLI and from a watch by the server's cache. Every query is a hash look-up or a
//! bounded range of an ordered map, so a review costs the same with 10 or 10,000 DGDs.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use kube::core::DynamicObject;

use super::dgd;
use super::path::{DynamoPath, TOKEN_SEPARATOR};

/// What the engine knows of one existing DGD: its projection, never the whole object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DgdRecord {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub state: DgdState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DgdState {
    /// Records a path that this webhook wrote.
    Managed { path: DynamoPath, token: String },
    /// Predates the webhook (SPEC section 5): its pods run under the operator's token.
    Unmanaged { operator_token: String },
}

impl DgdRecord {
    /// Projects a DGD object. `default_namespace` stands in for a missing `metadata.namespace`.
    pub fn from_object(obj: &DynamicObject, default_namespace: &str) -> Self {
        let namespace = obj
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| default_namespace.to_owned());
        let name = obj.metadata.name.clone().unwrap_or_default();
        let state = match dgd::recorded_path(obj) {
            Some(path) => DgdState::Managed {
                token: path.token(&namespace),
                path,
            },
            None => DgdState::Unmanaged {
                operator_token: operator_token(&namespace, &name),
            },
        };
        DgdRecord {
            uid: obj.metadata.uid.clone(),
            namespace,
            name,
            state,
        }
    }

    pub fn managed(namespace: &str, name: &str, uid: Option<&str>, path: DynamoPath) -> Self {
        DgdRecord {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.map(str::to_owned),
            state: DgdState::Managed {
                token: path.token(namespace),
                path,
            },
        }
    }

    /// The runtime token its pods use.
    pub fn token(&self) -> &str {
        match &self.state {
            DgdState::Managed { token, .. } => token,
            DgdState::Unmanaged { operator_token } => operator_token,
        }
    }

    pub fn path(&self) -> Option<&DynamoPath> {
        match &self.state {
            DgdState::Managed { path, .. } => Some(path),
            DgdState::Unmanaged { .. } => None,
        }
    }

    /// The same DGD: same k8s namespace and name, or same uid.
    pub fn is_same(&self, namespace: &str, name: &str, uid: Option<&str>) -> bool {
        (self.namespace == namespace && self.name == name)
            || (uid.is_some() && self.uid.as_deref() == uid)
    }

    /// `namespace/name`, for messages.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// A token that does not decode to exactly one (namespace, path): such records are the only
    /// ones whose token can extend another at `--` without being its descendant.
    fn is_irregular(&self) -> bool {
        match &self.state {
            DgdState::Managed { .. } => self.namespace.contains(TOKEN_SEPARATOR),
            DgdState::Unmanaged { operator_token } => operator_token.contains(TOKEN_SEPARATOR),
        }
    }
}

/// The Dynamo operator's own runtime namespace for a DGD: `<k8s-namespace>-<name, '.' as '-'>`.
pub fn operator_token(namespace: &str, name: &str) -> String {
    format!("{namespace}-{}", name.replace('.', "-"))
}

/// Queries the rules make. Each returns the first match that `skip` does not exclude.
pub trait ClusterView {
    /// The DGD `namespace/name`.
    fn dgd(&self, namespace: &str, name: &str) -> Option<&DgdRecord>;

    /// A managed DGD of `namespace` whose path is `path` (DT003).
    fn managed_at(
        &self,
        namespace: &str,
        path: &DynamoPath,
        skip: &dyn Fn(&DgdRecord) -> bool,
    ) -> Option<&DgdRecord>;

    /// A managed DGD in another k8s namespace whose path is `path` (DT009).
    fn managed_at_elsewhere(
        &self,
        namespace: &str,
        path: &DynamoPath,
        skip: &dyn Fn(&DgdRecord) -> bool,
    ) -> Option<&DgdRecord>;

    /// A DGD, managed or not, whose runtime token is `token` (DT004, DT008, DT011).
    fn with_token(&self, token: &str, skip: &dyn Fn(&DgdRecord) -> bool) -> Option<&DgdRecord>;

    /// A DGD whose token extends `token` at a `-` boundary without being a managed descendant of
    /// the same k8s namespace (DT008).
    fn extending_token(&self, token: &str, skip: &dyn Fn(&DgdRecord) -> bool)
    -> Option<&DgdRecord>;

    /// A DGD outside `namespace` whose token is `prefix` or starts with `prefix-` (DT011).
    fn captured_by_prefix(&self, prefix: &str, namespace: &str) -> Option<&DgdRecord>;

    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type Slot = usize;

/// DGD records with the indexes the rules need.
#[derive(Clone, Debug, Default)]
pub struct DgdIndex {
    slots: Vec<Option<DgdRecord>>,
    free: Vec<Slot>,
    by_name: HashMap<String, HashMap<String, Slot>>,
    /// namespace -> path -> managed DGDs there.
    by_path: HashMap<String, HashMap<DynamoPath, Vec<Slot>>>,
    /// path -> managed DGDs at it, any namespace.
    by_path_anywhere: HashMap<DynamoPath, Vec<Slot>>,
    by_token: BTreeMap<String, Vec<Slot>>,
    irregular_tokens: BTreeMap<String, Vec<Slot>>,
}

impl DgdIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_records(records: impl IntoIterator<Item = DgdRecord>) -> Self {
        let mut index = Self::new();
        for record in records {
            index.upsert(record);
        }
        index
    }

    /// Adds a record, replacing any with the same namespace and name.
    pub fn upsert(&mut self, record: DgdRecord) {
        self.remove(&record.namespace, &record.name);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.by_name
            .entry(record.namespace.clone())
            .or_default()
            .insert(record.name.clone(), slot);
        if let DgdState::Managed { path, .. } = &record.state {
            self.by_path
                .entry(record.namespace.clone())
                .or_default()
                .entry(path.clone())
                .or_default()
                .push(slot);
            self.by_path_anywhere
                .entry(path.clone())
                .or_default()
                .push(slot);
        }
        self.by_token
            .entry(record.token().to_owned())
            .or_default()
            .push(slot);
        if record.is_irregular() {
            self.irregular_tokens
                .entry(record.token().to_owned())
                .or_default()
                .push(slot);
        }
        self.slots[slot] = Some(record);
    }

    /// Removes the record `namespace/name`, returning it.
    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<DgdRecord> {
        let names = self.by_name.get_mut(namespace)?;
        let slot = names.remove(name)?;
        if names.is_empty() {
            self.by_name.remove(namespace);
        }
        let record = self.slots[slot].take()?;
        self.free.push(slot);
        if let DgdState::Managed { path, .. } = &record.state {
            if let Some(paths) = self.by_path.get_mut(namespace) {
                drop_slot(paths, path, slot);
                if paths.is_empty() {
                    self.by_path.remove(namespace);
                }
            }
            drop_slot(&mut self.by_path_anywhere, path, slot);
        }
        drop_slot_ordered(&mut self.by_token, record.token(), slot);
        drop_slot_ordered(&mut self.irregular_tokens, record.token(), slot);
        Some(record)
    }

    pub fn records(&self) -> impl Iterator<Item = &DgdRecord> {
        self.slots.iter().flatten()
    }

    fn record(&self, slot: Slot) -> &DgdRecord {
        self.slots[slot]
            .as_ref()
            .expect("indexes only name occupied slots")
    }

    fn first<'a>(
        &'a self,
        slots: impl IntoIterator<Item = &'a Slot>,
        keep: impl Fn(&DgdRecord) -> bool,
    ) -> Option<&'a DgdRecord> {
        slots
            .into_iter()
            .map(|slot| self.record(*slot))
            .find(|record| keep(record))
    }
}

fn drop_slot<K: std::hash::Hash + Eq + ?Sized, Q>(
    map: &mut HashMap<Q, Vec<Slot>>,
    key: &K,
    slot: Slot,
) where
    Q: std::borrow::Borrow<K> + std::hash::Hash + Eq,
{
    if let Some(slots) = map.get_mut(key) {
        slots.retain(|s| *s != slot);
        if slots.is_empty() {
            map.remove(key);
        }
    }
}

fn drop_slot_ordered(map: &mut BTreeMap<String, Vec<Slot>>, key: &str, slot: Slot) {
    if let Some(slots) = map.get_mut(key) {
        slots.retain(|s| *s != slot);
        if slots.is_empty() {
            map.remove(key);
        }
    }
}

/// Slots under the keys of `map` in `[from, to)`. Callers build `from < to` (they differ first at
/// `-` against `.`), so `range` cannot panic.
fn key_range(
    map: &BTreeMap<String, Vec<Slot>>,
    from: String,
    to: String,
) -> impl Iterator<Item = &Slot> {
    map.range::<str, _>((Bound::Included(from.as_str()), Bound::Excluded(to.as_str())))
        .flat_map(|(_, slots)| slots)
}

impl ClusterView for DgdIndex {
    fn dgd(&self, namespace: &str, name: &str) -> Option<&DgdRecord> {
        let slot = self.by_name.get(namespace)?.get(name)?;
        Some(self.record(*slot))
    }

    fn managed_at(
        &self,
        namespace: &str,
        path: &DynamoPath,
        skip: &dyn Fn(&DgdRecord) -> bool,
    ) -> Option<&DgdRecord> {
        let slots = self.by_path.get(namespace)?.get(path)?;
        self.first(slots, |r| !skip(r))
    }

    fn managed_at_elsewhere(
        &self,
        namespace: &str,
        path: &DynamoPath,
        skip: &dyn Fn(&DgdRecord) -> bool,
    ) -> Option<&DgdRecord> {
        let slots = self.by_path_anywhere.get(path)?;
        self.first(slots, |r| r.namespace != namespace && !skip(r))
    }

    fn with_token(&self, token: &str, skip: &dyn Fn(&DgdRecord) -> bool) -> Option<&DgdRecord> {
        let slots = self.by_token.get(token)?;
        self.first(slots, |r| !skip(r))
    }

    fn extending_token(
        &self,
        token: &str,
        skip: &dyn Fn(&DgdRecord) -> bool,
    ) -> Option<&DgdRecord> {
        // `token-x...` with x not '-' is never a descendant: descendants continue with `--`.
        let single = key_range(&self.by_token, format!("{token}-0"), format!("{token}."));
        if let Some(found) = self.first(single, |r| !skip(r)) {
            return Some(found);
        }
        // `token--...` is a descendant unless the record's token is irregular (see `is_irregular`).
        let own_namespace = token.split(TOKEN_SEPARATOR).next().unwrap_or(token);
        let double = key_range(
            &self.irregular_tokens,
            format!("{token}{TOKEN_SEPARATOR}"),
            format!("{token}-."),
        );
        self.first(double, |r| {
            !skip(r) && (r.namespace != own_namespace || r.path().is_none())
        })
    }

    fn captured_by_prefix(&self, prefix: &str, namespace: &str) -> Option<&DgdRecord> {
        let exact = self.by_token.get(prefix).into_iter().flatten();
        let extended = key_range(&self.by_token, format!("{prefix}-"), format!("{prefix}."));
        self.first(exact.chain(extended), |r| r.namespace != namespace)
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(ns: &str, name: &str, path: &str) -> DgdRecord {
        DgdRecord::managed(ns, name, None, DynamoPath::parse(path).unwrap())
    }

    fn unmanaged(ns: &str, name: &str) -> DgdRecord {
        DgdRecord {
            namespace: ns.into(),
            name: name.into(),
            uid: None,
            state: DgdState::Unmanaged {
                operator_token: operator_token(ns, name),
            },
        }
    }

    const NONE: &dyn Fn(&DgdRecord) -> bool = &|_| false;

    #[test]
    fn upsert_replaces_and_remove_cleans_every_index() {
        let mut index = DgdIndex::new();
        index.upsert(managed("a", "x", "p"));
        index.upsert(managed("a", "x", "q"));
        assert_eq!(index.len(), 1);
        let p = DynamoPath::parse("p").unwrap();
        let q = DynamoPath::parse("q").unwrap();
        assert!(index.managed_at("a", &p, NONE).is_none());
        assert!(index.managed_at("a", &q, NONE).is_some());
        assert!(index.with_token("a--q", NONE).is_some());
        index.remove("a", "x");
        assert!(index.is_empty());
        assert!(index.with_token("a--q", NONE).is_none());
        assert!(index.by_path.is_empty() && index.by_token.is_empty());
    }

    #[test]
    fn extending_tokens_skip_descendants_but_not_siblings() {
        let index = DgdIndex::from_records([
            managed("team-x", "child", "llama/fast"),
            managed("team-x", "sibling", "llama-2"),
        ]);
        let found = index.extending_token("team-x--llama", NONE).unwrap();
        assert_eq!(found.name, "sibling");
        let index = DgdIndex::from_records([managed("team-x", "child", "llama/fast")]);
        assert!(index.extending_token("team-x--llama", NONE).is_none());
        // An unmanaged DGD whose name has `--` is never a descendant.
        let index = DgdIndex::from_records([unmanaged("team", "x--llama")]);
        assert!(index.extending_token("team-x", NONE).is_some());
        let index = DgdIndex::from_records([unmanaged("team-x", "llama")]);
        assert!(index.extending_token("team-x", NONE).is_some());
    }

    #[test]
    fn prefixes_capture_only_at_a_hyphen_boundary() {
        let index = DgdIndex::from_records([managed("team-y", "a", "llama")]);
        assert!(index.captured_by_prefix("team-y", "team-x").is_some());
        assert!(
            index
                .captured_by_prefix("team-y--llama", "team-x")
                .is_some()
        );
        assert!(index.captured_by_prefix("team-y--ll", "team-x").is_none());
        assert!(index.captured_by_prefix("team-y", "team-y").is_none());
    }
}
