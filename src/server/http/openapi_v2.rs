//! `/openapi/v2` in the protobuf form client-go asks for (gnostic's `openapi.v2.Document`).
//! kubectl up to 1.28 reads it to learn that the server validates fields itself
//! (a PATCH operation per kind with its `x-kubernetes-group-version-kind` and a
//! `fieldValidation` query parameter) and, with definitions, for `kubectl explain`.
//!
//! The document is built as Swagger 2.0 JSON and then encoded with a small protobuf
//! writer; field numbers follow gnostic's OpenAPIv2.proto.

use crate::api::resources::{self, Resource};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// Content type of the protobuf document as upstream serves it (clients cannot parse
/// the `...spec.v2@v1.0+protobuf` name they ask for as a media type).
pub const PROTOBUF: &str = "application/octet-stream";

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
}

/// `NamedAny { name, value: Any { yaml } }` for a vendor extension.
fn named_any(name: &str, value: &Value) -> Msg {
    let yaml = serde_yaml_ng::to_string(value).unwrap_or_default();
    let mut any = Msg::default();
    any.string(2, &yaml);
    let mut m = Msg::default();
    m.string(1, name);
    m.message(2, any);
    m
}

fn strings(m: &mut Msg, field: u32, v: &Value) {
    for s in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
        m.string(field, s);
    }
}

fn schema(s: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(1, s["$ref"].as_str().unwrap_or(""));
    m.string(2, s["format"].as_str().unwrap_or(""));
    m.string(4, s["description"].as_str().unwrap_or(""));
    strings(&mut m, 19, &s["required"]);
    if let Some(ap) = s.get("additionalProperties") {
        let mut item = Msg::default();
        match ap {
            Value::Bool(b) => {
                item.key(2, 0);
                item.varint(u64::from(*b));
            }
            other => item.message(1, schema(other)),
        }
        m.message(21, item);
    }
    if let Some(t) = s["type"].as_str() {
        let mut ty = Msg::default();
        ty.string(1, t);
        m.message(22, ty);
    }
    if let Some(items) = s.get("items") {
        let mut it = Msg::default();
        it.message(1, schema(items));
        m.message(23, it);
    }
    for a in s["allOf"].as_array().into_iter().flatten() {
        m.message(24, schema(a));
    }
    if let Some(props) = s["properties"].as_object() {
        let mut p = Msg::default();
        for (k, v) in props {
            let mut named = Msg::default();
            named.string(1, k);
            named.message(2, schema(v));
            p.message(1, named);
        }
        m.message(25, p);
    }
    if let Some(obj) = s.as_object() {
        for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
            m.message(31, named_any(k, v));
        }
    }
    m
}

fn parameter(p: &Value) -> Msg {
    let mut param = Msg::default();
    if p["in"] == "body" {
        let mut body = Msg::default();
        body.string(1, p["description"].as_str().unwrap_or(""));
        body.string(2, p["name"].as_str().unwrap_or(""));
        body.string(3, "body");
        body.boolean(4, p["required"].as_bool().unwrap_or(false));
        body.message(5, schema(&p["schema"]));
        param.message(1, body);
    } else {
        // Query (3) and path (4) parameters share the leading fields we use.
        let mut sub = Msg::default();
        sub.boolean(1, p["required"].as_bool().unwrap_or(false));
        sub.string(2, p["in"].as_str().unwrap_or(""));
        sub.string(3, p["description"].as_str().unwrap_or(""));
        sub.string(4, p["name"].as_str().unwrap_or(""));
        let type_field = if p["in"] == "path" { 5 } else { 6 };
        sub.string(type_field, p["type"].as_str().unwrap_or("string"));
        let mut nonbody = Msg::default();
        nonbody.message(if p["in"] == "path" { 4 } else { 3 }, sub);
        param.message(2, nonbody);
    }
    let mut item = Msg::default();
    item.message(1, param);
    item
}

