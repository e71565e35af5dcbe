//! The live ABAC check: when a token marks a permission in `abac_required`, the IdP decides,
//! given the resource's attributes taken from the request.
//!
//! Decisions are cached per (credential kind, credential, subject, entity, permission,
//! attributes) with separate TTLs for allow and deny; identical concurrent checks share one
//! call; a circuit breaker stops calls to an unreachable IdP and lets one trial through after
//! a cooldown. Anything but a clear answer fails closed:
//!
//! | the IdP…                                             | outcome            | breaker  |
//! |------------------------------------------------------|--------------------|----------|
//! | answers 2xx `{"allowed": true}`                      | allowed            | success  |
//! | answers 2xx `{"allowed": false}`, or any 4xx but 429 | denied (403)       | success  |
//! | cannot be reached, resets, times out, answers 502/503/504 | [`Outcome::Unavailable`] (503) | failure |
//! | is not asked: the breaker is open                    | [`Outcome::Unavailable`] (503, or allowed by `on_error = "allow"` for a caller whose calls did not fail) | — |
//! | answers 429, 500 or another status, or an unreadable 2xx | [`Outcome::Failed`] (503, never allowed) | success (it is reachable) |
//!
//! Only unavailability counts toward the breaker and only unavailability may be allowed by a
//! route's `on_error = "allow"`: a caller can make the IdP answer 4xx or 500 with its own
//! token or attributes, and must gain nothing by it. Without a check URL every check is denied.
//!
//! Nor may a caller buy a fail-open with load. Each caller (its verified subject) has a budget
//! of uncached checks in flight and per second (`[abac] caller_checks_*`; beyond it the check
//! is [`Outcome::Limited`], 429 to that caller alone, and no call is made). And a fail-open
//! route lets a request through only when no call was made for it because the breaker is open
//! ([`Outcome::Unavailable`] with `fail_open`), and only for a caller none of whose own calls
//! found the IdP unavailable since the IdP last answered: the caller whose call timed out, and
//! every caller whose calls opened the breaker, gets 503 until the IdP answers again.
//!
//! Attributes are read strictly ([`collect`]): a source that an upstream framework could read
//! differently from the gateway (a repeated query parameter or header, a comma-joined header,
//! a duplicate or case-variant JSON key along the attribute's path) is refused, never picked.

use crate::budget::{Gates, Limited};
use crate::config::model::{AbacSettings, AttributeSource};
use crate::digest::{Digest, KeyedDigest};
use crate::identity::credentials::Credential;
use crate::metrics::Metrics;
use moka::future::Cache;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use url::Url;

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
    /// Denied: the IdP said no (a `false` decision or a 4xx), or no check URL is configured.
    Denied {
        /// Served from the decision cache.
        cached: bool,
        /// The IdP's reason, when it gave one.
        reason: String,
    },
    /// The IdP is unreachable: connection refused or reset, timeout, 502/503/504, or the
    /// breaker is open. The only outcome a route's `on_error = "allow"` may let through, and
    /// only when `fail_open` says so.
    Unavailable {
        /// Why, in words.
        why: String,
        /// No call was made for this check (the breaker is open), and none of this caller's
        /// calls found the IdP unavailable since it last answered: a fail-open route may let
        /// it through.
        fail_open: bool,
    },
    /// The caller has as many uncached checks in flight, or started as many this second, as
    /// `[abac] caller_checks_*` allow: no call was made (429 with `Retry-After`).
    Limited(Limited),
    /// The IdP answered, but not with a decision (429, 500, another status, an unreadable
    /// body): possibly caused by the caller's own input, so always refused.
    Failed(String),
}

#[derive(Debug, Clone)]
enum Answer {
    Allowed,
    Denied(String),
}

/// Why a call gave no decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The IdP could not be reached or said it is unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// The IdP answered without a decision.
    #[error("{0}")]
    Failed(String),
    /// The caller's budget of uncached checks is used up: no call was made.
    #[error("the caller has too many live permission checks in progress")]
    Limited(Limited),
}

#[derive(serde::Deserialize)]
struct CheckResponse {
    allowed: bool,
}

#[derive(serde::Deserialize)]
struct ErrorResponse {
    error: Option<String>,
    message: Option<String>,
}

struct AnswerTtl {
    allow: Duration,
    deny: Duration,
}

impl moka::Expiry<Digest, Answer> for AnswerTtl {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &Answer,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(match value {
            Answer::Allowed => self.allow,
            Answer::Denied(_) => self.deny,
        })
    }
}

/// A circuit breaker: `failures` in a row open it for `cooldown`, then one trial call decides.
/// It remembers whose calls failed since the IdP last answered ([`Breaker::failed_for`]).
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    /// Milliseconds since `epoch` when the breaker opened; 0 when closed.
    opened_at: AtomicU64,
    trial: AtomicU32,
    epoch: Instant,
    /// The callers whose calls failed since the last call the IdP answered.
    failed: Mutex<FailedCallers>,
}

