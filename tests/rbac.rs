//! Authentication and authorization against the real server, driven by the real kubectl:
//! anonymous access, a user bound to `view` in one namespace (through `kubectl --as` and
//! through a client certificate signed by the cluster's client CA), and a node identity
//! limited to its own Node, Lease and the secrets its pods use, and NodeRestriction
//! admission for node identities. No agent needed, except for the kubelet endpoint's
//! bearer-token webhook auth (root and containerd; fails loudly without them).

mod common;
#[path = "common/images.rs"]
mod images;

use common::{eventually, Server};
use std::path::PathBuf;
use std::process::Command;

/// A client certificate for `cn` in `orgs`, signed by the server's client CA, and a
/// kubeconfig that uses it. Returns the kubeconfig path.
fn user_kubeconfig(s: &Server, cn: &str, orgs: &[&str]) -> String {
    let tls = s.data_dir().join("server").join("tls");
    let ca_pem = std::fs::read_to_string(tls.join("client-ca.crt")).expect("client CA cert");
    let ca_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(tls.join("client-ca.key")).expect("client CA key"),
    )
    .expect("client CA key parses");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("client CA issuer");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let safe = cn.replace(':', "_");
    let dir = s.dir.path();
    let cert_path = dir.join(format!("{safe}.crt"));
    let key_path = dir.join(format!("{safe}.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: k3rs\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\ncontexts:\n- name: me\n  context: {{cluster: k3rs, user: me}}\ncurrent-context: me\nusers:\n- name: me\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n",
        port = s.port,
        ca = tls.join("server-ca.crt").display(),
        cert = cert_path.display(),
        key = key_path.display(),
    );
    let path: PathBuf = dir.join(format!("{safe}.kubeconfig"));
    std::fs::write(&path, kc).expect("write kubeconfig");
    path.to_string_lossy().into_owned()
}

/// HTTP status of a GET without a client certificate (curl, server CA not checked).
fn anonymous_status(s: &Server, path: &str, bearer: Option<&str>) -> (u16, String) {
    curl_get(&format!("https://127.0.0.1:{}{path}", s.port), bearer)
}

