//! Writing tar headers: POSIX ustar blocks, preceded by a PAX extended header when a value does
//! not fit (long names and link names, large ids and sizes, nanosecond or out-of-range mtimes,
//! xattrs). Every field is a pure function of the entry, so the same tree gives the same bytes:
//! no uname/gname, no atime/ctime, a fixed name for PAX headers, records in sorted key order.

use std::io::{self, Write};

pub(crate) const BLOCK: usize = 512;

/// Tar type flags.
pub(crate) mod kind {
    pub const REG: u8 = b'0';
    pub const LINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR: u8 = b'3';
    pub const BLOCK: u8 = b'4';
    pub const DIR: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const PAX: u8 = b'x';
}

/// What one tar entry says about its file.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntryMeta {
    pub kind: u8,
    /// Permission bits plus setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    /// Symlink target or hard link target.
    pub link: Vec<u8>,
    pub devmajor: u32,
    pub devminor: u32,
    /// Sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

const NAME_LEN: usize = 100;
const MAX_OCTAL_7: u64 = 0o7777777;
const MAX_OCTAL_11: u64 = 0o77777777777;
const PAX_NAME: &[u8] = b"././@PaxHeader";

/// Writes the header(s) of one entry (not its data). Returns the bytes written.
pub(crate) fn write_header(out: &mut dyn Write, name: &[u8], meta: &EntryMeta) -> io::Result<u64> {
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if name.len() > NAME_LEN {
        pax.push((b"path".to_vec(), name.to_vec()));
    }
    if meta.link.len() > NAME_LEN {
        pax.push((b"linkpath".to_vec(), meta.link.clone()));
    }
    if meta.uid > MAX_OCTAL_7 {
        pax.push((b"uid".to_vec(), meta.uid.to_string().into_bytes()));
    }
    if meta.gid > MAX_OCTAL_7 {
        pax.push((b"gid".to_vec(), meta.gid.to_string().into_bytes()));
    }
    if meta.size > MAX_OCTAL_11 {
        pax.push((b"size".to_vec(), meta.size.to_string().into_bytes()));
    }
    let (secs, nanos) = meta.mtime;
    let mtime_fits = (0..=MAX_OCTAL_11 as i64).contains(&secs);
    if nanos != 0 || !mtime_fits {
        pax.push((b"mtime".to_vec(), format_pax_time(secs, nanos).into_bytes()));
    }
    for (k, v) in &meta.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        pax.push((key, v.clone()));
    }
    // POSIX says path and linkpath are UTF-8 unless hdrcharset says BINARY; GNU tar honours it.
    let binary = pax
        .iter()
        .any(|(k, v)| (k == b"path" || k == b"linkpath") && std::str::from_utf8(v).is_err());
    if binary {
        pax.push((b"hdrcharset".to_vec(), b"BINARY".to_vec()));
    }
    pax.sort();

    let mut written = 0u64;
    if !pax.is_empty() {
        let mut body = Vec::new();
        for (k, v) in &pax {
            append_pax_record(&mut body, k, v);
        }
        let pax_meta = EntryMeta {
            kind: kind::PAX,
            mode: 0o644,
            size: body.len() as u64,
            ..EntryMeta::default()
        };
        out.write_all(&ustar_block(PAX_NAME, &pax_meta))?;
        out.write_all(&body)?;
        write_padding(out, body.len() as u64)?;
        written += BLOCK as u64 + padded(body.len() as u64);
    }
    out.write_all(&ustar_block(name, meta))?;
    Ok(written + BLOCK as u64)
}

/// Zero bytes after `len` bytes of data up to the next block boundary.
pub(crate) fn write_padding(out: &mut dyn Write, len: u64) -> io::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

