//! A development OIDC identity provider served in-process on loopback: discovery, JWKS
//! and a demo token endpoint, with knobs for tests (key rotation; with the `testing` feature key removal, outages,
//! request counters, minting arbitrary claims). Never for production: it signs for anyone.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::keys::{KeyError, SigningKey};

/// The audience written into tokens from `/token` unless [`DevIdp::set_audience`] changes it.
pub const DEFAULT_AUDIENCE: &str = "authgate-demo";
/// Lifetime of minted tokens when the claims carry no `exp`, in seconds.
pub const TOKEN_TTL_SECS: u64 = 900;
/// The `azp` (authorized party, the OAuth client id) of demo tokens.
pub const DEMO_CLIENT_ID: &str = "demo";

const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
const JWKS_PATH: &str = "/jwks";
const TOKEN_PATH: &str = "/token";
const AUTHORIZE_PATH: &str = "/authorize";
/// Auther's live ABAC check.
pub const CHECK_PERMISSION_PATH: &str = "/api/auth/check-permission";
/// Auther's API-key exchange.
pub const API_KEY_EXCHANGE_PATH: &str = "/api/auth/api-key/exchange";
const END_SESSION_PATH: &str = "/end_session";
/// The `events` member that makes a JWT a back-channel logout token.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A client registered at the development IdP for the code flow.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    /// Its secret; `None` for a public client (PKCE only).
    pub secret: Option<String>,
    /// Redirect URIs it may use, exactly.
    pub redirect_uris: Vec<String>,
}

/// A way to spoil the next id_token from the code flow, for tests of the gateway's checks.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenTrick {
    /// A nonce other than the one the login sent.
    WrongNonce,
    /// An `iss` other than the issuer.
    WrongIssuer,
    /// Signed by a key the JWKS does not publish.
    UnknownKey,
    /// `alg: none`, no signature.
    AlgNone,
    /// An `aud` other than the client id.
    WrongAudience,
    /// No `nonce` claim at all.
    NoNonce,
    /// `exp` two minutes in the past (beyond the usual leeway).
    Expired,
    /// `nbf` ten minutes in the future.
    NotYetValid,
    /// `aud` an array of two other clients, without the client id.
    AudArrayWithoutClient,
    /// Signed by the active key, but the header carries no `kid`.
    NoKid,
    /// Signed by the active key, then the payload changed (the signature no longer matches).
    BadSignature,
}

/// A raw answer the token endpoint gives instead of tokens (test knob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnswer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// The body, as is.
    pub body: String,
}

/// How every endpoint of the IdP misbehaves (test knob), beyond [`DevIdp::set_available`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer after this long.
    Delay(std::time::Duration),
    /// Answer `200 text/html` with a page that is not what was asked for.
    Garbage,
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    user: String,
    nonce: Option<String>,
    challenge: Option<String>,
}

/// The code-flow state and test knobs.
#[derive(Default)]
struct Flow {
    clients: std::collections::HashMap<String, RegisteredClient>,
    codes: std::collections::HashMap<String, CodeGrant>,
    refresh_tokens: std::collections::HashMap<String, (String, String)>,
    /// Back-channel logout URI by client id.
    backchannel: std::collections::HashMap<String, String>,
    /// The `sid` of every code-flow login: (sid, client id, subject).
    sids: Vec<(String, String, String)>,
    /// What each back-channel logout POST got back: (client id, HTTP status or 0 when it failed).
    deliveries: Vec<(String, u16)>,
    #[cfg(any(test, feature = "testing"))]
    trick: Option<IdTokenTrick>,
    authorize_error: Option<String>,
    callback_iss: Option<String>,
    token_answer: Option<RawAnswer>,
}

/// Why the development IdP could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DevIdpError {
    /// The listen address is not loopback; the dev IdP mints tokens for anyone who asks.
    #[error("dev idp listen address {0} is not loopback: it signs tokens for anyone, so it only listens on 127.0.0.1 or ::1")]
    NotLoopback(SocketAddr),
    /// The listener could not be bound or inspected.
    #[error("cannot listen on {addr} for the dev idp: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// A signing key could not be generated.
    #[error("cannot generate dev idp signing key: {0}")]
    Key(#[from] KeyError),
    /// No key with this id was ever generated by this IdP.
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
}

/// A built-in demo user, whose token `POST /token` mints from `user=<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoUser {
    /// Short name used to ask for the user's token (`alice`).
    pub id: &'static str,
    /// The token's `sub` (`user_alice`).
    pub subject: &'static str,
    /// The `email` claim.
    pub email: &'static str,
    /// The `name` claim.
    pub name: &'static str,
    /// The `permissions` claim: entity type → permissions.
    pub permissions: &'static [(&'static str, &'static [&'static str])],
    /// The `abac_required` claim: entity type → permissions that need a live check.
    pub abac_required: &'static [(&'static str, &'static [&'static str])],
}

/// The three built-in demo users: `alice`, `bob` and `carol`.
pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        id: "alice",
        subject: "user_alice",
        email: "alice@example.com",
        name: "Alice Anderson",
        permissions: &[
            ("client_demo:invoice", &["read", "write"]),
            ("client_demo:report", &["read"]),
        ],
        abac_required: &[],
    },
    DemoUser {
        id: "bob",
        subject: "user_bob",
        email: "bob@example.com",
        name: "Bob Brown",
        permissions: &[("client_demo:report", &["read"])],
        abac_required: &[],
    },
    DemoUser {
        id: "carol",
        subject: "user_carol",
        email: "carol@example.com",
        name: "Carol Chen",
        permissions: &[("client_demo:invoice", &["read", "refund"])],
        abac_required: &[("client_demo:invoice", &["refund"])],
    },
];

/// The claims of demo user `user` (see [`DEMO_USERS`]) for `audience`, or `None` for an
/// unknown user; `iss`, `iat` and `exp` are left to [`DevIdp::mint`].
pub fn demo_claims(user: &str, audience: &str) -> Option<Value> {
    let demo = DEMO_USERS.iter().find(|u| u.id == user)?;
    let to_map = |grants: &[(&str, &[&str])]| -> serde_json::Map<String, Value> {
        grants
            .iter()
            .map(|(entity, perms)| ((*entity).to_owned(), json!(perms)))
            .collect()
    };
    let mut claims = json!({
        "sub": demo.subject,
        "email": demo.email,
        "email_verified": true,
        "name": demo.name,
        "aud": audience,
        "azp": DEMO_CLIENT_ID,
        "permissions": to_map(demo.permissions),
    });
    if !demo.abac_required.is_empty() {
        claims["abac_required"] = Value::Object(to_map(demo.abac_required));
    }
    Some(claims)
}

