//! Resource counters of a container's cgroup for `docker stats`, from v1 or v2 files. A
//! counter the kernel does not offer (v1 blkio is not a controller Strata joins; `memory.peak`
//! needs Linux 5.19) reads as zero or empty, as in Docker.

use std::collections::BTreeMap;
use std::path::Path;

use strata_core::{IoContext, Result};

use super::files;
use super::{Cgroup, CgroupVersion};

/// One sample of a cgroup's counters. CPU times are nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu_total: u64,
    pub cpu_per_cpu: Vec<u64>,
    pub cpu_user: u64,
    pub cpu_system: u64,
    pub throttle_periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
    pub memory_usage: u64,
    pub memory_max_usage: u64,
    /// The limit; the host's memory when unlimited (as Docker shows it).
    pub memory_limit: u64,
    /// `memory.stat`, every key as the kernel names it.
    pub memory_stat: BTreeMap<String, u64>,
    pub pids_current: u64,
    /// `pids.max`; None when unlimited.
    pub pids_limit: Option<u64>,
    /// (major, minor, "read"/"write", bytes).
    pub io_service_bytes: Vec<(u64, u64, String, u64)>,
}

/// Nanoseconds per USER_HZ tick (cpuacct.stat and /proc/stat count in ticks).
fn tick_ns() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / if hz > 0 { hz as u64 } else { 100 }
}

pub fn read(cg: &Cgroup) -> Result<CgroupStats> {
    let dir = |c: &str| {
        cg.dir(c)
            .ok_or_else(|| strata_core::Error::Other(format!("no {c} cgroup directory")))
    };
    let mut s = CgroupStats::default();
    match cg.version() {
        CgroupVersion::V1 => {
            read_cpu_v1(dir("cpuacct")?, dir("cpu")?, &mut s)?;
            read_memory_v1(dir("memory")?, &mut s)?;
        }
        CgroupVersion::V2 => {
            let d = dir("memory")?;
            read_cpu_v2(d, &mut s)?;
            read_memory_v2(d, &mut s)?;
            s.io_service_bytes = read_io_v2(d);
        }
    }
    let pids = dir("pids")?;
    s.pids_current = files::read_u64(pids, "pids.current").unwrap_or(0);
    s.pids_limit = files::read(pids, "pids.max")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    Ok(s)
}

fn read_cpu_v1(cpuacct: &Path, cpu: &Path, s: &mut CgroupStats) -> Result<()> {
    s.cpu_total = files::read_u64(cpuacct, "cpuacct.usage")?;
    s.cpu_per_cpu = files::read(cpuacct, "cpuacct.usage_percpu")?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let stat = files::read(cpuacct, "cpuacct.stat")?;
    s.cpu_user = files::keyed_value(&stat, "user").unwrap_or(0) * tick_ns();
    s.cpu_system = files::keyed_value(&stat, "system").unwrap_or(0) * tick_ns();
    if let Ok(t) = files::read(cpu, "cpu.stat") {
        s.throttle_periods = files::keyed_value(&t, "nr_periods").unwrap_or(0);
        s.throttled_periods = files::keyed_value(&t, "nr_throttled").unwrap_or(0);
        s.throttled_time = files::keyed_value(&t, "throttled_time").unwrap_or(0);
    }
    Ok(())
}

fn read_cpu_v2(dir: &Path, s: &mut CgroupStats) -> Result<()> {
    let t = files::read(dir, "cpu.stat")?;
    let us = |k: &str| files::keyed_value(&t, k).unwrap_or(0) * 1000;
    s.cpu_total = us("usage_usec");
    s.cpu_user = us("user_usec");
    s.cpu_system = us("system_usec");
    s.throttle_periods = files::keyed_value(&t, "nr_periods").unwrap_or(0);
    s.throttled_periods = files::keyed_value(&t, "nr_throttled").unwrap_or(0);
    s.throttled_time = us("throttled_usec");
    Ok(())
}

fn read_memory_v1(dir: &Path, s: &mut CgroupStats) -> Result<()> {
    s.memory_usage = files::read_u64(dir, "memory.usage_in_bytes")?;
    s.memory_max_usage = files::read_u64(dir, "memory.max_usage_in_bytes").unwrap_or(0);
    let limit = files::read_u64(dir, "memory.limit_in_bytes").unwrap_or(u64::MAX);
    s.memory_limit = limit.min(host_memory()?);
    s.memory_stat = keyed_map(&files::read(dir, "memory.stat")?);
    Ok(())
}

