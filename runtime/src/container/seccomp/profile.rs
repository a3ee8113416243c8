//! Docker's seccomp profile format (moby `profiles/seccomp`), and its resolution for this host
//! and a container's capabilities into the plain rules `compile.rs` turns into BPF.

use serde::Deserialize;
use strata_core::{Error, Result};

use super::super::caps;

/// Docker's default profile (moby `profiles/seccomp/default.json`), in Docker's own format.
pub const DEFAULT_PROFILE: &str = include_str!("default.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<i32>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    pub syscalls: Option<Vec<SyscallRule>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default)]
    pub sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    /// The old single-name form; a rule has `name` or `names`, not both.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub names: Option<Vec<String>>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<i32>,
    #[serde(default)]
    pub args: Option<Vec<Arg>>,
    #[serde(default)]
    pub includes: Option<Condition>,
    #[serde(default)]
    pub excludes: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// When a rule applies (`includes`: all of these hold) or not (`excludes`: any holds).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Go's architecture names (`amd64`, `arm64`, ...).
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    /// `major.minor`: the host kernel must be at least this.
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// A profile reduced to what applies here: architectures and rules that hold.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub default_action: String,
    pub default_errno: i32,
    /// libseccomp names (`SCMP_ARCH_X86_64`); empty means the native one only.
    pub architectures: Vec<String>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: String,
    pub errno: Option<i32>,
    pub args: Vec<Arg>,
}

/// What the host is, in the two naming schemes profiles use.
#[derive(Debug, Clone)]
pub struct Host {
    /// Go's name (`amd64`), for `includes.arches`.
    pub go_arch: &'static str,
    /// libseccomp's name (`SCMP_ARCH_X86_64`), for `archMap`.
    pub seccomp_arch: &'static str,
    pub kernel: (u32, u32),
}

impl Host {
    pub fn detect() -> Host {
        let (go_arch, seccomp_arch) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
            "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
            "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
            "s390x" => ("s390x", "SCMP_ARCH_S390X"),
            "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
            "x86" => ("386", "SCMP_ARCH_X86"),
            "arm" => ("arm", "SCMP_ARCH_ARM"),
            other => (other, "SCMP_ARCH_NATIVE"),
        };
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Host {
            go_arch,
            seccomp_arch,
            kernel: parse_kernel(&release).unwrap_or((0, 0)),
        }
    }
}

fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl Profile {
    pub fn parse(json: &str) -> Result<Profile> {
        serde_json::from_str(json)
            .map_err(|e| Error::invalid(format!("invalid seccomp profile: {e}")))
    }

    /// The rules that apply on `host` to a container with capability set `caps`.
    pub fn resolve(&self, host: &Host, caps: u64) -> Result<Resolved> {
        if self.architectures.is_some() && self.arch_map.is_some() {
            return Err(Error::invalid(
                "invalid seccomp profile: use either 'architectures' or 'archMap'",
            ));
        }
        let mut architectures = self.architectures.clone().unwrap_or_default();
        for m in self.arch_map.iter().flatten() {
            if m.architecture == host.seccomp_arch {
                architectures.push(m.architecture.clone());
                architectures.extend(m.sub_architectures.iter().flatten().cloned());
            }
        }
        let cap_names: Vec<&str> = (0..64)
            .filter(|n| caps & (1u64 << n) != 0)
            .filter_map(caps::cap_name)
            .collect();
        let mut rules = Vec::new();
        for rule in self.syscalls.iter().flatten() {
            let names = match (&rule.name, &rule.names) {
                (Some(_), Some(names)) if !names.is_empty() => {
                    return Err(Error::invalid(
                        "invalid seccomp profile: use either 'name' or 'names'",
                    ))
                }
                (Some(name), _) => vec![name.clone()],
                (None, names) => names.clone().unwrap_or_default(),
            };
            let included = rule
                .includes
                .as_ref()
                .is_none_or(|c| c.all_hold(host, &cap_names));
            let excluded = rule
                .excludes
                .as_ref()
                .is_some_and(|c| c.any_holds(host, &cap_names));
            if included && !excluded && !names.is_empty() {
                rules.push(Rule {
                    names,
                    action: rule.action.clone(),
                    errno: rule.errno_ret,
                    args: rule.args.clone().unwrap_or_default(),
                });
            }
        }
        Ok(Resolved {
            default_action: self.default_action.clone(),
            default_errno: self.default_errno_ret.unwrap_or(libc::EPERM),
            architectures,
            rules,
        })
    }
}

