//! A pod's volumes and pod-level files on this node, under its pod dir
//! (`layout::pod_dir`): emptyDir, hostPath, configMap, secret, downwardAPI and
//! projected volumes, plus the `etc-hosts`, `etc-hostname` and `resolv.conf` files
//! every container mounts. [`prepare`] creates or refreshes all of it and is called
//! again and again while the pod runs, so ConfigMap, Secret and label changes reach
//! running containers; [`teardown`] removes it when the pod is gone.
//!
//! On-disk layout follows the kubelet's:
//! `<pod dir>/volumes/kubernetes.io~<plugin>/<volume name>`.

mod atomic;
pub mod device;
pub(crate) mod downward;
mod host;
mod podfiles;
mod projection;
pub mod pvc;
pub(crate) mod quantity;
pub mod satoken;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Volume};

pub use atomic::{AtomicError, DATA_DIR};
pub use podfiles::{
    host_network, node_hostname, parse_resolv_conf, pod_hostname, write_if_changed,
};

use downward::NodeCapacity;
use projection::DEFAULT_MODE;

/// The ConfigMaps and Secrets (in the pod's namespace) a pod refers to, from volumes
/// (configMap, secret, projected sources) and env (valueFrom configMapKeyRef /
/// secretKeyRef, envFrom).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

/// What the worker fetched; a name absent from the map was not found.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub config_maps: HashMap<String, ConfigMap>,
    pub secrets: HashMap<String, Secret>,
    /// Tokens for the pod's `serviceAccountToken` projections ([`satoken::ensure`]).
    pub service_account_tokens: satoken::Tokens,
    /// The bound volumes of the pod's claims ([`pvc::fetch`]).
    pub claims: pvc::Claims,
}

/// Node facts volumes and specs need.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub node_name: String,
    pub host_ip: Option<String>,
    /// The pod's IPs (the node's for hostNetwork pods).
    pub pod_ips: Vec<String>,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The resolv.conf `Default` pods get and ClusterFirst pods take search domains
    /// from (`/etc/resolv.conf`).
    pub host_resolv_conf: PathBuf,
}

/// Host paths of the pod's volumes by volume name, and the pod-level files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolumes {
    pub by_name: HashMap<String, PathBuf>,
    pub etc_hosts: PathBuf,
    pub etc_hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

/// A filesystem call that failed, with what it was doing and where.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct IoError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// For `map_err`: `std::fs::write(p, d).map_err(IoError::at("write", p))`.
    pub fn at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IoError + 'a {
        move |source| IoError {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why one volume could not be set up; the wording is upstream's.
#[derive(Debug, thiserror::Error)]
pub enum SetUpError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("configmap references non-existent config key: {0}")]
    ConfigMapKey(String),
    #[error("references non-existent secret key: {0}")]
    SecretKey(String),
    #[error("hostPath type check failed: {path} is not {what}")]
    HostPathType { path: String, what: &'static str },
    #[error("{0} is an invalid volume type")]
    InvalidHostPathType(String),
    #[error("emptyDir medium {0:?} is not supported on this node (use \"\" or \"Memory\")")]
    UnsupportedMedium(String),
    #[error("{0} volumes are not supported by k3rs yet")]
    Unsupported(String),
    #[error("{0}")]
    DownwardApi(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    #[error(transparent)]
    Content(#[from] AtomicError),
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why a pod's volumes could not be prepared or removed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// What the kubelet reports in a FailedMount event.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {reason}")]
    SetUp { volume: String, reason: SetUpError },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path} is still mounted after unmounting; not removing the pod directory (check `grep {path} /proc/self/mountinfo`)")]
    StillMounted { path: PathBuf },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> VolumeError + 'a {
    move |e| VolumeError::Io(IoError::at(what, path)(e))
}

/// Regular and init containers.
fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.map(|s| s.containers.iter())
        .into_iter()
        .flatten()
        .chain(
            spec.and_then(|s| s.init_containers.as_ref())
                .into_iter()
                .flatten(),
        )
}

