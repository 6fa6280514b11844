//! RBAC policy rules and how one rule matches one request, with upstream's semantics:
//! `*` for verbs, groups and resources, `resource/subresource` and `*/subresource`,
//! resourceNames (an empty list means every name), and nonResourceURLs with a trailing
//! `*` as a prefix match.

use super::Attributes;
use serde_json::{json, Value};

/// One `PolicyRule` of a Role or ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyRule {
    /// Verbs (`get`, `list`, ..., `*`).
    pub verbs: Vec<String>,
    /// API groups (`""` is core, `*` is every group).
    pub api_groups: Vec<String>,
    /// Resources (`pods`, `pods/log`, `*/scale`, `*`).
    pub resources: Vec<String>,
    /// Names the rule is limited to; empty means every name.
    pub resource_names: Vec<String>,
    /// Non-resource paths (`/healthz`, `/api/*`, `*`).
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl PolicyRule {
    /// A resource rule (for tables of built-in policy).
    pub fn resource(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        let own = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        PolicyRule {
            verbs: own(verbs),
            api_groups: own(groups),
            resources: own(resources),
            ..Default::default()
        }
    }

    /// The same rule limited to `names`.
    pub fn names(mut self, names: &[&str]) -> Self {
        self.resource_names = names.iter().map(|x| x.to_string()).collect();
        self
    }

    /// A non-resource rule.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> Self {
        let own = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        PolicyRule {
            verbs: own(verbs),
            non_resource_urls: own(urls),
            ..Default::default()
        }
    }

    /// Reads one rule from its JSON form.
    pub fn from_json(v: &Value) -> Self {
        PolicyRule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// Reads the `rules` array of a Role or ClusterRole.
    pub fn list_from_json(rules: &Value) -> Vec<Self> {
        rules
            .as_array()
            .map(|a| a.iter().map(Self::from_json).collect())
            .unwrap_or_default()
    }

    /// The JSON form, omitting empty lists like upstream's encoder.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: &Vec<String>| {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        };
        put("verbs", &self.verbs);
        put("apiGroups", &self.api_groups);
        put("resources", &self.resources);
        put("resourceNames", &self.resource_names);
        put("nonResourceURLs", &self.non_resource_urls);
        if !m.contains_key("verbs") {
            m.insert("verbs".into(), json!([]));
        }
        Value::Object(m)
    }

    /// Whether this rule allows the request (upstream's `RuleAllows`).
    pub fn allows(&self, a: &Attributes<'_>) -> bool {
        if !self.verb_matches(a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.url_matches(a.path);
        }
        let combined;
        let resource = if a.subresource.is_empty() {
            a.resource
        } else {
            combined = format!("{}/{}", a.resource, a.subresource);
            combined.as_str()
        };
        self.group_matches(a.group)
            && self.resource_matches(resource, a.subresource)
            && self.name_matches(a.name)
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }

    fn resource_matches(&self, combined: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            r == "*"
                || r == combined
                || (!subresource.is_empty()
                    && r.strip_prefix("*/").is_some_and(|s| s == subresource))
        })
    }

    fn name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }

    fn url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            u == "*"
                || u == path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http::auth::Identity;

    fn res<'a>(
        who: &'a Identity,
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes::resource(who, verb, (group, resource, sub), "a", name)
    }

    #[test]
    fn verbs_groups_resources_and_names() {
        let who = Identity::new("u", &[]);
        let r = PolicyRule::resource(&["get", "list"], &[""], &["pods", "pods/log"]);
        assert!(r.allows(&res(&who, "list", "", "pods", "", "")));
        assert!(r.allows(&res(&who, "get", "", "pods", "log", "p")));
        assert!(!r.allows(&res(&who, "get", "", "pods", "exec", "p")));
        assert!(!r.allows(&res(&who, "delete", "", "pods", "", "p")));
        assert!(!r.allows(&res(&who, "get", "apps", "pods", "", "p")));
        let star = PolicyRule::resource(&["*"], &["*"], &["*"]);
        assert!(star.allows(&res(&who, "impersonate", "x.io", "users", "status", "n")));
        let sub = PolicyRule::resource(&["update"], &["apps"], &["*/scale"]);
        assert!(sub.allows(&res(&who, "update", "apps", "deployments", "scale", "d")));
        assert!(!sub.allows(&res(&who, "update", "apps", "deployments", "", "d")));
        let named = PolicyRule::resource(&["get"], &[""], &["secrets"]).names(&["s1"]);
        assert!(named.allows(&res(&who, "get", "", "secrets", "", "s1")));
        assert!(!named.allows(&res(&who, "get", "", "secrets", "", "s2")));
        assert!(!named.allows(&res(&who, "list", "", "secrets", "", "")));
    }

    #[test]
    fn non_resource_urls() {
        let who = Identity::new("u", &[]);
        let r = PolicyRule::urls(&["get"], &["/healthz", "/api/*"]);
        let path = |p: &'static str| Attributes::non_resource(&who, "get", p);
        assert!(r.allows(&path("/healthz")));
        assert!(!r.allows(&path("/healthz/ping")));
        assert!(r.allows(&path("/api/v1")));
        assert!(!r.allows(&path("/apis")));
        // A resource rule never matches a path and the other way round.
        assert!(!PolicyRule::resource(&["*"], &["*"], &["*"]).allows(&path("/x")));
        assert!(!r.allows(&res(&who, "get", "", "pods", "", "")));
    }

    #[test]
    fn json_round_trip() {
        let v = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]});
        let r = PolicyRule::from_json(&v);
        assert_eq!(r.to_json(), v);
    }
}
