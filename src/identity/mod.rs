//! Who is calling: credentials found on the request, verified into a [`Principal`].

pub mod apikey;
pub mod assertion;
pub mod backchannel;
pub mod browser;
pub mod credentials;
pub mod discovery;
pub mod github;
pub mod jwks;
pub mod jws;
pub mod login;
pub mod oidc;
pub mod redis_store;
pub mod session;
pub mod signing;
pub mod verify;
pub mod watch;

pub use credentials::{Caller, Credential};

use http::HeaderValue;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch (0 if the clock is before it): the one clock for token and session
/// expiry.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The HTTP client for calls to the IdP: every call bounded by `timeout`, redirects followed
/// only where the endpoint may legitimately move (discovery, JWKS).
#[allow(
    clippy::expect_used,
    reason = "start-up only: a TLS backend that cannot load is a broken build"
)]
pub fn idp_client(timeout: Duration, follow_redirects: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(if follow_redirects {
            reqwest::redirect::Policy::limited(3)
        } else {
            reqwest::redirect::Policy::none()
        })
        .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's settings are valid")
}

/// A caller whose token has been verified. Only [`verify`] creates one from a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// `sub` (for a GitHub-type provider's users: the numeric id), unique within its provider;
    /// upstreams get [`Principal::upstream_subject`].
    pub subject: String,
    /// `email`, when present.
    pub email: Option<String>,
    /// `name`, when present (for GitHub users: their login).
    pub name: Option<String>,
    /// `email_verified` is true (GitHub: the primary email is verified).
    pub email_verified: bool,
    /// The `groups` claim (for GitHub users: their teams, `org:team-slug`).
    pub groups: Box<[Box<str>]>,
    /// For users signed in through a GitHub provider: what GitHub told about them.
    pub github: Option<Arc<GitHubIdentity>>,
    /// The client the token was issued to (`azp`, else `client_id`).
    pub authorized_party: Option<String>,
    /// The token's `aud` values (an id_token names its client there).
    pub audiences: Box<[Box<str>]>,
    /// The `permissions` claim.
    pub permissions: Grants,
    /// The `abac_required` claim.
    pub abac_required: Grants,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// Subject, email and provider as header values, encoded on first use and kept with the
    /// cached token.
    pub header_values: HeaderValues,
}

impl Principal {
    /// The provider that vouched for this principal: a GitHub-type provider's configured name
    /// for its users, [`IDP_PROVIDER`](crate::config::model::IDP_PROVIDER) (`idp`) for the
    /// `[idp]`'s (bearer tokens, API keys and its browser sessions).
    pub fn provider(&self) -> &str {
        self.github
            .as_ref()
            .map_or(crate::config::model::IDP_PROVIDER, |g| g.provider.as_str())
    }

    /// The subject as upstreams see it, unique across providers: the `[idp]`'s `sub` as it is;
    /// a GitHub-type provider's user as `{provider}:{numeric id}` (`github:583231`). The gateway
    /// refuses an `[idp]` subject that begins with a GitHub-type provider's `{name}:` (any case),
    /// and provider names differ ignoring case and hold no `:`, so no two providers' users share
    /// one. [`Principal::subject`] stays the provider's own (grants by subject name a provider).
    pub fn upstream_subject(&self) -> std::borrow::Cow<'_, str> {
        match &self.github {
            Some(g) => format!("{}:{}", g.provider, self.subject).into(),
            None => self.subject.as_str().into(),
        }
    }

    /// The identity as header values for the upstream (percent-encoded where needed).
    pub fn header_values(&self) -> &IdentityValues {
        self.header_values.0.get_or_init(|| IdentityValues {
            subject: crate::headers::encode(&self.upstream_subject()),
            email: self.email.as_deref().map(crate::headers::encode),
            provider: match &self.github {
                Some(g) => crate::headers::encode(&g.provider),
                None => HeaderValue::from_static(crate::config::model::IDP_PROVIDER),
            },
        })
    }
}

/// A principal's identity as header values, encoded once and kept with the cached principal.
#[derive(Debug, Clone)]
pub struct IdentityValues {
    /// [`Principal::upstream_subject`].
    pub subject: HeaderValue,
    /// `email`, verified or not (the header settings decide whether it is sent).
    pub email: Option<HeaderValue>,
    /// [`Principal::provider`].
    pub provider: HeaderValue,
}

/// What a GitHub provider told about a signed-in user (kept with the session). Names can be
/// renamed and registered again by someone else; the numeric ids cannot, so rules match ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GitHubIdentity {
    /// The provider's name.
    pub provider: String,
    /// The login, lowercase.
    pub login: String,
    /// Organisations, lowercase (only when the client's rules need them).
    pub orgs: Vec<String>,
    /// Teams as `org/team-slug`, lowercase (only when the client's rules need them).
    pub teams: Vec<String>,
    /// The user's numeric id (0 in sessions stored before ids were kept: re-validated at once).
    #[serde(default)]
    pub id: u64,
    /// The numeric id of each organisation of `orgs`, in the same order.
    #[serde(default)]
    pub org_ids: Vec<u64>,
    /// The numeric id of each team of `teams`, in the same order.
    #[serde(default)]
    pub team_ids: Vec<u64>,
}

impl GitHubIdentity {
    /// The user as `(login, id)`.
    pub fn user(&self) -> [(&str, u64); 1] {
        [(self.login.as_str(), self.id)]
    }

    /// The organisations as `(name, id)`.
    pub fn orgs_with_ids(&self) -> impl Iterator<Item = (&str, u64)> + Clone {
        self.orgs
            .iter()
            .map(String::as_str)
            .zip(self.org_ids.iter().copied())
    }

    /// The teams as `(org/team-slug, id)`.
    pub fn teams_with_ids(&self) -> impl Iterator<Item = (&str, u64)> + Clone {
        self.teams
            .iter()
            .map(String::as_str)
            .zip(self.team_ids.iter().copied())
    }
}

/// A principal's identity as header values: derived from its claims, so it takes no part in
/// comparing principals.
#[derive(Debug, Clone, Default)]
pub struct HeaderValues(OnceLock<IdentityValues>);

impl PartialEq for HeaderValues {
    fn eq(&self, _: &HeaderValues) -> bool {
        true
    }
}

impl Eq for HeaderValues {}

/// A map from entity type (or `type:id`) to the actions it lists, as in the
/// `permissions` and `abac_required` claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(HashMap<Box<str>, Box<[Box<str>]>>);

impl Grants {
    /// Reads a claim; anything that is not an object of string arrays grants nothing.
    pub fn from_claim(value: &serde_json::Value) -> Grants {
        let Some(obj) = value.as_object() else {
            return Grants::default();
        };
        Grants(
            obj.iter()
                .filter_map(|(k, v)| {
                    let actions: Box<[Box<str>]> = v
                        .as_array()?
                        .iter()
                        .filter_map(|a| a.as_str().map(Into::into))
                        .collect();
                    Some((k.as_str().into(), actions))
                })
                .collect(),
        )
    }

    /// True when `entity` lists `action`.
    pub fn lists(&self, entity: &str, action: &str) -> bool {
        self.0
            .get(entity)
            .is_some_and(|actions| actions.iter().any(|a| &**a == action))
    }

    /// True when nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The grants as JSON, for session info and logs.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|a| a.to_string()).collect()))
                .collect(),
        )
    }
}
