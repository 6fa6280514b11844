//! The container log writer the runc shim runs for every container (containerd's
//! `binary://` log URI): it reads the container's stdout and stderr pipes and appends
//! CRI-format lines (`<RFC3339Nano> stdout F <line>`) to the container's log file,
//! the format `kubectl logs` expects from a kubelet.
//!
//! Why a shim-side logger rather than FIFOs the agent drains: the logger is a child of
//! the shim, not of the agent, so a container keeps logging (and never blocks on a
//! full pipe) while the agent restarts or is down; and nothing has to be reopened when
//! the agent comes back. `file://` would survive too, but writes raw bytes, not CRI
//! lines. The cost is one small process per running container.
//!
//! The shim starts `binary` with the URI's query pairs as arguments (in random order,
//! from a Go map), fd 3 = stdout, fd 4 = stderr, fd 5 = a pipe it waits on until we
//! close it. It closes its ends of the pipes when the task is deleted and sends
//! SIGTERM; we ignore SIGTERM, drain to EOF and exit. The k3rs binary runs this when
//! its arguments carry [`LOGGER_ARG`] ([`run_if_invoked`], first thing in `main`).

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The argument (URI query key) that marks a logger invocation; its value is the
/// log file.
pub const LOGGER_ARG: &str = "k3rs-cri-logger";
const MAX_SIZE_ARG: &str = "max-size";
const MAX_FILES_ARG: &str = "max-files";

/// Longest line content before it is split into partial (`P`) lines, like
/// containerd's CRI plugin (`max_container_log_line_size`).
const MAX_LINE: usize = 16 * 1024;

/// What the logger writes and when it rotates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerConfig {
    pub path: PathBuf,
    /// Rotate when the file reaches this size (0: never).
    pub max_size: u64,
    /// Files kept, the live one included (rotated ones are `<path>.<timestamp>`).
    pub max_files: usize,
}

impl LoggerConfig {
    pub fn new(path: &Path) -> LoggerConfig {
        LoggerConfig {
            path: path.to_path_buf(),
            max_size: 10 << 20,
            max_files: 5,
        }
    }

    /// The `binary://` URI that makes the shim run `binary` as this logger.
    pub fn uri(&self, binary: &Path) -> String {
        format!(
            "binary://{}?{LOGGER_ARG}={}&{MAX_SIZE_ARG}={}&{MAX_FILES_ARG}={}",
            percent_encode(binary.as_os_str().as_bytes(), true),
            percent_encode(self.path.as_os_str().as_bytes(), false),
            self.max_size,
            self.max_files,
        )
    }

    /// Recognises a logger invocation from the full argument list (program first).
    pub fn from_args(args: &[OsString]) -> Option<LoggerConfig> {
        let pairs = args.get(1..)?;
        let mut config: Option<LoggerConfig> = None;
        let mut max_size = None;
        let mut max_files = None;
        for pair in pairs.chunks(2) {
            let [key, value] = pair else { return None };
            match key.to_str() {
                Some(LOGGER_ARG) => config = Some(LoggerConfig::new(Path::new(value))),
                Some(MAX_SIZE_ARG) => max_size = value.to_str().and_then(|v| v.parse().ok()),
                Some(MAX_FILES_ARG) => max_files = value.to_str().and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
        let mut config = config?;
        if let Some(s) = max_size {
            config.max_size = s;
        }
        if let Some(n) = max_files {
            config.max_files = std::cmp::max(n, 1);
        }
        Some(config)
    }
}

/// Percent-encodes for a URI path (keeping `/`) or a query value.
fn percent_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// If this process was started as a shim logger, logs until the container's pipes
/// close and exits; otherwise returns.
pub fn run_if_invoked() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(config) = LoggerConfig::from_args(&args) {
        std::process::exit(run(&config));
    }
}

/// The logger's main: returns the exit code.
pub fn run(config: &LoggerConfig) -> i32 {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions. The shim's
    // SIGTERM comes after it closed the pipes; EOF ends us after the last line.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let writer = match Writer::open(config.clone()) {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            // Nowhere to log to; keep the container running by still draining.
            eprintln!("k3rs logger: {}: {e}", config.path.display());
            close_ready_fd();
            drain_fds();
            return 1;
        }
    };
    close_ready_fd();
    let mut threads = Vec::new();
    for (fd, stream) in [(3, "stdout"), (4, "stderr")] {
        if !fd_is_open(fd) {
            continue;
        }
        // SAFETY: fds 3 and 4 were handed to us by the shim and nothing else owns them.
        let file = unsafe { File::from_raw_fd(fd) };
        let writer = writer.clone();
        threads.push(std::thread::spawn(move || {
            copy_lines(file, stream, &writer)
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    0
}

fn close_ready_fd() {
    // SAFETY: fd 5 is the shim's readiness pipe; closing it is the signal.
    unsafe {
        libc::close(5);
    }
}

fn fd_is_open(fd: libc::c_int) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn drain_fds() {
    for fd in [3, 4] {
        if fd_is_open(fd) {
            // SAFETY: as in `run`.
            let mut f = unsafe { File::from_raw_fd(fd) };
            let _ = std::io::copy(&mut f, &mut std::io::sink());
        }
    }
}

/// Splits a stream into CRI lines: `F` for a complete line, `P` for a piece of a line
/// longer than [`MAX_LINE`] or a last line without newline (as containerd does).
fn copy_lines(mut input: impl Read, stream: &str, writer: &Mutex<Writer>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + pos];
            emit(writer, stream, line);
            start += pos + 1;
        }
        pending.drain(..start);
        while pending.len() > MAX_LINE {
            let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            emit_piece(writer, stream, &piece, 'P');
        }
    }
    if !pending.is_empty() {
        emit_piece(writer, stream, &pending, 'P');
    }
}

