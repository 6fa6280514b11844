//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the `Impersonate-User`,
//! `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-<key>` headers replace
//! the requester's identity once the requester is allowed the `impersonate` verb on
//! each part: `users` (or `serviceaccounts` for `system:serviceaccount:<ns>:<name>`) and
//! `groups` in the core group, `uids` and `userextras/<key>` in
//! `authentication.k8s.io`, with the value as the object name, like upstream.

use super::{forbidden, Attributes, Authorizer, Decision};
use crate::api::status::ApiError;
use crate::server::http::auth::{Identity, ANONYMOUS, AUTHENTICATED, UNAUTHENTICATED};
use http::HeaderMap;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

fn header_values<'h>(headers: &'h HeaderMap, name: &str) -> Result<Vec<&'h str>, ApiError> {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("header {name} is not valid text")))
        })
        .collect()
}

/// Whether the request asks to impersonate anyone.
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"))
}

fn require(authz: &Authorizer, a: Attributes<'_>) -> Result<(), ApiError> {
    match authz.authorize(&a) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(forbidden(&a, &reason)),
    }
}

fn imp<'a>(
    who: &'a Identity,
    group: &'a str,
    resource: &'a str,
    sub: &'a str,
    ns: &'a str,
    name: &'a str,
) -> Attributes<'a> {
    Attributes::resource(who, "impersonate", (group, resource, sub), ns, name)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The identity a request acts as: `who` itself when it impersonates nobody, otherwise
/// the impersonated user after checking each part. 403 when a part is not allowed, 400
/// for groups, uid or extras without a user.
pub fn impersonate(
    authz: &Authorizer,
    who: Identity,
    headers: &HeaderMap,
) -> Result<Identity, ApiError> {
    if !requested(headers) {
        return Ok(who);
    }
    let users = header_values(headers, USER)?;
    let groups = header_values(headers, GROUP)?;
    let uids = header_values(headers, UID)?;
    let mut extra: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix(EXTRA_PREFIX) {
            let v = v
                .to_str()
                .map_err(|_| ApiError::bad_request(format!("header {k} is not valid text")))?;
            extra
                .entry(percent_decode(key))
                .or_default()
                .push(v.to_string());
        }
    }
    let Some(user) = users.first().copied().filter(|u| !u.is_empty()) else {
        let mut asked: Vec<String> = groups.iter().map(|g| format!("{GROUP}={g}")).collect();
        asked.extend(uids.iter().map(|u| format!("{UID}={u}")));
        asked.extend(extra.keys().map(|k| format!("{EXTRA_PREFIX}{k}")));
        return Err(ApiError::bad_request(format!(
            "requested [{}] without impersonating a user",
            asked.join(" ")
        )));
    };
    let mut groups_out: Vec<String> = Vec::new();
    if let Some(sa) = user.strip_prefix("system:serviceaccount:") {
        let (ns, name) = sa.split_once(':').unwrap_or(("", sa));
        require(authz, imp(&who, "", "serviceaccounts", "", ns, name))?;
        groups_out.push("system:serviceaccounts".into());
        groups_out.push(format!("system:serviceaccounts:{ns}"));
    } else {
        require(authz, imp(&who, "", "users", "", "", user))?;
    }
    for g in &groups {
        require(authz, imp(&who, "", "groups", "", "", g))?;
        if !groups_out.iter().any(|x| x == g) {
            groups_out.push(g.to_string());
        }
    }
    let uid = uids.first().copied().unwrap_or("");
    if !uid.is_empty() {
        require(
            authz,
            imp(&who, "authentication.k8s.io", "uids", "", "", uid),
        )?;
    }
    for (key, values) in &extra {
        for v in values {
            require(
                authz,
                imp(&who, "authentication.k8s.io", "userextras", key, "", v),
            )?;
        }
    }
    let marker = if user == ANONYMOUS {
        UNAUTHENTICATED
    } else {
        AUTHENTICATED
    };
    if !groups_out
        .iter()
        .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
    {
        groups_out.push(marker.to_string());
    }
    tracing::debug!(by = %who.user, as_user = %user, "impersonation");
    Ok(Identity {
        user: user.to_string(),
        groups: groups_out,
        uid: uid.to_string(),
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::rbac::{PolicyIndex, MASTERS};
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn admins_may_impersonate_others_may_not() {
        let authz = Authorizer::empty();
        let crs = [
            json!({"metadata": {"name": "imp"}, "rules": [{"verbs": ["impersonate"], "apiGroups": [""], "resources": ["users"], "resourceNames": ["jane"]}]}),
        ];
        let crbs = [
            json!({"metadata": {"name": "imp"}, "roleRef": {"kind": "ClusterRole", "name": "imp"}, "subjects": [{"kind": "User", "name": "bob"}]}),
        ];
        authz.set_policy(PolicyIndex::build(&crs, &[], &crbs, &[]));
        let admin = Identity::new("system:admin", &[MASTERS]);
        let id = impersonate(
            &authz,
            admin.clone(),
            &headers(&[
                ("Impersonate-User", "jane"),
                ("Impersonate-Group", "dev"),
                ("Impersonate-Extra-Scopes", "a"),
            ]),
        )
        .unwrap();
        assert_eq!(id.user, "jane");
        assert_eq!(id.groups, vec!["dev", AUTHENTICATED]);
        assert_eq!(id.extra["scopes"], vec!["a"]);
        let bob = Identity::new("bob", &[]);
        let id = impersonate(
            &authz,
            bob.clone(),
            &headers(&[("Impersonate-User", "jane")]),
        )
        .unwrap();
        assert_eq!(id.groups, vec![AUTHENTICATED]);
        let e = impersonate(
            &authz,
            bob.clone(),
            &headers(&[("Impersonate-User", "joe")]),
        )
        .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            r#"users "joe" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        let e = impersonate(
            &authz,
            bob,
            &headers(&[
                ("Impersonate-User", "jane"),
                ("Impersonate-Group", "system:masters"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.code, 403);
        let e = impersonate(
            &authz,
            admin.clone(),
            &headers(&[("Impersonate-Group", "x")]),
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
        let sa = impersonate(
            &authz,
            admin,
            &headers(&[("Impersonate-User", "system:serviceaccount:ns1:bot")]),
        )
        .unwrap();
        assert_eq!(
            sa.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                AUTHENTICATED
            ]
        );
    }
}
