//! Config loading: every problem reported at once, with line and key.

use super::model::UpstreamReads;
use super::*;

/// A valid config (its client secret from `BILLING_SECRET`, see [`env`]).
pub(crate) const VALID: &str = r#"
[proxy]
listen = "127.0.0.1:8080"

[idp]
issuer = "https://auth.example.com"
audience = "https://api.example.com"

[[clients]]
name = "billing"
origins = ["https://billing.example.com"]
client_id = "abc"
client_secret = "${BILLING_SECRET}"

[[upstreams]]
name = "billing-api"
addresses = ["127.0.0.1:3000"]

[[routes]]
path = "/invoices/{id}"
methods = ["GET"]
upstream = "billing-api"
permission = "invoice:read"
entity_id = "id"
"#;

/// The test environment: `BILLING_SECRET` only.
pub(crate) fn env(name: &str) -> Option<String> {
    (name == "BILLING_SECRET").then(|| "s3cret".to_string())
}

fn problems(text: &str) -> Vec<String> {
    match parse("test.toml", text, &env) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid(list)) => list.iter().map(|l| l.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn valid_config_loads_with_defaults() {
    let c = parse("test.toml", VALID, &env).unwrap();
    assert_eq!(c.clients[0].namespace, "client_abc");
    assert!(c.clients[0].client_secret.ct_eq("s3cret"));
    assert_eq!(
        c.idp.discovery_url.as_str(),
        "https://auth.example.com/.well-known/openid-configuration"
    );
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.routes[0].name, "GET /invoices/{id}");
    assert_eq!(c.headers.prefix, "x-auth-");
    // The secret never shows in Debug output.
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn three_mistakes_are_all_reported_with_lines() {
    let text = VALID
        .replace("upstream = \"billing-api\"", "upstream = \"billing\"")
        .replace("permission = \"invoice:read\"", "permission = \"invoice\"")
        .replace("audience = \"https://api.example.com\"", "audience = []");
    let p = problems(&text);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(
        p[0].starts_with("test.toml:7: idp.audience: is required"),
        "{}",
        p[0]
    );
    assert!(
        p[1].starts_with(
            "test.toml:22: routes[0].upstream: \"billing\" is not a configured upstream"
        ),
        "{}",
        p[1]
    );
    assert!(
        p[2].starts_with("test.toml:23: routes[0].permission: \"invoice\" is not resource:action"),
        "{}",
        p[2]
    );
}

#[test]
fn unknown_keys_and_sections_are_errors() {
    let text = VALID.replace("methods = [\"GET\"]", "methdos = [\"GET\"]") + "\n[extra]\nx = 1\n";
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|m| m.starts_with("test.toml:21: routes[0].methdos: unknown field `methdos`")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("extra: is not a known section")),
        "{p:#?}"
    );
}

#[test]
fn environment_references() {
    let p = problems(&VALID.replace("${BILLING_SECRET}", "${MISSING_SECRET}"));
    assert_eq!(p, vec!["test.toml:13: clients[0].client_secret: environment variable MISSING_SECRET is not set (referenced as ${MISSING_SECRET})"]);
    let e = |n: &str| (n == "X").then(|| "1".to_string());
    assert_eq!(expand("a${X}b", &e).unwrap(), "a1b");
    assert_eq!(expand("${Y:-dflt}", &e).unwrap(), "dflt");
    assert_eq!(expand("$${X} $5", &e).unwrap(), "${X} $5");
    assert!(expand("${X", &e).is_err());
    assert!(expand("${a b}", &e).is_err());
}

