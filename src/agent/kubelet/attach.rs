//! An attach session: connects a client to a container's main process. Its output
//! already goes to the CRI log file through the shim's logger, so attach output is
//! the log file followed from now; stdin goes into the container's stdin FIFO (the
//! pod worker starts containers with `stdin: true` with one, label
//! [`LABEL_STDIN_FIFO`]); resizes go to the task's terminal. The session ends with a
//! Success status when the container exits, or when the client leaves.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use crate::agent::layout::{LABEL_LOG_PATH, LABEL_STDIN_FIFO, LABEL_TTY};
use crate::agent::runtime::{ContainerInfo, Runtime};

use super::logs::format::{parse_record, Stream};
use super::logs::{task_exited, Follower};
use super::remote::{self, Io, Options};

const POLL: Duration = Duration::from_millis(100);

/// Runs an attach session for a connected client until the container exits or the
/// client leaves. `follower` must have been opened (at the log's end) before the
/// upgrade, so no output written meanwhile is lost.
pub async fn run(
    runtime: Runtime,
    container: ContainerInfo,
    opts: Options,
    follower: Option<Follower>,
    io: Io,
) {
    let Io {
        stdin,
        resize,
        out,
        mut closed,
    } = io;
    let id = container.id.clone();
    let tty = container.labels.get(LABEL_TTY).is_some_and(|v| v == "true");
    if let Some(mut rx) = stdin {
        let fifo = container
            .labels
            .get(LABEL_STDIN_FIFO)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        tokio::spawn(async move {
            // Read-write: never blocks, and the shim keeps its own end open, so our
            // close does not end the container's stdin (kubectl detaching).
            let mut pipe = fifo.and_then(|p| {
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(&p)
                    .map_err(|e| tracing::debug!(fifo = %p.display(), error = %e, "stdin FIFO not opened"))
                    .ok()
            });
            while let Some(data) = rx.recv().await {
                if let Some(p) = pipe.as_mut() {
                    if p.write_all(&data).await.is_err() {
                        pipe = None;
                    }
                }
            }
        });
    }
    if let Some(mut rx) = resize {
        let runtime = runtime.clone();
        let id = id.clone();
        tokio::spawn(async move {
            while let Some(size) = rx.recv().await {
                if let Err(e) = runtime.resize_task_pty(&id, size.width, size.height).await {
                    tracing::debug!(error = %e, "attach resize failed");
                }
            }
        });
    }
    let path = container.labels.get(LABEL_LOG_PATH).map(PathBuf::from);
    let mut follower = follower;
    let mut lines = Vec::new();
    let mut exited_polls = 0u32;
    loop {
        if *closed.borrow() {
            return;
        }
        if follower.is_none() {
            if let Some(p) = &path {
                follower = Follower::open(p, false).await.ok();
            }
        }
        let mut got = false;
        if let Some(f) = follower.as_mut() {
            got = f.read_lines(&mut lines).await.unwrap_or(0) > 0;
            if !got && f.rotated().await {
                follower = None;
                continue;
            }
        }
        for raw in lines.drain(..) {
            let Some(rec) = parse_record(&raw) else {
                continue;
            };
            let mut data = rec.content.to_vec();
            if !rec.partial {
                // The logger drops the terminal's "\r"; a raw-mode client needs it back.
                data.extend_from_slice(if tty { b"\r\n" } else { b"\n" });
            }
            let sent = match rec.stream {
                Stream::Stdout if opts.stdout => out.stdout(&data).await,
                Stream::Stderr if opts.stderr => out.stderr(&data).await,
                Stream::Stderr if tty && opts.stdout => out.stdout(&data).await,
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
        if got {
            continue;
        }
        if exited_polls > 0 || task_exited(&runtime, &id).await {
            exited_polls += 1;
            if exited_polls > 5 {
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = closed.changed() => {}
        }
    }
    out.finish(&remote::status_success()).await;
}
