//! The `process` runtime: each task is a host process, supervised by a per-task shim so that
//! it survives a `kill -9` of the daemon and is adopted by the next one.
//!
//! The image is recorded, not pulled; there is no filesystem or network isolation. The built-in
//! images (`shoal/testimage`, `*/friendlyhello`) are the exception: given no
//! `ContainerSpec.Command`, their tasks run `shoal testimage hello` (or `shoal testimage ARGS`
//! with `Args`), `shoal` being the shim's executable; see [`resolve_command`]. The task
//! gets a minimal environment (`PATH`, `HOME`, `HOSTNAME` when set) plus the spec's `env`, the
//! spec's working directory (default `/`), and the spec's user (only when the daemon is root).
//!
//! ```text
//!  daemon (ProcessRuntime)                  shim (shoal shim --task-dir DIR)      task
//!  ───────────────────────                  ─────────────────────────────────      ────
//!  prepare: mkdir DIR, write spec.json
//!  start:   create `started`, spawn shim ──> setsid, read spec.json
//!                                            spawn command (own process group) ──> runs
//!                                            write pid (child pid + start time)
//!           read "ok PID" from its stdout <─ print "ok PID", stdout -> /dev/null
//!                                            stdout/stderr lines -> log.jsonl <─── output
//!  wait:    poll for exit.json               child exits: SIGKILL its group,
//!                                            drain pipes, write exit.json, exit
//!  stop:    signal the child's group (pid verified by start time), SIGKILL after grace
//!  recover: exit.json -> Exited; child alive -> Running; started -> Gone; else Created
//! ```
//!
//! On-disk layout, one directory per task under `<state_root>/tasks/`:
//!
//! ```text
//! <state_root>/tasks/<task id>/
//!   spec.json   {"spec": RunSpec, "exec": {argv, env, dir, uid, gid}}  written by prepare
//!   started     empty marker, created exclusively by start (guards double starts)
//!   shim.log    the shim's own diagnostics (its stderr)
//!   pid         {"pid","start_time","shim_pid","shim_start_time"}     written by the shim
//!   log.jsonl   the task's output, see crate::logs                     appended by the shim
//!   exit.json   {"code": N|null, "signal": N|null}                     written by the shim
//! <state_root>/files/<task id>/   the task's secrets and configs (0700), see crate::files
//! ```
//!
//! Every file the shim writes except the log is written to `NAME.tmp` and renamed into place,
//! so readers never see half a file. Start times (field 22 of `/proc/PID/stat`) guard against
//! pid reuse: a pid whose start time differs is another process and is never signalled.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::logs;
use crate::runtime::{
    parse_signal, validate_task_id, Capabilities, ExitStatus, LogLine, LogOptions, Recovered,
    RunSpec, Runtime, RuntimeError,
};

pub(crate) const SPEC_FILE: &str = "spec.json";
pub(crate) const STARTED_FILE: &str = "started";
pub(crate) const SHIM_LOG_FILE: &str = "shim.log";
pub(crate) const PID_FILE: &str = "pid";
pub(crate) const LOG_FILE: &str = "log.jsonl";
pub(crate) const EXIT_FILE: &str = "exit.json";

/// `PATH` given to tasks (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How often `wait` and `stop` look for the exit file.
const POLL: Duration = Duration::from_millis(50);
/// How long `start` waits for the shim to report.
const SHIM_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits for the process to die after SIGKILL, and for the shim to record it.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run the shim: `<program> <args...> --task-dir DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    /// The executable (in production, the `shoal` binary itself).
    pub program: PathBuf,
    /// Arguments before `--task-dir` (in production `["shim"]`).
    pub args: Vec<String>,
}

impl ShimCommand {
    /// The running executable with the `shim` subcommand.
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(ShimCommand {
            program: std::env::current_exe()?,
            args: vec!["shim".to_string()],
        })
    }
}

/// What `spec.json` holds: the spec as given and the resolved execution plan for the shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskFile {
    pub spec: RunSpec,
    pub exec: ExecPlan,
    /// The task's secrets and configs, mounted by the shim (see [`crate::files`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::files::FileMount>,
}

/// Everything the shim needs to exec the task, already resolved by `prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecPlan {
    pub argv: Vec<String>,
    /// `KEY=VALUE`, complete (the shim clears its own environment).
    pub env: Vec<String>,
    pub dir: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// What the `pid` file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PidFile {
    pub pid: i32,
    pub start_time: u64,
    pub shim_pid: i32,
    pub shim_start_time: u64,
}

