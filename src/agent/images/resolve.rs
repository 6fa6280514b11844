//! Resolving an image's target (index or manifest) down to the manifest and config
//! for this node's platform, reading the JSON documents from what an archive just
//! held or from containerd's content store.

use std::collections::HashMap;

use serde::de::DeserializeOwned;

use super::oci::{self, ConfigFile, Descriptor, Index, Manifest, Platform};
use super::{content, Error, JSON_LIMIT};
use crate::agent::containerd::Client;

/// Where JSON blobs come from: what an archive just held, else the content store.
pub(super) struct Blobs<'a> {
    pub client: &'a Client,
    pub cache: Option<&'a HashMap<String, Vec<u8>>>,
}

impl Blobs<'_> {
    async fn bytes(&self, digest: &str) -> Result<Vec<u8>, Error> {
        if let Some(data) = self.cache.and_then(|c| c.get(digest)) {
            return Ok(data.clone());
        }
        match content::read(self.client, digest, 0, JSON_LIMIT).await {
            Ok(data) => Ok(data),
            Err(e) if e.is_not_found() => Err(Error::Format(format!(
                "blob {digest} is missing (not in the archive nor in the content store)"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn json<T: DeserializeOwned>(&self, digest: &str) -> Result<T, Error> {
        let data = self.bytes(digest).await?;
        serde_json::from_slice(&data).map_err(|e| Error::Format(format!("{digest}: {e}")))
    }
}

/// A target resolved down to this platform's manifest and config.
pub(super) struct Resolved {
    /// Indexes passed on the way, for their GC labels.
    pub indexes: Vec<(Descriptor, Index)>,
    pub manifest: Descriptor,
    pub manifest_doc: Manifest,
    pub config: ConfigFile,
}

/// Follows indexes down to the manifest for `platform`.
pub(super) async fn resolve(
    blobs: &Blobs<'_>,
    name: &str,
    target: &Descriptor,
    platform: &Platform,
) -> Result<Resolved, Error> {
    let mut indexes = Vec::new();
    let mut desc = target.clone();
    for _depth in 0..4 {
        let value: serde_json::Value = blobs.json(&desc.digest).await?;
        let media_type = match desc.media_type.as_str() {
            "" => value["mediaType"].as_str().unwrap_or_default().to_string(),
            mt => mt.to_string(),
        };
        let looks_like_index = value.get("manifests").is_some();
        if oci::is_index(&media_type) || (media_type.is_empty() && looks_like_index) {
            let index: Index = serde_json::from_value(value)
                .map_err(|e| Error::Format(format!("index {}: {e}", desc.digest)))?;
            let best = index
                .manifests
                .iter()
                .filter_map(|m| match &m.platform {
                    Some(p) => platform.rank(p).map(|r| (r, m)),
                    // No platform: only when nothing better; its config is checked.
                    None => Some((usize::MAX, m)),
                })
                .min_by_key(|(rank, _)| *rank)
                .map(|(_, m)| m.clone());
            indexes.push((desc.clone(), index));
            desc = best.ok_or_else(|| Error::NoPlatform {
                name: name.to_string(),
                platform: platform.clone(),
            })?;
            continue;
        }
        if !(oci::is_manifest(&media_type) || media_type.is_empty()) {
            return Err(Error::Format(format!(
                "{}: unsupported media type {media_type:?}",
                desc.digest
            )));
        }
        let manifest_doc: Manifest = serde_json::from_value(value)
            .map_err(|e| Error::Format(format!("manifest {}: {e}", desc.digest)))?;
        let config: ConfigFile = blobs.json(&manifest_doc.config.digest).await?;
        let image_platform = Platform {
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            variant: config.variant.clone(),
        };
        if !config.architecture.is_empty() && platform.rank(&image_platform).is_none() {
            return Err(Error::NoPlatform {
                name: name.to_string(),
                platform: platform.clone(),
            });
        }
        if desc.media_type.is_empty() {
            desc.media_type = media_type;
        }
        return Ok(Resolved {
            indexes,
            manifest: desc,
            manifest_doc,
            config,
        });
    }
    Err(Error::Format(format!("{name}: indexes nested too deeply")))
}
