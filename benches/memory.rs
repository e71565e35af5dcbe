//! Memory of the gateway's caches: resident set size after 10k, 100k and 1M distinct bearer
//! tokens verified, browser sessions stored and API keys exchanged, with the default bounds
//! (`[cache] tokens`, `[session] max_sessions`, `[api_keys] cache_size`). Prints one line per step.
//!
//! Each line gives the resident set size and the live heap: the bytes the program holds
//! allocated (counted by this bench's allocator around mimalloc), so growth of RSS with a flat
//! live heap is the allocator's, not a structure that keeps growing.
//!
//! Run: `cargo bench --bench memory` (a few minutes: 1M Ed25519 tokens are minted and verified,
//! 1M API keys exchanged at a loopback IdP).
//! `AUTHGATE_MEM_MAX=100000` stops earlier; `AUTHGATE_MEM_STEPS=10000,100000,1000000,2000000,5000000`
//! measures other steps (each a count of distinct tokens, sessions and keys; ascending).

use authgate::config;
use authgate::identity::apikey::ApiKeys;
use authgate::identity::jwks::{parse_jwks, KeyStore};
use authgate::identity::session::{MemoryStore, SessionData, SessionId, SessionStore, Tokens};
use authgate::identity::verify::Verifier;
use authgate::metrics::Metrics;
use authgate::secret::Secret;
use devidp::keys::SigningKey;
use jsonwebtoken::Algorithm;
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// mimalloc (the gateway's allocator), counting the bytes held allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to mimalloc unchanged; only the counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn live_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

/// RSS and live heap now, with their growth since `since` (RSS, live heap).
fn report(since: (f64, f64)) -> String {
    let (rss, live) = (rss_mib(), live_mib());
    format!(
        "RSS {rss:.1} MiB (+{:.1}), live heap {live:.1} MiB (+{:.1})",
        rss - since.0,
        live - since.1
    )
}

/// The steps to measure: `AUTHGATE_MEM_STEPS` (comma-separated, ascending), else 10k, 100k and
/// 1M; none above `AUTHGATE_MEM_MAX`.
fn steps() -> Vec<usize> {
    let max: usize = std::env::var("AUTHGATE_MEM_MAX")
        .map(|v| v.parse().expect("AUTHGATE_MEM_MAX is a count"))
        .unwrap_or(usize::MAX);
    let steps: Vec<usize> = match std::env::var("AUTHGATE_MEM_STEPS") {
        Ok(v) => v
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("AUTHGATE_MEM_STEPS is a comma-separated list of counts")
            })
            .collect(),
        Err(_) => vec![10_000, 100_000, 1_000_000],
    };
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "AUTHGATE_MEM_STEPS must be ascending"
    );
    steps.into_iter().filter(|n| *n <= max).collect()
}

