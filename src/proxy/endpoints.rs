//! The gateway's own side of browser login: the request's origin and scheme, the session
//! behind a cookie (with its single-flight refresh), the start of a login, and the endpoints
//! under `/_authgate/` (login, callback, logout, session info) plus CORS preflights. They are
//! answered in `request_filter`, before route matching.

use super::ctx::RequestCtx;
use super::{header, host_header, Gateway};
use crate::clients::{Identified, Origin, OriginHints};
use crate::cors;
use crate::headers::names;
use http::header::{ACCEPT, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, COOKIE, ORIGIN, REFERER};
use crate::identity::login::Pending;
use crate::identity::oidc::OidcError;
use crate::identity::session::{cookie_value, now_secs, random_token, strip_cookies, CookieSpec, SessionData, SessionId, Tokens};
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
use subtle::ConstantTimeEq;

const LOGIN_PATH: &str = "/_authgate/login";
const LOGOUT_PATH: &str = "/_authgate/logout";
const SESSION_PATH: &str = "/_authgate/session";
const PREFIX: &str = "/_authgate/";

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
        &self.cookie_specs[usize::from(ctx.https)]
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
    pub(super) fn kept_cookies(&self, values: &[http::HeaderValue]) -> Option<http::HeaderValue> {
        let values: Vec<&str> = values.iter().filter_map(|v| v.to_str().ok()).collect();
        let names = self.own_cookies.each_ref().map(String::as_str);
        strip_cookies(&values.join("; "), &names).and_then(|kept| http::HeaderValue::try_from(kept).ok())
    }

    /// The identity behind the request's session cookie, refreshing its tokens when due.
    /// `Ok(None)`: no usable session (a stale cookie is cleared).
    /// With the identity comes the session, whose access token live checks present to the IdP.
    pub(super) async fn session_principal(&self, req: &RequestHeader, ctx: &mut RequestCtx, client_index: usize) -> Result<Option<(Arc<Principal>, Arc<SessionData>)>, Refusal> {
        let spec = self.cookies(ctx);
        let Some(raw) = self.cookie(req, &spec.session) else { return Ok(None) };
        let Some(id) = SessionId::parse(raw) else {
            ctx.set_cookies.push(spec.clear(&spec.session));
            return Ok(None);
        };
        match self.live_session(&id, client_index).await {
            Ok(Some((data, p))) => Ok(Some((p, data))),
            Ok(None) => {
                ctx.set_cookies.push(spec.clear(&spec.session));
                Ok(None)
            }
            Err(r) => Err(r),
        }
    }

    async fn live_session(&self, id: &SessionId, client_index: usize) -> Result<Option<(Arc<SessionData>, Arc<Principal>)>, Refusal> {
        let client = &self.clients.all()[client_index];
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
    async fn refresh(&self, id: &SessionId, seen: Arc<SessionData>, client_index: usize) -> Result<Option<Arc<SessionData>>, Refusal> {
        let client = &self.clients.all()[client_index];
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
                fresh.generation += 1;
                let fresh = Arc::new(fresh);
                self.sessions.put(id, fresh.clone()).await;
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

    /// Starts a login for `client_index` from `origin`: remembers it and returns the IdP's URL.
    pub(super) async fn start_login(&self, req: &RequestHeader, ctx: &mut RequestCtx, client_index: usize, origin: &Origin, return_to: String) -> Result<String, Refusal> {
        if !ctx.https && !self.session_settings.allow_insecure_http {
            return Err(Refusal::LoginFailed {
                reason: "browser sign-in needs HTTPS: serve the gateway over HTTPS (or set session.allow_insecure_http for local development)".into(),
                retry: None,
            });
        }
        let client = &self.clients.all()[client_index];
        let provider = self.oidc.provider().await.map_err(|e| Refusal::IdpUnavailable(e.to_string()))?;
        let spec = self.cookies(ctx);
        let browser = match self.cookie(req, &spec.login).filter(|b| b.len() == 22 && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')) {
            Some(b) => b.to_string(),
            None => random_token(16),
        };
        ctx.set_cookies.push(spec.set(&spec.login, &browser, Some(self.session_settings.login_timeout)));
        let redirect_uri = format!("{origin}{}", client.redirect_path);
        let auth = self.oidc.authorize(&provider, client, &redirect_uri).map_err(|e| Refusal::LoginFailed { reason: e.to_string(), retry: None })?;
        self.logins.insert(
            auth.state,
            Pending { client: client_index, origin: origin.clone(), redirect_uri, nonce: auth.nonce, pkce_verifier: auth.pkce_verifier, return_to, browser },
        );
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
        let mut header_ = ResponseHeader::build(if ctx.cors_origin.is_some() { StatusCode::NO_CONTENT } else { StatusCode::FORBIDDEN }, Some(8)).expect("a static status is valid");
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

    /// The IdP sends the browser back here with `code` and `state` (or an `error`).
    async fn callback(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<Rendered, Refusal> {
        let fail = |reason: String, retry: Option<String>| Refusal::LoginFailed { reason, retry };
        let restart = |p: &Pending| Some(format!("{LOGIN_PATH}?rd={}", url::form_urlencoded::byte_serialize(p.return_to.as_bytes()).collect::<String>()));
        let state = query_param(req, "state").ok_or_else(|| fail("the sign-in response has no state".into(), Some(LOGIN_PATH.into())))?;
        let pending = self.logins.take(&state).ok_or_else(|| fail("this sign-in expired or was already used".into(), Some(LOGIN_PATH.into())))?;
        ctx.client = Some(pending.client);
        let spec = self.cookies(ctx);
        let same_browser = self.cookie(req, &spec.login).is_some_and(|b| bool::from(b.as_bytes().ct_eq(pending.browser.as_bytes())));
        if !same_browser {
            return Err(fail("this sign-in was started in another browser (or its cookie was blocked)".into(), restart(&pending)));
        }
        if let Some(error) = query_param(req, "error") {
            let detail = query_param(req, "error_description").map(|d| format!(" ({})", tame(&d))).unwrap_or_default();
            return Err(fail(format!("the identity provider answered {}{detail}", tame(&error)), restart(&pending)));
        }
        if let Some(iss) = query_param(req, "iss") {
            if iss.trim_end_matches('/') != self.oidc.issuer().trim_end_matches('/') {
                return Err(fail("the sign-in response comes from another issuer".into(), restart(&pending)));
            }
        }
        let code = query_param(req, "code").ok_or_else(|| fail("the sign-in response has no code".into(), restart(&pending)))?;
        let client = &self.clients.all()[pending.client];
        let provider = self.oidc.provider().await.map_err(|e| Refusal::IdpUnavailable(e.to_string()))?;
        let tokens = self
            .oidc
            .exchange_code(&provider, client, &code, &pending.pkce_verifier, &pending.redirect_uri)
            .await
            .map_err(|e| fail(e.to_string(), restart(&pending)))?;
        let id_token = tokens.id_token.unwrap_or_default();
        let principal = self.verifier.verify_id_token(&id_token, &client.client_id, &pending.nonce).await.map_err(|e| fail(format!("the id_token was refused: {e}"), restart(&pending)))?;
        let now = now_secs();
        let data = SessionData {
            client: client.name.clone(),
            origin: pending.origin.to_string(),
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
        Ok(responses::redirect(&pending.return_to, &ctx.request_id))
    }

    /// `/_authgate/logout?rd=/path`: ends the session, then the IdP's session when it can.
    async fn logout(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<Rendered, Refusal> {
        let (index, origin) = self.known_client(req, ctx)?;
        let client = &self.clients.all()[index];
        let spec = self.cookies(ctx);
        let mut id_token = None;
        if let Some(id) = self.cookie(req, &spec.session).and_then(SessionId::parse) {
            if let Some(data) = self.sessions.get(&id).await {
                // Another client's session is not this client's to end.
                if data.client == client.name {
                    id_token = Some(data.tokens.id_token.clone());
                    self.sessions.remove(&id).await;
                    tracing::info!(request_id = %ctx.request_id, client = %client.name, subject = %data.subject, "signed out");
                }
            }
        }
        ctx.set_cookies.push(spec.clear(&spec.session));
        let target = query_param(req, "rd")
            .and_then(|rd| redirects::validate(&rd, &origin, &self.clients, index))
            .or_else(|| redirects::validate(&client.post_logout_redirect, &origin, &self.clients, index))
            .unwrap_or_else(|| format!("{origin}/"));
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

    /// `GET /_authgate/session`: who is signed in, for an SPA's user menu; 401 otherwise.
    async fn session_info(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<Rendered, Refusal> {
        let (index, _) = self.known_client(req, ctx)?;
        let spec = self.cookies(ctx);
        let Some(id) = self.cookie(req, &spec.session).and_then(SessionId::parse) else { return Err(Refusal::MissingCredentials) };
        match self.live_session(&id, index).await? {
            Some((data, p)) => {
                ctx.principal = Some(p.clone());
                let body = serde_json::json!({
                    "subject": data.subject,
                    "email": data.email,
                    "name": data.name,
                    "client": data.client,
                    "origin": data.origin,
                    "expires_at": data.expires_at,
                    "permissions": p.permissions.to_json(),
                });
                Ok(responses::json(StatusCode::OK, &body, &ctx.request_id))
            }
            None => {
                ctx.set_cookies.push(spec.clear(&spec.session));
                Err(Refusal::MissingCredentials)
            }
        }
    }
}
