//! Upstream's DefaultTolerationSeconds admission: every new pod that does not already
//! tolerate them gets `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable`
//! NoExecute tolerations for 300 s (or what the server's
//! `--default-not-ready-toleration-seconds` / `--default-unreachable-toleration-seconds`
//! say), so its pods leave a lost node after five minutes.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};

static NOT_READY_SECONDS: AtomicI64 = AtomicI64::new(300);
static UNREACHABLE_SECONDS: AtomicI64 = AtomicI64::new(300);

/// Sets the tolerationSeconds new pods get (the server calls this once at start).
pub fn set_default_toleration_seconds(not_ready: i64, unreachable: i64) {
    NOT_READY_SECONDS.store(not_ready, Ordering::Relaxed);
    UNREACHABLE_SECONDS.store(unreachable, Ordering::Relaxed);
}

/// Adds the default NoExecute tolerations to a pod being created.
pub fn default_toleration_seconds(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tolerates = |key: &str| {
        tolerations.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let e = t["effect"].as_str().unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        })
    };
    let add: Vec<(&str, i64)> = [
        (
            "node.kubernetes.io/not-ready",
            NOT_READY_SECONDS.load(Ordering::Relaxed),
        ),
        (
            "node.kubernetes.io/unreachable",
            UNREACHABLE_SECONDS.load(Ordering::Relaxed),
        ),
    ]
    .into_iter()
    .filter(|(k, _)| !tolerates(k))
    .collect();
    if add.is_empty() {
        return;
    }
    for (key, secs) in add {
        tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}));
    }
    spec.insert("tolerations".into(), Value::Array(tolerations));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_missing_tolerations_only() {
        let mut pod = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]}});
        default_toleration_seconds(&mut pod);
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(t[1]["tolerationSeconds"], 300);
        let mut everything = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut everything);
        assert_eq!(
            everything["spec"]["tolerations"].as_array().unwrap().len(),
            1
        );
    }
}
