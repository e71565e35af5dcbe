//! An echo upstream for the demo and the tests: every request is answered with what
//! arrived (method, path, query, headers, body, HTTP version, and the address of the echo
//! server that answered), as JSON, or as an HTML page for browsers. A WebSocket upgrade is
//! accepted: the client's first message is answered with that JSON for the upgrade request,
//! every later text or binary message is sent back. It speaks HTTP/1.1 and HTTP/2 without TLS (h2c, prior knowledge).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{Html, IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The identity headers shown first on the HTML page, with their labels.
const IDENTITY_HEADERS: [(&str, &str); 4] = [
    ("x-auth-subject", "Subject"),
    ("x-auth-email", "Email"),
    ("x-auth-client", "Client"),
    ("x-auth-permission", "Permission"),
];

/// Handle to a running echo server; clones share it, and the server stops on
/// [`EchoServer::shutdown`] or when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Stop>,
}

/// What the handler shares with the handle.
#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    requests: AtomicUsize,
    /// How long each answer waits (a test's slow upstream).
    #[cfg(feature = "testing")]
    delay: Mutex<Option<std::time::Duration>>,
}

/// Tells the server to stop; dropping it (with the last handle) stops it too.
#[derive(Debug)]
struct Stop(Mutex<Option<oneshot::Sender<()>>>);

impl EchoServer {
    /// Starts the echo server on `listen` (port 0 picks a free port) on the current tokio runtime.
    pub async fn start(listen: SocketAddr) -> std::io::Result<EchoServer> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            addr,
            requests: AtomicUsize::new(0),
            #[cfg(feature = "testing")]
            delay: Mutex::new(None),
        });
        let app = Router::new().fallback(echo).with_state(shared.clone());
        let (sender, receiver) = oneshot::channel::<()>();
        tokio::spawn(async move {
            // Resolves on `shutdown` (Ok) and when the last handle drops the sender (Err).
            let stopped = async {
                let _ = receiver.await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(%error, "echo server failed");
            }
        });
        tracing::info!(%addr, "echo upstream listening");
        Ok(EchoServer {
            addr,
            shared,
            stop: Arc::new(Stop(Mutex::new(Some(sender)))),
        })
    }

    /// The address the server listens on (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Makes every answer wait `delay` first (`None`: answer at once).
    #[cfg(feature = "testing")]
    pub fn set_delay(&self, delay: Option<std::time::Duration>) {
        *self
            .shared
            .delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = delay;
    }

    /// Stops accepting connections and ends the server once in-flight requests finish.
    pub fn shutdown(&self) {
        let sender = self
            .stop
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(sender) = sender {
            // The server may already be gone; nothing left to stop then.
            let _ = sender.send(());
        }
    }
}

/// The largest body echoed.
const MAX_BODY: usize = 1 << 20;

async fn echo(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    #[cfg(feature = "testing")]
    {
        let delay = *shared.delay.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }
    let (mut parts, body) = request.into_parts();
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if upgrade {
        let described = describe(
            &shared,
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
            "",
        );
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws.on_upgrade(move |socket| echo_socket(socket, described)),
            Err(rejection) => rejection.into_response(),
        };
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
    };
    answer(
        &shared,
        &parts.method,
        &parts.uri,
        parts.version,
        &parts.headers,
        &body,
    )
}

/// The request as JSON: what the JSON answer and a WebSocket's first message carry.
fn describe(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    body: &str,
) -> serde_json::Value {
    json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": joined(headers),
        "body": body,
        "version": format!("{version:?}"),
        "server": shared.addr.to_string(),
    })
}

