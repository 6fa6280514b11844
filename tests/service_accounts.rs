//! Service accounts and certificates end to end with the real kubectl: the `default`
//! account and the `kube-root-ca.crt` ConfigMap in every namespace, `kubectl create
//! token` giving a JWT the server accepts, the token a pod gets mounted (read with
//! `kubectl exec`, then used from the test process: the single-node harness gives pods no
//! network) working only as far as RBAC allows and only while the pod exists, and the CSR
//! API (`kubectl certificate approve|deny`) issuing client certificates from the client
//! CA.

mod common;

#[path = "common/images.rs"]
#[allow(dead_code)]
mod images;
#[path = "common/pods.rs"]
#[allow(dead_code)]
mod pods;

use base64::Engine;
use common::{eventually, Run, Server};
use std::path::PathBuf;

/// A kubeconfig that authenticates with `token` only (no client certificate: a
/// certificate would win over the token).
fn token_kubeconfig(s: &Server, name: &str, token: &str) -> String {
    let ca = s.data_dir().join("server/tls/server-ca.crt");
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: k3rs\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\ncontexts:\n- name: sa\n  context: {{cluster: k3rs, user: sa}}\ncurrent-context: sa\nusers:\n- name: sa\n  user:\n    token: {token}\n",
        s.port,
        ca.display()
    );
    let path: PathBuf = s.dir.path().join(format!("{name}.kubeconfig"));
    std::fs::write(&path, kc).expect("write kubeconfig");
    path.to_string_lossy().into_owned()
}

fn kubectl_as(s: &Server, kubeconfig: &str, args: &[&str]) -> Run {
    let mut all = vec!["--kubeconfig", kubeconfig];
    all.extend_from_slice(args);
    // The harness adds its own --kubeconfig first; a later one wins in kubectl.
    s.kubectl(&all)
}

fn whoami(s: &Server, kubeconfig: &str) -> Run {
    kubectl_as(
        s,
        kubeconfig,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    )
}

#[test]
fn default_account_root_ca_and_create_token() {
    let s = Server::start();
    s.kubectl(&["create", "namespace", "team-a"]).ok();
    let ok = eventually(30, || {
        s.kubectl(&["-n", "team-a", "get", "serviceaccount", "default"])
            .code
            == 0
    });
    assert!(
        ok,
        "no default ServiceAccount in a new namespace\n{}",
        s.log()
    );
    let ca = std::fs::read_to_string(s.data_dir().join("server/tls/server-ca.crt")).unwrap();
    let ok = eventually(30, || {
        s.kubectl(&[
            "-n",
            "team-a",
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ])
        .stdout
            == ca
    });
    assert!(ok, "kube-root-ca.crt does not hold the server CA");
    // Deleted, it comes back.
    s.kubectl(&["-n", "team-a", "delete", "serviceaccount", "default"])
        .ok();
    assert!(eventually(30, || s
        .kubectl(&["-n", "team-a", "get", "serviceaccount", "default"])
        .code
        == 0));

    let ok = eventually(30, || {
        s.kubectl(&["get", "serviceaccount", "default"]).code == 0
    });
    assert!(ok, "no default ServiceAccount in default");
    let token = s
        .kubectl(&["create", "token", "default"])
        .ok()
        .trim()
        .to_string();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    let claims = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["iss"],
        "https://kubernetes.default.svc.cluster.local"
    );
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    let kc = token_kubeconfig(&s, "cli", &token);
    let who = whoami(&s, &kc);
    assert_eq!(
        who.ok().trim(),
        r#"system:serviceaccount:default:default ["system:serviceaccounts","system:serviceaccounts:default","system:authenticated"]"#
    );
    // No RBAC rule lets it list pods yet.
    let err = kubectl_as(&s, &kc, &["get", "pods"]).err().to_string();
    assert!(
        err.contains(r#"User "system:serviceaccount:default:default" cannot list resource "pods""#),
        "{err}"
    );
    // A tampered token is refused outright.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let err = whoami(&s, &token_kubeconfig(&s, "forged", &forged))
        .err()
        .to_string();
    assert!(err.contains("Unauthorized"), "{err}");
    // Upstream's validation of the lifetime, and unknown accounts.
    let err = s
        .kubectl(&["create", "token", "default", "--duration=5m"])
        .err()
        .to_string();
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = s.kubectl(&["create", "token", "nobody"]).err().to_string();
    assert!(
        err.contains(r#"serviceaccounts "nobody" not found"#),
        "{err}"
    );
    // Deleting the account invalidates its tokens.
    s.kubectl(&["create", "serviceaccount", "bot"]).ok();
    let bot = s
        .kubectl(&[
            "create",
            "token",
            "bot",
            "--audience=https://kubernetes.default.svc.cluster.local",
        ])
        .ok()
        .trim()
        .to_string();
    let bot_kc = token_kubeconfig(&s, "bot", &bot);
    assert!(whoami(&s, &bot_kc)
        .ok()
        .starts_with("system:serviceaccount:default:bot "));
    let other = s
        .kubectl(&["create", "token", "bot", "--audience=vault"])
        .ok()
        .trim()
        .to_string();
    let err = whoami(&s, &token_kubeconfig(&s, "vault", &other))
        .err()
        .to_string();
    assert!(
        err.contains("Unauthorized"),
        "a token for another audience: {err}"
    );
    s.kubectl(&["delete", "serviceaccount", "bot"]).ok();
    let err = whoami(&s, &bot_kc).err().to_string();
    assert!(err.contains("Unauthorized"), "{err}");
}

fn csr_yaml(name: &str, cn: &str, org: &str, signer: &str) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    let req = base64::engine::general_purpose::STANDARD.encode(pem);
    (
        format!("apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {req}\n  signerName: {signer}\n  usages: [\"client auth\"]\n"),
        key,
    )
}

