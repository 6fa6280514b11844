//! End-to-end tests of server-side apply: the real `k3rs server` binary driven by the real
//! `kubectl apply --server-side`, field ownership shown by `--show-managed-fields`,
//! conflicts with other managers and `--force-conflicts`. No root needed.

mod common;

use common::Server;
use serde_json::{json, Value};

fn get_json(s: &Server, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(s.kubectl(&all).ok()).expect("kubectl get -o json")
}

/// The managedFields entry of `manager`, if any.
fn entry(obj: &Value, manager: &str) -> Option<Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
        .cloned()
}

fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["manager"].as_str().unwrap_or(""),
                        e["operation"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

const CM: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: x
  labels:
    app: web
data:
  a: \"1\"
  b: \"2\"
";

const CM_SMALLER: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: x
data:
  a: \"1\"
";

const CM_OTHER: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: x
data:
  a: \"changed\"
";

#[test]
fn apply_creates_reapplies_and_removes_fields() {
    let s = Server::start();
    let f = s.manifest("cm.yaml", CM);
    let r = s.kubectl(&["apply", "--server-side", "-f", &f]);
    assert_eq!(r.ok().trim(), "configmap/x serverside-applied");

    let live = get_json(&s, &["configmap", "x"]);
    assert_eq!(live["data"], json!({"a": "1", "b": "2"}));
    let e = entry(&live, "kubectl").expect("an Apply entry for kubectl");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    assert_eq!(
        e["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
    );
    // kubectl hides managedFields unless asked.
    let yaml = s.kubectl(&["get", "configmap", "x", "-o", "yaml"]);
    assert!(!yaml.ok().contains("managedFields"), "{}", yaml.stdout);
    let shown = s.kubectl(&[
        "get",
        "configmap",
        "x",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(shown.ok().contains("manager: kubectl"), "{}", shown.stdout);
    assert!(shown.ok().contains("operation: Apply"), "{}", shown.stdout);

    // Re-applying the same manifest changes nothing, not even the resourceVersion.
    let rv = live["metadata"]["resourceVersion"].clone();
    let r = s.kubectl(&["apply", "--server-side", "-f", &f]);
    assert_eq!(r.ok().trim(), "configmap/x serverside-applied");
    let again = get_json(&s, &["configmap", "x"]);
    assert_eq!(again["metadata"]["resourceVersion"], rv);

    // Fields dropped from the manifest are removed from the object.
    let f2 = s.manifest("cm-smaller.yaml", CM_SMALLER);
    let r = s.kubectl(&["apply", "--server-side", "-f", &f2]);
    assert_eq!(r.ok().trim(), "configmap/x serverside-applied");
    let smaller = get_json(&s, &["configmap", "x"]);
    assert_eq!(smaller["data"], json!({"a": "1"}));
    assert!(smaller["metadata"].get("labels").is_none(), "{smaller}");
    assert_eq!(
        entry(&smaller, "kubectl").unwrap()["fieldsV1"],
        json!({"f:data": {"f:a": {}}})
    );
}

#[test]
fn conflicts_with_another_manager_and_force() {
    let s = Server::start();
    let f = s.manifest("cm.yaml", CM);
    s.kubectl(&["apply", "--server-side", "-f", &f]).ok();

    let other = s.manifest("cm-other.yaml", CM_OTHER);
    let r = s.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &other,
    ]);
    let err = r.err();
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .data.a"#),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "{err}");
    assert_eq!(
        s.kubectl(&["get", "cm", "x", "-o", "jsonpath={.data.a}"])
            .ok(),
        "1"
    );

    // Applying the value kubectl set is fine: both own it then.
    let same = s.manifest("cm-same.yaml", CM_SMALLER);
    let r = s.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &same,
    ]);
    assert_eq!(r.ok().trim(), "configmap/x serverside-applied");

    let r = s.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        &other,
    ]);
    assert_eq!(r.ok().trim(), "configmap/x serverside-applied");
    let live = get_json(&s, &["configmap", "x"]);
    assert_eq!(live["data"], json!({"a": "changed", "b": "2"}));
    assert_eq!(
        entry(&live, "other").unwrap()["fieldsV1"],
        json!({"f:data": {"f:a": {}}})
    );
    assert_eq!(
        entry(&live, "kubectl").unwrap()["fieldsV1"],
        json!({"f:data": {"f:b": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
    );
}

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: busybox:1.36
CONTAINERS";

fn deploy(replicas: u32, extra_container: bool) -> String {
    let side = if extra_container {
        "      - name: side\n        image: busybox:1.36\n"
    } else {
        ""
    };
    DEPLOY
        .replace("REPLICAS", &replicas.to_string())
        .replace("CONTAINERS", side)
}

#[test]
fn scale_owns_replicas_until_apply_forces_them() {
    let s = Server::start();
    let f = s.manifest("d.yaml", &deploy(1, true));
    let r = s.kubectl(&["apply", "--server-side", "-f", &f]);
    assert_eq!(r.ok().trim(), "deployment.apps/web serverside-applied");
    let live = get_json(&s, &["deployment", "web"]);
    let fields = &entry(&live, "kubectl").unwrap()["fieldsV1"];
    assert_eq!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"side\"}"],
        json!({".": {}, "f:image": {}, "f:name": {}})
    );

    // A container dropped from the manifest goes away.
    let f = s.manifest("d.yaml", &deploy(1, false));
    s.kubectl(&["apply", "--server-side", "-f", &f]).ok();
    let names = s.kubectl(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name}",
    ]);
    assert_eq!(names.ok(), "c");

    assert_eq!(
        s.kubectl(&["scale", "deployment", "web", "--replicas=3"])
            .ok()
            .trim(),
        "deployment.apps/web scaled"
    );
    // kubectl scale sends no fieldManager: the server names it after the User-Agent.
    let scaled = get_json(&s, &["deployment", "web"]);
    let e = scaled["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["subresource"] == "scale"))
        .cloned()
        .unwrap_or_else(|| panic!("scale records its ownership: {:?}", managers(&scaled)));
    assert_eq!(e["manager"], "kubectl");
    assert_eq!(e["operation"], "Update");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));

    let f = s.manifest("d.yaml", &deploy(2, false));
    let r = s.kubectl(&["apply", "--server-side", "-f", &f]);
    let err = r.err();
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas"#),
        "{err}"
    );
    assert_eq!(
        s.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .ok(),
        "3"
    );

    let r = s.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &f]);
    assert_eq!(r.ok().trim(), "deployment.apps/web serverside-applied");
    let forced = get_json(&s, &["deployment", "web"]);
    assert_eq!(forced["spec"]["replicas"], 2);
    assert!(
        entry(&forced, "kubectl-scale").is_none(),
        "{:?}",
        managers(&forced)
    );
}

