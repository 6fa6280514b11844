//! Create-only "review" resources that compute an answer about the caller and store
//! nothing: `kubectl auth can-i` (SelfSubjectAccessReview, SelfSubjectRulesReview),
//! `kubectl auth whoami` (SelfSubjectReview), and (Local)SubjectAccessReview for
//! components. Answers come from the real authorizer.

use super::auth::Identity;
use crate::api::resources::Resource;
use crate::api::status::ApiError;
use crate::server::rbac::{Attributes, Authorizer, Decision};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The strings of a JSON array (others are skipped; not an array: none).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `userInfo` of a review status (also TokenReview's `status.user`).
pub(super) fn user_info(who: &Identity) -> Value {
    let mut u = json!({"username": who.user, "groups": who.groups});
    if !who.uid.is_empty() {
        u["uid"] = json!(who.uid);
    }
    if !who.extra.is_empty() {
        u["extra"] = json!(who.extra);
    }
    u
}

/// The subject of a SubjectAccessReview spec.
fn spec_subject(spec: &Value) -> Identity {
    let extra: BTreeMap<String, Vec<String>> = spec["extra"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
        .unwrap_or_default();
    Identity {
        user: spec["user"].as_str().unwrap_or("").to_string(),
        groups: strings(&spec["groups"]),
        uid: spec["uid"].as_str().unwrap_or("").to_string(),
        extra,
    }
}

/// Judges the `resourceAttributes` or `nonResourceAttributes` of a review spec.
fn access(authz: &Authorizer, subject: &Identity, spec: &Value) -> Result<Value, ApiError> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let ra = &spec["resourceAttributes"];
    let nra = &spec["nonResourceAttributes"];
    let (verb, group, resource, sub, ns, name, path);
    let resource_request = ra.is_object();
    if resource_request {
        (verb, group, resource, sub, ns, name, path) = (
            s(&ra["verb"]),
            s(&ra["group"]),
            s(&ra["resource"]),
            s(&ra["subresource"]),
            s(&ra["namespace"]),
            s(&ra["name"]),
            String::new(),
        );
    } else if nra.is_object() {
        (verb, group, resource, sub, ns, name, path) = (
            s(&nra["verb"]),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            s(&nra["path"]),
        );
    } else {
        return Err(ApiError::bad_request(
            "spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    let a = Attributes {
        user: subject,
        verb: &verb,
        resource_request,
        namespace: &ns,
        group: &group,
        resource: &resource,
        subresource: &sub,
        name: &name,
        path: &path,
    };
    Ok(match authz.authorize(&a) {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) if reason.is_empty() => json!({"allowed": false}),
        Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
    })
}

/// Answers a create on a review resource: the request object with `status` filled in.
/// `namespace` is the namespace of the request path (LocalSubjectAccessReview).
pub fn answer(
    authz: &Authorizer,
    res: &Resource,
    who: &Identity,
    namespace: &str,
    mut obj: Value,
) -> Result<Value, ApiError> {
    let status = match res.kind {
        "SelfSubjectReview" => json!({"userInfo": user_info(who)}),
        "SelfSubjectRulesReview" => {
            let ns = obj["spec"]["namespace"].as_str().unwrap_or("");
            let rules = authz.rules_for(who, ns);
            let resource_rules: Vec<Value> = rules
                .resource
                .iter()
                .map(|r| {
                    let mut v = r.to_json();
                    if v.get("apiGroups").is_none() {
                        v["apiGroups"] = json!([]);
                    }
                    v
                })
                .collect();
            let non_resource_rules: Vec<Value> = rules
                .non_resource
                .iter()
                .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
                .collect();
            json!({
                "resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": false
            })
        }
        "SelfSubjectAccessReview" => access(authz, who, &obj["spec"])?,
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let spec = &obj["spec"];
            if res.kind == "LocalSubjectAccessReview" {
                let want = spec["resourceAttributes"]["namespace"]
                    .as_str()
                    .unwrap_or("");
                if !spec["resourceAttributes"].is_object() || want != namespace {
                    return Err(ApiError::bad_request(format!(
                        "spec.resourceAttributes.namespace must match namespace: {namespace}"
                    )));
                }
            }
            let subject = spec_subject(spec);
            if subject.user.is_empty() && subject.groups.is_empty() {
                return Err(ApiError::bad_request(
                    "spec.user: Invalid value: at least one of user or group must be specified",
                ));
            }
            access(authz, &subject, spec)?
        }
        other => return Err(ApiError::method_not_allowed("create", other)),
    };
    if let Some(m) = obj.as_object_mut() {
        m.insert("status".into(), status);
        m.entry("metadata").or_insert_with(|| json!({}));
    }
    Ok(obj)
}
