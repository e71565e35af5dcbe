//! The config file's format: plain serde structs mirroring the TOML, before validation.
//!
//! Every table denies unknown keys so that a typo is an error, not a silently ignored setting.

use serde::Deserialize;

/// `[proxy]`: the listener that takes traffic.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    /// Address to listen on, e.g. `0.0.0.0:8080`.
    pub listen: Option<String>,
    /// Optional TLS for the listener.
    pub tls: Option<TlsFile>,
    /// Worker threads (default: the number of cores).
    pub threads: Option<usize>,
    /// Seconds to wait for in-flight requests on shutdown (default 5).
    pub grace_period: Option<String>,
    /// Trust this listener to be HTTPS behind a TLS terminator (affects the origin of `Host`).
    pub https: Option<bool>,
    /// Add the refusal reason to refused responses in `x-authgate-reason` (operators only).
    pub debug_reason_header: Option<bool>,
    /// Peer addresses or CIDR ranges whose `X-Forwarded-Proto` / `X-Forwarded-Host` are believed.
    pub trusted_proxies: Option<Vec<String>>,
}

/// TLS certificate and key files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`); default true.
    pub http2: Option<bool>,
}

/// `[admin]`: metrics and health.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Address to listen on, e.g. `127.0.0.1:9090`.
    pub listen: Option<String>,
}

/// `[idp]`: the identity provider.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdpFile {
    /// The issuer, exactly as it appears in tokens' `iss`.
    pub issuer: Option<String>,
    /// Where the OpenID configuration is (default `{issuer}/.well-known/openid-configuration`).
    pub discovery_url: Option<String>,
    /// JWKS location; skips discovery for keys when set.
    pub jwks_url: Option<String>,
    /// Accepted `aud` values of access tokens.
    pub audience: Option<StringOrList>,
    /// Live ABAC check endpoint.
    pub check_permission_url: Option<String>,
    /// API-key exchange endpoint.
    pub api_key_exchange_url: Option<String>,
    /// Timeout of every call to the IdP, e.g. `"3s"`.
    pub timeout: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, e.g. `"30s"`.
    pub leeway: Option<String>,
    /// How often the JWKS is refreshed in the background, e.g. `"5m"`.
    pub jwks_refresh_interval: Option<String>,
    /// Least time between two fetches caused by an unknown `kid`, e.g. `"10s"`.
    pub jwks_min_refetch_interval: Option<String>,
    /// Signing algorithms accepted (default: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA).
    pub algorithms: Option<Vec<String>>,
    /// What the sign-in chooser calls this provider (default: the issuer's host).
    pub display_name: Option<String>,
}

/// `[[providers]]`: a sign-in provider beside `[idp]` (which is the provider named `idp`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    /// The name clients use in `[[clients.providers]]`.
    pub name: Option<String>,
    /// `"github"`: GitHub's OAuth apps (github.com, GitHub Enterprise Server, Gitea, Forgejo).
    pub kind: Option<String>,
    /// Where the OAuth endpoints are (default `https://github.com`).
    pub base_url: Option<String>,
    /// Where the REST API is (default `https://api.github.com`).
    pub api_url: Option<String>,
    /// What the sign-in chooser calls it (default `GitHub`).
    pub display_name: Option<String>,
    /// Timeout of every call to the provider, e.g. `"5s"`.
    pub timeout: Option<String>,
    /// How often a session is checked again against the API, e.g. `"5m"` (the default).
    pub revalidate_interval: Option<String>,
    /// Believe the forge's `verified` flag on emails (default: true for github.com only; a
    /// Gitea or Forgejo may mark addresses verified that nobody confirmed).
    pub trust_verified_email: Option<bool>,
}

/// A GitHub user, organisation or team: `"octocat"`, `"id:583231"` or
/// `{ name = "octocat", id = 583231 }` (`login` is another word for `name`).
#[derive(Debug, Clone)]
pub enum GitHubRefFile {
    /// A name, or `id:` and the numeric id.
    Text(String),
    /// A name and/or an id.
    Table(GitHubRefTable),
}

/// `{ name = "octocat", id = 583231 }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct GitHubRefTable {
    /// The login, organisation or `org/team-slug`.
    #[serde(alias = "login")]
    pub name: Option<String>,
    /// The numeric id the API gives it.
    pub id: Option<i64>,
}

