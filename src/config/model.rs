//! The validated config the gateway runs on: every value typed, every reference resolved.
//!
//! Built from [`super::file`] by [`super::validate`]; a `Config` that exists is a config that
//! passed every rule.

use crate::origin::{Origin, OriginPattern};
use crate::pattern::PathPattern;
use crate::secret::Secret;
use crate::trusted_proxies::TrustedProxies;
use jsonwebtoken::Algorithm;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// The whole validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The proxy listener.
    pub proxy: ProxySettings,
    /// The admin listener.
    pub admin: AdminSettings,
    /// The identity provider.
    pub idp: IdpSettings,
    /// The sign-in providers: `[idp]` first (named `idp`), then `[[providers]]` in file order.
    pub providers: Vec<ProviderSettings>,
    /// Cache bounds.
    pub cache: CacheSettings,
    /// Identity headers.
    pub headers: HeaderSettings,
    /// Client apps, in file order.
    pub clients: Vec<ClientSettings>,
    /// Upstreams, in file order.
    pub upstreams: Vec<UpstreamSettings>,
    /// Routes, in file order.
    pub routes: Vec<RouteSpec>,
    /// Live ABAC checks.
    pub abac: AbacSettings,
    /// API keys.
    pub api_keys: ApiKeySettings,
    /// Identity assertions signed by the gateway.
    pub identity_jwt: IdentityJwtSettings,
    /// Browser sessions and login.
    pub session: SessionSettings,
    /// Index of the client that requests from unknown origins are mapped to, when configured.
    /// Its session cookies still change state (or open a WebSocket) only from its own origins
    /// (`clients::ClientRegistry::same_origin`).
    pub default_client: Option<usize>,
    /// The log's format.
    pub log: LogSettings,
    /// What is valid but likely not meant (`authgate check` prints them).
    pub warnings: Vec<ConfigWarning>,
}

/// A valid setting that is likely not what the operator means, with where it is (shown as
/// `warning: {at}: {message}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The key path, e.g. `clients[0].allowed_users[1]`.
    pub at: String,
    /// The line in the file, when known.
    pub line: Option<usize>,
    /// What is likely wrong and what to write instead.
    pub message: String,
}

impl Config {
    /// Logs each of [`Config::warnings`] (at start-up and at each reload), naming `file`.
    pub fn log_warnings(&self, file: &std::path::Path) {
        for w in &self.warnings {
            tracing::warn!(file = %file.display(), line = w.line, at = %w.at, "config: {}", w.message);
        }
    }
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "warning: {}: {}", self.at, self.message)
    }
}

/// How the gateway writes its log (to standard error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// The log's line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the event's fields).
    Json,
}

/// Live ABAC checks.
#[derive(Debug, Clone)]
pub struct AbacSettings {
    /// Reuse of an allow decision (zero: not reused).
    pub allow_ttl: Duration,
    /// Reuse of a deny decision (zero: not reused).
    pub deny_ttl: Duration,
    /// Most decisions kept.
    pub cache_size: u64,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// Open time before a trial call.
    pub breaker_cooldown: Duration,
    /// Uncached checks one caller may have in flight and start a second.
    pub caller_checks: CallerBound,
}

/// A bound on one caller's calls of one kind to the IdP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerBound {
    /// Calls in flight at once (at least 1).
    pub in_flight: u32,
    /// Calls started a second (at least 1), a second's worth at once.
    pub per_second: u32,
}

/// A bound on the calls of one kind to the IdP: each caller's, and everyone's together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadBound {
    /// Each caller's.
    pub caller: CallerBound,
    /// Everyone's together.
    pub total: CallerBound,
}

/// API keys.
#[derive(Debug, Clone)]
pub struct ApiKeySettings {
    /// Lowercase header name.
    pub header: String,
    /// Accepted audiences of exchanged tokens.
    pub audiences: Vec<String>,
    /// How long a refused key is remembered.
    pub failure_ttl: Duration,
    /// Most keys cached.
    pub cache_size: u64,
    /// Shortest key sent to the exchange.
    pub key_min_length: usize,
    /// Longest key sent to the exchange.
    pub key_max_length: usize,
    /// Exchanges of uncached keys, per client IP and in total.
    pub exchanges: LoadBound,
}

