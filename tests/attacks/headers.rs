//! Attacks on headers: nothing a client sends may pose as something the gateway vouches for.
//! Identity headers under every spelling (case, `_` for `-`, duplicates), other proxies'
//! identity headers, URL and method overrides, forwarding headers from untrusted peers; and no
//! secret in the log at any level. Requests are written byte for byte on a raw socket, so the
//! names reach the gateway exactly as an attacker spells them.

use crate::common::{self, Setup, World, AUDIENCE};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` (request line and headers, without the blank line) to the gateway and returns
/// the status and the body parsed as JSON (the echo upstream's view), `Null` when not JSON.
pub async fn raw(gw: &common::Gateway, head: &str) -> (u16, Value) {
    raw_request(gw, &format!("{head}\r\nConnection: close\r\n\r\n")).await
}

/// Sends `request` byte for byte (head, blank line and body) and reads the answer as [`raw`].
pub async fn raw_request(gw: &common::Gateway, request: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("the gateway answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Every spelling of an identity header an upstream might read as the real one.
const IMPOSTORS: &[&str] = &[
    "x-auth-subject",
    "X-Auth-Subject",
    "X-AUTH-SUBJECT",
    "x_auth_subject",
    "X_Auth_Subject",
    "x-auth_subject",
    "x_auth-email",
    "x_auth_permission",
    "x_auth_client",
    "x_auth_jwt",
    "x-auth-jwt",
    "X-Forwarded-User",
    "x_forwarded_user",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "x_auth_request_user",
    "X-Remote-User",
    "Remote-User",
    "REMOTE_USER",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Original-URI",
    "X-HTTP-Method-Override",
    "x_http_method_override",
    "X-Method-Override",
    "x-api-key",
    "X_API_KEY",
];

/// Forwarding headers an untrusted caller may not set.
const FORWARDING: &[&str] = &[
    "X-Forwarded-Host",
    "Forwarded",
    "X-Real-IP",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "True-Client-IP",
    "X_Forwarded_Host",
    "X-Client-IP",
];

fn headers_of(echoed: &Value) -> &serde_json::Map<String, Value> {
    echoed["headers"]
        .as_object()
        .unwrap_or_else(|| panic!("the upstream was not reached: {echoed}"))
}

/// Every name the upstream received, with `_` read as `-` (what a CGI-style upstream sees).
fn folded_names(echoed: &Value) -> Vec<String> {
    headers_of(echoed)
        .keys()
        .map(|k| k.replace('_', "-"))
        .collect()
}

fn assert_no_impostor(echoed: &Value, context: &str) {
    let names = folded_names(echoed);
    for forged in IMPOSTORS.iter().chain(FORWARDING) {
        let folded = forged.to_ascii_lowercase().replace('_', "-");
        if folded == "x-auth-subject"
            || folded == "x-auth-client"
            || folded == "x-auth-email"
            || folded == "x-forwarded-proto"
        {
            // The gateway sets these itself on authenticated routes: their values are checked apart.
            continue;
        }
        assert!(
            !names.contains(&folded),
            "{context}: {forged} reached the upstream: {:?}",
            headers_of(echoed)
        );
    }
    for (name, value) in headers_of(echoed) {
        assert!(
            !value.as_str().unwrap_or("").contains("forged"),
            "{context}: a forged value reached the upstream in {name}: {value}"
        );
    }
}

fn forged_head(method_path: &str, host: &str, extra: &[String]) -> String {
    let mut head = format!("{method_path} HTTP/1.1\r\nHost: {host}");
    for name in IMPOSTORS.iter().chain(FORWARDING) {
        head.push_str(&format!("\r\n{name}: forged"));
    }
    // A duplicate of each, in another case.
    for name in IMPOSTORS {
        head.push_str(&format!("\r\n{}: forged-again", name.to_ascii_uppercase()));
    }
    head.push_str("\r\nX-Forwarded-For: 6.6.6.6 (forged)");
    for e in extra {
        head.push_str("\r\n");
        head.push_str(e);
    }
    head
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_upstream_on_public_routes() {
    let w = World::start().await;
    let host = w.gw.url.trim_start_matches("http://").to_string();
    let (status, echoed) = raw(&w.gw, &forged_head("GET /public/page", &host, &[])).await;
    assert_eq!(status, 200);
    assert_no_impostor(&echoed, "public route");
    let h = headers_of(&echoed);
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "x-forwarded-for is replaced, not appended to"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(
        h.get("x-auth-subject").is_none() && h.get("x-auth-client").is_none(),
        "no identity on a public route: {h:?}"
    );
    assert_eq!(
        echoed["path"], "/public/page",
        "an override header changed the path the upstream saw"
    );
    assert_eq!(echoed["method"], "GET");
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_upstream_on_authenticated_routes() {
    let w = World::start().await;
    let host = w.gw.url.trim_start_matches("http://").to_string();
    let token = w.idp.mint(
        json!({"sub": "user_1", "email": "one@example.com", "email_verified": true, "aud": AUDIENCE, "permissions": {}}),
    );
    let (status, echoed) = raw(
        &w.gw,
        &forged_head(
            "GET /api/me",
            &host,
            &[format!("Authorization: Bearer {token}")],
        ),
    )
    .await;
    assert_eq!(status, 200, "{echoed}");
    assert_no_impostor(&echoed, "authenticated route");
    let h = headers_of(&echoed);
    assert_eq!(
        h["x-auth-subject"], "user_1",
        "exactly one subject, the verified one: {h:?}"
    );
    assert_eq!(h["x-auth-email"], "one@example.com");
    assert!(h.get("authorization").is_none(), "the token was forwarded");
}

#[tokio::test]
async fn forwarding_headers_are_kept_from_trusted_proxies_only() {
    let w = World::start_with(Setup {
        proxy_extra: "trusted_proxies = [\"127.0.0.1\"]".into(),
        ..Setup::default()
    })
    .await;
    let host = w.gw.url.trim_start_matches("http://").to_string();
    let head = format!("GET /public/x HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 203.0.113.9\r\nX-Real-IP: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\nX-Original-URL: /admin\r\nX-Forwarded-User: boss");
    let (status, echoed) = raw(&w.gw, &head).await;
    assert_eq!(status, 200);
    let h = headers_of(&echoed);
    assert_eq!(
        h["x-forwarded-for"], "203.0.113.9, 127.0.0.1",
        "a trusted proxy's chain is appended to"
    );
    assert_eq!(h["x-real-ip"], "203.0.113.9");
    assert_eq!(h["forwarded"], "for=203.0.113.9");
    // Overrides and identity headers go even from a trusted proxy.
    assert!(
        h.get("x-original-url").is_none() && h.get("x-forwarded-user").is_none(),
        "{h:?}"
    );
}

#[tokio::test]
async fn underscores_can_be_refused_outright() {
    let w = World::start_with(Setup {
        extra: "\n[headers]\nwith_underscores = \"reject\"\n".into(),
        ..Setup::default()
    })
    .await;
    let host = w.gw.url.trim_start_matches("http://").to_string();
    let before = w.echo.requests();
    let (status, _) = raw(
        &w.gw,
        &format!("GET /public/x HTTP/1.1\r\nHost: {host}\r\nx_auth_subject: admin"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        w.echo.requests(),
        before,
        "a refused request reached the upstream"
    );
    let (status, _) = raw(
        &w.gw,
        &format!("GET /public/x HTTP/1.1\r\nHost: {host}\r\nx-trace: 1"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn underscored_names_that_pose_as_nothing_pass_when_allowed() {
    let w = World::start_with(Setup {
        extra: "\n[headers]\nwith_underscores = \"allow\"\nstrip = [\"x-tenant\"]\n".into(),
        ..Setup::default()
    })
    .await;
    let host = w.gw.url.trim_start_matches("http://").to_string();
    let (status, echoed) = raw(&w.gw, &format!("GET /public/x HTTP/1.1\r\nHost: {host}\r\nx_trace_tag: 7\r\nx_auth_subject: forged\r\nX_Tenant: forged")).await;
    assert_eq!(status, 200);
    let h = headers_of(&echoed);
    assert_eq!(h["x_trace_tag"], "7");
    assert_no_impostor(&echoed, "with_underscores = allow");
    assert!(
        h.get("x_tenant").is_none(),
        "the configured strip list is matched with _ folded: {h:?}"
    );
}

#[tokio::test]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    let idp = devidp::idp::DevIdp::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    idp.set_audience(AUDIENCE);
    let echo = devidp::echo::EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let setup = Setup {
        extra: "\n[headers]\nforward_token = true\n".into(),
        ..Setup::default()
    };
    let mut gw = None;
    for _ in 0..3 {
        let (port, admin) = (common::free_port(), common::free_port());
        let config = common::config(port, admin, &idp, echo.addr(), &setup);
        if let Ok(g) = common::try_spawn_gateway_logging(&config, port, admin, true, "trace").await
        {
            gw = Some(g);
            break;
        }
    }
    let gw = gw.expect("gateway started");
    let token = idp.mint(json!({"sub": "user_1", "aud": AUDIENCE, "permissions": {}}));
    let host = gw.url.trim_start_matches("http://").to_string();
    // The request with the secrets, then on the same connection (Pingora takes no pipelined
    // requests: the second is written after the first's answer) an unrouted one. Pingora ends a
    // request, its logging phase included, before it reads the next on the connection, so once
    // the second's refusal is in the log, everything the first logged is there too.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    s.write_all(format!("GET /api/me HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nCookie: authgate=sessionsecretvalue123; theme=dark\r\nx-api-key: ak_secret_never_logged\r\n\r\n").as_bytes()).await.unwrap();
    let mut first = Vec::new();
    let mut chunk = [0u8; 4096];
    let complete = |b: &[u8]| {
        let text = String::from_utf8_lossy(b).to_ascii_lowercase();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: ")?.trim().parse().ok());
        length.is_some_and(|n: usize| body.len() >= n)
    };
    while !complete(&first) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("the gateway answered in time")
            .unwrap();
        assert!(
            n > 0,
            "the connection closed: {}",
            String::from_utf8_lossy(&first)
        );
        first.extend_from_slice(&chunk[..n]);
    }
    assert!(
        first.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&first)
    );
    s.write_all(
        format!("GET /nowhere/marker HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut second = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut second))
        .await
        .expect("the gateway answered in time")
        .unwrap();
    assert!(
        second.starts_with(b"HTTP/1.1 404 "),
        "{}",
        String::from_utf8_lossy(&second)
    );
    let logged = common::eventually(Duration::from_secs(5), || async {
        let log = gw.log.lock().unwrap();
        log.lines()
            .any(|l| l.contains("status=404") && l.contains("refused"))
    })
    .await;
    assert!(logged, "the marker request's refusal never reached the log");
    let log = gw.log.lock().unwrap().clone();
    assert!(
        log.len() > 1000,
        "the gateway logged at trace level: {} bytes",
        log.len()
    );
    let signature = token.rsplit('.').next().unwrap();
    for secret in [signature, "sessionsecretvalue123", "ak_secret_never_logged"] {
        assert!(
            !log.contains(secret),
            "a secret reached the log at trace level: {secret}"
        );
    }
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused_before_the_upstream() {
    let w = World::start().await;
    let host = w.gw.url.trim_start_matches("http://").to_string();
    let chunked_body = "5\r\nhello\r\n0\r\n\r\n";
    let post = |te: &str| {
        format!("POST /public/x HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\n{chunked_body}")
    };
    let before = w.echo.requests();
    // (Transfer-Encoding, status): a coding the gateway does not implement is 501 (RFC 9112
    // §6.1), chunked named twice is malformed (400).
    for (te, want) in [
        ("gzip, chunked", 501),
        ("deflate, chunked", 501),
        ("GZIP,chunked", 501),
        ("identity, chunked", 501),
        ("chunked\r\nTransfer-Encoding: chunked", 400),
        ("gzip\r\nTransfer-Encoding: chunked", 501),
        ("chunked, chunked", 400),
    ] {
        let (status, problem) = raw_request(&w.gw, &post(te)).await;
        assert_eq!(status, want, "Transfer-Encoding: {te}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("Transfer-Encoding")),
            "{te}: {problem}"
        );
    }
    assert_eq!(
        w.echo.requests(),
        before,
        "a refused transfer coding reached the upstream"
    );
    // chunked alone is the body's framing, and passes.
    let (status, echoed) = raw_request(&w.gw, &post("chunked")).await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(echoed["body"], "hello");
}
