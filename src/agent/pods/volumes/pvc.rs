//! PersistentVolumeClaim volumes on this node: [`fetch`] resolves each claim a pod
//! uses to its bound PersistentVolume (`hostPath` or `local`), [`set_up`] prepares the
//! directory the containers bind-mount (subPath, readOnly and the like are the
//! container mounts' business), and [`run_cleanup`] removes the directories of
//! local-path volumes whose PersistentVolume object is gone (reclaim policy Delete).
//!
//! A local-path directory is created on first use with mode 0777, like
//! local-path-provisioner's helper does, and recorded under
//! `<agent dir>/local-path/<volume name>` (its path, then the volume's reclaim policy,
//! kept current while the volume exists) so the node remembers what it may delete:
//! nothing outside those records is ever removed, and nothing whose volume was last
//! seen with reclaim policy Retain (a user deleting a retained volume keeps the data).
//!
//! A `local` volume whose path is a block device has its filesystem (`local.fsType`,
//! default ext4; formatted when the device is blank) mounted on a directory of the pod
//! ([`super::device`]). volumeMode Block (a raw device in the container) is not
//! supported: the pod gets a FailedMount event saying so.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{HostPathVolumeSource, Pod};
use serde_json::Value;

use super::{device, host, IoError, SetUpError};
use crate::agent::client::ApiClient;

/// Annotation value of volumes made by the built-in local-path provisioner.
const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";
/// How often the node looks for directories of deleted volumes.
const CLEANUP_PERIOD: Duration = Duration::from_secs(5);

/// The volume behind one claim, as this node mounts it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimVolume {
    /// The PersistentVolume's name.
    pub volume: String,
    /// Its `hostPath` source, or for `local` volumes the path with type `Directory`.
    pub source: HostPathVolumeSource,
    /// Made by the local-path provisioner: create it 0777, record it for cleanup.
    pub local_path: bool,
    /// Where the record of a local-path directory goes.
    pub records_dir: PathBuf,
    /// `spec.persistentVolumeReclaimPolicy` (Retain when unset).
    pub reclaim_policy: String,
    /// For a `local` volume on a block device: the filesystem type to mount it with
    /// (`source.path` is the device).
    pub device_fs_type: Option<String>,
}

/// Claim name → its volume, for the claims of one pod.
pub type Claims = HashMap<String, ClaimVolume>;

/// Directory of the records of local-path directories on this node.
pub fn records_dir(agent_dir: &Path) -> PathBuf {
    agent_dir.join("local-path")
}

/// The claim a pod volume uses: `persistentVolumeClaim.claimName`, or `<pod>-<volume>`
/// for a generic ephemeral volume.
pub fn claim_name(pod: &Pod, v: &k8s_openapi::api::core::v1::Volume) -> Option<String> {
    if let Some(c) = &v.persistent_volume_claim {
        return Some(c.claim_name.clone());
    }
    v.ephemeral.as_ref().map(|_| {
        format!(
            "{}-{}",
            pod.metadata.name.as_deref().unwrap_or_default(),
            v.name
        )
    })
}

/// Resolves the pod's claims to their bound volumes. An `Err` (claim missing or not
/// bound yet) is reported as the pod's waiting message and retried by the worker.
pub async fn fetch(client: &ApiClient, pod: &Pod, agent_dir: &Path) -> Result<Claims, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Claims::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for v in volumes.into_iter().flatten() {
        let Some(name) = claim_name(pod, v) else {
            continue;
        };
        let path = format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}");
        let claim: Value = match client.get(&path).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(format!("persistentvolumeclaim \"{name}\" not found")),
            Err(e) => return Err(format!("getting persistentvolumeclaim \"{name}\": {e}")),
        };
        let volume = claim["spec"]["volumeName"].as_str().unwrap_or("");
        if volume.is_empty() || claim["status"]["phase"].as_str() != Some("Bound") {
            return Err(format!(
                "waiting for persistentvolumeclaim \"{name}\" to be bound to a volume"
            ));
        }
        let pv: Value = match client
            .get(&format!("/api/v1/persistentvolumes/{volume}"))
            .await
        {
            Ok(Some(pv)) => pv,
            Ok(None) => return Err(format!("persistentvolume \"{volume}\" not found")),
            Err(e) => return Err(format!("getting persistentvolume \"{volume}\": {e}")),
        };
        out.insert(name, resolve(&pv, agent_dir)?);
    }
    Ok(out)
}