/// Handle to a running development IdP; clones share it, and the server stops on
/// [`DevIdp::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct DevIdp {
    shared: Arc<Shared>,
    stop: Arc<Stop>,
}

/// State shared by the handles and the server's handlers.
struct Shared {
    addr: SocketAddr,
    issuer: String,
    keys: RwLock<KeyRing>,
    audience: RwLock<String>,
    available: AtomicBool,
    discovery_requests: AtomicUsize,
    jwks_requests: AtomicUsize,
    token_requests: AtomicUsize,
    authz: AuthzState,
    flow: Mutex<Flow>,
    token_ttl: std::sync::atomic::AtomicU64,
    refresh_requests: AtomicUsize,
    refresh_fails: AtomicBool,
    refresh_delay_ms: std::sync::atomic::AtomicU64,
    opaque_access_tokens: AtomicBool,
    end_session: AtomicBool,
    end_session_requests: AtomicUsize,
    fault: Mutex<Option<Fault>>,
    check_refuses_bearer: AtomicBool,
}

/// Every key this IdP generated, in order; only published ones appear in the JWKS.
struct KeyRing {
    active: Arc<SigningKey>,
    keys: Vec<(Arc<SigningKey>, bool)>,
}

/// Tells the server to stop; dropping it (with the last handle) stops it too.
struct Stop(Mutex<Option<oneshot::Sender<()>>>);

impl Stop {
    fn now(&self) {
        let sender = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(sender) = sender {
            // The server may already be gone; nothing left to stop then.
            let _ = sender.send(());
        }
    }
}

impl DevIdp {
    /// Starts the IdP on `listen` (loopback only; port 0 picks a free port) with an RS256 key.
    pub async fn start(listen: SocketAddr) -> Result<DevIdp, DevIdpError> {
        Self::start_with(listen, Algorithm::RS256).await
    }

    /// Starts the IdP on `listen` (loopback only; port 0 picks a free port) signing with a
    /// fresh `alg` key, serving on the current tokio runtime.
    pub async fn start_with(listen: SocketAddr, alg: Algorithm) -> Result<DevIdp, DevIdpError> {
        if !listen.ip().is_loopback() {
            return Err(DevIdpError::NotLoopback(listen));
        }
        Self::serve(listen, alg, None).await
    }

    /// Starts the IdP on any address, naming itself `issuer` (the URL both the browser and
    /// the gateway reach it at): for the `devidp` container of the compose walk-through, on a
    /// private container network. Its users sign in without a password: never expose it.
    pub async fn start_exposed(listen: SocketAddr, issuer: String) -> Result<DevIdp, DevIdpError> {
        Self::serve(listen, Algorithm::RS256, Some(issuer)).await
    }

    async fn serve(
        listen: SocketAddr,
        alg: Algorithm,
        issuer: Option<String>,
    ) -> Result<DevIdp, DevIdpError> {
        let first = Arc::new(SigningKey::generate(alg)?);
        let bind_failed = |source| DevIdpError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_failed)?;
        let addr = listener.local_addr().map_err(bind_failed)?;
        let shared = Arc::new(Shared {
            addr,
            issuer: issuer.unwrap_or_else(|| format!("http://{addr}")),
            keys: RwLock::new(KeyRing {
                active: first.clone(),
                keys: vec![(first, true)],
            }),
            audience: RwLock::new(DEFAULT_AUDIENCE.to_owned()),
            available: AtomicBool::new(true),
            discovery_requests: AtomicUsize::new(0),
            jwks_requests: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
            authz: AuthzState::default(),
            flow: Mutex::new(Flow::default()),
            token_ttl: std::sync::atomic::AtomicU64::new(TOKEN_TTL_SECS),
            refresh_requests: AtomicUsize::new(0),
            refresh_fails: AtomicBool::new(false),
            refresh_delay_ms: std::sync::atomic::AtomicU64::new(0),
            opaque_access_tokens: AtomicBool::new(false),
            end_session: AtomicBool::new(true),
            end_session_requests: AtomicUsize::new(0),
            fault: Mutex::new(None),
            check_refuses_bearer: AtomicBool::new(false),
        });

