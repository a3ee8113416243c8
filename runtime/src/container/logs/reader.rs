//! Reading a json-file log back for `logs`: stream selection, since/until, tail, follow.
//! Entries stream from disk (rotated files first, oldest first); nothing holds the whole log,
//! a tail included.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::Deserialize;
use strata_core::{Error, Result};
use tokio::sync::{mpsc, watch};

use super::super::io::StreamKind;
use super::super::running::ExitStatus;
use super::writer::rotated_path;
use strata_core::rfc3339;

/// How often a follower looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// `docker logs` options.
#[derive(Debug, Clone)]
pub struct LogReadOptions {
    pub stdout: bool,
    pub stderr: bool,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only the last N entries of what is already there; `None` for all.
    pub tail: Option<usize>,
    /// Keep reading new entries until the container exits.
    pub follow: bool,
}

impl Default for LogReadOptions {
    fn default() -> Self {
        LogReadOptions {
            stdout: true,
            stderr: true,
            since: None,
            until: None,
            tail: None,
            follow: false,
        }
    }
}

/// One log line as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: StreamKind,
    pub time: DateTime<Utc>,
    /// The text, with its newline when it had one.
    pub log: String,
}

impl LogEntry {
    /// The bytes `logs` prints: the text, prefixed by its RFC3339Nano time with `timestamps`.
    pub fn render(&self, timestamps: bool) -> Bytes {
        if timestamps {
            Bytes::from(format!("{} {}", rfc3339::format_nano(&self.time), self.log))
        } else {
            Bytes::from(self.log.clone())
        }
    }
}

#[derive(Deserialize)]
struct RawEntry {
    log: String,
    stream: String,
    time: String,
}

fn parse_line(line: &[u8]) -> Result<LogEntry> {
    let raw: RawEntry = serde_json::from_slice(line)
        .map_err(|e| Error::Other(format!("corrupt json log line: {e}")))?;
    let stream = match raw.stream.as_str() {
        "stderr" => StreamKind::Stderr,
        _ => StreamKind::Stdout,
    };
    Ok(LogEntry {
        stream,
        time: rfc3339::parse(&raw.time)
            .ok_or_else(|| Error::invalid(format!("bad timestamp {:?}", raw.time)))?,
        log: raw.log,
    })
}

