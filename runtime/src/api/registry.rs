//! Registry endpoints: pull (`POST /images/create?fromImage=`), push
//! (`POST /images/{name}/push`) and login (`POST /auth`), with Docker's JSON progress
//! streams and error words. The work is `image::pull` / `image::push` over
//! `strata-distribution`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use strata_api_types::progress::{Aux, JsonMessage, ProgressDetail};
use strata_api_types::system::AuthResponse;
use strata_core::store::{Digest, Reference};
use strata_distribution::{AuthConfig, BlobMetadata, DistError, ImageRef, Platform, Registry};

use super::error::{ApiError, ApiResult};
use super::images::json_stream;
use super::stream;
use super::AppState;
use crate::daemon::{accounting, Daemon};
use crate::image::pull::{self, PullOptions, PullProgress};
use crate::image::push::{self, PushOptions, PushProgress};

fn metadata(d: &Daemon) -> BlobMetadata {
    BlobMetadata::new(&accounting::image_root(&d.data_root, d.driver.name()))
}

/// The `X-Registry-Auth` header's credentials (absent or `{}`: anonymous).
fn auth_of(headers: &HeaderMap) -> ApiResult<Option<AuthConfig>> {
    match headers.get("x-registry-auth").and_then(|v| v.to_str().ok()) {
        Some(v) => AuthConfig::from_header(v).map_err(|e| ApiError::bad_request(e.to_string())),
        None => Ok(None),
    }
}

/// A progress stream's lines: an unbounded sender (progress callbacks cannot wait, and a
/// dropped line would leave the client's bar stuck), forwarded in order into the response.
fn lines() -> (
    tokio::sync::mpsc::UnboundedSender<bytes::Bytes>,
    tokio::sync::mpsc::Receiver<bytes::Bytes>,
) {
    let (utx, mut urx) = tokio::sync::mpsc::unbounded_channel();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(line) = urx.recv().await {
            if tx.send(line).await.is_err() {
                break; // the client went away
            }
        }
    });
    (utx, rx)
}

