//! The IdP's signing keys: fetched from the JWKS (configured, or named by the shared
//! [`Discovery`] document, which is refreshed before each key fetch once it is stale),
//! cached by `kid`, refreshed in the background and on an unknown `kid` (rate limited,
//! one fetch at a time), and kept when the IdP is unreachable.

use super::discovery::{error_chain, Discovery, DiscoveryError};
use crate::config::model::IdpSettings;
use crate::config::validate::RSA_ALGORITHMS;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::Algorithm;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;

/// A verification key and the algorithms it may verify, parsed into aws-lc's key objects
/// when the JWKS is loaded (one per algorithm), so that a verification does no key setup.
pub struct VerifyKey {
    /// Key id (empty when the JWKS gave none).
    pub kid: String,
    /// Algorithms this key is for.
    pub algorithms: Vec<Algorithm>,
    /// The parsed key for each of `algorithms`, in the same order.
    parsed: Vec<ParsedPublicKey>,
}

impl VerifyKey {
    /// Parses `jwk` for each of `algorithms` (which must suit its key type).
    pub fn from_jwk(
        kid: String,
        jwk: &Jwk,
        algorithms: Vec<Algorithm>,
    ) -> Result<VerifyKey, String> {
        let parsed = algorithms
            .iter()
            .map(|&alg| parse_key(jwk, alg))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VerifyKey {
            kid,
            algorithms,
            parsed,
        })
    }

    /// Whether `signature` over `message` verifies with this key for `alg`. An algorithm the
    /// key is not for is refused as such.
    pub fn verify(
        &self,
        alg: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, crate::identity::verify::TokenError> {
        let i = self.algorithms.iter().position(|a| *a == alg);
        let key = i.and_then(|i| self.parsed.get(i)).ok_or_else(|| {
            crate::identity::verify::TokenError::AlgorithmRefused(format!("{alg:?} with this key"))
        })?;
        Ok(key.verify_sig(message, signature).is_ok())
    }
}

fn b64(field: &str, value: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|e| format!("{field} is not base64url: {e}"))
}

/// An RSA component without the leading zero bytes some IdPs write (RFC 7518 §6.3.1 says
/// there are none; aws-lc refuses them).
fn unsigned(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.get(zeros..).unwrap_or_default()
}

fn rsa_parameters(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// The key of `jwk` as aws-lc's parsed key for `alg`.
fn parse_key(jwk: &Jwk, alg: Algorithm) -> Result<ParsedPublicKey, String> {
    let rejected = |e: aws_lc_rs::error::KeyRejected| format!("not a usable {alg:?} key: {e}");
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(rsa), _) => {
            let params =
                rsa_parameters(alg).ok_or_else(|| format!("an RSA key cannot verify {alg:?}"))?;
            let (n, e) = (b64("n", &rsa.n)?, b64("e", &rsa.e)?);
            RsaPublicKeyComponents {
                n: unsigned(&n),
                e: unsigned(&e),
            }
            .to_parsed_public_key(params)
            .map_err(rejected)
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256 | Algorithm::ES384) => {
            let verification = match (alg, &ec.curve) {
                (Algorithm::ES256, EllipticCurve::P256) => &sig::ECDSA_P256_SHA256_FIXED,
                (Algorithm::ES384, EllipticCurve::P384) => &sig::ECDSA_P384_SHA384_FIXED,
                _ => return Err(format!("a key on {:?} cannot verify {alg:?}", ec.curve)),
            };
            let mut point = vec![0x04];
            point.extend(b64("x", &ec.x)?);
            point.extend(b64("y", &ec.y)?);
            ParsedPublicKey::new(verification, point).map_err(rejected)
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA)
            if okp.curve == EllipticCurve::Ed25519 =>
        {
            ParsedPublicKey::new(&sig::ED25519, b64("x", &okp.x)?).map_err(rejected)
        }
        _ => Err(format!("this key cannot verify {alg:?}")),
    }
}

