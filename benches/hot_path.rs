//! Micro-benchmarks of the per-request work: JWT verification cold (signature check) and
//! cached, per algorithm, beside the signature check alone and the former jsonwebtoken path; route matching with 10, 1,000 and 10,000 routes; path
//! normalisation; the permission check; a session lookup among 10,000; a cached live ABAC
//! decision; rebuilding the upstream request's headers with the identity injected.
//!
//! Run: `cargo bench --bench hot_path`

use authgate::authz::path::normalize;
use authgate::authz::permissions;
use authgate::authz::routes::RouteTable;
use authgate::config;
use authgate::identity::jwks::{parse_jwks, KeyStore};
use authgate::identity::verify::Verifier;
use authgate::metrics::Metrics;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use devidp::keys::SigningKey;
use jsonwebtoken::Algorithm;
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

const ISSUER: &str = "https://idp.bench";

fn routes_config(n: usize) -> String {
    let mut s = format!("[idp]\nissuer = \"{ISSUER}\"\naudience = \"api\"\n[[upstreams]]\nname = \"u\"\naddresses = [\"127.0.0.1:1\"]\n");
    for i in 0..n {
        s.push_str(&format!("[[routes]]\npath = \"/svc{i}/items/{{id}}\"\nmethods = [\"GET\"]\nupstream = \"u\"\npermission = \"item{i}:read\"\n"));
    }
    s
}

fn verifier_with(key: &SigningKey) -> Verifier {
    let c =
        config::parse("bench.toml", &routes_config(1), &|_| None).expect("bench config is valid");
    let metrics = Metrics::new();
    let keys = Arc::new(KeyStore::from_config(&c.idp, metrics.clone()));
    keys.install(
        parse_jwks(&json!({"keys": [key.public_jwk()]}), &c.idp.algorithms)
            .expect("the key parses"),
    );
    Verifier::from_config(&c.idp, &c.cache, keys, metrics)
}

fn token(key: &SigningKey) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    key.sign(&json!({
        "iss": ISSUER, "aud": "api", "sub": "user_1", "email": "one@example.com", "azp": "abc",
        "iat": now, "exp": now + 3600,
        "permissions": {"client_abc:invoice": ["read", "write", "refund"], "client_abc:report": ["read"]},
    }))
}

fn jwt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("jwt_verify");
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let key = SigningKey::generate(alg).unwrap();
        let verifier = verifier_with(&key);
        let t = token(&key);
        assert!(rt.block_on(verifier.verify(&t)).is_ok());
        group.bench_with_input(BenchmarkId::new("cold", format!("{alg:?}")), &t, |b, t| {
            b.iter(|| rt.block_on(verifier.verify_uncached(black_box(t))).unwrap())
        });
        group.bench_with_input(
            BenchmarkId::new("cached", format!("{alg:?}")),
            &t,
            |b, t| b.iter(|| rt.block_on(verifier.verify(black_box(t))).unwrap()),
        );
        // The floor of the cold path: the signature check alone, with the key parsed at load.
        let parsed = verifier
            .keys()
            .get(key.kid())
            .expect("the key is installed");
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        group.bench_with_input(
            BenchmarkId::new("signature", format!("{alg:?}")),
            &t,
            |b, _| {
                b.iter(|| {
                    assert_eq!(
                        parsed.verify(alg, black_box(input.as_bytes()), black_box(&sig)),
                        Ok(true)
                    )
                })
            },
        );
        // The cold path before it read tokens once (for the ratio in one run): jsonwebtoken's
        // header decode, then its decode (header twice more, claims twice, key set up per call).
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk().clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&["api"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        group.bench_with_input(
            BenchmarkId::new("jsonwebtoken", format!("{alg:?}")),
            &t,
            |b, t| {
                b.iter(|| {
                    let header = jsonwebtoken::decode_header(black_box(t)).unwrap();
                    assert_eq!(header.alg, alg);
                    jsonwebtoken::decode::<serde_json::Value>(t, &decoding, &validation).unwrap()
                })
            },
        );
    }
    group.finish();
}

fn routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 1_000, 10_000] {
        let cfg = config::parse("bench.toml", &routes_config(n), &|_| None)
            .expect("bench config is valid");
        let table = RouteTable::build(&cfg.routes).expect("routes build");
        let path = format!("/svc{}/items/42", n / 2);
        group.bench_with_input(BenchmarkId::from_parameter(n), &path, |b, p| {
            b.iter(|| {
                black_box(table.find(Some("api.example.com"), black_box(p), &http::Method::GET))
            })
        });
    }
    group.finish();
}

fn paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("path_normalize");
    group.bench_function("clean", |b| {
        b.iter(|| black_box(normalize(black_box("/api/invoices/42/lines")).unwrap()))
    });
    group.bench_function("dirty", |b| {
        b.iter(|| black_box(normalize(black_box("/api/./invoices//%34%32/../42")).unwrap()))
    });
    group.finish();
}

