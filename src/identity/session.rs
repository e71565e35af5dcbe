//! Browser sessions kept server-side behind [`SessionStore`]; the browser holds only an opaque
//! random id in a cookie. [`MemoryStore`] is the embedded default: bounded, with absolute and
//! idle expiry. Ids are never stored or logged as such: the memory store is keyed by a keyed
//! digest of each id ([`crate::digest`]).

use super::now_secs;
use crate::config::model::SessionSettings;
use crate::digest::{Digest, KeyedDigest};
use crate::identity::GitHubIdentity;
use crate::secret::Secret;
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `n` random bytes from the operating system's CSPRNG, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::fill(bytes.as_mut_slice());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A session id: 256 random bits, base64url. `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> SessionId {
        SessionId(random_token(32))
    }

    /// Reads an id from a cookie value; anything that cannot be one of ours is `None`.
    pub fn parse(value: &str) -> Option<SessionId> {
        (value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| SessionId(value.to_string()))
    }

    /// The cookie value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the id: a stable key for it that is not the id (the refresh locks use it).
    pub fn digest(&self) -> [u8; 32] {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.0.as_bytes());
        // SHA-256 is always 32 bytes; the fallback only keeps this function total.
        <[u8; 32]>::try_from(digest.as_ref()).unwrap_or_default()
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(***)")
    }
}

/// The tokens a session holds. Secrets: never printed (a store that writes them elsewhere
/// encrypts them first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    /// The access token (a JWT or opaque).
    pub access_token: Secret,
    /// The id_token from the login (a refresh may not return a new one).
    pub id_token: Secret,
    /// The refresh token, when the IdP gave one.
    pub refresh_token: Option<Secret>,
    /// When the access token expires, seconds since the epoch.
    pub access_expires_at: u64,
}

/// One signed-in browser. Stores that serialise it read what they do not know with its
/// default, and ignore what they do not know: fields may be added.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionData {
    /// The client app's name; the session is only valid from this client's origins.
    pub client: String,
    /// The origin the login came from.
    pub origin: String,
    /// `sub` of the id_token.
    pub subject: String,
    /// `email`, when the id_token has one.
    pub email: Option<String>,
    /// `name`, when the id_token has one.
    pub name: Option<String>,
    /// The tokens.
    pub tokens: Tokens,
    /// When the session was created, seconds since the epoch.
    pub created_at: u64,
    /// When the session ends at the latest, seconds since the epoch.
    pub expires_at: u64,
    /// Bumped on every refresh, so that waiters can tell a refresh happened.
    pub generation: u64,
    /// The id_token's `sid` (the IdP's session at this client), for back-channel logout.
    #[serde(default)]
    pub sid: Option<String>,
    /// How the user signed in (the provider; what GitHub told); absent in sessions stored
    /// before providers: the `[idp]`.
    #[serde(default)]
    pub via: SignedInVia,
}

/// How a session's user signed in. The default is the `[idp]` (OpenID Connect).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignedInVia {
    /// The provider's name; empty for `[idp]`.
    pub provider: String,
    /// For a GitHub provider: login, organisations and teams.
    pub github: Option<GitHubIdentity>,
    /// When GitHub last confirmed the user (seconds since the epoch).
    pub validated_at: u64,
}

impl SignedInVia {
    /// The provider's name (`idp` for the `[idp]`).
    pub fn provider(&self) -> &str {
        if self.provider.is_empty() {
            crate::config::model::IDP_PROVIDER
        } else {
            &self.provider
        }
    }
}

/// The session store cannot be reached or answered badly: requests that need a session are
/// answered 503 (and the store logs the outage once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session store is unavailable")]
pub struct StoreUnavailable;

impl From<StoreUnavailable> for crate::responses::Refusal {
    fn from(_: StoreUnavailable) -> Self {
        crate::responses::Refusal::StoreUnavailable
    }
}

/// What a store says of itself for the admin `/readyz`: where it is and whether it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// The store answers (the in-memory store always does). `at` says which store: `memory`,
    /// or the Redis address (never its password).
    Ready {
        /// Which store.
        at: String,
    },
    /// The store did not answer a bounded check.
    Unreachable {
        /// Which store (never a password).
        at: String,
        /// Why, as the check's error said.
        why: String,
    },
}

impl StoreHealth {
    /// Whether requests that need a session can be served.
    pub fn is_ready(&self) -> bool {
        matches!(self, StoreHealth::Ready { .. })
    }
}