/// The gateway's identity assertions.
#[derive(Debug, Clone)]
pub struct IdentityJwtSettings {
    /// Signing algorithm (ES256 or EdDSA).
    pub algorithm: jsonwebtoken::Algorithm,
    /// Signing key file, or `None` to generate one at start.
    pub key_file: Option<PathBuf>,
    /// Retired keys still published.
    pub previous_key_files: Vec<PathBuf>,
    /// Assertion lifetime.
    pub lifetime: Duration,
    /// `iss`.
    pub issuer: String,
    /// Lowercase header name.
    pub header: String,
}

/// Browser sessions and the login flow.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Cookie name without the `__Host-` prefix.
    pub cookie_name: String,
    /// Longest a session lives.
    pub lifetime: Duration,
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// Most sessions kept in memory.
    pub max_sessions: u64,
    /// Cookies without `Secure` over plain http (local development only).
    pub allow_insecure_http: bool,
    /// Refresh the access token this long before it expires.
    pub refresh_before: Duration,
    /// How long a started login may take.
    pub login_timeout: Duration,
    /// How often an open WebSocket re-reads the session that authorised it (a socket outlives
    /// its session's end at another instance by at most this long).
    pub socket_recheck: Duration,
    /// Most logins one browser may have in flight (one login cookie each).
    pub max_pending_logins: usize,
    /// Key sealing the login cookies (base64 of 32 bytes, validated); `None`: generated at start.
    pub login_key: Option<Secret>,
    /// Where sessions live.
    pub store: SessionStoreSettings,
    /// Sign-in code exchanges (token endpoint calls), per client IP and in total.
    pub code_exchanges: LoadBound,
}

/// Where sessions live.
#[derive(Debug, Clone, Default)]
pub enum SessionStoreSettings {
    /// In this process (the default).
    #[default]
    Memory,
    /// In Redis, shared by every instance configured alike.
    Redis(RedisSettings),
}

/// The Redis session store.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL (may carry a password: a secret).
    pub url: Secret,
    /// Prefix of every key written.
    pub prefix: String,
    /// Encryption and key-naming key (base64 of 32 bytes, validated).
    pub key: Secret,
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Time for one command's answer.
    pub timeout: Duration,
    /// CA certificates (PEM) for `rediss://` instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// The name of the provider `[idp]` is.
pub const IDP_PROVIDER: &str = "idp";

/// A sign-in provider.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The name clients use.
    pub name: String,
    /// What the sign-in chooser calls it.
    pub display_name: String,
    /// What kind it is, with its settings.
    pub kind: ProviderKind,
}

/// The kinds of sign-in provider.
#[derive(Debug, Clone)]
pub enum ProviderKind {
    /// OpenID Connect: the `[idp]`.
    Oidc,
    /// GitHub's OAuth apps and REST API (or a compatible forge's).
    GitHub(Box<GitHubSettings>),
}

/// A GitHub (or GitHub-compatible) provider.
#[derive(Debug, Clone)]
pub struct GitHubSettings {
    /// Where `/login/oauth/authorize` and `/login/oauth/access_token` are.
    pub base_url: Url,
    /// Where the REST API (`/user`, ...) is.
    pub api_url: Url,
    /// Timeout of every call.
    pub timeout: Duration,
    /// How often a session is checked again against the API.
    pub revalidate_interval: Duration,
    /// Take the forge's `verified` flag on emails as proof (`trust_verified_email`; default
    /// true for github.com only): without it the user's email is neither read nor used.
    pub trust_verified_email: bool,
}

/// A GitHub user, organisation or team named in the config: by name (`"octocat"`,
/// `"acme/billing"` for a team), by numeric id (`"id:583231"`), or both
/// (`{ name = "octocat", id = 583231 }`). An id matches that account whatever it is called
/// now; a name alone is pinned to the id it is first seen with (see `identity::github::Pins`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitHubRef {
    /// The name, lowercase.
    pub name: Option<String>,
    /// The numeric id.
    pub id: Option<u64>,
}

impl GitHubRef {
    /// A reference by name alone.
    pub fn name(name: &str) -> GitHubRef {
        GitHubRef {
            name: Some(name.to_ascii_lowercase()),
            id: None,
        }
    }
}

impl From<&str> for GitHubRef {
    /// [`GitHubRef::name`].
    fn from(name: &str) -> GitHubRef {
        GitHubRef::name(name)
    }
}

