//! Who is calling, as presented: the credential found on a request (bearer token, API key or a
//! browser session) and the one owned [`Caller`] it
//! becomes once verified, kept in the request's context up to the live check.

use super::session::SessionData;
use super::Principal;
use http::HeaderValue;
use std::fmt;
use std::sync::Arc;

/// A token or key as the caller sent it: a range of the request's header value, shared with
/// the request rather than copied. An API key is checked when it is found; a bearer token's
/// bytes are checked by the verifier, and only the first time it sees them (a token found in
/// its cache was checked when it was first verified): ~700 bytes scanned twice a request less.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    value: HeaderValue,
    start: usize,
    end: usize,
}

impl Token {
    /// A token from text (tests, and credentials that do not come from a header).
    pub fn new(text: &str) -> Option<Token> {
        HeaderValue::from_str(text).ok().map(|value| Token {
            end: text.len(),
            value,
            start: 0,
        })
    }

    /// The token's bytes, as sent.
    pub fn as_bytes(&self) -> &[u8] {
        self.value
            .as_bytes()
            .get(self.start..self.end)
            .unwrap_or_default()
    }

    /// The token's text (empty when it is not UTF-8, which no verified token is).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The credential a caller presented.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(Token),
    /// An API key in the configured header (default `x-api-key`).
    ApiKey(Token),
    /// A browser session; it presents its access token.
    Session(Arc<SessionData>),
}

impl Credential {
    /// The kind, for logs, metrics and the live check's cache key: `bearer`, `api_key`, `session`.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Bearer(_) => "bearer",
            Credential::ApiKey(_) => "api_key",
            Credential::Session(_) => "session",
        }
    }

    /// What the caller presents to the IdP on its own behalf (the live check): the bearer
    /// token, the API key, or the session's access token.
    pub fn presented(&self) -> &str {
        match self {
            Credential::Bearer(t) | Credential::ApiKey(t) => t.as_str(),
            Credential::Session(s) => s.tokens.access_token.expose(),
        }
    }
}

/// A verified caller: who ([`Principal`]) and with what ([`Credential`]). Built once per
/// request from its credential, kept in the request's context up to the live check.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified identity.
    pub principal: Arc<Principal>,
    /// The credential it was verified from.
    pub credential: Credential,
}

/// Why the credentials on a request are unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No credentials at all.
    #[error("no credentials: send Authorization: Bearer <token> (or an API key)")]
    Missing,
    /// An API-key header that cannot be a key.
    #[error("the API key header is empty or malformed")]
    MalformedApiKey,
    /// An `Authorization` header that is not a usable bearer token.
    #[error("the Authorization header is not \"Bearer <token>\"")]
    Malformed,
}

/// The caller's credentials: a bearer token when `Authorization` is present, else an API key.
pub fn from_request(
    authorization: Option<&HeaderValue>,
    api_key: Option<&HeaderValue>,
) -> Result<Credential, CredentialError> {
    match (authorization, api_key) {
        (Some(_), _) => from_authorization(authorization),
        (None, Some(raw)) => {
            let bytes = raw.as_bytes();
            let text = std::str::from_utf8(bytes).map_err(|_| CredentialError::MalformedApiKey)?;
            let key = text.trim();
            if key.is_empty() || key.len() > 512 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(CredentialError::MalformedApiKey);
            }
            let start = text.len() - text.trim_start().len();
            Ok(Credential::ApiKey(Token {
                value: raw.clone(),
                start,
                end: start + key.len(),
            }))
        }
        (None, None) => Err(CredentialError::Missing),
    }
}

/// The RFC 6750 `b64token` alphabet, as a table: tokens are checked byte by byte on every request.
#[allow(
    clippy::indexing_slicing,
    reason = "a constant evaluated at compile time: b < 256"
)]
static B64TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
        b += 1;
    }
    t
};

