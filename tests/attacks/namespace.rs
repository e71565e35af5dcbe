//! Attacks on the permission namespace: a caller tries to have its permissions checked in
//! another client app's namespace by naming that app in `Origin` / `x-client-origin`, or by
//! presenting a token issued to one app from another's origin; and a signing key the IdP
//! removed keeps working for some kind of caller.
//!
//! The standard world has two clients: `billing` (client id `abc`, namespace `client_abc`) on
//! the gateway's own origin and `reports` (client id `xyz`, namespace `client_xyz`) on
//! `https://reports.test`.

use crate::common::*;
use jsonwebtoken::Algorithm;
use reqwest::header::{ACCEPT, LOCATION};
use serde_json::{json, Value};
use std::time::Duration;

const REPORTS: &str = "https://reports.test";

/// Routes deleting invoices: one per client, and one serving both.
const ROUTES: &str = r#"
[[routes]]
name = "invoice-delete"
path = "/api/invoices/{id}"
methods = ["DELETE"]
upstream = "app"
permission = "invoice:delete"
clients = ["billing"]

[[routes]]
name = "report-delete"
path = "/api/reports/{id}"
methods = ["DELETE"]
upstream = "app"
permission = "invoice:delete"
clients = ["reports"]

[[routes]]
name = "shared-delete"
path = "/api/shared/{id}"
methods = ["DELETE"]
upstream = "app"
permission = "invoice:delete"

[[routes]]
name = "shared-read"
path = "/api/shared/{id}"
methods = ["GET"]
upstream = "app"
permission = "invoice:read"
"#;

async fn world() -> World {
    World::start_with(Setup {
        extra: ROUTES.into(),
        ..Setup::default()
    })
    .await
}

/// The same world, also accepting tokens whose `aud` is a client's id (id_tokens sent as bearer
/// tokens, as Auther's SPA guide does).
async fn world_accepting_id_tokens() -> World {
    let (idp, echo) = idp_and_echo().await;
    let setup = Setup {
        extra: ROUTES.into(),
        ..Setup::default()
    };
    let gw = start_gateway(
        |port, admin| {
            let text = config(port, admin, &idp, echo.addr(), &setup);
            let widened = text.replacen(
                &format!("audience = \"{AUDIENCE}\""),
                &format!("audience = [\"{AUDIENCE}\", \"abc\", \"xyz\"]"),
                1,
            );
            assert_ne!(widened, text, "the standard config's audience line moved");
            widened
        },
        true,
    )
    .await;
    World {
        idp,
        echo,
        gw,
        http: client(),
    }
}

