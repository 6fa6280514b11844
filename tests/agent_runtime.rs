//! The agent's container runtime against real containerd and runc: our supervised
//! containerd on a temporary data dir and a private socket, image import from both
//! tarball formats, a pod network namespace, containers whose output lands as CRI
//! lines in their log files, signals, cleanup without leaks, and adoption of a running
//! container across a containerd restart.
//!
//! Needs root, containerd, runc and busybox-static (`apt-get install containerd runc
//! busybox-static`); every test fails loudly, never skips, when one is missing.
//!
//! The shim runs a CRI logger for each container: production runs the k3rs binary
//! for that; here this test binary plays the part (see tests/common/containerd.rs).

#[path = "common/containerd.rs"]
mod containerd;
#[path = "common/images.rs"]
mod images;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd::TempContainerd;
use containerd_client::services::v1::snapshots::ListSnapshotsRequest;
use containerd_client::services::v1::{ListContentRequest, ListTasksRequest};
use k3rs::agent::containerd::{Client, Containerd, SupervisorConfig};
use k3rs::agent::images as agent_images;
use k3rs::agent::logger::LoggerConfig;
use k3rs::agent::netns;
use k3rs::agent::runtime::{ContainerSpec, Namespace, NewContainer, Runtime, TaskStatus};

/// Our own containerd on temp dirs and the runtime on top, with helpers for these tests.
struct Node {
    containerd: TempContainerd,
}

impl Node {
    async fn start() -> Node {
        images::require_agent_environment("agent_runtime");
        Node {
            containerd: TempContainerd::start().await,
        }
    }

    fn client(&self) -> Client {
        self.containerd.client()
    }

    fn runtime(&self) -> &Runtime {
        self.containerd.runtime()
    }

    fn netns_dir(&self) -> PathBuf {
        self.containerd.netns_dir()
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.containerd.pod_logs_dir().join(id).join("0.log")
    }

    /// Creates and starts a busybox container running `script` in the pod netns.
    async fn run_sh(&self, id: &str, script: &str, netns: &Path) -> u32 {
        let image = agent_images::image_config(&self.client(), "busybox:oci")
            .await
            .expect("image config");
        let args = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let mut spec =
            ContainerSpec::from_image(&image, Some(&args), None, &[]).expect("spec from image");
        spec.network = Namespace::Path(netns.to_path_buf());
        spec.hostname = Some("pod-under-test".to_string());
        spec.cgroups_path = cgroup_path(id);
        let mut labels = HashMap::new();
        labels.insert("io.k3rs.test".to_string(), id.to_string());
        self.runtime()
            .create(&NewContainer {
                id: id.to_string(),
                image: "busybox:oci".to_string(),
                spec,
                labels,
            })
            .await
            .expect("create container");
        self.runtime()
            .start(id, &LoggerConfig::new(&self.log_path(id)))
            .await
            .expect("start task")
    }
}

/// A cgroup per test container, flat so runc removes all of it on delete.
fn cgroup_path(id: &str) -> String {
    format!("/k3rs-test-{}-{id}", std::process::id())
}

fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    ["", "/unified", "/memory", "/pids", "/cpu"]
        .iter()
        .map(|h| PathBuf::from(format!("/sys/fs/cgroup{h}{path}")))
        .collect()
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("{what}: not after {timeout:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn log_contains(path: &Path, wanted: &[&str]) {
    let path = path.to_path_buf();
    eventually("log lines", Duration::from_secs(10), || {
        let path = path.clone();
        async move {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            let rest: Vec<&str> = text
                .lines()
                .map(|l| l.split_once(' ').map(|(_, r)| r).unwrap_or(""))
                .collect();
            for w in wanted {
                if !rest.contains(w) {
                    return Err(format!("{w:?} missing from {}:\n{text}", path.display()));
                }
            }
            Ok(())
        }
    })
    .await;
}

async fn snapshot_names(client: &Client) -> BTreeSet<String> {
    let mut stream = client
        .snapshots()
        .list(client.request(ListSnapshotsRequest {
            snapshotter: client.snapshotter().to_string(),
            filters: vec![],
        }))
        .await
        .expect("list snapshots")
        .into_inner();
    let mut names = BTreeSet::new();
    while let Some(msg) = stream.message().await.expect("snapshot stream") {
        names.extend(msg.info.into_iter().map(|i| i.name));
    }
    names
}

