//! Shared end-to-end fixtures: the real `authgate` binary on ephemeral loopback ports, the
//! development IdP as the mock IdP, and the echo upstream.
#![allow(dead_code)]

pub mod browser;
pub mod one_app;
pub mod tunnel;

use devidp::echo::EchoServer;
use devidp::idp::DevIdp;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The audience every test config accepts.
pub const AUDIENCE: &str = "https://api.test";

/// A free loopback port (bound and released; good enough for tests), never one this process
/// was handed before: the kernel may give a port just released to the next bind, so two
/// calls in a row (a proxy's and its admin's port) could otherwise name the same port.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(port)
        {
            return port;
        }
    }
    panic!("no loopback port that this test process was not handed already, in 1000 binds")
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A running gateway process, killed when dropped.
pub struct Gateway {
    child: Child,
    /// Proxy base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Admin base URL.
    pub admin: String,
    /// The proxy's port.
    pub port: u16,
    /// Everything the gateway wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// The config file the gateway runs on.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("authgate.toml")
    }

    /// Sends SIGHUP: reload the config file.
    pub fn reload(&self) {
        self.signal("HUP");
    }

    /// Sends the signal named `name` (`"TERM"`, `"HUP"`...) to the gateway.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `timeout` for the process to exit; whether it did.
    pub async fn exited_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options of a test gateway beyond the defaults.
pub struct Setup {
    /// Extra TOML appended to the generated config (more routes, clients...).
    pub extra: String,
    /// Settings added to `[idp]`.
    pub idp_extra: String,
    /// Settings added to `[proxy]`.
    pub proxy_extra: String,
    /// Wait for `/readyz` (the keys loaded) before returning.
    pub wait_ready: bool,
    /// The client apps declared.
    pub clients: Clients,
    /// Settings added to `[session]` (with [`Clients::SignIn`]).
    pub session_extra: String,
    /// The sign-in apps declared (with [`Clients::SignIn`]), comma-separated: `a` app-a, `b`
    /// app-b, `A` app-a owning app-b's origin too, `B` app-b moved to `https://b.example`.
    pub apps: &'static str,
    /// Settings added to app-a's table (with [`Clients::SignIn`]), e.g. its `logout_url`.
    pub app_a_extra: String,
    /// Keys and sub-tables added to billing's table (with [`Clients::BillingAndReports`]), e.g. its grants.
    pub client_extra: String,
    /// Proxy worker threads (default: one with [`Clients::BillingAndReports`], two with [`Clients::SignIn`]).
    pub threads: Option<usize>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            extra: String::new(),
            idp_extra: String::new(),
            proxy_extra: String::new(),
            wait_ready: true,
            clients: Clients::default(),
            session_extra: String::new(),
            apps: "a,b",
            app_a_extra: String::new(),
            client_extra: String::new(),
            threads: None,
        }
    }
}

impl Setup {
    /// The sign-in setup: [`Clients::SignIn`], the apps `a,b`.
    pub fn sign_in() -> Setup {
        Setup {
            clients: Clients::SignIn,
            ..Setup::default()
        }
    }

    /// TOML added to `[session]` (with [`Clients::SignIn`]).
    pub fn session(mut self, toml: &str) -> Setup {
        self.session_extra.push_str(toml);
        self.session_extra.push('\n');
        self
    }

    /// TLS on the proxy listener from these PEM files.
    pub fn tls(self, cert: &Path, key: &Path) -> Setup {
        self.tls_with(cert, key, "")
    }

    /// [`Setup::tls`] with `options` (e.g. `http2 = false`) added to the `tls` table.
    pub fn tls_with(mut self, cert: &Path, key: &Path, options: &str) -> Setup {
        let options = if options.is_empty() {
            String::new()
        } else {
            format!(", {options}")
        };
        self.proxy_extra.push_str(&format!(
            "tls = {{ cert = \"{}\", key = \"{}\"{options} }}\n",
            cert.display(),
            key.display()
        ));
        self
    }

