//! The route table: (host, decoded path, method) → route, most specific path first.
//!
//! Patterns are literal segments, `{param}` captures and a final `*` for any tail. A literal
//! beats a capture, a capture beats a tail (matchit's priorities); a route for the request's
//! host beats a route for any host. The most specific path decides alone: a method it does not
//! list answers 405, it never falls through to a less specific route (a method list means
//! "only these"). [`RouteTable::resolve`] adds the checks that keep the route the one every
//! upstream framework would serve: `;` parameters and letter case may not change it.

use crate::authz::path::{self, NormalPath, PathError, WindowsSpelling};
use crate::config::model::{Access, ClientSettings, Config, RouteSpec};
use crate::config::span::KeyPath;
use crate::config::Findings;
use crate::identity::browser::{self, ProtectedPages};
use crate::pattern::PathPattern;
use http::Method;
use std::fmt;

/// The result of matching a request.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    /// A route, with its captures (decoded) in pattern order.
    Found {
        /// The route.
        route: &'a RouteSpec,
        /// Index of the route in the config.
        index: usize,
        /// Captured values by name.
        params: Vec<(&'a str, String)>,
    },
    /// The path is routed, but not for this method.
    MethodNotAllowed {
        /// Methods the path allows.
        allowed: Vec<Method>,
    },
    /// No route for this path.
    NotFound,
}

