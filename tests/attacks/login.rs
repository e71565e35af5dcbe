//! Browser login and logout attacked: a reload under a login in flight, a flood of logins,
//! logins in several tabs, cross-site logout, logout that must really sign out, logout naming
//! another client, and a refresh racing a logout. Real gateway, development IdP, cookie-keeping
//! HTTP clients over loopback.

use crate::common::browser::fetch_metadata::{log_in, navigate, start_login};
use crate::common::browser::*;
use crate::common::*;
use devidp::echo::EchoServer;
use devidp::idp::DevIdp;
use reqwest::header::ACCEPT;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The sign-in setup: app-a on `localhost`, app-b on `127.0.0.1` (same port) unless `apps`
/// says otherwise (see [`Setup::apps`]); `app_a_extra` goes into app-a's table.
fn setup(apps: &'static str, session_extra: &str, app_a_extra: &str) -> Setup {
    Setup {
        clients: Clients::SignIn,
        apps,
        session_extra: session_extra.into(),
        app_a_extra: app_a_extra.into(),
        ..Setup::default()
    }
}

struct World {
    idp: DevIdp,
    echo: EchoServer,
    gw: Gateway,
    /// app-a's origin.
    a: String,
    /// app-b's origin.
    b: String,
}

impl World {
    /// `before` runs on the IdP before the gateway starts (discovery is cached from then on).
    async fn start(session_extra: &str, logout_url: &str, before: impl Fn(&DevIdp)) -> World {
        let idp = DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        idp.set_audience(AUDIENCE);
        before(&idp);
        let echo = EchoServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let gw = start_sign_in(&idp, echo.addr(), &setup("a,b", session_extra, logout_url)).await;
        let port = gw.port;
        World {
            idp,
            echo,
            gw,
            a: format!("http://localhost:{port}"),
            b: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Rewrites the config with these clients, reloads, and waits until the reload is applied.
    async fn reload_with(&self, which: &'static str) {
        // The same listeners: only the clients change.
        let admin: u16 = self.gw.admin.rsplit(':').next().unwrap().parse().unwrap();
        let text = config(
            self.gw.port,
            admin,
            &self.idp,
            self.echo.addr(),
            &setup(which, "", ""),
        );
        let before = self
            .gw
            .log
            .lock()
            .unwrap()
            .matches("config reloaded")
            .count();
        std::fs::write(self.gw.config_path(), text).unwrap();
        self.gw.reload();
        let log = self.gw.log.clone();
        let applied = eventually(Duration::from_secs(10), || {
            let log = log.clone();
            async move { log.lock().unwrap().matches("config reloaded").count() > before }
        })
        .await;
        assert!(
            applied,
            "the reload was not applied; log:\n{}",
            self.gw.log.lock().unwrap()
        );
    }

    /// The gateway still serves.
    async fn alive(&self) {
        let r = client()
            .get(format!("{}/public/ping", self.a))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "the gateway no longer serves; log:\n{}",
            self.gw.log.lock().unwrap()
        );
    }
}

/// The page of a refused sign-in: 400 with "Sign-in failed".
async fn assert_sign_in_failed(r: reqwest::Response, case: &str) {
    assert_eq!(r.status(), 400, "{case}");
    let page = r.text().await.unwrap();
    assert!(page.contains("Sign-in failed"), "{case}: {page}");
}

#[tokio::test]
async fn a_reload_that_removes_or_reorders_clients_under_a_login_in_flight_fails_closed_and_the_gateway_lives(
) {
    let w = World::start("", "", |_| {}).await;

    // Logins in flight for app-b (the second client): one answered with an error, one with a code.
    let errored = browser();
    let state = query(&start_login(&errored, &format!("{}/app/x", w.b)).await)["state"].clone();
    let coded = browser();
    let callback = choose(
        &coded,
        &start_login(&coded, &format!("{}/app/y", w.b)).await,
        "alice",
    )
    .await;
    // And one for app-a, which stays configured but moves in the list.
    let moved = browser();
    let moved_callback = choose(
        &moved,
        &start_login(&moved, &format!("{}/app/z", w.a)).await,
        "alice",
    )
    .await;

    // app-b removed: its logins in flight name a client that is gone.
    w.reload_with("a").await;
    let r = navigate(
        &errored,
        &format!("{}/_authgate/callback?state={state}&error=x", w.b),
    )
    .await;
    assert_sign_in_failed(r, "error=x after the client was removed").await;
    w.alive().await;
    let r = navigate(&coded, &callback).await;
    assert_sign_in_failed(r, "a code after the client was removed").await;
    assert_eq!(
        w.idp.token_requests(),
        0,
        "no code of a removed client was exchanged"
    );
    w.alive().await;

    // Reordered (app-b back, first): app-a's login finishes as app-a, by name.
    w.reload_with("b,a").await;
    let r = moved.get(&moved_callback).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), format!("{}/app/z", w.a));
    let echoed: Value = api(&moved, &format!("{}/app/z", w.a))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-auth-client"], "app-a");
    w.alive().await;

    // app-b still configured, but its origin now belongs to app-a: its login in flight fails closed.
    let stranded = browser();
    let stranded_callback = choose(
        &stranded,
        &start_login(&stranded, &format!("{}/app/w", w.b)).await,
        "alice",
    )
    .await;
    w.reload_with("A,B").await;
    assert_sign_in_failed(
        navigate(&stranded, &stranded_callback).await,
        "the login's origin moved to another client",
    )
    .await;
    assert_eq!(
        api(&stranded, &format!("{}/app/w", w.b)).await.status(),
        401,
        "no session was made"
    );
    w.alive().await;
    assert!(
        !w.gw.log.lock().unwrap().contains("panicked"),
        "{}",
        w.gw.log.lock().unwrap()
    );
}