    /// One more `[[clients]]` table: `name` on `origin`, with this client id (and secret).
    pub fn client(
        mut self,
        name: &str,
        origin: &str,
        client_id: &str,
        secret: Option<&str>,
    ) -> Setup {
        self.extra.push_str(&format!(
            "[[clients]]\nname = \"{name}\"\norigins = [\"{origin}\"]\nclient_id = \"{client_id}\"\n"
        ));
        if let Some(secret) = secret {
            self.extra
                .push_str(&format!("client_secret = \"{secret}\"\n"));
        }
        self
    }
}

/// The client apps a test config declares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clients {
    /// `billing` and `reports`, see [`config`].
    #[default]
    BillingAndReports,
    /// Two sign-in apps sharing namespace `client_demo`: `app-a` (client id `client-a`, secret
    /// `secret-a`) on `http://localhost:{port}` and `app-b` (client id `client-b`, secret
    /// `secret-b`, `client_secret_post`) on `http://127.0.0.1:{port}`; sessions over plain http,
    /// two proxy threads, a route `/app/*` for any signed-in caller; the permission routes
    /// serve both apps. [`Setup::apps`] and [`Setup::app_a_extra`] vary the apps.
    SignIn,
}

impl Clients {
    /// The `[[clients]]` (and `[session]`) tables.
    fn tables(self, port: u16, setup: &Setup) -> String {
        match self {
            Clients::BillingAndReports => format!(
                r#"
[[clients]]
name = "billing"
origins = ["http://127.0.0.1:{port}", "http://localhost:{port}"]
client_id = "abc"
client_secret = "${{TEST_CLIENT_SECRET:-dev}}"
{client_extra}

[[clients]]
name = "reports"
origins = ["https://reports.test"]
client_id = "xyz"
"#,
                client_extra = setup.client_extra,
            ),
            Clients::SignIn => {
                let (a, b) = (
                    format!("http://localhost:{port}"),
                    format!("http://127.0.0.1:{port}"),
                );
                let app_a = |origins: &str| {
                    format!("\n[[clients]]\nname = \"app-a\"\norigins = [{origins}]\nclient_id = \"client-a\"\nclient_secret = \"secret-a\"\nnamespace = \"client_demo\"\n{}\n", setup.app_a_extra)
                };
                let app_b = |origin: &str| {
                    format!("\n[[clients]]\nname = \"app-b\"\norigins = [\"{origin}\"]\nclient_id = \"client-b\"\nclient_secret = \"secret-b\"\ntoken_auth = \"client_secret_post\"\nnamespace = \"client_demo\"\n")
                };
                let apps: String = setup
                    .apps
                    .split(',')
                    .map(|app| match app {
                        "a" => app_a(&format!("\"{a}\"")),
                        "A" => app_a(&format!("\"{a}\", \"{b}\"")),
                        "b" => app_b(&b),
                        "B" => app_b("https://b.example"),
                        other => panic!("no sign-in app {other:?}"),
                    })
                    .collect();
                format!(
                    "\n[session]\nallow_insecure_http = true\n{}\n{apps}",
                    setup.session_extra
                )
            }
        }
    }
}

