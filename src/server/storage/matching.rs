//! The pure rules of volume binding, shared by the binder, the provisioner and the
//! scheduler's volume filter: which claims a pod uses, a claim's effective class, whether
//! a PersistentVolume satisfies a claim (class, volume mode, access modes, capacity,
//! selector, pre-binding), the best of several candidates (the smallest that fits, as
//! upstream's `FindMatchingVolume`), and whether a volume's node affinity admits a node.

use crate::agent::pods::volumes::quantity::Quantity;
use crate::api::meta;
use crate::api::selector::LabelSelector;
use serde_json::{Map, Value};

/// The names of the claims a pod uses: `persistentVolumeClaim.claimName`s and, for
/// generic ephemeral volumes, the claim `<pod>-<volume>` upstream creates for them.
pub fn pod_claims(pod: &Value) -> Vec<String> {
    let pod_name = meta::name(pod);
    let mut out = Vec::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = if let Some(c) = v["persistentVolumeClaim"]["claimName"].as_str() {
            c.to_string()
        } else if v["ephemeral"].is_object() {
            format!("{pod_name}-{}", v["name"].as_str().unwrap_or(""))
        } else {
            continue;
        };
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Whether a pod has stopped for good (its claims are no longer in use).
pub fn pod_terminated(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// One annotation's value.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

/// A claim's class: `spec.storageClassName`, the legacy beta annotation, or — when
/// neither is set — the default class (upstream assigns it at admission and, since
/// 1.28, retroactively). `""` means "no class": only class-less volumes bind.
pub fn claim_class(pvc: &Value, default_class: Option<&str>) -> String {
    if let Some(c) = annotation(pvc, "volume.beta.kubernetes.io/storage-class") {
        return c.to_string();
    }
    match pvc["spec"]["storageClassName"].as_str() {
        Some(c) => c.to_string(),
        None => default_class.unwrap_or("").to_string(),
    }
}

/// A volume's class (`""` when it has none).
pub fn volume_class(pv: &Value) -> &str {
    annotation(pv, "volume.beta.kubernetes.io/storage-class")
        .or_else(|| pv["spec"]["storageClassName"].as_str())
        .unwrap_or("")
}

/// The default StorageClass among `classes` (the newest when several are marked, as
/// upstream picks).
pub fn default_class<'a>(classes: impl Iterator<Item = &'a Value>) -> Option<&'a Value> {
    let is_default = |c: &Value| {
        [
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ]
        .iter()
        .any(|k| annotation(c, k) == Some("true"))
    };
    classes.filter(|c| is_default(c)).max_by(|a, b| {
        a["metadata"]["creationTimestamp"]
            .as_str()
            .cmp(&b["metadata"]["creationTimestamp"].as_str())
    })
}

/// Whether a class binds only once a pod using the claim is scheduled.
pub fn waits_for_first_consumer(class: &Value) -> bool {
    class["volumeBindingMode"].as_str() == Some("WaitForFirstConsumer")
}

/// Bytes of a `storage` quantity at `v[field]["storage"]`; 0 when absent or invalid.
fn storage_bytes(v: &Value) -> i64 {
    v["storage"]
        .as_str()
        .and_then(|q| Quantity::parse(q).ok())
        .map(|q| q.value())
        .unwrap_or(0)
}

/// What a claim asks for, in bytes.
pub fn requested_bytes(pvc: &Value) -> i64 {
    storage_bytes(&pvc["spec"]["resources"]["requests"])
}

/// What a volume offers, in bytes.
pub fn capacity_bytes(pv: &Value) -> i64 {
    storage_bytes(&pv["spec"]["capacity"])
}

