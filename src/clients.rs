//! Which client app is calling: the request's origin mapped to a configured client.
//!
//! The origin is the `Origin` header, then `x-client-origin`, then `Referer`, then the request's
//! own scheme and `Host` (from `X-Forwarded-Proto/Host` only when the peer is a trusted proxy).

use crate::config::model::ClientSettings;
use crate::origin::Origin;
use url::Url;

/// What a request says about where it comes from, in the order it is believed.
#[derive(Debug, Default, Clone)]
pub struct OriginHints<'a> {
    /// The `Origin` header.
    pub origin: Option<&'a [u8]>,
    /// The `x-client-origin` header.
    pub client_origin: Option<&'a [u8]>,
    /// The `Referer` header.
    pub referer: Option<&'a [u8]>,
    /// The request's own origin: scheme + host (forwarded ones from trusted proxies).
    pub own: Option<Origin>,
}

/// A configured client app, as the proxy uses it.
pub type ClientApp = ClientSettings;

/// The clients by origin.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: Vec<ClientApp>,
    by_origin: crate::lookup::ConfigMap<String, usize>,
    default_client: Option<usize>,
}

/// An origin no configured client app claims, as the request named it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the origin {0} is not a registered client application")]
pub struct UnknownOrigin(pub String);

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
        let mut by_origin = crate::lookup::ConfigMap::default();
        for (i, c) in clients.iter().enumerate() {
            for o in &c.origins {
                by_origin.insert(o.as_str().to_string(), i);
            }
        }
        ClientRegistry {
            clients: clients.to_vec(),
            by_origin,
            default_client: None,
        }
    }

    /// Maps origins no client claims to this client (the operator's `default_client`). It
    /// names the client only: a session cookie of it still changes state only from its own
    /// origins ([`ClientRegistry::same_origin`]).
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
        self.clients
            .iter()
            .position(|c| c.origin_patterns.iter().any(|p| p.matches(&origin)))
    }

    /// True when `text` is exactly one of the registered origins (which are canonical).
    pub fn registers(&self, text: &str) -> bool {
        self.by_origin.contains_key(text)
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
        let mut own = hints.own;
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
            match from_referer {
                Some(o) => Ok(o),
                None => own
                    .take()
                    .ok_or_else(|| "(no Origin, Referer or Host header)".to_string()),
            }
        };
        match candidate {
            Ok(origin) => match self
                .owner(&origin)
                .or(self.default_client)
                .and_then(|i| Some((i, self.clients.get(i)?)))
            {
                Some((i, client)) => Identified::Known {
                    index: i,
                    client,
                    origin,
                },
                None => Identified::Unknown(origin.to_string()),
            },
            Err(text) => match (
                self.default_client
                    .and_then(|i| Some((i, self.clients.get(i)?))),
                own,
            ) {
                (Some((i, client)), Some(origin)) => Identified::Known {
                    index: i,
                    client,
                    origin,
                },
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
    /// When the route serves several clients that all have one namespace: the first of them,
    /// whose namespace (every one's) decides an unbound credential.
    shared: Option<usize>,
}

impl Served {
    /// A route's `clients` (indices; `None`: every one) among the configured `clients`.
    pub fn new(served: Option<&[usize]>, clients: &[ClientSettings]) -> Served {
        let only = match served {
            Some([one]) => Some(*one),
            Some(_) => None,
            None if clients.len() == 1 => Some(0),
            None => None,
        };
        let indices: Vec<usize> = match served {
            Some(list) => list.to_vec(),
            None => (0..clients.len()).collect(),
        };
        let namespace = |i: &usize| clients.get(*i).map(|c| c.namespace.as_str());
        let shared = match indices.first() {
            Some(first) if only.is_none() => {
                let ns = namespace(first);
                (ns.is_some() && indices.iter().all(|i| namespace(i) == ns)).then_some(*first)
            }
            _ => None,
        };
        Served {
            list: served.map(Into::into),
            only,
            shared,
        }
    }

    /// True when the route serves client `index`.
    pub fn serves(&self, index: usize) -> bool {
        self.list.as_deref().is_none_or(|l| l.contains(&index))
    }

    /// The one client the route serves, when it serves exactly one.
    pub fn only(&self) -> Option<usize> {
        self.only
    }

    /// On a route serving several clients of one namespace, the first of them (its namespace
    /// is every one's).
    pub fn shared_namespace(&self) -> Option<usize> {
        self.shared
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
    /// An unbound credential on a route serving several clients of different namespaces.
    #[error("route {route:?} serves several client applications with different permission namespaces and this credential (an API key, or a token without azp, client_id or a client's aud) names none of them, so no request header may choose its permission namespace: set `clients` on the route to the one client app it serves (or to clients sharing one namespace)")]
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

/// The settled client of a request: the client named upstream, and whose namespace decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settled {
    /// The client the request ends with, named upstream (`x-auth-client`, the signed
    /// identity's `client`) and whose `[[clients.grants]]` apply. `None`: the credential names
    /// no client and the route serves several.
    pub client: Option<usize>,
    /// A client whose namespace decides the permission: `client`, or, for an unbound credential
    /// on a route whose clients share one namespace, the first of them. `None`: no namespace
    /// (a route needing no permission that serves several clients).
    pub namespace: Option<usize>,
}

impl Settled {
    /// The client `index`, deciding in its own namespace.
    fn client(index: usize) -> Settled {
        Settled {
            client: Some(index),
            namespace: Some(index),
        }
    }
}

impl ClientRegistry {
    /// A token's client: its `azp`, else its `client_id` claim (both in `authorized_party`),
    /// else an `aud` value that is a configured client's `client_id`.
    pub fn token_binding<'a>(
        &self,
        authorized_party: Option<&'a str>,
        audiences: &'a [Box<str>],
    ) -> Binding<'a> {
        if let Some(azp) = authorized_party.filter(|a| !a.is_empty()) {
            return Binding::Client(azp);
        }
        let mut found: Option<&'a str> = None;
        // A client without `client_id` (it signs in through other providers only) names no token.
        for aud in audiences.iter().map(|a| &**a).filter(|a| !a.is_empty()) {
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
    /// An unbound credential never lets a header choose: the route's only client; on a route
    /// serving several clients of one namespace, that namespace with no client named; else,
    /// on a route serving several, a refusal when a namespace is `needed` and no client
    /// otherwise. The client settled on must be one the route serves.
    pub fn settle(
        &self,
        detected: usize,
        binding: Binding<'_>,
        served: &Served,
        needed: bool,
        route: &str,
    ) -> Result<Settled, ClientError> {
        let client = self
            .clients
            .get(detected)
            .ok_or_else(|| ClientError::NotServed {
                route: route.to_string(),
                client: "(unknown)".into(),
            })?;
        let settled = match binding {
            Binding::Client(id) if id == client.client_id => Some(detected),
            Binding::Client(_) | Binding::Ambiguous if client.allow_foreign_tokens => {
                Some(detected)
            }
            Binding::Client(_) | Binding::Ambiguous => {
                return Err(ClientError::IssuedToAnother {
                    credential: "token",
                    client: client.name.clone(),
                })
            }
            Binding::Unbound => match (served.only(), served.shared_namespace()) {
                (Some(only), _) => Some(only),
                // Every client the route serves has this namespace: it decides, and since the
                // credential names none of them, no client is named upstream.
                (None, Some(first)) if needed => {
                    return Ok(Settled {
                        client: None,
                        namespace: Some(first),
                    })
                }
                (None, _) if needed => {
                    return Err(ClientError::Unbound {
                        route: route.to_string(),
                    })
                }
                (None, _) => None,
            },
        };
        match settled {
            Some(i) if !served.serves(i) => {
                let name = self
                    .clients
                    .get(i)
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                Err(ClientError::NotServed {
                    route: route.to_string(),
                    client: name,
                })
            }
            Some(i) => Ok(Settled::client(i)),
            None => Ok(Settled::default()),
        }
    }
}

/// Why a session cookie may not authorise a request that changes state (a method other than
/// GET, HEAD or OPTIONS) or opens a WebSocket: it did not come from its client's own pages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session cookie of {client} authorises a {what} only from {client}'s own pages (an Origin that is one of its origins, or Sec-Fetch-Site: same-origin); this request {came}")]
pub struct CrossSite {
    /// The session's client.
    pub client: String,
    /// What was asked: `POST request`, `WebSocket upgrade`...
    pub what: String,
    /// Where the request came from, in words.
    pub came: String,
}

impl ClientRegistry {
    /// A cookie-authenticated request that changes state or upgrades must come from the pages of
    /// its session's client `index`, whatever `default_client` says: exactly one
    /// `Sec-Fetch-Site: same-origin`, or exactly one `Origin` that is one of the client's
    /// origins (exact or pattern). Everything else is refused: a foreign origin, `Origin: null`,
    /// a repeated `Origin`, and no `Origin` at all (browsers send it on every such request;
    /// a non-browser caller with a cookie adds it), `Sec-Fetch-Site: same-site` or a repeated
    /// `Sec-Fetch-Site` (never read as its first value). `what` names the request for the refusal.
    pub fn same_origin<'h>(
        &self,
        index: usize,
        what: impl FnOnce() -> String,
        origins: impl IntoIterator<Item = &'h [u8]>,
        sec_fetch_site: impl IntoIterator<Item = &'h [u8]>,
    ) -> Result<(), CrossSite> {
        let mut site = sec_fetch_site.into_iter();
        if let (Some(one), None) = (site.next(), site.next()) {
            if one.trim_ascii().eq_ignore_ascii_case(b"same-origin") {
                return Ok(());
            }
        }
        let mut origins = origins.into_iter();
        let came = match (origins.next(), origins.next()) {
            (Some(one), None) => {
                let text = String::from_utf8_lossy(one);
                match Origin::parse(text.trim()) {
                    Ok(o) if self.belongs(index, &o) => return Ok(()),
                    _ => format!(
                        "came from Origin {:?}",
                        text.chars().take(200).collect::<String>()
                    ),
                }
            }
            (Some(_), Some(_)) => "sent Origin more than once".into(),
            (None, _) => "sent no Origin".into(),
        };
        Err(CrossSite {
            client: self
                .clients
                .get(index)
                .map_or_else(|| "(unknown)".into(), |c| c.name.clone()),
            what: what(),
            came,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::origin::OriginPattern;
    use crate::secret::Secret;

    /// A client app `name` (client id `id_{name}`, namespace `client_{name}`) on `origins`,
    /// with the defaults for everything else: the other modules' tests use it too.
    pub(crate) fn client(name: &str, origins: &[&str]) -> ClientSettings {
        ClientSettings {
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
            sign_in: vec![],
            allowed: Default::default(),
            grants: vec![],
            branding: Default::default(),
        }
    }

    fn registry() -> ClientRegistry {
        ClientRegistry::from_config(&[
            client("billing", &["https://billing.example.com"]),
            client("dev", &["http://localhost:8080"]),
        ])
    }

    #[test]
    fn identify_by_hints() {
        let mut clients = registry().clients;
        clients[0].origin_patterns =
            vec![OriginPattern::parse("https://*.preview.example.com").unwrap()];
        let r = ClientRegistry::from_config(&clients);
        let name = |c: Identified| match c {
            Identified::Known { client, origin, .. } => format!("{} {origin}", client.name),
            Identified::Unknown(o) => format!("unknown {o}"),
        };
        let owns: Vec<Origin> = ["http://localhost:8080", "https://pr-1.preview.example.com"]
            .iter()
            .map(|o| Origin::parse(o).unwrap())
            .collect();
        let owns = &owns;
        let h = move |origin: Option<&'static str>,
                      client_origin: Option<&'static str>,
                      referer: Option<&'static str>,
                      own: Option<&'static str>| OriginHints {
            origin: origin.map(str::as_bytes),
            client_origin: client_origin.map(str::as_bytes),
            referer: referer.map(str::as_bytes),
            own: own.map(|o| {
                owns.iter()
                    .find(|x| x.as_str() == o)
                    .expect("a prepared origin")
                    .clone()
            }),
        };
        let cases = [
            (
                h(
                    Some("https://billing.example.com"),
                    Some("http://localhost:8080"),
                    None,
                    None,
                ),
                "billing https://billing.example.com",
            ),
            (
                h(
                    None,
                    Some("http://localhost:8080"),
                    Some("https://billing.example.com/x"),
                    None,
                ),
                "dev http://localhost:8080",
            ),
            (
                h(
                    None,
                    None,
                    Some("https://billing.example.com/a?b"),
                    Some("http://localhost:8080"),
                ),
                "billing https://billing.example.com",
            ),
            // A link from another site: the request's own origin decides.
            (
                h(
                    None,
                    None,
                    Some("https://google.com/"),
                    Some("http://localhost:8080"),
                ),
                "dev http://localhost:8080",
            ),
            (
                h(
                    Some("https://evil.example.com"),
                    None,
                    None,
                    Some("http://localhost:8080"),
                ),
                "unknown https://evil.example.com",
            ),
            (
                h(Some("null"), None, None, Some("http://localhost:8080")),
                "unknown null",
            ),
            (
                h(None, None, None, Some("https://pr-1.preview.example.com")),
                "billing https://pr-1.preview.example.com",
            ),
            (
                h(None, None, None, None),
                "unknown (no Origin, Referer or Host header)",
            ),
        ];
        for (hints, want) in cases {
            assert_eq!(name(r.identify_hints(hints.clone())), want, "{hints:?}");
        }
        let with_default = ClientRegistry::from_config(&clients).with_default(Some(1));
        assert_eq!(
            name(with_default.identify_hints(h(
                Some("https://evil.example.com"),
                None,
                None,
                None
            ))),
            "dev https://evil.example.com"
        );
    }

    #[test]
    fn a_tokens_client_is_azp_then_client_id_then_a_clients_aud() {
        let r = registry();
        let aud = |list: &[&str]| {
            list.iter()
                .map(|a| Box::<str>::from(*a))
                .collect::<Vec<_>>()
        };
        let cases = [
            (
                "azp (or client_id) wins over aud",
                Some("id_dev"),
                aud(&["id_billing"]),
                Binding::Client("id_dev"),
            ),
            (
                "an unconfigured azp still binds",
                Some("someone_else"),
                aud(&["api"]),
                Binding::Client("someone_else"),
            ),
            (
                "an id_token: aud is the client",
                None,
                aud(&["id_billing"]),
                Binding::Client("id_billing"),
            ),
            (
                "the API audience next to a client's aud",
                None,
                aud(&["api", "id_dev"]),
                Binding::Client("id_dev"),
            ),
            (
                "the API audience only: unbound",
                None,
                aud(&["api"]),
                Binding::Unbound,
            ),
            ("no aud: unbound", None, aud(&[]), Binding::Unbound),
            (
                "two clients in aud: ambiguous",
                None,
                aud(&["id_billing", "id_dev"]),
                Binding::Ambiguous,
            ),
        ];
        for (name, azp, audiences, want) in cases {
            assert_eq!(r.token_binding(azp, &audiences), want, "{name}");
        }
    }

    #[test]
    fn the_credential_not_the_header_settles_the_client() {
        let mut clients = registry().clients;
        clients.push(ClientSettings {
            name: "partner".into(),
            client_id: "id_partner".into(),
            namespace: "client_partner".into(),
            allow_foreign_tokens: true,
            ..clients[0].clone()
        });
        let r = ClientRegistry::from_config(&clients);
        let (billing, dev, partner) = (0, 1, 2);
        let every = Served::new(None, &clients);
        let only_billing = Served::new(Some(&[billing]), &clients);
        let billing_and_partner = Served::new(Some(&[billing, partner]), &clients);
        let short = |res: Result<Settled, ClientError>| match res {
            Ok(Settled {
                client: Some(i),
                namespace: Some(n),
            }) if i == n => clients[i].name.clone(),
            Ok(Settled {
                client: None,
                namespace: None,
            }) => "none".into(),
            Ok(other) => format!("{other:?}"),
            Err(ClientError::IssuedToAnother { .. }) => "issued to another".into(),
            Err(ClientError::Unbound { .. }) => "unbound on several".into(),
            Err(ClientError::NotServed { .. }) => "not served".into(),
        };
        let cases = [
            // (why, detected, binding, route serves, needs a namespace, settled)
            (
                "bound, from its own origin",
                billing,
                Binding::Client("id_billing"),
                &every,
                true,
                "billing",
            ),
            (
                "bound, from another client's origin",
                dev,
                Binding::Client("id_billing"),
                &every,
                true,
                "issued to another",
            ),
            (
                "bound to an unknown client",
                billing,
                Binding::Client("id_elsewhere"),
                &every,
                true,
                "issued to another",
            ),
            (
                "ambiguous aud",
                billing,
                Binding::Ambiguous,
                &every,
                true,
                "issued to another",
            ),
            (
                "foreign token where the client allows it",
                partner,
                Binding::Client("id_dev"),
                &every,
                true,
                "partner",
            ),
            (
                "bound, but the route serves another client",
                dev,
                Binding::Client("id_dev"),
                &only_billing,
                true,
                "not served",
            ),
            (
                "foreign-token client the route does not serve",
                partner,
                Binding::Client("id_billing"),
                &only_billing,
                true,
                "not served",
            ),
            (
                "unbound: the route's one client, whatever the header says",
                dev,
                Binding::Unbound,
                &only_billing,
                true,
                "billing",
            ),
            (
                "unbound on a route serving every client",
                billing,
                Binding::Unbound,
                &every,
                true,
                "unbound on several",
            ),
            (
                "unbound on a route serving two",
                partner,
                Binding::Unbound,
                &billing_and_partner,
                true,
                "unbound on several",
            ),
            (
                "unbound, authenticated route serving several: no client",
                dev,
                Binding::Unbound,
                &every,
                false,
                "none",
            ),
            (
                "unbound, authenticated route serving one",
                dev,
                Binding::Unbound,
                &only_billing,
                false,
                "billing",
            ),
        ];
        for (why, detected, binding, served, needed, want) in cases {
            assert_eq!(
                short(r.settle(detected, binding, served, needed, "r")),
                want,
                "{why}"
            );
        }
        // A single-client config: every route serves it, so an unbound credential has its namespace.
        let single = ClientRegistry::from_config(&clients[..1]);
        assert_eq!(
            single.settle(
                0,
                Binding::Unbound,
                &Served::new(None, &clients[..1]),
                true,
                "r"
            ),
            Ok(Settled::client(0))
        );
        let refused = r
            .settle(billing, Binding::Unbound, &every, true, "invoices")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("set `clients` on the route"), "{refused}");
        let refused = r
            .settle(dev, Binding::Client("id_billing"), &every, true, "invoices")
            .unwrap_err()
            .to_string();
        assert_eq!(
            refused,
            "the token was issued to another client application than dev"
        );
    }
    /// Clients sharing one namespace (three demo apps in `client_demo`, say): an unbound
    /// credential on a route serving only them is decided in that namespace, naming no client;
    /// where the route's clients' namespaces differ it is still refused.
    #[test]
    fn an_unbound_credential_is_decided_in_the_namespace_every_served_client_shares() {
        let shared = |name: &str, origin: &str| ClientSettings {
            namespace: "client_demo".into(),
            ..client(name, &[origin])
        };
        let clients = vec![
            shared("demo-a", "http://127.0.0.1:8080"),
            shared("demo-b", "http://localhost:8080"),
            client("other", &["https://other.example.com"]),
            shared("demo-c", "http://github.localhost:8080"),
        ];
        let r = ClientRegistry::from_config(&clients);
        let (a, b, other, c) = (0, 1, 2, 3);
        let demo_only = Served::new(Some(&[b, a, c]), &clients);
        let a_and_b = Served::new(Some(&[a, b]), &clients);
        let mixed = Served::new(Some(&[a, other]), &clients);
        let every = Served::new(None, &clients);
        let all_shared = Served::new(None, &clients[..2]);
        let in_namespace = |first: usize| {
            Ok(Settled {
                client: None,
                namespace: Some(first),
            })
        };
        // (why, registry, detected, binding, route serves, needs a namespace, settled)
        type Case<'a> = (
            &'a str,
            &'a ClientRegistry,
            usize,
            Binding<'a>,
            &'a Served,
            bool,
            Result<Settled, &'a str>,
        );
        let cases: [Case; 10] = [
            // (why, registry, detected, binding, route serves, needs a namespace, settled)
            (
                "an API key on a route serving three apps of one namespace",
                &r,
                other,
                Binding::Unbound,
                &demo_only,
                true,
                in_namespace(b),
            ),
            (
                "the same, whatever client the origin names",
                &r,
                a,
                Binding::Unbound,
                &demo_only,
                true,
                in_namespace(b),
            ),
            (
                "two apps of one namespace",
                &r,
                c,
                Binding::Unbound,
                &a_and_b,
                true,
                in_namespace(a),
            ),
            (
                "every client, all of one namespace",
                &r,
                a,
                Binding::Unbound,
                &all_shared,
                true,
                in_namespace(a),
            ),
            (
                "two namespaces: still refused",
                &r,
                a,
                Binding::Unbound,
                &mixed,
                true,
                Err("unbound"),
            ),
            (
                "every client, namespaces differ: still refused",
                &r,
                a,
                Binding::Unbound,
                &every,
                true,
                Err("unbound"),
            ),
            (
                "no namespace needed: no client, no namespace",
                &r,
                a,
                Binding::Unbound,
                &demo_only,
                false,
                Ok(Settled::default()),
            ),
            (
                "a bound token keeps its own client",
                &r,
                a,
                Binding::Client("id_demo-a"),
                &demo_only,
                true,
                Ok(Settled::client(a)),
            ),
            (
                "a bound token from another app of the namespace",
                &r,
                b,
                Binding::Client("id_demo-a"),
                &demo_only,
                true,
                Err("issued"),
            ),
            (
                "a bound token of an app the route does not serve",
                &r,
                other,
                Binding::Client("id_other"),
                &a_and_b,
                true,
                Err("not served"),
            ),
        ];
        for (why, registry, detected, binding, served, needed, want) in cases {
            let got = registry
                .settle(detected, binding, served, needed, "r")
                .map_err(|e| match e {
                    ClientError::Unbound { .. } => "unbound",
                    ClientError::IssuedToAnother { .. } => "issued",
                    ClientError::NotServed { .. } => "not served",
                });
            assert_eq!(got, want, "{why}");
        }
        assert_eq!(demo_only.shared_namespace(), Some(b));
        assert_eq!(mixed.shared_namespace(), None);
        // A route serving one client is that client's, never a "shared" namespace.
        assert_eq!(Served::new(Some(&[a]), &clients).shared_namespace(), None);
        let refused = r
            .settle(a, Binding::Unbound, &mixed, true, "reports")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("different permission namespaces"),
            "{refused}"
        );
    }

    /// A session cookie on a request that changes state: only from its client's pages,
    /// whatever `default_client` maps other origins to.
    #[test]
    fn a_cookie_request_that_changes_state_comes_from_its_clients_own_pages() {
        let mut clients = registry().clients;
        clients[0].origin_patterns =
            vec![OriginPattern::parse("https://*.preview.example.com").unwrap()];
        // With a default client: unknown origins are billing's, which must change nothing here.
        let r = ClientRegistry::from_config(&clients).with_default(Some(0));
        let billing = 0;
        let cases: [(&str, &[&str], &[&str], bool); 17] = [
            // (why, Origin values, Sec-Fetch-Site values, allowed)
            (
                "its own origin",
                &["https://billing.example.com"],
                &[],
                true,
            ),
            (
                "its own origin, cross-site fetch from it",
                &["https://billing.example.com"],
                &["cross-site"],
                true,
            ),
            (
                "one of its patterns",
                &["https://pr-7.preview.example.com"],
                &[],
                true,
            ),
            ("same-origin, no Origin", &[], &["same-origin"], true),
            (
                "same-origin, Origin: null (Referrer-Policy: no-referrer)",
                &["null"],
                &["same-origin"],
                true,
            ),
            ("same-origin in capitals", &[], &["Same-Origin"], true),
            (
                "a foreign origin",
                &["https://evil.example.com"],
                &[],
                false,
            ),
            (
                "a foreign origin, same-site",
                &["https://evil.example.com"],
                &["same-site"],
                false,
            ),
            (
                "another client's origin",
                &["http://localhost:8080"],
                &[],
                false,
            ),
            ("Origin: null", &["null"], &[], false),
            ("no Origin", &[], &[], false),
            ("no Origin, same-site", &[], &["same-site"], false),
            ("no Origin, none (typed in: no page)", &[], &["none"], false),
            (
                "Sec-Fetch-Site twice, same-origin first",
                &[],
                &["same-origin", "cross-site"],
                false,
            ),
            (
                "Sec-Fetch-Site twice, both same-origin",
                &[],
                &["same-origin", "same-origin"],
                false,
            ),
            (
                "Origin twice",
                &["https://billing.example.com", "https://evil.example.com"],
                &[],
                false,
            ),
            (
                "an origin that does not parse",
                &["billing.example.com"],
                &[],
                false,
            ),
        ];
        for (why, origins, site, allowed) in cases {
            let got = r.same_origin(
                billing,
                || "POST request".into(),
                origins.iter().map(|o| o.as_bytes()),
                site.iter().map(|s| s.as_bytes()),
            );
            assert_eq!(got.is_ok(), allowed, "{why}: {got:?}");
        }
        let refused = r
            .same_origin(billing, || "WebSocket upgrade".into(), [&b"null"[..]], [])
            .unwrap_err()
            .to_string();
        assert_eq!(refused, "a session cookie of billing authorises a WebSocket upgrade only from billing's own pages (an Origin that is one of its origins, or Sec-Fetch-Site: same-origin); this request came from Origin \"null\"");
    }
}