impl PidFile {
    pub fn child(&self) -> ProcRef {
        ProcRef {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
    pub fn shim(&self) -> ProcRef {
        ProcRef {
            pid: self.shim_pid,
            start_time: self.shim_start_time,
        }
    }
}

/// A process identified by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcRef {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcRef {
    /// Whether this very process (same start time) exists and is not a zombie.
    pub fn alive(&self) -> bool {
        if self.pid <= 0 {
            return false;
        }
        match proc_stat(self.pid) {
            Some(st) => st.start_time == self.start_time && st.state != 'Z' && st.state != 'X',
            None => false,
        }
    }
}

/// The fields of `/proc/PID/stat` the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

/// Reads `/proc/PID/stat`; `None` if the process does not exist or the file is unreadable.
pub(crate) fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted after the last `)`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// Writes `bytes` to `path` through `path.tmp` and a rename, synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Reads and parses a JSON state file; `Ok(None)` if it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, RuntimeError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RuntimeError::Corrupt {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io(format!("reading {}", path.display()), e)),
    }
}

/// Sends `sig` to the task's process group, or to the process alone if it left its group.
/// Does nothing unless the pid still names the process that was started.
fn signal_task(child: ProcRef, sig: Signal) -> Result<(), RuntimeError> {
    if !child.alive() {
        return Ok(());
    }
    let pid = Pid::from_raw(child.pid);
    match nix::sys::signal::killpg(pid, sig) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::ESRCH) => match nix::sys::signal::kill(pid, sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(RuntimeError::Stop(format!(
                "sending {sig} to pid {}: {e}",
                child.pid
            ))),
        },
        Err(e) => Err(RuntimeError::Stop(format!(
            "sending {sig} to process group {}: {e}",
            child.pid
        ))),
    }
}

/// Kills, without waiting, every task process and shim recorded under `state_root`. For
/// emergency cleanup (tests, `leave --force`); synchronous so it can run in `Drop`.
pub fn kill_all_blocking(state_root: &Path) {
    let Ok(entries) = std::fs::read_dir(state_root.join("tasks")) else {
        return;
    };
    for entry in entries.flatten() {
        let pid_path = entry.path().join(PID_FILE);
        let Ok(bytes) = std::fs::read(&pid_path) else {
            continue;
        };
        let Ok(p) = serde_json::from_slice::<PidFile>(&bytes) else {
            continue;
        };
        let _ = signal_task(p.child(), Signal::SIGKILL);
        if p.shim().alive() {
            let _ = nix::sys::signal::kill(Pid::from_raw(p.shim_pid), Signal::SIGKILL);
        }
    }
}

/// Runs tasks as host processes; see the module docs.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    state_root: PathBuf,
    shim: ShimCommand,
}

impl ProcessRuntime {
    /// A runtime keeping its state under `state_root/tasks/` and supervising tasks with `shim`.
    /// A new runtime on the same `state_root` adopts the tasks of an old one.
    pub fn new(state_root: PathBuf, shim: ShimCommand) -> Self {
        // The shim changes directory to `/`: hand it absolute paths.
        let state_root = std::path::absolute(&state_root).unwrap_or(state_root);
        ProcessRuntime { state_root, shim }
    }

