//! Headers on the way upstream. Nothing a client sends may pose as something the gateway
//! vouches for: identity headers (the gateway's prefix, its own `x-authgate-` namespace, and by
//! default other proxies' identity headers), credentials, URL and method overrides, and forwarding headers from peers that are
//! not trusted proxies are removed, every name compared with `_` read as `-` (a CGI, WSGI, Rack
//! or PHP upstream reads `x_auth_user` as `x-auth-user`). Then the verified identity is
//! injected, values outside visible ASCII percent-encoded so no claim can smuggle a header line.

use crate::config::model::{HeaderSettings, Underscores, UnverifiedEmail};
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use pingora::http::RequestHeader;

const UNSAFE: &AsciiSet = &CONTROLS.add(b'%');

/// The gateway's own header namespace: never taken from a client, whatever the configured
/// prefix (the gateway may name its headers here, e.g. an `identity_jwt.header`).
pub const GATEWAY_NAMESPACE: &str = "x-authgate-";

/// Identity headers that other auth proxies and web-server modules set, which upstreams moved
/// from them trust (oauth2-proxy, Apache/Kerberos `REMOTE_USER`, Pomerium, Authelia, Cloudflare
/// Access, Google IAP, AWS ALB, Azure App Service). Stripped by default (`strip_defaults`).
pub const OTHER_PROXIES_IDENTITY: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
    "x-remote-user",
    "remote-user",
    "x-remote-group",
    "x-remote-email",
    "x-remote-name",
    "remote-groups",
    "remote-email",
    "remote-name",
    "x-user",
    "x-username",
    "x-user-id",
    "x-email",
    "x-pomerium-jwt-assertion",
    "x-pomerium-claim-email",
    "x-pomerium-claim-sub",
    "x-pomerium-claim-groups",
    "cf-access-jwt-assertion",
    "cf-access-authenticated-user-email",
    "x-goog-iap-jwt-assertion",
    "x-goog-authenticated-user-email",
    "x-goog-authenticated-user-id",
    "x-amzn-oidc-data",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-accesstoken",
    "x-ms-client-principal",
    "x-ms-client-principal-name",
    "x-ms-client-principal-id",
    "x-ms-token-aad-access-token",
    "x-ms-token-aad-id-token",
];

/// Headers that make some upstream frameworks serve another URL or method than the one the
/// gateway authorised (IIS/Symfony `X-Original-URL`, Rails/Express method overrides): always removed.
pub const OVERRIDES: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-original-method",
    "x-forwarded-method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Forwarding headers: believed (and kept) only from trusted proxies, else removed; the
/// gateway sets `x-forwarded-for` and `x-forwarded-proto` itself.
pub const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-protocol",
    "x-url-scheme",
    "front-end-https",
    "x-real-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-proxyuser-ip",
];

/// Header names the gateway reads or writes that `http` has no constant for. Looking a
/// header up by a `HeaderName` skips parsing the name, which a `&str` lookup pays each time.
pub mod names {
    use http::HeaderName;
    /// `sec-fetch-mode`.
    pub static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
    /// `sec-fetch-site`.
    pub static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
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

/// Why a request's headers are refused before its route is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A header name with `_`, under `with_underscores = "reject"`.
    #[error("header names with underscores are refused ({0:?})")]
    Underscore(String),
    /// `Connection` names a header other than the hop-by-hop ones: a proxy removes the headers
    /// `Connection` names, so the upstream would not receive what the gateway decided on.
    #[error("the Connection header names {0:?}, which a proxy must then remove before the upstream: Connection may name only close, keep-alive, upgrade, te and http2-settings")]
    ConnectionNominates(String),
    /// A transfer coding other than `chunked` (`gzip, chunked`...): 501.
    #[error("Transfer-Encoding {0:?} is not supported: send the body with Content-Length, or with Transfer-Encoding: chunked alone")]
    TransferCoding(String),
    /// `Transfer-Encoding` that names `chunked` more than once, or an empty coding.
    #[error("Transfer-Encoding {0:?} is malformed: chunked may be named once, alone")]
    MalformedTransferEncoding(String),
}

impl HeaderError {
    /// True for a transfer coding the gateway does not implement (RFC 9112 §6.1: 501); every
    /// other header refusal is a 400.
    pub fn not_implemented(&self) -> bool {
        matches!(self, HeaderError::TransferCoding(_))
    }
}

/// What `Connection` may name: the connection's own options (`close`, `keep-alive`), an
/// upgrade (`upgrade`, `http2-settings` for h2c) and `te`. Every one of them is a hop-by-hop
/// header Pingora removes on the way upstream whatever `Connection` says, so naming one changes
/// nothing the upstream receives.
pub const CONNECTION_OPTIONS: &[&str] = &["close", "keep-alive", "upgrade", "te", "http2-settings"];

