//! `load` and `save` of a 100 MiB single-layer image on vfs and overlay2, against GNU tar
//! extracting (and creating) the same layer on the same filesystem, measured in the same run
//! and interleaved. Also a second load of the same archive (layers present: nothing applied).
//! Needs root (overlay2).
//!
//! `cargo bench -p strata-runtime --bench image_load`

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_core::registry::{DriverConfig, DriverInit};
use strata_core::store::{Digest, ImageStore, LayerStore};
use strata_core::stream::from_bytes;
use strata_core::StorageOpts;
use strata_runtime::image::{self, LoadOptions};
use tokio::io::AsyncReadExt;

const ROUNDS: usize = 3;
const BIG_FILES: usize = 400;
const BIG_SIZE: usize = 256 * 1024;
const SMALL_FILES: usize = 2000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A layer of incompressible content: 400 x 256 KiB plus 2000 small files.
fn layer_tar() -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..BIG_FILES {
        let data: Vec<u8> = (0..BIG_SIZE / 8)
            .flat_map(|_| next().to_le_bytes())
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("big/{:02}/f{i}", i % 16), &data[..])
            .unwrap();
    }
    for i in 0..SMALL_FILES {
        let data = format!("small file {i}\n");
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("small/{:02}/s{i}", i % 32), data.as_bytes())
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// Docker 20.10's order: the layer directory, the config, manifest.json last.
fn archive(layer: &[u8]) -> Vec<u8> {
    let diff = Digest::of_bytes(layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
    );
    let id = Digest::of_bytes(config.as_bytes());
    let manifest = format!(
        r#"[{{"Config":"{}.json","RepoTags":["bench:latest"],"Layers":["{}/layer.tar"]}}]"#,
        id.hex(),
        diff.hex()
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(format!("{}/layer.tar", diff.hex()), layer);
    add(format!("{}.json", id.hex()), config.as_bytes());
    add("manifest.json".into(), manifest.as_bytes());
    b.into_inner().unwrap()
}

async fn open(root: &Path, name: &str, init: &DriverInit) -> ImageStore {
    let driver = init(DriverConfig {
        root: root.join(name),
        options: StorageOpts::default(),
    })
    .await
    .unwrap();
    let image_root = root.join("image").join(name);
    let layers = LayerStore::open(&image_root, driver).await.unwrap();
    ImageStore::open(&image_root, layers).await.unwrap()
}

/// GNU tar: `-x` from `input`, or `-c` to a pipe we drain (with `-f /dev/null` GNU tar
/// would skip reading the files).
fn gnu_tar(args: &[&str], dir: &Path, input: Option<&Path>) {
    let mut cmd = std::process::Command::new("tar");
    // -C comes first: GNU tar applies it to the names after it.
    cmd.arg("-C").arg(dir).args(args);
    match input {
        Some(f) => {
            cmd.arg("-f").arg(f);
            assert!(cmd.status().unwrap().success(), "tar {args:?}");
        }
        None => {
            cmd.arg("-f").arg("-").stdout(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut out = child.stdout.take().unwrap();
            std::io::copy(&mut out, &mut std::io::sink()).unwrap();
            assert!(child.wait().unwrap().success(), "tar {args:?}");
        }
    }
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "the bench needs root");
    let tmp = tempfile::Builder::new()
        .prefix("strata-image-bench-")
        .tempdir()
        .unwrap();
    let layer = layer_tar();
    let archive = archive(&layer);
    let layer_file = tmp.path().join("layer.tar");
    std::fs::File::create(&layer_file)
        .unwrap()
        .write_all(&layer)
        .unwrap();
    println!(
        "layer: {} MiB in {} files",
        layer.len() >> 20,
        BIG_FILES + SMALL_FILES
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let drivers: Vec<(&str, DriverInit)> = vec![
        ("vfs", Arc::new(strata_vfs::init)),
        ("overlay2", Arc::new(strata_overlay2::init)),
    ];
    for (name, init) in &drivers {
        let (mut reference, mut load, mut reload, mut save, mut tar_create, mut reload_saved) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let root = tmp.path().join(format!("{name}-{round}"));
            let extract = tmp.path().join(format!("extract-{name}-{round}"));
            std::fs::create_dir_all(&extract).unwrap();
            let t = Instant::now();
            gnu_tar(&["-x"], &extract, Some(&layer_file));
            nix::unistd::sync();
            reference.push(t.elapsed());
            let t = Instant::now();
            gnu_tar(&["-c", "."], &extract, None);
            tar_create.push(t.elapsed());

            rt.block_on(async {
                let images = open(&root, name, init).await;
                let opts = LoadOptions {
                    spool_dir: root.join("tmp"),
                    progress: None,
                };
                let t = Instant::now();
                image::load(&images, from_bytes(archive.clone()), opts.clone())
                    .await
                    .unwrap();
                nix::unistd::sync();
                load.push(t.elapsed());
                let t = Instant::now();
                image::load(&images, from_bytes(archive.clone()), opts)
                    .await
                    .unwrap();
                reload.push(t.elapsed());
                let t = Instant::now();
                let mut s = image::save(&images, &["bench".into()]).await.unwrap();
                let mut saved = Vec::with_capacity(archive.len() + (1 << 20));
                s.read_to_end(&mut saved).await.unwrap();
                save.push(t.elapsed());
                assert!(saved.len() > layer.len());
                // Our own archives put the metadata first: present layers are skipped unread.
                let opts = LoadOptions {
                    spool_dir: root.join("tmp"),
                    progress: None,
                };
                let t = Instant::now();
                image::load(&images, from_bytes(saved), opts).await.unwrap();
                reload_saved.push(t.elapsed());
                images.layers().driver().cleanup().await.unwrap();
            });
            std::fs::remove_dir_all(&extract).unwrap();
            std::fs::remove_dir_all(&root).unwrap();
        }
        let (r, l, rl, s, tc, rs) = (
            median(reference),
            median(load),
            median(reload),
            median(save),
            median(tar_create),
            median(reload_saved),
        );
        println!(
            "{name}: load {l:?} vs tar -x {r:?} (ratio {:.2}); load again, layers present: \
             dockerd's archive {rl:?}, our saved archive {rs:?}; save {s:?} vs tar -c {tc:?} \
             (ratio {:.2})",
            l.as_secs_f64() / r.as_secs_f64(),
            s.as_secs_f64() / tc.as_secs_f64()
        );
    }
}
