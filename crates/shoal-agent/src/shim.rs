//! The per-task shim of the `process` runtime (`shoal shim --task-dir DIR`), like containerd's
//! shim: a small supervisor that owns one task process so the daemon does not have to.
//!
//! ```text
//!   setsid ─> read DIR/spec.json ─> spawn command (own process group, stdin /dev/null,
//!   stdout+stderr piped) ─> write DIR/pid ─> print "ok PID" (or "error MSG" and exit 1)
//!      │
//!      ├─ thread: stdout lines ─┐
//!      ├─ thread: stderr lines ─┴─> DIR/log.jsonl
//!      └─ wait for the child ─> SIGKILL what is left of its group ─> drain the pipes
//!                             ─> write DIR/exit.json (tmp + rename) ─> exit 0
//! ```
//!
//! The shim is synchronous (threads, no async runtime) and forwards no signals: the runtime
//! signals the task's process group directly. It leaves the daemon's session, so a killed
//! daemon leaves it running; the next daemon finds the task through the files in DIR (layout
//! in [`crate::process`]). Its own diagnostics go to its stderr, which the runtime points at
//! `DIR/shim.log`.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::logs::{LineSplitter, LogWriter, MAX_LINE};
use crate::process::{
    proc_stat, write_atomic, ExecPlan, PidFile, TaskFile, EXIT_FILE, LOG_FILE, PID_FILE, SPEC_FILE,
};
use crate::runtime::{ExitStatus, LogStream};

/// How long the shim drains the output pipes after the task's process group is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Entry point of `shoal shim`; `args` are the arguments after `shim`. Returns the exit code:
/// 0 once the task ran and its exit was recorded, 1 if it could not be started, 2 on bad usage.
pub fn shim_main(args: Vec<OsString>) -> i32 {
    let dir = match parse_args(&args) {
        Ok(d) => d,
        Err(msg) => {
            eprintln!("shoal shim: {msg}");
            eprintln!("usage: shoal shim --task-dir DIR");
            return 2;
        }
    };
    let mut reporter = Reporter { reported: false };
    match run(&dir, &mut reporter) {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("shoal shim ({}): {msg}", dir.display());
            if !reporter.reported {
                reporter.error(&msg);
            }
            1
        }
    }
}

fn parse_args(args: &[OsString]) -> Result<PathBuf, String> {
    let mut dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--task-dir" {
            let v = it.next().ok_or("--task-dir needs a value")?;
            dir = Some(PathBuf::from(v));
        } else if let Some(v) = s.strip_prefix("--task-dir=") {
            dir = Some(PathBuf::from(v));
        } else {
            return Err(format!("unexpected argument {s:?}"));
        }
    }
    dir.ok_or_else(|| "missing --task-dir".to_string())
}

/// Tells the runtime, once, on stdout whether the task started.
struct Reporter {
    reported: bool,
}

impl Reporter {
    fn send(&mut self, line: &str) {
        self.reported = true;
        let mut out = std::io::stdout().lock();
        // The daemon may be gone already; the task runs on regardless.
        let _ = out.write_all(line.as_bytes()).and_then(|_| out.flush());
    }

    fn ok(&mut self, pid: i32) {
        self.send(&format!("ok {pid}\n"));
        // Nothing else is written to stdout; point it away from the daemon's pipe.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stdout(&null);
        }
    }

    fn error(&mut self, msg: &str) {
        self.send(&format!("error {}\n", msg.replace('\n', " ")));
    }
}

