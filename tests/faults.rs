//! Faults, end to end: the IdP down, slow beyond `idp.timeout` or answering garbage; upstreams
//! refusing connections, resetting, or never answering; the API-key exchange failing; SIGTERM
//! under load. What keeps working keeps working, and what cannot fails closed, quickly, with a
//! clear answer.

mod common;

use common::*;
use devidp::echo::EchoServer;
use devidp::idp::{DevIdp, Fault};
use devidp::keys::SigningKey;
use jsonwebtoken::Algorithm;
use reqwest::header::{ACCEPT, LOCATION};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a fake upstream misbehaves.
#[derive(Clone, Copy)]
enum Upstream {
    /// Reads the request, then resets the connection before answering.
    Reset,
    /// Answers headers and part of the body, then resets the connection.
    Cut,
    /// Reads the request and never answers.
    Silent,
    /// Answers `200 done` after this long.
    Slow(Duration),
}

async fn read_head(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
}

/// A fake upstream of `kind`, and the count of request heads it has read.
async fn upstream(kind: Upstream) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let counted = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                read_head(&mut s).await;
                counted.fetch_add(1, Ordering::SeqCst);
                match kind {
                    Upstream::Reset => {
                        let _ = s.set_zero_linger();
                    }
                    Upstream::Cut => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\npartial...").await;
                        let _ = s.flush().await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = s.set_zero_linger();
                    }
                    Upstream::Silent => tokio::time::sleep(Duration::from_secs(60)).await,
                    Upstream::Slow(d) => {
                        tokio::time::sleep(d).await;
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone").await;
                        let _ = s.flush().await;
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// The request heads each fault upstream has read.
struct Reached {
    reset: Arc<AtomicUsize>,
    slow: Arc<AtomicUsize>,
}

/// The shared test world with fault upstreams, browser sign-in for `billing`, and an IdP
/// timeout of 500 ms.
struct Faulty {
    idp: DevIdp,
    _echo: EchoServer,
    gw: Gateway,
    http: reqwest::Client,
    reached: Reached,
}

impl Faulty {
    async fn start() -> Faulty {
        let (idp, echo) = idp_and_echo().await;
        let ((reset, reset_heads), (cut, _), (silent, _), (slow, slow_heads)) = (
            upstream(Upstream::Reset).await,
            upstream(Upstream::Cut).await,
            upstream(Upstream::Silent).await,
            upstream(Upstream::Slow(Duration::from_millis(700))).await,
        );
        let extra = format!(
            r#"
[session]
allow_insecure_http = true

[[upstreams]]
name = "reset"
addresses = ["{reset}"]
read_timeout = "1s"

[[upstreams]]
name = "cut"
addresses = ["{cut}"]
read_timeout = "1s"

[[upstreams]]
name = "silent"
addresses = ["{silent}"]
read_timeout = "1s"

[[upstreams]]
name = "slow"
addresses = ["{slow}"]
read_timeout = "5s"

[[routes]]
name = "reset"
path = "/reset/*"
upstream = "reset"
auth = "none"

[[routes]]
name = "cut"
path = "/cut/*"
upstream = "cut"
auth = "none"

[[routes]]
name = "silent"
path = "/silent/*"
upstream = "silent"
auth = "none"

[[routes]]
name = "slow"
path = "/slow/*"
upstream = "slow"
auth = "none"
"#
        );
        let setup = Setup {
            extra,
            ..Setup::default()
        };
        let gw = start_gateway(
            |port, admin| {
                idp.register_client(
                    "abc",
                    Some("dev"),
                    &[&format!("http://127.0.0.1:{port}/_authgate/callback")],
                );
                let text = config(port, admin, &idp, echo.addr(), &setup);
                assert!(text.contains("\ntimeout = \"2s\"\n"));
                text.replace("\ntimeout = \"2s\"\n", "\ntimeout = \"500ms\"\n")
            },
            true,
        )
        .await;
        Faulty {
            idp,
            _echo: echo,
            gw,
            http: client(),
            reached: Reached {
                reset: reset_heads,
                slow: slow_heads,
            },
        }
    }

    fn token(&self, claims: serde_json::Value) -> String {
        let mut c = json!({"sub": "user_1", "aud": AUDIENCE});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), claims.as_object()) {
            c.extend(extra.clone());
        }
        self.idp.mint(c)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.gw.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// A browser that started a login and was sent back by the IdP: the callback URL.
    async fn at_callback(&self) -> (reqwest::Client, String) {
        let b = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let r = b
            .get(format!("{}/api/me", self.gw.url))
            .header(ACCEPT, "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let authorize = r.headers()[LOCATION].to_str().unwrap().to_string();
        let r = b
            .get(format!("{authorize}&user=alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        (b, r.headers()[LOCATION].to_str().unwrap().to_string())
    }

    /// `/readyz`'s status and its lines about the components: the verdict, then `idp:` and
    /// `session_store:` (the lines after them are about the config).
    async fn readyz(&self) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}/readyz", self.gw.admin))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(
            body.contains("\nconfig sha256:"),
            "/readyz does not name the config's hash: {body}"
        );
        let components: String = body
            .lines()
            .take_while(|l| !l.starts_with("config "))
            .map(|l| format!("{l}\n"))
            .collect();
        (status, components)
    }
}

