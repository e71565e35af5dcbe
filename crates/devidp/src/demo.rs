//! The servers behind `authgate demo`: the development IdP, a stand-in GitHub, an echo upstream
//! and the landing page on loopback, on a thread of their own, and the copy-paste `curl`
//! commands that show the gateway working.
//! (The gateway's side, the built-in config and serving it, is `authgate::demo`.)

use super::echo::{escape, EchoServer};
use super::github::{self, GitHubStandIn};
use super::idp::{demo_claims, DevIdp, DEMO_USERS};
use axum::http::header;
use axum::response::IntoResponse;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why the demo's servers could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An address that is not loopback.
    #[error("{0} is not a loopback address: the demo only listens on 127.0.0.1 or ::1")]
    NotLoopback(SocketAddr),
    /// A server could not start.
    #[error("{0}")]
    Start(String),
}

/// The audience the demo IdP mints for and the gateway accepts.
pub const DEMO_AUDIENCE: &str = "authgate-demo";

/// The demo's machine API key (accepted by the development IdP only).
pub const DEMO_API_KEY: &str = "ak_demo_reports_reader";

fn demo_api_key_claims() -> serde_json::Value {
    serde_json::json!({"sub": "machine_reporter", "apiKeyId": "key_demo_1", "azp": "demo", "permissions": {"client_demo:report": ["read"]}})
}

/// The demo's running IdP, stand-in GitHub, echo upstream and landing page; they serve for
/// the life of the process.
#[derive(Debug)]
pub struct DemoServers {
    idp: DevIdp,
    github: GitHubStandIn,
    echo: SocketAddr,
    landing: SocketAddr,
    page: Arc<RwLock<String>>,
}

/// Starts the demo's IdP on `idp_addr` (loopback only) and an echo upstream on a free loopback
/// port, on a background thread with its own runtime.
pub fn start(idp_addr: SocketAddr) -> Result<DemoServers, DemoError> {
    if !idp_addr.ip().is_loopback() {
        return Err(DemoError::NotLoopback(idp_addr));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("demo-servers".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start the demo runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let started = async {
                    let idp = DevIdp::start(idp_addr)
                        .await
                        .map_err(|e| format!("development IdP on {idp_addr}: {e}"))?;
                    idp.set_audience(DEMO_AUDIENCE);
                    idp.add_api_key(DEMO_API_KEY, demo_api_key_claims(), 900);
                    let echo = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0)))
                        .await
                        .map_err(|e| format!("echo upstream: {e}"))?;
                    let gh = GitHubStandIn::start(SocketAddr::from(([127, 0, 0, 1], 0)))
                        .await
                        .map_err(|e| format!("stand-in GitHub: {e}"))?;
                    for user in github::demo_users() {
                        gh.add_user(user);
                    }
                    let page = Arc::new(RwLock::new(String::new()));
                    let landing = serve_landing(page.clone())
                        .await
                        .map_err(|e| format!("landing page: {e}"))?;
                    Ok::<_, String>((idp, echo, gh, landing, page))
                };
                match started.await {
                    Ok((idp, echo, gh, landing, page)) => {
                        let _ = tx.send(Ok((idp.clone(), gh.clone(), echo.addr(), landing, page)));
                        // Keep serving for the life of the process.
                        std::future::pending::<()>().await;
                        drop((idp, echo, gh));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| DemoError::Start(format!("cannot start the demo thread: {e}")))?;
    type Started = (
        DevIdp,
        GitHubStandIn,
        SocketAddr,
        SocketAddr,
        Arc<RwLock<String>>,
    );
    let (idp, github, echo, landing, page): Started = rx
        .recv()
        .map_err(|_| DemoError::Start("the demo servers stopped during start-up".into()))?
        .map_err(DemoError::Start)?;
    Ok(DemoServers {
        idp,
        github,
        echo,
        landing,
        page,
    })
}

/// Serves the landing page (whatever `page` holds at the time) on a free loopback port.
async fn serve_landing(page: Arc<RwLock<String>>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move || {
        let html = page.read().unwrap_or_else(PoisonError::into_inner).clone();
        async move {
            (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                    ),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                html,
            )
                .into_response()
        }
    });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "demo landing page failed");
        }
    });
    Ok(addr)
}

