//! The manager loop: runs the orchestrators, allocator, scheduler and reaper over the store.
//!
//! ```text
//!            ┌──────────── store events (debounced 25 ms; `Lagged` just means re-plan)
//!            │  ┌───────── earliest next_wakeup of the last pass (restart delay, update delay,
//!            │  │           monitor period)
//!            │  │  ┌────── 1 s tick
//!            ▼  ▼  ▼
//!      guard.ready()      the store has every write to plan on (the Raft leader: read barrier,
//!            │            then its own log applied; see `guard`); not ready ─► no pass now
//!            ▼
//!   ┌─────────────────┐   each step: plan = f(store snapshot, now), then apply the intents in
//!   │   one pass      │   store transactions (≤ 1,000 intents each) that re-read every object
//!   │                 │
//!   │  orchestrators  │   replicated · global · jobs · restart supervisor · rolling update;
//!   │                 │   the tasks they create go through the allocator's gates and the
//!   │                 │   scheduler before they are written: created `assigned` (or `pending`
//!   │                 │   with the reason no node fits, or `new` while a gate holds them)
//!   │  allocator      │   new → pending (start gates, allocation hook)
//!   │  scheduler      │   pending → assigned + node, or Status.Err "no suitable node (...)"
//!   │  reaper         │   history limit, removed tasks, tasks of deleted services
//!   └─────────────────┘
//!            │ writes produce store events ──► another pass, which finds nothing to do
//!            ▼
//!   shutdown (watch channel turns true, or its sender is dropped) ──► return
//! ```
//!
//! The orchestrators run before the allocator and the scheduler so a task held at creation
//! (or created while no node fitted) is still placed in the same pass. Run this only on the
//! leader: the passes write.

use crate::guard::{NoGuard, PassGuard};
use crate::orchestrator::{self, Plan};
use crate::{allocator, reaper, scheduler};
use chrono::{DateTime, Utc};
use shoal_store::{Store, StoreError, StoreState};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Quiet time after a store event before planning, to batch bursts of changes.
pub const DEBOUNCE: Duration = Duration::from_millis(25);
/// Planning runs at least this often even without events.
pub const TICK: Duration = Duration::from_secs(1);
/// Intents per store transaction: bounds the size of a Raft entry (1,000 new tasks make
/// ~1.8 MB of JSON, ~30 KB once the store compressed it). Larger transactions mean fewer
/// round trips but larger transient buffers on the leader: in the cluster bench, 500 / 1,000
/// / 2,000 gave ~15k / ~20k / ~24k tasks/s and ~7.5 / ~9 / ~10.7 MB of leader RSS per
/// 1,000 tasks (docs/benchmarks.md).
pub const MAX_INTENTS_PER_TX: usize = 1_000;

/// Errors of a manager pass.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("writing the plan of the {step}: {source}")]
    Store {
        step: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("not planning yet: {0}")]
    NotReady(String),
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Objects written.
    pub writes: usize,
    /// When the pass wants to run again even if nothing changes.
    pub next_wakeup: Option<DateTime<Utc>>,
}

/// Runs the manager-side control loops over a store.
pub struct Manager {
    store: Store,
    guard: Arc<dyn PassGuard>,
}

type Planner = fn(&StoreState, DateTime<Utc>) -> Plan;

const STEPS: [(&str, Planner); 4] = [
    ("orchestrator", orchestrate),
    ("allocator", allocator::plan),
    ("scheduler", scheduler::plan),
    ("reaper", reaper::plan),
];

/// The orchestrators' plan, with the tasks it creates already carried through the allocator
/// and the scheduler ([`scheduler::place_created`]): one write per new task instead of three.
fn orchestrate(state: &StoreState, now: DateTime<Utc>) -> Plan {
    let mut plan = orchestrator::plan(state, now);
    scheduler::place_created(state, &mut plan, now);
    plan
}

impl Manager {
    /// A manager over a store of its own (no Raft): nothing to wait for before a pass.
    pub fn new(store: Store) -> Self {
        Self::with_guard(store, Arc::new(NoGuard))
    }

    /// A manager that awaits `guard` before every pass of [`Manager::run`] (and
    /// [`Manager::guarded_pass`]): the Raft leader's [`crate::guard::OwnLogGuard`].
    pub fn with_guard(store: Store, guard: Arc<dyn PassGuard>) -> Self {
        Manager { store, guard }
    }

