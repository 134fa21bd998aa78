//! The floor for `bench/compare.sh`: the least an admission webhook on this stack can do. It
//! terminates TLS with rustls (ring), speaks HTTP/1.1 or HTTP/2 by ALPN through hyper-util with the
//! same settings as `src/server/listener.rs`, routes `POST /mutate` and `POST /validate` through
//! axum, reads the whole body, and answers a fixed AdmissionReview that allows. No JSON parsing,
//! no engine, no metrics, no logging: whatever the real server costs above this is ours to explain.
//!
//! `cargo run --release --example floor -- --listen 127.0.0.1:18443`
//! (`--tls-cert`/`--tls-key` to serve a PEM pair instead of a generated one).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use clap::Parser;
use dynamo_tenancy::server::listener::http_builder;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The one answer: allowed, with a fixed uid (the load tool does not check it).
const ALLOW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

/// The real server's body limit (`src/server/app.rs`), so both read bodies under the same rule.
const MAX_BODY: usize = 7 * 1024 * 1024;

#[derive(Parser)]
#[command(
    about = "Minimal TLS + HTTP/2 admission server answering a fixed allow (benchmark floor)"
)]
struct Args {
    /// HTTPS address.
    #[arg(long, default_value = "127.0.0.1:18443")]
    listen: SocketAddr,
    /// PEM certificate chain; without it (and --tls-key), one is generated for localhost.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Reads the whole body (the extractor collects it), then answers the fixed allow.
async fn allow(_body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], ALLOW)
}

/// The PEM pair: from the files, or generated like `serve --dev` does.
fn certificate(args: &Args) -> Result<(String, String), String> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
            };
            Ok((read(cert)?, read(key)?))
        }
        _ => {
            let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
            let pair = dynamo_tenancy::certs::generate("floor CA", &names, 1)?;
            Ok((pair.cert_pem, pair.key_pem))
        }
    }
}

/// TLS 1.3 and 1.2, ALPN h2 then http/1.1, as `src/server/tls.rs` sets up.
fn tls_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key: {e}"))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("TLS: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let (cert_pem, key_pem) = certificate(&args)?;
    let acceptor = TlsAcceptor::from(tls_config(&cert_pem, &key_pem)?);
    let app = Router::new()
        .route("/mutate", post(allow))
        .route("/validate", post(allow))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    let builder = Arc::new(http_builder());
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    eprintln!("floor: listening on https://{}", args.listen);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, builder) = (acceptor.clone(), builder.clone());
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            }
        });
    }
}