        let (sender, receiver) = oneshot::channel::<()>();
        let app = router(shared.clone());
        tokio::spawn(async move {
            // Resolves on `shutdown` (Ok) and when the last handle drops the sender (Err).
            let stopped = async {
                let _ = receiver.await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(%error, "dev idp server failed");
            }
        });
        tracing::info!(issuer = %shared.issuer, alg = ?alg, "dev idp listening");
        Ok(DevIdp {
            shared,
            stop: Arc::new(Stop(Mutex::new(Some(sender)))),
        })
    }

    /// The address the IdP listens on (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The issuer, `http://127.0.0.1:PORT` (no trailing slash), as written into `iss`.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The OpenID discovery document's URL.
    pub fn discovery_url(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.shared.issuer)
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.shared.issuer)
    }

    /// The demo token endpoint's URL (`POST user=alice`).
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.shared.issuer)
    }

    /// The kid of the key that [`DevIdp::mint`] signs with.
    pub fn active_kid(&self) -> String {
        self.shared.keys_read().active.kid().to_owned()
    }

    /// Generates a new `alg` key, publishes it and makes it the signer; older keys stay
    /// published. Returns the new kid.
    pub fn rotate(&self, alg: Algorithm) -> Result<String, DevIdpError> {
        let key = Arc::new(SigningKey::generate(alg)?);
        let kid = key.kid().to_owned();
        let mut ring = self.shared.keys_write();
        ring.active = key.clone();
        ring.keys.push((key, true));
        Ok(kid)
    }

    /// Unpublishes key `kid` from the JWKS, so its tokens no longer verify; returns whether
    /// it was published. The key stays usable by [`DevIdp::mint_with`] (tokens with an
    /// unknown kid), and if it was the active key [`DevIdp::mint`] keeps signing with it.
    #[cfg(any(test, feature = "testing"))]
    pub fn remove_key(&self, kid: &str) -> bool {
        let mut ring = self.shared.keys_write();
        match ring
            .keys
            .iter_mut()
            .find(|(key, published)| *published && key.kid() == kid)
        {
            Some((_, published)) => {
                *published = false;
                true
            }
            None => false,
        }
    }

    /// Any key this IdP generated, published or removed.
    #[cfg(any(test, feature = "testing"))]
    pub fn signing_key(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.shared.keys_read().find(kid)
    }

    /// Signs `claims` with the active key, adding `iss` (the issuer), `iat` (now) and `exp`
    /// (now + [`TOKEN_TTL_SECS`]) when the object lacks them; given values win.
    pub fn mint(&self, claims: Value) -> String {
        self.shared.mint(claims)
    }

    /// Like [`DevIdp::mint`] but signs with key `kid`, even one removed from the JWKS.
    #[cfg(any(test, feature = "testing"))]
    pub fn mint_with(&self, kid: &str, claims: Value) -> Result<String, DevIdpError> {
        let key = self
            .signing_key(kid)
            .ok_or_else(|| DevIdpError::UnknownKey(kid.to_owned()))?;
        Ok(key.sign(&self.shared.complete(claims)))
    }

    /// Sets the `aud` of tokens minted by `POST /token` (default [`DEFAULT_AUDIENCE`]).
    pub fn set_audience(&self, audience: impl Into<String>) {
        *self
            .shared
            .audience
            .write()
            .unwrap_or_else(PoisonError::into_inner) = audience.into();
    }

    /// The `aud` of tokens minted by `POST /token`.
    pub fn audience(&self) -> String {
        self.shared.audience()
    }

    /// While `false`, every endpoint answers 503, as if the IdP were down.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_available(&self, available: bool) {
        self.shared.available.store(available, Ordering::SeqCst);
    }

    /// Requests received for the discovery document, including those answered 503.
    pub fn discovery_requests(&self) -> usize {
        self.shared.discovery_requests.load(Ordering::SeqCst)
    }

    /// Requests received for the JWKS, including those answered 503.
    pub fn jwks_requests(&self) -> usize {
        self.shared.jwks_requests.load(Ordering::SeqCst)
    }

    /// Requests received by the token endpoint, including those answered 503.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// Registers a client for the code flow (`secret: None` for a public client).
    pub fn register_client(&self, client_id: &str, secret: Option<&str>, redirect_uris: &[&str]) {
        self.shared.flow().clients.insert(
            client_id.to_owned(),
            RegisteredClient {
                secret: secret.map(str::to_owned),
                redirect_uris: redirect_uris.iter().map(|u| (*u).to_owned()).collect(),
            },
        );
    }

    /// Registers the client's back-channel logout URI: when a user signs out at the IdP
    /// (`end_session` with an `id_token_hint`), every client that user signed in to and that
    /// registered one gets a logout token POSTed (before the browser is sent back).
    pub fn register_backchannel_logout(&self, client_id: &str, uri: &str) {
        self.shared
            .flow()
            .backchannel
            .insert(client_id.to_owned(), uri.to_owned());
    }

    /// The back-channel logout POSTs made so far: (client id, HTTP status, 0 when it failed).
    pub fn backchannel_deliveries(&self) -> Vec<(String, u16)> {
        self.shared.flow().deliveries.clone()
    }

    /// The `sid`s of the code-flow logins of `subject` at `client_id`, oldest first.
    pub fn sids(&self, client_id: &str, subject: &str) -> Vec<String> {
        self.shared
            .flow()
            .sids
            .iter()
            .filter(|(_, c, s)| c == client_id && s == subject)
            .map(|(sid, _, _)| sid.clone())
            .collect()
    }

    /// A back-channel logout token for `client_id`, `typ: logout+jwt`, signed by the active
    /// key: `iss`, `aud`, `iat`, `exp` (2 minutes), a fresh `jti` and the events claim, then
    /// `claims` over them (a `null` removes one).
    pub fn logout_token(&self, client_id: &str, claims: Value) -> String {
        self.shared.logout_token(client_id, claims)
    }

    /// Lifetime (`expires_in` and `exp`) of tokens from the code flow and refreshes, in seconds.
    pub fn set_token_ttl(&self, secs: u64) {
        self.shared.token_ttl.store(secs, Ordering::SeqCst);
    }

    /// Refresh-token grants received.
    pub fn refresh_requests(&self) -> usize {
        self.shared.refresh_requests.load(Ordering::SeqCst)
    }

    /// While `true`, refresh-token grants answer `invalid_grant`.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_refresh_fails(&self, fails: bool) {
        self.shared.refresh_fails.store(fails, Ordering::SeqCst);
    }

    /// Makes each refresh take this long (widens races in tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_refresh_delay(&self, delay: std::time::Duration) {
        self.shared
            .refresh_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// While `true`, access tokens from the code flow are opaque strings (like Auther's).
    pub fn set_opaque_access_tokens(&self, opaque: bool) {
        self.shared
            .opaque_access_tokens
            .store(opaque, Ordering::SeqCst);
    }

    /// Spoils the next id_token of the code flow.
    #[cfg(any(test, feature = "testing"))]
    pub fn spoil_next_id_token(&self, trick: IdTokenTrick) {
        self.shared.flow().trick = Some(trick);
    }

    /// Makes `/authorize` answer the next logins with this OAuth error (`None`: normal).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_authorize_error(&self, error: Option<&str>) {
        self.shared.flow().authorize_error = error.map(str::to_owned);
    }

    /// Makes the callback's `iss` parameter this value (`None`: the issuer).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_callback_iss(&self, iss: Option<&str>) {
        self.shared.flow().callback_iss = iss.map(str::to_owned);
    }

    /// Whether discovery advertises `end_session_endpoint` (default true).
    pub fn set_end_session(&self, enabled: bool) {
        self.shared.end_session.store(enabled, Ordering::SeqCst);
    }

    /// Requests received by the end-session endpoint.
    pub fn end_session_requests(&self) -> usize {
        self.shared.end_session_requests.load(Ordering::SeqCst)
    }

    #[cfg(any(test, feature = "testing"))]
    /// Makes the token endpoint answer code and refresh grants with this (`None`: normally).
    pub fn set_token_answer(&self, answer: Option<RawAnswer>) {
        self.shared.flow().token_answer = answer;
    }

    #[cfg(any(test, feature = "testing"))]
    /// Makes every endpoint misbehave (`None`: behave). Requests are still counted.
    pub fn set_fault(&self, fault: Option<Fault>) {
        *self
            .shared
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fault;
    }

    #[cfg(any(test, feature = "testing"))]
    /// While `true`, check-permission answers 401 to `Authorization: Bearer` callers (like
    /// Auther, which accepts only its session cookie or an API key there).
    pub fn set_check_refuses_bearer(&self, refuses: bool) {
        self.shared
            .check_refuses_bearer
            .store(refuses, Ordering::SeqCst);
    }

    /// The authorization endpoint's URL.
    pub fn authorize_url(&self) -> String {
        format!("{}{AUTHORIZE_PATH}", self.shared.issuer)
    }

    /// Stops accepting connections and ends the server once in-flight requests finish.
    pub fn shutdown(&self) {
        self.stop.now();
    }
}

