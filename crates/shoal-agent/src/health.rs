//! Health checks of tasks (`ContainerSpec.Healthcheck`), run by the agent as Docker runs a
//! container's HEALTHCHECK.
//!
//! ```text
//!  test: ["CMD", argv...] | ["CMD-SHELL", "cmd"] (run with /bin/sh -c) | ["NONE"] / [] = no check
//!  every `interval` (`start_interval` while in the start period), bounded by `timeout`:
//!     probe exits 0 ──────────────► healthy (streak reset)
//!     non-zero / timeout / error ─► streak += 1, unless still within `start_period`
//!  starting ─(1 success)─► healthy ─(`retries` consecutive failures)─► unhealthy
//!  starting ─(`retries` consecutive failures after the start period)─► unhealthy
//! ```
//!
//! The worker reports a task with a health check `running` only once it is healthy, and stops
//! an unhealthy task, which then fails with swarmkit's `dockerexec: unhealthy container`.
//! [`HealthMachine`] is the pure state machine; [`monitor`] drives it on tokio's clock with any
//! prober, [`process_probe`] runs the test as a host process in the task's environment.

use std::future::Future;
use std::time::Duration;

use shoal_api::engine::HealthConfig;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::runtime::RunSpec;

/// Docker's default interval between probes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Docker's default probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Docker's default number of consecutive failures before unhealthy.
pub const DEFAULT_RETRIES: u32 = 3;
/// Docker's default interval between probes during the start period.
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);

/// The error swarmkit's container executor reports for an unhealthy container.
pub const UNHEALTHY: &str = "dockerexec: unhealthy container";

/// What the check runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthTest {
    /// `["CMD", argv...]`: run directly.
    Cmd(Vec<String>),
    /// `["CMD-SHELL", cmd]`: run with `/bin/sh -c`.
    Shell(String),
}

impl HealthTest {
    /// The argv to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            HealthTest::Cmd(a) => a.clone(),
            HealthTest::Shell(c) => vec!["/bin/sh".into(), "-c".into(), c.clone()],
        }
    }
}

/// A task's health check with Docker's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub test: HealthTest,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
    pub start_interval: Duration,
}

fn dur(ns: Option<i64>, default: Duration) -> Duration {
    match ns {
        Some(n) if n > 0 => Duration::from_nanos(n.unsigned_abs()),
        _ => default,
    }
}

impl HealthCheck {
    /// The check a spec defines; `None` for no check (absent, `[]`, `["NONE"]`, or a test
    /// without a command).
    pub fn from_spec(h: Option<&HealthConfig>) -> Option<HealthCheck> {
        let h = h?;
        let test = h.test.as_deref()?;
        let test = match test.split_first()? {
            (kind, rest) if kind == "CMD" && !rest.is_empty() && !rest[0].is_empty() => {
                HealthTest::Cmd(rest.to_vec())
            }
            (kind, rest) if kind == "CMD-SHELL" && !rest.is_empty() => {
                HealthTest::Shell(rest.join(" "))
            }
            _ => return None,
        };
        Some(HealthCheck {
            test,
            interval: dur(h.interval, DEFAULT_INTERVAL),
            timeout: dur(h.timeout, DEFAULT_TIMEOUT),
            retries: match h.retries {
                Some(r) if r > 0 => u32::try_from(r).unwrap_or(u32::MAX),
                _ => DEFAULT_RETRIES,
            },
            start_period: dur(h.start_period, Duration::ZERO),
            start_interval: dur(h.start_interval, DEFAULT_START_INTERVAL),
        })
    }
}

/// Health of a task, as Docker's `State.Health.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    /// Docker's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// The pure health state machine.
#[derive(Debug, Clone)]
pub struct HealthMachine {
    retries: u32,
    start_period: Duration,
    status: HealthStatus,
    failing_streak: u32,
    /// Whether the start period ended early (a probe succeeded).
    started: bool,
}

impl HealthMachine {
    pub fn new(check: &HealthCheck) -> Self {
        HealthMachine {
            retries: check.retries.max(1),
            start_period: check.start_period,
            status: HealthStatus::Starting,
            failing_streak: 0,
            started: false,
        }
    }

    pub fn status(&self) -> HealthStatus {
        self.status
    }

    pub fn failing_streak(&self) -> u32 {
        self.failing_streak
    }

    /// Whether the task is still in its start period `since_start` after it started.
    pub fn in_start_period(&self, since_start: Duration) -> bool {
        !self.started && since_start < self.start_period
    }

