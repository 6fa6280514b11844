//! The merge of a strategic merge patch into an object, step for step as upstream's
//! `mergeMap` / `mergeSlice` do it: directives, merge lists, retained keys, the values taken
//! whole, and upstream's errors. How merged lists are ordered lives in [`super::order`].

use serde_json::{Map, Value};

use super::gofmt;
use super::order::{
    kind_of, normalize_element_order, partition_maps, partition_primitives, slice_element_type,
    Kind,
};
use super::schema::{FieldMeta, Schema};
use super::SmpError;

pub(super) type Obj = Map<String, Value>;
pub(super) type Result<T> = std::result::Result<T, SmpError>;

pub(super) const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList";

const ERR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_SET_ORDER: &str = "invalid patch format of setElementOrder list";

/// Go type names used by `mergepatch.ErrBadArgType`.
pub(super) const GO_MAP: &str = "map[string]interface {}";
const GO_LIST: &str = "[]interface {}";

pub(super) fn no_merge_key(m: &Obj, key: &str) -> SmpError {
    SmpError::internal(format!(
        "map: {} does not contain declared merge key: {key}",
        gofmt::map_v(m)
    ))
}

pub(super) fn bad_arg_type(expected: &str, actual: Option<&Value>) -> SmpError {
    SmpError::internal(format!(
        "expected a {expected}, but received a {}",
        gofmt::type_name(actual)
    ))
}

fn bad_patch_type(directive: &Value, m: &Obj) -> SmpError {
    SmpError::internal(format!(
        "unknown patch type: {} in map: {}",
        gofmt::s(directive),
        gofmt::map_v(m)
    ))
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(SET_ORDER)
        || k.starts_with(DELETE_PRIMITIVE)
}

/// The field a `$setElementOrder/<field>` or `$deleteFromPrimitiveList/<field>` key names.
fn extract_key<'a>(key: &'a str, prefix: &str, err: &str) -> Result<&'a str> {
    match key.split_once('/') {
        Some((p, field)) if p == prefix => Ok(field),
        _ => Err(SmpError::bad_request(err)),
    }
}

/// Merges `patch` into `original` (upstream `mergeMap`).
pub(super) fn merge_map(mut original: Obj, mut patch: Obj, schema: Schema) -> Result<Obj> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                patch.shift_remove(DIRECTIVE);
                Ok(strip_map(patch))
            }
            Some("delete") => Ok(Obj::new()),
            _ => Err(bad_patch_type(directive, &patch)),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_ordered_lists(&mut original, &mut patch, schema)?;

    for (patch_key, patch_value) in patch {
        let mut key = patch_key;
        let mut is_delete_list = false;
        if key.starts_with(DELETE_PRIMITIVE) {
            let field = extract_key(&key, DELETE_PRIMITIVE, ERR_PRIMITIVE_LIST)?.to_string();
            is_delete_list = true;
            if !field.is_empty() {
                key = field;
            }
        }
        if patch_value.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let Some(current) = original.get_mut(&key) else {
            if !is_delete_list {
                if let Some(v) = clean_new(patch_value) {
                    original.insert(key, v);
                }
            }
            continue;
        };
        if kind_of(current) != kind_of(&patch_value) {
            if !is_delete_list {
                match clean_new(patch_value) {
                    Some(v) => *current = v,
                    None => {
                        original.shift_remove(&key);
                    }
                }
            }
            continue;
        }
        let (sub, meta) = schema.field(&key);
        let merged = match (current.take(), patch_value) {
            (Value::Object(o), Value::Object(p)) => Value::Object(if meta.opaque {
                p
            } else if meta.replace {
                strip_map(p)
            } else {
                merge_map(o, p, sub)?
            }),
            (Value::Array(o), Value::Array(p)) => {
                Value::Array(merge_slice_handler(o, p, sub, meta, is_delete_list)?)
            }
            (_, scalar) => scalar,
        };
        *current = merged;
    }
    Ok(original)
}

/// `$retainKeys`: drops every key of `original` not listed, after checking that the patch
/// sets nothing outside the list.
fn apply_retain_keys(original: &mut Obj, patch: &mut Obj) -> Result<()> {
    let Some(list) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(keys) = list else {
        return Err(SmpError::bad_request(ERR_RETAIN_KEYS));
    };
    let retained = |k: &str| keys.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(DELETE_PRIMITIVE) || k.starts_with(SET_ORDER) {
            continue;
        }
        if !retained(k) {
            return Err(SmpError::bad_request(ERR_RETAIN_KEYS));
        }
    }
    original.retain(|k, _| retained(k));
    Ok(())
}

