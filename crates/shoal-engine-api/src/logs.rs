//! `service logs` / `task logs`: options, line formatting, stdcopy framing, and the merge of
//! every task's stream (picking up new tasks while following).
//!
//! ```text
//!  task 1 logs ─┐                                   ┌─ [ts ]details line\n ─► stdcopy frame
//!  task 2 logs ─┼─► select_all ─► filter stdout/err ─┤    (1|2, 0,0,0, u32 BE len, payload)
//!  new task  ───┘  (store watch while following)     └─► HTTP body (until the client leaves)
//! ```
//!
//! Details are the sorted, query-escaped `com.docker.swarm.{node,service,task}.id` attributes,
//! which `docker service logs` parses to print `name.slot.id@node |`.

use crate::backend::SwarmBackend;
use crate::error::ApiError;
use crate::params::Params;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::{BoxStream, SelectAll, StreamExt};
use shoal_agent::runtime::{LogLine, LogOptions, LogStream};
use shoal_api::{ObjectKind, Task, TaskState};
use shoal_store::Store;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// `Content-Type` of multiplexed (stdcopy) log streams.
pub const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";
/// `Content-Type` of raw (TTY) log streams.
pub const RAW: &str = "application/vnd.docker.raw-stream";

/// What a logs request asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRequest {
    pub follow: bool,
    pub timestamps: bool,
    pub details: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub since: Option<DateTime<Utc>>,
    pub tail: Option<usize>,
}

impl LogRequest {
    /// Parses and checks the query of a logs request (before any byte is streamed).
    pub fn from_params(p: &Params) -> Result<Self, ApiError> {
        let (stdout, stderr) = (p.flag("stdout"), p.flag("stderr"));
        if !stdout && !stderr {
            return Err(ApiError::bad_request(
                "must specify at least one of 'stdout' or 'stderr'",
            ));
        }
        let since =
            match p.get("since").filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(parse_unix_timestamp(s).map_err(|e| {
                    ApiError::bad_request(format!("invalid value for \"since\": {e}"))
                })?),
            };
        let tail = match p.get("tail").unwrap_or("") {
            "" | "all" => None,
            t => match t.parse::<i64>() {
                Ok(n) if n < 0 => {
                    return Err(ApiError::bad_request("negative tail values not supported"))
                }
                Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Err(_) => {
                    return Err(ApiError::bad_request(
                        "tail value must be a positive integer or \"all\"",
                    ))
                }
            },
        };
        Ok(LogRequest {
            follow: p.flag("follow"),
            timestamps: p.flag("timestamps"),
            details: p.flag("details"),
            stdout,
            stderr,
            since,
            tail,
        })
    }

    /// The options passed to each task's log reader.
    pub fn options(&self) -> LogOptions {
        LogOptions {
            follow: self.follow,
            tail: self.tail,
            since: self.since,
            timestamps: self.timestamps,
        }
    }

    fn wants(&self, s: LogStream) -> bool {
        match s {
            LogStream::Stdout => self.stdout,
            LogStream::Stderr => self.stderr,
        }
    }
}

/// Parses `seconds[.nanoseconds]` (what the CLI sends for `--since`).
pub fn parse_unix_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs
        .parse()
        .map_err(|_| format!("failed to parse value as time or duration: {s:?}"))?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("failed to parse value as time or duration: {s:?}"));
        }
        format!("{frac:0<9}").parse().unwrap_or(0)
    };
    DateTime::from_timestamp(secs, nanos).ok_or_else(|| format!("timestamp {s:?} is out of range"))
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The details prefix of a task's lines.
pub fn details(task: &Task) -> String {
    let mut attrs = [
        (
            "com.docker.swarm.node.id",
            task.node_id.clone().unwrap_or_default(),
        ),
        ("com.docker.swarm.service.id", task.service_id.clone()),
        ("com.docker.swarm.task.id", task.id.clone()),
    ];
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    attrs
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// One output line: `[<RFC3339Nano> ][<details> ]<line>\n`.
pub fn format_line(line: &LogLine, details_prefix: Option<&str>, timestamps: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.line.len() + 128);
    if timestamps {
        out.extend_from_slice(
            line.timestamp
                .to_rfc3339_opts(SecondsFormat::Nanos, true)
                .as_bytes(),
        );
        out.push(b' ');
    }
    if let Some(d) = details_prefix {
        out.extend_from_slice(d.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&line.line);
    out.push(b'\n');
    out
}

/// A stdcopy frame: stream id, three zero bytes, big-endian u32 length, payload.
pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

/// Turns one task's lines into body chunks.
fn encode(
    task: &Task,
    lines: BoxStream<'static, LogLine>,
    req: &LogRequest,
    mux: bool,
) -> BoxStream<'static, Bytes> {
    let prefix = req.details.then(|| details(task));
    let req = req.clone();
    lines
        .filter_map(move |l| {
            let out = req.wants(l.stream).then(|| {
                let payload = format_line(&l, prefix.as_deref(), req.timestamps);
                if mux {
                    Bytes::from(frame(l.stream as u8, &payload))
                } else {
                    Bytes::from(payload)
                }
            });
            futures::future::ready(out)
        })
        .boxed()
}