/// Whose calls failed since the IdP last answered: a bounded list; past its bound every
/// caller counts as one of them (no fail-open for anybody until the IdP answers again).
#[derive(Default)]
struct FailedCallers {
    callers: Vec<Digest>,
    overflowed: bool,
}

/// Most callers a [`Breaker`] remembers as having failed calls; past it, every caller is.
const MAX_FAILED_CALLERS: usize = 4096;

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
        Breaker {
            threshold,
            cooldown,
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            trial: AtomicU32::new(0),
            epoch: Instant::now(),
            failed: Mutex::new(FailedCallers::default()),
        }
    }

    fn failed_callers(&self) -> std::sync::MutexGuard<'_, FailedCallers> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call of `caller` found the IdP unavailable since it last answered a call (so
    /// counted toward opening the breaker, or would have).
    pub fn failed_for(&self, caller: Digest) -> bool {
        let failed = self.failed_callers();
        failed.overflowed || failed.callers.contains(&caller)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let opened = self.opened_at.load(Ordering::Acquire);
        let cooldown = u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX);
        if opened == 0 {
            BreakerState::Closed
        } else if self.now_ms().saturating_sub(opened) < cooldown {
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
            BreakerState::HalfOpen => self
                .trial
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    /// Records a call that reached the IdP (whatever it answered).
    pub fn success(&self) {
        self.failures.store(0, Ordering::Release);
        self.opened_at.store(0, Ordering::Release);
        self.trial.store(0, Ordering::Release);
        let mut failed = self.failed_callers();
        failed.callers.clear();
        failed.overflowed = false;
    }

    /// Records a call of `caller` that found the IdP unavailable.
    pub fn failure(&self, caller: Digest) {
        {
            let mut failed = self.failed_callers();
            if !failed.callers.contains(&caller) {
                if failed.callers.len() < MAX_FAILED_CALLERS {
                    failed.callers.push(caller);
                } else {
                    failed.overflowed = true;
                }
            }
        }
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
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
    /// Each caller's budget of uncached checks, by [`AbacClient::caller_key`].
    callers: Gates<Digest>,
    metrics: Metrics,
}

/// Most callers whose check budgets are kept at once (an idle caller's is forgotten).
const MAX_CALLERS: usize = 65_536;

/// The reason given when a permission needs the live check and no URL is configured.
pub const NOT_CONFIGURED: &str = "the permission needs the identity provider's live check, and no idp.check_permission_url is configured";

impl AbacClient {
    /// Builds the client; without `url`, every check is denied.
    pub fn from_config(
        url: Option<Url>,
        timeout: Duration,
        s: &AbacSettings,
        metrics: Metrics,
    ) -> AbacClient {
        let http = crate::identity::idp_client(timeout, false);
        AbacClient {
            url,
            http,
            decisions: Cache::builder()
                .max_capacity(s.cache_size)
                .expire_after(AnswerTtl {
                    allow: s.allow_ttl,
                    deny: s.deny_ttl,
                })
                .build(),
            breaker: Arc::new(Breaker::new(s.breaker_failures, s.breaker_cooldown)),
            callers: Gates::new(
                s.caller_checks.in_flight,
                s.caller_checks.per_second,
                MAX_CALLERS,
            ),
            keys: KeyedDigest::random(),
            cache_hits: [
                metrics.abac_checks.with_label_values(&["allowed", "cache"]),
                metrics.abac_checks.with_label_values(&["denied", "cache"]),
            ],
            metrics,
        }
    }

    /// The breaker (for metrics and tests).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Asks the IdP (or the cache) whether the caller may do this.
    /// The gateway asks as the caller: with its bearer token (a session's access token) or API key.
    pub async fn check(&self, auth: &Credential, req: &CheckRequest<'_>) -> Outcome {
        let Some(url) = self.url.as_ref() else {
            // Nothing can decide: no. Never "unavailable", so `on_error = "allow"` cannot apply.
            self.metrics
                .abac_checks
                .with_label_values(&["denied", "unconfigured"])
                .inc();
            return Outcome::Denied {
                cached: false,
                reason: NOT_CONFIGURED.into(),
            };
        };
        // A session of another provider (GitHub) holds that provider's token: it never goes to the IdP.
        if let Credential::Session(s) = auth {
            if !s.via.provider.is_empty() && s.via.provider != crate::config::model::IDP_PROVIDER {
                return Outcome::Denied { cached: false, reason: "the identity provider cannot decide for a user signed in through another provider".into() };
            }
        }
        let key = self.cache_key(auth, req);
        if let Some(answer) = self.decisions.get(&key).await {
            if let Some(hits) = self
                .cache_hits
                .get(usize::from(matches!(answer, Answer::Denied(_))))
            {
                hits.inc();
            }
            return answer.into_outcome(true);
        }
        let started = Instant::now();
        let fresh = std::sync::atomic::AtomicBool::new(false);
        let caller = self.caller_key(auth, req);
        let result = self
            .decisions
            .try_get_with(key, async {
                fresh.store(true, Ordering::Release);
                // An open breaker makes no call, so it costs the caller none of its budget.
                if self.breaker.state() == BreakerState::Open {
                    return Err(CallError::Unavailable(CIRCUIT_OPEN.into()));
                }
                let _permit = self.callers.admit(&caller).map_err(CallError::Limited)?;
                self.call(url, auth, req, caller).await
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
                    let took = started.elapsed().as_secs_f64();
                    self.metrics.abac_latency.observe(took);
                    self.metrics
                        .idp_latency
                        .with_label_values(&["check_permission"])
                        .observe(took);
                }
                self.metrics
                    .abac_checks
                    .with_label_values(&[answer.label(), if cached { "shared" } else { "idp" }])
                    .inc();
                answer.into_outcome(cached)
            }
            Err(why) => match &*why {
                CallError::Unavailable(w) => {
                    self.metrics
                        .abac_checks
                        .with_label_values(&["unavailable", "idp"])
                        .inc();
                    // Only a check no call was made for (the breaker is open), and only for a
                    // caller whose own calls did not find the IdP unavailable, may fail open.
                    let no_call = w == CIRCUIT_OPEN;
                    Outcome::Unavailable {
                        why: w.clone(),
                        fail_open: no_call && !self.breaker.failed_for(caller),
                    }
                }
                CallError::Limited(limited) => {
                    self.metrics
                        .abac_checks
                        .with_label_values(&["limited", "caller"])
                        .inc();
                    self.metrics
                        .load_refusals
                        .with_label_values(&["abac_caller", limited.as_label()])
                        .inc();
                    Outcome::Limited(*limited)
                }
                CallError::Failed(w) => {
                    self.metrics
                        .abac_checks
                        .with_label_values(&["failed", "idp"])
                        .inc();
                    Outcome::Failed(w.clone())
                }
            },
        }
    }

    async fn call(
        &self,
        url: &Url,
        auth: &Credential,
        req: &CheckRequest<'_>,
        caller: Digest,
    ) -> Result<Answer, CallError> {
        if !self.breaker.allow() {
            return Err(CallError::Unavailable(CIRCUIT_OPEN.into()));
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
            Credential::Bearer(_) | Credential::Session(_) => call.bearer_auth(auth.presented()),
            Credential::ApiKey(k) => call.header("x-api-key", k.as_str()),
        };
        let result = async {
            // Transport failures (refused, reset, timed out, cut short) are unavailability.
            let resp = call.send().await.map_err(|e| {
                CallError::Unavailable(if e.is_timeout() {
                    "the IdP did not answer in time".to_string()
                } else {
                    "the IdP could not be reached".to_string()
                })
            })?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| {
                CallError::Unavailable(if e.is_timeout() {
                    "the IdP did not answer in time".to_string()
                } else {
                    "the IdP's answer was cut short".to_string()
                })
            })?;
            classify(status, &bytes)
        }
        .await;
        match &result {
            Err(CallError::Unavailable(_)) => self.breaker.failure(caller),
            Ok(_) | Err(CallError::Failed(_)) => self.breaker.success(),
            Err(CallError::Limited(_)) => {}
        }
        result
    }
}

