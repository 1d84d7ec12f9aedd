//! Node-to-node transport seam: Raft RPCs as opaque bytes.
//!
//! openraft's typed requests are encoded here (postcard) and handed to a [`RaftTransport`], which
//! only moves bytes: the gRPC-over-mutual-TLS transport of a later issue carries `(kind, bytes)`
//! and, on the receiving node, hands them to [`RaftNode::handle_rpc`](crate::RaftNode::handle_rpc),
//! whose reply bytes travel back the same way. Neither side of the transport needs openraft types.
//!
//! ```text
//!  leader                                                         follower
//!  openraft replication ─► Connection::append_entries(req)
//!     postcard(req) ─► RaftTransport::send(target, addr, kind, bytes) ═══╗
//!                                                                      ║ network
//!                            RaftNode::handle_rpc(kind, bytes) ◄═══════╝
//!                              decode ─► Raft::append_entries ─► postcard(Result<resp, err>)
//!     decode ◄══════════════════════════════════════════════════════ reply bytes
//! ```
//!
//! Reply bytes always encode `Result<Response, openraft::error::RaftError<..>>` (an error the
//! remote Raft returned); a failure to deliver is a [`TransportError`] instead, which openraft
//! turns into a retry with back-off.
//!
//! ## Deadlines
//! openraft 0.9 gives every `AppendEntries` the heartbeat interval, then drops it and sends the
//! range again. Heartbeats (no entries) keep that deadline. An append that carries entries runs
//! in a task of its own with the longer [`RaftConfig::rpc_timeout_ms`](crate::RaftConfig):
//!
//! ```text
//!  openraft: append [5..=9] ─ heartbeat interval passes, dropped ─ retry [5..=12] ─► joins it
//!  Connection:   task: send [5..=9] (deadline rpc_timeout) ───────────► Success
//!                                                        reply to the retry: PartialSuccess(9)
//!                                                        openraft sends [10..=12] next
//! ```
//!
//! A retry with the same leader vote and the same previous log id joins the running append
//! (its reply, for a shorter range, becomes a partial success) and sends a heartbeat on the
//! side, so the follower keeps hearing from its leader; any other append waits for it to end
//! first (or, after a change of vote, cancels it). `InstallSnapshot` chunks get
//! `rpc_timeout_ms` too (openraft's `install_snapshot_timeout`).
//!
//! Implementations here: [`NoTransport`] (a one-member cluster) and [`LocalTransport`] (several
//! nodes in one process, with partitions, seeded message loss and latency for tests and the
//! `shoal-sim` simulation).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError as OrRaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LogId, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::node::NodeInner;
use crate::{RaftError, RaftNode, TypeConfig};

/// Which Raft RPC a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RpcKind {
    /// `AppendEntries` (replication and heartbeats).
    AppendEntries,
    /// `RequestVote`.
    Vote,
    /// One chunk of `InstallSnapshot`.
    InstallSnapshot,
    /// Not an openraft RPC: a follower forwards a store proposal (the payload bytes) to the
    /// leader, which proposes it and replies with `Result<u64, RaftError>` (the log index).
    Propose,
}

impl RpcKind {
    /// A stable small number for wire formats.
    pub fn code(self) -> u8 {
        match self {
            RpcKind::AppendEntries => 1,
            RpcKind::Vote => 2,
            RpcKind::InstallSnapshot => 3,
            RpcKind::Propose => 4,
        }
    }

    /// The inverse of [`RpcKind::code`].
    pub fn from_code(code: u8) -> Option<RpcKind> {
        match code {
            1 => Some(RpcKind::AppendEntries),
            2 => Some(RpcKind::Vote),
            3 => Some(RpcKind::InstallSnapshot),
            4 => Some(RpcKind::Propose),
            _ => None,
        }
    }
}