/// Status and body of a GET of `url` with curl (server certificate not checked).
fn curl_get(url: &str, bearer: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sk", "-w", "\n%{http_code}", url]);
    if let Some(t) = bearer {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}; install it (apt-get install curl)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn anonymous_requests_reach_only_public_endpoints() {
    let s = Server::start();
    let (code, body) = anonymous_status(&s, "/api/v1/pods", None);
    assert!(
        code == 401 || code == 403,
        "GET /api/v1/pods: {code} {body}"
    );
    assert!(
        body.contains(r#"User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" at the cluster scope"#),
        "{body}"
    );
    for path in [
        "/version", "/healthz", "/readyz", "/livez", "/cacerts", "/ping",
    ] {
        let (code, body) = anonymous_status(&s, path, None);
        assert_eq!(code, 200, "GET {path} anonymously: {body}");
    }
    let (code, _) = anonymous_status(&s, "/apis", None);
    assert_eq!(code, 403, "discovery is for authenticated users");
    let (code, body) = anonymous_status(&s, "/version", Some("not-a-valid-token"));
    assert_eq!(code, 401, "a bad bearer token is a 401: {body}");
}

#[test]
fn view_user_in_one_namespace() {
    let s = Server::start();
    for ns in ["a", "b"] {
        s.kubectl(&["create", "namespace", ns]).ok();
        s.kubectl(&["-n", ns, "run", "web", "--image=busybox"]).ok();
    }
    s.kubectl(&[
        "-n",
        "a",
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--user=jane",
    ])
    .ok();
    // The binding reaches the authorizer through its watch of the store.
    assert!(
        eventually(10, || s
            .kubectl(&["--as", "jane", "-n", "a", "get", "pods"])
            .code
            == 0),
        "jane cannot list pods in a: {}",
        s.kubectl(&["--as", "jane", "-n", "a", "get", "pods"])
            .stderr
    );
    let out = s.kubectl(&["--as", "jane", "-n", "a", "get", "pods", "-o", "name"]);
    assert_eq!(out.ok().trim(), "pod/web");
    let err = s
        .kubectl(&["--as", "jane", "-n", "a", "delete", "pod", "web"])
        .err()
        .to_string();
    assert!(
        err.contains(r#"Error from server (Forbidden): pods "web" is forbidden: User "jane" cannot delete resource "pods" in API group "" in the namespace "a""#),
        "{err}"
    );
    let err = s
        .kubectl(&["--as", "jane", "-n", "b", "get", "pods"])
        .err()
        .to_string();
    assert!(
        err.contains(r#"pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "b""#),
        "{err}"
    );
    // can-i answers from the same evaluator.
    let yes = s.kubectl(&["--as", "jane", "-n", "a", "auth", "can-i", "list", "pods"]);
    assert_eq!(yes.stdout.trim(), "yes", "{}", yes.stderr);
    let no = s.kubectl(&["--as", "jane", "-n", "a", "auth", "can-i", "delete", "pods"]);
    assert_eq!(no.stdout.trim(), "no", "{}", no.stderr);
    let list = s.kubectl(&["--as", "jane", "-n", "a", "auth", "can-i", "--list"]);
    let table = list.ok();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("pods ") && l.contains("[get list watch]")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("selfsubjectaccessreviews.authorization.k8s.io")),
        "{table}"
    );
    let none = s.kubectl(&["--as", "jane", "-n", "b", "auth", "can-i", "--list"]);
    assert!(
        !none.ok().lines().any(|l| l.starts_with("pods ")),
        "{}",
        none.stdout
    );

    // The same user with a real client certificate.
    let kc = user_kubeconfig(&s, "jane", &["dev"]);
    let mine = s.kubectl(&["--kubeconfig", &kc, "-n", "a", "get", "pods", "-o", "name"]);
    assert_eq!(mine.ok().trim(), "pod/web");
    let err = s
        .kubectl(&["--kubeconfig", &kc, "-n", "b", "get", "pods"])
        .err()
        .to_string();
    assert!(
        err.contains(r#"User "jane" cannot list resource "pods""#),
        "{err}"
    );
    let who = s.kubectl(&["--kubeconfig", &kc, "auth", "whoami"]);
    assert!(who.ok().contains("system:authenticated"), "{}", who.stdout);
    // Users without the impersonate verb cannot use --as.
    let err = s
        .kubectl(&[
            "--kubeconfig",
            &kc,
            "--as",
            "admin",
            "-n",
            "a",
            "get",
            "pods",
        ])
        .err()
        .to_string();
    assert!(
        err.contains(r#"users "admin" is forbidden: User "jane" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{err}"
    );
}

const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: n1, namespace: kube-node-lease}
spec: {holderIdentity: n1}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: n2, namespace: kube-node-lease}
spec: {holderIdentity: n2}
---
apiVersion: v1
kind: Secret
metadata: {name: used, namespace: a}
stringData: {k: v}
---
apiVersion: v1
kind: Secret
metadata: {name: unused, namespace: a}
stringData: {k: v}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: a}
spec:
  nodeName: n1
  containers: [{name: c, image: busybox}]
  volumes: [{name: s, secret: {secretName: used}}]
"#;

/// A server with namespace `a` and `manifest` applied, and a kubeconfig of node n1's
/// identity (`system:node:n1` in `system:nodes`).
fn node_n1_cluster(name: &str, manifest: &str) -> (Server, String) {
    let s = Server::start();
    s.kubectl(&["create", "namespace", "a"]).ok();
    let m = s.manifest(name, manifest);
    s.kubectl(&["apply", "-f", &m]).ok();
    let kc = user_kubeconfig(&s, "system:node:n1", &["system:nodes"]);
    (s, kc)
}

/// kubectl with the given kubeconfig.
fn as_user(s: &Server, kubeconfig: &str, args: &[&str]) -> common::Run {
    let mut all = vec!["--kubeconfig", kubeconfig];
    all.extend_from_slice(args);
    s.kubectl(&all)
}

#[test]
fn node_identity_is_limited_to_its_own_objects() {
    let (s, kc) = node_n1_cluster("nodes.yaml", NODES);
    let node = |args: &[&str]| as_user(&s, &kc, args);
    let status = r#"{"status":{"capacity":{"cpu":"2"}}}"#;
    node(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])
    .ok();
    let err = node(&[
        "patch",
        "node",
        "n2",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])
    .err()
    .to_string();
    assert!(
        err.contains(r#"nodes "n2" is forbidden: User "system:node:n1" cannot patch resource "nodes/status" in API group "" at the cluster scope"#),
        "{err}"
    );
    let err = node(&["label", "node", "n2", "x=y"]).err().to_string();
    assert!(err.contains("forbidden"), "{err}");
    let lease = r#"{"spec":{"renewTime":"2024-01-01T00:00:00.000000Z"}}"#;
    node(&[
        "-n",
        "kube-node-lease",
        "patch",
        "lease",
        "n1",
        "--type=merge",
        "-p",
        lease,
    ])
    .ok();
    let err = node(&[
        "-n",
        "kube-node-lease",
        "patch",
        "lease",
        "n2",
        "--type=merge",
        "-p",
        lease,
    ])
    .err()
    .to_string();
    assert!(
        err.contains(
            r#"leases.coordination.k8s.io "n2" is forbidden: User "system:node:n1" cannot"#
        ) && err.contains("node 'n1' can only access its own lease in kube-node-lease"),
        "{err}"
    );
    node(&["get", "nodes"]).ok();
    node(&["-n", "a", "get", "pods"]).ok();

    let err = node(&["get", "secrets", "-A"]).err().to_string();
    assert!(
        err.contains(r#"secrets is forbidden: User "system:node:n1" cannot list resource "secrets" in API group "" at the cluster scope"#),
        "{err}"
    );
    let err = node(&["-n", "a", "get", "secret", "unused"])
        .err()
        .to_string();
    assert!(
        err.contains("no relationship found between node 'n1' and this object"),
        "{err}"
    );
    assert!(
        eventually(10, || node(&["-n", "a", "get", "secret", "used"]).code == 0),
        "n1 cannot read the secret its pod mounts: {}",
        node(&["-n", "a", "get", "secret", "used"]).stderr
    );
    // The pod's status is the node's to write; another node's pods are not.
    let pod_status = r#"{"status":{"phase":"Running"}}"#;
    node(&[
        "-n",
        "a",
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        pod_status,
    ])
    .ok();
    // Once the pod is gone, so is the node's access to its secret.
    s.kubectl(&[
        "-n",
        "a",
        "delete",
        "pod",
        "p1",
        "--grace-period=0",
        "--force",
    ]);
    assert!(
        eventually(10, || node(&["-n", "a", "get", "secret", "used"]).code != 0),
        "n1 still reads the secret after its pod was deleted"
    );
}

/// A GET on the embedded agent's kubelet endpoint (curl; serving CA not checked).
fn kubelet_get(s: &Server, path: &str, bearer: Option<&str>) -> (u16, String) {
    curl_get(
        &format!("https://127.0.0.1:{}{path}", s.kubelet_port()),
        bearer,
    )
}

const NODE_METRICS_READER: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: node-metrics-reader
rules:
- apiGroups: [\"\"]
  resources: [\"nodes/metrics\"]
  verbs: [\"get\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: scraper-reads-node-metrics
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: node-metrics-reader
subjects:
- kind: ServiceAccount
  name: scraper
  namespace: default
";

#[test]
fn kubelet_endpoint_authorizes_bearer_tokens_through_the_api_server() {
    images::require_agent_environment("rbac (kubelet bearer tokens)");
    let s = Server::start_with_agent(&[], |_| {});
    for sa in ["scraper", "nobody"] {
        s.kubectl(&["create", "serviceaccount", sa]).ok();
    }
    let m = s.manifest("node-metrics.yaml", NODE_METRICS_READER);
    s.kubectl(&["apply", "-f", &m]).ok();
    let token = |sa: &str| s.kubectl(&["create", "token", sa]).ok().trim().to_string();
    let scraper = token("scraper");
    let nobody = token("nobody");

    let (code, body) = kubelet_get(&s, "/metrics/cadvisor", Some(&scraper));
    assert_eq!(code, 200, "scraper on /metrics/cadvisor: {body}");
    assert!(body.contains("# TYPE"), "Prometheus text expected: {body}");
    // nodes/metrics does not open the other subresources.
    let (code, body) = kubelet_get(&s, "/stats/summary", Some(&scraper));
    assert_eq!(code, 403, "scraper on /stats/summary: {body}");
    assert_eq!(
        body.trim(),
        "Forbidden (user=system:serviceaccount:default:scraper, verb=get, resource=nodes, subresource=stats)"
    );
    let (code, body) = kubelet_get(&s, "/metrics/cadvisor", Some(&nobody));
    assert_eq!(code, 403, "nobody on /metrics/cadvisor: {body}");
    assert!(
        body.contains("user=system:serviceaccount:default:nobody, verb=get, resource=nodes, subresource=metrics"),
        "{body}"
    );
    let (code, body) = kubelet_get(&s, "/metrics/cadvisor", None);
    assert_eq!(code, 401, "no credentials: {body}");
    assert_eq!(body.trim(), "Unauthorized");
    let (code, body) = kubelet_get(&s, "/metrics/cadvisor", Some("not-a-valid-token"));
    assert_eq!(code, 401, "a bad token: {body}");
}

const RESTRICTION: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {node-restriction.kubernetes.io/pool: gpu}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: on-n1, namespace: a}
spec:
  nodeName: n1
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: on-n2, namespace: a}
spec:
  nodeName: n2
  containers: [{name: c, image: busybox}]
"#;

fn pod_yaml(name: &str, node: &str, mirror: bool, extra_spec: &str) -> String {
    let annotations = if mirror {
        "\n  annotations: {kubernetes.io/config.mirror: static-hash}"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: a{annotations}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox}}]\n{extra_spec}"
    )
}