impl fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIdp")
            .field("issuer", &self.shared.issuer)
            .field("active_kid", &self.active_kid())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn flow(&self) -> std::sync::MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keys_read(&self) -> RwLockReadGuard<'_, KeyRing> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn keys_write(&self) -> RwLockWriteGuard<'_, KeyRing> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn audience(&self) -> String {
        self.audience
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds the registered claims the caller left out.
    fn complete(&self, mut claims: Value) -> Value {
        if let Value::Object(map) = &mut claims {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            map.entry("iss").or_insert_with(|| json!(self.issuer));
            map.entry("iat").or_insert_with(|| json!(now));
            map.entry("exp")
                .or_insert_with(|| json!(now + TOKEN_TTL_SECS));
        }
        claims
    }

    fn mint(&self, claims: Value) -> String {
        let key = self.keys_read().active.clone();
        key.sign(&self.complete(claims))
    }
}

impl KeyRing {
    #[cfg(any(test, feature = "testing"))]
    fn find(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.keys
            .iter()
            .find(|(key, _)| key.kid() == kid)
            .map(|(key, _)| key.clone())
    }

    fn published(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys
            .iter()
            .filter(|(_, published)| *published)
            .map(|(key, _)| key.as_ref())
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(DISCOVERY_PATH, get(discovery))
        .route(JWKS_PATH, get(jwks))
        .route(TOKEN_PATH, post(token))
        .route(CHECK_PERMISSION_PATH, post(check_permission))
        .route(API_KEY_EXCHANGE_PATH, post(api_key_exchange))
        .route(AUTHORIZE_PATH, get(authorize))
        .route(END_SESSION_PATH, get(end_session))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// Counts requests per endpoint, then answers 503 for everything while the IdP is "down".
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let counter = match request.uri().path() {
        DISCOVERY_PATH => Some(&shared.discovery_requests),
        JWKS_PATH => Some(&shared.jwks_requests),
        TOKEN_PATH => Some(&shared.token_requests),
        CHECK_PERMISSION_PATH => Some(&shared.authz.check_requests),
        API_KEY_EXCHANGE_PATH => Some(&shared.authz.exchange_requests),
        _ => None,
    };
    if let Some(counter) = counter {
        counter.fetch_add(1, Ordering::SeqCst);
    }
    let fault = shared
        .fault
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match fault {
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Garbage) => {
            return (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<html><body>Bad gateway, maybe</body></html>",
            )
                .into_response();
        }
        None => {}
    }
    if !shared.available.load(Ordering::SeqCst) {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the dev idp is set unavailable",
        );
    }
    next.run(request).await
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let mut algs: Vec<Value> = Vec::new();
    for key in shared.keys_read().published() {
        let alg = json!(key.alg());
        if !algs.contains(&alg) {
            algs.push(alg);
        }
    }
    let issuer = &shared.issuer;
    let mut doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}{AUTHORIZE_PATH}"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "check_permission_endpoint": format!("{issuer}{CHECK_PERMISSION_PATH}"),
        "api_key_exchange_endpoint": format!("{issuer}{API_KEY_EXCHANGE_PATH}"),
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "authorization_response_iss_parameter_supported": true,
    });
    if shared.end_session.load(Ordering::SeqCst) {
        doc["end_session_endpoint"] = json!(format!("{issuer}{END_SESSION_PATH}"));
    }
    Json(doc)
}

async fn jwks(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let keys: Vec<Value> = shared
        .keys_read()
        .published()
        .map(|key| key.public_jwk().clone())
        .collect();
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        Json(json!({ "keys": keys })),
    )
}