impl std::fmt::Display for GitHubRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, self.id) {
            (Some(n), Some(id)) => write!(f, "{n:?} (id {id})"),
            (Some(n), None) => write!(f, "{n:?}"),
            (None, Some(id)) => write!(f, "id {id}"),
            (None, None) => write!(f, "nobody"),
        }
    }
}

/// One provider a client signs in with.
#[derive(Debug, Clone)]
pub struct ClientSignIn {
    /// Index into [`Config::providers`].
    pub provider: usize,
    /// The provider's name.
    pub name: String,
    /// The client's OAuth client id there (for `idp`: the client's `client_id`).
    pub client_id: String,
    /// The client's secret there.
    pub client_secret: Secret,
    /// Scopes asked for (for `idp`: the client's `scopes`).
    pub scopes: Vec<String>,
}

/// Who may sign in to a client through a GitHub provider (all empty: any GitHub user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowRules {
    /// Organisations.
    pub orgs: Vec<GitHubRef>,
    /// Teams (names as `org/team-slug`).
    pub teams: Vec<GitHubRef>,
    /// Users (names are logins).
    pub users: Vec<GitHubRef>,
}

impl AllowRules {
    /// True when no rule is set.
    pub fn is_empty(&self) -> bool {
        self.orgs.is_empty() && self.teams.is_empty() && self.users.is_empty()
    }
}

/// Permissions given by config to the users a grant's selectors name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSpec {
    /// The grant's name (`name`), for logs and metrics.
    pub name: Option<String>,
    /// A shadow grant (`enforce = false`): evaluated and counted, never applied.
    pub shadow: bool,
    /// The index, among the client's grants, of the enforced grant this shadow grant would replace.
    pub replaces: Option<usize>,
    /// `(resource, action)` pairs, in the client's namespace.
    pub permissions: Vec<(String, String)>,
    /// Only users of this provider.
    pub provider: Option<String>,
    /// Subjects.
    pub subjects: Vec<String>,
    /// Verified emails, lowercase.
    pub emails: Vec<String>,
    /// Domains of verified emails, lowercase.
    pub email_domains: Vec<String>,
    /// `groups` claim values.
    pub groups: Vec<String>,
    /// GitHub users (names are logins).
    pub users: Vec<GitHubRef>,
    /// GitHub organisations.
    pub orgs: Vec<GitHubRef>,
    /// GitHub teams (names as `org/team-slug`).
    pub teams: Vec<GitHubRef>,
}

impl GrantSpec {
    /// True when the grant needs the user's GitHub organisations or teams.
    pub fn needs_orgs(&self) -> bool {
        !self.orgs.is_empty() || !self.teams.is_empty()
    }
}

/// How the gateway's pages look for a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branding {
    /// The app's name on the pages.
    pub display_name: String,
    /// A logo URL.
    pub logo_url: Option<Url>,
    /// The accent colour, `#rgb` or `#rrggbb`.
    pub accent_color: Option<String>,
}

/// How a client authenticates at the IdP's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    /// HTTP Basic with the URL-encoded id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A public client: PKCE only.
    None,
}

/// The proxy listener.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS certificate and key, when the listener serves HTTPS.
    pub tls: Option<TlsFiles>,
    /// Worker threads.
    pub threads: usize,
    /// Time given to in-flight requests on shutdown.
    pub grace_period: Duration,
    /// Requests arrive over HTTPS (own TLS, or a TLS terminator in front).
    pub https: bool,
    /// Send refusal reasons in `x-authgate-reason`.
    pub debug_reason_header: bool,
    /// Peers whose `X-Forwarded-Proto` / `X-Forwarded-Host` are believed.
    pub trusted_proxies: TrustedProxies,
}

/// TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Offer HTTP/2 by ALPN (`h2` preferred, `http/1.1` allowed); off: HTTP/1.1 only.
    pub http2: bool,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Listen address.
    pub listen: SocketAddr,
}

/// The identity provider.
#[derive(Debug, Clone)]
pub struct IdpSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// Discovery document location.
    pub discovery_url: Url,
    /// JWKS location, when configured directly (skips discovery for keys).
    pub jwks_url: Option<Url>,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Live ABAC check endpoint.
    pub check_permission_url: Option<Url>,
    /// API-key exchange endpoint.
    pub api_key_exchange_url: Option<Url>,
    /// Timeout of each IdP call.
    pub timeout: Duration,
    /// Clock skew tolerated.
    pub leeway: Duration,
    /// Background JWKS refresh period.
    pub jwks_refresh_interval: Duration,
    /// Least time between two unknown-`kid` fetches.
    pub jwks_min_refetch_interval: Duration,
    /// Accepted signing algorithms (never `none` or HMAC).
    pub algorithms: Vec<Algorithm>,
    /// What the sign-in chooser calls the IdP.
    pub display_name: String,
}

