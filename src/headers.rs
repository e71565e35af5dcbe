//! Headers on the way upstream: every client-sent header with the identity prefix is
//! stripped first, with the caller's credentials, then the verified identity is injected.
//! Values outside visible ASCII are percent-encoded so that no claim can smuggle a header
//! line. Also the header names the gateway reads, built once.

use crate::config::model::HeaderSettings;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use pingora::http::RequestHeader;

const UNSAFE: &AsciiSet = &CONTROLS.add(b'%');

/// Header names the gateway reads or writes that `http` has no constant for. Looking a
/// header up by a `HeaderName` skips parsing the name, which a `&str` lookup pays each time.
pub mod names {
    use http::HeaderName;
    /// `sec-fetch-mode`.
    pub static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
    /// `x-client-origin`.
    pub static X_CLIENT_ORIGIN: HeaderName = HeaderName::from_static("x-client-origin");
    /// `x-requested-with`.
    pub static X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
    /// `x-forwarded-for`.
    pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    /// `x-forwarded-proto`.
    pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    /// `x-forwarded-host`.
    pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    /// `x-request-id`.
    pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
}

/// A header value for text from a token or the config: as it is when it is visible ASCII
/// (nearly always), else percent-encoded.
pub fn encode(text: &str) -> HeaderValue {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%') {
        if let Ok(v) = HeaderValue::from_str(text) {
            return v;
        }
    }
    HeaderValue::from_str(&utf8_percent_encode(text, UNSAFE).to_string()).expect("percent-encoded text is a valid header value")
}

/// The verified identity to inject, as header values built once per token, client and route.
#[derive(Debug, Default, Clone, Copy)]
pub struct Identity<'a> {
    /// `sub`.
    pub subject: Option<&'a HeaderValue>,
    /// `email`.
    pub email: Option<&'a HeaderValue>,
    /// The client app's name.
    pub client: Option<&'a HeaderValue>,
    /// The permission that let the request through, `entity:action`.
    pub permission: Option<&'a HeaderValue>,
}

/// Strips and injects the identity headers.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    prefix: String,
    /// Lowercase names as bytes: Pingora keeps each header's case beside its name, and a
    /// `Bytes` name is taken as it is where a `HeaderName` would be copied first.
    subject: Bytes,
    email: Bytes,
    client: Bytes,
    permission: Bytes,
    forward_token: bool,
    /// Other headers the upstream must never see from the caller (API key, assertion).
    also_strip: Vec<HeaderName>,
}

/// What [`IdentityHeaders::strip`] found on the request besides the identity headers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stripped {
    /// The request carries a `Cookie` header.
    pub has_cookie: bool,
    /// The request carries an `X-Forwarded-For` header.
    pub has_forwarded_for: bool,
}

impl IdentityHeaders {
    /// Builds the header names from the configured prefix.
    pub fn from_config(h: &HeaderSettings) -> IdentityHeaders {
        let name = |suffix: &str| {
            let text = format!("{}{suffix}", h.prefix).to_ascii_lowercase();
            HeaderName::from_bytes(text.as_bytes()).expect("validated prefix makes valid names");
            Bytes::from(text)
        };
        IdentityHeaders {
            prefix: h.prefix.to_ascii_lowercase(),
            subject: name("subject"),
            email: name("email"),
            client: name("client"),
            permission: name("permission"),
            forward_token: h.forward_token,
            also_strip: Vec::new(),
        }
    }

    /// Also strips these headers (the API-key header, the identity assertion's header).
    pub fn also_strip(mut self, names: impl IntoIterator<Item = HeaderName>) -> IdentityHeaders {
        self.also_strip.extend(names);
        self
    }

    /// Removes every client-sent identity header, the headers named in [`Self::also_strip`],
    /// and the caller's credentials unless configured to forward them: one pass over the
    /// request's header names, removals only for those present.
    pub fn strip(&self, req: &mut RequestHeader) -> Stripped {
        let mut found = Stripped::default();
        let mut remove: Vec<HeaderName> = Vec::new();
        for name in req.headers.keys() {
            if name == http::header::COOKIE {
                found.has_cookie = true;
            } else if name == names::X_FORWARDED_FOR {
                found.has_forwarded_for = true;
            } else if name.as_str().starts_with(&self.prefix)
                || (name == http::header::AUTHORIZATION && !self.forward_token)
                || self.also_strip.iter().any(|n| n == name)
            {
                remove.push(name.clone());
            }
        }
        for name in &remove {
            req.remove_header(name);
        }
        found
    }

    /// Adds the verified identity.
    pub fn inject(&self, req: &mut RequestHeader, id: &Identity<'_>) {
        for (name, value) in [(&self.subject, id.subject), (&self.email, id.email), (&self.client, id.client), (&self.permission, id.permission)] {
            if let Some(v) = value {
                let _ = req.insert_header(name.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_spoofed_then_injects() {
        let h = IdentityHeaders::from_config(&HeaderSettings { prefix: "x-auth-".into(), forward_token: false });
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("X-Auth-Subject", "admin").unwrap();
        req.append_header("x-auth-subject", "root").unwrap();
        req.insert_header("X-AUTH-Roles", "superuser").unwrap();
        req.insert_header("authorization", "Bearer abc").unwrap();
        req.insert_header("x-other", "kept").unwrap();
        req.insert_header("x-api-key", "k").unwrap();
        req.insert_header("cookie", "a=b").unwrap();
        let h = h.also_strip([HeaderName::from_static("x-api-key")]);
        let found = h.strip(&mut req);
        assert_eq!(found, Stripped { has_cookie: true, has_forwarded_for: false });
        let (subject, email, client) = (encode("user_1"), encode("a\r\nx-auth-evil: 1@é.com"), encode("billing"));
        h.inject(&mut req, &Identity { subject: Some(&subject), email: Some(&email), client: Some(&client), permission: None });
        let get = |n: &str| req.headers.get_all(n).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(get("x-auth-subject"), vec!["user_1"]);
        assert!(get("x-auth-roles").is_empty());
        assert!(get("authorization").is_empty());
        assert_eq!(get("x-other"), vec!["kept"]);
        assert_eq!(get("x-auth-email"), vec!["a%0D%0Ax-auth-evil: 1@%C3%A9.com"]);
        assert!(get("x-auth-evil").is_empty());
        assert!(get("x-auth-permission").is_empty());
        assert!(get("x-api-key").is_empty());
        assert_eq!(get("cookie"), vec!["a=b"]);
    }

    #[test]
    fn encodes_only_what_needs_it() {
        assert_eq!(encode("plain@example.com"), "plain@example.com");
        assert_eq!(encode("100%"), "100%25");
        assert_eq!(encode("Zoë"), "Zo%C3%AB");
        assert_eq!(encode("a\tb"), "a%09b");
    }

    #[test]
    fn forwards_token_when_configured() {
        let h = IdentityHeaders::from_config(&HeaderSettings { prefix: "x-auth-".into(), forward_token: true });
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("authorization", "Bearer abc").unwrap();
        h.strip(&mut req);
        assert!(req.headers.get("authorization").is_some());
    }
}
