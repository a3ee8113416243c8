//! Validated names. Every id that becomes part of a path is checked here first, so no driver
//! ever builds a path from `..`, `/x`, an empty string or a NUL.

use std::fmt;

use crate::error::{Error, Result};

const MAX_NAME_BYTES: usize = 255;

/// Checks the rule shared by every id: 1..=255 bytes of `[A-Za-z0-9_.-]`, starting with an
/// alphanumeric (so never `.`, `..` or a hidden name), no `/`, no NUL.
fn check_component(kind: &str, s: &str, min_len: usize) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("{kind} {s:?} {why}")));
    if s.len() < min_len {
        return bad(&format!("is too short (at least {min_len} characters)"));
    }
    if s.len() > MAX_NAME_BYTES {
        return bad("is longer than 255 bytes");
    }
    let mut chars = s.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return bad("may only contain [a-zA-Z0-9_.-]");
    }
    Ok(())
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $min:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                check_component($kind, &s, $min)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<std::path::Path> for $name {
            fn as_ref(&self) -> &std::path::Path {
                std::path::Path::new(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }
    };
}

validated_name!(
    /// A layer's id inside a driver. The engine uses 64 hex digits, sometimes with `-init`;
    /// plugins and tests may use other safe names.
    LayerId,
    "layer id",
    1
);
validated_name!(
    /// A volume name, by Docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
    VolumeName,
    "volume name",
    2
);
validated_name!(
    /// Who mounts a volume (a container id); volume mounts are reference counted per caller.
    CallerId,
    "caller id",
    1
);

impl LayerId {
    /// A fresh random id of 64 hex digits, as the engine makes them.
    pub fn random() -> crate::error::Result<Self> {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes)?;
        Ok(Self(hex::encode(bytes)))
    }
}

/// Fills `buf` from the kernel's random source (the `getrandom` crate). A failing source is an
/// error for the caller, never retried without end.
pub fn fill_random(buf: &mut [u8]) -> crate::error::Result<()> {
    getrandom::getrandom(buf)
        .map_err(|e| crate::error::Error::Other(format!("the kernel's random source failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_names_that_could_escape() {
        for bad in [
            "", "..", ".", "../x", "a/b", "/abs", "a\0b", ".hidden", "-x",
        ] {
            assert!(LayerId::new(bad).is_err(), "{bad:?} accepted");
            assert!(CallerId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(LayerId::new("a".repeat(256)).is_err());
        assert!(LayerId::new("a".repeat(255)).is_ok());
        assert!(VolumeName::new("x").is_err(), "Docker needs two characters");
        assert!(VolumeName::new("my-vol_1.a").is_ok());
    }

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = LayerId::random().unwrap();
        let b = LayerId::random().unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert_ne!(a, b);
        assert!(LayerId::new(format!("{a}-init")).is_ok());
    }
}
