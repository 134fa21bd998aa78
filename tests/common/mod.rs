//! Shared by the server tests: start the real binary and talk to it over TLS as the API server
//! does (HTTP/1.1 or HTTP/2 by ALPN, the webhook's CA as the only trust root).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

pub fn shared(path: &str) -> PathBuf {
    std::env::var_os("DYNAMO_TENANCY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join(path)
}

pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("dynamo-tenancy-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary, running `serve` on ephemeral ports; killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub https: String,
    pub health: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `dynamo-tenancy serve ARGS --listen 127.0.0.1:0 --health-listen 127.0.0.1:0` and
    /// waits for its "serving" line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dynamo-tenancy"))
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("dynamo-tenancy: serving https://")
                    && let Some(tx) = tx.take()
                {
                    let https = rest.split_whitespace().next().unwrap().to_owned();
                    let health = rest
                        .split("(health http://")
                        .nth(1)
                        .unwrap()
                        .trim_end_matches(')')
                        .to_owned();
                    let _ = tx.send((https, health));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (https, health) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child: Some(child),
            https,
            health,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", port(&self.https))
    }

    pub fn health_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.health)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Resident memory of the server process, in KiB (`VmRSS`, or `VmHWM` for the peak).
    pub fn memory_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap()
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
            .unwrap()
    }

    pub fn sigterm(&self) {
        let pid = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > limit {
                panic!("server still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

pub type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

pub fn roots(ca_pems: &[&[u8]]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    roots
}

/// A client that trusts only `ca_pems` and speaks `version` (HTTP/1.1 or HTTP/2 by ALPN).
pub fn client(ca_pems: &[&[u8]], version: Version) -> HttpsClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots(ca_pems))
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    // As the API server's client does: without TCP_NODELAY, Nagle's algorithm and delayed ACKs
    // hold small requests back by about 40 ms.
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let connector = if version == Version::HTTP_2 {
        builder.enable_http2().wrap_connector(tcp)
    } else {
        builder.enable_http1().wrap_connector(tcp)
    };
    let mut client = Client::builder(TokioExecutor::new());
    if version == Version::HTTP_2 {
        client.http2_only(true);
    }
    client.build(connector)
}

pub struct Answer {
    pub status: StatusCode,
    pub version: Version,
    pub headers: hyper::HeaderMap,
    pub json: Value,
}

/// POSTs `body` as JSON to `url`.
pub async fn post(client: &HttpsClient, url: &str, body: Vec<u8>) -> Result<Answer, String> {
    post_typed(client, url, body, "application/json").await
}

pub async fn post_typed(
    client: &HttpsClient,
    url: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<Answer, String> {
    send(
        client,
        url,
        Full::new(Bytes::from(body)).boxed(),
        content_type,
    )
    .await
}

/// POSTs any body (e.g. one that trickles in slowly).
pub async fn send(
    client: &HttpsClient,
    url: &str,
    body: Body,
    content_type: &str,
) -> Result<Answer, String> {
    let request = Request::post(url)
        .header("content-type", content_type)
        .body(body)
        .unwrap();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let version = response.version();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let json = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{status}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    Ok(Answer {
        status,
        version,
        headers,
        json,
    })
}

/// A plain-HTTP GET (the health port); returns status and body.
pub async fn get(url: &str) -> Result<(u16, String), String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(url.parse().unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The request of a review file with a fresh uid and, optionally, another object name.
pub fn review_with(path: &Path, uid: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    review["request"]["uid"] = Value::from(uid);
    edit(&mut review);
    serde_json::to_vec(&review).unwrap()
}

pub fn denial_rule(answer: &Answer) -> Option<String> {
    let response = &answer.json["response"];
    if response["allowed"] == true {
        return None;
    }
    response["status"]["message"]
        .as_str()
        .and_then(|m| m.get(1..6))
        .map(str::to_owned)
}

/// The kubelet's layout of a mounted Secret: files are links through `..data`, which is swapped
/// atomically to a new timestamped directory.
pub fn write_secret_volume(
    dir: &std::path::Path,
    generation: &str,
    pair: &dynamo_tenancy::certs::GeneratedPair,
) {
    let target = dir.join(generation);
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(target.join("tls.key"), &pair.key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(generation, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}