impl std::fmt::Display for StoreHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreHealth::Ready { at } => write!(f, "ready ({at})"),
            StoreHealth::Unreachable { at, why } => write!(f, "unreachable ({at}: {why})"),
        }
    }
}

/// Which sessions a back-channel logout ends, all of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended<'a> {
    /// The sessions whose id_token carried this `sid`.
    Sid(&'a str),
    /// Every session of this `sub`.
    Subject(&'a str),
}

/// A session's refresh, as far as other instances are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshLease {
    /// This caller refreshes; the token releases the lease (only the holder's release counts).
    Held(String),
    /// Another instance is refreshing this session now.
    Busy,
}

/// Where sessions live. Implementations must be safe to share between worker threads. Every
/// call may fail with [`StoreUnavailable`]; none blocks longer than the store's timeouts.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// `memory` or `redis`, for metrics and logs.
    fn kind(&self) -> &'static str;
    /// The live session with this id.
    async fn get(&self, id: &SessionId) -> Result<Option<Arc<SessionData>>, StoreUnavailable>;
    /// Stores (or replaces) a session.
    async fn put(&self, id: &SessionId, session: Arc<SessionData>) -> Result<(), StoreUnavailable>;
    /// Compare-and-swap: stores `session` only when the session is still there with generation
    /// `expected` (the one the caller read). `false`: it was ended or changed meanwhile, and
    /// nothing was written — so a refresh racing a logout cannot bring the session back, and a
    /// slow refresher cannot overwrite a newer refresh (the generation is the fencing token).
    async fn replace(
        &self,
        id: &SessionId,
        expected: u64,
        session: Arc<SessionData>,
    ) -> Result<bool, StoreUnavailable>;
    /// Ends a session.
    async fn remove(&self, id: &SessionId) -> Result<(), StoreUnavailable>;
    /// Ends a session only while it still has generation `expected` (a refused refresh must
    /// not end a session another instance refreshed meanwhile).
    async fn remove_if(&self, id: &SessionId, expected: u64) -> Result<bool, StoreUnavailable>;
    /// Ends the sessions of `client` that `which` names; returns how many.
    async fn end_matching(&self, client: &str, which: Ended<'_>)
        -> Result<usize, StoreUnavailable>;
    /// Records that `key` (e.g. a logout token's issuer and `jti`) was seen, for `ttl`.
    /// `false`: it was seen before (by any instance sharing the store).
    async fn first_sight(&self, key: &str, ttl: Duration) -> Result<bool, StoreUnavailable>;
    /// Takes the session's refresh lease for `ttl`, unless another instance holds it. The
    /// in-process single flight comes first: this only coordinates instances.
    async fn lease_refresh(
        &self,
        id: &SessionId,
        ttl: Duration,
    ) -> Result<RefreshLease, StoreUnavailable>;
    /// Gives a lease back (a lease that expired meanwhile, or is another's, stays as it is).
    async fn release_refresh(&self, id: &SessionId, lease: &str);
    /// Whether the store answers, for `/readyz`: a cheap check bounded by the store's
    /// timeouts (a store in this process is always ready).
    async fn health(&self) -> StoreHealth {
        StoreHealth::Ready {
            at: self.kind().to_string(),
        }
    }
}

struct SessionExpiry {
    idle: Duration,
}

impl SessionExpiry {
    fn left(&self, session: &SessionData) -> Duration {
        Duration::from_secs(session.expires_at.saturating_sub(now_secs())).min(self.idle)
    }
}

impl moka::Expiry<Digest, Arc<SessionData>> for SessionExpiry {
    fn expire_after_create(
        &self,
        _k: &Digest,
        v: &Arc<SessionData>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(self.left(v))
    }
    fn expire_after_update(
        &self,
        _k: &Digest,
        v: &Arc<SessionData>,
        _now: Instant,
        _d: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.left(v))
    }
    fn expire_after_read(
        &self,
        _k: &Digest,
        v: &Arc<SessionData>,
        _now: Instant,
        _d: Option<Duration>,
        _u: Instant,
    ) -> Option<Duration> {
        Some(self.left(v))
    }
}

struct SeenExpiry;

impl moka::Expiry<Digest, Duration> for SeenExpiry {
    fn expire_after_create(&self, _k: &Digest, ttl: &Duration, _now: Instant) -> Option<Duration> {
        Some(*ttl)
    }
}

