//! Label and field selectors: parsing upstream's string syntax and `metav1.LabelSelector`
//! JSON, and matching objects. (Being written.)

use serde_json::{Map, Value};

/// A parsed label selector (all requirements must match).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),!h,i`. Errors carry upstream's message.
    pub fn parse(_s: &str) -> Result<Self, String> {
        Ok(LabelSelector {})
    }

    /// Builds a selector from a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_json(_sel: &Value) -> Result<Self, String> {
        Ok(LabelSelector {})
    }

    /// True when the selector has no requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        true
    }

    /// Whether `labels` (the `metadata.labels` map, if any) satisfy every requirement.
    pub fn matches(&self, _labels: Option<&Map<String, Value>>) -> bool {
        true
    }
}

/// A parsed field selector (`a=b,c!=d`; all terms must match).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {}

impl FieldSelector {
    /// Parses `metadata.name=x,status.phase!=Failed`.
    pub fn parse(_s: &str) -> Result<Self, String> {
        Ok(FieldSelector {})
    }

    /// The field paths the selector uses (to reject unsupported ones).
    pub fn fields(&self) -> Vec<&str> {
        Vec::new()
    }

    /// The value required by an `=`/`==` term on `field`, if any (fast paths such as
    /// `metadata.name=x`).
    pub fn exact(&self, _field: &str) -> Option<&str> {
        None
    }

    /// Whether the object matches; `get` returns a field's value as a string
    /// (missing fields compare as the empty string, like upstream).
    pub fn matches(&self, _get: &dyn Fn(&str) -> Option<String>) -> bool {
        true
    }
}
