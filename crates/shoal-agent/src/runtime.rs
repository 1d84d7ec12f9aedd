//! The runtime seam of the agent: how a task's workload is prepared, started, waited on,
//! stopped, removed, and how its output is read back.
//!
//! A task controller drives one task through the [`Runtime`] trait:
//!
//! ```text
//!   prepare(spec) ──> start(id) ──> wait(id) ──> ExitStatus      (the process ended by itself)
//!                          │
//!                          └──────> stop(id, signal, grace)      (signal, SIGKILL after grace)
//!   remove(id)        stops if needed, then deletes the task's state and logs
//!   logs(id, opts)    stdout/stderr lines with timestamps; `follow` ends when the task has exited
//!   recover()         after a daemon restart: every task the runtime still knows of
//! ```
//!
//! Implementations: [`crate::process::ProcessRuntime`] (host processes under a per-task shim,
//! survives daemon restarts) and [`crate::mock::MockRuntime`] (in memory, scriptable, for tests).
//! Every implementation runs [`crate::conformance::run_conformance`].
//!
//! These types are independent of the cluster model (`shoal-api`): the worker translates a task
//! into a [`RunSpec`] (command already resolved from `ContainerSpec.Command` + `Args`).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// Default time between the stop signal and SIGKILL (Docker's default `StopGracePeriod`).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Everything a runtime needs to run one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The task's ID; names its state. Must not contain path separators.
    pub task_id: String,
    /// Human name of the task, e.g. `web.1`.
    pub task_name: String,
    /// The image reference. Runtimes that do not pull images only record it.
    pub image: String,
    /// `ContainerSpec.Command` followed by `ContainerSpec.Args`, already resolved. An empty
    /// command is rejected with "no command specified".
    pub command: Vec<String>,
    /// `ContainerSpec.Command` was empty: `command` holds only `Args` (maybe none), and the
    /// image's entrypoint and default command apply. The `process` runtime knows them only for
    /// its built-in images (see `shoal_testimage`); for other images `command` runs as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uses_image_entrypoint: bool,
    /// `KEY=VALUE` entries, applied on top of the runtime's minimal environment.
    pub env: Vec<String>,
    /// Working directory (must exist).
    pub dir: Option<String>,
    /// `name`, `uid`, `name:group` or `uid:gid`.
    pub user: Option<String>,
    /// Hostname the task should see: `HOSTNAME` in its environment, and its UTS namespace's
    /// name when it has a network namespace of its own.
    pub hostname: Option<String>,
    /// The network namespace the task runs in (`/run/netns/...`, made by the data plane);
    /// `None`: the node's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Signal sent by `stop` when the caller gives none: `SIGTERM`, `TERM` or `15`.
    pub stop_signal: Option<String>,
    /// Time between the stop signal and SIGKILL when the task is removed or stopped by
    /// the runtime itself.
    pub stop_grace: Duration,
    /// Labels of the task (recorded; `com.docker.swarm.*` and user labels).
    pub labels: HashMap<String, String>,
    /// Secrets and configs the task sees as files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<MountedFile>,
}

/// A file (a secret's or a config's data) the task sees at `target`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountedFile {
    /// Absolute path in the task's view (`/run/secrets/<name>` for a secret by default).
    pub target: String,
    /// The content. Never written into a runtime's records (`spec.json`).
    #[serde(skip)]
    pub data: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (Docker's default 0444).
    pub mode: u32,
}

impl std::fmt::Debug for MountedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedFile")
            .field("target", &self.target)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

impl RunSpec {
    /// A spec with the given id and command and every other field empty or defaulted.
    pub fn new(task_id: impl Into<String>, command: Vec<String>) -> Self {
        let task_id = task_id.into();
        RunSpec {
            task_name: task_id.clone(),
            task_id,
            image: String::new(),
            command,
            uses_image_entrypoint: false,
            env: Vec::new(),
            dir: None,
            user: None,
            hostname: None,
            netns: None,
            stop_signal: None,
            stop_grace: DEFAULT_STOP_GRACE,
            labels: HashMap::new(),
            files: Vec::new(),
        }
    }

    /// Checks what every runtime must refuse: a bad task id, an empty command, a malformed
    /// environment entry, an unknown stop signal.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        validate_task_id(&self.task_id)?;
        match self.command.first() {
            None => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "task {}: no command specified",
                    self.task_id
                )))
            }
            Some(c) if c.is_empty() => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "task {}: the command's program is an empty string",
                    self.task_id
                )))
            }
            Some(_) => {}
        }
        for e in &self.env {
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                _ => {
                    return Err(RuntimeError::InvalidSpec(format!(
                        "task {}: environment entry {e:?} is not KEY=VALUE",
                        self.task_id
                    )))
                }
            }
        }
        if let Some(sig) = &self.stop_signal {
            parse_signal(sig).map_err(|e| {
                RuntimeError::InvalidSpec(format!("task {}: stop signal: {e}", self.task_id))
            })?;
        }
        Ok(())
    }
}

