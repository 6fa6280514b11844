//! The kubectl fidelity matrix: one scripted scenario of everyday kubectl commands, run
//! against the real server under every kubectl this machine has (see `common::kubectls`),
//! comparing output and exit codes with what a real cluster gives (expectations written
//! from upstream's printers and messages). Prints a matrix of commands × kubectl versions.

mod common;

use common::{eventually, kubectl_minor, kubectls, Run, Server};
use std::collections::BTreeMap;
use std::time::Duration;

/// One kubectl binary against one server.
struct Ctx<'a> {
    s: &'a Server,
    bin: &'a str,
    minor: u32,
}

type Check = Result<(), String>;

impl Ctx<'_> {
    fn k(&self, args: &[&str]) -> Run {
        self.s.kubectl_with(self.bin, args, None)
    }

    fn k_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        self.s.kubectl_env(self.bin, args, None, envs)
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> Result<String, String> {
        let r = self.k(args);
        if r.code != 0 {
            return Err(format!(
                "`kubectl {}` failed ({}): {}{}",
                args.join(" "),
                r.code,
                r.stdout,
                r.stderr
            ));
        }
        Ok(r.stdout)
    }

    /// Runs and requires stdout (trimmed) to equal `want`.
    fn says(&self, args: &[&str], want: &str) -> Check {
        let out = self.ok(args)?;
        if out.trim() != want {
            return Err(format!(
                "`kubectl {}` printed {:?}, want {:?}",
                args.join(" "),
                out.trim(),
                want
            ));
        }
        Ok(())
    }

    /// Runs and requires failure with stderr containing `want`.
    fn fails_with(&self, args: &[&str], want: &str) -> Check {
        let r = self.k(args);
        if r.code == 0 {
            return Err(format!(
                "`kubectl {}` succeeded, want failure with {want:?}",
                args.join(" ")
            ));
        }
        if !r.stderr.contains(want) {
            return Err(format!(
                "`kubectl {}` stderr {:?} lacks {want:?}",
                args.join(" "),
                r.stderr
            ));
        }
        Ok(())
    }

    fn manifest(&self, name: &str, text: &str) -> String {
        self.s.manifest(name, text)
    }

    /// `pod "x" deleted` before 1.34, `pod "x" deleted from default namespace` after.
    fn deleted(&self, what: &str, ns: Option<&str>) -> String {
        match ns {
            Some(ns) if self.minor >= 34 => format!("{what} deleted from {ns} namespace"),
            _ => format!("{what} deleted"),
        }
    }
}

