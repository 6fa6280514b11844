//! Resource requests: one generic handler per verb, driven by the resource table and the
//! registry. Subresources (status, scale, binding, eviction, finalize) map onto the same
//! registry operations.

use super::auth::Identity;
use super::body::{self, error_response, json_bytes, json_response, Resp};
use super::request::{Query, RequestInfo};
use super::{table, watch, AppState};
use crate::api::patch::{PatchType, PATCH_MEDIA_TYPES};
use crate::api::resources::{self, Resource};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::status::ApiError;
use crate::server::registry::{
    check_fields, DeleteOptions, FieldValidation, ListOptions, StoredObject, Target, WriteOptions,
};
use http::{header, HeaderMap, Method, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;

/// How the client wants objects encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// JSON objects.
    Json,
    /// YAML objects.
    Yaml,
    /// meta.k8s.io Tables of the given version.
    Table(&'static str),
}

/// Picks the response encoding from the Accept header.
pub fn negotiate(accept: &str) -> Result<Encoding, ApiError> {
    if accept.trim().is_empty() {
        return Ok(Encoding::Json);
    }
    if let Some(v) = table::wants_table(accept) {
        return Ok(Encoding::Table(v));
    }
    let mut yaml = false;
    for m in accept.split(',') {
        let base = m.split(';').next().unwrap_or("").trim();
        match base {
            "application/json" | "*/*" | "application/*" | "application/json-seq" => {
                return Ok(Encoding::Json)
            }
            "application/yaml" => yaml = true,
            _ => {}
        }
    }
    if yaml {
        return Ok(Encoding::Yaml);
    }
    Err(ApiError::not_acceptable(&[
        "application/json",
        "application/yaml",
    ]))
}

pub(super) fn encode_value(code: StatusCode, v: &Value, enc: Encoding) -> Resp {
    match enc {
        Encoding::Yaml => match serde_yaml_ng::to_string(v) {
            Ok(s) => body::bytes_response(code, "application/yaml", s),
            Err(e) => error_response(&ApiError::internal(format!("encoding YAML: {e}"))),
        },
        _ => json_response(code, v),
    }
}

/// Handles a request for a resource.
pub async fn handle(
    state: Arc<AppState>,
    who: Identity,
    method: Method,
    headers: HeaderMap,
    info: RequestInfo,
    query: Query,
    body: Incoming,
) -> Resp {
    let write = match write_options(&query) {
        Ok(mut w) => {
            w.user_agent_manager = crate::api::apply::manager_from_user_agent(header_str(
                &headers,
                header::USER_AGENT,
            ));
            w.node = crate::server::rbac::node::node_name(&who).map(str::to_string);
            w
        }
        Err(e) => return error_response(&e),
    };
    let mut resp =
        match handle_inner(&state, &who, &method, &headers, &info, &query, body, &write).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
    if let Ok(warnings) = write.warnings.lock() {
        for w in warnings.iter() {
            // Upstream's format: 299 - "<text>" (Go %q quoting).
            if let Ok(v) = http::HeaderValue::from_str(&format!("299 - {w:?}")) {
                resp.headers_mut().append(http::header::WARNING, v);
            }
        }
    }
    resp
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[allow(clippy::too_many_arguments)]
async fn handle_inner(
    state: &Arc<AppState>,
    who: &Identity,
    method: &Method,
    headers: &HeaderMap,
    info: &RequestInfo,
    query: &Query,
    body: Incoming,
    write: &WriteOptions,
) -> Result<Resp, ApiError> {
    let served = resources::find(&info.group, &info.version, &info.resource)
        .ok_or_else(ApiError::no_route)?;
    // A version served by conversion works on the stored version's entry; bodies are
    // converted on the way in (`stored`) and answers on the way out (`out`).
    let res = resources::stored(served);
    let conv = served.conversion;
    let stored = |v: Value| match conv {
        Some(c) => (c.to_stored)(v),
        None => v,
    };
    let out = |v: Value| match conv {
        Some(c) if v["kind"] == served.kind => (c.from_stored)(v),
        _ => v,
    };
    if !res.namespaced && !info.namespace.is_empty() {
        return Err(ApiError::no_route());
    }
    if res.namespaced && info.namespace.is_empty() && !matches!(info.verb, "list" | "watch") {
        return Err(ApiError::no_route());
    }
    if info.verb.is_empty() {
        return Err(ApiError::method_not_allowed(method.as_str(), res.plural));
    }
    let enc = negotiate(header_str(headers, header::ACCEPT))?;
    let ns = info.namespace.as_str();
    let content_type = header_str(headers, header::CONTENT_TYPE).to_string();
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());

    if !info.subresource.is_empty() {
        let sub = res
            .subresource(&info.subresource)
            .ok_or_else(ApiError::no_route)?;
        if !sub.verbs.contains(&info.verb) {
            return Err(ApiError::method_not_allowed(
                info.verb,
                &format!("{}/{}", res.plural, sub.name),
            ));
        }
        let reg = &state.registry;
        return match (sub.name, info.verb) {
            ("status", "get") => Ok(encode_value(
                StatusCode::OK,
                &out(reg.get(res, ns, &info.name).await?.value()?),
                enc,
            )),
            ("status", "update") => {
                let obj = body::decode_object(
                    &body::read_body(body, declared_len).await?,
                    &content_type,
                )?;
                Ok(encode_value(
                    StatusCode::OK,
                    &out(reg
                        .update(res, ns, &info.name, stored(obj), Target::Status, write)
                        .await?),
                    enc,
                ))
            }
            ("status", "patch") => {
                let ptype = patch_type(&content_type)?;
                let patch = body::decode_object(
                    &body::read_body(body, declared_len).await?,
                    patch_body_type(ptype, &content_type),
                )?;
                let (patched, _) = super::convert::patch_or_create(
                    reg,
                    served,
                    ns,
                    &info.name,
                    ptype,
                    &patch,
                    Target::Status,
                    write,
                )
                .await?;
                Ok(encode_value(StatusCode::OK, &patched, enc))
            }
            ("scale", verb) => {
                super::subresources::scale(
                    state,
                    res,
                    ns,
                    &info.name,
                    verb,
                    body,
                    declared_len,
                    &content_type,
                    write,
                    enc,
                )
                .await
            }
            ("binding", _) => {
                let obj = body::decode_object(
                    &body::read_body(body, declared_len).await?,
                    &content_type,
                )?;
                super::subresources::bind(state, res, ns, &info.name, &obj, write).await
            }
            ("eviction", _) => {
                let obj = body::decode_object(
                    &body::read_body(body, declared_len).await?,
                    &content_type,
                )?;
                let mut opts = delete_options(query, Some(&obj["deleteOptions"]))?;
                opts.dry_run |= write.dry_run;
                crate::server::controllers::disruption::evict(reg, ns, &info.name, &opts).await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            ("token", "create") => {
                let obj = body::decode_object(
                    &body::read_body(body, declared_len).await?,
                    &content_type,
                )?;
                let sa = &state.service_accounts;
                let answer = crate::server::serviceaccount::token_request::create(
                    reg, &sa.signer, ns, &info.name, obj,
                )
                .await?;
                Ok(encode_value(StatusCode::CREATED, &answer, enc))
            }
            ("approval", "get") => Ok(encode_value(
                StatusCode::OK,
                &reg.get(res, ns, &info.name).await?.value()?,
                enc,
            )),
            ("approval", "update") => {
                let obj = body::decode_object(
                    &body::read_body(body, declared_len).await?,
                    &content_type,
                )?;
                let v = crate::server::serviceaccount::csr::update_approval(reg, &info.name, &obj)
                    .await?;
                Ok(encode_value(StatusCode::OK, &v, enc))
            }
            ("finalize", _) => {
                let obj = body::decode_object(
                    &body::read_body(body, declared_len).await?,
                    &content_type,
                )?;
                let finalizers = obj["spec"]["finalizers"].clone();
                let v = reg
                    .update_with(res, ns, &info.name, |o| {
                        if let Some(m) = o.as_object_mut() {
                            let spec = m.entry("spec").or_insert_with(|| json!({}));
                            if finalizers.is_null() {
                                if let Some(s) = spec.as_object_mut() {
                                    s.remove("finalizers");
                                }
                            } else {
                                spec["finalizers"] = finalizers.clone();
                            }
                        }
                        Ok(())
                    })
                    .await?;
                Ok(encode_value(StatusCode::OK, &v, enc))
            }
            _ => Err(ApiError::method_not_allowed(
                info.verb,
                &format!("{}/{}", res.plural, sub.name),
            )),
        };
    }

    if !res.allows(info.verb) {
        return Err(ApiError::method_not_allowed(info.verb, res.plural));
    }
    let reg = &state.registry;
    match info.verb {
        "get" => {
            let obj = reg.get(res, ns, &info.name).await?;
            match conv {
                Some(_) if !matches!(enc, Encoding::Table(_)) => {
                    Ok(encode_value(StatusCode::OK, &out(obj.value()?), enc))
                }
                _ => respond_object(res, &obj, enc, query),
            }
        }
        "list" => {
            let opts = list_options(res, query, false)?;
            list(state, served, ns, &opts, enc, query).await
        }
        "watch" => {
            let opts = list_options(res, query, true)?;
            watch::serve(state.clone(), served, ns.to_string(), opts, query, enc).await
        }
        "create" => {
            let raw = body::read_body(body, declared_len).await?;
            let mut obj = body::decode_object(&raw, &content_type)?;
            if res.plural == "certificatesigningrequests" {
                crate::server::serviceaccount::csr::prepare_for_create(&mut obj, who)?;
            }
            if res.kind == "TokenReview" {
                let answered = super::token_review::answer(&state.authn, obj).await;
                return Ok(encode_value(StatusCode::CREATED, &answered, enc));
            }
            if res.ephemeral {
                let answered = super::reviews::answer(&state.authz, res, who, ns, obj)?;
                return Ok(encode_value(StatusCode::CREATED, &answered, enc));
            }
            let raw_json = (!content_type.contains("yaml") && !content_type.contains("protobuf"))
                .then_some(&raw[..]);
            check_fields(served, &obj, raw_json, None, write)?;
            let created = reg.create(res, ns, stored(obj), write).await?;
            Ok(encode_value(StatusCode::CREATED, &out(created), enc))
        }
        "update" => {
            let raw = body::read_body(body, declared_len).await?;
            let obj = body::decode_object(&raw, &content_type)?;
            let raw_json = (!content_type.contains("yaml") && !content_type.contains("protobuf"))
                .then_some(&raw[..]);
            check_fields(served, &obj, raw_json, None, write)?;
            let updated = reg
                .update(res, ns, &info.name, stored(obj), Target::Main, write)
                .await?;
            Ok(encode_value(StatusCode::OK, &out(updated), enc))
        }
        "patch" => {
            let ptype = patch_type(&content_type)?;
            let patch = body::decode_object(
                &body::read_body(body, declared_len).await?,
                patch_body_type(ptype, &content_type),
            )?;
            let (patched, created) = super::convert::patch_or_create(
                reg,
                served,
                ns,
                &info.name,
                ptype,
                &patch,
                Target::Main,
                write,
            )
            .await?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(encode_value(code, &patched, enc))
        }
        "delete" => {
            let opts = delete_request(query, write, body, declared_len, &content_type).await?;
            let d = reg.delete(res, ns, &info.name, &opts).await?;
            Ok(encode_value(StatusCode::OK, &out(d.object), enc))
        }
        "deletecollection" => {
            let opts = delete_request(query, write, body, declared_len, &content_type).await?;
            let lopts = list_options(res, query, false)?;
            let deleted: Vec<Value> = reg
                .delete_collection(res, ns, &lopts, &opts)
                .await?
                .into_iter()
                .map(out)
                .collect();
            let list = json!({"kind": served.list_kind(), "apiVersion": served.api_version(), "metadata": {"resourceVersion": state.registry.store().current_revision().to_string()}, "items": deleted});
            Ok(encode_value(StatusCode::OK, &list, enc))
        }
        _ => Err(ApiError::method_not_allowed(info.verb, res.plural)),
    }
}

pub(super) fn patch_type(content_type: &str) -> Result<PatchType, ApiError> {
    PatchType::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(PATCH_MEDIA_TYPES))
}

/// Apply patches may be YAML; every other patch type is JSON.
fn patch_body_type(ptype: PatchType, content_type: &str) -> &str {
    if ptype == PatchType::Apply {
        content_type
    } else {
        "application/json"
    }
}

fn write_options(q: &Query) -> Result<WriteOptions, ApiError> {
    let mut dry_run = false;
    for v in q.all("dryRun") {
        match v {
            "All" => dry_run = true,
            "" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value: {other:?}: supported values: \"All\""
                )))
            }
        }
    }
    let field_validation = match q.get("fieldValidation").unwrap_or("") {
        "" | "Warn" => FieldValidation::Warn,
        "Ignore" => FieldValidation::Ignore,
        "Strict" => FieldValidation::Strict,
        fv => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {fv:?}"
            )))
        }
    };
    let force = match q.get("force") {
        None => None,
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Some(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid value for force: {other:?}: must be true or false"
            )))
        }
    };
    Ok(WriteOptions {
        dry_run,
        field_validation,
        field_manager: q.get("fieldManager").unwrap_or("").to_string(),
        force,
        ..WriteOptions::default()
    })
}

