//! Walks over JSON objects that server-side apply needs, after structured-merge-diff's
//! `typed` package: the field set an object sets, the comparison of two objects (added,
//! modified, removed paths), the merge of an applied configuration into a live object, and
//! the removal of paths.
//!
//! What upstream reads from the OpenAPI schema comes from two places here: which lists are
//! associative (and by which key) or sets is the strategic-merge metadata
//! ([`crate::api::strategic::list_key`]); every other list is atomic, every object is
//! granular.

use super::fieldpath::{compare_values, Path, PathElement, Set};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// How a list merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Atomic,
    Map(&'static str),
    Set,
}

/// The list knowledge of one kind.
#[derive(Clone, Copy, Debug)]
pub struct Lists<'a> {
    group: &'a str,
    kind: &'a str,
}

impl<'a> Lists<'a> {
    /// Lists of the kind `kind` in API group `group`.
    pub fn new(group: &'a str, kind: &'a str) -> Lists<'a> {
        Lists { group, kind }
    }

    fn shape(&self, fpath: &[String]) -> Shape {
        let names: Vec<&str> = fpath.iter().map(String::as_str).collect();
        match crate::api::strategic::list_key(self.group, self.kind, &names) {
            None => Shape::Atomic,
            Some("") => Shape::Set,
            Some(key) => Shape::Map(key),
        }
    }

    /// The path element of each item, or None when the list is handled whole: atomic lists,
    /// and associative lists with an item that lacks its key or with duplicate keys.
    fn elements(&self, fpath: &[String], items: &[Value]) -> Option<Vec<PathElement>> {
        let shape = self.shape(fpath);
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let pe = match shape {
                Shape::Atomic => return None,
                Shape::Map(key) => match item.as_object().and_then(|m| m.get(key)) {
                    Some(k) if !k.is_null() => PathElement::Key(vec![(key.to_string(), k.clone())]),
                    _ => return None,
                },
                Shape::Set => match item {
                    Value::Object(_) | Value::Array(_) => return None,
                    v => PathElement::Value(v.clone()),
                },
            };
            if out.contains(&pe) {
                return None;
            }
            out.push(pe);
        }
        Some(out)
    }
}

/// The paths an object sets: every scalar, atomic list, null and empty object; every item
/// of an associative list or set. Objects holding fields are not members themselves.
pub fn field_set(obj: &Value, lists: &Lists) -> Set {
    let mut out = Set::new();
    collect(obj, &mut Vec::new(), &mut Vec::new(), &mut out, lists);
    out
}

fn collect(v: &Value, path: &mut Path, fpath: &mut Vec<String>, out: &mut Set, lists: &Lists) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                path.push(PathElement::Field(k.clone()));
                fpath.push(k.clone());
                collect(child, path, fpath, out, lists);
                if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                    out.insert(path);
                }
                fpath.pop();
                path.pop();
            }
        }
        Value::Array(items) => match lists.elements(fpath, items) {
            None => out.insert(path),
            Some(pes) => {
                for (pe, item) in pes.into_iter().zip(items) {
                    path.push(pe);
                    collect(item, path, fpath, out, lists);
                    out.insert(path);
                    path.pop();
                }
            }
        },
        _ => out.insert(path),
    }
}

/// What changed between two objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Paths only in the new object (objects and lists included, not only leaves).
    pub added: Set,
    /// Leaves whose value changed.
    pub modified: Set,
    /// Paths only in the old object.
    pub removed: Set,
}

impl Comparison {
    /// Keeps only what `keep` says of each set.
    pub fn filter(self, keep: impl Fn(&Set) -> Set) -> Comparison {
        Comparison {
            added: keep(&self.added),
            modified: keep(&self.modified),
            removed: keep(&self.removed),
        }
    }

    /// Added and modified paths.
    pub fn changed(&self) -> Set {
        self.modified.union(&self.added)
    }
}

/// Compares an old object with a new one.
pub fn compare(old: &Value, new: &Value, lists: &Lists) -> Comparison {
    let mut c = Comparison::default();
    compare_at(
        Some(old),
        Some(new),
        &mut Vec::new(),
        &mut Vec::new(),
        &mut c,
        lists,
    );
    c
}

