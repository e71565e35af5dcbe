//! End to end: bearer JWTs through the real gateway, mock IdP and echo upstream over loopback.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use devidp::keys::SigningKey;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::time::Duration;

fn invoice_read() -> Value {
    json!({"client_abc:invoice": ["read"]})
}

async fn body(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

#[tokio::test]
async fn allowed_request_reaches_upstream_with_identity_and_without_spoofed_headers() {
    let w = World::start().await;
    let token = w.token(invoice_read());
    let r = w
        .http
        .get(format!("{}/api/invoices/42?x=1", w.gw.url))
        .bearer_auth(&token)
        .header("x-auth-subject", "admin")
        .header("X-Auth-Roles", "superuser")
        .header("x-other", "kept")
        .header("x-forwarded-for", "10.9.9.9")
        .header("cookie", "authgate=not-a-session; theme=dark")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let echoed = body(r).await;
    let h = &echoed["headers"];
    assert_eq!(h["x-auth-subject"], "user_1");
    assert_eq!(h["x-auth-email"], "one@example.com");
    assert_eq!(h["x-auth-client"], "billing");
    assert_eq!(h["x-auth-permission"], "client_abc:invoice:read");
    assert!(
        h.get("x-auth-roles").is_none(),
        "spoofed header reached the upstream: {h}"
    );
    assert!(
        h.get("authorization").is_none(),
        "the bearer token was forwarded: {h}"
    );
    assert_eq!(h["x-other"], "kept");
    // The gateway's own headers: the same request id both ways, x-forwarded-for replaced (the
    // caller is no trusted proxy), the scheme; the caller's Host kept; the gateway's cookie
    // removed, others kept.
    assert_eq!(h["x-request-id"], request_id.as_str());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["host"], w.gw.url.trim_start_matches("http://"));
    assert_eq!(h["cookie"], "theme=dark");
    assert_eq!(echoed["path"], "/api/invoices/42");
    assert_eq!(echoed["query"], "x=1");
}