/// The embedded store: in memory, at most `max_sessions`, each ending at its `expires_at` or
/// after `idle_timeout` without use, whichever comes first.
pub struct MemoryStore {
    sessions: moka::sync::Cache<Digest, Arc<SessionData>>,
    /// Keys seen by [`SessionStore::first_sight`] (logout tokens' `jti`), each for its ttl.
    seen: moka::sync::Cache<Digest, Duration>,
    /// Sessions are kept under a keyed digest of their id, never the id itself.
    keys: KeyedDigest,
    active: Option<prometheus::IntGauge>,
}

impl MemoryStore {
    /// A store with the configured bounds.
    pub fn from_config(s: &SessionSettings) -> MemoryStore {
        MemoryStore {
            sessions: moka::sync::Cache::builder()
                .max_capacity(s.max_sessions)
                .expire_after(SessionExpiry {
                    idle: s.idle_timeout,
                })
                .build(),
            seen: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .expire_after(SeenExpiry)
                .build(),
            keys: KeyedDigest::random(),
            active: None,
        }
    }

    /// Reports the sessions held in `gauge` (updated when sessions start and end).
    pub fn with_gauge(mut self, gauge: prometheus::IntGauge) -> MemoryStore {
        self.active = Some(gauge);
        self
    }

    fn key(&self, id: &SessionId) -> Digest {
        self.keys.of(&[id.expose().as_bytes()])
    }

    fn count(&self) {
        if let Some(g) = &self.active {
            self.sessions.run_pending_tasks();
            g.set(i64::try_from(self.sessions.entry_count()).unwrap_or(i64::MAX));
        }
    }

    fn remove_key(&self, key: Digest) {
        let _ = self
            .sessions
            .entry(key)
            .and_compute_with(|_| moka::ops::compute::Op::Remove);
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Arc<SessionData>>, StoreUnavailable> {
        Ok(self
            .sessions
            .get(&self.key(id))
            .filter(|session| session.expires_at > now_secs()))
    }

    async fn put(&self, id: &SessionId, session: Arc<SessionData>) -> Result<(), StoreUnavailable> {
        self.sessions.insert(self.key(id), session);
        self.count();
        Ok(())
    }

    async fn replace(
        &self,
        id: &SessionId,
        expected: u64,
        session: Arc<SessionData>,
    ) -> Result<bool, StoreUnavailable> {
        use moka::ops::compute::{CompResult, Op};
        let now = now_secs();
        // `and_compute_with` runs under the key's lock, serialised with `remove` below.
        let result = self
            .sessions
            .entry(self.key(id))
            .and_compute_with(|current| match current {
                Some(entry)
                    if entry.value().generation == expected && entry.value().expires_at > now =>
                {
                    Op::Put(session)
                }
                _ => Op::Nop,
            });
        Ok(matches!(result, CompResult::ReplacedWith(_)))
    }

    async fn remove(&self, id: &SessionId) -> Result<(), StoreUnavailable> {
        self.remove_key(self.key(id));
        self.count();
        Ok(())
    }

    async fn remove_if(&self, id: &SessionId, expected: u64) -> Result<bool, StoreUnavailable> {
        use moka::ops::compute::{CompResult, Op};
        let result = self
            .sessions
            .entry(self.key(id))
            .and_compute_with(|current| match current {
                Some(entry) if entry.value().generation == expected => Op::Remove,
                _ => Op::Nop,
            });
        self.count();
        Ok(matches!(result, CompResult::Removed(_)))
    }

    async fn end_matching(
        &self,
        client: &str,
        which: Ended<'_>,
    ) -> Result<usize, StoreUnavailable> {
        // A scan: back-channel logouts are rare, and the store is bounded.
        let matching: Vec<Digest> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                // Only the IdP's sessions: a logout token's `sub` says nothing of a GitHub id.
                s.client == client
                    && s.via.provider() == crate::config::model::IDP_PROVIDER
                    && match which {
                        Ended::Sid(sid) => s.sid.as_deref() == Some(sid),
                        Ended::Subject(sub) => s.subject == sub,
                    }
            })
            .map(|(k, _)| *k)
            .collect();
        for key in &matching {
            self.remove_key(*key);
        }
        self.count();
        Ok(matching.len())
    }

    async fn first_sight(&self, key: &str, ttl: Duration) -> Result<bool, StoreUnavailable> {
        let digest = self.keys.of(&[b"seen", key.as_bytes()]);
        Ok(self.seen.entry(digest).or_insert(ttl).is_fresh())
    }

    async fn lease_refresh(
        &self,
        _id: &SessionId,
        _ttl: Duration,
    ) -> Result<RefreshLease, StoreUnavailable> {
        // One process: the in-process single flight is the whole coordination.
        Ok(RefreshLease::Held(String::new()))
    }

    async fn release_refresh(&self, _id: &SessionId, _lease: &str) {}
}

