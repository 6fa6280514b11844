//! Our own containerd: the config file k3rs writes for it, the child process, its
//! restarts with back-off when it dies, and its orderly stop (SIGTERM, then SIGKILL).
//!
//! containerd keeps containers running across its own restarts (the shims own them),
//! so stopping or restarting it never stops a pod. With `--container-runtime-endpoint`
//! the agent uses an existing containerd instead and none of this runs
//! ([`super::Containerd::start`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Client, Error};

/// Where and how our containerd runs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// containerd's root (content, metadata, snapshots): `<data-dir>/agent/containerd`.
    pub root: PathBuf,
    /// containerd's state (sockets, shim bundles): `/run/k3rs/containerd`.
    pub state: PathBuf,
    /// The gRPC socket: `/run/k3rs/containerd/containerd.sock`.
    pub socket: PathBuf,
    /// The containerd executable (looked up on PATH when relative).
    pub containerd_bin: PathBuf,
    /// How long to wait for the socket to answer after a start.
    pub ready_timeout: Duration,
    /// How long containerd gets to exit after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
}

impl SupervisorConfig {
    /// The standard layout for a data dir (`/var/lib/k3rs` as root).
    pub fn new(data_dir: &Path) -> SupervisorConfig {
        let state = PathBuf::from("/run/k3rs/containerd");
        SupervisorConfig {
            root: data_dir.join("agent").join("containerd"),
            socket: state.join("containerd.sock"),
            state,
            containerd_bin: PathBuf::from("containerd"),
            ready_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
        }
    }

    /// Moves state and socket under another run dir (tests run several containerds).
    pub fn with_run_dir(mut self, run_dir: &Path) -> SupervisorConfig {
        self.state = run_dir.join("containerd");
        self.socket = self.state.join("containerd.sock");
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("containerd.log")
    }

    /// runc's state dir for our containers (`Runtime::new`), apart from any other
    /// containerd's on the host.
    pub fn runc_root(&self) -> PathBuf {
        self.state.join("runc")
    }

    fn pid_path(&self) -> PathBuf {
        self.state.join("k3rs-containerd.pid")
    }

