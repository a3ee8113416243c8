//! `GET /containers/{id}/changes`: `docker diff`.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

use super::error::ApiResult;
use super::AppState;
use crate::daemon::containers::changes;

/// Docker's `FilesystemChange`: Kind 0 modified, 1 added, 2 deleted.
#[derive(Serialize)]
pub struct FilesystemChange {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "Kind")]
    kind: u8,
}

pub async fn changes(
    State(d): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<FilesystemChange>>> {
    let c = d.containers.get(&id)?;
    let list = changes::changes(&d, &c).await?;
    Ok(Json(
        list.into_iter()
            .map(|ch| FilesystemChange {
                path: ch.path.to_string_lossy().into_owned(),
                kind: ch.kind.wire(),
            })
            .collect(),
    ))
}
