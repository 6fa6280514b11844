//! Pure Deployment arithmetic and naming, as upstream defines them: the
//! `pod-template-hash`, template equality ignoring that hash, maxSurge/maxUnavailable
//! resolution (percentages rounded up for surge and down for unavailable), the revision
//! annotations, and which annotations a ReplicaSet copies from its Deployment.

use serde_json::{json, Map, Value};

/// The label (and selector key) that tells ReplicaSets of one Deployment apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// A ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had (a rollback reuses an old ReplicaSet).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last scaled this ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when it last scaled this ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Annotations a ReplicaSet does not copy from its Deployment (upstream's list).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Serializes with object keys sorted, so equal templates hash equally whatever order
/// their fields were written in.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json!(k).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The `pod-template-hash` of a template: FNV-1a (32 bit) of the template and the
/// collision count, its decimal digits mapped onto upstream's safe alphabet (no vowels,
/// no look-alike characters), as `rand.SafeEncodeString` does.
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut s = String::new();
    canonical(&normalized(template).unwrap_or(Value::Null), &mut s);
    if let Some(c) = collision_count {
        s.push_str(&c.to_string());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// Drops nulls, empty strings, empty objects and empty arrays: clients that round-trip
/// a template through Go structs (`kubectl rollout undo` does) write
/// `creationTimestamp: null` and `resources: {}` where the stored object had nothing,
/// and upstream, comparing typed structs, sees no difference.
pub fn normalized(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::Object(m) => {
            let out: Map<String, Value> = m
                .iter()
                .filter_map(|(k, v)| normalized(v).map(|v| (k.clone(), v)))
                .collect();
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => Some(Value::Array(
            a.iter()
                .map(|x| normalized(x).unwrap_or(Value::Null))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

fn without_hash(template: &Value) -> Value {
    let mut t = normalized(template).unwrap_or(Value::Null);
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            if let Some(m) = t["metadata"].as_object_mut() {
                m.remove("labels");
            }
        }
    }
    t
}

/// Whether two pod templates are equal apart from the `pod-template-hash` label.
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    without_hash(a) == without_hash(b)
}

/// An int-or-percent (`3`, `"25%"`) scaled against `total`: percentages round up or down.
pub fn scaled_value(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
        {
            Some(pct) if round_up => (pct * total + 99).div_euclid(100),
            Some(pct) => (pct * total).div_euclid(100),
            None => s.trim().parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// Whether the Deployment uses RollingUpdate (the default).
pub fn is_rolling(d: &Value) -> bool {
    d["spec"]["strategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `spec.replicas` (1 when unset, as defaulting does).
pub fn replicas(v: &Value) -> i64 {
    v["spec"]["replicas"].as_i64().unwrap_or(1).max(0)
}

/// (maxSurge, maxUnavailable) of a RollingUpdate Deployment resolved against
/// `spec.replicas`; both zero becomes maxUnavailable 1 so a rollout can move.
pub fn fenceposts(d: &Value) -> (i64, i64) {
    if !is_rolling(d) {
        return (0, 0);
    }
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let want = replicas(d);
    let surge = scaled_value(ru.get("maxSurge").unwrap_or(&json!("25%")), want, true);
    let unavailable = scaled_value(
        ru.get("maxUnavailable").unwrap_or(&json!("25%")),
        want,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// Upstream's `MaxUnavailable`: 0 for Recreate or no replicas, never above replicas.
pub fn max_unavailable(d: &Value) -> i64 {
    let want = replicas(d);
    if !is_rolling(d) || want == 0 {
        return 0;
    }
    fenceposts(d).1.min(want)
}

fn annotations(v: &Value) -> Option<&Map<String, Value>> {
    v["metadata"]["annotations"].as_object()
}

fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    annotations(v)?.get(key)?.as_str()
}

/// The `deployment.kubernetes.io/revision` of a ReplicaSet, 0 without one.
pub fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// An integer annotation.
pub fn int_annotation(rs: &Value, key: &str) -> Option<i64> {
    annotation(rs, key)?.parse().ok()
}

/// Sets an annotation, creating the map when needed.
pub fn set_annotation(obj: &mut Value, key: &str, value: String) {
    let meta = &mut obj["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][key] = json!(value);
}

/// Brings a ReplicaSet's annotations in line with its Deployment: the copied
/// annotations, and `revision` (an older one moves to `revision-history`, as a
/// rollback to it makes it the newest again).
pub fn sync_new_rs_annotations(rs: &mut Value, d: &Value, new_revision: i64) {
    if let Some(from) = annotations(d) {
        for (k, v) in from {
            if !NOT_COPIED.contains(&k.as_str()) {
                set_annotation(rs, k, v.as_str().unwrap_or("").to_string());
            }
        }
    }
    let old = revision(rs);
    if old < new_revision {
        if old > 0 {
            let history = match annotation(rs, REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old.to_string(),
            };
            set_annotation(rs, REVISION_HISTORY, history);
        }
        set_annotation(rs, REVISION, new_revision.to_string());
    }
}

/// Sets the desired-replicas and max-replicas annotations a scale leaves.
pub fn set_replicas_annotations(rs: &mut Value, d: &Value) {
    let want = replicas(d);
    set_annotation(rs, DESIRED_REPLICAS, want.to_string());
    set_annotation(rs, MAX_REPLICAS, (want + fenceposts(d).0).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let d = json!({"spec": {"replicas": 10, "strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}});
        assert_eq!(fenceposts(&d), (3, 2));
        let d = json!({"spec": {"replicas": 1, "strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}}}});
        assert_eq!(fenceposts(&d), (0, 1), "both zero: unavailable becomes 1");
        let d = json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}});
        assert_eq!(max_unavailable(&d), 0);
    }

    #[test]
    fn hash_is_stable_and_ignores_field_order_but_not_content() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let b = json!({"spec": {"containers": [{"image": "a", "name": "c"}]}, "metadata": {"labels": {"app": "web"}}});
        let c = json!({"spec": {"containers": [{"image": "b", "name": "c"}]}, "metadata": {"labels": {"app": "web"}}});
        assert_eq!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&c, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(template_hash(&a, None)
            .chars()
            .all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch)));
    }

    #[test]
    fn reused_replica_set_keeps_its_old_revision_in_history() {
        let d = json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "v1", REVISION: "3"}}});
        let mut rs = json!({"metadata": {"annotations": {REVISION: "1"}}});
        sync_new_rs_annotations(&mut rs, &d, 4);
        assert_eq!(revision(&rs), 4);
        assert_eq!(rs["metadata"]["annotations"][REVISION_HISTORY], "1");
        assert_eq!(
            rs["metadata"]["annotations"]["kubernetes.io/change-cause"],
            "v1"
        );
        assert!(equal_ignore_hash(
            &json!({"metadata": {"labels": {"app": "a", HASH_LABEL: "x"}},
                    "spec": {"containers": [{"name": "c"}]}}),
            &json!({"metadata": {"creationTimestamp": null, "labels": {"app": "a"}},
                    "spec": {"containers": [{"name": "c", "resources": {}}]}})
        ));
    }
}