/// `Some` when a `Connection` header (any of them, comma-separated) names anything but
/// [`CONNECTION_OPTIONS`]: a proxy removes every header `Connection` names (RFC 9110 §7.6.1),
/// so `Connection: content-type` or `Connection: x-region` would let the live check read a
/// header the upstream never receives, and the upstream parse no body the check approved.
pub fn connection_refusal(headers: &HeaderMap) -> Option<HeaderError> {
    for value in headers.get_all(http::header::CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.is_empty()
                || CONNECTION_OPTIONS
                    .iter()
                    .any(|o| token.eq_ignore_ascii_case(o.as_bytes()))
            {
                continue;
            }
            return Some(HeaderError::ConnectionNominates(
                String::from_utf8_lossy(token).into_owned(),
            ));
        }
    }
    None
}

/// `Some` unless `Transfer-Encoding` is absent or is `chunked` alone (one token over all its
/// headers): any other coding (`gzip, chunked`) is not implemented (501), `chunked` twice or
/// an empty coding is malformed (400). Refused before anything reaches the upstream.
pub fn transfer_encoding_refusal(headers: &HeaderMap) -> Option<HeaderError> {
    let mut values = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    let first = values.next()?;
    let alone = values.next().is_none();
    if alone && first.as_bytes().eq_ignore_ascii_case(b"chunked") {
        return None;
    }
    let all: Vec<&[u8]> = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    let text = || {
        all.iter()
            .map(|t| String::from_utf8_lossy(t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if all
        .iter()
        .any(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"chunked"))
    {
        return Some(HeaderError::TransferCoding(text()));
    }
    if all.len() == 1
        && all
            .first()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
    {
        return None;
    }
    Some(HeaderError::MalformedTransferEncoding(text()))
}

/// `Sec-Fetch-Site`, the browser's word on where a request came from, least trusting first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FetchSite {
    /// `cross-site`, or a value the gateway does not know.
    CrossSite,
    /// `same-site`: another origin of the same site.
    SameSite,
    /// `none`: the user typed the URL, or opened a bookmark.
    UserInitiated,
    /// `same-origin`.
    SameOrigin,
}

/// The request's `Sec-Fetch-Site`, `None` when it has none (not a browser, or an old one).
/// Several values (repeated headers or a comma-joined list) give the least trusting of them,
/// never the first: a request can't make itself more trusted by adding a header.
pub fn fetch_site(headers: &HeaderMap) -> Option<FetchSite> {
    headers
        .get_all(&names::SEC_FETCH_SITE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| match t.trim_ascii() {
            b"same-origin" => FetchSite::SameOrigin,
            b"none" => FetchSite::UserInitiated,
            b"same-site" => FetchSite::SameSite,
            _ => FetchSite::CrossSite,
        })
        .min()
}

/// A header name as upstream frameworks may read it: lowercase, `_` as `-`.
pub fn fold(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b == b'_' {
                '-'
            } else {
                char::from(b.to_ascii_lowercase())
            }
        })
        .collect()
}

/// A header value for text from a token or the config: as it is when it is visible ASCII
/// (nearly always), else percent-encoded.
pub fn encode(text: &str) -> HeaderValue {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%') {
        if let Ok(v) = HeaderValue::from_str(text) {
            return v;
        }
    }
    // Percent-encoding leaves only visible ASCII, which is always a valid value.
    HeaderValue::from_str(&utf8_percent_encode(text, UNSAFE).to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The verified identity to inject, as header values built once per token, client and route.
#[derive(Debug, Default, Clone, Copy)]
pub struct Identity<'a> {
    /// The subject, unique across providers ([`crate::identity::Principal::upstream_subject`]).
    pub subject: Option<&'a HeaderValue>,
    /// `email`, sent when verified or when the settings send unverified ones.
    pub email: Option<&'a HeaderValue>,
    /// Whether the provider verified `email`.
    pub email_verified: bool,
    /// The provider that vouched (its configured name; `idp` for the `[idp]`).
    pub provider: Option<&'a HeaderValue>,
    /// The client app's name.
    pub client: Option<&'a HeaderValue>,
    /// The permission that let the request through, `entity:action`.
    pub permission: Option<&'a HeaderValue>,
}

/// A set of folded header names, bucketed by length: a lookup compares the name only with the
/// few names of its own length (this runs for every header of every proxied request, and
/// hashing each name cost more than the comparisons).
#[derive(Debug, Clone, Default)]
struct NameSet {
    /// `by_len[n]`: the names `n` bytes long (names of 64 bytes and more share the last bucket).
    by_len: Vec<Vec<Box<[u8]>>>,
}

impl NameSet {
    const BUCKETS: usize = 64;

    fn insert(&mut self, folded: &str) {
        if self.by_len.is_empty() {
            self.by_len = vec![Vec::new(); Self::BUCKETS];
        }
        if let Some(bucket) = self.by_len.get_mut(folded.len().min(Self::BUCKETS - 1)) {
            if !bucket.iter().any(|n| **n == *folded.as_bytes()) {
                bucket.push(folded.as_bytes().into());
            }
        }
    }

    fn contains(&self, folded: &[u8]) -> bool {
        self.by_len
            .get(folded.len().min(Self::BUCKETS - 1))
            .is_some_and(|bucket| bucket.iter().any(|n| **n == *folded))
    }
}

