use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Files or directories of manifests; `-` reads stdin.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// DGDs already in the cluster (YAML or JSON).
    #[arg(long)]
    existing: Option<PathBuf>,
    /// k8s namespace of documents that name none.
    #[arg(long, default_value = "default")]
    namespace: String,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Output,
    #[command(flatten)]
    policy: super::PolicyArgs,
}

pub fn run(_args: ValidateArgs) -> Result<ExitCode, String> {
    super::not_yet("validate")
}
