//! The gateway's Prometheus metrics, in a registry of its own served by the admin listener.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;

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
    /// Live ABAC checks by result (`allowed`, `denied`, `unavailable`) and source (`idp`, `cache`, `shared`).
    pub abac_checks: IntCounterVec,
    /// Latency of live ABAC calls to the IdP.
    pub abac_latency: Histogram,
    /// The ABAC circuit breaker: 0 closed, 1 open, 2 half-open.
    pub abac_breaker: IntGauge,
    /// API-key exchanges by result.
    pub api_key_exchanges: IntCounterVec,
    /// Requests refused to bound the load a caller can send to the IdP, by bound
    /// (`abac_caller`, `abac_fail_open`, `api_key_malformed`, `api_key_caller`, `api_key_total`,
    /// `code_exchange_caller`, `code_exchange_total`) and reason (`in_flight`, `rate`,
    /// `crowded`; `malformed`; `own_call_failed`, `opened_breaker`).
    pub load_refusals: IntCounterVec,
    /// Decisions of shadow rules (`enforce = false`) by route and what they would do (`allow`, `refuse`).
    pub shadow_decisions: IntCounterVec,
    /// What shadow grants (`enforce = false`) would change, by client, grant and `would`
    /// (`allow`: a refused request; `refuse`: an allowed one).
    pub shadow_grants: IntCounterVec,
    /// Browser sign-ins started (sent to the IdP), by client.
    pub logins_started: IntCounterVec,
    /// Browser sign-ins completed (a session made), by client.
    pub logins_completed: IntCounterVec,
    /// Browser sign-ins that failed, by client and reason (a fixed set of labels).
    pub logins_failed: IntCounterVec,
    /// Latency of calls to the IdP by endpoint (`discovery`, `jwks`, `token`, `check_permission`, `api_key_exchange`).
    pub idp_latency: HistogramVec,
    /// Time from sending a request upstream to its response header, by upstream.
    pub upstream_latency: HistogramVec,
    /// 1 while an upstream address is in rotation, 0 while its health check keeps it out.
    pub upstream_healthy: IntGaugeVec,
    /// Config reloads by result (`applied`, `refused`).
    pub config_reloads: IntCounterVec,
    /// 1 for the running config's file hash (see [`Metrics::set_config_hash`]).
    pub config_info: IntGaugeVec,
    /// Browser sessions held, by store (`memory`: this process; `redis`: all instances, as of
    /// this instance's last sign-in or logout).
    pub sessions_active: IntGaugeVec,
    /// Session refreshes by result: `refreshed`, `reused` (another request here did it),
    /// `waited` (another instance did it), `refused`, `unavailable`, `superseded`.
    pub session_refreshes: IntCounterVec,
    /// Logouts by kind: `user`, `backchannel`.
    pub logouts: IntCounterVec,
    /// Back-channel logout tokens refused, by reason.
    pub backchannel_refusals: IntCounterVec,
    /// Re-validations of GitHub sessions against the API, by provider and result
    /// (`confirmed`, `ended`, `unavailable`).
    pub github_revalidations: IntCounterVec,
    /// Latency of calls to the session store (Redis), by operation.
    pub session_store_latency: HistogramVec,
    /// Failed calls to the session store (Redis), by operation.
    pub session_store_errors: IntCounterVec,
    /// Upgraded connections (WebSockets) the gateway closed, by reason: `expired` (the
    /// credential, on a `websocket_close_at_expiry` route), `session_ended`,
    /// `session_replaced`, `session_store_unavailable`, `provider_unavailable` (GitHub could
    /// not re-validate the session).
    pub sockets_closed: IntCounterVec,
}

/// The outcomes nearly every request ends in, whose metric handles [`RequestCounters`] keeps.
const HOT_OUTCOMES: [&str; 2] = ["proxied", "public"];

/// Most configs have a few routes and clients; past this many (route, client) pairs the
/// handles are looked up by label values every time instead of kept.
const MAX_KEPT_PAIRS: usize = 1 << 16;