const EVICTION: &str =
    r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"NAME","namespace":"a"}}"#;

#[test]
fn node_restriction_admission_limits_what_a_node_writes() {
    let (s, kc) = node_n1_cluster("restriction.yaml", RESTRICTION);
    let node = |args: &[&str]| as_user(&s, &kc, args);
    let node_apply = |name: &str, yaml: &str| {
        let path = s.manifest(name, yaml);
        node(&["create", "-f", &path])
    };

    // Pods: only mirror pods, only bound to itself, referencing nothing secret.
    let err = node_apply("plain.yaml", &pod_yaml("plain", "n1", false, ""));
    assert!(
        err.err().contains(r#"pods "plain" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, node "n1" can only create mirror pods"#),
        "{}",
        err.stderr
    );
    let err = node_apply("elsewhere.yaml", &pod_yaml("elsewhere", "n2", true, ""));
    assert!(
        err.err()
            .contains(r#"node "n1" can only create pods with spec.nodeName set to itself"#),
        "{}",
        err.stderr
    );
    let secret_vol = "  volumes: [{name: s, secret: {secretName: used}}]\n";
    let err = node_apply("sneaky.yaml", &pod_yaml("sneaky", "n1", true, secret_vol));
    assert!(
        err.err()
            .contains(r#"node "n1" can not create pods that reference secrets"#),
        "{}",
        err.stderr
    );
    node_apply("mirror.yaml", &pod_yaml("mirror", "n1", true, "")).ok();

    // Its own Node: ordinary labels yes, node-restriction.kubernetes.io/ labels no.
    node(&["label", "node", "n1", "team=edge"]).ok();
    for change in [
        "node-restriction.kubernetes.io/pool=cpu",
        "node-restriction.kubernetes.io/pool-",
        "node-restriction.kubernetes.io/zone=z1",
    ] {
        let err = node(&["label", "--overwrite", "node", "n1", change]);
        let msg = err.err();
        assert!(
            msg.contains(r#"nodes "n1" is forbidden: node "n1" is not allowed to modify labels: node-restriction.kubernetes.io/"#),
            "{change}: {msg}"
        );
    }
    let labels = s.kubectl(&["get", "node", "n1", "-o", "jsonpath={.metadata.labels}"]);
    assert!(labels.ok().contains("gpu"), "{}", labels.stdout);
    // Other nodes: neither changed, created nor deleted.
    assert!(node(&["label", "node", "n2", "team=edge"])
        .err()
        .contains("forbidden"));
    let err = node_apply(
        "n3.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n3}\n",
    );
    assert!(
        err.err()
            .contains(r#"node "n1" is not allowed to modify node "n3""#),
        "{}",
        err.stderr
    );
    assert!(node(&["delete", "node", "n2"]).err().contains("forbidden"));

    // Evictions: only of pods bound to it.
    let evict = |pod: &str| {
        let body = s.manifest(&format!("evict-{pod}.json"), &EVICTION.replace("NAME", pod));
        let path = format!("/api/v1/namespaces/a/pods/{pod}/eviction");
        node(&["create", "--raw", &path, "-f", &body])
    };
    let err = evict("on-n2");
    assert!(err.err().contains("forbidden"), "{}", err.stderr);
    let ok = eventually(10, || evict("on-n1").code == 0);
    assert!(ok, "n1 cannot evict its own pod: {}", evict("on-n1").stderr);
}
