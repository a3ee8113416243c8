//! `/images/...`, `/commit`: load, save, import, list, inspect, history, tag, rmi, prune.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};
use strata_core::store::{Digest, Reference};
use strata_core::TarStream;
use tokio_util::io::StreamReader;

use super::error::{ApiError, ApiResult};
use super::filters::{truthy, Filters};
use super::stream;
use super::AppState;
use crate::daemon::{accounting, Daemon};
use crate::image::{self, ImageUser, LoadOptions, LoadProgress};

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    q.get(key).map(String::as_str)
}

/// Every value of a repeated query parameter (`changes=...&changes=...`, `names=`).
pub fn multi(raw: &Option<String>, key: &str) -> Vec<String> {
    raw.as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .filter_map(|(_, v)| urlencoding_decode(v))
        .collect()
}

fn urlencoding_decode(v: &str) -> Option<String> {
    let v = v.replace('+', " ");
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn body_stream(req: Request) -> TarStream {
    let stream = req
        .into_body()
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    Box::pin(StreamReader::new(stream))
}

/// Tells the image operations which container uses an image.
fn used_by(d: &Daemon) -> impl Fn(&Digest) -> Option<ImageUser> + Send + Sync + '_ {
    move |id: &Digest| {
        let users = d.containers.using_image(id.as_str());
        let first = users.first()?;
        let running = users
            .iter()
            .filter_map(|u| d.containers.get(u).ok())
            .any(|c| c.is_running());
        Some(ImageUser {
            container: first.chars().take(12).collect(),
            running,
        })
    }
}

/// A JSON-lines response fed by a channel.
pub fn json_stream(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Response {
    let s = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(s))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub async fn load(State(d): State<AppState>, Query(q): Params, req: Request) -> Response {
    let quiet = truthy(param(&q, "quiet"));
    let input = body_stream(req);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let progress_tx = tx.clone();
    let progress: image::load::LoadProgressFn = Arc::new(move |p: LoadProgress| {
        let line = match p {
            LoadProgress::LayerBytes { id, current, total } if !quiet => json!({
                "status": "Loading layer", "id": id,
                "progressDetail": { "current": current, "total": total },
            }),
            LoadProgress::LayerExists { id } if !quiet => {
                json!({ "status": "Already exists", "id": id })
            }
            LoadProgress::LayerLoaded { id } if !quiet => {
                json!({ "status": "Loading layer", "id": id, "progressDetail": {} })
            }
            LoadProgress::ImageLoaded { id, tags } => {
                if tags.is_empty() {
                    json!({ "stream": format!("Loaded image ID: {id}\n") })
                } else {
                    json!({ "stream": tags.iter().map(|t| format!("Loaded image: {t}\n")).collect::<String>() })
                }
            }
            _ => return,
        };
        let _ = progress_tx.try_send(stream::json_line(&line));
    });
    let spool_dir = d.data_root.join("tmp");
    tokio::spawn(async move {
        let opts = LoadOptions {
            spool_dir,
            progress: Some(progress),
        };
        if let Err(e) = image::load(&d.images, input, opts).await {
            let _ = tx.send(stream::json_error(&e.to_string())).await;
        }
    });
    json_stream(rx)
}

/// `GET /images/{name}/json|history|get`.
pub async fn get_by_name(
    State(d): State<AppState>,
    Path(rest): Path<String>,
) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/json") {
        inspect(&d, name).await
    } else if let Some(name) = rest.strip_suffix("/history") {
        history(&d, name)
    } else if let Some(name) = rest.strip_suffix("/get") {
        save_names(&d, vec![name.to_string()]).await
    } else {
        Err(ApiError::not_found(format!(
            "page not found: /images/{rest}"
        )))
    }
}

/// `POST /images/{name}/tag` and `/images/{name}/push`.
pub async fn post_by_name(
    State(d): State<AppState>,
    Path(rest): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/tag") {
        tag(&d, name, &q).await.map(IntoResponse::into_response)
    } else if let Some(name) = rest.strip_suffix("/push") {
        super::registry::push(d, name, &q, &headers).await
    } else {
        Err(ApiError::not_found(format!(
            "page not found: /images/{rest}"
        )))
    }
}

