//! Simulated worker agents: fake nodes that "run" the tasks assigned to them.
//!
//! ```text
//!  every 40-120 ms (simulated), each agent:
//!    leader = the manager that leads (greatest (term, id)), once a read barrier confirms it
//!             has applied everything committed              none ─► try again later
//!    set    = Dispatcher::assignment_set(node)  on the leader's store
//!    for each task in set:
//!      desired running, not started here ─► start it: process up (state starting or running),
//!                                           or fail to start (failed, exit 1) now and then
//!      desired running, running here      ─► now and then it dies (failed, exit 137)
//!      desired shutdown or later          ─► stop the process (shutdown)
//!    tasks no longer in the set           ─► process killed, forgotten
//!    report every local state ahead of the stored one ─► Dispatcher::report (through Raft)
//!    node not ready in the store (or just reconnected)  ─► Dispatcher::heartbeat
//! ```
//!
//! A process is stopped *before* its stopped state is reported, as a real agent does, so the
//! stop-first guarantees of the orchestrator can be checked on [`Agents::checked_processes`].
//! Failures happen only while [`Agents::set_failing`] is on (the chaos phase).
//!
//! Outages: the fault schedule can cut an agent off ([`Agents::begin_outage`]); it stops acting
//! while its processes keep running, and [`mark_down`] does what the leader's dispatcher does
//! after missed heartbeats (node down, so the orchestrator replaces its tasks elsewhere). When
//! the agent is back it stops what it should, reports, then heartbeats (node ready again).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_api::dispatch::StatusUpdate;
use shoal_api::{NodeState, TaskState, TaskStatus};
use shoal_manager::dispatcher::Dispatcher;
use shoal_manager::orchestrator::wants_to_run;
use tokio::sync::watch;

use crate::clock::{Journal, SimClock};
use crate::cluster::Cluster;

/// What a task is doing on its agent.
#[derive(Clone, Debug)]
struct Local {
    state: TaskState,
    exit_code: Option<i64>,
    message: &'static str,
    service: String,
    slot: u64,
}

/// The agents' shared view: which processes run where, whether failures are injected, which
/// agents are cut off.
#[derive(Default)]
pub struct Agents {
    failing: AtomicBool,
    /// task id ─► (service id, slot, node)
    processes: Mutex<BTreeMap<String, (String, u64, String)>>,
    /// Nodes whose agent the fault schedule has cut off.
    outages: Mutex<BTreeSet<String>>,
    /// Processes that were running when their agent was cut off, with the end of their grace
    /// (None while the agent is still away): the orchestrator replaces a down node's tasks at
    /// once, so such a process may overlap its slot's replacement (as in swarmkit) until its
    /// agent is back and has caught up.
    survivors: Mutex<BTreeMap<String, (String, Option<tokio::time::Instant>)>>,
    /// Status reports that went through.
    pub reports: AtomicU64,
    /// Task failures injected.
    pub failures: AtomicU64,
}