async fn json_body(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

/// Sends `method path` with the given headers; returns the status, the body, and whether the
/// upstream was reached.
async fn send(
    w: &World,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value, bool) {
    let before = w.echo.requests();
    let mut req = w
        .http
        .request(method, format!("{}{path}", w.gw.url))
        .header(ACCEPT, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, w.echo.requests() > before)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn an_api_key_cannot_pick_its_namespace_with_origin_headers() {
    let w = world().await;
    // The key may delete only in the reports app's namespace.
    w.idp.add_api_key(
        "ak_xyz_delete",
        json!({"sub": "machine_x", "permissions": {"client_xyz:invoice": ["delete"]}}),
        900,
    );
    let key = ("x-api-key", "ak_xyz_delete");
    for (name, header) in [
        ("x-client-origin", ("x-client-origin", REPORTS)),
        ("Origin", ("origin", REPORTS)),
    ] {
        let (status, body, reached) = send(
            &w,
            reqwest::Method::DELETE,
            "/api/invoices/7",
            &[key, header],
        )
        .await;
        assert_eq!(
            status, 403,
            "{name} of the reports app chose the namespace: {body}"
        );
        assert!(!reached, "{name}: the upstream was reached");
        assert_eq!(
            body["entity"], "client_abc:invoice",
            "{name}: decided in the route's client's namespace: {body}"
        );
    }
    // Where the key's grant applies (a route serving the reports app), it works, whatever the
    // request's origin says, and the upstream learns the route's client.
    let (status, body, reached) = send(&w, reqwest::Method::DELETE, "/api/reports/7", &[key]).await;
    assert_eq!(status, 200, "{body}");
    assert!(reached);
    assert_eq!(body["headers"]["x-auth-client"], "reports", "{body}");
    assert_eq!(
        body["headers"]["x-auth-permission"], "client_xyz:invoice:delete",
        "{body}"
    );
    // A route serving both apps cannot tell which namespace an API key means: refused, with the fix.
    for headers in [
        vec![key],
        vec![key, ("x-client-origin", REPORTS)],
        vec![key, ("origin", REPORTS)],
    ] {
        let (status, body, reached) =
            send(&w, reqwest::Method::DELETE, "/api/shared/7", &headers).await;
        assert_eq!(status, 403, "{headers:?}: {body}");
        assert!(!reached);
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("set `clients` on the route"), "{detail}");
    }
}

#[tokio::test]
async fn a_token_bound_by_azp_or_client_id_is_refused_from_the_other_apps_origin() {
    let w = world().await;
    let both = json!({"client_abc:invoice": ["read"], "client_xyz:invoice": ["read"]});
    let billing = w
        .idp
        .mint(json!({"sub": "u_b", "aud": AUDIENCE, "azp": "abc", "permissions": both}));
    let reports = w
        .idp
        .mint(json!({"sub": "u_r", "aud": AUDIENCE, "client_id": "xyz", "permissions": both}));
    let cases = [
        (
            "azp abc from billing's own origin",
            &billing,
            None,
            Ok(("billing", "client_abc:invoice:read")),
        ),
        (
            "azp abc with x-client-origin of reports",
            &billing,
            Some(("x-client-origin", REPORTS)),
            Err(()),
        ),
        (
            "azp abc with Origin of reports",
            &billing,
            Some(("origin", REPORTS)),
            Err(()),
        ),
        (
            "client_id xyz from billing's origin",
            &reports,
            None,
            Err(()),
        ),
        (
            "client_id xyz with Origin of reports",
            &reports,
            Some(("origin", REPORTS)),
            Ok(("reports", "client_xyz:invoice:read")),
        ),
        (
            "client_id xyz with x-client-origin of reports",
            &reports,
            Some(("x-client-origin", REPORTS)),
            Ok(("reports", "client_xyz:invoice:read")),
        ),
    ];
    for (name, token, header, want) in cases {
        let auth = bearer(token);
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(header);
        let (status, body, reached) =
            send(&w, reqwest::Method::GET, "/api/shared/7", &headers).await;
        match want {
            Ok((client, permission)) => {
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(body["headers"]["x-auth-client"], client, "{name}: {body}");
                assert_eq!(
                    body["headers"]["x-auth-permission"], permission,
                    "{name}: {body}"
                );
            }
            Err(()) => {
                assert_eq!(status, 403, "{name}: {body}");
                assert!(!reached, "{name}: the upstream was reached");
                assert!(
                    body["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("issued to another client application"),
                    "{name}: {body}"
                );
            }
        }
    }
    // A bound token on a route serving only the other app: refused, even from that app's origin.
    let (status, body, reached) = send(
        &w,
        reqwest::Method::DELETE,
        "/api/invoices/7",
        &[
            ("authorization", bearer(&reports).as_str()),
            ("origin", REPORTS),
        ],
    )
    .await;
    assert_eq!((status, reached), (403, false), "{body}");
}

#[tokio::test]
async fn an_id_token_is_bound_to_the_client_in_its_aud() {
    let w = world_accepting_id_tokens().await;
    let grants = json!({"client_abc:invoice": ["read"], "client_xyz:invoice": ["read"]});
    // An id_token as Auther's SPA guide sends it: aud is the SPA's client id, no azp.
    let id_token = w
        .idp
        .mint(json!({"sub": "u_spa", "aud": "abc", "permissions": grants}));
    let auth = bearer(&id_token);
    for header in [("origin", REPORTS), ("x-client-origin", REPORTS)] {
        let (status, body, reached) = send(
            &w,
            reqwest::Method::GET,
            "/api/shared/7",
            &[("authorization", auth.as_str()), header],
        )
        .await;
        assert_eq!(status, 403, "{header:?}: {body}");
        assert!(!reached);
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("issued to another client application"),
            "{body}"
        );
    }
    let (status, body, _) = send(
        &w,
        reqwest::Method::GET,
        "/api/shared/7",
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_eq!(status, 200, "from its own app's origin: {body}");
    assert_eq!(body["headers"]["x-auth-client"], "billing");
    assert_eq!(
        body["headers"]["x-auth-permission"],
        "client_abc:invoice:read"
    );
    // Next to the API's own audience, the client's aud still binds.
    let mixed = w
        .idp
        .mint(json!({"sub": "u_spa", "aud": [AUDIENCE, "xyz"], "permissions": grants}));
    let (status, body, _) = send(
        &w,
        reqwest::Method::GET,
        "/api/shared/7",
        &[("authorization", bearer(&mixed).as_str())],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body, _) = send(
        &w,
        reqwest::Method::GET,
        "/api/shared/7",
        &[
            ("authorization", bearer(&mixed).as_str()),
            ("origin", REPORTS),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-auth-client"], "reports");
    // Naming both apps in aud without azp says nothing about which: refused from either.
    let both = w
        .idp
        .mint(json!({"sub": "u_spa", "aud": ["abc", "xyz"], "permissions": grants}));
    for headers in [vec![], vec![("origin", REPORTS)]] {
        let auth = bearer(&both);
        let mut h = vec![("authorization", auth.as_str())];
        h.extend(headers);
        let (status, body, reached) = send(&w, reqwest::Method::GET, "/api/shared/7", &h).await;
        assert_eq!((status, reached), (403, false), "{body}");
    }
}

#[tokio::test]
async fn an_unbound_token_is_refused_on_a_route_serving_several_apps() {
    let w = world().await;
    let token = w.token(
        json!({"client_abc:invoice": ["read", "delete"], "client_xyz:invoice": ["read", "delete"]}),
    );
    let auth = bearer(&token);
    for headers in [
        vec![],
        vec![("origin", REPORTS)],
        vec![("x-client-origin", REPORTS)],
    ] {
        let mut h = vec![("authorization", auth.as_str())];
        h.extend(headers.iter().copied());
        let (status, body, reached) = send(&w, reqwest::Method::GET, "/api/shared/7", &h).await;
        assert_eq!(status, 403, "{headers:?}: {body}");
        assert!(!reached);
        assert_eq!(
            body["title"], "Client application not served here",
            "{body}"
        );
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("set `clients` on the route"),
            "{body}"
        );
        // On the route of one app, that app decides, whatever the headers say.
        let (status, body, _) = send(&w, reqwest::Method::DELETE, "/api/reports/7", &h).await;
        assert_eq!(status, 200, "{headers:?}: {body}");
        assert_eq!(body["headers"]["x-auth-client"], "reports");
        assert_eq!(
            body["headers"]["x-auth-permission"],
            "client_xyz:invoice:delete"
        );
        // An authenticated route serving both: let through, naming no client.
        let (status, body, _) = send(&w, reqwest::Method::GET, "/api/me", &h).await;
        assert_eq!(status, 200, "{headers:?}: {body}");
        assert!(
            body["headers"].get("x-auth-client").is_none(),
            "a header chose the client: {body}"
        );
        assert_eq!(body["headers"]["x-auth-subject"], "user_1");
    }
}

/// A browser signed in to the billing app (the gateway's own origin); returns its client.
async fn sign_in(w: &World) -> reqwest::Client {
    w.idp.register_client(
        "abc",
        Some("dev"),
        &[&format!("{}/_authgate/callback", w.gw.url)],
    );
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let location = |r: &reqwest::Response| {
        r.headers()
            .get(LOCATION)
            .unwrap_or_else(|| panic!("no Location on {}", r.status()))
            .to_str()
            .unwrap()
            .to_string()
    };
    let r = b
        .get(format!("{}/api/me", w.gw.url))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        302,
        "a navigation without a session goes to login"
    );
    let r = b
        .get(format!("{}&user=alice", location(&r)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "the IdP signs alice in");
    let r = b.get(location(&r)).send().await.unwrap();
    assert_eq!(r.status(), 302, "the callback completes the login");
    b
}

/// Bearer, API-key and session callers, each authenticated with tokens of the IdP's current key.
struct Callers {
    bearer: String,
    browser: reqwest::Client,
}

impl Callers {
    async fn new(w: &World) -> Callers {
        w.idp.add_api_key(
            "ak_machine",
            json!({"sub": "machine_1", "permissions": {"client_abc:invoice": ["read"]}}),
            900,
        );
        let c = Callers {
            bearer: w.token(json!({"client_abc:invoice": ["read"]})),
            browser: sign_in(w).await,
        };
        assert_eq!(c.bearer_status(w).await, 200);
        assert_eq!(c.api_key_status(w).await, 200);
        assert_eq!(c.session_status(w).await, 200);
        c
    }

    async fn bearer_status(&self, w: &World) -> u16 {
        w.get("/api/invoices/42", Some(&self.bearer))
            .await
            .status()
            .as_u16()
    }

    async fn api_key_status(&self, w: &World) -> u16 {
        w.http
            .get(format!("{}/api/invoices/42", w.gw.url))
            .header("x-api-key", "ak_machine")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn session_status(&self, w: &World) -> u16 {
        self.browser
            .get(format!("{}/api/me", w.gw.url))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn with_sessions(idp_extra: &str) -> Setup {
    Setup {
        idp_extra: idp_extra.into(),
        extra: "\n[session]\nallow_insecure_http = true\n".into(),
        ..Setup::default()
    }
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_is_refused_at_once_for_bearer_session_and_api_key_callers() {
    let w = World::start_with(with_sessions("jwks_refresh_interval = \"200ms\"")).await;
    // Everyone holds tokens of a second key; then the IdP unpublishes it but (compromised, say)
    // it still signs with it.
    let removed = w.idp.rotate(Algorithm::ES256).unwrap();
    let callers = Callers::new(&w).await;
    let exchanges = w.idp.exchange_requests();
    assert!(w.idp.remove_key(&removed));
    // Two background refreshes later the gateway has seen the key set without it.
    let fetched = w.idp.jwks_requests();
    assert!(
        eventually(Duration::from_secs(5), || async {
            w.idp.jwks_requests() >= fetched + 2
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Each caller's very next request is refused: the API-key caller first, whose cached
    // exchange never passed through the bearer cache.
    assert_eq!(
        callers.api_key_status(&w).await,
        401,
        "an API-key caller's token of a removed key still worked"
    );
    assert!(
        w.idp.exchange_requests() > exchanges,
        "the key was exchanged again"
    );
    assert_eq!(
        callers.session_status(&w).await,
        401,
        "a session's token of a removed key still worked"
    );
    assert_eq!(
        callers.bearer_status(&w).await,
        401,
        "a bearer token of a removed key still worked"
    );
}

#[tokio::test]
async fn a_removal_noticed_by_an_api_key_exchange_clears_the_bearer_and_session_caches() {
    // No background refresh in the test's time: only an unknown kid makes the gateway refetch.
    let w = World::start_with(with_sessions("jwks_refresh_interval = \"1h\"")).await;
    let removed = w.idp.rotate(Algorithm::ES256).unwrap();
    let callers = Callers::new(&w).await;
    // The IdP rolls to a third key and drops the second: the first token of the third key to
    // arrive comes through an API-key exchange, whose verification refetches the JWKS.
    w.idp.rotate(Algorithm::ES256).unwrap();
    assert!(w.idp.remove_key(&removed));
    w.idp.add_api_key(
        "ak_other",
        json!({"sub": "machine_2", "permissions": {"client_abc:invoice": ["read"]}}),
        900,
    );
    let r = w
        .http
        .get(format!("{}/api/invoices/42", w.gw.url))
        .header("x-api-key", "ak_other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        callers.bearer_status(&w).await,
        401,
        "the bearer cache kept a token of the removed key"
    );
    assert_eq!(
        callers.session_status(&w).await,
        401,
        "the session kept a token of the removed key"
    );
    // The first machine's cached exchange (removed key) is redone: a token of the current key.
    let exchanges = w.idp.exchange_requests();
    assert_eq!(callers.api_key_status(&w).await, 200);
    assert_eq!(
        w.idp.exchange_requests(),
        exchanges + 1,
        "the exchange made with the removed key was reused"
    );
}

#[tokio::test]
async fn a_token_exchanged_for_an_api_key_is_not_a_bearer_token() {
    let w = World::start_with(Setup {
        extra: format!("{ROUTES}\n[api_keys]\naudience = \"https://keys.test\"\n"),
        ..Setup::default()
    })
    .await;
    w.idp.add_api_key("ak_keys", json!({"sub": "machine_k", "aud": "https://keys.test", "permissions": {"client_abc:invoice": ["read"]}}), 900);
    let r = w
        .http
        .get(format!("{}/api/invoices/42", w.gw.url))
        .header("x-api-key", "ak_keys")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the key works through the gateway");
    // The same exchange, done by the attacker at the IdP, gives a token for the keys' audience
    // (within the same second, the very token the gateway verified and cached for API keys).
    let exchanged = w
        .http
        .post(format!("{}/api/auth/api-key/exchange", w.idp.issuer()))
        .json(&json!({"apiKey": "ak_keys"}))
        .send()
        .await
        .unwrap();
    let token = json_body(exchanged).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body, reached) = send(
        &w,
        reqwest::Method::GET,
        "/api/invoices/42",
        &[("authorization", bearer(&token).as_str())],
    )
    .await;
    assert_eq!((status, reached), (401, false), "{body}");
}

/// An absolute-form request (`GET http://a/x`) is routed on its target's authority, which
/// overrides `Host` (RFC 9112 §3.2.2). A `Host` naming another registered app must not pick
/// the client, and so the namespace, a host-only route is checked in. Pingora refuses a `Host`
/// that differs from the target's authority byte for byte; the gateway builds the request's own
/// origin from the host routing read all the same (`authz::host::routed_authority`).
#[tokio::test]
async fn an_absolute_form_target_and_a_host_header_cannot_split_route_and_client() {
    let extra = format!(
        r#"{ROUTES}
[[routes]]
name = "billing-host-only"
host = "127.0.0.1"
path = "/api/host-only/{{id}}"
methods = ["GET"]
upstream = "app"
permission = "invoice:read"

[[clients]]
name = "intruder"
origins = ["http://intruder.test"]
client_id = "int"
"#
    );
    let w = World::start_with(Setup {
        extra,
        ..Setup::default()
    })
    .await;
    // A token the intruder app was issued, granting reads in its own namespace only.
    let intruder = w.idp.mint(json!({"sub": "u_i", "aud": AUDIENCE, "azp": "int", "permissions": {"client_int:invoice": ["read"]}}));
    let billing = w.idp.mint(json!({"sub": "u_b", "aud": AUDIENCE, "azp": "abc", "permissions": {"client_abc:invoice": ["read"]}}));
    let port = w.gw.port;
    let (gw, echo) = (&w.gw, &w.echo);
    let send = |target: String, host: &str, token: &str| {
        let head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nAuthorization: Bearer {token}");
        async move {
            let before = echo.requests();
            let (status, body) = crate::headers::raw(gw, &head).await;
            (status, body, echo.requests() > before)
        }
    };
    let host_of_billing = format!("127.0.0.1:{port}");
    let absolute = format!("http://127.0.0.1:{port}/api/host-only/7");
    // Control: with its own Host the intruder app never reaches the host-only route.
    let (status, body, reached) = send("/api/host-only/7".into(), "intruder.test", &intruder).await;
    assert_eq!((status, reached), (404, false), "{body}");
    // The split: routed on 127.0.0.1 (billing's origin), `Host` naming the intruder app.
    let (status, body, reached) = send(absolute.clone(), "intruder.test", &intruder).await;
    assert_eq!(
        (status, reached),
        (400, false),
        "a Host differing from the target's authority was not refused: {body}"
    );
    // Absolute form, agreeing Host: decided in billing's namespace, so the intruder's token is
    // refused and billing's is served.
    let (status, body, reached) = send(absolute.clone(), &host_of_billing, &intruder).await;
    assert_eq!((status, reached), (403, false), "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("issued to another client application"),
        "{body}"
    );
    let (status, body, reached) = send(absolute, &host_of_billing, &billing).await;
    assert_eq!((status, reached), (200, true), "{body}");
    assert_eq!(body["headers"]["x-auth-client"], "billing", "{body}");
    assert_eq!(
        body["headers"]["x-auth-permission"], "client_abc:invoice:read",
        "{body}"
    );
    assert_eq!(body["headers"]["host"], host_of_billing, "{body}");
}

/// Two client apps of one application sharing the namespace `client_demo` (the SignIn world's
/// `app-a` and `app-b`; `/api/demo/*` serves both), and a third app `other` in its own
/// namespace: `/api/mixed/*` (`app-a` and `other`) and every-client routes mix two namespaces.
#[tokio::test]
async fn an_api_key_is_decided_in_the_namespace_every_client_of_the_route_shares() {
    let w = World::start_with(Setup {
        clients: Clients::SignIn,
        extra: r#"
[[clients]]
name = "other"
origins = ["https://other.test"]
client_id = "other"

[[routes]]
name = "demo-read"
path = "/api/demo/{id}"
methods = ["GET"]
upstream = "app"
permission = "invoice:read"
clients = ["app-a", "app-b"]

[[routes]]
name = "mixed-read"
path = "/api/mixed/{id}"
methods = ["GET"]
upstream = "app"
permission = "invoice:read"
clients = ["app-a", "other"]
"#
        .into(),
        ..Setup::default()
    })
    .await;
    w.idp.add_api_key(
        "ak_demo_reader",
        json!({"sub": "machine_r", "permissions": {"client_demo:invoice": ["read"], "client_other:invoice": ["read"]}}),
        900,
    );
    w.idp.add_api_key(
        "ak_demo_nothing",
        json!({"sub": "machine_n", "permissions": {"client_demo:report": ["read"], "client_other:invoice": ["read"]}}),
        900,
    );
    let (a, b) = (
        format!("http://localhost:{}", w.gw.port),
        format!("http://127.0.0.1:{}", w.gw.port),
    );
    // Whatever origin the machine names (either app's, or none beyond the gateway's Host).
    for origin in [None, Some(a.as_str()), Some(b.as_str())] {
        let mut h = vec![("x-api-key", "ak_demo_reader")];
        h.extend(origin.map(|o| ("origin", o)));
        let (status, body, reached) = send(&w, reqwest::Method::GET, "/api/demo/7", &h).await;
        assert_eq!((status, reached), (200, true), "{origin:?}: {body}");
        assert_eq!(
            body["headers"]["x-auth-permission"], "client_demo:invoice:read",
            "{origin:?}: {body}"
        );
        assert_eq!(body["headers"]["x-auth-subject"], "machine_r", "{body}");
        // The key names no client: none is named upstream, whatever the origin says.
        assert!(
            body["headers"].get("x-auth-client").is_none(),
            "{origin:?}: a header named the client: {body}"
        );
        // A key without the permission in the shared namespace: refused there.
        h[0] = ("x-api-key", "ak_demo_nothing");
        let (status, body, reached) = send(&w, reqwest::Method::GET, "/api/demo/7", &h).await;
        assert_eq!((status, reached), (403, false), "{origin:?}: {body}");
        assert_eq!(body["entity"], "client_demo:invoice", "{body}");
        assert_eq!(body["permission"], "read", "{body}");
    }
    // Where the route's clients have different namespaces, the key is still refused.
    // (`/api/invoices/*` serves every client, `other` too.)
    for (path, origin) in [
        ("/api/mixed/7", None),
        ("/api/mixed/7", Some(a.as_str())),
        ("/api/mixed/7", Some("https://other.test")),
        ("/api/invoices/7", Some(a.as_str())),
    ] {
        let mut h = vec![("x-api-key", "ak_demo_reader")];
        h.extend(origin.map(|o| ("origin", o)));
        let (status, body, reached) = send(&w, reqwest::Method::GET, path, &h).await;
        assert_eq!((status, reached), (403, false), "{origin:?}: {body}");
        assert_eq!(
            body["title"], "Client application not served here",
            "{body}"
        );
    }
    // A token naming no client is decided the same way.
    let unbound = w.token(json!({"client_demo:invoice": ["read"]}));
    let (status, body, _) = send(
        &w,
        reqwest::Method::GET,
        "/api/demo/7",
        &[("authorization", bearer(&unbound).as_str())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["headers"]["x-auth-permission"], "client_demo:invoice:read",
        "{body}"
    );
    assert!(body["headers"].get("x-auth-client").is_none(), "{body}");
}
