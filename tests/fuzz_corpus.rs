//! The fuzz targets on their committed corpora, on the stable toolchain: every file under
//! `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` goes through the same
//! `dynamo_tenancy::fuzz` function that cargo-fuzz drives (`docs/fuzzing.md`). No fuzzing here:
//! this is how CI runs each target on its corpus.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use dynamo_tenancy::fuzz;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| path.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

/// Replays the seeds (which must exist) and the regressions of `target`; fails naming every
/// input whose replay panicked.
fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = files(&root.join("seeds").join(target));
    assert!(
        !seeds.is_empty(),
        "fuzz/seeds/{target}/ is empty or missing: the replay would test nothing"
    );
    let regressions = files(&root.join("regressions").join(target));
    let mut failed = Vec::new();
    for file in seeds.iter().chain(&regressions) {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz target {target} fails on (see the panics above):\n{}",
        failed.join("\n")
    );
    eprintln!(
        "{target}: {} seeds and {} regressions replayed",
        seeds.len(),
        regressions.len()
    );
}

#[test]
fn review_body_corpus() {
    replay("review_body", fuzz::review_body);
}

#[test]
fn path_corpus() {
    replay("path", fuzz::path);
}

#[test]
fn validate_input_corpus() {
    replay("validate_input", fuzz::validate_input);
}
