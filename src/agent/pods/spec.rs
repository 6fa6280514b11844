//! A container's OCI spec from its pod (placeholder until the full builder lands).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::volumes::{NodeFacts, Objects, PodVolumes};
use crate::agent::images::ImageConfig;
use crate::agent::runtime::{ContainerSpec, Mount, Namespace};

pub struct SpecContext<'a> {
    pub network: Namespace,
    pub volumes: &'a PodVolumes,
    pub objects: &'a Objects,
    pub node: &'a NodeFacts,
    pub cgroup_parent: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

pub fn container_spec(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    ctx: &SpecContext,
) -> Result<ContainerSpec, ConfigError> {
    let env: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    let mut spec = ContainerSpec::from_image(
        image,
        container.command.as_deref(),
        container.args.as_deref(),
        &env,
    )
    .map_err(|e| ConfigError(e.to_string()))?;
    spec.network = ctx.network.clone();
    spec.cgroups_path = format!("{}/{}", ctx.cgroup_parent, container.name);
    spec.hostname = pod.metadata.name.clone();
    for m in container.volume_mounts.iter().flatten() {
        if let Some(src) = ctx.volumes.by_name.get(&m.name) {
            spec.mounts.push(Mount::bind(
                &src.to_string_lossy(),
                &m.mount_path,
                m.read_only.unwrap_or(false),
            ));
        }
    }
    spec.mounts.push(Mount::bind(
        &ctx.volumes.etc_hosts.to_string_lossy(),
        "/etc/hosts",
        false,
    ));
    Ok(spec)
}

pub fn termination_message_path(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir
        .join("containers")
        .join(container)
        .join("termination-log")
}
