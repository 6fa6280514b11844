//! What a Pod update may change (`ValidatePodUpdate`): container images, a lower
//! activeDeadlineSeconds, added tolerations, removed scheduling gates, and little else.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::super::status::FieldError;
use super::field::{arr, diff, get, int, same, str_of, Path};
use super::names::inclusive_range_error;

const MAX_INT32: i64 = i32::MAX as i64;

/// Upstream's list of what a pod update may change, as it appears in the error text.
const UPDATABLE_POD_SPEC_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn container_updates(
    new: &[Value],
    old: &[Value],
    path: &Path,
) -> Result<Vec<FieldError>, Vec<FieldError>> {
    let mut errs = Vec::new();
    if new.len() != old.len() {
        errs.push(FieldError::forbidden(
            path,
            "pod updates may not add or remove containers",
        ));
        return Err(errs);
    }
    for (i, c) in new.iter().enumerate() {
        let image = str_of(c, "image");
        if image.is_empty() {
            errs.push(FieldError::required(path.index(i).child("image")));
        }
        if image.trim() != image {
            errs.push(FieldError::invalid(
                path.index(i).child("image"),
                &Value::from(image),
                "must not have leading or trailing whitespace",
            ));
        }
    }
    Ok(errs)
}

/// Existing tolerations may change only their `tolerationSeconds`.
fn only_added_tolerations(new: &[Value], old: &[Value], path: &Path) -> Vec<FieldError> {
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    for o in old {
        if !new.iter().any(|n| same(Some(&strip(n)), Some(&strip(o)))) {
            return vec![FieldError::forbidden(
                path,
                "existing toleration can not be modified except its tolerationSeconds",
            )];
        }
    }
    Vec::new()
}

fn only_deleted_gates(new: &[Value], old: &[Value], path: &Path) -> Vec<FieldError> {
    let old_names: HashSet<&str> = old.iter().map(|g| str_of(g, "name")).collect();
    new.iter()
        .enumerate()
        .filter(|(_, g)| !old_names.contains(str_of(g, "name")))
        .map(|(i, g)| {
            FieldError::forbidden(
                path.index(i).child("name"),
                &format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    str_of(g, "name")
                ),
            )
        })
        .collect()
}

fn copy_member(dst: &mut Map<String, Value>, src: &Value, key: &str) {
    match get(src, key) {
        Some(v) => {
            dst.insert(key.to_string(), v.clone());
        }
        None => {
            dst.remove(key);
        }
    }
}

pub(super) fn spec_update(ns: &Value, os: &Value) -> Vec<FieldError> {
    let spec = Path::new("spec");
    let mut errs = Vec::new();
    for list in ["containers", "initContainers"] {
        match container_updates(arr(ns, list), arr(os, list), &spec.child(list)) {
            Ok(e) => errs.extend(e),
            Err(e) => {
                errs.extend(e);
                return errs;
            }
        }
    }
    match (
        int(ns, "activeDeadlineSeconds"),
        int(os, "activeDeadlineSeconds"),
    ) {
        (Some(n), old) => {
            if !(0..=MAX_INT32).contains(&n) {
                errs.push(FieldError::invalid(
                    spec.child("activeDeadlineSeconds"),
                    &Value::from(n),
                    &inclusive_range_error(0, MAX_INT32),
                ));
                return errs;
            }
            if old.is_some_and(|o| o < n) {
                errs.push(FieldError::invalid(
                    spec.child("activeDeadlineSeconds"),
                    &Value::from(n),
                    "must be less than or equal to previous value",
                ));
                return errs;
            }
        }
        (None, Some(_)) => errs.push(FieldError::invalid(
            spec.child("activeDeadlineSeconds"),
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        (None, None) => {}
    }
    errs.extend(only_added_tolerations(
        arr(ns, "tolerations"),
        arr(os, "tolerations"),
        &spec.child("tolerations"),
    ));
    errs.extend(only_deleted_gates(
        arr(ns, "schedulingGates"),
        arr(os, "schedulingGates"),
        &spec.child("schedulingGates"),
    ));
    if same(Some(ns), Some(os)) {
        return errs;
    }

    let mut munged = ns.as_object().cloned().unwrap_or_default();
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = munged.get_mut(list) {
            for (c, o) in cs.iter_mut().zip(arr(os, list)) {
                if let Some(c) = c.as_object_mut() {
                    copy_member(c, o, "image");
                }
            }
        }
    }
    for key in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
        copy_member(&mut munged, os, key);
    }
    if int(os, "terminationGracePeriodSeconds").is_some_and(|g| g < 0)
        && int(ns, "terminationGracePeriodSeconds") == Some(1)
    {
        copy_member(&mut munged, os, "terminationGracePeriodSeconds");
    }
    // Gated pods may still get scheduling constraints added before they are scheduled.
    if !arr(os, "schedulingGates").is_empty() {
        copy_member(&mut munged, os, "nodeSelector");
        let old_node_affinity = get(os, "affinity")
            .and_then(|a| get(a, "nodeAffinity"))
            .cloned();
        if let Some(Value::Object(aff)) = munged.get_mut("affinity") {
            match old_node_affinity {
                Some(na) => {
                    aff.insert("nodeAffinity".into(), na);
                }
                None => {
                    aff.remove("nodeAffinity");
                }
            }
        }
    }
    let munged = Value::Object(munged);
    if !same(Some(&munged), Some(os)) {
        errs.push(FieldError::forbidden(
            &spec,
            &format!(
                "pod updates may not change fields other than {UPDATABLE_POD_SPEC_FIELDS}\n{}",
                diff(os, &munged)
            ),
        ));
    }
    errs
}
