//! An exec session: runs the command in the container through
//! [`Runtime::exec`](crate::agent::runtime::Runtime::exec) and connects it to the
//! remote command channels: stdin in (its close closes the process' stdin), output
//! out, terminal resizes, and the exit code as the final status (upstream's
//! `NonZeroExitCode` status, which kubectl turns into its own exit code).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::agent::runtime::exec::{ExecHandle, ExecRequest};
use crate::agent::runtime::Runtime;

use super::remote::{self, Io, Options, Output};

/// Runs `command` in container `id` for a connected client, until it exits.
pub async fn run(runtime: Runtime, id: String, command: Vec<String>, opts: Options, io: Io) {
    let Io {
        stdin,
        resize,
        out,
        closed: _,
    } = io;
    let req = ExecRequest {
        args: command.clone(),
        tty: opts.tty,
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
    };
    let mut process = match runtime.exec(&id, &req).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(container = %id, error = %e, "exec failed to start");
            out.finish(&remote::status_internal(&e.to_string())).await;
            return;
        }
    };
    let handle = process.handle();
    if let (Some(mut rx), Some(mut pipe)) = (stdin, process.stdin.take()) {
        let h = handle.clone();
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if pipe.write_all(&data).await.is_err() {
                    break;
                }
            }
            drop(pipe);
            if let Err(e) = h.close_stdin().await {
                tracing::debug!(error = %e, "exec stdin close not delivered");
            }
        });
    }
    if let Some(mut rx) = resize {
        let h = handle.clone();
        tokio::spawn(async move {
            while let Some(size) = rx.recv().await {
                if let Err(e) = h.resize(size.width, size.height).await {
                    tracing::debug!(error = %e, "exec resize failed");
                }
            }
        });
    }
    let out = std::sync::Arc::new(out);
    let mut pumps = Vec::new();
    let outputs = [
        (process.stdout.take(), false, opts.stdout),
        (process.stderr.take(), true, opts.stderr),
    ];
    for (pipe, is_err, wanted) in outputs {
        if let Some(pipe) = pipe {
            pumps.push(tokio::spawn(pump(pipe, out.clone(), is_err, wanted)));
        }
    }
    let status = match handle.wait().await {
        Ok(0) => remote::status_success(),
        Ok(code) => remote::status_exit_code(&command, code),
        Err(e) => {
            for p in &pumps {
                p.abort();
            }
            remote::status_internal(&e.to_string())
        }
    };
    // The output is complete once the shim closed its FIFO ends.
    for p in pumps {
        let _ = p.await;
    }
    finish(out, &status).await;
    cleanup(handle).await;
}

/// Copies one output pipe to the client (`wanted`); unwanted output, and output
/// after the client is gone, is drained so the process never blocks on a full pipe.
async fn pump<R: AsyncRead + Unpin>(
    mut pipe: R,
    out: std::sync::Arc<Output>,
    is_err: bool,
    wanted: bool,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut gone = !wanted;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if gone {
            continue;
        }
        let sent = if is_err {
            out.stderr(&buf[..n]).await
        } else {
            out.stdout(&buf[..n]).await
        };
        gone = sent.is_err();
    }
}

async fn finish(out: std::sync::Arc<Output>, status: &serde_json::Value) {
    match std::sync::Arc::try_unwrap(out) {
        Ok(out) => out.finish(status).await,
        Err(_) => tracing::debug!("exec output still in use; status not sent"),
    }
}

async fn cleanup(handle: ExecHandle) {
    handle.delete().await;
}
