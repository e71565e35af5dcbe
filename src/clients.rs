//! Which client app is calling: the request's origin mapped to a configured client.
//!
//! The origin is the `Origin` header, then `x-client-origin`, then `Referer`, then the request's
//! own scheme and `Host` (from `X-Forwarded-Proto/Host` only when the peer is a trusted proxy).

use crate::config::model::ClientSettings;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
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
        let (scheme, rest) = lower.split_once("://").ok_or_else(|| format!("{text:?} is not an origin pattern: write e.g. \"https://*.preview.example.com\""))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("{text:?} must use http or https"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| format!("{text:?} has a bad port"))?)),
            None => (rest, None),
        };
        let suffix = host.strip_prefix("*.").ok_or_else(|| format!("{text:?}: a pattern has `*` as its whole first label only, e.g. \"https://*.preview.example.com\""))?;
        let labels: Vec<&str> = suffix.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty() || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
            return Err(format!("{text:?}: the part after `*.` must be a domain with at least two labels, e.g. preview.example.com"));
        }
        let default = if scheme == "https" { 443 } else { 80 };
        let port = port.filter(|&p| p != default);
        Ok(OriginPattern { text: lower.trim_end_matches('/').to_string(), scheme: scheme.to_string(), suffix: format!(".{suffix}"), port })
    }

    /// The pattern as written (lowercase).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the normalised origin matches the pattern.
    pub fn matches(&self, origin: &Origin) -> bool {
        let Ok(url) = Url::parse(origin.as_str()) else { return false };
        let Some(host) = url.host_str() else { return false };
        if url.scheme() != self.scheme || url.port() != self.port {
            return false;
        }
        match host.strip_suffix(self.suffix.as_str()) {
            Some(label) => !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            None => false,
        }
    }
}

