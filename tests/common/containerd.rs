//! A containerd of the test's own for node tests: supervised on temporary data and run
//! dirs with a private socket, the agent's `Runtime` on top, and cleanup that leaves no
//! containers, network namespaces or containerd behind even when a test panics.
//!
//! Including this module (`#[path = "common/containerd.rs"] mod containerd;`) also makes
//! the test binary the shim's CRI logger: production runs the k3rs binary for that, and
//! `Runtime` points the shim at `current_exe()`, which here is the test binary.

#![allow(dead_code)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k3rs::agent::containerd::{Client, Supervisor, SupervisorConfig};
use k3rs::agent::logger::{self, LoggerConfig};
use k3rs::agent::netns;
use k3rs::agent::runtime::Runtime;

// When the runc shim starts this binary as a container's logger (its arguments carry
// `k3rs-cri-logger`), run the logger before the test harness parses them. Reading
// /proc/self/cmdline is safe this early; std's own argument capture may not have run.
// `#[used]` keeps the entry although nothing references it, and since this module is
// compiled into the test crate itself (not a library the linker may skip), the
// .init_array entry is linked into every test binary that includes it.
#[used]
#[link_section = ".init_array"]
static LOGGER_HOOK: extern "C" fn() = logger_hook;

extern "C" fn logger_hook() {
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    let cmdline = cmdline.strip_suffix(&[0]).unwrap_or(&cmdline);
    let args: Vec<OsString> = cmdline
        .split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    if let Some(config) = LoggerConfig::from_args(&args) {
        std::process::exit(logger::run(&config));
    }
}

/// containerd on temp dirs plus the runtime on top. Dropping it removes every
/// container, stops containerd and removes the network namespaces under
/// [`TempContainerd::netns_dir`]; that needs a multi-thread tokio runtime (the
/// supervisor's task must run while the drop waits for it).
pub struct TempContainerd {
    data: tempfile::TempDir,
    run: tempfile::TempDir,
    supervisor: Option<Supervisor>,
    runtime: Runtime,
}

impl TempContainerd {
    /// Starts containerd; panics with containerd's error when it does not come up.
    /// Check the environment first (`images::require_agent_environment`).
    pub async fn start() -> TempContainerd {
        let data = tempfile::tempdir().expect("data dir");
        let run = tempfile::tempdir().expect("run dir");
        let supervisor = start_supervisor(data.path(), run.path()).await;
        let runtime = runtime_for(&supervisor);
        TempContainerd {
            data,
            run,
            supervisor: Some(supervisor),
            runtime,
        }
    }

    /// The agent's data dir (containerd's root is below it).
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The run dir (containerd's state and socket are below it).
    pub fn run_dir(&self) -> &Path {
        self.run.path()
    }

    /// Where tests create pod network namespaces; cleaned up on drop.
    pub fn netns_dir(&self) -> PathBuf {
        self.run.path().join("netns")
    }

    /// Where tests put container logs.
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.data.path().join("pods")
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn client(&self) -> Client {
        self.runtime.client().clone()
    }

    pub fn supervisor(&self) -> &Supervisor {
        self.supervisor.as_ref().expect("supervisor running")
    }

    /// Like the agent restarting: containerd stopped (SIGTERM) and started again on the
    /// same dirs, with a new runtime.
    pub async fn restart(&mut self) {
        self.stop().await;
        let s = start_supervisor(self.data.path(), self.run.path()).await;
        self.runtime = runtime_for(&s);
        self.supervisor = Some(s);
    }

    /// Stops containerd, leaving containers as they are.
    pub async fn stop(&mut self) {
        if let Some(s) = self.supervisor.take() {
            s.shutdown().await;
        }
    }

    /// containerd's own log, for failure messages.
    pub fn containerd_log(&self) -> String {
        let path = SupervisorConfig::new(self.data.path()).log_path();
        std::fs::read_to_string(&path).unwrap_or_else(|e| format!("{}: {e}", path.display()))
    }
}

impl Drop for TempContainerd {
    /// After a test (or a failed one): remove what is left, containers first, on a
    /// client and tokio runtime of its own since the test's may be unwinding; then stop
    /// containerd and remove the network namespaces.
    fn drop(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            let client = supervisor.client();
            let socket = client.socket().to_path_buf();
            let snapshotter = client.snapshotter().to_string();
            let runc_root = supervisor.config().runc_root();
            let cleanup = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(client) = Client::connect_lazy(&socket) {
                        let exe = std::env::current_exe().unwrap_or_default();
                        let runtime = Runtime::new(
                            client.with_snapshotter(&snapshotter),
                            &exe,
                            Some(&runc_root),
                        );
                        let work = async {
                            for c in runtime.list().await.unwrap_or_default() {
                                let _ = runtime.remove(&c.id).await;
                            }
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(30), work).await;
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), supervisor.shutdown()).await;
                });
            });
            let _ = cleanup.join();
        }
        let dir = self.netns_dir();
        for id in netns::list(&dir) {
            let _ = netns::remove(&dir.join(id));
        }
    }
}

async fn start_supervisor(data: &Path, run: &Path) -> Supervisor {
    let mut config = SupervisorConfig::new(data).with_run_dir(run);
    config.ready_timeout = Duration::from_secs(30);
    config.stop_timeout = Duration::from_secs(10);
    Supervisor::start(config)
        .await
        .unwrap_or_else(|e| panic!("containerd did not start: {e}"))
}

/// The runtime with this test binary as the shim's logger (see `logger_hook`).
fn runtime_for(s: &Supervisor) -> Runtime {
    let exe = std::env::current_exe().expect("test binary path");
    Runtime::new(s.client(), &exe, Some(&s.config().runc_root()))
}
