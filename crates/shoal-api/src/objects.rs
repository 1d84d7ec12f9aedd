//! The stored objects: [`Cluster`], [`Node`], [`Service`], [`Task`], the swarm-scoped
//! [`Network`], [`Secret`] and [`Config`], and the [`Object`] sum type the store moves around.
//!
//! Every object has an `id` and a [`Meta`]: `meta.version` is the index of the Raft log entry
//! that last wrote it (the `Version.Index` clients send back with updates).

use crate::engine;
use crate::state::TaskState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Bookkeeping common to every object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Raft index of the write that produced this version of the object.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Meta {
    /// Metadata for an object created now (the store sets the version when it applies the write).
    pub fn new_now() -> Self {
        let now = Utc::now();
        Meta {
            version: 0,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The swarm itself: its spec, join tokens and CA material.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub meta: Meta,
    pub spec: engine::SwarmSpec,
    pub worker_join_token: String,
    pub manager_join_token: String,
    /// PEM of the root CA certificate (empty until the CA exists).
    #[serde(default)]
    pub root_ca_cert: String,
    /// PEM of the root CA's private key. Only managers hold the store, so only they have it;
    /// it never leaves them through the API.
    #[serde(default)]
    pub root_ca_key: String,
    /// IDs of nodes removed from the swarm (`node rm`): their certificates are refused.
    #[serde(default)]
    pub removed_nodes: Vec<String>,
    /// Under autolock, the swarm's unlock key (`SWMKEY-1-...`) that wraps every manager's key
    /// material; empty otherwise. Cluster state, so one key opens every manager; like the CA
    /// key it never leaves the managers through the API.
    #[serde(default)]
    pub unlock_key: String,
    #[serde(default)]
    pub default_addr_pool: Vec<String>,
    #[serde(default)]
    pub subnet_size: u32,
    #[serde(default)]
    pub data_path_port: u32,
}

/// The role a node has (or is asked to have).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Worker,
    Manager,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Worker => "worker",
            NodeRole::Manager => "manager",
        }
    }
}

/// Whether the scheduler may place tasks on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeAvailability {
    Active,
    Pause,
    Drain,
}

impl NodeAvailability {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAvailability::Active => "active",
            NodeAvailability::Pause => "pause",
            NodeAvailability::Drain => "drain",
        }
    }
}

/// A node's observed state, as the dispatcher sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Unknown,
    Down,
    Ready,
    Disconnected,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Unknown => "unknown",
            NodeState::Down => "down",
            NodeState::Ready => "ready",
            NodeState::Disconnected => "disconnected",
        }
    }
}

/// A manager's reachability in the Raft cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    Unknown,
    Unreachable,
    Reachable,
}

/// Observed status of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub state: NodeState,
    #[serde(default)]
    pub message: String,
    /// The address the node's traffic comes from.
    #[serde(default)]
    pub addr: String,
}

/// Raft membership status of a manager node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManagerStatus {
    pub leader: bool,
    pub reachability: Reachability,
    /// Advertised cluster address (`host:2377`).
    pub addr: String,
    /// The node's member ID in the Raft group.
    #[serde(default)]
    pub raft_id: u64,
}

/// A machine in the swarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub meta: Meta,
    /// What users set: name, labels, desired role, availability.
    pub spec: engine::NodeSpec,
    /// What the node reports about itself: hostname, platform, resources, engine.
    pub description: engine::NodeDescription,
    pub status: NodeStatus,
    /// The role the node currently has.
    pub role: NodeRole,
    pub manager_status: Option<ManagerStatus>,
    /// Where the node's node-to-node server listens (`host:2377`), to reach its Logs service.
    #[serde(default)]
    pub addr_port: String,
    /// The node's own address on each overlay it takes part in (network ID -> `a.b.c.d/len`),
    /// allocated by the managers: the gateway of its tasks there and the source address of
    /// the routing mesh (Docker's per-node load-balancer attachment).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub network_addresses: std::collections::BTreeMap<String, String>,
}

impl Node {
    /// Availability from the spec (active when unset).
    pub fn availability(&self) -> NodeAvailability {
        use engine::NodeSpecAvailabilityEnum as A;
        match self.spec.availability {
            Some(A::PAUSE) => NodeAvailability::Pause,
            Some(A::DRAIN) => NodeAvailability::Drain,
            _ => NodeAvailability::Active,
        }
    }

    /// Desired role from the spec (the current role when unset).
    pub fn desired_role(&self) -> NodeRole {
        use engine::NodeSpecRoleEnum as R;
        match self.spec.role {
            Some(R::MANAGER) => NodeRole::Manager,
            Some(R::WORKER) => NodeRole::Worker,
            _ => self.role,
        }
    }

    pub fn hostname(&self) -> &str {
        self.description.hostname.as_deref().unwrap_or("")
    }

    /// Labels set by users through `node update --label-add`.
    pub fn labels(&self) -> Option<&HashMap<String, String>> {
        self.spec.labels.as_ref()
    }