/// Peers whose `X-Forwarded-Proto` and `X-Forwarded-Host` are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// A set of `(network, prefix length)` ranges.
    pub fn new(ranges: Vec<(IpAddr, u8)>) -> Self {
        TrustedProxies(ranges)
    }

    /// Parses `10.0.0.1` or `10.0.0.0/8` (IPv6 alike).
    pub fn parse_range(text: &str) -> Result<(IpAddr, u8), String> {
        let (ip, len) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let ip: IpAddr = ip.trim().parse().map_err(|_| format!("{text:?} is not an IP address or CIDR range, e.g. \"10.0.0.0/8\""))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l.parse::<u8>().ok().filter(|&l| l <= max).ok_or_else(|| format!("{text:?} has a bad prefix length (0..={max})"))?,
        };
        Ok((ip, len))
    }

    /// True when `peer` is in a trusted range.
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.0.iter().any(|&(net, len)| match (net, peer) {
            (IpAddr::V4(n), IpAddr::V4(p)) => len == 0 || (u32::from(n) ^ u32::from(p)) >> (32 - len as u32) == 0,
            (IpAddr::V6(n), IpAddr::V6(p)) => len == 0 || (u128::from(n) ^ u128::from(p)) >> (128 - len as u32) == 0,
            _ => false,
        })
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a request says about where it comes from, in the order it is believed.
#[derive(Debug, Default, Clone, Copy)]
pub struct OriginHints<'a> {
    /// The `Origin` header.
    pub origin: Option<&'a [u8]>,
    /// The `x-client-origin` header.
    pub client_origin: Option<&'a [u8]>,
    /// The `Referer` header.
    pub referer: Option<&'a [u8]>,
    /// The request's own origin: scheme + host (forwarded ones from trusted proxies).
    pub own: Option<&'a Origin>,
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

    /// Parses an origin as written in config or sent by a browser.
    pub fn parse(text: &str) -> Result<Origin, String> {
        if is_canonical(text) {
            return Ok(Origin(text.to_string()));
        }
        let url = Url::parse(text).map_err(|e| format!("{text:?} is not an origin ({e}): write scheme://host[:port]"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!("{text:?} must use http or https"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
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
        let valid = !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit) && p.first() != Some(&b'0') && p != default_port;
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
            && label.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
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
            octets_ok &= label.len() <= 3 && (label.len() == 1 || label.first() != Some(&b'0')) && label.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 255;
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

/// A configured client app, as the proxy uses it.
pub type ClientApp = ClientSettings;

/// The clients by origin.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: Vec<ClientApp>,
    by_origin: HashMap<String, usize>,
    default_client: Option<usize>,
}

/// A request's client and the origin it came from.
#[derive(Debug, Clone)]
pub enum Identified<'a> {
    /// A configured client (its index in the registry) and the request's origin.
    Known {
        /// Index in the registry.
        index: usize,
        /// The client.
        client: &'a ClientApp,
        /// The origin the request came from.
        origin: Origin,
    },
    /// An origin no client claims (the text is for the refusal message).
    Unknown(String),
}

impl ClientRegistry {
    /// Builds the registry from validated client settings.
    pub fn from_config(clients: &[ClientSettings]) -> Self {
        let mut by_origin = HashMap::new();
        for (i, c) in clients.iter().enumerate() {
            for o in &c.origins {
                by_origin.insert(o.as_str().to_string(), i);
            }
        }
        ClientRegistry { clients: clients.to_vec(), by_origin, default_client: None }
    }

    /// Maps origins no client claims to this client (the operator's `default_client`).
    pub fn with_default(mut self, default_client: Option<usize>) -> Self {
        self.default_client = default_client;
        self
    }

    /// The client owning a normalised origin: exact origins first, then patterns.
    pub fn owner(&self, origin: &Origin) -> Option<usize> {
        self.owner_of(origin.as_str())
    }

    /// The client owning a canonical origin text (exact origins, then patterns).
    fn owner_of(&self, origin: &str) -> Option<usize> {
        if let Some(&i) = self.by_origin.get(origin) {
            return Some(i);
        }
        let any_patterns = self.clients.iter().any(|c| !c.origin_patterns.is_empty());
        if !any_patterns {
            return None;
        }
        let origin = Origin::parse(origin).ok()?;
        self.clients.iter().position(|c| c.origin_patterns.iter().any(|p| p.matches(&origin)))
    }

    /// True when `origin` is one of client `index`'s origins (exact or pattern).
    pub fn belongs(&self, index: usize, origin: &Origin) -> bool {
        self.owner(origin) == Some(index)
    }

    /// The caller of a request from its origin hints: `Origin`, then `x-client-origin`, then
    /// `Referer`, then the request's own origin. An `Origin` or `x-client-origin` naming no client
    /// is refused; a `Referer` naming no client (a link from another site) defers to the request's
    /// own origin. Unknown origins map to the default client only when one is configured.
    pub fn identify_hints(&self, hints: OriginHints<'_>) -> Identified<'_> {
        let explicit = hints.origin.or(hints.client_origin);
        let candidate: Result<Origin, String> = if let Some(raw) = explicit {
            let text = String::from_utf8_lossy(raw);
            Origin::parse(&text).map_err(|_| text.chars().take(200).collect())
        } else {
            let from_referer = hints
                .referer
                .and_then(|r| std::str::from_utf8(r).ok())
                .and_then(|r| Url::parse(r).ok())
                .and_then(|u| Origin::parse(&u.origin().ascii_serialization()).ok())
                .filter(|o| self.owner(o).is_some());
            match (from_referer, hints.own) {
                (Some(o), _) => Ok(o),
                (None, Some(own)) => Ok(own.clone()),
                (None, None) => Err("(no Origin, Referer or Host header)".to_string()),
            }
        };
        match candidate {
            Ok(origin) => match self.owner(&origin).or(self.default_client).and_then(|i| Some((i, self.clients.get(i)?))) {
                Some((i, client)) => Identified::Known { index: i, client, origin },
                None => Identified::Unknown(origin.to_string()),
            },
            Err(text) => match (self.default_client.and_then(|i| Some((i, self.clients.get(i)?))), hints.own.cloned()) {
                (Some((i, client)), Some(origin)) => Identified::Known { index: i, client, origin },
                _ => Identified::Unknown(text),
            },
        }
    }

    /// All clients, by index.
    pub fn all(&self) -> &[ClientApp] {
        &self.clients
    }
}

/// The client app a verified credential names, which decides whose permissions apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    /// Issued to the client with this `client_id` (configured here or not).
    Client(&'a str),
    /// Its `aud` names several configured clients and no `azp` / `client_id` says which.
    Ambiguous,
    /// Names no client: an API key's exchanged token, or a token without `azp`, `client_id`
    /// or an `aud` value that is a configured client's `client_id`.
    Unbound,
}

/// The client apps a route serves, prepared once per route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// `None`: every client.
    list: Option<Box<[usize]>>,
    /// The one client the route serves, if it serves exactly one.
    only: Option<usize>,
}

impl Served {
    /// A route's `clients` (indices; `None`: every one) among `client_count` clients.
    pub fn new(clients: Option<&[usize]>, client_count: usize) -> Served {
        let only = match clients {
            Some([one]) => Some(*one),
            Some(_) => None,
            None if client_count == 1 => Some(0),
            None => None,
        };
        Served { list: clients.map(Into::into), only }
    }

    /// True when the route serves client `index`.
    pub fn serves(&self, index: usize) -> bool {
        self.list.as_deref().is_none_or(|l| l.contains(&index))
    }

    /// The one client the route serves, when it serves exactly one.
    pub fn only(&self) -> Option<usize> {
        self.only
    }
}

/// Why a request has no client app whose permission namespace may decide it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A bound credential presented from another client's origin.
    #[error("the {credential} was issued to another client application than {client}")]
    IssuedToAnother {
        /// What was presented (`token`, `session`).
        credential: &'static str,
        /// The client the request came from.
        client: String,
    },
    /// An unbound credential on a route serving several clients.
    #[error("route {route:?} serves several client applications and this credential (an API key, or a token without azp, client_id or a client's aud) names none of them, so no request header may choose its permission namespace: set `clients` on the route to the one client app it serves")]
    Unbound {
        /// The route's name.
        route: String,
    },
    /// The request's client is not one the route serves.
    #[error("route {route:?} does not serve client application {client}")]
    NotServed {
        /// The route's name.
        route: String,
        /// The client the request ended up with.
        client: String,
    },
}

