//! End to end: WebSocket upgrades through the gateway are authorised like any other request,
//! then the socket is tunnelled to the upstream (the echo server's WebSocket echo).

mod common;

use common::tunnel::{closed_within, echo, open_tunnel, read_head, Recorder};
use common::*;
use devidp::idp::DevIdp;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Opens a WebSocket at `url` with these extra request headers; the upgrade's HTTP status on refusal.
async fn open(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    let mut req = url.into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("the upgrade hung")
    {
        Ok((socket, response)) => {
            assert_eq!(response.status(), 101);
            Ok(socket)
        }
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("the upgrade failed without an HTTP answer: {e}"),
    }
}

/// The answer to a first message (the upgrade request as the upstream saw it), then two echoed messages.
async fn converse(
    mut socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    let next = |m: Option<Result<Message, WsError>>| match m {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    };
    socket.send(Message::Text("describe".into())).await.unwrap();
    let first: Value = serde_json::from_str(&next(
        tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap(),
    ))
    .unwrap();
    for word in ["hello", "again"] {
        socket.send(Message::Text(word.into())).await.unwrap();
        assert_eq!(
            next(
                tokio::time::timeout(Duration::from_secs(5), socket.next())
                    .await
                    .unwrap()
            ),
            word
        );
    }
    socket.close(None).await.unwrap();
    first
}

#[tokio::test]
async fn a_websocket_with_a_bearer_token_is_echoed_with_the_identity_and_refused_without() {
    let w = World::start().await;
    let token = w.token(json!({"client_abc:invoice": ["read"]}));
    let ws = w.gw.url.replace("http://", "ws://");
    let before = w.echo.requests();

    let first = converse(
        open(
            &format!("{ws}/api/me"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
        .expect("refused with a token"),
    )
    .await;
    assert_eq!(first["path"], "/api/me");
    assert_eq!(first["headers"]["x-auth-subject"], "user_1");
    assert!(
        first["headers"].get("x-auth-client").is_none(),
        "a token bound to no client, on a route serving several: {first}"
    );
    assert!(
        first["headers"].get("authorization").is_none(),
        "the token reached the upstream: {first}"
    );

    // The upgrade is decided like any request: no credential, a bad one, a missing permission.
    assert_eq!(open(&format!("{ws}/api/me"), &[]).await.err(), Some(401));
    assert_eq!(
        open(
            &format!("{ws}/api/me"),
            &[("authorization", "Bearer not.a.token")]
        )
        .await
        .err(),
        Some(401)
    );
    let other = w.token(json!({"client_abc:invoice": ["write"]}));
    assert_eq!(
        open(
            &format!("{ws}/api/invoices/1"),
            &[("authorization", &format!("Bearer {other}"))]
        )
        .await
        .err(),
        Some(403)
    );
    assert_eq!(
        w.echo.requests(),
        before + 1,
        "a refused upgrade reached the upstream"
    );
}

#[tokio::test]
async fn a_websocket_after_sign_in_carries_the_session_identity() {
    let (idp, echo) = idp_and_echo().await;
    let setup = Setup {
        clients: Clients::SignIn,
        ..Setup::default()
    };
    let gw = sign_in_gateway(&idp, echo.addr(), &setup).await;
    let origin = format!("http://127.0.0.1:{}", gw.port);
    let ws = origin.replace("http://", "ws://");

    // Refused before sign-in (a WebSocket is no navigation: no redirect to the IdP).
    assert_eq!(
        open(&format!("{ws}/app/socket"), &[("origin", &origin)])
            .await
            .err(),
        Some(401)
    );

    let session = sign_in(&origin, "/app/page", "alice").await;
    let first = converse(
        open(
            &format!("{ws}/app/socket"),
            &[("origin", &origin), ("cookie", &session)],
        )
        .await
        .expect("refused with a session"),
    )
    .await;
    assert_eq!(first["headers"]["x-auth-subject"], "user_alice");
    assert_eq!(first["headers"]["x-auth-client"], "app-b");
    assert!(
        !first["headers"]["cookie"]
            .as_str()
            .unwrap_or("")
            .contains("authgate="),
        "the session cookie reached the upstream: {first}"
    );
}

#[tokio::test]
async fn forty_websockets_across_two_threads_all_converse() {
    // Sequential and concurrent sockets through a gateway with two proxy threads: each one
    // must carry its conversation (a socket reset right after its 101 fails the test).
    let w = World::start_with(Setup {
        threads: Some(2),
        ..Setup::default()
    })
    .await;
    let token = w.token(json!({}));
    let url = format!("{}/api/me", w.gw.url.replace("http://", "ws://"));
    let bearer = format!("Bearer {token}");
    for _ in 0..20 {
        let first = converse(
            open(&url, &[("authorization", &bearer)])
                .await
                .expect("refused with a token"),
        )
        .await;
        assert_eq!(first["headers"]["x-auth-subject"], "user_1");
    }
    let sockets = (0..20).map(|_| {
        let (url, bearer) = (url.clone(), bearer.clone());
        tokio::spawn(async move {
            converse(
                open(&url, &[("authorization", &bearer)])
                    .await
                    .expect("refused with a token"),
            )
            .await
        })
    });
    for socket in sockets {
        assert_eq!(socket.await.unwrap()["headers"]["x-auth-subject"], "user_1");
    }
}

/// An upstream that sends its `101` as soon as it accepts a connection (before the request has
/// arrived), then echoes every byte after the request's header. The gateway always has the
/// `101` to read by the time it starts relaying: the ordering that Pingora 0.9.1 mishandled
/// (see `vendor/README.md`).
async fn eager_upgrader() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").await.is_err() {
                    return;
                }
                let Some((_, rest)) = read_head(&mut stream).await else {
                    return;
                };
                if !rest.is_empty() && stream.write_all(&rest).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upgrade_answered_at_once_is_tunnelled_every_time() {
    let idp = DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    idp.set_audience(AUDIENCE);
    let upstream = eager_upgrader().await;
    let setup = Setup {
        threads: Some(2),
        ..Setup::default()
    };
    let gw = start_gateway(
        |port, admin| config(port, admin, &idp, upstream, &setup),
        true,
    )
    .await;
    let token = idp.mint(json!({"sub": "user_1", "aud": AUDIENCE, "permissions": {}}));
    let request = format!(
        "GET /api/me HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        gw.port
    );
    // Pingora's select picks at random between the 101 and the request's end when both are
    // ready: forty tunnels would all survive the bug with a chance of one in 2^40.
    let mut broken = 0;
    for i in 0..40 {
        let mut client = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        let (head, rest) = tokio::time::timeout(Duration::from_secs(5), read_head(&mut client))
            .await
            .expect("no 101")
            .expect("closed before the 101");
        assert!(
            head.starts_with(b"HTTP/1.1 101 "),
            "{}",
            String::from_utf8_lossy(&head)
        );
        assert!(rest.is_empty(), "bytes behind the 101: {rest:?}");
        let message = format!("through the tunnel {i}");
        client.write_all(message.as_bytes()).await.unwrap();
        let mut back = vec![0u8; message.len()];
        match tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut back))
            .await
            .expect("no echo through the tunnel")
        {
            Ok(_) => assert_eq!(back, message.as_bytes()),
            Err(_) => broken += 1,
        }
    }
    assert_eq!(broken, 0, "tunnels closed right after their 101, out of 40");
}

