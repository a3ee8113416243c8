//! Building and rewriting image archives for tests.

use std::io::Read;

/// The entries of a tar: (path, kind, link target, data).
pub type Entry = (String, tar::EntryType, Option<String>, Vec<u8>);

pub fn entries(archive: &[u8]) -> Vec<Entry> {
    let mut a = tar::Archive::new(archive);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let kind = e.header().entry_type();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, kind, link, data)
        })
        .collect()
}

pub fn build(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        match link {
            Some(l) => b.append_link(&mut h, path, l).unwrap(),
            None => b.append_data(&mut h, path, &data[..]).unwrap(),
        }
    }
    b.into_inner().unwrap()
}

pub fn data_of(entries: &[Entry], path: &str) -> Vec<u8> {
    entries
        .iter()
        .find(|e| e.0 == path)
        .unwrap_or_else(|| panic!("{path} not in archive"))
        .3
        .clone()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}
