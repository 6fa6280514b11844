//! Unknown and duplicate fields, reported with upstream's paths (`spec.containers[0].imagee`,
//! map keys as `.key`), as sigs.k8s.io/json's strict decoder reports them.

use super::kinds::REF_PREFIX;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// A schema reduced to what the unknown-field walk needs, in a table of nodes that refer
/// to each other by index (so recursive types like JSONSchemaProps are cycles, not trees).
/// Descriptions are gone: this stays around for every write and is a fraction of the size
/// of the JSON schemas it comes from.
pub(super) struct Shapes {
    nodes: Vec<Node>,
    by_name: HashMap<String, u32>,
}

enum Node {
    /// Scalars, free-form objects (RawExtension, FieldsV1, JSON) and
    /// `x-kubernetes-preserve-unknown-fields`: nothing below is unknown.
    Any,
    /// A struct: its fields sorted by name.
    Object(Box<[(Box<str>, u32)]>),
    /// A map: the schema of every value.
    Map(u32),
    /// A list: the schema of every item.
    Array(u32),
    /// Depends on the value's JSON type: the node for an object and the one for an array
    /// (`oneOf` schemas like JSONSchemaPropsOrArray, and references to named schemas).
    ByType(Option<u32>, Option<u32>),
}

impl Shapes {
    /// Compiles the component schemas `defs` (keyed by name, `$ref`s into them).
    pub(super) fn compile(defs: &Map<String, Value>) -> Shapes {
        let mut shapes = Shapes {
            nodes: Vec::with_capacity(defs.len() * 4),
            by_name: HashMap::with_capacity(defs.len()),
        };
        // Named schemas first, so a reference can point at one not compiled yet.
        for name in defs.keys() {
            shapes
                .by_name
                .insert(name.clone(), shapes.nodes.len() as u32);
            shapes.nodes.push(Node::Any);
        }
        for (name, schema) in defs {
            let node = shapes.node(defs, schema);
            let i = shapes.by_name[name] as usize;
            shapes.nodes[i] = node;
        }
        shapes.nodes.shrink_to_fit();
        shapes
    }

    fn add(&mut self, defs: &Map<String, Value>, schema: &Value) -> u32 {
        if let Some(i) = reference(schema).and_then(|n| self.by_name.get(n)) {
            return *i;
        }
        let node = self.node(defs, schema);
        self.nodes.push(node);
        (self.nodes.len() - 1) as u32
    }

    fn node(&mut self, defs: &Map<String, Value>, schema: &Value) -> Node {
        if let Some(name) = reference(schema) {
            // Only a named schema's body is a bare reference to another one.
            return match defs.get(name) {
                Some(target) => self.node(defs, target),
                None => Node::Any,
            };
        }
        if let Some(first) = schema.get("allOf").and_then(|a| a.get(0)) {
            return match reference(first).and_then(|n| self.by_name.get(n)) {
                Some(&i) => self.alias(i),
                None => self.node(defs, first),
            };
        }
        if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            return Node::Any;
        }
        if let Some(alts) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Value::as_array)
        {
            let of = |want: &str| {
                alts.iter().find(|a| {
                    let a = resolve(defs, a);
                    a.get("type").and_then(Value::as_str) == Some(want)
                        || (want == "object" && a.get("properties").is_some())
                })
            };
            let (object, array) = (of("object"), of("array"));
            return Node::ByType(
                object.map(|a| self.add(defs, a)),
                array.map(|a| self.add(defs, a)),
            );
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            let mut fields: Vec<(Box<str>, u32)> = props
                .iter()
                .map(|(name, s)| (name.as_str().into(), self.add(defs, s)))
                .collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            return Node::Object(fields.into_boxed_slice());
        }
        if let Some(values) = schema.get("additionalProperties").filter(|s| s.is_object()) {
            return Node::Map(self.add(defs, values));
        }
        if let Some(items) = schema.get("items") {
            return Node::Array(self.add(defs, items));
        }
        Node::Any
    }

    /// A node that behaves like named node `i` (which may not be compiled yet).
    fn alias(&mut self, i: u32) -> Node {
        Node::ByType(Some(i), Some(i))
    }

    /// Appends to `out` the paths of fields in `value` that the schema named `name` does
    /// not declare. `false` when there is no such schema.
    pub(super) fn unknown(&self, name: &str, value: &Value, out: &mut Vec<String>) -> bool {
        let Some(&root) = self.by_name.get(name) else {
            return false;
        };
        self.walk(root, value, &mut String::new(), out);
        true
    }

    fn walk(&self, node: u32, value: &Value, path: &mut String, out: &mut Vec<String>) {
        match (&self.nodes[node as usize], value) {
            (Node::ByType(object, _), Value::Object(_))
            | (Node::ByType(_, object), Value::Array(_)) => {
                if let Some(n) = object {
                    self.walk(*n, value, path, out);
                }
            }
            (Node::Object(fields), Value::Object(obj)) => {
                for (k, v) in obj {
                    let len = path.len();
                    push_key(path, k);
                    match fields.binary_search_by(|(name, _)| name.as_ref().cmp(k.as_str())) {
                        Ok(i) => self.walk(fields[i].1, v, path, out),
                        Err(_) => out.push(path.clone()),
                    }
                    path.truncate(len);
                }
            }
            (Node::Map(values), Value::Object(obj)) => {
                for (k, v) in obj {
                    let len = path.len();
                    push_key(path, k);
                    self.walk(*values, v, path, out);
                    path.truncate(len);
                }
            }
            (Node::Array(items), Value::Array(list)) => {
                for (i, v) in list.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.walk(*items, v, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
}

/// The component a `{"$ref": ...}` schema names.
fn reference(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix(REF_PREFIX)
}

/// Follows `$ref` and single-alternative `allOf` wrappers to the schema itself.
fn resolve<'a>(defs: &'a Map<String, Value>, mut schema: &'a Value) -> &'a Value {
    // Generated schemas never chain references in a loop; the bound guards a bad table.
    for _ in 0..16 {
        if let Some(name) = reference(schema) {
            match defs.get(name) {
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