/// A message could not be delivered, or no reply came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The node cannot be reached now (down, partitioned, refused); openraft backs off and retries.
    #[error("raft node {target} is unreachable: {reason}")]
    Unreachable {
        /// The node the message was for.
        target: u64,
        /// Why.
        reason: String,
    },
    /// The message was sent but the exchange failed (timeout, broken stream, remote could not
    /// decode it).
    #[error("raft message to node {target} failed: {reason}")]
    Failed {
        /// The node the message was for.
        target: u64,
        /// Why.
        reason: String,
    },
}

/// Carries serialized Raft RPCs between nodes. See the module docs for the byte contract.
#[async_trait::async_trait]
pub trait RaftTransport: Send + Sync + 'static {
    /// Send `request` (an encoded `kind` request) to node `target` at `addr` and return the
    /// reply bytes produced by that node's [`RaftNode::handle_rpc`]. `timeout` is how long the
    /// caller will wait (a deadline for the underlying call).
    async fn send(
        &self,
        target: u64,
        addr: &str,
        kind: RpcKind,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError>;
}

/// The transport of a one-member cluster: every RPC fails as unreachable.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTransport;

#[async_trait::async_trait]
impl RaftTransport for NoTransport {
    async fn send(
        &self,
        target: u64,
        _addr: &str,
        _kind: RpcKind,
        _request: Vec<u8>,
        _timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        Err(TransportError::Unreachable {
            target,
            reason: "this node has no transport to other managers".into(),
        })
    }
}

#[derive(Default)]
struct Hub {
    nodes: HashMap<u64, Weak<NodeInner>>,
    isolated: HashSet<u64>,
    cut: HashSet<(u64, u64)>,
    faults: Faults,
}

/// Message loss and latency of a [`LocalTransport`] (all off by default).
#[derive(Default)]
struct Faults {
    /// splitmix64 state: the network's own seeded generator (no dependency, reproducible).
    rng: u64,
    /// Probability that one message (a request, or its reply) is lost.
    drop_rate: f64,
    /// Every message (each direction) is delayed by a uniform time in this range.
    delay: (Duration, Duration),
    /// Extra delay of a link, each direction (keys are stored both ways).
    link_delay: HashMap<(u64, u64), Duration>,
}

impl Faults {
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn lost(&mut self) -> bool {
        self.drop_rate > 0.0 && self.unit() < self.drop_rate
    }

    fn latency(&mut self, from: u64, to: u64) -> Duration {
        let (lo, hi) = self.delay;
        let mut d = lo;
        if hi > lo {
            d += (hi - lo).mul_f64(self.unit());
        }
        d + self
            .link_delay
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }
}

/// What the network decided for one exchange, drawn up front (under the lock).
struct Fate {
    request_delay: Duration,
    request_lost: bool,
    reply_delay: Duration,
    reply_lost: bool,
}

/// An in-process network between [`RaftNode`]s, for tests and simulations.
///
/// One `LocalTransport::new()` is the network; each node is opened with its own endpoint
/// `net.for_node(id)` (so the network knows who sends) and then registered with
/// `net.register(&node)`. Messages go through the same byte encoding as a real transport.
/// [`LocalTransport::isolate`] and [`LocalTransport::cut`] simulate partitions;
/// [`LocalTransport::set_drop_rate`], [`LocalTransport::set_delay`] and
/// [`LocalTransport::set_link_delay`] add message loss and latency, drawn from a generator seeded
/// with [`LocalTransport::seed`]. Delays are `tokio::time` sleeps, so under a paused clock
/// (`tokio::time::pause`) they cost no real time. A lost request or reply leaves the sender
/// waiting until its RPC timeout, as on a real network.
///
/// ```
/// # async fn demo(dir: &std::path::Path, target: std::sync::Arc<dyn shoal_raft::StateMachineTarget>) -> Result<(), shoal_raft::RaftError> {
/// use std::sync::Arc;
/// use shoal_raft::{LocalTransport, RaftConfig, RaftNode};
/// let net = LocalTransport::new();
/// let cfg = RaftConfig { node_id: 1, addr: "node-1".into(), ..RaftConfig::default() };
/// let node = RaftNode::open(dir, cfg, target, Arc::new(net.for_node(1))).await?;
/// net.register(&node);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct LocalTransport {
    hub: Arc<Mutex<Hub>>,
    from: Option<u64>,
}

