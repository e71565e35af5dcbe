//! Sign-in through GitHub's OAuth apps (or a compatible forge: GitHub Enterprise Server, Gitea,
//! Forgejo): the authorization URL (state and PKCE S256), the code exchange at
//! `{base_url}/login/oauth/access_token`, and who the user is from the REST API (`/user`,
//! `/user/emails`, `/user/orgs`, `/user/teams`). GitHub is no OIDC provider: there is no
//! id_token, so every answer is taken from the API over TLS with the user's token, which never
//! leaves the gateway. Every call has the provider's timeout and follows no redirect.

use crate::config::model::{AllowRules, ClientSignIn, GitHubRef, GitHubSettings};
use crate::identity::GitHubIdentity;
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
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
    /// The primary verified email; none when the provider's `verified` flag is not trusted.
    pub email: Option<String>,
    /// Login, organisations and teams (lowercase), with their ids.
    pub identity: GitHubIdentity,
}

impl GitHubUser {
    /// True when the client's allow rules admit the user (no rules: everyone), matching ids
    /// (names through `pins`).
    pub fn admitted_by(&self, rules: &AllowRules, pins: &Pins) -> bool {
        rules.is_empty() || pins.names_any(&self.identity, &rules.users, &rules.orgs, &rules.teams)
    }
}

/// What a [`GitHubRef`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A user (by login).
    User,
    /// An organisation.
    Org,
    /// A team (`org/team-slug`).
    Team,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Org => "organisation",
            Kind::Team => "team",
        }
    }
}

/// What the pin table holds for one configured name at one provider.
#[derive(Debug, Default)]
struct Pin {
    /// The id a name without an id was first seen with.
    id: Option<u64>,
    /// The `(id, name)` pairs already warned of, so each is logged once (at most
    /// [`MAX_WARNED`] kept).
    warned: Vec<(u64, String)>,
}

/// How many mismatches of one configured name are remembered as already logged.
const MAX_WARNED: usize = 16;

impl Pin {
    /// True the first time `(id, name)` is seen here (then it is remembered).
    fn first_warning(&mut self, id: u64, name: &str) -> bool {
        if self.warned.iter().any(|(i, n)| *i == id && n == name) {
            return false;
        }
        if self.warned.len() < MAX_WARNED {
            self.warned.push((id, name.to_string()));
        }
        true
    }
}

/// Names in the config, pinned to ids. An entry with an id matches only that id (its name, if
/// given, only serves the warnings); a name alone is pinned to the id it is first seen with at
/// this provider (at a sign-in, a re-validation or a grant), and from then on matches only that
/// id: someone who registers the name after a rename gets nothing, and the pinned account keeps
/// matching under its new name. Each mismatch is logged once as a warning saying what to write.
/// The table lives as long as the process (reloads keep it, a restart empties it); it holds
/// only names the config wrote.
#[derive(Debug, Default)]
pub struct Pins {
    by_name: Mutex<HashMap<(String, Kind, String), Pin>>,
}

impl Pins {
    /// True when one of `users`, `orgs` or `teams` names the user `who`, one of its
    /// organisations or one of its teams.
    pub fn names_any(
        &self,
        who: &GitHubIdentity,
        users: &[GitHubRef],
        orgs: &[GitHubRef],
        teams: &[GitHubRef],
    ) -> bool {
        // Sessions stored before ids were kept have none: they match nothing (and are
        // re-validated at once, see `Browser::github_session`).
        let user = who.user();
        let user_seen = user.iter().copied().filter(|(_, id)| *id != 0);
        users
            .iter()
            .any(|r| self.names(&who.provider, Kind::User, r, user_seen.clone()))
            || orgs
                .iter()
                .any(|r| self.names(&who.provider, Kind::Org, r, who.orgs_with_ids()))
            || teams
                .iter()
                .any(|r| self.names(&who.provider, Kind::Team, r, who.teams_with_ids()))
    }