    /// Where state is kept.
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    fn tasks_dir(&self) -> PathBuf {
        self.state_root.join("tasks")
    }

    /// The state directory of a task (which may not exist).
    /// Where tasks' secrets and configs are kept (0700), one directory per task.
    pub fn files_root(&self) -> PathBuf {
        self.state_root.join("files")
    }

    /// Writes the files of `spec` (none: nothing is written).
    async fn write_files(
        &self,
        spec: &RunSpec,
    ) -> Result<Vec<crate::files::FileMount>, RuntimeError> {
        if spec.files.is_empty() {
            return Ok(Vec::new());
        }
        // Prepared before (not started): start over, so its mount points are not mistaken
        // for the host's own files.
        let dir = self.task_dir(&spec.task_id)?;
        self.remove_files(&spec.task_id, &dir).await?;
        let root = self.files_root();
        let id = spec.task_id.clone();
        let files = spec.files.clone();
        tokio::task::spawn_blocking(move || crate::files::write_task_files(&root, &id, &files))
            .await
            .map_err(|e| RuntimeError::io("writing the task's files", std::io::Error::other(e)))?
    }

    /// Removes the files of the task kept in `dir` (and the placeholders made for them).
    async fn remove_files(&self, task_id: &str, dir: &Path) -> Result<(), RuntimeError> {
        let mounts = read_json::<TaskFile>(&dir.join(SPEC_FILE))
            .ok()
            .flatten()
            .map(|f| f.mounts)
            .unwrap_or_default();
        let root = self.files_root();
        let id = task_id.to_string();
        tokio::task::spawn_blocking(move || crate::files::remove_task_files(&root, &id, &mounts))
            .await
            .map_err(|e| RuntimeError::io("removing the task's files", std::io::Error::other(e)))?
    }

    pub fn task_dir(&self, task_id: &str) -> Result<PathBuf, RuntimeError> {
        validate_task_id(task_id)?;
        Ok(self.tasks_dir().join(task_id))
    }

    /// The task's directory, which must exist with a spec in it.
    fn existing_task_dir(&self, task_id: &str) -> Result<PathBuf, RuntimeError> {
        let dir = self.task_dir(task_id)?;
        if !dir.join(SPEC_FILE).exists() {
            return Err(RuntimeError::NotFound(format!(
                "{task_id} (no state in {})",
                dir.display()
            )));
        }
        Ok(dir)
    }

    /// The task's directory if it exists; `None` for unknown tasks.
    fn known_task_dir(&self, task_id: &str) -> Result<Option<PathBuf>, RuntimeError> {
        let dir = self.task_dir(task_id)?;
        Ok(dir.is_dir().then_some(dir))
    }
}

/// The exit status recorded in `dir`, if any.
fn read_exit(dir: &Path) -> Result<Option<ExitStatus>, RuntimeError> {
    read_json(&dir.join(EXIT_FILE))
}

fn read_pid(dir: &Path) -> Result<Option<PidFile>, RuntimeError> {
    read_json(&dir.join(PID_FILE))
}

/// Started, no exit recorded, and neither the task nor its shim alive.
fn is_lost(dir: &Path) -> bool {
    if dir.join(EXIT_FILE).exists() {
        return false;
    }
    match read_pid(dir) {
        Ok(Some(p)) => !p.child().alive() && !p.shim().alive() && !dir.join(EXIT_FILE).exists(),
        // No pid file: not started, or a start is in progress.
        Ok(None) => false,
        Err(_) => true,
    }
}

