//! Turns the file's structs into the validated model, collecting every problem on the way.
//!
//! Each problem names the key and the rule broken, oauth2-proxy style:
//! `routes[2].upstream: "billing" is not a configured upstream: name one of [[upstreams]]`.

use super::file::*;
use super::model::*;
use super::span::KeyPath;
use crate::origin::{Origin, OriginPattern};
use crate::pattern::PathPattern;
use crate::secret::Secret;
use crate::trusted_proxies::TrustedProxies;
use jsonwebtoken::Algorithm;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use url::Url;

/// One thing wrong with the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: the key path.
    pub path: KeyPath,
    /// What is wrong and the rule broken.
    pub message: String,
}

/// Collects problems while the model is built: `.0` the errors, `.1` the warnings (a valid
/// config that is likely not meant).
#[derive(Default)]
pub struct Problems(pub Vec<Problem>, pub Vec<Problem>);

impl Problems {
    /// Records a problem at `path`.
    pub fn add(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.clone(),
            message: message.into(),
        });
    }

    /// Records a warning at `path`: the config stays valid.
    pub fn warn(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.1.push(Problem {
            path: path.clone(),
            message: message.into(),
        });
    }

    /// A required value, or a problem when absent.
    fn require<T>(&mut self, value: Option<T>, path: &KeyPath, what: &str) -> Option<T> {
        if value.is_none() {
            self.add(path, format!("is required: {what}"));
        }
        value
    }

    fn duration(&mut self, value: Option<&str>, path: &KeyPath, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.add(path, "must be longer than zero");
                    default
                }
                Err(e) => {
                    self.add(path, format!("{text:?} is not a duration ({e}): write e.g. \"500ms\", \"3s\", \"5m\""));
                    default
                }
            },
        }
    }

    fn socket_addr(&mut self, value: &str, path: &KeyPath) -> Option<SocketAddr> {
        match SocketAddr::from_str(value) {
            Ok(a) => Some(a),
            Err(_) => {
                self.add(
                    path,
                    format!("{value:?} is not an ip:port address: write e.g. \"0.0.0.0:8080\""),
                );
                None
            }
        }
    }

    fn url(&mut self, value: Option<String>, path: &KeyPath) -> Option<Url> {
        let text = value?;
        match Url::parse(&text) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Some(u),
            Ok(_) => {
                self.add(path, format!("{text:?} must be an http or https URL"));
                None
            }
            Err(e) => {
                self.add(path, format!("{text:?} is not a URL ({e})"));
                None
            }
        }
    }
}

/// The sections of a config file, each already deserialized (or absent).
#[derive(Default)]
pub struct Sections {
    /// `[proxy]`.
    pub proxy: ProxyFile,
    /// `[admin]`.
    pub admin: AdminFile,
    /// `[idp]`.
    pub idp: IdpFile,
    /// `[cache]`.
    pub cache: CacheFile,
    /// `[headers]`.
    pub headers: HeadersFile,
    /// `[[clients]]` with their indexes in the file.
    pub clients: Vec<(usize, ClientFile)>,
    /// `[[providers]]` with their indexes in the file.
    pub providers: Vec<(usize, ProviderFile)>,
    /// `[[upstreams]]` with their indexes in the file.
    pub upstreams: Vec<(usize, UpstreamFile)>,
    /// `[[routes]]` with their indexes in the file.
    pub routes: Vec<(usize, RouteFile)>,
    /// `[abac]`.
    pub abac: AbacFile,
    /// `[api_keys]`.
    pub api_keys: ApiKeysFile,
    /// `[identity_jwt]`.
    pub identity_jwt: IdentityJwtFile,
    /// `[session]`.
    pub session: SessionFile,
    /// `default_client = "name"`.
    pub default_client: Option<String>,
    /// `[log]`.
    pub log: LogFile,
}

/// The algorithms an RSA key can verify.
pub const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Algorithms accepted when the config does not list them.
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = {
    let [rs256, rs384, rs512, ps256, ps384, ps512] = RSA_ALGORITHMS;
    [
        rs256,
        rs384,
        rs512,
        ps256,
        ps384,
        ps512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ]
};

