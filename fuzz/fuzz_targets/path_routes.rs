//! Path normalisation plus route matching. Invariants: a normalised path is stable under a
//! second normalisation, starts with `/` and has no `..` segment (it never escapes the root),
//! and a raw path that is let through reaches the same route as its normal form (every
//! reading of a path reaches the same route). The input is `METHOD-BYTE` then the raw path.
#![no_main]

use authgate::authz::path::{normalize, strip_params};
use authgate::authz::routes::{RouteMatch, RouteTable};
use authgate::config::model::Config;
use http::Method;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const ROUTES: &str = r#"
[idp]
issuer = "https://idp.test"
audience = "api"
[[upstreams]]
name = "u"
addresses = ["127.0.0.1:1"]
[[routes]]
path = "/*"
upstream = "u"
auth = "none"
[[routes]]
path = "/public/*"
upstream = "u"
auth = "none"
[[routes]]
path = "/admin/*"
upstream = "u"
auth = "none"
[[routes]]
path = "/café/*"
upstream = "u"
auth = "none"
[[routes]]
path = "/legacy/*"
upstream = "u"
auth = "none"
path_params = true
[[routes]]
path = "/legacy/docs/{doc}/*"
upstream = "u"
auth = "none"
path_params = true
[[routes]]
path = "/jsp/{id}"
upstream = "u"
auth = "none"
path_params = true
[[routes]]
path = "/invoices/{id}"
methods = ["GET", "DELETE"]
upstream = "u"
auth = "none"
[[routes]]
path = "/invoices/new"
upstream = "u"
auth = "none"
[[routes]]
path = "/Reports/*"
upstream = "u"
auth = "none"
[[routes]]
host = "api.example.com"
path = "/v1/{a}/{b}"
upstream = "u"
auth = "none"
"#;

fn table() -> &'static (Config, RouteTable) {
    static T: OnceLock<(Config, RouteTable)> = OnceLock::new();
    T.get_or_init(|| {
        let c = authgate::config::parse("routes.toml", ROUTES, &|_| None)
            .expect("the fixture routes are valid");
        let t = RouteTable::build(&c.routes).expect("the fixture routes do not overlap");
        (c, t)
    })
}

/// Which route (and captures) a match names, comparable across readings.
fn outcome(m: &RouteMatch<'_>) -> String {
    match m {
        RouteMatch::Found { index, params, .. } => format!("{index} {params:?}"),
        RouteMatch::MethodNotAllowed { allowed } => format!("405 {allowed:?}"),
        RouteMatch::NotFound => "404".into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let method = [
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::PUT,
        Method::OPTIONS,
        Method::HEAD,
    ]
    .into_iter()
    .nth(usize::from(m % 6))
    .unwrap_or(Method::GET);
    let host = (m & 0x80 != 0).then_some("api.example.com");
    let (_, t) = table();
    let _ = t.find(host, raw, &method);
    let Ok(n) = normalize(raw) else { return };
    for p in [&n.forward, &n.decoded] {
        assert!(
            p.starts_with('/'),
            "{raw:?} normalised to {p:?}, not under /"
        );
        assert!(
            !p.split('/').any(|s| s == ".."),
            "{raw:?} normalised to {p:?}, which climbs out of /"
        );
    }
    assert!(
        !n.forward.split('/').any(|s| s == "."),
        "{raw:?} kept a dot segment: {:?}",
        n.forward
    );
    let again = normalize(&n.forward).unwrap_or_else(|e| {
        panic!(
            "{raw:?} normalised to {:?}, which is refused: {e:?}",
            n.forward
        )
    });
    assert_eq!(
        (&again.forward, &again.decoded),
        (&n.forward, &n.decoded),
        "normalising {raw:?} twice changed it"
    );
    // `has_params` is about the raw path: a `;` in a segment that `..` removed still counts
    // (the route then refuses it), so the second pass may only drop it, never add it.
    assert!(
        n.has_params || !again.has_params,
        "{raw:?} gained a path parameter when normalised again"
    );
    if n.has_params {
        let _ = strip_params(&n.forward);
    }
    let first = t.resolve(host, &n, &method);
    let second = t.resolve(host, &again, &method);
    // Refusing the raw path is always safe (a `;` removed by `..` is refused only in the raw
    // form); a raw path that is let through must reach what its normal form reaches.
    if let Ok(a) = &first {
        match &second {
            Ok(b) => assert_eq!(
                outcome(a),
                outcome(b),
                "{raw:?} and its normal form reach different routes"
            ),
            Err(e) => panic!(
                "{raw:?} reaches {} but its normal form is refused: {e:?}",
                outcome(a)
            ),
        }
    }
});
