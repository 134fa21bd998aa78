//! The server's DGD cache against an in-process fake API server that speaks the real list and
//! watch JSON (tests/support/fake_api.rs): after each event the verdicts change as they should.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use support::FakeApi;
use support::webhook::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_follow_list_watch_drop_and_410() {
    let api = FakeApi::start().await;
    api.create_dgd(dgd("team-x", "a", Some("default/model1")));
    api.create_dgd(dgd("team-y", "c", Some("default/other")));
    let setup = start(&api, &[]).await;
    eventually(WAIT, "/readyz after the initial list", || async {
        matches!(get(&setup.server.health_url("/readyz")).await, Ok((200, _)))
    })
    .await;
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r
                .starts_with("GET /apis/nvidia.com/v1alpha1/dynamographdeployments?&limit=500")),
        "{requests:?}"
    );

    // From the initial list: a is at default/model1 in team-x.
    let answer = setup
        .validate(create_review("team-x", "b", "default/model1"))
        .await;
    assert_eq!(
        denial_rule(&answer).as_deref(),
        Some("DT003"),
        "{}",
        answer.json
    );
    assert!(
        answer.json["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("team-x/a")
    );

    // ADDED: an unmanaged DGD; its pods are left alone.
    api.create_dgd(dgd("team-x", "legacy", None));
    eventually(WAIT, "ADDED legacy reaches the cache", || async {
        let answer = setup.mutate(pod_review("team-x", "legacy")).await;
        answer.json["response"]["allowed"] == true
            && answer.json["response"].get("warnings").is_none()
            && !patched(&answer)
    })
    .await;
    // MODIFIED: adopted at default/legacy; now its pods are told their path.
    api.update_dgd(dgd("team-x", "legacy", Some("default/legacy")));
    eventually(WAIT, "MODIFIED legacy adopts it", || async {
        patched(&setup.mutate(pod_review("team-x", "legacy")).await)
    })
    .await;

    // DELETED: default/model1 is free again.
    api.delete_dgd("team-x", "a");
    setup
        .until_verdict("team-x", "b", "default/model1", None)
        .await;

    // A bookmark changes nothing.
    api.bookmark();
    setup
        .until_verdict("team-y", "d", "default/other", Some("DT003"))
        .await;

    // A dropped watch: the watcher re-watches from its last resourceVersion.
    let lists_before = count_lists(&api);
    api.drop_watches();
    api.create_dgd(dgd("team-x", "e", Some("default/after-drop")));
    setup
        .until_verdict("team-x", "e2", "default/after-drop", Some("DT003"))
        .await;
    assert_eq!(
        count_lists(&api),
        lists_before,
        "a dropped watch must not relist"
    );

    // 410 Gone: the watcher relists and catches up.
    api.expire();
    api.create_dgd(dgd("team-x", "f", Some("default/after-expiry")));
    api.delete_dgd("team-x", "e");
    setup
        .until_verdict("team-x", "f2", "default/after-expiry", Some("DT003"))
        .await;
    setup
        .until_verdict("team-x", "e2", "default/after-drop", None)
        .await;
    assert!(
        count_lists(&api) > lists_before,
        "410 must trigger a relist"
    );

    let (_, metrics) = get(&setup.server.health_url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("dynamo_tenancy_cache_synced 1"),
        "{metrics}"
    );
    // c, legacy and f remain.
    assert!(metrics.contains("dynamo_tenancy_cache_dgds 3"), "{metrics}");
}