    /// True when `r` names one of `seen` (`(name, id)`, names lowercase) at `provider`: by id
    /// when `r` has one, else by the id its name is pinned to (pinned here at first sight).
    pub fn names<'a>(
        &self,
        provider: &str,
        kind: Kind,
        r: &GitHubRef,
        seen: impl Iterator<Item = (&'a str, u64)>,
    ) -> bool {
        let Some(name) = r.name.as_deref() else {
            // An id alone: nothing to pin, nothing to warn of.
            let mut seen = seen;
            return r.id.is_some_and(|want| seen.any(|(_, id)| id == want));
        };
        let mut table = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        let pin = table
            .entry((provider.to_string(), kind, name.to_string()))
            .or_default();
        let kind = kind.as_str();
        let mut matched = false;
        for (seen_name, seen_id) in seen {
            let want = r.id.or(pin.id);
            if seen_name == name {
                match want {
                    None => {
                        pin.id = Some(seen_id);
                        matched = true;
                        tracing::info!(provider, kind, name, id = seen_id, "GitHub name pinned to the id it is first seen with (until the gateway restarts): write {{ name = {name:?}, id = {seen_id} }} in the config to keep it");
                    }
                    Some(want) if want == seen_id => matched = true,
                    Some(want) => {
                        if pin.first_warning(seen_id, seen_name) {
                            let whose = if r.id.is_some() {
                                "the config gives"
                            } else {
                                "it was pinned to at first sight"
                            };
                            tracing::warn!(provider, kind, name, id = seen_id, pinned_id = want, "refused: the GitHub name {name:?} now belongs to another account (id {seen_id}) than the id {whose} ({want}): it was renamed and registered again, or the config's id is wrong; only id {want} matches. If id {seen_id} is the account you mean, write {{ name = {name:?}, id = {seen_id} }} in the config");
                        }
                    }
                }
            } else if want == Some(seen_id) {
                matched = true;
                if pin.first_warning(seen_id, seen_name) {
                    tracing::warn!(provider, kind, name, id = seen_id, now = seen_name, "the GitHub account {name:?} (id {seen_id}) is now called {seen_name:?}: it still matches by its id; write {{ name = {seen_name:?}, id = {seen_id} }} in the config");
                }
            }
        }
        matched
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
    /// Whether the forge's `verified` flag on emails is believed.
    trust_verified_email: bool,
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
    id: Option<u64>,
    login: Option<String>,
    username: Option<String>,
}

impl OrgAnswer {
    fn name(self) -> Option<String> {
        self.login.or(self.username).filter(|n| !n.is_empty())
    }

    /// Name and id; one without either matches no rule.
    fn named(self) -> Option<(String, u64)> {
        let id = self.id?;
        Some((self.name()?.to_ascii_lowercase(), id))
    }
}

/// A team: GitHub says `slug`, Gitea and Forgejo only `name`.
#[derive(Deserialize)]
struct TeamAnswer {
    id: Option<u64>,
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
            trust_verified_email: s.trust_verified_email,
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

