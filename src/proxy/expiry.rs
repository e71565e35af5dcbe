//! Closing an upgraded connection (a WebSocket) when the credential that authorised it
//! expires, on routes with `websocket_close_at_expiry = true`.
//!
//! Pingora gives no timer over an upgraded connection, but it reads the client side with the
//! session's read timeout, a fresh read after every chunk relayed either way. So on the `101`
//! the read timeout becomes the time left (or the usual timeout, when sooner), every chunk
//! relayed sets it again to the time left, and a chunk relayed at or after the expiry ends the
//! connection. A quiet socket thus ends when its read times out at the expiry; a busy one at
//! its first chunk past it. The gateway then closes the TCP connection (no WebSocket close
//! frame: it cannot know where the upstream's frames begin).

use super::ctx::RequestCtx;
use crate::identity::credentials::{Caller, Credential};
use pingora::prelude::*;
use pingora::proxy::Session;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// When an upgraded connection must end, and the read timeout it had before.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    read_timeout: Option<Duration>,
}

impl Deadline {
    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }
}

/// When the credential that authorised `caller` stops being valid, seconds since the epoch: a
/// browser session's end, else the token's `exp` (for an API key, its exchanged token's).
pub fn credential_expiry(caller: &Caller) -> u64 {
    match &caller.credential {
        Credential::Session(data) => data.expires_at,
        Credential::Bearer(_) | Credential::ApiKey(_) => caller.principal.expires_at,
    }
}

/// The instant `expires_at` (seconds since the epoch) falls on; now when it has passed, `None`
/// when it is too far ahead for the clock to represent (it never comes).
fn instant_of(expires_at: u64) -> Option<Instant> {
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(expires_at))?;
    Instant::now().checked_add(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// On a `101` for a route that closes sockets at expiry: arms the deadline of the caller's
/// credential (nothing when the request carried none, as on a shadow route).
pub fn arm(session: &mut Session, ctx: &mut RequestCtx) {
    let Some(at) = ctx
        .caller
        .as_ref()
        .map(credential_expiry)
        .and_then(instant_of)
    else {
        return;
    };
    let deadline = Deadline {
        at,
        read_timeout: session.get_read_timeout(),
    };
    ctx.socket_deadline = Some(deadline);
    session.set_read_timeout(Some(next_read_timeout(&deadline, Instant::now())));
}

/// The read timeout for the next read: the time left, or the usual timeout when sooner.
fn next_read_timeout(deadline: &Deadline, now: Instant) -> Duration {
    let left = deadline.at.saturating_duration_since(now);
    deadline.read_timeout.map_or(left, |usual| usual.min(left))
}

/// For every chunk relayed over an armed connection: an error once the credential has expired
/// (Pingora then ends the connection), else the read timeout set to the time left.
pub fn check(session: &mut Session, ctx: &RequestCtx) -> Result<()> {
    let Some(deadline) = &ctx.socket_deadline else {
        return Ok(());
    };
    let now = Instant::now();
    if now >= deadline.at {
        return Error::e_explain(
            ErrorType::Custom("credential expired"),
            "the credential that authorised this upgraded connection expired",
        );
    }
    session.set_read_timeout(Some(next_read_timeout(deadline, now)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_timeout_is_the_time_left_or_the_usual_one_when_sooner() {
        let now = Instant::now();
        let soon = Deadline {
            at: now + Duration::from_secs(5),
            read_timeout: Some(Duration::from_secs(60)),
        };
        assert_eq!(next_read_timeout(&soon, now), Duration::from_secs(5));
        let late = Deadline {
            at: now + Duration::from_secs(600),
            read_timeout: Some(Duration::from_secs(60)),
        };
        assert_eq!(next_read_timeout(&late, now), Duration::from_secs(60));
        let unbounded = Deadline {
            at: now + Duration::from_secs(600),
            read_timeout: None,
        };
        assert_eq!(next_read_timeout(&unbounded, now), Duration::from_secs(600));
        assert_eq!(
            next_read_timeout(&soon, now + Duration::from_secs(9)),
            Duration::ZERO
        );
    }

    #[test]
    fn an_expiry_in_the_past_is_now_and_one_ahead_is_that_far_ahead() {
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(instant_of(now_secs.saturating_sub(60)).unwrap() <= Instant::now());
        let ahead = instant_of(now_secs + 100)
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert!(
            ahead > Duration::from_secs(98) && ahead <= Duration::from_secs(100),
            "{ahead:?}"
        );
        assert!(Deadline {
            at: instant_of(0).unwrap(),
            read_timeout: None
        }
        .passed());
        // An `exp` no clock can represent never comes (and panics nothing).
        assert_eq!(instant_of(u64::MAX), None);
    }
}
