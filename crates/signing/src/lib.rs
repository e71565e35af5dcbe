//! JWT signing keys for authgate: an operator's PKCS#8 key file or a key generated at start,
//! published as a public JWK (RFC 7638 thumbprint as `kid` for key files) and used to sign JWTs.
//! The gateway signs its identity assertions with it (`authgate::identity::signing`), and the
//! development IdP (`devidp`) mints its tokens with it: one implementation for both, in a crate
//! of its own because the production gateway may not depend on the development IdP.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Why a signing key could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The algorithm is not one these keys sign with.
    #[error("algorithm {0:?} is not supported for signing keys: use RS256, PS256, ES256 or EdDSA")]
    Unsupported(Algorithm),
    /// The crypto library failed to generate or serialise the key pair.
    #[error("cannot generate {0:?} key pair")]
    Generate(Algorithm),
    /// The generated key could not be loaded for signing or exported as a JWK.
    #[error("cannot load generated {alg:?} key: {source}")]
    Load {
        /// The key's algorithm.
        alg: Algorithm,
        /// What `jsonwebtoken` reported.
        source: jsonwebtoken::errors::Error,
    },
    /// A key file that is not a usable PKCS#8 PEM key.
    #[error("{0}")]
    Pem(String),
}

/// A private signing key with its key id and public JWK; `Debug` never shows the private part.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

impl SigningKey {
    /// Generates a fresh key pair for `alg` (RS256 and PS256: RSA 2048; ES256: P-256;
    /// EdDSA: Ed25519) with a random 16-hex-digit key id.
    pub fn generate(alg: Algorithm) -> Result<SigningKey, KeyError> {
        let generate_failed = |_| KeyError::Generate(alg);
        let pkcs8: Vec<u8> = match alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(generate_failed)?;
                let der: Pkcs8V1Der<'static> = pair.as_der().map_err(generate_failed)?;
                der.as_ref().to_vec()
            }
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(generate_failed)?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::EdDSA => Ed25519KeyPair::generate()
                .and_then(|p| p.to_pkcs8())
                .map_err(generate_failed)?
                .as_ref()
                .to_vec(),
            other => return Err(KeyError::Unsupported(other)),
        };
        Self::from_pkcs8(alg, &pkcs8, Some(format!("{:016x}", rand::random::<u64>())))
    }

    /// Loads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`) for `alg`; its key id is
    /// the RFC 7638 thumbprint of its public key, so it stays the same across restarts.
    pub fn from_pkcs8_pem(alg: Algorithm, pem_text: &str) -> Result<SigningKey, KeyError> {
        let parsed = pem::parse(pem_text).map_err(|e| KeyError::Pem(e.to_string()))?;
        if parsed.tag() != "PRIVATE KEY" {
            return Err(KeyError::Pem(format!(
                "expected a PKCS#8 \"PRIVATE KEY\", found {:?}",
                parsed.tag()
            )));
        }
        Self::from_pkcs8(alg, parsed.contents(), None)
    }

    fn from_pkcs8(
        alg: Algorithm,
        pkcs8: &[u8],
        kid: Option<String>,
    ) -> Result<SigningKey, KeyError> {
        let load_failed = |source| KeyError::Load { alg, source };
        let rejected =
            |_| KeyError::Pem(format!("the key is not a valid {alg:?} PKCS#8 private key"));
        let (encoding, algorithm) = match alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                RsaKeyPair::from_pkcs8(pkcs8).map_err(rejected)?;
                let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec()));
                let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(load_failed)?;
                let jwk = Jwk::from_encoding_key(&encoding, alg).map_err(load_failed)?;
                (encoding, jwk.algorithm)
            }
            Algorithm::ES256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(rejected)?;
                let encoding = EncodingKey::from_ec_der(pkcs8);
                let jwk = Jwk::from_encoding_key(&encoding, alg).map_err(load_failed)?;
                (encoding, jwk.algorithm)
            }
            Algorithm::EdDSA => {
                // `Jwk::from_encoding_key` does not support Ed25519: build the OKP JWK by hand.
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(rejected)?;
                let encoding = EncodingKey::from_ed_der(pkcs8);
                let okp = OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                };
                (encoding, AlgorithmParameters::OctetKeyPair(okp))
            }
            other => return Err(KeyError::Unsupported(other)),
        };
        let mut jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(key_algorithm(alg)),
                ..CommonParameters::default()
            },
            algorithm,
        };
        let kid = kid.unwrap_or_else(|| jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256));
        jwk.common.key_id = Some(kid.clone());
        let jwk = serde_json::to_value(&jwk).map_err(|e| load_failed(e.into()))?;
        let key = SigningKey {
            kid,
            alg,
            encoding,
            jwk,
        };
        // Prove the key signs now, so `sign` cannot fail later.
        key.try_sign(&serde_json::json!({})).map_err(load_failed)?;
        Ok(key)
    }

    /// The key id, written as `kid` in the JWK and in every token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signing algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public JWK (with `kid`, `alg` and `use: "sig"`), as served in a JWKS.
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// Signs `claims` as a JWT whose header carries `alg`, `kid` and `typ: JWT`.
    #[allow(
        clippy::expect_used,
        reason = "every key is proven to sign when it is loaded, and a JSON value always serialises"
    )]
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.try_sign(claims)
            .expect("signing key was proven to sign when it was generated")
    }

    /// Signs `claims` like [`SigningKey::sign`] but without `kid` in the header (for tests of
    /// relying parties picking the key by algorithm); empty if signing fails.
    pub fn sign_without_kid(&self, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.encoding).unwrap_or_default()
    }

    /// Signs `claims` like [`SigningKey::sign`] with `typ` in the header instead of `JWT` (e.g.
    /// `logout+jwt` for a back-channel logout token); empty if signing fails.
    pub fn sign_with_typ(&self, claims: &serde_json::Value, typ: &str) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap_or_default()
    }

    /// Signs the payload bytes exactly as given, under a header with `alg`, `kid` and
    /// `typ: JWT` (for tests that need a payload no JSON serialiser writes, such as invalid
    /// UTF-8); empty if signing fails.
    pub fn sign_bytes(&self, payload: &[u8]) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let Ok(header) = serde_json::to_string(&header) else {
            return String::new();
        };
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        match jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg) {
            Ok(signature) => format!("{input}.{signature}"),
            Err(_) => String::new(),
        }
    }

    fn try_sign(&self, claims: &serde_json::Value) -> jsonwebtoken::errors::Result<String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_key", &"***")
            .finish()
    }
}

