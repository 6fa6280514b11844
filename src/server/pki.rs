//! The cluster's certificates: the two CAs (server CA that signs the serving certificate, client
//! CA that signs client certificates), the API serving certificate, the admin client
//! certificate and the API server's client certificate for kubelets, kept as PEM files under
//! `<data-dir>/server/tls` with k3s's file names. The kubeconfigs and the files of the agent
//! embedded in `k3rs server` are written by pki_client_files.rs.
//!
//! CAs are created once and never replaced automatically: a CA that cannot be read is an error
//! for a human to resolve, because replacing it would silently cut off every node and kubeconfig.
//! Leaf certificates are cheap and are reissued on start whenever they are missing, unreadable,
//! not issued by the current CA, lack a requested SAN, or expire within 90 days.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::ServerConfig;

/// CA lifetime (k3s: 10 years).
const CA_VALIDITY: Duration = Duration::from_secs(3650 * 86400);
/// Leaf lifetime (k3s: 1 year).
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86400);
/// Leaves closer than this to expiry are reissued on start.
const RENEW_BEFORE: Duration = Duration::from_secs(90 * 86400);
/// Certificates start this long in the past, so peers with a slightly slow clock accept them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Server CA (signs the serving certificate; what clients trust; served at /cacerts).
pub const SERVER_CA: &str = "server-ca";
/// Client CA (signs client certificates the API accepts).
pub const CLIENT_CA: &str = "client-ca";
/// The API serving certificate.
pub const SERVING: &str = "serving-kube-apiserver";
/// The admin client certificate.
pub const CLIENT_ADMIN: &str = "client-admin";
/// The API server's client certificate for kubelets (logs, exec, attach, port-forward).
pub const CLIENT_KUBE_APISERVER: &str = "client-kube-apiserver";

/// What goes into the serving certificate's subject alternative names.
#[derive(Clone, Debug, Default)]
pub struct Sans {
    /// DNS names (hostname, --tls-san names, kubernetes.default.svc.<domain>, ...).
    pub dns: Vec<String>,
    /// IP addresses (127.0.0.1, ::1, node/advertise IP, first service IP, --tls-san IPs).
    pub ips: Vec<IpAddr>,
}

impl Sans {
    /// The names k3s puts on the apiserver certificate for `cfg`, plus `node_ips`: kubernetes,
    /// kubernetes.default, kubernetes.default.svc[.<domain>], localhost, the node name,
    /// 127.0.0.1, ::1, the `kubernetes` service IP, the advertise and bind addresses (when
    /// specific) and every `--tls-san`.
    pub fn for_server(cfg: &ServerConfig, node_ips: &[IpAddr]) -> Sans {
        let mut sans = Sans::default();
        for name in [
            "kubernetes".to_string(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            format!("kubernetes.default.svc.{}", cfg.cluster_domain),
            "localhost".into(),
            cfg.node_name.clone(),
        ] {
            sans.add(&name);
        }
        let mut ips: Vec<IpAddr> = vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ];
        ips.extend(cfg.api_service_ip());
        ips.extend(cfg.advertise_address);
        if !cfg.bind_address.is_unspecified() {
            ips.push(cfg.bind_address);
        }
        ips.extend(node_ips.iter().copied());
        for ip in ips {
            sans.add(&ip.to_string());
        }
        for san in &cfg.tls_san {
            sans.add(san);
        }
        sans
    }

    /// Adds an IP address or DNS name, skipping duplicates.
    pub fn add(&mut self, name: &str) {
        let name = name.trim();
        if name.is_empty() {
            return;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            if !self.ips.contains(&ip) {
                self.ips.push(ip);
            }
        } else if !self.dns.iter().any(|d| d.eq_ignore_ascii_case(name)) {
            self.dns.push(name.to_ascii_lowercase());
        }
    }
}

