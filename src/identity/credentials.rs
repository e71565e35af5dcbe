//! Finding the caller's credentials on a request.

/// Credentials presented by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// An API key in the configured header (default `x-api-key`).
    ApiKey(&'a str),
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
pub fn from_request<'a>(authorization: Option<&'a [u8]>, api_key: Option<&'a [u8]>) -> Result<Credential<'a>, CredentialError> {
    match (authorization, api_key) {
        (Some(_), _) => from_authorization(authorization),
        (None, Some(raw)) => {
            let key = std::str::from_utf8(raw).map_err(|_| CredentialError::MalformedApiKey)?.trim();
            if key.is_empty() || key.len() > 512 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(CredentialError::MalformedApiKey);
            }
            Ok(Credential::ApiKey(key))
        }
        (None, None) => Err(CredentialError::Missing),
    }
}

/// The RFC 6750 `b64token` alphabet, as a table: tokens are checked byte by byte on every request.
#[allow(clippy::indexing_slicing, reason = "a constant evaluated at compile time: b < 256")]
static B64TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
        b += 1;
    }
    t
};

/// Extracts the bearer token from an `Authorization` header value. Works on bytes: the
/// token is scanned twice (for a space, then as UTF-8), which matters at ~700 bytes a request.
pub fn from_authorization(header: Option<&[u8]>) -> Result<Credential<'_>, CredentialError> {
    let Some(raw) = header else { return Err(CredentialError::Missing) };
    let space = raw.iter().position(|&b| b == b' ').ok_or(CredentialError::Malformed)?;
    let (scheme, rest) = raw.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(CredentialError::Malformed);
    }
    let mut token = rest;
    while let [b' ', rest @ ..] = token {
        token = rest;
    }
    while let [rest @ .., b' '] = token {
        token = rest;
    }
    // The characters are checked by the verifier, and only for tokens it has not seen:
    // a cached token was checked when it was first verified.
    if token.is_empty() || token.contains(&b' ') {
        return Err(CredentialError::Malformed);
    }
    std::str::from_utf8(token).map(Credential::Bearer).map_err(|_| CredentialError::Malformed)
}

/// True when `token` has only RFC 6750 `b64token` characters (anything else cannot be a JWT).
pub fn is_b64token(token: &str) -> bool {
    token.bytes().all(|b| B64TOKEN.get(usize::from(b)).copied().unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_extraction() {
        assert_eq!(from_authorization(Some(b"Bearer abc.def.ghi")), Ok(Credential::Bearer("abc.def.ghi")));
        assert_eq!(from_authorization(Some(b"bearer  abc")), Ok(Credential::Bearer("abc")));
        assert_eq!(from_authorization(None), Err(CredentialError::Missing));
        assert_eq!(from_authorization(Some(b"BEARER abc  ")), Ok(Credential::Bearer("abc")));
        for bad in [&b"Basic dXNlcjpwdw=="[..], b"Bearer", b"Bearer ", b"Bearer   ", b"Bearer a b", b"Bearer \xff", b"\xffBearer abc", b" Bearer abc"] {
            assert_eq!(from_authorization(Some(bad)), Err(CredentialError::Malformed), "{bad:?}");
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
        assert_eq!(from_request(None, Some(b"ak_live_1")), Ok(Credential::ApiKey("ak_live_1")));
        assert_eq!(from_request(Some(b"Bearer t"), Some(b"ak_live_1")), Ok(Credential::Bearer("t")));
        assert_eq!(from_request(None, Some(b"")), Err(CredentialError::MalformedApiKey));
        assert_eq!(from_request(None, Some(b"a b")), Err(CredentialError::MalformedApiKey));
        assert_eq!(from_request(None, None), Err(CredentialError::Missing));
    }
}
