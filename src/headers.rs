//! Headers on the way upstream: every client-sent header with the identity prefix is
//! stripped first, with the caller's credentials, then the verified identity is injected.
//! Values outside visible ASCII are percent-encoded so that no claim can smuggle a header
//! line. Also the header names the gateway reads, built once.

use crate::config::model::HeaderSettings;
use http::{HeaderMap, HeaderName, HeaderValue};
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
    subject: HeaderName,
    email: HeaderName,
    client: HeaderName,
    permission: HeaderName,
    forward_token: bool,
    /// Other headers the upstream must never see from the caller (API key, assertion).
    also_strip: Vec<HeaderName>,
}

impl IdentityHeaders {
    /// Builds the header names from the configured prefix.
    pub fn from_config(h: &HeaderSettings) -> IdentityHeaders {
        let name = |suffix: &str| HeaderName::from_bytes(format!("{}{suffix}", h.prefix).as_bytes()).expect("validated prefix makes valid names");
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

    /// The headers of `req` the upstream may see, in one pass: no client-sent identity headers,
    /// no headers named in [`Self::also_strip`], no credentials unless configured to forward
    /// them. `Cookie` and `X-Forwarded-For` are set aside for the caller to rewrite.
    pub fn upstream(&self, req: &RequestHeader) -> UpstreamHeaders {
        let mut out = UpstreamHeaders { map: HeaderMap::with_capacity(req.headers.len() + 8), cookies: Vec::new(), forwarded_for: Vec::new() };
        for (name, value) in req.headers.iter() {
            if *name == http::header::COOKIE {
                out.cookies.push(value.clone());
            } else if *name == names::X_FORWARDED_FOR {
                out.forwarded_for.push(value.clone());
            } else if !(name.as_str().starts_with(&self.prefix)
                || (*name == http::header::AUTHORIZATION && !self.forward_token)
                || self.also_strip.iter().any(|n| n == name))
            {
                out.map.append(name.clone(), value.clone());
            }
        }
        out
    }
}

/// The upstream request's headers being rebuilt: filled from the caller's request by
/// [`IdentityHeaders::upstream`], then given the gateway's headers, then installed with
/// [`UpstreamHeaders::install`].
///
/// Rebuilding one map at the right size costs a fraction of editing Pingora's request header
/// in place (each edit there re-parses the name and updates a second, case-preserving map,
/// growing both). Header names reach the upstream lowercase (standard ones title-cased), as
/// they do through Envoy or HAProxy: HTTP header names are case-insensitive.
#[derive(Debug)]
pub struct UpstreamHeaders {
    /// The headers so far.
    pub map: HeaderMap,
    /// The caller's `Cookie` values, for the gateway to filter and put back.
    pub cookies: Vec<HeaderValue>,
    /// The caller's `X-Forwarded-For` values.
    pub forwarded_for: Vec<HeaderValue>,
}

impl UpstreamHeaders {
    /// Adds the verified identity.
    pub fn inject(&mut self, names: &IdentityHeaders, id: &Identity<'_>) {
        for (name, value) in [(&names.subject, id.subject), (&names.email, id.email), (&names.client, id.client), (&names.permission, id.permission)] {
            if let Some(v) = value {
                self.map.insert(name.clone(), v.clone());
            }
        }
    }