/// Opens the logs of `tasks` and merges them; with `follow_service`, keeps watching the store
/// and adds the tasks of that service that start later. The stream ends when every task's log
/// ends (not following) or when the client goes away (following).
pub async fn stream_logs(
    backend: Arc<dyn SwarmBackend>,
    store: Store,
    tasks: Vec<Task>,
    follow_service: Option<String>,
    req: LogRequest,
    mux: bool,
) -> Result<BoxStream<'static, Bytes>, ApiError> {
    // Subscribe before opening so no task that starts meanwhile is missed.
    let events = follow_service.as_ref().map(|_| store.subscribe());
    let mut merged: SelectAll<BoxStream<'static, Bytes>> = SelectAll::new();
    let mut seen = HashSet::new();
    let mut first_err = None;
    let mut opened = 0usize;
    let mut tried = 0usize;
    for t in &tasks {
        if t.node_id.as_deref().unwrap_or("").is_empty() {
            continue;
        }
        tried += 1;
        match backend.task_logs(t, req.options()).await {
            Ok(lines) => {
                merged.push(encode(t, lines, &req, mux));
                seen.insert(t.id.clone());
                opened += 1;
            }
            Err(e) => {
                tracing::warn!(task = %t.id, error = %e, "cannot read task logs");
                first_err.get_or_insert(e);
            }
        }
    }
    if opened == 0 && tried > 0 && follow_service.is_none() {
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    let (Some(service_id), Some(mut events)) = (follow_service, events) else {
        return Ok(merged.boxed());
    };

    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                item = merged.next(), if !merged.is_empty() => {
                    if let Some(chunk) = item {
                        if tx.send(chunk).await.is_err() {
                            break;
                        }
                    }
                }
                ev = events.recv() => {
                    let candidates: Vec<Task> = match ev {
                        Ok(ev) => match &ev.object {
                            shoal_api::Object::Task(t) if ev.object.kind() == ObjectKind::Task => {
                                vec![t.clone()]
                            }
                            _ => Vec::new(),
                        },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => store
                            .view(|s| s.tasks_of_service(&service_id).cloned().collect()),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    };
                    for t in candidates {
                        let ready = t.service_id == service_id
                            && !seen.contains(&t.id)
                            && !t.node_id.as_deref().unwrap_or("").is_empty()
                            && t.status.state >= TaskState::Running;
                        if !ready {
                            continue;
                        }
                        match backend.task_logs(&t, req.options()).await {
                            Ok(lines) => {
                                merged.push(encode(&t, lines, &req, mux));
                                seen.insert(t.id.clone());
                            }
                            Err(e) => {
                                tracing::debug!(task = %t.id, error = %e, "task logs not readable yet");
                            }
                        }
                    }
                }
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn frames_have_docker_headers() {
        let f = frame(2, b"hello\n");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 6]);
        assert_eq!(&f[8..], b"hello\n");
    }

    #[test]
    fn lines_carry_timestamp_and_details() {
        let line = LogLine {
            timestamp: Utc
                .timestamp_opt(1_700_000_000, 5)
                .single()
                .unwrap_or_default(),
            stream: LogStream::Stdout,
            line: b"hi there".to_vec(),
        };
        let out = format_line(&line, Some("a=b"), true);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2023-11-14T22:13:20.000000005Z a=b hi there\n"
        );
        assert_eq!(format_line(&line, None, false), b"hi there\n".to_vec());
        assert_eq!(query_escape("a b/c=d"), "a+b%2Fc%3Dd");
    }

    #[test]
    fn options_are_checked() {
        let p = |q: &str| LogRequest::from_params(&Params::parse(Some(q)));
        assert_eq!(
            p("follow=1").unwrap_err().message(),
            "must specify at least one of 'stdout' or 'stderr'"
        );
        assert_eq!(
            p("stdout=1&tail=x").unwrap_err().message(),
            "tail value must be a positive integer or \"all\""
        );
        assert_eq!(
            p("stdout=1&tail=-1").unwrap_err().message(),
            "negative tail values not supported"
        );
        let r = p("stdout=1&tail=all&since=1700000000.5&details=1").unwrap();
        assert_eq!(r.tail, None);
        assert!(r.details && r.stdout && !r.stderr);
        assert_eq!(
            r.since.map(|s| s.timestamp_subsec_nanos()),
            Some(500_000_000)
        );
        assert!(p("stdout=1&since=abc").is_err());
        assert_eq!(p("stderr=1&tail=3").unwrap().tail, Some(3));
    }
}
