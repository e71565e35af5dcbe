//! Permissions given by config (`[[clients.grants]]`): a user, an email, an email domain, a
//! `groups` claim value, a GitHub login, organisation or team mapped to permissions in the
//! client's namespace. They are asked only when the token's own claims do not grant a route's
//! permission, so a token that grants it costs nothing more.
//!
//! A shadow grant (`enforce = false`) gives nothing. Where grants are asked, each shadow grant
//! is weighed as if it were enforced (in place of the grant it `replaces`, if any), and what it
//! would change is reported: [`ShadowEffect::Allow`] for a permission the enforced grants do
//! not give, [`ShadowEffect::Refuse`] for one only the replaced grant gives.

use crate::config::model::{ClientSettings, GrantSpec, IDP_PROVIDER};
use crate::identity::browser::ConfigGrants;
use crate::identity::github::Pins;
use crate::identity::Principal;
use std::sync::Arc;

/// One grant, its permissions named in the client's namespace.
struct Rule {
    spec: GrantSpec,
    /// `(entity type, action)`, e.g. `("client_abc:invoice", "read")`.
    permissions: Vec<(String, String)>,
}

impl Rule {
    /// True when the rule gives `principal` the permission `action` on `entity`.
    fn gives(&self, principal: &Principal, entity: &str, action: &str, pins: &Pins) -> bool {
        self.permissions
            .iter()
            .any(|(e, a)| e == entity && a == action)
            && matches(&self.spec, principal, pins)
    }
}

/// What a shadow grant would change for one request, were it enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowEffect {
    /// It would give a permission the enforced grants do not: the request, refused now, would be allowed.
    Allow,
    /// The grant it replaces gives the permission and it would not: the request, allowed now, would be refused.
    Refuse,
}

impl ShadowEffect {
    /// The `would` label of `authgate_shadow_grants_total`.
    pub fn as_label(self) -> &'static str {
        match self {
            ShadowEffect::Allow => "allow",
            ShadowEffect::Refuse => "refuse",
        }
    }
}

/// Every client's grants, by client index.
#[derive(Default)]
pub struct GrantTable {
    by_client: Vec<Vec<Rule>>,
    /// By client index: true when the client has a shadow grant.
    shadow: Vec<bool>,
    /// GitHub names pinned to ids, shared with sign-in.
    pins: Arc<Pins>,
}

impl GrantTable {
    /// The grants of `clients`, each in its client's namespace; GitHub names pinned in `pins`.
    pub fn from_config(clients: &[ClientSettings], pins: Arc<Pins>) -> GrantTable {
        let by_client = clients
            .iter()
            .map(|c| {
                c.grants
                    .iter()
                    .map(|g| Rule {
                        permissions: g
                            .permissions
                            .iter()
                            .map(|(r, a)| (format!("{}:{r}", c.namespace), a.clone()))
                            .collect(),
                        spec: g.clone(),
                    })
                    .collect()
            })
            .collect();
        let shadow = clients
            .iter()
            .map(|c| c.grants.iter().any(|g| g.shadow))
            .collect();
        GrantTable {
            by_client,
            shadow,
            pins,
        }
    }

    /// True when an enforced grant of client `client` gives `principal` the permission `action` on `entity`.
    pub fn grants(&self, client: usize, principal: &Principal, entity: &str, action: &str) -> bool {
        self.by_client.get(client).is_some_and(|rules| {
            rules
                .iter()
                .any(|r| !r.spec.shadow && r.gives(principal, entity, action, &self.pins))
        })
    }

    /// True when client `client` has a shadow grant (`enforce = false`).
    pub fn has_shadow(&self, client: usize) -> bool {
        self.shadow.get(client).copied().unwrap_or(false)
    }

