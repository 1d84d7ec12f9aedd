//! Convergence progress for `service create`, `update` and `scale` (docker's
//! `service/progress`): polls the service, its up-to-date tasks and the nodes
//! every 200 ms and shows `overall progress: N out of M tasks`, one line per
//! slot (or node) with a progress bar, then `verify: Service X converged` once
//! the tasks stayed running for [`STABLE_FOR`]. On a terminal the display is
//! redrawn in place with `indicatif`; otherwise the final state of every line
//! is printed once, so that piped output is deterministic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use bollard::models::{Service, Task};
use bollard::query_parameters::ListTasksOptions;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::{CliError, Client};
use crate::format::{enum_str, out, truncate_id};

/// Delay between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long tasks must stay running before the service counts as converged.
pub const STABLE_FOR: Duration = Duration::from_secs(2);
/// Above this many slots or nodes, per-task lines are not drawn.
const MAX_PROGRESS_BARS: u64 = 20;
/// Width of the state column (longest non-terminal state name).
const LONGEST_STATE: usize = 9;
/// Number of the `running` state.
const RUNNING: i64 = 9;

/// docker's numbering of task states (0 for unknown ones).
pub fn state_num(state: &str) -> i64 {
    match state {
        "new" => 1,
        "allocated" => 2,
        "pending" => 3,
        "assigned" => 4,
        "accepted" => 5,
        "preparing" => 6,
        "ready" => 7,
        "starting" => 8,
        "running" => 9,
        "complete" => 10,
        "shutdown" => 11,
        "failed" => 12,
        "rejected" => 13,
        _ => 0,
    }
}

fn terminal(state: &str) -> bool {
    state_num(state) > RUNNING
}

/// Docker's progress bar at full terminal width: `[====>    ]` (50 columns).
pub fn bar(current: i64, total: i64) -> String {
    if total <= 0 {
        return String::new();
    }
    let pct = ((current as f64 / total as f64 * 100.0) as i64 / 2).clamp(0, 50) as usize;
    format!("[{}>{}]", "=".repeat(pct), " ".repeat(50 - pct))
}

/// Error text shortened to one line of at most 75 characters.
pub fn trunc_error(msg: &str) -> String {
    let msg = msg.replace('\n', " ");
    if msg.chars().count() > 75 {
        let mut s: String = msg.chars().take(74).collect();
        s.push('…');
        s
    } else {
        msg
    }
}

/// Where progress lines go.
pub trait Sink {
    /// Sets (or adds) the line with this ID.
    fn set(&mut self, id: &str, text: String);
    /// Adds a line without ID.
    fn message(&mut self, text: String);
    /// Ends the display.
    fn finish(&mut self);
}

fn line(id: &str, action: &str, progress: Option<(i64, i64)>) -> String {
    match progress {
        Some((c, t)) => format!("{id}: {action} {}", bar(c, t)),
        None => format!("{id}: {action}"),
    }
}

fn set_line(sink: &mut dyn Sink, id: &str, action: &str, progress: Option<(i64, i64)>) {
    sink.set(id, line(id, action, progress));
}

fn overall(sink: &mut dyn Sink, n: u64, d: u64, rollback: bool) {
    let action = if rollback {
        format!("rolling back update: {n} out of {d} tasks")
    } else {
        format!("{n} out of {d} tasks")
    };
    set_line(sink, "overall progress", &action, None);
}

/// The parts of a task the progress display looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskView {
    /// Slot (replicated services).
    pub slot: i64,
    /// Node ID.
    pub node_id: String,
    /// Desired state.
    pub desired: String,
    /// Current state.
    pub state: String,
    /// Error message.
    pub err: String,
    /// Job iteration index.
    pub job_iteration: Option<u64>,
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> TaskView {
        TaskView {
            slot: t.slot.unwrap_or(0),
            node_id: t.node_id.clone().unwrap_or_default(),
            desired: enum_str(&t.desired_state),
            state: enum_str(&t.status.as_ref().and_then(|s| s.state)),
            err: t
                .status
                .as_ref()
                .and_then(|s| s.err.clone())
                .unwrap_or_default(),
            job_iteration: t.job_iteration.as_ref().and_then(|v| v.index),
        }
    }
}