fn check(cond: bool, msg: impl FnOnce() -> String) -> Check {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn header(out: &str) -> Vec<String> {
    let line = out.lines().next().unwrap_or("");
    // Column names may contain one space ("NOMINATED NODE"); split on runs of 2+ spaces.
    line.split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn has_header(out: &str, want: &[&str]) -> Check {
    let h = header(out);
    check(h == want, || format!("header {h:?}, want {want:?}\n{out}"))
}

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: busybox:1.36
        env: [{name: A, value: \"1\"}, {name: B, value: \"2\"}]
        ports: [{containerPort: 8080}]
      - name: side
        image: busybox:1.36
";

fn generators(c: &Ctx) -> Check {
    c.says(&["create", "namespace", "demo"], "namespace/demo created")?;
    c.says(
        &[
            "create",
            "deployment",
            "gen",
            "--image=busybox:1.36",
            "--replicas=2",
        ],
        "deployment.apps/gen created",
    )?;
    c.says(
        &["create", "configmap", "cfg", "--from-literal=a=1"],
        "configmap/cfg created",
    )?;
    c.says(
        &["create", "secret", "generic", "sec", "--from-literal=p=q"],
        "secret/sec created",
    )?;
    c.says(
        &["create", "service", "clusterip", "svc", "--tcp=80:8080"],
        "service/svc created",
    )?;
    c.says(
        &["create", "job", "job1", "--image=busybox:1.36"],
        "job.batch/job1 created",
    )?;
    c.says(
        &[
            "create",
            "cronjob",
            "cj",
            "--image=busybox:1.36",
            "--schedule=*/5 * * * *",
        ],
        "cronjob.batch/cj created",
    )?;
    c.says(
        &["create", "role", "r", "--verb=get", "--resource=pods"],
        "role.rbac.authorization.k8s.io/r created",
    )?;
    c.says(
        &["create", "rolebinding", "rb", "--role=r", "--user=u"],
        "rolebinding.rbac.authorization.k8s.io/rb created",
    )?;
    c.says(
        &[
            "run",
            "p1",
            "--image=busybox:1.36",
            "--restart=Never",
            "--",
            "sleep",
            "3600",
        ],
        "pod/p1 created",
    )?;
    c.says(
        &[
            "expose",
            "deployment",
            "gen",
            "--port=80",
            "--target-port=8080",
        ],
        "service/gen exposed",
    )?;
    let job_sel = c.ok(&[
        "get",
        "job",
        "job1",
        "-o",
        "jsonpath={.spec.selector.matchLabels}",
    ])?;
    check(job_sel.contains("controller-uid"), || {
        format!("job selector not generated: {job_sel}")
    })
}

fn get_tables(c: &Ctx) -> Check {
    has_header(
        &c.ok(&["get", "pods"])?,
        &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
    )?;
    has_header(
        &c.ok(&["get", "pods", "-o", "wide"])?,
        &[
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES",
        ],
    )?;
    let out = c.ok(&["get", "pods", "--show-labels"])?;
    check(
        header(&out).last().map(String::as_str) == Some("LABELS") && out.contains("run=p1"),
        || out.clone(),
    )?;
    let out = c.ok(&["get", "pods", "-L", "run"])?;
    check(
        header(&out).last().map(String::as_str) == Some("RUN"),
        || out.clone(),
    )?;
    let out = c.ok(&["get", "pods", "-A"])?;
    check(
        header(&out).first().map(String::as_str) == Some("NAMESPACE"),
        || out.clone(),
    )?;
    has_header(
        &c.ok(&["get", "deploy"])?,
        &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
    )?;
    has_header(
        &c.ok(&["get", "svc"])?,
        &[
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
    )?;
    has_header(&c.ok(&["get", "cm", "cfg"])?, &["NAME", "DATA", "AGE"])?;
    has_header(
        &c.ok(&["get", "secret", "sec"])?,
        &["NAME", "TYPE", "DATA", "AGE"],
    )?;
    has_header(&c.ok(&["get", "ns"])?, &["NAME", "STATUS", "AGE"])?;
    has_header(
        &c.ok(&["get", "cronjobs"])?,
        &[
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
        ],
    )?;
    let sorted = c.ok(&["get", "cm", "--sort-by=.metadata.name", "-o", "name"])?;
    let names: Vec<&str> = sorted.lines().collect();
    let mut want = names.clone();
    want.sort();
    check(names == want && !names.is_empty(), || sorted.clone())?;
    let all = c.ok(&["get", "all"])?;
    for want in [
        "pod/p1",
        "deployment.apps/gen",
        "service/gen",
        "job.batch/job1",
        "cronjob.batch/cj",
    ] {
        check(all.contains(want), || {
            format!("`get all` lacks {want}:\n{all}")
        })?;
    }
    Ok(())
}

fn apply(c: &Ctx) -> Check {
    let f = c.manifest("deploy.yaml", DEPLOY);
    c.says(&["apply", "-f", &f], "deployment.apps/web created")?;
    c.says(&["apply", "-f", &f], "deployment.apps/web unchanged")?;
    // Someone else sets a field that is not in the file: re-apply keeps it.
    c.ok(&["annotate", "deployment", "web", "owner=ops"])?;
    let edited = DEPLOY.replace(
        "image: busybox:1.36\n        env: [{name: A, value: \"1\"}, {name: B, value: \"2\"}]",
        "image: busybox:1.37\n        env: [{name: A, value: \"1\"}]",
    );
    let f2 = c.manifest("deploy.yaml", &edited);
    c.says(&["apply", "-f", &f2], "deployment.apps/web configured")?;
    let jp = c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[*].name} {.spec.template.spec.containers[1].name} {.metadata.annotations.owner}"])?;
    check(jp == "busybox:1.37 A side ops", || {
        format!("after re-apply: {jp:?}")
    })?;
    // A directory and --prune with a label.
    let dir = c.s.dir.path().join("applydir");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pa, labels: {set: p}}\ndata: {k: v}\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("b.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pb, labels: {set: p}}\ndata: {k: v}\n",
    )
    .map_err(|e| e.to_string())?;
    let d = dir.to_string_lossy().to_string();
    let out = c.ok(&["apply", "-f", &d])?;
    check(
        out.contains("configmap/pa created") && out.contains("configmap/pb created"),
        || out.clone(),
    )?;
    std::fs::remove_file(dir.join("b.yaml")).map_err(|e| e.to_string())?;
    let out = c.ok(&["apply", "-f", &d, "--prune", "-l", "set=p"])?;
    check(out.contains("configmap/pb pruned"), || {
        format!("prune: {out}")
    })?;
    c.fails_with(&["get", "cm", "pb"], "NotFound")
}

fn apply_server_side(c: &Ctx) -> Check {
    let f = c.manifest(
        "ssa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {k: v}\n",
    );
    let r = c.k(&["apply", "--server-side", "-f", &f]);
    if r.code == 0 {
        return check(
            r.stdout.trim() == "configmap/ssa serverside-applied",
            || r.stdout.clone(),
        );
    }
    check(
        r.stderr
            .contains("Server-side apply not available on the server"),
        || format!("server-side apply: {}", r.stderr),
    )
}

fn describe(c: &Ctx) -> Check {
    let out = c.ok(&["describe", "pod", "p1"])?;
    for want in [
        "Name:",
        "p1",
        "Namespace:",
        "default",
        "Containers:",
        "Events:",
    ] {
        check(out.contains(want), || {
            format!("describe pod lacks {want}:\n{out}")
        })?;
    }
    let out = c.ok(&["describe", "deployment", "web"])?;
    check(
        out.contains("Replicas:") && out.contains("Pod Template:"),
        || out.clone(),
    )?;
    let rc = c.manifest("rc-describe.yaml", "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rcd}\nspec:\n  replicas: 1\n  selector: {app: rcd}\n  template:\n    metadata: {labels: {app: rcd}}\n    spec: {containers: [{name: c, image: busybox:1.36}]}\n");
    c.ok(&["create", "-f", &rc])?;
    let out = c.ok(&["describe", "rc", "rcd"])?;
    check(
        out.contains("Selector:") && out.contains("app=rcd") && out.contains("Replicas:"),
        || out.clone(),
    )?;
    let out = c.ok(&["describe", "service", "gen"])?;
    check(out.contains("Selector:") && out.contains("app=gen"), || {
        out.clone()
    })
}

fn edit(c: &Ctx) -> Check {
    let script = c.s.dir.path().join("editor.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nsed -i 's/^  a: \"1\"/  a: \"2\"/' \"$1\"\n",
    )
    .map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let editor = script.to_string_lossy().to_string();
    let r = c.k_env(&["edit", "configmap", "cfg"], &[("KUBE_EDITOR", &editor)]);
    check(
        r.code == 0 && r.stdout.trim() == "configmap/cfg edited",
        || format!("edit: {} {}", r.stdout, r.stderr),
    )?;
    c.says(&["get", "cm", "cfg", "-o", "jsonpath={.data.a}"], "2")
}

fn patch(c: &Ctx) -> Check {
    c.says(&["patch", "deployment", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox:1.38"}]}}}}"#], "deployment.apps/web patched")?;
    c.says(
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image}",
        ],
        "busybox:1.37 busybox:1.38",
    )?;
    c.says(
        &[
            "patch",
            "cm",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"m":"1"}}"#,
        ],
        "configmap/cfg patched",
    )?;
    c.says(
        &[
            "patch",
            "cm",
            "cfg",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/data/j","value":"2"}]"#,
        ],
        "configmap/cfg patched",
    )?;
    c.says(
        &[
            "patch",
            "cm",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"m":"1"}}"#,
        ],
        "configmap/cfg patched (no change)",
    )?;
    c.says(
        &["get", "cm", "cfg", "-o", "jsonpath={.data.m}{.data.j}"],
        "12",
    )
}

