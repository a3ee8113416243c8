//! Deep chains: 499 stacked layers with the new mount API, and the page-size limit of the
//! mount(2) fallback, which must name the depth and the limit.

mod common;

use common::*;
use strata_core::{CreateOpts, Error, LayerDriver};
use strata_overlay2::{MountApi, Settings};

#[tokio::test]
async fn reads_the_bottom_of_499_layers_through_the_top() {
    let t = TestDir::new();
    let d = open(&t.root()).await;
    let base = create_ro(&d, 1, None).await;
    let p = d.mount(&base, "").await.unwrap();
    std::fs::write(p.join("bottom.txt"), b"deep down").unwrap();
    d.unmount(&base).await.unwrap();
    for n in 2..=499 {
        create_ro(&d, n, Some(n - 1)).await;
    }
    let top = id(499);
    let merged = d.mount(&top, "").await.unwrap();
    assert_eq!(
        std::fs::read(merged.join("bottom.txt")).unwrap(),
        b"deep down"
    );
    d.unmount(&top).await.unwrap();

    // A container on top stacks 499 lowers under its upper; the 500th image layer is the last.
    let rw = create_rw(&d, 1000, Some(499)).await;
    let merged = d.mount(&rw, "").await.unwrap();
    std::fs::write(merged.join("bottom.txt"), b"changed").unwrap();
    assert_eq!(
        std::fs::read(merged.join("bottom.txt")).unwrap(),
        b"changed"
    );
    d.unmount(&rw).await.unwrap();
    create_ro(&d, 500, Some(499)).await;
    let err = d
        .create(&id(501), Some(&id(500)), &CreateOpts::read_only())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)));
    let text = err.to_string();
    assert!(text.contains("501") && text.contains("500"), "{text}");
}

#[tokio::test]
async fn legacy_mounts_fit_a_page_and_say_how_deep_is_too_deep() {
    let t = TestDir::new();
    let d = open_with(
        &t.root(),
        Settings {
            mount_api: Some(MountApi::Legacy),
            ..Settings::default()
        },
    )
    .await;
    let status: std::collections::BTreeMap<_, _> = d.status().await.unwrap().into_iter().collect();
    let max: usize = status["Max Depth"].parse().unwrap();
    assert!(
        (120..=140).contains(&max),
        "Docker's l/ links fit about 130: {max}"
    );

    let base = create_ro(&d, 1, None).await;
    let p = d.mount(&base, "").await.unwrap();
    std::fs::write(p.join("bottom.txt"), b"legacy").unwrap();
    d.unmount(&base).await.unwrap();
    let mut n = 1;
    let err = loop {
        match d
            .create(&id(n + 1), Some(&id(n)), &CreateOpts::read_only())
            .await
        {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 1000, "no limit reached");
    };
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}", n + 1)) && text.contains("one page"),
        "{text}"
    );
    // The deepest layer that could be created mounts, with every lower visible.
    let merged = d.mount(&id(n), "").await.unwrap();
    assert_eq!(std::fs::read(merged.join("bottom.txt")).unwrap(), b"legacy");
    d.unmount(&id(n)).await.unwrap();
    // A container stacks all its image layers under an upper: Max Depth is what it can use.
    let rw = create_rw(&d, 5000, Some(max)).await;
    let merged = d.mount(&rw, "").await.unwrap();
    assert!(merged.join("bottom.txt").exists());
    d.unmount(&rw).await.unwrap();
    assert!(
        max < n,
        "read-only stacks carry no upper, so they fit a little deeper"
    );
    let err = d
        .create(
            &id(5001),
            Some(&id(max + 1)),
            &strata_core::CreateOpts::read_write(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("one page"), "{err}");
}
