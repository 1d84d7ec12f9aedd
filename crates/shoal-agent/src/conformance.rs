//! The contract of [`Runtime`], as a test suite every implementation runs.
//!
//! ```text
//!   run_conformance(make)            each check gets a fresh runtime from `make` and its own
//!     ├─ validation                  task ids, runs under a timeout, and removes its tasks;
//!     ├─ exit codes                  a failed check panics with what was expected.
//!     ├─ stop (signal, grace, SIGKILL)
//!     ├─ logs (order, streams, tail, since, follow)
//!     ├─ remove
//!     └─ recover
//! ```
//!
//! Workloads are `sh -c` scripts limited to the subset the mock understands
//! (see [`crate::mock`]): `echo`, `echo >&2`, `sleep`, `exit`, `kill -SIG $$`, `trap '' SIG`.
//! Runtimes that start real processes should run the suite on a state directory that a test
//! guard cleans up (e.g. [`crate::process::kill_all_blocking`]) in case a check fails midway.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::runtime::{
    ExitStatus, LogLine, LogOptions, LogStream, Recovered, RunSpec, Runtime, RuntimeError,
};

/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a single wait or log read may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs every check against runtimes made by `make`. Panics on the first violation.
pub async fn run_conformance<R: Runtime, F: Fn() -> R>(make: F) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let p = format!("conf-{}-{nanos}", std::process::id());
    check("validation", validation(make(), &p)).await;
    check("exit codes", exit_codes(make(), &p)).await;
    check("stop", stop(make(), &p)).await;
    check("logs", logs(make(), &p)).await;
    check("follow", follow(make(), &p)).await;
    check("remove", remove(make(), &p)).await;
    check("recover", recover(make(), &p)).await;
}

async fn check(name: &str, fut: impl Future<Output = ()>) {
    tracing::info!(check = name, "runtime conformance");
    if tokio::time::timeout(CHECK_TIMEOUT, fut).await.is_err() {
        panic!(
            "runtime conformance: check {name:?} did not finish within {}s",
            CHECK_TIMEOUT.as_secs()
        );
    }
}

/// A spec running `sh -c script`.
pub fn sh_spec(task_id: &str, script: &str) -> RunSpec {
    let mut spec = RunSpec::new(
        task_id,
        vec!["sh".to_string(), "-c".to_string(), script.to_string()],
    );
    spec.image = "conformance".to_string();
    spec
}

async fn must<T>(what: &str, fut: impl Future<Output = Result<T, RuntimeError>>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("runtime conformance: {what}: unexpected error: {e}"),
        Err(_) => panic!(
            "runtime conformance: {what}: no answer within {}s",
            STEP_TIMEOUT.as_secs()
        ),
    }
}

async fn launch<R: Runtime>(rt: &R, spec: &RunSpec) {
    must(&format!("prepare {}", spec.task_id), rt.prepare(spec)).await;
    must(&format!("start {}", spec.task_id), rt.start(&spec.task_id)).await;
}

async fn run_to_exit<R: Runtime>(rt: &R, spec: &RunSpec) -> ExitStatus {
    launch(rt, spec).await;
    must(&format!("wait {}", spec.task_id), rt.wait(&spec.task_id)).await
}

async fn read_logs<R: Runtime>(rt: &R, id: &str, opts: LogOptions) -> Vec<LogLine> {
    let stream = must(&format!("logs {id}"), rt.logs(id, opts.clone())).await;
    match tokio::time::timeout(STEP_TIMEOUT, stream.collect::<Vec<_>>()).await {
        Ok(lines) => lines,
        Err(_) => panic!(
            "runtime conformance: logs {id} {opts:?}: the stream did not end within {}s",
            STEP_TIMEOUT.as_secs()
        ),
    }
}

fn texts(lines: &[LogLine]) -> Vec<(LogStream, String)> {
    lines
        .iter()
        .map(|l| (l.stream, String::from_utf8_lossy(&l.line).into_owned()))
        .collect()
}

fn out(s: &str) -> (LogStream, String) {
    (LogStream::Stdout, s.to_string())
}

fn err(s: &str) -> (LogStream, String) {
    (LogStream::Stderr, s.to_string())
}

/// Waits until the task has printed `ready` (so its signal setup is done).
async fn await_ready<R: Runtime>(rt: &R, id: &str) {
    let opts = LogOptions {
        follow: true,
        ..Default::default()
    };
    let mut stream = must(&format!("logs {id}"), rt.logs(id, opts)).await;
    let found = tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(l) = stream.next().await {
            if l.line == b"ready" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "runtime conformance: task {id} never printed `ready`"
    );
}