pub async fn save_many(State(d): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let names = multi(&raw, "names");
    if names.is_empty() {
        return Err(ApiError::bad_request("no images named (names=...)"));
    }
    save_names(&d, names).await
}

async fn save_names(d: &Daemon, names: Vec<String>) -> ApiResult<Response> {
    let tar = image::save(&d.images, &names).await?;
    let s = tokio_util::io::ReaderStream::new(tar);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(s))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `POST /images/create`: `fromImage=` pulls (see `registry::pull`); `fromSrc=-` imports
/// the body.
pub async fn create(
    State(d): State<AppState>,
    RawQuery(raw): RawQuery,
    Query(q): Params,
    req: Request,
) -> ApiResult<Response> {
    if param(&q, "fromImage").is_some_and(|f| !f.is_empty()) {
        let headers = req.headers().clone();
        return super::registry::pull(d, &q, &headers).await;
    }
    let Some(src) = param(&q, "fromSrc") else {
        return Err(ApiError::bad_request("fromSrc or fromImage is required"));
    };
    if src != "-" {
        return Err(ApiError::bad_request(
            "importing from a URL is not supported; send the tar as the request body (fromSrc=-)",
        ));
    }
    let reference = match param(&q, "repo").filter(|r| !r.is_empty()) {
        Some(repo) => {
            let tag = param(&q, "tag").filter(|t| !t.is_empty());
            Some(Reference::from_parts(repo, tag).map_err(ApiError::from)?)
        }
        None => None,
    };
    let opts = image::ImportOptions {
        reference,
        message: param(&q, "message")
            .filter(|m| !m.is_empty())
            .map(str::to_string),
        source: src.to_string(),
        changes: multi(&raw, "changes"),
    };
    let input = body_stream(req);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        match image::import(&d.images, input, opts).await {
            Ok(id) => {
                let _ = tx
                    .send(stream::json_line(&json!({ "status": id.to_string() })))
                    .await;
            }
            Err(e) => {
                let _ = tx.send(stream::json_error(&e.to_string())).await;
            }
        }
    });
    Ok(json_stream(rx))
}

/// Allocated bytes of one layer: what the driver stores for it plus its layerdb entry (kept
/// by the layer store).
pub fn layer_on_disk(d: &Daemon, chain: &Digest) -> u64 {
    d.layers.on_disk(chain).unwrap_or(0)
}

/// Allocated bytes of an image: its layers and its config (see `daemon::accounting`).
pub fn on_disk(d: &Daemon, id: &Digest) -> u64 {
    let Ok(rec) = d.images.get(id) else { return 0 };
    let image_root = accounting::image_root(&d.data_root, d.driver.name());
    strata_core::store::chain_ids(&rec.config.rootfs.diff_ids)
        .iter()
        .map(|c| layer_on_disk(d, c))
        .sum::<u64>()
        + accounting::image_config_bytes(&image_root, id)
}

/// One `ImageSummary`; sizes in the engine's accounting model.
pub fn summary(d: &Daemon, id: &Digest, shared: Option<i64>) -> ApiResult<Value> {
    let rec = d.images.get(id)?;
    let size = on_disk(d, id) as i64;
    let created = rec
        .config
        .created
        .as_deref()
        .and_then(strata_core::store::images::parse_rfc3339)
        .unwrap_or(0);
    let labels = rec
        .config
        .config
        .as_ref()
        .and_then(|c| c.get("Labels"))
        .cloned()
        .unwrap_or(Value::Null);
    Ok(json!({
        "Id": id.to_string(),
        "ParentId": rec.parent.map(|p| p.to_string()).unwrap_or_default(),
        "RepoTags": d.images.tags_of(id),
        "RepoDigests": d.images.repo_digests(id),
        "Created": created,
        "Size": size,
        "SharedSize": shared.unwrap_or(-1),
        "VirtualSize": size,
        "Labels": labels,
        "Containers": d.containers.using_image(id.as_str()).len() as i64,
    }))
}

