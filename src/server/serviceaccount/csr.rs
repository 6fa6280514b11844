//! The certificates.k8s.io/v1 CertificateSigningRequest API beyond plain storage: the
//! requester recorded on create ([`prepare_for_create`]), the `approval` subresource
//! `kubectl certificate approve|deny` writes conditions through ([`update_approval`]), and
//! the built-in signers ([`run_signer`]) that issue approved requests into
//! `status.certificate`: `kubernetes.io/kube-apiserver-client` and
//! `kubernetes.io/kube-apiserver-client-kubelet` from the client CA,
//! `kubernetes.io/kubelet-serving` from the server CA. Requests for other signers are left
//! to whoever implements them, as upstream does.

use crate::api::status::ApiError;
use crate::api::{meta, FieldError};
use crate::server::http::auth::Identity;
use crate::server::informer::{builtin, run_controller, Informers, ObjectKey, WorkQueue};
use crate::server::registry::Registry;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

const GROUP: &str = "certificates.k8s.io";
const KIND: &str = "CertificateSigningRequest";
/// Lifetime when the request asks for none (k3s's cluster-signing duration: one year).
const DEFAULT_VALIDITY_SECS: i64 = 365 * 86400;
/// The shortest lifetime upstream issues.
const MIN_VALIDITY_SECS: i64 = 600;

/// Why a CSR could not be signed; becomes the `Failed` condition's message.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The request is not acceptable for its signer.
    #[error("{0}")]
    Rejected(String),
    /// The CA could not be used.
    #[error("cannot sign with the cluster CA {path}: {why}")]
    Ca {
        /// The CA file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

fn invalid(name: &str, field: &str, value: &Value, detail: &str) -> ApiError {
    ApiError::invalid(
        GROUP,
        KIND,
        name,
        vec![FieldError::invalid(field, value, detail)],
    )
}

/// Decodes `spec.request` (base64 of a PEM CSR) into DER.
fn request_der(csr: &Value) -> Result<Vec<u8>, String> {
    let b64 = csr["spec"]["request"].as_str().unwrap_or("");
    let pem = B64
        .decode(b64)
        .map_err(|_| "spec.request is not base64".to_string())?;
    CertificateSigningRequestDer::from_pem_slice(&pem)
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())
}