impl<'de> Deserialize<'de> for GitHubRefFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = GitHubRefFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a name ("octocat"), an id ("id:583231") or a table ({ name = "octocat", id = 583231 })"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GitHubRefFile, E> {
                Ok(GitHubRefFile::Text(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<GitHubRefFile, A::Error> {
                GitHubRefTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(GitHubRefFile::Table)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A string or a list of strings.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum StringOrList {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl StringOrList {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// `[cache]`: bounds of the gateway's caches.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    /// Most verified tokens kept (default 100000).
    pub tokens: Option<u64>,
    /// Most rejected tokens remembered (default 10000).
    pub rejected_tokens: Option<u64>,
    /// How long a rejected token is remembered, e.g. `"30s"`.
    pub rejected_ttl: Option<String>,
}

/// `[headers]`: identity headers sent upstream.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HeadersFile {
    /// Prefix of every identity header; client-sent headers with it are stripped (default `x-auth-`).
    pub prefix: Option<String>,
    /// Forward the caller's `Authorization` header upstream (default false).
    pub forward_token: Option<bool>,
    /// What to do with request headers whose names contain `_`: `"drop"` (default), `"reject"` (400) or `"allow"`.
    pub with_underscores: Option<String>,
    /// More header names the upstream must never receive from a caller.
    pub strip: Option<Vec<String>>,
    /// Also strip the well-known identity headers of other proxies (default true).
    pub strip_defaults: Option<bool>,
    /// An email its provider has not verified: `"omit"` it (default) or `"send"` it, marked
    /// `{prefix}email-verified: false`.
    pub unverified_email: Option<String>,
}

/// `[[clients]]`: one client app.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// Name used in headers, metrics and logs.
    pub name: Option<String>,
    /// Origins (`scheme://host[:port]`) this app is served from.
    pub origins: Option<Vec<String>>,
    /// OAuth client id at the IdP.
    pub client_id: Option<String>,
    /// OAuth client secret, usually `${ENV_VAR}`.
    pub client_secret: Option<String>,
    /// Permission namespace (default `client_<client_id>`).
    pub namespace: Option<String>,
    /// Path of the login callback on the client's origins (default `/_authgate/callback`).
    pub redirect_path: Option<String>,
    /// Scopes asked for at login (default `openid email profile offline_access`).
    pub scopes: Option<Vec<String>>,
    /// Client authentication at the token endpoint: `client_secret_basic` (default), `client_secret_post` or `none`.
    pub token_auth: Option<String>,
    /// Accept bearer tokens issued to other clients (`azp` / `client_id`) from this client's origins (default false).
    pub allow_foreign_tokens: Option<bool>,
    /// Where the browser goes after logout (default `/_authgate/signed-out`, the signed-out page);
    /// must not be a protected route.
    pub post_logout_redirect: Option<String>,
    /// The IdP's own sign-out page, offered on the signed-out page when the IdP has no
    /// `end_session_endpoint` (e.g. Auther's `https://auth.example.com/api/auth/sign-out`).
    pub logout_url: Option<String>,
    /// How the signed-out page sends the browser to `logout_url`: `"get"` (a link, default) or `"post"` (a form).
    pub logout_method: Option<String>,
    /// `[[clients.providers]]`: the providers this app signs in with, in the chooser's order
    /// (default: `[idp]` alone, with `client_id` and `client_secret` above).
    pub providers: Option<Vec<ClientProviderFile>>,
    /// GitHub organisations whose members may sign in through a GitHub provider.
    pub allowed_orgs: Option<Vec<GitHubRefFile>>,
    /// GitHub teams (`org/team-slug`) whose members may sign in through a GitHub provider.
    pub allowed_teams: Option<Vec<GitHubRefFile>>,
    /// GitHub logins that may sign in through a GitHub provider.
    pub allowed_users: Option<Vec<GitHubRefFile>>,
    /// `[[clients.grants]]`: permissions given by config to users of any provider.
    pub grants: Option<Vec<GrantFile>>,
    /// The name shown on the gateway's pages for this app (default: `name`).
    pub display_name: Option<String>,
    /// A logo shown on the gateway's pages (an https URL, or http on loopback).
    pub logo_url: Option<String>,
    /// The accent colour of the gateway's pages, `#rgb` or `#rrggbb`.
    pub accent_color: Option<String>,
}

/// `[[clients.providers]]`: one provider a client signs in with, with the client's own
/// credentials there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientProviderFile {
    /// A `[[providers]]` name, or `idp` (which uses the client's own `client_id` and `client_secret`).
    pub name: Option<String>,
    /// This app's OAuth client id at the provider (its own GitHub OAuth app).
    pub client_id: Option<String>,
    /// This app's OAuth client secret there, usually `${ENV_VAR}`.
    pub client_secret: Option<String>,
    /// Scopes asked for (default for GitHub: `read:user user:email`, plus `read:org` when
    /// `allowed_orgs`, `allowed_teams` or an org or team grant needs it).
    pub scopes: Option<Vec<String>>,
}

/// `[[clients.grants]]`: permissions (`resource:action`, in the client's namespace) for the
/// users any of the selectors names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantFile {
    /// The grant's name in logs and metrics; required for a shadow grant or one replaced by one.
    pub name: Option<String>,
    /// `false`: a shadow grant, evaluated, logged and counted but giving nothing (default `true`).
    pub enforce: Option<bool>,
    /// The `name` of an enforced grant of this client that this shadow grant would replace.
    pub replaces: Option<String>,
    /// What is granted: `resource:action`, as routes' `permission`.
    pub permissions: Option<Vec<String>>,
    /// Only users signed in through this provider (a `[[providers]]` name or `idp`).
    pub provider: Option<String>,
    /// Subjects (`sub`; GitHub's numeric user id); needs `provider`.
    pub subjects: Option<Vec<String>>,
    /// Verified email addresses.
    pub emails: Option<Vec<String>>,
    /// Domains of verified email addresses.
    pub email_domains: Option<Vec<String>>,
    /// Values of the token's `groups` claim.
    pub groups: Option<Vec<String>>,
    /// GitHub users: logins or ids.
    pub users: Option<Vec<GitHubRefFile>>,
    /// GitHub organisations: names or ids.
    pub orgs: Option<Vec<GitHubRefFile>>,
    /// GitHub teams: `org/team-slug` or ids.
    pub teams: Option<Vec<GitHubRefFile>>,
}

