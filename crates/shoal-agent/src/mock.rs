//! An in-memory [`Runtime`] for tests of the worker: scriptable behaviours, recorded calls,
//! and hooks to make a running task exit or print.
//!
//! A task's [`Behavior`] is chosen at `prepare`, first match wins:
//!
//! ```text
//!   exact command (on_command) ─> image (on_image) ─> the command read as a tiny shell script
//!   (Behavior::from_command) ─> the default (run forever unless changed with with_default)
//! ```
//!
//! The shell subset understood by [`Behavior::from_command`] is what the conformance suite
//! and typical tests use, so the same spec behaves alike here and in the `process` runtime:
//! `sh -c "echo WORDS [>&2]; sleep SECS; exit N; kill -SIG $$; trap '' SIGS; true; :"`, and the
//! plain commands `sleep N`, `true`, `false`, `echo WORDS`. Anything else falls through to the
//! default.
//!
//! Clones share state, so a clone stands for "the same runtime after a daemon restart". Time
//! is tokio's, so tests may run with a paused clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono::Utc;
use futures::stream::{BoxStream, StreamExt};
use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::logs::apply_since_tail;
use crate::runtime::{
    parse_signal, Capabilities, ExitStatus, LogLine, LogOptions, LogStream, Recovered, RunSpec,
    Runtime, RuntimeError,
};

/// One step of a scripted task.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Print a line on stdout.
    Stdout(String),
    /// Print a line on stderr.
    Stderr(String),
    /// Wait.
    Sleep(Duration),
    /// Exit with a code.
    Exit(i32),
    /// Die by a signal.
    Signal(i32),
    /// Ignore these signals from now on (`stop` then needs its grace period and SIGKILL).
    Ignore(Vec<i32>),
    /// Run until stopped or made to exit.
    Forever,
}

/// What a mock task does. Steps run in order at `start`; running out of steps is `exit 0`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behavior {
    /// `prepare` fails with `InvalidSpec(message)`.
    pub fail_prepare: Option<String>,
    /// `start` fails with `Start(message)`.
    pub fail_start: Option<String>,
    /// The script.
    pub steps: Vec<Step>,
}

impl Behavior {
    /// Runs until stopped.
    pub fn run_forever() -> Self {
        Self::steps(vec![Step::Forever])
    }

    /// Exits at once with `code`.
    pub fn exit(code: i32) -> Self {
        Self::steps(vec![Step::Exit(code)])
    }

    /// Exits with `code` after `after`.
    pub fn exit_after(code: i32, after: Duration) -> Self {
        Self::steps(vec![Step::Sleep(after), Step::Exit(code)])
    }

    /// `start` fails with this message.
    pub fn fail_start(message: impl Into<String>) -> Self {
        Behavior {
            fail_start: Some(message.into()),
            ..Default::default()
        }
    }

    /// `prepare` fails with this message.
    pub fn fail_prepare(message: impl Into<String>) -> Self {
        Behavior {
            fail_prepare: Some(message.into()),
            ..Default::default()
        }
    }

    /// Runs these steps.
    pub fn steps(steps: Vec<Step>) -> Self {
        Behavior {
            steps,
            ..Default::default()
        }
    }

    /// Prints `line` on stdout first (after lines added before).
    pub fn with_stdout(self, line: impl Into<String>) -> Self {
        self.with_output(Step::Stdout(line.into()))
    }

    /// Prints `line` on stderr first (after lines added before).
    pub fn with_stderr(self, line: impl Into<String>) -> Self {
        self.with_output(Step::Stderr(line.into()))
    }

    fn with_output(mut self, step: Step) -> Self {
        let at = self
            .steps
            .iter()
            .take_while(|s| matches!(s, Step::Stdout(_) | Step::Stderr(_)))
            .count();
        self.steps.insert(at, step);
        self
    }

    /// Ignores `signal` (e.g. SIGTERM) from the start, so `stop` has to escalate to SIGKILL.
    pub fn ignoring(mut self, signal: Signal) -> Self {
        self.steps.insert(0, Step::Ignore(vec![signal as i32]));
        self
    }