/// Why a path that matched a route is still refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path has `;` parameters and its route does not accept them.
    #[error("the path contains a ; parameter, which this route does not accept: remove it")]
    ParamsRefused,
    /// Dropping the `;` parameters, as Tomcat, Jetty and Spring do, reaches another route or entity.
    #[error("the path's ; parameters change which route or entity it reaches: remove them")]
    ParamsChangeRoute,
    /// Ignoring letter case, as a case-insensitive upstream does, reaches another route.
    #[error(
        "the path reaches another route when letter case is ignored: use the path's canonical case"
    )]
    CaseChangesRoute,
    /// Dropping the final extension, as Rails and Spring do (`/x.json` is `/x`), reaches another route.
    #[error("the path reaches another route without its final extension (/x.json is served as /x by Rails and Spring): request the path the route is for")]
    SuffixChangesRoute,
    /// A segment that Windows serves as another path (the route's upstream has `windows_paths`).
    #[error(transparent)]
    Windows(#[from] WindowsSpelling),
    /// The path without its parameters is not a valid path.
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Methods in the order `Allow` lists them.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// One route's claim on a router key.
#[derive(Debug)]
struct Claim {
    route: usize,
    /// `None`: every method, unknown verbs too.
    methods: Option<Vec<Method>>,
    /// The route's own pattern (not a trailing-slash or empty-tail variant of it).
    main: bool,
}

impl Claim {
    fn allows(&self, m: &Method) -> bool {
        self.methods.as_ref().is_none_or(|ms| ms.contains(m))
    }
}

/// The routes of one host (or of any host): one matchit router over the pattern keys; each key
/// holds every route claiming it, main claims first, then in file order.
#[derive(Default)]
struct HostTable {
    router: matchit::Router<usize>,
    entries: Vec<Vec<Claim>>,
    keys: crate::lookup::ConfigMap<String, usize>,
}

impl fmt::Debug for HostTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostTable")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Outcome of a lookup in one host table.
enum Lookup<'t, 'p> {
    Route(usize, matchit::Params<'t, 'p>),
    NotAllowed(Vec<Method>),
    Miss,
}

impl HostTable {
    fn lookup<'t, 'p>(&'t self, path: &'p str, method: &Method) -> Lookup<'t, 'p> {
        let Ok(m) = self.router.at(path) else {
            return Lookup::Miss;
        };
        let Some(claims) = self.entries.get(*m.value) else {
            return Lookup::Miss;
        };
        if let Some(c) = claims.iter().find(|c| c.allows(method)) {
            return Lookup::Route(c.route, m.params);
        }
        // A GET route also serves HEAD, unless another route claims HEAD here.
        if *method == Method::HEAD {
            if let Some(c) = claims.iter().find(|c| c.allows(&Method::GET)) {
                return Lookup::Route(c.route, m.params);
            }
        }
        Lookup::NotAllowed(allowed(claims))
    }
}

/// The methods a key's claims allow, in `Allow` order (HEAD wherever GET is).
fn allowed(claims: &[Claim]) -> Vec<Method> {
    METHODS
        .iter()
        .filter(|m| {
            claims
                .iter()
                .any(|c| c.allows(m) || (**m == Method::HEAD && c.allows(&Method::GET)))
        })
        .cloned()
        .collect()
}

/// Every host's table.
#[derive(Debug, Default)]
struct Tables {
    by_host: crate::lookup::ConfigMap<String, HostTable>,
    any_host: HostTable,
}

impl Tables {
    /// Indexes routes (patterns case-folded when `fold`); conflicts are (route index, message).
    fn build(routes: &[RouteSpec], fold: bool) -> (Tables, Vec<(usize, String)>) {
        let mut t = Tables::default();
        let mut conflicts: Vec<(usize, String)> = Vec::new();
        // Main keys of every route first, so an explicit route wins over another's variant.
        for pass in 0..2 {
            for (i, r) in routes.iter().enumerate() {
                let table = match &r.host {
                    Some(h) => t.by_host.entry(h.clone()).or_default(),
                    None => &mut t.any_host,
                };
                let keys = r.path.router_keys(fold);
                let chosen = if pass == 0 {
                    keys.get(..1)
                } else {
                    keys.get(1..)
                }
                .unwrap_or_default();
                for key in chosen {
                    let entry = match table.keys.get(key) {
                        Some(&e) => e,
                        None => {
                            let e = table.entries.len();
                            if let Err(err) = table.router.insert(key.clone(), e) {
                                if pass == 0 {
                                    conflicts.push((
                                        i,
                                        format!("{:?} cannot be routed: {err}", r.path.as_str()),
                                    ));
                                }
                                continue;
                            }
                            table.keys.insert(key.clone(), e);
                            table.entries.push(Vec::new());
                            e
                        }
                    };
                    let Some(claims) = table.entries.get_mut(entry) else {
                        continue;
                    };
                    if pass == 0 {
                        let overlapping = claims.iter().find(|c| {
                            c.main && methods_overlap(c.methods.as_deref(), r.methods.as_deref())
                        });
                        if let Some(other) = overlapping.and_then(|c| routes.get(c.route)) {
                            let message = if fold && other.path.as_str() != r.path.as_str() {
                                format!(
                                    "route {:?} overlaps route {:?} when letter case is ignored ({} and {}): case-insensitive upstreams serve them as one path",
                                    r.name,
                                    other.name,
                                    r.path.as_str(),
                                    other.path.as_str()
                                )
                            } else {
                                format!("route {:?} overlaps route {:?} (same host, path and method): give them different methods or paths", r.name, other.name)
                            };
                            if !conflicts.iter().any(|(c, _)| *c == i) {
                                conflicts.push((i, message));
                            }
                            continue;
                        }
                    }
                    claims.push(Claim {
                        route: i,
                        methods: r.methods.clone(),
                        main: pass == 0,
                    });
                }
            }
        }
        (t, conflicts)
    }

    /// The most specific path decides: host-specific table first, any-host table next.
    fn lookup<'t, 'p>(
        &'t self,
        host: Option<&str>,
        path: &'p str,
        method: &Method,
    ) -> Lookup<'t, 'p> {
        if let Some(table) = host.and_then(|h| self.by_host.get(h)) {
            match table.lookup(path, method) {
                Lookup::Miss => {}
                found => return found,
            }
        }
        self.any_host.lookup(path, method)
    }
}

fn methods_overlap(a: Option<&[Method]>, b: Option<&[Method]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

/// Routes indexed for lookup.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<RouteSpec>,
    exact: Tables,
    /// The same routes with case-folded literals: what a case-insensitive upstream serves.
    folded: Tables,
    /// Some pattern has an uppercase letter: even a lowercase path needs the folded check.
    uppercase_patterns: bool,
    /// With shadow routes (`enforce = false`): the enforced routes indexed apart, and each
    /// one's index among all routes ([`RouteTable::hidden_by_shadow`]).
    enforced: Option<(Box<RouteTable>, Vec<usize>)>,
}

impl ProtectedPages for RouteTable {
    fn protected(&self, url: &str) -> bool {
        let Ok(url) = url::Url::parse(url) else {
            return true;
        };
        // The gateway answers its own endpoints (the signed-out page) before any route.
        if url.path().starts_with(browser::PREFIX) {
            return false;
        }
        let Ok(path) = path::normalize(url.path()) else {
            return true;
        };
        match self.resolve(url.host_str(), &path, &Method::GET) {
            Ok(RouteMatch::Found { route, .. }) => route.access != Access::Public,
            Ok(_) => false,
            // A path no reading can route safely is no place to send a browser.
            Err(_) => true,
        }
    }
}

impl RouteTable {
    /// Indexes routes; `Err` lists (route index, message) for routes that conflict.
    pub fn build(routes: &[RouteSpec]) -> Result<RouteTable, Vec<(usize, String)>> {
        let (exact, mut conflicts) = Tables::build(routes, false);
        let (folded, folded_conflicts) = Tables::build(routes, true);
        for (i, message) in folded_conflicts {
            if !conflicts.iter().any(|(c, _)| *c == i) {
                conflicts.push((i, message));
            }
        }
        if conflicts.is_empty() {
            // Fewer routes than a table without conflicts cannot conflict.
            let enforced = routes.iter().any(|r| !r.enforce).then(|| {
                let (index, kept): (Vec<usize>, Vec<RouteSpec>) = routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.enforce)
                    .map(|(i, r)| (i, r.clone()))
                    .unzip();
                RouteTable::build(&kept)
                    .ok()
                    .map(|table| (Box::new(table), index))
            });
            Ok(RouteTable {
                routes: routes.to_vec(),
                exact,
                folded,
                uppercase_patterns: routes.iter().any(|r| r.path.has_uppercase()),
                enforced: enforced.flatten(),
            })
        } else {
            Err(conflicts)
        }
    }

    /// The route table of a validated config (built once, by whoever loads the config: see
    /// [`crate::config::load_then`]), or what makes the config unusable, as the keys to blame:
    /// routes that conflict (`routes[i].path`), and a client whose `post_logout_redirect` is a
    /// page that needs a sign-in (after logout the browser would go straight back to the IdP).
    pub fn from_config(config: &Config) -> Result<RouteTable, Findings> {
        let table = RouteTable::build(&config.routes).map_err(|conflicts| {
            conflicts
                .into_iter()
                .map(|(i, message)| (KeyPath::root("routes").index(i).key("path"), message))
                .collect::<Findings>()
        })?;
        let findings: Findings = config
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, client)| {
                let route = table.protected_logout_target(client)?;
                Some((
                    KeyPath::root("clients").index(i).key("post_logout_redirect"),
                    format!("{:?} is served by route {route:?}, which needs a sign-in: after logout the browser would go straight back to the identity provider; name a public page or keep the default \"/_authgate/signed-out\"", client.post_logout_redirect),
                ))
            })
            .collect();
        if findings.is_empty() {
            Ok(table)
        } else {
            Err(findings)
        }
    }

    /// The name of the protected route (one needing a sign-in) that serves the client's
    /// `post_logout_redirect`, on any host the table knows for the client's origins.
    fn protected_logout_target(&self, client: &ClientSettings) -> Option<&str> {
        let base = client
            .origins
            .first()
            .map_or("http://localhost", |o| o.as_str());
        let url = url::Url::parse(base)
            .ok()?
            .join(&client.post_logout_redirect)
            .ok()?;
        // The gateway answers its own endpoints before any route is matched.
        if url.path().starts_with(browser::PREFIX) {
            return None;
        }
        let path = path::normalize(url.path()).ok()?;
        let hosts = std::iter::once(None).chain(
            client
                .origins
                .iter()
                .filter_map(|o| url::Url::parse(o.as_str()).ok())
                .map(|u| u.host_str().map(str::to_string)),
        );
        for host in hosts {
            if let Ok(RouteMatch::Found { route, .. }) =
                self.resolve(host.as_deref(), &path, &Method::GET)
            {
                if route.access != Access::Public {
                    return Some(&route.name);
                }
            }
        }
        None
    }

    /// All routes.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// Finds the route for a decoded, normalised path. `host` is the request's host, lowercase,
    /// no port, no trailing dot.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> RouteMatch<'_> {
        match self.exact.lookup(host, path, method) {
            Lookup::Route(index, m) => match self.routes.get(index) {
                Some(route) => {
                    let params = route
                        .path
                        .params()
                        .zip(m.iter())
                        .map(|(n, (_, v))| (n, v.to_string()))
                        .collect();
                    RouteMatch::Found {
                        route,
                        index,
                        params,
                    }
                }
                None => RouteMatch::NotFound,
            },
            Lookup::NotAllowed(allowed) => RouteMatch::MethodNotAllowed { allowed },
            Lookup::Miss => RouteMatch::NotFound,
        }
    }

    /// The enforced route a shadow route (`enforce = false`) hides from this request: the one
    /// that would serve it were the shadow routes absent, if it decides something (not
    /// public). A shadow rule only trials its own decision; the rule it hides still applies, so
    /// `enforce = false` on `/api/admin/*` under an enforced `/api/*` never makes the admin
    /// paths public. `Ok(None)`: no route but shadow ones serves the request.
    pub fn hidden_by_shadow(
        &self,
        host: Option<&str>,
        path: &NormalPath<'_>,
        method: &Method,
    ) -> Result<Option<RouteMatch<'_>>, RouteError> {
        let Some((table, index)) = &self.enforced else {
            return Ok(None);
        };
        match table.resolve(host, path, method)? {
            RouteMatch::Found {
                index: at, params, ..
            } => {
                let Some((index, route)) =
                    index.get(at).and_then(|&i| Some((i, self.routes.get(i)?)))
                else {
                    return Ok(None);
                };
                Ok(
                    (route.access != Access::Public).then_some(RouteMatch::Found {
                        route,
                        index,
                        params,
                    }),
                )
            }
            _ => Ok(None),
        }
    }

    /// Finds the route for a normalised request path and checks that every reading of the path
    /// an upstream framework might make reaches that same route: with its `;` parameters
    /// dropped (only on routes with `path_params`; otherwise `;` is refused), with letter
    /// case ignored, and, as the route's upstream reads paths ([`crate::config::model::UpstreamReads`]), without its
    /// final extension (`format_suffixes`); Windows spellings are refused (`windows_paths`).
    pub fn resolve(
        &self,
        host: Option<&str>,
        path: &NormalPath<'_>,
        method: &Method,
    ) -> Result<RouteMatch<'_>, RouteError> {
        let found = self.find(host, &path.decoded, method);
        let RouteMatch::Found {
            route,
            index,
            params,
        } = found
        else {
            return if path.has_params {
                Err(RouteError::ParamsRefused)
            } else {
                Ok(found)
            };
        };
        self.same_ignoring_case(host, &path.decoded, method, index)?;
        self.same_as_upstream_reads(host, &path.decoded, method, route, index)?;
        if !path.has_params {
            return Ok(RouteMatch::Found {
                route,
                index,
                params,
            });
        }
        if !route.path_params {
            return Err(RouteError::ParamsRefused);
        }
        let stripped = path::strip_params(&path.forward)?;
        let RouteMatch::Found {
            index: again,
            params: stripped_params,
            ..
        } = self.find(host, &stripped.decoded, method)
        else {
            return Err(RouteError::ParamsChangeRoute);
        };
        let same_captures = params.len() == stripped_params.len()
            && params
                .iter()
                .zip(&stripped_params)
                .all(|((_, v), (_, s))| v.split(';').next() == Some(s.as_str()));
        if again != index || !same_captures {
            return Err(RouteError::ParamsChangeRoute);
        }
        self.same_ignoring_case(host, &stripped.decoded, method, index)?;
        self.same_as_upstream_reads(host, &stripped.decoded, method, route, index)?;
        Ok(RouteMatch::Found {
            route,
            index,
            params: stripped_params,
        })
    }

    /// `Err` when the path, ASCII-lowercased, reaches another route under case-folded patterns.
    /// No allocation for a lowercase path when no pattern has uppercase letters.
    fn same_ignoring_case(
        &self,
        host: Option<&str>,
        decoded: &str,
        method: &Method,
        index: usize,
    ) -> Result<(), RouteError> {
        let upper = decoded.bytes().any(|b| b.is_ascii_uppercase());
        if !upper && !self.uppercase_patterns {
            return Ok(());
        }
        let lower = if upper {
            std::borrow::Cow::Owned(decoded.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(decoded)
        };
        match self.folded.lookup(host, &lower, method) {
            Lookup::Route(i, _) if i == index => Ok(()),
            _ => Err(RouteError::CaseChangesRoute),
        }
    }

    /// `Err` when the route's upstream would read `decoded` as another path: a Windows spelling
    /// (`windows_paths`), or (`format_suffixes`) a final extension whose removal reaches another
    /// route or method list. Every prefix of the last segment ending before one of its dots
    /// (not a leading one) is tried, since Spring drops `.tar.gz` whole and Rails one format;
    /// a path the table does not route at all is no concern. A route whose pattern names the
    /// extension itself (`/.well-known/jwks.json`) is the operator's word for that file.
    fn same_as_upstream_reads(
        &self,
        host: Option<&str>,
        decoded: &str,
        method: &Method,
        route: &RouteSpec,
        index: usize,
    ) -> Result<(), RouteError> {
        let reads = &route.upstream_reads;
        // Both checks need a `.` (suffixes) or one of the Windows bytes: most paths have none,
        // and one scan on every request says so.
        if !(reads.windows_paths || reads.format_suffixes)
            || !path::has_windows_byte(decoded.as_bytes())
        {
            return Ok(());
        }
        if reads.windows_paths {
            path::windows_spelling(decoded)?;
        }
        if !reads.format_suffixes {
            return Ok(());
        }
        let trimmed = decoded.strip_suffix('/').unwrap_or(decoded);
        let start = trimmed
            .as_bytes()
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |i| i + 1);
        let last = trimmed.get(start..).unwrap_or_default();
        if !last.get(1..).is_some_and(|rest| rest.contains('.'))
            || route.path.last_literal() == Some(last)
        {
            return Ok(());
        }
        for (dot, _) in last.match_indices('.').filter(|(i, _)| *i > 0) {
            let Some(without) = trimmed.get(..start + dot) else {
                continue;
            };
            match self.find(host, without, method) {
                RouteMatch::Found { index: other, .. } if other != index => {
                    return Err(RouteError::SuffixChangesRoute)
                }
                RouteMatch::MethodNotAllowed { .. } => return Err(RouteError::SuffixChangesRoute),
                _ => {}
            }
        }
        Ok(())
    }

    /// Warnings for `authgate check`: routes whose method list now hides a less specific route
    /// that used to serve the other methods on their path.
    pub fn shadow_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen: Vec<(Option<&str>, usize)> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.methods.is_none() {
                continue;
            }
            let sample = r.path.sample();
            let table = match &r.host {
                Some(h) => self.exact.by_host.get(h),
                None => Some(&self.exact.any_host),
            };
            let Some(table) = table else { continue };
            let Ok(m) = table.router.at(&sample) else {
                continue;
            };
            let Some(claims) = table.entries.get(*m.value) else {
                continue;
            };
            let key = (r.host.as_deref(), *m.value);
            if seen.contains(&key)
                || !claims.iter().any(|c| c.route == i && c.main)
                || claims.iter().any(|c| c.methods.is_none())
            {
                continue;
            }
            seen.push(key);
            let here = allowed(claims);
            let shadowed = self.routes.iter().enumerate().find(|(j, s)| {
                !claims.iter().any(|c| c.route == *j)
                    && (s.host.is_none() || s.host == r.host)
                    && s.methods
                        .as_ref()
                        .is_none_or(|ms| ms.iter().any(|m| !here.contains(m)))
                    && pattern_matches(&s.path, &sample)
            });
            if let Some((_, s)) = shadowed {
                let owners: Vec<String> = claims
                    .iter()
                    .filter(|c| c.main)
                    .filter_map(|c| self.routes.get(c.route))
                    .map(|o| format!("{:?}", o.name))
                    .collect();
                let mut listed: Vec<&Method> = Vec::new();
                for m in claims
                    .iter()
                    .filter(|c| c.main)
                    .filter_map(|c| c.methods.as_ref())
                    .flatten()
                {
                    if !listed.contains(&m) {
                        listed.push(m);
                    }
                }
                let list: Vec<&str> = METHODS
                    .iter()
                    .filter(|m| listed.contains(m))
                    .map(Method::as_str)
                    .collect();
                let who = if owners.len() == 1 {
                    format!("route {} allows", owners.join(""))
                } else {
                    format!("routes {} allow", owners.join(", "))
                };
                out.push(format!(
                    "{who} only {} on {}; other methods there answer 405 (they no longer fall through to route {:?} {})",
                    list.join(", "),
                    r.path.as_str(),
                    s.name,
                    s.path.as_str()
                ));
            }
        }
        out
    }
}

