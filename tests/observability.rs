//! End to end: what an operator sees. Every metric the example Grafana dashboard queries
//! exists in `/metrics` after a short run; `[log] format = "json"` writes JSON lines; a W3C
//! `traceparent` reaches the upstream unchanged and its trace id is in the gateway's log lines.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

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

/// Every metric name a query of the dashboard reads (histograms by their `_bucket`/`_count` series).
fn dashboard_metrics() -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    let mut names = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("a target without expr in {}", panel["title"]));
            let mut rest = expr;
            while let Some(at) = rest.find("authgate_") {
                let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    assert!(panels.len() >= 10 && names.len() >= 15, "the dashboard reads too little: {names:?}");
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_exists_after_a_short_run() {
    let expected = dashboard_metrics();
    let echo = devidp::echo::EchoServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let w = World::start_with(Setup { extra: extra(echo.addr()), ..Setup::default() }).await;
    let origin = w.gw.url.clone();
    w.idp.register_client("abc", Some("dev"), &[&format!("{origin}/_authgate/callback")]);

    // Bearer tokens (verified, then cached), a live check, an API key, a shadow rule.
    let reader = w.token(json!({"client_abc:invoice": ["read"]}));
    for _ in 0..2 {
        assert_eq!(w.get("/api/invoices/1", Some(&reader)).await.status(), 200);
    }
    let refunder = w.idp.mint(json!({"sub": "user_2", "aud": AUDIENCE, "permissions": {"client_abc:invoice": ["refund"]}, "abac_required": {"client_abc:invoice": ["refund"]}}));
    let r = w.http.post(format!("{origin}/api/invoices/1/refund")).bearer_auth(&refunder).send().await.unwrap();
    assert!(r.status() == 200 || r.status() == 403, "{}", r.status());
    w.idp.add_api_key("ak_live_dashboard", json!({"sub": "machine_1", "permissions": {"client_abc:invoice": ["read"]}}), 900);
    let r = w.http.get(format!("{origin}/api/invoices/1")).header("x-api-key", "ak_live_dashboard").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(w.get("/reports/x", None).await.status(), 200, "the shadow rule let the anonymous caller through");

    // A sign-in, and one that fails.
    let session = sign_in(&origin, "/api/me", "alice").await;
    assert!(session.starts_with("authgate="));
    let r = w.http.get(format!("{origin}/_authgate/callback?state=not-a-login&code=x")).send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    let found = eventually(Duration::from_secs(10), || async {
        let metrics = w.http.get(format!("{}/metrics", w.gw.admin)).send().await.unwrap().text().await.unwrap();
        let present: BTreeSet<&str> = metrics.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
        expected.iter().all(|name| present.contains(name.as_str()))
    })
    .await;
    if !found {
        let metrics = w.http.get(format!("{}/metrics", w.gw.admin)).send().await.unwrap().text().await.unwrap();
        let missing: Vec<&String> = expected.iter().filter(|n| !metrics.lines().any(|l| l.starts_with(&format!("{n}{{")) || l.starts_with(&format!("{n} ")))).collect();
        panic!("the dashboard queries metrics /metrics does not have: {missing:?}\n{metrics}");
    }
    let metrics = w.http.get(format!("{}/metrics", w.gw.admin)).send().await.unwrap().text().await.unwrap();
    for series in [
        "authgate_logins_started_total{client=\"billing\"} 1",
        "authgate_logins_completed_total{client=\"billing\"} 1",
        "reason=\"expired_or_replayed\"} 1",
        "authgate_shadow_decisions_total{route=\"reports-shadow\",would=\"refuse\"} 1",
        "authgate_idp_request_duration_seconds_count{endpoint=\"token\"} 1",
        "authgate_idp_request_duration_seconds_count{endpoint=\"api_key_exchange\"} 1",
        "authgate_upstream_healthy{address=",
    ] {
        assert!(metrics.contains(series), "no {series} in\n{metrics}");
    }
}

#[tokio::test]
async fn json_logs_and_traceparent_passed_through_and_logged() {
    let w = World::start_with(Setup { extra: "\n[log]\nformat = \"json\"\n".into(), ..Setup::default() }).await;
    let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");

    // Passed through unchanged, with tracestate.
    let token = w.token(json!({"client_abc:invoice": ["read"]}));
    let r = w.http.get(format!("{}/api/invoices/1", w.gw.url)).bearer_auth(&token).header("traceparent", &traceparent).header("tracestate", "vendor=1").send().await.unwrap();
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["traceparent"], traceparent.as_str());
    assert_eq!(echoed["headers"]["tracestate"], "vendor=1");

    // A refusal names the trace; a malformed traceparent names none.
    assert_eq!(w.http.get(format!("{}/api/me", w.gw.url)).header("traceparent", &traceparent).send().await.unwrap().status(), 401);
    assert_eq!(w.http.get(format!("{}/api/me", w.gw.url)).header("traceparent", "00-<script>-x-01").send().await.unwrap().status(), 401);
    let logged = eventually(Duration::from_secs(5), || async { w.gw.log.lock().unwrap().matches("\"refused\"").count() >= 2 }).await;
    let log = w.gw.log.lock().unwrap().clone();
    assert!(logged, "{log}");
    let lines: Vec<Value> = log.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string()), "{log}");
    let refusals: Vec<&Value> = lines.iter().filter(|l| l["message"] == "refused").collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert_eq!(refusals[0]["trace_id"], TRACE);
    assert_eq!(refusals[0]["status"], 401);
    assert_eq!(refusals[1]["trace_id"], "-");
    assert!(!log.contains("<script>"), "a malformed traceparent reached the log");
}
