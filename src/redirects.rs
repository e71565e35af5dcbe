//! Return URLs (`rd=`, the page a login started from, the page after logout): only paths on
//! the request's own origin, or absolute URLs on the calling client's own origins. Everything
//! else — protocol-relative `//evil.com`, `https:evil.com`, backslashes, control characters,
//! and their percent-encoded spellings — is refused, so the gateway is no open redirect.

use crate::clients::ClientRegistry;
use crate::origin::Origin;
use percent_encoding::percent_decode_str;
use url::Url;

/// The absolute URL to redirect to, when `raw` is a safe return URL for client `client` seen
/// from `origin`; `None` otherwise.
pub fn validate(
    raw: &str,
    origin: &Origin,
    registry: &ClientRegistry,
    client: usize,
) -> Option<String> {
    if raw.is_empty() || raw.len() > 4096 || !is_plain(raw) {
        return None;
    }
    // Decode a few times: a browser or a later hop may decode what we let through.
    let mut decoded = raw.to_string();
    for _ in 0..3 {
        let next = percent_decode_str(&decoded)
            .decode_utf8()
            .ok()?
            .into_owned();
        if !is_plain(&next) {
            return None;
        }
        if next == decoded {
            break;
        }
        decoded = next;
    }
    if raw.starts_with('/') {
        if raw.starts_with("//") || decoded.starts_with("//") {
            return None;
        }
        let base = Url::parse(origin.as_str()).ok()?;
        let url = base.join(raw).ok()?;
        return (url.origin().ascii_serialization() == origin.as_str()).then(|| url.to_string());
    }
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let target = Origin::parse(&url.origin().ascii_serialization()).ok()?;
    registry.belongs(client, &target).then(|| url.to_string())
}

/// No backslashes, control characters or whitespace.
fn is_plain(s: &str) -> bool {
    !s.chars()
        .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::tests::client;

    fn registry() -> ClientRegistry {
        ClientRegistry::from_config(&[
            client("a", &["https://app.example.com", "https://www.example.com"]),
            client("b", &["https://b.example.com"]),
        ])
    }

    #[test]
    fn open_redirects_are_refused() {
        let r = registry();
        let origin = Origin::parse("https://app.example.com").unwrap();
        let cases: &[(&str, Option<&str>)] = &[
            ("/", Some("https://app.example.com/")),
            (
                "/invoices/42?x=1#top",
                Some("https://app.example.com/invoices/42?x=1#top"),
            ),
            ("/a/../b", Some("https://app.example.com/b")),
            (
                "https://www.example.com/home",
                Some("https://www.example.com/home"),
            ),
            ("HTTPS://WWW.example.com/", Some("https://www.example.com/")),
            ("https://b.example.com/", None),
            ("//evil.com", None),
            ("///evil.com", None),
            ("https:evil.com", None),
            ("https:/evil.com", None),
            ("/\\evil.com", None),
            ("\\\\evil.com", None),
            ("/%5Cevil.com", None),
            ("/%2F/evil.com", None),
            ("%2F%2Fevil.com", None),
            ("/%252F%252Fevil.com", None),
            ("/%09/evil.com", None),
            ("/\t/evil.com", None),
            (" //evil.com", None),
            ("https://evil.com", None),
            ("https://app.example.com.evil.com/", None),
            ("https://app.example.com@evil.com/", None),
            ("https://user:pw@app.example.com/", None),
            ("javascript:alert(1)", None),
            ("data:text/html,x", None),
            ("evil.com", None),
            ("", None),
        ];
        for (raw, want) in cases {
            assert_eq!(validate(raw, &origin, &r, 0).as_deref(), *want, "{raw:?}");
        }
    }
}
