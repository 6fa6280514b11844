//! Host-local pod IP allocation for the built-in bridge CNI.
//!
//! Owns the on-disk allocation state of one pod network on this node, laid out like the
//! upstream CNI `host-local` plugin so an operator can read it with `ls` and `cat`:
//! `<data-dir>/agent/cni/ipam/<network>/` holds one file per allocated address, named by the
//! address (`10.42.0.7`) and containing the owner (the pod UID), plus `last_reserved_ip`, the
//! address handed out last. Allocation continues round-robin after that address, so an
//! address released by a deleted pod is not immediately given to the next pod (a stale
//! connection or conntrack entry to the old pod then does not reach the new one).
//!
//! Safety rules: an address file is created with `O_CREAT|O_EXCL`, so two allocations never
//! get the same address even from different processes; allocation is idempotent per owner,
//! which keeps the state
//! consistent when the agent crashes between allocating and setting up the pod network (the
//! retry gets the same address back). Files left without an owner by a crash mid-write, and
//! addresses of pods that no longer exist, are reclaimed by [`HostLocal::release_all_except`].
//!
//! Nothing is fsynced, on purpose: an agent crash keeps the page cache, so the files stay
//! exact; only a power loss can drop a recent write, and it also ends every pod on the node
//! (their namespaces and veths do not survive a reboot), so an address file lost or left
//! empty then refers to no running pod, and a pod set up again simply gets an address
//! from the state as found. fsync here cost 4–20 ms per pod under disk load, more than
//! the whole network setup.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use thiserror::Error;

use crate::config::parse_cidr;

/// Name of the file recording the address handed out last (round-robin cursor).
const LAST_RESERVED: &str = "last_reserved_ip";

/// Longest accepted owner id; pod UIDs are 36 characters, this leaves room for other ids.
const MAX_OWNER_LEN: usize = 253;