    /// Engine labels reported by the node itself.
    pub fn engine_labels(&self) -> Option<&HashMap<String, String>> {
        self.description
            .engine
            .as_ref()
            .and_then(|e| e.labels.as_ref())
    }

    pub fn is_ready(&self) -> bool {
        self.status.state == NodeState::Ready
    }
}

/// A service: the desired state users declare.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub meta: Meta,
    /// The spec exactly as the client sent it (boxed: see [`Object`]).
    pub spec: Box<engine::ServiceSpec>,
    pub previous_spec: Option<Box<engine::ServiceSpec>>,
    /// Bumped on every change of the spec; tasks record the value they were made from, and a
    /// task whose `spec_version` differs is out of date (the rolling updater replaces it).
    pub spec_version: u64,
    /// Published ports as allocated (what `service ls` shows), virtual IPs.
    #[serde(default)]
    pub endpoint: Option<engine::ServiceEndpoint>,
    #[serde(default)]
    pub update_status: Option<engine::ServiceUpdateStatus>,
    /// Registry credentials from `X-Registry-Auth`, delivered to the nodes that pull.
    #[serde(default)]
    pub registry_auth: Option<String>,
    /// For job modes: incremented each time the job is (re)started.
    #[serde(default)]
    pub job_iteration: u64,
}

impl Service {
    pub fn name(&self) -> &str {
        self.spec.name.as_deref().unwrap_or("")
    }
}

/// A task's observed status, reported by the agent (or set by the manager before assignment).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub timestamp: DateTime<Utc>,
    pub state: TaskState,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub err: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Host process ID (process runtime) while running.
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub container_id: Option<String>,
}

impl TaskStatus {
    pub fn new(state: TaskState, message: impl Into<String>) -> Self {
        TaskStatus {
            timestamp: Utc::now(),
            state,
            message: message.into(),
            err: None,
            exit_code: None,
            pid: None,
            container_id: None,
        }
    }
}

/// One unit of work: a slot of a replicated service or a node of a global service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub meta: Meta,
    pub service_id: String,
    /// Copy of the service name at creation, for naming (`<service>.<slot>`).
    pub service_name: String,
    /// 1-based slot for replicated services; 0 for global ones.
    pub slot: u64,
    pub node_id: Option<String>,
    /// Shared by the tasks made from one spec (the store and the orchestrators keep one
    /// allocation per service and spec); change it with `Arc::make_mut`.
    pub spec: std::sync::Arc<engine::TaskSpec>,
    /// The service's `spec_version` this task was made from.
    pub spec_version: u64,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    #[serde(default)]
    pub job_iteration: Option<u64>,
    /// Copy of the service's labels when the task was created (swarmkit's
    /// `ServiceAnnotations`; the name is [`Task::service_name`]): the task list's `label`
    /// filter matches on it, so tasks still match after their service is gone. `None` on
    /// tasks stored before the copy existed (the filter then reads the live service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_labels: Option<HashMap<String, String>>,
    /// The task's attachments to overlay networks with its address on each, allocated when
    /// the task leaves `new` (ingress first when the service publishes ports in ingress mode,
    /// then the spec's networks in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<crate::netmap::TaskAttachment>,
}

impl Task {
    /// The name Docker shows: `<service>.<slot>` or, for global services, `<service>.<node id>`.
    pub fn name(&self) -> String {
        if self.slot > 0 {
            format!("{}.{}", self.service_name, self.slot)
        } else {
            format!(
                "{}.{}",
                self.service_name,
                self.node_id.as_deref().unwrap_or("")
            )
        }
    }

    /// The name the runtime uses for the task's process/container: `<service>.<slot>.<id>`.
    pub fn runtime_name(&self) -> String {
        format!("{}.{}", self.name(), self.id)
    }
}

/// A swarm-scoped overlay network: what the user asked for and what the manager allocated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub meta: Meta,
    /// The create request as the client sent it (name, driver, labels, IPAM, options...).
    pub spec: Box<engine::NetworkCreateRequest>,
    /// The allocated IPv4 subnets, each with its gateway (the requested ones, or one taken
    /// from the swarm's default address pool).
    #[serde(default)]
    pub subnets: Vec<NetworkSubnet>,
    /// The VXLAN network identifier (VNI) of the overlay.
    #[serde(default)]
    pub vni: u32,
}

/// One allocated subnet of a [`Network`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSubnet {
    /// `a.b.c.d/len`.
    pub subnet: String,
    /// The gateway address (the subnet's first host unless one was requested).
    pub gateway: String,
    /// An `IPRange` requested inside the subnet (empty: the whole subnet).
    #[serde(default)]
    pub ip_range: String,
}

impl Network {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The driver name (`overlay` when unset).
    pub fn driver(&self) -> &str {
        match self.spec.driver.as_deref() {
            None | Some("") => "overlay",
            Some(d) => d,
        }
    }

