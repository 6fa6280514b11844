//! Unit tests of server-side apply: field sets and their FieldsV1 form, merge, pruning,
//! conflicts and Update tracking.

use super::*;
use serde_json::json;

const NOW: &str = "2025-01-01T00:00:00Z";
const LATER: &str = "2025-01-01T00:01:00Z";

fn cm_scope() -> Scope<'static> {
    Scope {
        group: "",
        kind: "ConfigMap",
        api_version: "v1",
        subresource: "",
        part: Part::Whole,
    }
}

fn deploy_scope() -> Scope<'static> {
    Scope {
        group: "apps",
        kind: "Deployment",
        api_version: "apps/v1",
        subresource: "",
        part: Part::NoStatus,
    }
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default"}, "data": data})
}

/// What the registry adds when it stores an object.
fn stored(mut v: Value) -> Value {
    v["metadata"]["uid"] = json!("u-1");
    v["metadata"]["resourceVersion"] = json!("5");
    v["metadata"]["creationTimestamp"] = json!(NOW);
    v
}

fn entries(obj: &Value) -> Vec<Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn fields_of<'a>(obj: &'a Value, manager: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["manager"] == manager))
        .map(|e| &e["fieldsV1"])
        .unwrap_or(&Value::Null)
}

#[test]
fn field_set_of_a_config_map_is_upstreams_fieldsv1() {
    let obj = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "labels": {"app": "web"}, "annotations": {}},
        "data": {"b": "2", "a": "1"},
    });
    let set = strip(&field_set(&obj, &Lists::new("", "ConfigMap")));
    assert_eq!(
        set.to_fields_v1().to_string(),
        r#"{"f:data":{"f:a":{},"f:b":{}},"f:metadata":{"f:annotations":{},"f:labels":{"f:app":{}}}}"#
    );
}

#[test]
fn associative_lists_are_keyed_and_atomic_lists_are_leaves() {
    let obj = json!({
        "spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "nginx", "args": ["a", "b"], "ports": [{"containerPort": 80}]},
        ]}}},
        "metadata": {"finalizers": ["x/y"]},
    });
    let set = field_set(&obj, &Lists::new("apps", "Deployment"));
    assert_eq!(
        set.to_fields_v1().to_string(),
        concat!(
            r#"{"f:metadata":{"f:finalizers":{"v:\"x/y\"":{}}},"#,
            r#""f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"c\"}":{".":{},"#,
            r#""f:args":{},"f:image":{},"f:name":{},"f:ports":{"k:{\"containerPort\":80}":{".":{},"#,
            r#""f:containerPort":{}}}}}}}}}"#
        )
    );
    let path = vec![
        PathElement::Field("spec".into()),
        PathElement::Field("template".into()),
        PathElement::Field("spec".into()),
        PathElement::Field("containers".into()),
        PathElement::Key(vec![("name".into(), json!("c"))]),
        PathElement::Field("image".into()),
    ];
    assert!(set.has(&path));
    assert_eq!(
        path_string(&path),
        r#".spec.template.spec.containers[name="c"].image"#
    );
}

#[test]
fn fieldsv1_round_trips() {
    let raw = json!({
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
        "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}}}, "f:replicas": {}},
        "f:x": {"i:3": {}, "v:1": {}},
    });
    let set = Set::from_fields_v1(&raw).unwrap();
    assert!(set.has(&[
        PathElement::Field("metadata".into()),
        PathElement::Field("labels".into())
    ]));
    assert!(!set.has(&[PathElement::Field("metadata".into())]));
    // Keys come out in upstream's order: fields, keys, values, indexes.
    assert_eq!(
        set.to_fields_v1().to_string(),
        concat!(
            r#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"#,
            r#""f:spec":{"f:containers":{"k:{\"name\":\"c\"}":{".":{},"f:image":{}}},"f:replicas":{}},"#,
            r#""f:x":{"v:1":{},"i:3":{}}}"#
        )
    );
    assert!(Set::from_fields_v1(&json!({"x:1": {}})).is_err());
}

#[test]
fn apply_creates_with_an_apply_entry() {
    let config = cm(json!({"a": "1"}));
    let new = apply(&json!({}), &config, "kubectl", false, &cm_scope(), NOW).unwrap();
    assert_eq!(new["data"], json!({"a": "1"}));
    assert_eq!(
        entries(&new),
        vec![json!({
            "manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": NOW,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}},
        })]
    );
}

