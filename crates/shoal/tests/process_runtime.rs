//! The `process` runtime with the real `shoal shim`: the runtime conformance suite, adoption
//! of running tasks by a new runtime after the old one is gone (a daemon `kill -9`), user /
//! working directory / environment, signals, output edge cases, and that no task process
//! outlives its task.
//!
//! Every test keeps its state in a temporary directory owned by a [`Harness`], whose `Drop`
//! kills whatever task processes and shims are recorded there, so a failing test does not
//! leave processes behind.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use shoal_agent::conformance::{run_conformance, sh_spec};
use shoal_agent::process::{kill_all_blocking, ProcessRuntime, ShimCommand};
use shoal_agent::runtime::{
    ExitStatus, LogOptions, LogStream, Recovered, RunSpec, Runtime, RuntimeError,
};

const T: Duration = Duration::from_secs(20);

/// A state root that kills its task processes when dropped (also on panic).
struct Harness {
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        Harness {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A runtime on this state root; several of them stand for successive daemons.
    fn runtime(&self) -> ProcessRuntime {
        ProcessRuntime::new(self.root(), shim())
    }

    fn task_file(&self, task_id: &str, name: &str) -> PathBuf {
        self.dir.path().join("tasks").join(task_id).join(name)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        kill_all_blocking(self.dir.path());
    }
}

fn shim() -> ShimCommand {
    ShimCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_shoal")),
        args: vec!["shim".to_string()],
    }
}

async fn timed<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(T, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {T:?}"))
}

async fn launch(rt: &ProcessRuntime, spec: &RunSpec) {
    timed("prepare", rt.prepare(spec)).await.expect("prepare");
    timed("start", rt.start(&spec.task_id))
        .await
        .expect("start");
}

async fn lines(rt: &ProcessRuntime, id: &str, opts: LogOptions) -> Vec<String> {
    let stream = rt.logs(id, opts).await.expect("logs");
    timed("logs", stream.collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l.line).into_owned())
        .collect()
}

/// The first `n` lines of a task's output, following until they are there.
async fn first_lines(rt: &ProcessRuntime, id: &str, n: usize) -> Vec<String> {
    let opts = LogOptions {
        follow: true,
        ..Default::default()
    };
    let stream = rt.logs(id, opts).await.expect("logs");
    timed("first lines", stream.take(n).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l.line).into_owned())
        .collect()
}

/// Whether a pid names a live (non-zombie) process.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

