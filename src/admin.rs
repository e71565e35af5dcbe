//! The admin listener: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (the IdP's
//! keys have been loaded at least once, so tokens can be verified; it says so when the latest
//! key fetch failed, while cached keys keep the gateway serving).

use crate::identity::jwks::KeyStore;
use crate::metrics::Metrics;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The admin endpoints.
pub struct AdminApp {
    metrics: Metrics,
    keys: Arc<KeyStore>,
}

impl AdminApp {
    /// Serves the given metrics and readiness of the given key store.
    pub fn new(metrics: Metrics, keys: Arc<KeyStore>) -> AdminApp {
        AdminApp { metrics, keys }
    }

    fn answer(&self, path: &str) -> (StatusCode, &'static str, String) {
        match path {
            "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", self.metrics.render()),
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" if self.keys.is_loaded() => match self.keys.last_error() {
                None => (StatusCode::OK, "text/plain", "ready\n".into()),
                Some(why) => (StatusCode::OK, "text/plain", format!("ready on cached keys; the latest key fetch from the IdP failed: {why}\n")),
            },
            "/readyz" => match self.keys.last_error() {
                None => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready: the IdP's signing keys have not been loaded yet\n".into()),
                Some(why) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: the IdP's signing keys have not been loaded yet: {why}\n")),
            },
            _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /readyz\n".into()),
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
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        response
    }
}