impl Condition {
    fn all_hold(&self, host: &Host, caps: &[&str]) -> bool {
        let arch_ok = self
            .arches
            .as_ref()
            .is_none_or(|a| a.is_empty() || a.iter().any(|a| a == host.go_arch));
        let caps_ok = self
            .caps
            .iter()
            .flatten()
            .all(|c| caps.contains(&c.as_str()));
        let kernel_ok = self
            .min_kernel
            .as_deref()
            .and_then(parse_kernel)
            .is_none_or(|min| host.kernel >= min);
        arch_ok && caps_ok && kernel_ok
    }

    fn any_holds(&self, host: &Host, caps: &[&str]) -> bool {
        let arch = self.arches.iter().flatten().any(|a| a == host.go_arch);
        let cap = self
            .caps
            .iter()
            .flatten()
            .any(|c| caps.contains(&c.as_str()));
        let kernel = self
            .min_kernel
            .as_deref()
            .and_then(parse_kernel)
            .is_some_and(|min| host.kernel >= min);
        arch || cap || kernel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd64() -> Host {
        Host {
            go_arch: "amd64",
            seccomp_arch: "SCMP_ARCH_X86_64",
            kernel: (6, 1),
        }
    }

    fn allowed(r: &Resolved, name: &str) -> bool {
        r.rules.iter().any(|x| {
            x.action == "SCMP_ACT_ALLOW" && x.args.is_empty() && x.names.iter().any(|n| n == name)
        })
    }

    #[test]
    fn default_profile_depends_on_caps_and_arch() {
        let p = Profile::parse(DEFAULT_PROFILE).unwrap();
        let r = p.resolve(&amd64(), caps::default_mask()).unwrap();
        assert_eq!(r.default_action, "SCMP_ACT_ERRNO");
        assert_eq!(r.default_errno, libc::EPERM);
        assert_eq!(
            r.architectures,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        assert!(allowed(&r, "read") && allowed(&r, "arch_prctl") && allowed(&r, "chroot"));
        assert!(allowed(&r, "ptrace"), "minKernel 4.8 holds on 6.1");
        for blocked in ["unshare", "mount", "keyctl", "reboot", "s390_runtime_instr"] {
            assert!(!allowed(&r, blocked), "{blocked}");
        }
        // clone only without namespace flags, clone3 answers ENOSYS
        assert!(r
            .rules
            .iter()
            .any(|x| x.names == ["clone"] && x.args[0].op == "SCMP_CMP_MASKED_EQ"));
        assert!(r
            .rules
            .iter()
            .any(|x| x.names == ["clone3"] && x.errno == Some(libc::ENOSYS)));

        let sys_admin = caps::default_mask() | 1 << 21;
        let r = p.resolve(&amd64(), sys_admin).unwrap();
        assert!(allowed(&r, "unshare") && allowed(&r, "mount") && allowed(&r, "clone"));
        assert!(!r.rules.iter().any(|x| x.names == ["clone3"]));
        let no_chroot = caps::default_mask() & !(1 << 18);
        assert!(!allowed(&p.resolve(&amd64(), no_chroot).unwrap(), "chroot"));
    }

    #[test]
    fn name_and_names_together_are_refused() {
        let p = Profile::parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        assert!(p.resolve(&amd64(), 0).is_err());
        assert!(Profile::parse("{").is_err());
        assert!(
            Profile::parse(r#"{"syscalls":[]}"#).is_err(),
            "defaultAction is required"
        );
    }
}