#[test]
fn client_side_apply_and_edit_still_work_after_server_side_apply() {
    let s = Server::start();
    let f = s.manifest("cm.yaml", CM);
    s.kubectl(&["apply", "--server-side", "-f", &f]).ok();

    // Client-side apply over a server-side applied object (kubectl warns about the
    // missing last-applied annotation, then patches).
    let changed = s.manifest("cm-csa.yaml", &CM.replace("b: \"2\"", "b: \"3\""));
    let r = s.kubectl(&["apply", "-f", &changed]);
    assert_eq!(r.ok().trim(), "configmap/x configured");
    let live = get_json(&s, &["configmap", "x"]);
    assert_eq!(live["data"]["b"], "3");
    let csa = entry(&live, "kubectl-client-side-apply").expect("client-side apply is tracked");
    assert_eq!(csa["operation"], "Update");
    assert!(csa["fieldsV1"]["f:data"].get("f:b").is_some(), "{csa}");

    // kubectl edit.
    let script = s.dir.path().join("editor.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nsed -i 's/^  a: \"1\"/  a: \"9\"/' \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let editor = script.to_string_lossy().to_string();
    let r = s.kubectl_env(
        "kubectl",
        &["edit", "configmap", "x"],
        None,
        &[("KUBE_EDITOR", &editor)],
    );
    assert_eq!(r.ok().trim(), "configmap/x edited");
    let edited = get_json(&s, &["configmap", "x"]);
    assert_eq!(edited["data"]["a"], "9");
    assert!(
        entry(&edited, "kubectl-edit").is_some(),
        "{:?}",
        managers(&edited)
    );

    // Back to server-side apply: the value kubectl-edit set conflicts, the one
    // client-side apply set (and recorded in its annotation) is taken over.
    let r = s.kubectl(&["apply", "--server-side", "-f", &changed]);
    let err = r.err();
    assert!(
        err.contains(r#"conflict with "kubectl-edit" using v1: .data.a"#),
        "{err}"
    );
    let r = s.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &changed,
    ]);
    assert_eq!(r.ok().trim(), "configmap/x serverside-applied");
    let back = get_json(&s, &["configmap", "x"]);
    assert_eq!(back["data"], json!({"a": "1", "b": "3"}));
    // The last-applied annotation stays, owned by kubectl-last-applied.
    assert!(
        back["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .is_some_and(|a| a.contains("\"b\":\"3\"")),
        "{back}"
    );
    assert!(
        entry(&back, "kubectl-last-applied").is_some(),
        "{:?}",
        managers(&back)
    );
}

