//! Tests for claims the README and SECURITY.md make that no other test proves: the
//! rejected-token cache, the key-refetch rate limit at its default, reloads (requests finish on
//! their config, nobody is signed out, an unapplied change keeps being named), `__Host-` and
//! `Secure` cookies over HTTPS, and the session path against an IdP shaped like the one the
//! gateway is first deployed with (opaque access tokens, no permissions in id_tokens, no new
//! id_token on refresh, check-permission refusing Bearer tokens).

mod common;

use common::browser::*;
use common::*;
use devidp::echo::EchoServer;
use devidp::idp::DevIdp;
use devidp::keys::SigningKey;
use jsonwebtoken::Algorithm;
use reqwest::header::ACCEPT;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

#[tokio::test]
async fn a_replayed_bad_token_costs_no_signature_check() {
    let w = World::start().await;
    let good = w.token(json!({"client_abc:invoice": ["read"]}));
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = w
        .idp
        .mint(json!({"sub": "mallory", "aud": AUDIENCE}))
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    let forged = parts.join(".");
    for _ in 0..5 {
        assert_eq!(w.get("/api/me", Some(&forged)).await.status(), 401);
    }
    let m = metrics(&w).await;
    assert!(
        m.contains("authgate_jwt_verifications_total{result=\"bad_signature\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("authgate_jwt_verifications_total{result=\"rejected_cached\"} 4"),
        "{m}"
    );
}

#[tokio::test]
async fn unknown_kids_refetch_keys_at_most_every_ten_seconds_by_default() {
    let (idp, echo) = idp_and_echo().await;
    let gw = start_gateway(
        |port, admin| {
            let text = config(port, admin, &idp, echo.addr(), &Setup::default());
            assert!(text.contains("jwks_min_refetch_interval = \"1ms\"\n"));
            text.replace("jwks_min_refetch_interval = \"1ms\"\n", "")
        },
        true,
    )
    .await;
    let http = client();
    let before = idp.jwks_requests();
    let started = Instant::now();
    for i in 0..10 {
        let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
        let t = stranger.sign(&json!({"sub": format!("s{i}"), "aud": AUDIENCE, "iss": idp.issuer(), "exp": now() + 60}));
        assert_eq!(
            http.get(format!("{}/api/me", gw.url))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    assert!(started.elapsed() < Duration::from_secs(9));
    // The start-up fetch was less than 10 s ago: none of the ten unknown kids fetched again.
    assert_eq!(
        idp.jwks_requests(),
        before,
        "unknown kids made the gateway fetch the JWKS within the default interval"
    );
}

/// An upstream answering `200 done` after `delay`, and the count of requests it has read.
async fn slow_upstream(delay: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    let counted = reached.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone",
                    )
                    .await;
            });
        }
    });
    (addr, reached)
}

#[tokio::test]
async fn a_request_finishes_on_the_config_it_started_with_across_a_reload() {
    let (slow, reached) = slow_upstream(Duration::from_millis(1500)).await;
    let extra = format!("\n[[upstreams]]\nname = \"slow\"\naddresses = [\"{slow}\"]\n\n[[routes]]\nname = \"slow\"\npath = \"/slow/*\"\nupstream = \"slow\"\nauth = \"none\"\n");
    let w = World::start_with(Setup {
        extra,
        ..Setup::default()
    })
    .await;
    let origin = w.gw.url.clone();
    // The request names billing's origin: its answer carries CORS headers for it.
    let inflight = {
        let (http, url, origin) = (
            w.http.clone(),
            format!("{}/slow/x", w.gw.url),
            origin.clone(),
        );
        tokio::spawn(async move { http.get(url).header("origin", origin).send().await.unwrap() })
    };
    // Reload once the request is at the upstream (which answers 1.5 s later): in flight.
    let arrived = eventually(Duration::from_secs(5), || async {
        reached.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(arrived, "the request did not reach the slow upstream");
    // The reload moves billing to another origin: that origin names no client any more.
    let path = w.gw.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let moved = text.replace(
        &format!(
            "origins = [\"http://127.0.0.1:{port}\", \"http://localhost:{port}\"]",
            port = w.gw.port
        ),
        "origins = [\"https://billing.test\"]",
    );
    assert_ne!(moved, text);
    std::fs::write(&path, format!("{moved}\n[[routes]]\nname = \"marker\"\npath = \"/marker/*\"\nupstream = \"app\"\nauth = \"none\"\n")).unwrap();
    w.gw.reload();
    let applied = eventually(Duration::from_secs(1), || async {
        w.get("/marker/x", None).await.status() == 200
    })
    .await;
    assert!(
        applied,
        "the reload was not applied while the request was in flight"
    );
    let fresh = w
        .http
        .get(format!("{}/public/x", w.gw.url))
        .header("origin", &origin)
        .send()
        .await
        .unwrap();
    assert!(
        fresh.headers().get("access-control-allow-origin").is_none(),
        "a new request still sees the old origin"
    );
    let r = inflight.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string()),
        Some(origin),
        "the in-flight request's answer used the new config"
    );
}

