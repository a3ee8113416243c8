//! Bind, volume and tmpfs mounts; memory, cpu and pids limits through cgroups (needs root).

mod common;

use std::time::{Duration, Instant};

use common::{run, start, Sandbox};
use nix::sys::signal::Signal;
use strata_runtime::cgroups::{self, CpuLimits, MemoryLimits};
use strata_runtime::container::MountSpec;

#[tokio::test]
async fn bind_mounts_rw_and_ro_volumes_and_tmpfs() {
    let sb = Sandbox::new();
    let rw = sb.tmp.path().join("rw");
    let ro = sb.tmp.path().join("ro");
    let vol = sb.tmp.path().join("vol/_data");
    for d in [&rw, &ro, &vol] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(ro.join("given"), "from host\n").unwrap();
    let single = sb.tmp.path().join("single.txt");
    std::fs::write(&single, "one file\n").unwrap();
    let mut spec = sb.sh("echo written > /mnt/rw/out; cat /mnt/ro/given; \
         touch /mnt/ro/nope || echo ro-refused; \
         echo v > /data/vol.txt; cat /etc/single.txt; \
         stat -c '%a' /scratch; echo t > /scratch/t && echo tmpfs-ok; \
         grep ' /scratch ' /proc/mounts");
    spec.mounts = vec![
        MountSpec::bind(&rw, "/mnt/rw", false),
        MountSpec::bind(&ro, "/mnt/ro", true),
        MountSpec::volume(&vol, "/data", false),
        MountSpec::bind(&single, "/etc/single.txt", true),
        MountSpec::tmpfs("/scratch", Some(2 << 20), Some(0o700)),
    ];
    let (status, out, err) = run(&sb, spec).await;
    assert_eq!(status.code, 0, "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(rw.join("out")).unwrap(),
        "written\n"
    );
    assert!(out.contains("from host\n"));
    assert!(out.contains("ro-refused\n"), "{out}");
    assert!(
        err.contains("Read-only file system"),
        "EROFS expected: {err}"
    );
    assert!(!ro.join("nope").exists());
    assert_eq!(std::fs::read_to_string(vol.join("vol.txt")).unwrap(), "v\n");
    assert!(out.contains("one file\n"));
    assert!(out.contains("700\n"), "{out}");
    assert!(out.contains("tmpfs-ok\n"));
    assert!(out.contains("size=2048k"), "{out}");
    assert!(out.contains("nosuid,nodev,noexec"), "{out}");
}

#[tokio::test]
async fn mount_targets_through_symlinks_stay_inside_the_rootfs() {
    let sb = Sandbox::new();
    let outside = sb.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // An image symlink pointing out of its root, by '..' and absolutely.
    std::os::unix::fs::symlink("../../../../../../../../outside", sb.rootfs.join("evil")).unwrap();
    std::os::unix::fs::symlink(&outside, sb.rootfs.join("evil-abs")).unwrap();
    let src = sb.tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut spec = sb.sh("ls -d /evil/m /evil-abs/m && echo inside");
    spec.mounts = vec![
        MountSpec::bind(&src, "/evil/m", false),
        MountSpec::bind(&src, "/evil-abs/m", false),
    ];
    let (status, out, err) = run(&sb, spec).await;
    assert_eq!(status.code, 0, "{out}\n{err}");
    assert!(out.contains("inside"));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a directory was made outside the rootfs"
    );
    assert!(sb.rootfs.join("outside/m").is_dir());
}

#[tokio::test]
async fn memory_hog_is_oom_killed_with_137() {
    let sb = Sandbox::new();
    let mut spec = sb.sh("tail /dev/zero");
    spec.resources.memory = MemoryLimits {
        memory: Some(32 << 20),
        memory_swap: Some(32 << 20),
    };
    let c = start(spec).await;
    let limit_file = match cgroups::cgroup_version() {
        cgroups::CgroupVersion::V1 => "memory.limit_in_bytes",
        cgroups::CgroupVersion::V2 => "memory.max",
    };
    let limit =
        std::fs::read_to_string(c.cgroup().dir("memory").unwrap().join(limit_file)).unwrap();
    assert_eq!(limit.trim(), (32 << 20).to_string());
    let status = tokio::time::timeout(Duration::from_secs(60), c.wait())
        .await
        .unwrap();
    assert_eq!(status.code, 137);
    assert!(status.oom_killed);
    assert!(sb.cgroup_removed());
}

#[tokio::test]
async fn half_a_cpu_gives_about_half_a_cpu() {
    let sb = Sandbox::new();
    let mut spec = sb.sh("while :; do :; done");
    spec.resources.cpu = CpuLimits::from_nano_cpus(500_000_000);
    let c = start(spec).await;
    // Two cores are shared with whatever else runs: a window where the spinner got less than
    // its quota says nothing about the limit, so up to five windows are measured. Every one
    // must stay under the limit, and at least one must show the spinner actually running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut shares = Vec::new();
    for _ in 0..5 {
        let (u0, t0) = (c.cgroup().cpu_usage().unwrap(), Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (u1, t1) = (c.cgroup().cpu_usage().unwrap(), Instant::now());
        shares.push((u1 - u0).as_secs_f64() / (t1 - t0).as_secs_f64());
        if shares.last().is_some_and(|s| *s >= 0.3) {
            break;
        }
    }
    c.kill(Signal::SIGKILL).unwrap();
    assert_eq!(c.wait().await.code, 137);
    assert!(
        shares.iter().all(|s| *s <= 0.7),
        "over the limit: {shares:.2?}"
    );
    assert!(
        shares.iter().any(|s| *s >= 0.3),
        "never near the limit: {shares:.2?}"
    );
}

#[tokio::test]
async fn fork_bomb_stops_at_the_pids_limit() {
    let sb = Sandbox::new();
    // The inner shell forks until the limit stops it (ash gives up at the first failed fork);
    // the outer one then fills the last slot with its own sleep.
    let mut spec = sb.sh(
        "sh -c 'i=0; while [ $i -lt 40 ]; do sleep 60 & i=$((i+1)); done'; sleep 60 & echo spawned; wait",
    );
    spec.resources.pids_limit = Some(10);
    let c = start(spec).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(sb.log_path()).unwrap_or_default();
        if log.contains("spawned") {
            break;
        }
        assert!(Instant::now() < deadline, "the loop never finished: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.cgroup().pids_current().unwrap(), 10);
    c.kill(Signal::SIGKILL).unwrap();
    c.wait().await;
    let (_, err) = common::logs(&sb.log_path()).await;
    assert!(
        err.contains("can't fork"),
        "forks beyond the limit should fail: {err}"
    );
    assert!(sb.cgroup_removed());
}
