//! The TokenRequest subresource (`POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`,
//! what `kubectl create token` and the agent's projected volumes call): validates the
//! request like upstream (expiry at least 10 minutes, bound object of kind Pod, Secret or
//! Node that exists with the given uid and, for pods, runs as this service account) and
//! answers with a signed token.

use super::jwt::{self, Claims, KubeClaims, Ref, TokenSigner, API_AUDIENCES, ISSUER};
use crate::api::status::ApiError;
use crate::api::{meta, FieldError};
use crate::server::informer::builtin;
use crate::server::registry::Registry;
use serde_json::{json, Value};

/// Upstream's default `expirationSeconds` of a TokenRequest.
pub const DEFAULT_EXPIRATION: i64 = 3600;
/// The shortest token upstream issues.
const MIN_EXPIRATION: i64 = 600;
/// The longest (2^32 s, upstream's validation limit).
const MAX_EXPIRATION: i64 = 1 << 32;

fn invalid(name: &str, field: &str, value: &Value, detail: &str) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        vec![FieldError::invalid(field, value, detail)],
    )
}

/// Issues a token for service account `ns/name` as asked by the TokenRequest `req`;
/// returns the TokenRequest with `status.token` and `status.expirationTimestamp`.
pub async fn create(
    registry: &Registry,
    signer: &TokenSigner,
    ns: &str,
    name: &str,
    mut req: Value,
) -> Result<Value, ApiError> {
    let sa = registry
        .get(builtin("", "v1", "serviceaccounts"), ns, name)
        .await?
        .value()?;
    let spec = &req["spec"];
    let expiration = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION,
        v => v
            .as_i64()
            .ok_or_else(|| invalid(name, "spec.expirationSeconds", v, "must be an integer"))?,
    };
    if expiration < MIN_EXPIRATION {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    if audiences.is_empty() {
        audiences = API_AUDIENCES.iter().map(|a| a.to_string()).collect();
    }
    let mut kube = KubeClaims {
        namespace: ns.to_string(),
        serviceaccount: Ref {
            name: name.to_string(),
            uid: meta::uid(&sa).to_string(),
        },
        ..Default::default()
    };
    let bound = &spec["boundObjectRef"];
    if bound.is_object() {
        bind(registry, ns, name, bound, &mut kube).await?;
    }
    let now = jwt::unix_now();
    let jti = meta::new_uid();
    let claims = Claims {
        aud: audiences.clone(),
        exp: now + expiration,
        iat: now,
        nbf: now,
        iss: ISSUER.to_string(),
        jti,
        sub: super::user_name(ns, name),
        kubernetes: kube,
    };
    let token = signer
        .sign(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = jiff::Timestamp::from_second(claims.exp)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let m = meta::metadata_mut(&mut req);
    m.insert("name".into(), json!(name));
    m.insert("namespace".into(), json!(ns));
    m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
    req["kind"] = json!("TokenRequest");
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["spec"]["audiences"] = json!(audiences);
    req["spec"]["expirationSeconds"] = json!(expiration);
    if !req["spec"]["boundObjectRef"].is_object() {
        req["spec"]["boundObjectRef"] = Value::Null;
    }
    req["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(req)
}

/// Checks the bound object and records it (and a bound pod's node) in the claims.
async fn bind(
    registry: &Registry,
    ns: &str,
    sa_name: &str,
    bound: &Value,
    kube: &mut KubeClaims,
) -> Result<(), ApiError> {
    let kind = bound["kind"].as_str().unwrap_or("");
    let api_version = bound["apiVersion"].as_str().unwrap_or("v1");
    let obj_name = bound["name"].as_str().unwrap_or("");
    let plural = match kind {
        "Pod" => "pods",
        "Secret" => "secrets",
        "Node" => "nodes",
        _ => {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                sa_name,
                vec![FieldError::not_supported(
                    "spec.boundObjectRef.kind",
                    &json!(kind),
                    &["Pod", "Secret", "Node"],
                )],
            ))
        }
    };
    if api_version != "v1" {
        return Err(invalid(
            sa_name,
            "spec.boundObjectRef.apiVersion",
            &json!(api_version),
            "must be v1",
        ));
    }
    let obj_ns = if plural == "nodes" { "" } else { ns };
    let obj = registry
        .get(builtin("", "v1", plural), obj_ns, obj_name)
        .await?
        .value()?;
    let uid = meta::uid(&obj).to_string();
    if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty()) {
        if want != uid {
            return Err(ApiError::conflict_msg(
                "",
                plural,
                obj_name,
                &format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"),
            ));
        }
    }
    let this = Ref {
        name: obj_name.to_string(),
        uid,
    };
    match plural {
        "pods" => {
            let pod_sa = obj["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default");
            if pod_sa != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
            if let Some(node) = obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                let uid = match registry.get(builtin("", "v1", "nodes"), "", node).await {
                    Ok(n) => meta::uid(&n.value()?).to_string(),
                    Err(_) => String::new(),
                };
                kube.node = Some(Ref {
                    name: node.to_string(),
                    uid,
                });
            }
            kube.pod = Some(this);
        }
        "secrets" => kube.secret = Some(this),
        _ => kube.node = Some(this),
    }
    Ok(())
}
