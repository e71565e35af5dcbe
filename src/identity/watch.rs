//! Open sockets watching the browser sessions that authorised them: each re-reads its session
//! from the store every `session.socket_recheck` (and has a GitHub session re-validated when
//! due), is told at once when this instance ends that session (a logout, a back-channel logout,
//! a failed re-validation or refresh), and ends when the session has.

use super::session::{Ended, SessionData, SessionId, SessionStore};
use crate::config::model::IDP_PROVIDER;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Why a watched session no longer authorises its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionEnd {
    /// The session is gone from the store: logged out, ended by a back-channel logout or a
    /// failed re-validation or refresh, expired.
    #[error("the session ended")]
    Ended,
    /// The store holds another session under the id (another user, client or sign-in).
    #[error("the session was replaced")]
    Replaced,
    /// The store did not answer: fail closed.
    #[error("the session store is unavailable")]
    StoreUnavailable,
    /// The session's provider (GitHub) could not confirm it at its re-validation: fail closed.
    #[error("the session's provider could not confirm it")]
    ProviderUnavailable,
}

impl SessionEnd {
    /// Every reason.
    pub const ALL: [SessionEnd; 4] = [
        SessionEnd::Ended,
        SessionEnd::Replaced,
        SessionEnd::StoreUnavailable,
        SessionEnd::ProviderUnavailable,
    ];

    /// The metric label: `session_ended`, `session_replaced`, `session_store_unavailable`,
    /// `provider_unavailable`.
    pub fn as_label(&self) -> &'static str {
        match self {
            SessionEnd::Ended => "session_ended",
            SessionEnd::Replaced => "session_replaced",
            SessionEnd::StoreUnavailable => "session_store_unavailable",
            SessionEnd::ProviderUnavailable => "provider_unavailable",
        }
    }
}

/// Most sockets whose sessions this instance wakes at once when it ends them; beyond that a
/// socket still sees its session end at its next recheck.
const MAX_WATCHED_SOCKETS: usize = 1 << 20;

/// The sockets of one session.
struct Watched {
    client: String,
    subject: String,
    sid: Option<String>,
    /// Whether the session is the `[idp]`'s (the only ones a back-channel logout ends).
    idp: bool,
    sockets: Vec<Weak<Signal>>,
}

/// How this instance tells a socket its session ended.
#[derive(Default)]
struct Signal {
    /// Set before the logout's answer leaves: every chunk relayed after it is refused.
    ended: AtomicBool,
    /// Wakes the watch of a quiet socket.
    wake: Notify,
}

/// Whether this instance ended the session a socket watches: checked for every chunk the
/// socket relays, so nothing passes once the logout (or back-channel logout) has answered.
#[derive(Clone)]
pub struct EndedHere(Option<Arc<Signal>>);

impl EndedHere {
    /// True once this instance ended the socket's session.
    pub fn is_set(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|s| s.ended.load(Ordering::Acquire))
    }
}

#[derive(Default)]
struct Table {
    /// By the SHA-256 of the session id ([`SessionId::digest`]).
    sessions: HashMap<[u8; 32], Watched>,
    sockets: usize,
}

/// The sockets open at this instance, by session: what this instance's logouts wake. Bounded
/// ([`MAX_WATCHED_SOCKETS`]); a socket's entry leaves with its socket.
#[derive(Default)]
pub struct Watchers {
    table: Mutex<Table>,
}

