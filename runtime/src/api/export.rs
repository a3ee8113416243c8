//! `GET /containers/{id}/export`: the container's root filesystem as a tar, streamed.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;

use super::error::ApiResult;
use super::AppState;
use crate::daemon::containers::export;

pub async fn export(State(d): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let c = d.containers.get(&id)?;
    let tar = export::export(&d, &c).await?;
    let mut r = Response::new(Body::from_stream(tar));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}