fn replace(c: &Ctx) -> Check {
    let live = c.ok(&["get", "cm", "cfg", "-o", "yaml"])?;
    let f = c.manifest("cfg.yaml", &live.replace("  a: \"2\"", "  a: \"3\""));
    c.says(&["replace", "-f", &f], "configmap/cfg replaced")?;
    c.fails_with(&["replace", "-f", &f], "the object has been modified")?;
    let out = c.ok(&["replace", "--force", "-f", &f])?;
    check(
        out.contains(&c.deleted("configmap \"cfg\"", Some("default")))
            && out.contains("configmap/cfg replaced"),
        || out.clone(),
    )?;
    c.says(&["get", "cm", "cfg", "-o", "jsonpath={.data.a}"], "3")
}

fn label_annotate(c: &Ctx) -> Check {
    c.says(&["label", "pod", "p1", "tier=a"], "pod/p1 labeled")?;
    c.fails_with(
        &["label", "pod", "p1", "tier=b"],
        "'tier' already has a value (a), and --overwrite is false",
    )?;
    c.says(
        &["label", "pod", "p1", "tier=b", "--overwrite"],
        "pod/p1 labeled",
    )?;
    c.says(&["label", "pod", "p1", "tier-"], "pod/p1 unlabeled")?;
    // kubectl 1.27 prints "annotate" (its own wording; the server is not involved).
    let annotated = if c.minor == 27 {
        "pod/p1 annotate"
    } else {
        "pod/p1 annotated"
    };
    c.says(&["annotate", "pod", "p1", "note=x"], annotated)?;
    c.says(
        &["annotate", "pod", "p1", "note=y", "--overwrite"],
        annotated,
    )?;
    c.says(&["annotate", "pod", "p1", "note-"], annotated)
}