/// `[session]`: browser sessions and the login flow.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// Cookie name (default `authgate`, sent as `__Host-authgate` over HTTPS).
    pub cookie_name: Option<String>,
    /// Longest a session lives, e.g. `"12h"`.
    pub lifetime: Option<String>,
    /// A session unused this long ends, e.g. `"1h"`.
    pub idle_timeout: Option<String>,
    /// Most sessions kept in memory.
    pub max_sessions: Option<u64>,
    /// Serve session cookies without `Secure` over plain http (local development only).
    pub allow_insecure_http: Option<bool>,
    /// Refresh the access token this long before it expires, e.g. `"30s"`.
    pub refresh_before: Option<String>,
    /// How long a started login may take, e.g. `"10m"`.
    pub login_timeout: Option<String>,
    /// How often an open WebSocket re-reads the session that authorised it, e.g. `"15s"`: a
    /// socket outlives its session's end at another instance by at most this long.
    pub socket_recheck: Option<String>,
    /// Most logins one browser may have in flight at once (one cookie each).
    pub max_pending_logins: Option<usize>,
    /// Key sealing the login cookies: 32 random bytes in base64, usually `${AUTHGATE_LOGIN_KEY}`
    /// (default: generated at start; several instances need the same key).
    pub login_key: Option<String>,
    /// Where sessions live: `"memory"` (default, this process) or `"redis"` (shared by instances).
    pub store: Option<String>,
    /// `[session.redis]`: the Redis (or Valkey) the sessions live in with `store = "redis"`.
    pub redis: Option<RedisFile>,
    /// Most sign-in code exchanges (token endpoint calls) one client IP may have in flight.
    pub caller_code_exchanges_in_flight: Option<u32>,
    /// Most sign-in code exchanges one client IP may start a second.
    pub caller_code_exchanges_per_second: Option<u32>,
    /// Most sign-in code exchanges in flight, all callers together.
    pub code_exchanges_in_flight: Option<u32>,
    /// Most sign-in code exchanges started a second, all callers together.
    pub code_exchanges_per_second: Option<u32>,
}

