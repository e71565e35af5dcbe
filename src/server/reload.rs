//! Config reload without restart: on SIGHUP the file is read and validated again; a bad file
//! is reported with every problem and the running config stays. Routes, clients, upstreams,
//! headers and the proxy's trust settings take effect at once; sections that shape long-lived
//! state (listeners, the IdP, caches, sessions, API keys, ABAC, identity keys) need a restart
//! and are reported as such.

use crate::config::{Config, ConfigError};
use crate::proxy::{Gateway, GatewayError};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or is not a valid config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config is valid but no gateway can be built from it.
    #[error("{path}: {source}")]
    Gateway {
        /// The config file.
        path: String,
        /// Why.
        source: GatewayError,
    },
}

/// Sections whose changes a reload cannot apply, with what differs between `old` and `new`.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut out = Vec::new();
    if old.proxy.listen != new.proxy.listen || old.proxy.threads != new.proxy.threads || !same(&old.proxy.tls, &new.proxy.tls) {
        out.push("proxy.listen/threads/tls");
    }
    for (name, changed) in [
        ("admin", !same(&old.admin, &new.admin)),
        ("idp", !same(&old.idp, &new.idp)),
        ("cache", !same(&old.cache, &new.cache)),
        ("session", !same(&old.session, &new.session)),
        ("api_keys", !same(&old.api_keys, &new.api_keys)),
        ("abac", !same(&old.abac, &new.abac)),
        ("identity_jwt", !same(&old.identity_jwt, &new.identity_jwt)),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}

/// Reloads the config file on SIGHUP.
pub struct Reloader {
    path: PathBuf,
    /// The config the process started with: sections that need a restart stay as in it, so
    /// every later reload is compared with it and keeps naming a change still unapplied.
    started: Config,
    gateway: Arc<ArcSwap<Gateway>>,
}

impl Reloader {
    /// Watches for SIGHUP and reloads `path` into `gateway`; `running` is the config in force.
    pub fn new(path: PathBuf, running: Config, gateway: Arc<ArcSwap<Gateway>>) -> Reloader {
        Reloader { path, started: running, gateway }
    }

    /// Reads, validates and applies the file once. `Err` says why the running config stays.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let (config, routes) = super::load(&self.path)?;
        let current = self.gateway.load_full();
        let next = current.reloaded(&config, routes).map_err(|source| ReloadError::Gateway { path: self.path.display().to_string(), source })?;
        let kept = restart_needed(&self.started, &config);
        if !kept.is_empty() {
            tracing::warn!(sections = ?kept, "changed settings need a restart to take effect; the rest is applied now");
        }
        self.gateway.store(Arc::new(next));
        tracing::info!(file = %self.path.display(), "config reloaded");
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: config reload is off");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    if let Err(e) = self.reload() {
                        tracing::error!("config reload refused, the running config stays:\n{e}");
                    }
                }
            }
        }
    }
}
