//! A value that must never be printed: client secrets, API keys, tokens.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use std::fmt;
use subtle::ConstantTimeEq;

/// Length of a login key (`session.login_key`) in bytes: an AES-256 key.
pub const LOGIN_KEY_LEN: usize = 32;

/// Why a login key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginKeyError {
    /// Not base64.
    #[error("is not base64: write 32 random bytes in base64, e.g. from `openssl rand -base64 32`")]
    NotBase64,
    /// Base64 of the wrong length.
    #[error("decodes to {0} bytes: it must be exactly 32 random bytes in base64 (`openssl rand -base64 32`)")]
    WrongLength(usize),
    /// The crypto library refused the key.
    #[error("cannot be used as an AES-256-GCM key")]
    Unusable,
}

/// Decodes a configured login key (standard or URL-safe base64, padding optional): checked by
/// the config validator, used by sign-in's login sealer.
pub fn decode_login_key(text: &str) -> Result<[u8; LOGIN_KEY_LEN], LoginKeyError> {
    let text = text.trim();
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
        .map_err(|_| LoginKeyError::NotBase64)?;
    <[u8; LOGIN_KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| LoginKeyError::WrongLength(bytes.len()))
}

/// A secret string. `Debug` and `Display` print `***`; compare with [`Secret::ct_eq`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it (e.g. the IdP's token endpoint).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a candidate value.
    pub fn ct_eq(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }

    /// True when no secret was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Serialised as the plain string: only for stores that encrypt what they write (the Redis
/// session store seals every session with AES-GCM before it leaves the process).
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_keys_decode_from_either_base64() {
        let b64 = STANDARD.encode([9u8; 32]);
        assert_eq!(decode_login_key(&b64), Ok([9u8; 32]));
        assert_eq!(
            decode_login_key(&URL_SAFE_NO_PAD.encode([9u8; 32])),
            Ok([9u8; 32])
        );
        assert_eq!(
            decode_login_key(&STANDARD.encode([9u8; 16])),
            Err(LoginKeyError::WrongLength(16))
        );
        assert_eq!(
            decode_login_key("not base64!"),
            Err(LoginKeyError::NotBase64)
        );
    }

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert!(s.ct_eq("hunter2"));
        assert!(!s.ct_eq("hunter3"));
        assert!(!s.ct_eq("hunter"));
    }
}
