//! Config reload without restart: on SIGHUP, or when the file changes (watched through its
//! directory, so that an editor's write-then-rename counts; changes within [`DEBOUNCE`] are
//! one reload, and a changed file is applied only once it reads the same twice, a quiet
//! [`DEBOUNCE`] apart, so a write paused mid-file is not applied half-written), the file is
//! read and validated again; a bad file is reported with every problem, each time, and the
//! running config stays. Routes, clients, upstreams,
//! headers and the proxy's trust settings take effect at once; sections that shape long-lived
//! state (listeners, the IdP, caches, sessions, API keys, ABAC, identity keys) need a restart
//! and are reported as such.

use crate::admin::ConfigStatus;
use crate::config::{file_hash, Config, ConfigError};
use crate::metrics::Metrics;
use crate::proxy::{Gateway, GatewayError};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use notify::{EventKind, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long the file must stay quiet after a change before it is read: an editor's save
/// (write a temporary file, rename it over the old one) is several events.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

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
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut out = Vec::new();
    if old.proxy.listen != new.proxy.listen
        || old.proxy.threads != new.proxy.threads
        || !same(&old.proxy.tls, &new.proxy.tls)
    {
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
        ("log", old.log != new.log),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}

/// Reloads the config file on SIGHUP and when it changes.
pub struct Reloader {
    path: PathBuf,
    /// The config the process started with: sections that need a restart stay as in it, so
    /// every later reload is compared with it and keeps naming a change still unapplied.
    started: Config,
    gateway: Arc<ArcSwap<Gateway>>,
    status: Arc<ArcSwap<ConfigStatus>>,
    metrics: Metrics,
    /// Told after each reload applied (the health service looks at the new upstreams).
    reloaded: Arc<tokio::sync::Notify>,
}

impl Reloader {
    /// Reloads `path` into `gateway`; `running` is the config in force, `status` holds its
    /// file's hash (shown by the admin listener) and `metrics` counts reloads.
    pub fn new(
        path: PathBuf,
        running: Config,
        gateway: Arc<ArcSwap<Gateway>>,
        status: Arc<ArcSwap<ConfigStatus>>,
        metrics: Metrics,
        reloaded: Arc<tokio::sync::Notify>,
    ) -> Reloader {
        Reloader {
            path,
            started: running,
            gateway,
            status,
            metrics,
            reloaded,
        }
    }

    /// Reads, validates and applies the file once, counting the result and logging why a
    /// refused file was refused. `Err` says why the running config stays.
    pub fn reload(&self) -> Result<(), ReloadError> {
        self.reload_bytes(None)
    }

    /// [`Reloader::reload`] of `settled`, the bytes the file settled with (`None`: read it now).
    fn reload_bytes(&self, settled: Option<Vec<u8>>) -> Result<(), ReloadError> {
        let result = self.apply(settled);
        match &result {
            Ok(hash) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["applied"])
                    .inc();
                self.metrics.set_config_hash(hash);
                self.status.store(Arc::new(ConfigStatus {
                    hash: Some(hash.clone()),
                    refused: None,
                }));
                self.reloaded.notify_one();
                tracing::info!(file = %self.path.display(), hash = %hash, "config reloaded");
            }
            Err(why) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["refused"])
                    .inc();
                let running = self.status.load();
                self.status.store(Arc::new(ConfigStatus {
                    hash: running.hash.clone(),
                    refused: Some(why.to_string()),
                }));
                tracing::error!("config reload refused, the running config stays:\n{why}");
            }
        }
        result.map(|_| ())
    }

    /// Loads the file (or the bytes read from it, `settled`) and installs the gateway it
    /// describes; the hash of the bytes applied.
    fn apply(&self, settled: Option<Vec<u8>>) -> Result<String, ReloadError> {
        let (config, routes, hash) = match settled {
            Some(bytes) => super::parse_hashed(&self.path, bytes)?,
            None => super::load_hashed(&self.path)?,
        };
        let current = self.gateway.load_full();
        let next = current
            .reloaded(&config, routes)
            .map_err(|source| ReloadError::Gateway {
                path: self.path.display().to_string(),
                source,
            })?;
        config.log_warnings(&self.path);
        let kept = restart_needed(&self.started, &config);
        if !kept.is_empty() {
            tracing::warn!(sections = ?kept, "changed settings need a restart to take effect; the rest is applied now");
        }
        self.gateway.store(Arc::new(next));
        Ok(hash)
    }

    /// Whether the settled file's bytes (`None` when it cannot be read) differ from the
    /// running config's (an event that changed nothing, such as `touch`, reloads nothing). A
    /// file that cannot be read has changed.
    fn changed(&self, settled: Option<&[u8]>) -> bool {
        let running = self.status.load();
        match (settled, &running.hash) {
            (Some(bytes), Some(hash)) => file_hash(bytes) != *hash || running.refused.is_some(),
            _ => true,
        }
    }
}

