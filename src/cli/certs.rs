use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;
use clap::Args;

#[derive(Args, Debug)]
#[command(
    after_help = "Writes DIR/ca.crt, DIR/tls.crt, DIR/tls.key (mode 0600) and DIR/caBundle \
(the CA in base64, for the webhook configurations' clientConfig.caBundle). The CA's key is not kept: \
to renew, run this again and roll out the new Secret and caBundle together."
)]
pub struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Name of the webhook's Service.
    #[arg(long, default_value = "dynamo-tenancy")]
    service: String,
    /// k8s namespace of the webhook's Service.
    #[arg(long, default_value = "dynamo-tenancy")]
    namespace: String,
    /// Validity of the CA and the serving certificate, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=3650))]
    days: i64,
    /// Replace a key that is already in DIR.
    #[arg(long)]
    force: bool,
}

/// The DNS names the API server may use for `service` in `namespace`.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn check_label(flag: &str, value: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{flag} {value:?} is not a DNS-1123 label; use lowercase letters, digits and '-', \
             e.g. dynamo-tenancy"
        ))
    }
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)
}

pub fn run(args: CertsArgs) -> Result<ExitCode, String> {
    check_label("--service", &args.service)?;
    check_label("--namespace", &args.namespace)?;
    let key = args.out.join("tls.key");
    if key.exists() && !args.force {
        return Err(format!(
            "{} exists; pass --force to replace it, or choose another --out",
            key.display()
        ));
    }
    let names = service_dns_names(&args.service, &args.namespace);
    let ca_name = format!("{}.{} webhook CA", args.service, args.namespace);
    let pair = crate::certs::generate(&ca_name, &names, args.days)?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("--out {}: {e}", args.out.display()))?;
    let bundle = base64::engine::general_purpose::STANDARD.encode(&pair.ca_cert_pem);
    write_file(&args.out.join("ca.crt"), &pair.ca_cert_pem, false)?;
    write_file(&args.out.join("tls.crt"), &pair.cert_pem, false)?;
    write_file(&key, &pair.key_pem, true)?;
    write_file(&args.out.join("caBundle"), &format!("{bundle}\n"), false)?;
    println!(
        "wrote ca.crt, tls.crt, tls.key and caBundle to {} for {} (valid {} days)",
        args.out.display(),
        names.join(", "),
        args.days
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_every_form_the_api_server_uses() {
        assert_eq!(
            service_dns_names("hook", "ns"),
            [
                "hook",
                "hook.ns",
                "hook.ns.svc",
                "hook.ns.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_label("--service", "dynamo-tenancy").is_ok());
        for bad in ["", "Hook", "-a", "a-", "a.b", &"a".repeat(64)] {
            let err = check_label("--service", bad).unwrap_err();
            assert!(err.starts_with("--service"), "{err}");
        }
    }
}
