//! The server-side seams: one handler trait per service, and the plain types they take.
//!
//! The server authenticates and authorizes every call (see [`crate::auth`]) before a handler
//! runs, and passes the authenticated [`Peer`] where it matters: handlers never read an identity
//! from a request. A service without a handler answers `Unimplemented` ("this node does not serve
//! ..."), so a worker runs the same server with only [`Handlers::logs`] set.
//!
//! ```text
//!  Ca          CaHandler          root CA, first certificate (join token), renewal
//!  Dispatcher  DispatcherHandler  register / heartbeat / assignments / report, for peer.node_id
//!  Raft        RaftHandler        raft bytes -> RaftNode::handle_rpc; membership changes
//!  Control     ControlHandler     an Engine API request forwarded by a follower manager
//!  Logs        LogsHandler        a task's output on this node
//! ```
//!
//! Ready-made adapters: [`ManagerLinkHandler`] serves the Dispatcher with any
//! [`ManagerLink`] (such as the daemon's in-process link to its dispatcher), and [`RuntimeLogs`]
//! serves Logs from this node's runtimes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use shoal_agent::runtime::{LogLine, LogOptions, Runtime};
use shoal_agent::worker::ManagerLink;
use shoal_api::dispatch::{AssignmentSet, StatusUpdate};
use shoal_api::engine;
use shoal_raft::RpcKind;

use crate::{Peer, PeerRole, RpcError};

/// A streamed HTTP body: chunks, or an error that ends it.
pub type BodyStream = BoxStream<'static, Result<Bytes, RpcError>>;

/// What a joining node sends to get its first certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssueRequest {
    /// PKCS#10 certificate signing request, PEM.
    pub csr_pem: String,
    /// The join token (`SWMTKN-1-...`); it decides the role.
    pub token: String,
    /// Requested availability: `active`, `pause` or `drain` (empty: active).
    pub availability: String,
    /// The address the node advertises to other nodes (may be empty).
    pub advertise_addr: String,
    /// The address it listens on.
    pub listen_addr: String,
    /// Its hostname.
    pub hostname: String,
    /// Filled in by the server: the TCP address the request came from (to default the
    /// advertised address). Not sent on the wire.
    pub remote_addr: Option<SocketAddr>,
}

/// The answer to an [`IssueRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The ID given to the new node (the certificate's CN).
    pub node_id: String,
    /// The node certificate, PEM.
    pub cert_pem: String,
    /// The root CA certificate, PEM.
    pub root_pem: String,
    /// The role the token granted.
    pub role: PeerRole,
    /// Node-to-node addresses of the managers, to connect to.
    pub manager_addrs: Vec<String>,
    /// The cluster ID (the certificate's O).
    pub cluster_id: String,
}

/// Serves `Ca`: the cluster's certificate authority.
#[async_trait::async_trait]
pub trait CaHandler: Send + Sync + 'static {
    /// The root CA certificate, PEM. Anonymous callers allowed.
    async fn root_ca(&self) -> Result<String, RpcError>;
    /// Issues a first certificate. `caller` is `None` for an anonymous (joining) node. A wrong
    /// token should be [`RpcError::PermissionDenied`] or [`RpcError::InvalidArgument`] with a
    /// message that says so.
    async fn issue_certificate(
        &self,
        caller: Option<&Peer>,
        req: IssueRequest,
    ) -> Result<IssuedCertificate, RpcError>;
    /// Renews the calling node's certificate: identity and role come from `caller` (its current
    /// certificate), the key from the CSR. Returns the new certificate, PEM.
    async fn renew_certificate(&self, caller: &Peer, csr_pem: String) -> Result<String, RpcError>;
}

/// Serves `Dispatcher`: agent sessions. `node_id` is always the authenticated caller's.
#[async_trait::async_trait]
pub trait DispatcherHandler: Send + Sync + 'static {
    /// Opens a session; returns the heartbeat period.
    async fn register(
        &self,
        node_id: &str,
        description: engine::NodeDescription,
        addr: &str,
    ) -> Result<Duration, RpcError>;
    /// Keeps the session alive; returns the heartbeat period.
    async fn heartbeat(&self, node_id: &str) -> Result<Duration, RpcError>;
    /// The node's assignment sets: the current one, then one per change.
    async fn assignments(
        &self,
        node_id: &str,
    ) -> Result<BoxStream<'static, AssignmentSet>, RpcError>;
    /// Task status changes seen by the node.
    async fn report(&self, node_id: &str, updates: Vec<StatusUpdate>) -> Result<(), RpcError>;
    /// The managers' node-to-node addresses, sent with every register and heartbeat answer so
    /// agents keep an up-to-date list to fail over to. Empty: say nothing.
    fn manager_addrs(&self) -> Vec<String> {
        Vec::new()
    }
    /// The role the swarm records for `node_id`, sent with every register and heartbeat
    /// answer: a node whose certificate says otherwise renews it and changes roles
    /// (`node promote` / `node demote`). `None`: say nothing.
    fn node_role(&self, _node_id: &str) -> Option<PeerRole> {
        None
    }
}

/// A Raft member, as named in membership requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerMember {
    /// The manager's node ID.
    pub node_id: String,
    /// Its Raft ID.
    pub raft_id: u64,
    /// Its node-to-node address (empty in removals).
    pub addr: String,
}

/// Serves `Raft`: consensus traffic and membership requests between managers.
#[async_trait::async_trait]
pub trait RaftHandler: Send + Sync + 'static {
    /// One Raft RPC: hand it to `RaftNode::handle_rpc(kind, &payload)` and return its bytes.
    async fn call(&self, kind: RpcKind, payload: Vec<u8>) -> Result<Vec<u8>, RpcError>;
    /// Adds `member` (always the calling manager itself) to the membership. A follower should
    /// answer [`RpcError::NotLeader`] with the leader's address.
    async fn add_manager(&self, caller: &Peer, member: ManagerMember) -> Result<(), RpcError>;
    /// Removes `member` from the membership (asked by any manager).
    async fn remove_manager(&self, caller: &Peer, member: ManagerMember) -> Result<(), RpcError>;
}

