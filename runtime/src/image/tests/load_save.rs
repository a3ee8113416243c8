//! load and save: Docker's archives, both forms, broken archives, round trips.

use strata_core::store::{chain_ids, Digest};
use strata_core::stream::{from_bytes, read_all};

use super::archives::{build, data_of, entries, gzip};
use super::*;
use crate::image::load::LoadProgress;
use crate::image::manifest::{blob_path, OciIndex, OciManifest};

const BB_DIFF: &str = "sha256:038699455e59225d04c144ad4de5beff6e7e7fff2f5dec79b2ac674208ae5c0d";
const THREE_TOP_CHAIN: &str =
    "sha256:ff1f6ffe909b26acc7c2d5f922ff815042a970becd98d5dc5b1c14d32d67635c";

async fn check_three(h: &Harness, id: &Digest) {
    let text = |p: &'static str| async move {
        String::from_utf8(h.read_in_image(id, p).await.unwrap()).unwrap()
    };
    assert_eq!(text("/data/keep.txt").await.trim(), "layer1 keep");
    assert_eq!(
        text("/data/hello.txt").await.trim(),
        "hello from COPY layer"
    );
    assert_eq!(text("/data/layer3.txt").await.trim(), "layer3");
    assert!(!h.exists_in_image(id, "/data/gone.txt").await);
    assert!(!h.exists_in_image(id, "/data/sub").await);
    assert!(h.exists_in_image(id, "/bin/busybox").await);
}

#[tokio::test]
async fn loads_dockers_archives_with_dockers_ids() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        let loaded = h.load(fixture("bb.tar")).await.unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, fixture_id("bb.id"), "{name}");
        assert_eq!(loaded[0].tags, vec!["bb:latest"]);
        let top = h.images.get(&loaded[0].id).unwrap().top_layer().unwrap();
        assert_eq!(top.as_str(), BB_DIFF);
        assert!(h.exists_in_image(&loaded[0].id, "/bin/busybox").await);

        // three shares bb's base layer: it is found, not applied again.
        let before = h.driver_entries().len();
        let (opts, seen) = h.load_options();
        let loaded = crate::image::load(&h.images, from_bytes(fixture("three.tar")), opts)
            .await
            .unwrap();
        let id = &loaded[0].id;
        assert_eq!(*id, fixture_id("three.id"), "{name}");
        assert_eq!(h.images.resolve("three").unwrap(), *id);
        assert_eq!(
            h.images.get(id).unwrap().top_layer().unwrap().as_str(),
            THREE_TOP_CHAIN
        );
        let seen = seen.lock().unwrap().clone();
        let exists = seen
            .iter()
            .filter(|p| matches!(p, LoadProgress::LayerExists { .. }))
            .count();
        let applied = seen
            .iter()
            .filter(|p| matches!(p, LoadProgress::LayerLoaded { .. }))
            .count();
        assert_eq!((exists, applied), (1, 3), "{name}: {seen:?}");
        assert!(h.driver_entries().len() > before);
        check_three(&h, id).await;
        assert_eq!(h.layerdb_entries().len(), 4);

        // Inspect has Docker's shape.
        let inspect = serde_json::to_value(h.images.inspect(id).await.unwrap()).unwrap();
        assert_eq!(inspect["RootFS"]["Layers"].as_array().unwrap().len(), 4);
        assert_eq!(inspect["Architecture"], "amd64");
        assert_eq!(
            inspect["Config"]["Cmd"][2],
            "ls -la /data && cat /data/hello.txt"
        );
        assert_eq!(inspect["GraphDriver"]["Name"], h.driver.name());
        assert_eq!(inspect["Created"], "2026-11-27T23:14:56.403413452Z");
    }
}

#[tokio::test]
async fn loading_present_layers_applies_nothing() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        h.load(fixture("three.tar")).await.unwrap();
        let before = h.driver_entries();
        let (opts, seen) = h.load_options();
        crate::image::load(&h.images, from_bytes(fixture("three.tar")), opts)
            .await
            .unwrap();
        assert_eq!(h.driver_entries(), before, "{name}");
        let seen = seen.lock().unwrap().clone();
        assert!(
            !seen
                .iter()
                .any(|p| matches!(p, LoadProgress::LayerLoaded { .. })),
            "{name}: {seen:?}"
        );
        // Same for gzip-compressed archives.
        h.load(gzip(&fixture("bb.tar"))).await.unwrap();
        assert_eq!(h.driver_entries(), before, "{name}");
    }
}

