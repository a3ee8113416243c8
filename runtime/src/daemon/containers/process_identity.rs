//! Who a recorded pid was. A pid alone names whatever process has it now: after a reboot, or
//! once the container's process is gone and the number reused, signalling it would hit an
//! unrelated process. The record keeps the boot's id and the process's start time (clock ticks
//! since boot, `/proc/PID/stat` field 22) beside the pid, and a daemon recovering after a
//! crash signals only a process that still matches both.

use serde::{Deserialize, Serialize};

/// The identity of a container's main process, as recorded when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: i32,
    /// `/proc/sys/kernel/random/boot_id` when the process started.
    pub boot_id: String,
    /// The process's start time in clock ticks since that boot.
    pub start_ticks: u64,
}

impl ProcessIdentity {
    /// The identity of the live process `pid`, or None when it cannot be read (it is gone).
    pub fn of(pid: i32) -> Option<ProcessIdentity> {
        Some(ProcessIdentity {
            pid,
            boot_id: boot_id()?,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// The same process is still running: same boot, same pid, same start time.
    pub fn is_alive(&self) -> bool {
        self.pid > 1 && ProcessIdentity::of(self.pid).as_ref() == Some(self)
    }
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Field 22 of `/proc/PID/stat`; the command name (field 2) may hold spaces and parentheses,
/// so the fields are counted from the last `)`.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_matches_and_a_changed_start_time_does_not() {
        let me = ProcessIdentity::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let reused = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(!reused.is_alive(), "a pid reused by another process");
        let other_boot = ProcessIdentity {
            boot_id: "00000000-0000-0000-0000-000000000000".into(),
            ..me
        };
        assert!(!other_boot.is_alive(), "a pid recorded before a reboot");
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec -a 'x) (y z' sleep 5"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let id = ProcessIdentity::of(child.id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        assert!(id.is_some_and(|i| i.start_ticks > 0));
    }
}
