//! Containers on containerd: create one from an image and a [`spec::ContainerSpec`]
//! (snapshot prepared on the image's top layer, container record with the OCI spec
//! and runc options), start its task with stdout/stderr going to the shim-side CRI
//! logger ([`crate::agent::logger`]), wait for it, signal it, stop it with a grace
//! period, remove task, container and snapshot, and list what exists (with labels,
//! so the agent can adopt containers after a restart).

pub mod exec;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime as PbRuntime;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetRequest, KillRequest, ListContainersRequest, ListTasksRequest,
    StartRequest, WaitRequest,
};
use containerd_client::types::v1::{Process, Status as PbStatus};

use crate::agent::containerd::{timestamp, Client, Error as CtrdError, RUNTIME_RUNC_V2};
use crate::agent::images;
use crate::agent::logger::LoggerConfig;
pub use spec::{ContainerSpec, Mount, Namespace, User};

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Containerd(#[from] CtrdError),
    #[error(transparent)]
    Image(#[from] images::Error),
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container {id}: {message}")]
    Invalid { id: String, message: String },
}

/// A task's state, as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Created,
    Running,
    Stopped,
    Paused,
    Unknown,
}

impl TaskStatus {
    fn from_pb(status: i32) -> TaskStatus {
        match PbStatus::try_from(status) {
            Ok(PbStatus::Created) => TaskStatus::Created,
            Ok(PbStatus::Running) => TaskStatus::Running,
            Ok(PbStatus::Stopped) => TaskStatus::Stopped,
            Ok(PbStatus::Paused) | Ok(PbStatus::Pausing) => TaskStatus::Paused,
            _ => TaskStatus::Unknown,
        }
    }
}

/// A container's task (its running or finished process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub pid: u32,
    pub status: TaskStatus,
    /// Set once stopped: the exit code (128 + signal when killed by one).
    pub exit_code: Option<u32>,
    pub exited_at: Option<jiff::Timestamp>,
}

impl TaskInfo {
    fn from_process(p: &Process) -> TaskInfo {
        let status = TaskStatus::from_pb(p.status);
        TaskInfo {
            pid: p.pid,
            status,
            exit_code: (status == TaskStatus::Stopped).then_some(p.exit_status),
            exited_at: timestamp(p.exited_at.as_ref()),
        }
    }
}

/// A container as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: Option<jiff::Timestamp>,
    pub task: Option<TaskInfo>,
}

/// How a task's stdio is set up beyond the log ([`Runtime::start_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// The FIFO the container's stdin reads from (`stdin: true`); `None`: no stdin.
    /// The caller creates it and keeps a writer open (e.g. read-write) from before
    /// the start for as long as the container must not read EOF (until the first
    /// attach ends for `stdinOnce`); otherwise the process reads EOF at once.
    /// Caveat: the runc shim connects a stdin FIFO only to a terminal when output
    /// goes to a `binary://` logger; without `terminal` the process gets no stdin.
    pub stdin_fifo: Option<PathBuf>,
    /// Run on a pseudo-terminal (`tty: true`); its output goes to the log as stdout.
    pub terminal: bool,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: u32,
    pub at: Option<jiff::Timestamp>,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewContainer {
    pub id: String,
    /// Image name (normalised on lookup).
    pub image: String,
    pub spec: ContainerSpec,
    pub labels: HashMap<String, String>,
}

/// The container runtime: containerd plus the logger binary the shim runs.
#[derive(Debug, Clone)]
pub struct Runtime {
    client: Client,
    logger_binary: PathBuf,
    runc_root: Option<PathBuf>,
}

impl Runtime {
    /// `logger_binary` is the executable the shim runs as CRI logger (the k3rs binary
    /// itself in production). `runc_root`: runc's state dir, to keep our containers
    /// apart from another containerd's (`None`: runc's default).
    pub fn new(client: Client, logger_binary: &Path, runc_root: Option<&Path>) -> Runtime {
        Runtime {
            client,
            logger_binary: logger_binary.to_path_buf(),
            runc_root: runc_root.map(Path::to_path_buf),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn runc_options(&self) -> Option<prost_types::Any> {
        let root = self.runc_root.as_ref()?;
        // containerd.runc.v1.Options { string root = 7; } encoded by hand: the crate
        // does not generate the runc options.
        let bytes = root.as_os_str().as_encoded_bytes();
        let mut value = vec![(7 << 3) | 2];
        let mut len = bytes.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                value.push(b);
                break;
            }
            value.push(b | 0x80);
        }
        value.extend_from_slice(bytes);
        Some(prost_types::Any {
            type_url: RUNC_OPTIONS_TYPE_URL.to_string(),
            value,
        })
    }

    /// Creates the container: unpacks the image if needed, prepares its rootfs
    /// snapshot (key = container id) and records the container with its OCI spec.
    pub async fn create(&self, new: &NewContainer) -> Result<(), Error> {
        let image = images::ensure_unpacked(&self.client, &new.image).await?;
        self.create_from(new, &image).await
    }