    /// Awaits the guard, then runs one pass as of `now`. A guard that is not ready fails the
    /// pass with [`ManagerError::NotReady`] before anything is planned.
    pub async fn guarded_pass(&self, now: DateTime<Utc>) -> Result<PassReport, ManagerError> {
        self.guard.ready().await.map_err(ManagerError::NotReady)?;
        self.pass(now).await
    }

    /// Runs one pass as of `now`: every step plans on a fresh snapshot and writes its plan.
    /// The guard is not consulted (see [`Manager::guarded_pass`]).
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<PassReport, ManagerError> {
        let mut report = PassReport::default();
        for (step, planner) in STEPS {
            let plan = self.store.view(|s| planner(s, now));
            if let Some(t) = plan.next_wakeup {
                report.next_wakeup = Some(report.next_wakeup.map_or(t, |w| w.min(t)));
            }
            if plan.is_empty() {
                continue;
            }
            let mut writes = 0;
            let intents = plan.intents.len();
            // Chunk by chunk, each freed once written (a plan can create thousands of tasks).
            let mut rest = plan.intents;
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(MAX_INTENTS_PER_TX));
                let chunk = std::mem::replace(&mut rest, tail);
                writes += self
                    .store
                    .update(|tx| Ok::<_, StoreError>(orchestrator::apply_owned(tx, chunk)))
                    .await
                    .map_err(|source| ManagerError::Store { step, source })?;
            }
            tracing::debug!(step, intents, writes, "applied plan");
            report.writes += writes;
        }
        Ok(report)
    }

    /// Runs the loops until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut events = self.store.subscribe();
        tracing::info!("manager loops started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wake = match self.guarded_pass(Utc::now()).await {
                Ok(r) => r.next_wakeup,
                Err(e @ ManagerError::NotReady(_)) => {
                    tracing::debug!(error = %e, "manager pass skipped; retrying");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "manager pass failed; retrying");
                    None
                }
            };
            let mut sleep = TICK;
            if let Some(at) = wake {
                let until = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                sleep = sleep.min(until).max(Duration::from_millis(5));
            }
            tokio::select! {
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                r = events.recv() => match r {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        tokio::select! {
                            _ = tokio::time::sleep(DEBOUNCE) => {}
                            _ = shutdown.changed() => {}
                        }
                        drain(&mut events);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        tracing::info!("manager loops stopped");
    }
}