fn scale(c: &Ctx) -> Check {
    c.says(
        &["scale", "deployment", "web", "--replicas=3"],
        "deployment.apps/web scaled",
    )?;
    c.says(
        &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
        "3",
    )?;
    let rs = c.manifest("rs.yaml", "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs1}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: rs1}}\n  template:\n    metadata: {labels: {app: rs1}}\n    spec: {containers: [{name: c, image: busybox:1.36}]}\n");
    c.ok(&["create", "-f", &rs])?;
    c.says(
        &["scale", "rs", "rs1", "--replicas=2"],
        "replicaset.apps/rs1 scaled",
    )?;
    let rc = c.manifest("rc.yaml", "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc1}\nspec:\n  replicas: 1\n  selector: {app: rc1}\n  template:\n    metadata: {labels: {app: rc1}}\n    spec: {containers: [{name: c, image: busybox:1.36}]}\n");
    c.ok(&["create", "-f", &rc])?;
    c.says(
        &["scale", "rc", "rc1", "--replicas=2"],
        "replicationcontroller/rc1 scaled",
    )?;
    let sts = c.manifest("sts.yaml", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  replicas: 1\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: c, image: busybox:1.36}]}\n");
    c.ok(&["create", "-f", &sts])?;
    c.says(
        &["scale", "sts", "db", "--replicas=2"],
        "statefulset.apps/db scaled",
    )?;
    c.says(
        &[
            "get",
            "rs/rs1",
            "rc/rc1",
            "sts/db",
            "-o",
            "jsonpath={.items[*].spec.replicas}",
        ],
        "2 2 2",
    )
}

