//! Scenario tests for the per-kind validators: objects as a client sends them, defaulted
//! like the pipeline does, and the `field: message` lines kubectl would print.

use serde_json::{json, Value};

use super::super::defaults;
use super::super::status::FieldError;
use super::*;

fn lines(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(FieldError::display).collect()
}

fn defaulted(mut v: Value, f: defaults::DefaultFn) -> Value {
    f(&mut v);
    v
}

fn pod_obj(spec: Value) -> Value {
    defaulted(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec}),
        defaults::pod,
    )
}

fn web_pod() -> Value {
    pod_obj(
        json!({"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "name": "http"}]}]}),
    )
}

#[test]
fn a_defaulted_pod_is_valid() {
    assert!(
        pod(&web_pod(), None).is_empty(),
        "{:?}",
        pod(&web_pod(), None)
    );
}

#[test]
fn pod_containers_are_required() {
    let p = pod_obj(json!({"containers": []}));
    assert_eq!(
        lines(&pod(&p, None)),
        vec!["spec.containers: Required value"]
    );
}

#[test]
fn pod_container_rules() {
    let p = pod_obj(json!({
        "initContainers": [{"name": "web", "image": "busybox"}],
        "containers": [
            {"name": "web", "image": ""},
            {"name": "Bad_Name", "image": "x", "ports": [
                {"containerPort": 70000},
                {"containerPort": 80, "protocol": "HTTP"},
                {"containerPort": 81, "name": "8080"}
            ]}
        ]
    }));
    let l = lines(&pod(&p, None));
    assert!(
        l.contains(&"spec.containers[0].image: Required value".to_string()),
        "{l:#?}"
    );
    assert!(l.iter().any(|e| e.starts_with(
        "spec.containers[1].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"
    )));
    assert!(l.contains(&"spec.containers[1].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_string()));
    assert!(l.contains(&"spec.containers[1].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".to_string()));
    assert!(l.contains(&"spec.containers[1].ports[2].name: Invalid value: \"8080\": must contain at least one letter (a-z)".to_string()));
    assert!(l.contains(&"spec.initContainers[0].name: Duplicate value: \"web\"".to_string()));
}

#[test]
fn pod_policies_list_upstreams_values() {
    let p = pod_obj(
        json!({"restartPolicy": "Sometimes", "dnsPolicy": "Cloud", "containers": [{"name": "c", "image": "x", "imagePullPolicy": "Maybe"}]}),
    );
    let l = lines(&pod(&p, None));
    assert!(l.contains(&"spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".to_string()), "{l:#?}");
    assert!(l.contains(&"spec.dnsPolicy: Unsupported value: \"Cloud\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"".to_string()));
    assert!(l.contains(&"spec.containers[0].imagePullPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\"".to_string()));
}

#[test]
fn pod_volumes_and_mounts() {
    let p = pod_obj(json!({
        "volumes": [{"name": "data"}, {"name": "data"}, {"name": "Cfg", "configMap": {"name": "c"}}],
        "containers": [{"name": "c", "image": "x", "volumeMounts": [
            {"name": "data", "mountPath": "/d"},
            {"name": "x", "mountPath": "/x"},
            {"name": "data", "mountPath": "/d"}
        ]}]
    }));
    let l = lines(&pod(&p, None));
    assert!(
        l.contains(&"spec.volumes[1].name: Duplicate value: \"data\"".to_string()),
        "{l:#?}"
    );
    assert!(l
        .iter()
        .any(|e| e.starts_with("spec.volumes[2].name: Invalid value: \"Cfg\"")));
    assert!(l.contains(&"spec.containers[0].volumeMounts[1].name: Not found: \"x\"".to_string()));
    assert!(l.contains(
        &"spec.containers[0].volumeMounts[2].mountPath: Invalid value: \"/d\": must be unique"
            .to_string()
    ));
    assert!(!l
        .iter()
        .any(|e| e.starts_with("spec.containers[0].volumeMounts[0]")));
}

#[test]
fn pod_probes_and_resources() {
    let p = pod_obj(json!({"containers": [{"name": "c", "image": "x",
        "livenessProbe": {"successThreshold": 2, "httpGet": {"port": "http"}},
        "readinessProbe": {},
        "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1", "memory": "lots"}}}]}));
    let l = lines(&pod(&p, None));
    assert!(
        l.contains(
            &"spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"
                .to_string()
        ),
        "{l:#?}"
    );
    assert!(l.contains(
        &"spec.containers[0].readinessProbe: Required value: must specify a handler type"
            .to_string()
    ));
    assert!(l.contains(&"spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1".to_string()));
    assert!(l.iter().any(|e| e.starts_with("spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match")));
}

#[test]
fn pod_env_rules() {
    let p = pod_obj(json!({"containers": [{"name": "c", "image": "x", "env": [
        {"name": "", "value": "x"},
        {"name": "A=B"},
        {"name": "C", "valueFrom": {}},
        {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}
    ]}]}));
    let l = lines(&pod(&p, None));
    assert!(
        l.contains(&"spec.containers[0].env[0].name: Required value".to_string()),
        "{l:#?}"
    );
    assert!(l
        .iter()
        .any(|e| e.starts_with("spec.containers[0].env[1].name: Invalid value: \"A=B\"")));
    assert!(l.contains(&"spec.containers[0].env[2].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`".to_string()));
    assert!(l.iter().any(|e| e.starts_with(
        "spec.containers[0].env[3].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.bogus\""
    )));
}

#[test]
fn pod_update_allows_only_images_and_friends() {
    let old = web_pod();
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    new["spec"]["activeDeadlineSeconds"] = json!(30);
    new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
    new["metadata"]["labels"] = json!({"a": "b"});
    assert!(
        pod(&new, Some(&old)).is_empty(),
        "{:?}",
        pod(&new, Some(&old))
    );

    let mut bad = old.clone();
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(8080);
    let l = lines(&pod(&bad, Some(&old)));
    assert_eq!(l.len(), 1, "{l:#?}");
    assert!(l[0].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"));

    let mut more = old.clone();
    more["spec"]["containers"] = json!([old["spec"]["containers"][0], {"name": "b", "image": "b", "terminationMessagePolicy": "File", "imagePullPolicy": "Always"}]);
    assert_eq!(
        lines(&pod(&more, Some(&old))),
        vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
    );

    let mut lowered = old.clone();
    lowered["spec"]["activeDeadlineSeconds"] = json!(10);
    let mut raised = lowered.clone();
    raised["spec"]["activeDeadlineSeconds"] = json!(20);
    assert_eq!(
        lines(&pod(&raised, Some(&lowered))),
        vec!["spec.activeDeadlineSeconds: Invalid value: 20: must be less than or equal to previous value"]
    );
}

#[test]
fn pod_create_forbids_ephemeral_containers() {
    let mut p = web_pod();
    p["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox"}]);
    assert!(lines(&pod(&p, None))
        .contains(&"spec.ephemeralContainers: Forbidden: cannot be set on create".to_string()));
}

fn deployment_obj(labels: Value, selector: Value, restart: &str) -> Value {
    defaulted(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": selector, "template": {"metadata": {"labels": labels},
                "spec": {"restartPolicy": restart, "containers": [{"name": "web", "image": "nginx"}]}}}}),
        defaults::deployment,
    )
}

