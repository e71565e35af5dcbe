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
    pub own: Option<&'a str>,
}

/// A normalised web origin: `scheme://host[:port]`, lowercase, default port omitted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin(String);

impl Origin {
    /// Parses an origin as written in config or sent by a browser.
    pub fn parse(text: &str) -> Result<Origin, String> {
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

/// Where a request came from, as far as the gateway can tell.
#[derive(Debug, Clone)]
pub enum Caller<'a> {
    /// A configured client, and its index in the registry.
    Known(usize, &'a ClientApp),
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
        if let Some(&i) = self.by_origin.get(origin.as_str()) {
            return Some(i);
        }
        self.clients.iter().position(|c| c.origin_patterns.iter().any(|p| p.matches(origin)))
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
                (None, Some(own)) => Origin::parse(own).map_err(|_| own.chars().take(200).collect()),
                (None, None) => Err("(no Origin, Referer or Host header)".to_string()),
            }
        };
        match candidate {
            Ok(origin) => match self.owner(&origin).or(self.default_client) {
                Some(i) => Identified::Known { index: i, client: &self.clients[i], origin },
                None => Identified::Unknown(origin.to_string()),
            },
            Err(text) => match self.default_client {
                Some(i) => match hints.own.and_then(|o| Origin::parse(o).ok()) {
                    Some(origin) => Identified::Known { index: i, client: &self.clients[i], origin },
                    None => Identified::Unknown(text),
                },
                None => Identified::Unknown(text),
            },
        }
    }

    /// All clients, by index.
    pub fn all(&self) -> &[ClientApp] {
        &self.clients
    }

    /// The caller of a request: from its `Origin` header when present, else from `https`+`Host`.
    pub fn identify(&self, origin_header: Option<&[u8]>, host: Option<&[u8]>, https: bool) -> Caller<'_> {
        if let Some(raw) = origin_header {
            let text = String::from_utf8_lossy(raw);
            // Browsers send the canonical form; only odd spellings need the full parse.
            let found = self.by_origin.get(text.as_ref()).copied().or_else(|| {
                Origin::parse(&text).ok().and_then(|o| self.by_origin.get(o.as_str()).copied())
            });
            return match found {
                Some(i) => Caller::Known(i, &self.clients[i]),
                None => Caller::Unknown(text.chars().take(200).collect()),
            };
        }
        let Some(host) = host else { return Caller::Unknown("(no Origin or Host header)".into()) };
        let host = String::from_utf8_lossy(host).to_ascii_lowercase();
        let scheme = if https { "https" } else { "http" };
        let mut candidate = format!("{scheme}://{host}");
        // A Host with the scheme's default port names the same origin without it.
        for default in [":80", ":443"] {
            if (https && default == ":443" || !https && default == ":80") && candidate.ends_with(default) {
                candidate.truncate(candidate.len() - default.len());
            }
        }
        match self.by_origin.get(&candidate) {
            Some(&i) => Caller::Known(i, &self.clients[i]),
            None => Caller::Unknown(candidate.chars().take(200).collect()),
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
    fn identify_by_origin_then_host() {
        let r = registry();
        let name = |c: Caller| match c {
            Caller::Known(_, c) => c.name.clone(),
            Caller::Unknown(o) => format!("unknown {o}"),
        };
        assert_eq!(name(r.identify(Some(b"https://billing.example.com"), Some(b"x"), false)), "billing");
        assert_eq!(name(r.identify(Some(b"HTTPS://BILLING.example.com:443"), None, false)), "billing");
        assert_eq!(name(r.identify(Some(b"https://evil.example.com"), Some(b"billing.example.com"), true)), "unknown https://evil.example.com");
        assert_eq!(name(r.identify(None, Some(b"billing.example.com"), true)), "billing");
        assert_eq!(name(r.identify(None, Some(b"billing.example.com:443"), true)), "billing");
        // Same host over plain http is another origin.
        assert_eq!(name(r.identify(None, Some(b"billing.example.com"), false)), "unknown http://billing.example.com");
        assert_eq!(name(r.identify(None, Some(b"LOCALHOST:8080"), false)), "dev");
        assert!(matches!(r.identify(None, None, false), Caller::Unknown(_)));
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
        let h = |origin: Option<&'static str>, client_origin: Option<&'static str>, referer: Option<&'static str>, own: Option<&'static str>| OriginHints {
            origin: origin.map(str::as_bytes),
            client_origin: client_origin.map(str::as_bytes),
            referer: referer.map(str::as_bytes),
            own,
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
