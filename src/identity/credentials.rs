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

/// Extracts the bearer token from an `Authorization` header value.
pub fn from_authorization(header: Option<&[u8]>) -> Result<Credential<'_>, CredentialError> {
    let Some(raw) = header else { return Err(CredentialError::Missing) };
    let text = std::str::from_utf8(raw).map_err(|_| CredentialError::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(CredentialError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(CredentialError::Malformed);
    }
    let token = token.trim_matches(' ');
    // RFC 6750 b64token characters; anything else cannot be a JWT.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)) {
        return Err(CredentialError::Malformed);
    }
    Ok(Credential::Bearer(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_extraction() {
        assert_eq!(from_authorization(Some(b"Bearer abc.def.ghi")), Ok(Credential::Bearer("abc.def.ghi")));
        assert_eq!(from_authorization(Some(b"bearer  abc")), Ok(Credential::Bearer("abc")));
        assert_eq!(from_authorization(None), Err(CredentialError::Missing));
        for bad in [&b"Basic dXNlcjpwdw=="[..], b"Bearer", b"Bearer ", b"Bearer a b", b"Bearer a\"b", b"Bearer \xff"] {
            assert_eq!(from_authorization(Some(bad)), Err(CredentialError::Malformed), "{bad:?}");
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
