//! Tests of `prepare`, `teardown` and `references` on real directories (and, as
//! root, real tmpfs mounts).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapProjection, ConfigMapVolumeSource,
    DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HostPathVolumeSource, KeyToPath, ObjectFieldSelector, PodSpec,
    ProjectedVolumeSource, SecretKeySelector, SecretProjection, SecretVolumeSource,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::ByteString;

use super::*;

/// Tears the pod dir down even when an assertion fails (tmpfs mounts must not leak).
struct PodDir(tempfile::TempDir);

impl PodDir {
    fn new() -> PodDir {
        PodDir(tempfile::tempdir().expect("tempdir"))
    }
    fn path(&self) -> PathBuf {
        self.0.path().join("pods").join("uid-1")
    }
}

impl Drop for PodDir {
    fn drop(&mut self) {
        let _ = teardown(&self.path());
    }
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test mounts tmpfs and needs root: run `sudo -E cargo test --lib agent::pods`");
    }
}

fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

fn pod_with(volumes: Vec<Volume>) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("web".into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some("uid-1".into());
    p.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
    p.spec = Some(PodSpec {
        volumes: Some(volumes),
        containers: vec![Container {
            name: "c".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    p
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    s
}

fn cm_volume(name: &str, cm: &str) -> Volume {
    Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: cm.into(),
            ..Default::default()
        }),
        ..volume(name)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").mode() & 0o7777
}

#[test]
fn references_cover_volumes_projections_and_env() {
    let mut pod = pod_with(vec![
        cm_volume("a", "cm-vol"),
        Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some("sec-vol".into()),
                ..Default::default()
            }),
            ..volume("b")
        },
        Volume {
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "cm-proj".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        secret: Some(SecretProjection {
                            name: "sec-proj".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                default_mode: None,
            }),
            ..volume("c")
        },
    ]);
    let spec = pod.spec.as_mut().unwrap();
    spec.containers[0].env = Some(vec![
        EnvVar {
            name: "A".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "cm-env".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            value: None,
        },
        EnvVar {
            name: "B".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "sec-env".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            value: None,
        },
    ]);
    spec.init_containers = Some(vec![Container {
        name: "init".into(),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "cm-init".into(),
                optional: None,
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }]);
    let r = references(&pod);
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        r.config_maps,
        set(&["cm-env", "cm-init", "cm-proj", "cm-vol"])
    );
    assert_eq!(r.secrets, set(&["sec-env", "sec-proj", "sec-vol"]));
}

#[test]
fn config_map_volume_updates_atomically_and_skips_unchanged() {
    let dir = PodDir::new();
    let pod = pod_with(vec![cm_volume("config", "app")]);
    let mut objects = Objects::default();
    objects.config_maps.insert(
        "app".into(),
        config_map("app", &[("a.conf", "one"), ("b", "two")]),
    );
    let node = test_node();
    let v = prepare(&dir.path(), &pod, &objects, &node).expect("prepare");
    let vol = &v.by_name["config"];
    assert_eq!(
        *vol,
        dir.path().join("volumes/kubernetes.io~configmap/config")
    );
    assert_eq!(read(&vol.join("a.conf")), "one");
    assert_eq!(mode(&vol.join("a.conf")), 0o644);
    assert_eq!(mode(vol), 0o777);
    let first = std::fs::read_link(vol.join(DATA_DIR)).expect("..data");

    // Nothing changed: same timestamped directory.
    prepare(&dir.path(), &pod, &objects, &node).expect("prepare again");
    assert_eq!(std::fs::read_link(vol.join(DATA_DIR)).unwrap(), first);

    // An update reaches the same path; a removed key disappears.
    objects
        .config_maps
        .insert("app".into(), config_map("app", &[("a.conf", "uno")]));
    prepare(&dir.path(), &pod, &objects, &node).expect("prepare update");
    assert_eq!(read(&vol.join("a.conf")), "uno");
    assert!(!vol.join("b").exists());
    assert_ne!(std::fs::read_link(vol.join(DATA_DIR)).unwrap(), first);
}

#[test]
fn items_modes_and_optional() {
    let dir = PodDir::new();
    let mut pod = pod_with(vec![Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: "app".into(),
            default_mode: Some(0o600),
            items: Some(vec![
                KeyToPath {
                    key: "a".into(),
                    path: "sub/renamed".into(),
                    mode: Some(0o400),
                },
                KeyToPath {
                    key: "b".into(),
                    path: "b".into(),
                    mode: None,
                },
            ]),
            optional: None,
        }),
        ..volume("config")
    }]);
    let mut objects = Objects::default();
    objects.config_maps.insert(
        "app".into(),
        config_map("app", &[("a", "1"), ("b", "2"), ("c", "3")]),
    );
    let node = test_node();
    let v = prepare(&dir.path(), &pod, &objects, &node).expect("prepare");
    let vol = &v.by_name["config"];
    assert_eq!(read(&vol.join("sub/renamed")), "1");
    assert_eq!(mode(&vol.join("sub/renamed")), 0o400);
    assert_eq!(mode(&vol.join("b")), 0o600);
    assert!(!vol.join("c").exists() && !vol.join("a").exists());

    // A missing key is an error with upstream's wording...
    objects
        .config_maps
        .insert("app".into(), config_map("app", &[("a", "1")]));
    let err = prepare(&dir.path(), &pod, &objects, &node).unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"config\" : configmap references non-existent config key: b"
    );
    // ...unless the source is optional.
    let spec = pod.spec.as_mut().unwrap();
    spec.volumes.as_mut().unwrap()[0]
        .config_map
        .as_mut()
        .unwrap()
        .optional = Some(true);
    let v = prepare(&dir.path(), &pod, &objects, &node).expect("optional");
    assert!(!v.by_name["config"].join("b").exists());

    // A missing optional ConfigMap is an empty volume.
    objects.config_maps.clear();
    let v = prepare(&dir.path(), &pod, &objects, &node).expect("optional missing");
    assert!(v.by_name["config"].join(DATA_DIR).exists());
    assert!(!v.by_name["config"].join("sub").exists());
}

