//! The ClusterRole aggregation controller: a ClusterRole with an `aggregationRule`
//! gets, as its `rules`, the rules of every other ClusterRole matching one of its
//! `clusterRoleSelectors` (in name order, duplicates dropped), like upstream's
//! clusterrole-aggregation controller. This is how admin, edit and view pick up the
//! `aggregate-to-*` roles and those of installed add-ons.

use super::rules::PolicyRule;
use crate::api::resources::{self, Resource};
use crate::api::selector::LabelSelector;
use crate::api::status::ApiError;
use crate::server::registry::{ListOptions, Registry};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tokio::sync::watch;

fn cluster_roles() -> Result<&'static Resource, ApiError> {
    resources::find("rbac.authorization.k8s.io", "v1", "clusterroles")
        .ok_or_else(|| ApiError::internal("resource table lacks clusterroles"))
}

fn selectors(role: &Value) -> Option<Vec<LabelSelector>> {
    let sels = role["aggregationRule"]["clusterRoleSelectors"].as_array()?;
    Some(
        sels.iter()
            .filter_map(|s| LabelSelector::from_json(s).ok())
            // An empty selector would aggregate every role; upstream skips it too.
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// A role's labels and current rules.
type Labelled<'v> = (Option<&'v serde_json::Map<String, Value>>, Vec<PolicyRule>);

/// The rules each aggregated role should have, by name, computed to a fixed point so
/// that nested aggregation (view into edit into admin) settles in one run. Only roles
/// whose rules change are returned.
pub fn aggregate(roles: &[Value]) -> BTreeMap<String, Vec<PolicyRule>> {
    let mut current: BTreeMap<String, Labelled<'_>> = roles
        .iter()
        .map(|r| {
            (
                r["metadata"]["name"].as_str().unwrap_or("").to_string(),
                (
                    r["metadata"]["labels"].as_object(),
                    PolicyRule::list_from_json(&r["rules"]),
                ),
            )
        })
        .collect();
    let aggregated: Vec<(String, Vec<LabelSelector>)> = roles
        .iter()
        .filter_map(|r| Some((r["metadata"]["name"].as_str()?.to_string(), selectors(r)?)))
        .collect();
    let mut changed = BTreeMap::new();
    // Each pass can push rules one level further up a chain of aggregations.
    for _ in 0..=aggregated.len() {
        let mut any = false;
        for (name, sels) in &aggregated {
            let mut rules: Vec<PolicyRule> = Vec::new();
            for (other, (labels, other_rules)) in &current {
                if other == name || !sels.iter().any(|s| s.matches(*labels)) {
                    continue;
                }
                for r in other_rules {
                    if !rules.contains(r) {
                        rules.push(r.clone());
                    }
                }
            }
            if let Some(entry) = current.get_mut(name) {
                if entry.1 != rules {
                    entry.1 = rules.clone();
                    changed.insert(name.clone(), rules);
                    any = true;
                }
            }
        }
        if !any {
            break;
        }
    }
    changed
}

/// One pass: reads every ClusterRole and writes the aggregated ones that changed.
pub async fn sync_once(registry: &Registry) -> Result<(), ApiError> {
    let res = cluster_roles()?;
    let list = registry.list(res, "", &ListOptions::default()).await?;
    let roles: Vec<Value> = list
        .items
        .iter()
        .map(|o| o.value())
        .collect::<Result<_, _>>()?;
    for (name, rules) in aggregate(&roles) {
        let rules: Vec<Value> = rules.iter().map(PolicyRule::to_json).collect();
        let r = registry
            .update_with(res, "", &name, |o| {
                o["rules"] = json!(rules);
                Ok(())
            })
            .await;
        match r {
            Ok(_) => tracing::debug!(role = %name, "aggregated ClusterRole rules updated"),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs until `shutdown` flips, re-aggregating whenever a ClusterRole changes.
pub async fn run(registry: Registry, mut shutdown: watch::Receiver<bool>) {
    let Ok(res) = cluster_roles() else { return };
    loop {
        let rev = registry.store().current_revision();
        if let Err(e) = sync_once(&registry).await {
            tracing::warn!(error = %e, "clusterrole aggregation failed; retrying");
        }
        if !crate::server::controllers::wait_for_change(
            &registry,
            res.key_prefix(),
            rev,
            &mut shutdown,
        )
        .await
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, labels: Value, rules: Value, agg: Option<&str>) -> Value {
        let mut r = json!({"metadata": {"name": name, "labels": labels}, "rules": rules});
        if let Some(l) = agg {
            r["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {l: "true"}}]});
        }
        r
    }

    #[test]
    fn nested_aggregation_settles() {
        let get_pods = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]);
        let del_pods = json!([{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]);
        let roles = vec![
            role(
                "edit",
                json!({"to-admin": "true"}),
                Value::Null,
                Some("to-edit"),
            ),
            role(
                "view",
                json!({"to-edit": "true"}),
                Value::Null,
                Some("to-view"),
            ),
            role(
                "agg-view",
                json!({"to-view": "true"}),
                get_pods.clone(),
                None,
            ),
            role("agg-edit", json!({"to-edit": "true"}), del_pods, None),
            role(
                "unrelated",
                json!({}),
                json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
                None,
            ),
        ];
        let out = aggregate(&roles);
        assert_eq!(out["view"], PolicyRule::list_from_json(&get_pods));
        let edit = &out["edit"];
        assert_eq!(edit.len(), 2);
        assert!(edit.iter().any(|r| r.verbs == ["delete"]));
        assert!(edit.iter().any(|r| r.verbs == ["get"]));
        // Already aggregated roles are not rewritten.
        let mut settled = roles.clone();
        settled[1]["rules"] = get_pods;
        assert!(!aggregate(&settled).contains_key("view"));
    }
}