/// Refuses task ids that could escape a state directory or are otherwise unusable as a file
/// name: empty, `.`/`..`, path separators, NUL, longer than 200 bytes.
pub fn validate_task_id(task_id: &str) -> Result<(), RuntimeError> {
    let bad = |why: &str| {
        Err(RuntimeError::InvalidSpec(format!(
            "invalid task id {task_id:?}: {why}"
        )))
    };
    if task_id.is_empty() {
        return bad("it is empty");
    }
    if task_id == "." || task_id == ".." {
        return bad("it names a directory");
    }
    if task_id.contains(['/', '\\', '\0']) {
        return bad("it contains a path separator or NUL");
    }
    if task_id.len() > 200 {
        return bad("it is longer than 200 bytes");
    }
    Ok(())
}

/// Parses a signal given as `SIGTERM`, `TERM`, `sigterm` or `15`.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, String> {
    use nix::sys::signal::Signal;
    use std::str::FromStr;
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("{n} is not a signal number"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| format!("unknown signal {s:?}"))
}

/// What a runtime can do; reported to the manager and used by the worker to refuse specs
/// the runtime cannot honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Short name: `process`, `mock`, `container`.
    pub name: &'static str,
    /// Whether `image` is pulled and used as a root filesystem.
    pub pulls_images: bool,
    /// Whether the task sees its own filesystem.
    pub isolates_filesystem: bool,
    /// Whether the task has its own network namespace.
    pub isolates_network: bool,
    /// Whether a task keeps running across a daemon restart and is adopted by `recover`.
    pub survives_daemon_restart: bool,
}

/// How a task's process ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code when the process exited by itself.
    pub code: Option<i32>,
    /// The signal number when a signal killed the process.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// An exit with `code`.
    pub fn code(code: i32) -> Self {
        ExitStatus {
            code: Some(code),
            signal: None,
        }
    }

    /// Death by signal `signal`.
    pub fn signaled(signal: i32) -> Self {
        ExitStatus {
            code: None,
            signal: Some(signal),
        }
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none()
    }

    /// The exit code Docker reports: the code, or 128 + signal; `None` when unknown.
    pub fn exit_code(&self) -> Option<i32> {
        match (self.code, self.signal) {
            (Some(c), _) => Some(c),
            (None, Some(s)) => Some(128 + s),
            (None, None) => None,
        }
    }

    /// The task status message, worded like swarmkit's: `finished` on success,
    /// `task: non-zero exit (N)` otherwise (N = 128 + signal for a signal).
    pub fn describe(&self) -> String {
        if self.success() {
            return "finished".to_string();
        }
        match self.exit_code() {
            Some(c) => format!("task: non-zero exit ({c})"),
            None => "task: exit status unknown".to_string(),
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by signal {s} ({sig})"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
            (None, None) => write!(f, "unknown exit status"),
        }
    }
}

/// Errors of a runtime. Messages name the task and, for state problems, the path.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The task is unknown to this runtime (never prepared, or removed).
    #[error("no such task: {0}")]
    NotFound(String),
    /// The spec cannot be run as given; the message says what to change.
    #[error("invalid task spec: {0}")]
    InvalidSpec(String),
    /// The workload could not be started.
    #[error("starting task failed: {0}")]
    Start(String),
    /// Stopping the workload failed.
    #[error("stopping task failed: {0}")]
    Stop(String),
    /// The task was started but its supervisor vanished without recording how it ended.
    #[error("task {0}: its supervisor died without recording an exit status")]
    Lost(String),
    /// A state file could not be understood.
    #[error("corrupt runtime state {path}: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What was wrong with it.
        message: String,
    },
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, and where.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// An [`RuntimeError::Io`] with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            what: what.into(),
            source,
        }
    }

    /// Whether this is [`RuntimeError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound(_))
    }
}

/// Which options a log read takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and deliver new lines until the task has exited.
    pub follow: bool,
    /// Only the last N lines (after `since` is applied); `None` = all.
    pub tail: Option<usize>,
    /// Only lines stamped at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Whether the consumer wants timestamps printed. Lines always carry their timestamp;
    /// this flag is for the formatter downstream.
    pub timestamps: bool,
}

/// The stream a line was written to; the numbers are Docker's stdcopy stream ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
#[repr(u8)]
pub enum LogStream {
    /// Standard output.
    Stdout = 1,
    /// Standard error.
    Stderr = 2,
}

impl From<LogStream> for u8 {
    fn from(s: LogStream) -> u8 {
        s as u8
    }
}

