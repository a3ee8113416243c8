//! Open files across copy-up, with FUSE passthrough in play: a lower file held open for
//! reading while another open copies it up, writes through mmap and through passthrough
//! opens, all seen by every later open and landing in the upper layer.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirEntryExt, FileExt};

use common::*;

#[test]
fn copy_up_while_a_reader_holds_the_lower_file() {
    let rt = runtime();
    let d = Dirs::new();
    let base = d.tmp.path();
    mkdirs(base, &["l1/etc"]);
    std::fs::write(base.join("l1/etc/conf"), b"lower contents\n").unwrap();
    let m = FuseOverlay::mount_l1(&rt, base);
    let conf = m.path.join("etc/conf");

    let reader = std::fs::File::open(&conf).unwrap();
    let mut first = [0u8; 5];
    reader.read_exact_at(&mut first, 0).unwrap();
    assert_eq!(&first, b"lower");

    // Opening for writing copies the file up while the reader still holds it.
    let writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&conf)
        .unwrap();
    writer.write_all_at(b"UPPER", 0).unwrap();
    let mut again = [0u8; 5];
    writer.read_exact_at(&mut again, 0).unwrap();
    assert_eq!(&again, b"UPPER");

    // mmap writes reach the file too.
    // SAFETY: a shared mapping of a file this test owns, unmapped before the file closes.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            15,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&writer),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        std::ptr::copy_nonoverlapping(b"MMAP".as_ptr(), p.cast::<u8>().add(6), 4);
        assert_eq!(libc::msync(p, 15, libc::MS_SYNC), 0);
        libc::munmap(p, 15);
    }
    drop(reader);
    drop(writer);

    // A fresh open (now of the upper file) sees everything; so does the upper layer.
    assert_eq!(std::fs::read(&conf).unwrap(), b"UPPER MMAPents\n");
    let mut appender = std::fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .unwrap();
    appender.write_all(b"more\n").unwrap();
    drop(appender);
    let mut f = std::fs::File::open(&conf).unwrap();
    f.seek(SeekFrom::Start(15)).unwrap();
    let mut tail = String::new();
    f.read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "more\n");
    drop(f);
    assert_eq!(
        std::fs::read(base.join("upper/etc/conf")).unwrap(),
        b"UPPER MMAPents\nmore\n"
    );
    assert_eq!(
        std::fs::read(base.join("l1/etc/conf")).unwrap(),
        b"lower contents\n"
    );
    m.unmount(&rt);
    assert_no_mounts_under(base);
}

/// Lower files are served through passthrough bound to the lower file. An open for writing
/// while such a reader is open copies the file up under a new kernel inode: the open succeeds,
/// the old reader goes on reading the lower file (as with kernel overlayfs), and stat shows
/// one inode number for the name and the old open file throughout.
#[test]
fn copy_up_under_a_lower_reader_keeps_the_inode_number() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let rt = runtime();
    let d = Dirs::new();
    let base = d.tmp.path();
    mkdirs(base, &["l1/dir"]);
    // Large enough to be served through passthrough (small lower files use the page cache).
    let lower: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(base.join("l1/dir/data"), &lower).unwrap();
    let m = FuseOverlay::mount_l1(&rt, base);
    let path = m.path.join("dir/data");
    let ino = std::fs::metadata(&path).unwrap().ino();

    let reader = std::fs::File::open(&path).unwrap();
    let mut head = vec![0u8; 4096];
    reader.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, lower[..4096]);

    // Twice: the second open for writing finds the file copied up already.
    for round in 0..2u8 {
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        writer.write_all_at(&[b'A' + round; 8], 0).unwrap();
        drop(writer);
    }
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    assert_eq!(reader.metadata().unwrap().ino(), ino);

    // The reader still sees the lower file; new opens see the upper one.
    let mut tail = vec![0u8; 1000];
    reader.read_exact_at(&mut tail, 150_000).unwrap();
    assert_eq!(tail, lower[150_000..151_000]);
    reader.read_exact_at(&mut head[..8], 0).unwrap();
    assert_eq!(&head[..8], &lower[..8]);
    let now = std::fs::read(&path).unwrap();
    assert_eq!(&now[..8], b"BBBBBBBB");
    assert_eq!(&now[8..], &lower[8..]);

    // A change made through the old open file reaches the file the name shows.
    reader
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(base.join("upper/dir/data"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Listing the directory shows the same inode number too.
    // (A DirEntry keeps its directory open: take the number and let it go.)
    let listed = std::fs::read_dir(m.path.join("dir"))
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == "data")
        .map(|e| e.ino());
    assert_eq!(listed, Some(ino));
    drop(reader);
    assert_eq!(std::fs::read(base.join("l1/dir/data")).unwrap(), lower);
    m.unmount(&rt);
    assert_no_mounts_under(base);
}

/// A copy-up larger than the chunks a durable copy is written back in (32 MiB) keeps every
/// byte.
#[test]
fn copy_up_of_a_large_file_keeps_every_byte() {
    let rt = runtime();
    let d = Dirs::new();
    let base = d.tmp.path();
    mkdirs(base, &["l1"]);
    let size = 70 << 20;
    let lower: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(base.join("l1/big"), &lower).unwrap();
    let m = FuseOverlay::mount_l1(&rt, base);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path.join("big"))
        .unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    m.unmount(&rt);
    let upper = std::fs::read(base.join("upper/big")).unwrap();
    assert_eq!(upper.len(), size + 4);
    assert!(
        upper[..size] == lower[..],
        "copied-up bytes differ from the lower file"
    );
    assert_eq!(&upper[size..], b"tail");
    assert_no_mounts_under(base);
}

/// Names of this process's threads that serve FUSE io_uring queues.
/// Where the kernel offers FUSE over io_uring, a mount serves its requests through one queue
/// per possible CPU, and the queue threads end with the mount; where it does not, the mount
/// works through /dev/fuse alone and starts no queue.
#[test]
fn io_uring_queues_serve_and_end_with_the_mount() {
    let offered = std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring")
        .is_ok_and(|v| v.trim() == "Y");
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    let cpus = possible
        .trim()
        .split(',')
        .filter_map(|r| r.rsplit('-').next()?.parse::<usize>().ok())
        .max()
        .unwrap()
        + 1;
    let rt = runtime();
    let d = Dirs::new();
    let base = d.tmp.path();
    mkdirs(base, &["l1/dir"]);
    std::fs::write(base.join("l1/dir/f"), b"lower\n").unwrap();
    let m = FuseOverlay::mount_l1(&rt, base);
    for i in 0..200 {
        std::fs::write(m.path.join(format!("dir/n{i}")), b"x").unwrap();
    }
    assert_eq!(std::fs::read(m.path.join("dir/f")).unwrap(), b"lower\n");
    assert_eq!(std::fs::read_dir(m.path.join("dir")).unwrap().count(), 201);
    let expected = if offered { cpus } else { 0 };
    assert_eq!(
        uring_queue_threads(),
        expected,
        "io_uring offered: {offered}"
    );
    m.unmount(&rt);
    assert_eq!(
        uring_queue_threads_after_settling(),
        0,
        "queue threads outlived the mount"
    );
    assert_eq!(std::fs::read(base.join("upper/dir/n7")).unwrap(), b"x");
    assert_no_mounts_under(base);
}
