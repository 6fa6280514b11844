use super::*;
use serde_json::json;

fn doc(group: &str, version: &str) -> Value {
    let bytes = group_version_document(group, version).expect("served group-version");
    serde_json::from_slice(bytes).expect("document is JSON")
}

/// Follows `$ref` (and a single `allOf` wrapper) the way kubectl's explain templates do.
fn resolve<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
    loop {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/components/schemas/").expect("local ref");
            s = &doc["components"]["schemas"][name];
        } else if let Some(first) = s.get("allOf").and_then(|a| a.get(0)) {
            s = first;
        } else {
            return s;
        }
    }
}

/// What `kubectl explain <resource>.<path>` does with a v3 document: GVK from the
/// resource's path operations, schema by GVK extension, then properties/items/refs.
fn explain<'a>(doc: &'a Value, path: &str, field_path: &[&str]) -> (&'a Value, &'a Value) {
    let ops = &doc["paths"][path];
    let gvk = ["get", "post", "put", "patch", "delete"]
        .iter()
        .find_map(|m| ops.get(*m)?.get("x-kubernetes-group-version-kind"))
        .expect("operation with GVK");
    let (_, kind) = doc["components"]["schemas"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, s)| {
            s.get("x-kubernetes-group-version-kind")
                .and_then(Value::as_array)
                .is_some_and(|l| l.contains(gvk))
        })
        .expect("schema with the GVK");
    let mut field = kind;
    let mut s = kind;
    for f in field_path {
        s = resolve(doc, s);
        if let Some(items) = s.get("items") {
            s = resolve(doc, items);
        }
        field = s["properties"]
            .get(*f)
            .unwrap_or_else(|| panic!("field {f}"));
        s = field;
    }
    (field, resolve(doc, s))
}

#[test]
fn explain_finds_container_liveness_probe() {
    let d = doc("", "v1");
    let (field, probe) = explain(
        &d,
        "/api/v1/namespaces/{namespace}/pods/{name}",
        &["spec", "containers", "livenessProbe"],
    );
    assert!(field["description"]
        .as_str()
        .unwrap()
        .starts_with("Periodic probe of container liveness."));
    assert!(probe["description"]
        .as_str()
        .unwrap()
        .starts_with("Probe describes a health check"));
    assert!(probe["properties"]["httpGet"].is_object());

    let d = doc("apps", "v1");
    let (field, _) = explain(
        &d,
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        &["spec", "template", "spec", "containers", "env", "valueFrom"],
    );
    assert!(field["description"]
        .as_str()
        .unwrap()
        .contains("Source for"));
}

#[test]
fn kinds_carry_gvk_and_upstream_shapes() {
    let d = doc("", "v1");
    let schemas = &d["components"]["schemas"];
    let pod = &schemas["io.k8s.api.core.v1.Pod"];
    assert_eq!(
        pod["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "Pod", "version": "v1"}])
    );
    assert_eq!(
        schemas["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "PodList", "version": "v1"}])
    );
    // References with a description are wrapped in allOf (OpenAPI 3.0 ignores $ref
    // siblings); embedded structs that cannot be null default to {}.
    let spec = &pod["properties"]["spec"];
    assert_eq!(
        spec["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}])
    );
    assert!(spec["description"].is_string());
    assert_eq!(pod["properties"]["metadata"]["default"], json!({}));
    assert!(
        pod.get("required").is_none(),
        "upstream does not require metadata"
    );
    assert_eq!(
        schemas["io.k8s.api.core.v1.PodList"]["required"],
        json!(["items"])
    );
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["items"]["default"], json!({}));
    let volumes = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
    assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
    let finalizers =
        &schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["finalizers"];
    assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");
    assert!(finalizers.get("x-kubernetes-patch-merge-key").is_none());

    let apps = doc("apps", "v1");
    let scale = &apps["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"];
    assert_eq!(
        scale["x-kubernetes-group-version-kind"],
        json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}])
    );
    assert_eq!(
        apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]
            ["strategy"]["x-kubernetes-patch-strategy"],
        "retainKeys"
    );
}