/// Cache bounds.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most verified tokens kept.
    pub tokens: u64,
    /// Most rejected tokens remembered.
    pub rejected_tokens: u64,
    /// How long a rejected token is remembered.
    pub rejected_ttl: Duration,
}

/// Identity headers.
#[derive(Debug, Clone)]
pub struct HeaderSettings {
    /// Lowercase prefix of every identity header.
    pub prefix: String,
    /// Forward the caller's bearer token upstream.
    pub forward_token: bool,
    /// What happens to request headers whose names contain `_`.
    pub underscores: Underscores,
    /// More lowercase header names (with `_` folded to `-`) never forwarded from a caller.
    pub strip: Vec<String>,
    /// Also strip [`crate::headers::OTHER_PROXIES_IDENTITY`].
    pub strip_defaults: bool,
    /// Whether an email its provider has not verified goes upstream (header and signed identity).
    pub unverified_email: UnverifiedEmail,
}

/// What the upstream gets of an email its provider has not verified (`email_verified` not
/// `true`). A verified email is always sent, with `{prefix}email-verified: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnverifiedEmail {
    /// Left out: no email header, no `email` claim (the default). An upstream keying accounts
    /// on email cannot be handed an address nobody confirmed.
    #[default]
    Omit,
    /// Sent, with `{prefix}email-verified: false` and `email_verified: false` in the signed identity.
    Send,
}

/// What happens to a request header whose name contains `_` (CGI, WSGI, Rack and PHP servers
/// read `x_auth_user` and `x-auth-user` as the same variable), as Envoy's
/// `headers_with_underscores_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underscores {
    /// Not forwarded (the default).
    Drop,
    /// The request is refused with 400.
    Reject,
    /// Forwarded, unless its name with `_` read as `-` is one the gateway strips.
    Allow,
}

/// One client app.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Name.
    pub name: String,
    /// Origins served from.
    pub origins: Vec<Origin>,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret (empty for public clients).
    pub client_secret: Secret,
    /// Permission namespace, e.g. `client_abc`.
    pub namespace: String,
    /// Origin patterns such as `https://*.preview.example.com`.
    pub origin_patterns: Vec<OriginPattern>,
    /// Path of the login callback on the client's origins.
    pub redirect_path: String,
    /// Scopes asked for at login.
    pub scopes: Vec<String>,
    /// Client authentication at the token endpoint.
    pub token_auth: TokenAuth,
    /// Accept bearer tokens issued to other clients from this client's origins.
    pub allow_foreign_tokens: bool,
    /// Path (or URL on the client's origins) the browser goes to after logout.
    pub post_logout_redirect: String,
    /// The IdP's own sign-out page, offered on the signed-out page.
    pub logout_url: Option<Url>,
    /// The signed-out page sends the browser to `logout_url` with a form POST (else a link).
    pub logout_post: bool,
    /// The providers the app signs in with, in the chooser's order (never empty).
    pub sign_in: Vec<ClientSignIn>,
    /// Who may sign in through a GitHub provider.
    pub allowed: AllowRules,
    /// Permissions given by config.
    pub grants: Vec<GrantSpec>,
    /// How the gateway's pages look for the app.
    pub branding: Branding,
}

impl ClientSettings {
    /// True when signing in through GitHub needs the user's organisations and teams
    /// (`read:org`): the allow rules or a grant name some.
    pub fn needs_orgs(&self) -> bool {
        !self.allowed.orgs.is_empty()
            || !self.allowed.teams.is_empty()
            || self.grants.iter().any(GrantSpec::needs_orgs)
    }
}