/// The command line of `spec`'s task. A built-in image (see [`shoal_testimage`]) given no
/// `ContainerSpec.Command` runs the test workload of the `shoal` executable: `shoal testimage
/// ARGS...`, or `shoal testimage hello` without `Args`. Any other spec runs its command as it is.
pub(crate) fn resolve_command(spec: &RunSpec, shoal: &Path) -> Result<Vec<String>, RuntimeError> {
    if !spec.uses_image_entrypoint || !shoal_testimage::is_builtin_image(&spec.image) {
        return Ok(spec.command.clone());
    }
    let program = shoal.to_str().ok_or_else(|| {
        RuntimeError::InvalidSpec(format!(
            "task {}: image {}: the shoal executable's path {} is not UTF-8",
            spec.task_id,
            spec.image,
            shoal.display()
        ))
    })?;
    let mut argv = vec![program.to_string(), shoal_testimage::SUBCOMMAND.to_string()];
    if spec.command.is_empty() {
        argv.push(shoal_testimage::DEFAULT_COMMAND.to_string());
    } else {
        argv.extend(spec.command.iter().cloned());
    }
    Ok(argv)
}

/// Checks `spec` and builds its execution plan: the command line (see [`resolve_command`];
/// `shoal` is the executable of the built-in images' workload), then [`plan`].
pub(crate) fn exec_plan(spec: &RunSpec, shoal: &Path) -> Result<ExecPlan, RuntimeError> {
    let argv = resolve_command(spec, shoal)?;
    if argv == spec.command {
        spec.validate()?;
    } else {
        RunSpec {
            command: argv.clone(),
            uses_image_entrypoint: false,
            ..spec.clone()
        }
        .validate()?;
    }
    Ok(ExecPlan {
        argv,
        ..plan(spec)?
    })
}

/// Builds the execution plan: environment, user, working directory; the command as given.
pub(crate) fn plan(spec: &RunSpec) -> Result<ExecPlan, RuntimeError> {
    let euid = nix::unistd::geteuid();
    let egid = nix::unistd::getegid();
    let (uid, gid, home) = match &spec.user {
        None => {
            let home = nix::unistd::User::from_uid(euid)
                .ok()
                .flatten()
                .map(|u| u.dir.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".to_string());
            (None, None, home)
        }
        Some(user) => {
            let (uid, gid, home) = resolve_user(user)
                .map_err(|e| RuntimeError::InvalidSpec(format!("task {}: {e}", spec.task_id)))?;
            if !euid.is_root() && (uid != euid.as_raw() || gid != egid.as_raw()) {
                return Err(RuntimeError::InvalidSpec(format!(
                    "task {}: running as user {user:?} (uid {uid}, gid {gid}) needs root, but the \
                     daemon runs as uid {euid}; run the daemon as root or drop the user setting",
                    spec.task_id
                )));
            }
            (Some(uid), Some(gid), home)
        }
    };
    let dir = spec.dir.clone().unwrap_or_else(|| "/".to_string());
    if !Path::new(&dir).is_absolute() {
        return Err(RuntimeError::InvalidSpec(format!(
            "task {}: working directory {dir:?} is not an absolute path",
            spec.task_id
        )));
    }
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(RuntimeError::InvalidSpec(format!(
                "task {}: working directory {dir} is not a directory",
                spec.task_id
            )))
        }
        Err(e) => {
            return Err(RuntimeError::InvalidSpec(format!(
                "task {}: working directory {dir}: {e}",
                spec.task_id
            )))
        }
    }
    let mut env: Vec<(String, String)> =
        vec![("PATH".into(), DEFAULT_PATH.into()), ("HOME".into(), home)];
    if let Some(h) = &spec.hostname {
        env.push(("HOSTNAME".into(), h.clone()));
    }
    for e in &spec.env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
    }
    Ok(ExecPlan {
        argv: spec.command.clone(),
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        dir,
        uid,
        gid,
    })
}