/// Parses list and watch parameters.
pub fn list_options(res: &Resource, q: &Query, watch: bool) -> Result<ListOptions, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    for f in fields.fields() {
        if !res.supports_field(f) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {f}"
            )));
        }
    }
    let limit = match q.get("limit") {
        None | Some("") => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?
            .max(0) as usize,
    };
    if !watch && q.get("sendInitialEvents").is_some() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![crate::api::FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            )],
        ));
    }
    let continue_token = q
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Ok(ListOptions {
        labels,
        fields,
        limit: if watch { 0 } else { limit },
        continue_token,
    })
}

/// Reads the optional `DeleteOptions` body and merges it with the query.
async fn delete_request(
    query: &Query,
    write: &WriteOptions,
    body: Incoming,
    declared_len: Option<u64>,
    content_type: &str,
) -> Result<DeleteOptions, ApiError> {
    let raw = body::read_body(body, declared_len).await?;
    let opts_body = if raw.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(body::decode_object(&raw, content_type)?)
    };
    let mut opts = delete_options(query, opts_body.as_ref())?;
    opts.dry_run |= write.dry_run;
    Ok(opts)
}

fn delete_options(q: &Query, body: Option<&Value>) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions::default();
    if let Some(b) = body.filter(|b| b.is_object()) {
        o.uid = b["preconditions"]["uid"].as_str().map(str::to_string);
        o.resource_version = b["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        o.grace_period = b["gracePeriodSeconds"].as_i64();
        o.propagation = b["propagationPolicy"].as_str().map(str::to_string);
        if b["orphanDependents"].as_bool() == Some(true) {
            o.propagation = Some("Orphan".into());
        }
        o.dry_run = b["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    }
    if let Some(g) = q.get("gracePeriodSeconds") {
        o.grace_period =
            Some(g.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds: {g:?}"))
            })?);
    }
    if let Some(p) = q.get("propagationPolicy") {
        o.propagation = Some(p.to_string());
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Background" | "Foreground" | "Orphan") {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![crate::api::FieldError::not_supported(
                    "propagationPolicy",
                    &json!(p),
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            ));
        }
    }
    Ok(o)
}

