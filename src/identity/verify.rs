//! JWT verification into a [`Principal`], with caches so that a token is verified once.
//!
//! Only asymmetric algorithms from the config are accepted (`none` cannot even be decoded,
//! HMAC is never configured); `iss`, `aud`, `exp` and `nbf` are checked with the configured
//! leeway. `iat` is not checked: Auther writes it in milliseconds. Verified tokens are cached
//! by a keyed digest until `exp`; refused tokens are remembered briefly so a replayed bad token
//! costs no signature check.
//!
//! One verifier serves every use of a token: bearer tokens ([`Audience::Api`], `idp.audience`)
//! and tokens exchanged for API keys ([`Audience::ApiKey`], `api_keys.audience`) share one key
//! set and one pair of caches, keyed by the audience set too, so a token verified for one use is
//! never accepted for the other, and a key removed from the JWKS is forgotten everywhere at once.

use super::jwks::KeyStore;
use super::jws::{self, Jws, Registered};
use super::{now_secs, Grants, Principal};
use crate::config::model::{CacheSettings, IdpSettings};
use crate::digest::{Digest, KeyedDigest};
use crate::metrics::Metrics;
use jsonwebtoken::{Algorithm, Validation};
use moka::sync::Cache;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// The audience set a token is verified for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Bearer tokens and sessions' access tokens: `idp.audience`.
    Api,
    /// Tokens the IdP exchanged for API keys: `api_keys.audience`.
    ApiKey,
}

impl Audience {
    fn index(self) -> usize {
        match self {
            Audience::Api => 0,
            Audience::ApiKey => 1,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    email: Option<String>,
    #[serde(default)]
    email_verified: serde_json::Value,
    #[serde(default)]
    groups: serde_json::Value,
    name: Option<String>,
    azp: Option<String>,
    client_id: Option<String>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    iss: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    nbf: Option<serde_json::Value>,
    nonce: Option<String>,
    #[serde(default)]
    permissions: serde_json::Value,
    #[serde(default)]
    abac_required: serde_json::Value,
}

/// The `groups` claim: an array of strings (others ignored), or one string.
fn groups(claim: &serde_json::Value) -> Box<[Box<str>]> {
    match claim {
        serde_json::Value::String(one) => Box::new([one.as_str().into()]),
        serde_json::Value::Array(list) => list
            .iter()
            .filter_map(|g| g.as_str().map(Into::into))
            .collect(),
        _ => Box::default(),
    }
}

struct UntilExp;

impl moka::Expiry<Digest, Arc<Principal>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &Arc<Principal>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.expires_at.saturating_sub(now_secs()),
        ))
    }
}

/// Verifies tokens against the IdP's keys: the gateway's only verifier.
pub struct Verifier {
    keys: Arc<KeyStore>,
    issuer: String,
    leeway: u64,
    /// By [`Audience::index`], one validation per accepted algorithm: jsonwebtoken requires
    /// every algorithm of a validation to match the key's family.
    validations: [Vec<(Algorithm, Validation)>; 2],
    /// The audiences [`Audience::ApiKey`] accepts.
    api_key_audiences: Vec<String>,
    /// Counts the times a key disappeared from the JWKS (and every cache was dropped).
    removals: AtomicU64,
    /// Cache keys of tokens verified for each audience set (`Api`, `ApiKey`): a key of its own
    /// per set separates their digests, so the hot path hashes the token alone.
    audience_keys: [KeyedDigest; 2],
    /// Cache keys of id_tokens (with the client they were verified for).
    token_keys: KeyedDigest,
    cached_hits: prometheus::IntCounter,
    verified: Cache<Digest, Arc<Principal>>,
    rejected: Cache<Digest, TokenError>,
    metrics: Metrics,
}