async fn eventually_dead(pid: i32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn pid_file(h: &Harness, id: &str) -> serde_json::Value {
    let bytes = std::fs::read(h.task_file(id, "pid")).expect("pid file");
    serde_json::from_slice(&bytes).expect("pid file is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_passes_conformance() {
    let h = Harness::new();
    let root = h.root();
    run_conformance(|| ProcessRuntime::new(root.clone(), shim())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_adopts_running_tasks() {
    let h = Harness::new();
    let go = h.root().join("go");
    let script = format!(
        "echo before; while [ ! -e '{}' ]; do sleep 0.05; done; echo after; exit 7",
        go.display()
    );
    let spec = sh_spec("adopted", &script);
    {
        let rt = h.runtime();
        launch(&rt, &spec).await;
        assert_eq!(first_lines(&rt, "adopted", 1).await, ["before"]);
        // The daemon "dies": the runtime and everything it held are dropped.
    }

    // The shim left the daemon's session, so signals to the daemon's group miss it.
    let pids = pid_file(&h, "adopted");
    let shim_pid = pids["shim_pid"].as_i64().expect("shim_pid") as i32;
    let task_pid = pids["pid"].as_i64().expect("pid") as i32;
    let shim_sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(shim_pid))).expect("sid");
    let my_sid = nix::unistd::getsid(None).expect("own sid");
    assert_ne!(shim_sid, my_sid, "the shim must run in its own session");
    assert!(alive(task_pid));

    let rt = h.runtime();
    let rec = timed("recover", rt.recover()).await.expect("recover");
    assert_eq!(rec, vec![("adopted".to_string(), Recovered::Running)]);

    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let stream = rt.logs("adopted", follow).await.expect("logs");
    let reader = tokio::spawn(stream.collect::<Vec<_>>());
    let waiter = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.wait("adopted").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "wait returned while the task still runs"
    );
    std::fs::write(&go, b"").expect("touch");

    let st = timed("wait", waiter).await.expect("join").expect("wait");
    assert_eq!(st, ExitStatus::code(7));
    let got: Vec<String> = timed("follow", reader)
        .await
        .expect("join")
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l.line).into_owned())
        .collect();
    assert_eq!(got, ["before", "after"], "logs continue across the restart");
    assert!(
        eventually_dead(shim_pid).await,
        "the shim exits after its task"
    );

    // A third "daemon" finds the exit recorded.
    let rec = h.runtime().recover().await.expect("recover");
    assert_eq!(
        rec,
        vec![(
            "adopted".to_string(),
            Recovered::Exited(ExitStatus::code(7))
        )]
    );
    rt.remove("adopted").await.expect("remove");
    assert!(
        !h.task_file("adopted", "").exists(),
        "remove deletes the state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_dir_and_env_are_applied() {
    let h = Harness::new();
    let rt = h.runtime();
    // A variable of the test process the task must not inherit.
    let leaked = [
        "CARGO_MANIFEST_DIR",
        "CARGO",
        "CARGO_PKG_NAME",
        "RUST_TEST_THREADS",
    ]
    .into_iter()
    .find(|v| std::env::var_os(v).is_some())
    .unwrap_or("SHOAL_NOT_SET_ANYWHERE");
    let script = format!("pwd; id -u; id -g; echo $FOO; echo $HOME; echo ${{{leaked}:-unset}}; echo $PATH; echo $HOSTNAME");
    let mut spec = sh_spec("who", &script);
    spec.dir = Some("/tmp".to_string());
    spec.env = vec!["FOO=bar baz".to_string()];
    spec.user = Some("nobody".to_string());
    spec.hostname = Some("web-1".to_string());

    if !nix::unistd::geteuid().is_root() {
        let err = rt.prepare(&spec).await.expect_err("a user needs root");
        assert!(matches!(err, RuntimeError::InvalidSpec(_)), "{err}");
        assert!(err.to_string().contains("needs root"), "{err}");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd lookup")
        .expect("a nobody user");
    launch(&rt, &spec).await;
    assert_eq!(rt.wait("who").await.expect("wait"), ExitStatus::code(0));
    let got = lines(&rt, "who", LogOptions::default()).await;
    assert_eq!(
        got,
        [
            "/tmp".to_string(),
            nobody.uid.to_string(),
            nobody.gid.to_string(),
            "bar baz".to_string(),
            nobody.dir.display().to_string(),
            "unset".to_string(),
            shoal_agent::process::DEFAULT_PATH.to_string(),
            "web-1".to_string(),
        ]
    );

    // Numeric uid:gid that have no passwd entry.
    let mut spec = sh_spec("numeric", "id -u; id -g; echo $HOME");
    spec.user = Some("54321:54322".to_string());
    launch(&rt, &spec).await;
    assert_eq!(rt.wait("numeric").await.expect("wait"), ExitStatus::code(0));
    assert_eq!(
        lines(&rt, "numeric", LogOptions::default()).await,
        ["54321", "54322", "/"]
    );

    let mut spec = sh_spec("nouser", "true");
    spec.user = Some("no-such-user-here".to_string());
    let err = rt.prepare(&spec).await.expect_err("unknown user");
    assert!(
        err.to_string()
            .contains("unable to find user no-such-user-here"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_and_failed_starts() {
    let h = Harness::new();
    let rt = h.runtime();

    let mut spec = sh_spec("nodir", "pwd");
    spec.dir = Some("/no/such/dir/anywhere".to_string());
    let err = rt.prepare(&spec).await.expect_err("missing dir");
    assert!(matches!(err, RuntimeError::InvalidSpec(_)), "{err}");
    assert!(err.to_string().contains("/no/such/dir/anywhere"), "{err}");

    let spec = RunSpec::new("noexec", vec!["no-such-program-shoal".to_string()]);
    rt.prepare(&spec).await.expect("prepare");
    let err = rt.start("noexec").await.expect_err("start fails");
    assert!(matches!(err, RuntimeError::Start(_)), "{err}");
    assert!(
        err.to_string()
            .contains("exec: \"no-such-program-shoal\": executable file not found in $PATH"),
        "{err}"
    );
    // A failed start leaves the task prepared, not half-started.
    let rec = rt.recover().await.expect("recover");
    assert_eq!(rec, vec![("noexec".to_string(), Recovered::Created)]);
    assert!(rt.start("noexec").await.is_err());

    let spec = RunSpec::new("nopath", vec!["/no/such/program".to_string()]);
    rt.prepare(&spec).await.expect("prepare");
    let err = rt.start("nopath").await.expect_err("start fails");
    assert!(
        err.to_string().contains("no such file or directory"),
        "{err}"
    );

    // A shim that cannot run at all is a start error too.
    let broken = ProcessRuntime::new(
        h.root(),
        ShimCommand {
            program: PathBuf::from("/no/such/shoal"),
            args: vec!["shim".into()],
        },
    );
    broken
        .prepare(&sh_spec("noshim", "true"))
        .await
        .expect("prepare");
    let err = broken.start("noshim").await.expect_err("no shim");
    assert!(matches!(err, RuntimeError::Start(_)), "{err}");

    for id in ["noexec", "nopath", "noshim"] {
        rt.remove(id).await.expect("remove");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_by_signal_reports_the_signal() {
    let h = Harness::new();
    let rt = h.runtime();
    launch(&rt, &sh_spec("term", "kill -TERM $$")).await;
    let st = timed("wait", rt.wait("term")).await.expect("wait");
    assert_eq!(st, ExitStatus::signaled(15));
    assert_eq!(st.exit_code(), Some(143));
    assert_eq!(st.describe(), "task: non-zero exit (143)");
    assert_eq!(st.to_string(), "killed by signal 15 (SIGTERM)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_process_outlives_its_task() {
    let h = Harness::new();
    let rt = h.runtime();

    // Background children are killed when the main process exits.
    launch(&rt, &sh_spec("bg", "sleep 1000 & echo $!; exit 0")).await;
    assert_eq!(
        timed("wait", rt.wait("bg")).await.expect("wait"),
        ExitStatus::code(0)
    );
    let bg: i32 = lines(&rt, "bg", LogOptions::default()).await[0]
        .parse()
        .expect("a pid");
    assert!(
        eventually_dead(bg).await,
        "background child {bg} survived its task"
    );

    // Stop signals the whole process group.
    launch(&rt, &sh_spec("group", "sleep 1000 & echo $!; sleep 1000")).await;
    let bg: i32 = first_lines(&rt, "group", 1).await[0]
        .parse()
        .expect("a pid");
    assert!(alive(bg));
    timed("stop", rt.stop("group", None, Duration::from_secs(5)))
        .await
        .expect("stop");
    assert!(eventually_dead(bg).await, "stop left {bg} running");

    // Remove kills a running task and its shim.
    launch(&rt, &sh_spec("rm", "echo $$; sleep 1000")).await;
    let pid: i32 = first_lines(&rt, "rm", 1).await[0].parse().expect("a pid");
    let shim_pid = pid_file(&h, "rm")["shim_pid"].as_i64().expect("shim pid") as i32;
    timed("remove", rt.remove("rm")).await.expect("remove");
    assert!(eventually_dead(pid).await, "remove left the task running");
    assert!(
        eventually_dead(shim_pid).await,
        "remove left the shim running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_are_verified_by_start_time() {
    let h = Harness::new();
    let rt = h.runtime();
    launch(&rt, &sh_spec("reuse", "echo $$; sleep 1000")).await;
    let pid: i32 = first_lines(&rt, "reuse", 1).await[0]
        .parse()
        .expect("a pid");
    let path = h.task_file("reuse", "pid");
    let original = std::fs::read(&path).expect("pid file");

    // Pretend both recorded processes are other processes that happen to have these pids.
    let mut forged = pid_file(&h, "reuse");
    for key in ["start_time", "shim_start_time"] {
        let v = forged[key].as_u64().expect("start time");
        forged[key] = serde_json::json!(v + 1);
    }
    std::fs::write(&path, serde_json::to_vec(&forged).expect("json")).expect("write");
    let rec = rt.recover().await.expect("recover");
    assert_eq!(rec, vec![("reuse".to_string(), Recovered::Gone)]);
    timed("stop", rt.stop("reuse", Some("KILL"), Duration::ZERO))
        .await
        .expect("stop");
    assert!(
        alive(pid),
        "stop signalled a pid whose start time does not match"
    );

    std::fs::write(&path, original).expect("restore");
    assert_eq!(
        rt.recover().await.expect("recover"),
        vec![("reuse".to_string(), Recovered::Running)]
    );
    timed("stop", rt.stop("reuse", Some("KILL"), Duration::ZERO))
        .await
        .expect("stop");
    assert_eq!(
        rt.wait("reuse").await.expect("wait"),
        ExitStatus::signaled(9)
    );
    rt.remove("reuse").await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_shim_dies_is_reported_lost() {
    let h = Harness::new();
    let rt = h.runtime();
    launch(&rt, &sh_spec("lost", "echo $$; sleep 1000")).await;
    let pid: i32 = first_lines(&rt, "lost", 1).await[0].parse().expect("a pid");
    let shim_pid = pid_file(&h, "lost")["shim_pid"].as_i64().expect("shim pid") as i32;
    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let reader = tokio::spawn(
        rt.logs("lost", follow)
            .await
            .expect("logs")
            .collect::<Vec<_>>(),
    );

    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    kill(Pid::from_raw(shim_pid), Signal::SIGKILL).expect("kill the shim");
    killpg(Pid::from_raw(pid), Signal::SIGKILL).expect("kill the task");
    assert!(eventually_dead(shim_pid).await && eventually_dead(pid).await);

    let err = timed("wait", rt.wait("lost"))
        .await
        .expect_err("no exit status");
    assert!(matches!(err, RuntimeError::Lost(_)), "{err}");
    assert_eq!(
        rt.recover().await.expect("recover"),
        vec![("lost".to_string(), Recovered::Gone)]
    );
    let got = timed("follow", reader).await.expect("join");
    assert_eq!(got.len(), 1, "follow ends once the task is known lost");
    timed("stop", rt.stop("lost", None, Duration::from_secs(1)))
        .await
        .expect("stop");
    rt.remove("lost").await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_edge_cases() {
    let h = Harness::new();
    let rt = h.runtime();

    // Bytes that are not UTF-8, a last line without a newline, an empty line.
    launch(&rt, &sh_spec("bytes", r"printf '\377\376\n\nno newline'")).await;
    assert_eq!(rt.wait("bytes").await.expect("wait"), ExitStatus::code(0));
    let stream = rt.logs("bytes", LogOptions::default()).await.expect("logs");
    let got: Vec<(LogStream, Vec<u8>)> = timed("logs", stream.collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|l| (l.stream, l.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (LogStream::Stdout, vec![0xff, 0xfe]),
            (LogStream::Stdout, vec![]),
            (LogStream::Stdout, b"no newline".to_vec()),
        ]
    );

    // Many lines arrive complete and in order; very long lines are split at 16 KiB.
    launch(
        &rt,
        &sh_spec(
            "volume",
            "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; \
             head -c 40000 /dev/zero | tr '\\0' a; echo",
        ),
    )
    .await;
    assert_eq!(
        timed("wait", rt.wait("volume")).await.expect("wait"),
        ExitStatus::code(0)
    );
    let got = lines(&rt, "volume", LogOptions::default()).await;
    assert_eq!(
        got.len(),
        3003,
        "3000 short lines and 3 pieces of a long one"
    );
    assert!(got[..3000]
        .iter()
        .enumerate()
        .all(|(i, l)| *l == format!("line{i}")));
    let long: Vec<usize> = got[3000..].iter().map(String::len).collect();
    assert_eq!(long, [16384, 16384, 40000 - 2 * 16384]);
    let tail = LogOptions {
        tail: Some(4),
        ..Default::default()
    };
    assert_eq!(lines(&rt, "volume", tail).await[0], "line2999");
}

#[test]
fn shim_refuses_bad_usage() {
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("shim")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run shoal shim");
    assert_eq!(st.code(), Some(2));
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["shim", "--task-dir", "/no/such/task/dir"])
        .output()
        .expect("run shoal shim");
    assert_eq!(st.status.code(), Some(1));
    let out = String::from_utf8_lossy(&st.stdout);
    assert!(out.starts_with("error "), "{out}");
}
