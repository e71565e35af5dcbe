//! What one request carries from phase to phase.

use crate::authz::permissions::PermissionNames;
use crate::identity::credentials::Caller;
use crate::identity::session::SessionId;
use http::HeaderValue;
use std::sync::Arc;
use std::time::Instant;

/// The request headers that several steps read (client identification, CORS, the credential),
/// taken in one pass over the head: most requests send few headers and none of the origin
/// hints, where a lookup each would hash and probe the map five times to find nothing. Each is
/// the header's first value, as `HeaderMap::get` gives. `Debug` shows the credentials' presence
/// only, never their values.
#[derive(Default)]
pub struct HeadHints {
    /// `Origin`.
    pub origin: Option<HeaderValue>,
    /// `x-client-origin`.
    pub client_origin: Option<HeaderValue>,
    /// `Referer`.
    pub referer: Option<HeaderValue>,
    /// `Authorization`.
    pub authorization: Option<HeaderValue>,
    /// The API-key header (`api_key_header`, `x-api-key` by default).
    pub api_key: Option<HeaderValue>,
}

impl HeadHints {
    /// The hints in `headers`; `api_key` names the API-key header.
    pub fn read(headers: &http::HeaderMap, api_key: &http::HeaderName) -> HeadHints {
        let mut hints = HeadHints::default();
        hints.fill(headers, api_key);
        hints
    }

    /// Fills these hints (empty, as a fresh context has them) from `headers`, in place.
    pub fn fill(&mut self, headers: &http::HeaderMap, api_key: &http::HeaderName) {
        let hints = self;
        for (name, value) in headers {
            let slot = if *name == http::header::ORIGIN {
                &mut hints.origin
            } else if *name == http::header::REFERER {
                &mut hints.referer
            } else if *name == http::header::AUTHORIZATION {
                &mut hints.authorization
            } else if name == api_key {
                &mut hints.api_key
            } else if *name == crate::headers::names::X_CLIENT_ORIGIN {
                &mut hints.client_origin
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
    }
}

impl std::fmt::Debug for HeadHints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadHints")
            .field("origin", &self.origin)
            .field("client_origin", &self.client_origin)
            .field("referer", &self.referer)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Bytes of a hint, as the steps read them.
pub fn bytes(value: &Option<HeaderValue>) -> Option<&[u8]> {
    value.as_ref().map(HeaderValue::as_bytes)
}

/// A request's id: 16 random lowercase hex digits, made once as a header value and reused for
/// the upstream's and the response's `x-request-id` and for the logs.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh random id.
    pub fn random() -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n: u64 = rand::random();
        let mut digits = [0u8; 16];
        for (i, d) in digits.iter_mut().enumerate() {
            // A nibble indexes the 16 digits: never out of range.
            *d = HEX
                .get(((n >> (60 - 4 * i)) & 15) as usize)
                .copied()
                .unwrap_or(b'0');
        }
        // Hex digits are always a valid header value.
        let mut value =
            HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("-"));
        // A value no other response repeats: HTTP/2 sends it as a never-indexed literal (HPACK,
        // RFC 7541 §6.2.3) rather than adding it to the connection's compression table, where it
        // would evict useful entries and make every later response search a longer chain of
        // `x-request-id` entries. Only HPACK (and `Debug`, which hides the value) read the flag.
        value.set_sensitive(true);
        RequestId(value)
    }

    /// No id yet (before `request_filter` runs).
    pub fn none() -> RequestId {
        RequestId(HeaderValue::from_static("-"))
    }

    /// The id as a header value (cloning it shares the bytes).
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-request state, filled in as the request moves through the gateway.
pub struct RequestCtx {
    /// The gateway (config generation) this request started with; a reload never changes it mid-request.
    pub gateway: Option<Arc<super::Gateway>>,
    /// When the request arrived.
    pub started: Instant,
    /// The id sent back in `x-request-id` and written to logs.
    pub request_id: RequestId,
    /// Index of the matched route.
    pub route: Option<usize>,
    /// Index of the calling client app.
    pub client: Option<usize>,
    /// Index of a client whose permission namespace decides the request (set by the binding
    /// step: the settled client, or the first of a route's clients sharing one namespace).
    pub namespace: Option<usize>,
    /// The normalised path, when it differs from the one received.
    pub normalized_path: Option<String>,
    /// `Host` for the upstream when it differs from the one received (absolute-form, trailing dot, case).
    pub upstream_host: Option<String>,
    /// The verified caller, with the credential it presented.
    pub caller: Option<Caller>,
    /// The permission that let the request through, `entity:action`.
    pub granted: Option<Arc<PermissionNames>>,
    /// What the caller presented: `bearer`, `api_key` or `session` (`-` before it did), set
    /// before it is verified so that a refused credential is logged by kind.
    pub credential: &'static str,
    /// How the permission was decided: `static`, `abac`, `abac-unavailable-allowed`, `authenticated`.
    pub decision: &'static str,
    /// Whether a live decision came from the cache.
    pub abac_cached: Option<bool>,
    /// The entity and permission the route required, for logs.
    pub required: Option<Arc<PermissionNames>>,
    /// How the request ended, for metrics.
    pub outcome: &'static str,
    /// The request arrived over HTTPS (directly, or as a trusted proxy says).
    pub https: bool,
    /// The request came from one of the configured trusted proxies (its `X-Forwarded-*` count).
    pub trusted_proxy: bool,
    /// The address of the connection's peer (the client, or the trusted proxy in front).
    pub peer: Option<std::net::IpAddr>,
    /// `Set-Cookie` values to send with the response.
    pub set_cookies: Vec<String>,
    /// The registered origin to answer with CORS headers.
    pub cors_origin: Option<String>,
    /// The client app was settled against the caller's credential (the binding step passed).
    pub client_settled: bool,
    /// A shadow rule let through a caller whose credential was not verified.
    pub shadow_unverified: bool,
    /// Upstream addresses tried so far (retries after connect failures).
    pub upstream_tries: u32,
    /// Index of the upstream address last picked.
    pub peer_index: Option<usize>,
    /// Counts the request in flight on its address (least-connections upstreams).
    pub lease: Option<crate::upstream::Lease>,
    /// When the request was handed to its upstream (the latest try).
    pub upstream_started: Option<Instant>,
    /// An upgraded connection on a `websocket_close_at_expiry` route: when it must end.
    pub socket_deadline: Option<super::expiry::Deadline>,
    /// The headers several steps read, taken once (`Gateway::observe`).
    pub hints: HeadHints,
    /// The id of the browser session that authorised the request (with a session caller): an
    /// upgraded socket watches the session by it ([`super::socket_watch`]).
    pub session_id: Option<SessionId>,
    /// An upgraded connection a browser session authorised: set once this instance ended the
    /// session ([`super::socket_watch`]).
    pub socket_session: Option<crate::identity::watch::EndedHere>,
}

