//! import, history, tag, rmi, prune and commit.

use strata_core::layer::CreateOpts;
use strata_core::store::{Digest, Reference};
use strata_core::stream::{from_bytes, read_all};

use super::*;
use crate::image::{DeleteItem, ImageUser, ImportOptions};

fn nobody(_: &Digest) -> Option<ImageUser> {
    None
}

#[tokio::test]
async fn import_makes_a_one_layer_image_with_changes() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        let opts = ImportOptions {
            reference: Some(Reference::parse("bbimp:1").unwrap()),
            message: None,
            source: "-".into(),
            changes: vec![
                r#"CMD ["/bin/sh", "-c", "echo hi"]"#.into(),
                "ENV A=1 B=\"x y\"".into(),
                "WORKDIR /data".into(),
                "USER 1000".into(),
                "LABEL org.test=yes".into(),
                "ENTRYPOINT /bin/busybox".into(),
            ],
        };
        let id = crate::image::import(&h.images, from_bytes(fixture("bb-rootfs.tar")), opts)
            .await
            .unwrap();
        let img = h.images.get(&id).unwrap();
        assert_eq!(
            img.config.rootfs.diff_ids[0].as_str(),
            "sha256:038699455e59225d04c144ad4de5beff6e7e7fff2f5dec79b2ac674208ae5c0d",
            "{name}: the diffID is the tar's digest, as Docker's"
        );
        let c = img.config.config.clone().unwrap();
        assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(c["Env"], serde_json::json!(["A=1", "B=x y"]));
        assert_eq!(c["WorkingDir"], "/data");
        assert_eq!(c["User"], "1000");
        assert_eq!(c["Labels"]["org.test"], "yes");
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!(["/bin/sh", "-c", "/bin/busybox"])
        );
        assert_eq!(h.images.resolve("bbimp:1").unwrap(), id);
        assert!(h.exists_in_image(&id, "/bin/busybox").await);
        assert_eq!(h.layers().refs(&img.top_layer().unwrap()), Some(1));

        let hist = crate::image::history(&h.images, &id).unwrap();
        assert_eq!(hist.len(), 1);
        assert_eq!(hist[0].id, id.to_string());
        assert_eq!(hist[0].comment, "Imported from -");
        assert_eq!(hist[0].tags, vec!["bbimp:1"]);
        assert!(hist[0].size > 1_000_000);
        assert!(hist[0].created > 1_700_000_000);

        // A bad change is refused before anything is applied.
        let before = h.driver_entries();
        let bad = ImportOptions {
            changes: vec!["RUN rm -rf /".into()],
            ..ImportOptions::default()
        };
        assert!(
            crate::image::import(&h.images, from_bytes(fixture("bb-rootfs.tar")), bad)
                .await
                .is_err()
        );
        assert_eq!(h.driver_entries(), before);
    }
}

#[tokio::test]
async fn history_matches_dockers() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        h.load(fixture("three.tar")).await.unwrap();
        let id = fixture_id("three.id");
        let hist = crate::image::history(&h.images, &id).unwrap();
        let json = serde_json::to_value(&hist).unwrap();
        assert_eq!(hist.len(), 5, "{name}");
        assert_eq!(json[0]["Id"], id.as_str());
        assert_eq!(json[0]["Tags"], serde_json::json!(["three:latest"]));
        assert_eq!(json[0]["Size"], 0, "CMD adds no layer");
        assert!(json[0]["CreatedBy"].as_str().unwrap().contains("CMD"));
        assert_eq!(json[1]["Id"], "<missing>");
        assert_eq!(json[1]["Size"], 7, "layer3.txt");
        assert_eq!(json[2]["Size"], 22, "hello.txt");
        assert_eq!(json[3]["Size"], 45);
        assert_eq!(json[4]["Comment"], "Imported from -");
        assert_eq!(json[0]["Created"], 1_795_821_296i64);
        for key in ["Id", "Created", "CreatedBy", "Tags", "Size", "Comment"] {
            assert!(json[4].get(key).is_some(), "{key}");
        }
    }
}

