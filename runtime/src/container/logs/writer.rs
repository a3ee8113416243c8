//! Docker's json-file log driver format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"RFC3339Nano"}`. Output is split at newlines;
//! a line longer than 16 KiB is written in pieces without the newline, as Docker does.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use strata_core::{IoContext, Result};

use super::super::io::StreamKind;
use super::time::format_rfc3339_nano;

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
    path: std::path::PathBuf,
    partial: [Vec<u8>; 2],
}

impl JsonLogWriter {
    pub fn open(path: &Path) -> Result<JsonLogWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ctx("open log", path)?;
        Ok(JsonLogWriter {
            file,
            path: path.to_path_buf(),
            partial: [Vec::new(), Vec::new()],
        })
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
                encode(&mut out, piece, stream, &time)?;
            }
            start = end;
        }
        let mut rest = buf.split_off(start);
        while rest.len() >= MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            encode(&mut out, &rest, stream, &time)?;
            rest = tail;
        }
        self.partial[idx] = rest;
        self.file.write_all(&out).ctx("write log", &self.path)
    }

    /// Writes what is left without a trailing newline (the stream ended).
    pub fn finish(&mut self) -> Result<()> {
        let now = Utc::now();
        let mut out = Vec::new();
        for stream in [StreamKind::Stdout, StreamKind::Stderr] {
            let rest = std::mem::take(&mut self.partial[stream as usize]);
            if !rest.is_empty() {
                encode(&mut out, &rest, stream, &now)?;
            }
        }
        self.file.write_all(&out).ctx("write log", &self.path)
    }
}

fn encode(out: &mut Vec<u8>, line: &[u8], stream: StreamKind, time: &DateTime<Utc>) -> Result<()> {
    let entry = Entry {
        log: &String::from_utf8_lossy(line),
        stream: stream.as_str(),
        time: format_rfc3339_nano(time),
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
}
