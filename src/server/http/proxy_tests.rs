//! Unit tests of the proxy's decisions: container defaulting and validation, the kubelet
//! address of a node, and the query passed to the kubelet.

use super::conn::kubelet_error;
use super::*;
use http::{HeaderValue, StatusCode};

fn pod(init: &[&str], containers: &[&str], ephemeral: &[&str]) -> Value {
    let list = |names: &[&str]| -> Value { names.iter().map(|n| json!({"name": n})).collect() };
    json!({
        "metadata": {"name": "web", "namespace": "default",
                     "annotations": {"kubectl.kubernetes.io/default-container": "b"}},
        "spec": {"initContainers": list(init), "containers": list(containers),
                 "ephemeralContainers": list(ephemeral)},
    })
}

fn msg(r: Result<String, ApiError>) -> String {
    let e = r.unwrap_err();
    assert_eq!((e.code, e.reason), (400, "BadRequest"), "{e}");
    e.message
}

#[test]
fn one_container_is_the_default() {
    assert_eq!(
        pick_container(&pod(&["init"], &["app"], &[]), "").unwrap(),
        "app"
    );
}

#[test]
fn several_containers_need_a_name_and_the_message_lists_all_of_them() {
    // The annotation is kubectl's business: the server still asks for a name.
    let p = pod(&["init"], &["a", "b"], &["debugger"]);
    assert_eq!(
        msg(pick_container(&p, "")),
        "a container name must be specified for pod web, choose one of: [init a b debugger]"
    );
    assert_eq!(
        msg(pick_container(&pod(&[], &[], &[]), "")),
        "a container name must be specified for pod web"
    );
}

#[test]
fn named_container_must_exist_and_may_be_init_or_ephemeral() {
    let p = pod(&["init"], &["a", "b"], &["debugger"]);
    for name in ["init", "b", "debugger"] {
        assert_eq!(pick_container(&p, name).unwrap(), name);
    }
    assert_eq!(
        msg(pick_container(&p, "x")),
        "container x is not valid for pod web"
    );
}

fn node(addresses: Value, port: Value) -> Value {
    json!({"metadata": {"name": "n1"}, "status": {"addresses": addresses,
           "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
}

#[test]
fn kubelet_address_prefers_internal_then_external_then_hostname() {
    let all = json!([
        {"type": "Hostname", "address": "n1"},
        {"type": "ExternalIP", "address": "203.0.113.5"},
        {"type": "InternalIP", "address": "10.0.0.5"},
    ]);
    let t = kubelet_target(&node(all, json!(10251))).unwrap();
    assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 10251));

    let ext = json!([{"type": "Hostname", "address": "n1"}, {"type": "ExternalIP", "address": "203.0.113.5"}]);
    let t = kubelet_target(&node(ext, json!(null))).unwrap();
    assert_eq!(
        (t.host.as_str(), t.port),
        ("203.0.113.5", DEFAULT_KUBELET_PORT)
    );

    let host = json!([{"type": "Hostname", "address": "n1"}]);
    let t = kubelet_target(&node(host, json!(0))).unwrap();
    assert_eq!((t.host.as_str(), t.port), ("n1", 10250));

    let v6 = json!([{"type": "InternalIP", "address": "fd00::5"}]);
    let t = kubelet_target(&node(v6, json!(10250))).unwrap();
    assert_eq!(t.authority(), "[fd00::5]:10250");
}

#[test]
fn node_without_usable_address_is_an_error_listing_what_it_has() {
    let dns = json!([{"type": "InternalDNS", "address": "n1.local"}]);
    let e = kubelet_target(&node(dns, json!(10250))).unwrap_err();
    assert_eq!(e.code, 500);
    assert!(
        e.message
            .ends_with("no preferred addresses found; known addresses: [{InternalDNS n1.local}]"),
        "{}",
        e.message
    );
    assert!(kubelet_target(&json!({"metadata": {"name": "n1"}})).is_err());
}

fn q(s: &str) -> Query {
    Query::parse(Some(s))
}

#[test]
fn log_options_become_the_kubelet_query_in_upstream_order() {
    let o = LogOptions::parse(
        "web",
        &q("container=a&timestamps=true&tailLines=10&follow=true&sinceTime=2024-05-01T10:00:00.5Z&limitBytes=100&previous=1"),
    )
    .unwrap();
    assert_eq!(
        encode_query(&o.params),
        "follow=true&limitBytes=100&previous=true&sinceTime=2024-05-01T10%3A00%3A00Z&tailLines=10&timestamps=true"
    );
    assert!(o.follow && !o.insecure);
    assert!(LogOptions::parse("web", &q("")).unwrap().params.is_empty());
}

#[test]
fn bad_log_options_are_rejected_like_upstream() {
    let e = LogOptions::parse("web", &q("tailLines=-1")).unwrap_err();
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
    );
    let e =
        LogOptions::parse("web", &q("sinceSeconds=5&sinceTime=2024-05-01T10:00:00Z")).unwrap_err();
    assert!(
        e.message
            .contains("at most one of `sinceTime` or `sinceSeconds` may be specified"),
        "{}",
        e.message
    );
    assert_eq!(
        LogOptions::parse("web", &q("limitBytes=0"))
            .unwrap_err()
            .code,
        422
    );
    assert_eq!(
        LogOptions::parse("web", &q("tailLines=x"))
            .unwrap_err()
            .code,
        400
    );
}

