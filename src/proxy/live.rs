//! The gateway as Pingora runs it: the current [`Gateway`] behind an `ArcSwap`, replaced
//! whole on a config reload. Each request keeps the gateway it started with in its context,
//! so a reload never mixes two configs within one request.

use super::ctx::RequestCtx;
use super::{expiry, socket_watch, Gateway};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Duration;

/// The running gateway; [`LiveGateway::swap`] installs a reloaded one.
pub struct LiveGateway {
    current: Arc<ArcSwap<Gateway>>,
}

impl LiveGateway {
    /// Serves `gateway` until it is swapped.
    pub fn new(gateway: Gateway) -> LiveGateway {
        LiveGateway {
            current: Arc::new(ArcSwap::from_pointee(gateway)),
        }
    }

    /// A handle that can read and replace the running gateway (for the reloader).
    pub fn handle(&self) -> Arc<ArcSwap<Gateway>> {
        self.current.clone()
    }

    /// The gateway of this request (the one it started with).
    fn of(&self, ctx: &RequestCtx) -> Arc<Gateway> {
        ctx.gateway
            .clone()
            .unwrap_or_else(|| self.current.load_full())
    }
}

#[async_trait]
impl ProxyHttp for LiveGateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// What Pingora's error log lines say about a request: method, path *without* the query
    /// (a login callback's query carries the authorization code and state) and the request id.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!(
            "{} {}, request {}",
            req.method,
            req.uri.path(),
            ctx.request_id
        )
    }

    /// No downstream modules: the gateway compresses nothing, and Pingora's default (a
    /// disabled compression module) still costs a module context on every request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// Pins the current gateway for the whole request, then decides.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let gateway = self.current.load_full();
        ctx.gateway = Some(gateway.clone());
        gateway.request_filter(session, ctx).await
    }

    /// The pinned gateway's route names the upstream.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.of(ctx).upstream_peer(ctx)
    }

    /// Idempotent requests that could not connect try another address.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.of(ctx).fail_to_connect(session, ctx, e)
    }

    /// Headers as the pinned gateway's config says.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.of(ctx).upstream_request_filter(session, upstream, ctx)
    }

    /// Request id, cookies and CORS on the way back; a WebSocket's `101` on a route that
    /// closes sockets at expiry arms the credential's deadline.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let gateway = self.of(ctx);
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS
            && gateway
                .route(ctx)
                .is_some_and(|r| r.websocket_close_at_expiry)
        {
            expiry::arm(session, ctx);
        }
        gateway.response_filter(resp, ctx)
    }

    /// On the `101` (Pingora's hook, vendored): a socket a browser session authorised ends when
    /// the session does, on every route.
    fn upgraded_close(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Option<socket_watch::Close> {
        socket_watch::close_when_session_ends(self.of(ctx), ctx)
    }

    /// Client-to-upstream chunks: an upgraded connection ends once this instance ended its
    /// session, or (armed) once its credential expired.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        socket_watch::check(ctx)?;
        expiry::check(session, ctx)
    }

    /// Upstream-to-client chunks: likewise.
    fn response_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        socket_watch::check(ctx)?;
        expiry::check(session, ctx).map(|()| None)
    }

    /// Upstream failures answered like every other refusal.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.of(ctx).fail_to_proxy(session, e, ctx).await
    }

    /// No error line for a socket the gateway closed on purpose (its credential expired, its
    /// session is over): `fail_to_proxy` logged it at info.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _e: &Error) -> bool {
        matches!(ctx.outcome, "socket_expired" | "socket_session_ended")
    }

    /// Counted once, by the pinned gateway's route and client names.
    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        self.of(ctx).logging(ctx)
    }
}