fn expect_not_found<T>(what: &str, r: Result<T, RuntimeError>) {
    match r {
        Err(RuntimeError::NotFound(_)) => {}
        Err(e) => panic!("runtime conformance: {what}: expected NotFound, got {e}"),
        Ok(_) => panic!("runtime conformance: {what}: expected NotFound, got Ok"),
    }
}

async fn validation<R: Runtime>(rt: R, p: &str) {
    assert!(
        !rt.capabilities().name.is_empty(),
        "capabilities need a name"
    );

    let empty = RunSpec::new(format!("{p}-empty"), vec![]);
    match rt.prepare(&empty).await {
        Err(RuntimeError::InvalidSpec(m)) => assert!(
            m.contains("no command specified"),
            "empty command: message should say `no command specified`, got {m:?}"
        ),
        other => panic!("prepare with an empty command: expected InvalidSpec, got {other:?}"),
    }
    for bad in ["a/b", "../escape", ""] {
        let spec = sh_spec(bad, "exit 0");
        assert!(
            matches!(rt.prepare(&spec).await, Err(RuntimeError::InvalidSpec(_))),
            "prepare with task id {bad:?}: expected InvalidSpec"
        );
    }

    let unknown = format!("{p}-unknown");
    expect_not_found("start of an unknown task", rt.start(&unknown).await);
    expect_not_found("wait of an unknown task", rt.wait(&unknown).await);
    expect_not_found(
        "logs of an unknown task",
        rt.logs(&unknown, LogOptions::default()).await,
    );
    must(
        "stop of an unknown task",
        rt.stop(&unknown, None, Duration::from_secs(1)),
    )
    .await;
    must("remove of an unknown task", rt.remove(&unknown)).await;

    let twice = sh_spec(&format!("{p}-twice"), "exit 0");
    must("prepare", rt.prepare(&twice)).await;
    must("prepare again (idempotent)", rt.prepare(&twice)).await;
    must(
        "stop of a prepared, never started task",
        rt.stop(&twice.task_id, None, Duration::from_secs(1)),
    )
    .await;
    let no_logs = read_logs(&rt, &twice.task_id, LogOptions::default()).await;
    assert!(no_logs.is_empty(), "a never started task has no logs");
    must("remove", rt.remove(&twice.task_id)).await;
}

async fn exit_codes<R: Runtime>(rt: R, p: &str) {
    let zero = sh_spec(&format!("{p}-exit0"), "exit 0");
    let st = run_to_exit(&rt, &zero).await;
    assert_eq!(st, ExitStatus::code(0), "`exit 0`");
    assert!(st.success());
    assert_eq!(st.describe(), "finished");
    assert_eq!(
        must("wait again", rt.wait(&zero.task_id)).await,
        st,
        "a second wait on a finished task gives the same status"
    );
    assert!(
        rt.start(&zero.task_id).await.is_err(),
        "starting a task that already exited must fail (a task runs once)"
    );

    let three = sh_spec(&format!("{p}-exit3"), "exit 3");
    let st = run_to_exit(&rt, &three).await;
    assert_eq!(st, ExitStatus::code(3), "`exit 3`");
    assert_eq!(st.describe(), "task: non-zero exit (3)");

    let killed = sh_spec(&format!("{p}-kill"), "kill -KILL $$");
    let st = run_to_exit(&rt, &killed).await;
    assert_eq!(st, ExitStatus::signaled(9), "`kill -KILL $$`");
    assert_eq!(st.describe(), "task: non-zero exit (137)");

    for s in [&zero, &three, &killed] {
        must("remove", rt.remove(&s.task_id)).await;
    }
}

