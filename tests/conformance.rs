//! OpenID relying-party conformance, modelled on the OpenID Foundation's RP certification
//! profile (Basic, code flow): each test makes the development IdP misbehave the way the
//! certification case of the same name does, and asserts what the user sees (page and status)
//! and that no session was created.

mod common;

use common::browser::*;
use common::one_app::OneApp;
use common::*;
use devidp::echo::EchoServer;
use devidp::idp::{DevIdp, IdTokenTrick, RawAnswer};
use devidp::keys::SigningKey;
use jsonwebtoken::Algorithm;
use serde_json::json;
use std::time::Duration;

/// A gateway with one browser client (`app`, client id `rp`) in front of the dev IdP.
struct Rp {
    idp: DevIdp,
    _echo: EchoServer,
    _gw: Gateway,
    /// The client's origin.
    origin: String,
}

impl Rp {
    /// The IdP signs with a fresh `alg` key; the gateway refetches keys at most every `refetch`.
    async fn start(alg: Algorithm, refetch: &str) -> Rp {
        let idp = DevIdp::start_with("127.0.0.1:0".parse().unwrap(), alg)
            .await
            .unwrap();
        idp.set_audience(AUDIENCE);
        let echo = EchoServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let gw = OneApp::new("rp", "rp-secret")
            .namespace("client_demo")
            .idp(&format!("jwks_min_refetch_interval = \"{refetch}\""))
            .session("allow_insecure_http = true")
            .start(&idp, echo.addr())
            .await;
        let origin = format!("http://127.0.0.1:{}", gw.port);
        Rp {
            idp,
            _echo: echo,
            _gw: gw,
            origin,
        }
    }

    async fn rs256() -> Rp {
        Rp::start(Algorithm::RS256, "1ms").await
    }

