//! build: the `three` fixture's Dockerfile, the layer cache, a failing RUN.

use std::sync::Mutex;

use strata_core::store::Reference;
use strata_core::stream::from_bytes;

use super::*;
use crate::image::{BuildEvent, BuildOptions};

fn context_tar(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", fixtures().join("three-context"))
        .unwrap();
    for (name, data) in extra {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

async fn run_build(
    h: &Harness,
    context: Vec<u8>,
    opts: BuildOptions,
) -> (strata_core::Result<Digest>, String) {
    let out = Arc::new(Mutex::new(String::new()));
    let o = out.clone();
    let progress = Arc::new(move |e: BuildEvent| {
        if let BuildEvent::Stream(s) = e {
            o.lock().unwrap().push_str(&s);
        }
    });
    let opts = BuildOptions {
        spool_dir: h.tmp.path().join("tmp"),
        ..opts
    };
    let r = crate::image::build(&h.images, from_bytes(context), opts, progress).await;
    let text = out.lock().unwrap().clone();
    (r, text)
}

#[tokio::test]
async fn builds_the_three_dockerfile_with_a_layer_cache() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        h.load(fixture("bb.tar")).await.unwrap();
        let opts = BuildOptions {
            tags: vec![Reference::parse("built:latest").unwrap()],
            ..BuildOptions::default()
        };
        let (id, out) = run_build(&h, context_tar(&[]), opts.clone()).await;
        let id = id.unwrap_or_else(|e| panic!("{name}: {e}\n{out}"));
        assert!(out.contains("Step 1/5 : FROM bb:latest"), "{out}");
        assert!(out.contains(" ---> Running in "), "{out}");
        assert!(out.contains("Successfully tagged built:latest"), "{out}");
        let text = |p: &'static str| {
            let h = &h;
            let id = &id;
            async move { String::from_utf8(h.read_in_image(id, p).await.unwrap()).unwrap() }
        };
        assert_eq!(text("/data/keep.txt").await.trim(), "layer1 keep");
        assert_eq!(
            text("/data/hello.txt").await.trim(),
            "hello from COPY layer"
        );
        assert_eq!(text("/data/layer3.txt").await.trim(), "layer3");
        assert!(!h.exists_in_image(&id, "/data/gone.txt").await, "{name}");
        assert!(!h.exists_in_image(&id, "/data/sub").await, "{name}");
        let img = h.images.get(&id).unwrap();
        assert_eq!(img.config.rootfs.diff_ids.len(), 4, "{name}");
        let hist = crate::image::history(&h.images, &id).unwrap();
        assert_eq!(hist.len(), 5);
        assert!(hist[0].created_by.contains("#(nop)  CMD"), "{:?}", hist[0]);
        assert!(hist[1]
            .created_by
            .starts_with("/bin/sh -c rm /data/gone.txt"));
        assert!(hist[2].created_by.contains("COPY file:"), "{:?}", hist[2]);
        assert_eq!(hist[2].size, 22);
        assert_eq!(
            img.config.config.as_ref().unwrap()["Cmd"],
            serde_json::json!(["/bin/sh", "-c", "ls -la /data && cat /data/hello.txt"])
        );
        assert!(
            h.layers().mounts().is_empty(),
            "{name}: build containers removed"
        );

        // Again: every step comes from the cache, same image.
        let (again, out) = run_build(&h, context_tar(&[]), opts.clone()).await;
        assert_eq!(again.unwrap(), id, "{out}");
        assert_eq!(out.matches("Using cache").count(), 4, "{out}");
        assert!(!out.contains("Running in"));

        // A changed file invalidates COPY and what follows; no_cache rebuilds everything.
        let (other, out) = run_build(
            &h,
            context_tar(&[("hello.txt", "changed\n")]),
            BuildOptions::default(),
        )
        .await;
        let other = other.unwrap();
        assert_ne!(other, id);
        assert_eq!(out.matches("Using cache").count(), 1, "{out}");
        assert_eq!(
            h.read_in_image(&other, "/data/hello.txt").await.unwrap(),
            b"changed\n"
        );
        let (fresh, out) = run_build(
            &h,
            context_tar(&[]),
            BuildOptions {
                no_cache: true,
                ..BuildOptions::default()
            },
        )
        .await;
        assert_ne!(fresh.unwrap(), id);
        assert!(!out.contains("Using cache"));
    }
}

#[tokio::test]
async fn a_failing_run_stops_the_build_and_leaves_no_container() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        h.load(fixture("bb.tar")).await.unwrap();
        let dockerfile =
            "FROM bb\nARG WHO=world\nENV GREETING=hello\nRUN echo $GREETING $WHO && exit 3\n";
        let mut b = tar::Builder::new(Vec::new());
        let mut hd = tar::Header::new_gnu();
        hd.set_size(dockerfile.len() as u64);
        hd.set_mode(0o644);
        b.append_data(&mut hd, "Dockerfile", dockerfile.as_bytes())
            .unwrap();
        let ctx = b.into_inner().unwrap();
        let (r, out) = run_build(&h, ctx, BuildOptions::default()).await;
        let err = r.unwrap_err().to_string();
        assert!(err.contains("returned a non-zero code: 3"), "{name}: {err}");
        assert!(out.contains("hello world"), "{name}: {out}");
        assert!(h.layers().mounts().is_empty(), "{name}");
        let unsupported = "FROM bb\nHEALTHCHECK CMD true\n";
        let mut b = tar::Builder::new(Vec::new());
        let mut hd = tar::Header::new_gnu();
        hd.set_size(unsupported.len() as u64);
        hd.set_mode(0o644);
        b.append_data(&mut hd, "Dockerfile", unsupported.as_bytes())
            .unwrap();
        let (r, _) = run_build(&h, b.into_inner().unwrap(), BuildOptions::default()).await;
        assert!(r.unwrap_err().to_string().contains("HEALTHCHECK"));
    }
}
