//! End to end: sign-in through a client's own GitHub OAuth app (a stand-in GitHub over real
//! sockets), beside an OIDC client on another origin of the same gateway; allow rules, grants,
//! shadow grants, the chooser page of a two-provider client, re-validation, and GitHub's failures.

mod common;

use common::browser::*;
use common::*;
use devidp::echo::EchoServer;
use devidp::github::{GitHubStandIn, StandInUser};
use devidp::idp::DevIdp;
use reqwest::header::{ACCEPT, COOKIE};
use serde_json::{json, Value};
use std::time::Duration;

struct World {
    idp: DevIdp,
    gh: GitHubStandIn,
    echo: EchoServer,
    gw: Gateway,
    /// The OIDC client `billing`.
    billing: String,
    /// The GitHub client `portfolio`.
    portfolio: String,
    /// `both`, signing in with either.
    both: String,
}

impl World {
    async fn start() -> World {
        let idp = DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        idp.set_audience(AUDIENCE);
        // As the IdP this gateway is first deployed with: opaque access tokens, no permissions in id_tokens.
        idp.set_opaque_access_tokens(true);
        let gh = GitHubStandIn::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        for u in [
            StandInUser::new(583231, "octocat")
                .named("The Octocat")
                .in_team("acme", "billing"),
            StandInUser::new(9919, "hubot").in_org("acme"),
            StandInUser::new(1001, "solo"),
            StandInUser::new(424242, "outsider").in_org("elsewhere"),
            StandInUser {
                verified: false,
                ..StandInUser::new(777, "unverified").in_org("acme")
            },
        ] {
            gh.add_user(u);
        }
        let echo = EchoServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let gw = start_gateway(
            |port, admin| {
                idp.register_client(
                    "abc",
                    Some("dev"),
                    &[&format!("http://127.0.0.1:{port}/_authgate/callback")],
                );
                idp.register_client(
                    "both-oidc",
                    Some("both-secret"),
                    &[&format!("http://both.test:{port}/_authgate/callback")],
                );
                gh.register_app(
                    "gh-portfolio",
                    "gh-secret",
                    &format!("http://localhost:{port}/_authgate/callback"),
                );
                gh.register_app(
                    "gh-both",
                    "gh-both-secret",
                    &format!("http://both.test:{port}/_authgate/callback"),
                );
                config(port, admin, &idp, &gh, echo.addr())
            },
            true,
        )
        .await;
        let port = gw.port;
        World {
            idp,
            gh,
            echo,
            gw,
            billing: format!("http://127.0.0.1:{port}"),
            portfolio: format!("http://localhost:{port}"),
            both: format!("http://both.test:{port}"),
        }
    }

