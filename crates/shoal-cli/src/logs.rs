//! `service logs`: demultiplexing of the stdcopy stream (8-byte frame headers)
//! and docker's per-line prefix `service.slot.task@node    | `, resolved from
//! the `com.docker.swarm.*` details the daemon attaches to every line.

use std::collections::{BTreeMap, HashMap};

use bollard::models::Task;
use http_body_util::BodyExt;
use hyper::Method;

use crate::client::{CliError, Client};
use crate::format::{self, truncate_id};

/// Arguments of `service logs`.
#[derive(clap::Args, Debug, Clone)]
pub struct LogsArgs {
    /// Service or task to read logs from
    #[arg(value_name = "SERVICE|TASK")]
    pub target: String,
    /// Show extra details provided to logs
    #[arg(long)]
    pub details: bool,
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Do not map IDs to Names in output
    #[arg(long = "no-resolve")]
    pub no_resolve: bool,
    /// Do not include task IDs in output
    #[arg(long = "no-task-ids")]
    pub no_task_ids: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Do not neatly format logs
    #[arg(long)]
    pub raw: bool,
    /// Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long, value_name = "string", default_value = "")]
    pub since: String,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, value_name = "string", default_value = "all")]
    pub tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
}

/// One demultiplexed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Stream 0.
    Stdin(Vec<u8>),
    /// Stream 1.
    Stdout(Vec<u8>),
    /// Stream 2.
    Stderr(Vec<u8>),
}

/// Incremental stdcopy demultiplexer (`[stream, 0, 0, 0, len BE u32]` + payload).
#[derive(Debug, Default)]
pub struct Demuxer {
    buf: Vec<u8>,
}

impl Demuxer {
    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete frame, `Ok(None)` when more bytes are needed.
    /// Stream 3 (daemon error) and unknown stream types are errors, as in docker's `StdCopy`.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let stream = self.buf[0];
        let payload: Vec<u8> = self.buf[8..8 + len].to_vec();
        self.buf.drain(..8 + len);
        match stream {
            0 => Ok(Some(Frame::Stdin(payload))),
            1 => Ok(Some(Frame::Stdout(payload))),
            2 => Ok(Some(Frame::Stderr(payload))),
            3 => Err(format!(
                "error from daemon in stream: {}",
                String::from_utf8_lossy(&payload)
            )),
            other => Err(format!("Unrecognized input header: {other}")),
        }
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

fn query_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .ok_or_else(|| format!("invalid URL escape {:?}", &s[i..]))?;
                let v = u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("invalid URL escape \"%{hex}\""))?;
                out.push(v);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// `logdetails.Parse`: `k=v,k2=v2` with query-escaped keys and values.
pub fn parse_details(details: &str) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    if details.is_empty() {
        return Ok(m);
    }
    for pair in details.split(',') {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => (k, v),
            _ => return Err("invalid details format".to_string()),
        };
        m.insert(query_unescape(k)?, query_unescape(v)?);
    }
    Ok(m)
}

/// The swarm identifiers carried by one log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogContext {
    /// `com.docker.swarm.node.id`.
    pub node_id: String,
    /// `com.docker.swarm.service.id`.
    pub service_id: String,
    /// `com.docker.swarm.task.id`.
    pub task_id: String,
}

/// A log line split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The timestamp when `--timestamps` was asked for.
    pub timestamp: Option<String>,
    /// Whom the line belongs to.
    pub context: LogContext,
    /// Details other than the swarm identifiers, sorted.
    pub extra: BTreeMap<String, String>,
    /// The message, newline included.
    pub message: Vec<u8>,
}

/// Splits a frame payload `[timestamp ]details message` (docker's `logWriter.Write`).
pub fn split_line(buf: &[u8], timestamps: bool) -> Result<LogLine, String> {
    let parts_wanted = if timestamps { 3 } else { 2 };
    let mut parts: Vec<&[u8]> = Vec::with_capacity(parts_wanted);
    let mut rest = buf;
    while parts.len() + 1 < parts_wanted {
        match rest.iter().position(|&b| b == b' ') {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => break,
        }
    }
    if parts.len() + 1 != parts_wanted {
        return Err(format!(
            "invalid context in log message: {}",
            String::from_utf8_lossy(buf)
        ));
    }
    parts.push(rest);
    let (timestamp, details, message) = if timestamps {
        (
            Some(String::from_utf8_lossy(parts[0]).into_owned()),
            parts[1],
            parts[2],
        )
    } else {
        (None, parts[0], parts[1])
    };
    let mut details = parse_details(&String::from_utf8_lossy(details))?;
    let mut take = |key: &str, what: &str| {
        details
            .remove(key)
            .ok_or_else(|| format!("missing {what} id in details"))
    };
    let node_id = take("com.docker.swarm.node.id", "node")?;
    let service_id = take("com.docker.swarm.service.id", "service")?;
    let task_id = take("com.docker.swarm.task.id", "task")?;
    Ok(LogLine {
        timestamp,
        context: LogContext {
            node_id,
            service_id,
            task_id,
        },
        extra: details,
        message: message.to_vec(),
    })
}

