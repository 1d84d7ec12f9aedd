//! The node's swarm life cycle: inactive → (init | restart with state) → active → leave.
//!
//! ```text
//!            swarm init                         swarm leave --force
//!  inactive ───────────► open Raft (1 member) ─► active ──────────────► stop tasks, forget state
//!      ▲                 store ⇄ Raft            │ manager: dispatcher, orchestrators, scheduler
//!      │  daemon start with <data-root>/swarm    │ agent: worker ⇄ dispatcher (in process)
//!      └─────────────────────────────────────────┘
//! ```

use super::host::Host;
use super::identity::{Identity, SwarmDir};
use super::link::LocalLink;
use super::raft_glue::{RaftProposer, StoreTarget};
use super::tokens;
use anyhow::Context;
use shoal_agent::runtime::Runtime;
use shoal_agent::worker::{Worker, WorkerConfig};
use shoal_api::{
    engine, new_id, Cluster, ManagerStatus, Meta, Node, NodeRole, NodeState, NodeStatus, Object,
    Reachability,
};
use shoal_manager::control::Control;
use shoal_manager::dispatcher::Dispatcher;
use shoal_raft::{NoTransport, RaftConfig, RaftNode};
use shoal_store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

/// Docker's text when a node in a swarm is asked to init or join again.
pub const ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";
/// Docker's text for swarm calls on a node outside any swarm.
pub const NOT_IN_SWARM: &str = "This node is not part of a swarm";
/// Docker's text when a manager leaves without --force.
pub const LEAVE_MANAGER: &str = "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.";

/// Static configuration of the daemon.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub data_root: PathBuf,
    pub default_runtime: String,
    /// Leave task processes running when the daemon stops (they are adopted on restart).
    pub live_restore: bool,
}