/// True when `pattern` (with its variants) matches `path`.
fn pattern_matches(pattern: &PathPattern, path: &str) -> bool {
    let mut router = matchit::Router::new();
    for key in pattern.router_keys(false) {
        let _ = router.insert(key, ());
    }
    router.at(path).is_ok()
}

#[cfg(test)]
mod tests {
    /// What the route table finds in a valid config is reported like the validator's problems:
    /// file, line, key, rule.
    #[test]
    fn config_findings_name_file_line_and_key() {
        use crate::config::tests::{env, VALID};
        use crate::config::{parse_then, ConfigError};
        let problems = |text: &str| match parse_then(
            "test.toml",
            text,
            &env,
            super::RouteTable::from_config,
        ) {
            Ok(_) => vec![],
            Err(ConfigError::Invalid(list)) => list.iter().map(|l| l.to_string()).collect(),
            Err(e) => vec![e.to_string()],
        };
        assert_eq!(problems(VALID), Vec::<String>::new());
        let overlapping = VALID.to_string() + "\n[[routes]]\npath = \"/invoices/{invoice}\"\nupstream = \"billing-api\"\nauth = \"none\"\n";
        let p = problems(&overlapping);
        assert_eq!(p.len(), 1, "{p:#?}");
        let line = overlapping
            .lines()
            .position(|l| l == "path = \"/invoices/{invoice}\"")
            .unwrap()
            + 1;
        assert!(p[0].starts_with(&format!("test.toml:{line}: routes[1].path: route \"ANY /invoices/{{invoice}}\" overlaps route \"GET /invoices/{{id}}\"")), "{}", p[0]);
        let secret = "client_secret = \"${BILLING_SECRET}\"";
        let protected_logout = VALID.replacen(
            secret,
            &format!("{secret}\npost_logout_redirect = \"/invoices/1\""),
            1,
        );
        let p = problems(&protected_logout);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].contains("clients[0].post_logout_redirect: \"/invoices/1\" is served by route \"GET /invoices/{id}\", which needs a sign-in"), "{}", p[0]);
        // The validator alone leaves the route table's findings to whoever builds the table.
        assert!(crate::config::parse("test.toml", &overlapping, &env).is_ok());
    }

    use super::*;
    use crate::config::model::Access;

    fn route(name: &str, host: Option<&str>, path: &str, methods: Option<&[&str]>) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            host: host.map(str::to_string),
            path: PathPattern::parse(path).unwrap(),
            methods: methods.map(|ms| {
                ms.iter()
                    .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
                    .collect()
            }),
            upstream: 0,
            access: Access::Public,
            attributes: vec![],
            body_limit: 1024,
            allow_on_error: false,
            signed_identity: false,
            clients: None,
            path_params: false,
            forward_session_token: false,
            websocket_close_at_expiry: false,
            enforce: true,
            upstream_reads: Default::default(),
        }
    }

    fn found(t: &RouteTable, host: Option<&str>, path: &str, method: &str) -> String {
        match t.find(host, path, &Method::from_bytes(method.as_bytes()).unwrap()) {
            RouteMatch::Found { route, params, .. } => {
                let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if p.is_empty() {
                    route.name.clone()
                } else {
                    format!("{} {}", route.name, p.join(","))
                }
            }
            RouteMatch::MethodNotAllowed { allowed } => format!("405 {allowed:?}"),
            RouteMatch::NotFound => "404".into(),
        }
    }

    #[test]
    fn most_specific_wins() {
        let t = RouteTable::build(&[
            route("catchall", None, "/*", None),
            route("api", None, "/api/*", None),
            route("invoice", None, "/api/invoices/{id}", Some(&["GET"])),
            route(
                "invoice-write",
                None,
                "/api/invoices/{invoice}",
                Some(&["PUT", "DELETE"]),
            ),
            route("invoice-new", None, "/api/invoices/new", None),
            route("admin-host", Some("admin.example.com"), "/api/*", None),
            route("root", None, "/", None),
            route("lines", None, "/api/invoices/{id}/lines/{line}", None),
        ])
        .unwrap();
        let cases = [
            (None, "/api/invoices/42", "GET", "invoice id=42"),
            (None, "/api/invoices/42", "HEAD", "invoice id=42"),
            (None, "/api/invoices/42", "PUT", "invoice-write invoice=42"),
            // The most specific path decides alone: other methods answer 405, never `api`.
            (
                None,
                "/api/invoices/42",
                "POST",
                "405 [GET, HEAD, PUT, DELETE]",
            ),
            (
                None,
                "/api/invoices/42",
                "PROPFIND",
                "405 [GET, HEAD, PUT, DELETE]",
            ),
            (None, "/api/invoices/new", "PROPFIND", "invoice-new"),
            (None, "/api/invoices/new", "GET", "invoice-new"),
            (None, "/api/invoices/42/", "GET", "invoice id=42"),
            (None, "/api/invoices/7/lines/3", "GET", "lines id=7,line=3"),
            (None, "/api/other/deep/path", "GET", "api"),
            (None, "/api", "GET", "api"),
            (None, "/api/", "GET", "api"),
            (None, "/", "GET", "root"),
            (None, "/elsewhere", "GET", "catchall"),
            (
                Some("admin.example.com"),
                "/api/invoices/42",
                "GET",
                "admin-host",
            ),
            (Some("admin.example.com"), "/elsewhere", "GET", "catchall"),
            (
                Some("other.example.com"),
                "/api/invoices/42",
                "GET",
                "invoice id=42",
            ),
        ];
        for (host, path, method, want) in cases {
            assert_eq!(
                found(&t, host, path, method),
                want,
                "{host:?} {method} {path}"
            );
        }
    }

    #[test]
    fn method_not_allowed_and_not_found() {
        let t = RouteTable::build(&[
            route("get", None, "/a/{id}", Some(&["GET"])),
            route("post", None, "/b", Some(&["POST"])),
        ])
        .unwrap();
        assert_eq!(found(&t, None, "/a/1", "DELETE"), "405 [GET, HEAD]");
        assert_eq!(found(&t, None, "/b", "GET"), "405 [POST]");
        assert_eq!(found(&t, None, "/c", "GET"), "404");
        assert_eq!(found(&t, None, "/a", "GET"), "404");
        assert_eq!(found(&t, None, "/a/1/2", "GET"), "404");
    }

    #[test]
    fn overlapping_routes_are_refused() {
        let err = RouteTable::build(&[
            route("one", None, "/a/{x}", Some(&["GET"])),
            route("two", None, "/a/{y}", None),
        ])
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].1.contains("\"two\" overlaps route \"one\""),
            "{}",
            err[0].1
        );
        // Same path on different hosts, or different methods, is fine.
        RouteTable::build(&[
            route("one", None, "/a", Some(&["GET"])),
            route("two", None, "/a", Some(&["POST"])),
            route("three", Some("h"), "/a", None),
        ])
        .unwrap();
    }

    #[test]
    fn pattern_rules() {
        for bad in [
            "a",
            "/a/*/b",
            "/a/{}",
            "/a/{x}/{x}",
            "/a//b",
            "/a/../b",
            "/a/x{y}",
            "/a/%2e",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "/",
            "/*",
            "/a/",
            "/a/{id}/b",
            "/static/*",
            "/.well-known/jwks.json",
        ] {
            assert!(PathPattern::parse(good).is_ok(), "{good}");
        }
    }

    fn spec(
        name: &str,
        host: Option<&str>,
        path: &str,
        methods: Option<&[&str]>,
        path_params: bool,
    ) -> RouteSpec {
        RouteSpec {
            path_params,
            ..route(name, host, path, methods)
        }
    }

    #[test]
    fn method_lists_mean_only_these() {
        let t = RouteTable::build(&[
            route("catchall", None, "/*", None),
            route("invoice", None, "/invoices/{id}", Some(&["GET", "DELETE"])),
            route("head", None, "/files/{id}", Some(&["HEAD"])),
            route("files", None, "/files/{id}", Some(&["GET"])),
            route("host-get", Some("h.example"), "/x/*", Some(&["GET"])),
            route("any-x", None, "/x/*", None),
            route("variant", None, "/v/", Some(&["POST"])),
            route("main", None, "/v", Some(&["GET"])),
        ])
        .unwrap();
        let cases = [
            (None, "/invoices/1", "GET", "invoice id=1"),
            (None, "/invoices/1", "HEAD", "invoice id=1"),
            (None, "/invoices/1", "DELETE", "invoice id=1"),
            (None, "/invoices/1", "PUT", "405 [GET, HEAD, DELETE]"),
            (None, "/invoices/1", "POST", "405 [GET, HEAD, DELETE]"),
            (None, "/invoices/1", "BREW", "405 [GET, HEAD, DELETE]"),
            (None, "/invoices/1/", "PATCH", "405 [GET, HEAD, DELETE]"),
            (None, "/invoices/1/2", "PUT", "catchall"),
            (None, "/invoices", "PUT", "catchall"),
            // A route claiming HEAD keeps it from the GET route.
            (None, "/files/1", "HEAD", "head id=1"),
            (None, "/files/1", "GET", "files id=1"),
            (None, "/files/1", "PUT", "405 [GET, HEAD]"),
            // A host-specific route that matches the path but not the method is 405 too.
            (Some("h.example"), "/x/a", "GET", "host-get"),
            (Some("h.example"), "/x/a", "POST", "405 [GET, HEAD]"),
            (Some("other.example"), "/x/a", "POST", "any-x"),
            // A key's main claim beats another route's trailing-slash variant.
            (None, "/v", "GET", "main"),
            (None, "/v", "POST", "variant"),
            (None, "/v/", "POST", "variant"),
            (None, "/v/", "GET", "main"),
        ];
        for (host, path, method, want) in cases {
            assert_eq!(
                found(&t, host, path, method),
                want,
                "{host:?} {method} {path}"
            );
        }
    }

    fn resolved(t: &RouteTable, path: &str, method: &str) -> String {
        let n = match path::normalize(path) {
            Ok(n) => n,
            Err(e) => return format!("400 {e:?}"),
        };
        match t.resolve(None, &n, &Method::from_bytes(method.as_bytes()).unwrap()) {
            Ok(RouteMatch::Found { route, params, .. }) => {
                let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if p.is_empty() {
                    route.name.clone()
                } else {
                    format!("{} {}", route.name, p.join(","))
                }
            }
            Ok(RouteMatch::MethodNotAllowed { allowed }) => format!("405 {allowed:?}"),
            Ok(RouteMatch::NotFound) => "404".into(),
            Err(e) => format!("400 {e:?}"),
        }
    }

    #[test]
    fn every_reading_of_the_path_reaches_the_same_route() {
        let t = RouteTable::build(&[
            route("catchall", None, "/*", None),
            route("public", None, "/public/*", None),
            route("admin", None, "/admin/*", None),
            route("cafe", None, "/café/*", None),
            spec("legacy", None, "/legacy/*", None, true),
            spec("legacy-doc", None, "/legacy/docs/{doc}/*", None, true),
            spec("jsp", None, "/jsp/{id}", None, true),
            route("invoice", None, "/invoices/{id}", Some(&["GET", "DELETE"])),
            route("new", None, "/invoices/new", None),
            route("Reports", None, "/Reports/*", None),
        ])
        .unwrap();
        let cases = [
            ("/public/x", "public"),
            ("/admin/x", "admin"),
            // Routed on the decoded path.
            ("/caf%C3%A9/x", "cafe"),
            ("/caf%c3%a9/x", "cafe"),
            ("/%61dmin/x", "admin"),
            ("/invoices/%31", "invoice id=1"),
            ("/invoices/a%20b", "invoice id=a b"),
            // `;` is refused unless the route accepts it.
            ("/public/..;/admin/x", "400 ParamsRefused"),
            ("/public/x;a=1", "400 ParamsRefused"),
            ("/public/x%3Ba=1", "400 EncodedSemicolon"),
            ("/invoices/1;x", "400 ParamsRefused"),
            ("/nowhere;x", "400 ParamsRefused"),
            // With path_params, dropping them must reach the same route and entity.
            ("/legacy/a;jsessionid=1/b", "legacy"),
            ("/legacy/..;/admin/x", "400 ParamsChangeRoute"),
            ("/legacy/a/..;/..;/admin", "400 ParamsChangeRoute"),
            ("/legacy/docs/1;v=2/x", "legacy-doc doc=1"),
            ("/legacy/docs/1/..;/2/x", "400 ParamsChangeRoute"),
            ("/jsp/7;jsessionid=abc", "jsp id=7"),
            ("/jsp/7/..;", "400 ParamsRefused"),
            // Letter case may not change the route (case-insensitive upstreams).
            ("/ADMIN/x", "400 CaseChangesRoute"),
            ("/Admin/x", "400 CaseChangesRoute"),
            ("/Public/x", "400 CaseChangesRoute"),
            ("/admin/X", "admin"),
            ("/invoices/NEW", "400 CaseChangesRoute"),
            ("/invoices/ABC", "invoice id=ABC"),
            ("/Reports/x", "Reports"),
            ("/reports/x", "400 CaseChangesRoute"),
            ("/REPORTS/x", "400 CaseChangesRoute"),
            ("/CAF%C3%A9/x", "400 CaseChangesRoute"),
            ("/Other", "catchall"),
        ];
        for (path, want) in cases {
            assert_eq!(resolved(&t, path, "GET"), want, "{path}");
        }
        assert_eq!(
            resolved(&t, "/invoices/1", "PUT"),
            "405 [GET, HEAD, DELETE]"
        );
    }

    #[test]
    fn spellings_the_upstream_folds_may_not_change_the_route() {
        use crate::config::model::UpstreamReads;
        let lenient = |r: RouteSpec| RouteSpec {
            upstream_reads: UpstreamReads {
                windows_paths: false,
                format_suffixes: false,
                method_overrides: false,
            },
            ..r
        };
        let t = RouteTable::build(&[
            route("catchall", None, "/*", None),
            route("private", None, "/private/*", None),
            route("api", None, "/api/*", None),
            route("invoice", None, "/invoices/{id}", Some(&["GET"])),
            route("new", None, "/invoices/new", Some(&["GET"])),
            route("jwks", None, "/.well-known/jwks.json", None),
            route("keys", None, "/.well-known/jwks", None),
            route("static", None, "/static/*", None),
            route("upload", None, "/upload", Some(&["POST"])),
            lenient(route("files", None, "/files/*", None)),
            lenient(route("iis", None, "/iis/*", None)),
            route("iis-private", None, "/iis/private/*", None),
        ])
        .unwrap();
        let cases = [
            // Windows: a trailing dot or space, 8.3 short names, NTFS streams.
            ("/private./x", "400 Windows(TrailingDotOrSpace)"),
            ("/private%2e/x", "400 Windows(TrailingDotOrSpace)"),
            ("/private%20/x", "400 Windows(TrailingDotOrSpace)"),
            ("/private.%20./x", "400 Windows(TrailingDotOrSpace)"),
            ("/private/x.", "400 Windows(TrailingDotOrSpace)"),
            ("/x/...", "400 Windows(TrailingDotOrSpace)"),
            ("/PRIVAT~1/x", "400 Windows(ShortName)"),
            ("/privat~1/x", "400 Windows(ShortName)"),
            ("/~1/x", "400 Windows(ShortName)"),
            ("/PRIVAT~12.HTM", "400 Windows(ShortName)"),
            ("/private::$INDEX_ALLOCATION/x", "400 Windows(Stream)"),
            ("/private:$I30:$INDEX_ALLOCATION/x", "400 Windows(Stream)"),
            ("/x.aspx::$DATA", "400 Windows(Stream)"),
            // What is no Windows spelling passes.
            ("/private/x", "private"),
            ("/~user/x", "catchall"),
            ("/a~1b/x", "catchall"),
            ("/a/.hidden", "catchall"),
            ("/a/..b", "catchall"),
            ("/a%20b/x", "catchall"),
            ("/v1/projects:batchGet", "catchall"),
            // A final extension may not change the route (Rails, Spring serve /x.json as /x).
            ("/api.json", "400 SuffixChangesRoute"),
            ("/api.json/", "400 SuffixChangesRoute"),
            ("/private.tar.gz", "400 SuffixChangesRoute"),
            ("/invoices/new.json", "400 SuffixChangesRoute"),
            ("/upload.json", "400 SuffixChangesRoute"),
            ("/invoices/1.json", "invoice id=1.json"),
            ("/static/app.js", "static"),
            ("/app.js", "catchall"),
            ("/.env", "catchall"),
            ("/private/x.json", "private"),
            ("/x.y.z", "catchall"),
            // The operator's own route for the file with its extension.
            ("/.well-known/jwks.json", "jwks"),
            // An upstream known to read paths as written: both checks off.
            ("/files/a./b", "files"),
            ("/files/PROGRA~1", "files"),
            ("/iis/private./x", "iis"),
            ("/iis/private.json", "iis"),
            // ...but the route reached decides: iis-private's upstream folds.
            ("/iis/private/x.", "400 Windows(TrailingDotOrSpace)"),
        ];
        for (path, want) in cases {
            assert_eq!(resolved(&t, path, "GET"), want, "{path}");
        }
    }

    #[test]
    fn routes_differing_only_in_case_are_refused() {
        let err = RouteTable::build(&[
            route("one", None, "/Admin/*", None),
            route("two", None, "/admin/*", None),
        ])
        .unwrap_err();
        assert!(
            err[0].1.contains("when letter case is ignored"),
            "{}",
            err[0].1
        );
    }

    #[test]
    fn check_warns_about_shadowed_method_lists() {
        let t = RouteTable::build(&[
            route("catchall", None, "/*", Some(&["GET", "POST"])),
            route("invoice", None, "/invoices/{id}", Some(&["GET", "DELETE"])),
            route("read", None, "/reads/{id}", Some(&["GET", "POST"])),
            route("any", None, "/any/{id}", None),
        ])
        .unwrap();
        assert_eq!(
            t.shadow_warnings(),
            vec!["route \"invoice\" allows only GET, DELETE on /invoices/{id}; other methods there answer 405 (they no longer fall through to route \"catchall\" /*)".to_string()]
        );
    }

    /// What a lenient upstream makes of a path: `\` is a separator, dot segments resolved.
    fn lenient_normalise(p: &str) -> String {
        let p = p.replace('\\', "/");
        let mut out: Vec<&str> = Vec::new();
        for seg in p.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                s => out.push(s),
            }
        }
        format!("/{}", out.join("/"))
    }

    /// One percent-decoding, lenient: overlong `.` (`%c0%ae`, `%e0%80%ae`) is `.`, other invalid
    /// UTF-8 becomes U+FFFD, broken escapes stay.
    fn decode_once(p: &str) -> String {
        let b = p.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            let h = |k: usize| b.get(k).and_then(|x| (*x as char).to_digit(16));
            match (c, h(i + 1), h(i + 2)) {
                (b'%', Some(x), Some(y)) => {
                    out.push((x * 16 + y) as u8);
                    i += 3;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        // Lossy decoding turned each overlong sequence into replacement characters: redo it.
        let mut fixed = Vec::new();
        let mut j = 0;
        while let Some(&c) = out.get(j) {
            if out.get(j..j + 2) == Some(&[0xc0, 0xae][..]) {
                fixed.push(b'.');
                j += 2;
            } else if out.get(j..j + 3) == Some(&[0xe0, 0x80, 0xae][..]) {
                fixed.push(b'.');
                j += 3;
            } else {
                fixed.push(c);
                j += 1;
            }
        }
        if fixed == out {
            text
        } else {
            String::from_utf8_lossy(&fixed).into_owned()
        }
    }

    /// Tomcat's `;` stripping: each segment up to its first `;`.
    fn tomcat_strip(p: &str) -> String {
        p.split('/')
            .map(|s| s.split(';').next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("/")
    }

    fn reaches_admin(p: &str) -> bool {
        let l = p.to_ascii_lowercase();
        l == "/admin" || l.starts_with("/admin/")
    }

    const PIECES: &[&str] = &[
        "..",
        ".",
        "..;",
        ";x=1",
        "%2e",
        "%2E%2e",
        "%2e%2e",
        ".%2e",
        "%252e",
        "%252e%252e",
        "%25",
        "%c0%ae",
        "%c0%ae%c0%ae",
        "%e0%80%ae",
        "ADMIN",
        "Admin",
        "%61dmin",
        "%41DMIN",
        "admin",
        "admin;x",
        "public",
        "Public",
        "public;x",
        "x",
        "%20",
        "caf%C3%A9",
        "",
        "%3b",
        "..%3b",
        "%2f",
        "%5c",
        "%2e%2e;",
        ";",
        "%ef%bc%8e",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 4000, failure_persistence: None, ..Default::default() })]

        /// Whenever a generated path is served as public, no other reading of the forwarded
        /// path (one more decoding, `;` stripping, case folding) reaches `/admin`.
        #[test]
        fn public_never_reaches_admin(
            first in proptest::prop_oneof![3 => proptest::strategy::Just("public"), 1 => proptest::sample::select(PIECES)],
            rest in proptest::collection::vec(proptest::sample::select(PIECES), 0..7),
            legacy in proptest::bool::ANY,
            public_catchall in proptest::bool::ANY,
        ) {
            let segments: Vec<&str> = std::iter::once(first).chain(rest).collect();
            // The public side is `/public/*` next to a catch-all, or the catch-all itself.
            let (public, catchall) = if public_catchall { ("/public-not-used/*", "public") } else { ("/public/*", "catchall") };
            let t = RouteTable::build(&[
                spec(catchall, None, "/*", Some(&["GET"]), legacy),
                spec(if public_catchall { "unused" } else { "public" }, None, public, None, legacy),
                route("admin", None, "/admin/*", None),
            ]).unwrap();
            let raw = format!("/{}", segments.join("/"));
            let Ok(n) = path::normalize(&raw) else { return Ok(()) };
            let Ok(RouteMatch::Found { route, .. }) = t.resolve(None, &n, &Method::GET) else { return Ok(()) };
            if route.name != "public" {
                return Ok(());
            }
            let fwd = &*n.forward;
            let readings = [
                lenient_normalise(&decode_once(fwd)),
                lenient_normalise(&decode_once(&decode_once(fwd))),
                lenient_normalise(&decode_once(&tomcat_strip(fwd))),
                lenient_normalise(&tomcat_strip(&decode_once(fwd))),
                lenient_normalise(&decode_once(&fwd.to_ascii_lowercase())),
            ];
            for r in readings {
                proptest::prop_assert!(!reaches_admin(&r), "{raw} forwarded as {fwd} reads as {r}");
            }
        }
    }
}
