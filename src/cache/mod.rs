//! The DGD cache: the engine's [`ClusterView`](crate::engine::ClusterView), fed by a watch
//! ([`watch`]) or, in `serve --dev`, by the DGDs the server itself admitted. A pod whose DGD is
//! missing gets one live GET ([`lookup`]) before the miss path.

pub mod lookup;
pub mod stub;
pub mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::engine::{DgdIndex, DgdRecord};

/// The shared index of known DGDs and whether the initial list has arrived.
#[derive(Debug, Default)]
pub struct DgdCache {
    index: RwLock<DgdIndex>,
    synced: AtomicBool,
    /// uids the watch saw deleted, and when: a claim held by one of them is free (SPEC section 7).
    deleted: Mutex<HashMap<String, Instant>>,
}

/// How long a deleted uid is remembered. Past this, a claim left by it is still freed, through
/// the slower "absent and older than 30 s" test with a live GET.
const REMEMBER_DELETED: Duration = Duration::from_secs(3600);
/// At most this many deleted uids are remembered (about 100 bytes each).
const MAX_REMEMBERED: usize = 100_000;

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
            ..DgdCache::default()
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

    /// A DGD the watch saw deleted: drops its record and remembers its uid.
    pub fn deleted(&self, namespace: &str, name: &str, uid: Option<&str>) {
        self.remove(namespace, name);
        if let Some(uid) = uid {
            self.remember_deleted([uid.to_owned()]);
        }
    }

    /// Whether the watch saw the DGD with this uid deleted (within the last hour).
    pub fn saw_deleted(&self, uid: &str) -> bool {
        let deleted = self.deleted.lock().unwrap_or_else(|e| e.into_inner());
        deleted
            .get(uid)
            .is_some_and(|at| at.elapsed() < REMEMBER_DELETED)
    }

    fn remember_deleted(&self, uids: impl IntoIterator<Item = String>) {
        let mut deleted = self.deleted.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for uid in uids {
            deleted.insert(uid, now);
        }
        if deleted.len() > MAX_REMEMBERED {
            deleted.retain(|_, at| at.elapsed() < REMEMBER_DELETED);
            if deleted.len() > MAX_REMEMBERED {
                // Forget the oldest half; their claims fall back to the live-GET test.
                let mut ages: Vec<Instant> = deleted.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                deleted.retain(|_, at| *at > cut);
            }
        }
    }

    /// Replaces every record of `namespace` (or all records, for `None`) with `records`: the
    /// result of a (re)list. A uid that was cached and is not listed again was deleted while the
    /// watch was away.
    pub fn replace(&self, namespace: Option<&str>, records: Vec<DgdRecord>) {
        let mut index = self.write();
        let stale: Vec<(String, String, Option<String>)> = index
            .records()
            .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
            .map(|r| (r.namespace.clone(), r.name.clone(), r.uid.clone()))
            .collect();
        let listed: std::collections::HashSet<&str> =
            records.iter().filter_map(|r| r.uid.as_deref()).collect();
        let gone: Vec<String> = stale
            .iter()
            .filter_map(|(_, _, uid)| uid.clone())
            .filter(|uid| !listed.contains(uid.as_str()))
            .collect();
        for (ns, name, _) in stale {
            index.remove(&ns, &name);
        }
        for record in records {
            index.upsert(record);
        }
        drop(index);
        self.remember_deleted(gone);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, DgdIndex> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }
}
