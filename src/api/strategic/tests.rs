//! What kubectl's strategic merge patches do to stored objects: the bodies kubectl sends for
//! apply, edit, patch, set image, rollout, cordon and taint, with exact JSON in and out.

use serde_json::{json, Value};

use super::{apply, supports};

fn patch(original: Value, body: Value, group: &str, kind: &str) -> Value {
    match apply(&original, &body, group, kind) {
        Ok(v) => v,
        Err(e) => panic!("patch failed: {e}"),
    }
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

fn deployment(pod_spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"app": "d"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "d"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": pod_spec}
        }
    })
}

#[test]
fn reapply_changes_one_container_and_keeps_the_other_in_directive_order() {
    let live = pod(json!({"containers": [
        {"name": "c", "image": "nginx:1.25"},
        {"name": "side", "image": "busybox", "args": ["sleep", "1d"]}
    ]}));
    let body = json!({"spec":{"$setElementOrder/containers":[{"name":"c"},{"name":"side"}],"containers":[{"image":"nginx:1.26","name":"c"}]}});
    let out = patch(live, body, "", "Pod");
    assert_eq!(
        out["spec"],
        json!({"containers": [
            {"name": "c", "image": "nginx:1.26"},
            {"name": "side", "image": "busybox", "args": ["sleep", "1d"]}
        ]})
    );
}

#[test]
fn set_element_order_reorders_the_live_list() {
    let live =
        pod(json!({"containers": [{"name": "c", "image": "a"}, {"name": "side", "image": "b"}]}));
    let body = json!({"spec":{"$setElementOrder/containers":[{"name":"side"},{"name":"c"}]}});
    let out = patch(live, body, "", "Pod");
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "side", "image": "b"}, {"name": "c", "image": "a"}])
    );
}

#[test]
fn env_var_removed_with_patch_delete() {
    let live = deployment(
        json!({"containers": [{"name": "c", "image": "nginx", "env": [
            {"name": "A", "value": "1"}, {"name": "B", "value": "2"}
        ]}]}),
    );
    // kubectl apply after deleting A from the manifest.
    let body = json!({"spec":{"template":{"spec":{
        "$setElementOrder/containers":[{"name":"c"}],
        "containers":[{"$setElementOrder/env":[{"name":"B"}],"env":[{"$patch":"delete","name":"A"}],"name":"c"}]
    }}}});
    let out = patch(live, body, "apps", "Deployment");
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "c", "image": "nginx", "env": [{"name": "B", "value": "2"}]}])
    );
}

#[test]
fn null_removes_label_and_annotation_and_updates_last_applied() {
    let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "cm",
        "labels": {"app": "x", "tier": "fe"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":1}\n", "note": "n"}
    }, "data": {"k": "v"}});
    let body = json!({"data":{"k":"v2"},"metadata":{"annotations":{
        "kubectl.kubernetes.io/last-applied-configuration":"{\"new\":2}\n","note":null},"labels":{"tier":null}}});
    let out = patch(live, body, "", "ConfigMap");
    assert_eq!(
        out,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "cm",
            "labels": {"app": "x"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":2}\n"}
        }, "data": {"k": "v2"}})
    );
}

