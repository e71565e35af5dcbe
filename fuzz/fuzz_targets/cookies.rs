//! Cookie and session-id parsing: the request's `Cookie` headers (the input, split at NUL
//! bytes into several headers) as the gateway reads them. Invariants: `cookie_value` agrees
//! with `cookie_pairs`; `strip_cookies` leaves none of the gateway's own cookies and is
//! idempotent; a parsed session id is exactly the cookie value; a login cookie cannot be
//! forged without the login key.
#![no_main]

use authgate::identity::login::{self, LoginSealer};
use authgate::identity::session::{
    cookie_pairs, cookie_value, strip_cookies, CookieSpec, SessionId,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const OWN: [&str; 3] = ["authgate", "authgate-login", "authgate-signed-out"];

fn sealer() -> &'static LoginSealer {
    static S: OnceLock<LoginSealer> = OnceLock::new();
    S.get_or_init(|| LoginSealer::new(&[9u8; login::KEY_LEN]).expect("a fixed key is a key"))
}

fn own(name: &str) -> bool {
    OWN.iter().any(|n| {
        name == *n
            || name
                .strip_prefix(n)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

fuzz_target!(|data: &[u8]| {
    let headers: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let spec = CookieSpec::new("authgate", false);
    let pairs: Vec<(&str, &str)> = cookie_pairs(headers.iter().copied()).collect();
    for name in OWN
        .iter()
        .copied()
        .chain(pairs.iter().map(|(k, _)| *k).take(4))
    {
        let first = pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        assert_eq!(
            cookie_value(headers.iter().copied(), name),
            first,
            "cookie_value and cookie_pairs disagree on {name:?}"
        );
    }
    for (name, value) in &pairs {
        if let Some(id) = SessionId::parse(value) {
            assert_eq!(id.expose(), *value);
            assert_eq!(value.len(), 43);
        }
        if let Some(suffix) = spec.login_suffix(name) {
            assert_eq!(
                spec.login_cookie(suffix),
                *name,
                "a login cookie's name is its suffix's"
            );
            let _ = login::is_suffix(suffix);
            assert!(
                sealer().open(name, value).is_none(),
                "a login cookie opened without being sealed by the gateway"
            );
        }
    }
    for header in headers.iter().filter_map(|h| std::str::from_utf8(h).ok()) {
        let Some(kept) = strip_cookies(header, &OWN) else {
            continue;
        };
        for pair in kept.split(';').map(str::trim) {
            let name = pair.split_once('=').map_or(pair, |(k, _)| k);
            assert!(!own(name), "strip_cookies kept {name:?} from {header:?}");
        }
        assert_eq!(
            strip_cookies(&kept, &OWN).as_deref(),
            Some(kept.as_str()),
            "strip_cookies is not idempotent on {header:?}"
        );
        let _ = login::cookie_suffix(header);
    }
});