#[tokio::test]
async fn a_flood_of_cookieless_logins_leaves_another_browsers_login_working() {
    let w = World::start("", "", |_| {}).await;
    let victim = browser();
    let authorize = start_login(&victim, &format!("{}/app/victim", w.a)).await;

    let started = Instant::now();
    let flood = client();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (flood, url) = (flood.clone(), format!("{}/_authgate/login", w.a));
        tasks.push(tokio::spawn(async move {
            for _ in 0..150 {
                let r = flood.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 302);
                // The login lives in its own cookie: nothing for the gateway to remember.
                let set: Vec<&str> = r
                    .headers()
                    .get_all("set-cookie")
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                assert_eq!(set.len(), 1, "{set:?}");
                assert!(
                    set[0].starts_with("authgate-login-")
                        && set[0].contains("HttpOnly")
                        && set[0].contains("Max-Age=600"),
                    "{set:?}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "2400 logins took {:?}",
        started.elapsed()
    );

    let callback = choose(&victim, &authorize, "alice").await;
    let r = victim.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), format!("{}/app/victim", w.a));
    assert_eq!(
        api(&victim, &format!("{}/app/victim", w.a)).await.status(),
        200
    );
}

#[tokio::test]
async fn logins_in_several_tabs_all_complete_up_to_the_cap() {
    let w = World::start("max_pending_logins = 3", "", |_| {}).await;
    let b = browser();
    // Two tabs, finished in the opposite order.
    let first = start_login(&b, &format!("{}/app/one", w.a)).await;
    let second = start_login(&b, &format!("{}/app/two", w.a)).await;
    for (authorize, page) in [(second, "two"), (first, "one")] {
        let callback = choose(&b, &authorize, "alice").await;
        let r = b.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), 302, "tab {page}: {}", r.text().await.unwrap());
        assert_eq!(location(&r), format!("{}/app/{page}", w.a));
    }
    assert_eq!(api(&b, &format!("{}/app/", w.a)).await.status(), 200);

    // Five at once with a cap of three: the two oldest are dropped, the three newest work.
    let b = browser();
    let mut tabs = Vec::new();
    for i in 0..5 {
        tabs.push(start_login(&b, &format!("{}/app/tab{i}", w.a)).await);
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct issue times
    }
    for (i, authorize) in tabs.iter().enumerate() {
        let callback = choose(&b, authorize, "alice").await;
        let r = navigate(&b, &callback).await;
        if i < 2 {
            assert_sign_in_failed(r, &format!("dropped tab {i}")).await;
        } else {
            assert_eq!(r.status(), 302, "tab {i}");
            assert_eq!(location(&r), format!("{}/app/tab{i}", w.a));
        }
    }
}

#[tokio::test]
async fn a_login_cookie_works_only_for_its_own_state_and_only_once() {
    let w = World::start("", "", |_| {}).await;
    let b = browser();
    let callback = choose(
        &b,
        &start_login(&b, &format!("{}/app/", w.a)).await,
        "alice",
    )
    .await;
    // Another state than the one sealed in the cookie: refused (the cookie is looked up by a
    // suffix of the state, and the sealed state must equal it).
    let mut forged = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "state" {
                (k, format!("{v}x"))
            } else {
                (k, v)
            }
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    assert_sign_in_failed(navigate(&b, forged.as_str()).await, "forged state").await;
    // The right one works once.
    assert_eq!(b.get(&callback).send().await.unwrap().status(), 302);
    assert_sign_in_failed(navigate(&b, &callback).await, "replay").await;
}

