//! `impl ProxyHttp for Gateway`: Pingora's phases, each a few calls into the modules that own
//! the work. The request's journey is [`Gateway::authorize`], read top to bottom.

pub mod ctx;
mod endpoints;

use crate::authz::path;
use crate::authz::permissions::{self, Decision};
use crate::authz::routes::{RouteMatch, RouteTable};
use crate::clients::{ClientRegistry, Identified, TrustedProxies};
use crate::config::model::{Access, Config, SessionSettings};
use crate::identity::login::{PendingLogins, RefreshLocks};
use crate::identity::oidc::Oidc;
use crate::identity::session::{MemoryStore, SessionStore};
use crate::headers::{Identity, IdentityHeaders};
use crate::identity::credentials::{self, CredentialError};
use crate::identity::verify::{TokenError, Verifier};
use crate::metrics::Metrics;
use crate::responses::{self, Refusal};
use crate::upstream::Upstream;
use async_trait::async_trait;
use ctx::RequestCtx;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;

/// The gateway: everything a request needs, built once from the config.
pub struct Gateway {
    routes: RouteTable,
    clients: ClientRegistry,
    upstreams: Vec<Upstream>,
    verifier: Arc<Verifier>,
    headers: IdentityHeaders,
    metrics: Metrics,
    https: bool,
    realm: String,
    trusted_proxies: TrustedProxies,
    sessions: Arc<dyn SessionStore>,
    session_settings: SessionSettings,
    oidc: Oidc,
    logins: PendingLogins,
    refresh_locks: RefreshLocks,
}

impl Gateway {
    /// Builds the gateway from a validated config and a shared verifier.
    pub fn from_config(config: &Config, verifier: Arc<Verifier>, metrics: Metrics) -> Result<Gateway, String> {
        let routes = RouteTable::build(&config.routes).map_err(|conflicts| {
            conflicts.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; ")
        })?;
        let upstreams = config.upstreams.iter().map(Upstream::from_config).collect::<Result<Vec<_>, _>>()?;
        Ok(Gateway {
            routes,
            clients: ClientRegistry::from_config(&config.clients).with_default(config.default_client),
            upstreams,
            verifier,
            headers: IdentityHeaders::from_config(&config.headers),
            metrics,
            https: config.proxy.https,
            realm: "authgate".into(),
            trusted_proxies: config.proxy.trusted_proxies.clone(),
            sessions: Arc::new(MemoryStore::from_config(&config.session)),
            session_settings: config.session.clone(),
            oidc: Oidc::from_config(&config.idp),
            logins: PendingLogins::from_config(&config.session),
            refresh_locks: RefreshLocks::new(),
        })
    }

    /// Replaces the embedded in-memory session store (e.g. with a shared one).
    pub fn with_session_store(mut self, store: Arc<dyn SessionStore>) -> Gateway {
        self.sessions = store;
        self
    }

    /// The request's journey up to the upstream: path → route → client → credentials →
    /// token → permission. `Err` is the refusal to send instead of proxying.
    async fn authorize(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<(), Refusal> {
        let raw_path = req.uri.path();
        let path = path::normalize(raw_path).map_err(|e| Refusal::BadPath(e.to_string()))?;
        let host = request_host(req);
        let (route, index, params) = match self.routes.find(host.as_deref(), &path, &req.method) {
            RouteMatch::Found { route, index, params } => (route, index, params),
            RouteMatch::MethodNotAllowed { allowed } => return Err(Refusal::MethodNotAllowed(allowed)),
            RouteMatch::NotFound => return Err(Refusal::NoRoute),
        };
        ctx.route = Some(index);
        if path != raw_path {
            ctx.normalized_path = Some(path.into_owned());
        }
        if route.access == Access::Public {
            ctx.outcome = "public";
            return Ok(());
        }

        let (client_index, client, origin) = match self.identify(req, ctx) {
            Identified::Known { index, client, origin } => (index, client, origin),
            Identified::Unknown(origin) => return Err(Refusal::UnknownClient(origin)),
        };
        ctx.client = Some(client_index);

        let principal = match credentials::from_authorization(header(req, "authorization")) {
            Ok(credentials::Credential::Bearer(token)) => {
                let principal = self.verifier.verify(token).await.map_err(|e| match e {
                    TokenError::KeysUnavailable => Refusal::IdpUnavailable(e.to_string()),
                    e => Refusal::InvalidToken(e.to_string()),
                })?;
                if let Some(azp) = principal.authorized_party.as_deref() {
                    if azp != client.client_id && !client.allow_foreign_tokens {
                        return Err(Refusal::WrongClient(format!("the token was issued to another client application than {}", client.name)));
                    }
                }
                principal
            }
            Err(e @ CredentialError::Malformed) => return Err(Refusal::InvalidToken(e.to_string())),
            Err(CredentialError::Missing) => match self.session_principal(req, ctx, client_index).await? {
                Some(principal) => principal,
                // Browser sign-in needs HTTPS (or the operator's explicit local-development opt-in).
                None if self.navigation(req) && (ctx.https || self.session_settings.allow_insecure_http) => {
                    let return_to = format!("{origin}{}", req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
                    let location = self.start_login(req, ctx, client_index, &origin, return_to).await?;
                    return Err(Refusal::LoginRedirect(location));
                }
                None => return Err(Refusal::MissingCredentials),
            },
        };
        ctx.principal = Some(principal.clone());

        if let Access::Permission(required) = &route.access {
            let entity = format!("{}:{}", client.namespace, required.resource);
            let entity_id = required.entity_id.as_deref().and_then(|name| params.iter().find(|(n, _)| *n == name)).map(|(_, v)| v.as_str());
            match permissions::check(&principal, &entity, entity_id, &required.action) {
                Decision::Granted => ctx.granted = Some(format!("{entity}:{}", required.action)),
                Decision::NeedsLiveCheck => {
                    return Err(Refusal::Forbidden {
                        entity,
                        permission: required.action.clone(),
                        reason: "the token marks it for a live ABAC decision, which this gateway does not make yet".into(),
                    })
                }
                Decision::Denied => {
                    return Err(Refusal::Forbidden { entity, permission: required.action.clone(), reason: "the caller's token does not grant it".into() })
                }
            }
        }
        Ok(())
    }

    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, refusal: Refusal) -> Result<bool> {
        let req = session.req_header();
        let html = responses::wants_html(header(req, "accept"), header(req, "sec-fetch-mode"));
        let head_only = req.method == http::Method::HEAD;
        let mut rendered = refusal.render(&self.realm, html, &ctx.request_id);
        self.decorate(&mut rendered.header, ctx);
        ctx.outcome = refusal.outcome();
        tracing::info!(
            request_id = %ctx.request_id,
            status = rendered.header.status.as_u16(),
            outcome = ctx.outcome,
            route = self.route_name(ctx),
            client = self.client_name(ctx),
            subject = ctx.principal.as_ref().map(|p| p.subject.as_str()).unwrap_or("-"),
            reason = %refusal.detail(),
            "refused"
        );
        session.write_response_header(Box::new(rendered.header), head_only).await?;
        if !head_only {
            session.write_response_body(Some(rendered.body), true).await?;
        }
        Ok(true)
    }

    fn route_name(&self, ctx: &RequestCtx) -> &str {
        ctx.route.map(|i| self.routes.routes()[i].name.as_str()).unwrap_or("-")
    }

    fn client_name(&self, ctx: &RequestCtx) -> &str {
        ctx.client.map(|i| self.clients.all()[i].name.as_str()).unwrap_or("-")
    }
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers.get(name).map(|v| v.as_bytes())
}

/// The `Host` header, or the authority of an absolute-form / HTTP/2 request.
fn host_header(req: &RequestHeader) -> Option<&[u8]> {
    header(req, "host").or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()))
}