async fn stop<R: Runtime>(rt: R, p: &str) {
    // Default signal (SIGTERM) ends a plain long-running task well within its grace.
    let long = sh_spec(&format!("{p}-long"), "sleep 1000");
    launch(&rt, &long).await;
    let grace = Duration::from_secs(10);
    let t0 = Instant::now();
    must("stop", rt.stop(&long.task_id, None, grace)).await;
    let took = t0.elapsed();
    assert!(took < grace, "stop took {took:?}, the grace was {grace:?}");
    let st = must("wait after stop", rt.wait(&long.task_id)).await;
    assert_eq!(st, ExitStatus::signaled(15), "a task stopped with SIGTERM");
    must("stop again", rt.stop(&long.task_id, None, grace)).await;

    // The spec's stop signal is the default.
    let mut hup = sh_spec(&format!("{p}-hup"), "sleep 1000");
    hup.stop_signal = Some("HUP".to_string());
    launch(&rt, &hup).await;
    must("stop", rt.stop(&hup.task_id, None, grace)).await;
    let st = must("wait after stop", rt.wait(&hup.task_id)).await;
    assert_eq!(
        st,
        ExitStatus::signaled(1),
        "stop uses the spec's stop signal (HUP)"
    );

    // An explicit signal wins.
    let explicit = sh_spec(&format!("{p}-explicit"), "sleep 1000");
    launch(&rt, &explicit).await;
    must("stop", rt.stop(&explicit.task_id, Some("SIGKILL"), grace)).await;
    let st = must("wait after stop", rt.wait(&explicit.task_id)).await;
    assert_eq!(st, ExitStatus::signaled(9), "stop with an explicit SIGKILL");

    // A task ignoring the signal is killed when the grace period is over.
    let stubborn = sh_spec(
        &format!("{p}-stubborn"),
        "trap '' TERM; echo ready; sleep 1000",
    );
    launch(&rt, &stubborn).await;
    await_ready(&rt, &stubborn.task_id).await;
    let grace = Duration::from_secs(1);
    let t0 = Instant::now();
    must("stop", rt.stop(&stubborn.task_id, Some("TERM"), grace)).await;
    let took = t0.elapsed();
    assert!(
        took >= grace.mul_f32(0.9),
        "a task ignoring SIGTERM was stopped after {took:?}, before its grace of {grace:?}"
    );
    assert!(
        took < grace + Duration::from_secs(10),
        "SIGKILL after the grace took too long: {took:?}"
    );
    let st = must("wait after stop", rt.wait(&stubborn.task_id)).await;
    assert_eq!(st, ExitStatus::signaled(9), "a task killed after its grace");

    // Stopping a finished task is fine and keeps its status.
    let done = sh_spec(&format!("{p}-done"), "exit 4");
    assert_eq!(run_to_exit(&rt, &done).await, ExitStatus::code(4));
    must(
        "stop of a finished task",
        rt.stop(&done.task_id, None, grace),
    )
    .await;
    assert_eq!(
        must("wait", rt.wait(&done.task_id)).await,
        ExitStatus::code(4),
        "stop must not change a finished task's status"
    );

    for s in [&long, &hup, &explicit, &stubborn, &done] {
        must("remove", rt.remove(&s.task_id)).await;
    }
}

async fn logs<R: Runtime>(rt: R, p: &str) {
    let spec = sh_spec(
        &format!("{p}-logs"),
        "echo out1; sleep 0.2; echo err1 >&2; sleep 0.2; echo out2",
    );
    assert_eq!(run_to_exit(&rt, &spec).await, ExitStatus::code(0));
    let id = &spec.task_id;

    let all = read_logs(&rt, id, LogOptions::default()).await;
    assert_eq!(
        texts(&all),
        vec![out("out1"), err("err1"), out("out2")],
        "lines in order with their streams"
    );
    assert!(
        all.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "timestamps must not go backwards: {all:?}"
    );

    let opts = LogOptions {
        tail: Some(2),
        ..Default::default()
    };
    assert_eq!(
        texts(&read_logs(&rt, id, opts).await),
        vec![err("err1"), out("out2")],
        "tail 2"
    );
    let opts = LogOptions {
        tail: Some(0),
        ..Default::default()
    };
    assert!(read_logs(&rt, id, opts).await.is_empty(), "tail 0");
    let opts = LogOptions {
        tail: Some(100),
        ..Default::default()
    };
    assert_eq!(
        read_logs(&rt, id, opts).await.len(),
        3,
        "tail larger than the log"
    );

    let opts = LogOptions {
        since: Some(all[1].timestamp),
        ..Default::default()
    };
    assert_eq!(
        texts(&read_logs(&rt, id, opts).await),
        vec![err("err1"), out("out2")],
        "since the second line's timestamp (inclusive)"
    );

    let opts = LogOptions {
        follow: true,
        ..Default::default()
    };
    assert_eq!(
        read_logs(&rt, id, opts).await.len(),
        3,
        "follow on a finished task gives everything and ends"
    );
    must("remove", rt.remove(id)).await;
}