/// Reads the log at `path`. With `follow`, the stream goes on until `exit` holds an exit
/// status (the container stopped) and everything written before it is delivered, or until the
/// consumer drops the stream.
pub fn read_logs(
    path: PathBuf,
    opts: LogReadOptions,
    exit: Option<watch::Receiver<Option<ExitStatus>>>,
) -> impl Stream<Item = Result<LogEntry>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = read_blocking(&path, &opts, exit, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Calls `each` for every complete line `reader` gives; a torn last line stays in `pending`
/// for the next call. Ok(false) when `each` asked to stop.
fn for_each_entry(
    reader: &mut impl BufRead,
    pending: &mut Vec<u8>,
    mut each: impl FnMut(LogEntry) -> bool,
) -> Result<bool> {
    loop {
        let n = reader
            .read_until(b'\n', pending)
            .map_err(|e| Error::io("read log", "json log", e))?;
        if n == 0 || !pending.ends_with(b"\n") {
            return Ok(true);
        }
        let line = std::mem::take(pending);
        if line.trim_ascii().is_empty() {
            continue;
        }
        if !each(parse_line(&line)?) {
            return Ok(false);
        }
    }
}

/// The log's files, oldest first (`.N` ... `.1`, then the current one), opened now so a
/// rotation while we read cannot take one away. The current file must exist.
fn open_log_files(path: &Path) -> Result<Vec<File>> {
    let mut rotated = Vec::new();
    for n in 1.. {
        match File::open(rotated_path(path, n)) {
            Ok(f) => rotated.push(f),
            Err(_) => break,
        }
    }
    rotated.reverse();
    rotated.push(File::open(path).map_err(|e| Error::io("open log", path, e))?);
    Ok(rotated)
}

/// How many entries the files hold that `wanted` keeps, and each file's length up to its
/// last complete line (the second pass reads no further, so the count stays true).
fn count_wanted(files: &[File], wanted: &impl Fn(&LogEntry) -> bool) -> Result<(usize, Vec<u64>)> {
    let mut count = 0;
    let mut lengths = Vec::new();
    for file in files {
        let mut reader = BufReader::new(file);
        let mut pending = Vec::new();
        for_each_entry(&mut reader, &mut pending, |e| {
            count += usize::from(wanted(&e));
            true
        })?;
        let end = reader
            .stream_position()
            .map_err(|e| Error::io("read log", "json log", e))?;
        lengths.push(end - pending.len() as u64);
    }
    Ok((count, lengths))
}

/// Follows the current file across rotations: when the path names another file than ours,
/// ours is read to its end and the new one opened.
struct Follower {
    path: PathBuf,
    reader: BufReader<File>,
    pending: Vec<u8>,
}

impl Follower {
    fn read_available(&mut self, mut each: impl FnMut(LogEntry) -> bool) -> Result<bool> {
        if !for_each_entry(&mut self.reader, &mut self.pending, &mut each)? {
            return Ok(false);
        }
        let ours = self.reader.get_ref().metadata().ok();
        let now = std::fs::metadata(&self.path).ok();
        match (ours, now) {
            (Some(ours), Some(now)) if ours.ino() != now.ino() => {
                // Rotated: what was written before the rename is still ours to read.
                if !for_each_entry(&mut self.reader, &mut self.pending, &mut each)? {
                    return Ok(false);
                }
                if let Ok(f) = File::open(&self.path) {
                    self.reader = BufReader::new(f);
                    self.pending.clear();
                }
                Ok(true)
            }
            (Some(ours), _) => {
                // max-file=1 truncates in place: start again at the top.
                let at = self.reader.stream_position().unwrap_or(0);
                if ours.len() < at {
                    let _ = self.reader.seek(SeekFrom::Start(0));
                    self.pending.clear();
                }
                Ok(true)
            }
            _ => Ok(true),
        }
    }
}

fn read_blocking(
    path: &Path,
    opts: &LogReadOptions,
    exit: Option<watch::Receiver<Option<ExitStatus>>>,
    tx: &mpsc::Sender<Result<LogEntry>>,
) -> Result<()> {
    let wanted = |e: &LogEntry| {
        (match e.stream {
            StreamKind::Stdout => opts.stdout,
            StreamKind::Stderr => opts.stderr,
        }) && opts.since.is_none_or(|s| e.time >= s)
            && opts.until.is_none_or(|u| e.time < u)
    };
    let mut files = open_log_files(path)?;
    // With a tail, a first pass counts what is there, so the second can stream the last
    // entries without keeping them all.
    let (mut skip, limits) = match opts.tail {
        None => (0, vec![u64::MAX; files.len()]),
        Some(n) => {
            let (count, lengths) = count_wanted(&files, &wanted)?;
            (count.saturating_sub(n), lengths)
        }
    };
    let mut pending = Vec::new();
    for (file, limit) in files.iter().zip(limits) {
        (&*file)
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("read log", path, e))?;
        pending.clear();
        let mut reader = BufReader::new(file.take(limit));
        let open = for_each_entry(&mut reader, &mut pending, |e| {
            if !wanted(&e) {
                return true;
            }
            if skip > 0 {
                skip -= 1;
                return true;
            }
            tx.blocking_send(Ok(e)).is_ok()
        })?;
        if !open {
            return Ok(());
        }
    }
    if !opts.follow {
        return Ok(());
    }
    let current = files.pop().expect("the current file is always there");
    let mut follower = Follower {
        path: path.to_path_buf(),
        reader: BufReader::new(current),
        pending,
    };
    loop {
        let exited = exit.as_ref().is_some_and(|rx| rx.borrow().is_some());
        let open = follower.read_available(|e| !wanted(&e) || tx.blocking_send(Ok(e)).is_ok())?;
        if exited || !open || tx.is_closed() {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::super::writer::JsonLogWriter;
    use super::*;
    use futures::StreamExt;

    async fn collect(path: &std::path::Path, opts: LogReadOptions) -> Vec<LogEntry> {
        read_logs(path.to_path_buf(), opts, None)
            .map(|e| e.unwrap())
            .collect()
            .await
    }

    #[tokio::test]
    async fn filters_tail_and_since() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-json.log");
        let mut w = JsonLogWriter::open(&path).unwrap();
        let t0 = Utc::now();
        for i in 0..5 {
            let t = t0 + chrono::Duration::seconds(i);
            let stream = if i % 2 == 0 {
                StreamKind::Stdout
            } else {
                StreamKind::Stderr
            };
            w.write(stream, format!("line {i}\n").as_bytes(), t)
                .unwrap();
        }
        w.finish().unwrap();
        let all = collect(&path, LogReadOptions::default()).await;
        assert_eq!(all.len(), 5);
        assert_eq!(all[4].log, "line 4\n");
        let tail = collect(
            &path,
            LogReadOptions {
                tail: Some(2),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            tail.iter().map(|e| e.log.as_str()).collect::<Vec<_>>(),
            ["line 3\n", "line 4\n"]
        );
        let out = collect(
            &path,
            LogReadOptions {
                stderr: false,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(out.len(), 3);
        let since = t0 + chrono::Duration::seconds(3);
        let late = collect(
            &path,
            LogReadOptions {
                since: Some(since),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(late.len(), 2);
        let stamped = all[0].render(true);
        assert!(stamped.ends_with(b" line 0\n"));
        assert!(String::from_utf8_lossy(&stamped).starts_with(&rfc3339::format_nano(&all[0].time)));
    }

    #[tokio::test]
    async fn follow_ends_when_the_container_exits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f-json.log");
        let mut w = JsonLogWriter::open(&path).unwrap();
        w.write(StreamKind::Stdout, b"first\n", Utc::now()).unwrap();
        let (exit_tx, exit_rx) = watch::channel(None);
        let opts = LogReadOptions {
            follow: true,
            ..Default::default()
        };
        let mut stream = Box::pin(read_logs(path.clone(), opts, Some(exit_rx)));
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .log,
            "first\n"
        );
        w.write(StreamKind::Stdout, b"second\n", Utc::now())
            .unwrap();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .log,
            "second\n"
        );
        w.write(StreamKind::Stdout, b"third\n", Utc::now()).unwrap();
        exit_tx.send(Some(ExitStatus::exited(0))).unwrap();
        let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].as_ref().unwrap().log, "third\n");
    }

    /// Guards: `logs` read only `<id>-json.log` and kept every entry in memory before
    /// sending (HEAD 3af0184 had no rotation to read across). Rotated files come first, in
    /// order, and a tail reaches back into them.
    #[tokio::test]
    async fn reads_rotated_files_in_order_and_tails_across_them() {
        use super::super::LogOptions;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-json.log");
        let opts = LogOptions {
            max_size: Some(150),
            max_file: 4,
        };
        let mut w = JsonLogWriter::open_with(&path, opts).unwrap();
        for i in 0..10 {
            w.write(StreamKind::Stdout, format!("l{i}\n").as_bytes(), Utc::now())
                .unwrap();
        }
        assert!(rotated_path(&path, 3).exists());
        let texts = |v: Vec<LogEntry>| v.into_iter().map(|e| e.log).collect::<Vec<_>>();
        let all = texts(collect(&path, LogReadOptions::default()).await);
        let first: usize = all[0].trim_start_matches('l').trim().parse().unwrap();
        let expected: Vec<String> = (first..10).map(|i| format!("l{i}\n")).collect();
        assert_eq!(all, expected);
        let tail = LogReadOptions {
            tail: Some(all.len() - 1),
            ..Default::default()
        };
        assert_eq!(texts(collect(&path, tail).await), expected[1..]);
    }

    async fn next_log(s: &mut (impl Stream<Item = Result<LogEntry>> + Unpin)) -> String {
        let item = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap();
        item.unwrap().unwrap().log
    }

    /// Guards: `logs -f` must go on reading after the writer rotates the file under it (it
    /// would stay on the renamed file and miss everything after).
    #[tokio::test]
    async fn follow_goes_on_across_a_rotation() {
        use super::super::LogOptions;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fr-json.log");
        let opts = LogOptions {
            max_size: Some(100),
            max_file: 3,
        };
        let mut w = JsonLogWriter::open_with(&path, opts).unwrap();
        w.write(StreamKind::Stdout, b"a\n", Utc::now()).unwrap();
        let (exit_tx, exit_rx) = watch::channel(None);
        let follow = LogReadOptions {
            follow: true,
            ..Default::default()
        };
        let mut stream = Box::pin(read_logs(path.clone(), follow, Some(exit_rx)));
        assert_eq!(next_log(&mut stream).await, "a\n");
        for line in ["b\n", "c\n", "d\n"] {
            w.write(StreamKind::Stdout, line.as_bytes(), Utc::now())
                .unwrap();
        }
        assert!(rotated_path(&path, 1).exists(), "the writer rotated");
        for line in ["b\n", "c\n", "d\n"] {
            assert_eq!(next_log(&mut stream).await, line);
        }
        exit_tx.send(Some(ExitStatus::exited(0))).unwrap();
    }
}
