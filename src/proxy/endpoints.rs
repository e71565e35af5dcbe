//! What the phases learn about a request before deciding: its scheme and origin, the client
//! its origin hints name, whether it is a navigation; and the gateway's own endpoints (sign-in
//! through [`crate::identity::browser::Browser`], CORS preflights), answered in `request_filter` before route matching.

use super::ctx::RequestCtx;
use super::{header, Gateway};
use crate::clients::{Identified, OriginHints, UnknownOrigin};
use crate::cors;
use crate::headers::names;
use crate::identity::backchannel;
use crate::identity::browser::{Visit, BACKCHANNEL_PATH};
use crate::origin::Origin;
use crate::responses::{self, Cause, Refusal, Rendered};
use http::header::{ACCEPT, ACCESS_CONTROL_REQUEST_HEADERS};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

/// Why a sign-in failed, as a metric label: the failure's typed reason (a fixed set, see
/// [`crate::responses::LoginFailure`]), or the refusal's outcome for the other refusals a sign-in
/// meets (`idp_unavailable`, `not_allowed`, `session_store_unavailable`, ...).
fn login_failure(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::LoginFailed { kind, .. } => kind.as_label(),
        other => other.outcome(),
    }
}

/// An `X-Forwarded-For` entry's address: `192.0.2.1`, `2001:db8::1`, or with a port
/// (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn forwarded_ip(entry: &str) -> Option<std::net::IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// The first comma-separated value of a header, trimmed.
fn first_value<'a>(req: &'a RequestHeader, name: &http::HeaderName) -> Option<&'a str> {
    header(req, name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
}