impl Verifier {
    /// Creates a verifier for the configured IdP, sharing `keys`. API-key tokens are checked
    /// against `idp.audience` too until [`Verifier::with_api_key_audiences`] says otherwise.
    pub fn from_config(
        idp: &IdpSettings,
        cache: &CacheSettings,
        keys: Arc<KeyStore>,
        metrics: Metrics,
    ) -> Verifier {
        let api = validations(idp, &idp.audiences);
        Verifier {
            keys,
            issuer: idp.issuer.clone(),
            leeway: idp.leeway.as_secs(),
            validations: [api.clone(), api],
            api_key_audiences: idp.audiences.clone(),
            removals: AtomicU64::new(0),
            audience_keys: [KeyedDigest::random(), KeyedDigest::random()],
            token_keys: KeyedDigest::random(),
            cached_hits: metrics.jwt_verifications.with_label_values(&["cached"]),
            verified: Cache::builder()
                .max_capacity(cache.tokens)
                .expire_after(UntilExp)
                .build(),
            rejected: Cache::builder()
                .max_capacity(cache.rejected_tokens)
                .time_to_live(cache.rejected_ttl)
                .build(),
            metrics,
        }
    }

    /// Checks tokens exchanged for API keys against `audiences` (`api_keys.audience`).
    pub fn with_api_key_audiences(mut self, idp: &IdpSettings, audiences: &[String]) -> Verifier {
        if let Some(v) = self.validations.get_mut(Audience::ApiKey.index()) {
            *v = validations(idp, audiences);
        }
        self.api_key_audiences = audiences.to_vec();
        self
    }

    /// The audiences tokens exchanged for API keys are accepted for.
    pub fn api_key_audiences(&self) -> &[String] {
        &self.api_key_audiences
    }

    /// The metrics it counts into (shared with the rest of the gateway).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The key store.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// How many times a signing key disappeared from the JWKS so far. Whoever keeps a verified
    /// identity outside this verifier's caches (the API-key cache) compares it to the count
    /// when it verified, and verifies again when it changed.
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// The principal of a bearer token verified before and not expired: a hash and a cache
    /// lookup, nothing else (no refusal is counted or remembered).
    pub fn cached(&self, token: &str) -> Option<Arc<Principal>> {
        self.hit(&self.digest(Audience::Api, token.as_bytes()))
    }

    /// The cache key of `token` verified for `audience`.
    fn digest(&self, audience: Audience, token: &[u8]) -> Digest {
        let [api, api_key] = &self.audience_keys;
        match audience {
            Audience::Api => api.of(&[token]),
            Audience::ApiKey => api_key.of(&[token]),
        }
    }

    /// The cached principal under `digest` while it has not expired (counted as a cache hit);
    /// an expired one is dropped.
    fn hit(&self, digest: &Digest) -> Option<Arc<Principal>> {
        let p = self.verified.get(digest)?;
        if p.expires_at > now_secs() {
            self.cached_hits.inc();
            return Some(p);
        }
        self.verified.invalidate(digest);
        None
    }

    /// Verifies a bearer token ([`Audience::Api`]); a token seen before costs a hash and a
    /// cache lookup.
    pub async fn verify(&self, token: impl AsRef<[u8]>) -> Result<Arc<Principal>, TokenError> {
        self.verify_for(token, Audience::Api).await
    }

    /// Verifies a token for one audience set; the caches are keyed by the set too, so a token
    /// verified for one is verified again (and refused when its `aud` is wrong) for the other.
    /// The token's bytes are read as the caller sent them: a token never seen is checked for
    /// the RFC 6750 `b64token` characters (so it is ASCII) before anything else reads it.
    pub async fn verify_for(
        &self,
        token: impl AsRef<[u8]>,
        audience: Audience,
    ) -> Result<Arc<Principal>, TokenError> {
        self.verify_bytes(token.as_ref(), audience).await
    }

    async fn verify_bytes(
        &self,
        token: &[u8],
        audience: Audience,
    ) -> Result<Arc<Principal>, TokenError> {
        let digest = self.digest(audience, token);
        if let Some(p) = self.hit(&digest) {
            return Ok(p);
        }
        if let Some(e) = self.rejected.get(&digest) {
            // Counted apart from fresh refusals: a replayed bad token costs no signature check.
            self.metrics
                .jwt_verifications
                .with_label_values(&["rejected_cached"])
                .inc();
            return Err(e);
        }
        let removals = self.removals();
        let text = std::str::from_utf8(token)
            .ok()
            .filter(|t| super::credentials::is_b64token(t));
        let result = match text {
            Some(text) => self.verify_uncached_for(text, audience).await,
            None => Err(TokenError::Malformed),
        };
        match &result {
            Ok(p) => {
                self.metrics
                    .jwt_verifications
                    .with_label_values(&["verified"])
                    .inc();
                // A key removed while this token was checked may have signed it: not cached.
                if self.removals() == removals {
                    self.verified.insert(digest, p.clone());
                }
            }
            Err(e) => {
                self.metrics
                    .jwt_verifications
                    .with_label_values(&[e.label()])
                    .inc();
                // Remember only refusals that cannot turn into acceptance: a key set still
                // loading, a key not yet published or an `nbf` not yet reached can.
                if !matches!(
                    e,
                    TokenError::KeysUnavailable | TokenError::UnknownKey | TokenError::NotYetValid
                ) {
                    self.rejected.insert(digest, e.clone());
                }
            }
        }
        result
    }

