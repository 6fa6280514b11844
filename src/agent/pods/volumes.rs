//! Pod volumes and pod files (placeholder until the full volume support lands): the
//! pod directory, empty /etc/hosts-style files, and emptyDir directories.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};

pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

pub fn references(_pod: &Pod) -> References {
    References {
        config_maps: BTreeSet::new(),
        secrets: BTreeSet::new(),
    }
}

#[derive(Default)]
pub struct Objects {
    pub config_maps: HashMap<String, ConfigMap>,
    pub secrets: HashMap<String, Secret>,
}

pub struct NodeFacts {
    pub node_name: String,
    pub host_ip: Option<String>,
    pub pod_ips: Vec<String>,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub host_resolv_conf: PathBuf,
}

pub struct PodVolumes {
    pub by_name: HashMap<String, PathBuf>,
    pub etc_hosts: PathBuf,
    pub etc_hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VolumeError(String);

pub fn prepare(
    pod_dir: &Path,
    pod: &Pod,
    _objects: &Objects,
    _node: &NodeFacts,
) -> Result<PodVolumes, VolumeError> {
    let io = |e: std::io::Error| VolumeError(e.to_string());
    std::fs::create_dir_all(pod_dir).map_err(io)?;
    let mut by_name = HashMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = pod_dir.join("volumes").join(&v.name);
        std::fs::create_dir_all(&dir).map_err(io)?;
        by_name.insert(v.name.clone(), dir);
    }
    let hosts = pod_dir.join("etc-hosts");
    std::fs::write(&hosts, "127.0.0.1\tlocalhost\n").map_err(io)?;
    let hostname = pod_dir.join("etc-hostname");
    let name = pod.metadata.name.clone().unwrap_or_default();
    std::fs::write(&hostname, format!("{name}\n")).map_err(io)?;
    let resolv = pod_dir.join("resolv.conf");
    std::fs::write(&resolv, "").map_err(io)?;
    Ok(PodVolumes {
        by_name,
        etc_hosts: hosts,
        etc_hostname: hostname,
        resolv_conf: resolv,
    })
}

pub fn teardown(pod_dir: &Path) -> Result<(), VolumeError> {
    match std::fs::remove_dir_all(pod_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VolumeError(e.to_string())),
    }
}
