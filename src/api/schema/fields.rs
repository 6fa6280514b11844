//! Unknown and duplicate fields, reported with upstream's paths (`spec.containers[0].imagee`,
//! map keys as `.key`), as sigs.k8s.io/json's strict decoder reports them.

use super::kinds::REF_PREFIX;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;

/// Keywords the walk needs; everything else (descriptions above all) is dropped from the
/// validation copy of the schemas to keep it small.
const KEEP: &[&str] = &[
    "$ref",
    "allOf",
    "oneOf",
    "anyOf",
    "type",
    "properties",
    "items",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
];

/// A schema reduced to what the walk reads.
pub(super) fn strip(schema: &Value) -> Value {
    let Value::Object(obj) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (k, v) in obj {
        if !KEEP.contains(&k.as_str()) {
            continue;
        }
        let v = match (k.as_str(), v) {
            ("properties", Value::Object(props)) => Value::Object(
                props
                    .iter()
                    .map(|(name, s)| (name.clone(), strip(s)))
                    .collect(),
            ),
            ("allOf" | "oneOf" | "anyOf", Value::Array(alts)) => {
                Value::Array(alts.iter().map(strip).collect())
            }
            ("items" | "additionalProperties", s) => strip(s),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

/// Follows `$ref` and single-alternative `allOf` wrappers to the schema itself.
fn resolve<'a>(defs: &'a Map<String, Value>, mut schema: &'a Value) -> &'a Value {
    // References in generated schemas never loop without passing through a property, so a
    // small bound only guards against a malformed table.
    for _ in 0..16 {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix(REF_PREFIX).and_then(|n| defs.get(n)) {
                Some(s) => schema = s,
                None => return &Value::Null,
            }
        } else if let Some(first) = schema.get("allOf").and_then(|a| a.get(0)) {
            schema = first;
        } else {
            break;
        }
    }
    schema
}

/// For `oneOf`/`anyOf` schemas (JSONSchemaPropsOrArray, ...), the alternative that fits the
/// value's JSON type.
fn pick<'a>(defs: &'a Map<String, Value>, schema: &'a Value, value: &Value) -> &'a Value {
    let Some(alts) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    else {
        return schema;
    };
    let want = match value {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        _ => return schema,
    };
    alts.iter()
        .map(|a| resolve(defs, a))
        .find(|a| {
            a.get("type").and_then(Value::as_str) == Some(want)
                || (want == "object" && a.get("properties").is_some())
        })
        .unwrap_or(schema)
}

/// Appends the paths of fields of `value` that `schema` does not declare.
pub(super) fn walk(
    defs: &Map<String, Value>,
    schema: &Value,
    value: &Value,
    path: &mut String,
    out: &mut Vec<String>,
) {
    let schema = pick(defs, resolve(defs, schema), value);
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(obj) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in obj {
                    let len = path.len();
                    push_key(path, k);
                    match props.get(k) {
                        Some(sub) => walk(defs, sub, v, path, out),
                        None => out.push(path.clone()),
                    }
                    path.truncate(len);
                }
            } else if let Some(sub) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for (k, v) in obj {
                    let len = path.len();
                    push_key(path, k);
                    walk(defs, sub, v, path, out);
                    path.truncate(len);
                }
            }
            // An object schema with neither is free-form (RawExtension, FieldsV1, JSON).
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(defs, sub, v, path, out);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// Paths of keys that occur twice in one JSON object of `raw`, in document order.
pub(super) fn duplicates(raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(raw);
    // Bodies that are not JSON (YAML, protobuf) are another layer's error to report.
    let _ = Dups {
        path: String::new(),
        out: &mut out,
    }
    .deserialize(&mut de);
    out
}

struct Dups<'a> {
    path: String,
    out: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Dups<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Dups<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let mut path = self.path.clone();
            push_key(&mut path, &key);
            if !seen.insert(key) {
                out.push(path.clone());
            }
            map.next_value_seed(Dups {
                path,
                out: &mut *out,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.out;
        let mut i = 0usize;
        loop {
            let path = format!("{}[{i}]", self.path);
            if seq
                .next_element_seed(Dups {
                    path,
                    out: &mut *out,
                })?
                .is_none()
            {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}
