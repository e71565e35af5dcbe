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
    let applied = eventually(Duration::from_secs(10), || async {
        w.get("/reloaded/x", None).await.status() == 200
    })
    .await;
    assert!(
        applied,
        "the reloaded route never served; log:\n{}",
        w.gw.log.lock().unwrap()
    );
    assert_eq!(w.get("/api/invoices/1", Some(&token)).await.status(), 200);
    let metrics = w
        .http
        .get(format!("{}/metrics", w.gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authgate_jwt_verifications_total{result=\"verified\"} 1"),
        "the token cache did not survive the reload:\n{metrics}"
    );

    // A bad file: every problem is logged and the running config stays.
    let bad = format!("{original}{NEW_ROUTE}").replace(
        "upstream = \"app\"\nauth = \"none\"\n",
        "upstream = \"nope\"\nauth = \"never\"\n",
    );
    std::fs::write(&path, bad).unwrap();
    w.gw.reload();
    let refused = eventually(Duration::from_secs(10), || async {
        w.gw.log.lock().unwrap().contains("config reload refused")
    })
    .await;
    assert!(refused, "no refusal logged:\n{}", w.gw.log.lock().unwrap());
    let log = w.gw.log.lock().unwrap().clone();
    assert!(
        log.contains("\"nope\" is not a configured upstream")
            && log.contains("\"never\" is not a mode"),
        "{log}"
    );
    assert_eq!(w.get("/reloaded/x", None).await.status(), 200);
    assert_eq!(w.get("/api/invoices/1", Some(&token)).await.status(), 200);

    // A change that needs a restart is named; the rest applies.
    let restart = format!("{original}{NEW_ROUTE}")
        .replace("timeout = \"2s\"", "timeout = \"3s\"")
        .replace("path = \"/reloaded/*\"", "path = \"/moved/*\"");
    std::fs::write(&path, restart).unwrap();
    w.gw.reload();
    let moved = eventually(Duration::from_secs(10), || async {
        w.get("/moved/x", None).await.status() == 200
    })
    .await;
    assert!(moved);
    assert_eq!(w.get("/reloaded/x", None).await.status(), 404);
    // (The log is read from the gateway's stderr by another thread: it may lag the request.)
    let named = eventually(Duration::from_secs(5), || async {
        w.gw.log.lock().unwrap().contains("need a restart")
    })
    .await;
    assert!(named, "{}", w.gw.log.lock().unwrap());
}