#[test]
fn missing_objects_use_upstream_wording() {
    let dir = PodDir::new();
    let node = test_node();
    let err = prepare(
        &dir.path(),
        &pod_with(vec![cm_volume("config", "nope")]),
        &Objects::default(),
        &node,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"config\" : configmap \"nope\" not found"
    );
    let sec = Volume {
        secret: Some(SecretVolumeSource {
            secret_name: Some("creds".into()),
            ..Default::default()
        }),
        ..volume("s")
    };
    let err = prepare(
        &dir.path(),
        &pod_with(vec![sec]),
        &Objects::default(),
        &node,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"s\" : secret \"creds\" not found"
    );
    let pvc = Volume {
        persistent_volume_claim: Some(Default::default()),
        ..volume("data")
    };
    let err = prepare(
        &dir.path(),
        &pod_with(vec![pvc]),
        &Objects::default(),
        &node,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("persistentvolumeclaim \"\" is not bound to a volume yet"),
        "{err}"
    );
}

#[test]
fn secret_volume_is_tmpfs_with_default_mode() {
    require_root();
    let dir = PodDir::new();
    let pod = pod_with(vec![Volume {
        secret: Some(SecretVolumeSource {
            secret_name: Some("creds".into()),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..volume("creds")
    }]);
    let mut objects = Objects::default();
    objects
        .secrets
        .insert("creds".into(), secret("creds", &[("password", "hunter2")]));
    let v = prepare(&dir.path(), &pod, &objects, &test_node()).expect("prepare");
    let vol = &v.by_name["creds"];
    assert_eq!(read(&vol.join("password")), "hunter2");
    assert_eq!(mode(&vol.join("password")), 0o400);
    assert!(
        host::is_mount_point(vol).unwrap(),
        "secret volume is not a tmpfs mount"
    );
    teardown(&dir.path()).expect("teardown");
    assert!(!dir.path().exists());
}

#[test]
fn downward_api_and_projected_volumes() {
    require_root();
    let dir = PodDir::new();
    let field = |path: &str, field: &str| DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field.into(),
            api_version: None,
        }),
        ..Default::default()
    };
    let mut pod = pod_with(vec![
        Volume {
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    field("labels", "metadata.labels"),
                    field("name", "metadata.name"),
                ]),
                default_mode: None,
            }),
            ..volume("podinfo")
        },
        Volume {
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: Some(vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "kube-root-ca.crt".into(),
                            items: Some(vec![KeyToPath {
                                key: "ca.crt".into(),
                                path: "ca.crt".into(),
                                mode: None,
                            }]),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        downward_api: Some(k8s_openapi::api::core::v1::DownwardAPIProjection {
                            items: Some(vec![field("namespace", "metadata.namespace")]),
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        service_account_token: Some(
                            k8s_openapi::api::core::v1::ServiceAccountTokenProjection {
                                path: "token".into(),
                                expiration_seconds: Some(3607),
                                audience: None,
                            },
                        ),
                        ..Default::default()
                    },
                ]),
            }),
            ..volume("kube-api-access")
        },
    ]);
    let mut objects = Objects::default();
    objects.config_maps.insert(
        "kube-root-ca.crt".into(),
        config_map("kube-root-ca.crt", &[("ca.crt", "PEM")]),
    );
    let node = test_node();
    // Without an issued token the volume cannot be set up.
    let err = prepare(&dir.path(), &pod, &objects, &node).unwrap_err();
    assert!(err.to_string().contains("token"), "{err}");
    objects.service_account_tokens.insert(
        super::satoken::TokenKey {
            audience: String::new(),
            expiration_seconds: 3607,
        },
        super::satoken::IssuedToken {
            token: "JWT".into(),
            issued_at: 0,
            expires_at: 3607,
        },
    );
    let v = prepare(&dir.path(), &pod, &objects, &node).expect("prepare");
    let info = &v.by_name["podinfo"];
    assert_eq!(read(&info.join("labels")), "app=\"web\"");
    assert_eq!(read(&info.join("name")), "web");
    let proj = &v.by_name["kube-api-access"];
    assert_eq!(read(&proj.join("ca.crt")), "PEM");
    assert_eq!(read(&proj.join("namespace")), "default");
    assert_eq!(mode(&proj.join("ca.crt")), 0o440);
    assert_eq!(read(&proj.join("token")), "JWT");

    // A label change reaches the file on the next prepare.
    pod.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "front".into());
    prepare(&dir.path(), &pod, &objects, &node).expect("prepare again");
    assert_eq!(read(&info.join("labels")), "app=\"web\"\ntier=\"front\"");
}

