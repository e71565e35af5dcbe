//! End to end: the `authgate` command itself — `check` and the `demo` a newcomer runs first.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn check_accepts_the_example_config() {
    let out = Command::new(binary())
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/authgate.example.toml"),
        ])
        .env("BILLING_CLIENT_SECRET", "x")
        .env("REPORTS_CLIENT_SECRET", "y")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": ok (2 clients, 1 upstreams, 6 routes)")
    );
}

#[test]
fn check_warns_when_a_method_list_hides_a_less_specific_route() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shadow.toml");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/authgate.example.toml"
    ))
    .unwrap();
    let config = example.replacen("[[routes]]", "[[routes]]\nname = \"catch-all\"\npath = \"/*\"\nupstream = \"billing-api\"\nauth = \"authenticated\"\n\n[[routes]]", 1);
    std::fs::write(&path, config).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .env("BILLING_CLIENT_SECRET", "x")
        .env("REPORTS_CLIENT_SECRET", "y")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: route \"whoami\" allows only GET on /api/me; other methods there answer 405 (they no longer fall through to route \"catch-all\" /*)"),
        "{err}"
    );
    assert!(err.contains("warning: routes \"invoice-read\", \"invoice-write\" allow only GET, PUT, PATCH, DELETE on /api/invoices/{id};"), "{err}");
}

#[test]
fn check_warns_of_each_github_name_without_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("github.toml");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/authgate.example.toml"
    ))
    .unwrap();
    let github = r#"
[[providers]]
name = "github"
kind = "github"

[[clients]]
name = "admin"
origins = ["https://admin.example.com"]
namespace = "client_admin"
allowed_users = ["octocat", "id:583231", { name = "hubot", id = 9919 }]
allowed_orgs = [{ name = "acme" }]

[[clients.providers]]
name = "github"
client_id = "Ov23liAdmin"
client_secret = "x"
"#;
    let config = example.replacen("[[clients]]", &format!("{github}\n[[clients]]"), 1);
    std::fs::write(&path, config).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .env("BILLING_CLIENT_SECRET", "x")
        .env("REPORTS_CLIENT_SECRET", "y")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("is a name without an id"))
        .collect();
    assert_eq!(warned.len(), 2, "{err}");
    let file = path.display().to_string();
    for (at, name) in [
        ("clients[0].allowed_users[0]", "octocat"),
        ("clients[0].allowed_orgs[0]", "acme"),
    ] {
        assert!(
            warned.iter().any(|l| l.starts_with(&format!("{file}:"))
                && l.contains(&format!(
                    "warning: {at}: \"{name}\" is a name without an id"
                ))
                && l.contains(&format!("{{ name = \"{name}\", id = N }}"))),
            "{at}: {err}"
        );
    }
}

#[test]
fn check_reports_conflicting_routes_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conflict.toml");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/authgate.example.toml"
    ))
    .unwrap();
    let config = example + "\n[[routes]]\nname = \"twin\"\npath = \"/api/me\"\nupstream = \"billing-api\"\nauth = \"none\"\n";
    let line = config
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| *l == "path = \"/api/me\"")
        .unwrap()
        + 1;
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .env("BILLING_CLIENT_SECRET", "x")
        .env("REPORTS_CLIENT_SECRET", "y")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let routes = config.matches("[[routes]]").count() - 1;
    assert!(
        err.contains(&format!(
            "conflict.toml:{line}: routes[{routes}].path: route \"twin\" overlaps route"
        )),
        "{err}"
    );
}

#[test]
fn check_reports_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/authgate.example.toml"
    ))
    .unwrap();
    let bad = example
        .replace("audience = [\"https://api.example.com\"]", "audience = []")
        .replacen("upstream = \"billing-api\"", "upstream = \"biling-api\"", 1)
        .replace(
            "permission = \"invoice:write\"",
            "permision = \"invoice:write\"",
        );
    std::fs::write(&path, bad).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .env("BILLING_CLIENT_SECRET", "x")
        .env("REPORTS_CLIENT_SECRET", "y")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 problems in the config:"), "{err}");
    assert!(err.contains("idp.audience: is required"), "{err}");
    assert!(
        err.contains("routes[0].upstream: \"biling-api\" is not a configured upstream"),
        "{err}"
    );
    assert!(
        err.contains("routes[3].permision: unknown field `permision`"),
        "{err}"
    );
    assert!(err.contains("bad.toml:"), "{err}");
    // A missing secret is named, its value never printed.
    let out = Command::new(binary())
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/authgate.example.toml"),
        ])
        .env_remove("BILLING_CLIENT_SECRET")
        .env("REPORTS_CLIENT_SECRET", "hunter2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("environment variable BILLING_CLIENT_SECRET is not set"),
        "{err}"
    );
    assert!(!err.contains("hunter2"));
    let out = Command::new(binary())
        .args(["check", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent.toml")
    );
}