/// The ConfigMaps and Secrets `pod` needs.
pub fn references(pod: &Pod) -> References {
    let mut r = References::default();
    let spec = pod.spec.as_ref();
    for v in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        if let Some(c) = &v.config_map {
            r.config_maps.insert(c.name.clone());
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            r.secrets.insert(name);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                r.config_maps.insert(c.name.clone());
            }
            if let Some(s) = &p.secret {
                r.secrets.insert(s.name.clone());
            }
        }
    }
    let ephemeral = spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|e| (e.env.as_ref(), e.env_from.as_ref()));
    let envs = all_containers(pod)
        .map(|c| (c.env.as_ref(), c.env_from.as_ref()))
        .chain(ephemeral);
    for (env, env_from) in envs {
        for e in env.into_iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(c) = &from.config_map_key_ref {
                r.config_maps.insert(c.name.clone());
            }
            if let Some(s) = &from.secret_key_ref {
                r.secrets.insert(s.name.clone());
            }
        }
        for f in env_from.into_iter().flatten() {
            if let Some(c) = &f.config_map_ref {
                r.config_maps.insert(c.name.clone());
            }
            if let Some(s) = &f.secret_ref {
                r.secrets.insert(s.name.clone());
            }
        }
    }
    r
}

fn plugin_dir(pod_dir: &Path, plugin: &str, volume: &str) -> PathBuf {
    pod_dir
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(volume)
}

/// The source type of a volume we do not handle, by its JSON field name.
fn volume_kind(v: &Volume) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| {
            j.as_object()?
                .keys()
                .find(|k| k.as_str() != "name")
                .cloned()
        })
        .unwrap_or_else(|| "(no source)".to_string())
}