/// Keeps, per key, the task docker's updaters consider current.
fn pick_current<K: Ord + Clone>(
    tasks: &[TaskView],
    key: impl Fn(&TaskView) -> K,
    active: Option<&HashSet<String>>,
) -> BTreeMap<K, TaskView> {
    let mut by: BTreeMap<K, TaskView> = BTreeMap::new();
    for t in tasks {
        if state_num(&t.desired) == 0 || state_num(&t.state) == 0 {
            continue;
        }
        if let Some(existing) = by.get(&key(t)) {
            let (ed, td) = (state_num(&existing.desired), state_num(&t.desired));
            if ed < td {
                continue;
            }
            if ed == td && state_num(&existing.state) <= state_num(&t.state) {
                continue;
            }
        }
        if let Some(active) = active {
            if !t.node_id.is_empty() && !active.contains(&t.node_id) {
                continue;
            }
        }
        by.insert(key(t), t.clone());
    }
    by
}

fn task_progress(sink: &mut dyn Sink, id: &str, t: &TaskView, total: i64) {
    if !t.err.is_empty() {
        set_line(sink, id, &trunc_error(&t.err), None);
        return;
    }
    if !terminal(&t.desired) && !terminal(&t.state) {
        set_line(
            sink,
            id,
            &format!("{:<LONGEST_STATE$}", t.state),
            Some((state_num(&t.state), total)),
        );
    }
}

/// Progress of a replicated service.
#[derive(Debug, Default)]
pub struct Replicated {
    slot_map: HashMap<i64, u64>,
    initialized: bool,
    done: bool,
}

impl Replicated {
    /// One poll; returns whether all replicas are running.
    pub fn update(
        &mut self,
        replicas: u64,
        tasks: &[TaskView],
        active: &HashSet<String>,
        rollback: bool,
        sink: &mut dyn Sink,
    ) -> bool {
        if !self.initialized {
            overall(sink, 0, replicas, rollback);
            if replicas <= MAX_PROGRESS_BARS {
                for i in 1..=replicas {
                    set_line(sink, &format!("{i}/{replicas}"), " ", None);
                }
            }
            self.initialized = true;
        }
        let by_slot = pick_current(tasks, |t| t.slot, Some(active));
        if self.done && by_slot.values().any(|t| t.state != "running") {
            self.done = false;
        }
        let mut running = 0u64;
        for t in by_slot.values() {
            let next = self.slot_map.len() as u64 + 1;
            let mapped = *self.slot_map.entry(t.slot).or_insert(next);
            if !terminal(&t.desired) && t.state == "running" {
                running += 1;
            }
            if !self.done && replicas <= MAX_PROGRESS_BARS && mapped <= replicas {
                task_progress(sink, &format!("{mapped}/{replicas}"), t, RUNNING);
            }
        }
        if !self.done {
            overall(sink, running, replicas, rollback);
            if running == replicas {
                self.done = true;
            }
        }
        running == replicas
    }
}

/// Progress of a global service.
#[derive(Debug, Default)]
pub struct Global {
    initialized: bool,
    done: bool,
}

impl Global {
    /// One poll; returns whether the task of every node is running.
    pub fn update(
        &mut self,
        tasks: &[TaskView],
        active: &HashSet<String>,
        rollback: bool,
        sink: &mut dyn Sink,
    ) -> bool {
        let by_node = pick_current(tasks, |t| t.node_id.clone(), None);
        let count = by_node.len() as u64;
        if !self.initialized {
            if count == 0 {
                set_line(sink, "overall progress", "waiting for new tasks", None);
                return false;
            }
            overall(sink, 0, count, rollback);
            self.initialized = true;
        }
        if self.done && by_node.values().any(|t| t.state != "running") {
            self.done = false;
        }
        let mut running = 0u64;
        for t in by_node.values() {
            if !active.contains(&t.node_id) {
                continue;
            }
            if !terminal(&t.desired) && t.state == "running" {
                running += 1;
            }
            if !self.done && count <= MAX_PROGRESS_BARS {
                task_progress(sink, &truncate_id(&t.node_id), t, RUNNING);
            }
        }
        if !self.done {
            overall(sink, running, count, rollback);
            if running == count {
                self.done = true;
            }
        }
        running == count
    }
}

/// Progress of a replicated job.
#[derive(Debug, Default)]
pub struct ReplicatedJob {
    iteration: u64,
    concurrent: u64,
    total: u64,
    initialized: bool,
}

