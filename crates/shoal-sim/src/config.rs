//! [`SimConfig`]: the size of the simulated swarm, how long each phase lasts and how hostile the
//! fault schedule is.
//!
//! ```text
//!  0 ─── boot ───┬──────────── chaos (faults + client writes + agent failures) ────────────┐
//!                │ leader elected, cluster + worker nodes created                          │
//!                                                                                           ▼
//!                      heal every partition, clear loss/delay, restart crashed managers, stop
//!                      client writes and agent failures ─── settle (≤ settle_limit) ──► checks
//! ```
//!
//! All durations are simulated time (a paused tokio clock); they cost real time only through
//! the work done in them.

use std::time::Duration;

use shoal_raft::RaftConfig;

/// What the leader waits for before an orchestration pass plans on its store.
///
/// ```text
///  None         plan on whatever the store has applied
///  ReadBarrier  Raft read barrier: leadership confirmed by a quorum, everything committed
///               when it was called is applied
///  OwnLog       ReadBarrier, then wait until everything in the leader's own log is applied,
///               including its earlier proposals that timed out but may still commit
/// ```
///
/// Without a barrier, a new leader may plan before it has applied its predecessor's last
/// writes (it learns they are committed only once an entry of its own term commits). And a
/// pass whose write timed out (no quorum in time) leaves its entry in the leader's log; if the
/// leader keeps its leadership the entry commits later, and planning again before it is applied
/// repeats what it did, with fresh task IDs. Either way: two tasks for one slot. A read barrier
/// rules out the first, only `OwnLog` both; it is the default, `SHOAL_SIM_GUARD=read|none`
/// picks the others (`None` is what the daemon's `leadership.rs` does: `Manager::run` as soon
/// as this manager leads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassGuard {
    /// No wait.
    None,
    /// A read barrier.
    ReadBarrier,
    /// A read barrier, then the leader's own log applied: the daemon's leader guard
    /// (`shoal_manager::guard::OwnLogGuard`), which the leader loop runs.
    OwnLog,
}

impl PassGuard {
    /// `SHOAL_SIM_GUARD`: `none`, `read` or `own-log`.
    pub fn from_env() -> Option<PassGuard> {
        match std::env::var("SHOAL_SIM_GUARD").ok()?.as_str() {
            "none" => Some(PassGuard::None),
            "read" => Some(PassGuard::ReadBarrier),
            "own-log" => Some(PassGuard::OwnLog),
            _ => None,
        }
    }
}

/// How one simulation run is shaped. Everything random in it comes from the run's seed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The profile's name (`default`, `hostile`), shown in failure reports.
    pub profile: &'static str,
    /// Number of managers (Raft voters), e.g. 3 or 5.
    pub managers: u64,
    /// Number of simulated worker agents (fake nodes created in the store as ready).
    pub workers: usize,
    /// Length of the chaos phase (faults, client writes, task failures).
    pub chaos: Duration,
    /// How long the swarm may take to converge after healing before the run fails.
    pub settle_limit: Duration,
    /// Crash and restart managers (reopen from their redb directory).
    pub crashes: bool,
    /// Partitions: isolated nodes, cut links, split groups.
    pub partitions: bool,
    /// Message loss and latency in the Raft transport.
    pub network_faults: bool,
    /// Worker agents cut off for a while (their nodes marked down, tasks replaced).
    pub worker_outages: bool,
    /// Client writes (create, scale, update services) during chaos.
    pub client_writes: bool,
    /// Pause between two client writes, uniform in this range (milliseconds).
    pub client_pause_ms: (u64, u64),
    /// Share of manager crashes allowed even when they take the quorum down.
    pub quorum_loss_rate: f64,
    /// At most this many services are created.
    pub max_services: usize,
    /// Highest replica count a client asks for.
    pub max_replicas: i64,
    /// Chance, per agent tick, that a running task dies (chaos phase only).
    pub task_crash_rate: f64,
    /// Chance that starting a task fails (chaos phase only).
    pub start_failure_rate: f64,
    /// What the leader waits for before each orchestration pass.
    pub pass_guard: PassGuard,
    /// Writes made on a follower are forwarded to the leader (`RaftNode::propose_anywhere`, as
    /// the daemon does); without, they fail with "not the leader" and the client retries.
    /// `SHOAL_SIM_FORWARD=0` turns it off.
    pub forwarding: bool,
    /// Report a write the store refused on apply the daemon's way: the store error the leader
    /// saw (carried by `RaftError::Rejected`), e.g. `update out of sequence`. Off: a "rejected
    /// when applied" message. On by default; `SHOAL_SIM_DAEMON_REJECTIONS=0` turns it off.
    pub daemon_rejections: bool,
    /// How often the leader runs an orchestration pass.
    pub pass_interval: Duration,
    /// Raft timing and snapshot policy of every manager (`node_id`/`addr` are set per node).
    pub raft: RaftConfig,
}