/// How the gateway's cookies are written for one request: over HTTPS with the `__Host-` prefix
/// and `Secure`; over plain http (allowed for local development only) without them. Every
/// cookie of the gateway is named `{session}` or `{session}-…`.
#[derive(Debug, Clone)]
pub struct CookieSpec {
    /// The session cookie's name as sent.
    pub session: String,
    /// The prefix of the login cookies' names (`{login}-{suffix}`, one per login in flight).
    pub login: String,
    /// The marker a logout leaves: the next login asks the IdP to authenticate again.
    pub signed_out: String,
    secure: bool,
}

impl CookieSpec {
    /// The cookie names and flags for a request that arrived over `https` (or not).
    pub fn new(base: &str, https: bool) -> CookieSpec {
        let prefix = if https { "__Host-" } else { "" };
        CookieSpec {
            session: format!("{prefix}{base}"),
            login: format!("{prefix}{base}-login"),
            signed_out: format!("{prefix}{base}-signed-out"),
            secure: https,
        }
    }

    /// The name of the cookie carrying the login with this cookie suffix.
    pub fn login_cookie(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.login)
    }

    /// The suffix of a login cookie's name; `None` for any other cookie.
    pub fn login_suffix<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.login.as_str())?.strip_prefix('-')
    }

    /// `Set-Cookie` for `name=value` living `max_age` (`None`: a browser-session cookie),
    /// written by the `cookie` crate: `Path=/`, `HttpOnly`, `SameSite=Lax`, `Secure` over HTTPS.
    pub fn set(&self, name: &str, value: &str, max_age: Option<Duration>) -> String {
        let mut c = cookie::Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .same_site(cookie::SameSite::Lax);
        if self.secure {
            c = c.secure(true);
        }
        if let Some(age) = max_age {
            c = c.max_age(cookie::time::Duration::seconds(
                i64::try_from(age.as_secs()).unwrap_or(i64::MAX),
            ));
        }
        c.build().to_string()
    }

    /// `Set-Cookie` that deletes `name`.
    pub fn clear(&self, name: &str) -> String {
        self.set(name, "", Some(Duration::ZERO))
    }
}

/// The value of cookie `name` from the request's `Cookie` headers.
pub fn cookie_value<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    name: &str,
) -> Option<&'a str> {
    headers
        .into_iter()
        .filter_map(|h| std::str::from_utf8(h).ok())
        .flat_map(|h| h.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim().trim_matches('"'))
        })
}

/// Every `name=value` pair of the request's `Cookie` headers, trimmed.
pub fn cookie_pairs<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    headers
        .into_iter()
        .filter_map(|h| std::str::from_utf8(h).ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k, v.trim().trim_matches('"')))
        })
}