#[test]
fn rules_table() {
    let cases: &[(&str, &str, &str)] = &[
        ("issuer = \"https://auth.example.com\"", "issuer = \"not a url\"", "idp.issuer: \"not a url\" is not a URL"),
        ("[idp]", "[idp]\nalgorithms = [\"HS256\"]", "idp.algorithms[0]: \"HS256\" is an HMAC algorithm"),
        ("[idp]", "[idp]\nalgorithms = [\"none\"]", "idp.algorithms[0]: \"none\" is not accepted"),
        ("[idp]", "[idp]\ntimeout = \"soon\"", "idp.timeout: \"soon\" is not a duration"),
        ("listen = \"127.0.0.1:8080\"", "listen = \"8080\"", "proxy.listen: \"8080\" is not an ip:port address"),
        ("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:9090\"", "admin.listen: 127.0.0.1:9090 is also the proxy's address"),
        ("origins = [\"https://billing.example.com\"]", "origins = [\"https://billing.example.com/app\"]", "clients[0].origins[0]: \"https://billing.example.com/app\" is not a bare origin"),
        ("addresses = [\"127.0.0.1:3000\"]", "addresses = [\"127.0.0.1\"]", "upstreams[0].addresses[0]: \"127.0.0.1\" is not host:port"),
        ("path = \"/invoices/{id}\"", "path = \"/invoices/*/x\"", "routes[0].path: \"/invoices/*/x\" has * before the end"),
        ("methods = [\"GET\"]", "methods = [\"FETCH\"]", "routes[0].methods[0]: \"FETCH\" is not one of"),
        ("entity_id = \"id\"", "entity_id = \"nope\"", "routes[0].entity_id: \"nope\" is not a capture of the path"),
        ("permission = \"invoice:read\"", "auth = \"none\"\npermission = \"invoice:read\"", "routes[0].permission: conflicts with auth = \"none\""),
        ("permission = \"invoice:read\"", "auth = \"maybe\"", "routes[0].auth: \"maybe\" is not a mode"),
        ("permission = \"invoice:read\"\nentity_id = \"id\"", "auth = \"none\"\nwebsocket_close_at_expiry = true", "routes[0].websocket_close_at_expiry: needs a credential that expires"),
        ("entity_id = \"id\"", "entity_id = \"id\"\nwebsocket_close_at_expiry = \"yes\"", "websocket_close_at_expiry: invalid type"),
        ("[proxy]", "[proxy]\nthreads = \"two\"", "proxy.threads: invalid type"),
        ("entity_id = \"id\"", "entity_id = \"id\"\nattributes = { amount = \"cookie:x\" }", "routes[0].attributes.amount: \"cookie:x\" is not a source"),
        ("entity_id = \"id\"", "entity_id = \"id\"\nattributes = { inv = \"path:nope\" }", "routes[0].attributes.inv: \"nope\" is not a capture"),
        ("entity_id = \"id\"", "entity_id = \"id\"\nattributes = { t = \"header:TE\" }", "routes[0].attributes.t: \"te\" is a hop-by-hop header, which never reaches the upstream"),
        ("addresses = [\"127.0.0.1:3000\"]", "addresses = [\"127.0.0.1:3000\"]\nwindows_paths = \"no\"", "windows_paths: invalid type"),
        ("entity_id = \"id\"", "entity_id = \"id\"\nbody_limit = 1000000", "routes[0].body_limit: 1000000 must be between 1 and 65536"),
        ("entity_id = \"id\"", "entity_id = \"id\"\non_error = \"maybe\"", "routes[0].on_error: \"maybe\" is not"),
        ("[proxy]", "[identity_jwt]\nalgorithm = \"RS256\"\n[proxy]", "identity_jwt.algorithm: \"RS256\" is not \"ES256\" or \"EdDSA\""),
        ("[proxy]", "[abac]\nallow_ttl = \"forever\"\n[proxy]", "abac.allow_ttl: \"forever\" is not a duration"),
        ("[proxy]", "[api_keys]\nheader = \"authorization\"\n[proxy]", "api_keys.header: \"authorization\" is not a usable header name"),
        ("entity_id = \"id\"", "entity_id = \"id\"\nclients = [\"biling\"]", "routes[0].clients[0]: \"biling\" is not a configured client: name one of [\"billing\"]"),
        ("entity_id = \"id\"", "entity_id = \"id\"\nclients = []", "routes[0].clients: may not be empty"),
        ("entity_id = \"id\"", "entity_id = \"id\"\nclients = [\"billing\", \"billing\"]", "routes[0].clients[1]: \"billing\" is listed twice"),
        ("permission = \"invoice:read\"\nentity_id = \"id\"", "auth = \"none\"\nclients = [\"billing\"]", "routes[0].clients: only apply to routes that need an identity"),
    ];
    for (from, to, want) in cases {
        let text = VALID.replacen(from, to, 1);
        assert_ne!(text, VALID, "case {want} did not change the config");
        let p = problems(&text);
        assert!(
            p.iter().any(|m| m.contains(want)),
            "want {want:?}, got {p:#?}"
        );
    }
}

#[test]
fn routes_name_the_clients_they_serve() {
    let c = parse("test.toml", VALID, &env).unwrap();
    assert_eq!(c.routes[0].clients, None, "default: every client");
    let text = VALID.replacen(
        "entity_id = \"id\"",
        "entity_id = \"id\"\nclients = [\"billing\"]",
        1,
    );
    assert_eq!(
        parse("test.toml", &text, &env).unwrap().routes[0].clients,
        Some(vec![0])
    );
}

