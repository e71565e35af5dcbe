//! End to end: the proxy listener serving HTTPS from certificate and key files.

mod common;

use common::browser::*;
use common::*;
use serde_json::json;

#[tokio::test]
async fn serves_https_and_builds_the_origin_with_https() {
    let idp = devidp::idp::DevIdp::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    idp.set_audience(AUDIENCE);
    let echo = devidp::echo::EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = localhost_certificate(dir.path());

    let (port, admin) = (free_port(), free_port());
    let setup = Setup::default().tls(&cert_path, &key_path).client(
        "secure",
        &format!("https://localhost:{port}"),
        "sec",
        None,
    );
    let text = config(port, admin, &idp, echo.addr(), &setup);
    // The standard config's readiness probe uses plain http; wait on the admin only.
    let gw = spawn_gateway_without_probe(&text, admin).await;
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    // A token bound to `secure` (azp) passes only when the request's origin names that client.
    let token = idp.mint(json!({"sub": "u", "aud": AUDIENCE, "azp": "sec"}));
    let r = https
        .get(format!("https://localhost:{port}/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the Host origin is https://localhost:{port}, the client `secure`"
    );
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-auth-client"], "secure");
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    // Plain http on the TLS port is not served.
    match client()
        .get(format!("http://127.0.0.1:{port}/public/x"))
        .send()
        .await
    {
        Ok(r) => panic!("plain http on the TLS port was answered {}", r.status()),
        // The listener is there (the https request above went through): the connection is
        // made, and the TLS handshake refuses what follows.
        Err(e) => assert!(
            !e.is_connect() && !e.is_timeout(),
            "not a TLS refusal: {e:?}"
        ),
    }
    drop(gw);
}

/// An HTTPS client trusting `cert`, resolving `localhost` to the gateway, following no
/// redirects and keeping no cookies; HTTP/2 when the server offers it by ALPN, unless `http1`.
fn https_client(cert: &str, port: u16, http1: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap());
    if http1 { b.http1_only() } else { b }.build().unwrap()
}