    /// [`Runtime::create`] for a caller that already holds the unpacked image's config
    /// (from [`images::ensure_unpacked`]), so the image is not resolved twice.
    pub async fn create_from(
        &self,
        new: &NewContainer,
        image: &images::ImageConfig,
    ) -> Result<(), Error> {
        let c = &self.client;
        let spec = serde_json::to_vec(&new.spec.to_oci()).map_err(|e| Error::Invalid {
            id: new.id.clone(),
            message: format!("cannot encode spec: {e}"),
        })?;
        let lease = c
            .create_lease("container", Duration::from_secs(600))
            .await?;
        let result = async {
            c.snapshots()
                .prepare(c.leased(
                    PrepareSnapshotRequest {
                        snapshotter: c.snapshotter().to_string(),
                        key: new.id.clone(),
                        parent: image.chain_id.clone(),
                        labels: HashMap::new(),
                    },
                    Some(&lease),
                ))
                .await
                .map_err(CtrdError::rpc("prepare container snapshot"))?;
            let container = Container {
                id: new.id.clone(),
                labels: new.labels.clone(),
                image: image.name.clone(),
                runtime: Some(PbRuntime {
                    name: RUNTIME_RUNC_V2.to_string(),
                    options: self.runc_options(),
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.to_string(),
                    value: spec,
                }),
                snapshotter: c.snapshotter().to_string(),
                snapshot_key: new.id.clone(),
                ..Default::default()
            };
            if let Err(s) = c
                .containers()
                .create(c.leased(
                    CreateContainerRequest {
                        container: Some(container),
                    },
                    Some(&lease),
                ))
                .await
            {
                self.remove_snapshot(&new.id).await;
                return Err(CtrdError::rpc("create container")(s).into());
            }
            Ok::<_, Error>(())
        }
        .await;
        let _ = c.delete_lease(&lease).await;
        result
    }

    /// Creates and starts the container's task; stdout and stderr become CRI lines in
    /// `log.path`. Returns the pid.
    pub async fn start(&self, id: &str, log: &LoggerConfig) -> Result<u32, Error> {
        self.start_with(id, log, &StartOptions::default()).await
    }