/// A pull's resolution error as Docker words it (its `translatePullError`).
fn pull_error(r: &ImageRef, e: DistError) -> ApiError {
    let familiar = r.familiar_name();
    match (e.registry_code(), &e) {
        (Some("DENIED") | Some("UNAUTHORIZED"), DistError::Registry { message, .. }) => {
            ApiError::not_found(format!(
                "pull access denied for {familiar}, repository does not exist or may require \
                 'docker login': {message}"
            ))
        }
        (Some("MANIFEST_UNKNOWN"), _) => {
            ApiError::not_found(format!("manifest for {r} not found: {e}"))
        }
        (Some("NAME_UNKNOWN"), _) => {
            ApiError::not_found(format!("repository {familiar} not found: {e}"))
        }
        (_, DistError::InvalidReference(_)) => ApiError::bad_request(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// A byte-counting step: `{"status", "id", "progressDetail": {current[, total]}, "progress"}`.
fn counted(status: &str, id: String, current: u64, total: Option<u64>) -> JsonMessage {
    JsonMessage {
        status: Some(status.into()),
        id: Some(id),
        progress_detail: Some(ProgressDetail {
            current: Some(current),
            total,
        }),
        progress: Some(match total {
            Some(total) => bar(current, total),
            None => human(current),
        }),
        ..Default::default()
    }
}

fn pull_line(p: PullProgress) -> JsonMessage {
    let st = |status: &str, id: String| JsonMessage::layer_step(status, id);
    match p {
        PullProgress::AlreadyExists { id } => st("Already exists", id),
        PullProgress::PullingFsLayer { id } => st("Pulling fs layer", id),
        PullProgress::Waiting { id } => st("Waiting", id),
        PullProgress::Downloading { id, current, total } => {
            counted("Downloading", id, current, Some(total))
        }
        PullProgress::VerifyingChecksum { id } => st("Verifying Checksum", id),
        PullProgress::DownloadComplete { id } => st("Download complete", id),
        PullProgress::Extracting { id, current } => counted("Extracting", id, current, None),
        PullProgress::PullComplete { id } => st("Pull complete", id),
    }
}

/// `POST /images/create?fromImage=&tag=&platform=`.
pub async fn pull(
    d: AppState,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let from = q.get("fromImage").map(String::as_str).unwrap_or("");
    let reference = ImageRef::from_parts(from, q.get("tag").map(String::as_str))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let platform = match q.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => Platform::parse(p).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Platform::host(),
    };
    let opts = PullOptions {
        client: d.config.registry_client(),
        auth: auth_of(headers)?,
        platform,
        max_concurrent_downloads: d.config.max_concurrent_downloads,
        spool_dir: d.data_root.join("tmp"),
        metadata: metadata(&d),
    };
    std::fs::create_dir_all(&opts.spool_dir)
        .map_err(|e| ApiError::internal(format!("create {}: {e}", opts.spool_dir.display())))?;
    let plan = pull::resolve(&reference, opts)
        .await
        .map_err(|e| pull_error(&reference, e))?;
    let (tx, rx) = lines();
    let shown = reference
        .tag
        .clone()
        .unwrap_or_else(|| plan.manifest_digest.to_string());
    let _ = tx.send(stream::json_line(&JsonMessage {
        id: Some(shown),
        ..JsonMessage::status(format!("Pulling from {}", reference.repository))
    }));
    let progress_tx = tx.clone();
    let progress: pull::PullProgressFn = Arc::new(move |p| {
        let _ = progress_tx.send(stream::json_line(&pull_line(p)));
    });
    tokio::spawn(async move {
        let line = match plan.fetch(&d.images, progress).await {
            Ok(done) => {
                let _ = tx.send(stream::json_line(&JsonMessage::status(format!(
                    "Digest: {}",
                    done.manifest_digest
                ))));
                let verb = if done.updated {
                    "Downloaded newer image"
                } else {
                    "Image is up to date"
                };
                stream::json_line(&JsonMessage::status(format!(
                    "Status: {verb} for {reference}"
                )))
            }
            Err(e) => stream::json_error(&e.to_string()),
        };
        let _ = tx.send(line);
    });
    Ok(json_stream(rx))
}

fn push_line(p: PushProgress) -> JsonMessage {
    let st = |status: &str, id: String| JsonMessage::layer_step(status, id);
    match p {
        PushProgress::Preparing { id } => st("Preparing", id),
        PushProgress::Waiting { id } => st("Waiting", id),
        PushProgress::Pushing { id, current, total } => {
            counted("Pushing", id, current, Some(total))
        }
        PushProgress::Pushed { id } => st("Pushed", id),
        PushProgress::LayerExists { id } => st("Layer already exists", id),
        PushProgress::Mounted { id, from } => st(&format!("Mounted from {from}"), id),
    }
}

/// `POST /images/{name}/push?tag=`: the named tag, or every tag of the repository.
pub async fn push(
    d: AppState,
    name: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let tag = q.get("tag").filter(|t| !t.is_empty()).cloned();
    let base = ImageRef::parse(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let familiar = base.familiar_name();
    let targets: Vec<(Reference, Digest)> = match &tag {
        Some(t) => Reference::from_parts(&familiar, Some(t))
            .ok()
            .and_then(|r| d.images.resolve(&r.to_string()).ok().map(|id| (r, id)))
            .into_iter()
            .collect(),
        None => d
            .images
            .all_tags()
            .into_iter()
            .filter(|(r, _)| r.repo == familiar)
            .collect(),
    };
    if targets.is_empty() {
        return Err(ApiError::not_found(format!(
            "An image does not exist locally with the tag: {name}"
        )));
    }
    let opts = PushOptions {
        client: d.config.registry_client(),
        auth: auth_of(headers)?,
        metadata: metadata(&d),
    };
    let (tx, rx) = lines();
    let repo_line = format!("{}/{}", base.registry, base.repository);
    let _ = tx.send(stream::json_line(&JsonMessage::status(format!(
        "The push refers to repository [{repo_line}]"
    ))));
    let progress_tx = tx.clone();
    let progress: push::PushProgressFn = Arc::new(move |p| {
        let _ = progress_tx.send(stream::json_line(&push_line(p)));
    });
    tokio::spawn(async move {
        for (r, id) in targets {
            let mut target = base.clone();
            target.tag = Some(r.tag.clone());
            target.digest = None;
            match push::push(&d.images, &id, &target, &opts, progress.clone()).await {
                Ok(done) => {
                    let status =
                        format!("{}: digest: {} size: {}", done.tag, done.digest, done.size);
                    let _ = tx.send(stream::json_line(&JsonMessage::status(status)));
                    let aux = JsonMessage {
                        progress_detail: Some(ProgressDetail::default()),
                        aux: Some(Aux {
                            tag: Some(done.tag.clone()),
                            digest: Some(done.digest.to_string()),
                            size: Some(done.size),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    let _ = tx.send(stream::json_line(&aux));
                }
                Err(e) => {
                    let _ = tx.send(stream::json_error(&e.to_string()));
                    return;
                }
            }
        }
    });
    Ok(json_stream(rx))
}

/// The registry host a login's `serveraddress` names (`https://host/v1/` is `host`).
fn login_host(address: &str) -> String {
    let a = address
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = a.split('/').next().unwrap_or("");
    match host {
        "" | "docker.io" | "index.docker.io" => {
            strata_distribution::reference::DOCKER_HUB_API.into()
        }
        h => h.to_string(),
    }
}

/// `POST /auth`: checks the credentials against the registry.
pub async fn auth(
    State(d): State<AppState>,
    Json(body): Json<AuthConfig>,
) -> ApiResult<Json<AuthResponse>> {
    let host = login_host(&body.serveraddress);
    let creds = body.normalized();
    let unauthorized = |e: DistError| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string());
    let registry = Registry::connect(&d.config.registry_client(), &host, creds)
        .await
        .map_err(|e| match e {
            e if e.is_unauthorized() => unauthorized(e),
            e => ApiError::internal(e.to_string()),
        })?;
    registry.login().await.map_err(unauthorized)?;
    Ok(Json(AuthResponse {
        status: "Login Succeeded".into(),
        identity_token: String::new(),
    }))
}

/// Docker's text progress bar (`[=====>    ]  1.2MB/3.4MB`), which old clients print.
fn bar(current: u64, total: u64) -> String {
    if total == 0 {
        return human(current);
    }
    let width = 50u64;
    let filled = (current.min(total) * width / total) as usize;
    let mut b = "=".repeat(filled);
    if filled < width as usize {
        b.push('>');
        b.push_str(&" ".repeat(width as usize - filled - 1));
    }
    format!("[{b}] {}/{}", human(current), human(total))
}

/// Decimal units, as Docker's `units.HumanSize`.
fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        return format!("{n}B");
    }
    let digits = format!("{v:.3}");
    let digits = digits.trim_end_matches('0').trim_end_matches('.');
    format!("{digits}{}", units[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_hosts() {
        assert_eq!(login_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(login_host("https://reg.example:443/v2/"), "reg.example:443");
        assert_eq!(
            login_host("https://index.docker.io/v1/"),
            "registry-1.docker.io"
        );
        assert_eq!(login_host(""), "registry-1.docker.io");
    }

    #[test]
    fn progress_text() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.5MB");
        assert!(bar(1, 2).starts_with("[=========================>"));
        // The lines the old `json!` code wrote, literally.
        let done = pull_line(PullProgress::PullComplete { id: "abc".into() });
        assert_eq!(
            serde_json::to_value(done).unwrap(),
            serde_json::json!({"status": "Pull complete", "progressDetail": {}, "id": "abc"})
        );
        let downloading = pull_line(PullProgress::Downloading {
            id: "abc".into(),
            current: 1,
            total: 2,
        });
        assert_eq!(
            serde_json::to_value(downloading).unwrap(),
            serde_json::json!({"status": "Downloading", "id": "abc",
                "progressDetail": {"current": 1, "total": 2}, "progress": bar(1, 2)})
        );
        let extracting = pull_line(PullProgress::Extracting {
            id: "abc".into(),
            current: 1_500_000,
        });
        assert_eq!(
            serde_json::to_value(extracting).unwrap(),
            serde_json::json!({"status": "Extracting", "id": "abc",
                "progressDetail": {"current": 1_500_000}, "progress": "1.5MB"})
        );
    }
}