impl ReplicatedJob {
    fn overall(&self, sink: &mut dyn Sink, active: u64, completed: u64) {
        let w = self.total.to_string().len();
        set_line(
            sink,
            "job progress",
            &format!("{completed:>w$} out of {} complete", self.total),
            Some((completed as i64, self.total as i64)),
        );
        let desired = (self.total.saturating_sub(completed)).min(self.concurrent);
        let w = self.concurrent.to_string().len();
        set_line(
            sink,
            "active tasks",
            &format!("{active:>w$} out of {desired:>w$} tasks"),
            None,
        );
    }

    /// One poll; returns whether all completions are done.
    pub fn update(&mut self, tasks: &[TaskView], sink: &mut dyn Sink) -> bool {
        if !self.initialized {
            self.overall(sink, 0, 0);
            if self.total <= MAX_PROGRESS_BARS {
                for i in 1..=self.total {
                    set_line(sink, &format!("{i}/{}", self.total), " ", None);
                }
            }
            self.initialized = true;
        }
        let mut by_slot: BTreeMap<i64, TaskView> = BTreeMap::new();
        for t in tasks {
            if t.job_iteration != Some(self.iteration)
                || state_num(&t.desired) == 0
                || state_num(&t.state) == 0
            {
                continue;
            }
            match by_slot.get(&t.slot) {
                Some(e) if state_num(&e.state) <= state_num(&t.state) => {}
                _ => {
                    by_slot.insert(t.slot, t.clone());
                }
            }
        }
        let (mut active, mut complete) = (0u64, 0u64);
        for t in by_slot.values() {
            if self.total <= MAX_PROGRESS_BARS {
                let id = format!("{}/{}", t.slot + 1, self.total);
                if t.err.is_empty() {
                    set_line(
                        sink,
                        &id,
                        &format!("{:<LONGEST_STATE$}", t.state),
                        Some((state_num(&t.state), 10)),
                    );
                } else {
                    set_line(sink, &id, &trunc_error(&t.err), None);
                }
            }
            if state_num(&t.state) < state_num("complete") {
                active += 1;
            }
            if t.state == "complete" {
                complete += 1;
            }
        }
        self.overall(sink, active, complete);
        complete == self.total
    }
}

/// Progress of a global job.
#[derive(Debug, Default)]
pub struct GlobalJob {
    iteration: u64,
    total: u64,
    nodes: HashSet<String>,
    initialized: bool,
}

impl GlobalJob {
    fn overall(&self, sink: &mut dyn Sink, complete: u64) {
        let w = self.total.to_string().len();
        set_line(
            sink,
            "job progress",
            &format!("{complete:>w$} out of {} complete", self.total),
            Some((complete as i64, self.total as i64)),
        );
    }

    /// One poll; returns whether every node completed its task.
    pub fn update(
        &mut self,
        tasks: &[TaskView],
        active: &HashSet<String>,
        sink: &mut dyn Sink,
    ) -> bool {
        if !self.initialized {
            if tasks.is_empty() && !active.is_empty() {
                set_line(sink, "job progress", "waiting for tasks", None);
                return false;
            }
            self.nodes = tasks
                .iter()
                .filter(|t| t.job_iteration == Some(self.iteration))
                .map(|t| t.node_id.clone())
                .collect();
            self.total = self.nodes.len() as u64;
            self.overall(sink, 0);
            self.initialized = true;
        }
        let mut by_node: BTreeMap<String, TaskView> = BTreeMap::new();
        for t in tasks {
            if t.job_iteration != Some(self.iteration) || !self.nodes.contains(&t.node_id) {
                continue;
            }
            match by_node.get(&t.node_id) {
                Some(e) if state_num(&e.state) <= state_num(&t.state) => {}
                _ => {
                    by_node.insert(t.node_id.clone(), t.clone());
                }
            }
        }
        let mut complete = 0u64;
        for t in by_node.values() {
            if self.total <= MAX_PROGRESS_BARS {
                if t.err.is_empty() {
                    set_line(
                        sink,
                        &t.node_id,
                        &format!("{:<LONGEST_STATE$}", t.state),
                        Some((state_num(&t.state), 10)),
                    );
                } else {
                    set_line(sink, &t.node_id, &trunc_error(&t.err), None);
                }
            }
            if t.state == "complete" {
                complete += 1;
            }
        }
        self.overall(sink, complete);
        complete == self.total
    }
}

enum Updater {
    Replicated(Replicated),
    Global(Global),
    ReplicatedJob(ReplicatedJob),
    GlobalJob(GlobalJob),
}

