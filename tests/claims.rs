//! Race-free uniqueness (SPEC section 7) through the real binary: claims are Leases in the fake
//! API server (tests/support/fake_api.rs), which answers as the real one does (create → 409
//! AlreadyExists, a stale update → 409 Conflict, GET → 404).

mod common;
mod support;

use std::time::{Duration, Instant};

use common::*;
use dynamo_tenancy::claims::lease;
use dynamo_tenancy::engine::{Claim, DynamoPath};
use futures::future::join_all;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::FakeApi;
use support::webhook::*;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/team-x/leases";

/// The claim Lease of `path` in team-x, if any.
fn claim_of(api: &FakeApi, path: &str) -> Option<Value> {
    let name = lease::name(&DynamoPath::parse(path).unwrap());
    api.leases("team-x")
        .into_iter()
        .find(|l| l["metadata"]["name"] == name)
}

fn holder(lease: &Value) -> (String, String) {
    let owner = &lease["metadata"]["ownerReferences"][0];
    (
        owner["name"].as_str().unwrap().to_owned(),
        owner["uid"].as_str().unwrap().to_owned(),
    )
}

/// Puts a claim in place as another replica would have, `age` ago.
async fn seed_claim(api: &FakeApi, name: &str, uid: &str, path: &str, age: Duration) {
    let claim = Claim {
        namespace: "team-x".to_owned(),
        path: DynamoPath::parse(path).unwrap(),
        name: name.to_owned(),
        uid: Some(uid.to_owned()),
    };
    let when = Timestamp::now() - SignedDuration::try_from(age).unwrap();
    let leases: Api<Lease> = Api::namespaced(kube_client(api), "team-x");
    leases
        .create(&PostParams::default(), &lease::build(&claim, when))
        .await
        .unwrap();
}