impl RequestCtx {
    /// A fresh context.
    pub fn new() -> RequestCtx {
        RequestCtx {
            gateway: None,
            started: Instant::now(),
            request_id: RequestId::none(),
            route: None,
            client: None,
            namespace: None,
            normalized_path: None,
            upstream_host: None,
            caller: None,
            granted: None,
            credential: "-",
            decision: "-",
            abac_cached: None,
            required: None,
            outcome: "proxied",
            https: false,
            trusted_proxy: false,
            peer: None,
            set_cookies: Vec::new(),
            cors_origin: None,
            client_settled: false,
            shadow_unverified: false,
            upstream_tries: 0,
            peer_index: None,
            lease: None,
            upstream_started: None,
            socket_deadline: None,
            hints: HeadHints::default(),
            session_id: None,
            socket_session: None,
        }
    }

    /// Forgets what a shadow rule's decision found (caller, client, permission), so that the
    /// enforced rule it hides decides afresh what the upstream is told.
    pub fn reset_decision(&mut self) {
        self.client = None;
        self.namespace = None;
        self.caller = None;
        self.session_id = None;
        self.granted = None;
        self.required = None;
        self.credential = "-";
        self.decision = "-";
        self.abac_cached = None;
        self.client_settled = false;
        self.shadow_unverified = false;
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx::new()
    }
}

#[cfg(test)]
mod tests {
    use super::{bytes, HeadHints, RequestId};

    #[test]
    fn hints_are_each_header_first_value_as_a_lookup_gives() {
        let api_key = http::HeaderName::from_static("x-api-key");
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("referer", "https://a.example/x"),
            ("x-other", "1"),
            ("origin", "https://first.example"),
            ("authorization", "Bearer one"),
            ("origin", "https://second.example"),
            ("x-api-key", "ak_1"),
            ("authorization", "Bearer two"),
            ("x-client-origin", "https://c.example"),
            ("X-Api-Key", "ak_2"),
        ] {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let hints = HeadHints::read(&h, &api_key);
        let lookup = |name: &str| h.get(name).map(|v| v.as_bytes());
        assert_eq!(bytes(&hints.origin), lookup("origin"));
        assert_eq!(bytes(&hints.origin), Some(&b"https://first.example"[..]));
        assert_eq!(bytes(&hints.referer), lookup("referer"));
        assert_eq!(bytes(&hints.authorization), Some(&b"Bearer one"[..]));
        assert_eq!(bytes(&hints.api_key), Some(&b"ak_1"[..]));
        assert_eq!(bytes(&hints.client_origin), lookup("x-client-origin"));
        // Another API-key header name: x-api-key is then nothing special.
        let other = HeadHints::read(&h, &http::HeaderName::from_static("x-other"));
        assert_eq!(bytes(&other.api_key), Some(&b"1"[..]));
        // Debug never shows a credential.
        let shown = format!("{hints:?}");
        assert!(
            !shown.contains("Bearer one") && !shown.contains("ak_1"),
            "{shown}"
        );
        assert!(shown.contains("https://first.example"), "{shown}");
        let none = HeadHints::read(&http::HeaderMap::new(), &api_key);
        assert!(none.origin.is_none() && none.authorization.is_none() && none.api_key.is_none());
    }

    #[test]
    fn request_ids_are_16_lowercase_hex_digits_and_differ() {
        let a = RequestId::random();
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{a}"
        );
        assert_eq!(a.header_value().as_bytes(), a.as_bytes());
        // Never indexed by HTTP/2's header compression (see `random`).
        assert!(a.header_value().is_sensitive());
        assert_ne!(a.as_str(), RequestId::random().as_str());
        assert_eq!(a.to_string(), a.as_str());
    }
}
