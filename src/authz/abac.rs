//! The live ABAC check: when a token marks a permission in `abac_required`, the IdP decides,
//! given the resource's attributes taken from the request.
//!
//! Decisions are cached per (subject, entity, permission, attributes) with separate TTLs for
//! allow and deny; identical concurrent checks share one call; a circuit breaker stops calls
//! to a failing IdP and lets one trial through after a cooldown. Anything but a clear answer
//! fails closed.

use crate::config::model::{AbacSettings, AttributeSource};
use crate::digest::{Digest, KeyedDigest};
use crate::metrics::Metrics;
use moka::future::Cache;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// How the gateway authenticates its check call: as the caller.
#[derive(Debug, Clone, Copy)]
pub enum CallerAuth<'a> {
    /// The caller's bearer token.
    Bearer(&'a str),
    /// The caller's API key.
    ApiKey(&'a str),
}

/// What is asked.
#[derive(Debug, Clone)]
pub struct CheckRequest<'a> {
    /// The caller's subject (part of the cache key).
    pub subject: &'a str,
    /// Entity type, e.g. `client_abc:invoice`.
    pub entity_type: &'a str,
    /// Entity id, when the route names one.
    pub entity_id: Option<&'a str>,
    /// Permission, e.g. `refund`.
    pub permission: &'a str,
    /// Resource attributes.
    pub attributes: Map<String, Value>,
}

/// The IdP's answer, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed.
    Allowed {
        /// Served from the decision cache.
        cached: bool,
    },
    /// Denied.
    Denied {
        /// Served from the decision cache.
        cached: bool,
        /// The IdP's reason, when it gave one.
        reason: String,
    },
    /// No usable answer (timeout, 5xx, unreadable, breaker open).
    Unavailable(String),
}

#[derive(Debug, Clone)]
enum Answer {
    Allowed,
    Denied(String),
}

#[derive(Deserialize)]
struct CheckResponse {
    allowed: bool,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
    message: Option<String>,
}

struct AnswerTtl {
    allow: Duration,
    deny: Duration,
}

impl moka::Expiry<Digest, Answer> for AnswerTtl {
    fn expire_after_create(&self, _key: &Digest, value: &Answer, _now: std::time::Instant) -> Option<Duration> {
        Some(match value {
            Answer::Allowed => self.allow,
            Answer::Denied(_) => self.deny,
        })
    }
}

/// A circuit breaker: `failures` in a row open it for `cooldown`, then one trial call decides.
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    /// Milliseconds since `epoch` when the breaker opened; 0 when closed.
    opened_at: AtomicU64,
    trial: AtomicU32,
    epoch: Instant,
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cooldown ends.
    Open,
    /// One trial call is allowed.
    HalfOpen,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker { threshold, cooldown, failures: AtomicU32::new(0), opened_at: AtomicU64::new(0), trial: AtomicU32::new(0), epoch: Instant::now() }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let opened = self.opened_at.load(Ordering::Acquire);
        if opened == 0 {
            BreakerState::Closed
        } else if self.now_ms().saturating_sub(opened) < self.cooldown.as_millis() as u64 {
            BreakerState::Open
        } else {
            BreakerState::HalfOpen
        }
    }

    /// Whether a call may go out now (in half-open state, only one at a time).
    pub fn allow(&self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => self.trial.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_ok(),
        }
    }

    /// Records a call that got a usable answer.
    pub fn success(&self) {
        self.failures.store(0, Ordering::Release);
        self.opened_at.store(0, Ordering::Release);
        self.trial.store(0, Ordering::Release);
    }

    /// Records a failed call.
    pub fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_trial = self.trial.swap(0, Ordering::AcqRel) == 1;
        if n >= self.threshold || was_trial {
            self.opened_at.store(self.now_ms(), Ordering::Release);
        }
    }
}

/// The live check client.
pub struct AbacClient {
    url: Option<Url>,
    http: reqwest::Client,
    decisions: Cache<Digest, Answer>,
    keys: KeyedDigest,
    cache_hits: [prometheus::IntCounter; 2],
    breaker: Arc<Breaker>,
    metrics: Metrics,
}

impl AbacClient {
    /// Builds the client; without `url`, every check is unavailable.
    pub fn from_config(url: Option<Url>, timeout: Duration, s: &AbacSettings, metrics: Metrics) -> AbacClient {
        let http = crate::identity::idp_client(timeout, false);
        AbacClient {
            url,
            http,
            decisions: Cache::builder().max_capacity(s.cache_size).expire_after(AnswerTtl { allow: s.allow_ttl, deny: s.deny_ttl }).build(),
            breaker: Arc::new(Breaker::new(s.breaker_failures, s.breaker_cooldown)),
            keys: KeyedDigest::random(),
            cache_hits: [metrics.abac_checks.with_label_values(&["allowed", "cache"]), metrics.abac_checks.with_label_values(&["denied", "cache"])],
            metrics,
        }
    }

