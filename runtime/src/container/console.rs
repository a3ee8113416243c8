//! `-t`: the pty is opened inside the container, on its own devpts instance, as runc does, so
//! the process sees `/dev/pts/0` and `/dev/console` is that terminal. The child sends the
//! master to the daemon over a unix socketpair (SCM_RIGHTS). Child half allocation-free.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::caps::errno;

/// A connected pair of CLOEXEC unix stream sockets: (daemon's end, child's end).
pub(crate) fn socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    let flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, fds.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In the child, after pivot_root: opens a pty on the container's devpts, sizes it, binds
/// the slave on /dev/console (the container's own terminal; not for an `exec`), sends the
/// master to the daemon. Returns the slave fd.
pub(crate) fn open_in_child(
    socket: i32,
    size: Option<&libc::winsize>,
    bind_console: bool,
) -> Result<i32, i32> {
    unsafe {
        let master = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if master < 0 {
            return Err(errno());
        }
        let result = slave_of(master, size, bind_console).and_then(|slave| {
            send_fd(socket, master)?;
            Ok(slave)
        });
        libc::close(master);
        libc::close(socket);
        result
    }
}

unsafe fn slave_of(
    master: i32,
    size: Option<&libc::winsize>,
    bind_console: bool,
) -> Result<i32, i32> {
    let unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    if libc::ioctl(master, libc::TIOCSPTLCK, &unlock) < 0
        || libc::ioctl(master, libc::TIOCGPTN, &mut number) < 0
    {
        return Err(errno());
    }
    let mut path = [0u8; 32];
    pts_path(number, &mut path);
    let slave = libc::open(
        path.as_ptr().cast(),
        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
    );
    if slave < 0 {
        return Err(errno());
    }
    let ok = size.is_none_or(|ws| libc::ioctl(slave, libc::TIOCSWINSZ, ws) >= 0)
        && (!bind_console
            || libc::mount(
                path.as_ptr().cast(),
                c"/dev/console".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) >= 0);
    if !ok {
        let e = errno();
        libc::close(slave);
        return Err(e);
    }
    Ok(slave)
}

/// Writes `/dev/pts/N\0` into `buf` without allocating.
fn pts_path(mut n: u32, buf: &mut [u8; 32]) {
    const PREFIX: &[u8] = b"/dev/pts/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
}

unsafe fn send_fd(socket: i32, fd: i32) -> Result<(), i32> {
    // Room for one cmsghdr with one int, 8-byte aligned.
    let mut control = [0u64; 4];
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as _;
    let cmsg = libc::CMSG_FIRSTHDR(&msg);
    (*cmsg).cmsg_level = libc::SOL_SOCKET;
    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
    (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
    if libc::sendmsg(socket, &msg, 0) < 0 {
        return Err(errno());
    }
    Ok(())
}

/// In the daemon: receives the pty master, or `None` when the child closed the socket
/// without sending one (it failed; the error pipe says why).
pub(crate) fn receive_master(socket: &OwnedFd) -> std::io::Result<Option<OwnedFd>> {
    let mut control = [0u64; 4];
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(None);
    }
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Ok(None);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}

/// Sets a pty's window size (TIOCSWINSZ on its master), for `resize` of a container or an
/// exec process.
pub(crate) fn set_window_size(master: &impl AsRawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pts_paths() {
        let mut buf = [0u8; 32];
        pts_path(0, &mut buf);
        assert_eq!(&buf[..12], b"/dev/pts/0\0\0");
        pts_path(4096, &mut buf);
        assert_eq!(&buf[..14], b"/dev/pts/4096\0");
    }

    #[test]
    fn an_fd_crosses_the_socketpair() {
        let (daemon, child) = socketpair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        unsafe { send_fd(child.as_raw_fd(), file.as_raw_fd()).unwrap() };
        let got = receive_master(&daemon).unwrap().unwrap();
        assert_ne!(got.as_raw_fd(), file.as_raw_fd());
        drop(child);
        assert!(receive_master(&daemon).unwrap().is_none());
    }
}
