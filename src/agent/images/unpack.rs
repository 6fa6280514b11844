//! Unpacking an image into the snapshotter, layer by layer: for each layer whose chain
//! ID is not committed yet, `Snapshots.Prepare` on the parent chain, `Diff.Apply` of
//! the layer blob onto the returned mounts (containerd decompresses it), check the
//! applied digest against the config's diff ID, then `Snapshots.Commit` under the
//! chain ID. The same naming as containerd's own unpacker, so `ctr` sees our images as
//! unpacked and the two never unpack a layer twice.

use std::collections::HashMap;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use containerd_client::types::Descriptor as PbDescriptor;

use super::oci::{chain_ids, ConfigFile, Manifest};
use super::Error;
use crate::agent::containerd::{unique_suffix, Client, Error as CtrdError, Lease};

/// Whether the snapshot named `key` exists.
pub async fn snapshot_exists(client: &Client, key: &str) -> Result<bool, CtrdError> {
    match client
        .snapshots()
        .stat(client.request(StatSnapshotRequest {
            snapshotter: client.snapshotter().to_string(),
            key: key.to_string(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(CtrdError::rpc("stat snapshot")(s)),
    }
}

/// Unpacks `manifest`'s layers; returns the chain ID of the top layer (the parent for
/// container snapshots).
pub async fn unpack(
    client: &Client,
    lease: &Lease,
    manifest: &Manifest,
    config: &ConfigFile,
) -> Result<String, Error> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::Format(format!(
            "image config {} lists {} diff IDs for {} layers",
            manifest.config.digest,
            diff_ids.len(),
            manifest.layers.len()
        )));
    }
    if diff_ids.is_empty() {
        return Err(Error::Format(format!(
            "image config {} has no layers",
            manifest.config.digest
        )));
    }
    let chains = chain_ids(diff_ids);
    let mut parent = String::new();
    for (i, layer) in manifest.layers.iter().enumerate() {
        let chain = &chains[i];
        if snapshot_exists(client, chain).await? {
            parent = chain.clone();
            continue;
        }
        tracing::debug!(layer = %layer.digest, %chain, "unpacking layer");
        apply_layer(client, lease, layer, &diff_ids[i], &parent, chain).await?;
        parent = chain.clone();
    }
    Ok(parent)
}

async fn apply_layer(
    client: &Client,
    lease: &Lease,
    layer: &super::oci::Descriptor,
    diff_id: &str,
    parent: &str,
    chain: &str,
) -> Result<(), Error> {
    let snapshotter = client.snapshotter().to_string();
    // containerd's own key format ("extract-<unique> <chainID>").
    let key = format!("extract-{} {chain}", unique_suffix());
    let mounts = client
        .snapshots()
        .prepare(client.leased(
            PrepareSnapshotRequest {
                snapshotter: snapshotter.clone(),
                key: key.clone(),
                parent: parent.to_string(),
                labels: HashMap::new(),
            },
            Some(lease),
        ))
        .await
        .map_err(CtrdError::rpc("prepare snapshot"))?
        .into_inner()
        .mounts;
    let result = async {
        let applied = client
            .diff()
            .apply(client.leased(
                ApplyRequest {
                    diff: Some(PbDescriptor {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.clone(),
                        size: layer.size,
                        annotations: HashMap::new(),
                    }),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                Some(lease),
            ))
            .await
            .map_err(CtrdError::rpc("apply layer"))?
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        if applied != diff_id {
            return Err(Error::Format(format!(
                "layer {} unpacks to {applied}, but the image config says {diff_id}",
                layer.digest
            )));
        }
        match client
            .snapshots()
            .commit(client.leased(
                CommitSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    name: chain.to_string(),
                    key: key.clone(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await
        {
            Ok(_) => Ok(true),
            // Someone else unpacked the same layer meanwhile: theirs is as good.
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
            Err(s) => Err(CtrdError::rpc("commit snapshot")(s).into()),
        }
    }
    .await;
    if !matches!(result, Ok(true)) {
        let _ = client
            .snapshots()
            .remove(client.request(RemoveSnapshotRequest { snapshotter, key }))
            .await;
    }
    result.map(|_| ())
}
