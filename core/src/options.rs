//! Storage options (`--storage-opt size=10G`, Docker's `StorageOpt` map).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Key/value storage options as Docker passes them, keys lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageOpts(pub BTreeMap<String, String>);

impl StorageOpts {
    /// Parses `["size=10G", ...]`; an entry without `=` is refused.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self> {
        let mut map = BTreeMap::new();
        for item in items {
            let item = item.as_ref();
            let (k, v) = item.split_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "storage option {item:?} is not of the form key=value"
                ))
            })?;
            map.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        Ok(Self(map))
    }

    pub fn from_map(map: BTreeMap<String, String>) -> Self {
        Self(
            map.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `size=` option in bytes, if given.
    pub fn size(&self) -> Result<Option<u64>> {
        self.bytes("size")
    }

    /// A size option (`512`, `10G`) in bytes, if given.
    pub fn bytes(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(parse_bytes).transpose()
    }

    /// A boolean option: `true`/`1`/`yes` or `false`/`0`/`no` in any case; `default` when
    /// absent; anything else is refused naming the key.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(Error::invalid(format!("{key}={v:?} is not true or false"))),
        }
    }

    /// Refuses any key not in `known`, naming it and the keys that are accepted.
    pub fn check_known(&self, driver: &str, known: &[&str]) -> Result<()> {
        for key in self.0.keys() {
            if !known.contains(&key.as_str()) {
                return Err(Error::invalid(format!(
                    "storage option {key:?} is not supported by {driver} (supported: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }
}

/// Parses a size such as `512`, `10k`, `100MB`, `1.5G`, `2GiB` (powers of 1024, as Docker's
/// units.RAMInBytes).
pub fn parse_bytes(s: &str) -> Result<u64> {
    let bad = || Error::invalid(format!("{s:?} is not a size (examples: 512, 100m, 10G)"));
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(bad()),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("10k").unwrap(), 10 << 10);
        assert_eq!(parse_bytes("100MB").unwrap(), 100 << 20);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1.5g").unwrap(), 3 << 29);
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("10x").is_err());
    }

    #[test]
    fn options_parse_and_check() {
        let o = StorageOpts::parse(&["Size=1G"]).unwrap();
        assert_eq!(o.size().unwrap(), Some(1 << 30));
        assert!(o.check_known("vfs", &["size"]).is_ok());
        assert!(o.check_known("vfs", &[]).is_err());
        assert!(StorageOpts::parse(&["nonsense"]).is_err());
    }

    #[test]
    fn flags_parse_both_spellings_and_refuse_others() {
        let o = StorageOpts::parse(&["a=TRUE", "b=0", "c=yes", "d=maybe", "e=10k"]).unwrap();
        assert!(o.flag("a", false).unwrap());
        assert!(!o.flag("b", true).unwrap());
        assert!(o.flag("c", false).unwrap());
        assert!(o.flag("absent", true).unwrap());
        let err = o.flag("d", false).unwrap_err().to_string();
        assert!(err.contains("d=\"maybe\""), "{err}");
        assert_eq!(o.bytes("e").unwrap(), Some(10 << 10));
        assert_eq!(o.bytes("absent").unwrap(), None);
    }
}