fn emit(writer: &Mutex<Writer>, stream: &str, line: &[u8]) {
    // bufio.ReadLine drops a "\r" before the newline too.
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut chunks = line.chunks(MAX_LINE).peekable();
    if chunks.peek().is_none() {
        emit_piece(writer, stream, b"", 'F');
        return;
    }
    while let Some(chunk) = chunks.next() {
        let tag = if chunks.peek().is_some() { 'P' } else { 'F' };
        emit_piece(writer, stream, chunk, tag);
    }
}

fn emit_piece(writer: &Mutex<Writer>, stream: &str, content: &[u8], tag: char) {
    let record = format_line(jiff::Timestamp::now(), stream, tag, content);
    if let Ok(mut w) = writer.lock() {
        w.write_record(&record);
    }
}

/// One CRI log line.
pub fn format_line(at: jiff::Timestamp, stream: &str, tag: char, content: &[u8]) -> Vec<u8> {
    let mut out = format!("{at} {stream} {tag} ").into_bytes();
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// The log file, with rotation by size.
struct Writer {
    config: LoggerConfig,
    file: File,
    size: u64,
}

impl Writer {
    fn open(config: LoggerConfig) -> std::io::Result<Writer> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)?;
        let size = file.metadata()?.len();
        Ok(Writer { config, file, size })
    }

    fn write_record(&mut self, record: &[u8]) {
        // One write per line: O_APPEND keeps the two streams' lines whole.
        if self.file.write_all(record).is_ok() {
            self.size += record.len() as u64;
        }
        if self.config.max_size > 0 && self.size >= self.config.max_size {
            if let Err(e) = self.rotate() {
                eprintln!("k3rs logger: rotate {}: {e}", self.config.path.display());
            }
        }
    }

    /// `0.log` → `0.log.<UTC yyyymmdd-hhmmss[.n]>`, then a fresh `0.log`; the oldest
    /// rotated files beyond `max_files - 1` are removed.
    fn rotate(&mut self) -> std::io::Result<()> {
        let path = self.config.path.clone();
        let path = path.as_path();
        let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        let mut target = PathBuf::from(format!("{}.{stamp}", path.display()));
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!("{}.{stamp}.{n}", path.display()));
            n += 1;
        }
        std::fs::rename(path, &target)?;
        *self = Writer::open(self.config.clone())?;
        let keep = self.config.max_files.saturating_sub(1);
        let mut rotated = rotated_files(path);
        rotated.sort();
        let excess = rotated.len().saturating_sub(keep);
        for old in rotated.into_iter().take(excess) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }
}

/// Rotated files of `path`, oldest first by name.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().starts_with(&prefix))
                        .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8], max_size: u64) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = LoggerConfig::new(&dir.path().join("c/0.log"));
        config.max_size = max_size;
        let writer = Mutex::new(Writer::open(config).expect("open"));
        copy_lines(input, "stdout", &writer);
        let text = std::fs::read_to_string(dir.path().join("c/0.log")).expect("read");
        (dir, text.lines().map(str::to_string).collect())
    }

    /// Drops the timestamp: "stdout F hello".
    fn rest(line: &str) -> &str {
        line.split_once(' ').map(|(_, r)| r).unwrap_or("")
    }

    #[test]
    fn writes_cri_lines() {
        let (_d, lines) = lines_of(b"hello\r\nworld\n\nlast", 0);
        let got: Vec<&str> = lines.iter().map(|l| rest(l)).collect();
        assert_eq!(
            got,
            vec![
                "stdout F hello",
                "stdout F world",
                "stdout F ",
                "stdout P last"
            ]
        );
        let ts = lines[0].split(' ').next().expect("timestamp");
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn long_lines_are_split_into_partials() {
        let mut input = vec![b'a'; MAX_LINE + 10];
        input.push(b'\n');
        let (_d, lines) = lines_of(&input, 0);
        assert_eq!(lines.len(), 2);
        assert!(rest(&lines[0]).starts_with("stdout P aaa"));
        assert_eq!(rest(&lines[1]), format!("stdout F {}", "a".repeat(10)));
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let config = LoggerConfig {
            path: path.clone(),
            max_size: 100,
            max_files: 2,
        };
        let writer = Mutex::new(Writer::open(config).expect("open"));
        for _ in 0..3 {
            copy_lines(&[b'x'; 120][..], "stdout", &writer);
        }
        assert!(
            rotated_files(&path).len() <= 1,
            "{:?}",
            rotated_files(&path)
        );
        assert!(path.exists());
    }

    #[test]
    fn uri_round_trips_through_shim_arguments() {
        let config = LoggerConfig::new(Path::new("/var/log/pods/ns_p_uid/c 1/0.log"));
        let uri = config.uri(Path::new("/usr/local/bin/k3rs"));
        assert!(uri.starts_with("binary:///usr/local/bin/k3rs?k3rs-cri-logger="));
        assert!(uri.contains("c%201%2F0.log"), "{uri}");
        // The shim decodes the query and passes key, value pairs in any order.
        let args: Vec<OsString> = [
            "/usr/local/bin/k3rs",
            "max-files",
            "5",
            LOGGER_ARG,
            "/var/log/pods/ns_p_uid/c 1/0.log",
            "max-size",
            "1000",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let parsed = LoggerConfig::from_args(&args).expect("logger invocation");
        assert_eq!(parsed.path, config.path);
        assert_eq!(parsed.max_size, 1000);
        assert_eq!(parsed.max_files, 5);
        let plain: Vec<OsString> = ["k3rs", "server"].iter().map(OsString::from).collect();
        assert_eq!(LoggerConfig::from_args(&plain), None);
    }
}
