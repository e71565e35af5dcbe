//! Browser sign-in: the session behind a cookie (with its single-flight refresh), the start of
//! a login (sealed into a login cookie of its own, see [`crate::identity::login`]) and the
//! endpoints under `/_authgate/` (login, callback, logout, signed-out page, session info).
//!
//! It takes the request head and what the gateway knows about it (a [`Visit`]) and answers
//! with a page, a redirect or a refusal; it knows nothing of Pingora's session or the proxy.
//! Sessions live behind the [`SessionStore`] trait. A client signs in through one or more
//! providers ([`SignInProviders`]): the `[idp]` (OpenID Connect, [`Oidc`]) and GitHub's OAuth
//! apps ([`GitHub`]); with several, a chooser page lists them.

use crate::budget::{self, Gate, Gates, Scope};
use crate::clients::{ClientApp, ClientRegistry, UnknownOrigin};
use crate::config::model::SessionStoreSettings;
use crate::config::model::{
    ClientSignIn, Config, ProviderKind, ProviderSettings, SessionSettings, IDP_PROVIDER,
};
use crate::headers::{fetch_site, FetchSite};
use crate::identity::backchannel::{self, LogoutTokenError};
use crate::identity::credentials::{Caller, Credential};
use crate::identity::github::{GitHub, GitHubError, GitHubUser, Pins};
use crate::identity::login::{
    cookie_suffix, is_suffix, LoginKeyError, LoginSealer, LoginState, RefreshLocks,
};
use crate::identity::now_secs;
use crate::identity::oidc::{Oidc, OidcError};
use crate::identity::redis_store::{RedisStore, RedisStoreError};
use crate::identity::session::{
    cookie_pairs, cookie_value, strip_cookies, CookieSpec, Ended, MemoryStore, RefreshLease,
    SessionData, SessionId, SessionStore, SignedInVia, StoreUnavailable, Tokens,
};
use crate::identity::verify::{TokenError, Verifier};
use crate::identity::watch::{self, EndedHere, SessionEnd, Watchers};
use crate::identity::Principal;
use crate::metrics::Metrics;
use crate::origin::Origin;
use crate::redirects;
use crate::responses::{self, Cause, LoginFailure, Refusal, Rendered};
use crate::secret::Secret;
use http::header::{COOKIE, ORIGIN};
use http::StatusCode;
use pingora::http::RequestHeader;
use std::sync::Arc;

/// Where an explicit sign-in starts (`?rd=` the page to return to).
pub const LOGIN_PATH: &str = "/_authgate/login";
const LOGOUT_PATH: &str = "/_authgate/logout";
const SESSION_PATH: &str = "/_authgate/session";
const SIGNED_OUT_PATH: &str = "/_authgate/signed-out";
/// Where an IdP posts back-channel logout tokens: `{BACKCHANNEL_PATH}{client name}`.
pub const BACKCHANNEL_PATH: &str = "/_authgate/backchannel-logout/";
/// Every path under it is the gateway's own.
pub const PREFIX: &str = "/_authgate/";
/// Longest return URL a login cookie carries; longer ones return to the origin's root.
const MAX_RETURN_LEN: usize = 1024;

/// Which pages need a sign-in: a signed-out browser sent there would bounce straight back to
/// the IdP. The route table answers it; sign-in knows no routes.
pub trait ProtectedPages: Sync {
    /// True when `url` is served by a route that needs a sign-in (or cannot be routed safely).
    fn protected(&self, url: &str) -> bool;
}

/// Permissions the config grants a principal beyond its token's (the route table's grants
/// answer it; sign-in knows no grants), for session info.
pub trait ConfigGrants: Sync {
    /// The token's permissions merged with the grants of client `client`, as JSON.
    fn permissions(&self, client: usize, principal: &Principal) -> serde_json::Value;
}

/// The sign-in providers of the config in force, by their index in `Config::providers`
/// (rebuilt on reload: the `[idp]`'s code flow lives in [`Browser`], which a reload keeps).
pub struct SignInProviders {
    list: Vec<(ProviderSettings, Option<GitHub>)>,
}

impl SignInProviders {
    /// The providers of `providers` (GitHub ones get their HTTP client here).
    pub fn from_config(providers: &[ProviderSettings]) -> Result<SignInProviders, GitHubError> {
        let list = providers
            .iter()
            .map(|p| match &p.kind {
                ProviderKind::GitHub(g) => {
                    GitHub::from_config(&p.name, g).map(|gh| (p.clone(), Some(gh)))
                }
                ProviderKind::Oidc => Ok((p.clone(), None)),
            })
            .collect::<Result<_, _>>()?;
        Ok(SignInProviders { list })
    }

    /// The provider at `index`, with its GitHub client when it is one.
    fn at(&self, index: usize) -> Option<&(ProviderSettings, Option<GitHub>)> {
        self.list.get(index)
    }

    /// The GitHub provider named `name`.
    fn github(&self, name: &str) -> Option<&GitHub> {
        self.list
            .iter()
            .find(|(p, _)| p.name == name)
            .and_then(|(_, g)| g.as_ref())
    }
}

/// Why browser sign-in cannot be set up from the config.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// `session.login_key` is unusable.
    #[error("session.login_key {0}")]
    LoginKey(#[from] LoginKeyError),
    /// The Redis session store is unusable.
    #[error("{0}")]
    Store(#[from] RedisStoreError),
    /// A GitHub provider's HTTP client cannot be built.
    #[error("providers: {0}")]
    Provider(#[from] GitHubError),
}

/// Browser sign-in, built once at start and kept across config reloads (sessions and logins in
/// flight survive a reload).
pub struct Browser {
    sessions: Arc<dyn SessionStore>,
    settings: SessionSettings,
    /// The gateway's own cookie names (session and login, with and without `__Host-`), stripped upstream.
    own_cookies: [String; 4],
    /// How the gateway's cookies are written over plain http (index 0) and HTTPS (index 1).
    cookie_specs: [CookieSpec; 2],
    oidc: Oidc,
    /// Seals logins in flight into their cookies.
    login_sealer: LoginSealer,
    refresh_locks: RefreshLocks,
    /// How long one instance may hold a session's refresh before another takes over.
    refresh_lease: std::time::Duration,
    /// Clock skew tolerated in logout tokens' `iat`.
    leeway: u64,
    verifier: Arc<Verifier>,
    /// Sign-in code exchanges (token endpoint calls) per client IP ([`budget::ip_key`]).
    code_exchanges: Gates<u128>,
    /// Sign-in code exchanges, everyone's together.
    code_exchanges_total: Arc<Gate>,
    /// GitHub names of the config pinned to ids (one table for the process: reloads keep it).
    pins: Arc<Pins>,
    /// The open sockets watching their sessions, woken when this instance ends one.
    watchers: Arc<Watchers>,
    metrics: Metrics,
}

/// Most client IPs whose code-exchange bounds are kept at once (an idle one's is forgotten).
const MAX_CODE_EXCHANGE_CALLERS: usize = 65_536;

/// One request as browser sign-in sees it: its head, what the gateway found out about it, and
/// what sign-in adds to the answer.
pub struct Visit<'a> {
    /// The request head.
    pub req: &'a RequestHeader,
    /// The request arrived over HTTPS (directly, or as a trusted proxy says).
    pub https: bool,
    /// The client's address (as `proxy.trusted_proxies` decide), for the code exchanges' bound.
    pub client_ip: Option<std::net::IpAddr>,
    /// The request id, for pages and logs.
    pub request_id: &'a str,
    /// The clients of the config in force.
    pub clients: &'a ClientRegistry,
    /// The pages of the config in force that need a sign-in (a logout never returns to one).
    pub routes: &'a dyn ProtectedPages,
    /// The client the request's origin hints name, with that origin; `Err`: the unknown origin.
    pub hinted: Result<(usize, Origin), UnknownOrigin>,
    /// The sign-in providers of the config in force.
    pub providers: &'a SignInProviders,
    /// The permissions the config in force grants.
    pub grants: &'a dyn ConfigGrants,
    /// `Set-Cookie` values for the answer.
    pub set_cookies: &'a mut Vec<String>,
    /// The client the answer is for, once known.
    pub client: Option<usize>,
    /// Who is signed in, when an endpoint found out.
    pub caller: Option<Caller>,
    /// How the request ended, for metrics.
    pub outcome: &'static str,
}

impl<'a> Visit<'a> {
    /// Client `index` of the registry in force.
    fn client_at(&self, index: usize) -> Result<&'a ClientApp, Refusal> {
        self.clients
            .all()
            .get(index)
            .ok_or_else(|| Refusal::UnknownClient("(a client that is no longer configured)".into()))
    }

    /// The client the request comes from, or a refusal for an unknown origin.
    fn known_client(&mut self) -> Result<(usize, Origin), Refusal> {
        let (index, origin) = self
            .hinted
            .clone()
            .map_err(|UnknownOrigin(origin)| Refusal::UnknownClient(origin))?;
        self.client = Some(index);
        Ok((index, origin))
    }
}

