//! `k3rs check-config`: checks that this host has the kernel features and programs k3rs
//! needs, and prints each one as PASS, WARN or FAIL with the fix for what is missing.
//!
//! Everything is read from files (`/proc`, `/sys`, `/lib/modules`) and `$PATH`, through a
//! [`Roots`] value so tests can point it at fake trees for cgroup v1 and v2 hosts. Nothing
//! is changed on the host. The exit code is 1 when anything FAILs (WARNs do not count), so
//! scripts can use it as a gate.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the checks look. [`Roots::system`] is the real host.
#[derive(Clone, Debug)]
pub struct Roots {
    /// `/proc`.
    pub proc_dir: PathBuf,
    /// `/sys`.
    pub sys_dir: PathBuf,
    /// `/lib/modules` (module lists per kernel release).
    pub modules_dir: PathBuf,
    /// The `$PATH` to look for programs in.
    pub path: OsString,
}

impl Roots {
    /// The running host. `/usr/sbin` and `/sbin` are searched too: `nft` lives there and a
    /// non-root user's `$PATH` often lacks them.
    pub fn system() -> Roots {
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
            let present = std::env::split_paths(&path).any(|p| p == Path::new(extra));
            if !present {
                if !path.is_empty() {
                    path.push(":");
                }
                path.push(extra);
            }
        }
        Roots {
            proc_dir: PathBuf::from("/proc"),
            sys_dir: PathBuf::from("/sys"),
            modules_dir: PathBuf::from("/lib/modules"),
            path,
        }
    }
}

/// The verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Present and usable.
    Pass,
    /// Works, but worth a look.
    Warn,
    /// k3rs (or its pods) will not work until this is fixed.
    Fail,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The section it is printed under.
    pub section: &'static str,
    /// What was checked.
    pub name: String,
    /// The verdict.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do, for WARN and FAIL.
    pub fix: Option<String>,
}

/// Everything [`check`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The kernel release (`uname -r`), when readable.
    pub kernel: Option<String>,
    /// 1 or 2, when cgroups were found.
    pub cgroup_version: Option<u8>,
    /// The board model from the device tree (e.g. "Raspberry Pi 4 Model B Rev 1.4").
    pub model: Option<String>,
    /// The findings, in print order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The finding called `name`.
    pub fn get(&self, name: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.name == name)
    }

    /// True when any check failed.
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.outcome == Outcome::Fail)
    }

    fn count(&self, o: Outcome) -> usize {
        self.findings.iter().filter(|f| f.outcome == o).count()
    }

    /// The text `k3rs check-config` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "k3rs check-config: kernel {}, {}, {}",
            self.kernel.as_deref().unwrap_or("unknown"),
            std::env::consts::ARCH,
            match self.cgroup_version {
                Some(v) => format!("cgroup v{v}"),
                None => "no cgroups".to_string(),
            }
        );
        if let Some(m) = &self.model {
            let _ = writeln!(out, "board: {m}");
        }
        let mut section = "";
        for f in &self.findings {
            if f.section != section {
                section = f.section;
                let _ = writeln!(out, "\n{section}:");
            }
            let _ = writeln!(out, "  {}  {}: {}", f.outcome.label(), f.name, f.detail);
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "        fix: {fix}");
            }
        }
        let _ = writeln!(
            out,
            "\nSTATUS: {} ({} passed, {} warnings, {} failed)",
            if self.failed() { "FAIL" } else { "PASS" },
            self.count(Outcome::Pass),
            self.count(Outcome::Warn),
            self.count(Outcome::Fail),
        );
        out
    }
}

/// Runs every check against `roots`.
pub fn check(roots: &Roots) -> Report {
    let mut r = Report {
        kernel: read_trim(&roots.proc_dir.join("sys/kernel/osrelease")),
        model: board_model(roots),
        ..Report::default()
    };
    cgroups(roots, &mut r);
    kernel(roots, &mut r);
    tools(roots, &mut r);
    r
}

