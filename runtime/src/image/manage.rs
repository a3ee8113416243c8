//! `docker tag`, `docker rmi` and `docker image prune`, with Docker's conflict rules.

use serde::{Deserialize, Serialize};
use strata_core::store::{Digest, ImageStore, LayerInfo, Reference};
use strata_core::{Error, Result};

/// A container that uses an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    pub container: String,
    pub running: bool,
}

/// Tells which container (if any) uses an image; the container service answers.
pub type UsedBy<'a> = &'a (dyn Fn(&Digest) -> Option<ImageUser> + Send + Sync);

/// One line of `DELETE /images/{name}`'s answer: `{"Untagged": ref}` or `{"Deleted": id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum DeleteItem {
    Untagged(String),
    Deleted(String),
}

/// `docker tag SOURCE TARGET`.
pub async fn tag(images: &ImageStore, source: &str, target: &str) -> Result<()> {
    let id = images.resolve(source)?;
    images.tag(&Reference::parse(target)?, &id).await
}

fn conflict(name: &str, why: String) -> Error {
    Error::busy(format!("conflict: unable to delete {name} {why}"))
}

/// `docker rmi NAME`. By tag: the tag goes; the image goes with its last tag unless a
/// container uses it. By id: refused while several repositories name it or a container uses
/// it, unless `force` (a running container, or child images, refuse even then). `prune`
/// (Docker's default, the opposite of `--no-prune`) also deletes untagged parents left alone.
pub async fn remove(
    images: &ImageStore,
    name: &str,
    force: bool,
    prune: bool,
    used_by: UsedBy<'_>,
) -> Result<(Vec<DeleteItem>, Vec<LayerInfo>)> {
    let id = images.resolve(name)?;
    let mut items = Vec::new();
    let by_reference = Reference::parse(name)
        .ok()
        .filter(|r| images.tags_of(&id).contains(&r.to_string()));
    let shown = if by_reference.is_some() {
        name.to_string()
    } else {
        id.short().to_string()
    };
    if let Some(r) = &by_reference {
        images.untag(r).await?;
        items.push(DeleteItem::Untagged(r.to_string()));
        if !images.tags_of(&id).is_empty() {
            return Ok((items, Vec::new()));
        }
        // The last tag went: delete the image too, unless something still needs it.
        if used_by(&id).is_some() || !images.children(&id).is_empty() {
            return Ok((items, Vec::new()));
        }
    } else {
        let tags = images.tags_of(&id);
        let repos: std::collections::BTreeSet<&str> = tags
            .iter()
            .map(|t| t.rsplit_once(':').map_or(t.as_str(), |(r, _)| r))
            .collect();
        if repos.len() > 1 && !force {
            return Err(conflict(
                &shown,
                "(must be forced) - image is referenced in multiple repositories".into(),
            ));
        }
    }
    check_conflicts(images, &id, &shown, force, used_by)?;
    // `delete` removes the tags in the same write as the rest; untagging one by one first
    // would race with a concurrent rmi of one of them.
    for t in images.tags_of(&id) {
        items.push(DeleteItem::Untagged(t));
    }
    let mut removed = Vec::new();
    let mut next = Some(id);
    while let Some(current) = next.take() {
        let parent = images.get(&current)?.parent;
        removed.extend(images.delete(&current).await?);
        items.push(DeleteItem::Deleted(current.to_string()));
        if !prune {
            break;
        }
        if let Some(p) = parent {
            let alone = images.get(&p).is_ok()
                && images.tags_of(&p).is_empty()
                && images.children(&p).is_empty()
                && used_by(&p).is_none();
            if alone {
                next = Some(p);
            }
        }
    }
    Ok((items, removed))
}

fn check_conflicts(
    images: &ImageStore,
    id: &Digest,
    shown: &str,
    force: bool,
    used_by: UsedBy<'_>,
) -> Result<()> {
    if !images.children(id).is_empty() {
        return Err(conflict(
            shown,
            "(cannot be forced) - image has dependent child images".into(),
        ));
    }
    match used_by(id) {
        Some(u) if u.running => Err(conflict(
            shown,
            format!(
                "(cannot be forced) - image is being used by running container {}",
                short(&u.container)
            ),
        )),
        Some(u) if !force => Err(conflict(
            shown,
            format!(
                "(must be forced) - image is being used by stopped container {}",
                short(&u.container)
            ),
        )),
        _ => Ok(()),
    }
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

/// What `image prune` removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PruneReport {
    pub images_deleted: Vec<DeleteItem>,
    /// Bytes of the layers that left the driver.
    pub space_reclaimed: u64,
}

/// `docker image prune`: images without tags that no container uses and no image builds on
/// (`all`: tagged ones too). Repeats, since deleting an image can leave its parent dangling.
pub async fn prune(images: &ImageStore, all: bool, used_by: UsedBy<'_>) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    loop {
        let candidates: Vec<Digest> = images
            .list()
            .into_iter()
            .map(|i| i.id)
            .filter(|id| {
                (all || images.tags_of(id).is_empty())
                    && images.children(id).is_empty()
                    && used_by(id).is_none()
            })
            .collect();
        if candidates.is_empty() {
            return Ok(report);
        }
        for id in candidates {
            for t in images.tags_of(&id) {
                report.images_deleted.push(DeleteItem::Untagged(t));
            }
            let removed = images.delete(&id).await?;
            report.space_reclaimed += removed.iter().map(|l| l.size).sum::<u64>();
            report
                .images_deleted
                .push(DeleteItem::Deleted(id.to_string()));
        }
    }
}
