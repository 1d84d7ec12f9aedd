//! [`RaftNode`]: one manager's seat in the Raft group, and its configuration and status.
//!
//! ```text
//!  RaftNode::open(dir, cfg, target, transport)
//!    ├─ Db::open(dir/raft.redb)            create tables, check format + codec
//!    ├─ StateMachineStore::load            target.restore(stored snapshot)
//!    └─ openraft::Raft::new                re-applies committed entries after the snapshot,
//!                                          then runs: elections, replication, snapshots
//!
//!  propose(payload) ─► Raft::client_write ─► leader appends (fsync) ─► replicate to a majority
//!        ▲                                                             │ committed
//!        └──────────── index ◄── target.apply(index, payload) ◄────────┘
//! ```
//!
//! ## Supervision
//! openraft stops its core for good on a fatal error (a storage error, or an internal one such
//! as 0.9.25's "replication channel closed" when a snapshot is asked of a replication stream
//! that already quit). A `RaftNode` whose core stops without being asked restarts it:
//!
//! ```text
//!  core's metrics: running_state = Err(fatal)     (not forwarded to RaftNode::watch)
//!    └─► restart: old.shutdown() ─► wait until its tasks let go of the redb file
//!          ─► Db::open(same dir) ─► StateMachineStore::resume (the target keeps its state;
//!             the shared progress says what it applied) ─► Raft::new(same transport)
//!          ─► the new instance serves handle_rpc, propose, metrics; callers keep their handle
//! ```
//!
//! A proposal caught by the fatal error fails with [`RaftError::NoQuorum`] (it may still be
//! committed). Repeated failures back off (up to 5 s between restarts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::error::{Fatal, InitializeError, RaftError as OrRaftError};
use openraft::{BasicNode, ChangeMembers, Config, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::codec::{Codec, PlainCodec};
use crate::log_store::LogStore;
use crate::network::{
    decode, encode, serve, Contacts, Network, RaftTransport, RpcKind, TransportError,
};
use crate::state_machine::{SharedProgress, StateMachineStore, StateMachineTarget};
use crate::storage::{blocking, Db};
use crate::{Payload, RaftError, TypeConfig};

/// How a node takes part in the Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// This node's Raft id (unique in the cluster, never reused).
    pub node_id: u64,
    /// The address other managers reach this node at (handed to the transport).
    pub addr: String,
    /// Take a snapshot after this many log entries since the last one (default 1000).
    pub snapshot_every: u64,
    /// Entries kept in the log below the latest snapshot, so a follower slightly behind can
    /// catch up from the log rather than a whole snapshot (default 100).
    pub keep_after_snapshot: u64,
    /// Leader heartbeat interval in milliseconds (default 100). openraft also gives each
    /// heartbeat this long to be answered, and checks election timeouts every 1.5 intervals.
    pub heartbeat_ms: u64,
    /// Election timeout range in milliseconds (default 400-700): a follower that hears no leader
    /// for a random time in this range, on top of the leader's lease (openraft 0.9: the upper
    /// bound), starts an election. With the defaults a new leader is elected 1.1-1.6 s after
    /// the old one is lost.
    pub election_timeout_ms: (u64, u64),
    /// How long [`RaftNode::propose`] waits for its entry to be committed and applied before
    /// giving up with [`RaftError::NoQuorum`].
    pub propose_timeout_ms: u64,
    /// Deadline of one `AppendEntries` that carries entries, and of one `InstallSnapshot` chunk
    /// (heartbeats and votes have openraft's own, shorter ones). Default 5000 ms.
    pub rpc_timeout_ms: u64,
    /// A leader that has not heard from a majority of the voters (itself included) for this
    /// long refuses proposals at once with [`RaftError::NoQuorum`] instead of waiting out
    /// `propose_timeout_ms` (etcd's CheckQuorum, as swarmkit runs it): see
    /// [`RaftNode::quorum_contact`]. Default 3000 ms.
    pub quorum_lease_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            node_id: 1,
            addr: String::new(),
            snapshot_every: 1000,
            keep_after_snapshot: 100,
            heartbeat_ms: 100,
            election_timeout_ms: (400, 700),
            propose_timeout_ms: 10_000,
            rpc_timeout_ms: 5_000,
            quorum_lease_ms: 3_000,
        }
    }
}

impl RaftConfig {
    fn to_openraft(&self) -> Result<Config, RaftError> {
        let (lo, hi) = self.election_timeout_ms;
        if self.snapshot_every == 0 {
            return Err(RaftError::Config(
                "snapshot_every must be at least 1".into(),
            ));
        }
        let config = Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: lo,
            election_timeout_max: hi,
            install_snapshot_timeout: self.rpc_timeout_ms.max(hi * 2).max(1000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| RaftError::Config(e.to_string()))
    }
}

