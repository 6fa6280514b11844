//! Patches of a version served by conversion (`api::convert`): the patch applies to the
//! object as the client sees it (the served version), and the result is converted back
//! and written as an update of the stored version, with compare-and-swap retries.

use crate::api::convert::Conversion;
use crate::api::meta;
use crate::api::patch::{self, PatchType};
use crate::api::resources::{self, Resource};
use crate::api::status::ApiError;
use crate::server::registry::{Registry, Target, WriteOptions};
use serde_json::Value;

/// PATCH of `served`: the registry's own patch for a stored version; through the
/// served version (below) for one served by conversion, which never creates. Returns
/// the answer and whether the object was created.
#[allow(clippy::too_many_arguments)]
pub(super) async fn patch_or_create(
    reg: &Registry,
    served: &'static Resource,
    ns: &str,
    name: &str,
    ptype: PatchType,
    body: &Value,
    target: Target,
    opts: &WriteOptions,
) -> Result<(Value, bool), ApiError> {
    match served.conversion {
        Some(conv) => {
            let v = patch(reg, served, conv, ns, name, ptype, body, target, opts).await?;
            Ok((v, false))
        }
        None => {
            reg.patch_or_create(served, ns, name, ptype, body, target, opts)
                .await
        }
    }
}

/// Applies a JSON, merge or strategic merge patch through the served version.
/// Server-side apply needs field ownership in the served version's terms, which is not
/// kept: it is refused with 415 and a message naming the stored version to use.
#[allow(clippy::too_many_arguments)]
async fn patch(
    reg: &Registry,
    served: &'static Resource,
    conv: &Conversion,
    ns: &str,
    name: &str,
    ptype: PatchType,
    body: &Value,
    target: Target,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    let res = resources::stored(served);
    if ptype == PatchType::Apply {
        let mut e = ApiError::unsupported_media_type(&[
            patch::PATCH_MEDIA_TYPES[0],
            patch::PATCH_MEDIA_TYPES[1],
            patch::PATCH_MEDIA_TYPES[2],
        ]);
        e.message = format!(
            "server-side apply of {} is served in {}/{} only",
            served.plural, res.group, conv.stored_version
        );
        return Err(e);
    }
    loop {
        let current = reg.get(res, ns, name).await?;
        let old = (conv.from_stored)(current.value()?);
        let new = patch::apply(ptype, &old, body, served.group, served.kind)?;
        // A resourceVersion in the patch is a precondition.
        if meta::meta_str(&new, "resourceVersion") != current.revision.to_string() {
            return Err(ApiError::conflict(res.group, res.plural, name));
        }
        let pinned = body.pointer("/metadata/resourceVersion").is_some();
        match reg
            .update(res, ns, name, (conv.to_stored)(new), target, opts)
            .await
        {
            Ok(v) => return Ok((conv.from_stored)(v)),
            // Someone wrote in between: patch the newer object, unless the patch named
            // the version it applies to.
            Err(e) if e.code == 409 && !pinned => continue,
            Err(e) => return Err(e),
        }
    }
}
