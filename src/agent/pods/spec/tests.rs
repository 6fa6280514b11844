//! Tests of `container_spec`: env and `$(VAR)` expansion, user precedence,
//! capabilities, cgroup resources, mounts and subPath, namespaces.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar,
    EnvVarSource, ObjectFieldSelector, PodSecurityContext, PodSpec, ResourceFieldSelector,
    ResourceRequirements, Secret, SecretEnvSource, SecretKeySelector, SecurityContext, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::ByteString;

use super::security::{milli_cpu_to_quota, milli_cpu_to_shares};
use super::*;
use crate::agent::pods::volumes::test_node;

struct Fixture {
    dir: tempfile::TempDir,
    volumes: PodVolumes,
    objects: Objects,
    node: NodeFacts,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("volumes/data");
        std::fs::create_dir_all(&data).unwrap();
        let cm = ConfigMap {
            data: Some(BTreeMap::from([
                ("LEVEL".to_string(), "debug".to_string()),
                ("bad key".to_string(), "x".to_string()),
            ])),
            ..Default::default()
        };
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "TOKEN".to_string(),
                ByteString(b"s3cret".to_vec()),
            )])),
            ..Default::default()
        };
        Fixture {
            volumes: PodVolumes {
                by_name: HashMap::from([("data".to_string(), data)]),
                etc_hosts: dir.path().join("etc-hosts"),
                etc_hostname: dir.path().join("etc-hostname"),
                resolv_conf: dir.path().join("resolv.conf"),
            },
            objects: Objects {
                config_maps: HashMap::from([("app".to_string(), cm)]),
                secrets: HashMap::from([("creds".to_string(), secret)]),
                ..Default::default()
            },
            node: test_node(),
            dir,
        }
    }

    fn ctx(&self) -> SpecContext<'_> {
        SpecContext {
            network: Namespace::Path("/run/k3rs/netns/p1".into()),
            volumes: &self.volumes,
            objects: &self.objects,
            node: &self.node,
            cgroup_parent: "/k3rs/uid-1".into(),
        }
    }

    fn spec(&self, pod: &Pod, image: &ImageConfig) -> Result<ContainerSpec, ConfigError> {
        container_spec(
            pod,
            &pod.spec.as_ref().unwrap().containers[0],
            image,
            &self.ctx(),
        )
    }
}

fn pod(container: Container) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("web".into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some("uid-1".into());
    p.spec = Some(PodSpec {
        containers: vec![container],
        ..Default::default()
    });
    p
}

fn container() -> Container {
    Container {
        name: "app".into(),
        ..Default::default()
    }
}

fn image() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/bin/server".into()],
        cmd: vec!["--port=80".into()],
        env: vec!["PATH=/usr/bin".into(), "IMG=1".into()],
        user: "1000:1000".into(),
        ..Default::default()
    }
}

fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn from(name: &str, source: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(source),
    }
}

fn env_of(spec: &ContainerSpec, name: &str) -> Option<String> {
    spec.env
        .iter()
        .find_map(|e| e.strip_prefix(&format!("{name}=")).map(str::to_string))
}

fn q(s: &str) -> Quantity {
    Quantity(s.into())
}

#[test]
fn env_sources_and_expansion() {
    let f = Fixture::new();
    let mut c = container();
    c.env_from = Some(vec![
        EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "app".into(),
                optional: None,
            }),
            prefix: Some("CM_".into()),
            secret_ref: None,
        },
        EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "creds".into(),
                optional: None,
            }),
            ..Default::default()
        },
    ]);
    c.env = Some(vec![
        var("GREETING", "hello $(POD_NAME)"),
        from(
            "POD_NAME",
            EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..Default::default()
            },
        ),
        var("URL", "http://$(POD_NAME):$(PORT)/$$(POD_NAME)"),
        var("TOKEN_COPY", "$(TOKEN)"),
        from(
            "MEM",
            EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    resource: "limits.memory".into(),
                    divisor: Some(q("1Mi")),
                    container_name: None,
                }),
                ..Default::default()
            },
        ),
        from(
            "IP",
            EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    api_version: None,
                }),
                ..Default::default()
            },
        ),
        var("IMG", "pod"),
    ]);
    c.resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([("memory".to_string(), q("128Mi"))])),
        ..Default::default()
    });
    c.command = Some(vec![
        "/bin/echo".into(),
        "$(GREETING)".into(),
        "$$(URL)".into(),
    ]);
    let spec = f.spec(&pod(c), &image()).expect("spec");
    // A reference to a variable declared later stays as written.
    assert_eq!(env_of(&spec, "GREETING").unwrap(), "hello $(POD_NAME)");
    assert_eq!(env_of(&spec, "POD_NAME").unwrap(), "web");
    assert_eq!(
        env_of(&spec, "URL").unwrap(),
        "http://web:$(PORT)/$(POD_NAME)"
    );
    assert_eq!(env_of(&spec, "CM_LEVEL").unwrap(), "debug");
    assert!(env_of(&spec, "CM_bad key").is_none());
    assert_eq!(env_of(&spec, "TOKEN").unwrap(), "s3cret");
    assert_eq!(env_of(&spec, "TOKEN_COPY").unwrap(), "s3cret");
    assert_eq!(env_of(&spec, "MEM").unwrap(), "128");
    assert_eq!(env_of(&spec, "IP").unwrap(), "10.42.0.7");
    // Pod env over image env; image PATH kept.
    assert_eq!(env_of(&spec, "IMG").unwrap(), "pod");
    assert_eq!(env_of(&spec, "PATH").unwrap(), "/usr/bin");
    assert_eq!(spec.args, vec!["/bin/echo", "hello $(POD_NAME)", "$(URL)"]);
}

