//! Closing an upgraded connection (a WebSocket) once the browser session that authorised it
//! has ended, on every route: logged out, ended by a back-channel logout or a failed GitHub
//! re-validation, expired, or unknown to an unreachable store (fail closed).
//!
//! On the `101`, Pingora asks [`LiveGateway`](super::live::LiveGateway) for the tunnel's end
//! (`ProxyHttp::upgraded_close`, a hook of the vendored `pingora-proxy`): for a session caller,
//! the session's watch ([`crate::identity::watch`]), which re-reads the session every
//! `session.socket_recheck` (re-validating a GitHub session when due) and ends at once when
//! this instance ends it. Pingora polls it beside the relay; when it completes, the tunnel ends
//! with its error, both sides closed (no WebSocket close frame: the gateway cannot know where
//! the upstream's frames begin). Once this instance ended the session, every chunk relayed
//! either way is refused too ([`check`]), so nothing passes while the watch waits for its turn.
//! Bearer and API-key sockets are not watched (their route's `websocket_close_at_expiry` still
//! applies).

use super::ctx::RequestCtx;
use super::Gateway;
use crate::identity::credentials::{Caller, Credential};
use crate::identity::session::SessionId;
use crate::identity::watch::{Recheck, SessionEnd};
use pingora::prelude::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What ends an upgraded connection: completes with the error the tunnel ends with.
pub type Close = Pin<Box<dyn Future<Output = Box<Error>> + Send + 'static>>;

/// The error an upgraded connection ends with when its session is over: its type names why
/// ([`SessionEnd::as_label`]), which [`session_end`] reads back.
fn closing(end: SessionEnd) -> Box<Error> {
    Error::explain(
        ErrorType::Custom(end.as_label()),
        format!("the upgraded connection's session is over: {end}"),
    )
}

/// On the `101`: the end of an upgraded connection that a browser session authorised, when
/// the session ends (a GitHub session's socket also re-validates it when due, with the config
/// the request was decided by); the chunks it relays are checked by [`check`] from now on.
/// `None` for any other caller, or none.
pub fn close_when_session_ends(gateway: Arc<Gateway>, ctx: &mut RequestCtx) -> Option<Close> {
    let Some(Caller {
        credential: Credential::Session(seen),
        ..
    }) = &ctx.caller
    else {
        return None;
    };
    let id = ctx.session_id.clone()?;
    let recheck = match (&seen.via.github, ctx.client) {
        (Some(_), Some(client)) => Some(github_recheck(gateway.clone(), id.clone(), client)),
        _ => None,
    };
    let (watch, ended_here) = gateway.services.browser.watch(id, seen.clone(), recheck);
    ctx.socket_session = Some(ended_here);
    Some(Box::pin(async move { closing(watch.await) }))
}

/// A GitHub session's re-validation when due, for its socket's watch, at client `client` of
/// `gateway` (its config: providers and allow rules).
fn github_recheck(gateway: Arc<Gateway>, id: SessionId, client: usize) -> Recheck {
    Box::new(move |now| {
        let (gateway, id) = (gateway.clone(), id.clone());
        Box::pin(async move {
            let Some(app) = gateway.clients.all().get(client) else {
                return Some(SessionEnd::Ended);
            };
            gateway
                .services
                .browser
                .revalidate_for_socket(&id, now, app, &gateway.providers)
                .await
        })
    })
}

/// For every chunk relayed over a watched connection: an error once this instance ended its
/// session (nothing passes after the logout answered, even before the watch's turn comes).
pub fn check(ctx: &RequestCtx) -> Result<()> {
    match &ctx.socket_session {
        Some(ended) if ended.is_set() => Err(closing(SessionEnd::Ended)),
        _ => Ok(()),
    }
}

/// Why an upgraded connection ended with `e`, when its session's end ended it.
pub fn session_end(e: &Error) -> Option<SessionEnd> {
    SessionEnd::ALL
        .into_iter()
        .find(|end| *e.etype() == ErrorType::Custom(end.as_label()))
}