impl Watchers {
    /// No socket watched yet.
    pub fn new() -> Watchers {
        Watchers::default()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves a table that is still consistent enough to wake.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a socket of session `id`: its wake-up, unless the table is full.
    fn register(self: &Arc<Self>, id: &SessionId, data: &SessionData) -> Option<Registration> {
        let mut table = self.table();
        if table.sockets >= MAX_WATCHED_SOCKETS {
            return None;
        }
        let signal = Arc::new(Signal::default());
        let digest = id.digest();
        table
            .sessions
            .entry(digest)
            .or_insert_with(|| Watched {
                client: data.client.clone(),
                subject: data.subject.clone(),
                sid: data.sid.clone(),
                idp: data.via.provider() == IDP_PROVIDER,
                sockets: Vec::new(),
            })
            .sockets
            .push(Arc::downgrade(&signal));
        table.sockets += 1;
        Some(Registration {
            watchers: Arc::downgrade(self),
            digest,
            signal,
        })
    }

    /// Tells the sockets of session `id` that this instance ended it: they end now.
    pub fn wake(&self, id: &SessionId) {
        let table = self.table();
        if let Some(watched) = table.sessions.get(&id.digest()) {
            notify(watched);
        }
    }

    /// Tells the sockets of the `[idp]` sessions of `client` that a back-channel logout names
    /// (those [`SessionStore::end_matching`] ends) that they ended.
    pub fn wake_matching(&self, client: &str, which: Ended<'_>) {
        let table = self.table();
        // A scan: back-channel logouts are rare, and the table holds open sockets only.
        for watched in table.sessions.values() {
            let named = match which {
                Ended::Sid(sid) => watched.sid.as_deref() == Some(sid),
                Ended::Subject(sub) => watched.subject == sub,
            };
            if named && watched.idp && watched.client == client {
                notify(watched);
            }
        }
    }

    /// How many sockets are watched (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().sockets
    }
}

fn notify(watched: &Watched) {
    for signal in watched.sockets.iter().filter_map(Weak::upgrade) {
        signal.ended.store(true, Ordering::Release);
        // A permit is kept when the watch is reading its session right now: not lost.
        signal.wake.notify_one();
    }
}

/// One socket's place in [`Watchers`]; leaves it when dropped (the socket ended).
struct Registration {
    watchers: Weak<Watchers>,
    digest: [u8; 32],
    signal: Arc<Signal>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(watchers) = self.watchers.upgrade() else {
            return;
        };
        let mut table = watchers.table();
        let Some(watched) = table.sessions.get_mut(&self.digest) else {
            return;
        };
        let mine = Arc::downgrade(&self.signal);
        let before = watched.sockets.len();
        watched.sockets.retain(|w| !w.ptr_eq(&mine));
        let removed = before - watched.sockets.len();
        let empty = watched.sockets.is_empty();
        if empty {
            table.sessions.remove(&self.digest);
        }
        table.sockets = table.sockets.saturating_sub(removed);
    }
}

/// Whether the session the store holds now is the one `seen` when the socket opened: the same
/// sign-in (a refresh or re-validation changes its tokens and generation, nothing of these).
fn same_session(now: &SessionData, seen: &SessionData) -> bool {
    now.client == seen.client
        && now.subject == seen.subject
        && now.created_at == seen.created_at
        && now.via.provider() == seen.via.provider()
        && now.expires_at > super::now_secs()
}

/// What a watch asks after each read that found the session live: `Some` ends the socket (a
/// GitHub session re-validated when due, as a request would).
pub type Recheck = Box<
    dyn FnMut(Arc<SessionData>) -> Pin<Box<dyn Future<Output = Option<SessionEnd>> + Send>> + Send,
>;

