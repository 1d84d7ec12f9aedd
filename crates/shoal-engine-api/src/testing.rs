//! [`MockBackend`]: an in-memory [`SwarmBackend`] (a [`Store`] and a [`Control`], scripted
//! status and task logs) so the routes can be exercised without a daemon.
//!
//! ```text
//!   MockBackend::new()          inactive node; init() creates cluster + this node (leader)
//!   MockBackend::initialized()  an active single-manager swarm, ready for requests
//!   set_task_logs(id, lines)    what task_logs() returns (kept open when following)
//! ```

use crate::backend::{HostInfo, LocalNodeState, SwarmBackend, SwarmStatus};
use crate::error::ApiError;
use futures::stream::{BoxStream, StreamExt};
use shoal_agent::runtime::{LogLine, LogOptions};
use shoal_api::{
    engine, new_id, Cluster, ManagerStatus, Meta, Node, NodeRole, NodeState, NodeStatus, Object,
    Reachability, Task,
};
use shoal_manager::control::Control;
use shoal_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An in-memory backend for tests.
pub struct MockBackend {
    store: Store,
    control: Arc<Control>,
    status: Mutex<SwarmStatus>,
    logs: Mutex<HashMap<String, Vec<LogLine>>>,
    unlock_key: Mutex<String>,
    host: HostInfo,
}

impl Default for MockBackend {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A join token shaped like swarmkit's (`SWMTKN-1-<50>-<25>`).
pub fn fake_join_token() -> String {
    let digest: String = format!("{}{}", new_id(), new_id())
        .chars()
        .take(50)
        .collect();
    format!("SWMTKN-1-{digest}-{}", new_id())
}

impl MockBackend {
    /// A node outside any swarm.
    pub fn new() -> Self {
        let store = Store::new();
        MockBackend {
            control: Arc::new(Control::new(store.clone())),
            store,
            status: Mutex::new(SwarmStatus::inactive()),
            logs: Mutex::new(HashMap::new()),
            unlock_key: Mutex::new(String::new()),
            host: HostInfo {
                name: "mock-host".into(),
                ncpu: 2,
                mem_total: 4 << 30,
                os: "Mock Linux".into(),
                kernel: "6.1.0-mock".into(),
                arch: "x86_64".into(),
                data_root: "/var/lib/shoal".into(),
                default_runtime: "process".into(),
                runtimes: vec!["process".into()],
                server_version: env!("CARGO_PKG_VERSION").into(),
                labels: Vec::new(),
            },
        }
    }

    /// A single-manager swarm whose only node is this one (ready, leader).
    pub async fn initialized() -> Arc<Self> {
        let b = Arc::new(Self::new());
        if let Err(e) = b.init(crate::backend::InitRequest::default()).await {
            tracing::error!(error = %e, "mock swarm init failed");
        }
        b
    }

    /// The store behind this backend.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The control behind this backend.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Replaces the reported swarm status.
    pub fn set_status(&self, s: SwarmStatus) {
        *lock(&self.status) = s;
    }

    /// This node's ID (empty before init/join).
    pub fn node_id(&self) -> String {
        lock(&self.status).node_id.clone()
    }

    /// Sets the lines `task_logs` returns for `task_id`.
    pub fn set_task_logs(&self, task_id: &str, lines: Vec<LogLine>) {
        lock(&self.logs).insert(task_id.to_string(), lines);
    }

    /// Sets the unlock key (non-empty: autolock on).
    pub fn set_unlock_key(&self, key: &str) {
        *lock(&self.unlock_key) = key.to_string();
    }
}

#[async_trait::async_trait]
impl SwarmBackend for MockBackend {
    fn status(&self) -> SwarmStatus {
        lock(&self.status).clone()
    }

    fn manager(&self) -> Option<(Store, Arc<Control>)> {
        let s = lock(&self.status);
        (s.state == LocalNodeState::Active && s.control_available)
            .then(|| (self.store.clone(), self.control.clone()))
    }

