//! Printers of the storage kinds: persistent volumes, persistent volume claims and
//! storage classes ("(default)" after the default class's name).

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration::age;
use super::text::{arr, at, deleting, name, scalar, str_at};
use super::{col, wide, Column, Printer, AGE, NAME};

/// The legacy annotation that names a volume's or claim's class before the spec field.
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// Access modes in upstream's fixed order, de-duplicated: `RWO,ROX,RWX,RWOP`.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The `storage` quantity of a resource list, `0` (a zero quantity) when absent.
fn storage_quantity(v: &Value, pointer: &str) -> String {
    at(v, pointer)
        .and_then(|list| list.get("storage"))
        .filter(|q| !q.is_null())
        .map(scalar)
        .unwrap_or_else(|| "0".to_string())
}

/// The class from the beta annotation if present (even empty), else from the spec.
fn storage_class(obj: &Value) -> String {
    match obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(BETA_STORAGE_CLASS))
    {
        Some(class) => scalar(class),
        None => str_at(obj, "/spec/storageClassName").to_string(),
    }
}

/// Phase, `Terminating` while deleting; `Pending` when unset (upstream's default).
fn phase(obj: &Value) -> String {
    if deleting(obj) {
        return "Terminating".to_string();
    }
    match str_at(obj, "/status/phase") {
        "" => "Pending".to_string(),
        p => p.to_string(),
    }
}

/// `spec.volumeAttributesClassName`, `<unset>` when not set.
fn attributes_class(obj: &Value) -> String {
    match at(obj, "/spec/volumeAttributesClassName").and_then(Value::as_str) {
        Some(c) => c.to_string(),
        None => "<unset>".to_string(),
    }
}

/// `spec.volumeMode`; upstream defaults it to Filesystem.
fn volume_mode(obj: &Value) -> String {
    match str_at(obj, "/spec/volumeMode") {
        "" => "Filesystem".to_string(),
        m => m.to_string(),
    }
}

const PV_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Capacity",
        "string",
        "capacity is the description of the persistent volume's resources and capacity.",
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains all ways the volume can be mounted.",
    ),
    col(
        "Reclaim Policy",
        "string",
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
    ),
    col(
        "Status",
        "string",
        "phase indicates if a volume is available, bound to a claim, or released by a claim.",
    ),
    col(
        "Claim",
        "string",
        "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
    ),
    col("StorageClass", "string", "StorageClass of the pv"),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pv",
    ),
    col(
        "Reason",
        "string",
        "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
    ),
];

pub(crate) static PERSISTENTVOLUMES: Printer = Printer {
    columns: PV_COLUMNS,
    cells: pv_cells,
};

fn pv_cells(pv: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match at(pv, "/spec/claimRef") {
        Some(r) => format!("{}/{}", str_at(r, "/namespace"), str_at(r, "/name")),
        None => String::new(),
    };
    // Manually created volumes default to Retain.
    let reclaim = match str_at(pv, "/spec/persistentVolumeReclaimPolicy") {
        "" => "Retain",
        p => p,
    };
    vec![
        json!(name(pv)),
        json!(storage_quantity(pv, "/spec/capacity")),
        json!(access_modes(arr(pv, "/spec/accessModes"))),
        json!(reclaim),
        json!(phase(pv)),
        json!(claim),
        json!(storage_class(pv)),
        json!(attributes_class(pv)),
        json!(str_at(pv, "/status/reason")),
        json!(age(pv, now)),
        json!(volume_mode(pv)),
    ]
}

const PVC_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        "phase represents the current phase of PersistentVolumeClaim.",
    ),
    col(
        "Volume",
        "string",
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    col(
        "Capacity",
        "string",
        "capacity represents the actual resources of the underlying volume.",
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains the actual access modes the volume backing the PVC has.",
    ),
    col("StorageClass", "string", "StorageClass of the pvc"),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines what type of volume is required by the claim.",
    ),
];

pub(crate) static PERSISTENTVOLUMECLAIMS: Printer = Printer {
    columns: PVC_COLUMNS,
    cells: pvc_cells,
};

fn pvc_cells(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let volume = str_at(pvc, "/spec/volumeName");
    // Capacity and modes are the bound volume's, shown only once bound.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            storage_quantity(pvc, "/status/capacity"),
            access_modes(arr(pvc, "/status/accessModes")),
        )
    };
    vec![
        json!(name(pvc)),
        json!(phase(pvc)),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(pvc)),
        json!(attributes_class(pvc)),
        json!(age(pvc, now)),
        json!(volume_mode(pvc)),
    ]
}

const STORAGECLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Provisioner",
        "string",
        "provisioner indicates the type of the provisioner.",
    ),
    col(
        "ReclaimPolicy",
        "string",
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.",
    ),
    col(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used.",
    ),
    col(
        "AllowVolumeExpansion",
        "string",
        "allowVolumeExpansion shows whether the storage class allow volume expand.",
    ),
    AGE,
];

pub(crate) static STORAGECLASSES: Printer = Printer {
    columns: STORAGECLASS_COLUMNS,
    cells: storageclass_cells,
};

const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

fn storageclass_cells(sc: &Value, now: Timestamp) -> Vec<Value> {
    let annotations = sc.pointer("/metadata/annotations");
    let is_default = DEFAULT_CLASS_ANNOTATIONS.iter().any(|key| {
        annotations
            .and_then(|a| a.get(*key))
            .and_then(Value::as_str)
            == Some("true")
    });
    let mut shown = name(sc).to_string();
    if is_default {
        shown.push_str(" (default)");
    }
    let or_default = |pointer: &str, default: &str| match str_at(sc, pointer) {
        "" => default.to_string(),
        v => v.to_string(),
    };
    vec![
        json!(shown),
        json!(str_at(sc, "/provisioner")),
        json!(or_default("/reclaimPolicy", "Delete")),
        json!(or_default("/volumeBindingMode", "Immediate")),
        json!(at(sc, "/allowVolumeExpansion")
            .and_then(Value::as_bool)
            .unwrap_or(false)),
        json!(age(sc, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn persistent_volume() {
        let pv = json!({
            "metadata": {"name": "pv-data", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}
        });
        assert_eq!(
            pv_cells(&pv, now()),
            vec![
                json!("pv-data"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Delete"),
                json!("Bound"),
                json!("default/data"),
                json!("local-path"),
                json!("<unset>"),
                json!(""),
                json!("60m"),
                json!("Filesystem")
            ]
        );
        let mut gone = json!({"metadata": {"name": "old", "deletionTimestamp": "2024-06-01T11:59:00Z",
            "annotations": {"volume.beta.kubernetes.io/storage-class": "legacy"}},
            "spec": {"storageClassName": "new", "volumeMode": "Block"}});
        let c = pv_cells(&gone, now());
        assert_eq!(
            c[1..8],
            [
                json!("0"),
                json!(""),
                json!("Retain"),
                json!("Terminating"),
                json!(""),
                json!("legacy"),
                json!("<unset>")
            ]
        );
        assert_eq!(c[10], json!("Block"));
        gone["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("deletionTimestamp");
        assert_eq!(pv_cells(&gone, now())[4], json!("Pending"));
    }

    #[test]
    fn persistent_volume_claim() {
        let pending = json!({
            "metadata": {"name": "data", "creationTimestamp": "2024-06-01T11:59:00Z"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "local-path"},
            "status": {"phase": "Pending"}
        });
        assert_eq!(
            pvc_cells(&pending, now()),
            vec![
                json!("data"),
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("local-path"),
                json!("<unset>"),
                json!("60s"),
                json!("Filesystem")
            ]
        );
        let bound = json!({
            "metadata": {"name": "data", "creationTimestamp": "2024-06-01T11:59:00Z"},
            "spec": {"volumeName": "pvc-123", "storageClassName": "local-path", "volumeAttributesClassName": "gold"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOncePod"]}
        });
        assert_eq!(
            pvc_cells(&bound, now())[1..7],
            [
                json!("Bound"),
                json!("pvc-123"),
                json!("1Gi"),
                json!("RWOP"),
                json!("local-path"),
                json!("gold")
            ]
        );
    }

    #[test]
    fn storage_classes() {
        let sc = json!({
            "metadata": {"name": "local-path", "creationTimestamp": "2024-06-01T11:00:00Z",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"
        });
        assert_eq!(
            storageclass_cells(&sc, now()),
            vec![
                json!("local-path (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false),
                json!("60m")
            ]
        );
        let plain = json!({"metadata": {"name": "nfs",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "false"}},
            "provisioner": "nfs", "allowVolumeExpansion": true});
        assert_eq!(
            storageclass_cells(&plain, now())[..5],
            [
                json!("nfs"),
                json!("nfs"),
                json!("Delete"),
                json!("Immediate"),
                json!(true)
            ]
        );
    }
}
