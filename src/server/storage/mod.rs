//! Persistent storage in the control plane (upstream's PV controller, the pvc/pv
//! protection controllers and k3s's local-path-provisioner, in one place):
//!
//! - the default StorageClass `local-path` (provisioner `rancher.io/local-path`,
//!   WaitForFirstConsumer, reclaim Delete), created at start when missing ([`ensure_default_class`]);
//! - the binder ([`binder`]): claims bind to matching volumes (static or provisioned),
//!   phases Pending/Bound/Lost and Available/Bound/Released/Failed, reclaim Retain and
//!   Delete, the `kubernetes.io/pvc-protection` / `pv-protection` finalizers;
//! - the provisioner ([`provision`]): a `hostPath` volume under
//!   `--default-local-storage-path` on the node the scheduler chose
//!   (`volume.kubernetes.io/selected-node`), with node affinity to that node.
//!
//! The directory itself is made by the agent of that node when a pod mounts it, and
//! removed by that agent once the volume object is gone
//! (`agent::pods::volumes::pvc`).

pub mod binder;
pub mod ephemeral;
pub mod matching;
pub mod provision;

use crate::api::ApiError;
use crate::server::informer::{builtin, Informers};
use crate::server::registry::{Registry, WriteOptions};
use serde_json::json;
use std::path::PathBuf;
use tokio::sync::watch;

/// Name of the default class.
pub const DEFAULT_CLASS: &str = "local-path";
/// The provisioner k3s users know from local-path-provisioner.
pub const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";
/// The claim annotation naming the node the scheduler picked (upstream's name).
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The volume annotation naming the provisioner that made it.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Claim annotation: the binding finished.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Claim and volume annotation: the binder (not the user) set the reference.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Claim annotation: which provisioner is expected to make its volume.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The finalizer that keeps a claim while pods use it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while a claim is bound to it.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Settings of the storage controllers.
#[derive(Clone, Debug)]
pub struct StorageSettings {
    /// `--default-local-storage-path`: where local-path volumes live on every node.
    pub local_storage_path: PathBuf,
}

/// Creates the `local-path` StorageClass unless it exists (a user may have changed
/// it; we never overwrite).
pub async fn ensure_default_class(
    registry: &Registry,
    settings: &StorageSettings,
) -> Result<(), ApiError> {
    let res = builtin("storage.k8s.io", "v1", "storageclasses");
    let class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": DEFAULT_CLASS,
            "annotations": {
                "storageclass.kubernetes.io/is-default-class": "true",
                "defaultVolumeType": "hostPath",
                "k3rs.io/local-storage-path": settings.local_storage_path.display().to_string(),
            },
        },
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    });
    match registry
        .create(res, "", class, &WriteOptions::default())
        .await
    {
        Ok(_) => {
            tracing::info!(class = DEFAULT_CLASS, "created the default StorageClass");
            Ok(())
        }
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs the storage controllers until `shutdown` flips.
pub async fn run(informers: Informers, settings: StorageSettings, shutdown: watch::Receiver<bool>) {
    if let Err(e) = ensure_default_class(informers.registry(), &settings).await {
        tracing::warn!(error = %e.message, "cannot create the default StorageClass local-path; claims without a class stay Pending until one exists");
    }
    binder::run(informers, settings, shutdown).await;
}