/// Why a check made no call while the breaker is open (or its one trial call is out).
pub const CIRCUIT_OPEN: &str =
    "the live permission check is paused after repeated failures (circuit open)";

/// What an IdP's HTTP answer to a check means (see the table in the module docs).
fn classify(status: http::StatusCode, bytes: &[u8]) -> Result<Answer, CallError> {
    use http::StatusCode as S;
    if status.is_success() {
        let parsed: CheckResponse = serde_json::from_slice(bytes)
            .map_err(|_| CallError::Failed("the IdP's answer was unreadable".into()))?;
        return Ok(if parsed.allowed {
            Answer::Allowed
        } else {
            Answer::Denied("the identity provider denied it".into())
        });
    }
    match status {
        S::BAD_GATEWAY | S::SERVICE_UNAVAILABLE | S::GATEWAY_TIMEOUT => {
            Err(CallError::Unavailable(format!("the IdP answered {status}")))
        }
        S::TOO_MANY_REQUESTS => Err(CallError::Failed(format!("the IdP answered {status}"))),
        s if s.is_client_error() => {
            // 4xx: the IdP answered, and the answer is no (a 401 too: the caller's credential).
            let detail = serde_json::from_slice::<ErrorResponse>(bytes)
                .ok()
                .and_then(|e| e.message.or(e.error))
                .unwrap_or_default();
            Ok(Answer::Denied(format!(
                "the identity provider refused the check ({status}{}{detail})",
                if detail.is_empty() { "" } else { ": " }
            )))
        }
        _ => Err(CallError::Failed(format!("the IdP answered {status}"))),
    }
}

