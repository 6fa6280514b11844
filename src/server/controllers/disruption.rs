//! The `pods/eviction` subresource with PodDisruptionBudget checks, as upstream's
//! eviction REST: a pod that is not running (pending, finished or already deleting)
//! goes at once; otherwise the (single) budget selecting it must allow one more
//! disruption, or the eviction fails with upstream's 429 "Cannot evict pod as it would
//! violate the pod's disruption budget." Evictions are serialized so that concurrent
//! ones (`kubectl drain` evicts in parallel) see each other's effect.

use crate::api::meta;
use crate::api::selector::LabelSelector;
use crate::api::ApiError;
use crate::server::informer::builtin;
use crate::server::registry::{DeleteOptions, ListOptions, Registry};
use serde_json::{json, Value};

static EVICTIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ready(pod: &Value) -> bool {
    !meta::is_deleting(pod)
        && pod["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True")
}

/// An int-or-percent of `total` (percentages round up, as upstream's
/// GetScaledValueFromIntOrPercent with roundUp).
fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some((pct * total + 99) / 100)
        }
        _ => None,
    }
}

/// How many selected pods must stay healthy.
fn desired_healthy(pdb: &Value, expected: i64) -> i64 {
    let spec = &pdb["spec"];
    if let Some(min) = scaled(&spec["minAvailable"], expected) {
        return min;
    }
    if let Some(max) = scaled(&spec["maxUnavailable"], expected) {
        return (expected - max).max(0);
    }
    1
}

/// Evicts (deletes with `opts`) a pod unless a disruption budget forbids it.
pub async fn evict(
    registry: &Registry,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(), ApiError> {
    let pods = builtin("", "v1", "pods");
    let _serial = EVICTIONS.lock().await;
    let pod = registry.get(pods, ns, name).await?.value()?;
    let running = !meta::is_deleting(&pod)
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Pending" | "Succeeded" | "Failed")
        );
    if running {
        check_budgets(registry, ns, &pod).await?;
    }
    registry.delete(pods, ns, name, opts).await?;
    Ok(())
}

async fn check_budgets(registry: &Registry, ns: &str, pod: &Value) -> Result<(), ApiError> {
    let pdbs = builtin("policy", "v1", "poddisruptionbudgets");
    let mut matching = Vec::new();
    for item in registry
        .list(pdbs, ns, &ListOptions::default())
        .await?
        .items
    {
        let pdb = item.value()?;
        let Ok(sel) = LabelSelector::from_json(&pdb["spec"]["selector"]) else {
            continue;
        };
        // An empty selector selects nothing in policy/v1 only when null; `{}` selects all.
        if pdb["spec"]["selector"].is_null() {
            continue;
        }
        if sel.matches(meta::labels(pod)) {
            matching.push((pdb, sel));
        }
    }
    if matching.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let Some((pdb, sel)) = matching.pop() else {
        return Ok(());
    };
    let selected: Vec<Value> = registry
        .list(
            builtin("", "v1", "pods"),
            ns,
            &ListOptions {
                labels: sel,
                ..Default::default()
            },
        )
        .await?
        .items
        .iter()
        .filter_map(|o| o.value().ok())
        .collect();
    let expected = selected.len() as i64;
    let healthy = selected.iter().filter(|p| ready(p)).count() as i64;
    let desired = desired_healthy(&pdb, expected);
    // An unhealthy pod may go while the budget is met (upstream's default
    // unhealthyPodEvictionPolicy IfHealthyBudget); a healthy one needs a spare.
    let allowed = if ready(pod) {
        healthy - desired > 0
    } else {
        healthy >= desired
    };
    if allowed {
        return Ok(());
    }
    let mut e = ApiError::too_many_requests(
        "Cannot evict pod as it would violate the pod's disruption budget.",
        0,
    );
    e.retry_after = None;
    e.details = Some(json!({"causes": [{
        "type": "DisruptionBudget",
        "message": format!(
            "The disruption budget {} needs {desired} healthy pods and has {healthy} currently",
            meta::name(&pdb)
        ),
    }]}));
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_scale_percentages_up() {
        assert_eq!(desired_healthy(&json!({"spec": {"minAvailable": 2}}), 3), 2);
        assert_eq!(
            desired_healthy(&json!({"spec": {"minAvailable": "50%"}}), 3),
            2
        );
        assert_eq!(
            desired_healthy(&json!({"spec": {"maxUnavailable": 1}}), 3),
            2
        );
        assert_eq!(
            desired_healthy(&json!({"spec": {"maxUnavailable": "34%"}}), 3),
            1
        );
    }
}
