//! The real binary serving over TLS, talked to as the API server talks to it.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::Version;
use hyper::body::Frame;
use serde_json::Value;

fn dev_server(dir: &TempDir, extra: &[&str]) -> (Server, Vec<u8>) {
    let dev_dir = dir.path().join("dev");
    let mut args = vec!["--dev", "--dev-dir", dev_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let ca = std::fs::read(dev_dir.join("ca.crt")).expect("--dev writes ca.crt");
    (server, ca)
}

fn example(name: &str) -> std::path::PathBuf {
    repo(&format!("examples/reviews/{name}"))
}

fn patch_of(answer: &Answer) -> Value {
    use base64::Engine as _;
    let encoded = answer.json["response"]["patch"].as_str().expect("a patch");
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_give_the_engines_verdicts() {
    let dir = TempDir::new("verdicts");
    let (server, ca) = dev_server(&dir, &[]);
    for (i, version) in [Version::HTTP_11, Version::HTTP_2].into_iter().enumerate() {
        let client = client(&[&ca], version);
        let ns = format!("team-{i}");
        let in_ns = |review: &mut Value| {
            review["request"]["namespace"] = Value::from(ns.clone());
            review["request"]["object"]["metadata"]["namespace"] = Value::from(ns.clone());
        };
        let dgd = review_with(&example("dgd-create.json"), "u-mutate", in_ns);
        let mutated = post(&client, &server.url("/mutate?timeout=5s"), dgd.clone())
            .await
            .unwrap();
        assert_eq!(mutated.version, version);
        assert_eq!(mutated.status, 200);
        assert_eq!(mutated.json["response"]["uid"], "u-mutate");
        assert_eq!(mutated.json["response"]["allowed"], true);
        assert_eq!(mutated.json["response"]["patchType"], "JSONPatch");
        let ops = patch_of(&mutated);
        assert!(
            ops.as_array()
                .unwrap()
                .iter()
                .any(|op| op["path"] == "/spec/dynamoNamespace"
                    && op["value"] == "default/llama/fast"),
            "{ops}"
        );

        // /validate admits it and, in dev mode, records it.
        let validated = post(&client, &server.url("/validate?timeout=5s"), dgd)
            .await
            .unwrap();
        assert_eq!(
            validated.json["response"]["allowed"], true,
            "{}",
            validated.json
        );

        // Another DGD at the same path in the same k8s namespace: DT003.
        let clash = review_with(&example("dgd-create.json"), "u-clash", |review| {
            in_ns(review);
            review["request"]["name"] = Value::from("llama-2");
            review["request"]["object"]["metadata"]["name"] = Value::from("llama-2");
            review["request"]["object"]["metadata"]["uid"] = Value::from("another-uid");
        });
        let denied = post(&client, &server.url("/validate?timeout=5s"), clash)
            .await
            .unwrap();
        assert_eq!(denied.status, 200);
        assert_eq!(
            denial_rule(&denied).as_deref(),
            Some("DT003"),
            "{}",
            denied.json
        );

        // Its pods are told their namespace.
        let pod = review_with(&example("pod-create.json"), "u-pod", |review| {
            review["request"]["namespace"] = Value::from(ns.clone());
        });
        let pod = post(&client, &server.url("/mutate?timeout=5s"), pod)
            .await
            .unwrap();
        let ops = patch_of(&pod);
        assert!(
            ops.as_array()
                .unwrap()
                .iter()
                .any(|op| op["value"]["name"] == "DYN_NAMESPACE"
                    && op["value"]["value"] == format!("{ns}--llama--fast")),
            "{ops}"
        );

        // A DELETE frees the path.
        let delete = review_with(&example("dgd-create.json"), "u-delete", |review| {
            in_ns(review);
            let object = review["request"]["object"].take();
            review["request"]["operation"] = Value::from("DELETE");
            review["request"]["oldObject"] = object;
        });
        let deleted = post(&client, &server.url("/validate"), delete)
            .await
            .unwrap();
        assert_eq!(deleted.json["response"]["allowed"], true);
        let retry = review_with(&example("dgd-create.json"), "u-retry", |review| {
            in_ns(review);
            review["request"]["name"] = Value::from("llama-2");
            review["request"]["object"]["metadata"]["name"] = Value::from("llama-2");
        });
        let allowed = post(&client, &server.url("/validate"), retry)
            .await
            .unwrap();
        assert_eq!(
            allowed.json["response"]["allowed"], true,
            "{}",
            allowed.json
        );
    }
    let (_, metrics) = get(&server.health_url("/metrics")).await.unwrap();
    assert!(
        metrics.contains(r#"dynamo_tenancy_admission_requests_total{endpoint="validate",kind="DynamoGraphDeployment",operation="CREATE",verdict="denied"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("dynamo_tenancy_admission_duration_seconds_bucket{le=\"0.0001\""));
    assert!(metrics.contains("dynamo_tenancy_certificate_expiry_timestamp_seconds"));
    let log = server.log_text();
    assert!(log.contains("u-clash") && log.contains("DT003"), "{log}");
    assert!(
        !log.contains("nvcr.io"),
        "request bodies must not be logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_a_json_status() {
    let dir = TempDir::new("bad");
    let (server, ca) = dev_server(&dir, &[]);
    let client = client(&[&ca], Version::HTTP_2);
    let url = server.url("/validate?timeout=5s");
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (
            vec![b' '; 8 * 1024 * 1024],
            "application/json",
            413,
            "larger than",
        ),
        (
            b"{\"apiVersion\": ".to_vec(),
            "application/json",
            400,
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            "application/json",
            400,
            "no \"request\"",
        ),
        (
            std::fs::read(example("dgd-create.json")).unwrap(),
            "text/plain",
            400,
            "Content-Type",
        ),
        (
            review_with(&example("dgd-create.json"), "u", |r| {
                r["request"]["object"] = Value::Null
            }),
            "application/json; charset=utf-8",
            400,
            "\"object\"",
        ),
    ];
    for (body, content_type, status, text) in cases {
        let answer = post_typed(&client, &url, body, content_type).await.unwrap();
        assert_eq!(answer.status, status, "{}", answer.json);
        assert_eq!(answer.json["kind"], "Status");
        assert_eq!(answer.json["code"], status);
        let message = answer.json["message"].as_str().unwrap();
        assert!(message.contains(text), "{message}");
    }
    // The server lives on.
    let (status, _) = get(&server.health_url("/healthz")).await.unwrap();
    assert_eq!(status, 200);
    let (_, metrics) = get(&server.health_url("/metrics")).await.unwrap();
    assert!(
        metrics.contains(r#"dynamo_tenancy_admission_bad_requests_total{endpoint="validate"} 5"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_unknown_ca_are_refused() {
    let dir = TempDir::new("plain");
    let (server, ca) = dev_server(&dir, &[]);
    let plain = format!("http://{}/mutate", server.https);
    let client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = hyper::Request::post(&plain)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(b"{}")).boxed())
        .unwrap();
    let answer = client.request(request).await;
    assert!(
        answer.is_err() || answer.as_ref().unwrap().status().is_client_error(),
        "plain HTTP was served"
    );
    // A client that does not trust the dev CA cannot complete the handshake.
    let other = dynamo_tenancy::certs::generate("other", &["localhost".into()], 1).unwrap();
    let stranger = common::client(&[other.ca_cert_pem.as_bytes()], Version::HTTP_11);
    assert!(
        post(&stranger, &server.url("/mutate"), b"{}".to_vec())
            .await
            .is_err()
    );
    // And the trusted one still works.
    let trusted = common::client(&[&ca], Version::HTTP_11);
    let answer = post(
        &trusted,
        &server.url("/mutate"),
        std::fs::read(example("pod-create.json")).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
}

/// A body that arrives in 10 pieces over `over`.
fn trickle(body: Vec<u8>, over: Duration) -> Body {
    let pieces: Vec<Bytes> = body
        .chunks(body.len().div_ceil(10))
        .map(Bytes::copy_from_slice)
        .collect();
    let step = over / pieces.len() as u32;
    let stream = futures::stream::iter(pieces).then(move |piece| async move {
        tokio::time::sleep(step).await;
        Ok::<_, Infallible>(Frame::data(piece))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_at_once_and_lets_50_in_flight_requests_finish() {
    let dir = TempDir::new("sigterm");
    let (mut server, ca) = dev_server(&dir, &["--drain-delay", "1s", "--shutdown-grace", "6s"]);
    let (status, _) = get(&server.health_url("/readyz")).await.unwrap();
    assert_eq!(status, 200);
    let body = std::fs::read(example("pod-create.json")).unwrap();
    let mut in_flight = Vec::new();
    for i in 0..50 {
        // Half over HTTP/2 (one connection per client), half over HTTP/1.1.
        let version = if i % 2 == 0 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let client = client(&[&ca], version);
        let url = server.url("/mutate?timeout=10s");
        let body = trickle(body.clone(), Duration::from_millis(1500));
        in_flight.push(tokio::spawn(async move {
            send(&client, &url, body, "application/json").await
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.sigterm();
    let signalled = Instant::now();
    eventually(
        Duration::from_millis(500),
        "/readyz fails after SIGTERM",
        || async { matches!(get(&server.health_url("/readyz")).await, Ok((503, _))) },
    )
    .await;
    let (status, _) = get(&server.health_url("/healthz")).await.unwrap();
    assert_eq!(status, 200, "still alive while draining");
    let mut failures = Vec::new();
    for request in in_flight {
        match request.await.unwrap() {
            Ok(answer) if answer.status == 200 && answer.json["response"]["allowed"] == true => {}
            Ok(answer) => failures.push(format!("{}: {}", answer.status, answer.json)),
            Err(err) => failures.push(err),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 50 failed: {failures:?}",
        failures.len()
    );
    let (code, _) = server.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "exit took {:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_http1_responses_say_connection_close() {
    let dir = TempDir::new("close");
    let (server, ca) = dev_server(&dir, &["--drain-delay", "3s"]);
    let client = client(&[&ca], Version::HTTP_11);
    let body = std::fs::read(example("pod-create.json")).unwrap();
    let before = post(&client, &server.url("/mutate"), body.clone())
        .await
        .unwrap();
    assert!(before.headers.get("connection").is_none());
    server.sigterm();
    eventually(Duration::from_secs(1), "readyz fails", || async {
        matches!(get(&server.health_url("/readyz")).await, Ok((503, _)))
    })
    .await;
    let during = post(&client, &server.url("/mutate"), body).await.unwrap();
    assert_eq!(during.status, 200);
    assert_eq!(during.headers.get("connection").unwrap(), "close");
}

/// The leaf certificate the server presents on a fresh connection.
async fn served_certificate(addr: &str, roots: rustls::RootCertStore) -> Vec<u8> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn leaf_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_by_symlink_swap_without_a_failed_request() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("rotate");
    let volume = dir.path().join("tls");
    std::fs::create_dir_all(&volume).unwrap();
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let old = dynamo_tenancy::certs::generate("old CA", &names, 1).unwrap();
    let new = dynamo_tenancy::certs::generate("new CA", &names, 2).unwrap();
    write_secret_volume(&volume, "..2026_12_03_00_00_00.1", &old);
    let cert = volume.join("tls.crt");
    let key = volume.join("tls.key");
    let server = Server::start(&[
        "--dev",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--cert-poll",
        "30s",
    ]);
    let both = [old.ca_cert_pem.as_bytes(), new.ca_cert_pem.as_bytes()];
    assert_eq!(
        served_certificate(&server.https, roots(&both)).await,
        leaf_der(&old.cert_pem)
    );

    // A client keeps requesting, over fresh connections and a kept-alive one, through the swap.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = std::fs::read(example("pod-create.json")).unwrap();
    let mut loops = Vec::new();
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let (stop, body, url) = (stop.clone(), body.clone(), server.url("/mutate"));
        let ca: Vec<Vec<u8>> = both.iter().map(|c| c.to_vec()).collect();
        loops.push(tokio::spawn(async move {
            let kept = common::client(&[&ca[0], &ca[1]], version);
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let fresh = common::client(&[&ca[0], &ca[1]], version);
                for client in [&kept, &fresh] {
                    match post(client, &url, body.clone()).await {
                        Ok(a) if a.status == 200 => ok += 1,
                        Ok(a) => failed.push(a.status.to_string()),
                        Err(e) => failed.push(e),
                    }
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A half-written pair first: refused, the old one kept.
    let broken = dynamo_tenancy::certs::GeneratedPair {
        ca_cert_pem: String::new(),
        cert_pem: new.cert_pem.clone(),
        key_pem: old.key_pem.clone(),
    };
    write_secret_volume(&volume, "..2026_12_03_00_01_00.1", &broken);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        served_certificate(&server.https, roots(&both)).await,
        leaf_der(&old.cert_pem)
    );
    let (_, metrics) = get(&server.health_url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("dynamo_tenancy_certificate_last_reload_success 0"),
        "{metrics}"
    );

    let swapped = Instant::now();
    write_secret_volume(&volume, "..2026_12_03_00_02_00.1", &new);
    eventually(
        Duration::from_secs(15),
        "the new certificate is served",
        || {
            let roots = roots(&both);
            let addr = server.https.clone();
            let want = leaf_der(&new.cert_pem);
            async move { served_certificate(&addr, roots).await == want }
        },
    )
    .await;
    let took = swapped.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for handle in loops {
        let (ok, failed) = handle.await.unwrap();
        assert!(ok > 10, "only {ok} requests went through");
        assert!(
            failed.is_empty(),
            "failed requests during rotation: {failed:?}"
        );
    }
    let (_, metrics) = get(&server.health_url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("dynamo_tenancy_certificate_last_reload_success 1"),
        "{metrics}"
    );
    assert!(took < Duration::from_secs(15));
    let log = server.log_text();
    assert!(
        !log.contains("PRIVATE KEY") && !log.contains("BEGIN CERTIFICATE"),
        "{log}"
    );
}

/// `certs` writes what the manifests' self-signed variant needs, and the server presents it as the
/// API server will check it: for the Service's DNS name, chained to the CA of `caBundle`.
#[tokio::test]
async fn certs_output_serves_the_service_dns_names() {
    use base64::Engine as _;
    use rustls::pki_types::ServerName;

    let dir = TempDir::new("certs-serve");
    let out = dir.path().join("certs");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_dynamo-tenancy"))
        .args(["certs", "--out", out.to_str().unwrap()])
        .args(["--service", "hook", "--namespace", "tenancy"])
        .status()
        .unwrap();
    assert!(status.success());
    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    let bundle = std::fs::read_to_string(out.join("caBundle")).unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(bundle.trim())
            .unwrap(),
        ca,
        "caBundle is the CA in base64"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }
    let (cert, key) = (out.join("tls.crt"), out.join("tls.key"));
    let server = Server::start(&[
        "--dev",
        "--dev-dir",
        dir.path().join("dev").to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots(&[&ca]))
            .with_no_client_auth(),
    );
    for name in [
        "hook",
        "hook.tenancy",
        "hook.tenancy.svc",
        "hook.tenancy.svc.cluster.local",
    ] {
        let tcp = tokio::net::TcpStream::connect(&server.https).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let name = ServerName::try_from(name.to_owned()).unwrap();
        connector
            .connect(name.clone(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
    }
    let tcp = tokio::net::TcpStream::connect(&server.https).await.unwrap();
    let other = ServerName::try_from("other.tenancy.svc").unwrap();
    let refused = tokio_rustls::TlsConnector::from(tls)
        .connect(other, tcp)
        .await;
    assert!(refused.is_err(), "a name outside the Service's is refused");
}