/// Number of decimal digits of `n` (docker's `getMaxLength`).
pub fn digits(n: i64) -> usize {
    n.to_string().len()
}

/// `service.slot[.task]@node` plus the padding that aligns slots of differing width.
pub fn task_label(
    service_name: &str,
    slot: i64,
    task_id: &str,
    node_name: &str,
    no_task_ids: bool,
    no_trunc: bool,
    padding: usize,
) -> String {
    let mut name = format!("{service_name}.{slot}");
    if !no_task_ids {
        name.push('.');
        if no_trunc {
            name.push_str(task_id);
        } else {
            name.push_str(&truncate_id(task_id));
        }
    }
    let pad = padding.saturating_sub(digits(slot));
    format!("{name}@{node_name}{}", " ".repeat(pad))
}

/// Assembles the printed line from its parts and the resolved label.
pub fn render_line(line: &LogLine, label: &str, details: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.message.len() + label.len() + 16);
    if let Some(ts) = &line.timestamp {
        out.extend_from_slice(ts.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"    | ");
    if details {
        let d: Vec<String> = line.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.extend_from_slice(d.join(",").as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&line.message);
    out
}

struct Resolver<'a> {
    client: &'a Client,
    no_resolve: bool,
    names: HashMap<String, String>,
    labels: HashMap<LogContext, String>,
}

impl Resolver<'_> {
    async fn node(&mut self, id: &str) -> String {
        if self.no_resolve {
            return id.to_string();
        }
        if let Some(n) = self.names.get(id) {
            return n.clone();
        }
        let name = crate::node::display_name(self.client, id).await;
        self.names.insert(id.to_string(), name.clone());
        name
    }

    async fn service(&mut self, id: &str) -> String {
        if self.no_resolve {
            return id.to_string();
        }
        if let Some(n) = self.names.get(id) {
            return n.clone();
        }
        let name = match self.client.docker.inspect_service(id, None).await {
            Ok(s) => s.spec.and_then(|s| s.name).unwrap_or_default(),
            Err(_) => id.to_string(),
        };
        self.names.insert(id.to_string(), name.clone());
        name
    }

    async fn label(
        &mut self,
        ctx: &LogContext,
        args: &LogsArgs,
        padding: usize,
    ) -> Result<String, CliError> {
        if let Some(l) = self.labels.get(ctx) {
            return Ok(l.clone());
        }
        let node = self.node(&ctx.node_id).await;
        let service = self.service(&ctx.service_id).await;
        let task = self.client.docker.inspect_task(&ctx.task_id).await?;
        let label = task_label(
            &service,
            task.slot.unwrap_or(0),
            task.id.as_deref().unwrap_or(&ctx.task_id),
            &node,
            args.no_task_ids,
            args.no_trunc,
            padding,
        );
        self.labels.insert(ctx.clone(), label.clone());
        Ok(label)
    }
}

fn write_bytes(stderr: bool, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if stderr {
        format::err(&text);
    } else {
        format::out(&text);
    }
}

