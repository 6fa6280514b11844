//! Signing a node's certificate signing requests with the cluster CAs: the kubelet client
//! certificate (CN `system:node:<name>`, O `system:nodes`, from the client CA) and the kubelet
//! serving certificate (the node name, `localhost`, 127.0.0.1 and the node's addresses as
//! SANs, from the server CA), each valid one year. The node keeps its private key; only the
//! CSR's public key ends up in the certificate, and every name in it is chosen here, never
//! taken from the request.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

/// Leaf lifetime (k3s: one year).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86400);
/// Start this long in the past so peers with a slow clock accept the certificate.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Why a CSR is refused, or signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The request body is not a usable CSR (the node's fault: 400).
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    /// The CA could not be loaded or used (the server's fault).
    #[error("cannot sign with the cluster CA: {0}")]
    Ca(String),
}

/// A CA certificate and key loaded from the server's tls directory.
pub struct CaSigner {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl CaSigner {
    /// Loads `<tls_dir>/<name>.crt` and `.key` (e.g. `client-ca`).
    pub fn load(tls_dir: &Path, name: &str) -> Result<CaSigner, SignError> {
        let read = |ext: &str| {
            let p = tls_dir.join(format!("{name}.{ext}"));
            std::fs::read_to_string(&p).map_err(|e| SignError::Ca(format!("{}: {e}", p.display())))
        };
        let cert_pem = read("crt")?;
        let key_pem = read("key")?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| SignError::Ca(format!("{name}.crt: {e}")))?;
        let key =
            KeyPair::from_pem(&key_pem).map_err(|e| SignError::Ca(format!("{name}.key: {e}")))?;
        Ok(CaSigner {
            cert_pem,
            cert_der,
            key,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs `csr_pem` as described by `what`; returns the leaf followed by the CA (PEM).
    pub fn sign(&self, csr_pem: &[u8], what: &Issue) -> Result<String, SignError> {
        let csr = parse_csr(csr_pem, what)?;
        let mut params = leaf_params(what)?;
        params.use_authority_key_identifier_extension = true;
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)
            .map_err(|e| SignError::Ca(e.to_string()))?;
        let cert = request
            .signed_by(&issuer)
            .map_err(|e| SignError::Ca(e.to_string()))?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

/// What certificate to issue for a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Issue {
    /// The kubelet's client certificate for `node`.
    KubeletClient {
        /// The node name.
        node: String,
    },
    /// The kubelet endpoint's serving certificate for `node` at `ips`.
    KubeletServing {
        /// The node name.
        node: String,
        /// The node's addresses (from the `K3rs-Node-IP` header).
        ips: Vec<IpAddr>,
    },
}

impl Issue {
    /// The subject common name of the certificate.
    pub fn common_name(&self) -> String {
        match self {
            Issue::KubeletClient { node } => format!("system:node:{node}"),
            Issue::KubeletServing { node, .. } => node.clone(),
        }
    }
}

/// Parses and checks a CSR: PEM or DER, a valid self-signature, no CA request, and a subject
/// CN (when present) equal to the one that will be issued.
fn parse_csr(body: &[u8], what: &Issue) -> Result<CertificateSigningRequestParams, SignError> {
    let bad = |m: &str| SignError::BadCsr(m.to_string());
    if body.is_empty() {
        return Err(bad("the request body is empty; POST a PEM-encoded CSR"));
    }
    let der: Vec<u8> = if body.starts_with(b"-----") {
        CertificateSigningRequestDer::from_pem_slice(body)
            .map_err(|_| bad("no PEM CERTIFICATE REQUEST block found"))?
            .as_ref()
            .to_vec()
    } else {
        body.to_vec()
    };
    {
        use x509_parser::prelude::FromDer;
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
            .map_err(|_| bad("cannot parse the CSR"))?;
        let cn = csr
            .certification_request_info
            .subject
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok());
        if let Some(cn) = cn {
            let want = what.common_name();
            if cn != want {
                return Err(SignError::BadCsr(format!(
                    "the CSR asks for common name {cn:?}, but this node can only get {want:?}"
                )));
            }
        }
    }
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
        .map_err(|e| SignError::BadCsr(e.to_string()))?;
    if !matches!(
        csr.params.is_ca,
        rcgen::IsCa::NoCa | rcgen::IsCa::ExplicitNoCa
    ) {
        return Err(bad("a node cannot request a CA certificate"));
    }
    Ok(csr)
}

fn leaf_params(what: &Issue) -> Result<CertificateParams, SignError> {
    use ring::rand::SecureRandom;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let mut p = CertificateParams::default();
    p.not_before = epoch + Duration::from_secs(now.saturating_sub(BACKDATE.as_secs()));
    p.not_after = epoch + Duration::from_secs(now) + LEAF_VALIDITY;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| SignError::Ca("no randomness available for a serial number".into()))?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, what.common_name());
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    match what {
        Issue::KubeletClient { .. } => {
            dn.push(DnType::OrganizationName, "system:nodes");
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Issue::KubeletServing { node, ips } => {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let mut sans = Vec::new();
            for name in [node.as_str(), "localhost"] {
                let n = name
                    .to_string()
                    .try_into()
                    .map_err(|_| SignError::BadCsr(format!("{name:?} is not a DNS name")))?;
                sans.push(SanType::DnsName(n));
            }
            let mut all_ips = vec![IpAddr::from([127, 0, 0, 1])];
            for ip in ips {
                if !all_ips.contains(ip) {
                    all_ips.push(*ip);
                }
            }
            sans.extend(all_ips.into_iter().map(SanType::IpAddress));
            p.subject_alt_names = sans;
        }
    }
    p.distinguished_name = dn;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(dir: &Path) -> CaSigner {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "test-ca");
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(dir.join("client-ca.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("client-ca.key"), key.serialize_pem()).unwrap();
        CaSigner::load(dir, "client-ca").unwrap()
    }

    fn csr(cn: Option<&str>) -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        (key, pem)
    }

    #[test]
    fn signs_client_and_serving_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let (key, pem) = csr(Some("system:node:pi-1"));
        let chain = ca
            .sign(
                pem.as_bytes(),
                &Issue::KubeletClient {
                    node: "pi-1".into(),
                },
            )
            .unwrap();
        assert!(chain.ends_with(ca.cert_pem()));
        let der = CertificateDer::from_pem_slice(chain.as_bytes()).unwrap();
        let (user, groups) = crate::server::pki::client_identity(&der).unwrap();
        assert_eq!(user, "system:node:pi-1");
        assert_eq!(groups, vec!["system:nodes"]);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86400;
        assert_eq!(days, 365);

        let (_, pem) = csr(None);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let chain = ca
            .sign(
                pem.as_bytes(),
                &Issue::KubeletServing {
                    node: "pi-1".into(),
                    ips: vec![ip],
                },
            )
            .unwrap();
        let der = CertificateDer::from_pem_slice(chain.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names = format!("{:?}", san.value.general_names);
        assert!(
            names.contains("pi-1") && names.contains("localhost"),
            "{names}"
        );
        assert_eq!(san.value.general_names.len(), 4, "{names}");
    }

    #[test]
    fn refuses_bad_requests() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let what = Issue::KubeletClient {
            node: "pi-1".into(),
        };
        let (_, other) = csr(Some("system:node:pi-2"));
        let err = ca.sign(other.as_bytes(), &what).unwrap_err().to_string();
        assert!(err.contains("system:node:pi-2"), "{err}");
        let (_, good) = csr(None);
        // A corrupted signature.
        let mut der = CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let n = der.len();
        der[n - 3] ^= 0x55;
        assert!(matches!(ca.sign(&der, &what), Err(SignError::BadCsr(_))));
        for body in [
            &b""[..],
            b"garbage",
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        ] {
            assert!(matches!(ca.sign(body, &what), Err(SignError::BadCsr(_))));
        }
    }
}
