//! OpenID Connect Back-Channel Logout 1.0: what makes a verified JWT a logout token.
//!
//! The IdP POSTs `logout_token=<JWT>` to `/_authgate/backchannel-logout/{client}` (the URL
//! registered for that client at the IdP). [`crate::identity::verify::Verifier::verify_logout_token`]
//! checks the signature, `iss`, `aud` = the client's id and `exp` when present; here: `typ` is
//! `logout+jwt` when present, `events` holds the back-channel logout event (an object), there
//! is no `nonce` (an id_token must never pass for a logout token), `sub` and/or `sid` names
//! whom, `iat` is recent and `jti` is present. The `jti` is remembered in the session store
//! (so a replay is refused by every instance) by [`crate::identity::browser::Browser`], which
//! then ends the sessions.

use super::verify::TokenError;
use serde_json::{Map, Value};

/// The member of `events` that makes a token a back-channel logout token.
pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Oldest `iat` accepted (plus the leeway): IdPs send logout tokens at once and never retry.
pub const MAX_AGE_SECS: u64 = 120;
/// Longest body read from the endpoint (a logout token is well under 4 KiB).
pub const MAX_BODY: usize = 16 * 1024;

/// Why a logout request was refused (answered 400, with this as `error_description`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    /// The request is not a form POST with one `logout_token`.
    #[error("expected a form POST with logout_token")]
    NoToken,
    /// The JWT itself was refused (signature, issuer, audience, expiry...).
    #[error("{0}")]
    Token(TokenError),
    /// `typ` is present but not `logout+jwt`.
    #[error("the token's typ is not logout+jwt")]
    Typ,
    /// No back-channel logout event in `events`.
    #[error("the token's events claim lacks the back-channel logout event")]
    NoEvent,
    /// A `nonce`: an id_token, not a logout token.
    #[error("a logout token must not carry a nonce")]
    Nonce,
    /// Neither `sub` nor `sid`.
    #[error("the token names neither sub nor sid")]
    NoSubject,
    /// `iat` missing, in the future or too old.
    #[error("the token's iat is missing or not recent")]
    Stale,
    /// No `jti`.
    #[error("the token has no jti")]
    NoJti,
    /// The `jti` was seen before (at any instance).
    #[error("the token was used before")]
    Replayed,
}

impl LogoutTokenError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            LogoutTokenError::NoToken => "no_token",
            LogoutTokenError::Token(e) => e.label(),
            LogoutTokenError::Typ => "typ",
            LogoutTokenError::NoEvent => "no_event",
            LogoutTokenError::Nonce => "nonce",
            LogoutTokenError::NoSubject => "no_subject",
            LogoutTokenError::Stale => "stale",
            LogoutTokenError::NoJti => "no_jti",
            LogoutTokenError::Replayed => "replayed",
        }
    }
}

/// Whom a verified logout token signs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// `sub`, when present.
    pub subject: Option<String>,
    /// `sid`, when present.
    pub sid: Option<String>,
    /// `jti`.
    pub jti: String,
}

/// The logout token in a form body (exactly one `logout_token`).
pub fn token_from_form(body: &[u8]) -> Result<String, LogoutTokenError> {
    let mut tokens = url::form_urlencoded::parse(body)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    match (tokens.next(), tokens.next()) {
        (Some(t), None) if !t.is_empty() => Ok(t),
        _ => Err(LogoutTokenError::NoToken),
    }
}

