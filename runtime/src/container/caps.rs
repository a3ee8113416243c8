//! Docker's default capability set and the raw syscalls that apply it (used in the child, so
//! no allocation here).

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
    }
}
