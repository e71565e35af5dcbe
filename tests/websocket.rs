//! End to end: WebSocket upgrades through the gateway are authorised like any other request,
//! then the socket is tunnelled to the upstream (the echo server's WebSocket echo).

mod common;

use common::*;
use devidp::echo::EchoServer;
use devidp::idp::DevIdp;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Opens a WebSocket at `url` with these extra request headers; the upgrade's HTTP status on refusal.
async fn open(url: &str, headers: &[(&str, &str)]) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, u16> {
    let mut req = url.into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    match tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(req)).await.expect("the upgrade hung") {
        Ok((socket, response)) => {
            assert_eq!(response.status(), 101);
            Ok(socket)
        }
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("the upgrade failed without an HTTP answer: {e}"),
    }
}

/// The answer to a first message (the upgrade request as the upstream saw it), then two echoed messages.
async fn converse(mut socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>) -> Value {
    let next = |m: Option<Result<Message, WsError>>| match m {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    };
    socket.send(Message::Text("describe".into())).await.unwrap();
    let first: Value = serde_json::from_str(&next(tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap())).unwrap();
    for word in ["hello", "again"] {
        socket.send(Message::Text(word.into())).await.unwrap();
        assert_eq!(next(tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap()), word);
    }
    socket.close(None).await.unwrap();
    first
}

/// [`converse`], or `None` when the connection is reset before the first answer.
async fn converse_or_reset(mut socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>) -> Option<Value> {
    socket.send(Message::Text("describe".into())).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("no answer") {
        Some(Err(WsError::Protocol(tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake))) => None,
        Some(Ok(Message::Text(t))) => {
            let first: Value = serde_json::from_str(&t).unwrap();
            converse_rest(socket).await;
            Some(first)
        }
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Two messages echoed, then a clean close.
async fn converse_rest(mut socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>) {
    for word in ["hello", "again"] {
        socket.send(Message::Text(word.into())).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), word),
            other => panic!("expected {word}, got {other:?}"),
        }
    }
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn a_websocket_with_a_bearer_token_is_echoed_with_the_identity_and_refused_without() {
    let w = World::start().await;
    let token = w.token(json!({"client_abc:invoice": ["read"]}));
    let ws = w.gw.url.replace("http://", "ws://");
    let before = w.echo.requests();

    let first = converse(open(&format!("{ws}/api/me"), &[("authorization", &format!("Bearer {token}"))]).await.expect("refused with a token")).await;
    assert_eq!(first["path"], "/api/me");
    assert_eq!(first["headers"]["x-auth-subject"], "user_1");
    assert!(first["headers"].get("x-auth-client").is_none(), "a token bound to no client, on a route serving several: {first}");
    assert!(first["headers"].get("authorization").is_none(), "the token reached the upstream: {first}");

    // The upgrade is decided like any request: no credential, a bad one, a missing permission.
    assert_eq!(open(&format!("{ws}/api/me"), &[]).await.err(), Some(401));
    assert_eq!(open(&format!("{ws}/api/me"), &[("authorization", "Bearer not.a.token")]).await.err(), Some(401));
    let other = w.token(json!({"client_abc:invoice": ["write"]}));
    assert_eq!(open(&format!("{ws}/api/invoices/1"), &[("authorization", &format!("Bearer {other}"))]).await.err(), Some(403));
    assert_eq!(w.echo.requests(), before + 1, "a refused upgrade reached the upstream");
}

#[tokio::test]
async fn a_websocket_after_sign_in_carries_the_session_identity() {
    let idp = DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    idp.set_audience(AUDIENCE);
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let setup = Setup { clients: Clients::SignIn, ..Setup::default() };
    let gw = start_gateway(
        |port, admin| {
            idp.register_client("client-b", Some("secret-b"), &[&format!("http://127.0.0.1:{port}/_authgate/callback")]);
            config(port, admin, &idp, echo.addr(), &setup)
        },
        true,
    )
    .await;
    let origin = format!("http://127.0.0.1:{}", gw.port);
    let ws = origin.replace("http://", "ws://");

    // Refused before sign-in (a WebSocket is no navigation: no redirect to the IdP).
    assert_eq!(open(&format!("{ws}/app/socket"), &[("origin", &origin)]).await.err(), Some(401));

    let session = sign_in(&origin, "/app/page", "alice").await;
    let socket = open(&format!("{ws}/app/socket"), &[("origin", &origin), ("cookie", &session)]).await.expect("refused with a session");
    // Known issue (reported, cause not found): with two proxy threads (this config) about one
    // WebSocket in fifteen to twenty is reset right after its 101, bearer or session alike;
    // none in forty with one thread. One retry keeps the test about authorisation and
    // identity; two resets in a row fail it.
    let first = match converse_or_reset(socket).await {
        Some(first) => first,
        None => {
            eprintln!("the first WebSocket was reset after its 101; opening another");
            let again = open(&format!("{ws}/app/socket"), &[("origin", &origin), ("cookie", &session)]).await.expect("refused with a session");
            converse_or_reset(again).await.expect("the WebSocket was reset twice")
        }
    };
    assert_eq!(first["headers"]["x-auth-subject"], "user_alice");
    assert_eq!(first["headers"]["x-auth-client"], "app-b");
    assert!(!first["headers"]["cookie"].as_str().unwrap_or("").contains("authgate="), "the session cookie reached the upstream: {first}");
}
