//! JWT verification into a [`Principal`], with caches so that a token is verified once.
//!
//! Only asymmetric algorithms from the config are accepted (`none` cannot even be decoded,
//! HMAC is never configured); `iss`, `aud`, `exp` and `nbf` are checked with the configured
//! leeway. `iat` is not checked: Auther writes it in milliseconds. Verified tokens are cached
//! by SHA-256 until `exp`; refused tokens are remembered briefly so a replayed bad token costs
//! no signature check.

use super::jwks::KeyStore;
use super::{Grants, Principal};
use crate::config::model::{CacheSettings, IdpSettings};
use crate::metrics::Metrics;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use moka::sync::Cache;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a token was refused. Messages are safe to show: they never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or a header that cannot be read (this includes `alg: none`).
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// An algorithm that is not accepted.
    #[error("the token's algorithm {0} is not accepted")]
    AlgorithmRefused(String),
    /// No key with the token's `kid`.
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` is past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// `aud` does not name this gateway's audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// A required claim is missing or has the wrong type.
    #[error("the token lacks a required claim ({0})")]
    MissingClaim(&'static str),
    /// The id_token's `nonce` is not the one this login sent.
    #[error("the id_token's nonce does not match the login")]
    WrongNonce,
    /// The IdP's keys have never been loaded (IdP unreachable since start-up).
    #[error("the identity provider's signing keys are not available")]
    KeysUnavailable,
}

impl TokenError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::AlgorithmRefused(_) => "algorithm_refused",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::WrongNonce => "wrong_nonce",
            TokenError::KeysUnavailable => "keys_unavailable",
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    email: Option<String>,
    name: Option<String>,
    azp: Option<String>,
    client_id: Option<String>,
    exp: f64,
    nonce: Option<String>,
    #[serde(default)]
    permissions: serde_json::Value,
    #[serde(default)]
    abac_required: serde_json::Value,
}

type Digest = [u8; 32];

struct UntilExp;

impl moka::Expiry<Digest, Arc<Principal>> for UntilExp {
    fn expire_after_create(&self, _key: &Digest, value: &Arc<Principal>, _now: std::time::Instant) -> Option<Duration> {
        Some(Duration::from_secs(value.expires_at.saturating_sub(now_secs())))
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Verifies tokens against the IdP's keys.
pub struct Verifier {
    keys: Arc<KeyStore>,
    issuer: String,
    leeway: u64,
    /// One validation per accepted algorithm: jsonwebtoken requires every algorithm of a
    /// validation to match the key's family.
    validations: Vec<(Algorithm, Validation)>,
    verified: Cache<Digest, Arc<Principal>>,
    rejected: Cache<Digest, TokenError>,
    metrics: Metrics,
}

impl Verifier {
    /// Creates a verifier for the configured IdP, sharing `keys`.
    pub fn from_config(idp: &IdpSettings, cache: &CacheSettings, keys: Arc<KeyStore>, metrics: Metrics) -> Verifier {
        let validations = idp
            .algorithms
            .iter()
            .map(|&alg| {
                let mut validation = Validation::new(alg);
                validation.set_issuer(&[&idp.issuer]);
                validation.set_audience(&idp.audiences);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.leeway = idp.leeway.as_secs();
                validation.validate_nbf = true;
                (alg, validation)
            })
            .collect();
        Verifier {
            keys,
            issuer: idp.issuer.clone(),
            leeway: idp.leeway.as_secs(),
            validations,
            verified: Cache::builder().max_capacity(cache.tokens).expire_after(UntilExp).build(),
            rejected: Cache::builder().max_capacity(cache.rejected_tokens).time_to_live(cache.rejected_ttl).build(),
            metrics,
        }
    }

    /// The key store.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// Verifies a bearer token; a token seen before costs a hash and a cache lookup.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        let digest: Digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        if let Some(p) = self.verified.get(&digest) {
            if p.expires_at > now_secs() {
                self.metrics.jwt_verifications.with_label_values(&["cached"]).inc();
                return Ok(p);
            }
            self.verified.invalidate(&digest);
        }
        if let Some(e) = self.rejected.get(&digest) {
            self.metrics.jwt_verifications.with_label_values(&[e.label()]).inc();
            return Err(e);
        }
        let result = self.verify_uncached(token).await;
        match &result {
            Ok(p) => {
                self.metrics.jwt_verifications.with_label_values(&["verified"]).inc();
                self.verified.insert(digest, p.clone());
            }
            Err(e) => {
                self.metrics.jwt_verifications.with_label_values(&[e.label()]).inc();
                // Remember only refusals that cannot turn into acceptance: a key set still
                // loading, a key not yet published or an `nbf` not yet reached can.
                if !matches!(e, TokenError::KeysUnavailable | TokenError::UnknownKey | TokenError::NotYetValid) {
                    self.rejected.insert(digest, e.clone());
                }
            }
        }
        result
    }

    /// Verifies without looking at or filling the caches (benchmarks compare the two paths).
    pub async fn verify_uncached(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        let (principal, _) = self.decode(token, |alg| self.validations.iter().find(|(a, _)| *a == alg).map(|(_, v)| v.clone())).await?;
        Ok(principal)
    }

    /// Verifies an id_token from the login: signature by the IdP's keys, `iss`, `aud` = the
    /// client id, `exp`, `nbf` and the login's `nonce`. Never cached: each is seen once.
    pub async fn verify_id_token(&self, token: &str, client_id: &str, nonce: &str) -> Result<Arc<Principal>, TokenError> {
        let (principal, got) = self.decode(token, |alg| self.id_token_validation(alg, client_id, true)).await?;
        let matches = got.as_deref().is_some_and(|n| subtle::ConstantTimeEq::ct_eq(n.as_bytes(), nonce.as_bytes()).into());
        if !matches {
            return Err(TokenError::WrongNonce);
        }
        Ok(principal)
    }

    /// The identity of a session whose access token is opaque, from its id_token (verified at
    /// login): signature, `iss` and `aud` = the client id again, through the verified-token
    /// cache, valid until `valid_until` (the session's access token's expiry) rather than the
    /// id_token's own `exp`, as a refresh may not bring a new id_token.
    pub async fn session_identity(&self, id_token: &str, client_id: &str, valid_until: u64) -> Result<Arc<Principal>, TokenError> {
        // Domain-separated key: an id_token must never hit the cache as a bearer token.
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"id_token\0");
        ctx.update(client_id.as_bytes());
        ctx.update(b"\0");
        ctx.update(id_token.as_bytes());
        let digest: Digest = ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes");
        if let Some(p) = self.verified.get(&digest) {
            if p.expires_at > now_secs() {
                self.metrics.jwt_verifications.with_label_values(&["cached"]).inc();
                return Ok(p);
            }
        }
        let result = self.decode(id_token, |alg| self.id_token_validation(alg, client_id, false)).await;
        match result {
            Ok((p, _)) => {
                self.metrics.jwt_verifications.with_label_values(&["verified"]).inc();
                let p = Arc::new(Principal { expires_at: valid_until, ..(*p).clone() });
                self.verified.insert(digest, p.clone());
                Ok(p)
            }
            Err(e) => {
                self.metrics.jwt_verifications.with_label_values(&[e.label()]).inc();
                Err(e)
            }
        }
    }

    fn id_token_validation(&self, alg: Algorithm, client_id: &str, check_exp: bool) -> Option<Validation> {
        if !self.validations.iter().any(|(a, _)| *a == alg) {
            return None;
        }
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[client_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.validate_exp = check_exp;
        Some(v)
    }

    async fn decode(&self, token: &str, validation_for: impl Fn(Algorithm) -> Option<Validation>) -> Result<(Arc<Principal>, Option<String>), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let Some(validation) = validation_for(header.alg) else {
            return Err(TokenError::AlgorithmRefused(format!("{:?}", header.alg)));
        };
        let validation = &validation;
        let key = match self.find_key(header.kid.as_deref(), header.alg) {
            Some(k) => k,
            None => {
                if self.keys.may_refetch() {
                    self.refresh_keys().await;
                }
                if !self.keys.is_loaded() {
                    return Err(TokenError::KeysUnavailable);
                }
                self.find_key(header.kid.as_deref(), header.alg).ok_or(TokenError::UnknownKey)?
            }
        };
        if !key.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmRefused(format!("{:?} with this key", header.alg)));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) if c == "exp" => TokenError::MissingClaim("exp"),
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => TokenError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenError::WrongAudience,
            ErrorKind::InvalidAlgorithm => TokenError::AlgorithmRefused(format!("{:?}", header.alg)),
            ErrorKind::Json(_) => TokenError::MissingClaim("exp"),
            _ => TokenError::Malformed,
        })?;
        let c = data.claims;
        let subject = c.sub.filter(|s| !s.is_empty()).ok_or(TokenError::MissingClaim("sub"))?;
        let nonce = c.nonce;
        Ok((Arc::new(Principal {
            subject,
            email: c.email,
            name: c.name,
            authorized_party: c.azp.or(c.client_id),
            permissions: Grants::from_claim(&c.permissions),
            abac_required: Grants::from_claim(&c.abac_required),
            expires_at: c.exp.max(0.0) as u64,
        }), nonce))
    }

    fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<super::jwks::VerifyKey>> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None => self.keys.only_key_for(alg),
        }
    }

    /// Re-fetches the keys; when a key disappeared, every cached token is verified again.
    pub async fn refresh_keys(&self) -> bool {
        match self.keys.refresh().await {
            Ok(r) => {
                if r.removed_keys {
                    self.verified.invalidate_all();
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys cached before");
                false
            }
        }
    }
}
