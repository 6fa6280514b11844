//! End-to-end API tests: the real `k3rs server` binary driven by the real `kubectl`.
//! No root needed. Each test starts its own server on a free loopback port.

mod common;

use common::{eventually, Server};
use serde_json::Value;

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: c
    image: busybox:1.36
    command: [\"sleep\", \"3600\"]
";

#[test]
fn version_and_system_namespaces() {
    let s = Server::start();
    let v = s.kubectl(&["version", "-o", "json"]);
    let doc: Value = serde_json::from_str(v.ok()).expect("version json");
    assert_eq!(doc["serverVersion"]["gitVersion"], "v1.35.0+k3rs1");
    assert_eq!(doc["serverVersion"]["major"], "1");
    let ns = s.kubectl(&["get", "namespaces", "-o", "name"]);
    let mut names: Vec<&str> = ns.ok().lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "namespace/default",
            "namespace/kube-node-lease",
            "namespace/kube-public",
            "namespace/kube-system"
        ]
    );
    // Default table output is served by the server (NAME column first).
    let table = s.kubectl(&["get", "ns", "default"]);
    assert!(table.ok().starts_with("NAME"), "{}", table.stdout);
}

#[test]
fn pod_create_get_label_annotate_replace_delete() {
    let s = Server::start();
    let f = s.manifest("pod.yaml", POD);
    assert_eq!(
        s.kubectl(&["create", "-f", &f]).ok().trim(),
        "pod/web created"
    );
    assert_eq!(
        s.kubectl(&["get", "pods", "-o", "name"]).ok().trim(),
        "pod/web"
    );
    // Upstream defaults are applied.
    let jp = s.kubectl(&["get", "pod", "web", "-o", "jsonpath={.spec.restartPolicy} {.spec.terminationGracePeriodSeconds} {.spec.dnsPolicy} {.spec.containers[0].imagePullPolicy} {.status.phase}"]);
    assert_eq!(jp.ok(), "Always 30 ClusterFirst IfNotPresent Pending");
    let json: Value =
        serde_json::from_str(s.kubectl(&["get", "pod", "web", "-o", "json"]).ok()).unwrap();
    assert_eq!(json["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(json["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(
        json["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    let yaml = s.kubectl(&["get", "pod", "web", "-o", "yaml"]);
    assert!(yaml.ok().contains("image: busybox:1.36"));

    assert_eq!(
        s.kubectl(&["label", "pod", "web", "tier=frontend"])
            .ok()
            .trim(),
        "pod/web labeled"
    );
    assert_eq!(
        s.kubectl(&["get", "pods", "-l", "tier=frontend", "-o", "name"])
            .ok()
            .trim(),
        "pod/web"
    );
    assert_eq!(
        s.kubectl(&["annotate", "pod", "web", "note=hello"])
            .ok()
            .trim(),
        "pod/web annotated"
    );
    assert_eq!(
        s.kubectl(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ])
        .ok(),
        "hello"
    );

    // replace: only the image may change on a pod.
    let mut live: Value =
        serde_json::from_str(s.kubectl(&["get", "pod", "web", "-o", "json"]).ok()).unwrap();
    live["spec"]["containers"][0]["image"] = "busybox:1.37".into();
    let f2 = s.manifest("pod-live.json", &live.to_string());
    assert_eq!(
        s.kubectl(&["replace", "-f", &f2]).ok().trim(),
        "pod/web replaced"
    );
    assert_eq!(
        s.kubectl(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ])
        .ok(),
        "busybox:1.37"
    );
    // The same (now stale) resourceVersion again is a conflict.
    let stale = s.kubectl(&["replace", "-f", &f2]);
    assert!(
        stale.err().contains("Error from server (Conflict): error when replacing \"") && stale.stderr.contains("Operation cannot be fulfilled on pods \"web\": the object has been modified; please apply your changes to the latest version and try again"),
        "{}",
        stale.stderr
    );
    // Changing anything else in a pod spec is forbidden.
    live["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    live["spec"]["restartPolicy"] = "Never".into();
    let f3 = s.manifest("pod-bad.json", &live.to_string());
    let bad = s.kubectl(&["replace", "-f", &f3]);
    assert!(bad.err().contains("The Pod \"web\" is invalid: spec: Forbidden: pod updates may not change fields other than"), "{}", bad.stderr);

    let del = s.kubectl(&["delete", "-f", &f]);
    assert!(
        del.ok().starts_with("pod \"web\" deleted"),
        "{}",
        del.stdout
    );
    let gone = s.kubectl(&["get", "pod", "web"]);
    assert_eq!(
        gone.err().trim(),
        "Error from server (NotFound): pods \"web\" not found"
    );
}

#[test]
fn errors_match_kubectl_wording() {
    let s = Server::start();
    let f = s.manifest("pod.yaml", POD);
    s.kubectl(&["create", "-f", &f]).ok();
    let again = s.kubectl(&["create", "-f", &f]);
    assert_eq!(again.err().trim(), format!("Error from server (AlreadyExists): error when creating \"{f}\": pods \"web\" already exists"));

    let no_image = s.manifest(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n",
    );
    let r = s.kubectl(&["create", "-f", &no_image]);
    assert!(
        r.err()
            .contains("The Pod \"bad\" is invalid: spec.containers[0].image: Required value"),
        "{}",
        r.stderr
    );

    let bad_name = s.manifest(
        "badname.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    let r = s.kubectl(&["create", "-f", &bad_name]);
    assert!(r.err().contains("The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", r.stderr);

    let long = "a".repeat(254);
    let long_name = s.manifest(
        "long.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {long}\n"),
    );
    let r = s.kubectl(&["create", "-f", &long_name]);
    assert!(
        r.err().contains("must be no more than 253 characters"),
        "{}",
        r.stderr
    );

    let other_ns = s.manifest(
        "ns.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: nope\n",
    );
    let r = s.kubectl(&["create", "-f", &other_ns]);
    assert_eq!(r.err().trim(), format!("Error from server (NotFound): error when creating \"{other_ns}\": namespaces \"nope\" not found"));

    assert_eq!(
        s.kubectl(&["get", "foos"]).err().trim(),
        "error: the server doesn't have a resource type \"foos\""
    );
    let raw = s.kubectl(&["get", "--raw", "/api/v1/foos"]);
    assert_eq!(
        raw.err().trim(),
        "Error from server (NotFound): the server could not find the requested resource"
    );
    // Nothing bad was written.
    assert_eq!(
        s.kubectl(&[
            "get",
            "cm",
            "-A",
            "-o",
            "name",
            "--field-selector=metadata.name!=kube-root-ca.crt"
        ])
        .ok()
        .trim(),
        ""
    );
}

#[test]
fn bad_raw_bodies_get_clear_4xx_and_write_nothing() {
    let s = Server::start();
    let post = |body: &str, path: &str| {
        let f = s.manifest("raw.json", body);
        s.kubectl(&["create", "--raw", path, "-f", &f])
    };
    let r = post("{not json", "/api/v1/namespaces/default/configmaps");
    assert!(
        r.err().contains("Error from server (BadRequest)"),
        "{}",
        r.stderr
    );
    let r = post(
        r#"{"apiVersion":"v1","kind":"Nope","metadata":{"name":"x"}}"#,
        "/api/v1/namespaces/default/configmaps",
    );
    assert!(
        r.err().contains("Error from server (BadRequest)"),
        "{}",
        r.stderr
    );
    let r = post(
        r#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        "/api/v1/namespaces/default/configmaps",
    );
    assert!(
        r.err().contains(
            "the API version in the data (apps/v1) does not match the expected API version (v1)"
        ),
        "{}",
        r.stderr
    );
    let r = post(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"kube-system"}}"#,
        "/api/v1/namespaces/default/configmaps",
    );
    assert!(
        r.err().contains(
            "the namespace of the provided object does not match the namespace sent on the request"
        ),
        "{}",
        r.stderr
    );
    let r = post(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x","ports":[{"containerPort":"eighty"}]}]}}"#,
        "/api/v1/namespaces/default/pods",
    );
    assert!(
        r.err().contains("Error from server (BadRequest)")
            && r.stderr.contains("cannot be handled as a Pod"),
        "{}",
        r.stderr
    );
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let r = post(&big, "/api/v1/namespaces/default/configmaps");
    assert!(
        r.err().contains("RequestEntityTooLarge") || r.stderr.contains("too large"),
        "{}",
        r.stderr
    );
    let r = post(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        "/api/v1/namespaces/default/nosuchthings",
    );
    assert!(r.err().contains("NotFound"), "{}", r.stderr);
    assert_eq!(
        s.kubectl(&[
            "get",
            "cm,pods",
            "-A",
            "-o",
            "name",
            "--field-selector=metadata.name!=kube-root-ca.crt"
        ])
        .ok()
        .trim(),
        ""
    );
}

#[test]
fn selectors_delete_variants_and_generate_name() {
    let s = Server::start();
    for (n, app) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        s.kubectl(&["create", "configmap", n, "--from-literal=k=v"])
            .ok();
        s.kubectl(&["label", "configmap", n, &format!("app={app}")])
            .ok();
    }
    assert_eq!(
        s.kubectl(&["get", "cm", "-l", "app=a", "-o", "name"])
            .ok()
            .trim(),
        "configmap/a1\nconfigmap/a2"
    );
    assert_eq!(
        s.kubectl(&["get", "cm", "-l", "app in (b),app!=a", "-o", "name"])
            .ok()
            .trim(),
        "configmap/b1"
    );
    assert_eq!(
        s.kubectl(&[
            "get",
            "cm",
            "--field-selector",
            "metadata.name=a2",
            "-o",
            "name"
        ])
        .ok()
        .trim(),
        "configmap/a2"
    );
    assert_eq!(
        s.kubectl(&[
            "get",
            "cm",
            "--field-selector",
            "metadata.name!=a2",
            "-l",
            "app",
            "-o",
            "name"
        ])
        .ok()
        .trim(),
        "configmap/a1\nconfigmap/b1"
    );
    let bad = s.kubectl(&["get", "cm", "--field-selector", "spec.nope=1"]);
    assert!(
        bad.err().contains("field label not supported: spec.nope"),
        "{}",
        bad.stderr
    );
    // Chunked list: kubectl follows continue tokens.
    assert_eq!(
        s.kubectl(&["get", "cm", "--chunk-size=1", "-o", "name"])
            .ok()
            .lines()
            .filter(|l| *l != "configmap/kube-root-ca.crt")
            .count(),
        3
    );

    let d = s.kubectl(&["delete", "cm", "-l", "app=a"]);
    assert_eq!(d.ok().lines().count(), 2, "{}", d.stdout);
    // kube-root-ca.crt (recreated by its controller) is not the test's.
    let mine = [
        "get",
        "cm",
        "-o",
        "name",
        "--field-selector=metadata.name!=kube-root-ca.crt",
    ];
    assert_eq!(s.kubectl(&mine).ok().trim(), "configmap/b1");
    s.kubectl(&["delete", "cm", "--all"]).ok();
    assert_eq!(s.kubectl(&mine).ok().trim(), "");

    let g = s.manifest(
        "gen.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\n",
    );
    let out = s.kubectl(&["create", "-f", &g]);
    let line = out.ok().trim().to_string();
    assert!(
        line.starts_with("configmap/gen-")
            && line.ends_with(" created")
            && line.len() == "configmap/gen-xxxxx created".len(),
        "{line}"
    );

    // Server-side dry run writes nothing.
    let dr = s.kubectl(&["create", "configmap", "dry", "--dry-run=server"]);
    assert_eq!(dr.ok().trim(), "configmap/dry created (server dry run)");
    assert!(s.kubectl(&["get", "cm", "dry"]).err().contains("NotFound"));
}

#[test]
fn api_resources_lists_short_names() {
    let s = Server::start();
    let out = s.kubectl(&["api-resources"]);
    let text = out.ok();
    let short = |res: &str| -> String {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(res))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("{res} missing from api-resources:\n{text}"))
    };
    for (res, sn) in [
        ("pods", "po"),
        ("replicationcontrollers", "rc"),
        ("replicasets", "rs"),
        ("deployments", "deploy"),
        ("services", "svc"),
        ("daemonsets", "ds"),
        ("configmaps", "cm"),
        ("namespaces", "ns"),
        ("nodes", "no"),
        ("endpoints", "ep"),
        ("serviceaccounts", "sa"),
        ("persistentvolumes", "pv"),
        ("persistentvolumeclaims", "pvc"),
        ("statefulsets", "sts"),
        ("cronjobs", "cj"),
        ("ingresses", "ing"),
        ("networkpolicies", "netpol"),
    ] {
        assert_eq!(short(res), sn, "short name of {res}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("events") && l.contains("ev")),
        "{text}"
    );
    // Short names resolve.
    s.kubectl(&[
        "get",
        "po,rc,rs,deploy,svc,ds,cm,ns,no,ep,sa,ev,pv,pvc,sts,cj,ing,netpol",
    ])
    .ok();
}

