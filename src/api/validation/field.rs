//! Building blocks shared by the per-kind validators: field paths in upstream's notation
//! (`spec.containers[0].image`, `metadata.labels[app]`), typed reads from raw JSON, the
//! error shapes `status.rs` has no constructor for, and a semantic JSON equality that
//! treats absent, `null` and empty the way upstream's typed comparison does.

use serde_json::{Map, Value};

use super::super::status::FieldError;

/// A field path under construction. Cheap to clone; children are new strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    /// A root path such as `spec` or `metadata`.
    pub fn new(root: &str) -> Self {
        Path(root.to_string())
    }

    /// `a.b`
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    /// `a[3]`
    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }

    /// `a[key]`
    pub fn key(&self, k: &str) -> Self {
        Path(format!("{}[{k}]", self.0))
    }

    /// The rendered path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Path> for String {
    fn from(p: &Path) -> String {
        p.0.clone()
    }
}

impl From<Path> for String {
    fn from(p: Path) -> String {
        p.0
    }
}

/// Renders a bad value like upstream's field errors: strings quoted, others as JSON.
pub fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// `Not found: <value>` (FieldValueNotFound).
pub fn not_found(path: &Path, value: &Value) -> FieldError {
    FieldError {
        field: path.into(),
        reason: "FieldValueNotFound",
        message: format!("Not found: {}", render(value)),
    }
}

/// `Invalid value: <v>: must be greater than or equal to 0` for negative numbers.
pub fn non_negative(v: Option<&Value>, path: &Path) -> Option<FieldError> {
    let n = v?.as_i64()?;
    (n < 0)
        .then(|| FieldError::invalid(path, &Value::from(n), "must be greater than or equal to 0"))
}

/// Drops exact duplicates, keeping the first of each; upstream's aggregate message
/// never repeats an identical line.
pub fn dedup(errs: Vec<FieldError>) -> Vec<FieldError> {
    let mut out: Vec<FieldError> = Vec::with_capacity(errs.len());
    for e in errs {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// The member `k` of an object, if `v` is one.
pub fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.as_object()?.get(k)
}

/// A string member; absent, `null` and non-strings read as `""`, as a typed decode would
/// leave the zero value.
pub fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    get(v, k).and_then(Value::as_str).unwrap_or("")
}

/// An array member; absent or not an array reads as empty.
pub fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    get(v, k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// An object member, if present and an object.
pub fn obj<'a>(v: &'a Value, k: &str) -> Option<&'a Map<String, Value>> {
    get(v, k).and_then(Value::as_object)
}

/// Whether a member is present and not `null`.
pub fn has(v: &Value, k: &str) -> bool {
    !matches!(get(v, k), None | Some(Value::Null))
}

/// An integer member.
pub fn int(v: &Value, k: &str) -> Option<i64> {
    get(v, k).and_then(Value::as_i64)
}

/// A boolean member, `false` when absent.
pub fn flag(v: &Value, k: &str) -> bool {
    get(v, k).and_then(Value::as_bool).unwrap_or(false)
}

/// Removes `null`s and empty objects/arrays recursively, so that two documents compare
/// equal exactly when their decoded Go structs would be semantically equal in the common
/// cases (omitted vs. `null` vs. empty collections).
pub fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let n = normalized(v);
                let empty = match &n {
                    Value::Null => true,
                    Value::Object(o) => o.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    _ => false,
                };
                if !empty {
                    out.insert(k.clone(), n);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Semantic equality of two optional values (see [`normalized`]).
pub fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let n = |v: Option<&Value>| v.map(normalized).unwrap_or(Value::Null);
    let (a, b) = (n(a), n(b));
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(x) => x.is_empty(),
        _ => false,
    };
    a == b || (empty(&a) && empty(&b))
}

/// A short description of how two objects differ, appended to "may not change" errors in
/// place of upstream's Go struct diff: one `-`/`+` pair per changed member.
pub fn diff(old: &Value, new: &Value) -> String {
    let (o, n) = (normalized(old), normalized(new));
    let empty = Map::new();
    let om = o.as_object().unwrap_or(&empty);
    let nm = n.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = om.keys().chain(nm.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = String::from("  {\n");
    for k in keys {
        let (a, b) = (om.get(k), nm.get(k));
        if a == b {
            continue;
        }
        if let Some(a) = a {
            out.push_str(&format!("- \t{k}: {a},\n"));
        }
        if let Some(b) = b {
            out.push_str(&format!("+ \t{k}: {b},\n"));
        }
    }
    out.push_str("  }\n");
    out
}

/// `field is immutable` when the two values differ semantically.
pub fn immutable(new: Option<&Value>, old: Option<&Value>, path: &Path) -> Option<FieldError> {
    if same(new, old) {
        return None;
    }
    Some(FieldError::immutable(path, new.unwrap_or(&Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_render_like_upstream() {
        let p = Path::new("spec")
            .child("containers")
            .index(0)
            .child("ports")
            .index(2)
            .child("name");
        assert_eq!(p.as_str(), "spec.containers[0].ports[2].name");
        assert_eq!(
            Path::new("spec").child("resources").key("storage").as_str(),
            "spec.resources[storage]"
        );
        assert_eq!(Path::new("").child("x").as_str(), "x");
    }

    #[test]
    fn semantic_equality_ignores_empty_and_null() {
        assert!(same(Some(&json!({"a": null, "b": []})), Some(&json!({}))));
        assert!(same(None, Some(&json!({"x": {}}))));
        assert!(!same(Some(&json!({"a": 1})), Some(&json!({"a": 2}))));
        assert!(same(
            Some(&json!({"a": {"b": 1}, "c": []})),
            Some(&json!({"a": {"b": 1}}))
        ));
    }

    #[test]
    fn not_found_renders() {
        let e = not_found(&Path::new("spec").child("x"), &json!("v"));
        assert_eq!(e.display(), "spec.x: Not found: \"v\"");
        assert_eq!(e.reason, "FieldValueNotFound");
    }
}
