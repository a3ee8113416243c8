//! `/volumes...`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use strata_api_types::volume::{VolumeCreateRequest, VolumeListResponse, VolumePruneReport};
use strata_core::VolumeName;

use super::error::{ApiError, ApiResult};
use super::filters::Filters;
use super::AppState;
use crate::daemon::volumes::VolumeView;

fn volume_name(name: &str) -> ApiResult<VolumeName> {
    VolumeName::new(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub async fn create(
    State(d): State<AppState>,
    body: Result<Json<VolumeCreateRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?;
    let name = match body.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => Some(volume_name(n)?),
        None => None,
    };
    let view = d
        .volumes
        .create(
            name,
            body.driver.as_deref(),
            &body.driver_opts.unwrap_or_default(),
            body.labels.unwrap_or_default(),
        )
        .await?;
    super::events::volume(&d, "create", &view.name, &view.driver);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub async fn inspect(State(d): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = volume_name(&name)?;
    Ok(Json(d.volumes.inspect(&name).await?).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub filters: Option<String>,
}

pub async fn list(
    State(d): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<VolumeListResponse<VolumeView>>> {
    let filters = Filters::parse(q.filters.as_deref())?;
    let mut out = Vec::new();
    for v in d.volumes.list().await? {
        let Ok(name) = VolumeName::new(v.name.clone()) else {
            continue;
        };
        if !filters.matches("name", |want| v.name.contains(want))
            || !filters.matches("driver", |want| v.driver == want)
            || !filters.matches_labels(&v.labels)
        {
            continue;
        }
        if let Some(dangling) = filters.bool("dangling")? {
            if dangling != (d.volumes.users(&name) == 0) {
                continue;
            }
        }
        out.push(v);
    }
    Ok(Json(VolumeListResponse {
        volumes: out,
        warnings: Vec::new(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    #[serde(default)]
    pub force: Option<String>,
}

pub async fn remove(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    let name = volume_name(&name)?;
    let force = super::filters::truthy(q.force.as_deref());
    let driver = d
        .volumes
        .inspect(&name)
        .await
        .map(|v| v.driver)
        .unwrap_or_default();
    d.volumes.remove(&name, force).await?;
    super::events::volume(&d, "destroy", name.as_str(), &driver);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn prune(
    State(d): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<VolumePruneReport>> {
    let filters = Filters::parse(q.filters.as_deref())?;
    let all = filters.bool("all")?.unwrap_or(false);
    let (deleted, reclaimed) = d.volumes.prune(all).await?;
    Ok(Json(VolumePruneReport {
        volumes_deleted: deleted,
        space_reclaimed: reclaimed,
    }))
}
