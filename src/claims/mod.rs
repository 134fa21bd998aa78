//! Race-free uniqueness (SPEC section 7): a DGD's (k8s namespace, path) is claimed by *creating*
//! a Lease, so the API server, not a cache, decides who was first. At most one create of a name
//! succeeds, however many webhook replicas and requests race.
//!
//! On 409 the holder is read: the requester itself (the API server retried) is allowed; a holder
//! that is gone is replaced under a resourceVersion precondition; anyone else is DT003. A holder
//! whose create is still in flight is not gone: its claim exists before its DGD is stored, so a
//! claim is only taken over when the watch saw the holder's uid deleted, or when the holder is
//! absent (a live GET) and the claim is older than the API server's longest webhook timeout.
//!
//! Dry-run requests only read, and reach the same verdict. Any API trouble denies the DGD with a
//! retryable message (DGD admission fails closed); pods never come here.

pub mod collector;
pub mod lease;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::cache::DgdCache;
use crate::cache::lookup::{LiveLookup, Lookup};
use crate::engine::{Claim, ClusterView as _, Finding, claim as messages};
use crate::server::metrics::Metrics;
use lease::{Holder, Standing};

/// The API server's longest webhook timeout: a claim younger than this may belong to a create
/// that is still in admission.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(30);
/// Create-or-read rounds before giving up on a claim that keeps changing under us.
const ROUNDS: usize = 4;

/// How a claim went, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The Lease was created: the path was free.
    Created,
    /// The requester already held it.
    Own,
    /// A gone holder's claim was taken over.
    TakenOver,
    /// Dry run: the path is free (or its holder gone), and a real request would claim it.
    Free,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Own => "own",
            Outcome::TakenOver => "taken_over",
            Outcome::Free => "free",
        }
    }
}

/// Why a claim did not stand.
#[derive(Debug)]
enum Refusal {
    Held { holder: String, recent: bool },
    Unavailable(String),
}

impl Refusal {
    fn result(&self) -> &'static str {
        match self {
            Refusal::Held { .. } => "held",
            Refusal::Unavailable(_) => "unavailable",
        }
    }
}

fn unavailable(err: kube::Error) -> Refusal {
    Refusal::Unavailable(describe(&err))
}

/// A short, one-line account of an API error.
fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("API server {}: {}", status.code, status.message)
        }
        kube::Error::Api(status) => format!("API server {} {}", status.code, status.reason),
        other => other.to_string().lines().next().unwrap_or("").to_owned(),
    }
}

fn has_code(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// A live GET of a holder while a DGD waits for its claim; the request's deadline bounds it too.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a claim's holder still stands in the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    /// Stored, or maybe stored: its claim stands.
    Stored,
    /// Not known to be stored, and the claim is recent: a create may be in flight.
    Recent,
    /// Deleted, or never stored: the claim is free.
    Gone,
}

impl Presence {
    /// SPEC section 7's test for a holder that is gone: the watch saw its uid deleted, or it is
    /// absent (a live GET, bounded by `timeout`) and the claim is older than [`IN_FLIGHT_GRACE`].
    /// The error is why the live GET failed.
    async fn of(
        holder: &Holder,
        cache: &DgdCache,
        lookup: &LiveLookup,
        timeout: Duration,
    ) -> Result<Presence, String> {
        if let Some(uid) = &holder.uid {
            if cache.saw_deleted(uid) {
                return Ok(Presence::Gone);
            }
            let cached = cache.view().dgd(&holder.namespace, &holder.name).cloned();
            if cached.is_some_and(|record| record.uid.as_ref() == Some(uid)) {
                return Ok(Presence::Stored);
            }
        }
        if !holder.older_than(IN_FLIGHT_GRACE, Timestamp::now()) {
            return Ok(Presence::Recent);
        }
        match lookup.dgd(&holder.namespace, &holder.name, timeout).await {
            Lookup::Found(record) if holder.uid.is_none() || record.uid == holder.uid => {
                Ok(Presence::Stored)
            }
            // Absent, or a later DGD of the same name: the holder is gone.
            Lookup::Found(_) | Lookup::Absent => Ok(Presence::Gone),
            Lookup::Failed(reason) => Err(reason),
        }
    }
}

