//! Reading tar streams: ustar, GNU and PAX headers, GNU long names/links, PAX path, linkpath,
//! size, uid, gid, mtime, atime and `SCHILY.xattr.*` records. Our own small parser rather than
//! `tar::Archive` so that we see exactly what the stream holds: a missing end-of-archive
//! marker, a short data block or a bad checksum is an error, never a silently shorter layer.

//!
//! Extension headers are capped per file entry (bytes and count, see `limits.rs`) and parsed
//! in one pass: each record is looked at once, a repeated xattr name is found by hash.

use std::collections::HashMap;
use std::io::{self, Read};

use super::header::{kind, BLOCK};
use super::limits::ExtensionBudget;
use super::tar_fields::{
    field, header_path, parse_number, parse_octal, parse_signed, pax_records, trim_nul,
};
use crate::error::{Error, Result};

/// One file entry, with every extension header folded in.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    pub atime: Option<(i64, u32)>,
    pub devmajor: u32,
    pub devminor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

pub(crate) struct TarReader<R: Read> {
    inner: R,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    /// Offset in the stream, for error messages.
    offset: u64,
}

fn corrupt(offset: u64, what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("corrupt layer tar at byte {offset}: {what}"))
}

fn truncated(offset: u64, what: &str) -> Error {
    Error::invalid(format!(
        "layer tar is truncated at byte {offset} ({what}); the stream ended early"
    ))
}

#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    atime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index in `xattrs` of each name, so a repeated name replaces its value in O(1).
    xattr_slots: HashMap<Vec<u8>, usize>,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            remaining: 0,
            padding: 0,
            offset: 0,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next file entry, or `None` at the end-of-archive marker. Unread data of the
    /// previous entry is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        self.skip_rest()?;
        let mut pending = Pending::default();
        let mut budget = ExtensionBudget::default();
        let mut block = [0u8; BLOCK];
        loop {
            let at = self.offset;
            if !self.read_block(&mut block)? {
                return Err(truncated(at, "no end-of-archive marker"));
            }
            if block.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            verify_checksum(&block, at)?;
            let typeflag = block[field::TYPEFLAG];
            let header_size =
                parse_number(&block[field::SIZE]).ok_or_else(|| corrupt(at, "bad size field"))?;
            match typeflag {
                kind::PAX | b'g' | b'L' | b'K' => {
                    // A PAX size applies to the next file entry, never to extension headers.
                    let size = header_size;
                    budget.charge(size).map_err(|e| corrupt(at, e))?;
                    let data = self.read_meta(size)?;
                    match typeflag {
                        kind::PAX => parse_pax(&data, &mut pending).map_err(|w| corrupt(at, w))?,
                        // Global headers: nothing in an OCI layer depends on them.
                        b'g' => {}
                        b'L' => pending.path = Some(trim_nul(&data).to_vec()),
                        _ => pending.link = Some(trim_nul(&data).to_vec()),
                    }
                    continue;
                }
                _ => {}
            }
            let size = pending.size.unwrap_or(header_size);
            let entry = build_entry(&block, typeflag, size, pending, at)?;
            // As Go's archive/tar (what wrote most layers): header-only types carry no data
            // whatever their size field says.
            let data_len = match entry.kind {
                kind::LINK | kind::SYMLINK | kind::CHAR | kind::BLOCK | kind::DIR | kind::FIFO => 0,
                _ => size,
            };
            self.remaining = data_len;
            self.padding = super::header::padded(data_len) - data_len;
            return Ok(Some(entry));
        }
    }

    /// Reads entry data into `buf` (at most what is left). 0 means the entry's data is done.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", "layer tar", e)),
            }
        };
        if n == 0 {
            return Err(truncated(self.offset, "inside file data"));
        }
        self.remaining -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }

    /// Fills `buf` completely from entry data.
    pub fn read_data_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_data(&mut buf[done..])?;
            if n == 0 {
                return Err(truncated(self.offset, "inside file data"));
            }
            done += n;
        }
        Ok(())
    }

    fn skip_rest(&mut self) -> Result<()> {
        let mut skip = self.remaining + self.padding;
        let mut scratch = [0u8; 8192];
        while skip > 0 {
            let want = scratch.len().min(skip as usize);
            let n = self.read_raw(&mut scratch[..want])?;
            if n == 0 {
                return Err(truncated(self.offset, "inside file data"));
            }
            skip -= n as u64;
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }

    fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", "layer tar", e)),
            }
        }
    }

    /// Reads one block; `false` on a clean EOF before its first byte.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool> {
        let mut done = 0;
        while done < BLOCK {
            let n = self.read_raw(&mut block[done..])?;
            if n == 0 {
                if done == 0 {
                    return Ok(false);
                }
                return Err(truncated(self.offset, "inside a header"));
            }
            done += n;
        }
        Ok(true)
    }

    fn read_meta(&mut self, size: u64) -> Result<Vec<u8>> {
        let mut data = vec![0u8; size as usize];
        let mut done = 0;
        while done < data.len() {
            let n = self.read_raw(&mut data[done..])?;
            if n == 0 {
                return Err(truncated(self.offset, "inside an extension header"));
            }
            done += n;
        }
        self.padding = super::header::padded(size) - size;
        self.skip_rest()?;
        Ok(data)
    }
}

fn verify_checksum(block: &[u8; BLOCK], at: u64) -> Result<()> {
    let stored =
        parse_octal(&block[field::CHECKSUM]).ok_or_else(|| corrupt(at, "bad checksum field"))?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && stored as i64 != signed {
        return Err(corrupt(at, "header checksum mismatch"));
    }
    Ok(())
}

