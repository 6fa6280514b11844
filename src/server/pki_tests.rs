//! Tests of the PKI: creation, reuse, reissue, file modes, and real TLS handshakes.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn sans(extra: &[&str]) -> Sans {
    let mut s = Sans::default();
    for n in ["localhost", "kubernetes.default.svc", "127.0.0.1", "::1"]
        .iter()
        .chain(extra)
    {
        s.add(n);
    }
    s
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn mode(dir: &Path, name: &str) -> u32 {
    std::fs::metadata(dir.join(name))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn creates_layout_and_reload_reuses_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server/tls");
    let first = ensure(&dir, &sans(&[])).unwrap();
    for f in [
        "server-ca.crt",
        "server-ca.key",
        "client-ca.crt",
        "client-ca.key",
        "serving-kube-apiserver.crt",
        "serving-kube-apiserver.key",
        "client-admin.crt",
        "client-admin.key",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    for key in [
        "server-ca.key",
        "client-ca.key",
        "serving-kube-apiserver.key",
        "client-admin.key",
    ] {
        assert_eq!(mode(&dir, key), 0o600, "{key}");
    }
    assert_eq!(mode(&dir, "server-ca.crt"), 0o644);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        first.server_ca_pem.as_bytes(),
        read(&dir, "server-ca.crt").as_slice()
    );

    // CA subject and validity like k3s.
    let ca_der = CertificateDer::from_pem_slice(first.server_ca_pem.as_bytes()).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let cn = ca
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(cn.starts_with("k3rs-server-ca@"), "{cn}");
    let life = ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp();
    assert!(life >= 3650 * 86400, "{life}");
    assert!(ca.is_ca());

    let before: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    let second = ensure(&dir, &sans(&[])).unwrap();
    assert_eq!(first.server_ca_pem, second.server_ca_pem);
    assert_eq!(first.client_ca, second.client_ca);
    assert_eq!(first.serving_chain, second.serving_chain);
    assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
    for (name, bytes) in before {
        assert_eq!(
            std::fs::read(dir.join(&name)).unwrap(),
            bytes,
            "{name:?} changed"
        );
    }
}

#[test]
fn new_san_reissues_only_the_serving_cert() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ensure(dir, &sans(&[])).unwrap();
    let untouched = [
        "server-ca.crt",
        "server-ca.key",
        "client-ca.crt",
        "client-ca.key",
        "client-admin.crt",
        "client-admin.key",
    ];
    let saved: Vec<_> = untouched.iter().map(|f| read(dir, f)).collect();
    let old_serving = read(dir, "serving-kube-apiserver.crt");

    let pki = ensure(dir, &sans(&["k3rs.example.com", "192.0.2.7"])).unwrap();
    for (f, bytes) in untouched.iter().zip(&saved) {
        assert_eq!(&read(dir, f), bytes, "{f} changed");
    }
    let new_serving = read(dir, "serving-kube-apiserver.crt");
    assert_ne!(new_serving, old_serving);
    let (_, leaf) = x509_parser::parse_x509_certificate(&pki.serving_chain[0]).unwrap();
    let (dns, ips) = cert_sans(&leaf);
    assert!(dns.contains(&"k3rs.example.com".to_string()), "{dns:?}");
    assert!(ips.contains(&"192.0.2.7".parse().unwrap()), "{ips:?}");
    assert!(ips.contains(&"::1".parse().unwrap()), "{ips:?}");
    // The chain is leaf + server CA.
    assert_eq!(pki.serving_chain.len(), 2);
    assert_eq!(
        pki.serving_chain[1],
        CertificateDer::from_pem_slice(pki.server_ca_pem.as_bytes()).unwrap()
    );
    // A subset of the SANs does not reissue again.
    ensure(dir, &sans(&["k3rs.example.com"])).unwrap();
    assert_eq!(read(dir, "serving-kube-apiserver.crt"), new_serving);
}

