//! Compact JWS tokens, read once: the header and the signature decoded a single time, the
//! signature checked with a key parsed when the JWKS was loaded ([`VerifyKey`]), and the
//! registered claims (`exp`, `nbf`, `iss`, `aud`, `sub`) checked against a
//! [`jsonwebtoken::Validation`] with the same rules as `jsonwebtoken::decode` (numeric dates
//! as `u64` seconds, fractions rounded; `iss` and `aud` a string or an array of strings of
//! which one must be accepted; a claim of the wrong type counts as absent).
//!
//! The payload is decoded only after its signature verified, and must be UTF-8 JSON.

use super::jwks::VerifyKey;
use super::verify::TokenError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

/// The header fields authgate reads.
#[derive(Debug, Deserialize)]
pub struct Header {
    /// The signature algorithm (`none` and unknown names do not parse).
    pub alg: Algorithm,
    /// The signing key's id.
    #[serde(default)]
    pub kid: Option<String>,
    /// The token type.
    #[serde(default)]
    pub typ: Option<String>,
    /// Extensions the signer says must be understood: authgate understands none, so a token
    /// that lists any is refused (RFC 7515 §4.1.11).
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// A compact JWS split into its parts, the header read.
pub struct Jws<'t> {
    /// The protected header.
    pub header: Header,
    /// `header.payload`, what the signature covers.
    signing_input: &'t str,
    /// The payload, still base64url.
    payload: &'t str,
    /// The signature, still base64url.
    signature: &'t str,
}

impl<'t> Jws<'t> {
    /// Splits `token` into its three parts and reads its header.
    pub fn parse(token: &'t str) -> Result<Jws<'t>, TokenError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        if payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let header: Header = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        Ok(Jws {
            header,
            signing_input,
            payload,
            signature,
        })
    }

    /// Checks the signature with `key` for the header's algorithm and returns the decoded
    /// payload, which is UTF-8.
    pub fn verify(&self, key: &VerifyKey) -> Result<Vec<u8>, TokenError> {
        let alg = self.header.alg;
        let signature = URL_SAFE_NO_PAD
            .decode(self.signature)
            .map_err(|_| TokenError::Malformed)?;
        if !key.verify(alg, self.signing_input.as_bytes(), &signature)? {
            return Err(TokenError::BadSignature);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| TokenError::Malformed)?;
        // RFC 7519 §7.2: the claims are a UTF-8 JSON object (serde skips unread strings
        // without checking them, so the whole payload is checked here).
        if std::str::from_utf8(&payload).is_err() {
            return Err(TokenError::Malformed);
        }
        Ok(payload)
    }
}

/// A NumericDate claim as `jsonwebtoken` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Date {
    Absent,
    Invalid,
    At(u64),
}

fn date(v: Option<&Value>) -> Date {
    match v {
        None | Some(Value::Null) => Date::Absent,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Date::At(u),
            (None, Some(f)) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                Date::At(f.round() as u64)
            }
            _ => Date::Invalid,
        },
        Some(_) => Date::Invalid,
    }
}