fn rollout(c: &Ctx) -> Check {
    c.says(
        &["rollout", "pause", "deployment/web"],
        "deployment.apps/web paused",
    )?;
    c.says(
        &["rollout", "resume", "deployment/web"],
        "deployment.apps/web resumed",
    )?;
    c.says(
        &["rollout", "restart", "deployment/web"],
        "deployment.apps/web restarted",
    )?;
    let ann = c.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.metadata.annotations}",
    ])?;
    check(ann.contains("kubectl.kubernetes.io/restartedAt"), || {
        ann.clone()
    })?;
    c.says(
        &["set", "image", "deployment/web", "app=busybox:1.39"],
        "deployment.apps/web image updated",
    )?;
    c.says(
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
        "busybox:1.39",
    )?;
    // The Deployment controller keeps one ReplicaSet per template: undo goes back one.
    c.says(
        &["rollout", "undo", "deployment/web"],
        "deployment.apps/web rolled back",
    )?;
    let hist = c.k(&["rollout", "history", "deployment/web"]);
    check(
        hist.code == 0 && hist.stdout.contains("deployment.apps/web"),
        || format!("history: {} {}", hist.stdout, hist.stderr),
    )?;
    // Without a node its pods never run, so the rollout never completes: status times
    // out cleanly.
    let st = c.k(&["rollout", "status", "deployment/web", "--timeout=2s"]);
    check(
        st.code != 0
            && (st
                .stdout
                .contains("Waiting for deployment \"web\" rollout to finish")
                || st.stderr.contains("timed out")),
        || format!("status: {} {}", st.stdout, st.stderr),
    )
}

fn nodes(c: &Ctx) -> Check {
    let n = c.manifest("node.yaml", "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {node-role.kubernetes.io/worker: \"\"}}\n");
    c.ok(&["create", "-f", &n])?;
    c.says(&["cordon", "n1"], "node/n1 cordoned")?;
    let out = c.ok(&["get", "node", "n1"])?;
    check(
        out.contains("SchedulingDisabled") && out.contains("worker"),
        || out.clone(),
    )?;
    c.says(&["uncordon", "n1"], "node/n1 uncordoned")?;
    c.says(
        &["taint", "nodes", "n1", "k=v:NoSchedule"],
        "node/n1 tainted",
    )?;
    c.says(
        &["taint", "nodes", "n1", "k=v:NoSchedule-"],
        "node/n1 untainted",
    )?;
    let out = c.ok(&["describe", "node", "n1"])?;
    check(out.contains("Name:") && out.contains("n1"), || out.clone())
}

fn wait(c: &Ctx) -> Check {
    // Conditions are set through the status subresource, as a kubelet would.
    c.ok(&[
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ])?;
    c.says(
        &["wait", "--for=condition=Ready", "pod/p1", "--timeout=20s"],
        "pod/p1 condition met",
    )?;
    c.says(
        &[
            "wait",
            "--for=jsonpath={.data.a}=3",
            "configmap/cfg",
            "--timeout=20s",
        ],
        "configmap/cfg condition met",
    )?;
    let out_file = c.s.dir.path().join(format!("wait-{}.out", c.minor));
    let mut w = c.s.kubectl_background_with(
        c.bin,
        &["wait", "--for=delete", "configmap/cfg", "--timeout=30s"],
        &out_file,
    );
    std::thread::sleep(Duration::from_millis(1000));
    c.ok(&["delete", "configmap", "cfg", "--wait=false"])?;
    let done = eventually(30, || matches!(w.try_wait(), Ok(Some(_))));
    let _ = w.kill();
    let out = std::fs::read_to_string(&out_file).unwrap_or_default();
    check(done && out.contains("configmap/cfg condition met"), || {
        format!("wait --for=delete: {out}")
    })
}