impl Browser {
    /// Browser sign-in for `config`'s IdP and session settings, verifying id_tokens with `verifier`.
    pub fn from_config(
        config: &Config,
        verifier: Arc<Verifier>,
        metrics: Metrics,
    ) -> Result<Browser, BrowserError> {
        let (login_sealer, generated) =
            LoginSealer::from_config(config.session.login_key.as_ref())?;
        if generated {
            tracing::warn!("session.login_key is not set: a login key was generated for this process; several gateway instances (or a restart mid-login) need the same session.login_key to finish each other's logins");
        }
        let base = &config.session.cookie_name;
        let sessions: Arc<dyn SessionStore> = match &config.session.store {
            SessionStoreSettings::Memory => Arc::new(
                MemoryStore::from_config(&config.session)
                    .with_gauge(metrics.sessions_active.with_label_values(&["memory"])),
            ),
            SessionStoreSettings::Redis(redis) => Arc::new(RedisStore::from_config(
                redis,
                config.session.idle_timeout,
                &metrics,
            )?),
        };
        Ok(Browser {
            sessions,
            settings: config.session.clone(),
            own_cookies: [
                base.to_string(),
                format!("{base}-login"),
                format!("__Host-{base}"),
                format!("__Host-{base}-login"),
            ],
            cookie_specs: [CookieSpec::new(base, false), CookieSpec::new(base, true)],
            oidc: Oidc::from_config(&config.idp, verifier.keys().discovery().clone())
                .with_latency(verifier.metrics().idp_latency.clone()),
            login_sealer,
            refresh_locks: RefreshLocks::new(),
            // The IdP call (discovery, then the token endpoint) always ends before the lease does.
            refresh_lease: config.idp.timeout * 3 + std::time::Duration::from_secs(2),
            leeway: config.idp.leeway.as_secs(),
            verifier,
            code_exchanges: Gates::new(
                config.session.code_exchanges.caller.in_flight,
                config.session.code_exchanges.caller.per_second,
                MAX_CODE_EXCHANGE_CALLERS,
            ),
            code_exchanges_total: Arc::new(Gate::new(
                config.session.code_exchanges.total.in_flight,
                config.session.code_exchanges.total.per_second,
            )),
            pins: Arc::new(Pins::default()),
            watchers: Arc::new(Watchers::new()),
            metrics,
        })
    }

    /// The GitHub names pinned to ids (kept across reloads), for the grants.
    pub fn pins(&self) -> Arc<Pins> {
        self.pins.clone()
    }

    /// Watches session `id` (as `seen` when it authorised an upgraded socket) for that socket:
    /// the future completes once the session ended, within `session.socket_recheck`, at once
    /// when this instance ended it, or when `recheck` says (see [`crate::identity::watch`]).
    pub fn watch(
        &self,
        id: SessionId,
        seen: Arc<SessionData>,
        recheck: Option<watch::Recheck>,
    ) -> (
        impl std::future::Future<Output = SessionEnd> + Send + 'static,
        EndedHere,
    ) {
        watch::watch(
            self.sessions.clone(),
            &self.watchers,
            id,
            seen,
            self.settings.socket_recheck,
            recheck,
        )
    }

    /// For the watch of a socket that GitHub session `id` (`data` as just read) authorised at
    /// `client`: the session re-validated against GitHub once `revalidate_interval` has passed,
    /// as a request would do it (one call however many sockets and requests ask). `Some`: the
    /// socket must end (the session ended, or GitHub could not confirm it: fail closed).
    /// Nothing for other sessions.
    pub async fn revalidate_for_socket(
        &self,
        id: &SessionId,
        data: Arc<SessionData>,
        client: &ClientApp,
        providers: &SignInProviders,
    ) -> Option<SessionEnd> {
        data.via.github.as_ref()?;
        match self.github_session(id, data, client, providers).await {
            Ok(Some(_)) => None,
            Ok(None) => Some(SessionEnd::Ended),
            Err(Refusal::StoreUnavailable) => Some(SessionEnd::StoreUnavailable),
            Err(_) => Some(SessionEnd::ProviderUnavailable),
        }
    }

    /// Ends session `id` and wakes the sockets it authorised at this instance.
    async fn end(&self, id: &SessionId) -> Result<(), StoreUnavailable> {
        let ended = self.sessions.remove(id).await;
        self.watchers.wake(id);
        ended
    }

    /// The session store (kept across reloads), for `/readyz`.
    pub fn sessions(&self) -> Arc<dyn SessionStore> {
        self.sessions.clone()
    }

    /// True when the operator allows sign-in over plain http (local development).
    pub fn allows_insecure_http(&self) -> bool {
        self.settings.allow_insecure_http
    }

    /// True when `path` is one of the sign-in endpoints: under `/_authgate/` or a client's callback.
    pub fn owns(&self, path: &str, clients: &ClientRegistry) -> bool {
        path.starts_with(PREFIX) || clients.all().iter().any(|c| c.redirect_path == path)
    }