/// A failed load leaves no layer in the driver, no layerdb entry and no image.
async fn assert_refused(h: &Harness, archive: Vec<u8>, expect: &str) {
    let before = h.driver_entries();
    let layerdb = h.layerdb_entries();
    let images = h.images.list().len();
    let err = h.load(archive).await.unwrap_err().to_string();
    assert!(err.contains(expect), "{}: {err:?} lacks {expect:?}", h.name);
    assert_eq!(h.driver_entries(), before, "{}: driver layers left", h.name);
    assert_eq!(h.layerdb_entries(), layerdb, "{}", h.name);
    assert_eq!(h.images.list().len(), images, "{}", h.name);
}

#[tokio::test]
async fn broken_archives_are_refused_and_leave_nothing() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        let three = fixture("three.tar");

        // Truncated in the middle of the big base layer.
        assert_refused(&h, three[..1_000_000].to_vec(), "truncated").await;
        // Truncated gzip.
        let gz = gzip(&three);
        assert_refused(&h, gz[..gz.len() / 2].to_vec(), "").await;

        // A flipped byte inside a file of the last layer: its digest no longer matches.
        let mut e = entries(&three);
        let layer = e
            .iter_mut()
            .find(|x| x.0.starts_with("7ace") && x.0.ends_with("layer.tar"))
            .unwrap();
        let pos = layer.3.windows(7).position(|w| w == b"layer3\n").unwrap();
        layer.3[pos] = b'X';
        assert_refused(&h, build(&e), "does not match").await;

        // A manifest naming a file the archive lacks.
        let mut e = entries(&three);
        let manifest = e.iter_mut().find(|x| x.0 == "manifest.json").unwrap();
        manifest.3 = String::from_utf8(manifest.3.clone())
            .unwrap()
            .replace(
                "7ace1490cff2e92e8f6c08867b4bf8d77e7899322834f6c58c0eecf639c36f9e/layer.tar",
                "missing/layer.tar",
            )
            .into_bytes();
        assert_refused(&h, build(&e), "missing/layer.tar").await;

        // Not an image archive at all.
        assert_refused(&h, build(&[]), "").await;
        assert_refused(&h, fixture("bb-rootfs.tar"), "not an image archive").await;

        // Nothing was left by any of that; a good load still works.
        assert!(h.layerdb_entries().is_empty());
        let loaded = h.load(three).await.unwrap();
        assert_eq!(loaded[0].id, fixture_id("three.id"));
    }
}

/// An OCI layout alone (no manifest.json), gzip layers, blobs before index.json: every layer
/// is spooled, then placed once the index is read.
#[tokio::test]
async fn loads_the_oci_layout_with_compressed_layers() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        let three = entries(&fixture("three.tar"));
        let manifest: serde_json::Value =
            serde_json::from_slice(&data_of(&three, "manifest.json")).unwrap();
        let config = data_of(&three, manifest[0]["Config"].as_str().unwrap());
        let mut blobs = Vec::new();
        let mut layers = Vec::new();
        for l in manifest[0]["Layers"].as_array().unwrap() {
            let gz = gzip(&data_of(&three, l.as_str().unwrap()));
            let d = Digest::of_bytes(&gz);
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": d, "size": gz.len()}));
            blobs.push((blob_path(&d), gz));
        }
        let config_digest = Digest::of_bytes(&config);
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": layers}))
        .unwrap();
        let md = Digest::of_bytes(&m);
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": md, "size": m.len(),
                "annotations": {"io.containerd.image.name": "docker.io/library/three:oci"}}]}))
        .unwrap();
        blobs.push((blob_path(&config_digest), config));
        blobs.push((blob_path(&md), m));
        blobs.sort();
        let mut e: Vec<super::archives::Entry> = blobs
            .into_iter()
            .map(|(p, d)| (p, tar::EntryType::Regular, None, d))
            .collect();
        e.push(("index.json".into(), tar::EntryType::Regular, None, index));
        e.push((
            "oci-layout".into(),
            tar::EntryType::Regular,
            None,
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ));
        let loaded = h.load(build(&e)).await.unwrap();
        assert_eq!(loaded[0].id, fixture_id("three.id"), "{name}");
        assert_eq!(loaded[0].tags, vec!["three:oci"]);
        check_three(&h, &loaded[0].id).await;
    }
}

