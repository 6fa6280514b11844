//! The in-memory RBAC index: roles by name and bindings by subject, rebuilt from the
//! stored objects whenever one changes (RBAC objects are few and change rarely, so a
//! rebuild is cheaper to reason about than incremental edits).
//!
//! A request is allowed when some binding whose subject is the user (by name, group, or
//! service-account name) grants a role with a rule that allows it. ClusterRoleBindings
//! apply everywhere; RoleBindings only in their own namespace, also when they refer to
//! a ClusterRole.

use super::rules::PolicyRule;
use super::Attributes;
use crate::server::http::auth::Identity;
use serde_json::Value;
use std::collections::HashMap;

/// Which role a binding grants.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RoleRef {
    Cluster(String),
    Namespaced { namespace: String, name: String },
}

/// One binding of a subject to a role.
#[derive(Clone, Debug)]
struct Grant {
    /// `None` for ClusterRoleBindings, the binding's namespace for RoleBindings.
    namespace: Option<String>,
    role: RoleRef,
}

/// The index (see the module docs).
#[derive(Debug, Default)]
pub struct PolicyIndex {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    by_user: HashMap<String, Vec<Grant>>,
    by_group: HashMap<String, Vec<Grant>>,
}

fn meta<'v>(o: &'v Value, field: &str) -> &'v str {
    o["metadata"][field].as_str().unwrap_or("")
}

