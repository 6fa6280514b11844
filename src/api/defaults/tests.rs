//! Tests for the per-kind defaulters: the values upstream fills in, idempotence, and that
//! nothing a user set is replaced.

use serde_json::{json, Value};

use super::*;

fn run(f: DefaultFn, v: Value) -> Value {
    let mut once = v;
    f(&mut once);
    let mut twice = once.clone();
    f(&mut twice);
    assert_eq!(once, twice, "defaulting must be idempotent");
    once
}

#[test]
fn pod_defaults() {
    let p = run(
        pod,
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx",
            "ports": [{"containerPort": 80}],
            "livenessProbe": {"httpGet": {"port": 80}},
            "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "resources": {"limits": {"cpu": "1"}}}],
            "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "c"}}]}}),
    );
    let s = &p["spec"];
    assert_eq!(s["restartPolicy"], "Always");
    assert_eq!(s["terminationGracePeriodSeconds"], 30);
    assert_eq!(s["dnsPolicy"], "ClusterFirst");
    assert_eq!(s["schedulerName"], "default-scheduler");
    assert_eq!(s["securityContext"], json!({}));
    assert_eq!(s["enableServiceLinks"], true);
    let c = &s["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(c["resources"]["requests"], json!({"cpu": "1"}));
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(s["volumes"][0]["emptyDir"], json!({}));
    assert_eq!(s["volumes"][1]["configMap"]["defaultMode"], 420);
}

#[test]
fn pull_policy_follows_the_tag() {
    for (image, want) in [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("nginx@sha256:00", "IfNotPresent"),
    ] {
        let p = run(
            pod,
            json!({"spec": {"containers": [{"name": "c", "image": image}]}}),
        );
        assert_eq!(
            p["spec"]["containers"][0]["imagePullPolicy"], want,
            "{image}"
        );
    }
}

#[test]
fn user_values_are_kept() {
    let p = run(
        pod,
        json!({"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0, "enableServiceLinks": false,
            "containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never", "ports": [{"containerPort": 53, "protocol": "UDP"}],
                "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "500m"}}}]}}),
    );
    let s = &p["spec"];
    assert_eq!(s["restartPolicy"], "Never");
    assert_eq!(s["terminationGracePeriodSeconds"], 0);
    assert_eq!(s["enableServiceLinks"], false);
    assert_eq!(s["containers"][0]["imagePullPolicy"], "Never");
    assert_eq!(s["containers"][0]["ports"][0]["protocol"], "UDP");
    assert_eq!(s["containers"][0]["resources"]["requests"]["cpu"], "500m");
}

#[test]
fn host_network_pods_get_host_ports() {
    let p = run(
        pod,
        json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080}]}]}}),
    );
    assert_eq!(p["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
}

#[test]
fn deployment_defaults() {
    let d = run(
        deployment,
        json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}),
    );
    let s = &d["spec"];
    assert_eq!(s["replicas"], 1);
    assert_eq!(
        s["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(s["revisionHistoryLimit"], 10);
    assert_eq!(s["progressDeadlineSeconds"], 600);
    assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");
    // Template pods do not get the Pod-only defaults.
    assert!(s["template"]["spec"].get("enableServiceLinks").is_none());

    let recreate = run(
        deployment,
        json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}}),
    );
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(recreate["spec"]["replicas"], 0);
}

#[test]
fn replica_set_and_controller_defaults() {
    let rs = run(replica_set, json!({"spec": {}}));
    assert_eq!(rs["spec"]["replicas"], 1);
    assert_eq!(rs["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");

    let rc = run(
        replication_controller,
        json!({"metadata": {"name": "r"}, "spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": {}}}}),
    );
    assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
    assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
    assert_eq!(rc["spec"]["replicas"], 1);
    let kept = run(
        replication_controller,
        json!({"metadata": {"labels": {"x": "y"}}, "spec": {"selector": {"s": "t"}, "template": {"metadata": {"labels": {"app": "a"}}}}}),
    );
    assert_eq!(kept["spec"]["selector"], json!({"s": "t"}));
    assert_eq!(kept["metadata"]["labels"], json!({"x": "y"}));
    let no_template = run(replication_controller, json!({"spec": {}}));
    assert!(no_template["spec"].get("template").is_none());
}

#[test]
fn stateful_set_defaults() {
    let s = run(
        stateful_set,
        json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}),
    );
    let spec = &s["spec"];
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(
        spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );
    assert_eq!(
        spec["volumeClaimTemplates"][0]["status"]["phase"],
        "Pending"
    );
    let on_delete = run(
        stateful_set,
        json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
    );
    assert_eq!(
        on_delete["spec"]["updateStrategy"],
        json!({"type": "OnDelete"})
    );
}

