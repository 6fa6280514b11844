//! Authorization: RBAC (Role, ClusterRole, RoleBinding, ClusterRoleBinding) and the node
//! authorizer, with upstream's semantics and messages.
//!
//! Requests are judged from memory: [`Authorizer`] holds an index of the RBAC objects
//! and a graph of which node may read which secrets, configmaps, claims and service
//! accounts; both are kept current by watching the store ([`cache`]). Evaluation takes
//! a read lock for a few microseconds and never awaits. The order is upstream's
//! `Node,RBAC`: members of `system:masters` are always allowed, then the node
//! authorizer decides for node identities, then RBAC.
//!
//! Also here: the default policy created at start ([`bootstrap`]), the controller that
//! fills aggregated ClusterRoles ([`aggregation`]) and impersonation ([`impersonate`]).

pub mod aggregation;
pub mod bootstrap;
mod bootstrap_roles;
mod cache;
pub mod impersonate;
mod index;
pub mod node;
pub mod node_restriction;
pub mod rules;

use crate::api::status::ApiError;
use crate::server::http::auth::Identity;
use crate::server::http::request::RequestInfo;
use crate::server::registry::Registry;
pub use index::PolicyIndex;
pub use rules::PolicyRule;
use std::sync::{Arc, RwLock};

/// The group whose members may do everything, whatever the policy says.
pub const MASTERS: &str = "system:masters";

/// What a request asks to do, as authorizers see it (upstream's `authorizer.Attributes`).
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// Who asks.
    pub user: &'a Identity,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `impersonate`, ... (for non-resource requests: the lower-case HTTP method).
    pub verb: &'a str,
    /// True for `/api` and `/apis` resource requests, false for paths like `/healthz`.
    pub resource_request: bool,
    /// Namespace (`""` for cluster scope).
    pub namespace: &'a str,
    /// API group (`""` for core).
    pub group: &'a str,
    /// Resource plural.
    pub resource: &'a str,
    /// Subresource (`""` when none).
    pub subresource: &'a str,
    /// Object name (`""` for collections and creates).
    pub name: &'a str,
    /// The URL path of a non-resource request.
    pub path: &'a str,
}

impl<'a> Attributes<'a> {
    /// The attributes of a resource request.
    pub fn from_request(user: &'a Identity, info: &'a RequestInfo) -> Self {
        Attributes {
            user,
            verb: info.verb,
            resource_request: true,
            namespace: &info.namespace,
            group: &info.group,
            resource: &info.resource,
            subresource: &info.subresource,
            name: &info.name,
            path: "",
        }
    }

    /// The attributes of a resource request given piece by piece (reviews,
    /// impersonation checks, tests).
    pub fn resource(
        user: &'a Identity,
        verb: &'a str,
        (group, resource, subresource): (&'a str, &'a str, &'a str),
        namespace: &'a str,
        name: &'a str,
    ) -> Self {
        Attributes {
            user,
            verb,
            resource_request: true,
            namespace,
            group,
            resource,
            subresource,
            name,
            path: "",
        }
    }

    /// The attributes of a non-resource request.
    pub fn non_resource(user: &'a Identity, verb: &'a str, path: &'a str) -> Self {
        Attributes {
            user,
            verb,
            resource_request: false,
            namespace: "",
            group: "",
            resource: "",
            subresource: "",
            name: "",
            path,
        }
    }
}

/// The verb of a non-resource request: the lower-case method (`HEAD` reads like `GET`).
pub fn path_verb(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::POST => "post",
        http::Method::PUT => "put",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        http::Method::OPTIONS => "options",
        _ => "",
    }
}

/// An authorization answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied; the reason is appended to the 403 message when not empty.
    Deny(String),
}

