//! Attacks on the live permission check and the API-key exchange: making a fail-open route
//! open with the caller's own input, opening the shared breaker, the check with no URL,
//! attributes read differently from how upstreams read them, an exchange outage remembered as
//! a refusal, and one caller's cached decision reused for another kind of credential.

use crate::common::*;
use devidp::idp::{demo_policy, AbacMode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Two live-checked routes reading attributes from every source: `transfer-open` fails open
/// when the IdP is unavailable, `transfer` (the default) fails closed.
const TRANSFERS: &str = r#"
[[routes]]
name = "transfer-open"
path = "/api/open-transfers/{id}"
methods = ["POST"]
upstream = "app"
permission = "transfer:create"
entity_id = "id"
clients = ["billing"]
on_error = "allow"

[routes.attributes]
amount = "body:amount"
currency = "body:payment.currency"
region = "header:x-region"
mode = "query:mode"

[[routes]]
name = "transfer"
path = "/api/transfers/{id}"
methods = ["POST"]
upstream = "app"
permission = "transfer:create"
entity_id = "id"
clients = ["billing"]

[routes.attributes]
amount = "body:amount"
currency = "body:payment.currency"
region = "header:x-region"
mode = "query:mode"

[abac]
allow_ttl = "0s"
deny_ttl = "0s"
breaker_failures = 3
breaker_cooldown = "30s"
"#;

async fn world() -> World {
    World::start_with(Setup {
        extra: TRANSFERS.to_string(),
        ..Setup::default()
    })
    .await
}

/// A caller whose `transfer:create` is left to the live check.
fn transferrer(w: &World) -> String {
    w.idp.mint(json!({
        "sub": "user_t", "aud": AUDIENCE,
        "permissions": {"client_abc:transfer": ["create"]},
        "abac_required": {"client_abc:transfer": ["create"]},
    }))
}

const BODY: &str = r#"{"amount": 80, "payment": {"currency": "EUR"}}"#;

/// POSTs a transfer on `route` (`open-transfers` or `transfers`) with the usual attributes.
async fn transfer(w: &World, route: &str, token: &str, body: &str) -> reqwest::Response {
    w.http
        .post(format!("{}/api/{route}/t_1?mode=fast", w.gw.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("x-region", "eu")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// The status, and whether the upstream answered (the echo upstream's JSON has `method`).
async fn outcome(r: reqwest::Response) -> (u16, bool, Option<String>) {
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body.get("method").is_some(), retry)
}

#[tokio::test]
async fn on_error_allow_lets_only_idp_unavailability_through() {
    let w = world().await;
    let token = transferrer(&w);
    // A call that found the IdP unavailable is the caller's own: never let through (its load
    // may be why); only a check no call is made for, the breaker being open, may fail open
    // (`a_flood_of_fresh_checks_buys_no_fail_open`). (what the IdP does, status, the upstream
    // answered)
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, u16, bool);
    let cases: Vec<Case> = vec![
        (
            "down (503 to everything)",
            Box::new(|| w.idp.set_available(false)),
            503,
            false,
        ),
        (
            "502",
            Box::new(|| w.idp.set_abac_mode(AbacMode::Status(502))),
            503,
            false,
        ),
        (
            "504",
            Box::new(|| w.idp.set_abac_mode(AbacMode::Status(504))),
            503,
            false,
        ),
        (
            "timeout",
            Box::new(|| w.idp.set_abac_mode(AbacMode::Delay(Duration::from_secs(3)))),
            503,
            false,
        ),
        (
            "400",
            Box::new(|| w.idp.set_abac_mode(AbacMode::Status(400))),
            403,
            false,
        ),
        (
            "401",
            Box::new(|| w.idp.set_abac_mode(AbacMode::Status(401))),
            403,
            false,
        ),
        (
            "403",
            Box::new(|| w.idp.set_abac_mode(AbacMode::Status(403))),
            403,
            false,
        ),
        (
            "429",
            Box::new(|| w.idp.set_abac_mode(AbacMode::Status(429))),
            503,
            false,
        ),
        (
            "500 internal_error",
            Box::new(|| w.idp.set_abac_mode(AbacMode::Status(500))),
            503,
            false,
        ),
        (
            "unreadable answer",
            Box::new(|| w.idp.set_abac_mode(AbacMode::Malformed)),
            503,
            false,
        ),
        (
            "no",
            Box::new(|| w.idp.set_abac_mode(AbacMode::Policy(Arc::new(|_| false)))),
            403,
            false,
        ),
    ];
    for (name, make, want_status, want_upstream) in cases {
        w.idp.set_available(true);
        make();
        let (checks, upstream) = (w.idp.abac_requests(), w.echo.requests());
        let (status, answered, _) =
            outcome(transfer(&w, "open-transfers", &token, BODY).await).await;
        assert_eq!(
            (status, answered),
            (want_status, want_upstream),
            "IdP {name}"
        );
        assert_eq!(
            w.idp.abac_requests(),
            checks + 1,
            "IdP {name}: the check was attempted"
        );
        assert_eq!(
            w.echo.requests() - upstream,
            usize::from(want_upstream),
            "IdP {name}: upstream hit only when allowed"
        );
        // The same IdP trouble on the fail-closed route: never allowed.
        let (status, answered, _) = outcome(transfer(&w, "transfers", &token, BODY).await).await;
        assert!(
            !answered && (status == 503 || status == 403),
            "IdP {name} on the fail-closed route: {status}"
        );
        // Keep the breaker closed between cases (three unavailable answers would open it).
        w.idp.set_available(true);
        w.idp.set_abac_mode(AbacMode::Policy(Arc::new(demo_policy)));
        assert_eq!(
            outcome(transfer(&w, "transfers", &token, BODY).await)
                .await
                .0,
            200,
            "after IdP {name}"
        );
    }
    assert!(
        w.gw.log
            .lock()
            .unwrap()
            .contains("not allowed by on_error = \"allow\": this caller's own calls"),
        "refused fail-opens are logged"
    );
}

#[tokio::test]
async fn caller_caused_answers_do_not_open_the_breaker() {
    let w = world().await;
    let token = transferrer(&w);
    // Far more than breaker_failures (3) answers a caller can provoke with its own input.
    for mode in [
        AbacMode::Status(400),
        AbacMode::Status(401),
        AbacMode::Status(500),
        AbacMode::Status(429),
        AbacMode::Malformed,
    ] {
        w.idp.set_abac_mode(mode.clone());
        for _ in 0..4 {
            let (status, answered, _) =
                outcome(transfer(&w, "open-transfers", &token, BODY).await).await;
            assert!(!answered && status >= 400, "{mode:?}: {status}");
        }
    }
    // An unrelated, allowed check still goes to the IdP: the breaker is closed.
    w.idp.set_abac_mode(AbacMode::Policy(Arc::new(demo_policy)));
    let before = w.idp.abac_requests();
    let other = w.idp.mint(json!({
        "sub": "user_other", "aud": AUDIENCE,
        "permissions": {"client_abc:transfer": ["create"]}, "abac_required": {"client_abc:transfer": ["create"]},
    }));
    assert_eq!(
        outcome(transfer(&w, "open-transfers", &other, BODY).await)
            .await
            .0,
        200
    );
    assert_eq!(
        w.idp.abac_requests(),
        before + 1,
        "the check was made, not skipped by an open breaker"
    );
    let metrics = w
        .http
        .get(format!("{}/metrics", w.gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authgate_abac_breaker_state 0"),
        "{metrics}"
    );

    // Real unavailability still opens it: then no calls, and only the fail-open route passes,
    // and only for a caller whose own calls did not fail.
    w.idp.set_abac_mode(AbacMode::Status(503));
    for _ in 0..3 {
        assert_eq!(
            outcome(transfer(&w, "open-transfers", &token, BODY).await)
                .await
                .0,
            503
        );
    }
    let before = w.idp.abac_requests();
    assert_eq!(
        outcome(transfer(&w, "open-transfers", &other, BODY).await)
            .await
            .0,
        200
    );
    assert_eq!(
        outcome(transfer(&w, "open-transfers", &token, BODY).await)
            .await
            .0,
        503,
        "the caller whose calls opened the breaker"
    );
    let (status, _, retry) = outcome(transfer(&w, "transfers", &other, BODY).await).await;
    assert_eq!((status, retry.as_deref()), (503, Some("5")));
    assert_eq!(
        w.idp.abac_requests(),
        before,
        "an open breaker makes no calls"
    );
}

#[tokio::test]
async fn without_a_check_url_a_live_permission_is_forbidden() {
    let idp = devidp::idp::DevIdp::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    idp.set_audience(AUDIENCE);
    let echo = devidp::echo::EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let gw = start_gateway(
        |port, admin| {
            let text = config(port, admin, &idp, echo.addr(), &Setup::default());
            let url_line = format!(
                "check_permission_url = \"{}/api/auth/check-permission\"\n",
                idp.issuer()
            );
            assert!(text.contains(&url_line));
            // The stock refund route declares attributes, which need the URL: it reads none here.
            text.replace(&url_line, "")
                .replace("attributes = { invoice = \"path:id\" }\n", "")
        },
        true,
    )
    .await;
    let w = World {
        idp,
        echo,
        gw,
        http: client(),
    };
    let upstream = w.echo.requests(); // the readiness probe's
    let token = w.idp.mint(json!({
        "sub": "user_1", "aud": AUDIENCE,
        "permissions": {"client_abc:invoice": ["read", "refund"]}, "abac_required": {"client_abc:invoice": ["refund"]},
    }));
    let r = w
        .http
        .post(format!("{}/api/invoices/inv_1/refund", w.gw.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, answered, _) = outcome(r).await;
    assert_eq!(
        (status, answered),
        (403, false),
        "refused, not allowed and not 503"
    );
    assert_eq!(w.echo.requests(), upstream);
    assert_eq!(w.idp.abac_requests(), 0);
    // The token's static grants still work.
    assert_eq!(
        w.get("/api/invoices/inv_1", Some(&token)).await.status(),
        200
    );
}

#[tokio::test]
async fn ambiguous_attribute_sources_are_refused_before_the_idp_and_the_upstream() {
    let w = world().await;
    let token = transferrer(&w);
    let upstream = w.echo.requests(); // the readiness probe's
    let ok_query = "?mode=fast";
    let requests: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("query twice", w.http.post(format!("{}/api/transfers/t_1?mode=fast&mode=slow", w.gw.url)).header("x-region", "eu").body(BODY)),
        ("query in another case", w.http.post(format!("{}/api/transfers/t_1?mode=fast&MODE=slow", w.gw.url)).header("x-region", "eu").body(BODY)),
        ("query encoded twice", w.http.post(format!("{}/api/transfers/t_1?mode=fast&m%6Fde=slow", w.gw.url)).header("x-region", "eu").body(BODY)),
        ("query after ;", w.http.post(format!("{}/api/transfers/t_1?mode=fast;mode=slow", w.gw.url)).header("x-region", "eu").body(BODY)),
        ("query as array", w.http.post(format!("{}/api/transfers/t_1?mode=fast&mode[]=slow", w.gw.url)).header("x-region", "eu").body(BODY)),
        ("header twice", w.http.post(format!("{}/api/transfers/t_1{ok_query}", w.gw.url)).header("x-region", "eu").header("x-region", "us").body(BODY)),
        ("header as a list", w.http.post(format!("{}/api/transfers/t_1{ok_query}", w.gw.url)).header("x-region", "eu, us").body(BODY)),
        ("header with _", w.http.post(format!("{}/api/transfers/t_1{ok_query}", w.gw.url)).header("x-region", "eu").header("x_region", "us").body(BODY)),
        ("json key twice", w.http.post(format!("{}/api/transfers/t_1{ok_query}", w.gw.url)).header("x-region", "eu").body(r#"{"amount": 80, "amount": 5000}"#)),
        ("json key in another case", w.http.post(format!("{}/api/transfers/t_1{ok_query}", w.gw.url)).header("x-region", "eu").body(r#"{"amount": 80, "AMOUNT": 5000}"#)),
        ("json key only in another case", w.http.post(format!("{}/api/transfers/t_1{ok_query}", w.gw.url)).header("x-region", "eu").body(r#"{"Amount": 5000}"#)),
        (
            "nested json key in another case",
            w.http.post(format!("{}/api/transfers/t_1{ok_query}", w.gw.url)).header("x-region", "eu").body(r#"{"amount": 8, "payment": {"currency": "EUR", "Currency": "USD"}}"#),
        ),
        (
            "json parent key twice",
            w.http.post(format!("{}/api/transfers/t_1{ok_query}", w.gw.url)).header("x-region", "eu").body(r#"{"amount": 8, "payment": {"currency": "EUR"}, "payment": {"currency": "USD"}}"#),
        ),
        (
            "ambiguous on the fail-open route",
            w.http.post(format!("{}/api/open-transfers/t_1{ok_query}", w.gw.url)).header("x-region", "eu").body(r#"{"amount": 80, "AMOUNT": 5000}"#),
        ),
    ];
    for (name, req) in requests {
        let r = req
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let problem: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 400, "{name}: {problem}");
        assert_eq!(problem["title"], "Ambiguous request", "{name}");
    }
    assert_eq!(
        w.idp.abac_requests(),
        0,
        "no ambiguous request reached the IdP"
    );
    assert_eq!(
        w.echo.requests(),
        upstream,
        "no ambiguous request reached the upstream"
    );

    // Undeclared fields are the upstream's business; the declared ones, read once, pass.
    let body = r#"{"amount": 80, "payment": {"currency": "EUR"}, "note": 1, "note": 2, "NOTE": 3}"#;
    let r = transfer(&w, "transfers", &token, body).await;
    assert_eq!(r.status(), 200);
    let (request, _) = w.idp.abac_checks().pop().unwrap();
    assert_eq!(
        request["resource"]["attributes"],
        json!({"amount": 80, "currency": "EUR", "region": "eu", "mode": "fast"})
    );
}

#[tokio::test]
async fn an_exchange_outage_is_503_and_the_key_works_once_it_recovers() {
    let w = world().await;
    w.idp.add_api_key(
        "ak_outage",
        json!({"sub": "machine_o", "permissions": {"client_abc:invoice": ["read"]}}),
        900,
    );
    for code in [429, 500, 502, 503, 504] {
        w.idp.set_exchange_status(Some(code));
        let before = w.idp.exchange_requests();
        let r = w
            .http
            .get(format!("{}/api/invoices/1", w.gw.url))
            .header("x-api-key", "ak_outage")
            .send()
            .await
            .unwrap();
        let (status, answered, retry) = outcome(r).await;
        assert_eq!(
            (status, answered, retry.as_deref()),
            (503, false, Some("5")),
            "exchange {code}"
        );
        assert_eq!(
            w.idp.exchange_requests(),
            before + 1,
            "exchange {code}: asked, not answered from memory"
        );
    }
    // A timeout too (the gateway's IdP timeout is 2 s).
    w.idp.set_exchange_status(None);
    w.idp.set_exchange_delay(Duration::from_secs(3));
    let r = w
        .http
        .get(format!("{}/api/invoices/1", w.gw.url))
        .header("x-api-key", "ak_outage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "exchange timeout");
    w.idp.set_exchange_delay(Duration::ZERO);
    // Recovered: the very next request works, the outage was not remembered as a refusal.
    let r = w
        .http
        .get(format!("{}/api/invoices/1", w.gw.url))
        .header("x-api-key", "ak_outage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A definite refusal is remembered for failure_ttl (30 s): registering the key later does not help yet.
    for code in [400, 401, 403] {
        let key = format!("ak_refused_{code}");
        w.idp.set_exchange_status(Some(code));
        let r = w
            .http
            .get(format!("{}/api/invoices/1", w.gw.url))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "exchange {code}");
        w.idp.set_exchange_status(None);
        w.idp.add_api_key(
            &key,
            json!({"sub": "machine_r", "permissions": {"client_abc:invoice": ["read"]}}),
            900,
        );
        let before = w.idp.exchange_requests();
        let r = w
            .http
            .get(format!("{}/api/invoices/1", w.gw.url))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "exchange {code}: remembered");
        assert_eq!(w.idp.exchange_requests(), before);
    }
}

#[tokio::test]
async fn a_decision_is_not_shared_between_a_bearer_and_an_api_key_caller_of_one_subject() {
    let extra = TRANSFERS.replace(
        "allow_ttl = \"0s\"\ndeny_ttl = \"0s\"",
        "allow_ttl = \"60s\"\ndeny_ttl = \"60s\"",
    );
    let w = World::start_with(Setup {
        extra,
        ..Setup::default()
    })
    .await;
    let claims = json!({"sub": "user_same", "permissions": {"client_abc:transfer": ["create"]}, "abac_required": {"client_abc:transfer": ["create"]}});
    let mut bearer_claims = claims.clone();
    bearer_claims["aud"] = json!(AUDIENCE);
    let token = w.idp.mint(bearer_claims);
    w.idp.add_api_key("ak_same", claims, 900);

    // The bearer caller is allowed; the decision is cached for 60 s.
    assert_eq!(transfer(&w, "transfers", &token, BODY).await.status(), 200);
    assert_eq!(transfer(&w, "transfers", &token, BODY).await.status(), 200);
    assert_eq!(
        w.idp.abac_requests(),
        1,
        "the bearer caller's decision is reused"
    );

    // The IdP now refuses the key's caller: the same subject and attributes must be asked again.
    w.idp.set_abac_mode(AbacMode::Status(403));
    let r = w
        .http
        .post(format!("{}/api/transfers/t_1?mode=fast", w.gw.url))
        .header("x-api-key", "ak_same")
        .header("content-type", "application/json")
        .header("x-region", "eu")
        .body(BODY)
        .send()
        .await
        .unwrap();
    let (status, answered, _) = outcome(r).await;
    assert_eq!(
        (status, answered),
        (403, false),
        "the API-key caller got the bearer caller's cached allow"
    );
    assert_eq!(w.idp.abac_requests(), 2);
    assert_eq!(
        w.idp.abac_checks().last().unwrap().1.as_deref(),
        Some("x-api-key ak_same")
    );
    // And the bearer caller's own cached decision is untouched.
    assert_eq!(transfer(&w, "transfers", &token, BODY).await.status(), 200);
    assert_eq!(w.idp.abac_requests(), 2);
}

/// Writes `head` (request line and headers, no blank line), `Content-Length` and `body` on a
/// raw socket (an HTTP client would drop or merge the `Connection` header under test) and
/// returns the status and the body as JSON (the echo upstream's view), `Null` when not JSON.
async fn raw_with_body(port: u16, head: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("the gateway answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // One chunk is all the gateway and the echo write for these small answers.
        body.split_once("\r\n")
            .map(|(_, rest)| rest.rsplit_once("\r\n0\r\n").map_or(rest, |(c, _)| c))
            .unwrap_or(body)
            .to_string()
    } else {
        body.to_string()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn connection_cannot_remove_what_the_live_check_read() {
    let w = world().await;
    let token = transferrer(&w);
    let port = w.gw.port;
    let head = |connection: &str| {
        format!(
            "POST /api/transfers/t_1?mode=fast HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             X-Region: eu\r\nConnection: close\r\nConnection: {connection}"
        )
    };
    let (checks, upstream) = (w.idp.abac_requests(), w.echo.requests());
    // A proxy removes what Connection names: the IdP would approve a region and a JSON body
    // that the upstream never receives.
    for connection in [
        "x-region",
        "close, X-Region",
        "content-type",
        "keep-alive, Content-Type",
        "content-length",
        "transfer-encoding",
        "authorization",
        "x-request-id",
    ] {
        let (status, problem) = raw_with_body(port, &head(connection), BODY).await;
        assert_eq!(status, 400, "Connection: {connection}: {problem}");
        assert_eq!(problem["title"], "Bad request header", "{connection}");
    }
    assert_eq!(w.idp.abac_requests(), checks, "the IdP was asked");
    assert_eq!(w.echo.requests(), upstream, "the upstream was reached");

    // Connection's own options pass, and the upstream gets exactly what the IdP decided on.
    for connection in ["close", "keep-alive", "TE, keep-alive", "Upgrade"] {
        let (status, echoed) = raw_with_body(port, &head(connection), BODY).await;
        assert_eq!(status, 200, "Connection: {connection}: {echoed}");
        let (asked, _) = w.idp.abac_checks().pop().unwrap();
        assert_eq!(
            asked["resource"]["attributes"],
            json!({"amount": 80, "currency": "EUR", "region": "eu", "mode": "fast"}),
            "{connection}"
        );
        assert_eq!(echoed["headers"]["x-region"], "eu", "{connection}");
        assert_eq!(
            echoed["headers"]["content-type"], "application/json",
            "{connection}"
        );
        assert_eq!(echoed["body"], BODY, "{connection}");
    }
}

/// A second caller of the live-checked routes, with its own subject.
fn other_transferrer(w: &World) -> String {
    w.idp.mint(json!({
        "sub": "user_u", "aud": AUDIENCE,
        "permissions": {"client_abc:transfer": ["create"]},
        "abac_required": {"client_abc:transfer": ["create"]},
    }))
}

/// Sends `count` transfers at once on `route`, each with a fresh amount (so none is answered
/// from the decision cache); their statuses and `Retry-After` values.
async fn flood(w: &World, route: &str, token: &str, count: u32) -> Vec<(u16, Option<String>)> {
    let mut set = tokio::task::JoinSet::new();
    for amount in 1..=count {
        let (http, url, token) = (w.http.clone(), w.gw.url.clone(), token.to_string());
        let route = route.to_string();
        set.spawn(async move {
            let r = http
                .post(format!("{url}/api/{route}/t_1?mode=fast"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .header("x-region", "eu")
                .body(format!(
                    r#"{{"amount": {amount}, "payment": {{"currency": "EUR"}}}}"#
                ))
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (r.status().as_u16(), retry)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

async fn metrics(w: &World) -> String {
    w.http
        .get(format!("{}/metrics", w.gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One caller's uncached checks are bounded (8 in flight by default): beyond it, 429 with
/// `Retry-After` and no call to the IdP, while another caller's check goes through untouched.
#[tokio::test]
async fn a_callers_flood_of_fresh_checks_is_429_beyond_its_budget_and_nobody_else_is_affected() {
    let w = world().await;
    let (token, other) = (transferrer(&w), other_transferrer(&w));
    // Slow but within the gateway's 2 s IdP timeout: the first checks stay in flight.
    w.idp
        .set_abac_mode(AbacMode::Delay(Duration::from_millis(1200)));
    let (checks, upstream) = (w.idp.abac_requests(), w.echo.requests());
    let flooding = flood(&w, "transfers", &token, 40);
    let (answers, theirs) = tokio::join!(flooding, async {
        // Once the flood's checks are in flight, another caller's check.
        tokio::time::sleep(Duration::from_millis(300)).await;
        outcome(transfer(&w, "transfers", &other, BODY).await).await
    });
    assert_eq!(
        (theirs.0, theirs.1),
        (200, true),
        "another caller is not limited"
    );
    let allowed = answers.iter().filter(|(s, _)| *s == 200).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(
        allowed + limited.len(),
        answers.len(),
        "only 200 or 429: {answers:?}"
    );
    assert!(
        limited
            .iter()
            .all(|(_, retry)| retry.as_deref() == Some("1")),
        "{limited:?}"
    );
    let calls = w.idp.abac_requests() - checks;
    assert!(
        (1..=8).contains(&allowed) && calls == allowed + 1,
        "at most 8 of the flood's checks asked the IdP: {allowed} allowed, {calls} calls"
    );
    assert_eq!(
        w.echo.requests() - upstream,
        allowed + 1,
        "the upstream received exactly the allowed requests"
    );
    assert!(
        metrics(&w)
            .await
            .contains(r#"authgate_load_refusals_total{bound="abac_caller",reason="in_flight"}"#),
        "the refusals are counted"
    );
}

/// A caller whose flood times the IdP out opens the breaker, and buys nothing with it on a
/// fail-open route: its own requests are 503 (their calls failed, or no call is made while the
/// breaker it opened is open), none reaches the upstream; only a caller none of whose calls
/// failed is let through, unchecked, as the operator's `on_error = "allow"` says.
#[tokio::test]
async fn a_flood_of_fresh_checks_buys_no_fail_open() {
    let w = world().await;
    let (token, other) = (transferrer(&w), other_transferrer(&w));
    // Longer than the gateway's 2 s IdP timeout: every call the flood makes times out.
    w.idp.set_abac_mode(AbacMode::Delay(Duration::from_secs(3)));
    let (checks, upstream) = (w.idp.abac_requests(), w.echo.requests());
    let answers = flood(&w, "open-transfers", &token, 30).await;
    assert!(
        answers.iter().all(|(s, _)| *s == 503 || *s == 429),
        "the flood is refused, never let through: {answers:?}"
    );
    let calls = w.idp.abac_requests() - checks;
    assert!(
        (3..=8).contains(&calls),
        "the flood made at most its budget of calls, enough to open the breaker: {calls}"
    );
    assert!(metrics(&w).await.contains("authgate_abac_breaker_state 1"));
    // The breaker is open: the flooder still gets 503 (its calls opened it), with no call.
    let calls = w.idp.abac_requests();
    let (status, answered, _) = outcome(transfer(&w, "open-transfers", &token, BODY).await).await;
    assert_eq!((status, answered), (503, false), "the caller who opened it");
    assert_eq!(
        w.echo.requests(),
        upstream,
        "nothing of the flooder's was proxied"
    );
    // Another caller is let through unchecked, as the route says; nobody asks the IdP.
    let (status, answered, _) = outcome(transfer(&w, "open-transfers", &other, BODY).await).await;
    assert_eq!(
        (status, answered),
        (200, true),
        "a caller whose calls did not fail"
    );
    assert_eq!(
        w.idp.abac_requests(),
        calls,
        "no call while the breaker is open"
    );
    assert_eq!(w.echo.requests(), upstream + 1);
    let m = metrics(&w).await;
    assert!(
        m.contains(
            r#"authgate_load_refusals_total{bound="abac_fail_open",reason="opened_breaker"} 1"#
        ),
        "{m}"
    );
}

/// Random API keys cannot make the gateway relay one exchange each: a key that is not
/// well-formed is refused without a call, and exchanges of unknown keys are bounded per client
/// address (4 in flight by default), beyond which the answer is 429; a key already known keeps
/// working throughout, and a new real key works once the flood is over.
#[tokio::test]
async fn a_flood_of_random_api_keys_is_bounded_and_real_keys_keep_working() {
    let w = world().await;
    let claims = json!({"sub": "machine_k", "permissions": {"client_abc:invoice": ["read"]}});
    w.idp.add_api_key("ak_known_key", claims.clone(), 900);
    w.idp.add_api_key("ak_new_key", claims, 900);
    let get = |key: &[u8]| {
        w.http
            .get(format!("{}/api/invoices/1", w.gw.url))
            .header(
                "x-api-key",
                reqwest::header::HeaderValue::from_bytes(key).unwrap(),
            )
            .send()
    };
    assert_eq!(get(b"ak_known_key").await.unwrap().status(), 200);
    // Not well-formed: too short, too long, a space, a character outside -_.~+/=, not ASCII.
    let before = w.idp.exchange_requests();
    let long = "k".repeat(300);
    for key in [
        &b"abc"[..],
        long.as_bytes(),
        b"ak with space",
        b"ak_key;",
        b"ak_k\xe9y",
    ] {
        let r = get(key).await.unwrap();
        assert_eq!(r.status(), 401, "{:?}", String::from_utf8_lossy(key));
    }
    assert_eq!(
        w.idp.exchange_requests(),
        before,
        "malformed keys were never exchanged"
    );

    // A flood of well-formed random keys while the IdP is slow: at most 4 exchanges in flight.
    w.idp.set_exchange_delay(Duration::from_millis(1000));
    let (before, upstream) = (w.idp.exchange_requests(), w.echo.requests());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (http, url) = (w.http.clone(), w.gw.url.clone());
        set.spawn(async move {
            let r = http
                .get(format!("{url}/api/invoices/1"))
                .header("x-api-key", format!("ak_random_{i:04}_guess"))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        });
    }
    // During the flood, the known key answers from its cache.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(b"ak_known_key").await.unwrap().status(),
        200,
        "a known key during the flood"
    );
    let mut statuses = Vec::new();
    while let Some(s) = set.join_next().await {
        statuses.push(s.unwrap());
    }
    let exchanged = w.idp.exchange_requests() - before;
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(refused + limited, 40, "{statuses:?}");
    assert!(
        (1..=4).contains(&exchanged) && refused == exchanged,
        "only the admitted keys were exchanged: {exchanged} exchanges, {refused} refused"
    );
    assert_eq!(
        w.echo.requests(),
        upstream + 1,
        "only the known key's request was proxied"
    );
    assert!(metrics(&w)
        .await
        .contains(r#"authgate_load_refusals_total{bound="api_key_caller",reason="in_flight"}"#));
    // The flood over, a real key never seen before is exchanged and works.
    w.idp.set_exchange_delay(Duration::ZERO);
    assert_eq!(
        get(b"ak_new_key").await.unwrap().status(),
        200,
        "a new real key after the flood"
    );
}