    /// Each shadow grant of client `client` that, enforced in place of the grant it replaces,
    /// would change whether the grants give `principal` the permission `action` on `entity`:
    /// its name and what it would do. Each shadow grant is weighed on its own.
    pub fn shadow_effects(
        &self,
        client: usize,
        principal: &Principal,
        entity: &str,
        action: &str,
    ) -> Vec<(&str, ShadowEffect)> {
        let Some(rules) = self.by_client.get(client) else {
            return Vec::new();
        };
        let enforced: Vec<usize> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.spec.shadow && r.gives(principal, entity, action, &self.pins))
            .map(|(i, _)| i)
            .collect();
        let now = !enforced.is_empty();
        rules
            .iter()
            .filter(|r| r.spec.shadow)
            .filter_map(|r| {
                let would = r.gives(principal, entity, action, &self.pins)
                    || enforced.iter().any(|&i| r.spec.replaces != Some(i));
                let effect = match (now, would) {
                    (false, true) => ShadowEffect::Allow,
                    (true, false) => ShadowEffect::Refuse,
                    _ => return None,
                };
                Some((r.spec.name.as_deref().unwrap_or("-"), effect))
            })
            .collect()
    }

    /// Every permission client `client`'s enforced grants give `principal`, as `entity → [actions]`.
    pub fn granted(&self, client: usize, principal: &Principal) -> Vec<(&str, &str)> {
        let Some(rules) = self.by_client.get(client) else {
            return Vec::new();
        };
        rules
            .iter()
            .filter(|r| !r.spec.shadow && matches(&r.spec, principal, &self.pins))
            .flat_map(|r| r.permissions.iter().map(|(e, a)| (e.as_str(), a.as_str())))
            .collect()
    }

    /// True when client `client` has any enforced grant.
    pub fn any(&self, client: usize) -> bool {
        self.by_client
            .get(client)
            .is_some_and(|r| r.iter().any(|r| !r.spec.shadow))
    }
}

impl ConfigGrants for GrantTable {
    fn permissions(&self, client: usize, principal: &Principal) -> serde_json::Value {
        let mut all = principal.permissions.to_json();
        if let serde_json::Value::Object(map) = &mut all {
            for (entity, action) in self.granted(client, principal) {
                let actions = map
                    .entry(entity.to_string())
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let serde_json::Value::Array(list) = actions {
                    if !list.iter().any(|a| a.as_str() == Some(action)) {
                        list.push(action.into());
                    }
                }
            }
        }
        all
    }
}