#[test]
fn login_and_logout_settings() {
    let secret = "client_secret = \"${BILLING_SECRET}\"";
    let cases: &[(&str, &str, &str)] = &[
        ("[proxy]", "[session]\nlogin_key = \"c2hvcnQ=\"\n[proxy]", "session.login_key: decodes to 5 bytes"),
        ("[proxy]", "[session]\nlogin_key = \"not base64!\"\n[proxy]", "session.login_key: is not base64"),
        ("[proxy]", "[session]\nmax_pending_logins = 50\n[proxy]", "session.max_pending_logins: 50 is too many"),
        ("[proxy]", "[session]\nmax_pending_logins = 0\n[proxy]", "session.max_pending_logins: must be at least 1"),
        ("[proxy]", "[session]\nsocket_recheck = \"0s\"\n[proxy]", "session.socket_recheck: must be longer than zero"),
        ("[proxy]", "[session]\nsocket_recheck = \"soon\"\n[proxy]", "session.socket_recheck: \"soon\" is not a duration"),
        ("[proxy]", "[session]\nsocket_recheck = \"10m\"\n[proxy]", "session.socket_recheck: 10m is too long"),
        (secret, "client_secret = \"x\"\nlogout_url = \"/sign-out\"", "clients[0].logout_url: \"/sign-out\" must be an absolute http(s) URL"),
        (secret, "client_secret = \"x\"\nlogout_url = \"https://auth.example.com/api/auth/sign-out\"\nlogout_method = \"delete\"", "clients[0].logout_method: \"delete\" is not a method"),
        (secret, "client_secret = \"x\"\nlogout_method = \"post\"", "clients[0].logout_method: needs logout_url"),
    ];
    for (from, to, want) in cases {
        let text = VALID.replacen(from, to, 1);
        assert_ne!(text, VALID, "case {want} did not change the config");
        let p = problems(&text);
        assert!(
            p.iter().any(|m| m.contains(want)),
            "want {want:?}, got {p:#?}"
        );
    }
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let ok = VALID.replacen("[proxy]", &format!("[session]\nlogin_key = \"{key}\"\n[proxy]"), 1).replacen(
        secret,
        &format!("{secret}\nlogout_url = \"https://auth.example.com/api/auth/sign-out\"\nlogout_method = \"post\"\npost_logout_redirect = \"/bye\""),
        1,
    );
    let c = parse("test.toml", &ok, &env).unwrap();
    assert!(c.session.login_key.as_ref().is_some_and(|k| k.ct_eq(key)));
    assert!(
        !format!("{c:?}").contains(key),
        "the login key never shows in Debug output"
    );
    assert_eq!(
        c.clients[0].logout_url.as_ref().map(|u| u.as_str()),
        Some("https://auth.example.com/api/auth/sign-out")
    );
    assert!(c.clients[0].logout_post);
    let defaults = parse("test.toml", VALID, &env).unwrap();
    assert_eq!(
        defaults.clients[0].post_logout_redirect,
        "/_authgate/signed-out"
    );
    assert_eq!(defaults.session.max_pending_logins, 4);
    assert!(defaults.session.login_key.is_none());
    assert_eq!(
        defaults.session.socket_recheck,
        std::time::Duration::from_secs(15)
    );
    let recheck = VALID.replacen("[proxy]", "[session]\nsocket_recheck = \"2s\"\n[proxy]", 1);
    assert_eq!(
        parse("test.toml", &recheck, &env)
            .unwrap()
            .session
            .socket_recheck,
        std::time::Duration::from_secs(2)
    );
}

#[test]
fn attributes_need_the_check_permission_url() {
    let text = VALID.replace(
        "entity_id = \"id\"",
        "entity_id = \"id\"\nattributes = { invoice = \"path:id\", amount = \"body:amount\" }",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].contains("idp.check_permission_url: is required"),
        "{}",
        p[0]
    );
    let ok = text.replace(
        "[idp]",
        "[idp]\ncheck_permission_url = \"https://auth.example.com/api/auth/check-permission\"",
    );
    let c = parse("test.toml", &ok, &env).unwrap();
    assert!(c.routes[0].needs_body());
    assert_eq!(c.routes[0].body_limit, 65536);
    assert!(!c.routes[0].allow_on_error);
    // An upstream reads paths and methods the way the safe side assumes, unless it says otherwise.
    assert_eq!(c.routes[0].upstream_reads, UpstreamReads::default());
    let lenient = ok.replace(
        "addresses = [\"127.0.0.1:3000\"]",
        "addresses = [\"127.0.0.1:3000\"]\nwindows_paths = false\nmethod_overrides = false",
    );
    let c = parse("test.toml", &lenient, &env).unwrap();
    assert_eq!(
        c.routes[0].upstream_reads,
        UpstreamReads {
            windows_paths: false,
            format_suffixes: true,
            method_overrides: false,
        }
    );
    assert_eq!(c.upstreams[0].reads, c.routes[0].upstream_reads);
}

#[test]
fn syntax_errors_name_the_file() {
    let e = parse("bad.toml", "[idp\nissuer = 1", &env).unwrap_err();
    assert!(e.to_string().starts_with("bad.toml: not valid TOML"), "{e}");
}