#[test]
fn daemon_set_defaults() {
    let d = run(daemon_set, json!({"spec": {}}));
    assert_eq!(
        d["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
}

#[test]
fn job_defaults_and_selector() {
    let mut j = run(
        job,
        json!({"metadata": {"name": "pi"}, "spec": {"template": {"metadata": {"labels": {"app": "pi"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}}),
    );
    let s = &j["spec"];
    assert_eq!(
        (s["completions"].clone(), s["parallelism"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(s["backoffLimit"], 6);
    assert_eq!(s["completionMode"], "NonIndexed");
    assert_eq!(s["suspend"], false);
    assert_eq!(s["manualSelector"], false);
    assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(j["metadata"]["labels"], json!({"app": "pi"}));

    job_selector(&mut j, "u-1");
    let once = j.clone();
    job_selector(&mut j, "u-1");
    assert_eq!(once, j);
    assert_eq!(
        j["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
    );
    assert_eq!(
        j["spec"]["template"]["metadata"]["labels"],
        json!({"app": "pi", "job-name": "pi", "batch.kubernetes.io/job-name": "pi", "controller-uid": "u-1", "batch.kubernetes.io/controller-uid": "u-1"})
    );

    let parallel = run(job, json!({"spec": {"parallelism": 3}}));
    assert!(parallel["spec"].get("completions").is_none());
    let mut manual =
        json!({"spec": {"manualSelector": true, "selector": {"matchLabels": {"x": "y"}}}});
    job_selector(&mut manual, "u");
    assert_eq!(
        manual["spec"]["selector"],
        json!({"matchLabels": {"x": "y"}})
    );
}

#[test]
fn cron_job_defaults() {
    let c = run(
        cron_job,
        json!({"spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "b:1"}]}}}}}}),
    );
    let s = &c["spec"];
    assert_eq!(s["concurrencyPolicy"], "Allow");
    assert_eq!(s["suspend"], false);
    assert_eq!(s["successfulJobsHistoryLimit"], 3);
    assert_eq!(s["failedJobsHistoryLimit"], 1);
    assert_eq!(
        s["jobTemplate"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    assert!(s["jobTemplate"]["spec"].get("backoffLimit").is_none());
}

#[test]
fn service_defaults() {
    let s = run(
        service,
        json!({"spec": {"selector": {"app": "a"}, "ports": [{"port": 80}, {"port": 443, "targetPort": "https", "protocol": "TCP"}]}}),
    );
    let spec = &s["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(
        spec["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert_eq!(spec["ports"][1]["targetPort"], "https");
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert!(spec.get("externalTrafficPolicy").is_none());

    let lb = run(
        service,
        json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.5", "ports": [{"port": 80}], "sessionAffinity": "ClientIP"}}),
    );
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(lb["spec"]["clusterIPs"], json!(["10.43.0.5"]));
    assert_eq!(
        lb["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );

    let ext = run(
        service,
        json!({"spec": {"type": "ExternalName", "externalName": "x.example.com"}}),
    );
    assert!(ext["spec"].get("ipFamilyPolicy").is_none());
    assert!(ext["spec"].get("internalTrafficPolicy").is_none());

    let headless = run(service, json!({"spec": {"clusterIP": "None"}}));
    assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");
}

#[test]
fn service_updates_keep_allocated_values() {
    let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.7", "clusterIPs": ["10.43.0.7"],
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}});
    let mut new = json!({"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 8080}]}});
    service_keep_allocated(&mut new, &old);
    assert_eq!(new["spec"]["clusterIP"], "10.43.0.7");
    assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.0.7"]));
    assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
    let mut external = json!({"spec": {"type": "ExternalName", "externalName": "x.example.com"}});
    service_keep_allocated(&mut external, &old);
    assert!(external["spec"].get("clusterIP").is_none());
}

#[test]
fn secret_defaults() {
    let s = run(
        secret,
        json!({"stringData": {"user": "admin"}, "data": {"user": "eA==", "pw": "eQ=="}}),
    );
    assert_eq!(s["type"], "Opaque");
    assert_eq!(s["data"], json!({"user": "YWRtaW4=", "pw": "eQ=="}));
    assert!(s.get("stringData").is_none());
    let typed = run(secret, json!({"type": "kubernetes.io/tls"}));
    assert_eq!(typed["type"], "kubernetes.io/tls");
}

#[test]
fn namespace_defaults() {
    let n = run(namespace, json!({"metadata": {"name": "team"}}));
    assert_eq!(
        n["metadata"]["labels"],
        json!({"kubernetes.io/metadata.name": "team"})
    );
    assert_eq!(n["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(n["status"]["phase"], "Active");
    // Once stored, the namespace controller may remove the finalizer; it must stay removed.
    let stored = run(
        namespace,
        json!({"metadata": {"name": "team", "uid": "u", "resourceVersion": "5"}, "spec": {}, "status": {"phase": "Terminating"}}),
    );
    assert!(stored["spec"].get("finalizers").is_none());
    assert_eq!(stored["status"]["phase"], "Terminating");
}

#[test]
fn storage_and_node_defaults() {
    let pvc = run(
        persistent_volume_claim,
        json!({"spec": {"accessModes": ["ReadWriteOnce"]}}),
    );
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let pv = run(
        persistent_volume,
        json!({"spec": {"hostPath": {"path": "/d"}}}),
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["spec"]["hostPath"]["type"], "");
    assert_eq!(pv["status"]["phase"], "Pending");
    let n = run(node, json!({"status": {"capacity": {"cpu": "4"}}}));
    assert_eq!(n["status"]["allocatable"], json!({"cpu": "4"}));
    let mut untouched = json!({"x": 1});
    none(&mut untouched);
    assert_eq!(untouched, json!({"x": 1}));
}