fn leaf(l: Option<&Value>, r: Option<&Value>, path: &Path, c: &mut Comparison) {
    match (l, r) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        (Some(a), Some(b)) if compare_values(a, b) != Ordering::Equal => c.modified.insert(path),
        _ => {}
    }
}

fn compare_at(
    l: Option<&Value>,
    r: Option<&Value>,
    path: &mut Path,
    fpath: &mut Vec<String>,
    c: &mut Comparison,
    lists: &Lists,
) {
    let is = |v: Option<&Value>, f: fn(&Value) -> bool| v.is_none_or(f);
    let empty_obj = |v: &Value| v.as_object().is_some_and(Map::is_empty);
    let empty_arr = |v: &Value| v.as_array().is_some_and(Vec::is_empty);
    if is(l, Value::is_object) && is(r, Value::is_object) {
        if is(l, empty_obj) && is(r, empty_obj) {
            return leaf(l, r, path, c);
        }
        let lm = l.and_then(Value::as_object);
        let rm = r.and_then(Value::as_object);
        let mut keys: Vec<&String> = lm.map(|m| m.keys().collect()).unwrap_or_default();
        if let Some(rm) = rm {
            keys.extend(
                rm.keys()
                    .filter(|k| !lm.is_some_and(|m| m.contains_key(*k))),
            );
        }
        for k in keys {
            path.push(PathElement::Field(k.clone()));
            fpath.push(k.clone());
            compare_at(
                lm.and_then(|m| m.get(k)),
                rm.and_then(|m| m.get(k)),
                path,
                fpath,
                c,
                lists,
            );
            fpath.pop();
            path.pop();
        }
        return mark_presence(l, r, path, c);
    }
    if is(l, Value::is_array) && is(r, Value::is_array) {
        if is(l, empty_arr) && is(r, empty_arr) {
            return leaf(l, r, path, c);
        }
        let li: &[Value] = l.and_then(Value::as_array).map_or(&[], Vec::as_slice);
        let ri: &[Value] = r.and_then(Value::as_array).map_or(&[], Vec::as_slice);
        let (Some(lp), Some(rp)) = (lists.elements(fpath, li), lists.elements(fpath, ri)) else {
            return leaf(l, r, path, c);
        };
        let mut items: Vec<(PathElement, Option<&Value>, Option<&Value>)> = Vec::new();
        for (pe, v) in lp.into_iter().zip(li) {
            items.push((pe, Some(v), None));
        }
        for (pe, v) in rp.into_iter().zip(ri) {
            match items.iter_mut().find(|(p, ..)| *p == pe) {
                Some(slot) => slot.2 = Some(v),
                None => items.push((pe, None, Some(v))),
            }
        }
        for (pe, a, b) in items {
            path.push(pe);
            compare_at(a, b, path, fpath, c, lists);
            path.pop();
        }
        return mark_presence(l, r, path, c);
    }
    leaf(l, r, path, c)
}

fn mark_presence(l: Option<&Value>, r: Option<&Value>, path: &Path, c: &mut Comparison) {
    if l.is_none() {
        c.added.insert(path);
    } else if r.is_none() {
        c.removed.insert(path);
    }
}

/// Merges an applied configuration into a live object: objects field by field, associative
/// lists and sets element by element, everything else (scalars, atomic lists) taken from
/// the configuration.
pub fn merge(live: &Value, config: &Value, lists: &Lists) -> Value {
    merge_at(Some(live), Some(config), &mut Vec::new(), lists).unwrap_or(Value::Null)
}

fn merge_at(
    l: Option<&Value>,
    r: Option<&Value>,
    fpath: &mut Vec<String>,
    lists: &Lists,
) -> Option<Value> {
    let (l, r) = match (l, r) {
        (l, None) => return l.cloned(),
        (None, r) => return r.cloned(),
        (Some(l), Some(r)) => (l, r),
    };
    match (l, r) {
        (Value::Object(lm), Value::Object(rm)) if !(lm.is_empty() && rm.is_empty()) => {
            let mut out = Map::new();
            for (k, lv) in lm {
                fpath.push(k.clone());
                if let Some(v) = merge_at(Some(lv), rm.get(k), fpath, lists) {
                    out.insert(k.clone(), v);
                }
                fpath.pop();
            }
            for (k, rv) in rm {
                if !lm.contains_key(k) {
                    out.insert(k.clone(), rv.clone());
                }
            }
            Some(Value::Object(out))
        }
        (Value::Array(li), Value::Array(ri)) if !(li.is_empty() && ri.is_empty()) => {
            match (lists.elements(fpath, li), lists.elements(fpath, ri)) {
                (Some(lp), Some(rp)) => {
                    Some(Value::Array(merge_list(li, &lp, ri, &rp, fpath, lists)))
                }
                _ => Some(r.clone()),
            }
        }
        _ => Some(r.clone()),
    }
}

