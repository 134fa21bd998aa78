//! The serving certificate: loaded from PEM files and swapped in place when they change, in the way
//! of controller-runtime's certwatcher: a file watch on the directories (which sees the kubelet's
//! atomic `..data` symlink swap of a mounted Secret) plus a periodic re-read as a backstop. A pair
//! that does not load (half-written, mismatched, expired garbage) is refused and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch;

use super::metrics::Metrics;

/// A loaded pair and when its leaf certificate expires (Unix seconds).
struct Loaded {
    key: Arc<CertifiedKey>,
    not_after: i64,
}

/// The certificate the TLS handshake hands out; replaced atomically on reload.
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    source: Option<(PathBuf, PathBuf)>,
    /// The bytes last loaded (or refused), so a poll that finds the same files does nothing.
    last_seen: Mutex<(Vec<u8>, Vec<u8>)>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("source", &self.source)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Parses a certificate chain and its private key, and checks that they belong together.
fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let leaf = chain
        .first()
        .ok_or("certificate file holds no PEM certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let not_after = parsed.validity().not_after.timestamp();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("private key: {e}"))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(Loaded {
        key: Arc::new(certified),
        not_after,
    })
}

impl CertStore {
    /// Loads the pair from files; the files are watched by [`watch_files`].
    pub fn from_files(cert: &Path, key: &Path, metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        let cert_pem =
            std::fs::read(cert).map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        let key_pem =
            std::fs::read(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        let loaded = load_pair(&cert_pem, &key_pem)
            .map_err(|e| format!("--tls-cert/--tls-key {}: {e}", cert.display()))?;
        metrics.cert_loaded(loaded.not_after);
        Ok(Arc::new(CertStore {
            current: RwLock::new(loaded.key),
            source: Some((cert.to_owned(), key.to_owned())),
            last_seen: Mutex::new((cert_pem, key_pem)),
            metrics,
        }))
    }

    /// A fixed pair held in memory (`serve --dev`).
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let loaded = load_pair(cert_pem, key_pem)?;
        metrics.cert_loaded(loaded.not_after);
        Ok(Arc::new(CertStore {
            current: RwLock::new(loaded.key),
            source: None,
            last_seen: Mutex::new((cert_pem.to_vec(), key_pem.to_vec())),
            metrics,
        }))
    }

    /// Re-reads the files. A pair that does not load leaves the current one in place.
    pub fn reload(&self) {
        let Some((cert, key)) = &self.source else {
            return;
        };
        let read = std::fs::read(cert).and_then(|c| std::fs::read(key).map(|k| (c, k)));
        let (cert_pem, key_pem) = match read {
            Ok(pair) => pair,
            Err(err) => {
                // Mid-swap a file can be missing for an instant; the next event or poll retries.
                tracing::debug!(error = %err, "certificate files not readable yet");
                return;
            }
        };
        let mut last = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        if last.0 == cert_pem && last.1 == key_pem {
            return;
        }
        match load_pair(&cert_pem, &key_pem) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded.key;
                self.metrics.cert_loaded(loaded.not_after);
                self.metrics.cert_reload(true);
                tracing::info!(cert = %cert.display(), not_after = loaded.not_after, "serving certificate reloaded");
            }
            Err(err) => {
                self.metrics.cert_reload(false);
                tracing::warn!(cert = %cert.display(), error = %err, "new certificate refused; keeping the current one");
            }
        }
        *last = (cert_pem, key_pem);
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// TLS 1.2 and 1.3, ALPN h2 then http/1.1, and the API server's client certificate when
/// `client_ca` is given.
pub fn server_config(
    store: Arc<CertStore>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("--client-ca {}: {e}", path.display()))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("--client-ca {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--client-ca {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--client-ca {}: no PEM certificate in the file",
                    path.display()
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("--client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reloads the pair on any change in the directories holding the files, and every `poll` as a
/// backstop (some volume types raise no events). Runs until `stop` changes.
pub async fn watch_files(store: Arc<CertStore>, poll: Duration, mut stop: watch::Receiver<bool>) {
    let Some((cert, key)) = store.source.clone() else {
        return;
    };
    let (events_tx, mut events) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = {
        use notify::{RecursiveMode, Watcher};
        let tx = events_tx.clone();
        notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
            let _ = tx.try_send(());
        })
        .and_then(|mut watcher| {
            let mut dirs: Vec<PathBuf> = [&cert, &key]
                .iter()
                .map(|p| {
                    p.parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(Path::new("."))
                        .to_owned()
                })
                .collect();
            dirs.dedup();
            for dir in &dirs {
                watcher.watch(dir, RecursiveMode::NonRecursive)?;
            }
            Ok(watcher)
        })
    };
    let _watcher = match watcher {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch the certificate directory; polling only");
            None
        }
    };
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
            Some(()) = events.recv() => {
                // Let a multi-file swap settle before reading.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.reload()).await;
    }
}
