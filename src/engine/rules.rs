//! Rule ids, findings and the policy knobs that tune them (SPEC sections 5 and 6).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A rule's stable id. It opens every message the rule produces, e.g. `[DT003] ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RuleId {
    DT001,
    DT002,
    DT003,
    DT004,
    DT005,
    DT006,
    DT007,
    DT008,
    DT009,
    DT010,
    DT011,
    DT012,
    DT013,
    DT014,
}

/// What a rule does when it fires, before any policy escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Deny,
    Warn,
}

impl RuleId {
    pub const ALL: [RuleId; 14] = [
        RuleId::DT001,
        RuleId::DT002,
        RuleId::DT003,
        RuleId::DT004,
        RuleId::DT005,
        RuleId::DT006,
        RuleId::DT007,
        RuleId::DT008,
        RuleId::DT009,
        RuleId::DT010,
        RuleId::DT011,
        RuleId::DT012,
        RuleId::DT013,
        RuleId::DT014,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::DT001 => "DT001",
            RuleId::DT002 => "DT002",
            RuleId::DT003 => "DT003",
            RuleId::DT004 => "DT004",
            RuleId::DT005 => "DT005",
            RuleId::DT006 => "DT006",
            RuleId::DT007 => "DT007",
            RuleId::DT008 => "DT008",
            RuleId::DT009 => "DT009",
            RuleId::DT010 => "DT010",
            RuleId::DT011 => "DT011",
            RuleId::DT012 => "DT012",
            RuleId::DT013 => "DT013",
            RuleId::DT014 => "DT014",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            RuleId::DT008 | RuleId::DT009 | RuleId::DT013 | RuleId::DT014 => Severity::Warn,
            _ => Severity::Deny,
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuleId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleId::ALL
            .into_iter()
            .find(|id| id.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown rule id {s:?}; expected one of DT001..DT014"))
    }
}

/// Longest denial message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 249;
/// Longest warning, in characters.
pub const MAX_WARNING_CHARS: usize = 119;

/// One rule that fired, with its one-line message (which starts with `[DTnnn] `).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: RuleId,
    pub message: String,
}

impl Finding {
    /// The message is cut to SPEC's limits (under 250 characters for a denial, under 120 for a
    /// warning); the texts are written to fit, so only very long user values are ever cut. Control
    /// and invisible characters that a user value brought in unquoted (a service named
    /// `"a\nb"`) are escaped, so that a message stays one line and shows what it says.
    pub fn new(rule: RuleId, text: impl fmt::Display) -> Self {
        let limit = match rule.severity() {
            Severity::Deny => MAX_MESSAGE_CHARS,
            Severity::Warn => MAX_WARNING_CHARS,
        };
        let mut message = String::new();
        for c in format!("[{rule}] {text}").chars() {
            if c.is_control() || is_invisible(c) {
                message.extend(c.escape_debug());
            } else {
                message.push(c);
            }
        }
        if let Some((cut, _)) = message.char_indices().nth(limit - 1) {
            message.truncate(cut);
            message.push('…');
        }
        Finding { rule, message }
    }
}

/// Characters that render as nothing or rearrange the text around them: zero-width characters,
/// bidirectional controls, line and paragraph separators, the byte order mark.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

/// The knobs a cluster operator may turn. The defaults are SPEC's behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Set the runtime's `DYN_NAMESPACE` / `DYN_NAMESPACE_PREFIX` in pods (SPEC section 4).
    pub dyn_compat: bool,
    /// Warnings that this cluster treats as denials.
    pub deny_warnings: BTreeSet<RuleId>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            dyn_compat: true,
            deny_warnings: BTreeSet::new(),
        }
    }
}

/// The findings of one phase: at most one denial (the first that fired) and any warnings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub denial: Option<Finding>,
    pub warnings: Vec<Finding>,
}

impl Findings {
    /// Records `finding` as its rule's severity, escalated by `policy`. The first denial wins.
    pub fn add(&mut self, finding: Finding, policy: &Policy) {
        let deny = finding.rule.severity() == Severity::Deny
            || policy.deny_warnings.contains(&finding.rule);
        if deny {
            self.denial.get_or_insert(finding);
        } else {
            self.warnings.push(finding);
        }
    }

    pub fn denied(&self) -> bool {
        self.denial.is_some()
    }

    /// Rule ids that fired, the denial first.
    pub fn rule_ids(&self) -> Vec<RuleId> {
        self.denial
            .iter()
            .chain(&self.warnings)
            .map(|f| f.rule)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_one_line_and_show_invisible_characters() {
        let finding = Finding::new(RuleId::DT001, "spec.services.a\r\nb\u{202e}c\u{200b}.x: é…");
        assert_eq!(
            finding.message,
            "[DT001] spec.services.a\\r\\nb\\u{202e}c\\u{200b}.x: é…"
        );
    }
}
