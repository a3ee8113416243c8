//! Finding plugins by name, as Docker does: `NAME.sock` or `NAME/NAME.sock` in the socket
//! directory, then `NAME.spec` (a URL) or `NAME.json` (`{"Name","Addr","TLSConfig"}`) in the spec
//! directories. The first match wins.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::transport::PluginAddr;
use strata_core::error::{Error, Result};
use strata_core::ids::LayerId;

/// Where plugins are looked for.
#[derive(Debug, Clone)]
pub struct PluginDirs {
    pub sockets: Vec<PathBuf>,
    pub specs: Vec<PathBuf>,
}

impl Default for PluginDirs {
    fn default() -> Self {
        Self {
            sockets: vec!["/run/strata/plugins".into()],
            specs: vec![
                "/etc/strata/plugins".into(),
                "/usr/lib/strata/plugins".into(),
            ],
        }
    }
}

/// A plugin found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPlugin {
    pub name: String,
    pub addr: PluginAddr,
    /// Where its mount points must lie, when its `.json` spec says (`PropagatedMount`).
    pub scope: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct JsonSpec {
    #[serde(rename = "Addr")]
    addr: String,
    #[serde(rename = "TLSConfig", default)]
    tls: Option<super::tls::PluginTls>,
    #[serde(rename = "PropagatedMount", default)]
    propagated_mount: Option<String>,
}

fn parse_url(name: &str, url: &str) -> Result<PluginAddr> {
    let url = url.trim();
    if let Some(p) = url.strip_prefix("unix://") {
        return Ok(PluginAddr::Unix(PathBuf::from(p)));
    }
    if let Some(a) = url.strip_prefix("tcp://") {
        return Ok(PluginAddr::Tcp(a.trim_end_matches('/').to_string()));
    }
    Err(Error::invalid(format!(
        "plugin {name:?}: address {url:?} is neither unix:// nor tcp://"
    )))
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

impl PluginDirs {
    /// The plugin called `name`, if any. A name that could escape a directory is refused.
    pub fn find(&self, name: &str) -> Result<Option<FoundPlugin>> {
        LayerId::new(name)
            .map_err(|_| Error::invalid(format!("{name:?} is not a valid plugin name")))?;
        for dir in &self.sockets {
            for p in [
                dir.join(format!("{name}.sock")),
                dir.join(name).join(format!("{name}.sock")),
            ] {
                if is_socket(&p) {
                    return Ok(Some(FoundPlugin {
                        name: name.to_string(),
                        addr: PluginAddr::Unix(p),
                        scope: None,
                    }));
                }
            }
        }
        for dir in &self.specs {
            for base in [dir.clone(), dir.join(name)] {
                let spec = base.join(format!("{name}.spec"));
                if let Ok(text) = std::fs::read_to_string(&spec) {
                    return Ok(Some(FoundPlugin {
                        name: name.to_string(),
                        addr: parse_url(name, &text)?,
                        scope: None,
                    }));
                }
                let json = base.join(format!("{name}.json"));
                if let Ok(text) = std::fs::read_to_string(&json) {
                    let spec: JsonSpec = serde_json::from_str(&text).map_err(|e| {
                        Error::invalid(format!("plugin spec {}: {e}", json.display()))
                    })?;
                    let addr = match (parse_url(name, &spec.addr)?, spec.tls) {
                        (PluginAddr::Tcp(a), Some(tls)) => PluginAddr::TcpTls(a, tls),
                        (PluginAddr::Unix(_), Some(_)) => {
                            return Err(Error::invalid(format!(
                                "plugin spec {}: TLSConfig is for tcp:// addresses",
                                json.display()
                            )))
                        }
                        (addr, _) => addr,
                    };
                    return Ok(Some(FoundPlugin {
                        name: name.to_string(),
                        addr,
                        scope: spec.propagated_mount.map(PathBuf::from),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Every plugin name visible in the directories (for `info`).
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut add = |n: &str| {
            if LayerId::new(n).is_ok() && !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        };
        for dir in self.sockets.iter().chain(&self.specs) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                let stem = file
                    .strip_suffix(".sock")
                    .or_else(|| file.strip_suffix(".spec"))
                    .or_else(|| file.strip_suffix(".json"))
                    .unwrap_or(&file);
                if e.path().is_dir() || stem != file {
                    add(stem);
                }
            }
        }
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sockets_and_specs() {
        let t = tempfile::tempdir().unwrap();
        let dirs = PluginDirs {
            sockets: vec![t.path().join("run")],
            specs: vec![t.path().join("etc")],
        };
        std::fs::create_dir_all(t.path().join("run/sub")).unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(t.path().join("run/sub/sub.sock")).unwrap();
        std::fs::write(t.path().join("etc/a.spec"), "unix:///x/a.sock\n").unwrap();
        std::fs::write(
            t.path().join("etc/b.json"),
            r#"{"Name":"b","Addr":"tcp://127.0.0.1:9","PropagatedMount":"/mnt/b"}"#,
        )
        .unwrap();
        assert_eq!(
            dirs.find("sub").unwrap().unwrap().addr,
            PluginAddr::Unix(t.path().join("run/sub/sub.sock"))
        );
        assert_eq!(
            dirs.find("a").unwrap().unwrap().addr,
            PluginAddr::Unix("/x/a.sock".into())
        );
        let b = dirs.find("b").unwrap().unwrap();
        assert_eq!(b.addr, PluginAddr::Tcp("127.0.0.1:9".into()));
        assert_eq!(b.scope, Some(PathBuf::from("/mnt/b")));
        assert!(dirs.find("none").unwrap().is_none());
        assert!(dirs.find("../x").is_err());
        assert_eq!(dirs.names(), vec!["a", "b", "sub"]);
    }
}
