//! A container's identity, privileges and cgroup limits from its pod: user and
//! groups (container securityContext over the pod's, else the image's), runAsNonRoot,
//! capabilities (containerd's CRI rules), CPU shares/quota and memory limit (the
//! kubelet's conversions), and the OOM score by QoS class.

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};

use super::ConfigError;
use crate::agent::images::ImageConfig;
use crate::agent::pods::volumes::downward::container_quantity;
use crate::agent::runtime::spec::{
    current_capabilities, parse_user, Resources, User, DEFAULT_CAPABILITIES,
};

/// Upstream's CFS period (100ms) and conversion bounds.
pub const CPU_PERIOD: u64 = 100_000;
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
const MIN_QUOTA: i64 = 1000;

const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;
/// Pods at or above this priority are system-critical.
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

fn pod_sc(pod: &Pod) -> Option<&PodSecurityContext> {
    pod.spec.as_ref()?.security_context.as_ref()
}

fn sc(container: &Container) -> Option<&SecurityContext> {
    container.security_context.as_ref()
}

/// `name_namespace(uid)`, upstream's `format.Pod`.
fn pod_desc(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// The process identity: runAsUser/runAsGroup (container over pod) over the image's
/// user, fsGroup then supplementalGroups as additional groups.
pub fn user(pod: &Pod, container: &Container, image: &ImageConfig) -> Result<User, ConfigError> {
    let psc = pod_sc(pod);
    let run_as_user = sc(container)
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user));
    let run_as_group = sc(container)
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group));
    let non_root = sc(container)
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);

    let mut user = match run_as_user {
        // The image's group is not looked up in its /etc/passwd yet: gid 0.
        Some(uid) => User {
            uid: uid as u32,
            ..User::default()
        },
        None => {
            if non_root && !image.user.is_empty() && parse_user(&image.user).is_err() {
                return Err(ConfigError::NonRoot(format!(
                    "container has runAsNonRoot and image has non-numeric user ({}), cannot verify user is non-root (pod: {:?}, container: {})",
                    image.user,
                    pod_desc(pod),
                    container.name
                )));
            }
            parse_user(&image.user)?
        }
    };
    if let Some(gid) = run_as_group {
        user.gid = gid as u32;
    }
    if non_root && user.uid == 0 {
        return Err(ConfigError::NonRoot(if run_as_user.is_some() {
            format!(
                "container's runAsUser breaks non-root policy (pod: {:?}, container: {})",
                pod_desc(pod),
                container.name
            )
        } else {
            format!(
                "container has runAsNonRoot and image will run as root (pod: {:?}, container: {})",
                pod_desc(pod),
                container.name
            )
        }));
    }
    let groups = psc.and_then(|s| s.fs_group).into_iter().chain(
        psc.and_then(|s| s.supplemental_groups.clone())
            .into_iter()
            .flatten(),
    );
    for g in groups {
        let g = g as u32;
        if !user.additional_gids.contains(&g) {
            user.additional_gids.push(g);
        }
    }
    Ok(user)
}

pub fn privileged(container: &Container) -> bool {
    sc(container).and_then(|s| s.privileged).unwrap_or(false)
}

/// `net_admin`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`.
fn cap_name(c: &str) -> String {
    let upper = c.to_ascii_uppercase();
    match upper.strip_prefix("CAP_") {
        Some(_) => upper,
        None => format!("CAP_{upper}"),
    }
}

/// The capability set: every one this agent holds for privileged containers, else
/// containerd's defaults with `add` then `drop` applied (`ALL` first, so `add: [ALL],
/// drop: [CHOWN]` is everything but CHOWN).
pub fn capabilities(container: &Container) -> Vec<String> {
    if privileged(container) {
        return current_capabilities();
    }
    let caps = sc(container).and_then(|s| s.capabilities.as_ref());
    let add: Vec<&String> = caps
        .and_then(|c| c.add.as_ref())
        .into_iter()
        .flatten()
        .collect();
    let drop: Vec<&String> = caps
        .and_then(|c| c.drop.as_ref())
        .into_iter()
        .flatten()
        .collect();
    let is_all = |c: &&String| c.eq_ignore_ascii_case("ALL");
    let mut set: Vec<String> = if add.iter().any(is_all) {
        current_capabilities()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    if drop.iter().any(is_all) {
        set.clear();
    }
    for c in add.iter().filter(|c| !is_all(c)) {
        let c = cap_name(c);
        if !set.contains(&c) {
            set.push(c);
        }
    }
    for c in drop.iter().filter(|c| !is_all(c)) {
        let c = cap_name(c);
        set.retain(|x| *x != c);
    }
    set
}

/// Upstream's `MilliCPUToShares`: 1024 per CPU, at least 2.
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    ((milli * SHARES_PER_CPU) / 1000).clamp(MIN_SHARES as i64, MAX_SHARES as i64) as u64
}

