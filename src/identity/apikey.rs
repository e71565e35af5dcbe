//! API keys: a machine's key is exchanged at the IdP for a short-lived JWT, which is verified
//! by the gateway's one [`Verifier`] (against `api_keys.audience`) and cached per key — by
//! SHA-256 of the key, never the key itself — until 60 s before it expires. One exchange per
//! key is in flight at a time; a refused key is remembered as refused for a while so it cannot
//! make the gateway hammer the IdP. When a signing key leaves the IdP's JWKS, every cached
//! exchange is dropped and redone on its key's
//! next request, so a token signed by the removed key is refused at once.
//!
//! Only a definite refusal (the exchange answers 400, 401 or 403) or a token that does not
//! verify is remembered (for `failure_ttl`). Anything that says the IdP cannot answer now —
//! 429, any 5xx or other status, a timeout, a connection error, an unreadable answer — is
//! [`ApiKeyError::Unavailable`] (503 with `Retry-After` to the caller) and is not remembered:
//! the key works again as soon as the exchange does. Meanwhile a key whose earlier exchange is
//! still valid (its token not expired, no signing key removed since) keeps working on that
//! token: an IdP outage costs cached keys nothing until their tokens expire.
//!
//! Unseen keys cannot make the gateway a 1:1 amplifier toward the IdP: a key that is not
//! well-formed (its length outside `key_min_length..=key_max_length`, or a character other than
//! ASCII letters, digits and `-_.~+/=`) is refused (401) without a call, and exchanges of
//! uncached keys are bounded per client IP (an IPv6 client by its /64) and in total, in flight
//! and per second (`[api_keys] caller_exchanges_*`, `exchanges_*`). Beyond a bound the answer is
//! [`ApiKeyError::Limited`] (429 with `Retry-After`), never remembered as a refusal; keys in the
//! cache never reach the bounds, and one due for its refresh keeps its still-valid token.

use super::verify::{Audience, TokenError, Verifier};
use super::{now_secs, Principal};
use crate::budget::{self, Gate, Gates, Limited, Scope};
use crate::config::model::ApiKeySettings;
use crate::metrics::Metrics;
use moka::future::Cache;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use url::Url;

/// Tokens are refreshed this long before they expire.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Why a key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// The IdP refused the key.
    #[error("the API key was refused by the identity provider")]
    Refused,
    /// The IdP's token for the key did not verify.
    #[error("the token exchanged for the API key is invalid: {0}")]
    BadToken(TokenError),
    /// No exchange endpoint, or the IdP could not answer now (never cached).
    #[error("{0}")]
    Unavailable(String),
    /// Not a key the IdP could have issued (length or characters): refused without a call.
    #[error("the API key is not well-formed: send the key as issued (ASCII letters, digits and -_.~+/=)")]
    Malformed,
    /// Too many exchanges of uncached keys in flight or this second, from this client IP
    /// ([`Scope::Caller`]) or from everyone ([`Scope::Total`]): no call was made (never cached).
    #[error("{}", match .1 { Scope::Caller => "too many API keys not yet known are being exchanged from this address", Scope::Total => "too many API keys not yet known are being exchanged at once" })]
    Limited(Limited, Scope),
}

#[derive(Clone)]
struct Entry {
    /// The verified claims of the token the key was exchanged for.
    result: Result<Arc<Principal>, ApiKeyError>,
    ttl: Duration,
    /// [`Verifier::removals`] before the exchanged token was verified.
    removals: u64,
}

struct EntryTtl;

impl moka::Expiry<[u8; 32], Entry> for EntryTtl {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Entry,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeResponse {
    token: String,
    expires_in: Option<u64>,
    expires_at: Option<String>,
}

/// Exchanges and caches API keys.
pub struct ApiKeys {
    url: Option<Url>,
    http: reqwest::Client,
    verifier: Arc<Verifier>,
    cache: Cache<[u8; 32], Entry>,
    /// The last successful exchange per key, kept until its token expires or `cache` drops that
    /// exchange for room: used only while the IdP cannot answer a new exchange.
    last_good: Cache<[u8; 32], Entry>,
    failure_ttl: Duration,
    key_lengths: std::ops::RangeInclusive<usize>,
    /// Exchanges of uncached keys per client IP ([`budget::ip_key`]).
    callers: Gates<u128>,
    /// Exchanges of uncached keys, everyone's together.
    total: Arc<Gate>,
    metrics: Metrics,
}

/// Most client IPs whose exchange bounds are kept at once (an idle one's is forgotten).
const MAX_CALLERS: usize = 65_536;

/// Whether `key` could be a key as issued: its length in `lengths`, and only ASCII letters,
/// digits and `-_.~+/=` (prefixed random keys, base64 and base64url).
fn well_formed(key: &str, lengths: &std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
}

impl ApiKeys {
    /// Builds the exchanger; `verifier` (the gateway's one verifier) checks the exchanged
    /// tokens for [`Audience::ApiKey`].
    pub fn from_config(
        url: Option<Url>,
        timeout: Duration,
        s: &ApiKeySettings,
        verifier: Arc<Verifier>,
        metrics: Metrics,
    ) -> ApiKeys {
        let http = crate::identity::idp_client(timeout, false);
        let (cache, last_good) = caches(s.cache_size);
        ApiKeys {
            url,
            http,
            verifier,
            cache,
            last_good,
            failure_ttl: s.failure_ttl,
            key_lengths: s.key_min_length..=s.key_max_length,
            callers: Gates::new(
                s.exchanges.caller.in_flight,
                s.exchanges.caller.per_second,
                MAX_CALLERS,
            ),
            total: Arc::new(Gate::new(
                s.exchanges.total.in_flight,
                s.exchanges.total.per_second,
            )),
            metrics,
        }
    }

