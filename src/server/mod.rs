//! `dynamo-tenancy serve`: the admission webhook (SPEC section 8). Wires the engine, the cache,
//! TLS and the health port together, and shuts down gracefully.

pub mod app;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cache::DgdCache;
use crate::cache::lookup::LiveLookup;
use crate::claims::Claims;
use crate::engine::Policy;
use app::AppState;
use health::Health;
use metrics::Metrics;
use tls::CertStore;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generated at start; the CA is written to `dir/ca.crt`.
    Generated {
        dir: PathBuf,
    },
}

/// Where the view of existing DGDs comes from.
#[derive(Debug, Clone)]
pub enum Cluster {
    /// A watch through kube's usual configuration (or `kubeconfig`).
    Kube {
        kubeconfig: Option<PathBuf>,
        namespaces: Vec<String>,
        /// Claim paths through the API server (SPEC section 7).
        claims: bool,
        /// How often the collector frees claims whose DGD is gone; zero turns it off.
        claim_sweep: Duration,
    },
    /// `serve --dev`: no cluster; the DGDs this server admitted (after `seed`) are the registry.
    Dev { seed: crate::engine::DgdIndex },
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub health_listen: SocketAddr,
    pub tls: TlsSource,
    pub client_ca: Option<PathBuf>,
    pub cluster: Cluster,
    pub policy: Policy,
    /// Backstop re-read of the certificate files.
    pub cert_poll: Duration,
    /// After SIGTERM: keep serving (with `Connection: close`) while endpoints update.
    pub drain_delay: Duration,
    /// After SIGTERM: exit by then, whatever is still open.
    pub shutdown_grace: Duration,
    /// Reviews answered at once; more are refused with 503 and `Retry-After`.
    pub max_in_flight: usize,
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(config: ServeConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(serve(config))
}

async fn bind(addr: SocketAddr, flag: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{flag} {addr}: {e}"))
}

/// `serve --dev`: a CA and a certificate for localhost, the CA written where curl can find it.
fn dev_certificate(dir: &Path, metrics: Arc<Metrics>) -> Result<Arc<CertStore>, String> {
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let pair = crate::certs::generate("dynamo-tenancy dev CA", &names, 30)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("--dev-dir {}: {e}", dir.display()))?;
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, &pair.ca_cert_pem).map_err(|e| format!("{}: {e}", ca.display()))?;
    CertStore::from_pem(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes(), metrics)
}

async fn kube_client(kubeconfig: Option<&Path>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("no cluster configuration ({e}); pass --kubeconfig, run in a pod, or use --dev")
        })?,
    };
    Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

async fn serve(config: ServeConfig) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new());
    let dev = matches!(config.cluster, Cluster::Dev { .. });
    let certs = match &config.tls {
        TlsSource::Files { cert, key } => CertStore::from_files(cert, key, metrics.clone())?,
        TlsSource::Generated { dir } => dev_certificate(dir, metrics.clone())?,
    };
    let tls_config = tls::server_config(certs.clone(), config.client_ca.as_deref())?;
    let https = bind(config.listen, "--listen").await?;
    let health_listener = bind(config.health_listen, "--health-listen").await?;
    let https_addr = https.local_addr().map_err(|e| format!("--listen: {e}"))?;
    let health_addr = health_listener
        .local_addr()
        .map_err(|e| format!("--health-listen: {e}"))?;

    let mut background = Vec::new();
    let (cache, lookup, claims) = match config.cluster {
        Cluster::Dev { seed } => (Arc::new(DgdCache::synced_with(seed)), None, None),
        Cluster::Kube {
            kubeconfig,
            namespaces,
            claims,
            claim_sweep,
        } => {
            let client = kube_client(kubeconfig.as_deref()).await?;
            let cache = Arc::new(DgdCache::new());
            background.push(tokio::spawn(crate::cache::watch::run(
                client.clone(),
                namespaces.clone(),
                cache.clone(),
            )));
            if claims && !claim_sweep.is_zero() {
                background.push(tokio::spawn(crate::claims::collector::run(
                    client.clone(),
                    cache.clone(),
                    metrics.clone(),
                    namespaces,
                    claim_sweep,
                )));
            }
            let claims =
                claims.then(|| Claims::new(client.clone(), cache.clone(), metrics.clone()));
            (cache, Some(LiveLookup::new(client)), claims)
        }
    };

    let draining = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let health = Arc::new(Health {
        cache: cache.clone(),
        metrics: metrics.clone(),
        cert_loaded: Arc::new(AtomicBool::new(true)),
        draining: draining.clone(),
    });
    let health_server = tokio::spawn(async move {
        if let Err(err) = axum::serve(health_listener, health::router(health)).await {
            tracing::error!(error = %err, "health port failed");
        }
    });
    let cert_watch = tokio::spawn(tls::watch_files(
        certs.clone(),
        config.cert_poll,
        stop_rx.clone(),
    ));
    let state = Arc::new(AppState {
        cache,
        policy: config.policy.clone(),
        metrics,
        lookup,
        claims,
        dev_registry: dev,
        draining: draining.clone(),
        max_in_flight: config.max_in_flight,
    });
    let accepting = tokio::spawn(listener::accept_until(
        https,
        tls_config,
        app::router(state),
        stop_rx,
    ));

    tracing::info!(listen = %https_addr, health = %health_addr, dev, "serving");
    if dev {
        eprintln!("dynamo-tenancy: dev mode: no cluster; the DGDs admitted here are the registry");
    }
    // A stable line for people and scripts (tests read the ports from it when given port 0).
    eprintln!("dynamo-tenancy: serving https://{https_addr} (health http://{health_addr})");
    if let TlsSource::Generated { dir } = &config.tls {
        let ca = dir.join("ca.crt");
        let port = https_addr.port();
        eprintln!(
            "dynamo-tenancy: self-signed certificate for localhost; CA: {ca}\n  try: curl --cacert {ca} -H 'Content-Type: application/json' --data-binary @examples/reviews/dgd-create.json https://localhost:{port}/validate",
            ca = ca.display()
        );
    }

    let signal = shutdown_signal().await;
    let started = Instant::now();
    draining.store(true, Ordering::Relaxed);
    tracing::info!(signal, drain_delay = ?config.drain_delay, grace = ?config.shutdown_grace, "shutting down: not ready, draining");
    tokio::time::sleep(config.drain_delay.min(config.shutdown_grace)).await;
    let _ = stop_tx.send(true);
    let graceful = accepting.await.map_err(|e| format!("listener task: {e}"))?;
    let remaining = config.shutdown_grace.saturating_sub(started.elapsed());
    match tokio::time::timeout(remaining, graceful.shutdown()).await {
        Ok(()) => tracing::info!(elapsed = ?started.elapsed(), "all connections closed"),
        Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
    }
    cert_watch.abort();
    health_server.abort();
    for task in background {
        task.abort();
    }
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
