//! PersistentVolume and PersistentVolumeClaim defaults (SetDefaults_PersistentVolume,
//! _PersistentVolumeClaim, _PersistentVolumeClaimSpec).

use serde_json::{Map, Value};

use super::{child, present, set_ptr, set_str, spec};

/// Claim defaults on a claim object or a StatefulSet claim template: volumeMode
/// Filesystem and status phase Pending.
pub(super) fn claim(c: &mut Map<String, Value>) {
    if let Some(s) = child(c, "spec") {
        set_ptr(s, "volumeMode", Value::from("Filesystem"));
    }
    if let Some(status) = child(c, "status") {
        set_str(status, "phase", "Pending");
    }
}

/// Defaults a PersistentVolumeClaim.
pub fn persistent_volume_claim(obj: &mut Value) {
    if let Some(c) = obj.as_object_mut() {
        claim(c);
    }
}

/// Defaults a PersistentVolume: reclaim policy Retain, volumeMode Filesystem, phase
/// Pending, and a hostPath type of "".
pub fn persistent_volume(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_str(s, "persistentVolumeReclaimPolicy", "Retain");
    set_ptr(s, "volumeMode", Value::from("Filesystem"));
    if let Some(h) = present(s, "hostPath") {
        set_ptr(h, "type", Value::from(""));
    }
    if let Some(status) = obj.as_object_mut().and_then(|o| child(o, "status")) {
        set_str(status, "phase", "Pending");
    }
}
