//! `/images/...`, `/commit`: load, save, import, list, inspect, history, tag, rmi, prune.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use strata_api_types::image::{DeleteResponseItem, IdResponse, ImagePruneReport, ImageSummary};
use strata_api_types::progress::{JsonMessage, ProgressDetail};
use strata_core::store::{Digest, Reference};
use strata_core::TarStream;

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

fn body_stream(req: Request) -> TarStream {
    super::upload::drained_reader(req.into_body())
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
    let loaded_by = d.clone();
    let progress: image::load::LoadProgressFn = Arc::new(move |p: LoadProgress| {
        let line = match p {
            LoadProgress::LayerBytes { id, current, total } if !quiet => JsonMessage {
                progress_detail: Some(ProgressDetail {
                    current: Some(current),
                    total: Some(total),
                }),
                ..JsonMessage::layer_step("Loading layer", id)
            },
            LoadProgress::LayerExists { id } if !quiet => JsonMessage {
                id: Some(id),
                ..JsonMessage::status("Already exists")
            },
            LoadProgress::LayerLoaded { id } if !quiet => {
                JsonMessage::layer_step("Loading layer", id)
            }
            LoadProgress::ImageLoaded { id, tags } => JsonMessage::stream(if tags.is_empty() {
                super::events::image(&loaded_by, "load", id.as_str(), None);
                format!("Loaded image ID: {id}\n")
            } else {
                for t in &tags {
                    super::events::image(&loaded_by, "load", id.as_str(), Some(t));
                }
                tags.iter()
                    .map(|t| format!("Loaded image: {t}\n"))
                    .collect()
            }),
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
    let names = super::query::all_values(raw.as_deref(), "names");
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
        changes: super::query::all_values(raw.as_deref(), "changes"),
    };
    let input = body_stream(req);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        match image::import(&d.images, input, opts).await {
            Ok(id) => {
                let _ = tx
                    .send(stream::json_line(&JsonMessage::status(id.to_string())))
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
pub fn summary(d: &Daemon, id: &Digest, shared: Option<i64>) -> ApiResult<ImageSummary> {
    let rec = d.images.get(id)?;
    let size = on_disk(d, id) as i64;
    let created = rec
        .config
        .created
        .as_deref()
        .and_then(strata_core::store::images::parse_rfc3339)
        .unwrap_or(0);
    // Labels that are not a map of strings (an image config is untrusted input) show as none.
    let labels = rec
        .config
        .config
        .as_ref()
        .and_then(|c| c.get("Labels"))
        .and_then(|l| BTreeMap::<String, String>::deserialize(l).ok());
    Ok(ImageSummary {
        id: id.to_string(),
        parent_id: rec.parent.map(|p| p.to_string()).unwrap_or_default(),
        repo_tags: d.images.tags_of(id),
        repo_digests: d.images.repo_digests(id),
        created,
        size,
        shared_size: shared.unwrap_or(-1),
        virtual_size: size,
        labels,
        containers: d.containers.using_image(id.as_str()).len() as i64,
        strata: None,
    })
}

pub async fn list(
    State(d): State<AppState>,
    Query(q): Params,
) -> ApiResult<Json<Vec<ImageSummary>>> {
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
        if !filters.matches("reference", |r| {
            tags.iter().any(|t| reference_matches(r, t))
        }) {
            continue;
        }
        out.push(summary(&d, &img.id, None)?);
    }
    Ok(Json(out))
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
    let id = resolve(d, name)?;
    let repo = param(q, "repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("repo is required"))?;
    let target = match param(q, "tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    image::tag(&d.images, name, &target).await?;
    super::events::image(d, "tag", id.as_str(), Some(&target));
    Ok(StatusCode::CREATED)
}

pub async fn remove(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<Vec<DeleteResponseItem>>> {
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
    for item in &items {
        match item {
            image::DeleteItem::Untagged(r) => super::events::image(&d, "untag", r, Some(r)),
            image::DeleteItem::Deleted(id) => super::events::image(&d, "delete", id, None),
        }
    }
    Ok(Json(items.into_iter().map(delete_item).collect()))
}

fn delete_item(item: image::DeleteItem) -> DeleteResponseItem {
    match item {
        image::DeleteItem::Untagged(r) => DeleteResponseItem::Untagged(r),
        image::DeleteItem::Deleted(id) => DeleteResponseItem::Deleted(id),
    }
}

pub async fn prune(
    State(d): State<AppState>,
    Query(q): Params,
) -> ApiResult<Json<ImagePruneReport>> {
    let filters = Filters::parse(param(&q, "filters"))?;
    let all = filters.bool("dangling")? == Some(false);
    let users = used_by(&d);
    let report = image::prune(&d.images, all, &users).await?;
    Ok(Json(ImagePruneReport {
        images_deleted: report.images_deleted.into_iter().map(delete_item).collect(),
        space_reclaimed: report.space_reclaimed,
    }))
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
    // The body's non-null fields override the container's, key by key, as Docker merges.
    let mut container_config = serde_json::to_value(&rec.config)
        .map_err(|e| ApiError::internal(format!("encode the container's config: {e}")))?;
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
        changes: super::query::all_values(raw.as_deref(), "changes"),
        container_id: rec.id.clone(),
        container_config: Some(container_config),
    };
    let layer = strata_core::LayerId::new(rec.rw_layer.clone())?;
    let base = Digest::parse(&rec.image_id).ok();
    let id = image::commit(&d.images, &layer, base.as_ref(), opts).await?;
    Ok((StatusCode::CREATED, Json(IdResponse { id: id.to_string() })).into_response())
}

/// Docker's `reference` filter: the pattern (Go's `path.Match` rules) against the familiar
/// `name:tag`, or else against the name alone. An invalid pattern matches nothing.
fn reference_matches(pattern: &str, tag: &str) -> bool {
    let Ok(p) = glob::Pattern::new(pattern) else {
        return false;
    };
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    // The tag follows the last ':' that is after the last '/' (a registry port is not one).
    let name = match tag.rfind(':') {
        Some(i) if !tag[i..].contains('/') => &tag[..i],
        _ => tag,
    };
    p.matches_with(tag, opts) || p.matches_with(name, opts)
}

#[cfg(test)]
mod reference_filter_tests {
    use super::reference_matches;

    /// Guards Docker's pattern rules: `sdk-*` listed nothing before (a prefix test).
    #[test]
    fn patterns_match_as_dockers() {
        assert!(reference_matches("bb", "bb:latest"));
        assert!(reference_matches("bb:latest", "bb:latest"));
        assert!(reference_matches("sdk-*", "sdk-tag:v1"));
        assert!(reference_matches("b?", "bb:latest"));
        assert!(reference_matches("*/app", "127.0.0.1:5000/app:1"));
        assert!(!reference_matches("b", "bb:latest"));
        assert!(!reference_matches("*", "library/bb:latest"));
        assert!(!reference_matches("[", "bb:latest"));
    }
}