#[tokio::test]
async fn public_routes_strip_identity_headers_too() {
    let w = World::start().await;
    let r = w
        .http
        .get(format!("{}/public/x", w.gw.url))
        .header("x-auth-subject", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(body(r).await["headers"].get("x-auth-subject").is_none());
}

#[tokio::test]
async fn refusals_have_the_right_status_and_headers() {
    let w = World::start().await;

    let r = w.get("/api/invoices/42", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"authgate\"");
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    let r = w.get("/api/invoices/42", Some("not-a-jwt")).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"invalid_token\""));

    // Valid token without the permission: 403 naming entity and permission.
    let token = w.token(json!({"client_abc:report": ["read"]}));
    let r = w.get("/api/invoices/42", Some(&token)).await;
    assert_eq!(r.status(), 403);
    let problem = body(r).await;
    assert_eq!(problem["entity"], "client_abc:invoice");
    assert_eq!(problem["permission"], "read");
    assert!(!problem.to_string().contains(&token));

    // Another client's namespace grants nothing here.
    let token = w.token(json!({"client_xyz:invoice": ["read"]}));
    assert_eq!(w.get("/api/invoices/42", Some(&token)).await.status(), 403);

    // A permission on the one entity is enough (type:id keys).
    let token = w.token(json!({"client_abc:invoice:42": ["read"]}));
    assert_eq!(w.get("/api/invoices/42", Some(&token)).await.status(), 200);
    assert_eq!(w.get("/api/invoices/43", Some(&token)).await.status(), 403);

    // Marked for a live ABAC decision: the IdP decides (tests/abac.rs covers it in depth).
    let token = w.idp.mint(json!({"sub": "u", "aud": AUDIENCE, "permissions": {"client_abc:invoice": ["refund"]}, "abac_required": {"client_abc:invoice": ["refund"]}}));
    let r = w
        .http
        .post(format!("{}/api/invoices/42/refund", w.gw.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(w.idp.abac_requests(), 1);

    // Any valid identity passes an "authenticated" route.
    let token = w.token(json!({}));
    assert_eq!(w.get("/api/me", Some(&token)).await.status(), 200);

    assert_eq!(w.get("/nowhere", None).await.status(), 404);
    let r = w
        .http
        .delete(format!("{}/api/invoices/42", w.gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let r = w.get("/broken/x", None).await;
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn every_bad_token_is_refused() {
    let w = World::start().await;
    let base = || json!({"sub": "user_1", "aud": AUDIENCE, "permissions": invoice_read()});
    let with = |k: &str, v: Value| {
        let mut c = base();
        c[k] = v;
        c
    };
    let foreign = SigningKey::generate(Algorithm::RS256).unwrap();
    let header = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let payload = URL_SAFE_NO_PAD.encode(json!({"sub": "user_1", "aud": AUDIENCE, "iss": w.idp.issuer(), "exp": now() + 600, "permissions": invoice_read()}).to_string());
    let hs256 = {
        use aws_lc_rs::hmac;
        let signing_input = format!(
            "{}.{payload}",
            header(json!({"alg": "HS256", "typ": "JWT", "kid": w.idp.active_kid()}))
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"secret");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(hmac::sign(&key, signing_input.as_bytes()))
        )
    };
    // A foreign key claiming the IdP's kid: the signature cannot verify.
    let forged = {
        let t = foreign.sign(&json!({"sub": "user_1", "aud": AUDIENCE, "iss": w.idp.issuer(), "exp": now() + 600, "permissions": invoice_read()}));
        let parts: Vec<&str> = t.split('.').collect();
        let h = header(json!({"alg": "RS256", "typ": "JWT", "kid": w.idp.active_kid()}));
        format!("{h}.{}.{}", parts[1], parts[2])
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", w.idp.mint(with("exp", json!(now() - 3600))), "expired"),
        ("not yet valid", w.idp.mint(with("nbf", json!(now() + 3600))), "not valid yet"),
        ("wrong audience", w.idp.mint(with("aud", json!("https://other.test"))), "another audience"),
        ("no audience", w.idp.mint({ let mut c = base(); c.as_object_mut().unwrap().remove("aud"); c }), "another audience"),
        ("wrong issuer", w.idp.mint(with("iss", json!("https://evil.test"))), "another issuer"),
        ("no subject", w.idp.mint({ let mut c = base(); c.as_object_mut().unwrap().remove("sub"); c }), "sub"),
        ("alg none", format!("{}.{payload}.", header(json!({"alg": "none", "typ": "JWT"}))), "not a well-formed JWT"),
        ("HS256", hs256, "algorithm HS256 is not accepted"),
        ("unknown key", foreign.sign(&json!({"sub": "user_1", "aud": AUDIENCE, "iss": w.idp.issuer(), "exp": now() + 600})), "unknown key"),
        ("bad signature", forged, "signature is invalid"),
        ("tampered payload", {
            let t = w.token(json!({"client_abc:report": ["read"]}));
            let parts: Vec<&str> = t.split('.').collect();
            format!("{}.{payload}.{}", parts[0], parts[2])
        }, "signature is invalid"),
    ];
    for (name, token, reason) in cases {
        for attempt in 0..2 {
            let r = w.get("/api/invoices/42", Some(&token)).await;
            assert_eq!(r.status(), 401, "{name} (attempt {attempt})");
            let www = r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(www.contains("error=\"invalid_token\""), "{name}: {www}");
            assert!(www.contains(reason), "{name}: {www}");
        }
    }
    // A millisecond iat (Auther) does not matter: exp decides.
    let token = w.idp.mint(with("iat", json!(now() * 1000)));
    assert_eq!(w.get("/api/invoices/42", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn path_tricks_never_reach_a_protected_path_unauthenticated() {
    let w = World::start().await;
    for path in [
        "/public/../api/invoices/42",
        "/public/%2e%2e/api/invoices/42",
        "/public/.%2E/api/invoices/42",
        "//api//invoices/42",
        "/public/./../api/me",
        "/%61pi/me",
    ] {
        // Send the path as is: reqwest would normalise dots itself.
        let status = raw_get(w.gw.port, path).await;
        assert_eq!(status, 401, "{path}");
    }
    for path in [
        "/public/..%2Fapi/me",
        "/public%2f..%2fapi/me",
        "/public/..%5capi/me",
        "/public/a%00b",
    ] {
        assert_eq!(raw_get(w.gw.port, path).await, 400, "{path}");
    }
    // The upstream sees the normalised path.
    let token = w.token(invoice_read());
    let r = w.get("/api/./invoices//42", Some(&token)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(body(r).await["path"], "/api/invoices/42");
}

async fn raw_get(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn unknown_origins_are_refused_and_browsers_get_html() {
    let w = World::start().await;
    let token = w.token(invoice_read());
    let r = w
        .http
        .get(format!("{}/api/invoices/42", w.gw.url))
        .bearer_auth(&token)
        .header("origin", "https://evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(body(r).await["detail"]
        .as_str()
        .unwrap()
        .contains("https://evil.test"));
    // A token issued to billing (azp) is refused from the other client's origin.
    let bound = w.idp.mint(
        json!({"sub": "user_1", "aud": AUDIENCE, "azp": "abc", "permissions": invoice_read()}),
    );
    let r = w
        .http
        .get(format!("{}/api/invoices/42", w.gw.url))
        .bearer_auth(&bound)
        .header("origin", "https://reports.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = w
        .http
        .get(format!("{}/api/invoices/42", w.gw.url))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("<h1>Authentication required</h1>"));
}

#[tokio::test]
async fn key_rotation_is_picked_up_and_removed_keys_stop_working() {
    let w = World::start_with(Setup {
        idp_extra: "jwks_refresh_interval = \"300ms\"".into(),
        ..Setup::default()
    })
    .await;
    let old_kid = w.idp.active_kid();
    let old = w.token(invoice_read());
    assert_eq!(w.get("/api/invoices/42", Some(&old)).await.status(), 200);

    // A new key, served later: its first token triggers a refetch.
    w.idp.rotate(Algorithm::EdDSA).unwrap();
    let new = w.token(invoice_read());
    assert_eq!(w.get("/api/invoices/42", Some(&new)).await.status(), 200);
    // The old key is still published: its tokens, even new ones, still pass.
    let old_fresh = w
        .idp
        .mint_with(
            &old_kid,
            json!({"sub": "user_2", "aud": AUDIENCE, "permissions": invoice_read()}),
        )
        .unwrap();
    assert_eq!(
        w.get("/api/invoices/42", Some(&old_fresh)).await.status(),
        200
    );

    // Removed from the JWKS: after the next refresh its tokens are refused, cached or not.
    assert!(w.idp.remove_key(&old_kid));
    let refused = eventually(Duration::from_secs(5), || async {
        w.get("/api/invoices/42", Some(&old)).await.status() == 401
    })
    .await;
    assert!(refused, "a token of a removed key was still accepted");
    assert_eq!(
        w.get("/api/invoices/42", Some(&old_fresh)).await.status(),
        401
    );
    assert_eq!(w.get("/api/invoices/42", Some(&new)).await.status(), 200);
}

#[tokio::test]
async fn idp_down_with_cached_keys_still_verifies() {
    let w = World::start().await;
    let seen = w.token(invoice_read());
    assert_eq!(w.get("/api/invoices/42", Some(&seen)).await.status(), 200);
    w.idp.set_available(false);
    // First a key fetch fails: an unknown kid sends the gateway to the (down) IdP.
    let jwks_before = w.idp.jwks_requests();
    let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
    let t = stranger
        .sign(&json!({"sub": "x", "aud": AUDIENCE, "iss": w.idp.issuer(), "exp": now() + 60}));
    assert_eq!(w.get("/api/invoices/42", Some(&t)).await.status(), 401);
    assert!(
        w.idp.jwks_requests() > jwks_before,
        "no key fetch was tried"
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
        metrics.contains("authgate_jwks_fetches_total{result=\"error\"}"),
        "{metrics}"
    );
    // The failed fetch kept the cached keys. A token never seen before, signed by a cached
    // key: no IdP call needed.
    let fresh = w
        .idp
        .mint(json!({"sub": "user_9", "aud": AUDIENCE, "permissions": invoice_read()}));
    assert_eq!(w.get("/api/invoices/42", Some(&fresh)).await.status(), 200);
    assert_eq!(w.get("/api/invoices/42", Some(&seen)).await.status(), 200);
    // An unknown kid while the IdP is down is refused as such, not a crash.
    let foreign = SigningKey::generate(Algorithm::ES256).unwrap();
    let t = foreign
        .sign(&json!({"sub": "x", "aud": AUDIENCE, "iss": w.idp.issuer(), "exp": now() + 60}));
    assert_eq!(w.get("/api/invoices/42", Some(&t)).await.status(), 401);
}

#[tokio::test]
async fn idp_down_from_the_start_fails_closed_with_503() {
    let idp = devidp::idp::DevIdp::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    idp.set_audience(AUDIENCE);
    idp.set_available(false);
    let echo = devidp::echo::EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let gw = start_gateway(
        |port, admin| config(port, admin, &idp, echo.addr(), &Setup::default()),
        false,
    )
    .await;
    let http = client();
    let upstream_before = echo.requests();
    assert_eq!(
        http.get(format!("{}/readyz", gw.admin))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let token = idp.mint(json!({"sub": "u", "aud": AUDIENCE, "permissions": invoice_read()}));
    let r = http
        .get(format!("{}/api/invoices/42", gw.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(
        echo.requests(),
        upstream_before,
        "a request reached the upstream without a verified token"
    );
    // Public routes keep working, and once the IdP is back the gateway becomes ready.
    assert_eq!(
        http.get(format!("{}/public/x", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    idp.set_available(true);
    let ready = eventually(Duration::from_secs(10), || async {
        http.get(format!("{}/readyz", gw.admin))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert!(ready);
    assert_eq!(
        http.get(format!("{}/api/invoices/42", gw.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn verified_tokens_are_cached_and_metrics_count_requests() {
    let w = World::start().await;
    let token = w.token(invoice_read());
    for _ in 0..5 {
        assert_eq!(w.get("/api/invoices/42", Some(&token)).await.status(), 200);
    }
    assert_eq!(w.get("/api/invoices/42", None).await.status(), 401);
    // Requests are counted in Pingora's logging phase, just after the response is sent.
    let wanted = "authgate_requests_total{client=\"billing\",outcome=\"unauthenticated\",route=\"invoice-read\"} 1";
    let metrics_url = format!("{}/metrics", w.gw.admin);
    eventually(Duration::from_secs(5), || async {
        w.http
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains(wanted)
    })
    .await;
    let metrics = w
        .http
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authgate_jwt_verifications_total{result=\"verified\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authgate_jwt_verifications_total{result=\"cached\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("authgate_requests_total{client=\"billing\",outcome=\"proxied\",route=\"invoice-read\"} 5"), "{metrics}");
    assert!(metrics.contains("authgate_requests_total{client=\"billing\",outcome=\"unauthenticated\",route=\"invoice-read\"} 1"), "{metrics}");
    assert!(
        metrics.contains("authgate_jwks_fetches_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authgate_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(
        w.http
            .get(format!("{}/healthz", w.gw.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Tokens never reach the logs.
    assert!(!w.gw.log.lock().unwrap().contains(&token));
}

/// `X-Forwarded-Host` and `X-Forwarded-Proto` name the client and the scheme only when the
/// request comes from a trusted proxy; from anyone else they are ignored.
#[tokio::test]
async fn forwarded_host_and_proto_count_only_from_trusted_proxies() {
    // Tokens bound to a client (azp) pass only from that client: the status shows which client
    // the request's origin named (an unbound token would name none on a route serving both).
    let token_for = |w: &World, azp: &str| {
        w.idp
            .mint(json!({"sub": "user_1", "aud": AUDIENCE, "azp": azp}))
    };
    let send = |w: &World, token: String| {
        w.http
            .get(format!("{}/api/me", w.gw.url))
            .bearer_auth(token)
            .header("x-forwarded-host", "reports.test")
            .header("x-forwarded-proto", "https")
            .send()
    };

    let trusted = World::start_with(Setup {
        proxy_extra: "trusted_proxies = [\"127.0.0.1\"]".into(),
        ..Setup::default()
    })
    .await;
    let r = send(&trusted, token_for(&trusted, "xyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let h = &body(r).await["headers"];
    assert_eq!(
        h["x-auth-client"], "reports",
        "the trusted proxy's X-Forwarded-Host names the client: {h}"
    );
    assert_eq!(h["x-forwarded-proto"], "https");

    let untrusted = World::start().await;
    assert_eq!(
        send(&untrusted, token_for(&untrusted, "xyz"))
            .await
            .unwrap()
            .status(),
        403,
        "an untrusted X-Forwarded-Host named the client"
    );
    let r = send(&untrusted, token_for(&untrusted, "abc"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = &body(r).await["headers"];
    assert_eq!(
        h["x-auth-client"], "billing",
        "an untrusted X-Forwarded-Host was believed: {h}"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
}
