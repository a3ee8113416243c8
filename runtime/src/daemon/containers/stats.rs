//! `docker stats`: samples of a running container's cgroup counters in Docker's `StatsJSON`
//! shape, one-shot or once a second. `networks` is left out: Strata containers have no
//! network of their own (none) or share the host's.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::record::ZERO_TIME;
use super::Container;
use crate::cgroups::stats::{self as cgstats, CgroupStats};

const INTERVAL: Duration = Duration::from_secs(1);

/// One reading: the cgroup's counters and the host's CPU time at the same moment.
#[derive(Debug, Clone)]
pub struct Sample {
    at: DateTime<Utc>,
    cgroup: CgroupStats,
    system_cpu: u64,
}

/// Reads the counters of a running container; None when it is not running.
pub fn sample(c: &Container) -> Option<Sample> {
    let running = c.running()?;
    let cgroup = match cgstats::read(running.cgroup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(container = %running.id(), "stats: {e}");
            return None;
        }
    };
    Some(Sample {
        at: Utc::now(),
        cgroup,
        system_cpu: cgstats::system_cpu_usage().unwrap_or(0),
    })
}

#[derive(Debug, Serialize, Default)]
pub struct StatsJson {
    read: String,
    preread: String,
    pids_stats: PidsStats,
    blkio_stats: BlkioStats,
    num_procs: u32,
    storage_stats: BTreeMap<String, u64>,
    cpu_stats: CpuStats,
    precpu_stats: CpuStats,
    memory_stats: MemoryStats,
    name: String,
    id: String,
}

#[derive(Debug, Serialize, Default)]
struct PidsStats {
    #[serde(skip_serializing_if = "is_zero")]
    current: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, Default)]
struct BlkioStats {
    io_service_bytes_recursive: Option<Vec<BlkioEntry>>,
    io_serviced_recursive: Option<Vec<BlkioEntry>>,
    io_queue_recursive: Option<Vec<BlkioEntry>>,
    io_service_time_recursive: Option<Vec<BlkioEntry>>,
    io_wait_time_recursive: Option<Vec<BlkioEntry>>,
    io_merged_recursive: Option<Vec<BlkioEntry>>,
    io_time_recursive: Option<Vec<BlkioEntry>>,
    sectors_recursive: Option<Vec<BlkioEntry>>,
}

#[derive(Debug, Serialize)]
struct BlkioEntry {
    major: u64,
    minor: u64,
    op: String,
    value: u64,
}

#[derive(Debug, Serialize, Default)]
struct CpuStats {
    cpu_usage: CpuUsage,
    #[serde(skip_serializing_if = "is_zero")]
    system_cpu_usage: u64,
    #[serde(skip_serializing_if = "is_zero32")]
    online_cpus: u32,
    throttling_data: Throttling,
}

#[derive(Debug, Serialize, Default)]
struct CpuUsage {
    total_usage: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu_usage: Vec<u64>,
    usage_in_kernelmode: u64,
    usage_in_usermode: u64,
}

#[derive(Debug, Serialize, Default)]
struct Throttling {
    periods: u64,
    throttled_periods: u64,
    throttled_time: u64,
}

#[derive(Debug, Serialize, Default)]
struct MemoryStats {
    #[serde(skip_serializing_if = "is_zero")]
    usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    max_usage: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    stats: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "is_zero")]
    limit: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

fn cpu_stats(s: &Sample) -> CpuStats {
    let g = &s.cgroup;
    CpuStats {
        cpu_usage: CpuUsage {
            total_usage: g.cpu_total,
            percpu_usage: g.cpu_per_cpu.clone(),
            usage_in_kernelmode: g.cpu_system,
            usage_in_usermode: g.cpu_user,
        },
        system_cpu_usage: s.system_cpu,
        online_cpus: cgstats::online_cpus(),
        throttling_data: Throttling {
            periods: g.throttle_periods,
            throttled_periods: g.throttled_periods,
            throttled_time: g.throttled_time,
        },
    }
}

fn time(s: Option<&Sample>) -> String {
    s.map(|s| s.at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| ZERO_TIME.into())
}

/// Docker's `StatsJSON` from the current sample and the one before (either may be missing:
/// a stopped container gives zeros).
pub fn render(c: &Container, cur: Option<&Sample>, pre: Option<&Sample>) -> StatsJson {
    let rec = c.snapshot();
    let mut out = StatsJson {
        read: time(cur),
        preread: time(pre),
        name: format!("/{}", rec.name),
        id: rec.id,
        precpu_stats: pre.map(cpu_stats).unwrap_or_default(),
        ..Default::default()
    };
    let Some(s) = cur else {
        return out;
    };
    let g = &s.cgroup;
    out.cpu_stats = cpu_stats(s);
    out.memory_stats = MemoryStats {
        usage: g.memory_usage,
        max_usage: g.memory_max_usage,
        stats: g.memory_stat.clone(),
        limit: g.memory_limit,
    };
    out.pids_stats = PidsStats {
        current: g.pids_current,
        limit: g.pids_limit,
    };
    if !g.io_service_bytes.is_empty() {
        out.blkio_stats.io_service_bytes_recursive = Some(
            g.io_service_bytes
                .iter()
                .map(|(major, minor, op, value)| BlkioEntry {
                    major: *major,
                    minor: *minor,
                    op: op.clone(),
                    value: *value,
                })
                .collect(),
        );
    }
    out
}

fn line(v: &StatsJson) -> io::Result<Bytes> {
    let mut b = serde_json::to_vec(v).map_err(io::Error::other)?;
    b.push(b'\n');
    Ok(Bytes::from(b))
}

/// The response body: one object (`stream` false; `one_shot` skips the second sample that
/// fills `precpu_stats`), or one a second until the container stops.
pub fn stats_stream(
    c: Arc<Container>,
    stream: bool,
    one_shot: bool,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    struct St {
        c: Arc<Container>,
        prev: Option<Sample>,
        first: bool,
    }
    let state = St {
        c,
        prev: None,
        first: true,
    };
    futures::stream::unfold(state, move |mut st| async move {
        if !st.first && !stream {
            return None;
        }
        if !st.first {
            tokio::time::sleep(INTERVAL).await;
            if !st.c.is_running() {
                return None;
            }
        } else if !stream && !one_shot && st.c.is_running() {
            st.prev = sample(&st.c);
            tokio::time::sleep(INTERVAL).await;
        }
        st.first = false;
        let cur = sample(&st.c);
        let body = line(&render(&st.c, cur.as_ref(), st.prev.as_ref()));
        st.prev = cur;
        Some((body, st))
    })
}