fn read_memory_v2(dir: &Path, s: &mut CgroupStats) -> Result<()> {
    s.memory_usage = files::read_u64(dir, "memory.current")?;
    s.memory_max_usage = files::read_u64(dir, "memory.peak").unwrap_or(0);
    let limit = files::read(dir, "memory.max")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(u64::MAX);
    s.memory_limit = limit.min(host_memory()?);
    s.memory_stat = keyed_map(&files::read(dir, "memory.stat")?);
    Ok(())
}

/// `io.stat` lines: `MAJ:MIN rbytes=N wbytes=N ...`.
fn read_io_v2(dir: &Path) -> Vec<(u64, u64, String, u64)> {
    let Ok(text) = files::read(dir, "io.stat") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((maj, min)) = fields.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(maj), Ok(min)) = (maj.parse(), min.parse()) else {
            continue;
        };
        for f in fields {
            let (op, n) = match f.split_once('=') {
                Some(("rbytes", n)) => ("read", n),
                Some(("wbytes", n)) => ("write", n),
                _ => continue,
            };
            out.push((maj, min, op.to_string(), n.parse().unwrap_or(0)));
        }
    }
    out
}

fn keyed_map(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn host_memory() -> Result<u64> {
    let path = Path::new("/proc/meminfo");
    let text = std::fs::read_to_string(path).ctx("read", path)?;
    Ok(files::keyed_value(&text.replace(':', ""), "MemTotal").unwrap_or(0) * 1024)
}

/// The host's total CPU time (all CPUs, all states) from /proc/stat, in nanoseconds: Docker's
/// `system_cpu_usage`, the denominator of the CLI's CPU percentage.
pub fn system_cpu_usage() -> Result<u64> {
    let path = Path::new("/proc/stat");
    let text = std::fs::read_to_string(path).ctx("read", path)?;
    Ok(parse_system_cpu(&text) * tick_ns())
}

fn parse_system_cpu(text: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(7) // user nice system idle iowait irq softirq, as Docker sums them
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// CPUs online (`online_cpus`).
pub fn online_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v1_and_v2_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, t: &str| std::fs::write(d.path().join(f), t).unwrap();
        w("cpuacct.usage", "3000\n");
        w("cpuacct.usage_percpu", "1000 2000 \n");
        w("cpuacct.stat", "user 2\nsystem 1\n");
        w("memory.usage_in_bytes", "4096\n");
        w("memory.limit_in_bytes", "8192\n");
        w("memory.stat", "cache 10\ntotal_inactive_file 5\n");
        w(
            "cpu.stat",
            "usage_usec 7\nuser_usec 4\nsystem_usec 3\nnr_periods 2\n",
        );
        w("memory.current", "100\n");
        w("memory.max", "max\n");
        w("io.stat", "8:0 rbytes=10 wbytes=20 rios=1\n");
        let mut s = CgroupStats::default();
        read_cpu_v1(d.path(), d.path(), &mut s).unwrap();
        read_memory_v1(d.path(), &mut s).unwrap();
        assert_eq!(s.cpu_total, 3000);
        assert_eq!(s.cpu_per_cpu, vec![1000, 2000]);
        assert_eq!(s.cpu_user, 2 * tick_ns());
        assert_eq!(s.memory_limit, 8192);
        assert_eq!(s.memory_stat["total_inactive_file"], 5);
        let mut s = CgroupStats::default();
        read_cpu_v2(d.path(), &mut s).unwrap();
        read_memory_v2(d.path(), &mut s).unwrap();
        assert_eq!(
            (s.cpu_total, s.cpu_user, s.throttle_periods),
            (7000, 4000, 2)
        );
        assert_eq!(s.memory_limit, host_memory().unwrap());
        assert_eq!(
            read_io_v2(d.path()),
            vec![(8, 0, "read".into(), 10), (8, 0, "write".into(), 20)]
        );
        assert_eq!(parse_system_cpu("cpu  1 2 3 4 5 6 7 8 9\ncpu0 1\n"), 28);
    }
}