    /// Answers a sign-in endpoint (see [`Browser::owns`]): a page or redirect, or a refusal.
    pub async fn answer(&self, v: &mut Visit<'_>) -> Result<Rendered, Refusal> {
        let path = v.req.uri.path();
        if v.clients.all().iter().any(|c| c.redirect_path == path) {
            v.outcome = "login_callback";
            return self.callback(v).await;
        }
        match path {
            LOGIN_PATH => {
                v.outcome = "login_start";
                self.login(v).await
            }
            LOGOUT_PATH => {
                v.outcome = "logout";
                self.logout(v).await
            }
            SESSION_PATH => {
                v.outcome = "session_info";
                self.session_info(v).await
            }
            SIGNED_OUT_PATH => {
                v.outcome = "signed_out";
                self.signed_out(v)
            }
            _ => Err(Refusal::NoRoute),
        }
    }

    fn cookies(&self, https: bool) -> &CookieSpec {
        let [plain, secure] = &self.cookie_specs;
        if https {
            secure
        } else {
            plain
        }
    }

    fn cookie<'a>(&self, req: &'a RequestHeader, name: &str) -> Option<&'a str> {
        cookie_value(
            req.headers.get_all(&COOKIE).iter().map(|v| v.as_bytes()),
            name,
        )
    }

    /// The caller's cookies without the gateway's own, as one `Cookie` value (`None`: none left).
    /// Own cookies are the session cookie and every `{session}-…` (logins in flight, the
    /// signed-out marker), with and without `__Host-`.
    pub fn kept_cookies(&self, values: &[http::HeaderValue]) -> Option<http::HeaderValue> {
        let values: Vec<&str> = values.iter().filter_map(|v| v.to_str().ok()).collect();
        let names = self.own_cookies.each_ref().map(String::as_str);
        strip_cookies(&values.join("; "), &names)
            .and_then(|kept| http::HeaderValue::try_from(kept).ok())
    }

    /// The caller behind the request's session cookie, its tokens refreshed when due.
    /// `Ok(None)`: no usable session (a stale cookie is cleared). The caller's credential is the
    /// session, whose access token live checks present to the IdP; with it the session's id
    /// (an upgraded socket's watch reads the session again by it).
    pub async fn session_caller(
        &self,
        v: &mut Visit<'_>,
        client_index: usize,
    ) -> Result<Option<(Caller, SessionId)>, Refusal> {
        let req = v.req;
        let spec = self.cookies(v.https);
        let Some(raw) = self.cookie(req, &spec.session) else {
            return Ok(None);
        };
        let Some(id) = SessionId::parse(raw) else {
            v.set_cookies.push(spec.clear(&spec.session));
            return Ok(None);
        };
        match self
            .live_session(&id, v.client_at(client_index)?, v.providers)
            .await?
        {
            Some((data, principal)) => Ok(Some((
                Caller {
                    principal,
                    credential: Credential::Session(data),
                },
                id,
            ))),
            None => {
                v.set_cookies.push(spec.clear(&spec.session));
                Ok(None)
            }
        }
    }

    async fn live_session(
        &self,
        id: &SessionId,
        client: &ClientApp,
        providers: &SignInProviders,
    ) -> Result<Option<(Arc<SessionData>, Arc<Principal>)>, Refusal> {
        let Some(mut data) = self.sessions.get(id).await? else {
            return Ok(None);
        };
        if data.client != client.name {
            return Err(Refusal::WrongClient(
                format!(
                    "this session belongs to another client application than {}",
                    client.name
                )
                .into(),
            ));
        }
        // The client must still sign in with the session's provider (a reload may have removed it).
        if !client.sign_in.iter().any(|s| s.name == data.via.provider()) {
            tracing::info!(client = %client.name, provider = data.via.provider(), "session ended: its client no longer signs in with its provider");
            self.end(id).await?;
            return Ok(None);
        }
        if data.via.github.is_some() {
            return self.github_session(id, data, client, providers).await;
        }
        let now = now_secs();
        if data.tokens.access_expires_at <= now + self.settings.refresh_before.as_secs() {
            match &data.tokens.refresh_token {
                Some(_) => match self.refresh(id, data.clone(), client).await? {
                    Some(fresh) => data = fresh,
                    None => return Ok(None),
                },
                None if data.tokens.access_expires_at <= now => {
                    self.end(id).await?;
                    return Ok(None);
                }
                None => {}
            }
        }
        let access = data.tokens.access_token.expose();
        if let Some(p) = self.verifier.cached(access) {
            return Ok(Some((data, p)));
        }
        if looks_like_jwt(access) {
            match self.verifier.verify(access).await {
                Ok(p) => return Ok(Some((data, p))),
                Err(e @ TokenError::KeysUnavailable) => {
                    return Err(Refusal::IdpUnavailable(Cause::of(e)))
                }
                Err(_) => {} // not a token for this API: the id_token tells who it is
            }
        }
        match self
            .verifier
            .session_identity(
                data.tokens.id_token.expose(),
                &client.client_id,
                data.tokens.access_expires_at,
            )
            .await
        {
            Ok(p) => Ok(Some((data, p))),
            Err(e @ TokenError::KeysUnavailable) => Err(Refusal::IdpUnavailable(Cause::of(e))),
            Err(e) => {
                tracing::info!(client = %client.name, reason = %e, "session ended: its id_token no longer verifies");
                self.end(id).await?;
                Ok(None)
            }
        }
    }

    /// A GitHub session: confirmed again against the API once `revalidate_interval` has passed
    /// (one call however many requests ask), its principal built from what the API told.
    async fn github_session(
        &self,
        id: &SessionId,
        mut data: Arc<SessionData>,
        client: &ClientApp,
        providers: &SignInProviders,
    ) -> Result<Option<(Arc<SessionData>, Arc<Principal>)>, Refusal> {
        let Some(gh) = providers.github(data.via.provider()) else {
            self.end(id).await?;
            return Ok(None);
        };
        // A session stored before ids were kept (its user's id 0) matches no rule by id:
        // re-validated at once, which reads the ids.
        let without_ids = data.via.github.as_ref().is_none_or(|g| g.id == 0);
        if without_ids
            || now_secs()
                >= data
                    .via
                    .validated_at
                    .saturating_add(gh.revalidate_interval.as_secs())
        {
            match self.revalidate(id, data, client, gh).await? {
                Some(fresh) => data = fresh,
                None => return Ok(None),
            }
        }
        let principal = github_principal(&data);
        Ok(Some((data, principal)))
    }

    /// Asks GitHub again who the session's token belongs to and whether the client's rules
    /// still admit them. A revoked token, a changed user or a user the rules no longer admit
    /// ends the session; GitHub unavailable refuses the request (fail closed) and keeps it.
    async fn revalidate(
        &self,
        id: &SessionId,
        seen: Arc<SessionData>,
        client: &ClientApp,
        gh: &GitHub,
    ) -> Result<Option<Arc<SessionData>>, Refusal> {
        let lock = self.refresh_locks.get(id.digest());
        let _only_one = lock.lock().await;
        let Some(current) = self.sessions.get(id).await? else {
            return Ok(None);
        };
        if current.generation != seen.generation {
            return Ok(Some(current));
        }
        let count = |result: &str| {
            self.metrics
                .github_revalidations
                .with_label_values(&[gh.name(), result])
                .inc()
        };
        let ended = |why: String| {
            count("ended");
            tracing::info!(client = %client.name, subject = %current.subject, provider = gh.name(), reason = %why, "session ended at re-validation");
        };
        match gh
            .user(&current.tokens.access_token, client.needs_orgs())
            .await
        {
            Ok(user) if user.id.to_string() != current.subject => {
                ended("the token now belongs to another user".into());
                self.end(id).await?;
                Ok(None)
            }
            Ok(user) if !user.admitted_by(&client.allowed, &self.pins) => {
                ended(format!(
                    "{} is no longer allowed to sign in",
                    user.identity.login
                ));
                self.end(id).await?;
                Ok(None)
            }
            Ok(user) => {
                count("confirmed");
                let mut fresh = (*current).clone();
                fresh.email = user.email;
                fresh.name = user.name;
                fresh.via.github = Some(user.identity);
                fresh.via.validated_at = now_secs();
                fresh.generation = current.generation.wrapping_add(1);
                let fresh = Arc::new(fresh);
                if !self
                    .sessions
                    .replace(id, current.generation, fresh.clone())
                    .await?
                {
                    return Ok(self.sessions.get(id).await?);
                }
                Ok(Some(fresh))
            }
            Err(e) if e.is_unavailable() => {
                count("unavailable");
                Err(Refusal::IdpUnavailable(Cause::of(e)))
            }
            Err(e) => {
                ended(e.to_string());
                self.end(id).await?;
                Ok(None)
            }
        }
    }

    /// Refreshes a session's tokens once, however many requests ask at the same time, at
    /// however many instances: in this process the first does it and the others wait for it;
    /// across instances the one holding the store's lease does it, the others poll until the
    /// session's generation moves and use its result. The new tokens are written only over the
    /// generation read here (the fencing check), so a logout during the call to the IdP stays a
    /// logout and a slow refresher cannot overwrite a newer refresh. A refused refresh ends the
    /// session (unless another refresh won meanwhile).
    async fn refresh(
        &self,
        id: &SessionId,
        seen: Arc<SessionData>,
        client: &ClientApp,
    ) -> Result<Option<Arc<SessionData>>, Refusal> {
        let lock = self.refresh_locks.get(id.digest());
        let _only_one = lock.lock().await;
        let deadline = std::time::Instant::now() + self.refresh_lease;
        let mut waited = false;
        let lease = loop {
            let Some(current) = self.sessions.get(id).await? else {
                return Ok(None);
            };
            if current.generation != seen.generation {
                self.count_refresh(if waited { "waited" } else { "reused" });
                return Ok(Some(current));
            }
            match self.sessions.lease_refresh(id, self.refresh_lease).await? {
                RefreshLease::Held(lease) => break lease,
                RefreshLease::Busy if std::time::Instant::now() < deadline => {
                    waited = true;
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                RefreshLease::Busy if current.tokens.access_expires_at > now_secs() => {
                    return Ok(Some(current))
                }
                RefreshLease::Busy => {
                    return Err(Refusal::IdpUnavailable(
                        "another gateway instance is still refreshing this session".into(),
                    ))
                }
            }
        };
        let result = self.refresh_holding_lease(id, &seen, client).await;
        self.sessions.release_refresh(id, &lease).await;
        result
    }

    /// The refresh itself, by the holder of the session's refresh lease.
    async fn refresh_holding_lease(
        &self,
        id: &SessionId,
        seen: &SessionData,
        client: &ClientApp,
    ) -> Result<Option<Arc<SessionData>>, Refusal> {
        // Read again under the lease: another instance may have finished just before.
        let Some(current) = self.sessions.get(id).await? else {
            return Ok(None);
        };
        if current.generation != seen.generation {
            self.count_refresh("waited");
            return Ok(Some(current));
        }
        let Some(refresh_token) = current.tokens.refresh_token.clone() else {
            return Ok(Some(current));
        };
        let still_valid = current.tokens.access_expires_at > now_secs();
        let provider = match self.oidc.provider().await {
            Ok(p) => p,
            Err(_) if still_valid => return Ok(Some(current)),
            Err(e) => {
                self.count_refresh("unavailable");
                return Err(Refusal::IdpUnavailable(Cause::of(e)));
            }
        };
        match self
            .oidc
            .refresh(&provider, client, refresh_token.expose())
            .await
        {
            Ok(set) => {
                let mut fresh = (*current).clone();
                fresh.tokens = Tokens {
                    access_expires_at: now_secs() + set.expires_in.map_or(300, |d| d.as_secs()),
                    access_token: Secret::new(set.access_token),
                    id_token: set
                        .id_token
                        .map(Secret::new)
                        .unwrap_or(current.tokens.id_token.clone()),
                    refresh_token: set.refresh_token.map(Secret::new).or(Some(refresh_token)),
                };
                fresh.generation = current.generation.wrapping_add(1);
                let fresh = Arc::new(fresh);
                if !self
                    .sessions
                    .replace(id, current.generation, fresh.clone())
                    .await?
                {
                    // Ended (a logout) or changed while the IdP answered: what is stored now wins.
                    tracing::info!(client = %client.name, subject = %current.subject, "refreshed tokens dropped: the session ended or changed meanwhile");
                    self.count_refresh("superseded");
                    return Ok(self.sessions.get(id).await?);
                }
                tracing::info!(client = %client.name, subject = %fresh.subject, "session tokens refreshed");
                self.count_refresh("refreshed");
                Ok(Some(fresh))
            }
            Err(e @ (OidcError::Refused(_) | OidcError::BadResponse(_))) => {
                let why = e.to_string();
                tracing::info!(client = %client.name, subject = %current.subject, reason = %why, "refresh refused: session ended");
                self.count_refresh("refused");
                if self.sessions.remove_if(id, current.generation).await? {
                    self.watchers.wake(id);
                    return Ok(None);
                }
                // Another instance refreshed it meanwhile: its tokens stand.
                Ok(self.sessions.get(id).await?)
            }
            Err(_) if still_valid => Ok(Some(current)),
            Err(e) => {
                self.count_refresh("unavailable");
                Err(Refusal::IdpUnavailable(Cause::of(e)))
            }
        }
    }

    fn count_refresh(&self, result: &str) {
        self.metrics
            .session_refreshes
            .with_label_values(&[result])
            .inc();
    }

    /// Starts a login for `client_index` from `origin`: seals what the callback needs into a
    /// login cookie of its own and returns the IdP's URL. At most `max_pending_logins` login
    /// cookies are kept per browser: beyond that the oldest are cleared. After a logout (the
    /// signed-out marker) the IdP is asked to authenticate again (`prompt=login`, `max_age=0`).
    pub async fn start_login(
        &self,
        v: &mut Visit<'_>,
        client_index: usize,
        origin: &Origin,
        return_to: String,
    ) -> Result<String, Refusal> {
        let client = v.client_at(client_index)?;
        match client.sign_in.as_slice() {
            [one] => self.start_with(v, client, one, origin, return_to).await,
            // Several providers: the chooser page lists them.
            _ => Ok(format!("{origin}{LOGIN_PATH}?rd={}", encode(&return_to))),
        }
    }

    /// Starts a login for `client` through `sign_in`'s provider (see [`Browser::start_login`]).
    async fn start_with(
        &self,
        v: &mut Visit<'_>,
        client: &ClientApp,
        sign_in: &ClientSignIn,
        origin: &Origin,
        return_to: String,
    ) -> Result<String, Refusal> {
        let req = v.req;
        if !v.https && !self.settings.allow_insecure_http {
            return Err(Refusal::LoginFailed {
                kind: LoginFailure::NeedsHttps,
                reason: "browser sign-in needs HTTPS: serve the gateway over HTTPS (or set session.allow_insecure_http for local development)".into(),
                retry: None,
            });
        }
        let spec = self.cookies(v.https);
        let redirect_uri = format!("{origin}{}", client.redirect_path);
        let (url, state, nonce, pkce_verifier, provider) = match v.providers.at(sign_in.provider) {
            Some((_, Some(gh))) => {
                let auth = gh.authorize(sign_in, &redirect_uri);
                (
                    auth.url,
                    auth.state,
                    String::new(),
                    auth.pkce_verifier,
                    gh.name().to_string(),
                )
            }
            Some((p, None)) if p.name == IDP_PROVIDER => {
                let provider = self
                    .oidc
                    .provider()
                    .await
                    .map_err(|e| Refusal::IdpUnavailable(Cause::of(e)))?;
                let reauthenticate = self.cookie(req, &spec.signed_out).is_some();
                let auth = self
                    .oidc
                    .authorize(&provider, client, &redirect_uri, reauthenticate)
                    .map_err(|e| Refusal::LoginFailed {
                        kind: LoginFailure::OidcError,
                        reason: Cause::of(e),
                        retry: None,
                    })?;
                (
                    auth.url,
                    auth.state,
                    auth.nonce,
                    auth.pkce_verifier,
                    String::new(),
                )
            }
            _ => {
                return Err(Refusal::LoginFailed {
                    kind: LoginFailure::UnknownProvider,
                    reason: format!("the sign-in provider {:?} is not configured", sign_in.name)
                        .into(),
                    retry: None,
                })
            }
        };
        let return_to = if return_to.len() <= MAX_RETURN_LEN {
            return_to
        } else {
            format!("{origin}/")
        };
        let now = now_secs();
        let login = LoginState {
            state,
            nonce,
            pkce_verifier,
            return_to,
            redirect_uri,
            origin: origin.to_string(),
            client: client.name.clone(),
            provider,
            issued_at: now,
        };
        let name = spec.login_cookie(&cookie_suffix(&login.state));
        let sealed = self
            .login_sealer
            .seal(&name, &login)
            .ok_or_else(|| Refusal::LoginFailed {
                kind: LoginFailure::NotStarted,
                reason: "the sign-in could not be started; try again".into(),
                retry: None,
            })?;
        // The browser's other logins in flight: unreadable or expired ones are cleared, and the
        // oldest beyond the cap, so that this one fits.
        let timeout = self.settings.login_timeout.as_secs();
        let mut live: Vec<(u64, &str)> = Vec::new();
        for (cookie, value) in
            cookie_pairs(req.headers.get_all(&COOKIE).iter().map(|v| v.as_bytes()))
        {
            if !spec.login_suffix(cookie).is_some_and(is_suffix) || cookie == name {
                continue;
            }
            match self
                .login_sealer
                .open(cookie, value)
                .filter(|l| l.fresh(now, timeout))
            {
                Some(l) => live.push((l.issued_at, cookie)),
                None => v.set_cookies.push(spec.clear(cookie)),
            }
        }
        live.sort_unstable();
        let keep = self.settings.max_pending_logins.saturating_sub(1);
        let drop = live.len().saturating_sub(keep);
        for (_, cookie) in live.iter().take(drop) {
            v.set_cookies.push(spec.clear(cookie));
        }
        v.set_cookies
            .push(spec.set(&name, &sealed, Some(self.settings.login_timeout)));
        Ok(url.to_string())
    }

    /// `/_authgate/login?rd=/path[&provider=NAME]`: starts a login explicitly (an SPA's "Sign
    /// in" button) through the named provider, or the client's only one; a client with several
    /// gets the chooser page.
    async fn login(&self, v: &mut Visit<'_>) -> Result<Rendered, Refusal> {
        let req = v.req;
        let (index, origin) = v.known_client()?;
        let client = v.client_at(index)?;
        let return_to = query_param(req, "rd")
            .and_then(|rd| redirects::validate(&rd, &origin, v.clients, index))
            .unwrap_or_else(|| format!("{origin}/"));
        let chosen = match query_param(req, "provider") {
            Some(name) => Some(client.sign_in.iter().find(|s| s.name == name).ok_or_else(
                || {
                    Refusal::LoginFailed {
                        kind: LoginFailure::UnknownProvider,
                        reason: format!(
                            "{} does not sign in with {:?}",
                            client.branding.display_name,
                            tame(&name)
                        )
                        .into(),
                        retry: Some(format!("{LOGIN_PATH}?rd={}", encode(&return_to))),
                    }
                },
            )?),
            None => match client.sign_in.as_slice() {
                [one] => Some(one),
                _ => None,
            },
        };
        match chosen {
            Some(sign_in) => {
                let location = self
                    .start_with(v, client, sign_in, &origin, return_to)
                    .await?;
                Ok(responses::redirect(&location, v.request_id))
            }
            None => {
                v.outcome = "login_chooser";
                let options: Vec<(String, String)> = client
                    .sign_in
                    .iter()
                    .filter_map(|s| {
                        let (p, _) = v.providers.at(s.provider)?;
                        Some((
                            p.display_name.clone(),
                            format!(
                                "{LOGIN_PATH}?provider={}&rd={}",
                                encode(&s.name),
                                encode(&return_to)
                            ),
                        ))
                    })
                    .collect();
                Ok(responses::chooser(&client.branding, &options, v.request_id))
            }
        }
    }

    /// The IdP sends the browser back here with `code` and `state` (or an `error`). The login is
    /// the browser's cookie named after `state` whose sealed state equals it (compared in
    /// constant time); that cookie is cleared whatever happens, so a state works once, and only
    /// within `login_timeout`. The client is looked up by name in the config in force: a client
    /// removed since the login started, or no longer owning the login's origin, fails closed.
    async fn callback(&self, v: &mut Visit<'_>) -> Result<Rendered, Refusal> {
        let req = v.req;
        let fail = |kind: LoginFailure, reason: &str, retry: Option<String>| Refusal::LoginFailed {
            kind,
            reason: reason.into(),
            retry,
        };
        let start_over = || Some(LOGIN_PATH.to_string());
        let state = query_param(req, "state").ok_or_else(|| {
            fail(
                LoginFailure::BadResponse,
                "the sign-in response has no state",
                start_over(),
            )
        })?;
        let spec = self.cookies(v.https);
        let name = spec.login_cookie(&cookie_suffix(&state));
        let sealed = self.cookie(req, &name);
        if sealed.is_some() {
            v.set_cookies.push(spec.clear(&name));
        }
        let gone = || {
            fail(LoginFailure::ExpiredOrReplayed, "this sign-in expired or was already used, or it was started in another browser (or its cookie was blocked)", start_over())
        };
        let login = sealed
            .and_then(|v| self.login_sealer.open(&name, v))
            .filter(|l| l.has_state(&state))
            .ok_or_else(gone)?;
        if !login.fresh(now_secs(), self.settings.login_timeout.as_secs()) {
            return Err(gone());
        }
        let origin = Origin::parse(&login.origin).ok();
        let found = v
            .clients
            .all()
            .iter()
            .position(|c| c.name == login.client)
            .zip(origin);
        let Some((index, origin)) = found.filter(|(i, o)| v.clients.belongs(*i, o)) else {
            tracing::info!(request_id = %v.request_id, client = %login.client, "sign-in refused: its client is no longer configured for its origin");
            return Err(fail(
                LoginFailure::ClientRemoved,
                "the application this sign-in was for is no longer configured here",
                start_over(),
            ));
        };
        let client = v.client_at(index)?;
        v.client = Some(index);
        let return_to = redirects::validate(&login.return_to, &origin, v.clients, index)
            .unwrap_or_else(|| format!("{origin}/"));
        let restart = Some(match login.provider.as_str() {
            "" => format!("{LOGIN_PATH}?rd={}", encode(&return_to)),
            provider => format!(
                "{LOGIN_PATH}?provider={}&rd={}",
                encode(provider),
                encode(&return_to)
            ),
        });
        if let Some(error) = query_param(req, "error") {
            let detail = query_param(req, "error_description")
                .map(|d| format!(" ({})", tame(&d)))
                .unwrap_or_default();
            return Err(Refusal::LoginFailed {
                kind: LoginFailure::IdpError,
                reason: format!("the identity provider answered {}{detail}", tame(&error)).into(),
                retry: restart,
            });
        }
        let provider = if login.provider.is_empty() {
            IDP_PROVIDER
        } else {
            login.provider.as_str()
        };
        let Some(sign_in) = client.sign_in.iter().find(|s| s.name == provider) else {
            return Err(fail(
                LoginFailure::ProviderRemoved,
                &format!(
                    "{} no longer signs in with {provider}",
                    client.branding.display_name
                ),
                start_over(),
            ));
        };
        let code = query_param(req, "code").ok_or_else(|| {
            fail(
                LoginFailure::BadResponse,
                "the sign-in response has no code",
                restart.clone(),
            )
        })?;
        // Only a callback with its sealed login gets here; the token endpoint calls it can cause
        // are still bounded, per client IP and in total (a sealed login can be replayed with
        // made-up codes until it expires).
        let _permits = budget::admit_both(
            &self.code_exchanges,
            &budget::ip_key(v.client_ip),
            &self.code_exchanges_total,
        )
        .map_err(|(limited, scope)| {
            self.metrics
                .load_refusals
                .with_label_values(&[
                    match scope {
                        Scope::Caller => "code_exchange_caller",
                        Scope::Total => "code_exchange_total",
                    },
                    limited.as_label(),
                ])
                .inc();
            Refusal::TooManyRequests {
                retry_after: limited.retry_after(),
                reason: match scope {
                    Scope::Caller => "too many sign-ins are being completed from this address",
                    Scope::Total => "too many sign-ins are being completed at once",
                }
                .into(),
            }
        })?;
        let data = match v.providers.github(provider) {
            Some(gh) => {
                self.github_sign_in(gh, client, sign_in, &login, &code, &origin, restart)
                    .await?
            }
            None => {
                self.oidc_sign_in(req, client, &login, &code, &origin, restart)
                    .await?
            }
        };
        let subject = data.subject.clone();
        // A new id for every login; the browser's previous session ends.
        if let Some(old) = self.cookie(req, &spec.session).and_then(SessionId::parse) {
            self.end(&old).await?;
        }
        let id = SessionId::generate();
        self.sessions.put(&id, Arc::new(data)).await?;
        tracing::info!(request_id = %v.request_id, client = %client.name, subject = %subject, provider, "signed in");
        v.set_cookies
            .push(spec.set(&spec.session, id.expose(), Some(self.settings.lifetime)));
        if self.cookie(req, &spec.signed_out).is_some() {
            v.set_cookies.push(spec.clear(&spec.signed_out));
        }
        Ok(responses::redirect(&return_to, v.request_id))
    }

    /// The end of an OIDC login: the `iss` of the response, the code exchanged, the id_token verified.
    async fn oidc_sign_in(
        &self,
        req: &RequestHeader,
        client: &ClientApp,
        login: &LoginState,
        code: &str,
        origin: &Origin,
        restart: Option<String>,
    ) -> Result<SessionData, Refusal> {
        let fail = |kind: LoginFailure, reason: Cause| Refusal::LoginFailed {
            kind,
            reason,
            retry: restart.clone(),
        };
        if let Some(iss) = query_param(req, "iss") {
            if iss.trim_end_matches('/') != self.oidc.issuer().trim_end_matches('/') {
                return Err(fail(
                    LoginFailure::WrongIssuer,
                    "the sign-in response comes from another issuer".into(),
                ));
            }
        }
        let provider = self
            .oidc
            .provider()
            .await
            .map_err(|e| Refusal::IdpUnavailable(Cause::of(e)))?;
        let tokens = self
            .oidc
            .exchange_code(
                &provider,
                client,
                code,
                &login.pkce_verifier,
                &login.redirect_uri,
            )
            .await
            .map_err(|e| fail(LoginFailure::OidcError, Cause::of(e)))?;
        let id_token = tokens.id_token.unwrap_or_default();
        let principal = self
            .verifier
            .verify_id_token(&id_token, &client.client_id, &login.nonce)
            .await
            .map_err(|e| {
                fail(
                    LoginFailure::IdTokenRefused,
                    format!("the id_token was refused: {e}").into(),
                )
            })?;
        // The IdP's session at this client, for back-channel logout (the id_token is verified).
        let sid = verified_claim(&id_token, "sid");
        let now = now_secs();
        Ok(SessionData {
            client: client.name.clone(),
            origin: origin.to_string(),
            subject: principal.subject.clone(),
            email: principal.email.clone(),
            name: principal.name.clone(),
            tokens: Tokens {
                access_token: Secret::new(tokens.access_token),
                id_token: Secret::new(id_token),
                refresh_token: tokens.refresh_token.map(Secret::new),
                access_expires_at: now + tokens.expires_in.map_or(300, |d| d.as_secs()),
            },
            created_at: now,
            expires_at: now + self.settings.lifetime.as_secs(),
            generation: 0,
            sid,
            via: SignedInVia::default(),
        })
    }

    /// The end of a GitHub login: the code exchanged with the client's own OAuth app, the user
    /// read from the API, the client's allow rules applied. The token stays in the session.
    #[allow(clippy::too_many_arguments)]
    async fn github_sign_in(
        &self,
        gh: &GitHub,
        client: &ClientApp,
        sign_in: &ClientSignIn,
        login: &LoginState,
        code: &str,
        origin: &Origin,
        restart: Option<String>,
    ) -> Result<SessionData, Refusal> {
        let refused = |e: GitHubError| {
            if e.is_unavailable() {
                Refusal::IdpUnavailable(Cause::of(e))
            } else {
                Refusal::LoginFailed {
                    kind: LoginFailure::GitHubRefused,
                    reason: Cause::of(e),
                    retry: restart.clone(),
                }
            }
        };
        let needs_orgs = client.needs_orgs();
        let token = gh
            .exchange_code(
                sign_in,
                code,
                &login.pkce_verifier,
                &login.redirect_uri,
                needs_orgs,
            )
            .await
            .map_err(refused)?;
        let user: GitHubUser = gh.user(&token, needs_orgs).await.map_err(refused)?;
        if !user.admitted_by(&client.allowed, &self.pins) {
            tracing::info!(client = %client.name, login = %user.identity.login, provider = gh.name(), "sign-in refused: not allowed by the client's rules");
            return Err(Refusal::NotAllowed(format!(
                "the GitHub account {} is not allowed to sign in to {}: ask its administrators for access (membership of an organisation or team must be visible to the application)",
                user.identity.login, client.branding.display_name
            )
            .into()));
        }
        let now = now_secs();
        let expires_at = now + self.settings.lifetime.as_secs();
        Ok(SessionData {
            client: client.name.clone(),
            origin: origin.to_string(),
            subject: user.id.to_string(),
            email: user.email,
            name: user.name,
            // GitHub's token does not expire with the session's clock: the re-validation decides.
            tokens: Tokens {
                access_token: token,
                id_token: Secret::default(),
                refresh_token: None,
                access_expires_at: expires_at,
            },
            created_at: now,
            expires_at,
            generation: 0,
            sid: None,
            via: SignedInVia {
                provider: gh.name().to_string(),
                github: Some(user.identity),
                validated_at: now,
            },
        })
    }

    /// `/_authgate/logout?rd=/path`: signs the browser out, only when asked from the client's
    /// own pages (see [`Gateway::same_origin_logout`]); otherwise a page with a sign-out button
    /// answers and nothing changes. The session behind the cookie ends whichever client it
    /// belongs to; a signed-out marker makes the next login ask the IdP to authenticate again.
    /// Then to the IdP's `end_session_endpoint` when it has one, coming back to the target:
    /// `rd` or `post_logout_redirect` unless they are protected, else the signed-out page.
    async fn logout(&self, v: &mut Visit<'_>) -> Result<Rendered, Refusal> {
        let req = v.req;
        if req.method != http::Method::GET && req.method != http::Method::POST {
            return Err(Refusal::MethodNotAllowed(vec![
                http::Method::GET,
                http::Method::POST,
            ]));
        }
        let (index, origin) = v.known_client()?;
        let client = v.client_at(index)?;
        let rd = query_param(req, "rd")
            .and_then(|rd| redirects::validate(&rd, &origin, v.clients, index));
        if !same_origin_logout(req, v.clients, index) {
            v.outcome = "logout_refused";
            let action = match &rd {
                Some(rd) => format!("{LOGOUT_PATH}?rd={}", encode(rd)),
                None => LOGOUT_PATH.to_string(),
            };
            return Ok(responses::confirm_logout(
                &client.branding,
                &action,
                v.request_id,
            ));
        }
        let spec = self.cookies(v.https);
        let mut id_token = None;
        if let Some(id) = self.cookie(req, &spec.session).and_then(SessionId::parse) {
            if let Some(data) = self.sessions.get(&id).await? {
                // The IdP's logout names the client the id_token was issued to.
                if data.client == client.name && data.via.provider() == IDP_PROVIDER {
                    id_token = Some(data.tokens.id_token.clone());
                }
                tracing::info!(request_id = %v.request_id, client = %data.client, subject = %data.subject, "signed out");
                self.metrics.logouts.with_label_values(&["user"]).inc();
            }
            self.end(&id).await?;
        }
        v.set_cookies.push(spec.clear(&spec.session));
        v.set_cookies
            .push(spec.set(&spec.signed_out, "1", Some(self.settings.lifetime)));
        let target = rd
            .or_else(|| {
                redirects::validate(&client.post_logout_redirect, &origin, v.clients, index)
            })
            .filter(|t| !v.routes.protected(t))
            .unwrap_or_else(|| format!("{origin}{SIGNED_OUT_PATH}"));
        let end_session = match (&id_token, self.oidc.provider().await) {
            (Some(_), Ok(p)) => p.end_session_endpoint.clone(),
            _ => None,
        };
        let location = match (end_session, id_token) {
            (Some(mut url), Some(hint)) => {
                url.query_pairs_mut()
                    .append_pair("id_token_hint", hint.expose())
                    .append_pair("post_logout_redirect_uri", &target)
                    .append_pair("client_id", &client.client_id);
                url.to_string()
            }
            _ => target,
        };
        Ok(responses::redirect(&location, v.request_id))
    }

    /// `GET /_authgate/signed-out?rd=/path`: where a logout ends: the client's name, a "sign
    /// in again" link (back to `rd`) and, with `logout_url`, the way to the IdP's own sign-out.
    fn signed_out(&self, v: &mut Visit<'_>) -> Result<Rendered, Refusal> {
        let req = v.req;
        let (index, origin) = v.known_client()?;
        let client = v.client_at(index)?;
        let sign_in = match query_param(req, "rd")
            .and_then(|rd| redirects::validate(&rd, &origin, v.clients, index))
        {
            Some(rd) => format!("{LOGIN_PATH}?rd={}", encode(&rd)),
            None => LOGIN_PATH.to_string(),
        };
        let idp = client
            .logout_url
            .as_ref()
            .map(|u| (u.as_str(), client.logout_post));
        Ok(responses::signed_out(
            &client.branding,
            &sign_in,
            idp,
            v.request_id,
        ))
    }

    /// `POST /_authgate/backchannel-logout/{client}` with `logout_token` (OpenID Connect
    /// Back-Channel Logout 1.0): verifies the token for that client (see
    /// [`crate::identity::backchannel`]), refuses a `jti` seen before at any instance, and ends
    /// the client's sessions with the token's `sid` — or, without one, every session of its
    /// `sub`. 200 (`Cache-Control: no-store`) when done, 400 with an error body when refused,
    /// 503 when the session store is unreachable. `client` is the path's last segment.
    pub async fn backchannel_logout(
        &self,
        client: &str,
        clients: &ClientRegistry,
        body: &[u8],
        request_id: &str,
    ) -> Result<Rendered, Refusal> {
        let refused = |e: LogoutTokenError| {
            self.metrics
                .backchannel_refusals
                .with_label_values(&[e.label()])
                .inc();
            tracing::info!(request_id = %request_id, reason = %e, "back-channel logout refused");
            let body =
                serde_json::json!({"error": "invalid_request", "error_description": e.to_string()});
            Ok(responses::json(StatusCode::BAD_REQUEST, &body, request_id))
        };
        let name = percent_encoding::percent_decode_str(client).decode_utf8_lossy();
        let Some(client) = clients.all().iter().find(|c| c.name == name) else {
            let body = serde_json::json!({"error": "invalid_request", "error_description": "no client application of this gateway has this back-channel logout URL"});
            return Ok(responses::json(StatusCode::BAD_REQUEST, &body, request_id));
        };
        let token = match backchannel::token_from_form(body) {
            Ok(t) => t,
            Err(e) => return refused(e),
        };
        let (typ, claims) = match self
            .verifier
            .verify_logout_token(&token, &client.client_id)
            .await
        {
            Ok(verified) => verified,
            Err(e @ TokenError::KeysUnavailable) => {
                return Err(Refusal::IdpUnavailable(Cause::of(e)))
            }
            Err(e) => return refused(LogoutTokenError::Token(e)),
        };
        let logout = match backchannel::check(typ.as_deref(), &claims, now_secs(), self.leeway) {
            Ok(l) => l,
            Err(e) => return refused(e),
        };
        // Remembered past the oldest `iat` still accepted: a replay after that is stale anyway.
        let remember =
            std::time::Duration::from_secs(backchannel::MAX_AGE_SECS + 2 * self.leeway + 60);
        let replay_key = format!("backchannel\n{}\n{}", client.client_id, logout.jti);
        if !self.sessions.first_sight(&replay_key, remember).await? {
            return refused(LogoutTokenError::Replayed);
        }
        let ended = match (&logout.sid, &logout.subject) {
            (Some(sid), _) => {
                self.sessions
                    .end_matching(&client.name, Ended::Sid(sid))
                    .await?
            }
            (None, Some(sub)) => {
                self.sessions
                    .end_matching(&client.name, Ended::Subject(sub))
                    .await?
            }
            (None, None) => 0,
        };
        match (&logout.sid, &logout.subject) {
            (Some(sid), _) => self.watchers.wake_matching(&client.name, Ended::Sid(sid)),
            (None, Some(sub)) => self
                .watchers
                .wake_matching(&client.name, Ended::Subject(sub)),
            (None, None) => {}
        }
        self.metrics
            .logouts
            .with_label_values(&["backchannel"])
            .inc();
        tracing::info!(request_id = %request_id, client = %client.name, subject = logout.subject.as_deref().unwrap_or("-"), by_sid = logout.sid.is_some(), sessions = ended, "back-channel logout: sessions ended");
        let mut header = responses::head(StatusCode::OK, 4);
        let _ = header.insert_header("cache-control", "no-store");
        let _ = header.insert_header("content-length", "0");
        responses::stamp_request_id(&mut header, request_id);
        Ok(Rendered {
            header,
            body: bytes::Bytes::new(),
        })
    }

    /// `GET /_authgate/session`: who is signed in, for an SPA's user menu; 401 otherwise.
    async fn session_info(&self, v: &mut Visit<'_>) -> Result<Rendered, Refusal> {
        let req = v.req;
        let (index, _) = v.known_client()?;
        let spec = self.cookies(v.https);
        let Some(id) = self.cookie(req, &spec.session).and_then(SessionId::parse) else {
            return Err(Refusal::MissingCredentials);
        };
        match self
            .live_session(&id, v.client_at(index)?, v.providers)
            .await?
        {
            Some((data, p)) => {
                let body = serde_json::json!({
                    // As upstreams get it: unique across providers (`github:583231`).
                    "subject": p.upstream_subject(),
                    "email": data.email,
                    "name": data.name,
                    "client": data.client,
                    "origin": data.origin,
                    "provider": data.via.provider(),
                    "login": data.via.github.as_ref().map(|g| &g.login),
                    "groups": p.groups,
                    "expires_at": data.expires_at,
                    "permissions": v.grants.permissions(index, &p),
                });
                v.caller = Some(Caller {
                    principal: p,
                    credential: Credential::Session(data),
                });
                Ok(responses::json(StatusCode::OK, &body, v.request_id))
            }
            None => {
                v.set_cookies.push(spec.clear(&spec.session));
                Err(Refusal::MissingCredentials)
            }
        }
    }
}