    /// Reads a command as a script in the small shell subset described in the module docs;
    /// `None` if it is not in that subset.
    pub fn from_command(argv: &[String]) -> Option<Self> {
        let first = argv.first()?.as_str();
        let base = first.rsplit('/').next().unwrap_or(first);
        let mut steps = match (base, argv.len()) {
            ("sh" | "bash" | "dash" | "ash", 3) if argv[1] == "-c" => parse_script(&argv[2])?,
            _ => parse_statement(&argv.iter().map(String::as_str).collect::<Vec<_>>())?,
        };
        if !steps
            .iter()
            .any(|s| matches!(s, Step::Exit(_) | Step::Signal(_) | Step::Forever))
        {
            steps.push(Step::Exit(0));
        }
        Some(Self::steps(steps))
    }
}

fn parse_script(script: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    for stmt in split_unquoted(script, &[';', '\n']) {
        let words = shell_words(&stmt)?;
        if words.is_empty() {
            continue;
        }
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        steps.extend(parse_statement(&words)?);
    }
    Some(steps)
}

fn parse_statement(words: &[&str]) -> Option<Vec<Step>> {
    let (&cmd, args) = words.split_first()?;
    Some(match cmd {
        "echo" => {
            let to_stderr = args.iter().any(|a| *a == ">&2" || *a == "1>&2");
            let text = args
                .iter()
                .filter(|a| **a != ">&2" && **a != "1>&2")
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            vec![if to_stderr {
                Step::Stderr(text)
            } else {
                Step::Stdout(text)
            }]
        }
        "sleep" => {
            let secs: f64 = args.first()?.parse().ok()?;
            if !(secs.is_finite() && secs >= 0.0) {
                return None;
            }
            if secs >= 1e6 {
                vec![Step::Forever]
            } else {
                vec![Step::Sleep(Duration::from_secs_f64(secs))]
            }
        }
        "exit" => vec![Step::Exit(match args.first() {
            Some(n) => n.parse().ok()?,
            None => 0,
        })],
        "kill" if args.len() == 2 && args[1] == "$$" => {
            let sig = parse_signal(args[0].strip_prefix('-')?).ok()?;
            vec![Step::Signal(sig as i32)]
        }
        "trap" if args.len() >= 2 && args[0].is_empty() => {
            let sigs = args[1..]
                .iter()
                .map(|s| parse_signal(s).ok().map(|s| s as i32))
                .collect::<Option<Vec<_>>>()?;
            vec![Step::Ignore(sigs)]
        }
        "true" | ":" => vec![],
        "false" => vec![Step::Exit(1)],
        _ => return None,
    })
}

/// Splits at any of `seps` outside single or double quotes.
fn split_unquoted(s: &str, seps: &[char]) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '\'' || c == '"' => quote = Some(c),
            None if seps.contains(&c) => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

/// Splits a statement into words, removing quotes; `None` on an unterminated quote.
fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.get_or_insert_with(String::new).push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                cur.get_or_insert_with(String::new);
            }
            None if c.is_whitespace() => {
                if let Some(w) = cur.take() {
                    words.push(w);
                }
            }
            None => cur.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return None;
    }
    words.extend(cur);
    Some(words)
}

/// A call the mock received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `prepare(spec)` with the spec's task id.
    Prepare(String),
    /// `start(id)`.
    Start(String),
    /// `wait(id)`.
    Wait(String),
    /// `stop(id, signal, grace)`.
    Stop {
        /// The task.
        task_id: String,
        /// The signal asked for.
        signal: Option<String>,
        /// The grace period asked for.
        grace: Duration,
    },
    /// `remove(id)`.
    Remove(String),
    /// `logs(id, ..)`.
    Logs(String),
    /// `recover()`.
    Recover,
}

/// Where a mock task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockPhase {
    /// Prepared.
    Created,
    /// Started and not ended.
    Running,
    /// Ended.
    Exited(ExitStatus),
}

struct Task {
    spec: RunSpec,
    behavior: Behavior,
    phase: MockPhase,
    logs: Vec<LogLine>,
    ignored: Vec<i32>,
    changed: watch::Sender<()>,
    runner: Option<tokio::task::AbortHandle>,
}

impl Task {
    fn finish(&mut self, status: ExitStatus) -> bool {
        if self.phase != MockPhase::Running {
            return false;
        }
        self.phase = MockPhase::Exited(status);
        if let Some(r) = self.runner.take() {
            r.abort();
        }
        self.changed.send_replace(());
        true
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(r) = self.runner.take() {
            r.abort();
        }
    }
}