#[test]
fn deployments() {
    let ok = deployment_obj(
        json!({"app": "web"}),
        json!({"matchLabels": {"app": "web"}}),
        "Always",
    );
    assert!(
        deployment(&ok, None).is_empty(),
        "{:?}",
        deployment(&ok, None)
    );

    let bad = deployment_obj(
        json!({"app": "other"}),
        json!({"matchLabels": {"app": "web"}}),
        "Never",
    );
    assert_eq!(lines(&deployment(&bad, None)), vec![
        "spec.template.metadata.labels: Invalid value: {\"app\":\"other\"}: `selector` does not match template `labels`",
        "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
    ]);

    let mut changed = ok.clone();
    changed["spec"]["selector"] = json!({"matchLabels": {"app": "web2"}});
    changed["spec"]["template"]["metadata"]["labels"] = json!({"app": "web2"});
    assert_eq!(
        lines(&deployment(&changed, Some(&ok))),
        vec!["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web2\"}}: field is immutable"]
    );

    let mut strat = ok.clone();
    strat["spec"]["strategy"] = json!({"type": "BlueGreen"});
    assert_eq!(
        lines(&deployment(&strat, None)),
        vec!["spec.strategy: Unsupported value: {\"type\":\"BlueGreen\"}: supported values: \"Recreate\", \"RollingUpdate\""]
    );

    let mut zero = ok.clone();
    zero["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": "0%"});
    zero["spec"]["replicas"] = json!(-1);
    assert_eq!(lines(&deployment(&zero, None)), vec![
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
    ]);

    let mut missing = ok.clone();
    missing["spec"]
        .as_object_mut()
        .map(|s| s.remove("selector"));
    let l = lines(&deployment(&missing, None));
    assert_eq!(l[0], "spec.selector: Required value");
}

