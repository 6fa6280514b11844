//! Pod volumes (`ValidateVolumes` / `validateVolumeSource`): unique DNS-1123 names, exactly
//! one source, and the basic fields of the sources people use on small clusters. Cloud and
//! legacy in-tree sources are recognised (so they count as a source) but not inspected.

use std::collections::HashSet;

use serde_json::Value;

use super::super::status::FieldError;
use super::field::{arr, get, int, str_of, Path};
use super::names::is_dns1123_label;

/// Every `VolumeSource` member, in upstream's order (which decides which one a "more than 1
/// volume type" error names).
const SOURCES: [&str; 30] = [
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "csi",
    "ephemeral",
    "image",
];

const FILE_MODE_ERROR: &str = "must be a number between 0 and 0777 (octal), both inclusive";

fn file_mode(v: &Value, key: &str, path: &Path) -> Option<FieldError> {
    let m = int(v, key)?;
    (!(0..=0o777).contains(&m))
        .then(|| FieldError::invalid(path.child(key), &Value::from(m), FILE_MODE_ERROR))
}

fn required_str(v: &Value, key: &str, path: &Path) -> Option<FieldError> {
    str_of(v, key)
        .is_empty()
        .then(|| FieldError::required(path.child(key)))
}

fn key_to_paths(v: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, item) in arr(v, "items").iter().enumerate() {
        let p = path.child("items").index(i);
        errs.extend(required_str(item, "key", &p));
        let target = str_of(item, "path");
        if target.is_empty() {
            errs.push(FieldError::required(p.child("path")));
        } else {
            errs.extend(super::container::local_descending_path(
                target,
                &p.child("path"),
            ));
        }
        errs.extend(file_mode(item, "mode", &p));
    }
    errs
}

fn source(kind: &str, v: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match kind {
        "hostPath" => {
            errs.extend(required_str(v, "path", path));
        }
        "secret" => {
            errs.extend(required_str(v, "secretName", path));
            errs.extend(file_mode(v, "defaultMode", path));
            errs.extend(key_to_paths(v, path));
        }
        "configMap" => {
            errs.extend(required_str(v, "name", path));
            errs.extend(file_mode(v, "defaultMode", path));
            errs.extend(key_to_paths(v, path));
        }
        "persistentVolumeClaim" => errs.extend(required_str(v, "claimName", path)),
        "nfs" => {
            errs.extend(required_str(v, "server", path));
            let p = str_of(v, "path");
            if p.is_empty() {
                errs.push(FieldError::required(path.child("path")));
            }
            if !p.starts_with('/') {
                errs.push(FieldError::invalid(
                    path.child("path"),
                    &Value::from(p),
                    "must be an absolute path",
                ));
            }
        }
        "downwardAPI" | "projected" => errs.extend(file_mode(v, "defaultMode", path)),
        "csi" => errs.extend(required_str(v, "driver", path)),
        "emptyDir" => {
            if let Some(limit) = get(v, "sizeLimit").and_then(super::quantity::text) {
                if super::quantity::parse(&limit).is_some_and(|n| n < 0.0) {
                    errs.push(FieldError::forbidden(
                        path.child("sizeLimit"),
                        "SizeLimit field must be a valid resource quantity",
                    ));
                }
            }
        }
        _ => {}
    }
    errs
}

/// Validates `volumes` and returns the names of those that validated cleanly (container
/// mounts may refer only to these, as upstream's volume map holds only valid entries).
pub(super) fn volumes(list: &[Value], path: &Path) -> (HashSet<String>, Vec<FieldError>) {
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, vol) in list.iter().enumerate() {
        let ip = path.index(i);
        let mut el = Vec::new();
        let mut count = 0;
        for kind in SOURCES {
            let Some(src) = get(vol, kind).filter(|v| !v.is_null()) else {
                continue;
            };
            if count > 0 {
                el.push(FieldError::forbidden(
                    ip.child(kind),
                    "may not specify more than 1 volume type",
                ));
                continue;
            }
            count += 1;
            el.extend(source(kind, src, &ip.child(kind)));
        }
        if count == 0 {
            el.push(FieldError::required_msg(&ip, "must specify a volume type"));
        }
        let name = str_of(vol, "name");
        let name_path = ip.child("name");
        if name.is_empty() {
            el.push(FieldError::required(&name_path));
        } else {
            for m in is_dns1123_label(name) {
                el.push(FieldError::invalid(&name_path, &Value::from(name), &m));
            }
        }
        if names.contains(name) {
            el.push(FieldError::duplicate(&name_path, &Value::from(name)));
        }
        if el.is_empty() {
            names.insert(name.to_string());
        } else {
            errs.extend(el);
        }
    }
    (names, errs)
}
