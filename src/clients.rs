//! Which client app is calling: the request's origin mapped to a configured client.
//!
//! The origin is the `Origin` header, else the request's own scheme and `Host`.

use crate::config::model::ClientSettings;
use std::collections::HashMap;
use std::fmt;
use url::Url;

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
        ClientRegistry { clients: clients.to_vec(), by_origin }
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
}