impl DemoServers {
    /// The IdP's issuer URL, for the gateway's `[idp] issuer`.
    pub fn issuer(&self) -> &str {
        self.idp.issuer()
    }

    /// The echo upstream's address.
    pub fn echo(&self) -> SocketAddr {
        self.echo
    }

    /// The stand-in GitHub's `base_url` (OAuth endpoints).
    pub fn github_base_url(&self) -> String {
        self.github.base_url()
    }

    /// The stand-in GitHub's `api_url` (REST API).
    pub fn github_api_url(&self) -> String {
        self.github.api_url()
    }

    /// The landing page server's address (the upstream of the gateway's `/`).
    pub fn landing(&self) -> SocketAddr {
        self.landing
    }

    /// Lets the IdP sign in a client app of the gateway's config.
    pub fn register_client(&self, client_id: &str, secret: Option<&str>, redirect_uris: &[&str]) {
        self.idp.register_client(client_id, secret, redirect_uris);
    }

    /// Registers a client app's own OAuth app at the stand-in GitHub.
    pub fn register_github_app(&self, client_id: &str, secret: &str, callback: &str) {
        self.github.register_app(client_id, secret, callback);
    }

    /// Lets the IdP tell the gateway about sign-outs: logout tokens for `client_id` go to `uri`.
    pub fn register_backchannel_logout(&self, client_id: &str, uri: &str) {
        self.idp.register_backchannel_logout(client_id, uri);
    }

    /// What to print for a newcomer: the addresses, the demo users and `curl` commands, with
    /// fresh tokens, for a gateway on `listen` (proxy) and `admin`. The landing page shows the
    /// same from then on.
    pub fn instructions(&self, listen: SocketAddr, admin: SocketAddr) -> String {
        let text = instructions(&self.idp, listen, admin);
        *self.page.write().unwrap_or_else(PoisonError::into_inner) = landing_page(&text, listen);
        text
    }
}

/// The demo's landing page: the three apps, the demo users, and the `curl` lines of `text`.
fn landing_page(text: &str, listen: SocketAddr) -> String {
    let port = listen.port();
    let apps = [
        (format!("http://127.0.0.1:{port}/app/"), "demo-a", "signs in through the development IdP"),
        (format!("http://localhost:{port}/app/"), "demo-b", "signs in through the development IdP, with its own credentials"),
        (format!("http://github.localhost:{port}/app/"), "demo-c", "signs in through its own OAuth app at the stand-in GitHub (octocat, hubot; outsider is not allowed)"),
    ];
    let apps: String = apps
        .iter()
        .map(|(url, name, how)| {
            format!(
                "<li><a href=\"{u}\">{n}</a>: <code>{u}</code> {h}</li>",
                u = escape(url),
                n = escape(name),
                h = escape(how)
            )
        })
        .collect();
    let users: String = DEMO_USERS
        .iter()
        .map(|u| {
            format!(
                "<li><b>{}</b> {} &lt;{}&gt;</li>",
                escape(u.id),
                escape(u.name),
                escape(u.email)
            )
        })
        .collect();
    let gh_users: String = github::demo_users()
        .iter()
        .map(|u| {
            format!(
                "<li><b>{}</b> ({})</li>",
                escape(&u.login),
                escape(&if u.orgs.is_empty() {
                    "no organisation".to_string()
                } else {
                    u.orgs.join(", ")
                })
            )
        })
        .collect();
    let curls: String = text
        .lines()
        .filter(|l| l.trim_start().starts_with("curl "))
        .map(|l| format!("{}\n", escape(l.trim())))
        .collect();
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>authgate demo</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60em;margin:3em auto;padding:0 1em;color:#222}}pre{{background:#f4f4f4;padding:1em;overflow-x:auto;font-size:.8em}}li{{margin:.4em 0}}</style></head>\
         <body><h1>authgate demo</h1><p>A gateway in front of an echo service, with three client apps on three origins.</p>\
         <h2>Client apps</h2><ul>{apps}</ul>\
         <h2>Demo users</h2><p>At the development IdP (demo-a, demo-b):</p><ul>{users}</ul><p>At the stand-in GitHub (demo-c):</p><ul>{gh_users}</ul>\
         <p>Sign out at <code>/_authgate/logout</code>; <code>/_authgate/session</code> shows who is signed in.</p>\
         <h2>From a terminal</h2><pre>{curls}</pre></body></html>\n"
    )
}

