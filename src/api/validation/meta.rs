//! `metadata` rules common to every kind (k8s.io/apimachinery/pkg/api/validation
//! objectmeta.go): names, namespace scope, labels, annotations, owner references,
//! finalizers, and the fields an update may not change. Also the `metav1.LabelSelector`
//! rules, which workloads share.

use serde_json::{Map, Value};

use super::super::status::FieldError;
use super::field::{arr, get, int, non_negative, obj, same, str_of, Path};
use super::names::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_label_value,
};

/// Upstream's total size limit for annotations (256 KiB).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// `maskTrailingDash`: a generateName may end in `-` because a suffix follows.
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        format!("{}a", &name[..name.len() - 2])
    } else {
        name.to_string()
    }
}

fn name_errors(name: &str, prefix: bool, label: bool) -> Vec<String> {
    let name = if prefix {
        mask_trailing_dash(name)
    } else {
        name.to_string()
    };
    if label {
        is_dns1123_label(&name)
    } else {
        is_dns1123_subdomain(&name)
    }
}

/// For kinds whose names need only be path segments (RBAC): replaces the DNS-1123
/// errors [`object_meta`] reported for `metadata.name` and `metadata.generateName` with
/// upstream's `ValidatePathSegmentName` checks.
pub fn use_path_segment_names(obj: &Value, errs: &mut Vec<FieldError>) {
    // Only the DNS-1123 syntax errors go; immutability and "required" stay.
    errs.retain(|e| {
        !(matches!(e.field.as_str(), "metadata.name" | "metadata.generateName")
            && e.message.contains("RFC 1123"))
    });
    let empty = Value::Object(Map::new());
    let meta = get(obj, "metadata").unwrap_or(&empty);
    for (field, prefix) in [("name", false), ("generateName", true)] {
        let value = str_of(meta, field);
        let mut msgs = Vec::new();
        if !prefix && (value == "." || value == "..") {
            msgs.push(format!("may not be '{value}'"));
        }
        for bad in ["/", "%"] {
            if value.contains(bad) {
                msgs.push(format!("may not contain '{bad}'"));
            }
        }
        for msg in msgs {
            errs.push(FieldError::invalid(
                format!("metadata.{field}"),
                &Value::from(value),
                &msg,
            ));
        }
    }
}

/// Label keys and values (`ValidateLabels`): every problem is reported at `path` itself,
/// with the offending key or value as the bad value, as upstream does.
pub fn labels(map: Option<&Map<String, Value>>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = map else { return errs };
    for (k, v) in map {
        for msg in is_qualified_name(k) {
            errs.push(FieldError::invalid(path, &Value::String(k.clone()), &msg));
        }
        match v {
            Value::String(s) => {
                for msg in is_valid_label_value(s) {
                    errs.push(FieldError::invalid(path, v, &msg));
                }
            }
            other => errs.push(FieldError::invalid(path, other, "must be a string")),
        }
    }
    errs
}

