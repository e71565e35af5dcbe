//! The admin listener: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (ready when
//! the IdP's keys have been loaded at least once, so tokens can be verified, and the session
//! store answers; one line per component says its state, the IdP's naming a failed latest key
//! fetch while cached keys keep the gateway serving). `/readyz` also names the running config
//! file's SHA-256 and, when the latest reload was refused, why.

use crate::identity::jwks::KeyStore;
use crate::identity::session::{SessionStore, StoreHealth};
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// What `/readyz` says about the config: the running file's hash and why the latest reload,
/// if it was refused, was.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigStatus {
    /// SHA-256 of the running config file; `None` for a config built in (the demo).
    pub hash: Option<String>,
    /// Why the latest reload was refused; cleared by the next one applied.
    pub refused: Option<String>,
}

/// The admin endpoints.
pub struct AdminApp {
    metrics: Metrics,
    keys: Arc<KeyStore>,
    sessions: Arc<dyn SessionStore>,
    config: Arc<ArcSwap<ConfigStatus>>,
}

impl AdminApp {
    /// Serves the given metrics, readiness of the given key store and session store, and the
    /// config's status.
    pub fn new(
        metrics: Metrics,
        keys: Arc<KeyStore>,
        sessions: Arc<dyn SessionStore>,
        config: Arc<ArcSwap<ConfigStatus>>,
    ) -> AdminApp {
        AdminApp {
            metrics,
            keys,
            sessions,
            config,
        }
    }

    async fn answer(&self, path: &str) -> (StatusCode, &'static str, String) {
        match path {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => {
                let idp = IdpState::of(&self.keys);
                let store = self.sessions.health().await;
                let (status, mut body) = readiness(&idp, &store);
                body.push_str(&config_lines(&self.config.load()));
                (status, "text/plain", body)
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }
}

/// What `/readyz` says of the IdP: whether its signing keys are loaded, and why the latest
/// key fetch failed, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IdpState {
    loaded: bool,
    failed: Option<String>,
}

impl IdpState {
    fn of(keys: &KeyStore) -> IdpState {
        IdpState {
            loaded: keys.is_loaded(),
            failed: keys.last_error(),
        }
    }

    /// The `idp:` line's words.
    fn words(&self) -> String {
        match (self.loaded, &self.failed) {
            (true, None) => "ready (signing keys loaded)".into(),
            (true, Some(why)) => {
                format!("ready on cached keys; the latest key fetch from the IdP failed: {why}")
            }
            (false, None) => "not ready: the IdP's signing keys have not been loaded yet".into(),
            (false, Some(why)) => {
                format!("not ready: the IdP's signing keys have not been loaded yet: {why}")
            }
        }
    }
}

/// `/readyz`'s status and its lines about the components: the verdict (`ready`, or
/// `not ready:` and the components that are not), then one line per component. Ready only
/// when the IdP's keys are loaded (cached keys serve while the IdP is down) and the session
/// store answers (a Redis that does not would answer 503 to every signed-in request).
fn readiness(idp: &IdpState, store: &StoreHealth) -> (StatusCode, String) {
    let mut not_ready = Vec::new();
    if !idp.loaded {
        not_ready.push("idp");
    }
    if !store.is_ready() {
        not_ready.push("session_store");
    }
    let (status, verdict) = if not_ready.is_empty() {
        (StatusCode::OK, "ready".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", not_ready.join(", ")),
        )
    };
    (
        status,
        format!("{verdict}\nidp: {}\nsession_store: {store}\n", idp.words()),
    )
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let (status, content_type, body) = self.answer(&path).await;
        let len = body.len();
        let mut response = Response::new(body.into_bytes());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        response
    }
}

/// `/readyz`'s lines about the config: the running file's hash, and why the latest reload was
/// refused (the running config stays, so readiness does not change).
fn config_lines(status: &ConfigStatus) -> String {
    let mut out = match &status.hash {
        Some(hash) => format!("config sha256:{hash}\n"),
        None => "config built in (no file)\n".to_string(),
    };
    if let Some(why) = &status.refused {
        out.push_str("the latest config reload was refused, the running config stays:\n");
        for line in why.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_names_each_component_and_is_503_when_the_idp_or_the_store_is_not_ready() {
        let loaded = IdpState {
            loaded: true,
            failed: None,
        };
        let cached = IdpState {
            loaded: true,
            failed: Some("connection refused".into()),
        };
        let never = IdpState {
            loaded: false,
            failed: None,
        };
        let memory = StoreHealth::Ready {
            at: "memory".into(),
        };
        let down = StoreHealth::Unreachable {
            at: "redis://127.0.0.1:6379".into(),
            why: "connection refused".into(),
        };
        let cases = [
            (&loaded, &memory, 200, "ready\nidp: ready (signing keys loaded)\nsession_store: ready (memory)\n"),
            (&cached, &memory, 200, "ready\nidp: ready on cached keys; the latest key fetch from the IdP failed: connection refused\nsession_store: ready (memory)\n"),
            (&never, &memory, 503, "not ready: idp\nidp: not ready: the IdP's signing keys have not been loaded yet\nsession_store: ready (memory)\n"),
            (&loaded, &down, 503, "not ready: session_store\nidp: ready (signing keys loaded)\nsession_store: unreachable (redis://127.0.0.1:6379: connection refused)\n"),
            (&never, &down, 503, "not ready: idp, session_store\nidp: not ready: the IdP's signing keys have not been loaded yet\nsession_store: unreachable (redis://127.0.0.1:6379: connection refused)\n"),
        ];
        for (idp, store, status, body) in cases {
            let (got_status, got_body) = readiness(idp, store);
            assert_eq!(
                (got_status.as_u16(), got_body.as_str()),
                (status, body),
                "{idp:?} {store:?}"
            );
        }
    }

    #[test]
    fn readyz_names_the_config_hash_and_why_a_reload_was_refused() {
        let running = ConfigStatus {
            hash: Some("ab12".into()),
            refused: None,
        };
        assert_eq!(config_lines(&running), "config sha256:ab12\n");
        let refused = ConfigStatus {
            hash: Some("ab12".into()),
            refused: Some("2 problems:\n  a.toml:3: x\n  a.toml:4: y".into()),
        };
        assert_eq!(
            config_lines(&refused),
            "config sha256:ab12\nthe latest config reload was refused, the running config stays:\n  2 problems:\n    a.toml:3: x\n    a.toml:4: y\n"
        );
        assert_eq!(
            config_lines(&ConfigStatus::default()),
            "config built in (no file)\n"
        );
    }
}
