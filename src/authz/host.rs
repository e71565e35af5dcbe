//! The host a request is routed on: an absolute-form target's authority, HTTP/2's
//! `:authority` or `Host`, checked (exactly one `Host` in HTTP/1.1, a valid name or address)
//! and lowercased, with the `Host` the upstream gets when it must differ.

use pingora::http::RequestHeader;
use std::borrow::Cow;

/// Why the request's host was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// HTTP/1.1 without `Host`.
    #[error("the request has no Host header, which HTTP/1.1 requires")]
    Missing,
    /// Two or more `Host` headers.
    #[error("the request has more than one Host header")]
    Duplicate,
    /// HTTP/2 with a `Host` header naming another authority than `:authority` (RFC 9113
    /// §8.3.1): routing reads one, the request's origin the other.
    #[error("the request's Host header differs from its :authority")]
    Conflict,
    /// Not a host name, IPv4 or bracketed IPv6 address with an optional port.
    #[error("the request's host is not a valid host name with an optional port")]
    Invalid,
}

/// The host a request is routed on.
#[derive(Debug, PartialEq, Eq)]
pub struct RoutedHost<'a> {
    /// Lowercase, without port or trailing dot: what host-specific routes are matched on.
    pub name: Cow<'a, str>,
    /// `Host` for the upstream, when it must differ from the one received (absolute-form
    /// target, uppercase letters, trailing dot; for HTTP/2 without `Host`, from `:authority`).
    pub forward: Option<String>,
}

/// The unchecked `host[:port]` the request is routed on, picked as [`request_host`] picks it:
/// for code that runs after `request_host` accepted the request and must read the same host
/// (the request's own origin), never `Host` when an absolute-form target overrides it.
pub fn routed_authority(req: &RequestHeader) -> Option<&[u8]> {
    let target = pingora::http::authority::raw_target_authority(req.raw_path());
    target
        .authority()
        .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()))
        .or_else(|| req.headers.get(&http::header::HOST).map(|v| v.as_bytes()))
}

/// The request's host: an absolute-form target's authority (it overrides `Host`, RFC 9112
/// §3.2.2), else HTTP/2's `:authority`, else `Host`. HTTP/1.1 needs exactly one `Host`;
/// HTTP/1.0 may have none (`Ok(None)`).
pub fn request_host(req: &RequestHeader) -> Result<Option<RoutedHost<'_>>, HostError> {
    let mut hosts = req.headers.get_all(&http::header::HOST).iter();
    let host_header = hosts.next().map(|v| v.as_bytes());
    if hosts.next().is_some() {
        return Err(HostError::Duplicate);
    }
    let target = pingora::http::authority::raw_target_authority(req.raw_path());
    if matches!(
        target,
        pingora::http::authority::RawTargetAuthority::AmbiguousAuthority
    ) {
        return Err(HostError::Invalid);
    }
    let absolute = target.authority();
    if host_header.is_none() && req.version == http::Version::HTTP_11 {
        return Err(HostError::Missing);
    }
    let authority = absolute.or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
    if let (Some(a), Some(h), http::Version::HTTP_2) = (authority, host_header, req.version) {
        if !a.eq_ignore_ascii_case(h) {
            return Err(HostError::Conflict);
        }
    }
    let Some(raw) = authority.or(host_header) else {
        return if req.version <= http::Version::HTTP_10 {
            Ok(None)
        } else {
            Err(HostError::Missing)
        };
    };
    let (name, port) = split_host(raw).ok_or(HostError::Invalid)?;
    let canonical = name.bytes().all(|b| !b.is_ascii_uppercase()) && !name.ends_with('.');
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(HostError::Invalid);
    }
    let name = if canonical {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(trimmed.to_ascii_lowercase())
    };
    // HTTP/2 without `Host`: Pingora writes `Host` from `:authority` for an HTTP/1.1 upstream
    // (and an HTTP/2 upstream gets `:authority`) before the filters run, so a canonical
    // authority needs no copy of its own.
    let received = match host_header {
        Some(h) => h == raw,
        None => req.version == http::Version::HTTP_2,
    };
    let forward = (!canonical || !received).then(|| match port {
        Some(p) => format!("{name}:{p}"),
        None => name.to_string(),
    });
    Ok(Some(RoutedHost { name, forward }))
}