/// How the gateway reads an IdP's HTTP answer to a live check: `Ok(true)` allowed,
/// `Ok(false)` denied, `Err` no decision (the IdP is unavailable, or answered without one).
/// Public so the fuzz targets can reach the answer parser.
pub fn read_check_answer(status: http::StatusCode, bytes: &[u8]) -> Result<bool, CallError> {
    match classify(status, bytes)? {
        Answer::Allowed => Ok(true),
        Answer::Denied(_) => Ok(false),
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
    /// Who the caller is, for its budget and the breaker: its verified subject (all of a
    /// user's tokens, sessions and API keys share one budget), or its credential when the
    /// token names no subject.
    fn caller_key(&self, auth: &Credential, req: &CheckRequest<'_>) -> Digest {
        if req.subject.is_empty() {
            self.keys.of(&[
                b"credential",
                auth.kind().as_bytes(),
                auth.presented().as_bytes(),
            ])
        } else {
            self.keys.of(&[b"subject", req.subject.as_bytes()])
        }
    }

    /// The decision cache's key, keyed: the credential's kind and the credential itself (the
    /// IdP decides as that caller), subject, entity, permission and the attributes.
    fn cache_key(&self, auth: &Credential, req: &CheckRequest<'_>) -> Digest {
        let mut w = self.keys.writer();
        w.part(auth.kind().as_bytes());
        w.part(auth.presented().as_bytes());
        w.part(req.subject.as_bytes());
        w.part(req.entity_type.as_bytes());
        match req.entity_id {
            Some(id) => w.part(id.as_bytes()),
            None => w.part(b"\xff"), // not UTF-8: no entity id can be this
        }
        w.part(req.permission.as_bytes());
        // serde_json's Map is ordered by key: the serialisation is canonical (and written last).
        // Writing into a hasher cannot fail; were it to, the key would still differ by the parts above.
        let _ = serde_json::to_writer(&mut w, &req.attributes);
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
    /// A query parameter the route reads is sent more than once, or in another spelling.
    #[error("the query parameter {0:?} is sent more than once or in another spelling: send it once, spelled exactly so")]
    AmbiguousQuery(String),
    /// A header the route reads is sent more than once, as a list, or in another spelling.
    #[error("the header {0:?} is sent more than once, as a comma-separated list or in another spelling: send one value, once")]
    AmbiguousHeader(String),
    /// A header the route reads is not visible ASCII.
    #[error("the header {0:?} is not readable text: send visible ASCII")]
    UnreadableHeader(String),
    /// A JSON key along an attribute's path is duplicated or differs only in case.
    #[error("the JSON body has the key {0:?} more than once or in another spelling: send each key once, spelled exactly so")]
    AmbiguousBody(String),
}

impl AttributeError {
    /// The status to refuse with: 415 when the body is not JSON, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            AttributeError::NotJson => 415,
            _ => 400,
        }
    }

    /// Whether the request was ambiguous (rather than unreadable).
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            AttributeError::AmbiguousQuery(_)
                | AttributeError::AmbiguousHeader(_)
                | AttributeError::AmbiguousBody(_)
        )
    }
}

/// The request parts attributes are read from.
pub struct RequestParts<'a> {
    /// Path captures by name.
    pub params: &'a [(&'a str, String)],
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The request's headers.
    pub headers: &'a http::HeaderMap,
    /// The JSON body, when the route reads it.
    pub body: Option<&'a [u8]>,
    /// The body's content type.
    pub content_type: Option<&'a str>,
}

/// Collects a route's attributes from the request; absent values are left out. A source an
/// upstream could read differently (repeated, listed, or spelled another way) is an error.
pub fn collect(
    sources: &[(String, AttributeSource)],
    parts: &RequestParts<'_>,
) -> Result<Map<String, Value>, AttributeError> {
    let mut out = Map::new();
    let mut body: Option<Node> = None;
    for (name, source) in sources {
        let value = match source {
            AttributeSource::Path(p) => parts
                .params
                .iter()
                .find(|(n, _)| n == p)
                .map(|(_, v)| Value::String(v.clone())),
            AttributeSource::Query(q) => parts
                .query
                .map(|qs| query_value(qs, q))
                .transpose()?
                .flatten()
                .map(Value::String),
            AttributeSource::Header(h) => header_value(parts.headers, h)?.map(Value::String),
            AttributeSource::Body(path) => {
                let root = match &mut body {
                    Some(root) => root,
                    slot @ None => {
                        let is_json = parts.content_type.is_some_and(|ct| {
                            let mime = ct
                                .split(';')
                                .next()
                                .unwrap_or("")
                                .trim()
                                .to_ascii_lowercase();
                            mime == "application/json" || mime.ends_with("+json")
                        });
                        if !is_json {
                            return Err(AttributeError::NotJson);
                        }
                        let parsed: Node = serde_json::from_slice(parts.body.unwrap_or(b""))
                            .map_err(|_| AttributeError::BadJson)?;
                        slot.insert(parsed)
                    }
                };
                body_value(root, path)?
            }
        };
        if let Some(v) = value {
            out.insert(name.clone(), v);
        }
    }
    Ok(out)
}

