//! `/openapi/v3`: the index of group-version documents and the documents themselves, with
//! the content hash kubectl caches them by. The documents are built by
//! `crate::api::schema` from k8s-openapi's types, on the first request.

use crate::api::{resources, schema};
use serde_json::{json, Map};
use std::collections::BTreeMap;
use std::sync::OnceLock;

struct Docs {
    index: Vec<u8>,
    /// Path (`api/v1`, `apis/apps/v1`) → (document, uppercase hex SHA-512 of it).
    by_path: BTreeMap<String, (&'static [u8], String)>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut by_path = BTreeMap::new();
        let mut index = Map::new();
        for (g, v) in resources::groups() {
            let Some(body) = schema::group_version_document(g, v) else {
                continue;
            };
            let path = gv_path(g, v);
            let digest = ring::digest::digest(&ring::digest::SHA512, body);
            let hash: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
            index.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            by_path.insert(path, (body, hash));
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
        .map(|(body, hash)| (body.to_vec(), hash.as_str()))
}
