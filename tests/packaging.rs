//! Packaging, end to end: shellcheck on every script, `systemd-analyze verify` on the units,
//! the installer run against a temporary root (INSTALL_K3RS_ROOT) with its downloads served
//! by a local `python3 -m http.server` and `systemctl` replaced by a stub that records its
//! calls, the static release binaries under qemu, the manifests auto-deploy folder, the
//! systemd readiness notification, `k3rs kubectl` and `k3rs check-config`.
//!
//! Tools these tests need (shellcheck, systemd-analyze, python3, file, qemu-user-static)
//! are installed by .ci/run; a missing one fails the test with the package to install.
//! The static binaries come from scripts/build-release.sh, which scripts/test.sh runs
//! before it runs the test that checks them.

mod common;

use common::{eventually, Server};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const VERSION: &str = "v1.35.0-k3rs-test";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k3rs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_k3rs")
}

/// The path of `tool`, or a failed test saying which package provides it.
#[track_caller]
fn require(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{tool} is not installed: apt-get install {package} (.ci/run installs it)")
        })
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sha256_file(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The installer's name for this machine's architecture.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        other => panic!("no k3rs release for {other}"),
    }
}

// --- the installer fixture --------------------------------------------------------------------

/// A temporary root, a download server and stubbed system commands for one installer run.
struct Installer {
    dir: tempfile::TempDir,
    http: Child,
    port: u16,
}