/// The principal of a GitHub session: the numeric id as subject, the login as name, the
/// teams as `org:team-slug` groups; no permissions of its own (grants give them).
fn github_principal(data: &SessionData) -> Arc<Principal> {
    let gh = data.via.github.clone().unwrap_or_default();
    Arc::new(Principal {
        subject: data.subject.clone(),
        email: data.email.clone(),
        name: Some(gh.login.clone()),
        email_verified: data.email.is_some(),
        groups: gh
            .teams
            .iter()
            .map(|t| t.replacen('/', ":", 1).into())
            .collect(),
        github: Some(Arc::new(gh)),
        expires_at: data.expires_at,
        ..Principal::default()
    })
}

/// `text` percent-encoded for a query value.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The query parameter `name`, decoded.
fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    let q = req.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A string claim of a JWT whose signature was verified already (nothing else may call this).
fn verified_claim(token: &str, name: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims
        .get(name)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The logout rule: `Sec-Fetch-Site` (when the browser sends it; the least trusting of several)
/// must say same-origin or typed (`none`), or else an `Origin` of the client must come with it;
/// `origin_ok` is `Some` when an `Origin` header came (true: the client's own). Without either
/// header, only a POST.
fn logout_allowed(sec_fetch_site: Option<FetchSite>, origin_ok: Option<bool>, post: bool) -> bool {
    match sec_fetch_site {
        Some(FetchSite::SameOrigin | FetchSite::UserInitiated) => origin_ok != Some(false),
        Some(FetchSite::SameSite | FetchSite::CrossSite) => origin_ok == Some(true),
        None => origin_ok.unwrap_or(post),
    }
}

/// Printable, short text from the IdP for a page.
fn tame(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// A request header's bytes.
fn header<'a>(req: &'a RequestHeader, name: &http::HeaderName) -> Option<&'a [u8]> {
    req.headers.get(name).map(|v| v.as_bytes())
}

