//! The route table: (host, normalised path, method) → route, most specific first.
//!
//! Patterns are literal segments, `{param}` captures and a final `*` for any tail. A literal
//! beats a capture, a capture beats a tail (matchit's priorities); a route for the request's
//! host beats a route for any host.

use crate::config::model::RouteSpec;
use http::Method;
use std::collections::HashMap;
use std::fmt;

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternSegment {
    /// Matches exactly this text.
    Literal(String),
    /// Matches one segment and captures it.
    Param(String),
    /// Matches whatever follows, including nothing.
    Tail,
}

/// A validated path pattern such as `/invoices/{id}` or `/static/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<PatternSegment>,
    trailing_slash: bool,
}

/// Why a pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?} {rule}")]
pub struct PatternError {
    pattern: String,
    rule: String,
}

impl PathPattern {
    /// Parses a pattern from config.
    pub fn parse(text: &str) -> Result<PathPattern, PatternError> {
        let err = |rule: &str| PatternError { pattern: text.to_string(), rule: rule.to_string() };
        if !text.starts_with('/') {
            return Err(err("must start with /"));
        }
        let trailing_slash = text.len() > 1 && text.ends_with('/');
        let body = text.trim_start_matches('/');
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        let parts: Vec<&str> = if body.is_empty() { Vec::new() } else { body.split('/').collect() };
        for (i, seg) in parts.iter().enumerate() {
            if *seg == "*" {
                if i + 1 != parts.len() || trailing_slash {
                    return Err(err("has * before the end: * may only be the last segment"));
                }
                segments.push(PatternSegment::Tail);
            } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(err("has a capture whose name is not letters, digits or _"));
                }
                if segments.iter().any(|s| matches!(s, PatternSegment::Param(n) if n == name)) {
                    return Err(err("captures the same name twice"));
                }
                segments.push(PatternSegment::Param(name.to_string()));
            } else {
                if seg.is_empty() || *seg == "." || *seg == ".." {
                    return Err(err("has an empty, . or .. segment: write the normalised path"));
                }
                if seg.contains(['{', '}', '*', '%', '\\', '?', '#']) {
                    return Err(err("has {, }, *, %, \\, ? or # inside a segment: captures and * take a whole segment"));
                }
                segments.push(PatternSegment::Literal(seg.to_string()));
            }
        }
        Ok(PathPattern { text: text.to_string(), segments, trailing_slash })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Names of the captures, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            PatternSegment::Param(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// The matchit patterns this pattern is inserted as: the main one first, then variants
    /// (with and without trailing slash, empty tail). Captures are renamed by position so
    /// that `/a/{x}` and `/a/{y}` are the same path.
    fn router_keys(&self) -> Vec<String> {
        let mut base = String::new();
        let mut p = 0;
        let mut tail = false;
        for seg in &self.segments {
            match seg {
                PatternSegment::Literal(l) => {
                    base.push('/');
                    base.push_str(l);
                }
                PatternSegment::Param(_) => {
                    base.push_str(&format!("/{{p{p}}}"));
                    p += 1;
                }
                PatternSegment::Tail => tail = true,
            }
        }
        if tail {
            let with_slash = format!("{base}/");
            vec![format!("{base}/{{*tail}}"), with_slash, if base.is_empty() { "/".into() } else { base }]
        } else if base.is_empty() {
            vec!["/".into()]
        } else if self.trailing_slash {
            vec![format!("{base}/"), base]
        } else {
            vec![base.clone(), format!("{base}/")]
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The result of matching a request.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    /// A route, with its captures in pattern order.
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

/// The methods routers are kept for; any other method only matches routes without a method list.
const METHODS: [Method; 7] = [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];
const OTHER: usize = METHODS.len();

fn method_slot(m: &Method) -> usize {
    METHODS.iter().position(|x| x == m).unwrap_or(OTHER)
}

/// One router per method, so that the most specific route *for the request's method* wins.
#[derive(Default)]
struct MethodRouters {
    routers: [matchit::Router<usize>; OTHER + 1],
    /// (method slot, router key) → route, to name the route a new one conflicts with.
    keys: HashMap<(usize, String), usize>,
}

impl fmt::Debug for MethodRouters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodRouters").field("routes", &self.keys.len()).finish()
    }
}

/// Routes indexed for lookup.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<RouteSpec>,
    by_host: HashMap<String, MethodRouters>,
    any_host: MethodRouters,
}

impl RouteTable {
    /// Indexes routes; `Err` lists (route index, message) for routes that conflict.
    pub fn build(routes: &[RouteSpec]) -> Result<RouteTable, Vec<(usize, String)>> {
        let mut conflicts = Vec::new();
        let mut by_host: HashMap<String, MethodRouters> = HashMap::new();
        let mut any_host = MethodRouters::default();
        // Main keys of every route first, so an explicit route wins over another's variant.
        for pass in 0..2 {
            for (i, r) in routes.iter().enumerate() {
                let table = match &r.host {
                    Some(h) => by_host.entry(h.clone()).or_default(),
                    None => &mut any_host,
                };
                let slots: Vec<usize> = match &r.methods {
                    Some(ms) => {
                        let mut v: Vec<usize> = ms.iter().map(method_slot).collect();
                        v.dedup();
                        v
                    }
                    None => (0..=OTHER).collect(),
                };
                let keys = r.path.router_keys();
                // A GET route also serves HEAD, unless another route claims HEAD for the path.
                let head_from_get = slots.contains(&0) && !slots.contains(&1);
                for (slot, all_keys) in slots.iter().map(|s| (*s, false)).chain(head_from_get.then_some((1, true))) {
                    let chosen = match (pass, all_keys) {
                        (0, false) => &keys[..1],
                        (1, false) => &keys[1..],
                        (1, true) => &keys[..],
                        _ => &[],
                    };
                    for key in chosen {
                        if let Some(&other) = table.keys.get(&(slot, key.clone())) {
                            if pass == 0 && !all_keys && other != i && !conflicts.iter().any(|(c, _)| *c == i) {
                                conflicts.push((
                                    i,
                                    format!(
                                        "route {:?} overlaps route {:?} (same host, path and method): give them different methods or paths",
                                        r.name, routes[other].name
                                    ),
                                ));
                            }
                            continue;
                        }
                        match table.routers[slot].insert(key.clone(), i) {
                            Ok(()) => {
                                table.keys.insert((slot, key.clone()), i);
                            }
                            Err(e) if pass == 0 => conflicts.push((i, format!("{:?} cannot be routed: {e}", r.path.as_str()))),
                            Err(_) => {}
                        }
                    }
                }
            }
        }
        if conflicts.is_empty() {
            Ok(RouteTable { routes: routes.to_vec(), by_host, any_host })
        } else {
            Err(conflicts)
        }
    }