fn drain<T: Clone>(rx: &mut broadcast::Receiver<T>) {
    while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = rx.try_recv() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::restart::restart_count;
    use shoal_api::{
        engine, Cluster, Meta, Node, NodeRole, NodeState, NodeStatus, Object, ObjectKind, Service,
        Task, TaskState,
    };
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use tokio::task::JoinHandle;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            meta: Meta::new_now(),
            spec: engine::NodeSpec::default(),
            description: engine::NodeDescription {
                hostname: Some(id.into()),
                ..Default::default()
            },
            status: NodeStatus {
                state: NodeState::Ready,
                message: String::new(),
                addr: "127.0.0.1".into(),
            },
            role: NodeRole::Worker,
            manager_status: None,
            addr_port: String::new(),
            network_addresses: Default::default(),
        }
    }

    fn service(id: &str, replicas: i64) -> Service {
        Service {
            id: id.into(),
            meta: Meta::new_now(),
            spec: Box::new(engine::ServiceSpec {
                name: Some(id.into()),
                mode: Some(engine::ServiceSpecMode {
                    replicated: Some(engine::ServiceSpecModeReplicated {
                        replicas: Some(replicas),
                    }),
                    ..Default::default()
                }),
                task_template: Some(engine::TaskSpec {
                    container_spec: Some(engine::TaskSpecContainerSpec {
                        image: Some("busybox".into()),
                        ..Default::default()
                    }),
                    restart_policy: Some(engine::TaskSpecRestartPolicy {
                        delay: Some(10_000_000),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            previous_spec: None,
            spec_version: 1,
            endpoint: None,
            update_status: None,
            registry_auth: None,
            job_iteration: 0,
        }
    }

    /// What the fake agent does with a task it is given.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Behaviour {
        Run,
        Fail,
        Exit0,
    }

    #[derive(Default)]
    struct AgentLog {
        /// (task id, when the agent first saw it assigned)
        started: Vec<(String, Instant)>,
        /// (task id, when the agent failed or completed it)
        ended: Vec<(String, Instant)>,
    }

    struct Harness {
        store: Store,
        stop: watch::Sender<bool>,
        manager: JoinHandle<()>,
        agent: JoinHandle<()>,
        log: Arc<Mutex<AgentLog>>,
    }

    impl Harness {
        async fn new(nodes: &[&str], behaviour: fn(&Task) -> Behaviour) -> Harness {
            let store = Store::new();
            for n in nodes {
                create(&store, Object::Node(node(n))).await;
            }
            let (stop, rx) = watch::channel(false);
            let manager = tokio::spawn(Manager::new(store.clone()).run(rx.clone()));
            let log = Arc::new(Mutex::new(AgentLog::default()));
            let agent = tokio::spawn(fake_agent(store.clone(), rx, behaviour, log.clone()));
            Harness {
                store,
                stop,
                manager,
                agent,
                log,
            }
        }

        async fn wait(&self, what: &str, f: impl Fn(&StoreState) -> bool) {
            let start = Instant::now();
            while start.elapsed() < TIMEOUT {
                if self.store.view(&f) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let tasks = self.store.view(|s| {
                s.tasks
                    .values()
                    .map(|t| {
                        format!(
                            "{} slot={} node={:?} desired={} state={} v={} err={:?}",
                            t.id,
                            t.slot,
                            t.node_id,
                            t.desired_state,
                            t.status.state,
                            t.spec_version,
                            t.status.err
                        )
                    })
                    .collect::<Vec<_>>()
            });
            panic!("timed out waiting for {what}; tasks:\n{}", tasks.join("\n"));
        }

        async fn edit_service(&self, id: &str, f: impl FnOnce(&mut Service)) {
            let mut s = self
                .store
                .view(|st| st.services.get(id).cloned())
                .expect("service exists");
            f(&mut s);
            self.store
                .update(|tx| tx.update(Object::Service(s)))
                .await
                .expect("service update");
        }

        async fn edit_node(&self, id: &str, f: impl FnOnce(&mut Node)) {
            let mut n = self
                .store
                .view(|st| st.nodes.get(id).cloned())
                .expect("node exists");
            f(&mut n);
            self.store
                .update(|tx| tx.update(Object::Node(n)))
                .await
                .expect("node update");
        }

        async fn stop(self) {
            let _ = self.stop.send(true);
            let _ = tokio::time::timeout(TIMEOUT, self.manager).await;
            let _ = tokio::time::timeout(TIMEOUT, self.agent).await;
        }
    }

    async fn create(store: &Store, o: Object) {
        store.update(|tx| tx.create(o)).await.expect("create");
    }

    /// A stand-in for agents: runs what is assigned to its nodes, stops what should stop.
    async fn fake_agent(
        store: Store,
        mut stop: watch::Receiver<bool>,
        behaviour: fn(&Task) -> Behaviour,
        log: Arc<Mutex<AgentLog>>,
    ) {
        loop {
            if *stop.borrow() {
                return;
            }
            let work: Vec<Task> = store.view(|s| {
                s.tasks
                    .values()
                    .filter(|t| {
                        t.node_id.is_some()
                            && (TaskState::Assigned..=TaskState::Running).contains(&t.status.state)
                    })
                    .cloned()
                    .collect()
            });
            for t in work {
                let next = if t.desired_state >= TaskState::Shutdown {
                    Some((TaskState::Shutdown, None))
                } else if t.status.state < TaskState::Running {
                    if let Ok(mut l) = log.lock() {
                        l.started.push((t.id.clone(), Instant::now()));
                    }
                    match behaviour(&t) {
                        Behaviour::Run => Some((TaskState::Running, None)),
                        Behaviour::Fail => Some((TaskState::Failed, Some(1))),
                        Behaviour::Exit0 => Some((TaskState::Complete, Some(0))),
                    }
                } else {
                    None
                };
                let Some((state, exit)) = next else {
                    continue;
                };
                if matches!(state, TaskState::Failed | TaskState::Complete) {
                    if let Ok(mut l) = log.lock() {
                        l.ended.push((t.id.clone(), Instant::now()));
                    }
                }
                let id = t.id.clone();
                let _ = store
                    .update(|tx| {
                        let Some(mut cur) = tx.get_task(&id) else {
                            return Ok::<_, shoal_store::StoreError>(());
                        };
                        if !cur.status.state.can_move_to(state) {
                            return Ok(());
                        }
                        cur.status.state = state;
                        cur.status.exit_code = exit;
                        cur.status.timestamp = Utc::now();
                        cur.status.message = state.as_str().into();
                        tx.update(Object::Task(cur))
                    })
                    .await;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(3)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn running(s: &StoreState, service: &str) -> Vec<Task> {
        s.tasks_of_service(service)
            .filter(|t| {
                t.status.state == TaskState::Running && t.desired_state == TaskState::Running
            })
            .cloned()
            .collect()
    }

    fn per_node(tasks: &[Task]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for t in tasks {
            *m.entry(t.node_id.clone().unwrap_or_default()).or_default() += 1;
        }
        m
    }

    #[tokio::test]
    async fn three_replicas_converge_spread_over_two_nodes() {
        let h = Harness::new(&["a", "b"], |_| Behaviour::Run).await;
        create(&h.store, Object::Service(service("web", 3))).await;
        h.wait("3 running", |s| running(s, "web").len() == 3).await;
        let tasks = h.store.view(|s| running(s, "web"));
        let mut counts: Vec<usize> = per_node(&tasks).into_values().collect();
        counts.sort();
        assert_eq!(counts, vec![1, 2]);
        let mut slots: Vec<u64> = tasks.iter().map(|t| t.slot).collect();
        slots.sort();
        assert_eq!(slots, vec![1, 2, 3]);
        // Converged: a pass writes nothing.
        let m = Manager::new(h.store.clone());
        assert_eq!(m.pass(Utc::now()).await.map(|r| r.writes).ok(), Some(0));
        h.stop().await;
    }

    #[tokio::test]
    async fn scale_up_and_down() {
        let h = Harness::new(&["a", "b"], |_| Behaviour::Run).await;
        create(&h.store, Object::Service(service("web", 3))).await;
        h.wait("3 running", |s| running(s, "web").len() == 3).await;
        let set_replicas = |n: i64| {
            move |s: &mut Service| {
                s.spec.mode = Some(engine::ServiceSpecMode {
                    replicated: Some(engine::ServiceSpecModeReplicated { replicas: Some(n) }),
                    ..Default::default()
                });
                s.spec_version += 1;
            }
        };
        h.edit_service("web", set_replicas(5)).await;
        h.wait("5 running", |s| running(s, "web").len() == 5).await;
        let before: Vec<String> = h
            .store
            .view(|s| running(s, "web"))
            .iter()
            .map(|t| t.id.clone())
            .collect();
        h.edit_service("web", set_replicas(2)).await;
        h.wait("2 running, removed tasks deleted", |s| {
            running(s, "web").len() == 2 && s.tasks_of_service("web").count() == 2
        })
        .await;
        let after = h.store.view(|s| running(s, "web"));
        let mut slots: Vec<u64> = after.iter().map(|t| t.slot).collect();
        slots.sort();
        assert_eq!(slots, vec![1, 2], "the highest slots went");
        assert!(
            after.iter().all(|t| before.contains(&t.id)),
            "scaling does not restart tasks"
        );
        h.stop().await;
    }

    #[tokio::test]
    async fn failing_task_is_restarted_after_the_delay_and_history_is_capped() {
        let h = Harness::new(&["a"], |_| Behaviour::Fail).await;
        let mut c = Cluster {
            id: "cluster".into(),
            meta: Meta::new_now(),
            spec: engine::SwarmSpec::default(),
            worker_join_token: String::new(),
            manager_join_token: String::new(),
            root_ca_cert: String::new(),
            root_ca_key: String::new(),
            removed_nodes: Vec::new(),
            unlock_key: String::new(),
            default_addr_pool: vec![],
            subnet_size: 24,
            data_path_port: 4789,
        };
        c.spec.orchestration = Some(engine::SwarmSpecOrchestration {
            task_history_retention_limit: Some(3),
        });
        create(&h.store, Object::Cluster(c)).await;
        let mut s = service("crash", 1);
        if let Some(t) = s.spec.task_template.as_mut() {
            t.restart_policy = Some(engine::TaskSpecRestartPolicy {
                delay: Some(60_000_000), // 60 ms
                ..Default::default()
            });
        }
        create(&h.store, Object::Service(s)).await;
        let log = h.log.clone();
        let ended = move |_: &StoreState| log.lock().map(|l| l.ended.len() >= 5).unwrap_or(false);
        h.wait("5 failures", ended).await;
        h.wait("history capped at 3", |s| {
            s.tasks_of_service("crash").count() <= 3
        })
        .await;
        // Every restart waited for the delay after the failure it replaced.
        let (started, ended) = {
            let l = h.log.lock().expect("log");
            (l.started.clone(), l.ended.clone())
        };
        for (i, (_, failed_at)) in ended.iter().enumerate().take(4) {
            let Some((_, next_start)) = started.get(i + 1) else {
                continue;
            };
            let gap = next_start.duration_since(*failed_at);
            assert!(
                gap >= Duration::from_millis(50),
                "restart {i} after {gap:?}"
            );
        }
        let latest = h.store.view(|s| {
            s.tasks_of_service("crash")
                .max_by_key(|t| t.meta.created_at)
                .cloned()
        });
        assert!(latest.map(|t| restart_count(&t)).unwrap_or(0) >= 4);
        h.stop().await;
    }

    #[tokio::test]
    async fn restart_condition_none_leaves_the_slot_empty() {
        let h = Harness::new(&["a"], |_| Behaviour::Exit0).await;
        let mut s = service("once", 2);
        if let Some(t) = s.spec.task_template.as_mut() {
            t.restart_policy = Some(engine::TaskSpecRestartPolicy {
                condition: Some(engine::TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            });
        }
        create(&h.store, Object::Service(s)).await;
        h.wait("both complete and shut down", |s| {
            let t: Vec<&Task> = s.tasks_of_service("once").collect();
            t.len() == 2
                && t.iter().all(|t| {
                    t.status.state == TaskState::Complete && t.desired_state == TaskState::Shutdown
                })
        })
        .await;
        // A few more passes change nothing.
        let m = Manager::new(h.store.clone());
        for _ in 0..3 {
            assert_eq!(m.pass(Utc::now()).await.map(|r| r.writes).ok(), Some(0));
        }
        assert_eq!(h.store.view(|s| s.tasks_of_service("once").count()), 2);
        h.stop().await;
    }

    #[tokio::test]
    async fn drain_moves_tasks() {
        let h = Harness::new(&["a", "b"], |_| Behaviour::Run).await;
        create(&h.store, Object::Service(service("web", 4))).await;
        h.wait("4 running", |s| running(s, "web").len() == 4).await;
        h.edit_node("b", |n| {
            n.spec.availability = Some(engine::NodeSpecAvailabilityEnum::DRAIN)
        })
        .await;
        h.wait("4 running on a", |s| {
            let r = running(s, "web");
            r.len() == 4 && r.iter().all(|t| t.node_id.as_deref() == Some("a"))
        })
        .await;
        let on_b = h.store.view(|s| {
            s.tasks_on_node("b")
                .filter(|t| t.status.state.is_active_on_node())
                .count()
        });
        assert_eq!(on_b, 0);
        h.stop().await;
    }

    #[tokio::test]
    async fn node_down_tasks_are_replaced_elsewhere() {
        let h = Harness::new(&["a", "b"], |_| Behaviour::Run).await;
        create(&h.store, Object::Service(service("web", 2))).await;
        h.wait("2 running", |s| running(s, "web").len() == 2).await;
        h.edit_node("b", |n| n.status.state = NodeState::Down).await;
        h.wait("2 running on a", |s| {
            let r = running(s, "web");
            r.len() == 2 && r.iter().all(|t| t.node_id.as_deref() == Some("a"))
        })
        .await;
        h.stop().await;
    }

    #[tokio::test]
    async fn rolling_update_one_at_a_time() {
        let h = Harness::new(&["a", "b"], |_| Behaviour::Run).await;
        create(&h.store, Object::Service(service("web", 3))).await;
        h.wait("3 running", |s| running(s, "web").len() == 3).await;
        h.edit_service("web", |s| {
            s.previous_spec = Some(s.spec.clone());
            s.spec_version += 1;
            if let Some(t) = s.spec.task_template.as_mut() {
                if let Some(c) = t.container_spec.as_mut() {
                    c.env = Some(vec!["V=2".into()]);
                }
            }
            s.spec.update_config = Some(engine::ServiceSpecUpdateConfig {
                parallelism: Some(1),
                monitor: Some(1_000_000),
                ..Default::default()
            });
        })
        .await;
        // Watch it go: never fewer than 2 running (one slot at a time, stop-first).
        let start = Instant::now();
        let mut min_running = usize::MAX;
        let done = loop {
            let (n, done) = h.store.view(|s| {
                let r = running(s, "web");
                let all_new = r.len() == 3 && r.iter().all(|t| t.spec_version == 2);
                let completed = s.services["web"]
                    .update_status
                    .as_ref()
                    .and_then(|u| u.state)
                    == Some(engine::ServiceUpdateStatusStateEnum::COMPLETED);
                (r.len(), all_new && completed)
            });
            min_running = min_running.min(n);
            if done || start.elapsed() > TIMEOUT {
                break done;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        assert!(done, "update did not complete");
        assert!(
            min_running >= 2,
            "at most one slot down at a time, saw {min_running}"
        );
        let us = h
            .store
            .view(|s| s.services["web"].update_status.clone())
            .unwrap_or_default();
        assert_eq!(us.message.as_deref(), Some("update completed"));
        assert!(us.started_at.is_some() && us.completed_at.is_some());
        h.stop().await;
    }

    #[tokio::test]
    async fn deleted_service_tasks_go_away() {
        let h = Harness::new(&["a"], |_| Behaviour::Run).await;
        create(&h.store, Object::Service(service("web", 2))).await;
        h.wait("2 running", |s| running(s, "web").len() == 2).await;
        h.store
            .update(|tx| tx.delete(ObjectKind::Service, "web"))
            .await
            .expect("delete");
        h.wait("no tasks", |s| s.tasks.is_empty()).await;
        h.stop().await;
    }

    #[tokio::test]
    async fn global_service_follows_nodes() {
        let h = Harness::new(&["a", "b"], |_| Behaviour::Run).await;
        let mut s = service("agent", 1);
        s.spec.mode = Some(engine::ServiceSpecMode {
            global: Some(HashMap::new()),
            ..Default::default()
        });
        create(&h.store, Object::Service(s)).await;
        h.wait("one per node", |s| {
            let n = per_node(&running(s, "agent"));
            n.len() == 2 && n.values().all(|&c| c == 1)
        })
        .await;
        create(&h.store, Object::Node(node("c"))).await;
        h.wait("new node gets one", |s| {
            per_node(&running(s, "agent")).len() == 3
        })
        .await;
        h.edit_node("a", |n| {
            n.spec.availability = Some(engine::NodeSpecAvailabilityEnum::DRAIN)
        })
        .await;
        h.wait("drained node loses it", |s| {
            let n = per_node(&running(s, "agent"));
            n.len() == 2 && !n.contains_key("a")
        })
        .await;
        h.stop().await;
    }

    #[tokio::test]
    async fn unschedulable_task_stays_pending_with_the_reason() {
        let h = Harness::new(&["a"], |_| Behaviour::Run).await;
        let mut s = service("web", 1);
        if let Some(t) = s.spec.task_template.as_mut() {
            t.placement = Some(engine::TaskSpecPlacement {
                constraints: Some(vec!["node.role==manager".into()]),
                ..Default::default()
            });
        }
        create(&h.store, Object::Service(s)).await;
        h.wait("pending with error", |s| {
            s.tasks_of_service("web").any(|t| {
                t.status.state == TaskState::Pending
                    && t.status.err.as_deref()
                        == Some("no suitable node (scheduling constraints not satisfied on 1 node)")
            })
        })
        .await;
        h.stop().await;
    }

    #[tokio::test]
    async fn a_pass_writes_each_new_task_once_already_assigned() {
        let store = Store::new();
        for n in ["a", "b"] {
            create(&store, Object::Node(node(n))).await;
        }
        create(&store, Object::Service(service("web", 4))).await;
        let mut none_fits = service("mgr", 1);
        if let Some(t) = none_fits.spec.task_template.as_mut() {
            t.placement = Some(engine::TaskSpecPlacement {
                constraints: Some(vec!["node.role==manager".into()]),
                ..Default::default()
            });
        }
        create(&store, Object::Service(none_fits)).await;
        let m = Manager::new(store.clone());
        let r = m.pass(Utc::now()).await.expect("pass");
        assert_eq!(r.writes, 5, "one write per task");
        let web = store.view(|s| s.tasks_of_service("web").cloned().collect::<Vec<_>>());
        assert_eq!(web.len(), 4);
        assert!(web.iter().all(|t| t.status.state == TaskState::Assigned
            && t.status.message == scheduler::ASSIGNED_MESSAGE));
        let counts: Vec<usize> = per_node(&web).into_values().collect();
        assert_eq!(counts, vec![2, 2]);
        let mgr = store.view(|s| s.tasks_of_service("mgr").cloned().collect::<Vec<_>>());
        assert_eq!(mgr.len(), 1);
        assert_eq!(mgr[0].status.state, TaskState::Pending);
        assert_eq!(mgr[0].status.message, allocator::PENDING_MESSAGE);
        assert_eq!(
            mgr[0].status.err.as_deref(),
            Some("no suitable node (scheduling constraints not satisfied on 2 nodes)")
        );
        // Converged: the next pass writes nothing.
        assert_eq!(m.pass(Utc::now()).await.map(|r| r.writes).ok(), Some(0));
    }

    #[tokio::test]
    async fn a_task_created_assigned_to_a_node_deleted_since_is_not_written() {
        let store = Store::new();
        create(&store, Object::Node(node("a"))).await;
        let s = service("web", 1);
        create(&store, Object::Service(s.clone())).await;
        let plan = store.view(|st| orchestrate(st, Utc::now()));
        assert!(matches!(
            plan.intents.as_slice(),
            [orchestrator::Intent::CreateTask(t)] if t.status.state == TaskState::Assigned
        ));
        store
            .update(|tx| tx.delete(ObjectKind::Node, "a"))
            .await
            .expect("delete node");
        let writes = store
            .update(|tx| Ok::<_, StoreError>(orchestrator::apply(tx, &plan.intents)))
            .await
            .expect("apply");
        assert_eq!(writes, 0);
        assert_eq!(store.view(|st| st.tasks.len()), 0);
    }

    /// A guard that counts its calls and is ready only when told.
    #[derive(Default)]
    struct Gate {
        calls: std::sync::atomic::AtomicUsize,
        open: std::sync::atomic::AtomicBool,
    }

    impl PassGuard for Gate {
        fn ready(&self) -> futures::future::BoxFuture<'_, Result<(), String>> {
            use std::sync::atomic::Ordering;
            self.calls.fetch_add(1, Ordering::SeqCst);
            let open = self.open.load(Ordering::SeqCst);
            Box::pin(async move {
                if open {
                    Ok(())
                } else {
                    Err("own log not applied yet".into())
                }
            })
        }
    }

    #[tokio::test]
    async fn passes_wait_for_the_guard_and_plan_nothing_until_it_is_ready() {
        use std::sync::atomic::Ordering;
        let store = Store::new();
        create(&store, Object::Node(node("a"))).await;
        create(&store, Object::Service(service("web", 2))).await;
        let gate = Arc::new(Gate::default());
        let m = Manager::with_guard(store.clone(), gate.clone());
        let r = m.guarded_pass(Utc::now()).await;
        assert!(matches!(r, Err(ManagerError::NotReady(_))), "{r:?}");
        assert_eq!(store.view(|s| s.tasks.len()), 0, "nothing planned");

        // The loop keeps asking the guard, and plans once it is ready.
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(m.run(rx));
        let start = Instant::now();
        while gate.calls.load(Ordering::SeqCst) < 3 && start.elapsed() < TIMEOUT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(gate.calls.load(Ordering::SeqCst) >= 3, "the loop retries");
        assert_eq!(store.view(|s| s.tasks.len()), 0, "still nothing planned");
        gate.open.store(true, Ordering::SeqCst);
        // Any store event wakes the loop (it also ticks every second).
        create(&store, Object::Node(node("b"))).await;
        let start = Instant::now();
        while store.view(|s| s.tasks.len()) < 2 && start.elapsed() < TIMEOUT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(store.view(|s| s.tasks.len()), 2);
        let _ = stop.send(true);
        let _ = tokio::time::timeout(TIMEOUT, handle).await;
    }

    #[tokio::test]
    async fn shutdown_stops_the_loop() {
        let store = Store::new();
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(Manager::new(store).run(rx));
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.send(true).expect("send");
        let r = tokio::time::timeout(TIMEOUT, handle).await;
        assert!(r.is_ok(), "run returned after shutdown");
    }
}