fn volume_mode(obj: &Value) -> &str {
    obj["spec"]["volumeMode"].as_str().unwrap_or("Filesystem")
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether `pv` is bound (or pre-bound) to a claim other than `pvc`.
pub fn claimed_by_other(pv: &Value, pvc: &Value) -> bool {
    let r = &pv["spec"]["claimRef"];
    if !r.is_object() {
        return false;
    }
    let same = r["namespace"].as_str() == Some(meta::namespace(pvc))
        && r["name"].as_str() == Some(meta::name(pvc));
    let uid = r["uid"].as_str().unwrap_or("");
    !same || (!uid.is_empty() && uid != meta::uid(pvc))
}

/// Whether `pv` satisfies `pvc` (of effective class `class`), ignoring node affinity.
pub fn volume_matches(pv: &Value, pvc: &Value, class: &str) -> bool {
    if meta::is_deleting(pv) || claimed_by_other(pv, pvc) {
        return false;
    }
    let phase = pv["status"]["phase"].as_str().unwrap_or("Available");
    let prebound = pv["spec"]["claimRef"].is_object();
    if !prebound && phase != "Available" && phase != "Pending" {
        return false;
    }
    if let Some(want) = pvc["spec"]["volumeName"].as_str().filter(|n| !n.is_empty()) {
        if want != meta::name(pv) {
            return false;
        }
    }
    if volume_class(pv) != class || volume_mode(pv) != volume_mode(pvc) {
        return false;
    }
    let offered = strings(&pv["spec"]["accessModes"]);
    if !strings(&pvc["spec"]["accessModes"])
        .iter()
        .all(|m| offered.contains(m))
    {
        return false;
    }
    if capacity_bytes(pv) < requested_bytes(pvc) {
        return false;
    }
    let sel = &pvc["spec"]["selector"];
    if sel.is_object() {
        match LabelSelector::from_json(sel) {
            Ok(s) => {
                if !s.matches(meta::labels(pv)) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// The best volume for a claim among `pvs`: one pre-bound to it if any, else the
/// smallest that matches; `node` (name, labels) restricts to volumes reachable there.
pub fn best_volume<'a>(
    pvs: impl Iterator<Item = &'a Value>,
    pvc: &Value,
    class: &str,
    node: Option<(&str, &Map<String, Value>)>,
) -> Option<&'a Value> {
    let mut best: Option<&Value> = None;
    for pv in pvs {
        if !volume_matches(pv, pvc, class) {
            continue;
        }
        if let Some((name, labels)) = node {
            if !affinity_admits(pv, name, labels) {
                continue;
            }
        }
        if pv["spec"]["claimRef"].is_object() {
            return Some(pv);
        }
        if best.is_none_or(|b| capacity_bytes(pv) < capacity_bytes(b)) {
            best = Some(pv);
        }
    }
    best
}

fn requirement_holds(req: &Value, value: Option<&str>) -> bool {
    let values = strings(&req["values"]);
    let int = |x: &str| x.parse::<i64>().ok();
    match req["operator"].as_str().unwrap_or("") {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => !value.is_some_and(|v| values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => match (value.and_then(int), values.first().and_then(|x| int(x))) {
            (Some(have), Some(limit)) if op == "Gt" => have > limit,
            (Some(have), Some(limit)) => have < limit,
            _ => false,
        },
        _ => false,
    }
}

/// Whether a volume's `spec.nodeAffinity.required` admits the node (volumes without
/// one are reachable everywhere). Terms are ORed, requirements within a term ANDed.
pub fn affinity_admits(pv: &Value, node: &str, labels: &Map<String, Value>) -> bool {
    let Some(terms) = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"].as_array() else {
        return true;
    };
    terms.iter().any(|t| {
        let exprs = t["matchExpressions"].as_array();
        let fields = t["matchFields"].as_array();
        if exprs.is_none_or(|e| e.is_empty()) && fields.is_none_or(|f| f.is_empty()) {
            return false;
        }
        exprs.into_iter().flatten().all(|r| {
            let key = r["key"].as_str().unwrap_or("");
            requirement_holds(r, labels.get(key).and_then(Value::as_str))
        }) && fields
            .into_iter()
            .flatten()
            .all(|r| r["key"].as_str() == Some("metadata.name") && requirement_holds(r, Some(node)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pvc(modes: &[&str], size: &str, class: Option<&str>) -> Value {
        let mut c = json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}}});
        if let Some(class) = class {
            c["spec"]["storageClassName"] = json!(class);
        }
        c
    }

    fn pv(name: &str, modes: &[&str], size: &str, class: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"tier": "fast"}},
            "spec": {"accessModes": modes, "capacity": {"storage": size},
                     "storageClassName": class},
            "status": {"phase": "Available"}})
    }

    #[test]
    fn smallest_matching_volume_wins() {
        let c = pvc(&["ReadWriteOnce"], "1Gi", Some("slow"));
        let pvs = [
            pv("big", &["ReadWriteOnce"], "10Gi", "slow"),
            pv("small", &["ReadWriteOnce", "ReadOnlyMany"], "2Gi", "slow"),
            pv("tiny", &["ReadWriteOnce"], "500Mi", "slow"),
            pv("other-class", &["ReadWriteOnce"], "1Gi", "fast"),
            pv("rox", &["ReadOnlyMany"], "1Gi", "slow"),
        ];
        let best = best_volume(pvs.iter(), &c, "slow", None).expect("a match");
        assert_eq!(meta::name(best), "small");
    }

    #[test]
    fn bound_and_selected_volumes() {
        let c = pvc(&["ReadWriteOnce"], "1Gi", Some(""));
        let mut taken = pv("taken", &["ReadWriteOnce"], "1Gi", "");
        taken["spec"]["claimRef"] = json!({"namespace": "ns", "name": "other", "uid": "u9"});
        assert!(!volume_matches(&taken, &c, ""));
        let mut mine = pv("mine", &["ReadWriteOnce"], "5Gi", "");
        mine["spec"]["claimRef"] = json!({"namespace": "ns", "name": "data"});
        mine["status"]["phase"] = json!("Released");
        let free = pv("free", &["ReadWriteOnce"], "1Gi", "");
        let pvs = [free.clone(), mine];
        // Pre-bound to this claim wins over a smaller free one.
        assert_eq!(
            meta::name(best_volume(pvs.iter(), &c, "", None).unwrap()),
            "mine"
        );
        let mut sel = c.clone();
        sel["spec"]["selector"] = json!({"matchLabels": {"tier": "slow"}});
        assert!(!volume_matches(&free, &sel, ""));
        let mut block = c.clone();
        block["spec"]["volumeMode"] = json!("Block");
        assert!(!volume_matches(&free, &block, ""));
    }

    #[test]
    fn default_class_applies_only_when_unset() {
        assert_eq!(
            claim_class(&pvc(&[], "1Gi", None), Some("local-path")),
            "local-path"
        );
        assert_eq!(
            claim_class(&pvc(&[], "1Gi", Some("")), Some("local-path")),
            ""
        );
        assert_eq!(claim_class(&pvc(&[], "1Gi", None), None), "");
    }

    #[test]
    fn node_affinity() {
        let mut v = pv("a", &[], "1Gi", "");
        let labels: Map<String, Value> =
            serde_json::from_value(json!({"kubernetes.io/hostname": "n1"})).unwrap();
        assert!(affinity_admits(&v, "n1", &labels));
        v["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}});
        assert!(affinity_admits(&v, "n1", &labels));
        assert!(!affinity_admits(&v, "n2", &Map::new()));
        v["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}});
        assert!(affinity_admits(&v, "n2", &Map::new()));
        assert!(!affinity_admits(&v, "n1", &labels));
    }

    #[test]
    fn claims_of_a_pod() {
        let pod = json!({"metadata": {"name": "web-0"}, "spec": {"volumes": [
            {"name": "a", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "b", "emptyDir": {}}]}});
        assert_eq!(pod_claims(&pod), vec!["data", "web-0-scratch"]);
    }
}
