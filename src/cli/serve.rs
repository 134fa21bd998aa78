use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::server::{Cluster, ServeConfig, TlsSource};

fn duration(text: &str) -> Result<Duration, String> {
    crate::server::app::parse_go_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration such as 500ms, 5s or 1m"))
}

#[derive(Args, Debug)]
#[command(
    after_help = "Without --dev, the cluster comes from --kubeconfig, $KUBECONFIG, \
~/.kube/config or the pod's service account, in kube's usual order."
)]
pub struct ServeArgs {
    /// HTTPS address of /mutate and /validate.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_listen: SocketAddr,
    /// Serving certificate (PEM); reloaded when it changes.
    #[arg(long, requires = "tls_key", required_unless_present = "dev")]
    tls_cert: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (the API server's).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this k8s namespace's DGDs (repeatable); default: all namespaces.
    #[arg(long = "watch-namespace", value_name = "NS")]
    watch_namespaces: Vec<String>,
    /// No cluster: the DGDs this server admitted are the registry; without --tls-cert, a
    /// self-signed certificate for localhost. For trying it out, not for production.
    #[arg(long, conflicts_with_all = ["kubeconfig", "watch_namespaces"])]
    dev: bool,
    /// With --dev: DGDs the registry starts with (YAML or JSON, as for `review --existing`).
    #[arg(long, requires = "dev")]
    existing: Option<PathBuf>,
    /// Where --dev writes ca.crt (when it generates the certificate).
    #[arg(long, default_value = "./certs/dev")]
    dev_dir: PathBuf,
    /// Re-read the certificate files this often, besides watching them.
    #[arg(long, default_value = "10s", value_parser = duration)]
    cert_poll: Duration,
    /// After SIGTERM, keep serving (telling clients `Connection: close`) this long.
    #[arg(long, default_value = "5s", value_parser = duration)]
    drain_delay: Duration,
    /// After SIGTERM, exit within this time (keep it under terminationGracePeriodSeconds).
    #[arg(long, default_value = "25s", value_parser = duration)]
    shutdown_grace: Duration,
    /// Reviews answered at once. Past this, a review is refused at once with 503 and
    /// Retry-After, so the API server applies the failurePolicy instead of waiting out its timeout.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_in_flight: u32,
    /// Do not claim paths through the API server (SPEC section 7): uniqueness then rests on the
    /// cache alone and two DGDs created at once can share a path. For measurement, or clusters
    /// where the webhook may not write Leases.
    #[arg(long, conflicts_with = "dev")]
    no_claims: bool,
    /// How often to free claims whose DGD is gone (the garbage collector's backstop); 0s: never.
    #[arg(long, default_value = "5m", value_parser = duration)]
    claim_sweep: Duration,
    #[command(flatten)]
    policy: super::PolicyArgs,
}

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => TlsSource::Files { cert, key },
        _ if args.dev => TlsSource::Generated { dir: args.dev_dir },
        _ => return Err("give --tls-cert and --tls-key, or --dev".to_owned()),
    };
    let cluster = if args.dev {
        let seed = super::read_existing(args.existing.as_deref(), "default")?;
        crate::memory::release();
        Cluster::Dev { seed }
    } else {
        Cluster::Kube {
            kubeconfig: args.kubeconfig,
            namespaces: args.watch_namespaces,
            claims: !args.no_claims,
            claim_sweep: args.claim_sweep,
        }
    };
    crate::server::run(ServeConfig {
        listen: args.listen,
        health_listen: args.health_listen,
        tls,
        client_ca: args.client_ca,
        cluster,
        policy: args.policy.policy(),
        cert_poll: args.cert_poll,
        drain_delay: args.drain_delay,
        shutdown_grace: args.shutdown_grace,
        max_in_flight: args.max_in_flight as usize,
    })?;
    Ok(ExitCode::SUCCESS)
}
