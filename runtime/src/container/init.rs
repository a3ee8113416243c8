//! `--init`: a tiny init (what tini/docker-init do), run in the container's PID 1 before the
//! command execs. It forks the command, forwards every signal it gets to it, reaps every
//! zombie of the namespace, and exits with the command's status (128+n for a signal).
//! Allocation-free like the rest of the child.

use std::sync::OnceLock;

use super::caps::errno;
use super::plan::{ChildError, Stage};

/// Where the daemon's command line lives in its memory (`arg_start`, `arg_end`): the init is
/// a copy of the daemon and would show that command line, host paths and flags, as
/// `/proc/1/cmdline` to the container. Read in the daemon, before the clone.
static ARGV_AREA: OnceLock<Option<(usize, usize)>> = OnceLock::new();

/// Reads the daemon's command-line area (fields 48 and 49 of `/proc/self/stat`); call before
/// the clone of a container with `init`, so the child finds it without allocating.
pub(crate) fn prepare() {
    ARGV_AREA.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields counted after the command name, which may hold spaces and parentheses.
        let mut after = stat[stat.rfind(')')? + 1..].split_whitespace();
        let start: usize = after.nth(45)?.parse().ok()?;
        let end: usize = after.next()?.parse().ok()?;
        (start < end).then_some((start, end))
    });
}

/// Overwrites the command line of this copy of the daemon with `init`.
fn hide_daemon_command_line() {
    const NAME: &[u8] = b"init";
    if let Some(Some((start, end))) = ARGV_AREA.get() {
        let len = end - start;
        // SAFETY: the argument strings the kernel placed on the daemon's initial stack, in
        // this process's own copy of it; nothing here reads them afterwards.
        unsafe {
            std::ptr::write_bytes(*start as *mut u8, 0, len);
            std::ptr::copy_nonoverlapping(
                NAME.as_ptr(),
                *start as *mut u8,
                NAME.len().min(len - 1),
            );
        }
    }
}

/// Forks. Returns `Ok` in the new process (which goes on to exec the command); the calling
/// process becomes the init and never returns.
pub(crate) fn become_init_and_fork(error_fd: i32, tty: bool) -> Result<(), ChildError> {
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // Blocked before the fork so no signal slips between fork and sigwaitinfo. Blocked
        // signals are queued even for a pid-namespace init, which drops unhandled ones.
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let pid = libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
        if pid < 0 {
            return Err(ChildError {
                stage: Stage::InitFork as u32,
                index: 0,
                errno: errno(),
            });
        }
        if pid == 0 {
            // The command gets its own process group, in the foreground of the tty, so ^C
            // reaches it once (from the tty), not twice (tty + forwarded).
            libc::setpgid(0, 0);
            if tty {
                let me = libc::getpid();
                libc::ioctl(0, libc::TIOCSPGRP, &me);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            return Ok(());
        }
        // Only the command reports exec errors; the parent must see EOF once it execs.
        libc::close(error_fd);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::prctl(
            libc::PR_SET_NAME,
            c"init".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        hide_daemon_command_line();
        supervise(pid as libc::pid_t, &all)
    }
}

fn supervise(child: libc::pid_t, all: &libc::sigset_t) -> ! {
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let sig = unsafe { libc::sigwaitinfo(all, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            unsafe { libc::kill(child, sig) };
            continue;
        }
        loop {
            let mut status = 0;
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                unsafe { libc::_exit(code) };
            }
        }
    }
}
