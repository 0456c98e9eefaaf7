//! Patches for a release from earlier ones (`release --delta-from`): made with `ota-delta`,
//! offered only when they save enough, each under a manifest of its own.

use anyhow::Context;
use ed25519_dalek::SigningKey;
use ota_core::wire::Version;

use crate::store::{vtext, Patch, Release, Store};

/// Patches larger than this share of the image are not offered: the applier's extra flash
/// writes and the risk of a second fetch after a failed patch outweigh what they save.
pub const DEFAULT_MAX_PERCENT: u8 = 60;

/// What became of a patch from one earlier release.
#[derive(Debug)]
pub enum Made {
    /// Stored and offered to devices running the source.
    Stored(Box<Patch>),
    /// Larger than the limit: devices running the source get the whole image.
    TooLarge {
        /// The source version.
        source: Version,
        /// The patch's size.
        size: usize,
        /// The limit it passed.
        limit: usize,
    },
}

/// What the API answers of a patch.
#[derive(Debug, serde::Serialize)]
pub struct MadeView {
    /// The version it applies to.
    pub source: String,
    /// Its size.
    pub bytes: usize,
    /// Its image id, if it is offered.
    pub image_id: Option<u32>,
    /// Why it is not, if it is not.
    pub not_offered: Option<String>,
}

impl Made {
    /// What the API answers of it.
    pub fn view(&self, sources: &[Release]) -> MadeView {
        match self {
            Made::Stored(p) => MadeView {
                source: sources
                    .iter()
                    .find(|r| r.id == p.source)
                    .map_or_else(String::new, |r| vtext(r.version)),
                bytes: p.info.size as usize,
                image_id: Some(p.id),
                not_offered: None,
            },
            Made::TooLarge {
                source,
                size,
                limit,
            } => MadeView {
                source: vtext(*source),
                bytes: *size,
                image_id: None,
                not_offered: Some(format!("over the {limit}-byte limit")),
            },
        }
    }

    /// One line for the command line.
    pub fn describe(&self, image_size: u32, sources: &[Release]) -> String {
        match self {
            Made::Stored(p) => {
                let from = sources
                    .iter()
                    .find(|r| r.id == p.source)
                    .map_or_else(|| format!("release {}", p.source), |r| vtext(r.version));
                format!(
                    "patch from {from}: image id {}, {} bytes, {:.1} % of the {image_size}-byte image",
                    p.id,
                    p.info.size,
                    100.0 * f64::from(p.info.size) / f64::from(image_size.max(1))
                )
            }
            Made::TooLarge {
                source,
                size,
                limit,
            } => format!(
                "patch from {}: {size} bytes is over the {limit}-byte limit; devices running it get the whole image",
                vtext(*source)
            ),
        }
    }
}

/// The releases of `class` named by `versions` (`X.Y.Z,X.Y.Z…`), to make patches from.
pub async fn sources(store: &Store, class: &str, versions: &str) -> anyhow::Result<Vec<Release>> {
    let mut out = Vec::new();
    for v in versions.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let v = crate::parse_version(v)?;
        out.push(
            store
                .release(class, v)
                .await?
                .with_context(|| format!("no release {} of {class} to patch from", vtext(v)))?,
        );
    }
    Ok(out)
}

/// Makes, signs and stores patches to `release` (whose image is `image`) from each of
/// `sources` (earlier releases of its class), keeping those at most `max_percent` % of the
/// image.
pub async fn make_patches(
    store: &Store,
    release: &Release,
    image: &[u8],
    sources: &[Release],
    max_percent: u8,
    key: &SigningKey,
) -> anyhow::Result<Vec<Made>> {
    let limit = image.len() * usize::from(max_percent.min(100)) / 100;
    let mut made = Vec::new();
    for source in sources {
        let old = store
            .image(ota_core::wire::ImageId(source.id))
            .await?
            .with_context(|| format!("the image of {} is missing", vtext(source.version)))?;
        let (old, new) = (
            std::sync::Arc::new(old),
            std::sync::Arc::new(image.to_vec()),
        );
        let patch = {
            let (old, new) = (old.clone(), new.clone());
            tokio::task::spawn_blocking(move || ota_delta::diff(&old, &new)).await??
        };
        // The patch must rebuild the image byte for byte before anyone is offered it.
        if ota_delta::apply_in_memory(&old, &patch).ok().as_deref() != Some(&new[..]) {
            anyhow::bail!(
                "the patch from {} does not rebuild the image",
                vtext(source.version)
            );
        }
        if patch.len() > limit {
            made.push(Made::TooLarge {
                source: source.version,
                size: patch.len(),
                limit,
            });
            continue;
        }
        let p = store.add_patch(release, source, &old, &patch, key).await?;
        made.push(Made::Stored(Box::new(p)));
    }
    Ok(made)
}
