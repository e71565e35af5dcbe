//! `impl ProxyHttp for Gateway`: Pingora's phases, each a few calls into the modules that own
//! the work. The request's journey is [`Gateway::authorize`] then, for permissions the token
//! marks for a live decision, [`Gateway::live_check`], read top to bottom.

pub mod ctx;
mod endpoints;
mod expiry;
pub mod live;
mod socket_watch;

use crate::authz::abac::{self, AbacClient, CheckRequest, Outcome};
use crate::authz::grants::GrantTable;
use crate::authz::host::request_host;
use crate::authz::overrides;
use crate::authz::path;
use crate::authz::permissions::PermissionNames;
use crate::authz::permissions::{self, Decision};
use crate::authz::routes::{RouteMatch, RouteTable};
use crate::clients::{Binding, ClientError, ClientRegistry, Identified, Served};
use crate::config::model::{Access, Config, ProviderKind, ProxySettings, RouteSpec};
use crate::headers::{names, Identity, IdentityHeaders};
use crate::identity::apikey::{ApiKeyError, ApiKeys};
use crate::identity::assertion::{self, Asserter, AssertionError};
use crate::identity::browser::{Browser, BrowserError, SignInProviders};
use crate::identity::credentials::{self, Caller, Credential, CredentialError};
use crate::identity::verify::{TokenError, Verifier};
use crate::metrics::{Metrics, RequestCounters};
use crate::origin::Origin;
use crate::responses::{self, Cause, Refusal};
use crate::upstream::{Upstream, UpstreamError};
use bytes::{Bytes, BytesMut};
use ctx::RequestCtx;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};
use std::sync::Arc;

/// The gateway: everything a request needs, built once from the config.
pub struct Gateway {
    /// What a reload keeps: the IdP's keys, the caches, sessions and logins in flight.
    services: Arc<Services>,
    routes: RouteTable,
    /// Each route's permission in each client's namespace, by route and client index.
    permission_names: Vec<Vec<Option<Arc<PermissionNames>>>>,
    /// The client apps each route serves, by route index.
    served: Vec<Served>,
    /// Kept across a reload while their settings do not change (health, connections in flight).
    upstreams: Vec<Arc<Upstream>>,
    clients: ClientRegistry,
    /// Each client's name as a header value, by client index.
    client_values: Vec<http::HeaderValue>,
    headers: IdentityHeaders,
    proxy: ProxySettings,
    /// Each client's `[[clients.grants]]`.
    grants: GrantTable,
    /// The sign-in providers (GitHub's clients; the `[idp]`'s code flow is in `Browser`).
    providers: SignInProviders,
    /// Each provider's name and issuer (the `[idp]`'s `issuer`, a GitHub-type provider's
    /// `base_url`), for the signed identity's `provider_iss`.
    issuers: Vec<(String, String)>,
    /// `{name}:` of each GitHub-type provider: the prefix of its users' subjects upstream, which
    /// an `[idp]` subject may not begin with (compared ignoring case).
    forge_prefixes: Vec<String>,
    /// Request metric handles kept per route and client.
    counters: RequestCounters,
}

/// The parts of a gateway that outlive a config reload.
struct Services {
    verifier: Arc<Verifier>,
    api_keys: ApiKeys,
    api_key_header: http::HeaderName,
    abac: AbacClient,
    asserter: Asserter,
    /// Browser sign-in: sessions, logins in flight, the IdP's code flow.
    browser: Browser,
    metrics: Metrics,
}

