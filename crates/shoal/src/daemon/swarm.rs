//! The node's swarm life cycle: inactive → (init | join | restart with state) → active → leave.
//!
//! ```text
//!            swarm init: root CA, own manager cert, key store, Raft (1 member)
//!            swarm join: root CA pinned by the token, CSR → certificate (role from the token);
//!                        a manager also opens an empty Raft and asks the leader to add it
//!  inactive ─────────────────────────────────────────────────────────► active
//!      ▲       daemon start with <data-root>/swarm: resume            │  node-to-node server
//!      │       (a manager under autolock waits in `locked` for         │  (cluster::serve):
//!      │        `swarm unlock`)                                        │   every node: Logs
//!      │                                                               │   managers: Ca, Raft,
//!      │                                                               │   Dispatcher (leader)
//!      │                                                               │  managers: store ⇄ Raft,
//!      │                                                               │   leadership::run
//!      │                                                               │  every node: agent
//!      │                                                               │   (worker) over
//!      │                                                               │   RemoteManagerLink
//!      └──────────────── swarm leave [--force] ────────────────────────┘
//!        stop tasks, leave Raft (managers, if others remain), forget the swarm
//! ```
//!
//! While active, a node changes roles when the swarm records another role for it
//! (`node promote` / `node demote`: [`Daemon::change_role`], see `roles`), and a manager of a
//! swarm that lost its majority can start a new one-member Raft group with the state it has
//! (`swarm init --force-new-cluster`: [`Daemon::force_new_cluster`]). The autolock unlock key
//! is the swarm's (`Cluster.unlock_key`); every manager keeps its key store wrapped by it.
//!
//! One code path for every size: the agent of a one-machine swarm talks to its own manager
//! over the same mTLS link a remote worker uses.

use super::cluster::{self, CaService, DispatcherGate, RaftService};
use super::host::Host;
use super::identity::{Identity, SwarmDir};
use super::leadership;
use super::raft_glue::{RaftProposer, StoreTarget};
use super::renewal;
use super::roles;
use anyhow::Context;
use shoal_agent::runtime::Runtime;
use shoal_agent::worker::{Worker, WorkerConfig};
use shoal_api::{
    engine, new_id, Cluster, ManagerStatus, Meta, Node, NodeRole, NodeState, NodeStatus, Object,
    Reachability,
};
use shoal_ca::{DataKey, JoinToken, KeyStore, LockState, NodeCredentials, Role, RootCa, UnlockKey};
use shoal_manager::control::Control;
use shoal_net::dataplane::DataPlane;
use shoal_raft::{AeadCodec, RaftConfig, RaftNode, RaftRole};
use shoal_rpc::{
    ClientOptions, GrpcRaftTransport, Handlers, IssueRequest, ManagerMember, NodeClient, PeerRole,
    RemoteManagerLink, RpcError, RuntimeLogs,
};
use shoal_store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

/// Docker's text when a node in a swarm is asked to init or join again.
pub const ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";
/// Docker's text for swarm calls on a node outside any swarm.
pub const NOT_IN_SWARM: &str = "This node is not part of a swarm";
/// Docker's text when a manager leaves without --force.
const LEAVE_MANAGER: &str =
    "You are attempting to leave the swarm on a node that is participating as a manager. ";

/// Docker's refusal of `swarm leave` without `--force` on a manager. `stats` is what the
/// store knows of the managers: whether this one is reachable, and how many are reachable
/// and unreachable (`None` when it cannot tell).
pub fn leave_manager_message(stats: Option<(bool, usize, usize)>) -> String {
    let mut msg = LEAVE_MANAGER.to_string();
    match stats {
        Some((active, reachable, unreachable)) => {
            // Removing one reachable manager leaves fewer than a majority.
            if active && reachable.saturating_sub(2) <= unreachable {
                if reachable == 1 && unreachable == 0 {
                    msg.push_str("Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message. ");
                    return msg;
                }
                msg.push_str(&format!(
                    "Removing this node leaves {} managers out of {}. Without a Raft quorum your swarm will be inaccessible. ",
                    reachable.saturating_sub(1),
                    reachable + unreachable
                ));
            }
        }
        None => msg.push_str("Doing so may lose the consensus of your cluster. "),
    }
    msg.push_str("The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message.");
    msg
}
/// Docker's text when a locked node is asked to leave without --force.
pub const LEAVE_LOCKED: &str = "Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.";

/// How long a join may take before it is given up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Static configuration of the daemon.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub data_root: PathBuf,
    pub default_runtime: String,
    /// Leave task processes running when the daemon stops (they are adopted on restart).
    pub live_restore: bool,
    /// `--swarm-default-advertise-addr`: the address to advertise when init/join name none.
    pub default_advertise_addr: Option<String>,
    /// The datapath of the node's data plane (`--data-plane`, resolved); `None`: tasks share
    /// the node's network.
    pub datapath: Option<shoal_net::dataplane::Datapath>,
    /// `--data-plane auto`: no data plane when the node advertises a loopback address (several
    /// daemons sharing one namespace, whose overlays would collide).
    pub datapath_auto: bool,
}

/// The running parts of an active swarm member.
struct Active {
    identity: Identity,
    raft: Option<RaftNode>,
    raft_service: Option<Arc<RaftService>>,
    client_tls: Arc<rustls::ClientConfig>,
    /// Managers: the key store (autolock, renewals).
    keystore: Option<Arc<std::sync::Mutex<KeyStore>>>,
    shutdown: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

/// What synchronous status reads see of an active member.
#[derive(Clone)]
pub struct Current {
    pub identity: Identity,
    /// Managers only.
    pub control: Option<Arc<Control>>,
    /// The agent's link to the managers (its manager list is the node's view of them).
    pub link: RemoteManagerLink,
    /// This node's client TLS config (to call other nodes, e.g. their Logs).
    pub client_tls: Arc<rustls::ClientConfig>,
}

/// What `start` needs.
struct Parts {
    identity: Identity,
    creds: NodeCredentials,
    raft: Option<RaftNode>,
    keystore: Option<Arc<std::sync::Mutex<KeyStore>>>,
    listener: Option<TcpListener>,
}

/// One machine's daemon: its store, runtimes, and (while in a swarm) its running roles.
pub struct Daemon {
    pub cfg: DaemonConfig,
    pub host: Host,
    pub store: Store,
    pub runtimes: HashMap<String, Arc<dyn Runtime>>,
    swarm_dir: SwarmDir,
    /// Serializes init / join / leave / unlock / resume.
    op: Mutex<()>,
    active: Mutex<Option<Active>>,
    /// A manager that restarted under autolock, waiting for `swarm unlock`.
    locked: Mutex<Option<(Identity, KeyStore)>>,
    /// The locked node's ID, for synchronous status reads.
    locked_id: RwLock<Option<String>>,
    /// Snapshot of the active member for synchronous status reads.
    current: RwLock<Option<Current>>,
    /// The Raft transport of the open Raft node (its TLS config follows renewals).
    raft_transport: std::sync::Mutex<Option<Arc<GrpcRaftTransport>>>,
    /// The node's data plane while in a swarm (kept across role changes), with its node ID.
    data_plane: std::sync::Mutex<Option<(String, Arc<DataPlane>)>>,
}

/// Why a swarm operation failed, with the class the API maps to a status code.
#[derive(Debug, thiserror::Error)]
pub enum SwarmOpError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for SwarmOpError {
    fn from(e: anyhow::Error) -> Self {
        SwarmOpError::Internal(e)
    }
}

impl From<shoal_ca::CaError> for SwarmOpError {
    fn from(e: shoal_ca::CaError) -> Self {
        SwarmOpError::Internal(anyhow::Error::new(e))
    }
}

/// Options of `swarm init` the daemon acts on.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    pub advertise_addr: String,
    pub listen_addr: String,
    pub availability: Option<engine::NodeSpecAvailabilityEnum>,
    pub spec: Option<engine::SwarmSpec>,
    pub default_addr_pool: Vec<String>,
    pub subnet_size: u32,
    pub data_path_port: u32,
    pub autolock: bool,
}

