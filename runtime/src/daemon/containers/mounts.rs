//! Docker's two mount syntaxes (`-v` as HostConfig.Binds and Config.Volumes, `--mount` as
//! HostConfig.Mounts, plus HostConfig.Tmpfs) turned into one list of mount requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_core::{Error, Result, VolumeName};

/// One mount a container asks for, before volumes are created and paths resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", rename_all = "lowercase")]
pub enum MountRequest {
    Bind {
        source: String,
        target: String,
        read_only: bool,
        /// `-v` creates a missing source directory; `--mount` refuses it (Docker's rule).
        create_source: bool,
        propagation: String,
    },
    Volume {
        /// None: an anonymous volume, named when it is created.
        name: Option<String>,
        target: String,
        read_only: bool,
        driver: Option<String>,
        driver_opts: BTreeMap<String, String>,
        /// Do not copy the image's content at `target` into a new empty volume.
        nocopy: bool,
    },
    Tmpfs {
        target: String,
        size_bytes: Option<u64>,
        mode: Option<u32>,
        read_only: bool,
    },
}

impl MountRequest {
    pub fn target(&self) -> &str {
        match self {
            MountRequest::Bind { target, .. }
            | MountRequest::Volume { target, .. }
            | MountRequest::Tmpfs { target, .. } => target,
        }
    }
}

/// The `HostConfig.Mounts` entries, as the docker CLI sends `--mount`.
pub use strata_api_types::Mount as ApiMount;

fn check_target(target: &str) -> Result<()> {
    if !target.starts_with('/') {
        return Err(Error::invalid(format!(
            "invalid mount target {target:?}: it must be an absolute path"
        )));
    }
    if target == "/" {
        return Err(Error::invalid(
            "invalid mount target \"/\": cannot mount over the root",
        ));
    }
    if target.split('/').any(|c| c == "..") || target.contains('\0') {
        return Err(Error::invalid(format!(
            "invalid mount target {target:?}: '..' is not allowed"
        )));
    }
    Ok(())
}

/// Parses one `-v` string: `name:/path[:opts]`, `/host:/path[:opts]` or `/path` (anonymous).
pub fn parse_bind(spec: &str) -> Result<MountRequest> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [target] => ("", *target, ""),
        [source, target] => (*source, *target, ""),
        [source, target, opts] => (*source, *target, *opts),
        _ => {
            return Err(Error::invalid(format!(
                "invalid volume specification: {spec:?}"
            )))
        }
    };
    check_target(target)?;
    let mut read_only = false;
    let mut propagation = String::new();
    let mut nocopy = false;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" => {}
            "nocopy" => nocopy = true,
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                propagation = opt.to_string()
            }
            other => {
                return Err(Error::invalid(format!(
                    "invalid mode {other:?} in volume specification {spec:?}"
                )))
            }
        }
    }
    if source.is_empty() {
        return Ok(MountRequest::Volume {
            name: None,
            target: target.to_string(),
            read_only,
            driver: None,
            driver_opts: BTreeMap::new(),
            nocopy,
        });
    }
    if source.starts_with('/') {
        return Ok(MountRequest::Bind {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
            create_source: true,
            propagation,
        });
    }
    VolumeName::new(source).map_err(|e| {
        Error::invalid(format!(
            "{e}: a -v source is a volume name or an absolute host path"
        ))
    })?;
    Ok(MountRequest::Volume {
        name: Some(source.to_string()),
        target: target.to_string(),
        read_only,
        driver: None,
        driver_opts: BTreeMap::new(),
        nocopy,
    })
}

/// Converts one `--mount` entry.
pub fn from_api_mount(m: &ApiMount) -> Result<MountRequest> {
    check_target(&m.target)?;
    match m.kind.as_str() {
        "bind" => {
            if !m.source.starts_with('/') {
                return Err(Error::invalid(format!(
                    "invalid mount config for type \"bind\": source {:?} must be an absolute path",
                    m.source
                )));
            }
            Ok(MountRequest::Bind {
                source: m.source.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
                create_source: false,
                propagation: m
                    .bind_options
                    .as_ref()
                    .map(|b| b.propagation.clone())
                    .unwrap_or_default(),
            })
        }
        "volume" => {
            let opts = m.volume_options.clone().unwrap_or_default();
            if !opts.subpath.is_empty() {
                return Err(Error::invalid(format!(
                    "invalid mount config for type \"volume\": VolumeOptions.Subpath {:?} is \
                     not supported by Strata: mount the whole volume",
                    opts.subpath
                )));
            }
            let driver = opts.driver_config.clone().unwrap_or_default();
            let name = (!m.source.is_empty()).then(|| m.source.clone());
            if let Some(n) = &name {
                VolumeName::new(n.as_str())?;
            }
            Ok(MountRequest::Volume {
                name,
                target: m.target.clone(),
                read_only: m.read_only,
                driver: (!driver.name.is_empty()).then_some(driver.name),
                driver_opts: driver.options.unwrap_or_default(),
                nocopy: opts.no_copy,
            })
        }
        "tmpfs" => {
            if !m.source.is_empty() {
                return Err(Error::invalid(
                    "invalid mount config for type \"tmpfs\": source must be empty",
                ));
            }
            let t = m.tmpfs_options.clone().unwrap_or_default();
            Ok(MountRequest::Tmpfs {
                target: m.target.clone(),
                size_bytes: (t.size_bytes > 0).then_some(t.size_bytes as u64),
                mode: (t.mode != 0).then_some(t.mode),
                read_only: m.read_only,
            })
        }
        other => Err(Error::invalid(format!(
            "mount type {other:?} is not supported (bind, volume, tmpfs)"
        ))),
    }
}