/// On create: checks the request and records who asks (`spec.username`, `groups`, `uid`,
/// `extra`), overriding whatever the client sent, like upstream's strategy.
pub fn prepare_for_create(csr: &mut Value, who: &Identity) -> Result<(), ApiError> {
    let name = meta::name(csr).to_string();
    if let Err(why) = request_der(csr) {
        return Err(invalid(&name, "spec.request", &json!("<omitted>"), &why));
    }
    if csr["spec"]["signerName"].as_str().unwrap_or("").is_empty() {
        return Err(ApiError::invalid(
            GROUP,
            KIND,
            &name,
            vec![FieldError::required("spec.signerName")],
        ));
    }
    if let Some(secs) = csr["spec"]["expirationSeconds"].as_i64() {
        if secs < MIN_VALIDITY_SECS {
            return Err(invalid(
                &name,
                "spec.expirationSeconds",
                &json!(secs),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    let Some(spec) = csr.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    spec.insert("username".into(), json!(who.user));
    spec.insert("groups".into(), json!(who.groups));
    if who.uid.is_empty() {
        spec.remove("uid");
    } else {
        spec.insert("uid".into(), json!(who.uid));
    }
    if who.extra.is_empty() {
        spec.remove("extra");
    } else {
        spec.insert("extra".into(), json!(who.extra));
    }
    if !spec.contains_key("usages") {
        spec.insert(
            "usages".into(),
            json!(["digital signature", "key encipherment"]),
        );
    }
    Ok(())
}

fn condition_types(csr: &Value) -> Vec<String> {
    csr["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str().map(str::to_string))
        .collect()
}

/// The `approval` subresource: takes the conditions of `new` (the whole CSR a client
/// PUTs) and stores them, nothing else.
pub async fn update_approval(
    registry: &Registry,
    name: &str,
    new: &Value,
) -> Result<Value, ApiError> {
    let res = builtin(GROUP, "v1", "certificatesigningrequests");
    let mut conditions: Vec<Value> = new["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let types: Vec<&str> = conditions
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    if types.contains(&"Approved") && types.contains(&"Denied") {
        return Err(invalid(
            name,
            "status.conditions",
            &json!(types),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    let now = meta::now_rfc3339();
    for c in &mut conditions {
        if c["type"].as_str().unwrap_or("").is_empty() {
            return Err(ApiError::invalid(
                GROUP,
                KIND,
                name,
                vec![FieldError::required("status.conditions.type")],
            ));
        }
        if c["status"].is_null() {
            c["status"] = json!("True");
        }
        for t in ["lastUpdateTime", "lastTransitionTime"] {
            if c[t].is_null() {
                c[t] = json!(now);
            }
        }
    }
    let pinned = meta::meta_str(new, "resourceVersion").to_string();
    registry
        .update_with(res, "", name, |csr: &mut Value| {
            if !pinned.is_empty() && meta::meta_str(csr, "resourceVersion") != pinned {
                return Err(ApiError::conflict_msg(
                    GROUP,
                    "certificatesigningrequests",
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            let old = condition_types(csr);
            for t in ["Approved", "Denied"] {
                if old.iter().any(|o| o == t) && !conditions.iter().any(|c| c["type"] == t) {
                    return Err(invalid(
                        name,
                        "status.conditions",
                        &json!(t),
                        &format!("updates may not remove a condition of type {t:?}"),
                    ));
                }
            }
            csr["status"]["conditions"] = json!(conditions);
            Ok(())
        })
        .await
}

/// Which CA a signer issues from and for what.
struct Profile {
    ca: &'static str,
    server: bool,
}

fn profile(signer: &str) -> Option<Profile> {
    match signer {
        "kubernetes.io/kube-apiserver-client" | "kubernetes.io/kube-apiserver-client-kubelet" => {
            Some(Profile {
                ca: crate::server::pki::CLIENT_CA,
                server: false,
            })
        }
        "kubernetes.io/kubelet-serving" => Some(Profile {
            ca: crate::server::pki::SERVER_CA,
            server: true,
        }),
        _ => None,
    }
}

/// Signs one CSR object with the CAs in `tls_dir`; returns the certificate PEM.
pub fn sign(tls_dir: &Path, csr: &Value, now: i64) -> Result<Option<String>, CsrError> {
    let signer = csr["spec"]["signerName"].as_str().unwrap_or("");
    let Some(p) = profile(signer) else {
        return Ok(None);
    };
    let der = request_der(csr).map_err(CsrError::Rejected)?;
    let mut req =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
            .map_err(|e| CsrError::Rejected(format!("invalid certificate request: {e}")))?;
    let cn = req
        .params
        .distinguished_name
        .get(&rcgen::DnType::CommonName)
        .map(dn_text)
        .unwrap_or_default();
    let node_signer = matches!(
        signer,
        "kubernetes.io/kubelet-serving" | "kubernetes.io/kube-apiserver-client-kubelet"
    );
    if node_signer && !cn.starts_with("system:node:") {
        return Err(CsrError::Rejected(
            "subject common name must begin with \"system:node:\"".into(),
        ));
    }
    let secs = csr["spec"]["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_VALIDITY_SECS)
        .clamp(MIN_VALIDITY_SECS, DEFAULT_VALIDITY_SECS);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let params = &mut req.params;
    // Backdated five minutes, like upstream's signer, for skewed clocks.
    params.not_before = epoch + Duration::from_secs((now - 300).max(0) as u64);
    params.not_after = epoch + Duration::from_secs((now + secs).max(0) as u64);
    params.serial_number = Some(random_serial()?);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if p.server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    if !p.server {
        // Client certificates carry no names besides the subject.
        params.subject_alt_names.clear();
    }
    params.use_authority_key_identifier_extension = true;
    let (cert_path, key_path) = ca_paths(tls_dir, p.ca);
    let ca_err = |path: &PathBuf, why: String| CsrError::Ca {
        path: path.display().to_string(),
        why,
    };
    let ca_pem = std::fs::read(&cert_path).map_err(|e| ca_err(&cert_path, e.to_string()))?;
    let key_pem =
        std::fs::read_to_string(&key_path).map_err(|e| ca_err(&key_path, e.to_string()))?;
    let ca_der =
        CertificateDer::from_pem_slice(&ca_pem).map_err(|e| ca_err(&cert_path, e.to_string()))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| ca_err(&key_path, e.to_string()))?;
    let issuer =
        Issuer::from_ca_cert_der(&ca_der, &key).map_err(|e| ca_err(&cert_path, e.to_string()))?;
    let cert = req
        .signed_by(&issuer)
        .map_err(|e| ca_err(&cert_path, e.to_string()))?;
    Ok(Some(cert.pem()))
}

fn dn_text(v: &rcgen::DnValue) -> String {
    match v {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

fn ca_paths(tls_dir: &Path, ca: &str) -> (PathBuf, PathBuf) {
    (
        tls_dir.join(format!("{ca}.crt")),
        tls_dir.join(format!("{ca}.key")),
    )
}

fn random_serial() -> Result<SerialNumber, CsrError> {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CsrError::Rejected("no randomness available for a serial number".into()))?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&serial))
}

/// Whether the CSR is approved, not denied or failed, and has no certificate yet.
fn wants_certificate(csr: &Value) -> bool {
    let types = condition_types(csr);
    types.iter().any(|t| t == "Approved")
        && !types.iter().any(|t| t == "Denied" || t == "Failed")
        && csr["status"]["certificate"]
            .as_str()
            .unwrap_or("")
            .is_empty()
}

/// Runs the built-in signers until `shutdown` flips.
pub async fn run_signer(
    informers: Informers,
    tls_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let csrs = informers.get(builtin(GROUP, "v1", "certificatesigningrequests"));
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    let mut events = csrs.subscribe();
    let (q, cache) = (queue.clone(), csrs.clone());
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev.object() {
                Some(o) => q.add(ObjectKey::of(o)),
                None => cache
                    .list_all()
                    .iter()
                    .for_each(|o| q.add(ObjectKey::of(o))),
            }
        }
    });
    csrs.wait_synced().await;
    for o in csrs.list_all() {
        queue.add(ObjectKey::of(&o));
    }
    let registry = informers.registry().clone();
    let stop = queue.clone();
    let controller = run_controller("csrsigning", queue, 1, move |key: ObjectKey| {
        let (registry, tls_dir, cache) = (registry.clone(), tls_dir.clone(), csrs.clone());
        async move {
            let Some(csr) = cache.get("", &key.name) else {
                return Ok::<(), ApiError>(());
            };
            if !wants_certificate(&csr) {
                return Ok(());
            }
            let outcome = sign(
                &tls_dir,
                &csr,
                crate::server::serviceaccount::jwt::unix_now(),
            );
            let res = builtin(GROUP, "v1", "certificatesigningrequests");
            match outcome {
                Ok(None) => Ok(()),
                Ok(Some(pem)) => {
                    tracing::info!(csr = %key.name, "signed certificate signing request");
                    let cert = B64.encode(pem);
                    registry
                        .update_with(res, "", &key.name, |c: &mut Value| {
                            if wants_certificate(c) {
                                c["status"]["certificate"] = json!(cert);
                            }
                            Ok(())
                        })
                        .await
                        .map(|_| ())
                }
                Err(CsrError::Rejected(why)) => {
                    let now = meta::now_rfc3339();
                    let failed = json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": why, "lastUpdateTime": now, "lastTransitionTime": now});
                    registry
                        .update_with(res, "", &key.name, |c: &mut Value| {
                            if wants_certificate(c) {
                                let mut conds = c["status"]["conditions"]
                                    .as_array()
                                    .cloned()
                                    .unwrap_or_default();
                                conds.push(failed.clone());
                                c["status"]["conditions"] = json!(conds);
                            }
                            Ok(())
                        })
                        .await
                        .map(|_| ())
                }
                Err(e) => Err(ApiError::internal(e.to_string())),
            }
        }
    });
    tokio::select! {
        _ = controller => {}
        _ = shutdown.changed() => stop.shut_down(),
    }
}