/// Answers the client's first message with the upgrade request's description, then sends
/// every message back until the peer closes.
async fn echo_socket(mut socket: WebSocket, described: serde_json::Value) {
    let mut described = Some(described);
    while let Some(Ok(message)) = socket.recv().await {
        let back = match message {
            Message::Text(_) | Message::Binary(_) => match described.take() {
                Some(d) => Message::Text(d.to_string().into()),
                None => message,
            },
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(back).await.is_err() {
            break;
        }
    }
}

/// Header values by name, repeated ones joined with `, `.
fn joined(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        joined
            .entry(name.as_str().to_owned())
            .and_modify(|all| {
                all.push_str(", ");
                all.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    joined
}

fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let body = String::from_utf8_lossy(body);
    let wants_html = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|accept| String::from_utf8_lossy(accept.as_bytes()).contains("text/html"));
    if wants_html {
        return Html(page(method, uri, &joined(headers), &body)).into_response();
    }
    Json(describe(shared, method, uri, version, headers, &body)).into_response()
}

/// A small page for browsers: who the gateway says you are, then the whole request.
fn page(method: &Method, uri: &Uri, headers: &BTreeMap<String, String>, body: &str) -> String {
    let mut html = String::from(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>authgate echo</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}",
        "dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{font-weight:600}",
        "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3rem .5rem;",
        "text-align:left;vertical-align:top;word-break:break-all}code,pre{background:#f4f4f4}",
        "pre{padding:.5rem;white-space:pre-wrap}em{color:#888}",
        "</style></head><body>\n<h1>Who you are</h1>\n",
        "<p>As told by authgate in the identity headers it injected.</p>\n<dl>\n",
    ));
    for (name, label) in IDENTITY_HEADERS {
        let value = headers.get(name).map_or_else(
            || "<em>not set</em>".to_owned(),
            |v| format!("<code>{}</code>", escape(v)),
        );
        html.push_str(&format!("<dt>{label}</dt><dd>{value}</dd>\n"));
    }
    html.push_str(&format!(
        "</dl>\n<h2>Request</h2>\n<p><code>{} {}</code></p>\n<h2>Headers</h2>\n<table>\n<tr><th>Name</th><th>Value</th></tr>\n",
        escape(method.as_str()),
        escape(&uri.to_string()),
    ));
    for (name, value) in headers {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td></tr>\n",
            escape(name),
            escape(value)
        ));
    }
    html.push_str("</table>\n");
    if !body.is_empty() {
        html.push_str(&format!("<h2>Body</h2>\n<pre>{}</pre>\n", escape(body)));
    }
    html.push_str("</body></html>\n");
    html
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    }

    #[test]
    fn escapes_html() {
        let cases = [
            ("plain", "plain"),
            (
                "<script>alert('x')</script>",
                "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;",
            ),
            ("a & \"b\"", "a &amp; &quot;b&quot;"),
        ];
        for (input, expected) in cases {
            assert_eq!(escape(input), expected);
        }
    }

    #[tokio::test]
    async fn echoes_requests_as_json_and_html() {
        let server = EchoServer::start("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("start");
        let base = format!("http://{}", server.addr());

        let response = client()
            .put(format!("{base}/a/b?x=1&y=2"))
            .header("X-Multi", "one")
            .header("x-multi", "two")
            .header("x-auth-subject", "user_alice")
            .body("hello \u{e9}")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let echoed: Value = response.json().await.expect("json");
        assert_eq!(echoed["method"], "PUT");
        assert_eq!(echoed["path"], "/a/b");
        assert_eq!(echoed["query"], "x=1&y=2");
        assert_eq!(echoed["headers"]["x-multi"], "one, two");
        assert_eq!(echoed["headers"]["x-auth-subject"], "user_alice");
        assert_eq!(echoed["body"], "hello \u{e9}");
        assert_eq!(echoed["version"], "HTTP/1.1");
        assert_eq!(echoed["server"], server.addr().to_string());

        let response = client()
            .get(format!("{base}/"))
            .header(header::ACCEPT, "text/html,application/xhtml+xml")
            .header("x-auth-subject", "<b>user_bob</b>")
            .header("x-evil", "\"><script>")
            .send()
            .await
            .expect("send");
        assert!(response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/html"));
        let page = response.text().await.expect("text");
        assert!(page.contains("<dt>Subject</dt><dd><code>&lt;b&gt;user_bob&lt;/b&gt;</code></dd>"));
        assert!(page.contains("<dt>Email</dt><dd><em>not set</em></dd>"));
        assert!(page.contains("&quot;&gt;&lt;script&gt;") && !page.contains("\"><script>"));
        assert_eq!(server.requests(), 2);

        server.shutdown();
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(server.addr()).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(refused, "still accepting after shutdown");
    }
}
