//! End to end: a shadow rule (`enforce = false`) decides, logs and counts, and proxies as if
//! allowed, with only the identity the gateway vouches for.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const SHADOW: &str = r#"
[[routes]]
name = "invoice-delete-shadow"
path = "/shadow/invoices/{id}"
methods = ["GET"]
upstream = "app"
permission = "invoice:delete"
entity_id = "id"
clients = ["billing"]
enforce = false

[headers]
forward_token = true
"#;

async fn shadow_count(w: &World, would: &str) -> f64 {
    let metrics = w
        .http
        .get(format!("{}/metrics", w.gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        "authgate_shadow_decisions_total{{route=\"invoice-delete-shadow\",would=\"{would}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

async fn echoed(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), 200, "a shadow rule refused");
    r.json::<Value>().await.unwrap()["headers"].clone()
}

#[tokio::test]
async fn a_shadow_rule_that_would_refuse_proxies_counts_and_logs_and_vouches_only_for_what_it_verified(
) {
    let w = World::start_with(Setup {
        extra: SHADOW.into(),
        ..Setup::default()
    })
    .await;
    let url = format!("{}/shadow/invoices/7", w.gw.url);

    // A verified caller without the permission: proxied with its identity, no permission header.
    let reader = w.token(json!({"client_abc:invoice": ["read"]}));
    let h = echoed(
        w.http
            .get(&url)
            .bearer_auth(&reader)
            .header("x-auth-permission", "client_abc:invoice:delete")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(h["x-auth-subject"], "user_1");
    assert_eq!(h["x-auth-client"], "billing");
    assert!(
        h.get("x-auth-permission").is_none(),
        "a permission not granted reached the upstream: {h}"
    );
    assert_eq!(
        h["authorization"],
        format!("Bearer {reader}").as_str(),
        "forward_token forwards a verified token"
    );
    assert_eq!(shadow_count(&w, "refuse").await, 1.0);
    let logged = eventually(Duration::from_secs(5), || async {
        w.gw.log
            .lock()
            .unwrap()
            .contains("shadow rule would refuse")
    })
    .await;
    assert!(logged, "{}", w.gw.log.lock().unwrap());
    let log = w.gw.log.lock().unwrap().clone();
    let line = log
        .lines()
        .find(|l| l.contains("shadow rule would refuse"))
        .unwrap();
    assert!(
        line.contains("invoice-delete-shadow")
            && line.contains("forbidden")
            && line.contains("user_1")
            && line.contains("delete"),
        "{line}"
    );

    // A caller the rule would allow: proxied with the permission, counted as allowed.
    let deleter = w.token(json!({"client_abc:invoice": ["delete"]}));
    let h = echoed(w.http.get(&url).bearer_auth(&deleter).send().await.unwrap()).await;
    assert_eq!(h["x-auth-permission"], "client_abc:invoice:delete");
    assert_eq!(shadow_count(&w, "allow").await, 1.0);

    // No credential, or one that does not verify: proxied with no identity at all, the
    // unverified token not forwarded, a spoofed identity header stripped.
    let h = echoed(
        w.http
            .get(&url)
            .header("x-auth-subject", "admin")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        h.as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("x-auth-")),
        "identity headers for an anonymous caller: {h}"
    );
    let h = echoed(
        w.http
            .get(&url)
            .bearer_auth("not.a.token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        h.as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("x-auth-")),
        "identity headers for an unverified caller: {h}"
    );
    assert!(
        h.get("authorization").is_none(),
        "an unverified token was forwarded: {h}"
    );
    assert_eq!(shadow_count(&w, "refuse").await, 3.0);
    let logged = eventually(Duration::from_secs(5), || async {
        let log = w.gw.log.lock().unwrap();
        (log.contains("would=\"unauthenticated\"") || log.contains("would=unauthenticated"))
            && log.contains("invalid_token")
    })
    .await;
    assert!(logged, "{}", w.gw.log.lock().unwrap());

    // Enforcing routes still enforce.
    assert_eq!(w.get("/api/invoices/7", None).await.status(), 401);
    assert_eq!(w.get("/api/invoices/7", Some(&deleter)).await.status(), 403);
}

/// An enforced `/vault/*` needing `invoice:read`, and a shadow rule trialling a stricter
/// `invoice:delete` on `/vault/admin/*` under it.
const HIDING: &str = r#"
[[routes]]
name = "vault"
path = "/vault/*"
upstream = "app"
permission = "invoice:read"
clients = ["billing"]

[[routes]]
name = "vault-admin-shadow"
path = "/vault/admin/*"
upstream = "app"
permission = "invoice:delete"
clients = ["billing"]
enforce = false
"#;

/// A shadow rule only trials its own decision: the enforced rule it hides from a request still
/// decides it, so `enforce = false` on a more specific path never makes that path public.
#[tokio::test]
async fn a_shadow_rule_never_lifts_the_enforced_rule_it_hides() {
    let w = World::start_with(Setup {
        extra: HIDING.into(),
        ..Setup::default()
    })
    .await;
    let url = format!("{}/vault/admin/keys", w.gw.url);
    let before = w.echo.requests();
    // Nothing, or a caller without the hidden rule's permission: refused as /vault/* refuses,
    // and the upstream never hears of it.
    let r = w.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401, "no credential");
    let stranger = w.token(json!({"client_abc:report": ["read"]}));
    let r = w
        .http
        .get(&url)
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "without invoice:read");
    assert_eq!(
        w.echo.requests(),
        before,
        "the upstream received a refused request"
    );
    // The hidden rule's permission: proxied, the identity and permission its rule granted sent,
    // and the shadow rule's own refusal (no invoice:delete) only logged and counted.
    let reader = w.token(json!({"client_abc:invoice": ["read"]}));
    let r = w.http.get(&url).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.json::<Value>().await.unwrap()["headers"].clone();
    assert_eq!(h["x-auth-subject"], "user_1");
    assert_eq!(h["x-auth-permission"], "client_abc:invoice:read", "{h}");
    let log = w.gw.log.lock().unwrap().clone();
    assert!(
        log.contains("shadow rule would refuse") && log.contains("vault-admin-shadow"),
        "the shadow rule's own decision is logged"
    );
    // The enforced route's own paths are unchanged.
    let r = w
        .http
        .get(format!("{}/vault", w.gw.url))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "/vault itself is the enforced route's");
}