/// Options of `swarm join`.
#[derive(Clone, Debug, Default)]
pub struct JoinOptions {
    pub remote_addrs: Vec<String>,
    pub token: String,
    pub advertise_addr: String,
    pub listen_addr: String,
    /// `active`, `pause`, `drain` or empty.
    pub availability: String,
}

fn validity_of(spec: &engine::SwarmSpec) -> Duration {
    spec.ca_config
        .as_ref()
        .and_then(|c| c.node_cert_expiry)
        .filter(|ns| *ns > 0)
        .map(|ns| Duration::from_nanos(ns as u64))
        .unwrap_or(shoal_ca::DEFAULT_NODE_CERT_VALIDITY)
        .max(shoal_ca::MIN_NODE_CERT_VALIDITY)
}

fn rpc_text(e: &RpcError) -> String {
    // Docker passes gRPC errors through as Go prints them.
    let code = match e {
        RpcError::InvalidArgument(_) => "InvalidArgument",
        RpcError::PermissionDenied(_) => "PermissionDenied",
        RpcError::Unauthenticated(_) => "Unauthenticated",
        RpcError::NotFound(_) => "NotFound",
        RpcError::AlreadyExists(_) => "AlreadyExists",
        RpcError::NotLeader { .. } | RpcError::FailedPrecondition(_) => "FailedPrecondition",
        RpcError::DeadlineExceeded(_) => "DeadlineExceeded",
        RpcError::Unimplemented(_) => "Unimplemented",
        RpcError::Internal(_) => "Internal",
        RpcError::Connect { .. } | RpcError::Unavailable(_) => "Unavailable",
    };
    format!("rpc error: code = {code} desc = {e}")
}

impl Daemon {
    pub fn new(
        cfg: DaemonConfig,
        host: Host,
        runtimes: HashMap<String, Arc<dyn Runtime>>,
    ) -> Arc<Self> {
        let swarm_dir = SwarmDir::new(&cfg.data_root);
        Arc::new(Daemon {
            cfg,
            host,
            store: Store::new(),
            runtimes,
            swarm_dir,
            op: Mutex::new(()),
            active: Mutex::new(None),
            locked: Mutex::new(None),
            locked_id: RwLock::new(None),
            current: RwLock::new(None),
            raft_transport: std::sync::Mutex::new(None),
            data_plane: std::sync::Mutex::new(None),
        })
    }

    /// The active member's state, if this node is in a swarm (and not locked).
    pub fn current(&self) -> Option<Current> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    /// The node ID of a manager waiting for `swarm unlock`.
    pub fn locked_node(&self) -> Option<String> {
        self.locked_id.read().ok().and_then(|g| g.clone())
    }

    fn in_swarm(&self) -> bool {
        self.current().is_some() || self.locked_node().is_some()
    }

    /// The managers as `/info` lists them: (node ID, address). A worker knows only addresses.
    pub fn remote_managers(&self, cur: &Current) -> Vec<(String, String)> {
        if cur.identity.manager {
            let mut v: Vec<(String, String)> = self.store.view(|s| {
                s.nodes
                    .values()
                    .filter_map(|n| {
                        n.manager_status
                            .as_ref()
                            .map(|m| (n.id.clone(), m.addr.clone()))
                    })
                    .collect()
            });
            v.sort();
            if !v.is_empty() {
                return v;
            }
        }
        let mut addrs = cur.link.managers();
        addrs.sort();
        addrs.into_iter().map(|a| (String::new(), a)).collect()
    }