fn delete_wait(c: &Ctx) -> Check {
    c.says(
        &["run", "p2", "--image=busybox:1.36", "--restart=Never"],
        "pod/p2 created",
    )?;
    c.says(
        &["delete", "pod", "p2"],
        &c.deleted("pod \"p2\"", Some("default")),
    )?;
    c.fails_with(&["get", "pod", "p2"], "pods \"p2\" not found")
}

fn watch(c: &Ctx) -> Check {
    c.says(&["create", "configmap", "w1"], "configmap/w1 created")?;
    let one = c.s.dir.path().join(format!("w-one-{}.out", c.minor));
    let list = c.s.dir.path().join(format!("w-list-{}.out", c.minor));
    let mut a =
        c.s.kubectl_background_with(c.bin, &["get", "configmap", "w1", "-w", "-o", "name"], &one);
    let mut b = c.s.kubectl_background_with(
        c.bin,
        &["get", "configmaps", "-w", "--output-watch-events"],
        &list,
    );
    std::thread::sleep(Duration::from_millis(1500));
    c.ok(&["label", "configmap", "w1", "x=1"])?;
    c.ok(&["create", "configmap", "w2"])?;
    let ok = eventually(20, || {
        let l = std::fs::read_to_string(&list).unwrap_or_default();
        let o = std::fs::read_to_string(&one).unwrap_or_default();
        l.lines()
            .any(|x| x.starts_with("ADDED") && x.contains("w2"))
            && l.lines()
                .any(|x| x.starts_with("MODIFIED") && x.contains("w1"))
            && o.lines().filter(|x| x.trim() == "configmap/w1").count() >= 2
    });
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
    check(ok, || {
        format!(
            "get -w:\n{}\n---\n{}",
            std::fs::read_to_string(&one).unwrap_or_default(),
            std::fs::read_to_string(&list).unwrap_or_default()
        )
    })
}

fn auth(c: &Ctx) -> Check {
    c.says(&["auth", "can-i", "list", "pods"], "yes")?;
    c.says(
        &["auth", "can-i", "create", "deployments", "-n", "demo"],
        "yes",
    )?;
    let out = c.ok(&["auth", "whoami"])?;
    check(
        out.contains("system:admin") && out.contains("system:masters"),
        || out.clone(),
    )
}

/// The metrics API is served, but a server without nodes has no samples yet: kubectl's
/// message for that (the same as with a freshly started metrics-server).
fn top(c: &Ctx) -> Check {
    c.fails_with(&["top", "pods"], "metrics not available yet")?;
    c.fails_with(&["top", "nodes"], "metrics not available yet")
}

fn discovery(c: &Ctx) -> Check {
    let out = c.ok(&["api-resources", "-o", "wide"])?;
    let h = header(&out);
    check(
        h.first().map(String::as_str) == Some("NAME") && h.iter().any(|x| x == "VERBS"),
        || format!("{h:?}"),
    )?;
    let out = c.ok(&["api-versions"])?;
    for gv in ["v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1"] {
        check(out.lines().any(|l| l == gv), || {
            format!("api-versions lacks {gv}:\n{out}")
        })?;
    }
    let out = c.ok(&["cluster-info"])?;
    check(
        out.contains("Kubernetes control plane")
            && out.contains(&format!("https://127.0.0.1:{}", c.s.port)),
        || out.clone(),
    )?;
    let out = c.ok(&["config", "view", "--minify"])?;
    check(
        out.contains(&format!("server: https://127.0.0.1:{}", c.s.port)),
        || out.clone(),
    )?;
    let out = c.ok(&["version"])?;
    // 1.27 prints the long form by default (GitVersion:"v1.35.0+k3rs1").
    check(
        out.contains("Server Version: v1.35.0+k3rs1")
            || out.contains("GitVersion:\"v1.35.0+k3rs1\""),
        || out.clone(),
    )
}

