//! The gateway's Prometheus metrics, in a registry of its own served by the admin listener.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// All metrics of one gateway.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route, client and outcome.
    pub requests: IntCounterVec,
    /// Request latency in seconds by outcome.
    pub latency: HistogramVec,
    /// JWT verifications by result (`cached`, `verified`, or the refusal reason).
    pub jwt_verifications: IntCounterVec,
    /// JWKS fetches by result.
    pub jwks_fetches: IntCounterVec,
    /// Keys currently in the JWKS cache.
    pub jwks_keys: IntGauge,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("authgate_requests_total", "Requests by route, client and outcome"),
            &["route", "client", "outcome"],
        )
        .expect("metric definition is valid");
        let latency = HistogramVec::new(
            HistogramOpts::new("authgate_request_duration_seconds", "Time from request to last response byte, by outcome")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["outcome"],
        )
        .expect("metric definition is valid");
        let jwt_verifications = IntCounterVec::new(
            Opts::new("authgate_jwt_verifications_total", "JWT verifications by result"),
            &["result"],
        )
        .expect("metric definition is valid");
        let jwks_fetches =
            IntCounterVec::new(Opts::new("authgate_jwks_fetches_total", "JWKS fetches by result"), &["result"]).expect("metric definition is valid");
        let jwks_keys = IntGauge::new("authgate_jwks_keys", "Signing keys currently cached").expect("metric definition is valid");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(jwt_verifications.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(jwks_keys.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics { registry, requests, latency, jwt_verifications, jwks_fetches, jwks_keys }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