fn count_lists(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("limit=500") && !r.contains("watch=true"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_cache() {
    let api = FakeApi::start().await;
    api.set_delay(
        "GET",
        "/apis/nvidia.com/v1alpha1/dynamographdeployments?&limit",
        Duration::from_millis(1500),
    );
    let setup = start(&api, &[]).await;
    let (status, body) = get(&setup.server.health_url("/readyz")).await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("DGD cache not synced"), "{body}");
    eventually(WAIT, "ready after the slow list", || async {
        matches!(get(&setup.server.health_url("/readyz")).await, Ok((200, _)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_an_uncached_dgd_gets_one_live_get() {
    let api = FakeApi::start().await;
    // The server watches team-z only, so DGDs of team-x reach it only by the live GET.
    let setup = start(&api, &["--watch-namespace", "team-z"]).await;
    eventually(WAIT, "ready", || async {
        matches!(get(&setup.server.health_url("/readyz")).await, Ok((200, _)))
    })
    .await;
    api.create_dgd(dgd("team-x", "fresh", Some("default/fresh")));
    let answer = setup.mutate(pod_review("team-x", "fresh")).await;
    assert!(patched(&answer), "{}", answer.json);
    let gets = |name: &str| {
        let path = format!(
            "GET /apis/nvidia.com/v1alpha1/namespaces/team-x/dynamographdeployments/{name}"
        );
        api.requests()
            .iter()
            .filter(|r| r.starts_with(&path))
            .count()
    };
    assert_eq!(gets("fresh"), 1);
    // Found once, it is cached: no second GET.
    setup.mutate(pod_review("team-x", "fresh")).await;
    assert_eq!(gets("fresh"), 1);

    // Unknown even after the GET: admitted unchanged with DT014.
    let answer = setup.mutate(pod_review("team-x", "ghost")).await;
    assert_eq!(answer.json["response"]["allowed"], true);
    assert!(!patched(&answer));
    assert!(
        answer.json["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("[DT014]")
    );
    assert_eq!(gets("ghost"), 1);

    // The API server failing or hanging never blocks the pod, and the answer beats the deadline.
    api.fail_next(
        "GET",
        "/apis/nvidia.com/v1alpha1/namespaces/team-x/dynamographdeployments/broken",
        500,
        10,
    );
    let answer = setup.mutate(pod_review("team-x", "broken")).await;
    assert_eq!(answer.json["response"]["allowed"], true, "{}", answer.json);
    api.set_delay(
        "GET",
        "/apis/nvidia.com/v1alpha1/namespaces/team-x/dynamographdeployments/slow",
        Duration::from_secs(20),
    );
    let started = Instant::now();
    let answer = post(
        &setup.client,
        &setup.server.url("/mutate?timeout=2s"),
        pod_review("team-x", "slow"),
    )
    .await
    .unwrap();
    assert_eq!(answer.json["response"]["allowed"], true, "{}", answer.json);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

/// Not a CI test: `bench/load.sh` runs it (release build) to report the server's memory with
/// 10,000 DGDs received through the real list and watch path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn rss_with_10000_dgds_from_the_watch() {
    let api = FakeApi::start().await;
    let upstream: Value = {
        let text =
            std::fs::read_to_string(shared("upstream/dynamo/examples-vllm__agg.yaml")).unwrap();
        let docs = dynamo_tenancy::documents::parse_documents(&text).unwrap();
        docs.into_iter()
            .find(|d| d.value["kind"] == "DynamoGraphDeployment")
            .unwrap()
            .value
    };
    for i in 0..10_000 {
        let mut obj = upstream.clone();
        obj["metadata"] = json!({
            "name": format!("dgd-{i}"),
            "namespace": format!("ns-{}", i % 100),
            "annotations": {"nvidia.com/dynamo-namespace-path": format!("default/team-{}/model-{i}", i % 7)},
        });
        obj["spec"]["dynamoNamespace"] = json!(format!("default/team-{}/model-{i}", i % 7));
        api.create_dgd(obj);
    }
    let setup = start(&api, &[]).await;
    let empty = FakeApi::start().await;
    let baseline = start(&empty, &[]).await;
    for server in [&setup.server, &baseline.server] {
        eventually(Duration::from_secs(60), "ready", || async {
            matches!(get(&server.health_url("/readyz")).await, Ok((200, _)))
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, metrics) = get(&setup.server.health_url("/metrics")).await.unwrap();
    assert!(metrics.contains("dynamo_tenancy_cache_dgds 10000"));
    println!(
        "RSS with 10,000 DGDs from the watch: {:.1} MiB (peak {:.1} MiB); with none: {:.1} MiB",
        setup.server.memory_kib("VmRSS") as f64 / 1024.0,
        setup.server.memory_kib("VmHWM") as f64 / 1024.0,
        baseline.server.memory_kib("VmRSS") as f64 / 1024.0,
    );
}