impl Installer {
    /// Serves www/<VERSION>/k3rs-<arch> (the debug binary) and its sha256sum file.
    fn new() -> Installer {
        let python = require("python3", "python3");
        let dir = tempfile::tempdir().unwrap();
        let rel = dir.path().join("www").join(VERSION);
        std::fs::create_dir_all(&rel).unwrap();
        let arch = host_arch();
        let bin = rel.join(format!("k3rs-{arch}"));
        // A hard link is enough to serve it (the installer downloads a copy).
        if std::fs::hard_link(k3rs_bin(), &bin).is_err() {
            std::fs::copy(k3rs_bin(), &bin).unwrap();
        }
        std::fs::write(
            rel.join(format!("sha256sum-{arch}.txt")),
            format!("{}  k3rs-{arch}\n", sha256_file(&bin)),
        )
        .unwrap();
        let stubs = dir.path().join("stubs");
        std::fs::create_dir_all(&stubs).unwrap();
        let stub = repo().join("tests/packaging/stub.sh");
        for name in [
            "systemctl",
            "rc-update",
            "rc-service",
            "apt-get",
            "dnf",
            "yum",
            "apk",
            "zypper",
        ] {
            std::os::unix::fs::symlink(&stub, stubs.join(name)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        let (http, port) = serve(
            &python,
            &dir.path().join("www"),
            &dir.path().join("http.log"),
        );
        Installer { dir, http, port }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.at(path))
            .unwrap_or_else(|e| panic!("{path} in the test root: {e}"))
    }

    fn mode(&self, path: &str) -> u32 {
        std::fs::metadata(self.at(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    /// Replaces the served binary's checksum with one that does not match.
    fn corrupt_checksum(&self) {
        let arch = host_arch();
        let f = self
            .dir
            .path()
            .join("www")
            .join(VERSION)
            .join(format!("sha256sum-{arch}.txt"));
        std::fs::write(f, format!("{}  k3rs-{arch}\n", "0".repeat(64))).unwrap();
    }

    /// PATH: the stubs first, then this process's PATH and sbin.
    fn path_env(&self) -> String {
        format!(
            "{}:{}:/usr/sbin:/sbin",
            self.dir.path().join("stubs").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn command(&self, program: &Path, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", self.path_env())
            .env("HOME", self.dir.path())
            .env("STUB_LOG", self.dir.path().join("calls.log"))
            .env("INSTALL_K3RS_ROOT", self.root())
            .env(
                "INSTALL_K3RS_DOWNLOAD_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("INSTALL_K3RS_VERSION", VERSION)
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        c
    }

    /// Runs `sh scripts/install.sh ARGS` with the base environment plus `env`.
    fn install(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut c = self.command(Path::new("sh"), env);
        c.arg(repo().join("scripts/install.sh")).args(args);
        c.output().expect("run sh")
    }

    #[track_caller]
    fn install_ok(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let out = self.install(env, args);
        assert!(out.status.success(), "installer failed:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a script the installer wrote (under the root) with the stubs on PATH.
    fn run_script(&self, path: &str) -> Output {
        self.command(&self.at(path), &[])
            .output()
            .expect("run script")
    }

    /// The recorded stub calls since the last call of this method.
    fn take_calls(&self) -> Vec<String> {
        let log = self.dir.path().join("calls.log");
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        calls.lines().map(str::to_string).collect()
    }

    /// Every file and link under the root: path → (mode, size, mtime, sha256 or link target).
    fn snapshot(&self) -> BTreeMap<String, (u32, u64, SystemTime, String)> {
        let mut out = BTreeMap::new();
        walk(&self.root(), &self.root(), &mut out);
        out
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        let _ = self.http.kill();
        let _ = self.http.wait();
    }
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, u64, SystemTime, String)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        if md.is_dir() {
            walk(base, &p, out);
            continue;
        }
        let content = if md.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&p).unwrap().display())
        } else {
            sha256_file(&p)
        };
        out.insert(
            rel,
            (
                md.mode() & 0o7777,
                md.len(),
                md.modified().unwrap(),
                content,
            ),
        );
    }
}

/// `python3 -m http.server` on a free loopback port, serving `dir`.
fn serve(python: &Path, dir: &Path, log: &Path) -> (Child, u16) {
    for _ in 0..5 {
        let port = common::free_port();
        let logf = std::fs::File::create(log).unwrap();
        let mut child = Command::new(python)
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg("--directory")
            .arg(dir)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start python3 -m http.server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // port taken in between: try another
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (child, port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "python3 -m http.server did not start; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn count(calls: &[String], call: &str) -> usize {
    calls.iter().filter(|c| c.as_str() == call).count()
}

// --- shellcheck and systemd-analyze ---------------------------------------------------------------

/// Shell scripts in the repository: files with a sh/bash/openrc shebang in the folders that
/// hold scripts.
fn repo_scripts() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["scripts", ".ci", "packaging", "tests/packaging"] {
        let mut stack = vec![repo().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let head = std::fs::read(&p).unwrap_or_default();
                let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
                let first = String::from_utf8_lossy(first);
                if first.starts_with("#!") && (first.contains("sh") || first.contains("openrc-run"))
                {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn shellcheck_passes_on_every_script() {
    let shellcheck = require("shellcheck", "shellcheck");
    let mut scripts = repo_scripts();
    for must in [
        "scripts/install.sh",
        "scripts/build-release.sh",
        "scripts/test.sh",
        ".ci/run",
        "packaging/openrc/k3rs",
        "tests/packaging/stub.sh",
    ] {
        assert!(
            scripts.contains(&repo().join(must)),
            "{must} not found among {scripts:?}"
        );
    }
    // And the scripts the installer writes: killall, uninstall and the OpenRC service.
    let inst = Installer::new();
    inst.install_ok(&[("INSTALL_K3RS_INIT", "openrc")], &["--tls-san", "a b"]);
    for f in [
        "/usr/local/bin/k3rs-killall.sh",
        "/usr/local/bin/k3rs-uninstall.sh",
        "/etc/init.d/k3rs",
    ] {
        scripts.push(inst.at(f));
    }
    let out = Command::new(&shellcheck)
        .args(["--shell=sh", "--severity=style"])
        .args(
            scripts
                .iter()
                .filter(|p| !p.ends_with(".ci/run") && !p.ends_with("scripts/test.sh")),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "shellcheck (sh):\n{}", text(&out));
    // .ci/run is bash; scripts/test.sh is sh but let shellcheck read its shebang.
    let out = Command::new(&shellcheck)
        .arg("--severity=style")
        .arg(repo().join(".ci/run"))
        .arg(repo().join("scripts/test.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "shellcheck:\n{}", text(&out));
}

/// Runs `systemd-analyze verify` on `unit` with its ExecStart binary replaced by a copy of
/// the k3rs binary in a temp dir (verify wants the program to exist). Returns the output.
fn verify_unit(unit_text: &str, file_name: &str) -> Output {
    let analyze = require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("k3rs");
    std::fs::copy(k3rs_bin(), &bin).unwrap();
    let unit = unit_text.replace("/usr/local/bin/k3rs", &bin.display().to_string());
    assert_ne!(
        unit, unit_text,
        "no ExecStart=/usr/local/bin/k3rs in {file_name}"
    );
    let path = dir.path().join(file_name);
    std::fs::write(&path, unit).unwrap();
    Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap()
}

#[track_caller]
fn assert_unit_verifies(unit_text: &str, file_name: &str) {
    let out = verify_unit(unit_text, file_name);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Anything said about our unit is a problem (unknown keys are only warnings).
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains(file_name)).collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {file_name}:\n{}\nunit:\n{unit_text}",
        text(&out)
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    for name in ["k3rs.service", "k3rs-agent.service"] {
        let unit = std::fs::read_to_string(repo().join("packaging/systemd").join(name)).unwrap();
        assert_unit_verifies(&unit, name);
    }
    // A unit with flags that need quoting, as the installer writes it.
    let inst = Installer::new();
    inst.install_ok(
        &[("INSTALL_K3RS_EXEC", "server --disable-agent")],
        &[
            "--tls-san",
            "a b",
            "--node-name=x$y%z",
            "--data-dir",
            "/srv/k3 rs",
        ],
    );
    let unit = inst.read("/etc/systemd/system/k3rs.service");
    assert!(
        unit.contains(
            "ExecStart=/usr/local/bin/k3rs server --disable-agent --tls-san 'a b' \
             '--node-name=x$$y%%z' --data-dir '/srv/k3 rs'\n"
        ),
        "{unit}"
    );
    assert_unit_verifies(&unit, "k3rs.service");
    // The check does see mistakes.
    let broken = unit.replace("Type=notify", "Typ=notify");
    let out = verify_unit(&broken, "k3rs.service");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key"),
        "a typo was not reported:\n{}",
        text(&out)
    );
}

#[test]
fn packaged_units_are_what_the_installer_writes() {
    let inst = Installer::new();
    inst.install_ok(&[], &[]);
    assert_eq!(
        inst.read("/etc/systemd/system/k3rs.service"),
        std::fs::read_to_string(repo().join("packaging/systemd/k3rs.service")).unwrap(),
        "packaging/systemd/k3rs.service differs from the installer's unit"
    );
    let inst = Installer::new();
    inst.install_ok(
        &[("K3RS_URL", "https://10.0.0.1:6443"), ("K3RS_TOKEN", "t")],
        &[],
    );
    assert_eq!(
        inst.read("/etc/systemd/system/k3rs-agent.service"),
        std::fs::read_to_string(repo().join("packaging/systemd/k3rs-agent.service")).unwrap(),
        "packaging/systemd/k3rs-agent.service differs from the installer's unit"
    );
    let inst = Installer::new();
    inst.install_ok(&[("INSTALL_K3RS_INIT", "openrc")], &[]);
    assert_eq!(
        inst.read("/etc/init.d/k3rs"),
        std::fs::read_to_string(repo().join("packaging/openrc/k3rs")).unwrap(),
        "packaging/openrc/k3rs differs from the installer's script"
    );
}

// --- the installer ----------------------------------------------------------------------------------

#[test]
fn installer_server_install_rerun_upgrade_and_uninstall() {
    let inst = Installer::new();
    let env = [
        ("K3RS_TOKEN", "s3cret"),
        ("K3RS_NODE_NAME", "pi-1"),
        ("K3RS_KUBECONFIG_MODE", "0644"),
        ("HTTPS_PROXY", "http://proxy:3128"),
        ("UNRELATED", "not copied"),
    ];
    let out = inst.install_ok(&env, &["--tls-san", "k3rs.example.com"]);
    assert!(out.contains("Verifying binary download"), "{out}");

    // The binary, verified and runnable.
    assert_eq!(
        sha256_file(&inst.at("/usr/local/bin/k3rs")),
        sha256_file(Path::new(k3rs_bin()))
    );
    assert_eq!(inst.mode("/usr/local/bin/k3rs"), 0o755);
    let v = Command::new(inst.at("/usr/local/bin/k3rs"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("k3rs version "));

    // The unit.
    let unit = inst.read("/etc/systemd/system/k3rs.service");
    assert_eq!(inst.mode("/etc/systemd/system/k3rs.service"), 0o644);
    for line in [
        "Type=notify",
        "Delegate=yes",
        "KillMode=process",
        "LimitNOFILE=1048576",
        "TasksMax=infinity",
        "Restart=always",
        "RestartSec=5s",
        "ExecStartPre=-/sbin/modprobe br_netfilter",
        "ExecStartPre=-/sbin/modprobe overlay",
        "ExecStartPre=-/sbin/modprobe vxlan",
        "EnvironmentFile=-/etc/systemd/system/k3rs.service.env",
        "ExecStart=/usr/local/bin/k3rs server --tls-san k3rs.example.com",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in:\n{unit}");
    }

    // The environment file: K3RS_* and proxies only, private.
    assert_eq!(inst.mode("/etc/systemd/system/k3rs.service.env"), 0o600);
    assert_eq!(
        inst.read("/etc/systemd/system/k3rs.service.env"),
        "HTTPS_PROXY='http://proxy:3128'\nK3RS_KUBECONFIG_MODE='0644'\nK3RS_NODE_NAME='pi-1'\n\
         K3RS_TOKEN='s3cret'\n"
    );

    // Scripts.
    for s in ["k3rs-killall.sh", "k3rs-uninstall.sh"] {
        assert_eq!(inst.mode(&format!("/usr/local/bin/{s}")), 0o755, "{s}");
    }

    // systemd was told.
    let calls = inst.take_calls();
    for call in [
        "systemctl daemon-reload",
        "systemctl enable k3rs.service",
        "systemctl restart k3rs.service",
    ] {
        assert_eq!(count(&calls, call), 1, "{call} in {calls:?}");
    }

    // Re-running with the same settings changes nothing and restarts nothing.
    let before = inst.snapshot();
    std::thread::sleep(Duration::from_millis(20));
    let out = inst.install_ok(&env, &["--tls-san", "k3rs.example.com"]);
    assert!(out.contains("installed k3rs matches hash"), "{out}");
    assert!(out.contains("No change detected"), "{out}");
    assert_eq!(inst.snapshot(), before, "a re-run changed files");
    let calls = inst.take_calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("restart") || c.contains(" start")),
        "{calls:?}"
    );

    // A changed setting is an upgrade in place: new env file, one restart.
    inst.install_ok(
        &[("K3RS_TOKEN", "s3cret"), ("K3RS_NODE_NAME", "pi-2")],
        &["--tls-san", "k3rs.example.com"],
    );
    assert!(inst
        .read("/etc/systemd/system/k3rs.service.env")
        .contains("K3RS_NODE_NAME='pi-2'"));
    let calls = inst.take_calls();
    assert_eq!(
        count(&calls, "systemctl restart k3rs.service"),
        1,
        "{calls:?}"
    );

    // The uninstall script removes every file the installer wrote.
    let out = inst.run_script("/usr/local/bin/k3rs-uninstall.sh");
    assert!(out.status.success(), "uninstall:\n{}", text(&out));
    let left = inst.snapshot();
    assert!(left.is_empty(), "left behind: {:?}", left.keys());
    let calls = inst.take_calls();
    for call in ["systemctl stop k3rs.service", "systemctl disable k3rs"] {
        assert_eq!(count(&calls, call), 1, "{call} in {calls:?}");
    }
}

#[test]
fn installer_agent_with_symlinks_and_uninstall() {
    let inst = Installer::new();
    let out = inst.install_ok(
        &[
            ("K3RS_URL", "https://10.0.0.1:6443"),
            ("K3RS_TOKEN", "K10abc::server:pw"),
            ("INSTALL_K3RS_SYMLINK", "force"),
        ],
        &["--node-label", "zone=a"],
    );
    assert!(
        out.contains("Creating /usr/local/bin/kubectl symlink"),
        "{out}"
    );
    let unit = inst.read("/etc/systemd/system/k3rs-agent.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/k3rs agent --node-label zone=a\n"),
        "{unit}"
    );
    assert!(unit.contains("EnvironmentFile=-/etc/systemd/system/k3rs-agent.service.env\n"));
    assert_eq!(
        inst.mode("/etc/systemd/system/k3rs-agent.service.env"),
        0o600
    );
    assert_eq!(
        inst.read("/etc/systemd/system/k3rs-agent.service.env"),
        "K3RS_TOKEN='K10abc::server:pw'\nK3RS_URL='https://10.0.0.1:6443'\n"
    );
    assert!(!inst.at("/etc/systemd/system/k3rs.service").exists());
    for link in ["kubectl", "ctr"] {
        let target = std::fs::read_link(inst.at(&format!("/usr/local/bin/{link}"))).unwrap();
        assert_eq!(target, Path::new("k3rs"));
    }
    let calls = inst.take_calls();
    assert_eq!(
        count(&calls, "systemctl enable k3rs-agent.service"),
        1,
        "{calls:?}"
    );
    assert_eq!(
        count(&calls, "systemctl restart k3rs-agent.service"),
        1,
        "{calls:?}"
    );

    let out = inst.run_script("/usr/local/bin/k3rs-agent-uninstall.sh");
    assert!(out.status.success(), "uninstall:\n{}", text(&out));
    let left = inst.snapshot();
    assert!(left.is_empty(), "left behind: {:?}", left.keys());
    let calls = inst.take_calls();
    assert_eq!(
        count(&calls, "systemctl disable k3rs-agent"),
        1,
        "{calls:?}"
    );
}

#[test]
fn installer_refuses_a_binary_whose_checksum_does_not_match() {
    let inst = Installer::new();
    inst.corrupt_checksum();
    let out = inst.install(&[], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[ERROR] Download sha256 does not match 0000000000000000"),
        "{err}"
    );
    let left = inst.snapshot();
    assert!(
        left.is_empty(),
        "installed despite the bad checksum: {:?}",
        left.keys()
    );
    assert!(inst.take_calls().is_empty());
}

#[test]
fn installer_rejects_bad_agent_settings() {
    let inst = Installer::new();
    let out = inst.install(&[("K3RS_URL", "https://10.0.0.1:6443")], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither K3RS_TOKEN nor K3RS_TOKEN_FILE"),
        "{}",
        text(&out)
    );
    let out = inst.install(
        &[("K3RS_URL", "http://10.0.0.1:6443"), ("K3RS_TOKEN", "t")],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Only https:// URLs are supported"),
        "{}",
        text(&out)
    );
    let out = inst.install(&[], &["bogus"]);
    assert!(!out.status.success());
    assert!(inst.snapshot().is_empty());
}

#[test]
fn installer_openrc_service() {
    let inst = Installer::new();
    inst.install_ok(
        &[("INSTALL_K3RS_INIT", "openrc"), ("K3RS_TOKEN", "t")],
        &["--tls-san", "a b"],
    );
    let script = inst.read("/etc/init.d/k3rs");
    assert_eq!(inst.mode("/etc/init.d/k3rs"), 0o755);
    assert!(script.starts_with("#!/sbin/openrc-run\n"), "{script}");
    assert!(
        script.contains("command=\"/usr/local/bin/k3rs\"\n"),
        "{script}"
    );
    assert!(
        script.contains("command_args=\"server '--tls-san' 'a b'\"\n"),
        "{script}"
    );
    assert!(script.contains(". /etc/k3rs/k3rs.env"), "{script}");
    assert_eq!(inst.mode("/etc/k3rs/k3rs.env"), 0o600);
    assert_eq!(inst.read("/etc/k3rs/k3rs.env"), "K3RS_TOKEN='t'\n");
    let calls: Vec<String> = inst
        .take_calls()
        .into_iter()
        .filter(|c| c.starts_with("rc-"))
        .collect();
    assert_eq!(
        calls,
        ["rc-update add k3rs default", "rc-service k3rs restart"],
        "{calls:?}"
    );
    let out = inst.run_script("/usr/local/bin/k3rs-uninstall.sh");
    assert!(out.status.success(), "uninstall:\n{}", text(&out));
    assert!(inst.snapshot().is_empty(), "{:?}", inst.snapshot().keys());
    let calls = inst.take_calls();
    assert!(
        calls.contains(&"rc-service k3rs stop".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"rc-update delete k3rs default".to_string()),
        "{calls:?}"
    );
}

#[test]
fn installer_without_an_init_system_says_how_to_start() {
    let inst = Installer::new();
    let out = inst.install_ok(&[("INSTALL_K3RS_INIT", "none")], &[]);
    assert!(out.contains("start k3rs by hand"), "{out}");
    assert!(
        out.contains("nohup /usr/local/bin/k3rs server >/var/log/k3rs.log"),
        "{out}"
    );
    assert!(inst.take_calls().is_empty());
    assert!(inst.at("/usr/local/bin/k3rs").exists());
    assert!(inst.at("/etc/k3rs/k3rs.env").exists());
}

#[test]
fn installer_airgap_skip_download_uses_the_binary_in_place() {
    let inst = Installer::new();
    let env = [("INSTALL_K3RS_SKIP_DOWNLOAD", "true")];
    let out = inst.install(&env, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Executable k3rs binary not found"),
        "{}",
        text(&out)
    );
    std::fs::create_dir_all(inst.at("/usr/local/bin")).unwrap();
    std::fs::copy(k3rs_bin(), inst.at("/usr/local/bin/k3rs")).unwrap();
    let out = inst.install_ok(&env, &[]);
    assert!(!out.contains("Downloading"), "{out}");
    assert!(inst.at("/etc/systemd/system/k3rs.service").exists());
    let calls = inst.take_calls();
    assert!(
        calls.contains(&"systemctl restart k3rs.service".to_string()),
        "{calls:?}"
    );
}

/// With containerd, runc and nft absent from PATH, the installer installs them with the
/// package manager it finds.
#[test]
fn installer_installs_missing_runtime_packages() {
    let inst = Installer::new();
    // A PATH with only what the installer itself uses, and the stubs.
    let tools = inst.dir.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    for t in [
        "sh",
        "env",
        "id",
        "uname",
        "mktemp",
        "rm",
        "mkdir",
        "chmod",
        "cp",
        "mv",
        "ln",
        "cat",
        "sed",
        "grep",
        "awk",
        "cut",
        "sort",
        "cmp",
        "sha256sum",
        "curl",
        "dirname",
    ] {
        let real = require(t, t);
        std::os::unix::fs::symlink(real, tools.join(t)).unwrap();
    }
    let path = format!(
        "{}:{}",
        inst.dir.path().join("stubs").display(),
        tools.display()
    );
    let mut c = inst.command(Path::new("sh"), &[]);
    c.env("PATH", &path).arg(repo().join("scripts/install.sh"));
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let calls = inst.take_calls();
    assert!(
        calls.contains(&"apt-get install -y -q containerd runc nftables".to_string()),
        "{calls:?}"
    );
    // Without a package manager it stops and says what to do.
    for pm in ["apt-get", "dnf", "yum", "apk", "zypper"] {
        std::fs::remove_file(inst.dir.path().join("stubs").join(pm)).unwrap();
    }
    let mut c = inst.command(Path::new("sh"), &[]);
    c.env("PATH", &path).arg(repo().join("scripts/install.sh"));
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "Cannot install containerd runc nftables: no apt-get, dnf, yum, apk or zypper"
        ),
        "{}",
        text(&out)
    );
}

/// scripts/install.sh run from a checkout installs that checkout's build.
#[test]
fn installer_from_a_source_checkout() {
    let inst = Installer::new();
    let checkout = inst.dir.path().join("checkout");
    std::fs::create_dir_all(checkout.join("scripts")).unwrap();
    std::fs::create_dir_all(checkout.join("target/release")).unwrap();
    std::fs::write(
        checkout.join("Cargo.toml"),
        "[package]\nname = \"k3rs\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::copy(
        repo().join("scripts/install.sh"),
        checkout.join("scripts/install.sh"),
    )
    .unwrap();
    std::fs::copy(k3rs_bin(), checkout.join("target/release/k3rs")).unwrap();
    let mut c = inst.command(Path::new("sh"), &[("INSTALL_K3RS_SKIP_BUILD", "true")]);
    c.env_remove("INSTALL_K3RS_VERSION")
        .env_remove("INSTALL_K3RS_DOWNLOAD_URL")
        .arg(checkout.join("scripts/install.sh"));
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Downloading"));
    assert_eq!(
        sha256_file(&inst.at("/usr/local/bin/k3rs")),
        sha256_file(Path::new(k3rs_bin()))
    );
}

// --- the static release binaries ----------------------------------------------------------------

#[test]
#[ignore = "needs dist/ from scripts/build-release.sh; scripts/test.sh builds it and runs this"]
fn static_binaries_are_static_small_and_run_under_qemu() {
    let file = require("file", "file");
    let dist = std::env::var_os("K3RS_DIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("dist"));
    let mut problems = Vec::new();
    for (arch, machine, runner) in [
        ("amd64", "x86-64", None),
        (
            "arm64",
            "ARM aarch64",
            Some(("qemu-aarch64-static", "qemu-user-static")),
        ),
        (
            "armhf",
            "ARM, EABI5",
            Some(("qemu-arm-static", "qemu-user-static")),
        ),
    ] {
        let bin = dist.join(format!("k3rs-{arch}"));
        assert!(
            bin.is_file(),
            "{} is missing: run scripts/build-release.sh",
            bin.display()
        );
        let sums = std::fs::read_to_string(dist.join(format!("sha256sum-{arch}.txt"))).unwrap();
        assert_eq!(
            sums,
            format!("{}  k3rs-{arch}\n", sha256_file(&bin)),
            "{arch}"
        );
        let size = std::fs::metadata(&bin).unwrap().len();
        if size >= 25 * 1024 * 1024 {
            problems.push(format!(
                "k3rs-{arch} is {size} bytes, over the 25 MB budget"
            ));
        }
        let desc = String::from_utf8_lossy(&Command::new(&file).arg(&bin).output().unwrap().stdout)
            .into_owned();
        if !(desc.contains("statically linked") || desc.contains("static-pie linked")) {
            problems.push(format!("k3rs-{arch} is not static: {desc}"));
        }
        if !desc.contains(machine) {
            problems.push(format!("k3rs-{arch} is not {machine}: {desc}"));
        }
        let run = |args: &[&str]| -> Output {
            let mut c = match runner {
                Some((qemu, pkg)) => {
                    let mut c = Command::new(require(qemu, pkg));
                    c.arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            c.args(args).output().unwrap()
        };
        let v = run(&["--version"]);
        let vs = String::from_utf8_lossy(&v.stdout);
        if !v.status.success() || !vs.starts_with("k3rs version v1.35.0+k3rs1 (") {
            problems.push(format!("k3rs-{arch} --version: {}", text(&v)));
        }
        let in_git = Command::new("git")
            .args(["-C", &repo().display().to_string(), "rev-parse", "HEAD"])
            .output()
            .is_ok_and(|o| o.status.success());
        if in_git && vs.contains("(unknown)") {
            problems.push(format!(
                "k3rs-{arch} has no git describe in its version: {vs}"
            ));
        }
        // check-config passes or fails depending on this host's kernel; it must run and
        // print the whole report either way.
        let c = run(&["check-config"]);
        let cs = String::from_utf8_lossy(&c.stdout);
        if !matches!(c.status.code(), Some(0 | 1))
            || !cs.contains("\ncgroups:\n")
            || !cs.contains("\nSTATUS: ")
        {
            problems.push(format!("k3rs-{arch} check-config: {}", text(&c)));
        }
        eprintln!("k3rs-{arch}: {size} bytes; {}", desc.trim());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// --- k3rs itself: manifests, sd_notify, kubectl, check-config -------------------------------------

fn manifests_dir(s: &Server) -> PathBuf {
    let d = s.data_dir().join("server/manifests");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a file atomically (rename), as editors and config tools do.
fn write_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn jsonpath(s: &Server, args: &[&str]) -> String {
    let r = s.kubectl(args);
    if r.code == 0 {
        r.stdout.trim().to_string()
    } else {
        String::new()
    }
}

#[test]
fn manifests_folder_is_applied_and_reapplied_on_change() {
    let s = Server::start();
    let dir = manifests_dir(&s);
    // Multi-document YAML: a namespace and objects in it.
    let v1 = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: addons\n---\n\
              apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: addons\n  \
              labels: {app: demo}\ndata:\n  greeting: hello\n---\n\
              apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: addons\n\
              spec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    \
              metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: web\n        \
              image: nginx:1.25\n";
    write_file(&dir.join("demo.yaml"), v1);
    // A JSON manifest, and a skipped one.
    write_file(
        &dir.join("extra.json"),
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"from-json"},"data":{"a":"1"}}"#,
    );
    write_file(
        &dir.join("off.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped}\n",
    );
    write_file(&dir.join("off.yaml.skip"), "");

    let get_greeting = || {
        jsonpath(
            &s,
            &[
                "get",
                "configmap",
                "settings",
                "-n",
                "addons",
                "-o",
                "jsonpath={.data.greeting}",
            ],
        )
    };
    assert!(
        eventually(30, || get_greeting() == "hello"),
        "the manifest did not appear; log:\n{}",
        s.log()
    );
    assert_eq!(
        jsonpath(
            &s,
            &[
                "get",
                "deployment",
                "web",
                "-n",
                "addons",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}"
            ]
        ),
        "nginx:1.25"
    );
    assert!(eventually(10, || jsonpath(
        &s,
        &["get", "configmap", "from-json", "-o", "jsonpath={.data.a}"]
    ) == "1"));
    let ann = jsonpath(
        &s,
        &[
            "get",
            "configmap",
            "settings",
            "-n",
            "addons",
            "-o",
            "jsonpath={.metadata.annotations.k3rs\\.io/manifest}",
        ],
    );
    assert_eq!(ann, "demo.yaml");
    let uid = jsonpath(
        &s,
        &[
            "get",
            "configmap",
            "settings",
            "-n",
            "addons",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );

    // Changing the file changes the objects (same object: same uid).
    write_file(
        &dir.join("demo.yaml"),
        &v1.replace("greeting: hello", "greeting: bonjour")
            .replace("nginx:1.25", "nginx:1.27"),
    );
    assert!(
        eventually(30, || get_greeting() == "bonjour"),
        "the change was not applied; log:\n{}",
        s.log()
    );
    assert_eq!(
        jsonpath(
            &s,
            &[
                "get",
                "deployment",
                "web",
                "-n",
                "addons",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}"
            ]
        ),
        "nginx:1.27"
    );
    assert_eq!(
        jsonpath(
            &s,
            &[
                "get",
                "configmap",
                "settings",
                "-n",
                "addons",
                "-o",
                "jsonpath={.metadata.uid}"
            ]
        ),
        uid
    );

    // The skipped file was never applied.
    let r = s.kubectl(&["get", "configmap", "skipped"]);
    assert_ne!(r.code, 0, "off.yaml was applied despite off.yaml.skip");
    // A broken file is reported in the log and does not stop the others.
    write_file(
        &dir.join("broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n",
    );
    assert!(
        eventually(15, || s.log().contains("broken.yaml")),
        "{}",
        s.log()
    );
}

#[test]
fn manifests_are_not_rewritten_after_a_restart() {
    let mut s = Server::start();
    let dir = manifests_dir(&s);
    write_file(
        &dir.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stable}\ndata: {k: v}\n",
    );
    let rv = |s: &Server| {
        jsonpath(
            s,
            &[
                "get",
                "configmap",
                "stable",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ],
        )
    };
    assert!(eventually(30, || !rv(&s).is_empty()), "{}", s.log());
    let before = rv(&s);
    s.restart();
    // Give the controller a few polls.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(rv(&s), before, "an unchanged manifest was written again");
}

#[test]
fn server_notifies_systemd_when_ready_and_when_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "").unwrap();
    let port = common::free_port();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(k3rs_bin())
        .args(["server", "--disable-agent", "--bind-address", "127.0.0.1"])
        .args(["--https-listen-port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--write-kubeconfig")
        .arg(dir.path().join("kc.yaml"))
        .env("K3RS_CONFIG_FILE", &cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 1024];
    let recv = |buf: &mut [u8]| -> String {
        match sock.recv(buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => panic!(
                "no notification ({e}); log:\n{}",
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            ),
        }
    };
    let ready = recv(&mut buf);
    assert!(
        ready.starts_with("READY=1\nSTATUS=API serving at https://127.0.0.1:"),
        "{ready}"
    );
    // Ready means ready: the API answers now.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let stopping = recv(&mut buf);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn kubectl_subcommand_and_symlink_run_the_real_kubectl() {
    let s = Server::start();
    // `k3rs kubectl` passes everything through; KUBECONFIG set by the caller is kept.
    let out = Command::new(k3rs_bin())
        .args(["kubectl", "get", "namespace", "default", "-o", "name"])
        .env("KUBECONFIG", s.kubeconfig())
        .env("HOME", s.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/default"
    );

    // Called through a `kubectl` symlink (the installer's), it finds the real kubectl on
    // PATH and never itself.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("kubectl");
    std::os::unix::fs::symlink(k3rs_bin(), &link).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new(&link)
        .args(["get", "--raw", "/readyz"])
        .env("PATH", &path)
        .env("KUBECONFIG", s.kubeconfig())
        .env("HOME", s.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    // Without a real kubectl it says so.
    let out = Command::new(&link)
        .arg("version")
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("k3rs: error: kubectl is not on PATH: k3rs does not bundle it"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_config_prints_a_report_for_this_host() {
    let out = Command::new(k3rs_bin())
        .arg("check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    assert!(stdout.starts_with("k3rs check-config: kernel "), "{stdout}");
    for section in ["\ncgroups:\n", "\nkernel:\n", "\nprograms:\n"] {
        assert!(stdout.contains(section), "no {section:?} in:\n{stdout}");
    }
    let failed = stdout.contains("  FAIL  ");
    assert_eq!(
        out.status.code(),
        Some(if failed { 1 } else { 0 }),
        "{stdout}"
    );
    // `k3rs check-config --help` is clap's help, not a check run.
    let help = Command::new(k3rs_bin())
        .args(["check-config", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("kernel features"));
}

// --- docs ----------------------------------------------------------------------------------------

/// The flags table for README.md, from `k3rs server --help`.
fn flags_table() -> String {
    let out = Command::new(k3rs_bin())
        .args(["server", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rows = vec![
        "| Flag | Environment variable | Default | Description |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    let options = help
        .split_once("Options:\n")
        .map(|(_, o)| o)
        .unwrap_or_else(|| panic!("no Options: in\n{help}"));
    for line in options.lines() {
        let line = line.trim();
        let Some((flag, rest)) = line.split_once("  ") else {
            panic!("cannot read help line {line:?} (has clap started wrapping?)");
        };
        if flag.contains("--help") {
            continue;
        }
        let mut desc = rest.trim().to_string();
        let mut take = |key: &str| -> String {
            let open = format!("[{key}: ");
            match desc.find(&open) {
                Some(i) => {
                    let end = desc[i..].find(']').map(|e| i + e).unwrap_or(desc.len());
                    let v = desc[i + open.len()..end].trim_end_matches('=').to_string();
                    desc.replace_range(i..(end + 1).min(desc.len()), "");
                    v
                }
                None => String::new(),
            }
        };
        let default = take("default");
        let env = take("env");
        let code = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("`{s}`")
            }
        };
        // "-c, --config <FILE>" → "`--config <FILE>`, `-c`"
        let mut names: Vec<&str> = flag.split(", ").collect();
        names.sort_by_key(|n| !n.starts_with("--"));
        let names: Vec<String> = names.iter().map(|n| code(n)).collect();
        rows.push(format!(
            "| {} | {} | {} | {} |",
            names.join(", "),
            code(&env),
            code(&default),
            desc.trim().replace('|', "\\|")
        ));
    }
    rows.join("\n") + "\n"
}

#[test]
fn readme_flags_table_is_generated_from_the_cli() {
    let path = repo().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let begin = readme
        .find("<!-- BEGIN flags")
        .expect("README.md has no <!-- BEGIN flags ... --> marker");
    let begin = begin + readme[begin..].find("-->\n").unwrap() + 4;
    let end = readme
        .find("<!-- END flags -->")
        .expect("no <!-- END flags --> marker");
    let table = flags_table();
    if std::env::var_os("K3RS_UPDATE_README").is_some() {
        let new = format!("{}{}{}", &readme[..begin], table, &readme[end..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        &readme[begin..end],
        table,
        "README.md's flags table is out of date: run K3RS_UPDATE_README=1 cargo test --test packaging readme"
    );
}

#[test]
fn example_config_is_accepted_by_the_server() {
    let example = repo().join("packaging/config.yaml");
    let args: Vec<std::ffi::OsString> = vec![
        "k3rs".into(),
        "server".into(),
        "--config".into(),
        example.clone().into(),
    ];
    match k3rs::config::parse(args) {
        Ok(k3rs::config::Command::Server(cfg)) => {
            assert_eq!(cfg.tls_san, ["k3rs.example.com", "192.168.1.10"]);
            assert_eq!(cfg.write_kubeconfig_mode, 0o600);
            assert_eq!(cfg.config_files, [example]);
        }
        Ok(other) => panic!("{other:?}"),
        Err(e) => panic!("packaging/config.yaml is rejected: {e}"),
    }
}

#[test]
fn installer_service_options() {
    // Name, directories, and no enable at all.
    let inst = Installer::new();
    inst.install_ok(
        &[
            ("INSTALL_K3RS_NAME", "edge"),
            ("INSTALL_K3RS_BIN_DIR", "/opt/bin"),
            ("INSTALL_K3RS_SYSTEMD_DIR", "/usr/lib/systemd/system"),
            ("INSTALL_K3RS_SKIP_ENABLE", "true"),
        ],
        &[],
    );
    let unit = inst.read("/usr/lib/systemd/system/k3rs-edge.service");
    assert!(unit.contains("ExecStart=/opt/bin/k3rs server\n"), "{unit}");
    assert!(unit.contains("EnvironmentFile=-/usr/lib/systemd/system/k3rs-edge.service.env\n"));
    assert!(inst.at("/opt/bin/k3rs-edge-uninstall.sh").exists());
    assert!(inst.at("/opt/bin/k3rs-killall.sh").exists());
    let calls = inst.take_calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("systemctl")),
        "{calls:?}"
    );

    // Enable but do not start; then a forced restart although nothing changed.
    let inst = Installer::new();
    inst.install_ok(&[("INSTALL_K3RS_SKIP_START", "true")], &[]);
    let calls = inst.take_calls();
    assert_eq!(
        count(&calls, "systemctl enable k3rs.service"),
        1,
        "{calls:?}"
    );
    assert_eq!(
        count(&calls, "systemctl restart k3rs.service"),
        0,
        "{calls:?}"
    );
    inst.install_ok(&[("INSTALL_K3RS_FORCE_RESTART", "true")], &[]);
    let calls = inst.take_calls();
    assert_eq!(
        count(&calls, "systemctl restart k3rs.service"),
        1,
        "{calls:?}"
    );
}