#[tokio::test]
async fn reloads_sign_nobody_out_and_keep_naming_an_unapplied_change() {
    let extra = "\n[session]\nallow_insecure_http = true\n".to_string();
    let (idp, echo) = idp_and_echo().await;
    let grant =
        "[[clients.grants]]\npermissions = [\"invoice:read\"]\nemails = [\"alice@example.com\"]\n"
            .to_string();
    let setup = Setup {
        extra,
        client_extra: grant,
        ..Setup::default()
    };
    let gw = start_gateway(
        |port, admin| {
            idp.register_client(
                "abc",
                Some("dev"),
                &[&format!("http://127.0.0.1:{port}/_authgate/callback")],
            );
            config(port, admin, &idp, echo.addr(), &setup)
        },
        true,
    )
    .await;
    let b = browser();
    log_in(&b, &format!("{}/api/me", gw.url), "alice").await;
    assert_eq!(api(&b, &format!("{}/api/me", gw.url)).await.status(), 200);

    let path = gw.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let warnings = || gw.log.lock().unwrap().matches("need a restart").count();
    let reloads = || gw.log.lock().unwrap().matches("config reloaded").count();
    // 1: a restart-needed change (the session lifetime) and a route.
    let step1 = format!("{original}\n[[routes]]\nname = \"r1\"\npath = \"/r1/*\"\nupstream = \"app\"\nauth = \"none\"\n").replace("allow_insecure_http = true\n", "allow_insecure_http = true\nlifetime = \"2h\"\n");
    std::fs::write(&path, &step1).unwrap();
    gw.reload();
    assert!(eventually(Duration::from_secs(5), || async { reloads() == 1 }).await);
    assert_eq!(warnings(), 1);
    assert_eq!(
        api(&b, &format!("{}/api/me", gw.url)).await.status(),
        200,
        "a reload signed the session out"
    );
    // 2: another route only; the session change is still not applied and still named.
    std::fs::write(&path, format!("{step1}\n[[routes]]\nname = \"r2\"\npath = \"/r2/*\"\nupstream = \"app\"\nauth = \"none\"\n")).unwrap();
    gw.reload();
    assert!(eventually(Duration::from_secs(5), || async { reloads() == 2 }).await);
    assert_eq!(
        warnings(),
        2,
        "the second reload forgot the unapplied change:\n{}",
        gw.log.lock().unwrap()
    );
    assert!(gw
        .log
        .lock()
        .unwrap()
        .lines()
        .filter(|l| l.contains("need a restart"))
        .all(|l| l.contains("session")));
    assert_eq!(
        client()
            .get(format!("{}/r2/x", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        api(&b, &format!("{}/api/me", gw.url)).await.status(),
        200,
        "a reload signed the session out"
    );
    // 3: back to the started session settings: nothing left to name.
    std::fs::write(&path, format!("{original}\n[[routes]]\nname = \"r3\"\npath = \"/r3/*\"\nupstream = \"app\"\nauth = \"none\"\n")).unwrap();
    gw.reload();
    assert!(eventually(Duration::from_secs(5), || async { reloads() == 3 }).await);
    assert_eq!(warnings(), 2);
    assert_eq!(api(&b, &format!("{}/api/me", gw.url)).await.status(), 200);
}

#[tokio::test]
async fn cookies_are_host_prefixed_and_secure_over_https() {
    let (idp, echo) = idp_and_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = localhost_certificate(dir.path());
    let (port, admin) = (free_port(), free_port());
    let origin = format!("https://localhost:{port}");
    idp.register_client(
        "sec",
        Some("sec-secret"),
        &[&format!("{origin}/_authgate/callback")],
    );
    let setup = Setup::default().tls(&cert_path, &key_path).client(
        "secure",
        &origin,
        "sec",
        Some("sec-secret"),
    );
    let _gw =
        spawn_gateway_without_probe(&config(port, admin, &idp, echo.addr(), &setup), admin).await;
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let host_cookie = |c: &str| {
        let attrs: Vec<String> = c
            .split(';')
            .map(|a| a.trim().to_ascii_lowercase())
            .collect();
        c.starts_with("__Host-")
            && attrs.iter().any(|a| a == "secure")
            && attrs.iter().any(|a| a == "path=/")
            && !attrs.iter().any(|a| a.starts_with("domain="))
    };

    let r = b
        .get(format!("{origin}/api/me"))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let login = set_cookies(&r);
    assert!(
        !login.is_empty() && login.iter().all(|c| host_cookie(c)),
        "login cookies: {login:?}"
    );
    assert!(
        login
            .iter()
            .any(|c| c.starts_with("__Host-authgate-login-")),
        "{login:?}"
    );
    let r = b
        .get(format!("{}&user=alice", location(&r)))
        .send()
        .await
        .unwrap();
    let callback = location(&r);
    assert!(
        callback.starts_with(&format!("{origin}/_authgate/callback")),
        "{callback}"
    );
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(
        r.status(),
        302,
        "callback over https: {}",
        r.text().await.unwrap()
    );
    let set = set_cookies(&r);
    let session = set
        .iter()
        .find(|c| c.starts_with("__Host-authgate="))
        .unwrap_or_else(|| panic!("no __Host-authgate session cookie: {set:?}"));
    assert!(
        host_cookie(session)
            && session.to_ascii_lowercase().contains("httponly")
            && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(set.iter().all(|c| host_cookie(c)), "{set:?}");
    let echoed: Value = b
        .get(format!("{origin}/api/me"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-auth-subject"], "user_alice");
    assert!(
        !echoed["headers"]
            .get("cookie")
            .map(|c| c.to_string())
            .unwrap_or_default()
            .contains("authgate"),
        "{echoed}"
    );
}

/// Like the IdP this gateway is first deployed with: opaque access tokens, id_tokens without
/// permissions, no new id_token on refresh, check-permission refusing Bearer tokens. The
/// config's grants are what give such a browser user a permission route.
#[tokio::test]
async fn sessions_against_an_idp_with_opaque_access_tokens() {
    let extra = "\n[session]\nallow_insecure_http = true\n".to_string();
    let idp = DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    idp.set_audience(AUDIENCE);
    idp.set_opaque_access_tokens(true);
    idp.set_check_refuses_bearer(true);
    idp.set_token_ttl(20); // within refresh_before (30 s): every request refreshes
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let grant =
        "[[clients.grants]]\npermissions = [\"invoice:read\"]\nemails = [\"alice@example.com\"]\n"
            .to_string();
    let setup = Setup {
        extra,
        client_extra: grant,
        ..Setup::default()
    };
    let gw = start_gateway(
        |port, admin| {
            idp.register_client(
                "abc",
                Some("dev"),
                &[&format!("http://127.0.0.1:{port}/_authgate/callback")],
            );
            config(port, admin, &idp, echo.addr(), &setup)
        },
        true,
    )
    .await;
    let b = browser();
    log_in(&b, &format!("{}/api/me", gw.url), "alice").await;
    // The identity is the id_token's, across refreshes that bring no new id_token.
    for i in 0..3 {
        let echoed: Value = api(&b, &format!("{}/api/me", gw.url))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            echoed["headers"]["x-auth-subject"], "user_alice",
            "request {i}"
        );
        assert_eq!(
            echoed["headers"]["x-auth-email"], "alice@example.com",
            "request {i}"
        );
        assert!(idp.refresh_requests() > i, "request {i} did not refresh");
    }
    assert!(
        !echoed_has_token(&b, &gw).await,
        "an opaque access token reached the upstream"
    );
    let info: Value = api(&b, &format!("{}/_authgate/session", gw.url))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["subject"], "user_alice");
    // The id_token carries no permissions: the config's grant (alice's verified email) gives
    // invoice:read in the client's namespace, and the upstream is told which permission passed.
    let r = api(&b, &format!("{}/api/invoices/7", gw.url)).await;
    assert_eq!(
        r.status(),
        200,
        "the grant lets alice's browser session read invoices"
    );
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(
        echoed["headers"]["x-auth-permission"],
        "client_abc:invoice:read"
    );
    assert_eq!(
        info["permissions"]["client_abc:invoice"],
        json!(["read"]),
        "{info}"
    );
    // A permission neither the claims nor the grants give: refused 403 by the static check,
    // without asking the live check (whose refusal of the session's Bearer credential is tested
    // in tests/login.rs, `a_sessions_live_check_asks_the_idp_with_the_sessions_credential`).
    let reached = echo.requests();
    let r = b
        .post(format!("{}/api/invoices/7/refund", gw.url))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        idp.abac_requests(),
        0,
        "the static refusal asked the live check"
    );
    assert_eq!(
        echo.requests(),
        reached,
        "a refused refund reached the upstream"
    );
}

async fn echoed_has_token(b: &reqwest::Client, gw: &Gateway) -> bool {
    let echoed: Value = api(b, &format!("{}/api/me", gw.url))
        .await
        .json()
        .await
        .unwrap();
    echoed["headers"].get("authorization").is_some()
}