    /// A browser: keeps cookies, follows no redirects, finds `both.test` on loopback.
    fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(
                "both.test",
                format!("127.0.0.1:{}", self.gw.port).parse().unwrap(),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

fn config(
    port: u16,
    admin: u16,
    idp: &DevIdp,
    gh: &GitHubStandIn,
    upstream: std::net::SocketAddr,
) -> String {
    format!(
        r##"
[proxy]
listen = "127.0.0.1:{port}"
threads = 2
grace_period = "1s"

[admin]
listen = "127.0.0.1:{admin}"

[idp]
issuer = "{issuer}"
audience = "{AUDIENCE}"
jwks_min_refetch_interval = "1ms"
display_name = "Example SSO"

[session]
allow_insecure_http = true
socket_recheck = "1s"

[[providers]]
name = "github"
kind = "github"
base_url = "{gh_base}"
api_url = "{gh_api}"
timeout = "3s"
revalidate_interval = "1s"
# The stand-in is GitHub (its Enterprise Server layout): its verified flag is believed.
trust_verified_email = true

[[clients]]
name = "billing"
origins = ["http://127.0.0.1:{port}"]
client_id = "abc"
client_secret = "dev"
namespace = "client_abc"

[[clients.grants]]
permissions = ["invoice:read"]
emails = ["alice@example.com"]

[[clients.grants]]
permissions = ["report:read"]
provider = "idp"
subjects = ["user_bob"]

[[clients]]
name = "portfolio"
origins = ["http://localhost:{port}"]
namespace = "client_portfolio"
allowed_orgs = ["acme"]
allowed_users = ["solo"]
display_name = "Portfolio Admin"
accent_color = "#6f42c1"

[[clients.providers]]
name = "github"
client_id = "gh-portfolio"
client_secret = "gh-secret"

[[clients.grants]]
name = "billing-team"
permissions = ["invoice:read"]
teams = ["acme/billing"]

# Shadow grants: weighed and counted, giving nothing. One would add report:read for the org;
# one would narrow invoice:read from the team to one user.
[[clients.grants]]
name = "acme-reports"
enforce = false
permissions = ["report:read"]
orgs = ["acme"]

[[clients.grants]]
name = "invoice-by-login"
enforce = false
replaces = "billing-team"
permissions = ["invoice:read"]
users = ["hubot"]

[[clients]]
name = "both"
origins = ["http://both.test:{port}"]
client_id = "both-oidc"
client_secret = "both-secret"
namespace = "client_both"

[[clients.providers]]
name = "github"
client_id = "gh-both"
client_secret = "gh-both-secret"

[[clients.providers]]
name = "idp"

[[upstreams]]
name = "app"
addresses = ["{upstream}"]

[[routes]]
name = "public"
path = "/public/*"
upstream = "app"
auth = "none"

[[routes]]
name = "app"
path = "/app/*"
upstream = "app"
auth = "authenticated"

# The signed identity, beside the headers.
[[routes]]
name = "signed"
path = "/signed/*"
upstream = "app"
auth = "authenticated"
signed_identity = true

# Only here does the user's GitHub token go upstream (a GitHub API proxy, say).
[[routes]]
name = "github-api"
path = "/gh/*"
upstream = "app"
auth = "authenticated"
forward_session_token = true

[[routes]]
name = "invoice-read"
path = "/api/invoices/{{id}}"
upstream = "app"
permission = "invoice:read"

[[routes]]
name = "report-read"
path = "/api/reports/{{id}}"
upstream = "app"
permission = "report:read"
"##,
        issuer = idp.issuer(),
        gh_base = gh.base_url(),
        gh_api = gh.api_url(),
    )
}

/// Signs in at `url` through GitHub as `login`; returns the gateway's answer to the callback.
async fn github_login(w: &World, b: &reqwest::Client, url: &str, login: &str) -> reqwest::Response {
    let r = navigate(b, url).await;
    assert_eq!(
        r.status(),
        302,
        "a navigation without a session goes to sign in"
    );
    let authorize = location(&r);
    assert!(authorize.starts_with(&w.gh.authorize_url()), "{authorize}");
    let r = b
        .get(format!("{authorize}&login={login}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        302,
        "stand-in GitHub: {}",
        r.text().await.unwrap()
    );
    navigate(b, &location(&r)).await
}

#[tokio::test]
async fn a_github_client_and_an_oidc_client_on_one_gateway() {
    let w = World::start().await;

    // The GitHub client: its own OAuth app, its own callback, state and PKCE, read:org for its rules.
    let b = w.browser();
    let r = navigate(&b, &format!("{}/app/page?x=1", w.portfolio)).await;
    assert_eq!(r.status(), 302);
    let q = query(&location(&r));
    assert_eq!(q["client_id"], "gh-portfolio");
    assert_eq!(
        q["redirect_uri"],
        format!("{}/_authgate/callback", w.portfolio)
    );
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(
        q["state"].len() >= 22 && q["code_challenge"].len() >= 43,
        "{q:?}"
    );
    let scopes: Vec<&str> = q["scope"].split(' ').collect();
    assert!(
        ["read:user", "user:email", "read:org"]
            .iter()
            .all(|s| scopes.contains(s)),
        "{scopes:?}"
    );

    let r = github_login(&w, &b, &format!("{}/app/page?x=1", w.portfolio), "octocat").await;
    assert_eq!(r.status(), 302, "callback: {}", r.text().await.unwrap());
    assert_eq!(location(&r), format!("{}/app/page?x=1", w.portfolio));
    let session = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("authgate="))
        .expect("a session cookie");
    let session_value = session.split(';').next().unwrap().to_string();

    let r = api(&b, &format!("{}/app/page", w.portfolio)).await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    let h = &echoed["headers"];
    assert_eq!(
        h["x-auth-subject"], "github:583231",
        "GitHub's numeric id, after the provider's name, is the subject"
    );
    assert_eq!(h["x-auth-provider"], "github");
    assert_eq!(h["x-auth-email"], "octocat@users.example");
    assert_eq!(
        h["x-auth-email-verified"], "true",
        "the primary verified email"
    );
    assert_eq!(h["x-auth-client"], "portfolio");
    assert_eq!(h["x-auth-name"], "octocat", "the login as the name");
    assert_eq!(h["x-auth-groups"], "acme:billing");
    assert!(h.get("authorization").is_none(), "{h}");
    assert!(
        !echoed.to_string().contains("gho_"),
        "GitHub's token reached the upstream: {echoed}"
    );

    // Only the route that asks for it gets the user's GitHub token.
    let echoed: Value = api(&b, &format!("{}/gh/repos", w.portfolio))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        echoed["headers"]["authorization"]
            .as_str()
            .is_some_and(|a| a.starts_with("Bearer gho_")),
        "{echoed}"
    );

    // A team grant gives invoice:read in the client's namespace; nothing gives report:read.
    let r = api(&b, &format!("{}/api/invoices/7", w.portfolio)).await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(
        echoed["headers"]["x-auth-permission"],
        "client_portfolio:invoice:read"
    );
    assert_eq!(
        api(&b, &format!("{}/api/reports/1", w.portfolio))
            .await
            .status(),
        403
    );

    let info: Value = api(&b, &format!("{}/_authgate/session", w.portfolio))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["provider"], "github");
    assert_eq!(info["subject"], "github:583231", "as upstreams get it");
    assert_eq!(info["login"], "octocat");
    assert_eq!(info["client"], "portfolio");
    assert_eq!(info["origin"], w.portfolio);
    assert_eq!(
        info["permissions"]["client_portfolio:invoice"],
        json!(["read"]),
        "{info}"
    );
    assert!(!info.to_string().contains("gho_"), "{info}");

