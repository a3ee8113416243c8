//! `--log-opt max-size=... max-file=...` for the json-file log, as Docker reads them, and our
//! default. Docker's json-file driver keeps everything unless told otherwise, so one chatty
//! container can fill the disk under the daemon; we default to Docker's `local` driver
//! limits instead (20 MiB a file, 5 files: at most 100 MiB a container), which keep a
//! runaway container's damage bounded while leaving plenty for `docker logs`.

use strata_core::{Error, Result};

pub const DEFAULT_MAX_SIZE: u64 = 20 << 20;
pub const DEFAULT_MAX_FILE: u32 = 5;

/// How big the log may grow before it rotates, and how many files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Bytes in the current file that trigger a rotation; `None`: never rotate.
    pub max_size: Option<u64>,
    /// Files kept, the current one included (`<id>-json.log`, `.1`, ... `.max_file-1`).
    pub max_file: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_size: Some(DEFAULT_MAX_SIZE),
            max_file: DEFAULT_MAX_FILE,
        }
    }
}

/// HostConfig's `LogConfig`.
pub use strata_api_types::LogConfig;

impl LogOptions {
    /// The options a container's `HostConfig.LogConfig` asks for. With no `max-size` the
    /// default applies (both keys, as a pair); `max-size=-1` turns rotation off, as Docker.
    pub fn from_config(config: &LogConfig) -> Result<LogOptions> {
        let opts = config.config.clone().unwrap_or_default();
        let Some(size) = opts.get("max-size") else {
            if opts.contains_key("max-file") {
                return Err(Error::invalid("max-file can not be set without max-size"));
            }
            return Ok(LogOptions::default());
        };
        let max_size = match size.trim() {
            "-1" => None,
            s => Some(parse_size(s)?),
        };
        let max_file = match opts.get("max-file") {
            None => 1,
            Some(n) => n
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| Error::invalid(format!("invalid max-file {n:?}: must be >= 1")))?,
        };
        Ok(LogOptions { max_size, max_file })
    }
}

/// Docker's `RAMInBytes`: a number with an optional k/m/g/t suffix (with or without `b`,
/// any case), in powers of 1024.
fn parse_size(s: &str) -> Result<u64> {
    let bad = || Error::invalid(format!("invalid max-size {s:?}"));
    let lower = s.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let number: f64 = lower[..digits_end].parse().map_err(|_| bad())?;
    let shift = match lower[digits_end..].trim_end_matches('b').trim() {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<LogOptions> {
        LogOptions::from_config(&LogConfig {
            kind: "json-file".into(),
            config: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        })
    }

    #[test]
    fn sizes_and_counts_as_docker_reads_them() {
        assert_eq!(opts(&[]).unwrap(), LogOptions::default());
        let o = opts(&[("max-size", "10m"), ("max-file", "3")]).unwrap();
        assert_eq!((o.max_size, o.max_file), (Some(10 << 20), 3));
        assert_eq!(opts(&[("max-size", "1k")]).unwrap().max_size, Some(1024));
        assert_eq!(opts(&[("max-size", "2KB")]).unwrap().max_size, Some(2048));
        assert_eq!(opts(&[("max-size", "100")]).unwrap().max_size, Some(100));
        assert_eq!(opts(&[("max-size", "1k")]).unwrap().max_file, 1);
        assert_eq!(opts(&[("max-size", "-1")]).unwrap().max_size, None);
        assert!(opts(&[("max-size", "lots")]).is_err());
        assert!(opts(&[("max-size", "1k"), ("max-file", "0")]).is_err());
        assert!(opts(&[("max-file", "3")]).is_err());
    }
}
