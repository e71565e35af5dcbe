//! Sign-in through GitHub's OAuth apps (or a compatible forge: GitHub Enterprise Server, Gitea,
//! Forgejo): the authorization URL (state and PKCE S256), the code exchange at
//! `{base_url}/login/oauth/access_token`, and who the user is from the REST API (`/user`,
//! `/user/emails`, `/user/orgs`, `/user/teams`). GitHub is no OIDC provider: there is no
//! id_token, so every answer is taken from the API over TLS with the user's token, which never
//! leaves the gateway. Every call has the provider's timeout and follows no redirect.

use crate::config::model::{AllowRules, ClientSignIn, GitHubSettings};
use crate::identity::GitHubIdentity;
use crate::secret::Secret;
use serde::Deserialize;
use std::time::Duration;
use url::Url;

/// Most pages of organisations or teams read (100 each).
const MAX_PAGES: usize = 10;
/// The REST API version asked for.
const API_VERSION: &str = "2022-11-28";

/// Why a step with GitHub failed. Messages never contain tokens or secrets, and are fit for
/// the user's page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    /// The token endpoint answered an OAuth error (a used or expired code, wrong credentials).
    #[error("GitHub refused the sign-in: {0}")]
    Refused(String),
    /// The API refused the token: the user revoked the app's access, or the app was removed.
    #[error("GitHub no longer accepts this application's access: it was revoked; sign in again to grant it")]
    Revoked,
    /// The API's rate limit is exhausted; `.0` is when it resets (seconds since the epoch).
    #[error("GitHub's API rate limit is exhausted{}; try again later", .0.map(|t| format!(" until {}", clock(t))).unwrap_or_default())]
    RateLimited(Option<u64>),
    /// The API refused the request for another reason (an organisation's OAuth app policy...).
    #[error("GitHub refused the request: {0}")]
    Forbidden(String),
    /// GitHub could not be reached, timed out or failed.
    #[error("GitHub is unavailable: {0}")]
    Unavailable(String),
    /// GitHub answered something the gateway cannot read.
    #[error("GitHub answered something unusable: {0}")]
    BadResponse(String),
    /// The account has no verified primary email.
    #[error("your GitHub account has no verified primary email address: verify one at GitHub, then sign in again")]
    NoVerifiedEmail,
    /// The HTTP client could not be built.
    #[error("the HTTP client for GitHub cannot be built: {0}")]
    Client(String),
}

impl GitHubError {
    /// True when GitHub could not answer (rather than answered no): the caller may retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            GitHubError::Unavailable(_) | GitHubError::RateLimited(_) | GitHubError::BadResponse(_)
        )
    }
}

/// `HH:MM:SS UTC` of an epoch time.
fn clock(t: u64) -> String {
    let s = t % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// A GitHub user as the API describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubUser {
    /// The numeric user id: the subject.
    pub id: u64,
    /// The display name, when set.
    pub name: Option<String>,
    /// The primary verified email.
    pub email: String,
    /// Login, organisations and teams (lowercase).
    pub identity: GitHubIdentity,
}

impl GitHubUser {
    /// True when the client's allow rules admit the user (no rules: everyone).
    pub fn admitted_by(&self, rules: &AllowRules) -> bool {
        let id = &self.identity;
        rules.is_empty()
            || rules.users.contains(&id.login)
            || id.orgs.iter().any(|o| rules.orgs.contains(o))
            || id.teams.iter().any(|t| rules.teams.contains(t))
    }
}

/// A started GitHub login.
pub struct Authorization {
    /// Where to send the browser.
    pub url: Url,
    /// `state`: 128 random bits.
    pub state: String,
    /// The PKCE verifier.
    pub pkce_verifier: String,
}