#[test]
fn replica_sets_and_controllers() {
    let rs = defaulted(
        json!({"metadata": {"name": "r", "namespace": "d"}, "spec": {"selector": {"matchLabels": {}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        defaults::replica_set,
    );
    assert_eq!(lines(&replica_set(&rs, None)), vec!["spec.selector: Invalid value: {\"matchLabels\":{}}: empty selector is invalid for deployment"]);

    let rc = defaulted(
        json!({"metadata": {"name": "r", "namespace": "d"}, "spec": {
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        defaults::replication_controller,
    );
    assert!(
        replication_controller(&rc, None).is_empty(),
        "{:?}",
        replication_controller(&rc, None)
    );
    let mut rc2 = rc.clone();
    rc2["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
    assert_eq!(
        lines(&replication_controller(&rc2, None)),
        vec!["spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicationController is not Supported"]
    );
}

#[test]
fn stateful_sets() {
    let sts = defaulted(
        json!({"metadata": {"name": "db", "namespace": "d"}, "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        defaults::stateful_set,
    );
    assert!(
        stateful_set(&sts, None).is_empty(),
        "{:?}",
        stateful_set(&sts, None)
    );
    let mut scaled = sts.clone();
    scaled["spec"]["replicas"] = json!(3);
    assert!(stateful_set(&scaled, Some(&sts)).is_empty());
    let mut renamed = sts.clone();
    renamed["spec"]["serviceName"] = json!("other");
    assert_eq!(lines(&stateful_set(&renamed, Some(&sts))), vec![
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
    ]);
}

#[test]
fn daemon_sets() {
    let ds = defaulted(
        json!({"metadata": {"name": "agent", "namespace": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        defaults::daemon_set,
    );
    assert!(
        daemon_set(&ds, None).is_empty(),
        "{:?}",
        daemon_set(&ds, None)
    );
    let mut both = ds.clone();
    both["spec"]["updateStrategy"]["rollingUpdate"] = json!({"maxUnavailable": 1, "maxSurge": 1});
    assert_eq!(
        lines(&daemon_set(&both, None)),
        vec!["spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"]
    );
    let mut sel = ds.clone();
    sel["spec"]["selector"] = json!({"matchLabels": {"app": "b"}});
    sel["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
    assert_eq!(
        lines(&daemon_set(&sel, Some(&ds))),
        vec!["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"b\"}}: field is immutable"]
    );
}

fn job_obj(restart: &str) -> Value {
    let mut j = defaulted(
        json!({"metadata": {"name": "pi", "namespace": "d", "uid": "u-1"}, "spec": {"template": {"spec": {
            "restartPolicy": restart, "containers": [{"name": "pi", "image": "perl"}]}}}}),
        defaults::job,
    );
    defaults::job_selector(&mut j, "u-1");
    j
}

#[test]
fn jobs() {
    let ok = job_obj("Never");
    assert!(job(&ok, None).is_empty(), "{:?}", job(&ok, None));

    let always = job_obj("");
    assert_eq!(lines(&job(&always, None)), vec!["spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""]);

    let mut changed = ok.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("python");
    let l = lines(&job(&changed, Some(&ok)));
    assert_eq!(l.len(), 1, "{l:#?}");
    assert!(
        l[0].starts_with("spec.template: Invalid value: {")
            && l[0].ends_with("}: field is immutable")
    );

    let mut parallel = ok.clone();
    parallel["spec"]["parallelism"] = json!(3);
    assert!(job(&parallel, Some(&ok)).is_empty());

    let unlabeled = defaulted(
        json!({"metadata": {"name": "pi", "namespace": "d", "uid": "u-1"}, "spec": {"selector": {"matchLabels": {"x": "y"}},
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}}),
        defaults::job,
    );
    let l = lines(&job(&unlabeled, None));
    assert!(
        l.contains(
            &"spec.template.metadata.labels[controller-uid]: Required value: must be 'u-1'"
                .to_string()
        ),
        "{l:#?}"
    );
    assert!(l.contains(&"spec.selector: Invalid value: {\"matchLabels\":{\"x\":\"y\"}}: `selector` not auto-generated".to_string()));
}

#[test]
fn cron_jobs() {
    let cj = |schedule: &str, name: &str| {
        defaulted(
            json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
            defaults::cron_job,
        )
    };
    assert!(cron_job(&cj("*/1 * * * *", "hello"), None).is_empty());
    assert_eq!(
        lines(&cron_job(&cj("every minute", "hello"), None)),
        vec!["spec.schedule: Invalid value: \"every minute\": expected exactly 5 fields, found 2: [every minute]"]
    );
    let long = "a".repeat(53);
    assert_eq!(
        lines(&cron_job(&cj("@hourly", &long), None)),
        vec![format!(
            "metadata.name: Invalid value: \"{long}\": must be no more than 52 characters"
        )]
    );
    let mut bad = cj("@daily", "x");
    bad["spec"]["concurrencyPolicy"] = json!("Sometimes");
    assert_eq!(
        lines(&cron_job(&bad, None)),
        vec!["spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\""]
    );
}

fn svc(spec: Value) -> Value {
    defaulted(
        json!({"metadata": {"name": "web", "namespace": "d"}, "spec": spec}),
        defaults::service,
    )
}

#[test]
fn services() {
    assert!(service(
        &svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})),
        None
    )
    .is_empty());
    assert_eq!(
        lines(&service(&svc(json!({"selector": {"app": "web"}})), None)),
        vec!["spec.ports: Required value"]
    );
    assert!(service(
        &svc(json!({"clusterIP": "None", "selector": {"app": "web"}})),
        None
    )
    .is_empty());
    assert!(service(
        &svc(json!({"type": "ExternalName", "externalName": "db.example.com"})),
        None
    )
    .is_empty());

    let l = lines(&service(
        &svc(
            json!({"ports": [{"port": 0}, {"port": 80, "targetPort": "8080", "protocol": "ICMP"}]}),
        ),
        None,
    ));
    assert!(
        l.contains(&"spec.ports[0].name: Required value".to_string()),
        "{l:#?}"
    );
    assert!(l.contains(
        &"spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive".to_string()
    ));
    assert!(l.contains(&"spec.ports[1].targetPort: Invalid value: \"8080\": must contain at least one letter (a-z)".to_string()));
    assert!(l.contains(&"spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".to_string()));

    let l = lines(&service(
        &svc(json!({"type": "Magic", "ports": [{"port": 80}]})),
        None,
    ));
    assert!(l.contains(&"spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".to_string()), "{l:#?}");

    let old = svc(json!({"clusterIP": "10.43.0.10", "ports": [{"port": 80}]}));
    let new = svc(json!({"clusterIP": "10.43.0.11", "ports": [{"port": 80}]}));
    assert_eq!(
        lines(&service(&new, Some(&old))),
        vec!["spec.clusterIPs[0]: Invalid value: [\"10.43.0.11\"]: may not change once set"]
    );
    let to_external = svc(json!({"type": "ExternalName", "externalName": "x.example.com"}));
    assert!(
        service(&to_external, Some(&old)).is_empty(),
        "{:?}",
        service(&to_external, Some(&old))
    );

    let digit = defaulted(
        json!({"metadata": {"name": "1web", "namespace": "d"}, "spec": {"ports": [{"port": 80}]}}),
        defaults::service,
    );
    assert!(lines(&service(&digit, None))[0]
        .starts_with("metadata.name: Invalid value: \"1web\": a DNS-1035 label"));
}

#[test]
fn config_maps() {
    let cm = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"good.key": "v", "bad/key": "v"}});
    let l = lines(&config_map(&cm, None));
    assert_eq!(l.len(), 1);
    assert!(l[0].starts_with("data[bad/key]: Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'"));

    let big = json!({"metadata": {"name": "c"}, "data": {"k": "x".repeat(MAX_CONFIG_SIZE + 1)}});
    assert_eq!(
        lines(&config_map(&big, None)),
        vec!["[]: Too long: may not be more than 1048576 bytes"]
    );

    let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
    let new = json!({"metadata": {"name": "c"}, "immutable": false, "data": {"a": "2"}});
    assert_eq!(
        lines(&config_map(&new, Some(&old))),
        vec![
            "immutable: Forbidden: field is immutable when `immutable` is set",
            "data: Forbidden: field is immutable when `immutable` is set",
        ]
    );
    let labeled = json!({"metadata": {"name": "c", "labels": {"x": "y"}}, "immutable": true, "data": {"a": "1"}});
    assert!(config_map(&labeled, Some(&old)).is_empty());
}

#[test]
fn secrets() {
    let s = defaulted(
        json!({"metadata": {"name": "s"}, "data": {"ok": "aGk=", "bad": "a$b="}}),
        defaults::secret,
    );
    assert_eq!(lines(&secret(&s, None)), vec!["data[bad]: Invalid value: \"<secret contents redacted>\": illegal base64 data at input byte 1"]);
    assert_eq!(
        base64_error(&s, "data"),
        Some("illegal base64 data at input byte 1".to_string())
    );

    let tls = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
    assert_eq!(
        lines(&secret(&tls, None)),
        vec!["data[tls.key]: Required value"]
    );

    let old = json!({"metadata": {"name": "s"}, "type": "Opaque", "immutable": true, "data": {"a": "eA=="}});
    let new = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/basic-auth", "immutable": true, "data": {"username": "eA=="}});
    assert_eq!(
        lines(&secret(&new, Some(&old))),
        vec![
            "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable",
            "data: Forbidden: field is immutable when `immutable` is set",
        ]
    );
}

#[test]
fn base64_like_go() {
    assert_eq!(decode_base64("aGVsbG8="), Ok(b"hello".to_vec()));
    assert_eq!(decode_base64("aGVs\nbG8="), Ok(b"hello".to_vec()));
    assert_eq!(decode_base64(""), Ok(Vec::new()));
    assert_eq!(decode_base64("abc"), Err(0));
    assert_eq!(decode_base64("aGVsbG8"), Err(4));
    assert_eq!(decode_base64("aG=="), Ok(b"h".to_vec()));
    assert_eq!(decode_base64("aG==x"), Err(4));
}

#[test]
fn namespaces_and_nodes() {
    let ns = json!({"metadata": {"name": "team"}, "spec": {"finalizers": ["kubernetes", "custom", "example.com/x"]}});
    assert_eq!(
        lines(&namespace(&ns, None)),
        vec!["spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"]
    );
    let node_obj = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.42.0.0/24"], "taints": [
        {"key": "k", "effect": "NoSchedule"}, {"key": "k", "effect": "NoSchedule"}, {"key": "j", "effect": "Sometimes"}]}});
    let l = lines(&node(&node_obj, None));
    assert_eq!(l[0], "metadata.taints[1]: Duplicate value: {\"key\":\"k\",\"effect\":\"NoSchedule\"}: taints must be unique by key and effect pair");
    assert!(l[1].starts_with("metadata.taints[2].effect: Unsupported value: \"Sometimes\""));
    let moved = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.42.1.0/24"]}});
    assert_eq!(
        lines(&node(&moved, Some(&node_obj))),
        vec!["spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"]
    );
}

#[test]
fn volumes_and_claims() {
    let pvc = defaulted(
        json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {}}),
        defaults::persistent_volume_claim,
    );
    assert_eq!(
        lines(&persistent_volume_claim(&pvc, None)),
        vec![
            "spec.accessModes: Required value: at least 1 access mode is required",
            "spec.resources[storage]: Required value",
        ]
    );
    let ok = defaulted(
        json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        defaults::persistent_volume_claim,
    );
    assert!(persistent_volume_claim(&ok, None).is_empty());
    let mut grown = ok.clone();
    grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    let l = lines(&persistent_volume_claim(&grown, Some(&ok)));
    assert!(l[0].starts_with("spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n"));
    let mut bound = ok.clone();
    bound["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}});
    let mut grown_bound = bound.clone();
    grown_bound["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    assert!(persistent_volume_claim(&grown_bound, Some(&bound)).is_empty());

    let pv = defaulted(
        json!({"metadata": {"name": "v"}, "spec": {"accessModes": ["ReadWriteOnce"]}}),
        defaults::persistent_volume,
    );
    assert_eq!(
        lines(&persistent_volume(&pv, None)),
        vec![
            "spec.capacity: Required value",
            "spec.capacity: Unsupported value: null: supported values: \"storage\"",
            "spec: Required value: must specify a volume type",
        ]
    );
    let good = defaulted(
        json!({"metadata": {"name": "v"}, "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/data"}}}),
        defaults::persistent_volume,
    );
    assert!(
        persistent_volume(&good, None).is_empty(),
        "{:?}",
        persistent_volume(&good, None)
    );
}

#[test]
fn helpers_are_public() {
    assert!(is_dns1123_subdomain("ok.example").is_empty());
    assert!(!is_dns1123_label("no.dots").is_empty());
    assert!(is_qualified_name("example.com/x").is_empty());
    assert!(is_valid_label_value("").is_empty());
    assert!(labels(json!({"a": "b"}).as_object(), "metadata.labels").is_empty());
    assert!(annotations(json!({"a": "b"}).as_object(), "metadata.annotations").is_empty());
    assert!(none(&json!({}), None).is_empty());
}