/// How this node mounts a PersistentVolume.
pub fn resolve(pv: &Value, agent_dir: &Path) -> Result<ClaimVolume, String> {
    let name = pv["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let spec = &pv["spec"];
    if spec["volumeMode"].as_str() == Some("Block") {
        return Err(format!(
            "persistentvolume \"{name}\" has volumeMode Block, which k3rs does not support: use volumeMode Filesystem (a local volume on a block device is then formatted and mounted)"
        ));
    }
    let mut device_fs_type = None;
    let source = if let Some(p) = spec["hostPath"]["path"].as_str() {
        HostPathVolumeSource {
            path: p.to_string(),
            type_: spec["hostPath"]["type"].as_str().map(str::to_string),
        }
    } else if let Some(p) = spec["local"]["path"].as_str() {
        if device::is_block_device(Path::new(p)) {
            let fs = spec["local"]["fsType"].as_str().filter(|f| !f.is_empty());
            device_fs_type = Some(fs.unwrap_or(device::DEFAULT_FS_TYPE).to_string());
        }
        HostPathVolumeSource {
            path: p.to_string(),
            type_: Some("Directory".to_string()),
        }
    } else {
        return Err(format!(
            "persistentvolume \"{name}\" has a volume source k3rs cannot mount (only hostPath and local are supported)"
        ));
    };
    let local_path = pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"].as_str()
        == Some(LOCAL_PATH_PROVISIONER);
    Ok(ClaimVolume {
        volume: name,
        source,
        local_path,
        records_dir: records_dir(agent_dir),
        reclaim_policy: reclaim_policy(pv).to_string(),
        device_fs_type,
    })
}

fn reclaim_policy(pv: &Value) -> &str {
    pv["spec"]["persistentVolumeReclaimPolicy"]
        .as_str()
        .unwrap_or("Retain")
}

/// Writes a record (`<path>\n<policy>\n`) unless it says that already.
fn write_record(record: &Path, path: &str, policy: &str) -> std::io::Result<()> {
    super::write_if_changed(record, format!("{path}\n{policy}\n").as_bytes()).map(drop)
}

/// A record's path and policy (records without one predate it: Delete).
fn read_record(record: &Path) -> Option<(PathBuf, String)> {
    let text = std::fs::read_to_string(record).ok()?;
    let mut lines = text.lines();
    let path = lines.next().map(str::trim).filter(|p| !p.is_empty())?;
    let policy = lines.next().map(str::trim).unwrap_or("Delete");
    Some((PathBuf::from(path), policy.to_string()))
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SetUpError + 'a {
    move |e| SetUpError::Io(IoError::at(what, path)(e))
}

/// Prepares the directory of claim `claim` (from [`fetch`]); returns its host path.
/// `mount_dir` is the pod's own directory for this volume, where a device's filesystem
/// is mounted.
pub fn set_up(
    claim: &str,
    claims: &Claims,
    fs_group: Option<u32>,
    mount_dir: &Path,
) -> Result<PathBuf, SetUpError> {
    let Some(cv) = claims.get(claim) else {
        return Err(SetUpError::Invalid(format!(
            "persistentvolumeclaim \"{claim}\" is not bound to a volume yet"
        )));
    };
    if let Some(fs_type) = &cv.device_fs_type {
        device::mount_filesystem(Path::new(&cv.source.path), fs_type, mount_dir)?;
        if let Some(gid) = fs_group {
            group_own(mount_dir, gid)?;
        }
        return Ok(mount_dir.to_path_buf());
    }
    let dir = PathBuf::from(&cv.source.path);
    if cv.local_path {
        std::fs::create_dir_all(&cv.records_dir)
            .map_err(io_err("create directory", &cv.records_dir))?;
        let record = cv.records_dir.join(&cv.volume);
        write_record(&record, &cv.source.path, &cv.reclaim_policy)
            .map_err(io_err("write", &record))?;
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(io_err("chmod", &dir))?;
        }
    }
    let path = host::host_path(&cv.source)?;
    // fsGroup applies to volumes the node owns (local-path and local), not to plain
    // hostPath ones, as upstream.
    if let Some(gid) =
        fs_group.filter(|_| cv.local_path || cv.source.type_.as_deref() == Some("Directory"))
    {
        group_own(&path, gid)?;
    }
    Ok(path)
}

/// fsGroup on a volume's root: group-owned, group-writable, setgid.
fn group_own(path: &Path, gid: u32) -> Result<(), SetUpError> {
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err("chown", path))?;
    let mode = std::fs::metadata(path)
        .map_err(io_err("stat", path))?
        .permissions()
        .mode();
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode((mode & 0o7777) | 0o2070),
    )
    .map_err(io_err("chmod", path))
}

