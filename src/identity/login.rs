//! Logins in flight and refreshes in flight.
//!
//! A started login lives in the browser, not in the gateway: everything its callback needs
//! (state, nonce, PKCE verifier, return URL, redirect URI, origin, client name, issue time) is
//! sealed with AES-256-GCM into a short-lived cookie of its own, named with a short suffix
//! derived from its `state` so that several tabs can log in at once. The cookie's name is bound
//! into the AEAD's associated data, so a sealed value cannot be replayed under another name. No
//! shared store means nothing for a flood of logins to evict, and several gateway instances
//! finish each other's logins as long as they share the key (`session.login_key`).
//!
//! A session's refresh runs once even when many requests need it: the others wait for it and
//! use its result ([`RefreshLocks`]).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::secret::decode_login_key;
pub use crate::secret::LoginKeyError;

/// Length of a login key in bytes (AES-256).
pub const KEY_LEN: usize = crate::secret::LOGIN_KEY_LEN;
/// Characters of the suffix that names a login's cookie.
const SUFFIX_LEN: usize = 8;
/// Longest sealed cookie value accepted (a browser keeps at most ~4 KiB per cookie anyway).
const MAX_SEALED_LEN: usize = 4096;

/// What the callback needs to finish a login. Sealed into the login's cookie; `Debug` shows
/// no secret part.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// `state` sent to the IdP.
    #[serde(rename = "s")]
    pub state: String,
    /// The nonce the id_token must carry.
    #[serde(rename = "n")]
    pub nonce: String,
    /// The PKCE verifier.
    #[serde(rename = "v")]
    pub pkce_verifier: String,
    /// Where the browser goes after the login (absolute, validated).
    #[serde(rename = "r")]
    pub return_to: String,
    /// The redirect URI sent to the IdP (the exchange repeats it).
    #[serde(rename = "u")]
    pub redirect_uri: String,
    /// The origin the login started from.
    #[serde(rename = "o")]
    pub origin: String,
    /// The client's name (never an index: a reload may reorder clients).
    #[serde(rename = "c")]
    pub client: String,
    /// The provider's name (empty: `[idp]`).
    #[serde(rename = "p", default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// When the login started, seconds since the epoch.
    #[serde(rename = "t")]
    pub issued_at: u64,
}

impl fmt::Debug for LoginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginState")
            .field("client", &self.client)
            .field("provider", &self.provider)
            .field("origin", &self.origin)
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

impl LoginState {
    /// True when `state` (from the callback's query) is this login's, compared in constant time.
    pub fn has_state(&self, state: &str) -> bool {
        self.state.as_bytes().ct_eq(state.as_bytes()).into()
    }

    /// True when the login started at most `timeout` seconds before `now` (and not in the future
    /// beyond a minute of clock difference between instances).
    pub fn fresh(&self, now: u64, timeout: u64) -> bool {
        self.issued_at <= now.saturating_add(60) && now.saturating_sub(self.issued_at) <= timeout
    }
}

/// The suffix of the cookie that carries the login with this `state`: the first characters of
/// its SHA-256 in base64url (a name, not a secret: the state is in the URL anyway).
pub fn cookie_suffix(state: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, state.as_bytes());
    URL_SAFE_NO_PAD
        .encode(digest.as_ref())
        .chars()
        .take(SUFFIX_LEN)
        .collect()
}

/// True when `suffix` could be one of ours (the right length and alphabet).
pub fn is_suffix(suffix: &str) -> bool {
    suffix.len() == SUFFIX_LEN
        && suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Seals and opens login cookies with the gateway's login key.
pub struct LoginSealer {
    key: LessSafeKey,
}

impl fmt::Debug for LoginSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginSealer(***)")
    }
}

impl LoginSealer {
    /// A sealer with this key.
    pub fn new(key: &[u8; KEY_LEN]) -> Result<LoginSealer, LoginKeyError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| LoginKeyError::Unusable)?;
        Ok(LoginSealer {
            key: LessSafeKey::new(unbound),
        })
    }

    /// A sealer with a fresh random key (logins then finish only at this process).
    pub fn random() -> Result<LoginSealer, LoginKeyError> {
        let mut key = [0u8; KEY_LEN];
        rand::fill(&mut key);
        LoginSealer::new(&key)
    }

    /// The configured key (base64), or a random one when none is configured; `.1` is true when
    /// the key was generated.
    pub fn from_config(
        key: Option<&crate::secret::Secret>,
    ) -> Result<(LoginSealer, bool), LoginKeyError> {
        match key {
            Some(text) => Ok((LoginSealer::new(&decode_login_key(text.expose())?)?, false)),
            None => Ok((LoginSealer::random()?, true)),
        }
    }

    /// The cookie value carrying `login` under the cookie name `name`: base64url of a random
    /// 96-bit nonce, the ciphertext and the tag. `None` only if the crypto library fails.
    pub fn seal(&self, name: &str, login: &LoginState) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut in_out = serde_json::to_vec(login).ok()?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut in_out,
            )
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// The login sealed in `value` under the cookie name `name`; `None` for anything we did not
    /// seal under exactly that name (or with another key).
    pub fn open(&self, name: &str, value: &str) -> Option<LoginState> {
        if value.len() > MAX_SEALED_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        let nonce = Nonce::try_assume_unique_for_key(raw.get(..NONCE_LEN)?).ok()?;
        let mut in_out = raw.get(NONCE_LEN..)?.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut in_out)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// One lock per session being refreshed.