/// This node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRole {
    /// Leads the group: takes writes.
    Leader,
    /// Follows a leader.
    Follower,
    /// Asking for votes.
    Candidate,
    /// Receives the log but does not vote (not yet a voter, or not initialized).
    Learner,
    /// Stopped.
    Shutdown,
}

/// A point-in-time view of the node, from openraft's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node's id.
    pub id: u64,
    /// Its role.
    pub role: RaftRole,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// Last log index applied to the target.
    pub last_applied: Option<u64>,
    /// Last log index in the log.
    pub last_log: Option<u64>,
    /// Last log index covered by the latest snapshot.
    pub snapshot: Option<u64>,
    /// Last log index purged from the log.
    pub purged: Option<u64>,
    /// Voting members (the managers), sorted.
    pub voters: Vec<u64>,
    /// Non-voting members, sorted.
    pub learners: Vec<u64>,
}

pub(crate) struct NodeInner {
    pub(crate) id: u64,
    cfg: RaftConfig,
    config: Arc<Config>,
    dir: PathBuf,
    codec: Arc<dyn Codec>,
    target: Arc<dyn StateMachineTarget>,
    transport: Arc<dyn RaftTransport>,
    contacts: Contacts,
    /// When [`RaftNode::quorum_contact`] first saw each voter: a voter just added (a promoted
    /// manager) has not answered yet and is given the lease from then, as etcd counts a new
    /// member recently active.
    voters_seen: Mutex<std::collections::HashMap<u64, std::time::Instant>>,
    /// What the target has applied (shared with the running instance's state machine).
    progress: SharedProgress,
    /// The running openraft instance; replaced when its core stops by itself.
    current: Mutex<Instance>,
    /// The running instance's metrics, forwarded (a fatal stop is not, while restarting).
    metrics: watch::Sender<RaftMetrics<u64, BasicNode>>,
    /// Set by [`RaftNode::shutdown`]: a stop after it is not restarted.
    stopping: AtomicBool,
    /// Held while an instance is replaced or shut down.
    lifecycle: tokio::sync::Mutex<()>,
    /// True from a fatal stop until the replacement runs.
    restarting: watch::Sender<bool>,
    restarts: AtomicU64,
}

/// One openraft instance and the redb file its tasks hold.
#[derive(Clone)]
struct Instance {
    raft: Raft<TypeConfig>,
    db: Weak<Db>,
}

impl NodeInner {
    fn raft(&self) -> Raft<TypeConfig> {
        self.instance().raft
    }