/// Checks the parts of OpenAPI 3.0 a generated document could get wrong: every `$ref`
/// resolves, no `$ref` has siblings, no JSON-Schema-only keywords.
fn check_schema(doc: &Value, s: &Value, at: &str) {
    match s {
        Value::Object(o) => {
            if let Some(r) = o.get("$ref") {
                let r = r.as_str().unwrap();
                assert_eq!(o.len(), 1, "$ref with siblings at {at}");
                let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| {
                    panic!("non-local ref {r} at {at}");
                });
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "dangling {r} at {at}"
                );
            }
            for bad in [
                "$defs",
                "const",
                "examples",
                "$schema",
                "unevaluatedProperties",
            ] {
                assert!(!o.contains_key(bad), "{bad} at {at}");
            }
            if let Some(t) = o.get("type") {
                assert!(t.is_string(), "type must be one string at {at}");
            }
            for (k, v) in o {
                // Property names and examples are data, not schemas.
                if k == "properties" {
                    for (p, ps) in v.as_object().unwrap() {
                        check_schema(doc, ps, &format!("{at}.{p}"));
                    }
                } else if k != "default" && k != "enum" {
                    check_schema(doc, v, &format!("{at}/{k}"));
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                check_schema(doc, v, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

#[test]
fn documents_are_openapi_3_0_and_cover_every_resource() {
    for (group, version) in resources::groups() {
        let d = doc(group, version);
        assert_eq!(d["openapi"], "3.0.0");
        check_schema(&d, &d["components"], "components");
        check_schema(&d, &d["paths"], "paths");
        for (path, item) in d["paths"].as_object().unwrap() {
            assert!(path.starts_with('/'));
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                assert!(op["responses"].is_object(), "{method} {path}");
                for p in op["parameters"].as_array().unwrap() {
                    assert!(
                        p["name"].is_string() && p["in"].is_string() && p["schema"].is_object()
                    );
                }
            }
        }
        for r in resources::RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            // Review kinds are answered, never stored, so they need no typed schema.
            if r.ephemeral {
                continue;
            }
            assert!(
                kinds::find(r.group, r.version, r.kind).is_some(),
                "{}/{} has no k8s-openapi type in schema::kinds",
                r.group,
                r.kind
            );
            let gvk = json!({"group": r.group, "kind": r.kind, "version": r.version});
            // kubectl takes the first patch operation with the GVK it meets, in map order:
            // every one of them must offer fieldValidation and strategic merge patch.
            let patches: Vec<&Value> = d["paths"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|p| p.get("patch"))
                .filter(|op| op["x-kubernetes-group-version-kind"] == gvk)
                .collect();
            assert!(!patches.is_empty(), "no patch op for {}", r.kind);
            for op in patches {
                let names: Vec<&str> = op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["in"] == "query")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                for want in ["dryRun", "fieldManager", "fieldValidation", "force"] {
                    assert!(names.contains(&want), "{} patch lacks {want}", r.kind);
                }
                assert!(
                    op["requestBody"]["content"]["application/strategic-merge-patch+json"]
                        .is_object()
                );
            }
            let name = (kinds::find(r.group, r.version, r.kind).unwrap().name)();
            assert!(d["components"]["schemas"][name.as_ref()].is_object());
        }
    }
    assert!(group_version_document("nope", "v1").is_none());
}

fn unknown(group: &str, kind: &str, v: Value) -> Vec<String> {
    let version = resources::RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
        .unwrap()
        .version;
    unknown_fields(group, version, kind, &v)
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "tier": "frontend"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{
                "manager": "kubectl",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "time": "2024-01-01T00:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {".": {}}}}
            }]
        },
        "spec": {
            "replicas": 3,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend"]}]},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "frontend"}},
                "spec": {
                    "serviceAccountName": "web",
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": true, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
                    }]}},
                    "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}],
                    "initContainers": [{"name": "init", "image": "busybox", "command": ["sh", "-c", "true"]}],
                    "containers": [{
                        "name": "web",
                        "image": "nginx:1.27",
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["-g", "daemon off;"],
                        "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                        "env": [
                            {"name": "MODE", "value": "prod"},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": false}}},
                            {"name": "LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}
                        ],
                        "envFrom": [{"configMapRef": {"name": "web-config"}, "prefix": "CFG_"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": 1, "memory": "256Mi"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "initialDelaySeconds": 5, "periodSeconds": 10},
                        "readinessProbe": {"tcpSocket": {"port": 80}, "failureThreshold": 3},
                        "startupProbe": {"exec": {"command": ["cat", "/tmp/ready"]}},
                        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "config", "mountPath": "/etc/web", "readOnly": true}]
                    }],
                    "volumes": [
                        {"name": "data", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                        {"name": "config", "configMap": {"name": "web-config", "items": [{"key": "a", "path": "a.conf"}], "defaultMode": 420}},
                        {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}}
                    ]
                }
            }
        },
        "status": {"replicas": 3, "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": "2024-01-01T00:00:00Z"}]}
    })
}

