//! Image pull against a real registry: Debian's `docker-registry` (distribution 2.8)
//! on a loopback port with storage in a temp dir, filled by a small pusher in this
//! test (registry HTTP API v2) with the busybox test image; our own supervised
//! containerd on temp dirs. Pulls through a registries.yaml mirror and straight from
//! the registry, resolves a multi-platform index, reports a missing image and a
//! refused login like containerd does, authenticates with an imagePullSecret, trusts
//! an HTTPS registry through registries.yaml (ca_file, insecure_skip_verify), runs a
//! container from the pulled image, and imports tarballs dropped into the images dir.
//!
//! Needs root, containerd, runc, busybox-static, docker-registry and apache2-utils
//! (`apt-get install containerd runc busybox-static docker-registry apache2-utils`);
//! every test fails loudly, never skips, when one is missing.

#[path = "common/containerd.rs"]
mod containerd;
#[path = "common/images.rs"]
mod images;
#[path = "common/registry.rs"]
mod registry;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use containerd::TempContainerd;
use k3rs::agent::containerd::Client;
use k3rs::agent::images::{self as agent_images, PullOptions, Registries, RegistryCredential};
use k3rs::agent::logger::LoggerConfig;
use k3rs::agent::runtime::{ContainerSpec, Namespace, NewContainer};
use registry::{free_port, Registry};
use serde_json::json;

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn require_environment() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "agent_pull tests need root (they run containerd and mount snapshots): run them as \
             root, e.g. `sudo -E cargo test --test agent_pull`; CI (.ci/run) runs them as root"
        );
    }
    for (bin, package) in [
        ("containerd", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("runc", "runc"),
        ("docker-registry", "docker-registry"),
        ("htpasswd", "apache2-utils"),
    ] {
        assert!(
            on_path(bin),
            "{bin} is not on PATH: install it with `apt-get install {package}` (.ci/run does)"
        );
    }
    images::busybox();
}

/// Our containerd on temp dirs (the runc shim runs this binary as the CRI logger).
struct Node {
    containerd: TempContainerd,
}

impl Node {
    async fn start() -> Node {
        require_environment();
        Node {
            containerd: TempContainerd::start().await,
        }
    }

    fn client(&self) -> Client {
        self.containerd.client()
    }

    async fn stop(mut self) {
        self.containerd.stop().await;
    }
}

fn registries(yaml: &str) -> Registries {
    Registries::parse(yaml).expect("registries.yaml")
}

async fn image_names(client: &Client) -> Vec<String> {
    agent_images::list_images(client)
        .await
        .expect("list images")
        .into_iter()
        .map(|i| i.name)
        .collect()
}

