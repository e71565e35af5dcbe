//! End to end: what an operator sees. Every metric the example Grafana dashboard queries
//! exists in `/metrics` after a short run (those only Redis or GitHub sign-ins export, after
//! the runs of tests/redis.rs and tests/github.rs); `[log] format = "json"` writes JSON lines; a W3C
//! `traceparent` reaches the upstream unchanged and its trace id is in the gateway's log lines.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A shadow grant for billing: `user_9` would get invoice:read.
const SHADOW_GRANT: &str = r#"
[[clients.grants]]
name = "user-9-reads"
enforce = false
permissions = ["invoice:read"]
provider = "idp"
subjects = ["user_9"]
"#;

/// The extra config: a shadow rule, a health-checked upstream, sign-in over plain http.
fn extra(echo: std::net::SocketAddr) -> String {
    format!(
        r#"
[[routes]]
name = "reports-shadow"
path = "/reports/*"
upstream = "checked"
auth = "authenticated"
enforce = false

[[upstreams]]
name = "checked"
addresses = ["{echo}"]
[upstreams.health_check]
path = "/healthz"
interval = "200ms"

[session]
allow_insecure_http = true
"#
    )
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_exists_after_a_short_run() {
    let elsewhere: Vec<&str> = DASHBOARD_REDIS_ONLY
        .iter()
        .chain(DASHBOARD_GITHUB_ONLY.iter())
        .copied()
        .collect();
    let expected: Vec<String> = dashboard_metrics()
        .into_iter()
        .filter(|n| !elsewhere.contains(&n.as_str()))
        .collect();
    let echo = devidp::echo::EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let w = World::start_with(Setup {
        extra: extra(echo.addr()),
        client_extra: SHADOW_GRANT.into(),
        ..Setup::default()
    })
    .await;
    let origin = w.gw.url.clone();
    w.idp.register_client(
        "abc",
        Some("dev"),
        &[&format!("{origin}/_authgate/callback")],
    );

    // Bearer tokens (verified, then cached), a live check, an API key, a shadow rule, a shadow grant.
    let reader = w.token(json!({"client_abc:invoice": ["read"]}));
    for _ in 0..2 {
        assert_eq!(w.get("/api/invoices/1", Some(&reader)).await.status(), 200);
    }
    let refunder = w.idp.mint(json!({"sub": "user_2", "aud": AUDIENCE, "permissions": {"client_abc:invoice": ["refund"]}, "abac_required": {"client_abc:invoice": ["refund"]}}));
    let r = w
        .http
        .post(format!("{origin}/api/invoices/1/refund"))
        .bearer_auth(&refunder)
        .send()
        .await
        .unwrap();
    assert!(r.status() == 200 || r.status() == 403, "{}", r.status());
    w.idp.add_api_key(
        "ak_live_dashboard",
        json!({"sub": "machine_1", "permissions": {"client_abc:invoice": ["read"]}}),
        900,
    );
    let r = w
        .http
        .get(format!("{origin}/api/invoices/1"))
        .header("x-api-key", "ak_live_dashboard")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        w.get("/reports/x", None).await.status(),
        200,
        "the shadow rule let the anonymous caller through"
    );
    let user_9 = w
        .idp
        .mint(json!({"sub": "user_9", "aud": AUDIENCE, "azp": "abc"}));
    assert_eq!(
        w.get("/api/invoices/1", Some(&user_9)).await.status(),
        403,
        "a shadow grant gave a permission"
    );

    // A sign-in with tokens due for refresh, used (refreshed) and logged out; one that fails; a
    // back-channel logout token refused.
    w.idp.set_token_ttl(20);
    let session = sign_in(&origin, "/api/me", "alice").await;
    assert!(session.starts_with("authgate="));
    w.idp.set_token_ttl(900);
    assert_eq!(
        w.http
            .get(format!("{origin}/api/me"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = w
        .http
        .post(format!("{origin}/_authgate/logout"))
        .header("cookie", &session)
        .header("origin", &origin)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_redirection() || r.status().is_success(),
        "logout: {}",
        r.status()
    );
    let r = w
        .http
        .get(format!(
            "{origin}/_authgate/callback?state=not-a-login&code=x"
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = w
        .http
        .post(format!("{origin}/_authgate/backchannel-logout/billing"))
        .form(&[("logout_token", "not-a-jwt")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_dashboard_metrics_exported(&w.gw, &expected).await;
    let metrics = w
        .http
        .get(format!("{}/metrics", w.gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "authgate_logins_started_total{client=\"billing\"} 1",
        "authgate_logins_completed_total{client=\"billing\"} 1",
        "reason=\"expired_or_replayed\"} 1",
        "authgate_shadow_decisions_total{route=\"reports-shadow\",would=\"refuse\"} 1",
        "authgate_shadow_grants_total{client=\"billing\",grant=\"user-9-reads\",would=\"allow\"} 1",
        "authgate_session_refreshes_total{result=\"refreshed\"} 1",
        "authgate_logouts_total{kind=\"user\"} 1",
        "authgate_idp_request_duration_seconds_count{endpoint=\"token\"} 2",
        "authgate_idp_request_duration_seconds_count{endpoint=\"api_key_exchange\"} 1",
        "authgate_upstream_healthy{address=",
    ] {
        assert!(metrics.contains(series), "no {series} in\n{metrics}");
    }
}

#[tokio::test]
async fn json_logs_and_traceparent_passed_through_and_logged() {
    let w = World::start_with(Setup {
        extra: "\n[log]\nformat = \"json\"\n".into(),
        ..Setup::default()
    })
    .await;
    let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");

    // Passed through unchanged, with tracestate.
    let token = w.token(json!({"client_abc:invoice": ["read"]}));
    let r = w
        .http
        .get(format!("{}/api/invoices/1", w.gw.url))
        .bearer_auth(&token)
        .header("traceparent", &traceparent)
        .header("tracestate", "vendor=1")
        .send()
        .await
        .unwrap();
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["traceparent"], traceparent.as_str());
    assert_eq!(echoed["headers"]["tracestate"], "vendor=1");

    // A refusal names the trace; a malformed traceparent names none.
    assert_eq!(
        w.http
            .get(format!("{}/api/me", w.gw.url))
            .header("traceparent", &traceparent)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        w.http
            .get(format!("{}/api/me", w.gw.url))
            .header("traceparent", "00-<script>-x-01")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let logged = eventually(Duration::from_secs(5), || async {
        w.gw.log.lock().unwrap().matches("\"refused\"").count() >= 2
    })
    .await;
    let log = w.gw.log.lock().unwrap().clone();
    assert!(logged, "{log}");
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().all(|l| l["timestamp"].is_string()
            && l["level"].is_string()
            && l["message"].is_string()),
        "{log}"
    );
    let refusals: Vec<&Value> = lines.iter().filter(|l| l["message"] == "refused").collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert_eq!(refusals[0]["trace_id"], TRACE);
    assert_eq!(refusals[0]["status"], 401);
    assert_eq!(refusals[1]["trace_id"], "-");
    assert!(
        !log.contains("<script>"),
        "a malformed traceparent reached the log"
    );
}
