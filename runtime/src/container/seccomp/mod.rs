//! Seccomp: Docker's default profile or one the client sends (`--security-opt seccomp=`), turned
//! into a BPF program before the clone ([`program`]) and installed by the child ([`install`]).

mod compile;
mod profile;

pub use profile::{Profile, DEFAULT_PROFILE};

use strata_core::Result;

/// Which filter a container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SeccompMode {
    /// Docker's default profile.
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`, and `--privileged`).
    Unconfined,
    /// A profile in Docker's JSON format, as the CLI sends the file's content.
    Profile(String),
}

/// The program for a container with capability set `caps`; `None` when unconfined.
pub(crate) fn program(mode: &SeccompMode, caps: u64) -> Result<Option<Vec<libc::sock_filter>>> {
    let profile = match mode {
        SeccompMode::Unconfined => return Ok(None),
        SeccompMode::Default => Profile::parse(DEFAULT_PROFILE)?,
        SeccompMode::Profile(json) => Profile::parse(json)?,
    };
    let resolved = profile.resolve(&profile::Host::detect(), caps)?;
    compile::compile(&resolved).map(Some)
}

/// Checks that a client's profile parses and applies here (cheap: no BPF is built).
pub fn validate(mode: &SeccompMode) -> Result<()> {
    if let SeccompMode::Profile(json) = mode {
        Profile::parse(json)?.resolve(&profile::Host::detect(), super::caps::default_mask())?;
    }
    Ok(())
}

/// Builds a client's profile once to find what only libseccomp refuses (unknown actions or
/// operators), so a create request gets its 400 then rather than a failed start.
pub fn check_builds(mode: &SeccompMode) -> Result<()> {
    match mode {
        SeccompMode::Profile(_) => program(mode, super::caps::default_mask()).map(drop),
        _ => Ok(()),
    }
}

/// Installs the filter in the calling process (the child: raw syscall, no allocation). Needs
/// no_new_privs or CAP_SYS_ADMIN.
pub(crate) fn install(filter: &[libc::sock_filter]) -> std::result::Result<(), i32> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        Err(super::caps::errno())
    } else {
        Ok(())
    }
}