/// `[session.redis]`: the shared session store.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS), usually `${REDIS_URL}`.
    pub url: Option<String>,
    /// Prefix of every key the gateway writes (default `authgate:`), so gateways can share a Redis.
    pub prefix: Option<String>,
    /// 32 random bytes in base64, usually `${AUTHGATE_SESSION_KEY}`: encrypts the sessions and
    /// keys their names; every instance sharing the sessions needs the same key.
    pub key: Option<String>,
    /// Time to connect, e.g. `"1s"`.
    pub connect_timeout: Option<String>,
    /// Time for one command's answer, e.g. `"500ms"`.
    pub timeout: Option<String>,
    /// PEM file of the CA certificates a `rediss://` server's certificate is checked against
    /// (instead of the system's roots), for a Redis with a private CA.
    pub ca_file: Option<String>,
}

/// `[[upstreams]]`: one upstream service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// Name routes refer to.
    pub name: Option<String>,
    /// `host:port` addresses, load balanced as `selection` says.
    pub addresses: Option<Vec<String>>,
    /// `"round_robin"` (default) or `"least_connections"`.
    pub selection: Option<String>,
    /// How many other addresses an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) tries
    /// when it cannot connect (default 1; 0 turns retries off).
    pub retries: Option<u32>,
    /// Speak HTTP/2 to the upstream: negotiated by ALPN over TLS, prior knowledge (h2c) without.
    pub http2: Option<bool>,
    /// `[upstreams.health_check]`: active HTTP checks taking dead addresses out of rotation.
    pub health_check: Option<HealthCheckFile>,
    /// Connect with TLS.
    pub tls: Option<bool>,
    /// SNI and certificate name for TLS (default: the first address's host).
    pub sni: Option<String>,
    /// PEM file of the CA certificates the upstream's certificate must chain to, instead of
    /// the platform's roots (an internal CA).
    pub ca_file: Option<String>,
    /// Connect timeout, e.g. `"2s"`.
    pub connect_timeout: Option<String>,
    /// Read timeout, e.g. `"30s"`.
    pub read_timeout: Option<String>,
    /// The upstream may read Windows spellings of a path as another path (IIS, NTFS: trailing
    /// `.` or space, 8.3 short names such as `PRIVAT~1`, `::$DATA` streams): such segments are
    /// refused with 400 (default true; false when the upstream is known to serve them as
    /// written).
    pub windows_paths: Option<bool>,
    /// The upstream may serve `/x.json` as `/x` (Rails, Spring suffix patterns, Django REST
    /// format suffixes): a path whose final extension changes the route is refused with 400
    /// (default true).
    pub format_suffixes: Option<bool>,
    /// The upstream may honour a `_method` parameter (Rails, Laravel, Symfony): on routes with a
    /// method list, `_method` in the query or in a POST's form or JSON body is refused with 400
    /// (default true).
    pub method_overrides: Option<bool>,
}

/// `[log]`: how the gateway writes its log.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `"text"` (default: one human-readable line per event) or `"json"` (one JSON object per line).
    pub format: Option<String>,
}

/// `[upstreams.health_check]`: an active HTTP health check of every address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    /// Path requested with GET, e.g. `"/healthz"`; a 200 answer is healthy.
    pub path: Option<String>,
    /// Time between checks (default `"5s"`).
    pub interval: Option<String>,
    /// Connect and read timeout of one check (default `"1s"`).
    pub timeout: Option<String>,
    /// Consecutive failed checks that take an address out (default 3).
    pub unhealthy_threshold: Option<usize>,
    /// Consecutive passed checks that bring it back (default 2).
    pub healthy_threshold: Option<usize>,
    /// `Host` header of the check (default: the upstream's `sni`, or the address's host).
    pub host: Option<String>,
}

