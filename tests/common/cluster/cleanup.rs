//! Removing everything a test cluster made, also when its process died: processes (by
//! network namespace — node or pod — and by the cluster dir on their command line), the
//! pod cgroups of killed containers, mounts under the cluster dir, the named network
//! namespaces, and the dir itself. Also finds what is left of a cluster (for the cleanup
//! test) and the clusters of test processes that are gone (removed when a harness starts).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::lan;

/// What a cluster owns: its named namespaces and its dir.
#[derive(Default)]
pub struct Owned {
    /// Names under /run/netns.
    pub netns: Vec<String>,
    /// The cluster's temporary dir (data, run and log dirs of every node).
    pub dir: PathBuf,
}

/// A mount point from /proc/self/mountinfo.
struct Mount {
    path: PathBuf,
    fstype: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts at or under `dir`, in mount order.
fn mounts_under(dir: &Path) -> Vec<Mount> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let path = PathBuf::from(unescape(left.split(' ').nth(4)?));
            let fstype = right.split(' ').next()?.to_string();
            path.starts_with(dir).then_some(Mount { path, fstype })
        })
        .collect()
}

/// (device, inode) of a namespace file: equal for every handle on the same namespace.
fn ns_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Pids of processes tied to `owned`: in one of its network namespaces (a node's, or a
/// pod's bind-mounted under its dir) or with its dir on the command line.
fn processes(owned: &Owned) -> Vec<i32> {
    let mut namespaces: HashSet<(u64, u64)> = owned
        .netns
        .iter()
        .filter_map(|n| ns_id(&lan::netns_path(n)))
        .collect();
    namespaces.extend(
        mounts_under(&owned.dir)
            .iter()
            .filter(|m| m.fstype == "nsfs")
            .filter_map(|m| ns_id(&m.path)),
    );
    let marker = owned.dir.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let in_ns = ns_id(&e.path().join("ns/net")).is_some_and(|id| namespaces.contains(&id));
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if in_ns || cmdline.contains(&marker) {
            pids.push(pid);
        }
    }
    pids
}

/// Pod uids from a process's cgroups (`.../k3rs/<uid>/<container>`).
fn pod_uids(pid: i32) -> Vec<String> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    cg.lines()
        .filter_map(|l| {
            let path = l.splitn(3, ':').nth(2)?;
            let rest = path.split("/k3rs/").nth(1)?;
            rest.split('/').next().map(str::to_string)
        })
        .filter(|u| !u.is_empty())
        .collect()
}

/// Removes the (now empty) cgroups of pod `uid` under every controller.
fn remove_pod_cgroups(uid: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join("k3rs").join(uid)];
    if let Ok(entries) = std::fs::read_dir(root) {
        dirs.extend(entries.flatten().map(|e| e.path().join("k3rs").join(uid)));
    }
    for d in dirs.iter().filter(|d| d.is_dir()) {
        if let Ok(children) = std::fs::read_dir(d) {
            for c in children.flatten() {
                let _ = std::fs::remove_dir(c.path());
            }
        }
        let _ = std::fs::remove_dir(d);
    }
}

/// Removes everything of `owned`; never panics (it runs in Drop, also while unwinding).
/// Says on stderr what it had to kill: after a graceful stop a leftover is worth a look.
pub fn purge(owned: &Owned, why: &str) {
    let mut uids = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pids = processes(owned);
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            uids.extend(pod_uids(pid));
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            eprintln!("cluster harness ({why}): killing leftover process {pid}: {cmd}");
            // SAFETY: kill(2) has no memory preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for uid in &uids {
        remove_pod_cgroups(uid);
    }
    // Deepest first; lazily, so a mount still busy for a moment goes away all the same.
    let mut mounts = mounts_under(&owned.dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.path.components().count()));
    for m in mounts {
        if let Ok(c) = std::ffi::CString::new(m.path.to_string_lossy().as_bytes()) {
            // SAFETY: `c` is a valid NUL-terminated path.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    for n in &owned.netns {
        if lan::netns_path(n).exists() && !lan::ip_quiet(&["netns", "delete", n]) {
            eprintln!("cluster harness ({why}): cannot delete network namespace {n}");
        }
    }
    if owned.dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&owned.dir) {
            eprintln!(
                "cluster harness ({why}): cannot remove {}: {e}",
                owned.dir.display()
            );
        }
    }
}

/// What remains of `owned`, one line per item (empty when nothing does).
pub fn remaining(owned: &Owned) -> Vec<String> {
    let mut left: Vec<String> = owned
        .netns
        .iter()
        .filter(|n| lan::netns_path(n).exists())
        .map(|n| format!("network namespace {n}"))
        .collect();
    left.extend(processes(owned).into_iter().map(|p| {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        format!(
            "process {p}: {}",
            String::from_utf8_lossy(&cmd).replace('\0', " ")
        )
    }));
    left.extend(
        mounts_under(&owned.dir)
            .into_iter()
            .map(|m| format!("mount {} ({})", m.path.display(), m.fstype)),
    );
    if owned.dir.exists() {
        left.push(format!("dir {}", owned.dir.display()));
    }
    left
}

/// Parses `k3rs-<pid>-<n>` at the start of `name` (a namespace or dir name).
fn owner_pid(name: &str, prefix: &str) -> Option<(i32, String)> {
    let rest = name.strip_prefix(prefix)?;
    let mut parts = rest.splitn(3, '-');
    let pid: i32 = parts.next()?.parse().ok()?;
    let n: u32 = parts.next()?.parse().ok()?;
    Some((pid, format!("{pid}-{n}")))
}

/// Removes the clusters of test processes that no longer run: namespaces named
/// `k3rs-<pid>-<n>-*` and dirs `<tmp>/k3rs-cluster-<pid>-<n>-*` whose pid is gone.
pub fn remove_stale() {
    let alive = |pid: i32| Path::new(&format!("/proc/{pid}")).exists();
    let mut stale: std::collections::BTreeMap<String, Owned> = Default::default();
    for n in lan::list_netns() {
        match owner_pid(&n, "k3rs-") {
            Some((pid, key)) if !alive(pid) => stale.entry(key).or_default().netns.push(n),
            _ => {}
        }
    }
    let tmp = std::fs::read_dir(std::env::temp_dir());
    for e in tmp.into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        match owner_pid(&name, "k3rs-cluster-") {
            Some((pid, key)) if !alive(pid) => stale.entry(key).or_default().dir = e.path(),
            _ => {}
        }
    }
    for (key, mut owned) in stale {
        if owned.dir.as_os_str().is_empty() {
            // No dir left: match nothing on command lines or mounts.
            owned.dir = PathBuf::from(format!("/nonexistent/k3rs-cluster-{key}"));
        }
        purge(&owned, &format!("stale cluster {key}"));
    }
}
