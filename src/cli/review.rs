use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::engine::review::{encode_review, parse_request, respond};
use crate::engine::{Context, Phase, Subject, decide, review_both};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PhaseArg {
    Mutate,
    Validate,
    Both,
}

#[derive(Args, Debug)]
#[command(after_help = "Exit status: 0 allowed, 1 denied, 2 unreadable input.")]
pub struct ReviewArgs {
    /// DGDs already in the cluster (YAML or JSON: a List, multi-document YAML, or objects).
    #[arg(long)]
    existing: Option<PathBuf>,
    /// k8s namespace of a request and of existing DGDs that name none.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Answer as /mutate, as /validate, or as the API server's chain of both.
    #[arg(long, value_enum, default_value = "both")]
    phase: PhaseArg,
    #[command(flatten)]
    policy: super::PolicyArgs,
}

pub fn run(args: ReviewArgs) -> Result<ExitCode, String> {
    let view = super::read_existing(args.existing.as_deref(), &args.namespace)?;
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let mut req = parse_request(&body).map_err(|e| format!("stdin: {e}"))?;
    if req.namespace.as_deref().is_none_or(str::is_empty) {
        req.namespace = Some(args.namespace.clone());
    }
    let policy = args.policy.policy();
    let ctx = Context {
        view: &view,
        policy: &policy,
    };
    let (response, decision) = match args.phase {
        PhaseArg::Both => review_both(&req, &ctx),
        PhaseArg::Mutate | PhaseArg::Validate => {
            let phase = if matches!(args.phase, PhaseArg::Mutate) {
                Phase::Mutate
            } else {
                Phase::Validate
            };
            decide(&req, phase, &ctx).map(|d| (respond(&req, &d), d))
        }
    }
    .map_err(|e| format!("stdin: {e}"))?;
    if let Some(Subject::Skipped(reason)) = &decision.subject {
        tracing::warn!(uid = %req.uid, "allowed without review: {reason}");
    }
    let allowed = response.allowed;
    let mut out = encode_review(&response, true);
    out.push(b'\n');
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| format!("writing stdout: {e}"))?;
    Ok(ExitCode::from(if allowed { 0 } else { 1 }))
}
