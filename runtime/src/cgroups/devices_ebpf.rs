//! The device allowlist on cgroup v2: a small BPF_PROG_TYPE_CGROUP_DEVICE program, assembled
//! here from the rules and attached to the container's cgroup (what runc and crun do).
//!
//! The kernel runs it at every open/mknod of a device node with a `bpf_cgroup_dev_ctx`
//! `{ u32 access_type (access << 16 | type); u32 major; u32 minor }`; it returns 1 to allow,
//! 0 to deny (EPERM). The program is a chain of blocks, one per allow rule: each block
//! compares what its rule restricts and jumps to the next block on a mismatch, or returns 1;
//! after the last block it returns 0.
//!
//! Lifetime: the attachment holds the program, so its fd is closed right after attaching;
//! removing the cgroup (at the container's end) detaches and frees it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use strata_core::{Error, IoContext, Result};

use super::devices::{access, DeviceKind, DeviceRule};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Programs of the parent cgroups keep running too: every one must allow.
const BPF_F_ALLOW_MULTI: u32 = 2;
/// `BPF_DEVCG_DEV_BLOCK`, `BPF_DEVCG_DEV_CHAR`: the low half of `access_type`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

// Registers: r1 the context, then r2 type, r3 access, r4 major, r5 minor; r0 the result.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

/// One `struct bpf_insn` as the kernel reads it (little-endian layout of code, regs, off, imm).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// r_dst = *(u32 *)(r_src + off)
fn load_u32(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x61, dst, src, off, 0) // BPF_LDX | BPF_MEM | BPF_W
}
fn and32(dst: u8, imm: i32) -> u64 {
    insn(0x54, dst, 0, 0, imm) // BPF_ALU | BPF_AND | BPF_K
}
fn rsh32(dst: u8, imm: i32) -> u64 {
    insn(0x74, dst, 0, 0, imm) // BPF_ALU | BPF_RSH | BPF_K
}
fn mov32_reg(dst: u8, src: u8) -> u64 {
    insn(0xbc, dst, src, 0, 0) // BPF_ALU | BPF_MOV | BPF_X
}
fn mov64_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, 0, imm) // BPF_ALU64 | BPF_MOV | BPF_K
}
/// if r_dst != imm: skip `off` instructions
fn jne(dst: u8, imm: i32, off: i16) -> u64 {
    insn(0x55, dst, 0, off, imm) // BPF_JMP | BPF_JNE | BPF_K
}
fn exit() -> u64 {
    insn(0x95, 0, 0, 0, 0) // BPF_JMP | BPF_EXIT
}

/// The checks of one rule, each a jump to the end of the block when it fails; then allow.
fn rule_block(rule: &DeviceRule) -> Vec<u64> {
    // (the instructions before the jump, register, value): the jump's offset is filled in
    // once the block's length is known.
    let mut checks: Vec<(Option<u64>, u8, i32)> = Vec::new();
    match rule.kind {
        DeviceKind::All => {}
        DeviceKind::Char => checks.push((None, R2, DEV_CHAR)),
        DeviceKind::Block => checks.push((None, R2, DEV_BLOCK)),
    }
    if rule.access & access::ALL != access::ALL {
        // Allowed only if the request asks for nothing outside the rule: r1 = r3 & !rule.
        checks.push((Some(and32(R1, !(rule.access as i32))), R1, 0));
    }
    if let Some(major) = rule.major {
        checks.push((None, R4, major as i32));
    }
    if let Some(minor) = rule.minor {
        checks.push((None, R5, minor as i32));
    }
    let len = checks
        .iter()
        .map(|(pre, ..)| if pre.is_some() { 3 } else { 1 })
        .sum::<usize>()
        + 2;
    let mut out = Vec::with_capacity(len);
    for (pre, reg, value) in checks {
        if let Some(pre) = pre {
            out.push(mov32_reg(R1, R3));
            out.push(pre);
        }
        let skip = len - out.len() - 1;
        out.push(jne(reg, value, skip as i16));
    }
    out.push(mov64_imm(R0, 1));
    out.push(exit());
    out
}

/// The whole program for an allowlist.
pub fn program(rules: &[DeviceRule]) -> Vec<u64> {
    let mut prog = vec![
        load_u32(R2, R1, 0),
        and32(R2, 0xffff),
        load_u32(R3, R1, 0),
        rsh32(R3, 16),
        load_u32(R4, R1, 4),
        load_u32(R5, R1, 8),
    ];
    for rule in rules {
        prog.extend(rule_block(rule));
    }
    prog.push(mov64_imm(R0, 0));
    prog.push(exit());
    prog
}