#[test]
fn watch_sees_added_modified_deleted() {
    let s = Server::start();
    let out = s.dir.path().join("watch.out");
    let mut w = s.kubectl_background(
        &[
            "get",
            "configmaps",
            "--watch",
            "--output-watch-events",
            "-o",
            "json",
        ],
        &out,
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.kubectl(&["create", "configmap", "w1", "--from-literal=a=1"])
        .ok();
    s.kubectl(&["label", "configmap", "w1", "x=y"]).ok();
    s.kubectl(&["delete", "configmap", "w1"]).ok();
    let seen = eventually(20, || {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        t.contains("\"DELETED\"")
    });
    let _ = w.kill();
    let _ = w.wait();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(seen, "watch output:\n{text}");
    let types: Vec<String> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .filter_map(|v| v.ok())
        // Only the test's ConfigMap (kube-root-ca.crt is listed first).
        .filter(|v| v["object"]["metadata"]["name"] == "w1")
        .map(|v| v["type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"], "{text}");
}

#[test]
fn watch_list_and_wait_work_for_new_clients() {
    // kubectl >= 1.35 streams the initial list with sendInitialEvents; force the same
    // client path here with the feature gate.
    let s = Server::start();
    s.kubectl(&["create", "configmap", "cfg", "--from-literal=a=1"])
        .ok();
    let mut c = std::process::Command::new("kubectl");
    c.args([
        "wait",
        "--for=jsonpath={.data.a}=2",
        "configmap/cfg",
        "--timeout=30s",
    ])
    .env("KUBECONFIG", s.kubeconfig())
    .env("KUBECACHEDIR", s.dir.path().join("kube-cache"))
    .env("KUBE_FEATURE_WatchListClient", "true")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = c.spawn().expect("kubectl wait");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.kubectl(&[
        "patch",
        "configmap",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ])
    .ok();
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configmap/cfg condition met"
    );
    // delete --wait (the default) returns once the object is gone.
    let d = s.kubectl(&["delete", "configmap", "cfg", "--timeout=20s"]);
    assert!(d.ok().starts_with("configmap \"cfg\" deleted"));
}