/// What went wrong allocating or releasing a pod address.
#[derive(Debug, Error)]
pub enum IpamError {
    /// The pod subnet cannot hold pod addresses.
    #[error("pod subnet {subnet:?} is invalid: {reason}; check the Node's spec.podCIDR")]
    BadSubnet {
        /// The subnet as given.
        subnet: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Every pod address of the subnet is in use.
    #[error(
        "no free pod address left in {subnet}: every address is allocated; delete unused \
         pods or give the node a larger pod CIDR (--node-cidr-mask-size)"
    )]
    Exhausted {
        /// The full subnet.
        subnet: Ipv4Subnet,
    },
    /// The owner id cannot be stored safely.
    #[error("invalid IPAM owner id {owner:?}: {reason}")]
    InvalidOwner {
        /// The rejected id.
        owner: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Reading or writing the state directory failed.
    #[error("IPAM state {path}: {source}; check that the agent data directory is writable")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// An IPv4 subnet with its host bits cleared, e.g. `10.42.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Subnet {
    /// The subnet of `addr/prefix`; host bits of `addr` are cleared. A prefix longer than
    /// /30 is rejected because it leaves no address after network, gateway and broadcast.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Subnet, IpamError> {
        if prefix > 30 {
            return Err(IpamError::BadSubnet {
                subnet: format!("{addr}/{prefix}"),
                reason: "a prefix longer than /30 leaves no pod addresses".into(),
            });
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Ok(Ipv4Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// The network address (all host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let size = 1u64 << (32 - u32::from(self.prefix));
        u32::from(ip)
            .checked_sub(u32::from(self.network))
            .is_some_and(|offset| u64::from(offset) < size)
    }

    /// Host offsets that may go to pods: after the network address and the gateway, before
    /// the broadcast address.
    fn pod_offsets(&self) -> (u64, u64) {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (2, size - 2)
    }

    fn offset_of(&self, ip: Ipv4Addr) -> u64 {
        u64::from(u32::from(ip)) - u64::from(u32::from(self.network))
    }

    fn at(&self, offset: u64) -> Ipv4Addr {
        // The offset is below the subnet size, so the sum stays a valid u32.
        Ipv4Addr::from(u32::from(self.network).wrapping_add(offset as u32))
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = IpamError;

    /// Parses a podCIDR such as `10.42.0.0/24`.
    fn from_str(s: &str) -> Result<Ipv4Subnet, IpamError> {
        let bad = |reason: String| IpamError::BadSubnet {
            subnet: s.to_string(),
            reason,
        };
        match parse_cidr(s.trim()).map_err(bad)? {
            (IpAddr::V4(a), prefix) => Ipv4Subnet::new(a, prefix),
            (IpAddr::V6(_), _) => Err(bad("only IPv4 pod subnets are supported".into())),
        }
    }
}

/// The gateway (bridge) address of `subnet`: its first usable address, `.1` in a /24.
pub fn gateway(subnet: Ipv4Subnet) -> Ipv4Addr {
    subnet.at(1)
}

/// Host-local allocation state of one pod network, kept in one directory.
///
/// Allocation and release are serialised within the process; across processes, `O_EXCL`
/// file creation still guarantees that no address is handed out twice.
pub struct HostLocal {
    dir: PathBuf,
    /// Serialises the scan-then-create of `allocate` so one owner never gets two addresses.
    lock: Mutex<()>,
}

impl HostLocal {
    /// Opens (creating if needed) the state directory `dir`, normally
    /// `<data-dir>/agent/cni/ipam/<network name>`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<HostLocal, IpamError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(HostLocal {
            dir,
            lock: Mutex::new(()),
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An address of `subnet` for `owner` (a pod UID). An owner that already holds an
    /// address in `subnet` gets that same address back; otherwise the next free address
    /// after the one handed out last is reserved, skipping network, gateway and broadcast.
    pub fn allocate(&self, subnet: Ipv4Subnet, owner: &str) -> Result<Ipv4Addr, IpamError> {
        check_owner(owner)?;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let owned = self.owned()?;
        if let Some((ip, _)) = owned
            .iter()
            .find(|(ip, o)| o == owner && subnet.contains(*ip))
        {
            return Ok(*ip);
        }
        let used: HashSet<Ipv4Addr> = owned.into_iter().map(|(ip, _)| ip).collect();
        let (first, last) = subnet.pod_offsets();
        let count = last - first + 1;
        let start = match self.last_reserved() {
            Some(ip) if subnet.contains(ip) => {
                let off = subnet.offset_of(ip);
                if off >= first && off < last {
                    off + 1
                } else {
                    first
                }
            }
            _ => first,
        };
        for i in 0..count {
            let off = first + (start - first + i) % count;
            let ip = subnet.at(off);
            if used.contains(&ip) {
                continue;
            }
            if self.reserve(ip, owner)? {
                self.write_last_reserved(ip)?;
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted { subnet })
    }

    /// Releases every address held by `owner`. Releasing an owner without addresses is not
    /// an error, so a repeated pod deletion succeeds.
    pub fn release(&self, owner: &str) -> Result<(), IpamError> {
        check_owner(owner)?;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mine: Vec<Ipv4Addr> = self
            .owned()?
            .into_iter()
            .filter(|(_, o)| o == owner)
            .map(|(ip, _)| ip)
            .collect();
        self.remove_all(&mine)
    }

    /// Every allocated address with its owner, sorted by address. An address file left
    /// empty by a crash mid-write shows with an empty owner.
    pub fn owned(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            match fs::read_to_string(&path) {
                Ok(s) => out.push((ip, s.trim().to_string())),
                // Released concurrently by another process between listing and reading.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Garbage collection after a restart: releases every address whose owner is not in
    /// `live_owners` (including ownerless files left by a crash). Returns what was released.
    pub fn release_all_except(
        &self,
        live_owners: &HashSet<String>,
    ) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dead: Vec<(Ipv4Addr, String)> = self
            .owned()?
            .into_iter()
            .filter(|(_, o)| !live_owners.contains(o))
            .collect();
        let ips: Vec<Ipv4Addr> = dead.iter().map(|(ip, _)| *ip).collect();
        self.remove_all(&ips)?;
        Ok(dead)
    }

    /// Creates the file for `ip` exclusively; false when another allocation holds it.
    fn reserve(&self, ip: Ipv4Addr, owner: &str) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err(&path, e)),
        };
        let written = file.write_all(owner.as_bytes());
        if let Err(e) = written {
            // Do not leave a reservation nobody will use.
            let _ = fs::remove_file(&path);
            return Err(io_err(&path, e));
        }
        Ok(true)
    }

    fn remove_all(&self, ips: &[Ipv4Addr]) -> Result<(), IpamError> {
        for ip in ips {
            let path = self.dir.join(ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        Ok(())
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        // A missing or corrupt cursor only costs round-robin order, never correctness.
        fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Replaces the cursor atomically (write a temporary file, then rename over it).
    fn write_last_reserved(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let tmp = self.dir.join(format!(".{LAST_RESERVED}.tmp"));
        let path = self.dir.join(LAST_RESERVED);
        let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(ip.to_string().as_bytes())
            .map_err(|e| io_err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))
    }
}

/// Owner ids are stored as file content and compared verbatim; restricting them to a
/// printable single token keeps the files unambiguous and rejects path-like input early.
fn check_owner(owner: &str) -> Result<(), IpamError> {
    let reason = if owner.is_empty() {
        Some("must not be empty")
    } else if owner.len() > MAX_OWNER_LEN {
        Some("must be at most 253 characters")
    } else if owner.contains(['/', '\\']) {
        Some("must not contain path separators")
    } else if owner.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(IpamError::InvalidOwner {
            owner: owner.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn io_err(path: &Path, source: io::Error) -> IpamError {
    IpamError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn net(s: &str) -> Ipv4Subnet {
        s.parse().expect("test subnet parses")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address parses")
    }

    fn store() -> (tempfile::TempDir, HostLocal) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let h = HostLocal::open(tmp.path().join("agent/cni/ipam/cbr0")).expect("open");
        (tmp, h)
    }

    /// A /24 store where pod-a holds .2 (returned) and pod-b holds .3.
    fn two_pods() -> (tempfile::TempDir, HostLocal, Ipv4Subnet, Ipv4Addr) {
        let (t, h) = store();
        let s = net("10.42.0.0/24");
        let a = h.allocate(s, "pod-a").unwrap();
        h.allocate(s, "pod-b").unwrap();
        (t, h, s, a)
    }

    #[test]
    fn subnet_parsing_and_gateway() {
        let s = net("10.42.0.7/24");
        assert_eq!(s.to_string(), "10.42.0.0/24");
        assert_eq!(gateway(s), ip("10.42.0.1"));
        assert!(s.contains(ip("10.42.0.255")));
        assert!(!s.contains(ip("10.42.1.0")));
        assert!(!s.contains(ip("10.41.255.255")));
        assert!("10.42.0.0/31".parse::<Ipv4Subnet>().is_err());
        assert!("fd00::/64".parse::<Ipv4Subnet>().is_err());
        assert!("10.42.0.0".parse::<Ipv4Subnet>().is_err());
    }

    #[test]
    fn allocates_sequentially_from_dot_two_and_persists_owner() {
        let (_t, h) = store();
        let s = net("10.42.0.0/24");
        assert_eq!(h.allocate(s, "pod-a").unwrap(), ip("10.42.0.2"));
        assert_eq!(h.allocate(s, "pod-b").unwrap(), ip("10.42.0.3"));
        assert_eq!(h.allocate(s, "pod-c").unwrap(), ip("10.42.0.4"));
        let content = fs::read_to_string(h.dir().join("10.42.0.3")).unwrap();
        assert_eq!(content, "pod-b");
        let cursor = fs::read_to_string(h.dir().join(LAST_RESERVED)).unwrap();
        assert_eq!(cursor, "10.42.0.4");
    }

    #[test]
    fn allocation_is_idempotent_per_owner() {
        let (_t, h, s, a) = two_pods();
        assert_eq!(h.allocate(s, "pod-a").unwrap(), a);
        assert_eq!(h.owned().unwrap().len(), 2);
    }

    #[test]
    fn release_is_idempotent_and_round_robin_delays_reuse() {
        let (_t, h, s, a) = two_pods();
        h.release("pod-a").unwrap();
        h.release("pod-a").unwrap();
        h.release("never-allocated").unwrap();
        assert!(!h.dir().join(a.to_string()).exists());
        // The released .2 is not reused: allocation continues after the last one (.3).
        assert_eq!(h.allocate(s, "pod-c").unwrap(), ip("10.42.0.4"));
        assert_eq!(
            h.owned().unwrap(),
            vec![
                (ip("10.42.0.3"), "pod-b".to_string()),
                (ip("10.42.0.4"), "pod-c".to_string())
            ]
        );
    }

    #[test]
    fn wraps_around_and_exhausts_a_slash_29() {
        let (_t, h) = store();
        let s = net("192.168.5.0/29");
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| h.allocate(s, &format!("pod-{i}")).unwrap())
            .collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|n| Ipv4Addr::new(192, 168, 5, n)).collect();
        assert_eq!(
            got, want,
            "network .0, gateway .1 and broadcast .7 are skipped"
        );
        let err = h.allocate(s, "pod-x").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { subnet } if subnet == s));
        assert!(err
            .to_string()
            .contains("no free pod address left in 192.168.5.0/29"));
        // After a release the cursor wraps around to the freed address.
        h.release("pod-2").unwrap();
        assert_eq!(h.allocate(s, "pod-x").unwrap(), ip("192.168.5.4"));
    }

    #[test]
    fn concurrent_allocations_never_duplicate() {
        let (_t, h) = store();
        let h = Arc::new(h);
        let s = net("10.42.0.0/26");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    (0..4)
                        .map(|i| h.allocate(s, &format!("pod-{t}-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Ipv4Addr> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("allocating thread panicked"))
            .collect();
        let unique: HashSet<Ipv4Addr> = all.iter().copied().collect();
        assert_eq!(all.len(), 32);
        assert_eq!(unique.len(), 32, "an address was handed out twice: {all:?}");
        assert!(all.iter().all(|a| s.contains(*a) && *a != gateway(s)));
        assert_eq!(h.owned().unwrap().len(), 32);
    }

    #[test]
    fn two_handles_on_one_directory_never_duplicate() {
        // Stands in for two processes: separate in-memory locks, shared files.
        let (_t, h1) = store();
        let h2 = HostLocal::open(h1.dir()).unwrap();
        let s = net("10.42.0.0/29");
        h1.allocate(s, "pod-a").unwrap();
        // h2 reads the same cursor and files, so it moves on instead of colliding.
        assert_eq!(h2.allocate(s, "pod-b").unwrap(), ip("10.42.0.3"));
        assert!(!h2.reserve(ip("10.42.0.2"), "pod-c").unwrap());
    }

    #[test]
    fn state_survives_reopen() {
        let (_t, h, s, a) = two_pods();
        h.release("pod-b").unwrap();
        let dir = h.dir().to_path_buf();
        drop(h);
        let h = HostLocal::open(&dir).unwrap();
        assert_eq!(h.owned().unwrap(), vec![(a, "pod-a".to_string())]);
        assert_eq!(
            h.allocate(s, "pod-a").unwrap(),
            a,
            "same owner, same address"
        );
        assert_eq!(
            h.allocate(s, "pod-c").unwrap(),
            ip("10.42.0.4"),
            "cursor kept"
        );
    }

    #[test]
    fn gc_keeps_only_live_owners_and_ownerless_files_go() {
        let (_t, h) = store();
        let s = net("10.42.0.0/24");
        let a = h.allocate(s, "live").unwrap();
        h.allocate(s, "dead-1").unwrap();
        h.allocate(s, "dead-2").unwrap();
        // A crash between creating and writing an address file leaves it empty.
        File::create(h.dir().join("10.42.0.9")).unwrap();
        let live: HashSet<String> = ["live".to_string()].into();
        let released = h.release_all_except(&live).unwrap();
        assert_eq!(released.len(), 3);
        assert_eq!(h.owned().unwrap(), vec![(a, "live".to_string())]);
        assert!(
            h.dir().join(LAST_RESERVED).exists(),
            "cursor is not an allocation"
        );
    }

    #[test]
    fn invalid_owner_ids_are_rejected() {
        let (_t, h) = store();
        let s = net("10.42.0.0/24");
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "two words",
            "line\nbreak",
        ] {
            let err = h.allocate(s, bad).unwrap_err();
            assert!(
                matches!(err, IpamError::InvalidOwner { .. }),
                "{bad:?}: {err}"
            );
            assert!(h.release(bad).is_err(), "release accepted {bad:?}");
        }
        assert!(h.allocate(s, &"x".repeat(254)).is_err());
        assert!(h.owned().unwrap().is_empty());
    }

    #[test]
    fn owner_moves_to_a_new_subnet_when_pod_cidr_changes() {
        let (_t, h) = store();
        h.allocate(net("10.42.0.0/24"), "pod-a").unwrap();
        assert_eq!(
            h.allocate(net("10.42.1.0/24"), "pod-a").unwrap(),
            ip("10.42.1.2")
        );
    }
}