#[test]
fn reapply_unchanged_is_a_no_op_and_keeps_the_time() {
    let config = cm(json!({"a": "1"}));
    let live = stored(apply(&json!({}), &config, "kubectl", false, &cm_scope(), NOW).unwrap());
    let again = apply(&live, &config, "kubectl", false, &cm_scope(), LATER).unwrap();
    assert_eq!(again, live);
}

#[test]
fn fields_no_longer_applied_are_removed() {
    let first = cm(json!({"a": "1", "b": "2"}));
    let mut with_label = first.clone();
    with_label["metadata"]["labels"] = json!({"app": "web"});
    let live = stored(apply(&json!({}), &with_label, "kubectl", false, &cm_scope(), NOW).unwrap());
    let new = apply(
        &live,
        &cm(json!({"a": "1"})),
        "kubectl",
        false,
        &cm_scope(),
        LATER,
    )
    .unwrap();
    assert_eq!(new["data"], json!({"a": "1"}));
    assert!(new["metadata"].get("labels").is_none(), "{new}");
    assert_eq!(fields_of(&new, "kubectl"), &json!({"f:data": {"f:a": {}}}));
    assert_eq!(entries(&new)[0]["time"], LATER);
}

#[test]
fn fields_another_manager_owns_are_kept() {
    let live = stored(
        apply(
            &json!({}),
            &cm(json!({"a": "1", "b": "2"})),
            "kubectl",
            false,
            &cm_scope(),
            NOW,
        )
        .unwrap(),
    );
    // "other" co-owns b with the same value: no conflict, shared ownership.
    let live = stored(
        apply(
            &live,
            &cm(json!({"b": "2"})),
            "other",
            false,
            &cm_scope(),
            NOW,
        )
        .unwrap(),
    );
    let new = apply(
        &live,
        &cm(json!({"a": "1"})),
        "kubectl",
        false,
        &cm_scope(),
        LATER,
    )
    .unwrap();
    assert_eq!(new["data"], json!({"a": "1", "b": "2"}));
    assert_eq!(fields_of(&new, "other"), &json!({"f:data": {"f:b": {}}}));
}

#[test]
fn a_different_value_for_a_field_someone_else_owns_conflicts() {
    let live = stored(
        apply(
            &json!({}),
            &cm(json!({"a": "1"})),
            "other",
            false,
            &cm_scope(),
            NOW,
        )
        .unwrap(),
    );
    let err = apply(
        &live,
        &cm(json!({"a": "2"})),
        "kubectl",
        false,
        &cm_scope(),
        LATER,
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        r#"Apply failed with 1 conflict: conflict with "other": .data.a"#
    );
    let status = ApiError::from(err);
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.details.unwrap(),
        json!({"causes": [{"reason": "FieldManagerConflict", "message": "conflict with \"other\"", "field": ".data.a"}]})
    );
}

#[test]
fn several_conflicts_are_listed_per_manager() {
    let live = stored(
        apply(
            &json!({}),
            &cm(json!({"a": "1", "b": "1"})),
            "zed",
            false,
            &cm_scope(),
            NOW,
        )
        .unwrap(),
    );
    let live = stored(
        apply(
            &live,
            &cm(json!({"a": "1", "b": "1", "c": "1"})),
            "amy",
            false,
            &cm_scope(),
            NOW,
        )
        .unwrap(),
    );
    let err = apply(
        &live,
        &cm(json!({"a": "2", "c": "2"})),
        "kubectl",
        false,
        &cm_scope(),
        LATER,
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        "Apply failed with 3 conflicts: conflicts with \"amy\":\n- .data.a\n- .data.c\nconflicts with \"zed\":\n- .data.a"
    );
}

#[test]
fn force_takes_ownership() {
    let live = stored(
        apply(
            &json!({}),
            &cm(json!({"a": "1", "b": "1"})),
            "other",
            false,
            &cm_scope(),
            NOW,
        )
        .unwrap(),
    );
    let new = apply(
        &live,
        &cm(json!({"a": "2"})),
        "kubectl",
        true,
        &cm_scope(),
        LATER,
    )
    .unwrap();
    assert_eq!(new["data"], json!({"a": "2", "b": "1"}));
    assert_eq!(fields_of(&new, "kubectl"), &json!({"f:data": {"f:a": {}}}));
    assert_eq!(fields_of(&new, "other"), &json!({"f:data": {"f:b": {}}}));
}

