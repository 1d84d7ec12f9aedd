//! The driver of one run: boot, chaos, heal, settle, check.
//!
//! ```text
//!  run(seed, cfg)                       (its own current-thread runtime, clock paused)
//!   ├─ Cluster::start                   N managers, raft group initialized, leader elected
//!   ├─ bootstrap                        cluster object + worker nodes (ready) via the leader
//!   ├─ spawn: agents · client · fault schedule · monitor (invariants S, P every 25 ms)
//!   ├─ chaos for cfg.chaos              stop early at the first violation
//!   ├─ stop faults and the client; agents stop failing tasks, cut-off agents reconnect
//!   ├─ heal partitions, clear loss/latency, restart crashed managers
//!   ├─ settle                           until quiet (below) for 2 s, or cfg.settle_limit
//!   └─ final checks on every manager    (1) one leader per term (see TermLog) · (2) ledger
//!                                       · (3) same state · (4) replicas converged · agents
//!                                       run exactly those tasks
//!
//!  quiet: every manager up, all follow one leader in one term and applied its whole log, every
//!         node ready, no rolling update in progress, (4) holds on the leader, the agents run
//!         exactly the running tasks, and the log did not grow for the whole window.
//! ```

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::engine::{self, ServiceUpdateStatusStateEnum as U};
use shoal_api::{Meta, Node, NodeRole, NodeState, NodeStatus, Object};
use shoal_store::{StoreError, StoreState};
use tokio::sync::watch;

use crate::agent::{run_agent, Agents, FailureRates};
use crate::client::{run_client, Ledger};
use crate::clock::{Journal, SimClock};
use crate::cluster::{eventually, state_json, Cluster};
use crate::config::SimConfig;
use crate::faults::{self, run_faults};
use crate::invariants::{self, Violations};

/// What a successful run did.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Managers in the swarm.
    pub managers: u64,
    /// Simulated time the run covered.
    pub sim_time: Duration,
    /// Real time it took.
    pub real_time: Duration,
    /// Simulated time from the end of chaos until the swarm was quiet.
    pub settle_time: Duration,
    /// Fault episodes scheduled.
    pub episodes: usize,
    /// Manager crashes (each followed by a restart).
    pub crashes: u64,
    /// Terms in which a leader was seen.
    pub terms: usize,
    /// Terms in which two leaders were seen (possible with openraft's default leader ids; a
    /// violation of invariant (1) in strict mode).
    pub multi_leader_terms: Vec<String>,
    /// Known defects the run ran into (violations with `SHOAL_SIM_STRICT=1`).
    pub known_defects: Vec<String>,
    /// Client writes acknowledged, ambiguous, rejected.
    pub writes: (usize, usize, usize),
    /// Orchestration passes run, objects they wrote, passes that failed.
    pub passes: (u64, u64, u64),
    /// Task status updates the agents reported, task failures injected.
    pub agent: (u64, u64),
    /// Services and tasks in the final state.
    pub objects: (usize, usize),
    /// Last Raft log index of the final state.
    pub last_index: u64,
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} ({} managers): ok in {:.2?} real / {:.1?} simulated (settled in {:.1?}); \
             {} fault episodes, {} crashes, {} terms{}; writes {} acked / {} ambiguous / {} \
             rejected; {} passes wrote {} objects ({} failed); agents reported {} updates, {} \
             task failures; final: {} services, {} tasks, log index {}",
            self.seed,
            self.managers,
            self.real_time,
            self.sim_time,
            self.settle_time,
            self.episodes,
            self.crashes,
            self.terms,
            if self.multi_leader_terms.is_empty() && self.known_defects.is_empty() {
                String::new()
            } else {
                let all: Vec<&str> = self
                    .multi_leader_terms
                    .iter()
                    .chain(&self.known_defects)
                    .map(String::as_str)
                    .collect();
                format!(" (KNOWN DEFECTS HIT: {})", all.join("; "))
            },
            self.writes.0,
            self.writes.1,
            self.writes.2,
            self.passes.0,
            self.passes.1,
            self.passes.2,
            self.agent.0,
            self.agent.1,
            self.objects.0,
            self.objects.1,
            self.last_index
        )
    }
}