pub struct Claims {
    client: Client,
    cache: Arc<DgdCache>,
    lookup: LiveLookup,
    metrics: Arc<Metrics>,
}

impl Claims {
    pub fn new(client: Client, cache: Arc<DgdCache>, metrics: Arc<Metrics>) -> Self {
        Claims {
            lookup: LiveLookup::new(client.clone()),
            client,
            cache,
            metrics,
        }
    }

    /// Claims `claim` (or, for a dry run, checks that it could), within `budget`. The error is the
    /// denial to answer with.
    pub async fn claim(
        &self,
        claim: &Claim,
        dry_run: bool,
        budget: Duration,
    ) -> Result<Outcome, Finding> {
        let started = Instant::now();
        let result = match tokio::time::timeout(budget, self.try_claim(claim, dry_run)).await {
            Ok(result) => result,
            Err(_) => Err(Refusal::Unavailable(format!(
                "no answer from the API server within {}ms",
                budget.as_millis()
            ))),
        };
        let label = match &result {
            Ok(outcome) => outcome.as_str(),
            Err(refusal) => refusal.result(),
        };
        self.metrics
            .claim(label, dry_run, started.elapsed().as_secs_f64());
        result.map_err(|refusal| match refusal {
            Refusal::Held { holder, recent } => messages::held_by(&claim.path, &holder, recent),
            Refusal::Unavailable(reason) => {
                tracing::warn!(namespace = %claim.namespace, path = %claim.path.as_str(), %reason, "claim failed; DGD denied, retryable");
                messages::unavailable(&claim.path, &reason)
            }
        })
    }

    async fn try_claim(&self, claim: &Claim, dry_run: bool) -> Result<Outcome, Refusal> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &claim.namespace);
        let name = lease::name(&claim.path);
        for _ in 0..ROUNDS {
            let existing = if dry_run {
                match api.get_opt(&name).await.map_err(unavailable)? {
                    None => return Ok(Outcome::Free),
                    Some(existing) => existing,
                }
            } else {
                let fresh = lease::build(claim, Timestamp::now());
                match api.create(&PostParams::default(), &fresh).await {
                    Ok(_) => return Ok(Outcome::Created),
                    Err(err) if has_code(&err, 409) => {
                        match api.get_opt(&name).await.map_err(unavailable)? {
                            // Freed between our create and our read: try the create again.
                            None => continue,
                            Some(existing) => existing,
                        }
                    }
                    Err(err) => return Err(unavailable(err)),
                }
            };
            let holder = Holder::of(&existing);
            match holder.standing(claim) {
                Standing::Own => return Ok(Outcome::Own),
                Standing::Collision => {
                    return Err(Refusal::Unavailable(format!(
                        "Lease {name} records path {:?}: a hash collision",
                        holder.path.as_deref().unwrap_or("")
                    )));
                }
                Standing::Other => {}
            }
            let presence = Presence::of(&holder, &self.cache, &self.lookup, LOOKUP_TIMEOUT)
                .await
                .map_err(Refusal::Unavailable)?;
            match presence {
                Presence::Stored => {
                    return Err(Refusal::Held {
                        holder: holder.display(),
                        recent: false,
                    });
                }
                Presence::Recent => {
                    return Err(Refusal::Held {
                        holder: holder.display(),
                        recent: true,
                    });
                }
                Presence::Gone if dry_run => return Ok(Outcome::Free),
                Presence::Gone => {}
            }
            let replacement = lease::taken_over(&existing, claim, Timestamp::now());
            match api
                .replace(&name, &PostParams::default(), &replacement)
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = %claim.namespace, path = %claim.path.as_str(), from = %holder.display(), to = %claim.name, "took over a claim whose holder is gone");
                    return Ok(Outcome::TakenOver);
                }
                // Someone changed or freed it since we read it: look again.
                Err(err) if has_code(&err, 409) || has_code(&err, 404) => continue,
                Err(err) => return Err(unavailable(err)),
            }
        }
        Err(Refusal::Unavailable(format!(
            "Lease {name} kept changing while it was claimed"
        )))
    }
}