fn permission(c: &mut Criterion) {
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let principal = rt
        .block_on(verifier_with(&key).verify(&token(&key)))
        .unwrap();
    c.bench_function("permission_check", |b| {
        b.iter(|| {
            black_box(permissions::check(
                &principal,
                black_box("client_abc:invoice"),
                Some("42"),
                black_box("write"),
            ))
        })
    });
}

fn session_lookup(c: &mut Criterion) {
    use authgate::identity::session::{MemoryStore, SessionData, SessionId, SessionStore, Tokens};
    use authgate::secret::Secret;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg =
        config::parse("bench.toml", &routes_config(1), &|_| None).expect("bench config is valid");
    let store = MemoryStore::from_config(&cfg.session);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let data = |i: usize| SessionData {
        client: "bench".into(),
        origin: "https://app.example.com".into(),
        subject: format!("user_{i}"),
        email: Some(format!("user{i}@example.com")),
        name: None,
        tokens: Tokens {
            access_token: Secret::new("a".repeat(700)),
            id_token: Secret::new("i".repeat(700)),
            refresh_token: None,
            access_expires_at: exp,
        },
        created_at: 0,
        expires_at: exp,
        generation: 0,
        sid: None,
        via: Default::default(),
    };
    let ids: Vec<SessionId> = (0..10_000).map(|_| SessionId::generate()).collect();
    rt.block_on(async {
        for (i, id) in ids.iter().enumerate() {
            store.put(id, Arc::new(data(i))).await.unwrap();
        }
    });
    let id = SessionId::parse(ids[5_000].expose()).unwrap();
    c.bench_function("session_lookup_10k", |b| {
        b.iter(|| rt.block_on(store.get(black_box(&id))).unwrap().unwrap())
    });
}

fn abac_cache_hit(c: &mut Criterion) {
    use authgate::authz::abac::{AbacClient, CheckRequest, Outcome};
    use authgate::identity::credentials::{Credential, Token};
    let bearer = Credential::Bearer(Token::new("t").unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A loopback IdP that allows everything; the first check asks it, the benchmark hits the cache.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!(
        "http://{}/api/auth/check-permission",
        listener.local_addr().unwrap()
    );
    let app = axum::Router::new().route(
        "/api/auth/check-permission",
        axum::routing::post(|| async { axum::Json(json!({"allowed": true})) }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cfg =
        config::parse("bench.toml", &routes_config(1), &|_| None).expect("bench config is valid");
    let client = AbacClient::from_config(
        Some(url.parse().unwrap()),
        std::time::Duration::from_secs(2),
        &cfg.abac,
        Metrics::new(),
    );
    let mut attributes = serde_json::Map::new();
    attributes.insert("amount".into(), 80.into());
    attributes.insert("currency".into(), "EUR".into());
    let req = CheckRequest {
        subject: "user_1",
        entity_type: "client_abc:invoice",
        entity_id: Some("42"),
        permission: "refund",
        attributes,
    };
    assert_eq!(
        rt.block_on(client.check(&bearer, &req)),
        Outcome::Allowed { cached: false }
    );
    c.bench_function("abac_cache_hit", |b| {
        b.iter(|| rt.block_on(client.check(&bearer, black_box(&req))))
    });
}

fn header_injection(c: &mut Criterion) {
    use authgate::headers::{encode, Identity, IdentityHeaders};
    use pingora::http::RequestHeader;
    let cfg =
        config::parse("bench.toml", &routes_config(1), &|_| None).expect("bench config is valid");
    let headers = IdentityHeaders::from_config(&cfg.headers);
    let mut req = RequestHeader::build("GET", b"/api/invoices/42", None).unwrap();
    for (k, v) in [
        ("Host", "api.example.com"),
        ("User-Agent", "bench/1.0"),
        ("Accept", "*/*"),
        ("Authorization", "Bearer eyJ.x.y"),
        ("X-Auth-Subject", "spoofed"),
    ] {
        req.append_header(k, v).unwrap();
    }
    let (subject, email, provider, client, permission) = (
        encode("user_1"),
        encode("one@example.com"),
        encode("idp"),
        encode("billing"),
        encode("client_abc:invoice:read"),
    );
    let id = Identity {
        subject: Some(&subject),
        email: Some(&email),
        email_verified: true,
        provider: Some(&provider),
        client: Some(&client),
        permission: Some(&permission),
    };
    c.bench_function("upstream_headers_rebuild", |b| {
        b.iter_batched_ref(
            || req.clone(),
            |r| {
                let mut up = headers.upstream(r, false);
                up.inject(&headers, black_box(&id));
                up.install(r, None).unwrap();
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    jwt,
    routes,
    paths,
    permission,
    session_lookup,
    abac_cache_hit,
    header_injection
);
criterion_main!(benches);
