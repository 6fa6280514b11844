//! Patches: RFC 6902 JSON patch and RFC 7396 JSON merge patch. Strategic merge patch
//! and server-side apply are added by the kubectl-fidelity work.

use super::status::ApiError;
use serde_json::Value;

/// The patch types the API accepts, by Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml`
    Apply,
}

/// Media types in the order upstream lists them in 415 errors.
pub const PATCH_MEDIA_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

impl PatchType {
    /// Parses a Content-Type header (parameters ignored).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// `old` with a JSON, merge or strategic merge patch applied (`Apply` is treated as a
/// strategic merge here; server-side apply's field ownership lives in `api::apply`).
pub fn apply(
    ptype: PatchType,
    old: &Value,
    body: &Value,
    group: &str,
    kind: &str,
) -> Result<Value, ApiError> {
    let mut new = old.clone();
    match ptype {
        PatchType::Json => apply_json_patch(&mut new, body)?,
        PatchType::Merge => apply_merge_patch(&mut new, body)?,
        PatchType::Strategic | PatchType::Apply => {
            new = super::strategic::try_apply(old, body, group, kind)?;
        }
    }
    Ok(new)
}

/// Applies a JSON patch (a list of operations) to `doc`.
pub fn apply_json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "the server rejected our request due to an error in our request: {e}"
        ))
    })?;
    json_patch::patch(doc, &ops).map_err(|e| {
        ApiError::new_unprocessable(format!(
            "the server rejected our request due to an error in our request: {e}"
        ))
    })
}

/// Applies a JSON merge patch (RFC 7396) to `doc`.
pub fn apply_merge_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "json: cannot unmarshal non-object into a merge patch",
        ));
    }
    json_patch::merge(doc, patch);
    Ok(())
}

impl ApiError {
    /// 422 without field causes (upstream uses this for patches that cannot be applied).
    pub fn new_unprocessable(message: String) -> ApiError {
        ApiError {
            code: 422,
            reason: "Invalid",
            message,
            details: None,
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_deletes() {
        let mut d = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        apply_merge_patch(
            &mut d,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(d["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    }

    #[test]
    fn json_patch_is_atomic() {
        let mut d = json!({"spec": {"replicas": 1}});
        let bad = json!([{"op": "replace", "path": "/spec/replicas", "value": 3}, {"op": "remove", "path": "/nope"}]);
        assert!(apply_json_patch(&mut d, &bad).is_err());
        assert_eq!(d["spec"]["replicas"], 1);
        apply_json_patch(
            &mut d,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        )
        .unwrap();
        assert_eq!(d["spec"]["replicas"], 3);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(PatchType::from_content_type("text/plain"), None);
    }
}