/// Extracts the bearer token from an `Authorization` header value: the scheme and the spaces
/// around the token are checked here, the token's own characters by the verifier (see [`Token`]).
pub fn from_authorization(header: Option<&HeaderValue>) -> Result<Credential, CredentialError> {
    let Some(value) = header else {
        return Err(CredentialError::Missing);
    };
    let raw = value.as_bytes();
    let space = raw
        .iter()
        .position(|&b| b == b' ')
        .ok_or(CredentialError::Malformed)?;
    let (scheme, _) = raw.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(CredentialError::Malformed);
    }
    let mut start = space;
    while raw.get(start) == Some(&b' ') {
        start += 1;
    }
    let mut end = raw.len();
    while end > start && raw.get(end - 1) == Some(&b' ') {
        end -= 1;
    }
    if start >= end {
        return Err(CredentialError::Malformed);
    }
    Ok(Credential::Bearer(Token {
        value: value.clone(),
        start,
        end,
    }))
}

/// True when `token` has only RFC 6750 `b64token` characters (anything else cannot be a JWT).
pub fn is_b64token(token: &str) -> bool {
    token
        .bytes()
        .all(|b| B64TOKEN.get(usize::from(b)).copied().unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(b: &[u8]) -> HeaderValue {
        HeaderValue::from_bytes(b).unwrap()
    }

    fn text(
        c: Result<Credential, CredentialError>,
    ) -> Result<(&'static str, String), CredentialError> {
        c.map(|c| (c.kind(), c.presented().to_string()))
    }

    #[test]
    fn bearer_extraction() {
        let bearer = |t: &str| Ok(("bearer", t.to_string()));
        assert_eq!(
            text(from_authorization(Some(&hv(b"Bearer abc.def.ghi")))),
            bearer("abc.def.ghi")
        );
        assert_eq!(
            text(from_authorization(Some(&hv(b"bearer  abc")))),
            bearer("abc")
        );
        assert_eq!(
            text(from_authorization(None)),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            text(from_authorization(Some(&hv(b"BEARER abc  ")))),
            bearer("abc")
        );
        for bad in [
            &b"Basic dXNlcjpwdw=="[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer   ",
            b"\xffBearer abc",
            b" Bearer abc",
        ] {
            assert_eq!(
                text(from_authorization(Some(&hv(bad)))),
                Err(CredentialError::Malformed),
                "{bad:?}"
            );
        }
        // The token's own characters are the verifier's to refuse (`Verifier` tests): found as
        // sent, spaces inside and bytes that are not UTF-8 included.
        for (header, token) in [
            (&b"Bearer a b"[..], &b"a b"[..]),
            (b"Bearer \xff", b"\xff"),
            (b"Bearer  a\x80b ", b"a\x80b"),
        ] {
            match from_authorization(Some(&hv(header))) {
                Ok(Credential::Bearer(t)) => assert_eq!(t.as_bytes(), token, "{header:?}"),
                other => panic!("{header:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn b64token_alphabet() {
        assert!(is_b64token("eyJh.bc-d_e~f+g/h="));
        for bad in ["a\"b", "a b", "a\tb", "caf\u{e9}", "a,b"] {
            assert!(!is_b64token(bad), "{bad:?}");
        }
    }

    #[test]
    fn api_keys_when_no_bearer() {
        assert_eq!(
            text(from_request(None, Some(&hv(b"ak_live_1")))),
            Ok(("api_key", "ak_live_1".into()))
        );
        assert_eq!(
            text(from_request(None, Some(&hv(b" ak_live_2 ")))),
            Ok(("api_key", "ak_live_2".into()))
        );
        assert_eq!(
            text(from_request(
                Some(&hv(b"Bearer t")),
                Some(&hv(b"ak_live_1"))
            )),
            Ok(("bearer", "t".into()))
        );
        assert_eq!(
            text(from_request(None, Some(&hv(b"")))),
            Err(CredentialError::MalformedApiKey)
        );
        assert_eq!(
            text(from_request(None, Some(&hv(b"a b")))),
            Err(CredentialError::MalformedApiKey)
        );
        assert_eq!(
            text(from_request(None, None)),
            Err(CredentialError::Missing)
        );
    }

    #[test]
    fn tokens_never_print() {
        let t = Token::new("secret-token").unwrap();
        assert_eq!(format!("{t:?}"), "***");
        assert_eq!(t.as_str(), "secret-token");
    }
}
