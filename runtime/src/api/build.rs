//! `POST /build`: the classic builder, answering with Docker's JSON message stream.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, RawQuery, Request, State};
use axum::response::Response;
use futures::StreamExt;
use strata_core::store::Reference;
use tokio_util::io::StreamReader;

use super::error::{ApiError, ApiResult};
use super::filters::truthy;
use super::{stream, AppState};
use crate::build::{self, BuildOptions};

fn json_map(v: Option<&String>, what: &str) -> ApiResult<BTreeMap<String, String>> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(BTreeMap::new()),
        Some(s) => {
            let m: BTreeMap<String, Option<String>> = serde_json::from_str(s)
                .map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))?;
            Ok(m.into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect())
        }
    }
}

pub async fn build(
    State(d): State<AppState>,
    RawQuery(raw): RawQuery,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> ApiResult<Response> {
    let tags = super::query::all_values(raw.as_deref(), "t")
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = BuildOptions {
        dockerfile: q.get("dockerfile").cloned().unwrap_or_default(),
        tags,
        no_cache: truthy(q.get("nocache").map(String::as_str)),
        build_args: json_map(q.get("buildargs"), "buildargs")?,
        labels: json_map(q.get("labels"), "labels")?,
        quiet: truthy(q.get("q").map(String::as_str)),
        network: q.get("networkmode").cloned().unwrap_or_default(),
    };
    let body = req
        .into_body()
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let input: strata_core::TarStream = Box::pin(StreamReader::new(body));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        if let Err(e) = build::build(&d, input, opts, tx.clone()).await {
            let _ = tx.send(stream::json_error(&e.to_string())).await;
        }
    });
    Ok(super::images::json_stream(rx))
}