#[tokio::test]
async fn a_socket_is_closed_at_its_tokens_expiry_only_where_the_route_says_so() {
    let routes = r#"
[[routes]]
name = "socket-until-expiry"
path = "/ws/until-expiry"
upstream = "app"
auth = "authenticated"
websocket_close_at_expiry = true

[[routes]]
name = "socket"
path = "/ws/open"
upstream = "app"
auth = "authenticated"
"#;
    let w = World::start_with(Setup {
        extra: routes.into(),
        ..Setup::default()
    })
    .await;
    let exp = now() + 3;
    let token = w
        .idp
        .mint(json!({"sub": "user_1", "aud": AUDIENCE, "permissions": {}, "exp": exp}));
    let bearer = format!("Bearer {token}");
    let ws = w.gw.url.replace("http://", "ws://");
    let text = |m: Option<Result<Message, WsError>>| match m {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    };

    let mut closing = open(
        &format!("{ws}/ws/until-expiry"),
        &[("authorization", &bearer)],
    )
    .await
    .expect("refused with a token");
    let mut lasting = open(&format!("{ws}/ws/open"), &[("authorization", &bearer)])
        .await
        .expect("refused with a token");
    for socket in [&mut closing, &mut lasting] {
        socket.send(Message::Text("describe".into())).await.unwrap();
        let first: Value = serde_json::from_str(&text(
            tokio::time::timeout(Duration::from_secs(5), socket.next())
                .await
                .unwrap(),
        ))
        .unwrap();
        assert_eq!(first["headers"]["x-auth-subject"], "user_1");
    }

    // The quiet socket on the closing route ends at the token's expiry: not before, and soon after.
    let ended = tokio::time::timeout(Duration::from_secs(8), closing.next())
        .await
        .expect("the socket outlived its token");
    let at = now();
    assert!(at >= exp, "closed at {at}, before the token's expiry {exp}");
    assert!(
        at <= exp + 2,
        "closed at {at}, long after the token's expiry {exp}"
    );
    assert!(
        !matches!(ended, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "a message instead of the end: {ended:?}"
    );

    // The other one is still open past the expiry and still echoes.
    lasting
        .send(Message::Text("still here".into()))
        .await
        .unwrap();
    assert_eq!(
        text(
            tokio::time::timeout(Duration::from_secs(5), lasting.next())
                .await
                .unwrap()
        ),
        "still here"
    );
    lasting.close(None).await.unwrap();

    // A busy socket ends too: the first message relayed past the expiry ends it.
    let exp = now() + 2;
    let token = w
        .idp
        .mint(json!({"sub": "user_1", "aud": AUDIENCE, "permissions": {}, "exp": exp}));
    let mut busy = open(
        &format!("{ws}/ws/until-expiry"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .expect("refused with a token");
    let mut answered = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the busy socket outlived its token"
        );
        if busy.send(Message::Text("tick".into())).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(5), busy.next())
            .await
            .expect("no answer and no end")
        {
            Some(Ok(Message::Text(_))) => answered += 1,
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        now() >= exp,
        "the busy socket ended before its token expired"
    );
    assert!(
        answered >= 3,
        "the busy socket ended early: {answered} answers"
    );
}

#[tokio::test]
async fn a_socket_opened_with_a_session_is_closed_when_the_session_ends_where_the_route_says_so() {
    let (idp, echo) = idp_and_echo().await;
    let route = "\n[[routes]]\nname = \"live\"\npath = \"/live/*\"\nupstream = \"app\"\nauth = \"authenticated\"\nwebsocket_close_at_expiry = true\n";
    let setup = Setup {
        clients: Clients::SignIn,
        session_extra: "lifetime = \"4s\"".into(),
        extra: route.into(),
        ..Setup::default()
    };
    let gw = sign_in_gateway(&idp, echo.addr(), &setup).await;
    let origin = format!("http://127.0.0.1:{}", gw.port);
    let ws = origin.replace("http://", "ws://");

    let before = now();
    let session = sign_in(&origin, "/app/page", "alice").await;
    let mut socket = open(
        &format!("{ws}/live/socket"),
        &[("origin", &origin), ("cookie", &session)],
    )
    .await
    .expect("refused with a session");
    let opened = now();
    socket.send(Message::Text("describe".into())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Text(t))) => assert!(t.contains("user_alice"), "{t}"),
        other => panic!("expected the upgrade's description, got {other:?}"),
    }
    // The session lives four seconds from its sign-in (between `before` and `opened`).
    let ended = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("the socket outlived its session");
    let at = now();
    assert!(
        at >= before + 4,
        "closed at {at}, before the session could have ended (signed in after {before})"
    );
    assert!(
        at <= opened + 4 + 2,
        "closed at {at}, long after the session ended (signed in by {opened})"
    );
    assert!(
        !matches!(ended, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "a message instead of the end: {ended:?}"
    );
}