/// Annotation keys (qualified names, case-insensitive) and the 256 KiB total size.
pub fn annotations(map: Option<&Map<String, Value>>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = map else { return errs };
    let mut total = 0usize;
    for (k, v) in map {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, &Value::String(k.clone()), &msg));
        }
        total += k.len() + v.as_str().map_or_else(|| v.to_string().len(), str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

fn owner_references(refs: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut first_controller = String::new();
    for r in refs {
        let api_version = str_of(r, "apiVersion");
        let kind = str_of(r, "kind");
        // schema.ParseGroupVersion: "v1", "group/v1"; anything else has no version.
        let version = match api_version.split('/').collect::<Vec<_>>().as_slice() {
            [v] => *v,
            [_, v] => *v,
            _ => "",
        };
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        if version.is_empty() {
            errs.push(FieldError::invalid(
                path.child("apiVersion"),
                &Value::from(api_version),
                "version must not be empty",
            ));
        }
        if kind.is_empty() {
            errs.push(FieldError::invalid(
                path.child("kind"),
                &Value::from(kind),
                "must not be empty",
            ));
        }
        let name = str_of(r, "name");
        if name.is_empty() {
            errs.push(FieldError::invalid(
                path.child("name"),
                &Value::from(name),
                "must not be empty",
            ));
        }
        let uid = str_of(r, "uid");
        if uid.is_empty() {
            errs.push(FieldError::invalid(
                path.child("uid"),
                &Value::from(uid),
                "must not be empty",
            ));
        }
        if group.is_empty() && version == "v1" && kind == "Event" {
            errs.push(FieldError::invalid(
                path,
                r,
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if get(r, "controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{kind}/{name}");
            if first_controller.is_empty() {
                first_controller = current;
            } else {
                errs.push(FieldError::invalid(
                    path,
                    &Value::Array(refs.to_vec()),
                    &format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first_controller} and {current}"
                    ),
                ));
            }
        }
    }
    errs
}

fn finalizers(list: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    for f in &names {
        for msg in is_qualified_name(f) {
            errs.push(FieldError::invalid(path, &Value::from(*f), &msg));
        }
    }
    if names.contains(&"orphan") && names.contains(&"foregroundDeletion") {
        errs.push(FieldError::invalid(
            path,
            &Value::Array(list.to_vec()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// Checks `metadata`: name (DNS-1123 subdomain unless `name_is_label`), namespace presence
/// matching `namespaced`, labels and annotations syntax and size, owner references and
/// finalizers, and on update the immutable fields (name, namespace, uid,
/// creationTimestamp, deletionTimestamp, deletionGracePeriodSeconds).
///
/// On update a missing `uid` or `creationTimestamp` counts as unchanged: upstream's update
/// path copies them from the stored object before validating.
pub fn object_meta(
    new: &Value,
    old: Option<&Value>,
    namespaced: bool,
    name_is_label: bool,
) -> Vec<FieldError> {
    let empty = Value::Object(Map::new());
    let meta = get(new, "metadata").unwrap_or(&empty);
    let path = Path::new("metadata");
    let mut errs = Vec::new();

    let generate_name = str_of(meta, "generateName");
    if !generate_name.is_empty() {
        for msg in name_errors(generate_name, true, name_is_label) {
            errs.push(FieldError::invalid(
                path.child("generateName"),
                &Value::from(generate_name),
                &msg,
            ));
        }
    }
    let name = str_of(meta, "name");
    if name.is_empty() {
        errs.push(FieldError::required_msg(
            path.child("name"),
            "name or generateName is required",
        ));
    } else {
        for msg in name_errors(name, false, name_is_label) {
            errs.push(FieldError::invalid(
                path.child("name"),
                &Value::from(name),
                &msg,
            ));
        }
    }

    let namespace = str_of(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(path.child("namespace")));
        } else {
            for msg in is_dns1123_label(namespace) {
                errs.push(FieldError::invalid(
                    path.child("namespace"),
                    &Value::from(namespace),
                    &msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            path.child("namespace"),
            "not allowed on this type",
        ));
    }

    errs.extend(non_negative(
        get(meta, "generation"),
        &path.child("generation"),
    ));
    errs.extend(labels(obj(meta, "labels"), path.child("labels").as_str()));
    errs.extend(annotations(
        obj(meta, "annotations"),
        path.child("annotations").as_str(),
    ));
    errs.extend(owner_references(
        arr(meta, "ownerReferences"),
        &path.child("ownerReferences"),
    ));
    errs.extend(finalizers(
        arr(meta, "finalizers"),
        &path.child("finalizers"),
    ));

    if let Some(old) = old {
        let old_meta = get(old, "metadata").unwrap_or(&empty);
        if get(old_meta, "deletionTimestamp").is_some_and(|v| !v.is_null()) {
            let old_f: Vec<&str> = arr(old_meta, "finalizers")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let mut extra: Vec<&str> = arr(meta, "finalizers")
                .iter()
                .filter_map(Value::as_str)
                .filter(|f| !old_f.contains(f))
                .collect();
            extra.sort_unstable();
            extra.dedup();
            if !extra.is_empty() {
                let list: Vec<String> = extra.iter().map(|f| format!("{f:?}")).collect();
                errs.push(FieldError::forbidden(
                    path.child("finalizers"),
                    &format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        list.join(", ")
                    ),
                ));
            }
        }
        for (field, missing_means_same) in [
            ("name", false),
            ("namespace", false),
            ("uid", true),
            ("creationTimestamp", true),
            ("deletionTimestamp", true),
            ("deletionGracePeriodSeconds", true),
        ] {
            let (n, o) = (get(meta, field), get(old_meta, field));
            if missing_means_same && matches!(n, None | Some(Value::Null)) {
                continue;
            }
            let as_string = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
            let changed = if matches!(field, "name" | "namespace") {
                as_string(n) != as_string(o)
            } else {
                !same(n, o)
            };
            if changed {
                let bad = n.cloned().unwrap_or_else(|| Value::from(""));
                errs.push(FieldError::immutable(path.child(field), &bad));
            }
        }
    }
    errs
}

/// `metav1.LabelSelector` rules (`ValidateLabelSelector`) under `path`.
pub fn label_selector(sel: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(sel) = sel.filter(|v| !v.is_null()) else {
        return errs;
    };
    errs.extend(labels(
        obj(sel, "matchLabels"),
        path.child("matchLabels").as_str(),
    ));
    for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = arr(e, "values");
        match str_of(e, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required_msg(
                        p.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                p.child("operator"),
                &Value::from(other),
                "not a valid selector operator",
            )),
        }
        let key = str_of(e, "key");
        for msg in is_qualified_name(key) {
            errs.push(FieldError::invalid(p.child("key"), &Value::from(key), &msg));
        }
        for (j, v) in values.iter().enumerate() {
            for msg in is_valid_label_value(v.as_str().unwrap_or("")) {
                errs.push(FieldError::invalid(p.child("values").index(j), v, &msg));
            }
        }
    }
    errs
}

/// An integer at `path` that must not be negative (`ValidateNonnegativeField`).
pub fn non_negative_at(v: &Value, key: &str, path: &Path) -> Option<FieldError> {
    int(v, key)
        .filter(|n| *n < 0)
        .map(|n| FieldError::invalid(path, &Value::from(n), "must be greater than or equal to 0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::display).collect()
    }

    #[test]
    fn name_is_required_and_checked() {
        let e = object_meta(
            &json!({"metadata": {"namespace": "default"}}),
            None,
            true,
            false,
        );
        assert_eq!(
            lines(&e),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        let e = object_meta(
            &json!({"metadata": {"name": "Bad_Name", "namespace": "default"}}),
            None,
            true,
            false,
        );
        assert_eq!(
            lines(&e),
            vec!["metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
        );
        let e = object_meta(
            &json!({"metadata": {"name": &"a".repeat(254), "namespace": "d"}}),
            None,
            true,
            false,
        );
        assert!(e[0]
            .message
            .ends_with("must be no more than 253 characters"));
        let e = object_meta(&json!({"metadata": {"name": "a.b"}}), None, false, true);
        assert_eq!(
            lines(&e),
            vec!["metadata.name: Invalid value: \"a.b\": must not contain dots"]
        );
    }

    #[test]
    fn generate_name_may_end_in_dash() {
        let e = object_meta(
            &json!({"metadata": {"generateName": "web-", "name": "web-x7k2p", "namespace": "d"}}),
            None,
            true,
            false,
        );
        assert!(e.is_empty(), "{e:?}");
        let e = object_meta(
            &json!({"metadata": {"generateName": "Web-", "name": "web-x", "namespace": "d"}}),
            None,
            true,
            false,
        );
        assert_eq!(e[0].field, "metadata.generateName");
    }

    #[test]
    fn namespace_scope() {
        let e = object_meta(
            &json!({"metadata": {"name": "n1", "namespace": "x"}}),
            None,
            false,
            false,
        );
        assert_eq!(
            lines(&e),
            vec!["metadata.namespace: Forbidden: not allowed on this type"]
        );
        let e = object_meta(&json!({"metadata": {"name": "p"}}), None, true, false);
        assert_eq!(lines(&e), vec!["metadata.namespace: Required value"]);
    }

    #[test]
    fn labels_and_annotations() {
        let long = "v".repeat(64);
        let e = object_meta(
            &json!({"metadata": {"name": "a", "labels": {"app": long, "bad key": "x"}, "annotations": {"Example.com/Key": "ok"}}}),
            None,
            false,
            false,
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].field, "metadata.labels");
        assert!(e[0].message.ends_with("must be no more than 63 bytes"));
        assert!(e[1]
            .message
            .starts_with("Invalid value: \"bad key\": name part must consist"));
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let e = object_meta(
            &json!({"metadata": {"name": "a", "annotations": {"k": big}}}),
            None,
            false,
            false,
        );
        assert_eq!(
            lines(&e),
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
    }

    #[test]
    fn owner_references_and_finalizers() {
        let e = object_meta(
            &json!({"metadata": {"name": "a", "ownerReferences": [{"apiVersion": "", "kind": "Deployment", "name": "d", "uid": ""}],
                "finalizers": ["example.com/f", "bad finalizer"]}}),
            None,
            false,
            false,
        );
        let l = lines(&e);
        assert_eq!(
            l[0],
            "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty"
        );
        assert_eq!(
            l[1],
            "metadata.ownerReferences.uid: Invalid value: \"\": must not be empty"
        );
        assert!(l[2].starts_with("metadata.finalizers: Invalid value: \"bad finalizer\""));
    }

    #[test]
    fn update_rejects_identity_changes() {
        let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "u1", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        let new = json!({"metadata": {"name": "b", "namespace": "d", "uid": "u2"}});
        let l = lines(&object_meta(&new, Some(&old), true, false));
        assert_eq!(
            l,
            vec![
                "metadata.name: Invalid value: \"b\": field is immutable",
                "metadata.uid: Invalid value: \"u2\": field is immutable",
            ]
        );
        let same_obj = json!({"metadata": {"name": "a", "namespace": "d", "labels": {"x": "y"}}});
        assert!(object_meta(&same_obj, Some(&old), true, false).is_empty());
    }

    #[test]
    fn no_new_finalizers_while_deleting() {
        let old = json!({"metadata": {"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["a.io/x"]}});
        let new = json!({"metadata": {"name": "a", "finalizers": ["a.io/x", "b.io/y"]}});
        let l = lines(&object_meta(&new, Some(&old), false, false));
        assert_eq!(l, vec!["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"b.io/y\"}"]);
    }

    #[test]
    fn selector_rules() {
        let sel = json!({"matchLabels": {"app": "x"}, "matchExpressions": [
            {"key": "a", "operator": "In"},
            {"key": "b", "operator": "Exists", "values": ["x"]},
            {"key": "c", "operator": "Foo"}
        ]});
        let l = lines(&label_selector(
            Some(&sel),
            &Path::new("spec").child("selector"),
        ));
        assert_eq!(l, vec![
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            "spec.selector.matchExpressions[2].operator: Invalid value: \"Foo\": not a valid selector operator",
        ]);
    }
}
