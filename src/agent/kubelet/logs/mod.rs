//! `GET /containerLogs/{namespace}/{pod}/{container}`: one attempt's CRI log files
//! (rotated ones oldest first, then the live one) shaped by the `kubectl logs`
//! options ([`format`]) into a plain-text body; with `follow`, the body goes on with
//! what the logger appends (across rotations) until that attempt's task has exited
//! and the file is drained, or the client goes away.
//!
//! Following polls the file (100 ms when idle) rather than using inotify: one small
//! stat per idle tick is cheap, and it behaves the same on every filesystem.

pub mod format;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

use crate::agent::layout::LABEL_LOG_PATH;
use crate::agent::logger::rotated_files;
use crate::agent::runtime::{Runtime, TaskStatus};
use crate::server::http::request::Query;

use super::containers::{self, Which};
use super::KubeletError;
use format::{parse_record, Assembler, LogOptions, Shaper};

const POLL: Duration = Duration::from_millis(100);
/// Idle polls after the task exited before the stream ends: the shim's logger may
/// still be writing the last lines it drained from the pipes.
const DRAIN_POLLS: u32 = 5;
/// Output is sent in pieces of about this size.
const CHUNK: usize = 32 * 1024;

/// Starts serving one container's logs: validates the request, then streams the body
/// through the returned channel.
pub async fn container_logs(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &Query,
) -> Result<mpsc::Receiver<Bytes>, KubeletError> {
    let opts =
        LogOptions::parse(query, jiff::Timestamp::now()).map_err(KubeletError::bad_request)?;
    let which = if opts.previous {
        Which::Previous
    } else {
        Which::Newest
    };
    let info = containers::find(runtime, namespace, pod, container, which).await?;
    let path = info
        .labels
        .get(LABEL_LOG_PATH)
        .map(PathBuf::from)
        .ok_or_else(|| {
            KubeletError::not_found(format!(
                "container {container:?} in pod {pod:?} has no log file"
            ))
        })?;
    let (tx, rx) = mpsc::channel(8);
    let runtime = runtime.clone();
    tokio::spawn(async move {
        let mut out = Output {
            tx,
            buf: Vec::new(),
        };
        if let Err(e) = stream(&runtime, &info.id, &path, &opts, &mut out).await {
            tracing::debug!(container = %info.id, error = %e, "log stream ended early");
        }
        let _ = out.flush().await;
    });
    Ok(rx)
}

/// Buffers output and sends it in chunks; `Err` when the client went away.
struct Output {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("client went away")]
    Gone,
    #[error("reading the log: {0}")]
    Io(#[from] std::io::Error),
}

impl Output {
    async fn push(&mut self, bytes: Vec<u8>) -> Result<(), StreamEnd> {
        self.buf.extend(bytes);
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StreamEnd> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send(b).await.map_err(|_| StreamEnd::Gone)
    }
}

