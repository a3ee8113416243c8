//! Bounded fuzzing of the tar reader, the tar-split recorder and the applier, on stable Rust
//! (proptest), as ordinary tests. Inputs are near-valid tars built from a model (extension
//! headers with odd PAX records, `..` and absolute names, whiteouts, hard links to missing
//! targets, long names, wrong sizes), then byte-mutated, checksums optionally fixed, and cut.
//!
//! `STRATA_FUZZ_CASES` sets the cases per target (default 1000 for the reader, 256 for the
//! applier: about 3 s together, the CI budget), and
//! `STRATA_FUZZ_SEED` the seed (default fixed, so CI is reproducible). A failure prints the
//! shrunk input: make it a regression test beside the code it breaks.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::*;
use crate::archive::header::BLOCK;
use crate::archive::limits::MAX_EXTENSION_BYTES;
use crate::archive::reader::TarReader;
use crate::store::tarsplit::{Recorder, Segment, Segments};

/// The runner every target uses: `default_cases` unless `STRATA_FUZZ_CASES` says otherwise,
/// seed from `STRATA_FUZZ_SEED`.
fn runner(default_cases: u64) -> TestRunner {
    let env_u64 = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
            .unwrap_or(default)
    };
    let cases = env_u64("STRATA_FUZZ_CASES", default_cases) as u32;
    let seed = env_u64("STRATA_FUZZ_SEED", 0x5712_a7a5);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Runs `test` on every case; it returns whether the case got deep (a whole entry read, a
/// tar applied). At least one case in 50 must, or the generator has stopped reaching the code
/// behind the header checks and the run proves little.
fn run<S: Strategy>(target: &str, cases: u64, strategy: S, test: impl Fn(S::Value) -> bool) {
    let mut runner = runner(cases);
    let cases = runner.config().cases as usize;
    let deep = AtomicUsize::new(0);
    let result = runner.run(&strategy, |input| {
        if test(input) {
            deep.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz target {target} failed: {e}");
    }
    let deep = deep.into_inner();
    assert!(
        deep * 50 >= cases,
        "{target}: only {deep} of {cases} cases got deep"
    );
}

/// Replaced by the sandbox's parent directory, so links and names can aim at the sentinel.
const OUTSIDE: &[u8] = b"@OUT@";

const PIECES: &[&[u8]] = &[
    b"..",
    b".",
    b"/",
    b"a",
    b"b/",
    b"l",
    b"sentinel",
    b".wh.",
    b".wh.a",
    b".wh..wh..opq",
    b".wh..wh.plnk",
    b"\xff\xfe",
    b"\0",
    OUTSIDE,
];

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(prop::sample::select(PIECES), 1..5).prop_map(|p| p.concat()),
        1 => (1usize..300).prop_map(|n| b"long/".repeat(n / 5 + 1)),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

/// One PAX record: well formed, with a length that is off, or plain garbage.
#[derive(Debug, Clone)]
enum PaxRecord {
    Good(Vec<u8>, Vec<u8>),
    OffByLength(Vec<u8>, Vec<u8>, i8),
    Garbage(Vec<u8>),
}

const PAX_KEYS: &[&[u8]] = &[
    b"path",
    b"linkpath",
    b"size",
    b"uid",
    b"gid",
    b"mtime",
    b"atime",
    b"SCHILY.xattr.user.a",
    b"SCHILY.xattr.trusted.overlay.opaque",
    b"SCHILY.xattr.security.capability",
    b"SCHILY.xattr.",
    b"GNU.sparse.size",
    b"hdrcharset",
    b"comment",
    b"",
];

const PAX_VALUES: &[&[u8]] = &[
    b"0",
    b"1",
    b"-1.5",
    b"1.000000001",
    b"18446744073709551616",
    b"99999999999",
    b"4096",
    b"y",
    b"",
];

fn pax_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        name(),
        prop::sample::select(PAX_VALUES).prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 0..24),
    ]
}

fn pax_record() -> impl Strategy<Value = PaxRecord> {
    let key = prop::sample::select(PAX_KEYS).prop_map(<[u8]>::to_vec);
    prop_oneof![
        6 => (key.clone(), pax_value()).prop_map(|(k, v)| PaxRecord::Good(k, v)),
        1 => (key, pax_value(), any::<i8>()).prop_map(|(k, v, d)| PaxRecord::OffByLength(k, v, d)),
        1 => prop::collection::vec(any::<u8>(), 0..30).prop_map(PaxRecord::Garbage),
    ]
}

