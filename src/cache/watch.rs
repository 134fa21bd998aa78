//! Feeds the cache from a kube watch over DGDs: one `runtime::watcher` per watched scope (all
//! namespaces, or each `--watch-namespace`). The watcher lists, then watches from the list's
//! resourceVersion; it re-watches after a dropped stream, relists after a 410 Gone, and backs off
//! on errors.

use std::sync::Arc;

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::DgdCache;
use super::stub::DgdStub;
use crate::engine::DgdRecord;

/// DGDs (nvidia.com/v1alpha1) of one k8s namespace, or of all.
pub fn dgd_api(client: Client, namespace: Option<&str>) -> Api<DgdStub> {
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

fn record(obj: &DgdStub) -> DgdRecord {
    obj.record("default")
}

/// Runs the watches until the task is dropped. The cache is marked synced once every scope has
/// delivered its initial list.
pub async fn run(client: Client, namespaces: Vec<String>, cache: Arc<DgdCache>) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let mut listed = vec![false; scopes.len()];
    let mut buffers: Vec<Vec<DgdRecord>> = vec![Vec::new(); scopes.len()];
    let streams = scopes.iter().enumerate().map(|(i, scope)| {
        let api = dgd_api(client.clone(), scope.as_deref());
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |event| (i, event))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    while let Some((i, event)) = events.next().await {
        match event {
            Ok(Event::Init) => buffers[i].clear(),
            Ok(Event::InitApply(obj)) => buffers[i].push(record(&obj)),
            Ok(Event::InitDone) => {
                let records = std::mem::take(&mut buffers[i]);
                tracing::info!(
                    scope = scopes[i].as_deref().unwrap_or("all namespaces"),
                    dgds = records.len(),
                    "DGD list received"
                );
                cache.replace(scopes[i].as_deref(), records);
                // The list's objects are freed by now; hand their memory back.
                crate::memory::release();
                listed[i] = true;
                if listed.iter().all(|l| *l) {
                    cache.mark_synced();
                }
            }
            Ok(Event::Apply(obj)) => cache.upsert(record(&obj)),
            Ok(Event::Delete(obj)) => {
                if let (Some(ns), Some(name)) = (&obj.metadata.namespace, &obj.metadata.name) {
                    cache.deleted(ns, name, obj.metadata.uid.as_deref());
                }
            }
            Err(err) => {
                tracing::warn!(scope = scopes[i].as_deref().unwrap_or("all namespaces"), error = %err, "DGD watch failed; retrying with backoff");
            }
        }
    }
}
