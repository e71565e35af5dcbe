//! The config loader and validator: arbitrary text must give a config or problems, never a
//! panic. A config it accepts builds its route table (the loader promises that) and every
//! problem it reports renders.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = |name: &str| match name {
        "SECRET" => Some("s3cret".to_string()),
        "EMPTY" => Some(String::new()),
        "NESTED" => Some("${SECRET}".to_string()),
        _ => None,
    };
    match authgate::config::parse("fuzz.toml", text, &env) {
        Ok(c) => {
            let t = authgate::authz::routes::RouteTable::build(&c.routes).unwrap_or_else(|_| panic!("an accepted config's routes do not build"));
            let _ = t.shadow_warnings();
            let _ = format!("{c:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = authgate::config::expand(text, &env);
});
