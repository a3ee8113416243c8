//! The Docker Engine REST API, as much of it as the stock docker CLI needs. Routes are served
//! bare and under `/v1.NN/`; see `version.rs`.

pub mod archive;
pub mod build;
pub mod build_cache;
pub mod changes;
pub mod containers;
pub mod control;
pub mod df;
pub mod error;
pub mod events;
pub mod exec;
pub mod export;
pub mod filters;
#[cfg(test)]
mod fuzz_tests;
pub mod host;
pub mod images;
pub mod networks;
pub mod query;
pub mod registry;
pub mod stats;
pub mod stream;
pub mod system;
pub mod top;
pub mod unsupported;
pub mod upload;
pub mod version;
pub mod volumes;

use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;

use crate::daemon::Daemon;

pub type AppState = Arc<Daemon>;

/// The whole API router. Wrap with [`version::strip_version`] before serving (see `serve`).
pub fn router(daemon: AppState) -> Router {
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping_head))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(events::events))
        .route("/system/df", get(df::df))
        .route("/containers/create", post(containers::create))
        .route("/containers/json", get(containers::list))
        .route("/containers/prune", post(containers::prune))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}/start", post(containers::start))
        .route("/containers/{id}/stop", post(containers::stop))
        .route("/containers/{id}/restart", post(containers::restart))
        .route("/containers/{id}/kill", post(containers::kill))
        .route("/containers/{id}/wait", post(containers::wait))
        .route("/containers/{id}/attach", post(containers::attach))
        .route("/containers/{id}/logs", get(containers::logs))
        .route("/containers/{id}/resize", post(containers::resize))
        .route("/containers/{id}", delete(containers::remove))
        .route("/containers/{id}/changes", get(changes::changes))
        .route("/containers/{id}/export", get(export::export))
        .route(
            "/containers/{id}/archive",
            get(archive::get).put(archive::put).head(archive::head),
        )
        .route("/containers/{id}/top", get(top::top))
        .route("/containers/{id}/stats", get(stats::stats))
        .route("/containers/{id}/pause", post(control::pause))
        .route("/containers/{id}/unpause", post(control::unpause))
        .route("/containers/{id}/rename", post(control::rename))
        .route("/containers/{id}/update", post(control::update))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/commit", post(images::commit))
        .route("/build", post(build::build))
        .route("/build/prune", post(build_cache::prune))
        // Other methods on these paths (create, remove, connect) answer as the fallback does.
        .route(
            "/networks",
            get(networks::list).fallback(unsupported::fallback),
        )
        .route("/networks/prune", post(networks::prune))
        .route(
            "/networks/{id}",
            get(networks::inspect).fallback(unsupported::fallback),
        )
        .route("/images/json", get(images::list))
        .route("/images/load", post(images::load))
        .route("/images/get", get(images::save_many))
        .route("/images/create", post(images::create))
        .route("/auth", post(registry::auth))
        .route("/images/prune", post(images::prune))
        // Served by the images wildcard below otherwise, as an image named `search`.
        .route("/images/search", get(unsupported::fallback))
        // Image names may contain `/`, so one wildcard route per method dispatches on the suffix.
        .route(
            "/images/{*rest}",
            get(images::get_by_name)
                .post(images::post_by_name)
                .delete(images::remove),
        )
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route(
            "/volumes/{name}",
            get(volumes::inspect).delete(volumes::remove),
        )
        .fallback(unsupported::fallback)
        .with_state(daemon)
}
