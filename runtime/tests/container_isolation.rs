//! Namespaces, filesystem view, user, capabilities, environment (needs root).

mod common;

use common::{run, Sandbox};
use strata_runtime::container::Network;

#[tokio::test]
async fn runs_as_pid_1_alone_with_its_own_hostname_and_only_loopback() {
    let sb = Sandbox::new();
    let mut spec = sb.sh(
        "echo pid=$$; hostname; cat /etc/hostname; ps -o pid,comm; \
         echo nets=$(ls /sys/class/net); cat /sys/class/net/lo/flags; grep -c localhost /etc/hosts",
    );
    spec.hostname = "boxed".into();
    let (status, out, err) = run(&sb, spec).await;
    assert_eq!(status.code, 0, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "boxed");
    assert_eq!(lines[2], "boxed");
    // ps: a header, then only sh (pid 1) and ps itself.
    let ps: Vec<&str> = lines[3..]
        .iter()
        .take_while(|l| !l.starts_with("nets="))
        .copied()
        .collect();
    assert_eq!(
        ps[0].split_whitespace().collect::<Vec<_>>(),
        ["PID", "COMMAND"]
    );
    let procs: Vec<Vec<&str>> = ps[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(procs.len(), 2, "processes seen: {ps:?}");
    assert_eq!(procs[0], ["1", "sh"]);
    assert_eq!(procs[1][1], "ps");
    assert!(out.contains("nets=lo\n"), "{out}");
    // IFF_UP | IFF_LOOPBACK | IFF_RUNNING
    assert!(
        out.contains("0x49\n") || out.contains("0x9\n"),
        "lo is not up: {out}"
    );
    assert!(sb.cgroup_removed());
}

#[tokio::test]
async fn host_network_sees_the_host_interfaces() {
    let sb = Sandbox::new();
    let mut spec = sb.sh("ls /sys/class/net");
    spec.network = Network::Host;
    let (status, out, _) = run(&sb, spec).await;
    assert_eq!(status.code, 0);
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(host.len() > 1, "the host has only {host:?}");
    for name in host {
        assert!(
            out.split_whitespace().any(|n| n == name),
            "{name} missing in {out}"
        );
    }
}

#[tokio::test]
async fn dockers_capabilities_no_new_privs_masked_and_read_only_paths() {
    // Masked paths that exist on this host (others, like /proc/kcore, depend on the kernel).
    for host_path in ["/proc/keys", "/proc/timer_list", "/sys/firmware"] {
        assert!(
            std::path::Path::new(host_path).exists(),
            "{host_path} is missing on this host"
        );
    }
    assert!(std::fs::read_dir("/sys/firmware").unwrap().count() > 0);
    let sb = Sandbox::new();
    let spec = sb.sh(
        "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status; \
         echo keys=$(wc -c < /proc/keys) timer_list=$(wc -c < /proc/timer_list); \
         echo firmware=$(ls /sys/firmware | wc -l); \
         echo x > /proc/sys/kernel/domainname || echo procsys-ro; \
         touch /sys/x 2>&1 || echo sys-ro; \
         ls /dev; readlink /dev/ptmx; grep -E ' /dev/(pts|shm|mqueue) ' /proc/mounts",
    );
    let (status, out, err) = run(&sb, spec).await;
    assert_eq!(status.code, 0, "{out}\n{err}");
    for line in [
        "CapInh:\t0000000000000000",
        "CapPrm:\t00000000a80425fb",
        "CapEff:\t00000000a80425fb",
        "CapBnd:\t00000000a80425fb",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "keys=0 timer_list=0",
        "firmware=0",
        "procsys-ro",
        "sys-ro",
        "pts/ptmx",
    ] {
        assert!(
            out.contains(line),
            "{line:?} missing in:\n{out}\nstderr:\n{err}"
        );
    }
    assert!(err.contains("Read-only file system"), "{err}");
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "fd",
    ] {
        assert!(
            out.lines().any(|l| l == dev),
            "/dev/{dev} missing in:\n{out}"
        );
    }
    assert!(out.contains("devpts /dev/pts devpts"), "{out}");
    assert!(out.contains("shm /dev/shm tmpfs"), "{out}");
}

#[tokio::test]
async fn user_environment_and_working_directory() {
    let sb = Sandbox::new();
    let mut spec =
        sb.sh("id; pwd; echo HOME=$HOME; echo PATH=$PATH; echo HOSTNAME=$HOSTNAME; echo FOO=$FOO");
    spec.user = "nobody".into();
    spec.cwd = "/work/sub".into();
    spec.env = vec!["FOO=bar".into()];
    spec.hostname = "h1".into();
    let (status, out, err) = run(&sb, spec).await;
    assert_eq!(status.code, 0, "{out}\n{err}");
    assert!(
        out.contains("uid=65534(nobody) gid=65534(nogroup)"),
        "{out}"
    );
    assert!(out.contains("/work/sub\n"), "{out}");
    assert!(out.contains("HOME=/nonexistent\n"));
    assert!(out.contains(&format!(
        "PATH={}\n",
        strata_runtime::container::DEFAULT_PATH
    )));
    assert!(out.contains("HOSTNAME=h1\n"));
    assert!(out.contains("FOO=bar\n"));
    assert!(sb.rootfs.join("work/sub").is_dir());

    let sb = Sandbox::new();
    let mut spec = sb.sh("id -u; id -g; id -G; grep CapEff /proc/self/status");
    spec.user = "1234:5678".into();
    let (status, out, _) = run(&sb, spec).await;
    assert_eq!(status.code, 0);
    assert_eq!(out, "1234\n5678\n5678\nCapEff:\t0000000000000000\n");
}

#[tokio::test]
async fn read_only_rootfs_refuses_writes_but_etc_files_and_dev_work() {
    let sb = Sandbox::new();
    let mut spec = sb.sh("touch /newfile || echo root-ro; echo ok > /dev/shm/f && cat /dev/shm/f");
    spec.read_only_rootfs = true;
    let (status, out, err) = run(&sb, spec).await;
    assert_eq!(status.code, 0, "{out}\n{err}");
    assert!(out.contains("root-ro\n"), "{out}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(out.contains("ok\n"));
    assert!(!sb.rootfs.join("newfile").exists());
}

#[tokio::test]
async fn device_nodes_can_be_made_but_host_disks_not_opened() {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let sb = Sandbox::new();
    let spec = sb.sh(&format!(
        "mknod /root/disk b {major} {minor} && echo made; head -c 1 /root/disk > /dev/null || echo disk-denied; \
         mknod /root/nul c 1 3 && echo x > /root/nul && echo null-ok"
    ));
    let (status, out, err) = run(&sb, spec).await;
    assert_eq!(status.code, 0, "{out}\n{err}");
    // The v1 devices controller and, on v2, the eBPF device program enforce the same list.
    assert_eq!(out, "made\ndisk-denied\nnull-ok\n", "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
}
