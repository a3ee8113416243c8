//! Interoperability: Docker-written fixtures and GNU tar, both directions.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::*;

const FIXTURES: &str = "/work/shared/fixtures";

#[test]
fn busybox_rootfs_fixture_applies_and_rediffs_to_the_same_tree() {
    let fixture = Path::new(FIXTURES).join("bb-rootfs.tar");
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut f = std::fs::File::open(&fixture).expect("fixture bb-rootfs.tar");
    let stats = apply_layer(&a, &mut f, &opts(WhiteoutMode::Delete)).unwrap();
    assert_eq!(stats.diff_id, sha(&std::fs::read(&fixture).unwrap()));
    assert!(std::fs::symlink_metadata(a.join("bin/busybox"))
        .unwrap()
        .is_file());
    let tar = diff_bytes(&a, &naive_changes(&a, None).unwrap(), None);
    apply_bytes(&b, &tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(snapshot(&a), snapshot(&b));
}

/// The layers of a `docker save` archive, in manifest order, with the config's diffIDs.
fn saved_layers(archive: &Path) -> Vec<(Vec<u8>, String)> {
    let mut files = std::collections::HashMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(name, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config_name = manifest[0]["Config"].as_str().unwrap();
    let config: serde_json::Value = serde_json::from_slice(&files[config_name]).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    layers
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| {
            (
                files[l.as_str().unwrap()].clone(),
                d.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn docker_saved_image_layers_apply_with_their_diff_ids() {
    let layers = saved_layers(&Path::new(FIXTURES).join("three.tar"));
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    for (tar, diff_id) in &layers {
        let stats = apply_bytes(&root, tar, WhiteoutMode::Delete).unwrap();
        assert_eq!(&stats.diff_id, diff_id);
        assert_eq!(stats.tar_bytes, tar.len() as u64);
    }
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("data/keep.txt").trim_end(), "layer1 keep");
    assert_eq!(read("data/hello.txt").trim_end(), "hello from COPY layer");
    assert_eq!(read("data/layer3.txt").trim_end(), "layer3");
    assert!(!root.join("data/gone.txt").exists());
    assert!(!root.join("data/sub").exists());

    // The last layer into an empty overlay upper: its whiteouts become 0/0 char devices.
    let upper = t.path().join("upper");
    std::fs::create_dir_all(&upper).unwrap();
    let (last, _) = layers.last().unwrap();
    apply_bytes(&upper, last, WhiteoutMode::OverlayMarkers).unwrap();
    for gone in ["data/gone.txt", "data/sub"] {
        let m = std::fs::symlink_metadata(upper.join(gone)).unwrap();
        assert_eq!(
            (m.mode() & libc::S_IFMT, m.rdev()),
            (libc::S_IFCHR, 0),
            "{gone}"
        );
    }
}

fn gnu_tar(args: &[&str], dir: &Path, input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU tar must be installed for the interoperability tests");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.map(|d| d.to_vec());
    let writer = std::thread::spawn(move || {
        if let Some(d) = data {
            std::io::Write::write_all(&mut stdin, &d).unwrap();
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

const GNU_XATTRS: &[&str] = &["--xattrs", "--xattrs-include=*", "--numeric-owner"];

#[test]
fn gnu_tar_extracts_our_tars_to_the_same_tree() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    build_shallow_rich_tree(&src);
    let tar = diff_bytes(&src, &naive_changes(&src, None).unwrap(), None);
    let mut args = vec!["-xpf", "-"];
    args.extend_from_slice(GNU_XATTRS);
    gnu_tar(&args, &dst, Some(&tar));
    assert_trees_equal(&src, &dst);
}

#[test]
fn we_apply_what_gnu_tar_writes() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    build_rich_tree(&src);
    let mut args = vec!["--format=posix", "-cf", "-"];
    args.extend_from_slice(GNU_XATTRS);
    args.push(".");
    let tar = gnu_tar(&args, &src, None);
    let stats = apply_bytes(&dst, &tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(stats.diff_id, sha(&tar));
    assert_trees_equal(&src, &dst);
    // GNU's old format (long names as ././@LongLink entries) too.
    let gnu_dst = t.path().join("gnu");
    std::fs::create_dir_all(&gnu_dst).unwrap();
    let tar = gnu_tar(&["--format=gnu", "-cf", "-", "."], &src, None);
    apply_bytes(&gnu_dst, &tar, WhiteoutMode::Delete).unwrap();
    let deep = snapshot(&src).keys().filter(|k| k.len() > 4096).count();
    assert_eq!(
        deep,
        snapshot(&gnu_dst).keys().filter(|k| k.len() > 4096).count()
    );
    assert!(deep > 0);
}

fn assert_trees_equal(a: &Path, b: &Path) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    for (k, v) in &sa {
        assert_eq!(Some(v), sb.get(k), "{}", String::from_utf8_lossy(k));
    }
    assert_eq!(sa.len(), sb.len());
}
