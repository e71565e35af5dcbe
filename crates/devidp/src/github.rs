//! A stand-in GitHub served in-process on loopback, for `authgate demo` and the tests: the OAuth
//! app endpoints (`/login/oauth/authorize` with a page to choose a user, and
//! `/login/oauth/access_token`, answering JSON errors with 200 as GitHub does) and the REST API
//! under `/api/v3` (as GitHub Enterprise Server serves it): `/user`, `/user/emails`,
//! `/user/orgs`, `/user/teams`, paginated with `Link` headers. Organisations and teams get
//! numeric ids when first seen, which stay theirs when renamed. With the `testing` feature it
//! has knobs: rate limiting, API outages, revoked tokens, membership changes, renames, page size.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const AUTHORIZE_PATH: &str = "/login/oauth/authorize";
const TOKEN_PATH: &str = "/login/oauth/access_token";
/// Where the REST API is, below the server's root (as on GitHub Enterprise Server).
pub const API_PREFIX: &str = "/api/v3";

/// Why the stand-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum GitHubStandInError {
    /// Not a loopback address.
    #[error("{0} is not a loopback address: the stand-in GitHub only listens on loopback")]
    NotLoopback(SocketAddr),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A user of the stand-in GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandInUser {
    /// The numeric id.
    pub id: u64,
    /// The login.
    pub login: String,
    /// The display name.
    pub name: Option<String>,
    /// The primary email.
    pub email: String,
    /// Whether the primary email is verified.
    pub verified: bool,
    /// Organisations.
    pub orgs: Vec<String>,
    /// Teams as `(org, team-slug)`.
    pub teams: Vec<(String, String)>,
}

impl StandInUser {
    /// A user with a verified email `{login}@users.example`, in no organisation.
    pub fn new(id: u64, login: &str) -> StandInUser {
        StandInUser {
            id,
            login: login.into(),
            name: None,
            email: format!("{login}@users.example"),
            verified: true,
            orgs: Vec::new(),
            teams: Vec::new(),
        }
    }

    /// The same user, named.
    pub fn named(mut self, name: &str) -> StandInUser {
        self.name = Some(name.into());
        self
    }

    /// The same user, member of `org`.
    pub fn in_org(mut self, org: &str) -> StandInUser {
        self.orgs.push(org.into());
        self
    }

    /// The same user, member of team `org/team` (and so of `org`).
    pub fn in_team(mut self, org: &str, team: &str) -> StandInUser {
        if !self.orgs.iter().any(|o| o == org) {
            self.orgs.push(org.into());
        }
        self.teams.push((org.into(), team.into()));
        self
    }
}

/// The users `authgate demo`'s stand-in GitHub knows.
pub fn demo_users() -> Vec<StandInUser> {
    vec![
        StandInUser::new(583231, "octocat")
            .named("The Octocat")
            .in_team("demo-org", "billing"),
        StandInUser::new(9919, "hubot")
            .named("Hubot")
            .in_org("demo-org"),
        StandInUser::new(424242, "outsider").named("Out Sider"),
    ]
}

#[derive(Debug, Clone)]
struct App {
    secret: String,
    callback: String,
}

#[derive(Debug, Clone)]
struct Code {
    client_id: String,
    redirect_uri: String,
    login: String,
    scope: String,
    challenge: Option<String>,
}

#[derive(Default)]
struct State_ {
    apps: HashMap<String, App>,
    users: Vec<StandInUser>,
    codes: HashMap<String, Code>,
    /// token → (user id, scope)
    tokens: HashMap<String, (u64, String)>,
    /// Organisation name → id.
    org_ids: HashMap<String, u64>,
    /// `(org, team-slug)` → id.
    team_ids: HashMap<(String, String), u64>,
    /// The last id given to an organisation or team.
    last_id: u64,
    rate_limited: bool,
    api_status: Option<u16>,
    authorize_error: Option<String>,
    page_size: Option<usize>,
}