#[test]
fn expiring_or_foreign_leaf_is_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ensure(dir, &sans(&[])).unwrap();
    let ca_before = read(dir, "server-ca.crt");
    // Replace the serving cert with one from another CA.
    let other = tempfile::tempdir().unwrap();
    ensure(other.path(), &sans(&[])).unwrap();
    std::fs::copy(
        other.path().join("serving-kube-apiserver.crt"),
        dir.join("serving-kube-apiserver.crt"),
    )
    .unwrap();
    std::fs::copy(
        other.path().join("serving-kube-apiserver.key"),
        dir.join("serving-kube-apiserver.key"),
    )
    .unwrap();
    let pki = ensure(dir, &sans(&[])).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&pki.serving_chain[0]).unwrap();
    let ca_der = CertificateDer::from_pem_slice(&ca_before).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(leaf.verify_signature(Some(ca.public_key())).is_ok());
    assert_eq!(read(dir, "server-ca.crt"), ca_before);

    // An admin cert within 90 days of expiry is renewed (simulate by checking at a later time).
    let client_ca = load_or_create_ca(dir, CLIENT_CA, "k3rs-client-ca", unix_now()).unwrap();
    let admin = std::fs::read_to_string(dir.join("client-admin.crt")).unwrap();
    let key =
        KeyPair::from_pem(&std::fs::read_to_string(dir.join("client-admin.key")).unwrap()).unwrap();
    let leaf = Leaf::Client {
        cn: "system:admin",
        org: Some("system:masters"),
    };
    assert_eq!(
        leaf_problem(&admin, &key, &client_ca, &leaf, unix_now()),
        None
    );
    let later = unix_now() + 300 * 86400;
    assert_eq!(
        leaf_problem(&admin, &key, &client_ca, &leaf, later).as_deref(),
        Some("expires within 90 days")
    );
}

#[test]
fn corrupt_or_half_missing_ca_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ensure(dir, &sans(&[])).unwrap();
    let good_key = read(dir, "server-ca.key");

    std::fs::write(dir.join("server-ca.key"), "garbage").unwrap();
    let msg = ensure(dir, &sans(&[])).err().unwrap().to_string();
    assert!(msg.contains("server-ca.key"), "{msg}");
    assert!(msg.contains("never replaced automatically"), "{msg}");
    assert_eq!(read(dir, "server-ca.key"), b"garbage");

    std::fs::write(dir.join("server-ca.key"), &good_key).unwrap();
    std::fs::write(
        dir.join("client-ca.crt"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let msg = ensure(dir, &sans(&[])).err().unwrap().to_string();
    assert!(msg.contains("client-ca.crt"), "{msg}");

    let tmp2 = tempfile::tempdir().unwrap();
    ensure(tmp2.path(), &sans(&[])).unwrap();
    std::fs::remove_file(tmp2.path().join("server-ca.key")).unwrap();
    let msg = ensure(tmp2.path(), &sans(&[])).err().unwrap().to_string();
    assert!(
        msg.contains("server-ca.key") && msg.contains("missing"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1);
}

#[test]
fn kubeconfig_has_k3s_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &sans(&[])).unwrap();
    let kc = admin_kubeconfig("https://127.0.0.1:6443", &pki);
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&kc).unwrap();
    assert_eq!(v["current-context"].as_str(), Some("default"));
    assert_eq!(
        v["clusters"][0]["cluster"]["server"].as_str(),
        Some("https://127.0.0.1:6443")
    );
    assert_eq!(
        v["contexts"][0]["context"]["user"].as_str(),
        Some("default")
    );
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            v["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(ca, pki.server_ca_pem.as_bytes());
    let key = base64::engine::general_purpose::STANDARD
        .decode(v["users"][0]["user"]["client-key-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(key, pki.admin_key_pem.as_bytes());
}

#[test]
fn write_private_sets_exact_mode_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("a/b/kubeconfig.yaml");
    write_private(&p, b"one", 0o644).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"one");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o644
    );
    write_private(&p, b"two", 0o600).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn client_identity_of_admin_cert() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &sans(&[])).unwrap();
    let der = CertificateDer::from_pem_slice(pki.admin_cert_pem.as_bytes()).unwrap();
    assert_eq!(
        client_identity(&der),
        Some((
            "system:admin".to_string(),
            vec!["system:masters".to_string()]
        ))
    );
    assert_eq!(client_identity(b"not a cert"), None);
}

#[test]
fn sans_for_server_config() {
    let cfg = ServerConfig {
        data_dir: "/x".into(),
        bind_address: "0.0.0.0".parse().unwrap(),
        https_listen_port: 6443,
        advertise_address: Some("192.168.1.10".parse().unwrap()),
        tls_san: vec!["k3rs.example".into(), "10.9.9.9".into()],
        cluster_cidr: "10.42.0.0/16".into(),
        service_cidr: "10.43.0.0/16".into(),
        node_cidr_mask_size: 24,
        cluster_domain: "cluster.local".into(),
        token: None,
        agent_token: None,
        node_name: "pi-1".into(),
        disable_agent: false,
        secrets_encryption: false,
        agent: Default::default(),
        write_kubeconfig: "/x/k.yaml".into(),
        write_kubeconfig_mode: 0o600,
        debug: false,
        verbosity: 0,
        config_files: vec![],
        controllers: Default::default(),
    };
    let s = Sans::for_server(&cfg, &["192.168.1.10".parse().unwrap()]);
    for d in [
        "kubernetes",
        "kubernetes.default.svc.cluster.local",
        "localhost",
        "pi-1",
        "k3rs.example",
    ] {
        assert!(s.dns.contains(&d.to_string()), "{d}: {:?}", s.dns);
    }
    for ip in ["127.0.0.1", "::1", "10.43.0.1", "192.168.1.10", "10.9.9.9"] {
        assert!(s.ips.contains(&ip.parse().unwrap()), "{ip}: {:?}", s.ips);
    }
    assert_eq!(
        s.ips
            .iter()
            .filter(|i| **i == "192.168.1.10".parse::<IpAddr>().unwrap())
            .count(),
        1
    );
}

