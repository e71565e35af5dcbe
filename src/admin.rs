//! The admin listener: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (the IdP's
//! keys have been loaded at least once, so tokens can be verified; it says so when the latest
//! key fetch failed, while cached keys keep the gateway serving). `/readyz` also names the
//! running config file's SHA-256 and, when the latest reload was refused, why.

use crate::identity::jwks::KeyStore;
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
    config: Arc<ArcSwap<ConfigStatus>>,
}

impl AdminApp {
    /// Serves the given metrics, readiness of the given key store and the config's status.
    pub fn new(
        metrics: Metrics,
        keys: Arc<KeyStore>,
        config: Arc<ArcSwap<ConfigStatus>>,
    ) -> AdminApp {
        AdminApp {
            metrics,
            keys,
            config,
        }
    }

    fn answer(&self, path: &str) -> (StatusCode, &'static str, String) {
        match path {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => {
                let (status, mut body) = self.readiness();
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

    /// Ready once the IdP's keys are loaded: the first line of `/readyz`.
    fn readiness(&self) -> (StatusCode, String) {
        match (self.keys.is_loaded(), self.keys.last_error()) {
            (true, None) => (StatusCode::OK, "ready\n".into()),
            (true, Some(why)) => (
                StatusCode::OK,
                format!("ready on cached keys; the latest key fetch from the IdP failed: {why}\n"),
            ),
            (false, None) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the IdP's signing keys have not been loaded yet\n".into(),
            ),
            (false, Some(why)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: the IdP's signing keys have not been loaded yet: {why}\n"),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, content_type, body) = self.answer(session.req_header().uri.path());
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
