//! The network map: what one node's data plane must look like, computed by the managers from
//! the store and sent to the node's agent with its assignment set (where swarm gossips it on
//! port 7946, Shoal uses the dispatcher stream the node already holds: see docs/networking.md).
//!
//! ```text
//!  store (networks, nodes, services, tasks)  ──manager──►  NetworkMap per node
//!      └ overlays the node takes part in (ingress always; others while a task of it runs there)
//!        with its own address on each, the VNI and the other nodes' underlay addresses
//!      └ services: virtual IPs, published ports, the addresses of their running tasks
//!                                                   ──agent──►  bridges, VXLAN, task namespaces,
//!                                                               NAT rules / proxies, DNS answers
//! ```
//!
//! Everything here is plain data with addresses as text (`10.0.1.5` or `10.0.1.0/24`), so the
//! map is easy to compare, log and test; the agent parses it once.

use serde::{Deserialize, Serialize};

/// The VXLAN UDP port when the swarm was not given `--data-path-port`.
pub const DEFAULT_DATA_PATH_PORT: u16 = 4789;
/// The MTU of overlay links: 1500 less the VXLAN encapsulation (50 bytes).
pub const OVERLAY_MTU: u32 = 1450;

/// One node's data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetworkMap {
    /// The node's own underlay address (the VXLAN tunnels' local end).
    pub underlay: String,
    /// The VXLAN UDP port of the swarm.
    pub data_path_port: u16,
    /// The overlays this node takes part in, by network ID.
    pub networks: Vec<OverlayPlan>,
    /// Every service with an endpoint (virtual IPs, published ports, running tasks), by ID.
    pub services: Vec<ServicePlan>,
}

impl NetworkMap {
    pub fn network(&self, id: &str) -> Option<&OverlayPlan> {
        self.networks.iter().find(|n| n.id == id)
    }

    /// The ingress network, if this node has it.
    pub fn ingress(&self) -> Option<&OverlayPlan> {
        self.networks.iter().find(|n| n.ingress)
    }

    /// Where this node (`node_id`) sends a published port's connections: for ingress mode,
    /// every backend's ingress address; for host mode, this node's own backends, on the first
    /// of their addresses on a network this node has.
    pub fn port_targets<'a>(
        &'a self,
        svc: &'a ServicePlan,
        mode: PublishMode,
        node_id: &str,
    ) -> Vec<&'a str> {
        match mode {
            PublishMode::Ingress => match self.ingress() {
                Some(ing) => svc
                    .backends
                    .iter()
                    .filter_map(|b| b.ip_on(&ing.id))
                    .collect(),
                None => Vec::new(),
            },
            PublishMode::Host => svc
                .backends
                .iter()
                .filter(|b| b.node_id == node_id)
                .filter_map(|b| {
                    b.addresses
                        .iter()
                        .find(|a| self.network(&a.network_id).is_some())
                        .map(|a| a.ip.as_str())
                })
                .collect(),
        }
    }
}

/// One overlay network as this node builds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct OverlayPlan {
    pub id: String,
    pub name: String,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// `a.b.c.d/len`.
    pub subnet: String,
    /// This node's own address on the network (`a.b.c.d/len`): the tasks' gateway and the
    /// source address of routing-mesh traffic the node forwards.
    pub node_address: String,
    /// The underlay addresses of the other nodes on this network (VXLAN flood list), sorted.
    pub peers: Vec<String>,
    pub ingress: bool,
    /// `--internal`: no route out of the overlay.
    pub internal: bool,
    pub mtu: u32,
}

/// How a service's name resolves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// To one virtual IP per network, balanced over the running tasks.
    #[default]
    Vip,
    /// To the running tasks' addresses (DNS round robin).
    Dnsrr,
}

/// A transport protocol of a published port.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Where a published port answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// On every node, balanced over all running tasks (the routing mesh).
    #[default]
    Ingress,
    /// Only on the nodes running a task, to that task.
    Host,
}

/// An address on one network.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
pub struct NetAddress {
    pub network_id: String,
    /// The bare address (`10.0.1.5`).
    pub ip: String,
}

/// A published port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct PortPlan {
    pub protocol: Protocol,
    /// The port the tasks listen on.
    pub target: u16,
    /// The port every node (ingress) or the task's node (host) answers on.
    pub published: u16,
    pub mode: PublishMode,
}

/// A service as the data plane sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct ServicePlan {
    pub id: String,
    pub name: String,
    pub endpoint_mode: EndpointMode,
    /// One virtual IP per attached network (VIP mode), including ingress when ports are
    /// published in ingress mode.
    pub vips: Vec<NetAddress>,
    pub ports: Vec<PortPlan>,
    /// Network aliases of the service, per network ID (`networks: {net: {aliases: [...]}}`).
    pub aliases: Vec<(String, Vec<String>)>,
    /// The tasks that take traffic: running, and healthy when the service has a health check.
    pub backends: Vec<Backend>,
}

impl ServicePlan {
    /// The service's VIP on a network.
    pub fn vip_on(&self, network_id: &str) -> Option<&str> {
        self.vips
            .iter()
            .find(|a| a.network_id == network_id)
            .map(|a| a.ip.as_str())
    }

    /// Whether the service is attached to a network (it has a VIP, an alias entry or a backend
    /// there).
    pub fn on_network(&self, network_id: &str) -> bool {
        self.vip_on(network_id).is_some()
            || self.aliases.iter().any(|(n, _)| n == network_id)
            || self
                .backends
                .iter()
                .any(|b| b.addresses.iter().any(|a| a.network_id == network_id))
    }
}

/// One task that takes a service's traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct Backend {
    pub task_id: String,
    /// 1-based slot (replicated) or 0 (global).
    pub slot: u64,
    pub node_id: String,
    /// Its address on each network it is attached to.
    pub addresses: Vec<NetAddress>,
}

impl Backend {
    pub fn ip_on(&self, network_id: &str) -> Option<&str> {
        self.addresses
            .iter()
            .find(|a| a.network_id == network_id)
            .map(|a| a.ip.as_str())
    }
}

/// A task's attachment to a network: recorded on the task by the allocator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct TaskAttachment {
    pub network_id: String,
    /// `a.b.c.d/len` on the network's subnet.
    pub address: String,
    /// The network aliases the task answers to on this network (from the service spec).
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl TaskAttachment {
    /// The bare address, without the prefix length.
    pub fn ip(&self) -> &str {
        self.address.split('/').next().unwrap_or(&self.address)
    }
}