    /// Verifies a bearer token without looking at or filling the caches (benchmarks compare
    /// the two paths).
    pub async fn verify_uncached(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        self.verify_uncached_for(token, Audience::Api).await
    }

    async fn verify_uncached_for(
        &self,
        token: &str,
        audience: Audience,
    ) -> Result<Arc<Principal>, TokenError> {
        let validations = self
            .validations
            .get(audience.index())
            .ok_or(TokenError::WrongAudience)?;
        let (principal, _) = self
            .decode(token, |alg| {
                validations
                    .iter()
                    .find(|(a, _)| *a == alg)
                    .map(|(_, v)| Cow::Borrowed(v))
            })
            .await?;
        Ok(principal)
    }

    /// Verifies an id_token from the login: signature by the IdP's keys, `iss`, `aud` = the
    /// client id, `exp`, `nbf` and the login's `nonce`. Never cached: each is seen once.
    pub async fn verify_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Arc<Principal>, TokenError> {
        let (principal, got) = self
            .decode(token, |alg| self.id_token_validation(alg, client_id, true))
            .await?;
        let matches = got
            .as_deref()
            .is_some_and(|n| subtle::ConstantTimeEq::ct_eq(n.as_bytes(), nonce.as_bytes()).into());
        if !matches {
            return Err(TokenError::WrongNonce);
        }
        Ok(principal)
    }

    /// The identity of a session whose access token is opaque, from its id_token (verified at
    /// login): signature, `iss` and `aud` = the client id again, through the verified-token
    /// cache, valid until `valid_until` (the session's access token's expiry) rather than the
    /// id_token's own `exp`, as a refresh may not bring a new id_token.
    pub async fn session_identity(
        &self,
        id_token: &str,
        client_id: &str,
        valid_until: u64,
    ) -> Result<Arc<Principal>, TokenError> {
        // Domain-separated key: an id_token must never hit the cache as a bearer token.
        let digest = self
            .token_keys
            .of(&[b"id_token", client_id.as_bytes(), id_token.as_bytes()]);
        if let Some(p) = self.hit(&digest) {
            return Ok(p);
        }
        let removals = self.removals();
        let result = self
            .decode(id_token, |alg| {
                self.id_token_validation(alg, client_id, false)
            })
            .await;
        match result {
            Ok((p, _)) => {
                self.metrics
                    .jwt_verifications
                    .with_label_values(&["verified"])
                    .inc();
                let p = Arc::new(Principal {
                    expires_at: valid_until,
                    ..(*p).clone()
                });
                if self.removals() == removals {
                    self.verified.insert(digest, p.clone());
                }
                Ok(p)
            }
            Err(e) => {
                self.metrics
                    .jwt_verifications
                    .with_label_values(&[e.label()])
                    .inc();
                Err(e)
            }
        }
    }

    fn id_token_validation(
        &self,
        alg: Algorithm,
        client_id: &str,
        check_exp: bool,
    ) -> Option<Cow<'static, Validation>> {
        if !self.validations.iter().flatten().any(|(a, _)| *a == alg) {
            return None;
        }
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[client_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.validate_exp = check_exp;
        Some(Cow::Owned(v))
    }

