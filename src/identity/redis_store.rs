//! [`RedisStore`]: the sessions in Redis (or Valkey), shared by every gateway instance
//! configured alike (`[session] store = "redis"`).
//!
//! - Keys are `{prefix}{kind}:{hex}`, the hex a keyed HMAC-SHA256 (128 bits) of the session
//!   id, never the id: a Redis dump or `MONITOR` shows no cookie that would sign anyone in.
//! - Each session is a hash: `d` the session sealed with AES-256-GCM (random nonce, the key's
//!   name as associated data, so a value cannot be moved to another key), `g` its generation,
//!   `e` its absolute expiry, `x`/`y` its back-channel index keys. The absolute and idle expiry
//!   are the key's TTL, extended on every read (by the read's own script: one round trip).
//! - Back-channel logout: sets of session keys by client and `sid`, and by client and `sub`.
//! - Every write that must not be lost to a race is one Lua script: compare-and-swap on the
//!   generation (the fencing token of a refresh), conditional removal, index upkeep.
//! - A refresh across instances is a lease (`SET NX PX`, released only by its holder).
//! - Every call is bounded by the configured timeouts; when Redis cannot be reached the calls
//!   fail with [`StoreUnavailable`] (503 for the request), one log line marks the outage and one
//!   its end, and the connection manager reconnects by itself.

use crate::config::model::RedisSettings;
use crate::identity::now_secs;
use crate::identity::session::{
    random_token, Ended, RefreshLease, SessionData, SessionId, SessionStore, StoreHealth,
    StoreUnavailable,
};
use crate::metrics::Metrics;
use crate::secret::{decode_login_key as decode_key, LOGIN_KEY_LEN as KEY_LEN};
use async_trait::async_trait;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the Redis store cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// `session.redis.key` is unusable.
    #[error("session.redis.key {0}")]
    Key(#[from] crate::secret::LoginKeyError),
    /// `session.redis.url` is unusable (the URL itself is not repeated: it may hold a password).
    #[error("session.redis.url is not a usable Redis URL")]
    Url,
    /// `session.redis.ca_file` cannot be read or used.
    #[error("session.redis.ca_file {0}: {1}")]
    CaFile(String, String),
}

/// Reads a session, extending its TTL to the idle timeout (never beyond its absolute expiry).
/// KEYS: session. ARGV: idle ms, now (s).
const GET: &str = r"
local v = redis.call('HMGET', KEYS[1], 'd', 'e')
if not v[1] then return false end
local left = (tonumber(v[2]) - tonumber(ARGV[2])) * 1000
if left <= 0 then return false end
local idle = tonumber(ARGV[1])
if left > idle then left = idle end
redis.call('PEXPIRE', KEYS[1], left)
return v[1]
";

