//! End to end in a real browser: headless chromium (Debian's `chromium`) driven by
//! `playwright-core` (tests/browser/) signs in through `authgate demo` from its three client
//! apps (two through the development IdP, one through the stand-in GitHub). It runs `npm ci` in
//! tests/browser when `playwright-core` is missing; without node or chromium it fails under CI
//! (or `AUTHGATE_REQUIRE_SERVICES=1`) and skips with a visible line elsewhere.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Why the browser test cannot run here, if it cannot: node or chromium missing, or
/// `playwright-core` neither installed nor installable (`npm ci`, run here when it is missing).
fn missing() -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed (apt-get install nodejs npm)".into());
    }
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "{chromium} is not installed (apt-get install chromium)"
        ));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        // The test sets up its own packages, so `cargo test` needs no third command.
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status();
        match installed {
            Ok(status) if status.success() => {}
            Ok(status) => return Some(format!("`npm ci` in tests/browser failed ({status})")),
            Err(e) => return Some(format!("npm is not installed (apt-get install npm): {e}")),
        }
    }
    None
}

#[tokio::test]
async fn browser_signs_in_through_the_demo() {
    if let Some(why) = missing() {
        devidp::services::skip("browser_signs_in_through_the_demo", &why);
        return;
    }
    let (port, admin, idp) = (free_port(), free_port(), free_port());
    let mut demo = Command::new(binary())
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--idp",
            &format!("127.0.0.1:{idp}"),
        ])
        .env("AUTHGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    let http = client();
    let up = eventually(Duration::from_secs(20), || {
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{admin}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(up, "the demo did not become ready");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    for (url, client, provider) in [
        (format!("http://localhost:{port}/app/"), "demo-b", "idp"),
        (format!("http://127.0.0.1:{port}/app/"), "demo-a", "idp"),
        (
            format!("http://github.localhost:{port}/app/"),
            "demo-c",
            "github",
        ),
    ] {
        let out = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || {
                Command::new("node")
                    .arg("login.mjs")
                    .arg(&url)
                    .arg(client)
                    .arg(provider)
                    .current_dir(dir)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        if !out.status.success() {
            let _ = demo.kill();
        }
        assert!(
            out.status.success(),
            "the browser login failed for {client}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = demo.kill();
    let _ = demo.wait();
}
