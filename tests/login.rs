//! End to end: browser login for two client apps through the real gateway, against the
//! development IdP as mock IdP, with a cookie-keeping HTTP client over loopback.

mod common;

use common::browser::*;
use common::*;
use devidp::echo::EchoServer;
use devidp::idp::{DevIdp, IdTokenTrick};
use reqwest::header::ACCEPT;
use serde_json::{json, Value};
use std::time::Duration;

struct Login {
    idp: DevIdp,
    _echo: EchoServer,
    _gw: Gateway,
    /// Client app-a's origin.
    a: String,
    /// Client app-b's origin.
    b: String,
}

impl Login {
    async fn start(session_extra: &str) -> Login {
        Login::start_with(session_extra, |_| {}).await
    }

    /// With `before` run on the IdP before the gateway starts (the gateway reads the IdP's
    /// discovery document at start, with its keys, and keeps it).
    async fn start_with(session_extra: &str, before: impl FnOnce(&DevIdp)) -> Login {
        let idp = DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        idp.set_audience(AUDIENCE);
        before(&idp);
        let echo = EchoServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let gw = start_sign_in(&idp, echo.addr(), &Setup::sign_in().session(session_extra)).await;
        let port = gw.port;
        let (a, b) = (
            format!("http://localhost:{port}"),
            format!("http://127.0.0.1:{port}"),
        );
        Login {
            idp,
            _echo: echo,
            _gw: gw,
            a,
            b,
        }
    }
}

/// The `Set-Cookie` the response sets for the session cookie (`authgate=...`).
fn session_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("authgate="))
        .unwrap_or_else(|| panic!("no session cookie set on {}", r.status()))
}