/// What one request header is, for the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Forwarded as it is.
    Keep,
    /// Never forwarded from a caller.
    Strip,
    /// Kept only from a trusted proxy.
    Forwarding,
}

/// Strips and injects the identity headers.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    prefix: String,
    subject: HeaderName,
    email: HeaderName,
    email_verified: HeaderName,
    provider: HeaderName,
    client: HeaderName,
    permission: HeaderName,
    name: HeaderName,
    groups: HeaderName,
    forward_token: bool,
    underscores: Underscores,
    unverified_email: UnverifiedEmail,
    /// Identity headers of other proxies, overrides, the configured list, credentials.
    strip: NameSet,
    forwarding: NameSet,
}

impl IdentityHeaders {
    /// Builds the header names from the configured prefix, and the strip lists.
    pub fn from_config(h: &HeaderSettings) -> IdentityHeaders {
        // The prefix is validated as letters, digits and dashes, so these names always parse.
        let name = |suffix: &str| {
            HeaderName::from_bytes(format!("{}{suffix}", h.prefix).as_bytes())
                .unwrap_or_else(|_| HeaderName::from_static("x-auth-invalid"))
        };
        let mut strip = NameSet::default();
        for n in OVERRIDES.iter().chain(if h.strip_defaults {
            OTHER_PROXIES_IDENTITY
        } else {
            &[]
        }) {
            strip.insert(n);
        }
        for n in &h.strip {
            strip.insert(n);
        }
        let mut forwarding = NameSet::default();
        for n in FORWARDING {
            forwarding.insert(n);
        }
        IdentityHeaders {
            prefix: fold(&h.prefix),
            subject: name("subject"),
            email: name("email"),
            email_verified: name("email-verified"),
            provider: name("provider"),
            client: name("client"),
            permission: name("permission"),
            name: name("name"),
            groups: name("groups"),
            forward_token: h.forward_token,
            underscores: h.underscores,
            unverified_email: h.unverified_email,
            strip,
            forwarding,
        }
    }

    /// Also strips these headers (the API-key header, the identity assertion's header).
    pub fn also_strip(mut self, names: impl IntoIterator<Item = HeaderName>) -> IdentityHeaders {
        for n in names {
            self.strip.insert(&fold(n.as_str()));
        }
        self
    }

    /// Why the request must be refused before anything is decided on it, if it must: a header
    /// name with `_` under `with_underscores = "reject"`, a `Connection` header naming a header
    /// the upstream would then not receive ([`connection_refusal`]), a `Transfer-Encoding`
    /// other than `chunked` alone ([`transfer_encoding_refusal`]).
    /// In that order of precedence; one pass over the names (every request comes here, and a
    /// pass over a few names costs less than the two lookups it spares when neither is sent).
    pub fn refuses(&self, req: &RequestHeader) -> Option<HeaderError> {
        let reject_underscores = self.underscores == Underscores::Reject;
        let (mut transfer_encoding, mut connection, mut underscore) = (false, false, None);
        for name in req.headers.keys() {
            if *name == http::header::TRANSFER_ENCODING {
                transfer_encoding = true;
            } else if *name == http::header::CONNECTION {
                connection = true;
            } else if reject_underscores && underscore.is_none() && name.as_str().contains('_') {
                underscore = Some(name);
            }
        }
        if transfer_encoding {
            if let Some(why) = transfer_encoding_refusal(&req.headers) {
                return Some(why);
            }
        }
        if connection {
            if let Some(why) = connection_refusal(&req.headers) {
                return Some(why);
            }
        }
        underscore.map(|n| HeaderError::Underscore(n.as_str().to_string()))
    }

    /// True when an email its provider `verified` (or not) goes upstream, in the header and
    /// in the signed identity (`unverified_email`).
    pub fn sends_email(&self, verified: bool) -> bool {
        verified || self.unverified_email == UnverifiedEmail::Send
    }

    /// What `name` (lowercase, `_` folded) is, for the upstream.
    fn kind(&self, folded: &[u8]) -> Kind {
        if folded.starts_with(self.prefix.as_bytes())
            || folded.starts_with(GATEWAY_NAMESPACE.as_bytes())
            || self.strip.contains(folded)
            || (folded == b"authorization" && !self.forward_token)
        {
            Kind::Strip
        } else if self.forwarding.contains(folded) {
            Kind::Forwarding
        } else {
            Kind::Keep
        }
    }

    /// What becomes of a header named `name` from the caller on its way upstream.
    fn fate(&self, name: &HeaderName, trusted: bool, folded: &mut Vec<u8>) -> Fate {
        if *name == http::header::COOKIE {
            return Fate::Cookie;
        }
        if *name == names::X_FORWARDED_FOR {
            return if trusted {
                Fate::ForwardedFor
            } else {
                Fate::Drop
            };
        }
        let bytes = name.as_str().as_bytes();
        let kind = if bytes.contains(&b'_') {
            if self.underscores != Underscores::Allow {
                return Fate::Drop;
            }
            folded.clear();
            folded.extend(bytes.iter().map(|&b| if b == b'_' { b'-' } else { b }));
            // `x_forwarded_for` from anyone is dropped: the gateway writes that header.
            if folded.as_slice() == b"x-forwarded-for" {
                return Fate::Drop;
            }
            self.kind(folded)
        } else {
            self.kind(bytes)
        };
        if kind == Kind::Keep || (kind == Kind::Forwarding && trusted) {
            Fate::Keep
        } else {
            Fate::Drop
        }
    }

