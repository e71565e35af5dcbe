//! The one place that turns a refusal into an HTTP response: a status, the right
//! `WWW-Authenticate` or `Allow` header, and a body — `application/problem+json` for APIs,
//! a small HTML page for browser navigations. Bodies never contain tokens.

use crate::config::model::Branding;
use http::StatusCode;
use pingora::http::ResponseHeader;
use std::fmt;
use std::sync::Arc;

/// Why a step refused: the error that said so, kept whole (with its `source()` chain) for logs
/// and tests, and shown to people by its `Display`. Built from an error with [`Cause::of`], or
/// from words (`"…".into()`) where no error type stands behind the refusal. Cheap to clone; two
/// causes are equal when they say the same.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

/// A cause that is only words.
#[derive(Debug)]
struct Words(String);

impl fmt::Display for Words {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Words {}

impl Cause {
    /// The refusal's cause is `error`.
    pub fn of(error: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(error))
    }

    /// The error behind the refusal, to follow its `source()` chain.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl From<String> for Cause {
    fn from(words: String) -> Cause {
        Cause(Arc::new(Words(words)))
    }
}

impl From<&str> for Cause {
    fn from(words: &str) -> Cause {
        Cause::from(words.to_string())
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

/// Why the gateway answers itself instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The path could not be normalised safely.
    BadPath(Cause),
    /// A request header the gateway refuses to forward or to guess about.
    BadHeader(Cause),
    /// A transfer coding the gateway does not implement (`Transfer-Encoding: gzip, chunked`): 501.
    UnsupportedTransferCoding(Cause),
    /// `Host` missing on HTTP/1.1, sent twice, or not a valid host.
    BadHost(Cause),
    /// No route for the path.
    NoRoute,
    /// The path is routed for other methods.
    MethodNotAllowed(Vec<http::Method>),
    /// The origin belongs to no configured client.
    UnknownClient(String),
    /// No credentials on a protected route.
    MissingCredentials,
    /// Credentials present but unusable (malformed header, bad token).
    InvalidToken(Cause),
    /// A valid identity without the route's permission.
    Forbidden {
        /// Entity type, e.g. `client_abc:invoice`.
        entity: String,
        /// Permission, e.g. `read`.
        permission: String,
        /// Why, in words.
        reason: String,
    },
    /// The identity provider is needed but unavailable.
    IdpUnavailable(Cause),
    /// The caller has used up its bound of calls to the IdP (429, `Retry-After`).
    TooManyRequests {
        /// Whole seconds until a retry may be admitted.
        retry_after: u64,
        /// Which bound, in words.
        reason: Cause,
    },
    /// The session store (Redis) is needed but unavailable.
    StoreUnavailable,
    /// The upstream could not be reached or failed.
    UpstreamFailed(u16),
    /// A body larger than the route reads for attributes.
    BodyTooLarge(usize),
    /// A body the route cannot read attributes from (415 when not JSON, 400 when broken).
    UnreadableBody {
        /// 400 or 415.
        status: u16,
        /// What is wrong.
        reason: Cause,
    },
    /// A browser navigation without a session: off to the IdP's login page (302).
    LoginRedirect(String),
    /// A session or token issued to another client app than the one calling.
    WrongClient(Cause),
    /// A session cookie on a request that changes state or upgrades, from a page that is not
    /// its client's own (a foreign or `null` `Origin`, none at all).
    CrossSite(Cause),
    /// No client app the route serves can decide the request: an unbound credential on a
    /// route serving several clients, or a client the route does not serve.
    ClientNotServed(Cause),
    /// A value the permission check reads could be read more than one way (400).
    AmbiguousRequest(Cause),
    /// The user signed in at the provider, but the client's rules do not admit them.
    NotAllowed(Cause),
    /// A login could not be completed; `retry` is where to start again.
    LoginFailed {
        /// What went wrong, as a metric label.
        kind: LoginFailure,
        /// What went wrong, for people.
        reason: Cause,
        /// A link that starts a new login.
        retry: Option<String>,
    },
}

/// Why a sign-in failed, from a fixed set: the `reason` label of
/// `authgate_logins_failed_total` (the refusal's text may quote the IdP, which must not mint
/// label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Browser sign-in over plain HTTP without `session.allow_insecure_http`.
    NeedsHttps,
    /// The sign-in asks for a provider the client does not sign in with.
    UnknownProvider,
    /// The sign-in could not be started (its state could not be sealed).
    NotStarted,
    /// The callback lacks `state` or `code`.
    BadResponse,
    /// The login state is unknown, expired, already used, or from another browser.
    ExpiredOrReplayed,
    /// The client the sign-in was for is no longer configured for its origin.
    ClientRemoved,
    /// The client no longer signs in with the provider the sign-in went to.
    ProviderRemoved,
    /// The provider sent the browser back with an OAuth `error`.
    IdpError,
    /// The callback's `iss` names another issuer.
    WrongIssuer,
    /// The OIDC authorization request or code exchange failed.
    OidcError,
    /// The id_token failed verification.
    IdTokenRefused,
    /// GitHub refused the code exchange or the user (not an outage).
    GitHubRefused,
}

