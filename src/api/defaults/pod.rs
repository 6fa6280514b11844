//! Pod spec defaults (SetDefaults_PodSpec, _Container, _Probe, _Volume and the volume
//! source defaults), shared by Pods and every pod template, and the Pod-only ones
//! (SetDefaults_Pod).

use serde_json::{Map, Value};

use super::{child, each, present, set_int, set_ptr, set_str, unset};

/// The tag upstream's `parsers.ParseImageName` finds: `latest` when neither tag nor digest
/// is given, empty when only a digest is.
fn image_tag(image: &str) -> &str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => tag,
        None if digest => "",
        None => "latest",
    }
}

fn http_get(h: &mut Map<String, Value>) {
    if let Some(g) = present(h, "httpGet") {
        set_str(g, "path", "/");
        set_str(g, "scheme", "HTTP");
    }
}

fn probe(c: &mut Map<String, Value>, key: &str) {
    let Some(p) = present(c, key) else { return };
    set_int(p, "timeoutSeconds", 1);
    set_int(p, "periodSeconds", 10);
    set_int(p, "successThreshold", 1);
    set_int(p, "failureThreshold", 3);
    http_get(p);
    if let Some(g) = present(p, "grpc") {
        set_ptr(g, "service", Value::from(""));
    }
}

fn field_ref(holder: &mut Map<String, Value>) {
    if let Some(f) = present(holder, "fieldRef") {
        set_str(f, "apiVersion", "v1");
    }
}

fn container(c: &mut Map<String, Value>) {
    if c.get("imagePullPolicy")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        let policy = if image_tag(image) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.insert("imagePullPolicy".into(), Value::from(policy));
    }
    set_str(c, "terminationMessagePath", "/dev/termination-log");
    set_str(c, "terminationMessagePolicy", "File");
    // A plain struct upstream, so it is always serialised.
    set_ptr(c, "resources", Value::Object(Map::new()));
    for p in each(c, "ports") {
        set_str(p, "protocol", "TCP");
    }
    for e in each(c, "env") {
        if let Some(from) = present(e, "valueFrom") {
            field_ref(from);
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        probe(c, key);
    }
    if let Some(l) = present(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = present(l, hook) {
                http_get(h);
            }
        }
    }
}

const VOLUME_SOURCES: [&str; 30] = [
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// 0644, upstream's default file mode for projected files.
const DEFAULT_MODE: i64 = 0o644;

fn volume(v: &mut Map<String, Value>) {
    if VOLUME_SOURCES.iter().all(|s| unset(v, s)) {
        v.insert("emptyDir".into(), Value::Object(Map::new()));
    }
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = present(v, src) {
            set_ptr(s, "defaultMode", Value::from(DEFAULT_MODE));
        }
    }
    if let Some(d) = present(v, "downwardAPI") {
        for item in each(d, "items") {
            field_ref(item);
        }
    }
    if let Some(p) = present(v, "projected") {
        for s in each(p, "sources") {
            if let Some(t) = present(s, "serviceAccountToken") {
                set_ptr(t, "expirationSeconds", Value::from(3600));
            }
            if let Some(d) = present(s, "downwardAPI") {
                for item in each(d, "items") {
                    field_ref(item);
                }
            }
        }
    }
    if let Some(h) = present(v, "hostPath") {
        set_ptr(h, "type", Value::from(""));
    }
    if let Some(i) = present(v, "iscsi") {
        set_str(i, "iscsiInterface", "default");
    }
    if let Some(e) = present(v, "ephemeral") {
        if let Some(t) = present(e, "volumeClaimTemplate") {
            if let Some(s) = child(t, "spec") {
                set_ptr(s, "volumeMode", Value::from("Filesystem"));
            }
        }
    }
}

/// SetDefaults_PodSpec and the defaults of everything inside a pod spec. Used for Pods and
/// for every workload's pod template.
pub fn pod_spec(spec: &mut Map<String, Value>) {
    set_str(spec, "dnsPolicy", "ClusterFirst");
    set_str(spec, "restartPolicy", "Always");
    set_ptr(spec, "securityContext", Value::Object(Map::new()));
    set_ptr(spec, "terminationGracePeriodSeconds", Value::from(30));
    set_str(spec, "schedulerName", "default-scheduler");
    for v in each(spec, "volumes") {
        volume(v);
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in each(spec, list) {
            container(c);
        }
    }
}

/// Defaults a pod template (`spec.template` of a workload): its spec always exists
/// upstream, so it is created when missing.
pub fn pod_template(template: &mut Map<String, Value>) {
    if let Some(spec) = child(template, "spec") {
        pod_spec(spec);
    }
}

/// Requests default to limits, on real pods only.
fn requests_from_limits(c: &mut Map<String, Value>) {
    let Some(res) = present(c, "resources") else {
        return;
    };
    let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let Some(requests) = child(res, "requests") else {
        return;
    };
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

/// Defaults a Pod: the pod spec defaults plus SetDefaults_Pod (requests from limits,
/// `enableServiceLinks`, host ports under host networking).
pub fn pod(obj: &mut Value) {
    let Some(spec) = super::spec(obj) else { return };
    pod_spec(spec);
    for list in ["containers", "initContainers"] {
        for c in each(spec, list) {
            requests_from_limits(c);
        }
    }
    set_ptr(spec, "enableServiceLinks", Value::Bool(true));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for list in ["containers", "initContainers"] {
            for c in each(spec, list) {
                for p in each(c, "ports") {
                    if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                        if let Some(cp) = p.get("containerPort").cloned() {
                            p.insert("hostPort".into(), cp);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::image_tag;

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx"), "latest");
        assert_eq!(image_tag("nginx:1.27"), "1.27");
        assert_eq!(image_tag("registry:5000/app"), "latest");
        assert_eq!(image_tag("registry:5000/app:v2"), "v2");
        assert_eq!(image_tag("app@sha256:abc"), "");
        assert_eq!(image_tag("app:latest@sha256:abc"), "latest");
    }
}
