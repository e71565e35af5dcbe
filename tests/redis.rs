//! End to end: two gateway instances sharing their sessions in Redis (a `redis-server` of the
//! test's own on a free loopback port), against the development IdP: sign-in on one, use and
//! logout on the other, one refresh for concurrent requests at both, Redis outages, and OIDC
//! back-channel logout (good and bad logout tokens).

mod common;

use common::browser::*;
use common::tunnel::{closed_within, echo, open_tunnel, Recorder};
use common::*;
use devidp::echo::EchoServer;
use devidp::idp::DevIdp;
use devidp::redis::RedisServer;
use reqwest::header::ACCEPT;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// The encryption key both instances share (base64 of 32 bytes).
const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
/// The login key both instances share when a test says so.
const LOGIN_KEY: &str = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs=";

struct Pair {
    idp: DevIdp,
    _echo: EchoServer,
    redis: RedisServer,
    one: Gateway,
    two: Gateway,
}

impl Pair {
    /// Two instances, both serving app-a on `http://localhost:{their ports}` and app-b on
    /// `http://127.0.0.1:{their ports}` (the browser sends its cookies to either: cookies ignore
    /// the port, as they would behind one load balancer). `None` when redis-server is missing
    /// outside CI.
    async fn start(what: &str) -> Option<Pair> {
        Pair::start_with(what, "").await
    }

    /// [`Pair::start`] with `session_extra` added to both instances' `[session]`.
    async fn start_with(what: &str, session_extra: &str) -> Option<Pair> {
        Pair::start_before(what, session_extra, None).await
    }