#[tokio::test]
async fn two_clients_log_in_and_reach_the_upstream_with_their_identity() {
    let w = Login::start("").await;
    let (ba, bb) = (browser(), browser());

    let authorize = start_login(&ba, &format!("{}/app/page?x=1", w.a)).await;
    assert!(authorize.starts_with(&w.idp.authorize_url()), "{authorize}");
    let q: std::collections::HashMap<String, String> = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["client_id"], "client-a");
    assert_eq!(q["redirect_uri"], format!("{}/_authgate/callback", w.a));
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(
        q["scope"].split(' ').any(|s| s == "openid"),
        "{}",
        q["scope"]
    );
    assert!(q["state"].len() >= 22 && q["nonce"].len() >= 22);

    // The IdP's page lists the demo users.
    let page = ba
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("user-alice"), "{page}");

    let callback = choose(&ba, &authorize, "alice").await;
    let r = ba.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), format!("{}/app/page?x=1", w.a));
    let cookie = session_cookie(&r);
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    let echoed: Value = api(&ba, &format!("{}/app/page?x=1", w.a))
        .await
        .json()
        .await
        .unwrap();
    let h = &echoed["headers"];
    assert_eq!(h["x-auth-subject"], "user_alice");
    assert_eq!(h["x-auth-email"], "alice@example.com");
    assert_eq!(h["x-auth-client"], "app-a");
    assert!(
        !h.get("cookie")
            .map(|c| c.to_string())
            .unwrap_or_default()
            .contains("authgate"),
        "the gateway's cookie reached the upstream: {h}"
    );
    let r = api(&ba, &format!("{}/api/invoices/7", w.a)).await;
    assert_eq!(
        r.status(),
        200,
        "alice may read invoices through her session"
    );

    // Client b, another browser, another user.
    log_in(&bb, &format!("{}/app/", w.b), "bob").await;
    let echoed: Value = api(&bb, &format!("{}/app/", w.b))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-auth-subject"], "user_bob");
    assert_eq!(echoed["headers"]["x-auth-client"], "app-b");
    assert_eq!(
        api(&bb, &format!("{}/api/invoices/7", w.b)).await.status(),
        403,
        "bob may not read invoices"
    );

    // Session info for an SPA.
    let info: Value = api(&ba, &format!("{}/_authgate/session", w.a))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["subject"], "user_alice");
    assert_eq!(info["client"], "app-a");
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(
        info["permissions"]["client_demo:invoice"],
        json!(["read", "write"])
    );
    assert!(info["expires_at"].as_u64().unwrap() > now());

    // APIs without a session get 401, never a redirect.
    let anon = browser();
    assert_eq!(api(&anon, &format!("{}/app/x", w.a)).await.status(), 401);
    assert_eq!(
        anon.post(format!("{}/app/x", w.a))
            .header(ACCEPT, "text/html")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        anon.get(format!("{}/app/x", w.a))
            .header(ACCEPT, "text/html")
            .header("sec-fetch-mode", "cors")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        api(&anon, &format!("{}/_authgate/session", w.a))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn refresh_runs_once_for_twenty_concurrent_requests_and_a_failed_refresh_logs_out() {
    let w = Login::start("").await;
    // Tokens that expire within `refresh_before` (30s): the next request refreshes.
    w.idp.set_token_ttl(20);
    let b = browser();
    log_in(&b, &format!("{}/app/", w.a), "alice").await;
    w.idp.set_token_ttl(900);
    w.idp.set_refresh_delay(Duration::from_millis(300));
    let requests = (0..20).map(|i| {
        let (b, url) = (b.clone(), format!("{}/app/{i}", w.a));
        tokio::spawn(async move { api(&b, &url).await.status() })
    });
    for r in futures_join(requests).await {
        assert_eq!(r, 200);
    }
    assert_eq!(
        w.idp.refresh_requests(),
        1,
        "one refresh for all concurrent requests"
    );
    assert_eq!(api(&b, &format!("{}/app/again", w.a)).await.status(), 200);
    assert_eq!(w.idp.refresh_requests(), 1);

    // A refused refresh ends the session: navigations go to login, APIs get 401.
    w.idp.set_token_ttl(20);
    w.idp.set_refresh_delay(Duration::ZERO);
    let b2 = browser();
    log_in(&b2, &format!("{}/app/", w.a), "bob").await;
    w.idp.set_refresh_fails(true);
    let refreshes = w.idp.refresh_requests();
    let r = navigate(&b2, &format!("{}/app/", w.a)).await;
    assert_eq!(r.status(), 302);
    assert!(location(&r).starts_with(&w.idp.authorize_url()));
    assert_eq!(
        w.idp.refresh_requests(),
        refreshes + 1,
        "the refresh was tried and refused"
    );
    // The session is gone, not merely failing: with refreshes working again it stays gone.
    w.idp.set_refresh_fails(false);
    assert_eq!(api(&b2, &format!("{}/app/", w.a)).await.status(), 401);
    assert_eq!(
        api(&b2, &format!("{}/_authgate/session", w.a))
            .await
            .status(),
        401
    );
    assert_eq!(
        w.idp.refresh_requests(),
        refreshes + 1,
        "an ended session asked for another refresh"
    );
}

#[tokio::test]
async fn opaque_access_tokens_use_the_id_token_identity() {
    let w = Login::start("").await;
    w.idp.set_opaque_access_tokens(true);
    let b = browser();
    log_in(&b, &format!("{}/app/", w.b), "carol").await;
    let echoed: Value = api(&b, &format!("{}/app/", w.b))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-auth-subject"], "user_carol");
    assert_eq!(echoed["headers"]["x-auth-client"], "app-b");
}

/// A browser session's live check asks the IdP as the session: with the session's access token
/// as the bearer credential, never anonymously; the IdP's refusal of that credential (Auther's
/// check-permission refusing Bearer tokens) is a 403 that never reaches the upstream.
#[tokio::test]
async fn a_sessions_live_check_asks_the_idp_with_the_sessions_credential() {
    let w = Login::start("").await;
    let b = browser();
    log_in(&b, &format!("{}/app/", w.b), "carol").await;
    let refund = |id: u32| {
        b.post(format!("{}/api/invoices/{id}/refund", w.b))
            .header(ACCEPT, "application/json")
            // A cookie changes state only from its client's own pages.
            .header("origin", &w.b)
            .send()
    };
    let (checks, reached) = (w.idp.abac_requests(), w._echo.requests());
    let r = refund(7).await.unwrap();
    let status = r.status();
    assert_eq!(
        status,
        200,
        "carol's refund is allowed by the IdP's policy: {}",
        r.text().await.unwrap_or_default()
    );
    let asked = w.idp.abac_checks();
    assert_eq!(asked.len(), checks + 1, "the live check was not asked");
    let (request, credential) = asked.last().cloned().unwrap();
    let credential = credential.expect("the check carried no credential");
    assert!(credential.starts_with("Bearer "), "{credential}");
    assert_eq!(
        credential.split('.').count(),
        3,
        "not the session's access token"
    );
    assert_eq!(request["entityId"], "7", "{request}");
    assert_eq!(request["permission"], "refund", "{request}");
    assert_eq!(w._echo.requests(), reached + 1);

    // The IdP now refuses Bearer credentials: asked, it answers 401, which is a "no".
    w.idp.set_check_refuses_bearer(true);
    let r = refund(8).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        w.idp.abac_requests(),
        checks + 2,
        "the 403 was not the IdP's answer"
    );
    assert_eq!(
        w._echo.requests(),
        reached + 1,
        "a refused refund reached the upstream"
    );
}

