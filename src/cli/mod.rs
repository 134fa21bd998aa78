//! The command line (SPEC section 10). Each subcommand is a thin shell in its own file.

mod certs;
mod review;
mod serve;
mod validate;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::engine::{DgdIndex, Policy, RuleId};

/// Exit code for unreadable input or a usage error.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "dynamo-tenancy",
    version,
    about = "Makes the Dynamo namespace an isolation boundary between DynamoGraphDeployments"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the admission webhook server.
    Serve(Box<serve::ServeArgs>),
    /// Answer one AdmissionReview from stdin, as the webhook would.
    Review(review::ReviewArgs),
    /// Check DGD manifests offline with the webhook's rules.
    Validate(validate::ValidateArgs),
    /// Write a CA and a serving certificate for the webhook Service.
    Certs(certs::CertsArgs),
}

/// Knobs of the policy, shared by every subcommand that judges.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Do not set the runtime's DYN_NAMESPACE / DYN_NAMESPACE_PREFIX in pods.
    #[arg(long)]
    no_dyn_compat: bool,
    /// Treat this warning rule as a denial (repeatable), e.g. --deny-warning DT008.
    #[arg(long = "deny-warning", value_name = "RULE", value_parser = parse_warning_rule)]
    deny_warnings: Vec<RuleId>,
}

/// `--existing FILE` as a view of the DGDs already in the cluster (empty without the flag); an
/// error names the flag and the file.
fn read_existing(file: Option<&std::path::Path>, namespace: &str) -> Result<DgdIndex, String> {
    let Some(file) = file else {
        return Ok(DgdIndex::new());
    };
    let fail = |e: &dyn std::fmt::Display| format!("--existing {}: {e}", file.display());
    let text = std::fs::read_to_string(file).map_err(|e| fail(&e))?;
    crate::existing::index_from_text(&text, namespace).map_err(|e| fail(&e))
}

fn parse_warning_rule(s: &str) -> Result<RuleId, String> {
    let rule: RuleId = s.parse()?;
    match rule.severity() {
        crate::engine::rules::Severity::Warn => Ok(rule),
        crate::engine::rules::Severity::Deny => Err(format!("{rule} already denies")),
    }
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            dyn_compat: !self.no_dyn_compat,
            deny_warnings: self.deny_warnings.iter().copied().collect(),
        }
    }
}

/// Parses the command line and runs the subcommand. Errors are one line on stderr.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version print to stdout.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("dynamo-tenancy: {}", one_line_usage_error(&err));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Review(args) => review::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Certs(args) => certs::run(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("dynamo-tenancy: error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// clap's usage errors span several lines; scripts and humans get one.
fn one_line_usage_error(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .filter(|line| !line.starts_with("Usage:"))
        .collect();
    format!("{}; see --help", parts.join(" "))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DYNAMO_TENANCY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
