//! Device access rules (Docker's `--device`, `--device-cgroup-rule`, the default allowlist)
//! and the v1 devices controller that enforces them. A container with CAP_MKNOD can create
//! device nodes but only open the ones a rule allows (it cannot read the host's disks through
//! a `mknod`). cgroup v2 enforces the same rules with an eBPF program (`devices_ebpf.rs`).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use strata_core::{Error, Result};

use super::files;

/// Which device type a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    All,
    Char,
    Block,
}

/// Access bits of a rule, as the kernel's `DEVCG_ACC_*` (and the eBPF context) number them.
pub mod access {
    pub const MKNOD: u32 = 1;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 4;
    pub const ALL: u32 = MKNOD | READ | WRITE;
}

/// One allow rule: `c 1:3 rwm`, `b *:* m`, `a` (everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    /// `None` is `*`.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// [`access`] bits.
    pub access: u32,
}

impl DeviceRule {
    /// Every device, every access (`--privileged`).
    pub const ALLOW_ALL: DeviceRule = DeviceRule {
        kind: DeviceKind::All,
        major: None,
        minor: None,
        access: access::ALL,
    };

    pub const fn char(major: u32, minor: Option<u32>, access: u32) -> DeviceRule {
        DeviceRule {
            kind: DeviceKind::Char,
            major: Some(major),
            minor,
            access,
        }
    }
}

/// Docker's default rules (moby `oci/defaults.go` + `oci/devices_linux.go`).
pub fn default_rules() -> Vec<DeviceRule> {
    use access::{ALL, MKNOD};
    let mut rules = vec![
        DeviceRule {
            kind: DeviceKind::Char,
            major: None,
            minor: None,
            access: MKNOD,
        },
        DeviceRule {
            kind: DeviceKind::Block,
            major: None,
            minor: None,
            access: MKNOD,
        },
    ];
    for (major, minor) in [
        (1, Some(3)),    // null
        (1, Some(5)),    // zero
        (1, Some(7)),    // full
        (1, Some(8)),    // random
        (1, Some(9)),    // urandom
        (5, Some(0)),    // tty
        (5, Some(1)),    // console
        (5, Some(2)),    // ptmx
        (136, None),     // pts
        (10, Some(200)), // tun
    ] {
        rules.push(DeviceRule::char(major, minor, ALL));
    }
    rules
}

fn parse_number(s: &str, rule: &str) -> Result<Option<u32>> {
    if s == "*" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| Error::invalid(format!("invalid device cgroup rule {rule:?}")))
}

impl FromStr for DeviceRule {
    type Err = Error;

    /// Docker's `--device-cgroup-rule` syntax: `TYPE MAJOR:MINOR ACCESS`, or `a`.
    fn from_str(rule: &str) -> Result<DeviceRule> {
        let bad = || Error::invalid(format!("invalid device cgroup rule {rule:?}"));
        let mut parts = rule.split_whitespace();
        let kind = match parts.next() {
            Some("a") => DeviceKind::All,
            Some("c") => DeviceKind::Char,
            Some("b") => DeviceKind::Block,
            _ => return Err(bad()),
        };
        let (major, minor) = match parts.next() {
            None if kind == DeviceKind::All => return Ok(DeviceRule::ALLOW_ALL),
            None => return Err(bad()),
            Some(numbers) => {
                let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
                (parse_number(major, rule)?, parse_number(minor, rule)?)
            }
        };
        let access = parse_access(parts.next().ok_or_else(bad)?).ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(DeviceRule {
            kind,
            major,
            minor,
            access,
        })
    }
}

/// `rwm` letters to [`access`] bits; `None` for an empty or unknown letter.
pub fn parse_access(letters: &str) -> Option<u32> {
    let mut bits = 0;
    for c in letters.chars() {
        bits |= match c {
            'r' => access::READ,
            'w' => access::WRITE,
            'm' => access::MKNOD,
            _ => return None,
        };
    }
    (bits != 0).then_some(bits)
}

impl fmt::Display for DeviceRule {
    /// The v1 `devices.allow` syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        let mut acc = String::new();
        for (bit, c) in [
            (access::READ, 'r'),
            (access::WRITE, 'w'),
            (access::MKNOD, 'm'),
        ] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        write!(f, "{kind} {}:{} {acc}", num(self.major), num(self.minor))
    }
}

/// Denies everything, then allows `rules` (the v1 files append one rule per write).
pub(crate) fn apply_v1(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    files::write(dir, "devices.deny", "a")?;
    for rule in rules {
        files::write(dir, "devices.allow", &rule.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_deny_all_then_the_allowlist() {
        let d = tempfile::tempdir().unwrap();
        apply_v1(d.path(), &default_rules()).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("devices.deny")).unwrap(),
            "a"
        );
        // A plain file keeps only the last write; the real file appends each rule.
        assert_eq!(
            std::fs::read_to_string(d.path().join("devices.allow")).unwrap(),
            "c 10:200 rwm"
        );
    }

    #[test]
    fn rules_parse_and_print_in_dockers_syntax() {
        for text in ["c 1:3 rwm", "b *:* m", "c 136:* rw", "a *:* rwm"] {
            assert_eq!(text.parse::<DeviceRule>().unwrap().to_string(), text);
        }
        assert_eq!("a".parse::<DeviceRule>().unwrap(), DeviceRule::ALLOW_ALL);
        for bad in [
            "",
            "x 1:3 rwm",
            "c 1 rwm",
            "c 1:3",
            "c 1:3 rwx",
            "c a:3 r",
            "c 1:3 r x",
        ] {
            assert!(bad.parse::<DeviceRule>().is_err(), "{bad:?}");
        }
    }
}