/// Validates the sections into a model; `Err` holds every problem found.
pub fn validate(s: Sections, problems: &mut Problems) -> Option<Config> {
    let proxy = proxy(s.proxy, problems);
    let admin = admin(s.admin, problems);
    if let (Some(p), Some(a)) = (&proxy, &admin) {
        if p.listen == a.listen {
            problems.add(
                &KeyPath::root("admin").key("listen"),
                format!(
                    "{} is also the proxy's address: give the admin listener its own port",
                    a.listen
                ),
            );
        }
    }
    let idp = idp(s.idp, problems);
    let providers = providers(idp.as_ref(), s.providers, problems);
    let cache = cache(s.cache, problems);
    let headers = headers(s.headers, problems);
    let clients = clients(s.clients, &providers, problems);
    let upstreams = upstreams(s.upstreams, problems);
    // Where a route fails open: checked against `[idp]` and `[abac]` below.
    let fail_open: Vec<KeyPath> = s
        .routes
        .iter()
        .filter(|(_, r)| r.on_error.as_deref() == Some("allow"))
        .map(|(i, _)| KeyPath::root("routes").index(*i).key("on_error"))
        .collect();
    let routes = routes(s.routes, &upstreams, &clients, problems);
    let abac = abac(s.abac, problems);
    fail_open_rules(&fail_open, idp.as_ref(), &abac, problems);
    let api_keys = api_keys(
        s.api_keys,
        idp.as_ref()
            .map(|i| i.audiences.clone())
            .unwrap_or_default(),
        problems,
    );
    let identity_jwt = identity_jwt(s.identity_jwt, &headers, problems);
    if let Some(i) = &idp {
        if i.check_permission_url.is_none() {
            for r in &routes {
                if !r.attributes.is_empty() {
                    problems.add(
                        &KeyPath::root("idp").key("check_permission_url"),
                        format!(
                            "is required: route {:?} declares ABAC attributes for the live check",
                            r.name
                        ),
                    );
                    break;
                }
            }
        }
    }
    let session = session(s.session, problems);
    let default_client =
        s.default_client
            .and_then(|name| match clients.iter().position(|c| c.name == name) {
                Some(i) => Some(i),
                None => {
                    let known: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
                    problems.add(
                        &KeyPath::root("default_client"),
                        format!("{name:?} is not a configured client: name one of {known:?}"),
                    );
                    None
                }
            });
    let log = LogSettings {
        format: match s.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                problems.add(
                    &KeyPath::root("log").key("format"),
                    format!("{other:?} is not \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        },
    };
    if !problems.0.is_empty() {
        return None;
    }
    Some(Config {
        proxy: proxy?,
        admin: admin?,
        idp: idp?,
        providers,
        cache,
        headers,
        clients,
        upstreams,
        routes,
        abac,
        api_keys,
        identity_jwt,
        session,
        default_client,
        log,
        warnings: Vec::new(),
    })
}

fn proxy(f: ProxyFile, problems: &mut Problems) -> Option<ProxySettings> {
    let at = KeyPath::root("proxy");
    let listen = problems.socket_addr(
        f.listen.as_deref().unwrap_or("0.0.0.0:8080"),
        &at.key("listen"),
    )?;
    let tls = f.tls.map(|t| TlsFiles {
        cert: t.cert.into(),
        key: t.key.into(),
        http2: t.http2.unwrap_or(true),
    });
    if let Some(t) = &tls {
        for (name, file) in [("cert", &t.cert), ("key", &t.key)] {
            if !file.is_file() {
                problems.add(
                    &at.key("tls").key(name),
                    format!("{} is not a readable file", file.display()),
                );
            }
        }
    }
    let threads = f.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        problems.add(&at.key("threads"), "must be at least 1");
    }
    let grace_period = problems.duration(
        f.grace_period.as_deref(),
        &at.key("grace_period"),
        Duration::from_secs(5),
    );
    let mut trusted = Vec::new();
    for (i, text) in f.trusted_proxies.unwrap_or_default().iter().enumerate() {
        match TrustedProxies::parse_range(text) {
            Ok(r) => trusted.push(r),
            Err(e) => problems.add(&at.key("trusted_proxies").index(i), e),
        }
    }
    Some(ProxySettings {
        listen,
        https: f.https.unwrap_or(tls.is_some()),
        tls,
        threads: threads.max(1),
        grace_period,
        debug_reason_header: f.debug_reason_header.unwrap_or(false),
        trusted_proxies: TrustedProxies::new(trusted),
    })
}

fn admin(f: AdminFile, problems: &mut Problems) -> Option<AdminSettings> {
    let listen = problems.socket_addr(
        f.listen.as_deref().unwrap_or("127.0.0.1:9090"),
        &KeyPath::root("admin").key("listen"),
    )?;
    Some(AdminSettings { listen })
}

fn idp(f: IdpFile, problems: &mut Problems) -> Option<IdpSettings> {
    let at = KeyPath::root("idp");
    let issuer_text = problems.require(
        f.issuer,
        &at.key("issuer"),
        "the issuer exactly as tokens carry it in `iss`",
    );
    let issuer_url = problems.url(issuer_text.clone(), &at.key("issuer"));
    let discovery_url = match f.discovery_url {
        Some(d) => problems.url(Some(d), &at.key("discovery_url")),
        None => issuer_url.as_ref().and_then(|u| {
            Url::parse(&format!(
                "{}/.well-known/openid-configuration",
                u.as_str().trim_end_matches('/')
            ))
            .ok()
        }),
    };
    let jwks_url = problems.url(f.jwks_url, &at.key("jwks_url"));
    let audiences = f.audience.map(StringOrList::into_vec).unwrap_or_default();
    if audiences.is_empty() || audiences.iter().any(|a| a.trim().is_empty()) {
        problems.add(&at.key("audience"), "is required and may not be empty: tokens are only accepted when their `aud` names this gateway's API");
    }
    let check_permission_url =
        problems.url(f.check_permission_url, &at.key("check_permission_url"));
    let api_key_exchange_url =
        problems.url(f.api_key_exchange_url, &at.key("api_key_exchange_url"));
    let timeout = problems.duration(
        f.timeout.as_deref(),
        &at.key("timeout"),
        Duration::from_secs(3),
    );
    let leeway = match f.leeway.as_deref() {
        Some("0") | Some("0s") => Duration::ZERO,
        other => problems.duration(other, &at.key("leeway"), Duration::from_secs(30)),
    };
    let jwks_refresh_interval = problems.duration(
        f.jwks_refresh_interval.as_deref(),
        &at.key("jwks_refresh_interval"),
        Duration::from_secs(300),
    );
    let jwks_min_refetch_interval = problems.duration(
        f.jwks_min_refetch_interval.as_deref(),
        &at.key("jwks_min_refetch_interval"),
        Duration::from_secs(10),
    );
    let algorithms = match f.algorithms {
        None => DEFAULT_ALGORITHMS.to_vec(),
        Some(list) => {
            let mut algs = Vec::new();
            for (i, name) in list.iter().enumerate() {
                match Algorithm::from_str(name) {
                    Ok(a) if DEFAULT_ALGORITHMS.contains(&a) => algs.push(a),
                    Ok(_) => problems.add(&at.key("algorithms").index(i), format!("{name:?} is an HMAC algorithm: only asymmetric algorithms are accepted, a shared secret cannot tell the IdP from anyone holding it")),
                    Err(_) => problems.add(&at.key("algorithms").index(i), format!("{name:?} is not accepted: choose from RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (`none` is never accepted)")),
                }
            }
            if list.is_empty() {
                problems.add(&at.key("algorithms"), "may not be empty");
            }
            algs
        }
    };
    Some(IdpSettings {
        issuer: issuer_text?,
        discovery_url: discovery_url?,
        jwks_url,
        audiences,
        check_permission_url,
        api_key_exchange_url,
        timeout,
        leeway,
        jwks_refresh_interval,
        jwks_min_refetch_interval,
        algorithms,
        display_name: f
            .display_name
            .or_else(|| {
                issuer_url
                    .as_ref()
                    .and_then(|u| u.host_str().map(str::to_string))
            })
            .unwrap_or_else(|| "single sign-on".into()),
    })
}

/// `[idp]` as the provider named `idp`, then `[[providers]]`.
fn providers(
    idp: Option<&IdpSettings>,
    list: Vec<(usize, ProviderFile)>,
    problems: &mut Problems,
) -> Vec<ProviderSettings> {
    let mut out = vec![ProviderSettings {
        name: IDP_PROVIDER.into(),
        display_name: idp.map_or_else(|| IDP_PROVIDER.to_string(), |i| i.display_name.clone()),
        kind: ProviderKind::Oidc,
    }];
    for (i, f) in list {
        let at = KeyPath::root("providers").index(i);
        let name = problems.require(
            f.name,
            &at.key("name"),
            "the name clients use in [[clients.providers]]",
        );
        if let Some(n) = &name {
            // Unique ignoring case: a name is the prefix of its users' subjects upstream
            // (`github:583231`), which a case-insensitive database would confuse.
            if out.iter().any(|p| p.name.eq_ignore_ascii_case(n)) {
                let why = if n.eq_ignore_ascii_case(IDP_PROVIDER) {
                    "is the [idp] section's name"
                } else {
                    "names two providers: names must be unique, ignoring case"
                };
                problems.add(&at.key("name"), format!("{n:?} {why}"));
            } else if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                problems.add(
                    &at.key("name"),
                    format!("{n:?} must be letters, digits, - or _ (it appears in URLs)"),
                );
            }
        }
        let kind = match f.kind.as_deref() {
            Some("github") => true,
            Some(other) => {
                problems.add(&at.key("kind"), format!("{other:?} is not a provider kind: write \"github\" (OpenID Connect is the [idp] section)"));
                false
            }
            None => {
                problems.add(&at.key("kind"), "is required: write \"github\" (GitHub, GitHub Enterprise Server, Gitea, Forgejo)");
                false
            }
        };
        let base_url = problems.url(
            Some(f.base_url.unwrap_or_else(|| "https://github.com".into())),
            &at.key("base_url"),
        );
        let api_url = problems.url(
            Some(f.api_url.unwrap_or_else(|| "https://api.github.com".into())),
            &at.key("api_url"),
        );
        for (key, url) in [("base_url", &base_url), ("api_url", &api_url)] {
            if let Some(u) = url {
                if u.query().is_some()
                    || u.fragment().is_some()
                    || !u.username().is_empty()
                    || u.password().is_some()
                {
                    problems.add(
                        &at.key(key),
                        format!("{u} must be a plain URL: no query, fragment or credentials"),
                    );
                }
            }
        }
        let timeout = problems.duration(
            f.timeout.as_deref(),
            &at.key("timeout"),
            Duration::from_secs(5),
        );
        let revalidate_interval = problems.duration(
            f.revalidate_interval.as_deref(),
            &at.key("revalidate_interval"),
            Duration::from_secs(300),
        );
        if let (Some(name), true, Some(base_url), Some(api_url)) = (name, kind, base_url, api_url) {
            // Only github.com's API is trusted by default to have confirmed every address it
            // calls verified: a Gitea or Forgejo instance may be set up to mark them so unasked.
            let github_com =
                api_url.scheme() == "https" && api_url.host_str() == Some("api.github.com");
            let trust_verified_email = f.trust_verified_email.unwrap_or(github_com);
            out.push(ProviderSettings {
                display_name: f.display_name.unwrap_or_else(|| "GitHub".into()),
                name,
                kind: ProviderKind::GitHub(Box::new(GitHubSettings {
                    base_url,
                    api_url,
                    timeout,
                    revalidate_interval,
                    trust_verified_email,
                })),
            });
        }
    }
    out
}

/// A list of names written in lowercase, each checked by `valid` (which says what is wrong).
fn lowercase_names(
    list: Option<Vec<String>>,
    at: &KeyPath,
    problems: &mut Problems,
    valid: impl Fn(&str) -> Option<&'static str>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (j, v) in list.unwrap_or_default().into_iter().enumerate() {
        let v = v.trim().to_ascii_lowercase();
        match valid(&v) {
            Some(why) => problems.add(&at.index(j), format!("{v:?} {why}")),
            None => out.push(v),
        }
    }
    out
}

/// GitHub users, organisations or teams: each a name (checked by `valid`, kept lowercase), an
/// `id:N`, or a table with a name and/or an id. A name without an id is a warning: it is
/// pinned to the id it is first seen with, in this process only.
fn github_refs(
    list: Option<Vec<GitHubRefFile>>,
    at: &KeyPath,
    problems: &mut Problems,
    valid: impl Fn(&str) -> Option<&'static str>,
) -> Vec<GitHubRef> {
    let mut out = Vec::new();
    for (j, entry) in list.unwrap_or_default().into_iter().enumerate() {
        let at = at.index(j);
        let (name, id) = match entry {
            GitHubRefFile::Text(t) => match t.trim().strip_prefix("id:") {
                Some(n) => match n.trim().parse::<u64>() {
                    Ok(id) if id > 0 => (None, Some(id)),
                    _ => {
                        problems.add(&at, format!("{t:?} is not an id: write \"id:\" and the numeric id the API gives, e.g. \"id:583231\""));
                        continue;
                    }
                },
                None => (Some(t), None),
            },
            GitHubRefFile::Table(GitHubRefTable { name, id }) => {
                let id = match id {
                    Some(n) if n > 0 => u64::try_from(n).ok(),
                    Some(n) => {
                        problems.add(
                            &at.key("id"),
                            format!("{n} is not an id: the API's ids are positive"),
                        );
                        continue;
                    }
                    None => None,
                };
                if name.is_none() && id.is_none() {
                    problems.add(&at, "names nobody: give name and/or id, e.g. { name = \"octocat\", id = 583231 }");
                    continue;
                }
                (name, id)
            }
        };
        let name = match name.map(|n| n.trim().to_ascii_lowercase()) {
            Some(n) => match valid(&n) {
                Some(why) => {
                    problems.add(&at, format!("{n:?} {why}"));
                    continue;
                }
                None => Some(n),
            },
            None => None,
        };
        if let (Some(n), None) = (&name, id) {
            problems.warn(&at, format!("{n:?} is a name without an id: names can be renamed and registered again by someone else, so it is pinned to the id it is first seen with at sign-in, in this process only (a restart pins again); write {{ name = {n:?}, id = N }} with the id the API gives it (the log says which id it was pinned to)"));
        }
        out.push(GitHubRef { name, id });
    }
    out
}