    /// The breaker (for metrics and tests).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Asks the IdP (or the cache) whether the caller may do this.
    pub async fn check(&self, auth: CallerAuth<'_>, req: &CheckRequest<'_>) -> Outcome {
        let key = self.cache_key(req);
        if let Some(answer) = self.decisions.get(&key).await {
            self.cache_hits[usize::from(matches!(answer, Answer::Denied(_)))].inc();
            return answer.into_outcome(true);
        }
        let started = Instant::now();
        let fresh = std::sync::atomic::AtomicBool::new(false);
        let result = self
            .decisions
            .try_get_with(key, async {
                fresh.store(true, Ordering::Release);
                self.call(auth, req).await
            })
            .await;
        let cached = !fresh.load(Ordering::Acquire);
        self.metrics.abac_breaker.set(match self.breaker.state() {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        });
        match result {
            Ok(answer) => {
                if !cached {
                    self.metrics.abac_latency.observe(started.elapsed().as_secs_f64());
                }
                self.metrics.abac_checks.with_label_values(&[answer.label(), if cached { "shared" } else { "idp" }]).inc();
                answer.into_outcome(cached)
            }
            Err(why) => {
                self.metrics.abac_checks.with_label_values(&["unavailable", "idp"]).inc();
                Outcome::Unavailable(why.to_string())
            }
        }
    }

    async fn call(&self, auth: CallerAuth<'_>, req: &CheckRequest<'_>) -> Result<Answer, String> {
        let url = self.url.as_ref().ok_or("no check_permission_url is configured")?;
        if !self.breaker.allow() {
            return Err("the live permission check is paused after repeated failures (circuit open)".into());
        }
        let id = req.entity_id.unwrap_or("");
        let body = serde_json::json!({
            "entityType": req.entity_type,
            "entityId": id,
            "permission": req.permission,
            "resource": {"id": id, "type": req.entity_type, "attributes": req.attributes},
        });
        let mut call = self.http.post(url.clone()).json(&body);
        call = match auth {
            CallerAuth::Bearer(t) => call.bearer_auth(t),
            CallerAuth::ApiKey(k) => call.header("x-api-key", k),
        };
        let result = async {
            let resp = call.send().await.map_err(|e| if e.is_timeout() { "the IdP did not answer in time".to_string() } else { format!("the IdP could not be reached ({e})") })?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| format!("the IdP's answer was cut short ({e})"))?;
            if status.is_success() {
                let parsed: CheckResponse = serde_json::from_slice(&bytes).map_err(|_| "the IdP's answer was unreadable".to_string())?;
                return Ok(if parsed.allowed { Answer::Allowed } else { Answer::Denied("the identity provider denied it".into()) });
            }
            if status.is_server_error() {
                return Err(format!("the IdP answered {status}"));
            }
            // 4xx: the IdP answered, and the answer is no.
            let detail = serde_json::from_slice::<ErrorResponse>(&bytes).ok().and_then(|e| e.message.or(e.error)).unwrap_or_default();
            Ok(Answer::Denied(format!("the identity provider refused the check ({status}{}{detail})", if detail.is_empty() { "" } else { ": " })))
        }
        .await;
        match &result {
            Ok(_) => self.breaker.success(),
            Err(_) => self.breaker.failure(),
        }
        result
    }
}

impl Answer {
    fn label(&self) -> &'static str {
        match self {
            Answer::Allowed => "allowed",
            Answer::Denied(_) => "denied",
        }
    }

    fn into_outcome(self, cached: bool) -> Outcome {
        match self {
            Answer::Allowed => Outcome::Allowed { cached },
            Answer::Denied(reason) => Outcome::Denied { cached, reason },
        }
    }
}

impl AbacClient {
    /// The decision cache's key: subject, entity, permission and the attributes, keyed.
    fn cache_key(&self, req: &CheckRequest<'_>) -> Digest {
        let mut w = self.keys.writer();
        w.part(req.subject.as_bytes());
        w.part(req.entity_type.as_bytes());
        match req.entity_id {
            Some(id) => w.part(id.as_bytes()),
            None => w.part(b"\xff"), // not UTF-8: no entity id can be this
        }
        w.part(req.permission.as_bytes());
        // serde_json's Map is ordered by key: the serialisation is canonical (and written last).
        serde_json::to_writer(&mut w, &req.attributes).expect("a JSON map serialises");
        w.finish()
    }
}

/// What went wrong collecting attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// A body attribute on a request whose body is not JSON.
    #[error("this route reads attributes from a JSON body: send Content-Type: application/json")]
    NotJson,
    /// The body is not valid JSON.
    #[error("the request body is not valid JSON")]
    BadJson,
}