/// The standard test config: two clients, `billing` (client id `abc`, namespace `client_abc`) on
/// the gateway's own origin and `reports` (client id `xyz`, namespace `client_xyz`) on
/// `https://reports.test`; one upstream; routes for each access mode. The permission routes serve
/// `billing` only (`clients = ["billing"]`), so credentials bound to no client (API keys, tokens
/// without `azp`) are decided in `client_abc`; `/api/me` serves both. [`Setup::clients`] declares
/// other client apps instead (see [`Clients`]).
pub fn config(port: u16, admin: u16, idp: &DevIdp, upstream: SocketAddr, setup: &Setup) -> String {
    // Sign-in's IdP timeout is the default (3s): an id_token signed by an unknown key costs the dev
    // IdP a fresh RSA key, slow in a debug build on a busy machine.
    let (threads, timeout, serves, app_route) = match setup.clients {
        Clients::BillingAndReports => (1, "2s", "clients = [\"billing\"]", ""),
        Clients::SignIn => (2, "3s", "", "\n[[routes]]\nname = \"app\"\npath = \"/app/*\"\nupstream = \"app\"\nauth = \"authenticated\"\n"),
    };
    let threads = setup.threads.unwrap_or(threads);
    format!(
        r#"
[proxy]
listen = "127.0.0.1:{port}"
threads = {threads}
grace_period = "1s"
{proxy_extra}

[admin]
listen = "127.0.0.1:{admin}"

[idp]
issuer = "{issuer}"
audience = "{AUDIENCE}"
jwks_min_refetch_interval = "1ms"
timeout = "{timeout}"
check_permission_url = "{issuer}/api/auth/check-permission"
api_key_exchange_url = "{issuer}/api/auth/api-key/exchange"
{idp_extra}
{clients}

[[upstreams]]
name = "app"
addresses = ["{upstream}"]
connect_timeout = "1s"

[[upstreams]]
name = "down"
addresses = ["127.0.0.1:{down}"]
connect_timeout = "1s"

[[routes]]
name = "public"
path = "/public/*"
upstream = "app"
auth = "none"

[[routes]]
name = "me"
path = "/api/me"
upstream = "app"
auth = "authenticated"

[[routes]]
name = "invoice-read"
path = "/api/invoices/{{id}}"
methods = ["GET"]
upstream = "app"
permission = "invoice:read"
entity_id = "id"
{serves}

[[routes]]
name = "invoice-refund"
path = "/api/invoices/{{id}}/refund"
methods = ["POST"]
upstream = "app"
permission = "invoice:refund"
entity_id = "id"
{serves}
attributes = {{ invoice = "path:id" }}

[[routes]]
name = "broken"
path = "/broken/*"
upstream = "down"
auth = "none"
{app_route}
{extra}
"#,
        clients = setup.clients.tables(port, setup),
        issuer = idp.issuer(),
        idp_extra = setup.idp_extra,
        proxy_extra = setup.proxy_extra,
        extra = setup.extra,
        down = free_port(),
    )
}

/// Registers the sign-in apps' clients at `idp` for a gateway on `port`: `client-a` with its
/// redirect URI on `http://localhost:{port}`, `client-b` on `http://127.0.0.1:{port}` (the apps
/// `a,b` of [`Clients::SignIn`]).
pub fn register_sign_in_clients(idp: &DevIdp, port: u16) {
    idp.register_client(
        "client-a",
        Some("secret-a"),
        &[&format!("http://localhost:{port}/_authgate/callback")],
    );
    idp.register_client(
        "client-b",
        Some("secret-b"),
        &[&format!("http://127.0.0.1:{port}/_authgate/callback")],
    );
}

/// Starts a gateway on `setup` (with [`Clients::SignIn`]) in front of `upstream`, its sign-in
/// clients registered at `idp` ([`register_sign_in_clients`]), and waits until it is ready.
pub async fn start_sign_in(idp: &DevIdp, upstream: SocketAddr, setup: &Setup) -> Gateway {
    assert_eq!(setup.clients, Clients::SignIn, "not a sign-in setup");
    start_gateway(
        |port, admin| {
            register_sign_in_clients(idp, port);
            config(port, admin, idp, upstream, setup)
        },
        true,
    )
    .await
}

/// A self-signed ECDSA P-256 certificate for `localhost`, written as PEM files in `dir`:
/// (certificate PEM, certificate path, key path).
pub fn localhost_certificate(dir: &Path) -> (String, PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert.pem(), cert_path, key_path)
}

/// The test world: mock IdP, echo upstream, and a gateway in front.
pub struct World {
    /// The mock IdP.
    pub idp: DevIdp,
    /// The echo upstream.
    pub echo: EchoServer,
    /// The gateway.
    pub gw: Gateway,
    /// A plain HTTP client (no redirects followed).
    pub http: reqwest::Client,
}

impl World {
    /// Starts everything with the default setup.
    pub async fn start() -> World {
        World::start_with(Setup::default()).await
    }