/// GitHub logins and organisations: letters, digits and single hyphens.
fn github_name(v: &str) -> Option<&'static str> {
    (v.is_empty()
        || v.len() > 100
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'))
    .then_some("is not a GitHub name: letters, digits, -, _ and . only")
}

/// GitHub teams: `org/team-slug`.
fn github_team(v: &str) -> Option<&'static str> {
    match v.split_once('/') {
        Some((org, team)) if github_name(org).is_none() && github_name(team).is_none() => None,
        _ => Some("is not a team: write \"org/team-slug\""),
    }
}

/// A `#rgb` or `#rrggbb` colour.
fn colour(v: &str) -> bool {
    v.strip_prefix('#')
        .is_some_and(|hex| matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `[[clients.providers]]`, or `[idp]` alone with the client's own credentials.
fn client_sign_in(
    list: Option<Vec<ClientProviderFile>>,
    own: (Option<&String>, &Secret, &[String]),
    providers: &[ProviderSettings],
    needs_orgs: bool,
    at: &KeyPath,
    problems: &mut Problems,
) -> Vec<ClientSignIn> {
    let (own_id, own_secret, own_scopes) = own;
    let idp = || {
        own_id.map(|id| ClientSignIn {
            provider: 0,
            name: IDP_PROVIDER.into(),
            client_id: id.clone(),
            client_secret: own_secret.clone(),
            scopes: own_scopes.to_vec(),
        })
    };
    let Some(list) = list else {
        if own_id.is_none() {
            problems.add(&at.key("client_id"), "is required: the OAuth client id this app has at the IdP (or list the providers it signs in with in [[clients.providers]])");
        }
        return idp().into_iter().collect();
    };
    if list.is_empty() {
        problems.add(
            &at.key("providers"),
            "may not be empty: list the providers this app signs in with",
        );
    }
    let mut out: Vec<ClientSignIn> = Vec::new();
    for (j, f) in list.into_iter().enumerate() {
        let at = at.key("providers").index(j);
        let Some(name) =
            problems.require(f.name, &at.key("name"), "a [[providers]] name, or \"idp\"")
        else {
            continue;
        };
        if out.iter().any(|s| s.name == name) {
            problems.add(&at.key("name"), format!("{name:?} is listed twice"));
            continue;
        }
        let Some(index) = providers.iter().position(|p| p.name == name) else {
            let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
            problems.add(&at.key("name"), format!("{name:?} is not a provider: name one of {known:?} ([idp] is \"idp\", the others are [[providers]])"));
            continue;
        };
        if index == 0 {
            for (key, given) in [
                ("client_id", f.client_id.is_some()),
                ("client_secret", f.client_secret.is_some()),
                ("scopes", f.scopes.is_some()),
            ] {
                if given {
                    problems.add(&at.key(key), format!("is the client's own {key} for [idp]: write it in the client's table, not here"));
                }
            }
            match idp() {
                Some(s) => out.push(s),
                None => problems.add(
                    &at.key("name"),
                    "\"idp\" needs the client's own client_id (its OAuth client at the IdP)",
                ),
            }
            continue;
        }
        let client_id = problems.require(
            f.client_id,
            &at.key("client_id"),
            "this app's OAuth client id at the provider (its own OAuth app)",
        );
        let client_secret = problems.require(
            f.client_secret,
            &at.key("client_secret"),
            "this app's OAuth client secret at the provider, usually \"${ENV_VAR}\"",
        );
        if client_secret.as_ref().is_some_and(|s| s.is_empty()) {
            problems.add(&at.key("client_secret"), "may not be empty");
        }
        let scopes = match f.scopes {
            Some(list) => {
                for (k, sc) in list.iter().enumerate() {
                    if sc.is_empty()
                        || !sc
                            .bytes()
                            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                    {
                        problems.add(
                            &at.key("scopes").index(k),
                            format!("{sc:?} is not a scope token"),
                        );
                    }
                }
                if needs_orgs && !list.iter().any(|s| s == "read:org" || s == "admin:org") {
                    problems.add(&at.key("scopes"), "must include \"read:org\": allowed_orgs, allowed_teams or a grant needs the user's organisations and teams");
                }
                list
            }
            None => {
                let mut list = vec!["read:user".to_string(), "user:email".to_string()];
                if needs_orgs {
                    list.push("read:org".into());
                }
                list
            }
        };
        if let (Some(client_id), Some(secret)) = (client_id, client_secret) {
            out.push(ClientSignIn {
                provider: index,
                name,
                client_id,
                client_secret: Secret::new(secret),
                scopes,
            });
        }
    }
    out
}

/// `[[clients.grants]]`.
fn client_grants(
    list: Option<Vec<GrantFile>>,
    providers: &[ProviderSettings],
    at: &KeyPath,
    problems: &mut Problems,
) -> Vec<GrantSpec> {
    let mut out = Vec::new();
    let mut replaces = Vec::new();
    for (j, f) in list.unwrap_or_default().into_iter().enumerate() {
        let at = at.key("grants").index(j);
        let mut permissions = Vec::new();
        match f.permissions {
            None => problems.add(
                &at.key("permissions"),
                "is required: what the grant gives, e.g. [\"invoice:read\"]",
            ),
            Some(list) if list.is_empty() => {
                problems.add(&at.key("permissions"), "may not be empty")
            }
            Some(list) => {
                for (k, p) in list.iter().enumerate() {
                    match p.split_once(':') {
                        Some((r, a))
                            if !r.is_empty()
                                && !a.is_empty()
                                && !a.contains(':')
                                && !p.contains(char::is_whitespace) =>
                        {
                            permissions.push((r.to_string(), a.to_string()))
                        }
                        _ => problems.add(
                            &at.key("permissions").index(k),
                            format!("{p:?} must be \"resource:action\", as a route's permission"),
                        ),
                    }
                }
            }
        }
        if let Some(p) = &f.provider {
            if !providers.iter().any(|q| &q.name == p) {
                let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
                problems.add(
                    &at.key("provider"),
                    format!("{p:?} is not a provider: name one of {known:?}"),
                );
            }
        }
        if f.subjects.as_ref().is_some_and(|s| !s.is_empty()) && f.provider.is_none() {
            problems.add(
                &at.key("subjects"),
                "needs provider: a subject is only unique within one provider",
            );
        }
        let plain =
            |list: Option<Vec<String>>, key: &str, problems: &mut Problems| -> Vec<String> {
                let mut out = Vec::new();
                for (k, v) in list.unwrap_or_default().into_iter().enumerate() {
                    if v.trim().is_empty() {
                        problems.add(&at.key(key).index(k), "may not be empty");
                    } else {
                        out.push(v);
                    }
                }
                out
            };
        let name = f.name.filter(|n| {
            let ok = !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                problems.add(&at.key("name"), format!("{n:?} is not a grant name: 1 to 64 letters, digits, -, _ and . (it is a metric label)"));
            }
            ok
        });
        let shadow = f.enforce == Some(false);
        if shadow && name.is_none() {
            problems.add(&at.key("enforce"), "a shadow grant (enforce = false) needs a name: it labels the grant's metric and logs");
        }
        if f.replaces.is_some() && !shadow {
            problems.add(&at.key("replaces"), "only a shadow grant (enforce = false) replaces another: an enforced grant only adds");
        }
        let grant = GrantSpec {
            name,
            shadow,
            replaces: None,
            permissions,
            subjects: plain(f.subjects, "subjects", problems),
            emails: lowercase_names(f.emails, &at.key("emails"), problems, |v| {
                (!v.contains('@') || v.contains(char::is_whitespace))
                    .then_some("is not an email address")
            }),
            email_domains: lowercase_names(
                f.email_domains,
                &at.key("email_domains"),
                problems,
                |v| {
                    (v.is_empty() || v.contains(['@', '/', ' ']) || v.starts_with('.'))
                        .then_some("is not a domain: write e.g. \"example.com\"")
                },
            ),
            groups: plain(f.groups, "groups", problems),
            users: github_refs(f.users, &at.key("users"), problems, github_name),
            orgs: github_refs(f.orgs, &at.key("orgs"), problems, github_name),
            teams: github_refs(f.teams, &at.key("teams"), problems, github_team),
            provider: f.provider,
        };
        let selectors = grant.subjects.len()
            + grant.emails.len()
            + grant.email_domains.len()
            + grant.groups.len()
            + grant.users.len()
            + grant.orgs.len()
            + grant.teams.len();
        if selectors == 0 {
            problems.add(
                &at,
                "names nobody: give subjects, emails, email_domains, groups, users, orgs or teams",
            );
        }
        if let Some(n) = &grant.name {
            if out.iter().any(|g: &GrantSpec| g.name.as_ref() == Some(n)) {
                problems.add(&at.key("name"), format!("{n:?} names another grant of this client too: grant names are unique within a client"));
            }
        }
        out.push(grant);
        replaces.push(f.replaces);
    }
    // A shadow grant replaces an enforced grant of the same client, named after all are read.
    for (j, wanted) in replaces.into_iter().enumerate() {
        let Some(wanted) = wanted else { continue };
        let at = at.key("grants").index(j).key("replaces");
        match out.iter().position(|g| g.name.as_ref() == Some(&wanted)) {
            Some(k) if out.get(k).is_some_and(|g| g.shadow) => problems.add(
                &at,
                format!("{wanted:?} is a shadow grant: name an enforced grant of this client"),
            ),
            Some(k) => {
                if let Some(g) = out.get_mut(j) {
                    g.replaces = Some(k);
                }
            }
            None => problems.add(
                &at,
                format!("{wanted:?} is not the name of a grant of this client"),
            ),
        }
    }
    out
}

fn cache(f: CacheFile, problems: &mut Problems) -> CacheSettings {
    let at = KeyPath::root("cache");
    for (name, v) in [("tokens", f.tokens), ("rejected_tokens", f.rejected_tokens)] {
        if v == Some(0) {
            problems.add(&at.key(name), "must be at least 1");
        }
    }
    CacheSettings {
        tokens: f.tokens.unwrap_or(100_000),
        rejected_tokens: f.rejected_tokens.unwrap_or(10_000),
        rejected_ttl: problems.duration(
            f.rejected_ttl.as_deref(),
            &at.key("rejected_ttl"),
            Duration::from_secs(30),
        ),
    }
}

fn headers(f: HeadersFile, problems: &mut Problems) -> HeaderSettings {
    let prefix = f
        .prefix
        .unwrap_or_else(|| "x-auth-".to_string())
        .to_ascii_lowercase();
    if prefix.len() < 3
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        problems.add(
            &KeyPath::root("headers").key("prefix"),
            format!("{prefix:?} must be at least 3 letters, digits or dashes, e.g. \"x-auth-\""),
        );
    }
    let at = KeyPath::root("headers");
    let underscores = match f.with_underscores.as_deref() {
        None | Some("drop") => Underscores::Drop,
        Some("reject") => Underscores::Reject,
        Some("allow") => Underscores::Allow,
        Some(other) => {
            problems.add(
                &at.key("with_underscores"),
                format!("{other:?} is not an action: write \"drop\", \"reject\" or \"allow\""),
            );
            Underscores::Drop
        }
    };
    let unverified_email = match f.unverified_email.as_deref() {
        None | Some("omit") => UnverifiedEmail::Omit,
        Some("send") => UnverifiedEmail::Send,
        Some(other) => {
            problems.add(
                &at.key("unverified_email"),
                format!("{other:?} is not a choice: write \"omit\" (the default: an unverified email never goes upstream) or \"send\" (sent with {}email-verified: false)", prefix),
            );
            UnverifiedEmail::Omit
        }
    };
    let mut strip = Vec::new();
    for (i, name) in f.strip.unwrap_or_default().into_iter().enumerate() {
        let folded = crate::headers::fold(&name);
        if http::HeaderName::from_bytes(folded.as_bytes()).is_err() {
            problems.add(
                &at.key("strip").index(i),
                format!("{name:?} is not a header name"),
            );
        } else if matches!(
            folded.as_str(),
            "host" | "content-length" | "transfer-encoding" | "content-type"
        ) {
            problems.add(
                &at.key("strip").index(i),
                format!("{name:?} is needed to proxy the request: it can't be stripped"),
            );
        } else {
            strip.push(folded);
        }
    }
    HeaderSettings {
        prefix,
        forward_token: f.forward_token.unwrap_or(false),
        underscores,
        strip,
        strip_defaults: f.strip_defaults.unwrap_or(true),
        unverified_email,
    }
}