#[test]
fn missing_references_are_config_errors() {
    let f = Fixture::new();
    let with = |source: EnvVarSource| {
        let mut c = container();
        c.env = Some(vec![from("X", source)]);
        f.spec(&pod(c), &image())
    };
    let cm = |name: &str, key: &str, optional: Option<bool>| EnvVarSource {
        config_map_key_ref: Some(ConfigMapKeySelector {
            name: name.into(),
            key: key.into(),
            optional,
        }),
        ..Default::default()
    };
    let sec = |name: &str, key: &str| EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: name.into(),
            key: key.into(),
            optional: None,
        }),
        ..Default::default()
    };
    let msg = |r: Result<ContainerSpec, ConfigError>| r.unwrap_err().to_string();
    assert_eq!(
        msg(with(cm("nope", "k", None))),
        "configmap \"nope\" not found"
    );
    assert_eq!(
        msg(with(cm("app", "k", None))),
        "couldn't find key k in ConfigMap default/app"
    );
    assert_eq!(msg(with(sec("nope", "k"))), "secret \"nope\" not found");
    assert_eq!(
        msg(with(sec("creds", "k"))),
        "couldn't find key k in Secret default/creds"
    );
    // Optional: the variable is left out.
    let spec = with(cm("nope", "k", Some(true))).expect("optional");
    assert!(env_of(&spec, "X").is_none());
    let spec = with(cm("app", "k", Some(true))).expect("optional key");
    assert!(env_of(&spec, "X").is_none());
    let mut c = container();
    c.env_from = Some(vec![EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: "gone".into(),
            optional: None,
        }),
        ..Default::default()
    }]);
    assert_eq!(msg(f.spec(&pod(c), &image())), "secret \"gone\" not found");
}

#[test]
fn resources_become_cgroup_limits() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1), 2);
    assert_eq!(milli_cpu_to_shares(250), 256);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_quota(500), 50_000);
    assert_eq!(milli_cpu_to_quota(1), 1000);

    let f = Fixture::new();
    let mut c = container();
    c.resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".to_string(), q("250m"))])),
        limits: Some(BTreeMap::from([
            ("cpu".to_string(), q("1500m")),
            ("memory".to_string(), q("256Mi")),
        ])),
        ..Default::default()
    });
    let spec = f.spec(&pod(c), &image()).expect("spec");
    assert_eq!(spec.resources.cpu_shares, Some(256));
    assert_eq!(spec.resources.cpu_quota, Some(150_000));
    assert_eq!(spec.resources.cpu_period, Some(100_000));
    assert_eq!(spec.resources.memory_limit, Some(268_435_456));
    assert_eq!(spec.cgroups_path, "/k3rs/uid-1/app");
    let oci = spec.to_oci();
    assert_eq!(oci["linux"]["resources"]["cpu"]["shares"], 256);
    assert_eq!(oci["linux"]["resources"]["cpu"]["quota"], 150_000);
    assert_eq!(oci["linux"]["resources"]["memory"]["limit"], 268_435_456);

    // No resources: BestEffort, minimal shares, no quota.
    let spec = f.spec(&pod(container()), &image()).expect("spec");
    assert_eq!(spec.resources.cpu_shares, Some(2));
    assert_eq!(spec.resources.cpu_quota, None);
    assert_eq!(spec.oom_score_adj, Some(1000));
    // Guaranteed: limits only (requests default to them).
    let mut c = container();
    c.resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([
            ("cpu".to_string(), q("1")),
            ("memory".to_string(), q("64Mi")),
        ])),
        ..Default::default()
    });
    let spec = f.spec(&pod(c), &image()).expect("spec");
    assert_eq!(spec.resources.cpu_shares, Some(1024));
    assert_eq!(
        spec.oom_score_adj,
        Some(security::restrict_oom_score_adj(-997))
    );
}