impl Gateway {
    /// The request's scheme; `X-Forwarded-Proto` counts only from trusted proxies.
    pub(super) fn observe(&self, session: &Session, ctx: &mut RequestCtx) {
        let req = session.req_header();
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.trusted_proxy = !self.proxy.trusted_proxies.is_empty()
            && ctx
                .peer
                .is_some_and(|ip| self.proxy.trusted_proxies.contains(ip));
        ctx.https = if ctx.trusted_proxy {
            match first_value(req, &names::X_FORWARDED_PROTO)
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("https") => true,
                Some("http") => false,
                _ => self.proxy.https,
            }
        } else {
            self.proxy.https
        };
        ctx.hints.fill(&req.headers, &self.services.api_key_header);
        // CORS: only the registered origins of some client.
        if let Some(o) = super::ctx::bytes(&ctx.hints.origin)
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| Origin::parse(o).ok())
        {
            if self.clients.owner(&o).is_some() {
                ctx.cors_origin = Some(o.to_string());
            }
        }
    }

    /// The request's own origin, `scheme://host[:port]`: the host routing read (an
    /// absolute-form target's authority over `Host`), or `X-Forwarded-Host` when a trusted
    /// proxy sends one. Built only when needed: most requests never ask.
    fn own_origin(&self, req: &RequestHeader, ctx: &RequestCtx) -> Option<Origin> {
        let forwarded = if ctx.trusted_proxy {
            first_value(req, &names::X_FORWARDED_HOST)
        } else {
            None
        };
        let host = forwarded.or_else(|| {
            crate::authz::host::routed_authority(req).and_then(|h| std::str::from_utf8(h).ok())
        })?;
        let scheme = if ctx.https { "https://" } else { "http://" };
        let mut text = String::with_capacity(scheme.len() + host.len());
        text.push_str(scheme);
        // `example.com.` is the fully qualified `example.com`, as host routing reads it.
        // A byte search: a `char` one from the end costs several times more, on every request.
        let split = host
            .as_bytes()
            .iter()
            .rposition(|&b| b == b':')
            .and_then(|i| Some((host.get(..i)?, host.get(i + 1..)?)));
        match split {
            Some((name, port)) if name.len() > 1 && name.ends_with('.') => {
                text.push_str(name.strip_suffix('.').unwrap_or(name));
                text.push(':');
                text.push_str(port);
            }
            _ => text.push_str(
                host.strip_suffix('.')
                    .filter(|h| !h.is_empty())
                    .unwrap_or(host),
            ),
        }
        text.make_ascii_lowercase();
        Origin::parse_known(text, |t| self.clients.registers(t)).ok()
    }

    /// The request's client: `Origin`, `x-client-origin`, `Referer`, then its own origin.
    pub(super) fn identify(&self, req: &RequestHeader, ctx: &RequestCtx) -> Identified<'_> {
        self.clients.identify_hints(OriginHints {
            origin: super::ctx::bytes(&ctx.hints.origin),
            client_origin: super::ctx::bytes(&ctx.hints.client_origin),
            referer: super::ctx::bytes(&ctx.hints.referer),
            own: self.own_origin(req, ctx),
        })
    }

    /// The client's address as the trusted proxies say: the connection's peer, or, when the
    /// peer is a trusted proxy, the last `X-Forwarded-For` address that is not one (the first
    /// address when all are; the peer when one of them is unreadable, since what comes before
    /// it cannot be believed either).
    pub(super) fn client_ip(
        &self,
        req: &RequestHeader,
        ctx: &RequestCtx,
    ) -> Option<std::net::IpAddr> {
        if !ctx.trusted_proxy {
            return ctx.peer;
        }
        let mut client = ctx.peer;
        // From the right: the last header line's last entry is the nearest hop.
        let listed = req
            .headers
            .get_all(&names::X_FORWARDED_FOR)
            .iter()
            .rev()
            .map(|v| v.to_str().unwrap_or("?"))
            .flat_map(|v| v.rsplit(','));
        for entry in listed.map(str::trim) {
            let Some(ip) = forwarded_ip(entry) else {
                return ctx.peer;
            };
            client = Some(ip);
            if !self.proxy.trusted_proxies.contains(ip) {
                break;
            }
        }
        client
    }

    pub(super) fn navigation(&self, req: &RequestHeader) -> bool {
        responses::is_navigation(
            &req.method,
            header(req, &ACCEPT),
            header(req, &names::SEC_FETCH_MODE),
            header(req, &names::X_REQUESTED_WITH),
        )
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
            let existing: Vec<&[u8]> = resp
                .headers
                .get_all(http::header::VARY)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            if let Some(vary) = cors::vary_origin(&existing) {
                let _ = resp.insert_header(http::header::VARY, vary);
            }
        }
    }

    /// The request as browser sign-in sees it; `hinted` is the client its origin hints name.
    pub(super) fn visit<'a>(
        &'a self,
        req: &'a RequestHeader,
        ctx: &'a mut RequestCtx,
        hinted: Result<(usize, Origin), UnknownOrigin>,
    ) -> Visit<'a> {
        Visit {
            req,
            https: ctx.https,
            client_ip: self.client_ip(req, ctx),
            request_id: &ctx.request_id,
            clients: &self.clients,
            routes: &self.routes,
            hinted,
            providers: &self.providers,
            grants: &self.grants,
            set_cookies: &mut ctx.set_cookies,
            client: None,
            caller: None,
            outcome: "-",
        }
    }

    /// Answers `/_authgate/*`, the clients' callback paths (through [`crate::identity::browser::Browser`]) and CORS
    /// preflights; `None` for everything else.
    pub(super) async fn gateway_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Option<Result<bool>> {
        let req = session.req_header();
        let preflight = cors::is_preflight(req);
        if !preflight && !self.services.browser.owns(req.uri.path(), &self.clients) {
            return None;
        }
        // Login and logout build URLs from the host: checked here as `decide` checks it for the
        // routed requests, once per request either way.
        if let Err(e) = crate::authz::host::request_host(req) {
            return Some(
                self.refuse(session, ctx, Refusal::BadHost(Cause::of(e)))
                    .await,
            );
        }
        let req = session.req_header();
        let answer = if preflight {
            Ok(self.preflight(req, ctx))
        } else if let Some(client) = req.uri.path().strip_prefix(BACKCHANNEL_PATH) {
            let client = client.to_owned();
            self.backchannel_logout(session, ctx, &client).await
        } else {
            self.sign_in(req, ctx).await
        };
        Some(match answer {
            Ok(mut rendered) => {
                self.decorate(&mut rendered.header, ctx);
                let head_only = session.req_header().method == http::Method::HEAD;
                async {
                    session
                        .write_response_header(Box::new(rendered.header), head_only)
                        .await?;
                    if !head_only {
                        session
                            .write_response_body(Some(rendered.body), true)
                            .await?;
                    }
                    Ok(true)
                }
                .await
            }
            Err(refusal) => self.refuse(session, ctx, refusal).await,
        })
    }

    /// A sign-in endpoint, answered by [`crate::identity::browser::Browser`]; what it learnt (client, caller, outcome) goes into `ctx`.
    async fn sign_in(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Rendered, Refusal> {
        let hinted = match self.identify(req, ctx) {
            Identified::Known { index, origin, .. } => Ok((index, origin)),
            Identified::Unknown(origin) => Err(UnknownOrigin(origin)),
        };
        let mut visit = self.visit(req, ctx, hinted);
        let answer = self.services.browser.answer(&mut visit).await;
        let (client, caller, outcome) = (visit.client, visit.caller.take(), visit.outcome);
        ctx.client = client.or(ctx.client);
        ctx.caller = caller;
        ctx.outcome = outcome;
        self.count_sign_in(ctx, &answer);
        answer
    }

    /// Sign-in metrics: a login started, completed, or failed (with a reason from a fixed set).
    fn count_sign_in(&self, ctx: &RequestCtx, answer: &Result<Rendered, Refusal>) {
        let metrics = &self.services.metrics;
        let client = self.client_name(ctx);
        match (ctx.outcome, answer) {
            ("login_start", Ok(_)) => metrics.logins_started.with_label_values(&[client]).inc(),
            ("login_callback", Ok(_)) => {
                metrics.logins_completed.with_label_values(&[client]).inc()
            }
            ("login_start" | "login_callback", Err(refusal)) => metrics
                .logins_failed
                .with_label_values(&[client, login_failure(refusal)])
                .inc(),
            _ => {}
        }
    }

    /// `POST /_authgate/backchannel-logout/{client}`: the IdP's server posts a logout token (no
    /// browser, no cookies, no origin): the form body is read (at most
    /// [`backchannel::MAX_BODY`]) and handed to [`crate::identity::browser::Browser::backchannel_logout`].
    async fn backchannel_logout(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        client: &str,
    ) -> Result<Rendered, Refusal> {
        ctx.outcome = "backchannel_logout";
        if session.req_header().method != http::Method::POST {
            return Err(Refusal::MethodNotAllowed(vec![http::Method::POST]));
        }
        let form = header(session.req_header(), &http::header::CONTENT_TYPE)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        // Anything but a form carries no logout token: answered 400 like a form without one.
        let body = if form {
            super::read_body(session, backchannel::MAX_BODY).await?
        } else {
            bytes::Bytes::new()
        };
        self.services
            .browser
            .backchannel_logout(client, &self.clients, &body, &ctx.request_id)
            .await
    }

    fn preflight(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Rendered {
        ctx.outcome = "preflight";
        let allowed = ctx.cors_origin.take().map(|origin| {
            cors::preflight_headers(&origin, header(req, &ACCESS_CONTROL_REQUEST_HEADERS))
        });
        responses::preflight(allowed, &ctx.request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::login_failure;
    use crate::responses::{LoginFailure, Refusal};

    #[test]
    fn sign_in_failures_are_labelled_by_their_kind_never_their_text() {
        for kind in LoginFailure::ALL {
            // Words that once chose a label by their text choose nothing now.
            let r = Refusal::LoginFailed {
                kind,
                reason: "the identity provider answered access_denied; the id_token was refused"
                    .to_string()
                    .into(),
                retry: None,
            };
            assert_eq!(login_failure(&r), kind.as_label());
        }
        assert_eq!(
            login_failure(&Refusal::IdpUnavailable("down".to_string().into())),
            "idp_unavailable"
        );
        assert_eq!(
            login_failure(&Refusal::NotAllowed("not a member".to_string().into())),
            "not_allowed"
        );
    }
}