/// Case-folds as the most lenient binders do (Go's `encoding/json`, ASP.NET): Unicode
/// simple-ish folding, so `ſ` matches `s` and `K` (Kelvin) matches `k`.
fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

fn fold_eq(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        fold(a) == fold(b)
    }
}

/// A query parameter's name as lenient frameworks see it: case-folded, PHP's `.` and ` ` as
/// `_`, leading spaces dropped, and `name[...]` (arrays) as `name` unless `arrays` is false
/// (the declared name has brackets of its own).
fn query_name_key(name: &str, arrays: bool) -> String {
    let name = name.trim_start_matches(' ');
    let base = match name.find('[') {
        Some(i) if i > 0 && arrays => name.get(..i).unwrap_or(name),
        _ => name,
    };
    fold(&base.replace(['.', ' '], "_"))
}

/// The one value of query parameter `name`: refused when the name appears twice or in another
/// spelling (any framework might bind either), or in a pair split by `;` (some split there).
fn query_value(query: &str, name: &str) -> Result<Option<String>, AttributeError> {
    let arrays = !name.contains('[');
    let want = query_name_key(name, arrays);
    let mut found: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let semicolons = pair.contains(';');
        for piece in pair.split(';') {
            let Some((key, value)) = url::form_urlencoded::parse(piece.as_bytes()).next() else {
                continue;
            };
            if query_name_key(&key, arrays) != want {
                continue;
            }
            if found.is_some() || key != name || semicolons {
                return Err(AttributeError::AmbiguousQuery(name.to_string()));
            }
            found = Some(value.into_owned());
        }
    }
    Ok(found)
}

/// The one value of header `name` (lowercase): refused when sent twice, as a comma-separated
/// list (the same as sent twice, RFC 9110), under a name with `_` for `-` (CGI-style servers
/// read both as one), or as bytes that are not visible ASCII.
fn header_value(headers: &http::HeaderMap, name: &str) -> Result<Option<String>, AttributeError> {
    let mut found: Option<String> = None;
    for (key, value) in headers {
        let key = key.as_str();
        if key == name {
            let text = value
                .to_str()
                .map_err(|_| AttributeError::UnreadableHeader(name.to_string()))?;
            if found.is_some() || text.contains(',') {
                return Err(AttributeError::AmbiguousHeader(name.to_string()));
            }
            found = Some(text.trim().to_string());
        } else if key.len() == name.len()
            && key
                .bytes()
                .zip(name.bytes())
                .all(|(k, n)| k == n || (k == b'_' && n == b'-') || (k == b'-' && n == b'_'))
        {
            return Err(AttributeError::AmbiguousHeader(name.to_string()));
        }
    }
    Ok(found)
}

/// The value at `path` in the body: every object along the path (and inside the value) must
/// have each key once, in one spelling (exact match required; case variants are refused).
fn body_value(root: &Node, path: &[String]) -> Result<Option<Value>, AttributeError> {
    let mut cur = root;
    for seg in path {
        let Node::Object(entries) = cur else {
            return Ok(None);
        };
        let mut next = None;
        for (key, value) in entries {
            if fold_eq(key, seg) {
                if next.is_some() || key != seg {
                    return Err(AttributeError::AmbiguousBody(seg.clone()));
                }
                next = Some(value);
            }
        }
        match next {
            Some(n) => cur = n,
            None => return Ok(None),
        }
    }
    cur.to_value().map(Some)
}

/// A JSON value as parsed, objects keeping every key in order (serde_json's `Value` would
/// keep only the last of duplicate keys).
#[derive(Debug)]
enum Node {
    Scalar(Value),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    /// The value, refusing objects with keys that are duplicates or case variants.
    fn to_value(&self) -> Result<Value, AttributeError> {
        Ok(match self {
            Node::Scalar(v) => v.clone(),
            Node::Array(items) => {
                Value::Array(items.iter().map(Node::to_value).collect::<Result<_, _>>()?)
            }
            Node::Object(entries) => {
                let mut map = Map::new();
                let mut seen: std::collections::HashSet<String> =
                    std::collections::HashSet::with_capacity(entries.len());
                for (key, value) in entries {
                    if !seen.insert(fold(key)) {
                        return Err(AttributeError::AmbiguousBody(key.clone()));
                    }
                    map.insert(key.clone(), value.to_value()?);
                }
                Value::Object(map)
            }
        })
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Node::Scalar(Value::Number(n)))
            .ok_or_else(|| E::custom("a number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            entries.push((key, value));
        }
        Ok(Node::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::credentials::Token;

    #[test]
    fn breaker_opens_and_recovers() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for caller in 1..3 {
            assert!(b.allow());
            b.failure(caller);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure(3);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(), "one trial call");
        assert!(!b.allow(), "only one trial at a time");
        b.failure(4);
        assert_eq!(b.state(), BreakerState::Open, "a failed trial reopens");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow() && b.allow());
    }

