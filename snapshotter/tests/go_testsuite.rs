//! containerd's own snapshotter test suite (`snapshots/testsuite` of Debian's
//! golang-github-containerd-containerd-dev 1.6, built with Debian's golang-go in GOPATH mode)
//! against strata-snapshotter through containerd's `snapshots/proxy`, on each driver. The Go
//! harness is `tests/go-testsuite/strata_test.go`; it starts one snapshotter per case.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_conformance::env::Environment;

/// Builds the Go test binary for `tag` in its own GOPATH (tests run in parallel processes).
fn build_suite(tag: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("go-testsuite-{tag}"));
    let pkg = tmp.join("gopath/src/strata/suite");
    std::fs::create_dir_all(pkg.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&pkg);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-testsuite");
    std::os::unix::fs::symlink(&source, &pkg).unwrap();
    let binary = tmp.join("strata-suite.test");
    let out = Command::new("go")
        .args(["test", "-c", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&pkg)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:/usr/share/gocode", tmp.join("gopath").display()))
        .output()
        .expect("go is not installed: scripts/setup.sh installs golang-go and golang-github-containerd-containerd-dev");
    assert!(
        out.status.success(),
        "building the Go suite: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

fn suite(driver: &str) {
    let binary = build_suite(driver);
    // The suite makes each case's root under TMPDIR: on btrfs for the btrfs driver.
    let env = common::scratch(driver);
    let out = Command::new(&binary)
        .args(["-test.v", "-test.timeout", "20m"])
        .env(
            "STRATA_SNAPSHOTTER",
            env!("CARGO_BIN_EXE_strata-snapshotter"),
        )
        .env("STRATA_DRIVER", driver)
        .env("TMPDIR", env.root())
        .current_dir(env.scratch())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    let results: Vec<&str> = log
        .lines()
        .filter(|l| l.trim_start().starts_with("--- "))
        .collect();
    assert!(
        out.status.success(),
        "containerd's testsuite on {driver}:\n{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 21 cases; Rename is skipped by the suite itself on overlay kernels (its issues.go).
    let passed = results.iter().filter(|l| l.contains("--- PASS")).count();
    assert!(passed >= 20, "{results:#?}");
}

#[test]
fn containerd_testsuite_on_vfs() {
    suite("vfs");
}

#[test]
fn containerd_testsuite_on_overlay2() {
    suite("overlay2");
}

#[test]
fn containerd_testsuite_on_btrfs() {
    suite("btrfs");
}

#[test]
fn containerd_testsuite_on_fuse_overlay() {
    suite("fuse-overlay");
}
