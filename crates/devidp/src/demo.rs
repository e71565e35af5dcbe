//! The servers behind `authgate demo`: the development IdP and an echo upstream on loopback,
//! on a thread of their own, and the copy-paste `curl` commands that show the gateway working.
//! (The gateway's side, the built-in config and serving it, is `authgate::demo`.)

use super::echo::EchoServer;
use super::idp::{demo_claims, DevIdp};
use std::net::SocketAddr;
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

/// The demo's running IdP and echo upstream; they serve for the life of the process.
#[derive(Debug)]
pub struct DemoServers {
    idp: DevIdp,
    echo: SocketAddr,
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
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start the demo runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let started = async {
                    let idp = DevIdp::start(idp_addr).await.map_err(|e| format!("development IdP on {idp_addr}: {e}"))?;
                    idp.set_audience(DEMO_AUDIENCE);
                    idp.add_api_key(DEMO_API_KEY, demo_api_key_claims(), 900);
                    let echo = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(|e| format!("echo upstream: {e}"))?;
                    Ok::<_, String>((idp, echo))
                };
                match started.await {
                    Ok((idp, echo)) => {
                        let _ = tx.send(Ok((idp.clone(), echo.addr())));
                        // Keep serving for the life of the process.
                        std::future::pending::<()>().await;
                        drop((idp, echo));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| DemoError::Start(format!("cannot start the demo thread: {e}")))?;
    let (idp, echo): (DevIdp, SocketAddr) = rx.recv().map_err(|_| DemoError::Start("the demo servers stopped during start-up".into()))?.map_err(DemoError::Start)?;
    Ok(DemoServers { idp, echo })
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

    /// Lets the IdP sign in a client app of the gateway's config.
    pub fn register_client(&self, client_id: &str, secret: Option<&str>, redirect_uris: &[&str]) {
        self.idp.register_client(client_id, secret, redirect_uris);
    }

    /// Lets the IdP tell the gateway about sign-outs: logout tokens for `client_id` go to `uri`.
    pub fn register_backchannel_logout(&self, client_id: &str, uri: &str) {
        self.idp.register_backchannel_logout(client_id, uri);
    }

    /// What to print for a newcomer: the addresses, the demo users and `curl` commands, with
    /// fresh tokens, for a gateway on `listen` (proxy) and `admin`.
    pub fn instructions(&self, listen: SocketAddr, admin: SocketAddr) -> String {
        instructions(&self.idp, listen, admin)
    }
}

/// A demo token for `user`, valid for 12 hours.
pub fn demo_token(idp: &DevIdp, user: &str) -> Option<String> {
    let mut claims = demo_claims(user, DEMO_AUDIENCE)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
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
         Sign in from a browser: two client apps, each with its own session:\n\
           http://127.0.0.1:{port}/app/   (client demo-a)\n\
           http://localhost:{port}/app/   (client demo-b)\n\
         Sign out at /_authgate/logout: the IdP then signs the browser out of the other app too (OIDC back-channel logout);\n\
         /_authgate/session shows the signed-in user as JSON.\n\n\
         Try these (the comment says what each one answers):\n\n\
         curl -i {base}/public/hello   # 200: a public route, no token needed\n\
         curl -i {base}/api/invoices/42   # 401: no credentials\n\
         curl -i -H 'Authorization: Bearer not-a-jwt' {base}/api/invoices/42   # 401: invalid token\n\
         curl -i -H 'Authorization: Bearer {alice}' {base}/api/invoices/42   # 200: alice may read invoices; the echo shows her identity headers\n\
         curl -i -H 'Authorization: Bearer {bob}' {base}/api/invoices/42   # 403: bob may not read invoices\n\
         curl -i -H 'Authorization: Bearer {bob}' {base}/api/reports/q3   # 200: bob may read reports\n\
         curl -i -H 'Authorization: Bearer {alice}' {base}/nowhere   # 404: no route\n\
         curl -i -H 'Authorization: Bearer {carol}' -H 'Content-Type: application/json' -d '{{\"amount\": 80}}' {base}/api/invoices/42/refund   # 200: the IdP's live check allows a refund of 80; the upstream gets a signed identity JWT\n\
         curl -i -H 'Authorization: Bearer {carol}' -H 'Content-Type: application/json' -d '{{\"amount\": 500}}' {base}/api/invoices/42/refund   # 403: the live check denies refunds over 100\n\
         curl -i -H 'x-api-key: {DEMO_API_KEY}' {base}/api/reports/q3   # 200: a machine's API key, exchanged at the IdP for a token\n\
         curl -i -H 'x-api-key: ak_wrong' {base}/api/reports/q3   # 401: an unknown API key\n\
         curl -s {base}/.well-known/authgate/jwks.json   # the keys upstreams verify the signed identity with\n\
         curl -s -d user=carol {issuer}/token   # a fresh token for alice, bob or carol from the development IdP\n\
         curl -s http://{admin}/metrics   # Prometheus metrics\n\n",
        issuer = idp.issuer(),
        port = listen.port(),
    )
}
