//! The policy engine: an admission request plus a read-only view of the cluster in, a verdict out.
//! No I/O: the server, the CLI and the cache are shells around [`review`].

pub mod claim;
pub mod dgd;
pub mod patch;
pub mod path;
pub mod pod;
pub mod review;
pub mod rules;
pub mod view;
pub mod wire;

pub use claim::Claim;
pub use path::DynamoPath;
pub use review::{
    Decision, Phase, ReviewError, Subject, apply_mutation, chain, decide, review_both, review_json,
};
pub use rules::{Finding, Findings, Policy, RuleId};
pub use view::{ClusterView, DgdIndex, DgdRecord, DgdState};

/// What a decision may consult besides the request.
#[derive(Clone, Copy)]
pub struct Context<'v> {
    pub view: &'v dyn ClusterView,
    pub policy: &'v Policy,
}