/// A directory for atomic-writer content, world-readable like upstream's.
fn content_dir(dir: &Path, memory: bool) -> Result<(), SetUpError> {
    let io = |what: &'static str| IoError::at(what, dir);
    std::fs::create_dir_all(dir).map_err(io("create directory"))?;
    if memory {
        // Secrets and projected tokens stay off the disk (upstream backs these with
        // tmpfs). Without the right to mount (not root) the agent could not run
        // containers either; keep going so the files still appear.
        if let Err(e) = host::ensure_tmpfs(dir, None) {
            if e.raw_os_error() == Some(libc::EPERM) {
                tracing::warn!(dir = %dir.display(), "cannot mount tmpfs (not root?): secret content is stored on disk");
            } else {
                return Err(io("mount tmpfs on")(e).into());
            }
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).map_err(io("chmod"))?;
    Ok(())
}

fn set_up(
    pod_dir: &Path,
    v: &Volume,
    pod: &Pod,
    objects: &Objects,
    node: &NodeFacts,
    capacity: &NodeCapacity,
    fs_group: Option<u32>,
) -> Result<PathBuf, SetUpError> {
    let mode = |m: Option<i32>| m.map(|m| m as u32 & 0o7777).unwrap_or(DEFAULT_MODE);
    if let Some(e) = &v.empty_dir {
        let dir = plugin_dir(pod_dir, "empty-dir", &v.name);
        host::empty_dir(&dir, e, fs_group)?;
        return Ok(dir);
    }
    if let Some(h) = &v.host_path {
        return host::host_path(h);
    }
    if let Some(claim) = pvc::claim_name(pod, v) {
        let mount_dir = plugin_dir(pod_dir, "local-volume", &v.name);
        return pvc::set_up(&claim, &objects.claims, fs_group, &mount_dir);
    }
    let (dir, payload) = if let Some(c) = &v.config_map {
        let dir = plugin_dir(pod_dir, "configmap", &v.name);
        content_dir(&dir, false)?;
        let payload = projection::config_map(
            &c.name,
            objects.config_maps.get(&c.name),
            c.items.as_deref(),
            mode(c.default_mode),
            c.optional == Some(true),
        )?;
        (dir, payload)
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let dir = plugin_dir(pod_dir, "secret", &v.name);
        content_dir(&dir, true)?;
        let payload = projection::secret(
            &name,
            objects.secrets.get(&name),
            s.items.as_deref(),
            mode(s.default_mode),
            s.optional == Some(true),
        )?;
        (dir, payload)
    } else if let Some(d) = &v.downward_api {
        let dir = plugin_dir(pod_dir, "downward-api", &v.name);
        content_dir(&dir, false)?;
        let payload = projection::downward_api(
            d.items.as_deref().unwrap_or_default(),
            pod,
            node,
            capacity,
            mode(d.default_mode),
        )?;
        (dir, payload)
    } else if let Some(p) = &v.projected {
        let dir = plugin_dir(pod_dir, "projected", &v.name);
        content_dir(&dir, true)?;
        (dir, projection::projected(p, pod, objects, node, capacity)?)
    } else {
        return Err(SetUpError::Unsupported(volume_kind(v)));
    };
    if atomic::write(&dir, &payload, fs_group)? {
        tracing::debug!(volume = %v.name, dir = %dir.display(), "volume content updated");
    }
    Ok(dir)
}

/// Creates or refreshes the pod's volumes and pod files under `pod_dir`. Idempotent:
/// unchanged content is left alone, changed content is swapped in atomically.
pub fn prepare(
    pod_dir: &Path,
    pod: &Pod,
    objects: &Objects,
    node: &NodeFacts,
) -> Result<PodVolumes, VolumeError> {
    std::fs::create_dir_all(pod_dir.join("volumes"))
        .map_err(io_err("create directory", pod_dir))?;
    let spec = pod.spec.as_ref();
    let fs_group = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .map(|g| g as u32);
    let capacity = NodeCapacity::of_host();
    let mut by_name = HashMap::new();
    for v in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let path =
            set_up(pod_dir, v, pod, objects, node, &capacity, fs_group).map_err(|reason| {
                VolumeError::SetUp {
                    volume: v.name.clone(),
                    reason,
                }
            })?;
        by_name.insert(v.name.clone(), path);
    }

    let files = PodVolumes {
        by_name,
        etc_hosts: pod_dir.join("etc-hosts"),
        etc_hostname: pod_dir.join("etc-hostname"),
        resolv_conf: pod_dir.join("resolv.conf"),
    };
    let node_hosts = if host_network(pod) {
        std::fs::read_to_string("/etc/hosts").map_err(io_err("read", Path::new("/etc/hosts")))?
    } else {
        String::new()
    };
    let hosts = podfiles::hosts_file(pod, node, &node_hosts);
    podfiles::write_if_changed(&files.etc_hosts, hosts.as_bytes())
        .map_err(io_err("write", &files.etc_hosts))?;
    let hostname = if host_network(pod) {
        node_hostname()
    } else {
        pod_hostname(pod)
    };
    podfiles::write_if_changed(&files.etc_hostname, format!("{hostname}\n").as_bytes())
        .map_err(io_err("write", &files.etc_hostname))?;
    let host_dns = match std::fs::read_to_string(&node.host_resolv_conf) {
        Ok(text) => podfiles::parse_resolv_conf(&text),
        Err(e) => {
            tracing::debug!(path = %node.host_resolv_conf.display(), error = %e, "host resolv.conf unreadable; using no host DNS settings");
            podfiles::DnsConfig::default()
        }
    };
    let resolv = podfiles::render_resolv_conf(&podfiles::pod_dns(pod, node, &host_dns));
    podfiles::write_if_changed(&files.resolv_conf, resolv.as_bytes())
        .map_err(io_err("write", &files.resolv_conf))?;
    Ok(files)
}

/// Unmounts the tmpfs volumes under `pod_dir` and removes it. Idempotent, also after
/// a crash half-way through.
pub fn teardown(pod_dir: &Path) -> Result<(), VolumeError> {
    let dir = match std::fs::canonicalize(pod_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("resolve", pod_dir)(e)),
    };
    let mounts = host::mounts_under(&dir).map_err(io_err("read mounts under", &dir))?;
    for m in &mounts {
        host::unmount(m).map_err(io_err("unmount", m))?;
    }
    if let Some(left) = host::mounts_under(&dir)
        .map_err(io_err("read mounts under", &dir))?
        .into_iter()
        .next()
    {
        return Err(VolumeError::StillMounted { path: left });
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &dir)(e)),
    }
}

#[cfg(test)]
pub(crate) fn test_node() -> NodeFacts {
    NodeFacts {
        node_name: "node1".into(),
        host_ip: Some("192.168.1.10".into()),
        pod_ips: vec!["10.42.0.7".into(), "fd00::7".into()],
        cluster_dns: vec!["10.43.0.10".into()],
        cluster_domain: "cluster.local".into(),
        host_resolv_conf: "/nonexistent/resolv.conf".into(),
    }
}

#[cfg(test)]
mod tests;