/// Why the keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Network error, timeout or bad status.
    #[error("fetching {url} failed: {reason}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The document was not what was expected.
    #[error("{url} did not return a usable JWKS: {reason}")]
    Invalid {
        /// What was fetched.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The discovery document that names the JWKS is unavailable.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// Result of one refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    /// Some key that was cached before is gone now.
    pub removed_keys: bool,
}

/// The cached key set and how to refresh it.
pub struct KeyStore {
    keys: ArcSwap<HashMap<String, Arc<VerifyKey>>>,
    loaded: AtomicBool,
    generation: AtomicU64,
    last_fetch: Mutex<Option<Instant>>,
    /// Why the latest fetch failed (cleared by the next that succeeds), for `/readyz`.
    last_error: Mutex<Option<String>>,
    fetch_lock: tokio::sync::Mutex<()>,
    discovery: Arc<Discovery>,
    /// The configured JWKS location; `None`: the discovery document names it.
    jwks_url: Option<Url>,
    accepted: Vec<Algorithm>,
    min_refetch: Duration,
    http: reqwest::Client,
    metrics: Metrics,
}

impl KeyStore {
    /// Creates an empty store for the configured IdP.
    pub fn from_config(idp: &IdpSettings, metrics: Metrics) -> KeyStore {
        let http = crate::identity::idp_client(idp.timeout, true);
        KeyStore {
            keys: ArcSwap::from_pointee(HashMap::new()),
            loaded: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            last_fetch: Mutex::new(None),
            last_error: Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
            discovery: Arc::new(
                Discovery::from_config(idp).with_latency(metrics.idp_latency.clone()),
            ),
            jwks_url: idp.jwks_url.clone(),
            accepted: idp.algorithms.clone(),
            min_refetch: idp.jwks_min_refetch_interval,
            http,
            metrics,
        }
    }

    /// The IdP's discovery document, shared with the code flow.
    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    /// True once a key set has been fetched.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Why the latest key fetch failed, while the IdP keeps failing (`None` after a success).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The key with this id, from the cache only.
    pub fn get(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        self.keys.load().get(kid).cloned()
    }

    /// The only key that can verify `alg`, for tokens without `kid`.
    pub fn only_key_for(&self, alg: Algorithm) -> Option<Arc<VerifyKey>> {
        let keys = self.keys.load();
        let mut candidates = keys.values().filter(|k| k.algorithms.contains(&alg));
        match (candidates.next(), candidates.next()) {
            (Some(k), None) => Some(k.clone()),
            _ => None,
        }
    }