#[test]
fn objects_survive_restart_and_kill() {
    let mut s = Server::start();
    let f = s.manifest("pod.yaml", POD);
    s.kubectl(&["create", "-f", &f]).ok();
    s.kubectl(&["create", "namespace", "team"]).ok();
    s.kubectl(&[
        "create",
        "configmap",
        "c1",
        "-n",
        "team",
        "--from-literal=a=1",
    ])
    .ok();
    let uid = s
        .kubectl(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"])
        .ok()
        .to_string();
    s.restart();
    assert_eq!(
        s.kubectl(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"])
            .ok(),
        uid
    );
    assert_eq!(
        s.kubectl(&["get", "cm", "c1", "-n", "team", "-o", "jsonpath={.data.a}"])
            .ok(),
        "1"
    );
    // Every acknowledged write survives kill -9.
    for i in 0..20 {
        s.kubectl(&[
            "create",
            "configmap",
            &format!("k{i}"),
            "--from-literal=a=1",
        ])
        .ok();
    }
    s.kill9();
    s.start_again();
    assert_eq!(
        s.kubectl(&["get", "cm", "-o", "name"])
            .ok()
            .lines()
            .filter(|l| {
                l.strip_prefix("configmap/k")
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count(),
        20
    );
    // Revisions keep increasing after restarts.
    let rv_before: u64 = s
        .kubectl(&[
            "get",
            "cm",
            "k19",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .ok()
        .parse()
        .unwrap();
    s.kubectl(&["create", "configmap", "after"]).ok();
    let rv_after: u64 = s
        .kubectl(&[
            "get",
            "cm",
            "after",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .ok()
        .parse()
        .unwrap();
    assert!(rv_after > rv_before);
}

#[test]
fn finalizers_hold_deletion_and_namespaces_terminate() {
    let s = Server::start();
    let f = s.manifest("fin.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n");
    s.kubectl(&["create", "-f", &f]).ok();
    s.kubectl(&["delete", "configmap", "held", "--wait=false"])
        .ok();
    let ts = s.kubectl(&[
        "get",
        "configmap",
        "held",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(
        !ts.ok().is_empty(),
        "deletionTimestamp must be set while a finalizer holds the object"
    );
    s.kubectl(&[
        "patch",
        "configmap",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .ok();
    assert!(s
        .kubectl(&["get", "configmap", "held"])
        .err()
        .contains("NotFound"));

    s.kubectl(&["create", "namespace", "tmp"]).ok();
    s.kubectl(&["create", "configmap", "inside", "-n", "tmp"])
        .ok();
    let d = s.kubectl(&["delete", "namespace", "tmp", "--timeout=60s"]);
    assert!(
        d.ok().starts_with("namespace \"tmp\" deleted"),
        "{}",
        d.stdout
    );
    assert!(s
        .kubectl(&["get", "namespace", "tmp"])
        .err()
        .contains("NotFound"));
    assert!(s
        .kubectl(&["get", "configmap", "inside", "-n", "tmp"])
        .err()
        .contains("NotFound"));
    let r = s.kubectl(&["create", "configmap", "late", "-n", "tmp"]);
    assert!(
        r.err().contains("namespaces \"tmp\" not found"),
        "{}",
        r.stderr
    );
}

#[test]
fn deployments_default_and_scale() {
    let s = Server::start();
    s.kubectl(&["create", "deployment", "web", "--image=busybox:1.36"])
        .ok();
    let jp = s.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.strategy.type} {.spec.revisionHistoryLimit} {.metadata.generation}"]);
    assert_eq!(jp.ok(), "1 RollingUpdate 10 1");
    assert_eq!(
        s.kubectl(&["scale", "deployment", "web", "--replicas=3"])
            .ok()
            .trim(),
        "deployment.apps/web scaled"
    );
    assert_eq!(
        s.kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}"
        ])
        .ok(),
        "3 2"
    );
    let scale: Value = serde_json::from_str(
        s.kubectl(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ])
        .ok(),
    )
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["status"]["selector"], "app=web");
    // The selector is immutable.
    let r = s.kubectl(&["patch", "deploy", "web", "--type=merge", "-p", r#"{"spec":{"selector":{"matchLabels":{"app":"other"}},"template":{"metadata":{"labels":{"app":"other"}}}}}"#]);
    assert!(r.err().contains("field is immutable"), "{}", r.stderr);
}

#[test]
fn every_kubectl_version_under_test_works() {
    let s = Server::start();
    for bin in common::kubectls() {
        let minor = common::kubectl_minor(&bin);
        let name = format!("v{minor}");
        let r = s.kubectl_with(
            &bin,
            &["create", "configmap", &name, "--from-literal=a=1"],
            None,
        );
        assert_eq!(r.ok().trim(), format!("configmap/{name} created"), "{bin}");
        let r = s.kubectl_with(
            &bin,
            &["get", "configmap", &name, "-o", "jsonpath={.data.a}"],
            None,
        );
        assert_eq!(r.ok(), "1", "{bin}");
        let r = s.kubectl_with(&bin, &["delete", "configmap", &name], None);
        assert!(
            r.ok().starts_with(&format!("configmap \"{name}\" deleted")),
            "{bin}: {}",
            r.stdout
        );
    }
}

#[test]
fn apply_creates_with_last_applied_annotation_and_watch_tables() {
    let s = Server::start();
    let f = s.manifest("pod.yaml", POD);
    assert_eq!(
        s.kubectl(&["apply", "-f", &f]).ok().trim(),
        "pod/web created"
    );
    let ann = s.kubectl(&[
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}",
    ]);
    let last: Value = serde_json::from_str(ann.ok()).expect("last-applied is JSON");
    assert_eq!(last["metadata"]["name"], "web");
    // `get -w` on one object prints server-side table rows for each change.
    let out = s.dir.path().join("w.out");
    let mut w = s.kubectl_background(&["get", "pod", "web", "-w"], &out);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.kubectl(&["label", "pod", "web", "x=y"]).ok();
    let ok = eventually(20, || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("web "))
            .count()
            >= 2
    });
    let _ = w.kill();
    let _ = w.wait();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(ok, "{text}");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "0/1", "Pending", "0"]);
}

#[test]
fn garbage_collection_follows_the_propagation_policy() {
    let s = Server::start();
    let owned = |owner: &str, dep: &str| {
        s.kubectl(&["create", "configmap", owner]).ok();
        let uid = s
            .kubectl(&["get", "cm", owner, "-o", "jsonpath={.metadata.uid}"])
            .ok()
            .to_string();
        let f = s.manifest(
            &format!("{dep}.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {dep}\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: {owner}, uid: {uid}, blockOwnerDeletion: true}}\n"),
        );
        s.kubectl(&["create", "-f", &f]).ok();
    };
    let gone = |name: &str| eventually(20, || s.kubectl(&["get", "cm", name]).code != 0);

    owned("bg-owner", "bg-dep");
    s.kubectl(&["delete", "cm", "bg-owner"]).ok();
    assert!(gone("bg-dep"), "background: dependent must be collected");

    owned("or-owner", "or-dep");
    s.kubectl(&[
        "delete",
        "cm",
        "or-owner",
        "--cascade=orphan",
        "--timeout=30s",
    ])
    .ok();
    assert!(gone("or-owner"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let refs = s.kubectl(&[
        "get",
        "cm",
        "or-dep",
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert_eq!(
        refs.ok(),
        "",
        "orphaned dependent keeps living without the reference"
    );

    owned("fg-owner", "fg-dep");
    let d = s.kubectl(&[
        "delete",
        "cm",
        "fg-owner",
        "--cascade=foreground",
        "--timeout=30s",
    ]);
    assert!(
        d.ok().starts_with("configmap \"fg-owner\" deleted"),
        "{}",
        d.stdout
    );
    assert!(
        s.kubectl(&["get", "cm", "fg-dep"]).code != 0,
        "foreground: the dependent goes first"
    );
}

#[test]
fn pods_on_a_node_wait_for_their_grace_period() {
    let s = Server::start();
    let f = s.manifest("bound.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: bound}\nspec:\n  nodeName: some-node\n  terminationGracePeriodSeconds: 45\n  containers: [{name: c, image: busybox}]\n");
    s.kubectl(&["create", "-f", &f]).ok();
    s.kubectl(&["delete", "pod", "bound", "--wait=false"]).ok();
    let jp = s.kubectl(&[
        "get",
        "pod",
        "bound",
        "-o",
        "jsonpath={.metadata.deletionGracePeriodSeconds}",
    ]);
    assert_eq!(jp.ok(), "45", "the agent gets the pod's grace period");
    let table = s.kubectl(&["get", "pod", "bound"]);
    assert!(table.ok().contains("Terminating"), "{}", table.stdout);
    // A shorter grace period may replace it; --force --grace-period=0 removes at once.
    s.kubectl(&["delete", "pod", "bound", "--grace-period=5", "--wait=false"])
        .ok();
    assert_eq!(
        s.kubectl(&[
            "get",
            "pod",
            "bound",
            "-o",
            "jsonpath={.metadata.deletionGracePeriodSeconds}"
        ])
        .ok(),
        "5"
    );
    let r = s.kubectl(&["delete", "pod", "bound", "--force", "--grace-period=0"]);
    assert!(r.ok().contains("force deleted"), "{}", r.stdout);
    assert!(s
        .kubectl(&["get", "pod", "bound"])
        .err()
        .contains("NotFound"));
}
