//! The container's stdio: pipes or a pty, made before the clone; the daemon's ends as async
//! streams; output pumped to the json log and to live attach subscribers.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use strata_core::{IoContext, Result};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

/// A piece of container output as it was read (for attach). With a tty everything is stdout.
#[derive(Debug, Clone)]
pub struct OutputChunk {
    pub stream: StreamKind,
    pub data: Bytes,
}

/// The daemon's ends of the container's stdio.
pub(crate) enum ParentIo {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Pty {
        master: OwnedFd,
    },
    /// The child opens the pty in its own devpts and sends the master over this socket.
    PtyPending {
        socket: OwnedFd,
    },
}

/// The child's ends, kept open in the parent until the clone, then dropped.
pub(crate) struct ChildIo {
    /// stdin, stdout, stderr; unused with a tty (the child opens its pty).
    pub stdio: [RawFd; 3],
    /// With a tty: the child's end of the socket the pty master is sent over.
    pub console_socket: Option<RawFd>,
    _owned: Vec<OwnedFd>,
}

impl ParentIo {
    /// The raw fds the child must close (its copies of the daemon's ends).
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        match self {
            ParentIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => stdin
                .iter()
                .chain([stdout, stderr])
                .map(|f| f.as_raw_fd())
                .collect(),
            ParentIo::Pty { master } => vec![master.as_raw_fd()],
            ParentIo::PtyPending { socket } => vec![socket.as_raw_fd()],
        }
    }
}

pub(crate) fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx("pipe", "stdio")
}

/// Pipes for stdout/stderr, a pipe or /dev/null for stdin; or, with a tty, the socket the
/// child will send its pty master over.
pub(crate) fn make_stdio(tty: bool, stdin: bool) -> Result<(ParentIo, ChildIo)> {
    if tty {
        let (daemon_end, child_end) = super::console::socketpair().ctx("socketpair", "console")?;
        return Ok((
            ParentIo::PtyPending { socket: daemon_end },
            ChildIo {
                stdio: [-1; 3],
                console_socket: Some(child_end.as_raw_fd()),
                _owned: vec![child_end],
            },
        ));
    }
    let (out_r, out_w) = cloexec_pipe()?;
    let (err_r, err_w) = cloexec_pipe()?;
    let (parent_stdin, child_stdin) = if stdin {
        let (r, w) = cloexec_pipe()?;
        (Some(w), r)
    } else {
        let null = std::fs::File::open("/dev/null").ctx("open", "/dev/null")?;
        (None, OwnedFd::from(null))
    };
    let stdio = [
        child_stdin.as_raw_fd(),
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
    ];
    Ok((
        ParentIo::Pipes {
            stdin: parent_stdin,
            stdout: out_r,
            stderr: err_r,
        },
        ChildIo {
            stdio,
            console_socket: None,
            _owned: vec![child_stdin, out_w, err_w],
        },
    ))
}

/// A pipe end or pty master as an async byte stream. A pty master reads EIO once the last
/// slave closes: that is end of file here.
pub struct FdStream {
    inner: AsyncFd<OwnedFd>,
}

impl FdStream {
    pub(crate) fn new(fd: OwnedFd) -> io::Result<FdStream> {
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags))?;
        Ok(FdStream {
            // SAFETY: an OwnedFd stays open and the same fd for the AsyncFd's whole life.
            inner: unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?,
        })
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let result = guard.try_io(|fd| {
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.inner.poll_write_ready(cx))?;
            let result = guard.try_io(|fd| {
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