    // The GitHub client's session is refused on the OIDC client's origin.
    let r = reqwest::Client::new()
        .get(format!("{}/app/", w.billing))
        .header(ACCEPT, "application/json")
        .header(COOKIE, &session_value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());

    // The OIDC client on the same gateway: alice through a grant by verified email, bob by subject.
    let alice = w.browser();
    assert_eq!(
        log_in(&alice, &format!("{}/app/", w.billing), "alice").await,
        format!("{}/app/", w.billing)
    );
    let r = api(&alice, &format!("{}/api/invoices/7", w.billing)).await;
    let status = r.status();
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(echoed["headers"]["x-auth-subject"], "user_alice");
    assert_eq!(echoed["headers"]["x-auth-provider"], "idp");
    assert_eq!(
        echoed["headers"]["x-auth-permission"],
        "client_abc:invoice:read"
    );
    assert_eq!(
        api(&alice, &format!("{}/api/reports/1", w.billing))
            .await
            .status(),
        403
    );
    let bob = w.browser();
    log_in(&bob, &format!("{}/app/", w.billing), "bob").await;
    assert_eq!(
        api(&bob, &format!("{}/api/invoices/7", w.billing))
            .await
            .status(),
        403,
        "no grant names bob's email"
    );
    assert_eq!(
        api(&bob, &format!("{}/api/reports/1", w.billing))
            .await
            .status(),
        200,
        "a grant names bob's subject"
    );
    let info: Value = api(&bob, &format!("{}/_authgate/session", w.billing))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["provider"], "idp");
}