    async fn decode<'v>(
        &'v self,
        token: &str,
        validation_for: impl Fn(Algorithm) -> Option<Cow<'v, Validation>>,
    ) -> Result<(Arc<Principal>, Option<String>), TokenError> {
        let jws = Jws::parse(token)?;
        let alg = jws.header.alg;
        let Some(validation) = validation_for(alg) else {
            return Err(TokenError::AlgorithmRefused(format!("{alg:?}")));
        };
        if !validation.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmRefused(format!("{alg:?}")));
        }
        let key = self.key_for(&jws.header).await?;
        let payload = jws.verify(&key)?;
        // One parse for everything: authgate's claims and the registered ones checked below.
        let c: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        let registered = Registered {
            exp: c.exp.as_ref(),
            nbf: c.nbf.as_ref(),
            iss: c.iss.as_ref(),
            aud: c.aud.as_ref(),
            sub: c.sub.as_deref(),
        };
        jws::check(&registered, &validation, now_secs())?;
        let subject = c
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::MissingClaim("sub"))?;
        let expires_at = match c.exp {
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))
                .unwrap_or(0),
            _ => 0,
        };
        Ok((
            Arc::new(Principal {
                subject,
                email: c.email,
                email_verified: c.email_verified == serde_json::Value::Bool(true)
                    || c.email_verified.as_str() == Some("true"),
                groups: groups(&c.groups),
                github: None,
                name: c.name,
                authorized_party: c.azp.or(c.client_id),
                audiences: audiences(c.aud),
                permissions: Grants::from_claim(&c.permissions),
                abac_required: Grants::from_claim(&c.abac_required),
                expires_at,
                header_values: Default::default(),
            }),
            c.nonce,
        ))
    }

    /// The IdP key that signed a token with this header (fetching the keys again, within the
    /// refetch limit, for a `kid` not seen yet), if it may verify the header's algorithm.
    async fn key_for(
        &self,
        header: &jws::Header,
    ) -> Result<Arc<super::jwks::VerifyKey>, TokenError> {
        let key = match self.find_key(header.kid.as_deref(), header.alg) {
            Some(k) => k,
            None => {
                if self.keys.may_refetch() {
                    self.refresh_keys().await;
                }
                if !self.keys.is_loaded() {
                    return Err(TokenError::KeysUnavailable);
                }
                self.find_key(header.kid.as_deref(), header.alg)
                    .ok_or(TokenError::UnknownKey)?
            }
        };
        if !key.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmRefused(format!(
                "{:?} with this key",
                header.alg
            )));
        }
        Ok(key)
    }

    /// A back-channel logout token's signature (by the IdP's keys, an accepted asymmetric
    /// algorithm), `iss`, `aud` = `client_id`, and `exp`/`nbf` when present. Returns its
    /// header's `typ` and its claims; what makes it a logout token is checked by
    /// [`crate::identity::backchannel`]. Never cached: each is used once.
    pub async fn verify_logout_token(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<(Option<String>, serde_json::Map<String, serde_json::Value>), TokenError> {
        let jws = Jws::parse(token)?;
        let alg = jws.header.alg;
        let Some(mut validation) = self
            .id_token_validation(alg, client_id, true)
            .map(Cow::into_owned)
        else {
            return Err(TokenError::AlgorithmRefused(format!("{alg:?}")));
        };
        validation.set_required_spec_claims(&["iss", "aud"]);
        let key = self.key_for(&jws.header).await?;
        let payload = jws.verify(&key)?;
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        jws::check(&Registered::of(&claims), &validation, now_secs())?;
        self.metrics
            .jwt_verifications
            .with_label_values(&["verified"])
            .inc();
        Ok((jws.header.typ, claims))
    }

    fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<super::jwks::VerifyKey>> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None => self.keys.only_key_for(alg),
        }
    }

    /// Re-fetches the keys; when a key disappeared, every cached token (bearer, API-key and
    /// session alike) is verified again, and [`Verifier::removals`] counts one more.
    pub async fn refresh_keys(&self) -> bool {
        match self.keys.refresh().await {
            Ok(r) => {
                if r.removed_keys {
                    self.removals.fetch_add(1, Ordering::AcqRel);
                    self.verified.invalidate_all();
                    tracing::info!(
                        "a signing key left the IdP's JWKS: every cached token is verified again"
                    );
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

/// The validations of one audience set, one per accepted algorithm.
fn validations(idp: &IdpSettings, audiences: &[String]) -> Vec<(Algorithm, Validation)> {
    idp.algorithms
        .iter()
        .map(|&alg| {
            let mut validation = Validation::new(alg);
            validation.set_issuer(&[&idp.issuer]);
            validation.set_audience(audiences);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.leeway = idp.leeway.as_secs();
            validation.validate_nbf = true;
            (alg, validation)
        })
        .collect()
}

/// The `aud` claim's values (a string or an array of strings).
fn audiences(aud: Option<serde_json::Value>) -> Box<[Box<str>]> {
    match aud {
        Some(serde_json::Value::String(s)) => Box::new([s.into_boxed_str()]),
        Some(serde_json::Value::Array(list)) => list
            .into_iter()
            .filter_map(|v| v.as_str().map(Into::into))
            .collect(),
        _ => Box::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::jwks::parse_jwks;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use devidp::keys::SigningKey;
    use serde_json::json;

    const ISS: &str = "https://idp.test";

    fn verifier(keys: &[&SigningKey]) -> Verifier {
        let text = format!("[idp]\nissuer = \"{ISS}\"\naudience = \"api\"\nleeway = \"5s\"\n[api_keys]\naudience = \"keys\"\n[[upstreams]]\nname = \"u\"\naddresses = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\nupstream = \"u\"\nauth = \"none\"\n");
        let c = crate::config::parse("t.toml", &text, &|_| None).unwrap();
        let metrics = Metrics::new();
        let store = Arc::new(KeyStore::from_config(&c.idp, metrics.clone()));
        let jwks = json!({"keys": keys.iter().map(|k| k.public_jwk().clone()).collect::<Vec<_>>()});
        store.install(parse_jwks(&jwks, &c.idp.algorithms).unwrap());
        Verifier::from_config(&c.idp, &c.cache, store, metrics)
            .with_api_key_audiences(&c.idp, &c.api_keys.audiences)
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"iss": ISS, "aud": "api", "sub": "u1", "exp": now_secs() + 600, "permissions": {"client_a:x": ["read"]}});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    #[tokio::test]
    async fn accepts_every_asymmetric_algorithm() {
        for alg in [
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ] {
            let key = SigningKey::generate(alg).unwrap();
            let v = verifier(&[&key]);
            let p = v
                .verify(&key.sign(&claims(
                    json!({"email": "e@x", "azp": "abc", "aud": ["other", "api"]}),
                )))
                .await
                .unwrap();
            assert_eq!(
                (
                    p.subject.as_str(),
                    p.email.as_deref(),
                    p.authorized_party.as_deref()
                ),
                ("u1", Some("e@x"), Some("abc")),
                "{alg:?}"
            );
            assert!(p.permissions.lists("client_a:x", "read"));
        }
    }

    #[tokio::test]
    async fn refusal_table() {
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let other = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let v = verifier(&[&key]);
        let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let payload = b64(claims(json!({})));
        let swapped_kid = {
            let t = other.sign(&claims(json!({})));
            let parts: Vec<&str> = t.split('.').collect();
            format!(
                "{}.{}.{}",
                b64(json!({"alg": "EdDSA", "kid": key.kid()})),
                parts[1],
                parts[2]
            )
        };
        let mut not_utf8 = claims(json!({})).to_string().into_bytes();
        not_utf8.pop();
        not_utf8.extend_from_slice(b",\"note\":\"\xbe\xbe\"}");
        assert!(
            v.verify(&key.sign_bytes(claims(json!({})).to_string().as_bytes()))
                .await
                .is_ok(),
            "sign_bytes signs what verifies"
        );
        let cases: Vec<(&str, String, TokenError)> = vec![
            ("garbage", "not.a.jwt".into(), TokenError::Malformed),
            (
                "alg none",
                format!("{}.{payload}.", b64(json!({"alg": "none"}))),
                TokenError::Malformed,
            ),
            (
                "HS256",
                format!(
                    "{}.{payload}.c2ln",
                    b64(json!({"alg": "HS256", "kid": key.kid()}))
                ),
                TokenError::AlgorithmRefused("HS256".into()),
            ),
            (
                "RS256 header on an Ed25519 key",
                format!(
                    "{}.{payload}.c2ln",
                    b64(json!({"alg": "RS256", "kid": key.kid()}))
                ),
                TokenError::AlgorithmRefused("RS256 with this key".into()),
            ),
            (
                "unknown kid",
                other.sign(&claims(json!({}))),
                TokenError::UnknownKey,
            ),
            ("bad signature", swapped_kid, TokenError::BadSignature),
            (
                "expired",
                key.sign(&claims(json!({"exp": now_secs() - 60}))),
                TokenError::Expired,
            ),
            (
                "expired within leeway is fine, beyond is not",
                key.sign(&claims(json!({"exp": now_secs() - 10}))),
                TokenError::Expired,
            ),
            (
                "not yet valid",
                key.sign(&claims(json!({"nbf": now_secs() + 60}))),
                TokenError::NotYetValid,
            ),
            (
                "wrong issuer",
                key.sign(&claims(json!({"iss": "https://evil.test"}))),
                TokenError::WrongIssuer,
            ),
            (
                "no issuer",
                key.sign(&claims(json!({"iss": null}))),
                TokenError::WrongIssuer,
            ),
            (
                "wrong audience",
                key.sign(&claims(json!({"aud": "other"}))),
                TokenError::WrongAudience,
            ),
            (
                "no audience",
                key.sign(&claims(json!({"aud": null}))),
                TokenError::WrongAudience,
            ),
            (
                "no exp",
                key.sign(&claims(json!({"exp": null}))),
                TokenError::MissingClaim("exp"),
            ),
            (
                "no sub",
                key.sign(&claims(json!({"sub": null}))),
                TokenError::MissingClaim("sub"),
            ),
            (
                "empty sub",
                key.sign(&claims(json!({"sub": ""}))),
                TokenError::MissingClaim("sub"),
            ),
            // Found by the jwt_verify fuzz target: invalid UTF-8 inside a claim authgate does not read.
            (
                "payload not UTF-8",
                key.sign_bytes(&not_utf8),
                TokenError::Malformed,
            ),
        ];
        for (name, token, want) in cases {
            assert_eq!(v.verify(&token).await.unwrap_err(), want, "{name}");
        }
        // Bytes as a caller sends them (the verifier is the first to check a bearer token's
        // characters): a valid token with a space, a non-UTF-8 byte or a quote in it.
        let good = key.sign(&claims(json!({})));
        for (name, bytes) in [
            ("space", format!("{good} x").into_bytes()),
            ("not UTF-8", [good.as_bytes(), b"\xff"].concat()),
            ("quote", format!("\"{good}\"").into_bytes()),
        ] {
            for round in ["first", "again"] {
                assert_eq!(
                    v.verify(&bytes).await.unwrap_err(),
                    TokenError::Malformed,
                    "{name}, {round}"
                );
            }
        }
        assert!(v.verify(good.as_bytes()).await.is_ok());
        // Within the leeway and with a millisecond iat: accepted.
        assert!(v
            .verify(&key.sign(&claims(
                json!({"exp": now_secs() - 2, "iat": now_secs() * 1000})
            )))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn keys_never_loaded_is_not_the_tokens_fault() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let text = format!("[idp]\nissuer = \"{ISS}\"\ndiscovery_url = \"http://127.0.0.1:1/.well-known/openid-configuration\"\ntimeout = \"200ms\"\naudience = \"api\"\n[[upstreams]]\nname = \"u\"\naddresses = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\nupstream = \"u\"\nauth = \"none\"\n");
        let c = crate::config::parse("t.toml", &text, &|_| None).unwrap();
        let store = Arc::new(KeyStore::from_config(&c.idp, Metrics::new()));
        let v = Verifier::from_config(&c.idp, &c.cache, store, Metrics::new());
        assert_eq!(
            v.verify(&key.sign(&claims(json!({})))).await.unwrap_err(),
            TokenError::KeysUnavailable
        );
    }

    #[tokio::test]
    async fn cached_tokens_skip_the_signature_and_expire_with_exp() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let v = verifier(&[&key]);
        let t = key.sign(&claims(json!({})));
        assert!(
            v.cached(&t).is_none(),
            "nothing is cached before a verification"
        );
        let first = v.verify(&t).await.unwrap();
        let second = v.verify(&t).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "the second verification came from the cache"
        );
        assert!(Arc::ptr_eq(&first, &v.cached(&t).unwrap()));
        assert!(v.cached(&format!("{t}x")).is_none());
        // Removing every key drops the cache on the next refresh; `install` alone does not.
        v.keys().install(Default::default());
        assert!(v.verify(&t).await.is_ok());

        // A cached token leaves the cache at its `exp`, even while the leeway would still
        // accept it on a fresh verification.
        let v = verifier(&[&key]);
        let short = key.sign(&claims(json!({"exp": now_secs() + 1})));
        assert!(v.verify(&short).await.is_ok());
        assert!(v.cached(&short).is_some());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(
            v.cached(&short).is_none(),
            "an expired token was still served from the cache"
        );
    }

    #[tokio::test]
    async fn a_token_verified_for_one_audience_set_is_not_accepted_for_the_other() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let v = verifier(&[&key]);
        let bearer = key.sign(&claims(json!({})));
        let exchanged = key.sign(&claims(json!({"aud": "keys"})));
        let both = key.sign(&claims(json!({"aud": ["api", "keys"]})));
        let cases = [
            (
                "a bearer token",
                &bearer,
                Ok(()),
                Err(TokenError::WrongAudience),
            ),
            (
                "an API-key token",
                &exchanged,
                Err(TokenError::WrongAudience),
                Ok(()),
            ),
            ("a token for both", &both, Ok(()), Ok(())),
        ];
        for (name, token, as_api, as_key) in cases {
            // Twice each way, in both orders: the second answer comes from a cache.
            for _ in 0..2 {
                assert_eq!(
                    v.verify_for(token, Audience::Api).await.map(|_| ()),
                    as_api,
                    "{name} as a bearer token"
                );
                assert_eq!(
                    v.verify_for(token, Audience::ApiKey).await.map(|_| ()),
                    as_key,
                    "{name} as an API-key token"
                );
            }
        }
        assert!(
            v.cached(&exchanged).is_none(),
            "an API-key token is not in the bearer cache"
        );
        assert!(v.cached(&bearer).is_some());
    }

    #[tokio::test]
    async fn a_removed_key_clears_every_audience_sets_cache_at_once() {
        let idp = devidp::idp::DevIdp::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let text = format!(
            "[idp]\nissuer = \"{}\"\naudience = \"api\"\njwks_min_refetch_interval = \"1ms\"\n[api_keys]\naudience = \"keys\"\n[[upstreams]]\nname = \"u\"\naddresses = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\nupstream = \"u\"\nauth = \"none\"\n",
            idp.issuer()
        );
        let c = crate::config::parse("t.toml", &text, &|_| None).unwrap();
        let store = Arc::new(KeyStore::from_config(&c.idp, Metrics::new()));
        let v = Verifier::from_config(&c.idp, &c.cache, store, Metrics::new())
            .with_api_key_audiences(&c.idp, &c.api_keys.audiences);
        let kept = idp.active_kid();
        let removed = idp.rotate(Algorithm::ES256).unwrap();
        assert!(v.refresh_keys().await);
        let sign = |kid: &str, extra: serde_json::Value| {
            let mut c = claims(extra);
            c["iss"] = idp.issuer().into();
            idp.mint_with(kid, c).unwrap()
        };
        let bearer = sign(&removed, json!({}));
        let exchanged = sign(&removed, json!({"aud": "keys"}));
        let id_token = sign(&removed, json!({"aud": "client_x"}));
        let still_good = sign(&kept, json!({}));
        assert!(v.verify_for(&bearer, Audience::Api).await.is_ok());
        assert!(v.verify_for(&exchanged, Audience::ApiKey).await.is_ok());
        assert!(v
            .session_identity(&id_token, "client_x", now_secs() + 600)
            .await
            .is_ok());
        assert!(v.verify(&still_good).await.is_ok());
        assert!(v.cached(&bearer).is_some());
        assert_eq!(v.removals(), 0);
        // The IdP drops a key; one refresh (whatever triggers it) forgets every use of it.
        assert!(idp.remove_key(&removed));
        assert!(v.refresh_keys().await);
        assert_eq!(v.removals(), 1);
        assert!(v.cached(&bearer).is_none());
        assert_eq!(
            v.verify_for(&bearer, Audience::Api).await.unwrap_err(),
            TokenError::UnknownKey
        );
        assert_eq!(
            v.verify_for(&exchanged, Audience::ApiKey)
                .await
                .unwrap_err(),
            TokenError::UnknownKey
        );
        assert_eq!(
            v.session_identity(&id_token, "client_x", now_secs() + 600)
                .await
                .unwrap_err(),
            TokenError::UnknownKey
        );
        assert!(
            v.verify(&still_good).await.is_ok(),
            "tokens of the kept key verify again"
        );
        idp.shutdown();
    }
}
