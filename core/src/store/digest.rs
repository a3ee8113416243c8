//! Content digests (`sha256:<64 hex>`) and Docker's chain ids.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated `sha256:<64 lowercase hex>` digest: an image id, a diffID or a chainID.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<hex>`; a bare 64-hex string is accepted as sha256 too (Docker's short
    /// form in `repositories` and on the command line).
    pub fn parse(s: &str) -> Result<Self> {
        let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::invalid(format!(
                "{s:?} is not a sha256 digest (expected sha256:<64 lowercase hex digits>)"
            )));
        }
        Ok(Self(format!("sha256:{hex_part}")))
    }

    /// The digest of a finished hasher.
    pub fn from_hasher(h: Sha256) -> Self {
        Self(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// The digest of some bytes.
    pub fn of_bytes(data: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(data);
        Self::from_hasher(h)
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits alone (file names on disk).
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The first 12 hex digits, as Docker prints ids.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Docker's chain id: the first layer's is its diffID; each next one is
/// `sha256("<parent chainID> <diffID>")`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of_bytes(format!("{p} {diff_id}").as_bytes()),
    }
}

/// The chain ids of a whole stack of diffIDs, base first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = chain_id(out.last(), d);
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_match_docker() {
        // From the overlay2 layerdb of `three` (dockerd-20.10-observed.md, 3.7).
        let diffs: Vec<Digest> = [
            "sha256:038699455e59225d04c144ad4de5beff6e7e7fff2f5dec79b2ac674208ae5c0d",
            "sha256:a6a796a89c11e25d89701c066584973d1db3dfacd422b595cac15768289d9bec",
            "sha256:86e9e2558e9bd7ec86d6e7b8d60c10f04cf38de587625d494322b961f2675fb1",
            "sha256:1d1242e22ab262f85fd3bf79b25080cfba73545af166edb8ca038113dc42131b",
        ]
        .iter()
        .map(|s| Digest::parse(s).unwrap())
        .collect();
        let chains = chain_ids(&diffs);
        assert_eq!(chains[0], diffs[0]);
        assert_eq!(
            chains[1].hex(),
            "da871b2300ebcc8c7464d0f9080c97e29beabc3c07aeb1a3e02408352d7476f1"
        );
        assert_eq!(
            chains[2].hex(),
            "ac2eb654d3eebce2e78c27ad0dbd5cc6552cdc91b901c8e06b7b5a67c7a9186d"
        );
        assert_eq!(
            chains[3].hex(),
            "ff1f6ffe909b26acc7c2d5f922ff815042a970becd98d5dc5b1c14d32d67635c"
        );
    }

    #[test]
    fn parse_refuses_garbage() {
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("md5:{}", "a".repeat(64))).is_err());
        let d = Digest::parse(&"a".repeat(64)).unwrap();
        assert_eq!(d.as_str(), format!("sha256:{}", "a".repeat(64)));
    }
}
