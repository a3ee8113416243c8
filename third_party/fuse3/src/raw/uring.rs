//! strata patch: FUSE over io_uring (Linux 6.14+, with the fuse module's `enable_uring` on).
//!
//! The kernel keeps one request queue per possible CPU and puts each request on the queue of
//! the CPU its caller runs on. Every queue here is served by a thread pinned to that CPU, so a
//! request and its reply stay on one CPU: no wake-up of another, idle CPU per round trip,
//! which is most of a metadata request's cost on a virtual machine. FORGET and INTERRUPT still
//! come through /dev/fuse, read by the session as before.
//!
//! Protocol (include/uapi/linux/fuse.h): each queue entry is two buffers, a header block
//! (`RingHeaders`: the in/out header, the opcode's own header, the entry's commit id and
//! payload size) and a payload of at least the connection's largest request. REGISTER hands
//! both to the kernel and waits for a request; COMMIT_AND_FETCH returns the reply written into
//! the same buffers and waits for the next.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use tracing::{debug, warn};
use zerocopy::{FromBytes, IntoBytes};

use crate::raw::abi::*;

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// Requests one queue holds at a time: one being served, one waiting.
const QUEUE_DEPTH: usize = 2;
/// io_uring_enter flag: wait for (or here: collect) completions.
const IORING_ENTER_GETEVENTS: u32 = 1;
/// Room in front of the payload for the opcode's header, so the two read as one request body.
const OP_ROOM: usize = 128;
/// `user_data` of the poll on the stop eventfd.
const STOP: u64 = u64::MAX;

#[repr(C)]
struct EntInOut {
    flags: u64,
    commit_id: u64,
    payload_sz: u32,
    padding: u32,
    reserved: u64,
}

/// `struct fuse_uring_req_header`.
#[repr(C, align(64))]
struct RingHeaders {
    in_out: [u8; 128],
    op_in: [u8; OP_ROOM],
    ent_in_out: EntInOut,
}

/// `struct fuse_uring_cmd_req`, the command's 80-byte payload.
#[repr(C)]
struct CmdReq {
    flags: u64,
    commit_id: u64,
    qid: u16,
    padding: [u8; 6],
}

/// The reply a handler produced, taken by the queue after the handler returns.
#[derive(Debug, Default)]
pub(crate) struct CapturedReply {
    pub(crate) header: Option<(i32, u64)>,
    pub(crate) payload: Vec<u8>,
}

pub(crate) type Capture = Arc<Mutex<CapturedReply>>;

struct RingEntry {
    headers: Box<RingHeaders>,
    /// `OP_ROOM` bytes, then the payload buffer registered with the kernel.
    buf: Box<[u8]>,
    iov: Box<[libc::iovec; 2]>,
}

/// Size of the opcode's own header, the first request argument, which the kernel puts in
/// `op_in` (zero for opcodes that start with a name). Sizes as negotiated by this crate's INIT:
/// protocol 7.31+, no SETXATTR_EXT.
fn op_header_size(opcode: u32) -> usize {
    match opcode {
        3 => size_of::<fuse_getattr_in>(),
        4 => size_of::<fuse_setattr_in>(),
        8 => size_of::<fuse_mknod_in>(),
        9 => size_of::<fuse_mkdir_in>(),
        12 => size_of::<fuse_rename_in>(),
        13 => size_of::<fuse_link_in>(),
        14 | 27 => size_of::<fuse_open_in>(),
        15 | 28 | 44 => size_of::<fuse_read_in>(),
        16 => size_of::<fuse_write_in>(),
        18 | 29 => size_of::<fuse_release_in>(),
        20 | 30 => size_of::<fuse_fsync_in>(),
        21 => size_of::<fuse_setxattr_in>(),
        22 | 23 => size_of::<fuse_getxattr_in>(),
        25 => size_of::<fuse_flush_in>(),
        // GETLK, SETLK, SETLKW: struct fuse_lk_in
        31..=33 => 48,
        34 => size_of::<fuse_access_in>(),
        35 | 51 => size_of::<fuse_create_in>(),
        37 => size_of::<fuse_bmap_in>(),
        39 => 32,
        40 => size_of::<fuse_poll_in>(),
        43 => size_of::<fuse_fallocate_in>(),
        45 => size_of::<fuse_rename2_in>(),
        46 => size_of::<fuse_lseek_in>(),
        47 => size_of::<fuse_copy_file_range_in>(),
        50 => 8,
        52 => 24,
        // LOOKUP, READLINK, SYMLINK, UNLINK, RMDIR, STATFS, REMOVEXATTR
        _ => 0,
    }
}

