//! OpenAPI documents. For now a minimal v3 document per group-version that declares, for
//! every kind, a PATCH operation with its `x-kubernetes-group-version-kind` and the
//! `fieldValidation` parameter: that is what kubectl looks for before it trusts the
//! server to validate fields (so `create -f`/`apply`/`replace` work without
//! `--validate=false`). Full schemas (for `kubectl explain`) arrive with the
//! kubectl-fidelity work.

use crate::api::resources::{self, Resource};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;

struct Doc {
    body: Vec<u8>,
    hash: String,
}

struct Docs {
    index: Vec<u8>,
    by_path: BTreeMap<String, Doc>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn patch_op(r: &Resource) -> Value {
    json!({
        "patch": {
            "operationId": format!("patch{}", r.kind),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            "parameters": [
                {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}
            ],
            "responses": {"200": {"description": "OK"}}
        }
    })
}

fn gv_doc(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    for r in resources::RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = format!("/{}", gv_path(group, version));
        let p = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        paths.insert(p, patch_op(r));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::version::git_version()},
        "paths": paths,
        "components": {"schemas": {}}
    })
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut by_path = BTreeMap::new();
        let mut index = Map::new();
        for (g, v) in resources::groups() {
            let path = gv_path(g, v);
            let body = serde_json::to_vec(&gv_doc(g, v)).unwrap_or_default();
            let digest = ring::digest::digest(&ring::digest::SHA512, &body);
            let hash: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
            index.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            by_path.insert(path, Doc { body, hash });
        }
        Docs {
            index: serde_json::to_vec(&json!({"paths": index})).unwrap_or_default(),
            by_path,
        }
    })
}

/// `/openapi/v3`: the index of group-version documents.
pub fn index() -> Vec<u8> {
    docs().index.clone()
}

/// `/openapi/v3/<gv path>`: a group-version document and its hash.
pub fn document(path: &str) -> Option<(Vec<u8>, &'static str)> {
    docs()
        .by_path
        .get(path)
        .map(|d| (d.body.clone(), d.hash.as_str()))
}
