//! Task output: the on-disk log format, the line splitter the shim uses, and the reader that
//! serves [`crate::runtime::Runtime::logs`] from a log file.
//!
//! ```text
//!  child stdout ─┐                                   ┌─> tail / since ─> stream ─> (follow: poll
//!  child stderr ─┴─> LineSplitter ─> LogWriter ─> log.jsonl ──┘        new lines until finished)
//! ```
//!
//! One JSON object per line, appended with a single `write` so readers never see half a
//! record except at the very end of the file while it is being written:
//!
//! ```text
//! {"t":"2025-01-02T03:04:05.123456789Z","s":1,"l":"hello"}      UTF-8 line
//! {"t":"2025-01-02T03:04:05.223456789Z","s":2,"b":"/w=="}       other bytes, base64 (standard)
//! ```
//!
//! `t` is when the shim read the line (RFC 3339, nanoseconds, UTC), `s` the stream (1 stdout,
//! 2 stderr), `l` the line without its newline. Lines longer than [`MAX_LINE`] are split, like
//! Docker's 16 KiB log chunks.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::runtime::{LogLine, LogOptions, LogStream};

/// Longest line kept as one record; longer lines are split into several.
pub const MAX_LINE: usize = 16 * 1024;

/// How often a following reader looks for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    t: String,
    s: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<String>,
}

/// Encodes one line as a log record, newline included.
pub fn encode_record(line: &LogLine) -> Vec<u8> {
    let (l, b) = match std::str::from_utf8(&line.line) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&line.line)),
        ),
    };
    let rec = Record {
        t: line.timestamp.to_rfc3339_opts(SecondsFormat::Nanos, true),
        s: line.stream.into(),
        l,
        b,
    };
    // Serializing a struct of strings and a number cannot fail.
    let mut out = serde_json::to_vec(&rec).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Decodes one log record (with or without its trailing newline).
pub fn decode_record(bytes: &[u8]) -> Result<LogLine, String> {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let rec: Record = serde_json::from_slice(bytes).map_err(|e| format!("bad log record: {e}"))?;
    let timestamp = DateTime::parse_from_rfc3339(&rec.t)
        .map_err(|e| format!("bad log timestamp {:?}: {e}", rec.t))?
        .with_timezone(&Utc);
    let stream = LogStream::try_from(rec.s)?;
    let line = match (rec.l, rec.b) {
        (Some(l), _) => l.into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|e| format!("bad base64 in log record: {e}"))?,
        (None, None) => Vec::new(),
    };
    Ok(LogLine {
        timestamp,
        stream,
        line,
    })
}

/// Applies `since` then `tail` to lines already read (the order is kept).
pub fn apply_since_tail(
    lines: impl IntoIterator<Item = LogLine>,
    opts: &LogOptions,
) -> Vec<LogLine> {
    let mut out: VecDeque<LogLine> = VecDeque::new();
    for l in lines {
        if opts.since.is_some_and(|s| l.timestamp < s) {
            continue;
        }
        if opts.tail == Some(0) {
            continue;
        }
        out.push_back(l);
        if let Some(n) = opts.tail {
            while out.len() > n {
                out.pop_front();
            }
        }
    }
    out.into()
}

/// Splits a byte stream into lines of at most `max` bytes, without their `\n`. A last line
/// without a newline is returned too.
pub struct LineSplitter<R> {
    reader: io::BufReader<R>,
    max: usize,
}

impl<R: io::Read> LineSplitter<R> {
    /// Splits `reader` at newlines and every `max` bytes.
    pub fn new(reader: R, max: usize) -> Self {
        LineSplitter {
            reader: io::BufReader::new(reader),
            max: max.max(1),
        }
    }

    /// The next line, or `None` at the end of the stream.
    pub fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(if line.is_empty() { None } else { Some(line) });
            }
            let room = self.max - line.len();
            let window = &available[..available.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&window[..i]);
                    self.reader.consume(i + 1);
                    return Ok(Some(line));
                }
                None => {
                    let n = window.len();
                    line.extend_from_slice(window);
                    self.reader.consume(n);
                    if line.len() >= self.max {
                        return Ok(Some(line));
                    }
                }
            }
        }
    }
}

