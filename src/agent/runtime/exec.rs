//! Running an extra process inside a running container (`kubectl exec`): containerd's
//! task Exec with a process spec derived from the container's own (same env, cwd,
//! user, capabilities; our args and terminal), stdio through FIFOs we create in a
//! private temporary directory, pty resizes, stdin close, exit wait and cleanup. Also
//! the two task-level calls attach needs (pty resize of the main process).
//!
//! FIFO opening order matters: the runc shim opens stdout/stderr for writing in
//! blocking mode when the process starts, so our read ends must exist before Start;
//! a read end with no writer yet would see EOF at once, so we hold a dummy writer of
//! our own until Start returned (by then the shim holds its writers, and EOF means
//! the process' output is complete).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use serde_json::Value;
use tokio::net::unix::pipe;

use super::{not_found_or, Error, Runtime};
use crate::agent::containerd::{Client, Error as CtrdError};

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// The command and its arguments (no shell is added).
    pub args: Vec<String>,
    /// Run on a pseudo-terminal (stdout and stderr are then one stream).
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A started exec process. Take the pipes out, drive the process through
/// [`ExecProcess::handle`], and call [`ExecHandle::delete`] once it exited.
pub struct ExecProcess {
    /// Write end of the process' stdin (when requested).
    pub stdin: Option<pipe::Sender>,
    /// Read end of its stdout (with a tty: the terminal's output). Always present:
    /// read it to the end even when the client wants no stdout.
    pub stdout: Option<pipe::Receiver>,
    /// Read end of its stderr; present without a tty, whether requested or not.
    pub stderr: Option<pipe::Receiver>,
    handle: ExecHandle,
}

impl ExecProcess {
    /// A handle for resize, stdin close, wait and delete.
    pub fn handle(&self) -> ExecHandle {
        self.handle.clone()
    }
}

/// Controls one exec process.
#[derive(Clone)]
pub struct ExecHandle {
    client: Client,
    container_id: String,
    exec_id: String,
    fifo_dir: PathBuf,
}

impl ExecHandle {
    /// The exec id containerd knows the process by.
    pub fn exec_id(&self) -> &str {
        &self.exec_id
    }

    /// Resizes the process' terminal.
    pub async fn resize(&self, width: u16, height: u16) -> Result<(), Error> {
        resize_pty(
            &self.client,
            &self.container_id,
            &self.exec_id,
            width,
            height,
        )
        .await
    }

    /// Tells the shim the client's stdin ended (after our write end was dropped), so
    /// the process reads EOF once the pipe is drained.
    pub async fn close_stdin(&self) -> Result<(), Error> {
        let c = &self.client;
        c.tasks()
            .close_io(c.request(CloseIoRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                stdin: true,
            }))
            .await
            .map_err(|s| not_found_or(&self.container_id, s, "close exec stdin"))?;
        Ok(())
    }

    /// Waits for the process to exit; its exit code (128 + signal when killed).
    pub async fn wait(&self) -> Result<u32, Error> {
        let c = &self.client;
        let resp = c
            .tasks()
            .wait(c.request(WaitRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            }))
            .await
            .map_err(|s| not_found_or(&self.container_id, s, "wait for exec process"))?;
        Ok(resp.into_inner().exit_status)
    }

    /// Sends `signal` to the exec process (an exec probe that ran past its timeout).
    pub async fn kill(&self, signal: u32) -> Result<(), Error> {
        let c = &self.client;
        c.tasks()
            .kill(c.request(KillRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                signal,
                all: false,
            }))
            .await
            .map_err(|s| not_found_or(&self.container_id, s, "kill exec process"))?;
        Ok(())
    }

    /// Removes the exited process from the shim and our FIFOs from disk.
    pub async fn delete(&self) {
        let c = &self.client;
        if let Err(s) = c
            .tasks()
            .delete_process(c.request(DeleteProcessRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            }))
            .await
        {
            if s.code() != tonic::Code::NotFound {
                tracing::debug!(exec_id = %self.exec_id, error = %s.message(), "exec process not deleted");
            }
        }
        let _ = std::fs::remove_dir_all(&self.fifo_dir);
    }
}

impl Runtime {
    /// Starts `req.args` inside the running container `container_id`.
    pub async fn exec(&self, container_id: &str, req: &ExecRequest) -> Result<ExecProcess, Error> {
        if req.args.is_empty() {
            return Err(Error::Invalid {
                id: container_id.to_string(),
                message: "exec needs a command".into(),
            });
        }
        let c = &self.client;
        let container = c
            .containers()
            .get(c.request(GetContainerRequest {
                id: container_id.to_string(),
            }))
            .await
            .map_err(|s| not_found_or(container_id, s, "get container"))?
            .into_inner()
            .container
            .ok_or_else(|| Error::NotFound(container_id.to_string()))?;
        let spec = container.spec.map(|a| a.value).unwrap_or_default();
        let process = exec_process_spec(&spec, req).map_err(|message| Error::Invalid {
            id: container_id.to_string(),
            message,
        })?;
        let exec_id = random_id();
        let fifo_dir = std::env::temp_dir().join(format!("k3rs-exec-{exec_id}"));
        let handle = ExecHandle {
            client: c.clone(),
            container_id: container_id.to_string(),
            exec_id: exec_id.clone(),
            fifo_dir: fifo_dir.clone(),
        };
        let result = self.start_exec(&handle, req, &process).await;
        if result.is_err() {
            handle.delete().await;
        }
        result
    }

