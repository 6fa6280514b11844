//! API discovery: `/api`, `/apis`, `/apis/<group>` and the per-version resource lists, in
//! the aggregated v2 format (`apidiscovery.k8s.io/v2`) when the client asks for it and in
//! the legacy formats otherwise. Documents are built once from the resource table.

use crate::api::resources::{self, Resource};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// Content type of aggregated discovery responses.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the Accept header asks for aggregated v2 discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|m| {
        let params: Vec<&str> = m.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

fn scope(r: &Resource) -> &'static str {
    if r.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

fn aggregated_resource(r: &Resource) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": "", "version": "", "kind": r.kind},
        "scope": scope(r),
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        let subs: Vec<Value> = r
            .subresources
            .iter()
            .map(|s| {
                let same = s.group == r.group && s.version == r.version;
                let (g, ver) = if same { ("", "") } else { (s.group, s.version) };
                json!({"subresource": s.name, "responseKind": {"group": g, "version": ver, "kind": s.kind}, "verbs": s.verbs})
            })
            .collect();
        v["subresources"] = Value::Array(subs);
    }
    v
}

fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|ver| {
                    let res: Vec<Value> = resources::RESOURCES
                        .iter()
                        .filter(|r| r.group == g && r.version == *ver)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": ver, "resources": res, "freshness": "Current"})
                })
                .collect();
            let meta = if g.is_empty() {
                json!({})
            } else {
                json!({"name": g})
            };
            json!({"metadata": meta, "versions": versions})
        })
        .chain((!core).then(crate::server::metrics::api::aggregated_entry))
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn group_doc(g: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|ver| json!({"groupVersion": format!("{g}/{ver}"), "version": ver}))
        .collect();
    let preferred = gvs.first().cloned().unwrap_or(Value::Null);
    json!({"name": g, "versions": gvs, "preferredVersion": preferred})
}

fn resource_list(g: &str, ver: &str) -> Value {
    let mut list = Vec::new();
    for r in resources::RESOURCES
        .iter()
        .filter(|r| r.group == g && r.version == ver)
    {
        let mut v = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        list.push(v);
        for s in r.subresources {
            let mut sv = json!({"name": format!("{}/{}", r.plural, s.name), "singularName": "", "namespaced": r.namespaced, "kind": s.kind, "verbs": s.verbs});
            if s.group != r.group || s.version != r.version {
                sv["group"] = json!(s.group);
                sv["version"] = json!(s.version);
            }
            list.push(sv);
        }
    }
    let gv = if g.is_empty() {
        ver.to_string()
    } else {
        format!("{g}/{ver}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

struct Docs {
    aggregated_core: Vec<u8>,
    aggregated_groups: Vec<u8>,
    group_list: Vec<u8>,
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let groups: Vec<Value> = resources::group_versions()
            .into_iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, v)| group_doc(g, &v))
            .chain([crate::server::metrics::api::group_list_entry()])
            .collect();
        Docs {
            aggregated_core: serde_json::to_vec(&aggregated(true)).unwrap_or_default(),
            aggregated_groups: serde_json::to_vec(&aggregated(false)).unwrap_or_default(),
            group_list: serde_json::to_vec(
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
            .unwrap_or_default(),
        }
    })
}

/// `/api` (aggregated or `APIVersions`).
pub fn api_root(aggregated: bool, server_address: &str) -> (Vec<u8>, bool) {
    if aggregated {
        return (docs().aggregated_core.clone(), true);
    }
    let v = json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]});
    (serde_json::to_vec(&v).unwrap_or_default(), false)
}

/// `/apis` (aggregated or `APIGroupList`).
pub fn apis_root(aggregated: bool) -> (Vec<u8>, bool) {
    if aggregated {
        (docs().aggregated_groups.clone(), true)
    } else {
        (docs().group_list.clone(), false)
    }
}

/// `/apis/<group>`, if served.
pub fn group(g: &str) -> Option<Value> {
    if g == crate::server::metrics::api::GROUP {
        return Some(crate::server::metrics::api::group_doc());
    }
    resources::group_versions()
        .into_iter()
        .find(|(name, _)| *name == g && !g.is_empty())
        .map(|(g, v)| {
            let mut d = group_doc(g, &v);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        })
}

/// `/api/v1` or `/apis/<g>/<v>`, if served.
pub fn version(g: &str, ver: &str) -> Option<Value> {
    if g == crate::server::metrics::api::GROUP && ver == crate::server::metrics::api::VERSION {
        return Some(crate::server::metrics::api::resource_list());
    }
    if !resources::groups()
        .iter()
        .any(|(name, v)| *name == g && *v == ver)
    {
        return None;
    }
    Some(resource_list(g, ver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_resources_have_response_kinds() {
        let v = aggregated(false);
        for item in v["items"].as_array().unwrap() {
            for r in item["versions"][0]["resources"].as_array().unwrap() {
                assert!(!r["responseKind"]["kind"].as_str().unwrap().is_empty());
                for s in r["subresources"].as_array().into_iter().flatten() {
                    assert!(!s["responseKind"]["kind"].as_str().unwrap().is_empty());
                }
            }
        }
        let core = aggregated(true);
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        let ev = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "eviction")
            .unwrap();
        assert_eq!(
            ev["responseKind"],
            json!({"group": "policy", "version": "v1", "kind": "Eviction"})
        );
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
    }
}