/// Watches session `id` (as `seen` when its socket opened) for a socket: the future completes
/// once the session ended, was replaced, or the store could not say (fail closed), or
/// `recheck` ends it. It reads the session at once (a logout between the socket's
/// authorisation and this call is not missed), then every `every`; it ends at once when this
/// instance ends the session (then [`EndedHere::is_set`] too). Registered in `watchers` from
/// this call until the future is dropped.
pub fn watch(
    store: Arc<dyn SessionStore>,
    watchers: &Arc<Watchers>,
    id: SessionId,
    seen: Arc<SessionData>,
    every: Duration,
    mut recheck: Option<Recheck>,
) -> (impl Future<Output = SessionEnd> + Send + 'static, EndedHere) {
    // Moved into the future: registered as long as the future lives.
    let registration = watchers.register(&id, &seen);
    let ended_here = EndedHere(registration.as_ref().map(|r| r.signal.clone()));
    let watch = async move {
        let signal = registration.as_ref().map(|r| &r.signal);
        loop {
            if signal.is_some_and(|s| s.ended.load(Ordering::Acquire)) {
                return SessionEnd::Ended;
            }
            match store.get(&id).await {
                Err(_) => return SessionEnd::StoreUnavailable,
                Ok(None) => return SessionEnd::Ended,
                Ok(Some(now)) if !same_session(&now, &seen) => return SessionEnd::Replaced,
                Ok(Some(now)) => {
                    if let Some(recheck) = recheck.as_mut() {
                        if let Some(end) = recheck(now).await {
                            return end;
                        }
                    }
                }
            }
            match signal {
                Some(signal) => {
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        () = signal.wake.notified() => return SessionEnd::Ended,
                    }
                }
                None => tokio::time::sleep(every).await,
            }
        }
    };
    (watch, ended_here)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::session::tests::{data, settings};
    use crate::identity::session::MemoryStore;
    use std::time::Instant;
    use tokio::task::JoinHandle;

    fn store() -> Arc<dyn SessionStore> {
        Arc::new(MemoryStore::from_config(&settings(
            100,
            Duration::from_secs(60),
        )))
    }

    fn spawn(
        store: &Arc<dyn SessionStore>,
        watchers: &Arc<Watchers>,
        id: &SessionId,
        seen: &Arc<SessionData>,
        every: Duration,
    ) -> (JoinHandle<SessionEnd>, EndedHere) {
        let (watch, ended_here) = watch(
            store.clone(),
            watchers,
            id.clone(),
            seen.clone(),
            every,
            None,
        );
        (tokio::spawn(watch), ended_here)
    }

    const LONG: Duration = Duration::from_secs(600);

    #[tokio::test]
    async fn a_watch_ends_at_once_when_this_instance_ends_the_session_and_leaves_the_table() {
        let (store, watchers) = (store(), Arc::new(Watchers::new()));
        let id = SessionId::generate();
        let seen = Arc::new(data(60));
        store.put(&id, seen.clone()).await.unwrap();
        let (watch, ended_here) = spawn(&store, &watchers, &id, &seen, LONG);
        let other_id = SessionId::generate();
        store.put(&other_id, seen.clone()).await.unwrap();
        let (other, other_ended) = spawn(&store, &watchers, &other_id, &seen, LONG);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!watch.is_finished(), "a live session keeps its socket");
        assert!(!ended_here.is_set());
        assert_eq!(watchers.len(), 2);
        let started = Instant::now();
        store.remove(&id).await.unwrap();
        watchers.wake(&id);
        assert!(ended_here.is_set(), "set before the logout answers");
        let end = tokio::time::timeout(Duration::from_secs(2), watch)
            .await
            .expect("the wake-up was lost")
            .unwrap();
        assert_eq!(end, SessionEnd::Ended);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(watchers.len(), 1, "the socket's entry left with it");
        // Another session's socket was not told.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!other_ended.is_set() && !other.is_finished());
        other.abort();
        assert!(other.await.is_err());
        assert_eq!(watchers.len(), 0, "a socket dropped mid-watch leaves too");
    }

    #[tokio::test]
    async fn a_watch_sees_an_end_elsewhere_at_its_recheck_and_keeps_a_live_or_refreshed_session() {
        let (store, watchers) = (store(), Arc::new(Watchers::new()));
        let id = SessionId::generate();
        let seen = Arc::new(data(60));
        store.put(&id, seen.clone()).await.unwrap();
        let every = Duration::from_millis(40);
        let (watch, ended_here) = spawn(&store, &watchers, &id, &seen, every);
        // A refresh (new generation, same sign-in) is no end.
        let mut refreshed = (*seen).clone();
        refreshed.generation = 7;
        store.put(&id, Arc::new(refreshed)).await.unwrap();
        tokio::time::sleep(every * 5).await;
        assert!(!watch.is_finished(), "ended a live session's socket");
        // Ended where nobody tells this instance (another instance): seen at the next recheck.
        store.remove(&id).await.unwrap();
        let end = tokio::time::timeout(every * 10, watch)
            .await
            .expect("not seen at the recheck")
            .unwrap();
        assert_eq!(end, SessionEnd::Ended);
        assert!(!ended_here.is_set(), "not ended by this instance");

        // Another sign-in under the id (never happens with random ids; refused anyway).
        let mut other = (*seen).clone();
        other.subject = "mallory".into();
        store.put(&id, Arc::new(other)).await.unwrap();
        let (watch, _) = spawn(&store, &watchers, &id, &seen, LONG);
        assert_eq!(watch.await.unwrap(), SessionEnd::Replaced);
        // Gone before the socket was watched: ends at once, nobody needs to tell it.
        store.remove(&id).await.unwrap();
        let (watch, _) = spawn(&store, &watchers, &id, &seen, LONG);
        assert_eq!(watch.await.unwrap(), SessionEnd::Ended);
    }

    #[tokio::test]
    async fn a_back_channel_logout_ends_the_sockets_of_the_sessions_it_names() {
        let (store, watchers) = (store(), Arc::new(Watchers::new()));
        let session = |client: &str, subject: &str, sid: &str| {
            Arc::new(SessionData {
                client: client.into(),
                subject: subject.into(),
                sid: Some(sid.into()),
                ..data(60)
            })
        };
        let mut watches = Vec::new();
        for seen in [
            session("a", "alice", "sid-1"),
            session("a", "alice", "sid-2"),
            session("b", "alice", "sid-1"),
            session("a", "bob", "sid-3"),
        ] {
            let id = SessionId::generate();
            store.put(&id, seen.clone()).await.unwrap();
            watches.push(spawn(&store, &watchers, &id, &seen, LONG));
        }
        let running = |w: &[(JoinHandle<SessionEnd>, EndedHere)]| -> Vec<bool> {
            w.iter()
                .map(|(h, e)| !h.is_finished() && !e.is_set())
                .collect()
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(running(&watches), [true, true, true, true]);
        watchers.wake_matching("a", Ended::Sid("sid-1"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(running(&watches), [false, true, true, true], "by sid");
        watchers.wake_matching("a", Ended::Subject("alice"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            running(&watches),
            [false, false, true, true],
            "by subject, at one client"
        );
        for (w, _) in watches {
            w.abort();
        }
    }

    #[tokio::test]
    async fn a_recheck_is_asked_after_each_live_read_and_can_end_the_socket() {
        let (store, watchers) = (store(), Arc::new(Watchers::new()));
        let id = SessionId::generate();
        let seen = Arc::new(data(60));
        store.put(&id, seen.clone()).await.unwrap();
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = asked.clone();
        let recheck: Recheck = Box::new(move |now| {
            let n = count.fetch_add(1, Ordering::SeqCst);
            assert_eq!(now.subject, "s", "asked with the session as read");
            Box::pin(async move { (n == 2).then_some(SessionEnd::ProviderUnavailable) })
        });
        let (watch, ended_here) = watch(
            store,
            &watchers,
            id,
            seen,
            Duration::from_millis(20),
            Some(recheck),
        );
        let end = tokio::time::timeout(Duration::from_secs(2), watch)
            .await
            .expect("the recheck's end was not taken");
        assert_eq!(end, SessionEnd::ProviderUnavailable);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            3,
            "at once, then at each recheck"
        );
        assert!(!ended_here.is_set());
        assert_eq!(watchers.len(), 0);
    }
}
