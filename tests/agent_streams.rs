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
use pods::{cluster, jsonpath, pod_yaml, wait_for};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

fn httpd(s: &Server) {
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml(
            "web",
            "Always",
            "echo starting; exec httpd -f -v -p 8080 -h /var/www",
        ),
    )
    .ok();
    wait_for(s, 60, "pod/web", "{.status.phase}", "Running");
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
    s.kubectl_stdin(&["apply", "-f", "-"], &pod_yaml("ticker", "Always", "i=0; while [ $i -lt 3 ]; do i=$((i+1)); echo tick $i; sleep 1; done; echo done; exit 1")).ok();
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
    assert!(
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tmux is missing: `apt-get install tmux`"
    );
    let session = format!("k3rs-exec-{}", std::process::id());
    let kubectl = format!(
        "kubectl --kubeconfig {} exec -it web -- sh",
        s.kubeconfig().display()
    );
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().expect("tmux");
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "30",
        &kubectl,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let screen = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned()
    };
    assert!(
        eventually(30, || screen().contains('#')),
        "no shell prompt: {}",
        screen()
    );
    tmux(&[
        "send-keys",
        "-t",
        &session,
        "stty size; tty; echo in-$((40+2))",
        "Enter",
    ]);
    let ok = eventually(20, || {
        let sc = screen();
        sc.contains("in-42") && sc.contains("30 120") && sc.contains("/dev/pts/")
    });
    let seen = screen();
    tmux(&["send-keys", "-t", &session, "exit", "Enter"]);
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(ok, "terminal session did not work:\n{seen}");
}

#[test]
fn kubectl_run_it_attaches_to_the_container_terminal() {
    let s = cluster();
    assert!(
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tmux is missing: `apt-get install tmux`"
    );
    let session = format!("k3rs-run-{}", std::process::id());
    let kubectl = format!(
        "kubectl --kubeconfig {} run shell -it --restart=Never --image={} --overrides='{{\"spec\":{{\"nodeName\":\"test-node\"}}}}' -- sh",
        s.kubeconfig().display(),
        pods::IMAGE
    );
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().expect("tmux");
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "100",
        "-y",
        "30",
        &kubectl,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let screen = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned()
    };
    let running = eventually(60, || {
        jsonpath(&s, "pod/shell", "{.status.phase}") == "Running"
    });
    assert!(running, "pod never ran: {}", screen());
    // kubectl says "If you don't see a command prompt, try pressing enter."
    std::thread::sleep(Duration::from_secs(2));
    tmux(&["send-keys", "-t", &session, "", "Enter"]);
    tmux(&[
        "send-keys",
        "-t",
        &session,
        "echo attached-$((40+2))",
        "Enter",
    ]);
    let ok = eventually(20, || screen().contains("attached-42"));
    let seen = screen();
    tmux(&["send-keys", "-t", &session, "exit", "Enter"]);
    let exited = eventually(30, || {
        jsonpath(&s, "pod/shell", "{.status.phase}") == "Succeeded"
    });
    let _ = tmux(&["kill-session", "-t", &session]);
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
