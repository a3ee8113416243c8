//! `/_ping`, `/version`, `/info`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::host;
use super::version::{API_VERSION, MIN_API_VERSION};
use super::AppState;

fn ping_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h
}

pub async fn ping() -> Response {
    let mut h = ping_headers();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    (StatusCode::OK, h, "OK").into_response()
}

pub async fn ping_head() -> Response {
    (StatusCode::OK, ping_headers()).into_response()
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("page not found: {}", uri.path()))
}

pub async fn version() -> Json<Value> {
    let v = env!("CARGO_PKG_VERSION");
    Json(json!({
        "Platform": { "Name": "Strata Engine" },
        "Components": [{
            "Name": "Engine",
            "Version": v,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
                "Arch": host::go_arch(),
                "KernelVersion": host::kernel_version(),
            }
        }],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "rust",
        "Os": "linux",
        "Arch": host::go_arch(),
        "KernelVersion": host::kernel_version(),
        "BuildTime": "",
    }))
}

pub async fn info(State(d): State<AppState>) -> Result<Json<Value>, ApiError> {
    let driver_status: Vec<[String; 2]> = d
        .driver
        .status()
        .await?
        .into_iter()
        .map(|(k, v)| [k, v])
        .collect();
    let counts = crate::api::system::counts(&d).await;
    Ok(Json(json!({
        "ID": d.id,
        "Containers": counts.containers,
        "ContainersRunning": counts.running,
        "ContainersPaused": 0,
        "ContainersStopped": counts.containers - counts.running,
        "Images": counts.images,
        "Driver": d.driver.name(),
        "DriverStatus": driver_status,
        "Plugins": {
            "Volume": d.volumes.driver_names(),
            "Storage": storage_drivers(&d),
            "Network": ["host", "null"],
            "Authorization": null,
            "Log": ["json-file"],
        },
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "PidsLimit": true,
        "IPv4Forwarding": false,
        "Debug": false,
        "NFd": 0,
        "NGoroutines": 0,
        "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": host::cgroup_version(),
        "KernelVersion": host::kernel_version(),
        "OperatingSystem": host::operating_system(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": host::architecture(),
        "NCPU": host::cpu_count(),
        "MemTotal": host::mem_total_bytes(),
        "IndexServerAddress": "",
        "RegistryConfig": null,
        "DockerRootDir": d.data_root.display().to_string(),
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": host::hostname(),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": { "strata": { "path": "stratad" } },
        "DefaultRuntime": "strata",
        "Swarm": { "LocalNodeState": "inactive", "ControlAvailable": false },
        "LiveRestoreEnabled": false,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": [],
    })))
}

/// Built-in layer drivers and the layer-driver plugins found at start-up.
fn storage_drivers(d: &AppState) -> Vec<String> {
    let mut names: Vec<String> = crate::daemon::builtins::layer_drivers()
        .names()
        .map(str::to_string)
        .collect();
    names.extend(d.plugins.graph.iter().cloned());
    names
}

/// Object counts for `info`.
pub struct Counts {
    pub containers: u64,
    pub running: u64,
    pub images: u64,
}

pub async fn counts(d: &AppState) -> Counts {
    let all = d.containers.all();
    Counts {
        containers: all.len() as u64,
        running: all.iter().filter(|c| c.is_running()).count() as u64,
        images: d.images.list().len() as u64,
    }
}