#[test]
fn port_added_by_apply_follows_the_order_directive() {
    let live = pod(
        json!({"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}),
    );
    let body = json!({"spec":{"$setElementOrder/containers":[{"name":"c"}],"containers":[{
        "$setElementOrder/ports":[{"containerPort":80},{"containerPort":8080}],
        "name":"c","ports":[{"containerPort":8080,"name":"alt"}]}]}});
    let out = patch(live, body, "", "Pod");
    assert_eq!(
        out["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80}, {"containerPort": 8080, "name": "alt"}])
    );
}

#[test]
fn port_added_by_plain_patch_goes_before_live_ports() {
    // Without $setElementOrder upstream puts elements new to the list first.
    let live = pod(
        json!({"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}),
    );
    let body = json!({"spec":{"containers":[{"name":"c","ports":[{"containerPort":8080}]}]}});
    let out = patch(live, body, "", "Pod");
    assert_eq!(
        out["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 8080}, {"containerPort": 80}])
    );
}

#[test]
fn volume_source_switched_with_retain_keys() {
    let live = deployment(json!({
        "containers": [{"name": "c", "image": "nginx"}],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "other", "emptyDir": {"medium": "Memory"}}]
    }));
    let body = json!({"spec":{"template":{"spec":{
        "$setElementOrder/volumes":[{"name":"data"},{"name":"other"}],
        "volumes":[{"$retainKeys":["configMap","name"],"configMap":{"name":"cm"},"emptyDir":null,"name":"data"}]
    }}}});
    let out = patch(live, body, "apps", "Deployment");
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "data", "configMap": {"name": "cm"}}, {"name": "other", "emptyDir": {"medium": "Memory"}}])
    );
}

#[test]
fn set_image() {
    let live = deployment(json!({"containers": [
        {"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
        {"name": "side", "image": "busybox"}
    ]}));
    let body =
        json!({"spec":{"template":{"spec":{"containers":[{"image":"nginx:1.27","name":"c"}]}}}});
    let out = patch(live, body, "apps", "Deployment");
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([
            {"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}
        ])
    );
}

#[test]
fn rollout_restart_annotates_the_template() {
    let live = deployment(json!({"containers": [{"name": "c", "image": "nginx"}]}));
    let body = json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2025-06-01T10:00:00Z"}}}}});
    let out = patch(live, body, "apps", "Deployment");
    assert_eq!(
        out["spec"]["template"]["metadata"],
        json!({"labels": {"app": "d"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-06-01T10:00:00Z"}})
    );
    assert_eq!(
        out["spec"]["template"]["spec"],
        json!({"containers": [{"name": "c", "image": "nginx"}]})
    );
}

#[test]
fn rollout_pause_and_resume() {
    let live = deployment(json!({"containers": [{"name": "c", "image": "nginx"}]}));
    let paused = patch(
        live.clone(),
        json!({"spec":{"paused":true}}),
        "apps",
        "Deployment",
    );
    assert_eq!(paused["spec"]["paused"], json!(true));
    assert_eq!(paused["spec"]["replicas"], json!(1));
    let resumed = patch(
        paused,
        json!({"spec":{"paused":null}}),
        "apps",
        "Deployment",
    );
    assert_eq!(resumed, live);
}

#[test]
fn cordon_and_uncordon() {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]}});
    let cordoned = patch(
        node.clone(),
        json!({"spec":{"unschedulable":true}}),
        "",
        "Node",
    );
    assert_eq!(
        cordoned["spec"],
        json!({"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"], "unschedulable": true})
    );
    let back = patch(cordoned, json!({"spec":{"unschedulable":null}}), "", "Node");
    assert_eq!(back, node);
}

#[test]
fn taints_are_replaced_whole() {
    let node = json!({"kind": "Node", "metadata": {"name": "n1"}, "spec": {"taints": [
        {"key": "a", "value": "1", "effect": "NoSchedule"}
    ]}});
    let body = json!({"spec":{"taints":[{"effect":"NoExecute","key":"b"},{"effect":"NoSchedule","key":"a","value":"2"}]}});
    let out = patch(node.clone(), body, "", "Node");
    assert_eq!(
        out["spec"]["taints"],
        json!([{"effect": "NoExecute", "key": "b"}, {"effect": "NoSchedule", "key": "a", "value": "2"}])
    );
    // Removing the last taint: kubectl sends null.
    let out = patch(node, json!({"spec":{"taints":null}}), "", "Node");
    assert_eq!(out["spec"], json!({}));
}