#[tokio::test]
async fn logout_ends_the_session_and_the_idp_session() {
    let w = Login::start("").await;
    let b = browser();
    log_in(&b, &format!("{}/app/", w.a), "alice").await;
    // A logout from the client's own page (the browser marks it same-origin).
    let r = b
        .get(format!("{}/_authgate/logout?rd=/bye", w.a))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = url::Url::parse(&location(&r)).unwrap();
    assert!(
        to.as_str()
            .starts_with(&format!("{}/end_session", w.idp.issuer())),
        "{to}"
    );
    let q: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert_eq!(q["post_logout_redirect_uri"], format!("{}/bye", w.a));
    assert!(q["id_token_hint"].split('.').count() == 3);
    assert_eq!(
        api(&b, &format!("{}/_authgate/session", w.a))
            .await
            .status(),
        401
    );
    assert_eq!(api(&b, &format!("{}/app/", w.a)).await.status(), 401);

    // Without end_session_endpoint (a fresh gateway, whose IdP never advertised one), straight
    // back; a foreign rd falls back to the signed-out page.
    let w = Login::start_with("", |idp| idp.set_end_session(false)).await;
    let b = browser();
    log_in(&b, &format!("{}/app/", w.a), "alice").await;
    let ends = w.idp.end_session_requests();
    let r = b
        .post(format!("{}/_authgate/logout?rd=//evil.com", w.a))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), format!("{}/_authgate/signed-out", w.a));
    assert_eq!(w.idp.end_session_requests(), ends);
    assert_eq!(
        api(&b, &format!("{}/app/", w.a)).await.status(),
        401,
        "still signed in after logout"
    );
}

#[tokio::test]
async fn callback_refusals_show_a_page_not_a_500() {
    let w = Login::start("").await;
    let b = browser();
    let cb = format!("{}/_authgate/callback", w.a);

    // Missing and unknown state.
    assert_eq!(navigate(&b, &format!("{cb}?code=x")).await.status(), 400);
    assert_eq!(
        navigate(&b, &format!("{cb}?code=x&state=forged"))
            .await
            .status(),
        400
    );

    // A state works once.
    let callback = choose(
        &b,
        &start_login(&b, &format!("{}/app/", w.a)).await,
        "alice",
    )
    .await;
    assert_eq!(b.get(&callback).send().await.unwrap().status(), 302);
    let replay = navigate(&b, &callback).await;
    assert_eq!(replay.status(), 400);

    // A state from another browser is refused.
    let b = browser();
    let callback = choose(
        &b,
        &start_login(&b, &format!("{}/app/", w.a)).await,
        "alice",
    )
    .await;
    assert_eq!(navigate(&browser(), &callback).await.status(), 400);

    // Wrong `iss` on the callback.
    let b = browser();
    w.idp.set_callback_iss(Some("https://evil.example"));
    let callback = choose(
        &b,
        &start_login(&b, &format!("{}/app/", w.a)).await,
        "alice",
    )
    .await;
    let r = navigate(&b, &callback).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("another issuer"));
    w.idp.set_callback_iss(None);

    // Spoiled id_tokens.
    for (trick, words) in [
        (IdTokenTrick::WrongNonce, "nonce"),
        (IdTokenTrick::UnknownKey, "unknown key"),
        (IdTokenTrick::AlgNone, "id_token was refused"),
        (IdTokenTrick::WrongIssuer, "another issuer"),
        (IdTokenTrick::WrongAudience, "another audience"),
    ] {
        let fresh = browser();
        let callback = choose(
            &fresh,
            &start_login(&fresh, &format!("{}/app/", w.a)).await,
            "alice",
        )
        .await;
        w.idp.spoil_next_id_token(trick);
        let r = navigate(&fresh, &callback).await;
        assert_eq!(r.status(), 400, "{trick:?}");
        let page = r.text().await.unwrap();
        assert!(page.contains(words), "{trick:?}: {page}");
        assert_eq!(
            api(&fresh, &format!("{}/app/", w.a)).await.status(),
            401,
            "{trick:?} made a session"
        );
    }

    // The IdP says no: a clear page with a retry link.
    let b = browser();
    w.idp.set_authorize_error(Some("access_denied"));
    let authorize = start_login(&b, &format!("{}/app/deep", w.a)).await;
    let r = b
        .get(format!("{authorize}&user=alice"))
        .send()
        .await
        .unwrap();
    let r = navigate(&b, &location(&r)).await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("access_denied") && page.contains("/_authgate/login?rd="),
        "{page}"
    );
}

