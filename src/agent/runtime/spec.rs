//! The OCI runtime spec (config.json) of a container, built as JSON: process (args,
//! env, cwd, user, capabilities, rlimits), root, default mounts, namespaces, cgroups
//! path, masked and read-only paths, cgroup resources, privileged mode and devices.
//! Defaults follow containerd's default Linux spec (`oci.populateDefaultUnixSpec`),
//! which is also what the CRI plugin starts from. No I/O beyond reading our own
//! RLIMIT_NOFILE and, on request, listing the host's devices ([`host_devices`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::agent::images::ImageConfig;

mod privileges;

pub use privileges::{
    current_capabilities, host_devices, Device, ALL_CAPABILITIES, DEFAULT_CAPABILITIES,
};

/// The PATH a container gets when neither the image nor the pod sets one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// How a container gets one kind of namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// A namespace of its own.
    New,
    /// The host's (no entry in the spec).
    Host,
    /// Join the one at this path (a pod's network namespace, a sibling's pid ns).
    Path(PathBuf),
}

/// A bind or special mount beyond the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub destination: String,
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

impl Mount {
    pub fn bind(source: &str, destination: &str, read_only: bool) -> Mount {
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        options.push(if read_only { "ro" } else { "rw" }.to_string());
        Mount {
            destination: destination.to_string(),
            kind: "bind".to_string(),
            source: source.to_string(),
            options,
        }
    }
}

/// Numeric identity of the container process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Why an image's `User` cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image user {0:?} is not numeric; user names need /etc/passwd lookup (not supported yet): set securityContext.runAsUser")]
pub struct UserError(pub String);

/// Parses an image's `User` (`uid`, `uid:gid`). Names need a lookup in the image's
/// /etc/passwd, which is not done yet.
pub fn parse_user(user: &str) -> Result<User, UserError> {
    if user.is_empty() {
        return Ok(User::default());
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = u.parse::<u32>().map_err(|_| UserError(user.to_string()))?;
    let gid = match g {
        Some(g) => g.parse::<u32>().map_err(|_| UserError(user.to_string()))?,
        None => 0,
    };
    Ok(User {
        uid,
        gid,
        additional_gids: Vec::new(),
    })
}

/// cgroup limits of a container (`linux.resources`); `None` leaves the kernel default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// cpu.shares (cgroup v1 units; runc converts to cpu.weight on v2).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per `cpu_period`.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
}

/// Everything the spec is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: User,
    pub hostname: Option<String>,
    pub network: Namespace,
    pub pid: Namespace,
    pub ipc: Namespace,
    pub uts: Namespace,
    /// cgroupfs path (`/k3rs/<pod>/<container>`).
    pub cgroups_path: String,
    pub mounts: Vec<Mount>,
    pub readonly_rootfs: bool,
    pub terminal: bool,
    /// RLIMIT_NOFILE soft and hard limit (`None`: inherit the shim's).
    pub nofile: Option<u64>,
    pub annotations: BTreeMap<String, String>,
    /// Bounding, effective and permitted capabilities (`CAP_` names).
    pub capabilities: Vec<String>,
    /// No masked or read-only paths, writable /sys, every device allowed.
    pub privileged: bool,
    pub no_new_privileges: bool,
    pub resources: Resources,
    pub oom_score_adj: Option<i32>,
    /// Device nodes to create (the host's for privileged containers).
    pub devices: Vec<Device>,
    /// Namespaced sysctls (`linux.sysctl`).
    pub sysctls: BTreeMap<String, String>,
    /// `rslave` or `rshared` when a mount needs propagation from the host.
    pub rootfs_propagation: Option<String>,
}

