//! Attacks on paths, methods and hosts: what the gateway authorises must be exactly what the
//! upstream serves, whatever its framework (Tomcat `;` parameters, double decoding, lenient
//! UTF-8, case-insensitive file systems, absolute-form targets). Requests are written byte for
//! byte on a TCP socket (an HTTP client would normalise them), and every request that reached
//! the upstream is checked for the path the upstream received.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Routes of the attack: a public `/public/*` (from the standard config), a protected
/// `/admin/*`, an entity route for GET and DELETE, a legacy route that accepts `;`
/// parameters, a host-specific public route, and an authenticated catch-all.
const ROUTES: &str = r#"
[[routes]]
name = "admin"
path = "/admin/*"
upstream = "app"
permission = "admin:access"
clients = ["billing"]

[[routes]]
name = "invoices"
path = "/invoices/{id}"
methods = ["GET", "DELETE"]
upstream = "app"
permission = "invoice:read"
clients = ["billing"]
entity_id = "id"

[[routes]]
name = "legacy"
path = "/legacy/{id}/*"
upstream = "app"
permission = "invoice:read"
clients = ["billing"]
entity_id = "id"
path_params = true

[[routes]]
name = "hosted-public"
host = "www.test"
path = "/hosted/*"
upstream = "app"
auth = "none"

[[routes]]
name = "hosted"
path = "/hosted/*"
upstream = "app"
permission = "admin:access"
clients = ["billing"]

[[routes]]
name = "catch-all"
path = "/*"
upstream = "app"
auth = "authenticated"
"#;

async fn world() -> World {
    World::start_with(Setup {
        extra: ROUTES.into(),
        ..Setup::default()
    })
    .await
}

/// A response read off the socket.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The echo upstream's JSON, when the request reached it.
    fn echoed(&self) -> Option<Value> {
        serde_json::from_slice(&self.body)
            .ok()
            .filter(|v: &Value| v.get("method").is_some() && v.get("path").is_some())
    }
}

/// Sends `head` (request line and headers, without the blank line) and reads the response.
async fn send(port: u16, head: &str) -> Raw {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    parse(&buf).unwrap_or_else(|| {
        panic!(
            "no HTTP response to {head:?}: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

/// `GET path` with a Host header.
async fn get(port: u16, path: &str) -> Raw {
    send(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}"),
    )
    .await
}

fn parse(buf: &[u8]) -> Option<Raw> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(buf.get(..end)?).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf.get(end + 4..)?.to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&rest[..line_end])
                    .ok()?
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(line_end + 2..line_end + 2 + size)?);
            rest = rest.get(line_end + 4 + size..)?;
        }
        body = out;
    }
    Some(Raw {
        status,
        headers,
        body,
    })
}

fn reaches_admin(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower == "/admin"
        || lower.starts_with("/admin/")
        || lower.contains("/admin/") && !lower.starts_with("/public/")
}