impl TryFrom<u8> for LogStream {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(LogStream::Stdout),
            2 => Ok(LogStream::Stderr),
            other => Err(format!("unknown log stream {other} (expected 1 or 2)")),
        }
    }
}

/// One line of a task's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the runtime read the line.
    pub timestamp: DateTime<Utc>,
    /// Where it was written.
    pub stream: LogStream,
    /// The bytes, without the trailing newline.
    pub line: Vec<u8>,
}

/// What [`Runtime::recover`] knows of a task after a daemon restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// Prepared but never started: it can still be started (or removed).
    Created,
    /// Its process is alive; `wait`, `stop`, `logs` work on it.
    Running,
    /// Its process ended with this status while nobody was watching (or before).
    Exited(ExitStatus),
    /// It was started, but neither its process nor an exit status can be found.
    Gone,
}

/// The seam between the worker and whatever runs task workloads.
///
/// Contract (checked by [`crate::conformance::run_conformance`]):
/// - `prepare` validates and records the spec; calling it again is harmless.
/// - `start` of an unknown task is `NotFound`; of a running task is `Ok`.
/// - `wait` resolves when the process ends, also for tasks adopted after a restart.
/// - `stop` sends the signal (default: the spec's stop signal, else SIGTERM) and SIGKILL
///   after `grace`; it is `Ok` for unknown, never-started and finished tasks.
/// - `remove` kills the task if it still runs and deletes its state and logs; `Ok` for
///   unknown tasks. Afterwards the task is `NotFound`.
/// - `logs` gives stdout and stderr lines in the order they were read, each with its stream.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// What this runtime can do.
    fn capabilities(&self) -> Capabilities;
    /// Validates the spec and creates the task's state. Idempotent.
    async fn prepare(&self, spec: &RunSpec) -> Result<(), RuntimeError>;
    /// Starts the prepared task's process.
    async fn start(&self, task_id: &str) -> Result<(), RuntimeError>;
    /// Resolves when the task's process ends.
    async fn wait(&self, task_id: &str) -> Result<ExitStatus, RuntimeError>;
    /// Sends `signal` (or the spec's stop signal), then SIGKILL after `grace`; returns once
    /// the process is gone. `Ok` if it already is.
    async fn stop(
        &self,
        task_id: &str,
        signal: Option<&str>,
        grace: Duration,
    ) -> Result<(), RuntimeError>;
    /// Kills the task if needed and deletes its state and logs.
    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError>;
    /// The task's output.
    async fn logs(
        &self,
        task_id: &str,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, RuntimeError>;
    /// After a daemon restart: what the runtime knows of each task it has state for.
    async fn recover(&self) -> Result<Vec<(String, Recovered)>, RuntimeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_matches_swarmkit() {
        assert_eq!(ExitStatus::code(0).describe(), "finished");
        assert_eq!(ExitStatus::code(1).describe(), "task: non-zero exit (1)");
        assert_eq!(
            ExitStatus::signaled(9).describe(),
            "task: non-zero exit (137)"
        );
        assert!(ExitStatus::code(0).success());
        assert!(!ExitStatus::signaled(15).success());
        assert_eq!(
            ExitStatus::signaled(15).to_string(),
            "killed by signal 15 (SIGTERM)"
        );
    }

    #[test]
    fn signals_parse_in_every_spelling() {
        use nix::sys::signal::Signal;
        for s in ["SIGTERM", "TERM", "term", "15", " SIGterm "] {
            assert_eq!(parse_signal(s), Ok(Signal::SIGTERM), "{s}");
        }
        assert_eq!(parse_signal("KILL"), Ok(Signal::SIGKILL));
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("999").is_err());
    }

    #[test]
    fn task_ids_with_separators_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a\\b", "a\0b"] {
            assert!(validate_task_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_task_id("abc.1-x_y").is_ok());
    }

    #[test]
    fn spec_validation() {
        let spec = RunSpec::new("t1", vec![]);
        let err = spec.validate().unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidSpec(_)));
        assert!(err.to_string().contains("no command specified"), "{err}");
        let mut spec = RunSpec::new("t1", vec!["true".into()]);
        assert!(spec.validate().is_ok());
        spec.env = vec!["NOEQUALS".into()];
        assert!(spec.validate().is_err());
        spec.env = vec!["A=".into()];
        spec.stop_signal = Some("SIGWHAT".into());
        assert!(spec.validate().is_err());
    }

    #[test]
    fn log_stream_serializes_as_number() {
        assert_eq!(serde_json::to_string(&LogStream::Stderr).unwrap(), "2");
        let s: LogStream = serde_json::from_str("1").unwrap();
        assert_eq!(s, LogStream::Stdout);
        assert!(serde_json::from_str::<LogStream>("3").is_err());
    }
}
