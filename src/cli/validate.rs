use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::validator::Validator;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Directories are read recursively (*.yaml, *.yml, *.json; hidden entries \
are skipped). Exit status: 0 every DGD admitted, 1 something denied or a name clash, 2 input that \
cannot be read or judged (each problem is one line on stderr)."
)]
pub struct ValidateArgs {
    /// Files or directories of manifests; `-` reads stdin.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// DGDs already in the cluster (YAML or JSON, e.g. `kubectl get dgd -A -o yaml`).
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

pub fn run(args: ValidateArgs) -> Result<ExitCode, String> {
    let existing = super::read_existing(args.existing.as_deref(), &args.namespace)?;
    let mut validator = Validator::new(existing, &args.namespace, args.policy.policy());
    let mut stdin_read = false;
    for path in &args.paths {
        if path.as_os_str() == "-" {
            if std::mem::replace(&mut stdin_read, true) {
                return Err("`-` (stdin) is given twice; give it once".to_owned());
            }
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => validator.add_text("-", &text),
                Err(e) => validator.add_source_error("-", format!("reading stdin: {e}")),
            }
            continue;
        }
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let (mut files, mut errors) = (Vec::new(), Vec::new());
                manifest_files(path, &mut files, &mut errors);
                for (dir, message) in errors {
                    validator.add_source_error(&dir.display().to_string(), message);
                }
                for file in files {
                    add_file(&mut validator, &file);
                }
            }
            Ok(_) => add_file(&mut validator, path),
            Err(e) => validator.add_source_error(&path.display().to_string(), e.to_string()),
        }
    }
    let report = validator.finish();
    for error in &report.errors {
        eprintln!("dynamo-tenancy: error: {}: {}", error.source, error.message);
    }
    let rendered = match args.output {
        Output::Text => report.to_text(),
        Output::Json => report.to_json() + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(rendered.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`| head`) is the reader's choice, not an error of ours.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(format!("writing stdout: {e}"));
        }
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn add_file(validator: &mut Validator, file: &Path) {
    let source = file.display().to_string();
    match std::fs::read(file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => validator.add_text(&source, &text),
            Err(_) => validator.add_source_error(&source, "not UTF-8 text".to_owned()),
        },
        Err(e) => validator.add_source_error(&source, e.to_string()),
    }
}

/// Manifest files under `dir`, sorted so that reports are stable. Symlinks to files are followed;
/// symlinks to directories are not, so a link loop cannot trap the walk.
fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return errors.push((dir.to_owned(), e.to_string())),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            !path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    paths.sort();
    for path in paths {
        let Ok(link) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if link.is_dir() {
            manifest_files(&path, out, errors);
        } else if is_manifest(&path) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            out.push(path);
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}
