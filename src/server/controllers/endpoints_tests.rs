//! Unit tests of the endpoint computation: readiness, named ports, grouping.

use super::*;

fn svc(extra: Value) -> Value {
    let mut s = json!({"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.43.0.5",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}});
    if let (Some(m), Some(e)) = (s["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    s
}

fn pod(name: &str, ip: &str, ready: bool, port: i64) -> Arc<Value> {
    Arc::new(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
}

#[test]
fn ready_and_not_ready_pods_land_in_their_lists_with_named_ports_resolved() {
    let pods = vec![
        pod("b", "10.42.0.3", false, 8080),
        pod("a", "10.42.0.2", true, 8080),
    ];
    let groups = endpoint_groups(&svc(json!({})), &pods);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].ports[0].port, 8080);
    let subsets = subsets(&groups);
    assert_eq!(subsets[0]["addresses"][0]["ip"], "10.42.0.2");
    assert_eq!(subsets[0]["notReadyAddresses"][0]["ip"], "10.42.0.3");
    assert_eq!(
        subsets[0]["ports"][0],
        json!({"name": "http", "port": 8080, "protocol": "TCP"})
    );
}

#[test]
fn pods_on_different_ports_get_separate_subsets_and_unresolvable_ones_are_skipped() {
    let mut nameless = (*pod("c", "10.42.0.4", true, 1)).clone();
    nameless["spec"]["containers"][0]["ports"] = json!([]);
    let pods = vec![
        pod("a", "10.42.0.2", true, 8080),
        pod("b", "10.42.0.3", true, 9090),
        Arc::new(nameless),
    ];
    let groups = endpoint_groups(&svc(json!({})), &pods);
    assert_eq!(groups.len(), 2);
    assert_eq!(subsets(&groups).len(), 2);
}

#[test]
fn publish_not_ready_marks_everything_ready_and_finished_pods_are_left_out() {
    let mut done = (*pod("d", "10.42.0.9", true, 8080)).clone();
    done["status"]["phase"] = json!("Succeeded");
    let pods = vec![pod("b", "10.42.0.3", false, 8080), Arc::new(done)];
    let groups = endpoint_groups(&svc(json!({"publishNotReadyAddresses": true})), &pods);
    assert_eq!(groups[0].endpoints.len(), 1);
    assert!(groups[0].endpoints[0].ready);
}

#[test]
fn terminating_pods_are_only_in_slices() {
    let mut t = (*pod("t", "10.42.0.7", true, 8080)).clone();
    t["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    let groups = endpoint_groups(&svc(json!({})), &[Arc::new(t)]);
    let e = &groups[0].endpoints[0];
    assert!(!e.ready && e.serving && e.terminating);
    assert!(subsets(&groups).is_empty());
}

#[test]
fn services_without_selector_or_external_name_are_not_managed() {
    assert!(managed_selector(&svc(json!({"selector": {}}))).is_none());
    assert!(managed_selector(&svc(json!({"type": "ExternalName"}))).is_none());
    assert!(managed_selector(&svc(json!({}))).is_some());
}
