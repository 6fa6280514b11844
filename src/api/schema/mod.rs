//! Schemas of the served kinds, generated from k8s-openapi's types (its `schemars` impls):
//! the OpenAPI v3 documents `/openapi/v3/<gv>` serves, and the unknown and duplicate field
//! checks behind `fieldValidation`. Both are built on first use and kept: a server that
//! nobody asks for OpenAPI or writes to never pays for them.

mod document;
mod fields;
mod kinds;

#[cfg(test)]
mod tests;

use crate::api::resources;
use serde_json::Value;
use std::sync::OnceLock;

struct GvDoc {
    group: &'static str,
    version: &'static str,
    body: OnceLock<Box<[u8]>>,
}

/// The OpenAPI v3 document for one served group-version (`""`/`v1` is `api/v1`): paths
/// with get/put/patch/delete (and list/create/deletecollection, status and scale)
/// operations per kind, the patch operations carrying the kind's GVK and the
/// fieldValidation/dryRun/fieldManager/force parameters, and `components.schemas` for
/// every type reachable from the kinds, with descriptions and GVK extensions.
pub fn group_version_document(group: &str, version: &str) -> Option<&'static [u8]> {
    static DOCS: OnceLock<Vec<GvDoc>> = OnceLock::new();
    let docs = DOCS.get_or_init(|| {
        resources::groups()
            .into_iter()
            .map(|(group, version)| GvDoc {
                group,
                version,
                body: OnceLock::new(),
            })
            .collect()
    });
    let doc = docs
        .iter()
        .find(|d| d.group == group && d.version == version)?;
    let body = doc.body.get_or_init(|| {
        // Serializing a `Value` cannot fail.
        serde_json::to_vec(&document::build(doc.group, doc.version))
            .unwrap_or_default()
            .into_boxed_slice()
    });
    Some(body)
}

/// Schemas of every kind reduced to what the unknown-field walk reads.
fn shapes() -> &'static fields::Shapes {
    static SHAPES: OnceLock<fields::Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| {
        let mut generator = kinds::generator();
        for k in kinds::KINDS {
            k.add_to(&mut generator);
        }
        fields::Shapes::compile(&generator.take_definitions(true))
    })
}

/// Fields of `obj` (an object of this kind) that its schema does not declare, as upstream
/// prints them: `spec.foo`, `spec.containers[0].imagee`, map keys as `.key`, in document
/// order. Inside an unknown field nothing more is reported. Free-form fields (RawExtension,
/// JSON, `metadata.managedFields[*].fieldsV1`) accept anything. Kinds without a schema
/// have no unknown fields.
pub fn unknown_fields(group: &str, version: &str, kind: &str, obj: &Value) -> Vec<String> {
    let Some(k) = kinds::find(group, version, kind) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    shapes().unknown(&(k.name)(), obj, &mut out);
    out
}

/// Keys that occur more than once in one JSON object of `raw_json`, as paths like
/// `metadata.name`, in document order (a parsed `Value` keeps only the last, so this needs
/// the request body). Empty when `raw_json` is empty or not JSON.
pub fn duplicate_fields(raw_json: &[u8]) -> Vec<String> {
    if raw_json.is_empty() {
        return Vec::new();
    }
    fields::duplicates(raw_json)
}
