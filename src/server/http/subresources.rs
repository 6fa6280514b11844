//! Subresources that are not plain parts of an object: `scale` (autoscaling/v1 Scale
//! over a workload's replicas) and pods' `binding`.

use super::body::{self, json_response, Resp};
use super::handlers::{encode_value, patch_type, Encoding};
use super::AppState;
use crate::api::meta;
use crate::api::patch::{PatchType, PATCH_MEDIA_TYPES};
use crate::api::resources::Resource;
use crate::api::selector::LabelSelector;
use crate::api::status::{self, ApiError};
use crate::server::registry::{Target, WriteOptions};
use http::StatusCode;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;

/// The label selector of a workload in upstream's string form (Scale.status.selector).
fn selector_string(res: &Resource, obj: &Value) -> String {
    let sel = &obj["spec"]["selector"];
    let parsed = if res.plural == "replicationcontrollers" {
        sel.as_object().map(|m| Ok(LabelSelector::from_map(m)))
    } else {
        Some(LabelSelector::from_json(sel))
    };
    match parsed {
        Some(Ok(s)) => s.to_string(),
        _ => String::new(),
    }
}

fn scale_of(res: &Resource, obj: &Value) -> Value {
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector_string(res, obj)},
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn scale(
    state: &Arc<AppState>,
    res: &Resource,
    ns: &str,
    name: &str,
    verb: &str,
    body: Incoming,
    declared_len: Option<u64>,
    content_type: &str,
    write: &WriteOptions,
    enc: Encoding,
) -> Result<Resp, ApiError> {
    let reg = &state.registry;
    let current = reg.get(res, ns, name).await?;
    let obj = current.value()?;
    let sc = scale_of(res, &obj);
    if verb == "get" {
        return Ok(encode_value(StatusCode::OK, &sc, enc));
    }
    let raw = body::read_body(body, declared_len).await?;
    let mut new_scale = sc.clone();
    if verb == "update" {
        new_scale = body::decode_object(&raw, content_type)?;
    } else {
        let patch = body::decode_object(&raw, "application/json")?;
        match patch_type(content_type)? {
            PatchType::Json => crate::api::patch::apply_json_patch(&mut new_scale, &patch)?,
            PatchType::Merge | PatchType::Strategic => {
                crate::api::patch::apply_merge_patch(&mut new_scale, &patch)?
            }
            PatchType::Apply => {
                return Err(ApiError::unsupported_media_type(&PATCH_MEDIA_TYPES[..3]))
            }
        }
    }
    let replicas = new_scale["spec"]["replicas"].as_i64().unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![crate::api::FieldError::invalid(
                "spec.replicas",
                &json!(replicas),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let pinned = new_scale["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(rv) = &pinned {
        if *rv != current.revision.to_string() {
            return Err(ApiError::conflict(res.group, res.plural, name));
        }
    }
    let mut parent = obj.clone();
    parent["spec"]["replicas"] = json!(replicas);
    if pinned.is_none() {
        meta::metadata_mut(&mut parent).remove("resourceVersion");
    }
    let write = WriteOptions {
        subresource: "scale",
        ..write.clone()
    };
    let updated = reg
        .update(res, ns, name, parent, Target::Main, &write)
        .await?;
    Ok(encode_value(StatusCode::OK, &scale_of(res, &updated), enc))
}

pub(super) async fn bind(
    state: &Arc<AppState>,
    res: &Resource,
    ns: &str,
    name: &str,
    binding: &Value,
    write: &WriteOptions,
) -> Result<Resp, ApiError> {
    let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            name,
            vec![crate::api::FieldError::required("target.name")],
        ));
    }
    if write.dry_run {
        return Ok(json_response(
            StatusCode::CREATED,
            &status::success_status("", "pods", name, ""),
        ));
    }
    let _ = res;
    crate::server::scheduler::bind::bind_pod(&state.registry, ns, name, &node).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}