    /// Who holds `token`: `/user`, the primary verified email from `/user/emails` (only where
    /// the provider's `verified` flag is trusted), and with `with_orgs` the organisations and
    /// teams (every page, up to 1000 each), each with its numeric id.
    pub async fn user(&self, token: &Secret, with_orgs: bool) -> Result<GitHubUser, GitHubError> {
        let user: UserAnswer = self.get_one(token, "/user").await?;
        let email = if self.trust_verified_email {
            let emails: Vec<EmailAnswer> = self.get_all(token, "/user/emails").await?;
            let email = emails
                .into_iter()
                .find(|e| e.primary && e.verified)
                .map(|e| e.email)
                .ok_or(GitHubError::NoVerifiedEmail)?;
            Some(email)
        } else {
            None
        };
        let (mut orgs, mut teams) = (Vec::new(), Vec::new());
        if with_orgs {
            let o: Vec<OrgAnswer> = self.get_all(token, "/user/orgs").await?;
            orgs = o.into_iter().filter_map(OrgAnswer::named).collect();
            let t: Vec<TeamAnswer> = self.get_all(token, "/user/teams").await?;
            teams = t
                .into_iter()
                .filter_map(|t| {
                    let id = t.id?;
                    let slug = t.slug.or(t.name).filter(|s| !s.is_empty())?;
                    let name = format!("{}/{slug}", t.organization.name()?).to_ascii_lowercase();
                    Some((name, id))
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
        let (orgs, org_ids) = orgs.into_iter().unzip();
        let (teams, team_ids) = teams.into_iter().unzip();
        Ok(GitHubUser {
            id: user.id,
            name: user.name.filter(|n| !n.trim().is_empty()),
            email,
            identity: GitHubIdentity {
                provider: self.name.clone(),
                login: user.login.to_ascii_lowercase(),
                orgs,
                teams,
                id: user.id,
                org_ids,
                team_ids,
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

    /// A user `login` with `id`, in `orgs` and `teams` given as `(name, id)`.
    fn with_ids(login: &str, id: u64, orgs: &[(&str, u64)], teams: &[(&str, u64)]) -> GitHubUser {
        GitHubUser {
            id,
            name: None,
            email: Some("u@example.com".into()),
            identity: GitHubIdentity {
                provider: "github".into(),
                login: login.into(),
                orgs: orgs.iter().map(|(s, _)| s.to_string()).collect(),
                teams: teams.iter().map(|(s, _)| s.to_string()).collect(),
                id,
                org_ids: orgs.iter().map(|(_, i)| *i).collect(),
                team_ids: teams.iter().map(|(_, i)| *i).collect(),
            },
        }
    }

    /// A user whose id and whose organisations' and teams' ids follow from their names.
    fn user(login: &str, orgs: &[&str], teams: &[&str]) -> GitHubUser {
        let id = |s: &str| s.bytes().map(u64::from).sum::<u64>();
        let orgs: Vec<_> = orgs.iter().map(|o| (*o, id(o))).collect();
        let teams: Vec<_> = teams.iter().map(|t| (*t, id(t))).collect();
        with_ids(login, id(login), &orgs, &teams)
    }

    #[test]
    fn allow_rules() {
        let rules = AllowRules {
            orgs: vec!["acme".into()],
            teams: vec!["other/admins".into()],
            users: vec!["octocat".into()],
        };
        let pins = Pins::default();
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
            assert_eq!(u.admitted_by(&rules, &pins), want, "{case}");
        }
        assert!(
            user("anyone", &[], &[]).admitted_by(&AllowRules::default(), &pins),
            "no rules: any GitHub user"
        );
    }

    #[test]
    fn names_are_pinned_to_the_id_first_seen() {
        let by_id = |name: Option<&str>, id: u64| GitHubRef {
            name: name.map(Into::into),
            id: Some(id),
        };
        let users = |r: GitHubRef| AllowRules {
            users: vec![r],
            ..AllowRules::default()
        };
        let orgs = |r: GitHubRef| AllowRules {
            orgs: vec![r],
            ..AllowRules::default()
        };
        let teams = |r: GitHubRef| AllowRules {
            teams: vec![r],
            ..AllowRules::default()
        };
        // Each case: the rules, then who signs in one after the other on one table, and
        // whether each is admitted.
        type SignIns = Vec<(GitHubUser, bool)>;
        let cases: Vec<(&str, AllowRules, SignIns)> = vec![
            (
                "a name is pinned at first sight: its next owner is refused, the renamed first owner admitted",
                users("octocat".into()),
                vec![
                    (with_ids("octocat", 1, &[], &[]), true),
                    (with_ids("octocat", 2, &[], &[]), false),
                    (with_ids("octocat-renamed", 1, &[], &[]), true),
                    (with_ids("octocat", 1, &[], &[]), true),
                ],
            ),
            (
                "an id matches under any name, and nobody else under its name",
                users(by_id(Some("octocat"), 1)),
                vec![
                    (with_ids("octocat", 2, &[], &[]), false),
                    (with_ids("new-login", 1, &[], &[]), true),
                    (with_ids("octocat", 1, &[], &[]), true),
                ],
            ),
            (
                "an id alone",
                users(by_id(None, 1)),
                vec![
                    (with_ids("anyone", 1, &[], &[]), true),
                    (with_ids("anyone-else", 2, &[], &[]), false),
                ],
            ),
            (
                "an organisation pinned, renamed, registered again",
                orgs("acme".into()),
                vec![
                    (with_ids("mona", 10, &[("acme", 100)], &[]), true),
                    (with_ids("eve", 11, &[("acme", 666)], &[]), false),
                    (with_ids("hubot", 12, &[("acme-corp", 100)], &[]), true),
                ],
            ),
            (
                "an organisation by id",
                orgs(by_id(None, 100)),
                vec![
                    (with_ids("eve", 11, &[("acme", 666)], &[]), false),
                    (with_ids("mona", 10, &[("other", 5), ("acme-corp", 100)], &[]), true),
                ],
            ),
            (
                "a team by id, whatever its slug",
                teams(by_id(Some("acme/billing"), 7)),
                vec![
                    (with_ids("eve", 11, &[("acme", 100)], &[("acme/billing", 8)]), false),
                    (with_ids("mona", 10, &[("acme", 100)], &[("acme/payments", 7)]), true),
                ],
            ),
            (
                "a session stored without ids matches nothing and pins nothing",
                users("octocat".into()),
                vec![
                    (with_ids("octocat", 0, &[], &[]), false),
                    (with_ids("octocat", 2, &[], &[]), true),
                ],
            ),
        ];
        for (case, rules, signins) in cases {
            let pins = Pins::default();
            for (i, (u, want)) in signins.into_iter().enumerate() {
                assert_eq!(u.admitted_by(&rules, &pins), want, "{case}: sign-in {i}");
            }
        }
    }

    #[test]
    fn pins_are_per_provider() {
        let pins = Pins::default();
        let rules = AllowRules {
            users: vec!["octocat".into()],
            ..AllowRules::default()
        };
        assert!(with_ids("octocat", 1, &[], &[]).admitted_by(&rules, &pins));
        let mut elsewhere = with_ids("octocat", 2, &[], &[]);
        elsewhere.identity.provider = "gitea".into();
        assert!(
            elsewhere.admitted_by(&rules, &pins),
            "another forge's octocat is pinned on its own"
        );
        assert!(!with_ids("octocat", 2, &[], &[]).admitted_by(&rules, &pins));
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