#[test]
fn finalizers_union_and_delete_from_primitive_list() {
    let live = json!({"kind": "ConfigMap", "metadata": {"name": "cm", "finalizers": ["a.io/x", "b.io/y"]}});
    let out = patch(
        live.clone(),
        json!({"metadata":{"finalizers":["b.io/y","c.io/z"]}}),
        "",
        "ConfigMap",
    );
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["a.io/x", "b.io/y", "c.io/z"])
    );
    // Without an order directive, an element new to the list goes first.
    let out = patch(
        live.clone(),
        json!({"metadata":{"finalizers":["c.io/z"]}}),
        "",
        "ConfigMap",
    );
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["c.io/z", "a.io/x", "b.io/y"])
    );

    let body = json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a.io/x","nope"],
        "$setElementOrder/finalizers":["b.io/y","c.io/z"],"finalizers":["c.io/z"]}});
    let out = patch(live.clone(), body, "", "ConfigMap");
    assert_eq!(out["metadata"]["finalizers"], json!(["b.io/y", "c.io/z"]));

    // Deleting from a list the object does not have adds nothing.
    let bare = json!({"kind": "ConfigMap", "metadata": {"name": "cm"}});
    let out = patch(
        bare.clone(),
        json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]}}),
        "",
        "ConfigMap",
    );
    assert_eq!(out, bare);
}

#[test]
fn primitive_merge_list_keeps_patch_order_and_interleaves_live_items() {
    let node =
        json!({"kind": "Node", "metadata": {"name": "n"}, "spec": {"podCIDRs": ["1", "2", "3"]}});
    let out = patch(node, json!({"spec":{"podCIDRs":["3","1"]}}), "", "Node");
    assert_eq!(out["spec"]["podCIDRs"], json!(["2", "3", "1"]));
}

#[test]
fn status_conditions_merge_by_type() {
    let live = json!({"kind": "Deployment", "metadata": {"name": "d"}, "status": {"conditions": [
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
        {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
    ]}});
    let body = json!({"status":{"conditions":[{"type":"Available","status":"True","reason":"MinimumReplicasAvailable"}]}});
    let out = patch(live, body, "apps", "Deployment");
    assert_eq!(
        out["status"]["conditions"],
        json!([
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
        ])
    );

    let node = json!({"kind": "Node", "metadata": {"name": "n"}, "status": {
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}],
        "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n"}]
    }});
    let body = json!({"status":{"conditions":[{"type":"Ready","status":"True"}],
        "addresses":[{"type":"InternalIP","address":"10.0.0.3"}]}});
    let out = patch(node, body, "", "Node");
    assert_eq!(
        out["status"],
        json!({
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.3"}, {"type": "Hostname", "address": "n"}]
        })
    );
}

#[test]
fn list_replaced_with_patch_replace_element() {
    let live =
        pod(json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}));
    let body = json!({"spec":{"containers":[{"$patch":"replace"},{"name":"c","image":"z"}]}});
    let out = patch(live, body, "", "Pod");
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "c", "image": "z"}])
    );
}

#[test]
fn map_replace_and_delete_directives() {
    let live = deployment(
        json!({"containers": [{"name": "c", "image": "nginx"}], "dnsPolicy": "ClusterFirst"}),
    );
    let body = json!({"spec":{"template":{"$patch":"replace","metadata":{"labels":{"app":"d"}},
        "spec":{"containers":[{"name":"n","image":"new"}]}}}});
    let out = patch(live.clone(), body, "apps", "Deployment");
    assert_eq!(
        out["spec"]["template"],
        json!({"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "n", "image": "new"}]}})
    );

    let out = patch(
        live,
        json!({"metadata":{"labels":{"$patch":"delete"}}}),
        "apps",
        "Deployment",
    );
    assert_eq!(out["metadata"], json!({"name": "d", "labels": {}}));
}

#[test]
fn service_port_merged_by_port() {
    let live = json!({"kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "ports": [
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
    ]}});
    let body = json!({"spec":{"$setElementOrder/ports":[{"port":80},{"port":443}],"ports":[{"port":80,"targetPort":9090}]}});
    let out = patch(live, body, "", "Service");
    assert_eq!(
        out["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9090},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
        ])
    );
}

