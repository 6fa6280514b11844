//! Server-side tables (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), the form
//! `kubectl get` prints. Kinds without a printer get upstream's default columns (Name,
//! Created At); per-kind columns come with the kubectl-fidelity work.

use crate::api::resources::Resource;
use serde_json::{json, Value};

/// Whether the Accept header asks for a Table (and which meta.k8s.io version).
pub fn wants_table(accept: &str) -> Option<&'static str> {
    for m in accept.split(',') {
        let params: Vec<&str> = m.split(';').map(str::trim).collect();
        if params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io") {
            if params.contains(&"v=v1") {
                return Some("v1");
            }
            if params.contains(&"v=v1beta1") {
                return Some("v1beta1");
            }
        }
    }
    None
}

/// What each row carries in `object` (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// PartialObjectMetadata (the default).
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` parameter.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!("unrecognized includeObject value: {other:?}")),
        }
    }
}

/// Column definitions for a resource.
pub fn columns(_res: &Resource) -> Value {
    json!([
        {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names", "priority": 0},
        {"name": "Created At", "type": "date", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata", "priority": 0}
    ])
}

/// One row for an object.
pub fn row(_res: &Resource, obj: &Value, include: IncludeObject, meta_version: &str) -> Value {
    let cells = json!([
        obj["metadata"]["name"],
        obj["metadata"]["creationTimestamp"]
    ]);
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{meta_version}"), "metadata": obj["metadata"]});
        }
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

/// A Table of `rows` with list metadata.
pub fn table(
    res: &Resource,
    rows: Vec<Value>,
    resource_version: &str,
    continue_token: Option<&str>,
    meta_version: &str,
    with_columns: bool,
) -> Value {
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{meta_version}"),
        "metadata": meta,
        "columnDefinitions": if with_columns { columns(res) } else { json!([]) },
        "rows": rows,
    })
}