struct Shared {
    addr: SocketAddr,
    state: Mutex<State_>,
    api_requests: AtomicUsize,
    token_requests: AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State_ {
    /// The organisation's id, given when first seen.
    fn org_id(&mut self, org: &str) -> u64 {
        if let Some(id) = self.org_ids.get(org) {
            return *id;
        }
        self.last_id += 1;
        let id = 5_000_000 + self.last_id;
        self.org_ids.insert(org.into(), id);
        id
    }

    /// The team's id, given when first seen.
    fn team_id(&mut self, org: &str, team: &str) -> u64 {
        if let Some(id) = self.team_ids.get(&(org.into(), team.into())) {
            return *id;
        }
        self.last_id += 1;
        let id = 7_000_000 + self.last_id;
        self.team_ids.insert((org.into(), team.into()), id);
        id
    }
}

/// Handle to a running stand-in GitHub; clones share it; it stops on [`GitHubStandIn::shutdown`]
/// or when the last handle is dropped (which drops the stop signal's sender).
#[derive(Clone)]
pub struct GitHubStandIn {
    shared: Arc<Shared>,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl std::fmt::Debug for GitHubStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubStandIn")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl GitHubStandIn {
    /// Starts on `listen` (loopback only; port 0 picks a free port) on the current runtime.
    pub async fn start(listen: SocketAddr) -> Result<GitHubStandIn, GitHubStandInError> {
        if !listen.ip().is_loopback() {
            return Err(GitHubStandInError::NotLoopback(listen));
        }
        let bind_failed = |source| GitHubStandInError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_failed)?;
        let addr = listener.local_addr().map_err(bind_failed)?;
        let shared = Arc::new(Shared {
            addr,
            state: Mutex::new(State_::default()),
            api_requests: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(AUTHORIZE_PATH, get(authorize))
            .route(TOKEN_PATH, post(token))
            .route(&format!("{API_PREFIX}/user"), get(user))
            .route(&format!("{API_PREFIX}/user/emails"), get(emails))
            .route(&format!("{API_PREFIX}/user/orgs"), get(orgs))
            .route(&format!("{API_PREFIX}/user/teams"), get(teams))
            .with_state(shared.clone());
        let (sender, receiver) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let stopped = async {
                let _ = receiver.await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(%error, "stand-in github failed");
            }
        });
        Ok(GitHubStandIn {
            shared,
            stop: Arc::new(Mutex::new(Some(sender))),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The provider's `base_url` (the OAuth endpoints).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The provider's `api_url` (the REST API).
    pub fn api_url(&self) -> String {
        format!("http://{}{API_PREFIX}", self.shared.addr)
    }

    /// The authorization endpoint.
    pub fn authorize_url(&self) -> String {
        format!("http://{}{AUTHORIZE_PATH}", self.shared.addr)
    }

    /// Registers an OAuth app with its callback URL.
    pub fn register_app(&self, client_id: &str, secret: &str, callback: &str) {
        self.shared.state().apps.insert(
            client_id.into(),
            App {
                secret: secret.into(),
                callback: callback.into(),
            },
        );
    }

    /// Adds (or replaces) a user: the one with its login or its id goes. Organisations and
    /// teams not seen before get their ids.
    pub fn add_user(&self, user: StandInUser) {
        let mut st = self.shared.state();
        st.users
            .retain(|u| u.login != user.login && u.id != user.id);
        for o in &user.orgs {
            st.org_id(o);
        }
        for (o, t) in &user.teams {
            st.team_id(o, t);
        }
        st.users.push(user);
    }

    /// The id of organisation `org` (given when a user in it was added).
    pub fn org_id(&self, org: &str) -> Option<u64> {
        self.shared.state().org_ids.get(org).copied()
    }

    /// The id of team `org/team` (given when a user in it was added).
    pub fn team_id(&self, org: &str, team: &str) -> Option<u64> {
        self.shared
            .state()
            .team_ids
            .get(&(org.into(), team.into()))
            .copied()
    }

    /// Stops accepting connections.
    pub fn shutdown(&self) {
        if let Some(s) = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = s.send(());
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl GitHubStandIn {
    /// Removes `login` from `org` and its teams there.
    pub fn remove_from_org(&self, login: &str, org: &str) {
        let mut st = self.shared.state();
        if let Some(u) = st.users.iter_mut().find(|u| u.login == login) {
            u.orgs.retain(|o| o != org);
            u.teams.retain(|(o, _)| o != org);
        }
    }

    /// Revokes every token of `login` (the user removed the app's authorization).
    pub fn revoke_tokens(&self, login: &str) {
        let mut st = self.shared.state();
        let id = st.users.iter().find(|u| u.login == login).map(|u| u.id);
        st.tokens.retain(|_, (i, _)| Some(*i) != id);
    }

    /// Renames the user `old` to `new`: same id, same tokens; `old` is free to register again.
    pub fn rename_user(&self, old: &str, new: &str) {
        let mut st = self.shared.state();
        if let Some(u) = st.users.iter_mut().find(|u| u.login == old) {
            u.login = new.into();
            u.email = format!("{new}@users.example");
        }
    }

    /// Renames the organisation `old` to `new` (its members' too): same id, its teams' ids too;
    /// `old` is free to register again (a later user in `old` gets a new id).
    pub fn rename_org(&self, old: &str, new: &str) {
        let mut st = self.shared.state();
        for u in &mut st.users {
            for o in &mut u.orgs {
                if o == old {
                    *o = new.into();
                }
            }
            for (o, _) in &mut u.teams {
                if o == old {
                    *o = new.into();
                }
            }
        }
        if let Some(id) = st.org_ids.remove(old) {
            st.org_ids.insert(new.into(), id);
        }
        let moved: Vec<_> = st
            .team_ids
            .keys()
            .filter(|(o, _)| o == old)
            .cloned()
            .collect();
        for (o, t) in moved {
            if let Some(id) = st.team_ids.remove(&(o, t.clone())) {
                st.team_ids.insert((new.into(), t), id);
            }
        }
    }

    /// The API answers 403 with `x-ratelimit-remaining: 0` while set.
    pub fn set_rate_limited(&self, limited: bool) {
        self.shared.state().rate_limited = limited;
    }

    /// The API answers this status to everything (e.g. 502) while set.
    pub fn set_api_status(&self, status: Option<u16>) {
        self.shared.state().api_status = status;
    }

    /// The authorization endpoint sends the browser back with this `error` while set.
    pub fn set_authorize_error(&self, error: Option<&str>) {
        self.shared.state().authorize_error = error.map(Into::into);
    }

    /// Lists are served at most `size` items a page (with `Link: rel="next"`).
    pub fn set_page_size(&self, size: Option<usize>) {
        self.shared.state().page_size = size;
    }

    /// Calls to the REST API so far.
    pub fn api_requests(&self) -> usize {
        self.shared.api_requests.load(Ordering::SeqCst)
    }

    /// Calls to the token endpoint so far.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }
}

fn params(query: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn random_string() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `GET /login/oauth/authorize`: checks the app and its callback; without `login=` a page to
/// choose a user, with it back to the callback with `code` and `state`.
async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let raw = query.clone().unwrap_or_default();
    let p = params(query);
    let (Some(client_id), Some(redirect_uri)) = (p.get("client_id"), p.get("redirect_uri")) else {
        return (
            StatusCode::BAD_REQUEST,
            "client_id and redirect_uri are required",
        )
            .into_response();
    };
    let app = shared.state().apps.get(client_id).cloned();
    let Some(app) = app else {
        return (StatusCode::NOT_FOUND, "no such OAuth app").into_response();
    };
    if &app.callback != redirect_uri {
        return (
            StatusCode::BAD_REQUEST,
            "The redirect_uri MUST match the registered callback URL for this application.",
        )
            .into_response();
    }
    let state = p.get("state").cloned().unwrap_or_default();
    let back = |pairs: &[(&str, &str)]| match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs.iter().copied());
            (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
        }
        Err(_) => (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response(),
    };
    let error = shared.state().authorize_error.clone();
    if let Some(error) = error {
        return back(&[
            ("error", &error),
            (
                "error_description",
                "The user has denied your application access.",
            ),
            ("state", &state),
        ]);
    }
    let users = shared.state().users.clone();
    let Some(login) = p.get("login") else {
        let links: String = users
            .iter()
            .map(|u| {
                let href = format!("{AUTHORIZE_PATH}?{raw}&login={}", u.login).replace('&', "&amp;");
                format!("<li><a class=\"user\" id=\"gh-{login}\" href=\"{href}\">{login}</a> <small>{orgs}</small></li>", login = crate::echo::escape(&u.login), orgs = crate::echo::escape(&u.orgs.join(", ")))
            })
            .collect();
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Stand-in GitHub: authorize</title></head>\
             <body><h1>Authorize {app}</h1><p>Stand-in GitHub: choose a user.</p><ul>{links}</ul></body></html>\n",
            app = crate::echo::escape(client_id),
        );
        return ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response();
    };
    if !users.iter().any(|u| &u.login == login) {
        return (StatusCode::BAD_REQUEST, "unknown user").into_response();
    }
    let challenge = match (
        p.get("code_challenge"),
        p.get("code_challenge_method").map(String::as_str),
    ) {
        (Some(c), Some("S256")) => Some(c.clone()),
        (None, _) => None,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "code_challenge_method must be S256",
            )
                .into_response()
        }
    };
    let code = random_string();
    shared.state().codes.insert(
        code.clone(),
        Code {
            client_id: client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            login: login.clone(),
            scope: p.get("scope").cloned().unwrap_or_default(),
            challenge,
        },
    );
    back(&[("code", &code), ("state", &state)])
}

/// `POST /login/oauth/access_token`: GitHub answers errors with 200 and an `error` field.
async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    shared.token_requests.fetch_add(1, Ordering::SeqCst);
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let answer = |v: Value| {
        if wants_json {
            Json(v).into_response()
        } else {
            let pairs: Vec<(String, String)> = v
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let text = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            (
                [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
                text,
            )
                .into_response()
        }
    };
    let error = |e: &str, d: &str| answer(json!({"error": e, "error_description": d}));
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut st = shared.state();
    let Some(app) = st.apps.get(&get("client_id")).cloned() else {
        return error(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        );
    };
    if app.secret != get("client_secret") {
        return error(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        );
    }
    let Some(code) = st.codes.remove(&get("code")) else {
        return error(
            "bad_verification_code",
            "The code passed is incorrect or expired.",
        );
    };
    if code.client_id != get("client_id") {
        return error(
            "bad_verification_code",
            "The code passed is incorrect or expired.",
        );
    }
    if form
        .get("redirect_uri")
        .is_some_and(|r| *r != code.redirect_uri)
    {
        return error(
            "redirect_uri_mismatch",
            "The redirect_uri MUST match the registered callback URL for this application.",
        );
    }
    if let Some(challenge) = &code.challenge {
        use base64::Engine as _;
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, get("code_verifier").as_bytes());
        if base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()) != *challenge {
            return error(
                "bad_verification_code",
                "The code_verifier does not match the code_challenge.",
            );
        }
    }
    let Some(id) = st
        .users
        .iter()
        .find(|u| u.login == code.login)
        .map(|u| u.id)
    else {
        return error(
            "bad_verification_code",
            "The code passed is incorrect or expired.",
        );
    };
    let token = format!("gho_{}", random_string());
    st.tokens.insert(token.clone(), (id, code.scope.clone()));
    answer(
        json!({"access_token": token, "token_type": "bearer", "scope": code.scope.replace(' ', ",")}),
    )
}