/// Why a run failed, with what is needed to reproduce and understand it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The seed: `SHOAL_SIM_SEED=<seed>` replays the same schedule.
    pub seed: u64,
    /// Managers in the swarm.
    pub managers: u64,
    /// The environment that selects the configuration ([`SimConfig::env`]).
    pub env: String,
    /// The violated invariant or what did not happen.
    pub reason: String,
    /// State dumps (tasks of the leader's store) at the time of failure.
    pub details: Vec<String>,
    /// The end of the run's journal.
    pub journal: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} ({}) FAILED: {}",
            self.seed, self.env, self.reason
        )?;
        writeln!(
            f,
            "reproduce with: SHOAL_SIM_SEED={} {} cargo test -p shoal-sim --test sim (add \
             SHOAL_SIM_TRACE=1 to print the journal live)",
            self.seed, self.env
        )?;
        if !self.details.is_empty() {
            writeln!(f, "--- state")?;
            for d in &self.details {
                writeln!(f, "{d}")?;
            }
        }
        writeln!(f, "--- journal (last {} lines)", self.journal.len())?;
        for l in &self.journal {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// Runs one simulation on its own current-thread runtime with a paused clock.
pub fn run(seed: u64, cfg: &SimConfig) -> Result<SimReport, SimFailure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| SimFailure {
            seed,
            managers: cfg.managers,
            env: cfg.env(),
            reason: format!("cannot build the runtime: {e}"),
            details: Vec::new(),
            journal: Vec::new(),
        })?;
    rt.block_on(run_paused(seed, cfg.clone()))
}