/// Watches the config file's directory (a file replaced by rename keeps no watch of its own)
/// and sends `()` for each event that may have changed the file: its name created, written,
/// renamed or removed, or anything at all when the path is a symbolic link (a Kubernetes
/// ConfigMap swaps the link's target directory).
fn watch(
    path: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name: Option<OsString> = path.file_name().map(|n| n.to_os_string());
    let linked = path
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reads (ours included) are access events: never a change.
        let may_change = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
        );
        if may_change && (linked || event.paths.iter().any(|p| p.file_name() == name.as_deref())) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP: reload on SIGHUP is off");
                    None
                }
            };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // The watcher is kept alive for as long as the loop runs: dropping it stops the watch.
        let (_watcher, mut changes) = match watch(&self.path, tx) {
            Ok(w) => (Some(w), Some(rx)),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot watch the config file: reload on file change is off (SIGHUP still reloads)");
                (None, None)
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = hangup(&mut hangups) => {
                    if got.is_none() {
                        hangups = None;
                        continue;
                    }
                    let _ = self.reload();
                }
                got = next(&mut changes) => {
                    if got.is_none() {
                        changes = None;
                        continue;
                    }
                    match settle(&self.path, &mut changes, &mut hangups, &mut shutdown).await {
                        Settled::Shutdown => return,
                        // A SIGHUP meanwhile is the same reload, made at once.
                        Settled::Forced => {
                            let _ = self.reload();
                        }
                        Settled::Reads(bytes) => {
                            if self.changed(bytes.as_deref()) {
                                // The bytes that settled, not a later read: a write that
                                // started meanwhile waits for its own settling.
                                let _ = self.reload_bytes(bytes);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How waiting for a changed file to settle ended.
enum Settled {
    /// The gateway is shutting down.
    Shutdown,
    /// A SIGHUP came meanwhile: reload now.
    Forced,
    /// The file read the same twice, [`DEBOUNCE`] of quiet apart: those bytes (`None`: it
    /// could not be read, twice).
    Reads(Option<Vec<u8>>),
}

/// Waits until the file has settled: no change event for [`DEBOUNCE`], then the same bytes
/// read twice with another quiet [`DEBOUNCE`] between the reads. A writer that pauses
/// mid-file (an in-place write in several parts) is thus never read half-written unless it
/// pauses for longer than twice the debounce; a rename over the file is always whole.
async fn settle(
    path: &Path,
    changes: &mut Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
    hangups: &mut Option<tokio::signal::unix::Signal>,
    shutdown: &mut ShutdownWatch,
) -> Settled {
    let mut before: Option<Option<Vec<u8>>> = None;
    loop {
        // Quiet for DEBOUNCE: every event starts the wait again.
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Settled::Shutdown,
                more = next(changes) => {
                    if more.is_none() {
                        *changes = None;
                    }
                }
                got = hangup(hangups) => {
                    if got.is_some() {
                        return Settled::Forced;
                    }
                    *hangups = None;
                }
                _ = tokio::time::sleep(DEBOUNCE) => break,
            }
        }
        let now = std::fs::read(path).ok();
        if before.as_ref() == Some(&now) {
            return Settled::Reads(now);
        }
        before = Some(now);
    }
}

/// The next SIGHUP; never, without a handler.
async fn hangup(hangups: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangups.as_mut() {
        Some(h) => h.recv().await,
        None => std::future::pending().await,
    }
}

/// The next file event; never, once the watch is gone.
async fn next(changes: &mut Option<tokio::sync::mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match changes.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