#[test]
fn every_example_config_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            // The demo's template gets its addresses at start; examples reference secrets from the environment.
            let text = text
                .replace("{PROXY}", "127.0.0.1:8080")
                .replace("{ADMIN}", "127.0.0.1:9090")
                .replace("{PORT}", "8080")
                .replace("{IDP}", "http://127.0.0.1:9091")
                .replace("{ECHO}", "127.0.0.1:9092")
                .replace("{GITHUB_API}", "http://127.0.0.1:9093/api/v3")
                .replace("{GITHUB}", "http://127.0.0.1:9093")
                .replace("{LANDING}", "127.0.0.1:9094");
            let result = parse(&path.display().to_string(), &text, &|_| {
                Some("from-env".into())
            });
            assert!(
                result.is_ok(),
                "{}: {}",
                path.display(),
                result.unwrap_err()
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "expected the example and demo configs in {}",
        dir.display()
    );
}

#[test]
fn fail_open_combinations_are_refused_with_file_line_and_key() {
    let url =
        "[idp]\ncheck_permission_url = \"https://auth.example.com/api/auth/check-permission\"";
    let allow = (
        "entity_id = \"id\"",
        "entity_id = \"id\"\non_error = \"allow\"",
    );
    // (changes to VALID, the problem expected; None: loads)
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case] = &[
        (
            &[allow],
            Some("test.toml:25: routes[0].on_error: \"allow\" needs idp.check_permission_url"),
        ),
        (&[allow, ("[idp]", url)], None),
        (
            &[(
                "entity_id = \"id\"",
                "entity_id = \"id\"\non_error = \"deny\"",
            )],
            None,
        ),
        (
            &[
                allow,
                ("[idp]", url),
                ("[proxy]", "[abac]\nbreaker_cooldown = \"5m\"\n[proxy]"),
            ],
            Some("abac.breaker_cooldown: 300s is too long while a route says on_error = \"allow\""),
        ),
        (
            &[
                allow,
                ("[idp]", url),
                ("[proxy]", "[abac]\nbreaker_cooldown = \"60s\"\n[proxy]"),
            ],
            None,
        ),
        (
            &[allow, ("[idp]", &format!("{url}\ntimeout = \"100ms\""))],
            Some("idp.timeout: 100ms is too short while a route says on_error = \"allow\""),
        ),
        (
            &[allow, ("[idp]", &format!("{url}\ntimeout = \"250ms\""))],
            None,
        ),
        (&[("[idp]", &format!("{url}\ntimeout = \"100ms\""))], None),
        (
            &[
                ("[idp]", url),
                ("[proxy]", "[abac]\nbreaker_cooldown = \"5m\"\n[proxy]"),
            ],
            None,
        ),
        (
            &[
                (
                    "permission = \"invoice:read\"\nentity_id = \"id\"",
                    "auth = \"authenticated\"\non_error = \"allow\"",
                ),
                ("[idp]", url),
            ],
            Some("routes[0].on_error: only applies to routes with a `permission`"),
        ),
    ];
    for (changes, want) in cases {
        let mut text = VALID.to_string();
        for (from, to) in *changes {
            let changed = text.replacen(from, to, 1);
            assert_ne!(changed, text, "{from:?} is not in the config");
            text = changed;
        }
        let p = problems(&text);
        match want {
            None => assert!(p.is_empty(), "{changes:?}: {p:#?}"),
            Some(want) => assert!(
                p.iter().any(|m| m.contains(want)),
                "{changes:?}: want {want:?}, got {p:#?}"
            ),
        }
    }
}

const PROVIDERS: &str = r##"
[[providers]]
name = "github"
kind = "github"

[[providers]]
name = "ghes"
kind = "github"
base_url = "https://ghe.example.com"
api_url = "https://ghe.example.com/api/v3"
revalidate_interval = "1m"

[[clients]]
name = "portfolio"
origins = ["https://portfolio.example.com"]
namespace = "client_portfolio"
allowed_orgs = ["Acme"]
allowed_teams = ["acme/Admins"]
display_name = "Portfolio"
logo_url = "https://portfolio.example.com/logo.svg"
accent_color = "#6f42c1"

[[clients.providers]]
name = "github"
client_id = "Ov23li"
client_secret = "${BILLING_SECRET}"

[[clients.grants]]
permissions = ["invoice:read", "invoice:write"]
teams = ["acme/admins"]

[[clients.grants]]
permissions = ["report:read"]
provider = "idp"
subjects = ["user_1"]
"##;