/// True when one of the grant's selectors names the principal (and its provider, when the grant names one).
/// GitHub users, organisations and teams match by id (names through `pins`).
fn matches(g: &GrantSpec, p: &Principal, pins: &Pins) -> bool {
    let provider = p
        .github
        .as_ref()
        .map_or(IDP_PROVIDER, |gh| gh.provider.as_str());
    if g.provider.as_deref().is_some_and(|want| want != provider) {
        return false;
    }
    if g.subjects.contains(&p.subject) {
        return true;
    }
    if p.email_verified {
        if let Some(email) = p.email.as_deref().map(str::to_ascii_lowercase) {
            let domain = email.rsplit_once('@').map(|(_, d)| d);
            if g.emails.contains(&email)
                || domain.is_some_and(|d| g.email_domains.iter().any(|x| x == d))
            {
                return true;
            }
        }
    }
    match &p.github {
        Some(gh) => pins.names_any(gh, &g.users, &g.orgs, &g.teams),
        None => p
            .groups
            .iter()
            .any(|grp| g.groups.iter().any(|x| **x == **grp)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::GitHubRef;
    use crate::identity::GitHubIdentity;
    use std::sync::Arc;

    fn grant(f: impl FnOnce(&mut GrantSpec)) -> GrantSpec {
        let mut g = GrantSpec {
            permissions: vec![("invoice".into(), "read".into())],
            ..GrantSpec::default()
        };
        f(&mut g);
        g
    }

    fn oidc(subject: &str, email: &str, verified: bool, groups: &[&str]) -> Principal {
        Principal {
            subject: subject.into(),
            email: Some(email.into()),
            email_verified: verified,
            groups: groups.iter().map(|g| (*g).into()).collect(),
            ..Principal::default()
        }
    }

    /// The ids the API gives the organisations and teams of these tests.
    fn id_of(name: &str) -> u64 {
        match name {
            "acme" => 101,
            "other" => 102,
            "acme/billing" => 201,
            "acme/ops" => 202,
            _ => 999,
        }
    }

    fn github(login: &str, orgs: &[&str], teams: &[&str]) -> Principal {
        Principal {
            subject: "583231".into(),
            email: Some(format!("{login}@users.example")),
            email_verified: true,
            github: Some(Arc::new(GitHubIdentity {
                provider: "github".into(),
                login: login.into(),
                orgs: orgs.iter().map(|s| s.to_string()).collect(),
                teams: teams.iter().map(|s| s.to_string()).collect(),
                id: 583231,
                org_ids: orgs.iter().map(|o| id_of(o)).collect(),
                team_ids: teams.iter().map(|t| id_of(t)).collect(),
            })),
            ..Principal::default()
        }
    }

    #[test]
    fn selectors() {
        let alice = oidc("user_alice", "Alice@Example.com", true, &["billing-admins"]);
        let unverified = oidc("user_eve", "alice@example.com", false, &[]);
        let octocat = github("octocat", &["acme"], &["acme/billing"]);
        let cases: Vec<(&str, GrantSpec, &Principal, bool)> = vec![
            (
                "subject of the provider",
                grant(|g| {
                    g.provider = Some("idp".into());
                    g.subjects = vec!["user_alice".into()]
                }),
                &alice,
                true,
            ),
            (
                "subject of another provider",
                grant(|g| {
                    g.provider = Some("github".into());
                    g.subjects = vec!["user_alice".into()]
                }),
                &alice,
                false,
            ),
            (
                "GitHub id as subject",
                grant(|g| {
                    g.provider = Some("github".into());
                    g.subjects = vec!["583231".into()]
                }),
                &octocat,
                true,
            ),
            (
                "verified email, any case",
                grant(|g| g.emails = vec!["alice@example.com".into()]),
                &alice,
                true,
            ),
            (
                "unverified email",
                grant(|g| g.emails = vec!["alice@example.com".into()]),
                &unverified,
                false,
            ),
            (
                "email domain",
                grant(|g| g.email_domains = vec!["example.com".into()]),
                &alice,
                true,
            ),
            (
                "a sub-domain is another domain",
                grant(|g| g.email_domains = vec!["ample.com".into()]),
                &alice,
                false,
            ),
            (
                "groups claim",
                grant(|g| g.groups = vec!["billing-admins".into()]),
                &alice,
                true,
            ),
            (
                "groups do not name GitHub teams",
                grant(|g| g.groups = vec!["acme/billing".into()]),
                &octocat,
                false,
            ),
            (
                "GitHub login",
                grant(|g| g.users = vec!["octocat".into()]),
                &octocat,
                true,
            ),
            (
                "GitHub org",
                grant(|g| g.orgs = vec!["acme".into()]),
                &octocat,
                true,
            ),
            (
                "GitHub team",
                grant(|g| g.teams = vec!["acme/billing".into()]),
                &octocat,
                true,
            ),
            (
                "GitHub user by id",
                grant(|g| {
                    g.users = vec![GitHubRef {
                        name: None,
                        id: Some(583231),
                    }]
                }),
                &octocat,
                true,
            ),
            (
                "GitHub user by another id, whatever the name",
                grant(|g| {
                    g.users = vec![GitHubRef {
                        name: Some("octocat".into()),
                        id: Some(1),
                    }]
                }),
                &octocat,
                false,
            ),
            (
                "GitHub org by id",
                grant(|g| {
                    g.orgs = vec![GitHubRef {
                        name: None,
                        id: Some(101),
                    }]
                }),
                &octocat,
                true,
            ),
            (
                "GitHub team by id",
                grant(|g| {
                    g.teams = vec![GitHubRef {
                        name: None,
                        id: Some(201),
                    }]
                }),
                &octocat,
                true,
            ),
            (
                "another team's id",
                grant(|g| {
                    g.teams = vec![GitHubRef {
                        name: None,
                        id: Some(202),
                    }]
                }),
                &octocat,
                false,
            ),
            (
                "another team",
                grant(|g| g.teams = vec!["acme/ops".into()]),
                &octocat,
                false,
            ),
            (
                "logins are GitHub's only",
                grant(|g| g.users = vec!["user_alice".into()]),
                &alice,
                false,
            ),
            (
                "provider filter on GitHub users",
                grant(|g| {
                    g.provider = Some("idp".into());
                    g.orgs = vec!["acme".into()]
                }),
                &octocat,
                false,
            ),
        ];
        for (case, g, p, want) in cases {
            assert_eq!(matches(&g, p, &Pins::default()), want, "{case}");
        }
    }

    #[test]
    fn table_in_the_clients_namespace() {
        let spec = grant(|g| g.orgs = vec!["acme".into()]);
        let table = GrantTable {
            by_client: vec![vec![Rule {
                permissions: vec![("client_abc:invoice".into(), "read".into())],
                spec,
            }]],
            shadow: vec![false],
            pins: Arc::default(),
        };
        let member = github("mona", &["acme"], &[]);
        assert!(table.grants(0, &member, "client_abc:invoice", "read"));
        assert!(!table.grants(0, &member, "client_abc:invoice", "write"));
        assert!(!table.grants(0, &member, "client_xyz:invoice", "read"));
        assert!(
            !table.grants(1, &member, "client_abc:invoice", "read"),
            "another client"
        );
        assert!(!table.grants(
            0,
            &github("mona", &["other"], &[]),
            "client_abc:invoice",
            "read"
        ));
        assert_eq!(
            table.permissions(0, &member),
            serde_json::json!({"client_abc:invoice": ["read"]})
        );
    }

    #[test]
    fn shadow_grants_give_nothing_and_say_what_they_would_change() {
        let rule = |name: &str, shadow: bool, replaces: Option<usize>, f: fn(&mut GrantSpec)| {
            let mut spec = grant(f);
            spec.name = Some(name.into());
            spec.shadow = shadow;
            spec.replaces = replaces;
            Rule {
                permissions: vec![("client_abc:invoice".into(), "read".into())],
                spec,
            }
        };
        // The org grant is enforced; "team-only" would narrow it to a team; "solo" would add a user.
        let table = GrantTable {
            by_client: vec![vec![
                rule("org", false, None, |g| g.orgs = vec!["acme".into()]),
                rule("team-only", true, Some(0), |g| {
                    g.teams = vec!["acme/billing".into()]
                }),
                rule("solo", true, None, |g| g.users = vec!["solo".into()]),
            ]],
            shadow: vec![true],
            pins: Arc::default(),
        };
        let effects = |p: &Principal| table.shadow_effects(0, p, "client_abc:invoice", "read");
        let team_member = github("octocat", &["acme"], &["acme/billing"]);
        let org_member = github("hubot", &["acme"], &[]);
        let solo = github("solo", &[], &[]);
        assert!(table.has_shadow(0) && !table.has_shadow(1));

        assert!(table.grants(0, &team_member, "client_abc:invoice", "read"));
        assert_eq!(
            effects(&team_member),
            [],
            "the narrowed grant still names the team"
        );
        assert!(table.grants(0, &org_member, "client_abc:invoice", "read"));
        assert_eq!(
            effects(&org_member),
            [("team-only", ShadowEffect::Refuse)],
            "an org member outside the team would lose it"
        );
        assert!(
            !table.grants(0, &solo, "client_abc:invoice", "read"),
            "a shadow grant gives nothing"
        );
        assert_eq!(effects(&solo), [("solo", ShadowEffect::Allow)]);
        assert_eq!(
            table.shadow_effects(0, &solo, "client_abc:invoice", "write"),
            [],
            "another permission"
        );
        assert_eq!(
            table.permissions(0, &solo),
            serde_json::json!({}),
            "session info shows enforced grants only"
        );
        assert_eq!(
            table.permissions(0, &org_member),
            serde_json::json!({"client_abc:invoice": ["read"]})
        );
        assert_eq!(ShadowEffect::Allow.as_label(), "allow");
        assert_eq!(ShadowEffect::Refuse.as_label(), "refuse");
    }
}