#[tokio::test]
async fn cross_site_logout_is_refused_and_same_origin_logout_works() {
    let w = World::start("", "", |_| {}).await;
    let b = browser();
    log_in(&b, &format!("{}/app/", w.a), "alice").await;
    let logout = format!("{}/_authgate/logout", w.a);
    let session = format!("{}/_authgate/session", w.a);

    // (case, request, status): the confirmation page is a normal page (200, not stored); an
    // Origin of no client is refused (403).
    for (case, req, status) in [
        (
            "cross-site GET",
            b.get(&logout).header("sec-fetch-site", "cross-site"),
            200,
        ),
        (
            "same-site GET",
            b.get(&logout).header("sec-fetch-site", "same-site"),
            200,
        ),
        (
            "GET with no sign of where it came from",
            b.get(&logout),
            200,
        ),
        (
            "cross-site POST",
            b.post(&logout).header("sec-fetch-site", "cross-site"),
            200,
        ),
        // Two Sec-Fetch-Site headers: the least trusting counts, never the first.
        (
            "same-origin then cross-site",
            b.get(&logout)
                .header("sec-fetch-site", "same-origin")
                .header("sec-fetch-site", "cross-site"),
            200,
        ),
        (
            "typed then same-site",
            b.post(&logout)
                .header("sec-fetch-site", "none")
                .header("sec-fetch-site", "same-site"),
            200,
        ),
        (
            "same-origin claim with a foreign Origin",
            b.post(&logout)
                .header("sec-fetch-site", "same-origin")
                .header("origin", "https://evil.example"),
            403,
        ),
    ] {
        let r = req.header(ACCEPT, "text/html").send().await.unwrap();
        assert_eq!(r.status(), status, "{case}");
        assert_eq!(
            r.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{case}"
        );
        assert!(
            r.headers().get("set-cookie").is_none(),
            "{case} changed cookies"
        );
        let page = r.text().await.unwrap();
        if !page.contains("not a registered client") {
            assert!(
                page.contains("<form method=\"post\" action=\"/_authgate/logout\">"),
                "{case}: {page}"
            );
        }
        assert_eq!(
            api(&b, &session).await.status(),
            200,
            "{case} ended the session"
        );
    }

    // The button on that page: a same-origin POST.
    let r = b
        .post(&logout)
        .header("origin", &w.a)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(api(&b, &session).await.status(), 401);
    assert_eq!(api(&b, &format!("{}/app/", w.a)).await.status(), 401);

    // A link the user typed (or a bookmark): Sec-Fetch-Site none.
    log_in(&b, &format!("{}/app/", w.a), "alice").await;
    let r = b
        .get(&logout)
        .header("sec-fetch-site", "none")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(api(&b, &session).await.status(), 401);
}

#[tokio::test]
async fn logout_without_end_session_endpoint_really_signs_out() {
    let w = World::start(
        "",
        "logout_url = \"https://idp.example/api/auth/sign-out\"\nlogout_method = \"post\"",
        |idp| idp.set_end_session(false),
    )
    .await;
    let b = browser();
    log_in(&b, &format!("{}/app/inbox", w.a), "alice").await;
    let r = b
        .post(format!("{}/_authgate/logout", w.a))
        .header("origin", &w.a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let landing = location(&r);
    assert_eq!(
        landing,
        format!("{}/_authgate/signed-out", w.a),
        "not a protected page that bounces through the IdP"
    );
    assert_eq!(w.idp.end_session_requests(), 0);

    // The signed-out page: the client's name, a way to sign in again, the IdP's own sign-out.
    let r = navigate(&b, &landing).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("signed out of app-a"), "{page}");
    assert!(page.contains("href=\"/_authgate/login\""), "{page}");
    assert!(
        page.contains("<form method=\"post\" action=\"https://idp.example/api/auth/sign-out\""),
        "{page}"
    );

    // The next protected navigation asks the IdP to authenticate again: no silent way back.
    assert_eq!(api(&b, &format!("{}/app/inbox", w.a)).await.status(), 401);
    let authorize = start_login(&b, &format!("{}/app/inbox", w.a)).await;
    let q = query(&authorize);
    assert_eq!(
        q.get("prompt").map(String::as_str),
        Some("login"),
        "{authorize}"
    );
    assert_eq!(
        q.get("max_age").map(String::as_str),
        Some("0"),
        "{authorize}"
    );

    // Signing in again clears the marker: later logins are ordinary.
    let callback = choose(&b, &authorize, "alice").await;
    assert_eq!(b.get(&callback).send().await.unwrap().status(), 302);
    let other = browser();
    let q = query(&start_login(&other, &format!("{}/app/", w.a)).await);
    assert!(
        !q.contains_key("prompt"),
        "a browser that never signed out is not re-prompted"
    );
}