    /// Records one probe's result, `since_start` after the task started; returns the status.
    pub fn record(&mut self, success: bool, since_start: Duration) -> HealthStatus {
        if success {
            self.failing_streak = 0;
            self.started = true;
            self.status = HealthStatus::Healthy;
        } else if !self.in_start_period(since_start) {
            self.failing_streak += 1;
            if self.failing_streak >= self.retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.status
    }
}

/// Runs probes forever (until the receiver of `tx` is dropped), publishing every status.
/// `probe` runs the test once and says whether it passed; it is given the timeout.
pub async fn monitor<F, Fut>(check: HealthCheck, mut probe: F, tx: watch::Sender<HealthStatus>)
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let mut m = HealthMachine::new(&check);
    loop {
        let wait = if m.in_start_period(started.elapsed()) {
            check.start_interval
        } else {
            check.interval
        };
        tokio::time::sleep(wait).await;
        // A probe that outlives its timeout counts as a failure.
        let ok = tokio::time::timeout(check.timeout, probe(check.timeout))
            .await
            .unwrap_or(false);
        let st = m.record(ok, started.elapsed());
        tracing::debug!(
            status = st.as_str(),
            streak = m.failing_streak(),
            "health probe"
        );
        tx.send_replace(st);
        if tx.is_closed() {
            return;
        }
    }
}

/// A running health monitor; aborted when dropped.
pub struct MonitorGuard(tokio::task::JoinHandle<()>);

impl Drop for MonitorGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts monitoring a process-runtime task: probes run as host processes via
/// [`process_probe`]. The receiver sees every probe's resulting status.
pub fn spawn_process_monitor(
    check: HealthCheck,
    spec: RunSpec,
) -> (MonitorGuard, watch::Receiver<HealthStatus>) {
    let (tx, rx) = watch::channel(HealthStatus::Starting);
    let test = check.test.clone();
    let spec = std::sync::Arc::new(spec);
    let probe = move |timeout: Duration| {
        let test = test.clone();
        let spec = std::sync::Arc::clone(&spec);
        async move { process_probe(&test, &spec, timeout).await }
    };
    (MonitorGuard(tokio::spawn(monitor(check, probe, tx))), rx)
}

/// The failed status of a task stopped for being unhealthy: before it was reported running,
/// swarmkit's start error; afterwards its wait error, `task: non-zero exit (N): <cause>`.
pub fn unhealthy_error(exit: Option<&crate::runtime::ExitStatus>, was_running: bool) -> String {
    match exit.and_then(|e| e.exit_code()) {
        Some(code) if was_running && code != 0 => {
            format!("task: non-zero exit ({code}): {UNHEALTHY}")
        }
        _ => UNHEALTHY.to_string(),
    }
}

