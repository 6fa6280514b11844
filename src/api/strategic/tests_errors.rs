//! Patches upstream rejects: the HTTP code and the exact message a user sees.

use serde_json::{json, Value};

use super::{apply, try_apply, SmpError};
use crate::api::status::ApiError;

fn fail(original: Value, body: Value, group: &str, kind: &str) -> SmpError {
    match try_apply(&original, &body, group, kind) {
        Ok(v) => panic!("patch unexpectedly applied: {v}"),
        Err(e) => e,
    }
}

fn pod_with_containers(names: &[&str]) -> Value {
    let containers: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "image": "x"}))
        .collect();
    json!({"kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": containers}})
}

#[test]
fn merge_directive_on_a_map_is_unknown() {
    let e = fail(
        pod_with_containers(&["c"]),
        json!({"metadata":{"labels":{"$patch":"merge","x":"y"}}}),
        "",
        "Pod",
    );
    assert_eq!(e.code, 500);
    assert_eq!(
        e.message,
        "unknown patch type: merge in map: map[$patch:merge x:y]"
    );

    let e = fail(
        pod_with_containers(&["c"]),
        json!({"metadata":{"labels":{"$patch":true}}}),
        "",
        "Pod",
    );
    assert_eq!(
        e.message,
        "unknown patch type: %!s(bool=true) in map: map[$patch:true]"
    );
}

#[test]
fn directives_inside_merge_lists() {
    let live = pod_with_containers(&["c"]);
    let e = fail(
        live.clone(),
        json!({"spec":{"containers":[{"$patch":"merge","name":"c"}]}}),
        "",
        "Pod",
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (500, "merging lists cannot yet be specified in the patch")
    );

    let e = fail(
        live.clone(),
        json!({"spec":{"containers":[{"$patch":"bogus","name":"c"}]}}),
        "",
        "Pod",
    );
    assert_eq!(
        e.message,
        "unknown patch type: bogus in map: map[$patch:bogus name:c]"
    );

    let e = fail(
        live,
        json!({"spec":{"containers":[{"$patch":"delete","image":"x"}]}}),
        "",
        "Pod",
    );
    assert_eq!(
        e.message,
        "map: map[$patch:delete image:x] does not contain declared merge key: name"
    );
}

#[test]
fn element_without_merge_key() {
    let e = fail(
        pod_with_containers(&["c"]),
        json!({"spec":{"containers":[{"image":"nginx","ports":[{"containerPort":80}]}]}}),
        "",
        "Pod",
    );
    assert_eq!(e.code, 500);
    assert_eq!(
        e.message,
        "map: map[image:nginx ports:[map[containerPort:80]]] does not contain declared merge key: name"
    );
}

#[test]
fn malformed_retain_keys() {
    let live = json!({"kind": "Deployment", "spec": {"strategy": {"type": "RollingUpdate"}}});
    let e = fail(
        live.clone(),
        json!({"spec":{"strategy":{"$retainKeys":"type"}}}),
        "apps",
        "Deployment",
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "invalid patch format of retainKeys")
    );
    let e = fail(
        live,
        json!({"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":{"maxSurge":1}}}}),
        "apps",
        "Deployment",
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "invalid patch format of retainKeys")
    );
}

#[test]
fn malformed_parallel_list_keys() {
    let live = pod_with_containers(&["c"]);
    let e = fail(
        live.clone(),
        json!({"metadata":{"$deleteFromPrimitiveListfinalizers":["a"]}}),
        "",
        "Pod",
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "invalid patch format of primitive list")
    );
    let e = fail(
        live.clone(),
        json!({"spec":{"$setElementOrderX/containers":[{"name":"c"}]}}),
        "",
        "Pod",
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "invalid patch format of setElementOrder list")
    );
    let e = fail(
        live,
        json!({"spec":{"$setElementOrder/containers":"c"}}),
        "",
        "Pod",
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (500, "expected a []interface {}, but received a string")
    );
}

#[test]
fn order_directive_that_contradicts_the_patch_list() {
    let e = fail(
        pod_with_containers(&["1", "3", "2"]),
        json!({"spec":{
            "$setElementOrder/containers":[{"name":"1"},{"name":"2"},{"name":"3"}],
            "containers":[{"name":"3","image":"y"},{"name":"1","image":"z"}]
        }}),
        "",
        "Pod",
    );
    assert_eq!(e.code, 500);
    assert_eq!(
        e.message,
        "The order in patch list:\n[map[image:y name:3] map[image:z name:1]]\n doesn't match $setElementOrder list:\n[map[name:1] map[name:2] map[name:3]]\n"
    );
}

#[test]
fn element_types_of_merge_lists() {
    let live = json!({"kind": "Pod", "metadata": {"name": "p", "finalizers": []}});
    let e = fail(live, json!({"metadata":{"finalizers":[["a"]]}}), "", "Pod");
    assert_eq!(e.code, 422);
    assert_eq!(e.reason(), "Invalid");

    let live = json!({"kind": "Pod", "metadata": {"name": "p", "finalizers": ["a"]}});
    let e = fail(live, json!({"metadata":{"finalizers":[1]}}), "", "Pod");
    assert_eq!(
        (e.code, e.message.as_str()),
        (500, "list element types are not identical: [[a] [1]]")
    );
}

#[test]
fn kinds_without_metadata_and_bodies_that_are_not_objects() {
    let e = fail(
        json!({}),
        json!({"spec": {}}),
        "stable.example.com",
        "CronTab",
    );
    assert_eq!(e.code, 415);
    assert_eq!(
        e.message,
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );

    let e = fail(json!({}), json!([{"op": "add"}]), "", "Pod");
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            400,
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    );
    let live = pod_with_containers(&["c"]);
    assert_eq!(apply(&live, &Value::Null, "", "Pod"), Ok(live.clone()));
    assert_eq!(apply(&live, &json!({}), "", "Pod"), Ok(live));
}

#[test]
fn errors_become_status_errors() {
    let e: ApiError = SmpError::bad_request("invalid patch format of retainKeys").into();
    assert_eq!((e.code, e.reason), (400, "BadRequest"));
    let e: ApiError = SmpError::internal("boom").into();
    assert_eq!((e.code, e.reason, e.message.as_str()), (500, "", "boom"));
    assert_eq!(
        apply(&json!({}), &json!(1), "", "Pod"),
        Err("json: cannot unmarshal number into Go value of type map[string]interface {}".into())
    );
}