/// Runs one simulation on the current runtime, which must be a current-thread runtime whose
/// clock is paused (`#[tokio::test(start_paused = true)]`).
pub async fn run_paused(seed: u64, cfg: SimConfig) -> Result<SimReport, SimFailure> {
    init_tracing();
    let real = Instant::now();
    let clock = SimClock::new();
    let journal = Journal::new(clock.clone());
    let violations = Violations::default();
    journal.note(format!(
        "seed {seed}: {} managers, {} workers, chaos {:?}, {} profile, pass guard {:?}",
        cfg.managers, cfg.workers, cfg.chaos, cfg.profile, cfg.pass_guard
    ));
    let fail = |reason: String, details: Vec<String>| SimFailure {
        seed,
        managers: cfg.managers,
        env: cfg.env(),
        reason,
        details,
        journal: journal.tail(
            std::env::var("SHOAL_SIM_JOURNAL_LINES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(400),
        ),
    };

    let cluster = Cluster::start(
        &cfg,
        seed,
        clock.clone(),
        journal.clone(),
        violations.clone(),
    )
    .await
    .map_err(|e| fail(e, Vec::new()))?;
    let result = drive(seed, &cfg, &cluster, &clock, &journal, &violations, real).await;
    cluster.shutdown().await;
    result.map_err(|(reason, details)| fail(reason, details))
}

type Failed = (String, Vec<String>);

fn derive(seed: u64, stream: u64) -> u64 {
    // splitmix64 of (seed, stream): independent streams for each actor.
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    seed: u64,
    cfg: &SimConfig,
    cluster: &Arc<Cluster>,
    clock: &SimClock,
    journal: &Journal,
    violations: &Violations,
    real: Instant,
) -> Result<SimReport, Failed> {
    let plain = |r: String| (r, Vec::new());
    if !eventually(Duration::from_secs(20), Duration::from_millis(20), || {
        cluster.leader().is_some()
    })
    .await
    {
        return Err(plain("no leader was elected at start".into()));
    }
    bootstrap(cluster, cfg).await.map_err(plain)?;
    journal.note(format!(
        "bootstrapped: cluster + {} worker nodes",
        cfg.workers
    ));

    let agents = Arc::new(Agents::default());
    agents.set_failing(true);
    let (stop_all, stop_rx) = watch::channel(false);
    let mut background = Vec::new();
    for i in 0..cfg.workers {
        background.push(tokio::spawn(run_agent(
            worker_id(i),
            cluster.clone(),
            agents.clone(),
            FailureRates {
                crash: cfg.task_crash_rate,
                start: cfg.start_failure_rate,
            },
            derive(seed, 100 + i as u64),
            clock.clone(),
            journal.clone(),
            stop_rx.clone(),
        )));
    }
    background.push(tokio::spawn(monitor(
        cluster.clone(),
        agents.clone(),
        violations.clone(),
        journal.clone(),
        stop_rx.clone(),
    )));
    let ledger = Arc::new(Ledger::default());
    let (stop_chaos, chaos_rx) = watch::channel(false);
    let client = cfg.client_writes.then(|| {
        tokio::spawn(run_client(
            cluster.clone(),
            ledger.clone(),
            cfg.clone(),
            derive(seed, 2),
            clock.clone(),
            journal.clone(),
            chaos_rx.clone(),
        ))
    });
    let schedule = faults::plan(cfg, derive(seed, 1));
    let episodes = schedule.len();
    let faults = tokio::spawn(run_faults(
        cluster.clone(),
        agents.clone(),
        cfg.clone(),
        schedule,
        derive(seed, 3),
        journal.clone(),
        chaos_rx,
    ));

    // Chaos.
    let chaos_end = tokio::time::Instant::now() + cfg.chaos;
    let mut early = None;
    while tokio::time::Instant::now() < chaos_end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(v) = violations.first() {
            early = Some(v);
            break;
        }
    }
    let _ = stop_chaos.send(true);
    let _ = faults.await;
    if let Some(client) = client {
        let _ = tokio::time::timeout(Duration::from_secs(60), client).await;
    }
    agents.set_failing(false);
    agents.end_all_outages();
    if let Some(v) = early {
        let _ = stop_all.send(true);
        return Err((v, leader_tasks(cluster)));
    }

    // Heal.
    cluster.net().heal();
    cluster.net().clear_faults();
    for id in cluster.down() {
        cluster.open(id).await.map_err(plain)?;
    }
    journal.note("CHAOS OVER: partitions healed, loss and latency off, every manager up");
    let settle_start = tokio::time::Instant::now();
    let settled = settle(cluster, cfg, &agents, violations).await;
    let settle_time = settle_start.elapsed();
    let _ = stop_all.send(true);
    for h in background {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    if let Err(reason) = settled {
        return Err((reason, leader_tasks(cluster)));
    }
    journal.note(format!("settled after {settle_time:?}"));

    // Final checks on every manager.
    let lives = cluster.all_live();
    let leader = cluster
        .leader()
        .ok_or_else(|| plain("no leader after settling".into()))?;
    let reference: StoreState = leader.store.view(|s| s.clone());
    let reference_json = state_json(&leader.store);
    for l in &lives {
        let state = l.store.view(|s| s.clone());
        let ctx = |what: &str, e: String| {
            (
                format!("manager {}: {what}:\n{e}", l.id),
                invariants::describe_tasks(&state),
            )
        };
        ledger
            .check(&state)
            .map_err(|e| ctx("acknowledged writes (invariant 2)", e))?;
        invariants::replicas_converged(&state)
            .map_err(|e| ctx("replicas not converged (invariant 4)", e))?;
        invariants::at_most_one_running_per_slot(&state)
            .map_err(|e| ctx("slot running twice", e))?;
        invariants::service_names_unique(&state).map_err(|e| ctx("service names not unique", e))?;
        let mine = state_json(&l.store);
        if mine != reference_json {
            let differ = differences(&reference_json, &mine);
            return Err(ctx(
                "state differs from the leader's (invariant 3)",
                differ.join("\n"),
            ));
        }
    }
    invariants::processes_match(&reference, &agents.processes())
        .map_err(|e| (e, invariants::describe_tasks(&reference)))?;
    if let Some(v) = violations.first() {
        return Err((v, invariants::describe_tasks(&reference)));
    }
    let stats = cluster.stats();
    Ok(SimReport {
        seed,
        managers: cfg.managers,
        sim_time: clock.elapsed(),
        real_time: real.elapsed(),
        settle_time,
        episodes,
        crashes: stats.crashes.load(Ordering::Relaxed),
        terms: cluster.terms().terms(),
        multi_leader_terms: cluster.terms().anomalies(),
        known_defects: violations.known_hits(),
        writes: ledger.counts(),
        passes: (
            stats.passes.load(Ordering::Relaxed),
            stats.pass_writes.load(Ordering::Relaxed),
            stats.pass_errors.load(Ordering::Relaxed),
        ),
        agent: (
            agents.reports.load(Ordering::Relaxed),
            agents.failures.load(Ordering::Relaxed),
        ),
        objects: (reference.services.len(), reference.tasks.len()),
        last_index: reference.last_index,
    })
}

/// The node id of worker `i` (0-based).
pub fn worker_id(i: usize) -> String {
    format!("worker-{}", i + 1)
}

/// The cluster object and the worker nodes, written through the leader (retried until a
/// leader takes them).
pub async fn bootstrap(cluster: &Cluster, cfg: &SimConfig) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        if let Some(l) = cluster.leader() {
            let res = l
                .store
                .update(|tx| {
                    if tx.get_cluster().is_none() {
                        tx.create(Object::Cluster(sim_cluster()))?;
                    }
                    for i in 0..cfg.workers {
                        if tx.get_node(&worker_id(i)).is_none() {
                            tx.create(Object::Node(worker(i)))?;
                        }
                    }
                    Ok::<_, StoreError>(())
                })
                .await;
            match res {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "could not create the cluster and worker nodes: {last}"
    ))
}

