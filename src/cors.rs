//! CORS for the client apps' origins: preflights are answered by the gateway, responses get
//! `Access-Control-Allow-Origin` (the exact origin) with credentials. Origins that belong to no
//! client get no CORS headers at all.

use http::Method;

/// Methods allowed in preflights.
pub const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// How long a browser may cache a preflight, in seconds.
pub const MAX_AGE: &str = "600";

/// True for a CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
/// The headers are looked up only for `OPTIONS` (every request asks).
pub fn is_preflight(req: &http::request::Parts) -> bool {
    req.method == Method::OPTIONS
        && req.headers.contains_key(http::header::ORIGIN)
        && req
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Headers of every response to an allowed origin (and `Vary`: see [`vary_origin`]).
pub fn response_headers(origin: &str) -> [(&'static str, String); 2] {
    [
        ("access-control-allow-origin", origin.to_string()),
        ("access-control-allow-credentials", "true".to_string()),
    ]
}

/// The `Vary` value of a response that names `Origin`: the upstream's own `Vary` with `Origin`
/// added (a cache must key on what the upstream varies on and on the origin), `None` when it
/// already names it (or `*`).
pub fn vary_origin(existing: &[&[u8]]) -> Option<String> {
    let mut names: Vec<&str> = existing
        .iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names
        .iter()
        .any(|n| *n == "*" || n.eq_ignore_ascii_case("origin"))
    {
        return None;
    }
    names.push("Origin");
    Some(names.join(", "))
}

/// Headers of a preflight answer to an allowed origin; the requested headers are echoed when
/// they are plain header names.
pub fn preflight_headers(
    origin: &str,
    requested_headers: Option<&[u8]>,
) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = response_headers(origin).into();
    out.push(("access-control-allow-methods", ALLOW_METHODS.to_string()));
    out.push(("access-control-max-age", MAX_AGE.to_string()));
    out.push(("vary", "Origin".to_string()));
    if let Some(h) = requested_headers.and_then(|h| std::str::from_utf8(h).ok()) {
        let names: Vec<&str> = h
            .split(',')
            .map(str::trim)
            .filter(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .collect();
        if !names.is_empty() {
            out.push(("access-control-allow-headers", names.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_detection_and_headers() {
        let req = |method: Method, headers: &[(&str, &str)]| {
            let mut b = http::Request::builder().method(method).uri("/x");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        let both = [
            ("origin", "https://a"),
            ("access-control-request-method", "PUT"),
        ];
        assert!(is_preflight(&req(Method::OPTIONS, &both)));
        assert!(!is_preflight(&req(Method::OPTIONS, &both[..1])));
        assert!(!is_preflight(&req(Method::OPTIONS, &both[1..])));
        assert!(!is_preflight(&req(Method::GET, &both)));
        let h = preflight_headers("https://a", Some(b"Content-Type, X-Foo, bad header\r\n"));
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("access-control-allow-origin"), Some("https://a"));
        assert_eq!(get("access-control-allow-credentials"), Some("true"));
        assert_eq!(
            get("access-control-allow-headers"),
            Some("Content-Type, X-Foo")
        );
        assert_eq!(get("vary"), Some("Origin"));
    }

    #[test]
    fn vary_adds_origin_to_the_upstreams() {
        assert_eq!(vary_origin(&[]).as_deref(), Some("Origin"));
        assert_eq!(
            vary_origin(&[b"Accept-Encoding"]).as_deref(),
            Some("Accept-Encoding, Origin")
        );
        assert_eq!(
            vary_origin(&[b"Accept-Encoding, Cookie", b"Accept-Language"]).as_deref(),
            Some("Accept-Encoding, Cookie, Accept-Language, Origin")
        );
        assert_eq!(vary_origin(&[b"accept, origin"]), None);
        assert_eq!(vary_origin(&[b"*"]), None);
    }
}
