//! The managers: N [`RaftNode`]s over one [`LocalTransport`], each with its own [`Store`] as
//! state machine, its own redb directory, and the two loops a manager runs.
//!
//! ```text
//!            LocalTransport (partitions, loss, latency)
//!       ┌──────────────┬──────────────┬──────────────┐
//!   ┌───┴────┐     ┌───┴────┐     ┌───┴────┐
//!   │ seat 1 │     │ seat 2 │     │ seat 3 │   seat = directory + (when up) a live incarnation:
//!   └────────┘     └────────┘     └────────┘     RaftNode + Store (StoreTarget / SimProposer)
//!                                                 ├─ metrics watcher ─► TermLog (invariant 1);
//!                                                 │   a Raft node that stops on its own is a
//!                                                 │   violation (RaftNode restarts a core that
//!                                                 │   quits by itself; journaled)
//!                                                 └─ role loop: when Leader, every pass_interval:
//!                                                      Manager::guarded_pass(sim now): the
//!                                                      daemon's guard (read_barrier ─► own log
//!                                                      applied) ─► the pass
//!
//!  crash(id):   unregister from the network, stop the loops, RaftNode::shutdown, drop the store
//!  restart(id): new empty Store ─► RaftNode::open(same dir): snapshot restore + log replay
//!               ─► check it has at least what it had applied before the crash, and exactly
//!                  the same state when it recovered up to the same index (invariant R)
//! ```
//!
//! A crash here is a stop without warning: nothing is flushed beyond what each redb commit
//! already made durable, and in-flight proposals fail as they would on a dead process. (The
//! redb file must be closed before it can be reopened in the same process, so the node is shut
//! down rather than leaked.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_manager::guard::OwnLogGuard;
use shoal_manager::manager::Manager;
use shoal_raft::openraft::{BasicNode, ServerState};
use shoal_raft::{LocalTransport, RaftConfig, RaftNode, RaftRole};
use shoal_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{Journal, SimClock};
use crate::config::{PassGuard, SimConfig};
use crate::glue::{SimLog, SimProposer, StoreTarget};
use crate::invariants::{TermLog, Violations};

/// A manager that is up: its Raft node and its store.
#[derive(Clone)]
pub struct Live {
    /// Its id (1-based).
    pub id: u64,
    /// Its Raft node.
    pub raft: RaftNode,
    /// Its store (the Raft state machine's target).
    pub store: Store,
}

struct Seat {
    dir: PathBuf,
    live: Option<Live>,
    stop: Option<watch::Sender<bool>>,
    handles: Vec<JoinHandle<()>>,
    /// The store's last applied index and state when the manager last crashed.
    applied_at_crash: Option<(u64, serde_json::Value)>,
}

/// Counters of a run.
#[derive(Debug, Default)]
pub struct Stats {
    /// Orchestration passes that completed.
    pub passes: AtomicU64,
    /// Objects those passes wrote.
    pub pass_writes: AtomicU64,
    /// Passes that failed (lost leadership, no quorum).
    pub pass_errors: AtomicU64,
    /// Manager crashes.
    pub crashes: AtomicU64,
}

/// The managers of a simulated swarm.
pub struct Cluster {
    cfg: SimConfig,
    net: LocalTransport,
    _root: tempfile::TempDir,
    seats: Mutex<Vec<Seat>>,
    clock: SimClock,
    journal: Journal,
    terms: TermLog,
    violations: Violations,
    stats: Arc<Stats>,
}