/// Serves `Control`: Engine API requests forwarded from a follower manager to the leader.
#[async_trait::async_trait]
pub trait ControlHandler: Send + Sync + 'static {
    /// Runs the request as if it had arrived on this node's Engine API, and returns the whole
    /// response.
    async fn forward_api(
        &self,
        caller: &Peer,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, RpcError>;

    /// The same with a streamed body (logs with `follow`, events). The default runs
    /// [`ControlHandler::forward_api`] and sends its body as one chunk.
    async fn forward_api_stream(
        &self,
        caller: &Peer,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<BodyStream>, RpcError> {
        let resp = self.forward_api(caller, req).await?;
        Ok(resp
            .map(|body| -> BodyStream { Box::pin(futures::stream::once(async move { Ok(body) })) }))
    }
}

/// Serves `Logs`: the output of a task running on this node.
#[async_trait::async_trait]
pub trait LogsHandler: Send + Sync + 'static {
    /// The lines of `task_id`'s output selected by `opts`. Unknown task: [`RpcError::NotFound`].
    async fn task_logs(
        &self,
        caller: &Peer,
        task_id: &str,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, RpcError>;
}

/// The handlers a node serves; `None` means the service answers `Unimplemented`.
#[derive(Clone, Default)]
pub struct Handlers {
    /// `Ca` (managers).
    pub ca: Option<Arc<dyn CaHandler>>,
    /// `Dispatcher` (managers).
    pub dispatcher: Option<Arc<dyn DispatcherHandler>>,
    /// `Raft` (managers).
    pub raft: Option<Arc<dyn RaftHandler>>,
    /// `Control` (managers).
    pub control: Option<Arc<dyn ControlHandler>>,
    /// `Logs` (every node that runs tasks).
    pub logs: Option<Arc<dyn LogsHandler>>,
}

impl Handlers {
    /// No services.
    pub fn new() -> Self {
        Self::default()
    }

    /// With a `Ca` handler.
    pub fn with_ca(mut self, h: Arc<dyn CaHandler>) -> Self {
        self.ca = Some(h);
        self
    }

    /// With a `Dispatcher` handler.
    pub fn with_dispatcher(mut self, h: Arc<dyn DispatcherHandler>) -> Self {
        self.dispatcher = Some(h);
        self
    }

    /// With a `Raft` handler.
    pub fn with_raft(mut self, h: Arc<dyn RaftHandler>) -> Self {
        self.raft = Some(h);
        self
    }

    /// With a `Control` handler.
    pub fn with_control(mut self, h: Arc<dyn ControlHandler>) -> Self {
        self.control = Some(h);
        self
    }

    /// With a `Logs` handler.
    pub fn with_logs(mut self, h: Arc<dyn LogsHandler>) -> Self {
        self.logs = Some(h);
        self
    }
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("ca", &self.ca.is_some())
            .field("dispatcher", &self.dispatcher.is_some())
            .field("raft", &self.raft.is_some())
            .field("control", &self.control.is_some())
            .field("logs", &self.logs.is_some())
            .finish()
    }
}

/// Serves the Dispatcher with a [`ManagerLink`] (for example the daemon's in-process link to its
/// own `shoal_manager::dispatcher::Dispatcher`). Link errors become
/// [`RpcError::FailedPrecondition`] with the link's message.
pub struct ManagerLinkHandler<L: ?Sized>(pub Arc<L>);

fn link_err(e: shoal_agent::worker::LinkError) -> RpcError {
    RpcError::FailedPrecondition(e.0)
}

#[async_trait::async_trait]
impl<L: ManagerLink + ?Sized> DispatcherHandler for ManagerLinkHandler<L> {
    async fn register(
        &self,
        node_id: &str,
        description: engine::NodeDescription,
        addr: &str,
    ) -> Result<Duration, RpcError> {
        self.0
            .register(node_id, description, addr)
            .await
            .map_err(link_err)
    }

    async fn heartbeat(&self, node_id: &str) -> Result<Duration, RpcError> {
        self.0.heartbeat(node_id).await.map_err(link_err)
    }

    async fn assignments(
        &self,
        node_id: &str,
    ) -> Result<BoxStream<'static, AssignmentSet>, RpcError> {
        self.0.assignments(node_id).await.map_err(link_err)
    }

    async fn report(&self, node_id: &str, updates: Vec<StatusUpdate>) -> Result<(), RpcError> {
        self.0.report(node_id, updates).await.map_err(link_err)
    }
}

/// Serves Logs from this node's runtimes: the first runtime that knows the task answers.
pub struct RuntimeLogs {
    runtimes: Vec<Arc<dyn Runtime>>,
}

impl RuntimeLogs {
    /// Over these runtimes, asked in order.
    pub fn new(runtimes: impl IntoIterator<Item = Arc<dyn Runtime>>) -> Self {
        RuntimeLogs {
            runtimes: runtimes.into_iter().collect(),
        }
    }
}

#[async_trait::async_trait]
impl LogsHandler for RuntimeLogs {
    async fn task_logs(
        &self,
        _caller: &Peer,
        task_id: &str,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, RpcError> {
        for rt in &self.runtimes {
            match rt.logs(task_id, opts.clone()).await {
                Ok(s) => return Ok(s),
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(RpcError::Internal(e.to_string())),
            }
        }
        Err(RpcError::NotFound(format!(
            "task {task_id} is not known to any runtime on this node"
        )))
    }
}
