//! Past `--max-in-flight`, reviews are shed at once with 503 and `Retry-After` (so the API
//! server applies the failurePolicy now, not after its timeout), and the server recovers.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::*;
use support::FakeApi;
use support::webhook::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_capacity_reviews_are_shed_at_once() {
    let api = FakeApi::start().await;
    api.create_dgd(dgd("team-x", "llama", Some("default/llama")));
    let setup = start(&api, &["--max-in-flight", "2"]).await;
    setup.ready().await;
    // Two DGD CREATEs whose claims hang at the API server hold both slots.
    api.set_delay(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/team-x/leases",
        Duration::from_secs(2),
    );
    let slow = futures::future::join_all([
        setup.validate(create_review("team-x", "a", "default/a")),
        setup.validate(create_review("team-x", "b", "default/b")),
    ]);
    let probe = async {
        eventually(WAIT, "two reviews in flight", || async {
            setup
                .metrics()
                .await
                .contains("dynamo_tenancy_admission_in_flight 2")
        })
        .await;
        let started = Instant::now();
        let shed = post(
            &setup.client,
            &setup.server.url("/mutate?timeout=5s"),
            pod_review("team-x", "llama"),
        )
        .await
        .unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "shedding took {took:?}");
        assert_eq!(shed.status, 503, "{}", shed.json);
        assert_eq!(shed.headers["retry-after"], "1");
        assert_eq!(shed.json["kind"], "Status");
        assert!(
            shed.json["message"]
                .as_str()
                .unwrap()
                .contains("at capacity")
        );
        // Health and metrics are on their own port and never shed.
        assert!(matches!(
            get(&setup.server.health_url("/healthz")).await,
            Ok((200, _))
        ));
    };
    let (slow, ()) = tokio::join!(slow, probe);
    for answer in slow {
        assert_eq!(answer.json["response"]["allowed"], true, "{}", answer.json);
    }
    let answer = setup.mutate(pod_review("team-x", "llama")).await;
    assert!(patched(&answer), "{}", answer.json);
    let metrics = setup.metrics().await;
    assert!(
        metrics.contains("dynamo_tenancy_admission_shed_total 1"),
        "{metrics}"
    );
}
