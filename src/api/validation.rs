//! Validation of API objects with upstream's rules and messages. (Being written.)
//!
//! Every per-kind function has the shape [`ValidateFn`]: it gets the new object and, for
//! updates, the old one, and returns field errors (empty = valid). Metadata common to all
//! kinds is checked by [`object_meta`], which the generic pipeline calls for every kind.

use super::status::FieldError;
use serde_json::Value;

/// Validates a new object (and the old one on update).
pub type ValidateFn = fn(new: &Value, old: Option<&Value>) -> Vec<FieldError>;

/// Checks `metadata`: name (DNS-1123 subdomain unless `name_is_label`), namespace presence
/// matching `namespaced`, labels and annotations syntax and size, and on update the
/// immutable fields (name, namespace, uid, creationTimestamp).
pub fn object_meta(
    _new: &Value,
    _old: Option<&Value>,
    _namespaced: bool,
    _name_is_label: bool,
) -> Vec<FieldError> {
    Vec::new()
}

/// Accepts anything (kinds without specific rules).
pub fn none(_new: &Value, _old: Option<&Value>) -> Vec<FieldError> {
    Vec::new()
}