fn updater_for(s: &Service) -> Result<Updater, CliError> {
    let mode = s
        .spec
        .as_ref()
        .and_then(|sp| sp.mode.clone())
        .unwrap_or_default();
    let iteration = s
        .job_status
        .as_ref()
        .and_then(|j| j.job_iteration.as_ref())
        .and_then(|v| v.index)
        .unwrap_or(0);
    if mode.replicated.as_ref().and_then(|r| r.replicas).is_some() {
        return Ok(Updater::Replicated(Replicated::default()));
    }
    if mode.global.is_some() {
        return Ok(Updater::Global(Global::default()));
    }
    if let Some(job) = &mode.replicated_job {
        let total = job.total_completions.unwrap_or(0).max(0) as u64;
        return Ok(Updater::ReplicatedJob(ReplicatedJob {
            iteration,
            concurrent: job.max_concurrent.unwrap_or(total as i64).max(0) as u64,
            total,
            initialized: false,
        }));
    }
    if mode.global_job.is_some() {
        return Ok(Updater::GlobalJob(GlobalJob {
            iteration,
            ..Default::default()
        }));
    }
    Err(CliError::msg("unrecognized service mode"))
}

/// Lines kept in order and printed once at the end (non-terminal output).
#[derive(Debug, Default)]
pub struct PlainSink {
    lines: Vec<(String, String)>,
    finished: bool,
}

impl PlainSink {
    /// The text that [`Sink::finish`] prints.
    pub fn render(&self) -> String {
        self.lines
            .iter()
            .map(|(_, t)| format!("{}\n", t.trim_end()))
            .collect()
    }
}

impl Sink for PlainSink {
    fn set(&mut self, id: &str, text: String) {
        match self.lines.iter_mut().find(|(i, _)| i == id) {
            Some(l) => l.1 = text,
            None => self.lines.push((id.to_string(), text)),
        }
    }
    fn message(&mut self, text: String) {
        self.lines.push((String::new(), text));
    }
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            out(&self.render());
        }
    }
}

struct NullSink;

impl Sink for NullSink {
    fn set(&mut self, _: &str, _: String) {}
    fn message(&mut self, _: String) {}
    fn finish(&mut self) {}
}

struct TermSink {
    mp: MultiProgress,
    bars: Vec<(String, ProgressBar, String)>,
}

impl TermSink {
    fn new() -> TermSink {
        TermSink {
            mp: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            bars: Vec::new(),
        }
    }

