//! The IdP's answers as the gateway reads them: the live check's answer (status + body), the
//! API-key exchange's answer body and a JWKS document. Invariants: only a 2xx answer can
//! allow; 502, 503 and 504 never decide; the exchange's expiry never overflows. The input is
//! two status bytes then the body.
#![no_main]

use authgate::authz::abac::read_check_answer;
use authgate::config::validate::DEFAULT_ALGORITHMS;
use authgate::identity::apikey::read_exchange_answer;
use authgate::identity::jwks::parse_jwks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [hi, lo, body @ ..] = data else { return };
    let code = 100 + u16::from_be_bytes([*hi, *lo]) % 500;
    let Ok(status) = http::StatusCode::from_u16(code) else {
        return;
    };
    let answer = read_check_answer(status, body);
    if answer == Ok(true) {
        assert!(status.is_success(), "a {status} answer allowed the request");
    }
    if matches!(code, 502..=504) {
        assert!(answer.is_err(), "a {status} answer decided: {answer:?}");
    }
    let now = 1_700_000_000u64.wrapping_add(u64::from(*hi) << 24);
    if let Ok(a) = read_exchange_answer(body, now) {
        let _ = a.expires_at;
    }
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = parse_jwks(&doc, &DEFAULT_ALGORITHMS);
    }
});
