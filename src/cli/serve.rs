use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// HTTPS address of the webhook endpoints.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: String,
    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_listen: String,
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (the API server's).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// No cluster: self-signed certificate, registry of the DGDs this server admitted.
    #[arg(long)]
    dev: bool,
    #[arg(long, default_value = "./certs/dev", requires = "dev")]
    dev_dir: PathBuf,
    #[command(flatten)]
    policy: super::PolicyArgs,
}

pub fn run(_args: ServeArgs) -> Result<ExitCode, String> {
    super::not_yet("serve")
}
