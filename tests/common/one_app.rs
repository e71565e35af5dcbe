//! A gateway in its smallest sign-in shape, built fluently: one client app on the gateway's own
//! origin, one upstream, a route `/app/*` for any signed-in caller.
//!
//! ```ignore
//! let gw = OneApp::new("rp", "rp-secret").session("allow_insecure_http = true").start(&idp, echo.addr()).await;
//! ```

use super::{start_gateway, Gateway, AUDIENCE};
use devidp::idp::DevIdp;
use std::net::SocketAddr;

/// The config of a gateway with one sign-in client `app` (see the module's doc).
#[derive(Clone, Debug)]
pub struct OneApp {
    client_id: String,
    client_secret: String,
    scheme: String,
    namespace: Option<String>,
    proxy: String,
    idp: String,
    session: String,
}

impl OneApp {
    /// Client `app` with this client id and secret, on `http://127.0.0.1:{port}`.
    pub fn new(client_id: &str, client_secret: &str) -> OneApp {
        OneApp {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scheme: "http".into(),
            namespace: None,
            proxy: String::new(),
            idp: String::new(),
            session: String::new(),
        }
    }

    /// The scheme of the client's origin (and so of its redirect URI): `http` or `https`.
    pub fn scheme(mut self, scheme: &str) -> OneApp {
        self.scheme = scheme.into();
        self
    }

    /// The client's namespace.
    pub fn namespace(mut self, namespace: &str) -> OneApp {
        self.namespace = Some(namespace.into());
        self
    }

    /// TOML added to `[proxy]`.
    pub fn proxy(mut self, toml: &str) -> OneApp {
        self.proxy.push_str(toml);
        self.proxy.push('\n');
        self
    }

    /// TOML added to `[idp]`.
    pub fn idp(mut self, toml: &str) -> OneApp {
        self.idp.push_str(toml);
        self.idp.push('\n');
        self
    }

    /// TOML added to `[session]`.
    pub fn session(mut self, toml: &str) -> OneApp {
        self.session.push_str(toml);
        self.session.push('\n');
        self
    }

    /// The client's origin on a gateway listening on `port`.
    pub fn origin(&self, port: u16) -> String {
        format!("{}://127.0.0.1:{port}", self.scheme)
    }

    /// The config file's text.
    pub fn toml(&self, port: u16, admin: u16, idp: &DevIdp, upstream: SocketAddr) -> String {
        let namespace = self
            .namespace
            .as_ref()
            .map(|n| format!("namespace = \"{n}\""))
            .unwrap_or_default();
        format!(
            r#"
[proxy]
listen = "127.0.0.1:{port}"
threads = 1
grace_period = "1s"
{proxy}
[admin]
listen = "127.0.0.1:{admin}"

[idp]
issuer = "{issuer}"
audience = "{AUDIENCE}"
{idp_extra}
[session]
{session}
[[clients]]
name = "app"
origins = ["{origin}"]
client_id = "{client_id}"
client_secret = "{client_secret}"
{namespace}

[[upstreams]]
name = "app"
addresses = ["{upstream}"]

[[routes]]
name = "app"
path = "/app/*"
upstream = "app"
auth = "authenticated"
"#,
            proxy = self.proxy,
            issuer = idp.issuer(),
            idp_extra = self.idp,
            session = self.session,
            origin = self.origin(port),
            client_id = self.client_id,
            client_secret = self.client_secret,
        )
    }

    /// Registers the client at `idp` (its redirect URI on the gateway's port) and starts the
    /// gateway in front of `upstream`, waiting until it is ready.
    pub async fn start(&self, idp: &DevIdp, upstream: SocketAddr) -> Gateway {
        start_gateway(
            |port, admin| {
                idp.register_client(
                    &self.client_id,
                    Some(&self.client_secret),
                    &[&format!("{}/_authgate/callback", self.origin(port))],
                );
                self.toml(port, admin, idp, upstream)
            },
            true,
        )
        .await
    }
}