#[test]
fn capabilities_and_privileges() {
    let f = Fixture::new();
    let with = |sc: SecurityContext| {
        let mut c = container();
        c.security_context = Some(sc);
        f.spec(&pod(c), &image()).expect("spec")
    };
    let caps = |add: &[&str], drop: &[&str]| SecurityContext {
        capabilities: Some(Capabilities {
            add: Some(add.iter().map(|s| s.to_string()).collect()),
            drop: Some(drop.iter().map(|s| s.to_string()).collect()),
        }),
        ..Default::default()
    };
    let s = with(caps(&["NET_ADMIN", "CAP_SYS_TIME"], &["chown", "CAP_KILL"]));
    assert!(s.capabilities.contains(&"CAP_NET_ADMIN".to_string()));
    assert!(s.capabilities.contains(&"CAP_SYS_TIME".to_string()));
    assert!(!s.capabilities.contains(&"CAP_CHOWN".to_string()));
    assert!(!s.capabilities.contains(&"CAP_KILL".to_string()));
    assert!(s.capabilities.contains(&"CAP_SETUID".to_string()));
    let s = with(caps(&["NET_BIND_SERVICE"], &["ALL"]));
    assert_eq!(s.capabilities, vec!["CAP_NET_BIND_SERVICE"]);
    let held = current_capabilities();
    let s = with(caps(&["ALL"], &["SYS_ADMIN"]));
    let expected: Vec<String> = held
        .iter()
        .filter(|c| *c != "CAP_SYS_ADMIN")
        .cloned()
        .collect();
    assert_eq!(s.capabilities, expected);

    // Defaults: no no_new_privs (Kubernetes), masked paths present.
    let s = f.spec(&pod(container()), &image()).expect("spec");
    assert!(!s.no_new_privileges && !s.privileged && !s.readonly_rootfs);
    assert!(s.to_oci()["linux"]["maskedPaths"].is_array());

    let s = with(SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        ..Default::default()
    });
    assert!(s.no_new_privileges && s.readonly_rootfs);
    let oci = s.to_oci();
    assert_eq!(oci["process"]["noNewPrivileges"], true);
    assert_eq!(oci["root"]["readonly"], true);

    let s = with(SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    assert_eq!(s.capabilities, held);
    assert!(s.devices.iter().any(|d| d.path == "/dev/null"));
    let oci = s.to_oci();
    assert!(oci["linux"].get("maskedPaths").is_none());
    assert!(oci["linux"].get("readonlyPaths").is_none());
    assert_eq!(oci["linux"]["resources"]["devices"][0]["allow"], true);
    let sys = oci["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/sys")
        .unwrap();
    assert!(!sys["options"].as_array().unwrap().contains(&"ro".into()));
}

use crate::agent::runtime::spec::current_capabilities;

#[test]
fn user_precedence() {
    let f = Fixture::new();
    let mut p = pod(container());
    // Image user.
    let s = f.spec(&p, &image()).expect("spec");
    assert_eq!((s.user.uid, s.user.gid), (1000, 1000));
    // Pod over image, container over pod; fsGroup then supplementalGroups.
    p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
        run_as_user: Some(2000),
        run_as_group: Some(3000),
        fs_group: Some(4000),
        supplemental_groups: Some(vec![5000, 4000]),
        ..Default::default()
    });
    let s = f.spec(&p, &image()).expect("spec");
    assert_eq!((s.user.uid, s.user.gid), (2000, 3000));
    assert_eq!(s.user.additional_gids, vec![4000, 5000]);
    p.spec.as_mut().unwrap().containers[0].security_context = Some(SecurityContext {
        run_as_user: Some(7),
        ..Default::default()
    });
    let s = f.spec(&p, &image()).expect("spec");
    assert_eq!((s.user.uid, s.user.gid), (7, 3000));
    // runAsUser makes a named image user irrelevant.
    let named = ImageConfig {
        user: "nginx".into(),
        ..image()
    };
    assert_eq!(f.spec(&p, &named).expect("spec").user.uid, 7);
    // Without it, a named user cannot be resolved yet.
    assert!(matches!(
        f.spec(&pod(container()), &named),
        Err(ConfigError::User(_))
    ));
    // runAsNonRoot against a root image.
    let mut c = container();
    c.security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    let root = ImageConfig {
        user: String::new(),
        ..image()
    };
    let err = f.spec(&pod(c), &root).unwrap_err().to_string();
    assert_eq!(
        err,
        "container has runAsNonRoot and image will run as root (pod: \"web_default(uid-1)\", container: app)"
    );
}

