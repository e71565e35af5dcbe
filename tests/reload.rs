//! End to end: SIGHUP reloads the config; a bad file keeps the running one, and caches survive.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

const NEW_ROUTE: &str = "\n[[routes]]\nname = \"reloaded\"\npath = \"/reloaded/*\"\nupstream = \"app\"\nauth = \"none\"\n";

#[tokio::test]
async fn sighup_applies_a_good_file_and_keeps_the_running_config_on_a_bad_one() {
    let w = World::start().await;
    let token = w.token(json!({"client_abc:invoice": ["read"]}));
    assert_eq!(w.get("/api/invoices/1", Some(&token)).await.status(), 200);
    assert_eq!(w.get("/reloaded/x", None).await.status(), 404);

    // A good file: the new route serves, the verified token is still cached.
    let path = w.gw.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{original}{NEW_ROUTE}")).unwrap();
    w.gw.reload();
    let applied = eventually(Duration::from_secs(10), || async { w.get("/reloaded/x", None).await.status() == 200 }).await;
    assert!(applied, "the reloaded route never served; log:\n{}", w.gw.log.lock().unwrap());
    assert_eq!(w.get("/api/invoices/1", Some(&token)).await.status(), 200);
    let metrics = w.http.get(format!("{}/metrics", w.gw.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("authgate_jwt_verifications_total{result=\"verified\"} 1"), "the token cache did not survive the reload:\n{metrics}");

    // A bad file: every problem is logged and the running config stays.
    let bad = format!("{original}{NEW_ROUTE}").replace("upstream = \"app\"\nauth = \"none\"\n", "upstream = \"nope\"\nauth = \"never\"\n");
    std::fs::write(&path, bad).unwrap();
    w.gw.reload();
    let refused = eventually(Duration::from_secs(10), || async { w.gw.log.lock().unwrap().contains("config reload refused") }).await;
    assert!(refused, "no refusal logged:\n{}", w.gw.log.lock().unwrap());
    let log = w.gw.log.lock().unwrap().clone();
    assert!(log.contains("\"nope\" is not a configured upstream") && log.contains("\"never\" is not a mode"), "{log}");
    assert_eq!(w.get("/reloaded/x", None).await.status(), 200);
    assert_eq!(w.get("/api/invoices/1", Some(&token)).await.status(), 200);

    // A change that needs a restart is named; the rest applies.
    let restart = format!("{original}{NEW_ROUTE}").replace("timeout = \"2s\"", "timeout = \"3s\"").replace("path = \"/reloaded/*\"", "path = \"/moved/*\"");
    std::fs::write(&path, restart).unwrap();
    w.gw.reload();
    let moved = eventually(Duration::from_secs(10), || async { w.get("/moved/x", None).await.status() == 200 }).await;
    assert!(moved);
    assert_eq!(w.get("/reloaded/x", None).await.status(), 404);
    assert!(w.gw.log.lock().unwrap().contains("need a restart"));
}