impl LoginFailure {
    /// Every reason, for documentation and tests.
    pub const ALL: [LoginFailure; 12] = [
        LoginFailure::NeedsHttps,
        LoginFailure::UnknownProvider,
        LoginFailure::NotStarted,
        LoginFailure::BadResponse,
        LoginFailure::ExpiredOrReplayed,
        LoginFailure::ClientRemoved,
        LoginFailure::ProviderRemoved,
        LoginFailure::IdpError,
        LoginFailure::WrongIssuer,
        LoginFailure::OidcError,
        LoginFailure::IdTokenRefused,
        LoginFailure::GitHubRefused,
    ];

    /// The metric label.
    pub fn as_label(self) -> &'static str {
        match self {
            LoginFailure::NeedsHttps => "needs_https",
            LoginFailure::UnknownProvider => "unknown_provider",
            LoginFailure::NotStarted => "not_started",
            LoginFailure::BadResponse => "bad_response",
            LoginFailure::ExpiredOrReplayed => "expired_or_replayed",
            LoginFailure::ClientRemoved => "client_removed",
            LoginFailure::ProviderRemoved => "provider_removed",
            LoginFailure::IdpError => "idp_error",
            LoginFailure::WrongIssuer => "wrong_issuer",
            LoginFailure::OidcError => "oidc_error",
            LoginFailure::IdTokenRefused => "id_token_refused",
            LoginFailure::GitHubRefused => "github_refused",
        }
    }
}

