//! The content of configMap, secret, downwardAPI and projected volumes as an atomic
//! writer payload, with upstream's rules: all keys or the listed items, each item's
//! mode over the volume's `defaultMode` (0644), optional sources and keys skipped,
//! and upstream's error wording for what is missing.

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret,
};

use super::atomic::{FileProjection, Payload};
use super::downward::{container_resource, pod_field, NodeCapacity};
use super::{NodeFacts, Objects, SetUpError};

/// The mode files get when neither the volume nor the item sets one (upstream's 0644).
pub const DEFAULT_MODE: u32 = 0o644;

fn mode(m: Option<i32>, default: u32) -> u32 {
    m.map(|m| m as u32 & 0o7777).unwrap_or(default)
}

/// Upstream's `MakePayload` for both kinds: `found` is every key with its bytes, or
/// `None` when the object does not exist (an error, `not_found`, unless optional).
fn key_payload(
    found: Option<Vec<(String, Vec<u8>)>>,
    not_found: SetUpError,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
    missing_key: fn(String) -> SetUpError,
) -> Result<Payload, SetUpError> {
    let mut payload = Payload::new();
    let Some(entries) = found else {
        return if optional {
            Ok(payload)
        } else {
            Err(not_found)
        };
    };
    let file = |data: Vec<u8>, mode| FileProjection { data, mode };
    match items {
        None | Some([]) => {
            for (k, data) in entries {
                payload.insert(k, file(data, default_mode));
            }
        }
        Some(items) => {
            for item in items {
                let Some((_, data)) = entries.iter().find(|(k, _)| *k == item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing_key(item.key.clone()));
                };
                let mode = mode(item.mode, default_mode);
                payload.insert(item.path.clone(), file(data.clone(), mode));
            }
        }
    }
    Ok(payload)
}

/// A configMap volume's or projection's files (`data` and `binaryData`); `cm` is
/// `None` when the ConfigMap was not found.
pub fn config_map(
    name: &str,
    cm: Option<&ConfigMap>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, SetUpError> {
    let found = cm.map(|cm| {
        let text = cm.data.iter().flatten();
        let binary = cm.binary_data.iter().flatten();
        text.map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .chain(binary.map(|(k, v)| (k.clone(), v.0.clone())))
            .collect()
    });
    let not_found = SetUpError::ConfigMapNotFound(name.to_string());
    key_payload(
        found,
        not_found,
        items,
        default_mode,
        optional,
        SetUpError::ConfigMapKey,
    )
}

/// A secret volume's or projection's files.
pub fn secret(
    name: &str,
    secret: Option<&Secret>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, SetUpError> {
    let found = secret.map(|s| {
        let data = s.data.iter().flatten();
        data.map(|(k, v)| (k.clone(), v.0.clone())).collect()
    });
    let not_found = SetUpError::SecretNotFound(name.to_string());
    key_payload(
        found,
        not_found,
        items,
        default_mode,
        optional,
        SetUpError::SecretKey,
    )
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// A downwardAPI volume's or projection's files.
pub fn downward_api(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    node: &NodeFacts,
    capacity: &NodeCapacity,
    default_mode: u32,
) -> Result<Payload, SetUpError> {
    let mut payload = Payload::new();
    for item in items {
        let data = if let Some(f) = &item.field_ref {
            pod_field(pod, &f.field_path, node).map_err(SetUpError::DownwardApi)?
        } else if let Some(r) = &item.resource_field_ref {
            let name = r.container_name.as_deref().unwrap_or_default();
            let container = find_container(pod, name).ok_or_else(|| {
                SetUpError::DownwardApi(format!(
                    "resourceFieldRef of {:?} names container {name:?}, which is not in the pod",
                    item.path
                ))
            })?;
            container_resource(r, container, capacity).map_err(SetUpError::DownwardApi)?
        } else {
            continue;
        };
        payload.insert(
            item.path.clone(),
            FileProjection {
                data: data.into_bytes(),
                mode: mode(item.mode, default_mode),
            },
        );
    }
    Ok(payload)
}

/// A projected volume's files: every source's, later sources winning on the same
/// path. Service account tokens come from `objects` (the worker requests them); trust
/// bundles and pod certificates are not issued yet and are left out.
pub fn projected(
    src: &ProjectedVolumeSource,
    pod: &Pod,
    objects: &Objects,
    node: &NodeFacts,
    capacity: &NodeCapacity,
) -> Result<Payload, SetUpError> {
    let default_mode = mode(src.default_mode, DEFAULT_MODE);
    let mut payload = Payload::new();
    for source in src.sources.iter().flatten() {
        if let Some(c) = &source.config_map {
            payload.extend(config_map(
                &c.name,
                objects.config_maps.get(&c.name),
                c.items.as_deref(),
                default_mode,
                c.optional == Some(true),
            )?);
        }
        if let Some(s) = &source.secret {
            payload.extend(secret(
                &s.name,
                objects.secrets.get(&s.name),
                s.items.as_deref(),
                default_mode,
                s.optional == Some(true),
            )?);
        }
        if let Some(d) = &source.downward_api {
            payload.extend(downward_api(
                d.items.as_deref().unwrap_or_default(),
                pod,
                node,
                capacity,
                default_mode,
            )?);
        }
        if let Some(t) = &source.service_account_token {
            let key = super::satoken::TokenKey::of(t);
            let token = objects.service_account_tokens.get(&key).ok_or_else(|| {
                SetUpError::Invalid(format!(
                    "no service account token for {:?} was issued yet (audience {:?})",
                    t.path, key.audience
                ))
            })?;
            payload.insert(
                t.path.clone(),
                FileProjection {
                    data: token.token.clone().into_bytes(),
                    mode: default_mode,
                },
            );
        }
        if source.cluster_trust_bundle.is_some() || source.pod_certificate.is_some() {
            tracing::debug!(
                "clusterTrustBundle/podCertificate projection skipped: not supported yet"
            );
        }
    }
    Ok(payload)
}