/// Errors creating or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate or key could not be generated or parsed.
    #[error("{0}")]
    Cert(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The loaded PKI of a server.
pub struct Pki {
    /// PEM of the server CA certificate (what clients trust; served at /cacerts). Exactly the
    /// bytes of `server-ca.crt`, so the token's CA hash matches what /cacerts serves.
    pub server_ca_pem: String,
    /// PEM of the client CA certificate.
    pub client_ca_pem: String,
    /// Serving certificate chain (leaf first, then the server CA).
    pub serving_chain: Vec<CertificateDer<'static>>,
    /// Serving key.
    pub serving_key: PrivateKeyDer<'static>,
    /// Client CA certificates that authenticate client certificates.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// Admin client certificate (CN=system:admin, O=system:masters) followed by the client
    /// CA, PEM (as k3s writes it).
    pub admin_cert_pem: String,
    /// Admin client key, PEM.
    pub admin_key_pem: String,
    /// The API server's client certificate for kubelets (CN=system:apiserver,
    /// O=system:masters) followed by the client CA, PEM.
    pub kubelet_client_cert_pem: String,
    /// Its key, PEM.
    pub kubelet_client_key_pem: String,
}

/// A CA as loaded from disk.
struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl Ca {
    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.key)
            .map_err(|e| PkiError::Cert(format!("cannot use CA certificate as issuer: {e}")))
    }
}

/// What a leaf certificate is for.
enum Leaf<'a> {
    Serving { cn: &'a str, sans: &'a Sans },
    Client { cn: &'a str, org: Option<&'a str> },
}

/// Loads the PKI from `tls_dir`, creating what is missing and reissuing leaf certificates that
/// need it (see the module docs).
pub fn ensure(tls_dir: &Path, sans: &Sans) -> Result<Pki, PkiError> {
    if !tls_dir.exists() {
        std::fs::create_dir_all(tls_dir).map_err(io_err(tls_dir))?;
        std::fs::set_permissions(tls_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(tls_dir))?;
    }
    let now = unix_now();
    let server_ca = load_or_create_ca(tls_dir, SERVER_CA, "k3rs-server-ca", now)?;
    let client_ca = load_or_create_ca(tls_dir, CLIENT_CA, "k3rs-client-ca", now)?;
    let serving = Leaf::Serving {
        cn: "kube-apiserver",
        sans,
    };
    let (serving_pem, serving_key_pem) = ensure_leaf(tls_dir, SERVING, &server_ca, serving, now)?;
    let admin = Leaf::Client {
        cn: "system:admin",
        org: Some("system:masters"),
    };
    let (admin_cert_pem, admin_key_pem) =
        ensure_leaf(tls_dir, CLIENT_ADMIN, &client_ca, admin, now)?;
    let apiserver = Leaf::Client {
        cn: "system:apiserver",
        org: Some("system:masters"),
    };
    let (kubelet_client_cert_pem, kubelet_client_key_pem) =
        ensure_leaf(tls_dir, CLIENT_KUBE_APISERVER, &client_ca, apiserver, now)?;

    let serving_chain = CertificateDer::pem_slice_iter(serving_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Cert(format!("serving certificate: {e}")))?;
    let serving_key = PrivateKeyDer::from_pem_slice(serving_key_pem.as_bytes())
        .map_err(|e| PkiError::Cert(format!("serving key: {e}")))?;
    Ok(Pki {
        server_ca_pem: server_ca.cert_pem,
        client_ca_pem: client_ca.cert_pem,
        serving_chain,
        serving_key,
        client_ca: vec![client_ca.cert_der],
        admin_cert_pem,
        admin_key_pem,
        kubelet_client_cert_pem,
        kubelet_client_key_pem,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Cert("no randomness available for a serial number".into()))?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and a fixed length
    Ok(SerialNumber::from_slice(&bytes))
}

fn base_params(cn: &str, now: u64, validity: Duration) -> Result<CertificateParams, PkiError> {
    // rcgen does not re-export its time type; build the instants from the epoch.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let mut p = CertificateParams::default();
    p.not_before = epoch + Duration::from_secs(now.saturating_sub(BACKDATE.as_secs()));
    p.not_after = epoch + Duration::from_secs(now) + validity;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serial_number = Some(random_serial()?);
    Ok(p)
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn load_or_create_ca(tls_dir: &Path, name: &str, cn: &str, now: u64) -> Result<Ca, PkiError> {
    let cert_path = tls_dir.join(format!("{name}.crt"));
    let key_path = tls_dir.join(format!("{name}.key"));
    let hint = "the CA is never replaced automatically; restore it from a backup, or remove \
                the server's tls directory to start a new cluster identity";
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert_pem), Some(key_pem)) => {
            let bad = |path: &Path, what: String| {
                PkiError::Cert(format!("{}: {what}; {hint}", path.display()))
            };
            let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .map_err(|e| bad(&cert_path, format!("cannot parse CA certificate ({e})")))?;
            let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
                .map_err(|e| bad(&cert_path, format!("cannot parse CA certificate ({e})")))?;
            if !x509.is_ca() {
                return Err(bad(&cert_path, "not a CA certificate".into()));
            }
            let key = KeyPair::from_pem(&key_pem)
                .map_err(|e| bad(&key_path, format!("cannot parse CA private key ({e})")))?;
            if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
                return Err(bad(
                    &key_path,
                    format!("key does not belong to {}", cert_path.display()),
                ));
            }
            let not_after = x509.validity().not_after.timestamp();
            if not_after <= now as i64 {
                tracing::error!(
                    ca = name,
                    "CA certificate {} has expired",
                    cert_path.display()
                );
            } else if (not_after as u64) < now + RENEW_BEFORE.as_secs() {
                tracing::warn!(
                    ca = name,
                    "CA certificate {} expires soon",
                    cert_path.display()
                );
            }
            drop(x509);
            Ok(Ca {
                cert_pem,
                cert_der: cert_der.into_owned(),
                key,
            })
        }
        (None, None) => {
            let key = KeyPair::generate()
                .map_err(|e| PkiError::Cert(format!("generating {name} key: {e}")))?;
            let mut params = base_params(&format!("{cn}@{now}"), now, CA_VALIDITY)?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
            ];
            let cert = params
                .self_signed(&key)
                .map_err(|e| PkiError::Cert(format!("signing {name}: {e}")))?;
            let cert_pem = cert.pem();
            write_private(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_private(&cert_path, cert_pem.as_bytes(), 0o644)?;
            tracing::info!("created {name} certificate {}", cert_path.display());
            Ok(Ca {
                cert_pem,
                cert_der: cert.der().clone(),
                key,
            })
        }
        (Some(_), None) => Err(PkiError::Cert(format!(
            "{} exists but its key {} is missing; {hint}",
            cert_path.display(),
            key_path.display()
        ))),
        (None, Some(_)) => Err(PkiError::Cert(format!(
            "{} exists but its certificate {} is missing; {hint}",
            key_path.display(),
            cert_path.display()
        ))),
    }
}

