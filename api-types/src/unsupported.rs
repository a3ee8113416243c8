//! The create fields Strata does not implement, refused by name (a 400) when a request sets
//! them to anything but their default. The stock docker CLI sends every field, mostly as
//! zero, empty, null or false, which is accepted.

use std::collections::BTreeMap;

use crate::create::{Config, HostConfig};
use crate::mount::Mount;

fn some_nonempty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

fn map_nonempty<K, V>(v: &Option<BTreeMap<K, V>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

/// The first field the request sets that Strata does not implement, by its API name.
pub fn unsupported_field(config: &Config, host: Option<&HostConfig>) -> Option<&'static str> {
    let in_config = [
        ("Domainname", !config.domainname.is_empty()),
        ("MacAddress", !config.mac_address.is_empty()),
        ("NetworkDisabled", config.network_disabled),
    ];
    let first = in_config.into_iter().find(|(_, set)| *set);
    let first = first.or_else(|| host.and_then(|h| host_fields(h).find(|(_, set)| *set)));
    first
        .map(|(name, _)| name)
        .or_else(|| host.and_then(|h| h.mounts.iter().flatten().find_map(mount_field)))
}

fn host_fields(h: &HostConfig) -> impl Iterator<Item = (&'static str, bool)> {
    [
        ("PortBindings", map_nonempty(&h.port_bindings)),
        ("PublishAllPorts", h.publish_all_ports),
        (
            "VolumeDriver",
            !matches!(h.volume_driver.as_str(), "" | "local"),
        ),
        ("VolumesFrom", some_nonempty(&h.volumes_from)),
        ("Links", some_nonempty(&h.links)),
        ("Dns", some_nonempty(&h.dns)),
        ("DnsOptions", some_nonempty(&h.dns_options)),
        ("DnsSearch", some_nonempty(&h.dns_search)),
        ("Annotations", map_nonempty(&h.annotations)),
        ("StorageOpt", map_nonempty(&h.storage_opt)),
        ("Sysctls", map_nonempty(&h.sysctls)),
        ("CgroupnsMode", !h.cgroupns_mode.is_empty()),
        (
            "IpcMode",
            !matches!(h.ipc_mode.as_str(), "" | "private" | "shareable"),
        ),
        ("Cgroup", !h.cgroup.is_empty()),
        ("PidMode", !h.pid_mode.is_empty()),
        ("UTSMode", !h.uts_mode.is_empty()),
        ("UsernsMode", !h.userns_mode.is_empty()),
        ("Runtime", !matches!(h.runtime.as_str(), "" | "runc")),
        ("Isolation", !matches!(h.isolation.as_str(), "" | "default")),
        ("OomScoreAdj", h.oom_score_adj != 0),
        ("OomKillDisable", h.oom_kill_disable == Some(true)),
        ("ShmSize", h.shm_size != 0),
        ("BlkioWeight", h.blkio_weight != 0),
        ("BlkioWeightDevice", some_nonempty(&h.blkio_weight_device)),
        (
            "BlkioDeviceReadBps",
            some_nonempty(&h.blkio_device_read_bps),
        ),
        (
            "BlkioDeviceWriteBps",
            some_nonempty(&h.blkio_device_write_bps),
        ),
        (
            "BlkioDeviceReadIOps",
            some_nonempty(&h.blkio_device_read_iops),
        ),
        (
            "BlkioDeviceWriteIOps",
            some_nonempty(&h.blkio_device_write_iops),
        ),
        ("CpuRealtimePeriod", h.cpu_realtime_period != 0),
        ("CpuRealtimeRuntime", h.cpu_realtime_runtime != 0),
        ("CpusetCpus", !h.cpuset_cpus.is_empty()),
        ("CpusetMems", !h.cpuset_mems.is_empty()),
        ("CpuCount", h.cpu_count != 0),
        ("CpuPercent", h.cpu_percent != 0),
        ("IOMaximumIOps", h.io_maximum_iops != 0),
        ("IOMaximumBandwidth", h.io_maximum_bandwidth != 0),
        ("DeviceRequests", some_nonempty(&h.device_requests)),
        ("KernelMemory", h.kernel_memory != 0),
        ("KernelMemoryTCP", h.kernel_memory_tcp != 0),
        ("MemoryReservation", h.memory_reservation != 0),
        (
            "MemorySwappiness",
            h.memory_swappiness.is_some_and(|s| s != -1),
        ),
        ("Ulimits", some_nonempty(&h.ulimits)),
        ("MaskedPaths", h.masked_paths.is_some()),
        ("ReadonlyPaths", h.readonly_paths.is_some()),
    ]
    .into_iter()
}

/// The `--mount` options Strata does not implement (`Consistency` is macOS-only: Docker on
/// Linux ignores it, and so do we).
fn mount_field(m: &Mount) -> Option<&'static str> {
    let bind = m.bind_options.clone().unwrap_or_default();
    let volume = m.volume_options.clone().unwrap_or_default();
    let tmpfs = m.tmpfs_options.clone().unwrap_or_default();
    [
        ("Mounts.BindOptions.NonRecursive", bind.non_recursive),
        (
            "Mounts.BindOptions.ReadOnlyNonRecursive",
            bind.read_only_non_recursive,
        ),
        (
            "Mounts.BindOptions.ReadOnlyForceRecursive",
            bind.read_only_force_recursive,
        ),
        ("Mounts.VolumeOptions.Labels", map_nonempty(&volume.labels)),
        ("Mounts.TmpfsOptions.Options", some_nonempty(&tmpfs.options)),
        ("Mounts.ImageOptions", m.image_options.is_some()),
        ("Mounts.ClusterOptions", m.cluster_options.is_some()),
    ]
    .into_iter()
    .find(|(_, set)| *set)
    .map(|(name, _)| name)
}