#[tokio::test]
async fn subjects_of_two_providers_never_collide() {
    let w = World::start().await;
    // octocat (GitHub id 583231) signs in to `both` through GitHub.
    let b = w.browser();
    let r = navigate(
        &b,
        &format!("{}/_authgate/login?provider=github&rd=%2Fapp%2Fx", w.both),
    )
    .await;
    let r = b
        .get(format!("{}&login=octocat", location(&r)))
        .send()
        .await
        .unwrap();
    let r = b.get(location(&r)).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let github: Value = api(&b, &format!("{}/app/x", w.both))
        .await
        .json()
        .await
        .unwrap();
    let gh = &github["headers"];
    assert_eq!(gh["x-auth-provider"], "github", "{gh}");
    assert_eq!(gh["x-auth-subject"], "github:583231", "{gh}");

    // The IdP's user whose `sub` is the same number, at the same client: another subject.
    let bearer = |sub: &str| {
        w.idp
            .mint(json!({"sub": sub, "aud": AUDIENCE, "azp": "both-oidc"}))
    };
    let r = w
        .browser()
        .get(format!("{}/app/x", w.both))
        .bearer_auth(bearer("583231"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let idp: Value = r.json().await.unwrap();
    let h = &idp["headers"];
    assert_eq!(h["x-auth-provider"], "idp", "{h}");
    assert_eq!(h["x-auth-subject"], "583231", "{h}");
    assert_ne!(
        h["x-auth-subject"], gh["x-auth-subject"],
        "two providers' users share one subject"
    );

    // An IdP subject in a GitHub-type provider's form (any case) is refused: upstreams would
    // take it for octocat. Nothing reaches the upstream.
    for sub in ["github:583231", "GitHub:583231", "github:"] {
        let before = w.echo.requests();
        let r = w
            .browser()
            .get(format!("{}/app/x", w.both))
            .header(ACCEPT, "application/json")
            .bearer_auth(bearer(sub))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{sub}: {}", r.text().await.unwrap());
        assert_eq!(w.echo.requests(), before, "{sub} reached the upstream");
    }
    // Subjects with a colon that name no provider are the IdP's.
    let r = w
        .browser()
        .get(format!("{}/app/x", w.both))
        .bearer_auth(bearer("auth0:42"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The signed identity names the provider and its issuer.
    let signed: Value = api(&b, &format!("{}/signed/x", w.both))
        .await
        .json()
        .await
        .unwrap();
    let jwt = signed["headers"]["x-auth-jwt"]
        .as_str()
        .unwrap_or_else(|| panic!("no signed identity: {signed}"));
    let payload = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jwt.split('.').nth(1).unwrap(),
    )
    .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["sub"], "github:583231", "{claims}");
    assert_eq!(claims["provider"], "github", "{claims}");
    assert_eq!(claims["provider_iss"], w.gh.base_url(), "{claims}");
    assert_eq!(claims["email"], "octocat@users.example", "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
}

#[tokio::test]
async fn grants_by_email_need_a_verified_email() {
    let w = World::start().await;
    // billing grants invoice:read to alice@example.com: only when the token says it is verified.
    for (verified, want) in [(json!(false), 403), (Value::Null, 403), (json!(true), 200)] {
        let mut claims =
            json!({"sub": "eve", "email": "alice@example.com", "aud": AUDIENCE, "azp": "abc"});
        if !verified.is_null() {
            claims["email_verified"] = verified.clone();
        }
        let before = w.echo.requests();
        let r = reqwest::Client::new()
            .get(format!("{}/api/invoices/7", w.billing))
            .header(ACCEPT, "application/json")
            .bearer_auth(w.idp.mint(claims))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "email_verified {verified}");
        if want == 403 {
            assert_eq!(w.echo.requests(), before, "email_verified {verified}");
        }
    }
}

/// `authgate_shadow_grants_total` for one grant of `portfolio`.
async fn shadow_grant_count(w: &World, grant: &str, would: &str) -> f64 {
    let metrics = reqwest::get(format!("{}/metrics", w.gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        "authgate_shadow_grants_total{{client=\"portfolio\",grant=\"{grant}\",would=\"{would}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn shadow_grants_are_counted_and_change_nothing() {
    let w = World::start().await;
    let invoice = format!("{}/api/invoices/7", w.portfolio);
    let report = format!("{}/api/reports/1", w.portfolio);

    // octocat has invoice:read through the enforced team grant; the narrowed shadow grant would
    // take it away: the request goes upstream with the permission, and is counted as "refuse".
    let octocat = w.browser();
    github_login(&w, &octocat, &format!("{}/app/", w.portfolio), "octocat").await;
    let r = api(&octocat, &invoice).await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(
        echoed["headers"]["x-auth-permission"], "client_portfolio:invoice:read",
        "{echoed}"
    );
    assert_eq!(echoed["headers"]["x-auth-subject"], "github:583231");
    assert_eq!(
        shadow_grant_count(&w, "invoice-by-login", "refuse").await,
        1.0
    );
    assert_eq!(
        shadow_grant_count(&w, "invoice-by-login", "allow").await,
        0.0
    );

    // Nothing enforced gives report:read; the org's shadow grant would: refused (nothing reaches
    // the upstream), counted as "allow".
    let before = w.echo.requests();
    assert_eq!(api(&octocat, &report).await.status(), 403);
    assert_eq!(
        w.echo.requests(),
        before,
        "a shadow grant let a request through"
    );
    assert_eq!(shadow_grant_count(&w, "acme-reports", "allow").await, 1.0);

    // hubot (acme, not in the team) is named by the narrowed grant only: refused, counted as "allow".
    let hubot = w.browser();
    github_login(&w, &hubot, &format!("{}/app/", w.portfolio), "hubot").await;
    let before = w.echo.requests();
    assert_eq!(api(&hubot, &invoice).await.status(), 403);
    assert_eq!(api(&hubot, &report).await.status(), 403);
    assert_eq!(
        w.echo.requests(),
        before,
        "a shadow grant let a request through"
    );
    assert_eq!(
        shadow_grant_count(&w, "invoice-by-login", "allow").await,
        1.0
    );
    assert_eq!(shadow_grant_count(&w, "acme-reports", "allow").await, 2.0);
    // Its session lists only what enforced grants give.
    let info: Value = api(&hubot, &format!("{}/_authgate/session", w.portfolio))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["login"], "hubot");
    assert!(
        info["permissions"]
            .get("client_portfolio:invoice")
            .is_none()
            && info["permissions"].get("client_portfolio:report").is_none(),
        "{info}"
    );

    // A request the shadow grants would not change is not counted.
    let solo = w.browser();
    github_login(&w, &solo, &format!("{}/app/", w.portfolio), "solo").await;
    assert_eq!(api(&solo, &invoice).await.status(), 403);
    assert_eq!(
        shadow_grant_count(&w, "invoice-by-login", "allow").await,
        1.0
    );
    assert_eq!(
        shadow_grant_count(&w, "invoice-by-login", "refuse").await,
        1.0
    );
    assert_eq!(shadow_grant_count(&w, "acme-reports", "allow").await, 2.0);
    let log = w.gw.log.lock().unwrap().clone();
    assert!(
        log.contains("shadow grant would change the decision") && log.contains("invoice-by-login"),
        "{log}"
    );
}

#[tokio::test]
async fn allow_rules_admit_orgs_teams_and_users_and_refuse_the_rest() {
    let w = World::start().await;
    for (login, allowed) in [
        ("octocat", true),
        ("hubot", true),
        ("solo", true),
        ("outsider", false),
    ] {
        let b = w.browser();
        let r = github_login(&w, &b, &format!("{}/app/", w.portfolio), login).await;
        let has_session = set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("authgate=") && !c.contains("Max-Age=0"));
        if allowed {
            assert_eq!(r.status(), 302, "{login}");
            assert!(has_session, "{login}");
            assert_eq!(
                api(&b, &format!("{}/app/", w.portfolio)).await.status(),
                200,
                "{login}"
            );
        } else {
            assert_eq!(r.status(), 403, "{login}");
            assert!(!has_session, "{login} got a session");
            let csp = r
                .headers()
                .get("content-security-policy")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            assert!(csp.contains("default-src 'none'"), "{csp}");
            let page = r.text().await.unwrap();
            assert!(
                page.contains("Not allowed")
                    && page.contains("outsider")
                    && page.contains("Portfolio Admin"),
                "{page}"
            );
            assert!(
                page.contains("#6f42c1"),
                "the client's accent colour: {page}"
            );
            assert_eq!(
                api(&b, &format!("{}/app/", w.portfolio)).await.status(),
                401,
                "{login}"
            );
        }
    }
    // hubot is in the org but not the team: signed in, yet without the team's grant.
    let b = w.browser();
    github_login(&w, &b, &format!("{}/app/", w.portfolio), "hubot").await;
    assert_eq!(
        api(&b, &format!("{}/api/invoices/7", w.portfolio))
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn a_two_provider_client_shows_a_chooser() {
    let w = World::start().await;
    let b = w.browser();
    let r = navigate(&b, &format!("{}/app/x", w.both)).await;
    assert_eq!(r.status(), 302);
    let chooser = location(&r);
    assert!(
        chooser.starts_with(&format!("{}/_authgate/login?rd=", w.both)),
        "{chooser}"
    );
    let r = navigate(&b, &chooser).await;
    assert_eq!(r.status(), 200);
    let csp = r
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Sign in with GitHub") && page.contains("Sign in with Example SSO"),
        "{page}"
    );
    assert!(!page.contains("<script"), "{page}");
    // The links name the provider; GitHub's first, as the client lists it.
    let github_at = page.find("provider=github").expect("a GitHub link");
    let idp_at = page.find("provider=idp").expect("an IdP link");
    assert!(github_at < idp_at, "{page}");

    let r = navigate(
        &b,
        &format!("{}/_authgate/login?provider=github&rd=%2Fapp%2Fx", w.both),
    )
    .await;
    assert_eq!(r.status(), 302);
    assert_eq!(query(&location(&r))["client_id"], "gh-both");
    let r = navigate(
        &b,
        &format!("{}/_authgate/login?provider=idp&rd=%2Fapp%2Fx", w.both),
    )
    .await;
    assert!(
        location(&r).starts_with(&w.idp.authorize_url()),
        "{}",
        location(&r)
    );
    assert_eq!(query(&location(&r))["client_id"], "both-oidc");
    let r = navigate(&b, &format!("{}/_authgate/login?provider=gitlab", w.both)).await;
    assert_eq!(r.status(), 400, "an unknown provider is a clear refusal");

    // Through the chooser's GitHub link to the app.
    let r = b
        .get(format!(
            "{}/_authgate/login?provider=github&rd=%2Fapp%2Fx",
            w.both
        ))
        .send()
        .await
        .unwrap();
    let r = b
        .get(format!("{}&login=octocat", location(&r)))
        .send()
        .await
        .unwrap();
    let r = b.get(location(&r)).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), format!("{}/app/x", w.both));
    let echoed: Value = api(&b, &format!("{}/app/x", w.both))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-auth-client"], "both");
    assert_eq!(echoed["headers"]["x-auth-name"], "octocat");
}

#[tokio::test]
async fn sessions_are_revalidated_against_github() {
    let w = World::start().await;
    let url = format!("{}/api/invoices/7", w.portfolio);

    // Removed from the org: the session ends at the next re-validation (1 s here).
    let octocat = w.browser();
    github_login(&w, &octocat, &format!("{}/app/", w.portfolio), "octocat").await;
    assert_eq!(api(&octocat, &url).await.status(), 200);
    let calls = w.gh.api_requests();
    assert_eq!(api(&octocat, &url).await.status(), 200);
    assert_eq!(
        w.gh.api_requests(),
        calls,
        "within the interval GitHub is not asked again"
    );
    // Due again: however many requests arrive at once, GitHub is asked once (/user, /user/emails,
    // /user/orgs, /user/teams).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let calls = w.gh.api_requests();
    let burst = (0..8).map(|_| {
        let (b, url) = (octocat.clone(), url.clone());
        tokio::spawn(async move { api(&b, &url).await.status() })
    });
    for r in futures_join(burst).await {
        assert_eq!(r, 200);
    }
    assert_eq!(
        w.gh.api_requests() - calls,
        4,
        "one re-validation for eight requests"
    );
    w.gh.remove_from_org("octocat", "acme");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = api(&octocat, &url).await;
    assert_eq!(
        r.status(),
        401,
        "a user removed from the allowed org loses access"
    );
    assert!(
        set_cookies(&r).iter().any(|c| c.starts_with("authgate=;")),
        "the session cookie is cleared"
    );

    // GitHub rate-limited or down at re-validation: refused (fail closed), the session kept.
    let solo = w.browser();
    github_login(&w, &solo, &format!("{}/app/", w.portfolio), "solo").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.gh.set_rate_limited(true);
    let r = api(&solo, &format!("{}/app/", w.portfolio)).await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("rate limit"));
    w.gh.set_rate_limited(false);
    w.gh.set_api_status(Some(502));
    assert_eq!(
        api(&solo, &format!("{}/app/", w.portfolio)).await.status(),
        503
    );
    w.gh.set_api_status(None);
    assert_eq!(
        api(&solo, &format!("{}/app/", w.portfolio)).await.status(),
        200,
        "the session survived the outage"
    );

    // The user revoked the app: the session ends.
    w.gh.revoke_tokens("solo");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        api(&solo, &format!("{}/app/", w.portfolio)).await.status(),
        401
    );

    // Counted: confirmed (the burst's one call, solo after the outage), ended (octocat, solo),
    // unavailable (the rate limit and the 502); and shown on the example dashboard.
    let metrics = reqwest::get(format!("{}/metrics", w.gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |result: &str| -> f64 {
        let series = format!(
            "authgate_github_revalidations_total{{provider=\"github\",result=\"{result}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("confirmed") >= 2.0, "{metrics}");
    assert_eq!(count("ended"), 2.0, "{metrics}");
    assert_eq!(count("unavailable"), 2.0, "{metrics}");
    assert_dashboard_metrics_exported(&w.gw, &DASHBOARD_GITHUB_ONLY).await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Signs `login` in at the portfolio through GitHub and opens a WebSocket at `/app/socket` with
/// the session, from the portfolio's own page; checks the upstream got the user's id.
async fn github_socket(w: &World, login: &str, id: u64) -> (reqwest::Client, Socket) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let b = w.browser();
    let r = github_login(w, &b, &format!("{}/app/", w.portfolio), login).await;
    let cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("authgate="))
        .expect("no session cookie");
    let cookie = cookie.split(';').next().unwrap().to_string();
    let mut req = format!("{}/app/socket", w.portfolio.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", w.portfolio.parse().unwrap());
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut socket, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("the upgrade hung")
    .expect("the upgrade was refused");
    socket.send(Message::Text("describe".into())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Text(t))) => assert!(t.contains(&format!("github:{id}")), "{t}"),
        other => panic!("expected the upgrade's description, got {other:?}"),
    }
    (b, socket)
}

/// Whether `socket` ends (no message first) within `within`.
async fn socket_ends_within(socket: &mut Socket, within: Duration) -> bool {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    match tokio::time::timeout(within, socket.next()).await {
        Err(_) => false,
        Ok(m) => {
            assert!(
                !matches!(m, Some(Ok(Message::Text(_) | Message::Binary(_)))),
                "a message instead of the end: {m:?}"
            );
            true
        }
    }
}

/// A WebSocket of a GitHub session is closed at once when the session ends at a re-validation
/// after the user left the allowed org (the browser's next request's, or the socket's own,
/// whichever comes first).
#[tokio::test]
async fn a_websocket_is_closed_when_its_github_session_fails_revalidation() {
    let w = World::start().await;
    let (hubot, mut socket) = github_socket(&w, "hubot", 9919).await;
    w.gh.remove_from_org("hubot", "acme");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        api(&hubot, &format!("{}/app/x", w.portfolio))
            .await
            .status(),
        401,
        "the re-validation did not end the session"
    );
    assert!(
        socket_ends_within(&mut socket, Duration::from_secs(2)).await,
        "the socket outlived its GitHub session"
    );
}

