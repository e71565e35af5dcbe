//! What a test does when a tool it needs (`redis-server`, `chromium`, `node`) is missing: fail
//! under CI or `AUTHGATE_REQUIRE_SERVICES=1`, else skip with a line `cargo test` shows.
//!
//! A skip is never silent: [`skip`] writes `SKIPPED <test>: <why>` straight to the process's
//! stderr (libtest captures only `eprintln!`), and `.ci/run` counts those lines apart from the
//! passed tests. Under CI the same call panics, so a green CI never means "skipped".

use std::io::Write;

/// The environment variable that makes a missing tool a failure outside CI too.
pub const REQUIRE: &str = "AUTHGATE_REQUIRE_SERVICES";

/// Whether a missing tool must fail the test: `CI` is set (to anything but `false`/`0`), or
/// `AUTHGATE_REQUIRE_SERVICES` is `1`/`true`.
pub fn required() -> bool {
    let on = |name: &str| {
        std::env::var(name).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
    };
    on("CI") || on(REQUIRE)
}

/// Reports that `test` cannot run because `why`: panics when [`required`], else prints the
/// visible `SKIPPED` line. The caller returns (or yields `None`) after it.
pub fn skip(test: &str, why: &str) {
    report(required(), test, why, &mut std::io::stderr());
}

/// [`skip`] with the decision and the destination given.
fn report(required: bool, test: &str, why: &str, out: &mut impl Write) {
    if required {
        panic!(
            "{test} cannot run: {why}. Under CI or {REQUIRE}=1 a missing tool is a failure, \
             never a skip: `.ci/run` installs it"
        );
    }
    let _ = writeln!(
        out,
        "\nSKIPPED {test}: {why} (set {REQUIRE}=1 to make this a failure)\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_fails_when_required_and_shows_otherwise() {
        let failed =
            std::panic::catch_unwind(|| report(true, "t", "x is missing", &mut Vec::new()));
        assert!(
            failed.is_err(),
            "a required tool that is missing must fail the test"
        );
        let mut out = Vec::new();
        report(false, "t", "x is missing", &mut out);
        let line = String::from_utf8(out).unwrap_or_default();
        assert!(line.contains("\nSKIPPED t: x is missing"), "{line}");
    }
}