async fn stream(
    runtime: &Runtime,
    id: &str,
    path: &Path,
    opts: &LogOptions,
    out: &mut Output,
) -> Result<(), StreamEnd> {
    let mut asm = Assembler::default();
    let mut shaper = Shaper::new(opts);
    let mut lines = Vec::new();
    for old in rotated_files(path) {
        let mut f = match Follower::open(&old, false).await {
            Ok(f) => f,
            Err(_) => continue, // rotated away meanwhile
        };
        f.read_lines(&mut lines).await?;
        feed(&mut asm, &mut shaper, &mut lines, out).await?;
        if shaper.done() {
            return Ok(());
        }
    }
    let mut live = Follower::open(path, false).await.ok();
    if let Some(f) = live.as_mut() {
        f.read_lines(&mut lines).await?;
        feed(&mut asm, &mut shaper, &mut lines, out).await?;
    }
    if !opts.follow {
        for line in asm.flush() {
            out.push(shaper.line(line)).await?;
        }
        out.push(shaper.end_of_backlog()).await?;
        return Ok(());
    }
    out.push(shaper.end_of_backlog()).await?;
    out.flush().await?;
    let mut exited_polls = 0;
    while !shaper.done() {
        let mut got = false;
        match live.as_mut() {
            Some(f) => {
                got = f.read_lines(&mut lines).await? > 0;
                if !got && f.rotated().await {
                    // Everything up to the rename was read; go on with the new file.
                    live = Follower::open(path, false).await.ok();
                    continue;
                }
            }
            None => live = Follower::open(path, false).await.ok(),
        }
        if got {
            feed(&mut asm, &mut shaper, &mut lines, out).await?;
            out.flush().await?;
            continue;
        }
        if out.tx.is_closed() {
            return Err(StreamEnd::Gone);
        }
        if exited_polls > 0 || task_exited(runtime, id).await {
            exited_polls += 1;
            if exited_polls > DRAIN_POLLS {
                for line in asm.flush() {
                    out.push(shaper.line(line)).await?;
                }
                return Ok(());
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

async fn feed(
    asm: &mut Assembler,
    shaper: &mut Shaper,
    lines: &mut Vec<Vec<u8>>,
    out: &mut Output,
) -> Result<(), StreamEnd> {
    for raw in lines.drain(..) {
        let Some(rec) = parse_record(&raw) else {
            continue;
        };
        if let Some(line) = asm.push(&rec) {
            out.push(shaper.line(line)).await?;
        }
        if shaper.done() {
            break;
        }
    }
    Ok(())
}

/// Whether the attempt's task is gone or stopped (containerd errors count as
/// running: the stream goes on and asks again).
pub async fn task_exited(runtime: &Runtime, id: &str) -> bool {
    match runtime.task(id).await {
        Ok(None) => true,
        Ok(Some(t)) => t.status == TaskStatus::Stopped,
        Err(crate::agent::runtime::Error::NotFound(_)) => true,
        Err(_) => false,
    }
}

/// Reads whole lines from a log file as they are appended, and notices rotation.
pub struct Follower {
    path: PathBuf,
    reader: BufReader<tokio::fs::File>,
    ino: u64,
    /// Bytes of a line whose newline has not been written yet.
    partial: Vec<u8>,
}

impl Follower {
    /// Opens `path`, at its end when `at_end` (attach: only what comes next).
    pub async fn open(path: &Path, at_end: bool) -> std::io::Result<Follower> {
        use std::os::unix::fs::MetadataExt;
        let mut file = tokio::fs::File::open(path).await?;
        let ino = file.metadata().await?.ino();
        if at_end {
            file.seek(std::io::SeekFrom::End(0)).await?;
        }
        Ok(Follower {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(64 * 1024, file),
            ino,
            partial: Vec::new(),
        })
    }

    /// Appends the complete lines readable now (without newlines) to `out`; returns
    /// how many.
    pub async fn read_lines(&mut self, out: &mut Vec<Vec<u8>>) -> std::io::Result<usize> {
        let mut n = 0;
        loop {
            let mut line = std::mem::take(&mut self.partial);
            let read = self.reader.read_until(b'\n', &mut line).await?;
            if read == 0 || line.last() != Some(&b'\n') {
                self.partial = line;
                return Ok(n);
            }
            line.pop();
            out.push(line);
            n += 1;
            if n >= 4096 {
                return Ok(n);
            }
        }
    }

    /// Whether the path now names another file (the logger rotated).
    pub async fn rotated(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match tokio::fs::metadata(&self.path).await {
            Ok(m) => m.ino() != self.ino,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn follower_returns_whole_lines_and_sees_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(b"a\nb").expect("write");
        let mut fol = Follower::open(&path, false).await.expect("open");
        let mut lines = Vec::new();
        assert_eq!(fol.read_lines(&mut lines).await.expect("read"), 1);
        f.write_all(b"c\n").expect("write");
        fol.read_lines(&mut lines).await.expect("read");
        assert_eq!(lines, vec![b"a".to_vec(), b"bc".to_vec()]);
        assert!(!fol.rotated().await);
        std::fs::rename(&path, dir.path().join("0.log.20240101-000000")).expect("rename");
        std::fs::write(&path, b"new\n").expect("new file");
        assert!(fol.rotated().await);
        let at_end = Follower::open(&path, true).await.expect("open");
        assert!(at_end.partial.is_empty());
    }
}