fn encode_pax(records: &[PaxRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let (k, v, delta) = match r {
            PaxRecord::Garbage(g) => {
                out.extend_from_slice(g);
                continue;
            }
            PaxRecord::Good(k, v) => (k, v, 0),
            PaxRecord::OffByLength(k, v, d) => (k, v, i64::from(*d)),
        };
        let base = k.len() + v.len() + 3;
        let len = (1..8)
            .map(|d| base + d)
            .find(|n| n.to_string().len() + base == *n);
        let len = len.unwrap_or(base) as i64 + delta;
        out.extend_from_slice(format!("{len} ").as_bytes());
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// An extension header before an entry: type flag (`x`, `g`, `L`, `K`) and body.
#[derive(Debug, Clone)]
struct Extension(u8, Vec<u8>);

fn extension() -> impl Strategy<Value = Extension> {
    prop_oneof![
        3 => prop::collection::vec(pax_record(), 0..6)
            .prop_map(|r| Extension(kind::PAX, encode_pax(&r))),
        1 => prop::collection::vec(pax_record(), 0..3).prop_map(|r| Extension(b'g', encode_pax(&r))),
        2 => name().prop_map(|n| Extension(b'L', n)),
        1 => name().prop_map(|n| Extension(b'K', n)),
    ]
}

#[derive(Debug, Clone)]
struct EntrySpec {
    extensions: Vec<Extension>,
    name: Vec<u8>,
    meta: EntryMeta,
    data: Vec<u8>,
}

const KINDS: &[u8] = &[
    kind::REG,
    kind::REG,
    kind::DIR,
    kind::SYMLINK,
    kind::LINK,
    kind::LINK,
    kind::FIFO,
    kind::CHAR,
    kind::BLOCK,
    0,
    b'7',
    b'S',
    b'V',
    b'x',
    b'g',
    b'L',
    b'?',
];

fn entry() -> impl Strategy<Value = EntrySpec> {
    let ids = (0u64..10, 0u64..70_000, any::<u64>());
    (
        prop::collection::vec(extension(), 0..3),
        (name(), prop::sample::select(KINDS), name()),
        (any::<u32>(), ids.clone(), ids, any::<(i64, u32)>()),
        (0u32..3, 0u32..5),
        prop::collection::vec(any::<u8>(), 0..1100),
    )
        .prop_map(
            |(extensions, (name, k, link), (mode, uid, gid, mtime), dev, data)| {
                let pick =
                    |(which, small, big): (u64, u64, u64)| if which == 0 { big } else { small };
                let meta = EntryMeta {
                    kind: k,
                    mode: mode & 0o7777,
                    uid: pick(uid),
                    gid: pick(gid),
                    size: data.len() as u64,
                    mtime: (mtime.0, mtime.1 % 1_000_000_000),
                    link,
                    devmajor: dev.0,
                    devminor: dev.1,
                    xattrs: Vec::new(),
                };
                EntrySpec {
                    extensions,
                    name,
                    meta,
                    data,
                }
            },
        )
}

/// What is done to the serialised tar: bytes overwritten (index taken modulo the length),
/// a size field replaced, the stream cut, checksums fixed after all that or not.
#[derive(Debug, Clone)]
struct TarCase {
    entries: Vec<EntrySpec>,
    pokes: Vec<(usize, u8)>,
    size_fields: Vec<(usize, u64)>,
    fix_checksums: bool,
    cut: Option<usize>,
}

fn tar_case() -> impl Strategy<Value = TarCase> {
    let sizes = prop_oneof![
        0u64..2048,
        Just(u64::MAX >> 1),
        Just(1 << 33),
        Just(2 << 20)
    ];
    (
        prop::collection::vec(entry(), 0..6),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        prop::collection::vec((any::<usize>(), sizes), 0..2),
        prop::bool::weighted(0.8),
        prop::option::weighted(0.15, any::<usize>()),
    )
        .prop_map(
            |(entries, pokes, size_fields, fix_checksums, cut)| TarCase {
                entries,
                pokes,
                size_fields,
                fix_checksums,
                cut,
            },
        )
}

fn put_size(block: &mut [u8], size: u64) {
    if size <= 0o77777777777 {
        block[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        block[124..128].copy_from_slice(&[0x80, 0, 0, 0]);
        block[128..136].copy_from_slice(&size.to_be_bytes());
    }
}

fn fix_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|x| u64::from(*x)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn replace_outside(bytes: &[u8], outside: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.starts_with(OUTSIDE) {
            out.extend_from_slice(outside);
            rest = &rest[OUTSIDE.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// Serialises `case`, with [`OUTSIDE`] in names and links replaced by `outside`.
fn build_tar(case: &TarCase, outside: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut headers = Vec::new();
    for e in &case.entries {
        for Extension(typeflag, body) in &e.extensions {
            let body = replace_outside(body, outside);
            let mut block = [0u8; BLOCK];
            block[..13].copy_from_slice(b"././@LongLink");
            block[100..108].copy_from_slice(b"0000644\0");
            block[156] = *typeflag;
            block[257..265].copy_from_slice(b"ustar\x0000");
            put_size(&mut block, body.len() as u64);
            fix_checksum(&mut block);
            headers.push(out.len());
            out.extend_from_slice(&block);
            out.extend_from_slice(&body);
            header::write_padding(&mut out, body.len() as u64).unwrap();
        }
        let mut meta = e.meta.clone();
        meta.link = replace_outside(&meta.link, outside);
        let start = out.len();
        let n = header::write_header(&mut out, &replace_outside(&e.name, outside), &meta).unwrap();
        headers.push(start + n as usize - BLOCK);
        out.extend_from_slice(&e.data);
        header::write_padding(&mut out, e.data.len() as u64).unwrap();
    }
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    for (at, size) in &case.size_fields {
        if let Some(&h) = headers.get(at % headers.len().max(1)) {
            put_size(&mut out[h..h + BLOCK], *size);
            fix_checksum(&mut out[h..h + BLOCK]);
        }
    }
    for (at, byte) in &case.pokes {
        let i = at % out.len();
        out[i] = *byte;
    }
    if case.fix_checksums {
        for h in &headers {
            fix_checksum(&mut out[*h..*h + BLOCK]);
        }
    }
    if let Some(cut) = case.cut {
        out.truncate(cut % (out.len() + 1));
    }
    out
}

/// Hands the stream over in pieces of at most `step` bytes, as a socket would.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads every entry and its data. Whatever the input: no panic, an end in bounded steps, and
/// no entry holding more metadata than the per-entry cap allows. True when an entry was read.
fn read_all(tar: &[u8], step: usize) -> bool {
    let mut r = TarReader::new(Trickle { data: tar, step });
    let mut buf = [0u8; 700];
    for read in 0..=tar.len() / BLOCK {
        let e = match r.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) | Err(_) => return read > 0,
        };
        let xattr_bytes: usize = e.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
        let held = e.path.len() + e.link.len() + xattr_bytes;
        assert!(
            held as u64 <= MAX_EXTENSION_BYTES + BLOCK as u64,
            "{held} bytes"
        );
        while r.read_data(&mut buf).map(|n| n > 0).unwrap_or(false) {}
    }
    panic!("more entries than header blocks in {} bytes", tar.len());
}

/// The tar-split recorder takes any stream in any chunking, and what it records is the input:
/// raw bytes plus file content never exceed it (content of a cut stream aside).
fn record(tar: &[u8], step: usize) {
    let mut rec = Recorder::new();
    for chunk in tar.chunks(step) {
        rec.feed(chunk);
    }
    let encoded = rec.finish().unwrap();
    let mut segments = Segments::new(&encoded[..]);
    let mut raw = 0usize;
    while let Some(seg) = segments.next_segment().unwrap() {
        if let Segment::Raw(bytes) = seg {
            raw += bytes.len();
        }
    }
    assert!(
        raw <= tar.len(),
        "recorded {raw} raw bytes of {}",
        tar.len()
    );
}

#[test]
fn fuzz_reader_and_tarsplit_never_panic() {
    let bytes = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..3000),
        4 => tar_case().prop_map(|c| build_tar(&c, b"/outside")),
    ];
    run("reader", 1000, (bytes, 1usize..1500), |(tar, step)| {
        record(&tar, step);
        read_all(&tar, step)
    });
}

#[test]
fn fuzz_apply_never_escapes_dest() {
    run(
        "apply",
        256,
        (tar_case(), any::<bool>()),
        |(case, overlay)| {
            let s = Sandbox::new();
            let tar = build_tar(&case, s.outside().as_os_str().as_bytes());
            let mode = if overlay {
                WhiteoutMode::OverlayMarkers
            } else {
                WhiteoutMode::Delete
            };
            let applied = apply_bytes(&s.dest(), &tar, mode).is_ok();
            s.assert_outside_untouched();
            applied
        },
    );
}

/// The generator itself: a case whose checksums are fixed after its bytes are poked reads
/// back, so most cases get past the header checks and reach the parsers behind them.
#[test]
fn build_tar_fixes_checksums_so_cases_get_past_the_header_check() {
    let case = TarCase {
        entries: vec![EntrySpec {
            extensions: vec![Extension(kind::PAX, b"11 path=ab\n".to_vec())],
            name: b"x".to_vec(),
            meta: file_meta(3),
            data: b"abc".to_vec(),
        }],
        pokes: vec![(136, b'7')],
        size_fields: Vec::new(),
        fix_checksums: true,
        cut: None,
    };
    let tar = build_tar(&case, b"/o");
    let mut r = TarReader::new(&tar[..]);
    let e = r.next_entry().unwrap().unwrap();
    assert_eq!(e.path, b"ab");
    assert!(r.next_entry().unwrap().is_none());
}