/// Writes a session with its indexes. KEYS: session, sub index, active set. ARGV: sealed,
/// generation, expires_at (s), ttl ms, sid index key or '', index ttl ms, now (s).
const PUT: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'g', ARGV[2], 'e', ARGV[3], 'x', ARGV[5], 'y', KEYS[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local function index(set)
  redis.call('SADD', set, KEYS[1])
  if redis.call('PTTL', set) < tonumber(ARGV[6]) then redis.call('PEXPIRE', set, ARGV[6]) end
end
if ARGV[5] ~= '' then index(ARGV[5]) end
index(KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[3], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[7])
return redis.call('ZCARD', KEYS[3])
";

/// Compare-and-swap on the generation. KEYS: session. ARGV: expected generation, sealed, new
/// generation, ttl ms.
const REPLACE: &str = r"
if redis.call('HGET', KEYS[1], 'g') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'g', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// Ends a session (only at generation ARGV[1] unless it is ''). KEYS: session, active set.
/// ARGV: expected generation or '', now (s). Returns {removed, active}.
const REMOVE: &str = r"
local removed = 0
local v = redis.call('HMGET', KEYS[1], 'g', 'x', 'y')
if v[1] and (ARGV[1] == '' or v[1] == ARGV[1]) then
  if v[2] and v[2] ~= '' then redis.call('SREM', v[2], KEYS[1]) end
  if v[3] and v[3] ~= '' then redis.call('SREM', v[3], KEYS[1]) end
  removed = redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
return {removed, redis.call('ZCARD', KEYS[2])}
";

/// Ends every session of an index set. KEYS: index, active set. ARGV: now (s).
/// Returns {ended, active}.
const END_MATCHING: &str = r"
local n = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('HMGET', k, 'x', 'y')
  if v[1] and v[1] ~= '' and v[1] ~= KEYS[1] then redis.call('SREM', v[1], k) end
  if v[2] and v[2] ~= '' and v[2] ~= KEYS[1] then redis.call('SREM', v[2], k) end
  n = n + redis.call('DEL', k)
  redis.call('ZREM', KEYS[2], k)
end
redis.call('DEL', KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
return {n, redis.call('ZCARD', KEYS[2])}
";

/// Releases a lease only when it is still the caller's. KEYS: lease. ARGV: token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The Lua scripts, hashed once.
struct Scripts {
    get: Script,
    put: Script,
    replace: Script,
    remove: Script,
    end_matching: Script,
    release: Script,
}

/// How long a health check's answer is reused: a flood of readiness probes costs Redis one
/// `PING` a second.
pub const HEALTH_FRESH: Duration = Duration::from_secs(1);

/// Metrics of the store: call latency and errors by operation, and the sessions held.
struct StoreMetrics {
    latency: prometheus::HistogramVec,
    errors: prometheus::IntCounterVec,
    active: prometheus::IntGauge,
}

/// Sessions in Redis; see the module documentation.
pub struct RedisStore {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    connection: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    seal: LessSafeKey,
    names: hmac::Key,
    idle: Duration,
    /// The longest one call may take, connecting included.
    bound: Duration,
    /// Redis is unreachable (logged once when it starts, once when it ends).
    down: AtomicBool,
    /// Where Redis is, as `/readyz` names it: scheme, host and port, never the URL's password.
    shown: String,
    /// The latest health check and when it was made: `/readyz` checks at most once per
    /// [`HEALTH_FRESH`], however often it is asked (the lock also makes concurrent probes
    /// share one check).
    health: tokio::sync::Mutex<Option<(Instant, StoreHealth)>>,
    scripts: Scripts,
    metrics: StoreMetrics,
}

impl RedisStore {
    /// The store for `settings`; sessions idle for `idle` end. Connects on first use (a Redis
    /// that is down at start-up is no reason not to serve bearer traffic).
    pub fn from_config(
        settings: &RedisSettings,
        idle: Duration,
        metrics: &Metrics,
    ) -> Result<RedisStore, RedisStoreError> {
        let key = decode_key(settings.key.expose())?;
        let client = match &settings.ca_file {
            None => redis::Client::open(settings.url.expose()).map_err(|_| RedisStoreError::Url)?,
            Some(path) => {
                let shown = path.display().to_string();
                let pem = std::fs::read(path)
                    .map_err(|e| RedisStoreError::CaFile(shown.clone(), e.to_string()))?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(settings.url.expose(), certificates)
                    .map_err(|e| RedisStoreError::CaFile(shown, e.to_string()))?
            }
        };
        // Bounded reconnects: a request waits for at most one quick retry, then fails over to 503;
        // the next request after an I/O error starts the next reconnect.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let shown = shown_address(client.get_connection_info().addr());
        Ok(RedisStore {
            client,
            manager_config,
            connection: tokio::sync::OnceCell::new(),
            prefix: settings.prefix.clone(),
            seal: sealing_key(&key, b"authgate session encryption")?,
            names: hmac::Key::new(
                hmac::HMAC_SHA256,
                &derive(&key, b"authgate session key names"),
            ),
            idle,
            bound: settings.connect_timeout * 2 + settings.timeout + Duration::from_millis(250),
            down: AtomicBool::new(false),
            shown,
            health: tokio::sync::Mutex::new(None),
            scripts: Scripts {
                get: Script::new(GET),
                put: Script::new(PUT),
                replace: Script::new(REPLACE),
                remove: Script::new(REMOVE),
                end_matching: Script::new(END_MATCHING),
                release: Script::new(RELEASE),
            },
            metrics: StoreMetrics {
                latency: metrics.session_store_latency.clone(),
                errors: metrics.session_store_errors.clone(),
                active: metrics.sessions_active.with_label_values(&["redis"]),
            },
        })
    }

    /// `{prefix}{kind}:{hex}`, the hex the first 128 bits of the keyed HMAC of `parts`.
    fn name(&self, kind: &str, parts: &[&[u8]]) -> String {
        let mut ctx = hmac::Context::with_key(&self.names);
        ctx.update(kind.as_bytes());
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let tag = ctx.sign();
        let mut out = String::with_capacity(self.prefix.len() + kind.len() + 33);
        out.push_str(&self.prefix);
        out.push_str(kind);
        out.push(':');
        for b in tag.as_ref().iter().take(16) {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    fn session_key(&self, id: &SessionId) -> String {
        self.name("s", &[id.expose().as_bytes()])
    }

    fn sid_index(&self, client: &str, sid: &str) -> String {
        self.name("sid", &[client.as_bytes(), sid.as_bytes()])
    }

    fn sub_index(&self, client: &str, subject: &str) -> String {
        self.name("sub", &[client.as_bytes(), subject.as_bytes()])
    }

    fn active_set(&self) -> String {
        format!("{}active", self.prefix)
    }

    /// The session sealed for the key `name`: nonce, ciphertext and tag.
    fn seal(&self, name: &str, session: &SessionData) -> Result<Vec<u8>, StoreUnavailable> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut in_out = serde_json::to_vec(session).map_err(|_| StoreUnavailable)?;
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| StoreUnavailable)?;
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    /// The session sealed under `name`; `None` for anything else (another key, tampering).
    fn open(&self, name: &str, sealed: &[u8]) -> Option<SessionData> {
        let nonce = Nonce::try_assume_unique_for_key(sealed.get(..NONCE_LEN)?).ok()?;
        let mut in_out = sealed.get(NONCE_LEN..)?.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut in_out)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }

    /// Milliseconds a session lives from now: to its absolute expiry, at most the idle timeout.
    fn ttl_ms(&self, session: &SessionData) -> u64 {
        let left =
            Duration::from_secs(session.expires_at.saturating_sub(now_secs())).min(self.idle);
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Runs one call against Redis: bounded in time, timed and counted by `op`; a failure
    /// marks the outage (logged once), a success after one marks its end.
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreUnavailable>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_saying(op, f).await.map_err(|_| StoreUnavailable)
    }

    /// [`RedisStore::call`], saying why a call failed (without the URL's password).
    async fn call_saying<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, String>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let attempt = async {
            let conn = self
                .connection
                .get_or_try_init(|| async {
                    ConnectionManager::new_lazy_with_config(
                        self.client.clone(),
                        self.manager_config.clone(),
                    )
                })
                .await?
                .clone();
            match f(conn.clone()).await {
                // A connection that broke (Redis restarted, a failover): the error started a
                // reconnect; one more try on it, so the first request after Redis is back is
                // served. (Every write here is idempotent or a compare-and-swap.)
                Err(e)
                    if e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal() =>
                {
                    f(conn).await
                }
                other => other,
            }
        };
        let result = match tokio::time::timeout(self.bound, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.bound)),
        };
        self.metrics
            .latency
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(value) => {
                if self.down.swap(false, Ordering::AcqRel) {
                    tracing::warn!(
                        "session store (redis) is reachable again: sessions are served again"
                    );
                }
                Ok(value)
            }
            Err(why) => {
                let why = self.without_password(why);
                self.metrics.errors.with_label_values(&[op]).inc();
                if !self.down.swap(true, Ordering::AcqRel) {
                    tracing::error!(operation = op, error = %why, "session store (redis) is unreachable or failing: requests that need a session are answered 503 until it is back (logged once per outage)");
                }
                Err(why)
            }
        }
    }

    /// `why` with the URL's password, should an error ever repeat it, replaced by `***`.
    fn without_password(&self, why: String) -> String {
        match self
            .client
            .get_connection_info()
            .redis_settings()
            .password()
        {
            Some(password) if !password.is_empty() => why.replace(password, "***"),
            _ => why,
        }
    }

    fn set_active(&self, count: i64) {
        self.metrics.active.set(count);
    }
}