#[tokio::test]
async fn several_tabs_log_in_at_once() {
    let w = Login::start("").await;
    let b = browser();
    let mut auths = Vec::new();
    for i in 0..3 {
        auths.push((i, start_login(&b, &format!("{}/app/tab{i}", w.a)).await));
    }
    for (i, authorize) in auths.into_iter().rev() {
        let callback = choose(&b, &authorize, "alice").await;
        let r = b.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), 302, "tab {i}");
        assert_eq!(location(&r), format!("{}/app/tab{i}", w.a));
    }
    assert_eq!(api(&b, &format!("{}/app/", w.a)).await.status(), 200);
}

#[tokio::test]
async fn sessions_and_tokens_are_bound_to_their_client() {
    let w = Login::start("").await;
    let plain = client();
    // Sign in, and keep the session cookie the way an attacker would replay it.
    let jar = browser();
    let cb = choose(
        &jar,
        &start_login(&jar, &format!("{}/app/", w.a)).await,
        "alice",
    )
    .await;
    let r = jar.get(&cb).send().await.unwrap();
    let set = session_cookie(&r);
    let session = set.split(';').next().unwrap().to_string();

    // Same cookie on client b's origin: refused.
    let r = plain
        .get(format!("{}/app/", w.b))
        .header("cookie", &session)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Same cookie on a's host but claiming b's origin: refused.
    let r = plain
        .get(format!("{}/app/", w.a))
        .header("cookie", &session)
        .header("origin", &w.b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // On its own origin it works.
    let r = plain
        .get(format!("{}/app/", w.a))
        .header("cookie", &session)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A tampered cookie is no session.
    let mut tampered = session.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let r = plain
        .get(format!("{}/app/", w.a))
        .header("cookie", &tampered)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = plain
        .get(format!("{}/app/", w.a))
        .header("cookie", &tampered)
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);

    // Bearer tokens naming their client (azp) are bound the same way.
    let token = w
        .idp
        .mint(json!({"sub": "svc", "aud": AUDIENCE, "azp": "client-a"}));
    let r = plain
        .get(format!("{}/app/", w.a))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = plain
        .get(format!("{}/app/", w.b))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Unknown origins are refused.
    let r = plain
        .get(format!("{}/app/", w.a))
        .bearer_auth(&token)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn return_urls_never_leave_the_client() {
    let w = Login::start("").await;
    for rd in [
        "//evil.com",
        "https:evil.com",
        "/\\evil.com",
        "%2F%2Fevil.com",
        "/%2F%2Fevil.com",
        "https://evil.com/",
        &format!("{}/x", w.b),
    ] {
        let b = browser();
        let r = b
            .get(format!("{}/_authgate/login", w.a))
            .query(&[("rd", rd)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{rd}");
        let callback = choose(&b, &location(&r), "alice").await;
        let r = b.get(&callback).send().await.unwrap();
        assert_eq!(location(&r), format!("{}/", w.a), "{rd}");
    }
    let b = browser();
    let r = b
        .get(format!("{}/_authgate/login", w.a))
        .query(&[("rd", "/app/inbox?x=1")])
        .send()
        .await
        .unwrap();
    let callback = choose(&b, &location(&r), "alice").await;
    assert_eq!(
        location(&b.get(&callback).send().await.unwrap()),
        format!("{}/app/inbox?x=1", w.a)
    );
}

#[tokio::test]
async fn expired_sessions_end() {
    let w = Login::start("lifetime = \"1s\"").await;
    let b = browser();
    log_in(&b, &format!("{}/app/", w.a), "alice").await;
    assert_eq!(api(&b, &format!("{}/app/", w.a)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(api(&b, &format!("{}/app/", w.a)).await.status(), 401);
}

#[tokio::test]
async fn cors_only_for_registered_origins() {
    let w = Login::start("").await;
    let plain = client();
    let r = plain
        .request(reqwest::Method::OPTIONS, format!("{}/app/x", w.a))
        .header("origin", &w.b)
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"].to_str().unwrap(),
        w.b
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let r = plain
        .request(reqwest::Method::OPTIONS, format!("{}/app/x", w.a))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Responses, refusals included, carry CORS headers for registered origins only.
    let r = plain
        .get(format!("{}/app/x", w.a))
        .header("origin", &w.a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["access-control-allow-origin"].to_str().unwrap(),
        w.a
    );
    let r = plain
        .get(format!("{}/public/x", w.a))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}