/// The request parts attributes are read from.
pub struct RequestParts<'a> {
    /// Path captures by name.
    pub params: &'a [(&'a str, String)],
    /// The raw query string.
    pub query: Option<&'a str>,
    /// Header lookup.
    pub header: &'a dyn Fn(&str) -> Option<String>,
    /// The JSON body, when the route reads it.
    pub body: Option<&'a [u8]>,
    /// The body's content type.
    pub content_type: Option<&'a str>,
}

/// Collects a route's attributes from the request; absent values are left out.
pub fn collect(sources: &[(String, AttributeSource)], parts: &RequestParts<'_>) -> Result<Map<String, Value>, AttributeError> {
    let mut out = Map::new();
    let mut body: Option<Value> = None;
    for (name, source) in sources {
        let value = match source {
            AttributeSource::Path(p) => parts.params.iter().find(|(n, _)| n == p).map(|(_, v)| Value::String(v.clone())),
            AttributeSource::Query(q) => parts.query.and_then(|qs| {
                url::form_urlencoded::parse(qs.as_bytes()).find(|(k, _)| k == q).map(|(_, v)| Value::String(v.into_owned()))
            }),
            AttributeSource::Header(h) => (parts.header)(h).map(Value::String),
            AttributeSource::Body(path) => {
                if body.is_none() {
                    let is_json = parts.content_type.is_some_and(|ct| {
                        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                        mime == "application/json" || mime.ends_with("+json")
                    });
                    if !is_json {
                        return Err(AttributeError::NotJson);
                    }
                    body = Some(serde_json::from_slice(parts.body.unwrap_or(b"")).map_err(|_| AttributeError::BadJson)?);
                }
                let mut cur = body.as_ref();
                for seg in path {
                    cur = cur.and_then(|v| v.get(seg));
                }
                cur.cloned()
            }
        };
        if let Some(v) = value {
            out.insert(name.clone(), v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_and_recovers() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(b.allow());
            b.failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(), "one trial call");
        assert!(!b.allow(), "only one trial at a time");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open, "a failed trial reopens");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow() && b.allow());
    }

    #[test]
    fn attributes_from_every_source() {
        let sources = vec![
            ("invoice".to_string(), AttributeSource::Path("id".into())),
            ("mode".to_string(), AttributeSource::Query("mode".into())),
            ("region".to_string(), AttributeSource::Header("x-region".into())),
            ("amount".to_string(), AttributeSource::Body(vec!["amount".into()])),
            ("currency".to_string(), AttributeSource::Body(vec!["payment".into(), "currency".into()])),
            ("absent".to_string(), AttributeSource::Query("nope".into())),
        ];
        let params = [("id", "inv_1".to_string())];
        let header = |h: &str| (h == "x-region").then(|| "eu".to_string());
        let parts = RequestParts {
            params: &params,
            query: Some("mode=fast&x=1"),
            header: &header,
            body: Some(br#"{"amount": 80, "payment": {"currency": "EUR"}}"#),
            content_type: Some("application/json; charset=utf-8"),
        };
        let got = collect(&sources, &parts).unwrap();
        assert_eq!(Value::Object(got), serde_json::json!({"invoice": "inv_1", "mode": "fast", "region": "eu", "amount": 80, "currency": "EUR"}));
        let not_json = RequestParts { content_type: Some("text/plain"), ..parts };
        assert_eq!(collect(&sources, &not_json), Err(AttributeError::NotJson));
        let bad = RequestParts { content_type: Some("application/json"), body: Some(b"{"), ..not_json };
        assert_eq!(collect(&sources, &bad), Err(AttributeError::BadJson));
    }

    #[test]
    fn cache_keys_differ_by_every_part() {
        let base = CheckRequest { subject: "u", entity_type: "t", entity_id: Some("1"), permission: "p", attributes: Map::new() };
        let mut attrs = Map::new();
        attrs.insert("amount".into(), 80.into());
        let variants = [
            CheckRequest { subject: "v", ..base.clone() },
            CheckRequest { entity_type: "t2", ..base.clone() },
            CheckRequest { entity_id: None, ..base.clone() },
            CheckRequest { permission: "q", ..base.clone() },
            CheckRequest { attributes: attrs, ..base.clone() },
        ];
        let client = AbacClient::from_config(None, Duration::from_secs(1), &AbacSettings { allow_ttl: Duration::from_secs(30), deny_ttl: Duration::from_secs(10), cache_size: 10, breaker_failures: 5, breaker_cooldown: Duration::from_secs(10) }, Metrics::new());
        assert_eq!(client.cache_key(&base), client.cache_key(&base.clone()));
        for v in &variants {
            assert_ne!(client.cache_key(&base), client.cache_key(v), "{v:?}");
        }
    }
}