/// Saves `text` to `path` as editors do: written to a temporary file beside it, renamed over it.
fn save_like_an_editor(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The value of the sample `line` starts (metric name and labels) in `/metrics`, if present.
async fn sample(w: &World, series: &str) -> Option<f64> {
    let metrics = w
        .http
        .get(format!("{}/metrics", w.gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn readyz(w: &World) -> String {
    w.http
        .get(format!("{}/readyz", w.gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_edited_under_load_reloads_without_a_failed_request_and_a_broken_edit_is_refused_each_time(
) {
    let w = World::start().await;
    let token = w.token(json!({"client_abc:invoice": ["read"]}));
    let path = w.gw.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let started = authgate::config::file_hash(original.as_bytes());
    assert_eq!(
        sample(&w, &format!("authgate_config_info{{hash=\"{started}\"}}")).await,
        Some(1.0)
    );
    assert!(readyz(&w)
        .await
        .contains(&format!("config sha256:{started}\n")));

    // Bounded load on loopback: 4 callers × 50 requests, 40 ms apart (about 200 requests in
    // a few seconds), each over its kept-alive connection.
    let load = (0..4)
        .map(|i| {
            let (http, url, token) = (w.http.clone(), w.gw.url.clone(), token.clone());
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for n in 0..50 {
                    let req = if (i + n) % 2 == 0 {
                        http.get(format!("{url}/public/x"))
                    } else {
                        http.get(format!("{url}/api/invoices/1"))
                            .bearer_auth(&token)
                    };
                    match req.send().await {
                        Ok(r) if r.status() == 200 => {}
                        Ok(r) => failed.push(format!(
                            "{} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => failed.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                failed
            })
        })
        .collect::<Vec<_>>();

    // An edit saved while the load runs: no SIGHUP, the file change reloads it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let edited = format!("{original}{NEW_ROUTE}");
    save_like_an_editor(&path, &edited);
    let applied = eventually(Duration::from_secs(10), || async {
        w.get("/reloaded/x", None).await.status() == 200
    })
    .await;
    assert!(
        applied,
        "the edited file was never applied; log:\n{}",
        w.gw.log.lock().unwrap()
    );
    let hash = authgate::config::file_hash(edited.as_bytes());
    assert_eq!(
        sample(&w, "authgate_config_reloads_total{result=\"applied\"}").await,
        Some(1.0)
    );
    assert_eq!(
        sample(&w, &format!("authgate_config_info{{hash=\"{hash}\"}}")).await,
        Some(1.0)
    );
    assert_eq!(
        sample(&w, &format!("authgate_config_info{{hash=\"{started}\"}}")).await,
        None,
        "the old hash is still shown"
    );
    assert!(readyz(&w)
        .await
        .contains(&format!("config sha256:{hash}\n")));

    // A broken edit, still under load: refused and logged with why, the running config stays.
    let broken = edited.replace(
        "upstream = \"app\"\nauth = \"none\"\n",
        "upstream = \"nope\"\nauth = \"none\"\n",
    );
    save_like_an_editor(&path, &broken);
    let refused = eventually(Duration::from_secs(10), || async {
        sample(&w, "authgate_config_reloads_total{result=\"refused\"}").await == Some(1.0)
    })
    .await;
    assert!(
        refused,
        "the broken edit was not refused; log:\n{}",
        w.gw.log.lock().unwrap()
    );
    let said = eventually(Duration::from_secs(5), || async {
        let log = w.gw.log.lock().unwrap();
        log.contains("config reload refused")
            && log.contains("\"nope\" is not a configured upstream")
    })
    .await;
    assert!(
        said,
        "the refusal was not logged with why:\n{}",
        w.gw.log.lock().unwrap()
    );
    let ready = readyz(&w).await;
    assert!(
        ready.starts_with("ready\n")
            && ready.contains(&format!("config sha256:{hash}\n"))
            && ready.contains("refused")
            && ready.contains("\"nope\" is not a configured upstream"),
        "{ready}"
    );
    assert_eq!(w.get("/reloaded/x", None).await.status(), 200);

    // Broken again, differently: said again.
    save_like_an_editor(
        &path,
        &broken.replace("auth = \"none\"", "auth = \"never\""),
    );
    let again = eventually(Duration::from_secs(10), || async {
        sample(&w, "authgate_config_reloads_total{result=\"refused\"}").await == Some(2.0)
    })
    .await;
    assert!(
        again,
        "the second broken edit was not refused; log:\n{}",
        w.gw.log.lock().unwrap()
    );
    let said = eventually(Duration::from_secs(5), || async {
        w.gw.log.lock().unwrap().contains("\"never\" is not a mode")
    })
    .await;
    assert!(
        said,
        "the second refusal was not logged with why:\n{}",
        w.gw.log.lock().unwrap()
    );

    let mut failed = Vec::new();
    for task in load {
        failed.extend(task.await.unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} of 200 requests failed during the reloads: {failed:?}",
        failed.len()
    );

    // Put right: applied, and /readyz no longer speaks of a refusal.
    save_like_an_editor(&path, &edited);
    let fixed = eventually(Duration::from_secs(10), || async {
        sample(&w, "authgate_config_reloads_total{result=\"applied\"}").await == Some(2.0)
    })
    .await;
    assert!(fixed, "log:\n{}", w.gw.log.lock().unwrap());
    let ready = readyz(&w).await;
    assert!(
        !ready.contains("refused") && ready.contains(&format!("config sha256:{hash}\n")),
        "{ready}"
    );
}

/// A file written in place in two parts with a pause longer than the debounce between them
/// (a deploy tool streaming it, `cat > file` from a slow pipe): the first part is a valid config
/// on its own, without the route `reloaded` that both the running and the whole new config
/// have. The gateway waits for the file to read the same twice, a quiet debounce apart, so it
/// never serves the first part: `reloaded` never answers 404, and the whole file is applied,
/// once. (A pause the test's own scheduling stretched past twice the debounce proves nothing
/// either way: that attempt is made again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_place_with_a_pause_is_never_applied_half_written() {
    use std::io::Write;
    let w = World::start().await;
    let path = w.gw.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    save_like_an_editor(&path, &format!("{original}{NEW_ROUTE}"));
    let running = eventually(Duration::from_secs(10), || async {
        w.get("/reloaded/x", None).await.status() == 200
    })
    .await;
    assert!(running, "log:\n{}", w.gw.log.lock().unwrap());

    let debounce = authgate::server::reload::DEBOUNCE;
    for attempt in 0..3 {
        let later = format!("\n[[routes]]\nname = \"later{attempt}\"\npath = \"/later{attempt}/*\"\nupstream = \"app\"\nauth = \"none\"\n");
        let rest = format!("{NEW_ROUTE}{later}");
        let whole = format!("{original}{rest}");
        let applied_before = sample(&w, "authgate_config_reloads_total{result=\"applied\"}")
            .await
            .unwrap_or(0.0);

        // Watches the route the first part lacks until told to stop: every answer but 200.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (http, url, stop) = (w.http.clone(), w.gw.url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match http.get(format!("{url}/reloaded/x")).send().await {
                        Ok(r) if r.status() == 200 => {}
                        Ok(r) => wrong.push(r.status().as_u16().to_string()),
                        Err(e) => wrong.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                wrong
            })
        };

        // In place: truncate, the first part, a pause longer than the debounce, the rest.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(original.as_bytes()).unwrap();
        file.flush().unwrap();
        let first = std::time::Instant::now();
        tokio::time::sleep(debounce + debounce * 3 / 10).await;
        let paused = first.elapsed();
        file.write_all(rest.as_bytes()).unwrap();
        file.flush().unwrap();
        drop(file);

        let whole_applied = eventually(Duration::from_secs(10), || async {
            w.get(&format!("/later{attempt}/x"), None).await.status() == 200
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let wrong = watcher.await.unwrap();
        assert!(
            whole_applied,
            "the whole file was never applied; log:\n{}",
            w.gw.log.lock().unwrap()
        );
        let hash = authgate::config::file_hash(whole.as_bytes());
        assert!(
            readyz(&w)
                .await
                .contains(&format!("config sha256:{hash}\n")),
            "{}",
            readyz(&w).await
        );
        if paused >= debounce * 2 {
            eprintln!("attempt {attempt}: the pause took {paused:?} (more than twice the {debounce:?} debounce): made again");
            continue;
        }
        assert!(
            wrong.is_empty(),
            "the half-written file was served (its missing route answered {wrong:?}) after a {paused:?} pause"
        );
        let applied = sample(&w, "authgate_config_reloads_total{result=\"applied\"}")
            .await
            .unwrap_or(0.0);
        assert_eq!(
            applied - applied_before,
            1.0,
            "one reload, of the whole file; log:\n{}",
            w.gw.log.lock().unwrap()
        );
        return;
    }
    panic!("every pause overran twice the debounce: this machine is too loaded to tell");
}
