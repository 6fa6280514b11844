//! Measurement helpers shared by the benchmarks (not every bench uses every helper).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Resident memory of a process in MB (VmRSS).
pub fn rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The `p` quantile (0..=1) of sorted durations, in milliseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A k3rs process started by a benchmark: SIGTERM on drop, then SIGKILL after 30 s.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// Starts the bench-built `k3rs` with `args`, an empty config file and its output in
/// `dir/log`.
pub fn start_k3rs(dir: &Path, args: &[&str], log: &str) -> Proc {
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, "# benchmark: settings come from flags\n").expect("config");
    let log = std::fs::File::create(dir.join(log)).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_k3rs"))
        .args(args)
        .env("K3RS_CONFIG_FILE", &cfg)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start k3rs");
    Proc(child)
}

/// Starts `k3rs server --disable-agent` on 127.0.0.1:`port` with its data in `data` and
/// the admin kubeconfig at `kubeconfig`.
pub fn start_server(dir: &Path, port: &str, data: &Path, kubeconfig: &Path) -> Proc {
    start_k3rs(
        dir,
        &[
            "server",
            "--disable-agent",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            port,
            "--data-dir",
            &data.to_string_lossy(),
            "--write-kubeconfig",
            &kubeconfig.to_string_lossy(),
        ],
        "server.log",
    )
}