fn clients(
    list: Vec<(usize, ClientFile)>,
    providers: &[ProviderSettings],
    problems: &mut Problems,
) -> Vec<ClientSettings> {
    let mut out = Vec::new();
    let mut names = HashMap::new();
    let mut origins: HashMap<Origin, String> = HashMap::new();
    let mut patterns: HashMap<String, String> = HashMap::new();
    for (i, f) in list {
        let at = KeyPath::root("clients").index(i);
        let name = problems.require(
            f.name,
            &at.key("name"),
            "a name for headers, metrics and logs",
        );
        if let Some(n) = &name {
            if names.insert(n.clone(), i).is_some() {
                problems.add(
                    &at.key("name"),
                    format!("{n:?} names two clients: names must be unique"),
                );
            }
        }
        let client_id = f.client_id;
        let mut parsed = Vec::new();
        let mut parsed_patterns = Vec::new();
        match f.origins {
            None => problems.add(
                &at.key("origins"),
                "is required: the origins (scheme://host[:port]) this app is served from",
            ),
            Some(list) if list.is_empty() => problems.add(&at.key("origins"), "may not be empty"),
            Some(list) => {
                for (j, o) in list.iter().enumerate() {
                    if o.contains('*') {
                        match OriginPattern::parse(o) {
                            Ok(p) => {
                                let owner = name.clone().unwrap_or_default();
                                if let Some(other) = patterns.insert(p.as_str().to_string(), owner)
                                {
                                    problems.add(&at.key("origins").index(j), format!("{o:?} is also an origin pattern of client {other:?}: an origin identifies exactly one client"));
                                }
                                parsed_patterns.push(p);
                            }
                            Err(e) => problems.add(&at.key("origins").index(j), e),
                        }
                        continue;
                    }
                    match Origin::parse(o) {
                        Ok(origin) => {
                            let owner = name.clone().unwrap_or_default();
                            if let Some(other) = origins.insert(origin.clone(), owner.clone()) {
                                problems.add(&at.key("origins").index(j), format!("{o:?} is also an origin of client {other:?}: an origin identifies exactly one client"));
                            }
                            parsed.push(origin);
                        }
                        Err(e) => problems.add(&at.key("origins").index(j), e),
                    }
                }
            }
        }
        let namespace = f
            .namespace
            .or_else(|| client_id.as_ref().map(|id| format!("client_{id}")));
        if namespace.is_none() && client_id.is_none() {
            problems.add(&at.key("namespace"), "is required for a client without client_id: the permission namespace of its routes, e.g. \"client_portfolio\"");
        }
        if let Some(ns) = &namespace {
            if ns.is_empty() || ns.contains(char::is_whitespace) {
                problems.add(
                    &at.key("namespace"),
                    format!("{ns:?} must be non-empty without spaces"),
                );
            }
        }
        let redirect_path = f
            .redirect_path
            .unwrap_or_else(|| "/_authgate/callback".to_string());
        if !redirect_path.starts_with('/')
            || redirect_path.starts_with("//")
            || redirect_path.contains(['?', '#', '\\', ' '])
            || redirect_path == "/"
        {
            problems.add(&at.key("redirect_path"), format!("{redirect_path:?} must be an absolute path such as \"/_authgate/callback\", without query"));
        }
        let scopes = f.scopes.unwrap_or_else(|| {
            ["openid", "email", "profile", "offline_access"]
                .map(String::from)
                .to_vec()
        });
        if client_id.is_some() && !scopes.iter().any(|s| s == "openid") {
            problems.add(
                &at.key("scopes"),
                "must include \"openid\": the login needs an id_token",
            );
        }
        for (j, sc) in scopes.iter().enumerate() {
            if sc.is_empty()
                || !sc
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                problems.add(
                    &at.key("scopes").index(j),
                    format!("{sc:?} is not a scope token"),
                );
            }
        }
        let secret = Secret::new(f.client_secret.unwrap_or_default());
        let token_auth = match f.token_auth.as_deref() {
            None | Some("client_secret_basic") => TokenAuth::ClientSecretBasic,
            Some("client_secret_post") => TokenAuth::ClientSecretPost,
            Some("none") => TokenAuth::None,
            Some(other) => {
                problems.add(&at.key("token_auth"), format!("{other:?} is not a method: write \"client_secret_basic\", \"client_secret_post\" or \"none\""));
                TokenAuth::ClientSecretBasic
            }
        };
        if token_auth != TokenAuth::None && secret.is_empty() && f.token_auth.is_some() {
            problems.add(&at.key("client_secret"), "is required with token_auth = client_secret_basic or client_secret_post: set it, or token_auth = \"none\" for a public client");
        }
        let post_logout_redirect = f
            .post_logout_redirect
            .unwrap_or_else(|| "/_authgate/signed-out".to_string());
        if !post_logout_redirect.starts_with('/')
            || post_logout_redirect.starts_with("//")
            || post_logout_redirect.contains('\\')
        {
            let own_origin = Url::parse(&post_logout_redirect)
                .ok()
                .and_then(|u| Origin::parse(&u.origin().ascii_serialization()).ok())
                .is_some_and(|o| parsed.contains(&o));
            if !own_origin {
                problems.add(&at.key("post_logout_redirect"), format!("{post_logout_redirect:?} must be a path (\"/\") or a URL on one of this client's origins"));
            }
        }
        let logout_url = f.logout_url.as_deref().and_then(|u| match Url::parse(u) {
            Ok(url)
                if matches!(url.scheme(), "https" | "http")
                    && url.host().is_some()
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                Some(url)
            }
            _ => {
                problems.add(
                    &at.key("logout_url"),
                    format!("{u:?} must be an absolute http(s) URL: the IdP's own sign-out page"),
                );
                None
            }
        });
        let logout_post = match f.logout_method.as_deref() {
            None | Some("get") => false,
            Some("post") => true,
            Some(other) => {
                problems.add(
                    &at.key("logout_method"),
                    format!(
                        "{other:?} is not a method: write \"get\" (a link) or \"post\" (a form)"
                    ),
                );
                false
            }
        };
        if f.logout_method.is_some() && f.logout_url.is_none() {
            problems.add(
                &at.key("logout_method"),
                "needs logout_url: it says how to send the browser there",
            );
        }
        let allowed = AllowRules {
            orgs: github_refs(
                f.allowed_orgs,
                &at.key("allowed_orgs"),
                problems,
                github_name,
            ),
            teams: github_refs(
                f.allowed_teams,
                &at.key("allowed_teams"),
                problems,
                github_team,
            ),
            users: github_refs(
                f.allowed_users,
                &at.key("allowed_users"),
                problems,
                github_name,
            ),
        };
        let grants = client_grants(f.grants, providers, &at, problems);
        let needs_orgs = !allowed.orgs.is_empty()
            || !allowed.teams.is_empty()
            || grants.iter().any(GrantSpec::needs_orgs);
        let sign_in = client_sign_in(
            f.providers,
            (client_id.as_ref(), &secret, &scopes),
            providers,
            needs_orgs,
            &at,
            problems,
        );
        let github = sign_in.iter().any(|s| {
            providers
                .get(s.provider)
                .is_some_and(|p| matches!(p.kind, ProviderKind::GitHub(_)))
        });
        if !allowed.is_empty() && !github {
            let key = if !allowed.orgs.is_empty() {
                "allowed_orgs"
            } else if !allowed.teams.is_empty() {
                "allowed_teams"
            } else {
                "allowed_users"
            };
            problems.add(&at.key(key), "restricts GitHub sign-ins, but this client signs in with no GitHub provider: add one to [[clients.providers]]");
        }
        if let Some(c) = &f.accent_color {
            if !colour(c) {
                problems.add(
                    &at.key("accent_color"),
                    format!("{c:?} is not a colour: write \"#rgb\" or \"#rrggbb\""),
                );
            }
        }
        let logo_url = f.logo_url.as_deref().and_then(|u| match Url::parse(u) {
            Ok(url)
                if url.scheme() == "https" && url.host().is_some() && url.username().is_empty() =>
            {
                Some(url)
            }
            Ok(url)
                if url.scheme() == "http"
                    && url.host_str().is_some_and(|h| {
                        h == "localhost"
                            || h.parse::<std::net::IpAddr>()
                                .is_ok_and(|ip| ip.is_loopback())
                    }) =>
            {
                Some(url)
            }
            _ => {
                problems.add(
                    &at.key("logo_url"),
                    format!("{u:?} must be an https URL (http only on loopback)"),
                );
                None
            }
        });
        if let Some(d) = &f.display_name {
            if d.trim().is_empty() || d.chars().count() > 80 {
                problems.add(&at.key("display_name"), "must be 1 to 80 characters");
            }
        }
        if let (Some(name), Some(namespace)) = (name, namespace) {
            out.push(ClientSettings {
                branding: Branding {
                    display_name: f.display_name.unwrap_or_else(|| name.clone()),
                    logo_url,
                    accent_color: f.accent_color,
                },
                sign_in,
                allowed,
                grants,
                name,
                origins: parsed,
                client_id: client_id.unwrap_or_default(),
                client_secret: secret,
                namespace,
                origin_patterns: parsed_patterns,
                redirect_path,
                scopes,
                token_auth,
                allow_foreign_tokens: f.allow_foreign_tokens.unwrap_or(false),
                post_logout_redirect,
                logout_url,
                logout_post,
            });
        }
    }
    out
}

