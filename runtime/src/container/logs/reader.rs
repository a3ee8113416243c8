//! Reading a json-file log back for `logs`: stream selection, since/until, tail, follow.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::Deserialize;
use strata_core::{Error, Result};
use tokio::sync::{mpsc, watch};

use super::super::io::StreamKind;
use super::super::running::ExitStatus;
use super::time::{format_rfc3339_nano, parse_rfc3339};

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
            Bytes::from(format!("{} {}", format_rfc3339_nano(&self.time), self.log))
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
        time: parse_rfc3339(&raw.time)?,
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

struct Follower {
    reader: BufReader<File>,
    pending: Vec<u8>,
}

impl Follower {
    /// Calls `each` for every complete line now in the file; a torn last line waits.
    fn read_available(&mut self, mut each: impl FnMut(LogEntry) -> bool) -> Result<bool> {
        loop {
            let n = self
                .reader
                .read_until(b'\n', &mut self.pending)
                .map_err(|e| Error::io("read log", "json log", e))?;
            if n == 0 || !self.pending.ends_with(b"\n") {
                return Ok(true);
            }
            let line = std::mem::take(&mut self.pending);
            if line.trim_ascii().is_empty() {
                continue;
            }
            if !each(parse_line(&line)?) {
                return Ok(false);
            }
        }
    }
}

fn read_blocking(
    path: &std::path::Path,
    opts: &LogReadOptions,
    exit: Option<watch::Receiver<Option<ExitStatus>>>,
    tx: &mpsc::Sender<Result<LogEntry>>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io("open log", path, e))?;
    let mut follower = Follower {
        reader: BufReader::new(file),
        pending: Vec::new(),
    };
    let wanted = |e: &LogEntry| {
        (match e.stream {
            StreamKind::Stdout => opts.stdout,
            StreamKind::Stderr => opts.stderr,
        }) && opts.since.is_none_or(|s| e.time >= s)
            && opts.until.is_none_or(|u| e.time < u)
    };
    let mut tail: VecDeque<LogEntry> = VecDeque::new();
    follower.read_available(|e| {
        if wanted(&e) {
            tail.push_back(e);
            if opts.tail.is_some_and(|n| tail.len() > n) {
                tail.pop_front();
            }
        }
        true
    })?;
    for e in tail {
        if tx.blocking_send(Ok(e)).is_err() {
            return Ok(());
        }
    }
    if !opts.follow {
        return Ok(());
    }
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
        assert!(String::from_utf8_lossy(&stamped).starts_with(&format_rfc3339_nano(&all[0].time)));
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
}
