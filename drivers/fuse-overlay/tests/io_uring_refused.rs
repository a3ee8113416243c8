//! A mount where io_uring is refused (a seccomp profile such as Docker's default one, or
//! `kernel.io_uring_disabled`) must still work, through /dev/fuse alone. Once INIT grants
//! io_uring the kernel holds every request until all queues have registered, so the session
//! has to find out before answering INIT. Its own test binary: the seccomp filter covers the
//! whole process.

mod common;

use common::*;

/// Makes io_uring_setup fail with EPERM in every thread of this process, as a container's
/// seccomp profile does.
fn refuse_io_uring() {
    const IO_URING_SETUP: u32 = 425; // the same number on every architecture
    const RET_ERRNO_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: IO_URING_SETUP,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: RET_ERRNO_EPERM,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl and seccomp with a valid, live filter program.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let set = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        );
        assert_eq!(set, 0, "seccomp: {}", std::io::Error::last_os_error());
        // The filter is in force: this is what the queues will meet.
        assert_eq!(
            libc::syscall(libc::SYS_io_uring_setup, 4, std::ptr::null_mut::<u8>()),
            -1
        );
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPERM)
        );
    }
}

/// Fails the test, instead of letting it hang, if the mount stops answering: detaches the
/// mount and ends the process (the blocked requests die with it, and so does the session).
fn watchdog(mountpoint: std::path::PathBuf) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(30));
        eprintln!("the mount stopped answering requests: detaching it and failing");
        let _ = nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH);
        std::process::exit(101);
    });
}

#[test]
fn a_mount_where_io_uring_is_refused_serves_through_dev_fuse() {
    refuse_io_uring();
    let rt = runtime();
    let d = Dirs::new();
    let base = d.tmp.path();
    watchdog(base.join("mnt"));
    mkdirs(base, &["l1/dir"]);
    std::fs::write(base.join("l1/dir/f"), b"lower\n").unwrap();
    let m = FuseOverlay::mount(
        &rt,
        &[&base.join("l1")],
        &base.join("upper"),
        &base.join("work"),
        &base.join("mnt"),
    );
    // Each of these would block forever had INIT granted io_uring with no queue registered.
    assert_eq!(std::fs::read(m.path.join("dir/f")).unwrap(), b"lower\n");
    for i in 0..50 {
        std::fs::write(m.path.join(format!("dir/n{i}")), b"x").unwrap();
    }
    assert_eq!(std::fs::read_dir(m.path.join("dir")).unwrap().count(), 51);
    // The queue threads that found io_uring refused have ended.
    assert_eq!(uring_queue_threads_after_settling(), 0);
    m.unmount(&rt);
    assert_eq!(std::fs::read(base.join("upper/dir/n7")).unwrap(), b"x");
    assert_no_mounts_under(base);
}