#[tokio::test]
async fn path_encodings_never_reach_the_protected_route() {
    let w = world().await;
    let port = w.gw.port;
    // (raw path, status, path the upstream receives when it is reached)
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("/public/x", 200, Some("/public/x")),
        ("/admin/x", 401, None),
        ("/public/../admin/x", 401, None),
        ("/public/%2e%2e/admin/x", 401, None),
        ("/public/%2E%2E/admin/x", 401, None),
        ("/public/.%2e/admin/x", 401, None),
        ("/public/x/../../admin/x", 401, None),
        ("/public//../admin/x", 401, None),
        ("//admin/x", 401, None),
        ("/./admin/x", 401, None),
        ("/%61dmin/x", 401, None),
        // Tomcat, Jetty and Spring path parameters.
        ("/public/..;/admin/x", 400, None),
        ("/public/..;x=1/admin/x", 400, None),
        ("/public/;/../admin/x", 400, None),
        ("/public/x;jsessionid=1", 400, None),
        ("/public/..%3b/admin/x", 400, None),
        ("/public/%2e%2e%3B/admin/x", 400, None),
        // Double encodings.
        ("/public/%252e%252e/admin/x", 400, None),
        ("/public/%25%32%65%25%32%65/admin/x", 400, None),
        ("/public/%252f..%252fadmin", 400, None),
        // Overlong and broken UTF-8.
        ("/public/%c0%ae%c0%ae/admin/x", 400, None),
        ("/public/%e0%80%ae%e0%80%ae/admin/x", 400, None),
        ("/public/..%c0%af..%c0%afadmin/x", 400, None),
        ("/public/%80/x", 400, None),
        ("/public/%80/../x", 200, Some("/public/x")),
        ("/public/%c3/x", 400, None),
        // Encoded separators and controls.
        ("/public/..%2fadmin/x", 400, None),
        ("/public/%2e%2e%2fadmin/x", 400, None),
        ("/public/..%5cadmin/x", 400, None),
        ("/public/x%00/../../admin/x", 400, None),
        // Letter case: a case-insensitive upstream serves /admin.
        ("/ADMIN/x", 400, None),
        ("/Admin/x", 400, None),
        ("/%41DMIN/x", 400, None),
        ("/PUBLIC/x", 400, None),
        // Harmless encodings still pass, the upstream gets the normalised, still-encoded path.
        ("/public/caf%c3%a9", 200, Some("/public/caf%C3%A9")),
        ("/public/a%20b", 200, Some("/public/a%20b")),
        ("/public/%70ublic/x", 200, Some("/public/public/x")),
        ("/public/./x//y", 200, Some("/public/x/y")),
        ("/public/admin/../x", 200, Some("/public/x")),
        ("/public/x?/../../admin", 200, Some("/public/x")),
        // Unicode lookalikes: an NFKC-normalising upstream reads fullwidth `．．` as `..`,
        // `／` as `/` and `ａ` as `a`.
        ("/public/%ef%bc%8e%ef%bc%8e/admin/x", 400, None),
        ("/public%ef%bc%8f..%ef%bc%8fadmin/x", 400, None),
        ("/%ef%bd%81dmin/x", 400, None),
        (
            "/public/%e6%97%a5%e6%9c%ac",
            200,
            Some("/public/%E6%97%A5%E6%9C%AC"),
        ),
    ];
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (path, status, forwarded) in cases {
        let before = w.echo.requests();
        let r = get(port, path).await;
        let reached = w.echo.requests() - before;
        let echoed = r
            .echoed()
            .and_then(|e| e["path"].as_str().map(str::to_string));
        let ok = r.status == *status
            && match forwarded {
                Some(p) => reached == 1 && echoed.as_deref() == Some(*p) && !reaches_admin(p),
                None => reached == 0,
            };
        if !ok {
            failures.push(format!("{path}: {} (upstream hit {reached} times, saw {echoed:?}), want {status} {forwarded:?}", r.status));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} encodings misbehave:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn method_lists_answer_405_and_never_fall_through() {
    let w = world().await;
    let port = w.gw.port;
    let token = w.token(json!({"client_abc:invoice": ["read"]}));
    let auth = format!("Authorization: Bearer {token}");
    // Sanity: the listed method passes, with the entity captured.
    let r = send(
        port,
        &format!("GET /invoices/1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed().unwrap()["path"], "/invoices/1");
    let before = w.echo.requests();
    for method in ["PUT", "POST", "PATCH", "OPTIONS", "BREW", "PROPFIND"] {
        let r = send(port, &format!("{method} /invoices/1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}\r\nContent-Length: 0")).await;
        assert_eq!(r.status, 405, "{method} /invoices/1");
        assert_eq!(r.header("allow"), Some("GET, HEAD, DELETE"), "{method}");
    }
    // The trailing-slash form belongs to the same route.
    let r = send(
        port,
        &format!(
            "PUT /invoices/1/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}\r\nContent-Length: 0"
        ),
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(
        w.echo.requests(),
        before,
        "a refused method reached the upstream"
    );
    // Paths the entity route does not match still fall to the catch-all.
    let r = send(port, &format!("PUT /invoices/1/lines HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}\r\nContent-Length: 0")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed().unwrap()["method"], "PUT");
}

#[tokio::test]
async fn path_parameters_cannot_change_the_entity() {
    let w = world().await;
    let port = w.gw.port;
    // The caller may read invoice 1 only.
    let token = w.token(json!({"client_abc:invoice:1": ["read"]}));
    let get_as = |path: String| {
        let auth = format!("Authorization: Bearer {token}");
        async move {
            send(
                port,
                &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"),
            )
            .await
        }
    };
    assert_eq!(get_as("/invoices/1".into()).await.status, 200);
    assert_eq!(get_as("/invoices/2".into()).await.status, 403);
    let before = w.echo.requests();
    // No path_params on the route: `;` is refused outright.
    for path in [
        "/invoices/1;x=1",
        "/invoices/1/..;/2",
        "/invoices/2;/../1",
        "/invoices/1/..%3B/2",
    ] {
        assert_eq!(get_as(path.into()).await.status, 400, "{path}");
    }
    assert_eq!(
        w.echo.requests(),
        before,
        "a refused path reached the upstream"
    );
    // A `;` that a dot segment removes changes nothing: the normalised path is /legacy/1/x.
    assert_eq!(get_as("/legacy/2;/../1/x".into()).await.status, 200);
    let before = w.echo.requests();
    // path_params on the route: parameters pass when dropping them keeps the route and entity.
    for path in [
        "/legacy/1/..;/2/x",
        "/legacy/1/..;/..;/admin/x",
        "/legacy/1/x/..;/..;/..;/2/x",
        "/legacy/1;x/..;/2/x",
    ] {
        assert_eq!(get_as(path.into()).await.status, 400, "{path}");
    }
    assert_eq!(
        w.echo.requests(),
        before,
        "a refused path reached the upstream"
    );
    let r = get_as("/legacy/1;jsessionid=abc/x".into()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed().unwrap()["path"], "/legacy/1;jsessionid=abc/x");
    assert_eq!(
        get_as("/legacy/2;jsessionid=abc/x".into()).await.status,
        403
    );
}

#[tokio::test]
async fn hosts_are_required_single_valid_and_the_absolute_form_wins() {
    let w = world().await;
    let port = w.gw.port;
    let echo_host = |r: &Raw| {
        r.echoed()
            .and_then(|e| e["headers"]["host"].as_str().map(str::to_string))
    };
    let before = w.echo.requests();
    // HTTP/1.1 without Host, with two, or with an invalid one: 400.
    for head in [
        "GET /public/x HTTP/1.1".to_string(),
        "GET /public/x HTTP/1.1\r\nHost: www.test\r\nHost: other.test".to_string(),
        "GET /public/x HTTP/1.1\r\nHost: a..test".to_string(),
        "GET /public/x HTTP/1.1\r\nHost: www.test:port".to_string(),
        "GET /public/x HTTP/1.1\r\nHost: user@www.test".to_string(),
        "GET http://www.test/hosted/x HTTP/1.1".to_string(),
        // The gateway's own endpoints too.
        "GET /_authgate/login?rd=/ HTTP/1.1".to_string(),
        "GET /_authgate/login?rd=/ HTTP/1.1\r\nHost: a.test\r\nHost: b.test".to_string(),
    ] {
        let r = send(port, &head).await;
        assert_eq!(r.status, 400, "{head:?}");
    }
    // The host-specific public route is www.test's; any other host gets the protected one.
    let r = send(
        port,
        &format!("GET /hosted/x HTTP/1.1\r\nHost: localhost:{port}"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        w.echo.requests(),
        before,
        "a refused request reached the upstream"
    );
    let r = send(port, "GET /hosted/x HTTP/1.1\r\nHost: www.test").await;
    assert_eq!(r.status, 200);
    assert_eq!(echo_host(&r).as_deref(), Some("www.test"));
    // A trailing dot is the same host, and the upstream sees it without the dot.
    let r = send(port, "GET /hosted/x HTTP/1.1\r\nHost: WWW.test.").await;
    assert_eq!(r.status, 200);
    assert_eq!(echo_host(&r).as_deref(), Some("www.test"));
    // ...and the same client app: identified by its origin, asked for credentials (401), not
    // refused as an unknown client (403).
    for host in [
        format!("localhost:{port}"),
        format!("localhost.:{port}"),
        format!("LOCALHOST.:{port}"),
    ] {
        let r = send(port, &format!("GET /hosted/x HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!(r.status, 401, "{host}");
    }
    // Absolute-form: its authority is the host routed (RFC 9112 §3.2.2). One that differs from
    // Host is refused (400, by Pingora's ingress check), so the two can never disagree.
    let before = w.echo.requests();
    let r = send(
        port,
        &format!("GET http://localhost:{port}/hosted/x HTTP/1.1\r\nHost: www.test"),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        port,
        "GET http://www.test/hosted/x HTTP/1.1\r\nHost: other.test",
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        port,
        &format!("GET http://localhost:{port}/hosted/x HTTP/1.1\r\nHost: localhost:{port}"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        w.echo.requests(),
        before,
        "a refused request reached the upstream"
    );
    // The upstream gets origin-form, normalised, and the routed host.
    let r = send(
        port,
        "GET http://www.test/hosted/../hosted/x?q=1 HTTP/1.1\r\nHost: www.test",
    )
    .await;
    assert_eq!(r.status, 200);
    let echoed = r.echoed().unwrap();
    assert_eq!(echo_host(&r).as_deref(), Some("www.test"));
    assert_eq!(echoed["path"], "/hosted/x");
    assert_eq!(echoed["query"], "q=1");
    // HTTP/1.0 may leave Host out.
    let r = send(port, "GET /public/x HTTP/1.0").await;
    assert_eq!(r.status, 200);
}

/// Routes for the spellings some upstreams fold: a protected `/public/private/*` inside the
/// public `/public/*` (on `app`, whose reads are the defaults), and the same pair on `plain`,
/// an upstream declared to read paths as written (`windows_paths = false`, `format_suffixes =
/// false`).
fn folding_routes(echo: std::net::SocketAddr) -> String {
    format!(
        r#"
[[upstreams]]
name = "plain"
addresses = ["{echo}"]
windows_paths = false
format_suffixes = false

[[routes]]
name = "private"
path = "/public/private/*"
upstream = "app"
permission = "admin:access"
clients = ["billing"]

[[routes]]
name = "plain-public"
path = "/plain/*"
upstream = "plain"
auth = "none"

[[routes]]
name = "plain-private"
path = "/plain/private/*"
upstream = "plain"
permission = "admin:access"
clients = ["billing"]
"#
    )
}

#[tokio::test]
async fn spellings_that_windows_and_rails_fold_never_reach_a_less_specific_route() {
    let (idp, echo) = idp_and_echo().await;
    let setup = Setup {
        extra: folding_routes(echo.addr()),
        ..Setup::default()
    };
    let gw = start_gateway(
        |port, admin| config(port, admin, &idp, echo.addr(), &setup),
        true,
    )
    .await;
    let port = gw.port;
    // IIS and NTFS serve each of these as /public/private/x, Rails and Spring serve
    // /public/private.json as /public/private: the protected route's, not the public one's.
    let before = echo.requests();
    for path in [
        "/public/private./x",
        "/public/private%2E/x",
        "/public/private%20/x",
        "/public/private.%20/x",
        "/public/PRIVAT~1/x",
        "/public/privat~1/x",
        "/public/private::$INDEX_ALLOCATION/x",
        "/public/private:$I30:$INDEX_ALLOCATION/x",
        "/public/private.json",
        "/public/private.json/",
        "/public/private.tar.gz",
    ] {
        let r = get(port, path).await;
        assert_eq!(r.status, 400, "{path}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("Bad request path"),
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(
        echo.requests(),
        before,
        "a folded spelling reached the upstream"
    );
    // The protected route itself still asks for credentials; extensions that keep the route pass.
    assert_eq!(get(port, "/public/private/x").await.status, 401);
    for (path, forwarded) in [
        ("/public/app.js", "/public/app.js"),
        ("/public/x/report.pdf", "/public/x/report.pdf"),
        ("/public/~user/x", "/public/~user/x"),
        ("/public/.well-known", "/public/.well-known"),
    ] {
        let r = get(port, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.echoed().unwrap()["path"], forwarded, "{path}");
    }
    // An upstream declared to read paths as written gets them as written.
    for path in [
        "/plain/private./x",
        "/plain/PRIVAT~1/x",
        "/plain/private.json",
    ] {
        let r = get(port, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.echoed().unwrap()["path"], path, "{path}");
    }
}

/// Sends `head`, `Content-Length` and `body` on a raw socket and reads the response.
async fn send_with_body(port: u16, head: &str, body: &str) -> Raw {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    parse(&buf).unwrap_or_else(|| panic!("no HTTP response to {head:?}"))
}

/// A public page that takes comments (GET, POST) beside the protected DELETE of the same path,
/// the same pair on `plain`, an upstream declared not to honour `_method`
/// (`method_overrides = false`), a shadow rule (`enforce = false`) for POST, and the standard
/// config's `invoice-refund` (POST).
fn override_routes(echo: std::net::SocketAddr) -> String {
    format!(
        r#"
[[upstreams]]
name = "plain"
addresses = ["{echo}"]
method_overrides = false

[[routes]]
name = "post"
path = "/posts/{{id}}"
methods = ["GET", "POST"]
upstream = "app"
auth = "none"

[[routes]]
name = "post-delete"
path = "/posts/{{id}}"
methods = ["DELETE"]
upstream = "app"
permission = "post:delete"
clients = ["billing"]

[[routes]]
name = "drafts"
path = "/drafts/{{id}}"
methods = ["POST"]
upstream = "app"
permission = "post:write"
clients = ["billing"]
enforce = false

[[routes]]
name = "plain-post"
path = "/plain/{{id}}"
methods = ["GET", "POST"]
upstream = "plain"
auth = "none"
"#
    )
}

#[tokio::test]
async fn method_overrides_cannot_turn_an_allowed_post_into_another_method() {
    let (idp, echo) = idp_and_echo().await;
    let setup = Setup {
        extra: override_routes(echo.addr()),
        ..Setup::default()
    };
    let gw = start_gateway(
        |port, admin| config(port, admin, &idp, echo.addr(), &setup),
        true,
    )
    .await;
    let port = gw.port;
    let host = format!("Host: 127.0.0.1:{port}");
    let form = "Content-Type: application/x-www-form-urlencoded";
    let multipart = "Content-Type: multipart/form-data; boundary=XyZ";
    let parts = "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhi\r\n--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--\r\n";
    let refund = idp.mint(json!({"sub": "user_1", "aud": AUDIENCE, "permissions": {"client_abc:invoice": ["refund"]}}));
    let bearer = format!("Authorization: Bearer {refund}");
    // Rails, Laravel and Symfony serve each of these as a DELETE, which the route does not allow
    // (and post-delete would refuse to anyone without post:delete).
    let refused: Vec<(String, String)> = vec![
        (
            format!("POST /posts/1?_method=DELETE HTTP/1.1\r\n{host}"),
            String::new(),
        ),
        (
            format!("POST /posts/1?a=1&_METHOD=delete HTTP/1.1\r\n{host}"),
            String::new(),
        ),
        (
            format!("POST /posts/1?.method=DELETE HTTP/1.1\r\n{host}"),
            String::new(),
        ),
        (
            format!("POST /posts/1?%5Fmethod=DELETE HTTP/1.1\r\n{host}"),
            String::new(),
        ),
        (
            format!("POST /posts/1?_method[]=DELETE HTTP/1.1\r\n{host}"),
            String::new(),
        ),
        (
            format!("GET /posts/1?_method=DELETE HTTP/1.1\r\n{host}"),
            String::new(),
        ),
        (
            format!("POST /posts/1 HTTP/1.1\r\n{host}\r\n{form}"),
            "title=hi&_method=DELETE".into(),
        ),
        // Rack reads a POST without a Content-Type as a form.
        (
            format!("POST /posts/1 HTTP/1.1\r\n{host}"),
            "_method=DELETE".into(),
        ),
        (
            format!("POST /posts/1 HTTP/1.1\r\n{host}\r\n{multipart}"),
            parts.into(),
        ),
        // Laravel reads a JSON body as input.
        (
            format!("POST /posts/1 HTTP/1.1\r\n{host}\r\nContent-Type: application/json"),
            r#"{"_method": "DELETE"}"#.into(),
        ),
        // An authorised POST too: the refund's permission is no DELETE's.
        (
            format!("POST /api/invoices/1/refund HTTP/1.1\r\n{host}\r\n{bearer}\r\n{form}"),
            "_method=DELETE".into(),
        ),
        (
            format!("POST /api/invoices/1/refund?_method=DELETE HTTP/1.1\r\n{host}\r\n{bearer}"),
            String::new(),
        ),
        // A shadow rule lets every caller through, but not with another method.
        (
            format!("POST /drafts/1?_method=DELETE HTTP/1.1\r\n{host}"),
            String::new(),
        ),
        (
            format!("POST /drafts/1 HTTP/1.1\r\n{host}\r\n{form}"),
            "_method=DELETE".into(),
        ),
    ];
    let before = echo.requests();
    for (head, body) in &refused {
        let r = send_with_body(port, head, body).await;
        assert_eq!(
            r.status,
            400,
            "{head:?} {body:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            String::from_utf8_lossy(&r.body).contains("_method"),
            "{head:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(
        echo.requests(),
        before,
        "a method override reached the upstream"
    );
    // What no framework reads as a method passes, as it was sent.
    for (head, body) in [
        (
            format!("POST /posts/1 HTTP/1.1\r\n{host}\r\n{form}"),
            "title=hi&method=DELETE",
        ),
        (
            format!("POST /posts/1 HTTP/1.1\r\n{host}\r\nContent-Type: text/plain"),
            "_method=DELETE",
        ),
        (
            format!("POST /posts/1?title=_method HTTP/1.1\r\n{host}\r\n{form}"),
            "a=1",
        ),
        (
            format!("POST /api/invoices/1/refund HTTP/1.1\r\n{host}\r\n{bearer}\r\n{form}"),
            "amount=5",
        ),
        (
            format!("POST /drafts/1 HTTP/1.1\r\n{host}\r\n{form}"),
            "title=hi",
        ),
        // An upstream declared not to honour _method gets it.
        (
            format!("POST /plain/1?_method=DELETE HTTP/1.1\r\n{host}\r\n{form}"),
            "_method=DELETE",
        ),
    ] {
        let r = send_with_body(port, &head, body).await;
        assert_eq!(r.status, 200, "{head:?} {body:?}");
        let echoed = r.echoed().unwrap();
        assert_eq!(echoed["method"], "POST", "{head:?}");
        assert_eq!(echoed["body"], body, "{head:?}");
    }
}