async fn follow<R: Runtime>(rt: R, p: &str) {
    let spec = sh_spec(&format!("{p}-follow"), "echo a; sleep 0.5; echo b");
    launch(&rt, &spec).await;
    let opts = LogOptions {
        follow: true,
        ..Default::default()
    };
    let lines = read_logs(&rt, &spec.task_id, opts.clone()).await;
    assert_eq!(
        texts(&lines),
        vec![out("a"), out("b")],
        "follow gives the lines written while following and ends when the task exits"
    );
    assert_eq!(
        must("wait", rt.wait(&spec.task_id)).await,
        ExitStatus::code(0)
    );

    // Follow ends when the task is stopped.
    let long = sh_spec(&format!("{p}-follow-stop"), "echo ready; sleep 1000");
    launch(&rt, &long).await;
    await_ready(&rt, &long.task_id).await;
    let stream = must("logs", rt.logs(&long.task_id, opts)).await;
    let reader = tokio::spawn(stream.collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(200)).await;
    must(
        "stop",
        rt.stop(&long.task_id, None, Duration::from_secs(10)),
    )
    .await;
    match tokio::time::timeout(STEP_TIMEOUT, reader).await {
        Ok(Ok(lines)) => assert_eq!(texts(&lines), vec![out("ready")]),
        Ok(Err(e)) => panic!("log reader failed: {e}"),
        Err(_) => panic!("follow did not end after the task was stopped"),
    }

    for s in [&spec, &long] {
        must("remove", rt.remove(&s.task_id)).await;
    }
}

async fn remove<R: Runtime>(rt: R, p: &str) {
    let running = sh_spec(&format!("{p}-rm-running"), "echo x; sleep 1000");
    launch(&rt, &running).await;
    let finished = sh_spec(&format!("{p}-rm-finished"), "echo y");
    assert_eq!(run_to_exit(&rt, &finished).await, ExitStatus::code(0));

    for s in [&running, &finished] {
        let id = &s.task_id;
        must("remove", rt.remove(id)).await;
        expect_not_found("wait after remove", rt.wait(id).await);
        expect_not_found("start after remove", rt.start(id).await);
        expect_not_found(
            "logs after remove",
            rt.logs(id, LogOptions::default()).await,
        );
        must(
            "stop after remove",
            rt.stop(id, None, Duration::from_secs(1)),
        )
        .await;
        must("remove again", rt.remove(id)).await;
        let rec = must("recover", rt.recover()).await;
        assert!(
            !rec.iter().any(|(t, _)| t == id),
            "recover still lists removed task {id}: {rec:?}"
        );
    }

    // A waiter on a task that gets removed is released.
    let waited = sh_spec(&format!("{p}-rm-waited"), "sleep 1000");
    launch(&rt, &waited).await;
    let rt = std::sync::Arc::new(rt);
    let waiter = {
        let rt = rt.clone();
        let id = waited.task_id.clone();
        tokio::spawn(async move { rt.wait(&id).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    must("remove", rt.remove(&waited.task_id)).await;
    match tokio::time::timeout(STEP_TIMEOUT, waiter).await {
        Ok(Ok(Ok(_))) | Ok(Ok(Err(RuntimeError::NotFound(_)))) => {}
        Ok(Ok(Err(e))) => panic!("wait on a removed task: unexpected error {e}"),
        Ok(Err(e)) => panic!("waiter failed: {e}"),
        Err(_) => panic!("wait on a task did not return after the task was removed"),
    }
}

async fn recover<R: Runtime>(rt: R, p: &str) {
    let created = sh_spec(&format!("{p}-rec-created"), "exit 0");
    must("prepare", rt.prepare(&created)).await;
    let running = sh_spec(&format!("{p}-rec-running"), "sleep 1000");
    launch(&rt, &running).await;
    let exited = sh_spec(&format!("{p}-rec-exited"), "exit 5");
    assert_eq!(run_to_exit(&rt, &exited).await, ExitStatus::code(5));

    let rec = must("recover", rt.recover()).await;
    let find = |id: &str| rec.iter().find(|(t, _)| t == id).map(|(_, r)| *r);
    assert_eq!(find(&created.task_id), Some(Recovered::Created), "{rec:?}");
    assert_eq!(find(&running.task_id), Some(Recovered::Running), "{rec:?}");
    assert_eq!(
        find(&exited.task_id),
        Some(Recovered::Exited(ExitStatus::code(5))),
        "{rec:?}"
    );

    for s in [&created, &running, &exited] {
        must("remove", rt.remove(&s.task_id)).await;
    }
}