fn run(dir: &Path, reporter: &mut Reporter) -> Result<(), String> {
    // Leave the daemon's session and process group: signals aimed at the daemon (a terminal's
    // Ctrl-C, a service manager's stop) do not reach the shim.
    let _ = nix::unistd::setsid();
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("task dir {}: {e}", dir.display()))?;
    let _ = std::env::set_current_dir("/");

    let spec_path = dir.join(SPEC_FILE);
    let bytes =
        std::fs::read(&spec_path).map_err(|e| format!("reading {}: {e}", spec_path.display()))?;
    let task: TaskFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("parsing {}: {e}", spec_path.display()))?;
    let plan = task.exec;
    // Secrets and configs: a mount namespace of the shim's own, inherited by the task.
    crate::files::enter_private_mounts(&task.mounts)?;
    // Its own network (made by the data plane) and hostname.
    if let Some(ns) = task.spec.netns.as_deref() {
        enter_network(ns, task.spec.hostname.as_deref())?;
    }
    let (program, args) = plan
        .argv
        .split_first()
        .ok_or_else(|| "no command specified".to_string())?;

    let log_path = dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let writer = LogWriter::new(log);

    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(plan.env.iter().filter_map(|e| e.split_once('=')))
        .current_dir(&plan.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(gid) = plan.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = plan.uid {
        cmd.uid(uid);
    }
    let mut child = cmd.spawn().map_err(|e| exec_error(program, &plan, e))?;
    let pid = child.id() as i32;

    // The child is not reaped yet, so its /proc entry exists even if it already exited.
    let recorded = (|| {
        let start_time = proc_stat(pid)
            .ok_or_else(|| format!("reading /proc/{pid}/stat of the task"))?
            .start_time;
        let me = std::process::id() as i32;
        let shim_start_time = proc_stat(me)
            .ok_or_else(|| format!("reading /proc/{me}/stat of the shim"))?
            .start_time;
        let pids = PidFile {
            pid,
            start_time,
            shim_pid: me,
            shim_start_time,
        };
        let bytes = serde_json::to_vec(&pids).map_err(|e| format!("encoding the pid file: {e}"))?;
        let path = dir.join(PID_FILE);
        write_atomic(&path, &bytes).map_err(|e| format!("writing {}: {e}", path.display()))
    })();
    if let Err(e) = recorded {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    reporter.ok(pid);

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut pumps = 0;
    if let Some(out) = child.stdout.take() {
        spawn_pump(out, LogStream::Stdout, writer.clone(), done_tx.clone());
        pumps += 1;
    }
    if let Some(err) = child.stderr.take() {
        spawn_pump(err, LogStream::Stderr, writer.clone(), done_tx.clone());
        pumps += 1;
    }
    drop(done_tx);

    let status = child
        .wait()
        .map_err(|e| format!("waiting for the task (pid {pid}): {e}"))?;
    // The task ends with its main process: whatever it left behind in its group goes too.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for _ in 0..pumps {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            eprintln!(
                "shoal shim: output pipes still open {}s after the task exited (a process left \
                 its group?); not waiting longer",
                DRAIN_TIMEOUT.as_secs()
            );
            break;
        }
    }

    let exit = ExitStatus {
        code: status.code(),
        signal: status.signal(),
    };
    let bytes = serde_json::to_vec(&exit).map_err(|e| format!("encoding the exit status: {e}"))?;
    let path = dir.join(EXIT_FILE);
    write_atomic(&path, &bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}

/// Copies lines from a pipe into the log until the pipe closes.
/// Moves the shim (and so the task it spawns) into the network namespace at `netns` and a
/// UTS namespace of its own named `hostname`.
fn enter_network(netns: &str, hostname: Option<&str>) -> Result<(), String> {
    use nix::sched::CloneFlags;
    let f = std::fs::File::open(netns)
        .map_err(|e| format!("opening the task's network namespace {netns}: {e}"))?;
    nix::sched::setns(&f, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("joining the task's network namespace {netns}: {e}"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWUTS)
        .map_err(|e| format!("creating the task's UTS namespace: {e}"))?;
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).map_err(|e| format!("setting the hostname {h:?}: {e}"))?;
    }
    Ok(())
}

fn spawn_pump<R: std::io::Read + Send + 'static>(
    pipe: R,
    stream: LogStream,
    writer: LogWriter,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut lines = LineSplitter::new(pipe, MAX_LINE);
        let mut complained = false;
        loop {
            match lines.next_line() {
                Ok(Some(line)) => {
                    // Keep draining on write errors so the task never blocks on a full pipe.
                    if let Err(e) = writer.append(stream, line) {
                        if !complained {
                            eprintln!("shoal shim: writing the task log: {e}");
                            complained = true;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("shoal shim: reading the task's {stream:?}: {e}");
                    break;
                }
            }
        }
        let _ = done.send(());
    });
}

/// Words a failed exec like Docker does.
fn exec_error(program: &str, plan: &ExecPlan, e: std::io::Error) -> String {
    if !Path::new(&plan.dir).is_dir() {
        return format!("working directory {} does not exist", plan.dir);
    }
    match e.kind() {
        std::io::ErrorKind::NotFound if program.contains('/') => {
            format!("exec: {program:?}: no such file or directory")
        }
        std::io::ErrorKind::NotFound => {
            format!("exec: {program:?}: executable file not found in $PATH")
        }
        std::io::ErrorKind::PermissionDenied => format!("exec: {program:?}: permission denied"),
        _ => format!("exec: {program:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            parse_args(&a(&["--task-dir", "/x"])),
            Ok(PathBuf::from("/x"))
        );
        assert_eq!(parse_args(&a(&["--task-dir=/y"])), Ok(PathBuf::from("/y")));
        assert!(parse_args(&a(&[])).is_err());
        assert!(parse_args(&a(&["--task-dir"])).is_err());
        assert!(parse_args(&a(&["--bogus"])).is_err());
        assert_eq!(shim_main(a(&["--nope"])), 2);
    }
}