fn respond_object(
    res: &Resource,
    obj: &StoredObject,
    enc: Encoding,
    q: &Query,
) -> Result<Resp, ApiError> {
    match enc {
        Encoding::Json => Ok(json_bytes(StatusCode::OK, obj.json_bytes())),
        Encoding::Yaml => Ok(encode_value(StatusCode::OK, &obj.value()?, enc)),
        Encoding::Table(mv) => {
            let include = table::IncludeObject::parse(q.get("includeObject"))
                .map_err(ApiError::bad_request)?;
            let v = obj.value()?;
            let rows = vec![table::row(res, &v, include, mv)];
            Ok(json_response(
                StatusCode::OK,
                &table::table(res, rows, &obj.revision.to_string(), None, mv, true),
            ))
        }
    }
}

async fn list(
    state: &Arc<AppState>,
    served: &'static Resource,
    ns: &str,
    opts: &ListOptions,
    enc: Encoding,
    q: &Query,
) -> Result<Resp, ApiError> {
    if q.get("resourceVersionMatch").is_some_and(|m| !m.is_empty())
        && q.get("resourceVersion").is_none_or(|rv| rv.is_empty())
    {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![crate::api::FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )],
        ));
    }
    let res = resources::stored(served);
    let page = state.registry.list(res, ns, opts).await?;
    let rv = page.revision.to_string();
    if let (Some(c), Encoding::Json | Encoding::Yaml) = (served.conversion, enc) {
        let items: Result<Vec<Value>, ApiError> = page
            .items
            .iter()
            .map(|i| i.value().map(c.from_stored))
            .collect();
        let mut list = json!({"kind": served.list_kind(), "apiVersion": served.api_version(), "metadata": {"resourceVersion": rv}, "items": items?});
        if let Some(t) = &page.continue_token {
            list["metadata"]["continue"] = json!(t);
        }
        return Ok(encode_value(StatusCode::OK, &list, enc));
    }
    match enc {
        Encoding::Table(mv) => {
            let include = table::IncludeObject::parse(q.get("includeObject"))
                .map_err(ApiError::bad_request)?;
            let mut rows = Vec::with_capacity(page.items.len());
            for item in &page.items {
                rows.push(table::row(res, &item.value()?, include, mv));
            }
            Ok(json_response(
                StatusCode::OK,
                &table::table(res, rows, &rv, page.continue_token.as_deref(), mv, true),
            ))
        }
        Encoding::Yaml => {
            let items: Result<Vec<Value>, ApiError> =
                page.items.iter().map(StoredObject::value).collect();
            let mut list = json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": {"resourceVersion": rv}, "items": items?});
            if let Some(c) = &page.continue_token {
                list["metadata"]["continue"] = json!(c);
            }
            Ok(encode_value(StatusCode::OK, &list, enc))
        }
        Encoding::Json => {
            // Splice stored bytes into the list without decoding each object.
            let mut meta = json!({"resourceVersion": rv});
            if let Some(c) = &page.continue_token {
                meta["continue"] = json!(c);
                if let Some(r) = page.remaining {
                    meta["remainingItemCount"] = json!(r);
                }
            }
            let total: usize = page.items.iter().map(|i| i.bytes.len() + 40).sum();
            let mut out = Vec::with_capacity(total + 128);
            out.extend_from_slice(
                format!(
                    "{{\"kind\":{:?},\"apiVersion\":{:?},\"metadata\":{},\"items\":[",
                    res.list_kind(),
                    res.api_version(),
                    meta
                )
                .as_bytes(),
            );
            for (i, item) in page.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&item.json_bytes());
            }
            out.extend_from_slice(b"]}");
            Ok(json_bytes(StatusCode::OK, out))
        }
    }
}
