//! `size=`: XFS project quotas. This CI kernel is built without CONFIG_XFS_QUOTA (mounting
//! with pquota fails with "quota support not available in this kernel"), so what runs here is
//! the refusal path; the enforcement test needs a kernel with XFS quota and is marked ignored.

mod common;

use common::*;
use strata_core::{CreateOpts, Error, LayerDriver, StorageOpts};

fn sized(size: &str) -> CreateOpts {
    CreateOpts::read_write()
        .with_storage_opts(StorageOpts::parse(&[format!("size={size}")]).unwrap())
}

#[tokio::test]
async fn size_is_refused_without_project_quota_and_says_where_it_works() {
    let xfs = XfsLoop::new("noquota");
    let d = open(&xfs.mnt.join("overlay2")).await;
    assert!(!d.capabilities().quota);
    create_ro(&d, 1, None).await;
    let err = d
        .create(&id(2), Some(&id(1)), &sized("8M"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("xfs") && text.contains("pquota"), "{text}");
    assert!(!d.exists(&id(2)).await.unwrap(), "nothing left behind");
    // Read-only layers never take a size.
    let ro = CreateOpts::read_only().with_storage_opts(StorageOpts::parse(&["size=8M"]).unwrap());
    assert!(matches!(
        d.create(&id(3), Some(&id(1)), &ro).await,
        Err(Error::InvalidInput(_))
    ));
    d.cleanup().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a kernel with CONFIG_XFS_QUOTA; this machine's kernel lacks it"]
async fn size_limits_writes_on_xfs_with_pquota() {
    let xfs = XfsLoop::new("pquota");
    let root = xfs.mnt.join("overlay2");
    {
        let d = open(&root).await;
        assert!(d.capabilities().quota);
        create_ro(&d, 1, None).await;
        d.create(&id(2), Some(&id(1)), &sized("8M")).await.unwrap();
        assert_eq!(d.driver().quota_limit(&id(2)).unwrap(), 8 << 20);
        let merged = d.mount(&id(2), "").await.unwrap();
        std::fs::write(merged.join("fits"), vec![1u8; 4 << 20]).unwrap();
        let err = std::fs::write(merged.join("too-big"), vec![1u8; 16 << 20]).unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::EDQUOT) | Some(libc::ENOSPC)),
            "{err}"
        );
        // A layer without size= is not limited.
        create_rw(&d, 3, Some(1)).await;
        let free = d.mount(&id(3), "").await.unwrap();
        std::fs::write(free.join("big"), vec![1u8; 16 << 20]).unwrap();
        d.unmount(&id(3)).await.unwrap();
        d.unmount(&id(2)).await.unwrap();
        d.cleanup().await.unwrap();
    }
    // Reopening finds the used project ids and keeps handing out new ones.
    let d = open(&root).await;
    d.create(&id(5), Some(&id(1)), &sized("4M")).await.unwrap();
    assert_eq!(d.driver().quota_limit(&id(5)).unwrap(), 4 << 20);
    assert_eq!(d.driver().quota_limit(&id(2)).unwrap(), 8 << 20);
    d.cleanup().await.unwrap();
}