/// A demo token for `user`, valid for 12 hours.
pub fn demo_token(idp: &DevIdp, user: &str) -> Option<String> {
    let mut claims = demo_claims(user, DEMO_AUDIENCE)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    claims["exp"] = (now + 12 * 3600).into();
    Some(idp.mint(claims))
}

fn instructions(idp: &DevIdp, listen: SocketAddr, admin: SocketAddr) -> String {
    let alice = demo_token(idp, "alice").unwrap_or_default();
    let bob = demo_token(idp, "bob").unwrap_or_default();
    let carol = demo_token(idp, "carol").unwrap_or_default();
    let base = format!("http://{listen}");
    format!(
        "\nauthgate demo: gateway on {base}, admin on http://{admin}, development IdP on {issuer}\n\
         Users: alice (reads and writes invoices), bob (reads reports only), carol (refunds need a live ABAC check).\n\n\
         Open http://127.0.0.1:{port}/ for the demo's landing page.\n\
         Sign in from a browser: three client apps, each with its own session:\n\
           http://127.0.0.1:{port}/app/   (client demo-a, development IdP)\n\
           http://localhost:{port}/app/   (client demo-b, development IdP)\n\
           http://github.localhost:{port}/app/   (client demo-c, its own OAuth app at the stand-in GitHub: octocat, hubot)\n\
         Sign out at /_authgate/logout: the IdP then signs the browser out of the other IdP app too (OIDC back-channel logout);\n\
         /_authgate/session shows the signed-in user as JSON.\n\n\
         Try these (the comment says what each one answers):\n\n\
         curl -s {base}/   # 200: the demo's landing page (the apps, the users, these lines)\n\
         curl -i {base}/public/hello   # 200: a public route, no token needed\n\
         curl -i {base}/api/invoices/42   # 401: no credentials\n\
         curl -i -H 'Authorization: Bearer not-a-jwt' {base}/api/invoices/42   # 401: invalid token\n\
         curl -i -H 'Authorization: Bearer {alice}' {base}/api/invoices/42   # 200: alice may read invoices; the echo shows her identity headers\n\
         curl -i -H 'Authorization: Bearer {bob}' {base}/api/invoices/42   # 403: bob may not read invoices\n\
         curl -i -H 'Authorization: Bearer {bob}' {base}/api/reports/q3   # 200: bob may read reports\n\
         curl -i -H 'Authorization: Bearer {alice}' {base}/nowhere   # 404: no route\n\
         curl -i -H 'Authorization: Bearer {carol}' -H 'Content-Type: application/json' -d '{{\"amount\": 80}}' {base}/api/invoices/42/refund   # 200: the IdP's live check allows a refund of 80; the upstream gets a signed identity JWT\n\
         curl -i -H 'Authorization: Bearer {carol}' -H 'Content-Type: application/json' -d '{{\"amount\": 500}}' {base}/api/invoices/42/refund   # 403: the live check denies refunds over 100\n\
         curl -i -H 'x-api-key: {DEMO_API_KEY}' {base}/api/reports/q3   # 200: a machine's API key, exchanged at the IdP for a token, decided in client_demo (every demo app's namespace)\n\
         curl -i -H 'x-api-key: {DEMO_API_KEY}' -H 'Origin: http://localhost:{port}' {base}/api/reports/q3   # 200: the same key naming demo-b's origin: the same namespace, and no client named upstream (the key names none)\n\
         curl -i -H 'x-api-key: ak_wrong' {base}/api/reports/q3   # 401: an unknown API key\n\
         curl -s {base}/.well-known/authgate/jwks.json   # the keys upstreams verify the signed identity with\n\
         curl -s -d user=carol {issuer}/token   # a fresh token for alice, bob or carol from the development IdP\n\
         curl -s http://{admin}/metrics   # Prometheus metrics\n\n",
        issuer = idp.issuer(),
        port = listen.port(),
    )
}