/// Returns the (cert chain PEM, key PEM) of a leaf, reissuing it when needed.
fn ensure_leaf(
    tls_dir: &Path,
    name: &str,
    ca: &Ca,
    leaf: Leaf<'_>,
    now: u64,
) -> Result<(String, String), PkiError> {
    let cert_path = tls_dir.join(format!("{name}.crt"));
    let key_path = tls_dir.join(format!("{name}.key"));
    let cert_pem = read_optional(&cert_path)?;
    let key_pem = read_optional(&key_path)?;
    let key = key_pem.as_deref().and_then(|k| KeyPair::from_pem(k).ok());

    let reason = match (&cert_pem, &key_pem, &key) {
        (Some(pem), Some(key_text), Some(key)) => match leaf_problem(pem, key, ca, &leaf, now) {
            None => return Ok((pem.clone(), key_text.clone())),
            Some(reason) => reason,
        },
        (None, _, _) => "missing".to_string(),
        _ => "key missing or unreadable".to_string(),
    };
    if cert_pem.is_some() {
        tracing::info!("reissuing {} certificate: {reason}", name);
    }

    // Keep a good existing key; a new certificate does not need a new key.
    let key = match key {
        Some(k) => k,
        None => KeyPair::generate()
            .map_err(|e| PkiError::Cert(format!("generating {name} key: {e}")))?,
    };
    let mut params = match &leaf {
        Leaf::Serving { cn, sans } => {
            let mut p = base_params(cn, now, LEAF_VALIDITY)?;
            p.subject_alt_names = san_types(sans)?;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p
        }
        Leaf::Client { cn, org } => {
            let mut p = base_params(cn, now, LEAF_VALIDITY)?;
            if let Some(org) = org {
                p.distinguished_name.push(DnType::OrganizationName, *org);
            }
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            p
        }
    };
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &ca.issuer()?)
        .map_err(|e| PkiError::Cert(format!("signing {name}: {e}")))?;
    let chain = format!("{}{}", cert.pem(), ca.cert_pem);
    let key_pem = key.serialize_pem();
    write_private(&key_path, key_pem.as_bytes(), 0o600)?;
    write_private(&cert_path, chain.as_bytes(), 0o644)?;
    Ok((chain, key_pem))
}

