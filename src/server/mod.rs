//! Builds and runs the Pingora server: the proxy service, the admin service, the background
//! JWKS refresher, the upstream health checks and the config reloader ([`reload`]).

pub mod reload;

use crate::admin::AdminApp;
use crate::admin::ConfigStatus;
use crate::authz::routes::RouteTable;
use crate::config::{Config, ConfigError};
use crate::identity::jwks::KeyStore;
use crate::identity::verify::Verifier;
use crate::metrics::Metrics;
use crate::proxy::live::LiveGateway;
use crate::proxy::{Gateway, GatewayError};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use reload::Reloader;
use std::sync::Arc;
use std::time::Duration;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Something in the config cannot be set up (an upstream that does not resolve, TLS files).
    #[error("cannot start: {0}")]
    Setup(String),
    /// The gateway cannot be built from the config.
    #[error("cannot start: {0}")]
    Gateway(#[from] GatewayError),
}

/// Keeps the IdP's keys fresh: fetches at start (retrying with backoff until it works),
/// then every `jwks_refresh_interval`.
struct JwksRefresher {
    verifier: Arc<Verifier>,
    interval: Duration,
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let wait = if self.verifier.refresh_keys().await {
                backoff = Duration::from_millis(250);
                self.interval
            } else {
                backoff = (backoff * 2).min(Duration::from_secs(30));
                if self.verifier.keys().is_loaded() {
                    backoff.max(Duration::from_secs(5)).min(self.interval)
                } else {
                    backoff
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Runs the running config's upstream health checks, each at its own interval. It sleeps
/// until the next check is due, and without any health check until a reload (`reloaded`)
/// may have brought one: a gateway without checks pays nothing for them.
struct UpstreamHealth {
    gateway: Arc<ArcSwap<Gateway>>,
    reloaded: Arc<tokio::sync::Notify>,
}

/// The shortest wait between looks at the checks (the shortest interval allowed).
const HEALTH_TICK: Duration = Duration::from_millis(100);

#[async_trait]
impl BackgroundService for UpstreamHealth {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let epoch = std::time::Instant::now();
        loop {
            let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            let mut next: Option<u64> = None;
            for upstream in self.gateway.load().upstreams() {
                if upstream.check_due(now) {
                    let upstream = upstream.clone();
                    tokio::spawn(async move { upstream.check_if_due(now).await });
                }
                if let Some(due) = upstream.next_check() {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
            let wait =
                next.map(|due| Duration::from_millis(due.saturating_sub(now)).max(HEALTH_TICK));
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.reloaded.notified() => {}
                _ = async { match wait { Some(w) => tokio::time::sleep(w).await, None => std::future::pending().await } } => {}
            }
        }
    }
}

/// Loads a config file with its route table, built once: conflicting routes (and a logout
/// that lands on a protected page) are reported as config problems, with file and line.
pub fn load(path: &std::path::Path) -> Result<(Config, RouteTable), ConfigError> {
    crate::config::load_then(path, RouteTable::from_config)
}

/// Like [`load`], with the SHA-256 of the file's bytes ([`crate::config::file_hash`]).
pub fn load_hashed(path: &std::path::Path) -> Result<(Config, RouteTable, String), ConfigError> {
    crate::config::load_file_then(path, RouteTable::from_config)
}

/// Like [`load_hashed`] on `bytes` already read from `path`.
pub fn parse_hashed(
    path: &std::path::Path,
    bytes: Vec<u8>,
) -> Result<(Config, RouteTable, String), ConfigError> {
    crate::config::parse_file_then(path, bytes, RouteTable::from_config)
}

/// The listener's TLS settings: the certificate chain and key (each checked to hold what it
/// should, so that a wrong file is an error here rather than a panic when the listener starts)
/// and ALPN: `h2` then `http/1.1` when `http2` is on (browsers then speak HTTP/2), else none
/// (HTTP/1.1). TLS 1.2 and 1.3; resumption by rustls' in-memory session cache (see
/// PERFORMANCE.md, "TLS").
fn tls_settings(tls: &crate::config::model::TlsFiles) -> Result<TlsSettings, String> {
    let (cert, key) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    check_key_pair(&cert, &key)?;
    let mut settings = TlsSettings::intermediate(&cert, &key).map_err(|e| e.to_string())?;
    settings
        .set_certificate_chain_file(&cert)
        .map_err(|e| e.to_string())?;
    settings
        .set_private_key_file(&key)
        .map_err(|e| e.to_string())?;
    if tls.http2 {
        settings.enable_h2();
    }
    Ok(settings)
}

/// Checks that the key file holds a usable private key for the chain's first certificate:
/// Pingora would otherwise panic when the listener starts.
fn check_key_pair(cert: &str, key: &str) -> Result<(), String> {
    use pingora::tls::{sign::CertifiedKey, CryptoProvider};
    pingora::tls::install_default_crypto_provider();
    let Some((certs, key)) =
        pingora::tls::load_certs_and_key_files(cert, key).map_err(|e| e.to_string())?
    else {
        return Err(format!(
            "{cert} holds no PEM certificate or {key} no PEM private key"
        ));
    };
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider installed")?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the private key cannot sign: {e}"))?;
    CertifiedKey::new(certs, signer)
        .keys_match()
        .map_err(|e| format!("the private key does not match the certificate: {e}"))
}

/// Builds a ready-to-run Pingora server for a validated config and its route table (see
/// [`load`]); with `file` (the path it was loaded from and its [`crate::config::file_hash`]),
/// SIGHUP and changes to the file reload it.
pub fn build(
    config: &Config,
    routes: RouteTable,
    file: Option<(&std::path::Path, &str)>,
) -> Result<Server, StartError> {
    let conf = ServerConf {
        threads: config.proxy.threads,
        grace_period_seconds: Some(config.proxy.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.proxy.grace_period.as_secs().max(1)),
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let metrics = Metrics::new();
    let keys = Arc::new(KeyStore::from_config(&config.idp, metrics.clone()));
    let verifier = Arc::new(
        Verifier::from_config(&config.idp, &config.cache, keys.clone(), metrics.clone())
            .with_api_key_audiences(&config.idp, &config.api_keys.audiences),
    );
    let gateway = Gateway::from_config(config, routes, verifier.clone(), metrics.clone())?;
    let sessions = gateway.session_store();

    let live = LiveGateway::new(gateway);
    let status = Arc::new(ArcSwap::from_pointee(ConfigStatus {
        hash: file.map(|(_, hash)| hash.to_string()),
        refused: None,
    }));
    if let Some((_, hash)) = file {
        metrics.set_config_hash(hash);
    }
    let reloaded = Arc::new(tokio::sync::Notify::new());
    let reloader = file.map(|(p, _)| {
        background_service(
            "config reloader",
            Reloader::new(
                p.to_path_buf(),
                config.clone(),
                live.handle(),
                status.clone(),
                metrics.clone(),
                reloaded.clone(),
            ),
        )
    });
    let health = background_service(
        "upstream health checks",
        UpstreamHealth {
            gateway: live.handle(),
            reloaded,
        },
    );
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, live, "authgate proxy");
    let listen = config.proxy.listen.to_string();
    match &config.proxy.tls {
        Some(tls) => {
            proxy.add_tls_with_settings(
                &listen,
                None,
                tls_settings(tls)
                    .map_err(|e| StartError::Setup(format!("TLS listener {listen}: {e}")))?,
            );
        }
        None => proxy.add_tcp(&listen),
    }

    let mut admin = Service::new(
        "authgate admin".to_string(),
        AdminApp::new(metrics, keys, sessions, status),
    );
    admin.add_tcp(&config.admin.listen.to_string());
    admin.threads = Some(1);

    let refresher = background_service(
        "jwks refresher",
        JwksRefresher {
            verifier,
            interval: config.idp.jwks_refresh_interval,
        },
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(refresher);
    server.add_service(health);
    if let Some(r) = reloader {
        server.add_service(r);
    }
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::TlsFiles;

    fn write_pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn tls_settings_refuse_a_key_of_another_certificate_and_files_without_pem() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = write_pair(dir.path(), "a");
        let (_, key_b) = write_pair(dir.path(), "b");
        assert!(tls_settings(&TlsFiles {
            cert: cert_a.clone(),
            key: key_a.clone(),
            http2: true
        })
        .is_ok());
        let err = tls_settings(&TlsFiles {
            cert: cert_a.clone(),
            key: key_b,
            http2: true,
        })
        .err()
        .unwrap();
        assert!(err.contains("does not match"), "{err}");
        let err = tls_settings(&TlsFiles {
            cert: key_a.clone(),
            key: key_a,
            http2: false,
        })
        .err()
        .unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
