//! Claims (SPEC section 7): what the validating phase asks the server to make atomic, and the
//! messages for how that went. The claim itself is I/O and lives in `crate::claims`; here is only
//! the pure part, so that the offline commands and the server share one wording.

use super::path::{DynamoPath, quote, quote_within};
use super::rules::{Finding, RuleId};

/// A (k8s namespace, path) that a DGD must hold before its admission stands: asked for by the
/// validating phase on a CREATE or an adoption that passed every other rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub path: DynamoPath,
    /// The DGD that asks: its name and, as the API server sends it on CREATE, its uid.
    pub name: String,
    pub uid: Option<String>,
}

impl Claim {
    /// `namespace/name` of the requester, as claims record their holder.
    pub fn holder_identity(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// DT003: another DGD holds the claim on this path. `in_flight` says that the holder is not
/// stored (yet): its create may still be running, and if it never lands the claim is freed after
/// the API server's longest webhook timeout.
pub fn held_by(path: &DynamoPath, holder: &str, in_flight: bool) -> Finding {
    let path = quote(path.as_str());
    let holder = quote_within(holder, 80);
    if in_flight {
        Finding::new(
            RuleId::DT003,
            format_args!(
                "path {path} is claimed by DGD {holder}, whose create is in flight; choose another spec.dynamoNamespace, or retry in 30s if that create failed"
            ),
        )
    } else {
        Finding::new(
            RuleId::DT003,
            format_args!(
                "path {path} is taken in this k8s namespace, choose another spec.dynamoNamespace; claimed by DGD {holder}"
            ),
        )
    }
}

/// DT003: the claim could not be made or read (API server down, slow or throttling). DGD
/// admission fails closed: nothing was admitted, and the request can simply be retried.
pub fn unavailable(path: &DynamoPath, reason: &str) -> Finding {
    let escaped: String = reason.escape_debug().collect();
    let mut reason: String = escaped.chars().take(110).collect();
    if reason.len() < escaped.len() {
        reason.push('…');
    }
    Finding::new(
        RuleId::DT003,
        format_args!(
            "could not claim path {}: {reason}; nothing was admitted: retry",
            quote(path.as_str()),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::MAX_MESSAGE_CHARS;

    fn path(text: &str) -> DynamoPath {
        DynamoPath::parse(text).unwrap()
    }

    #[test]
    fn messages_name_the_path_and_the_holder_within_the_limit() {
        let long = "x".repeat(300);
        for finding in [
            held_by(&path("default/llama"), "team-x/other", false),
            held_by(&path("default/llama"), "team-x/other", true),
            held_by(&path("default/llama"), &long, true),
            unavailable(&path("default/llama"), &long),
        ] {
            assert!(
                finding.message.starts_with("[DT003] "),
                "{}",
                finding.message
            );
            assert!(
                finding.message.contains("\"default/llama\""),
                "{}",
                finding.message
            );
            assert!(finding.message.chars().count() <= MAX_MESSAGE_CHARS);
        }
        assert!(
            held_by(&path("llama"), "team-x/other", false)
                .message
                .contains("team-x/other")
        );
        assert!(
            unavailable(&path("llama"), "HTTP 500")
                .message
                .ends_with("retry")
        );
    }
}
