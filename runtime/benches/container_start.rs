//! Container start-to-exit latency: `spawn` + `wait` of busybox `true` in a fresh container
//! (namespaces, pivot_root, /proc /dev /sys, cgroup create and remove, json log), against a
//! plain fork+exec of the same binary measured in the same run. Needs root.
//!
//! `cargo bench -p strata-runtime --bench container_start`

use std::time::{Duration, Instant};

use strata_runtime::container::{self, ContainerSpec};

const ROUNDS: usize = 30;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "the bench needs root");
    let tmp = tempfile::Builder::new()
        .prefix("strata-bench-")
        .tempdir()
        .unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let ok = std::process::Command::new("tar")
        .args(["-xf", "/work/shared/fixtures/bb-rootfs.tar", "-C"])
        .arg(&rootfs)
        .status()
        .unwrap()
        .success();
    assert!(ok, "extracting the busybox rootfs failed");
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut host = Vec::new();
    let mut containers = Vec::new();
    let mut spawns = Vec::new();
    for round in 0..ROUNDS {
        // Interleaved, so both see the same machine load.
        let t = Instant::now();
        let status = std::process::Command::new(rootfs.join("bin/true"))
            .status()
            .unwrap();
        assert!(status.success());
        host.push(t.elapsed());

        let id = format!("bench{}x{round}", std::process::id());
        let mut spec = ContainerSpec::new(
            id.clone(),
            rootfs.clone(),
            tmp.path().join(&id),
            vec!["true".into()],
        );
        spec.cgroup_parent = "strata-bench".into();
        let t = Instant::now();
        let code = rt.block_on(async {
            let (tx, _) = container::output_channel();
            let c = container::spawn(spec, tx).await.unwrap();
            spawns.push(t.elapsed());
            c.wait().await.code
        });
        containers.push(t.elapsed());
        assert_eq!(code, 0);
    }
    let (h, c) = (median(host), median(containers));
    println!("fork+exec of busybox true (reference): median {h:?}");
    println!("container spawn+wait of busybox true:  median {c:?}");
    println!("  of which spawn (until exec): median {:?}", median(spawns));
    println!(
        "ratio container / reference: {:.1}",
        c.as_secs_f64() / h.as_secs_f64()
    );
}