#[tokio::test]
async fn save_writes_both_forms_and_loads_back_identically() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        h.load(fixture("three.tar")).await.unwrap();
        let three = fixture_id("three.id");
        let archive = read_all(
            crate::image::save(&h.images, &["three:latest".to_string()])
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            h.layers().refs(&Digest::parse(THREE_TOP_CHAIN).unwrap()),
            Some(1),
            "{name}: save gave back its references"
        );
        let e = entries(&archive);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            &names[..4],
            &["oci-layout", "index.json", "manifest.json", "repositories"]
        );
        // Classic form.
        let manifest: serde_json::Value =
            serde_json::from_slice(&data_of(&e, "manifest.json")).unwrap();
        assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["three:latest"]));
        assert_eq!(manifest[0]["Config"], format!("{}.json", three.hex()));
        assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 4);
        let repositories: serde_json::Value =
            serde_json::from_slice(&data_of(&e, "repositories")).unwrap();
        assert!(repositories["three"]["latest"].is_string());
        // OCI form: index -> manifest -> config and layer blobs, all by digest.
        let index: OciIndex = serde_json::from_slice(&data_of(&e, "index.json")).unwrap();
        let m: OciManifest =
            serde_json::from_slice(&data_of(&e, &blob_path(&index.manifests[0].digest))).unwrap();
        assert_eq!(m.config.digest, three);
        assert_eq!(
            Digest::of_bytes(&data_of(&e, &blob_path(&three))),
            three,
            "config byte-exact"
        );
        for l in &m.layers {
            let blob = data_of(&e, &blob_path(&l.digest));
            assert_eq!(
                Digest::of_bytes(&blob),
                l.digest,
                "{name}: layer blob digest"
            );
            assert_eq!(blob.len() as u64, l.size);
        }
        assert_eq!(
            index.manifests[0].annotations["io.containerd.image.name"],
            "docker.io/library/three:latest"
        );

        // A fresh data root loads it with the same ids and diffIDs, streaming every layer.
        let fresh = Harness::new(name, &init, root).await;
        let (opts, seen) = fresh.load_options();
        let loaded = crate::image::load(&fresh.images, from_bytes(archive.clone()), opts)
            .await
            .unwrap();
        assert_eq!(loaded[0].id, three);
        assert_eq!(loaded[0].tags, vec!["three:latest"]);
        let diffs = &fresh.images.get(&three).unwrap().config.rootfs.diff_ids;
        assert_eq!(chain_ids(diffs).last().unwrap().as_str(), THREE_TOP_CHAIN);
        check_three(&fresh, &three).await;
        assert!(seen
            .lock()
            .unwrap()
            .iter()
            .any(|p| matches!(p, LoadProgress::LayerLoaded { .. })));
        // Saving by id carries no tag; several images share their layers once.
        h.load(fixture("bb.tar")).await.unwrap();
        let both = read_all(
            crate::image::save(&h.images, &[three.to_string(), "bb".to_string()])
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        let e = entries(&both);
        let manifest: serde_json::Value =
            serde_json::from_slice(&data_of(&e, "manifest.json")).unwrap();
        assert_eq!(manifest[0]["RepoTags"], serde_json::Value::Null);
        assert_eq!(manifest[1]["RepoTags"], serde_json::json!(["bb:latest"]));
        let layer_blobs = e
            .iter()
            .filter(|x| x.0.starts_with("blobs/") && !x.3.starts_with(b"{"))
            .count();
        assert_eq!(layer_blobs, 4, "{name}: bb's layer written once");
        let fresh = Harness::new(name, &init, root).await;
        let loaded = fresh.load(gzip(&both)).await.unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[1].id, fixture_id("bb.id"));
    }
}