/// A socket alone keeps its GitHub session re-validated (every `revalidate_interval`, 1 s here,
/// seen at the socket's recheck, 1 s): a user who left the allowed org loses the socket with no
/// request of theirs; a user still admitted keeps theirs.
#[tokio::test]
async fn a_websocket_alone_has_its_github_session_revalidated() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let w = World::start().await;
    let (_hubot, mut leaving) = github_socket(&w, "hubot", 9919).await;
    let (_octocat, mut staying) = github_socket(&w, "octocat", 583231).await;
    let calls = w.gh.api_requests();
    w.gh.remove_from_org("hubot", "acme");
    assert!(
        socket_ends_within(&mut leaving, Duration::from_secs(5)).await,
        "the socket outlived a user the allow rules no longer admit"
    );
    assert!(w.gh.api_requests() > calls, "GitHub was not asked again");
    // Re-validated meanwhile too, and still admitted: open and working.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    staying
        .send(Message::Text("still here".into()))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), staying.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "still here"),
        other => panic!("the admitted user's socket ended: {other:?}"),
    }
    let metrics = metrics_text(&w.gw).await;
    assert!(
        metrics.contains("authgate_sockets_closed_total{reason=\"session_ended\"} 1"),
        "{metrics}"
    );

    // GitHub failing at the re-validation: the socket cannot be vouched for (fail closed).
    w.gh.set_api_status(Some(502));
    assert!(
        socket_ends_within(&mut staying, Duration::from_secs(5)).await,
        "the socket outlived a re-validation GitHub could not answer"
    );
    w.gh.set_api_status(None);
    let metrics = reqwest::get(format!("{}/metrics", w.gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authgate_sockets_closed_total{reason=\"provider_unavailable\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn githubs_failures_are_clear_pages() {
    let w = World::start().await;
    let app = format!("{}/app/", w.portfolio);

    // The user declined at GitHub.
    w.gh.set_authorize_error(Some("access_denied"));
    let b = w.browser();
    let r = navigate(&b, &app).await;
    let r = b.get(location(&r)).send().await.unwrap();
    let r = b
        .get(location(&r))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("access_denied") && page.contains("provider=github"),
        "a way to start again: {page}"
    );
    w.gh.set_authorize_error(None);

    // The app's credentials revoked at GitHub (its secret rotated there, not here).
    w.gh.register_app(
        "gh-portfolio",
        "rotated-secret",
        &format!("{}/_authgate/callback", w.portfolio),
    );
    let r = github_login(&w, &w.browser(), &app, "octocat").await;
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("incorrect_client_credentials"));
    w.gh.register_app(
        "gh-portfolio",
        "gh-secret",
        &format!("{}/_authgate/callback", w.portfolio),
    );

    // No verified email.
    let r = github_login(&w, &w.browser(), &app, "unverified").await;
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("no verified primary email"));

    // Rate limited while signing in: 503 with the reason, never a 500.
    w.gh.set_rate_limited(true);
    let r = github_login(&w, &w.browser(), &app, "octocat").await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("rate limit is exhausted"));
    w.gh.set_rate_limited(false);

    // GitHub's API down.
    w.gh.set_api_status(Some(500));
    let r = github_login(&w, &w.browser(), &app, "octocat").await;
    assert_eq!(r.status(), 503);
    w.gh.set_api_status(None);

    // Many organisations and teams: every page is read.
    w.gh.set_page_size(Some(1));
    w.gh.add_user(
        StandInUser::new(31337, "busy")
            .in_org("a1")
            .in_org("a2")
            .in_team("acme", "ops")
            .in_team("acme", "billing"),
    );
    let b = w.browser();
    let r = github_login(&w, &b, &app, "busy").await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let echoed: Value = api(&b, &format!("{}/api/invoices/7", w.portfolio))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-auth-groups"], "acme:billing,acme:ops");

    // The gateway's log never carries GitHub's tokens or the client secret.
    let log = w.gw.log.lock().unwrap().clone();
    assert!(!log.contains("gho_") && !log.contains("gh-secret"), "{log}");
}
