//! End to end: GitHub users, organisations and teams are matched by the numeric ids the API
//! gives, not by names that can be renamed and registered again; a forge's `verified` email
//! flag is believed only where the operator says so. Two stand-in forges over real sockets:
//! `github` (opted in to `trust_verified_email`) and `forge` (another `api_url`, not opted in).

mod common;

use common::browser::*;
use common::*;
use devidp::echo::EchoServer;
use devidp::github::{GitHubStandIn, StandInUser};
use devidp::idp::DevIdp;
use serde_json::Value;
use std::time::Duration;

struct World {
    _idp: DevIdp,
    gh: GitHubStandIn,
    forge: GitHubStandIn,
    echo: EchoServer,
    gw: Gateway,
    /// The client `portal`, signing in through `github`.
    portal: String,
    /// The client `forge-app`, signing in through `forge`.
    forge_app: String,
}

impl World {
    /// A gateway whose `portal` client has `rules` (allow rules and grants, TOML; `{ACME}` and
    /// `{BILLING}` stand for the ids of the organisation `acme` and its team `billing`) and
    /// whose `github` provider has `github_extra` settings.
    async fn start(rules: &str, github_extra: &str) -> World {
        let idp = DevIdp::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        idp.set_audience(AUDIENCE);
        let gh = GitHubStandIn::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let forge = GitHubStandIn::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        for u in [
            StandInUser::new(583231, "octocat").in_team("acme", "billing"),
            StandInUser::new(9919, "hubot").in_org("acme"),
            StandInUser::new(1001, "solo"),
        ] {
            gh.add_user(u.clone());
            forge.add_user(u);
        }
        let rules = rules
            .replace("{ACME}", &gh.org_id("acme").unwrap().to_string())
            .replace(
                "{BILLING}",
                &gh.team_id("acme", "billing").unwrap().to_string(),
            );
        let echo = EchoServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let gw = start_gateway(
            |port, admin| {
                gh.register_app(
                    "gh-portal",
                    "gh-secret",
                    &format!("http://localhost:{port}/_authgate/callback"),
                );
                forge.register_app(
                    "forge-app",
                    "forge-secret",
                    &format!("http://forge.test:{port}/_authgate/callback"),
                );
                config(
                    port,
                    admin,
                    &idp,
                    &gh,
                    &forge,
                    echo.addr(),
                    &rules,
                    github_extra,
                )
            },
            true,
        )
        .await;
        let port = gw.port;
        World {
            _idp: idp,
            gh,
            forge,
            echo,
            gw,
            portal: format!("http://localhost:{port}"),
            forge_app: format!("http://forge.test:{port}"),
        }
    }

