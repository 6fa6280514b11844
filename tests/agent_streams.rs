//! Logs, exec, attach-free streaming and port-forward through the real kubectl, the API
//! server's proxy and the agent's kubelet endpoint, against containers on real
//! containerd: `kubectl exec` (also `-it` in a tmux terminal), `kubectl logs -f` and
//! `--previous`, `kubectl port-forward`.
//!
//! Needs root, containerd, runc, busybox-static and tmux (`apt-get install containerd
//! runc busybox-static tmux`); fails loudly, never skips, when one is missing.

mod common;
#[path = "common/images.rs"]
mod images;
#[path = "common/pods.rs"]
mod pods;

use common::{eventually, Server};
use pods::{apply_pod, cluster, jsonpath, wait_for};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

fn httpd(s: &Server) {
    apply_pod(
        s,
        "web",
        "Always",
        "echo starting; exec httpd -f -v -p 8080 -h /var/www",
    );
    wait_for(s, 60, "pod/web", "{.status.phase}", "Running");
}

/// A detached tmux session running `command` in a terminal of a fixed size: what a
/// user at a terminal sees and types. The session is killed on drop.
struct Tmux {
    session: String,
}

impl Tmux {
    fn start(name: &str, width: u16, height: u16, command: &str) -> Tmux {
        assert!(
            Command::new("tmux")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success()),
            "tmux is missing: `apt-get install tmux`"
        );
        let t = Tmux {
            session: format!("k3rs-{name}-{}", std::process::id()),
        };
        let (width, height) = (width.to_string(), height.to_string());
        let started = t.run(&[
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            &width,
            "-y",
            &height,
            command,
        ]);
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
        t
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").args(args).output().expect("tmux")
    }

    /// The visible screen.
    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .run(&["capture-pane", "-p", "-t", &self.session])
                .stdout,
        )
        .into_owned()
    }

    /// Types `line` and Enter.
    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", &self.session, line, "Enter"]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-session", "-t", &self.session]);
    }
}

#[test]
fn exec_fetches_the_page_and_reports_exit_codes() {
    let s = cluster();
    httpd(&s);
    let page = s.kubectl(&[
        "exec",
        "web",
        "--",
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:8080/",
    ]);
    assert_eq!(page.ok(), images::INDEX_HTML, "{}", page.stderr);
    let r = s.kubectl(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(
        r.code, 3,
        "kubectl passes the exit code on: {} {}",
        r.stdout, r.stderr
    );
    assert!(r.stderr.contains("to-stderr"), "{}", r.stderr);
    // stdin reaches the command.
    let r = s.kubectl_stdin(&["exec", "-i", "web", "--", "wc", "-c"], "12345");
    assert_eq!(r.ok().trim(), "5");
    // Every kubectl under test, old (SPDY) and new (WebSocket).
    for bin in common::kubectls() {
        let r = s.kubectl_with(
            &bin,
            &["exec", "web", "--", "cat", "/var/www/index.html"],
            None,
        );
        assert_eq!(r.code, 0, "{bin}: {}", r.stderr);
        assert_eq!(r.stdout, images::INDEX_HTML, "{bin}");
    }
}

#[test]
fn logs_follow_and_previous() {
    let s = cluster();
    apply_pod(
        &s,
        "ticker",
        "Always",
        "i=0; while [ $i -lt 3 ]; do i=$((i+1)); echo tick $i; sleep 1; done; echo done; exit 1",
    );
    wait_for(&s, 60, "pod/ticker", "{.status.phase}", "Running");
    // -f streams lines as they are written.
    let out = tempfile::NamedTempFile::new().expect("tmp");
    let mut follow = s.kubectl_background(&["logs", "-f", "ticker"], out.path());
    assert!(
        eventually(30, || std::fs::read_to_string(out.path())
            .unwrap_or_default()
            .contains("tick 1")),
        "logs -f showed nothing"
    );
    let _ = follow.wait();
    let all = std::fs::read_to_string(out.path()).unwrap_or_default();
    assert!(all.contains("tick 3") && all.contains("done"), "{all}");
    // After the restart, --previous shows the run before.
    assert!(eventually(60, || jsonpath(
        &s,
        "pod/ticker",
        "{.status.containerStatuses[0].restartCount}"
    ) == "1"));
    let prev = s.kubectl(&["logs", "ticker", "--previous"]);
    let prev = prev.ok();
    assert!(prev.contains("tick 1") && prev.contains("done"), "{prev}");
    let tail = s.kubectl(&["logs", "ticker", "--previous", "--tail=1"]);
    assert_eq!(tail.ok(), "done\n");
}

#[test]
fn port_forward_reaches_the_httpd() {
    let s = cluster();
    httpd(&s);
    for bin in common::kubectls() {
        let port = common::free_port();
        let mut child = Command::new(&bin)
            .args([
                "--kubeconfig",
                &s.kubeconfig().to_string_lossy(),
                "port-forward",
                "pod/web",
                &format!("{port}:8080"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("port-forward");
        let mut body = String::new();
        let fetched = eventually(30, || {
            let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            use std::io::Write;
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = c.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
            body.clear();
            let _ = c.read_to_string(&mut body);
            body.contains("hello from k3rs")
        });
        let _ = child.kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        assert!(
            fetched,
            "{bin}: port-forward did not reach the httpd: {body:?} {err}"
        );
    }
}

#[test]
fn exec_with_a_terminal_under_tmux() {
    let s = cluster();
    httpd(&s);
    let kubectl = format!(
        "kubectl --kubeconfig {} exec -it web -- sh",
        s.kubeconfig().display()
    );
    let tmux = Tmux::start("exec", 120, 30, &kubectl);
    assert!(
        eventually(30, || tmux.screen().contains('#')),
        "no shell prompt: {}",
        tmux.screen()
    );
    tmux.type_line("stty size; tty; echo in-$((40+2))");
    let ok = eventually(20, || {
        let sc = tmux.screen();
        sc.contains("in-42") && sc.contains("30 120") && sc.contains("/dev/pts/")
    });
    let seen = tmux.screen();
    tmux.type_line("exit");
    drop(tmux);
    assert!(ok, "terminal session did not work:\n{seen}");
}

#[test]
fn kubectl_run_it_attaches_to_the_container_terminal() {
    let s = cluster();
    let kubectl = format!(
        "kubectl --kubeconfig {} run shell -it --restart=Never --image={} --overrides='{{\"spec\":{{\"nodeName\":\"test-node\"}}}}' -- sh",
        s.kubeconfig().display(),
        pods::IMAGE
    );
    let tmux = Tmux::start("run", 100, 30, &kubectl);
    let running = eventually(60, || {
        jsonpath(&s, "pod/shell", "{.status.phase}") == "Running"
    });
    assert!(running, "pod never ran: {}", tmux.screen());
    // kubectl says "If you don't see a command prompt, try pressing enter."
    std::thread::sleep(Duration::from_secs(2));
    tmux.type_line("");
    tmux.type_line("echo attached-$((40+2))");
    let ok = eventually(20, || tmux.screen().contains("attached-42"));
    let seen = tmux.screen();
    tmux.type_line("exit");
    let exited = eventually(30, || {
        jsonpath(&s, "pod/shell", "{.status.phase}") == "Succeeded"
    });
    drop(tmux);
    assert!(
        ok,
        "attach did not reach the shell:\n{seen}\nlog:\n{}",
        s.log()
    );
    assert!(
        exited,
        "the shell did not end with `exit`: {}",
        jsonpath(&s, "pod/shell", "{.status.phase}")
    );
}
