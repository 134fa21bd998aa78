use std::process::ExitCode;

fn main() -> ExitCode {
    dynamo_tenancy::cli::run()
}