    /// [`Runtime::start`] for containers with `stdin: true` or `tty: true`: the task
    /// reads stdin from `opts.stdin_fifo` (a FIFO the caller created, kept open by the
    /// shim, written by attach) and runs on a terminal when `opts.terminal`.
    pub async fn start_with(
        &self,
        id: &str,
        log: &LoggerConfig,
        opts: &StartOptions,
    ) -> Result<u32, Error> {
        let c = &self.client;
        let rootfs = c
            .snapshots()
            .mounts(c.request(MountsRequest {
                snapshotter: c.snapshotter().to_string(),
                key: id.to_string(),
            }))
            .await
            .map_err(|s| not_found_or(id, s, "container snapshot mounts"))?
            .into_inner()
            .mounts;
        let uri = log.uri(&self.logger_binary);
        c.tasks()
            .create(
                c.request(CreateTaskRequest {
                    container_id: id.to_string(),
                    rootfs,
                    stdin: opts
                        .stdin_fifo
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    stdout: uri.clone(),
                    stderr: uri,
                    terminal: opts.terminal,
                    options: self.runc_options(),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|s| not_found_or(id, s, "create task"))?;
        match c
            .tasks()
            .start(c.request(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(resp) => Ok(resp.into_inner().pid),
            Err(s) => {
                let _ = self.delete_task(id).await;
                Err(CtrdError::rpc("start task")(s).into())
            }
        }
    }

    /// Waits until the task exits.
    pub async fn wait(&self, id: &str) -> Result<Exit, Error> {
        let c = &self.client;
        let resp = c
            .tasks()
            .wait(c.request(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| not_found_or(id, s, "wait task"))?
            .into_inner();
        Ok(Exit {
            code: resp.exit_status,
            at: timestamp(resp.exited_at.as_ref()),
        })
    }

    /// The task's state, `None` when the container has no task.
    pub async fn task(&self, id: &str) -> Result<Option<TaskInfo>, Error> {
        let c = &self.client;
        match c
            .tasks()
            .get(c.request(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(resp) => Ok(resp
                .into_inner()
                .process
                .as_ref()
                .map(TaskInfo::from_process)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(CtrdError::rpc("get task")(s).into()),
        }
    }

    /// Sends `signal` to the task's init process (`all`: to every process in it).
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), Error> {
        let c = &self.client;
        c.tasks()
            .kill(c.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all,
            }))
            .await
            .map_err(|s| not_found_or(id, s, "kill task"))?;
        Ok(())
    }

    /// Graceful stop: `signal` (SIGTERM or the image's StopSignal), then SIGKILL to
    /// everything in the container after `grace`. Returns how it ended; a task that
    /// is already gone or stopped is fine.
    pub async fn stop(
        &self,
        id: &str,
        signal: u32,
        grace: Duration,
    ) -> Result<Option<Exit>, Error> {
        match self.task(id).await? {
            None => return Ok(None),
            Some(t) if t.status == TaskStatus::Stopped => {
                return Ok(Some(Exit {
                    code: t.exit_code.unwrap_or_default(),
                    at: t.exited_at,
                }))
            }
            Some(_) => {}
        }
        let waiter = self.wait(id);
        tokio::pin!(waiter);
        if let Err(e) = self.kill(id, signal, false).await {
            tracing::debug!(%id, error = %e, "stop signal not delivered");
        }
        if let Ok(exit) = tokio::time::timeout(grace, &mut waiter).await {
            return exit.map(Some);
        }
        tracing::info!(%id, ?grace, "container did not stop in its grace period; killing");
        if let Err(e) = self.kill(id, libc::SIGKILL as u32, true).await {
            tracing::debug!(%id, error = %e, "SIGKILL not delivered");
        }
        waiter.await.map(Some)
    }

    /// Deletes a stopped task (what a restart in place needs before `start`); returns
    /// how it ended, `None` if there was none.
    pub async fn delete_task(&self, id: &str) -> Result<Option<Exit>, Error> {
        let c = &self.client;
        match c
            .tasks()
            .delete(c.request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(resp) => {
                let r = resp.into_inner();
                Ok(Some(Exit {
                    code: r.exit_status,
                    at: timestamp(r.exited_at.as_ref()),
                }))
            }
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(CtrdError::rpc("delete task")(s).into()),
        }
    }

    async fn remove_snapshot(&self, key: &str) {
        let c = &self.client;
        if let Err(s) = c
            .snapshots()
            .remove(c.request(RemoveSnapshotRequest {
                snapshotter: c.snapshotter().to_string(),
                key: key.to_string(),
            }))
            .await
        {
            if s.code() != tonic::Code::NotFound {
                tracing::warn!(%key, error = %s.message(), "cannot remove snapshot");
            }
        }
    }

    /// Removes the container completely: kills a live task (SIGKILL), deletes the
    /// task, the container record and its snapshot. Missing parts are fine.
    pub async fn remove(&self, id: &str) -> Result<(), Error> {
        if let Some(task) = self.task(id).await? {
            if task.status != TaskStatus::Stopped {
                self.stop(id, libc::SIGKILL as u32, Duration::from_secs(10))
                    .await?;
            }
            self.delete_task(id).await?;
        }
        let c = &self.client;
        match c
            .containers()
            .delete(c.request(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(CtrdError::rpc("delete container")(s).into()),
        }
        self.remove_snapshot(id).await;
        Ok(())
    }

    /// Every container in our namespace with its task, for adoption after restarts.
    pub async fn list(&self) -> Result<Vec<ContainerInfo>, Error> {
        let c = &self.client;
        let containers = c
            .containers()
            .list(c.request(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(CtrdError::rpc("list containers"))?
            .into_inner()
            .containers;
        let tasks = c
            .tasks()
            .list(c.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(CtrdError::rpc("list tasks"))?
            .into_inner()
            .tasks;
        // containerd sets only `id` (= the container id) on listed tasks.
        let mut by_id: HashMap<String, TaskInfo> = tasks
            .iter()
            .map(|p| {
                let id = if p.container_id.is_empty() {
                    &p.id
                } else {
                    &p.container_id
                };
                (id.clone(), TaskInfo::from_process(p))
            })
            .collect();
        let mut out: Vec<ContainerInfo> = containers
            .into_iter()
            .map(|ct| ContainerInfo {
                task: by_id.remove(&ct.id),
                created_at: timestamp(ct.created_at.as_ref()),
                labels: ct.labels.into_iter().collect(),
                image: ct.image,
                id: ct.id,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

fn not_found_or(id: &str, status: tonic::Status, op: &'static str) -> Error {
    if status.code() == tonic::Code::NotFound {
        Error::NotFound(id.to_string())
    } else {
        CtrdError::rpc(op)(status).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_encode_root() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _g = rt.enter();
        let client = Client::connect_lazy(Path::new("/nonexistent.sock")).expect("client");
        let runtime = Runtime::new(
            client.clone(),
            Path::new("/bin/k3rs"),
            Some(Path::new("/run/r")),
        );
        let any = runtime.runc_options().expect("options");
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        assert_eq!(any.value, b"\x3a\x06/run/r".to_vec());
        let long = "x".repeat(200);
        let runtime = Runtime::new(
            client.clone(),
            Path::new("/bin/k3rs"),
            Some(Path::new(&long)),
        );
        let v = runtime.runc_options().expect("options").value;
        assert_eq!(&v[..3], &[0x3a, 0xc8, 0x01]);
        assert!(Runtime::new(client, Path::new("/bin/k3rs"), None)
            .runc_options()
            .is_none());
    }

    #[test]
    fn task_status_maps() {
        assert_eq!(
            TaskStatus::from_pb(PbStatus::Running as i32),
            TaskStatus::Running
        );
        assert_eq!(
            TaskStatus::from_pb(PbStatus::Stopped as i32),
            TaskStatus::Stopped
        );
        assert_eq!(TaskStatus::from_pb(99), TaskStatus::Unknown);
        let p = Process {
            pid: 7,
            status: PbStatus::Stopped as i32,
            exit_status: 3,
            ..Default::default()
        };
        assert_eq!(TaskInfo::from_process(&p).exit_code, Some(3));
    }
}