/// The request's host, lowercase, without port.
fn request_host(req: &RequestHeader) -> Option<String> {
    let raw = std::str::from_utf8(host_header(req)?).ok()?;
    let host = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    Some(host.to_ascii_lowercase())
}

fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// Every decision is made here, before any byte goes upstream: a refusal is written
    /// directly and ends the request.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = new_request_id();
        self.observe(session, ctx);
        if let Some(handled) = self.gateway_endpoint(session, ctx).await {
            return handled;
        }
        match self.authorize(session.req_header(), ctx).await {
            Ok(()) => Ok(false),
            Err(refusal) => self.refuse(session, ctx, refusal).await,
        }
    }

    /// The route chosen in `request_filter` names the upstream.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let route = ctx.route.map(|i| &self.routes.routes()[i]).ok_or_else(|| Error::explain(InternalError, "no route chosen"))?;
        Ok(self.upstreams[route.upstream].pick())
    }

    /// The upstream sees the normalised path, no client-sent identity headers, and the
    /// verified identity.
    async fn upstream_request_filter(&self, session: &mut Session, upstream: &mut RequestHeader, ctx: &mut RequestCtx) -> Result<()> {
        if let Some(p) = ctx.normalized_path.take() {
            let uri = match upstream.uri.query() {
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            let uri: http::Uri = uri.parse().or_err(InternalError, "normalised path is not a valid URI")?;
            upstream.set_uri(uri);
        }
        self.headers.strip(upstream);
        self.strip_own_cookies(upstream);
        if let Some(p) = &ctx.principal {
            self.headers.inject(
                upstream,
                &Identity {
                    subject: Some(&p.subject),
                    email: p.email.as_deref(),
                    client: ctx.client.map(|i| self.clients.all()[i].name.as_str()),
                    permission: ctx.granted.as_deref(),
                },
            );
        }
        upstream.insert_header("x-request-id", &ctx.request_id)?;
        let peer_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string());
        if let Some(ip) = peer_ip {
            let forwarded = match upstream.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip,
            };
            upstream.insert_header("x-forwarded-for", forwarded)?;
        }
        upstream.insert_header("x-forwarded-proto", if ctx.https { "https" } else { "http" })?;
        Ok(())
    }

    /// Responses carry the request id, so a user's report can be found in the logs.
    async fn response_filter(&self, _session: &mut Session, resp: &mut pingora::http::ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        resp.insert_header("x-request-id", &ctx.request_id)?;
        self.decorate(resp, ctx);
        Ok(())
    }

    /// Upstream failures get the same kind of answer as every other refusal.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let code = match e.etype() {
            HTTPStatus(code) => *code,
            ConnectTimedout | ReadTimedout | WriteTimedout => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code >= 500 {
            let _ = self.refuse(session, ctx, Refusal::UpstreamFailed(code)).await;
            tracing::warn!(request_id = %ctx.request_id, route = self.route_name(ctx), error = %e, "upstream failed");
        } else if code > 0 {
            let _ = session.respond_error(code).await;
        }
        ctx.outcome = if code >= 500 { "upstream_error" } else { "client_error" };
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// Counts every request once, by route, client and outcome.
    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        self.metrics.requests.with_label_values(&[self.route_name(ctx), self.client_name(ctx), ctx.outcome]).inc();
        self.metrics.latency.with_label_values(&[ctx.outcome]).observe(ctx.started.elapsed().as_secs_f64());
    }
}
