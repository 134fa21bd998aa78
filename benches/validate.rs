//! `validate` over many DGDs: N DGDs (the upstream `vllm-agg` manifest, renamed) spread over 100
//! k8s namespaces, in one multi-document YAML text, judged together. Split into the YAML parse
//! and the whole run, at several sizes, to show the cost is linear in the input.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dynamo_tenancy::documents::parse_documents;
use dynamo_tenancy::engine::{DgdIndex, Policy};
use dynamo_tenancy::validator::Validator;

/// `count` DGDs over 100 k8s namespaces, each with its own path, as one YAML stream.
pub fn manifests(count: usize) -> String {
    let shared = std::env::var_os("DYNAMO_TENANCY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let file = shared.join("upstream/dynamo/examples-vllm__agg.yaml");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let body = &text[text.find("apiVersion").expect("a manifest")..];
    let mut out = String::with_capacity(count * (body.len() + 64));
    for i in 0..count {
        let doc = body
            .replacen(
                "name: vllm-agg",
                &format!("name: dgd-{i}\n  namespace: team-{}", i % 100),
                1,
            )
            .replacen(
                "spec:\n",
                &format!("spec:\n  dynamoNamespace: default/model-{}\n", i / 100),
                1,
            );
        out.push_str("---\n");
        out.push_str(&doc);
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    group.sample_size(10);
    for count in [1_000, 5_000, 10_000] {
        let text = manifests(count);
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::new("parse", count), &text, |b, text| {
            b.iter(|| parse_documents(black_box(text)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("whole", count), &text, |b, text| {
            b.iter(|| {
                let mut validator = Validator::new(DgdIndex::new(), "default", Policy::default());
                validator.add_text("dgds.yaml", black_box(text));
                let report = validator.finish();
                assert_eq!(report.summary.admitted, count);
                report
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
