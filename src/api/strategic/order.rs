//! The order of a merged list, as upstream computes it: `$setElementOrder` first, then the
//! order of the patch list, then the order of the live list. Server-only elements are
//! interleaved by their live position: one goes before a patch element only when both are in
//! the live list and it came first there, so elements new to the list come before remaining
//! server-only ones. Also the element-type check every merged list goes through.

use serde_json::Value;

use super::gofmt;
use super::merge::{bad_arg_type, no_merge_key, Result, DIRECTIVE, GO_MAP};
use super::SmpError;

/// The Go type of a decoded JSON value, as far as merging tells types apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Map,
    List,
    Str,
    Bool,
    Int,
    Float,
    Nil,
}

pub(super) fn kind_of(v: &Value) -> Kind {
    match v {
        Value::Object(_) => Kind::Map,
        Value::Array(_) => Kind::List,
        Value::String(_) => Kind::Str,
        Value::Bool(_) => Kind::Bool,
        Value::Number(n) if n.is_i64() => Kind::Int,
        Value::Number(_) => Kind::Float,
        Value::Null => Kind::Nil,
    }
}

/// Splits `merged` into the elements present in `by` and the rest, both in merged order.
pub(super) fn partition_primitives(merged: Vec<Value>, by: &[Value]) -> (Vec<Value>, Vec<Value>) {
    merged.into_iter().partition(|v| by.contains(v))
}

pub(super) fn partition_maps(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut present = Vec::new();
    let mut rest = Vec::new();
    for v in merged {
        let Some(m) = v.as_object() else {
            return Err(bad_arg_type(GO_MAP, Some(&v)));
        };
        let Some(target) = m.get(merge_key) else {
            return Err(no_merge_key(m, merge_key));
        };
        let mut found = false;
        for (i, e) in by.iter().enumerate() {
            let Some(e) = e.as_object() else {
                return Err(SmpError::internal(format!(
                    "value for key {i} is not a map"
                )));
            };
            if e.get(merge_key) == Some(target) {
                found = true;
                break;
            }
        }
        if found {
            present.push(v);
        } else {
            rest.push(v);
        }
    }
    Ok((present, rest))
}

/// The common Go type of the elements of all lists (upstream `sliceElementType`).
pub(super) fn slice_element_type(lists: &[&[Value]]) -> Result<Kind> {
    let mut prev: Option<Kind> = None;
    for list in lists {
        for v in list.iter() {
            let kind = kind_of(v);
            match prev {
                None if kind == Kind::List => return Err(SmpError::no_list_of_lists()),
                None => prev = Some(kind),
                Some(p) if p != kind => {
                    return Err(SmpError::internal(format!(
                        "list element types are not identical: {}",
                        gofmt::lists_v(lists)
                    )))
                }
                Some(_) => {}
            }
        }
    }
    prev.ok_or_else(|| SmpError::internal("no elements in any of the given slices"))
}

/// Sorts the patch elements by `patch_order` and the server-only ones by `server_order`,
/// then interleaves them (upstream `normalizeElementOrder`).
pub(super) fn normalize_element_order(
    in_patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Result<Vec<Value>> {
    let in_patch = normalize_slice_order(in_patch, patch_order, merge_key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, merge_key, kind)?;
    Ok(merge_sorted(
        server_only,
        in_patch,
        server_order,
        merge_key,
        kind,
    ))
}

/// Position of `item` in `list`: by merge key for maps, by value otherwise. A missing key
/// matches a missing key, as Go's nil equals nil.
fn index_of(list: &[Value], item: &Value, merge_key: &str, kind: Kind) -> Option<usize> {
    if kind != Kind::Map {
        return list.iter().position(|v| v == item);
    }
    let wanted = key_value(item, merge_key);
    list.iter().position(|v| key_value(v, merge_key) == wanted)
}

fn key_value<'a>(v: &'a Value, merge_key: &str) -> Option<&'a Value> {
    v.as_object().and_then(|m| m.get(merge_key))
}

fn normalize_slice_order(
    to_sort: Vec<Value>,
    order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Result<Vec<Value>> {
    let mut deleted = Vec::new();
    let mut to_sort = if kind == Kind::Map {
        for v in to_sort.iter().chain(order.iter()) {
            let Some(m) = v.as_object() else {
                return Err(bad_arg_type(GO_MAP, Some(v)));
            };
            if !m.contains_key(merge_key) {
                return Err(no_merge_key(m, merge_key));
            }
        }
        let (delete, keep): (Vec<Value>, Vec<Value>) = to_sort
            .into_iter()
            .partition(|v| v.get(DIRECTIVE).and_then(Value::as_str) == Some("delete"));
        deleted = delete;
        keep
    } else {
        to_sort
    };
    let mut keyed: Vec<(Option<usize>, Value)> = to_sort
        .drain(..)
        .map(|v| (index_of(order, &v, merge_key, kind), v))
        .collect();
    if keyed.iter().all(|(i, _)| i.is_some()) {
        keyed.sort_by_key(|(i, _)| *i);
    } else {
        // Go's sort.SliceStable with upstream's comparator, which calls an element that is
        // missing from `order` smaller than anything: an insertion sort for small lists.
        let less = |a: Option<usize>, b: Option<usize>| match (a, b) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        };
        for i in 1..keyed.len() {
            let mut j = i;
            while j > 0 && less(keyed[j].0, keyed[j - 1].0) {
                keyed.swap(j, j - 1);
                j -= 1;
            }
        }
    }
    let mut sorted: Vec<Value> = keyed.into_iter().map(|(_, v)| v).collect();
    sorted.extend(deleted);
    Ok(sorted)
}

/// Interleaves server-only elements (`left`) into the patch elements (`right`): a server-only
/// element goes first only when both are in the live list and it came first there.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Vec<Value> {
    let li: Vec<Option<usize>> = left
        .iter()
        .map(|v| index_of(server_order, v, merge_key, kind))
        .collect();
    let ri: Vec<Option<usize>> = right
        .iter()
        .map(|v| index_of(server_order, v, merge_key, kind))
        .collect();
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().zip(li).peekable();
    let mut right = right.into_iter().zip(ri).peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((_, l)), Some((_, r))) => matches!((l, r), (Some(l), Some(r)) if l < r),
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((v, _)) = next {
            out.push(v);
        }
    }
    out
}