    async fn init(&self, req: crate::backend::InitRequest) -> Result<String, ApiError> {
        let req = req.base;
        let node_id = new_id();
        let host = req
            .advertise_addr
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        let host = host.split(':').next().unwrap_or("127.0.0.1").to_string();
        let mut spec = req.spec.clone().unwrap_or_default();
        spec.name.get_or_insert_with(|| "default".into());
        spec.orchestration
            .get_or_insert_with(Default::default)
            .task_history_retention_limit
            .get_or_insert(5);
        spec.dispatcher
            .get_or_insert_with(Default::default)
            .heartbeat_period
            .get_or_insert(5_000_000_000);
        let cluster = Cluster {
            id: new_id(),
            meta: Meta::new_now(),
            spec,
            worker_join_token: fake_join_token(),
            manager_join_token: fake_join_token(),
            root_ca_cert: String::new(),
            root_ca_key: String::new(),
            removed_nodes: Vec::new(),
            unlock_key: String::new(),
            default_addr_pool: req
                .default_addr_pool
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| vec!["10.0.0.0/8".into()]),
            subnet_size: req.subnet_size.filter(|s| *s > 0).unwrap_or(24),
            data_path_port: req.data_path_port.filter(|p| *p > 0).unwrap_or(4789),
        };
        let node = Node {
            id: node_id.clone(),
            meta: Meta::new_now(),
            spec: engine::NodeSpec {
                role: Some(engine::NodeSpecRoleEnum::MANAGER),
                availability: Some(engine::NodeSpecAvailabilityEnum::ACTIVE),
                ..Default::default()
            },
            description: engine::NodeDescription {
                hostname: Some(self.host.name.clone()),
                platform: Some(engine::Platform {
                    architecture: Some(self.host.arch.clone()),
                    os: Some("linux".into()),
                }),
                resources: Some(engine::ResourceObject {
                    nano_cpus: Some(self.host.ncpu * 1_000_000_000),
                    memory_bytes: Some(self.host.mem_total),
                    generic_resources: None,
                }),
                engine: Some(engine::EngineDescription {
                    engine_version: Some(self.host.server_version.clone()),
                    labels: None,
                    plugins: None,
                }),
                tls_info: None,
            },
            status: NodeStatus {
                state: NodeState::Ready,
                message: String::new(),
                addr: host.clone(),
            },
            role: NodeRole::Manager,
            manager_status: Some(ManagerStatus {
                leader: true,
                reachability: Reachability::Reachable,
                addr: format!("{host}:2377"),
                raft_id: 1,
            }),
            addr_port: format!("{host}:2377"),
            network_addresses: Default::default(),
        };
        self.store
            .update(|tx| {
                let ingress = shoal_manager::objects::ingress_network(
                    &cluster.default_addr_pool,
                    cluster.subnet_size,
                );
                tx.create(Object::Cluster(cluster))?;
                tx.create(Object::Network(ingress))?;
                tx.create(Object::Node(node))
            })
            .await?;
        *lock(&self.status) = SwarmStatus {
            state: LocalNodeState::Active,
            node_id: node_id.clone(),
            node_addr: host.clone(),
            control_available: true,
            error: String::new(),
            remote_managers: vec![(node_id.clone(), format!("{host}:2377"))],
        };
        Ok(node_id)
    }

    async fn join(&self, req: crate::backend::JoinRequest) -> Result<(), ApiError> {
        let req = req.base;
        let remote = req
            .remote_addrs
            .as_ref()
            .and_then(|r| r.first().cloned())
            .unwrap_or_default();
        *lock(&self.status) = SwarmStatus {
            state: LocalNodeState::Active,
            node_id: new_id(),
            node_addr: "127.0.0.2".into(),
            control_available: false,
            error: String::new(),
            remote_managers: vec![("manager".into(), remote)],
        };
        Ok(())
    }

    async fn leave(&self, _force: bool) -> Result<(), ApiError> {
        self.store.clear();
        *lock(&self.status) = SwarmStatus::inactive();
        Ok(())
    }

    async fn unlock(&self, key: String) -> Result<(), ApiError> {
        if key != *lock(&self.unlock_key) {
            return Err(ApiError::invalid_unlock_key());
        }
        let mut s = lock(&self.status);
        s.state = LocalNodeState::Active;
        s.control_available = true;
        Ok(())
    }

    fn unlock_key(&self) -> Result<String, ApiError> {
        Ok(lock(&self.unlock_key).clone())
    }

    async fn task_logs(
        &self,
        task: &Task,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, ApiError> {
        let Some(lines) = lock(&self.logs).get(&task.id).cloned() else {
            return Err(ApiError::not_found(format!("no logs for task {}", task.id)));
        };
        let lines = shoal_agent::logs::apply_since_tail(lines, &opts);
        let s = futures::stream::iter(lines);
        Ok(if opts.follow {
            s.chain(futures::stream::pending()).boxed()
        } else {
            s.boxed()
        })
    }

    fn host_info(&self) -> HostInfo {
        self.host.clone()
    }
}
