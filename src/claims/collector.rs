//! Frees claims whose DGD is gone. Kubernetes' garbage collector does this through the claim's
//! owner reference; this loop is the backstop for clusters where it is slow or off, and for
//! claims left by a create that never landed. It runs in every replica: deletes carry uid and
//! resourceVersion preconditions, so two replicas never free a claim that was just re-taken.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};

use super::lease::{self, Holder};
use super::{IN_FLIGHT_GRACE, Presence, has_code};
use crate::cache::DgdCache;
use crate::cache::lookup::LiveLookup;
use crate::server::metrics::Metrics;

/// Sweeps every `interval` once the cache has synced, over all namespaces or the watched ones.
pub async fn run(
    client: Client,
    cache: Arc<DgdCache>,
    metrics: Arc<Metrics>,
    namespaces: Vec<String>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if !cache.is_synced() {
            continue;
        }
        match sweep(&client, &cache, &metrics, &namespaces).await {
            Ok(0) => {}
            Ok(freed) => tracing::info!(freed, "freed claims whose DGD is gone"),
            Err(err) => {
                tracing::warn!(error = %err, "claim sweep failed; next try in {interval:?}")
            }
        }
    }
}

/// One pass: deletes each claim whose holder is gone. Returns how many it freed.
pub async fn sweep(
    client: &Client,
    cache: &DgdCache,
    metrics: &Metrics,
    namespaces: &[String],
) -> Result<usize, kube::Error> {
    let lookup = LiveLookup::new(client.clone());
    let scopes: Vec<Api<Lease>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let selector = format!("{}={}", lease::MANAGED_BY_LABEL, lease::MANAGED_BY);
    let mut freed = 0;
    for api in scopes {
        let mut params = ListParams::default().labels(&selector).limit(500);
        loop {
            let page = api.list(&params).await?;
            for claim in &page.items {
                if is_orphaned(claim, cache, &lookup).await && free(claim, client).await? {
                    metrics.claim_collected();
                    freed += 1;
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(freed)
}

/// A claim is freed only when it is old and its holder is gone (the test a takeover uses); a
/// failed live GET keeps it for the next sweep.
async fn is_orphaned(claim: &Lease, cache: &DgdCache, lookup: &LiveLookup) -> bool {
    let holder = Holder::of(claim);
    holder.older_than(IN_FLIGHT_GRACE, Timestamp::now())
        && Presence::of(&holder, cache, lookup, Duration::from_secs(5)).await == Ok(Presence::Gone)
}

/// Deletes `claim` if it is unchanged since it was read. False if someone else got there first.
async fn free(claim: &Lease, client: &Client) -> Result<bool, kube::Error> {
    let (Some(namespace), Some(name)) = (&claim.metadata.namespace, &claim.metadata.name) else {
        return Ok(false);
    };
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(err) if has_code(&err, 404) || has_code(&err, 409) => Ok(false),
        Err(err) => Err(err),
    }
}