/// How many queues the kernel keeps: one per possible CPU.
pub(crate) fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .split(',')
                .filter_map(|range| range.rsplit('-').next()?.parse::<usize>().ok())
                .max()
        })
        .map_or(1, |last| last + 1)
}

/// Whether the kernel offers FUSE over io_uring (the fuse module's `enable_uring`), so that
/// queues are worth starting before INIT says so.
pub(crate) fn offered() -> bool {
    std::fs::read("/sys/module/fuse/parameters/enable_uring").is_ok_and(|v| v.starts_with(b"Y"))
}

/// Payload room the kernel requires: max(8 KiB, max_write, max_pages pages).
pub(crate) fn payload_size(max_write: u32) -> usize {
    let max_pages = std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(256)
        .min(DEFAULT_MAX_PAGES as usize);
    (max_pages * 4096).max(max_write as usize).max(8192)
}

/// Wakes every queue's thread so that it returns (the session is over).
pub(crate) struct StopSignal(OwnedFd);

impl StopSignal {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub(crate) fn fire(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Pins the calling thread to `cpu`; a CPU that is possible but offline is left unpinned.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            debug!(
                cpu,
                "fuse io_uring queue left unpinned: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// One queue: its ring, its entries and the id the kernel knows it by.
pub(crate) struct Queue {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    entries: Vec<RingEntry>,
    qid: u16,
    dev: RawFd,
    stop: RawFd,
    capture: Capture,
}

fn build_ring() -> io::Result<IoUring<squeue::Entry128, cqueue::Entry>> {
    let depth = (QUEUE_DEPTH as u32 + 1).next_power_of_two();
    // Task work runs only when the thread waits on the ring: nothing interrupts a handler.
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(depth)
        .or_else(|_| IoUring::builder().setup_coop_taskrun().build(depth))
}

impl Queue {
    /// Sets up queue `qid` on the calling thread (pinned to that CPU once it registers): its
    /// ring and entries.
    /// Nothing is registered with the kernel yet, so this may run before INIT is answered,
    /// while the session can still decline io_uring.
    pub(crate) fn new(
        qid: usize,
        dev: RawFd,
        payload: usize,
        stop: RawFd,
        capture: Capture,
    ) -> io::Result<Self> {
        let qid = u16::try_from(qid).map_err(|_| io::Error::other("too many fuse queues"))?;
        let mut queue = Self {
            ring: build_ring()?,
            entries: Vec::with_capacity(QUEUE_DEPTH),
            qid,
            dev,
            stop,
            capture,
        };
        for _ in 0..QUEUE_DEPTH {
            let mut headers = Box::new(RingHeaders {
                in_out: [0; 128],
                op_in: [0; OP_ROOM],
                ent_in_out: EntInOut {
                    flags: 0,
                    commit_id: 0,
                    payload_sz: 0,
                    padding: 0,
                    reserved: 0,
                },
            });
            let mut buf = vec![0u8; OP_ROOM + payload].into_boxed_slice();
            let iov = Box::new([
                libc::iovec {
                    iov_base: (&mut *headers as *mut RingHeaders).cast(),
                    iov_len: size_of::<RingHeaders>(),
                },
                libc::iovec {
                    // SAFETY: OP_ROOM is within buf.
                    iov_base: unsafe { buf.as_mut_ptr().add(OP_ROOM) }.cast(),
                    iov_len: payload,
                },
            ]);
            queue.entries.push(RingEntry { headers, buf, iov });
        }
        Ok(queue)
    }

    /// Hands every entry to the kernel (which accepts them only after INIT) and starts
    /// watching the stop signal.
    fn register(&mut self) -> io::Result<()> {
        for i in 0..QUEUE_DEPTH {
            let sqe = self.command(i, CMD_REGISTER, 0);
            self.push(sqe)?;
        }
        let poll = opcode::PollAdd::new(types::Fd(self.stop), libc::POLLIN as u32)
            .build()
            .user_data(STOP)
            .into();
        self.push(poll)?;
        self.ring.submit()?;
        Ok(())
    }

    fn command(&mut self, entry: usize, cmd_op: u32, commit_id: u64) -> squeue::Entry128 {
        let req = CmdReq {
            flags: 0,
            commit_id,
            qid: self.qid,
            padding: [0; 6],
        };
        let mut cmd = [0u8; 80];
        // SAFETY: CmdReq is 24 bytes of plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts((&req as *const CmdReq).cast::<u8>(), size_of::<CmdReq>())
        };
        cmd[..bytes.len()].copy_from_slice(bytes);
        let sqe = opcode::UringCmd80::new(types::Fd(self.dev), cmd_op)
            .cmd(cmd)
            .addr(Some(self.entries[entry].iov.as_ptr() as u64))
            .build()
            .user_data(entry as u64);
        with_iov_count(sqe, 2)
    }

    fn push(&mut self, sqe: squeue::Entry128) -> io::Result<()> {
        // SAFETY: every buffer the entry points at lives in self.entries, which outlives the ring
        // (fields drop in order: the ring first).
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("fuse io_uring submission queue full"))?;
        }
        Ok(())
    }