#[test]
fn empty_dir_and_host_path() {
    let dir = PodDir::new();
    let host = tempfile::tempdir().expect("tempdir");
    let created = host.path().join("data");
    let mut pod = pod_with(vec![
        Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..volume("scratch")
        },
        Volume {
            host_path: Some(HostPathVolumeSource {
                path: created.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..volume("data")
        },
        Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: "app".into(),
                default_mode: Some(0o600),
                ..Default::default()
            }),
            ..volume("config")
        },
    ]);
    let mut objects = Objects::default();
    objects
        .config_maps
        .insert("app".into(), config_map("app", &[("k", "v")]));
    pod.spec.as_mut().unwrap().security_context =
        Some(k8s_openapi::api::core::v1::PodSecurityContext {
            fs_group: Some(2000),
            ..Default::default()
        });
    let v = prepare(&dir.path(), &pod, &objects, &test_node()).expect("prepare");
    let scratch = &v.by_name["scratch"];
    // fsGroup: content files group-owned and group-readable.
    let key = v.by_name["config"].join("k");
    assert_eq!(std::fs::metadata(&key).unwrap().gid(), 2000);
    assert_eq!(mode(&key), 0o640);
    assert_eq!(
        *scratch,
        dir.path().join("volumes/kubernetes.io~empty-dir/scratch")
    );
    assert_eq!(mode(scratch), 0o2777);
    assert_eq!(std::fs::metadata(scratch).unwrap().gid(), 2000);
    assert_eq!(v.by_name["data"], created);
    assert!(created.is_dir());
    // Files a container wrote survive a refresh.
    std::fs::write(scratch.join("keep"), "x").unwrap();
    prepare(&dir.path(), &pod, &objects, &test_node()).expect("prepare again");
    assert_eq!(read(&scratch.join("keep")), "x");
}

#[test]
fn memory_empty_dir_mounts_tmpfs_and_teardown_unmounts() {
    require_root();
    let dir = PodDir::new();
    let pod = pod_with(vec![Volume {
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("16Mi".into())),
        }),
        ..volume("cache")
    }]);
    let v = prepare(&dir.path(), &pod, &Objects::default(), &test_node()).expect("prepare");
    let cache = v.by_name["cache"].clone();
    assert!(host::is_mount_point(&cache).unwrap(), "not mounted");
    let mountinfo = read(Path::new("/proc/self/mountinfo"));
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(cache.to_str().unwrap()))
        .expect("mount in mountinfo");
    assert!(line.contains(" - tmpfs "), "{line}");
    assert!(line.contains("size=16384k"), "{line}");
    // Idempotent: no second mount on top.
    prepare(&dir.path(), &pod, &Objects::default(), &test_node()).expect("prepare again");
    let again = read(Path::new("/proc/self/mountinfo"));
    let count = again
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(cache.to_str().unwrap()))
        .count();
    assert_eq!(count, 1);
    std::fs::write(cache.join("f"), "in memory").unwrap();

    teardown(&dir.path()).expect("teardown");
    assert!(!dir.path().exists());
    assert!(host::mounts_under(&dir.0.path().canonicalize().unwrap())
        .unwrap()
        .is_empty());
    // Again, as after a crash: nothing to do.
    teardown(&dir.path()).expect("teardown twice");
}

#[test]
fn pod_files_are_written() {
    let dir = PodDir::new();
    let resolv = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(resolv.path(), "nameserver 1.1.1.1\nsearch example.com\n").unwrap();
    let mut node = test_node();
    node.host_resolv_conf = resolv.path().to_path_buf();
    let v = prepare(&dir.path(), &pod_with(vec![]), &Objects::default(), &node).expect("prepare");
    assert_eq!(read(&v.etc_hostname), "web\n");
    assert!(read(&v.etc_hosts).contains("10.42.0.7\tweb\n"));
    assert_eq!(
        read(&v.resolv_conf),
        "search default.svc.cluster.local svc.cluster.local cluster.local example.com\n\
         nameserver 10.43.0.10\noptions ndots:5\n"
    );
    // Rewritten in place (a container's bind mount keeps seeing the file).
    let inode = std::fs::metadata(&v.resolv_conf).unwrap().ino();
    std::fs::write(resolv.path(), "nameserver 1.1.1.1\nsearch other.org\n").unwrap();
    prepare(&dir.path(), &pod_with(vec![]), &Objects::default(), &node).expect("prepare");
    assert!(read(&v.resolv_conf).contains("other.org"));
    assert_eq!(std::fs::metadata(&v.resolv_conf).unwrap().ino(), inode);
}