/// The head of `union bpf_attr` for BPF_PROG_LOAD; the rest of the union stays zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 8],
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _rest: [u32; 7],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn load(prog: &[u64]) -> Result<OwnedFd> {
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: c"Apache-2.0".as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    attr.prog_name[..6].copy_from_slice(b"strata");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(Error::Other(format!(
                "loading the device filter (bpf BPF_PROG_LOAD): {e}; verifier: {}",
                String::from_utf8_lossy(&log[..end]).trim()
            )))
        }
    }
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory `dir`.
pub fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let prog = load(&program(rules))?;
    let cgroup = std::fs::File::open(dir).ctx("open cgroup", dir)?;
    let mut attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).ctx("attach device filter (bpf BPF_PROG_ATTACH)", dir)?;
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _rest: [u32; 9],
}

/// How many device programs are attached to the cgroup v2 directory `dir` itself.
pub fn attached_programs(dir: &Path) -> Result<u32> {
    let cgroup = std::fs::File::open(dir).ctx("open cgroup", dir)?;
    let mut attr = ProgQueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr).ctx("query device filters (bpf BPF_PROG_QUERY)", dir)?;
    Ok(attr.prog_cnt)
}

#[cfg(test)]
mod tests {
    use super::super::devices::default_rules;
    use super::*;

    /// Runs the program on one request, as the kernel would: a tiny interpreter of exactly the
    /// instructions this module emits.
    fn run(prog: &[u64], kind: i32, acc: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(acc << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0;
        loop {
            let i = prog[pc];
            let (code, dst, src) = (
                i as u8,
                ((i >> 8) & 0xf) as usize,
                ((i >> 12) & 0xf) as usize,
            );
            let off = (i >> 16) as u16 as i16;
            let imm = (i >> 32) as u32;
            pc += 1;
            match code {
                0x61 => r[dst] = u64::from(ctx[off as usize / 4]),
                0x54 => r[dst] = (r[dst] as u32 & imm) as u64,
                0x74 => r[dst] = ((r[dst] as u32) >> imm) as u64,
                0xbc => r[dst] = r[src] as u32 as u64,
                0xb7 => r[dst] = imm as i32 as i64 as u64,
                0x55 if r[dst] != imm as i32 as i64 as u64 => pc += off as usize,
                0x55 => {}
                0x95 => return r[0],
                _ => panic!("unexpected opcode {code:#x}"),
            }
        }
    }

    #[test]
    fn default_program_allows_dockers_list_only() {
        let prog = program(&default_rules());
        let rw = access::READ | access::WRITE;
        assert_eq!(run(&prog, DEV_CHAR, rw, 1, 3), 1, "/dev/null");
        assert_eq!(run(&prog, DEV_CHAR, rw, 136, 7), 1, "a pty");
        assert_eq!(run(&prog, DEV_BLOCK, access::MKNOD, 8, 0), 1, "mknod sda");
        assert_eq!(run(&prog, DEV_BLOCK, access::READ, 8, 0), 0, "read sda");
        assert_eq!(run(&prog, DEV_CHAR, access::READ, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&prog, DEV_CHAR, access::READ, 10, 200), 1, "tun");
    }

    #[test]
    fn partial_access_and_allow_all() {
        let prog = program(&["c 1:3 r".parse().unwrap()]);
        assert_eq!(run(&prog, DEV_CHAR, access::READ, 1, 3), 1);
        assert_eq!(run(&prog, DEV_CHAR, access::READ | access::WRITE, 1, 3), 0);
        assert_eq!(run(&prog, DEV_BLOCK, access::READ, 1, 3), 0);
        let all = program(&[DeviceRule::ALLOW_ALL]);
        assert_eq!(run(&all, DEV_BLOCK, access::ALL, 8, 0), 1);
        assert_eq!(run(&program(&[]), DEV_CHAR, access::READ, 1, 3), 0);
    }

    #[test]
    fn the_kernel_verifier_accepts_the_program() {
        assert!(nix::unistd::geteuid().is_root(), "loading eBPF needs root");
        load(&program(&default_rules())).unwrap();
    }
}
