//! The daemon's side of the node-to-node protocol (shoal-rpc): the services a node serves on
//! its cluster address, who it lets in, and where it listens.
//!
//! ```text
//!  every node      Logs        RuntimeLogs over this node's runtimes (callers: managers)
//!  managers        Ca          CaService: root CA, first certificate against a join token
//!                  Raft        RaftService: raft bytes, forwarded proposals, AddManager
//!                  Dispatcher  DispatcherGate: the leader's Dispatcher; followers answer
//!                              NotLeader(leader address) so agents fail over to the leader;
//!                              answers carry the caller's recorded role (promote / demote)
//!  PeerFn          certificate → Peer, refusing another cluster's and removed nodes'
//! ```

use shoal_api::{
    engine, new_id, ManagerStatus, Meta, Node, NodeRole, NodeState, NodeStatus, Object,
    Reachability,
};
use shoal_ca::{NodeIdentity, Role, RootCa};
use shoal_manager::dispatcher::{DispatchError, Dispatcher};
use shoal_raft::{RaftError, RaftNode, RaftRole, RpcKind};
use shoal_rpc::{
    CaHandler, DispatcherHandler, IssueRequest, IssuedCertificate, ManagerMember, Peer, PeerFn,
    PeerRole, RaftHandler, RpcError,
};
use shoal_store::{Store, StoreError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Docker's (swarmkit's) refusal of a join token that is not the cluster's.
pub const INVALID_JOIN_TOKEN: &str = "A valid join token is necessary to join this cluster";

/// The node-to-node addresses of the managers, from the store (sorted).
pub fn manager_addrs(store: &Store) -> Vec<String> {
    let mut v: Vec<String> = store.view(|s| {
        s.nodes
            .values()
            .filter_map(|n| n.manager_status.as_ref())
            .map(|m| m.addr.clone())
            .filter(|a| !a.is_empty())
            .collect()
    });
    v.sort();
    v.dedup();
    v
}

/// The host part of `host:port`.
pub fn host_of(addr: &str) -> String {
    match addr.parse::<SocketAddr>() {
        Ok(sa) => sa.ip().to_string(),
        Err(_) => addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']').to_string())
            .unwrap_or_else(|| addr.to_string()),
    }
}

/// Where to bind the node-to-node server. A wildcard listen address (`0.0.0.0:2377`, the
/// CLI's default) with a loopback advertise address binds that loopback address only: nothing
/// off this machine can use a loopback advertisement anyway, and it lets several daemons share
/// one machine (each on its own 127.x address).
pub fn bind_addr(listen: &str, advertise: &str) -> anyhow::Result<SocketAddr> {
    let mut sa: SocketAddr = listen.parse().map_err(|e| {
        anyhow::anyhow!("invalid listen address {listen:?}: {e} (expected IP:PORT)")
    })?;
    if sa.ip().is_unspecified() {
        if let Ok(ip) = host_of(advertise).parse::<std::net::IpAddr>() {
            if ip.is_loopback() {
                sa.set_ip(ip);
            }
        }
    }
    Ok(sa)
}

/// Binds the node-to-node listener, with Docker's message when the port is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "failed to listen on remote API address: listen tcp {addr}: bind: {e} (choose another address with --listen-addr)"
        )
    })
}