    /// Replaces `req`'s header with these headers, keeping its method, version, extensions and
    /// request target; `uri` replaces the target (a normalised path).
    pub fn install(self, req: &mut RequestHeader, uri: Option<http::Uri>) -> pingora::Result<()> {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = req.method.clone();
        parts.version = req.version;
        parts.extensions = std::mem::take(req.extensions_mut());
        parts.headers = self.map;
        let keep_target = uri.is_none();
        parts.uri = uri.unwrap_or_else(|| req.uri.clone());
        let mut rebuilt = RequestHeader::from(parts);
        // A target the URI does not carry byte for byte (absolute-form, raw bytes) is kept as sent.
        if keep_target && rebuilt.raw_path() != req.raw_path() {
            rebuilt.set_raw_path(req.raw_path())?;
        }
        if let Some(end) = req.send_end_stream() {
            rebuilt.set_send_end_stream(end);
        }
        *req = rebuilt;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/a?b=1", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    fn values(req: &RequestHeader, n: &str) -> Vec<String> {
        req.headers.get_all(n).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    #[test]
    fn strips_spoofed_then_injects() {
        let h = IdentityHeaders::from_config(&HeaderSettings { prefix: "x-auth-".into(), forward_token: false }).also_strip([HeaderName::from_static("x-api-key")]);
        let mut req = request(&[
            ("Host", "api.example.com"),
            ("X-Auth-Subject", "admin"),
            ("x-auth-subject", "root"),
            ("X-AUTH-Roles", "superuser"),
            ("authorization", "Bearer abc"),
            ("x-other", "kept"),
            ("X-Other", "kept too"),
            ("x-api-key", "k"),
            ("cookie", "a=b"),
            ("x-forwarded-for", "10.0.0.1"),
        ]);
        let mut up = h.upstream(&req);
        assert_eq!(up.cookies, vec![HeaderValue::from_static("a=b")]);
        assert_eq!(up.forwarded_for, vec![HeaderValue::from_static("10.0.0.1")]);
        let (subject, email, client) = (encode("user_1"), encode("a\r\nx-auth-evil: 1@é.com"), encode("billing"));
        up.inject(&h, &Identity { subject: Some(&subject), email: Some(&email), client: Some(&client), permission: None });
        up.install(&mut req, None).unwrap();
        assert_eq!(values(&req, "x-auth-subject"), vec!["user_1"]);
        assert!(values(&req, "x-auth-roles").is_empty());
        assert!(values(&req, "authorization").is_empty());
        assert_eq!(values(&req, "x-other"), vec!["kept", "kept too"]);
        assert_eq!(values(&req, "host"), vec!["api.example.com"]);
        assert_eq!(values(&req, "x-auth-email"), vec!["a%0D%0Ax-auth-evil: 1@%C3%A9.com"]);
        assert!(values(&req, "x-auth-evil").is_empty());
        assert!(values(&req, "x-auth-permission").is_empty());
        assert!(values(&req, "x-api-key").is_empty());
        // Cookie and X-Forwarded-For are the caller's to put back.
        assert!(values(&req, "cookie").is_empty() && values(&req, "x-forwarded-for").is_empty());
        assert_eq!(req.raw_path(), b"/a?b=1");
        assert_eq!(req.method, http::Method::GET);
    }

    #[test]
    fn install_keeps_the_target_or_takes_a_normalised_one() {
        let h = IdentityHeaders::from_config(&HeaderSettings { prefix: "x-auth-".into(), forward_token: false });
        let mut req = RequestHeader::build("POST", b"/a/./b?q=%20", None).unwrap();
        req.append_header("Content-Length", "3").unwrap();
        h.upstream(&req).install(&mut req, None).unwrap();
        assert_eq!(req.raw_path(), b"/a/./b?q=%20");
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(values(&req, "content-length"), vec!["3"]);
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"Content-Length: 3\r\n");
        h.upstream(&req).install(&mut req, Some("/a/b?q=%20".parse().unwrap())).unwrap();
        assert_eq!(req.raw_path(), b"/a/b?q=%20");
    }

    #[test]
    fn forwards_token_when_configured() {
        let h = IdentityHeaders::from_config(&HeaderSettings { prefix: "x-auth-".into(), forward_token: true });
        let mut req = request(&[("authorization", "Bearer abc")]);
        h.upstream(&req).install(&mut req, None).unwrap();
        assert_eq!(values(&req, "authorization"), vec!["Bearer abc"]);
    }

    #[test]
    fn encodes_only_what_needs_it() {
        assert_eq!(encode("plain@example.com"), "plain@example.com");
        assert_eq!(encode("100%"), "100%25");
        assert_eq!(encode("Zoë"), "Zo%C3%AB");
        assert_eq!(encode("a\tb"), "a%09b");
    }
}
