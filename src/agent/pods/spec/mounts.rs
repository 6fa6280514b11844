//! A container's bind mounts: its volumeMounts (readOnly, subPath and subPathExpr
//! kept inside the volume, mountPropagation), the pod files (/etc/hosts,
//! /etc/hostname, /etc/resolv.conf) and its termination message file, ordered so a
//! parent directory is mounted before what is mounted inside it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};

use super::env::EnvList;
use super::{ConfigError, SpecContext};
use crate::agent::pods::volumes::IoError;
use crate::agent::runtime::Mount;

/// Mounts plus the rootfs propagation they need (`rslave`/`rshared`).
pub struct Mounts {
    pub mounts: Vec<Mount>,
    pub rootfs_propagation: Option<String>,
}

fn bind(source: &Path, destination: &str, propagation: &str, read_only: bool) -> Mount {
    Mount {
        destination: destination.to_string(),
        kind: "bind".to_string(),
        source: source.to_string_lossy().into_owned(),
        options: vec![
            "rbind".to_string(),
            propagation.to_string(),
            if read_only { "ro" } else { "rw" }.to_string(),
        ],
    }
}

/// Volumes the kubelet always mounts read-only: their content is the API's.
fn api_content_volume(pod: &Pod, name: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|vs| vs.iter().find(|v| v.name == name))
        .is_some_and(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
        })
}

/// The subPath (after `subPathExpr` expansion) of a volumeMount, checked like the
/// kubelet does.
fn sub_path(m: &VolumeMount, env: &EnvList) -> Result<Option<String>, ConfigError> {
    let sub = if let Some(expr) = m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        let mut missing = std::collections::BTreeSet::new();
        let expanded = super::env::expand(expr, |k| match env.get(k) {
            Some(v) if !v.is_empty() => Some(v.to_string()),
            _ => {
                missing.insert(k.to_string());
                Some(String::new())
            }
        });
        if !missing.is_empty() {
            let list: Vec<String> = missing.into_iter().collect();
            return Err(ConfigError::Mount(format!(
                "missing value for {}",
                list.join(", ")
            )));
        }
        expanded
    } else {
        m.sub_path.clone().unwrap_or_default()
    };
    if sub.is_empty() {
        return Ok(None);
    }
    if sub.starts_with('/') {
        return Err(ConfigError::Mount(format!(
            "error SubPath `{sub}` must not be an absolute path"
        )));
    }
    if Path::new(&sub)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(ConfigError::Mount(format!(
            "unable to provision SubPath `{sub}`: must not contain '..'"
        )));
    }
    Ok(Some(sub))
}

/// `volume/sub`, created as a directory (with the volume's mode) when missing, and
/// refused when a symlink takes it outside the volume.
fn resolve_sub_path(
    volume: &Path,
    sub: &str,
    mount: &str,
    container: &str,
) -> Result<PathBuf, ConfigError> {
    let path = volume.join(sub);
    let outside = || {
        ConfigError::Mount(format!(
            "subpath {:?} not within volume path {:?}",
            path.display().to_string(),
            volume.display().to_string()
        ))
    };
    let base = std::fs::canonicalize(volume).map_err(|_| outside())?;
    // Check where the deepest existing part leads before creating anything, so a
    // symlink in the volume cannot make us create directories elsewhere on the host.
    let existing = path
        .ancestors()
        .find(|p| std::fs::symlink_metadata(p).is_ok())
        .unwrap_or(volume);
    let real_existing = std::fs::canonicalize(existing).map_err(|_| outside())?;
    if !real_existing.starts_with(&base) {
        return Err(outside());
    }
    if std::fs::symlink_metadata(&path).is_err() {
        let mode = std::fs::metadata(volume)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o755);
        let made = std::fs::create_dir_all(&path)
            .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)));
        if let Err(e) = made {
            tracing::warn!(path = %path.display(), error = %e, "creating subPath failed");
            return Err(ConfigError::Mount(format!(
                "failed to create subPath directory for volumeMount {mount:?} of container {container:?}"
            )));
        }
    }
    let real = std::fs::canonicalize(&path).map_err(|_| outside())?;
    if !real.starts_with(&base) {
        return Err(outside());
    }
    Ok(real)
}

/// Every bind mount of `container`. Creates subPath directories and the
/// termination message file (empty: each attempt starts without a message).
pub fn container_mounts(
    pod: &Pod,
    container: &Container,
    ctx: &SpecContext,
    env: &EnvList,
    privileged: bool,
    read_only_root: bool,
) -> Result<Mounts, ConfigError> {
    let mut mounts = Vec::new();
    let mut propagation: Option<&str> = None;
    for m in container.volume_mounts.iter().flatten() {
        let Some(volume) = ctx.volumes.by_name.get(&m.name) else {
            return Err(ConfigError::Mount(format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, container.name
            )));
        };
        let source = match sub_path(m, env)? {
            Some(sub) => resolve_sub_path(volume, &sub, &m.name, &container.name)?,
            None => volume.clone(),
        };
        let prop = match m.mount_propagation.as_deref().unwrap_or("None") {
            "HostToContainer" => {
                propagation.get_or_insert("rslave");
                "rslave"
            }
            "Bidirectional" => {
                if !privileged {
                    return Err(ConfigError::Mount(
                        "Bidirectional mount propagation is available only to privileged containers"
                            .to_string(),
                    ));
                }
                propagation = Some("rshared");
                "rshared"
            }
            _ => "rprivate",
        };
        let read_only = m.read_only.unwrap_or(false) || api_content_volume(pod, &m.name);
        mounts.push(bind(&source, &m.mount_path, prop, read_only));
    }

    let taken = |mounts: &[Mount], dest: &str| mounts.iter().any(|m| m.destination == dest);
    let mut pod_files = Vec::new();
    for (file, dest) in [
        (&ctx.volumes.etc_hosts, "/etc/hosts"),
        (&ctx.volumes.etc_hostname, "/etc/hostname"),
        (&ctx.volumes.resolv_conf, "/etc/resolv.conf"),
    ] {
        if !taken(&mounts, dest) {
            pod_files.push(bind(file, dest, "rprivate", read_only_root));
        }
    }
    mounts.extend(pod_files);

    let dest = container
        .termination_message_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/dev/termination-log".to_string());
    if !taken(&mounts, &dest) {
        let pod_dir = ctx
            .volumes
            .etc_hosts
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        let file = super::termination_message_path(&pod_dir, &container.name);
        let io = IoError::at;
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io("create directory", parent))?;
        }
        std::fs::write(&file, b"").map_err(io("create", &file))?;
        // Any user the container runs as may write its message.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))
            .map_err(io("chmod", &file))?;
        mounts.push(bind(&file, &dest, "rprivate", false));
    }

    // Parents before children (containerd sorts by path depth, stably).
    mounts.sort_by_key(|m| {
        Path::new(&m.destination)
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count()
    });
    Ok(Mounts {
        mounts,
        rootfs_propagation: propagation.map(str::to_string),
    })
}