/// Serves the node-to-node protocol until `shutdown`: on `first` if given, else on `addr`,
/// binding again (every second) while the address is taken (a restart right after a crash).
pub async fn serve(
    addr: SocketAddr,
    first: Option<TcpListener>,
    tls: Arc<rustls::ServerConfig>,
    peer_fn: PeerFn,
    handlers: shoal_rpc::Handlers,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut first = first;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let listener = match first.take() {
            Some(l) => l,
            None => match bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "node-to-node server cannot listen yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            },
        };
        let res = shoal_rpc::serve(
            listener,
            tls.clone(),
            peer_fn.clone(),
            handlers.clone(),
            shutdown.clone(),
        )
        .await;
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = res {
            tracing::warn!(error = %e, "node-to-node server failed; restarting");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Maps a verified client certificate to the node it names: only nodes of this cluster that
/// were not removed (`store` is a manager's; workers have none and check the cluster only).
pub fn peer_fn(cluster_id: String, store: Option<Store>) -> PeerFn {
    Arc::new(move |der: &[u8]| {
        let id: NodeIdentity = shoal_ca::peer_identity(der).ok()?;
        if id.cluster_id != cluster_id {
            tracing::warn!(node = %id.node_id, cluster = %id.cluster_id, "refusing a certificate of another swarm");
            return None;
        }
        if let Some(store) = &store {
            let removed = store.view(|s| {
                s.cluster
                    .as_ref()
                    .is_some_and(|c| c.removed_nodes.contains(&id.node_id))
            });
            if removed {
                tracing::warn!(node = %id.node_id, "refusing the certificate of a removed node");
                return None;
            }
        }
        Some(Peer {
            node_id: id.node_id,
            role: match id.role {
                Role::Manager => PeerRole::Manager,
                Role::Worker => PeerRole::Worker,
            },
        })
    })
}

fn store_err(e: StoreError) -> RpcError {
    match e {
        StoreError::Unavailable(m) => RpcError::Unavailable(m),
        StoreError::NotFound { .. } => RpcError::NotFound(e.to_string()),
        StoreError::Exists { .. } => RpcError::AlreadyExists(e.to_string()),
        other => RpcError::Internal(other.to_string()),
    }
}

fn not_leader(raft: &RaftNode) -> RpcError {
    let leader = raft.leader_addr();
    RpcError::NotLeader {
        message: match &leader {
            Some((id, addr)) => {
                format!("this manager is not the leader; the leader is raft member {id} at {addr}")
            }
            None => "this manager is not the leader and no leader is known yet".into(),
        },
        leader_addr: leader.map(|(_, a)| a),
    }
}

/// The node certificate validity the cluster asks for (`CAConfig.NodeCertExpiry`).
fn cert_validity(store: &Store) -> Duration {
    store
        .view(|s| {
            s.cluster
                .as_ref()
                .and_then(|c| c.spec.ca_config.as_ref())
                .and_then(|c| c.node_cert_expiry)
        })
        .filter(|ns| *ns > 0)
        .map(|ns| Duration::from_nanos(ns as u64))
        .unwrap_or(shoal_ca::DEFAULT_NODE_CERT_VALIDITY)
        .max(shoal_ca::MIN_NODE_CERT_VALIDITY)
}

fn signing_root(store: &Store) -> Result<(RootCa, String), RpcError> {
    let cluster = store
        .view(|s| s.cluster.clone())
        .ok_or_else(|| RpcError::Unavailable("this manager has no swarm state yet".into()))?;
    if cluster.root_ca_key.is_empty() {
        return Err(RpcError::FailedPrecondition(
            "this swarm has no root CA key to sign with".into(),
        ));
    }
    let root = RootCa::from_pem(&cluster.root_ca_cert, Some(&cluster.root_ca_key))
        .map_err(|e| RpcError::Internal(format!("the swarm's root CA is unusable: {e}")))?;
    Ok((root, cluster.id))
}

/// `Ca`: the swarm's certificate authority, on every manager.
pub struct CaService {
    pub store: Store,
}

#[async_trait::async_trait]
impl CaHandler for CaService {
    async fn root_ca(&self) -> Result<String, RpcError> {
        self.store
            .view(|s| s.cluster.as_ref().map(|c| c.root_ca_cert.clone()))
            .filter(|pem| !pem.is_empty())
            .ok_or_else(|| RpcError::Unavailable("this manager has no swarm state yet".into()))
    }

    async fn issue_certificate(
        &self,
        _caller: Option<&Peer>,
        req: IssueRequest,
    ) -> Result<IssuedCertificate, RpcError> {
        let (worker_token, manager_token) = self
            .store
            .view(|s| {
                s.cluster
                    .as_ref()
                    .map(|c| (c.worker_join_token.clone(), c.manager_join_token.clone()))
            })
            .ok_or_else(|| RpcError::Unavailable("this manager has no swarm state yet".into()))?;
        let Some(role) = shoal_ca::role_for(&req.token, &worker_token, &manager_token) else {
            return Err(RpcError::InvalidArgument(INVALID_JOIN_TOKEN.into()));
        };
        let availability = match req.availability.as_str() {
            "" | "active" => engine::NodeSpecAvailabilityEnum::ACTIVE,
            "pause" => engine::NodeSpecAvailabilityEnum::PAUSE,
            "drain" => engine::NodeSpecAvailabilityEnum::DRAIN,
            other => {
                return Err(RpcError::InvalidArgument(format!(
                    "invalid availability {other:?}: expected active, pause or drain"
                )))
            }
        };
        let (root, cluster_id) = signing_root(&self.store)?;
        let node_id = new_id();
        let cert_pem = root
            .issue(&req.csr_pem, &node_id, role, cert_validity(&self.store))
            .map_err(|e| RpcError::InvalidArgument(e.to_string()))?;
        let addr_port = if req.advertise_addr.is_empty() {
            let port = req
                .listen_addr
                .parse::<SocketAddr>()
                .map(|a| a.port())
                .unwrap_or(shoal_rpc::DEFAULT_PORT);
            req.remote_addr
                .map(|r| SocketAddr::new(r.ip(), port).to_string())
                .unwrap_or_default()
        } else {
            req.advertise_addr.clone()
        };
        let (node_role, spec_role) = match role {
            Role::Manager => (NodeRole::Manager, engine::NodeSpecRoleEnum::MANAGER),
            Role::Worker => (NodeRole::Worker, engine::NodeSpecRoleEnum::WORKER),
        };
        let node = Node {
            id: node_id.clone(),
            meta: Meta::new_now(),
            spec: engine::NodeSpec {
                name: None,
                labels: Some(HashMap::new()),
                role: Some(spec_role),
                availability: Some(availability),
            },
            description: engine::NodeDescription {
                hostname: Some(req.hostname.clone()).filter(|h| !h.is_empty()),
                ..Default::default()
            },
            status: NodeStatus {
                state: NodeState::Unknown,
                message: String::new(),
                addr: host_of(&addr_port),
            },
            role: node_role,
            // A manager becomes a Raft member when it asks (Raft.AddManager).
            manager_status: None,
            addr_port,
            network_addresses: Default::default(),
        };
        self.store
            .update(|tx| tx.create(Object::Node(node)))
            .await
            .map_err(store_err)?;
        tracing::info!(node = %node_id, %role, hostname = %req.hostname, "issued a certificate to a joining node");
        Ok(IssuedCertificate {
            node_id,
            cert_pem,
            root_pem: root.cert_pem().to_string(),
            role: match role {
                Role::Manager => PeerRole::Manager,
                Role::Worker => PeerRole::Worker,
            },
            manager_addrs: manager_addrs(&self.store),
            cluster_id,
        })
    }

    async fn renew_certificate(&self, caller: &Peer, csr_pem: String) -> Result<String, RpcError> {
        let role = self
            .store
            .view(|s| s.nodes.get(&caller.node_id).map(|n| n.role))
            .ok_or_else(|| {
                RpcError::NotFound(format!("node {} is not part of this swarm", caller.node_id))
            })?;
        let role = match role {
            NodeRole::Manager => Role::Manager,
            NodeRole::Worker => Role::Worker,
        };
        let (root, _) = signing_root(&self.store)?;
        root.issue(&csr_pem, &caller.node_id, role, cert_validity(&self.store))
            .map_err(|e| RpcError::InvalidArgument(e.to_string()))
    }
}

/// `Raft`: consensus traffic, forwarded proposals and membership, on every manager.
pub struct RaftService {
    pub store: Store,
    pub raft: RaftNode,
}

impl RaftService {
    /// On the leader: takes manager `node_id` (Raft member `raft_id`) out of the Raft group;
    /// its node stays listed, as a worker that is no longer a member (so `node rm` can delete
    /// it once it is down).
    pub async fn remove(&self, node_id: &str, raft_id: u64) -> Result<(), RpcError> {
        if self.raft.metrics().role != RaftRole::Leader {
            return Err(not_leader(&self.raft));
        }
        let id = node_id.to_string();
        self.store
            .update(|tx| {
                if let Some(mut n) = tx.get_node(&id) {
                    n.manager_status = None;
                    n.role = NodeRole::Worker;
                    n.spec.role = Some(engine::NodeSpecRoleEnum::WORKER);
                    tx.update(Object::Node(n))?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .map_err(store_err)?;
        self.raft
            .remove_member(raft_id)
            .await
            .map_err(RpcError::from)
    }
}

#[async_trait::async_trait]
impl RaftHandler for RaftService {
    async fn call(&self, kind: RpcKind, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        self.raft
            .handle_rpc(kind, &payload)
            .await
            .map_err(RpcError::from)
    }

    async fn add_manager(&self, caller: &Peer, member: ManagerMember) -> Result<(), RpcError> {
        if caller.node_id != member.node_id {
            return Err(RpcError::PermissionDenied(format!(
                "node {} may only add itself to the managers, not {}",
                caller.node_id, member.node_id
            )));
        }
        if self.raft.metrics().role != RaftRole::Leader {
            return Err(not_leader(&self.raft));
        }
        let node = self
            .store
            .view(|s| s.nodes.get(&member.node_id).cloned())
            .ok_or_else(|| {
                RpcError::NotFound(format!("node {} is not part of this swarm", member.node_id))
            })?;
        if node.role != NodeRole::Manager {
            return Err(RpcError::PermissionDenied(format!(
                "node {} is not a manager",
                member.node_id
            )));
        }
        if member.raft_id == 0 || member.addr.is_empty() {
            return Err(RpcError::InvalidArgument(
                "a manager needs a raft ID and an address".into(),
            ));
        }
        self.raft
            .add_voter(member.raft_id, &member.addr)
            .await
            .map_err(|e| match e {
                RaftError::NotLeader { .. } => not_leader(&self.raft),
                other => RpcError::from(other),
            })?;
        let id = member.node_id.clone();
        self.store
            .update(|tx| {
                if let Some(mut n) = tx.get_node(&id) {
                    n.manager_status = Some(ManagerStatus {
                        leader: false,
                        reachability: Reachability::Reachable,
                        addr: member.addr.clone(),
                        raft_id: member.raft_id,
                    });
                    n.addr_port = member.addr.clone();
                    tx.update(Object::Node(n))?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .map_err(store_err)?;
        tracing::info!(node = %member.node_id, raft_id = member.raft_id, addr = %member.addr, "manager joined the raft group");
        Ok(())
    }

    async fn remove_manager(&self, _caller: &Peer, member: ManagerMember) -> Result<(), RpcError> {
        self.remove(&member.node_id, member.raft_id).await
    }
}

/// `Dispatcher` on a manager: the leader's [`Dispatcher`] while this node leads; otherwise
/// every call answers NotLeader with the leader's address, so agents move to the leader.
pub struct DispatcherGate {
    store: Store,
    raft: RaftNode,
    current: RwLock<Option<Arc<Dispatcher>>>,
    /// Flips on every change of `current`: open assignment streams end when it does.
    epoch: watch::Sender<u64>,
}

impl DispatcherGate {
    pub fn new(store: Store, raft: RaftNode) -> Arc<Self> {
        Arc::new(DispatcherGate {
            store,
            raft,
            current: RwLock::new(None),
            epoch: watch::channel(0).0,
        })
    }

    /// The dispatcher to serve with (`None`: not the leader).
    pub fn set(&self, d: Option<Arc<Dispatcher>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = d;
        self.epoch.send_modify(|e| *e += 1);
    }

    fn dispatcher(&self) -> Result<Arc<Dispatcher>, RpcError> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| not_leader(&self.raft))
    }
}

fn dispatch_err(e: DispatchError) -> RpcError {
    match e {
        DispatchError::UnknownNode(_) => RpcError::NotFound(e.to_string()),
        DispatchError::Store(s) => store_err(s),
    }
}

#[async_trait::async_trait]
impl DispatcherHandler for DispatcherGate {
    async fn register(
        &self,
        node_id: &str,
        description: engine::NodeDescription,
        addr: &str,
    ) -> Result<Duration, RpcError> {
        self.dispatcher()?
            .register(node_id, description, addr)
            .await
            .map_err(dispatch_err)
    }

    async fn heartbeat(&self, node_id: &str) -> Result<Duration, RpcError> {
        self.dispatcher()?
            .heartbeat(node_id)
            .await
            .map_err(dispatch_err)
    }

    async fn assignments(
        &self,
        node_id: &str,
    ) -> Result<futures::stream::BoxStream<'static, shoal_api::dispatch::AssignmentSet>, RpcError>
    {
        use futures::StreamExt;
        let d = self.dispatcher()?;
        let mut epoch = self.epoch.subscribe();
        epoch.borrow_and_update();
        // Ends when this node stops leading, so the agent re-registers with the new leader.
        let ended = async move {
            let _ = epoch.changed().await;
        };
        Ok(d.assignments(node_id).take_until(Box::pin(ended)).boxed())
    }

    async fn report(
        &self,
        node_id: &str,
        updates: Vec<shoal_api::dispatch::StatusUpdate>,
    ) -> Result<(), RpcError> {
        self.dispatcher()?
            .report(node_id, updates)
            .await
            .map_err(dispatch_err)
    }

    fn manager_addrs(&self) -> Vec<String> {
        manager_addrs(&self.store)
    }

    fn node_role(&self, node_id: &str) -> Option<PeerRole> {
        self.store.view(|s| {
            s.nodes.get(node_id).map(|n| match n.role {
                NodeRole::Manager => PeerRole::Manager,
                NodeRole::Worker => PeerRole::Worker,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::Cluster;
    use shoal_ca::{JoinToken, NodeCredentials};

    /// A store holding a cluster with a real root CA; returns it and the (worker, manager)
    /// tokens.
    async fn cluster_store() -> (Store, String, String) {
        let root = RootCa::generate("cluster1").unwrap();
        let (worker, manager) = (
            JoinToken::for_root(&root).to_string(),
            JoinToken::for_root(&root).to_string(),
        );
        let store = Store::new();
        let cluster = Cluster {
            id: "cluster1".into(),
            meta: Meta::new_now(),
            spec: Default::default(),
            worker_join_token: worker.clone(),
            manager_join_token: manager.clone(),
            root_ca_cert: root.cert_pem().to_string(),
            root_ca_key: root.key_pem().unwrap().to_string(),
            removed_nodes: Vec::new(),
            unlock_key: String::new(),
            default_addr_pool: Vec::new(),
            subnet_size: 24,
            data_path_port: 4789,
        };
        store
            .update(|tx| tx.create(Object::Cluster(cluster)))
            .await
            .unwrap();
        (store, worker, manager)
    }

    fn request(token: &str) -> (IssueRequest, shoal_ca::NodeKeyRequest) {
        let key = NodeCredentials::generate_csr().unwrap();
        let req = IssueRequest {
            csr_pem: key.csr_pem.clone(),
            token: token.to_string(),
            availability: "drain".into(),
            advertise_addr: "127.0.0.3:2377".into(),
            listen_addr: "0.0.0.0:2377".into(),
            hostname: "box".into(),
            remote_addr: None,
        };
        (req, key)
    }

    #[tokio::test]
    async fn a_wrong_token_is_refused_and_nothing_is_stored() {
        let (store, worker, _) = cluster_store().await;
        let ca = CaService {
            store: store.clone(),
        };
        let (prefix, _) = worker.rsplit_once('-').unwrap();
        for bad in [format!("{prefix}-{}", "0".repeat(25)), "SWMTKN-1-x".into()] {
            let err = ca
                .issue_certificate(None, request(&bad).0)
                .await
                .unwrap_err();
            assert_eq!(err, RpcError::InvalidArgument(INVALID_JOIN_TOKEN.into()));
        }
        assert!(store.view(|s| s.nodes.is_empty()));
    }

    #[tokio::test]
    async fn the_token_decides_the_role_and_the_node_is_recorded() {
        let (store, worker, manager) = cluster_store().await;
        let ca = CaService {
            store: store.clone(),
        };
        let (req, key) = request(&worker);
        let issued = ca.issue_certificate(None, req).await.unwrap();
        assert_eq!(issued.role, PeerRole::Worker);
        assert_eq!(issued.cluster_id, "cluster1");
        let creds = key
            .into_credentials(issued.cert_pem, issued.root_pem)
            .unwrap();
        let id = creds.identity().unwrap();
        assert_eq!(
            (id.node_id.as_str(), id.role),
            (issued.node_id.as_str(), Role::Worker)
        );
        let node = store.view(|s| s.nodes[&issued.node_id].clone());
        assert_eq!(node.status.state, NodeState::Unknown);
        assert_eq!(node.status.addr, "127.0.0.3");
        assert_eq!(node.addr_port, "127.0.0.3:2377");
        assert_eq!(node.role, NodeRole::Worker);
        assert_eq!(
            node.spec.availability,
            Some(engine::NodeSpecAvailabilityEnum::DRAIN)
        );
        assert_eq!(node.hostname(), "box");
        assert!(node.manager_status.is_none());

        let issued = ca
            .issue_certificate(None, request(&manager).0)
            .await
            .unwrap();
        assert_eq!(issued.role, PeerRole::Manager);
        let node = store.view(|s| s.nodes[&issued.node_id].clone());
        assert_eq!(node.role, NodeRole::Manager);
        // A renewal keeps the identity and the role the store records.
        let renewed = ca
            .renew_certificate(
                &Peer::manager(issued.node_id.clone()),
                NodeCredentials::generate_csr().unwrap().csr_pem,
            )
            .await
            .unwrap();
        let root = RootCa::from_pem(&issued.root_pem, None).unwrap();
        let id = root
            .verify_pem(&renewed, std::time::SystemTime::now())
            .unwrap();
        assert_eq!((id.node_id, id.role), (issued.node_id, Role::Manager));
    }

    #[test]
    fn wildcard_listen_with_loopback_advertise_binds_the_loopback_address() {
        assert_eq!(
            bind_addr("0.0.0.0:2377", "127.0.0.3:2377").unwrap(),
            "127.0.0.3:2377".parse().unwrap()
        );
        assert_eq!(
            bind_addr("0.0.0.0:2377", "10.1.2.3:2377").unwrap(),
            "0.0.0.0:2377".parse().unwrap()
        );
        assert_eq!(
            bind_addr("127.0.0.5:4000", "127.0.0.3:2377").unwrap(),
            "127.0.0.5:4000".parse().unwrap()
        );
        assert!(bind_addr("nonsense", "").is_err());
        assert_eq!(host_of("127.0.0.3:2377"), "127.0.0.3");
        assert_eq!(host_of("[::1]:2377"), "::1");
        assert_eq!(host_of("node1:2377"), "node1");
    }
}
