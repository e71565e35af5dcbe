//! What one request carries from phase to phase.

use crate::authz::permissions::PermissionNames;
use crate::identity::credentials::Caller;
use std::sync::Arc;
use std::time::Instant;

/// Per-request state, filled in as the request moves through the gateway.
pub struct RequestCtx {
    /// The gateway (config generation) this request started with; a reload never changes it mid-request.
    pub gateway: Option<Arc<super::Gateway>>,
    /// When the request arrived.
    pub started: Instant,
    /// The id sent back in `x-request-id` and written to logs.
    pub request_id: String,
    /// Index of the matched route.
    pub route: Option<usize>,
    /// Index of the calling client app.
    pub client: Option<usize>,
    /// The normalised path, when it differs from the one received.
    pub normalized_path: Option<String>,
    /// `Host` for the upstream when it differs from the one received (absolute-form, trailing dot, case).
    pub upstream_host: Option<String>,
    /// The verified caller, with the credential it presented.
    pub caller: Option<Caller>,
    /// The permission that let the request through, `entity:action`.
    pub granted: Option<Arc<PermissionNames>>,
    /// What the caller presented: `bearer`, `api_key` or `session` (`-` before it did), set
    /// before it is verified so that a refused credential is logged by kind.
    pub credential: &'static str,
    /// How the permission was decided: `static`, `abac`, `abac-unavailable-allowed`, `authenticated`.
    pub decision: &'static str,
    /// Whether a live decision came from the cache.
    pub abac_cached: Option<bool>,
    /// The entity and permission the route required, for logs.
    pub required: Option<Arc<PermissionNames>>,
    /// How the request ended, for metrics.
    pub outcome: &'static str,
    /// The request arrived over HTTPS (directly, or as a trusted proxy says).
    pub https: bool,
    /// The request came from one of the configured trusted proxies (its `X-Forwarded-*` count).
    pub trusted_proxy: bool,
    /// `Set-Cookie` values to send with the response.
    pub set_cookies: Vec<String>,
    /// The registered origin to answer with CORS headers.
    pub cors_origin: Option<String>,
    /// The client app was settled against the caller's credential (the binding step passed).
    pub client_settled: bool,
    /// A shadow rule let through a caller whose credential was not verified.
    pub shadow_unverified: bool,
    /// Upstream addresses tried so far (retries after connect failures).
    pub upstream_tries: u32,
    /// Index of the upstream address last picked.
    pub peer_index: Option<usize>,
    /// Counts the request in flight on its address (least-connections upstreams).
    pub lease: Option<crate::upstream::Lease>,
    /// When the request was handed to its upstream (the latest try).
    pub upstream_started: Option<Instant>,
    /// An upgraded connection on a `websocket_close_at_expiry` route: when it must end.
    pub socket_deadline: Option<super::expiry::Deadline>,
}

impl RequestCtx {
    /// A fresh context.
    pub fn new() -> RequestCtx {
        RequestCtx {
            gateway: None,
            started: Instant::now(),
            request_id: String::new(),
            route: None,
            client: None,
            normalized_path: None,
            upstream_host: None,
            caller: None,
            granted: None,
            credential: "-",
            decision: "-",
            abac_cached: None,
            required: None,
            outcome: "proxied",
            https: false,
            trusted_proxy: false,
            set_cookies: Vec::new(),
            cors_origin: None,
            client_settled: false,
            shadow_unverified: false,
            upstream_tries: 0,
            peer_index: None,
            lease: None,
            upstream_started: None,
            socket_deadline: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx::new()
    }
}