    /// The verified identity behind an API key (the claims of the token it was exchanged for),
    /// sent from `client_ip` (as `proxy.trusted_proxies` decide).
    pub async fn authenticate(
        &self,
        key: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<Arc<Principal>, ApiKeyError> {
        if !well_formed(key, &self.key_lengths) {
            self.metrics
                .load_refusals
                .with_label_values(&["api_key_malformed", "malformed"])
                .inc();
            return Err(ApiKeyError::Malformed);
        }
        let digest = key_digest(key);
        // Unavailability and the bounds are returned to every caller waiting on this exchange,
        // and not cached.
        let entry = match self
            .cache
            .try_get_with(digest, self.bounded_exchange(key, digest, client_ip))
            .await
        {
            Ok(entry) => entry,
            Err(unavailable) => {
                return self
                    .still_valid(&digest)
                    .await
                    .ok_or_else(|| (*unavailable).clone())
            }
        };
        if let Ok(principal) = &entry.result {
            // Never hand out a token past its expiry, whatever the cache's clock says, nor one
            // verified before a signing key left the JWKS (it may be the key that signed it).
            if principal.expires_at <= now_secs() || entry.removals != self.verifier.removals() {
                self.cache.invalidate(&digest).await;
                return Box::pin(self.authenticate(key, client_ip)).await;
            }
        }
        entry.result
    }

    /// The key's last successful exchange, if its token is still valid and no signing key left
    /// the JWKS since it was verified.
    async fn still_valid(&self, digest: &[u8; 32]) -> Option<Arc<Principal>> {
        let entry = self.last_good.get(digest).await?;
        let principal = entry.result.ok()?;
        (principal.expires_at > now_secs() && entry.removals == self.verifier.removals())
            .then_some(principal)
    }

    /// An exchange, if the client IP's bound and the total admit it now.
    async fn bounded_exchange(
        &self,
        key: &str,
        digest: [u8; 32],
        client_ip: Option<IpAddr>,
    ) -> Result<Entry, ApiKeyError> {
        let _permits = budget::admit_both(&self.callers, &budget::ip_key(client_ip), &self.total)
            .map_err(|(limited, scope)| {
            self.metrics
                .load_refusals
                .with_label_values(&[
                    match scope {
                        Scope::Caller => "api_key_caller",
                        Scope::Total => "api_key_total",
                    },
                    limited.as_label(),
                ])
                .inc();
            ApiKeyError::Limited(limited, scope)
        })?;
        self.exchange(key, digest).await
    }

    async fn exchange(&self, key: &str, digest: [u8; 32]) -> Result<Entry, ApiKeyError> {
        let removals = self.verifier.removals();
        let result = self.call(key).await;
        self.metrics
            .api_key_exchanges
            .with_label_values(&[match &result {
                Ok(_) => "ok",
                Err(ApiKeyError::Refused) => "refused",
                Err(ApiKeyError::BadToken(_)) => "bad_token",
                Err(ApiKeyError::Unavailable(_)) => "unavailable",
                Err(ApiKeyError::Malformed | ApiKeyError::Limited(..)) => "not_sent",
            }])
            .inc();
        match result {
            Ok((principal, refresh_in)) => {
                let valid_for =
                    Duration::from_secs(principal.expires_at.saturating_sub(now_secs()));
                self.last_good
                    .insert(
                        digest,
                        Entry {
                            result: Ok(principal.clone()),
                            ttl: valid_for,
                            removals,
                        },
                    )
                    .await;
                Ok(Entry {
                    result: Ok(principal),
                    ttl: refresh_in,
                    removals,
                })
            }
            Err(e @ (ApiKeyError::Unavailable(_) | ApiKeyError::Limited(..))) => Err(e),
            Err(e) => {
                // A definite refusal: the key was revoked, its old token must not stand in.
                self.last_good.invalidate(&digest).await;
                Ok(Entry {
                    result: Err(e),
                    ttl: self.failure_ttl,
                    removals,
                })
            }
        }
    }

    async fn call(&self, key: &str) -> Result<(Arc<Principal>, Duration), ApiKeyError> {
        let url = self.url.as_ref().ok_or_else(|| {
            ApiKeyError::Unavailable(
                "API keys are not accepted: no api_key_exchange_url is configured".into(),
            )
        })?;
        let started = std::time::Instant::now();
        let sent = self
            .http
            .post(url.clone())
            .json(&serde_json::json!({ "apiKey": key }))
            .send()
            .await;
        self.metrics
            .idp_latency
            .with_label_values(&["api_key_exchange"])
            .observe(started.elapsed().as_secs_f64());
        let resp = sent.map_err(|e| {
            ApiKeyError::Unavailable(if e.is_timeout() {
                "the IdP did not answer the API-key exchange in time".into()
            } else {
                "the IdP could not be reached for the API-key exchange".into()
            })
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(refusal(status));
        }
        let bytes = resp.bytes().await.map_err(|_| {
            ApiKeyError::Unavailable("the IdP's API-key exchange answer was unreadable".into())
        })?;
        let now = now_secs();
        let answer = read_exchange_answer(&bytes, now)?;
        let principal = self
            .verifier
            .verify_for(&answer.token, Audience::ApiKey)
            .await
            .map_err(|e| match e {
                TokenError::KeysUnavailable => ApiKeyError::Unavailable(e.to_string()),
                e => ApiKeyError::BadToken(e),
            })?;
        let expires_at = answer
            .expires_at
            .unwrap_or(principal.expires_at)
            .min(principal.expires_at);
        let refresh_in =
            Duration::from_secs(expires_at.saturating_sub(now)).saturating_sub(REFRESH_MARGIN);
        Ok((principal, refresh_in))
    }
}

/// The exchange cache and the last-good cache, each bounded by `size`. A key the exchange cache
/// drops for room (evicted, or not admitted) leaves the last-good cache too: both caches admit
/// and evict on their own (TinyLFU), and with more distinct keys than `size` they would drift
/// apart — the last-good cache keeping the first keys it saw and refusing newer ones — so that
/// twice `size` principals stayed in memory and the keys in use had no fallback.
fn caches(size: u64) -> (Cache<[u8; 32], Entry>, Cache<[u8; 32], Entry>) {
    let last_good: Cache<[u8; 32], Entry> = Cache::builder()
        .max_capacity(size)
        .expire_after(EntryTtl)
        .build();
    let fallback = last_good.clone();
    let cache = Cache::builder()
        .max_capacity(size)
        .expire_after(EntryTtl)
        .async_eviction_listener(move |digest: Arc<[u8; 32]>, evicted: Entry, cause| {
            let fallback = fallback.clone();
            Box::pin(async move {
                let Ok(evicted) = evicted.result else { return };
                if cause != moka::notification::RemovalCause::Size {
                    return;
                }
                // Only the same exchange: a newer one for the key keeps its fallback.
                fallback
                    .entry_by_ref(&*digest)
                    .and_compute_with(|kept| async move {
                        match kept.map(|e| e.into_value().result) {
                            Some(Ok(kept)) if Arc::ptr_eq(&kept, &evicted) => {
                                moka::ops::compute::Op::Remove
                            }
                            _ => moka::ops::compute::Op::Nop,
                        }
                    })
                    .await;
            })
        })
        .build();
    (cache, last_good)
}

/// A successful exchange answer as read, before its token is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeAnswer {
    /// The JWT the IdP issued for the key (not yet verified).
    pub token: String,
    /// When the IdP says the token stops being usable (Unix seconds), from `expires_at`
    /// (RFC 3339) or else `expires_in`; `None` when it says neither readably.
    pub expires_at: Option<u64>,
}

/// Reads the body of a 2xx API-key exchange answer received at `now` (Unix seconds); an
/// unreadable body is [`ApiKeyError::Unavailable`]. Public so the fuzz targets can reach it.
pub fn read_exchange_answer(bytes: &[u8], now: u64) -> Result<ExchangeAnswer, ApiKeyError> {
    let body: ExchangeResponse = serde_json::from_slice(bytes).map_err(|_| {
        ApiKeyError::Unavailable("the IdP's API-key exchange answer was unreadable".into())
    })?;
    let expires_at = body
        .expires_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .or(body.expires_in.map(|s| now.saturating_add(s)));
    Ok(ExchangeAnswer {
        token: body.token,
        expires_at,
    })
}

/// What a non-2xx exchange answer means: 400, 401 and 403 refuse the key; anything else
/// (429, 5xx, a redirect, another 4xx) is the IdP not answering now.
fn refusal(status: http::StatusCode) -> ApiKeyError {
    use http::StatusCode as S;
    match status {
        S::BAD_REQUEST | S::UNAUTHORIZED | S::FORBIDDEN => ApiKeyError::Refused,
        s => ApiKeyError::Unavailable(format!("the IdP answered the API-key exchange with {s}")),
    }
}

/// The cache key of an API key: its SHA-256, so the key itself is never kept.
fn key_digest(key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, b) in out
        .iter_mut()
        .zip(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes()).as_ref())
    {
        *o = *b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_400_401_403_refuse_a_key() {
        let cases = [
            (400, true),
            (401, true),
            (403, true),
            (404, false),
            (408, false),
            (429, false),
            (500, false),
            (502, false),
            (503, false),
            (504, false),
            (302, false),
        ];
        for (status, refused) in cases {
            let got = refusal(http::StatusCode::from_u16(status).unwrap());
            assert_eq!(got == ApiKeyError::Refused, refused, "{status}: {got:?}");
        }
    }

    #[test]
    fn exchange_answers_are_read_without_overflow() {
        let read = |body: &str| read_exchange_answer(body.as_bytes(), 1_000).map(|a| a.expires_at);
        assert_eq!(read(r#"{"token":"t","expiresIn":60}"#), Ok(Some(1_060)));
        assert_eq!(
            read(r#"{"token":"t","expiresAt":"1970-01-01T00:01:40Z","expiresIn":60}"#),
            Ok(Some(100))
        );
        assert_eq!(read(r#"{"token":"t","expiresAt":"soon"}"#), Ok(None));
        // A huge `expires_in` saturates instead of overflowing (a panic in debug builds).
        assert_eq!(
            read(r#"{"token":"t","expiresIn":18446744073709551615}"#),
            Ok(Some(u64::MAX))
        );
        assert!(matches!(
            read(r#"{"expiresIn":60}"#),
            Err(ApiKeyError::Unavailable(_))
        ));
        assert!(matches!(read("not json"), Err(ApiKeyError::Unavailable(_))));
    }

    #[tokio::test]
    async fn the_fallback_follows_the_exchange_cache_past_its_bound() {
        let size = 200;
        let (cache, last_good) = caches(size);
        for i in 0..20 * size {
            let digest = key_digest(&format!("ak_live_{i}"));
            // As `ApiKeys::exchange` does: the fallback is stored inside the coalesced exchange.
            let fallback = &last_good;
            let exchanged = cache
                .try_get_with(digest, async move {
                    let principal = Arc::new(Principal {
                        subject: format!("machine_{i}"),
                        ..Principal::default()
                    });
                    fallback
                        .insert(
                            digest,
                            Entry {
                                result: Ok(principal.clone()),
                                ttl: Duration::from_secs(3600),
                                removals: 0,
                            },
                        )
                        .await;
                    Ok::<_, ApiKeyError>(Entry {
                        result: Ok(principal),
                        ttl: Duration::from_secs(3540),
                        removals: 0,
                    })
                })
                .await;
            assert!(exchanged.is_ok());
        }
        cache.run_pending_tasks().await;
        last_good.run_pending_tasks().await;
        let served: std::collections::HashSet<[u8; 32]> =
            cache.iter().map(|(digest, _)| *digest).collect();
        let (with_fallback, stale) = last_good.iter().fold((0, 0), |(kept, stale), (digest, _)| {
            if served.contains(&*digest) {
                (kept + 1, stale)
            } else {
                (kept, stale + 1)
            }
        });
        // Without the eviction listener the fallback cache keeps the first 200 keys, none of them
        // still served: 400 principals in memory, and no fallback for a key in use. With it, no
        // fallback outlives its key's exchange; some newest keys miss one (the fallback cache
        // was full when they were exchanged, and admits on its own).
        assert!(
            served.len() as u64 <= size && served.len() as u64 >= size * 9 / 10,
            "{} keys served",
            served.len()
        );
        assert!(
            with_fallback >= served.len() / 2,
            "{with_fallback} of {} served keys have a fallback",
            served.len()
        );
        assert!(
            stale <= size / 10,
            "{stale} fallbacks for keys no longer served"
        );
    }

    #[test]
    fn key_digests_are_sha256() {
        let d = key_digest("abc");
        assert_eq!(d[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_ne!(key_digest("abc"), key_digest("abd"));
    }
}
