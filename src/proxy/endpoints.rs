//! The gateway's own side of browser login: the request's origin and scheme, the session
//! behind a cookie (with its single-flight refresh), the start of a login (sealed into a login
//! cookie of its own, see [`crate::identity::login`]), and the endpoints under `/_authgate/`
//! (login, callback, logout, signed-out page, session info) plus CORS preflights. They are
//! answered in `request_filter`, before route matching.

use super::ctx::RequestCtx;
use super::{header, host_header, Gateway};
use crate::clients::{ClientApp, Identified, OriginHints};
use crate::origin::Origin;
use crate::cors;
use crate::headers::names;
use http::header::{ACCEPT, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, COOKIE, ORIGIN, REFERER};
use crate::identity::login::{cookie_suffix, is_suffix, LoginState};
use crate::identity::oidc::OidcError;
use crate::identity::session::{cookie_pairs, cookie_value, now_secs, strip_cookies, CookieSpec, SessionData, SessionId, Tokens};
use crate::identity::credentials::{Caller, Credential};
use crate::identity::verify::TokenError;
use crate::identity::Principal;
use crate::redirects;
use crate::responses::{self, Refusal, Rendered};
use crate::secret::Secret;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use std::sync::Arc;

const LOGIN_PATH: &str = "/_authgate/login";
const LOGOUT_PATH: &str = "/_authgate/logout";
const SESSION_PATH: &str = "/_authgate/session";
const SIGNED_OUT_PATH: &str = "/_authgate/signed-out";
const PREFIX: &str = "/_authgate/";
/// Longest return URL a login cookie carries; longer ones return to the origin's root.
const MAX_RETURN_LEN: usize = 1024;

/// `text` percent-encoded for a query value.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The query parameter `name`, decoded.
fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    let q = req.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The first comma-separated value of a header, trimmed.
fn first_value<'a>(req: &'a RequestHeader, name: &http::HeaderName) -> Option<&'a str> {
    header(req, name).and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.split(',').next()).map(str::trim)
}

fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The logout rule: `Sec-Fetch-Site` (when the browser sends it) must say same-origin or typed
/// (`none`), or else an `Origin` of the client must come with it; `origin_ok` is `Some` when an
/// `Origin` header came (true: the client's own). Without either header, only a POST.
fn logout_allowed(sec_fetch_site: Option<&[u8]>, origin_ok: Option<bool>, post: bool) -> bool {
    match sec_fetch_site {
        Some(b"same-origin" | b"none") => origin_ok != Some(false),
        Some(_) => origin_ok == Some(true),
        None => origin_ok.unwrap_or(post),
    }
}