    async fn start_exec(
        &self,
        handle: &ExecHandle,
        req: &ExecRequest,
        process: &Value,
    ) -> Result<ExecProcess, Error> {
        let io_err = |what: &str| CtrdError::io(format!("exec {what}"));
        std::fs::create_dir_all(&handle.fifo_dir).map_err(io_err("fifo directory"))?;
        let fifo = |name: &str, wanted: bool| -> Result<Option<PathBuf>, Error> {
            if !wanted {
                return Ok(None);
            }
            let path = handle.fifo_dir.join(name);
            mkfifo(&path).map_err(io_err("mkfifo"))?;
            Ok(Some(path))
        };
        let stdin_path = fifo("stdin", req.stdin)?;
        // The runc shim opens both output paths whenever it copies pipes (an empty
        // one fails), so both always exist; unwanted output is read and dropped.
        let stdout_path = fifo("stdout", true)?;
        let stderr_path = fifo("stderr", !req.tty)?;

        let mut keepalive = Vec::new();
        let mut open_reader = |path: &Option<PathBuf>| -> Result<Option<pipe::Receiver>, Error> {
            let Some(path) = path else { return Ok(None) };
            let rx = pipe::OpenOptions::new()
                .open_receiver(path)
                .map_err(io_err("open output fifo"))?;
            keepalive.push(
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(path)
                    .map_err(io_err("open output fifo"))?,
            );
            Ok(Some(rx))
        };
        let stdout = open_reader(&stdout_path)?;
        let stderr = open_reader(&stderr_path)?;
        // Read-write so the open never blocks or fails for want of the shim's reader.
        let stdin = match &stdin_path {
            Some(p) => Some(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(p)
                    .map_err(io_err("open stdin fifo"))?,
            ),
            None => None,
        };
        let path_str = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let bytes = serde_json::to_vec(process).map_err(|e| Error::Invalid {
            id: handle.container_id.clone(),
            message: format!("cannot encode process spec: {e}"),
        })?;
        let c = &self.client;
        c.tasks()
            .exec(c.request(ExecProcessRequest {
                container_id: handle.container_id.clone(),
                stdin: path_str(&stdin_path),
                stdout: path_str(&stdout_path),
                stderr: path_str(&stderr_path),
                terminal: req.tty,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.to_string(),
                    value: bytes,
                }),
                exec_id: handle.exec_id.clone(),
            }))
            .await
            .map_err(|s| not_found_or(&handle.container_id, s, "exec in container"))?;
        c.tasks()
            .start(c.request(StartRequest {
                container_id: handle.container_id.clone(),
                exec_id: handle.exec_id.clone(),
            }))
            .await
            .map_err(|s| not_found_or(&handle.container_id, s, "start exec process"))?;
        drop(keepalive);
        Ok(ExecProcess {
            stdin,
            stdout,
            stderr,
            handle: handle.clone(),
        })
    }

    /// Resizes the terminal of a container's main process (attach with a tty).
    pub async fn resize_task_pty(&self, id: &str, width: u16, height: u16) -> Result<(), Error> {
        resize_pty(&self.client, id, "", width, height).await
    }
}

async fn resize_pty(
    c: &Client,
    container_id: &str,
    exec_id: &str,
    width: u16,
    height: u16,
) -> Result<(), Error> {
    c.tasks()
        .resize_pty(c.request(ResizePtyRequest {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            width: width as u32,
            height: height as u32,
        }))
        .await
        .map_err(|s| not_found_or(container_id, s, "resize terminal"))?;
    Ok(())
}

/// The exec process spec: the container's `process` with our args and terminal (and
/// `TERM=xterm` on a terminal, as containerd's CRI plugin adds).
pub fn exec_process_spec(container_spec: &[u8], req: &ExecRequest) -> Result<Value, String> {
    let spec: Value = serde_json::from_slice(container_spec)
        .map_err(|e| format!("container spec is not valid JSON: {e}"))?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or("container spec has no process")?;
    let obj = process
        .as_object_mut()
        .ok_or("container spec's process is not an object")?;
    obj.insert("args".into(), Value::from(req.args.clone()));
    obj.insert("terminal".into(), Value::Bool(req.tty));
    obj.remove("consoleSize");
    if req.tty {
        let env = obj.entry("env").or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = env.as_array_mut() {
            if !list
                .iter()
                .any(|e| e.as_str().is_some_and(|s| s.starts_with("TERM=")))
            {
                list.push(Value::from("TERM=xterm"));
            }
        }
    }
    Ok(process)
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// 16 random bytes as hex: exec ids must be unique per container.
fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No system randomness: fall back to time and pid, still unique enough here.
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        b = (n ^ ((std::process::id() as u128) << 96)).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_spec_keeps_the_container_context() {
        let spec = serde_json::json!({
            "ociVersion": "1.1.0",
            "process": {
                "args": ["sh"], "cwd": "/srv", "env": ["PATH=/bin"],
                "user": {"uid": 1000, "gid": 1000}, "terminal": false,
                "consoleSize": {"height": 1, "width": 1}
            }
        });
        let bytes = serde_json::to_vec(&spec).expect("json");
        let req = ExecRequest {
            args: vec!["ls".into(), "-l".into()],
            tty: true,
            stdout: true,
            ..Default::default()
        };
        let p = exec_process_spec(&bytes, &req).expect("process");
        assert_eq!(p["args"], serde_json::json!(["ls", "-l"]));
        assert_eq!(p["cwd"], "/srv");
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["terminal"], true);
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin", "TERM=xterm"]));
        assert!(p.get("consoleSize").is_none());
        let plain = exec_process_spec(
            &bytes,
            &ExecRequest {
                args: vec!["true".into()],
                ..Default::default()
            },
        )
        .expect("process");
        assert_eq!(plain["env"], serde_json::json!(["PATH=/bin"]));
        assert!(exec_process_spec(b"{}", &req).is_err());
    }

    #[test]
    fn random_ids_differ() {
        let a = random_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_id());
    }
}
