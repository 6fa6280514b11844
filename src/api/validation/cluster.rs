//! Cluster-scoped infrastructure kinds: Namespaces (finalizer names) and Nodes (taints,
//! pod CIDRs, and the fields only the controller may fill in once).

use std::collections::HashSet;

use serde_json::Value;

use super::super::status::FieldError;
use super::field::{arr, dedup, get, render, str_of, Path};
use super::names::{is_qualified_name, is_valid_cidr, is_valid_label_value};

/// Finalizer names the API server itself understands without a domain prefix.
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// Validates a Namespace: `spec.finalizers` are qualified names, and unprefixed ones must
/// be standard finalizers. (The name is a DNS-1123 label; the caller asks `object_meta` for
/// that.)
pub fn namespace(new: &Value, _old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = Path::new("spec").child("finalizers");
    let spec = get(new, "spec").unwrap_or(&Value::Null);
    for f in arr(spec, "finalizers") {
        let f = f.as_str().unwrap_or("");
        for m in is_qualified_name(f) {
            errs.push(FieldError::invalid(&path, &Value::from(f), &m));
        }
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
            errs.push(FieldError::invalid(
                &path,
                &Value::from(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    dedup(errs)
}

fn taints(list: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    for (i, t) in list.iter().enumerate() {
        let p = path.index(i);
        let key = str_of(t, "key");
        for m in is_qualified_name(key) {
            errs.push(FieldError::invalid(p.child("key"), &Value::from(key), &m));
        }
        let value = str_of(t, "value");
        let msgs = is_valid_label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                p.child("value"),
                &Value::from(value),
                &msgs.join(";"),
            ));
        }
        let effect = str_of(t, "effect");
        match effect {
            "" => errs.push(FieldError::required(p.child("effect"))),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => errs.push(FieldError::not_supported(
                p.child("effect"),
                &Value::from(other),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            )),
        }
        if !seen.insert((effect, key)) {
            errs.push(FieldError {
                field: p.into(),
                reason: "FieldValueDuplicate",
                message: format!(
                    "Duplicate value: {}: taints must be unique by key and effect pair",
                    render(t)
                ),
            });
        }
    }
    errs
}

const POD_CIDR_CHANGE: &str = "node updates may not change podCIDR except from \"\" to valid";

/// Validates a Node: taints, pod CIDRs; on update pod CIDRs and providerID may only be set
/// once.
pub fn node(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let spec = get(new, "spec").unwrap_or(&Value::Null);
    // Upstream reports taints under `metadata.taints`.
    let mut errs = taints(arr(spec, "taints"), &Path::new("metadata").child("taints"));
    let cidr_path = Path::new("spec").child("podCIDRs");
    let cidrs: Vec<&str> = arr(spec, "podCIDRs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for (i, c) in cidrs.iter().enumerate() {
        for m in is_valid_cidr(c) {
            errs.push(FieldError::invalid(
                cidr_path.index(i),
                &Value::from(*c),
                &m,
            ));
        }
    }
    if cidrs.len() > 1 {
        let v6 = cidrs.iter().filter(|c| c.contains(':')).count();
        if v6 != 1 || cidrs.len() > 2 {
            errs.push(FieldError::invalid(
                &cidr_path,
                get(spec, "podCIDRs").unwrap_or(&Value::Null),
                "may specify no more than one CIDR for each IP family",
            ));
        }
        let mut seen = HashSet::new();
        for (i, c) in cidrs.iter().enumerate() {
            if !seen.insert(*c) {
                errs.push(FieldError::duplicate(cidr_path.index(i), &Value::from(*c)));
            }
        }
    }
    if let Some(old) = old {
        let old_spec = get(old, "spec").unwrap_or(&Value::Null);
        let old_cidrs: Vec<&str> = arr(old_spec, "podCIDRs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if !old_cidrs.is_empty() {
            if old_cidrs.len() != cidrs.len() {
                errs.push(FieldError::forbidden(&cidr_path, POD_CIDR_CHANGE));
            } else {
                for (o, n) in old_cidrs.iter().zip(&cidrs) {
                    if o != n {
                        errs.push(FieldError::forbidden(&cidr_path, POD_CIDR_CHANGE));
                    }
                }
            }
        }
        let old_provider = str_of(old_spec, "providerID");
        if !old_provider.is_empty() && old_provider != str_of(spec, "providerID") {
            errs.push(FieldError::forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
    dedup(errs)
}