impl Cluster {
    /// Opens `cfg.managers` managers and forms the Raft group (the election follows).
    pub async fn start(
        cfg: &SimConfig,
        seed: u64,
        clock: SimClock,
        journal: Journal,
        violations: Violations,
    ) -> Result<Arc<Cluster>, String> {
        let root = temp_root().map_err(|e| format!("creating the simulation directory: {e}"))?;
        let net = LocalTransport::new();
        net.seed(seed ^ 0x6e65_7477_6f72_6b00);
        let seats = (1..=cfg.managers)
            .map(|id| {
                let dir = root.path().join(format!("manager-{id}"));
                std::fs::create_dir_all(&dir).map(|()| Seat {
                    dir,
                    live: None,
                    stop: None,
                    handles: Vec::new(),
                    applied_at_crash: None,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("creating a manager directory: {e}"))?;
        let cluster = Arc::new(Cluster {
            cfg: cfg.clone(),
            net,
            _root: root,
            seats: Mutex::new(seats),
            clock,
            journal,
            terms: TermLog::for_build(),
            violations,
            stats: Arc::default(),
        });
        for id in 1..=cfg.managers {
            cluster.open(id).await?;
        }
        let members: BTreeMap<u64, BasicNode> = (1..=cfg.managers)
            .map(|id| {
                (
                    id,
                    BasicNode {
                        addr: format!("manager-{id}"),
                    },
                )
            })
            .collect();
        let first = cluster.live(1).ok_or("manager 1 is not up")?;
        first
            .raft
            .raft()
            .initialize(members)
            .await
            .map_err(|e| format!("initializing the raft group: {e}"))?;
        cluster.journal.note(format!(
            "raft group of {} managers initialized",
            cfg.managers
        ));
        Ok(cluster)
    }

    /// The in-process network.
    pub fn net(&self) -> &LocalTransport {
        &self.net
    }

    /// Run counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Where invariant violations go.
    pub fn violations(&self) -> &Violations {
        &self.violations
    }

    /// The (term, leader) observations.
    pub fn terms(&self) -> &TermLog {
        &self.terms
    }

    /// Manager ids.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.cfg.managers).collect()
    }

    fn seats(&self) -> std::sync::MutexGuard<'_, Vec<Seat>> {
        self.seats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Manager `id`, if it is up.
    pub fn live(&self, id: u64) -> Option<Live> {
        self.seats()
            .get(id.checked_sub(1)? as usize)
            .and_then(|s| s.live.clone())
    }

    /// Every manager that is up.
    pub fn all_live(&self) -> Vec<Live> {
        self.seats().iter().filter_map(|s| s.live.clone()).collect()
    }

    /// Ids of the managers that are down.
    pub fn down(&self) -> Vec<u64> {
        self.seats()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live.is_none())
            .map(|(i, _)| i as u64 + 1)
            .collect()
    }

    /// The manager a client or an agent would end up talking to: of the managers that are up
    /// and believe they lead, the one with the greatest leader id `(term, node id)` (openraft's
    /// order: two leaders in one term are possible, the higher node id supersedes).
    pub fn leader(&self) -> Option<Live> {
        self.all_live()
            .into_iter()
            .map(|l| (l.raft.metrics(), l))
            .filter(|(m, _)| m.role == RaftRole::Leader)
            .max_by_key(|(m, l)| (m.term, l.id))
            .map(|(_, l)| l)
    }

    /// Brings manager `id` up from its directory (first start or restart).
    pub async fn open(self: &Arc<Self>, id: u64) -> Result<(), String> {
        let dir = {
            let seats = self.seats();
            let seat = &seats[(id - 1) as usize];
            if seat.live.is_some() {
                return Ok(());
            }
            seat.dir.clone()
        };
        let store = Store::new();
        let cfg = RaftConfig {
            node_id: id,
            addr: format!("manager-{id}"),
            ..self.cfg.raft.clone()
        };
        let raft = RaftNode::open(
            &dir,
            cfg,
            Arc::new(StoreTarget(store.clone())),
            Arc::new(self.net.for_node(id)),
        )
        .await
        .map_err(|e| format!("opening manager {id}: {e}"))?;
        store.set_proposer(Some(Arc::new(SimProposer {
            node: raft.clone(),
            forward: self.cfg.forwarding,
            daemon_rejections: self.cfg.daemon_rejections,
        })));
        let live = Live {
            id,
            raft: raft.clone(),
            store: store.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let handles = vec![
            tokio::spawn(watch_metrics(
                raft.clone(),
                self.terms.clone(),
                self.violations.clone(),
                self.journal.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(role_loop(
                live.clone(),
                self.cfg.clone(),
                self.clock.clone(),
                self.journal.clone(),
                self.stats.clone(),
                stop_rx,
            )),
        ];
        let before = {
            let mut seats = self.seats();
            let seat = &mut seats[(id - 1) as usize];
            seat.live = Some(live);
            seat.stop = Some(stop);
            seat.handles = handles;
            seat.applied_at_crash.take()
        };
        self.net.register(&raft);
        let recovered = store.view(|s| s.last_index);
        match before {
            Some((b, state)) => {
                self.journal.note(format!(
                    "manager {id} restarted: store recovered up to index {recovered} \
                     (had applied {b} before the crash)"
                ));
                if recovered < b {
                    self.violations.report(format!(
                        "manager {id} lost applied state in a restart: it had applied index {b} \
                         before the crash but recovered only up to {recovered} from its log and \
                         snapshot"
                    ));
                } else if recovered == b && state_json(&store) != state {
                    self.violations.report(format!(
                        "manager {id} recovered a different state at index {b} than it had \
                         before the crash"
                    ));
                }
            }
            None => self.journal.note(format!("manager {id} up")),
        }
        Ok(())
    }

    /// Stops manager `id` without warning (see the module docs).
    pub async fn crash(&self, id: u64) {
        let (live, stop, handles) = {
            let mut seats = self.seats();
            let seat = &mut seats[(id - 1) as usize];
            let Some(live) = seat.live.take() else {
                return;
            };
            seat.applied_at_crash =
                Some((live.store.view(|s| s.last_index), state_json(&live.store)));
            (live, seat.stop.take(), std::mem::take(&mut seat.handles))
        };
        self.stats.crashes.fetch_add(1, Ordering::Relaxed);
        self.net.unregister(id);
        if let Some(stop) = stop {
            let _ = stop.send(true);
        }
        let m = live.raft.metrics();
        self.journal.note(format!(
            "CRASH manager {id} (was {:?} in term {}, applied {:?})",
            m.role, m.term, m.last_applied
        ));
        if let Err(e) = live.raft.shutdown().await {
            self.violations
                .report(format!("manager {id} could not be stopped: {e}"));
        }
        for h in handles {
            h.abort();
        }
    }

    /// Stops every manager (end of run).
    pub async fn shutdown(&self) {
        for id in self.ids() {
            let (live, stop, handles) = {
                let mut seats = self.seats();
                let seat = &mut seats[(id - 1) as usize];
                (
                    seat.live.take(),
                    seat.stop.take(),
                    std::mem::take(&mut seat.handles),
                )
            };
            if let Some(stop) = stop {
                let _ = stop.send(true);
            }
            for h in handles {
                h.abort();
            }
            if let Some(live) = live {
                self.net.unregister(id);
                let _ = live.raft.shutdown().await;
            }
        }
    }
}

/// The store's state as JSON (maps compare regardless of the order they were serialized in).
pub fn state_json(store: &Store) -> serde_json::Value {
    serde_json::from_slice(&store.snapshot_bytes()).unwrap_or(serde_json::Value::Null)
}

/// The directory the managers' redb files live in: under `SHOAL_SIM_DIR`, else `/dev/shm`
/// (a tmpfs: fsync is free) when it is there, else the system temporary directory.
fn temp_root() -> std::io::Result<tempfile::TempDir> {
    let base = std::env::var_os("SHOAL_SIM_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            shm.is_dir().then_some(shm)
        });
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("shoal-sim-");
        b
    };
    match base {
        Some(dir) => builder.tempdir_in(&dir).or_else(|_| builder.tempdir()),
        None => builder.tempdir(),
    }
}

/// Records every (term, leader) this node's metrics show (invariant 1), journals role and
/// term changes and restarts of the Raft core (`RaftNode` restarts a core that quits by itself),
/// and reports a Raft node that stops without being asked (a fatal error) as a violation.
async fn watch_metrics(
    raft: RaftNode,
    terms: TermLog,
    violations: Violations,
    journal: Journal,
    mut stop: watch::Receiver<bool>,
) {
    let mut rx = raft.watch();
    let mut last = None;
    let mut restarts = 0;
    loop {
        let (id, term, state, leader, fatal) = {
            let m = rx.borrow_and_update();
            let fatal = m.running_state.as_ref().err().map(|e| e.to_string());
            (m.id, m.current_term, m.state, m.current_leader, fatal)
        };
        // The harness stops a node only after telling this watcher (crash, end of run).
        if let Some(fatal) = fatal.filter(|_| !*stop.borrow()) {
            let v = format!("manager {id}'s Raft stopped by itself: {fatal}");
            journal.note(format!("VIOLATION {v}"));
            violations.report(v);
            return;
        }
        if raft.restarts() != restarts {
            restarts = raft.restarts();
            journal.note(format!(
                "manager {id}: its Raft core stopped by itself and was restarted \
                 ({restarts} so far)"
            ));
        }
        let mut claims = Vec::new();
        if state == ServerState::Leader {
            claims.push(id);
        }
        claims.extend(leader);
        for l in claims {
            if let Some(v) = terms.observe(term, l, id) {
                if terms.is_lenient() {
                    journal.note(format!(
                        "ANOMALY {v} (openraft orders leaders by (term, node id))"
                    ));
                } else {
                    journal.note(format!("VIOLATION {v}"));
                    violations.report(v);
                }
            }
        }
        if last != Some((term, state, leader)) {
            journal.note(format!(
                "manager {id}: term {term} {state:?}, leader {leader:?}"
            ));
            last = Some((term, state, leader));
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// What a manager runs besides Raft: when it leads, an orchestration pass every
/// `pass_interval`, each after the configured [`PassGuard`] (by default: a read barrier, so a
/// new leader plans on everything committed, then its own log applied, so a proposal of an
/// earlier pass that timed out but may still commit is not planned twice).
async fn role_loop(
    me: Live,
    cfg: SimConfig,
    clock: SimClock,
    journal: Journal,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    // `OwnLog` is the daemon's leader guard (shoal-manager's `OwnLogGuard`); the weaker
    // guards are done here, before an unguarded pass.
    let manager = match cfg.pass_guard {
        PassGuard::OwnLog => Manager::with_guard(
            me.store.clone(),
            OwnLogGuard::shared(SimLog {
                node: me.raft.clone(),
                wait: Duration::from_millis(cfg.raft.propose_timeout_ms),
            }),
        ),
        PassGuard::ReadBarrier | PassGuard::None => Manager::new(me.store.clone()),
    };
    let mut leading = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.pass_interval) => {}
            _ = stop.changed() => return,
        }
        let m = me.raft.metrics();
        if m.role != RaftRole::Leader {
            leading = false;
            continue;
        }
        if !leading {
            journal.note(format!(
                "manager {} leads term {}: runs the orchestrators",
                me.id, m.term
            ));
            leading = true;
        }
        let pass = async {
            if cfg.pass_guard == PassGuard::ReadBarrier {
                me.raft
                    .read_barrier()
                    .await
                    .map_err(|e| format!("read barrier: {e}"))?;
            }
            manager
                .guarded_pass(clock.now())
                .await
                .map_err(|e| e.to_string())
        };
        let res = tokio::select! {
            r = pass => r,
            _ = stop.changed() => return,
        };
        match res {
            Ok(r) => {
                stats.passes.fetch_add(1, Ordering::Relaxed);
                stats
                    .pass_writes
                    .fetch_add(r.writes as u64, Ordering::Relaxed);
            }
            Err(e) => {
                stats.pass_errors.fetch_add(1, Ordering::Relaxed);
                journal.note(format!("manager {}: pass failed: {e}", me.id));
            }
        }
    }
}

/// Waits (simulated time) until `f` holds, polling every `every`; false on timeout.
pub async fn eventually(limit: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}
