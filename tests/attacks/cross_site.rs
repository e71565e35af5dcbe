//! Cross-site requests riding on a session cookie. A cookie is sent with requests from any page
//! of the site (`SameSite=Lax` stops only cross-*site* POSTs), so a sibling subdomain, a
//! sandboxed frame (`Origin: null`) or a page of another registered app can make the browser
//! POST, PUT, DELETE or open a WebSocket with it. `default_client` maps every unknown origin to
//! one client, so the origin check that refuses unknown origins no longer stands in the way:
//! the session rule must. The upstream must receive nothing.
//!
//! The world: two sign-in apps (`app-a` on `http://localhost:{port}`, `app-b` on
//! `http://127.0.0.1:{port}`) and `default_client = "app-a"`; alice signed in at app-a.

use crate::common::*;
use reqwest::header::ACCEPT;
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

/// A shadow route (`enforce = false`) for signed-in callers, beside the SignIn world's `/app/*`.
const SHADOW: &str = r#"
[[routes]]
name = "shadow"
path = "/shadow/*"
upstream = "app"
auth = "authenticated"
enforce = false
"#;

struct Site {
    w: World,
    /// app-a's origin, where alice signed in.
    a: String,
    /// app-b's origin.
    b: String,
    /// alice's session cookie at app-a, `name=value`.
    cookie: String,
}

async fn site() -> Site {
    let (idp, echo) = idp_and_echo().await;
    let setup = Setup {
        clients: Clients::SignIn,
        extra: SHADOW.into(),
        ..Setup::default()
    };
    let gw = start_gateway(
        |port, admin| {
            idp.register_client(
                "client-a",
                Some("secret-a"),
                &[&format!("http://localhost:{port}/_authgate/callback")],
            );
            // A top-level key: before the first table.
            format!(
                "default_client = \"app-a\"\n{}",
                config(port, admin, &idp, echo.addr(), &setup)
            )
        },
        true,
    )
    .await;
    let a = format!("http://localhost:{}", gw.port);
    let b = format!("http://127.0.0.1:{}", gw.port);
    let cookie = sign_in(&a, "/app/page", "alice").await;
    Site {
        w: World {
            idp,
            echo,
            gw,
            http: client(),
        },
        a,
        b,
        cookie,
    }
}

impl Site {
    /// `method /app/x` at app-a with alice's cookie and `headers`: the status, the body, and
    /// whether the upstream was reached.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value, bool) {
        let before = self.w.echo.requests();
        let mut req = self
            .w
            .http
            .request(method, format!("{}{path}", self.a))
            .header(ACCEPT, "application/json")
            .header("cookie", &self.cookie);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body, self.w.echo.requests() > before)
    }

    /// Opens a WebSocket at app-a's `/app/socket` with alice's cookie: the status (101 when
    /// upgraded) and whether the upstream was reached.
    async fn upgrade(&self, origin: Option<&str>) -> (u16, bool) {
        let before = self.w.echo.requests();
        let mut req = format!("{}/app/socket", self.a.replace("http://", "ws://"))
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("cookie", self.cookie.parse().unwrap());
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let status = match tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(req),
        )
        .await
        .expect("the upgrade hung")
        {
            Ok((_socket, response)) => response.status().as_u16(),
            Err(WsError::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("the upgrade failed: {e}"),
        };
        (status, self.w.echo.requests() > before)
    }
}

#[tokio::test]
async fn a_session_cookie_changes_nothing_from_another_page_even_with_a_default_client() {
    let s = site().await;
    let evil = "https://evil.localhost";
    use reqwest::Method as M;
    /// (why, method, headers)
    type Case<'a, H> = (&'a str, M, H);
    let refused: [Case<&[(&str, &str)]>; 11] = [
        ("POST from a foreign origin", M::POST, &[("origin", evil)]),
        ("PUT from a foreign origin", M::PUT, &[("origin", evil)]),
        (
            "DELETE from a foreign origin",
            M::DELETE,
            &[("origin", evil)],
        ),
        ("PATCH from a foreign origin", M::PATCH, &[("origin", evil)]),
        (
            "POST from a sandboxed frame",
            M::POST,
            &[("origin", "null")],
        ),
        ("POST without Origin", M::POST, &[]),
        (
            "POST without Origin, same-site",
            M::POST,
            &[("sec-fetch-site", "same-site")],
        ),
        (
            "POST from a foreign origin, same-site",
            M::POST,
            &[("origin", evil), ("sec-fetch-site", "same-site")],
        ),
        (
            "POST with Sec-Fetch-Site twice, same-origin first",
            M::POST,
            &[
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
        (
            "POST with Origin twice, its own first",
            M::POST,
            &[("origin", "OWN"), ("origin", evil)],
        ),
        (
            "POST from the other app's origin",
            M::POST,
            &[("origin", "OTHER")],
        ),
    ];
    for (why, method, headers) in refused {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| match *v {
                "OWN" => (*k, s.a.as_str()),
                "OTHER" => (*k, s.b.as_str()),
                v => (*k, v),
            })
            .collect();
        let (status, body, reached) = s.send(method, "/app/x", &headers).await;
        assert_eq!(status, 403, "{why}: {body}");
        assert!(!reached, "{why}: the upstream was reached");
        if why != "POST from the other app's origin" {
            assert_eq!(body["title"], "Cross-site request refused", "{why}: {body}");
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("own pages"), "{why}: {detail}");
        }
    }
    // A WebSocket opened by a foreign page with the cookie: refused before the upstream.
    for origin in [Some(evil), Some("null"), None] {
        let (status, reached) = s.upgrade(origin).await;
        assert_eq!((status, reached), (403, false), "WebSocket from {origin:?}");
    }
    // On a shadow route, a cross-site POST goes through without the session's identity.
    let (status, body, reached) = s.send(M::POST, "/shadow/x", &[("origin", evil)]).await;
    assert_eq!((status, reached), (200, true), "{body}");
    assert!(
        body["headers"].get("x-auth-subject").is_none(),
        "the upstream was told a cross-site POST came from alice: {body}"
    );

    // From the app's own pages, everything still works.
    let own = s.a.clone();
    let allowed: [Case<Vec<(&str, &str)>>; 6] = [
        ("POST from its own origin", M::POST, vec![("origin", &own)]),
        ("PUT from its own origin", M::PUT, vec![("origin", &own)]),
        (
            "DELETE from its own origin, same-origin",
            M::DELETE,
            vec![("origin", &own), ("sec-fetch-site", "same-origin")],
        ),
        (
            "POST same-origin without Origin",
            M::POST,
            vec![("sec-fetch-site", "same-origin")],
        ),
        (
            "POST same-origin with Origin: null (Referrer-Policy: no-referrer)",
            M::POST,
            vec![("origin", "null"), ("sec-fetch-site", "same-origin")],
        ),
        // Reads are not state changes: a foreign page cannot read the answer (no CORS for it).
        ("GET from a foreign origin", M::GET, vec![("origin", evil)]),
    ];
    for (why, method, headers) in allowed {
        let (status, body, reached) = s.send(method, "/app/x", &headers).await;
        assert_eq!((status, reached), (200, true), "{why}: {body}");
        assert_eq!(
            body["headers"]["x-auth-subject"], "user_alice",
            "{why}: {body}"
        );
        assert_eq!(body["headers"]["x-auth-client"], "app-a", "{why}: {body}");
    }
    let (status, reached) = s.upgrade(Some(&own)).await;
    assert_eq!(
        (status, reached),
        (101, true),
        "a WebSocket from its own page"
    );
}