#[test]
fn deployment_strategy_switched_to_recreate() {
    let live = deployment(json!({"containers": [{"name": "c", "image": "nginx"}]}));
    let body = json!({"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"}}});
    let out = patch(live, body, "apps", "Deployment");
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(out["spec"]["replicas"], json!(1));
}

#[test]
fn cronjob_pod_template_containers_merge_by_name() {
    let live = json!({"kind": "CronJob", "metadata": {"name": "cj"}, "spec": {"schedule": "* * * * *",
    "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]},
        {"name": "b", "image": "y"}
    ]}}}}}});
    let body = json!({"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[
        {"name":"a","env":[{"name":"F","value":"2"}]}]}}}}}});
    let out = patch(live, body, "batch", "CronJob");
    assert_eq!(
        out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
        json!([
            {"name": "a", "image": "x", "env": [{"name": "F", "value": "2"}, {"name": "E", "value": "1"}]},
            {"name": "b", "image": "y"}
        ])
    );
}

#[test]
fn owner_references_merge_by_uid() {
    let live = json!({"kind": "Pod", "metadata": {"name": "p", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}
    ]}});
    let body = json!({"metadata":{"ownerReferences":[{"uid":"u1","blockOwnerDeletion":true}]}});
    let out = patch(live, body, "", "Pod");
    assert_eq!(
        out["metadata"]["ownerReferences"],
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1",
            "controller": true, "blockOwnerDeletion": true}])
    );
}

#[test]
fn lists_without_strategy_and_unknown_fields() {
    let live = pod(json!({
        "containers": [{"name": "c", "image": "x", "args": ["a", "b"]}],
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "x-unknown": {"keep": 1, "list": [1, 2]}
    }));
    let body = json!({"spec":{
        "containers":[{"name":"c","args":["z"]}],
        "tolerations":[{"key":"j","operator":"Exists"}],
        "x-unknown":{"add":2,"list":[3]}
    }});
    let out = patch(live, body, "", "Pod");
    assert_eq!(
        out["spec"],
        json!({
            "containers": [{"name": "c", "image": "x", "args": ["z"]}],
            "tolerations": [{"key": "j", "operator": "Exists"}],
            "x-unknown": {"keep": 1, "list": [3], "add": 2}
        })
    );
}

#[test]
fn directives_never_reach_the_object() {
    let live =
        pod(json!({"containers": [{"name": "c", "image": "x"}], "tolerations": [{"key": "old"}]}));
    let body = json!({"spec":{
        "containers":[{"name":"new","image":"y","env":[{"name":"A","value":"1"}],
            "$setElementOrder/env":[{"name":"A"}],"resources":{"$retainKeys":["limits"],"limits":{"cpu":"1"}}}],
        "securityContext":{"$patch":"delete"},
        "affinity":{"nodeAffinity":{"$patch":"replace","x":1},"podAffinity":{"a":1,"b":null}},
        "readinessGates":[{"conditionType":"a"},{"conditionType":"b","$patch":"delete"}],
        "tolerations":[{"key":"k","$patch":"delete","value":null}]
    }});
    let out = patch(live, body, "", "Pod");
    // Upstream drops objects carrying $patch from values new to the object, and its typed
    // decode drops the directive keys of values it takes whole.
    assert_eq!(
        out["spec"],
        json!({
            "containers": [
                {"name": "new", "image": "y", "env": [{"name": "A", "value": "1"}], "resources": {"limits": {"cpu": "1"}}},
                {"name": "c", "image": "x"}
            ],
            "tolerations": [{"key": "k"}],
            "affinity": {"podAffinity": {"a": 1}},
            "readinessGates": [{"conditionType": "a"}]
        })
    );
    assert!(!serde_json::to_string(&out).unwrap().contains('$'));
}

