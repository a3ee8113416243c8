//! The fields of a tar header block and the records of a PAX header: the one parser that both
//! the archive reader and the tar-split recorder use, so they agree on every entry's name and
//! size (the recorder names files by the path the applier stored them under).

use super::header::BLOCK;

/// Offsets of the ustar header fields we read.
pub(crate) mod field {
    use std::ops::Range;
    pub const NAME: Range<usize> = 0..100;
    pub const MODE: Range<usize> = 100..108;
    pub const UID: Range<usize> = 108..116;
    pub const GID: Range<usize> = 116..124;
    pub const SIZE: Range<usize> = 124..136;
    pub const MTIME: Range<usize> = 136..148;
    pub const CHECKSUM: Range<usize> = 148..156;
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: Range<usize> = 157..257;
    pub const DEVMAJOR: Range<usize> = 329..337;
    pub const DEVMINOR: Range<usize> = 337..345;
    pub const PREFIX: Range<usize> = 345..500;
}

/// A text field up to its first NUL.
pub(crate) fn trim_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|c| *c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// The entry's path as the header block gives it: POSIX ustar joins the prefix field; other
/// formats (GNU keeps times there) use the name field alone.
pub(crate) fn header_path(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = trim_nul(&block[field::NAME]);
    let prefix = trim_nul(&block[field::PREFIX]);
    if &block[257..263] == b"ustar\0" && !prefix.is_empty() {
        let mut p = prefix.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    } else {
        name.to_vec()
    }
}

/// A numeric field: octal text (spaces and NULs around it allowed) or GNU base-256.
pub(crate) fn parse_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] != 0x80 {
            return None; // negative base-256 makes no sense for sizes and ids
        }
        let mut v: u64 = 0;
        for (i, b) in field.iter().enumerate() {
            let b = if i == 0 { b & 0x7f } else { *b };
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    parse_octal(field)
}

/// A numeric field that may be negative (mtime).
pub(crate) fn parse_signed(field: &[u8]) -> Option<i64> {
    if field.first() == Some(&0xff) {
        // Negative base-256 (two's complement).
        let mut v: i64 = -1;
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(i64::from(*b))?;
        }
        return Some(v);
    }
    parse_number(field).and_then(|v| i64::try_from(v).ok())
}

pub(crate) fn parse_octal(field: &[u8]) -> Option<u64> {
    let start = match field.iter().position(|b| *b != b' ' && *b != 0) {
        None => return Some(0),
        Some(s) => s,
    };
    let rest = &field[start..];
    let end = rest
        .iter()
        .position(|b| *b == b' ' || *b == 0)
        .unwrap_or(rest.len());
    // Only spaces and NULs may follow the digits.
    if rest[end..].iter().any(|b| *b != b' ' && *b != 0) {
        return None;
    }
    let mut v: u64 = 0;
    for b in &rest[..end] {
        if !(b'0'..=b'7').contains(b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// The `key=value` records of a PAX header body, in order; an error names the first malformed
/// record (after which nothing more is read).
pub(crate) fn pax_records(data: &[u8]) -> PaxRecords<'_> {
    PaxRecords { rest: data }
}

pub(crate) struct PaxRecords<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PaxRecords<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let record = split_record(self.rest);
        match record {
            Ok((key, value, len)) => {
                self.rest = &self.rest[len..];
                Some(Ok((key, value)))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// One `<len> <key>=<value>\n` record: key, value and the record's length.
fn split_record(rest: &[u8]) -> Result<(&[u8], &[u8], usize), &'static str> {
    let sp = rest
        .iter()
        .position(|b| *b == b' ')
        .ok_or("PAX record without length")?;
    let len: usize = std::str::from_utf8(&rest[..sp])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad PAX record length")?;
    if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
        return Err("bad PAX record length");
    }
    let record = &rest[sp + 1..len - 1];
    let eq = record
        .iter()
        .position(|b| *b == b'=')
        .ok_or("PAX record without =")?;
    Ok((&record[..eq], &record[eq + 1..], len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"  644 \0"), Some(0o644));
        assert_eq!(parse_octal(b"\0\0\0"), Some(0));
        assert_eq!(parse_octal(b"64x4"), None);
        assert_eq!(parse_octal(b"64 4"), None);
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 5;
        f[10] = 1;
        assert_eq!(parse_number(&f), Some(261));
        assert_eq!(parse_signed(&[0xff; 12]), Some(-1));
    }

    #[test]
    fn pax_records_in_order_and_errors_stop() {
        let body = b"12 path=a/b\n11 size=42\n";
        let got: Vec<_> = pax_records(body).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![(&b"path"[..], &b"a/b"[..]), (&b"size"[..], &b"42"[..])]
        );
        let bad: Vec<_> = pax_records(b"99 path=x\n11 size=42\n").collect();
        assert_eq!(bad, vec![Err("bad PAX record length")]);
    }

    #[test]
    fn gnu_headers_have_no_prefix() {
        let mut block = [0u8; BLOCK];
        block[..4].copy_from_slice(b"name");
        block[345..351].copy_from_slice(b"prefix");
        block[257..265].copy_from_slice(b"ustar  \0"); // GNU magic
        assert_eq!(header_path(&block), b"name");
        block[257..265].copy_from_slice(b"ustar\x0000"); // POSIX magic
        assert_eq!(header_path(&block), b"prefix/name");
    }
}