/// A response ready to write.
pub struct Rendered {
    /// Status and headers.
    pub header: ResponseHeader,
    /// Body.
    pub body: bytes::Bytes,
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadPath(_) | Refusal::BadHeader(_) | Refusal::BadHost(_) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::UnsupportedTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::UnknownClient(_)
            | Refusal::Forbidden { .. }
            | Refusal::WrongClient(_)
            | Refusal::CrossSite(_)
            | Refusal::ClientNotServed(_)
            | Refusal::NotAllowed(_) => StatusCode::FORBIDDEN,
            Refusal::LoginRedirect(_) => StatusCode::FOUND,
            Refusal::LoginFailed { .. } | Refusal::AmbiguousRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::MissingCredentials | Refusal::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Refusal::IdpUnavailable(_) | Refusal::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::UpstreamFailed(code) => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Refusal::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UnreadableBody { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
        }
    }

    /// Whether this refusal is an access decision (who the caller is, which client, which
    /// permission), which a shadow rule records instead of enforcing; the others are about the
    /// request itself (its path, headers, body) and are refused on every route.
    pub fn is_access_decision(&self) -> bool {
        match self {
            Refusal::UnknownClient(_)
            | Refusal::MissingCredentials
            | Refusal::InvalidToken(_)
            | Refusal::Forbidden { .. }
            | Refusal::IdpUnavailable(_)
            | Refusal::StoreUnavailable
            | Refusal::LoginRedirect(_)
            | Refusal::WrongClient(_)
            | Refusal::CrossSite(_)
            | Refusal::ClientNotServed(_)
            | Refusal::NotAllowed(_) => true,
            Refusal::BadPath(_)
            | Refusal::BadHeader(_)
            | Refusal::UnsupportedTransferCoding(_)
            | Refusal::BadHost(_)
            | Refusal::NoRoute
            | Refusal::MethodNotAllowed(_)
            | Refusal::UpstreamFailed(_)
            | Refusal::TooManyRequests { .. }
            | Refusal::BodyTooLarge(_)
            | Refusal::UnreadableBody { .. }
            | Refusal::AmbiguousRequest(_)
            | Refusal::LoginFailed { .. } => false,
        }
    }

    /// A short label for metrics and logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            Refusal::BadPath(_) => "bad_path",
            Refusal::BadHeader(_) => "bad_header",
            Refusal::UnsupportedTransferCoding(_) => "unsupported_transfer_coding",
            Refusal::BadHost(_) => "bad_host",
            Refusal::NoRoute => "no_route",
            Refusal::MethodNotAllowed(_) => "method_not_allowed",
            Refusal::UnknownClient(_) => "unknown_client",
            Refusal::MissingCredentials => "unauthenticated",
            Refusal::InvalidToken(_) => "invalid_token",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::IdpUnavailable(_) => "idp_unavailable",
            Refusal::TooManyRequests { .. } => "too_many_requests",
            Refusal::StoreUnavailable => "session_store_unavailable",
            Refusal::UpstreamFailed(_) => "upstream_error",
            Refusal::BodyTooLarge(_) => "body_too_large",
            Refusal::UnreadableBody { .. } => "bad_body",
            Refusal::LoginRedirect(_) => "login_redirect",
            Refusal::WrongClient(_) => "wrong_client",
            Refusal::CrossSite(_) => "cross_site",
            Refusal::ClientNotServed(_) => "client_not_served",
            Refusal::LoginFailed { .. } => "login_failed",
            Refusal::NotAllowed(_) => "not_allowed",
            Refusal::AmbiguousRequest(_) => "ambiguous_request",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Refusal::BadPath(_) => "Bad request path",
            Refusal::BadHeader(_) => "Bad request header",
            Refusal::UnsupportedTransferCoding(_) => "Transfer coding not implemented",
            Refusal::BadHost(_) => "Bad host",
            Refusal::NoRoute => "Not found",
            Refusal::MethodNotAllowed(_) => "Method not allowed",
            Refusal::UnknownClient(_) => "Unknown client application",
            Refusal::MissingCredentials => "Authentication required",
            Refusal::InvalidToken(_) => "Invalid credentials",
            Refusal::Forbidden { .. } => "Permission denied",
            Refusal::IdpUnavailable(_) => "Identity provider unavailable",
            Refusal::TooManyRequests { .. } => "Too many requests",
            Refusal::StoreUnavailable => "Sessions unavailable",
            Refusal::UpstreamFailed(_) => "Upstream unavailable",
            Refusal::BodyTooLarge(_) => "Request body too large",
            Refusal::UnreadableBody { .. } => "Unreadable request body",
            Refusal::LoginRedirect(_) => "Sign-in required",
            Refusal::WrongClient(_) => "Credentials of another application",
            Refusal::CrossSite(_) => "Cross-site request refused",
            Refusal::ClientNotServed(_) => "Client application not served here",
            Refusal::LoginFailed { .. } => "Sign-in failed",
            Refusal::NotAllowed(_) => "Not allowed",
            Refusal::AmbiguousRequest(_) => "Ambiguous request",
        }
    }

    /// What went wrong and what to do, for people.
    pub fn detail(&self) -> String {
        match self {
            Refusal::BadPath(why) | Refusal::BadHeader(why) | Refusal::BadHost(why) | Refusal::UnsupportedTransferCoding(why) => format!("{why}."),
            Refusal::NoRoute => "No route is configured for this path.".into(),
            Refusal::MethodNotAllowed(allowed) => format!("This path allows {}.", join_methods(allowed)),
            Refusal::UnknownClient(origin) => format!("The origin {origin} is not a registered client application."),
            Refusal::MissingCredentials => "This resource needs credentials: sign in, or send Authorization: Bearer <token>.".into(),
            Refusal::InvalidToken(why) => format!("{}.", capitalise(&why.to_string())),
            Refusal::Forbidden { entity, permission, reason } => {
                format!("Permission {permission:?} on {entity:?} is required: {reason}.")
            }
            Refusal::IdpUnavailable(why) => format!("{}; try again shortly.", capitalise(&why.to_string())),
            Refusal::TooManyRequests { retry_after, reason } => format!("{}; try again in {retry_after} s.", capitalise(&reason.to_string())),
            Refusal::StoreUnavailable => "The session store cannot be reached; try again shortly.".into(),
            Refusal::UpstreamFailed(_) => "The service behind the gateway could not answer.".into(),
            Refusal::BodyTooLarge(limit) => format!("This route reads the request body for its permission check and accepts at most {limit} bytes."),
            Refusal::UnreadableBody { reason, .. } => format!("{}.", capitalise(&reason.to_string())),
            Refusal::LoginRedirect(_) => "Redirecting to sign in.".into(),
            Refusal::WrongClient(why) | Refusal::CrossSite(why) | Refusal::ClientNotServed(why) | Refusal::AmbiguousRequest(why) | Refusal::NotAllowed(why) | Refusal::LoginFailed { reason: why, .. } => {
                format!("{}.", capitalise(&why.to_string()))
            }
        }
    }

    /// Renders the response; `html` for browser navigations; `request_id` ties it to the log.
    pub fn render(&self, realm: &str, html: bool, request_id: &str) -> Rendered {
        self.render_with(realm, html, request_id, false)
    }

    /// Like [`Refusal::render`]; `debug_reason` adds the reason in `x-authgate-reason`
    /// (an operator's choice: it tells callers why they were refused).
    pub fn render_with(
        &self,
        realm: &str,
        html: bool,
        request_id: &str,
        debug_reason: bool,
    ) -> Rendered {
        self.render_branded(realm, html, request_id, debug_reason, None)
    }

    /// Like [`Refusal::render_with`]; a browser's page carries the client's `brand` when known.
    pub fn render_branded(
        &self,
        realm: &str,
        html: bool,
        request_id: &str,
        debug_reason: bool,
        brand: Option<&Branding>,
    ) -> Rendered {
        let status = self.status();
        let mut header = head(status, 6);
        match self {
            Refusal::MissingCredentials => {
                let _ =
                    header.insert_header("www-authenticate", format!("Bearer realm=\"{realm}\""));
            }
            Refusal::InvalidToken(why) => {
                let _ = header.insert_header(
                    "www-authenticate",
                    format!("Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"", why.to_string().replace('"', "'")),
                );
            }
            Refusal::Forbidden { .. } => {
                let _ = header.insert_header(
                    "www-authenticate",
                    format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\""),
                );
            }
            Refusal::MethodNotAllowed(allowed) => {
                let _ = header.insert_header("allow", join_methods(allowed));
            }
            Refusal::IdpUnavailable(_) | Refusal::StoreUnavailable => {
                let _ = header.insert_header("retry-after", "5");
            }
            Refusal::TooManyRequests { retry_after, .. } => {
                let _ = header.insert_header("retry-after", retry_after.to_string());
            }
            Refusal::LoginRedirect(location) => {
                let _ = header.insert_header("location", location.as_str());
            }
            _ => {}
        }
        let retry = match self {
            Refusal::LoginFailed {
                retry: Some(link), ..
            } => format!("<p><a href=\"{}\">Sign in again</a></p>", escape_html(link)),
            _ => String::new(),
        };
        let body = if html {
            let _ = header.insert_header("content-type", "text/html; charset=utf-8");
            let _ = header.insert_header("content-security-policy", csp(brand));
            let _ = header.insert_header("x-frame-options", "DENY");
            let content = format!("<p>{}</p>{retry}", escape_html(&self.detail()));
            document(
                &format!("{} {}", status.as_u16(), self.title()),
                self.title(),
                &content,
                &format!("{} · request {}", status.as_u16(), escape_html(request_id)),
                brand,
            )
        } else {
            let _ = header.insert_header("content-type", "application/problem+json");
            let mut problem = serde_json::Map::new();
            problem.insert("type".into(), "about:blank".into());
            problem.insert("title".into(), self.title().into());
            problem.insert("status".into(), status.as_u16().into());
            problem.insert("detail".into(), self.detail().into());
            problem.insert("request_id".into(), request_id.into());
            if let Refusal::Forbidden {
                entity, permission, ..
            } = self
            {
                problem.insert("entity".into(), entity.clone().into());
                problem.insert("permission".into(), permission.clone().into());
            }
            if let Refusal::LoginFailed {
                retry: Some(link), ..
            } = self
            {
                problem.insert("retry".into(), link.clone().into());
            }
            serde_json::Value::Object(problem).to_string() + "\n"
        };
        let _ = header.insert_header("content-length", body.len().to_string());
        let _ = header.insert_header("cache-control", "no-store");
        stamp_request_id(&mut header, request_id);
        if debug_reason {
            let reason: String = self
                .detail()
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            let _ = header.insert_header("x-authgate-reason", reason);
        }
        Rendered {
            header,
            body: bytes::Bytes::from(body),
        }
    }
}