impl Default for ContainerSpec {
    fn default() -> Self {
        ContainerSpec {
            args: Vec::new(),
            env: vec![DEFAULT_PATH.to_string()],
            cwd: "/".to_string(),
            user: User::default(),
            hostname: None,
            network: Namespace::New,
            pid: Namespace::New,
            ipc: Namespace::New,
            uts: Namespace::New,
            cgroups_path: String::new(),
            mounts: Vec::new(),
            readonly_rootfs: false,
            terminal: false,
            nofile: Some(default_nofile()),
            annotations: BTreeMap::new(),
            capabilities: DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            privileged: false,
            no_new_privileges: true,
            resources: Resources::default(),
            oom_score_adj: None,
            devices: Vec::new(),
            sysctls: BTreeMap::new(),
            rootfs_propagation: None,
        }
    }
}

impl ContainerSpec {
    /// The process defaults of an image, with Kubernetes' command/args rules: a
    /// `command` replaces the entrypoint and drops the image's cmd; `args` alone
    /// replace the cmd.
    pub fn from_image(
        image: &ImageConfig,
        command: Option<&[String]>,
        args: Option<&[String]>,
        env: &[(String, String)],
    ) -> Result<ContainerSpec, UserError> {
        let argv = match (command, args) {
            (Some(c), Some(a)) => [c, a].concat(),
            (Some(c), None) => c.to_vec(),
            (None, Some(a)) => [image.entrypoint.as_slice(), a].concat(),
            (None, None) => [image.entrypoint.as_slice(), image.cmd.as_slice()].concat(),
        };
        let mut merged: Vec<String> = Vec::new();
        let mut set = |entry: String| {
            let key = entry.split('=').next().unwrap_or_default().to_string();
            match merged
                .iter_mut()
                .find(|e| e.split('=').next() == Some(key.as_str()))
            {
                Some(existing) => *existing = entry,
                None => merged.push(entry),
            }
        };
        for e in &image.env {
            set(e.clone());
        }
        for (k, v) in env {
            set(format!("{k}={v}"));
        }
        if !merged.iter().any(|e| e.starts_with("PATH=")) {
            merged.insert(0, DEFAULT_PATH.to_string());
        }
        Ok(ContainerSpec {
            args: argv,
            env: merged,
            cwd: if image.working_dir.is_empty() {
                "/".to_string()
            } else {
                image.working_dir.clone()
            },
            user: parse_user(&image.user)?,
            ..ContainerSpec::default()
        })
    }

    /// The runtime spec JSON (root path `rootfs`: the shim mounts the snapshot there).
    pub fn to_oci(&self) -> Value {
        let caps = &self.capabilities;
        let mut namespaces = vec![json!({"type": "mount"})];
        for (kind, ns) in [
            ("network", &self.network),
            ("pid", &self.pid),
            ("ipc", &self.ipc),
            ("uts", &self.uts),
        ] {
            match ns {
                Namespace::New => namespaces.push(json!({"type": kind})),
                Namespace::Path(p) => {
                    namespaces.push(json!({"type": kind, "path": p.to_string_lossy()}))
                }
                Namespace::Host => {}
            }
        }
        let mut mounts = default_mounts();
        // The pod's own mounts replace defaults at the same place (/dev/shm, ...).
        mounts.retain(|m| {
            !self
                .mounts
                .iter()
                .any(|o| o.destination == m["destination"])
        });
        if self.privileged {
            // Privileged containers get a writable /sys, like containerd's CRI plugin.
            for m in mounts.iter_mut().filter(|m| m["destination"] == "/sys") {
                if let Some(opts) = m["options"].as_array_mut() {
                    opts.retain(|o| o != "ro");
                }
            }
        }
        for m in &self.mounts {
            mounts.push(json!({
                "destination": m.destination,
                "type": m.kind,
                "source": m.source,
                "options": m.options,
            }));
        }
        let mut spec = json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": self.terminal,
                "user": {
                    "uid": self.user.uid,
                    "gid": self.user.gid,
                },
                "args": self.args,
                "env": self.env,
                "cwd": self.cwd,
                "capabilities": {
                    "bounding": caps,
                    "effective": caps,
                    "permitted": caps,
                },
                "noNewPrivileges": self.no_new_privileges,
            },
            "root": {"path": "rootfs", "readonly": self.readonly_rootfs},
            "mounts": mounts,
            "linux": {
                "resources": {},
                "namespaces": namespaces,
            },
        });
        if self.privileged {
            spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
        } else {
            // Deny all, then runc adds its default allow list (null, zero, tty, ...).
            spec["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
            spec["linux"]["maskedPaths"] = json!(MASKED_PATHS);
            spec["linux"]["readonlyPaths"] = json!(READONLY_PATHS);
        }
        self.resources_to_oci(&mut spec);
        if !self.devices.is_empty() {
            let devices: Vec<Value> = self
                .devices
                .iter()
                .map(|d| {
                    json!({
                        "path": d.path,
                        "type": d.kind.to_string(),
                        "major": d.major,
                        "minor": d.minor,
                        "fileMode": d.file_mode,
                        "uid": d.uid,
                        "gid": d.gid,
                    })
                })
                .collect();
            spec["linux"]["devices"] = json!(devices);
        }
        if !self.sysctls.is_empty() {
            spec["linux"]["sysctl"] = json!(self.sysctls);
        }
        if let Some(p) = &self.rootfs_propagation {
            spec["linux"]["rootfsPropagation"] = json!(p);
        }
        if let Some(adj) = self.oom_score_adj {
            spec["process"]["oomScoreAdj"] = json!(adj);
        }
        if let Some(n) = self.nofile {
            spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": n, "soft": n}]);
        }
        if !self.user.additional_gids.is_empty() {
            spec["process"]["user"]["additionalGids"] = json!(self.user.additional_gids);
        }
        if let Some(h) = &self.hostname {
            spec["hostname"] = json!(h);
        }
        if !self.cgroups_path.is_empty() {
            spec["linux"]["cgroupsPath"] = json!(self.cgroups_path);
        }
        if !self.annotations.is_empty() {
            spec["annotations"] = json!(self.annotations);
        }
        spec
    }
}