fn build_entry(
    block: &[u8; BLOCK],
    typeflag: u8,
    size: u64,
    pending: Pending,
    at: u64,
) -> Result<Entry> {
    let number = |r: std::ops::Range<usize>, what: &str| {
        parse_number(&block[r]).ok_or_else(|| corrupt(at, format!("bad {what} field")))
    };
    let path = pending.path.unwrap_or_else(|| header_path(block));
    let link = pending
        .link
        .unwrap_or_else(|| trim_nul(&block[field::LINKNAME]).to_vec());
    let mtime = match pending.mtime {
        Some(t) => t,
        None => {
            let secs =
                parse_signed(&block[field::MTIME]).ok_or_else(|| corrupt(at, "bad mtime"))?;
            (secs, 0)
        }
    };
    let mut kind = typeflag;
    // Old (V7) tars: a NUL type flag is a regular file, or a directory when the name ends in /.
    if kind == 0 || kind == b'7' {
        kind = if typeflag == 0 && path.ends_with(b"/") {
            kind::DIR
        } else {
            kind::REG
        };
    }
    let (devmajor, devminor) = if matches!(kind, kind::CHAR | kind::BLOCK) {
        let ma = number(field::DEVMAJOR, "devmajor")?;
        let mi = number(field::DEVMINOR, "devminor")?;
        let ma = u32::try_from(ma).map_err(|_| corrupt(at, "device major out of range"))?;
        let mi = u32::try_from(mi).map_err(|_| corrupt(at, "device minor out of range"))?;
        (ma, mi)
    } else {
        (0, 0)
    };
    Ok(Entry {
        path,
        link,
        kind,
        mode: (number(field::MODE, "mode")? & 0o7777) as u32,
        uid: match pending.uid {
            Some(u) => u,
            None => number(field::UID, "uid")?,
        },
        gid: match pending.gid {
            Some(g) => g,
            None => number(field::GID, "gid")?,
        },
        size,
        mtime,
        atime: pending.atime,
        devmajor,
        devminor,
        xattrs: pending.xattrs,
    })
}

fn parse_pax(data: &[u8], p: &mut Pending) -> std::result::Result<(), String> {
    for record in pax_records(data) {
        let (key, value) = record?;
        apply_pax(key, value, p)?;
    }
    Ok(())
}

fn apply_pax(key: &[u8], value: &[u8], p: &mut Pending) -> std::result::Result<(), String> {
    let num = |v: &[u8]| -> std::result::Result<u64, String> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad PAX {}", String::from_utf8_lossy(key)))
    };
    match key {
        b"path" => p.path = Some(value.to_vec()),
        b"linkpath" => p.link = Some(value.to_vec()),
        b"size" => p.size = Some(num(value)?),
        b"uid" => p.uid = Some(num(value)?),
        b"gid" => p.gid = Some(num(value)?),
        b"mtime" => p.mtime = Some(parse_pax_time(value).ok_or("bad PAX mtime")?),
        b"atime" => p.atime = Some(parse_pax_time(value).ok_or("bad PAX atime")?),
        k if k.starts_with(b"GNU.sparse.") => {
            return Err("GNU sparse entries are not supported in layer tars".into())
        }
        k if k.starts_with(b"SCHILY.xattr.") => {
            let name = &k[b"SCHILY.xattr.".len()..];
            if name.is_empty() {
                return Err("empty xattr name".into());
            }
            // The last record for a name wins, as in Go's and GNU tar's readers.
            match p.xattr_slots.get(name) {
                Some(&slot) => p.xattrs[slot].1 = value.to_vec(),
                None => {
                    p.xattr_slots.insert(name.to_vec(), p.xattrs.len());
                    p.xattrs.push((name.to_vec(), value.to_vec()));
                }
            }
        }
        // ctime, charset, comment, uname, gname, LIBARCHIVE.* ...: nothing to apply.
        _ => {}
    }
    Ok(())
}

/// `[-]secs[.fraction]` to (secs, nanos) with nanos in 0..1e9 (floor semantics).
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    if !neg {
        return Some((secs, nanos));
    }
    if nanos == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nanos))
    }
}

#[cfg(test)]
#[path = "reader_limits_tests.rs"]
mod limits_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse() {
        assert_eq!(parse_pax_time(b"5"), Some((5, 0)));
        assert_eq!(parse_pax_time(b"5.5"), Some((5, 500_000_000)));
        assert_eq!(parse_pax_time(b"1.000000001"), Some((1, 1)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn reads_what_the_tar_crate_writes() {
        let mut b = tar::Builder::new(Vec::new());
        let long = "d/".repeat(80) + "file";
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o4755);
        h.set_uid(7);
        h.set_mtime(42);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut r = TarReader::new(&bytes[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path, long.as_bytes());
        assert_eq!(e.mode, 0o4755);
        assert_eq!(e.uid, 7);
        assert_eq!(e.mtime, (42, 0));
        let mut buf = [0u8; 10];
        assert_eq!(r.read_data(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn missing_end_marker_and_short_data_are_errors() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1000);
        b.append_data(&mut h, "f", &vec![1u8; 1000][..]).unwrap();
        let bytes = b.into_inner().unwrap();
        // Cut inside data.
        let mut r = TarReader::new(&bytes[..700]);
        r.next_entry().unwrap().unwrap();
        let err = r.next_entry().unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        // Cut at the end of the entry: no end-of-archive marker.
        let mut r = TarReader::new(&bytes[..1536]);
        r.next_entry().unwrap().unwrap();
        assert!(r
            .next_entry()
            .unwrap_err()
            .to_string()
            .contains("end-of-archive"));
        // Corrupt checksum.
        let mut bad = bytes.clone();
        bad[0] = b'g';
        let err = TarReader::new(&bad[..]).next_entry().unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
