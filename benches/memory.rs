//! Memory of the gateway's caches: resident set size after 10k and 1M distinct bearer tokens
//! verified and browser sessions stored, with the default bounds (`[cache] tokens = 100000`,
//! `[session] max_sessions`). Prints one line per step.
//!
//! Run: `cargo bench --bench memory` (about two minutes: 1M Ed25519 tokens are minted and verified).
//! `AUTHGATE_MEM_MAX=100000` stops earlier.

use authgate::config;
use authgate::demo::keys::SigningKey;
use authgate::identity::jwks::{parse_jwks, KeyStore};
use authgate::identity::session::{MemoryStore, SessionData, SessionId, SessionStore, Tokens};
use authgate::identity::verify::Verifier;
use authgate::metrics::Metrics;
use authgate::secret::Secret;
use jsonwebtoken::Algorithm;
use serde_json::json;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn main() {
    let max: usize = std::env::var("AUTHGATE_MEM_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let steps: Vec<usize> = [10_000, 100_000, 1_000_000].into_iter().filter(|n| *n <= max).collect();
    let text = "[idp]\nissuer = \"https://idp.bench\"\naudience = \"api\"\n[[upstreams]]\nname = \"u\"\naddresses = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\nupstream = \"u\"\nauth = \"none\"\n";
    let c = config::parse("bench.toml", text, &|_| None).expect("bench config is valid");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let key = SigningKey::generate(Algorithm::EdDSA).expect("a key");
    let metrics = Metrics::new();
    let keys = Arc::new(KeyStore::from_config(&c.idp, metrics.clone()));
    keys.install(parse_jwks(&json!({"keys": [key.public_jwk()]}), &c.idp.algorithms).expect("the key parses"));
    let verifier = Verifier::from_config(&c.idp, &c.cache, keys, metrics);
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs() + 3600;

    println!("bound: [cache] tokens = {}, [session] max_sessions = {}", c.cache.tokens, c.session.max_sessions);
    let base = rss_mib();
    println!("start: RSS {base:.1} MiB");
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
        println!("tokens: {n:>9} distinct verified → RSS {:.1} MiB (+{:.1})", rss_mib(), rss_mib() - base);
    }

    let store = MemoryStore::from_config(&c.session);
    let before = rss_mib();
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
                };
                store.put(&SessionId::generate(), std::sync::Arc::new(data)).await;
                stored += 1;
            }
        });
        println!("sessions: {n:>7} stored → RSS {:.1} MiB (+{:.1})", rss_mib(), rss_mib() - before);
    }
}