#[test]
fn stream_query_uses_the_kubelets_spelling() {
    assert_eq!(
        stream_params("exec", &q("command=sh&command=-c&command=echo+hi%26&container=a&stdout=true&stderr=true&tty=false&stdin=1")).unwrap(),
        "command=sh&command=-c&command=echo%20hi%26&stderr=1&stdin=1&stdout=1"
    );
    assert_eq!(
        stream_params("attach", &q("stdout=true&container=a")).unwrap(),
        "stdout=1"
    );
    let e = stream_params("exec", &q("stdout=true")).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            400,
            "you must specify at least one command for the container"
        )
    );
    assert_eq!(
        stream_params("portforward", &q("ports=80&ports=443")).unwrap(),
        "port=80%2C443"
    );
    assert_eq!(stream_params("portforward", &q("")).unwrap(), "");
    assert_eq!(
        stream_params("portforward", &q("ports=http"))
            .unwrap_err()
            .code,
        400
    );
}

#[test]
fn upgrade_detection_reads_connection_tokens() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, Upgrade"),
    );
    assert!(!is_upgrade(&h));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    assert!(is_upgrade(&h));
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    assert!(!is_upgrade(&h));
}

#[test]
fn kubelet_errors_keep_upstream_wording() {
    let e = kubelet_error(
        StatusCode::BAD_REQUEST,
        "container \"a\" in pod \"web\" is waiting to start: ContainerCreating",
        "web",
    );
    assert_eq!((e.code, e.reason), (400, "BadRequest"));
    assert_eq!(
        e.message,
        "container \"a\" in pod \"web\" is waiting to start: ContainerCreating"
    );
    let e = kubelet_error(StatusCode::INTERNAL_SERVER_ERROR, "boom", "web");
    assert_eq!(e.message, "Internal error occurred: boom");
    let e = kubelet_error(StatusCode::NOT_FOUND, "nope", "web");
    assert_eq!((e.code, e.reason), (404, "NotFound"));
    assert_eq!(
        e.message,
        "the server could not find the requested resource ( pods/log web)"
    );
}

#[test]
fn only_pod_streaming_subresources_are_proxied() {
    let info = |res: &str, sub: &str| RequestInfo {
        resource: res.into(),
        name: "web".into(),
        namespace: "default".into(),
        subresource: sub.into(),
        ..Default::default()
    };
    for sub in ["log", "exec", "attach", "portforward"] {
        assert!(is_proxied(&info("pods", sub)), "{sub}");
    }
    assert!(!is_proxied(&info("pods", "status")));
    assert!(!is_proxied(&info("nodes", "log")));
}
