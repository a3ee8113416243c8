//! Tar-split: the bytes of a layer tar that are not file content (headers, PAX records,
//! padding, the end blocks), recorded while the layer is applied. Re-assembled with the file
//! content read back from the layer, they give the exact tar that was loaded, so a saved image
//! keeps its diffIDs and its id (Docker keeps `tar-split.json.gz` for the same reason).
//!
//! Our format (gzip of a record sequence, all integers little endian):
//! `0x02 u32:len bytes` = raw bytes; `0x01 u32:name_len name u64:size` = `size` bytes of the
//! regular file `name` (the entry's path inside the layer).

use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::archive::limits::ExtensionBudget;
use crate::archive::tar_fields::{field, header_path, parse_number, pax_records, trim_nul};
use crate::error::{Error, Result};

const BLOCK: usize = 512;
const RAW: u8 = 0x02;
const FILE: u8 = 0x01;
const RAW_FLUSH: usize = 1 << 20;

enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Bytes kept verbatim (`remaining`), then back to headers.
    Raw { remaining: u64 },
    /// File content (not kept), then `padding` raw bytes.
    Content { remaining: u64, padding: u64 },
    /// A PAX (`x`) or GNU long name (`L`) body: kept verbatim and parsed for the next name.
    /// Its size passed the [`ExtensionBudget`], so `buf` stays within the per-entry cap.
    Meta {
        remaining: u64,
        padding: u64,
        kind: u8,
        buf: Vec<u8>,
    },
    /// Past something we could not parse, or extension headers over the archive reader's
    /// per-entry caps (the apply refuses that layer): everything else is raw.
    Opaque,
}

/// Records the tar-split of a tar stream fed to it in arbitrary chunks.
pub struct Recorder {
    out: GzEncoder<Vec<u8>>,
    state: State,
    header: Vec<u8>,
    raw: Vec<u8>,
    next_name: Option<Vec<u8>>,
    /// A PAX `size` for the next entry (files over 8 GiB), as the archive reader honours it.
    next_size: Option<u64>,
    /// Extension headers since the last file entry, capped as the archive reader caps them.
    budget: ExtensionBudget,
    files: u64,
    error: Option<std::io::Error>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            out: GzEncoder::new(Vec::new(), flate2::Compression::fast()),
            state: State::Header,
            header: Vec::with_capacity(BLOCK),
            raw: Vec::new(),
            next_name: None,
            next_size: None,
            budget: ExtensionBudget::default(),
            files: 0,
            error: None,
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            data = match &mut self.state {
                State::Opaque => {
                    self.raw.extend_from_slice(data);
                    &[]
                }
                State::Header => {
                    let take = (BLOCK - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    if self.header.len() == BLOCK {
                        self.on_header();
                    }
                    &data[take..]
                }
                State::Raw { remaining } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    self.raw.extend_from_slice(&data[..take]);
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                    &data[take..]
                }
                State::Content { remaining, padding } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = after_padding(*padding);
                    }
                    &data[take..]
                }
                State::Meta {
                    remaining,
                    padding,
                    kind,
                    buf,
                } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    self.raw.extend_from_slice(&data[..take]);
                    buf.extend_from_slice(&data[..take]);
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        if *kind == b'x' {
                            let (path, size) = pax_path_and_size(buf);
                            self.next_name = path.or(self.next_name.take());
                            self.next_size = size.or(self.next_size);
                        } else {
                            self.next_name = Some(trim_nul(buf).to_vec());
                        }
                        self.state = after_padding(*padding);
                    }
                    &data[take..]
                }
            };
            if self.raw.len() >= RAW_FLUSH {
                self.flush_raw();
            }
        }
    }

    fn on_header(&mut self) {
        let h = std::mem::take(&mut self.header);
        self.raw.extend_from_slice(&h);
        if h.iter().all(|b| *b == 0) {
            return; // end-of-archive block (or padding): raw
        }
        let Some(header_size) = parse_number(&h[field::SIZE]) else {
            self.state = State::Opaque;
            return;
        };
        let kind = h[field::TYPEFLAG];
        // A PAX size applies to the next file entry, never to extension headers.
        let size = if matches!(kind, b'x' | b'g' | b'L' | b'K') {
            header_size
        } else {
            self.next_size.take().unwrap_or(header_size)
        };
        let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        if matches!(kind, b'x' | b'g' | b'L' | b'K') {
            if self.budget.charge(size).is_err() {
                self.state = State::Opaque;
                return;
            }
        } else {
            self.budget = ExtensionBudget::default();
        }
        match kind {
            b'0' | 0 | b'7' => {
                let block: &[u8; BLOCK] = h.as_slice().try_into().expect("a whole block");
                let name = self.next_name.take().unwrap_or_else(|| header_path(block));
                self.flush_raw();
                self.write_file(&name, size);
                self.state = if size == 0 {
                    State::Header
                } else {
                    State::Content {
                        remaining: size,
                        padding,
                    }
                };
            }
            b'x' | b'L' => {
                self.state = if size == 0 {
                    State::Header
                } else {
                    State::Meta {
                        remaining: size,
                        padding,
                        kind,
                        buf: Vec::new(),
                    }
                };
            }
            // Header-only types carry no body whatever their size field says (as Go's reader).
            b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => {
                self.next_name = None;
                self.next_size = None;
            }
            _ => {
                self.state = after_padding(size + padding);
            }
        }
    }

    fn flush_raw(&mut self) {
        if self.raw.is_empty() {
            return;
        }
        let raw = std::mem::take(&mut self.raw);
        for chunk in raw.chunks(u32::MAX as usize) {
            let r = self
                .out
                .write_all(&[RAW])
                .and_then(|()| self.out.write_all(&(chunk.len() as u32).to_le_bytes()))
                .and_then(|()| self.out.write_all(chunk));
            if let Err(e) = r {
                self.error.get_or_insert(e);
            }
        }
    }

    fn write_file(&mut self, name: &[u8], size: u64) {
        self.files += 1;
        let r = self
            .out
            .write_all(&[FILE])
            .and_then(|()| self.out.write_all(&(name.len() as u32).to_le_bytes()))
            .and_then(|()| self.out.write_all(name))
            .and_then(|()| self.out.write_all(&size.to_le_bytes()));
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }

    /// The encoded tar-split.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.flush_raw();
        if let Some(e) = self.error.take() {
            return Err(Error::io("record", "tar-split", e));
        }
        self.out
            .finish()
            .map_err(|e| Error::io("record", "tar-split", e))
    }
}