impl LocalTransport {
    /// A new, empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// The endpoint node `id` sends from (same network).
    pub fn for_node(&self, id: u64) -> LocalTransport {
        LocalTransport {
            hub: self.hub.clone(),
            from: Some(id),
        }
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is still usable.
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make `node` reachable at its id. The network holds it weakly (no reference cycle).
    pub fn register(&self, node: &RaftNode) {
        self.hub()
            .nodes
            .insert(node.id(), Arc::downgrade(&node.inner));
    }

    /// Forget node `id`.
    pub fn unregister(&self, id: u64) {
        self.hub().nodes.remove(&id);
    }

    /// Cut node `id` off from every other node, both ways.
    pub fn isolate(&self, id: u64) {
        self.hub().isolated.insert(id);
    }

    /// Cut the link between `a` and `b`, both ways.
    pub fn cut(&self, a: u64, b: u64) {
        let mut hub = self.hub();
        hub.cut.insert((a, b));
        hub.cut.insert((b, a));
    }

    /// Undo every isolation and cut (message loss and delays stay as set).
    pub fn heal(&self) {
        let mut hub = self.hub();
        hub.isolated.clear();
        hub.cut.clear();
    }

    /// Seed the generator that decides which messages are lost and how long they take.
    pub fn seed(&self, seed: u64) {
        self.hub().faults.rng = seed;
    }

    /// Lose each message (every request and every reply, independently) with probability `p`
    /// (clamped to `0..=1`; 0 turns loss off).
    pub fn set_drop_rate(&self, p: f64) {
        self.hub().faults.drop_rate = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    }

    /// Delay every message (each direction) by a uniform random time in `min..=max`.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.hub().faults.delay = (min, max.max(min));
    }

    /// Add `extra` latency to the link between `a` and `b`, both ways (zero removes it).
    pub fn set_link_delay(&self, a: u64, b: u64, extra: Duration) {
        let mut hub = self.hub();
        for key in [(a, b), (b, a)] {
            if extra.is_zero() {
                hub.faults.link_delay.remove(&key);
            } else {
                hub.faults.link_delay.insert(key, extra);
            }
        }
    }

    /// Turn off message loss and every delay (the generator keeps its state).
    pub fn clear_faults(&self) {
        let mut hub = self.hub();
        hub.faults.drop_rate = 0.0;
        hub.faults.delay = (Duration::ZERO, Duration::ZERO);
        hub.faults.link_delay.clear();
    }

    fn partitioned(&self, hub: &Hub, target: u64) -> bool {
        self.from.is_some_and(|from| {
            hub.isolated.contains(&from)
                || hub.isolated.contains(&target)
                || hub.cut.contains(&(from, target))
        })
    }

    /// Draws the fate of one exchange with `target`.
    fn fate(&self, hub: &mut Hub, target: u64) -> Fate {
        let from = self.from.unwrap_or(0);
        let f = &mut hub.faults;
        Fate {
            request_delay: f.latency(from, target),
            request_lost: f.lost(),
            reply_delay: f.latency(target, from),
            reply_lost: f.lost(),
        }
    }