/// `[[routes]]`: one route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Name for metrics and logs (default `METHODS path`).
    pub name: Option<String>,
    /// Host this route applies to (default: any host).
    pub host: Option<String>,
    /// Path pattern: literal segments, `{param}` captures, a final `*` for any tail.
    pub path: Option<String>,
    /// Methods (default: any).
    pub methods: Option<Vec<String>>,
    /// Upstream name.
    pub upstream: Option<String>,
    /// `"none"` (public), `"authenticated"` (any valid identity) or absent (needs `permission`).
    pub auth: Option<String>,
    /// Required permission, `resource:action`, resolved in the client's namespace.
    pub permission: Option<String>,
    /// Path capture naming the entity's id, for `type:id` permission keys.
    pub entity_id: Option<String>,
    /// ABAC attributes sent to the IdP's live check: name → `path:<capture>`, `query:<name>`,
    /// `header:<name>` or `body:<field.path>` (JSON bodies only).
    pub attributes: Option<std::collections::BTreeMap<String, String>>,
    /// Largest request body read for `body:` attributes, in bytes (default and maximum 65536).
    pub body_limit: Option<u64>,
    /// What an unavailable IdP means for this route's live checks: `"deny"` (default) or `"allow"`.
    pub on_error: Option<String>,
    /// Inject a short-lived JWT signed by the gateway describing the caller and the decision.
    pub signed_identity: Option<bool>,
    /// Names of the client apps this route serves (default: every client). A credential bound
    /// to no client (an API key) is decided in the namespace of the route's only client.
    pub clients: Option<Vec<String>>,
    /// Accept `;` path parameters (`/a;jsessionid=1/b`) for legacy apps (default false: 400).
    pub path_params: Option<bool>,
    /// Send a browser session's access token (the IdP's, or GitHub's for a GitHub sign-in)
    /// upstream as `Authorization: Bearer` (default false: it never leaves the gateway).
    pub forward_session_token: Option<bool>,
    /// Close an upgraded connection (a WebSocket) when the credential that authorised it
    /// expires (default false: an open socket outlives it).
    pub websocket_close_at_expiry: Option<bool>,
    /// `false`: a shadow rule. The decision is made, logged and counted, and the request is
    /// proxied as if allowed (default true).
    pub enforce: Option<bool>,
}

/// `[abac]`: the live permission check.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AbacFile {
    /// How long an `allowed` decision is reused, e.g. `"30s"`; `"0s"` disables.
    pub allow_ttl: Option<String>,
    /// How long a denial is reused, e.g. `"10s"`; `"0s"` disables.
    pub deny_ttl: Option<String>,
    /// Most decisions kept.
    pub cache_size: Option<u64>,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: Option<u32>,
    /// How long the breaker stays open before one trial call, e.g. `"10s"`.
    pub breaker_cooldown: Option<String>,
    /// Most uncached checks one caller (its verified subject) may have waiting on the IdP.
    pub caller_checks_in_flight: Option<u32>,
    /// Most uncached checks one caller may start a second.
    pub caller_checks_per_second: Option<u32>,
}

/// `[api_keys]`: machine callers.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    /// Header carrying the key (default `x-api-key`).
    pub header: Option<String>,
    /// Accepted `aud` of exchanged tokens (default: `idp.audience`).
    pub audience: Option<StringOrList>,
    /// How long a refused key is remembered, e.g. `"30s"`.
    pub failure_ttl: Option<String>,
    /// Most keys cached.
    pub cache_size: Option<u64>,
    /// Shortest key sent to the exchange; shorter ones are refused (401) without a call.
    pub key_min_length: Option<usize>,
    /// Longest key sent to the exchange; longer ones are refused (401) without a call.
    pub key_max_length: Option<usize>,
    /// Most exchanges of uncached keys one client IP may have in flight.
    pub caller_exchanges_in_flight: Option<u32>,
    /// Most exchanges of uncached keys one client IP may start a second.
    pub caller_exchanges_per_second: Option<u32>,
    /// Most exchanges of uncached keys in flight, all callers together.
    pub exchanges_in_flight: Option<u32>,
    /// Most exchanges of uncached keys started a second, all callers together.
    pub exchanges_per_second: Option<u32>,
}

/// `[identity_jwt]`: the gateway's own signing key for identity assertions to upstreams.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityJwtFile {
    /// `"ES256"` (default) or `"EdDSA"`.
    pub algorithm: Option<String>,
    /// PKCS#8 PEM private key; without it a key is generated at start.
    pub key_file: Option<String>,
    /// Retired public keys still published (PKCS#8 PEM private keys of the same algorithm).
    pub previous_key_files: Option<Vec<String>>,
    /// Lifetime of each assertion, e.g. `"60s"`.
    pub lifetime: Option<String>,
    /// `iss` of the assertions (default `authgate`).
    pub issuer: Option<String>,
    /// Header the assertion is sent in (default `{prefix}jwt`).
    pub header: Option<String>,
}
