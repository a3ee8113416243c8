//! `GET /containers/{id}/top`: `docker top`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;

use super::error::ApiResult;
use super::AppState;
use crate::daemon::containers::top::{self, Top};

pub async fn top(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Top>> {
    let c = d.containers.get(&id)?;
    let args = q
        .get("ps_args")
        .map(String::as_str)
        .filter(|a| !a.trim().is_empty())
        .unwrap_or("-ef");
    Ok(Json(top::top(&c, args).await?))
}