    /// Starts everything with options.
    pub async fn start_with(setup: Setup) -> World {
        let (idp, echo) = idp_and_echo().await;
        let gw = start_gateway(
            |port, admin| config(port, admin, &idp, echo.addr(), &setup),
            setup.wait_ready,
        )
        .await;
        World {
            idp,
            echo,
            gw,
            http: client(),
        }
    }

    /// A token for `user_1` (verified email `one@example.com`) with these permissions, signed by
    /// the IdP's active key.
    pub fn token(&self, permissions: Value) -> String {
        self.idp.mint(json!({"sub": "user_1", "email": "one@example.com", "email_verified": true, "aud": AUDIENCE, "permissions": permissions}))
    }

    /// GET `path` on the gateway with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.gw.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
}

/// The dev IdP (issuing tokens for [`AUDIENCE`]) and the echo upstream, on ephemeral ports.
pub async fn idp_and_echo() -> (DevIdp, EchoServer) {
    let idp = DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    idp.set_audience(AUDIENCE);
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (idp, echo)
}

/// A client that follows no redirects and has short timeouts.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Path of the built `authgate` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_authgate"))
}

/// Writes the config, starts `authgate run`, waits until the admin answers (and `/readyz` when asked).
pub async fn spawn_gateway(config: &str, port: u16, admin: u16, wait_ready: bool) -> Gateway {
    try_spawn_gateway(config, port, admin, wait_ready)
        .await
        .unwrap_or_else(|log| panic!("gateway did not become ready; its log:\n{log}"))
}

/// Starts a gateway on fresh ports, up to three times: a port handed out by [`free_port`] can
/// be taken by a parallel test before the gateway binds it. Only a lost port is retried; any
/// other start-up failure (a crash, a refused config) fails at once with the gateway's log.
pub async fn start_gateway(make_config: impl Fn(u16, u16) -> String, wait_ready: bool) -> Gateway {
    let mut last = String::new();
    for _ in 0..3 {
        let (port, admin) = (free_port(), free_port());
        match try_spawn_gateway(&make_config(port, admin), port, admin, wait_ready).await {
            Ok(gw) => return gw,
            Err(log) if lost_port(&log) => last = log,
            Err(log) => panic!("gateway did not become ready (not a lost port); its log:\n{log}"),
        }
    }
    panic!("gateway did not become ready in three attempts; the last log:\n{last}")
}

/// Whether a start-up log says a listen address was taken (Pingora logs `127.0.0.1:N is in
/// use, will try again` and keeps trying; a bind error says `Address already in use`).
pub fn lost_port(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("is in use")
        || log.contains("address already in use")
        || log.contains("addrinuse")
        || log.contains("os error 98")
}

/// Like [`spawn_gateway`], but a gateway that exits or never gets ready is an `Err` with its log.
pub async fn try_spawn_gateway(
    config: &str,
    port: u16,
    admin: u16,
    wait_ready: bool,
) -> Result<Gateway, String> {
    try_spawn_gateway_logging(config, port, admin, wait_ready, "info,pingora=warn").await
}

/// Like [`try_spawn_gateway`], with `AUTHGATE_LOG` set to `log`.
pub async fn try_spawn_gateway_logging(
    config: &str,
    port: u16,
    admin: u16,
    wait_ready: bool,
    log: &str,
) -> Result<Gateway, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&path)
        .env("AUTHGATE_LOG", log)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let mut gw = Gateway {
        child,
        url: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin}"),
        port,
        log,
        _dir: dir,
    };
    let http = client();
    let path = if wait_ready { "/readyz" } else { "/healthz" };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{}{path}", gw.admin)).send().await {
            // Every answer of the gateway carries x-request-id: a port lost to another test's
            // server (an IdP or echo that got it from the OS meanwhile) does not pass for it.
            if r.status() == 200
                && http
                    .get(format!("{}/public/", gw.url))
                    .send()
                    .await
                    .is_ok_and(|p| p.headers().contains_key("x-request-id"))
            {
                return Ok(gw);
            }
        }
        if gw.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Err(gw.log.lock().unwrap().clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Awaits every task, in order; a task that panicked fails the test.
pub async fn futures_join<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}

