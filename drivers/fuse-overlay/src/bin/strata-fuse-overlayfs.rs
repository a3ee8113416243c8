//! `strata-fuse-overlayfs`: Strata's overlay filesystem with fuse-overlayfs's command line, for
//! head-to-head comparisons:
//!
//! ```text
//! strata-fuse-overlayfs [-f] -o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT
//! ```
//!
//! Without `upperdir` the mount is read-only. `-o writeback=1` turns the FUSE writeback cache
//! on; `-o io_uring=0` keeps requests on /dev/fuse where the kernel offers FUSE over io_uring
//! (the fuse module's `enable_uring`); `-o poll_us=N` sets how long an io_uring queue looks for
//! the next request before it sleeps (default 50, 0 sleeps at once); `-o durable_copy_up=0`
//! lets a copy-up return before the copy is on disk (as fuse-overlayfs does; by default it is
//! fsynced first, as kernel overlayfs does). Without `-f` the command returns once the mount
//! is ready and keeps serving in the background (like fuse-overlayfs); it exits when the
//! filesystem is unmounted.
//!
//! Linked statically it starts faster (no shared libraries to load and relocate), as the
//! benchmark builds it: `cargo rustc --release -p strata-fuse-overlay --bin
//! strata-fuse-overlayfs -- -C target-feature=+crt-static` (not with LTO on top: static glibc
//! and fat LTO gave a binary that crashed on its first write).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use strata_fuse_overlay::{OverlayConfig, OverlayMount};

#[derive(Debug)]
struct Args {
    foreground: bool,
    lowers: Vec<PathBuf>,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    mountpoint: PathBuf,
    writeback: Option<bool>,
    io_uring: Option<bool>,
    poll_us: Option<u64>,
    durable_copy_up: Option<bool>,
}

const USAGE: &str =
    "usage: strata-fuse-overlayfs [-f] -o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT";

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

fn parse_options(opts: &[u8], args: &mut Args) -> anyhow::Result<()> {
    for opt in opts.split(|&b| b == b',').filter(|o| !o.is_empty()) {
        let (key, value) = match opt.iter().position(|&b| b == b'=') {
            Some(i) => (&opt[..i], Some(&opt[i + 1..])),
            None => (opt, None),
        };
        let path = |v: Option<&[u8]>| -> anyhow::Result<PathBuf> {
            let v = v.with_context(|| {
                format!("option {} needs a value", String::from_utf8_lossy(key))
            })?;
            absolute(Path::new(std::ffi::OsStr::from_bytes(v)))
        };
        match key {
            b"lowerdir" => {
                let v = value.context("lowerdir needs a value")?;
                args.lowers = v
                    .split(|&b| b == b':')
                    .filter(|p| !p.is_empty())
                    .map(|p| absolute(Path::new(std::ffi::OsStr::from_bytes(p))))
                    .collect::<anyhow::Result<_>>()?;
            }
            b"upperdir" => args.upper = Some(path(value)?),
            b"workdir" => args.work = Some(path(value)?),
            b"writeback" => args.writeback = Some(value != Some(b"0")),
            b"io_uring" => args.io_uring = Some(value != Some(b"0")),
            b"durable_copy_up" => args.durable_copy_up = Some(value != Some(b"0")),
            b"poll_us" => {
                let v = value.context("poll_us needs a value")?;
                let us = std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .context("poll_us takes microseconds")?;
                args.poll_us = Some(us);
            }
            other => eprintln!(
                "strata-fuse-overlayfs: ignoring option {}",
                String::from_utf8_lossy(other)
            ),
        }
    }
    Ok(())
}

fn parse(argv: Vec<OsString>) -> anyhow::Result<Args> {
    let mut args = Args {
        foreground: false,
        lowers: Vec::new(),
        upper: None,
        work: None,
        mountpoint: PathBuf::new(),
        writeback: None,
        io_uring: None,
        poll_us: None,
        durable_copy_up: None,
    };
    let mut positional = Vec::new();
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        match b {
            b"-f" => args.foreground = true,
            b"-d" | b"--debug" => args.foreground = true,
            b"-h" | b"--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            b"-o" => {
                let o = it.next().context("-o needs options")?;
                parse_options(o.as_bytes(), &mut args)?;
            }
            _ if b.starts_with(b"-o") => parse_options(&b[2..], &mut args)?,
            _ if b.starts_with(b"-") => bail!("unknown flag {}\n{USAGE}", a.to_string_lossy()),
            _ => positional.push(a),
        }
    }
    let [mp] = positional.as_slice() else {
        bail!("expected exactly one mount point\n{USAGE}");
    };
    args.mountpoint = absolute(Path::new(mp))?;
    if args.lowers.is_empty() {
        bail!("no lowerdir given\n{USAGE}");
    }
    if args.upper.is_some() != args.work.is_some() {
        bail!("upperdir and workdir go together\n{USAGE}");
    }
    Ok(args)
}

/// Mounts and serves until unmounted; `ready` (the daemonizing parent's pipe) hears "0" once
/// the mount exists, or the error.
fn serve(args: Args, ready: Option<OwnedFd>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let upper = args.upper.zip(args.work);
        let mut cfg = OverlayConfig::new(args.lowers, upper);
        if let Some(wb) = args.writeback {
            cfg.writeback = wb;
        }
        if let Some(uring) = args.io_uring {
            cfg.io_uring = uring;
        }
        if let Some(durable) = args.durable_copy_up {
            cfg.durable_copy_up = durable;
        }
        if let Some(us) = args.poll_us {
            cfg.poll = std::time::Duration::from_micros(us);
        }
        // The parent hears "0" as soon as the kernel mount exists (from the serving thread),
        // or "1" and the error.
        let daemonized = ready.is_some();
        let ready = std::sync::Arc::new(std::sync::Mutex::new(ready.map(std::fs::File::from)));
        let tell_parent = ready.clone();
        let on_mounted = move || {
            let taken = tell_parent.lock().ok().and_then(|mut r| r.take());
            if let Some(mut f) = taken {
                let _ = f.write_all(b"0");
            }
        };
        let mounted = OverlayMount::mount_notify(cfg, &args.mountpoint, on_mounted).await;
        let mut mount = match mounted {
            Ok(m) => m,
            Err(e) => {
                let taken = ready.lock().ok().and_then(|mut r| r.take());
                if let Some(mut f) = taken {
                    let _ = write!(f, "1mount {}: {e}", args.mountpoint.display());
                }
                bail!("mount {}: {e}", args.mountpoint.display());
            }
        };
        if daemonized {
            detach_stdio();
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = mount.serve() => r?,
            _ = tokio::signal::ctrl_c() => mount.unmount().await?,
            _ = term.recv() => mount.unmount().await?,
        }
        Ok(())
    })
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse(std::env::args_os().skip(1).collect())?;
    if args.foreground {
        return serve(args, None);
    }
    let (rd, wr) = nix::unistd::pipe()?;
    // SAFETY: no threads exist yet (the runtime is built after the fork).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(wr);
            // "0" is the whole message on success: return on it, without waiting for the
            // child to close its end.
            let mut pipe = std::fs::File::from(rd);
            let mut status = [0u8; 1];
            if pipe.read(&mut status)? == 0 {
                bail!("the serving process died before the mount was ready");
            }
            if status[0] == b'0' {
                return Ok(());
            }
            let mut text = Vec::new();
            pipe.read_to_end(&mut text)?;
            bail!("{}", String::from_utf8_lossy(&text))
        }
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let _ = nix::unistd::setsid();
            let _ = OsString::from_vec(Vec::new());
            serve(args, Some(wr))
        }
    }
}