    /// A fresh browser that started a login at `/app/page` and chose alice at the IdP: the
    /// callback URL the IdP sent it to, not yet followed.
    async fn at_callback(&self) -> (reqwest::Client, String) {
        let b = browser();
        let r = navigate(&b, &format!("{}/app/page", self.origin)).await;
        assert_eq!(
            r.status(),
            302,
            "a navigation without a session goes to the IdP"
        );
        let authorize = location(&r);
        assert!(
            authorize.starts_with(&self.idp.authorize_url()),
            "{authorize}"
        );
        let r = b
            .get(format!("{authorize}&user=alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "the IdP sends the browser back");
        (b, location(&r))
    }

    /// Follows the callback and asserts the sign-in-failed page: 400, `words` in the page, a
    /// retry link, no session cookie set, and no session afterwards.
    async fn refused(&self, b: &reqwest::Client, callback: &str, words: &str) {
        let r = navigate(b, callback).await;
        assert_eq!(r.status(), 400, "the callback is refused");
        assert!(
            no_session_cookie(&r),
            "a session cookie was set on a refusal"
        );
        let page = r.text().await.unwrap();
        assert!(
            page.contains("Sign-in failed")
                || page.contains("Sign in failed")
                || page.contains("sign-in"),
            "{page}"
        );
        assert!(
            page.contains(words),
            "expected {words:?} in the page: {page}"
        );
        assert!(page.contains("/_authgate/login"), "no retry link: {page}");
        self.no_session(b).await;
    }

    /// Follows the callback and asserts the login completed with a session for alice.
    async fn accepted(&self, b: &reqwest::Client, callback: &str) {
        let r = b.get(callback).send().await.unwrap();
        let status = r.status();
        assert_eq!(status, 302, "callback: {}", r.text().await.unwrap());
        assert_eq!(location(&r), format!("{}/app/page", self.origin));
        let info: serde_json::Value = api(b, &format!("{}/_authgate/session", self.origin))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(info["subject"], "user_alice");
    }

    async fn no_session(&self, b: &reqwest::Client) {
        assert_eq!(
            api(b, &format!("{}/_authgate/session", self.origin))
                .await
                .status(),
            401,
            "a session exists"
        );
        assert_eq!(
            api(b, &format!("{}/app/page", self.origin)).await.status(),
            401,
            "a session exists"
        );
    }

    /// One whole case: a login whose id_token the IdP spoils with `trick` is refused with `words`.
    async fn id_token_refused(&self, trick: IdTokenTrick, words: &str) {
        let (b, callback) = self.at_callback().await;
        self.idp.spoil_next_id_token(trick);
        self.refused(&b, &callback, words).await;
    }
}

fn no_session_cookie(r: &reqwest::Response) -> bool {
    !r.headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap_or("").starts_with("authgate="))
}

#[tokio::test]
async fn rp_id_token_sig_none() {
    Rp::rs256()
        .await
        .id_token_refused(IdTokenTrick::AlgNone, "id_token was refused")
        .await;
}

#[tokio::test]
async fn rp_id_token_bad_sig_rs256() {
    Rp::rs256()
        .await
        .id_token_refused(IdTokenTrick::BadSignature, "signature is invalid")
        .await;
}

#[tokio::test]
async fn rp_id_token_bad_sig_es256() {
    let rp = Rp::start(Algorithm::ES256, "1ms").await;
    rp.id_token_refused(IdTokenTrick::BadSignature, "signature is invalid")
        .await;
    // The same IdP's unspoiled ES256 id_token is accepted: the refusal is the signature's.
    let (b, callback) = rp.at_callback().await;
    rp.accepted(&b, &callback).await;
}

#[tokio::test]
async fn rp_id_token_bad_sig_eddsa() {
    let rp = Rp::start(Algorithm::EdDSA, "1ms").await;
    rp.id_token_refused(IdTokenTrick::BadSignature, "signature is invalid")
        .await;
    let (b, callback) = rp.at_callback().await;
    rp.accepted(&b, &callback).await;
}

#[tokio::test]
async fn rp_id_token_kid_absent_single_jwks() {
    // One key in the JWKS: an id_token without `kid` is verified with it and accepted.
    let rp = Rp::rs256().await;
    let (b, callback) = rp.at_callback().await;
    rp.idp.spoil_next_id_token(IdTokenTrick::NoKid);
    rp.accepted(&b, &callback).await;
}

#[tokio::test]
async fn rp_id_token_kid_absent_multiple_jwks() {
    // Two RS256 keys published: which one signed is ambiguous, so the id_token is refused.
    let rp = Rp::rs256().await;
    rp.idp.rotate(Algorithm::RS256).unwrap();
    // A bearer token naming the new kid makes the gateway fetch the JWKS: it now holds both.
    let token = rp.idp.mint(json!({"sub": "s", "aud": AUDIENCE}));
    let r = client()
        .get(format!("{}/app/x", rp.origin))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the new key is known");
    rp.id_token_refused(IdTokenTrick::NoKid, "unknown key")
        .await;
}

#[tokio::test]
async fn rp_id_token_iss_mismatch() {
    Rp::rs256()
        .await
        .id_token_refused(IdTokenTrick::WrongIssuer, "another issuer")
        .await;
}

#[tokio::test]
async fn rp_id_token_aud_mismatch() {
    Rp::rs256()
        .await
        .id_token_refused(IdTokenTrick::WrongAudience, "another audience")
        .await;
}

#[tokio::test]
async fn rp_id_token_aud_array_without_client() {
    Rp::rs256()
        .await
        .id_token_refused(IdTokenTrick::AudArrayWithoutClient, "another audience")
        .await;
}

#[tokio::test]
async fn rp_nonce_invalid() {
    Rp::rs256()
        .await
        .id_token_refused(IdTokenTrick::WrongNonce, "nonce does not match")
        .await;
}

#[tokio::test]
async fn rp_nonce_missing() {
    Rp::rs256()
        .await
        .id_token_refused(IdTokenTrick::NoNonce, "nonce does not match")
        .await;
}

#[tokio::test]
async fn rp_id_token_expired() {
    Rp::rs256()
        .await
        .id_token_refused(IdTokenTrick::Expired, "has expired")
        .await;
}

#[tokio::test]
async fn rp_id_token_not_yet_valid() {
    Rp::rs256()
        .await
        .id_token_refused(IdTokenTrick::NotYetValid, "not valid yet")
        .await;
}

#[tokio::test]
async fn rp_key_rotation_op_sign_key() {
    let rp = Rp::start(Algorithm::RS256, "2s").await;
    let (b, callback) = rp.at_callback().await;
    rp.accepted(&b, &callback).await;

    // The IdP rotates its signing key: the next login's id_token names a kid the gateway has
    // never seen; it fetches the JWKS again (no restart) and accepts it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let new_kid = rp.idp.rotate(Algorithm::ES256).unwrap();
    let before = rp.idp.jwks_requests();
    let (b, callback) = rp.at_callback().await;
    rp.accepted(&b, &callback).await;
    assert_eq!(
        rp.idp.jwks_requests(),
        before + 1,
        "one JWKS fetch picks up key {new_kid}"
    );

    // Refetches are rate limited: tokens naming unknown kids right after cause no fetch.
    let stranger = SigningKey::generate(Algorithm::RS256).unwrap();
    let plain = client();
    for i in 0..5 {
        let token = stranger.sign(&json!({"iss": rp.idp.issuer(), "sub": format!("s{i}"), "aud": AUDIENCE, "exp": now() + 300}));
        let r = plain
            .get(format!("{}/app/x", rp.origin))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(
        rp.idp.jwks_requests(),
        before + 1,
        "unknown kids within the interval fetched the JWKS"
    );

    // A session made with the old key still works, and one from the new key too.
    assert_eq!(
        api(&b, &format!("{}/app/page", rp.origin)).await.status(),
        200
    );
}

#[tokio::test]
async fn rp_token_endpoint_garbage() {
    let rp = Rp::rs256().await;
    let answers = [
        (
            200,
            "text/html",
            "<html><body>Welcome to nginx!</body></html>",
        ),
        (
            200,
            "application/json",
            r#"{"access_token": "abc", "id_tok"#,
        ),
        (500, "application/json", r#"{"error": "server_error"}"#),
        (500, "text/html", "<html>Internal Server Error</html>"),
        (
            200,
            "application/json",
            r#"{"access_token": "abc", "token_type": "Bearer"}"#,
        ),
    ];
    for (status, content_type, body) in answers {
        let (b, callback) = rp.at_callback().await;
        rp.idp.set_token_answer(Some(RawAnswer {
            status,
            content_type: content_type.into(),
            body: body.into(),
        }));
        let r = navigate(&b, &callback).await;
        rp.idp.set_token_answer(None);
        assert_eq!(r.status(), 400, "{status} {body}");
        assert!(no_session_cookie(&r), "{status} {body}");
        let page = r.text().await.unwrap();
        assert!(
            page.contains("/_authgate/login"),
            "no retry link for {status} {body}: {page}"
        );
        assert!(
            !page.contains("nginx") && !page.contains("Internal Server Error"),
            "the IdP's body is shown: {page}"
        );
        rp.no_session(&b).await;
    }
    // And the gateway is fine afterwards.
    let (b, callback) = rp.at_callback().await;
    rp.accepted(&b, &callback).await;
}

#[tokio::test]
async fn rp_state_mismatch() {
    let rp = Rp::rs256().await;
    let (b, callback) = rp.at_callback().await;
    let mut url = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "state" {
                (k, "forged-state-0123456789abcdef".into())
            } else {
                (k, v)
            }
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    rp.refused(&b, url.as_str(), "expired or was already used")
        .await;
    // No state at all.
    let stripped = callback.split("&state=").next().unwrap().to_string();
    rp.refused(&b, &stripped, "no state").await;
}

#[tokio::test]
async fn rp_state_reuse() {
    let rp = Rp::rs256().await;
    let (b, callback) = rp.at_callback().await;
    let code_requests = rp.idp.token_requests();
    rp.accepted(&b, &callback).await;
    // Replayed by another browser: refused, no session, the code never reaches the IdP again.
    let other = browser();
    rp.refused(&other, &callback, "expired or was already used")
        .await;
    // Replayed by the same browser: refused too.
    let r = navigate(&b, &callback).await;
    assert_eq!(r.status(), 400);
    assert!(no_session_cookie(&r));
    assert_eq!(
        rp.idp.token_requests(),
        code_requests + 1,
        "a replayed state exchanged its code again"
    );
}

#[tokio::test]
async fn rp_iss_param_mismatch() {
    // RFC 9207: the callback's `iss` must be the issuer's, checked before the code is exchanged.
    let rp = Rp::rs256().await;
    rp.idp.set_callback_iss(Some("https://evil.example"));
    let (b, callback) = rp.at_callback().await;
    let before = rp.idp.token_requests();
    rp.refused(&b, &callback, "another issuer").await;
    assert_eq!(
        rp.idp.token_requests(),
        before,
        "the code was sent to the token endpoint"
    );
}

// `rp_userinfo_sub_mismatch` does not apply: the gateway never calls a userinfo endpoint; the
// identity is the verified id_token's (and access token's), so no second `sub` can disagree.