#[test]
fn valid_objects_have_no_unknown_fields() {
    assert_eq!(
        unknown("apps", "Deployment", deployment()),
        Vec::<String>::new()
    );

    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    pod["spec"] = deployment()["spec"]["template"]["spec"].clone();
    pod["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
    pod["spec"]["hostAliases"] = json!([{"ip": "10.0.0.1", "hostnames": ["db"]}]);
    pod["spec"]["dnsConfig"] =
        json!({"nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]});
    pod["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]);
    pod["status"] = json!({"phase": "Running", "podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}],
        "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "nginx", "imageID": "", "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}]});
    assert_eq!(unknown("", "Pod", pod), Vec::<String>::new());

    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080, "protocol": "TCP"}],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "externalTrafficPolicy": "Local"
        },
        "status": {"loadBalancer": {}}
    });
    assert_eq!(unknown("", "Service", svc), Vec::<String>::new());

    let cron = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "backup"},
        "spec": {
            "schedule": "*/5 * * * *",
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": {"job": "backup"}},
                "spec": {
                    "backoffLimit": 2,
                    "ttlSecondsAfterFinished": 600,
                    "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
                    "template": {"spec": {
                        "restartPolicy": "OnFailure",
                        "containers": [{"name": "b", "image": "busybox", "command": ["sh", "-c", "date"]}]
                    }}
                }
            }
        },
        "status": {"lastScheduleTime": "2024-01-01T00:00:00Z", "active": [{"kind": "Job", "name": "backup-1"}]}
    });
    assert_eq!(unknown("batch", "CronJob", cron), Vec::<String>::new());

    // A CRD's schema is JSONSchemaProps all the way down, with free-form defaults.
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                        "properties": {"size": {"type": "integer", "default": 3},
                            "tags": {"type": "array", "items": {"type": "string"}},
                            "extra": {"type": "object", "default": {"any": {"thing": 1}}}}}
                }}}}]
        }
    });
    assert_eq!(
        unknown("apiextensions.k8s.io", "CustomResourceDefinition", crd),
        Vec::<String>::new()
    );
}

#[test]
fn typos_are_reported_with_upstream_paths() {
    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("nginx");
    d["spec"]["foo"] = json!(1);
    d["extra"] = json!({"nested": true});
    d["spec"]["template"]["spec"]["volumes"][1]["configMap"]["nmae"] = json!("x");
    d["spec"]["template"]["spec"]["containers"][0]["env"][1]["valueFrom"]["fieldRef"]
        ["feildPath"] = json!("x");
    d["spec"]["template"]["spec"]["containers"][0]["env"][2]["valueFrom"]["secretRef"] =
        json!({"name": "x"});
    d["metadata"]["lables"] = json!({"a": "b"});
    d["spec"]["template"]["spec"]["containers"][0]["resources"]["limitz"] = json!({});
    assert_eq!(
        unknown("apps", "Deployment", d),
        vec![
            "metadata.lables",
            "spec.template.spec.containers[0].env[1].valueFrom.fieldRef.feildPath",
            "spec.template.spec.containers[0].env[2].valueFrom.secretRef",
            "spec.template.spec.containers[0].resources.limitz",
            "spec.template.spec.containers[0].imagee",
            "spec.template.spec.volumes[1].configMap.nmae",
            "spec.foo",
            "extra",
        ]
    );

    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"properties": {
            "spec": {"typ": "object", "items": {"type": "string", "formatt": "x"}}
        }}}}]}
    });
    assert_eq!(
        unknown("apiextensions.k8s.io", "CustomResourceDefinition", crd),
        vec![
            "spec.versions[0].schema.openAPIV3Schema.properties.spec.typ",
            "spec.versions[0].schema.openAPIV3Schema.properties.spec.items.formatt",
        ]
    );

    // Maps of structs name the key; a kind without a schema reports nothing.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"a": "b"}, "binaryData": {"x": "AA=="}, "immutable": true, "dta": {}});
    assert_eq!(unknown("", "ConfigMap", cm), vec!["dta"]);
    assert!(unknown_fields("example.com", "v1", "Widget", &json!({"x": 1})).is_empty());
}

#[test]
fn duplicate_fields_are_found_in_the_raw_body() {
    assert_eq!(
        duplicate_fields(br#"{"metadata":{"name":"a","name":"b"}}"#),
        vec!["metadata.name"]
    );
    assert_eq!(
        duplicate_fields(
            br#"{"kind":"Pod","spec":{"containers":[{"name":"a","image":"x"},{"name":"b","image":"y","image":"z"}]},"kind":"Pod"}"#
        ),
        vec!["spec.containers[1].image", "kind"]
    );
    assert!(duplicate_fields(br#"{"a":{"b":1},"c":{"b":2}}"#).is_empty());
    assert!(duplicate_fields(b"").is_empty());
    assert!(duplicate_fields(b"not json").is_empty());
}

/// Prints document sizes and generation time (run it alone for the real time).
#[test]
fn report_sizes_and_generation_time() {
    let start = std::time::Instant::now();
    let mut total = 0;
    let mut sizes = Vec::new();
    for (group, version) in resources::groups() {
        let n = group_version_document(group, version).unwrap().len();
        total += n;
        sizes.push(format!("{group}/{version}={}KiB", n / 1024));
    }
    let docs = start.elapsed();
    let start = std::time::Instant::now();
    let _ = unknown("apps", "Deployment", deployment());
    let validation = start.elapsed();
    eprintln!(
        "openapi v3: {} KiB in {} documents, built in {docs:?}; validation schemas in \
         {validation:?} (run alone: other tests may have built them); {}",
        total / 1024,
        sizes.len(),
        sizes.join(" ")
    );
}