impl ContainerSpec {
    fn resources_to_oci(&self, spec: &mut Value) {
        let r = &self.resources;
        let mut cpu = serde_json::Map::new();
        if let Some(v) = r.cpu_shares {
            cpu.insert("shares".into(), json!(v));
        }
        if let Some(v) = r.cpu_quota {
            cpu.insert("quota".into(), json!(v));
        }
        if let Some(v) = r.cpu_period {
            cpu.insert("period".into(), json!(v));
        }
        if !cpu.is_empty() {
            spec["linux"]["resources"]["cpu"] = Value::Object(cpu);
        }
        if let Some(v) = r.memory_limit {
            spec["linux"]["resources"]["memory"] = json!({"limit": v});
        }
    }
}

/// What pods see under k3s (whose unit sets LimitNOFILE=1048576), but never above
/// our own hard limit: raising it needs CAP_SYS_RESOURCE, which a container host may
/// lack (runc then fails to start the container).
pub fn default_nofile() -> u64 {
    const WANTED: u64 = 1_048_576;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    // rlim_t is u32 on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let hard = u64::from(lim.rlim_max);
    std::cmp::min(WANTED, hard)
}

fn default_mounts() -> Vec<Value> {
    let m = |dest: &str, kind: &str, src: &str, opts: &[&str]| json!({"destination": dest, "type": kind, "source": src, "options": opts});
    vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        m(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        m(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        m(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        m(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["a".into(), "b".into()],
            env: vec!["PATH=/bin".into(), "X=1".into()],
            working_dir: "/w".into(),
            user: "1000:100".into(),
            ..Default::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image();
        let c = strings(&["sh", "-c"]);
        let a = strings(&["echo hi"]);
        let s = |c: Option<&[String]>, a: Option<&[String]>| {
            ContainerSpec::from_image(&img, c, a, &[])
                .expect("spec")
                .args
        };
        assert_eq!(s(None, None), strings(&["/entry", "a", "b"]));
        assert_eq!(s(Some(&c), None), strings(&["sh", "-c"]));
        assert_eq!(s(Some(&c), Some(&a)), strings(&["sh", "-c", "echo hi"]));
        assert_eq!(s(None, Some(&a)), strings(&["/entry", "echo hi"]));
    }

    #[test]
    fn env_overrides_image_and_keeps_path() {
        let spec = ContainerSpec::from_image(
            &image(),
            None,
            None,
            &[("X".into(), "2".into()), ("Y".into(), "3".into())],
        )
        .expect("spec");
        assert_eq!(spec.env, strings(&["PATH=/bin", "X=2", "Y=3"]));
        let bare =
            ContainerSpec::from_image(&ImageConfig::default(), None, None, &[]).expect("spec");
        assert_eq!(bare.env, vec![DEFAULT_PATH.to_string()]);
        assert_eq!(bare.cwd, "/");
    }

    #[test]
    fn users_parse() {
        assert_eq!(parse_user("").expect("empty").uid, 0);
        let u = parse_user("1000:100").expect("numeric");
        assert_eq!((u.uid, u.gid), (1000, 100));
        assert!(parse_user("nobody").is_err());
    }

    #[test]
    fn oci_spec_has_namespaces_mounts_and_defaults() {
        let spec = ContainerSpec {
            args: strings(&["sh"]),
            network: Namespace::Path("/run/k3rs/netns/pod1".into()),
            pid: Namespace::Host,
            cgroups_path: "/k3rs/pod1/c1".into(),
            hostname: Some("pod1".into()),
            mounts: vec![Mount::bind("/host/shm", "/dev/shm", false)],
            ..Default::default()
        }
        .to_oci();
        let ns = spec["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(ns.contains(&json!({"type": "network", "path": "/run/k3rs/netns/pod1"})));
        assert!(ns.contains(&json!({"type": "mount"})));
        assert!(!ns.iter().any(|n| n["type"] == "pid"));
        assert_eq!(spec["linux"]["cgroupsPath"], "/k3rs/pod1/c1");
        assert_eq!(spec["root"]["path"], "rootfs");
        assert_eq!(spec["hostname"], "pod1");
        let mounts = spec["mounts"].as_array().expect("mounts");
        let shm: Vec<&Value> = mounts
            .iter()
            .filter(|m| m["destination"] == "/dev/shm")
            .collect();
        assert_eq!(shm.len(), 1);
        assert_eq!(shm[0]["type"], "bind");
        for dest in ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys"] {
            assert!(mounts.iter().any(|m| m["destination"] == dest), "{dest}");
        }
        let caps = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("caps");
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        assert_eq!(spec["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
    }

    #[test]
    fn oci_spec_carries_limits_privileges_and_sysctls() {
        let spec = ContainerSpec {
            capabilities: vec!["CAP_NET_ADMIN".into()],
            no_new_privileges: false,
            resources: Resources {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(1 << 26),
            },
            oom_score_adj: Some(500),
            sysctls: BTreeMap::from([("net.core.somaxconn".to_string(), "1024".to_string())]),
            rootfs_propagation: Some("rslave".into()),
            ..Default::default()
        }
        .to_oci();
        assert_eq!(
            spec["process"]["capabilities"]["bounding"],
            json!(["CAP_NET_ADMIN"])
        );
        assert_eq!(spec["process"]["noNewPrivileges"], false);
        assert_eq!(spec["process"]["oomScoreAdj"], 500);
        let r = &spec["linux"]["resources"];
        assert_eq!(
            r["cpu"],
            json!({"shares": 512, "quota": 50_000, "period": 100_000})
        );
        assert_eq!(r["memory"]["limit"], 1 << 26);
        assert_eq!(r["devices"], json!([{"allow": false, "access": "rwm"}]));
        assert_eq!(spec["linux"]["sysctl"]["net.core.somaxconn"], "1024");
        assert_eq!(spec["linux"]["rootfsPropagation"], "rslave");
        // Existing callers keep their defaults.
        let plain = ContainerSpec::default().to_oci();
        assert_eq!(plain["process"]["noNewPrivileges"], true);
        assert!(plain["linux"]["resources"].get("cpu").is_none());
        assert!(plain["linux"].get("devices").is_none());
    }
}