impl SimConfig {
    /// A swarm of `managers` managers and three workers with every fault kind enabled.
    pub fn new(managers: u64) -> SimConfig {
        SimConfig {
            profile: "default",
            managers,
            workers: 3,
            chaos: Duration::from_secs(20),
            settle_limit: Duration::from_secs(90),
            crashes: true,
            partitions: true,
            network_faults: true,
            worker_outages: true,
            client_writes: true,
            client_pause_ms: (150, 700),
            quorum_loss_rate: 0.1,
            max_services: 4,
            max_replicas: 5,
            task_crash_rate: 0.01,
            start_failure_rate: 0.1,
            pass_guard: PassGuard::from_env().unwrap_or(PassGuard::OwnLog),
            forwarding: std::env::var("SHOAL_SIM_FORWARD").map_or(true, |v| v != "0"),
            daemon_rejections: std::env::var("SHOAL_SIM_DAEMON_REJECTIONS")
                .map_or(true, |v| v != "0"),
            pass_interval: Duration::from_millis(100),
            raft: RaftConfig {
                heartbeat_ms: 100,
                election_timeout_ms: (400, 800),
                propose_timeout_ms: 2_000,
                // Small, so snapshots, log purges and snapshot installs happen in every run.
                snapshot_every: 40,
                keep_after_snapshot: 10,
                ..RaftConfig::default()
            },
        }
    }

    /// [`SimConfig::new`] made nastier: a longer chaos phase, twice the write rate, more task
    /// failures, more quorum losses, snapshots every few entries and short proposal timeouts
    /// (so more writes end ambiguous, and some of those commit later).
    pub fn hostile(managers: u64) -> SimConfig {
        let base = SimConfig::new(managers);
        SimConfig {
            profile: "hostile",
            chaos: Duration::from_secs(30),
            max_services: 6,
            client_pause_ms: (50, 350),
            quorum_loss_rate: 0.3,
            task_crash_rate: 0.03,
            start_failure_rate: 0.2,
            raft: RaftConfig {
                election_timeout_ms: (300, 600),
                propose_timeout_ms: 700,
                snapshot_every: 12,
                keep_after_snapshot: 2,
                ..base.raft.clone()
            },
            ..base
        }
    }

    /// The environment that selects this configuration's profile and knobs in `tests/sim.rs`
    /// (for the line that reruns a failed seed).
    pub fn env(&self) -> String {
        let mut env = vec![
            format!("SHOAL_SIM_MANAGERS={}", self.managers),
            format!("SHOAL_SIM_PROFILE={}", self.profile),
        ];
        match self.pass_guard {
            PassGuard::OwnLog => {}
            PassGuard::ReadBarrier => env.push("SHOAL_SIM_GUARD=read".into()),
            PassGuard::None => env.push("SHOAL_SIM_GUARD=none".into()),
        }
        if !self.forwarding {
            env.push("SHOAL_SIM_FORWARD=0".into());
        }
        if !self.daemon_rejections {
            env.push("SHOAL_SIM_DAEMON_REJECTIONS=0".into());
        }
        if crate::invariants::strict() {
            env.push("SHOAL_SIM_STRICT=1".into());
        }
        env.join(" ")
    }

    /// Quorum size.
    pub fn quorum(&self) -> usize {
        (self.managers as usize) / 2 + 1
    }

    /// Managers that may be down at once while the swarm keeps a quorum.
    pub fn tolerated(&self) -> usize {
        (self.managers as usize - 1) / 2
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::new(3)
    }
}