pub(crate) fn padded(len: u64) -> u64 {
    len.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// `LEN KEY=VALUE\n` where LEN counts the whole record, its own digits included.
fn append_pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + digits(base);
    if digits(len) + base != len {
        len = base + digits(len);
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// PAX time: `secs[.fraction]`, fraction without trailing zeros; negative times count down
/// from the epoch (`-1.5` is 1.5 s before it).
fn format_pax_time(secs: i64, nanos: u32) -> String {
    if nanos == 0 {
        return secs.to_string();
    }
    let (sign, whole, frac) = if secs < 0 {
        ("-", (secs + 1).unsigned_abs(), 1_000_000_000 - nanos)
    } else {
        ("", secs as u64, nanos)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

fn ustar_block(name: &[u8], meta: &EntryMeta) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let n = name.len().min(NAME_LEN);
    b[..n].copy_from_slice(&name[..n]);
    octal(&mut b[100..108], u64::from(meta.mode & 0o7777));
    octal(
        &mut b[108..116],
        if meta.uid > MAX_OCTAL_7 { 0 } else { meta.uid },
    );
    octal(
        &mut b[116..124],
        if meta.gid > MAX_OCTAL_7 { 0 } else { meta.gid },
    );
    octal(
        &mut b[124..136],
        if meta.size > MAX_OCTAL_11 {
            0
        } else {
            meta.size
        },
    );
    let secs = meta.mtime.0;
    let mtime = if (0..=MAX_OCTAL_11 as i64).contains(&secs) {
        secs as u64
    } else {
        0
    };
    octal(&mut b[136..148], mtime);
    b[156] = meta.kind;
    let l = meta.link.len().min(NAME_LEN);
    b[157..157 + l].copy_from_slice(&meta.link[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    octal(&mut b[329..337], u64::from(meta.devmajor));
    octal(&mut b[337..345], u64::from(meta.devminor));
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|x| u64::from(*x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

/// Zero-padded octal filling the field but its last byte (a NUL), as Go and GNU tar write it.
/// Callers pass only values that fit.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    let s = s.as_bytes();
    let start = s.len().saturating_sub(width);
    field[..width].copy_from_slice(&s[start..]);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for vlen in [
            0usize, 1, 5, 90, 91, 92, 93, 94, 95, 96, 990, 995, 996, 9990,
        ] {
            let mut out = Vec::new();
            let v = vec![b'v'; vlen];
            append_pax_record(&mut out, b"path", &v);
            let sp = out.iter().position(|b| *b == b' ').unwrap();
            let n: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(n, out.len(), "value length {vlen}");
        }
    }

    #[test]
    fn pax_times() {
        assert_eq!(format_pax_time(5, 0), "5");
        assert_eq!(format_pax_time(5, 500_000_000), "5.5");
        assert_eq!(format_pax_time(1, 1), "1.000000001");
        assert_eq!(format_pax_time(-2, 500_000_000), "-1.5");
    }

    #[test]
    fn header_fields_and_checksum() {
        let meta = EntryMeta {
            kind: kind::REG,
            mode: 0o4755,
            uid: 1000,
            gid: 50,
            size: 12,
            mtime: (1_700_000_000, 0),
            ..EntryMeta::default()
        };
        let mut out = Vec::new();
        let n = write_header(&mut out, b"bin/su", &meta).unwrap();
        assert_eq!(n, 512);
        assert_eq!(out.len(), 512);
        assert_eq!(&out[..6], b"bin/su");
        assert_eq!(&out[100..108], b"0004755\0");
        assert_eq!(&out[257..265], b"ustar\x0000");
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&out[..512]);
        assert_eq!(h.cksum().unwrap(), {
            let mut c = out.clone();
            c[148..156].fill(b' ');
            c.iter().map(|x| u32::from(*x)).sum::<u32>()
        });
    }

    #[test]
    fn huge_sizes_and_binary_names_go_to_pax() {
        let mut name = vec![b'x'; 120];
        name.push(0xe9);
        let meta = EntryMeta {
            kind: kind::REG,
            size: 20 << 30,
            ..EntryMeta::default()
        };
        let mut out = Vec::new();
        write_header(&mut out, &name, &meta).unwrap();
        let body = String::from_utf8_lossy(&out[512..1024]).into_owned();
        assert!(body.contains(" size=21474836480\n"), "{body:?}");
        assert!(body.contains(" hdrcharset=BINARY\n"), "{body:?}");
        let mut r = crate::archive::reader::TarReader::new(&out[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.size, 20 << 30);
        assert_eq!(e.path, name);
    }

    #[test]
    fn long_values_go_to_pax() {
        let name = vec![b'n'; 150];
        let meta = EntryMeta {
            kind: kind::REG,
            uid: 1 << 40,
            mtime: (3, 7),
            xattrs: vec![(b"user.k".to_vec(), b"v\0bin".to_vec())],
            ..EntryMeta::default()
        };
        let mut out = Vec::new();
        let n = write_header(&mut out, &name, &meta).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out[156], kind::PAX);
        let body = String::from_utf8_lossy(&out[512..1024]).into_owned();
        assert!(body.contains("SCHILY.xattr.user.k=v\0bin\n"), "{body:?}");
        assert!(body.contains(" uid=1099511627776\n"));
        assert!(body.contains(" mtime=3.000000007\n"));
        assert!(body.contains(&format!(" path={}\n", "n".repeat(150))));
    }
}