/// One GitHub (or compatible) provider.
pub struct GitHub {
    name: String,
    authorize_url: Url,
    token_url: Url,
    api_url: Url,
    http: reqwest::Client,
    /// How often a session is checked again against the API.
    pub revalidate_interval: Duration,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("name", &self.name)
            .field("api_url", &self.api_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    scope: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct UserAnswer {
    id: u64,
    login: String,
    /// GitHub's `name`; Gitea and Forgejo say `full_name`.
    #[serde(alias = "full_name")]
    name: Option<String>,
}

#[derive(Deserialize)]
struct EmailAnswer {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

/// An organisation: GitHub says `login`, Gitea and Forgejo `username`.
#[derive(Deserialize)]
struct OrgAnswer {
    login: Option<String>,
    username: Option<String>,
}

impl OrgAnswer {
    fn name(self) -> Option<String> {
        self.login.or(self.username).filter(|n| !n.is_empty())
    }
}

/// A team: GitHub says `slug`, Gitea and Forgejo only `name`.
#[derive(Deserialize)]
struct TeamAnswer {
    slug: Option<String>,
    name: Option<String>,
    organization: OrgAnswer,
}

/// `base` with `path` appended to its path (keeping a GHES prefix such as `/api/v3`).
fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(&joined);
    url
}

impl GitHub {
    /// The provider `name` with its settings.
    pub fn from_config(name: &str, s: &GitHubSettings) -> Result<GitHub, GitHubError> {
        let http = reqwest::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(s.timeout)
            // Neither the token nor the client secret may follow a redirect.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GitHubError::Client(e.to_string()))?;
        Ok(GitHub {
            name: name.to_string(),
            authorize_url: join(&s.base_url, "/login/oauth/authorize"),
            token_url: join(&s.base_url, "/login/oauth/access_token"),
            api_url: s.api_url.clone(),
            http,
            revalidate_interval: s.revalidate_interval,
        })
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The authorization URL for the client's OAuth app, coming back to `redirect_uri`, with
    /// fresh state and PKCE S256.
    pub fn authorize(&self, sign_in: &ClientSignIn, redirect_uri: &str) -> Authorization {
        let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
        let state = crate::identity::session::random_token(16);
        let mut url = self.authorize_url.clone();
        url.query_pairs_mut()
            .append_pair("client_id", &sign_in.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &sign_in.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256")
            .append_pair("allow_signup", "false");
        Authorization {
            url,
            state,
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Exchanges the code for the user's access token with the client's credentials; with
    /// `needs_orgs`, a token without `read:org` is refused (the rules could not be checked).
    pub async fn exchange_code(
        &self,
        sign_in: &ClientSignIn,
        code: &str,
        pkce_verifier: &str,
        redirect_uri: &str,
        needs_orgs: bool,
    ) -> Result<Secret, GitHubError> {
        let form = [
            ("client_id", sign_in.client_id.as_str()),
            ("client_secret", sign_in.client_secret.expose()),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pkce_verifier),
        ];
        let resp = self
            .http
            .post(self.token_url.clone())
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| GitHubError::Unavailable(without_url(e)))?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(GitHubError::Unavailable(format!(
                "the token endpoint answered {status}"
            )));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| GitHubError::Unavailable(without_url(e)))?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            GitHubError::BadResponse(format!("the token endpoint answered {status} without JSON"))
        })?;
        if let Some(error) = answer.error {
            let detail = answer
                .error_description
                .map(|d| format!(" ({})", tame(&d)))
                .unwrap_or_default();
            return Err(GitHubError::Refused(format!("{}{detail}", tame(&error))));
        }
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                GitHubError::BadResponse("no access_token in the token response".into())
            })?;
        if needs_orgs {
            if let Some(scope) = answer.scope {
                if !scope
                    .split([',', ' '])
                    .any(|s| matches!(s, "read:org" | "write:org" | "admin:org"))
                {
                    return Err(GitHubError::Refused("the read:org scope was not granted, and this application's rules need the user's organisations".into()));
                }
            }
        }
        Ok(Secret::new(token))
    }

    /// Who holds `token`: `/user`, the primary verified email from `/user/emails`, and with
    /// `with_orgs` the organisations and teams (every page, up to 1000 each).
    pub async fn user(&self, token: &Secret, with_orgs: bool) -> Result<GitHubUser, GitHubError> {
        let user: UserAnswer = self.get_one(token, "/user").await?;
        let emails: Vec<EmailAnswer> = self.get_all(token, "/user/emails").await?;
        let email = emails
            .into_iter()
            .find(|e| e.primary && e.verified)
            .map(|e| e.email)
            .ok_or(GitHubError::NoVerifiedEmail)?;
        let (mut orgs, mut teams) = (Vec::new(), Vec::new());
        if with_orgs {
            let o: Vec<OrgAnswer> = self.get_all(token, "/user/orgs").await?;
            orgs = o
                .into_iter()
                .filter_map(OrgAnswer::name)
                .map(|o| o.to_ascii_lowercase())
                .collect();
            let t: Vec<TeamAnswer> = self.get_all(token, "/user/teams").await?;
            teams = t
                .into_iter()
                .filter_map(|t| {
                    Some(
                        format!(
                            "{}/{}",
                            t.organization.name()?,
                            t.slug.or(t.name).filter(|s| !s.is_empty())?
                        )
                        .to_ascii_lowercase(),
                    )
                })
                .collect();
            orgs.sort_unstable();
            orgs.dedup();
            teams.sort_unstable();
            teams.dedup();
        }
        if user.login.is_empty() {
            return Err(GitHubError::BadResponse("/user has an empty login".into()));
        }
        Ok(GitHubUser {
            id: user.id,
            name: user.name.filter(|n| !n.trim().is_empty()),
            email,
            identity: GitHubIdentity {
                provider: self.name.clone(),
                login: user.login.to_ascii_lowercase(),
                orgs,
                teams,
            },
        })
    }

    async fn get_one<T: serde::de::DeserializeOwned>(
        &self,
        token: &Secret,
        path: &str,
    ) -> Result<T, GitHubError> {
        let (body, _) = self.get(token, join(&self.api_url, path)).await?;
        serde_json::from_slice(&body).map_err(|e| GitHubError::BadResponse(format!("{path}: {e}")))
    }

    /// Every page of a list, following `Link: rel="next"` on the API's own origin only.
    async fn get_all<T: serde::de::DeserializeOwned>(
        &self,
        token: &Secret,
        path: &str,
    ) -> Result<Vec<T>, GitHubError> {
        let mut url = join(&self.api_url, path);
        url.query_pairs_mut().append_pair("per_page", "100");
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let (body, next) = self.get(token, url).await?;
            let page: Vec<T> = serde_json::from_slice(&body)
                .map_err(|e| GitHubError::BadResponse(format!("{path}: {e}")))?;
            out.extend(page);
            match next.filter(|n| n.origin() == self.api_url.origin()) {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    /// One API call: the body and the next page's URL.
    async fn get(
        &self,
        token: &Secret,
        url: Url,
    ) -> Result<(bytes::Bytes, Option<Url>), GitHubError> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .header(http::header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION)
            .send()
            .await
            .map_err(|e| GitHubError::Unavailable(without_url(e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(GitHubError::Revoked);
        }
        let exhausted = text("x-ratelimit-remaining") == Some("0");
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || (status == reqwest::StatusCode::FORBIDDEN
                && (exhausted || text("retry-after").is_some()))
        {
            return Err(GitHubError::RateLimited(
                text("x-ratelimit-reset").and_then(|r| r.parse().ok()),
            ));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| GitHubError::Unavailable(without_url(e)))?;
        if status == reqwest::StatusCode::FORBIDDEN {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(tame))
                .unwrap_or_else(|| "403".into());
            return Err(GitHubError::Forbidden(message));
        }
        if status.is_server_error() {
            return Err(GitHubError::Unavailable(format!(
                "the API answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(GitHubError::BadResponse(format!(
                "the API answered {status}"
            )));
        }
        let next = text("link").and_then(next_link);
        Ok((body, next))
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(link: &str) -> Option<Url> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""));
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| Url::parse(target).ok()).flatten()
    })
}