/// The settled client of a request: whose namespace decides it (`None`: none, on a route that
/// needs no permission and serves several clients).
pub type Settled = Option<usize>;

impl ClientRegistry {
    /// A token's client: its `azp`, else its `client_id` claim (both in `authorized_party`),
    /// else an `aud` value that is a configured client's `client_id`.
    pub fn token_binding<'a>(&self, authorized_party: Option<&'a str>, audiences: &'a [Box<str>]) -> Binding<'a> {
        if let Some(azp) = authorized_party {
            return Binding::Client(azp);
        }
        let mut found: Option<&'a str> = None;
        for aud in audiences.iter().map(|a| &**a) {
            if self.clients.iter().any(|c| c.client_id == aud) {
                match found {
                    Some(f) if f != aud => return Binding::Ambiguous,
                    _ => found = Some(aud),
                }
            }
        }
        found.map_or(Binding::Unbound, Binding::Client)
    }

    /// Whose permissions apply. A bound credential fixes the client: the detected one must be
    /// it, unless the detected client sets `allow_foreign_tokens` (then the detected client's).
    /// An unbound credential never lets a header choose: the route's only client, or, on a
    /// route serving several, a refusal when a namespace is `needed` and no client otherwise.
    /// The client settled on must be one the route serves.
    pub fn settle(&self, detected: usize, binding: Binding<'_>, served: &Served, needed: bool, route: &str) -> Result<Settled, ClientError> {
        let client = self.clients.get(detected).ok_or_else(|| ClientError::NotServed { route: route.to_string(), client: "(unknown)".into() })?;
        let settled = match binding {
            Binding::Client(id) if id == client.client_id => Some(detected),
            Binding::Client(_) | Binding::Ambiguous if client.allow_foreign_tokens => Some(detected),
            Binding::Client(_) | Binding::Ambiguous => return Err(ClientError::IssuedToAnother { credential: "token", client: client.name.clone() }),
            Binding::Unbound => match served.only() {
                Some(only) => Some(only),
                None if needed => return Err(ClientError::Unbound { route: route.to_string() }),
                None => None,
            },
        };
        match settled {
            Some(i) if !served.serves(i) => {
                let name = self.clients.get(i).map(|c| c.name.clone()).unwrap_or_default();
                Err(ClientError::NotServed { route: route.to_string(), client: name })
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn registry() -> ClientRegistry {
        let c = |name: &str, origins: &[&str]| ClientSettings {
            name: name.into(),
            origins: origins.iter().map(|o| Origin::parse(o).unwrap()).collect(),
            client_id: format!("id_{name}"),
            client_secret: Secret::default(),
            namespace: format!("client_{name}"),
            origin_patterns: vec![],
            redirect_path: "/_authgate/callback".into(),
            scopes: vec!["openid".into()],
            token_auth: crate::config::model::TokenAuth::ClientSecretBasic,
            allow_foreign_tokens: false,
            post_logout_redirect: "/".into(),
            logout_url: None,
            logout_post: false,
        };
        ClientRegistry::from_config(&[c("billing", &["https://billing.example.com"]), c("dev", &["http://localhost:8080"])])
    }

    #[test]
    fn origin_parsing() {
        for (input, want) in [
            ("https://Billing.Example.com", Ok("https://billing.example.com")),
            ("https://billing.example.com:443", Ok("https://billing.example.com")),
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
    fn the_fast_path_agrees_with_the_url_parser() {
        let hosts = [
            "localhost", "127.0.0.1", "10.0.0.255", "127.1", "0x7f.0.0.1", "1.2.3.04", "256.1.1.1", "a.b-c.example.com", "-a.com",
            "a-.com", "xn--bcher-kva.example", "de", "cafe", "0x10", "a..b", "a.b.", "UPPER.com", "under_score.com", "1.2.3", "01.2.3.4",
            "[::1]", "example.123", "exa mple.com", "%41.com",
        ];
        let ports = ["", ":80", ":443", ":8080", ":0", ":08080", ":65535", ":65536", ":"];
        for scheme in ["http://", "https://", "HTTP://", "ftp://"] {
            for host in hosts {
                for port in ports {
                    let text = format!("{scheme}{host}{port}");
                    let slow = Url::parse(&text).ok().filter(|u| (u.scheme() == "http" || u.scheme() == "https") && u.path() == "/").map(|u| u.origin().ascii_serialization());
                    if is_canonical(&text) {
                        assert_eq!(slow.as_deref(), Some(text.as_str()), "fast path accepted {text:?}");
                    }
                    let parsed = Origin::parse(&text).ok().map(|o| o.0);
                    if let (Some(p), Some(s)) = (&parsed, &slow) {
                        assert_eq!(p, s, "{text:?}");
                    }
                }
            }
        }
        assert!(is_canonical("http://127.0.0.1:8080") && is_canonical("https://billing.example.com"));
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
        for bad in ["https://a*.example.com", "https://*.com", "ftp://*.a.com", "https://x.*.a.com", "*.a.com"] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identify_by_hints() {
        let mut clients = registry().clients;
        clients[0].origin_patterns = vec![OriginPattern::parse("https://*.preview.example.com").unwrap()];
        let r = ClientRegistry::from_config(&clients);
        let name = |c: Identified| match c {
            Identified::Known { client, origin, .. } => format!("{} {origin}", client.name),
            Identified::Unknown(o) => format!("unknown {o}"),
        };
        let owns: Vec<Origin> = ["http://localhost:8080", "https://pr-1.preview.example.com"].iter().map(|o| Origin::parse(o).unwrap()).collect();
        let owns = &owns;
        let h = move |origin: Option<&'static str>, client_origin: Option<&'static str>, referer: Option<&'static str>, own: Option<&'static str>| OriginHints {
            origin: origin.map(str::as_bytes),
            client_origin: client_origin.map(str::as_bytes),
            referer: referer.map(str::as_bytes),
            own: own.map(|o| owns.iter().find(|x| x.as_str() == o).expect("a prepared origin")),
        };
        let cases = [
            (h(Some("https://billing.example.com"), Some("http://localhost:8080"), None, None), "billing https://billing.example.com"),
            (h(None, Some("http://localhost:8080"), Some("https://billing.example.com/x"), None), "dev http://localhost:8080"),
            (h(None, None, Some("https://billing.example.com/a?b"), Some("http://localhost:8080")), "billing https://billing.example.com"),
            // A link from another site: the request's own origin decides.
            (h(None, None, Some("https://google.com/"), Some("http://localhost:8080")), "dev http://localhost:8080"),
            (h(Some("https://evil.example.com"), None, None, Some("http://localhost:8080")), "unknown https://evil.example.com"),
            (h(Some("null"), None, None, Some("http://localhost:8080")), "unknown null"),
            (h(None, None, None, Some("https://pr-1.preview.example.com")), "billing https://pr-1.preview.example.com"),
            (h(None, None, None, None), "unknown (no Origin, Referer or Host header)"),
        ];
        for (hints, want) in cases {
            assert_eq!(name(r.identify_hints(hints)), want, "{hints:?}");
        }
        let with_default = ClientRegistry::from_config(&clients).with_default(Some(1));
        assert_eq!(name(with_default.identify_hints(h(Some("https://evil.example.com"), None, None, None))), "dev https://evil.example.com");
    }

    #[test]
    fn a_tokens_client_is_azp_then_client_id_then_a_clients_aud() {
        let r = registry();
        let aud = |list: &[&str]| list.iter().map(|a| Box::<str>::from(*a)).collect::<Vec<_>>();
        let cases = [
            ("azp (or client_id) wins over aud", Some("id_dev"), aud(&["id_billing"]), Binding::Client("id_dev")),
            ("an unconfigured azp still binds", Some("someone_else"), aud(&["api"]), Binding::Client("someone_else")),
            ("an id_token: aud is the client", None, aud(&["id_billing"]), Binding::Client("id_billing")),
            ("the API audience next to a client's aud", None, aud(&["api", "id_dev"]), Binding::Client("id_dev")),
            ("the API audience only: unbound", None, aud(&["api"]), Binding::Unbound),
            ("no aud: unbound", None, aud(&[]), Binding::Unbound),
            ("two clients in aud: ambiguous", None, aud(&["id_billing", "id_dev"]), Binding::Ambiguous),
        ];
        for (name, azp, audiences, want) in cases {
            assert_eq!(r.token_binding(azp, &audiences), want, "{name}");
        }
    }

    #[test]
    fn the_credential_not_the_header_settles_the_client() {
        let mut clients = registry().clients;
        clients.push(ClientSettings { name: "partner".into(), client_id: "id_partner".into(), allow_foreign_tokens: true, ..clients[0].clone() });
        let r = ClientRegistry::from_config(&clients);
        let (billing, dev, partner) = (0, 1, 2);
        let every = Served::new(None, 3);
        let only_billing = Served::new(Some(&[billing]), 3);
        let billing_and_partner = Served::new(Some(&[billing, partner]), 3);
        let short = |res: Result<Settled, ClientError>| match res {
            Ok(Some(i)) => clients[i].name.clone(),
            Ok(None) => "none".into(),
            Err(ClientError::IssuedToAnother { .. }) => "issued to another".into(),
            Err(ClientError::Unbound { .. }) => "unbound on several".into(),
            Err(ClientError::NotServed { .. }) => "not served".into(),
        };
        let cases = [
            // (why, detected, binding, route serves, needs a namespace, settled)
            ("bound, from its own origin", billing, Binding::Client("id_billing"), &every, true, "billing"),
            ("bound, from another client's origin", dev, Binding::Client("id_billing"), &every, true, "issued to another"),
            ("bound to an unknown client", billing, Binding::Client("id_elsewhere"), &every, true, "issued to another"),
            ("ambiguous aud", billing, Binding::Ambiguous, &every, true, "issued to another"),
            ("foreign token where the client allows it", partner, Binding::Client("id_dev"), &every, true, "partner"),
            ("bound, but the route serves another client", dev, Binding::Client("id_dev"), &only_billing, true, "not served"),
            ("foreign-token client the route does not serve", partner, Binding::Client("id_billing"), &only_billing, true, "not served"),
            ("unbound: the route's one client, whatever the header says", dev, Binding::Unbound, &only_billing, true, "billing"),
            ("unbound on a route serving every client", billing, Binding::Unbound, &every, true, "unbound on several"),
            ("unbound on a route serving two", partner, Binding::Unbound, &billing_and_partner, true, "unbound on several"),
            ("unbound, authenticated route serving several: no client", dev, Binding::Unbound, &every, false, "none"),
            ("unbound, authenticated route serving one", dev, Binding::Unbound, &only_billing, false, "billing"),
        ];
        for (why, detected, binding, served, needed, want) in cases {
            assert_eq!(short(r.settle(detected, binding, served, needed, "r")), want, "{why}");
        }
        // A single-client config: every route serves it, so an unbound credential has its namespace.
        let single = ClientRegistry::from_config(&clients[..1]);
        assert_eq!(single.settle(0, Binding::Unbound, &Served::new(None, 1), true, "r"), Ok(Some(0)));
        let refused = r.settle(billing, Binding::Unbound, &every, true, "invoices").unwrap_err().to_string();
        assert!(refused.contains("set `clients` on the route"), "{refused}");
        let refused = r.settle(dev, Binding::Client("id_billing"), &every, true, "invoices").unwrap_err().to_string();
        assert_eq!(refused, "the token was issued to another client application than dev");
    }

    #[test]
    fn trusted_proxy_ranges() {
        let t = TrustedProxies::new(vec![
            TrustedProxies::parse_range("10.0.0.0/8").unwrap(),
            TrustedProxies::parse_range("127.0.0.1").unwrap(),
            TrustedProxies::parse_range("fd00::/8").unwrap(),
        ]);
        for (ip, want) in [("10.2.3.4", true), ("11.0.0.1", false), ("127.0.0.1", true), ("127.0.0.2", false), ("fd12::1", true), ("::ffff:10.0.0.1", true), ("fe80::1", false)] {
            assert_eq!(t.contains(ip.parse().unwrap()), want, "{ip}");
        }
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
            assert!(TrustedProxies::parse_range(bad).is_err(), "{bad}");
        }
    }
}