/// Built through serde so fields other crates add (with `#[serde(default)]`) need no change here.
fn sim_cluster() -> shoal_api::Cluster {
    let v = serde_json::json!({
        "id": "sim-cluster",
        "meta": Meta::new_now(),
        "spec": engine::SwarmSpec::default(),
        "worker_join_token": "",
        "manager_join_token": "",
        "default_addr_pool": ["10.0.0.0/8"],
        "subnet_size": 24,
        "data_path_port": 4789,
    });
    serde_json::from_value(v).expect("a cluster object")
}

/// A ready worker node (through serde, as [`sim_cluster`]).
fn worker(i: usize) -> Node {
    let id = worker_id(i);
    let v = serde_json::json!({
        "id": id,
        "meta": Meta::new_now(),
        "spec": engine::NodeSpec {
            role: Some(engine::NodeSpecRoleEnum::WORKER),
            availability: Some(engine::NodeSpecAvailabilityEnum::ACTIVE),
            ..Default::default()
        },
        "description": engine::NodeDescription {
            hostname: Some(id.clone()),
            ..Default::default()
        },
        "status": NodeStatus {
            state: NodeState::Ready,
            message: String::new(),
            addr: format!("10.99.0.{}", i + 1),
        },
        "role": NodeRole::Worker,
        "manager_status": null,
    });
    serde_json::from_value(v).expect("a node object")
}

/// Invariants (S) and (P), checked every 25 ms on every manager's store and on the agents.
async fn monitor(
    cluster: Arc<Cluster>,
    agents: Arc<Agents>,
    violations: Violations,
    journal: Journal,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(25)) => {}
            _ = stop.changed() => return,
        }
        let mut found = None;
        for l in cluster.all_live() {
            if let Err(e) = l.store.view(invariants::at_most_one_running_per_slot) {
                found = Some(format!(
                    "manager {}'s store (index {}): {e}",
                    l.id,
                    l.store.view(|s| s.last_index)
                ));
                break;
            }
        }
        if found.is_none() {
            if let Some(l) = cluster.leader() {
                let procs = agents.checked_processes();
                if let Err(e) = l
                    .store
                    .view(|s| invariants::at_most_one_process_per_slot(s, &procs))
                {
                    found = Some(format!("agents: {e}"));
                }
            }
        }
        if let Some(v) = found {
            journal.note(format!("VIOLATION {v}"));
            violations.report(v);
            return;
        }
    }
}