/// The curl commands the demo prints answer as their comments say.
#[tokio::test]
async fn demo_answers_its_printed_curl_commands() {
    let (port, admin, idp) = (free_port(), free_port(), free_port());
    let mut child = Command::new(binary())
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--idp",
            &format!("127.0.0.1:{idp}"),
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut curls = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("curl ") => curls.push(line),
            Ok(line) if line.is_empty() && !curls.is_empty() => break,
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    assert!(
        curls.len() >= 7,
        "the demo printed too few curl commands: {curls:#?}"
    );
    let http = client();
    let up = eventually(Duration::from_secs(20), || async {
        http.get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up, "the demo gateway did not become ready");
    let (mut checked, mut promised) = (0, 0);
    for line in &curls {
        let (command, comment) = line.split_once('#').unwrap();
        let Some(expected) = comment
            .trim()
            .split(':')
            .next()
            .and_then(|c| c.trim().parse::<u16>().ok())
        else {
            continue;
        };
        let words = shell_words(command);
        let url = words.iter().find(|w| w.starts_with("http://")).unwrap();
        let body = words
            .iter()
            .position(|w| w == "-d")
            .map(|i| words[i + 1].clone());
        let mut req = match &body {
            Some(b) => http.post(url).body(b.clone()),
            None => http.get(url),
        };
        let mut i = 0;
        while i < words.len() {
            if words[i] == "-H" {
                let (name, value) = words[i + 1].split_once(": ").unwrap();
                req = req.header(name, value);
                i += 1;
            }
            i += 1;
        }
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, expected, "{command}");
        checked += 1;
        // What the comments promise beyond the status.
        if comment.contains("identity headers") || comment.contains("signed identity JWT") {
            let base = url.split("/api/").next().unwrap().to_string();
            let echoed: serde_json::Value = response.json().await.unwrap();
            let headers = &echoed["headers"];
            let subject = headers["x-auth-subject"]
                .as_str()
                .unwrap_or_else(|| panic!("no identity headers for {command}: {echoed}"))
                .to_string();
            // The subject is the one of the token the command sends.
            let token = words
                .iter()
                .find_map(|w| w.strip_prefix("Authorization: Bearer "))
                .unwrap();
            let payload = base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                token.split('.').nth(1).unwrap(),
            )
            .unwrap();
            let sent: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(sent["sub"], subject.as_str(), "{command}");
            if comment.contains("signed identity JWT") {
                let assertion = headers["x-auth-jwt"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no signed identity for {command}: {echoed}"));
                let jwks: jsonwebtoken::jwk::JwkSet = http
                    .get(format!("{base}/.well-known/authgate/jwks.json"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let header = jsonwebtoken::decode_header(assertion).unwrap();
                let jwk = jwks
                    .find(header.kid.as_deref().unwrap())
                    .expect("the assertion's kid is in the gateway's JWKS");
                let mut v = jsonwebtoken::Validation::new(header.alg);
                v.validate_aud = false;
                let claims = jsonwebtoken::decode::<serde_json::Value>(
                    assertion,
                    &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
                    &v,
                )
                .unwrap()
                .claims;
                assert_eq!(claims["sub"], subject, "{command}");
                promised += 1;
            }
            promised += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} commands had an expected status"
    );
    // The landing page at `/` links the three apps and repeats the curl lines.
    let landing = http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(landing.status(), 200);
    assert!(landing.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let landing = landing.text().await.unwrap();
    for want in [
        format!("http://127.0.0.1:{port}/app/"),
        format!("http://localhost:{port}/app/"),
        format!("http://github.localhost:{port}/app/"),
        "alice".into(),
        "octocat".into(),
        "curl -i".into(),
    ] {
        assert!(
            landing.contains(&want),
            "the landing page lacks {want}: {landing}"
        );
    }
    assert_eq!(
        promised, 3,
        "the identity-header and signed-JWT promises were not all checked"
    );
}

/// Splits a printed command into words, honouring single quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[test]
fn demo_refuses_non_loopback_addresses() {
    let out = Command::new(binary())
        .args(["demo", "--idp", "0.0.0.0:9091"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0.0.0.0:9091 is not a loopback address"));
}

/// The packages `cargo tree` lists for authgate's normal and build dependencies, one name a line.
fn dependency_names(extra: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "--manifest-path",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        ])
        .args([
            "-p",
            "authgate",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The production build (`--no-default-features`, as the Dockerfile builds it) has no development
/// IdP in it; the default build (`authgate demo`) has. `.ci/production-build` also checks the binary.
#[test]
fn only_the_demo_feature_brings_in_the_development_idp() {
    assert!(
        dependency_names(&[]).iter().any(|p| p == "devidp"),
        "the default build has the demo"
    );
    let production = dependency_names(&["--no-default-features"]);
    assert!(
        production.iter().any(|p| p == "pingora"),
        "cargo tree listed the dependencies: {production:?}"
    );
    assert!(
        !production.iter().any(|p| p == "devidp"),
        "devidp in the build without default features"
    );
}