/// The `Cookie` header without the named cookies and the cookies named `{name}-…` (the
/// gateway's own family); `None` when nothing is left.
pub fn strip_cookies(header: &str, names: &[&str]) -> Option<String> {
    let own = |name: &str| {
        names.iter().any(|n| {
            name == *n
                || name
                    .strip_prefix(n)
                    .is_some_and(|rest| rest.starts_with('-'))
        })
    };
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !own(pair.split_once('=').map_or(*pair, |(k, _)| k)))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn data(expires_in: u64) -> SessionData {
        SessionData {
            client: "a".into(),
            origin: "http://a".into(),
            subject: "s".into(),
            email: None,
            name: None,
            tokens: Tokens {
                access_token: Secret::new("at"),
                id_token: Secret::new("it"),
                refresh_token: None,
                access_expires_at: 0,
            },
            created_at: now_secs(),
            expires_at: now_secs() + expires_in,
            generation: 0,
            sid: None,
            via: SignedInVia::default(),
        }
    }

    pub(crate) fn settings(max: u64, idle: Duration) -> SessionSettings {
        SessionSettings {
            cookie_name: "authgate".into(),
            lifetime: Duration::from_secs(60),
            idle_timeout: idle,
            max_sessions: max,
            allow_insecure_http: false,
            refresh_before: Duration::from_secs(30),
            login_timeout: Duration::from_secs(600),
            socket_recheck: Duration::from_secs(15),
            max_pending_logins: 4,
            login_key: None,
            store: Default::default(),
            code_exchanges: crate::config::model::LoadBound {
                caller: crate::config::model::CallerBound {
                    in_flight: 4,
                    per_second: 10,
                },
                total: crate::config::model::CallerBound {
                    in_flight: 64,
                    per_second: 100,
                },
            },
        }
    }

    #[test]
    fn ids_are_random_opaque_and_hidden() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43, "256 bits in base64url");
        assert_eq!(SessionId::parse(a.expose()), Some(a.clone()));
        assert_eq!(format!("{a:?}"), "SessionId(***)");
        for bad in [
            "",
            "short",
            &format!("{}=", &a.expose()[..42]),
            &format!("{}!", &a.expose()[..42]),
        ] {
            assert!(SessionId::parse(bad).is_none(), "{bad}");
        }
    }

    /// What every store must do; the Redis store's tests run it too.
    pub(crate) async fn store_contract(store: &dyn SessionStore) {
        let (live, dead) = (SessionId::generate(), SessionId::generate());
        store.put(&live, Arc::new(data(60))).await.unwrap();
        store.put(&dead, Arc::new(data(0))).await.unwrap();
        assert_eq!(store.get(&live).await.unwrap().unwrap().subject, "s");
        assert!(
            store.get(&dead).await.unwrap().is_none(),
            "an expired session is gone"
        );
        store.remove(&live).await.unwrap();
        assert!(store.get(&live).await.unwrap().is_none());

        // Compare-and-swap: only over the generation the writer read, never over an ended session.
        let id = SessionId::generate();
        store.put(&id, Arc::new(data(60))).await.unwrap();
        let mut next = data(60);
        next.generation = 1;
        assert!(
            store.replace(&id, 0, Arc::new(next.clone())).await.unwrap(),
            "generation 0 is there"
        );
        assert!(
            !store.replace(&id, 0, Arc::new(next.clone())).await.unwrap(),
            "generation 0 is gone"
        );
        assert_eq!(store.get(&id).await.unwrap().unwrap().generation, 1);
        assert!(
            !store.remove_if(&id, 0).await.unwrap(),
            "an old generation ends nothing"
        );
        assert!(store.get(&id).await.unwrap().is_some());
        assert!(store.remove_if(&id, 1).await.unwrap());
        assert!(
            !store.replace(&id, 1, Arc::new(next)).await.unwrap(),
            "a removed session stays removed"
        );
        assert!(store.get(&id).await.unwrap().is_none());

        // Back-channel: by sid within one client, or every session of a subject of one client.
        let session = |client: &str, subject: &str, sid: Option<&str>| {
            Arc::new(SessionData {
                client: client.into(),
                subject: subject.into(),
                sid: sid.map(Into::into),
                ..data(60)
            })
        };
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate()).collect();
        store
            .put(&ids[0], session("a", "alice", Some("sid-1")))
            .await
            .unwrap();
        store
            .put(&ids[1], session("a", "alice", Some("sid-2")))
            .await
            .unwrap();
        store
            .put(&ids[2], session("b", "alice", Some("sid-1")))
            .await
            .unwrap();
        store.put(&ids[3], session("a", "bob", None)).await.unwrap();
        store.put(&ids[4], session("b", "bob", None)).await.unwrap();
        assert_eq!(
            store.end_matching("a", Ended::Sid("sid-1")).await.unwrap(),
            1
        );
        assert!(store.get(&ids[0]).await.unwrap().is_none());
        assert!(
            store.get(&ids[1]).await.unwrap().is_some(),
            "another sid stays"
        );
        assert!(
            store.get(&ids[2]).await.unwrap().is_some(),
            "the same sid at another client stays"
        );
        assert_eq!(
            store.end_matching("a", Ended::Sid("sid-1")).await.unwrap(),
            0,
            "nothing left to end"
        );
        assert_eq!(
            store
                .end_matching("a", Ended::Subject("bob"))
                .await
                .unwrap(),
            1
        );
        assert!(store.get(&ids[3]).await.unwrap().is_none());
        assert!(
            store.get(&ids[4]).await.unwrap().is_some(),
            "bob at another client stays"
        );
        store.remove(&ids[1]).await.unwrap();
        assert_eq!(
            store
                .end_matching("a", Ended::Subject("alice"))
                .await
                .unwrap(),
            0,
            "a removed session is not counted"
        );
        // A GitHub session whose numeric id equals a subject the IdP logs out is not the IdP's user.
        let github = SessionId::generate();
        let via = SignedInVia {
            provider: "github".into(),
            github: Some(GitHubIdentity {
                provider: "github".into(),
                login: "octocat".into(),
                ..GitHubIdentity::default()
            }),
            validated_at: 0,
        };
        store
            .put(
                &github,
                Arc::new(SessionData {
                    via,
                    ..(*session("a", "583231", None)).clone()
                }),
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .end_matching("a", Ended::Subject("583231"))
                .await
                .unwrap(),
            0
        );
        assert!(store.get(&github).await.unwrap().is_some());

        // Replay: a key is fresh once.
        let jti = random_token(8);
        assert!(store
            .first_sight(&jti, Duration::from_secs(60))
            .await
            .unwrap());
        assert!(!store
            .first_sight(&jti, Duration::from_secs(60))
            .await
            .unwrap());
        assert!(store
            .first_sight(&format!("{jti}x"), Duration::from_secs(60))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn memory_store_expires_and_removes() {
        let store = MemoryStore::from_config(&settings(100, Duration::from_secs(60)));
        store_contract(&store).await;
        let live = SessionId::generate();
        assert!(matches!(
            store
                .lease_refresh(&live, Duration::from_secs(1))
                .await
                .unwrap(),
            RefreshLease::Held(_)
        ));

        let idle = MemoryStore::from_config(&settings(100, Duration::from_millis(50)));
        idle.put(&live, Arc::new(data(60))).await.unwrap();
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            idle.get(&live).await.unwrap().is_none(),
            "an idle session is gone"
        );
    }

    #[test]
    fn cookies() {
        let https = CookieSpec::new("authgate", true);
        assert_eq!(https.session, "__Host-authgate");
        assert_eq!(
            https.set(&https.session, "v", None),
            "__Host-authgate=v; HttpOnly; SameSite=Lax; Secure; Path=/"
        );
        let http = CookieSpec::new("authgate", false);
        assert_eq!(http.login, "authgate-login");
        assert_eq!(
            http.clear("authgate"),
            "authgate=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"
        );
        assert_eq!(
            http.set("authgate-signed-out", "1", Some(Duration::from_secs(600))),
            "authgate-signed-out=1; HttpOnly; SameSite=Lax; Path=/; Max-Age=600"
        );
        let headers: Vec<&[u8]> = vec![b"a=1; authgate=xyz", b"b=2"];
        assert_eq!(cookie_value(headers.clone(), "authgate"), Some("xyz"));
        assert_eq!(cookie_value(headers, "authgate-login"), None);
        for (header, want) in [
            ("a=1; authgate=x; b=2", Some("a=1; b=2")),
            ("authgate=x", None),
            ("authgate-login=y;authgate=x;c", Some("c")),
            ("xauthgate=1", Some("xauthgate=1")),
            (
                "authgate-login-AbCd1234=s; authgate-signed-out=1; authgatex=2",
                Some("authgatex=2"),
            ),
        ] {
            assert_eq!(
                strip_cookies(header, &["authgate", "authgate-login"]).as_deref(),
                want,
                "{header}"
            );
        }
        assert_eq!(http.login_cookie("AbCd1234"), "authgate-login-AbCd1234");
        assert_eq!(
            http.login_suffix("authgate-login-AbCd1234"),
            Some("AbCd1234")
        );
        for other in [
            "authgate",
            "authgate-login",
            "authgate-loginX-1",
            "authgate-signed-out",
        ] {
            assert_eq!(http.login_suffix(other), None, "{other}");
        }
        assert_eq!(https.signed_out, "__Host-authgate-signed-out");
        let pairs: Vec<(&str, &str)> =
            cookie_pairs(vec![b"a=1; b=\"2\"".as_slice(), b" c = 3 ;junk".as_slice()]).collect();
        assert_eq!(pairs, vec![("a", "1"), ("b", "2"), ("c ", "3")]);
    }
}
