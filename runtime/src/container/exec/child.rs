//! The exec helper between clone and exec: a copy of the multithreaded daemon, so raw
//! syscalls only on data the parent prepared (as `super::super::child`).
//!
//! Two processes, as runc's nsexec: the helper (cloned from the daemon, placed in the
//! container's cgroup by the parent before it goes on) joins the container's namespaces
//! through the container's pidfd; joining a pid namespace only moves the caller's *children*,
//! so it forks the real process with `CLONE_PARENT` (its parent is the daemon, which reaps
//! it), reports that pid and exits. The process then runs the same tail as a container's
//! PID 1 (`child::become_process`): terminal, stdio, seccomp, capabilities, user, cwd, exec.

use super::super::caps::errno;
use super::super::child;
use super::super::plan::{ChildError, Stage};
use super::ExecPlan;

/// Runs the helper; never returns.
pub(super) fn run_helper(plan: &ExecPlan) -> ! {
    let base = &plan.base;
    let code = match join_and_fork(plan) {
        Ok(pid) => {
            let bytes = pid.to_ne_bytes();
            let n = unsafe { libc::write(plan.pid_fd, bytes.as_ptr().cast(), bytes.len()) };
            if n == bytes.len() as isize {
                0
            } else {
                // The parent stops waiting on the pid pipe; the process is killed with the
                // container's cgroup at the latest.
                1
            }
        }
        Err(e) => {
            child::report(base.error_fd, e);
            1
        }
    };
    unsafe { libc::_exit(code) }
}

fn join_and_fork(plan: &ExecPlan) -> Result<i32, ChildError> {
    let base = &plan.base;
    // A copy of the daemon entering the container: not readable through /proc (the process
    // forked below inherits this until its exec).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    for fd in &base.close_fds {
        unsafe { libc::close(*fd) };
    }
    // The parent writes "go" once this process is in the container's cgroup, so the
    // process forked below starts there.
    child::wait_for_go(base.sync_fd)?;
    // One call joins them all, atomically, and the pidfd guarantees they are PID 1's.
    let r = unsafe { libc::setns(plan.container_pidfd, plan.ns_flags) };
    if r < 0 {
        return Err(fail(Stage::JoinNamespaces));
    }
    unsafe { libc::close(plan.container_pidfd) };
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: fork semantics (no new stack); the child only runs `exec_process`, which
    // ends in exec or _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        return Err(fail(Stage::Fork));
    }
    if pid == 0 {
        exec_process(plan);
    }
    Ok(pid as i32)
}

/// The exec'd process, inside the container's namespaces and cgroup.
fn exec_process(plan: &ExecPlan) -> ! {
    let base = &plan.base;
    unsafe { libc::close(plan.pid_fd) };
    let code = match child::become_process(base, false) {
        Ok(never) => match never {},
        Err(e) => {
            child::report(base.error_fd, e);
            if e.stage == Stage::Exec as u32 {
                child::exec_exit_code(e.errno)
            } else {
                1
            }
        }
    };
    unsafe { libc::_exit(code) }
}

fn fail(stage: Stage) -> ChildError {
    ChildError {
        stage: stage as u32,
        index: 0,
        errno: errno(),
    }
}