/// A gateway for `setup` (a [`Clients::SignIn`] one) in front of `upstream`, whose client
/// `client-b` is registered at the IdP with the gateway's callback on `127.0.0.1`, ready.
async fn sign_in_gateway(idp: &DevIdp, upstream: SocketAddr, setup: &Setup) -> Gateway {
    start_gateway(
        |port, admin| {
            idp.register_client(
                "client-b",
                Some("secret-b"),
                &[&format!("http://127.0.0.1:{port}/_authgate/callback")],
            );
            config(port, admin, idp, upstream, setup)
        },
        true,
    )
    .await
}

/// A sign-in gateway (app-b on `http://127.0.0.1:{port}`, sessions in memory) in front of a
/// [`Recorder`], with `session` added to its `[session]`.
struct Sockets {
    idp: DevIdp,
    upstream: Recorder,
    gw: Gateway,
    origin: String,
}

impl Sockets {
    async fn start(session: &str) -> Sockets {
        let idp = DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        idp.set_audience(AUDIENCE);
        let upstream = Recorder::start().await;
        let gw = sign_in_gateway(&idp, upstream.addr, &Setup::sign_in().session(session)).await;
        let origin = format!("http://127.0.0.1:{}", gw.port);
        Sockets {
            idp,
            upstream,
            gw,
            origin,
        }
    }

    /// A tunnel to `/app/socket` with this session cookie, from app-b's own page.
    async fn open(&self, session: &str) -> tokio::net::TcpStream {
        open_tunnel(
            &format!("127.0.0.1:{}", self.gw.port),
            self.gw.port,
            "/app/socket",
            &[("origin", &self.origin), ("cookie", session)],
        )
        .await
    }

