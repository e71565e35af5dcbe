//! Web origins (`scheme://host[:port]`) and origin patterns (`https://*.preview.example.com`):
//! values the config validates and the client registry matches requests with, so they live
//! below both.

use std::fmt;
use url::Url;

/// An origin pattern with one wildcard label: `https://*.preview.example.com[:port]`.
/// `*` stands for exactly one DNS label (letters, digits, `-`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginPattern {
    text: String,
    scheme: String,
    suffix: String,
    port: Option<u16>,
}

impl OriginPattern {
    /// Parses `scheme://*.suffix[:port]`.
    pub fn parse(text: &str) -> Result<OriginPattern, String> {
        let lower = text.to_ascii_lowercase();
        let (scheme, rest) = lower.split_once("://").ok_or_else(|| {
            format!(
                "{text:?} is not an origin pattern: write e.g. \"https://*.preview.example.com\""
            )
        })?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("{text:?} must use http or https"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("{text:?} has a bad port"))?,
                ),
            ),
            None => (rest, None),
        };
        let suffix = host.strip_prefix("*.").ok_or_else(|| format!("{text:?}: a pattern has `*` as its whole first label only, e.g. \"https://*.preview.example.com\""))?;
        let labels: Vec<&str> = suffix.split('.').collect();
        if labels.len() < 2
            || labels
                .iter()
                .any(|l| l.is_empty() || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(format!("{text:?}: the part after `*.` must be a domain with at least two labels, e.g. preview.example.com"));
        }
        let default = if scheme == "https" { 443 } else { 80 };
        let port = port.filter(|&p| p != default);
        Ok(OriginPattern {
            text: lower.trim_end_matches('/').to_string(),
            scheme: scheme.to_string(),
            suffix: format!(".{suffix}"),
            port,
        })
    }

    /// The pattern as written (lowercase).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the normalised origin matches the pattern.
    pub fn matches(&self, origin: &Origin) -> bool {
        let Ok(url) = Url::parse(origin.as_str()) else {
            return false;
        };
        let Some(host) = url.host_str() else {
            return false;
        };
        if url.scheme() != self.scheme || url.port() != self.port {
            return false;
        }
        match host.strip_suffix(self.suffix.as_str()) {
            Some(label) => {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }
            None => false,
        }
    }
}

/// A normalised web origin: `scheme://host[:port]`, lowercase, default port omitted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin(String);

impl Origin {
    /// Like [`Origin::parse`], keeping the string when it is already canonical (no copy).
    pub fn parse_owned(text: String) -> Result<Origin, String> {
        if is_canonical(&text) {
            return Ok(Origin(text));
        }
        Origin::parse(&text)
    }

    /// `text` when it is an origin the registry holds (registered origins are canonical, so
    /// it needs no check: the common case of a request's own origin), else [`Origin::parse_owned`].
    pub fn parse_known(text: String, known: impl FnOnce(&str) -> bool) -> Result<Origin, String> {
        if known(&text) {
            return Ok(Origin(text));
        }
        Origin::parse_owned(text)
    }

