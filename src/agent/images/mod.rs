//! Images on the node: importing image tarballs (OCI image layout or docker save,
//! plain or gzip) into containerd without its Transfer service (containerd 1.6 has
//! none), naming them like containerd does, unpacking them for this node's platform,
//! and reading back what a container needs from an image (its process defaults and
//! the snapshot to start from).
//!
//! Everything an import creates is held by a lease until the image record references
//! it, and carries containerd's GC labels afterwards, so containerd's garbage
//! collector neither eats a half-done import nor keeps a deleted image's blobs.

pub mod archive;
pub mod content;
pub mod credentials;
pub mod oci;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod registry;
mod resolve;
pub mod unpack;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use containerd_client::services::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest,
};
use containerd_client::types::Descriptor as PbDescriptor;

use crate::agent::containerd::{Client, Error as CtrdError, Lease};
pub use credentials::{credentials_from_secrets, RegistryCredential};
use oci::{Descriptor, Index, Manifest, Platform};
pub use pull::{image_present, pull, PullError, PullOptions};
pub use reference::{normalize, ReferenceError};
pub use registries::{Registries, RegistriesError};
use resolve::{resolve, Blobs, Resolved};
pub use watch::watch_import_dir;

/// Manifests and configs larger than this are refused (containerd's own limit).
const JSON_LIMIT: usize = 4 << 20;
/// An import that takes longer than this loses its lease (GC may then collect it).
const IMPORT_LEASE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Containerd(#[from] CtrdError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("image {0} not found")]
    NotFound(String),
    #[error("image {name} has no manifest for this node's platform {platform}")]
    NoPlatform { name: String, platform: Platform },
    #[error("malformed image: {0}")]
    Format(String),
}

impl From<content::WriteError> for Error {
    fn from(e: content::WriteError) -> Self {
        match e {
            content::WriteError::Containerd(e) => Error::Containerd(e),
            other => Error::Format(other.to_string()),
        }
    }
}

/// An image an import created or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// Normalised name (`docker.io/library/busybox:1.36`).
    pub name: String,
    /// Digest of what the name points at (index or manifest).
    pub digest: String,
    /// Digest of the config for this node's platform (the image ID).
    pub config_digest: String,
    /// Chain ID of the unpacked top layer.
    pub chain_id: String,
}

/// What a container takes from its image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub name: String,
    /// The config digest (`crictl images` calls it the image ID).
    pub id: String,
    /// The snapshot a container's rootfs is prepared from.
    pub chain_id: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    /// `uid`, `uid:gid`, `name` or `name:group`, as the image says.
    pub user: String,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// An image record, as `list_images` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    pub labels: BTreeMap<String, String>,
}

/// Imports every image in the tarball at `path` and unpacks it for this node.
/// Returns the images created or updated; unnamed images are unpacked but get no
/// record (nothing could refer to them).
pub async fn import_file(client: &Client, path: &Path) -> Result<Vec<ImportedImage>, Error> {
    let started = std::time::Instant::now();
    let lease = client.create_lease("import", IMPORT_LEASE).await?;
    let result = import_with_lease(client, &lease, path).await;
    if let Err(e) = client.delete_lease(&lease).await {
        tracing::warn!(error = %e, "cannot release import lease (it expires by itself)");
    }
    if let Ok(images) = &result {
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        tracing::info!(archive = %path.display(), images = ?names, elapsed = ?started.elapsed(),
            "imported images");
    }
    result
}

