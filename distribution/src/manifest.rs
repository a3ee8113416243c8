//! Manifests: Docker schema2 and OCI image manifests, Docker manifest lists and OCI image
//! indexes, and choosing one platform from a list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_core::store::Digest;

use crate::error::{DistError, Result};

pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MT_DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const MT_OCI_FOREIGN_PREFIX: &str = "application/vnd.oci.image.layer.nondistributable";

/// What a manifest request accepts, in Docker's order of preference.
pub const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// Manifests larger than this are refused (Docker's limit is 4 MiB too).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    // Docker's field order: mediaType, size, digest.
    pub size: u64,
    pub digest: Digest,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// Foreign (non-distributable) layers are not fetched or pushed by Docker either; Strata
    /// refuses them rather than pulling an image without them.
    pub fn is_foreign(&self) -> bool {
        self.media_type == MT_DOCKER_FOREIGN || self.media_type.starts_with(MT_OCI_FOREIGN_PREFIX)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A fetched manifest, by kind.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
}

impl Manifest {
    /// Parses by the body's `mediaType` (or the answer's Content-Type when the body has none).
    pub fn parse(content_type: &str, body: &[u8]) -> Result<Self> {
        let bad = |e: serde_json::Error| DistError::Invalid(format!("invalid manifest: {e}"));
        let probe: Probe = serde_json::from_slice(body).map_err(bad)?;
        if probe.schema_version == 1 {
            return Err(DistError::Invalid(
                "Docker image manifest schema 1 is deprecated and not supported; push the \
                 image again with a current client"
                    .into(),
            ));
        }
        let media_type = probe.media_type.as_deref().unwrap_or(content_type);
        let is_index = media_type == MT_DOCKER_LIST
            || media_type == MT_OCI_INDEX
            || (probe.manifests.is_some() && media_type != MT_OCI_MANIFEST);
        if is_index {
            Ok(Manifest::Index(serde_json::from_slice(body).map_err(bad)?))
        } else if media_type == MT_DOCKER_MANIFEST
            || media_type == MT_OCI_MANIFEST
            || media_type.is_empty()
            || media_type.starts_with("application/json")
        {
            Ok(Manifest::Image(serde_json::from_slice(body).map_err(bad)?))
        } else {
            Err(DistError::Invalid(format!(
                "unsupported manifest media type {media_type:?}"
            )))
        }
    }
}

impl Platform {
    /// `os/arch[/variant]`, as the API's `platform` parameter.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || DistError::Invalid(format!("invalid platform {s:?}: want os/arch[/variant]"));
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Self {
            os: parts[0].to_ascii_lowercase(),
            architecture: normalize_arch(parts[1]).to_string(),
            os_version: None,
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }

    /// The platform this daemon runs (`linux/amd64` here).
    pub fn host() -> Self {
        let arch = normalize_arch(std::env::consts::ARCH).to_string();
        let variant = (arch == "arm").then(|| "v7".to_string());
        Self {
            os: "linux".into(),
            architecture: arch,
            os_version: None,
            variant,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" | "x86" => "386",
        "armhf" | "armel" => "arm",
        other => other,
    }
}

/// A variant with its architecture's default filled in (`arm64` is `v8`, `arm` is `v7`,
/// `amd64` is `v1`), as containerd's platform matcher compares them.
fn variant_of(arch: &str, variant: Option<&str>) -> String {
    match (arch, variant.filter(|v| !v.is_empty())) {
        (_, Some(v)) => v.to_ascii_lowercase(),
        ("arm64", None) => "v8".into(),
        ("arm", None) => "v7".into(),
        ("amd64", None) => "v1".into(),
        (_, None) => String::new(),
    }
}

/// The variants a machine of `want`'s variant runs, best first (an arm v7 machine runs v6
/// and v5 binaries; amd64 v3 runs v2 and v1).
fn acceptable_variants(arch: &str, want: &str) -> Vec<String> {
    let ladder: &[&str] = match arch {
        "arm" => &["v8", "v7", "v6", "v5"],
        "amd64" => &["v4", "v3", "v2", "v1"],
        "arm64" => &["v9", "v8"],
        _ => &[],
    };
    match ladder.iter().position(|v| *v == want) {
        Some(i) => ladder[i..].iter().map(|v| v.to_string()).collect(),
        None => vec![want.to_string()],
    }
}

/// The entry of `index` for `want`: same OS and architecture, the best variant `want` runs.
pub fn select_platform<'a>(index: &'a ImageIndex, want: &Platform) -> Option<&'a Descriptor> {
    let want_arch = normalize_arch(&want.architecture);
    let want_variant = variant_of(want_arch, want.variant.as_deref());
    let ladder = acceptable_variants(want_arch, &want_variant);
    index
        .manifests
        .iter()
        .filter_map(|d| {
            let p = d.platform.as_ref()?;
            let arch = normalize_arch(&p.architecture);
            if !p.os.eq_ignore_ascii_case(&want.os) || arch != want_arch {
                return None;
            }
            let v = variant_of(arch, p.variant.as_deref());
            let rank = ladder.iter().position(|l| *l == v)?;
            Some((rank, d))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: MT_OCI_MANIFEST.into(),
            digest: Digest::of_bytes(&[n]),
            size: 1,
            urls: vec![],
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                os_version: None,
                variant: variant.map(str::to_string),
            }),
            annotations: BTreeMap::new(),
        }
    }

    fn index(entries: Vec<Descriptor>) -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(MT_OCI_INDEX.into()),
            manifests: entries,
        }
    }

    #[test]
    fn picks_linux_amd64_from_a_list() {
        let idx = index(vec![
            entry("unknown", "unknown", None, 0),
            entry("linux", "arm64", Some("v8"), 1),
            entry("windows", "amd64", None, 2),
            entry("linux", "amd64", None, 3),
            entry("linux", "arm", Some("v7"), 4),
        ]);
        let want = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            select_platform(&idx, &want).unwrap().digest,
            Digest::of_bytes(&[3])
        );
        let arm64 = Platform::parse("linux/aarch64").unwrap();
        assert_eq!(
            select_platform(&idx, &arm64).unwrap().digest,
            Digest::of_bytes(&[1])
        );
        assert!(select_platform(&idx, &Platform::parse("linux/s390x").unwrap()).is_none());
    }

    #[test]
    fn variant_rules() {
        let idx = index(vec![
            entry("linux", "arm", Some("v5"), 5),
            entry("linux", "arm", Some("v6"), 6),
            entry("linux", "arm64", None, 8),
        ]);
        // An arm v7 machine takes the best variant it runs: v6.
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(
            select_platform(&idx, &v7).unwrap().digest,
            Digest::of_bytes(&[6])
        );
        // arm64 without a variant is v8.
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(
            select_platform(&idx, &v8).unwrap().digest,
            Digest::of_bytes(&[8])
        );
        // A v5 machine cannot run v6.
        let v5 = Platform::parse("linux/arm/v5").unwrap();
        assert_eq!(
            select_platform(&idx, &v5).unwrap().digest,
            Digest::of_bytes(&[5])
        );
        // amd64/v2 is not what a plain amd64 request gets.
        let idx = index(vec![entry("linux", "amd64", Some("v2"), 2)]);
        assert!(select_platform(&idx, &Platform::parse("linux/amd64").unwrap()).is_none());
    }

    #[test]
    fn parses_each_manifest_kind() {
        let d = Digest::of_bytes(b"c");
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT_DOCKER_MANIFEST}","config":{{"mediaType":"{MT_DOCKER_CONFIG}","digest":"{d}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            Manifest::parse("", image.as_bytes()),
            Ok(Manifest::Image(_))
        ));
        // OCI manifests may leave mediaType out of the body.
        let oci =
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{d}","size":1}},"layers":[]}}"#);
        assert!(matches!(
            Manifest::parse(MT_OCI_MANIFEST, oci.as_bytes()),
            Ok(Manifest::Image(_))
        ));
        let list = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{d}","size":1}}]}}"#);
        assert!(matches!(
            Manifest::parse(MT_OCI_INDEX, list.as_bytes()),
            Ok(Manifest::Index(_))
        ));
        assert!(Manifest::parse("", br#"{"schemaVersion":1}"#).is_err());
    }
}
