//! `POST /build/prune` (`docker builder prune`, and the last step of `docker system prune`).

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::error::ApiResult;
use super::AppState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BuildPruneReport {
    caches_deleted: Option<Vec<String>>,
    /// The cached steps' layers belong to their images and are reclaimed by the image prune.
    space_reclaimed: u64,
}

pub async fn prune(State(d): State<AppState>) -> ApiResult<Json<BuildPruneReport>> {
    let forgotten = crate::build::prune_cache(&d).await?;
    Ok(Json(BuildPruneReport {
        caches_deleted: (!forgotten.is_empty()).then_some(forgotten),
        space_reclaimed: 0,
    }))
}
