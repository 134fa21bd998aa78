//! The DGD cache: the engine's [`ClusterView`](crate::engine::ClusterView), fed by a watch
//! ([`watch`]) or, in `serve --dev`, by the DGDs the server itself admitted. A pod whose DGD is
//! missing gets one live GET ([`lookup`]) before the miss path.

pub mod lookup;
pub mod stub;
pub mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use crate::engine::{DgdIndex, DgdRecord};

/// The shared index of known DGDs and whether the initial list has arrived.
#[derive(Debug, Default)]
pub struct DgdCache {
    index: RwLock<DgdIndex>,
    synced: AtomicBool,
}

impl DgdCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache that needs no initial list (`serve --dev`).
    pub fn synced_empty() -> Self {
        Self::synced_with(DgdIndex::new())
    }

    /// A cache that starts from `index` and needs no initial list (`serve --dev --existing`).
    pub fn synced_with(index: DgdIndex) -> Self {
        let cache = DgdCache {
            index: RwLock::new(index),
            synced: AtomicBool::new(false),
        };
        cache.mark_synced();
        cache
    }

    /// A read view for one review. Held for microseconds; writers wait that long at most.
    pub fn view(&self) -> RwLockReadGuard<'_, DgdIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        use crate::engine::ClusterView;
        self.view().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn upsert(&self, record: DgdRecord) {
        self.write().upsert(record);
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.write().remove(namespace, name);
    }

    /// Replaces every record of `namespace` (or all records, for `None`) with `records`: the
    /// result of a (re)list.
    pub fn replace(&self, namespace: Option<&str>, records: Vec<DgdRecord>) {
        let mut index = self.write();
        let stale: Vec<(String, String)> = index
            .records()
            .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
            .map(|r| (r.namespace.clone(), r.name.clone()))
            .collect();
        for (ns, name) in stale {
            index.remove(&ns, &name);
        }
        for record in records {
            index.upsert(record);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, DgdIndex> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }
}
