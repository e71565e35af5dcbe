//! JWT header and payload parsing with verification against a fixed key set (one Ed25519
//! key, kid `fuzz`). The first byte picks what the rest is: a raw token; a header and a
//! payload (split at the first newline) signed by the fixed key; or a payload under a valid
//! header, signed. Anything the verifier accepts must carry the configured issuer, audience
//! and a subject. No network: the JWKS URL is a closed loopback port, tried once at start.
#![no_main]

use authgate::identity::jwks::parse_jwks;
use authgate::identity::jwks::KeyStore;
use authgate::identity::verify::{Audience, Verifier};
use authgate::metrics::Metrics;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

const ISS: &str = "https://idp.test";

struct Fixture {
    rt: tokio::runtime::Runtime,
    verifier: Verifier,
    key: Ed25519KeyPair,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let text = format!(
            "[idp]\nissuer = \"{ISS}\"\naudience = \"api\"\nleeway = \"5s\"\njwks_url = \"http://127.0.0.1:9/jwks\"\njwks_min_refetch_interval = \"100000h\"\n\
             [api_keys]\naudience = \"keys\"\n[[upstreams]]\nname = \"u\"\naddresses = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\nupstream = \"u\"\nauth = \"none\"\n"
        );
        let c = authgate::config::parse("fuzz.toml", &text, &|_| None).expect("the fixture config is valid");
        let key = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a fixed seed is a key");
        let metrics = Metrics::new();
        let store = Arc::new(KeyStore::from_config(&c.idp, metrics.clone()));
        let verifier = Verifier::from_config(&c.idp, &c.cache, store.clone(), metrics).with_api_key_audiences(&c.idp, &c.api_keys.audiences);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        // The one fetch the store may make: refused at once on loopback, then never again.
        rt.block_on(verifier.refresh_keys());
        let x = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
        let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "fuzz", "alg": "EdDSA", "use": "sig"}]});
        store.install(parse_jwks(&jwks, &c.idp.algorithms).expect("the fixed JWKS parses"));
        Fixture { rt, verifier, key }
    })
}

fn signed(key: &Ed25519KeyPair, header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // The token as bytes: the bearer path reads what the client sent, UTF-8 or not.
    let (token, payload): (Vec<u8>, Option<&[u8]>) = match mode % 3 {
        0 => (rest.to_vec(), None),
        1 => {
            let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let (header, payload) = rest.split_at(cut);
            let payload = payload.get(1..).unwrap_or_default();
            (signed(&f.key, header, payload).into_bytes(), Some(payload))
        }
        _ => (
            signed(&f.key, br#"{"alg":"EdDSA","kid":"fuzz","typ":"JWT"}"#, rest).into_bytes(),
            Some(rest),
        ),
    };
    let audience = if mode & 0x80 == 0 {
        Audience::Api
    } else {
        Audience::ApiKey
    };
    let result = f.rt.block_on(f.verifier.verify_for(&token, audience));
    // An id_token arrives as text from the IdP's token endpoint: only UTF-8 input is one.
    let nonce = match std::str::from_utf8(&token) {
        Ok(text) => {
            f.rt.block_on(f.verifier.verify_id_token(text, "client", "n"))
        }
        Err(_) => Err(authgate::identity::verify::TokenError::Malformed),
    };
    for (accepted, want_aud) in [
        (result, if mode & 0x80 == 0 { "api" } else { "keys" }),
        (nonce, "client"),
    ] {
        let Ok(p) = accepted else { continue };
        // Accepted: the key signed it, so the payload is ours to read back.
        let claims: serde_json::Value = serde_json::from_slice(
            payload.expect("raw tokens never verify: no one else holds the key"),
        )
        .expect("an accepted payload is JSON");
        assert_eq!(
            claims.get("iss").and_then(|v| v.as_str()),
            Some(ISS),
            "accepted a token with another issuer: {claims}"
        );
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(s)) => s == want_aud,
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want_aud)),
            _ => false,
        };
        assert!(aud_ok, "accepted a token for another audience: {claims}");
        assert!(!p.subject.is_empty(), "accepted a token without a subject");
        assert_eq!(
            claims.get("sub").and_then(|v| v.as_str()),
            Some(p.subject.as_str()),
            "the subject differs from the payload's"
        );
    }
});