/// The running parts of an active swarm member.
struct Active {
    identity: Identity,
    raft: RaftNode,
    shutdown: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

/// One machine's daemon: its store, runtimes, and (while in a swarm) its running roles.
pub struct Daemon {
    pub cfg: DaemonConfig,
    pub host: Host,
    pub store: Store,
    pub runtimes: HashMap<String, Arc<dyn Runtime>>,
    swarm_dir: SwarmDir,
    active: Mutex<Option<Active>>,
    /// Snapshot of the identity for synchronous status reads.
    current: RwLock<Option<(Identity, Arc<Control>)>>,
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
            active: Mutex::new(None),
            current: RwLock::new(None),
        })
    }

    /// Identity and control while active.
    pub fn current(&self) -> Option<(Identity, Arc<Control>)> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    /// On daemon start: rejoin the swarm this node was part of, if any.
    pub async fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(identity) = self.swarm_dir.load()? else {
            return Ok(());
        };
        tracing::info!(node = %identity.node_id, "resuming swarm membership");
        let raft = self.open_raft(&identity).await?;
        raft.wait_leader(Duration::from_secs(30))
            .await
            .context("waiting for a Raft leader")?;
        self.start(identity, raft).await
    }

    async fn open_raft(&self, identity: &Identity) -> anyhow::Result<RaftNode> {
        let dir = self.swarm_dir.raft_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cfg = RaftConfig {
            node_id: identity.raft_id,
            addr: identity.advertise_addr.clone(),
            // A single member elects itself quickly.
            election_timeout_ms: (300, 600),
            heartbeat_ms: 100,
            ..RaftConfig::default()
        };
        let raft = RaftNode::open(
            &dir,
            cfg,
            Arc::new(StoreTarget(self.store.clone())),
            Arc::new(NoTransport),
        )
        .await
        .with_context(|| format!("opening the Raft log in {}", dir.display()))?;
        self.store
            .set_proposer(Some(Arc::new(RaftProposer(raft.clone()))));
        Ok(raft)
    }

    /// `swarm init`: a new one-manager cluster.
    pub async fn init(self: &Arc<Self>, opts: InitOptions) -> Result<String, SwarmOpError> {
        let mut guard = self.active.lock().await;
        if guard.is_some() {
            return Err(SwarmOpError::Unavailable(ALREADY_IN_SWARM.into()));
        }
        let listen_addr = if opts.listen_addr.is_empty() {
            "0.0.0.0:2377".to_string()
        } else {
            with_port(&opts.listen_addr, 2377)
        };
        let advertise = if opts.advertise_addr.is_empty() {
            let ip = listen_addr
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .filter(|h| h != "0.0.0.0" && !h.is_empty())
                .or_else(default_ip)
                .ok_or_else(|| {
                    SwarmOpError::InvalidArgument(
                        "could not find the system's IP address - specify one with --advertise-addr"
                            .into(),
                    )
                })?;
            format!("{ip}:2377")
        } else {
            with_port(&opts.advertise_addr, 2377)
        };
        let identity = Identity {
            node_id: new_id(),
            cluster_id: new_id(),
            raft_id: rand::random::<u64>() | 1,
            advertise_addr: advertise.clone(),
            listen_addr,
            manager: true,
        };
        self.store.clear();
        let raft = self.open_raft(&identity).await?;
        raft.initialize_single()
            .await
            .map_err(|e| anyhow::anyhow!("initializing Raft: {e}"))?;
        raft.wait_leader(Duration::from_secs(30))
            .await
            .map_err(|e| anyhow::anyhow!("waiting for a Raft leader: {e}"))?;

        let digest = tokens::new_digest();
        let mut spec = opts.spec.clone().unwrap_or_default();
        fill_swarm_spec_defaults(&mut spec);
        let cluster = Cluster {
            id: identity.cluster_id.clone(),
            meta: Meta::new_now(),
            spec,
            worker_join_token: tokens::new_token(&digest),
            manager_join_token: tokens::new_token(&digest),
            root_ca_cert: String::new(),
            root_ca_key: String::new(),
            removed_nodes: Vec::new(),
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
        let ip = advertise
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
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
                addr: ip,
            },
            role: NodeRole::Manager,
            addr_port: String::new(),
            manager_status: Some(ManagerStatus {
                leader: true,
                reachability: Reachability::Reachable,
                addr: advertise,
                raft_id: identity.raft_id,
            }),
        };
        self.store
            .update(|tx| {
                tx.create(Object::Cluster(cluster))?;
                tx.create(Object::Node(node))
            })
            .await
            .map_err(|e| SwarmOpError::Unavailable(e.to_string()))?;
        self.swarm_dir.save(&identity)?;
        let node_id = identity.node_id.clone();
        drop(guard.take());
        drop(guard);
        self.start(identity, raft).await?;
        Ok(node_id)
    }

    /// Starts the roles of an active member.
    async fn start(self: &Arc<Self>, identity: Identity, raft: RaftNode) -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(false);
        let mut handles = Vec::new();
        let dispatcher = Dispatcher::new(self.store.clone());
        handles.push(tokio::spawn(Arc::clone(&dispatcher).run(rx.clone())));
        let manager = shoal_manager::manager::Manager::new(self.store.clone());
        handles.push(tokio::spawn(manager.run(rx.clone())));
        let worker = Worker::new(
            WorkerConfig {
                node_id: identity.node_id.clone(),
                addr: identity
                    .advertise_addr
                    .rsplit_once(':')
                    .map(|(h, _)| h.to_string())
                    .unwrap_or_default(),
                description: self.host.node_description(HashMap::new()),
                default_runtime: self.cfg.default_runtime.clone(),
            },
            Arc::new(LocalLink(dispatcher)),
            self.runtimes.clone(),
        );
        handles.push(tokio::spawn(worker.run(rx)));
        let control = Arc::new(Control::new(self.store.clone()));
        if let Ok(mut c) = self.current.write() {
            *c = Some((identity.clone(), control));
        }
        *self.active.lock().await = Some(Active {
            identity,
            raft,
            shutdown: tx,
            handles,
        });
        Ok(())
    }

    /// Stops the roles (daemon shutdown or leave). Task processes keep running.
    async fn stop_roles(&self) -> Option<Active> {
        let active = self.active.lock().await.take()?;
        let _ = active.shutdown.send(true);
        for h in &active.handles {
            // Give loops a moment to notice, then abort what is left.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while !h.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            h.abort();
        }
        self.store.set_proposer(None);
        if let Err(e) = active.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft shutdown");
        }
        if let Ok(mut c) = self.current.write() {
            *c = None;
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

    /// `swarm leave`.
    pub async fn leave(&self, force: bool) -> Result<(), SwarmOpError> {
        {
            let guard = self.active.lock().await;
            match guard.as_ref() {
                None => return Err(SwarmOpError::Unavailable(NOT_IN_SWARM.into())),
                Some(a) if a.identity.manager && !force => {
                    return Err(SwarmOpError::Unavailable(LEAVE_MANAGER.into()))
                }
                Some(_) => {}
            }
        }
        let _ = self.stop_roles().await;
        self.remove_all_tasks().await;
        self.swarm_dir
            .remove()
            .map_err(|e| anyhow::anyhow!("removing swarm state: {e}"))?;
        self.store.clear();
        Ok(())
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
