//! dynamo-tenancy: makes the Dynamo namespace an isolation boundary between
//! DynamoGraphDeployments that share a cluster.
//!
//! [`engine`] holds every rule and knows nothing of HTTP, TLS or files; [`cli`] is a thin shell
//! around it, and so are [`server`] (the webhook) and [`cache`] (the watch that feeds
//! the engine's view of the cluster).

pub mod cache;
pub mod certs;
pub mod claims;
pub mod cli;
pub mod documents;
pub mod engine;
pub mod existing;
/// The fuzzers' entry points and the corpus replay's: arbitrary bytes through the real review,
/// path and validator code, with their invariants asserted (`docs/fuzzing.md`).
pub mod fuzz;
pub mod memory;
pub mod server;
pub mod validator;