/// Upstream's `MilliCPUToQuota` over `CPU_PERIOD`, at least 1ms.
pub fn milli_cpu_to_quota(milli: i64) -> i64 {
    ((milli * CPU_PERIOD as i64) / 1000).max(MIN_QUOTA)
}

/// cgroup limits from `resources`: shares from requests.cpu (limits.cpu when only
/// that is set, as API defaulting would), quota from limits.cpu, memory from
/// limits.memory.
pub fn resources(container: &Container) -> Resources {
    let cpu_limit = container_quantity(container, "limits", "cpu").filter(|q| !q.is_zero());
    let cpu_request = container_quantity(container, "requests", "cpu").or(cpu_limit);
    let memory = container_quantity(container, "limits", "memory").filter(|q| !q.is_zero());
    let mut r = Resources {
        cpu_shares: Some(milli_cpu_to_shares(
            cpu_request.map(|q| q.milli_value()).unwrap_or(0),
        )),
        ..Resources::default()
    };
    if let Some(limit) = cpu_limit {
        r.cpu_quota = Some(milli_cpu_to_quota(limit.milli_value()));
        r.cpu_period = Some(CPU_PERIOD);
    }
    r.memory_limit = memory.map(|q| q.value());
    r
}

/// The pod's QoS class: `status.qosClass` when set, else computed like upstream.
pub fn qos_class(pod: &Pod) -> String {
    if let Some(q) = pod.status.as_ref().and_then(|s| s.qos_class.clone()) {
        return q;
    }
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort".into();
    };
    let containers: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        for res in ["cpu", "memory"] {
            let limit = container_quantity(c, "limits", res).filter(|q| !q.is_zero());
            let request = container_quantity(c, "requests", res).filter(|q| !q.is_zero());
            any |= limit.is_some() || request.is_some();
            match (limit, request) {
                (Some(l), Some(r)) if l == r => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort".into()
    } else if guaranteed {
        "Guaranteed".into()
    } else {
        "Burstable".into()
    }
}

/// Upstream's `GetContainerOOMScoreAdjust`.
pub fn oom_score_adj(pod: &Pod, container: &Container, memory_capacity: i64) -> i32 {
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    if priority >= SYSTEM_CRITICAL_PRIORITY {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos_class(pod).as_str() {
        "Guaranteed" => GUARANTEED_OOM_SCORE_ADJ,
        "BestEffort" => BEST_EFFORT_OOM_SCORE_ADJ,
        _ => {
            let request = container_quantity(container, "requests", "memory")
                .or_else(|| container_quantity(container, "limits", "memory"))
                .map(|q| q.value())
                .unwrap_or(0);
            if memory_capacity <= 0 {
                return BEST_EFFORT_OOM_SCORE_ADJ - 1;
            }
            let adj = 1000 - (1000 * request as i128 / memory_capacity as i128) as i64;
            if adj < (1000 + GUARANTEED_OOM_SCORE_ADJ) as i64 {
                1000 + GUARANTEED_OOM_SCORE_ADJ
            } else if adj == BEST_EFFORT_OOM_SCORE_ADJ as i64 {
                BEST_EFFORT_OOM_SCORE_ADJ - 1
            } else {
                adj as i32
            }
        }
    }
}

/// Without CAP_SYS_RESOURCE (a restricted host container) a process may not lower
/// its OOM score below its parent's, and runc would fail the start: keep it at or
/// above ours, like containerd's `restrict_oom_score_adj`.
pub fn restrict_oom_score_adj(adj: i32) -> i32 {
    if current_capabilities()
        .iter()
        .any(|c| c == "CAP_SYS_RESOURCE")
    {
        return adj;
    }
    let ours = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    adj.max(ours)
}

/// `allowPrivilegeEscalation: false` sets no_new_privs (upstream's
/// `AddNoNewPrivileges`); unset leaves it off, as in Kubernetes.
pub fn no_new_privileges(container: &Container) -> bool {
    sc(container)
        .and_then(|s| s.allow_privilege_escalation)
        .map(|allow| !allow)
        .unwrap_or(false)
}