/// Runs one TLS connection over loopback TCP; returns what the server saw:
/// (negotiated ALPN, client identity).
async fn handshake(
    pki: &Pki,
    server_name: &str,
    client_cert: bool,
) -> (Option<Vec<u8>>, Option<(String, Vec<String>)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server_cfg = Arc::new(server_tls_config(pki).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(server_cfg)
            .accept(tcp)
            .await
            .unwrap();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(b"pong").await.unwrap();
        tls.flush().await.unwrap();
        let conn = tls.get_ref().1;
        let ident = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| client_identity(c));
        (conn.alpn_protocol().map(|a| a.to_vec()), ident)
    });

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.server_ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut client_cfg = if client_cert {
        let chain = CertificateDer::pem_slice_iter(pki.admin_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(pki.admin_key_pem.as_bytes()).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    client_cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client_cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    server.await.unwrap()
}

#[tokio::test]
async fn tls_handshake_with_admin_cert_and_anonymous() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &sans(&[])).unwrap();
    let (alpn, ident) = handshake(&pki, "127.0.0.1", true).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(
        ident,
        Some((
            "system:admin".to_string(),
            vec!["system:masters".to_string()]
        ))
    );
    let (_, ident) = handshake(&pki, "localhost", false).await;
    assert_eq!(ident, None);

    // After a reload that reissued the serving cert, the handshake still verifies.
    let pki = ensure(tmp.path(), &sans(&["api.example"])).unwrap();
    let (_, ident) = handshake(&pki, "api.example", true).await;
    assert_eq!(ident.map(|i| i.0).as_deref(), Some("system:admin"));
}

fn leaf_of(pem: &[u8]) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap()
}

/// Asserts the first certificate in `pem` names user `cn` in group `org` and is signed by `ca`.
#[track_caller]
fn assert_client_cert(pem: &[u8], ca: &CertificateDer<'_>, cn: &str, org: &str) {
    let leaf = leaf_of(pem);
    assert_eq!(
        client_identity(&leaf),
        Some((cn.to_string(), vec![org.to_string()]))
    );
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(ca).unwrap();
    assert!(cert.verify_signature(Some(ca.public_key())).is_ok());
}

#[test]
fn apiserver_kubelet_client_cert_is_issued_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = ensure(dir, &sans(&[])).unwrap();
    assert_eq!(mode(dir, "client-kube-apiserver.key"), 0o600);
    assert_client_cert(
        pki.kubelet_client_cert_pem.as_bytes(),
        &pki.client_ca[0],
        "system:apiserver",
        "system:masters",
    );
    // The CA follows the leaf (k3s's chain files).
    assert!(pki.kubelet_client_cert_pem.ends_with(&pki.client_ca_pem));
    assert_eq!(
        pki.kubelet_client_key_pem.as_bytes(),
        read(dir, "client-kube-apiserver.key").as_slice()
    );
    let again = ensure(dir, &sans(&[])).unwrap();
    assert_eq!(again.kubelet_client_cert_pem, pki.kubelet_client_cert_pem);
}

const AGENT_FILES: [&str; 7] = [
    "client-ca.crt",
    "server-ca.crt",
    "client-kubelet.crt",
    "client-kubelet.key",
    "serving-kubelet.crt",
    "serving-kubelet.key",
    "kubelet.kubeconfig",
];

fn snapshot(dir: &Path) -> Vec<Vec<u8>> {
    AGENT_FILES.iter().map(|f| read(dir, f)).collect()
}

