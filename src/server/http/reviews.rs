//! Create-only "review" resources that compute an answer about the caller and store
//! nothing: `kubectl auth can-i` (SelfSubjectAccessReview, SelfSubjectRulesReview),
//! `kubectl auth whoami` (SelfSubjectReview), and SubjectAccessReview for components.

use super::auth::{self, Identity};
use super::request::RequestInfo;
use crate::api::resources::Resource;
use crate::api::status::ApiError;
use serde_json::{json, Value};

/// The caller's groups as upstream reports them (authenticated users also belong to
/// `system:authenticated`).
fn groups(who: &Identity) -> Vec<String> {
    let mut g = who.groups.clone();
    if who.user != "system:anonymous" && !g.iter().any(|x| x == "system:authenticated") {
        g.push("system:authenticated".into());
    }
    g
}

/// Answers a create on a review resource: the request object with `status` filled in.
pub fn answer(res: &Resource, who: &Identity, mut obj: Value) -> Result<Value, ApiError> {
    let status = match res.kind {
        "SelfSubjectReview" => json!({"userInfo": {"username": who.user, "groups": groups(who)}}),
        "SelfSubjectRulesReview" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false
        }),
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let subject = if res.kind == "SelfSubjectAccessReview" {
                who.clone()
            } else {
                let user = obj["spec"]["user"].as_str().unwrap_or("").to_string();
                let groups = obj["spec"]["groups"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|g| g.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                Identity { user, groups }
            };
            let ra = &obj["spec"]["resourceAttributes"];
            let info = RequestInfo {
                group: ra["group"].as_str().unwrap_or("").to_string(),
                version: ra["version"].as_str().unwrap_or("").to_string(),
                namespace: ra["namespace"].as_str().unwrap_or("").to_string(),
                resource: ra["resource"].as_str().unwrap_or("").to_string(),
                name: ra["name"].as_str().unwrap_or("").to_string(),
                subresource: ra["subresource"].as_str().unwrap_or("").to_string(),
                verb: "",
            };
            match auth::authorize(&subject, &info) {
                Ok(()) => json!({"allowed": true}),
                Err(e) => json!({"allowed": false, "reason": e.message}),
            }
        }
        other => return Err(ApiError::method_not_allowed("create", other)),
    };
    if let Some(m) = obj.as_object_mut() {
        m.insert("status".into(), status);
        m.entry("metadata").or_insert_with(|| json!({}));
    }
    Ok(obj)
}
