//! Getting a container's image onto the node, per imagePullPolicy, with the kubelet's
//! waiting reasons: ErrImageNeverPull, ErrImagePull, then ImagePullBackOff while the
//! pull back-off runs, InvalidImageName for a reference that does not parse.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::PodContext;
use crate::agent::images::{self, ImageConfig};

/// Why a container cannot get its image yet: the waiting reason and message.
#[derive(Debug, Clone)]
pub struct ImageFailure {
    pub reason: &'static str,
    pub message: String,
}

/// The policy with upstream's default: Always for `:latest` or no tag, else IfNotPresent.
pub fn pull_policy(container: &Container) -> &str {
    if let Some(p) = container
        .image_pull_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        return p;
    }
    let image = container.image.as_deref().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

/// Makes the image present and unpacked (pulling when the policy says so) and returns
/// its config.
/// `pulled` reports whether a pull happened (for the Pulled event's wording).
pub async fn ensure(
    ctx: &PodContext,
    pod: &Pod,
    container: &Container,
) -> Result<(ImageConfig, bool), ImageFailure> {
    let image = container.image.as_deref().unwrap_or_default();
    if image.is_empty() || images::reference::parse(image).is_err() {
        return Err(ImageFailure {
            reason: "InvalidImageName",
            message: format!("Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: invalid reference format"),
        });
    }
    let policy = pull_policy(container);
    // The config of an image that is here, unpacked for use (what creating the
    // container needs next, so it is resolved once).
    let present = images::ensure_unpacked(ctx.runtime.client(), image).await;
    match (&present, policy) {
        (Ok(config), "IfNotPresent" | "Never") => return Ok((config.clone(), false)),
        (Err(images::Error::NotFound(_)), "Never") => {
            return Err(ImageFailure {
                reason: "ErrImageNeverPull",
                message: format!(
                    "Container image \"{image}\" is not present with pull policy of Never"
                ),
            })
        }
        (Err(e), _) if !matches!(e, images::Error::NotFound(_)) => {
            return Err(ImageFailure {
                reason: "ErrImagePull",
                message: e.to_string(),
            })
        }
        _ => {}
    }
    match ctx.pull(pod, image).await {
        Ok(()) => images::ensure_unpacked(ctx.runtime.client(), image)
            .await
            .map(|c| (c, true))
            .map_err(|e| ImageFailure {
                reason: "ErrImagePull",
                message: e.to_string(),
            }),
        // With policy Always an image already here still runs when the registry is
        // unreachable? No: upstream fails the pull; keep that behaviour.
        Err(message) => Err(ImageFailure {
            reason: "ErrImagePull",
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn default_pull_policy_follows_the_tag() {
        assert_eq!(pull_policy(&c("busybox", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:latest", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:1.36", None)), "IfNotPresent");
        assert_eq!(pull_policy(&c("127.0.0.1:5000/busybox", None)), "Always");
        assert_eq!(
            pull_policy(&c("127.0.0.1:5000/busybox:v1", None)),
            "IfNotPresent"
        );
        assert_eq!(pull_policy(&c("busybox:1", Some("Never"))), "Never");
    }
}