/// `authgate_requests_total` and `authgate_request_duration_seconds` handles for the hot
/// outcomes (`proxied`, `public`), resolved on a pair's first request and kept for the
/// gateway's life (a reload builds new ones): no label hashing and no registry lock per request.
/// Series still appear in `/metrics` only once used; other outcomes are looked up by label.
pub struct RequestCounters {
    metrics: Metrics,
    /// Clients + 1 (the last slot: no client).
    stride: usize,
    /// By (route × stride + client) × 2 + hot outcome.
    counters: Box<[OnceLock<IntCounter>]>,
    latency: [OnceLock<Histogram>; 2],
}

impl RequestCounters {
    /// Handles for `routes` routes and `clients` clients, resolved lazily.
    pub fn new(metrics: &Metrics, routes: usize, clients: usize) -> RequestCounters {
        let stride = clients.saturating_add(1);
        let pairs = routes.saturating_mul(stride);
        let kept = if pairs <= MAX_KEPT_PAIRS {
            pairs * HOT_OUTCOMES.len()
        } else {
            0
        };
        RequestCounters {
            metrics: metrics.clone(),
            stride,
            counters: (0..kept).map(|_| OnceLock::new()).collect(),
            latency: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// Counts one request: `route` and `client` are indices (for the kept handles) with the
    /// names their labels carry.
    pub fn observe(
        &self,
        route: Option<(usize, &str)>,
        client: Option<(usize, &str)>,
        outcome: &str,
        seconds: f64,
    ) {
        let route_name = route.map_or("-", |(_, n)| n);
        let client_name = client.map_or("-", |(_, n)| n);
        let Some(hot) = HOT_OUTCOMES.iter().position(|o| *o == outcome) else {
            self.metrics
                .requests
                .with_label_values(&[route_name, client_name, outcome])
                .inc();
            self.metrics
                .latency
                .with_label_values(&[outcome])
                .observe(seconds);
            return;
        };
        let no_client = self.stride - 1;
        let slot = match (route, client) {
            (Some((r, _)), Some((c, _))) if c < no_client => self
                .counters
                .get((r * self.stride + c) * HOT_OUTCOMES.len() + hot),
            (Some((r, _)), None) => self
                .counters
                .get((r * self.stride + no_client) * HOT_OUTCOMES.len() + hot),
            _ => None,
        };
        match slot {
            Some(slot) => slot
                .get_or_init(|| {
                    self.metrics
                        .requests
                        .with_label_values(&[route_name, client_name, outcome])
                })
                .inc(),
            None => self
                .metrics
                .requests
                .with_label_values(&[route_name, client_name, outcome])
                .inc(),
        }
        match self.latency.get(hot) {
            Some(h) => h
                .get_or_init(|| self.metrics.latency.with_label_values(&[outcome]))
                .observe(seconds),
            None => self
                .metrics
                .latency
                .with_label_values(&[outcome])
                .observe(seconds),
        }
    }
}

impl Metrics {
    /// Creates and registers the metrics (at start-up: a definition that fails is a bug).
    #[allow(
        clippy::expect_used,
        reason = "start-up only; the definitions are constants"
    )]
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "authgate_requests_total",
                "Requests by route, client and outcome",
            ),
            &["route", "client", "outcome"],
        )
        .expect("metric definition is valid");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "authgate_request_duration_seconds",
                "Time from request to last response byte, by outcome",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["outcome"],
        )
        .expect("metric definition is valid");
        let jwt_verifications = IntCounterVec::new(
            Opts::new(
                "authgate_jwt_verifications_total",
                "JWT verifications by result",
            ),
            &["result"],
        )
        .expect("metric definition is valid");
        let jwks_fetches = IntCounterVec::new(
            Opts::new("authgate_jwks_fetches_total", "JWKS fetches by result"),
            &["result"],
        )
        .expect("metric definition is valid");
        let jwks_keys = IntGauge::new("authgate_jwks_keys", "Signing keys currently cached")
            .expect("metric definition is valid");
        let abac_checks = IntCounterVec::new(
            Opts::new(
                "authgate_abac_checks_total",
                "Live ABAC checks by result and source (idp, cache, shared)",
            ),
            &["result", "source"],
        )
        .expect("metric definition is valid");
        let abac_latency = Histogram::with_opts(
            HistogramOpts::new(
                "authgate_abac_check_duration_seconds",
                "Latency of live ABAC calls to the IdP",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("metric definition is valid");
        let abac_breaker = IntGauge::new(
            "authgate_abac_breaker_state",
            "ABAC circuit breaker: 0 closed, 1 open, 2 half-open",
        )
        .expect("metric definition is valid");
        let api_key_exchanges = IntCounterVec::new(
            Opts::new(
                "authgate_api_key_exchanges_total",
                "API-key exchanges at the IdP by result",
            ),
            &["result"],
        )
        .expect("metric definition is valid");
        let load_refusals = IntCounterVec::new(
            Opts::new(
                "authgate_load_refusals_total",
                "Requests refused to bound the load a caller can send to the IdP, by bound and reason",
            ),
            &["bound", "reason"],
        )
        .expect("metric definition is valid");
        let shadow_decisions = IntCounterVec::new(
            Opts::new("authgate_shadow_decisions_total", "Decisions of shadow rules (enforce = false) by route and what they would do: allow, refuse"),
            &["route", "would"],
        )
        .expect("metric definition is valid");
        let shadow_grants = IntCounterVec::new(
            Opts::new("authgate_shadow_grants_total", "What shadow grants (enforce = false) would change, by client and grant: allow (a refused request), refuse (an allowed one)"),
            &["client", "grant", "would"],
        )
        .expect("metric definition is valid");
        let logins_started = IntCounterVec::new(
            Opts::new(
                "authgate_logins_started_total",
                "Browser sign-ins sent to the IdP, by client",
            ),
            &["client"],
        )
        .expect("metric definition is valid");
        let logins_completed = IntCounterVec::new(
            Opts::new(
                "authgate_logins_completed_total",
                "Browser sign-ins completed (a session made), by client",
            ),
            &["client"],
        )
        .expect("metric definition is valid");
        let logins_failed = IntCounterVec::new(
            Opts::new(
                "authgate_logins_failed_total",
                "Browser sign-ins that failed, by client and reason",
            ),
            &["client", "reason"],
        )
        .expect("metric definition is valid");
        let idp_latency = HistogramVec::new(
            HistogramOpts::new(
                "authgate_idp_request_duration_seconds",
                "Latency of calls to the IdP by endpoint",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["endpoint"],
        )
        .expect("metric definition is valid");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "authgate_upstream_duration_seconds",
                "Time from sending a request upstream to its response header, by upstream",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["upstream"],
        )
        .expect("metric definition is valid");
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "authgate_upstream_healthy",
                "1 while an upstream address is in rotation, 0 while its health check keeps it out",
            ),
            &["upstream", "address"],
        )
        .expect("metric definition is valid");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "authgate_config_reloads_total",
                "Config reloads (SIGHUP or file change) by result: applied, refused",
            ),
            &["result"],
        )
        .expect("metric definition is valid");
        for result in ["applied", "refused"] {
            config_reloads.with_label_values(&[result]);
        }
        let config_info = IntGaugeVec::new(
            Opts::new(
                "authgate_config_info",
                "1 for the SHA-256 of the running config file",
            ),
            &["hash"],
        )
        .expect("metric definition is valid");
        let sessions_active = IntGaugeVec::new(
            Opts::new(
                "authgate_sessions_active",
                "Browser sessions held, by store",
            ),
            &["store"],
        )
        .expect("metric definition is valid");
        let session_refreshes = IntCounterVec::new(
            Opts::new(
                "authgate_session_refreshes_total",
                "Session token refreshes by result (waited: another instance refreshed it)",
            ),
            &["result"],
        )
        .expect("metric definition is valid");
        let logouts = IntCounterVec::new(
            Opts::new(
                "authgate_logouts_total",
                "Logouts by kind (user, backchannel)",
            ),
            &["kind"],
        )
        .expect("metric definition is valid");
        let backchannel_refusals = IntCounterVec::new(
            Opts::new(
                "authgate_backchannel_logout_refusals_total",
                "Back-channel logout tokens refused, by reason",
            ),
            &["reason"],
        )
        .expect("metric definition is valid");
        let github_revalidations = IntCounterVec::new(
            Opts::new("authgate_github_revalidations_total", "Re-validations of GitHub sessions against the API, by provider and result: confirmed, ended, unavailable"),
            &["provider", "result"],
        )
        .expect("metric definition is valid");
        let session_store_latency = HistogramVec::new(
            HistogramOpts::new(
                "authgate_session_store_duration_seconds",
                "Latency of calls to the session store (Redis), by operation",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ]),
            &["operation"],
        )
        .expect("metric definition is valid");
        let session_store_errors = IntCounterVec::new(
            Opts::new(
                "authgate_session_store_errors_total",
                "Failed calls to the session store (Redis), by operation",
            ),
            &["operation"],
        )
        .expect("metric definition is valid");
        let sockets_closed = IntCounterVec::new(
            Opts::new(
                "authgate_sockets_closed_total",
                "Upgraded connections (WebSockets) closed by the gateway, by reason: expired, session_ended, session_replaced, session_store_unavailable, provider_unavailable",
            ),
            &["reason"],
        )
        .expect("metric definition is valid");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(jwt_verifications.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(jwks_keys.clone()),
            Box::new(abac_checks.clone()),
            Box::new(abac_latency.clone()),
            Box::new(abac_breaker.clone()),
            Box::new(api_key_exchanges.clone()),
            Box::new(load_refusals.clone()),
            Box::new(shadow_decisions.clone()),
            Box::new(shadow_grants.clone()),
            Box::new(logins_started.clone()),
            Box::new(logins_completed.clone()),
            Box::new(logins_failed.clone()),
            Box::new(idp_latency.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(upstream_healthy.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_info.clone()),
            Box::new(sessions_active.clone()),
            Box::new(session_refreshes.clone()),
            Box::new(logouts.clone()),
            Box::new(backchannel_refusals.clone()),
            Box::new(github_revalidations.clone()),
            Box::new(session_store_latency.clone()),
            Box::new(session_store_errors.clone()),
            Box::new(sockets_closed.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            jwt_verifications,
            jwks_fetches,
            jwks_keys,
            abac_checks,
            abac_latency,
            abac_breaker,
            api_key_exchanges,
            load_refusals,
            shadow_decisions,
            shadow_grants,
            logins_started,
            logins_completed,
            logins_failed,
            idp_latency,
            upstream_latency,
            upstream_healthy,
            config_reloads,
            config_info,
            sessions_active,
            session_refreshes,
            logouts,
            backchannel_refusals,
            github_revalidations,
            session_store_latency,
            session_store_errors,
            sockets_closed,
        }
    }

    /// Shows `hash` as the running config's, alone.
    pub fn set_config_hash(&self, hash: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[hash]).set(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_handles_count_under_the_same_labels_as_a_lookup() {
        let m = Metrics::new();
        let c = RequestCounters::new(&m, 2, 1);
        c.observe(Some((1, "orders")), Some((0, "web")), "proxied", 0.001);
        c.observe(Some((1, "orders")), Some((0, "web")), "proxied", 0.001);
        c.observe(Some((0, "public")), None, "public", 0.001);
        c.observe(Some((1, "orders")), Some((0, "web")), "forbidden", 0.001);
        c.observe(None, None, "no_route", 0.001);
        // An index the table does not know still counts, by its labels.
        c.observe(Some((7, "late")), Some((5, "other")), "proxied", 0.001);
        assert_eq!(
            m.requests
                .with_label_values(&["orders", "web", "proxied"])
                .get(),
            2
        );
        assert_eq!(
            m.requests
                .with_label_values(&["public", "-", "public"])
                .get(),
            1
        );
        assert_eq!(
            m.requests
                .with_label_values(&["orders", "web", "forbidden"])
                .get(),
            1
        );
        assert_eq!(
            m.requests.with_label_values(&["-", "-", "no_route"]).get(),
            1
        );
        assert_eq!(
            m.requests
                .with_label_values(&["late", "other", "proxied"])
                .get(),
            1
        );
        assert_eq!(
            m.latency.with_label_values(&["proxied"]).get_sample_count(),
            3
        );
        assert_eq!(
            m.latency.with_label_values(&["public"]).get_sample_count(),
            1
        );
        // A pair never seen has no series.
        assert!(!m.render().contains("route=\"public\",client=\"web\""));
    }
}
