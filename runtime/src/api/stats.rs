//! `GET /containers/{id}/stats`: `docker stats`, streaming (default) or one object
//! (`stream=false`; `one-shot=true` skips the second sample that fills `precpu_stats`).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;

use super::error::ApiResult;
use super::AppState;
use crate::daemon::containers::stats;

pub async fn stats(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let c = d.containers.get(&id)?;
    let flag = |k: &str, default: bool| {
        q.get(k)
            .map(|v| matches!(v.as_str(), "1" | "true" | "True"))
            .unwrap_or(default)
    };
    let body = stats::stats_stream(c, flag("stream", true), flag("one-shot", false));
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
