//! Tar archives written header by header, so they can hold what a careful tar library refuses
//! to write: `..` components, absolute names, links that point out of the tree.

/// One raw archive member.
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
}

impl RawEntry {
    pub fn file(name: &[u8], data: &[u8]) -> Self {
        Self {
            name: name.to_vec(),
            kind: b'0',
            mode: 0o644,
            link: Vec::new(),
            data: data.to_vec(),
        }
    }

    pub fn dir(name: &[u8]) -> Self {
        Self {
            name: name.to_vec(),
            kind: b'5',
            mode: 0o755,
            link: Vec::new(),
            data: Vec::new(),
        }
    }

    pub fn symlink(name: &[u8], target: &[u8]) -> Self {
        Self {
            name: name.to_vec(),
            kind: b'2',
            mode: 0o777,
            link: target.to_vec(),
            data: Vec::new(),
        }
    }

    pub fn hardlink(name: &[u8], target: &[u8]) -> Self {
        Self {
            name: name.to_vec(),
            kind: b'1',
            mode: 0o644,
            link: target.to_vec(),
            data: Vec::new(),
        }
    }
}

/// A complete archive (two zero blocks at the end). Names or link targets longer than a ustar
/// field get a PAX header carrying `path` / `linkpath`.
pub fn archive(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut pax = Vec::new();
        if e.name.len() > 100 {
            pax.extend(pax_record(b"path", &e.name));
        }
        if e.link.len() > 100 {
            pax.extend(pax_record(b"linkpath", &e.link));
        }
        if !pax.is_empty() {
            push_member(
                &mut out,
                &header(b"pax-header", b'x', 0o644, b"", pax.len() as u64),
                &pax,
            );
        }
        let name = if e.name.len() > 100 {
            &e.name[..100]
        } else {
            &e.name[..]
        };
        let link = if e.link.len() > 100 {
            &e.link[..100]
        } else {
            &e.link[..]
        };
        push_member(
            &mut out,
            &header(name, e.kind, e.mode, link, e.data.len() as u64),
            &e.data,
        );
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn push_member(out: &mut Vec<u8>, header: &[u8; 512], data: &[u8]) {
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // "LEN key=value\n" where LEN counts itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} ").into_bytes();
    rec.extend_from_slice(key);
    rec.push(b'=');
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{:0digits$o}", value);
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn header(name: &[u8], kind: u8, mode: u32, link: &[u8], size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tar_crate_reads_what_we_write() {
        let long = vec![b'x'; 150];
        let data = archive(&[
            RawEntry::dir(b"d/"),
            RawEntry::file(&long, b"hello"),
            RawEntry::symlink(b"l", b"../up"),
        ]);
        let mut a = tar::Archive::new(data.as_slice());
        let names: Vec<(String, Option<String>)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert_eq!(names[0].0, "d/");
        assert_eq!(names[1].0, String::from_utf8(long).unwrap());
        assert_eq!(names[2], ("l".to_string(), Some("../up".to_string())));
    }
}