    fn add(&mut self, id: &str, text: String) {
        let style = ProgressStyle::with_template("{msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = self.mp.add(ProgressBar::new(0));
        bar.set_style(style);
        bar.set_message(text.clone());
        self.bars.push((id.to_string(), bar, text));
    }
}

impl Sink for TermSink {
    fn set(&mut self, id: &str, text: String) {
        match self.bars.iter_mut().find(|(i, _, _)| i == id) {
            Some((_, b, current)) => {
                if *current != text {
                    b.set_message(text.clone());
                    *current = text;
                }
            }
            None => self.add(id, text),
        }
    }
    fn message(&mut self, text: String) {
        let id = format!("\u{0}{}", self.bars.len());
        self.add(&id, text);
    }
    fn finish(&mut self) {
        // Replace the live display by its final state as plain lines, so that the
        // scrollback ends cleanly on a new line.
        for (_, b, _) in &self.bars {
            b.finish_and_clear();
        }
        let _ = self.mp.clear();
        let text: String = self
            .bars
            .iter()
            .map(|(_, _, t)| format!("{}\n", t.trim_end()))
            .collect();
        self.bars.clear();
        out(&text);
    }
}

async fn poll_tasks(client: &Client, service_id: &str) -> Result<Vec<TaskView>, CliError> {
    let mut filters = HashMap::new();
    filters.insert("service".to_string(), vec![service_id.to_string()]);
    filters.insert("_up-to-date".to_string(), vec!["true".to_string()]);
    let tasks = client
        .docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await?;
    Ok(tasks.iter().map(TaskView::from).collect())
}

/// Waits for `service` (ID or name) to converge, showing docker's progress display
/// unless `quiet`. Ctrl-C stops waiting; the operation goes on in the background.
pub async fn wait_on_service(client: &Client, service: &str, quiet: bool) -> Result<(), CliError> {
    let mut sink: Box<dyn Sink + Send> = if quiet {
        Box::new(NullSink)
    } else if std::io::stdout().is_terminal() {
        Box::new(TermSink::new())
    } else {
        Box::new(PlainSink::default())
    };
    let result = converge(client, service, sink.as_mut()).await;
    sink.finish();
    match result {
        Ok(Outcome::Interrupted { converged }) => {
            if !converged && !quiet {
                out("Operation continuing in background.\n");
                out(&format!(
                    "Use `docker service ps {service}` to check progress.\n"
                ));
            }
            Ok(())
        }
        Ok(Outcome::Done) => Ok(()),
        Err(e) => Err(e),
    }
}

enum Outcome {
    Done,
    Interrupted { converged: bool },
}

async fn converge(
    client: &Client,
    service_ref: &str,
    sink: &mut (dyn Sink + Send),
) -> Result<Outcome, CliError> {
    let mut updater: Option<Updater> = None;
    let mut converged = false;
    let mut converged_at: Option<Instant> = None;
    let mut rollback = false;
    let mut message: Option<String> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let service = client.docker.inspect_service(service_ref, None).await?;
        if updater.is_none() {
            updater = Some(updater_for(&service)?);
        }
        if let Some(us) = &service.update_status {
            let msg = us.message.clone().unwrap_or_default();
            match enum_str(&us.state).as_str() {
                "updating" => rollback = false,
                "completed" if !converged => return Ok(Outcome::Done),
                "paused" => return Err(CliError::msg(format!("service update paused: {msg}"))),
                "rollback_started" => {
                    if !rollback && !msg.is_empty() {
                        set_line(sink, "rollback", &msg, None);
                    }
                    rollback = true;
                }
                "rollback_paused" => {
                    return Err(CliError::msg(format!("service rollback paused: {msg}")))
                }
                "rollback_completed" => {
                    if !converged {
                        message = Some(msg);
                    }
                    rollback = true;
                }
                _ => {}
            }
        }
        if converged && converged_at.is_some_and(|t| t.elapsed() >= STABLE_FOR) {
            set_line(
                sink,
                "verify",
                &format!("Service {service_ref} converged"),
                None,
            );
            if let Some(m) = message.take() {
                set_line(sink, "rollback", &m, None);
            }
            return Ok(Outcome::Done);
        }
        let id = service
            .id
            .clone()
            .unwrap_or_else(|| service_ref.to_string());
        let tasks = poll_tasks(client, &id).await?;
        let active = crate::service::active_nodes(client).await?;
        converged = match updater.as_mut() {
            Some(Updater::Replicated(u)) => {
                let replicas = service
                    .spec
                    .as_ref()
                    .and_then(|s| s.mode.as_ref())
                    .and_then(|m| m.replicated.as_ref())
                    .and_then(|r| r.replicas)
                    .ok_or_else(|| CliError::msg("no replica count"))?;
                u.update(replicas.max(0) as u64, &tasks, &active, rollback, sink)
            }
            Some(Updater::Global(u)) => u.update(&tasks, &active, rollback, sink),
            Some(Updater::ReplicatedJob(u)) => u.update(&tasks, sink),
            Some(Updater::GlobalJob(u)) => u.update(&tasks, &active, sink),
            None => false,
        };
        if converged {
            if service.job_status.is_some() {
                sink.message("job complete".to_string());
                return Ok(Outcome::Done);
            }
            let since = *converged_at.get_or_insert_with(Instant::now);
            if let Some(wait) = STABLE_FOR.checked_sub(since.elapsed()) {
                set_line(
                    sink,
                    "verify",
                    &format!(
                        "Waiting {} seconds to verify that tasks are stable...",
                        wait.as_secs() + 1
                    ),
                    None,
                );
            }
        } else {
            if converged_at.is_some() {
                set_line(sink, "verify", "Detected task failure", None);
            }
            converged_at = None;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = &mut ctrl_c => return Ok(Outcome::Interrupted { converged }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tv(slot: i64, node: &str, desired: &str, state: &str) -> TaskView {
        TaskView {
            slot,
            node_id: node.into(),
            desired: desired.into(),
            state: state.into(),
            err: String::new(),
            job_iteration: None,
        }
    }

    fn active(nodes: &[&str]) -> HashSet<String> {
        nodes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bars_and_errors() {
        assert_eq!(
            bar(9, 9),
            "[==================================================>]"
        );
        assert_eq!(bar(0, 9), format!("[>{}]", " ".repeat(50)));
        assert_eq!(bar(3, 9).matches('=').count(), 16);
        assert_eq!(trunc_error("a\nb"), "a b");
        assert_eq!(trunc_error(&"x".repeat(80)).chars().count(), 75);
    }

    #[test]
    fn replicated_progress_converges() {
        let mut u = Replicated::default();
        let mut sink = PlainSink::default();
        let nodes = active(&["n1"]);
        let tasks = vec![
            tv(1, "n1", "running", "running"),
            tv(2, "n1", "running", "preparing"),
            tv(3, "", "running", "pending"),
        ];
        assert!(!u.update(3, &tasks, &nodes, false, &mut sink));
        assert_eq!(
            sink.render(),
            "overall progress: 1 out of 3 tasks\n\
             1/3: running   [==================================================>]\n\
             2/3: preparing [=================================>                 ]\n\
             3/3: pending   [================>                                  ]\n"
        );
        let tasks = vec![
            tv(1, "n1", "running", "running"),
            tv(2, "n1", "running", "running"),
            tv(3, "n1", "running", "running"),
            // an old task of slot 2 being shut down is ignored
            tv(2, "n1", "shutdown", "shutdown"),
        ];
        assert!(u.update(3, &tasks, &nodes, false, &mut sink));
        let full = "[==================================================>]";
        assert_eq!(
            sink.render(),
            format!(
                "overall progress: 3 out of 3 tasks\n1/3: running   {full}\n2/3: running   {full}\n3/3: running   {full}\n"
            )
        );
    }

    #[test]
    fn replicated_progress_ignores_down_nodes_and_shows_errors() {
        let mut u = Replicated::default();
        let mut sink = PlainSink::default();
        let mut t = tv(1, "n1", "running", "rejected");
        t.err = "no suitable node (scheduling constraints not satisfied on 1 node)".into();
        let tasks = vec![t, tv(2, "gone", "running", "running")];
        assert!(!u.update(2, &tasks, &active(&["n1"]), false, &mut sink));
        assert_eq!(
            sink.render(),
            "overall progress: 0 out of 2 tasks\n1/2: no suitable node (scheduling constraints not satisfied on 1 node)\n2/2:\n"
        );
    }

    #[test]
    fn rollback_wording() {
        let mut u = Replicated::default();
        let mut sink = PlainSink::default();
        u.update(1, &[], &HashSet::new(), true, &mut sink);
        assert!(sink
            .render()
            .starts_with("overall progress: rolling back update: 0 out of 1 tasks\n"));
    }

    #[test]
    fn global_progress() {
        let mut u = Global::default();
        let mut sink = PlainSink::default();
        assert!(!u.update(&[], &HashSet::new(), false, &mut sink));
        assert_eq!(sink.render(), "overall progress: waiting for new tasks\n");
        let tasks = vec![
            tv(0, "node1aaaaaaaaaaaaaaaaaaaa", "running", "running"),
            tv(0, "node2bbbbbbbbbbbbbbbbbbbb", "running", "starting"),
        ];
        let nodes = active(&["node1aaaaaaaaaaaaaaaaaaaa", "node2bbbbbbbbbbbbbbbbbbbb"]);
        assert!(!u.update(&tasks, &nodes, false, &mut sink));
        let r = sink.render();
        assert!(r.starts_with("overall progress: 1 out of 2 tasks\n"));
        assert!(r.contains("node1aaaaaaa: running   ["));
        assert!(r.contains("node2bbbbbbb: starting  ["));
    }

    #[test]
    fn replicated_job_progress() {
        let mut u = ReplicatedJob {
            iteration: 1,
            concurrent: 2,
            total: 3,
            initialized: false,
        };
        let mut sink = PlainSink::default();
        let mut t0 = tv(0, "n", "complete", "complete");
        t0.job_iteration = Some(1);
        let mut t1 = tv(1, "n", "complete", "running");
        t1.job_iteration = Some(1);
        assert!(!u.update(&[t0.clone(), t1], &mut sink));
        let r = sink.render();
        assert!(r.contains("job progress: 1 out of 3 complete ["));
        assert!(r.contains("active tasks: 1 out of 2 tasks\n"));
        let mut t1 = tv(1, "n", "complete", "complete");
        t1.job_iteration = Some(1);
        let mut t2 = tv(2, "n", "complete", "complete");
        t2.job_iteration = Some(1);
        assert!(u.update(&[t0, t1, t2], &mut sink));
    }

    #[test]
    fn plain_sink_keeps_first_position_and_latest_text() {
        let mut s = PlainSink::default();
        s.set("a", "a: 1 ".into());
        s.set("b", "b: x".into());
        s.set("a", "a: 2".into());
        s.message("done".into());
        assert_eq!(s.render(), "a: 2\nb: x\ndone\n");
    }
}
