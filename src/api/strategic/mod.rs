//! Strategic merge patch (`application/strategic-merge-patch+json`), as kube-apiserver applies
//! it (k8s.io/apimachinery/pkg/util/strategicpatch, `StrategicMergeMapPatch`): what client-side
//! `kubectl apply`, `edit`, `patch`, `set`, `rollout`, `cordon` and `taint` send for built-in
//! kinds. Patch metadata per type lives in [`schema`], the merge itself in [`merge`].
//!
//! Upstream decodes the merged map into the typed object, which silently drops anything it
//! does not know; directive keys that upstream leaves in values it takes whole are therefore
//! stripped here, so that no directive reaches the stored object.

mod gofmt;
mod merge;
mod order;
mod schema;

pub(crate) use schema::list_key;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_errors;

use serde_json::Value;

use super::status::ApiError;

/// Why a patch could not be applied, with the HTTP code upstream answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmpError {
    /// 400 for malformed directives, 415 for kinds without patch metadata, 422 for lists of
    /// lists, 500 for everything upstream returns as a plain Go error (reason Unknown).
    pub code: u16,
    /// The `Status` message, worded as upstream words it.
    pub message: String,
}

impl SmpError {
    pub(crate) fn bad_request(message: impl Into<String>) -> SmpError {
        SmpError {
            code: 400,
            message: message.into(),
        }
    }

    /// Upstream answers `mergepatch.ErrNoListOfLists` with a generic 422.
    pub(crate) fn no_list_of_lists() -> SmpError {
        SmpError {
            code: 422,
            message: "the server rejected our request due to an error in our request".into(),
        }
    }

    /// A plain Go error, which the apiserver turns into a 500 with reason Unknown.
    pub(crate) fn internal(message: impl Into<String>) -> SmpError {
        SmpError {
            code: 500,
            message: message.into(),
        }
    }

    /// The upstream `StatusReason`; empty for Unknown.
    pub fn reason(&self) -> &'static str {
        match self.code {
            400 => "BadRequest",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            _ => "",
        }
    }
}

impl std::fmt::Display for SmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SmpError {}

impl From<SmpError> for ApiError {
    fn from(e: SmpError) -> ApiError {
        let reason = e.reason();
        ApiError {
            code: e.code,
            reason,
            message: e.message,
            details: None,
            retry_after: None,
        }
    }
}

/// The media types a kind without strategic-merge metadata accepts for PATCH, in upstream's
/// order (the 415 message lists them).
const NON_STRATEGIC_PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

/// Whether strategic merge patch is supported for this kind: built-in kinds yes; unknown
/// kinds and custom resources no (the server answers 415).
pub fn supports(group: &str, kind: &str) -> bool {
    schema::Schema::root(group, kind).is_some()
}

/// Applies a strategic merge patch to `original` for the kind identified by group and kind
/// (e.g. `("", "Pod")`, `("apps", "Deployment")`). Err carries upstream's message; use
/// [`try_apply`] for the HTTP code as well.
pub fn apply(original: &Value, patch: &Value, group: &str, kind: &str) -> Result<Value, String> {
    try_apply(original, patch, group, kind).map_err(|e| e.message)
}

/// [`apply`] with the HTTP code of the failure.
pub fn try_apply(
    original: &Value,
    patch: &Value,
    group: &str,
    kind: &str,
) -> Result<Value, SmpError> {
    let Some(root) = schema::Schema::root(group, kind) else {
        return Err(SmpError {
            code: 415,
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                NON_STRATEGIC_PATCH_TYPES.join(", ")
            ),
        });
    };
    let patch = match patch {
        Value::Object(m) => m.clone(),
        // Go's json.Unmarshal of `null` into a map leaves it empty: nothing to merge.
        Value::Null => return Ok(original.clone()),
        other => {
            let what = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "bool",
            };
            return Err(SmpError::bad_request(format!(
                "json: cannot unmarshal {what} into Go value of type map[string]interface {{}}"
            )));
        }
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    merge::merge_map(original, patch, root).map(Value::Object)
}
