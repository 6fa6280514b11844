//! One group-version's OpenAPI v3 document, shaped like kube-apiserver's
//! `/openapi/v3/apis/<group>/<version>`: per resource the collection, item and
//! status/scale paths with their operations (each carrying `x-kubernetes-action` and
//! `x-kubernetes-group-version-kind`), and the component schemas they reference.
//!
//! kubectl reads three things here: a `patch` operation with the kind's GVK and a
//! `fieldValidation` query parameter (then it trusts the server to validate fields),
//! that operation's `application/strategic-merge-patch+json` request body (then it
//! computes apply patches from the schemas' patch extensions), and the schemas
//! themselves, found by their GVK (`kubectl explain`).

use super::kinds::{self, KindType, GVK, REF_PREFIX};
use crate::api::patch::PATCH_MEDIA_TYPES;
use crate::api::resources::{Resource, RESOURCES};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

/// The document for `group`/`version` (no resources there: an empty document).
pub(super) fn build(group: &str, version: &str) -> Value {
    let resources: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    let mut kinds: Vec<&KindType> = Vec::new();
    let mut lists: Vec<&KindType> = Vec::new();
    for r in &resources {
        if let Some(k) = kinds::find(r.group, r.version, r.kind) {
            push_unique(&mut kinds, k);
            push_unique(&mut lists, k);
        }
        for s in r.subresources.iter().filter(|s| served_subresource(s.name)) {
            if let Some(k) = kinds::find(s.group, s.version, s.kind) {
                push_unique(&mut kinds, k);
            }
        }
    }
    let extra: &[fn(&mut SchemaGenerator) -> k8s_openapi::schemars::Schema] = &[
        SchemaGenerator::subschema_for::<meta::DeleteOptions>,
        SchemaGenerator::subschema_for::<meta::Status>,
        SchemaGenerator::subschema_for::<meta::Patch>,
    ];
    let schemas = kinds::definitions(&kinds, &lists, extra);

    let mut paths = Map::new();
    for r in &resources {
        add_paths(&mut paths, r, &schemas);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::version::git_version()},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{"BearerToken": []}],
    })
}

fn push_unique<'a>(v: &mut Vec<&'a KindType>, k: &'a KindType) {
    if !v.iter().any(|x| std::ptr::eq(*x, k)) {
        v.push(k);
    }
}

/// Subresources whose body is a kind with a schema; the others (binding, eviction,
/// finalize, log, exec, ...) are not described.
fn served_subresource(name: &str) -> bool {
    matches!(name, "status" | "scale")
}

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1` (upstream's operationId infix) and the tag
/// (`core_v1`, `rbacAuthorization_v1`).
fn group_names(group: &str, version: &str) -> (String, String) {
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    let parts: Vec<&str> = if trimmed.is_empty() {
        vec!["core"]
    } else {
        trimmed.split('.').collect()
    };
    let camel: String = parts.iter().map(|p| capitalize(p)).collect();
    let tag = format!(
        "{}{}_{version}",
        parts[0],
        parts[1..].iter().map(|p| capitalize(p)).collect::<String>()
    );
    (format!("{camel}{}", capitalize(version)), tag)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn schema_ref(schemas: &Map<String, Value>, name: &str) -> Value {
    if schemas.contains_key(name) {
        json!({"$ref": format!("{REF_PREFIX}{name}")})
    } else {
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
    }
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": ty, "uniqueItems": true},
    })
}

fn path_param(name: &str, description: String) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

const DRY_RUN: &str = "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed";
const FIELD_MANAGER: &str = "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.";
const FIELD_VALIDATION: &str = "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.";
const FORCE: &str = "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.";

fn write_params() -> Vec<Value> {
    vec![
        query("dryRun", "string", DRY_RUN),
        query("fieldManager", "string", FIELD_MANAGER),
        query("fieldValidation", "string", FIELD_VALIDATION),
    ]
}

fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
        ("continue", "string", "The continue option should be set when retrieving more results from the server."),
        ("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        ("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        ("limit", "integer", "limit is a maximum number of responses to return for a list call."),
        ("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
        ("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
        ("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`."),
        ("timeoutSeconds", "integer", "Timeout for the list/watch call."),
        ("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
    ]
    .iter()
    .map(|(n, t, d)| query(n, t, d))
    .collect()
}