fn explain(c: &Ctx) -> Check {
    let out = c.ok(&["explain", "pods.spec.containers.livenessProbe"])?;
    check(out.contains("Periodic probe of container liveness"), || {
        out.clone()
    })?;
    let out = c.ok(&["explain", "deployment.spec.replicas"])?;
    check(
        out.to_lowercase().contains("number of desired pods"),
        || out.clone(),
    )
}

fn validation(c: &Ctx) -> Check {
    let bad = c.manifest(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo}\ndatta: {k: v}\n",
    );
    c.fails_with(&["create", "-f", &bad], "unknown field \"datta\"")?;
    let out = c.k(&["create", "-f", &bad, "--validate=warn"]);
    check(
        out.code == 0 && out.stderr.contains("unknown field \"datta\""),
        || format!("warn: {} {}", out.stdout, out.stderr),
    )?;
    c.says(
        &["delete", "cm", "typo"],
        &c.deleted("configmap \"typo\"", Some("default")),
    )
}

type Step = (&'static str, fn(&Ctx) -> Check);

const STEPS: &[Step] = &[
    ("create generators, run, expose", generators),
    ("get tables", get_tables),
    ("apply (client-side), dir, prune", apply),
    ("apply --server-side", apply_server_side),
    ("describe", describe),
    ("edit", edit),
    ("patch strategic/merge/json", patch),
    ("replace, replace --force", replace),
    ("label, annotate", label_annotate),
    ("scale deploy/rs/rc/sts", scale),
    ("rollout, set image", rollout),
    ("cordon, uncordon, taint", nodes),
    ("wait condition/jsonpath/delete", wait),
    ("delete --wait", delete_wait),
    ("get -w object and list", watch),
    ("auth can-i, whoami", auth),
    ("top before the first samples", top),
    (
        "api-resources, api-versions, cluster-info, config",
        discovery,
    ),
    ("explain", explain),
    ("field validation", validation),
];

fn run_version(bin: &str) -> (u32, Vec<Result<(), String>>) {
    let minor = kubectl_minor(bin);
    let s = Server::start();
    let c = Ctx { s: &s, bin, minor };
    let results = STEPS.iter().map(|(_, f)| f(&c)).collect();
    (minor, results)
}

#[test]
fn kubectl_matrix() {
    let bins = kubectls();
    let mut results: BTreeMap<String, (u32, Vec<Result<(), String>>)> = BTreeMap::new();
    // A few versions at a time: each has its own server.
    for chunk in bins.chunks(3) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|b| {
                let b = b.clone();
                std::thread::spawn(move || (b.clone(), run_version(&b)))
            })
            .collect();
        for h in handles {
            let (bin, r) = h.join().expect("matrix thread");
            results.insert(bin, r);
        }
    }
    let mut cols: Vec<(&String, &(u32, Vec<Result<(), String>>))> = results.iter().collect();
    cols.sort_by_key(|(_, (m, _))| *m);
    let mut table = format!("{:<50}", "command \\ kubectl");
    for (_, (m, _)) in &cols {
        table.push_str(&format!(" 1.{m:<4}"));
    }
    table.push('\n');
    let mut failures = Vec::new();
    for (i, (name, _)) in STEPS.iter().enumerate() {
        table.push_str(&format!("{name:<50}"));
        for (bin, (m, r)) in &cols {
            match &r[i] {
                Ok(()) => table.push_str(" pass  "),
                Err(e) => {
                    table.push_str(" FAIL  ");
                    failures.push(format!("[1.{m} {bin}] {name}: {e}"));
                }
            }
        }
        table.push('\n');
    }
    println!("\nkubectl fidelity matrix\n{table}");
    // scripts/test.sh prints this file after the run, so CI logs show the matrix.
    let _ = std::fs::write(
        std::env::temp_dir().join("k3rs-kubectl-matrix.txt"),
        format!("kubectl fidelity matrix\n{table}"),
    );
    eprintln!("\nkubectl fidelity matrix\n{table}");
    assert!(
        failures.is_empty(),
        "{} failing cells:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
