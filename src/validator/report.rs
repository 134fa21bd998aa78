//! The validator's verdicts, and their two renderings: lines for people, JSON for machines.
//!
//! The JSON form is a stable interface (documented in `docs/validate.md`): fields are only ever
//! added, and `schema` changes if one ever has to change meaning.

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::{Decision, RuleId};

/// The `schema` value of the JSON report.
pub const SCHEMA: &str = "dynamo-tenancy.validate/v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The webhook would admit it (maybe with warnings).
    Admitted,
    /// The webhook would deny it; `rules` says why.
    Denied,
    /// Another object of the same kind, namespace and name is given too.
    Clash,
    /// It cannot be judged (unrendered template, missing name, bad structure).
    Error,
}

/// The verdict on one object.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    /// The file it came from, as given on the command line (`-` for stdin).
    pub source: String,
    /// The line its document (or List item) starts on, from 1.
    pub line: u64,
    /// Its index in the `items` of a List, if it came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub verdict: Verdict,
    /// The rule ids that fired, the denial first, then the warnings.
    pub rules: Vec<RuleId>,
    /// Why it is denied, clashes or cannot be judged (at most one line each).
    pub messages: Vec<String>,
    pub warnings: Vec<String>,
    /// The path the mutating webhook would record, in canonical form.
    pub canonical_path: Option<String>,
    /// The runtime token its pods would get (`DYN_NAMESPACE`).
    pub token: Option<String>,
}

impl ObjectReport {
    pub fn new(
        source: &str,
        line: u64,
        item: Option<usize>,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        ObjectReport {
            source: source.to_owned(),
            line,
            item,
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            verdict: Verdict::Admitted,
            rules: Vec::new(),
            messages: Vec::new(),
            warnings: Vec::new(),
            canonical_path: None,
            token: None,
        }
    }

    pub fn error(&mut self, message: String) {
        self.verdict = Verdict::Error;
        self.messages.push(message);
    }

    pub fn clash(&mut self, message: String) {
        self.verdict = Verdict::Clash;
        self.messages.push(message);
    }

    /// Takes the engine's decision. `path` is the canonical path the DGD would get, if it got
    /// that far.
    pub fn judged(&mut self, decision: &Decision, path: Option<String>) {
        let findings = &decision.findings;
        self.verdict = if findings.denied() {
            Verdict::Denied
        } else {
            Verdict::Admitted
        };
        self.rules = findings.rule_ids();
        self.messages = findings.denial.iter().map(|f| f.message.clone()).collect();
        self.warnings = findings
            .warnings
            .iter()
            .map(|f| f.message.clone())
            .collect();
        self.canonical_path = path;
    }

    /// `file:line`, or `file:line (item N)` inside a List.
    pub fn place(&self) -> String {
        place(&self.source, self.line, self.item)
    }
}

pub fn place(source: &str, line: u64, item: Option<usize>) -> String {
    match item {
        Some(item) => format!("{source}:{line} (item {item})"),
        None => format!("{source}:{line}"),
    }
}

/// Input that could not be read or parsed at all.
#[derive(Clone, Debug, Serialize)]
pub struct SourceError {
    pub source: String,
    pub message: String,
}

/// Counts over the whole run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Files (and stdin) read.
    pub sources: usize,
    /// YAML/JSON documents found, List items counted one by one.
    pub documents: usize,
    /// DGDs judged or reported.
    pub dgds: usize,
    pub admitted: usize,
    pub denied: usize,
    pub clashes: usize,
    /// Objects that cannot be judged, plus sources that cannot be read.
    pub errors: usize,
    /// Documents that are not DGDs (and clash with nothing): skipped.
    pub skipped: usize,
    /// Warnings over every admitted or denied object.
    pub warnings: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub objects: Vec<ObjectReport>,
    pub errors: Vec<SourceError>,
    pub summary: Summary,
}

/// Exit status: every DGD admitted.
pub const EXIT_ADMITTED: u8 = 0;
/// Exit status: something denied or clashing.
pub const EXIT_DENIED: u8 = 1;
/// Exit status: some input could not be read or judged.
pub const EXIT_UNREADABLE: u8 = 2;

impl Report {
    pub fn new(
        objects: Vec<ObjectReport>,
        errors: Vec<SourceError>,
        sources: usize,
        documents: usize,
        skipped: usize,
    ) -> Self {
        let count = |verdict| objects.iter().filter(|o| o.verdict == verdict).count();
        let summary = Summary {
            sources,
            documents,
            dgds: objects.iter().filter(|o| o.kind == super::DGD_KIND).count(),
            admitted: count(Verdict::Admitted),
            denied: count(Verdict::Denied),
            clashes: count(Verdict::Clash),
            errors: count(Verdict::Error) + errors.len(),
            skipped,
            warnings: objects.iter().map(|o| o.warnings.len()).sum(),
        };
        Report {
            schema: SCHEMA,
            objects,
            errors,
            summary,
        }
    }

    /// 2 when something could not be read or judged, else 1 when something is denied or clashes,
    /// else 0.
    pub fn exit_code(&self) -> u8 {
        let s = &self.summary;
        if s.errors > 0 {
            EXIT_UNREADABLE
        } else if s.denied + s.clashes > 0 {
            EXIT_DENIED
        } else {
            EXIT_ADMITTED
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("strings, numbers and lists always serialise")
    }

    /// One line per object, warnings indented below it, then the summary. Source errors are not
    /// here: the CLI writes them to stderr.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for object in &self.objects {
            let who = format!("{} {}/{}", object.kind, object.namespace, object.name);
            let _ = match object.verdict {
                Verdict::Admitted => writeln!(
                    out,
                    "{}: {who}: admitted {}{}",
                    object.place(),
                    object
                        .canonical_path
                        .as_deref()
                        .map_or_else(|| "and left unmanaged".to_owned(), |p| format!("at {p}")),
                    object
                        .token
                        .as_deref()
                        .map(|t| format!(" (token {t})"))
                        .unwrap_or_default()
                ),
                Verdict::Denied => writeln!(
                    out,
                    "{}: {who}: denied{}: {}",
                    object.place(),
                    object
                        .canonical_path
                        .as_deref()
                        .map(|p| format!(" at {p}"))
                        .unwrap_or_default(),
                    object.messages.join("; ")
                ),
                Verdict::Clash => writeln!(
                    out,
                    "{}: {who}: {}",
                    object.place(),
                    object.messages.join("; ")
                ),
                Verdict::Error => writeln!(
                    out,
                    "{}: {who}: error: {}",
                    object.place(),
                    object.messages.join("; ")
                ),
            };
            for warning in &object.warnings {
                let _ = writeln!(out, "    warning: {warning}");
            }
        }
        let s = &self.summary;
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let _ = writeln!(
            out,
            "{} in {}: {} admitted, {} denied, {}, {}, {}; {} skipped",
            plural(s.dgds, "DGD", "DGDs"),
            plural(s.sources, "source", "sources"),
            s.admitted,
            s.denied,
            plural(s.clashes, "name clash", "name clashes"),
            plural(s.errors, "error", "errors"),
            plural(s.warnings, "warning", "warnings"),
            plural(s.skipped, "other document", "other documents"),
        );
        out
    }
}