    /// Replaces the cached keys (a static key set, or tests).
    pub fn install(&self, keys: HashMap<String, Arc<VerifyKey>>) {
        self.metrics.jwks_keys.set(keys.len() as i64);
        self.keys.store(Arc::new(keys));
        self.loaded.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether an unknown `kid` may trigger a fetch now.
    pub fn may_refetch(&self) -> bool {
        let last = *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
        last.is_none_or(|t| t.elapsed() >= self.min_refetch)
    }

    /// Fetches the key set unless another caller fetched it while this one waited.
    pub async fn refresh(&self) -> Result<Refreshed, JwksError> {
        let seen = self.generation.load(Ordering::Acquire);
        let _only_one = self.fetch_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return Ok(Refreshed {
                removed_keys: false,
            });
        }
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let result = self.fetch().await;
        self.metrics
            .jwks_fetches
            .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
            .inc();
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            result.as_ref().err().map(ToString::to_string);
        let fresh = result?;
        let old = self.keys.load();
        let removed_keys = old.keys().any(|kid| !fresh.contains_key(kid));
        self.metrics.jwks_keys.set(fresh.len() as i64);
        self.keys.store(Arc::new(fresh));
        self.loaded.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(Refreshed { removed_keys })
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<VerifyKey>>, JwksError> {
        let jwks_url = match &self.jwks_url {
            Some(u) => u.clone(),
            None => self.discovery.jwks_uri().await?,
        };
        let fail = |reason: String| JwksError::Fetch {
            url: jwks_url.to_string(),
            reason,
        };
        let started = std::time::Instant::now();
        let sent = self.http.get(jwks_url.clone()).send().await;
        self.metrics
            .idp_latency
            .with_label_values(&["jwks"])
            .observe(started.elapsed().as_secs_f64());
        let resp = sent.map_err(|e| fail(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(fail(format!("status {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| fail(error_chain(&e)))?;
        let invalid = |reason: String| JwksError::Invalid {
            url: jwks_url.to_string(),
            reason,
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| invalid(format!("not JSON: {e}")))?;
        parse_jwks(&doc, &self.accepted).map_err(invalid)
    }
}

/// Reads a JWKS document; keys that are unusable or not for an accepted algorithm are skipped.
pub fn parse_jwks(
    doc: &serde_json::Value,
    accepted: &[Algorithm],
) -> Result<HashMap<String, Arc<VerifyKey>>, String> {
    let list = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("it has no \"keys\" array")?;
    let mut out = HashMap::new();
    for raw in list {
        let kid = raw
            .get("kid")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        if raw
            .get("use")
            .and_then(|u| u.as_str())
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let jwk: Jwk = match serde_json::from_value(raw.clone()) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(kid, error = %e, "skipping a JWKS key that cannot be read");
                continue;
            }
        };
        let algorithms: Vec<Algorithm> = key_algorithms(&jwk)
            .into_iter()
            .filter(|a| accepted.contains(a))
            .collect();
        if algorithms.is_empty() {
            continue;
        }
        match VerifyKey::from_jwk(kid.clone(), &jwk, algorithms) {
            Ok(key) => {
                out.insert(kid, Arc::new(key));
            }
            Err(e) => tracing::warn!(kid, error = %e, "skipping a JWKS key that cannot be used"),
        }
    }
    Ok(out)
}

/// The algorithms a JWK may verify: its `alg` when given, else what its key type allows.
/// Symmetric (`oct`) keys verify nothing.
fn key_algorithms(jwk: &Jwk) -> Vec<Algorithm> {
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => vec![],
        },
        AlgorithmParameters::OctetKey(_) => vec![],
    };
    match jwk.common.key_algorithm {
        None => by_type,
        Some(ka) => match key_algorithm(ka) {
            Some(a) if by_type.contains(&a) => vec![a],
            _ => vec![],
        },
    }
}

fn key_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::DEFAULT_ALGORITHMS;

    #[test]
    fn jwks_parsing_skips_what_cannot_verify() {
        let doc = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "mislabelled", "alg": "RS256"},
            {"kty": "weird", "kid": "unknown"}
        ]});
        let keys = parse_jwks(&doc, &DEFAULT_ALGORITHMS).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["ed"]);
        assert_eq!(keys["ed"].algorithms, vec![Algorithm::EdDSA]);
        // Not accepted by config: skipped.
        assert!(parse_jwks(&doc, &[Algorithm::RS256]).unwrap().is_empty());
        assert!(parse_jwks(&serde_json::json!({"nokeys": []}), &DEFAULT_ALGORITHMS).is_err());
    }

    #[test]
    fn parsed_keys_verify_each_algorithm_and_refuse_signatures_that_do_not_verify() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
        use aws_lc_rs::signature::{
            EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
            ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        let rng = SystemRandom::new();
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let (n, e) = (
            rsa.public_key()
                .modulus()
                .big_endian_without_leading_zero()
                .to_vec(),
            rsa.public_key()
                .exponent()
                .big_endian_without_leading_zero()
                .to_vec(),
        );
        let p256 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let p384 = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let ed = Ed25519KeyPair::generate().unwrap();
        let point = |k: &EcdsaKeyPair| {
            let p = k.public_key().as_ref();
            let half = (p.len() - 1) / 2;
            (b64(&p[1..=half]), b64(&p[half + 1..]))
        };
        let ((x256, y256), (x384, y384)) = (point(&p256), point(&p384));
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": b64(&n), "e": b64(&e)},
            // A leading zero byte in `n` (some IdPs write one) is the same key.
            {"kty": "RSA", "kid": "rsa0", "n": b64(&[&[0u8][..], &n].concat()), "e": b64(&e)},
            {"kty": "EC", "crv": "P-256", "kid": "p256", "x": x256, "y": y256},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": x384, "y": y384},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed.public_key().as_ref())},
            // Not a point on the curve: skipped when loaded, not at the first verification.
            {"kty": "EC", "crv": "P-256", "kid": "off-curve", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
        ]});
        let keys = parse_jwks(&doc, &DEFAULT_ALGORITHMS).unwrap();
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["ed", "p256", "p384", "rsa", "rsa0"]);
        let message = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1MSJ9";
        let rsa_sign = |pad: &'static dyn aws_lc_rs::signature::RsaEncoding| {
            let mut out = vec![0; rsa.public_modulus_len()];
            rsa.sign(pad, &rng, message, &mut out).unwrap();
            out
        };
        use aws_lc_rs::signature as s;
        let cases: Vec<(&str, Algorithm, Vec<u8>)> = vec![
            ("rsa", Algorithm::RS256, rsa_sign(&s::RSA_PKCS1_SHA256)),
            ("rsa", Algorithm::RS384, rsa_sign(&s::RSA_PKCS1_SHA384)),
            ("rsa", Algorithm::RS512, rsa_sign(&s::RSA_PKCS1_SHA512)),
            ("rsa", Algorithm::PS256, rsa_sign(&s::RSA_PSS_SHA256)),
            ("rsa", Algorithm::PS384, rsa_sign(&s::RSA_PSS_SHA384)),
            ("rsa", Algorithm::PS512, rsa_sign(&s::RSA_PSS_SHA512)),
            ("rsa0", Algorithm::RS256, rsa_sign(&s::RSA_PKCS1_SHA256)),
            (
                "p256",
                Algorithm::ES256,
                p256.sign(&rng, message).unwrap().as_ref().to_vec(),
            ),
            (
                "p384",
                Algorithm::ES384,
                p384.sign(&rng, message).unwrap().as_ref().to_vec(),
            ),
            ("ed", Algorithm::EdDSA, ed.sign(message).as_ref().to_vec()),
        ];
        for (kid, alg, signature) in cases {
            let key = &keys[kid];
            assert_eq!(
                key.verify(alg, message, &signature),
                Ok(true),
                "{kid} {alg:?}"
            );
            let mut tampered = signature.clone();
            tampered[signature.len() / 2] ^= 1;
            assert_eq!(
                key.verify(alg, message, &tampered),
                Ok(false),
                "{kid} {alg:?}: a changed signature"
            );
            assert_eq!(
                key.verify(alg, b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1MiJ9", &signature),
                Ok(false),
                "{kid} {alg:?}: another message"
            );
            assert_eq!(
                key.verify(alg, message, &[]),
                Ok(false),
                "{kid} {alg:?}: no signature"
            );
        }
        // A signature for one algorithm does not verify as another of the same key.
        assert_eq!(
            keys["rsa"].verify(Algorithm::PS256, message, &rsa_sign(&s::RSA_PKCS1_SHA256)),
            Ok(false)
        );
        // An algorithm the key is not for is refused before any verification.
        assert!(matches!(
            keys["p256"].verify(Algorithm::ES384, message, &[0; 96]),
            Err(crate::identity::verify::TokenError::AlgorithmRefused(_))
        ));
        assert!(matches!(
            keys["ed"].verify(Algorithm::RS256, message, &[0; 256]),
            Err(crate::identity::verify::TokenError::AlgorithmRefused(_))
        ));
        // Keys limited to configured algorithms carry only those.
        let only = parse_jwks(&doc, &[Algorithm::PS256]).unwrap();
        assert_eq!(only["rsa"].algorithms, vec![Algorithm::PS256]);
        assert!(only["rsa"]
            .verify(Algorithm::RS256, message, &rsa_sign(&s::RSA_PKCS1_SHA256))
            .is_err());
    }
}