/// An empty response head with `status`, built without any way to panic.
pub fn head(status: StatusCode, size_hint: usize) -> ResponseHeader {
    ResponseHeader::build(status, Some(size_hint)).unwrap_or_else(|_| {
        // Unreachable with a typed status; a bare head is still a valid answer.
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = status;
        ResponseHeader::from(parts)
    })
}

/// Adds `x-request-id`, marked sensitive as the proxied responses' is: HTTP/2 sends it as a
/// never-indexed literal, since a value used once has no place in the connection's HPACK table.
pub fn stamp_request_id(header: &mut ResponseHeader, request_id: &str) {
    if let Ok(mut value) = http::HeaderValue::from_str(request_id) {
        value.set_sensitive(true);
        let _ = header.insert_header("x-request-id", value);
    }
}

/// A redirect (302) to `location`.
pub fn redirect(location: &str, request_id: &str) -> Rendered {
    let mut header = head(StatusCode::FOUND, 4);
    let _ = header.insert_header("location", location);
    let _ = header.insert_header("content-length", "0");
    let _ = header.insert_header("cache-control", "no-store");
    stamp_request_id(&mut header, request_id);
    Rendered {
        header,
        body: bytes::Bytes::new(),
    }
}

/// The answer to a CORS preflight: 204 with `allowed` (the CORS headers for a registered
/// origin), or 403 when the origin is not one (`None`).
pub fn preflight(allowed: Option<Vec<(&'static str, String)>>, request_id: &str) -> Rendered {
    let mut header = head(
        if allowed.is_some() {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::FORBIDDEN
        },
        8,
    );
    for (k, v) in allowed.into_iter().flatten() {
        let _ = header.insert_header(k, v);
    }
    let _ = header.insert_header("content-length", "0");
    stamp_request_id(&mut header, request_id);
    Rendered {
        header,
        body: bytes::Bytes::new(),
    }
}

/// The gateway's public keys for identity assertions (`jwks`, a JWKS document), cacheable by
/// upstreams for five minutes.
pub fn jwks(jwks: &str) -> Rendered {
    let mut header = head(StatusCode::OK, 4);
    let _ = header.insert_header("content-type", "application/json");
    let _ = header.insert_header("content-length", jwks.len().to_string());
    let _ = header.insert_header("cache-control", "public, max-age=300");
    Rendered {
        header,
        body: bytes::Bytes::copy_from_slice(jwks.as_bytes()),
    }
}

/// A JSON answer of the gateway's own endpoints.
pub fn json(status: StatusCode, value: &serde_json::Value, request_id: &str) -> Rendered {
    let body = value.to_string() + "\n";
    let mut header = head(status, 4);
    let _ = header.insert_header("content-type", "application/json");
    let _ = header.insert_header("content-length", body.len().to_string());
    let _ = header.insert_header("cache-control", "no-store");
    stamp_request_id(&mut header, request_id);
    Rendered {
        header,
        body: bytes::Bytes::from(body),
    }
}

/// The `Content-Security-Policy` of the gateway's pages: nothing loads but inline style and
/// the client's logo (from its own origin); nothing may frame them.
fn csp(brand: Option<&Branding>) -> String {
    let img = brand
        .and_then(|b| b.logo_url.as_ref())
        .map(|u| format!("; img-src {}", u.origin().ascii_serialization()))
        .unwrap_or_default();
    format!("default-src 'none'; style-src 'unsafe-inline'{img}; form-action *; frame-ancestors 'none'; base-uri 'none'")
}

/// A whole page: head (title, style in the client's accent colour), the client's name and
/// logo, `heading`, `content_html` (built by the caller from escaped parts) and `footer_html`.
fn document(
    title: &str,
    heading: &str,
    content_html: &str,
    footer_html: &str,
    brand: Option<&Branding>,
) -> String {
    let accent = brand
        .and_then(|b| b.accent_color.as_deref())
        .unwrap_or("#2b6cb0");
    let mut banner = String::new();
    if let Some(b) = brand {
        banner.push_str("<header>");
        if let Some(logo) = &b.logo_url {
            banner.push_str(&format!(
                "<img src=\"{}\" alt=\"\" height=\"32\">",
                escape_html(logo.as_str())
            ));
        }
        banner.push_str(&format!(
            "<span>{}</span></header>",
            escape_html(&b.display_name)
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}}small{{color:#777}}button{{font:inherit}}\
         header{{display:flex;align-items:center;gap:.6em;font-weight:600;border-bottom:3px solid {accent};padding-bottom:.6em}}\
         a{{color:{accent}}}h1{{color:{accent}}}.providers a{{display:block;margin:.6em 0;padding:.7em 1em;border:1px solid {accent};border-radius:6px;text-decoration:none}}</style></head>\
         <body>{banner}<h1>{heading}</h1>{content_html}<p><small>{footer_html}</small></p></body></html>\n",
        title = escape_html(title),
        heading = escape_html(heading),
    )
}

/// A small HTML page of the gateway's own (signed-out page, logout confirmation, sign-in
/// chooser): `title`, then `body_html`, which the caller has built from escaped parts.
pub fn page(
    status: StatusCode,
    title: &str,
    body_html: &str,
    request_id: &str,
    brand: Option<&Branding>,
) -> Rendered {
    let body = document(
        title,
        title,
        body_html,
        &format!("request {}", escape_html(request_id)),
        brand,
    );
    let mut header = head(status, 6);
    let _ = header.insert_header("content-type", "text/html; charset=utf-8");
    let _ = header.insert_header("content-length", body.len().to_string());
    let _ = header.insert_header("cache-control", "no-store");
    // Nothing on these pages may be framed (a framed sign-out button is a clickjacking target).
    let _ = header.insert_header("x-frame-options", "DENY");
    let _ = header.insert_header("content-security-policy", csp(brand));
    stamp_request_id(&mut header, request_id);
    Rendered {
        header,
        body: bytes::Bytes::from(body),
    }
}

/// The sign-in chooser of a client with several providers: one link per `(name, href)`.
pub fn chooser(brand: &Branding, options: &[(String, String)], request_id: &str) -> Rendered {
    let mut html = format!(
        "<p>Choose how to sign in to {}.</p><nav class=\"providers\">",
        escape_html(&brand.display_name)
    );
    for (name, href) in options {
        html.push_str(&format!(
            "<a href=\"{}\">Sign in with {}</a>",
            escape_html(href),
            escape_html(name)
        ));
    }
    html.push_str("</nav>");
    page(StatusCode::OK, "Sign in", &html, request_id, Some(brand))
}

/// The signed-out page of client `client`: a "sign in again" link to `sign_in` and, when the
/// IdP's own sign-out page is configured, a way there (a form POST when `idp_post`).
pub fn signed_out(
    brand: &Branding,
    sign_in: &str,
    idp_logout: Option<(&str, bool)>,
    request_id: &str,
) -> Rendered {
    let mut html = format!(
        "<p>You are signed out of {}.</p>",
        escape_html(&brand.display_name)
    );
    if let Some((url, post)) = idp_logout {
        html.push_str("<p>You may still be signed in at the identity provider. ");
        if post {
            html.push_str(&format!("<form method=\"post\" action=\"{}\" style=\"display:inline\"><button type=\"submit\">Sign out there too</button></form>", escape_html(url)));
        } else {
            html.push_str(&format!(
                "<a href=\"{}\">Sign out there too</a>",
                escape_html(url)
            ));
        }
        html.push_str("</p>");
    }
    html.push_str(&format!(
        "<p><a href=\"{}\">Sign in again</a></p>",
        escape_html(sign_in)
    ));
    page(StatusCode::OK, "Signed out", &html, request_id, Some(brand))
}

/// The answer to a logout that did not come from the client's own pages: nothing changed,
/// and a button that signs out with a same-origin POST to `action`. A normal page (200, not
/// stored): a link from another site or an old browser is no error, it only asks first.
pub fn confirm_logout(brand: &Branding, action: &str, request_id: &str) -> Rendered {
    let html = format!(
        "<p>This sign-out request did not come from {client}'s own pages, so nothing was changed.</p>\
         <form method=\"post\" action=\"{action}\"><button type=\"submit\">Sign out of {client}</button></form>",
        client = escape_html(&brand.display_name),
        action = escape_html(action),
    );
    page(StatusCode::OK, "Sign out?", &html, request_id, Some(brand))
}

/// True for a browser navigation that may be sent to the login page: `GET`/`HEAD`, not an
/// XHR/fetch (`Sec-Fetch-Mode` other than `navigate`, `X-Requested-With`), and asking for HTML.
pub fn is_navigation(
    method: &http::Method,
    accept: Option<&[u8]>,
    sec_fetch_mode: Option<&[u8]>,
    requested_with: Option<&[u8]>,
) -> bool {
    if method != http::Method::GET && method != http::Method::HEAD || requested_with.is_some() {
        return false;
    }
    match sec_fetch_mode {
        Some(mode) => mode == b"navigate",
        None => wants_html(accept, None),
    }
}

/// True when the request is a browser navigation that should get HTML rather than JSON.
pub fn wants_html(accept: Option<&[u8]>, sec_fetch_mode: Option<&[u8]>) -> bool {
    if sec_fetch_mode == Some(b"navigate") {
        return true;
    }
    accept.is_some_and(|a| a.windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html")))
}

fn join_methods(ms: &[http::Method]) -> String {
    ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Escapes text for HTML.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Rendered, name: &str) -> Option<String> {
        r.header
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn statuses_and_headers() {
        let missing = Refusal::MissingCredentials.render("authgate", false, "rid1");
        assert_eq!(missing.header.status, 401);
        assert_eq!(
            header(&missing, "www-authenticate").unwrap(),
            "Bearer realm=\"authgate\""
        );
        assert_eq!(
            header(&missing, "content-type").unwrap(),
            "application/problem+json"
        );
        let body: serde_json::Value = serde_json::from_slice(&missing.body).unwrap();
        assert_eq!(body["status"], 401);
        assert_eq!(body["request_id"], "rid1");

        let invalid =
            Refusal::InvalidToken("the token has expired".into()).render("authgate", false, "r");
        assert!(header(&invalid, "www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\""));

        let forbidden = Refusal::Forbidden {
            entity: "client_abc:invoice".into(),
            permission: "write".into(),
            reason: "not granted".into(),
        }
        .render("authgate", false, "r");
        assert_eq!(forbidden.header.status, 403);
        let body: serde_json::Value = serde_json::from_slice(&forbidden.body).unwrap();
        assert_eq!(body["entity"], "client_abc:invoice");
        assert_eq!(body["permission"], "write");

        let unavailable =
            Refusal::IdpUnavailable("keys not loaded".into()).render("authgate", false, "r");
        assert_eq!(unavailable.header.status, 503);
        assert_eq!(header(&unavailable, "retry-after").unwrap(), "5");

        let not_allowed = Refusal::MethodNotAllowed(vec![http::Method::GET, http::Method::PUT])
            .render("authgate", false, "r");
        assert_eq!(header(&not_allowed, "allow").unwrap(), "GET, PUT");
    }

    #[test]
    fn every_answer_carries_the_request_id_never_indexed() {
        let answers = [
            Refusal::MissingCredentials.render("authgate", false, "rid-7"),
            Refusal::MissingCredentials.render("authgate", true, "rid-7"),
            redirect("https://idp/authorize", "rid-7"),
            preflight(None, "rid-7"),
            json(StatusCode::OK, &serde_json::json!({}), "rid-7"),
            page(StatusCode::OK, "t", "<p>b</p>", "rid-7", None),
        ];
        for a in &answers {
            let v = a.header.headers.get("x-request-id").unwrap();
            assert_eq!(v, "rid-7", "{}", a.header.status);
            assert!(v.is_sensitive(), "{}", a.header.status);
        }
        // An id that is not a header value (never made by the gateway) is left out, not a panic.
        assert!(json(StatusCode::OK, &serde_json::json!({}), "a\nb")
            .header
            .headers
            .get("x-request-id")
            .is_none());
    }

    #[test]
    fn navigations_get_redirects_apis_get_401() {
        use http::Method;
        type Case<'a> = (
            &'a Method,
            Option<&'a [u8]>,
            Option<&'a [u8]>,
            Option<&'a [u8]>,
            bool,
        );
        let cases: &[Case] = &[
            (
                &Method::GET,
                Some(b"text/html,application/xhtml+xml"),
                None,
                None,
                true,
            ),
            (&Method::GET, None, Some(b"navigate"), None, true),
            (&Method::HEAD, Some(b"text/html"), None, None, true),
            (&Method::GET, Some(b"application/json"), None, None, false),
            (&Method::GET, Some(b"text/html"), Some(b"cors"), None, false),
            (
                &Method::GET,
                Some(b"text/html"),
                None,
                Some(b"XMLHttpRequest"),
                false,
            ),
            (
                &Method::POST,
                Some(b"text/html"),
                Some(b"navigate"),
                None,
                false,
            ),
            (&Method::GET, Some(b"*/*"), None, None, false),
        ];
        for (m, accept, mode, xrw, want) in cases {
            assert_eq!(
                is_navigation(m, *accept, *mode, *xrw),
                *want,
                "{m} {accept:?} {mode:?} {xrw:?}"
            );
        }
        let r =
            Refusal::LoginRedirect("https://idp/authorize?x".into()).render("authgate", true, "r");
        assert_eq!(r.header.status, 302);
        assert_eq!(header(&r, "location").unwrap(), "https://idp/authorize?x");
        let r = Refusal::LoginFailed {
            kind: LoginFailure::IdpError,
            reason: "the identity provider answered access_denied".into(),
            retry: Some("/_authgate/login?rd=%2F".into()),
        }
        .render("authgate", true, "r");
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(
            body.contains("access_denied") && body.contains("href=\"/_authgate/login?rd=%2F\""),
            "{body}"
        );
    }

    #[test]
    fn every_sign_in_failure_has_its_own_label() {
        let labels: std::collections::HashSet<&str> =
            LoginFailure::ALL.iter().map(|k| k.as_label()).collect();
        assert_eq!(
            labels.len(),
            LoginFailure::ALL.len(),
            "two reasons share a label"
        );
        assert!(
            labels
                .iter()
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')),
            "{labels:?}"
        );
        // No reason reads as a refusal's outcome, which labels the other sign-in failures.
        assert!(!labels.contains("idp_unavailable") && !labels.contains("not_allowed"));
    }

    #[test]
    fn browsers_get_escaped_html() {
        let r =
            Refusal::UnknownClient("https://<script>.example".into()).render("authgate", true, "r");
        assert_eq!(
            header(&r, "content-type").unwrap(),
            "text/html; charset=utf-8"
        );
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(body.contains("&lt;script&gt;") && !body.contains("<script>"));
        assert!(wants_html(Some(b"text/html,application/xhtml+xml"), None));
        assert!(wants_html(None, Some(b"navigate")));
        assert!(!wants_html(Some(b"application/json"), Some(b"cors")));
        assert!(!wants_html(None, None));
    }

    #[test]
    fn pages_carry_the_clients_branding_and_a_strict_policy() {
        let brand = Branding {
            display_name: "Acme <Admin>".into(),
            logo_url: Some(url::Url::parse("https://cdn.acme.example/logo.svg").unwrap()),
            accent_color: Some("#6f42c1".into()),
        };
        let r = chooser(
            &brand,
            &[(
                "GitHub".into(),
                "/_authgate/login?provider=github&rd=%2F".into(),
            )],
            "rid",
        );
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(
            body.contains("Acme &lt;Admin&gt;") && !body.contains("<Admin>"),
            "{body}"
        );
        assert!(
            body.contains("#6f42c1") && body.contains("src=\"https://cdn.acme.example/logo.svg\""),
            "{body}"
        );
        assert!(
            body.contains(
                "href=\"/_authgate/login?provider=github&amp;rd=%2F\">Sign in with GitHub"
            ),
            "{body}"
        );
        assert!(!body.contains("<script"), "{body}");
        let csp = header(&r, "content-security-policy").unwrap();
        assert_eq!(csp, "default-src 'none'; style-src 'unsafe-inline'; img-src https://cdn.acme.example; form-action *; frame-ancestors 'none'; base-uri 'none'");
        // A refusal for a browser of that client: branded; without a client: plain.
        let r = Refusal::NotAllowed("octocat is not allowed".into()).render_branded(
            "authgate",
            true,
            "rid",
            false,
            Some(&brand),
        );
        assert_eq!(r.header.status, 403);
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(
            body.contains("Not allowed")
                && body.contains("Octocat is not allowed.")
                && body.contains("Acme &lt;Admin&gt;"),
            "{body}"
        );
        let plain = Refusal::NoRoute.render("authgate", true, "rid");
        let body = std::str::from_utf8(&plain.body).unwrap();
        assert!(
            !body.contains("<header>") && body.contains("#2b6cb0"),
            "{body}"
        );
        assert!(!header(&plain, "content-security-policy")
            .unwrap()
            .contains("img-src"));
    }
}