#[test]
fn providers_clients_grants_and_branding() {
    let c = parse("test.toml", &format!("{VALID}{PROVIDERS}"), &env).unwrap();
    let names: Vec<&str> = c.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["idp", "github", "ghes"]);
    let model::ProviderKind::GitHub(gh) = &c.providers[1].kind else {
        panic!("github is a GitHub provider")
    };
    assert_eq!(
        (gh.base_url.as_str(), gh.api_url.as_str()),
        ("https://github.com/", "https://api.github.com/")
    );
    assert_eq!(gh.revalidate_interval, std::time::Duration::from_secs(300));
    let model::ProviderKind::GitHub(ghes) = &c.providers[2].kind else {
        panic!("ghes is a GitHub provider")
    };
    assert_eq!(ghes.api_url.as_str(), "https://ghe.example.com/api/v3");
    // A client without providers signs in through [idp] with its own credentials.
    let billing = &c.clients[0];
    assert_eq!(billing.sign_in.len(), 1);
    assert_eq!(
        (
            billing.sign_in[0].name.as_str(),
            billing.sign_in[0].client_id.as_str()
        ),
        ("idp", "abc")
    );
    assert_eq!(billing.branding.display_name, "billing");
    let p = &c.clients[1];
    assert_eq!(p.client_id, "", "a GitHub-only client has no IdP client id");
    assert_eq!(
        p.sign_in[0].scopes,
        ["read:user", "user:email", "read:org"],
        "read:org because the rules name orgs and teams"
    );
    assert!(p.sign_in[0].client_secret.ct_eq("s3cret"));
    assert_eq!(
        p.allowed.orgs,
        [model::GitHubRef::name("acme")],
        "GitHub names compare in lowercase"
    );
    assert_eq!(p.allowed.teams, [model::GitHubRef::name("acme/admins")]);
    assert_eq!(
        p.grants[0].permissions,
        [
            ("invoice".to_string(), "read".to_string()),
            ("invoice".to_string(), "write".to_string())
        ]
    );
    assert_eq!(p.branding.accent_color.as_deref(), Some("#6f42c1"));
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn provider_mistakes_are_reported_with_lines() {
    let text = format!("{VALID}{PROVIDERS}")
        .replace(
            "kind = \"github\"\n\n[[providers]]",
            "kind = \"gitlab\"\n\n[[providers]]",
        )
        .replace("name = \"ghes\"", "name = \"idp\"")
        .replace("accent_color = \"#6f42c1\"", "accent_color = \"purple\"")
        .replace(
            "logo_url = \"https://portfolio.example.com/logo.svg\"",
            "logo_url = \"http://cdn.example.com/logo.svg\"",
        )
        .replace(
            "allowed_teams = [\"acme/Admins\"]",
            "allowed_teams = [\"admins\"]",
        )
        .replace("provider = \"idp\"\nsubjects", "subjects")
        .replace(
            "permissions = [\"report:read\"]",
            "permissions = [\"report\"]",
        );
    let p = problems(&text);
    let expect = [
        "providers[0].kind: \"gitlab\" is not a provider kind",
        "providers[1].name: \"idp\" is the [idp] section's name",
        "clients[1].allowed_teams[0]: \"admins\" is not a team",
        "clients[1].logo_url: \"http://cdn.example.com/logo.svg\" must be an https URL",
        "clients[1].accent_color: \"purple\" is not a colour",
        "clients[1].providers[0].name: \"github\" is not a provider",
        "clients[1].grants[1].permissions[0]: \"report\" must be \"resource:action\"",
        "clients[1].grants[1].subjects: needs provider",
    ];
    for e in expect {
        assert!(p.iter().any(|l| l.contains(e)), "missing {e:?} in {p:#?}");
    }
    assert!(p.iter().all(|l| l.starts_with("test.toml:")), "{p:#?}");

    // Scopes without read:org where the rules need it; allow rules without a GitHub provider;
    // a client with neither client_id nor providers.
    let text = format!("{VALID}{PROVIDERS}").replace(
        "client_secret = \"${BILLING_SECRET}\"\n\n[[clients.grants]]",
        "client_secret = \"x\"\nscopes = [\"read:user\"]\n\n[[clients.grants]]",
    );
    assert!(
        problems(&text)
            .iter()
            .any(|l| l.contains("scopes: must include \"read:org\"")),
        "{:#?}",
        problems(&text)
    );
    let text = VALID.replace(
        "client_secret = \"${BILLING_SECRET}\"",
        "client_secret = \"x\"\nallowed_users = [\"octocat\"]",
    );
    assert!(
        problems(&text)
            .iter()
            .any(|l| l.contains("clients[0].allowed_users: restricts GitHub sign-ins")),
        "{:#?}",
        problems(&text)
    );
    let text = VALID.replace("client_id = \"abc\"\n", "");
    assert!(
        problems(&text)
            .iter()
            .any(|l| l.contains("clients[0].client_id: is required")),
        "{:#?}",
        problems(&text)
    );
    let text = format!("{VALID}{PROVIDERS}").replace("teams = [\"acme/admins\"]\n", "");
    assert!(
        problems(&text)
            .iter()
            .any(|l| l.contains("clients[1].grants[0]: names nobody")),
        "{:#?}",
        problems(&text)
    );
}