/// The user and scope behind the request's token, or the API's refusal.
fn caller(shared: &Shared, request: &Request) -> Result<(StandInUser, String), Box<Response>> {
    shared.api_requests.fetch_add(1, Ordering::SeqCst);
    let st = shared.state();
    if let Some(status) = st.api_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return Err(Box::new(
            (status, Json(json!({"message": "stand-in outage"}))).into_response(),
        ));
    }
    if st.rate_limited {
        return Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                [
                    ("x-ratelimit-remaining", "0".to_owned()),
                    ("x-ratelimit-reset", "1893456000".to_owned()),
                ],
                Json(json!({"message": "API rate limit exceeded"})),
            )
                .into_response(),
        ));
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        });
    let bad = || {
        Box::new(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Bad credentials"})),
            )
                .into_response(),
        )
    };
    let (id, scope) = token
        .and_then(|t| st.tokens.get(t))
        .cloned()
        .ok_or_else(bad)?;
    let user = st
        .users
        .iter()
        .find(|u| u.id == id)
        .cloned()
        .ok_or_else(bad)?;
    Ok((user, scope))
}

/// One page of `items` as the request's `page` and `per_page` ask, with a `Link` to the next.
fn paged(shared: &Shared, request: &Request, items: Vec<Value>) -> Response {
    let p = params(request.uri().query().map(str::to_owned));
    let limit = shared.state().page_size.unwrap_or(100);
    let per_page = p
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100)
        .min(limit);
    let page = p
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let start = (page - 1) * per_page;
    let slice: Vec<Value> = items.iter().skip(start).take(per_page).cloned().collect();
    let mut resp = Json(Value::Array(slice)).into_response();
    if start + per_page < items.len() {
        let next = format!(
            "<http://{}{}?per_page={per_page}&page={}>; rel=\"next\"",
            shared.addr,
            request.uri().path(),
            page + 1
        );
        if let Ok(v) = next.parse() {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

async fn user(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match caller(&shared, &request) {
        Ok((u, _)) => Json(
            json!({"id": u.id, "login": u.login, "name": u.name, "email": null, "type": "User"}),
        )
        .into_response(),
        Err(r) => *r,
    }
}

async fn emails(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match caller(&shared, &request) {
        Ok((u, scope))
            if scope
                .split([' ', ','])
                .any(|s| s == "user:email" || s == "user") =>
        {
            paged(
                &shared,
                &request,
                vec![
                    json!({"email": u.email, "primary": true, "verified": u.verified, "visibility": "private"}),
                ],
            )
        }
        Ok(_) => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response(),
        Err(r) => *r,
    }
}

fn has_read_org(scope: &str) -> bool {
    scope
        .split([' ', ','])
        .any(|s| matches!(s, "read:org" | "write:org" | "admin:org"))
}

async fn orgs(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match caller(&shared, &request) {
        // Without read:org, GitHub lists only public memberships: the stand-in lists none.
        Ok((u, scope)) => {
            let items = if has_read_org(&scope) {
                let mut st = shared.state();
                u.orgs
                    .iter()
                    .map(|o| json!({"id": st.org_id(o), "login": o}))
                    .collect()
            } else {
                Vec::new()
            };
            paged(&shared, &request, items)
        }
        Err(r) => *r,
    }
}

async fn teams(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match caller(&shared, &request) {
        Ok((u, scope)) if has_read_org(&scope) => {
            let mut st = shared.state();
            let items = u
                .teams
                .iter()
                .map(|(o, t)| json!({"id": st.team_id(o, t), "slug": t, "name": t, "organization": {"id": st.org_id(o), "login": o}}))
                .collect();
            drop(st);
            paged(&shared, &request, items)
        }
        Ok(_) => (
            StatusCode::FORBIDDEN,
            Json(
                json!({"message": "Resource not accessible by integration: read:org is required"}),
            ),
        )
            .into_response(),
        Err(r) => *r,
    }
}
