//! Logins in flight and refreshes in flight. A started login is kept server-side under its
//! random `state` (one-time, expiring after `login_timeout`), bound to the browser that started
//! it by a per-browser cookie; each browser may have `max_pending_logins` at once (the oldest
//! is dropped), so several tabs can log in together. A session's refresh runs once even when
//! many requests need it: the others wait for it and use its result.

use crate::clients::Origin;
use crate::config::model::SessionSettings;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// What the callback needs to finish a login.
#[derive(Debug)]
pub struct Pending {
    /// Index of the client the login is for.
    pub client: usize,
    /// The origin the login started from.
    pub origin: Origin,
    /// The redirect URI sent to the IdP (the exchange repeats it).
    pub redirect_uri: String,
    /// The nonce the id_token must carry.
    pub nonce: String,
    /// The PKCE verifier.
    pub pkce_verifier: String,
    /// Where the browser goes after the login (absolute, validated).
    pub return_to: String,
    /// The per-browser id of the browser that started it.
    pub browser: String,
}

/// The logins in flight.
pub struct PendingLogins {
    by_state: moka::sync::Cache<String, Arc<Pending>>,
    by_browser: moka::sync::Cache<String, Arc<Mutex<VecDeque<String>>>>,
    max_per_browser: usize,
}

impl PendingLogins {
    /// Bounded by the session settings.
    pub fn from_config(s: &SessionSettings) -> PendingLogins {
        PendingLogins {
            by_state: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(s.login_timeout).build(),
            by_browser: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(s.login_timeout).build(),
            max_per_browser: s.max_pending_logins,
        }
    }

    /// Remembers a started login; drops the browser's oldest ones beyond the cap.
    pub fn insert(&self, state: String, pending: Pending) {
        let queue = self.by_browser.get_with(pending.browser.clone(), || Arc::new(Mutex::new(VecDeque::new())));
        let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.retain(|s| self.by_state.contains_key(s));
        while q.len() >= self.max_per_browser {
            if let Some(old) = q.pop_front() {
                self.by_state.invalidate(&old);
            }
        }
        q.push_back(state.clone());
        self.by_state.insert(state, Arc::new(pending));
    }

    /// The login for `state`, removed: a state works once.
    pub fn take(&self, state: &str) -> Option<Arc<Pending>> {
        self.by_state.remove(state)
    }
}

/// One lock per session being refreshed.
pub struct RefreshLocks(moka::sync::Cache<[u8; 32], Arc<tokio::sync::Mutex<()>>>);

impl RefreshLocks {
    /// An empty set.
    pub fn new() -> RefreshLocks {
        RefreshLocks(moka::sync::Cache::builder().max_capacity(100_000).time_to_idle(std::time::Duration::from_secs(120)).build())
    }

    /// The lock of the session with this digest.
    pub fn get(&self, session: [u8; 32]) -> Arc<tokio::sync::Mutex<()>> {
        self.0.get_with(session, || Arc::new(tokio::sync::Mutex::new(())))
    }
}

impl Default for RefreshLocks {
    fn default() -> Self {
        RefreshLocks::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pending(browser: &str) -> Pending {
        Pending {
            client: 0,
            origin: Origin::parse("http://a").unwrap(),
            redirect_uri: "http://a/cb".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            return_to: "http://a/".into(),
            browser: browser.into(),
        }
    }

    #[test]
    fn states_are_one_time_and_capped_per_browser() {
        let s = SessionSettings {
            cookie_name: "authgate".into(),
            lifetime: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_sessions: 10,
            allow_insecure_http: false,
            refresh_before: Duration::from_secs(30),
            login_timeout: Duration::from_secs(600),
            max_pending_logins: 3,
        };
        let logins = PendingLogins::from_config(&s);
        for i in 0..5 {
            logins.insert(format!("s{i}"), pending("b1"));
        }
        logins.insert("other".into(), pending("b2"));
        // The two oldest of b1 were dropped; three tabs still work, and b2 is untouched.
        assert!(logins.take("s0").is_none());
        assert!(logins.take("s1").is_none());
        for s in ["s2", "s3", "s4", "other"] {
            assert!(logins.take(s).is_some(), "{s}");
            assert!(logins.take(s).is_none(), "{s} works once");
        }
    }
}
