//! The static permission check against a verified token's `permissions` and `abac_required` claims.
//!
//! A permission is granted when `permissions[type]` or `permissions["type:id"]` lists it and
//! `abac_required[type]` does not; listed in `abac_required`, it needs the IdP's live check.

use crate::config::model::{Access, ClientSettings, RouteSpec};
use crate::identity::Principal;
use std::sync::Arc;

/// What the token alone says about a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Granted by the token's claims.
    Granted,
    /// The token marks it for a live ABAC decision by the IdP.
    NeedsLiveCheck,
    /// Not granted.
    Denied,
}

/// Checks `action` on `entity_type` (and the one entity `entity_id`, when known).
pub fn check(
    principal: &Principal,
    entity_type: &str,
    entity_id: Option<&str>,
    action: &str,
) -> Decision {
    if principal.abac_required.lists(entity_type, action) {
        return Decision::NeedsLiveCheck;
    }
    let for_type = principal.permissions.lists(entity_type, action);
    let for_entity = || {
        entity_id.is_some_and(|id| {
            let key = format!("{entity_type}:{id}");
            principal.permissions.lists(&key, action)
        })
    };
    if for_type || for_entity() {
        Decision::Granted
    } else {
        Decision::Denied
    }
}

/// A route's permission in one client's namespace, named once at start: `entity`
/// (`client_abc:invoice`), `action` (`read`) and `granted` (`client_abc:invoice:read`).
pub struct PermissionNames {
    /// The entity type.
    pub entity: Arc<str>,
    /// The action.
    pub action: Arc<str>,
    /// `entity:action`, as sent upstream.
    pub granted: Arc<str>,
    /// `granted` as a header value.
    pub header: http::HeaderValue,
}

impl PermissionNames {
    /// The permission names of every (route, client) pair; `None` where the route needs none.
    pub fn table(
        routes: &[RouteSpec],
        clients: &[ClientSettings],
    ) -> Vec<Vec<Option<Arc<PermissionNames>>>> {
        routes
            .iter()
            .map(|r| {
                clients
                    .iter()
                    .map(|c| match &r.access {
                        Access::Permission(p) => {
                            let entity = format!("{}:{}", c.namespace, p.resource);
                            let granted = format!("{entity}:{}", p.action);
                            Some(Arc::new(PermissionNames {
                                header: crate::headers::encode(&granted),
                                granted: granted.into(),
                                entity: entity.into(),
                                action: p.action.as_str().into(),
                            }))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Grants;

    fn principal(perms: serde_json::Value, abac: serde_json::Value) -> Principal {
        Principal {
            subject: "user_1".into(),
            permissions: Grants::from_claim(&perms),
            abac_required: Grants::from_claim(&abac),
            ..Principal::default()
        }
    }

    #[test]
    fn decisions_table() {
        let p = principal(
            serde_json::json!({"client_abc:invoice": ["read", "write", "refund"], "client_abc:report:r1": ["read"]}),
            serde_json::json!({"client_abc:invoice": ["refund"]}),
        );
        let cases = [
            ("client_abc:invoice", None, "read", Decision::Granted),
            (
                "client_abc:invoice",
                Some("inv_1"),
                "write",
                Decision::Granted,
            ),
            (
                "client_abc:invoice",
                None,
                "refund",
                Decision::NeedsLiveCheck,
            ),
            ("client_abc:invoice", None, "delete", Decision::Denied),
            ("client_abc:report", Some("r1"), "read", Decision::Granted),
            ("client_abc:report", Some("r2"), "read", Decision::Denied),
            ("client_abc:report", None, "read", Decision::Denied),
            ("client_xyz:invoice", None, "read", Decision::Denied),
            ("client_abc:invoic", None, "read", Decision::Denied),
        ];
        for (entity, id, action, want) in cases {
            assert_eq!(
                check(&p, entity, id, action),
                want,
                "{entity} {id:?} {action}"
            );
        }
    }

    #[test]
    fn token_without_claims_grants_nothing() {
        let p = principal(serde_json::Value::Null, serde_json::Value::Null);
        assert_eq!(
            check(&p, "client_abc:invoice", None, "read"),
            Decision::Denied
        );
    }
}