/// What every IdP fault must leave true, checked after `break_idp` made the IdP misbehave.
async fn idp_fault(break_idp: impl FnOnce(&DevIdp), what: &str) {
    let f = Faulty::start().await;
    let (browser, callback) = f.at_callback().await;
    let before = f.token(json!({}));
    assert_eq!(f.get("/api/me", Some(&before)).await.status(), 200);
    assert_eq!(
        f.readyz().await,
        (
            200,
            "ready\nidp: ready (signing keys loaded)\nsession_store: ready (memory)\n".to_string()
        )
    );

    break_idp(&f.idp);

    // Bearer requests verify on the cached keys: a token seen before and a new one alike,
    // without waiting on the IdP.
    // (Counted, not timed: neither request may reach the IdP's discovery or JWKS endpoints.)
    let fresh = f.token(json!({"sub": "user_2"}));
    let idp_calls = || f.idp.discovery_requests() + f.idp.jwks_requests();
    let calls = idp_calls();
    for t in [&before, &fresh] {
        assert_eq!(f.get("/api/me", Some(t)).await.status(), 200, "{what}");
    }
    assert_eq!(
        idp_calls(),
        calls,
        "{what}: a cached-key request asked the IdP"
    );

    // A login fails with a clear page and a retry link, within the IdP timeout.
    let started = Instant::now();
    let r = browser
        .get(&callback)
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{what}: the callback took {:?}",
        started.elapsed()
    );
    assert!(
        r.status() == 400 || r.status() == 503,
        "{what}: {}",
        r.status()
    );
    assert!(
        !r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("authgate=")),
        "{what}: a session"
    );
    let page = r.text().await.unwrap();
    assert!(
        page.contains("/_authgate/login"),
        "{what}: no retry link: {page}"
    );
    assert!(
        page.contains("Sign-in failed") || page.contains("unavailable"),
        "{what}: {page}"
    );

    // Live checks fail closed.
    let live = f.token(json!({"permissions": {"client_abc:invoice": ["refund"]}, "abac_required": {"client_abc:invoice": ["refund"]}}));
    let started = Instant::now();
    let r = f
        .http
        .post(format!("{}/api/invoices/7/refund", f.gw.url))
        .bearer_auth(&live)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "{what}: the live check did not fail closed"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "{what}");

    // A token with an unknown key makes the gateway try the IdP: it is refused, and /readyz
    // says the gateway is serving on cached keys and why the IdP failed.
    let stranger = SigningKey::generate(Algorithm::RS256).unwrap();
    let unknown = stranger
        .sign(&json!({"iss": f.idp.issuer(), "sub": "s", "aud": AUDIENCE, "exp": now() + 300}));
    assert_eq!(
        f.get("/api/me", Some(&unknown)).await.status(),
        401,
        "{what}"
    );
    let (status, body) = f.readyz().await;
    assert_eq!(status, 200, "{what}: {body}");
    assert!(
        body.starts_with(
            "ready\nidp: ready on cached keys; the latest key fetch from the IdP failed: "
        ),
        "{what}: {body}"
    );
    assert_eq!(f.get("/api/me", Some(&fresh)).await.status(), 200, "{what}");
}

#[tokio::test]
async fn idp_down_bearers_keep_working_logins_fail_with_a_page_live_checks_fail_closed() {
    idp_fault(|idp| idp.shutdown(), "down").await;
}