/// `iss` or `aud`: a string or an array of strings; `None` when absent or of another type.
fn names(v: Option<&Value>) -> Option<Vec<&str>> {
    match v? {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// The registered claims of a payload, by reference.
#[derive(Default)]
pub struct Registered<'c> {
    /// `exp`.
    pub exp: Option<&'c Value>,
    /// `nbf`.
    pub nbf: Option<&'c Value>,
    /// `iss`.
    pub iss: Option<&'c Value>,
    /// `aud`.
    pub aud: Option<&'c Value>,
    /// `sub` (a string; of another type it counts as absent).
    pub sub: Option<&'c str>,
}

impl<'c> Registered<'c> {
    /// The registered claims of a claims object.
    pub fn of(map: &'c serde_json::Map<String, Value>) -> Registered<'c> {
        Registered {
            exp: map.get("exp"),
            nbf: map.get("nbf"),
            iss: map.get("iss"),
            aud: map.get("aud"),
            sub: map.get("sub").and_then(Value::as_str),
        }
    }
}

/// Checks the registered claims against `v` at `now` (seconds), as `jsonwebtoken::decode`
/// does: required claims present first (`exp`, `sub`, `iss`, `aud`, `nbf`, in this order),
/// then `exp` and `nbf` with the leeway, then `sub`, `iss` and `aud`.
pub fn check(c: &Registered<'_>, v: &Validation, now: u64) -> Result<(), TokenError> {
    let exp = date(c.exp);
    let nbf = date(c.nbf);
    let sub = c.sub;
    let iss = names(c.iss);
    let aud = names(c.aud);
    for (name, present, missing) in [
        (
            "exp",
            matches!(exp, Date::At(_)),
            TokenError::MissingClaim("exp"),
        ),
        ("sub", sub.is_some(), TokenError::MissingClaim("sub")),
        ("iss", iss.is_some(), TokenError::WrongIssuer),
        ("aud", aud.is_some(), TokenError::WrongAudience),
        (
            "nbf",
            matches!(nbf, Date::At(_)),
            TokenError::MissingClaim("nbf"),
        ),
    ] {
        if !present && v.required_spec_claims.contains(name) {
            return Err(missing);
        }
    }
    if v.validate_exp || v.validate_nbf {
        if (v.validate_exp && exp == Date::Invalid) || (v.validate_nbf && nbf == Date::Invalid) {
            return Err(TokenError::Malformed);
        }
        let early = v.reject_tokens_expiring_in_less_than;
        if let Date::At(exp) = exp {
            if exp < early {
                return Err(TokenError::Expired);
            }
            if v.validate_exp && exp - early < now.saturating_sub(v.leeway) {
                return Err(TokenError::Expired);
            }
        }
        if let Date::At(nbf) = nbf {
            if v.validate_nbf && nbf > now.saturating_add(v.leeway) {
                return Err(TokenError::NotYetValid);
            }
        }
    }
    if let (Some(sub), Some(want)) = (sub, v.sub.as_deref()) {
        if sub != want {
            return Err(TokenError::Malformed);
        }
    }
    if let (Some(iss), Some(want)) = (&iss, &v.iss) {
        if !iss.iter().any(|i| want.contains(*i)) {
            return Err(TokenError::WrongIssuer);
        }
    }
    if v.validate_aud {
        match (&aud, &v.aud) {
            (Some(_), None) => return Err(TokenError::WrongAudience),
            (Some(aud), Some(want)) if !aud.iter().any(|a| want.contains(*a)) => {
                return Err(TokenError::WrongAudience)
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validation() -> Validation {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&["https://idp.test"]);
        v.set_audience(&["api"]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = 5;
        v.validate_nbf = true;
        v
    }

    fn checked(claims: Value) -> Result<(), TokenError> {
        let map = claims.as_object().unwrap().clone();
        check(&Registered::of(&map), &validation(), 1_000_000)
    }

    #[test]
    fn registered_claims_as_jsonwebtoken_reads_them() {
        let ok = |extra: Value| {
            let mut c = json!({"iss": "https://idp.test", "aud": "api", "exp": 1_000_100});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let cases: Vec<(&str, Value, Result<(), TokenError>)> = vec![
            ("valid", ok(json!({})), Ok(())),
            ("aud in an array", ok(json!({"aud": ["x", "api"]})), Ok(())),
            (
                "iss in an array",
                ok(json!({"iss": ["https://idp.test"]})),
                Ok(()),
            ),
            ("fractional exp", ok(json!({"exp": 1_000_000.4})), Ok(())),
            (
                "expired within the leeway",
                ok(json!({"exp": 999_996})),
                Ok(()),
            ),
            (
                "expired beyond it",
                ok(json!({"exp": 999_994})),
                Err(TokenError::Expired),
            ),
            (
                "negative exp",
                ok(json!({"exp": -1})),
                Err(TokenError::MissingClaim("exp")),
            ),
            (
                "exp as a string",
                ok(json!({"exp": "1000100"})),
                Err(TokenError::MissingClaim("exp")),
            ),
            (
                "exp too large",
                ok(json!({"exp": 1e30})),
                Err(TokenError::MissingClaim("exp")),
            ),
            (
                "nbf within the leeway",
                ok(json!({"nbf": 1_000_004})),
                Ok(()),
            ),
            (
                "nbf beyond it",
                ok(json!({"nbf": 1_000_006})),
                Err(TokenError::NotYetValid),
            ),
            (
                "nbf as a string",
                ok(json!({"nbf": "soon"})),
                Err(TokenError::Malformed),
            ),
            (
                "iss elsewhere",
                ok(json!({"iss": "https://evil.test"})),
                Err(TokenError::WrongIssuer),
            ),
            (
                "iss a number",
                ok(json!({"iss": 7})),
                Err(TokenError::WrongIssuer),
            ),
            (
                "iss empty array",
                ok(json!({"iss": []})),
                Err(TokenError::WrongIssuer),
            ),
            (
                "aud elsewhere",
                ok(json!({"aud": ["x", "y"]})),
                Err(TokenError::WrongAudience),
            ),
            (
                "aud with a number",
                ok(json!({"aud": ["api", 1]})),
                Err(TokenError::WrongAudience),
            ),
            (
                "aud empty array",
                ok(json!({"aud": []})),
                Err(TokenError::WrongAudience),
            ),
            (
                "aud null",
                ok(json!({"aud": null})),
                Err(TokenError::WrongAudience),
            ),
        ];
        for (name, claims, want) in cases {
            assert_eq!(checked(claims), want, "{name}");
        }
        assert_eq!(
            checked(json!({"iss": "https://idp.test", "aud": "api"})),
            Err(TokenError::MissingClaim("exp"))
        );
        // Not validated, still required.
        let mut v = validation();
        v.validate_exp = false;
        let map = json!({"iss": "https://idp.test", "aud": "api", "exp": 1})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(check(&Registered::of(&map), &v, 1_000_000), Ok(()));
        v.aud = None;
        assert_eq!(
            check(&Registered::of(&map), &v, 1_000_000),
            Err(TokenError::WrongAudience),
            "an aud nobody accepts"
        );
    }

    #[test]
    fn parts_and_header() {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let h = b64(r#"{"alg":"ES256","kid":"k","typ":"JWT"}"#);
        let token = format!("{h}.{}.c2ln", b64("{}"));
        let jws = Jws::parse(&token).unwrap();
        assert_eq!(
            (
                jws.header.alg,
                jws.header.kid.as_deref(),
                jws.header.typ.as_deref()
            ),
            (Algorithm::ES256, Some("k"), Some("JWT"))
        );
        for bad in [
            format!("{h}.{}", b64("{}")),
            format!("{h}.{}.c2ln.x", b64("{}")),
            format!("{}.e30.c2ln", b64(r#"{"alg":"none"}"#)),
            format!("{}.e30.c2ln", b64(r#"{"kid":"k"}"#)),
            format!("{}.e30.c2ln", b64(r#"{"alg":"ES256","alg":"ES256"}"#)),
            format!("{}.e30.c2ln", b64(r#"{"alg":"ES256","crit":["b64"]}"#)),
            format!("{h}=.e30.c2ln"),
            "...".to_string(),
        ] {
            assert!(
                matches!(Jws::parse(&bad), Err(TokenError::Malformed)),
                "{bad}"
            );
        }
    }
}