pub struct RefreshLocks(moka::sync::Cache<[u8; 32], Arc<tokio::sync::Mutex<()>>>);

impl RefreshLocks {
    /// An empty set.
    pub fn new() -> RefreshLocks {
        RefreshLocks(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(120))
                .build(),
        )
    }

    /// The lock of the session with this digest.
    pub fn get(&self, session: [u8; 32]) -> Arc<tokio::sync::Mutex<()>> {
        self.0
            .get_with(session, || Arc::new(tokio::sync::Mutex::new(())))
    }
}

impl Default for RefreshLocks {
    fn default() -> Self {
        RefreshLocks::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(state: &str) -> LoginState {
        LoginState {
            state: state.into(),
            nonce: "nonce-secret".into(),
            pkce_verifier: "verifier-secret".into(),
            return_to: "http://a/x".into(),
            redirect_uri: "http://a/_authgate/callback".into(),
            origin: "http://a".into(),
            client: "billing".into(),
            provider: String::new(),
            issued_at: 1_000,
        }
    }

    #[test]
    fn sealed_logins_open_only_under_their_name_and_key() {
        let sealer = LoginSealer::new(&[7; KEY_LEN]).unwrap();
        let other_key = LoginSealer::new(&[8; KEY_LEN]).unwrap();
        let l = login("state-1");
        let name = format!("authgate-login-{}", cookie_suffix(&l.state));
        let sealed = sealer.seal(&name, &l).unwrap();
        assert!(
            !sealed.contains("verifier") && !sealed.contains("nonce"),
            "sealed, not signed"
        );
        assert_ne!(
            sealer.seal(&name, &l).unwrap(),
            sealed,
            "a fresh nonce every time"
        );
        assert_eq!(sealer.open(&name, &sealed), Some(l.clone()));
        let mut flipped = sealed.clone().into_bytes();
        flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for (case, n, v) in [
            ("another name", "authgate-login-AAAAAAAA", sealed.as_str()),
            ("tampered", name.as_str(), flipped.as_str()),
            ("truncated", name.as_str(), &sealed[..sealed.len() - 4]),
            ("empty", name.as_str(), ""),
            ("short", name.as_str(), "AAAA"),
            ("not base64", name.as_str(), "!!!!"),
        ] {
            assert_eq!(sealer.open(n, v), None, "{case}");
        }
        assert_eq!(other_key.open(&name, &sealed), None, "another key");
        assert_eq!(
            sealer.open(&name, &"A".repeat(MAX_SEALED_LEN + 4)),
            None,
            "oversized"
        );

        // Sizes: a typical login, and one with the longest return URL the gateway seals (1 KiB).
        let typical = LoginState {
            state: "s".repeat(22),
            nonce: "n".repeat(22),
            pkce_verifier: "v".repeat(43),
            ..login("x")
        };
        let long = LoginState {
            return_to: format!("https://billing.example.com/{}", "x".repeat(1000)),
            ..typical.clone()
        };
        let (typical, long) = (
            sealer.seal(&name, &typical).unwrap().len(),
            sealer.seal(&name, &long).unwrap().len(),
        );
        assert!(typical < 400, "{typical}");
        assert!(
            long < 1800,
            "{long}: a browser keeps at most 4 KiB per cookie"
        );
    }

    #[test]
    fn a_login_names_its_provider() {
        let sealer = LoginSealer::new(&[7; KEY_LEN]).unwrap();
        let github = LoginState {
            provider: "github".into(),
            nonce: String::new(),
            ..login("gh-state")
        };
        let name = format!("authgate-login-{}", cookie_suffix(&github.state));
        assert_eq!(
            sealer.open(&name, &sealer.seal(&name, &github).unwrap()),
            Some(github.clone())
        );
        // The `[idp]`'s logins write no provider at all, and logins sealed before providers open as the `[idp]`'s.
        let oidc = login("oidc-state");
        assert!(!serde_json::to_string(&oidc).unwrap().contains("\"p\""));
        let old: LoginState = serde_json::from_str(r#"{"s":"a","n":"b","v":"c","r":"http://a/","u":"http://a/cb","o":"http://a","c":"billing","t":1}"#).unwrap();
        assert_eq!(old.provider, "");
        assert!(format!("{github:?}").contains("github"));
    }

    #[test]
    fn state_freshness_and_debug() {
        let l = login("abc");
        assert!(l.has_state("abc"));
        for bad in ["", "ab", "abcd", "ABC"] {
            assert!(!l.has_state(bad), "{bad}");
        }
        for (now, timeout, fresh) in [
            (1_000, 600, true),
            (1_600, 600, true),
            (1_601, 600, false),
            (940, 600, true),
            (900, 600, false),
        ] {
            assert_eq!(l.fresh(now, timeout), fresh, "now {now}");
        }
        let debug = format!("{l:?}");
        assert!(
            !debug.contains("secret") && !debug.contains("abc"),
            "{debug}"
        );
        assert_eq!(
            format!("{:?}", LoginSealer::random().unwrap()),
            "LoginSealer(***)"
        );
    }

    #[test]
    fn suffixes_and_keys() {
        let s = cookie_suffix("some-state");
        assert!(is_suffix(&s), "{s}");
        assert_eq!(s, cookie_suffix("some-state"));
        assert_ne!(s, cookie_suffix("other-state"));
        for bad in ["", "short", "toolong12", "with;sem", "a=bcdefg"] {
            assert!(!is_suffix(bad), "{bad}");
        }
    }
}