fn main() {
    let steps = steps();
    let text = "[idp]\nissuer = \"https://idp.bench\"\naudience = \"api\"\n[[upstreams]]\nname = \"u\"\naddresses = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\nupstream = \"u\"\nauth = \"none\"\n";
    let c = config::parse("bench.toml", text, &|_| None).expect("bench config is valid");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let key = SigningKey::generate(Algorithm::EdDSA).expect("a key");
    let metrics = Metrics::new();
    let keys = Arc::new(KeyStore::from_config(&c.idp, metrics.clone()));
    keys.install(
        parse_jwks(&json!({"keys": [key.public_jwk()]}), &c.idp.algorithms)
            .expect("the key parses"),
    );
    let verifier = Arc::new(Verifier::from_config(
        &c.idp,
        &c.cache,
        keys,
        metrics.clone(),
    ));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
        + 3600;

    println!(
        "bound: [cache] tokens = {}, [session] max_sessions = {}, [api_keys] cache_size = {}",
        c.cache.tokens, c.session.max_sessions, c.api_keys.cache_size
    );
    let base = (rss_mib(), live_mib());
    println!("start: RSS {:.1} MiB, live heap {:.1} MiB", base.0, base.1);
    let mut seen = 0;
    for &n in &steps {
        rt.block_on(async {
            while seen < n {
                let t = key.sign(&json!({
                    "iss": "https://idp.bench", "aud": "api", "sub": format!("user_{seen}"), "email": format!("u{seen}@example.com"),
                    "exp": exp, "permissions": {"client_abc:invoice": ["read", "write"], "client_abc:report": ["read"]},
                }));
                verifier.verify(&t).await.expect("a valid token");
                seen += 1;
            }
        });
        println!("tokens: {n:>9} distinct verified → {}", report(base));
    }

    let store = MemoryStore::from_config(&c.session);
    let before = (rss_mib(), live_mib());
    let mut stored = 0;
    for &n in &steps {
        rt.block_on(async {
            while stored < n {
                let data = SessionData {
                    client: "billing".into(),
                    origin: "https://billing.example.com".into(),
                    subject: format!("user_{stored}"),
                    email: Some(format!("u{stored}@example.com")),
                    name: None,
                    tokens: Tokens {
                        access_token: Secret::new("a".repeat(700)),
                        id_token: Secret::new("i".repeat(700)),
                        refresh_token: Some(Secret::new("r".repeat(32))),
                        access_expires_at: exp,
                    },
                    created_at: 0,
                    expires_at: exp,
                    generation: 0,
                    sid: Some("s".repeat(22)),
                    via: Default::default(),
                };
                store
                    .put(&SessionId::generate(), std::sync::Arc::new(data))
                    .await
                    .expect("the memory store is always available");
                stored += 1;
            }
        });
        println!("sessions: {n:>7} stored → {}", report(before));
    }

    // API keys: a loopback IdP answers every exchange with a token of its own (distinct `sub`),
    // so each key holds its own token and verified principal, as in production.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let url = format!(
        "http://{}/api/auth/api-key/exchange",
        listener.local_addr().expect("an address")
    );
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let idp_key = Arc::new(key);
    let app = axum::Router::new().route(
        "/api/auth/api-key/exchange",
        axum::routing::post(move || {
            let (n, key) = (counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed), idp_key.clone());
            async move {
                let t = key.sign(&json!({"iss": "https://idp.bench", "aud": "api", "sub": format!("machine_{n}"), "exp": exp, "permissions": {"client_abc:invoice": ["read"]}}));
                axum::Json(json!({"token": t, "expiresIn": 3600}))
            }
        }),
    );
    rt.spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("the loopback IdP serves")
    });
    // The bench exchanges keys as fast as it can from one address: no load bound.
    let unbounded = authgate::config::model::CallerBound {
        in_flight: u32::MAX,
        per_second: u32::MAX,
    };
    let mut settings = c.api_keys.clone();
    settings.exchanges = authgate::config::model::LoadBound {
        caller: unbounded,
        total: unbounded,
    };
    let api_keys = Arc::new(ApiKeys::from_config(
        Some(url.parse().expect("a URL")),
        std::time::Duration::from_secs(10),
        &settings,
        verifier,
        metrics,
    ));
    let before = (rss_mib(), live_mib());
    let mut exchanged = 0usize;
    for &n in &steps {
        rt.block_on(async {
            while exchanged < n {
                let batch = 64.min(n - exchanged);
                let mut set = tokio::task::JoinSet::new();
                for i in exchanged..exchanged + batch {
                    let api_keys = api_keys.clone();
                    set.spawn(async move {
                        api_keys
                            .authenticate(&format!("ak_live_{i:024}"), None)
                            .await
                            .expect("the key is accepted")
                    });
                }
                while let Some(done) = set.join_next().await {
                    done.expect("the exchange task ran");
                }
                exchanged += batch;
            }
        });
        println!("api keys: {n:>7} exchanged → {}", report(before));
    }
}
