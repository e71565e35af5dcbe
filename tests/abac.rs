//! End to end: live ABAC checks, API keys and signed identity for upstreams.

mod common;

use common::*;
use devidp::idp::{demo_policy, AbacMode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A route whose refund permission is decided live, with attributes from every source.
const PAYMENTS: &str = r#"
[[routes]]
name = "payment-refund"
path = "/api/payments/{id}/refund"
methods = ["POST"]
upstream = "app"
permission = "payment:refund"
entity_id = "id"
body_limit = 1024
clients = ["billing"]
signed_identity = true

[routes.attributes]
amount = "body:amount"
currency = "body:payment.currency"
region = "header:x-region"
mode = "query:mode"
payment = "path:id"

[[routes]]
name = "payment-read"
path = "/api/payments/{id}"
methods = ["GET"]
upstream = "app"
permission = "payment:read"
signed_identity = true
clients = ["billing"]
"#;

fn setup(abac: &str) -> Setup {
    Setup {
        extra: format!("{PAYMENTS}\n[abac]\n{abac}\n"),
        ..Setup::default()
    }
}

fn refunder(w: &World) -> String {
    w.idp.mint(json!({
        "sub": "user_r", "email": "r@example.com", "aud": AUDIENCE,
        "permissions": {"client_abc:payment": ["read", "refund"]},
        "abac_required": {"client_abc:payment": ["refund"]},
    }))
}

async fn refund(w: &World, token: &str, body: &str) -> reqwest::Response {
    w.http
        .post(format!("{}/api/payments/p_7/refund?mode=fast", w.gw.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("x-region", "eu")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_idp_decides_with_attributes_from_path_query_header_and_body() {
    let w = World::start_with(setup("")).await;
    let token = refunder(&w);
    let body = r#"{"amount": 80, "payment": {"currency": "EUR"}, "note": "keep me"}"#;
    let r = refund(&w, &token, body).await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(
        echoed["body"], body,
        "the body reached the upstream unchanged"
    );
    assert_eq!(
        echoed["headers"]["x-auth-permission"],
        "client_abc:payment:refund"
    );

    let checks = w.idp.abac_checks();
    assert_eq!(checks.len(), 1);
    let (request, credential) = &checks[0];
    assert_eq!(
        credential.as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(request["entityType"], "client_abc:payment");
    assert_eq!(request["entityId"], "p_7");
    assert_eq!(request["permission"], "refund");
    assert_eq!(
        request["resource"]["attributes"],
        json!({"amount": 80, "currency": "EUR", "region": "eu", "mode": "fast", "payment": "p_7"})
    );

    // Over the demo policy's limit: denied, 403 naming the permission.
    let r = refund(&w, &token, r#"{"amount": 500}"#).await;
    assert_eq!(r.status(), 403);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["permission"], "refund");
    assert!(problem["request_id"].as_str().is_some());
}

#[tokio::test]
async fn bodies_are_checked_before_the_idp_is_asked() {
    let w = World::start_with(setup("")).await;
    let token = refunder(&w);
    let big = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(2000));
    assert_eq!(refund(&w, &token, &big).await.status(), 413);
    let r = w
        .http
        .post(format!("{}/api/payments/p_7/refund", w.gw.url))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("amount=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(refund(&w, &token, "{not json").await.status(), 400);
    assert_eq!(w.idp.abac_requests(), 0);
}

#[tokio::test]
async fn decisions_are_cached_and_identical_checks_share_one_call() {
    let w = World::start_with(setup("allow_ttl = \"30s\"\ndeny_ttl = \"30s\"")).await;
    let token = refunder(&w);
    for _ in 0..3 {
        assert_eq!(refund(&w, &token, r#"{"amount": 10}"#).await.status(), 200);
    }
    assert_eq!(
        w.idp.abac_requests(),
        1,
        "allowed decisions are reused within allow_ttl"
    );
    for _ in 0..2 {
        assert_eq!(refund(&w, &token, r#"{"amount": 900}"#).await.status(), 403);
    }
    assert_eq!(
        w.idp.abac_requests(),
        2,
        "other attributes, another decision; denials are reused too"
    );

    // 50 identical concurrent checks while the IdP is slow: one call.
    w.idp
        .set_abac_mode(AbacMode::Delay(Duration::from_millis(500)));
    let before = w.idp.abac_requests();
    let w = Arc::new(w);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (w, token) = (w.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            refund(&w, &token, r#"{"amount": 42}"#)
                .await
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        w.idp.abac_requests() - before,
        1,
        "concurrent identical checks share one IdP call"
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
        metrics.contains("authgate_abac_checks_total{result=\"allowed\",source=\"cache\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authgate_abac_check_duration_seconds_count"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unusable_idp_answer_fails_closed_with_503() {
    let w = World::start_with(setup(
        "allow_ttl = \"0s\"\ndeny_ttl = \"0s\"\nbreaker_failures = 100",
    ))
    .await;
    let token = refunder(&w);
    for (mode, name) in [
        (AbacMode::Status(500), "500"),
        (AbacMode::Malformed, "malformed"),
        (AbacMode::Delay(Duration::from_secs(4)), "timeout"),
    ] {
        w.idp.set_abac_mode(mode);
        let r = refund(&w, &token, r#"{"amount": 1}"#).await;
        assert_eq!(r.status(), 503, "{name}");
        assert_eq!(r.headers()["retry-after"], "5", "{name}");
    }
    // A 4xx is an answer: no.
    w.idp.set_abac_mode(AbacMode::Status(403));
    assert_eq!(refund(&w, &token, r#"{"amount": 1}"#).await.status(), 403);
}

#[tokio::test]
async fn the_breaker_stops_calls_to_a_failing_idp_and_recovers() {
    let w = World::start_with(setup(
        "allow_ttl = \"0s\"\nbreaker_failures = 3\nbreaker_cooldown = \"1s\"",
    ))
    .await;
    let token = refunder(&w);
    // Only unavailability counts (a 500 could be the caller's doing): 503 here.
    w.idp.set_abac_mode(AbacMode::Status(503));
    for _ in 0..3 {
        assert_eq!(refund(&w, &token, r#"{"amount": 1}"#).await.status(), 503);
    }
    assert_eq!(w.idp.abac_requests(), 3);
    for _ in 0..5 {
        let r = refund(&w, &token, r#"{"amount": 1}"#).await;
        assert_eq!(r.status(), 503);
    }
    assert_eq!(w.idp.abac_requests(), 3, "an open breaker makes no calls");
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
        metrics.contains("authgate_abac_breaker_state 1"),
        "{metrics}"
    );
    w.idp.set_abac_mode(AbacMode::Policy(Arc::new(demo_policy)));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        refund(&w, &token, r#"{"amount": 1}"#).await.status(),
        200,
        "one trial call after the cooldown closes the breaker"
    );
    assert_eq!(refund(&w, &token, r#"{"amount": 1}"#).await.status(), 200);
    assert_eq!(w.idp.abac_requests(), 5);
}

#[tokio::test]
async fn on_error_allow_lets_requests_through_when_the_idp_is_down() {
    let extra = PAYMENTS.replace(
        "signed_identity = true\n\n[routes.attributes]",
        "signed_identity = true\non_error = \"allow\"\n\n[routes.attributes]",
    );
    let w = World::start_with(Setup {
        extra,
        ..Setup::default()
    })
    .await;
    // Only unavailability may let it through: a 500 from the IdP is 503.
    w.idp.set_abac_mode(AbacMode::Status(500));
    assert_eq!(
        refund(&w, &refunder(&w), r#"{"amount": 2}"#).await.status(),
        503
    );
    // The calls that find the IdP down are their caller's own: 503, never let through, until
    // they open the breaker (5 in a row).
    w.idp.set_abac_mode(AbacMode::Status(502));
    let before = w.idp.abac_requests();
    for amount in 1..=5 {
        let body = format!(r#"{{"amount": {amount}}}"#);
        assert_eq!(refund(&w, &refunder(&w), &body).await.status(), 503);
    }
    assert_eq!(
        w.idp.abac_requests(),
        before + 5,
        "each check was attempted"
    );
    // The breaker open, no call is made: another caller is let through, as the route says; the
    // caller whose calls opened it is not.
    let other = w.idp.mint(json!({
        "sub": "user_s", "aud": AUDIENCE,
        "permissions": {"client_abc:payment": ["read", "refund"]},
        "abac_required": {"client_abc:payment": ["refund"]},
    }));
    assert_eq!(refund(&w, &other, r#"{"amount": 1}"#).await.status(), 200);
    assert_eq!(
        refund(&w, &refunder(&w), r#"{"amount": 1}"#).await.status(),
        503
    );
    assert_eq!(
        w.idp.abac_requests(),
        before + 5,
        "no call while the breaker is open"
    );
}

#[tokio::test]
async fn api_keys_are_exchanged_once_and_never_forwarded() {
    let w = World::start_with(setup("")).await;
    w.idp.add_api_key("ak_live_good", json!({"sub": "machine_1", "apiKeyId": "key_1", "permissions": {"client_abc:invoice": ["read"]}}), 900);
    for _ in 0..3 {
        let r = w
            .http
            .get(format!("{}/api/invoices/42", w.gw.url))
            .header("x-api-key", "ak_live_good")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let echoed: Value = r.json().await.unwrap();
        assert_eq!(echoed["headers"]["x-auth-subject"], "machine_1");
        assert!(
            echoed["headers"].get("x-api-key").is_none(),
            "the key reached the upstream"
        );
    }
    assert_eq!(w.idp.exchange_requests(), 1);

    // A bad key: 401, and the refusal is remembered.
    for _ in 0..3 {
        let r = w
            .http
            .get(format!("{}/api/invoices/42", w.gw.url))
            .header("x-api-key", "ak_live_bad")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(
        w.idp.exchange_requests(),
        2,
        "a refused key is not exchanged again within failure_ttl"
    );
    assert!(
        !w.gw.log.lock().unwrap().contains("ak_live_"),
        "keys never reach the logs"
    );

    // Machines get live checks too, authenticated with their key.
    w.idp.add_api_key("ak_live_refunds", json!({"sub": "machine_2", "permissions": {"client_abc:payment": ["refund"]}, "abac_required": {"client_abc:payment": ["refund"]}}), 900);
    let r = w
        .http
        .post(format!("{}/api/payments/p_1/refund", w.gw.url))
        .header("x-api-key", "ak_live_refunds")
        .header("content-type", "application/json")
        .body(r#"{"amount": 5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        w.idp.abac_checks().last().unwrap().1.as_deref(),
        Some("x-api-key ak_live_refunds")
    );
}

#[tokio::test]
async fn concurrent_requests_with_one_key_share_one_exchange_and_tokens_refresh_before_expiry() {
    let w = Arc::new(World::start_with(setup("")).await);
    // The token lives 62 s: it is refreshed 60 s before, so after ~2 s.
    w.idp.add_api_key(
        "ak_live_short",
        json!({"sub": "machine_3", "permissions": {"client_abc:invoice": ["read"]}}),
        62,
    );
    w.idp.set_exchange_delay(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            w.http
                .get(format!("{}/api/invoices/42", w.gw.url))
                .header("x-api-key", "ak_live_short")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(w.idp.exchange_requests(), 1);
    w.idp.set_exchange_delay(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let r = w
        .http
        .get(format!("{}/api/invoices/42", w.gw.url))
        .header("x-api-key", "ak_live_short")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        w.idp.exchange_requests(),
        2,
        "the token was exchanged again 60 s before it expired"
    );
}

#[tokio::test]
async fn upstreams_get_a_signed_identity_they_can_verify() {
    let w = World::start_with(setup("")).await;
    let token = refunder(&w);
    let r = w
        .http
        .get(format!("{}/api/payments/p_1", w.gw.url))
        .bearer_auth(&token)
        .header("x-auth-jwt", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    let assertion = echoed["headers"]["x-auth-jwt"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(assertion, "forged");

    let jwks: jsonwebtoken::jwk::JwkSet = w
        .http
        .get(format!("{}/.well-known/authgate/jwks.json", w.gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&assertion).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&["app"]);
    v.set_issuer(&["authgate"]);
    let claims = jsonwebtoken::decode::<Value>(
        &assertion,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "user_r");
    assert_eq!(claims["client"], "billing");
    assert_eq!(claims["permission"], "client_abc:payment:read");
    assert_eq!(claims["decision"], "static");

    let r = refund(&w, &token, r#"{"amount": 3}"#).await;
    let echoed: Value = r.json().await.unwrap();
    let assertion = echoed["headers"]["x-auth-jwt"].as_str().unwrap();
    let claims = jsonwebtoken::decode::<Value>(
        assertion,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["decision"], "abac");

    // Routes without signed identity never pass a client's forged assertion on.
    let token = w.token(json!({"client_abc:invoice": ["read"]}));
    let r = w
        .http
        .get(format!("{}/api/invoices/1", w.gw.url))
        .bearer_auth(&token)
        .header("x-auth-jwt", "forged")
        .send()
        .await
        .unwrap();
    let echoed: Value = r.json().await.unwrap();
    assert!(echoed["headers"].get("x-auth-jwt").is_none());
}

#[tokio::test]
async fn every_refusal_is_logged_with_its_decision_path() {
    let w = World::start_with(setup("")).await;
    let token = w.token(json!({"client_abc:report": ["read"]}));
    let r = w.get("/api/invoices/42", Some(&token)).await;
    assert_eq!(r.status(), 403);
    assert!(
        r.headers().get("x-authgate-reason").is_none(),
        "reasons are not sent unless the operator asks"
    );
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let found = eventually(Duration::from_secs(5), || async {
        w.gw.log.lock().unwrap().contains(&rid)
    })
    .await;
    assert!(found);
    let log = w.gw.log.lock().unwrap().clone();
    let line = log.lines().find(|l| l.contains(&rid)).unwrap();
    for field in [
        "status=403",
        "route=\"invoice-read\"",
        "client=\"billing\"",
        "credential=\"bearer\"",
        "subject=\"user_1\"",
        "entity=\"client_abc:invoice\"",
        "permission=\"read\"",
        "decision=\"static\"",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(!log.contains(&token));
}

#[tokio::test]
async fn operators_can_ask_for_the_reason_in_a_header() {
    let w = World::start_with(Setup {
        proxy_extra: "debug_reason_header = true".into(),
        ..Setup::default()
    })
    .await;
    let r = w.get("/api/invoices/42", Some("garbage")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["x-authgate-reason"],
        "The token is not a well-formed JWT."
    );
}

/// How a stand-in check-permission endpoint fails on the wire.
#[derive(Clone, Copy, Debug)]
enum WireFault {
    /// Reads the request, then resets the connection (RST) before answering.
    Reset,
    /// Answers `200` with a `Content-Length` of 64 and a 20-byte start of a JSON decision that
    /// says `{"allowed": true`, then closes: an answer cut short.
    CutShort,
}

/// A check-permission endpoint failing as `fault`, counting the requests it read.
async fn faulty_check_endpoint(
    fault: WireFault,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                match fault {
                    WireFault::Reset => {
                        let _ = s.set_zero_linger();
                    }
                    WireFault::CutShort => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n{\"allowed\": true")
                            .await;
                        let _ = s.flush().await;
                    }
                }
            });
        }
    });
    (addr, asked)
}

/// The live check fails closed when the IdP resets the connection or cuts its answer short,
/// even when what it did send begins with `{"allowed": true`: 503 with `Retry-After`, and the
/// upstream never reached.
#[tokio::test]
async fn a_reset_or_cut_short_check_answer_fails_closed() {
    use std::sync::atomic::Ordering;
    for fault in [WireFault::Reset, WireFault::CutShort] {
        let (endpoint, asked) = faulty_check_endpoint(fault).await;
        let (idp, echo) = idp_and_echo().await;
        let setup = setup("");
        let gw = start_gateway(
            |port, admin| {
                let text = config(port, admin, &idp, echo.addr(), &setup);
                let ours = format!(
                    "check_permission_url = \"{}/api/auth/check-permission\"",
                    idp.issuer()
                );
                assert!(text.contains(&ours));
                text.replace(
                    &ours,
                    &format!(
                        "check_permission_url = \"http://{endpoint}/api/auth/check-permission\""
                    ),
                )
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
        let reached = w.echo.requests();
        let r = refund(
            &w,
            &refunder(&w),
            r#"{"amount": 20, "payment": {"currency": "EUR"}}"#,
        )
        .await;
        assert_eq!(r.status(), 503, "{fault:?}");
        assert!(r.headers().contains_key("retry-after"), "{fault:?}");
        assert!(
            asked.load(Ordering::SeqCst) >= 1,
            "{fault:?}: the IdP was never asked"
        );
        assert_eq!(
            w.echo.requests(),
            reached,
            "{fault:?}: the refund reached the upstream"
        );
    }
}