/// Runs `service logs`.
pub async fn run(client: &Client, args: &LogsArgs) -> Result<(), CliError> {
    let (path, tty, padding) = match client.docker.inspect_service(&args.target, None).await {
        Ok(service) => {
            let spec = service.spec.unwrap_or_default();
            let tty = spec
                .task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.tty)
                .unwrap_or(false);
            let replicas = spec
                .mode
                .as_ref()
                .and_then(|m| m.replicated.as_ref())
                .and_then(|r| r.replicas);
            let padding = replicas.map(digits).unwrap_or(1);
            (format!("/services/{}/logs", args.target), tty, padding)
        }
        Err(e) => {
            let e = CliError::from(e);
            if !e.is_not_found() {
                return Err(e);
            }
            let task: Task = match client.docker.inspect_task(&args.target).await {
                Ok(t) => t,
                Err(e) => {
                    let e = CliError::from(e);
                    if e.is_not_found() {
                        return Err(CliError::msg(format!(
                            "no such task or service: {}",
                            args.target
                        )));
                    }
                    return Err(e);
                }
            };
            let tty = task
                .spec
                .as_ref()
                .and_then(|s| s.container_spec.as_ref())
                .and_then(|c| c.tty)
                .unwrap_or(false);
            (
                format!("/tasks/{}/logs", args.target),
                tty,
                digits(task.slot.unwrap_or(0)),
            )
        }
    };
    if tty && !args.raw {
        return Err(CliError::msg("tty service logs only supported with --raw"));
    }
    let mut query: Vec<(&str, String)> = vec![("stdout", "1".into()), ("stderr", "1".into())];
    let since = crate::opts::since(&args.since, chrono::Utc::now());
    if !since.is_empty() {
        query.push(("since", since));
    }
    if args.timestamps {
        query.push(("timestamps", "1".into()));
    }
    if args.details || !args.raw {
        query.push(("details", "1".into()));
    }
    if args.follow {
        query.push(("follow", "1".into()));
    }
    query.push(("tail", args.tail.clone()));

    let resp = client
        .request_stream(Method::GET, &path, &query, Vec::new(), None)
        .await?;
    let mut body = resp.into_body();
    let mut demux = Demuxer::default();
    let mut resolver = Resolver {
        client,
        no_resolve: args.no_resolve,
        names: HashMap::new(),
        labels: HashMap::new(),
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CliError::msg(format!("error reading logs: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if tty {
            write_bytes(false, &data);
            continue;
        }
        demux.push(&data);
        while let Some(frame) = demux.next_frame().map_err(CliError::Message)? {
            let (is_err, payload) = match frame {
                Frame::Stdout(p) | Frame::Stdin(p) => (false, p),
                Frame::Stderr(p) => (true, p),
            };
            if args.raw {
                write_bytes(is_err, &payload);
                continue;
            }
            let line = split_line(&payload, args.timestamps).map_err(CliError::Message)?;
            let label = resolver.label(&line.context, args, padding).await?;
            write_bytes(is_err, &render_line(&line, &label, args.details));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn demuxes_split_frames() {
        let mut data = frame(1, b"hello\n");
        data.extend(frame(2, b"oops\n"));
        data.extend(frame(1, b""));
        let mut d = Demuxer::default();
        // feed byte by byte: frames only come out once complete
        let mut frames = Vec::new();
        for b in &data {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::Stdout(b"hello\n".to_vec()),
                Frame::Stderr(b"oops\n".to_vec()),
                Frame::Stdout(Vec::new()),
            ]
        );
        assert_eq!(d.pending(), 0);

        let mut d = Demuxer::default();
        d.push(&frame(3, b"boom"));
        assert_eq!(
            d.next_frame(),
            Err("error from daemon in stream: boom".to_string())
        );
        let mut d = Demuxer::default();
        d.push(&frame(7, b"x"));
        assert_eq!(
            d.next_frame(),
            Err("Unrecognized input header: 7".to_string())
        );
        let mut d = Demuxer::default();
        d.push(&[1, 0, 0, 0, 0, 0, 0, 9, b'a']);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.pending(), 9);
    }

    #[test]
    fn parses_details_and_lines() {
        let details = "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1,env%3Dx=a+b%2Cc";
        let line = split_line(format!("{details} hello world\n").as_bytes(), false).unwrap();
        assert_eq!(line.timestamp, None);
        assert_eq!(
            line.context,
            LogContext {
                node_id: "n1".into(),
                service_id: "s1".into(),
                task_id: "t1".into()
            }
        );
        assert_eq!(line.extra.get("env=x").map(String::as_str), Some("a b,c"));
        assert_eq!(line.message, b"hello world\n");

        let line = split_line(
            format!("2024-01-01T00:00:00.000000001Z {details} msg\n").as_bytes(),
            true,
        )
        .unwrap();
        assert_eq!(
            line.timestamp.as_deref(),
            Some("2024-01-01T00:00:00.000000001Z")
        );
        assert_eq!(line.message, b"msg\n");

        assert!(split_line(b"nodetails", false).is_err());
        assert!(split_line(b"com.docker.swarm.node.id=n1 msg", false).is_err());
        assert!(parse_details("novalue").is_err());
    }

    #[test]
    fn labels_and_rendering() {
        assert_eq!(
            task_label(
                "web",
                1,
                "abcdefghijklmnopqrstuvwxy",
                "node-1",
                false,
                false,
                2
            ),
            "web.1.abcdefghijkl@node-1 "
        );
        assert_eq!(
            task_label("web", 10, "abcdefghijklmnop", "node-1", false, true, 2),
            "web.10.abcdefghijklmnop@node-1"
        );
        assert_eq!(task_label("web", 3, "t", "n", true, false, 1), "web.3@n");

        let line = LogLine {
            timestamp: Some("TS".into()),
            context: LogContext {
                node_id: "n".into(),
                service_id: "s".into(),
                task_id: "t".into(),
            },
            extra: [
                ("b".to_string(), "2".to_string()),
                ("a".to_string(), "1".to_string()),
            ]
            .into_iter()
            .collect(),
            message: b"hi\n".to_vec(),
        };
        assert_eq!(
            render_line(&line, "web.1.t@n", false),
            b"TS web.1.t@n    | hi\n"
        );
        assert_eq!(
            render_line(&line, "web.1.t@n", true),
            b"TS web.1.t@n    | a=1,b=2 hi\n"
        );
    }
}
