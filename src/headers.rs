//! Identity headers sent upstream: every client-sent header with the identity prefix is
//! stripped first, then the verified identity is injected. Values outside visible ASCII are
//! percent-encoded so that no claim can smuggle a header line.

use crate::config::model::HeaderSettings;
use http::HeaderName;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use pingora::http::RequestHeader;

const UNSAFE: &AsciiSet = &CONTROLS.add(b'%');

/// The verified identity to inject.
#[derive(Debug, Default, Clone, Copy)]
pub struct Identity<'a> {
    /// `sub`.
    pub subject: Option<&'a str>,
    /// `email`.
    pub email: Option<&'a str>,
    /// The client app's name.
    pub client: Option<&'a str>,
    /// The permission that let the request through, `entity:action`.
    pub permission: Option<&'a str>,
}

/// Strips and injects the identity headers.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    prefix: String,
    subject: HeaderName,
    email: HeaderName,
    client: HeaderName,
    permission: HeaderName,
    forward_token: bool,
}

impl IdentityHeaders {
    /// Builds the header names from the configured prefix.
    pub fn from_config(h: &HeaderSettings) -> IdentityHeaders {
        let name = |suffix: &str| HeaderName::from_bytes(format!("{}{suffix}", h.prefix).as_bytes()).expect("validated prefix makes valid names");
        IdentityHeaders {
            prefix: h.prefix.clone(),
            subject: name("subject"),
            email: name("email"),
            client: name("client"),
            permission: name("permission"),
            forward_token: h.forward_token,
        }
    }

    /// Removes every client-sent identity header, and the caller's credentials unless configured to forward them.
    pub fn strip(&self, req: &mut RequestHeader) {
        let spoofed: Vec<HeaderName> = req.headers.keys().filter(|k| k.as_str().starts_with(&self.prefix)).cloned().collect();
        for name in spoofed {
            req.remove_header(&name);
        }
        if !self.forward_token {
            req.remove_header(&http::header::AUTHORIZATION);
        }
    }

    /// Adds the verified identity.
    pub fn inject(&self, req: &mut RequestHeader, id: &Identity<'_>) {
        for (name, value) in [(&self.subject, id.subject), (&self.email, id.email), (&self.client, id.client), (&self.permission, id.permission)] {
            if let Some(v) = value {
                // Nearly every value is plain visible ASCII: no encoding, no extra copy then.
                if v.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%') {
                    let _ = req.insert_header(name.clone(), v);
                } else {
                    let _ = req.insert_header(name.clone(), utf8_percent_encode(v, UNSAFE).to_string());
                }
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
        h.strip(&mut req);
        h.inject(&mut req, &Identity { subject: Some("user_1"), email: Some("a\r\nx-auth-evil: 1@é.com"), client: Some("billing"), permission: None });
        let get = |n: &str| req.headers.get_all(n).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(get("x-auth-subject"), vec!["user_1"]);
        assert!(get("x-auth-roles").is_empty());
        assert!(get("authorization").is_empty());
        assert_eq!(get("x-other"), vec!["kept"]);
        assert_eq!(get("x-auth-email"), vec!["a%0D%0Ax-auth-evil: 1@%C3%A9.com"]);
        assert!(get("x-auth-evil").is_empty());
        assert!(get("x-auth-permission").is_empty());
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