    /// A browser: keeps cookies, follows no redirects, finds `forge.test` on loopback.
    fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(
                "forge.test",
                format!("127.0.0.1:{}", self.gw.port).parse().unwrap(),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// Signs in a fresh browser to `app` through `forge` as `login`: the callback's answer and
    /// the browser.
    async fn sign_in(
        &self,
        app: &str,
        forge: &GitHubStandIn,
        login: &str,
    ) -> (reqwest::Response, reqwest::Client) {
        let b = self.browser();
        let r = navigate(&b, &format!("{app}/app/")).await;
        assert_eq!(r.status(), 302, "a navigation without a session signs in");
        let authorize = location(&r);
        assert!(authorize.starts_with(&forge.authorize_url()), "{authorize}");
        let r = b
            .get(format!("{authorize}&login={login}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "stand-in: {}", r.text().await.unwrap());
        (navigate(&b, &location(&r)).await, b)
    }

    /// What the upstream received for `path` from browser `b` (its status must be 200).
    async fn echoed(&self, b: &reqwest::Client, url: &str) -> Value {
        let r = api(b, url).await;
        assert_eq!(r.status(), 200, "{url}");
        r.json().await.unwrap()
    }

    fn log(&self) -> String {
        self.gw.log.lock().unwrap().clone()
    }
}

/// True when the callback's answer set a session cookie.
fn has_session(r: &reqwest::Response) -> bool {
    set_cookies(r)
        .iter()
        .any(|c| c.starts_with("authgate=") && !c.contains("Max-Age=0"))
}

#[allow(clippy::too_many_arguments)]
fn config(
    port: u16,
    admin: u16,
    idp: &DevIdp,
    gh: &GitHubStandIn,
    forge: &GitHubStandIn,
    upstream: std::net::SocketAddr,
    rules: &str,
    github_extra: &str,
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

[session]
allow_insecure_http = true

[[providers]]
name = "github"
kind = "github"
base_url = "{gh_base}"
api_url = "{gh_api}"
timeout = "3s"
{github_extra}

# A Gitea or Forgejo: another api_url, trust_verified_email not set.
[[providers]]
name = "forge"
kind = "github"
base_url = "{forge_base}"
api_url = "{forge_api}"
timeout = "3s"

[[clients]]
name = "portal"
origins = ["http://localhost:{port}"]
namespace = "client_portal"
{rules}

[[clients.providers]]
name = "github"
client_id = "gh-portal"
client_secret = "gh-secret"

[[clients]]
name = "forge-app"
origins = ["http://forge.test:{port}"]
namespace = "client_forge"

[[clients.providers]]
name = "forge"
client_id = "forge-app"
client_secret = "forge-secret"

[[clients.grants]]
permissions = ["invoice:read"]
emails = ["octocat@users.example"]

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

[[routes]]
name = "signed"
path = "/signed/*"
upstream = "app"
auth = "authenticated"
signed_identity = true

[[routes]]
name = "invoice-read"
path = "/api/invoices/{{id}}"
upstream = "app"
permission = "invoice:read"
"##,
        issuer = idp.issuer(),
        gh_base = gh.base_url(),
        gh_api = gh.api_url(),
        forge_base = forge.base_url(),
        forge_api = forge.api_url(),
    )
}

#[tokio::test]
async fn a_login_renamed_and_registered_again_admits_only_its_first_owner() {
    let w = World::start("allowed_users = [\"octocat\"]", "").await;
    assert!(
        w.log().contains("name without an id") && w.log().contains("allowed_users[0]"),
        "the start-up log warns of the name without an id: {}",
        w.log()
    );

    // octocat signs in: the name is pinned to id 583231.
    let (r, b) = w.sign_in(&w.portal, &w.gh, "octocat").await;
    assert!(has_session(&r), "{}", r.status());
    let h = &w.echoed(&b, &format!("{}/app/", w.portal)).await["headers"];
    assert_eq!(h["x-auth-subject"], "github:583231", "{h}");

    // octocat renames their account; someone else registers the login.
    w.gh.rename_user("octocat", "octo-renamed");
    w.gh.add_user(StandInUser::new(666, "octocat"));
    let before = w.echo.requests();
    for _ in 0..2 {
        let (r, b) = w.sign_in(&w.portal, &w.gh, "octocat").await;
        assert_eq!(r.status(), 403, "the newcomer under the old login");
        assert!(!has_session(&r), "the newcomer got a session");
        assert_eq!(api(&b, &format!("{}/app/", w.portal)).await.status(), 401);
    }
    assert_eq!(
        w.echo.requests(),
        before,
        "the newcomer reached the upstream"
    );
    let log = w.log();
    let refused = "now belongs to another account (id 666)";
    assert_eq!(
        log.matches(refused).count(),
        1,
        "logged once, saying what to write: {log}"
    );
    assert!(
        log.contains(r#"write { name = "octocat", id = 666 }"#),
        "{log}"
    );

    // The first owner, under the new login, is still admitted.
    let (r, b) = w.sign_in(&w.portal, &w.gh, "octo-renamed").await;
    assert!(has_session(&r), "{}", r.status());
    let h = &w.echoed(&b, &format!("{}/app/", w.portal)).await["headers"];
    assert_eq!(h["x-auth-subject"], "github:583231", "{h}");
    assert_eq!(h["x-auth-name"], "octo-renamed", "{h}");
    let log = w.log();
    assert!(
        log.contains(r#"is now called \"octo-renamed\""#)
            || log.contains(r#"is now called "octo-renamed""#),
        "the rename is warned of: {log}"
    );
}

#[tokio::test]
async fn an_id_entry_admits_its_account_under_a_new_login() {
    let w = World::start("allowed_users = [\"id:1001\"]", "").await;
    assert!(!w.log().contains("name without an id"), "{}", w.log());
    w.gh.rename_user("solo", "solo-renamed");
    w.gh.add_user(StandInUser::new(1002, "solo"));

    let (r, b) = w.sign_in(&w.portal, &w.gh, "solo-renamed").await;
    assert!(has_session(&r), "{}", r.status());
    let h = &w.echoed(&b, &format!("{}/app/", w.portal)).await["headers"];
    assert_eq!(h["x-auth-subject"], "github:1001", "{h}");
    assert_eq!(h["x-auth-name"], "solo-renamed", "{h}");

    let before = w.echo.requests();
    let (r, _) = w.sign_in(&w.portal, &w.gh, "solo").await;
    assert_eq!(r.status(), 403, "another account under the login");
    assert_eq!(w.echo.requests(), before);
}

#[tokio::test]
async fn organisations_and_teams_match_by_id() {
    let w = World::start(
        r#"allowed_orgs = [{ name = "acme", id = {ACME} }]

[[clients.grants]]
permissions = ["invoice:read"]
teams = ["id:{BILLING}"]"#,
        "",
    )
    .await;
    let (acme, billing) = (
        w.gh.org_id("acme").unwrap(),
        w.gh.team_id("acme", "billing").unwrap(),
    );
    // The organisation is renamed; someone registers its old name with a team of the same slug.
    w.gh.rename_org("acme", "acme-corp");
    w.gh.add_user(StandInUser::new(666, "eve").in_team("acme", "billing"));
    assert_ne!(w.gh.org_id("acme").unwrap(), acme);

    // The members of the renamed organisation are admitted, the billing team's by its id.
    let (r, b) = w.sign_in(&w.portal, &w.gh, "octocat").await;
    assert!(has_session(&r), "{}", r.status());
    let h = &w.echoed(&b, &format!("{}/api/invoices/7", w.portal)).await["headers"];
    assert_eq!(h["x-auth-subject"], "github:583231", "{h}");
    assert_eq!(h["x-auth-groups"], "acme-corp:billing", "{h}");
    let (r, b) = w.sign_in(&w.portal, &w.gh, "hubot").await;
    assert!(has_session(&r), "{}", r.status());
    assert_eq!(
        api(&b, &format!("{}/api/invoices/7", w.portal))
            .await
            .status(),
        403,
        "hubot is not in the team"
    );
    let log = w.log();
    assert!(
        log.contains(&format!(r#"write {{ name = "acme-corp", id = {acme} }}"#)),
        "the renamed organisation is warned of: {log}"
    );

    // The newcomer's organisation and team have the old names and other ids: refused.
    let before = w.echo.requests();
    let (r, _) = w.sign_in(&w.portal, &w.gh, "eve").await;
    assert_eq!(r.status(), 403);
    assert_eq!(w.echo.requests(), before);
    assert_ne!(w.gh.team_id("acme", "billing").unwrap(), billing);
}

#[tokio::test]
async fn a_forges_verified_email_is_passed_on_only_where_trusted() {
    let w = World::start("", "trust_verified_email = true").await;

    // forge (another api_url, not opted in): no email upstream, not verified, no email grant.
    let (r, b) = w.sign_in(&w.forge_app, &w.forge, "octocat").await;
    assert!(has_session(&r), "{}", r.status());
    let h = &w.echoed(&b, &format!("{}/app/", w.forge_app)).await["headers"];
    assert_eq!(h["x-auth-subject"], "forge:583231", "{h}");
    assert!(h.get("x-auth-email").is_none(), "{h}");
    assert!(h.get("x-auth-email-verified").is_none(), "{h}");
    let signed = w.echoed(&b, &format!("{}/signed/x", w.forge_app)).await;
    let claims = jwt_claims(&signed);
    assert!(claims["email"].is_null(), "{claims}");
    assert_ne!(claims["email_verified"], true, "{claims}");
    let before = w.echo.requests();
    assert_eq!(
        api(&b, &format!("{}/api/invoices/7", w.forge_app))
            .await
            .status(),
        403,
        "the grant by email does not apply"
    );
    assert_eq!(w.echo.requests(), before);

    // github (opted in with trust_verified_email = true): the verified email is passed on.
    let (r, b) = w.sign_in(&w.portal, &w.gh, "octocat").await;
    assert!(has_session(&r), "{}", r.status());
    let h = &w.echoed(&b, &format!("{}/app/", w.portal)).await["headers"];
    assert_eq!(h["x-auth-email"], "octocat@users.example", "{h}");
    assert_eq!(h["x-auth-email-verified"], "true", "{h}");
    let claims = jwt_claims(&w.echoed(&b, &format!("{}/signed/x", w.portal)).await);
    assert_eq!(claims["email"], "octocat@users.example", "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
}

/// The claims of the signed identity the upstream received.
fn jwt_claims(echoed: &Value) -> Value {
    let jwt = echoed["headers"]["x-auth-jwt"]
        .as_str()
        .unwrap_or_else(|| panic!("no signed identity: {echoed}"));
    let payload = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jwt.split('.').nth(1).unwrap(),
    )
    .unwrap();
    serde_json::from_slice(&payload).unwrap()
}
