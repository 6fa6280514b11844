//! Credentials handed to clients of the cluster: the admin kubeconfig, and the certificate
//! files of the agent embedded in `k3rs server`, written straight from the server's CAs (a
//! joining agent gets the same files over the network instead). The agent's names and layout
//! follow k3s's `<data-dir>/agent` directory, so the agent reads one set of paths whichever
//! way it was started.

use super::{
    ensure_leaf, io_err, load_or_create_ca, read_optional, unix_now, write_private, Ca, Leaf, Pki,
    PkiError, Sans, CLIENT_CA, SERVER_CA,
};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `<agent_dir>/client-ca.crt`: the CA the kubelet checks client certificates against.
pub const AGENT_CLIENT_CA: &str = "client-ca.crt";
/// `<agent_dir>/server-ca.crt`: the CA the agent trusts for the API server.
pub const AGENT_SERVER_CA: &str = "server-ca.crt";
/// `<agent_dir>/client-kubelet.{crt,key}`: the node's client certificate for the API.
pub const AGENT_CLIENT_KUBELET: &str = "client-kubelet";
/// `<agent_dir>/serving-kubelet.{crt,key}`: the kubelet endpoint's serving certificate.
pub const AGENT_SERVING_KUBELET: &str = "serving-kubelet";
/// `<agent_dir>/kubelet.kubeconfig`: server URL, server CA and the node's client certificate.
pub const AGENT_KUBECONFIG: &str = "kubelet.kubeconfig";

/// Writes the files the embedded agent needs into `agent_dir`:
/// `client-ca.crt`, `server-ca.crt`, `client-kubelet.crt`/`.key` (CN `system:node:<node_name>`,
/// O `system:nodes`, from the client CA), `serving-kubelet.crt`/`.key` (from the server CA;
/// SANs: the node name, `localhost`, `node_ips`, 127.0.0.1) and `kubelet.kubeconfig`
/// (`server_url`, the server CA and the client-kubelet certificate, embedded as data).
///
/// Keys are 0600. Existing certificates are kept unless missing, unreadable, not issued by the
/// current CA, expiring within 90 days, or their name or SANs changed (the rules of
/// [`super::ensure`]), so restarts do not churn files. The CAs must already exist in `tls_dir`
/// (call after [`super::ensure`]).
pub fn write_local_agent_files(
    tls_dir: &Path,
    agent_dir: &Path,
    node_name: &str,
    node_ips: &[IpAddr],
    server_url: &str,
) -> Result<(), PkiError> {
    if node_name.is_empty() {
        return Err(PkiError::Cert(
            "cannot issue kubelet certificates without a node name; set --node-name".into(),
        ));
    }
    let now = unix_now();
    let server_ca = existing_ca(tls_dir, SERVER_CA, now)?;
    let client_ca = existing_ca(tls_dir, CLIENT_CA, now)?;
    std::fs::create_dir_all(agent_dir).map_err(io_err(agent_dir))?;

    write_if_changed(&agent_dir.join(AGENT_SERVER_CA), &server_ca.cert_pem, 0o644)?;
    write_if_changed(&agent_dir.join(AGENT_CLIENT_CA), &client_ca.cert_pem, 0o644)?;

    let cn = format!("system:node:{node_name}");
    let client = Leaf::Client {
        cn: &cn,
        org: Some("system:nodes"),
    };
    let (client_pem, client_key_pem) =
        ensure_leaf(agent_dir, AGENT_CLIENT_KUBELET, &client_ca, client, now)?;

    let mut sans = Sans::default();
    sans.add(node_name);
    sans.add("localhost");
    for ip in node_ips {
        sans.add(&ip.to_string());
    }
    sans.add("127.0.0.1");
    let serving = Leaf::Serving {
        cn: node_name,
        sans: &sans,
    };
    ensure_leaf(agent_dir, AGENT_SERVING_KUBELET, &server_ca, serving, now)?;

    let kubeconfig = kubelet_kubeconfig(server_url, &server_ca, &client_pem, &client_key_pem);
    write_if_changed(&agent_dir.join(AGENT_KUBECONFIG), &kubeconfig, 0o600)
}

/// Loads a CA that `ensure` created; never creates one here, since a second, different CA
/// in the agent's files would cut the node off from the cluster.
fn existing_ca(tls_dir: &Path, name: &str, now: u64) -> Result<Ca, PkiError> {
    let cert = tls_dir.join(format!("{name}.crt"));
    if !cert.exists() {
        return Err(PkiError::Cert(format!(
            "{} is missing: the server creates its CAs on start, so write the agent's \
             certificates only after the server's PKI is loaded",
            cert.display()
        )));
    }
    load_or_create_ca(tls_dir, name, name, now)
}

/// Writes `content` unless the file already holds exactly it with `mode`.
fn write_if_changed(path: &Path, content: &str, mode: u32) -> Result<(), PkiError> {
    if read_optional(path)?.as_deref() == Some(content) {
        let current = std::fs::metadata(path).map_err(io_err(path))?;
        if current.permissions().mode() & 0o777 == mode {
            return Ok(());
        }
    }
    write_private(path, content.as_bytes(), mode)
}

/// The kubelet's kubeconfig, laid out like k3s's (cluster `local`, user `user`, context
/// `Default`) but with the certificates embedded, so it is valid wherever it is read from.
fn kubelet_kubeconfig(server_url: &str, server_ca: &Ca, cert_pem: &str, key_pem: &str) -> String {
    node_kubeconfig(server_url, &server_ca.cert_pem, cert_pem, key_pem)
}

/// The kubelet's kubeconfig from PEM texts (what a joined agent writes from the certificates
/// the server signed for it).
pub fn node_kubeconfig(
    server_url: &str,
    server_ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let names = KubeconfigNames {
        cluster: "local",
        user: "user",
        context: "Default",
        namespace: Some("default"),
    };
    kubeconfig_yaml(server_url, server_ca_pem, cert_pem, key_pem, &names)
}

/// Admin kubeconfig YAML for `server_url` (e.g. https://127.0.0.1:6443), laid out like k3s's
/// k3s.yaml: one cluster, user and context, all named `default`.
pub fn admin_kubeconfig(server_url: &str, pki: &Pki) -> String {
    let names = KubeconfigNames {
        cluster: "default",
        user: "default",
        context: "default",
        namespace: None,
    };
    kubeconfig_yaml(
        server_url,
        &pki.server_ca_pem,
        &pki.admin_cert_pem,
        &pki.admin_key_pem,
        &names,
    )
}

/// The names inside a one-cluster kubeconfig.
struct KubeconfigNames<'a> {
    cluster: &'a str,
    user: &'a str,
    context: &'a str,
    namespace: Option<&'a str>,
}

/// A one-cluster, one-user kubeconfig with the certificates embedded as data.
fn kubeconfig_yaml(
    server_url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    n: &KubeconfigNames<'_>,
) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    // A JSON string is a valid YAML double-quoted scalar, whatever the URL contains.
    let server = serde_json::Value::from(server_url).to_string();
    let namespace = n
        .namespace
        .map(|ns| format!("    namespace: {ns}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: {cluster}\n\
         contexts:\n\
         - context:\n    cluster: {cluster}\n{namespace}    user: {user}\n  name: {context}\n\
         current-context: {context}\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = b64(ca_pem),
        cert = b64(cert_pem),
        key = b64(key_pem),
        cluster = n.cluster,
        user = n.user,
        context = n.context,
    )
}