/// Merges two associative lists. Items only in the live list keep their place; items of
/// the configuration come in the configuration's order (upstream's `visitListItems`).
fn merge_list(
    li: &[Value],
    lp: &[PathElement],
    ri: &[Value],
    rp: &[PathElement],
    fpath: &mut Vec<String>,
    lists: &Lists,
) -> Vec<Value> {
    let lpos: BTreeMap<&PathElement, usize> = lp.iter().enumerate().map(|(i, p)| (p, i)).collect();
    let rpos: BTreeMap<&PathElement, usize> = rp.iter().enumerate().map(|(i, p)| (p, i)).collect();
    let mut shared = rp.iter().filter(|p| lpos.contains_key(p));
    let mut next_shared = shared.next();
    let mut emitted: Vec<&PathElement> = Vec::new();
    let mut out = Vec::with_capacity(li.len().max(ri.len()));
    let merged = |pe: &PathElement, fpath: &mut Vec<String>| {
        let l = lpos.get(pe).map(|&i| &li[i]);
        let r = rpos.get(pe).map(|&i| &ri[i]);
        merge_at(l, r, fpath, lists)
    };
    let (mut i, mut j) = (0, 0);
    while i < lp.len() || j < rp.len() {
        if i < lp.len() && j < rp.len() {
            if lp[i] == rp[j] {
                emitted.push(&rp[j]);
                out.extend(merged(&lp[i], fpath));
                i += 1;
                j += 1;
                next_shared = shared.next();
                continue;
            }
            if rpos.contains_key(&lp[i]) && next_shared.is_some_and(|n| *n != lp[i]) {
                i += 1;
                continue;
            }
        }
        if i < lp.len() {
            if !rpos.contains_key(&lp[i]) {
                out.push(li[i].clone());
                i += 1;
                continue;
            } else if emitted.contains(&&lp[i]) {
                i += 1;
            }
        }
        if j < rp.len() {
            emitted.push(&rp[j]);
            out.extend(merged(&rp[j], fpath));
            if next_shared.is_some_and(|n| *n == rp[j]) {
                next_shared = shared.next();
            }
            j += 1;
        }
    }
    out
}

/// Removes the member paths of `set` from `obj`. An object or list emptied by the removal
/// goes too, as upstream's typed objects drop empty maps and lists.
pub fn remove(obj: &mut Value, set: &Set, lists: &Lists) {
    remove_at(obj, set, &mut Vec::new(), lists);
}

/// Returns true when `v` was emptied.
fn remove_at(v: &mut Value, set: &Set, fpath: &mut Vec<String>, lists: &Lists) -> bool {
    match v {
        Value::Object(m) => {
            if m.is_empty() {
                return false;
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let pe = PathElement::Field(k.clone());
                if set.has_member(&pe) {
                    m.shift_remove(&k);
                } else if let Some(sub) = set.child(&pe) {
                    fpath.push(k.clone());
                    let emptied = m
                        .get_mut(&k)
                        .is_some_and(|c| remove_at(c, sub, fpath, lists));
                    fpath.pop();
                    if emptied {
                        m.shift_remove(&k);
                    }
                }
            }
            m.is_empty()
        }
        Value::Array(items) => {
            if items.is_empty() {
                return false;
            }
            let Some(pes) = lists.elements(fpath, items) else {
                return false;
            };
            let mut kept = Vec::with_capacity(items.len());
            for (pe, mut item) in pes.into_iter().zip(std::mem::take(items)) {
                if set.has_member(&pe) {
                    continue;
                }
                if let Some(sub) = set.child(&pe) {
                    remove_at(&mut item, sub, fpath, lists);
                }
                kept.push(item);
            }
            *items = kept;
            items.is_empty()
        }
        _ => false,
    }
}