/// Runs `echo <word>` from `image` and returns the container's log.
async fn run_echo(node: &Node, image: &str, id: &str, word: &str) -> String {
    let runtime = node.containerd.runtime();
    let config = agent_images::ensure_unpacked(&node.client(), image)
        .await
        .expect("image config");
    let args = vec!["echo".to_string(), word.to_string()];
    let mut spec = ContainerSpec::from_image(&config, Some(&args), None, &[]).expect("spec");
    spec.network = Namespace::New;
    spec.cgroups_path = format!("/k3rs-test-pull-{}-{id}", std::process::id());
    runtime
        .create(&NewContainer {
            id: id.to_string(),
            image: image.to_string(),
            spec,
            labels: HashMap::new(),
        })
        .await
        .expect("create container from the pulled image");
    let log = node.containerd.pod_logs_dir().join(id).join("0.log");
    runtime
        .start(id, &LoggerConfig::new(&log))
        .await
        .expect("start");
    let exit = tokio::time::timeout(Duration::from_secs(30), runtime.wait(id))
        .await
        .expect("container did not exit in 30s")
        .expect("wait");
    assert_eq!(exit.code, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(word) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    runtime.remove(id).await.expect("remove");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_through_a_mirror_and_straight_from_the_registry() {
    let node = Node::start().await;
    let client = node.client();
    let registry = Registry::start(None);
    let host = registry.host();
    let (manifest, config_digest) = tokio::task::block_in_place(|| {
        registry.push_image("library/busybox", "v1", images::host_arch())
    });
    let (index_digest, native_config) =
        tokio::task::block_in_place(|| registry.push_multi_arch("multi", "v1"));

    // docker.io mirrored to our registry; the default endpoint (Docker Hub) is
    // never reached because the mirror has the image.
    let mirror = registries(&format!(
        "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{host}\"\n"
    ));
    let opts = PullOptions {
        credentials: &[],
        registries: &mirror,
    };
    assert!(!agent_images::image_present(&client, "busybox:v1")
        .await
        .expect("present?"));
    let pulled = agent_images::pull(&client, "busybox:v1", &opts)
        .await
        .unwrap_or_else(|e| panic!("pull through mirror: {e}"));
    assert_eq!(pulled.name, "docker.io/library/busybox:v1");
    assert_eq!(pulled.digest, images::sha256(&manifest));
    assert_eq!(pulled.config_digest, config_digest);
    assert!(agent_images::image_present(&client, "busybox:v1")
        .await
        .expect("present?"));
    assert_eq!(
        image_names(&client).await,
        vec!["docker.io/library/busybox:v1"]
    );
    let log = run_echo(&node, "busybox:v1", "pulled", "hello-from-pull").await;
    assert!(log.contains("stdout F hello-from-pull"), "{log}");

    // Straight from a localhost registry (plain http by default), and through an
    // explicit http:// endpoint; the second pull finds every blob present.
    let direct = format!("{host}/library/busybox:v1");
    let pulled = agent_images::pull(
        &client,
        &direct,
        &PullOptions {
            credentials: &[],
            registries: &Registries::default(),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("pull from localhost registry: {e}"));
    assert_eq!(pulled.name, direct);
    assert_eq!(pulled.config_digest, config_digest);
    let explicit = registries(&format!(
        "mirrors:\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\n"
    ));
    let opts = PullOptions {
        credentials: &[],
        registries: &explicit,
    };

    // A multi-platform index resolves to this node's platform (the other one is
    // listed first).
    let multi = format!("{host}/multi:v1");
    let pulled = agent_images::pull(&client, &multi, &opts)
        .await
        .unwrap_or_else(|e| panic!("pull multi-arch index: {e}"));
    assert_eq!(pulled.digest, index_digest, "the record names the index");
    assert_eq!(pulled.config_digest, native_config);
    let config = agent_images::image_config(&client, &multi)
        .await
        .expect("image config of the index");
    assert_eq!(config.id, native_config);
    let log = run_echo(&node, &multi, "multi", "multi-ok").await;
    assert!(log.contains("stdout F multi-ok"), "{log}");

    // A missing image: not found, in containerd's words.
    let missing = format!("{host}/missing:latest");
    let err = agent_images::pull(&client, &format!("{host}/missing"), &opts)
        .await
        .expect_err("missing image");
    assert!(err.is_not_found(), "{err}");
    assert!(!err.is_unauthorized());
    assert_eq!(
        err.to_string(),
        format!(
            "failed to pull and unpack image \"{missing}\": failed to resolve reference \
             \"{missing}\": {missing}: not found"
        )
    );
    // A missing tag of an existing repository, and an invalid name.
    let err = agent_images::pull(&client, &format!("{host}/multi:nope"), &opts)
        .await
        .expect_err("missing tag");
    assert!(err.is_not_found(), "{err}");
    let err = agent_images::pull(&client, "Not/Valid", &opts)
        .await
        .expect_err("invalid");
    assert!(err.is_invalid_reference() && !err.is_not_found(), "{err}");
    // Nothing listens on the mirror: the registry itself (default endpoint, last)
    // still serves the pull.
    let dead = registries(&format!(
        "mirrors:\n  \"{host}\":\n    endpoint: [\"http://127.0.0.1:{}\"]\n",
        free_port()
    ));
    let pulled = agent_images::pull(
        &client,
        &multi,
        &PullOptions {
            credentials: &[],
            registries: &dead,
        },
    )
    .await;
    assert!(
        pulled.is_ok(),
        "the default endpoint is tried last: {pulled:?}"
    );

    let names = image_names(&client).await;
    assert_eq!(
        names,
        vec![
            direct.clone(),
            multi.clone(),
            "docker.io/library/busybox:v1".to_string()
        ]
    );
    drop(registry);
    node.stop().await;
}

fn docker_config_secret(
    host: &str,
    user: &str,
    password: &str,
) -> k8s_openapi::api::core::v1::Secret {
    let config = json!({"auths": {host: {"username": user, "password": password}}});
    k8s_openapi::api::core::v1::Secret {
        type_: Some("kubernetes.io/dockerconfigjson".to_string()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            k8s_openapi::ByteString(serde_json::to_vec(&config).expect("json")),
        )])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_uses_pull_secrets_and_registries_yaml() {
    let node = Node::start().await;
    let client = node.client();
    let registry = Registry::start(Some(("puller", "s3cret-pw")));
    let host = registry.host();
    let (_, config_digest) = tokio::task::block_in_place(|| {
        registry.push_image("private/app", "v1", images::host_arch())
    });
    let image = format!("{host}/private/app:v1");
    let none = Registries::default();

    let err = agent_images::pull(
        &client,
        &image,
        &PullOptions {
            credentials: &[],
            registries: &none,
        },
    )
    .await
    .expect_err("anonymous pull of a private image");
    assert!(err.is_unauthorized(), "{err}");
    assert!(!err.is_not_found());
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": "
        )) && text.contains("401 Unauthorized"),
        "{text}"
    );

    let wrong: Vec<RegistryCredential> =
        agent_images::credentials_from_secrets(&[docker_config_secret(&host, "puller", "wrong")]);
    let err = agent_images::pull(
        &client,
        &image,
        &PullOptions {
            credentials: &wrong,
            registries: &none,
        },
    )
    .await
    .expect_err("wrong password");
    assert!(err.is_unauthorized(), "{err}");
    assert!(!text.contains("wrong") && !err.to_string().contains("s3cret"));

    // The secret of another registry does not apply; the right one works.
    let creds = agent_images::credentials_from_secrets(&[
        docker_config_secret("other.example.com", "x", "y"),
        docker_config_secret(&format!("http://{host}/v2/"), "puller", "s3cret-pw"),
    ]);
    let pulled = agent_images::pull(
        &client,
        &image,
        &PullOptions {
            credentials: &creds,
            registries: &none,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("pull with imagePullSecret: {e}"));
    assert_eq!(pulled.config_digest, config_digest);
    let log = run_echo(&node, &image, "private", "private-ok").await;
    assert!(log.contains("stdout F private-ok"), "{log}");

    // registries.yaml auth for the host serves pods without secrets.
    agent_images::delete_image(&client, &image)
        .await
        .expect("delete");
    let configured = registries(&format!(
        "configs:\n  \"{host}\":\n    auth:\n      username: puller\n      password: s3cret-pw\n"
    ));
    agent_images::pull(
        &client,
        &image,
        &PullOptions {
            credentials: &[],
            registries: &configured,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("pull with registries.yaml auth: {e}"));
    assert_eq!(image_names(&client).await, vec![image.clone()]);
    drop(registry);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_over_https_with_the_configured_trust() {
    let node = Node::start().await;
    let client = node.client();
    let mut registry = Registry::start(None);
    let host = registry.host();
    let (_, config_digest) =
        tokio::task::block_in_place(|| registry.push_image("tls/app", "v1", images::host_arch()));
    let ca = tokio::task::block_in_place(|| registry.restart_with_tls());
    let image = format!("{host}/tls/app:v1");
    let pull_with = |yaml: String| {
        let client = client.clone();
        let image = image.clone();
        async move {
            let r = registries(&yaml);
            agent_images::pull(
                &client,
                &image,
                &PullOptions {
                    credentials: &[],
                    registries: &r,
                },
            )
            .await
        }
    };
    let mirror = format!("mirrors:\n  \"{host}\":\n    endpoint: [\"https://{host}\"]\n");

    // The system bundle does not know our CA.
    let err = pull_with(mirror.clone()).await.expect_err("untrusted CA");
    assert!(!err.is_not_found() && !err.is_unauthorized(), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");

    let trusted = format!(
        "{mirror}configs:\n  \"{host}\":\n    tls:\n      ca_file: {}\n",
        ca.display()
    );
    let pulled = pull_with(trusted)
        .await
        .unwrap_or_else(|e| panic!("pull with ca_file: {e}"));
    assert_eq!(pulled.config_digest, config_digest);

    agent_images::delete_image(&client, &image)
        .await
        .expect("delete");
    let insecure =
        format!("{mirror}configs:\n  \"{host}\":\n    tls:\n      insecure_skip_verify: true\n");
    pull_with(insecure)
        .await
        .unwrap_or_else(|e| panic!("pull with insecure_skip_verify: {e}"));
    assert_eq!(image_names(&client).await, vec![image.clone()]);
    drop(registry);
    node.stop().await;
}

async fn wait_for_image(client: &Client, name: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if image_names(client).await.iter().any(|n| n == name) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} was not imported from {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_images_dir_imports_tarballs_at_start_and_when_dropped_in() {
    let node = Node::start().await;
    let client = node.client();
    let dir = tempfile::tempdir().expect("images dir");
    images::write_oci_archive(&dir.path().join("at-start.tar"), "busybox:at-start", false);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(agent_images::watch::watch_import_dir_every(
        client.clone(),
        dir.path().to_path_buf(),
        Duration::from_millis(200),
        rx,
    ));
    wait_for_image(&client, "docker.io/library/busybox:at-start", dir.path()).await;

    // Dropped in later: written elsewhere and renamed in, as an installer would.
    let staging =
        tempfile::tempdir_in(dir.path().parent().unwrap_or(Path::new("/tmp"))).expect("staging");
    images::write_docker_archive(&staging.path().join("x.tar.gz"), "busybox:dropped", true);
    std::fs::rename(
        staging.path().join("x.tar.gz"),
        dir.path().join("dropped.tar.gz"),
    )
    .expect("move archive in");
    wait_for_image(&client, "docker.io/library/busybox:dropped", dir.path()).await;

    // zstd-compressed (k3s's airgap bundles are .tar.zst).
    let plain = staging.path().join("z.tar");
    images::write_oci_archive(&plain, "busybox:zstd", false);
    let data = std::fs::read(&plain).expect("read tar");
    let compressed = ruzstd::encoding::compress_to_vec(
        data.as_slice(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    std::fs::write(staging.path().join("z.tar.zst"), compressed).expect("write zst");
    std::fs::rename(
        staging.path().join("z.tar.zst"),
        dir.path().join("z.tar.zst"),
    )
    .expect("move zst in");
    wait_for_image(&client, "docker.io/library/busybox:zstd", dir.path()).await;
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    tx.send(true).expect("signal shutdown");
    tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watcher stops on shutdown")
        .expect("watcher task");
    node.stop().await;
}