/// Starts `authgate run` and waits for its admin listener only (for listeners the plain-http
/// probe cannot reach, such as TLS).
pub async fn spawn_gateway_without_probe(config: &str, admin: u16) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gw = Gateway {
        child,
        url: String::new(),
        admin: format!("http://127.0.0.1:{admin}"),
        port: 0,
        log: Arc::new(Mutex::new(String::new())),
        _dir: dir,
    };
    let http = client();
    let up = eventually(Duration::from_secs(20), || async {
        http.get(format!("{}/readyz", gw.admin))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up, "gateway did not become ready");
    gw
}

/// Signs in at `origin` (whose client the IdP knows) as the dev IdP's `user`, as a browser
/// would: a navigation to `path` is sent to the IdP, the IdP sends back to the callback.
/// Returns the session cookie, `name=value`.
pub async fn sign_in(origin: &str, path: &str, user: &str) -> String {
    use reqwest::header::{ACCEPT, LOCATION};
    let browser = client();
    let cookies = browser::cookie_pairs;
    let r = browser
        .get(format!("{origin}{path}"))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        302,
        "a navigation without a session goes to sign in"
    );
    let login = cookies(&r);
    let authorize = r.headers()[LOCATION].to_str().unwrap().to_string();
    let r = browser
        .get(format!("{authorize}&user={user}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "the IdP did not send back");
    let callback = r.headers()[LOCATION].to_str().unwrap().to_string();
    let r = browser
        .get(&callback)
        .header("cookie", login.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "the callback did not sign in");
    cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("authgate="))
        .expect("no session cookie")
}

/// Metrics the example dashboard queries that only a gateway with a Redis session store
/// exports: checked against a run with Redis (tests/redis.rs).
pub const DASHBOARD_REDIS_ONLY: [&str; 2] = [
    "authgate_session_store_duration_seconds_bucket",
    "authgate_session_store_errors_total",
];

/// Metrics the example dashboard queries that only GitHub sign-ins export: checked against a run
/// with GitHub sessions (tests/github.rs).
pub const DASHBOARD_GITHUB_ONLY: [&str; 1] = ["authgate_github_revalidations_total"];

/// Every metric name a query of the example dashboard (`config/grafana-dashboard.json`) reads
/// (histograms by their `_bucket`/`_count` series).
pub fn dashboard_metrics() -> BTreeSet<String> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    let mut names = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target without expr in {}", panel["title"]));
            let mut rest = expr;
            while let Some(at) = rest.find("authgate_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    assert!(
        panels.len() >= 10 && names.len() >= 15,
        "the dashboard reads too little: {names:?}"
    );
    names
}

/// `gw`'s `/metrics` page as text.
pub async fn metrics_text(gw: &Gateway) -> String {
    client()
        .get(format!("{}/metrics", gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first sample line of `gw`'s `/metrics` that starts with `series` (a name, or
/// a name and its labels), `None` when there is none.
pub async fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    metrics_text(gw)
        .await
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The metric names with a sample in `gw`'s `/metrics`.
pub async fn exported_metrics(gw: &Gateway) -> BTreeSet<String> {
    let text = metrics_text(gw).await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// Asserts that the dashboard queries each of `names` and that `gw` exports a sample of each
/// (within a few seconds: some are counted after the response).
pub async fn assert_dashboard_metrics_exported(gw: &Gateway, names: &[&str]) {
    let dashboard = dashboard_metrics();
    for name in names {
        assert!(
            dashboard.contains(*name),
            "the dashboard no longer queries {name}: drop it from the list"
        );
    }
    let present = |exported: &BTreeSet<String>| names.iter().all(|n| exported.contains(*n));
    eventually(Duration::from_secs(5), || async {
        present(&exported_metrics(gw).await)
    })
    .await;
    let exported = exported_metrics(gw).await;
    let missing: Vec<&&str> = names.iter().filter(|n| !exported.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not have: {missing:?}"
    );
}
