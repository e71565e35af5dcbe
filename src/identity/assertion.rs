//! Signed identity for upstreams: a short-lived JWT, signed by the gateway's own key, that
//! tells an upstream who the caller is and how the request was authorised. Upstreams verify
//! it with the keys published at `/.well-known/authgate/jwks.json` instead of trusting plain
//! headers. Assertions are cached per (caller, route) for half their lifetime, so the hot path
//! signs rarely.

use crate::config::model::IdentityJwtSettings;
use crate::identity::signing::{KeyError, SigningKey};
use moka::sync::Cache;
use std::sync::Arc;
use std::time::Duration;

/// The path the gateway's public keys are served at, on the proxy and admin listeners.
pub const JWKS_PATH: &str = "/.well-known/authgate/jwks.json";

/// Why the signing keys could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// A key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configured header name is not one.
    #[error("{0:?} is not a header name")]
    Header(String),
    /// A key file is not a usable key.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        source: KeyError,
    },
}

/// What an assertion says.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    /// The caller's subject, unique across providers ([`crate::identity::Principal::upstream_subject`]).
    pub subject: &'a str,
    /// The caller's email, when it goes upstream (verified, or `unverified_email = "send"`).
    pub email: Option<&'a str>,
    /// Whether the provider verified `email` (present with it).
    pub email_verified: Option<bool>,
    /// The provider that vouched: its configured name, `idp` for the `[idp]`.
    pub provider: &'a str,
    /// That provider's issuer: the `[idp]`'s `issuer`, a GitHub-type provider's `base_url`.
    pub provider_iss: &'a str,
    /// The client app's name.
    pub client: Option<&'a str>,
    /// The permission granted, `entity:action`.
    pub permission: Option<&'a str>,
    /// How it was decided: `static`, `abac` or `authenticated`.
    pub decision: &'a str,
    /// The upstream's name (the assertion's `aud`).
    pub audience: &'a str,
}

/// Signs identity assertions and publishes the public keys.
pub struct Asserter {
    key: SigningKey,
    jwks: String,
    issuer: String,
    lifetime: Duration,
    header: http::HeaderName,
    cache: Cache<crate::digest::Digest, Arc<str>>,
    /// Cache keys: a keyed digest of the claims, as every cache of the gateway.
    keys: crate::digest::KeyedDigest,
}

impl Asserter {
    /// Loads (or generates) the signing key and the retired keys still published.
    pub fn from_config(s: &IdentityJwtSettings) -> Result<Asserter, AssertionError> {
        let load = |path: &std::path::Path| -> Result<SigningKey, AssertionError> {
            let text = std::fs::read_to_string(path).map_err(|source| AssertionError::Read {
                path: path.display().to_string(),
                source,
            })?;
            SigningKey::from_pkcs8_pem(s.algorithm, &text).map_err(|source| AssertionError::Key {
                path: path.display().to_string(),
                source,
            })
        };
        let key = match &s.key_file {
            Some(p) => load(p)?,
            None => {
                tracing::info!("no identity_jwt.key_file: signing identity assertions with a key generated at start");
                SigningKey::generate(s.algorithm).map_err(|source| AssertionError::Key {
                    path: "(generated)".into(),
                    source,
                })?
            }
        };
        let mut published = vec![key.public_jwk().clone()];
        for p in &s.previous_key_files {
            published.push(load(p)?.public_jwk().clone());
        }
        Ok(Asserter {
            key,
            jwks: serde_json::json!({ "keys": published }).to_string(),
            issuer: s.issuer.clone(),
            lifetime: s.lifetime,
            header: http::HeaderName::from_bytes(s.header.as_bytes())
                .map_err(|_| AssertionError::Header(s.header.clone()))?,
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(s.lifetime / 2)
                .build(),
            keys: crate::digest::KeyedDigest::random(),
        })
    }