    /// Alice and Bob signed in, each with a working socket (tunnels 0 and 1): Alice's cookie,
    /// her socket, his.
    async fn alice_and_bob(&self) -> (String, tokio::net::TcpStream, tokio::net::TcpStream) {
        let alice = sign_in(&self.origin, "/app/page", "alice").await;
        let bob = sign_in(&self.origin, "/app/page", "bob").await;
        let mut socket = self.open(&alice).await;
        echo(&mut socket, "hello").await;
        let mut other = self.open(&bob).await;
        echo(&mut other, "hello").await;
        (alice, socket, other)
    }

    /// The value of the metric line starting with `series`, 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        metric(&self.gw, series).await.unwrap_or(0.0)
    }

    /// After the session behind tunnel `index` (the client's side: `socket`) ended at this
    /// instance: the client's side is closed at once, the upstream's side ends too, and what
    /// the client sends after the end never reaches the upstream.
    async fn assert_closed_at_once(&self, socket: &mut tokio::net::TcpStream, index: usize) {
        let late = b"sent after the session ended";
        // The tunnel may be gone already: then this write fails, which is as good.
        let _ = socket.write_all(late).await;
        let started = std::time::Instant::now();
        let (closed, echoed) = closed_within(socket, Duration::from_secs(3)).await;
        assert!(closed, "the socket outlived its session");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "closed only after {:?}",
            started.elapsed()
        );
        assert!(echoed.is_empty(), "relayed after the end: {echoed:?}");
        assert!(
            eventually(Duration::from_secs(3), || async {
                self.upstream.tunnel(index).ended
            })
            .await,
            "the upstream's side of the tunnel was not ended"
        );
        let received = self.upstream.tunnel(index).received;
        assert!(
            !received.windows(late.len()).any(|w| w == late),
            "a message sent after the session ended reached the upstream: {}",
            String::from_utf8_lossy(&received)
        );
    }
}

#[tokio::test]
async fn a_socket_is_closed_at_once_when_its_browser_logs_out_at_this_instance() {
    // The default recheck (15s): only the logout itself can close the socket this soon.
    let w = Sockets::start("").await;
    let (alice, mut socket, mut other) = w.alice_and_bob().await;
    let head = w.upstream.tunnel(0).head.to_ascii_lowercase();
    assert!(head.contains("x-auth-subject: user_alice"), "{head}");

    let r = client()
        .get(format!("{}/_authgate/logout", w.origin))
        .header("cookie", &alice)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "the logout was refused");
    w.assert_closed_at_once(&mut socket, 0).await;

    // Another user's socket stays open and keeps working.
    echo(&mut other, "still here").await;
    assert!(!w.upstream.tunnel(1).ended);
    assert_eq!(
        w.metric("authgate_sockets_closed_total{reason=\"session_ended\"}")
            .await,
        1.0
    );
    let log = w.gw.log.lock().unwrap().clone();
    assert!(
        log.contains("upgraded connection closed: the session that authorised it is over"),
        "no log line for the closed socket:\n{log}"
    );
    assert!(
        !log.contains(alice.trim_start_matches("authgate=")),
        "the session id was logged"
    );
    assert!(
        !log.contains("Fail to proxy"),
        "a socket closed on purpose logged as a failure:\n{log}"
    );
}

#[tokio::test]
async fn a_socket_is_closed_at_once_by_a_back_channel_logout_of_its_session() {
    let w = Sockets::start("").await;
    let (_alice, mut socket, mut other) = w.alice_and_bob().await;

    let token = w.idp.logout_token("client-b", json!({"sub": "user_alice"}));
    let r = client()
        .post(format!("{}/_authgate/backchannel-logout/app-b", w.origin))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the back-channel logout was refused");
    w.assert_closed_at_once(&mut socket, 0).await;
    echo(&mut other, "still here").await;
    assert!(!w.upstream.tunnel(1).ended);
}

#[tokio::test]
async fn a_socket_whose_session_lives_stays_open_across_its_rechecks() {
    let w = Sockets::start("socket_recheck = \"1s\"").await;
    let alice = sign_in(&w.origin, "/app/page", "alice").await;
    let mut socket = w.open(&alice).await;
    echo(&mut socket, "hello").await;
    // Quiet through three rechecks, then busy through two more.
    let (closed, _) = closed_within(&mut socket, Duration::from_millis(3500)).await;
    assert!(!closed, "a socket with a live session was closed");
    for i in 0..10 {
        echo(&mut socket, &format!("tick {i}")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!w.upstream.tunnel(0).ended, "{:#?}", w.upstream.tunnels());
    assert_eq!(
        w.metric("authgate_sockets_closed_total").await,
        0.0,
        "a socket was closed"
    );
}