/// One upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// Name.
    pub name: String,
    /// `host:port` addresses.
    pub addresses: Vec<String>,
    /// TLS to the upstream.
    pub tls: bool,
    /// SNI / certificate name.
    pub sni: String,
    /// The CA certificates (DER, each parsed at load) the upstream's certificate must chain to;
    /// empty: the platform's roots.
    pub ca: Vec<Vec<u8>>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout.
    pub read_timeout: Duration,
    /// How an address is chosen for a request.
    pub selection: Selection,
    /// Other addresses an idempotent request tries when it cannot connect.
    pub retries: u32,
    /// HTTP/2 to the upstream (ALPN over TLS, h2c without).
    pub http2: bool,
    /// The active health check, if any.
    pub health_check: Option<HealthCheckSettings>,
    /// How the upstream may read a request otherwise than the gateway does.
    pub reads: UpstreamReads,
}

/// How an upstream may read a request otherwise than the gateway routes it; where such a
/// reading would reach another route or method, the gateway refuses the request (400). Each
/// is `true` by default, the safe side: an operator who knows the upstream turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamReads {
    /// `windows_paths`: a segment ending in `.` or space, an 8.3 short name (`PRIVAT~1`),
    /// a `:$` stream name: IIS and NTFS serve them as another path.
    pub windows_paths: bool,
    /// `format_suffixes`: `/x.json` served as `/x`.
    pub format_suffixes: bool,
    /// `method_overrides`: `_method` in the query or a POST body turns the method into another.
    pub method_overrides: bool,
}

impl Default for UpstreamReads {
    fn default() -> Self {
        UpstreamReads {
            windows_paths: true,
            format_suffixes: true,
            method_overrides: true,
        }
    }
}

/// How an upstream's address is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Each healthy address in turn.
    RoundRobin,
    /// The healthy address with the fewest requests in flight.
    LeastConnections,
}

/// An upstream's active HTTP health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSettings {
    /// Path requested with GET.
    pub path: String,
    /// `Host` header sent.
    pub host: String,
    /// Time between checks.
    pub interval: Duration,
    /// Connect and read timeout of one check.
    pub timeout: Duration,
    /// Consecutive failures that take an address out.
    pub unhealthy_threshold: usize,
    /// Consecutive passes that bring it back.
    pub healthy_threshold: usize,
}

/// One route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Name for metrics and logs.
    pub name: String,
    /// Lowercase host (without port) the route is limited to.
    pub host: Option<String>,
    /// Path pattern.
    pub path: PathPattern,
    /// Methods; `None` is any.
    pub methods: Option<Vec<http::Method>>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Who may pass.
    pub access: Access,
    /// ABAC attributes taken from the request, by name.
    pub attributes: Vec<(String, AttributeSource)>,
    /// Largest body read for `body:` attributes.
    pub body_limit: usize,
    /// Let requests through when the live check is unavailable.
    pub allow_on_error: bool,
    /// Inject a gateway-signed identity JWT.
    pub signed_identity: bool,
    /// Indices into [`Config::clients`] of the client apps the route serves; `None`: every one.
    pub clients: Option<Vec<usize>>,
    /// Accept `;` path parameters, as long as dropping them reaches this same route and entity.
    pub path_params: bool,
    /// Send a browser session's access token upstream as `Authorization: Bearer`.
    pub forward_session_token: bool,
    /// Close an upgraded connection when the credential that authorised it expires.
    pub websocket_close_at_expiry: bool,
    /// `false`: a shadow rule, whose refusals are logged and counted but not enforced.
    pub enforce: bool,
    /// How the route's upstream may read a request otherwise (its `[[upstreams]]` settings).
    pub upstream_reads: UpstreamReads,
}

/// Where an ABAC attribute comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeSource {
    /// A path capture.
    Path(String),
    /// A query parameter.
    Query(String),
    /// A request header (lowercase).
    Header(String),
    /// A field of the JSON body, as dotted segments.
    Body(Vec<String>),
}

impl RouteSpec {
    /// True when some attribute comes from the body.
    pub fn needs_body(&self) -> bool {
        self.attributes
            .iter()
            .any(|(_, s)| matches!(s, AttributeSource::Body(_)))
    }
}

/// Who may use a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone; no credentials are looked at.
    Public,
    /// Any caller with a valid identity.
    Authenticated,
    /// A caller holding this permission.
    Permission(RequiredPermission),
}

/// A route's permission, before the client's namespace is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredPermission {
    /// Resource, e.g. `invoice` (entity type `{namespace}:invoice`).
    pub resource: String,
    /// Action, e.g. `read`.
    pub action: String,
    /// Path capture holding the entity id, for `type:id` grants.
    pub entity_id: Option<String>,
}
