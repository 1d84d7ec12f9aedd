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
//! Implementations here: [`NoTransport`] (a one-member cluster) and [`LocalTransport`] (several
//! nodes in one process, with partitions for tests).

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
use openraft::BasicNode;
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
}

impl RpcKind {
    /// A stable small number for wire formats.
    pub fn code(self) -> u8 {
        match self {
            RpcKind::AppendEntries => 1,
            RpcKind::Vote => 2,
            RpcKind::InstallSnapshot => 3,
        }
    }

    /// The inverse of [`RpcKind::code`].
    pub fn from_code(code: u8) -> Option<RpcKind> {
        match code {
            1 => Some(RpcKind::AppendEntries),
            2 => Some(RpcKind::Vote),
            3 => Some(RpcKind::InstallSnapshot),
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
}

/// An in-process network between [`RaftNode`]s, for tests and simulations.
///
/// One `LocalTransport::new()` is the network; each node is opened with its own endpoint
/// `net.for_node(id)` (so the network knows who sends) and then registered with
/// `net.register(&node)`. Messages go through the same byte encoding as a real transport.
/// [`LocalTransport::isolate`] and [`LocalTransport::cut`] simulate partitions.
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

    /// Undo every isolation and cut.
    pub fn heal(&self) {
        let mut hub = self.hub();
        hub.isolated.clear();
        hub.cut.clear();
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
        _timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let node = {
            let hub = self.hub();
            if let Some(from) = self.from {
                if hub.isolated.contains(&from)
                    || hub.isolated.contains(&target)
                    || hub.cut.contains(&(from, target))
                {
                    return Err(TransportError::Unreachable {
                        target,
                        reason: "partitioned".into(),
                    });
                }
            }
            hub.nodes.get(&target).and_then(Weak::upgrade)
        };
        let Some(inner) = node else {
            return Err(TransportError::Unreachable {
                target,
                reason: "no such node on the local network".into(),
            });
        };
        RaftNode { inner }
            .handle_rpc(kind, &request)
            .await
            .map_err(|e| TransportError::Failed {
                target,
                reason: e.to_string(),
            })
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
    }
}

// ---------------------------------------------------------------------------------------------
// openraft's network traits over a RaftTransport.

/// openraft's network factory over a [`RaftTransport`].
pub(crate) struct Network {
    pub(crate) transport: Arc<dyn RaftTransport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// A client for one remote node.
pub(crate) struct Connection {
    target: u64,
    addr: String,
    transport: Arc<dyn RaftTransport>,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        kind: RpcKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, OrRaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let bytes = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .transport
            .send(self.target, &self.addr, kind, bytes, option.hard_ttl())
            .await
            .map_err(|e| match e {
                TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
            })?;
        let res: Result<Resp, OrRaftError<u64, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, OrRaftError<u64>>> {
        self.call(RpcKind::AppendEntries, &rpc, &option).await
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
        ] {
            assert_eq!(RpcKind::from_code(k.code()), Some(k));
        }
        assert_eq!(RpcKind::from_code(0), None);
    }
}
