//! Capabilities: names, Docker's default set, `--cap-add`/`--cap-drop`/`--privileged` as moby's
//! `caps.TweakCapabilities` computes them (in the parent), and the raw syscalls that apply the
//! result (in the child, so no allocation there).

use strata_core::{Error, Result};

/// The 14 capabilities Docker keeps (moby `oci/caps/defaults.go`), by number.
pub(crate) const DOCKER_DEFAULT_CAPS: [(u32, &str); 14] = [
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// Every capability by number (`include/uapi/linux/capability.h`).
const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability named as Docker accepts it: any case, with or without `CAP_`.
pub(crate) fn cap_number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL_CAPS.iter().position(|c| *c == full).map(|n| n as u32)
}

/// The name of capability `n` (`CAP_SYS_ADMIN`), as seccomp profiles name them.
pub(crate) fn cap_name(n: u32) -> Option<&'static str> {
    ALL_CAPS.get(n as usize).copied()
}

/// Every capability this kernel has that the daemon holds itself (a privileged container
/// cannot get more: capset would refuse it). Docker asks for all and fails in a daemon
/// started with a reduced bounding set; this keeps such a daemon usable.
pub(crate) fn all_mask() -> u64 {
    let last = last_cap().min(63);
    let kernel = if last == 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    kernel & own_permitted().unwrap_or(kernel)
}

/// The calling process's permitted set (`CapPrm` in /proc/self/status).
fn own_permitted() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapPrm:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capability set of a container: everything with `privileged`; else moby's order: with
/// `ALL` in `add`, all but `drop`; with `ALL` in `drop`, only `add`; otherwise the defaults
/// minus `drop`, plus `add`. An unknown name is an error naming it (a 400 for the API).
pub(crate) fn tweak(add: &[String], drop: &[String], privileged: bool) -> Result<u64> {
    let parse = |names: &[String], field: &str| -> Result<(bool, u64)> {
        let mut all = false;
        let mut mask = 0u64;
        for name in names {
            if name.eq_ignore_ascii_case("ALL") {
                all = true;
                continue;
            }
            let n = cap_number(name).ok_or_else(|| {
                Error::invalid(format!("invalid {field}: unknown capability: {name:?}"))
            })?;
            mask |= 1u64 << n;
        }
        Ok((all, mask))
    };
    let (add_all, add) = parse(add, "CapAdd")?;
    let (drop_all, drop) = parse(drop, "CapDrop")?;
    Ok(if privileged {
        all_mask()
    } else if add_all {
        all_mask() & !drop
    } else if drop_all {
        add
    } else {
        (default_mask() & !drop) | add
    })
}

/// The default set as a bit mask (`CapBnd: 00000000a80425fb` in /proc/PID/status).
pub(crate) fn default_mask() -> u64 {
    DOCKER_DEFAULT_CAPS
        .iter()
        .fold(0, |m, (n, _)| m | (1u64 << n))
}

/// The highest capability number this kernel knows.
pub(crate) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

const PR_CAP_AMBIENT: libc::c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops every capability outside `keep` from the bounding set. Needs CAP_SETPCAP, so it runs
/// before the user switch.
pub(crate) fn drop_bounding(keep: u64, last_cap: u32) -> Result<(), i32> {
    for cap in 0..=last_cap.min(63) {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            let e = errno();
            // EINVAL: a capability this kernel does not have.
            if e != libc::EINVAL {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Sets effective = permitted = `keep`, inheritable empty (Docker since the 2022 inheritable
/// fix, CVE-2022-24769), and clears the ambient set.
pub(crate) fn set_process_caps(keep: u64) -> Result<(), i32> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: keep as u32,
            permitted: keep as u32,
            inheritable: 0,
        },
        CapData {
            effective: (keep >> 32) as u32,
            permitted: (keep >> 32) as u32,
            inheritable: 0,
        },
    ];
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if r < 0 {
        return Err(errno());
    }
    let r = unsafe { libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    if r < 0 && errno() != libc::EINVAL {
        return Err(errno());
    }
    Ok(())
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_matches_dockers_capbnd() {
        assert_eq!(default_mask(), 0xa804_25fb);
        for (n, name) in DOCKER_DEFAULT_CAPS {
            assert_eq!(cap_name(n), Some(name));
        }
    }

    #[test]
    fn names_are_case_insensitive_with_or_without_prefix() {
        assert_eq!(cap_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(cap_number("sys_admin"), Some(21));
        assert_eq!(cap_number("cap_net_admin"), Some(12));
        assert_eq!(cap_number("NOPE"), None);
    }

    #[test]
    fn tweak_follows_mobys_order_and_all_semantics() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(tweak(&[], &[], false).unwrap(), default_mask());
        assert_eq!(tweak(&[], &v(&["ALL"]), false).unwrap(), 0);
        assert_eq!(
            tweak(&v(&["net_admin"]), &v(&["all"]), false).unwrap(),
            1 << 12
        );
        assert_eq!(
            tweak(&v(&["ALL"]), &v(&["MKNOD"]), false).unwrap(),
            all_mask() & !(1 << 27)
        );
        // drop first, then add: adding back a dropped one keeps it
        assert_eq!(
            tweak(&v(&["CHOWN"]), &v(&["CHOWN", "KILL"]), false).unwrap(),
            default_mask() & !(1 << 5)
        );
        assert_eq!(tweak(&[], &v(&["ALL"]), true).unwrap(), all_mask());
        let err = tweak(&v(&["CAP_FOO"]), &[], false).unwrap_err();
        assert!(
            err.to_string().contains("unknown capability: \"CAP_FOO\""),
            "{err}"
        );
    }
}
