//! The return-URL validator: nothing it accepts leaves the client's origins. For a request
//! on one of three origins, on behalf of client 0 or 1, an accepted URL parses, has no
//! user-info, and is on the request's own origin or one of the client's. The input is a
//! selector byte then the raw return URL.
#![no_main]

use authgate::clients::ClientRegistry;
use authgate::origin::Origin;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use url::Url;

const CLIENTS: &str = r#"
[idp]
issuer = "https://idp.test"
audience = "api"
[[clients]]
name = "a"
origins = ["https://app.example.com", "https://www.example.com"]
client_id = "a"
client_secret = "x"
[[clients]]
name = "b"
origins = ["https://b.example.com", "http://localhost:8080"]
client_id = "b"
client_secret = "y"
[[upstreams]]
name = "u"
addresses = ["127.0.0.1:1"]
[[routes]]
path = "/*"
upstream = "u"
auth = "none"
"#;

const ORIGINS: [&str; 4] = [
    "https://app.example.com",
    "https://b.example.com",
    "http://localhost:8080",
    "https://other.example.net",
];

fn registry() -> &'static ClientRegistry {
    static R: OnceLock<ClientRegistry> = OnceLock::new();
    R.get_or_init(|| {
        ClientRegistry::from_config(
            &authgate::config::parse("clients.toml", CLIENTS, &|_| None)
                .expect("the fixture clients are valid")
                .clients,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let origin = Origin::parse(ORIGINS[usize::from(sel % 4)]).expect("fixture origins parse");
    let client = usize::from((sel >> 2) & 1);
    let r = registry();
    let Some(url) = authgate::redirects::validate(raw, &origin, r, client) else {
        return;
    };
    let parsed = Url::parse(&url)
        .unwrap_or_else(|e| panic!("{raw:?} was accepted as {url:?}, which does not parse: {e}"));
    assert!(
        parsed.username().is_empty() && parsed.password().is_none(),
        "{raw:?} was accepted with user-info: {url:?}"
    );
    assert!(
        matches!(parsed.scheme(), "http" | "https"),
        "{raw:?} was accepted as {url:?}"
    );
    let target = Origin::parse(&parsed.origin().ascii_serialization())
        .unwrap_or_else(|e| panic!("{raw:?} was accepted as {url:?} without an origin: {e}"));
    assert!(
        target == origin || r.belongs(client, &target),
        "{raw:?} seen from {origin:?} for client {client} was accepted as {url:?}, which leaves the client's origins"
    );
    assert!(
        !url.contains('\\') && !url.chars().any(char::is_control),
        "{raw:?} was accepted as {url:?}"
    );
});