#[test]
fn local_agent_files_have_k3s_names_identities_and_sans() {
    let tmp = tempfile::tempdir().unwrap();
    let tls = tmp.path().join("server/tls");
    let agent = tmp.path().join("agent");
    let pki = ensure(&tls, &sans(&[])).unwrap();
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    write_local_agent_files(&tls, &agent, "pi-1", &[ip], "https://127.0.0.1:6443").unwrap();

    for key in [
        "client-kubelet.key",
        "serving-kubelet.key",
        "kubelet.kubeconfig",
    ] {
        assert_eq!(mode(&agent, key), 0o600, "{key}");
    }
    assert_eq!(
        read(&agent, "server-ca.crt"),
        pki.server_ca_pem.as_bytes().to_vec()
    );
    assert_eq!(
        read(&agent, "client-ca.crt"),
        pki.client_ca_pem.as_bytes().to_vec()
    );

    assert_client_cert(
        &read(&agent, "client-kubelet.crt"),
        &pki.client_ca[0],
        "system:node:pi-1",
        "system:nodes",
    );

    let serving = leaf_of(&read(&agent, "serving-kubelet.crt"));
    let (_, serving_x509) = x509_parser::parse_x509_certificate(&serving).unwrap();
    let server_ca_der = CertificateDer::from_pem_slice(pki.server_ca_pem.as_bytes()).unwrap();
    let (_, server_ca) = x509_parser::parse_x509_certificate(&server_ca_der).unwrap();
    assert!(serving_x509
        .verify_signature(Some(server_ca.public_key()))
        .is_ok());
    let (dns, ips) = cert_sans(&serving_x509);
    assert_eq!(dns, vec!["pi-1".to_string(), "localhost".to_string()]);
    assert_eq!(ips, vec![ip, "127.0.0.1".parse::<IpAddr>().unwrap()]);

    // The kubeconfig points at the server with the server CA and the node's identity.
    let kc: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(&read(&agent, "kubelet.kubeconfig")).unwrap();
    use base64::Engine;
    let b64 = |v: &serde_yaml_ng::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let cluster = &kc["clusters"][0]["cluster"];
    assert_eq!(cluster["server"].as_str(), Some("https://127.0.0.1:6443"));
    assert_eq!(
        b64(&cluster["certificate-authority-data"]),
        pki.server_ca_pem.as_bytes()
    );
    let user = &kc["users"][0]["user"];
    assert_eq!(
        b64(&user["client-certificate-data"]),
        read(&agent, "client-kubelet.crt")
    );
    assert_eq!(
        b64(&user["client-key-data"]),
        read(&agent, "client-kubelet.key")
    );
    assert_eq!(kc["current-context"].as_str(), Some("Default"));
}

#[test]
fn local_agent_files_are_reused_and_reissued_on_change() {
    let tmp = tempfile::tempdir().unwrap();
    let tls = tmp.path().join("tls");
    let agent = tmp.path().join("agent");
    ensure(&tls, &sans(&[])).unwrap();
    let url = "https://127.0.0.1:6443";
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    write_local_agent_files(&tls, &agent, "pi-1", &[ip], url).unwrap();
    let first = snapshot(&agent);
    write_local_agent_files(&tls, &agent, "pi-1", &[ip], url).unwrap();
    assert_eq!(
        snapshot(&agent),
        first,
        "a restart must not rewrite the files"
    );

    // A new node IP: only the serving certificate changes (keys are kept).
    let ip2: IpAddr = "192.0.2.11".parse().unwrap();
    write_local_agent_files(&tls, &agent, "pi-1", &[ip, ip2], url).unwrap();
    let second = snapshot(&agent);
    for (i, f) in AGENT_FILES.iter().enumerate() {
        let changed = first[i] != second[i];
        assert_eq!(changed, *f == "serving-kubelet.crt", "{f}");
    }

    // A new node name: both node certificates and the kubeconfig change.
    write_local_agent_files(&tls, &agent, "pi-2", &[ip, ip2], url).unwrap();
    let third = snapshot(&agent);
    for (i, f) in AGENT_FILES.iter().enumerate() {
        let changed = second[i] != third[i];
        let expect = matches!(
            *f,
            "serving-kubelet.crt" | "client-kubelet.crt" | "kubelet.kubeconfig"
        );
        assert_eq!(changed, expect, "{f}");
    }
    let client = leaf_of(&read(&agent, "client-kubelet.crt"));
    assert_eq!(client_identity(&client).unwrap().0, "system:node:pi-2");

    // A new server URL rewrites only the kubeconfig.
    write_local_agent_files(&tls, &agent, "pi-2", &[ip, ip2], "https://10.0.0.1:6443").unwrap();
    let fourth = snapshot(&agent);
    for (i, f) in AGENT_FILES.iter().enumerate() {
        assert_eq!(third[i] != fourth[i], *f == "kubelet.kubeconfig", "{f}");
    }
}

#[test]
fn local_agent_files_need_the_server_cas() {
    let tmp = tempfile::tempdir().unwrap();
    let err = write_local_agent_files(
        &tmp.path().join("tls"),
        &tmp.path().join("agent"),
        "pi-1",
        &[],
        "https://127.0.0.1:6443",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("server-ca.crt is missing"), "{err}");
    // Nothing was created: a CA made up here would not be the cluster's.
    assert!(!tmp.path().join("tls/server-ca.crt").exists());
    assert!(!tmp.path().join("agent").exists());
}