/// Why an existing leaf must be reissued, or None when it is fine.
fn leaf_problem(pem: &str, key: &KeyPair, ca: &Ca, leaf: &Leaf<'_>, now: u64) -> Option<String> {
    let der = match CertificateDer::pem_slice_iter(pem.as_bytes()).next() {
        Some(Ok(d)) => d,
        _ => return Some("certificate unreadable".into()),
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return Some("certificate unreadable".into());
    };
    let Ok((_, ca_cert)) = x509_parser::parse_x509_certificate(&ca.cert_der) else {
        return Some("CA unreadable".into());
    };
    if cert.issuer().as_raw() != ca_cert.subject().as_raw()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Some("not issued by the current CA".into());
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Some("key does not match certificate".into());
    }
    let not_after = cert.validity().not_after.timestamp();
    if not_after < (now + RENEW_BEFORE.as_secs()) as i64 {
        return Some("expires within 90 days".into());
    }
    match leaf {
        Leaf::Serving { sans, .. } => {
            let (dns, ips) = cert_sans(&cert);
            for want in &sans.dns {
                if !dns.iter().any(|d| d.eq_ignore_ascii_case(want)) {
                    return Some(format!("missing SAN {want}"));
                }
            }
            for want in &sans.ips {
                if !ips.contains(want) {
                    return Some(format!("missing SAN {want}"));
                }
            }
            None
        }
        Leaf::Client { cn, org } => {
            let Some(ident) = client_identity(&der) else {
                return Some("subject unreadable".into());
            };
            if ident.0 != *cn || org.is_some_and(|o| !ident.1.iter().any(|g| g == o)) {
                return Some("subject changed".into());
            }
            None
        }
    }
}

fn cert_sans(cert: &x509_parser::certificate::X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
    use x509_parser::extensions::GeneralName;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (dns, ips)
}

fn san_types(sans: &Sans) -> Result<Vec<SanType>, PkiError> {
    let mut out = Vec::new();
    for d in &sans.dns {
        let name = d.clone().try_into().map_err(|e| {
            PkiError::Cert(format!("invalid DNS name {d:?} for the certificate: {e}"))
        })?;
        out.push(SanType::DnsName(name));
    }
    out.extend(sans.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(out)
}

/// rustls config for the API listener: serving cert, optional client certs verified
/// against the client CA, ALPN h2 and http/1.1. Always uses the ring provider explicitly.
pub fn server_tls_config(pki: &Pki) -> Result<rustls::ServerConfig, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in &pki.client_ca {
        roots
            .add(ca.clone())
            .map_err(|e| PkiError::Cert(format!("client CA: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| PkiError::Cert(format!("client certificate verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Cert(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.serving_chain.clone(), pki.serving_key.clone_key())
        .map_err(|e| PkiError::Cert(format!("serving certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The Kubernetes identity of a client certificate: user = subject CN, groups = each subject O.
pub fn client_identity(cert_der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let user = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((user, groups))
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync, rename,
/// fsync of the directory), with exactly `mode`. The file is never more permissive than
/// `mode`, not even while being written. Parent directories are created.
pub fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| PkiError::Cert(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        // Created with `mode` minus the umask (never wider), then set to exactly `mode`.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename durable.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    Ok(())
}

#[path = "pki_client_files.rs"]
mod client_files;
pub use client_files::{
    admin_kubeconfig, node_kubeconfig, write_local_agent_files, AGENT_CLIENT_CA,
    AGENT_CLIENT_KUBELET, AGENT_KUBECONFIG, AGENT_SERVER_CA, AGENT_SERVING_KUBELET,
};

#[cfg(test)]
#[path = "pki_tests.rs"]
mod tests;