/// How often an open WebSocket re-reads its session, unless `session.socket_recheck` says.
const DEFAULT_SOCKET_RECHECK: Duration = Duration::from_secs(15);
/// The longest `session.socket_recheck`: the bound on how long a socket outlives a logout at
/// another instance.
const MAX_SOCKET_RECHECK: Duration = Duration::from_secs(300);

fn session(f: SessionFile, problems: &mut Problems) -> SessionSettings {
    let at = KeyPath::root("session");
    let cookie_name = f.cookie_name.unwrap_or_else(|| "authgate".to_string());
    if cookie_name.is_empty()
        || cookie_name.starts_with("__")
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problems.add(&at.key("cookie_name"), format!("{cookie_name:?} must be letters, digits, - or _ (the __Host- prefix is added over HTTPS)"));
    }
    let lifetime = problems.duration(
        f.lifetime.as_deref(),
        &at.key("lifetime"),
        Duration::from_secs(12 * 3600),
    );
    let idle_timeout = problems.duration(
        f.idle_timeout.as_deref(),
        &at.key("idle_timeout"),
        Duration::from_secs(3600),
    );
    let refresh_before = match f.refresh_before.as_deref() {
        Some("0") | Some("0s") => Duration::ZERO,
        other => problems.duration(other, &at.key("refresh_before"), Duration::from_secs(30)),
    };
    let login_timeout = problems.duration(
        f.login_timeout.as_deref(),
        &at.key("login_timeout"),
        Duration::from_secs(600),
    );
    let socket_recheck = problems.duration(
        f.socket_recheck.as_deref(),
        &at.key("socket_recheck"),
        DEFAULT_SOCKET_RECHECK,
    );
    if socket_recheck > MAX_SOCKET_RECHECK {
        problems.add(
            &at.key("socket_recheck"),
            format!(
                "{} is too long: an open WebSocket outlives a logout at another instance by up to this long; use at most {}s",
                humantime::format_duration(socket_recheck),
                MAX_SOCKET_RECHECK.as_secs()
            ),
        );
    }
    if f.max_sessions == Some(0) {
        problems.add(&at.key("max_sessions"), "must be at least 1");
    }
    match f.max_pending_logins {
        Some(0) => problems.add(&at.key("max_pending_logins"), "must be at least 1: every login needs one"),
        Some(n) if n > 10 => problems.add(&at.key("max_pending_logins"), format!("{n} is too many: each login in flight is a cookie of up to 2 KiB the browser sends with every request; use at most 10")),
        _ => {}
    }
    let login_key = f.login_key.map(Secret::new);
    if let Some(key) = &login_key {
        if let Err(e) = crate::secret::decode_login_key(key.expose()) {
            problems.add(&at.key("login_key"), e.to_string());
        }
    }
    let store = session_store(f.store.as_deref(), f.redis, &at, problems);
    let code_exchanges = LoadBound {
        caller: CallerBound {
            in_flight: at_least_one(
                problems,
                &at,
                "caller_code_exchanges_in_flight",
                f.caller_code_exchanges_in_flight,
                4,
            ),
            per_second: at_least_one(
                problems,
                &at,
                "caller_code_exchanges_per_second",
                f.caller_code_exchanges_per_second,
                10,
            ),
        },
        total: CallerBound {
            in_flight: at_least_one(
                problems,
                &at,
                "code_exchanges_in_flight",
                f.code_exchanges_in_flight,
                64,
            ),
            per_second: at_least_one(
                problems,
                &at,
                "code_exchanges_per_second",
                f.code_exchanges_per_second,
                100,
            ),
        },
    };
    SessionSettings {
        store,
        code_exchanges,
        cookie_name,
        lifetime,
        idle_timeout,
        max_sessions: f.max_sessions.unwrap_or(100_000),
        allow_insecure_http: f.allow_insecure_http.unwrap_or(false),
        refresh_before,
        login_timeout,
        socket_recheck,
        max_pending_logins: f.max_pending_logins.unwrap_or(4),
        login_key,
    }
}

