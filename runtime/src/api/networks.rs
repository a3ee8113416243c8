//! `/networks`, read-only: Strata's containers run with network `none` or `host` only, so
//! those two built-in networks are listed and inspected as Docker shows them, and a prune has
//! nothing to delete (which lets `docker system prune` run). Creating, removing, connecting
//! and disconnecting networks stay refused by the fallback (docs/api-coverage.md).

use std::collections::BTreeMap;

use axum::extract::Path;
use axum::Json;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{ApiError, ApiResult};

/// The built-in networks: (name, driver), as Docker names them.
const BUILT_IN: [(&str, &str); 2] = [("host", "host"), ("none", "null")];

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    name: &'static str,
    id: String,
    created: &'static str,
    scope: &'static str,
    driver: &'static str,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: Ipam,
    internal: bool,
    attachable: bool,
    ingress: bool,
    config_from: ConfigFrom,
    config_only: bool,
    containers: BTreeMap<String, ()>,
    options: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Ipam {
    driver: &'static str,
    options: Option<BTreeMap<String, String>>,
    config: Vec<()>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigFrom {
    network: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PruneReport {
    networks_deleted: Option<Vec<String>>,
}

fn network(name: &'static str, driver: &'static str) -> Network {
    Network {
        name,
        // Stable across restarts, as Docker keeps its built-in networks' ids.
        id: hex::encode(Sha256::digest(format!("strata network {name}"))),
        created: "0001-01-01T00:00:00Z",
        scope: "local",
        driver,
        enable_ipv6: false,
        ipam: Ipam {
            driver: "default",
            options: None,
            config: Vec::new(),
        },
        internal: false,
        attachable: false,
        ingress: false,
        config_from: ConfigFrom { network: "" },
        config_only: false,
        containers: BTreeMap::new(),
        options: BTreeMap::new(),
        labels: BTreeMap::new(),
    }
}

/// `GET /networks`.
pub async fn list() -> Json<Vec<Network>> {
    Json(BUILT_IN.iter().map(|(n, d)| network(n, d)).collect())
}

/// `GET /networks/{id}`: by name, full id or id prefix.
pub async fn inspect(Path(id): Path<String>) -> ApiResult<Json<Network>> {
    BUILT_IN
        .iter()
        .map(|(n, d)| network(n, d))
        .find(|n| n.name == id || (!id.is_empty() && n.id.starts_with(&id)))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("network {id} not found")))
}

/// `POST /networks/prune`: built-in networks are never pruned, and there are no others.
pub async fn prune() -> Json<PruneReport> {
    Json(PruneReport {
        networks_deleted: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn built_in_networks_look_like_dockers() {
        let Json(all) = list().await;
        let v = serde_json::to_value(&all).unwrap();
        assert_eq!(v[0]["Name"], "host");
        assert_eq!(v[1]["Driver"], "null");
        assert_eq!(v[1]["IPAM"]["Driver"], "default");
        assert_eq!(v[0]["Id"].as_str().unwrap().len(), 64);
        let Json(none) = inspect(Path("none".into())).await.unwrap();
        assert_eq!(none.driver, "null");
        assert!(inspect(Path("bridge".into())).await.is_err());
        let Json(p) = prune().await;
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"NetworksDeleted":null}"#
        );
    }
}