/// A reqwest error without its URL (which is harmless here, but keeps messages short).
fn without_url(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.without_url().to_string()
    }
}

/// Printable, short text from GitHub for a page.
fn tame(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(login: &str, orgs: &[&str], teams: &[&str]) -> GitHubUser {
        GitHubUser {
            id: 1,
            name: None,
            email: "u@example.com".into(),
            identity: GitHubIdentity {
                provider: "github".into(),
                login: login.into(),
                orgs: orgs.iter().map(|s| s.to_string()).collect(),
                teams: teams.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    #[test]
    fn allow_rules() {
        let rules = AllowRules {
            orgs: vec!["acme".into()],
            teams: vec!["other/admins".into()],
            users: vec!["octocat".into()],
        };
        for (case, u, want) in [
            ("listed user", user("octocat", &[], &[]), true),
            (
                "member of an allowed org",
                user("mona", &["acme"], &[]),
                true,
            ),
            (
                "member of an allowed team",
                user("mona", &["other"], &["other/admins"]),
                true,
            ),
            (
                "member of another team of the team's org",
                user("mona", &["other"], &["other/devs"]),
                false,
            ),
            ("nobody listed", user("mona", &["elsewhere"], &[]), false),
        ] {
            assert_eq!(u.admitted_by(&rules), want, "{case}");
        }
        assert!(
            user("anyone", &[], &[]).admitted_by(&AllowRules::default()),
            "no rules: any GitHub user"
        );
    }

    #[test]
    fn links_and_urls() {
        let link = "<https://api.github.com/user/teams?per_page=100&page=2>; rel=\"next\", <https://api.github.com/user/teams?per_page=100&page=5>; rel=\"last\"";
        assert_eq!(
            next_link(link).unwrap().as_str(),
            "https://api.github.com/user/teams?per_page=100&page=2"
        );
        assert_eq!(
            next_link("<https://api.github.com/x?page=1>; rel=\"prev\""),
            None
        );
        assert_eq!(next_link("garbage"), None);
        let ghes = Url::parse("https://ghe.example.com/api/v3").unwrap();
        assert_eq!(
            join(&ghes, "/user").as_str(),
            "https://ghe.example.com/api/v3/user"
        );
        assert_eq!(
            join(
                &Url::parse("https://github.com/").unwrap(),
                "/login/oauth/authorize"
            )
            .as_str(),
            "https://github.com/login/oauth/authorize"
        );
        assert_eq!(clock(86_400 + 3_723), "01:02:03 UTC");
        let limited = GitHubError::RateLimited(Some(3_723)).to_string();
        assert!(limited.contains("until 01:02:03 UTC"), "{limited}");
    }
}
