//! The HorizontalPodAutoscaler end to end on a single node (server + embedded agent, real
//! containerd): a Deployment whose pods burn CPU while a configMap-mounted file says
//! "burn" scales from 1 to at least 2 under an HPA targeting 50% of the CPU request,
//! and back to 1 once the file says "idle". `kubectl get hpa` shows the targets as
//! upstream (`cpu: 12%/50%`) and `kubectl describe hpa` the SuccessfulRescale events.
//! `kubectl autoscale` works with every kubectl under test (up to 1.32 it creates the
//! HPA through autoscaling/v1, served by conversion; from 1.33 through autoscaling/v2),
//! and the v1 view of an HPA carries its CPU target. Needs root and containerd.

mod common;
#[path = "common/images.rs"]
mod images;

use common::{eventually, kubectls, Server};
use std::time::Duration;

const IMAGE: &str = "k3rs.test/busybox:1";

/// Pods that spin while /load/mode says "burn" and sleep otherwise (`read` is a shell
/// builtin, so the idle loop forks nothing but `sleep`).
fn deployment(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-load
data:
  mode: burn
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        command: ["sh", "-c", "while :; do read m < /load/mode; if [ \"$m\" = burn ]; then i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; else sleep 1; fi; done"]
        resources:
          requests: {{cpu: 100m}}
        volumeMounts:
        - {{name: load, mountPath: /load}}
      volumes:
      - name: load
        configMap: {{name: {name}-load}}
"#
    )
}

/// An autoscaling/v2 HPA like `kubectl autoscale --cpu-percent=50 --min=1 --max=3`,
/// with no downscale stabilization so the test does not wait five minutes.
fn hpa(name: &str) -> String {
    format!(
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {name}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource:
      name: cpu
      target: {{type: Utilization, averageUtilization: 50}}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 0
"#
    )
}

fn replicas(s: &Server, name: &str) -> i64 {
    s.kubectl(&["get", "deployment", name, "-o", "jsonpath={.spec.replicas}"])
        .stdout
        .trim()
        .parse()
        .unwrap_or(-1)
}

/// Waits (polling every 2 s) until `f` holds.
fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    eventually(secs, || {
        f() || {
            std::thread::sleep(Duration::from_secs(2));
            false
        }
    })
}

