//! W3C Trace Context: the gateway passes `traceparent` (and `tracestate`) to the upstream
//! unchanged and names the trace in its own log lines about the request, so that a refusal or
//! an upstream failure can be found from a trace. Nothing is parsed on a request that logs nothing.

use http::HeaderName;

/// The `traceparent` header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace id of a valid `traceparent` value (`version-traceid-parentid-flags`, lowercase
/// hex, version not `ff`, ids not all zeros); `None` for anything else, which is then not
/// logged (a caller's arbitrary text does not reach the log).
pub fn trace_id(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    // Version 00 has exactly four fields; later versions may append more.
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && !zero(trace)
        && hex(parent, 16)
        && !zero(parent)
        && hex(flags, 2);
    valid.then_some(trace)
}

/// The trace id of the request's `traceparent`, or `-`, for a log line.
pub fn of(req: &pingora::http::RequestHeader) -> &str {
    req.headers
        .get(&TRACEPARENT)
        .and_then(|v| trace_id(v.as_bytes()))
        .unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::trace_id;

    #[test]
    fn only_a_well_formed_traceparent_names_a_trace() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id(format!("00-{trace}-00f067aa0ba902b7-01").as_bytes()),
            Some(trace)
        );
        assert_eq!(
            trace_id(format!("01-{trace}-00f067aa0ba902b7-01-extra").as_bytes()),
            Some(trace)
        );
        for bad in [
            format!("00-{trace}-00f067aa0ba902b7-01-extra"),
            format!("ff-{trace}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{trace}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", trace.to_uppercase()),
            format!("00-{trace}-00f067aa0ba902b7"),
            "00-abc-def-01".to_string(),
            "\n<script>".to_string(),
            String::new(),
        ] {
            assert_eq!(trace_id(bad.as_bytes()), None, "{bad}");
        }
    }
}