    fn instance(&self) -> Instance {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One manager's Raft node: the replicated log under the store. Cheap to clone.
///
/// ```no_run
/// use std::sync::{Arc, Mutex};
/// use shoal_raft::{NoTransport, RaftConfig, RaftNode, StateMachineTarget};
///
/// #[derive(Default)]
/// struct Counter(Mutex<u64>);
/// impl StateMachineTarget for Counter {
///     fn apply(&self, _index: u64, payload: &[u8]) -> Result<(), String> {
///         *self.0.lock().unwrap() += payload.len() as u64;
///         Ok(())
///     }
///     fn snapshot(&self) -> Vec<u8> {
///         self.0.lock().unwrap().to_le_bytes().to_vec()
///     }
///     fn restore(&self, _index: u64, data: &[u8]) -> Result<(), String> {
///         let b: [u8; 8] = data.try_into().map_err(|_| "bad snapshot".to_string())?;
///         *self.0.lock().unwrap() = u64::from_le_bytes(b);
///         Ok(())
///     }
/// }
///
/// # async fn run() -> Result<(), shoal_raft::RaftError> {
/// let cfg = RaftConfig { node_id: 1, addr: "127.0.0.1:2377".into(), ..RaftConfig::default() };
/// let node = RaftNode::open(
///     std::path::Path::new("/var/lib/shoal/raft"),
///     cfg,
///     Arc::new(Counter::default()),
///     Arc::new(NoTransport),
/// )
/// .await?;
/// node.initialize_single().await?;          // first start only; a no-op afterwards
/// node.wait_leader(std::time::Duration::from_secs(5)).await?;
/// let index = node.propose(b"hello".to_vec()).await?; // applied to the Counter when this returns
/// println!("committed at {index}");
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RaftNode {
    pub(crate) inner: Arc<NodeInner>,
}

impl RaftNode {
    /// Open (or create) the storage in `dir` (file `dir/raft.redb`), restore the state machine
    /// from the latest snapshot, and start openraft. Entries committed before a restart are
    /// applied to `target` again before this returns, so it ends up with every acknowledged
    /// write. `target` must start empty.
    pub async fn open(
        dir: &Path,
        cfg: RaftConfig,
        target: Arc<dyn StateMachineTarget>,
        network: Arc<dyn RaftTransport>,
    ) -> Result<Self, RaftError> {
        Self::open_with_codec(dir, cfg, Arc::new(PlainCodec), target, network).await
    }

    /// [`RaftNode::open`] with a [`Codec`] wrapping every stored log entry and snapshot (the
    /// encryption-at-rest hook). A file must always be opened with the codec it was created with.
    pub async fn open_with_codec(
        dir: &Path,
        cfg: RaftConfig,
        codec: Arc<dyn Codec>,
        target: Arc<dyn StateMachineTarget>,
        network: Arc<dyn RaftTransport>,
    ) -> Result<Self, RaftError> {
        let config = Arc::new(cfg.to_openraft()?);
        let dir = dir.to_path_buf();
        let contacts = Contacts::default();
        let progress = SharedProgress::default();
        let db = open_db(&dir, &codec).await?;
        let sm = StateMachineStore::load(db.clone(), target.clone(), progress.clone()).await?;
        let instance = start_instance(&cfg, &config, db, sm, &network, &contacts).await?;
        tracing::info!(node = cfg.node_id, addr = %cfg.addr, "raft node started");
        let rx = instance.raft.metrics();
        let (metrics, _) = watch::channel(rx.borrow().clone());
        let inner = Arc::new(NodeInner {
            id: cfg.node_id,
            cfg,
            config,
            dir,
            codec,
            target,
            transport: network,
            contacts,
            voters_seen: Mutex::new(std::collections::HashMap::new()),
            progress,
            current: Mutex::new(instance),
            metrics,
            stopping: AtomicBool::new(false),
            lifecycle: tokio::sync::Mutex::new(()),
            restarting: watch::channel(false).0,
            restarts: AtomicU64::new(0),
        });
        tokio::spawn(forward_metrics(Arc::downgrade(&inner), rx));
        Ok(RaftNode { inner })
    }

    /// How many times this node restarted its Raft core after it stopped by itself (completed
    /// restarts: the new core runs).
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    /// While the core is being restarted, waits (until `deadline`) for the new one: nothing is
    /// submitted to a core known to be dead.
    async fn wait_running(&self, deadline: Instant) {
        let mut rx = self.inner.restarting.subscribe();
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|r| !*r)).await;
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// First start of a new cluster: become a one-member cluster (no-op if already initialized).
    pub async fn initialize_single(&self) -> Result<(), RaftError> {
        if self.is_initialized().await? {
            return Ok(());
        }
        let members = BTreeMap::from([(
            self.inner.id,
            BasicNode {
                addr: self.inner.cfg.addr.clone(),
            },
        )]);
        match self.inner.raft().initialize(members).await {
            Ok(()) => Ok(()),
            Err(OrRaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether this node has ever been part of a cluster (has a log or a vote).
    pub async fn is_initialized(&self) -> Result<bool, RaftError> {
        Ok(self.inner.raft().is_initialized().await?)
    }

    /// Replicate a payload; returns the log index at which it was applied, after the target
    /// applied it. Errors: [`RaftError::NotLeader`] on a follower, [`RaftError::NoQuorum`] if
    /// it is not committed within `propose_timeout_ms` (it may still be applied later),
    /// [`RaftError::Rejected`] if the target refused it.
    pub async fn propose(&self, payload: Vec<u8>) -> Result<u64, RaftError> {
        let lease = Duration::from_millis(self.inner.cfg.quorum_lease_ms);
        if self.inner.metrics.borrow().state == ServerState::Leader && !self.quorum_contact(lease) {
            // Cut off from the majority: it cannot commit, and another leader may be writing.
            return Err(RaftError::NoQuorum);
        }
        let timeout = Duration::from_millis(self.inner.cfg.propose_timeout_ms);
        let deadline = Instant::now() + timeout;
        self.wait_running(deadline).await;
        let raft = self.inner.raft();
        let write = raft.client_write(Payload(payload));
        let resp = match tokio::time::timeout_at(deadline, write).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.unless_restarting(e.into())),
            Err(_) => return Err(RaftError::NoQuorum),
        };
        let index = resp.log_id.index;
        match resp.data.error {
            None => Ok(index),
            Some(reason) => Err(RaftError::Rejected { index, reason }),
        }
    }

    /// [`RaftNode::propose`] from any member: on a follower the payload is forwarded to the
    /// leader ([`RpcKind::Propose`] through this node's transport), and once the leader has
    /// committed it this waits until the entry is applied *here* too, so the caller reads its
    /// own write. Without a known leader it waits for one (elections take a moment) until
    /// `propose_timeout_ms`, then gives up with [`RaftError::NoQuorum`].
    ///
    /// ```text
    ///  follower ── propose ──► NotLeader{leader, addr} ── Propose(bytes) ──► leader.propose
    ///     ▲                                                                    │ index
    ///     └── wait until applied locally ◄───────────────── Ok(index) ◄────────┘
    /// ```
    ///
    /// A forwarded call that breaks after it was sent may still have been proposed; it is not
    /// retried (the caller sees [`RaftError::NoQuorum`], as for a local proposal that timed out).
    pub async fn propose_anywhere(&self, payload: Vec<u8>) -> Result<u64, RaftError> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.cfg.propose_timeout_ms);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RaftError::NoQuorum);
            }
            let (leader, addr) = match self.propose(payload.clone()).await {
                Err(RaftError::NotLeader {
                    leader: Some(leader),
                    leader_addr: Some(addr),
                }) if leader != self.inner.id && !addr.is_empty() => (leader, addr),
                Err(RaftError::NotLeader { .. }) => {
                    // No leader known (an election, or no quorum): wait for one to appear.
                    let mut rx = self.inner.metrics.subscribe();
                    let _ = tokio::time::timeout(
                        left.min(Duration::from_millis(200)),
                        rx.wait_for(|m| m.current_leader.is_some()),
                    )
                    .await;
                    continue;
                }
                other => return other,
            };
            let reply = self
                .inner
                .transport
                .send(leader, &addr, RpcKind::Propose, payload.clone(), left)
                .await;
            let result: Result<u64, RaftError> = match reply {
                Ok(bytes) => decode(&bytes)?,
                Err(TransportError::Unreachable { .. }) => {
                    // Nothing was delivered (or the leader is gone): wait for the next leader.
                    tokio::time::sleep(Duration::from_millis(100).min(left)).await;
                    continue;
                }
                Err(TransportError::Failed { reason, .. }) => {
                    tracing::warn!(leader, %addr, %reason, "forwarding a proposal failed");
                    return Err(RaftError::NoQuorum);
                }
            };
            return match result {
                Ok(index) => {
                    self.wait_applied(index, deadline).await?;
                    Ok(index)
                }
                Err(RaftError::Rejected { index, reason }) => {
                    self.wait_applied(index, deadline).await?;
                    Err(RaftError::Rejected { index, reason })
                }
                // Leadership moved between our look and the leader's: ask again.
                Err(RaftError::NotLeader { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50).min(left)).await;
                    continue;
                }
                Err(e) => Err(e),
            };
        }
    }

    /// Waits until this node has applied the entry at `index` (or `deadline` passes:
    /// [`RaftError::NoQuorum`]).
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), RaftError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut rx = self.inner.metrics.subscribe();
        let res = tokio::time::timeout(
            left.max(Duration::from_millis(100)),
            rx.wait_for(|m| {
                m.running_state.is_err() || m.last_applied.is_some_and(|l| l.index >= index)
            }),
        )
        .await;
        match res {
            Ok(Ok(m)) => match &m.running_state {
                Err(f) => Err(f.clone().into()),
                Ok(()) => Ok(()),
            },
            Ok(Err(_)) => Err(RaftError::Shutdown),
            Err(_) => Err(RaftError::NoQuorum),
        }
    }

    /// The leader's address, when a leader is known (this node's own when it leads).
    pub fn leader_addr(&self) -> Option<(u64, String)> {
        let m = self.inner.metrics.borrow().clone();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        Some((leader, addr))
    }

    /// The address of member `id` in the current membership.
    pub fn member_addr(&self, id: u64) -> Option<String> {
        let m = self.inner.metrics.borrow().clone();
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone());
        addr
    }

    /// When member `id` last answered a Raft message from this node (as leader: its
    /// heartbeats). `None` if it never did since this node started.
    pub fn last_contact(&self, id: u64) -> Option<std::time::Instant> {
        self.inner
            .contacts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    /// Whether this node heard, within `within`, from enough voters to form a majority with
    /// itself (as leader: answers to its heartbeats and appends; a new leader: the votes it
    /// won). Always true for a lone voter. A leader without it is cut off from the majority,
    /// which may have elected another: it should stop acting as the leader (etcd's
    /// CheckQuorum) until it hears from a majority again or learns of the new term.
    pub fn quorum_contact(&self, within: Duration) -> bool {
        let voters: Vec<u64> = self
            .inner
            .metrics
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let me = self.inner.id;
        let now = std::time::Instant::now();
        let contacts = self
            .inner
            .contacts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut seen = self
            .inner
            .voters_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        seen.retain(|id, _| voters.contains(id));
        let heard = voters
            .iter()
            .filter(|v| {
                let since = *seen.entry(**v).or_insert(now);
                let last = contacts.get(v).map_or(since, |t| (*t).max(since));
                **v == me || now.saturating_duration_since(last) <= within
            })
            .count();
        heard * 2 > voters.len()
    }

    /// The configured [`RaftConfig::quorum_lease_ms`].
    pub fn quorum_lease(&self) -> Duration {
        Duration::from_millis(self.inner.cfg.quorum_lease_ms)
    }

    /// On the leader: makes `id` (at `addr`) a voting member. It is first added as a learner
    /// and caught up (from the log, or a snapshot), then promoted. A no-op if it already votes.
    pub async fn add_voter(&self, id: u64, addr: &str) -> Result<(), RaftError> {
        if self.metrics().voters.contains(&id) {
            return Ok(());
        }
        let node = BasicNode {
            addr: addr.to_string(),
        };
        let raft = self.inner.raft();
        raft.add_learner(id, node, true).await?;
        let change: ChangeMembers<u64, BasicNode> =
            ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        raft.change_membership(change, false).await?;
        tracing::info!(member = id, %addr, "raft member added");
        Ok(())
    }

    /// On the leader: removes member `id` from the membership (voter or learner).
    pub async fn remove_member(&self, id: u64) -> Result<(), RaftError> {
        let st = self.metrics();
        if !st.voters.contains(&id) && !st.learners.contains(&id) {
            return Ok(());
        }
        let change: ChangeMembers<u64, BasicNode> = if st.voters.contains(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.inner.raft().change_membership(change, false).await?;
        tracing::info!(member = id, "raft member removed");
        Ok(())
    }

    /// A receiver that changes whenever the metrics do (role, leader, membership, indexes). It
    /// outlives a restart of the Raft core (see the module docs), which it does not show.
    pub fn watch(&self) -> watch::Receiver<RaftMetrics<u64, BasicNode>> {
        self.inner.metrics.subscribe()
    }

    /// Linearizable read barrier: on the leader, confirms leadership with a quorum and waits until
    /// everything committed before the call is applied; returns the applied index. Reads from
    /// the target after this see every write acknowledged before it.
    pub async fn read_barrier(&self) -> Result<u64, RaftError> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.cfg.propose_timeout_ms);
        self.wait_running(deadline).await;
        let raft = self.inner.raft();
        let res = match tokio::time::timeout_at(deadline, raft.ensure_linearizable()).await {
            Ok(r) => r,
            Err(_) => return Err(RaftError::NoQuorum),
        };
        match res {
            Ok(log_id) => Ok(log_id.map(|l| l.index).unwrap_or(0)),
            Err(OrRaftError::Fatal(f)) => Err(self.unless_restarting(f.into())),
            Err(OrRaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(f.into())
            }
            Err(OrRaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(RaftError::NoQuorum)
            }
        }
    }

    /// Wait until a leader is known (possibly this node) and return its id.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64, RaftError> {
        let mut rx = self.inner.metrics.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            {
                let m = rx.borrow_and_update();
                if let Err(f) = &m.running_state {
                    return Err(f.clone().into());
                }
                if let Some(leader) = m.current_leader {
                    return Ok(leader);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(RaftError::Shutdown),
                Err(_) => return Err(RaftError::NoQuorum),
            }
        }
    }

    /// Leader id, term, last applied, last log, snapshot, membership.
    pub fn metrics(&self) -> RaftStatus {
        let m = self.inner.metrics.borrow().clone();
        let membership = m.membership_config.membership();
        let mut voters: Vec<u64> = membership.voter_ids().collect();
        voters.sort_unstable();
        let mut learners: Vec<u64> = membership.learner_ids().collect();
        learners.sort_unstable();
        let role = if m.running_state.is_err() {
            RaftRole::Shutdown
        } else {
            match m.state {
                ServerState::Leader => RaftRole::Leader,
                ServerState::Follower => RaftRole::Follower,
                ServerState::Candidate => RaftRole::Candidate,
                ServerState::Learner => RaftRole::Learner,
                ServerState::Shutdown => RaftRole::Shutdown,
            }
        };
        RaftStatus {
            id: m.id,
            role,
            leader: m.current_leader,
            term: m.current_term,
            last_applied: m.last_applied.map(|l| l.index),
            last_log: m.last_log_index,
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            voters,
            learners,
        }
    }

    /// Stop Raft and close the redb file (so the directory can be opened again at once).
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        self.inner.stopping.store(true, Ordering::SeqCst);
        // After a restart in progress, if any: it sees `stopping` and starts nothing.
        let _lifecycle = self.inner.lifecycle.lock().await;
        let instance = self.inner.instance();
        if let Err(e) = instance.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core task ended abnormally");
        }
        self.inner.metrics.send_modify(|m| {
            m.running_state = Err(Fatal::Stopped);
            m.state = ServerState::Shutdown;
        });
        self.inner.restarting.send_replace(false);
        // The storage is owned by openraft's tasks; wait for the last of them to let go.
        if !released(&instance.db, Duration::from_secs(10)).await {
            return Err(RaftError::Storage(
                "the raft log is still in use 10s after shutdown".into(),
            ));
        }
        Ok(())
    }

    /// A fatal error seen by a caller while the core is being restarted is an unknown outcome
    /// (the write may still commit), not a shutdown.
    fn unless_restarting(&self, e: RaftError) -> RaftError {
        let fatal = matches!(
            e,
            RaftError::Shutdown | RaftError::Storage(_) | RaftError::Internal(_)
        );
        if fatal && !self.inner.stopping.load(Ordering::SeqCst) {
            RaftError::NoQuorum
        } else {
            e
        }
    }

    /// Serve one RPC from another node (the receiving end of a [`RaftTransport`]): `request` is
    /// what the sender's transport was given, the returned bytes are its reply. An `Err` means
    /// the request could not be decoded; the transport reports it as failed.
    pub async fn handle_rpc(&self, kind: RpcKind, request: &[u8]) -> Result<Vec<u8>, RaftError> {
        if kind == RpcKind::Propose {
            let res = self.propose(request.to_vec()).await;
            return encode(&res);
        }
        serve(&self.inner.raft(), kind, request).await
    }

    /// The running openraft instance, for membership changes and anything else not wrapped
    /// here. After a restart of the core (see the module docs) this is a new instance: do not
    /// keep it, ask again.
    pub fn raft(&self) -> Raft<TypeConfig> {
        self.inner.raft()
    }

    /// The number of entries in the on-disk log and the first index there (diagnostics, tests).
    pub async fn log_extent(&self) -> Result<(u64, Option<u64>), RaftError> {
        let db = self
            .inner
            .instance()
            .db
            .upgrade()
            .ok_or(RaftError::Shutdown)?;
        Ok(blocking(&db, |db| Ok((db.log_len()?, db.first_index()?))).await?)
    }
}