/// `k3rs check-config`: prints the report; the exit code is 1 when anything failed.
pub fn run() -> std::process::ExitCode {
    let report = check(&Roots::system());
    print!("{}", report.render());
    if report.failed() {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

const CGROUPS: &str = "cgroups";
const KERNEL: &str = "kernel";
const TOOLS: &str = "programs";

fn push(
    r: &mut Report,
    section: &'static str,
    name: &str,
    outcome: Outcome,
    detail: impl Into<String>,
    fix: Option<String>,
) {
    r.findings.push(Finding {
        section,
        name: name.to_string(),
        outcome,
        detail: detail.into(),
        fix: if outcome == Outcome::Pass { None } else { fix },
    });
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| {
        s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string()
    })
}

fn board_model(roots: &Roots) -> Option<String> {
    [
        roots.proc_dir.join("device-tree/model"),
        roots.sys_dir.join("firmware/devicetree/base/model"),
    ]
    .iter()
    .find_map(|p| read_trim(p))
    .filter(|m| !m.is_empty())
}

fn is_raspberry_pi(r: &Report) -> bool {
    r.model
        .as_deref()
        .is_some_and(|m| m.contains("Raspberry Pi"))
}

/// The fix for a missing memory controller, with the Raspberry Pi command line.
fn memory_fix(r: &Report, cmdline: &str) -> String {
    let mut fix = String::new();
    if cmdline
        .split_whitespace()
        .any(|w| w == "cgroup_disable=memory")
    {
        fix.push_str("remove \"cgroup_disable=memory\" from the kernel command line and ");
    }
    if is_raspberry_pi(r) {
        fix.push_str(
            "add \"cgroup_memory=1 cgroup_enable=memory\" to the end of the single line in \
             /boot/firmware/cmdline.txt (/boot/cmdline.txt on Raspberry Pi OS before Bookworm), \
             then reboot",
        );
    } else {
        fix.push_str(
            "add \"cgroup_enable=memory\" to the kernel command line (GRUB_CMDLINE_LINUX in \
             /etc/default/grub, then update-grub; on a Raspberry Pi add \
             \"cgroup_memory=1 cgroup_enable=memory\" to /boot/firmware/cmdline.txt), then reboot",
        );
    }
    fix
}

fn cgroups(roots: &Roots, r: &mut Report) {
    let cmdline = read_trim(&roots.proc_dir.join("cmdline")).unwrap_or_default();
    let v2 = roots.sys_dir.join("fs/cgroup/cgroup.controllers");
    if let Ok(text) = std::fs::read_to_string(&v2) {
        r.cgroup_version = Some(2);
        push(
            r,
            CGROUPS,
            "cgroup v2",
            Outcome::Pass,
            "unified hierarchy mounted at /sys/fs/cgroup",
            None,
        );
        let have: Vec<&str> = text.split_whitespace().collect();
        for (ctrl, required) in [
            ("cpu", true),
            ("memory", true),
            ("pids", true),
            ("cpuset", false),
            ("io", false),
        ] {
            let name = format!("{ctrl} controller");
            if have.contains(&ctrl) {
                push(r, CGROUPS, &name, Outcome::Pass, "enabled", None);
                continue;
            }
            let fix = if ctrl == "memory" {
                memory_fix(r, &cmdline)
            } else {
                format!(
                    "enable the {ctrl} controller (kernel config CONFIG_CGROUP_{}, and not \
                     disabled with cgroup_disable= on the kernel command line)",
                    ctrl.to_uppercase()
                )
            };
            let (outcome, detail) = if required {
                (
                    Outcome::Fail,
                    "missing from /sys/fs/cgroup/cgroup.controllers; pods cannot be limited",
                )
            } else {
                (
                    Outcome::Warn,
                    "missing from /sys/fs/cgroup/cgroup.controllers; its pod limits are ignored",
                )
            };
            push(r, CGROUPS, &name, outcome, detail, Some(fix));
        }
        return;
    }

    // cgroup v1: /proc/cgroups lists "subsys_name hierarchy num_cgroups enabled".
    let table = match std::fs::read_to_string(roots.proc_dir.join("cgroups")) {
        Ok(t) => t,
        Err(_) => {
            push(
                r,
                CGROUPS,
                "cgroups",
                Outcome::Fail,
                "neither /sys/fs/cgroup/cgroup.controllers (v2) nor /proc/cgroups (v1) exists",
                Some(
                    "use a kernel with cgroups (CONFIG_CGROUPS) and mount them, e.g. \
                     `mount -t cgroup2 none /sys/fs/cgroup`"
                        .into(),
                ),
            );
            return;
        }
    };
    r.cgroup_version = Some(1);
    push(
        r,
        CGROUPS,
        "cgroup v1",
        Outcome::Warn,
        "legacy hierarchies; k3rs works, but cgroup v2 is better supported",
        Some(
            "boot with systemd.unified_cgroup_hierarchy=1 on the kernel command line to \
             switch to cgroup v2"
                .into(),
        ),
    );
    let enabled: Vec<(String, bool)> = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            match cols.as_slice() {
                [name, _, _, on, ..] => Some((name.to_string(), *on == "1")),
                _ => None,
            }
        })
        .collect();
    for (ctrl, required) in [
        ("cpu", true),
        ("cpuacct", true),
        ("memory", true),
        ("pids", true),
        ("devices", true),
        ("freezer", true),
        ("cpuset", false),
    ] {
        let name = format!("{ctrl} controller");
        let state = enabled.iter().find(|(n, _)| n == ctrl).map(|(_, on)| *on);
        let detail = match state {
            Some(true) => {
                push(r, CGROUPS, &name, Outcome::Pass, "enabled", None);
                continue;
            }
            Some(false) => "present but disabled (enabled = 0 in /proc/cgroups)",
            None => "missing from /proc/cgroups",
        };
        let fix = if ctrl == "memory" {
            memory_fix(r, &cmdline)
        } else {
            format!(
                "enable the {ctrl} cgroup controller (kernel config, and not disabled with \
                 cgroup_disable= on the kernel command line)"
            )
        };
        let outcome = if required {
            Outcome::Fail
        } else {
            Outcome::Warn
        };
        push(r, CGROUPS, &name, outcome, detail, Some(fix));
    }
}