/// Every `$setElementOrder/<field>`: merges that list and orders the result
/// (upstream `mergePatchIntoOriginal`).
fn merge_ordered_lists(original: &mut Obj, patch: &mut Obj, schema: Schema) -> Result<()> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let Some(order) = patch.shift_remove(&key) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(bad_arg_type(GO_LIST, Some(&order)));
        };
        let field = extract_key(&key, SET_ORDER, ERR_SET_ORDER)?.to_string();
        let live = match original.get(&field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg_type(GO_LIST, Some(other))),
        };
        let patched = match patch.get(&field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg_type(GO_LIST, Some(other))),
        };
        let (sub, meta) = schema.field(&field);
        let merge_key = meta.merge_key;
        validate_with_order(patched.as_deref().unwrap_or(&[]), &order, merge_key)?;

        let merged = match (&live, &patched) {
            (Some(l), None) => l.clone(),
            (None, Some(p)) => p.iter().cloned().filter_map(clean_new).collect(),
            (Some(l), Some(p)) => merge_slice_handler(l.clone(), p.clone(), sub, meta, false)?,
            (None, None) => continue,
        };
        let (in_order, server_only) = if merge_key.is_empty() {
            partition_primitives(merged, &order)
        } else {
            partition_maps(merged, &order, merge_key)?
        };
        let live = live.unwrap_or_default();
        let patched = patched.unwrap_or_default();
        let kind = slice_element_type(&[&live, &patched])?;
        let both = normalize_element_order(in_order, server_only, &order, &live, merge_key, kind)?;
        original.insert(field.clone(), Value::Array(both));
        patch.shift_remove(&field);
    }
    Ok(())
}

