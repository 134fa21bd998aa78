//! The engine's cost per review against the yardstick of parsing the same body with serde_json.
//!
//! Bodies are the real API server's requests from `../shared/captured/`. The view holds 10 or
//! 10,000 DGDs; the engine's look-ups are indexed, so both sizes should cost the same.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dynamo_tenancy::engine::review::{encode_review, parse_request, respond};
use dynamo_tenancy::engine::{Context, DgdIndex, DgdRecord, DynamoPath, Phase, Policy, decide};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;

fn captured(name: &str) -> Vec<u8> {
    let shared = std::env::var_os("DYNAMO_TENANCY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let file = shared.join("captured").join(name);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `size` DGDs over 100 k8s namespaces, including the pods' DGD `team-x/vllm-agg`.
fn view(size: usize) -> DgdIndex {
    let mut index = DgdIndex::from_records((0..size - 1).map(|i| {
        let path = DynamoPath::parse(&format!("team-{}/model-{i}", i % 7)).unwrap();
        DgdRecord::managed(&format!("ns-{}", i % 100), &format!("dgd-{i}"), None, path)
    }));
    index.upsert(DgdRecord::managed(
        "team-x",
        "vllm-agg",
        Some("77d82a74-e9e7-4318-a21f-ec1955af63f8"),
        DynamoPath::parse("default/model1").unwrap(),
    ));
    index
}

fn bench(c: &mut Criterion) {
    let policy = Policy::default();
    let cases = [
        (
            "pod-create-mutate",
            "pod-create-generatename-mutate.json",
            Phase::Mutate,
        ),
        (
            "pod-create-validate",
            "pod-create-generatename-validate.json",
            Phase::Validate,
        ),
        (
            "dgd-create-mutate",
            "dgd-create-stock-crd-webhook-patch-mutate.json",
            Phase::Mutate,
        ),
        (
            "dgd-create-validate",
            "dgd-create-ssa-validate.json",
            Phase::Validate,
        ),
    ];
    for (label, file, phase) in cases {
        let body = captured(file);
        let mut group = c.benchmark_group(label);
        group.bench_function("parse (serde_json, yardstick)", |b| {
            b.iter(|| {
                serde_json::from_slice::<AdmissionReview<DynamicObject>>(black_box(&body)).unwrap()
            })
        });
        let req = parse_request(&body).unwrap();
        for size in [10, 10_000] {
            let index = view(size);
            let ctx = Context {
                view: &index,
                policy: &policy,
            };
            group.bench_with_input(BenchmarkId::new("engine", size), &req, |b, req| {
                b.iter(|| {
                    let decision = decide(black_box(req), phase, &ctx).unwrap();
                    encode_review(&respond(req, &decision), false)
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