    #[test]
    fn the_breaker_remembers_whose_calls_failed_until_the_idp_answers() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.failure(7);
        b.failure(7);
        assert_eq!(b.state(), BreakerState::Open);
        // (caller, whose calls failed)
        for (caller, failed) in [(7, true), (8, false)] {
            assert_eq!(b.failed_for(caller), failed, "{caller}");
        }
        b.success();
        assert!(!b.failed_for(7), "forgotten once the IdP answers");
        // Past the bound, everybody counts as having failed: nobody fails open.
        for caller in 0..=MAX_FAILED_CALLERS as u128 {
            b.failure(caller);
        }
        assert!(b.failed_for(u128::MAX));
        b.success();
        assert!(!b.failed_for(u128::MAX));
    }

    #[test]
    fn answers_are_classified_unavailable_only_when_the_idp_is() {
        #[derive(Debug, PartialEq)]
        enum Want {
            Allowed,
            Denied,
            Unavailable,
            Failed,
        }
        let cases: &[(u16, &str, Want)] = &[
            (200, r#"{"allowed": true}"#, Want::Allowed),
            (200, r#"{"allowed": false}"#, Want::Denied),
            (200, r#"{"allowed": "yes"}"#, Want::Failed),
            (200, r#"{"allowed": true, "allowed": false}"#, Want::Failed),
            (200, "<html>", Want::Failed),
            (204, "", Want::Failed),
            (400, r#"{"error": "invalid_request"}"#, Want::Denied),
            (401, "", Want::Denied),
            (403, "", Want::Denied),
            (404, "", Want::Denied),
            (429, "", Want::Failed),
            (500, r#"{"error": "internal_error"}"#, Want::Failed),
            (501, "", Want::Failed),
            (502, "", Want::Unavailable),
            (503, "", Want::Unavailable),
            (504, "", Want::Unavailable),
            (302, "", Want::Failed),
        ];
        for (status, body, want) in cases {
            let got = match classify(
                http::StatusCode::from_u16(*status).unwrap(),
                body.as_bytes(),
            ) {
                Ok(Answer::Allowed) => Want::Allowed,
                Ok(Answer::Denied(_)) => Want::Denied,
                Err(CallError::Unavailable(_)) => Want::Unavailable,
                Err(CallError::Failed(_) | CallError::Limited(_)) => Want::Failed,
            };
            assert_eq!(&got, want, "{status} {body}");
        }
    }

    fn bearer(t: &str) -> Credential {
        Credential::Bearer(Token::new(t).unwrap())
    }

    fn session(access: &str) -> Credential {
        use crate::identity::session::{SessionData, Tokens};
        use crate::secret::Secret;
        let tokens = Tokens {
            access_token: Secret::new(access.to_string()),
            id_token: Secret::new(String::new()),
            refresh_token: None,
            access_expires_at: 0,
        };
        Credential::Session(Arc::new(SessionData {
            client: "c".into(),
            origin: "https://c.example".into(),
            subject: "u".into(),
            email: None,
            name: None,
            tokens,
            created_at: 0,
            expires_at: 0,
            generation: 0,
            sid: None,
            via: Default::default(),
        }))
    }

    fn settings() -> AbacSettings {
        AbacSettings {
            allow_ttl: Duration::from_secs(30),
            deny_ttl: Duration::from_secs(10),
            cache_size: 10,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(10),
            caller_checks: crate::config::model::CallerBound {
                in_flight: 8,
                per_second: 20,
            },
        }
    }

    #[tokio::test]
    async fn without_a_url_every_check_is_denied_not_unavailable() {
        let client =
            AbacClient::from_config(None, Duration::from_secs(1), &settings(), Metrics::new());
        let req = CheckRequest {
            subject: "u",
            entity_type: "t",
            entity_id: None,
            permission: "p",
            attributes: Map::new(),
        };
        match client.check(&bearer("t"), &req).await {
            Outcome::Denied {
                cached: false,
                reason,
            } => assert_eq!(reason, NOT_CONFIGURED),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_idp_is_unavailable_and_opens_the_breaker() {
        // A port nothing listens on: connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/check")).unwrap();
        let s = AbacSettings {
            breaker_failures: 2,
            allow_ttl: Duration::ZERO,
            deny_ttl: Duration::ZERO,
            ..settings()
        };
        let client = AbacClient::from_config(Some(url), Duration::from_secs(1), &s, Metrics::new());
        let req = CheckRequest {
            subject: "u",
            entity_type: "t",
            entity_id: None,
            permission: "p",
            attributes: Map::new(),
        };
        for _ in 0..3 {
            assert!(matches!(
                client.check(&bearer("t"), &req).await,
                Outcome::Unavailable {
                    fail_open: false,
                    ..
                }
            ));
        }
        assert_eq!(client.breaker().state(), BreakerState::Open);
        // The caller whose calls opened it never fails open; another caller may.
        assert!(matches!(
            client.check(&bearer("t"), &req).await,
            Outcome::Unavailable {
                fail_open: false,
                ..
            }
        ));
        let other = CheckRequest {
            subject: "v",
            ..req.clone()
        };
        assert!(matches!(
            client.check(&bearer("t2"), &other).await,
            Outcome::Unavailable {
                fail_open: true,
                ..
            }
        ));
    }

    fn headers(list: &[(&str, &[u8])]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in list {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn attributes_from_every_source() {
        let sources = vec![
            ("invoice".to_string(), AttributeSource::Path("id".into())),
            ("mode".to_string(), AttributeSource::Query("mode".into())),
            (
                "region".to_string(),
                AttributeSource::Header("x-region".into()),
            ),
            (
                "amount".to_string(),
                AttributeSource::Body(vec!["amount".into()]),
            ),
            (
                "currency".to_string(),
                AttributeSource::Body(vec!["payment".into(), "currency".into()]),
            ),
            ("absent".to_string(), AttributeSource::Query("nope".into())),
        ];
        let params = [("id", "inv_1".to_string())];
        let h = headers(&[("x-region", b"eu")]);
        let parts = RequestParts {
            params: &params,
            query: Some("mode=fast&x=1"),
            headers: &h,
            body: Some(br#"{"amount": 80, "payment": {"currency": "EUR"}}"#),
            content_type: Some("application/json; charset=utf-8"),
        };
        let got = collect(&sources, &parts).unwrap();
        assert_eq!(
            Value::Object(got),
            serde_json::json!({"invoice": "inv_1", "mode": "fast", "region": "eu", "amount": 80, "currency": "EUR"})
        );
        let not_json = RequestParts {
            content_type: Some("text/plain"),
            ..parts
        };
        assert_eq!(collect(&sources, &not_json), Err(AttributeError::NotJson));
        let bad = RequestParts {
            content_type: Some("application/json"),
            body: Some(b"{"),
            ..not_json
        };
        assert_eq!(collect(&sources, &bad), Err(AttributeError::BadJson));
    }

    #[test]
    fn query_parameters_are_read_once_and_exactly() {
        let cases: &[(&str, Result<Option<&str>, ()>)] = &[
            ("amount=80", Ok(Some("80"))),
            ("x=1&amount=8%200&y=2", Ok(Some("8 0"))),
            ("", Ok(None)),
            ("amounts=5", Ok(None)),
            ("amount=80&amount=5000", Err(())),
            ("amount=80&am%6Funt=5000", Err(())),
            ("amount=80&AMOUNT=5000", Err(())),
            ("AMOUNT=5000", Err(())),
            ("amount[]=5000&amount=80", Err(())),
            ("amount[x]=5000", Err(())),
            ("amount=80;amount=5000", Err(())),
            ("x=1;amount=5000", Err(())),
            ("+amount=5000&amount=80", Err(())),
        ];
        for (query, want) in cases {
            let got = query_value(query, "amount").map_err(|_| ());
            assert_eq!(
                got.as_ref().map(|o| o.as_deref()),
                want.as_ref().map(|o| *o),
                "{query}"
            );
        }
        // PHP reads `a.b` and `a b` as `a_b`.
        assert!(query_value("a.b=5000&a_b=80", "a_b").is_err());
        assert_eq!(
            query_value("a.b=5000", "a.b").unwrap().as_deref(),
            Some("5000")
        );
        // A declared name with brackets is matched whole: other keys of the same array are not it.
        assert_eq!(
            query_value("filter[amount]=5&filter[x]=1", "filter[amount]")
                .unwrap()
                .as_deref(),
            Some("5")
        );
        assert!(query_value("filter[amount]=5&FILTER[amount]=1", "filter[amount]").is_err());
    }

    /// Headers sent, and the value read (`Err`: refused).
    type HeaderCase<'a> = (&'a [(&'a str, &'a [u8])], Result<Option<&'a str>, ()>);

    #[test]
    fn headers_are_read_once_and_exactly() {
        let cases: &[HeaderCase] = &[
            (&[("x-amount", b"80")], Ok(Some("80"))),
            (&[("x-other", b"80")], Ok(None)),
            (&[("x-amount", b"80"), ("x-amount", b"5000")], Err(())),
            (&[("X-Amount", b"80"), ("x-amount", b"5000")], Err(())),
            (&[("x-amount", b"80, 5000")], Err(())),
            (&[("x-amount", b"80"), ("x_amount", b"5000")], Err(())),
            (&[("x_amount", b"5000")], Err(())),
            (&[("x-amount", b"8\xe90")], Err(())),
        ];
        for (list, want) in cases {
            let got = header_value(&headers(list), "x-amount").map_err(|_| ());
            assert_eq!(
                got.as_ref().map(|o| o.as_deref()),
                want.as_ref().map(|o| *o),
                "{list:?}"
            );
        }
    }

    #[test]
    fn body_keys_along_the_path_are_unique_in_every_spelling() {
        let amount = vec!["amount".to_string()];
        let currency = vec!["payment".to_string(), "currency".to_string()];
        let payment = vec!["payment".to_string()];
        type BodyCase<'a> = (&'a str, &'a [String], Result<Option<Value>, ()>);
        let cases: &[BodyCase] = &[
            (r#"{"amount": 80}"#, &amount, Ok(Some(80.into()))),
            (
                r#"{"amount": 80, "note": 1, "note": 2, "Note": 3}"#,
                &amount,
                Ok(Some(80.into())),
            ),
            (r#"{"amount": 80, "amount": 5000}"#, &amount, Err(())),
            (r#"{"amount": 80, "AMOUNT": 5000}"#, &amount, Err(())),
            (r#"{"AMOUNT": 5000}"#, &amount, Err(())),
            (
                r#"{"payment": {"currency": "EUR", "currency": "USD"}}"#,
                &currency,
                Err(()),
            ),
            (
                r#"{"payment": {"currency": "EUR", "Currency": "USD"}}"#,
                &currency,
                Err(()),
            ),
            (
                r#"{"payment": {"currency": "EUR"}, "Payment": {"currency": "USD"}}"#,
                &currency,
                Err(()),
            ),
            (
                r#"{"payment": {"currency": "EUR"}}"#,
                &currency,
                Ok(Some("EUR".into())),
            ),
            (r#"{"payment": {"a": 1, "A": 2}}"#, &payment, Err(())),
            (
                r#"{"payment": [{"a": 1}, {"a": 1, "a": 2}]}"#,
                &payment,
                Err(()),
            ),
            (r#"{"payment": "x"}"#, &currency, Ok(None)),
            (r#"{"other": 1}"#, &amount, Ok(None)),
            (r#"[1, 2]"#, &amount, Ok(None)),
        ];
        for (body, path, want) in cases {
            let root: Node = serde_json::from_str(body).unwrap();
            let got = body_value(&root, path).map_err(|_| ());
            assert_eq!(&got, want, "{body} at {path:?}");
        }
        // Unicode folding as Go's encoding/json does: the long s is an `s`, the Kelvin sign a `k`.
        let ambiguous_unicode = [
            (r#"{"statu\u017f": 1, "status": 2}"#, "status"),
            (r#"{"\u212aey": 1}"#, "key"),
        ];
        for (body, key) in ambiguous_unicode {
            let root: Node = serde_json::from_str(body).unwrap();
            assert!(body_value(&root, &[key.to_string()]).is_err(), "{body}");
        }
    }

    #[test]
    fn deep_or_odd_bodies_are_refused_not_overflowed() {
        let sources = vec![(
            "amount".to_string(),
            AttributeSource::Body(vec!["amount".into()]),
        )];
        let h = http::HeaderMap::new();
        let deep = format!(
            "{{\"amount\": {}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        for body in [
            deep.as_str(),
            r#"{"amount": 1e999}"#,
            r#"{"amount": "\ud800"}"#,
            "",
            "\u{feff}{}",
        ] {
            let parts = RequestParts {
                params: &[],
                query: None,
                headers: &h,
                body: Some(body.as_bytes()),
                content_type: Some("application/json"),
            };
            assert_eq!(
                collect(&sources, &parts),
                Err(AttributeError::BadJson),
                "{:.40}",
                body
            );
        }
    }

    #[test]
    fn cache_keys_differ_by_every_part() {
        let base = CheckRequest {
            subject: "u",
            entity_type: "t",
            entity_id: Some("1"),
            permission: "p",
            attributes: Map::new(),
        };
        let mut attrs = Map::new();
        attrs.insert("amount".into(), 80.into());
        let variants = [
            CheckRequest {
                subject: "v",
                ..base.clone()
            },
            CheckRequest {
                entity_type: "t2",
                ..base.clone()
            },
            CheckRequest {
                entity_id: None,
                ..base.clone()
            },
            CheckRequest {
                permission: "q",
                ..base.clone()
            },
            CheckRequest {
                attributes: attrs,
                ..base.clone()
            },
        ];
        let client =
            AbacClient::from_config(None, Duration::from_secs(1), &settings(), Metrics::new());
        let tok = bearer("tok");
        assert_eq!(
            client.cache_key(&tok, &base),
            client.cache_key(&tok, &base.clone())
        );
        for v in &variants {
            assert_ne!(
                client.cache_key(&tok, &base),
                client.cache_key(&tok, v),
                "{v:?}"
            );
        }
        for other in [
            Credential::ApiKey(Token::new("tok").unwrap()),
            session("tok"),
            bearer("tok2"),
        ] {
            assert_ne!(
                client.cache_key(&tok, &base),
                client.cache_key(&other, &base),
                "{other:?}"
            );
        }
    }
}