/// Whether kernel module `name` is built in or installed for the running kernel.
fn module_available(roots: &Roots, kernel: Option<&str>, name: &str) -> Option<&'static str> {
    let release = kernel?;
    let dir = roots.modules_dir.join(release);
    let listed = |file: &str| -> bool {
        std::fs::read_to_string(dir.join(file)).is_ok_and(|text| {
            text.lines().any(|l| {
                let path = l.split(':').next().unwrap_or("");
                let base = path.rsplit('/').next().unwrap_or("");
                base.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(".ko"))
            })
        })
    };
    if listed("modules.builtin") {
        Some("built into the kernel")
    } else if listed("modules.dep") {
        Some("available as a module; the k3rs service loads it at start")
    } else {
        None
    }
}

fn modules_fix(r: &Report, feature: &str, module: &str) -> String {
    let mut fix = format!(
        "load it with `modprobe {module}`; if that fails, install your distribution's kernel \
         modules package or use a kernel with {feature}"
    );
    if is_raspberry_pi(r) || module == "vxlan" {
        fix.push_str(" (Ubuntu on a Raspberry Pi: apt install linux-modules-extra-raspi)");
    }
    fix
}

fn kernel(roots: &Roots, r: &mut Report) {
    let release = r.kernel.clone();
    let loaded = |m: &str| roots.sys_dir.join("module").join(m).exists();

    // overlayfs: the snapshotter for container images.
    let filesystems =
        std::fs::read_to_string(roots.proc_dir.join("filesystems")).unwrap_or_default();
    let overlay = filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"));
    check_module(
        roots,
        r,
        release.as_deref(),
        "overlayfs",
        "overlay",
        if overlay {
            Some("supported (in /proc/filesystems)")
        } else {
            None
        },
        "CONFIG_OVERLAY_FS",
        "container images cannot be unpacked",
    );
    let br = loaded("br_netfilter") || roots.proc_dir.join("sys/net/bridge").exists();
    check_module(
        roots,
        r,
        release.as_deref(),
        "br_netfilter",
        "br_netfilter",
        if br { Some("loaded") } else { None },
        "CONFIG_BRIDGE_NETFILTER",
        "service traffic between pods on one node bypasses the service rules",
    );
    check_module(
        roots,
        r,
        release.as_deref(),
        "vxlan",
        "vxlan",
        if loaded("vxlan") {
            Some("loaded")
        } else {
            None
        },
        "CONFIG_VXLAN",
        "pods on different nodes cannot reach each other with the vxlan backend",
    );
    check_module(
        roots,
        r,
        release.as_deref(),
        "nf_tables",
        "nf_tables",
        if loaded("nf_tables") {
            Some("loaded")
        } else {
            None
        },
        "CONFIG_NF_TABLES",
        "services and pod masquerading cannot be programmed",
    );

    match read_trim(&roots.proc_dir.join("sys/net/ipv4/ip_forward")).as_deref() {
        Some("1") => push(r, KERNEL, "ip_forward", Outcome::Pass, "enabled", None),
        Some(_) => push(
            r,
            KERNEL,
            "ip_forward",
            Outcome::Warn,
            "disabled (net.ipv4.ip_forward = 0); the k3rs agent turns it on when it starts",
            Some(
                "to turn it on now and at boot: `sysctl -w net.ipv4.ip_forward=1` and add \
                  net.ipv4.ip_forward=1 to /etc/sysctl.d/90-k3rs.conf"
                    .into(),
            ),
        ),
        None => push(
            r,
            KERNEL,
            "ip_forward",
            Outcome::Warn,
            "/proc/sys/net/ipv4/ip_forward cannot be read",
            Some("use a kernel with IPv4 networking (CONFIG_INET)".into()),
        ),
    }

    let swaps = std::fs::read_to_string(roots.proc_dir.join("swaps")).unwrap_or_default();
    let active = swaps
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    if active == 0 {
        push(r, KERNEL, "swap", Outcome::Pass, "off", None);
    } else {
        push(
            r,
            KERNEL,
            "swap",
            Outcome::Warn,
            format!("on ({active} swap area(s)); pod memory limits do not cover swap"),
            Some(
                "`swapoff -a` and remove the swap entries from /etc/fstab (on Raspberry Pi \
                  OS: `dphys-swapfile swapoff && systemctl disable dphys-swapfile`)"
                    .into(),
            ),
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn check_module(
    roots: &Roots,
    r: &mut Report,
    release: Option<&str>,
    name: &str,
    module: &str,
    present: Option<&str>,
    config: &str,
    consequence: &str,
) {
    if let Some(how) = present {
        push(r, KERNEL, name, Outcome::Pass, how, None);
    } else if let Some(how) = module_available(roots, release, module) {
        push(r, KERNEL, name, Outcome::Pass, how, None);
    } else {
        push(
            r,
            KERNEL,
            name,
            Outcome::Fail,
            format!("not loaded and no {module} module for this kernel; {consequence}"),
            Some(modules_fix(r, config, module)),
        );
    }
}

/// The first executable `name` in `path`.
pub fn find_executable(path: &std::ffi::OsStr, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn tools(roots: &Roots, r: &mut Report) {
    for (prog, package, why) in [
        (
            "containerd",
            "containerd",
            "the agent runs containers with it",
        ),
        ("runc", "runc", "containerd starts containers with it"),
        (
            "nft",
            "nftables",
            "the agent programs services and masquerading with it",
        ),
    ] {
        match find_executable(&roots.path, prog) {
            Some(p) => push(r, TOOLS, prog, Outcome::Pass, p.display().to_string(), None),
            None => push(
                r,
                TOOLS,
                prog,
                Outcome::Fail,
                format!("not found on PATH; {why}"),
                Some(format!(
                    "install the {package} package (apt-get install {package} | dnf install \
                     {package} | apk add {package} | zypper install {package}), or rerun the \
                     k3rs installer, which does it"
                )),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const RELEASE: &str = "6.6.31+rpt-rpi-v8";

    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            let f = Fake {
                dir: tempfile::tempdir().unwrap(),
            };
            f.write("proc/sys/kernel/osrelease", &format!("{RELEASE}\n"));
            f.write(
                "proc/cmdline",
                "console=serial0,115200 root=PARTUUID=1 rootwait\n",
            );
            f.write("proc/filesystems", "nodev\tsysfs\nnodev\toverlay\n\text4\n");
            f.write("proc/sys/net/ipv4/ip_forward", "1\n");
            f.write("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n");
            for m in ["br_netfilter", "vxlan", "nf_tables"] {
                std::fs::create_dir_all(f.path(&format!("sys/module/{m}"))).unwrap();
            }
            for t in ["containerd", "runc", "nft"] {
                f.exe(&format!("bin/{t}"));
            }
            f
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.path(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        fn exe(&self, rel: &str) {
            self.write(rel, "#!/bin/sh\n");
            std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }

        fn v2(&self, controllers: &str) {
            self.write(
                "sys/fs/cgroup/cgroup.controllers",
                &format!("{controllers}\n"),
            );
        }

        fn v1(&self, memory_enabled: bool) {
            let mem = if memory_enabled { 1 } else { 0 };
            self.write(
                "proc/cgroups",
                &format!(
                    "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t2\t1\t1\ncpu\t3\t60\t1\n\
                     cpuacct\t3\t60\t1\nblkio\t4\t60\t1\nmemory\t0\t70\t{mem}\ndevices\t5\t60\t1\n\
                     freezer\t6\t1\t1\nnet_cls\t7\t1\t1\npids\t8\t66\t1\n"
                ),
            );
        }

        fn pi(&self) {
            self.write("proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0");
        }

        fn roots(&self) -> Roots {
            Roots {
                proc_dir: self.path("proc"),
                sys_dir: self.path("sys"),
                modules_dir: self.path("lib/modules"),
                path: self.path("bin").into_os_string(),
            }
        }

        fn check(&self) -> Report {
            check(&self.roots())
        }
    }

    fn outcome(r: &Report, name: &str) -> Outcome {
        r.get(name)
            .unwrap_or_else(|| panic!("no finding {name}:\n{}", r.render()))
            .outcome
    }

    #[test]
    fn cgroup_v2_host_with_everything_passes() {
        let f = Fake::new();
        f.v2("cpuset cpu io memory hugetlb pids rdma misc");
        let r = f.check();
        assert_eq!(r.cgroup_version, Some(2));
        assert!(!r.failed(), "{}", r.render());
        assert_eq!(r.kernel.as_deref(), Some(RELEASE));
        for n in [
            "cgroup v2",
            "cpu controller",
            "memory controller",
            "pids controller",
            "overlayfs",
            "br_netfilter",
            "vxlan",
            "nf_tables",
            "ip_forward",
            "swap",
            "containerd",
            "runc",
            "nft",
        ] {
            assert_eq!(outcome(&r, n), Outcome::Pass, "{n}:\n{}", r.render());
        }
        let text = r.render();
        assert!(text.contains("cgroup v2"), "{text}");
        assert!(text.contains("STATUS: PASS"), "{text}");
        assert!(!text.contains("fix:"), "{text}");
    }

    #[test]
    fn cgroup_v2_without_memory_on_a_pi_fails_with_the_cmdline_fix() {
        let f = Fake::new();
        f.pi();
        f.v2("cpuset cpu io pids");
        let r = f.check();
        assert!(r.failed());
        let mem = r.get("memory controller").unwrap();
        assert_eq!(mem.outcome, Outcome::Fail);
        let fix = mem.fix.as_deref().unwrap();
        assert!(
            fix.contains("cgroup_memory=1 cgroup_enable=memory"),
            "{fix}"
        );
        assert!(fix.contains("/boot/firmware/cmdline.txt"), "{fix}");
        let text = r.render();
        assert!(
            text.contains("board: Raspberry Pi 4 Model B Rev 1.4"),
            "{text}"
        );
        assert!(text.contains("  FAIL  memory controller"), "{text}");
        assert!(
            text.contains("STATUS: FAIL (14 passed, 0 warnings, 1 failed)"),
            "{text}"
        );
    }

    #[test]
    fn cgroup_v2_missing_optional_controllers_only_warns() {
        let f = Fake::new();
        f.v2("cpu memory pids");
        let r = f.check();
        assert!(!r.failed(), "{}", r.render());
        assert_eq!(outcome(&r, "cpuset controller"), Outcome::Warn);
        assert_eq!(outcome(&r, "io controller"), Outcome::Warn);
    }

    #[test]
    fn cgroup_v1_host_passes_with_a_warning() {
        let f = Fake::new();
        f.v1(true);
        let r = f.check();
        assert_eq!(r.cgroup_version, Some(1));
        assert!(!r.failed(), "{}", r.render());
        assert_eq!(outcome(&r, "cgroup v1"), Outcome::Warn);
        for c in [
            "cpu", "cpuacct", "memory", "pids", "devices", "freezer", "cpuset",
        ] {
            assert_eq!(
                outcome(&r, &format!("{c} controller")),
                Outcome::Pass,
                "{c}"
            );
        }
    }

    #[test]
    fn cgroup_v1_with_disabled_memory_fails() {
        let f = Fake::new();
        f.v1(false);
        f.write(
            "proc/cmdline",
            "root=/dev/sda1 cgroup_disable=memory quiet\n",
        );
        let r = f.check();
        let mem = r.get("memory controller").unwrap();
        assert_eq!(mem.outcome, Outcome::Fail, "{}", r.render());
        assert!(mem.detail.contains("disabled"), "{}", mem.detail);
        let fix = mem.fix.as_deref().unwrap();
        assert!(fix.contains("remove \"cgroup_disable=memory\""), "{fix}");
        assert!(fix.contains("cgroup_enable=memory"), "{fix}");
    }

    #[test]
    fn no_cgroups_at_all_fails() {
        let f = Fake::new();
        let r = f.check();
        assert_eq!(r.cgroup_version, None);
        assert_eq!(outcome(&r, "cgroups"), Outcome::Fail);
    }

    #[test]
    fn modules_are_found_in_the_module_lists() {
        let f = Fake::new();
        f.v2("cpu memory pids cpuset io");
        std::fs::remove_dir_all(f.path("sys/module")).unwrap();
        f.write("proc/filesystems", "nodev\tsysfs\n\text4\n");
        f.write(
            &format!("lib/modules/{RELEASE}/modules.dep"),
            "kernel/fs/overlayfs/overlay.ko.xz:\nkernel/drivers/net/vxlan/vxlan.ko.xz: \
             kernel/net/ipv4/udp_tunnel.ko.xz\nkernel/net/netfilter/nf_tables.ko.xz: \
             kernel/lib/libcrc32c.ko.xz\n",
        );
        f.write(
            &format!("lib/modules/{RELEASE}/modules.builtin"),
            "kernel/net/bridge/br_netfilter.ko\n",
        );
        let r = f.check();
        assert!(!r.failed(), "{}", r.render());
        assert!(r.get("overlayfs").unwrap().detail.contains("module"));
        assert!(r.get("br_netfilter").unwrap().detail.contains("built into"));
    }

    #[test]
    fn missing_vxlan_fails_with_the_ubuntu_pi_hint() {
        let f = Fake::new();
        f.v2("cpu memory pids cpuset io");
        std::fs::remove_dir_all(f.path("sys/module/vxlan")).unwrap();
        let r = f.check();
        let v = r.get("vxlan").unwrap();
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v
            .fix
            .as_deref()
            .unwrap()
            .contains("linux-modules-extra-raspi"));
    }

    #[test]
    fn missing_programs_fail_with_the_package_to_install() {
        let f = Fake::new();
        f.v2("cpu memory pids cpuset io");
        std::fs::remove_file(f.path("bin/nft")).unwrap();
        // Not executable: does not count.
        std::fs::set_permissions(f.path("bin/runc"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let r = f.check();
        assert_eq!(outcome(&r, "containerd"), Outcome::Pass);
        assert_eq!(outcome(&r, "runc"), Outcome::Fail);
        let nft = r.get("nft").unwrap();
        assert_eq!(nft.outcome, Outcome::Fail);
        assert!(nft
            .fix
            .as_deref()
            .unwrap()
            .contains("apt-get install nftables"));
    }

    #[test]
    fn forwarding_off_and_swap_on_are_warnings() {
        let f = Fake::new();
        f.v2("cpu memory pids cpuset io");
        f.write("proc/sys/net/ipv4/ip_forward", "0\n");
        f.write(
            "proc/swaps",
            "Filename\tType\tSize\tUsed\tPriority\n/var/swap\tfile\t102396\t0\t-2\n",
        );
        let r = f.check();
        assert!(!r.failed(), "{}", r.render());
        assert_eq!(outcome(&r, "ip_forward"), Outcome::Warn);
        let swap = r.get("swap").unwrap();
        assert_eq!(swap.outcome, Outcome::Warn);
        assert!(swap.detail.contains("1 swap area"), "{}", swap.detail);
    }

    #[test]
    fn system_roots_search_sbin() {
        let r = Roots::system();
        let dirs: Vec<PathBuf> = std::env::split_paths(&r.path).collect();
        assert!(dirs.contains(&PathBuf::from("/usr/sbin")));
    }
}