#[test]
fn apply_checks_the_request() {
    let mut c = cm(json!({}));
    c["apiVersion"] = json!("v2");
    assert_eq!(
        apply(&json!({}), &c, "m", false, &cm_scope(), NOW).unwrap_err(),
        ApplyError::BadRequest("invalid object type: /v2, Kind=ConfigMap".into())
    );
    let mut c = cm(json!({}));
    c["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        apply(&json!({}), &c, "m", false, &cm_scope(), NOW).unwrap_err(),
        ApplyError::BadRequest("metadata.managedFields must be nil".into())
    );
}

fn deployment(replicas: i64, containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers}},
        },
    })
}

#[test]
fn scale_update_owns_replicas_and_apply_conflicts_with_it() {
    let c = json!([{"name": "c", "image": "nginx"}]);
    let live = stored(
        apply(
            &json!({}),
            &deployment(1, c.clone()),
            "kubectl",
            false,
            &deploy_scope(),
            NOW,
        )
        .unwrap(),
    );
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(3);
    let scale = Scope {
        subresource: "scale",
        ..deploy_scope()
    };
    track_update(&live, &mut scaled, "kubectl-scale", &scale, LATER);
    assert_eq!(
        entries(&scaled)[1],
        json!({
            "manager": "kubectl-scale", "operation": "Update", "apiVersion": "apps/v1", "time": LATER,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}, "subresource": "scale",
        })
    );
    assert!(fields_of(&scaled, "kubectl")["f:spec"]
        .get("f:replicas")
        .is_none());
    let err = apply(
        &scaled,
        &deployment(2, c.clone()),
        "kubectl",
        false,
        &deploy_scope(),
        LATER,
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        r#"Apply failed with 1 conflict: conflict with "kubectl-scale" with subresource "scale" using apps/v1: .spec.replicas"#
    );
    // Applying the value scale set is no conflict: both own it.
    let shared = apply(
        &scaled,
        &deployment(3, c.clone()),
        "kubectl",
        false,
        &deploy_scope(),
        LATER,
    )
    .unwrap();
    assert_eq!(shared["spec"]["replicas"], 3);
    assert_eq!(
        fields_of(&shared, "kubectl-scale"),
        &json!({"f:spec": {"f:replicas": {}}})
    );
    let forced = apply(
        &scaled,
        &deployment(2, c),
        "kubectl",
        true,
        &deploy_scope(),
        LATER,
    )
    .unwrap();
    assert_eq!(forced["spec"]["replicas"], 2);
    assert_eq!(entries(&forced).len(), 1);
}

#[test]
fn associative_lists_merge_by_key_and_prune_items() {
    let two = json!([{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]);
    let live = stored(
        apply(
            &json!({}),
            &deployment(1, two),
            "kubectl",
            false,
            &deploy_scope(),
            NOW,
        )
        .unwrap(),
    );
    // Another manager adds a container and an env var to "a".
    let other = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "side", "image": "s"},
            {"name": "a", "env": [{"name": "E", "value": "1"}]},
        ]}}},
    });
    let live = stored(apply(&live, &other, "other", false, &deploy_scope(), NOW).unwrap());
    let names: Vec<&str> = live["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["side", "a", "b"]);
    // kubectl drops "b" and changes a's image: b goes, side and a's env stay.
    let one = json!([{"name": "a", "image": "2"}]);
    let new = apply(
        &live,
        &deployment(1, one),
        "kubectl",
        false,
        &deploy_scope(),
        LATER,
    )
    .unwrap();
    assert_eq!(
        new["spec"]["template"]["spec"]["containers"],
        json!([{"name": "side", "image": "s"}, {"name": "a", "image": "2", "env": [{"name": "E", "value": "1"}]}])
    );
}

#[test]
fn status_is_not_owned_through_the_main_resource() {
    let mut d = deployment(1, json!([{"name": "c", "image": "x"}]));
    d["status"] = json!({"replicas": 1});
    let new = apply(&json!({}), &d, "kubectl", false, &deploy_scope(), NOW).unwrap();
    assert!(fields_of(&new, "kubectl").get("f:status").is_none());
}