    /// On daemon start: rejoin the swarm this node was part of, if any.
    pub async fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        let _op = self.op.lock().await;
        let Some(identity) = self.swarm_dir.load()? else {
            return Ok(());
        };
        tracing::info!(node = %identity.node_id, manager = identity.manager, "resuming swarm membership");
        let certs = self.swarm_dir.certs_dir();
        if identity.manager {
            let (ks, state) = KeyStore::open(&certs)
                .with_context(|| format!("opening the key store in {}", certs.display()))?;
            match state {
                LockState::Locked => {
                    tracing::warn!("this manager's keys are locked (autolock): run `swarm unlock`");
                    if let Ok(mut g) = self.locked_id.write() {
                        *g = Some(identity.node_id.clone());
                    }
                    *self.locked.lock().await = Some((identity, ks));
                    Ok(())
                }
                LockState::Unlocked(key) => self.resume_manager(identity, ks, key).await,
            }
        } else {
            let creds = NodeCredentials::load(&certs).with_context(|| {
                format!("loading this node's certificate from {}", certs.display())
            })?;
            self.start(Parts {
                identity,
                creds,
                raft: None,
                keystore: None,
                listener: None,
            })
            .await
        }
    }

    async fn resume_manager(
        self: &Arc<Self>,
        identity: Identity,
        ks: KeyStore,
        data_key: DataKey,
    ) -> anyhow::Result<()> {
        let creds = ks
            .credentials()
            .context("reading this manager's credentials")?;
        self.store.clear();
        let raft = self
            .open_raft(
                &identity,
                &data_key,
                Arc::new(shoal_ca::client_config(&creds)?),
            )
            .await?;
        if raft.metrics().voters.len() <= 1 {
            // A one-manager swarm elects itself at once; wait so the first writes succeed.
            raft.wait_leader(Duration::from_secs(30))
                .await
                .context("waiting for a Raft leader")?;
        }
        // With other managers, do not wait here: they may be starting too, and need this
        // node's server to elect a leader.
        self.start(Parts {
            identity,
            creds,
            raft: Some(raft),
            keystore: Some(Arc::new(std::sync::Mutex::new(ks))),
            listener: None,
        })
        .await
    }

    async fn open_raft(
        &self,
        identity: &Identity,
        data_key: &DataKey,
        client_tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<RaftNode> {
        let dir = self.swarm_dir.raft_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cfg = RaftConfig {
            node_id: identity.raft_id,
            addr: identity.advertise_addr.clone(),
            ..RaftConfig::default()
        };
        let transport = Arc::new(GrpcRaftTransport::with_options(
            client_tls,
            ClientOptions::default().with_connect_timeout(Duration::from_secs(2)),
        ));
        *self
            .raft_transport
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(transport.clone());
        let raft = RaftNode::open_with_codec(
            &dir,
            cfg,
            Arc::new(AeadCodec::new(data_key.as_bytes())),
            Arc::new(StoreTarget(self.store.clone())),
            transport,
        )
        .await
        .with_context(|| format!("opening the Raft log in {}", dir.display()))?;
        self.store
            .set_proposer(Some(Arc::new(RaftProposer(raft.clone()))));
        Ok(raft)
    }

    /// Undoes a half-done init or join.
    async fn abandon(&self, raft: Option<RaftNode>) {
        self.store.set_proposer(None);
        if let Some(r) = raft {
            let _ = r.shutdown().await;
        }
        self.store.clear();
        let _ = self.swarm_dir.remove();
    }

    /// The address to advertise: the one asked for, else the daemon's default, else the
    /// listen address's IP if specific, else `fallback`.
    fn advertise_addr(
        &self,
        asked: &str,
        listen: &str,
        fallback: impl FnOnce() -> Option<String>,
    ) -> Result<String, SwarmOpError> {
        let port = listen
            .parse::<std::net::SocketAddr>()
            .map(|a| a.port())
            .unwrap_or(shoal_rpc::DEFAULT_PORT);
        if !asked.is_empty() {
            return Ok(with_port(asked, port));
        }
        if let Some(d) = self
            .cfg
            .default_advertise_addr
            .as_deref()
            .filter(|d| !d.is_empty())
        {
            return Ok(with_port(d, port));
        }
        let listen_ip = cluster::host_of(listen);
        if !listen_ip.is_empty() && listen_ip != "0.0.0.0" && listen_ip != "::" {
            return Ok(format!("{listen_ip}:{port}"));
        }
        fallback().map(|ip| format!("{ip}:{port}")).ok_or_else(|| {
            SwarmOpError::InvalidArgument(
                "could not find the system's IP address - specify one with --advertise-addr".into(),
            )
        })
    }

    /// `swarm init`: a new one-manager cluster.
    pub async fn init(self: &Arc<Self>, opts: InitOptions) -> Result<String, SwarmOpError> {
        let _op = self.op.lock().await;
        if self.in_swarm() {
            return Err(SwarmOpError::Unavailable(ALREADY_IN_SWARM.into()));
        }
        let listen_addr = if opts.listen_addr.is_empty() {
            "0.0.0.0:2377".to_string()
        } else {
            with_port(&opts.listen_addr, 2377)
        };
        let advertise = self.advertise_addr(&opts.advertise_addr, &listen_addr, default_ip)?;
        let bind = cluster::bind_addr(&listen_addr, &advertise)
            .map_err(|e| SwarmOpError::InvalidArgument(format!("{e:#}")))?;
        let listener = cluster::bind(bind).await?;

        let mut spec = opts.spec.clone().unwrap_or_default();
        fill_swarm_spec_defaults(&mut spec);
        if opts.autolock {
            spec.encryption_config
                .get_or_insert_with(Default::default)
                .auto_lock_managers = Some(true);
        }
        let identity = Identity {
            node_id: new_id(),
            cluster_id: new_id(),
            raft_id: rand::random::<u64>() | 1,
            advertise_addr: advertise.clone(),
            listen_addr,
            manager: true,
            managers: vec![advertise.clone()],
        };
        let root = RootCa::generate(&identity.cluster_id)?;
        let creds = NodeCredentials::issue_local(
            &root,
            &identity.node_id,
            Role::Manager,
            validity_of(&spec),
        )?;
        let _ = self.swarm_dir.remove();
        let certs = self.swarm_dir.certs_dir();
        std::fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
        let unlock = opts.autolock.then(UnlockKey::generate);
        let (ks, data_key) = KeyStore::create(&certs, &creds, unlock.as_ref())?;
        self.store.clear();
        let client_tls = Arc::new(shoal_ca::client_config(&creds)?);
        let raft = match self.open_raft(&identity, &data_key, client_tls).await {
            Ok(r) => r,
            Err(e) => {
                self.abandon(None).await;
                return Err(e.into());
            }
        };
        let res = async {
            lead_alone(&raft).await?;
            let key_pem = root
                .key_pem()
                .ok_or_else(|| anyhow::anyhow!("the new root CA has no key"))?
                .to_string();
            let cluster = Cluster {
                id: identity.cluster_id.clone(),
                meta: Meta::new_now(),
                spec,
                worker_join_token: JoinToken::for_root(&root).to_string(),
                manager_join_token: JoinToken::for_root(&root).to_string(),
                root_ca_cert: root.cert_pem().to_string(),
                root_ca_key: key_pem,
                removed_nodes: Vec::new(),
                unlock_key: unlock.as_ref().map(|k| k.to_string()).unwrap_or_default(),
                default_addr_pool: if opts.default_addr_pool.is_empty() {
                    vec!["10.0.0.0/8".into()]
                } else {
                    opts.default_addr_pool.clone()
                },
                subnet_size: if opts.subnet_size == 0 {
                    24
                } else {
                    opts.subnet_size
                },
                data_path_port: if opts.data_path_port == 0 {
                    4789
                } else {
                    opts.data_path_port
                },
            };
            let node = Node {
                id: identity.node_id.clone(),
                meta: Meta::new_now(),
                spec: engine::NodeSpec {
                    name: None,
                    labels: Some(HashMap::new()),
                    role: Some(engine::NodeSpecRoleEnum::MANAGER),
                    availability: Some(
                        opts.availability
                            .unwrap_or(engine::NodeSpecAvailabilityEnum::ACTIVE),
                    ),
                },
                description: self.host.node_description(HashMap::new()),
                status: NodeStatus {
                    state: NodeState::Ready,
                    message: String::new(),
                    addr: cluster::host_of(&advertise),
                },
                role: NodeRole::Manager,
                manager_status: Some(ManagerStatus {
                    leader: true,
                    reachability: Reachability::Reachable,
                    addr: advertise.clone(),
                    raft_id: identity.raft_id,
                }),
                addr_port: advertise.clone(),
                network_addresses: Default::default(),
            };
            let ingress = shoal_manager::objects::ingress_network(
                &cluster.default_addr_pool,
                cluster.subnet_size,
            );
            self.store
                .update(|tx| {
                    tx.create(Object::Cluster(cluster))?;
                    tx.create(Object::Network(ingress))?;
                    tx.create(Object::Node(node))
                })
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            self.swarm_dir.save(&identity)?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = res {
            self.abandon(Some(raft)).await;
            return Err(e.into());
        }
        let node_id = identity.node_id.clone();
        self.start(Parts {
            identity,
            creds,
            raft: Some(raft),
            keystore: Some(Arc::new(std::sync::Mutex::new(ks))),
            listener: Some(listener),
        })
        .await?;
        Ok(node_id)
    }

    /// `swarm join`: becomes a worker or a manager of the swarm at `remote_addrs`, as the
    /// token says.
    pub async fn join(self: &Arc<Self>, opts: JoinOptions) -> Result<(), SwarmOpError> {
        let _op = self.op.lock().await;
        if self.in_swarm() {
            return Err(SwarmOpError::Unavailable(ALREADY_IN_SWARM.into()));
        }
        let token = JoinToken::parse(&opts.token)
            .map_err(|e| SwarmOpError::InvalidArgument(e.to_string()))?;
        let listen_addr = if opts.listen_addr.is_empty() {
            "0.0.0.0:2377".to_string()
        } else {
            with_port(&opts.listen_addr, 2377)
        };
        let remotes: Vec<String> = opts
            .remote_addrs
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| with_port(a, shoal_rpc::DEFAULT_PORT))
            .collect();
        let bootstrap = Arc::new(shoal_ca::dangerous_unverified_bootstrap_client_config()?);
        // The first manager that answers.
        let mut errors = Vec::new();
        let mut found = None;
        for remote in &remotes {
            match tokio::time::timeout(
                Duration::from_secs(10),
                shoal_rpc::fetch_root_ca(remote, bootstrap.clone()),
            )
            .await
            {
                Ok(Ok(pem)) => {
                    found = Some((remote.clone(), pem));
                    break;
                }
                Ok(Err(e)) => errors.push(format!("{remote}: {e}")),
                Err(_) => errors.push(format!("{remote}: no answer within 10s")),
            }
        }
        let Some((remote, root_pem)) = found else {
            return Err(SwarmOpError::Unavailable(format!(
                "could not reach a manager of the swarm to join: {}",
                errors.join("; ")
            )));
        };
        shoal_ca::verify_ca_digest(&token, &root_pem)
            .map_err(|e| SwarmOpError::InvalidArgument(e.to_string()))?;

        // Our address as the manager sees it, when nothing else says.
        let remote_for_probe = remote.clone();
        let probed = tokio::net::TcpStream::connect(&remote_for_probe)
            .await
            .ok()
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.ip().to_string());
        let advertise = self.advertise_addr(&opts.advertise_addr, &listen_addr, || probed)?;
        let bind = cluster::bind_addr(&listen_addr, &advertise)
            .map_err(|e| SwarmOpError::InvalidArgument(format!("{e:#}")))?;
        let listener = cluster::bind(bind).await?;

        let request = NodeCredentials::generate_csr()?;
        let pinned = Arc::new(shoal_ca::pinned_client_config(&root_pem)?);
        let ca = NodeClient::connect_with(
            &remote,
            pinned,
            ClientOptions::default().with_server_name(shoal_ca::CA_SERVER_NAME),
        )
        .await
        .map_err(|e| SwarmOpError::Unavailable(e.to_string()))?;
        let issued = ca
            .issue_certificate(IssueRequest {
                csr_pem: request.csr_pem.clone(),
                token: token.as_str().to_string(),
                availability: opts.availability.clone(),
                advertise_addr: advertise.clone(),
                listen_addr: listen_addr.clone(),
                hostname: self.host.hostname.clone(),
                remote_addr: None,
            })
            .await
            .map_err(|e| match e {
                RpcError::InvalidArgument(_) | RpcError::PermissionDenied(_) => {
                    SwarmOpError::InvalidArgument(rpc_text(&e))
                }
                other => SwarmOpError::Unavailable(rpc_text(&other)),
            })?;
        let creds = request.into_credentials(issued.cert_pem, issued.root_pem)?;
        let manager = issued.role == PeerRole::Manager;
        let mut managers = issued.manager_addrs.clone();
        if managers.is_empty() {
            managers.push(remote.clone());
        }
        let identity = Identity {
            node_id: issued.node_id.clone(),
            cluster_id: issued.cluster_id.clone(),
            raft_id: if manager {
                rand::random::<u64>() | 1
            } else {
                0
            },
            advertise_addr: advertise.clone(),
            listen_addr,
            manager,
            managers: managers.clone(),
        };
        let _ = self.swarm_dir.remove();
        let certs = self.swarm_dir.certs_dir();
        std::fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
        let client_tls = Arc::new(shoal_ca::client_config(&creds)?);
        let (raft, keystore) = if manager {
            let (ks, data_key) = KeyStore::create(&certs, &creds, None)?;
            self.store.clear();
            let raft = match self
                .open_raft(&identity, &data_key, client_tls.clone())
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    self.abandon(None).await;
                    return Err(e.into());
                }
            };
            (Some(raft), Some(Arc::new(std::sync::Mutex::new(ks))))
        } else {
            creds.save(&certs)?;
            (None, None)
        };
        self.swarm_dir.save(&identity)?;
        self.start(Parts {
            identity: identity.clone(),
            creds,
            raft: raft.clone(),
            keystore,
            listener: Some(listener),
        })
        .await?;
        if let Some(raft) = raft {
            let member = ManagerMember {
                node_id: identity.node_id.clone(),
                raft_id: identity.raft_id,
                addr: advertise.clone(),
            };
            if let Err(e) = add_self_to_raft(&managers, client_tls, &member).await {
                tracing::warn!(error = %e, "joining the Raft group failed; leaving");
                let _ = self.stop_roles().await;
                self.abandon(None).await;
                return Err(SwarmOpError::Unavailable(format!(
                    "could not join the managers' Raft group: {e}"
                )));
            }
            // Caught up (add_voter waits for it); a leader is known from now on.
            let _ = raft.wait_leader(Duration::from_secs(10)).await;
        }
        tracing::info!(node = %identity.node_id, manager, "joined the swarm");
        Ok(())
    }

    /// `swarm unlock`: opens a locked manager's keys and resumes it.
    pub async fn unlock(self: &Arc<Self>, key: &str) -> Result<(), SwarmOpError> {
        let _op = self.op.lock().await;
        let mut guard = self.locked.lock().await;
        let Some((identity, mut ks)) = guard.take() else {
            return Err(SwarmOpError::InvalidArgument("swarm is not locked".into()));
        };
        let parsed = match UnlockKey::parse(key) {
            Ok(k) => k,
            Err(e) => {
                *guard = Some((identity, ks));
                return Err(SwarmOpError::InvalidArgument(e.to_string()));
            }
        };
        let data_key = match ks.unlock(&parsed) {
            Ok(k) => k,
            Err(e) => {
                *guard = Some((identity, ks));
                return Err(SwarmOpError::InvalidArgument(e.to_string()));
            }
        };
        drop(guard);
        if let Ok(mut g) = self.locked_id.write() {
            *g = None;
        }
        self.resume_manager(identity, ks, data_key).await?;
        Ok(())
    }

    /// `swarm update --autolock` / `swarm unlock-key --rotate`: the swarm's unlock key is
    /// cluster state (`Cluster.unlock_key`, in the Raft store): a new one when autolock is
    /// turned on or the key rotated, none when it is turned off. This manager rewraps its key
    /// store at once; every other manager follows within a second (`follow_unlock_key`).
    pub async fn update_autolock(&self, autolock: bool, rotate: bool) -> Result<(), SwarmOpError> {
        let _op = self.op.lock().await;
        let ks = self
            .active
            .lock()
            .await
            .as_ref()
            .and_then(|a| a.keystore.clone());
        let Some(ks) = ks else { return Ok(()) };
        self.store
            .update(|tx| {
                let Some(mut c) = tx.get_cluster() else {
                    return Ok(());
                };
                let next = match (autolock, c.unlock_key.is_empty()) {
                    (true, true) => UnlockKey::generate().to_string(),
                    (true, false) if rotate => UnlockKey::generate().to_string(),
                    (false, _) => String::new(),
                    _ => return Ok(()),
                };
                if next != c.unlock_key {
                    c.unlock_key = next;
                    tx.update(Object::Cluster(c))?;
                }
                Ok::<_, shoal_store::StoreError>(())
            })
            .await
            .map_err(|e| SwarmOpError::Unavailable(e.to_string()))?;
        sync_unlock_key(&ks, &self.store)?;
        Ok(())
    }

    /// The swarm's unlock key (`SWMKEY-1-...`), empty without autolock; `None` on a node that
    /// holds no swarm state (a worker).
    pub fn unlock_key(&self) -> Option<String> {
        self.current()?.control?;
        self.store
            .view(|s| s.cluster.as_ref().map(|c| c.unlock_key.clone()))
    }

    /// `swarm init --force-new-cluster` on a manager of a swarm that lost its majority: a new
    /// Raft group of this manager alone, with the swarm's state as this manager last applied
    /// it (services, tasks, nodes, tokens, CA). Its old Raft log is kept aside in
    /// `swarm/raft.before-force-new-cluster`. The other managers are no longer members: their
    /// nodes stay listed as down workers (`node rm` deletes them) and their certificates are
    /// refused from now on, so they must leave and join again. Returns this node's ID.
    pub async fn force_new_cluster(self: &Arc<Self>) -> Result<String, SwarmOpError> {
        let _op = self.op.lock().await;
        let Some(cur) = self.current() else {
            return Err(SwarmOpError::Unavailable(NOT_IN_SWARM.into()));
        };
        if !cur.identity.manager {
            return Err(SwarmOpError::Unavailable(ALREADY_IN_SWARM.into()));
        }
        let (keystore, creds) = {
            let guard = self.active.lock().await;
            let ks = guard
                .as_ref()
                .and_then(|a| a.keystore.clone())
                .ok_or_else(|| anyhow::anyhow!("this manager has no key store"))?;
            let creds = ks.lock().unwrap_or_else(|p| p.into_inner()).credentials()?;
            (ks, creds)
        };
        let data_key = keystore
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .data_key()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("this manager's data key is not available"))?;
        tracing::warn!(
            "forcing a new cluster: this manager becomes the only member of the raft group"
        );
        let mut identity = cur.identity.clone();
        let state = self.store.view(|s| s.clone());
        let _ = self.stop_roles().await;
        let raft_dir = self.swarm_dir.raft_dir();
        let kept = self.swarm_dir.0.join("raft.before-force-new-cluster");
        let _ = std::fs::remove_dir_all(&kept);
        std::fs::rename(&raft_dir, &kept)
            .with_context(|| format!("moving {} aside", raft_dir.display()))?;
        self.store.clear();
        identity.managers = vec![identity.advertise_addr.clone()];
        let client_tls = Arc::new(shoal_ca::client_config(&creds)?);
        let raft = self.open_raft(&identity, &data_key, client_tls).await?;
        let res = async {
            lead_alone(&raft).await?;
            let batch = recovered_state(state, &identity);
            let payload = batch.encode().map_err(|e| anyhow::anyhow!("{e}"))?;
            raft.propose(payload)
                .await
                .map_err(|e| anyhow::anyhow!("writing the recovered state: {e}"))?;
            self.swarm_dir.save(&identity)?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = res {
            // Put the old log back: the manager resumes as it was at its next start.
            let _ = raft.shutdown().await;
            self.store.set_proposer(None);
            let _ = std::fs::remove_dir_all(&raft_dir);
            let _ = std::fs::rename(&kept, &raft_dir);
            return Err(e.into());
        }
        let node_id = identity.node_id.clone();
        self.start(Parts {
            identity,
            creds,
            raft: Some(raft),
            keystore: Some(keystore),
            listener: None,
        })
        .await?;
        Ok(node_id)
    }

    /// `node promote` / `node demote` seen from the node: the swarm records another role for
    /// it than it runs as. Renews its certificate (the CA issues the recorded role), then a
    /// promoted worker opens an empty Raft log, starts the manager roles and asks the leader
    /// to add it as a voter (as a manager joining does); a demoted manager leaves the Raft
    /// group if the leader has not taken it out yet, stops its manager roles and removes its
    /// Raft log. The agent restarts with the new certificate and adopts the running tasks.
    /// (Boxed: it restarts the roles, which start the task that calls it.)
    pub fn change_role(
        self: Arc<Self>,
        to_manager: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            match self.try_change_role(to_manager).await {
                Ok(true) => tracing::info!(manager = to_manager, "this node changed roles"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(manager = to_manager, error = %format!("{e:#}"), "changing roles failed; will retry")
                }
            }
        })
    }

    async fn try_change_role(self: &Arc<Self>, to_manager: bool) -> anyhow::Result<bool> {
        let _op = self.op.lock().await;
        let Some(cur) = self.current() else {
            return Ok(false);
        };
        if cur.identity.manager == to_manager {
            return Ok(false);
        }
        let certs = self.swarm_dir.certs_dir();
        let keystore = {
            let guard = self.active.lock().await;
            let Some(a) = guard.as_ref() else {
                return Ok(false);
            };
            a.keystore.clone()
        };
        let creds = match &keystore {
            Some(ks) => ks.lock().unwrap_or_else(|p| p.into_inner()).credentials()?,
            None => NodeCredentials::load(&certs)?,
        };
        let want = if to_manager {
            Role::Manager
        } else {
            Role::Worker
        };
        // A manager that has not applied the new role yet issues the old one: ask again.
        let mut attempt = 0;
        let next = loop {
            let next =
                renewal::renew_once(&creds, &cur.link.managers(), cur.client_tls.clone()).await?;
            let got = next.identity()?.role;
            if got == want {
                break next;
            }
            attempt += 1;
            anyhow::ensure!(
                attempt < 5,
                "the swarm issued a {got} certificate; waiting for the {want} role to be recorded"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let mut identity = cur.identity.clone();
        if to_manager {
            tracing::info!("promoted: becoming a manager");
            let (ks, data_key) = manager_keystore(&certs, &next)?;
            let managers = cur.link.managers();
            let _ = self.stop_roles().await;
            self.store.clear();
            let raft_dir = self.swarm_dir.raft_dir();
            if let Err(e) = std::fs::remove_dir_all(&raft_dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    anyhow::bail!("removing the old Raft log {}: {e}", raft_dir.display());
                }
            }
            identity.manager = true;
            identity.raft_id = rand::random::<u64>() | 1;
            if !managers.is_empty() {
                identity.managers = managers.clone();
            }
            let client_tls = Arc::new(shoal_ca::client_config(&next)?);
            let raft = self
                .open_raft(&identity, &data_key, client_tls.clone())
                .await?;
            self.swarm_dir.save(&identity)?;
            self.start(Parts {
                identity: identity.clone(),
                creds: next,
                raft: Some(raft.clone()),
                keystore: Some(Arc::new(std::sync::Mutex::new(ks))),
                listener: None,
            })
            .await?;
            let member = ManagerMember {
                node_id: identity.node_id.clone(),
                raft_id: identity.raft_id,
                addr: identity.advertise_addr.clone(),
            };
            add_self_to_raft(&identity.managers, client_tls, &member)
                .await
                .map_err(|e| anyhow::anyhow!("joining the managers' Raft group: {e}"))?;
            let _ = raft.wait_leader(Duration::from_secs(10)).await;
        } else {
            tracing::info!("demoted: becoming a worker");
            // The leader takes a demoted member out of Raft before recording the new role,
            // except itself: then it is still a member here.
            self.leave_raft().await;
            let managers: Vec<String> = cur
                .link
                .managers()
                .into_iter()
                .filter(|a| *a != identity.advertise_addr)
                .collect();
            if let Some(ks) = &keystore {
                let mut ks = ks.lock().unwrap_or_else(|p| p.into_inner());
                if ks.is_autolocked() {
                    ks.set_autolock(None)?;
                }
            }
            next.save(&certs)?;
            let _ = self.stop_roles().await;
            self.store.clear();
            let _ = std::fs::remove_dir_all(self.swarm_dir.raft_dir());
            identity.manager = false;
            identity.raft_id = 0;
            if !managers.is_empty() {
                identity.managers = managers;
            }
            self.swarm_dir.save(&identity)?;
            self.start(Parts {
                identity,
                creds: next,
                raft: None,
                keystore: None,
                listener: None,
            })
            .await?;
        }
        Ok(true)
    }

    /// Starts the roles of an active member.
    async fn start(self: &Arc<Self>, parts: Parts) -> anyhow::Result<()> {
        let Parts {
            identity,
            creds,
            raft,
            keystore,
            listener,
        } = parts;
        let (tx, rx) = watch::channel(false);
        let mut handles = Vec::new();
        let client_tls = Arc::new(shoal_ca::client_config(&creds)?);
        let mut server_tls = shoal_ca::server_config(&creds)?;
        let server_cert = renewal::SwapCert::install(&mut server_tls);
        let server_tls = Arc::new(server_tls);

        let mut handlers =
            Handlers::new().with_logs(Arc::new(RuntimeLogs::new(self.runtimes.values().cloned())));
        let mut raft_service = None;
        let control = match &raft {
            Some(raft) => {
                let gate = DispatcherGate::new(self.store.clone(), raft.clone());
                let rs = Arc::new(RaftService {
                    store: self.store.clone(),
                    raft: raft.clone(),
                });
                raft_service = Some(Arc::clone(&rs));
                handlers = handlers
                    .with_ca(Arc::new(CaService {
                        store: self.store.clone(),
                    }))
                    .with_raft(rs)
                    .with_dispatcher(gate.clone());
                handles.push(tokio::spawn(leadership::run(
                    self.store.clone(),
                    raft.clone(),
                    gate,
                    rx.clone(),
                )));
                handles.push(tokio::spawn(roles::reconcile(
                    self.store.clone(),
                    raft.clone(),
                    rx.clone(),
                )));
                Some(Arc::new(Control::new(self.store.clone())))
            }
            None => None,
        };
        let peer_fn = cluster::peer_fn(
            identity.cluster_id.clone(),
            raft.as_ref().map(|_| self.store.clone()),
        );
        let bind = cluster::bind_addr(&identity.listen_addr, &identity.advertise_addr)?;
        handles.push(tokio::spawn(cluster::serve(
            bind,
            listener,
            server_tls,
            peer_fn,
            handlers,
            rx.clone(),
        )));

        // The agent, on every node, over the same link to the (leading) manager.
        let mut managers = if raft.is_some() {
            cluster::manager_addrs(&self.store)
        } else {
            Vec::new()
        };
        if managers.is_empty() {
            managers = identity.managers.clone();
        }
        let link = RemoteManagerLink::with_options(
            managers,
            client_tls.clone(),
            ClientOptions::default()
                .with_connect_timeout(Duration::from_secs(2))
                .with_request_timeout(Some(Duration::from_secs(15))),
        );
        let worker = Worker::new(
            WorkerConfig {
                node_id: identity.node_id.clone(),
                addr: cluster::host_of(&identity.advertise_addr),
                description: self.host.node_description(HashMap::new()),
                default_runtime: self.cfg.default_runtime.clone(),
            },
            Arc::new(link.clone()),
            self.runtimes.clone(),
        );
        let worker = match self.data_plane_for(&identity.node_id, &identity.advertise_addr) {
            Some(dp) => worker.with_network(dp),
            None => worker,
        };
        handles.push(tokio::spawn(worker.run(rx.clone())));
        handles.push(tokio::spawn(follow_role(
            Arc::downgrade(self),
            identity.manager,
            link.role_watch(),
            rx.clone(),
        )));
        handles.push(tokio::spawn(keep_managers(
            self.swarm_dir.clone(),
            identity.clone(),
            raft.as_ref().map(|_| self.store.clone()),
            link.clone(),
            rx.clone(),
        )));

        if let Some(ks) = &keystore {
            handles.push(tokio::spawn(follow_unlock_key(
                Arc::clone(ks),
                self.store.clone(),
                rx.clone(),
            )));
        }
        let transport = match &raft {
            Some(_) => self
                .raft_transport
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            None => None,
        };
        let weak = Arc::downgrade(self);
        let renewer = renewal::Renewer {
            certs_dir: self.swarm_dir.certs_dir(),
            keystore: keystore.clone(),
            link: link.clone(),
            transport,
            server_cert,
            on_client_tls: Box::new(move |tls| {
                if let Some(d) = weak.upgrade() {
                    if let Ok(mut c) = d.current.write() {
                        if let Some(c) = c.as_mut() {
                            c.client_tls = tls.clone();
                        }
                    }
                    if let Ok(mut a) = d.active.try_lock() {
                        if let Some(a) = a.as_mut() {
                            a.client_tls = tls;
                        }
                    }
                }
            }),
        };
        handles.push(tokio::spawn(renewer.run(creds, rx.clone())));
        if let Ok(mut c) = self.current.write() {
            *c = Some(Current {
                identity: identity.clone(),
                control,
                link,
                client_tls: client_tls.clone(),
            });
        }
        *self.active.lock().await = Some(Active {
            identity,
            raft,
            raft_service,
            client_tls,
            keystore,
            shutdown: tx,
            handles,
        });
        Ok(())
    }

    /// Stops the roles (daemon shutdown or leave). Task processes keep running.
    async fn stop_roles(&self) -> Option<Active> {
        let mut active = self.active.lock().await.take()?;
        if let Ok(mut c) = self.current.write() {
            *c = None;
        }
        let _ = active.shutdown.send(true);
        for h in active.handles.drain(..) {
            // Give loops a moment to notice, then abort what is left.
            let abort = h.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), h)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.store.set_proposer(None);
        if let Some(raft) = &active.raft {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "Raft shutdown");
            }
        }
        Some(active)
    }

    /// Stops and removes every task process this node's runtimes know of.
    async fn remove_all_tasks(&self) {
        for rt in self.runtimes.values() {
            if let Ok(list) = rt.recover().await {
                for (id, _) in list {
                    if let Err(e) = rt.remove(&id).await {
                        tracing::warn!(task = %id, error = %e, "removing task");
                    }
                }
            }
        }
    }

    /// A manager leaving with --force: out of the Raft group first, if others remain.
    async fn leave_raft(&self) {
        let (identity, raft, service, tls) = {
            let guard = self.active.lock().await;
            let Some(a) = guard.as_ref() else { return };
            let (Some(raft), Some(service)) = (a.raft.clone(), a.raft_service.clone()) else {
                return;
            };
            (a.identity.clone(), raft, service, a.client_tls.clone())
        };
        let voters = raft.metrics().voters;
        if voters.len() <= 1 || !voters.contains(&identity.raft_id) {
            return;
        }
        let res = tokio::time::timeout(Duration::from_secs(10), async {
            if raft.metrics().role == RaftRole::Leader {
                return service.remove(&identity.node_id, identity.raft_id).await;
            }
            let Some((_, addr)) = raft.leader_addr() else {
                return Err(RpcError::Unavailable("no leader is known".into()));
            };
            NodeClient::connect(&addr, tls)
                .await?
                .remove_manager(&identity.node_id, identity.raft_id)
                .await
        })
        .await;
        match res {
            Ok(Ok(())) => tracing::info!("left the managers' Raft group"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not leave the Raft group; leaving anyway")
            }
            Err(_) => tracing::warn!("leaving the Raft group timed out; leaving anyway"),
        }
    }

    /// `swarm leave`.
    pub async fn leave(&self, force: bool) -> Result<(), SwarmOpError> {
        let _op = self.op.lock().await;
        if self.locked_node().is_some() {
            if !force {
                return Err(SwarmOpError::Unavailable(LEAVE_LOCKED.into()));
            }
            *self.locked.lock().await = None;
            if let Ok(mut g) = self.locked_id.write() {
                *g = None;
            }
        } else {
            match self.current() {
                None => return Err(SwarmOpError::Unavailable(NOT_IN_SWARM.into())),
                Some(c) if c.identity.manager && !force => {
                    let me = c.identity.node_id.clone();
                    let stats = self.store.view(|s| {
                        let mut active = false;
                        let (mut reachable, mut unreachable) = (0, 0);
                        for n in s.nodes.values() {
                            match n.manager_status.as_ref().map(|m| m.reachability) {
                                Some(shoal_api::Reachability::Reachable) => {
                                    reachable += 1;
                                    active |= n.id == me;
                                }
                                Some(shoal_api::Reachability::Unreachable) => unreachable += 1,
                                _ => {}
                            }
                        }
                        (reachable > 0).then_some((active, reachable, unreachable))
                    });
                    return Err(SwarmOpError::Unavailable(leave_manager_message(stats)));
                }
                Some(c) if c.identity.manager => self.leave_raft().await,
                Some(_) => {}
            }
            let _ = self.stop_roles().await;
        }
        self.remove_all_tasks().await;
        self.remove_data_plane().await;
        self.swarm_dir
            .remove()
            .map_err(|e| anyhow::anyhow!("removing swarm state: {e}"))?;
        self.store.clear();
        Ok(())
    }

    /// The node's data plane (made on first use for this node ID), or `None` when the daemon
    /// builds none or it cannot be made (then tasks share the node's network).
    fn data_plane_for(&self, node_id: &str, advertise_addr: &str) -> Option<Arc<DataPlane>> {
        let datapath = self.cfg.datapath?;
        let loopback = cluster::host_of(advertise_addr)
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
        if self.cfg.datapath_auto && loopback {
            tracing::info!(
                "advertising a loopback address: no data plane, tasks share the node's network"
            );
            return None;
        }
        let mut g = self.data_plane.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, dp)) = g.as_ref() {
            if id == node_id {
                return Some(Arc::clone(dp));
            }
        }
        match DataPlane::new(node_id, datapath) {
            Ok(dp) => {
                let dp = Arc::new(dp);
                *g = Some((node_id.to_string(), Arc::clone(&dp)));
                tracing::info!(datapath = datapath.as_str(), "data plane ready");
                Some(dp)
            }
            Err(e) => {
                tracing::error!(error = %e, "the data plane cannot start; tasks share the node's network");
                None
            }
        }
    }

    /// Removes everything the node's data plane made (namespaces, overlays, rules).
    async fn remove_data_plane(&self) {
        let dp = self
            .data_plane
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((_, dp)) = dp {
            dp.remove_all().await;
        }
    }

    /// Daemon shutdown: stop the roles; stop task processes unless live-restore is on.
    pub async fn shutdown(&self) {
        let _ = self.stop_roles().await;
        if !self.cfg.live_restore {
            for rt in self.runtimes.values() {
                if let Ok(list) = rt.recover().await {
                    for (id, _) in list {
                        let _ = rt.stop(&id, None, Duration::from_secs(10)).await;
                    }
                }
            }
            // The tasks are gone: so are their namespaces, and the node's rules pointing at
            // them (the next start builds the data plane again from the manager's map).
            self.remove_data_plane().await;
        }
    }
}