/// True when a logout comes from the client's own pages: `Sec-Fetch-Site: same-origin` or
/// `none` (typed, bookmarked), an `Origin` of client `index`, or — from a client that sends
/// neither (not a browser) — a POST. A cross-site or same-site navigation is not.
fn same_origin_logout(req: &RequestHeader, clients: &ClientRegistry, index: usize) -> bool {
    let origin_ok = header(req, &ORIGIN).map(|raw| {
        std::str::from_utf8(raw)
            .ok()
            .and_then(|o| Origin::parse(o).ok())
            .is_some_and(|o| clients.belongs(index, &o))
    });
    logout_allowed(
        fetch_site(&req.headers),
        origin_ok,
        req.method == http::Method::POST,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logout_only_from_the_clients_own_pages() {
        let same = Some(FetchSite::SameOrigin);
        let typed = Some(FetchSite::UserInitiated);
        let cross = Some(FetchSite::CrossSite);
        let sibling = Some(FetchSite::SameSite);
        for (case, site, origin_ok, post, allowed) in [
            ("same-origin GET", same, None, false, true),
            ("typed GET", typed, None, false, true),
            (
                "same-origin POST with own Origin",
                same,
                Some(true),
                true,
                true,
            ),
            (
                "same-origin claim with a foreign Origin",
                same,
                Some(false),
                true,
                false,
            ),
            ("cross-site GET", cross, None, false, false),
            ("cross-site POST without Origin", cross, None, true, false),
            (
                "cross-site POST from the client's SPA origin",
                cross,
                Some(true),
                true,
                true,
            ),
            ("same-site GET", sibling, None, false, false),
            ("old browser GET", None, None, false, false),
            (
                "old browser GET with own Origin",
                None,
                Some(true),
                false,
                true,
            ),
            (
                "old browser POST with foreign Origin",
                None,
                Some(false),
                true,
                false,
            ),
            ("non-browser POST", None, None, true, true),
        ] {
            assert_eq!(logout_allowed(site, origin_ok, post), allowed, "{case}");
        }
    }
}