fn after_padding(padding: u64) -> State {
    if padding == 0 {
        State::Header
    } else {
        State::Raw { remaining: padding }
    }
}

/// The `path` and `size` records of a PAX header body; a malformed body gives neither (the
/// archive reader refuses such a layer, so what is recorded for it does not matter).
fn pax_path_and_size(body: &[u8]) -> (Option<Vec<u8>>, Option<u64>) {
    let (mut path, mut size) = (None, None);
    for record in pax_records(body) {
        match record {
            Ok((b"path", v)) => path = Some(v.to_vec()),
            Ok((b"size", v)) => size = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
            Ok(_) => {}
            Err(_) => return (None, None),
        }
    }
    (path, size)
}

/// One element of a recorded tar-split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Raw(Vec<u8>),
    File { name: Vec<u8>, size: u64 },
}

/// Reads the segments of an encoded tar-split one by one.
pub struct Segments<R: Read> {
    input: GzDecoder<R>,
}

impl<R: Read> Segments<R> {
    pub fn new(encoded: R) -> Self {
        Self {
            input: GzDecoder::new(encoded),
        }
    }

    pub fn next_segment(&mut self) -> Result<Option<Segment>> {
        let bad = |e: std::io::Error| Error::io("read", "tar-split", e);
        let mut tag = [0u8; 1];
        match self.input.read(&mut tag) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(bad(e)),
        }
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).map_err(bad)?;
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        self.input.read_exact(&mut bytes).map_err(bad)?;
        match tag[0] {
            RAW => Ok(Some(Segment::Raw(bytes))),
            FILE => {
                let mut size = [0u8; 8];
                self.input.read_exact(&mut size).map_err(bad)?;
                Ok(Some(Segment::File {
                    name: bytes,
                    size: u64::from_le_bytes(size),
                }))
            }
            t => Err(Error::Other(format!("tar-split: unknown record type {t}"))),
        }
    }
}

/// Opens a layer file by its tar entry name.
pub type FileOpener<'a> = dyn FnMut(&[u8]) -> Result<Box<dyn Read>> + 'a;