#[tokio::test]
async fn idp_slower_than_its_timeout() {
    idp_fault(
        |idp| idp.set_fault(Some(Fault::Delay(Duration::from_secs(5)))),
        "slow",
    )
    .await;
}

#[tokio::test]
async fn idp_answering_garbage() {
    idp_fault(|idp| idp.set_fault(Some(Fault::Garbage)), "garbage").await;
}

#[tokio::test]
async fn readyz_says_why_the_keys_never_loaded() {
    let idp = DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    idp.set_available(false);
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let setup = Setup {
        wait_ready: false,
        ..Setup::default()
    };
    let gw = start_gateway(
        |port, admin| config(port, admin, &idp, echo.addr(), &setup),
        false,
    )
    .await;
    let http = client();
    let said = eventually(Duration::from_secs(5), || async {
        let r = http
            .get(format!("{}/readyz", gw.admin))
            .send()
            .await
            .unwrap();
        // The IdP's status as the reason, in words: the config's hex SHA-256 on the same page
        // can hold the digits "503", never these.
        r.status() == 503 && r.text().await.unwrap().contains("503 Service Unavailable")
    })
    .await;
    assert!(said, "/readyz does not name the IdP's answer");
}

#[tokio::test]
async fn upstream_faults_answer_502_or_504_in_time_and_other_routes_keep_answering() {
    let f = Faulty::start().await;
    // The bounds tell "answered after the configured timeout" (1 s read timeout) from "hung":
    // wide enough for a loaded CI machine, far below the 60 s the silent upstream would hold.
    let cases = [
        ("/broken/x", 502, Duration::from_secs(5)),
        ("/reset/x", 502, Duration::from_secs(5)),
        ("/silent/x", 504, Duration::from_secs(8)),
    ];
    let mut tasks = Vec::new();
    for (path, want, within) in cases {
        let (http, url) = (f.http.clone(), format!("{}{path}", f.gw.url));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let status = http.get(&url).send().await.unwrap().status().as_u16();
            (path, want, status, within, started.elapsed())
        }));
    }
    // While those hang or fail, other routes answer at once: well before the silent route's
    // 1 s read timeout could free anything they might be queued behind.
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(f.get("/public/ok", None).await.status(), 200);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "another route waited: {:?}",
            started.elapsed()
        );
    }
    for t in tasks {
        let (path, want, status, within, took) = t.await.unwrap();
        assert_eq!(status, want, "{path}");
        assert!(took <= within, "{path} took {took:?}");
    }
    // Reset mid-response: the client sees the response cut (or no response), never a
    // completed one, and no hang.
    let started = Instant::now();
    let cut = match f.http.get(format!("{}/cut/x", f.gw.url)).send().await {
        Err(_) => true,
        Ok(r) => r.status() == 502 || r.bytes().await.is_err(),
    };
    assert!(cut, "a cut response was completed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the cut response hung"
    );
    assert_eq!(f.get("/public/ok", None).await.status(), 200);
}

/// A request that reached the upstream is never sent twice: the reset upstream read the request
/// and dropped the connection, and the gateway answers 502 without a retry to it (or another
/// address), for an idempotent GET and a POST alike.
#[tokio::test]
async fn a_request_that_reached_the_upstream_is_never_sent_twice() {
    let f = Faulty::start().await;
    for (i, post) in [false, true, false].into_iter().enumerate() {
        let url = format!("{}/reset/{i}", f.gw.url);
        let r = if post {
            f.http.post(&url).body("x=1").send().await.unwrap()
        } else {
            f.http.get(&url).send().await.unwrap()
        };
        assert_eq!(r.status(), 502, "request {i}");
        assert_eq!(
            f.reached.reset.load(Ordering::SeqCst),
            i + 1,
            "request {i} (post: {post}) reached the upstream more than once"
        );
    }
}

#[tokio::test]
async fn a_502_says_connection_close_and_the_gateway_closes() {
    let f = Faulty::start().await;
    for path in ["/broken/x", "/reset/x"] {
        // Two requests pipelined on one connection: the first one's 502 must say that the
        // connection ends, and it must end there (the second request gets no answer).
        let mut s = TcpStream::connect(("127.0.0.1", f.gw.port)).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /public/ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
        assert!(
            read.is_ok(),
            "{path}: the gateway kept the connection open after its 502"
        );
        let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 502 "), "{path}: {text}");
        let head = &text[..text.find("\r\n\r\n").expect("a complete head")];
        assert!(
            head.lines().any(|l| l == "connection: close"),
            "{path}: no `connection: close`: {head}"
        );
        assert_eq!(
            text.matches("http/1.1 ").count(),
            1,
            "{path}: more than one answer: {text}"
        );
    }
}

