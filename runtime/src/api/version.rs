//! API versions: every route is served bare and under `/v1.NN/`. Requests for a version below
//! the minimum are refused as Docker refuses them.

use axum::http::{Request, Uri};

/// The newest API version we speak. Below 1.52 `/system/df` has one (legacy) shape.
pub const API_VERSION: &str = "1.47";
/// The oldest we accept; the docker CLI itself refuses anything older.
pub const MIN_API_VERSION: &str = "1.40";

/// A parsed `major.minor` API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('.')?;
        Some(Self(a.parse().ok()?, b.parse().ok()?))
    }

    pub fn current() -> Self {
        Self::parse(API_VERSION).unwrap_or(Self(1, 47))
    }

    pub fn minimum() -> Self {
        Self::parse(MIN_API_VERSION).unwrap_or(Self(1, 40))
    }
}

/// Splits `/v1.45/containers/json` into (Some(1.45), `/containers/json`).
pub fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let candidate = &rest[..end];
        if ApiVersion::parse(candidate).is_some() {
            let tail = &rest[end..];
            return (Some(candidate), if tail.is_empty() { "/" } else { tail });
        }
    }
    (None, path)
}

/// Rewrites a versioned URI to its bare path and records the version as an extension, so
/// handlers see one route and can still shape answers per version.
pub fn strip_version<B>(mut req: Request<B>) -> Request<B> {
    let path = req.uri().path().to_string();
    let (version, bare) = split_version(&path);
    let version = version
        .and_then(ApiVersion::parse)
        .unwrap_or_else(ApiVersion::current);
    if bare.len() != path.len() {
        let pq = match req.uri().query() {
            Some(q) => format!("{bare}?{q}"),
            None => bare.to_string(),
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req.extensions_mut().insert(version);
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_versioned_paths() {
        assert_eq!(
            split_version("/v1.45/containers/json"),
            (Some("1.45"), "/containers/json")
        );
        assert_eq!(split_version("/_ping"), (None, "/_ping"));
        assert_eq!(split_version("/v1.41"), (Some("1.41"), "/"));
        assert_eq!(split_version("/volumes/v1.2"), (None, "/volumes/v1.2"));
        assert!(ApiVersion::parse("1.40").unwrap() < ApiVersion::parse("1.47").unwrap());
    }
}