pub async fn list(State(d): State<AppState>, Query(q): Params) -> ApiResult<Json<Value>> {
    let filters = Filters::parse(param(&q, "filters"))?;
    let all = truthy(param(&q, "all"));
    let mut out = Vec::new();
    let mut images = d.images.list();
    images.sort_by(|a, b| b.config.created.cmp(&a.config.created));
    for img in images {
        let tags = d.images.tags_of(&img.id);
        let dangling = tags.is_empty();
        // Untagged images that other images build on are intermediate: hidden unless -a.
        if dangling && !all && !d.images.children(&img.id).is_empty() {
            continue;
        }
        if let Some(want) = filters.bool("dangling")? {
            if want != dangling {
                continue;
            }
        }
        if !filters.matches("reference", |r| tags.iter().any(|t| t.starts_with(r))) {
            continue;
        }
        out.push(summary(&d, &img.id, None)?);
    }
    Ok(Json(Value::Array(out)))
}

fn resolve(d: &Daemon, name: &str) -> ApiResult<Digest> {
    d.images
        .resolve(name)
        .map_err(|_| ApiError::not_found(format!("No such image: {name}")))
}

async fn inspect(d: &Daemon, name: &str) -> ApiResult<Response> {
    let id = resolve(d, name)?;
    Ok(Json(d.images.inspect(&id).await?).into_response())
}

fn history(d: &Daemon, name: &str) -> ApiResult<Response> {
    let id = resolve(d, name)?;
    Ok(Json(image::history(&d.images, &id)?).into_response())
}

async fn tag(d: &Daemon, name: &str, q: &HashMap<String, String>) -> ApiResult<StatusCode> {
    resolve(d, name)?;
    let repo = param(q, "repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("repo is required"))?;
    let target = match param(q, "tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    image::tag(&d.images, name, &target).await?;
    Ok(StatusCode::CREATED)
}

pub async fn remove(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<Value>> {
    let name = name.trim_start_matches('/').to_string();
    resolve(&d, &name)?;
    let users = used_by(&d);
    let (items, _layers) = image::remove(
        &d.images,
        &name,
        truthy(param(&q, "force")),
        !truthy(param(&q, "noprune")),
        &users,
    )
    .await?;
    Ok(Json(json!(items
        .into_iter()
        .map(|i| match i {
            image::DeleteItem::Untagged(r) => json!({ "Untagged": r }),
            image::DeleteItem::Deleted(id) => json!({ "Deleted": id }),
        })
        .collect::<Vec<_>>())))
}

pub async fn prune(State(d): State<AppState>, Query(q): Params) -> ApiResult<Json<Value>> {
    let filters = Filters::parse(param(&q, "filters"))?;
    let all = filters.bool("dangling")? == Some(false);
    let users = used_by(&d);
    let report = image::prune(&d.images, all, &users).await?;
    Ok(Json(json!({
        "ImagesDeleted": report.images_deleted.into_iter().map(|i| match i {
            image::DeleteItem::Untagged(r) => json!({ "Untagged": r }),
            image::DeleteItem::Deleted(id) => json!({ "Deleted": id }),
        }).collect::<Vec<_>>(),
        "SpaceReclaimed": report.space_reclaimed,
    })))
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`.
pub async fn commit(
    State(d): State<AppState>,
    RawQuery(raw): RawQuery,
    Query(q): Params,
    body: Option<Json<Value>>,
) -> ApiResult<Response> {
    let key = param(&q, "container")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("container is required"))?;
    let c = d.containers.get(key)?;
    let rec = c.snapshot();
    let reference = match param(&q, "repo").filter(|r| !r.is_empty()) {
        Some(repo) => Some(Reference::from_parts(
            repo,
            param(&q, "tag").filter(|t| !t.is_empty()),
        )?),
        None => None,
    };
    let mut container_config = rec.config.clone();
    if let Some(Json(extra)) = body {
        if let (Some(dst), Some(src)) = (container_config.as_object_mut(), extra.as_object()) {
            for (k, v) in src {
                if !v.is_null() {
                    dst.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let opts = image::CommitOptions {
        reference,
        comment: param(&q, "comment").unwrap_or("").to_string(),
        author: param(&q, "author").unwrap_or("").to_string(),
        changes: multi(&raw, "changes"),
        container_id: rec.id.clone(),
        container_config: Some(container_config),
    };
    let layer = strata_core::LayerId::new(rec.rw_layer.clone())?;
    let base = Digest::parse(&rec.image_id).ok();
    let id = image::commit(&d.images, &layer, base.as_ref(), opts).await?;
    Ok((StatusCode::CREATED, Json(json!({ "Id": id.to_string() }))).into_response())
}