#[test]
fn the_file_hash_is_sha256_in_hex_as_sha256sum_prints_it() {
    assert_eq!(
        super::file_hash(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        super::file_hash(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn enforce_false_makes_a_shadow_rule_on_routes_that_decide_and_nowhere_else() {
    let c = parse("test.toml", VALID, &env).unwrap();
    assert!(c.routes[0].enforce, "routes enforce by default");
    let shadow = VALID.replace("entity_id = \"id\"", "entity_id = \"id\"\nenforce = false");
    assert!(!parse("test.toml", &shadow, &env).unwrap().routes[0].enforce);
    let public = VALID.replace(
        "permission = \"invoice:read\"\nentity_id = \"id\"",
        "auth = \"none\"\nenforce = false",
    );
    let p = problems(&public);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with(
            "test.toml:24: routes[0].enforce: only applies to routes that decide something"
        ),
        "{}",
        p[0]
    );
}

#[test]
fn the_log_format_is_text_or_json() {
    use super::model::LogFormat;
    assert_eq!(
        parse("test.toml", VALID, &env).unwrap().log.format,
        LogFormat::Text
    );
    assert_eq!(
        parse(
            "test.toml",
            &format!("{VALID}\n[log]\nformat = \"json\"\n"),
            &env
        )
        .unwrap()
        .log
        .format,
        LogFormat::Json
    );
    let p = problems(&format!("{VALID}\n[log]\nformat = \"xml\"\n"));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].contains("log.format: \"xml\" is not \"text\" or \"json\""),
        "{}",
        p[0]
    );
}

#[test]
fn the_redis_session_store_is_validated() {
    let key = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    let with =
        |session: &str| VALID.replacen("[proxy]", &format!("[session]\n{session}\n[proxy]"), 1);
    let cases = [
        ("store = \"disk\"", "session.store: \"disk\" is not a session store"),
        ("store = \"redis\"", "session.redis.url: is required"),
        ("store = \"redis\"\n[session.redis]\nurl = \"redis://127.0.0.1:6379\"", "session.redis.key: is required"),
        ("store = \"redis\"\n[session.redis]\nurl = \"http://127.0.0.1:6379\"\nkey = \"KEY\"", "session.redis.url: is not a Redis URL"),
        ("store = \"redis\"\n[session.redis]\nurl = \"rediss://cache.internal:6380/#insecure\"\nkey = \"KEY\"", "session.redis.url: has a #fragment"),
        ("store = \"redis\"\n[session.redis]\nurl = \"redis://127.0.0.1:6379\"\nkey = \"c2hvcnQ=\"", "session.redis.key: decodes to 5 bytes"),
        ("store = \"redis\"\n[session.redis]\nurl = \"redis://127.0.0.1:6379\"\nkey = \"KEY\"\nprefix = \"with space\"", "session.redis.prefix: \"with space\" must be"),
        ("store = \"redis\"\n[session.redis]\nurl = \"redis://127.0.0.1:6379\"\nkey = \"KEY\"\ntimeout = \"soon\"", "session.redis.timeout: \"soon\" is not a duration"),
        ("store = \"redis\"\n[session.redis]\nurl = \"redis://127.0.0.1:6379\"\nkey = \"KEY\"\npool = 4", "unknown field `pool`"),
        ("[session.redis]\nurl = \"redis://127.0.0.1:6379\"\nkey = \"KEY\"", "session.redis: is set but session.store is \"memory\""),
        ("store = \"redis\"\n[session.redis]\nurl = \"redis://127.0.0.1:6379\"\nkey = \"KEY\"\nca_file = \"/etc/hostname\"", "session.redis.ca_file: is only for TLS"),
        ("store = \"redis\"\n[session.redis]\nurl = \"rediss://cache.internal:6380\"\nkey = \"KEY\"\nca_file = \"/nonexistent/ca.pem\"", "session.redis.ca_file: /nonexistent/ca.pem cannot be read"),
    ];
    for (session, want) in cases {
        let p = problems(&with(&session.replace("KEY", key)));
        assert!(
            p.iter()
                .any(|m| m.contains(want) && m.starts_with("test.toml:")),
            "want {want:?}, got {p:#?}"
        );
    }
    let password = "hunter2-redis";
    let ok = with(&format!("store = \"redis\"\n[session.redis]\nurl = \"rediss://default:{password}@cache.internal:6380/2\"\nkey = \"{key}\"\nprefix = \"gw1:\""));
    let c = parse("test.toml", &ok, &env).unwrap();
    let crate::config::model::SessionStoreSettings::Redis(r) = &c.session.store else {
        panic!("a redis store")
    };
    assert_eq!(
        (r.prefix.as_str(), r.timeout, r.connect_timeout),
        (
            "gw1:",
            std::time::Duration::from_millis(500),
            std::time::Duration::from_secs(1)
        )
    );
    assert!(
        !format!("{c:?}").contains(password) && !format!("{c:?}").contains(key),
        "the URL's password and the key never show"
    );
    assert!(
        matches!(
            parse("test.toml", VALID, &env).unwrap().session.store,
            crate::config::model::SessionStoreSettings::Memory
        ),
        "memory by default"
    );
}

#[test]
fn shadow_grants_are_named_and_replace_only_an_enforced_grant_of_their_client() {
    let shadow = "\n[[clients.grants]]\nname = \"admins-only\"\nenforce = false\nreplaces = \"writers\"\npermissions = [\"invoice:write\"]\nteams = [\"acme/admins\"]\n";
    let text = format!("{VALID}{PROVIDERS}").replace(
        "permissions = [\"invoice:read\", \"invoice:write\"]",
        "name = \"writers\"\npermissions = [\"invoice:read\", \"invoice:write\"]",
    ) + shadow;
    let c = parse("test.toml", &text, &env).unwrap();
    let grants = &c.clients[1].grants;
    assert!(
        !grants[0].shadow && grants[0].name.as_deref() == Some("writers"),
        "grants enforce by default"
    );
    assert!(grants[2].shadow);
    assert_eq!(grants[2].replaces, Some(0));
    assert_eq!(grants[1].name, None, "an enforced grant needs no name");

    let bad = [
        (text.replace("name = \"admins-only\"\n", ""), "clients[1].grants[2].enforce: a shadow grant (enforce = false) needs a name"),
        (text.replace("replaces = \"writers\"", "replaces = \"nobody\""), "clients[1].grants[2].replaces: \"nobody\" is not the name of a grant of this client"),
        (text.replace("enforce = false\n", ""), "clients[1].grants[2].replaces: only a shadow grant (enforce = false) replaces another"),
        (text.replace("name = \"writers\"", "name = \"writers\"\nenforce = false"), "clients[1].grants[2].replaces: \"writers\" is a shadow grant"),
        (text.replace("name = \"admins-only\"", "name = \"writers\""), "clients[1].grants[2].name: \"writers\" names another grant of this client too"),
        (text.replace("name = \"admins-only\"", "name = \"admins only\""), "clients[1].grants[2].name: \"admins only\" is not a grant name"),
        (
            text.replace("name = \"writers\"\n", "").replace(
                "client_secret = \"${BILLING_SECRET}\"\n\n[[upstreams]]",
                "client_secret = \"${BILLING_SECRET}\"\n\n[[clients.grants]]\nname = \"writers\"\npermissions = [\"invoice:read\"]\nemails = [\"a@example.com\"]\n\n[[upstreams]]",
            ),
            "clients[1].grants[2].replaces: \"writers\" is not the name of a grant of this client",
        ),
    ];
    for (text, want) in bad {
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|l| l.starts_with("test.toml:") && l.contains(want)),
            "missing {want:?} in {p:#?}"
        );
    }
}