    /// All routes.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// Finds the route for a normalised path. `host` is the request's host, lowercase, no port.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> RouteMatch<'_> {
        let host_table = host.and_then(|h| self.by_host.get(h));
        let tables = || host_table.into_iter().chain(std::iter::once(&self.any_host));
        let slot = method_slot(method);
        for table in tables() {
            if let Ok(m) = table.routers[slot].at(path) {
                let index = *m.value;
                let route = &self.routes[index];
                let params = route.path.params().zip(m.params.iter()).map(|(n, (_, v))| (n, v.to_string())).collect();
                return RouteMatch::Found { route, index, params };
            }
        }
        let mut allowed: Vec<Method> = Vec::new();
        for table in tables() {
            for (s, m) in METHODS.iter().enumerate() {
                if table.routers[s].at(path).is_ok() && !allowed.contains(m) {
                    allowed.push(m.clone());
                }
            }
        }
        if allowed.is_empty() {
            RouteMatch::NotFound
        } else {
            RouteMatch::MethodNotAllowed { allowed }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Access;

    fn route(name: &str, host: Option<&str>, path: &str, methods: Option<&[&str]>) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            host: host.map(str::to_string),
            path: PathPattern::parse(path).unwrap(),
            methods: methods.map(|ms| ms.iter().map(|m| Method::from_bytes(m.as_bytes()).unwrap()).collect()),
            upstream: 0,
            access: Access::Public,
            attributes: vec![],
            body_limit: 1024,
            allow_on_error: false,
            signed_identity: false,
            clients: None,
        }
    }

    fn found(t: &RouteTable, host: Option<&str>, path: &str, method: &str) -> String {
        match t.find(host, path, &Method::from_bytes(method.as_bytes()).unwrap()) {
            RouteMatch::Found { route, params, .. } => {
                let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if p.is_empty() { route.name.clone() } else { format!("{} {}", route.name, p.join(",")) }
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
            route("invoice-write", None, "/api/invoices/{invoice}", Some(&["PUT", "DELETE"])),
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
            (None, "/api/invoices/42", "POST", "api"),
            (None, "/api/invoices/new", "GET", "invoice-new"),
            (None, "/api/invoices/42/", "GET", "invoice id=42"),
            (None, "/api/invoices/7/lines/3", "GET", "lines id=7,line=3"),
            (None, "/api/other/deep/path", "GET", "api"),
            (None, "/api", "GET", "api"),
            (None, "/api/", "GET", "api"),
            (None, "/", "GET", "root"),
            (None, "/elsewhere", "GET", "catchall"),
            (Some("admin.example.com"), "/api/invoices/42", "GET", "admin-host"),
            (Some("other.example.com"), "/api/invoices/42", "GET", "invoice id=42"),
        ];
        for (host, path, method, want) in cases {
            assert_eq!(found(&t, host, path, method), want, "{host:?} {method} {path}");
        }
    }

    #[test]
    fn method_not_allowed_and_not_found() {
        let t = RouteTable::build(&[route("get", None, "/a/{id}", Some(&["GET"])), route("post", None, "/b", Some(&["POST"]))]).unwrap();
        assert_eq!(found(&t, None, "/a/1", "DELETE"), "405 [GET, HEAD]");
        assert_eq!(found(&t, None, "/b", "GET"), "405 [POST]");
        assert_eq!(found(&t, None, "/c", "GET"), "404");
        assert_eq!(found(&t, None, "/a", "GET"), "404");
        assert_eq!(found(&t, None, "/a/1/2", "GET"), "404");
    }

    #[test]
    fn overlapping_routes_are_refused() {
        let err = RouteTable::build(&[route("one", None, "/a/{x}", Some(&["GET"])), route("two", None, "/a/{y}", None)]).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].1.contains("\"two\" overlaps route \"one\""), "{}", err[0].1);
        // Same path on different hosts, or different methods, is fine.
        RouteTable::build(&[route("one", None, "/a", Some(&["GET"])), route("two", None, "/a", Some(&["POST"])), route("three", Some("h"), "/a", None)]).unwrap();
    }

    #[test]
    fn pattern_rules() {
        for bad in ["a", "/a/*/b", "/a/{}", "/a/{x}/{x}", "/a//b", "/a/../b", "/a/x{y}", "/a/%2e"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        for good in ["/", "/*", "/a/", "/a/{id}/b", "/static/*", "/.well-known/jwks.json"] {
            assert!(PathPattern::parse(good).is_ok(), "{good}");
        }
    }
}