#[test]
fn server_side_dry_run_and_diff() {
    let s = Server::start();
    let f = s.manifest("cm.yaml", CM);
    let r = s.kubectl(&["apply", "--server-side", "--dry-run=server", "-f", &f]);
    assert_eq!(
        r.ok().trim(),
        "configmap/x serverside-applied (server dry run)"
    );
    let missing = s.kubectl(&["get", "cm", "x"]);
    assert!(missing.err().contains("NotFound"), "{}", missing.stderr);
    s.kubectl(&["apply", "--server-side", "-f", &f]).ok();
    let changed = s.manifest("cm2.yaml", &CM.replace("b: \"2\"", "b: \"5\""));
    let d = s.kubectl(&["diff", "--server-side", "-f", &changed]);
    assert_eq!(d.code, 1, "diff finds a change: {} {}", d.stdout, d.stderr);
    assert!(d.stdout.contains("+  b: \"5\""), "{}", d.stdout);
    assert_eq!(
        s.kubectl(&["get", "cm", "x", "-o", "jsonpath={.data.b}"])
            .ok(),
        "2"
    );
}

/// Sends one HTTP/1.1 request through `kubectl proxy` and returns the status code and body.
fn raw(port: u16, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to kubectl proxy");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    conn.read_to_string(&mut out).expect("read");
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[test]
fn yaml_bodies_status_codes_and_request_errors() {
    let s = Server::start();
    let port = common::free_port();
    let log = s.dir.path().join("proxy.log");
    let mut proxy = s.kubectl_background(&["proxy", &format!("--port={port}")], &log);
    assert!(
        common::eventually(20, || std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()),
        "kubectl proxy did not start"
    );
    let apply = "application/apply-patch+yaml";
    let url = "/api/v1/namespaces/default/configmaps/y?fieldManager=tool";
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  k: v\n";

    // A YAML body creates the object (201), then updates it (200).
    let (code, body) = raw(port, "PATCH", url, apply, yaml);
    assert_eq!(code, 201, "{body}");
    assert!(
        body.contains(r#""manager":"tool","operation":"Apply""#),
        "{body}"
    );
    let (code, body) = raw(port, "PATCH", url, apply, &yaml.replace("k: v", "k: w"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""k":"w""#), "{body}");

    let (code, body) = raw(
        port,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/y",
        apply,
        yaml,
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains(r#"PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"#),
        "{body}"
    );
    let (code, body) = raw(
        port,
        "PATCH",
        url,
        apply,
        &yaml.replace("name: y", "name: z"),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("the name of the object (z) does not match the name on the URL (y)"),
        "{body}"
    );
    let (code, body) = raw(
        port,
        "PATCH",
        url,
        apply,
        &yaml.replace("ConfigMap", "Secret"),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("invalid object type: /v1, Kind=Secret"),
        "{body}"
    );
    let (code, body) = raw(
        port,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/y?force=true",
        "application/merge-patch+json",
        r#"{"data":{"k":"x"}}"#,
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("force: Forbidden: may not be specified for non-apply patch"),
        "{body}"
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
}