/// Splits `host[:port]` and checks both: a name of letters, digits, `-`, `_` and `.` (at most
/// one trailing dot, no empty label), an IPv4 address, or a bracketed IPv6 address.
fn split_host(raw: &[u8]) -> Option<(&str, Option<&str>)> {
    let raw = std::str::from_utf8(raw).ok()?;
    let (name, port) = if raw.starts_with('[') {
        let end = raw.find(']')?;
        let (name, rest) = raw.split_at(end + 1);
        let inner = name.get(1..name.len() - 1)?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        match rest {
            "" => (name, None),
            r => (name, Some(r.strip_prefix(':')?)),
        }
    } else {
        let (name, port) = match raw.bytes().rposition(|b| b == b':') {
            Some(i) => (raw.get(..i)?, Some(raw.get(i + 1..)?)),
            None => (raw, None),
        };
        let labels = name.strip_suffix('.').unwrap_or(name);
        // One pass (this runs on every request): allowed bytes only, no empty label.
        let mut previous = b'.';
        for b in labels.bytes() {
            let allowed = b.is_ascii_alphanumeric()
                || b == b'-'
                || b == b'_'
                || (b == b'.' && previous != b'.');
            if !allowed {
                return None;
            }
            previous = b;
        }
        if labels.is_empty() || previous == b'.' {
            return None;
        }
        (name, port)
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_table() {
        // (version, target, Host headers, routed host, Host for the upstream)
        type Want = Result<Option<(&'static str, Option<&'static str>)>, HostError>;
        let v11 = http::Version::HTTP_11;
        let v10 = http::Version::HTTP_10;
        let v2 = http::Version::HTTP_2;
        let cases: [(http::Version, &str, &[&str], Want); 25] = [
            (v11, "/x", &["example.com"], Ok(Some(("example.com", None)))),
            (
                v11,
                "/x",
                &["example.com:8080"],
                Ok(Some(("example.com", None))),
            ),
            (
                v11,
                "/x",
                &["Example.COM"],
                Ok(Some(("example.com", Some("example.com")))),
            ),
            (
                v11,
                "/x",
                &["example.com."],
                Ok(Some(("example.com", Some("example.com")))),
            ),
            (
                v11,
                "/x",
                &["example.com.:81"],
                Ok(Some(("example.com", Some("example.com:81")))),
            ),
            (v11, "/x", &["127.0.0.1:80"], Ok(Some(("127.0.0.1", None)))),
            (v11, "/x", &["[::1]:80"], Ok(Some(("[::1]", None)))),
            (
                v11,
                "http://b.example/x",
                &["a.example"],
                Ok(Some(("b.example", Some("b.example")))),
            ),
            (
                v11,
                "http://b.example:81/x",
                &["b.example:81"],
                Ok(Some(("b.example", None))),
            ),
            (v11, "/x", &[], Err(HostError::Missing)),
            (v11, "http://b.example/x", &[], Err(HostError::Missing)),
            (v10, "/x", &[], Ok(None)),
            (
                v11,
                "/x",
                &["a.example", "b.example"],
                Err(HostError::Duplicate),
            ),
            (v11, "/x", &[""], Err(HostError::Invalid)),
            (v11, "/x", &["a..example"], Err(HostError::Invalid)),
            (v11, "/x", &["a.example:x"], Err(HostError::Invalid)),
            (v11, "/x", &["a example"], Err(HostError::Invalid)),
            (v11, "/x", &["user@a.example"], Err(HostError::Invalid)),
            (v11, "/x", &["."], Err(HostError::Invalid)),
            // HTTP/2: `:authority` (the target's authority here), `Host` optional and the same.
            (
                v2,
                "https://a.example/x",
                &[],
                Ok(Some(("a.example", None))),
            ),
            (
                v2,
                "https://A.example./x",
                &[],
                Ok(Some(("a.example", Some("a.example")))),
            ),
            (
                v2,
                "https://a.example:8443/x",
                &["A.example:8443"],
                Ok(Some(("a.example", Some("a.example:8443")))),
            ),
            (
                v2,
                "https://a.example/x",
                &["a.example"],
                Ok(Some(("a.example", None))),
            ),
            (
                v2,
                "https://a.example/x",
                &["b.example"],
                Err(HostError::Conflict),
            ),
            (v2, "/x", &[], Err(HostError::Missing)),
        ];
        for (version, target, hosts, want) in cases {
            let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
            req.set_version(version);
            for h in hosts {
                req.append_header("host", *h).unwrap();
            }
            let got = request_host(&req).map(|h| h.map(|h| (h.name.into_owned(), h.forward)));
            let want = want.map(|h| h.map(|(n, f)| (n.to_string(), f.map(str::to_string))));
            assert_eq!(got, want, "{version:?} {target} {hosts:?}");
            // What the request's own origin is built from names the host routing read.
            if let Ok(Some((name, _))) = &got {
                let own = routed_authority(&req)
                    .and_then(split_host)
                    .map(|(n, _)| n.trim_end_matches('.').to_ascii_lowercase());
                assert_eq!(
                    own.as_deref(),
                    Some(name.as_str()),
                    "{version:?} {target} {hosts:?}: own origin from another host"
                );
            }
        }
    }
}