#[test]
fn an_upstreams_ca_file_is_read_and_checked_at_load() {
    let dir = std::env::temp_dir().join(format!("authgate-ca-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(
        &not_pem,
        "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let key_only = dir.join("key.pem");
    std::fs::write(
        &key_only,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let with = |more: String| {
        VALID.replacen(
            "addresses = [\"127.0.0.1:3000\"]",
            &format!("addresses = [\"127.0.0.1:3000\"]\n{more}"),
            1,
        )
    };
    let cases = [
        (
            format!("ca_file = \"{}\"", garbage.display()),
            "upstreams[0].ca_file: ".to_string()
                + &garbage.display().to_string()
                + " is only for TLS",
        ),
        (
            "tls = true\nca_file = \"/nonexistent/ca.pem\"".to_string(),
            "upstreams[0].ca_file: /nonexistent/ca.pem cannot be read".to_string(),
        ),
        (
            format!("tls = true\nca_file = \"{}\"", not_pem.display()),
            format!(
                "upstreams[0].ca_file: {} is not a PEM file",
                not_pem.display()
            ),
        ),
        (
            format!("tls = true\nca_file = \"{}\"", key_only.display()),
            format!(
                "upstreams[0].ca_file: {} holds no CERTIFICATE block",
                key_only.display()
            ),
        ),
        (
            format!("tls = true\nca_file = \"{}\"", garbage.display()),
            format!(
                "upstreams[0].ca_file: {}: certificate 1 is not valid X.509",
                garbage.display()
            ),
        ),
    ];
    for (upstream, want) in cases {
        let p = problems(&with(upstream));
        assert!(
            p.iter()
                .any(|m| m.contains(&want) && m.starts_with("test.toml:")),
            "want {want:?}, got {p:#?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unverified_emails_are_omitted_unless_sent_on_purpose() {
    let c = parse("test.toml", VALID, &env).unwrap();
    use crate::config::model::UnverifiedEmail;
    assert_eq!(c.headers.unverified_email, UnverifiedEmail::Omit);
    for (value, want) in [
        ("omit", Some(UnverifiedEmail::Omit)),
        ("send", Some(UnverifiedEmail::Send)),
        ("yes", None),
    ] {
        let text = format!("{VALID}\n[headers]\nunverified_email = \"{value}\"\n");
        match want {
            Some(w) => assert_eq!(
                parse("test.toml", &text, &env)
                    .unwrap()
                    .headers
                    .unverified_email,
                w
            ),
            None => {
                let p = problems(&text);
                assert!(
                    p.iter()
                        .any(|l| l.contains("headers.unverified_email: \"yes\" is not a choice")),
                    "{p:#?}"
                );
            }
        }
    }
}

#[test]
fn provider_names_differ_ignoring_case() {
    // A name prefixes its users' subjects upstream (`github:583231`): `GitHub` and `github`
    // would be one to a case-insensitive database.
    let text = format!("{VALID}{PROVIDERS}").replace("name = \"ghes\"", "name = \"GitHub\"");
    let p = problems(&text);
    let e =
        "providers[1].name: \"GitHub\" names two providers: names must be unique, ignoring case";
    assert!(p.iter().any(|l| l.contains(e)), "missing {e:?} in {p:#?}");
    let text = format!("{VALID}{PROVIDERS}").replace("name = \"ghes\"", "name = \"IDP\"");
    let p = problems(&text);
    let e = "providers[1].name: \"IDP\" is the [idp] section's name";
    assert!(p.iter().any(|l| l.contains(e)), "missing {e:?} in {p:#?}");
}

#[test]
fn github_names_and_ids_are_parsed_and_names_without_ids_warned_of() {
    use model::GitHubRef;
    let id = |id: u64| GitHubRef {
        name: None,
        id: Some(id),
    };
    let text = format!("{VALID}{PROVIDERS}").replace(
        "allowed_orgs = [\"Acme\"]",
        "allowed_orgs = [\"id:42\", { name = \"Acme\", id = 7 }]\nallowed_users = [\"Octocat\", { login = \"hubot\" }, { id = 9 }]",
    );
    let c = parse("test.toml", &text, &env).unwrap();
    let p = &c.clients[1];
    assert_eq!(
        p.allowed.orgs,
        [
            id(42),
            GitHubRef {
                name: Some("acme".into()),
                id: Some(7)
            }
        ]
    );
    assert_eq!(
        p.allowed.users,
        [GitHubRef::name("octocat"), GitHubRef::name("hubot"), id(9)]
    );
    // Every name without an id is warned of, with its line and what to write instead.
    let warned: Vec<String> = c
        .warnings
        .iter()
        .map(|w| format!("{}:{w}", w.line.unwrap_or(0)))
        .collect();
    for at in [
        "clients[1].allowed_teams[0]",
        "clients[1].allowed_users[0]",
        "clients[1].allowed_users[1]",
        "clients[1].grants[0].teams[0]",
    ] {
        assert!(
            warned.iter().any(|w| w.contains(at)
                && w.contains("name without an id")
                && w.contains("id = N")
                && !w.starts_with("0:")),
            "{at} in {warned:#?}"
        );
    }
    assert!(
        !warned.iter().any(|w| w.contains("allowed_orgs")),
        "entries with ids are not warned of: {warned:#?}"
    );

    // Mistakes name the file, the line and the key.
    for (entry, want) in [
        (
            "\"id:x\"",
            "clients[1].allowed_orgs[0]: \"id:x\" is not an id",
        ),
        (
            "\"id:0\"",
            "clients[1].allowed_orgs[0]: \"id:0\" is not an id",
        ),
        (
            "{ id = -3 }",
            "clients[1].allowed_orgs[0].id: -3 is not an id",
        ),
        ("{ }", "clients[1].allowed_orgs[0]: names nobody"),
        ("{ name = \"acme\", idd = 3 }", "unknown field `idd`"),
        (
            "{ name = \"a b\", id = 3 }",
            "clients[1].allowed_orgs[0]: \"a b\"",
        ),
        (
            "7",
            "a name (\"octocat\"), an id (\"id:583231\") or a table",
        ),
    ] {
        let text = format!("{VALID}{PROVIDERS}").replace(
            "allowed_orgs = [\"Acme\"]",
            &format!("allowed_orgs = [{entry}]"),
        );
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|l| l.contains(want) && l.starts_with("test.toml:")),
            "{entry}: want {want:?} in {p:#?}"
        );
    }
}

#[test]
fn forges_verified_emails_are_trusted_by_default_only_at_github_com() {
    let trust = |text: &str| -> Vec<bool> {
        parse("test.toml", text, &env)
            .unwrap()
            .providers
            .iter()
            .filter_map(|p| match &p.kind {
                model::ProviderKind::GitHub(g) => Some(g.trust_verified_email),
                model::ProviderKind::Oidc => None,
            })
            .collect()
    };
    let text = format!("{VALID}{PROVIDERS}");
    assert_eq!(
        trust(&text),
        [true, false],
        "github.com yes, another api_url no"
    );
    let text = text.replace(
        "revalidate_interval = \"1m\"",
        "revalidate_interval = \"1m\"\ntrust_verified_email = true",
    );
    assert_eq!(trust(&text), [true, true], "opted in");
    let text = text.replace(
        "name = \"github\"\nkind = \"github\"",
        "name = \"github\"\nkind = \"github\"\ntrust_verified_email = false",
    );
    assert_eq!(trust(&text), [false, true], "opted out");
}
