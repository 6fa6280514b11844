//! Server-side tables (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), the form
//! `kubectl get` prints. Kinds without a printer get upstream's default columns (Name,
//! Created At).

use crate::api::printers;
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

/// Column definitions for a resource (upstream's printer columns, wide ones at priority 1).
pub fn columns(res: &Resource) -> Value {
    Value::Array(printers::columns(res.group, res.plural))
}

/// One row for an object.
pub fn row(res: &Resource, obj: &Value, include: IncludeObject, meta_version: &str) -> Value {
    let cells = printers::cells(res.group, res.plural, obj, jiff::Timestamp::now());
    let mut row = json!({"cells": cells});
    if let Some(c) = printers::conditions(res.group, res.plural, obj) {
        row["conditions"] = c;
    }
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