/// Wraps this manager's key store under the swarm's unlock key (the cluster's), or unwraps
/// it when the swarm has none. Returns whether it changed anything. Nothing to follow before
/// the store holds the cluster (a joining manager catching up).
fn sync_unlock_key(
    ks: &std::sync::Mutex<KeyStore>,
    store: &Store,
) -> Result<bool, shoal_ca::CaError> {
    let Some((want, autolock)) = store.view(|s| {
        s.cluster.as_ref().map(|c| {
            let on = c
                .spec
                .encryption_config
                .as_ref()
                .and_then(|e| e.auto_lock_managers)
                .unwrap_or(false);
            (c.unlock_key.clone(), on)
        })
    }) else {
        return Ok(false);
    };
    if want.is_empty() && autolock {
        // Autolock on, but no key recorded yet (a swarm from before the key was cluster
        // state): keep this manager's own key.
        return Ok(false);
    }
    let mut ks = ks.lock().unwrap_or_else(|p| p.into_inner());
    let have = ks.unlock_key().map(|k| k.to_string()).unwrap_or_default();
    if have == want {
        return Ok(false);
    }
    if want.is_empty() {
        ks.set_autolock(None)?;
        tracing::info!("autolock turned off");
    } else {
        ks.set_autolock(Some(&UnlockKey::parse(&want)?))?;
        tracing::info!("this manager's keys are now wrapped by the swarm's unlock key");
    }
    Ok(true)
}