impl Agents {
    /// Turns failure injection on or off.
    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, Ordering::Relaxed);
    }

    /// Every live process as `(task, service, slot)`.
    pub fn processes(&self) -> Vec<(String, String, u64)> {
        self.processes
            .lock()
            .map(|p| {
                p.iter()
                    .map(|(t, (s, slot, _))| (t.clone(), s.clone(), *slot))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every live process that counts for invariant (P): survivors of an agent outage are left
    /// out until their grace ends.
    pub fn checked_processes(&self) -> Vec<(String, String, u64)> {
        let now = tokio::time::Instant::now();
        let excused: BTreeSet<String> = self
            .survivors
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(_, (_, until))| until.is_none_or(|u| now < u))
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.processes()
            .into_iter()
            .filter(|(t, _, _)| !excused.contains(t))
            .collect()
    }

    /// Cuts the agent of `node` off (it stops acting; its processes keep running, and are
    /// excused from invariant (P) from now until their grace after the agent is back ends).
    pub fn begin_outage(&self, node: &str) {
        if let Ok(mut o) = self.outages.lock() {
            o.insert(node.to_string());
        }
        let running: Vec<String> = self
            .processes
            .lock()
            .map(|p| {
                p.iter()
                    .filter(|(_, (_, _, n))| n == node)
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(mut s) = self.survivors.lock() {
            for t in running {
                s.insert(t, (node.to_string(), None));
            }
        }
    }

    /// Lets the agent of `node` reconnect.
    pub fn end_outage(&self, node: &str) {
        if let Ok(mut o) = self.outages.lock() {
            o.remove(node);
        }
    }

    /// Ends every outage.
    pub fn end_all_outages(&self) {
        if let Ok(mut o) = self.outages.lock() {
            o.clear();
        }
    }

    /// Whether the agent of `node` is cut off.
    pub fn in_outage(&self, node: &str) -> bool {
        self.outages.lock().is_ok_and(|o| o.contains(node))
    }

    /// The agent of `node` is online and caught up: its outage survivors get 5 s of grace.
    fn came_back(&self, node: &str) {
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        if let Ok(mut s) = self.survivors.lock() {
            for (n, u) in s.values_mut() {
                if n == node && u.is_none() {
                    *u = Some(until);
                }
            }
        }
    }

    fn up(&self, task: &str, service: &str, slot: u64, node: &str) {
        if let Ok(mut p) = self.processes.lock() {
            p.insert(task.into(), (service.into(), slot, node.into()));
        }
    }

    fn down(&self, task: &str) {
        if let Ok(mut p) = self.processes.lock() {
            p.remove(task);
        }
        if let Ok(mut s) = self.survivors.lock() {
            s.remove(task);
        }
    }
}

/// Rates of injected failures.
#[derive(Clone, Copy, Debug)]
pub struct FailureRates {
    /// Chance per tick that a running task dies.
    pub crash: f64,
    /// Chance that a start fails.
    pub start: f64,
}

/// Runs the agent of node `node` until `stop` turns true.
#[allow(clippy::too_many_arguments)]
pub async fn run_agent(
    node: String,
    cluster: Arc<Cluster>,
    agents: Arc<Agents>,
    rates: FailureRates,
    seed: u64,
    clock: SimClock,
    journal: Journal,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut local: BTreeMap<String, Local> = BTreeMap::new();
    let mut away = false;
    loop {
        let pause = Duration::from_millis(rng.random_range(40..=120));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        if agents.in_outage(&node) {
            if !away {
                away = true;
                journal.note(format!("agent {node} cut off (its processes keep running)"));
            }
            continue;
        }
        let Some(leader) = cluster.leader() else {
            continue;
        };
        // A dispatcher serves only from a leader that has caught up with the log (a new
        // leader's store may not have applied everything committed yet).
        let caught_up = tokio::select! {
            r = leader.raft.read_barrier() => r.is_ok(),
            _ = stop.changed() => return,
        };
        // Cut off while waiting: act on nothing (what follows, up to the report, runs without
        // yielding, so an outage cannot begin half-way through starting processes).
        if !caught_up || agents.in_outage(&node) {
            continue;
        }
        let dispatcher = Dispatcher::new(leader.store.clone());
        let set = dispatcher.assignment_set(&node);
        let failing = agents.failing.load(Ordering::Relaxed);
        let mut seen = Vec::with_capacity(set.tasks.len());
        for a in &set.tasks {
            let t = &a.task;
            seen.push(t.id.clone());
            let wants = wants_to_run(t.desired_state);
            let entry = local.get(&t.id).cloned();
            let next = match entry {
                None if t.status.state.is_terminal() => None,
                None if !wants => Some((TaskState::Shutdown, None, "shut down before start")),
                None => {
                    if failing && rng.random_bool(rates.start) {
                        Some((TaskState::Failed, Some(1), "start failed"))
                    } else if rng.random_bool(0.3) {
                        Some((TaskState::Starting, None, "starting"))
                    } else {
                        Some((TaskState::Running, None, "running"))
                    }
                }
                Some(l) if l.state.is_terminal() => None,
                Some(_) if t.status.state.is_terminal() => {
                    // The store already ended it (rejected, orphaned): kill what runs here.
                    Some((t.status.state, None, "ended by the manager"))
                }
                Some(_) if !wants => Some((TaskState::Shutdown, Some(0), "shutdown")),
                Some(l) if l.state == TaskState::Starting => {
                    Some((TaskState::Running, None, "running"))
                }
                Some(_) if failing && rng.random_bool(rates.crash) => {
                    Some((TaskState::Failed, Some(137), "crashed"))
                }
                Some(_) => None,
            };
            if let Some((state, exit_code, message)) = next {
                if state.is_terminal() {
                    agents.down(&t.id);
                    if state == TaskState::Failed {
                        agents.failures.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    agents.up(&t.id, &t.service_id, t.slot, &node);
                }
                local.insert(
                    t.id.clone(),
                    Local {
                        state,
                        exit_code,
                        message,
                        service: t.service_id.clone(),
                        slot: t.slot,
                    },
                );
            }
        }
        // Tasks no longer assigned here: kill and forget.
        local.retain(|id, l| {
            let keep = seen.contains(id);
            if !keep && !l.state.is_terminal() {
                journal.note(format!(
                    "agent {node}: task {id} ({}.{}) unassigned while {}; killed",
                    l.service,
                    l.slot,
                    l.state.as_str()
                ));
                agents.down(id);
            }
            keep
        });
        let now = clock.now();
        let updates: Vec<StatusUpdate> = set
            .tasks
            .iter()
            .filter_map(|a| {
                let l = local.get(&a.task.id)?;
                (l.state > a.task.status.state).then(|| StatusUpdate {
                    task_id: a.task.id.clone(),
                    status: TaskStatus {
                        exit_code: l.exit_code,
                        ..TaskStatus {
                            timestamp: now,
                            ..TaskStatus::new(l.state, l.message)
                        }
                    },
                })
            })
            .collect();
        if !updates.is_empty() {
            let n = updates.len();
            let report = dispatcher.report(&node, updates);
            let res = tokio::select! {
                r = report => r,
                _ = stop.changed() => return,
            };
            match res {
                Ok(()) => {
                    agents.reports.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    journal.note(format!(
                        "agent {node}: report of {n} updates via manager {} failed: {e}",
                        leader.id
                    ));
                    continue;
                }
            }
        }
        // The heartbeat: brings the node back to ready if the managers marked it down. Sent
        // after this tick's stops were reported, as an agent catching up on reconnection would.
        let ready = leader.store.view(|s| {
            s.nodes
                .get(&node)
                .map(|n| n.status.state == NodeState::Ready)
        });
        if (ready == Some(false) || away) && !agents.in_outage(&node) {
            let beat = dispatcher.heartbeat(&node);
            let res = tokio::select! {
                r = beat => r,
                _ = stop.changed() => return,
            };
            match res {
                Ok(_) if away => {
                    away = false;
                    journal.note(format!("agent {node} reconnected"));
                }
                Ok(_) => {}
                Err(e) => {
                    journal.note(format!("agent {node}: heartbeat failed: {e}"));
                    continue;
                }
            }
        }
        if !agents.in_outage(&node) {
            agents.came_back(&node);
        }
    }
}

/// What the dispatcher on the leader does when a node misses its heartbeats: marks it down
/// (retried for a while through whichever manager leads; skipped if the agent is back).
pub async fn mark_down(cluster: Arc<Cluster>, agents: Arc<Agents>, node: String, journal: Journal) {
    for _ in 0..30 {
        if !agents.in_outage(&node) {
            return;
        }
        if let Some(l) = cluster.leader() {
            let res = l
                .store
                .update(|tx| {
                    if !agents.in_outage(&node) {
                        return Ok(());
                    }
                    match tx.get_node(&node) {
                        Some(mut n) if n.status.state == NodeState::Ready => {
                            n.status.state = NodeState::Down;
                            n.status.message = "heartbeat failure".into();
                            tx.update(shoal_api::Object::Node(n))
                        }
                        _ => Ok(()),
                    }
                })
                .await;
            if res.is_ok() {
                journal.note(format!("node {node} marked down (missed heartbeats)"));
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
