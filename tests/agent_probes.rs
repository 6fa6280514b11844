//! Container probes end to end on `k3rs server` with its embedded agent (real
//! containerd and runc, the busybox test image, the real kubectl). Pods have loopback
//! only here (`--flannel-backend none`), so every probe runs inside the pod's network
//! namespace on 127.0.0.1, which is what this checks.
//!
//! Needs root, containerd, runc and busybox-static (`apt-get install containerd runc
//! busybox-static`); every test fails loudly, never skips, when one is missing.

mod common;
#[path = "common/images.rs"]
mod images;
#[path = "common/pods.rs"]
mod pods;

use common::{eventually, Server};
use pods::{cluster, jsonpath, wait_for, IMAGE};
use std::time::Instant;

fn apply(s: &Server, yaml: &str) {
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml.replace("IMAGE", IMAGE))
        .ok();
}

fn describe(s: &Server, pod: &str) -> String {
    s.kubectl(&["describe", "pod", pod]).ok().to_string()
}

/// The pod's condition `kind` status ("True"/"False").
fn condition(s: &Server, pod: &str, kind: &str) -> String {
    jsonpath(
        s,
        &format!("pod/{pod}"),
        &format!("{{.status.conditions[?(@.type==\"{kind}\")].status}}"),
    )
}

fn restarts(s: &Server, pod: &str) -> u32 {
    jsonpath(
        s,
        &format!("pod/{pod}"),
        "{.status.containerStatuses[0].restartCount}",
    )
    .parse()
    .unwrap_or(0)
}

/// Waits until `describe pod` shows every one of `wants`.
fn wait_described(s: &Server, pod: &str, wants: &[&str]) {
    let ok = eventually(90, || {
        let d = describe(s, pod);
        wants.iter().all(|w| d.contains(w))
    });
    assert!(
        ok,
        "describe pod {pod} lacks one of {wants:?}:\n{}\nlog:\n{}",
        describe(s, pod),
        s.log()
    );
}

const WEB: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: test-node
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: IMAGE
    ports:
    - name: http
      containerPort: 8080
    command:
    - sh
    - -c
    - |
      mkdir -p /tmp/www/cgi-bin
      printf '%s\n' '#!/bin/sh' '[ -f /tmp/healthy ] && echo "HTTP/1.1 200 OK" || echo "HTTP/1.1 500 Internal Server Error"' 'echo' > /tmp/www/cgi-bin/health
      busybox chmod 755 /tmp/www/cgi-bin/health
      touch /tmp/healthy
      exec httpd -f -p 8080 -h /tmp/www
    livenessProbe:
      httpGet:
        path: /cgi-bin/health
        port: http
        httpHeaders:
        - name: X-Probe
          value: k3rs
      periodSeconds: 1
      failureThreshold: 2
"#;

const TCP_DEAD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: tcp-dead
spec:
  nodeName: test-node
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: IMAGE
    command: ["sleep", "3600"]
    livenessProbe:
      tcpSocket:
        port: 9999
      periodSeconds: 1
      failureThreshold: 1
"#;

const EXEC_SLOW: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: exec-slow
spec:
  nodeName: test-node
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: IMAGE
    command: ["sleep", "3600"]
    livenessProbe:
      exec:
        command: ["sleep", "30"]
      timeoutSeconds: 1
      periodSeconds: 2
      failureThreshold: 1
      terminationGracePeriodSeconds: 1
"#;

#[test]
fn liveness_probes_restart_containers_with_upstream_events() {
    let s = cluster();
    apply(&s, WEB);
    apply(&s, TCP_DEAD);
    apply(&s, EXEC_SLOW);

    // A healthy liveness probe leaves the container alone.
    wait_for(&s, 60, "pod/web", "{.status.phase}", "Running");
    wait_for(
        &s,
        30,
        "pod/web",
        "{.status.containerStatuses[0].ready}",
        "true",
    );
    assert_eq!(restarts(&s, "web"), 0, "{}", describe(&s, "web"));

    // The path starts failing: the container is restarted with upstream's events.
    s.kubectl(&["exec", "web", "--", "rm", "/tmp/healthy"]).ok();
    let ok = eventually(90, || restarts(&s, "web") >= 1);
    assert!(
        ok,
        "web never restarted:\n{}\n{}",
        describe(&s, "web"),
        s.log()
    );
    wait_described(
        &s,
        "web",
        &[
            "Unhealthy",
            "Liveness probe failed: HTTP probe failed with statuscode: 500",
            "Killing",
            "Container web failed liveness probe, will be restarted",
        ],
    );
    // The new run recreated the file: it is running and healthy again.
    wait_for(
        &s,
        60,
        "pod/web",
        "{.status.containerStatuses[0].ready}",
        "true",
    );
    assert!(!jsonpath(
        &s,
        "pod/web",
        "{.status.containerStatuses[0].state.running.startedAt}"
    )
    .is_empty());

    // tcpSocket on a port nobody listens on, and an exec probe that outlives its
    // timeout (killed, and counted as a failure).
    let ok = eventually(90, || {
        restarts(&s, "tcp-dead") >= 1 && restarts(&s, "exec-slow") >= 1
    });
    assert!(
        ok,
        "tcp-dead/exec-slow never restarted:\n{}\n{}",
        describe(&s, "tcp-dead"),
        describe(&s, "exec-slow")
    );
    wait_described(
        &s,
        "tcp-dead",
        &[
            "Liveness probe failed: dial tcp 127.0.0.1:9999: connect: connection refused",
            "Container main failed liveness probe, will be restarted",
        ],
    );
    wait_described(
        &s,
        "exec-slow",
        &["Liveness probe failed: command \"sleep 30\" timed out"],
    );
    // The timed-out probe commands were killed, not left running in the container.
    let ps = s.kubectl(&["exec", "exec-slow", "--", "ps"]).stdout;
    assert!(
        ps.matches("sleep 30").count() <= 1,
        "timed-out exec probes pile up:\n{ps}"
    );
}