/// The JWK `alg` value for a signing algorithm.
fn key_algorithm(alg: Algorithm) -> KeyAlgorithm {
    match alg {
        Algorithm::HS256 => KeyAlgorithm::HS256,
        Algorithm::HS384 => KeyAlgorithm::HS384,
        Algorithm::HS512 => KeyAlgorithm::HS512,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        Algorithm::ES384 => KeyAlgorithm::ES384,
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::RS384 => KeyAlgorithm::RS384,
        Algorithm::RS512 => KeyAlgorithm::RS512,
        Algorithm::PS256 => KeyAlgorithm::PS256,
        Algorithm::PS384 => KeyAlgorithm::PS384,
        Algorithm::PS512 => KeyAlgorithm::PS512,
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
    use serde_json::json;

    #[test]
    fn signed_tokens_verify_with_the_public_jwk() {
        let cases = [
            (Algorithm::RS256, "RSA"),
            (Algorithm::PS256, "RSA"),
            (Algorithm::ES256, "EC"),
            (Algorithm::EdDSA, "OKP"),
        ];
        for (alg, kty) in cases {
            let key = SigningKey::generate(alg).expect("generate key");
            let jwk_json = key.public_jwk();
            assert_eq!(jwk_json["kty"], kty, "{alg:?}");
            assert_eq!(jwk_json["kid"], key.kid(), "{alg:?}");
            assert_eq!(jwk_json["use"], "sig", "{alg:?}");
            assert_eq!(
                jwk_json["alg"],
                serde_json::to_value(alg).expect("alg"),
                "{alg:?}"
            );
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(jwk_json.get(private).is_none(), "{alg:?} leaks {private}");
            }
            assert_eq!(key.kid().len(), 16);

            let token = key.sign(&json!({"sub": "user_alice", "exp": 4_000_000_000u64}));
            let header = decode_header(&token).expect("header");
            assert_eq!(header.alg, alg);
            assert_eq!(header.kid.as_deref(), Some(key.kid()));
            assert_eq!(header.typ.as_deref(), Some("JWT"));

            let jwk: Jwk = serde_json::from_value(jwk_json.clone()).expect("parse jwk");
            let decoding = DecodingKey::from_jwk(&jwk).expect("decoding key");
            let data = decode::<serde_json::Value>(&token, &decoding, &Validation::new(alg))
                .unwrap_or_else(|e| panic!("{alg:?} token does not verify: {e}"));
            assert_eq!(data.claims["sub"], "user_alice");
        }
    }

    #[test]
    fn another_key_does_not_verify() {
        let signer = SigningKey::generate(Algorithm::EdDSA).expect("generate");
        let other = SigningKey::generate(Algorithm::EdDSA).expect("generate");
        assert_ne!(signer.kid(), other.kid());
        let jwk: Jwk = serde_json::from_value(other.public_jwk().clone()).expect("jwk");
        let token = signer.sign(&json!({"exp": 4_000_000_000u64}));
        let decoding = DecodingKey::from_jwk(&jwk).expect("decoding key");
        assert!(
            decode::<serde_json::Value>(&token, &decoding, &Validation::new(Algorithm::EdDSA))
                .is_err()
        );
    }

    #[test]
    fn refuses_other_algorithms() {
        for alg in [Algorithm::HS256, Algorithm::RS384, Algorithm::ES384] {
            assert!(matches!(SigningKey::generate(alg), Err(KeyError::Unsupported(a)) if a == alg));
        }
    }

    #[test]
    fn debug_hides_private_key() {
        let key = SigningKey::generate(Algorithm::ES256).expect("generate");
        let shown = format!("{key:?}");
        assert!(shown.contains(key.kid()) && shown.contains("***"));
        assert!(!shown.contains("encoding"));
    }
}