#[tokio::test]
async fn api_key_exchange_failing_keeps_cached_keys_working_until_their_tokens_expire() {
    let f = Faulty::start().await;
    // Tokens living 63 s are re-exchanged 60 s before they expire, so after 3 s.
    f.idp.add_api_key(
        "k-cached",
        json!({"sub": "machine", "permissions": {"client_abc:invoice": ["read"]}}),
        63,
    );
    f.idp.add_api_key(
        "k-short",
        json!({"sub": "short", "permissions": {"client_abc:invoice": ["read"]}}),
        3,
    );
    f.idp.add_api_key(
        "k-new",
        json!({"sub": "new", "permissions": {"client_abc:invoice": ["read"]}}),
        600,
    );
    let call = |key: &'static str| {
        let (http, url) = (f.http.clone(), format!("{}/api/invoices/1", f.gw.url));
        async move {
            http.get(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(call("k-cached").await, 200);
    assert_eq!(call("k-short").await, 200);
    let exchanges = f.idp.exchange_requests();

    f.idp.set_exchange_status(Some(503));
    assert_eq!(
        call("k-new").await,
        503,
        "a key never exchanged cannot be served"
    );
    assert_eq!(call("k-cached").await, 200);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // Past the refresh point: the re-exchange fails, the still-valid token keeps serving.
    assert_eq!(
        call("k-cached").await,
        200,
        "a cached key stopped working before its token expired"
    );
    assert!(
        f.idp.exchange_requests() > exchanges + 1,
        "the gateway did not try to re-exchange"
    );
    // Past its token's expiry: no longer.
    assert_eq!(
        call("k-short").await,
        503,
        "a key whose token expired was still served"
    );

    // A definite refusal (the key was revoked) is not covered by the old token.
    f.idp.set_exchange_status(Some(401));
    assert_eq!(
        call("k-cached").await,
        401,
        "a revoked key kept working on its old token"
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_accepts_nothing_new() {
    let mut f = Faulty::start().await;
    let mut inflight = Vec::new();
    for i in 0..6 {
        let (http, url) = (client(), format!("{}/slow/{i}", f.gw.url));
        inflight.push(tokio::spawn(async move {
            http.get(url).send().await.map(|r| r.status().as_u16())
        }));
    }
    // SIGTERM once all six are at the upstream (it answers after 700 ms), so they are in flight.
    let arrived = eventually(Duration::from_secs(5), || async {
        f.reached.slow.load(Ordering::SeqCst) == 6
    })
    .await;
    assert!(arrived, "the six requests did not reach the slow upstream");
    let stopped = Instant::now();
    f.gw.signal("TERM");
    // Nothing new is accepted: the listener closes (polled, with a fresh connection each time)
    // while the six are still being answered.
    let url = format!("{}/public/x", f.gw.url);
    let closed = eventually(Duration::from_millis(600), || async {
        client().get(&url).send().await.is_err()
    })
    .await;
    assert!(closed, "new requests were still accepted after SIGTERM");
    for t in inflight {
        assert_eq!(
            t.await
                .unwrap()
                .expect("an in-flight request was cut by SIGTERM"),
            200
        );
    }
    // grace_period is 1 s in the shared config: the process is gone soon after.
    assert!(
        f.gw.exited_within(Duration::from_secs(5)).await,
        "still running after SIGTERM"
    );
    assert!(stopped.elapsed() < Duration::from_secs(6));
}

#[test]
fn the_test_gateway_retries_only_a_lost_port() {
    assert!(lost_port(
        "WARN pingora_core::listeners::l4: 127.0.0.1:34241 is in use, will try again"
    ));
    assert!(lost_port("Error: Address already in use (os error 98)"));
    assert!(!lost_port("thread 'main' panicked at src/server.rs:10:5"));
    assert!(!lost_port(
        "config error: \"nope\" is not a configured upstream"
    ));
}
