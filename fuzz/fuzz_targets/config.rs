//! The config loader and validator, with the route table built as `server::load` builds it
//! (`config::parse_then` + `RouteTable::from_config`): arbitrary text must give a config and
//! its route table or problems, never a panic. An accepted config's table is the one its routes
//! build (the loader promises that) and every problem it reports renders.
#![no_main]

use authgate::authz::routes::RouteTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| match name {
        "SECRET" => Some("s3cret".to_string()),
        "EMPTY" => Some(String::new()),
        "NESTED" => Some("${SECRET}".to_string()),
        _ => None,
    };
    match authgate::config::parse_then("fuzz.toml", text, &env, RouteTable::from_config) {
        Ok((c, t)) => {
            assert!(
                RouteTable::build(&c.routes).is_ok(),
                "an accepted config's routes do not build"
            );
            assert_eq!(t.routes().len(), c.routes.len());
            let _ = t.shadow_warnings();
            let _ = format!("{c:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = authgate::config::expand(text, &env);
});