    /// The containerd config (version 2). CRI is off: k3rs drives the core API itself.
    pub fn render(&self) -> String {
        let disabled = [
            "io.containerd.grpc.v1.cri",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing",
            // Not io.containerd.runtime.v1.linux: 1.6's tasks service fails without it.
        ];
        let disabled: Vec<String> = disabled.iter().map(|p| toml_str(p)).collect();
        format!(
            "# Written by k3rs at every start of its containerd; edits are overwritten.\n\
             version = 2\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [{disabled}]\n\
             \n\
             [grpc]\n  address = {socket}\n\
             \n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt}\n",
            root = toml_str(&self.root.to_string_lossy()),
            state = toml_str(&self.state.to_string_lossy()),
            disabled = disabled.join(", "),
            socket = toml_str(&self.socket.to_string_lossy()),
            opt = toml_str(&self.root.join("opt").to_string_lossy()),
        )
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the supervisor knows about its child, for logs, status and tests.
#[derive(Debug, Clone, Default)]
pub struct ChildState {
    /// The running containerd's pid.
    pub pid: Option<u32>,
    /// How many times containerd was started (1 after a clean start).
    pub starts: u32,
    /// How the last containerd ended, when one did.
    pub last_exit: Option<String>,
}

/// Our running containerd. [`Supervisor::shutdown`] stops it; dropping the supervisor
/// sends it SIGTERM without waiting.
pub struct Supervisor {
    config: SupervisorConfig,
    client: Client,
    stop: watch::Sender<bool>,
    state: watch::Receiver<ChildState>,
    task: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Writes the config, starts containerd (after stopping one a crashed k3rs left
    /// behind) and waits until its socket answers.
    pub async fn start(config: SupervisorConfig) -> Result<Supervisor, Error> {
        for dir in [&config.root, &config.state] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(Error::io(format!("create {}", dir.display())))?;
        }
        let config_path = config.config_path();
        tokio::fs::write(&config_path, config.render())
            .await
            .map_err(Error::io(format!("write {}", config_path.display())))?;
        stop_leftover(&config).await;

        let child = spawn(&config)?;
        tracing::info!(pid = ?child.id(), socket = %config.socket.display(), "started containerd");
        let (state_tx, state_rx) = watch::channel(ChildState {
            pid: child.id(),
            starts: 1,
            last_exit: None,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(config.clone(), child, state_tx, stop_rx));
        let client = Client::connect_lazy(&config.socket)?;
        let mut supervisor = Supervisor {
            config,
            client,
            stop: stop_tx,
            state: state_rx,
            task: Some(task),
        };
        if let Err(e) = supervisor.wait_ready().await {
            supervisor.shutdown().await;
            return Err(e);
        }
        let snapshotter = supervisor.client.detect_snapshotter().await?;
        supervisor.client = supervisor.client.clone().with_snapshotter(&snapshotter);
        Ok(supervisor)
    }

    /// A client for our containerd, with the snapshotter it supports.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn config(&self) -> &SupervisorConfig {
        &self.config
    }

    pub fn state(&self) -> ChildState {
        self.state.borrow().clone()
    }

    /// Waits until containerd answers on its socket (after a start or a restart).
    pub async fn wait_ready(&self) -> Result<String, Error> {
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            match self.client.version().await {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() >= deadline => {
                    let state = self.state();
                    return Err(Error::Unavailable {
                        socket: self.config.socket.clone(),
                        message: format!(
                            "not answering after {:?} ({e}); last exit: {}; log {}:\n{}",
                            self.config.ready_timeout,
                            state.last_exit.as_deref().unwrap_or("none"),
                            self.config.log_path().display(),
                            log_tail(&self.config.log_path(), 20),
                        ),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Stops containerd (SIGTERM, SIGKILL after the stop timeout) and the supervision.
    /// Running containers keep running.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.task.is_some() {
            let _ = self.stop.send(true);
            if let Some(pid) = self.state.borrow().pid {
                signal(pid, libc::SIGTERM);
            }
        }
    }
}

fn spawn(config: &SupervisorConfig) -> Result<tokio::process::Child, Error> {
    let log_path = config.log_path();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(Error::io(format!("open {}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(Error::io(format!("open {}", log_path.display())))?;
    let mut cmd = tokio::process::Command::new(&config.containerd_bin);
    cmd.arg("--config")
        .arg(config.config_path())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        // Its own process group: a Ctrl-C meant for k3rs must not stop containerd
        // behind our back; we stop it in order on shutdown.
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd.spawn().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (install containerd and runc: `apt-get install containerd runc` on Debian, \
             or point --container-runtime-endpoint at a running containerd)"
        } else {
            ""
        };
        Error::Io {
            what: format!("start {}{hint}", config.containerd_bin.display()),
            source: e,
        }
    })?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(config.pid_path(), format!("{pid}\n"));
    }
    Ok(child)
}

/// Restart back-off: 1 s doubling to 30 s, back to 1 s after a minute of good running.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);
    const RESET_AFTER: Duration = Duration::from_secs(60);

    fn after_run(&mut self, ran: Duration) -> Duration {
        if ran >= Self::RESET_AFTER {
            self.next = Self::MIN;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }
}

async fn supervise(
    config: SupervisorConfig,
    child: tokio::process::Child,
    state: watch::Sender<ChildState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff { next: Backoff::MIN };
    let mut started = Instant::now();
    let mut child = Some(child);
    loop {
        let Some(running) = child.as_mut() else {
            // Between a death (or a failed start) and the next start.
            let wait = backoff.after_run(started.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            started = Instant::now();
            match spawn(&config) {
                Ok(c) => {
                    tracing::info!(pid = ?c.id(), "restarted containerd");
                    state.send_modify(|s| {
                        s.pid = c.id();
                        s.starts += 1;
                    });
                    child = Some(c);
                }
                Err(e) => {
                    // Keep trying: the binary may come back (package upgrade).
                    tracing::error!(error = %e, "cannot restart containerd");
                    state.send_modify(|s| s.last_exit = Some(e.to_string()));
                }
            }
            continue;
        };
        tokio::select! {
            status = running.wait() => {
                let how = match status {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                tracing::warn!(%how, log = %config.log_path().display(),
                    "containerd exited; restarting it");
                state.send_modify(|s| {
                    s.pid = None;
                    s.last_exit = Some(how);
                });
                child = None;
            }
            _ = stop.changed() => {
                terminate(running, config.stop_timeout).await;
                state.send_modify(|s| s.pid = None);
                let _ = std::fs::remove_file(config.pid_path());
                break;
            }
        }
    }
}

/// SIGTERM, wait up to `timeout`, then SIGKILL.
async fn terminate(child: &mut tokio::process::Child, timeout: Duration) {
    let Some(pid) = child.id() else { return };
    signal(pid, libc::SIGTERM);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(_) => tracing::info!(pid, "containerd stopped"),
        Err(_) => {
            tracing::warn!(pid, ?timeout, "containerd ignored SIGTERM; killing it");
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// A containerd a previous k3rs started with this config and left running (k3rs was
/// killed): stop it, or ours cannot take its socket and database.
async fn stop_leftover(config: &SupervisorConfig) {
    let Ok(text) = tokio::fs::read_to_string(config.pid_path()).await else {
        return;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return;
    };
    let ours = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let want = config.config_path();
                c.split(|b| *b == 0)
                    .any(|arg| arg == want.as_os_str().as_encoded_bytes())
            })
            .unwrap_or(false)
    };
    if !ours(pid) {
        return;
    }
    tracing::info!(pid, "stopping containerd left over from a previous run");
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + config.stop_timeout;
    while ours(pid) && !is_zombie(pid) {
        if Instant::now() >= deadline {
            signal(pid, libc::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_version_2_with_cri_disabled() {
        let cfg = SupervisorConfig::new(Path::new("/var/lib/k3rs"));
        let text = cfg.render();
        assert!(text.contains("version = 2\n"));
        assert!(text.contains("root = \"/var/lib/k3rs/agent/containerd\"\n"));
        assert!(text.contains("state = \"/run/k3rs/containerd\"\n"));
        assert!(text.contains("address = \"/run/k3rs/containerd/containerd.sock\"\n"));
        assert!(text.contains("\"io.containerd.grpc.v1.cri\""));
        assert_eq!(
            cfg.config_path(),
            Path::new("/var/lib/k3rs/agent/containerd/config.toml")
        );
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_str("x\ny"), "\"x\\u000Ay\"");
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff { next: Backoff::MIN };
        let short = Duration::from_secs(1);
        let waits: Vec<u64> = (0..7).map(|_| b.after_run(short).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.after_run(Duration::from_secs(120)).as_secs(), 1);
    }
}