/// One cleanup pass: removes the directory of each recorded local-path volume whose
/// PersistentVolume no longer exists and was last seen with reclaim policy Delete
/// (forgetting, not removing, a retained one). Returns the volumes cleaned up.
pub async fn cleanup_once(client: &ApiClient, agent_dir: &Path) -> Vec<String> {
    let dir = records_dir(agent_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for e in entries.flatten() {
        let volume = e.file_name().to_string_lossy().to_string();
        let record = e.path();
        let Some((path, policy)) = read_record(&record) else {
            continue;
        };
        match client
            .get::<Value>(&format!("/api/v1/persistentvolumes/{volume}"))
            .await
        {
            Ok(None) => {}
            // Still there: keep, and remember a changed policy (a user patching a
            // volume to Retain to keep its data).
            Ok(Some(pv)) => {
                let now = reclaim_policy(&pv);
                if now != policy {
                    if let Err(err) = write_record(&record, &path.to_string_lossy(), now) {
                        tracing::warn!(volume, error = %err, "cannot update the record of a local-path volume");
                    }
                }
                continue;
            }
            Err(_) => continue,
        }
        if policy != "Delete" {
            let _ = std::fs::remove_file(&record);
            tracing::info!(volume, dir = %path.display(), policy, "volume deleted; keeping its directory (reclaim policy)");
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(volume, dir = %path.display(), error = %err, "cannot remove the directory of a deleted volume; retrying");
                continue;
            }
        }
        let _ = std::fs::remove_file(&record);
        tracing::info!(volume, dir = %path.display(), "removed the directory of a deleted local-path volume");
        done.push(volume);
    }
    done
}

/// Runs [`cleanup_once`] periodically until `shutdown` flips.
pub async fn run_cleanup(
    client: ApiClient,
    agent_dir: PathBuf,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(CLEANUP_PERIOD);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
            _ = tick.tick() => {
                cleanup_once(&client, &agent_dir).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn local_path_directory_is_created_world_writable_and_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("storage/pvc-1_ns_data");
        let pv = json!({"metadata": {"name": "pvc-1",
                "annotations": {"pv.kubernetes.io/provisioned-by": "rancher.io/local-path"}},
            "spec": {"hostPath": {"path": data.to_str().unwrap(), "type": "DirectoryOrCreate"}}});
        let cv = resolve(&pv, tmp.path()).unwrap();
        assert!(cv.local_path);
        let claims = Claims::from([("data".to_string(), cv)]);
        let path = set_up("data", &claims, None, &tmp.path().join("unused")).unwrap();
        assert_eq!(path, data);
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777);
        let record = records_dir(tmp.path()).join("pvc-1");
        let (path, policy) = read_record(&record).unwrap();
        assert_eq!(
            (path.as_path(), policy.as_str()),
            (data.as_path(), "Retain")
        );
        // Records from before the policy line mean Delete.
        std::fs::write(&record, data.to_str().unwrap()).unwrap();
        assert_eq!(read_record(&record).unwrap().1, "Delete");
        assert!(matches!(
            set_up("other", &claims, None, tmp.path()),
            Err(SetUpError::Invalid(_))
        ));
    }

    #[test]
    fn block_mode_is_refused_and_local_directories_are_no_devices() {
        let pv = json!({"metadata": {"name": "raw"},
            "spec": {"volumeMode": "Block", "local": {"path": "/dev/sdb"}}});
        let e = resolve(&pv, Path::new("/tmp")).unwrap_err();
        assert!(e.contains("\"raw\" has volumeMode Block"), "{e}");
        let pv = json!({"metadata": {"name": "dir"}, "spec": {"local": {"path": "/tmp"}}});
        let cv = resolve(&pv, Path::new("/tmp")).unwrap();
        assert_eq!(cv.device_fs_type, None);
        assert_eq!(cv.source.type_.as_deref(), Some("Directory"));
    }

    #[test]
    fn unsupported_sources_are_named() {
        let pv =
            json!({"metadata": {"name": "nfs-1"}, "spec": {"nfs": {"server": "x", "path": "/"}}});
        let e = resolve(&pv, Path::new("/tmp")).unwrap_err();
        assert!(
            e.contains("nfs-1") && e.contains("hostPath and local"),
            "{e}"
        );
    }
}