/// Whether a file name looks like an image archive k3s would import from its
/// images dir (`.tar`, `.tar.gz`, `.tgz`; zstd ones are reported as unsupported).
pub fn is_archive_name(name: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Imports every image archive in `dir` (`<data-dir>/agent/images`), in name order.
/// One bad file does not stop the others; each gets its own result.
pub async fn import_dir(
    client: &Client,
    dir: &Path,
) -> Vec<(std::path::PathBuf, Result<Vec<ImportedImage>, Error>)> {
    let mut files: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter(|e| is_archive_name(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let result = import_file(client, &file).await;
        if let Err(e) = &result {
            tracing::warn!(archive = %file.display(), error = %e, "image import failed");
        }
        out.push((file, result));
    }
    out
}

async fn import_with_lease(
    client: &Client,
    lease: &Lease,
    path: &Path,
) -> Result<Vec<ImportedImage>, Error> {
    let archive = archive::store(client, lease, path).await?;
    let docker: Vec<oci::DockerSaveEntry> = match &archive.docker_manifest {
        Some(data) => serde_json::from_slice(data)
            .map_err(|e| Error::Format(format!("{}: manifest.json: {e}", path.display())))?,
        None => Vec::new(),
    };
    // (target, names) pairs to record.
    let mut targets: Vec<(Descriptor, Vec<String>)> = Vec::new();
    if let Some(data) = &archive.index {
        let index: Index = serde_json::from_slice(data)
            .map_err(|e| Error::Format(format!("{}: index.json: {e}", path.display())))?;
        for desc in index.manifests {
            let mut names: Vec<String> =
                [oci::ANNOTATION_CONTAINERD_NAME, oci::ANNOTATION_REF_NAME]
                    .iter()
                    .filter_map(|k| desc.annotations.get(*k))
                    .take(1)
                    .cloned()
                    .collect();
            if names.is_empty() {
                names = docker_tags_for(client, &archive, &docker, &desc).await;
            }
            targets.push((desc, names));
        }
    } else if !docker.is_empty() {
        for entry in &docker {
            let desc = write_docker_manifest(client, lease, &archive, entry, path).await?;
            let names = entry.repo_tags.clone().unwrap_or_default();
            targets.push((desc, names));
        }
    } else {
        return Err(Error::Format(format!(
            "{}: neither an OCI image layout (index.json) nor a docker save (manifest.json)",
            path.display()
        )));
    }

    let blobs = Blobs {
        client,
        cache: Some(&archive.json),
    };
    let platform = Platform::host();
    let mut imported = Vec::new();
    for (target, names) in targets {
        let label = names
            .first()
            .cloned()
            .unwrap_or_else(|| target.digest.clone());
        let resolved = resolve(&blobs, &label, &target, &platform).await?;
        let chain_id = finish_unpack(client, lease, &resolved).await?;
        if names.is_empty() {
            tracing::warn!(archive = %path.display(), digest = %target.digest,
                "image has no name in the archive; unpacked but not recorded");
        }
        for name in names {
            let name = normalize(&name)?;
            put_image(client, &name, &target).await?;
            imported.push(ImportedImage {
                name,
                digest: target.digest.clone(),
                config_digest: resolved.manifest_doc.config.digest.clone(),
                chain_id: chain_id.clone(),
            });
        }
    }
    Ok(imported)
}

/// Labels the blobs for GC, unpacks the layers and ties the snapshots to the config.
async fn finish_unpack(client: &Client, lease: &Lease, r: &Resolved) -> Result<String, Error> {
    for (desc, index) in &r.indexes {
        content::set_labels(client, &desc.digest, content::index_gc_labels(index)).await?;
    }
    content::set_labels(
        client,
        &r.manifest.digest,
        content::manifest_gc_labels(&r.manifest_doc),
    )
    .await?;
    let chain_id = unpack::unpack(client, lease, &r.manifest_doc, &r.config).await?;
    let mut labels = HashMap::new();
    labels.insert(
        format!("containerd.io/gc.ref.snapshot.{}", client.snapshotter()),
        chain_id.clone(),
    );
    content::set_labels(client, &r.manifest_doc.config.digest, labels).await?;
    Ok(chain_id)
}

/// Docker 25+ writes an OCI layout whose index may lack names; its manifest.json
/// has them as RepoTags, matched here by config digest.
async fn docker_tags_for(
    client: &Client,
    archive: &archive::Archive,
    docker: &[oci::DockerSaveEntry],
    desc: &Descriptor,
) -> Vec<String> {
    if docker.is_empty() {
        return Vec::new();
    }
    let blobs = Blobs {
        client,
        cache: Some(&archive.json),
    };
    let Ok(manifest) = blobs.json::<Manifest>(&desc.digest).await else {
        return Vec::new();
    };
    docker
        .iter()
        .filter(|e| {
            archive.files.get(&e.config).map(|f| f.digest.as_str())
                == Some(manifest.config.digest.as_str())
        })
        .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
        .collect()
}

/// Builds and stores the Docker schema 2 manifest a docker-save entry implies.
async fn write_docker_manifest(
    client: &Client,
    lease: &Lease,
    archive: &archive::Archive,
    entry: &oci::DockerSaveEntry,
    path: &Path,
) -> Result<Descriptor, Error> {
    let file = |name: &str| {
        archive.files.get(name).ok_or_else(|| {
            Error::Format(format!(
                "{}: manifest.json names {name}, which is not in the archive",
                path.display()
            ))
        })
    };
    let config = file(&entry.config)?;
    let mut layers = Vec::with_capacity(entry.layers.len());
    for layer in &entry.layers {
        let stored = file(layer)?;
        let compression = match stored.compression {
            Some(c) => c,
            None => oci::Compression::sniff(&content::read(client, &stored.digest, 4, 4).await?),
        };
        layers.push(Descriptor {
            media_type: compression.docker_layer_type().to_string(),
            digest: stored.digest.clone(),
            size: stored.size,
            ..Default::default()
        });
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MT_DOCKER_MANIFEST.to_string()),
        config: Descriptor {
            media_type: oci::MT_DOCKER_CONFIG.to_string(),
            digest: config.digest.clone(),
            size: config.size,
            ..Default::default()
        },
        layers,
        annotations: BTreeMap::new(),
    };
    let data = serde_json::to_vec(&manifest)
        .map_err(|e| Error::Format(format!("cannot encode manifest: {e}")))?;
    let size = data.len() as i64;
    let digest = content::write_bytes(client, lease, data, HashMap::new()).await?;
    Ok(Descriptor {
        media_type: oci::MT_DOCKER_MANIFEST.to_string(),
        digest,
        size,
        ..Default::default()
    })
}

fn to_pb(d: &Descriptor) -> PbDescriptor {
    PbDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: HashMap::new(),
    }
}

