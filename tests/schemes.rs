//! The request's scheme, end to end: browser sign-in refused over plain http unless
//! `session.allow_insecure_http`, and `[proxy] https = true` behind a TLS terminator (the
//! origin, the cookies' names and attributes, every URL the gateway writes, all `https://`).

mod common;

use common::browser::*;
use common::one_app::OneApp;
use common::*;
use devidp::echo::EchoServer;
use devidp::idp::DevIdp;
use reqwest::header::ACCEPT;
use serde_json::Value;
use std::collections::HashMap;

/// A gateway with one sign-in client `app` on its own origin (`scheme://127.0.0.1:port`), a
/// route `/app/*` for any signed-in caller, and `proxy_extra` / `session_extra` added.
async fn gateway(
    idp: &DevIdp,
    echo: &EchoServer,
    scheme: &str,
    proxy_extra: &str,
    session_extra: &str,
) -> Gateway {
    OneApp::new("client-a", "secret-a")
        .scheme(scheme)
        .proxy(proxy_extra)
        .session(session_extra)
        .start(idp, echo.addr())
        .await
}

#[tokio::test]
async fn sign_in_over_plain_http_is_refused_without_allow_insecure_http() {
    let (idp, echo) = idp_and_echo().await;
    let gw = gateway(&idp, &echo, "http", "", "").await;
    let b = browser();
    // A navigation to a protected page is not sent to sign in: 401, no redirect, no cookie.
    let r = navigate(&b, &format!("{}/app/page", gw.url)).await;
    assert_eq!(r.status(), 401, "a sign-in over plain http was started");
    assert!(
        r.headers().get("location").is_none(),
        "sent to the IdP over plain http"
    );
    assert!(
        set_cookies(&r).iter().all(|c| !c.starts_with("authgate")),
        "a login cookie was set over plain http: {:?}",
        set_cookies(&r)
    );
    // Asked for explicitly, the sign-in is refused with a page that says why.
    let r = navigate(&b, &format!("{}/_authgate/login?rd=/app/page", gw.url)).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    assert!(set_cookies(&r).iter().all(|c| !c.starts_with("authgate")));
    let page = r.text().await.unwrap();
    assert!(page.contains("HTTPS"), "the page does not say why: {page}");
    assert_eq!(echo.requests(), 0);

    // The same config with allow_insecure_http: the sign-in starts.
    let gw = gateway(&idp, &echo, "http", "", "allow_insecure_http = true").await;
    let authorize = start_login(&browser(), &format!("{}/app/page", gw.url)).await;
    assert!(authorize.starts_with(&idp.authorize_url()), "{authorize}");
}

/// Behind a TLS terminator that forwards plain http: with `https = true`, the request's origin
/// is `https://`, the cookies are `__Host-` and `Secure`, and the redirect URI, the callback's
/// redirect and the signed-in page's URLs are all `https://`. The terminator is played by
/// rewriting `https://` to `http://` on each hop, and the browser's cookie jar by hand (a jar
/// would not send `Secure` cookies over http).
#[tokio::test]
async fn https_behind_a_tls_terminator_sets_secure_cookies_and_https_urls() {
    let (idp, echo) = idp_and_echo().await;
    let gw = gateway(&idp, &echo, "https", "https = true", "").await;
    let own = format!("https://127.0.0.1:{}", gw.port);
    let via_terminator = |url: &str| url.replacen("https://", "http://", 1);
    let http = client();

    let r = http
        .get(format!("{}/app/page?x=1", gw.url))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let authorize = url::Url::parse(&location(&r)).unwrap();
    let query: HashMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(
        query["redirect_uri"],
        format!("{own}/_authgate/callback"),
        "the redirect URI is not the https origin's"
    );
    let login: Vec<String> = set_cookies(&r);
    assert!(!login.is_empty(), "no login cookie");
    for c in &login {
        assert!(c.starts_with("__Host-authgate-login"), "{c}");
        assert!(c.contains("; Secure") && c.contains("Path=/"), "{c}");
        assert!(!c.contains("Domain="), "{c}");
    }
    let pairs = |cookies: &[String]| {
        cookies
            .iter()
            .map(|c| c.split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };

    let r = http
        .get(format!("{authorize}&user=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let callback = location(&r);
    assert!(
        callback.starts_with(&format!("{own}/_authgate/callback?")),
        "{callback}"
    );
    let r = http
        .get(via_terminator(&callback))
        .header("cookie", pairs(&login))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert_eq!(
        location(&r),
        format!("{own}/app/page?x=1"),
        "the callback's redirect is not the https page"
    );
    let session: Vec<String> = set_cookies(&r)
        .into_iter()
        .filter(|c| c.starts_with("__Host-authgate="))
        .collect();
    assert_eq!(session.len(), 1, "{:?}", set_cookies(&r));
    assert!(session[0].contains("; Secure") && session[0].contains("HttpOnly"));

    // Signed in: the page through the terminator, with the https origin's CORS answer.
    let r = http
        .get(format!("{}/app/page", gw.url))
        .header(ACCEPT, "application/json")
        .header("origin", &own)
        .header("cookie", pairs(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"].to_str().unwrap(),
        own
    );
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-auth-subject"], "user_alice");
    assert_eq!(echoed["headers"]["x-auth-client"], "app");
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    // The session cookie never reaches the upstream.
    let cookie = echoed["headers"]
        .get("cookie")
        .map(Value::to_string)
        .unwrap_or_default();
    assert!(!cookie.contains("__Host-authgate"), "{cookie}");
}