/// 24 random bytes, base64url: codes, refresh tokens, opaque access tokens.
fn random_string() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET /authorize`: checks the client and redirect URI, then shows a page to choose a demo
/// user; with `user=<id>` (the page's links) it sends the browser back with `code`, `state`
/// and `iss`.
async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| params.get(k).cloned();
    let (Some(client_id), Some(redirect_uri)) = (get("client_id"), get("redirect_uri")) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id and redirect_uri are required",
        );
    };
    let registered = shared.flow().clients.get(&client_id).cloned();
    let Some(client) = registered else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            &format!("unknown client {client_id:?}"),
        );
    };
    if !client.redirect_uris.contains(&redirect_uri) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("redirect_uri {redirect_uri:?} is not registered for {client_id:?}"),
        );
    }
    if get("response_type").as_deref() != Some("code")
        || get("code_challenge_method").as_deref() != Some("S256")
        || get("code_challenge").is_none()
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "response_type=code with PKCE S256 is required",
        );
    }
    let state = get("state").unwrap_or_default();
    let back = |pairs: &[(&str, &str)]| {
        let mut url = match url::Url::parse(&redirect_uri) {
            Ok(u) => u,
            Err(_) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "bad redirect_uri",
                )
            }
        };
        url.query_pairs_mut().extend_pairs(pairs.iter().copied());
        (
            StatusCode::FOUND,
            [
                (header::LOCATION, url.to_string()),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
        )
            .into_response()
    };
    let (error, iss) = {
        let flow = shared.flow();
        (
            flow.authorize_error.clone(),
            flow.callback_iss
                .clone()
                .unwrap_or_else(|| shared.issuer.clone()),
        )
    };
    if let Some(error) = error {
        return back(&[
            ("error", &error),
            ("error_description", "the user declined"),
            ("state", &state),
            ("iss", &iss),
        ]);
    }
    let Some(user) = get("user") else {
        let links: String = DEMO_USERS
            .iter()
            .map(|u| {
                let href = format!("{AUTHORIZE_PATH}?{query}&user={}", u.id).replace('&', "&amp;");
                format!("<li><a class=\"user\" id=\"user-{id}\" href=\"{href}\">{name}</a> <small>{email}</small></li>", id = u.id, name = u.name, email = u.email)
            })
            .collect();
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Development IdP: sign in</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:4em auto}}li{{margin:.6em 0}}</style></head>\
             <body><h1>Sign in to {client}</h1><p>Development IdP: choose a demo user.</p><ul>{links}</ul></body></html>\n",
            client = crate::echo::escape(&client_id),
        );
        return (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            page,
        )
            .into_response();
    };
    if !DEMO_USERS.iter().any(|u| u.id == user) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("unknown demo user {user:?}"),
        );
    }
    let code = random_string();
    shared.flow().codes.insert(
        code.clone(),
        CodeGrant {
            client_id,
            redirect_uri: redirect_uri.clone(),
            user,
            nonce: get("nonce"),
            challenge: get("code_challenge"),
        },
    );
    back(&[("code", &code), ("state", &state), ("iss", &iss)])
}

/// `GET /end_session`: ends the IdP session of the `id_token_hint`'s subject (every client it
/// signed in to with a back-channel logout URI gets a logout token first) and returns to
/// `post_logout_redirect_uri`.
async fn end_session(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    shared.end_session_requests.fetch_add(1, Ordering::SeqCst);
    let query = query.unwrap_or_default();
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(subject) = param("id_token_hint")
        .as_deref()
        .and_then(|hint| shared.own_token_subject(hint))
    {
        shared.backchannel_logout(&subject).await;
    }
    let target = param("post_logout_redirect_uri");
    match target {
        Some(t) => (StatusCode::FOUND, [(header::LOCATION, t)]).into_response(),
        None => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html><p>Signed out.</p>\n",
        )
            .into_response(),
    }
}

/// The client of a token request: HTTP Basic (URL-encoded id and secret) or form fields.
fn client_credentials(
    headers: &axum::http::HeaderMap,
    form: &std::collections::HashMap<String, String>,
) -> Option<(String, Option<String>)> {
    use base64::Engine;
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some((dec(id)?, Some(dec(secret)?)));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret").cloned(),
    ))
}

impl Shared {
    /// The `sub` of a token this IdP signed (the hint names whom to sign out; anything else is ignored).
    fn own_token_subject(&self, token: &str) -> Option<String> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = self
            .keys_read()
            .keys
            .iter()
            .find(|(k, _)| Some(k.kid()) == header.kid.as_deref())
            .map(|(k, _)| k.clone())?;
        let decoding = jsonwebtoken::DecodingKey::from_jwk(
            &serde_json::from_value(key.public_jwk().clone()).ok()?,
        )
        .ok()?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_aud = false;
        validation.validate_exp = false;
        validation.set_required_spec_claims::<&str>(&[]);
        let data = jsonwebtoken::decode::<Value>(token, &decoding, &validation).ok()?;
        data.claims.get("sub")?.as_str().map(str::to_owned)
    }

    fn logout_token(&self, client_id: &str, extra: Value) -> String {
        let now = now_secs();
        let mut claims = json!({
            "iss": self.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + 120,
            "jti": random_string(),
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        });
        if let (Value::Object(map), Value::Object(extra)) = (&mut claims, extra) {
            for (k, v) in extra {
                if v.is_null() {
                    map.remove(&k);
                } else {
                    map.insert(k, v);
                }
            }
        }
        let key = self.keys_read().active.clone();
        key.sign_with_typ(&claims, "logout+jwt")
    }

    /// Ends the IdP session of `subject`: a logout token to every client with a back-channel
    /// logout URI the subject signed in to, one per `sid`, each POST bounded to 3 seconds.
    async fn backchannel_logout(&self, subject: &str) {
        let targets: Vec<(String, String, String)> = {
            let mut flow = self.flow();
            let (ended, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut flow.sids)
                .into_iter()
                .partition(|(_, _, s)| s == subject);
            flow.sids = kept;
            ended
                .into_iter()
                .filter_map(|(sid, client, _)| {
                    flow.backchannel
                        .get(&client)
                        .map(|uri| (client, uri.clone(), sid))
                })
                .collect()
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build();
        let Ok(http) = http else { return };
        for (client, uri, sid) in targets {
            let token = self.logout_token(&client, json!({"sub": subject, "sid": sid}));
            let status = match http
                .post(&uri)
                .form(&[("logout_token", token)])
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(error) => {
                    tracing::warn!(%error, client = %client, "back-channel logout POST failed");
                    0
                }
            };
            self.flow().deliveries.push((client, status));
        }
    }

    fn access_token(&self, user: &str, client_id: &str) -> String {
        if self.opaque_access_tokens.load(Ordering::SeqCst) {
            return random_string()[..32].to_owned();
        }
        let mut claims =
            demo_claims(user, &self.audience()).unwrap_or_else(|| json!({"sub": user}));
        claims["azp"] = json!(client_id);
        claims["client_id"] = json!(client_id);
        claims["exp"] = json!(now_secs() + self.token_ttl.load(Ordering::SeqCst));
        self.mint(claims)
    }

    fn id_token(
        &self,
        user: &str,
        client_id: &str,
        nonce: Option<&str>,
        sid: Option<&str>,
    ) -> String {
        let demo = DEMO_USERS.iter().find(|u| u.id == user);
        let now = now_secs();
        let mut claims = json!({
            "sub": demo.map_or(user, |u| u.subject),
            "email": demo.map(|u| u.email),
            "email_verified": demo.is_some(),
            "name": demo.map(|u| u.name),
            "aud": client_id,
            "azp": client_id,
            // Like Auther: `iat` in milliseconds.
            "iat": now * 1000,
            "exp": now + self.token_ttl.load(Ordering::SeqCst),
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        #[cfg(any(test, feature = "testing"))]
        let trick = self.flow().trick.take();
        #[cfg(any(test, feature = "testing"))]
        match trick {
            Some(IdTokenTrick::WrongNonce) => claims["nonce"] = json!("not-the-nonce"),
            Some(IdTokenTrick::WrongIssuer) => claims["iss"] = json!("https://evil.example"),
            Some(IdTokenTrick::WrongAudience) => claims["aud"] = json!("another-client"),
            Some(IdTokenTrick::NoNonce) => {
                if let Value::Object(map) = &mut claims {
                    map.remove("nonce");
                }
            }
            Some(IdTokenTrick::Expired) => {
                claims["exp"] = json!(now.saturating_sub(120));
                claims["iat"] = json!(now.saturating_sub(1000) * 1000);
            }
            Some(IdTokenTrick::NotYetValid) => claims["nbf"] = json!(now + 600),
            Some(IdTokenTrick::AudArrayWithoutClient) => {
                claims["aud"] = json!(["another-client", "a-third-client"])
            }
            Some(IdTokenTrick::NoKid) => {
                let key = self.keys_read().active.clone();
                return key.sign_without_kid(&self.complete(claims));
            }
            Some(IdTokenTrick::BadSignature) => {
                use base64::Engine;
                let signed = self.mint(claims.clone());
                claims["sub"] = json!("user_mallory");
                let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(self.complete(claims).to_string());
                let mut parts = signed.split('.');
                let (header, signature) = (
                    parts.next().unwrap_or_default(),
                    parts.nth(1).unwrap_or_default(),
                );
                return format!("{header}.{payload}.{signature}");
            }
            Some(IdTokenTrick::UnknownKey) => {
                if let Ok(key) = SigningKey::generate(Algorithm::RS256) {
                    return key.sign(&self.complete(claims));
                }
            }
            Some(IdTokenTrick::AlgNone) => {
                use base64::Engine;
                let b64 = |v: &Value| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
                };
                return format!(
                    "{}.{}.",
                    b64(&json!({"alg": "none", "typ": "JWT"})),
                    b64(&self.complete(claims))
                );
            }
            None => {}
        }
        self.mint(claims)
    }
}

/// `POST /token`: `grant_type=authorization_code` and `refresh_token` for registered clients;
/// without `grant_type`, demo minting for `user=<id>`.
async fn token(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let Some(grant) = form.get("grant_type").cloned() else {
        return demo_token(shared, query, body).await;
    };
    let oauth_error =
        |status: StatusCode, error: &str| (status, Json(json!({"error": error}))).into_response();
    let Some((client_id, secret)) = client_credentials(&headers, &form) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let registered = shared.flow().clients.get(&client_id).cloned();
    let authenticated = match (&registered, &secret) {
        (
            Some(RegisteredClient {
                secret: Some(want), ..
            }),
            Some(got),
        ) => want == got,
        (Some(RegisteredClient { secret: None, .. }), None) => true,
        _ => false,
    };
    if !authenticated {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let answer = shared.flow().token_answer.clone();
    if let Some(answer) = answer {
        let status =
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            [(header::CONTENT_TYPE, answer.content_type)],
            answer.body,
        )
            .into_response();
    }
    let ttl = shared.token_ttl.load(Ordering::SeqCst);
    match grant.as_str() {
        "authorization_code" => {
            let code = form.get("code").cloned().unwrap_or_default();
            let Some(grant) = shared.flow().codes.remove(&code) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    verifier.as_bytes(),
                ))
            };
            if grant.client_id != client_id
                || form.get("redirect_uri") != Some(&grant.redirect_uri)
                || grant.challenge.as_deref() != Some(challenge.as_str())
            {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let refresh = random_string();
            let sid = random_string();
            let subject = DEMO_USERS
                .iter()
                .find(|u| u.id == grant.user)
                .map_or(grant.user.as_str(), |u| u.subject)
                .to_owned();
            {
                let mut flow = shared.flow();
                flow.refresh_tokens
                    .insert(refresh.clone(), (client_id.clone(), grant.user.clone()));
                flow.sids.push((sid.clone(), client_id.clone(), subject));
            }
            let body = json!({
                "access_token": shared.access_token(&grant.user, &client_id),
                "id_token": shared.id_token(&grant.user, &client_id, grant.nonce.as_deref(), Some(&sid)),
                "refresh_token": refresh,
                "token_type": "Bearer",
                "expires_in": ttl,
            });
            ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
        }
        "refresh_token" => {
            shared.refresh_requests.fetch_add(1, Ordering::SeqCst);
            let delay = shared.refresh_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            if shared.refresh_fails.load(Ordering::SeqCst) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let old = form.get("refresh_token").cloned().unwrap_or_default();
            // Rotated: each refresh token works once.
            let Some((owner, user)) = shared.flow().refresh_tokens.remove(&old) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            if owner != client_id {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let refresh = random_string();
            shared
                .flow()
                .refresh_tokens
                .insert(refresh.clone(), (client_id.clone(), user.clone()));
            // Like Auther: no new id_token on refresh.
            let body = json!({
                "access_token": shared.access_token(&user, &client_id),
                "refresh_token": refresh,
                "token_type": "Bearer",
                "expires_in": ttl,
            });
            ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
        }
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
}

/// Demo minting: `user=<id>` in the form body or the query string.
async fn demo_token(shared: Arc<Shared>, query: Option<String>, body: Bytes) -> Response {
    let field = |input: &[u8]| {
        url::form_urlencoded::parse(input)
            .find(|(name, _)| name == "user")
            .map(|(_, value)| value.into_owned())
    };
    let known = DEMO_USERS
        .iter()
        .map(|u| u.id)
        .collect::<Vec<_>>()
        .join(", ");
    let Some(user) = field(&body).or_else(|| query.as_deref().and_then(|q| field(q.as_bytes())))
    else {
        let message = format!("missing field `user`: name a demo user ({known})");
        return error_response(StatusCode::BAD_REQUEST, "invalid_request", &message);
    };
    let Some(claims) = demo_claims(&user, &shared.audience()) else {
        let message = format!("unknown demo user {user:?}: expected one of {known}");
        return error_response(StatusCode::BAD_REQUEST, "invalid_request", &message);
    };
    let body = json!({
        "access_token": shared.mint(claims),
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL_SECS,
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

// --- Auther extensions: live ABAC check and API-key exchange -------------------------------

/// How the check-permission endpoint behaves (a test knob).
#[derive(Clone)]
pub enum AbacMode {
    /// Decide with the policy.
    Policy(Arc<dyn Fn(&Value) -> bool + Send + Sync>),
    /// Answer this status with an error body.
    Status(u16),
    /// Answer 200 with a body that is not a decision.
    Malformed,
    /// Wait this long, then decide with the default policy.
    Delay(std::time::Duration),
}

impl fmt::Debug for AbacMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbacMode::Policy(_) => f.write_str("Policy"),
            AbacMode::Status(s) => write!(f, "Status({s})"),
            AbacMode::Malformed => f.write_str("Malformed"),
            AbacMode::Delay(d) => write!(f, "Delay({d:?})"),
        }
    }
}

/// The demo policy: allowed unless `resource.attributes.amount` is over 100.
pub fn demo_policy(request: &Value) -> bool {
    request["resource"]["attributes"]["amount"]
        .as_f64()
        .is_none_or(|amount| amount <= 100.0)
}

/// An API key the IdP accepts: the claims of its token and the token's lifetime.
#[derive(Clone, Debug)]
struct ApiKeyGrant {
    claims: Value,
    lifetime: u64,
}

struct AuthzState {
    mode: Mutex<AbacMode>,
    checks: Mutex<Vec<(Value, Option<String>)>>,
    check_requests: AtomicUsize,
    keys: Mutex<std::collections::HashMap<String, ApiKeyGrant>>,
    exchange_delay: Mutex<std::time::Duration>,
    exchange_status: Mutex<Option<u16>>,
    exchange_requests: AtomicUsize,
}

impl Default for AuthzState {
    fn default() -> Self {
        AuthzState {
            mode: Mutex::new(AbacMode::Policy(Arc::new(demo_policy))),
            checks: Mutex::new(Vec::new()),
            check_requests: AtomicUsize::new(0),
            keys: Mutex::new(std::collections::HashMap::new()),
            exchange_delay: Mutex::new(std::time::Duration::ZERO),
            exchange_status: Mutex::new(None),
            exchange_requests: AtomicUsize::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DevIdp {
    /// Sets how `/api/auth/check-permission` answers.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_abac_mode(&self, mode: AbacMode) {
        *lock(&self.shared.authz.mode) = mode;
    }

    /// Every check-permission request received: its JSON body and its credential
    /// (`Bearer …` or `x-api-key …`).
    pub fn abac_checks(&self) -> Vec<(Value, Option<String>)> {
        lock(&self.shared.authz.checks).clone()
    }

    /// Check-permission requests received.
    pub fn abac_requests(&self) -> usize {
        self.shared.authz.check_requests.load(Ordering::SeqCst)
    }

    /// Registers an API key whose exchanged token carries `claims` and lives `lifetime_secs`.
    pub fn add_api_key(&self, key: &str, claims: Value, lifetime_secs: u64) {
        lock(&self.shared.authz.keys).insert(
            key.to_string(),
            ApiKeyGrant {
                claims,
                lifetime: lifetime_secs,
            },
        );
    }

    /// Delays every API-key exchange (to test single flight).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_exchange_delay(&self, delay: std::time::Duration) {
        *lock(&self.shared.authz.exchange_delay) = delay;
    }

    /// Makes every API-key exchange answer this status with an error body (`None`: answer normally).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_exchange_status(&self, status: Option<u16>) {
        *lock(&self.shared.authz.exchange_status) = status;
    }

    /// API-key exchange requests received.
    pub fn exchange_requests(&self) -> usize {
        self.shared.authz.exchange_requests.load(Ordering::SeqCst)
    }
}

async fn check_permission(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let credential = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| {
            headers
                .get("x-api-key")
                .map(|v| format!("x-api-key {}", String::from_utf8_lossy(v.as_bytes())))
        });
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body is not JSON",
        );
    };
    lock(&shared.authz.checks).push((request.clone(), credential.clone()));
    let bearer = credential
        .as_deref()
        .is_some_and(|c| c.starts_with("Bearer "));
    if credential.is_none() || (bearer && shared.check_refuses_bearer.load(Ordering::SeqCst)) {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a bearer token or an API key",
        );
    }
    for field in ["entityType", "permission"] {
        if request.get(field).and_then(Value::as_str).is_none() {
            return error_response(
                StatusCode::BAD_REQUEST,
                "missing_fields",
                &format!("{field} is required"),
            );
        }
    }
    let mode = lock(&shared.authz.mode).clone();
    let allowed = match mode {
        AbacMode::Policy(policy) => policy(&request),
        AbacMode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error_response(status, "internal_error", "the dev idp was told to fail");
        }
        AbacMode::Malformed => return (StatusCode::OK, "<html>not json</html>").into_response(),
        AbacMode::Delay(d) => {
            tokio::time::sleep(d).await;
            demo_policy(&request)
        }
    };
    Json(json!({
        "allowed": allowed,
        "entityType": request["entityType"],
        "entityId": request["entityId"],
        "permission": request["permission"],
        "subjectType": "user",
        "subjectId": "",
    }))
    .into_response()
}

async fn api_key_exchange(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let delay = *lock(&shared.authz.exchange_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = *lock(&shared.authz.exchange_status) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(
            status,
            "exchange_failed",
            "the dev idp was told to fail the exchange",
        );
    }
    let Some(key) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["apiKey"].as_str().map(str::to_string))
    else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "missing_api_key",
            "apiKey is required",
        );
    };
    let grant = lock(&shared.authz.keys).get(&key).cloned();
    let Some(grant) = grant else {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "the API key is not valid",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = grant.claims.clone();
    claims["exp"] = json!(now + grant.lifetime);
    claims["scope"] = json!("api_key_exchange");
    if claims.get("aud").is_none() {
        claims["aud"] = json!(shared.audience());
    }
    let expires_at = humantime::format_rfc3339_millis(
        UNIX_EPOCH + std::time::Duration::from_secs(now + grant.lifetime),
    )
    .to_string();
    Json(json!({
        "token": shared.mint(claims),
        "tokenType": "Bearer",
        "expiresIn": grant.lifetime,
        "expiresAt": expires_at,
    }))
    .into_response()
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        "the dev idp has no such endpoint",
    )
}

fn error_response(status: StatusCode, error: &str, message: &str) -> Response {
    (status, Json(json!({ "error": error, "message": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().expect("addr")
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    }

    async fn fetch_jwks(idp: &DevIdp) -> JwkSet {
        client()
            .get(idp.jwks_url())
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("jwks json")
    }

    fn kids(set: &JwkSet) -> Vec<String> {
        set.keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect()
    }

    /// Verifies `token` the way a relying party would: kid → served JWK → signature and claims.
    async fn verify(
        idp: &DevIdp,
        token: &str,
        audience: &str,
    ) -> jsonwebtoken::errors::Result<Value> {
        let header = decode_header(token)?;
        let set = fetch_jwks(idp).await;
        let jwk = set
            .find(header.kid.as_deref().unwrap_or_default())
            .ok_or_else(|| {
                jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)
            })?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[idp.issuer()]);
        Ok(decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &validation)?.claims)
    }

    #[tokio::test]
    async fn refuses_non_loopback_addresses() {
        for addr in ["0.0.0.0:0", "10.1.2.3:0", "[::]:0"] {
            let addr: SocketAddr = addr.parse().expect("addr");
            let result = DevIdp::start_with(addr, Algorithm::EdDSA).await;
            assert!(
                matches!(result, Err(DevIdpError::NotLoopback(a)) if a == addr),
                "{addr}"
            );
        }
    }

    #[tokio::test]
    async fn serves_discovery_and_jwks() {
        let idp = DevIdp::start(loopback()).await.expect("start");
        assert_ne!(idp.addr().port(), 0);
        assert_eq!(
            idp.issuer(),
            format!("http://127.0.0.1:{}", idp.addr().port())
        );

        let doc: Value = client()
            .get(idp.discovery_url())
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(doc["issuer"], idp.issuer());
        assert_eq!(doc["jwks_uri"], idp.jwks_url());
        assert_eq!(doc["token_endpoint"], idp.token_url());
        assert_eq!(
            doc["authorization_endpoint"],
            format!("{}/authorize", idp.issuer())
        );
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        assert_eq!(doc["subject_types_supported"], json!(["public"]));
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["RS256"])
        );

        let response = client().get(idp.jwks_url()).send().await.expect("get");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "max-age=60");
        let set: JwkSet = response.json().await.expect("json");
        assert_eq!(kids(&set), vec![idp.active_kid()]);
        assert_eq!((idp.discovery_requests(), idp.jwks_requests()), (1, 1));
    }

    #[tokio::test]
    async fn rotate_adds_a_key_and_remove_unpublishes_it() {
        let idp = DevIdp::start_with(loopback(), Algorithm::EdDSA)
            .await
            .expect("start");
        let old = idp.active_kid();
        let old_token = idp.mint(json!({"sub": "s", "aud": "a"}));

        let new = idp.rotate(Algorithm::ES256).expect("rotate");
        assert_ne!(new, old);
        assert_eq!(idp.active_kid(), new);
        assert_eq!(
            kids(&fetch_jwks(&idp).await),
            vec![old.clone(), new.clone()]
        );
        let doc: Value = client()
            .get(idp.discovery_url())
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["EdDSA", "ES256"])
        );
        assert_eq!(
            decode_header(idp.mint(json!({}))).expect("header").kid,
            Some(new.clone())
        );
        verify(&idp, &old_token, "a")
            .await
            .expect("old token still verifies");

        assert!(idp.remove_key(&old));
        assert!(!idp.remove_key(&old));
        assert!(!idp.remove_key("no-such-kid"));
        assert_eq!(kids(&fetch_jwks(&idp).await), vec![new]);
        assert!(verify(&idp, &old_token, "a").await.is_err());
        assert!(
            idp.signing_key(&old).is_some(),
            "removed keys can still sign"
        );
        assert!(idp.mint_with(&old, json!({})).is_ok());
        assert!(matches!(
            idp.mint_with("nope", json!({})),
            Err(DevIdpError::UnknownKey(_))
        ));
    }

    #[tokio::test]
    async fn unavailable_answers_503_everywhere() {
        let idp = DevIdp::start_with(loopback(), Algorithm::EdDSA)
            .await
            .expect("start");
        idp.set_available(false);
        let client = client();
        for (method, url) in [
            (reqwest::Method::GET, idp.discovery_url()),
            (reqwest::Method::GET, idp.jwks_url()),
            (
                reqwest::Method::POST,
                format!("{}?user=alice", idp.token_url()),
            ),
            (reqwest::Method::GET, format!("{}/anything", idp.issuer())),
        ] {
            let response = client.request(method, &url).send().await.expect("send");
            assert_eq!(response.status(), 503, "{url}");
        }
        assert_eq!(
            (
                idp.discovery_requests(),
                idp.jwks_requests(),
                idp.token_requests()
            ),
            (1, 1, 1)
        );

        idp.set_available(true);
        assert_eq!(
            client
                .get(idp.jwks_url())
                .send()
                .await
                .expect("send")
                .status(),
            200
        );
        assert_eq!(
            client
                .get(format!("{}/anything", idp.issuer()))
                .send()
                .await
                .expect("send")
                .status(),
            404
        );
    }

    #[tokio::test]
    async fn minted_tokens_verify_and_caller_claims_win() {
        let idp = DevIdp::start_with(loopback(), Algorithm::EdDSA)
            .await
            .expect("start");
        let claims = verify(&idp, &idp.mint(json!({"sub": "svc", "aud": "api"})), "api")
            .await
            .expect("verify");
        assert_eq!(claims["iss"], idp.issuer());
        let (iat, exp) = (
            claims["iat"].as_u64().expect("iat"),
            claims["exp"].as_u64().expect("exp"),
        );
        assert_eq!(exp - iat, TOKEN_TTL_SECS);

        let expired = idp.mint(json!({"aud": "api", "exp": 1_000}));
        let error = verify(&idp, &expired, "api").await.expect_err("expired");
        assert_eq!(
            error.kind(),
            &jsonwebtoken::errors::ErrorKind::ExpiredSignature
        );
        let foreign = idp.mint(json!({"aud": "api", "iss": "https://evil.example"}));
        let error = verify(&idp, &foreign, "api")
            .await
            .expect_err("wrong issuer");
        assert_eq!(
            error.kind(),
            &jsonwebtoken::errors::ErrorKind::InvalidIssuer
        );
    }

    #[tokio::test]
    async fn token_endpoint_mints_demo_users() {
        let idp = DevIdp::start_with(loopback(), Algorithm::EdDSA)
            .await
            .expect("start");
        let client = client();
        let response = client
            .post(idp.token_url())
            .form(&[("user", "alice")])
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            (&body["token_type"], &body["expires_in"]),
            (&json!("Bearer"), &json!(900))
        );
        let token = body["access_token"].as_str().expect("access_token");
        let claims = verify(&idp, token, DEFAULT_AUDIENCE).await.expect("verify");
        assert_eq!(claims["sub"], "user_alice");
        assert_eq!(claims["azp"], "demo");
        assert_eq!(
            claims["permissions"],
            json!({"client_demo:invoice": ["read", "write"], "client_demo:report": ["read"]})
        );

        idp.set_audience("other-api");
        let body: Value = client
            .post(format!("{}?user=carol", idp.token_url()))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        let claims = verify(
            &idp,
            body["access_token"].as_str().expect("token"),
            "other-api",
        )
        .await
        .expect("verify");
        assert_eq!(
            claims["abac_required"],
            json!({"client_demo:invoice": ["refund"]})
        );

        for form in [vec![("user", "mallory")], vec![]] {
            let response = client
                .post(idp.token_url())
                .form(&form)
                .send()
                .await
                .expect("post");
            assert_eq!(response.status(), 400);
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"], "invalid_request");
            assert!(body["message"]
                .as_str()
                .is_some_and(|m| m.contains("alice")));
        }
        assert_eq!(idp.token_requests(), 4);
    }

    #[test]
    fn demo_claims_per_user() {
        let cases = [
            ("alice", Some(("user_alice", "alice@example.com", false))),
            ("bob", Some(("user_bob", "bob@example.com", false))),
            ("carol", Some(("user_carol", "carol@example.com", true))),
            ("mallory", None),
            ("", None),
        ];
        for (user, expected) in cases {
            let claims = demo_claims(user, "aud-x");
            let got = claims.as_ref().map(|c| {
                assert_eq!(
                    (&c["aud"], &c["azp"]),
                    (&json!("aud-x"), &json!("demo")),
                    "{user}"
                );
                (
                    c["sub"].as_str().unwrap_or(""),
                    c["email"].as_str().unwrap_or(""),
                    c.get("abac_required").is_some(),
                )
            });
            assert_eq!(got, expected, "{user}");
        }
        let bob = demo_claims("bob", "a").expect("bob");
        assert_eq!(bob["permissions"], json!({"client_demo:report": ["read"]}));
    }

    async fn refused(addr: SocketAddr) -> bool {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn stops_on_shutdown_or_when_last_handle_drops() {
        let idp = DevIdp::start_with(loopback(), Algorithm::EdDSA)
            .await
            .expect("start");
        let clone = idp.clone();
        assert_eq!(
            client()
                .get(idp.jwks_url())
                .send()
                .await
                .expect("get")
                .status(),
            200
        );
        clone.shutdown();
        assert!(refused(idp.addr()).await, "still accepting after shutdown");

        let idp = DevIdp::start_with(loopback(), Algorithm::EdDSA)
            .await
            .expect("start");
        let addr = idp.addr();
        let clone = idp.clone();
        drop(idp);
        assert!(!refused_now(addr).await, "one handle left, still serving");
        drop(clone);
        assert!(
            refused(addr).await,
            "still accepting after the last handle dropped"
        );
    }

    async fn refused_now(addr: SocketAddr) -> bool {
        tokio::net::TcpStream::connect(addr).await.is_err()
    }
}