    /// Parses an origin as written in config or sent by a browser.
    pub fn parse(text: &str) -> Result<Origin, String> {
        if is_canonical(text) {
            return Ok(Origin(text.to_string()));
        }
        let url = Url::parse(text)
            .map_err(|e| format!("{text:?} is not an origin ({e}): write scheme://host[:port]"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!("{text:?} must use http or https"));
        }
        if url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(format!("{text:?} is not a bare origin: write scheme://host[:port] without path, query or credentials"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{text:?} has no host"));
        }
        Ok(Origin(url.origin().ascii_serialization()))
    }

    /// The origin as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True when `text` is already what the URL parser would make of it: `http(s)://` and a
/// lowercase DNS name (not ending in a number, which the parser may read as IPv4) or a
/// dotted-quad address, with an optional non-default port. The hot path skips the parser then.
fn is_canonical(text: &str) -> bool {
    let (rest, default_port) = match text.strip_prefix("https://") {
        Some(r) => (r.as_bytes(), &b"443"[..]),
        None => match text.strip_prefix("http://") {
            Some(r) => (r.as_bytes(), &b"80"[..]),
            None => return false,
        },
    };
    let (host, port) = match rest.iter().rposition(|&b| b == b':') {
        Some(i) => {
            let (host, colon_port) = rest.split_at(i);
            (host, colon_port.get(1..))
        }
        None => (rest, None),
    };
    if let Some(p) = port {
        let valid = !p.is_empty()
            && p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && p.first() != Some(&b'0')
            && p != default_port;
        if !valid || p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) > 65535 {
            return false;
        }
    }
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    // One pass over the labels: [a-z0-9-], 1 to 63 long, no dash at either end, no `xn--`.
    let (mut labels, mut numeric_labels, mut last_numeric, mut octets_ok) = (0, 0, false, true);
    for label in host.split(|&b| b == b'.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
            && !label.starts_with(b"xn--");
        if !ok {
            return false;
        }
        labels += 1;
        last_numeric = label.iter().all(u8::is_ascii_digit);
        if last_numeric {
            numeric_labels += 1;
            // A dotted-quad octet: up to 255, no leading zero.
            octets_ok &= label.len() <= 3
                && (label.len() == 1 || label.first() != Some(&b'0'))
                && label.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 255;
        }
    }
    if last_numeric {
        // Only a plain dotted quad is canonical among numeric hosts.
        return labels == 4 && numeric_labels == 4 && octets_ok;
    }
    // A last label like `0x7f` is read as a number too: leave those to the parser.
    let last = host.rsplit(|&b| b == b'.').next().unwrap_or(host);
    !last.starts_with(b"0x")
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_parsing() {
        for (input, want) in [
            (
                "https://Billing.Example.com",
                Ok("https://billing.example.com"),
            ),
            (
                "https://billing.example.com:443",
                Ok("https://billing.example.com"),
            ),
            ("http://localhost:8080/", Ok("http://localhost:8080")),
            ("https://a.example.com/path", Err(())),
            ("ftp://a.example.com", Err(())),
            ("https://user:pw@a.example.com", Err(())),
            ("null", Err(())),
        ] {
            let got = Origin::parse(input).map(|o| o.0).map_err(|_| ());
            assert_eq!(got, want.map(str::to_string), "{input}");
        }
    }

    #[test]
    fn a_registered_origin_is_taken_as_is_and_anything_else_is_parsed() {
        let registered = Origin::parse("http://127.0.0.1:8080").unwrap();
        let known = |t: &str| t == registered.as_str();
        assert_eq!(
            Origin::parse_known("http://127.0.0.1:8080".into(), known),
            Ok(registered.clone())
        );
        assert_eq!(
            Origin::parse_known("http://Other.test:80".into(), known).map(|o| o.0),
            Ok("http://other.test".into())
        );
        assert!(Origin::parse_known("http://a b".into(), known).is_err());
    }

    #[test]
    fn the_fast_path_agrees_with_the_url_parser() {
        let hosts = [
            "localhost",
            "127.0.0.1",
            "10.0.0.255",
            "127.1",
            "0x7f.0.0.1",
            "1.2.3.04",
            "256.1.1.1",
            "a.b-c.example.com",
            "-a.com",
            "a-.com",
            "xn--bcher-kva.example",
            "de",
            "cafe",
            "0x10",
            "a..b",
            "a.b.",
            "UPPER.com",
            "under_score.com",
            "1.2.3",
            "01.2.3.4",
            "[::1]",
            "example.123",
            "exa mple.com",
            "%41.com",
        ];
        let ports = [
            "", ":80", ":443", ":8080", ":0", ":08080", ":65535", ":65536", ":",
        ];
        for scheme in ["http://", "https://", "HTTP://", "ftp://"] {
            for host in hosts {
                for port in ports {
                    let text = format!("{scheme}{host}{port}");
                    let slow = Url::parse(&text)
                        .ok()
                        .filter(|u| {
                            (u.scheme() == "http" || u.scheme() == "https") && u.path() == "/"
                        })
                        .map(|u| u.origin().ascii_serialization());
                    if is_canonical(&text) {
                        assert_eq!(
                            slow.as_deref(),
                            Some(text.as_str()),
                            "fast path accepted {text:?}"
                        );
                    }
                    let parsed = Origin::parse(&text).ok().map(|o| o.0);
                    if let (Some(p), Some(s)) = (&parsed, &slow) {
                        assert_eq!(p, s, "{text:?}");
                    }
                }
            }
        }
        assert!(
            is_canonical("http://127.0.0.1:8080") && is_canonical("https://billing.example.com")
        );
    }

    #[test]
    fn patterns_match_one_label() {
        let p = OriginPattern::parse("https://*.preview.example.com").unwrap();
        let o = |t: &str| Origin::parse(t).unwrap();
        for (origin, want) in [
            ("https://pr-12.preview.example.com", true),
            ("https://PR-12.Preview.Example.com:443", true),
            ("https://a.b.preview.example.com", false),
            ("https://preview.example.com", false),
            ("http://pr-12.preview.example.com", false),
            ("https://pr-12.preview.example.com:8443", false),
            ("https://evilpreview.example.com", false),
            ("https://x.preview.example.com.evil.com", false),
        ] {
            assert_eq!(p.matches(&o(origin)), want, "{origin}");
        }
        for bad in [
            "https://a*.example.com",
            "https://*.com",
            "ftp://*.a.com",
            "https://x.*.a.com",
            "*.a.com",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
