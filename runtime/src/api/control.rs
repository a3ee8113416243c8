//! `POST /containers/{id}/pause`, `/unpause` and `/rename`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::daemon::containers::pause;

pub async fn pause(State(d): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    pause::pause(&d.containers.get(&id)?).await?;
    super::events::container(&d, "pause", &id, &[]);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unpause(State(d): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    pause::unpause(&d.containers.get(&id)?).await?;
    super::events::container(&d, "unpause", &id, &[]);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn rename(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let name = q
        .get("name")
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    let old = d.containers.get(&id)?.snapshot().name;
    d.containers.rename(&id, name)?;
    let old = format!("/{old}");
    super::events::container(&d, "rename", name, &[("oldName", old.as_str())]);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/update` (`docker update`).
pub async fn update(
    State(d): State<AppState>,
    Path(id): Path<String>,
    body: Result<
        axum::Json<crate::daemon::containers::update::UpdateRequest>,
        axum::extract::rejection::JsonRejection,
    >,
) -> ApiResult<axum::Json<crate::daemon::containers::update::UpdateResponse>> {
    let axum::Json(req) =
        body.map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?;
    let answer = crate::daemon::containers::update::update(&d.containers, &id, &req).await?;
    super::events::container(&d, "update", &id, &[]);
    Ok(axum::Json(answer))
}