#[test]
fn first_apply_to_an_untracked_object_conflicts_with_before_first_apply() {
    let live = stored(cm(json!({"a": "1"})));
    let err = apply(
        &live,
        &cm(json!({"a": "2"})),
        "other",
        false,
        &cm_scope(),
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        err.message(),
        r#"Apply failed with 1 conflict: conflict with "before-first-apply" using v1: .data.a"#
    );
    let ok = apply(
        &live,
        &cm(json!({"a": "1", "b": "2"})),
        "other",
        false,
        &cm_scope(),
        NOW,
    )
    .unwrap();
    assert_eq!(
        fields_of(&ok, "before-first-apply"),
        &json!({"f:data": {".": {}, "f:a": {}}})
    );
}

#[test]
fn kubectl_takes_over_fields_its_last_applied_annotation_matches() {
    let mut live = cm(json!({"a": "1", "b": "1"}));
    live["metadata"]["annotations"] =
        json!({LAST_APPLIED: cm(json!({"a": "1", "b": "1"})).to_string()});
    let live = stored(live);
    // Client-side apply set a=1 and b=1, so kubectl may change both without conflicts;
    // the annotation follows the newly applied configuration.
    let new = apply(
        &live,
        &cm(json!({"a": "2", "b": "2"})),
        "kubectl",
        false,
        &cm_scope(),
        NOW,
    )
    .unwrap();
    assert_eq!(new["data"], json!({"a": "2", "b": "2"}));
    assert_eq!(
        new["metadata"]["annotations"][LAST_APPLIED],
        "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"2\",\"b\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"x\",\"namespace\":\"default\"}}\n"
    );
    // Another manager gets no such pass.
    assert!(apply(
        &live,
        &cm(json!({"a": "2"})),
        "other",
        false,
        &cm_scope(),
        NOW
    )
    .is_err());
}

#[test]
fn update_tracking_follows_changes_and_resets() {
    let live = stored(
        apply(
            &json!({}),
            &cm(json!({"a": "1"})),
            "kubectl",
            false,
            &cm_scope(),
            NOW,
        )
        .unwrap(),
    );
    let mut edited = live.clone();
    edited["data"]["a"] = json!("2");
    edited["metadata"]["labels"] = json!({"x": "y"});
    track_update(&live, &mut edited, "kubectl-edit", &cm_scope(), LATER);
    assert_eq!(
        fields_of(&edited, "kubectl-edit"),
        &json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {".": {}, "f:x": {}}}})
    );
    // kubectl lost .data.a, and with it its only field.
    assert_eq!(entries(&edited).len(), 1);
    // managedFields: [] forgets everything; an untracked object stays untracked.
    let mut reset = edited.clone();
    reset["metadata"]["managedFields"] = json!([]);
    reset["data"]["a"] = json!("3");
    track_update(&edited, &mut reset, "m", &cm_scope(), LATER);
    assert!(reset["metadata"].get("managedFields").is_none());
    let untracked = stored(cm(json!({"a": "1"})));
    let mut changed = untracked.clone();
    changed["data"]["a"] = json!("2");
    track_update(&untracked, &mut changed, "m", &cm_scope(), LATER);
    assert!(changed["metadata"].get("managedFields").is_none());
}

#[test]
fn update_managers_are_capped() {
    let mut managed = Managed::default();
    for i in 0..12 {
        let f = PathElement::Field(format!("f{i}"));
        managed.put(Entry {
            id: ManagerId::new(&format!("m{i:02}"), Operation::Update, "v1", ""),
            api_version: "v1".into(),
            time: Some(format!("2025-01-01T00:00:{i:02}Z")),
            set: Set::from_paths(&[vec![f]]),
        });
    }
    managed.cap_updates(10);
    assert_eq!(managed.entries.len(), 10);
    let bucket = managed
        .get(&ManagerId::new(
            "ancient-changes",
            Operation::Update,
            "v1",
            "",
        ))
        .unwrap();
    assert_eq!(bucket.set.paths().len(), 3);
}

#[test]
fn user_agent_prefix_names_the_manager() {
    assert_eq!(
        manager_from_user_agent("kubectl/v1.32.5 (linux/amd64) kubernetes/9894294"),
        "kubectl"
    );
    assert_eq!(manager_from_user_agent(""), "");
}