    /// [`Pair::start_with`] in front of `upstream` (the echo server when `None`).
    async fn start_before(
        what: &str,
        session_extra: &str,
        upstream: Option<SocketAddr>,
    ) -> Option<Pair> {
        let redis = RedisServer::start_or_skip(what)?;
        let (idp, echo) = idp_and_echo().await;
        let ports = [(free_port(), free_port()), (free_port(), free_port())];
        let origins = |host: &str| {
            ports
                .iter()
                .map(|(p, _)| format!("\"http://{host}:{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut uris_a: Vec<String> = Vec::new();
        let mut uris_b: Vec<String> = Vec::new();
        for (p, _) in ports {
            uris_a.push(format!("http://localhost:{p}/_authgate/callback"));
            uris_b.push(format!("http://127.0.0.1:{p}/_authgate/callback"));
        }
        idp.register_client(
            "client-a",
            Some("secret-a"),
            &uris_a.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        idp.register_client(
            "client-b",
            Some("secret-b"),
            &uris_b.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        // The IdP tells instance one; instance two learns through Redis.
        idp.register_backchannel_logout(
            "client-a",
            &format!(
                "http://localhost:{}/_authgate/backchannel-logout/app-a",
                ports[0].0
            ),
        );
        idp.register_backchannel_logout(
            "client-b",
            &format!(
                "http://127.0.0.1:{}/_authgate/backchannel-logout/app-b",
                ports[0].0
            ),
        );
        let session = format!("{session_extra}\nstore = \"redis\"\n[session.redis]\nurl = \"{}\"\nprefix = \"it:\"\nkey = \"{KEY}\"\ntimeout = \"300ms\"\nconnect_timeout = \"300ms\"\n", redis.url());
        let setup = Setup {
            clients: Clients::SignIn,
            session_extra: session,
            ..Setup::default()
        };
        let mut gateways = Vec::new();
        for (port, admin) in ports {
            let upstream = upstream.unwrap_or(echo.addr());
            let text = config(port, admin, &idp, upstream, &setup)
                .replace(
                    &format!("origins = [\"http://localhost:{port}\"]"),
                    &format!("origins = [{}]", origins("localhost")),
                )
                .replace(
                    &format!("origins = [\"http://127.0.0.1:{port}\"]"),
                    &format!("origins = [{}]", origins("127.0.0.1")),
                );
            gateways.push(spawn_gateway(&text, port, admin, true).await);
        }
        let two = gateways.pop().unwrap();
        let one = gateways.pop().unwrap();
        Some(Pair {
            idp,
            _echo: echo,
            redis,
            one,
            two,
        })
    }

    /// App a's origin at instance one and two.
    fn a(&self) -> (String, String) {
        (
            format!("http://localhost:{}", self.one.port),
            format!("http://localhost:{}", self.two.port),
        )
    }

    /// App b's origin at instance one and two.
    fn b(&self) -> (String, String) {
        (
            format!("http://127.0.0.1:{}", self.one.port),
            format!("http://127.0.0.1:{}", self.two.port),
        )
    }

    /// POSTs a logout token to app-a's back-channel endpoint at instance `at`.
    async fn backchannel(&self, at: &Gateway, token: &str) -> reqwest::Response {
        client()
            .post(format!(
                "http://localhost:{}/_authgate/backchannel-logout/app-a",
                at.port
            ))
            .form(&[("logout_token", token)])
            .send()
            .await
            .unwrap()
    }
}

async fn subject(b: &reqwest::Client, url: &str) -> Result<String, u16> {
    let r = api(b, url).await;
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let echoed: Value = r.json().await.unwrap();
    Ok(echoed["headers"]["x-auth-subject"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Behind one load balancer, a sign-in started at one instance comes back to the other: with a
/// shared `session.login_key`, the other opens the login cookie and finishes the sign-in;
/// without one (each instance its own generated key), it refuses it with the sign-in-failed
/// page and no session, and the code is never exchanged.
#[tokio::test]
async fn a_login_started_at_one_instance_is_finished_at_the_other_with_a_shared_login_key() {
    for shared in [true, false] {
        let extra = if shared {
            format!("login_key = \"{LOGIN_KEY}\"")
        } else {
            String::new()
        };
        let Some(w) = Pair::start_with("tests/redis.rs", &extra).await else {
            return;
        };
        let ((a1, a2), _) = (w.a(), w.b());
        let b = browser();
        let r = b
            .get(format!("{a1}/app/page"))
            .header(ACCEPT, "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let r = b
            .get(format!("{}&user=alice", location(&r)))
            .send()
            .await
            .unwrap();
        let callback = location(&r);
        assert!(
            callback.starts_with(&format!("{a1}/_authgate/callback?")),
            "{callback}"
        );
        // The load balancer sends the callback to instance two, under the public host.
        let tokens = w.idp.token_requests();
        let r = b
            .get(callback.replacen(&a1, &a2, 1))
            .header("host", a1.trim_start_matches("http://"))
            .send()
            .await
            .unwrap();
        if shared {
            assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
            assert_eq!(location(&r), format!("{a1}/app/page"));
            assert_eq!(w.idp.token_requests(), tokens + 1);
            for at in [&a1, &a2] {
                assert_eq!(
                    subject(&b, &format!("{at}/app/x")).await,
                    Ok("user_alice".into()),
                    "{at}"
                );
            }
        } else {
            assert_eq!(
                r.status(),
                400,
                "a login sealed by another key was accepted"
            );
            assert!(r.text().await.unwrap().contains("Sign-in failed"));
            assert_eq!(w.idp.token_requests(), tokens, "the code was exchanged");
            assert_eq!(subject(&b, &format!("{a2}/app/x")).await, Err(401));
        }
    }
}

#[tokio::test]
async fn a_session_started_at_one_instance_is_used_refreshed_and_ended_at_the_other() {
    let Some(w) = Pair::start("tests/redis.rs").await else {
        return;
    };
    let ((a1, a2), _) = (w.a(), w.b());
    let b = browser();
    log_in(&b, &format!("{a1}/app/"), "alice").await;
    assert_eq!(
        subject(&b, &format!("{a1}/app/x")).await,
        Ok("user_alice".into())
    );
    assert_eq!(
        subject(&b, &format!("{a2}/app/x")).await,
        Ok("user_alice".into()),
        "instance two knows the session"
    );

    // Nothing readable in Redis: keys are digests, values ciphertext.
    let cookie = b
        .get(format!("{a1}/_authgate/session"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), 200);
    let dump = w.redis.dump("it:*");
    assert!(dump.contains("it:s:"), "{dump}");
    assert!(
        !dump.contains("user_alice") && !dump.contains("eyJ"),
        "a token or the subject in clear in Redis:\n{dump}"
    );

    // Twenty concurrent requests at both instances, tokens due for refresh: one refresh at the IdP.
    w.idp.set_token_ttl(20);
    let b2 = browser();
    log_in(&b2, &format!("{a2}/app/"), "alice").await;
    w.idp.set_token_ttl(900);
    w.idp.set_refresh_delay(Duration::from_millis(400));
    let before = w.idp.refresh_requests();
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let (b, url) = (
                b2.clone(),
                format!("{}/app/{i}", if i % 2 == 0 { &a1 } else { &a2 }),
            );
            tokio::spawn(async move { api(&b, &url).await.status().as_u16() })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(
        w.idp.refresh_requests() - before,
        1,
        "one refresh for twenty requests at two instances"
    );
    assert_eq!(
        subject(&b2, &format!("{a1}/app/again")).await,
        Ok("user_alice".into())
    );
    assert_eq!(
        w.idp.refresh_requests() - before,
        1,
        "the refreshed tokens are shared"
    );
    let waited = metric(
        &w.one,
        "authgate_session_refreshes_total{result=\"waited\"}",
    )
    .await
    .unwrap_or(0.0)
        + metric(
            &w.two,
            "authgate_session_refreshes_total{result=\"waited\"}",
        )
        .await
        .unwrap_or(0.0);
    assert!(waited >= 1.0, "the other instance waited for the refresh");
    w.idp.set_refresh_delay(Duration::ZERO);

    // Logout at instance two: refused at both.
    let r = b
        .get(format!("{a2}/_authgate/logout"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        subject(&b, &format!("{a1}/app/x")).await,
        Err(401),
        "logged out at one instance, out at all"
    );
    assert_eq!(subject(&b, &format!("{a2}/app/x")).await, Err(401));
    assert_eq!(
        metric(&w.two, "authgate_logouts_total{kind=\"user\"}").await,
        Some(1.0)
    );
    assert!(metric(&w.one, "authgate_sessions_active{store=\"redis\"}")
        .await
        .is_some());
}

#[tokio::test]
async fn redis_down_means_503_for_sessions_only_and_it_recovers_by_itself() {
    let Some(mut w) = Pair::start("tests/redis.rs").await else {
        return;
    };
    let (a1, a2) = w.a();
    let b = browser();
    log_in(&b, &format!("{a1}/app/"), "alice").await;
    let bearer = w
        .idp
        .mint(json!({"sub": "user_1", "aud": AUDIENCE, "azp": "client-a"}));
    let with_bearer = |url: String| {
        let bearer = bearer.clone();
        async move {
            client()
                .get(url)
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(with_bearer(format!("{a1}/api/me")).await, 200);

    assert!(w.redis.save(), "redis keeps the session across its restart");
    w.redis.stop();
    for url in [format!("{a1}/app/x"), format!("{a2}/app/x")] {
        let started = std::time::Instant::now();
        let r = api(&b, &url).await;
        assert_eq!(r.status(), 503, "{url}");
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
            Some("5")
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a bounded wait: {:?}",
            started.elapsed()
        );
        let r = b
            .get(&url)
            .header(ACCEPT, "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            503,
            "a navigation is not sent to sign in again while sessions are unknown"
        );
    }
    for _ in 0..5 {
        assert_eq!(api(&b, &format!("{a1}/app/y")).await.status(), 503);
    }
    assert_eq!(
        with_bearer(format!("{a1}/api/me")).await,
        200,
        "bearer traffic is unaffected"
    );
    assert_eq!(with_bearer(format!("{a2}/api/me")).await, 200);
    let outage_lines = w
        .one
        .log
        .lock()
        .unwrap()
        .matches("session store (redis) is unreachable")
        .count();
    assert_eq!(
        outage_lines,
        1,
        "one log line per outage:\n{}",
        w.one.log.lock().unwrap()
    );

    w.redis.restart();
    let b_ = b.clone();
    let back = eventually(Duration::from_secs(10), || {
        let (b, url) = (b_.clone(), format!("{a1}/app/z"));
        async move { api(&b, &url).await.status() == 200 }
    })
    .await;
    assert!(
        back,
        "sessions are served again without restarting the gateway"
    );
    assert_eq!(
        subject(&b, &format!("{a2}/app/z")).await,
        Ok("user_alice".into())
    );
    assert!(w
        .one
        .log
        .lock()
        .unwrap()
        .contains("session store (redis) is reachable again"));
    assert!(
        metric(
            &w.one,
            "authgate_session_store_errors_total{operation=\"get\"}"
        )
        .await
        .unwrap_or(0.0)
            >= 1.0
    );
    // What the example dashboard shows of the session store exists after this run.
    assert_dashboard_metrics_exported(&w.one, &DASHBOARD_REDIS_ONLY).await;
}

/// `/readyz` at `gw`: its status and body.
async fn readyz(gw: &Gateway) -> (u16, String) {
    let r = client()
        .get(format!("{}/readyz", gw.admin))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A load balancer must stop sending browsers to an instance whose Redis is gone (it would
/// answer 503 to every signed-in request): `/readyz` is 503 while Redis does not answer, and
/// names the store's state and address (never the URL's password); 200 again once Redis is
/// back, without a restart. A flood of probes costs Redis one `PING` a second.
#[tokio::test]
async fn readyz_is_503_naming_the_session_store_while_redis_is_down_and_200_once_it_is_back() {
    let Some(mut w) = Pair::start("tests/redis.rs").await else {
        return;
    };
    let at = format!("redis://127.0.0.1:{}", w.redis.port());
    let (status, body) = readyz(&w.one).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");

    w.redis.stop();
    let down = format!("\nsession_store: unreachable ({at}: ");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (said, last) = loop {
        let (status, body) = readyz(&w.one).await;
        let said = status == 503
            && body.starts_with("not ready: session_store\n")
            && body.contains(&down)
            && body.contains("\nidp: ready");
        if said || std::time::Instant::now() > deadline {
            break (said, format!("{status} {body}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(said, "/readyz while redis is down: {last}");
    assert!(!last.contains(KEY), "{last}");

    w.redis.restart();
    let back = eventually(Duration::from_secs(10), || async {
        let (status, body) = readyz(&w.one).await;
        status == 200 && body.contains(&format!("\nsession_store: ready ({at})\n"))
    })
    .await;
    assert!(
        back,
        "/readyz once redis is back: {:?}",
        readyz(&w.one).await
    );

    // A flood of probes within a second: at most two PINGs (the cached answer's second may
    // end in the middle of it).
    let pings = |gw| async move {
        metric(
            gw,
            "authgate_session_store_duration_seconds_count{operation=\"ping\"}",
        )
        .await
        .unwrap_or(0.0)
    };
    let before = pings(&w.one).await;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(readyz(&w.one).await.0, 200);
    }
    let after = pings(&w.one).await;
    assert!(
        after - before <= 2.0 || started.elapsed() > Duration::from_secs(1),
        "{} PINGs for 20 probes in {:?}",
        after - before,
        started.elapsed()
    );
}

#[tokio::test]
async fn backchannel_logout_at_one_instance_ends_the_session_at_both() {
    let Some(w) = Pair::start("tests/redis.rs").await else {
        return;
    };
    let ((a1, a2), (b1, b2)) = (w.a(), w.b());
    let (alice, alice_again, bob) = (browser(), browser(), browser());
    log_in(&alice, &format!("{a1}/app/"), "alice").await;
    log_in(&alice_again, &format!("{a2}/app/"), "alice").await;
    log_in(&bob, &format!("{a2}/app/"), "bob").await;
    let sids = w.idp.sids("client-a", "user_alice");
    assert_eq!(sids.len(), 2, "one sid per login");

    // Every bad token: 400 with an error, no session touched.
    let forger = devidp::keys::SigningKey::generate(jsonwebtoken::Algorithm::RS256).unwrap();
    let good_claims = json!({"iss": w.idp.issuer(), "aud": "client-a", "iat": now(), "exp": now() + 120, "jti": "forged", "sub": "user_alice", "events": {devidp::idp::BACKCHANNEL_LOGOUT_EVENT: {}}});
    let replayed = w
        .idp
        .logout_token("client-a", json!({"sub": "user_bob", "sid": "unknown-sid"}));
    assert_eq!(
        w.backchannel(&w.one, &replayed).await.status(),
        200,
        "a token for an unknown sid ends nothing"
    );
    let cases = [
        ("forged", forger.sign_with_typ(&good_claims, "logout+jwt")),
        ("replayed at the other instance", replayed.clone()),
        (
            "wrong audience",
            w.idp.logout_token("client-b", json!({"sub": "user_alice"})),
        ),
        (
            "nonce",
            w.idp
                .logout_token("client-a", json!({"sub": "user_alice", "nonce": "n"})),
        ),
        (
            "no events",
            w.idp
                .logout_token("client-a", json!({"sub": "user_alice", "events": null})),
        ),
        (
            "expired",
            w.idp.logout_token(
                "client-a",
                json!({"sub": "user_alice", "exp": now() - 600, "iat": now() - 700}),
            ),
        ),
        (
            "stale iat",
            w.idp
                .logout_token("client-a", json!({"sub": "user_alice", "iat": now() - 600})),
        ),
        ("no sub nor sid", w.idp.logout_token("client-a", json!({}))),
        (
            "an id_token",
            w.idp.mint(json!({"sub": "user_alice", "aud": "client-a"})),
        ),
    ];
    for (case, token) in &cases {
        let r = w.backchannel(&w.two, token).await;
        assert_eq!(r.status(), 400, "{case}");
        assert_eq!(
            r.headers().get("cache-control").unwrap(),
            "no-store",
            "{case}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{case}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{case}"
        );
    }
    for (b, url) in [(&alice, &a1), (&alice_again, &a2), (&bob, &a1)] {
        assert!(
            subject(b, &format!("{url}/app/still")).await.is_ok(),
            "a refused token touched no session"
        );
    }
    let bad = client()
        .get(format!(
            "http://localhost:{}/_authgate/backchannel-logout/app-a",
            w.one.port
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 405);
    let json_body = client()
        .post(format!(
            "http://localhost:{}/_authgate/backchannel-logout/app-a",
            w.one.port
        ))
        .json(
            &json!({"logout_token": w.idp.logout_token("client-a", json!({"sub": "user_alice"}))}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 400, "a logout token comes in a form");
    let unknown = client()
        .post(format!(
            "http://localhost:{}/_authgate/backchannel-logout/nobody",
            w.one.port
        ))
        .form(&[("logout_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);

    // By sid, at instance one: that session ends at both instances; alice's other login stays.
    let by_sid = w
        .idp
        .logout_token("client-a", json!({"sub": "user_alice", "sid": sids[0]}));
    let r = w.backchannel(&w.one, &by_sid).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    assert_eq!(
        subject(&alice, &format!("{a2}/app/x")).await,
        Err(401),
        "ended at the other instance too"
    );
    assert_eq!(subject(&alice, &format!("{a1}/app/x")).await, Err(401));
    assert!(
        subject(&alice_again, &format!("{a1}/app/x")).await.is_ok(),
        "another sid stays"
    );
    assert_eq!(
        w.backchannel(&w.two, &by_sid).await.status(),
        400,
        "the same token again, at the other instance: a replay"
    );

    // By sub alone: every session of alice at app-a; bob stays.
    let by_sub = w.idp.logout_token("client-a", json!({"sub": "user_alice"}));
    assert_eq!(w.backchannel(&w.two, &by_sub).await.status(), 200);
    assert_eq!(
        subject(&alice_again, &format!("{a1}/app/x")).await,
        Err(401)
    );
    assert!(subject(&bob, &format!("{a1}/app/x")).await.is_ok());
    assert_eq!(
        metric(&w.one, "authgate_logouts_total{kind=\"backchannel\"}").await,
        Some(2.0)
    );
    assert_eq!(
        metric(
            &w.two,
            "authgate_backchannel_logout_refusals_total{reason=\"replayed\"}"
        )
        .await,
        Some(2.0)
    );

    // The IdP's own logout: signing out at app-b (instance two) sends the browser to the IdP,
    // which posts logout tokens to every client the user signed in to — app-a's session of the
    // same user at instance two ends although only app-b was signed out of.
    let carol = browser();
    log_in(&carol, &format!("{b2}/app/"), "carol").await;
    log_in(&carol, &format!("{a2}/app/"), "carol").await;
    let r = carol
        .get(format!("{b1}/_authgate/logout"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let at_idp = location(&r);
    assert!(
        at_idp.contains("/end_session") && at_idp.contains("id_token_hint"),
        "{at_idp}"
    );
    assert_eq!(
        subject(&carol, &format!("{a2}/app/x")).await.map(|_| ()),
        Ok(()),
        "app-a is still signed in before the IdP logout"
    );
    let r = carol.get(&at_idp).send().await.unwrap();
    assert_eq!(r.status(), 302, "the IdP returns the browser");
    let delivered = w.idp.backchannel_deliveries();
    assert!(
        delivered.contains(&("client-a".to_string(), 200)),
        "{delivered:?}"
    );
    assert_eq!(
        subject(&carol, &format!("{a1}/app/x")).await,
        Err(401),
        "the IdP's back-channel logout ended app-a's session"
    );
    assert_eq!(subject(&carol, &format!("{a2}/app/x")).await, Err(401));
}

/// A socket held at one instance is closed within `socket_recheck` of its session's logout at
/// the other (nobody tells it: it reads the session again from Redis), not before; and closed
/// when Redis stops answering (fail closed).
#[tokio::test]
async fn a_socket_at_one_instance_is_closed_within_socket_recheck_of_a_logout_at_the_other() {
    let upstream = Recorder::start().await;
    let Some(mut w) = Pair::start_before(
        "tests/redis.rs",
        "socket_recheck = \"1s\"",
        Some(upstream.addr),
    )
    .await
    else {
        return;
    };
    let (a1, a2) = w.a();
    let open = |session: String| {
        let (host, port, origin) = (format!("localhost:{}", w.two.port), w.two.port, a2.clone());
        async move {
            open_tunnel(
                &host,
                port,
                "/app/socket",
                &[("origin", &origin), ("cookie", &session)],
            )
            .await
        }
    };
    let session = sign_in(&a1, "/app/page", "alice").await;
    let mut socket = open(session.clone()).await;
    echo(&mut socket, "hello").await;
    let (closed, _) = closed_within(&mut socket, Duration::from_millis(2500)).await;
    assert!(!closed, "closed while its session lives");

    let r = client()
        .get(format!("{a1}/_authgate/logout"))
        .header("cookie", &session)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "the logout was refused");
    let started = std::time::Instant::now();
    let (closed, echoed) = closed_within(&mut socket, Duration::from_secs(5)).await;
    assert!(
        closed,
        "the socket at instance two outlived the logout at one"
    );
    assert!(echoed.is_empty(), "{echoed:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "closed {:?} after the logout, with socket_recheck = 1s",
        started.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(3), || async {
            upstream.tunnel(0).ended
        })
        .await,
        "the upstream's side of the tunnel was not ended"
    );
    assert_eq!(
        metric(
            &w.two,
            "authgate_sockets_closed_total{reason=\"session_ended\"}"
        )
        .await,
        Some(1.0)
    );

    // Redis stops answering: the socket cannot be vouched for, and is closed.
    let session = sign_in(&a1, "/app/page", "bob").await;
    let mut socket = open(session).await;
    echo(&mut socket, "hello").await;
    w.redis.stop();
    let started = std::time::Instant::now();
    let (closed, _) = closed_within(&mut socket, Duration::from_secs(5)).await;
    assert!(closed, "the socket outlived the session store");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        metric(
            &w.two,
            "authgate_sockets_closed_total{reason=\"session_store_unavailable\"}"
        )
        .await,
        Some(1.0)
    );
}