/// The logout-token rules over a token whose signature, `iss`, `aud` and `exp` were verified:
/// `typ`, `events`, no `nonce`, `sub`/`sid`, `iat` within [`MAX_AGE_SECS`] (and `leeway`) of
/// `now`, `jti`. An `iat` in milliseconds (as Auther writes it) is read as such.
pub fn check(
    typ: Option<&str>,
    claims: &Map<String, Value>,
    now: u64,
    leeway: u64,
) -> Result<LogoutToken, LogoutTokenError> {
    if let Some(typ) = typ {
        let typ = typ.to_ascii_lowercase();
        if typ != "logout+jwt" && typ != "application/logout+jwt" {
            return Err(LogoutTokenError::Typ);
        }
    }
    let has_event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(EVENT))
        .is_some_and(Value::is_object);
    if !has_event {
        return Err(LogoutTokenError::NoEvent);
    }
    if claims.contains_key("nonce") {
        return Err(LogoutTokenError::Nonce);
    }
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (subject, sid) = (text("sub"), text("sid"));
    if subject.is_none() && sid.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or(LogoutTokenError::Stale)?;
    let iat = if iat > 1e11 { iat / 1000.0 } else { iat } as u64;
    if iat > now.saturating_add(leeway) || iat.saturating_add(MAX_AGE_SECS + leeway) < now {
        return Err(LogoutTokenError::Stale);
    }
    let jti = text("jti").ok_or(LogoutTokenError::NoJti)?;
    Ok(LogoutToken { subject, sid, jti })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(extra: Value) -> Map<String, Value> {
        let mut c = json!({"iss": "i", "aud": "c", "iat": 1_700_000_000u64, "jti": "j1", "sub": "u1", "sid": "s1", "events": {EVENT: {}}});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c.as_object().unwrap().clone()
    }

    #[test]
    fn the_rules_of_a_logout_token() {
        let now = 1_700_000_010;
        let ok = check(Some("logout+jwt"), &claims(json!({})), now, 5).unwrap();
        assert_eq!(
            ok,
            LogoutToken {
                subject: Some("u1".into()),
                sid: Some("s1".into()),
                jti: "j1".into()
            }
        );
        assert!(
            check(None, &claims(json!({})), now, 5).is_ok(),
            "typ is optional"
        );
        assert!(check(Some("application/logout+jwt"), &claims(json!({})), now, 5).is_ok());
        assert!(
            check(None, &claims(json!({"sub": null})), now, 5).is_ok(),
            "sid alone"
        );
        assert!(
            check(None, &claims(json!({"sid": null})), now, 5).is_ok(),
            "sub alone"
        );
        assert!(
            check(None, &claims(json!({"iat": 1_700_000_000_000u64})), now, 5).is_ok(),
            "iat in milliseconds"
        );
        for (case, typ, extra, want) in [
            (
                "an id_token's typ",
                Some("JWT"),
                json!({}),
                LogoutTokenError::Typ,
            ),
            (
                "no events",
                None,
                json!({"events": null}),
                LogoutTokenError::NoEvent,
            ),
            (
                "another event",
                None,
                json!({"events": {"http://example.com/other": {}}}),
                LogoutTokenError::NoEvent,
            ),
            (
                "the event not an object",
                None,
                json!({"events": {EVENT: "yes"}}),
                LogoutTokenError::NoEvent,
            ),
            (
                "events not an object",
                None,
                json!({"events": [EVENT]}),
                LogoutTokenError::NoEvent,
            ),
            (
                "a nonce",
                None,
                json!({"nonce": "n"}),
                LogoutTokenError::Nonce,
            ),
            (
                "neither sub nor sid",
                None,
                json!({"sub": null, "sid": null}),
                LogoutTokenError::NoSubject,
            ),
            (
                "empty sub and sid",
                None,
                json!({"sub": "", "sid": ""}),
                LogoutTokenError::NoSubject,
            ),
            (
                "no iat",
                None,
                json!({"iat": null}),
                LogoutTokenError::Stale,
            ),
            (
                "an old iat",
                None,
                json!({"iat": now - MAX_AGE_SECS - 6}),
                LogoutTokenError::Stale,
            ),
            (
                "a future iat",
                None,
                json!({"iat": now + 6}),
                LogoutTokenError::Stale,
            ),
            (
                "a string iat",
                None,
                json!({"iat": "1700000000"}),
                LogoutTokenError::Stale,
            ),
            (
                "no jti",
                None,
                json!({"jti": null}),
                LogoutTokenError::NoJti,
            ),
        ] {
            assert_eq!(check(typ, &claims(extra), now, 5), Err(want), "{case}");
        }
    }

    #[test]
    fn the_form_carries_exactly_one_token() {
        assert_eq!(
            token_from_form(b"logout_token=abc.def.ghi").unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(token_from_form(b"x=1&logout_token=a%2Eb").unwrap(), "a.b");
        for bad in [
            &b""[..],
            b"logout_token=",
            b"token=abc",
            b"logout_token=a&logout_token=b",
        ] {
            assert_eq!(
                token_from_form(bad),
                Err(LogoutTokenError::NoToken),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
