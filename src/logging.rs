//! The log filter: `AUTHGATE_LOG` (tracing's `EnvFilter` syntax, default `info`), with the
//! libraries that print raw requests, responses or frames at debug level (Pingora writes the
//! upstream request head with its `Authorization` and `Cookie`, hyper and h2 their frames)
//! capped at `info` whatever it says, so that no level puts a token or cookie in the log.

use tracing_subscriber::filter::{Directive, EnvFilter};

/// Targets that log request or response heads below `info`.
pub const CAPPED: &[&str] = &[
    "pingora",
    "pingora_core",
    "pingora_proxy",
    "pingora_http",
    "pingora_pool",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "openidconnect",
    "oauth2",
];

/// The filter for `AUTHGATE_LOG` (`None` or unparsable: `info`), with [`CAPPED`] at `info` at most.
pub fn filter(spec: Option<&str>) -> EnvFilter {
    let mut filter = spec
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let quiet_by_default = spec.is_none();
    for target in CAPPED {
        // Pingora's own info lines are noise in the default setup (every connection).
        let level = if quiet_by_default && target.starts_with("pingora") {
            "warn"
        } else {
            "info"
        };
        if let Ok(d) = format!("{target}={level}").parse::<Directive>() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_everywhere_still_caps_the_libraries() {
        for spec in [
            Some("debug"),
            Some("trace"),
            Some("pingora_proxy=trace,debug"),
            Some("not a filter ="),
            None,
        ] {
            let text = filter(spec).to_string();
            for target in CAPPED {
                assert!(
                    text.contains(&format!("{target}=info"))
                        || text.contains(&format!("{target}=warn")),
                    "{spec:?}: {target} not capped in {text}"
                );
                assert!(
                    !text.contains(&format!("{target}=trace"))
                        && !text.contains(&format!("{target}=debug")),
                    "{spec:?}: {text}"
                );
            }
        }
    }
}