#[test]
fn mounts_pod_files_and_sub_paths() {
    let f = Fixture::new();
    let mut c = container();
    c.env = Some(vec![var("POD", "web-0")]);
    c.volume_mounts = Some(vec![
        VolumeMount {
            name: "data".into(),
            mount_path: "/var/lib/app/logs".into(),
            sub_path_expr: Some("logs/$(POD)".into()),
            ..Default::default()
        },
        VolumeMount {
            name: "data".into(),
            mount_path: "/var/lib/app".into(),
            read_only: Some(true),
            mount_propagation: Some("HostToContainer".into()),
            ..Default::default()
        },
    ]);
    let spec = f.spec(&pod(c), &image()).expect("spec");
    let data = &f.volumes.by_name["data"];
    let find = |dest: &str| {
        spec.mounts
            .iter()
            .find(|m| m.destination == dest)
            .unwrap_or_else(|| panic!("no mount at {dest}: {:?}", spec.mounts))
    };
    // Parent mounted before child, whatever the order in the pod.
    let pos = |dest: &str| {
        spec.mounts
            .iter()
            .position(|m| m.destination == dest)
            .unwrap()
    };
    assert!(pos("/var/lib/app") < pos("/var/lib/app/logs"));
    let sub = find("/var/lib/app/logs");
    assert_eq!(
        sub.source,
        data.canonicalize()
            .unwrap()
            .join("logs/web-0")
            .to_string_lossy()
    );
    assert!(data.join("logs/web-0").is_dir());
    assert_eq!(sub.options, vec!["rbind", "rprivate", "rw"]);
    assert_eq!(find("/var/lib/app").options, vec!["rbind", "rslave", "ro"]);
    assert_eq!(spec.rootfs_propagation.as_deref(), Some("rslave"));
    assert_eq!(
        find("/etc/hosts").source,
        f.volumes.etc_hosts.to_string_lossy()
    );
    assert_eq!(
        find("/etc/resolv.conf").source,
        f.volumes.resolv_conf.to_string_lossy()
    );
    find("/etc/hostname");
    let term = termination_message_path(f.dir.path(), "app");
    assert_eq!(find("/dev/termination-log").source, term.to_string_lossy());
    assert!(term.is_file());
    assert_eq!(spec.hostname.as_deref(), Some("web"));
    assert_eq!(spec.network, Namespace::Path("/run/k3rs/netns/p1".into()));
}

#[test]
fn bad_mounts_are_config_errors() {
    let f = Fixture::new();
    let with = |m: VolumeMount| {
        let mut c = container();
        c.volume_mounts = Some(vec![m]);
        f.spec(&pod(c), &image())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let mount = |name: &str, sub: &str| VolumeMount {
        name: name.into(),
        mount_path: "/x".into(),
        sub_path: Some(sub.into()),
        ..Default::default()
    };
    assert_eq!(
        with(mount("nope", "")),
        "cannot find volume \"nope\" to mount into container \"app\""
    );
    assert_eq!(
        with(mount("data", "/etc")),
        "error SubPath `/etc` must not be an absolute path"
    );
    assert_eq!(
        with(mount("data", "a/../../etc")),
        "unable to provision SubPath `a/../../etc`: must not contain '..'"
    );
    // A symlink inside the volume that leads out of it: refused, nothing created
    // behind it.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(elsewhere.path(), f.volumes.by_name["data"].join("escape")).unwrap();
    assert!(with(mount("data", "escape")).starts_with("subpath "));
    assert!(with(mount("data", "escape/new/dir")).starts_with("subpath "));
    assert!(!elsewhere.path().join("new").exists());
    assert_eq!(
        with(VolumeMount {
            sub_path_expr: Some("$(UNSET)/x".into()),
            ..mount("data", "")
        }),
        "missing value for UNSET"
    );
    assert_eq!(
        with(VolumeMount {
            mount_propagation: Some("Bidirectional".into()),
            ..mount("data", "")
        }),
        "Bidirectional mount propagation is available only to privileged containers"
    );
}

#[test]
fn host_network_pods_share_host_namespaces() {
    let f = Fixture::new();
    let mut p = pod(container());
    let spec = p.spec.as_mut().unwrap();
    spec.host_network = Some(true);
    spec.host_pid = Some(true);
    spec.containers[0].tty = Some(true);
    spec.containers[0].working_dir = Some("/srv".into());
    let s = f.spec(&p, &image()).expect("spec");
    assert_eq!(s.network, Namespace::Host);
    assert_eq!(s.uts, Namespace::Host);
    assert_eq!(s.pid, Namespace::Host);
    assert_eq!(s.ipc, Namespace::New);
    assert!(s.hostname.is_none());
    assert!(s.terminal);
    assert_eq!(s.cwd, "/srv");
    // Image entrypoint and cmd are kept without command/args.
    assert_eq!(s.args, vec!["/bin/server", "--port=80"]);
}
