use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct CertsArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "dynamo-tenancy")]
    service: String,
    #[arg(long, default_value = "dynamo-tenancy")]
    namespace: String,
}

pub fn run(_args: CertsArgs) -> Result<ExitCode, String> {
    super::not_yet("certs")
}