fn operation(op: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(3, op["description"].as_str().unwrap_or(""));
    m.string(5, op["operationId"].as_str().unwrap_or(""));
    strings(&mut m, 6, &op["produces"]);
    strings(&mut m, 7, &op["consumes"]);
    for p in op["parameters"].as_array().into_iter().flatten() {
        m.message(8, parameter(p));
    }
    let mut responses = Msg::default();
    for (code, r) in op["responses"].as_object().into_iter().flatten() {
        let mut resp = Msg::default();
        resp.string(1, r["description"].as_str().unwrap_or(""));
        let mut value = Msg::default();
        value.message(1, resp);
        let mut named = Msg::default();
        named.string(1, code);
        named.message(2, value);
        responses.message(1, named);
    }
    m.message(9, responses);
    if let Some(obj) = op.as_object() {
        for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
            m.message(13, named_any(k, v));
        }
    }
    m
}

/// Encodes a Swagger 2.0 JSON document as a gnostic `openapi.v2.Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut d = Msg::default();
    d.string(1, doc["swagger"].as_str().unwrap_or("2.0"));
    let mut info = Msg::default();
    info.string(1, doc["info"]["title"].as_str().unwrap_or(""));
    info.string(2, doc["info"]["version"].as_str().unwrap_or(""));
    d.message(2, info);
    let mut paths = Msg::default();
    for (p, item) in doc["paths"].as_object().into_iter().flatten() {
        let mut pi = Msg::default();
        for (verb, field) in [
            ("get", 2),
            ("put", 3),
            ("post", 4),
            ("delete", 5),
            ("patch", 8),
        ] {
            if let Some(op) = item.get(verb) {
                pi.message(field, operation(op));
            }
        }
        for prm in item["parameters"].as_array().into_iter().flatten() {
            pi.message(9, parameter(prm));
        }
        let mut named = Msg::default();
        named.string(1, p);
        named.message(2, pi);
        paths.message(2, named);
    }
    d.message(8, paths);
    if let Some(defs) = doc["definitions"].as_object() {
        let mut dm = Msg::default();
        for (name, s) in defs {
            let mut named = Msg::default();
            named.string(1, name);
            named.message(2, schema(s));
            dm.message(1, named);
        }
        d.message(9, dm);
    }
    d.0
}

fn query(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "type": ty, "uniqueItems": true})
}

fn kind_path(r: &Resource) -> String {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("{base}/{}/{{name}}", r.plural)
    }
}

/// The Swagger 2.0 document: a PATCH operation per served kind, and the definitions
/// `definitions` provides (schema name → JSON schema in Swagger 2.0 form).
pub fn swagger(definitions: Map<String, Value>) -> Value {
    let mut paths = Map::new();
    for r in resources::RESOURCES.iter().filter(|r| !r.ephemeral) {
        let gvk = json!({"group": r.group, "kind": r.kind, "version": r.version});
        let op = json!({
            "description": format!("partially update the specified {}", r.kind),
            "operationId": format!("patch{}", r.kind),
            "consumes": ["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"],
            "produces": ["application/json", "application/yaml"],
            "parameters": [
                {"name": "body", "in": "body", "required": true, "schema": {"type": "object"}},
                query("dryRun", "string"), query("fieldManager", "string"), query("fieldValidation", "string"), query("force", "boolean")
            ],
            "responses": {"200": {"description": "OK"}, "201": {"description": "Created"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
        });
        paths.insert(kind_path(r), json!({"patch": op}));
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": crate::version::git_version()}, "paths": paths, "definitions": definitions})
}

/// The encoded document (built once).
pub fn document() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| encode(&swagger(Map::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_strings_encode_like_protobuf() {
        let mut m = Msg::default();
        m.string(1, "2.0");
        m.varint(300);
        assert_eq!(m.0, [0x0a, 3, b'2', b'.', b'0', 0xac, 0x02]);
    }

    #[test]
    fn document_mentions_every_kind_with_field_validation() {
        let doc = document();
        let text = String::from_utf8_lossy(doc);
        assert!(text.contains("/api/v1/namespaces/{namespace}/pods/{name}"));
        assert!(text.contains("fieldValidation"));
        assert!(text.contains("kind: Deployment"));
    }
}