struct State {
    by_command: HashMap<Vec<String>, Behavior>,
    by_image: HashMap<String, Behavior>,
    default: Behavior,
    tasks: HashMap<String, Task>,
    calls: Vec<Call>,
}

/// The in-memory runtime; see the module docs.
#[derive(Clone)]
pub struct MockRuntime {
    state: Arc<Mutex<State>>,
}

impl Default for MockRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MockRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockRuntime")
            .field("tasks", &self.task_ids())
            .finish()
    }
}

impl MockRuntime {
    /// An empty runtime whose default behaviour is to run forever.
    pub fn new() -> Self {
        MockRuntime {
            state: Arc::new(Mutex::new(State {
                by_command: HashMap::new(),
                by_image: HashMap::new(),
                default: Behavior::run_forever(),
                tasks: HashMap::new(),
                calls: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tasks whose command is exactly `command` behave like `behavior`.
    pub fn on_command<S: Into<String>>(
        self,
        command: impl IntoIterator<Item = S>,
        behavior: Behavior,
    ) -> Self {
        self.set_command_behavior(command, behavior);
        self
    }

    /// Tasks of `image` behave like `behavior`.
    pub fn on_image(self, image: impl Into<String>, behavior: Behavior) -> Self {
        self.set_image_behavior(image, behavior);
        self
    }

    /// Tasks matching nothing else behave like `behavior`.
    pub fn with_default(self, behavior: Behavior) -> Self {
        self.lock().default = behavior;
        self
    }

    /// Like [`MockRuntime::on_command`], on a shared runtime; applies to later `prepare`s.
    pub fn set_command_behavior<S: Into<String>>(
        &self,
        command: impl IntoIterator<Item = S>,
        behavior: Behavior,
    ) {
        let cmd = command.into_iter().map(Into::into).collect();
        self.lock().by_command.insert(cmd, behavior);
    }

    /// Like [`MockRuntime::on_image`], on a shared runtime; applies to later `prepare`s.
    pub fn set_image_behavior(&self, image: impl Into<String>, behavior: Behavior) {
        self.lock().by_image.insert(image.into(), behavior);
    }

    /// The calls received so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls received so far, forgetting them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The ids of the tasks the runtime holds, sorted.
    pub fn task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().tasks.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Where a task is; `None` if unknown.
    pub fn phase(&self, task_id: &str) -> Option<MockPhase> {
        self.lock().tasks.get(task_id).map(|t| t.phase)
    }

    /// The spec a task was prepared with.
    pub fn spec(&self, task_id: &str) -> Option<RunSpec> {
        self.lock().tasks.get(task_id).map(|t| t.spec.clone())
    }

    /// Makes a running task end with `status`; false if it was not running.
    pub fn exit_task(&self, task_id: &str, status: ExitStatus) -> bool {
        match self.lock().tasks.get_mut(task_id) {
            Some(t) => t.finish(status),
            None => false,
        }
    }

    /// Appends a line to a task's output; false if the task is unknown.
    pub fn emit(&self, task_id: &str, stream: LogStream, line: impl Into<Vec<u8>>) -> bool {
        match self.lock().tasks.get_mut(task_id) {
            Some(t) => {
                t.logs.push(LogLine {
                    timestamp: Utc::now(),
                    stream,
                    line: line.into(),
                });
                t.changed.send_replace(());
                true
            }
            None => false,
        }
    }

    fn record(&self, call: Call) {
        self.lock().calls.push(call);
    }

    fn behavior_for(state: &State, spec: &RunSpec) -> Behavior {
        if let Some(b) = state.by_command.get(&spec.command) {
            return b.clone();
        }
        if let Some(b) = state.by_image.get(&spec.image) {
            return b.clone();
        }
        Behavior::from_command(&spec.command).unwrap_or_else(|| state.default.clone())
    }
}

/// Runs a task's steps; holds the runtime weakly so dropping the runtime ends the script.
async fn run_steps(state: Weak<Mutex<State>>, task_id: String, steps: Vec<Step>) {
    let with_task = |f: &mut dyn FnMut(&mut Task)| {
        if let Some(state) = state.upgrade() {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = st.tasks.get_mut(&task_id) {
                f(t);
            }
        }
    };
    let print = |stream: LogStream, line: String| {
        with_task(&mut |t| {
            t.logs.push(LogLine {
                timestamp: Utc::now(),
                stream,
                line: line.clone().into_bytes(),
            });
            t.changed.send_replace(());
        })
    };
    for step in steps {
        match step {
            Step::Stdout(l) => print(LogStream::Stdout, l),
            Step::Stderr(l) => print(LogStream::Stderr, l),
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Exit(c) => {
                with_task(&mut |t| {
                    t.finish(ExitStatus::code(c));
                });
                return;
            }
            Step::Signal(s) => {
                with_task(&mut |t| {
                    t.finish(ExitStatus::signaled(s));
                });
                return;
            }
            Step::Ignore(sigs) => with_task(&mut |t| t.ignored.extend(sigs.iter().copied())),
            Step::Forever => std::future::pending::<()>().await,
        }
    }
    with_task(&mut |t| {
        t.finish(ExitStatus::code(0));
    });
}

#[async_trait::async_trait]
impl Runtime for MockRuntime {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "mock",
            pulls_images: false,
            isolates_filesystem: false,
            isolates_network: false,
            survives_daemon_restart: true,
        }
    }

    async fn prepare(&self, spec: &RunSpec) -> Result<(), RuntimeError> {
        self.record(Call::Prepare(spec.task_id.clone()));
        spec.validate()?;
        let mut st = self.lock();
        let behavior = Self::behavior_for(&st, spec);
        if let Some(msg) = &behavior.fail_prepare {
            return Err(RuntimeError::InvalidSpec(format!(
                "task {}: {msg}",
                spec.task_id
            )));
        }
        if let Some(t) = st.tasks.get(&spec.task_id) {
            if t.phase != MockPhase::Created {
                return Ok(());
            }
        }
        st.tasks.insert(
            spec.task_id.clone(),
            Task {
                spec: spec.clone(),
                behavior,
                phase: MockPhase::Created,
                logs: Vec::new(),
                ignored: Vec::new(),
                changed: watch::Sender::new(()),
                runner: None,
            },
        );
        Ok(())
    }

    async fn start(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.record(Call::Start(task_id.to_string()));
        let mut st = self.lock();
        let t = st
            .tasks
            .get_mut(task_id)
            .ok_or_else(|| RuntimeError::NotFound(task_id.to_string()))?;
        match t.phase {
            MockPhase::Running => return Ok(()),
            MockPhase::Exited(_) => {
                return Err(RuntimeError::Start(format!(
                    "task {task_id} has already run and exited; a task runs only once"
                )))
            }
            MockPhase::Created => {}
        }
        if let Some(msg) = &t.behavior.fail_start {
            return Err(RuntimeError::Start(format!("task {task_id}: {msg}")));
        }
        t.phase = MockPhase::Running;
        t.changed.send_replace(());
        let steps = t.behavior.steps.clone();
        let handle = tokio::spawn(run_steps(
            Arc::downgrade(&self.state),
            task_id.to_string(),
            steps,
        ));
        t.runner = Some(handle.abort_handle());
        Ok(())
    }

    async fn wait(&self, task_id: &str) -> Result<ExitStatus, RuntimeError> {
        self.record(Call::Wait(task_id.to_string()));
        let mut rx = {
            let st = self.lock();
            let t = st
                .tasks
                .get(task_id)
                .ok_or_else(|| RuntimeError::NotFound(task_id.to_string()))?;
            if let MockPhase::Exited(s) = t.phase {
                return Ok(s);
            }
            t.changed.subscribe()
        };
        loop {
            if rx.changed().await.is_err() {
                return Err(RuntimeError::NotFound(format!(
                    "{task_id} (removed while waiting)"
                )));
            }
            if let Some(MockPhase::Exited(s)) = self.phase(task_id) {
                return Ok(s);
            }
        }
    }

    async fn stop(
        &self,
        task_id: &str,
        signal: Option<&str>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.record(Call::Stop {
            task_id: task_id.to_string(),
            signal: signal.map(str::to_string),
            grace,
        });
        let (sig, ignored, mut rx) = {
            let mut st = self.lock();
            let Some(t) = st.tasks.get_mut(task_id) else {
                return Ok(());
            };
            if t.phase != MockPhase::Running {
                return Ok(());
            }
            let name = signal
                .map(str::to_string)
                .or_else(|| t.spec.stop_signal.clone())
                .unwrap_or_else(|| "SIGTERM".to_string());
            let sig = parse_signal(&name)
                .map_err(|e| RuntimeError::InvalidSpec(format!("task {task_id}: {e}")))?;
            let ignored = sig != Signal::SIGKILL && t.ignored.contains(&(sig as i32));
            if !ignored {
                t.finish(ExitStatus::signaled(sig as i32));
                return Ok(());
            }
            (sig, ignored, t.changed.subscribe())
        };
        debug_assert!(ignored);
        tracing::debug!(task_id, signal = %sig, "mock task ignores the signal");
        let _ = tokio::time::timeout(grace, async {
            loop {
                if !matches!(self.phase(task_id), Some(MockPhase::Running)) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.exit_task(task_id, ExitStatus::signaled(Signal::SIGKILL as i32));
        Ok(())
    }

    async fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.record(Call::Remove(task_id.to_string()));
        let removed = self.lock().tasks.remove(task_id);
        drop(removed);
        Ok(())
    }

    async fn logs(
        &self,
        task_id: &str,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, RuntimeError> {
        self.record(Call::Logs(task_id.to_string()));
        let (history, seen, mut rx) = {
            let st = self.lock();
            let t = st
                .tasks
                .get(task_id)
                .ok_or_else(|| RuntimeError::NotFound(task_id.to_string()))?;
            (
                apply_since_tail(t.logs.clone(), &opts),
                t.logs.len(),
                t.changed.subscribe(),
            )
        };
        if !opts.follow {
            return Ok(futures::stream::iter(history).boxed());
        }
        let (tx, out) = tokio::sync::mpsc::channel(256);
        let state = Arc::downgrade(&self.state);
        let task_id = task_id.to_string();
        tokio::spawn(async move {
            for l in history {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
            let mut seen = seen;
            loop {
                let (new, done) = {
                    let Some(state) = state.upgrade() else { return };
                    let st = state.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(t) = st.tasks.get(&task_id) else {
                        return;
                    };
                    let new: Vec<LogLine> = t.logs.get(seen..).unwrap_or_default().to_vec();
                    seen = t.logs.len();
                    (new, matches!(t.phase, MockPhase::Exited(_)))
                };
                for l in new {
                    if opts.since.is_some_and(|s| l.timestamp < s) {
                        continue;
                    }
                    if tx.send(l).await.is_err() {
                        return;
                    }
                }
                if done {
                    return;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(out).boxed())
    }

    async fn recover(&self) -> Result<Vec<(String, Recovered)>, RuntimeError> {
        self.record(Call::Recover);
        let st = self.lock();
        let mut out: Vec<(String, Recovered)> = st
            .tasks
            .iter()
            .map(|(id, t)| {
                let r = match t.phase {
                    MockPhase::Created => Recovered::Created,
                    MockPhase::Running => Recovered::Running,
                    MockPhase::Exited(s) => Recovered::Exited(s),
                };
                (id.clone(), r)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shell_subset_parses() {
        let b = Behavior::from_command(&cmd(&[
            "sh",
            "-c",
            "echo 'a b'; echo err >&2; sleep 0.5; exit 3",
        ]))
        .expect("parses");
        assert_eq!(
            b.steps,
            vec![
                Step::Stdout("a b".into()),
                Step::Stderr("err".into()),
                Step::Sleep(Duration::from_millis(500)),
                Step::Exit(3)
            ]
        );
        let b = Behavior::from_command(&cmd(&["/bin/sh", "-c", "trap '' TERM; sleep 1000"]))
            .expect("parses");
        assert_eq!(
            b.steps,
            vec![
                Step::Ignore(vec![15]),
                Step::Sleep(Duration::from_secs(1000)),
                Step::Exit(0)
            ]
        );
        let b = Behavior::from_command(&cmd(&["sh", "-c", "kill -KILL $$"])).expect("parses");
        assert_eq!(b.steps, vec![Step::Signal(9)]);
        assert_eq!(
            Behavior::from_command(&cmd(&["true"])).map(|b| b.steps),
            Some(vec![Step::Exit(0)])
        );
        assert_eq!(
            Behavior::from_command(&cmd(&["false"])).map(|b| b.steps),
            Some(vec![Step::Exit(1)])
        );
        assert!(Behavior::from_command(&cmd(&["sh", "-c", "pwd"])).is_none());
        assert!(Behavior::from_command(&cmd(&["nginx"])).is_none());
        assert!(Behavior::from_command(&cmd(&["sh", "-c", "echo 'open"])).is_none());
    }

    #[test]
    fn output_goes_first() {
        let b = Behavior::run_forever().with_stdout("a").with_stderr("b");
        assert_eq!(
            b.steps,
            vec![
                Step::Stdout("a".into()),
                Step::Stderr("b".into()),
                Step::Forever
            ]
        );
    }

    #[tokio::test]
    async fn mock_passes_conformance() {
        crate::conformance::run_conformance(MockRuntime::new).await;
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_behaviours_and_hooks() {
        let rt = MockRuntime::new()
            .on_image("crash", Behavior::exit_after(2, Duration::from_secs(5)))
            .on_command(
                ["bad"],
                Behavior::fail_start("exec: \"bad\": executable file not found in $PATH"),
            )
            .on_command(["nope"], Behavior::fail_prepare("no such image"));
        let mut spec = RunSpec::new("t1", cmd(&["nginx"]));
        spec.image = "crash".into();
        rt.prepare(&spec).await.expect("prepare");
        rt.start("t1").await.expect("start");
        let t0 = tokio::time::Instant::now();
        assert_eq!(rt.wait("t1").await.expect("wait"), ExitStatus::code(2));
        assert!(t0.elapsed() >= Duration::from_secs(5));

        rt.prepare(&RunSpec::new("t2", cmd(&["bad"])))
            .await
            .expect("prepare");
        let err = rt.start("t2").await.unwrap_err();
        assert!(matches!(err, RuntimeError::Start(_)), "{err}");
        assert_eq!(rt.phase("t2"), Some(MockPhase::Created));

        let err = rt
            .prepare(&RunSpec::new("t3", cmd(&["nope"])))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidSpec(_)), "{err}");

        // Default: runs forever until a test makes it exit.
        rt.prepare(&RunSpec::new("t4", cmd(&["server"])))
            .await
            .expect("prepare");
        rt.start("t4").await.expect("start");
        assert_eq!(rt.phase("t4"), Some(MockPhase::Running));
        assert!(rt.emit("t4", LogStream::Stdout, "hi"));
        let waiter = {
            let rt = rt.clone();
            tokio::spawn(async move { rt.wait("t4").await })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished());
        assert!(rt.exit_task("t4", ExitStatus::code(7)));
        assert_eq!(
            waiter.await.expect("join").expect("wait"),
            ExitStatus::code(7)
        );
        assert!(!rt.exit_task("t4", ExitStatus::code(8)));
        let lines: Vec<_> = rt
            .logs("t4", LogOptions::default())
            .await
            .expect("logs")
            .collect()
            .await;
        assert_eq!(lines.len(), 1);

        let calls = rt.take_calls();
        assert_eq!(calls[0], Call::Prepare("t1".into()));
        assert!(calls.contains(&Call::Start("t4".into())));
        assert!(rt.calls().is_empty());

        // A clone is the same runtime "after a restart".
        let restarted = rt.clone();
        let rec = restarted.recover().await.expect("recover");
        assert_eq!(
            rec,
            vec![
                ("t1".to_string(), Recovered::Exited(ExitStatus::code(2))),
                ("t2".to_string(), Recovered::Created),
                ("t4".to_string(), Recovered::Exited(ExitStatus::code(7))),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_escalates_when_the_signal_is_ignored() {
        let rt = MockRuntime::new().with_default(Behavior::run_forever().ignoring(Signal::SIGTERM));
        rt.prepare(&RunSpec::new("t", cmd(&["server"])))
            .await
            .expect("prepare");
        rt.start("t").await.expect("start");
        tokio::task::yield_now().await;
        let t0 = tokio::time::Instant::now();
        rt.stop("t", None, Duration::from_secs(3))
            .await
            .expect("stop");
        assert!(t0.elapsed() >= Duration::from_secs(3));
        assert_eq!(rt.wait("t").await.expect("wait"), ExitStatus::signaled(9));
        assert!(matches!(rt.calls().last(), Some(Call::Wait(_))));
    }
}
