//! PersistentVolumes and PersistentVolumeClaims: access modes, capacity and requests,
//! reclaim policy, one volume source, and what may change after creation.

use serde_json::{Map, Value};

use super::super::status::FieldError;
use super::field::{arr, dedup, diff, get, has, immutable, obj, same, str_of, Path};
use super::meta::label_selector;
use super::names::is_dns1123_subdomain;
use super::quantity;

const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn access_modes(spec: &Value, path: &Path, required_detail: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let modes = arr(spec, "accessModes");
    let p = path.child("accessModes");
    if modes.is_empty() {
        errs.push(FieldError::required_msg(&p, required_detail));
    }
    let (mut rwop, mut other) = (false, false);
    for m in modes {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            errs.push(FieldError::not_supported(
                &p,
                &Value::from(m),
                &ACCESS_MODES,
            ));
        } else if m == "ReadWriteOncePod" {
            rwop = true;
        } else {
            other = true;
        }
    }
    if rwop && other {
        errs.push(FieldError::forbidden(
            &p,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    errs
}

fn positive_quantity(v: &Value, path: &Path) -> Vec<FieldError> {
    let Some(text) = quantity::text(v) else {
        return vec![FieldError::invalid(
            path,
            v,
            quantity::QUANTITY_FORMAT_ERROR,
        )];
    };
    match quantity::parse(&text) {
        None => vec![FieldError::invalid(
            path,
            &Value::from(text.as_str()),
            quantity::QUANTITY_FORMAT_ERROR,
        )],
        Some(n) if n <= 0.0 => vec![FieldError::invalid(
            path,
            &Value::from(text.as_str()),
            "must be greater than zero",
        )],
        Some(_) => Vec::new(),
    }
}

fn class_and_mode(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let class = str_of(spec, "storageClassName");
    if !class.is_empty() {
        for m in is_dns1123_subdomain(class) {
            errs.push(FieldError::invalid(
                path.child("storageClassName"),
                &Value::from(class),
                &m,
            ));
        }
    }
    if let Some(mode) = get(spec, "volumeMode").and_then(Value::as_str) {
        if mode != "Block" && mode != "Filesystem" {
            errs.push(FieldError::not_supported(
                path.child("volumeMode"),
                &Value::from(mode),
                &["Block", "Filesystem"],
            ));
        }
    }
    errs
}

fn claim_spec(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = access_modes(spec, path, "at least 1 access mode is required");
    errs.extend(label_selector(
        get(spec, "selector"),
        &path.child("selector"),
    ));
    let storage_path = path.child("resources").key("storage");
    match get(spec, "resources")
        .and_then(|r| obj(r, "requests"))
        .and_then(|r| r.get("storage"))
    {
        None => errs.push(FieldError::required(&storage_path)),
        Some(q) => errs.extend(positive_quantity(q, &storage_path)),
    }
    errs.extend(class_and_mode(spec, path));
    errs
}

fn storage_request(spec: &Value) -> Option<f64> {
    let q = get(spec, "resources")
        .and_then(|r| obj(r, "requests"))
        .and_then(|r| r.get("storage"))?;
    quantity::parse(&quantity::text(q)?)
}

/// Validates a PersistentVolumeClaim. After creation the spec is fixed, except that the
/// storage request of a bound claim may grow and an unset volumeName may be filled in.
pub fn persistent_volume_claim(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let spec = get(new, "spec").unwrap_or(&Value::Null);
    let path = Path::new("spec");
    let mut errs = claim_spec(spec, &path);
    if let Some(old) = old {
        let old_spec = get(old, "spec").unwrap_or(&Value::Null);
        let mut old_clone = old_spec.as_object().cloned().unwrap_or_default();
        let mut new_clone = spec.as_object().cloned().unwrap_or_default();
        if str_of(old_spec, "volumeName").is_empty() {
            match spec.get("volumeName") {
                Some(v) => old_clone.insert("volumeName".into(), v.clone()),
                None => old_clone.remove("volumeName"),
            };
        }
        let bound = get(old, "status").is_some_and(|s| str_of(s, "phase") == "Bound");
        if bound {
            let old_storage = old_spec
                .get("resources")
                .and_then(|r| obj(r, "requests"))
                .and_then(|r| r.get("storage"))
                .cloned();
            if let Some(Value::Object(reqs)) = new_clone
                .get_mut("resources")
                .and_then(|r| r.get_mut("requests"))
            {
                match old_storage {
                    Some(s) => reqs.insert("storage".into(), s),
                    None => reqs.remove("storage"),
                };
            }
            for m in [&mut new_clone, &mut old_clone] {
                m.remove("volumeAttributesClassName");
            }
        }
        let (new_clone, old_clone) = (Value::Object(new_clone), Value::Object(old_clone));
        if !same(Some(&new_clone), Some(&old_clone)) {
            errs.push(FieldError::forbidden(
                &path,
                &format!(
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{}",
                    diff(&old_clone, &new_clone)
                ),
            ));
        }
        if let (Some(new_size), Some(old_size)) = (storage_request(spec), storage_request(old_spec))
        {
            let status_size = get(old, "status")
                .and_then(|s| obj(s, "capacity"))
                .and_then(|c| c.get("storage"))
                .and_then(quantity::text)
                .and_then(|t| quantity::parse(&t))
                .unwrap_or(0.0);
            if new_size < old_size && new_size <= status_size {
                errs.push(FieldError::forbidden(
                    path.child("resources").child("requests").child("storage"),
                    "field can not be less than status.capacity",
                ));
            }
        }
        // Upstream's path lacks the `spec.` prefix here.
        errs.extend(immutable(
            get(spec, "volumeMode"),
            get(old_spec, "volumeMode"),
            &Path::new("volumeMode"),
        ));
    }
    dedup(errs)
}

/// The `PersistentVolumeSource` members, in upstream's order.
const PV_SOURCES: [&str; 22] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "flocker",
    "nfs",
    "rbd",
    "quobyte",
    "cephfs",
    "iscsi",
    "cinder",
    "fc",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

fn source_of(spec: &Value) -> Value {
    let mut m = Map::new();
    for k in PV_SOURCES {
        if let Some(v) = get(spec, k) {
            m.insert(k.to_string(), v.clone());
        }
    }
    Value::Object(m)
}

/// Validates a PersistentVolume. After creation its volume source and volumeMode are fixed.
pub fn persistent_volume(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let spec = get(new, "spec").unwrap_or(&Value::Null);
    let path = Path::new("spec");
    let mut errs = access_modes(spec, &path, "");
    let cap_path = path.child("capacity");
    let capacity = obj(spec, "capacity");
    if capacity.is_none_or(Map::is_empty) {
        errs.push(FieldError::required(&cap_path));
    }
    if capacity.is_none_or(|c| !c.contains_key("storage") || c.len() > 1) {
        errs.push(FieldError::not_supported(
            &cap_path,
            get(spec, "capacity").unwrap_or(&Value::Null),
            &["storage"],
        ));
    }
    for (k, q) in capacity.into_iter().flatten() {
        errs.extend(positive_quantity(q, &cap_path.key(k)));
    }
    let policy = str_of(spec, "persistentVolumeReclaimPolicy");
    if !policy.is_empty() && !matches!(policy, "Delete" | "Recycle" | "Retain") {
        errs.push(FieldError::not_supported(
            path.child("persistentVolumeReclaimPolicy"),
            &Value::from(policy),
            &["Delete", "Recycle", "Retain"],
        ));
    }
    let mut count = 0;
    for kind in PV_SOURCES {
        let Some(src) = get(spec, kind).filter(|v| !v.is_null()) else {
            continue;
        };
        if count > 0 {
            errs.push(FieldError::forbidden(
                path.child(kind),
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        count += 1;
        match kind {
            "hostPath" | "local" => {
                if str_of(src, "path").is_empty() {
                    errs.push(FieldError::required(path.child(kind).child("path")));
                }
                if kind == "local" && !has(spec, "nodeAffinity") {
                    errs.push(FieldError::required_msg(
                        path.child("nodeAffinity"),
                        "Local volume requires node affinity",
                    ));
                }
            }
            "nfs" => {
                for f in ["server", "path"] {
                    if str_of(src, f).is_empty() {
                        errs.push(FieldError::required(path.child(kind).child(f)));
                    }
                }
            }
            "csi" => {
                for f in ["driver", "volumeHandle"] {
                    if str_of(src, f).is_empty() {
                        errs.push(FieldError::required(path.child(kind).child(f)));
                    }
                }
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required_msg(
            &path,
            "must specify a volume type",
        ));
    }
    if policy == "Recycle"
        && get(spec, "hostPath").is_some_and(|h| str_of(h, "path").trim_end_matches('/').is_empty())
    {
        errs.push(FieldError::forbidden(
            path.child("persistentVolumeReclaimPolicy"),
            "may not be 'recycle' for a hostPath mount of '/'",
        ));
    }
    errs.extend(class_and_mode(spec, &path));
    if let Some(old) = old {
        let old_spec = get(old, "spec").unwrap_or(&Value::Null);
        let (ns, os) = (source_of(spec), source_of(old_spec));
        if !same(Some(&ns), Some(&os)) {
            errs.push(FieldError::forbidden(
                "spec.persistentvolumesource",
                &format!(
                    "spec.persistentvolumesource is immutable after creation\n{}",
                    diff(&os, &ns)
                ),
            ));
        }
        errs.extend(immutable(
            get(spec, "volumeMode"),
            get(old_spec, "volumeMode"),
            &Path::new("volumeMode"),
        ));
    }
    dedup(errs)
}