#[tokio::test]
async fn logout_ends_the_session_even_when_the_request_names_another_client() {
    let w = World::start("", "", |_| {}).await;
    let b = browser();
    log_in(&b, &format!("{}/app/", w.a), "alice").await;
    assert_eq!(
        api(&b, &format!("{}/_authgate/session", w.a))
            .await
            .status(),
        200
    );
    // The session cookie as an attacker (or a confused SPA) would replay it, naming app-b.
    let jar: Vec<String> = {
        let r = browser();
        let callback = choose(&r, &start_login(&r, &format!("{}/app/", w.a)).await, "bob").await;
        let resp = r.get(&callback).send().await.unwrap();
        resp.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .filter(|c| c.starts_with("authgate="))
            .collect()
    };
    let session_cookie = jar.first().expect("a session cookie").clone();
    let plain = client();
    let info = |origin: Option<&str>| {
        let mut req = plain
            .get(format!("{}/_authgate/session", w.a))
            .header("cookie", &session_cookie)
            .header(ACCEPT, "application/json");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    assert_eq!(info(None).await.unwrap().status(), 200);
    let r = plain
        .post(format!("{}/_authgate/logout", w.a))
        .header("cookie", &session_cookie)
        .header("origin", &w.b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        info(None).await.unwrap().status(),
        401,
        "the session behind the cookie ended"
    );
    // The other browser's session is untouched.
    assert_eq!(
        api(&b, &format!("{}/_authgate/session", w.a))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_refresh_racing_a_logout_does_not_bring_the_session_back() {
    let w = World::start("", "", |_| {}).await;
    // Tokens that expire within `refresh_before` (30s): the next request refreshes.
    w.idp.set_token_ttl(20);
    let b = browser();
    log_in(&b, &format!("{}/app/", w.a), "alice").await;
    w.idp.set_refresh_delay(Duration::from_millis(1500));
    let refreshing = {
        let (b, url) = (b.clone(), format!("{}/app/during", w.a));
        tokio::spawn(async move { api(&b, &url).await.status() })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            w.idp.refresh_requests() == 1
        })
        .await,
        "the refresh started"
    );
    let r = b
        .post(format!("{}/_authgate/logout", w.a))
        .header("origin", &w.a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let during = refreshing.await.unwrap();
    assert_eq!(
        during, 401,
        "the request whose refresh lost to the logout is not served with the ended session"
    );
    w.idp.set_refresh_delay(Duration::ZERO);
    assert_eq!(
        api(&b, &format!("{}/_authgate/session", w.a))
            .await
            .status(),
        401,
        "the refresh wrote the session back"
    );
    assert_eq!(api(&b, &format!("{}/app/after", w.a)).await.status(), 401);
}

#[tokio::test]
async fn logout_through_end_session_lands_on_the_signed_out_page_never_on_a_protected_one() {
    let w = World::start("", "", |_| {}).await;
    for (rd, lands) in [
        ("/app/secret", "/_authgate/signed-out"),
        ("/public/bye", "/public/bye"),
        ("//evil.example/", "/_authgate/signed-out"),
    ] {
        let b = browser();
        log_in(&b, &format!("{}/app/", w.a), "alice").await;
        let r = b
            .get(format!("{}/_authgate/logout", w.a))
            .query(&[("rd", rd)])
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{rd}");
        let end_session = location(&r);
        assert!(
            end_session.starts_with(&format!("{}/end_session", w.idp.issuer())),
            "{rd}: {end_session}"
        );
        let q = query(&end_session);
        assert_eq!(
            q["post_logout_redirect_uri"],
            format!("{}{lands}", w.a),
            "{rd}"
        );
        assert_eq!(q["client_id"], "client-a");
        // The IdP sends the browser back; it stays signed out, and its next login re-authenticates.
        let back = location(&b.get(&end_session).send().await.unwrap());
        assert_eq!(back, format!("{}{lands}", w.a), "{rd}");
        assert_eq!(
            api(&b, &format!("{}/_authgate/session", w.a))
                .await
                .status(),
            401,
            "{rd}"
        );
        assert_eq!(
            query(&start_login(&b, &format!("{}/app/", w.a)).await)
                .get("prompt")
                .map(String::as_str),
            Some("login"),
            "{rd}"
        );
    }
    assert_eq!(w.idp.end_session_requests(), 3);
}