/// Rebuilds the tar: raw segments verbatim, file content from `open_file(name)`, which must
/// yield at least `size` bytes.
pub fn assemble(encoded: impl Read, out: &mut dyn Write, open_file: &mut FileOpener) -> Result<()> {
    let mut segments = Segments::new(encoded);
    while let Some(seg) = segments.next_segment()? {
        match seg {
            Segment::Raw(bytes) => out
                .write_all(&bytes)
                .map_err(|e| Error::io("write", "layer tar", e))?,
            // Empty files need no content; whiteouts (`.wh.*`, always empty) have no file.
            Segment::File { size: 0, .. } => {}
            Segment::File { name, size } => {
                let shown = String::from_utf8_lossy(&name).into_owned();
                let mut reader = open_file(&name)?.take(size);
                let copied =
                    std::io::copy(&mut reader, out).map_err(|e| Error::io("copy", &shown, e))?;
                if copied != size {
                    return Err(Error::Other(format!(
                        "layer file {shown} has {copied} bytes, the layer tar had {size}: the \
                         layer changed since it was registered"
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("a.txt", b"hello");
        add(
            &format!("{}/long.txt", "d".repeat(150)),
            b"long name content",
        );
        add("empty", b"");
        add("big", &vec![7u8; 70_000]);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", "a.txt").unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn records_and_reassembles_exactly() {
        let tar = sample_tar();
        let mut files: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut archive = tar::Archive::new(&tar[..]);
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path_bytes().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(name, data);
        }
        for chunk in [1usize, 7, 512, 4096, 1 << 20] {
            let mut rec = Recorder::new();
            for piece in tar.chunks(chunk) {
                rec.feed(piece);
            }
            let encoded = rec.finish().unwrap();
            let mut out = Vec::new();
            assemble(&encoded[..], &mut out, &mut |name| {
                Ok(Box::new(std::io::Cursor::new(files[name].clone())))
            })
            .unwrap();
            assert_eq!(out, tar, "chunk size {chunk}");
            assert!(encoded.len() < tar.len() / 4);
        }
    }

    #[test]
    fn short_file_is_an_error() {
        let tar = sample_tar();
        let mut rec = Recorder::new();
        rec.feed(&tar);
        let encoded = rec.finish().unwrap();
        let err = assemble(&encoded[..], &mut Vec::new(), &mut |_| {
            Ok(Box::new(std::io::Cursor::new(Vec::new())))
        })
        .unwrap_err();
        assert!(err.to_string().contains("changed"), "{err}");
    }

    #[test]
    fn pax_path_and_size_are_parsed() {
        let body = b"28 path=some/very/long/name\n13 mtime=1.5\n16 size=9999999\n";
        let (path, size) = pax_path_and_size(body);
        assert_eq!(path.unwrap(), b"some/very/long/name".to_vec());
        assert_eq!(size, Some(9_999_999));
    }

    /// Guards that the recorder names files as the archive reader does. A GNU header keeps its
    /// access time where ustar has the name prefix; the recorder's own header parser (before
    /// the two shared one) joined those bytes to the name, so the file could not be found at
    /// save time ("00000000001/f" instead of "f").
    #[test]
    fn gnu_header_times_are_not_a_name_prefix() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path("f").unwrap();
        h.set_size(3);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().set_atime(1);
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut rec = Recorder::new();
        rec.feed(&tar);
        let encoded = rec.finish().unwrap();
        let mut out = Vec::new();
        assemble(&encoded[..], &mut out, &mut |name| {
            assert_eq!(name, b"f");
            Ok(Box::new(std::io::Cursor::new(b"abc".to_vec())))
        })
        .unwrap();
        assert_eq!(out, tar);
    }

    /// Guards that the recorder holds the archive reader's per-entry caps on extension headers
    /// (`archive::limits`): three chained 400 KiB PAX headers (each under the old 1 MiB
    /// per-header limit) put it in opaque mode, so it neither buffers nor parses them, and the
    /// bytes still reassemble exactly. On HEAD 3af0184 this test failed: the recorder parsed
    /// all three (buffering each) and recorded the entry after them as a file.
    #[test]
    fn chained_extension_headers_over_the_cap_are_kept_raw_not_parsed() {
        let mut b = tar::Builder::new(Vec::new());
        let value = vec![b'v'; 400 << 10];
        for i in 0..3 {
            let key = format!("SCHILY.xattr.user.{i}=");
            // `LEN KEY=VALUE\n`, LEN counting its own six digits.
            let len = key.len() + value.len() + 2 + 6;
            let mut body = format!("{len} {key}").into_bytes();
            body.extend_from_slice(&value);
            body.push(b'\n');
            assert_eq!(body.len(), len);
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(body.len() as u64);
            h.set_cksum();
            b.append(&h, &body[..]).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"hello"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut rec = Recorder::new();
        rec.feed(&tar);
        let encoded = rec.finish().unwrap();
        let mut segments = Segments::new(&encoded[..]);
        let mut raw = Vec::new();
        while let Some(seg) = segments.next_segment().unwrap() {
            match seg {
                Segment::Raw(bytes) => raw.extend_from_slice(&bytes),
                Segment::File { name, .. } => panic!("parsed past the cap: file {name:?}"),
            }
        }
        assert_eq!(raw, tar);
    }
}