#[tokio::test]
async fn tag_rmi_and_prune_follow_dockers_rules() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        h.load(fixture("bb.tar")).await.unwrap();
        h.load(fixture("three.tar")).await.unwrap();
        let bb = fixture_id("bb.id");
        let three = fixture_id("three.id");
        crate::image::tag(&h.images, "bb", "bbcopy:v1")
            .await
            .unwrap();
        crate::image::tag(&h.images, "bb", "other/bb")
            .await
            .unwrap();
        assert!(crate::image::tag(&h.images, "nope", "x").await.is_err());
        assert!(crate::image::tag(&h.images, "bb", "Bad:Name")
            .await
            .is_err());

        // By tag: just untag while other tags remain.
        let (items, _) = crate::image::remove(&h.images, "bbcopy:v1", false, true, &nobody)
            .await
            .unwrap();
        assert_eq!(items, vec![DeleteItem::Untagged("bbcopy:v1".into())]);
        // By id while two repositories name it: conflict unless forced.
        let err = crate::image::remove(&h.images, &bb.hex()[..12], false, true, &nobody)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("multiple repositories"), "{err}");
        // Used by a stopped container: conflict unless forced; running: even forced.
        let stopped = |d: &Digest| {
            (*d == three).then(|| ImageUser {
                container: "c".repeat(64),
                running: false,
            })
        };
        let err = crate::image::remove(&h.images, &three.to_string(), false, true, &stopped)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("stopped container"), "{err}");
        let running = |d: &Digest| {
            (*d == three).then(|| ImageUser {
                container: "c".repeat(64),
                running: true,
            })
        };
        assert!(
            crate::image::remove(&h.images, &three.to_string(), true, true, &running)
                .await
                .is_err()
        );
        // Removing the last tag of a used image untags only.
        let (items, removed) = crate::image::remove(&h.images, "three", false, true, &stopped)
            .await
            .unwrap();
        assert_eq!(items, vec![DeleteItem::Untagged("three:latest".into())]);
        assert!(removed.is_empty());
        assert!(h.images.get(&three).is_ok());

        // Prune: three is dangling now, but used; then not used: it goes, bb's layer stays.
        let report = crate::image::prune(&h.images, false, &stopped)
            .await
            .unwrap();
        assert!(report.images_deleted.is_empty());
        let report = crate::image::prune(&h.images, false, &nobody)
            .await
            .unwrap();
        assert_eq!(
            report.images_deleted,
            vec![DeleteItem::Deleted(three.to_string())]
        );
        assert_eq!(report.space_reclaimed, 45 + 22 + 7);
        assert_eq!(h.layerdb_entries().len(), 1);
        assert!(h.exists_in_image(&bb, "/bin/busybox").await);

        // Forced removal by id untags everything and deletes; the driver is empty after.
        let (items, removed) =
            crate::image::remove(&h.images, &bb.to_string(), true, true, &nobody)
                .await
                .unwrap();
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(items[2], DeleteItem::Deleted(bb.to_string()));
        assert_eq!(removed.len(), 1);
        assert!(h.layerdb_entries().is_empty());
        assert!(h.images.list().is_empty());
        let repos = std::fs::read_to_string(
            h.tmp
                .path()
                .join("image")
                .join(name)
                .join("repositories.json"),
        )
        .unwrap();
        assert_eq!(repos, r#"{"Repositories":{}}"#);
    }
}

#[tokio::test]
async fn commit_turns_a_container_layer_into_an_image() {
    for (name, init, root) in drivers() {
        let h = Harness::new(name, &init, root).await;
        h.load(fixture("bb.tar")).await.unwrap();
        let bb = fixture_id("bb.id");
        let top = h.images.get(&bb).unwrap().top_layer().unwrap();
        let container = "a".repeat(64);
        let rw = h
            .layers()
            .create_rw(&container, Some(&top), &CreateOpts::read_write())
            .await
            .unwrap();
        let tree = h.layers().mount_rw(&container).await.unwrap();
        std::fs::write(tree.path().join("committed.txt"), "from the container").unwrap();
        std::fs::remove_file(tree.path().join("linuxrc")).unwrap();
        tree.release().await.unwrap();

        let opts = crate::image::CommitOptions {
            reference: Some(Reference::parse("docker.io/library/c1img").unwrap()),
            comment: "my commit".into(),
            author: "tester".into(),
            changes: vec!["CMD [\"cat\", \"/committed.txt\"]".into()],
            container_id: container.clone(),
            container_config: Some(serde_json::json!({"Cmd": ["/bin/sh", "-c", "echo x"]})),
        };
        let id = crate::image::commit(&h.images, &rw.mount_id, Some(&bb), opts)
            .await
            .unwrap();
        let img = h.images.get(&id).unwrap();
        assert_eq!(img.parent, Some(bb.clone()));
        assert_eq!(img.config.rootfs.diff_ids.len(), 2);
        assert_eq!(h.images.resolve("c1img:latest").unwrap(), id);
        assert_eq!(
            img.config.config.as_ref().unwrap()["Cmd"],
            serde_json::json!(["cat", "/committed.txt"])
        );
        assert_eq!(
            h.read_in_image(&id, "/committed.txt").await.unwrap(),
            b"from the container"
        );
        assert!(
            !h.exists_in_image(&id, "/linuxrc").await,
            "{name}: deletion kept"
        );
        let hist = crate::image::history(&h.images, &id).unwrap();
        assert_eq!(hist.len(), 2);
        assert_eq!(hist[0].created_by, "/bin/sh -c echo x");
        assert_eq!(hist[0].comment, "my commit");
        assert_eq!(hist[0].size, "from the container".len() as i64);
        assert_eq!(hist[1].id, bb.to_string(), "parent image id shown");

        // The base cannot go while the commit builds on it; the container layer is separate.
        assert!(
            crate::image::remove(&h.images, &bb.to_string(), true, true, &nobody)
                .await
                .is_err()
        );
        h.layers().remove_rw(&container).await.unwrap();

        // The committed image survives a save and load elsewhere.
        let archive = read_all(
            crate::image::save(&h.images, &["c1img".into()])
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        let fresh = Harness::new(name, &init, root).await;
        let loaded = fresh.load(archive).await.unwrap();
        assert_eq!(loaded[0].id, id);
        assert!(!fresh.exists_in_image(&id, "/linuxrc").await);
    }
}