#[test]
fn csr_approve_issues_a_usable_client_certificate() {
    let s = Server::start();
    let (yaml, key) = csr_yaml(
        "jane",
        "jane",
        "devs",
        "kubernetes.io/kube-apiserver-client",
    );
    s.kubectl_stdin(&["create", "-f", "-"], &yaml).ok();
    assert_eq!(
        s.kubectl(&["get", "csr", "jane", "-o", "jsonpath={.spec.username}"])
            .ok(),
        "system:admin",
        "the requester is recorded from the credentials"
    );
    s.kubectl(&["certificate", "approve", "jane"]).ok();
    let mut cert_b64 = String::new();
    let ok = eventually(30, || {
        cert_b64 = s
            .kubectl(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"])
            .stdout;
        !cert_b64.is_empty()
    });
    assert!(
        ok,
        "no certificate issued\n{}\n{}",
        s.kubectl(&["get", "csr", "jane", "-o", "yaml"]).stdout,
        s.log()
    );
    let conditions = s.kubectl(&[
        "get",
        "csr",
        "jane",
        "-o",
        "jsonpath={.status.conditions[*].type}",
    ]);
    assert_eq!(conditions.ok(), "Approved");
    let cert_pem = base64::engine::general_purpose::STANDARD
        .decode(cert_b64.trim())
        .unwrap();
    // Issued by the client CA, for the subject asked for.
    let der: rustls_pki_types::CertificateDer =
        rustls_pki_types::pem::PemObject::from_pem_slice(&cert_pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ca_pem = std::fs::read(s.data_dir().join("server/tls/client-ca.crt")).unwrap();
    let ca_der: rustls_pki_types::CertificateDer =
        rustls_pki_types::pem::PemObject::from_pem_slice(&ca_pem).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    cert.verify_signature(Some(ca.public_key()))
        .expect("signed by the client CA");
    // Usable as a client certificate.
    let dir = s.dir.path();
    std::fs::write(dir.join("jane.crt"), &cert_pem).unwrap();
    std::fs::write(dir.join("jane.key"), key.serialize_pem()).unwrap();
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: k3rs\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\ncontexts:\n- name: jane\n  context: {{cluster: k3rs, user: jane}}\ncurrent-context: jane\nusers:\n- name: jane\n  user:\n    client-certificate: {}\n    client-key: {}\n",
        s.port,
        s.data_dir().join("server/tls/server-ca.crt").display(),
        dir.join("jane.crt").display(),
        dir.join("jane.key").display()
    );
    let kc_path = dir.join("jane.kubeconfig");
    std::fs::write(&kc_path, kc).unwrap();
    let who = whoami(&s, kc_path.to_str().unwrap());
    assert_eq!(who.ok().trim(), r#"jane ["devs","system:authenticated"]"#);

    // Denied requests get no certificate.
    let (yaml, _) = csr_yaml(
        "mallory",
        "admin",
        "system:masters",
        "kubernetes.io/kube-apiserver-client",
    );
    s.kubectl_stdin(&["create", "-f", "-"], &yaml).ok();
    s.kubectl(&["certificate", "deny", "mallory"]).ok();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let r = s.kubectl(&[
        "get",
        "csr",
        "mallory",
        "-o",
        "jsonpath={.status.conditions[*].type}/{.status.certificate}",
    ]);
    assert_eq!(r.ok(), "Denied/");
    // Approved and Denied exclude each other.
    let err = s
        .kubectl(&["certificate", "approve", "mallory"])
        .err()
        .to_string();
    assert!(
        err.contains("mutually exclusive") || err.contains("Denied"),
        "{err}"
    );
}

#[test]
fn pod_token_is_mounted_and_bound_to_the_pod() {
    let s = pods::cluster();
    pods::apply_pod(&s, "sa-pod", "Always", "while true; do sleep 1; done");
    pods::wait_for(&s, 120, "pod/sa-pod", "{.status.phase}", "Running");
    let vol = pods::jsonpath(&s, "pod/sa-pod", "{.spec.volumes[0].name}");
    assert!(vol.starts_with("kube-api-access-"), "{vol}");
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let cat = |f: &str| s.kubectl(&["exec", "sa-pod", "--", "cat", &format!("{dir}/{f}")]);
    let token = cat("token").ok().trim().to_string();
    assert_eq!(cat("namespace").ok(), "default");
    let ca = std::fs::read_to_string(s.data_dir().join("server/tls/server-ca.crt")).unwrap();
    assert_eq!(cat("ca.crt").ok(), ca);
    let claims = token.split('.').nth(1).unwrap_or("");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "sa-pod");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3607
    );

    let kc = token_kubeconfig(&s, "pod", &token);
    let err = kubectl_as(&s, &kc, &["get", "pods"]).err().to_string();
    assert!(err.contains("cannot list resource \"pods\""), "{err}");
    s.kubectl(&[
        "create",
        "rolebinding",
        "sa-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ])
    .ok();
    let ok = eventually(30, || {
        kubectl_as(&s, &kc, &["get", "pods", "-o", "name"])
            .stdout
            .contains("pod/sa-pod")
    });
    assert!(ok, "the RoleBinding did not let the pod's token list pods");
    assert!(kubectl_as(&s, &kc, &["get", "pods", "-n", "kube-system"]).code != 0);

    s.kubectl(&["delete", "pod", "sa-pod", "--wait=true", "--timeout=60s"])
        .ok();
    let err = kubectl_as(&s, &kc, &["get", "pods"]).err().to_string();
    assert!(
        err.contains("Unauthorized"),
        "a deleted pod's token still works: {err}"
    );
}