/// `session.store` and `[session.redis]`.
fn session_store(
    store: Option<&str>,
    redis: Option<RedisFile>,
    at: &KeyPath,
    problems: &mut Problems,
) -> SessionStoreSettings {
    match (store.unwrap_or("memory"), redis) {
        ("memory", None) => SessionStoreSettings::Memory,
        ("memory", Some(_)) => {
            problems.add(&at.key("redis"), "is set but session.store is \"memory\": set store = \"redis\" to use it, or remove [session.redis]");
            SessionStoreSettings::Memory
        }
        ("redis", redis) => {
            let at = at.key("redis");
            let f = redis.unwrap_or_default();
            let url = problems
                .require(
                    f.url,
                    &at.key("url"),
                    "the Redis URL, e.g. \"${REDIS_URL}\" (redis://host:6379 or rediss:// for TLS)",
                )
                .unwrap_or_default();
            if !url.is_empty() {
                match redis::parse_redis_url(&url) {
                    Some(u) if u.fragment().is_some() => {
                        problems.add(&at.key("url"), "has a #fragment: `#insecure` would turn off TLS certificate checks, which the gateway does not allow; remove it");
                    }
                    Some(u) if u.scheme() == "redis" || u.scheme() == "rediss" => {
                        // The client's error may quote the URL, password included: not repeated.
                        if redis::Client::open(url.as_str()).is_err() {
                            problems.add(&at.key("url"), "is not a usable Redis URL: write redis://[user:password@]host:port[/db] or rediss://… for TLS");
                        }
                    }
                    _ => problems.add(&at.key("url"), "is not a Redis URL: write redis://[user:password@]host:port[/db] or rediss://… for TLS"),
                }
            }
            let prefix = f.prefix.unwrap_or_else(|| "authgate:".into());
            if prefix.is_empty()
                || prefix.len() > 64
                || !prefix.bytes().all(|b| b.is_ascii_graphic())
            {
                problems.add(&at.key("prefix"), format!("{prefix:?} must be 1 to 64 printable characters without spaces, e.g. \"authgate:\""));
            }
            let key = problems.require(f.key, &at.key("key"), "32 random bytes in base64 (`openssl rand -base64 32`), the same at every instance, e.g. \"${AUTHGATE_SESSION_KEY}\"").unwrap_or_default();
            if !key.is_empty() {
                if let Err(e) = crate::secret::decode_login_key(&key) {
                    problems.add(&at.key("key"), e.to_string());
                }
            }
            let connect_timeout = problems.duration(
                f.connect_timeout.as_deref(),
                &at.key("connect_timeout"),
                Duration::from_secs(1),
            );
            let timeout = problems.duration(
                f.timeout.as_deref(),
                &at.key("timeout"),
                Duration::from_millis(500),
            );
            let ca_file = f.ca_file.map(PathBuf::from);
            if let Some(path) = &ca_file {
                if !url.starts_with("rediss://") {
                    problems.add(
                        &at.key("ca_file"),
                        "is only for TLS: the url must start with rediss://",
                    );
                } else if let Err(e) = std::fs::read(path) {
                    problems.add(
                        &at.key("ca_file"),
                        format!("{} cannot be read: {e}", path.display()),
                    );
                }
            }
            SessionStoreSettings::Redis(RedisSettings {
                url: Secret::new(url),
                prefix,
                key: Secret::new(key),
                connect_timeout,
                timeout,
                ca_file,
            })
        }
        (other, _) => {
            problems.add(&at.key("store"), format!("{other:?} is not a session store: write \"memory\" (this process, the default) or \"redis\" (shared by instances)"));
            SessionStoreSettings::Memory
        }
    }
}

fn upstreams(list: Vec<(usize, UpstreamFile)>, problems: &mut Problems) -> Vec<UpstreamSettings> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, f) in list {
        let at = KeyPath::root("upstreams").index(i);
        let name = problems.require(f.name, &at.key("name"), "a name routes refer to");
        if let Some(n) = &name {
            if !names.insert(n.clone()) {
                problems.add(
                    &at.key("name"),
                    format!("{n:?} names two upstreams: names must be unique"),
                );
            }
        }
        let addresses = f.addresses.unwrap_or_default();
        if addresses.is_empty() {
            problems.add(&at.key("addresses"), "is required: at least one host:port");
        }
        for (j, a) in addresses.iter().enumerate() {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                problems.add(
                    &at.key("addresses").index(j),
                    format!("{a:?} is not host:port, e.g. \"10.0.0.5:3000\""),
                );
            }
        }
        let sni = f.sni.unwrap_or_else(|| {
            addresses
                .first()
                .and_then(|a| a.rsplit_once(':'))
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                .unwrap_or_default()
        });
        let connect_timeout = problems.duration(
            f.connect_timeout.as_deref(),
            &at.key("connect_timeout"),
            Duration::from_secs(2),
        );
        let read_timeout = problems.duration(
            f.read_timeout.as_deref(),
            &at.key("read_timeout"),
            Duration::from_secs(30),
        );
        let selection = match f.selection.as_deref() {
            None | Some("round_robin") => Selection::RoundRobin,
            Some("least_connections") => Selection::LeastConnections,
            Some(other) => {
                problems.add(
                    &at.key("selection"),
                    format!("{other:?} is not \"round_robin\" or \"least_connections\""),
                );
                Selection::RoundRobin
            }
        };
        let retries = f.retries.unwrap_or(1);
        if retries > MAX_RETRIES {
            problems.add(
                &at.key("retries"),
                format!(
                    "{retries} is more than {MAX_RETRIES}: each retry waits for a connect timeout"
                ),
            );
        }
        let health_check = f
            .health_check
            .and_then(|h| health_check(h, &sni, &at.key("health_check"), problems));
        let tls = f.tls.unwrap_or(false);
        let ca = match f.ca_file {
            Some(path) if !tls => {
                problems.add(
                    &at.key("ca_file"),
                    format!("{path} is only for TLS: set tls = true, or remove ca_file"),
                );
                Vec::new()
            }
            Some(path) => ca_certificates(&path).unwrap_or_else(|why| {
                problems.add(&at.key("ca_file"), why);
                Vec::new()
            }),
            None => Vec::new(),
        };
        if let Some(name) = name {
            out.push(UpstreamSettings {
                name,
                addresses,
                tls,
                sni,
                ca,
                connect_timeout,
                read_timeout,
                selection,
                retries: retries.min(MAX_RETRIES),
                http2: f.http2.unwrap_or(false),
                health_check,
                reads: UpstreamReads {
                    windows_paths: f.windows_paths.unwrap_or(true),
                    format_suffixes: f.format_suffixes.unwrap_or(true),
                    method_overrides: f.method_overrides.unwrap_or(true),
                },
            });
        }
    }
    out
}

/// The certificates of a PEM CA file, each checked to be a readable X.509 certificate (the TLS
/// connector reads them again on every connection and must not meet a bad one there).
fn ca_certificates(path: &str) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{path} cannot be read: {e}"))?;
    let blocks = pem::parse_many(&text).map_err(|e| format!("{path} is not a PEM file: {e}"))?;
    let certificates: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certificates.is_empty() {
        return Err(format!(
            "{path} holds no CERTIFICATE block: name a PEM file of CA certificates"
        ));
    }
    for (i, der) in certificates.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(der) {
            return Err(format!(
                "{path}: certificate {} is not valid X.509: {e}",
                i + 1
            ));
        }
    }
    Ok(certificates)
}

/// Headers a proxy never forwards (RFC 9110 §7.6.1, and what Pingora removes on the way upstream).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Most retries an upstream may ask for.
const MAX_RETRIES: u32 = 5;

/// An upstream's `[health_check]`; `sni` is the default `Host`.
fn health_check(
    h: HealthCheckFile,
    sni: &str,
    at: &KeyPath,
    problems: &mut Problems,
) -> Option<HealthCheckSettings> {
    let path = problems.require(
        h.path,
        &at.key("path"),
        "the path checked with GET, e.g. \"/healthz\"",
    );
    if let Some(p) = &path {
        if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
            problems.add(
                &at.key("path"),
                format!("{p:?} must start with / and hold no spaces or control characters"),
            );
        }
    }
    let interval = problems.duration(
        h.interval.as_deref(),
        &at.key("interval"),
        Duration::from_secs(5),
    );
    let timeout = problems.duration(
        h.timeout.as_deref(),
        &at.key("timeout"),
        Duration::from_secs(1),
    );
    if interval < Duration::from_millis(100) {
        problems.add(
            &at.key("interval"),
            "must be at least 100ms: every address is checked that often",
        );
    }
    let mut threshold = |value: Option<usize>, key: &str, default: usize| match value {
        None => default,
        Some(n) if (1..=100).contains(&n) => n,
        Some(n) => {
            problems.add(
                &at.key(key),
                format!("{n} must be between 1 and 100 consecutive checks"),
            );
            default
        }
    };
    let unhealthy_threshold = threshold(h.unhealthy_threshold, "unhealthy_threshold", 3);
    let healthy_threshold = threshold(h.healthy_threshold, "healthy_threshold", 2);
    let host = h.host.unwrap_or_else(|| sni.to_string());
    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'/') {
        problems.add(&at.key("host"), format!("{host:?} is not a host name"));
    }
    Some(HealthCheckSettings {
        path: path?,
        host,
        interval,
        timeout,
        unhealthy_threshold,
        healthy_threshold,
    })
}

