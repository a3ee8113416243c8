//! `/_ping`, `/version`, `/info`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use strata_api_types::system::{
    ComponentDetails, ComponentVersion, Info, PlatformName, PluginsInfo, Runtime, SwarmInfo,
    Version,
};

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

pub async fn version() -> Json<Version> {
    let v = env!("CARGO_PKG_VERSION");
    Json(Version {
        platform: PlatformName {
            name: "Strata Engine".into(),
        },
        components: vec![ComponentVersion {
            name: "Engine".into(),
            version: v.into(),
            details: ComponentDetails {
                api_version: API_VERSION.into(),
                min_api_version: MIN_API_VERSION.into(),
                os: "linux".into(),
                arch: host::go_arch().into(),
                kernel_version: host::kernel_version(),
            },
        }],
        version: v.into(),
        api_version: API_VERSION.into(),
        min_api_version: MIN_API_VERSION.into(),
        git_commit: String::new(),
        go_version: "rust".into(),
        os: "linux".into(),
        arch: host::go_arch().into(),
        kernel_version: host::kernel_version(),
        build_time: String::new(),
    })
}

pub async fn info(State(d): State<AppState>) -> Result<Json<Info>, ApiError> {
    let driver_status: Vec<[String; 2]> = d
        .driver
        .status()
        .await?
        .into_iter()
        .map(|(k, v)| [k, v])
        .collect();
    let counts = crate::api::system::counts(&d).await;
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(Json(Info {
        id: d.id.clone(),
        containers: counts.containers,
        containers_running: counts.running,
        containers_paused: 0,
        containers_stopped: counts.containers - counts.running,
        images: counts.images,
        driver: d.driver.name().to_string(),
        driver_status,
        plugins: PluginsInfo {
            volume: d.volumes.driver_names(),
            storage: storage_drivers(&d),
            network: strings(&["host", "null"]),
            authorization: None,
            log: strings(&["json-file"]),
        },
        memory_limit: true,
        swap_limit: true,
        cpu_cfs_period: true,
        cpu_cfs_quota: true,
        cpu_shares: true,
        pids_limit: true,
        ipv4_forwarding: false,
        debug: false,
        n_fd: 0,
        n_goroutines: 0,
        system_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        logging_driver: "json-file".into(),
        cgroup_driver: "cgroupfs".into(),
        cgroup_version: host::cgroup_version().into(),
        kernel_version: host::kernel_version(),
        operating_system: host::operating_system(),
        os_version: String::new(),
        os_type: "linux".into(),
        architecture: host::architecture().to_string(),
        ncpu: host::cpu_count() as i64,
        mem_total: host::mem_total_bytes() as i64,
        index_server_address: String::new(),
        registry_config: None,
        docker_root_dir: d.data_root.display().to_string(),
        http_proxy: String::new(),
        https_proxy: String::new(),
        no_proxy: String::new(),
        name: host::hostname(),
        labels: Vec::new(),
        experimental_build: false,
        server_version: env!("CARGO_PKG_VERSION").into(),
        runtimes: [(
            "strata".to_string(),
            Runtime {
                path: "stratad".into(),
            },
        )]
        .into(),
        default_runtime: "strata".into(),
        swarm: SwarmInfo {
            local_node_state: "inactive".into(),
            control_available: false,
        },
        live_restore_enabled: false,
        isolation: String::new(),
        init_binary: String::new(),
        security_options: strings(&["name=seccomp,profile=builtin"]),
        warnings: Vec::new(),
    }))
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