/// The user name of a service account.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl PolicyIndex {
    /// Builds the index from the stored objects of the four kinds.
    pub fn build<'a>(
        cluster_roles: impl IntoIterator<Item = &'a Value>,
        roles: impl IntoIterator<Item = &'a Value>,
        cluster_bindings: impl IntoIterator<Item = &'a Value>,
        bindings: impl IntoIterator<Item = &'a Value>,
    ) -> Self {
        let mut ix = PolicyIndex::default();
        for cr in cluster_roles {
            ix.cluster_roles.insert(
                meta(cr, "name").to_string(),
                PolicyRule::list_from_json(&cr["rules"]),
            );
        }
        for r in roles {
            ix.roles.insert(
                (
                    meta(r, "namespace").to_string(),
                    meta(r, "name").to_string(),
                ),
                PolicyRule::list_from_json(&r["rules"]),
            );
        }
        for b in cluster_bindings {
            let role = match (b["roleRef"]["kind"].as_str(), b["roleRef"]["name"].as_str()) {
                (Some("ClusterRole"), Some(n)) => RoleRef::Cluster(n.to_string()),
                _ => continue,
            };
            ix.add_subjects(
                b,
                "",
                &Grant {
                    namespace: None,
                    role,
                },
            );
        }
        for b in bindings {
            let ns = meta(b, "namespace");
            let role = match (b["roleRef"]["kind"].as_str(), b["roleRef"]["name"].as_str()) {
                (Some("ClusterRole"), Some(n)) => RoleRef::Cluster(n.to_string()),
                (Some("Role"), Some(n)) => RoleRef::Namespaced {
                    namespace: ns.to_string(),
                    name: n.to_string(),
                },
                _ => continue,
            };
            ix.add_subjects(
                b,
                ns,
                &Grant {
                    namespace: Some(ns.to_string()),
                    role,
                },
            );
        }
        ix
    }

    fn add_subjects(&mut self, binding: &Value, binding_ns: &str, grant: &Grant) {
        let Some(subjects) = binding["subjects"].as_array() else {
            return;
        };
        for s in subjects {
            let name = s["name"].as_str().unwrap_or("");
            if name.is_empty() {
                continue;
            }
            match s["kind"].as_str() {
                Some("User") => self.by_user.entry(name.to_string()),
                Some("Group") => self.by_group.entry(name.to_string()),
                Some("ServiceAccount") => {
                    // A service account without a namespace means the binding's own.
                    let ns = s["namespace"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(binding_ns);
                    if ns.is_empty() {
                        continue;
                    }
                    self.by_user.entry(service_account_user(ns, name))
                }
                _ => continue,
            }
            .or_default()
            .push(grant.clone());
        }
    }

    /// Every grant whose subject is `user`.
    fn grants<'s>(&'s self, user: &'s Identity) -> impl Iterator<Item = &'s Grant> + 's {
        self.by_user
            .get(&user.user)
            .into_iter()
            .chain(user.groups.iter().filter_map(|g| self.by_group.get(g)))
            .flatten()
    }

    fn rules(&self, role: &RoleRef) -> &[PolicyRule] {
        let rules = match role {
            RoleRef::Cluster(n) => self.cluster_roles.get(n),
            RoleRef::Namespaced { namespace, name } => {
                self.roles.get(&(namespace.clone(), name.clone()))
            }
        };
        rules.map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether some binding of the user allows the request.
    pub fn allows(&self, a: &Attributes<'_>) -> bool {
        self.grants(a.user).any(|g| {
            let in_scope = match &g.namespace {
                None => true,
                Some(ns) => a.resource_request && ns == a.namespace,
            };
            in_scope && self.rules(&g.role).iter().any(|r| r.allows(a))
        })
    }

    /// The rules of every binding of `user` that applies in `namespace`.
    pub fn rules_for(&self, user: &Identity, namespace: &str) -> Vec<PolicyRule> {
        let mut out: Vec<PolicyRule> = Vec::new();
        for g in self.grants(user) {
            if g.namespace.as_deref().is_some_and(|ns| ns != namespace) {
                continue;
            }
            for r in self.rules(&g.role) {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index() -> PolicyIndex {
        let crs = [
            json!({"metadata": {"name": "view"}, "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods", "pods/log"]}]}),
            json!({"metadata": {"name": "disco"}, "rules": [{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*"]}]}),
        ];
        let roles = [
            json!({"metadata": {"name": "sec", "namespace": "b"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s1"]}]}),
        ];
        let crbs = [
            json!({"metadata": {"name": "d"}, "roleRef": {"kind": "ClusterRole", "name": "disco"}, "subjects": [{"kind": "Group", "name": "system:authenticated"}]}),
        ];
        let rbs = [
            json!({"metadata": {"name": "v", "namespace": "a"}, "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "jane"}]}),
            json!({"metadata": {"name": "s", "namespace": "b"}, "roleRef": {"kind": "Role", "name": "sec"}, "subjects": [{"kind": "ServiceAccount", "name": "bot"}]}),
            json!({"metadata": {"name": "x", "namespace": "b"}, "roleRef": {"kind": "Role", "name": "missing"}, "subjects": [{"kind": "User", "name": "jane"}]}),
        ];
        PolicyIndex::build(&crs, &roles, &crbs, &rbs)
    }

    fn res<'a>(
        who: &'a Identity,
        verb: &'a str,
        ns: &'a str,
        r: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes::resource(who, verb, ("", r, ""), ns, name)
    }

    #[test]
    fn role_binding_to_cluster_role_is_namespaced() {
        let ix = index();
        let jane = Identity::new("jane", &["system:authenticated"]);
        assert!(ix.allows(&res(&jane, "list", "a", "pods", "")));
        assert!(!ix.allows(&res(&jane, "list", "b", "pods", "")));
        assert!(!ix.allows(&res(&jane, "list", "", "pods", "")));
        assert!(!ix.allows(&res(&jane, "delete", "a", "pods", "p")));
        assert!(ix.allows(&Attributes::non_resource(&jane, "get", "/api/v1")));
        assert!(!ix.allows(&Attributes::non_resource(&jane, "get", "/metrics")));
        let rules = ix.rules_for(&jane, "a");
        assert_eq!(rules.len(), 2);
        assert_eq!(ix.rules_for(&jane, "b").len(), 1);
    }

    #[test]
    fn service_account_subjects_and_resource_names() {
        let ix = index();
        let bot = Identity::new(&service_account_user("b", "bot"), &[]);
        assert!(ix.allows(&res(&bot, "get", "b", "secrets", "s1")));
        assert!(!ix.allows(&res(&bot, "get", "b", "secrets", "s2")));
        let other = Identity::new(&service_account_user("a", "bot"), &[]);
        assert!(!ix.allows(&res(&other, "get", "b", "secrets", "s1")));
    }
}