fn delete_params() -> Vec<Value> {
    vec![
        query("dryRun", "string", DRY_RUN),
        query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately."),
        query("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7."),
        query("propagationPolicy", "string", "Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', 'Foreground', 'Background'."),
    ]
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": json_content(schema)})
}

struct Op<'a> {
    action: &'static str,
    id: String,
    description: String,
    tag: &'a str,
    gvk: Value,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
}

impl Op<'_> {
    fn into_value(self) -> Value {
        let mut op = json!({
            "tags": [self.tag],
            "description": self.description,
            "operationId": self.id,
            "parameters": self.params,
            "responses": self.responses,
            "x-kubernetes-action": self.action,
            GVK: self.gvk,
        });
        if let Some(body) = self.body {
            op["requestBody"] = body;
        }
        op
    }
}

fn add_paths(paths: &mut Map<String, Value>, r: &Resource, schemas: &Map<String, Value>) {
    let (infix, tag) = group_names(r.group, r.version);
    let prefix = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let ns = if r.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let kind = r.kind;
    let name = kinds::find(r.group, r.version, kind)
        .map(|k| (k.name)().into_owned())
        .unwrap_or_default();
    let obj = schema_ref(schemas, &name);
    let list = schema_ref(schemas, &format!("{name}List"));
    let status = schema_ref(schemas, "io.k8s.apimachinery.pkg.apis.meta.v1.Status");
    let gvk = kinds::gvk(r.group, r.version, kind);
    let unauthorized = json!({"description": "Unauthorized"});
    let ns_param = || {
        path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects".into(),
        )
    };
    let pretty = query(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    );
    let mut common = vec![pretty.clone()];
    if r.namespaced {
        common.insert(0, ns_param());
    }
    let create_body = json!({"content": {"*/*": {"schema": obj.clone()}}, "required": true});
    let delete_body = json!({"content": {"*/*": {"schema": schema_ref(schemas, "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")}}});
    let patch_body = {
        let patch = schema_ref(schemas, "io.k8s.apimachinery.pkg.apis.meta.v1.Patch");
        let content: Map<String, Value> = PATCH_MEDIA_TYPES
            .iter()
            .map(|m| (m.to_string(), json!({"schema": patch.clone()})))
            .collect();
        json!({"content": content, "required": true})
    };

    // Collection: list, create, delete collection.
    let mut collection = Map::new();
    collection.insert("parameters".into(), json!(common));
    if r.allows("list") {
        let mut params = list_params();
        params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        collection.insert(
            "get".into(),
            Op {
                action: "list",
                id: format!("list{infix}{scope}{kind}"),
                description: format!("list or watch objects of kind {kind}"),
                tag: &tag,
                gvk: gvk.clone(),
                params,
                body: None,
                responses: json!({"200": response("OK", list.clone()), "401": unauthorized}),
            }
            .into_value(),
        );
    }
    if r.allows("create") {
        collection.insert(
            "post".into(),
            Op {
                action: "post",
                id: format!("create{infix}{scope}{kind}"),
                description: format!("create {} {kind}", article(kind)),
                tag: &tag,
                gvk: gvk.clone(),
                params: write_params(),
                body: Some(create_body.clone()),
                responses: json!({
                    "200": response("OK", obj.clone()),
                    "201": response("Created", obj.clone()),
                    "202": response("Accepted", obj.clone()),
                    "401": unauthorized,
                }),
            }
            .into_value(),
        );
    }
    if r.allows("deletecollection") {
        let mut params = delete_params();
        params.extend(
            list_params()
                .into_iter()
                .filter(|p| p["name"] != "allowWatchBookmarks" && p["name"] != "watch"),
        );
        params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        collection.insert(
            "delete".into(),
            Op {
                action: "deletecollection",
                id: format!("delete{infix}Collection{scope}{kind}"),
                description: format!("delete collection of {kind}"),
                tag: &tag,
                gvk: gvk.clone(),
                params,
                body: Some(delete_body.clone()),
                responses: json!({"200": response("OK", status.clone()), "401": unauthorized}),
            }
            .into_value(),
        );
    }
    let collection_path = format!("{prefix}{ns}/{}", r.plural);
    paths.insert(collection_path.clone(), Value::Object(collection));

    // Every namespace at once (upstream's `...ForAllNamespaces`).
    if r.namespaced && r.allows("list") {
        let mut params = list_params();
        params.push(pretty.clone());
        params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        paths.insert(
            format!("{prefix}/{}", r.plural),
            json!({
                "get": Op {
                    action: "list",
                    id: format!("list{infix}{kind}ForAllNamespaces"),
                    description: format!("list or watch objects of kind {kind}"),
                    tag: &tag,
                    gvk: gvk.clone(),
                    params,
                    body: None,
                    responses: json!({"200": response("OK", list.clone()), "401": unauthorized}),
                }
                .into_value(),
            }),
        );
    }

    // One object: read, replace, patch, delete, and the status/scale subresources.
    let mut item_common = vec![path_param("name", format!("name of the {kind}"))];
    item_common.extend(common.iter().cloned());
    let mut item = Map::new();
    item.insert("parameters".into(), json!(item_common));
    let one = |what: &str, sub: &str, gvk: &Value, obj: &Value| -> Vec<(String, Value)> {
        let mut patch_params = write_params();
        patch_params.push(query("force", "boolean", FORCE));
        vec![
            (
                "get".into(),
                Op {
                    action: "get",
                    id: format!("read{infix}{scope}{kind}{sub}"),
                    description: format!("read {what}the specified {kind}"),
                    tag: &tag,
                    gvk: gvk.clone(),
                    params: vec![],
                    body: None,
                    responses: json!({"200": response("OK", obj.clone()), "401": unauthorized}),
                }
                .into_value(),
            ),
            (
                "put".into(),
                Op {
                    action: "put",
                    id: format!("replace{infix}{scope}{kind}{sub}"),
                    description: format!("replace {what}the specified {kind}"),
                    tag: &tag,
                    gvk: gvk.clone(),
                    params: write_params(),
                    body: Some(
                        json!({"content": {"*/*": {"schema": obj.clone()}}, "required": true}),
                    ),
                    responses: json!({
                        "200": response("OK", obj.clone()),
                        "201": response("Created", obj.clone()),
                        "401": unauthorized,
                    }),
                }
                .into_value(),
            ),
            (
                "patch".into(),
                Op {
                    action: "patch",
                    id: format!("patch{infix}{scope}{kind}{sub}"),
                    description: format!("partially update {what}the specified {kind}"),
                    tag: &tag,
                    gvk: gvk.clone(),
                    params: patch_params,
                    body: Some(patch_body.clone()),
                    responses: json!({
                        "200": response("OK", obj.clone()),
                        "201": response("Created", obj.clone()),
                        "401": unauthorized,
                    }),
                }
                .into_value(),
            ),
        ]
    };
    for (method, op) in one("", "", &gvk, &obj) {
        // kubectl needs the patch operation to trust server-side field validation, so it is
        // declared even for a resource whose verbs would not list it.
        let verb = match method.as_str() {
            "get" => "get",
            "put" => "update",
            _ => "patch",
        };
        if verb == "patch" || r.allows(verb) {
            item.insert(method, op);
        }
    }
    if r.allows("delete") {
        item.insert(
            "delete".into(),
            Op {
                action: "delete",
                id: format!("delete{infix}{scope}{kind}"),
                description: format!("delete {} {kind}", article(kind)),
                tag: &tag,
                gvk: gvk.clone(),
                params: delete_params(),
                body: Some(delete_body.clone()),
                responses: json!({
                    "200": response("OK", obj.clone()),
                    "202": response("Accepted", obj.clone()),
                    "401": unauthorized,
                }),
            }
            .into_value(),
        );
    }
    paths.insert(format!("{collection_path}/{{name}}"), Value::Object(item));

    for s in r.subresources.iter().filter(|s| served_subresource(s.name)) {
        let sub_name = kinds::find(s.group, s.version, s.kind)
            .map(|k| (k.name)().into_owned())
            .unwrap_or_default();
        let sub_obj = schema_ref(schemas, &sub_name);
        let sub_gvk = kinds::gvk(s.group, s.version, s.kind);
        let mut sub = Map::new();
        sub.insert("parameters".into(), json!(item_common));
        for (method, op) in one(
            &format!("{} of ", s.name),
            &capitalize(s.name),
            &sub_gvk,
            &sub_obj,
        ) {
            sub.insert(method, op);
        }
        paths.insert(
            format!("{collection_path}/{{name}}/{}", s.name),
            Value::Object(sub),
        );
    }
}

fn article(kind: &str) -> &'static str {
    match kind.chars().next() {
        Some('A' | 'E' | 'I' | 'O' | 'U') => "an",
        _ => "a",
    }
}
