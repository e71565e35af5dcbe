//! The session path's store cost, memory against Redis, side by side in one run: reading a
//! session (what every request with a session cookie does), writing one (sign-in) and the
//! compare-and-swap of a refresh. The Redis store talks to a `redis-server` of its own on
//! loopback (started here: Debian's `redis-server` must be installed, else only the memory
//! store is measured), with the sessions encrypted as in production (AES-256-GCM).
//!
//! Run: `cargo bench --bench sessions`.

use authgate::config;
use authgate::config::model::SessionStoreSettings;
use authgate::identity::redis_store::RedisStore;
use authgate::identity::session::{MemoryStore, SessionData, SessionId, SessionStore, Tokens};
use authgate::metrics::Metrics;
use authgate::secret::Secret;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::sync::Arc;

const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

fn session(i: usize, exp: u64) -> SessionData {
    SessionData {
        client: "bench".into(),
        origin: "https://app.example.com".into(),
        subject: format!("user_{i}"),
        email: Some(format!("user{i}@example.com")),
        name: Some("A Bench User".into()),
        // Realistic sizes: ~700-byte access and id tokens, a refresh token, a sid.
        tokens: Tokens {
            access_token: Secret::new("a".repeat(700)),
            id_token: Secret::new("i".repeat(700)),
            refresh_token: Some(Secret::new("r".repeat(43))),
            access_expires_at: exp,
        },
        created_at: 0,
        expires_at: exp,
        generation: 0,
        sid: Some("s".repeat(22)),
        via: Default::default(),
    }
}

fn stores(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let redis = devidp::redis::RedisServer::start_or_skip("the Redis half of benches/sessions.rs");
    let base = "[idp]\nissuer = \"https://idp.bench\"\naudience = \"api\"\n[[upstreams]]\nname = \"u\"\naddresses = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/\"\nupstream = \"u\"\nauth = \"none\"\n";
    let memory_config =
        config::parse("bench.toml", base, &|_| None).expect("bench config is valid");
    let metrics = Metrics::new();
    let mut list: Vec<(&str, Box<dyn SessionStore>)> = vec![(
        "memory",
        Box::new(MemoryStore::from_config(&memory_config.session)),
    )];
    if let Some(redis) = &redis {
        let text = format!(
            "[session]\nstore = \"redis\"\n[session.redis]\nurl = \"{}\"\nkey = \"{KEY}\"\n{base}",
            redis.url()
        );
        let c = config::parse("bench.toml", &text, &|_| None).expect("bench config is valid");
        let SessionStoreSettings::Redis(settings) = &c.session.store else {
            unreachable!("configured above")
        };
        list.push((
            "redis",
            Box::new(
                RedisStore::from_config(settings, c.session.idle_timeout, &metrics)
                    .expect("the store builds"),
            ),
        ));
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock")
        .as_secs()
        + 3600;
    let mut group = c.benchmark_group("session_store");
    for (name, store) in &list {
        let ids: Vec<SessionId> = (0..10_000).map(|_| SessionId::generate()).collect();
        rt.block_on(async {
            for (i, id) in ids.iter().enumerate() {
                store
                    .put(id, Arc::new(session(i, exp)))
                    .await
                    .expect("stored");
            }
        });
        let id = &ids[5_000];
        group.bench_with_input(BenchmarkId::new("get", name), id, |b, id| {
            b.iter(|| {
                rt.block_on(store.get(black_box(id)))
                    .expect("available")
                    .expect("found")
            })
        });
        let fresh = Arc::new(session(1, exp));
        group.bench_with_input(BenchmarkId::new("put", name), &fresh, |b, s| {
            b.iter(|| {
                rt.block_on(store.put(&SessionId::generate(), black_box(s.clone())))
                    .expect("stored")
            })
        });
        let mut generation = 0u64;
        group.bench_function(BenchmarkId::new("refresh_cas", name), |b| {
            b.iter(|| {
                let mut next = session(5_000, exp);
                next.generation = generation + 1;
                assert!(rt
                    .block_on(store.replace(id, generation, Arc::new(next)))
                    .expect("available"));
                generation += 1;
            })
        });
    }
    group.finish();
}

criterion_group!(benches, stores);
criterion_main!(benches);