const READY: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: ready
spec:
  nodeName: test-node
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: IMAGE
    command: ["sh", "-c", "touch /tmp/ready; exec sleep 3600"]
    readinessProbe:
      exec:
        command: ["cat", "/tmp/ready"]
      periodSeconds: 1
"#;

const SLOW: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: slow
spec:
  nodeName: test-node
  terminationGracePeriodSeconds: 2
  containers:
  - name: slow
    image: IMAGE
    command: ["sh", "-c", "sleep 8; exec httpd -f -p 8080 -h /var/www"]
    startupProbe:
      httpGet:
        path: /
        port: 8080
      periodSeconds: 1
      failureThreshold: 30
    livenessProbe:
      httpGet:
        path: /
        port: 8080
      periodSeconds: 1
      failureThreshold: 1
    readinessProbe:
      tcpSocket:
        port: 8080
      periodSeconds: 1
"#;

#[test]
fn readiness_and_startup_probes_drive_ready_and_started() {
    let s = cluster();
    apply(&s, READY);
    apply(&s, SLOW);

    wait_for(&s, 60, "pod/ready", "{.status.phase}", "Running");
    let ok = eventually(30, || condition(&s, "ready", "Ready") == "True");
    assert!(ok, "ready never became Ready:\n{}", describe(&s, "ready"));
    assert_eq!(condition(&s, "ready", "ContainersReady"), "True");

    // The readiness file goes: Ready turns False (within about two periods).
    s.kubectl(&["exec", "ready", "--", "rm", "/tmp/ready"]).ok();
    let removed = Instant::now();
    let ok = eventually(30, || condition(&s, "ready", "Ready") == "False");
    assert!(ok, "Ready stayed True:\n{}", describe(&s, "ready"));
    println!(
        "Ready False {:?} after the file was removed",
        removed.elapsed()
    );
    assert_eq!(condition(&s, "ready", "ContainersReady"), "False");
    assert_eq!(
        jsonpath(&s, "pod/ready", "{.status.containerStatuses[0].ready}"),
        "false"
    );
    // Unready is not dead: the container keeps running.
    assert_eq!(restarts(&s, "ready"), 0);
    wait_described(
        &s,
        "ready",
        &["Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory"],
    );

    // Repeats are one event with a count, as upstream aggregates them.
    let ok = eventually(30, || {
        describe(&s, "ready")
            .lines()
            .any(|l| l.contains("Readiness probe failed") && l.contains("(x"))
    });
    assert!(
        ok,
        "repeated failures not aggregated:\n{}",
        describe(&s, "ready")
    );

    // And back.
    s.kubectl(&["exec", "ready", "--", "touch", "/tmp/ready"])
        .ok();
    let restored = Instant::now();
    let ok = eventually(30, || condition(&s, "ready", "Ready") == "True");
    assert!(ok, "Ready stayed False:\n{}", describe(&s, "ready"));
    println!(
        "Ready True {:?} after the file was restored",
        restored.elapsed()
    );

    // The slow starter: its startup probe fails for ~8 s, which the liveness probe
    // (failureThreshold 1) would never have tolerated; it is never restarted.
    let ok = eventually(90, || {
        jsonpath(&s, "pod/slow", "{.status.containerStatuses[0].started}") == "true"
    });
    assert!(
        ok,
        "slow never started:\n{}\n{}",
        describe(&s, "slow"),
        s.log()
    );
    wait_for(
        &s,
        30,
        "pod/slow",
        "{.status.containerStatuses[0].ready}",
        "true",
    );
    assert_eq!(condition(&s, "slow", "Ready"), "True");
    assert_eq!(restarts(&s, "slow"), 0, "{}", describe(&s, "slow"));
    let d = describe(&s, "slow");
    assert!(d.contains("Startup probe failed: Get \"http://127.0.0.1:8080/\": dial tcp 127.0.0.1:8080: connect: connection refused"), "{d}");
    assert!(!d.contains("Liveness probe failed"), "{d}");
}
