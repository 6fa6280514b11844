//! Parsing a request into what it asks for: the API path (group, version, namespace,
//! resource, name, subresource), the verb, and the query parameters.

use http::Method;

/// What a resource request addresses, from its path and method.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// API group (`""` for the core `/api` group).
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace from the path (`""` when none).
    pub namespace: String,
    /// Resource plural.
    pub resource: String,
    /// Object name (`""` for collections).
    pub name: String,
    /// Subresource (`""` when none).
    pub subresource: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'static str,
}

/// Where a path leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/api` or `/apis`: group discovery.
    RootDiscovery { legacy_core: bool },
    /// `/apis/<group>`.
    GroupDiscovery { group: String },
    /// `/api/v1` or `/apis/<g>/<v>`: resource discovery.
    VersionDiscovery { group: String, version: String },
    /// A resource request.
    Resource(RequestInfo),
    /// Anything else (health, version, openapi, ...): the raw path.
    Other,
}

/// Subresources of a namespace object (`/api/v1/namespaces/x/status`), not resources in it.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Classifies a path and method.
pub fn route(method: &Method, path: &str, query: &Query) -> Route {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Route::RootDiscovery { legacy_core: true },
        ["apis"] => return Route::RootDiscovery { legacy_core: false },
        ["api", v] => {
            return Route::VersionDiscovery {
                group: String::new(),
                version: v.to_string(),
            }
        }
        ["apis", g] => {
            return Route::GroupDiscovery {
                group: g.to_string(),
            }
        }
        ["apis", g, v] => {
            return Route::VersionDiscovery {
                group: g.to_string(),
                version: v.to_string(),
            }
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Other,
    };
    let mut info = RequestInfo {
        group: group.to_string(),
        version: version.to_string(),
        ..Default::default()
    };
    let mut rest: &[&str] = rest;
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        info.namespace = rest[1].to_string();
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        } else {
            // The namespace object itself: /namespaces/<name>[/status|/finalize].
            info.namespace.clear();
            info.resource = "namespaces".into();
            info.name = rest[1].to_string();
            info.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
            if rest.len() > 3 {
                return Route::Other;
            }
            info.verb = verb(method, true, query);
            return Route::Resource(info);
        }
    }
    match rest {
        [res] => info.resource = res.to_string(),
        [res, name] => {
            info.resource = res.to_string();
            info.name = name.to_string();
        }
        [res, name, sub] => {
            info.resource = res.to_string();
            info.name = name.to_string();
            info.subresource = sub.to_string();
        }
        _ => return Route::Other,
    }
    info.verb = verb(method, !info.name.is_empty(), query);
    Route::Resource(info)
}

fn verb(method: &Method, named: bool, query: &Query) -> &'static str {
    match *method {
        Method::GET | Method::HEAD if query.flag("watch") => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    }
}

/// Decoded query parameters (in order; repeated keys kept).
#[derive(Clone, Debug, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// Parses `a=b&c=d` with percent and `+` decoding.
    pub fn parse(q: Option<&str>) -> Query {
        let mut out = Vec::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((percent_decode(k), percent_decode(v)));
        }
        Query(out)
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A boolean flag: `1`, `true` (any case) or present without a value.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.is_empty() || v == "1" || v.eq_ignore_ascii_case("true"))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: Method, p: &str, q: &str) -> Route {
        route(&m, p, &Query::parse(Some(q)))
    }

    #[test]
    fn namespaced_and_cluster_paths() {
        let Route::Resource(i) = r(Method::GET, "/api/v1/namespaces/default/pods/web", "") else {
            panic!()
        };
        assert_eq!(
            (
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.verb
            ),
            ("default", "pods", "web", "get")
        );
        let Route::Resource(i) = r(Method::GET, "/apis/apps/v1/deployments", "watch=1") else {
            panic!()
        };
        assert_eq!(
            (i.group.as_str(), i.resource.as_str(), i.verb),
            ("apps", "deployments", "watch")
        );
        let Route::Resource(i) = r(Method::PUT, "/api/v1/namespaces/kube-system/status", "") else {
            panic!()
        };
        assert_eq!(
            (
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str(),
                i.namespace.as_str()
            ),
            ("namespaces", "kube-system", "status", "")
        );
        let Route::Resource(i) = r(Method::DELETE, "/api/v1/namespaces/default/pods", "") else {
            panic!()
        };
        assert_eq!(i.verb, "deletecollection");
        let Route::Resource(i) = r(Method::GET, "/api/v1/namespaces", "") else {
            panic!()
        };
        assert_eq!((i.resource.as_str(), i.verb), ("namespaces", "list"));
        assert_eq!(
            r(Method::GET, "/apis", ""),
            Route::RootDiscovery { legacy_core: false }
        );
        assert_eq!(r(Method::GET, "/healthz", ""), Route::Other);
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch&limit=5"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("limit"), Some("5"));
        assert_eq!(percent_decode("100%"), "100%");
    }
}