/// Why a gateway cannot be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The verifier was built for other API-key audiences than the config names.
    #[error("the verifier accepts API-key tokens for other audiences than api_keys.audience: build it with Verifier::with_api_key_audiences")]
    ApiKeyAudiences,
    /// `api_keys.header` is not a header name.
    #[error("api_keys.header: {0}")]
    ApiKeyHeader(#[source] http::header::InvalidHeaderName),
    /// The identity assertion keys cannot be set up.
    #[error("identity_jwt: {0}")]
    Assertion(#[source] AssertionError),
    /// Browser sign-in cannot be set up.
    #[error(transparent)]
    Browser(#[from] BrowserError),
    /// An upstream's peers cannot be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "authgate";

impl Gateway {
    /// Builds the gateway from a validated config and the one verifier (built with
    /// [`Verifier::with_api_key_audiences`] for `api_keys.audience`).
    /// `routes` is `config`'s route table (see [`RouteTable::from_config`]).
    pub fn from_config(
        config: &Config,
        routes: RouteTable,
        verifier: Arc<Verifier>,
        metrics: Metrics,
    ) -> Result<Gateway, GatewayError> {
        // Exchanged API-key tokens go through the same verifier, for their own audience set.
        if verifier.api_key_audiences() != config.api_keys.audiences.as_slice() {
            return Err(GatewayError::ApiKeyAudiences);
        }
        let services = Services {
            api_keys: ApiKeys::from_config(
                config.idp.api_key_exchange_url.clone(),
                config.idp.timeout,
                &config.api_keys,
                verifier.clone(),
                metrics.clone(),
            ),
            api_key_header: http::HeaderName::from_bytes(config.api_keys.header.as_bytes())
                .map_err(GatewayError::ApiKeyHeader)?,
            abac: AbacClient::from_config(
                config.idp.check_permission_url.clone(),
                config.idp.timeout,
                &config.abac,
                metrics.clone(),
            ),
            asserter: Asserter::from_config(&config.identity_jwt)
                .map_err(GatewayError::Assertion)?,
            browser: Browser::from_config(config, verifier.clone(), metrics.clone())?,
            verifier,
            metrics,
        };
        Gateway::assemble(config, routes, Arc::new(services), &[])
    }

    /// A gateway for a reloaded config: routes, clients, upstreams, headers and proxy flags
    /// from `config`; the IdP's keys, every cache, the sessions and logins in progress carried
    /// over from this one, so a reload signs nobody out.
    pub fn reloaded(&self, config: &Config, routes: RouteTable) -> Result<Gateway, GatewayError> {
        Gateway::assemble(config, routes, self.services.clone(), &self.upstreams)
    }

    /// What a config decides, around the long-lived `services`; an upstream of `previous` whose
    /// settings are unchanged is kept, with its addresses' health and connections in flight.
    fn assemble(
        config: &Config,
        routes: RouteTable,
        services: Arc<Services>,
        previous: &[Arc<Upstream>],
    ) -> Result<Gateway, GatewayError> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| match previous.iter().find(|p| p.settings() == u) {
                Some(kept) => Ok(kept.clone()),
                None => Upstream::from_config(u, &services.metrics).map(Arc::new),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let clients =
            ClientRegistry::from_config(&config.clients).with_default(config.default_client);
        let counters = RequestCounters::new(
            &services.metrics,
            routes.routes().len(),
            clients.all().len(),
        );
        Ok(Gateway {
            routes,
            permission_names: PermissionNames::table(&config.routes, &config.clients),
            served: config
                .routes
                .iter()
                .map(|r| Served::new(r.clients.as_deref(), &config.clients))
                .collect(),
            upstreams,
            client_values: clients
                .all()
                .iter()
                .map(|c| crate::headers::encode(&c.name))
                .collect(),
            clients,
            headers: IdentityHeaders::from_config(&config.headers).also_strip([
                services.api_key_header.clone(),
                services.asserter.header().clone(),
            ]),
            proxy: config.proxy.clone(),
            grants: GrantTable::from_config(&config.clients, services.browser.pins()),
            providers: SignInProviders::from_config(&config.providers)
                .map_err(BrowserError::from)?,
            issuers: config
                .providers
                .iter()
                .map(|p| {
                    let issuer = match &p.kind {
                        ProviderKind::Oidc => config.idp.issuer.clone(),
                        ProviderKind::GitHub(g) => {
                            g.base_url.as_str().trim_end_matches('/').to_string()
                        }
                    };
                    (p.name.clone(), issuer)
                })
                .collect(),
            forge_prefixes: config
                .providers
                .iter()
                .filter(|p| matches!(p.kind, ProviderKind::GitHub(_)))
                .map(|p| format!("{}:", p.name))
                .collect(),
            counters,
            services,
        })
    }

    /// The upstreams, for the health-check service.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The session store (one for the process: reloads keep it), for `/readyz`.
    pub fn session_store(&self) -> Arc<dyn crate::identity::session::SessionStore> {
        self.services.browser.sessions()
    }
}

/// Where a request goes: its route (with its index) and the values the path gave its parameters.
struct Routed<'g> {
    route: &'g RouteSpec,
    index: usize,
    params: Vec<(&'g str, String)>,
    /// On a shadow route (`enforce = false`): the enforced route it hides from this request,
    /// whose rule still applies ([`crate::authz::routes::RouteTable::hidden_by_shadow`]).
    hidden: Option<Box<Routed<'g>>>,
}

impl Routed<'_> {
    /// The entity id the route's permission names, from the path.
    fn entity_id(&self) -> Option<&str> {
        let Access::Permission(required) = &self.route.access else {
            return None;
        };
        let name = required.entity_id.as_deref()?;
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Gateway {
    /// The decision, in the order a reader follows it: route → client → caller → permission →
    /// live check. Each step saves what it found in `ctx`; the first refusal ends the request.
    /// A route whose live check reads the body has it read here, before the decision.
    /// On a route with a method list, a `_method` override in the query or a POST's body is
    /// refused on every kind of route (see [`crate::authz::overrides`]).
    async fn decide(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), Refusal> {
        let routed = self.route_step(session.req_header(), ctx)?;
        if overrides_apply(routed.route) {
            overrides::in_query(session.req_header().uri.query())
                .map_err(|e| Refusal::AmbiguousRequest(Cause::of(e)))?;
        }
        let mut body = None;
        if routed.route.access == Access::Public {
            ctx.outcome = "public";
            return override_in_body(session, &routed, &mut body).await;
        }
        if routed.route.enforce {
            self.access_steps(session, ctx, &routed, &mut body).await
        } else {
            let decided = self.access_steps(session, ctx, &routed, &mut body).await;
            self.shadow(session.req_header(), ctx, routed.route, decided)?;
            if let Some(hidden) = &routed.hidden {
                // The shadow rule only logged its decision; the rule it hides decides, and
                // what reaches the upstream (identity, permission) is that decision's.
                ctx.reset_decision();
                self.access_steps(session, ctx, hidden, &mut body).await?;
            }
            override_in_body(session, &routed, &mut body).await
        }
    }

    /// Client → caller → binding → permission → body → live check, for a routed request. The
    /// body is read (into `body`) when the live check or a `_method` check reads it.
    async fn access_steps(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        routed: &Routed<'_>,
        body: &mut Option<Bytes>,
    ) -> Result<(), Refusal> {
        let (client, origin) = self.client_step(session.req_header(), ctx)?;
        self.caller_step(
            session.req_header(),
            ctx,
            client,
            &origin,
            routed.route.enforce,
        )
        .await?;
        self.binding_step(routed, ctx, client)?;
        let live = self.permission_step(routed, ctx)?;
        if live && routed.route.needs_body() {
            *body = Some(read_body(session, routed.route.body_limit).await?);
        }
        // Before the live check: the IdP is never asked about a method the upstream won't serve.
        override_in_body(session, routed, body).await?;
        if !live {
            return Ok(());
        }
        self.live_check(session.req_header(), body.as_deref(), routed, ctx)
            .await
    }

    /// A shadow rule (`enforce = false`): the decision is counted and logged, and the request
    /// goes upstream as if allowed, with only what the gateway vouches for: a caller whose
    /// credential was not verified gets no identity headers (and no `Authorization`, even with
    /// `forward_token`); a verified caller whose client app did not settle gets no client
    /// header; no caller gets a permission header for a permission it was not granted.
    /// Refusals about the request's shape (an unreadable or oversized body, an ambiguous
    /// value) are not decisions: they stay refusals.
    fn shadow(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        route: &RouteSpec,
        decided: Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        let refusal = match decided {
            Ok(()) => {
                self.services
                    .metrics
                    .shadow_decisions
                    .with_label_values(&[route.name.as_str(), "allow"])
                    .inc();
                tracing::debug!(request_id = %ctx.request_id, route = %route.name, "shadow rule would allow");
                return Ok(());
            }
            Err(refusal) if !refusal.is_access_decision() => return Err(refusal),
            Err(refusal) => refusal,
        };
        self.services
            .metrics
            .shadow_decisions
            .with_label_values(&[route.name.as_str(), "refuse"])
            .inc();
        let entity = ctx.required.as_ref().map(|n| &*n.entity).unwrap_or("-");
        let permission = ctx.required.as_ref().map(|n| &*n.action).unwrap_or("-");
        tracing::info!(
            request_id = %ctx.request_id,
            trace_id = crate::trace::of(req),
            route = %route.name,
            client = self.client_name(ctx),
            credential = ctx.credential,
            subject = ctx.caller.as_ref().map(|c| c.principal.subject.as_str()).unwrap_or("-"),
            entity,
            permission,
            would = refusal.outcome(),
            reason = %refusal.detail(),
            "shadow rule would refuse; proxied as if allowed (enforce = false)"
        );
        ctx.granted = None;
        ctx.decision = "shadow";
        if !ctx.client_settled {
            ctx.client = None;
        }
        ctx.shadow_unverified = ctx.caller.is_none();
        Ok(())
    }

    /// Counts and logs what the client's shadow grants (`enforce = false`) would change for the
    /// caller's permission, which its token does not grant; they change nothing.
    fn shadow_grants(&self, ctx: &RequestCtx, client: usize, names: &PermissionNames) {
        let Some(caller) = ctx.caller.as_ref() else {
            return;
        };
        let client_name = self
            .clients
            .all()
            .get(client)
            .map_or("-", |c| c.name.as_str());
        for (grant, effect) in
            self.grants
                .shadow_effects(client, &caller.principal, &names.entity, &names.action)
        {
            self.services
                .metrics
                .shadow_grants
                .with_label_values(&[client_name, grant, effect.as_label()])
                .inc();
            tracing::info!(
                request_id = %ctx.request_id,
                client = client_name,
                grant,
                subject = %caller.principal.subject,
                entity = %names.entity,
                permission = %names.action,
                would = effect.as_label(),
                "shadow grant would change the decision; not applied (enforce = false)"
            );
        }
    }

    /// Host and path → route. Saves the route's index, and the path and host the upstream gets
    /// when they differ from the ones received.
    fn route_step<'g>(
        &'g self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Routed<'g>, Refusal> {
        let host = request_host(req).map_err(|e| Refusal::BadHost(Cause::of(e)))?;
        if !req.raw_path_is_utf8() {
            return Err(Refusal::BadPath(Cause::of(path::PathError::InvalidUtf8)));
        }
        let raw_path = req.uri.path();
        let path = path::normalize(raw_path).map_err(|e| Refusal::BadPath(Cause::of(e)))?;
        let routed = match self
            .routes
            .resolve(host.as_ref().map(|h| &*h.name), &path, &req.method)
        {
            Ok(RouteMatch::Found {
                route,
                index,
                params,
            }) => Routed {
                route,
                index,
                params,
                hidden: None,
            },
            Ok(RouteMatch::MethodNotAllowed { allowed }) => {
                return Err(Refusal::MethodNotAllowed(allowed))
            }
            Ok(RouteMatch::NotFound) => return Err(Refusal::NoRoute),
            Err(e) => return Err(Refusal::BadPath(Cause::of(e))),
        };
        let mut routed = routed;
        if !routed.route.enforce {
            let hidden = self
                .routes
                .hidden_by_shadow(host.as_ref().map(|h| &*h.name), &path, &req.method)
                .map_err(|e| Refusal::BadPath(Cause::of(e)))?;
            if let Some(RouteMatch::Found {
                route,
                index,
                params,
            }) = hidden
            {
                routed.hidden = Some(Box::new(Routed {
                    route,
                    index,
                    params,
                    hidden: None,
                }));
            }
        }
        ctx.route = Some(routed.index);
        // An absolute-form target or a rewritten host: the upstream gets origin-form and the routed host.
        let absolute_form = req.raw_path().first() != Some(&b'/') && req.raw_path() != b"*";
        ctx.upstream_host = host.and_then(|h| h.forward);
        if path.forward != raw_path || absolute_form {
            ctx.normalized_path = Some(path.forward.into_owned());
        }
        Ok(routed)
    }

    /// The client the request's origin hints name; it decides nothing on its own (see
    /// [`Gateway::binding_step`]). Returns its index with the origin it was found by.
    fn client_step(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(usize, Origin), Refusal> {
        match self.identify(req, ctx) {
            Identified::Known { index, origin, .. } => {
                ctx.client = Some(index);
                Ok((index, origin))
            }
            Identified::Unknown(origin) => Err(Refusal::UnknownClient(origin)),
        }
    }

    /// Credential → verified [`Caller`]: a bearer token, an API key (exchanged at the IdP), else
    /// the session cookie. A browser without any is sent to sign in.
    /// `sign_in`: a browser without a session may be sent to sign in (not on a shadow rule,
    /// which lets it through instead).
    async fn caller_step(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        client: usize,
        origin: &Origin,
        sign_in: bool,
    ) -> Result<(), Refusal> {
        let caller = match credentials::from_request(
            ctx.hints.authorization.as_ref(),
            ctx.hints.api_key.as_ref(),
        ) {
            Ok(Credential::Bearer(token)) => {
                ctx.credential = "bearer";
                let principal = self
                    .services
                    .verifier
                    .verify(token.as_bytes())
                    .await
                    .map_err(|e| match e {
                        TokenError::KeysUnavailable => Refusal::IdpUnavailable(Cause::of(e)),
                        e => Refusal::InvalidToken(Cause::of(e)),
                    })?;
                Caller {
                    principal,
                    credential: Credential::Bearer(token),
                }
            }
            Ok(credential) => {
                ctx.credential = "api_key";
                let principal = self
                    .services
                    .api_keys
                    .authenticate(credential.presented(), self.client_ip(req, ctx))
                    .await
                    .map_err(|e| match e {
                        ApiKeyError::Unavailable(why) => Refusal::IdpUnavailable(why.into()),
                        e @ ApiKeyError::Limited(limited, _) => Refusal::TooManyRequests {
                            retry_after: limited.retry_after(),
                            reason: Cause::of(e),
                        },
                        e => Refusal::InvalidToken(Cause::of(e)),
                    })?;
                Caller {
                    principal,
                    credential,
                }
            }
            Err(CredentialError::Missing) => {
                let navigation = self.navigation(req);
                let mut visit = self.visit(req, ctx, Ok((client, origin.clone())));
                match self
                    .services
                    .browser
                    .session_caller(&mut visit, client)
                    .await?
                {
                    Some((caller, id)) => {
                        ctx.credential = "session";
                        ctx.session_id = Some(id);
                        // A cookie rides along on requests from any page of the site: one that
                        // changes state or upgrades must come from the client's own pages.
                        self.cookie_request_allowed(req, client)?;
                        caller
                    }
                    // Browser sign-in needs HTTPS (or the operator's explicit local-development opt-in).
                    None if sign_in
                        && navigation
                        && (visit.https || self.services.browser.allows_insecure_http()) =>
                    {
                        let return_to = format!(
                            "{origin}{}",
                            req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
                        );
                        let location = self
                            .services
                            .browser
                            .start_login(&mut visit, client, origin, return_to)
                            .await?;
                        let name = self
                            .clients
                            .all()
                            .get(client)
                            .map_or("-", |c| c.name.as_str());
                        self.services
                            .metrics
                            .logins_started
                            .with_label_values(&[name])
                            .inc();
                        return Err(Refusal::LoginRedirect(location));
                    }
                    None => return Err(Refusal::MissingCredentials),
                }
            }
            Err(e) => return Err(Refusal::InvalidToken(Cause::of(e))),
        };
        self.distinct_subject(&caller.principal)?;
        ctx.caller = Some(caller);
        Ok(())
    }

    /// Refuses an `[idp]` subject that begins with a GitHub-type provider's `{name}:` (ignoring
    /// case): upstreams would take it for that provider's user (`github:583231`). Nothing to
    /// compare when no such provider is configured.
    fn distinct_subject(&self, p: &crate::identity::Principal) -> Result<(), Refusal> {
        if self.forge_prefixes.is_empty() || p.github.is_some() {
            return Ok(());
        }
        let taken = self.forge_prefixes.iter().find(|prefix| {
            p.subject
                .as_bytes()
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
        });
        match taken {
            Some(prefix) => Err(Refusal::NotAllowed(
                format!(
                    "the identity provider's subject begins with {prefix:?}, the form of another sign-in provider's users' subjects; the gateway cannot vouch for it"
                )
                .into(),
            )),
            None => Ok(()),
        }
    }

    /// A session cookie authorises a method other than GET, HEAD or OPTIONS, or a WebSocket
    /// (any `Upgrade`), only from its client's own pages ([`ClientRegistry::same_origin`]),
    /// whatever `default_client` maps an unknown origin to. Refused (403) before the caller is
    /// saved, so a shadow route lets it through without the session's identity.
    fn cookie_request_allowed(&self, req: &RequestHeader, client: usize) -> Result<(), Refusal> {
        let upgrade = req.headers.contains_key(http::header::UPGRADE);
        let safe = matches!(
            req.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        if safe && !upgrade {
            return Ok(());
        }
        self.clients
            .same_origin(
                client,
                || {
                    if upgrade {
                        "WebSocket upgrade".into()
                    } else {
                        format!("{} request", req.method)
                    }
                },
                req.headers
                    .get_all(http::header::ORIGIN)
                    .iter()
                    .map(|v| v.as_bytes()),
                req.headers
                    .get_all(&SEC_FETCH_SITE)
                    .iter()
                    .map(|v| v.as_bytes()),
            )
            .map_err(|e| Refusal::CrossSite(Cause::of(e)))
    }

    /// Whose permissions apply: the credential's client, never one a header names for it.
    /// Saves the client the route is served for.
    fn binding_step(
        &self,
        routed: &Routed<'_>,
        ctx: &mut RequestCtx,
        client: usize,
    ) -> Result<(), Refusal> {
        let caller = ctx.caller.as_ref().ok_or(Refusal::MissingCredentials)?;
        let detected = self.clients.all().get(client).ok_or(Refusal::NoRoute)?;
        let binding = match &caller.credential {
            Credential::Bearer(_) => self.clients.token_binding(
                caller.principal.authorized_party.as_deref(),
                &caller.principal.audiences,
            ),
            Credential::ApiKey(_) => Binding::Unbound,
            // The session store checked that the session is the detected client's.
            Credential::Session(_) => Binding::Client(&detected.client_id),
        };
        let served = self.served.get(routed.index).ok_or(Refusal::NoRoute)?;
        let needs_namespace = matches!(routed.route.access, Access::Permission(_));
        let settled = self
            .clients
            .settle(client, binding, served, needs_namespace, &routed.route.name)
            .map_err(|e| match e {
                e @ ClientError::IssuedToAnother { .. } => Refusal::WrongClient(Cause::of(e)),
                e => Refusal::ClientNotServed(Cause::of(e)),
            })?;
        ctx.client = settled.client;
        ctx.namespace = settled.namespace;
        ctx.client_settled = true;
        Ok(())
    }

    /// The route's permission in the client's namespace, against the token's claims. Saves the
    /// permission required and, when the claims grant it, the permission granted.
    /// `Ok(true)`: the token leaves the decision to the IdP's live check.
    fn permission_step(&self, routed: &Routed<'_>, ctx: &mut RequestCtx) -> Result<bool, Refusal> {
        let Access::Permission(_) = &routed.route.access else {
            ctx.decision = "authenticated";
            return Ok(false);
        };
        let namespace = ctx.namespace.ok_or(Refusal::NoRoute)?;
        let names = self
            .permission_names
            .get(routed.index)
            .and_then(|r| r.get(namespace)?.clone())
            .ok_or(Refusal::NoRoute)?;
        let caller = ctx.caller.as_ref().ok_or(Refusal::MissingCredentials)?;
        let mut decision = permissions::check(
            &caller.principal,
            &names.entity,
            routed.entity_id(),
            &names.action,
        );
        // The config's grants, asked only when the token's claims do not grant it; never for
        // API keys, whose exchanged token carries the key's own permissions; and only a
        // settled client's (a credential decided in a shared namespace names no client).
        let grants_client = ctx
            .client
            .filter(|_| !matches!(caller.credential, Credential::ApiKey(_)));
        if let Some(client) = grants_client.filter(|c| self.grants.has_shadow(*c)) {
            if decision == Decision::Denied {
                self.shadow_grants(ctx, client, &names);
            }
        }
        if decision == Decision::Denied
            && grants_client.is_some_and(|client| {
                self.grants
                    .grants(client, &caller.principal, &names.entity, &names.action)
            })
        {
            decision = Decision::Granted;
            ctx.decision = "grant";
        } else {
            ctx.decision = "static";
        }
        ctx.required = Some(names.clone());
        match decision {
            Decision::Granted => {
                ctx.granted = Some(names);
                Ok(false)
            }
            Decision::Denied => Err(Refusal::Forbidden {
                entity: names.entity.to_string(),
                permission: names.action.to_string(),
                reason: "the caller's token does not grant it".into(),
            }),
            Decision::NeedsLiveCheck => Ok(true),
        }
    }

    /// The IdP decides, asked as the caller: attributes are read from the request (its JSON
    /// body too, when the route asks: read by [`Gateway::decide`] and replayed upstream unchanged).
    async fn live_check(
        &self,
        req: &RequestHeader,
        body: Option<&[u8]>,
        routed: &Routed<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        let route = routed.route;
        let parts = abac::RequestParts {
            params: &routed.params,
            query: req.uri.query(),
            headers: &req.headers,
            body,
            content_type: req
                .headers
                .get(&http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        };
        let attributes = abac::collect(&route.attributes, &parts).map_err(|e| {
            if e.is_ambiguous() {
                Refusal::AmbiguousRequest(Cause::of(e))
            } else {
                Refusal::UnreadableBody {
                    status: e.status(),
                    reason: Cause::of(e),
                }
            }
        })?;
        let (Some(caller), Some(names)) = (&ctx.caller, &ctx.required) else {
            return Err(Refusal::MissingCredentials);
        };
        let names = names.clone();
        let request = CheckRequest {
            subject: &caller.principal.subject,
            entity_type: &names.entity,
            entity_id: routed.entity_id(),
            permission: &names.action,
            attributes,
        };
        let outcome = self.services.abac.check(&caller.credential, &request).await;
        match outcome {
            Outcome::Allowed { cached } => {
                ctx.abac_cached = Some(cached);
                ctx.decision = "abac";
                ctx.granted = Some(names);
                Ok(())
            }
            Outcome::Denied { cached, reason } => {
                ctx.abac_cached = Some(cached);
                ctx.decision = "abac";
                Err(Refusal::Forbidden {
                    entity: names.entity.to_string(),
                    permission: names.action.to_string(),
                    reason,
                })
            }
            // Only unavailability of the IdP may be allowed, only where the operator said so,
            // and only for a caller whose own calls did not find it unavailable (its load must
            // not buy it a fail-open).
            Outcome::Unavailable {
                why,
                fail_open: true,
            } if route.allow_on_error => {
                tracing::warn!(request_id = %ctx.request_id, route = %route.name, reason = %why, "live permission check unavailable; allowed by the route's on_error = \"allow\"");
                ctx.decision = "abac-unavailable-allowed";
                ctx.granted = Some(names);
                Ok(())
            }
            Outcome::Unavailable { why, .. } => {
                if route.allow_on_error {
                    // Its calls opened the breaker (no call now), or this very call failed.
                    let reason = if why == abac::CIRCUIT_OPEN {
                        "opened_breaker"
                    } else {
                        "own_call_failed"
                    };
                    tracing::warn!(request_id = %ctx.request_id, route = %route.name, reason = %why, "live permission check unavailable; not allowed by on_error = \"allow\": this caller's own calls found the IdP unavailable");
                    self.services
                        .metrics
                        .load_refusals
                        .with_label_values(&["abac_fail_open", reason])
                        .inc();
                }
                ctx.decision = "abac";
                Err(Refusal::IdpUnavailable(
                    format!("the live permission check failed: {why}").into(),
                ))
            }
            Outcome::Limited(limited) => {
                ctx.decision = "abac";
                Err(Refusal::TooManyRequests {
                    retry_after: limited.retry_after(),
                    reason: "this caller has too many live permission checks in progress or started this second".into(),
                })
            }
            // An answer without a decision: refused whatever `on_error` says (the caller may have caused it).
            Outcome::Failed(why) => {
                tracing::warn!(request_id = %ctx.request_id, route = %route.name, reason = %why, "live permission check got no decision; refused");
                ctx.decision = "abac";
                Err(Refusal::IdpUnavailable(
                    format!("the live permission check failed: {why}").into(),
                ))
            }
        }
    }

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<bool> {
        let req = session.req_header();
        let html = responses::wants_html(
            header(req, &http::header::ACCEPT),
            header(req, &names::SEC_FETCH_MODE),
        );
        let head_only = req.method == http::Method::HEAD;
        let brand = ctx
            .client
            .and_then(|i| self.clients.all().get(i))
            .map(|c| &c.branding);
        let mut rendered = refusal.render_branded(
            REALM,
            html,
            &ctx.request_id,
            self.proxy.debug_reason_header,
            brand,
        );
        self.decorate(&mut rendered.header, ctx);
        ctx.outcome = refusal.outcome();
        let entity = ctx.required.as_ref().map(|n| &*n.entity).unwrap_or("-");
        let permission = ctx.required.as_ref().map(|n| &*n.action).unwrap_or("-");
        tracing::info!(
            request_id = %ctx.request_id,
            trace_id = crate::trace::of(req),
            status = rendered.header.status.as_u16(),
            outcome = ctx.outcome,
            route = self.route_name(ctx),
            client = self.client_name(ctx),
            credential = ctx.credential,
            subject = ctx.caller.as_ref().map(|c| c.principal.subject.as_str()).unwrap_or("-"),
            entity,
            permission,
            decision = ctx.decision,
            abac_cache_hit = ?ctx.abac_cached,
            reason = %refusal.detail(),
            "refused"
        );
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

    async fn serve_jwks(&self, session: &mut Session) -> Result<bool> {
        let rendered = responses::jwks(self.services.asserter.jwks());
        session
            .write_response_header(Box::new(rendered.header), false)
            .await?;
        session
            .write_response_body(Some(rendered.body), true)
            .await?;
        Ok(true)
    }

    fn route(&self, ctx: &RequestCtx) -> Option<&RouteSpec> {
        ctx.route.and_then(|i| self.routes.routes().get(i))
    }

    fn route_name(&self, ctx: &RequestCtx) -> &str {
        self.route(ctx).map(|r| r.name.as_str()).unwrap_or("-")
    }

    fn client_name(&self, ctx: &RequestCtx) -> &str {
        ctx.client
            .and_then(|i| self.clients.all().get(i))
            .map_or("-", |c| c.name.as_str())
    }
}

/// Whether `_method` overrides are refused on `route`: it has a method list, and its upstream
/// may honour them (`method_overrides`).
fn overrides_apply(route: &RouteSpec) -> bool {
    route.methods.is_some() && route.upstream_reads.method_overrides
}

/// Refuses a POST whose body has a `_method` field a framework would take for the method, on
/// routes where [`overrides_apply`]: the body (form, multipart or JSON, see
/// [`overrides::body_form`]) is read into `body` (at most the route's `body_limit`: 413 beyond)
/// unless it was read already (for the live check).
async fn override_in_body(
    session: &mut Session,
    routed: &Routed<'_>,
    body: &mut Option<Bytes>,
) -> Result<(), Refusal> {
    let req = session.req_header();
    // Only a POST's body is read for a method (no header lookup for the others).
    if req.method != http::Method::POST || !overrides_apply(routed.route) {
        return Ok(());
    }
    let Some(form) = overrides::body_form(&req.method, header(req, &http::header::CONTENT_TYPE))
    else {
        return Ok(());
    };
    let bytes = match body {
        Some(read) => read.clone(),
        None => {
            let read = read_body(session, routed.route.body_limit).await?;
            *body = Some(read.clone());
            read
        }
    };
    overrides::in_body(form, &bytes).map_err(|e| Refusal::AmbiguousRequest(Cause::of(e)))
}

/// Reads the whole request body, at most `limit` bytes, keeping it for replay upstream.
pub(super) async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, Refusal> {
    let declared = session
        .req_header()
        .headers
        .get(&http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Refusal::BodyTooLarge(limit));
    }
    session.enable_retry_buffering();
    let mut buf = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(Refusal::BodyTooLarge(limit));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(Refusal::UnreadableBody {
                    status: 400,
                    reason: format!(
                        "the request body could not be read ({})",
                        e.etype().as_str()
                    )
                    .into(),
                })
            }
        }
    }
    Ok(buf.freeze())
}

fn header<'a>(req: &'a RequestHeader, name: &http::HeaderName) -> Option<&'a [u8]> {
    req.headers.get(name).map(|v| v.as_bytes())
}

/// `sec-fetch-site`, read for cookie-authenticated requests that change state.
static SEC_FETCH_SITE: http::HeaderName = http::HeaderName::from_static("sec-fetch-site");

/// `x-request-id` as Pingora takes a header name without copying it (for the response).
static X_REQUEST_ID: Bytes = Bytes::from_static(b"x-request-id");

/// The phases Pingora runs, called by [`live::LiveGateway`] on the gateway the request pinned.
/// Plain methods rather than a second `ProxyHttp` impl: no boxed future per phase.
impl Gateway {
    /// Every decision is made here, before any byte goes upstream: a refusal is written
    /// directly and ends the request.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = ctx::RequestId::random();
        self.observe(session, ctx);
        if let Some(handled) = self.gateway_endpoint(session, ctx).await {
            return handled;
        }
        let req = session.req_header();
        if req.uri.path() == assertion::JWKS_PATH && req.method == http::Method::GET {
            ctx.outcome = "jwks";
            return self.serve_jwks(session).await;
        }
        if let Some(why) = self.headers.refuses(session.req_header()) {
            // The body (if any) is left unread, and its framing may be the trouble: no reuse.
            session.set_keepalive(None);
            let refusal = if why.not_implemented() {
                Refusal::UnsupportedTransferCoding(Cause::of(why))
            } else {
                Refusal::BadHeader(Cause::of(why))
            };
            return self.refuse(session, ctx, refusal).await;
        }
        match self.decide(session, ctx).await {
            Ok(()) => Ok(false),
            Err(refusal) => self.refuse(session, ctx, refusal).await,
        }
    }

    /// The route chosen in `request_filter` names the upstream; a retry avoids the address
    /// that could not be connected to.
    fn upstream_peer(&self, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let route = self
            .route(ctx)
            .ok_or_else(|| Error::explain(InternalError, "no route chosen"))?;
        let avoid = if ctx.upstream_tries > 0 {
            ctx.peer_index
        } else {
            None
        };
        let picked = self
            .upstreams
            .get(route.upstream)
            .and_then(|u| u.pick(avoid))
            .ok_or_else(|| Error::explain(InternalError, "the route's upstream has no address"))?;
        ctx.upstream_tries += 1;
        ctx.peer_index = Some(picked.index);
        ctx.lease = picked.lease;
        ctx.upstream_started = Some(std::time::Instant::now());
        Ok(picked.peer)
    }

    /// A request that could not connect is retried on another address when its method is
    /// idempotent and the upstream's `retries` allow (nothing was sent, but a non-idempotent
    /// request is not second-guessed).
    fn fail_to_connect(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(upstream) = self.route(ctx).and_then(|r| self.upstreams.get(r.upstream)) else {
            return e;
        };
        let method = &session.req_header().method;
        let idempotent = matches!(
            *method,
            http::Method::GET
                | http::Method::HEAD
                | http::Method::OPTIONS
                | http::Method::PUT
                | http::Method::DELETE
        );
        if idempotent && ctx.upstream_tries <= upstream.retries() {
            tracing::info!(request_id = %ctx.request_id, upstream = %upstream.name, error = %e, "cannot connect to an upstream address; retrying on another");
            e.set_retry(true);
        }
        e
    }

    /// The upstream sees the normalised path, no client-sent identity headers or credentials,
    /// and the verified identity (signed, when the route asks).
    fn upstream_request_filter(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let uri = match ctx.normalized_path.take() {
            Some(p) => {
                let uri = match upstream.uri.query() {
                    Some(q) => format!("{p}?{q}"),
                    None => p,
                };
                Some(
                    uri.parse::<http::Uri>()
                        .or_err(InternalError, "normalised path is not a valid URI")?,
                )
            }
            None => None,
        };
        let mut out = self.headers.upstream(upstream, ctx.trusted_proxy);
        if ctx.shadow_unverified {
            out.map.remove(http::header::AUTHORIZATION);
        }
        if let Some(host) = ctx.upstream_host.take() {
            out.map.insert(
                http::header::HOST,
                http::HeaderValue::try_from(host)
                    .or_err(InternalError, "routed host is not a header value")?,
            );
        }
        if !out.cookies.is_empty() {
            if let Some(kept) = self.services.browser.kept_cookies(&out.cookies) {
                out.map.insert(http::header::COOKIE, kept);
            }
        }
        if let Some(p) = ctx.caller.as_ref().map(|c| &c.principal) {
            let values = p.header_values();
            let permission = ctx.granted.as_ref().map(|g| &g.header);
            out.inject(
                &self.headers,
                &Identity {
                    subject: Some(&values.subject),
                    email: values.email.as_ref(),
                    email_verified: p.email_verified,
                    provider: Some(&values.provider),
                    client: ctx.client.and_then(|i| self.client_values.get(i)),
                    permission,
                },
            );
            // A browser session also says the user's name (a GitHub user's login) and groups;
            // its access token goes upstream only where the route asks for it.
            if let Some(Credential::Session(data)) = ctx.caller.as_ref().map(|c| &c.credential) {
                out.inject_profile(&self.headers, p.name.as_deref(), &p.groups);
                if self.route(ctx).is_some_and(|r| r.forward_session_token) {
                    let bearer = http::HeaderValue::try_from(format!(
                        "Bearer {}",
                        data.tokens.access_token.expose()
                    ))
                    .or_err(InternalError, "the session's token is not a header value")?;
                    out.map.insert(http::header::AUTHORIZATION, bearer);
                }
            }
            if let Some(route) = self.route(ctx).filter(|r| r.signed_identity) {
                let provider = p.provider();
                let email = p
                    .email
                    .as_deref()
                    .filter(|_| self.headers.sends_email(p.email_verified));
                let jwt = self.services.asserter.assertion(&assertion::Claims {
                    subject: &p.upstream_subject(),
                    email,
                    email_verified: email.map(|_| p.email_verified),
                    provider,
                    provider_iss: self
                        .issuers
                        .iter()
                        .find(|(name, _)| name == provider)
                        .map_or("-", |(_, iss)| iss.as_str()),
                    client: ctx
                        .client
                        .and_then(|i| self.clients.all().get(i))
                        .map(|c| c.name.as_str()),
                    permission: ctx.granted.as_ref().map(|g| &*g.granted),
                    decision: ctx.decision,
                    audience: self
                        .upstreams
                        .get(route.upstream)
                        .map_or("-", |u| u.name.as_str()),
                });
                out.map.insert(
                    self.services.asserter.header().clone(),
                    http::HeaderValue::try_from(&*jwt)
                        .or_err(InternalError, "identity assertion is not a header value")?,
                );
            }
        }
        out.map.insert(
            names::X_REQUEST_ID.clone(),
            ctx.request_id.header_value().clone(),
        );
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let mut forwarded = String::with_capacity(48);
            for prev in out.forwarded_for.iter().filter_map(|v| v.to_str().ok()) {
                forwarded.push_str(prev);
                forwarded.push_str(", ");
            }
            push_ip(&mut forwarded, ip);
            out.map.insert(
                names::X_FORWARDED_FOR.clone(),
                http::HeaderValue::try_from(forwarded)
                    .or_err(InternalError, "x-forwarded-for is not a header value")?,
            );
        }
        out.map.insert(
            names::X_FORWARDED_PROTO.clone(),
            http::HeaderValue::from_static(if ctx.https { "https" } else { "http" }),
        );
        out.install(upstream, uri)
    }

    /// Responses carry the request id, so a user's report can be found in the logs.
    fn response_filter(&self, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        if let (Some(started), Some(upstream)) = (
            ctx.upstream_started.take(),
            self.route(ctx).and_then(|r| self.upstreams.get(r.upstream)),
        ) {
            upstream.observe_latency(started.elapsed());
        }
        resp.insert_header(X_REQUEST_ID.clone(), ctx.request_id.header_value().clone())?;
        self.decorate(resp, ctx);
        Ok(())
    }

    /// Upstream failures get the same kind of answer as every other refusal. The connection
    /// is not reused after a failure, so the answer says `Connection: close`; once a response
    /// has begun (a WebSocket's 101 included), nothing more is written.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        session.set_keepalive(None);
        let began = session.response_written().is_some();
        if ctx.socket_deadline.is_some_and(|d| d.passed()) {
            tracing::info!(request_id = %ctx.request_id, route = self.route_name(ctx), "upgraded connection closed: the credential that authorised it expired");
            self.services
                .metrics
                .sockets_closed
                .with_label_values(&["expired"])
                .inc();
            ctx.outcome = "socket_expired";
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if let Some(end) = socket_watch::session_end(e) {
            tracing::info!(request_id = %ctx.request_id, route = self.route_name(ctx), client = self.client_name(ctx), reason = %end, "upgraded connection closed: the session that authorised it is over");
            self.services
                .metrics
                .sockets_closed
                .with_label_values(&[end.as_label()])
                .inc();
            ctx.outcome = "socket_session_ended";
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
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
            tracing::warn!(request_id = %ctx.request_id, trace_id = crate::trace::of(session.req_header()), route = self.route_name(ctx), error = %e, "upstream failed");
            if !began {
                let _ = self
                    .refuse(session, ctx, Refusal::UpstreamFailed(code))
                    .await;
            }
        } else if code > 0 && !began {
            let _ = session.respond_error(code).await;
        }
        ctx.outcome = if code >= 500 {
            "upstream_error"
        } else {
            "client_error"
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Counts every request once, by route, client and outcome.
    fn logging(&self, ctx: &RequestCtx) {
        let route = ctx
            .route
            .and_then(|i| Some((i, self.routes.routes().get(i)?.name.as_str())));
        let client = ctx
            .client
            .and_then(|i| Some((i, self.clients.all().get(i)?.name.as_str())));
        self.counters.observe(
            route,
            client,
            ctx.outcome,
            ctx.started.elapsed().as_secs_f64(),
        );
    }
}

/// Appends an address as text, as `Display` would, without the formatting machinery
/// (it runs on every proxied request, for `x-forwarded-for`).
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::push_ip;

    #[test]
    fn addresses_print_as_display_does() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "192.168.1.9",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }
}