async fn open_db(dir: &Path, codec: &Arc<dyn Codec>) -> Result<Arc<Db>, RaftError> {
    let (dir, codec) = (dir.to_path_buf(), codec.clone());
    let db = tokio::task::spawn_blocking(move || Db::open(&dir, codec))
        .await
        .map_err(|e| RaftError::Storage(format!("opening the raft log failed: {e}")))??;
    Ok(Arc::new(db))
}

/// Starts openraft on `db` (the instance's tasks then own it; the node keeps a weak handle).
async fn start_instance(
    cfg: &RaftConfig,
    config: &Arc<Config>,
    db: Arc<Db>,
    sm: StateMachineStore,
    transport: &Arc<dyn RaftTransport>,
    contacts: &Contacts,
) -> Result<Instance, RaftError> {
    let log = LogStore::new(db.clone());
    let weak = Arc::downgrade(&db);
    drop(db);
    let net = Network {
        transport: transport.clone(),
        contacts: contacts.clone(),
        append_timeout: Duration::from_millis(cfg.rpc_timeout_ms),
    };
    let raft = Raft::new(cfg.node_id, config.clone(), net, log, sm).await?;
    tokio::spawn(break_split_votes(
        raft.clone(),
        cfg.node_id,
        cfg.election_timeout_ms,
    ));
    Ok(Instance { raft, db: weak })
}