/// Appends records to a log file; shared by the threads that drain stdout and stderr.
#[derive(Clone)]
pub struct LogWriter {
    file: Arc<Mutex<File>>,
}

impl LogWriter {
    /// Writes to `file`, which should be opened for appending.
    pub fn new(file: File) -> Self {
        LogWriter {
            file: Arc::new(Mutex::new(file)),
        }
    }

    /// Stamps `line` with the current time and appends it.
    pub fn append(&self, stream: LogStream, line: Vec<u8>) -> io::Result<()> {
        let rec = encode_record(&LogLine {
            timestamp: Utc::now(),
            stream,
            line,
        });
        let mut f = self
            .file
            .lock()
            .map_err(|_| io::Error::other("log writer lock poisoned"))?;
        f.write_all(&rec)
    }
}

/// Reads a log file written by [`LogWriter`] as a stream of lines.
///
/// Without `follow` the stream ends at the end of the file. With `follow` it keeps polling for
/// new records until `finished()` returns true and the file has been drained after that; a
/// missing file is waited for. The reading task stops when the stream is dropped.
pub fn read_log_file(
    path: PathBuf,
    opts: LogOptions,
    finished: Arc<dyn Fn() -> bool + Send + Sync>,
) -> BoxStream<'static, LogLine> {
    let (tx, rx) = tokio::sync::mpsc::channel::<LogLine>(256);
    tokio::spawn(async move {
        let file = loop {
            match tokio::fs::File::open(&path).await {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !opts.follow || finished() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(FOLLOW_POLL) => {}
                        _ = tx.closed() => return,
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open task log");
                    return;
                }
            }
        };
        let mut reader = tokio::io::BufReader::new(file);
        let mut buf = Vec::new();

        // History: everything up to the current end of the file, since/tail applied.
        let mut history: VecDeque<LogLine> = VecDeque::new();
        loop {
            match next_record(&mut reader, &mut buf, &path).await {
                Next::Line(l) => {
                    if opts.since.is_some_and(|s| l.timestamp < s) || opts.tail == Some(0) {
                        continue;
                    }
                    history.push_back(l);
                    if let Some(n) = opts.tail {
                        while history.len() > n {
                            history.pop_front();
                        }
                    }
                }
                Next::Skip => continue,
                Next::End => break,
                Next::Error => return,
            }
        }
        for l in history {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        if !opts.follow {
            return;
        }

        // Follow: new records until the task has finished and the file is drained.
        loop {
            let done = finished();
            loop {
                match next_record(&mut reader, &mut buf, &path).await {
                    Next::Line(l) => {
                        if opts.since.is_some_and(|s| l.timestamp < s) {
                            continue;
                        }
                        if tx.send(l).await.is_err() {
                            return;
                        }
                    }
                    Next::Skip => continue,
                    Next::End => break,
                    Next::Error => return,
                }
            }
            if done {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

enum Next {
    Line(LogLine),
    Skip,
    End,
    Error,
}

/// Reads the next complete record. A partial record at the end of the file stays in `buf`
/// and is completed by a later call.
async fn next_record(
    reader: &mut tokio::io::BufReader<tokio::fs::File>,
    buf: &mut Vec<u8>,
    path: &std::path::Path,
) -> Next {
    match reader.read_until(b'\n', buf).await {
        Ok(0) => Next::End,
        Ok(_) if !buf.ends_with(b"\n") => Next::End,
        Ok(_) => {
            let rec = decode_record(buf);
            buf.clear();
            match rec {
                Ok(l) => Next::Line(l),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping bad log record");
                    Next::Skip
                }
            }
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read task log");
            Next::Error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stream: LogStream, s: &[u8], secs: i64) -> LogLine {
        LogLine {
            timestamp: DateTime::from_timestamp(secs, 123_456_789).expect("valid timestamp"),
            stream,
            line: s.to_vec(),
        }
    }

    #[test]
    fn records_round_trip_text_and_bytes() {
        for l in [
            line(LogStream::Stdout, b"hello \"world\"", 1),
            line(LogStream::Stderr, b"", 2),
            line(LogStream::Stderr, &[0xff, 0xfe, b'a'], 3),
        ] {
            let enc = encode_record(&l);
            assert!(enc.ends_with(b"\n"));
            assert_eq!(enc.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(decode_record(&enc).expect("decodes"), l);
        }
        let enc = encode_record(&line(LogStream::Stdout, b"x", 1));
        let text = String::from_utf8(enc).expect("utf8");
        assert!(
            text.starts_with(r#"{"t":"1970-01-01T00:00:01.123456789Z","s":1,"l":"x"}"#),
            "{text}"
        );
        assert!(decode_record(b"{\"t\":\"nope\",\"s\":1}").is_err());
        assert!(decode_record(b"{\"t\":\"1970-01-01T00:00:01Z\",\"s\":7}").is_err());
    }

    #[test]
    fn splitter_splits_at_newlines_and_max() {
        let data = b"one\n\ntwo\nabcdefghij\nlast".to_vec();
        let mut s = LineSplitter::new(&data[..], 4);
        let mut got = Vec::new();
        while let Some(l) = s.next_line().expect("read") {
            got.push(String::from_utf8(l).expect("utf8"));
        }
        assert_eq!(got, ["one", "", "two", "abcd", "efgh", "ij", "last"]);
        let mut s = LineSplitter::new(&b""[..], 4);
        assert_eq!(s.next_line().expect("read"), None);
    }

    #[test]
    fn since_and_tail() {
        let lines: Vec<LogLine> = (0..5).map(|i| line(LogStream::Stdout, b"x", i)).collect();
        let all = apply_since_tail(lines.clone(), &LogOptions::default());
        assert_eq!(all.len(), 5);
        let opts = LogOptions {
            tail: Some(2),
            ..Default::default()
        };
        assert_eq!(apply_since_tail(lines.clone(), &opts), lines[3..].to_vec());
        let opts = LogOptions {
            tail: Some(0),
            ..Default::default()
        };
        assert!(apply_since_tail(lines.clone(), &opts).is_empty());
        let opts = LogOptions {
            since: Some(lines[1].timestamp),
            tail: Some(10),
            ..Default::default()
        };
        assert_eq!(apply_since_tail(lines.clone(), &opts), lines[1..].to_vec());
    }

    #[tokio::test]
    async fn file_reader_tails_and_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        let w = LogWriter::new(file);
        w.append(LogStream::Stdout, b"a".to_vec()).expect("write");
        w.append(LogStream::Stderr, b"b".to_vec()).expect("write");
        // A partial record at the end is not delivered until complete.
        let mut raw = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        let rec = encode_record(&line(LogStream::Stdout, b"c", 5));
        raw.write_all(&rec[..5]).expect("write");

        let never: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(|| false);
        let got: Vec<_> = read_log_file(path.clone(), LogOptions::default(), never.clone())
            .map(|l| l.line)
            .collect()
            .await;
        assert_eq!(got, [b"a".to_vec(), b"b".to_vec()]);

        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        let finished: Arc<dyn Fn() -> bool + Send + Sync> =
            Arc::new(move || d.load(std::sync::atomic::Ordering::SeqCst));
        let opts = LogOptions {
            follow: true,
            tail: Some(1),
            ..Default::default()
        };
        let mut s = read_log_file(path.clone(), opts, finished);
        assert_eq!(s.next().await.map(|l| l.line), Some(b"b".to_vec()));
        raw.write_all(&rec[5..]).expect("write");
        assert_eq!(s.next().await.map(|l| l.line), Some(b"c".to_vec()));
        w.append(LogStream::Stdout, b"d".to_vec()).expect("write");
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(s.next().await.map(|l| l.line), Some(b"d".to_vec()));
        let end = tokio::time::timeout(Duration::from_secs(5), s.next()).await;
        assert_eq!(end.expect("stream ends"), None);
    }
}
