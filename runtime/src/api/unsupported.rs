//! The router's fallback: Engine API endpoints Strata does not serve answer 501 with a message
//! naming what is unsupported, in the `{"message": ...}` shape the docker CLI prints, instead
//! of a bare 404. Paths that are no Engine API endpoint at all stay 404. The full list, with
//! reasons, is docs/api-coverage.md.

use axum::http::{Method, StatusCode, Uri};

use super::error::ApiError;

/// (path prefix, what it is, why Strata does not serve it).
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "/networks",
        "networks",
        "containers run with network none or host only",
    ),
    ("/swarm", "swarm mode", "Strata is a single-node engine"),
    ("/nodes", "swarm nodes", "Strata is a single-node engine"),
    (
        "/services",
        "swarm services",
        "Strata is a single-node engine",
    ),
    ("/tasks", "swarm tasks", "Strata is a single-node engine"),
    (
        "/secrets",
        "swarm secrets",
        "Strata is a single-node engine",
    ),
    (
        "/configs",
        "swarm configs",
        "Strata is a single-node engine",
    ),
    (
        "/plugins",
        "plugin management",
        "storage and volume plugins are set in the daemon's configuration",
    ),
    (
        "/distribution",
        "registry distribution inspection",
        "it is not implemented yet (pull resolves manifests itself)",
    ),
    (
        "/images/search",
        "registry search",
        "Strata speaks the distribution API, which has no search",
    ),
    (
        "/session",
        "BuildKit sessions",
        "builds use the classic builder",
    ),
    ("/grpc", "BuildKit", "builds use the classic builder"),
    ("/build/cancel", "build cancellation", "not implemented yet"),
];

/// What a `/containers/{id}/...` sub-resource is, for the ones not served.
const REFUSED_CONTAINER_OPS: &[(&str, &str, &str)] = &[
    ("attach/ws", "websocket attach", "use the HTTP attach"),
    (
        "checkpoints",
        "checkpoints",
        "Strata has no checkpoint/restore",
    ),
];

pub async fn fallback(method: Method, uri: Uri) -> ApiError {
    let path = uri.path();
    match refusal(path) {
        Some((what, why)) => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("Strata does not support {what} ({why}): {method} {path}"),
        ),
        None => ApiError::not_found(format!("page not found: {path}")),
    }
}

fn refusal(path: &str) -> Option<(&'static str, &'static str)> {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if let Some((_, what, why)) = REFUSED.iter().find(|(p, _, _)| under(p)) {
        return Some((what, why));
    }
    let rest = path.strip_prefix("/containers/")?;
    let (_, op) = rest.split_once('/')?;
    REFUSED_CONTAINER_OPS
        .iter()
        .find(|(o, _, _)| op == *o || op.starts_with(&format!("{o}/")))
        .map(|(_, what, why)| (*what, *why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the fallback: unsupported Engine API endpoints are named, unknown paths are 404.
    #[test]
    fn refusals_name_the_feature() {
        assert_eq!(refusal("/networks").unwrap().0, "networks");
        assert_eq!(refusal("/networks/bridge").unwrap().0, "networks");
        assert_eq!(refusal("/swarm/init").unwrap().0, "swarm mode");
        assert_eq!(
            refusal("/containers/abc/checkpoints").unwrap().0,
            "checkpoints"
        );
        // Served since exec exists: its routes never reach the fallback.
        assert!(refusal("/containers/abc/exec").is_none());
        assert_eq!(refusal("/images/search").unwrap().0, "registry search");
        assert!(refusal("/networksx").is_none());
        assert!(refusal("/nothing/here").is_none());
        assert!(refusal("/containers/abc/json").is_none());
    }
}