/// `redis://host:port` (`rediss://` over TLS, `unix:` for a socket): where the store is,
/// without the URL's user name or password.
fn shown_address(addr: &redis::ConnectionAddr) -> String {
    match addr {
        redis::ConnectionAddr::Tcp(..) => format!("redis://{addr}"),
        redis::ConnectionAddr::TcpTls { .. } => format!("rediss://{addr}"),
        redis::ConnectionAddr::Unix(..) => format!("unix:{addr}"),
        _ => format!("redis at {addr}"),
    }
}

/// HMAC-SHA256 of `label` under the configured key: one independent key per use.
fn derive(key: &[u8; KEY_LEN], label: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), label);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sealing_key(key: &[u8; KEY_LEN], label: &[u8]) -> Result<LessSafeKey, RedisStoreError> {
    let unbound = UnboundKey::new(&AES_256_GCM, &derive(key, label))
        .map_err(|_| crate::secret::LoginKeyError::Unusable)?;
    Ok(LessSafeKey::new(unbound))
}

#[async_trait]
impl SessionStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Arc<SessionData>>, StoreUnavailable> {
        let key = self.session_key(id);
        let idle = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self.scripts.get.key(&key);
        invocation.arg(idle).arg(now_secs());
        let script = &invocation;
        let sealed: Option<Vec<u8>> = self
            .call(
                "get",
                |mut c| async move { script.invoke_async(&mut c).await },
            )
            .await?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        match self.open(&key, &sealed) {
            Some(session) if session.expires_at > now_secs() => Ok(Some(Arc::new(session))),
            Some(_) => Ok(None),
            None => {
                // Another key (a changed session.redis.key) or tampering: no session.
                tracing::warn!("a session in redis does not open with session.redis.key: treated as signed out");
                Ok(None)
            }
        }
    }

    async fn put(&self, id: &SessionId, session: Arc<SessionData>) -> Result<(), StoreUnavailable> {
        let key = self.session_key(id);
        let sealed = self.seal(&key, &session)?;
        let sid_index = session
            .sid
            .as_deref()
            .map(|sid| self.sid_index(&session.client, sid))
            .unwrap_or_default();
        // The IdP's back-channel logouts name its subjects: another provider's (a GitHub id)
        // goes into an index of its own, which no logout token reaches.
        let sub_index = match session.via.provider() {
            crate::config::model::IDP_PROVIDER => self.sub_index(&session.client, &session.subject),
            provider => self.name(
                "sub-other",
                &[
                    provider.as_bytes(),
                    session.client.as_bytes(),
                    session.subject.as_bytes(),
                ],
            ),
        };
        let index_ttl = session
            .expires_at
            .saturating_sub(now_secs())
            .saturating_mul(1000)
            .max(1);
        let active = self.active_set();
        let mut invocation = self.scripts.put.key(&key);
        invocation
            .key(&sub_index)
            .key(&active)
            .arg(sealed)
            .arg(session.generation)
            .arg(session.expires_at)
            .arg(self.ttl_ms(&session))
            .arg(&sid_index)
            .arg(index_ttl)
            .arg(now_secs());
        let script = &invocation;
        let count: i64 = self
            .call(
                "put",
                |mut c| async move { script.invoke_async(&mut c).await },
            )
            .await?;
        self.set_active(count);
        Ok(())
    }

    async fn replace(
        &self,
        id: &SessionId,
        expected: u64,
        session: Arc<SessionData>,
    ) -> Result<bool, StoreUnavailable> {
        let key = self.session_key(id);
        let sealed = self.seal(&key, &session)?;
        let mut invocation = self.scripts.replace.key(&key);
        invocation
            .arg(expected)
            .arg(sealed)
            .arg(session.generation)
            .arg(self.ttl_ms(&session));
        let script = &invocation;
        let written: i64 = self
            .call("replace", |mut c| async move {
                script.invoke_async(&mut c).await
            })
            .await?;
        Ok(written == 1)
    }

    async fn remove(&self, id: &SessionId) -> Result<(), StoreUnavailable> {
        let (key, active) = (self.session_key(id), self.active_set());
        let mut invocation = self.scripts.remove.key(&key);
        invocation.key(&active).arg("").arg(now_secs());
        let script = &invocation;
        let (_, count): (i64, i64) = self
            .call("remove", |mut c| async move {
                script.invoke_async(&mut c).await
            })
            .await?;
        self.set_active(count);
        Ok(())
    }

    async fn remove_if(&self, id: &SessionId, expected: u64) -> Result<bool, StoreUnavailable> {
        let (key, active) = (self.session_key(id), self.active_set());
        let mut invocation = self.scripts.remove.key(&key);
        invocation.key(&active).arg(expected).arg(now_secs());
        let script = &invocation;
        let (removed, count): (i64, i64) = self
            .call("remove", |mut c| async move {
                script.invoke_async(&mut c).await
            })
            .await?;
        self.set_active(count);
        Ok(removed == 1)
    }

    async fn end_matching(
        &self,
        client: &str,
        which: Ended<'_>,
    ) -> Result<usize, StoreUnavailable> {
        let index = match which {
            Ended::Sid(sid) => self.sid_index(client, sid),
            Ended::Subject(sub) => self.sub_index(client, sub),
        };
        let active = self.active_set();
        let mut invocation = self.scripts.end_matching.key(&index);
        invocation.key(&active).arg(now_secs());
        let script = &invocation;
        let (ended, count): (i64, i64) = self
            .call("end_matching", |mut c| async move {
                script.invoke_async(&mut c).await
            })
            .await?;
        self.set_active(count);
        Ok(usize::try_from(ended).unwrap_or(0))
    }

    async fn first_sight(&self, key: &str, ttl: Duration) -> Result<bool, StoreUnavailable> {
        let name = self.name("seen", &[key.as_bytes()]);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let cmd = &redis::cmd("SET")
            .arg(&name)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .clone();
        let set: Option<String> = self
            .call("first_sight", |mut c| async move {
                cmd.query_async(&mut c).await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn lease_refresh(
        &self,
        id: &SessionId,
        ttl: Duration,
    ) -> Result<RefreshLease, StoreUnavailable> {
        let name = self.name("lease", &[id.expose().as_bytes()]);
        let token = random_token(16);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let cmd = &redis::cmd("SET")
            .arg(&name)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .clone();
        let set: Option<String> = self
            .call(
                "lease",
                |mut c| async move { cmd.query_async(&mut c).await },
            )
            .await?;
        Ok(match set {
            Some(_) => RefreshLease::Held(token),
            None => RefreshLease::Busy,
        })
    }

    /// A `PING`, bounded like every call, its answer reused for [`HEALTH_FRESH`].
    async fn health(&self) -> StoreHealth {
        let mut latest = self.health.lock().await;
        if let Some((at, health)) = latest.as_ref() {
            if at.elapsed() < HEALTH_FRESH {
                return health.clone();
            }
        }
        let pong = self
            .call_saying("ping", |mut c| async move {
                redis::cmd("PING").query_async::<String>(&mut c).await
            })
            .await;
        let health = match pong {
            Ok(_) => StoreHealth::Ready {
                at: self.shown.clone(),
            },
            Err(why) => StoreHealth::Unreachable {
                at: self.shown.clone(),
                why,
            },
        };
        *latest = Some((Instant::now(), health.clone()));
        health
    }

    async fn release_refresh(&self, id: &SessionId, lease: &str) {
        let name = self.name("lease", &[id.expose().as_bytes()]);
        let mut invocation = self.scripts.release.key(&name);
        invocation.arg(lease);
        let script = &invocation;
        // A lease not released expires by itself: nothing to do about a failure here.
        let _ = self
            .call("release", |mut c| async move {
                script.invoke_async::<i64>(&mut c).await
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::session::tests::{data, store_contract};
    use crate::secret::Secret;

    fn settings(url: &str, prefix: &str) -> RedisSettings {
        RedisSettings {
            url: Secret::new(url),
            prefix: prefix.into(),
            key: Secret::new("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            connect_timeout: Duration::from_millis(300),
            timeout: Duration::from_millis(300),
            ca_file: None,
        }
    }

    #[tokio::test]
    async fn rediss_with_a_private_ca() {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let Some(redis) = devidp::redis::RedisServer::start_tls_or_skip(
            "redis_store TLS test",
            &cert_path,
            &key_path,
        ) else {
            return;
        };
        let metrics = Metrics::new();
        let mut tls = settings(&redis.url().replace("redis://", "rediss://"), "tls:");
        tls.ca_file = Some(cert_path.clone());
        let store = RedisStore::from_config(&tls, Duration::from_secs(60), &metrics).unwrap();
        let id = SessionId::generate();
        store.put(&id, Arc::new(data(60))).await.unwrap();
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().subject,
            "s",
            "over TLS, the certificate checked against ca_file"
        );

        // Without the CA, the system's roots refuse the certificate: unavailable, never unchecked.
        let untrusted = RedisStore::from_config(
            &settings(&redis.url().replace("redis://", "rediss://"), "tls:"),
            Duration::from_secs(60),
            &metrics,
        )
        .unwrap();
        assert_eq!(
            untrusted.put(&id, Arc::new(data(60))).await,
            Err(StoreUnavailable)
        );
        // Plain redis:// to the TLS port does not work either.
        let plain = RedisStore::from_config(
            &settings(&redis.url(), "tls:"),
            Duration::from_secs(60),
            &metrics,
        )
        .unwrap();
        assert_eq!(
            plain.put(&id, Arc::new(data(60))).await,
            Err(StoreUnavailable)
        );
    }

    #[tokio::test]
    async fn fulfils_the_store_contract_and_keeps_no_secret_in_clear() {
        let Some(redis) = devidp::redis::RedisServer::start_or_skip("redis_store unit test") else {
            return;
        };
        let metrics = Metrics::new();
        let store = RedisStore::from_config(
            &settings(&redis.url(), "t1:"),
            Duration::from_secs(60),
            &metrics,
        )
        .unwrap();
        store_contract(&store).await;

        // A session's key is a digest, its value ciphertext: neither the id nor a token shows.
        let id = SessionId::generate();
        let mut session = data(60);
        session.tokens.access_token = Secret::new("access-token-in-clear");
        store.put(&id, Arc::new(session)).await.unwrap();
        let dump = redis.dump("t1:*");
        assert!(dump.contains("t1:s:"), "{dump}");
        assert!(
            !dump.contains(id.expose()) && !dump.contains("access-token-in-clear"),
            "{dump}"
        );

        // The same key and prefix elsewhere read it; another key does not, another prefix does not see it.
        let twin = RedisStore::from_config(
            &settings(&redis.url(), "t1:"),
            Duration::from_secs(60),
            &metrics,
        )
        .unwrap();
        assert_eq!(
            twin.get(&id)
                .await
                .unwrap()
                .unwrap()
                .tokens
                .access_token
                .expose(),
            "access-token-in-clear"
        );
        let mut other_key = settings(&redis.url(), "t1:");
        other_key.key =
            Secret::new("HwEC AwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".replace(' ', ""));
        assert!(
            RedisStore::from_config(&other_key, Duration::from_secs(60), &metrics)
                .unwrap()
                .get(&id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(RedisStore::from_config(
            &settings(&redis.url(), "t2:"),
            Duration::from_secs(60),
            &metrics
        )
        .unwrap()
        .get(&id)
        .await
        .unwrap()
        .is_none());

        // The lease: one holder at a time, released only by it.
        let lease = store
            .lease_refresh(&id, Duration::from_secs(5))
            .await
            .unwrap();
        let RefreshLease::Held(token) = lease else {
            panic!("the first lease is held")
        };
        assert_eq!(
            twin.lease_refresh(&id, Duration::from_secs(5))
                .await
                .unwrap(),
            RefreshLease::Busy
        );
        twin.release_refresh(&id, "not-the-token").await;
        assert_eq!(
            twin.lease_refresh(&id, Duration::from_secs(5))
                .await
                .unwrap(),
            RefreshLease::Busy,
            "only the holder releases"
        );
        store.release_refresh(&id, &token).await;
        assert!(matches!(
            twin.lease_refresh(&id, Duration::from_secs(5))
                .await
                .unwrap(),
            RefreshLease::Held(_)
        ));

        // Idle timeout: the key's TTL.
        let idle = RedisStore::from_config(
            &settings(&redis.url(), "t3:"),
            Duration::from_millis(300),
            &metrics,
        )
        .unwrap();
        idle.put(&id, Arc::new(data(60))).await.unwrap();
        assert!(idle.get(&id).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            idle.get(&id).await.unwrap().is_none(),
            "an idle session is gone"
        );
        assert!(metrics
            .render()
            .contains("authgate_session_store_duration_seconds_bucket{operation=\"get\""));
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_unavailable_then_recovers() {
        let Some(mut redis) = devidp::redis::RedisServer::start_or_skip("redis_store unit test")
        else {
            return;
        };
        let metrics = Metrics::new();
        let store = RedisStore::from_config(
            &settings(&redis.url(), "t4:"),
            Duration::from_secs(60),
            &metrics,
        )
        .unwrap();
        let id = SessionId::generate();
        store.put(&id, Arc::new(data(60))).await.unwrap();
        redis.stop();
        let started = Instant::now();
        assert!(matches!(store.get(&id).await, Err(StoreUnavailable)));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded: {:?}",
            started.elapsed()
        );
        assert_eq!(
            store.put(&id, Arc::new(data(60))).await,
            Err(StoreUnavailable)
        );
        assert!(metrics
            .render()
            .contains("authgate_session_store_errors_total{operation=\"get\"} 1"));
        redis.restart();
        let mut back = false;
        for _ in 0..50 {
            if store.get(&id).await.is_ok() {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(back, "the store reconnects by itself");
    }

    #[tokio::test]
    async fn health_names_the_address_never_the_password_and_is_reused_for_a_second() {
        // A closed port: nothing listens on the port a listener just gave back.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let metrics = Metrics::new();
        let store = RedisStore::from_config(
            &settings(&format!("redis://ops:hunter2@127.0.0.1:{port}/0"), "h:"),
            Duration::from_secs(60),
            &metrics,
        )
        .unwrap();
        let started = Instant::now();
        let health = store.health().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded: {:?}",
            started.elapsed()
        );
        let shown = health.to_string();
        assert!(!health.is_ready(), "{shown}");
        assert!(
            shown.starts_with(&format!("unreachable (redis://127.0.0.1:{port}: ")),
            "{shown}"
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("ops"),
            "{shown}"
        );
        // Asked again at once: the same answer, without another PING.
        assert_eq!(store.health().await, health);
        assert!(metrics
            .render()
            .contains("authgate_session_store_errors_total{operation=\"ping\"} 1"));
    }
}