async fn content_digests(client: &Client) -> Vec<String> {
    let mut stream = client
        .content()
        .list(client.request(ListContentRequest { filters: vec![] }))
        .await
        .expect("list content")
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await.expect("content stream") {
        out.extend(msg.info.into_iter().map(|i| i.digest));
    }
    out
}

async fn import_test_images(node: &Node) -> images::BuiltImage {
    let dir = node.containerd.data_dir().join("images");
    std::fs::create_dir_all(&dir).expect("images dir");
    let oci = images::write_oci_archive(&dir.join("busybox-oci.tar"), "busybox:oci", false);
    let docker =
        images::write_docker_archive(&dir.join("busybox-docker.tar.gz"), "busybox:docker", true);
    assert_eq!(
        oci.chain_ids, docker.chain_ids,
        "both archives hold the same layers"
    );

    let client = node.client();
    let overlay = std::fs::read_to_string("/proc/filesystems")
        .map(|f| f.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false);
    assert_eq!(
        client.snapshotter(),
        if overlay { "overlayfs" } else { "native" },
        "snapshotter choice"
    );
    let imported = agent_images::import_file(&client, &dir.join("busybox-oci.tar"))
        .await
        .expect("import OCI layout tar");
    assert_eq!(imported.len(), 1, "{imported:?}");
    assert_eq!(imported[0].name, "docker.io/library/busybox:oci");
    assert_eq!(imported[0].config_digest, oci.config_digest);
    assert_eq!(Some(&imported[0].chain_id), oci.chain_ids.last());

    let imported = agent_images::import_file(&client, &dir.join("busybox-docker.tar.gz"))
        .await
        .expect("import gzipped docker-save tar");
    assert_eq!(imported.len(), 1, "{imported:?}");
    assert_eq!(imported[0].name, "docker.io/library/busybox:docker");
    assert_eq!(Some(&imported[0].chain_id), docker.chain_ids.last());

    // Importing the whole directory again is harmless (everything already exists);
    // a broken file fails alone and says why.
    std::fs::write(dir.join("broken.tar"), b"not a tar archive").expect("write");
    let results = agent_images::import_dir(&client, &dir).await;
    let summary: Vec<(String, bool)> = results
        .iter()
        .map(|(p, r)| {
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                r.is_ok(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("broken.tar".to_string(), false),
            ("busybox-docker.tar.gz".to_string(), true),
            ("busybox-oci.tar".to_string(), true),
        ]
    );
    let broken = results[0].1.as_ref().expect_err("broken archive");
    assert!(broken.to_string().contains("broken.tar"), "{broken}");

    let names: Vec<String> = agent_images::list_images(&client)
        .await
        .expect("list images")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(
        names,
        vec![
            "docker.io/library/busybox:docker".to_string(),
            "docker.io/library/busybox:oci".to_string()
        ]
    );
    for name in ["busybox:oci", "busybox:docker"] {
        let cfg = agent_images::image_config(&client, name)
            .await
            .expect("image config");
        assert_eq!(cfg.cmd, vec!["sh".to_string()], "{name}");
        assert_eq!(cfg.id, oci.config_digest);
        assert!(cfg.env.iter().any(|e| e.starts_with("PATH=")));
    }
    let missing = agent_images::image_config(&client, "busybox:nope").await;
    assert!(
        matches!(missing, Err(agent_images::Error::NotFound(_))),
        "{missing:?}"
    );
    oci
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_log_exit_and_leave_nothing_behind() {
    let mut node = Node::start().await;
    let image = import_test_images(&node).await;
    let client = node.client();

    let netns = netns::create(&node.netns_dir(), "pod-a").expect("create pod netns");
    assert!(netns::is_namespace(&netns));
    assert_eq!(netns::list(&node.netns_dir()), vec!["pod-a".to_string()]);
    // Idempotent: a second create keeps the same namespace.
    assert_eq!(
        netns::create(&node.netns_dir(), "pod-a").expect("again"),
        netns
    );

    // echo: output as CRI lines, exit code 3, lo up in the pod namespace (flags
    // IFF_UP|IFF_LOOPBACK = 0x9), the image's second layer visible.
    let script = "echo hello; echo oops >&2; cat /sys/class/net/lo/flags; \
                  cat /var/www/index.html; hostname; exit 3";
    node.run_sh("echo", script, &netns).await;
    let exit = tokio::time::timeout(Duration::from_secs(30), node.runtime().wait("echo"))
        .await
        .expect("echo container did not exit in 30s")
        .expect("wait");
    assert_eq!(exit.code, 3);
    assert!(exit.at.is_some());
    log_contains(
        &node.log_path("echo"),
        &[
            "stdout F hello",
            "stderr F oops",
            "stdout F 0x9",
            "stdout F hello from k3rs",
            "stdout F pod-under-test",
        ],
    )
    .await;
    let task = node
        .runtime()
        .task("echo")
        .await
        .expect("task")
        .expect("exists");
    assert_eq!(task.status, TaskStatus::Stopped);
    assert_eq!(task.exit_code, Some(3));

    // A shell that traps SIGTERM exits on it.
    node.run_sh(
        "trapper",
        "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 1; done",
        &netns,
    )
    .await;
    log_contains(&node.log_path("trapper"), &["stdout F ready"]).await;
    node.runtime()
        .kill("trapper", libc::SIGTERM as u32, false)
        .await
        .expect("kill");
    let exit = tokio::time::timeout(Duration::from_secs(20), node.runtime().wait("trapper"))
        .await
        .expect("trapper did not exit after SIGTERM")
        .expect("wait");
    assert_eq!(exit.code, 0);
    log_contains(&node.log_path("trapper"), &["stdout F got TERM"]).await;

    // `sleep` as pid 1 has no SIGTERM handler, so the kernel drops the signal; a stop
    // with a grace period kills it with SIGKILL when the grace runs out.
    node.run_sh("sleeper", "exec sleep 1000", &netns).await;
    let task = node
        .runtime()
        .task("sleeper")
        .await
        .expect("task")
        .expect("exists");
    assert_eq!(task.status, TaskStatus::Running);
    let started = Instant::now();
    let exit = node
        .runtime()
        .stop("sleeper", libc::SIGTERM as u32, Duration::from_secs(2))
        .await
        .expect("stop")
        .expect("had a task");
    assert_eq!(exit.code, 128 + libc::SIGKILL as u32);
    assert!(started.elapsed() >= Duration::from_secs(2));

    let listed = node.runtime().list().await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["echo", "sleeper", "trapper"]);
    assert!(listed
        .iter()
        .all(|c| c.labels.get("io.k3rs.test") == Some(&c.id)));
    let statuses: Vec<Option<TaskStatus>> = listed
        .iter()
        .map(|c| c.task.as_ref().map(|t| t.status))
        .collect();
    assert_eq!(statuses, vec![Some(TaskStatus::Stopped); 3]);
    assert!(listed
        .iter()
        .all(|c| c.image == "docker.io/library/busybox:oci"));

    for id in ["echo", "trapper", "sleeper"] {
        node.runtime().remove(id).await.expect("remove");
        node.runtime()
            .remove(id)
            .await
            .expect("remove again is fine");
    }
    netns::remove(&netns).expect("remove netns");

    assert!(node.runtime().list().await.expect("list").is_empty());
    let tasks = client
        .tasks()
        .list(client.request(ListTasksRequest {
            filter: String::new(),
        }))
        .await
        .expect("list tasks")
        .into_inner()
        .tasks;
    assert!(tasks.is_empty(), "tasks left: {tasks:?}");
    let want: BTreeSet<String> = image.chain_ids.iter().cloned().collect();
    assert_eq!(
        snapshot_names(&client).await,
        want,
        "only the image's snapshots remain"
    );
    assert!(!netns.exists(), "netns file left behind");
    assert!(netns::list(&node.netns_dir()).is_empty());
    for id in ["echo", "trapper", "sleeper"] {
        for dir in cgroup_dirs(&cgroup_path(id)) {
            assert!(!dir.exists(), "cgroup left behind: {}", dir.display());
        }
    }

    // containerd's GC (run synchronously by these deletes) keeps what an image still
    // references through our labels, and drops everything once no image does.
    agent_images::delete_image(&client, "busybox:docker")
        .await
        .expect("delete docker image");
    assert_eq!(
        snapshot_names(&client).await,
        want,
        "GC kept the OCI image's snapshots"
    );
    agent_images::ensure_unpacked(&client, "busybox:oci")
        .await
        .expect("OCI image intact after GC");
    agent_images::delete_image(&client, "busybox:oci")
        .await
        .expect("delete OCI image");
    assert!(agent_images::list_images(&client)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        snapshot_names(&client).await,
        BTreeSet::new(),
        "snapshots collected"
    );
    assert!(
        content_digests(&client).await.is_empty(),
        "content collected"
    );

    node.containerd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_containers_survive_containerd_restarts() {
    let mut node = Node::start().await;
    import_test_images(&node).await;
    let netns = netns::create(&node.netns_dir(), "pod-b").expect("create pod netns");
    let pid = node
        .run_sh(
            "survivor",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
            &netns,
        )
        .await;
    log_contains(&node.log_path("survivor"), &["stdout F tick 1"]).await;

    // containerd crashes: the supervisor restarts it and the container runs on.
    let first = node.containerd.supervisor().state();
    let old_pid = first.pid.expect("containerd pid");
    // SAFETY: kill(2) on the containerd child this test started.
    unsafe {
        libc::kill(old_pid as libc::pid_t, libc::SIGKILL);
    }
    let sup = node.containerd.supervisor();
    eventually("containerd restarted", Duration::from_secs(30), || async {
        let s = sup.state();
        match s.pid {
            Some(p) if p != old_pid && s.starts >= 2 => Ok(()),
            _ => Err(format!("{s:?}")),
        }
    })
    .await;
    sup.wait_ready()
        .await
        .expect("restarted containerd answers");

    // Another client through `--container-runtime-endpoint` sees the same.
    let socket = node.containerd.supervisor().config().socket.clone();
    let mut config = SupervisorConfig::new(node.containerd.data_dir());
    config.ready_timeout = Duration::from_secs(10);
    let external = Containerd::start(config, Some(&format!("unix://{}", socket.display())))
        .await
        .expect("external endpoint");
    assert!(matches!(external, Containerd::External(_)));
    let other = Runtime::new(external.client(), Path::new("/nonexistent"), None);
    assert!(other
        .list()
        .await
        .expect("list via endpoint")
        .iter()
        .any(|c| c.id == "survivor"));
    external.shutdown().await;

    // The agent restarts: supervisor stopped (SIGTERM) and started again.
    node.containerd.restart().await;
    let listed = node.runtime().list().await.expect("list after restart");
    let survivor = listed
        .iter()
        .find(|c| c.id == "survivor")
        .expect("container still listed after restarts");
    let task = survivor.task.as_ref().unwrap_or_else(|| {
        panic!(
            "task not adopted; containerd log:\n{}",
            node.containerd.containerd_log()
        )
    });
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.pid, pid, "same process, not restarted");
    assert_eq!(
        survivor.labels.get("io.k3rs.test").map(String::as_str),
        Some("survivor")
    );

    // Its logger belongs to the shim: logging went on throughout.
    let before = std::fs::read_to_string(node.log_path("survivor")).expect("log");
    let lines_before = before.lines().count();
    let log = node.log_path("survivor");
    eventually("log keeps growing", Duration::from_secs(10), || {
        let log = log.clone();
        async move {
            let n = std::fs::read_to_string(&log)
                .map_err(|e| e.to_string())?
                .lines()
                .count();
            if n > lines_before + 2 {
                Ok(())
            } else {
                Err(format!("{n} lines"))
            }
        }
    })
    .await;

    node.runtime().remove("survivor").await.expect("remove");
    netns::remove(&netns).expect("remove netns");
    assert!(node.runtime().list().await.expect("list").is_empty());
    node.containerd.stop().await;
}