/// Parses a `--tmpfs /path:size=64m,mode=1777` value (HostConfig.Tmpfs map entry).
pub fn parse_tmpfs(target: &str, options: &str) -> Result<MountRequest> {
    check_target(target)?;
    let mut size_bytes = None;
    let mut mode = None;
    let mut read_only = false;
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("size", v)) => size_bytes = Some(strata_core::options::parse_bytes(v)?),
            Some(("mode", v)) => {
                mode = Some(u32::from_str_radix(v, 8).map_err(|_| {
                    Error::invalid(format!("invalid tmpfs mode {v:?}: expected octal"))
                })?)
            }
            None if opt == "ro" => read_only = true,
            None if matches!(opt, "rw" | "noexec" | "exec" | "nosuid" | "nodev") => {}
            _ => return Err(Error::invalid(format!("invalid tmpfs option {opt:?}"))),
        }
    }
    Ok(MountRequest::Tmpfs {
        target: target.to_string(),
        size_bytes,
        mode,
        read_only,
    })
}

/// All mounts of a create request; a target used twice is refused (Docker: "Duplicate mount
/// point").
pub fn collect(
    binds: &[String],
    mounts: &[ApiMount],
    tmpfs: &BTreeMap<String, String>,
    anonymous_volumes: &[String],
) -> Result<Vec<MountRequest>> {
    let mut out = Vec::new();
    for b in binds {
        out.push(parse_bind(b)?);
    }
    for m in mounts {
        out.push(from_api_mount(m)?);
    }
    for (target, opts) in tmpfs {
        out.push(parse_tmpfs(target, opts)?);
    }
    for target in anonymous_volumes {
        // Config.Volumes entries already covered by an explicit mount are not anonymous.
        if out.iter().any(|m| m.target() == target) {
            continue;
        }
        out.push(parse_bind(target)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &out {
        let t = m.target().trim_end_matches('/');
        if !seen.insert(t.to_string()) {
            return Err(Error::invalid(format!("Duplicate mount point: {t}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_syntax() {
        assert!(matches!(
            parse_bind("vol1:/data:ro").unwrap(),
            MountRequest::Volume { name: Some(ref n), read_only: true, .. } if n == "vol1"
        ));
        assert!(matches!(
            parse_bind("/host:/data").unwrap(),
            MountRequest::Bind {
                create_source: true,
                read_only: false,
                ..
            }
        ));
        assert!(matches!(
            parse_bind("/data").unwrap(),
            MountRequest::Volume { name: None, .. }
        ));
        assert!(parse_bind("../x:/data").is_err());
        assert!(parse_bind("vol:relative").is_err());
        assert!(parse_bind("vol:/data:bogus").is_err());
        assert!(parse_bind("vol:/").is_err());
    }

    #[test]
    fn mount_syntax() {
        let m = ApiMount {
            kind: "bind".into(),
            source: "relative".into(),
            target: "/x".into(),
            ..Default::default()
        };
        assert!(from_api_mount(&m).is_err());
        let m = ApiMount {
            kind: "tmpfs".into(),
            target: "/t".into(),
            tmpfs_options: Some(strata_api_types::mount::TmpfsOptions {
                size_bytes: 1 << 20,
                mode: 0o1777,
                options: None,
            }),
            ..Default::default()
        };
        assert!(matches!(
            from_api_mount(&m).unwrap(),
            MountRequest::Tmpfs {
                size_bytes: Some(1048576),
                mode: Some(0o1777),
                ..
            }
        ));
    }

    #[test]
    fn duplicates_refused() {
        let err = collect(
            &["/a:/data".into(), "v1:/data".into()],
            &[],
            &BTreeMap::new(),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("Duplicate mount point"));
    }
}