#[test]
fn pdb_selector_is_replaced_and_controller_revision_data_is_opaque() {
    let live = json!({"kind": "PodDisruptionBudget", "metadata": {"name": "p"}, "spec": {"minAvailable": 1,
        "selector": {"matchLabels": {"app": "a", "tier": "fe"}}}});
    let out = patch(
        live,
        json!({"spec":{"selector":{"matchLabels":{"app":"b"}}}}),
        "policy",
        "PodDisruptionBudget",
    );
    assert_eq!(
        out["spec"],
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "b"}}})
    );

    let live = json!({"kind": "ControllerRevision", "metadata": {"name": "r"}, "revision": 1,
        "data": {"spec": {"template": {"a": 1}}}});
    let data = json!({"spec":{"template":{"$patch":"replace","b":2}}});
    let out = patch(live, json!({"data": data}), "apps", "ControllerRevision");
    assert_eq!(out["data"], data);
}

#[test]
fn daemonset_rollback_replaces_the_template() {
    // `kubectl rollout undo` sends the ControllerRevision's data, which replaces the template.
    let live = json!({"kind": "DaemonSet", "metadata": {"name": "ds"}, "spec": {
        "selector": {"matchLabels": {"app": "ds"}},
        "template": {"metadata": {"labels": {"app": "ds"}, "annotations": {"x": "y"}},
            "spec": {"containers": [{"name": "c", "image": "v2"}, {"name": "extra", "image": "e"}]}}}});
    let body = json!({"spec":{"template":{"$patch":"replace","metadata":{"labels":{"app":"ds"}},
        "spec":{"containers":[{"name":"c","image":"v1"}]}}}});
    let out = patch(live, body, "apps", "DaemonSet");
    assert_eq!(
        out["spec"]["template"],
        json!({"metadata": {"labels": {"app": "ds"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}})
    );
    assert_eq!(
        out["spec"]["selector"],
        json!({"matchLabels": {"app": "ds"}})
    );
}

#[test]
fn server_only_elements_keep_their_live_position() {
    let live = pod(json!({"containers": [
        {"name": "1", "other": "a"}, {"name": "2", "value": 2}, {"name": "7"}, {"name": "9"},
        {"name": "8"}, {"name": "3", "value": 3}, {"name": "4", "value": 4}
    ]}));
    let body = json!({"spec":{"$setElementOrder/containers":[{"name":"2"},{"name":"1"},{"name":"4"},{"name":"3"}]}});
    let out = patch(live, body, "", "Pod");
    assert_eq!(
        out["spec"]["containers"],
        json!([
            {"name": "2", "value": 2}, {"name": "1", "other": "a"}, {"name": "7"}, {"name": "9"},
            {"name": "8"}, {"name": "4", "value": 4}, {"name": "3", "value": 3}
        ])
    );

    let node = json!({"kind": "Node", "spec": {"podCIDRs": ["1", "4", "2"]}});
    let body = json!({"spec":{"$setElementOrder/podCIDRs":["3","1","2"],"podCIDRs":["3"]}});
    let out = patch(node, body, "", "Node");
    assert_eq!(out["spec"]["podCIDRs"], json!(["3", "1", "4", "2"]));
}

#[test]
fn key_order_of_the_object_is_kept() {
    let live = json!({"kind": "Pod", "metadata": {"name": "p", "namespace": "d", "uid": "u"}, "spec": {}, "status": {}});
    let out = patch(
        live,
        json!({"metadata":{"namespace":null,"labels":{"a":"b"}}}),
        "",
        "Pod",
    );
    let keys: Vec<&String> = out["metadata"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "uid", "labels"]);
}

#[test]
fn supported_kinds() {
    assert!(supports("", "Pod"));
    assert!(supports("apps", "Deployment"));
    assert!(supports("batch", "CronJob"));
    assert!(supports("events.k8s.io", "Event"));
    assert!(supports("rbac.authorization.k8s.io", "ClusterRoleBinding"));
    assert!(!supports("", "Deployment"));
    assert!(!supports("stable.example.com", "CronTab"));
    assert!(!supports(
        "apiextensions.k8s.io",
        "CustomResourceDefinition"
    ));
}
