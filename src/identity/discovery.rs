//! The IdP's discovery document, owned in one place: fetched from `idp.discovery_url` once,
//! cached, fetched again when it is older than [`DISCOVERY_TTL`] (the background JWKS refresh
//! asks for it before every key fetch, so it is refreshed with the keys), and shared by the key
//! cache (`jwks_uri`, see [`super::jwks`]) and the code flow (the OpenID metadata, see
//! [`super::oidc`]).
//!
//! The document is read once per fetch into what each user needs. A document that serves bearer
//! tokens only (a `jwks_uri`, but not a complete OpenID configuration) still serves the key
//! cache; the code flow then says why it cannot use it. An `issuer` other than the configured
//! one is a warning, not a failure (CONTRACT.md: *Auther today* names its base URL); tokens are
//! always checked against the configured issuer.

use crate::config::model::IdpSettings;
use openidconnect::core::CoreProviderMetadata;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// Discovery is fetched again after this long.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// After a failed fetch, the next attempt waits this long (callers meanwhile get the failure,
/// or the last good document).
const DISCOVERY_RETRY: Duration = Duration::from_secs(2);

/// Why the discovery document (or the part a caller needs) is unavailable. Cloned to every
/// caller that asks while a failure is remembered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    /// Network error, timeout or bad status.
    #[error("fetching {url} failed: {reason}")]
    Fetch {
        /// The discovery URL.
        url: String,
        /// What went wrong, with its causes.
        reason: String,
    },
    /// The document is not JSON, or lacks what the caller needs.
    #[error("{url} did not return a usable discovery document: {reason}")]
    Invalid {
        /// The discovery URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// What the code flow needs from a complete OpenID configuration.
#[derive(Debug)]
pub struct Provider {
    /// The metadata `openidconnect` builds its authorization URL from.
    pub metadata: CoreProviderMetadata,
    /// `token_endpoint`.
    pub token_url: Url,
    /// Where to send browsers to end the IdP's session, when the IdP has one.
    pub end_session_endpoint: Option<Url>,
}

/// One fetched discovery document, read into what its users need.
#[derive(Debug)]
pub struct Document {
    /// `jwks_uri`, or why the document gives none.
    jwks_uri: Result<Url, String>,
    /// The OpenID metadata, or why the document is not a usable OpenID configuration.
    provider: Result<Arc<Provider>, String>,
    fetched: Instant,
}

impl Document {
    /// Reads a discovery document's body. `Err` only when it is not a JSON object: missing
    /// parts are reported to the caller that needs them.
    fn parse(body: &[u8], issuer: &str) -> Result<Document, String> {
        let raw: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        if !raw.is_object() {
            return Err("not a JSON object".into());
        }
        if let Some(iss) = raw.get("issuer").and_then(|v| v.as_str()) {
            if iss.trim_end_matches('/') != issuer.trim_end_matches('/') {
                tracing::warn!(discovered = iss, configured = %issuer, "the discovery document names another issuer; tokens are checked against the configured one");
            }
        }
        let jwks_uri = match raw.get("jwks_uri").and_then(|v| v.as_str()) {
            None => Err("it has no jwks_uri".to_string()),
            Some(u) => Url::parse(u).map_err(|e| format!("jwks_uri {u:?} is not a URL: {e}")),
        };
        let end_session_endpoint = raw
            .get("end_session_endpoint")
            .and_then(|v| v.as_str())
            .and_then(|s| Url::parse(s).ok());
        let provider = serde_json::from_value::<CoreProviderMetadata>(raw)
            .map_err(|e| format!("it is not an OpenID configuration: {e}"))
            .and_then(|metadata| {
                let token_url = metadata
                    .token_endpoint()
                    .map(|t| t.url().clone())
                    .ok_or_else(|| "it has no token_endpoint".to_string())?;
                Ok(Arc::new(Provider {
                    metadata,
                    token_url,
                    end_session_endpoint,
                }))
            });
        Ok(Document {
            jwks_uri,
            provider,
            fetched: Instant::now(),
        })
    }
}

/// The last good document and the last failure, behind one lock (one fetch at a time).
type Slot = (Option<Arc<Document>>, Option<(Instant, DiscoveryError)>);

/// The IdP's discovery document, fetched on first use and cached.
pub struct Discovery {
    url: Url,
    issuer: String,
    http: reqwest::Client,
    slot: tokio::sync::Mutex<Slot>,
    /// Latency of the fetches (see [`Discovery::with_latency`]).
    latency: Option<prometheus::HistogramVec>,
}

impl Discovery {
    /// Discovery for the configured IdP; nothing is fetched until asked.
    pub fn from_config(idp: &IdpSettings) -> Discovery {
        Discovery {
            url: idp.discovery_url.clone(),
            issuer: idp.issuer.clone(),
            http: super::idp_client(idp.timeout, true),
            slot: tokio::sync::Mutex::new((None, None)),
            latency: None,
        }
    }

    /// Observes each fetch's latency into `latency`, labelled `discovery`.
    pub fn with_latency(mut self, latency: prometheus::HistogramVec) -> Discovery {
        self.latency = Some(latency);
        self
    }

    /// The JWKS location the document names.
    pub async fn jwks_uri(&self) -> Result<Url, DiscoveryError> {
        let doc = self.document().await?;
        doc.jwks_uri.clone().map_err(|reason| self.invalid(reason))
    }

    /// The OpenID metadata the code flow needs.
    pub async fn provider(&self) -> Result<Arc<Provider>, DiscoveryError> {
        let doc = self.document().await?;
        doc.provider.clone().map_err(|reason| self.invalid(reason))
    }

    fn invalid(&self, reason: String) -> DiscoveryError {
        DiscoveryError::Invalid {
            url: self.url.to_string(),
            reason,
        }
    }

    /// The cached document while younger than [`DISCOVERY_TTL`], else a fresh one; when the
    /// fetch fails, the last good document (a stale document is better than none).
    async fn document(&self) -> Result<Arc<Document>, DiscoveryError> {
        let mut slot = self.slot.lock().await;
        if let Some(doc) = &slot.0 {
            if doc.fetched.elapsed() < DISCOVERY_TTL {
                return Ok(doc.clone());
            }
        }
        if let Some((at, e)) = &slot.1 {
            if at.elapsed() < DISCOVERY_RETRY {
                return slot.0.clone().ok_or_else(|| e.clone());
            }
        }
        match self.fetch().await {
            Ok(doc) => {
                let doc = Arc::new(doc);
                *slot = (Some(doc.clone()), None);
                Ok(doc)
            }
            Err(e) => {
                tracing::warn!(error = %e, "OIDC discovery failed");
                slot.1 = Some((Instant::now(), e.clone()));
                slot.0.clone().ok_or(e)
            }
        }
    }

    async fn fetch(&self) -> Result<Document, DiscoveryError> {
        let fail = |reason: String| DiscoveryError::Fetch {
            url: self.url.to_string(),
            reason,
        };
        let started = Instant::now();
        let sent = self.http.get(self.url.clone()).send().await;
        if let Some(h) = &self.latency {
            h.with_label_values(&["discovery"])
                .observe(started.elapsed().as_secs_f64());
        }
        let resp = sent.map_err(|e| fail(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(fail(format!("status {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| fail(error_chain(&e)))?;
        Document::parse(&body, &self.issuer).map_err(|reason| self.invalid(reason))
    }
}

/// An error with its causes, `: `-separated (reqwest's own message omits them).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://auth.example.com";

    fn openid(extra: serde_json::Value) -> Vec<u8> {
        let mut doc = serde_json::json!({
            "issuer": ISSUER,
            "authorization_endpoint": "https://auth.example.com/api/auth/oauth2/authorize",
            "token_endpoint": "https://auth.example.com/api/auth/oauth2/token",
            "jwks_uri": "https://auth.example.com/api/auth/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA", "none"]
        });
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        serde_json::to_vec(&doc).unwrap()
    }

    #[test]
    fn one_read_serves_keys_and_the_code_flow() {
        let doc = Document::parse(
            &openid(serde_json::json!({"end_session_endpoint": "https://auth.example.com/end"})),
            ISSUER,
        )
        .unwrap();
        assert_eq!(
            doc.jwks_uri.as_ref().unwrap().as_str(),
            "https://auth.example.com/api/auth/jwks"
        );
        let p = doc.provider.as_ref().unwrap();
        assert_eq!(
            p.token_url.as_str(),
            "https://auth.example.com/api/auth/oauth2/token"
        );
        assert_eq!(
            p.end_session_endpoint.as_ref().map(Url::as_str),
            Some("https://auth.example.com/end")
        );
    }

    #[test]
    fn a_bearer_only_document_still_serves_the_keys() {
        let body = serde_json::to_vec(
            &serde_json::json!({"issuer": ISSUER, "jwks_uri": "https://auth.example.com/jwks"}),
        )
        .unwrap();
        let doc = Document::parse(&body, ISSUER).unwrap();
        assert!(doc.jwks_uri.is_ok());
        assert!(doc
            .provider
            .unwrap_err()
            .contains("not an OpenID configuration"));
    }

    #[test]
    fn missing_parts_are_reported_to_who_needs_them() {
        let doc = Document::parse(
            &openid(serde_json::json!({"jwks_uri": "not a url", "token_endpoint": null})),
            ISSUER,
        )
        .unwrap();
        assert!(doc.jwks_uri.unwrap_err().contains("is not a URL"));
        assert!(doc.provider.is_err());
        // Another issuer is only a warning.
        assert!(Document::parse(
            &openid(serde_json::json!({"issuer": "https://auth.example.com/api/auth"})),
            ISSUER
        )
        .is_ok());
        assert!(Document::parse(b"<html>", ISSUER)
            .unwrap_err()
            .contains("not JSON"));
        assert!(Document::parse(b"[1]", ISSUER).is_err());
    }
}