/// Makes a new Raft group of this manager alone and waits until it leads it.
async fn lead_alone(raft: &RaftNode) -> anyhow::Result<()> {
    raft.initialize_single()
        .await
        .map_err(|e| anyhow::anyhow!("initializing Raft: {e}"))?;
    raft.wait_leader(Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("waiting for a Raft leader: {e}"))?;
    Ok(())
}

/// On every manager, until `stop`: keeps the key store wrapped by the swarm's unlock key.
async fn follow_unlock_key(
    ks: Arc<std::sync::Mutex<KeyStore>>,
    store: Store,
    mut stop: watch::Receiver<bool>,
) {
    // A change of the cluster object wakes it at once; the tick covers missed events.
    let mut events = store.subscribe();
    loop {
        if let Err(e) = sync_unlock_key(&ks, &store) {
            tracing::warn!(error = %e, "following the swarm's unlock key");
        }
        let cluster_changed = async {
            loop {
                match events.recv().await {
                    Ok(ev) if matches!(ev.object, Object::Cluster(_)) => return,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = cluster_changed => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

/// The state a forced new cluster starts from: every object as `state` has it (timestamps
/// kept), this manager the only one (the leader), the other managers down workers whose
/// certificates are refused.
fn recovered_state(state: shoal_store::StoreState, me: &Identity) -> shoal_store::Batch {
    use shoal_store::Action;
    let mut actions = Vec::new();
    let mut gone = Vec::new();
    for (_, mut n) in state.nodes {
        if n.id == me.node_id {
            n.role = NodeRole::Manager;
            n.manager_status = Some(ManagerStatus {
                leader: true,
                reachability: Reachability::Reachable,
                addr: me.advertise_addr.clone(),
                raft_id: me.raft_id,
            });
        } else if n.manager_status.is_some() || n.role == NodeRole::Manager {
            gone.push(n.id.clone());
            n.role = NodeRole::Worker;
            n.spec.role = Some(engine::NodeSpecRoleEnum::WORKER);
            n.manager_status = None;
            n.status.state = NodeState::Down;
            n.status.message = "removed from the managers by --force-new-cluster".into();
        }
        actions.push(Action::Create(Object::Node(n)));
    }
    if let Some(mut c) = state.cluster {
        for id in gone {
            if !c.removed_nodes.contains(&id) {
                c.removed_nodes.push(id);
            }
        }
        actions.insert(0, Action::Create(Object::Cluster(c)));
    }
    actions.extend(
        state
            .services
            .into_values()
            .map(|s| Action::Create(Object::Service(s))),
    );
    actions.extend(
        state
            .tasks
            .into_values()
            .map(|t| Action::Create(Object::Task(t))),
    );
    actions.extend(
        state
            .networks
            .into_values()
            .map(|n| Action::Create(Object::Network(n))),
    );
    actions.extend(
        state
            .secrets
            .into_values()
            .map(|n| Action::Create(Object::Secret(n))),
    );
    actions.extend(
        state
            .configs
            .into_values()
            .map(|n| Action::Create(Object::Config(n))),
    );
    shoal_store::Batch { actions }
}

/// How long a node waits before trying a role change again while its roles still differ.
const ROLE_RETRY: Duration = Duration::from_secs(10);

/// On every node: when the role the swarm records for it (from its agent's heartbeat answers)
/// differs from the one it runs as, changes roles ([`Daemon::change_role`], detached: it
/// restarts the roles this task belongs to), trying again every [`ROLE_RETRY`] until it has.
async fn follow_role(
    daemon: std::sync::Weak<Daemon>,
    manager: bool,
    mut role: watch::Receiver<Option<PeerRole>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let want = *role.borrow_and_update();
        let mut wait = None;
        if let Some(r) = want {
            let to_manager = r == PeerRole::Manager;
            if to_manager != manager {
                let Some(d) = daemon.upgrade() else { return };
                tokio::spawn(d.change_role(to_manager));
                wait = Some(ROLE_RETRY);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait.unwrap_or(Duration::MAX)), if wait.is_some() => {}
            r = role.changed(), if wait.is_none() => if r.is_err() { return },
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

/// A manager's key store for `creds`: a new one, or (a node that was a manager before) the
/// data key already on disk, with `creds` saved through it.
fn manager_keystore(
    certs: &std::path::Path,
    creds: &NodeCredentials,
) -> anyhow::Result<(KeyStore, DataKey)> {
    match KeyStore::create(certs, creds, None) {
        Ok(v) => Ok(v),
        Err(shoal_ca::CaError::DataKeyExists { .. }) => {
            let (mut ks, state) = KeyStore::open(certs)?;
            let LockState::Unlocked(key) = state else {
                anyhow::bail!("this node's key file is locked");
            };
            ks.save_credentials(creds)?;
            Ok((ks, key))
        }
        Err(e) => Err(e.into()),
    }
}

/// A joining manager asks the leader to add it to the Raft group, following NotLeader
/// answers to the leader, until [`JOIN_TIMEOUT`].
async fn add_self_to_raft(
    managers: &[String],
    tls: Arc<rustls::ClientConfig>,
    member: &ManagerMember,
) -> Result<(), RpcError> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut queue: Vec<String> = managers.to_vec();
    let mut last = RpcError::Unavailable("no manager addresses".into());
    let mut i = 0;
    while Instant::now() < deadline {
        if queue.is_empty() {
            break;
        }
        let addr = queue[i % queue.len()].clone();
        i += 1;
        let opts = ClientOptions::default().with_request_timeout(Some(JOIN_TIMEOUT));
        let res = match NodeClient::connect_with(&addr, tls.clone(), opts).await {
            Ok(c) => c.add_manager(member).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => return Ok(()),
            Err(RpcError::NotLeader {
                leader_addr: Some(leader),
                ..
            }) => {
                if !queue.contains(&leader) {
                    queue.push(leader.clone());
                }
                if let Some(p) = queue.iter().position(|a| *a == leader) {
                    i = p;
                }
                last = RpcError::Unavailable(format!("{addr} is not the leader"));
            }
            Err(e @ (RpcError::PermissionDenied(_) | RpcError::InvalidArgument(_))) => {
                return Err(e)
            }
            Err(e) => {
                last = e;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Err(last)
}

/// Keeps the agent's manager list (managers: from the store) and the persisted one current.
async fn keep_managers(
    dir: SwarmDir,
    mut identity: Identity,
    store: Option<Store>,
    link: RemoteManagerLink,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut known = link.managers();
        known.sort();
        let list = match &store {
            Some(s) => {
                let from_store = cluster::manager_addrs(s);
                if !from_store.is_empty() && from_store != known {
                    link.set_managers(from_store.clone());
                }
                from_store
            }
            None => known,
        };
        let mut saved = identity.managers.clone();
        saved.sort();
        if !list.is_empty() && list != saved && !*stop.borrow() {
            identity.managers = list;
            if let Err(e) = dir.save(&identity) {
                tracing::warn!(error = %e, "saving the manager list");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

/// Adds `:port` when the address has none.
fn with_port(addr: &str, port: u16) -> String {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return addr.to_string();
    }
    if addr.contains(':') && !addr.contains("::") {
        return addr.to_string();
    }
    format!("{addr}:{port}")
}

/// The first non-loopback IPv4 address of the host, else 127.0.0.1.
fn default_ip() -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        if let Some(sa) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            let ip = sa.ip();
            if !ip.is_loopback() {
                return Some(ip.to_string());
            }
        }
    }
    Some("127.0.0.1".into())
}

/// The defaults Docker fills into a new cluster's spec.
pub fn fill_swarm_spec_defaults(spec: &mut engine::SwarmSpec) {
    if spec.name.as_deref().unwrap_or("").is_empty() {
        spec.name = Some("default".into());
    }
    let o = spec.orchestration.get_or_insert_with(Default::default);
    if o.task_history_retention_limit.is_none() {
        o.task_history_retention_limit = Some(shoal_api::spec::DEFAULT_TASK_HISTORY_LIMIT);
    }
    let r = spec.raft.get_or_insert_with(Default::default);
    r.snapshot_interval.get_or_insert(10000);
    r.keep_old_snapshots.get_or_insert(0);
    r.log_entries_for_slow_followers.get_or_insert(500);
    // Docker's client sends zeros for what it leaves unset.
    if r.election_tick.unwrap_or(0) == 0 {
        r.election_tick = Some(10);
    }
    if r.heartbeat_tick.unwrap_or(0) == 0 {
        r.heartbeat_tick = Some(1);
    }
    let d = spec.dispatcher.get_or_insert_with(Default::default);
    if d.heartbeat_period.unwrap_or(0) == 0 {
        d.heartbeat_period = Some(5_000_000_000);
    }
    let ca = spec.ca_config.get_or_insert_with(Default::default);
    if ca.node_cert_expiry.unwrap_or(0) == 0 {
        ca.node_cert_expiry = Some(7_776_000_000_000_000);
    }
    spec.task_defaults.get_or_insert_with(Default::default);
    let e = spec.encryption_config.get_or_insert_with(Default::default);
    e.auto_lock_managers.get_or_insert(false);
}

#[cfg(test)]
mod leave_tests {
    use super::leave_manager_message;

    #[test]
    fn the_last_manager_is_told_its_state_would_be_erased() {
        assert_eq!(
            leave_manager_message(Some((true, 1, 0))),
            "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message. "
        );
    }

    #[test]
    fn leaving_that_breaks_quorum_says_how_many_managers_remain() {
        let m = leave_manager_message(Some((true, 2, 1)));
        assert!(
            m.contains("Removing this node leaves 1 managers out of 3. Without a Raft quorum"),
            "{m}"
        );
        assert!(
            m.ends_with("Use `--force` to suppress this message."),
            "{m}"
        );
    }

    #[test]
    fn leaving_with_quorum_kept_still_needs_force() {
        let m = leave_manager_message(Some((true, 5, 0)));
        assert!(!m.contains("Removing"), "{m}");
        assert!(m.contains("`--force-new-cluster`"), "{m}");
        let unknown = leave_manager_message(None);
        assert!(unknown.contains("Doing so may lose the consensus of your cluster."));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::{Action, StoreState};

    /// A node whose desired role is its role, led by Raft member 2.
    fn node(id: &str, role: NodeRole, raft_id: Option<u64>) -> Node {
        crate::daemon::testing::node(id, role, role, raft_id, 2)
    }

    #[test]
    fn a_forced_new_cluster_keeps_the_state_with_this_manager_alone() {
        let mut state = StoreState::default();
        let created = chrono::DateTime::from_timestamp(1_000_000, 0).unwrap();
        for mut n in [
            node("me", NodeRole::Manager, Some(1)),
            node("old-leader", NodeRole::Manager, Some(2)),
            node("worker", NodeRole::Worker, None),
        ] {
            n.meta.created_at = created;
            state.nodes.insert(n.id.clone(), n);
        }
        state.cluster = Some(Cluster {
            id: "c".into(),
            meta: Meta::new_now(),
            spec: Default::default(),
            worker_join_token: "wt".into(),
            manager_join_token: "mt".into(),
            root_ca_cert: "cert".into(),
            root_ca_key: "key".into(),
            removed_nodes: vec!["gone".into()],
            unlock_key: String::new(),
            default_addr_pool: Vec::new(),
            subnet_size: 24,
            data_path_port: 4789,
        });
        let ingress = shoal_manager::objects::ingress_network(&[], 24);
        state.networks.insert(ingress.id.clone(), ingress.clone());
        let secret = shoal_api::Secret {
            id: "s".into(),
            meta: Meta::new_now(),
            spec: engine::SecretSpec {
                name: Some("db".into()),
                data: Some("eA==".into()),
                ..Default::default()
            },
        };
        state.secrets.insert("s".into(), secret.clone());
        let config = shoal_api::Config {
            id: "cf".into(),
            meta: Meta::new_now(),
            spec: engine::ConfigSpec {
                name: Some("app".into()),
                data: Some("eA==".into()),
                ..Default::default()
            },
        };
        state.configs.insert("cf".into(), config);
        let me = Identity {
            node_id: "me".into(),
            cluster_id: "c".into(),
            raft_id: 1,
            advertise_addr: "127.0.0.1:2377".into(),
            listen_addr: "0.0.0.0:2377".into(),
            manager: true,
            managers: vec!["127.0.0.1:2377".into()],
        };
        let batch = recovered_state(state, &me);
        // Replayed into an empty state, it creates everything.
        let mut replay = StoreState::default();
        replay.apply(1, &batch).unwrap();
        assert!(batch.actions.iter().all(|a| matches!(a, Action::Create(_))));
        let c = replay.cluster.as_ref().unwrap();
        assert_eq!(
            (c.worker_join_token.as_str(), c.root_ca_key.as_str()),
            ("wt", "key")
        );
        assert_eq!(c.removed_nodes, vec!["gone", "old-leader"]);
        let mine = &replay.nodes["me"];
        let ms = mine.manager_status.as_ref().unwrap();
        assert!(ms.leader && ms.raft_id == 1 && ms.reachability == Reachability::Reachable);
        assert_eq!(mine.meta.created_at, created);
        let old = &replay.nodes["old-leader"];
        assert_eq!(
            (old.role, old.status.state, old.manager_status.is_none()),
            (NodeRole::Worker, NodeState::Down, true)
        );
        assert_eq!(old.desired_role(), NodeRole::Worker);
        assert_eq!(replay.nodes["worker"].status.state, NodeState::Ready);
        // Networks, secrets and configs are kept.
        assert_eq!(replay.networks[&ingress.id].name(), "ingress");
        assert_eq!(replay.secrets["s"].spec.data, secret.spec.data);
        assert_eq!(replay.configs["cf"].name(), "app");
    }
}