    async fn exchange(
        &self,
        target: u64,
        kind: RpcKind,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            target,
            reason: reason.into(),
        };
        let fate = {
            let mut hub = self.hub();
            if self.partitioned(&hub, target) {
                return Err(unreachable("partitioned"));
            }
            self.fate(&mut hub, target)
        };
        if !fate.request_delay.is_zero() {
            tokio::time::sleep(fate.request_delay).await;
        }
        if fate.request_lost {
            // Nothing arrives; the sender waits until its timeout (see `send`).
            std::future::pending::<()>().await;
        }
        // The partition, or the node, may have changed while the message was in flight.
        let node = {
            let hub = self.hub();
            if self.partitioned(&hub, target) {
                return Err(unreachable("partitioned"));
            }
            hub.nodes.get(&target).and_then(Weak::upgrade)
        };
        let Some(inner) = node else {
            return Err(unreachable("no such node on the local network"));
        };
        let reply = RaftNode { inner }
            .handle_rpc(kind, &request)
            .await
            .map_err(|e| TransportError::Failed {
                target,
                reason: e.to_string(),
            })?;
        if !fate.reply_delay.is_zero() {
            tokio::time::sleep(fate.reply_delay).await;
        }
        if fate.reply_lost {
            std::future::pending::<()>().await;
        }
        Ok(reply)
    }
}

