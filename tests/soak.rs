//! Not a CI test: `bench/soak.sh` runs it on a release build. Ten minutes (`SOAK_SECONDS`) of
//! Pod reviews at a fixed rate (`SOAK_RPS`, half of capacity) through h2load, in back-to-back
//! runs that each open new connections, while the serving certificate is rotated by the kubelet's
//! `..data` symlink swap every 30 s and the fake API server creates and deletes a DGD every
//! second (each one first claimed through the webhook). Passes with zero failed requests and an
//! RSS that does not grow.

mod common;
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hyper::Version;
use support::FakeApi;
use support::webhook::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default, Debug)]
struct Tally {
    done: u64,
    succeeded: u64,
    failed: u64,
    errored: u64,
    non_2xx: u64,
}

/// Runs h2load for `secs` and adds its counts.
fn h2load(url: &str, body: &PathBuf, rps: u64, secs: u64, tally: &mut Tally) {
    let clients = 8;
    let out = Command::new("h2load")
        .args(["-t", "1", "-c", &clients.to_string(), "-m", "1"])
        .args(["--rps", &(rps / clients).max(1).to_string()])
        .args(["-D", &secs.to_string()])
        .args(["-H", "content-type: application/json"])
        .arg("--data")
        .arg(body)
        .arg(url)
        .output()
        .expect("h2load runs (Debian's nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let number = |line: &str, word: &str| -> u64 {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        words
            .iter()
            .position(|w| *w == word)
            .and_then(|i| words.get(i.wrapping_sub(1)))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let requests = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("h2load printed no summary:\n{text}"));
    tally.done += number(requests, "done");
    tally.succeeded += number(requests, "succeeded");
    tally.failed += number(requests, "failed");
    tally.errored += number(requests, "errored");
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap();
    tally.non_2xx += number(codes, "3xx") + number(codes, "4xx") + number(codes, "5xx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn soak() {
    let seconds = env_or("SOAK_SECONDS", 600);
    let rps = env_or("SOAK_RPS", 4000);
    let body = PathBuf::from(std::env::var("SOAK_BODY").expect("SOAK_BODY: a Pod review file"));
    let api = FakeApi::start().await;
    api.create_dgd(dgd("team-a", "llama", Some("default/llama")));

    let dir = TempDir::new("soak");
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let ca = dynamo_tenancy::certs::generate("soak CA", &["localhost".to_owned()], 1).unwrap();
    write_secret_volume(&secret, "..gen-0", &ca);
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let server = Server::start(&[
        "--tls-cert",
        secret.join("tls.crt").to_str().unwrap(),
        "--tls-key",
        secret.join("tls.key").to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--claim-sweep",
        "30s",
    ]);
    let setup = Setup {
        dir,
        client: client(&[ca.ca_cert_pem.as_bytes()], Version::HTTP_2),
        server,
    };
    setup.ready().await;
    let url = setup.server.url("/mutate?timeout=5s");

    // DGD churn: one created (after its claim) and one deleted every second.
    let churn_api = api.clone();
    let churn_client = setup.client.clone();
    let validate_url = setup.server.url("/validate?timeout=5s");
    let churn = tokio::spawn(async move {
        let mut denied = 0u64;
        for i in 0u64.. {
            let (name, path) = (format!("churn-{i}"), format!("default/churn-{i}"));
            let answer = post(
                &churn_client,
                &validate_url,
                create_review("team-c", &name, &path),
            )
            .await
            .unwrap();
            if answer.json["response"]["allowed"] != true {
                denied += 1;
                eprintln!("churn {name} denied: {}", answer.json);
            }
            churn_api.create_dgd(dgd("team-c", &name, Some(&path)));
            if i >= 10 {
                churn_api.delete_dgd("team-c", &format!("churn-{}", i - 10));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if denied > 0 {
                return denied;
            }
        }
        denied
    });
    // Certificate rotation every 30 s, by the kubelet's symlink swap.
    let rotate_dir = secret.clone();
    let rotation = tokio::spawn(async move {
        for generation in 1u64.. {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let pair =
                dynamo_tenancy::certs::generate("soak CA", &["localhost".to_owned()], 1).unwrap();
            write_secret_volume(&rotate_dir, &format!("..gen-{generation}"), &pair);
        }
    });

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut rss: Vec<(u64, u64)> = Vec::new();
    println!(
        "{:>6} {:>10} {:>8} {:>9} {:>8}",
        "t (s)", "requests", "failed", "RSS KiB", "leases"
    );
    while started.elapsed() < Duration::from_secs(seconds) {
        let left = seconds
            .saturating_sub(started.elapsed().as_secs())
            .clamp(1, 30);
        let (url, body) = (url.clone(), body.clone());
        tally = tokio::task::spawn_blocking(move || {
            h2load(&url, &body, rps, left, &mut tally);
            tally
        })
        .await
        .unwrap();
        let t = started.elapsed().as_secs();
        let kib = setup.server.memory_kib("VmRSS");
        rss.push((t, kib));
        println!(
            "{t:>6} {:>10} {:>8} {kib:>9} {:>8}",
            tally.done,
            tally.failed + tally.errored + tally.non_2xx,
            api.leases("team-c").len()
        );
    }
    rotation.abort();
    churn.abort();
    let metrics = setup.metrics().await;
    let reloads = metrics
        .lines()
        .find(|l| l.starts_with("dynamo_tenancy_certificate_reloads_total{result=\"success\"}"))
        .unwrap_or("none")
        .to_owned();
    let peak = setup.server.memory_kib("VmHWM");
    println!(
        "total: {} requests, {} succeeded, {} failed, {} errored, {} non-2xx; {reloads}; peak RSS {peak} KiB",
        tally.done, tally.succeeded, tally.failed, tally.errored, tally.non_2xx
    );
    assert_eq!(tally.failed + tally.errored + tally.non_2xx, 0, "{tally:?}");
    assert!(tally.succeeded > 0);
    // RSS after warm-up (the second sample) against the last: no growth beyond noise.
    if rss.len() >= 3 {
        let (early, last) = (rss[1].1, rss[rss.len() - 1].1);
        println!("RSS after warm-up {early} KiB, at the end {last} KiB");
        assert!(last <= early + early / 5 + 4096, "RSS grew: {rss:?}");
    }
}
