//! The cpu controller: `--cpus` as a CFS quota, `--cpu-shares` as a weight; and the cpu time
//! a cgroup has used (v1 `cpuacct`, v2 `cpu.stat`).

use std::path::Path;
use std::time::Duration;

use strata_core::{Error, Result};

use super::files;
use super::CgroupVersion;

/// Docker's CFS period for `--cpus`: 100 ms.
pub const DEFAULT_PERIOD_US: u64 = 100_000;

/// `--cpus`, `--cpu-quota`/`--cpu-period` and `--cpu-shares`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuLimits {
    /// Microseconds of CPU time per period; `None` for no quota.
    pub quota_us: Option<i64>,
    /// The CFS period in microseconds; `None` for the default 100 ms.
    pub period_us: Option<u64>,
    /// Relative weight (v1 shares, 2..=262144, 1024 is the default).
    pub shares: Option<u64>,
}

impl CpuLimits {
    /// `--cpus` (Docker's NanoCpus, 1e-9 CPUs) as a quota over a 100 ms period.
    pub fn from_nano_cpus(nano_cpus: i64) -> CpuLimits {
        CpuLimits {
            quota_us: Some(nano_cpus.saturating_mul(DEFAULT_PERIOD_US as i64) / 1_000_000_000),
            period_us: Some(DEFAULT_PERIOD_US),
            shares: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(q) = self.quota_us {
            if q > 0 && q < 1000 {
                return Err(Error::invalid(
                    "CPU cfs quota cannot be less than 1ms (i.e. 1000); raise --cpus or --cpu-quota",
                ));
            }
        }
        if let Some(p) = self.period_us {
            if !(1000..=1_000_000).contains(&p) {
                return Err(Error::invalid(
                    "CPU cfs period must be between 1ms and 1s (1000..=1000000)",
                ));
            }
        }
        Ok(())
    }
}

/// v1 shares (2..=262144) mapped onto v2 weight (1..=10000), as runc and crun do.
fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

pub(crate) fn apply(version: CgroupVersion, dir: &Path, limits: &CpuLimits) -> Result<()> {
    let period = limits.period_us.unwrap_or(DEFAULT_PERIOD_US);
    let quota = limits.quota_us.filter(|q| *q > 0);
    match version {
        CgroupVersion::V1 => {
            if let Some(shares) = limits.shares {
                files::write(dir, "cpu.shares", &shares.to_string())?;
            }
            if let Some(quota) = quota {
                files::write(dir, "cpu.cfs_period_us", &period.to_string())?;
                files::write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        CgroupVersion::V2 => {
            if let Some(shares) = limits.shares {
                files::write(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
            }
            if let Some(quota) = quota {
                files::write(dir, "cpu.max", &format!("{quota} {period}"))?;
            }
        }
    }
    Ok(())
}

/// Total cpu time used by the cgroup's processes. On v1 `dir` is the cpuacct directory.
pub(crate) fn usage(version: CgroupVersion, dir: &Path) -> Result<Duration> {
    match version {
        CgroupVersion::V1 => Ok(Duration::from_nanos(files::read_u64(dir, "cpuacct.usage")?)),
        CgroupVersion::V2 => {
            let text = files::read(dir, "cpu.stat")?;
            let usec = files::keyed_value(&text, "usage_usec").ok_or_else(|| {
                Error::Other(format!("{}: no usage_usec", dir.join("cpu.stat").display()))
            })?;
            Ok(Duration::from_micros(usec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_cpu_is_50ms_per_100ms() {
        let l = CpuLimits::from_nano_cpus(500_000_000);
        assert_eq!(l.quota_us, Some(50_000));
        assert_eq!(l.period_us, Some(100_000));
        assert!(l.validate().is_ok());
        assert!(CpuLimits::from_nano_cpus(1_000_000).validate().is_err());
    }

    #[test]
    fn v1_and_v2_files() {
        let l = CpuLimits {
            shares: Some(512),
            ..CpuLimits::from_nano_cpus(1_500_000_000)
        };
        let v1 = tempfile::tempdir().unwrap();
        apply(CgroupVersion::V1, v1.path(), &l).unwrap();
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read(v1.path(), "cpu.cfs_quota_us"), "150000");
        assert_eq!(read(v1.path(), "cpu.cfs_period_us"), "100000");
        assert_eq!(read(v1.path(), "cpu.shares"), "512");
        let v2 = tempfile::tempdir().unwrap();
        apply(CgroupVersion::V2, v2.path(), &l).unwrap();
        assert_eq!(read(v2.path(), "cpu.max"), "150000 100000");
        assert_eq!(read(v2.path(), "cpu.weight"), "20");
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn usage_reads_nanoseconds_or_microseconds() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cpuacct.usage"), "2500000000\n").unwrap();
        std::fs::write(
            d.path().join("cpu.stat"),
            "usage_usec 1500000\nuser_usec 1000000\n",
        )
        .unwrap();
        assert_eq!(
            usage(CgroupVersion::V1, d.path()).unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(
            usage(CgroupVersion::V2, d.path()).unwrap(),
            Duration::from_millis(1500)
        );
    }
}