fn routes(
    list: Vec<(usize, RouteFile)>,
    upstreams: &[UpstreamSettings],
    clients: &[ClientSettings],
    problems: &mut Problems,
) -> Vec<RouteSpec> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, f) in list {
        let at = KeyPath::root("routes").index(i);
        let path = match problems.require(
            f.path,
            &at.key("path"),
            "the path pattern, e.g. \"/invoices/{id}\" or \"/static/*\"",
        ) {
            Some(p) => match PathPattern::parse(&p) {
                Ok(pattern) => Some(pattern),
                Err(e) => {
                    problems.add(&at.key("path"), e.to_string());
                    None
                }
            },
            None => None,
        };
        let methods = f.methods.map(|list| {
            let mut ms = Vec::new();
            for (j, m) in list.iter().enumerate() {
                let upper = m.to_ascii_uppercase();
                match http::Method::from_bytes(upper.as_bytes()) {
                    Ok(method)
                        if ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                            .contains(&method.as_str()) =>
                    {
                        ms.push(method)
                    }
                    _ => problems.add(
                        &at.key("methods").index(j),
                        format!("{m:?} is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                    ),
                }
            }
            if list.is_empty() {
                problems.add(
                    &at.key("methods"),
                    "may not be empty: leave it out to allow any method",
                );
            }
            ms
        });
        let upstream = match problems.require(
            f.upstream,
            &at.key("upstream"),
            "the name of the upstream that serves this route",
        ) {
            Some(name) => match upstreams.iter().position(|u| u.name == name) {
                Some(idx) => Some(idx),
                None => {
                    let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                    problems.add(
                        &at.key("upstream"),
                        format!("{name:?} is not a configured upstream: name one of {known:?}"),
                    );
                    None
                }
            },
            None => None,
        };
        let attributes = attributes(
            f.attributes.unwrap_or_default(),
            path.as_ref(),
            &at,
            problems,
        );
        let body_limit = match f.body_limit {
            None => MAX_BODY,
            Some(n) if n == 0 || n > MAX_BODY as u64 => {
                problems.add(&at.key("body_limit"), format!("{n} must be between 1 and {MAX_BODY} bytes: bodies read for attributes are buffered in memory"));
                MAX_BODY
            }
            Some(n) => n as usize,
        };
        let allow_on_error = match f.on_error.as_deref() {
            None | Some("deny") => false,
            Some("allow") => true,
            Some(other) => {
                problems.add(
                    &at.key("on_error"),
                    format!("{other:?} is not \"deny\" or \"allow\""),
                );
                false
            }
        };
        let access = access(
            f.auth,
            f.permission,
            f.entity_id,
            path.as_ref(),
            &at,
            problems,
        );
        if allow_on_error
            && access
                .as_ref()
                .is_some_and(|a| !matches!(a, Access::Permission(_)))
        {
            problems.add(
                &at.key("on_error"),
                "only applies to routes with a `permission` (the live check): remove it",
            );
        }
        if let Some(Access::Public) = &access {
            if !attributes.is_empty() {
                problems.add(
                    &at.key("attributes"),
                    "only apply to routes with a `permission`",
                );
            }
            if f.signed_identity == Some(true) {
                problems.add(
                    &at.key("signed_identity"),
                    "needs an identity: public routes have none",
                );
            }
            if f.forward_session_token == Some(true) {
                problems.add(
                    &at.key("forward_session_token"),
                    "needs an identity: public routes have none",
                );
            }
            if f.websocket_close_at_expiry == Some(true) {
                problems.add(
                    &at.key("websocket_close_at_expiry"),
                    "needs a credential that expires: public routes take none",
                );
            }
            if f.enforce == Some(false) {
                problems.add(&at.key("enforce"), "only applies to routes that decide something (auth = \"authenticated\" or a `permission`): a public route refuses nobody");
            }
        }
        let host = f.host.map(|h| h.to_ascii_lowercase());
        if let Some(h) = &host {
            if h.is_empty() || h.contains(['/', ':', ' ']) {
                problems.add(
                    &at.key("host"),
                    format!("{h:?} must be a bare host name without scheme, port or path"),
                );
            }
        }
        let served = route_clients(f.clients, clients, access.as_ref(), &at, problems);
        let (Some(path), Some(upstream), Some(access)) = (path, upstream, access) else {
            continue;
        };
        let name = f.name.unwrap_or_else(|| {
            let ms = methods
                .as_ref()
                .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "ANY".into());
            format!(
                "{}{ms} {}",
                host.as_ref().map(|h| format!("{h} ")).unwrap_or_default(),
                path.as_str()
            )
        });
        if !names.insert(name.clone()) {
            problems.add(
                &at.key("name"),
                format!("{name:?} names two routes: route names must be unique"),
            );
        }
        out.push(RouteSpec {
            name,
            host,
            path,
            methods,
            upstream,
            access,
            attributes,
            body_limit,
            allow_on_error,
            signed_identity: f.signed_identity.unwrap_or(false),
            clients: served,
            path_params: f.path_params.unwrap_or(false),
            forward_session_token: f.forward_session_token.unwrap_or(false),
            websocket_close_at_expiry: f.websocket_close_at_expiry.unwrap_or(false),
            enforce: f.enforce.unwrap_or(true),
            upstream_reads: upstreams.get(upstream).map(|u| u.reads).unwrap_or_default(),
        });
    }
    out
}

/// A route's `clients`: names of configured clients, each once, on a route that needs an identity.
fn route_clients(
    names: Option<Vec<String>>,
    clients: &[ClientSettings],
    access: Option<&Access>,
    at: &KeyPath,
    problems: &mut Problems,
) -> Option<Vec<usize>> {
    let names = names?;
    let at = at.key("clients");
    if names.is_empty() {
        problems.add(&at, "may not be empty: name the client apps this route serves, or leave it out to serve every client");
    }
    if let Some(Access::Public) = access {
        problems.add(
            &at,
            "only apply to routes that need an identity: a public route has no client to check",
        );
    }
    let mut out = Vec::with_capacity(names.len());
    for (j, name) in names.iter().enumerate() {
        match clients.iter().position(|c| &c.name == name) {
            Some(i) if out.contains(&i) => {
                problems.add(&at.index(j), format!("{name:?} is listed twice"))
            }
            Some(i) => out.push(i),
            None => {
                let known: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
                problems.add(
                    &at.index(j),
                    format!("{name:?} is not a configured client: name one of {known:?}"),
                );
            }
        }
    }
    Some(out)
}

fn access(
    auth: Option<String>,
    permission: Option<String>,
    entity_id: Option<String>,
    path: Option<&PathPattern>,
    at: &KeyPath,
    problems: &mut Problems,
) -> Option<Access> {
    if let (Some(id), Some(p)) = (&entity_id, path) {
        if !p.params().any(|name| name == id) {
            problems.add(
                &at.key("entity_id"),
                format!("{id:?} is not a capture of the path: name one of its {{param}}s"),
            );
        }
    }
    match (auth.as_deref(), permission) {
        (Some("none"), None) | (Some("authenticated"), None) if entity_id.is_some() => {
            problems.add(&at.key("entity_id"), "only applies with a `permission`");
            None
        }
        (Some("none"), None) => Some(Access::Public),
        (Some("authenticated"), None) => Some(Access::Authenticated),
        (Some(a @ ("none" | "authenticated")), Some(_)) => {
            problems.add(&at.key("permission"), format!("conflicts with auth = {a:?}: a route is either public, authenticated, or needs a permission"));
            None
        }
        (Some(other), _) => {
            problems.add(&at.key("auth"), format!("{other:?} is not a mode: write \"none\" (public) or \"authenticated\", or leave it out and set `permission`"));
            None
        }
        (None, None) => {
            problems.add(&at.key("permission"), "is required unless auth = \"none\" or \"authenticated\": e.g. permission = \"invoice:read\"");
            None
        }
        (None, Some(p)) => match p.split_once(':') {
            Some((resource, action))
                if !resource.is_empty()
                    && !action.is_empty()
                    && !p.contains(char::is_whitespace)
                    && !action.contains(':') =>
            {
                Some(Access::Permission(RequiredPermission {
                    resource: resource.into(),
                    action: action.into(),
                    entity_id,
                }))
            }
            _ => {
                problems.add(
                    &at.key("permission"),
                    format!("{p:?} is not resource:action, e.g. \"invoice:read\""),
                );
                None
            }
        },
    }
}

/// The most body bytes read for attributes (Pingora buffers at most this much for replay upstream).
pub const MAX_BODY: usize = 64 * 1024;

