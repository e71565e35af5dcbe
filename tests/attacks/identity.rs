//! Attacks on the identity the gateway vouches for: an email nobody confirmed must not reach
//! the upstream as the user's email (headers and signed identity), the identity names the
//! provider that vouched, and the gateway's own `x-authgate-*` header names are never taken
//! from a client. Asserted on what the echo upstream received.

use super::headers::raw;
use crate::common::{Setup, World, AUDIENCE};
use serde_json::{json, Value};

/// A route whose upstream also gets the signed identity, and the `[headers]` settings given.
fn signed_route(headers: &str) -> String {
    format!("\n[[routes]]\nname = \"signed\"\npath = \"/signed/*\"\nupstream = \"app\"\nauth = \"authenticated\"\nsigned_identity = true\n{headers}")
}

/// The claims of the signed identity the upstream received, verified with the gateway's keys.
async fn assertion_claims(w: &World, echoed: &Value) -> Value {
    let jwt = echoed["headers"]["x-auth-jwt"]
        .as_str()
        .unwrap_or_else(|| panic!("no signed identity: {echoed}"));
    let jwks: jsonwebtoken::jwk::JwkSet = w
        .http
        .get(format!("{}/.well-known/authgate/jwks.json", w.gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&["app"]);
    jsonwebtoken::decode::<Value>(jwt, &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

/// What the upstream got for a bearer token with these claims on `path`.
async fn echoed_for(w: &World, path: &str, claims: Value) -> Value {
    let token = w.idp.mint(claims);
    let r = w
        .http
        .get(format!("{}{path}", w.gw.url))
        .bearer_auth(token)
        // A client's own copies prove nothing.
        .header("x-auth-email-verified", "true")
        .header("x-auth-email", "forged@example.com")
        .header("x-auth-provider", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn an_unverified_email_never_reaches_the_upstream_as_the_email() {
    let w = World::start_with(Setup {
        extra: signed_route(""),
        ..Setup::default()
    })
    .await;
    // Unverified: `email_verified` false, absent, or anything but `true`.
    for verified in [json!(false), Value::Null, json!("yes"), json!(1)] {
        let mut claims = json!({"sub": "eve", "email": "ceo@example.com", "aud": AUDIENCE});
        if !verified.is_null() {
            claims["email_verified"] = verified.clone();
        }
        let echoed = echoed_for(&w, "/signed/x", claims).await;
        let h = &echoed["headers"];
        assert_eq!(h["x-auth-subject"], "eve", "{echoed}");
        for name in ["x-auth-email", "x-auth-email-verified"] {
            assert!(
                h.get(name).is_none(),
                "email_verified {verified}: {name} reached the upstream: {h}"
            );
        }
        assert!(
            !echoed.to_string().contains("ceo@example.com"),
            "email_verified {verified}: the unverified email reached the upstream: {echoed}"
        );
        let claims = assertion_claims(&w, &echoed).await;
        assert!(
            claims["email"].is_null() && claims["email_verified"].is_null(),
            "email_verified {verified}: the signed identity carries the email: {claims}"
        );
    }
    // Verified: the email, marked so, in the headers and the signed identity.
    let echoed = echoed_for(
        &w,
        "/signed/x",
        json!({"sub": "alice", "email": "alice@example.com", "email_verified": true, "aud": AUDIENCE}),
    )
    .await;
    let h = &echoed["headers"];
    assert_eq!(h["x-auth-email"], "alice@example.com", "{h}");
    assert_eq!(h["x-auth-email-verified"], "true", "{h}");
    let claims = assertion_claims(&w, &echoed).await;
    assert_eq!(claims["email"], "alice@example.com", "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
}

#[tokio::test]
async fn unverified_emails_go_upstream_marked_when_configured() {
    let w = World::start_with(Setup {
        extra: signed_route("\n[headers]\nunverified_email = \"send\"\n"),
        ..Setup::default()
    })
    .await;
    let echoed = echoed_for(
        &w,
        "/signed/x",
        json!({"sub": "eve", "email": "ceo@example.com", "aud": AUDIENCE}),
    )
    .await;
    let h = &echoed["headers"];
    assert_eq!(h["x-auth-email"], "ceo@example.com", "{h}");
    assert_eq!(h["x-auth-email-verified"], "false", "{h}");
    let claims = assertion_claims(&w, &echoed).await;
    assert_eq!(claims["email"], "ceo@example.com", "{claims}");
    assert_eq!(claims["email_verified"], false, "{claims}");
}

#[tokio::test]
async fn the_identity_names_the_provider_that_vouched() {
    let w = World::start_with(Setup {
        extra: signed_route(""),
        ..Setup::default()
    })
    .await;
    let echoed = echoed_for(&w, "/signed/x", json!({"sub": "user_1", "aud": AUDIENCE})).await;
    let h = &echoed["headers"];
    assert_eq!(h["x-auth-provider"], "idp", "{h}");
    assert_eq!(
        h["x-auth-subject"], "user_1",
        "the [idp]'s subject as it is"
    );
    let claims = assertion_claims(&w, &echoed).await;
    assert_eq!(claims["sub"], "user_1", "{claims}");
    assert_eq!(claims["provider"], "idp", "{claims}");
    assert_eq!(claims["provider_iss"], w.idp.issuer(), "{claims}");
}

#[tokio::test]
async fn the_gateways_own_header_names_never_reach_the_upstream() {
    for (underscores, extra) in [
        ("drop", ""),
        ("allow", "\n[headers]\nwith_underscores = \"allow\"\n"),
    ] {
        let w = World::start_with(Setup {
            extra: extra.into(),
            ..Setup::default()
        })
        .await;
        let host = w.gw.url.trim_start_matches("http://").to_string();
        let token = w.idp.mint(json!({"sub": "user_1", "aud": AUDIENCE}));
        let forged = [
            "X-Authgate-User: forged",
            "x-authgate-user: forged-again",
            "X-AUTHGATE-ROLE: forged",
            "x-authgate-reason: forged",
            "X-Authgate-Identity: forged",
            "x_authgate_user: forged",
            "X_Authgate-Admin: forged",
            "x-authgate_subject: forged",
        ]
        .join("\r\n");
        for (path, auth) in [
            ("/public/x", String::new()),
            ("/api/me", format!("\r\nAuthorization: Bearer {token}")),
        ] {
            let (status, echoed) = raw(
                &w.gw,
                &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{forged}\r\nx-kept: 1{auth}"),
            )
            .await;
            assert_eq!(status, 200, "{path}: {echoed}");
            let h = echoed["headers"]
                .as_object()
                .unwrap_or_else(|| panic!("the upstream was not reached: {echoed}"));
            assert_eq!(h["x-kept"], "1");
            for (name, value) in h {
                let folded = name.to_ascii_lowercase().replace('_', "-");
                assert!(
                    !folded.starts_with("x-authgate-"),
                    "with_underscores = {underscores}, {path}: {name} reached the upstream: {h:?}"
                );
                assert!(
                    !value.as_str().unwrap_or("").contains("forged"),
                    "with_underscores = {underscores}, {path}: a forged value in {name}: {h:?}"
                );
            }
        }
    }
}