    /// The headers of `req` the upstream may see: no client-sent identity headers (the prefix's,
    /// the gateway's own [`GATEWAY_NAMESPACE`], other proxies'), overrides or
    /// credentials (unless configured to forward the token), no headers named in
    /// [`Self::also_strip`], forwarding headers only from a `trusted` proxy, header names with
    /// `_` as configured. `Cookie` and (from a trusted proxy) `X-Forwarded-For` are set aside
    /// for the caller to rewrite. The request is taken out of `req` ([`UpstreamHeaders::install`]
    /// puts it back) and its header map reused: a few headers are moved into a map sized for the
    /// gateway's own, more are edited in place (see [`MOVE_AT_MOST`]).
    pub fn upstream(&self, req: &mut RequestHeader, trusted: bool) -> UpstreamHeaders {
        let send_end_stream = req.send_end_stream();
        // The target as sent, when the URI does not carry it byte for byte (absolute-form, raw
        // bytes): rare, and copied only then.
        let raw_target = (req.raw_path() != uri_target(&req.uri)).then(|| req.raw_path().to_vec());
        let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
        let mut parts = http::request::Parts::from(std::mem::replace(req, placeholder));
        let map = std::mem::take(&mut parts.headers);
        let mut out = UpstreamHeaders {
            map: HeaderMap::new(),
            cookies: Vec::new(),
            forwarded_for: Vec::new(),
            parts,
            raw_target,
            send_end_stream,
        };
        let mut folded = Vec::new();
        if map.len() <= MOVE_AT_MOST {
            out.map = HeaderMap::with_capacity(map.len() + 10);
            // Consuming the map names each header once, before the first of its values.
            let (mut fate, mut kept) = (Fate::Drop, None);
            for (name, value) in map {
                if let Some(name) = name {
                    fate = self.fate(&name, trusted, &mut folded);
                    kept = (fate == Fate::Keep).then_some(name);
                }
                match (fate, &kept) {
                    (Fate::Keep, Some(name)) => {
                        out.map.append(name.clone(), value);
                    }
                    (Fate::Cookie, _) => out.cookies.push(value),
                    (Fate::ForwardedFor, _) => out.forwarded_for.push(value),
                    _ => {}
                }
            }
            return out;
        }
        let mut map = map;
        // A map cannot lose names while they are read: the names to remove are listed first,
        // each with its fate, which says where its values go.
        let mut gone: Vec<(HeaderName, Fate)> = Vec::new();
        for name in map.keys() {
            match self.fate(name, trusted, &mut folded) {
                Fate::Keep => {}
                fate => gone.push((name.clone(), fate)),
            }
        }
        for (name, fate) in gone {
            if let http::header::Entry::Occupied(entry) = map.entry(name) {
                let (_, values) = entry.remove_entry_mult();
                match fate {
                    Fate::Cookie => out.cookies.extend(values),
                    Fate::ForwardedFor => out.forwarded_for.extend(values),
                    Fate::Keep | Fate::Drop => {}
                }
            }
        }
        // Room for the gateway's headers (identity, request id, forwarding) without regrowing.
        let _ = map.try_reserve(10);
        out.map = map;
        out
    }
}

/// Up to this many header values, [`IdentityHeaders::upstream`] moves the kept ones into a new
/// map with room for the gateway's headers; above it, it removes the others from the request's
/// own map. Measured with callgrind (PERFORMANCE.md, "Round three"): moving costs ~250
/// instructions a kept header, editing ~1.5k once (the removals and the map's growth), so
/// editing wins from about six headers on (a browser sends a dozen or more).
pub const MOVE_AT_MOST: usize = 6;

/// What becomes of one of the caller's headers upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Forwarded as it is.
    Keep,
    /// Not forwarded.
    Drop,
    /// Set aside for the gateway to filter and put back.
    Cookie,
    /// Set aside for the gateway to extend (from a trusted proxy).
    ForwardedFor,
}

/// The upstream request's headers being rebuilt: taken from the caller's request by
/// [`IdentityHeaders::upstream`], then given the gateway's headers, then installed with
/// [`UpstreamHeaders::install`].
///
/// Editing the value map on its own and rebuilding Pingora's request header around it costs a
/// fraction of editing that header through its API (each edit there re-parses the name and
/// updates a second, case-preserving map, growing both). Header names reach the upstream
/// lowercase (standard ones title-cased), as they do through Envoy or HAProxy: HTTP header
/// names are case-insensitive.
#[derive(Debug)]
pub struct UpstreamHeaders {
    /// The headers so far.
    pub map: HeaderMap,
    /// The caller's `Cookie` values, for the gateway to filter and put back.
    pub cookies: Vec<HeaderValue>,
    /// The caller's `X-Forwarded-For` values.
    pub forwarded_for: Vec<HeaderValue>,
    /// The request's method, target, version and extensions (its headers are `map`).
    parts: http::request::Parts,
    /// The target as sent, when its URI does not reproduce it.
    raw_target: Option<Vec<u8>>,
    /// HTTP/2's end-of-stream flag on the request's headers.
    send_end_stream: Option<bool>,
}

