//! Versions served by conversion: a resource stored in one version and also served in an
//! older one, converted on the way in and out. Today that is autoscaling/v1
//! HorizontalPodAutoscaler (kubectl up to 1.32 creates HPAs there with `kubectl
//! autoscale`), stored as autoscaling/v2.
//!
//! Like upstream, what v1 cannot say is kept in annotations, so an object read and
//! written back through v1 keeps its v2 metrics, behavior and conditions:
//! `autoscaling.alpha.kubernetes.io/metrics` (spec metrics other than the CPU
//! utilization target), `autoscaling.alpha.kubernetes.io/behavior`,
//! `autoscaling.alpha.kubernetes.io/current-metrics` and
//! `autoscaling.alpha.kubernetes.io/conditions`.

use serde_json::{json, Map, Value};

/// How one served version maps onto the stored one.
#[derive(Debug)]
pub struct Conversion {
    /// The version objects are stored in (the resource's entry in that version is the
    /// one the registry, controllers and informers use).
    pub stored_version: &'static str,
    /// Served version → stored version (request bodies).
    pub to_stored: fn(Value) -> Value,
    /// Stored version → served version (answers and watch events).
    pub from_stored: fn(Value) -> Value,
}

/// autoscaling/v1 HorizontalPodAutoscaler, stored as autoscaling/v2.
pub static HPA_V1: Conversion = Conversion {
    stored_version: "v2",
    to_stored: hpa_v1_to_v2,
    from_stored: hpa_v2_to_v1,
};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";

/// Spec and status fields both versions have, copied as they are.
const SPEC_FIELDS: &[&str] = &["scaleTargetRef", "minReplicas", "maxReplicas"];
const STATUS_FIELDS: &[&str] = &[
    "observedGeneration",
    "lastScaleTime",
    "currentReplicas",
    "desiredReplicas",
];

/// The `keys` of `from` that are present.
fn copy_fields(from: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| from.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

/// Whether a v2 metric is the one v1 expresses: CPU, target type Utilization.
fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

fn annotations(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let meta = obj
        .as_object_mut()?
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let ann = meta
        .as_object_mut()?
        .entry("annotations")
        .or_insert_with(|| json!({}));
    ann.as_object_mut()
}

/// Takes an annotation holding JSON, removing it (and an emptied annotations map).
fn take_json_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let meta = obj.get_mut("metadata")?.as_object_mut()?;
    let ann = meta.get_mut("annotations")?.as_object_mut()?;
    let raw = ann.remove(key)?;
    if ann.is_empty() {
        meta.remove("annotations");
    }
    serde_json::from_str(raw.as_str()?).ok()
}

fn put_json_annotation(obj: &mut Value, key: &str, v: &Value) {
    if let (Some(ann), Ok(s)) = (annotations(obj), serde_json::to_string(v)) {
        ann.insert(key.to_string(), Value::String(s));
    }
}

/// autoscaling/v2 → autoscaling/v1.
pub fn hpa_v2_to_v1(mut v: Value) -> Value {
    v["apiVersion"] = json!("autoscaling/v1");
    let spec = v.get_mut("spec").map(Value::take).unwrap_or(Value::Null);
    let status = v.get_mut("status").map(Value::take).unwrap_or(Value::Null);
    let mut out_spec = copy_fields(&spec, SPEC_FIELDS);
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
    let (cpu, other): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_cpu_utilization);
    if let Some(m) = cpu.first() {
        if let Some(u) = m["resource"]["target"]["averageUtilization"].as_i64() {
            out_spec.insert("targetCPUUtilizationPercentage".into(), json!(u));
        }
    }
    if !other.is_empty() {
        put_json_annotation(&mut v, METRICS, &Value::Array(other));
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        put_json_annotation(&mut v, BEHAVIOR, b);
    }
    v["spec"] = Value::Object(out_spec);

    if status.is_object() {
        let mut out = copy_fields(&status, STATUS_FIELDS);
        let current = status["currentMetrics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let cpu_now = current.iter().find(|m| {
            m["type"] == "Resource"
                && m["resource"]["name"] == "cpu"
                && m["resource"]["current"]["averageUtilization"].is_i64()
        });
        if let Some(m) = cpu_now {
            out.insert(
                "currentCPUUtilizationPercentage".into(),
                m["resource"]["current"]["averageUtilization"].clone(),
            );
        }
        if !current.is_empty() {
            put_json_annotation(&mut v, CURRENT_METRICS, &Value::Array(current));
        }
        if let Some(c) = status.get("conditions").filter(|c| c.is_array()) {
            put_json_annotation(&mut v, CONDITIONS, c);
        }
        // currentReplicas is required in v1.
        out.entry("currentReplicas").or_insert(json!(0));
        v["status"] = Value::Object(out);
    }
    v
}

/// autoscaling/v1 → autoscaling/v2.
pub fn hpa_v1_to_v2(mut v: Value) -> Value {
    v["apiVersion"] = json!("autoscaling/v2");
    let spec = v.get_mut("spec").map(Value::take).unwrap_or(Value::Null);
    let status = v.get_mut("status").map(Value::take).unwrap_or(Value::Null);
    let mut out_spec = copy_fields(&spec, SPEC_FIELDS);
    let mut metrics = Vec::new();
    if let Some(u) = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|u| !u.is_null())
    {
        metrics.push(json!({
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": u}},
        }));
    }
    if let Some(Value::Array(other)) = take_json_annotation(&mut v, METRICS) {
        metrics.extend(other.into_iter().filter(|m| !is_cpu_utilization(m)));
    }
    if !metrics.is_empty() {
        out_spec.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(b) = take_json_annotation(&mut v, BEHAVIOR) {
        out_spec.insert("behavior".into(), b);
    }
    v["spec"] = Value::Object(out_spec);

    let current = take_json_annotation(&mut v, CURRENT_METRICS);
    let conditions = take_json_annotation(&mut v, CONDITIONS);
    if status.is_object() {
        let mut out = copy_fields(&status, STATUS_FIELDS);
        match current {
            Some(c @ Value::Array(_)) => {
                out.insert("currentMetrics".into(), c);
            }
            _ => {
                if let Some(u) = status.get("currentCPUUtilizationPercentage") {
                    out.insert(
                        "currentMetrics".into(),
                        json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": u}}}]),
                    );
                }
            }
        }
        if let Some(c @ Value::Array(_)) = conditions {
            out.insert("conditions".into(), c);
        }
        v["status"] = Value::Object(out);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 80, "averageValue": "80m"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"}]
            }
        })
    }

    #[test]
    fn v2_reads_as_v1_with_the_cpu_target_and_the_rest_in_annotations() {
        let v1 = hpa_v2_to_v1(v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["spec"]["maxReplicas"], 5);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 80);
        assert_eq!(v1["status"]["desiredReplicas"], 3);
        let ann = &v1["metadata"]["annotations"];
        assert!(ann[METRICS].as_str().unwrap().contains("memory"));
        assert!(ann[CONDITIONS].as_str().unwrap().contains("AbleToScale"));
        assert_eq!(v1["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn a_round_trip_through_v1_keeps_the_v2_object() {
        let back = hpa_v1_to_v2(hpa_v2_to_v1(v2()));
        assert_eq!(back, v2());
    }

    #[test]
    fn kubectl_autoscale_body_becomes_a_cpu_utilization_metric() {
        let v1 = json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 0, "desiredReplicas": 0}
        });
        let v2 = hpa_v1_to_v2(v1);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert!(v2["metadata"].get("annotations").is_none());
    }
}