/// Runs the test once as a host process in the task's environment, working directory and user
/// (as `docker exec` would in a container); killed when the timeout passes.
pub async fn process_probe(test: &HealthTest, spec: &RunSpec, timeout: Duration) -> bool {
    let plan = match crate::process::plan(spec) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(task = %spec.task_id, error = %e, "health probe cannot run");
            return false;
        }
    };
    let argv = test.argv();
    let Some((prog, args)) = argv.split_first() else {
        return false;
    };
    // A task with a network of its own is probed in it (through util-linux's nsenter, which
    // also takes the user, since joining a namespace needs the daemon's privileges).
    let mut cmd = match spec.netns.as_deref() {
        Some(ns) => {
            let mut c = tokio::process::Command::new("nsenter");
            c.arg(format!("--net={ns}"));
            if let Some(gid) = plan.gid {
                c.arg(format!("--setgid={gid}"));
            }
            if let Some(uid) = plan.uid {
                c.arg(format!("--setuid={uid}"));
            }
            c.arg("--").arg(prog);
            c
        }
        None => {
            let mut c = tokio::process::Command::new(prog);
            if let Some(uid) = plan.uid {
                c.uid(uid);
            }
            if let Some(gid) = plan.gid {
                c.gid(gid);
            }
            c
        }
    };
    cmd.args(args)
        .env_clear()
        .envs(plan.env.iter().filter_map(|e| e.split_once('=')))
        .current_dir(&plan.dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(task = %spec.task_id, error = %e, "health probe failed to start");
            return false;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) => st.success(),
        Ok(Err(_)) => false,
        Err(_) => {
            let _ = child.kill().await;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn cfg(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: Some(test.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn check(retries: u32, start_period: Duration) -> HealthCheck {
        HealthCheck {
            test: HealthTest::Cmd(vec!["true".into()]),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries,
            start_period,
            start_interval: Duration::from_millis(500),
        }
    }

    #[test]
    fn spec_parsing_applies_docker_defaults() {
        assert_eq!(HealthCheck::from_spec(None), None);
        assert_eq!(HealthCheck::from_spec(Some(&cfg(&[]))), None);
        assert_eq!(HealthCheck::from_spec(Some(&cfg(&["NONE"]))), None);
        assert_eq!(HealthCheck::from_spec(Some(&cfg(&["CMD"]))), None);
        let c = HealthCheck::from_spec(Some(&cfg(&["CMD-SHELL", "test -f /x"]))).unwrap();
        assert_eq!(c.test, HealthTest::Shell("test -f /x".into()));
        assert_eq!(c.test.argv(), vec!["/bin/sh", "-c", "test -f /x"]);
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.retries, DEFAULT_RETRIES);
        assert_eq!(c.start_period, Duration::ZERO);
        assert_eq!(c.start_interval, DEFAULT_START_INTERVAL);
        let mut h = cfg(&["CMD", "curl", "-f", "x"]);
        h.interval = Some(1_000_000_000);
        h.retries = Some(2);
        h.start_period = Some(5_000_000_000);
        let c = HealthCheck::from_spec(Some(&h)).unwrap();
        assert_eq!(
            c.test,
            HealthTest::Cmd(vec!["curl".into(), "-f".into(), "x".into()])
        );
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.retries, 2);
        assert_eq!(c.start_period, Duration::from_secs(5));
    }

    #[test]
    fn starting_becomes_healthy_after_one_success_and_unhealthy_after_retries() {
        let mut m = HealthMachine::new(&check(3, Duration::ZERO));
        assert_eq!(m.status(), HealthStatus::Starting);
        let t = Duration::from_secs(1);
        assert_eq!(m.record(false, t), HealthStatus::Starting);
        assert_eq!(m.record(true, t), HealthStatus::Healthy);
        assert_eq!(m.failing_streak(), 0);
        assert_eq!(m.record(false, t), HealthStatus::Healthy);
        assert_eq!(m.record(false, t), HealthStatus::Healthy);
        assert_eq!(m.record(false, t), HealthStatus::Unhealthy);
        assert_eq!(m.record(true, t), HealthStatus::Healthy);

        let mut m = HealthMachine::new(&check(2, Duration::ZERO));
        assert_eq!(m.record(false, t), HealthStatus::Starting);
        assert_eq!(m.record(false, t), HealthStatus::Unhealthy);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let mut m = HealthMachine::new(&check(1, Duration::from_secs(10)));
        for s in 0..10 {
            assert_eq!(
                m.record(false, Duration::from_secs(s)),
                HealthStatus::Starting
            );
        }
        assert_eq!(m.failing_streak(), 0);
        assert_eq!(
            m.record(false, Duration::from_secs(10)),
            HealthStatus::Unhealthy
        );
        // A success ends the start period early: later failures count at once.
        let mut m = HealthMachine::new(&check(1, Duration::from_secs(10)));
        assert_eq!(
            m.record(true, Duration::from_secs(1)),
            HealthStatus::Healthy
        );
        assert_eq!(
            m.record(false, Duration::from_secs(2)),
            HealthStatus::Unhealthy
        );
    }

    #[tokio::test(start_paused = true)]
    async fn monitor_publishes_statuses_on_the_clock() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        // Passes on the second and third probes, fails from the fourth on.
        let probe = move |_t: Duration| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move { (2..4).contains(&n) }
        };
        let (tx, mut rx) = watch::channel(HealthStatus::Starting);
        let h = tokio::spawn(monitor(check(2, Duration::ZERO), probe, tx));
        let mut seen = Vec::new();
        while rx.changed().await.is_ok() {
            let s = *rx.borrow_and_update();
            if seen.last() != Some(&s) {
                seen.push(s);
            }
            if s == HealthStatus::Unhealthy {
                break;
            }
        }
        drop(rx);
        h.abort();
        assert_eq!(
            seen,
            vec![
                HealthStatus::Starting,
                HealthStatus::Healthy,
                HealthStatus::Unhealthy
            ]
        );
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_times_out_as_a_failure() {
        let probe = |_t: Duration| std::future::pending::<bool>();
        let (tx, mut rx) = watch::channel(HealthStatus::Starting);
        let h = tokio::spawn(monitor(check(1, Duration::ZERO), probe, tx));
        let mut last = HealthStatus::Starting;
        while last != HealthStatus::Unhealthy && rx.changed().await.is_ok() {
            last = *rx.borrow_and_update();
        }
        h.abort();
        assert_eq!(last, HealthStatus::Unhealthy);
    }

    #[tokio::test]
    async fn process_probe_runs_in_the_task_environment() {
        let dir = std::env::temp_dir();
        let mut spec = RunSpec::new("t1", vec!["true".into()]);
        spec.env = vec!["HC_MARK=yes".into()];
        spec.dir = Some(dir.to_string_lossy().into_owned());
        let t = Duration::from_secs(10);
        let ok =
            HealthTest::Shell("test \"$HC_MARK\" = yes && test \"$PWD\" = \"$(pwd -P)\"".into());
        assert!(process_probe(&ok, &spec, t).await);
        assert!(!process_probe(&HealthTest::Shell("exit 1".into()), &spec, t).await);
        assert!(!process_probe(&HealthTest::Cmd(vec!["/nonexistent/x".into()]), &spec, t).await);
        let slow = HealthTest::Cmd(vec!["sleep".into(), "30".into()]);
        assert!(!process_probe(&slow, &spec, Duration::from_millis(100)).await);
    }
}