/// Printable, short text from the IdP for a page.
fn tame(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

impl Gateway {
    /// The request's scheme; `X-Forwarded-Proto` counts only from trusted proxies.
    pub(super) fn observe(&self, session: &Session, ctx: &mut RequestCtx) {
        let req = session.req_header();
        ctx.trusted_proxy = !self.trusted_proxies.is_empty()
            && session.client_addr().and_then(|a| a.as_inet()).is_some_and(|a| self.trusted_proxies.contains(a.ip()));
        ctx.https = if ctx.trusted_proxy {
            match first_value(req, &names::X_FORWARDED_PROTO).map(str::to_ascii_lowercase).as_deref() {
                Some("https") => true,
                Some("http") => false,
                _ => self.https,
            }
        } else {
            self.https
        };
        // CORS: only the registered origins of some client.
        if let Some(o) = header(req, &ORIGIN).and_then(|o| std::str::from_utf8(o).ok()).and_then(|o| Origin::parse(o).ok()) {
            if self.clients.owner(&o).is_some() {
                ctx.cors_origin = Some(o.to_string());
            }
        }
    }

    /// The request's own origin, `scheme://host[:port]` (the host from `X-Forwarded-Host`
    /// when a trusted proxy sends one). Built only when needed: most requests never ask.
    fn own_origin(&self, req: &RequestHeader, ctx: &RequestCtx) -> Option<Origin> {
        let forwarded = if ctx.trusted_proxy { first_value(req, &names::X_FORWARDED_HOST) } else { None };
        let host = forwarded.or_else(|| host_header(req).and_then(|h| std::str::from_utf8(h).ok()))?;
        let scheme = if ctx.https { "https://" } else { "http://" };
        let mut text = String::with_capacity(scheme.len() + host.len());
        text.push_str(scheme);
        text.push_str(host);
        text.make_ascii_lowercase();
        Origin::parse_owned(text).ok()
    }

    /// The request's client: `Origin`, `x-client-origin`, `Referer`, then its own origin.
    pub(super) fn identify(&self, req: &RequestHeader, ctx: &RequestCtx) -> Identified<'_> {
        let own = self.own_origin(req, ctx);
        self.clients.identify_hints(OriginHints {
            origin: header(req, &ORIGIN),
            client_origin: header(req, &names::X_CLIENT_ORIGIN),
            referer: header(req, &REFERER),
            own: own.as_ref(),
        })
    }

    pub(super) fn navigation(&self, req: &RequestHeader) -> bool {
        responses::is_navigation(&req.method, header(req, &ACCEPT), header(req, &names::SEC_FETCH_MODE), header(req, &names::X_REQUESTED_WITH))
    }

    fn cookies(&self, ctx: &RequestCtx) -> &CookieSpec {
        let [plain, secure] = &self.cookie_specs;
        if ctx.https {
            secure
        } else {
            plain
        }
    }

    /// Client `index` of this gateway's registry (indexes come from this same registry).
    fn client_at(&self, index: usize) -> Result<&ClientApp, Refusal> {
        self.clients.all().get(index).ok_or_else(|| Refusal::UnknownClient("(a client that is no longer configured)".into()))
    }

    fn cookie<'a>(&self, req: &'a RequestHeader, name: &str) -> Option<&'a str> {
        cookie_value(req.headers.get_all(&COOKIE).iter().map(|v| v.as_bytes()), name)
    }

    /// Adds the response's `Set-Cookie`s and, for registered origins, CORS headers.
    pub(super) fn decorate(&self, resp: &mut ResponseHeader, ctx: &RequestCtx) {
        for c in &ctx.set_cookies {
            let _ = resp.append_header("set-cookie", c.as_str());
        }
        if let Some(origin) = &ctx.cors_origin {
            for (k, v) in cors::response_headers(origin) {
                let _ = resp.insert_header(k, v);
            }
            let existing: Vec<&[u8]> = resp.headers.get_all(http::header::VARY).iter().map(|v| v.as_bytes()).collect();
            if let Some(vary) = cors::vary_origin(&existing) {
                let _ = resp.insert_header(http::header::VARY, vary);
            }
        }
    }

    /// The caller's cookies without the gateway's own, as one `Cookie` value (`None`: none left).
    /// Own cookies are the session cookie and every `{session}-…` (logins in flight, the
    /// signed-out marker), with and without `__Host-`.
    pub(super) fn kept_cookies(&self, values: &[http::HeaderValue]) -> Option<http::HeaderValue> {
        let values: Vec<&str> = values.iter().filter_map(|v| v.to_str().ok()).collect();
        let names = self.own_cookies.each_ref().map(String::as_str);
        strip_cookies(&values.join("; "), &names).and_then(|kept| http::HeaderValue::try_from(kept).ok())
    }

    /// The caller behind the request's session cookie, its tokens refreshed when due.
    /// `Ok(None)`: no usable session (a stale cookie is cleared). The caller's credential is the
    /// session, whose access token live checks present to the IdP.
    pub(super) async fn session_caller(&self, req: &RequestHeader, ctx: &mut RequestCtx, client_index: usize) -> Result<Option<Caller>, Refusal> {
        let spec = self.cookies(ctx);
        let Some(raw) = self.cookie(req, &spec.session) else { return Ok(None) };
        let Some(id) = SessionId::parse(raw) else {
            ctx.set_cookies.push(spec.clear(&spec.session));
            return Ok(None);
        };
        match self.live_session(&id, client_index).await? {
            Some((data, principal)) => Ok(Some(Caller { principal, credential: Credential::Session(data) })),
            None => {
                ctx.set_cookies.push(spec.clear(&spec.session));
                Ok(None)
            }
        }
    }

    async fn live_session(&self, id: &SessionId, client_index: usize) -> Result<Option<(Arc<SessionData>, Arc<Principal>)>, Refusal> {
        let client = self.client_at(client_index)?;
        let Some(mut data) = self.sessions.get(id).await else { return Ok(None) };
        if data.client != client.name {
            return Err(Refusal::WrongClient(format!("this session belongs to another client application than {}", client.name)));
        }
        let now = now_secs();
        if data.tokens.access_expires_at <= now + self.session_settings.refresh_before.as_secs() {
            match &data.tokens.refresh_token {
                Some(_) => match self.refresh(id, data.clone(), client_index).await? {
                    Some(fresh) => data = fresh,
                    None => return Ok(None),
                },
                None if data.tokens.access_expires_at <= now => {
                    self.sessions.remove(id).await;
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
                Err(e @ TokenError::KeysUnavailable) => return Err(Refusal::IdpUnavailable(e.to_string())),
                Err(_) => {} // not a token for this API: the id_token tells who it is
            }
        }
        match self.verifier.session_identity(data.tokens.id_token.expose(), &client.client_id, data.tokens.access_expires_at).await {
            Ok(p) => Ok(Some((data, p))),
            Err(e @ TokenError::KeysUnavailable) => Err(Refusal::IdpUnavailable(e.to_string())),
            Err(e) => {
                tracing::info!(client = %client.name, reason = %e, "session ended: its id_token no longer verifies");
                self.sessions.remove(id).await;
                Ok(None)
            }
        }
    }

    /// Refreshes a session's tokens once, however many requests ask at the same time:
    /// the first does it, the others wait and use its result. A refused refresh ends the session.
    /// The new tokens are written only over the generation read here, so a logout during the
    /// call to the IdP stays a logout.
    async fn refresh(&self, id: &SessionId, seen: Arc<SessionData>, client_index: usize) -> Result<Option<Arc<SessionData>>, Refusal> {
        let client = self.client_at(client_index)?;
        let lock = self.refresh_locks.get(id.digest());
        let _only_one = lock.lock().await;
        let Some(current) = self.sessions.get(id).await else { return Ok(None) };
        if current.generation != seen.generation {
            return Ok(Some(current));
        }
        let Some(refresh_token) = current.tokens.refresh_token.clone() else { return Ok(Some(current)) };
        let still_valid = current.tokens.access_expires_at > now_secs();
        let provider = match self.oidc.provider().await {
            Ok(p) => p,
            Err(_) if still_valid => return Ok(Some(current)),
            Err(e) => return Err(Refusal::IdpUnavailable(e.to_string())),
        };
        match self.oidc.refresh(&provider, client, refresh_token.expose()).await {
            Ok(set) => {
                let mut fresh = (*current).clone();
                fresh.tokens = Tokens {
                    access_expires_at: now_secs() + set.expires_in.map_or(300, |d| d.as_secs()),
                    access_token: Secret::new(set.access_token),
                    id_token: set.id_token.map(Secret::new).unwrap_or(current.tokens.id_token.clone()),
                    refresh_token: set.refresh_token.map(Secret::new).or(Some(refresh_token)),
                };
                fresh.generation = current.generation.wrapping_add(1);
                let fresh = Arc::new(fresh);
                if !self.sessions.replace(id, current.generation, fresh.clone()).await {
                    // Ended (a logout) or changed while the IdP answered: what is stored now wins.
                    tracing::info!(client = %client.name, subject = %current.subject, "refreshed tokens dropped: the session ended or changed meanwhile");
                    return Ok(self.sessions.get(id).await);
                }
                tracing::info!(client = %client.name, subject = %fresh.subject, "session tokens refreshed");
                Ok(Some(fresh))
            }
            Err(e @ (OidcError::Refused(_) | OidcError::BadResponse(_))) => {
                let why = e.to_string();
                tracing::info!(client = %client.name, subject = %current.subject, reason = %why, "refresh refused: session ended");
                self.sessions.remove(id).await;
                Ok(None)
            }
            Err(_) if still_valid => Ok(Some(current)),
            Err(e) => Err(Refusal::IdpUnavailable(e.to_string())),
        }
    }

    /// Starts a login for `client_index` from `origin`: seals what the callback needs into a
    /// login cookie of its own and returns the IdP's URL. At most `max_pending_logins` login
    /// cookies are kept per browser: beyond that the oldest are cleared. After a logout (the
    /// signed-out marker) the IdP is asked to authenticate again (`prompt=login`, `max_age=0`).
    pub(super) async fn start_login(&self, req: &RequestHeader, ctx: &mut RequestCtx, client_index: usize, origin: &Origin, return_to: String) -> Result<String, Refusal> {
        if !ctx.https && !self.session_settings.allow_insecure_http {
            return Err(Refusal::LoginFailed {
                reason: "browser sign-in needs HTTPS: serve the gateway over HTTPS (or set session.allow_insecure_http for local development)".into(),
                retry: None,
            });
        }
        let client = self.client_at(client_index)?;
        let provider = self.oidc.provider().await.map_err(|e| Refusal::IdpUnavailable(e.to_string()))?;
        let spec = self.cookies(ctx);
        let reauthenticate = self.cookie(req, &spec.signed_out).is_some();
        let redirect_uri = format!("{origin}{}", client.redirect_path);
        let auth = self.oidc.authorize(&provider, client, &redirect_uri, reauthenticate).map_err(|e| Refusal::LoginFailed { reason: e.to_string(), retry: None })?;
        let return_to = if return_to.len() <= MAX_RETURN_LEN { return_to } else { format!("{origin}/") };
        let now = now_secs();
        let login = LoginState {
            state: auth.state,
            nonce: auth.nonce,
            pkce_verifier: auth.pkce_verifier,
            return_to,
            redirect_uri,
            origin: origin.to_string(),
            client: client.name.clone(),
            issued_at: now,
        };
        let name = spec.login_cookie(&cookie_suffix(&login.state));
        let sealed = self.login_sealer.seal(&name, &login).ok_or_else(|| Refusal::LoginFailed { reason: "the sign-in could not be started; try again".into(), retry: None })?;
        // The browser's other logins in flight: unreadable or expired ones are cleared, and the
        // oldest beyond the cap, so that this one fits.
        let timeout = self.session_settings.login_timeout.as_secs();
        let mut live: Vec<(u64, &str)> = Vec::new();
        for (cookie, value) in cookie_pairs(req.headers.get_all(&COOKIE).iter().map(|v| v.as_bytes())) {
            if !spec.login_suffix(cookie).is_some_and(is_suffix) || cookie == name {
                continue;
            }
            match self.login_sealer.open(cookie, value).filter(|l| l.fresh(now, timeout)) {
                Some(l) => live.push((l.issued_at, cookie)),
                None => ctx.set_cookies.push(spec.clear(cookie)),
            }
        }
        live.sort_unstable();
        let keep = self.session_settings.max_pending_logins.saturating_sub(1);
        let drop = live.len().saturating_sub(keep);
        for (_, cookie) in live.iter().take(drop) {
            ctx.set_cookies.push(spec.clear(cookie));
        }
        ctx.set_cookies.push(spec.set(&name, &sealed, Some(self.session_settings.login_timeout)));
        Ok(auth.url.to_string())
    }

    /// Answers `/_authgate/*`, the clients' callback paths and CORS preflights; `None` for
    /// everything else.
    pub(super) async fn gateway_endpoint(&self, session: &mut Session, ctx: &mut RequestCtx) -> Option<Result<bool>> {
        let req = session.req_header();
        let path = req.uri.path();
        let preflight = cors::is_preflight(&req.method, header(req, &ORIGIN), header(req, &ACCESS_CONTROL_REQUEST_METHOD));
        let is_callback = self.clients.all().iter().any(|c| c.redirect_path == path);
        if !preflight && !is_callback && !path.starts_with(PREFIX) {
            return None;
        }
        let answer = if preflight {
            Ok(self.preflight(req, ctx))
        } else if is_callback {
            ctx.outcome = "login_callback";
            self.callback(req, ctx).await
        } else {
            match path {
                LOGIN_PATH => {
                    ctx.outcome = "login_start";
                    self.login(req, ctx).await
                }
                LOGOUT_PATH => {
                    ctx.outcome = "logout";
                    self.logout(req, ctx).await
                }
                SESSION_PATH => {
                    ctx.outcome = "session_info";
                    self.session_info(req, ctx).await
                }
                SIGNED_OUT_PATH => {
                    ctx.outcome = "signed_out";
                    self.signed_out(req, ctx)
                }
                _ => Err(Refusal::NoRoute),
            }
        };
        Some(match answer {
            Ok(mut rendered) => {
                self.decorate(&mut rendered.header, ctx);
                let head_only = session.req_header().method == http::Method::HEAD;
                async {
                    session.write_response_header(Box::new(rendered.header), head_only).await?;
                    if !head_only {
                        session.write_response_body(Some(rendered.body), true).await?;
                    }
                    Ok(true)
                }
                .await
            }
            Err(refusal) => self.refuse(session, ctx, refusal).await,
        })
    }

    fn preflight(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Rendered {
        ctx.outcome = "preflight";
        let mut header_ = responses::head(if ctx.cors_origin.is_some() { StatusCode::NO_CONTENT } else { StatusCode::FORBIDDEN }, 8);
        if let Some(origin) = ctx.cors_origin.take() {
            for (k, v) in cors::preflight_headers(&origin, header(req, &ACCESS_CONTROL_REQUEST_HEADERS)) {
                let _ = header_.insert_header(k, v);
            }
        }
        let _ = header_.insert_header("content-length", "0");
        let _ = header_.insert_header("x-request-id", &ctx.request_id);
        Rendered { header: header_, body: bytes::Bytes::new() }
    }

    fn known_client(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<(usize, Origin), Refusal> {
        match self.identify(req, ctx) {
            Identified::Known { index, origin, .. } => {
                ctx.client = Some(index);
                Ok((index, origin))
            }
            Identified::Unknown(o) => Err(Refusal::UnknownClient(o)),
        }
    }

    /// `/_authgate/login?rd=/path`: starts a login explicitly (an SPA's "Sign in" button).
    async fn login(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<Rendered, Refusal> {
        let (index, origin) = self.known_client(req, ctx)?;
        let return_to = query_param(req, "rd")
            .and_then(|rd| redirects::validate(&rd, &origin, &self.clients, index))
            .unwrap_or_else(|| format!("{origin}/"));
        let location = self.start_login(req, ctx, index, &origin, return_to).await?;
        Ok(responses::redirect(&location, &ctx.request_id))
    }

    /// The IdP sends the browser back here with `code` and `state` (or an `error`). The login is
    /// the browser's cookie named after `state` whose sealed state equals it (compared in
    /// constant time); that cookie is cleared whatever happens, so a state works once, and only
    /// within `login_timeout`. The client is looked up by name in the config in force: a client
    /// removed since the login started, or no longer owning the login's origin, fails closed.
    async fn callback(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<Rendered, Refusal> {
        let fail = |reason: &str, retry: Option<String>| Refusal::LoginFailed { reason: reason.into(), retry };
        let start_over = || Some(LOGIN_PATH.to_string());
        let state = query_param(req, "state").ok_or_else(|| fail("the sign-in response has no state", start_over()))?;
        let spec = self.cookies(ctx);
        let name = spec.login_cookie(&cookie_suffix(&state));
        let sealed = self.cookie(req, &name);
        if sealed.is_some() {
            ctx.set_cookies.push(spec.clear(&name));
        }
        let gone = || fail("this sign-in expired or was already used, or it was started in another browser (or its cookie was blocked)", start_over());
        let login = sealed.and_then(|v| self.login_sealer.open(&name, v)).filter(|l| l.has_state(&state)).ok_or_else(gone)?;
        if !login.fresh(now_secs(), self.session_settings.login_timeout.as_secs()) {
            return Err(gone());
        }
        let origin = Origin::parse(&login.origin).ok();
        let found = self.clients.all().iter().position(|c| c.name == login.client).zip(origin);
        let Some((index, origin)) = found.filter(|(i, o)| self.clients.belongs(*i, o)) else {
            tracing::info!(request_id = %ctx.request_id, client = %login.client, "sign-in refused: its client is no longer configured for its origin");
            return Err(fail("the application this sign-in was for is no longer configured here", start_over()));
        };
        let client = self.client_at(index)?;
        ctx.client = Some(index);
        let return_to = redirects::validate(&login.return_to, &origin, &self.clients, index).unwrap_or_else(|| format!("{origin}/"));
        let restart = Some(format!("{LOGIN_PATH}?rd={}", encode(&return_to)));
        if let Some(error) = query_param(req, "error") {
            let detail = query_param(req, "error_description").map(|d| format!(" ({})", tame(&d))).unwrap_or_default();
            return Err(Refusal::LoginFailed { reason: format!("the identity provider answered {}{detail}", tame(&error)), retry: restart });
        }
        if let Some(iss) = query_param(req, "iss") {
            if iss.trim_end_matches('/') != self.oidc.issuer().trim_end_matches('/') {
                return Err(fail("the sign-in response comes from another issuer", restart));
            }
        }
        let code = query_param(req, "code").ok_or_else(|| fail("the sign-in response has no code", restart.clone()))?;
        let provider = self.oidc.provider().await.map_err(|e| Refusal::IdpUnavailable(e.to_string()))?;
        let tokens = self
            .oidc
            .exchange_code(&provider, client, &code, &login.pkce_verifier, &login.redirect_uri)
            .await
            .map_err(|e| Refusal::LoginFailed { reason: e.to_string(), retry: restart.clone() })?;
        let id_token = tokens.id_token.unwrap_or_default();
        let principal = self
            .verifier
            .verify_id_token(&id_token, &client.client_id, &login.nonce)
            .await
            .map_err(|e| Refusal::LoginFailed { reason: format!("the id_token was refused: {e}"), retry: restart.clone() })?;
        let now = now_secs();
        let data = SessionData {
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
            expires_at: now + self.session_settings.lifetime.as_secs(),
            generation: 0,
        };
        // A new id for every login; the browser's previous session ends.
        if let Some(old) = self.cookie(req, &spec.session).and_then(SessionId::parse) {
            self.sessions.remove(&old).await;
        }
        let id = SessionId::generate();
        self.sessions.put(&id, Arc::new(data)).await;
        tracing::info!(request_id = %ctx.request_id, client = %client.name, subject = %principal.subject, "signed in");
        ctx.set_cookies.push(spec.set(&spec.session, id.expose(), Some(self.session_settings.lifetime)));
        if self.cookie(req, &spec.signed_out).is_some() {
            ctx.set_cookies.push(spec.clear(&spec.signed_out));
        }
        Ok(responses::redirect(&return_to, &ctx.request_id))
    }

    /// True when a logout comes from the client's own pages: `Sec-Fetch-Site: same-origin` or
    /// `none` (typed, bookmarked), an `Origin` of client `index`, or — from a client that sends
    /// neither (not a browser) — a POST. A cross-site or same-site navigation is not.
    fn same_origin_logout(&self, req: &RequestHeader, index: usize) -> bool {
        let origin_ok = header(req, &ORIGIN).map(|raw| std::str::from_utf8(raw).ok().and_then(|o| Origin::parse(o).ok()).is_some_and(|o| self.clients.belongs(index, &o)));
        logout_allowed(req.headers.get("sec-fetch-site").map(|v| v.as_bytes()), origin_ok, req.method == http::Method::POST)
    }

    /// True when `url` is served by a route that needs a sign-in (a page a signed-out browser
    /// would bounce from straight back to the IdP).
    fn protected(&self, url: &str) -> bool {
        let Ok(url) = url::Url::parse(url) else { return true };
        // The gateway answers its own endpoints (the signed-out page) before any route.
        if url.path().starts_with(PREFIX) {
            return false;
        }
        let Ok(path) = crate::authz::path::normalize(url.path()) else { return true };
        match self.routes.resolve(url.host_str(), &path, &http::Method::GET) {
            Ok(crate::authz::routes::RouteMatch::Found { route, .. }) => route.access != crate::config::model::Access::Public,
            Ok(_) => false,
            // A path no reading can route safely is no place to send a browser.
            Err(_) => true,
        }
    }

    /// `/_authgate/logout?rd=/path`: signs the browser out, only when asked from the client's
    /// own pages (see [`Gateway::same_origin_logout`]); otherwise a page with a sign-out button
    /// answers and nothing changes. The session behind the cookie ends whichever client it
    /// belongs to; a signed-out marker makes the next login ask the IdP to authenticate again.
    /// Then to the IdP's `end_session_endpoint` when it has one, coming back to the target:
    /// `rd` or `post_logout_redirect` unless they are protected, else the signed-out page.
    async fn logout(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<Rendered, Refusal> {
        if req.method != http::Method::GET && req.method != http::Method::POST {
            return Err(Refusal::MethodNotAllowed(vec![http::Method::GET, http::Method::POST]));
        }
        let (index, origin) = self.known_client(req, ctx)?;
        let client = self.client_at(index)?;
        let rd = query_param(req, "rd").and_then(|rd| redirects::validate(&rd, &origin, &self.clients, index));
        if !self.same_origin_logout(req, index) {
            ctx.outcome = "logout_refused";
            let action = match &rd {
                Some(rd) => format!("{LOGOUT_PATH}?rd={}", encode(rd)),
                None => LOGOUT_PATH.to_string(),
            };
            return Ok(responses::confirm_logout(&client.name, &action, &ctx.request_id));
        }
        let spec = self.cookies(ctx);
        let mut id_token = None;
        if let Some(id) = self.cookie(req, &spec.session).and_then(SessionId::parse) {
            if let Some(data) = self.sessions.get(&id).await {
                // The IdP's logout names the client the id_token was issued to.
                if data.client == client.name {
                    id_token = Some(data.tokens.id_token.clone());
                }
                tracing::info!(request_id = %ctx.request_id, client = %data.client, subject = %data.subject, "signed out");
            }
            self.sessions.remove(&id).await;
        }
        ctx.set_cookies.push(spec.clear(&spec.session));
        ctx.set_cookies.push(spec.set(&spec.signed_out, "1", Some(self.session_settings.lifetime)));
        let target = rd
            .or_else(|| redirects::validate(&client.post_logout_redirect, &origin, &self.clients, index))
            .filter(|t| !self.protected(t))
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
        Ok(responses::redirect(&location, &ctx.request_id))
    }

    /// `GET /_authgate/signed-out?rd=/path`: where a logout ends: the client's name, a "sign
    /// in again" link (back to `rd`) and, with `logout_url`, the way to the IdP's own sign-out.
    fn signed_out(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<Rendered, Refusal> {
        let (index, origin) = self.known_client(req, ctx)?;
        let client = self.client_at(index)?;
        let sign_in = match query_param(req, "rd").and_then(|rd| redirects::validate(&rd, &origin, &self.clients, index)) {
            Some(rd) => format!("{LOGIN_PATH}?rd={}", encode(&rd)),
            None => LOGIN_PATH.to_string(),
        };
        let idp = client.logout_url.as_ref().map(|u| (u.as_str(), client.logout_post));
        Ok(responses::signed_out(&client.name, &sign_in, idp, &ctx.request_id))
    }

    /// `GET /_authgate/session`: who is signed in, for an SPA's user menu; 401 otherwise.
    async fn session_info(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<Rendered, Refusal> {
        let (index, _) = self.known_client(req, ctx)?;
        let spec = self.cookies(ctx);
        let Some(id) = self.cookie(req, &spec.session).and_then(SessionId::parse) else { return Err(Refusal::MissingCredentials) };
        match self.live_session(&id, index).await? {
            Some((data, p)) => {
                let body = serde_json::json!({
                    "subject": data.subject,
                    "email": data.email,
                    "name": data.name,
                    "client": data.client,
                    "origin": data.origin,
                    "expires_at": data.expires_at,
                    "permissions": p.permissions.to_json(),
                });
                ctx.caller = Some(Caller { principal: p, credential: Credential::Session(data) });
                Ok(responses::json(StatusCode::OK, &body, &ctx.request_id))
            }
            None => {
                ctx.set_cookies.push(spec.clear(&spec.session));
                Err(Refusal::MissingCredentials)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logout_only_from_the_clients_own_pages() {
        let same: Option<&[u8]> = Some(b"same-origin");
        let typed: Option<&[u8]> = Some(b"none");
        let cross: Option<&[u8]> = Some(b"cross-site");
        let sibling: Option<&[u8]> = Some(b"same-site");
        for (case, site, origin_ok, post, allowed) in [
            ("same-origin GET", same, None, false, true),
            ("typed GET", typed, None, false, true),
            ("same-origin POST with own Origin", same, Some(true), true, true),
            ("same-origin claim with a foreign Origin", same, Some(false), true, false),
            ("cross-site GET", cross, None, false, false),
            ("cross-site POST without Origin", cross, None, true, false),
            ("cross-site POST from the client's SPA origin", cross, Some(true), true, true),
            ("same-site GET", sibling, None, false, false),
            ("old browser GET", None, None, false, false),
            ("old browser GET with own Origin", None, Some(true), false, true),
            ("old browser POST with foreign Origin", None, Some(false), true, false),
            ("non-browser POST", None, None, true, true),
        ] {
            assert_eq!(logout_allowed(site, origin_ok, post), allowed, "{case}");
        }
    }
}
