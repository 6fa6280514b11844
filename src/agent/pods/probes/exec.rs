//! The exec probe: runs the command in the container (through containerd, like
//! `kubectl exec`), exit code 0 is success; the output (at most 10 KiB, stdout and
//! stderr together) is the failure message. A command still running at the timeout is
//! killed and the probe fails with upstream's `command "..." timed out`.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::Outcome;
use crate::agent::runtime::exec::ExecRequest;
use crate::agent::runtime::Runtime;

/// Output kept for the message, as upstream limits it.
const MAX_OUTPUT: usize = 10 * 1024;

/// Runs `command` in container `id` within `timeout`.
pub async fn probe_exec(
    runtime: &Runtime,
    id: &str,
    command: &[String],
    timeout: Duration,
) -> Outcome {
    let req = ExecRequest {
        args: command.to_vec(),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    };
    let mut process = match runtime.exec(id, &req).await {
        Ok(p) => p,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let handle = process.handle();
    let stdout = process.stdout.take();
    let stderr = process.stderr.take();
    let run = async {
        let (out, err, code) =
            tokio::join!(read_capped(stdout), read_capped(stderr), handle.wait());
        (out, err, code)
    };
    let result = tokio::time::timeout(timeout, run).await;
    let outcome = match result {
        Ok((mut out, err, code)) => {
            out.extend_from_slice(&err);
            out.truncate(MAX_OUTPUT);
            match code {
                Ok(0) => Outcome::Success,
                Ok(_) => Outcome::Failure(String::from_utf8_lossy(&out).into_owned()),
                Err(e) => Outcome::Error(e.to_string()),
            }
        }
        Err(_) => {
            // Kill it so that a hung probe command does not pile up in the container.
            if let Err(e) = handle.kill(libc::SIGKILL as u32).await {
                tracing::debug!(container = %id, error = %e, "cannot kill a timed-out exec probe");
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), handle.wait()).await;
            Outcome::Failure(format!("command {:?} timed out", command.join(" ")))
        }
    };
    handle.delete().await;
    outcome
}

/// Reads a pipe to its end, keeping the first [`MAX_OUTPUT`] bytes.
async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}
