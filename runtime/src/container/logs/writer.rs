//! Docker's json-file log driver format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"RFC3339Nano"}`. Output is split at newlines;
//! a line longer than 16 KiB is written in pieces without the newline, as Docker does.
//! Rotation as Docker's json-file driver: once the file reaches `max-size` it becomes
//! `<id>-json.log.1` (older ones shift up, the one past `max-file` goes) and a new file starts.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use strata_core::{IoContext, Result};

use super::super::io::StreamKind;
use super::options::LogOptions;
use strata_core::rfc3339;

/// Docker's buffer size for one log message.
const MAX_LINE: usize = 16 * 1024;

#[derive(Serialize)]
struct Entry<'a> {
    log: &'a str,
    stream: &'a str,
    time: String,
}

/// Appends container output to `<id>-json.log`.
pub struct JsonLogWriter {
    file: File,
    path: PathBuf,
    partial: [Vec<u8>; 2],
    opts: LogOptions,
    /// Bytes in the current file.
    size: u64,
}

/// `<id>-json.log.N`: the Nth most recent rotated file (N >= 1).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ctx("open log", path)
}

impl JsonLogWriter {
    /// Opens with the default limits (see `LogOptions`).
    pub fn open(path: &Path) -> Result<JsonLogWriter> {
        Self::open_with(path, LogOptions::default())
    }

    pub fn open_with(path: &Path, opts: LogOptions) -> Result<JsonLogWriter> {
        let file = open_append(path)?;
        let size = file.metadata().ctx("stat log", path)?.len();
        Ok(JsonLogWriter {
            file,
            path: path.to_path_buf(),
            partial: [Vec::new(), Vec::new()],
            opts,
            size,
        })
    }

    /// Adds one entry to `out`, the batch for the current file. When the file (with the
    /// batch) has reached max-size, the batch is written and the file rotated first, as
    /// Docker checks before each message: a file exceeds max-size by one entry at most.
    fn entry(
        &mut self,
        out: &mut Vec<u8>,
        line: &[u8],
        stream: StreamKind,
        time: &DateTime<Utc>,
    ) -> Result<()> {
        if let Some(max) = self.opts.max_size {
            if self.size + out.len() as u64 >= max {
                self.flush(out)?;
                self.rotate()?;
            }
        }
        encode(out, line, stream, time)
    }

    /// Writes the batch to the current file.
    fn flush(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        self.file.write_all(out).ctx("write log", &self.path)?;
        self.size += out.len() as u64;
        out.clear();
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        if self.opts.max_file < 2 {
            self.file.set_len(0).ctx("truncate log", &self.path)?;
            self.size = 0;
            return Ok(());
        }
        let oldest = rotated_path(&self.path, self.opts.max_file - 1);
        match std::fs::remove_file(&oldest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).ctx("remove log", &oldest)
            }
            _ => {}
        }
        for n in (1..self.opts.max_file - 1).rev() {
            let from = rotated_path(&self.path, n);
            match std::fs::rename(&from, rotated_path(&self.path, n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).ctx("rotate log", &from)
                }
                _ => {}
            }
        }
        let first = rotated_path(&self.path, 1);
        std::fs::rename(&self.path, &first).ctx("rotate log", &self.path)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Adds output read at `time`; complete lines are written now, the rest waits.
    pub fn write(&mut self, stream: StreamKind, data: &[u8], time: DateTime<Utc>) -> Result<()> {
        let idx = stream as usize;
        let mut buf = std::mem::take(&mut self.partial[idx]);
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos + 1;
            for piece in buf[start..end].chunks(MAX_LINE) {
                self.entry(&mut out, piece, stream, &time)?;
            }
            start = end;
        }
        let mut rest = buf.split_off(start);
        while rest.len() >= MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            self.entry(&mut out, &rest, stream, &time)?;
            rest = tail;
        }
        self.partial[idx] = rest;
        self.flush(&mut out)
    }

    /// Writes what is left without a trailing newline (the stream ended).
    pub fn finish(&mut self) -> Result<()> {
        let now = Utc::now();
        let mut out = Vec::new();
        for stream in [StreamKind::Stdout, StreamKind::Stderr] {
            let rest = std::mem::take(&mut self.partial[stream as usize]);
            if !rest.is_empty() {
                self.entry(&mut out, &rest, stream, &now)?;
            }
        }
        self.flush(&mut out)
    }
}

fn encode(out: &mut Vec<u8>, line: &[u8], stream: StreamKind, time: &DateTime<Utc>) -> Result<()> {
    let entry = Entry {
        log: &String::from_utf8_lossy(line),
        stream: stream.as_str(),
        time: rfc3339::format_nano(time),
    };
    serde_json::to_writer(&mut *out, &entry)
        .map_err(|e| strata_core::Error::Other(format!("encode log entry: {e}")))?;
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_partials_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut w = JsonLogWriter::open(&path).unwrap();
        let t = Utc::now();
        w.write(StreamKind::Stdout, b"hel", t).unwrap();
        w.write(StreamKind::Stderr, b"oops\n", t).unwrap();
        w.write(StreamKind::Stdout, b"lo\nworld", t).unwrap();
        w.write(StreamKind::Stdout, &vec![b'x'; MAX_LINE + 10], t)
            .unwrap();
        w.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["log"], "oops\n");
        assert_eq!(lines[0]["stream"], "stderr");
        assert_eq!(lines[1]["log"], "hello\n");
        assert_eq!(lines[1]["stream"], "stdout");
        let long = lines[2]["log"].as_str().unwrap();
        assert_eq!(long.len(), MAX_LINE);
        assert!(long.starts_with("worldxxx"));
        assert_eq!(lines[3]["log"].as_str().unwrap().len(), 15);
        assert_eq!(lines.len(), 4);
        assert!(text.starts_with("{\"log\":"));
    }

    /// Guards: the log grew without bound whatever `--log-opt` said (HEAD 3af0184 had no
    /// rotation). Files rotate at max-size and at most max-file are kept.
    #[test]
    fn rotates_at_max_size_and_keeps_max_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r-json.log");
        let opts = LogOptions {
            max_size: Some(200),
            max_file: 3,
        };
        let mut w = JsonLogWriter::open_with(&path, opts).unwrap();
        // One read of a chatty container's output holds many lines: they rotate one by one.
        let burst: String = (0..40).map(|i| format!("line {i}\n")).collect();
        w.write(StreamKind::Stdout, burst.as_bytes(), Utc::now())
            .unwrap();
        let files: Vec<String> = [path.clone(), rotated_path(&path, 1), rotated_path(&path, 2)]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert!(!rotated_path(&path, 3).exists());
        for f in &files[1..] {
            // A file rotates once it holds 200 bytes or more: one entry (< 100) past that.
            assert!(f.len() >= 200 && f.len() < 300, "{}", f.len());
        }
        // Oldest first, the lines follow on across files with none lost in between.
        let numbers: Vec<u32> = files
            .iter()
            .rev()
            .flat_map(|f| f.lines())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let text = v["log"].as_str().unwrap().trim_end().to_string();
                text.trim_start_matches("line ").parse().unwrap()
            })
            .collect();
        let first = numbers[0];
        assert_eq!(numbers, (first..40).collect::<Vec<_>>());
    }
}