#[test]
fn hpa_scales_a_cpu_bound_deployment_up_and_back_down() {
    images::require_agent_environment("hpa");
    let s = Server::start_with_agent(&[], |data| {
        images::write_oci_archive(&data.join("agent/images/a.tar"), IMAGE, false);
    });
    s.kubectl_stdin(&["apply", "-f", "-"], &deployment("burner"))
        .ok();
    s.kubectl_stdin(&["apply", "-f", "-"], &hpa("burner")).ok();

    // Before any sample the HPA says it cannot read metrics, as upstream does.
    let listed = s.kubectl(&["get", "hpa", "burner"]);
    let header = listed.ok().lines().next().unwrap_or("").to_string();
    for col in [
        "NAME",
        "REFERENCE",
        "TARGETS",
        "MINPODS",
        "MAXPODS",
        "REPLICAS",
        "AGE",
    ] {
        assert!(header.contains(col), "kubectl get hpa header: {header}");
    }

    let up = wait_for(240, || replicas(&s, "burner") >= 2);
    assert!(
        up,
        "the HPA did not scale the burning deployment up; hpa:\n{}\npods:\n{}\nlog:\n{}",
        s.kubectl(&["get", "hpa", "burner", "-o", "yaml"]).stdout,
        s.kubectl(&["get", "pods", "-o", "wide"]).stdout,
        s.log()
    );
    let status = s
        .kubectl(&["get", "hpa", "burner", "-o", "json"])
        .ok()
        .to_string();
    let status: serde_json::Value = serde_json::from_str(&status).expect("hpa json");
    let st = &status["status"];
    assert!(st["desiredReplicas"].as_i64().unwrap_or(0) >= 2, "{st:#}");
    assert!(st["lastScaleTime"].is_string(), "{st:#}");
    let cond = |t: &str| {
        st["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(cond("AbleToScale")["status"], "True", "{st:#}");
    assert_eq!(cond("ScalingActive")["status"], "True", "{st:#}");
    assert_eq!(
        cond("ScalingActive")["reason"],
        "ValidMetricFound",
        "{st:#}"
    );
    assert!(cond("ScalingLimited")["reason"].is_string(), "{st:#}");
    let util = st["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        util > 50,
        "a burning pod uses far more than 50% of 100m: {st:#}"
    );
    assert_eq!(st["currentMetrics"][0]["resource"]["name"], "cpu", "{st:#}");

    // TARGETS as upstream prints it, e.g. `cpu: 734%/50%`.
    let row = s.kubectl(&["get", "hpa", "burner", "--no-headers"]);
    let targets = row.ok().to_string();
    assert!(
        targets.contains("Deployment/burner")
            && targets.contains("cpu: ")
            && targets.contains("%/50%"),
        "kubectl get hpa: {targets}"
    );

    let described = s.kubectl(&["describe", "hpa", "burner"]).ok().to_string();
    assert!(
        described.contains("SuccessfulRescale")
            && described
                .contains("reason: cpu resource utilization (percentage of request) above target"),
        "kubectl describe hpa lacks the scale-up event:\n{described}"
    );

    // Load drops: the pods read "idle" once the configMap volume is refreshed.
    s.kubectl(&[
        "patch",
        "configmap",
        "burner-load",
        "-p",
        r#"{"data":{"mode":"idle"}}"#,
    ])
    .ok();
    let down = wait_for(240, || replicas(&s, "burner") == 1);
    assert!(
        down,
        "the HPA did not scale back to 1 after the load stopped; hpa:\n{}\nlog:\n{}",
        s.kubectl(&["get", "hpa", "burner", "-o", "yaml"]).stdout,
        s.log()
    );
    let described = s.kubectl(&["describe", "hpa", "burner"]).ok().to_string();
    assert!(
        described.contains("New size: 1; reason: All metrics below target"),
        "kubectl describe hpa lacks the scale-down event:\n{described}"
    );

    // `kubectl autoscale` with every kubectl under test; the row shows the target.
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &deployment("other").replace("mode: burn", "mode: idle"),
    )
    .ok();
    for (i, bin) in kubectls().iter().enumerate() {
        let name = format!("other-{i}");
        let r = s.kubectl_with(
            bin,
            &[
                "autoscale",
                "deployment",
                "other",
                "--name",
                &name,
                "--cpu-percent=50",
                "--min=1",
                "--max=3",
            ],
            None,
        );
        assert!(
            r.code == 0
                && r.stdout.contains(&format!(
                    "horizontalpodautoscaler.autoscaling/{name} autoscaled"
                )),
            "{bin} autoscale: {}{}",
            r.stdout,
            r.stderr
        );
        // Both versions show the same object.
        let v1 = s.kubectl_with(
            bin,
            &[
                "get",
                &format!("horizontalpodautoscalers.v1.autoscaling/{name}"),
                "-o",
                "jsonpath={.apiVersion} {.spec.targetCPUUtilizationPercentage} {.spec.maxReplicas}",
            ],
            None,
        );
        assert_eq!(v1.stdout, "autoscaling/v1 50 3", "{bin}: {}", v1.stderr);
        let v2 = s.kubectl_with(
            bin,
            &[
                "get",
                &format!("horizontalpodautoscalers.v2.autoscaling/{name}"),
                "-o",
                "jsonpath={.spec.metrics[0].resource.target.averageUtilization}",
            ],
            None,
        );
        assert_eq!(v2.stdout, "50", "{bin}: {}", v2.stderr);
        let row = s.kubectl_with(bin, &["get", "hpa", &name, "--no-headers"], None);
        assert!(
            row.code == 0 && row.stdout.contains("Deployment/other") && row.stdout.contains("/50%"),
            "{bin} get hpa: {}{}",
            row.stdout,
            row.stderr
        );
    }
    // A merge patch through v1 changes the stored v2 object; v2-only fields survive.
    s.kubectl(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling/other-0",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":70}}"#,
    ])
    .ok();
    let v2 = s.kubectl(&[
        "get",
        "horizontalpodautoscalers.v2.autoscaling/other-0",
        "-o",
        "jsonpath={.spec.metrics[0].resource.target.averageUtilization}",
    ]);
    assert_eq!(v2.stdout, "70", "{}", v2.stderr);
}