/// Creates the image record, or points an existing one at the new target.
async fn put_image(client: &Client, name: &str, target: &Descriptor) -> Result<(), Error> {
    let image = Image {
        name: name.to_string(),
        target: Some(to_pb(target)),
        ..Default::default()
    };
    let created = client
        .images()
        .create(client.request(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            client
                .images()
                .update(client.request(UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".to_string()],
                    }),
                    source_date_epoch: None,
                }))
                .await
                .map_err(CtrdError::rpc("update image"))?;
            Ok(())
        }
        Err(s) => Err(CtrdError::rpc("create image")(s).into()),
    }
}

async fn get_image(client: &Client, name: &str) -> Result<(String, Descriptor), Error> {
    let name = normalize(name)?;
    let image = match client
        .images()
        .get(client.request(GetImageRequest { name: name.clone() }))
        .await
    {
        Ok(resp) => resp.into_inner().image,
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => return Err(CtrdError::rpc("get image")(s).into()),
    };
    let target = image
        .and_then(|i| i.target)
        .ok_or_else(|| Error::NotFound(name.clone()))?;
    Ok((
        name,
        Descriptor {
            media_type: target.media_type,
            digest: target.digest,
            size: target.size,
            ..Default::default()
        },
    ))
}

/// What a container of image `name` starts from (for the OCI spec). Does not unpack;
/// see [`ensure_unpacked`].
pub async fn image_config(client: &Client, name: &str) -> Result<ImageConfig, Error> {
    let (name, target) = get_image(client, name).await?;
    let blobs = Blobs {
        client,
        cache: None,
    };
    let resolved = resolve(&blobs, &name, &target, &Platform::host()).await?;
    Ok(config_of(name, &resolved))
}

fn config_of(name: String, r: &Resolved) -> ImageConfig {
    let c = r.config.config.clone().unwrap_or_default();
    ImageConfig {
        name,
        id: r.manifest_doc.config.digest.clone(),
        chain_id: oci::chain_ids(&r.config.rootfs.diff_ids)
            .pop()
            .unwrap_or_default(),
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        user: c.user.unwrap_or_default(),
        stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
        labels: c.labels.unwrap_or_default(),
    }
}

/// [`image_config`], after unpacking the image if its snapshots are missing (an image
/// recorded by another client, or snapshots removed by hand).
pub async fn ensure_unpacked(client: &Client, name: &str) -> Result<ImageConfig, Error> {
    let (name, target) = get_image(client, name).await?;
    let blobs = Blobs {
        client,
        cache: None,
    };
    let resolved = resolve(&blobs, &name, &target, &Platform::host()).await?;
    let config = config_of(name, &resolved);
    if !unpack::snapshot_exists(client, &config.chain_id).await? {
        let lease = client.create_lease("unpack", IMPORT_LEASE).await?;
        let result = finish_unpack(client, &lease, &resolved).await;
        let _ = client.delete_lease(&lease).await;
        result?;
    }
    Ok(config)
}

/// Every image record in our namespace.
pub async fn list_images(client: &Client) -> Result<Vec<ImageSummary>, Error> {
    let images = client
        .images()
        .list(client.request(ListImagesRequest { filters: vec![] }))
        .await
        .map_err(CtrdError::rpc("list images"))?
        .into_inner()
        .images;
    let mut out: Vec<ImageSummary> = images
        .into_iter()
        .map(|i| {
            let target = i.target.unwrap_or_default();
            ImageSummary {
                name: i.name,
                digest: target.digest,
                media_type: target.media_type,
                labels: i.labels.into_iter().collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes an image record; containerd's GC then drops blobs and snapshots nothing
/// else uses.
pub async fn delete_image(client: &Client, name: &str) -> Result<(), Error> {
    let name = normalize(name)?;
    match client
        .images()
        .delete(client.request(DeleteImageRequest {
            name,
            sync: true,
            target: None,
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(CtrdError::rpc("delete image")(s).into()),
    }
}