    /// The header the assertion travels in.
    pub fn header(&self) -> &http::HeaderName {
        &self.header
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// A signed assertion for these claims, reused while younger than half its lifetime.
    pub fn assertion(&self, c: &Claims<'_>) -> Arc<str> {
        // An absent part and an empty one differ: absent parts are a lone NUL, which no claim is.
        let parts = [
            c.subject,
            c.email.unwrap_or("\u{0}"),
            match c.email_verified {
                Some(true) => "true",
                Some(false) => "false",
                None => "\u{0}",
            },
            c.provider,
            c.provider_iss,
            c.client.unwrap_or("\u{0}"),
            c.permission.unwrap_or("\u{0}"),
            c.decision,
            c.audience,
        ];
        let key = self.keys.of(&parts.map(str::as_bytes));
        self.cache.get_with(key, || {
            let now = super::now_secs();
            let claims = serde_json::json!({
                "iss": self.issuer,
                "aud": c.audience,
                "sub": c.subject,
                "email": c.email,
                "email_verified": c.email_verified,
                "provider": c.provider,
                "provider_iss": c.provider_iss,
                "client": c.client,
                "permission": c.permission,
                "decision": c.decision,
                "iat": now,
                "exp": now + self.lifetime.as_secs().max(1),
            });
            self.key.sign(&claims).into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    #[test]
    fn assertions_verify_with_the_published_keys() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA] {
            let s = IdentityJwtSettings {
                algorithm: alg,
                key_file: None,
                previous_key_files: vec![],
                lifetime: Duration::from_secs(60),
                issuer: "authgate".into(),
                header: "x-auth-jwt".into(),
            };
            let a = Asserter::from_config(&s).unwrap();
            let c = Claims {
                subject: "u1",
                email: Some("a@b"),
                email_verified: Some(true),
                provider: "idp",
                provider_iss: "https://idp.example",
                client: Some("billing"),
                permission: Some("client_abc:invoice:read"),
                decision: "static",
                audience: "billing-api",
            };
            let t = a.assertion(&c);
            assert_eq!(t, a.assertion(&c), "reused while fresh");
            let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(a.jwks()).unwrap();
            let key = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
            let mut v = Validation::new(alg);
            v.set_audience(&["billing-api"]);
            v.set_issuer(&["authgate"]);
            let data = jsonwebtoken::decode::<serde_json::Value>(&*t, &key, &v).unwrap();
            assert_eq!(data.claims["sub"], "u1");
            assert_eq!(data.claims["decision"], "static");
            assert_eq!(data.claims["permission"], "client_abc:invoice:read");
            assert_eq!(data.claims["email_verified"], true);
            assert_eq!(data.claims["provider"], "idp");
            assert_eq!(data.claims["provider_iss"], "https://idp.example");
            // Another provider's user is another assertion, never a cached one.
            let gh = a.assertion(&Claims {
                subject: "github:1",
                provider: "github",
                provider_iss: "https://github.com",
                ..c
            });
            let gh = jsonwebtoken::decode::<serde_json::Value>(&*gh, &key, &v).unwrap();
            assert_eq!(gh.claims["sub"], "github:1");
            assert_eq!(gh.claims["provider"], "github");
            // Another upstream gets its own audience.
            let other = a.assertion(&Claims {
                audience: "reports-api",
                ..c
            });
            assert!(jsonwebtoken::decode::<serde_json::Value>(&*other, &key, &v).is_err());
        }
    }

    #[test]
    fn key_files_load_with_stable_kids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate()
            .unwrap()
            .to_pkcs8()
            .unwrap();
        std::fs::write(
            &path,
            pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec())),
        )
        .unwrap();
        let s = IdentityJwtSettings {
            algorithm: Algorithm::EdDSA,
            key_file: Some(path.clone()),
            previous_key_files: vec![],
            lifetime: Duration::from_secs(60),
            issuer: "authgate".into(),
            header: "x-auth-jwt".into(),
        };
        let a = Asserter::from_config(&s).unwrap();
        let b = Asserter::from_config(&s).unwrap();
        assert_eq!(a.jwks(), b.jwks(), "the kid is derived from the key");
        let wrong_alg = IdentityJwtSettings {
            algorithm: Algorithm::ES256,
            ..s
        };
        let err = Asserter::from_config(&wrong_alg)
            .err()
            .expect("an EdDSA key is not an ES256 key");
        assert!(err.to_string().contains("not a valid ES256"), "{err}");
    }
}