/// The target a request header rebuilt from `uri` has (what Pingora's `RequestHeader::raw_path`
/// returns when no raw target is kept).
fn uri_target(uri: &http::Uri) -> &[u8] {
    uri.path_and_query()
        .map(|p| p.as_str().as_bytes())
        .or_else(|| uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default()
}

impl UpstreamHeaders {
    /// Adds the verified identity: subject, provider, client, permission, and the email with
    /// `{prefix}email-verified` when it is verified or `unverified_email = "send"`.
    pub fn inject(&mut self, names: &IdentityHeaders, id: &Identity<'_>) {
        let email = id.email.filter(|_| names.sends_email(id.email_verified));
        for (name, value) in [
            (&names.subject, id.subject),
            (&names.provider, id.provider),
            (&names.email, email),
            (&names.client, id.client),
            (&names.permission, id.permission),
        ] {
            if let Some(v) = value {
                self.map.insert(name.clone(), v.clone());
            }
        }
        if email.is_some() {
            self.map.insert(
                names.email_verified.clone(),
                HeaderValue::from_static(if id.email_verified { "true" } else { "false" }),
            );
        }
    }

    /// Injects a browser session's profile: `{prefix}name` (a GitHub user's login) and
    /// `{prefix}groups` (comma-separated, percent-encoded as other values; a GitHub user's
    /// teams as `org:team-slug`).
    pub fn inject_profile(
        &mut self,
        names: &IdentityHeaders,
        name: Option<&str>,
        groups: &[Box<str>],
    ) {
        if let Some(n) = name {
            self.map.insert(names.name.clone(), encode(n));
        }
        if !groups.is_empty() {
            // A group with a comma could not be told apart from two: left out.
            let joined = groups
                .iter()
                .filter(|g| !g.contains(','))
                .map(|g| &**g)
                .collect::<Vec<_>>()
                .join(",");
            self.map.insert(names.groups.clone(), encode(&joined));
        }
    }

    /// Puts the request back into `req` with these headers: the method, version, extensions and
    /// request target it was taken with; `uri` replaces the target (a normalised path).
    pub fn install(self, req: &mut RequestHeader, uri: Option<http::Uri>) -> pingora::Result<()> {
        let mut parts = self.parts;
        parts.headers = self.map;
        let keep_target = uri.is_none();
        if let Some(uri) = uri {
            parts.uri = uri;
        }
        let mut rebuilt = RequestHeader::from(parts);
        // A target the URI does not carry byte for byte (absolute-form, raw bytes) is kept as sent.
        if let (true, Some(raw)) = (keep_target, &self.raw_target) {
            if rebuilt.raw_path() != raw.as_slice() {
                rebuilt.set_raw_path(raw)?;
            }
        }
        if let Some(end) = self.send_end_stream {
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

    fn settings(forward_token: bool) -> HeaderSettings {
        HeaderSettings {
            prefix: "x-auth-".into(),
            forward_token,
            underscores: Underscores::Drop,
            strip: vec![],
            strip_defaults: true,
            unverified_email: UnverifiedEmail::Omit,
        }
    }

    /// The names the upstream would receive from `req`.
    fn forwarded(h: &IdentityHeaders, req: &RequestHeader, trusted: bool) -> Vec<String> {
        let up = h.upstream(&mut req.clone(), trusted);
        let mut names: Vec<String> = up.map.keys().map(|n| n.to_string()).collect();
        names.extend(
            up.forwarded_for
                .iter()
                .map(|_| "x-forwarded-for".to_string()),
        );
        names
    }

    #[test]
    fn every_impostor_is_stripped_under_every_spelling() {
        let strict = IdentityHeaders::from_config(&HeaderSettings {
            strip: vec!["x-tenant".into()],
            ..settings(false)
        });
        let allow = IdentityHeaders::from_config(&HeaderSettings {
            underscores: Underscores::Allow,
            strip: vec!["x-tenant".into()],
            ..settings(false)
        });
        let impostors = [
            "x-auth-subject",
            "X-Auth-Subject",
            "x_auth_subject",
            "X_AUTH_SUBJECT",
            "x-auth_permission",
            "x_auth_jwt",
            "x-forwarded-user",
            "X-Forwarded-Email",
            "x_forwarded_groups",
            "x-auth-request-user",
            "X-Remote-User",
            "remote-user",
            "Remote_User",
            "x-original-url",
            "X-Rewrite-URL",
            "x-http-method-override",
            "X_HTTP_METHOD_OVERRIDE",
            "x-method-override",
            "authorization",
            "x-tenant",
            "X_Tenant",
            "x-authgate-user",
            "X-Authgate-Reason",
            "x_authgate_user",
            "X_AUTHGATE_IDENTITY",
        ];
        // Two headers (moved into a new map) and a browser's dozen (edited in place).
        let dozen: Vec<(String, &str)> = (0..12).map(|i| (format!("x-pad-{i}"), "p")).collect();
        for name in impostors {
            for padding in [&dozen[..0], &dozen[..]] {
                let mut sent = vec![(name, "admin"), ("x-kept", "1")];
                sent.extend(padding.iter().map(|(n, v)| (n.as_str(), *v)));
                let req = request(&sent);
                let want: Vec<String> = std::iter::once("x-kept".to_string())
                    .chain(padding.iter().map(|(n, _)| n.clone()))
                    .collect();
                for h in [&strict, &allow] {
                    for trusted in [false, true] {
                        // Editing in place may reorder names (not values of one name).
                        let (mut got, mut want) = (forwarded(h, &req, trusted), want.clone());
                        got.sort();
                        want.sort();
                        assert_eq!(
                            got,
                            want,
                            "{name} reached the upstream ({} headers, trusted: {trusted})",
                            sent.len()
                        );
                    }
                }
            }
        }
        // Underscored names that pose as nothing pass only under `allow`.
        let req = request(&[("x_trace_tag", "1")]);
        assert!(forwarded(&strict, &req, false).is_empty());
        assert_eq!(forwarded(&allow, &req, false), vec!["x_trace_tag"]);
    }

    #[test]
    fn forwarding_headers_only_from_trusted_proxies() {
        let h = IdentityHeaders::from_config(&settings(false));
        let sent = [
            "forwarded",
            "x-forwarded-host",
            "X-Forwarded-Port",
            "x-forwarded-proto",
            "x-real-ip",
            "True-Client-IP",
            "x-forwarded-for",
            "x-forwarded-prefix",
        ];
        let req = request(&sent.iter().map(|n| (*n, "evil")).collect::<Vec<_>>());
        assert!(
            forwarded(&h, &req, false).is_empty(),
            "{:?}",
            forwarded(&h, &req, false)
        );
        assert_eq!(forwarded(&h, &req, true).len(), sent.len());
        // `x_forwarded_for` is never taken, even under `allow`: the gateway writes that header.
        let allow = IdentityHeaders::from_config(&HeaderSettings {
            underscores: Underscores::Allow,
            ..settings(false)
        });
        assert!(forwarded(&allow, &request(&[("x_forwarded_for", "1.2.3.4")]), true).is_empty());
    }

    #[test]
    fn reject_refuses_underscores_and_only_then() {
        let reject = IdentityHeaders::from_config(&HeaderSettings {
            underscores: Underscores::Reject,
            ..settings(false)
        });
        assert!(reject.refuses(&request(&[("x_anything", "1")])).is_some());
        assert!(reject.refuses(&request(&[("x-anything", "1")])).is_none());
        assert!(IdentityHeaders::from_config(&settings(false))
            .refuses(&request(&[("x_anything", "1")]))
            .is_none());
    }

    #[test]
    fn refusals_keep_their_precedence_whatever_the_order_of_the_names() {
        let reject = IdentityHeaders::from_config(&HeaderSettings {
            underscores: Underscores::Reject,
            ..settings(false)
        });
        let te = ("transfer-encoding", "gzip, chunked");
        let conn = ("connection", "x-region");
        let under = ("x_anything", "1");
        for sent in [
            vec![under, conn, te],
            vec![te, under, conn],
            vec![conn, te, under],
        ] {
            assert!(
                matches!(
                    reject.refuses(&request(&sent)),
                    Some(HeaderError::TransferCoding(_))
                ),
                "{sent:?}"
            );
        }
        for sent in [vec![under, conn], vec![conn, under]] {
            assert_eq!(
                reject.refuses(&request(&sent)),
                Some(HeaderError::ConnectionNominates("x-region".into())),
                "{sent:?}"
            );
        }
        // Allowed values of both still let the underscore refusal through, and nothing else.
        let sent = [
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            under,
        ];
        assert_eq!(
            reject.refuses(&request(&sent)),
            Some(HeaderError::Underscore("x_anything".into()))
        );
        assert_eq!(
            IdentityHeaders::from_config(&settings(false)).refuses(&request(&sent)),
            None
        );
    }

    fn map(headers: &[(&str, &str)]) -> HeaderMap {
        request(headers).headers.clone()
    }

    #[test]
    fn connection_may_name_only_hop_by_hop_options() {
        for ok in [
            vec![],
            vec![("connection", "close")],
            vec![("connection", "Keep-Alive")],
            vec![("connection", "keep-alive, Upgrade")],
            vec![("connection", "Upgrade, HTTP2-Settings")],
            vec![("connection", "TE, close")],
            vec![("connection", "close"), ("connection", "upgrade")],
            vec![("connection", " , close ,")],
        ] {
            assert_eq!(connection_refusal(&map(&ok)), None, "{ok:?}");
        }
        for (sent, named) in [
            (vec![("connection", "x-region")], "x-region"),
            (vec![("connection", "close, Content-Type")], "Content-Type"),
            (vec![("connection", "content-length")], "content-length"),
            (
                vec![("connection", "transfer-encoding")],
                "transfer-encoding",
            ),
            (
                vec![("connection", "close"), ("connection", "host")],
                "host",
            ),
            (
                vec![("connection", "keep-alive,x-forwarded-for")],
                "x-forwarded-for",
            ),
            (vec![("connection", "proxy-connection")], "proxy-connection"),
            (vec![("connection", "\"x-region\"")], "\"x-region\""),
        ] {
            assert_eq!(
                connection_refusal(&map(&sent)),
                Some(HeaderError::ConnectionNominates(named.into())),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn transfer_encoding_is_chunked_alone_or_refused() {
        assert_eq!(transfer_encoding_refusal(&map(&[])), None);
        for ok in ["chunked", "Chunked", " chunked "] {
            assert_eq!(
                transfer_encoding_refusal(&map(&[("transfer-encoding", ok)])),
                None,
                "{ok}"
            );
        }
        for (sent, not_implemented) in [
            (vec![("transfer-encoding", "gzip, chunked")], true),
            (
                vec![
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked"),
                ],
                true,
            ),
            (vec![("transfer-encoding", "chunked, identity")], true),
            (vec![("transfer-encoding", "deflate")], true),
            (vec![("transfer-encoding", "chunked, chunked")], false),
            (
                vec![
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                false,
            ),
            (vec![("transfer-encoding", ", chunked")], false),
            (vec![("transfer-encoding", "")], false),
        ] {
            let why = transfer_encoding_refusal(&map(&sent));
            assert_eq!(
                why.as_ref().map(HeaderError::not_implemented),
                Some(not_implemented),
                "{sent:?}: {why:?}"
            );
        }
    }

    #[test]
    fn fetch_site_takes_the_least_trusting_value() {
        let site = |values: &[&str]| {
            fetch_site(&map(&values
                .iter()
                .map(|v| ("sec-fetch-site", *v))
                .collect::<Vec<_>>()))
        };
        assert_eq!(site(&[]), None);
        assert_eq!(site(&["same-origin"]), Some(FetchSite::SameOrigin));
        assert_eq!(site(&["none"]), Some(FetchSite::UserInitiated));
        assert_eq!(site(&["same-site"]), Some(FetchSite::SameSite));
        assert_eq!(site(&["cross-site"]), Some(FetchSite::CrossSite));
        assert_eq!(site(&["Same-Origin"]), Some(FetchSite::CrossSite));
        assert_eq!(
            site(&["same-origin", "cross-site"]),
            Some(FetchSite::CrossSite)
        );
        assert_eq!(
            site(&["none", "same-origin"]),
            Some(FetchSite::UserInitiated)
        );
        assert_eq!(site(&["same-origin, same-site"]), Some(FetchSite::SameSite));
        assert_eq!(site(&["same-origin", ""]), Some(FetchSite::CrossSite));
    }

    #[test]
    fn other_proxies_identity_can_be_allowed() {
        let h = IdentityHeaders::from_config(&HeaderSettings {
            strip_defaults: false,
            ..settings(false)
        });
        assert_eq!(
            forwarded(&h, &request(&[("x-forwarded-user", "a")]), false),
            vec!["x-forwarded-user"]
        );
        // Overrides are removed whatever the config says.
        assert!(forwarded(&h, &request(&[("x-original-url", "/admin")]), false).is_empty());
    }

    fn values(req: &RequestHeader, n: &str) -> Vec<String> {
        req.headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn strips_spoofed_then_injects() {
        let h = IdentityHeaders::from_config(&settings(false))
            .also_strip([HeaderName::from_static("x-api-key")]);
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
        let mut up = h.upstream(&mut req, false);
        assert_eq!(up.cookies, vec![HeaderValue::from_static("a=b")]);
        assert!(
            up.forwarded_for.is_empty(),
            "x-forwarded-for is the gateway's to write"
        );
        let (subject, email, client) = (
            encode("user_1"),
            encode("a\r\nx-auth-evil: 1@é.com"),
            encode("billing"),
        );
        up.inject(
            &h,
            &Identity {
                subject: Some(&subject),
                email: Some(&email),
                email_verified: true,
                client: Some(&client),
                ..Identity::default()
            },
        );
        up.install(&mut req, None).unwrap();
        assert_eq!(values(&req, "x-auth-subject"), vec!["user_1"]);
        assert!(values(&req, "x-auth-roles").is_empty());
        assert!(values(&req, "authorization").is_empty());
        assert_eq!(values(&req, "x-other"), vec!["kept", "kept too"]);
        assert_eq!(values(&req, "host"), vec!["api.example.com"]);
        assert_eq!(
            values(&req, "x-auth-email"),
            vec!["a%0D%0Ax-auth-evil: 1@%C3%A9.com"]
        );
        assert!(values(&req, "x-auth-evil").is_empty());
        assert!(values(&req, "x-auth-permission").is_empty());
        assert!(values(&req, "x-api-key").is_empty());
        // Cookie and X-Forwarded-For are the caller's to put back.
        assert!(values(&req, "cookie").is_empty() && values(&req, "x-forwarded-for").is_empty());
        assert_eq!(req.raw_path(), b"/a?b=1");
        assert_eq!(req.method, http::Method::GET);
    }

    #[test]
    fn an_unverified_email_goes_upstream_only_when_configured_and_marked() {
        let (subject, email, provider) = (encode("u"), encode("a@b.example"), encode("idp"));
        for (unverified_email, verified, want_email, want_flag) in [
            (
                UnverifiedEmail::Omit,
                true,
                Some("a@b.example"),
                Some("true"),
            ),
            (UnverifiedEmail::Omit, false, None, None),
            (
                UnverifiedEmail::Send,
                true,
                Some("a@b.example"),
                Some("true"),
            ),
            (
                UnverifiedEmail::Send,
                false,
                Some("a@b.example"),
                Some("false"),
            ),
        ] {
            let h = IdentityHeaders::from_config(&HeaderSettings {
                unverified_email,
                ..settings(false)
            });
            let mut req = request(&[("x-auth-email-verified", "true")]);
            let mut up = h.upstream(&mut req, false);
            up.inject(
                &h,
                &Identity {
                    subject: Some(&subject),
                    email: Some(&email),
                    email_verified: verified,
                    provider: Some(&provider),
                    ..Identity::default()
                },
            );
            up.install(&mut req, None).unwrap();
            let case = format!("{unverified_email:?}, verified: {verified}");
            assert_eq!(
                values(&req, "x-auth-email").first().map(String::as_str),
                want_email,
                "{case}"
            );
            assert_eq!(
                values(&req, "x-auth-email-verified"),
                want_flag.into_iter().map(String::from).collect::<Vec<_>>(),
                "{case}"
            );
            assert_eq!(values(&req, "x-auth-provider"), vec!["idp"], "{case}");
            assert_eq!(h.sends_email(verified), want_email.is_some(), "{case}");
        }
    }

    #[test]
    fn install_keeps_the_target_or_takes_a_normalised_one() {
        let h = IdentityHeaders::from_config(&settings(false));
        let mut req = RequestHeader::build("POST", b"/a/./b?q=%20", None).unwrap();
        req.append_header("Content-Length", "3").unwrap();
        h.upstream(&mut req, false).install(&mut req, None).unwrap();
        assert_eq!(req.raw_path(), b"/a/./b?q=%20");
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(values(&req, "content-length"), vec!["3"]);
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"Content-Length: 3\r\n");
        h.upstream(&mut req, false)
            .install(&mut req, Some("/a/b?q=%20".parse().unwrap()))
            .unwrap();
        assert_eq!(req.raw_path(), b"/a/b?q=%20");
        // An absolute-form target: the URI does not carry it, so it is kept as sent.
        let mut req = RequestHeader::build("GET", b"http://a.example/x?y=1", None).unwrap();
        req.set_send_end_stream(false);
        h.upstream(&mut req, false).install(&mut req, None).unwrap();
        assert_eq!(req.raw_path(), b"http://a.example/x?y=1");
    }

    #[test]
    fn every_value_of_a_set_aside_or_removed_header_goes_in_order() {
        let h = IdentityHeaders::from_config(&settings(false));
        let sent = [
            ("cookie", "a=1"),
            ("x-auth-subject", "forged"),
            ("Cookie", "b=2"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-keep", "1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("X-Auth-Subject", "again"),
            ("x-keep", "2"),
        ];
        // Eight values (edited in place) and, without the two identity headers, six (moved).
        let few: Vec<(&str, &str)> = sent
            .iter()
            .copied()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("x-auth-subject"))
            .collect();
        assert!(sent.len() > MOVE_AT_MOST && few.len() <= MOVE_AT_MOST);
        for (headers, trusted) in [
            (&sent[..], false),
            (&sent[..], true),
            (&few[..], false),
            (&few[..], true),
        ] {
            let mut req = request(headers);
            let up = h.upstream(&mut req, trusted);
            assert_eq!(
                up.cookies,
                vec![
                    HeaderValue::from_static("a=1"),
                    HeaderValue::from_static("b=2")
                ]
            );
            let want: Vec<HeaderValue> = if trusted {
                vec![
                    HeaderValue::from_static("10.0.0.1"),
                    HeaderValue::from_static("10.0.0.2"),
                ]
            } else {
                vec![]
            };
            assert_eq!(up.forwarded_for, want, "trusted: {trusted}");
            up.install(&mut req, None).unwrap();
            let names: Vec<&str> = req.headers.keys().map(|n| n.as_str()).collect();
            assert_eq!(
                names,
                vec!["x-keep"],
                "{} values, trusted: {trusted}",
                headers.len()
            );
            assert_eq!(values(&req, "x-keep"), vec!["1", "2"]);
        }
    }

    #[test]
    fn forwards_token_when_configured() {
        let h = IdentityHeaders::from_config(&settings(true));
        let mut req = request(&[("authorization", "Bearer abc")]);
        h.upstream(&mut req, false).install(&mut req, None).unwrap();
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