/// With one leader per term, two candidates of one term that split the vote both lose, and
/// openraft 0.9 draws a node's election timeout once (at start) and checks it on a tick of 1.5
/// heartbeats: the same two can split term after term (on a paused clock, forever). So after
/// two candidacies in a row that did not win within the shortest election timeout (no leader
/// seen in between), this node sits out elections for a fresh random part of the longest one.
/// Ends with the instance.
async fn break_split_votes(raft: Raft<TypeConfig>, id: u64, (min, max): (u64, u64)) {
    let mut rx = raft.metrics();
    let mut rng = id
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let mut strikes = 0;
    loop {
        let candidate = rx
            .wait_for(|m| {
                m.state == ServerState::Candidate
                    || m.current_leader.is_some()
                    || m.running_state.is_err()
            })
            .await
            .ok()
            .filter(|m| m.running_state.is_ok())
            .map(|m| (m.state == ServerState::Candidate, m.current_term));
        let term = match candidate {
            None => return,
            Some((true, term)) => term,
            Some((false, _)) => {
                // A leader is known: elections work.
                strikes = 0;
                if rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
        };
        let left_candidacy = |m: &RaftMetrics<u64, BasicNode>| {
            m.state != ServerState::Candidate || m.current_term != term || m.running_state.is_err()
        };
        let decided = tokio::time::timeout(Duration::from_millis(min), rx.wait_for(left_candidacy))
            .await
            .map(|r| r.is_ok());
        match decided {
            Ok(true) => continue,
            Ok(false) => return,
            Err(_) => {}
        }
        // Still a candidate of that term: lost, or split.
        strikes += 1;
        if strikes < 2 {
            if rx.wait_for(left_candidacy).await.is_err() {
                return;
            }
            continue;
        }
        strikes = 0;
        let pause = splitmix(&mut rng) % max.max(1);
        tracing::debug!(
            node = id,
            term,
            pause_ms = pause,
            "no leader elected twice; pausing elections"
        );
        raft.runtime_config().elect(false);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        raft.runtime_config().elect(true);
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Waits (up to `bound`) until no task holds the redb file any more.
async fn released(db: &Weak<Db>, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while db.strong_count() > 0 {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// Forwards one instance's metrics to the node's own channel until the instance ends. A core
/// that stops by itself (not shut down) is restarted instead of reported.
async fn forward_metrics(
    node: Weak<NodeInner>,
    mut rx: watch::Receiver<RaftMetrics<u64, BasicNode>>,
) {
    loop {
        let m = rx.borrow_and_update().clone();
        let Some(inner) = node.upgrade() else {
            return;
        };
        if let Err(fatal) = &m.running_state {
            if !inner.stopping.load(Ordering::SeqCst) {
                let reason = fatal.to_string();
                inner.restarting.send_replace(true);
                // Shown as a follower that knows no leader until the new core reports.
                inner.metrics.send_modify(|shown| {
                    shown.state = ServerState::Follower;
                    shown.current_leader = None;
                });
                tokio::spawn(restart(inner, reason));
                return;
            }
        }
        inner.metrics.send_replace(m);
        drop(inner);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Replaces an instance whose core stopped by itself with a fresh one on the same storage,
/// transport and target (see the module docs). Retries, backing off, until it succeeds or the
/// node is shut down.
fn restart(
    inner: Arc<NodeInner>,
    reason: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    // Boxed (and declared Send): this and `forward_metrics` spawn each other.
    Box::pin(restart_inner(inner, reason))
}

async fn restart_inner(inner: Arc<NodeInner>, reason: String) {
    let _lifecycle = inner.lifecycle.lock().await;
    let n = inner.restarts.load(Ordering::Relaxed) + 1;
    tracing::error!(node = inner.id, error = %reason, restarts = n,
        "the raft core stopped by itself; restarting it");
    let old = inner.instance();
    if let Err(e) = old.raft.shutdown().await {
        tracing::warn!(error = %e, "raft core task ended abnormally");
    }
    // A restart soon after the previous one waits first (a fault that comes back).
    let mut backoff = Duration::from_millis(100 * n.min(50));
    let mut attempt = 0u32;
    loop {
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        // Every task of the old instance must be gone: its state machine could still apply.
        if !released(&old.db, Duration::from_secs(10)).await {
            tracing::warn!(
                node = inner.id,
                "the stopped raft core still holds its log; waiting"
            );
            continue;
        }
        if attempt > 0 || n > 1 {
            tokio::time::sleep(backoff.min(Duration::from_secs(5))).await;
            backoff *= 2;
            if inner.stopping.load(Ordering::SeqCst) {
                return;
            }
        }
        attempt += 1;
        let started = async {
            let db = open_db(&inner.dir, &inner.codec).await?;
            let sm =
                StateMachineStore::resume(db.clone(), inner.target.clone(), inner.progress.clone());
            start_instance(
                &inner.cfg,
                &inner.config,
                db,
                sm,
                &inner.transport,
                &inner.contacts,
            )
            .await
        };
        match started.await {
            Ok(instance) => {
                let rx = instance.raft.metrics();
                *inner.current.lock().unwrap_or_else(|p| p.into_inner()) = instance;
                inner.restarts.store(n, Ordering::Relaxed);
                inner.restarting.send_replace(false);
                tracing::info!(node = inner.id, restarts = n, "raft core restarted");
                tokio::spawn(forward_metrics(Arc::downgrade(&inner), rx));
                return;
            }
            Err(e) => {
                tracing::error!(node = inner.id, error = %e, attempt, "restarting the raft core failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecError, RecordKind};
    use crate::network::NoTransport;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Bytes(Mutex<Vec<u8>>);
    impl StateMachineTarget for Bytes {
        fn apply(&self, _index: u64, payload: &[u8]) -> Result<(), String> {
            self.0.lock().unwrap().extend_from_slice(payload);
            Ok(())
        }
        fn snapshot(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
        fn restore(&self, _index: u64, data: &[u8]) -> Result<(), String> {
            *self.0.lock().unwrap() = data.to_vec();
            Ok(())
        }
    }

    /// A stand-in for the encrypting codec: XOR with a key byte, bound to the record kind.
    struct Xor(u8);
    impl Codec for Xor {
        fn id(&self) -> &str {
            "xor-test"
        }
        fn seal(&self, kind: RecordKind, mut plain: Vec<u8>) -> Result<Vec<u8>, CodecError> {
            plain.iter_mut().for_each(|b| *b ^= self.0);
            plain.push(tag(kind));
            Ok(plain)
        }
        fn open(&self, kind: RecordKind, mut sealed: Vec<u8>) -> Result<Vec<u8>, CodecError> {
            if sealed.pop() != Some(tag(kind)) {
                return Err(CodecError {
                    kind,
                    reason: "sealed for another record".into(),
                });
            }
            sealed.iter_mut().for_each(|b| *b ^= self.0);
            Ok(sealed)
        }
    }
    fn tag(kind: RecordKind) -> u8 {
        match kind {
            RecordKind::LogEntry { index } => index as u8,
            RecordKind::SnapshotMeta => 0xfe,
            RecordKind::SnapshotData => 0xff,
        }
    }

    fn cfg() -> RaftConfig {
        RaftConfig {
            heartbeat_ms: 50,
            election_timeout_ms: (150, 300),
            snapshot_every: 4,
            keep_after_snapshot: 1,
            ..RaftConfig::default()
        }
    }

    #[tokio::test]
    async fn codec_wraps_entries_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let open = || async {
            let t = Arc::new(Bytes::default());
            let n = RaftNode::open_with_codec(
                dir.path(),
                cfg(),
                Arc::new(Xor(0x5a)),
                t.clone(),
                Arc::new(NoTransport),
            )
            .await
            .unwrap();
            (n, t)
        };
        let (node, _) = open().await;
        node.initialize_single().await.unwrap();
        node.wait_leader(Duration::from_secs(5)).await.unwrap();
        for _ in 0..10 {
            node.propose(b"SECRETSECRET".to_vec()).await.unwrap();
        }
        node.shutdown().await.unwrap();
        let raw = std::fs::read(dir.path().join(crate::DB_FILE)).unwrap();
        assert!(
            !raw.windows(6).any(|w| w == b"SECRET"),
            "plaintext payload found in the file"
        );
        let (node, t) = open().await;
        assert_eq!(t.0.lock().unwrap().len(), 120);
        node.shutdown().await.unwrap();
        // The plain codec cannot open it.
        let err = RaftNode::open(
            dir.path(),
            cfg(),
            Arc::new(Bytes::default()),
            Arc::new(NoTransport),
        )
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("'xor-test' codec"), "{err}");
    }

    #[tokio::test]
    async fn corrupt_log_entry_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        let (node, _t) = {
            let t = Arc::new(Bytes::default());
            let n = RaftNode::open(dir.path(), cfg(), t.clone(), Arc::new(NoTransport))
                .await
                .unwrap();
            (n, t)
        };
        node.initialize_single().await.unwrap();
        node.wait_leader(Duration::from_secs(5)).await.unwrap();
        let index = node.propose(b"x".to_vec()).await.unwrap();
        node.shutdown().await.unwrap();
        {
            let db = Db::open(dir.path(), Arc::new(PlainCodec)).unwrap();
            db.put_raw_log(index, b"\x01\x02garbage").unwrap();
        }
        let err = RaftNode::open(
            dir.path(),
            cfg(),
            Arc::new(Bytes::default()),
            Arc::new(NoTransport),
        )
        .await
        .err()
        .expect("corrupt entry must fail open");
        assert!(matches!(err, RaftError::Storage(_)), "{err:?}");
        assert!(err.to_string().contains("corrupt log entry"), "{err}");
    }
}