/// Checks that the patch list names its elements in the order `$setElementOrder` gives.
fn validate_with_order(patched: &[Value], order: &[Value], merge_key: &str) -> Result<()> {
    if order.is_empty() || patched.is_empty() {
        return Ok(());
    }
    let kept: Vec<&Value> = if merge_key.is_empty() {
        patched.iter().collect()
    } else {
        let mut kept = Vec::new();
        for v in patched {
            let Value::Object(m) = v else {
                return Err(bad_arg_type(GO_MAP, Some(v)));
            };
            if m.get(DIRECTIVE).and_then(Value::as_str) != Some("delete") {
                kept.push(v);
            }
        }
        kept
    };
    let (mut p, mut o) = (0, 0);
    while p < kept.len() && o < order.len() {
        if kept[p]
            .as_object()
            .is_some_and(|m| m.contains_key(DIRECTIVE))
        {
            p += 1;
            continue;
        }
        if merge_key_value_equal(kept[p], &order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < kept.len() && o >= order.len() {
        return Err(SmpError::internal(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ORDER} list:\n{}\n",
            gofmt::v(&Value::Array(patched.to_vec())),
            gofmt::v(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn merge_key_value_equal(left: &Value, right: &Value, merge_key: &str) -> Result<bool> {
    if merge_key.is_empty() {
        return Ok(left == right);
    }
    let Value::Object(l) = left else {
        return Err(bad_arg_type(GO_MAP, Some(left)));
    };
    let Value::Object(r) = right else {
        return Err(bad_arg_type(GO_MAP, Some(right)));
    };
    let lv = l.get(merge_key).ok_or_else(|| no_merge_key(l, merge_key))?;
    let rv = r.get(merge_key).ok_or_else(|| no_merge_key(r, merge_key))?;
    Ok(lv == rv)
}

/// A list field: merged for `patchStrategy:"merge"` and deletion lists, else replaced.
fn merge_slice_handler(
    live: Vec<Value>,
    patched: Vec<Value>,
    schema: Schema,
    meta: FieldMeta,
    is_delete_list: bool,
) -> Result<Vec<Value>> {
    if meta.merge || is_delete_list {
        merge_slice(live, patched, schema, meta.merge_key, is_delete_list)
    } else if meta.opaque {
        Ok(patched)
    } else {
        Ok(patched.into_iter().map(strip).collect())
    }
}

/// Merges two lists (upstream `mergeSlice`).
fn merge_slice(
    live: Vec<Value>,
    patched: Vec<Value>,
    schema: Schema,
    merge_key: &str,
    is_delete_list: bool,
) -> Result<Vec<Value>> {
    if live.is_empty() && patched.is_empty() {
        return Ok(live);
    }
    let kind = slice_element_type(&[&live, &patched])?;
    let (merged, live, patched) = if kind != Kind::Map {
        if is_delete_list {
            return Ok(live.into_iter().filter(|v| !patched.contains(v)).collect());
        }
        let mut merged: Vec<Value> = Vec::with_capacity(live.len() + patched.len());
        for v in live.iter().chain(patched.iter()) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        (merged, live, patched)
    } else {
        if merge_key.is_empty() {
            return Err(SmpError::internal(format!(
                "cannot merge lists without merge key for {}",
                schema.go_kind()
            )));
        }
        let (live, patched) = apply_special_elements(live, patched, merge_key)?;
        let merged = merge_elements(live.clone(), &patched, merge_key, schema)?;
        (merged, live, patched)
    };
    let (in_patch, server_only) = if merge_key.is_empty() {
        partition_primitives(merged, &patched)
    } else {
        partition_maps(merged, &patched, merge_key)?
    };
    normalize_element_order(in_patch, server_only, &patched, &live, merge_key, kind)
}

/// Elements carrying `$patch`: `delete` removes live elements with that key, `replace` makes
/// the rest of the patch list the new list. Returns the live list and the remaining patch.
fn apply_special_elements(
    mut live: Vec<Value>,
    patched: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut rest = Vec::new();
    let mut replace = false;
    for v in patched {
        let Some(m) = v.as_object() else {
            rest.push(v);
            continue;
        };
        let Some(directive) = m.get(DIRECTIVE) else {
            rest.push(v);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(target) = m.get(merge_key) else {
                    return Err(no_merge_key(m, merge_key));
                };
                live.retain(|e| e.as_object().and_then(|e| e.get(merge_key)) != Some(target));
            }
            // Keep going: the other directive elements must still be pruned.
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(SmpError::internal(
                    "merging lists cannot yet be specified in the patch",
                ))
            }
            _ => return Err(bad_patch_type(directive, m)),
        }
    }
    if replace {
        Ok((rest.into_iter().map(strip).collect(), Vec::new()))
    } else {
        Ok((live, rest))
    }
}

/// Merges each patch element into the live element with the same merge key, or appends it.
fn merge_elements(
    mut live: Vec<Value>,
    patched: &[Value],
    merge_key: &str,
    schema: Schema,
) -> Result<Vec<Value>> {
    for v in patched {
        let Some(m) = v.as_object() else {
            return Err(bad_arg_type(GO_MAP, Some(v)));
        };
        let Some(target) = m.get(merge_key) else {
            return Err(no_merge_key(m, merge_key));
        };
        let found = live
            .iter()
            .position(|e| e.as_object().and_then(|e| e.get(merge_key)) == Some(target));
        match found {
            Some(i) => {
                let current = match live[i].take() {
                    Value::Object(o) => o,
                    _ => Obj::new(),
                };
                live[i] = Value::Object(merge_map(current, m.clone(), schema)?);
            }
            None => live.push(strip(v.clone())),
        }
    }
    Ok(live)
}

/// A patch value that lands where the object had nothing (upstream: nulls discarded, then
/// `removeDirectives`, which drops objects carrying `$patch`); `None` when nothing remains.
/// Other directive keys are dropped too, as upstream's typed decode drops them.
fn clean_new(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.iter().any(|(k, v)| k == DIRECTIVE && !v.is_null()) {
                return None;
            }
            let mut out = Obj::new();
            for (k, v) in m {
                if v.is_null() || is_directive_key(&k) {
                    continue;
                }
                if let Some(v) = clean_new(v) {
                    out.insert(k, v);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => Some(Value::Array(
            items.into_iter().filter_map(clean_new).collect(),
        )),
        other => Some(other),
    }
}

/// A value taken whole (replaced lists and objects, appended list elements): upstream keeps it
/// as sent and its typed decode drops directive keys and turns nulls into absent fields.
fn strip(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_map(m)),
        Value::Array(items) => Value::Array(items.into_iter().map(strip).collect()),
        other => other,
    }
}

fn strip_map(m: Obj) -> Obj {
    m.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .map(|(k, v)| (k, strip(v)))
        .collect()
}