fn lease_writes(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| !r.starts_with("GET ") && r.contains("/leases"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_admit_exactly_one_dgd_per_path() {
    let api = FakeApi::start().await;
    let (a, b) = (start(&api, &[]).await, start(&api, &[]).await);
    a.ready().await;
    b.ready().await;
    const ROUNDS: usize = 200;
    const RACERS: usize = 4;
    for round in 0..ROUNDS {
        let path = format!("default/round-{round}");
        let answers = join_all((0..RACERS).map(|k| {
            let replica = if k % 2 == 0 { &a } else { &b };
            replica.validate(create_review("team-x", &format!("r{round}-{k}"), &path))
        }))
        .await;
        let admitted: Vec<usize> = (0..RACERS)
            .filter(|k| answers[*k].json["response"]["allowed"] == true)
            .collect();
        assert_eq!(admitted.len(), 1, "round {round}: {admitted:?} admitted");
        let winner = format!("r{round}-{}", admitted[0]);
        for answer in &answers {
            if answer.json["response"]["allowed"] == false {
                assert_eq!(
                    denial_rule(answer).as_deref(),
                    Some("DT003"),
                    "{}",
                    answer.json
                );
                assert!(
                    message(answer).contains(&format!("team-x/{winner}")),
                    "{}",
                    answer.json
                );
            }
        }
        let claim = claim_of(&api, &path).expect("the winner's claim");
        assert_eq!(holder(&claim).0, winner);
    }
    assert_eq!(api.leases("team-x").len(), ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_dgd_retried_keeps_its_claim() {
    let api = FakeApi::start().await;
    let setup = start(&api, &[]).await;
    setup.ready().await;
    for _ in 0..3 {
        let answer = setup
            .validate(create_review("team-x", "a", "default/llama"))
            .await;
        assert_eq!(answer.json["response"]["allowed"], true, "{}", answer.json);
    }
    let claim = claim_of(&api, "default/llama").unwrap();
    assert_eq!(holder(&claim), ("a".to_owned(), "uid-of-a".to_owned()));
    assert_eq!(
        claim["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "dynamo-tenancy"
    );
    assert_eq!(
        claim["metadata"]["annotations"]["nvidia.com/dynamo-namespace-path"],
        "default/llama"
    );
    assert_eq!(claim["spec"]["holderIdentity"], "team-x/a");
    // The retries' creates met 409 and read the claim: nothing was replaced or deleted.
    assert_eq!(api.leases("team-x").len(), 1);
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.starts_with("PUT ") || r.starts_with("DELETE "))
    );
    let metrics = setup.metrics().await;
    assert!(
        metrics.contains(r#"dynamo_tenancy_claims_total{result="created",dry_run="false"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dynamo_tenancy_claims_total{result="own",dry_run="false"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_create_is_in_flight_is_not_taken_over() {
    let api = FakeApi::start().await;
    let setup = start(&api, &[]).await;
    setup.ready().await;
    // x is admitted and claims the path, but the API server has not stored x (yet).
    let answer = setup
        .validate(create_review("team-x", "x", "default/llama"))
        .await;
    assert_eq!(answer.json["response"]["allowed"], true);
    let answer = setup
        .validate(create_review("team-x", "y", "default/llama"))
        .await;
    assert_eq!(
        denial_rule(&answer).as_deref(),
        Some("DT003"),
        "{}",
        answer.json
    );
    assert!(message(&answer).contains("team-x/x"), "{}", answer.json);
    assert!(message(&answer).contains("retry in 30s"), "{}", answer.json);
    // Another replica's claim, 25 s old, of a DGD that is not stored: still in flight.
    seed_claim(&api, "z", "uid-z", "default/other", Duration::from_secs(25)).await;
    let answer = setup
        .validate(create_review("team-x", "w", "default/other"))
        .await;
    assert_eq!(
        denial_rule(&answer).as_deref(),
        Some("DT003"),
        "{}",
        answer.json
    );
    assert_eq!(holder(&claim_of(&api, "default/llama").unwrap()).0, "x");
    assert_eq!(holder(&claim_of(&api, "default/other").unwrap()).0, "z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_holders_claim_is_taken_over() {
    let api = FakeApi::start().await;
    let setup = start(&api, &[]).await;
    setup.ready().await;

    // The watch saw the holder deleted: taken over at once.
    let stored = api.create_dgd(dgd("team-x", "a", Some("default/llama")));
    let uid = stored["metadata"]["uid"].as_str().unwrap().to_owned();
    let review = review_with(&repo("examples/reviews/dgd-create.json"), "retry", |r| {
        let fresh: Value =
            serde_json::from_slice(&create_review("team-x", "a", "default/llama")).unwrap();
        *r = fresh;
        r["request"]["object"]["metadata"]["uid"] = json!(uid);
    });
    let answer = setup.validate(review).await;
    assert_eq!(answer.json["response"]["allowed"], true, "{}", answer.json);
    assert_eq!(holder(&claim_of(&api, "default/llama").unwrap()).1, uid);
    api.delete_dgd("team-x", "a");
    setup
        .until_verdict("team-x", "b", "default/llama", None)
        .await;
    let claim = claim_of(&api, "default/llama").unwrap();
    assert_eq!(holder(&claim), ("b".to_owned(), "uid-of-b".to_owned()));
    assert_eq!(claim["spec"]["leaseTransitions"], 1);

    // Absent (a live GET says so) and older than 30 s: a create that never landed.
    seed_claim(
        &api,
        "ghost",
        "uid-ghost",
        "default/old",
        Duration::from_secs(60),
    )
    .await;
    let answer = setup
        .validate(create_review("team-x", "c", "default/old"))
        .await;
    assert_eq!(answer.json["response"]["allowed"], true, "{}", answer.json);
    assert_eq!(holder(&claim_of(&api, "default/old").unwrap()).0, "c");
    assert!(api.requests().iter().any(|r| r.starts_with(
        "GET /apis/nvidia.com/v1alpha1/namespaces/team-x/dynamographdeployments/ghost"
    )));
    let metrics = setup.metrics().await;
    assert!(
        metrics.contains(r#"dynamo_tenancy_claims_total{result="taken_over",dry_run="false"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_and_agrees_with_the_real_verdict() {
    let api = FakeApi::start().await;
    let setup = start(&api, &[]).await;
    setup.ready().await;
    seed_claim(
        &api,
        "ghost",
        "uid-ghost",
        "default/stale",
        Duration::from_secs(60),
    )
    .await;
    let mut writes = lease_writes(&api);

    // Free path, a held path, a stale claim: dry run first, then the real request.
    let cases = [
        ("a", "default/free", None),
        ("b", "default/free", Some("DT003")),
        ("c", "default/stale", None),
    ];
    for (name, path, rule) in cases {
        let before = api.leases("team-x");
        let dry = setup
            .validate(dry_run(create_review("team-x", name, path)))
            .await;
        assert_eq!(
            denial_rule(&dry).as_deref(),
            rule,
            "dry run of {name}: {}",
            dry.json
        );
        assert_eq!(api.leases("team-x"), before, "dry run of {name} wrote");
        assert_eq!(lease_writes(&api), writes, "dry run of {name} wrote");
        let real = setup.validate(create_review("team-x", name, path)).await;
        assert_eq!(denial_rule(&real).as_deref(), rule, "{name}: {}", real.json);
        assert_eq!(message(&dry), message(&real));
        writes = lease_writes(&api);
    }
    assert_eq!(holder(&claim_of(&api, "default/free").unwrap()).0, "a");
    assert_eq!(holder(&claim_of(&api, "default/stale").unwrap()).0, "c");
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.contains("/leases") && r.contains("dryRun")),
        "a dry run must not even dry-run a write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_trouble_denies_with_a_retryable_message_before_the_deadline() {
    let api = FakeApi::start().await;
    let setup = start(&api, &[]).await;
    setup.ready().await;
    // 500: answered at once. 503 and 429 the client retries (honouring Retry-After) until the
    // budget runs out; then the denial says so, still before the API server's deadline.
    for (status, says) in [
        (500, "500"),
        (403, "403"),
        (503, "no answer"),
        (429, "no answer"),
    ] {
        api.fail_next("POST", LEASES, status, 100);
        let started = Instant::now();
        let answer = post(
            &setup.client,
            &setup.server.url("/validate?timeout=2s"),
            create_review("team-x", "a", "default/llama"),
        )
        .await
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{status}: took {:?}",
            started.elapsed()
        );
        assert_eq!(
            denial_rule(&answer).as_deref(),
            Some("DT003"),
            "{status}: {}",
            answer.json
        );
        let text = message(&answer);
        assert!(
            text.contains("could not claim") && text.ends_with("retry"),
            "{text}"
        );
        assert!(text.contains(says), "{status}: {text}");
        assert!(claim_of(&api, "default/llama").is_none());
        api.clear_failures();
    }
    // A hanging API server: the denial comes before the API server's deadline.
    api.set_delay("POST", LEASES, Duration::from_secs(20));
    let started = Instant::now();
    let answer = post(
        &setup.client,
        &setup.server.url("/validate?timeout=2s"),
        create_review("team-x", "a", "default/llama"),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(answer.status, 200);
    assert_eq!(
        denial_rule(&answer).as_deref(),
        Some("DT003"),
        "{}",
        answer.json
    );
    assert!(
        message(&answer).contains("no answer from the API server"),
        "{}",
        answer.json
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    api.set_delay("POST", LEASES, Duration::ZERO);
    // Pods never wait on claims: a pod review while lease writes hang is answered at once.
    api.set_delay("POST", LEASES, Duration::from_secs(20));
    let started = Instant::now();
    let answer = setup.mutate(pod_review("team-x", "a")).await;
    assert_eq!(answer.json["response"]["allowed"], true);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_make_no_api_calls_when_the_cache_hits() {
    let api = FakeApi::start().await;
    api.create_dgd(dgd("team-x", "llama", Some("default/llama")));
    let setup = start(&api, &[]).await;
    setup.ready().await;
    let calls = |api: &FakeApi| {
        api.requests()
            .into_iter()
            .filter(|r| !r.contains("watch=true"))
            .count()
    };
    let before = calls(&api);
    for _ in 0..20 {
        let review = pod_review("team-x", "llama");
        let answer = setup.mutate(review.clone()).await;
        assert!(patched(&answer), "{}", answer.json);
        // The validating webhook sees the pod as the mutation left it.
        let answer = setup.validate(with_patch(&review, &answer)).await;
        assert_eq!(answer.json["response"]["allowed"], true, "{}", answer.json);
    }
    assert_eq!(calls(&api), before, "{:?}", &api.requests()[before..]);
}

/// `review` with the patch of `answer` applied to its object.
fn with_patch(review: &[u8], answer: &Answer) -> Vec<u8> {
    use base64::Engine as _;
    let mut review: Value = serde_json::from_slice(review).unwrap();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer.json["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    json_patch::patch(&mut review["request"]["object"], &patch).unwrap();
    serde_json::to_vec(&review).unwrap()
}

/// A pod review in `namespace` with no DGD label and `env` in its container.
fn foreign_pod(namespace: &str, env: Value) -> Vec<u8> {
    review_with(
        &repo("examples/reviews/pod-create.json"),
        "uid-foreign",
        |r| {
            r["request"]["namespace"] = json!(namespace);
            let obj = &mut r["request"]["object"];
            obj["metadata"]["namespace"] = json!(namespace);
            obj["metadata"]["labels"] = json!({"app": "tool"});
            obj["spec"]["containers"][0]["env"] = env;
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dt011_stops_pods_joining_another_namespaces_plane() {
    let api = FakeApi::start().await;
    api.create_dgd(dgd("team-x", "llama", Some("default/llama")));
    api.create_dgd(dgd("team-x", "legacy", None));
    let setup = start(&api, &[]).await;
    setup.ready().await;
    let cases = [
        (
            "team-y",
            json!([{"name": "DYN_NAMESPACE", "value": "team-x--llama"}]),
            Some("DT011"),
        ),
        (
            "team-y",
            json!([{"name": "DYN_NAMESPACE_PREFIX", "value": "team-x"}]),
            Some("DT011"),
        ),
        (
            "team-y",
            json!([{"name": "DYN_NAMESPACE", "value": "team-x-legacy"}]),
            Some("DT011"),
        ),
        (
            "team-x",
            json!([{"name": "DYN_NAMESPACE", "value": "team-x--llama"}]),
            None,
        ),
        (
            "team-y",
            json!([{"name": "DYN_NAMESPACE", "value": "team-y--llama"}]),
            None,
        ),
        (
            "team-y",
            json!([{"name": "DYN_NAMESPACE_PREFIX", "value": "team-x--llama-2"}]),
            None,
        ),
    ];
    for (namespace, env, rule) in cases {
        let answer = setup.validate(foreign_pod(namespace, env.clone())).await;
        assert_eq!(
            denial_rule(&answer).as_deref(),
            rule,
            "{namespace} {env}: {}",
            answer.json
        );
        if rule.is_some() {
            assert!(message(&answer).contains("team-x/"), "{}", answer.json);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_frees_claims_whose_dgd_is_gone() {
    let api = FakeApi::start().await;
    let kept = api.create_dgd(dgd("team-x", "kept", Some("default/kept")));
    seed_claim(
        &api,
        "ghost",
        "uid-ghost",
        "default/orphan",
        Duration::from_secs(60),
    )
    .await;
    seed_claim(
        &api,
        "young",
        "uid-young",
        "default/young",
        Duration::from_secs(1),
    )
    .await;
    let kept_uid = kept["metadata"]["uid"].as_str().unwrap();
    seed_claim(
        &api,
        "kept",
        kept_uid,
        "default/kept",
        Duration::from_secs(60),
    )
    .await;
    let setup = start(&api, &["--claim-sweep", "500ms"]).await;
    setup.ready().await;
    eventually(WAIT, "the orphaned claim is freed", || async {
        claim_of(&api, "default/orphan").is_none()
    })
    .await;
    assert!(
        claim_of(&api, "default/young").is_some(),
        "a young claim may be in flight"
    );
    assert!(claim_of(&api, "default/kept").is_some(), "its DGD exists");
    let metrics = setup.metrics().await;
    assert!(
        metrics.contains("dynamo_tenancy_claims_collected_total 1"),
        "{metrics}"
    );
}

/// Not a CI test (`bench/claims.sh` runs it on a release build): the latency a claim adds to a
/// DGD CREATE, one round trip to the API server (here the in-process fake), against a replica
/// started with `--no-claims`; and pod reviews on both, which make no API call at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn claim_latency() {
    let api = FakeApi::start().await;
    api.create_dgd(dgd("team-x", "llama", Some("default/llama")));
    let with = start(&api, &[]).await;
    let without = start(&api, &["--no-claims"]).await;
    with.ready().await;
    without.ready().await;
    const N: usize = 2000;
    let percentiles = |mut samples: Vec<Duration>| {
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        format!(
            "p50 {:>7.0} µs   p99 {:>7.0} µs",
            at(0.5).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6
        )
    };
    for (label, setup) in [("claims", &with), ("no claims", &without)] {
        // Warm the connection.
        for i in 0..50 {
            setup
                .validate(create_review("team-w", &format!("warm-{i}"), "default"))
                .await;
        }
        let mut dgd_samples = Vec::with_capacity(N);
        for i in 0..N {
            let review = create_review(
                "team-x",
                &format!("{label}-{i}"),
                &format!("default/{}-{i}", label.replace(' ', "-")),
            );
            let started = Instant::now();
            let answer = setup.validate(review).await;
            dgd_samples.push(started.elapsed());
            assert_eq!(answer.json["response"]["allowed"], true, "{}", answer.json);
        }
        let mut pod_samples = Vec::with_capacity(N);
        for _ in 0..N {
            let started = Instant::now();
            let answer = setup.mutate(pod_review("team-x", "llama")).await;
            pod_samples.push(started.elapsed());
            assert!(patched(&answer));
        }
        println!(
            "{label:>10}: DGD CREATE (validate) {}   |   Pod CREATE (mutate) {}",
            percentiles(dgd_samples),
            percentiles(pod_samples)
        );
    }
}
