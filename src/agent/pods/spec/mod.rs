//! The runtime spec of one container of a pod: the Kubernetes container (command and
//! args with `$(VAR)` expansion, env, workingDir, securityContext, resources,
//! volumeMounts, tty) merged with its image's defaults into a
//! [`ContainerSpec`], plus the pod's network, hostname and cgroup parent. What
//! fails here is what the kubelet reports as `CreateContainerConfigError`.

pub mod env;
mod mounts;
pub mod security;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::agent::images::ImageConfig;
use crate::agent::pods::volumes::downward::NodeCapacity;
use crate::agent::pods::volumes::{
    host_network, pod_hostname, IoError, NodeFacts, Objects, PodVolumes,
};
use crate::agent::runtime::spec::{host_devices, UserError};
use crate::agent::runtime::{ContainerSpec, Namespace};

/// What the pod gives every container's spec.
pub struct SpecContext<'a> {
    /// The pod's network namespace (`Path`), or `Host` for hostNetwork pods.
    pub network: Namespace,
    pub volumes: &'a PodVolumes,
    pub objects: &'a Objects,
    pub node: &'a NodeFacts,
    /// The pod's cgroup (`/k3rs/<pod uid>`); the container's is below it.
    pub cgroup_parent: String,
}

/// Why a container's spec cannot be built. The Display is what the kubelet puts in
/// the `CreateContainerConfigError` waiting message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        key: String,
        namespace: String,
        name: String,
    },
    /// A fieldRef or resourceFieldRef that cannot be resolved.
    #[error("{0}")]
    Field(String),
    #[error(transparent)]
    User(#[from] UserError),
    /// runAsNonRoot violated.
    #[error("{0}")]
    NonRoot(String),
    /// A volumeMount that cannot be made (unknown volume, bad subPath, ...).
    #[error("{0}")]
    Mount(String),
    #[error(transparent)]
    Io(#[from] IoError),
}

/// `<pod dir>/containers/<container>/termination-log`: the host file behind the
/// container's terminationMessagePath.
pub fn termination_message_path(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir
        .join("containers")
        .join(container)
        .join("termination-log")
}

fn non_empty(v: &Option<Vec<String>>) -> Option<&Vec<String>> {
    v.as_ref().filter(|v| !v.is_empty())
}

/// The container's spec. Creates its subPath directories and (empties) its
/// termination message file; everything else is computed.
pub fn container_spec(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    ctx: &SpecContext,
) -> Result<ContainerSpec, ConfigError> {
    let capacity = NodeCapacity::of_host();
    let env = env::container_env(pod, container, ctx.objects, ctx.node, &capacity)?;
    let expand_all = |v: &Vec<String>| v.iter().map(|s| env.expand(s)).collect::<Vec<_>>();
    let command = non_empty(&container.command).map(expand_all);
    let args = non_empty(&container.args).map(expand_all);

    let user = security::user(pod, container, image)?;
    // The user is settled above (runAsUser may stand in for an image user name).
    let image = ImageConfig {
        user: String::new(),
        ..image.clone()
    };
    let mut spec = ContainerSpec::from_image(&image, command.as_deref(), args.as_deref(), &env.0)?;
    spec.user = user;
    if let Some(wd) = container.working_dir.as_deref().filter(|w| !w.is_empty()) {
        spec.cwd = wd.to_string();
    }

    let pod_spec = pod.spec.as_ref();
    let sc = container.security_context.as_ref();
    let privileged = security::privileged(container);
    let read_only_root = sc
        .and_then(|s| s.read_only_root_filesystem)
        .unwrap_or(false);
    spec.privileged = privileged;
    spec.capabilities = security::capabilities(container);
    spec.no_new_privileges = security::no_new_privileges(container);
    spec.readonly_rootfs = read_only_root;
    spec.resources = security::resources(container);
    let adj = security::oom_score_adj(pod, container, capacity.memory);
    spec.oom_score_adj = Some(security::restrict_oom_score_adj(adj));
    if privileged {
        spec.devices =
            host_devices().map_err(IoError::at("list host devices in", Path::new("/dev")))?;
    }
    spec.sysctls = pod_spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect::<BTreeMap<_, _>>();

    spec.network = ctx.network.clone();
    let flag = |f: Option<bool>| f.unwrap_or(false);
    if host_network(pod) {
        spec.uts = Namespace::Host;
        spec.network = Namespace::Host;
    } else {
        spec.hostname = Some(pod_hostname(pod));
    }
    if flag(pod_spec.and_then(|s| s.host_pid)) {
        spec.pid = Namespace::Host;
    }
    if flag(pod_spec.and_then(|s| s.host_ipc)) {
        spec.ipc = Namespace::Host;
    }
    spec.cgroups_path = format!(
        "{}/{}",
        ctx.cgroup_parent.trim_end_matches('/'),
        container.name
    );
    spec.terminal = flag(container.tty);

    let m = mounts::container_mounts(pod, container, ctx, &env, privileged, read_only_root)?;
    spec.mounts = m.mounts;
    spec.rootfs_propagation = m.rootfs_propagation;
    Ok(spec)
}

#[cfg(test)]
mod tests;