    /// Registers the queue, then serves requests until the connection ends or `stop` fires.
    /// Call only once INIT has been answered with io_uring granted. `handle` runs a request to
    /// completion; its reply is taken from the capture. `read_into` may serve a READ straight
    /// into the entry's payload (`Some(Ok(bytes))` or `Some(Err(-errno))`); `None` hands the
    /// READ to `handle` like any other request.
    pub(crate) fn run(
        mut self,
        poll: std::time::Duration,
        mut handle: impl FnMut(&[u8], &[u8]),
        mut read_into: impl FnMut(&fuse_in_header, &fuse_read_in, &mut [u8]) -> Option<Result<usize, i32>>,
    ) -> io::Result<()> {
        self.register()?;
        // Pinned only once registered: the kernel holds every request of the mount until all
        // queues have registered, and a thread pinned first would wait for its CPU (busy, say,
        // with writeback) before it could.
        pin_to_cpu(usize::from(self.qid));
        let mut done = Vec::with_capacity(QUEUE_DEPTH + 1);
        // Nothing to poll for before the first request: right after registering, the mount's
        // first users (and whoever mounted) need the CPU more.
        let mut served = false;
        loop {
            if served && !poll.is_zero() {
                self.poll_for(poll)?;
            }
            served = true;
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            done.clear();
            done.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data(), cqe.result())),
            );
            for &(user_data, res) in &done {
                if user_data == STOP {
                    return Ok(());
                }
                if res < 0 {
                    return match -res {
                        libc::ENOTCONN | libc::ENODEV | libc::ECANCELED => Ok(()),
                        errno => Err(io::Error::from_raw_os_error(errno)),
                    };
                }
                let i = user_data as usize;
                let commit_id = match self.serve_read_directly(i, &mut read_into) {
                    Some(commit_id) => commit_id,
                    None => self.serve(i, &mut handle),
                };
                let sqe = self.command(i, CMD_COMMIT_AND_FETCH, commit_id);
                self.push(sqe)?;
            }
        }
    }

    /// Submits what is pending, then looks for the next request for up to `window` before the
    /// caller goes to sleep on the ring, yielding the CPU between looks to anything else that
    /// wants it. Why: a request's reply wakes the requester while this thread still runs on
    /// the requester's CPU, so the scheduler moves the requester to an idle CPU, and its next
    /// request lands on that CPU's queue: every round trip then costs a migration and the
    /// wake-up of an idle CPU (a halted vCPU in a VM). A queue thread that stays runnable for a
    /// moment keeps its CPU from looking idle, so the requester stays where it is. Untarring
    /// 1,000 files: 135 ms polling 30 us against 200 ms without, for the same CPU time in the
    /// daemon (the polling costs what the sleeps and wake-ups no longer do).
    fn poll_for(&mut self, window: std::time::Duration) -> io::Result<()> {
        self.ring.submit()?;
        let start = std::time::Instant::now();
        loop {
            // With deferred task work, completions are only posted when the thread asks the
            // ring for events.
            // SAFETY: no argument is passed.
            match unsafe {
                self.ring
                    .submitter()
                    .enter::<libc::sigset_t>(0, 0, IORING_ENTER_GETEVENTS, None)
            } {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
            if !self.ring.completion().is_empty() || start.elapsed() >= window {
                return Ok(());
            }
            std::thread::yield_now();
        }
    }

    /// If entry `i` holds a READ that `read_into` serves, writes the data and the reply header
    /// into the entry and returns its commit id: the data is copied once, from the file into
    /// the buffer the kernel copies from.
    fn serve_read_directly(
        &mut self,
        i: usize,
        read_into: &mut impl FnMut(&fuse_in_header, &fuse_read_in, &mut [u8]) -> Option<Result<usize, i32>>,
    ) -> Option<u64> {
        let entry = &mut self.entries[i];
        let in_header = fuse_in_header::read_from_bytes(&entry.headers.in_out[..FUSE_IN_HEADER_SIZE]).ok()?;
        if in_header.opcode != fuse_opcode::FUSE_READ as u32 {
            return None;
        }
        let (read_in, _) = fuse_read_in::read_from_prefix(&entry.headers.op_in[..]).ok()?;
        let room = entry.buf.len() - OP_ROOM;
        let want = (read_in.size as usize).min(room);
        let (error, len) = match read_into(&in_header, &read_in, &mut entry.buf[OP_ROOM..OP_ROOM + want])? {
            Ok(n) => (0, n.min(want)),
            Err(errno) => (errno, 0),
        };
        entry.set_reply(in_header.unique, error, len);
        Some(entry.headers.ent_in_out.commit_id)
    }

    /// Serves the request in entry `i` and writes its reply there; returns its commit id.
    fn serve(&mut self, i: usize, handle: &mut impl FnMut(&[u8], &[u8])) -> u64 {
        let entry = &mut self.entries[i];
        let commit_id = entry.headers.ent_in_out.commit_id;
        let payload_len =
            (entry.headers.ent_in_out.payload_sz as usize).min(entry.buf.len() - OP_ROOM);
        let in_header = &entry.headers.in_out[..FUSE_IN_HEADER_SIZE];
        let (unique, opcode) = match fuse_in_header::read_from_bytes(in_header) {
            Ok(h) => (h.unique, h.opcode),
            Err(_) => (commit_id, 0),
        };
        let op_len = op_header_size(opcode);
        entry.buf[OP_ROOM - op_len..OP_ROOM].copy_from_slice(&entry.headers.op_in[..op_len]);
        let body = &entry.buf[OP_ROOM - op_len..OP_ROOM + payload_len];

        handle(in_header, body);

        let mut reply = self.capture.lock().unwrap_or_else(|p| p.into_inner());
        let (mut error, _) = reply.header.take().unwrap_or_else(|| {
            warn!(opcode, "fuse request over io_uring left without a reply");
            (-libc::EIO, unique)
        });
        let room = entry.buf.len() - OP_ROOM;
        let mut len = reply.payload.len();
        if error == 0 && len > room {
            error = -libc::EIO;
        }
        if error != 0 {
            len = 0;
        }
        entry.buf[OP_ROOM..OP_ROOM + len].copy_from_slice(&reply.payload[..len]);
        reply.payload.clear();
        drop(reply);
        entry.set_reply(unique, error, len);
        commit_id
    }
}

impl RingEntry {
    /// Writes the reply header for a reply of `len` payload bytes already in the entry.
    fn set_reply(&mut self, unique: u64, error: i32, len: usize) {
        let out = fuse_out_header {
            len: (FUSE_OUT_HEADER_SIZE + len) as u32,
            error,
            unique,
        };
        self.headers.in_out[..FUSE_OUT_HEADER_SIZE].copy_from_slice(out.as_bytes());
        self.headers.ent_in_out.payload_sz = len as u32;
    }
}

/// Sets the SQE's `len` (the iovec count), which `UringCmd80` has no setter for.
fn with_iov_count(sqe: squeue::Entry128, count: u32) -> squeue::Entry128 {
    // SAFETY: Entry128 is repr(C): a 64-byte io_uring_sqe then 64 command bytes; `len` is the
    // u32 at offset 24 of io_uring_sqe.
    unsafe {
        let mut raw: [u8; 128] = std::mem::transmute(sqe);
        raw[24..28].copy_from_slice(&count.to_ne_bytes());
        std::mem::transmute::<[u8; 128], squeue::Entry128>(raw)
    }
}
