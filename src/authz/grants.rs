//! Permissions given by config (`[[clients.grants]]`): a user, an email, an email domain, a
//! `groups` claim value, a GitHub login, organisation or team mapped to permissions in the
//! client's namespace. They are asked only when the token's own claims do not grant a route's
//! permission, so a token that grants it costs nothing more.

use crate::config::model::{ClientSettings, GrantSpec, IDP_PROVIDER};
use crate::identity::browser::ConfigGrants;
use crate::identity::Principal;

/// One grant, its permissions named in the client's namespace.
struct Rule {
    spec: GrantSpec,
    /// `(entity type, action)`, e.g. `("client_abc:invoice", "read")`.
    permissions: Vec<(String, String)>,
}

/// Every client's grants, by client index.
#[derive(Default)]
pub struct GrantTable {
    by_client: Vec<Vec<Rule>>,
}

impl GrantTable {
    /// The grants of `clients`, each in its client's namespace.
    pub fn from_config(clients: &[ClientSettings]) -> GrantTable {
        let by_client = clients
            .iter()
            .map(|c| {
                c.grants
                    .iter()
                    .map(|g| Rule { permissions: g.permissions.iter().map(|(r, a)| (format!("{}:{r}", c.namespace), a.clone())).collect(), spec: g.clone() })
                    .collect()
            })
            .collect();
        GrantTable { by_client }
    }

    /// True when a grant of client `client` gives `principal` the permission `action` on `entity`.
    pub fn grants(&self, client: usize, principal: &Principal, entity: &str, action: &str) -> bool {
        self.by_client
            .get(client)
            .is_some_and(|rules| rules.iter().any(|r| r.permissions.iter().any(|(e, a)| e == entity && a == action) && matches(&r.spec, principal)))
    }

    /// Every permission client `client`'s grants give `principal`, as `entity → [actions]`.
    pub fn granted(&self, client: usize, principal: &Principal) -> Vec<(&str, &str)> {
        let Some(rules) = self.by_client.get(client) else { return Vec::new() };
        rules.iter().filter(|r| matches(&r.spec, principal)).flat_map(|r| r.permissions.iter().map(|(e, a)| (e.as_str(), a.as_str()))).collect()
    }

    /// True when client `client` has any grant.
    pub fn any(&self, client: usize) -> bool {
        self.by_client.get(client).is_some_and(|r| !r.is_empty())
    }
}

impl ConfigGrants for GrantTable {
    fn permissions(&self, client: usize, principal: &Principal) -> serde_json::Value {
        let mut all = principal.permissions.to_json();
        if let serde_json::Value::Object(map) = &mut all {
            for (entity, action) in self.granted(client, principal) {
                let actions = map.entry(entity.to_string()).or_insert_with(|| serde_json::Value::Array(Vec::new()));
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
fn matches(g: &GrantSpec, p: &Principal) -> bool {
    let provider = p.github.as_ref().map_or(IDP_PROVIDER, |gh| gh.provider.as_str());
    if g.provider.as_deref().is_some_and(|want| want != provider) {
        return false;
    }
    if g.subjects.contains(&p.subject) {
        return true;
    }
    if p.email_verified {
        if let Some(email) = p.email.as_deref().map(str::to_ascii_lowercase) {
            let domain = email.rsplit_once('@').map(|(_, d)| d);
            if g.emails.contains(&email) || domain.is_some_and(|d| g.email_domains.iter().any(|x| x == d)) {
                return true;
            }
        }
    }
    match &p.github {
        Some(gh) => g.users.contains(&gh.login) || gh.orgs.iter().any(|o| g.orgs.contains(o)) || gh.teams.iter().any(|t| g.teams.contains(t)),
        None => p.groups.iter().any(|grp| g.groups.iter().any(|x| **x == **grp)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::GitHubIdentity;
    use std::sync::Arc;

    fn grant(f: impl FnOnce(&mut GrantSpec)) -> GrantSpec {
        let mut g = GrantSpec { permissions: vec![("invoice".into(), "read".into())], ..GrantSpec::default() };
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
            ("subject of the provider", grant(|g| { g.provider = Some("idp".into()); g.subjects = vec!["user_alice".into()] }), &alice, true),
            ("subject of another provider", grant(|g| { g.provider = Some("github".into()); g.subjects = vec!["user_alice".into()] }), &alice, false),
            ("GitHub id as subject", grant(|g| { g.provider = Some("github".into()); g.subjects = vec!["583231".into()] }), &octocat, true),
            ("verified email, any case", grant(|g| g.emails = vec!["alice@example.com".into()]), &alice, true),
            ("unverified email", grant(|g| g.emails = vec!["alice@example.com".into()]), &unverified, false),
            ("email domain", grant(|g| g.email_domains = vec!["example.com".into()]), &alice, true),
            ("a sub-domain is another domain", grant(|g| g.email_domains = vec!["ample.com".into()]), &alice, false),
            ("groups claim", grant(|g| g.groups = vec!["billing-admins".into()]), &alice, true),
            ("groups do not name GitHub teams", grant(|g| g.groups = vec!["acme/billing".into()]), &octocat, false),
            ("GitHub login", grant(|g| g.users = vec!["octocat".into()]), &octocat, true),
            ("GitHub org", grant(|g| g.orgs = vec!["acme".into()]), &octocat, true),
            ("GitHub team", grant(|g| g.teams = vec!["acme/billing".into()]), &octocat, true),
            ("another team", grant(|g| g.teams = vec!["acme/ops".into()]), &octocat, false),
            ("logins are GitHub's only", grant(|g| g.users = vec!["user_alice".into()]), &alice, false),
            ("provider filter on GitHub users", grant(|g| { g.provider = Some("idp".into()); g.orgs = vec!["acme".into()] }), &octocat, false),
        ];
        for (case, g, p, want) in cases {
            assert_eq!(matches(&g, p), want, "{case}");
        }
    }

    #[test]
    fn table_in_the_clients_namespace() {
        let spec = grant(|g| g.orgs = vec!["acme".into()]);
        let table = GrantTable { by_client: vec![vec![Rule { permissions: vec![("client_abc:invoice".into(), "read".into())], spec }]] };
        let member = github("mona", &["acme"], &[]);
        assert!(table.grants(0, &member, "client_abc:invoice", "read"));
        assert!(!table.grants(0, &member, "client_abc:invoice", "write"));
        assert!(!table.grants(0, &member, "client_xyz:invoice", "read"));
        assert!(!table.grants(1, &member, "client_abc:invoice", "read"), "another client");
        assert!(!table.grants(0, &github("mona", &["other"], &[]), "client_abc:invoice", "read"));
        assert_eq!(table.permissions(0, &member), serde_json::json!({"client_abc:invoice": ["read"]}));
    }
}