/// Upstream's 403 for denied attributes, e.g. `pods is forbidden: User "x" cannot list
/// resource "pods" in API group "" in the namespace "y"`.
pub fn forbidden(a: &Attributes<'_>, reason: &str) -> ApiError {
    let mut why = if !a.resource_request {
        format!("User {:?} cannot {} path {:?}", a.user.user, a.verb, a.path)
    } else {
        let resource = if a.subresource.is_empty() {
            a.resource.to_string()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        format!(
            "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            a.user.user, a.verb, a.group
        )
    };
    if !reason.is_empty() {
        why.push_str(": ");
        why.push_str(reason);
    }
    if !a.resource_request {
        let mut e = ApiError::forbidden("", "", "", &why);
        e.message = format!("forbidden: {why}");
        e.details = Some(serde_json::json!({}));
        return e;
    }
    ApiError::forbidden(a.group, a.resource, a.name, &why)
}

/// Rules that apply to a user in a namespace (SelfSubjectRulesReview).
#[derive(Clone, Debug, Default)]
pub struct RulesList {
    /// Resource rules.
    pub resource: Vec<PolicyRule>,
    /// Non-resource rules.
    pub non_resource: Vec<PolicyRule>,
}

/// The authorizer: an in-memory RBAC index and node graph.
pub struct Authorizer {
    policy: RwLock<Arc<PolicyIndex>>,
    graph: RwLock<node::NodeGraph>,
}

impl Authorizer {
    /// An authorizer with no policy (only `system:masters` and nodes' static rules pass),
    /// for tests and before the cache has loaded.
    pub fn empty() -> Arc<Self> {
        Arc::new(Authorizer {
            policy: RwLock::new(Arc::new(PolicyIndex::default())),
            graph: RwLock::new(node::NodeGraph::default()),
        })
    }

    /// Loads the RBAC objects and pods from the store, then keeps following them until
    /// `shutdown` flips. Returns once the first load is complete, so the server never
    /// serves a request with an empty policy.
    pub async fn start(
        registry: Registry,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<Self>, ApiError> {
        let authz = Self::empty();
        cache::start(authz.clone(), registry, shutdown).await?;
        Ok(authz)
    }

    /// Replaces the RBAC index.
    pub(crate) fn set_policy(&self, index: PolicyIndex) {
        if let Ok(mut p) = self.policy.write() {
            *p = Arc::new(index);
        }
    }

    /// Changes the node graph.
    pub(crate) fn with_graph<R>(&self, f: impl FnOnce(&mut node::NodeGraph) -> R) -> Option<R> {
        self.graph.write().ok().map(|mut g| f(&mut g))
    }

    fn policy(&self) -> Arc<PolicyIndex> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Judges one request.
    pub fn authorize(&self, a: &Attributes<'_>) -> Decision {
        if a.user.in_group(MASTERS) {
            return Decision::Allow;
        }
        let mut reasons = Vec::new();
        if let Some(node_name) = node::node_name(a.user) {
            let decision = match self.graph.read() {
                Ok(g) => node::authorize(&g, node_name, a),
                Err(_) => Decision::Deny("node authorizer unavailable".into()),
            };
            match decision {
                Decision::Allow => return Decision::Allow,
                Decision::Deny(r) if !r.is_empty() => reasons.push(r),
                Decision::Deny(_) => {}
            }
        }
        if self.policy().allows(a) {
            return Decision::Allow;
        }
        Decision::Deny(reasons.join(", "))
    }

    /// The rules that apply to `user` in `namespace` (cluster-wide rules included).
    pub fn rules_for(&self, user: &Identity, namespace: &str) -> RulesList {
        let mut rules = self.policy().rules_for(user, namespace);
        if node::node_name(user).is_some() {
            rules.extend(node::static_rules().iter().cloned());
        }
        if user.in_group(MASTERS) {
            rules.push(PolicyRule::resource(&["*"], &["*"], &["*"]));
            rules.push(PolicyRule::urls(&["*"], &["*"]));
        }
        let mut out = RulesList::default();
        for r in rules {
            if r.non_resource_urls.is_empty() {
                if !out.resource.contains(&r) {
                    out.resource.push(r);
                }
            } else if !out.non_resource.contains(&r) {
                out.non_resource.push(r);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_match_upstream() {
        let who = Identity::new("x", &[]);
        let info = RequestInfo {
            namespace: "y".into(),
            resource: "pods".into(),
            verb: "list",
            ..Default::default()
        };
        let e = forbidden(&Attributes::from_request(&who, &info), "");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            r#"pods is forbidden: User "x" cannot list resource "pods" in API group "" in the namespace "y""#
        );
        let info = RequestInfo {
            group: "apps".into(),
            resource: "deployments".into(),
            subresource: "scale".into(),
            name: "d".into(),
            verb: "update",
            ..Default::default()
        };
        let e = forbidden(&Attributes::from_request(&who, &info), "why");
        assert_eq!(
            e.message,
            r#"deployments.apps "d" is forbidden: User "x" cannot update resource "deployments/scale" in API group "apps" at the cluster scope: why"#
        );
        let e = forbidden(&Attributes::non_resource(&who, "get", "/metrics"), "");
        assert_eq!(
            e.message,
            r#"forbidden: User "x" cannot get path "/metrics""#
        );
    }

    #[test]
    fn masters_always_allowed() {
        let a = Authorizer::empty();
        let admin = Identity::new("system:admin", &[MASTERS]);
        let nobody = Identity::new("nobody", &[]);
        let attrs = |u| Attributes::non_resource(u, "delete", "/anything");
        assert_eq!(a.authorize(&attrs(&admin)), Decision::Allow);
        assert!(matches!(a.authorize(&attrs(&nobody)), Decision::Deny(_)));
    }
}