#[async_trait::async_trait]
impl RaftTransport for LocalTransport {
    async fn send(
        &self,
        target: u64,
        _addr: &str,
        kind: RpcKind,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let faulty = {
            let hub = self.hub();
            let f = &hub.faults;
            f.drop_rate > 0.0 || !f.delay.1.is_zero() || !f.link_delay.is_empty()
        };
        if !faulty {
            // No loss, no latency: deliver at once (no timer, whatever the timeout).
            return self.exchange(target, kind, request).await;
        }
        match tokio::time::timeout(timeout, self.exchange(target, kind, request)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Failed {
                target,
                reason: format!("no reply within {timeout:?} (message lost or delayed)"),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire encoding.

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, RaftError> {
    postcard::to_allocvec(v).map_err(|e| RaftError::Malformed(format!("cannot encode: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RaftError> {
    postcard::from_bytes(bytes).map_err(|e| RaftError::Malformed(e.to_string()))
}

/// Server side: decode a request, run it on the local Raft, encode the result.
pub(crate) async fn serve(
    raft: &openraft::Raft<TypeConfig>,
    kind: RpcKind,
    request: &[u8],
) -> Result<Vec<u8>, RaftError> {
    match kind {
        RpcKind::AppendEntries => {
            let req: AppendEntriesRequest<TypeConfig> = decode(request)?;
            encode(&raft.append_entries(req).await)
        }
        RpcKind::Vote => {
            let req: VoteRequest<u64> = decode(request)?;
            encode(&raft.vote(req).await)
        }
        RpcKind::InstallSnapshot => {
            let req: InstallSnapshotRequest<TypeConfig> = decode(request)?;
            encode(&raft.install_snapshot(req).await)
        }
        // Handled by `RaftNode::handle_rpc`, which has the proposal path.
        RpcKind::Propose => Err(RaftError::Malformed(
            "a forwarded proposal reached the raw raft dispatcher".into(),
        )),
    }
}

/// When each peer last answered a Raft RPC (any reply, even an error, proves it is up).
pub(crate) type Contacts = Arc<Mutex<HashMap<u64, std::time::Instant>>>;

// ---------------------------------------------------------------------------------------------
// openraft's network traits over a RaftTransport.

/// openraft's network factory over a [`RaftTransport`].
pub(crate) struct Network {
    pub(crate) transport: Arc<dyn RaftTransport>,
    pub(crate) contacts: Contacts,
    /// The deadline of an `AppendEntries` that carries entries (see the module docs).
    pub(crate) append_timeout: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            contacts: self.contacts.clone(),
            append_timeout: self.append_timeout,
            inflight: None,
        }
    }
}

type RpcResult<Resp, E = openraft::error::Infallible> =
    Result<Resp, RPCError<u64, BasicNode, OrRaftError<u64, E>>>;

/// An `AppendEntries` with entries, running in its own task (see the module docs).
struct InflightAppend {
    vote: Vote<u64>,
    prev: Option<LogId<u64>>,
    last: Option<LogId<u64>>,
    task: tokio::task::JoinHandle<Result<Vec<u8>, TransportError>>,
}

/// A client for one remote node.
pub(crate) struct Connection {
    target: u64,
    addr: String,
    transport: Arc<dyn RaftTransport>,
    contacts: Contacts,
    append_timeout: Duration,
    inflight: Option<InflightAppend>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // openraft dropped the replication stream (leadership or membership changed).
        if let Some(f) = self.inflight.take() {
            f.task.abort();
        }
    }
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        kind: RpcKind,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let bytes = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .transport
            .send(self.target, &self.addr, kind, bytes, option.hard_ttl())
            .await;
        self.reply(reply)
    }

    /// Turns what the transport returned into openraft's result.
    #[allow(clippy::result_large_err)] // openraft's error type, returned as openraft wants it
    fn reply<Resp, E>(&self, reply: Result<Vec<u8>, TransportError>) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply = reply.map_err(|e| match e {
            TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            TransportError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
        })?;
        self.contacts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.target, std::time::Instant::now());
        let res: Result<Resp, OrRaftError<u64, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// An `AppendEntries` with entries: started in a task with the append deadline, or joined
    /// if an earlier attempt of the same range (or a prefix of it) is still running. Cancel
    /// safe: openraft dropping this future leaves the task running for the next attempt.
    async fn append_detached(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        heartbeat: Duration,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        let last = rpc.entries.last().map(|e| e.log_id);
        let joins_running = self.inflight.as_ref().is_some_and(|f| {
            f.vote == rpc.vote
                && f.prev == rpc.prev_log_id
                && f.last <= last
                && !f.task.is_finished()
        });
        if joins_running {
            // A retry while the append still runs: the follower hears nothing else from this
            // leader meanwhile, so send it a heartbeat on the side (what openraft would have
            // sent) to keep its election timer from running out.
            self.keepalive(&rpc, heartbeat);
        }
        if let Some(f) = &mut self.inflight {
            let joinable = f.vote == rpc.vote && f.prev == rpc.prev_log_id && f.last <= last;
            if !joinable {
                if f.vote != rpc.vote {
                    f.task.abort();
                } else {
                    // One append at a time to a node: let the earlier one end first.
                    let _ = (&mut f.task).await;
                }
                self.inflight = None;
            }
        }
        let f = match &mut self.inflight {
            Some(f) => f,
            None => {
                let bytes = encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
                let (transport, target, addr) =
                    (self.transport.clone(), self.target, self.addr.clone());
                let timeout = self.append_timeout;
                let task = tokio::spawn(async move {
                    let send =
                        transport.send(target, &addr, RpcKind::AppendEntries, bytes, timeout);
                    match tokio::time::timeout(timeout, send).await {
                        Ok(r) => r,
                        Err(_) => Err(TransportError::Failed {
                            target,
                            reason: format!("no reply to an append within {timeout:?}"),
                        }),
                    }
                });
                self.inflight.insert(InflightAppend {
                    vote: rpc.vote,
                    prev: rpc.prev_log_id,
                    last,
                    task,
                })
            }
        };
        let joined = (&mut f.task).await;
        let sent_last = f.last;
        self.inflight = None;
        let reply = joined.unwrap_or_else(|e| {
            Err(TransportError::Failed {
                target: self.target,
                reason: format!("the append task ended: {e}"),
            })
        });
        let resp: AppendEntriesResponse<u64> = self.reply(reply)?;
        // The reply answers the attempt that was sent, which may have carried fewer entries.
        Ok(match resp {
            AppendEntriesResponse::Success if sent_last < last => {
                AppendEntriesResponse::PartialSuccess(sent_last)
            }
            other => other,
        })
    }
}

impl Connection {
    /// Sends, in a task of its own, the heartbeat of `rpc`'s leader at `rpc`'s position (no
    /// entries); its reply only counts as a contact.
    fn keepalive(&self, rpc: &AppendEntriesRequest<TypeConfig>, timeout: Duration) {
        let beat: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            leader_commit: rpc.leader_commit,
            entries: Vec::new(),
        };
        let Ok(bytes) = encode(&beat) else {
            return;
        };
        let (transport, contacts, target, addr) = (
            self.transport.clone(),
            self.contacts.clone(),
            self.target,
            self.addr.clone(),
        );
        tokio::spawn(async move {
            let send = transport.send(target, &addr, RpcKind::AppendEntries, bytes, timeout);
            if let Ok(Ok(_)) = tokio::time::timeout(timeout, send).await {
                contacts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(target, std::time::Instant::now());
            }
        });
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, OrRaftError<u64>>> {
        if rpc.entries.is_empty() {
            // A heartbeat: openraft's deadline (the heartbeat interval).
            return self.call(RpcKind::AppendEntries, &rpc, &option).await;
        }
        self.append_detached(rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, OrRaftError<u64, InstallSnapshotError>>,
    > {
        self.call(RpcKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, OrRaftError<u64>>> {
        self.call(RpcKind::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable node every 200 ms (openraft's default is 500 ms).
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_kind_codes_roundtrip() {
        for k in [
            RpcKind::AppendEntries,
            RpcKind::Vote,
            RpcKind::InstallSnapshot,
            RpcKind::Propose,
        ] {
            assert_eq!(RpcKind::from_code(k.code()), Some(k));
        }
        assert_eq!(RpcKind::from_code(0), None);
    }

    #[test]
    fn faults_are_seeded() {
        let draw = |seed: u64| {
            let mut f = Faults {
                rng: seed,
                drop_rate: 0.5,
                ..Faults::default()
            };
            (0..64).map(|_| f.lost()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let lost = draw(7).iter().filter(|l| **l).count();
        assert!((16..=48).contains(&lost), "{lost} of 64 lost at p=0.5");
        let mut f = Faults::default();
        assert!((0..100).all(|_| !f.lost()), "no loss by default");
        f.drop_rate = 1.0;
        assert!((0..100).all(|_| f.lost()));
        f.delay = (Duration::from_millis(5), Duration::from_millis(10));
        f.link_delay.insert((1, 2), Duration::from_millis(100));
        for _ in 0..100 {
            let d = f.latency(1, 3);
            assert!(d >= Duration::from_millis(5) && d <= Duration::from_millis(10));
            assert!(f.latency(1, 2) >= Duration::from_millis(105));
        }
    }

    #[tokio::test]
    async fn a_lost_message_times_out_and_delays_apply() {
        let net = LocalTransport::new();
        let a = net.for_node(1);
        net.seed(1);
        net.set_drop_rate(1.0);
        let start = std::time::Instant::now();
        let err = a
            .send(
                2,
                "node-2",
                RpcKind::Vote,
                vec![],
                Duration::from_millis(30),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Failed { .. }), "{err:?}");
        assert!(start.elapsed() >= Duration::from_millis(30));

        net.set_drop_rate(0.0);
        net.set_link_delay(1, 2, Duration::from_millis(20));
        let start = std::time::Instant::now();
        let err = a
            .send(2, "node-2", RpcKind::Vote, vec![], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(err.to_string().contains("no such node"), "{err}");

        // A partition is checked again when the delayed message arrives.
        let send = a.send(2, "node-2", RpcKind::Vote, vec![], Duration::from_secs(5));
        let cut = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            net.cut(1, 2);
        };
        let (res, ()) = tokio::join!(send, cut);
        assert!(res.unwrap_err().to_string().contains("partitioned"));

        net.heal();
        net.clear_faults();
        let start = std::time::Instant::now();
        a.send(2, "node-2", RpcKind::Vote, vec![], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(20));
    }
}