fn attributes(
    list: std::collections::BTreeMap<String, String>,
    path: Option<&PathPattern>,
    at: &KeyPath,
    problems: &mut Problems,
) -> Vec<(String, AttributeSource)> {
    let mut out = Vec::new();
    for (name, source) in list {
        let here = at.key("attributes").key(&name);
        let parsed = match source.split_once(':') {
            Some(("path", capture)) => {
                if path.is_some_and(|p| !p.params().any(|n| n == capture)) {
                    problems.add(
                        &here,
                        format!(
                            "{capture:?} is not a capture of the path: name one of its {{param}}s"
                        ),
                    );
                }
                Some(AttributeSource::Path(capture.to_string()))
            }
            Some(("query", q)) if !q.is_empty() => Some(AttributeSource::Query(q.to_string())),
            Some(("header", h)) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                let lower = h.to_ascii_lowercase();
                if HOP_BY_HOP.contains(&crate::headers::fold(&lower).as_str()) {
                    problems.add(&here, format!("{lower:?} is a hop-by-hop header, which never reaches the upstream: the live check would decide on a value the upstream does not receive; read an end-to-end header"));
                }
                Some(AttributeSource::Header(lower))
            }
            Some(("body", field))
                if !field.is_empty() && field.split('.').all(|s| !s.is_empty()) =>
            {
                Some(AttributeSource::Body(
                    field.split('.').map(str::to_string).collect(),
                ))
            }
            _ => None,
        };
        match parsed {
            Some(p) => out.push((name, p)),
            None => problems.add(&here, format!("{source:?} is not a source: write \"path:<capture>\", \"query:<name>\", \"header:<name>\" or \"body:<field.path>\"")),
        }
    }
    out
}

/// Longest breaker cooldown while a route fails open: an open breaker lets every
/// `on_error = "allow"` request through unchecked for that long.
pub const MAX_FAIL_OPEN_COOLDOWN: Duration = Duration::from_secs(60);

/// Shortest IdP timeout while a route fails open: a shorter one turns every check into a
/// timeout, and so every such request into an unchecked one.
pub const MIN_FAIL_OPEN_TIMEOUT: Duration = Duration::from_millis(250);

/// `on_error = "allow"` lets requests through only when the IdP is unreachable: it needs a
/// live check to be unreachable, a short breaker cooldown, and a timeout the IdP can meet.
fn fail_open_rules(
    fail_open: &[KeyPath],
    idp: Option<&IdpSettings>,
    abac: &AbacSettings,
    problems: &mut Problems,
) {
    if fail_open.is_empty() {
        return;
    }
    if let Some(i) = idp.filter(|i| i.timeout < MIN_FAIL_OPEN_TIMEOUT) {
        problems.add(
            &KeyPath::root("idp").key("timeout"),
            format!(
                "{:?} is too short while a route says on_error = \"allow\": checks that time out are let through unchecked; use at least {}ms",
                i.timeout,
                MIN_FAIL_OPEN_TIMEOUT.as_millis()
            ),
        );
    }
    if idp.is_some_and(|i| i.check_permission_url.is_none()) {
        for at in fail_open {
            problems.add(
                at,
                "\"allow\" needs idp.check_permission_url: without a live check a permission the token leaves to it is refused (403); remove on_error, or configure the check",
            );
        }
    }
    if abac.breaker_cooldown > MAX_FAIL_OPEN_COOLDOWN {
        problems.add(
            &KeyPath::root("abac").key("breaker_cooldown"),
            format!(
                "{:?} is too long while a route says on_error = \"allow\": an open breaker lets those routes through unchecked; use at most {}s",
                abac.breaker_cooldown,
                MAX_FAIL_OPEN_COOLDOWN.as_secs()
            ),
        );
    }
}

/// The longest API key the gateway reads from its header (see `identity::credentials`).
pub const MAX_API_KEY_LENGTH: usize = 512;

/// A count of a load bound: `default` when absent, and never 0 (that would refuse every call).
fn at_least_one(
    problems: &mut Problems,
    at: &KeyPath,
    key: &str,
    value: Option<u32>,
    default: u32,
) -> u32 {
    if value == Some(0) {
        problems.add(
            &at.key(key),
            "must be at least 1: 0 would refuse every call (raise it instead to allow more)",
        );
    }
    value.unwrap_or(default).max(1)
}

fn abac(f: AbacFile, problems: &mut Problems) -> AbacSettings {
    let at = KeyPath::root("abac");
    let ttl = |problems: &mut Problems, v: Option<&str>, key: &str, default: u64| match v {
        Some("0") | Some("0s") => Duration::ZERO,
        other => problems.duration(other, &at.key(key), Duration::from_secs(default)),
    };
    let allow_ttl = ttl(problems, f.allow_ttl.as_deref(), "allow_ttl", 30);
    let deny_ttl = ttl(problems, f.deny_ttl.as_deref(), "deny_ttl", 10);
    if f.breaker_failures == Some(0) {
        problems.add(&at.key("breaker_failures"), "must be at least 1");
    }
    let caller_checks = CallerBound {
        in_flight: at_least_one(
            problems,
            &at,
            "caller_checks_in_flight",
            f.caller_checks_in_flight,
            8,
        ),
        per_second: at_least_one(
            problems,
            &at,
            "caller_checks_per_second",
            f.caller_checks_per_second,
            50,
        ),
    };
    AbacSettings {
        caller_checks,
        allow_ttl,
        deny_ttl,
        cache_size: f.cache_size.unwrap_or(100_000).max(1),
        breaker_failures: f.breaker_failures.unwrap_or(5).max(1),
        breaker_cooldown: problems.duration(
            f.breaker_cooldown.as_deref(),
            &at.key("breaker_cooldown"),
            Duration::from_secs(10),
        ),
    }
}

fn api_keys(f: ApiKeysFile, idp_audiences: Vec<String>, problems: &mut Problems) -> ApiKeySettings {
    let at = KeyPath::root("api_keys");
    let header = f
        .header
        .unwrap_or_else(|| "x-api-key".into())
        .to_ascii_lowercase();
    if http::HeaderName::from_bytes(header.as_bytes()).is_err()
        || header == "authorization"
        || header == "cookie"
    {
        problems.add(
            &at.key("header"),
            format!("{header:?} is not a usable header name"),
        );
    }
    let audiences = f
        .audience
        .map(StringOrList::into_vec)
        .unwrap_or(idp_audiences);
    let key_min_length = f.key_min_length.unwrap_or(4);
    let key_max_length = f.key_max_length.unwrap_or(256);
    if key_min_length == 0 {
        problems.add(&at.key("key_min_length"), "must be at least 1");
    }
    if key_max_length > MAX_API_KEY_LENGTH {
        problems.add(
            &at.key("key_max_length"),
            format!("{key_max_length} is longer than the gateway reads an API key header ({MAX_API_KEY_LENGTH})"),
        );
    }
    if key_min_length > key_max_length {
        problems.add(
            &at.key("key_min_length"),
            format!("{key_min_length} is more than key_max_length ({key_max_length}): no key could be sent"),
        );
    }
    let exchanges = LoadBound {
        caller: CallerBound {
            in_flight: at_least_one(
                problems,
                &at,
                "caller_exchanges_in_flight",
                f.caller_exchanges_in_flight,
                4,
            ),
            per_second: at_least_one(
                problems,
                &at,
                "caller_exchanges_per_second",
                f.caller_exchanges_per_second,
                10,
            ),
        },
        total: CallerBound {
            in_flight: at_least_one(
                problems,
                &at,
                "exchanges_in_flight",
                f.exchanges_in_flight,
                64,
            ),
            per_second: at_least_one(
                problems,
                &at,
                "exchanges_per_second",
                f.exchanges_per_second,
                100,
            ),
        },
    };
    ApiKeySettings {
        key_min_length,
        key_max_length,
        exchanges,
        header,
        audiences,
        failure_ttl: problems.duration(
            f.failure_ttl.as_deref(),
            &at.key("failure_ttl"),
            Duration::from_secs(30),
        ),
        cache_size: f.cache_size.unwrap_or(100_000).max(1),
    }
}

fn identity_jwt(
    f: IdentityJwtFile,
    headers: &HeaderSettings,
    problems: &mut Problems,
) -> IdentityJwtSettings {
    let at = KeyPath::root("identity_jwt");
    let algorithm = match f.algorithm.as_deref() {
        None | Some("ES256") => Algorithm::ES256,
        Some("EdDSA") => Algorithm::EdDSA,
        Some(other) => {
            problems.add(
                &at.key("algorithm"),
                format!("{other:?} is not \"ES256\" or \"EdDSA\""),
            );
            Algorithm::ES256
        }
    };
    let key_file = f.key_file.map(PathBuf::from);
    if let Some(k) = &key_file {
        if !k.is_file() {
            problems.add(
                &at.key("key_file"),
                format!("{} is not a readable file", k.display()),
            );
        }
    }
    let previous_key_files: Vec<PathBuf> = f
        .previous_key_files
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    for (i, k) in previous_key_files.iter().enumerate() {
        if !k.is_file() {
            problems.add(
                &at.key("previous_key_files").index(i),
                format!("{} is not a readable file", k.display()),
            );
        }
    }
    let header = f
        .header
        .unwrap_or_else(|| format!("{}jwt", headers.prefix))
        .to_ascii_lowercase();
    if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        problems.add(
            &at.key("header"),
            format!("{header:?} is not a valid header name"),
        );
    }
    IdentityJwtSettings {
        algorithm,
        key_file,
        previous_key_files,
        lifetime: problems.duration(
            f.lifetime.as_deref(),
            &at.key("lifetime"),
            Duration::from_secs(60),
        ),
        issuer: f.issuer.unwrap_or_else(|| "authgate".into()),
        header,
    }
}
