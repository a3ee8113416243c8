//! `HEAD/GET/PUT /containers/{id}/archive`: `docker cp` out of and into a container (see
//! `daemon::containers::archive` for the path rules).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use futures::TryStreamExt;

use super::error::{ApiError, ApiResult};
use super::filters::truthy;
use super::AppState;
use crate::daemon::containers::archive::{self, PathStat};

type Params = Query<HashMap<String, String>>;

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

fn path_param(q: &HashMap<String, String>) -> ApiResult<&str> {
    q.get("path")
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("path is required"))
}

fn stat_header(st: &PathStat) -> ApiResult<HeaderValue> {
    let json = serde_json::to_vec(st).map_err(|e| ApiError::internal(e.to_string()))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(json);
    HeaderValue::from_str(&b64).map_err(|e| ApiError::internal(e.to_string()))
}

pub async fn head(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let c = d.containers.get(&id)?;
    let st = archive::stat_path(&d, &c, path_param(&q)?).await?;
    let mut r = Response::new(Body::empty());
    r.headers_mut().insert(STAT_HEADER, stat_header(&st)?);
    Ok(r)
}

pub async fn get(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let c = d.containers.get(&id)?;
    let (st, tar) = archive::read_path(&d, &c, path_param(&q)?).await?;
    let mut r = Response::new(Body::from_stream(tar));
    let h = r.headers_mut();
    h.insert(STAT_HEADER, stat_header(&st)?);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}

pub async fn put(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
    body: Body,
) -> ApiResult<StatusCode> {
    let c = d.containers.get(&id)?;
    let path = path_param(&q)?.to_string();
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    let input = Box::new(tokio_util::io::SyncIoBridge::new(reader));
    archive::write_path(
        &d,
        &c,
        &path,
        input,
        truthy(q.get("noOverwriteDirNonDir").map(String::as_str)),
        truthy(q.get("copyUIDGID").map(String::as_str)),
    )
    .await?;
    Ok(StatusCode::OK)
}