/// Resolves `name`, `uid`, `name:group` or `uid:gid` to (uid, gid, home).
fn resolve_user(user: &str) -> Result<(u32, u32, String), String> {
    use nix::unistd::{Gid, Group, Uid, User};
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() {
        return Err(format!("user {user:?}: empty user name"));
    }
    let entry = match u.parse::<u32>() {
        Ok(uid) => {
            User::from_uid(Uid::from_raw(uid)).map_err(|e| format!("looking up uid {uid}: {e}"))?
        }
        Err(_) => Some(
            User::from_name(u)
                .map_err(|e| format!("looking up user {u}: {e}"))?
                .ok_or_else(|| {
                    format!("unable to find user {u}: no matching entries in passwd file")
                })?,
        ),
    };
    let uid = match (&entry, u.parse::<u32>()) {
        (_, Ok(uid)) => uid,
        (Some(e), Err(_)) => e.uid.as_raw(),
        (None, Err(_)) => return Err(format!("unable to find user {u}")),
    };
    let gid = match g {
        None | Some("") => entry.as_ref().map(|e| e.gid.as_raw()).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => {
                let _ = Group::from_gid(Gid::from_raw(gid));
                gid
            }
            Err(_) => Group::from_name(g)
                .map_err(|e| format!("looking up group {g}: {e}"))?
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?
                .gid
                .as_raw(),
        },
    };
    let home = entry
        .map(|e| e.dir.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_string());
    Ok((uid, gid, home))
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "process",
            pulls_images: false,
            isolates_filesystem: false,
            isolates_network: false,
            survives_daemon_restart: true,
        }
    }

    async fn prepare(&self, spec: &RunSpec) -> Result<(), RuntimeError> {
        let exec = exec_plan(spec, &self.shim.program)?;
        let dir = self.task_dir(&spec.task_id)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        if dir.join(STARTED_FILE).exists() {
            // Already started: the recorded spec is the one that runs.
            return Ok(());
        }
        let mounts = self.write_files(spec).await?;
        let file = TaskFile {
            spec: spec.clone(),
            exec,
            mounts,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| RuntimeError::Corrupt {
            path: dir.join(SPEC_FILE).display().to_string(),
            message: format!("encoding the spec: {e}"),
        })?;
        let path = dir.join(SPEC_FILE);
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| RuntimeError::io("writing the task spec", std::io::Error::other(e)))?
            .map_err(|e| RuntimeError::io(format!("writing {}", dir.join(SPEC_FILE).display()), e))
    }

    async fn start(&self, task_id: &str) -> Result<(), RuntimeError> {
        let dir = self.existing_task_dir(task_id)?;
        if read_exit(&dir)?.is_some() {
            return Err(RuntimeError::Start(format!(
                "task {task_id} has already run and exited; a task runs only once"
            )));
        }
        let marker = dir.join(STARTED_FILE);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return match read_pid(&dir)? {
                    Some(_) => Ok(()),
                    None => Err(RuntimeError::Start(format!(
                        "task {task_id} is already being started ({} exists without a pid file)",
                        marker.display()
                    ))),
                };
            }
            Err(e) => {
                return Err(RuntimeError::io(
                    format!("creating {}", marker.display()),
                    e,
                ))
            }
        }
        match self.spawn_shim(task_id, &dir).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&marker);
                Err(e)
            }
        }
    }

    async fn wait(&self, task_id: &str) -> Result<ExitStatus, RuntimeError> {
        let dir = self.existing_task_dir(task_id)?;
        let mut next_liveness_check = Instant::now() + Duration::from_secs(1);
        loop {
            if let Some(status) = read_exit(&dir)? {
                return Ok(status);
            }
            if !dir.is_dir() {
                return Err(RuntimeError::NotFound(format!(
                    "{task_id} (removed while waiting)"
                )));
            }
            // Every second: a task whose shim and process both vanished will never exit.
            if Instant::now() >= next_liveness_check
                && dir.join(STARTED_FILE).exists()
                && is_lost(&dir)
            {
                return match read_exit(&dir)? {
                    Some(status) => Ok(status),
                    None => Err(RuntimeError::Lost(task_id.to_string())),
                };
            }
            if Instant::now() >= next_liveness_check {
                next_liveness_check = Instant::now() + Duration::from_secs(1);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn stop(
        &self,
        task_id: &str,
        signal: Option<&str>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let Some(dir) = self.known_task_dir(task_id)? else {
            return Ok(());
        };
        let stop_signal = match signal {
            Some(s) => Some(s.to_string()),
            None => read_json::<TaskFile>(&dir.join(SPEC_FILE))?.and_then(|f| f.spec.stop_signal),
        };
        let sig = match stop_signal {
            Some(s) => parse_signal(&s)
                .map_err(|e| RuntimeError::InvalidSpec(format!("task {task_id}: {e}")))?,
            None => Signal::SIGTERM,
        };
        if read_exit(&dir)?.is_some() {
            return Ok(());
        }
        let Some(pids) = read_pid(&dir)? else {
            return Ok(()); // never started
        };
        let child = pids.child();
        signal_task(child, sig)?;
        let deadline = Instant::now() + grace;
        let mut killed = sig == Signal::SIGKILL;
        let mut kill_deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            if read_exit(&dir)?.is_some() || !child.alive() {
                break;
            }
            let now = Instant::now();
            if !killed && now >= deadline {
                tracing::debug!(task_id, "grace period over, sending SIGKILL");
                signal_task(child, Signal::SIGKILL)?;
                killed = true;
                kill_deadline = now + KILL_TIMEOUT;
            } else if killed && now >= kill_deadline {
                return Err(RuntimeError::Stop(format!(
                    "task {task_id}: pid {} still runs {}s after SIGKILL",
                    child.pid,
                    KILL_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        // The process is gone; give the shim time to kill stragglers and record the exit.
        let shim = pids.shim();
        let record_deadline = Instant::now() + KILL_TIMEOUT;
        while read_exit(&dir)?.is_none() && shim.alive() && Instant::now() < record_deadline {
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        let Some(dir) = self.known_task_dir(task_id)? else {
            return Ok(());
        };
        self.stop(task_id, Some("SIGKILL"), Duration::ZERO).await?;
        if let Ok(Some(p)) = read_pid(&dir) {
            // Processes that escaped the group are not ours to find; the group and the shim are.
            let _ = signal_task(p.child(), Signal::SIGKILL);
            if p.shim().alive() {
                let _ = nix::sys::signal::kill(Pid::from_raw(p.shim_pid), Signal::SIGKILL);
            }
        }
        self.remove_files(task_id, &dir).await?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io(format!("removing {}", dir.display()), e)),
        }
    }

    async fn logs(
        &self,
        task_id: &str,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, RuntimeError> {
        let dir = self.existing_task_dir(task_id)?;
        let watched = dir.clone();
        let finished = Arc::new(move || {
            !watched.is_dir()
                || watched.join(EXIT_FILE).exists()
                || (watched.join(STARTED_FILE).exists() && is_lost(&watched))
        });
        Ok(logs::read_log_file(dir.join(LOG_FILE), opts, finished))
    }

    async fn recover(&self) -> Result<Vec<(String, Recovered)>, RuntimeError> {
        let root = self.tasks_dir();
        let mut entries = match tokio::fs::read_dir(&root).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io(format!("listing {}", root.display()), e)),
        };
        let mut out = Vec::new();
        loop {
            let entry = match entries.next_entry().await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => return Err(RuntimeError::io(format!("listing {}", root.display()), e)),
            };
            let Some(task_id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if validate_task_id(&task_id).is_err() || !entry.path().is_dir() {
                continue;
            }
            let dir = entry.path();
            let state = match read_exit(&dir) {
                Ok(Some(status)) => Recovered::Exited(status),
                Ok(None) if !dir.join(STARTED_FILE).exists() => {
                    if dir.join(SPEC_FILE).exists() {
                        Recovered::Created
                    } else {
                        Recovered::Gone
                    }
                }
                Ok(None) => match read_pid(&dir) {
                    // A live shim with a dead child is about to write exit.json: `wait`
                    // resolves promptly, so it counts as running.
                    Ok(Some(p)) if p.child().alive() || p.shim().alive() => Recovered::Running,
                    Ok(_) => match read_exit(&dir) {
                        Ok(Some(status)) => Recovered::Exited(status),
                        _ => Recovered::Gone,
                    },
                    Err(e) => {
                        tracing::warn!(task_id, error = %e, "unreadable pid file");
                        Recovered::Gone
                    }
                },
                Err(e) => {
                    tracing::warn!(task_id, error = %e, "unreadable exit file");
                    Recovered::Gone
                }
            };
            out.push((task_id, state));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

impl ProcessRuntime {
    /// Spawns the shim and waits for its first line: `ok PID` or `error MESSAGE`.
    async fn spawn_shim(&self, task_id: &str, dir: &Path) -> Result<(), RuntimeError> {
        let shim_log_path = dir.join(SHIM_LOG_FILE);
        let shim_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shim_log_path)
            .map_err(|e| RuntimeError::io(format!("opening {}", shim_log_path.display()), e))?;
        let mut child = tokio::process::Command::new(&self.shim.program)
            .args(&self.shim.args)
            .arg("--task-dir")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(shim_log)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                RuntimeError::Start(format!(
                    "task {task_id}: running the shim {}: {e}",
                    self.shim.program.display()
                ))
            })?;
        let report = match child.stdout.take() {
            Some(stdout) => {
                let mut reader = tokio::io::BufReader::new(stdout);
                let mut line = String::new();
                match tokio::time::timeout(SHIM_READY_TIMEOUT, reader.read_line(&mut line)).await {
                    Ok(Ok(_)) => Ok(line),
                    Ok(Err(e)) => Err(format!("reading the shim's report: {e}")),
                    Err(_) => {
                        let _ = child.start_kill();
                        Err(format!(
                            "the shim did not report within {}s",
                            SHIM_READY_TIMEOUT.as_secs()
                        ))
                    }
                }
            }
            None => Err("the shim has no stdout".to_string()),
        };
        let line = report.map_err(|e| RuntimeError::Start(format!("task {task_id}: {e}")))?;
        let line = line.trim_end();
        if let Some(pid) = line.strip_prefix("ok ") {
            tracing::debug!(task_id, pid, "task started");
            // Reap the shim when it exits (if this daemon is still around by then).
            let task = task_id.to_string();
            tokio::spawn(async move {
                match child.wait().await {
                    Ok(st) if !st.success() => {
                        tracing::warn!(task_id = task, status = %st, "shim exited abnormally")
                    }
                    _ => {}
                }
            });
            return Ok(());
        }
        let status = child.wait().await.ok();
        let message = match line.strip_prefix("error ") {
            Some(m) => m.to_string(),
            None => {
                let diag = std::fs::read_to_string(&shim_log_path).unwrap_or_default();
                let last = diag.lines().last().unwrap_or("").to_string();
                match status {
                    Some(st) => format!(
                        "the shim exited ({st}) without reporting{}{last}",
                        if last.is_empty() { "" } else { ": " }
                    ),
                    None => format!("the shim exited without reporting: {last}"),
                }
            }
        };
        Err(RuntimeError::Start(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses_names_with_parens() {
        let text = "1234 (we(ird) name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let st = parse_proc_stat(text).expect("parses");
        assert_eq!(st.state, 'S');
        assert_eq!(st.start_time, 987654);
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_proc_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn own_process_is_alive_and_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let st = proc_stat(me).expect("own stat");
        assert!(ProcRef {
            pid: me,
            start_time: st.start_time
        }
        .alive());
        assert!(!ProcRef {
            pid: me,
            start_time: st.start_time + 1
        }
        .alive());
        assert!(!ProcRef {
            pid: 0,
            start_time: 0
        }
        .alive());
    }

    #[test]
    fn plan_builds_minimal_env_with_overrides() {
        let mut spec = RunSpec::new("t", vec!["sh".into()]);
        spec.env = vec!["FOO=bar".into(), "PATH=/x".into(), "EMPTY=".into()];
        spec.hostname = Some("h1".into());
        let p = plan(&spec).expect("plan");
        assert_eq!(p.dir, "/");
        assert!(p.env.contains(&"PATH=/x".to_string()), "{:?}", p.env);
        assert!(p.env.contains(&"FOO=bar".to_string()));
        assert!(p.env.contains(&"EMPTY=".to_string()));
        assert!(p.env.contains(&"HOSTNAME=h1".to_string()));
        assert!(p.env.iter().any(|e| e.starts_with("HOME=")));
        assert_eq!(p.env.len(), 5);
        spec.dir = Some("/definitely/not/here".into());
        assert!(matches!(plan(&spec), Err(RuntimeError::InvalidSpec(_))));
        spec.dir = Some("relative".into());
        assert!(matches!(plan(&spec), Err(RuntimeError::InvalidSpec(_))));
    }

    #[test]
    fn builtin_images_run_the_shoal_testimage_workload() {
        let shoal = Path::new("/opt/shoal/bin/shoal");
        let spec = |image: &str, command: &[&str], uses_image_entrypoint: bool| RunSpec {
            image: image.into(),
            uses_image_entrypoint,
            ..RunSpec::new("t1", command.iter().map(|s| s.to_string()).collect())
        };
        let argv = |s: &RunSpec| exec_plan(s, shoal).map(|p| p.argv);
        // No command, no args: the image's default command.
        for image in [
            "shoal/testimage",
            "friendlyhello",
            "john/friendlyhello:part2",
        ] {
            assert_eq!(
                argv(&spec(image, &[], true)).expect("plan"),
                vec!["/opt/shoal/bin/shoal", "testimage", "hello"],
                "{image}"
            );
        }
        // Args only: arguments of the entrypoint.
        assert_eq!(
            argv(&spec(
                "docker.io/shoal/testimage:latest",
                &["echo", "--udp"],
                true
            ))
            .expect("plan"),
            vec!["/opt/shoal/bin/shoal", "testimage", "echo", "--udp"]
        );
        // A command (here with args after it) replaces the entrypoint, as in Docker.
        assert_eq!(
            argv(&spec("shoal/testimage", &["sh", "-c", "true"], false)).expect("plan"),
            vec!["sh", "-c", "true"]
        );
        // Other images run their args as the command; with nothing to run, Docker's error.
        assert_eq!(
            argv(&spec("busybox", &["sleep", "1"], true)).expect("plan"),
            vec!["sleep", "1"]
        );
        let err = argv(&spec("busybox", &[], true)).expect_err("nothing to run");
        assert!(err.to_string().contains("no command specified"), "{err}");
        // The environment and directory are planned as for any task.
        let p = exec_plan(&spec("friendlyhello", &[], true), shoal).expect("plan");
        assert_eq!(p.dir, "/");
        assert!(p.env.iter().any(|e| e.starts_with("PATH=")), "{:?}", p.env);
    }

    #[test]
    fn users_resolve() {
        assert_eq!(resolve_user("0").map(|(u, g, _)| (u, g)), Ok((0, 0)));
        assert_eq!(resolve_user("root:0").map(|(u, g, _)| (u, g)), Ok((0, 0)));
        assert_eq!(resolve_user("54321:777"), Ok((54321, 777, "/".into())));
        let err = resolve_user("no-such-user-shoal").unwrap_err();
        assert!(
            err.contains("unable to find user no-such-user-shoal"),
            "{err}"
        );
        let err = resolve_user("root:no-such-group-shoal").unwrap_err();
        assert!(err.contains("unable to find group"), "{err}");
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.json");
        write_atomic(&p, b"1").expect("write");
        write_atomic(&p, b"2").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"2");
        assert!(!dir.path().join("f.json.tmp").exists());
    }
}