    pub fn is_ingress(&self) -> bool {
        self.spec.ingress.unwrap_or(false)
    }
}

/// A secret: sensitive data delivered to the tasks that use it. `spec.data` (base64, as the
/// API sends it) never leaves the managers through the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Secret {
    pub id: String,
    pub meta: Meta,
    pub spec: engine::SecretSpec,
}

impl Secret {
    pub fn name(&self) -> &str {
        self.spec.name.as_deref().unwrap_or("")
    }
}

/// A config: non-sensitive data delivered to the tasks that use it (`spec.data` is base64).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    pub meta: Meta,
    pub spec: engine::ConfigSpec,
}

impl Config {
    pub fn name(&self) -> &str {
        self.spec.name.as_deref().unwrap_or("")
    }
}

/// Which kind of object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectKind {
    Cluster,
    Node,
    Service,
    Task,
    Network,
    Secret,
    Config,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Cluster => "cluster",
            ObjectKind::Node => "node",
            ObjectKind::Service => "service",
            ObjectKind::Task => "task",
            ObjectKind::Network => "network",
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
        }
    }
}

/// Any stored object. It is moved by value through batches and events, so it is kept small:
/// a service holds its specs behind boxes and a task shares its spec (an `Arc`), and a batch
/// of 1,000 task writes is ~0.4 MB of actions, not ~4 MB.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Object {
    Cluster(Cluster),
    Node(Node),
    Service(Service),
    Task(Task),
    Network(Network),
    Secret(Secret),
    Config(Config),
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Cluster(_) => ObjectKind::Cluster,
            Object::Node(_) => ObjectKind::Node,
            Object::Service(_) => ObjectKind::Service,
            Object::Task(_) => ObjectKind::Task,
            Object::Network(_) => ObjectKind::Network,
            Object::Secret(_) => ObjectKind::Secret,
            Object::Config(_) => ObjectKind::Config,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Object::Cluster(o) => &o.id,
            Object::Node(o) => &o.id,
            Object::Service(o) => &o.id,
            Object::Task(o) => &o.id,
            Object::Network(o) => &o.id,
            Object::Secret(o) => &o.id,
            Object::Config(o) => &o.id,
        }
    }

    pub fn meta(&self) -> &Meta {
        match self {
            Object::Cluster(o) => &o.meta,
            Object::Node(o) => &o.meta,
            Object::Service(o) => &o.meta,
            Object::Task(o) => &o.meta,
            Object::Network(o) => &o.meta,
            Object::Secret(o) => &o.meta,
            Object::Config(o) => &o.meta,
        }
    }

    pub fn meta_mut(&mut self) -> &mut Meta {
        match self {
            Object::Cluster(o) => &mut o.meta,
            Object::Node(o) => &mut o.meta,
            Object::Service(o) => &mut o.meta,
            Object::Task(o) => &mut o.meta,
            Object::Network(o) => &mut o.meta,
            Object::Secret(o) => &mut o.meta,
            Object::Config(o) => &mut o.meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_kinds_do_not_grow_the_object_enum() {
        // Batches and events move objects by value: a network, secret or config must be no
        // larger than a task, the most numerous object.
        let task = std::mem::size_of::<Task>();
        for (what, size) in [
            ("network", std::mem::size_of::<Network>()),
            ("secret", std::mem::size_of::<Secret>()),
            ("config", std::mem::size_of::<Config>()),
        ] {
            assert!(size <= task, "{what}: {size} bytes > task {task} bytes");
        }
    }

    #[test]
    fn tasks_stored_before_the_service_labels_copy_still_load() {
        let old = serde_json::json!({
            "id": "t", "meta": Meta::new_now(), "service_id": "s", "service_name": "web",
            "slot": 1, "node_id": null, "spec": {}, "spec_version": 1,
            "desired_state": "running",
            "status": {"timestamp": Utc::now(), "state": "running"},
            "labels": {}
        });
        let mut t: Task = serde_json::from_value(old).unwrap();
        assert_eq!(t.service_labels, None);
        // Without a copy nothing new is written; with one it round-trips.
        assert!(serde_json::to_value(&t)
            .unwrap()
            .get("service_labels")
            .is_none());
        t.service_labels = Some([("a".to_string(), "b".to_string())].into_iter().collect());
        let back: Task = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn kinds_and_names() {
        let n = Network {
            id: "n".into(),
            meta: Meta::new_now(),
            spec: Box::new(engine::NetworkCreateRequest {
                name: "web".into(),
                ..Default::default()
            }),
            subnets: Vec::new(),
            vni: 0,
        };
        assert_eq!(n.driver(), "overlay");
        assert!(!n.is_ingress());
        let o = Object::Network(n);
        assert_eq!(o.kind(), ObjectKind::Network);
        assert_eq!(o.kind().as_str(), "network");
        assert_eq!(o.id(), "n");
        assert_eq!(ObjectKind::Secret.as_str(), "secret");
        assert_eq!(ObjectKind::Config.as_str(), "config");
    }
}