/// The TLS listener offers `h2` by ALPN (the default): a browser's requests arrive as HTTP/2,
/// without `Host` (`:authority` names the origin), cookies possibly split over several `cookie`
/// fields. Routing, client identification, identity-header stripping, refusals, sign-in and
/// the session all behave as over HTTP/1.1, which the listener still serves.
#[tokio::test]
async fn http2_over_tls_end_to_end() {
    use reqwest::header::{ACCEPT, LOCATION};
    use reqwest::Version;
    let idp = devidp::idp::DevIdp::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    idp.set_audience(AUDIENCE);
    let echo = devidp::echo::EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
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
    let gw =
        spawn_gateway_without_probe(&config(port, admin, &idp, echo.addr(), &setup), admin).await;
    let h2 = https_client(&cert, port, false);

    // A public route: identity headers a client sends are stripped; the upstream (HTTP/1.1) gets
    // `Host` from `:authority`.
    let r = h2
        .get(format!("{origin}/public/x?q=1"))
        .header("x-auth-subject", "root")
        .header("X-Forwarded-User", "root")
        .header("x_auth_email", "root@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, Version::HTTP_2));
    // The request id (sent as a never-indexed HPACK literal) is the one the upstream got.
    let request_id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("no x-request-id over HTTP/2");
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-request-id"], request_id.as_str());
    assert_eq!(echoed["path"], "/public/x");
    assert_eq!(echoed["version"], "HTTP/1.1");
    assert_eq!(echoed["headers"]["host"], format!("localhost:{port}"));
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    for forged in [
        "x-auth-subject",
        "x-forwarded-user",
        "x-auth-email",
        "x_auth_email",
    ] {
        assert!(
            echoed["headers"].get(forged).is_none(),
            "{forged} reached the upstream: {echoed}"
        );
    }

    // A bearer route: the client is identified from `:authority` (a token bound to `sec` passes
    // only when the request's origin is `secure`'s), the verified identity replaces forged headers.
    let token = idp.mint(json!({"sub": "u", "aud": AUDIENCE, "azp": "sec"}));
    let r = h2
        .get(format!("{origin}/api/me"))
        .bearer_auth(&token)
        .header("x-auth-subject", "root")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, Version::HTTP_2));
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-auth-subject"], "u");
    assert_eq!(echoed["headers"]["x-auth-client"], "secure");
    assert!(
        echoed["headers"].get("authorization").is_none(),
        "the token went upstream: {echoed}"
    );

    // Refusals: no token, a forged token (with forged identity headers): 401, nothing upstream.
    let before = echo.requests();
    let r = h2
        .get(format!("{origin}/api/me"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (401, Version::HTTP_2));
    assert!(r.headers().contains_key("www-authenticate"));
    let r = h2
        .get(format!("{origin}/api/me"))
        .bearer_auth("e30.e30.sig")
        .header("x-auth-subject", "u")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (401, Version::HTTP_2));
    // A `Host` that contradicts `:authority` is refused before routing.
    let r = h2
        .get(format!("{origin}/public/x"))
        .header("host", "reports.test")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (400, Version::HTTP_2));
    assert_eq!(
        echo.requests(),
        before,
        "a refused request reached the upstream"
    );

    // Sign-in over HTTP/2: the navigation goes to the IdP, the callback sets the session cookie.
    let r = h2
        .get(format!("{origin}/api/me"))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (302, Version::HTTP_2));
    let login = cookie_pairs(&r);
    assert!(
        login
            .iter()
            .any(|c| c.starts_with("__Host-authgate-login-")),
        "{login:?}"
    );
    let authorize = r.headers()[LOCATION].to_str().unwrap().to_string();
    let r = client()
        .get(format!("{authorize}&user=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "the IdP did not send back");
    let callback = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(
        callback.starts_with(&format!("{origin}/_authgate/callback")),
        "{callback}"
    );
    let mut req = h2.get(&callback);
    for c in &login {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (302, Version::HTTP_2));
    let session = cookie_pairs(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-authgate="))
        .expect("no session cookie");
    // The session cookie in a `cookie` field of its own, between two others (HTTP/2 lets a
    // browser split cookies so): the session is found, only the others go upstream.
    let r = h2
        .get(format!("{origin}/api/me"))
        .header(ACCEPT, "application/json")
        .header("cookie", "theme=dark")
        .header("cookie", &session)
        .header("cookie", "lang=en")
        .header("x-auth-subject", "root")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, Version::HTTP_2));
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-auth-subject"], "user_alice");
    assert_eq!(echoed["headers"]["x-auth-client"], "secure");
    let cookie = echoed["headers"]["cookie"].as_str().unwrap_or_default();
    assert!(
        cookie.contains("theme=dark") && cookie.contains("lang=en") && !cookie.contains("authgate"),
        "cookies upstream: {cookie:?}"
    );

    // HTTP/1.1 over the same TLS listener.
    let h1 = https_client(&cert, port, true);
    let r = h1
        .get(format!("{origin}/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, Version::HTTP_11));
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-auth-client"], "secure");
    drop(gw);
}

/// `http2 = false` under `[proxy.tls]`: no `h2` by ALPN, a client that would speak HTTP/2
/// speaks HTTP/1.1.
#[tokio::test]
async fn http2_can_be_turned_off() {
    let idp = devidp::idp::DevIdp::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    idp.set_audience(AUDIENCE);
    let echo = devidp::echo::EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = localhost_certificate(dir.path());
    let (port, admin) = (free_port(), free_port());
    let setup = Setup::default().tls_with(&cert_path, &key_path, "http2 = false");
    let gw =
        spawn_gateway_without_probe(&config(port, admin, &idp, echo.addr(), &setup), admin).await;
    let r = https_client(&cert, port, false)
        .get(format!("https://localhost:{port}/public/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );
    drop(gw);
}