/// Waits until the swarm is quiet (see the module docs) for a 2 s window.
async fn settle(
    cluster: &Cluster,
    cfg: &SimConfig,
    agents: &Agents,
    violations: &Violations,
) -> Result<(), String> {
    let window = Duration::from_secs(2);
    let deadline = tokio::time::Instant::now() + cfg.settle_limit;
    let mut stable: Option<(u64, tokio::time::Instant)> = None;
    let mut why = String::from("not checked yet");
    loop {
        if let Some(v) = violations.first() {
            return Err(v);
        }
        let now = tokio::time::Instant::now();
        match quiet(cluster, agents) {
            Ok(index) => match stable {
                Some((i, since)) if i == index => {
                    if now - since >= window {
                        return Ok(());
                    }
                }
                _ => stable = Some((index, now)),
            },
            Err(e) => {
                why = e;
                stable = None;
            }
        }
        if now >= deadline {
            return Err(format!(
                "the swarm did not settle within {:?} after healing: {why}",
                cfg.settle_limit
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the swarm is quiet now; the leader's last log index if so.
fn quiet(cluster: &Cluster, agents: &Agents) -> Result<u64, String> {
    let down = cluster.down();
    if !down.is_empty() {
        return Err(format!("managers {down:?} are down"));
    }
    let leader = cluster.leader().ok_or("no leader")?;
    let lm = leader.raft.metrics();
    for l in cluster.all_live() {
        let m = l.raft.metrics();
        if m.leader != Some(leader.id) || m.term != lm.term {
            return Err(format!(
                "manager {} follows {:?} in term {} (leader {} is in term {})",
                l.id, m.leader, m.term, leader.id, lm.term
            ));
        }
        if m.last_applied != lm.last_log {
            return Err(format!(
                "manager {} applied {:?} of the leader's {:?}",
                l.id, m.last_applied, lm.last_log
            ));
        }
    }
    leader.store.view(|s| {
        if let Some(n) = s.nodes.values().find(|n| !n.is_ready()) {
            return Err(format!("node {} is {}", n.id, n.status.state.as_str()));
        }
        if let Some(svc) = s.services.values().find(|svc| {
            svc.update_status
                .as_ref()
                .and_then(|u| u.state)
                .is_some_and(|st| matches!(st, U::UPDATING | U::ROLLBACK_STARTED))
        }) {
            return Err(format!("service {} is still updating", svc.name()));
        }
        invariants::replicas_converged(s)?;
        invariants::processes_match(s, &agents.processes())
    })?;
    Ok(lm.last_log.unwrap_or(0))
}

fn leader_tasks(cluster: &Cluster) -> Vec<String> {
    let l = cluster
        .leader()
        .or_else(|| cluster.all_live().into_iter().next());
    match l {
        Some(l) => {
            let mut out = vec![format!("tasks in manager {}'s store:", l.id)];
            out.extend(l.store.view(invariants::describe_tasks));
            out
        }
        None => Vec::new(),
    }
}

/// Where two states differ: one entry per differing top-level field (the first differing path
/// inside it).
fn differences(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut out = Vec::new();
            for (k, va) in x {
                match y.get(k) {
                    None => out.push(format!("{k}: missing on this manager")),
                    Some(vb) if vb != va => out.push(format!("{k}.{}", first_difference(va, vb))),
                    _ => {}
                }
            }
            out.extend(
                y.keys()
                    .filter(|k| !x.contains_key(*k))
                    .map(|k| format!("{k}: only on this manager")),
            );
            out
        }
        _ => vec![first_difference(a, b)],
    }
}

/// The first path at which two JSON documents differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> String {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    None => return format!("{k}: missing on this manager"),
                    Some(vb) if vb != va => return format!("{k}.{}", first_difference(va, vb)),
                    _ => {}
                }
            }
            match y.keys().find(|k| !x.contains_key(*k)) {
                Some(k) => format!("{k}: only on this manager"),
                None => "(equal)".into(),
            }
        }
        _ => format!("leader has {a}, this manager has {b}"),
    }
}

fn init_tracing() {
    if let Ok(filter) = std::env::var("SHOAL_SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}
