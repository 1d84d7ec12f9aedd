//! Addresses on overlay networks (swarmkit's IPAM for tasks, VIPs and load-balancer IPs).
//!
//! ```text
//!  network 10.0.1.0/24:   .0 network   .1 gateway (reserved)   .255 broadcast
//!                         service VIPs, task addresses, node addresses: the lowest free
//!                         address of the subnet (of its IPRange when one was requested)
//! ```
//!
//! An [`AddressBook`] is built from the store (every address a service VIP, a node or a task
//! that has not ended holds) and then hands out the lowest free address of a network; one
//! allocator pass uses one book, so the addresses it gives in one plan never collide. Addresses
//! of tasks that ended are free again.
//!
//! Which networks a task is attached to ([`task_networks`]): ingress first when its service
//! publishes a port (in either mode), then the networks of its spec in order. Which networks a
//! node holds an address on ([`node_networks`]): ingress always (every node answers on the
//! routing mesh), and every network a task that runs or will run there is attached to.

use super::endpoint::spec_ports;
use crate::ipam::Cidr;
use shoal_api::netmap::TaskAttachment;
use shoal_api::{engine, Network, Service, Task};
use shoal_store::StoreState;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// One network's pool: its subnets and the addresses taken.
#[derive(Clone, Debug, Default)]
struct Pool {
    /// (subnet, first, last) usable host range of each subnet.
    ranges: Vec<(Cidr, u32, u32)>,
    used: BTreeSet<u32>,
}

/// Every overlay address in use, per network ID.
#[derive(Clone, Debug, Default)]
pub struct AddressBook {
    pools: BTreeMap<String, Pool>,
}

fn bare(addr: &str) -> Option<u32> {
    addr.split('/')
        .next()
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .map(u32::from)
}

impl AddressBook {
    /// The book of `state`: every network's reserved addresses (network, broadcast, gateway)
    /// and what services, nodes and live tasks hold.
    pub fn of(state: &StoreState) -> Self {
        let mut b = AddressBook::default();
        for n in state.networks.values() {
            b.pools.insert(n.id.clone(), pool_of(n));
        }
        for s in state.services.values() {
            for v in s
                .endpoint
                .as_ref()
                .and_then(|e| e.virtual_ips.as_deref())
                .unwrap_or(&[])
            {
                if let (Some(net), Some(addr)) = (v.network_id.as_deref(), v.addr.as_deref()) {
                    b.hold(net, addr);
                }
            }
        }
        for n in state.nodes.values() {
            for (net, addr) in &n.network_addresses {
                b.hold(net, addr);
            }
        }
        for t in state
            .tasks
            .values()
            .filter(|t| !t.status.state.is_terminal())
        {
            for a in &t.networks {
                b.hold(&a.network_id, &a.address);
            }
        }
        b
    }

    /// Marks an address taken.
    pub fn hold(&mut self, network_id: &str, addr: &str) {
        if let (Some(p), Some(ip)) = (self.pools.get_mut(network_id), bare(addr)) {
            p.used.insert(ip);
        }
    }

    /// The lowest free address of the network, as `a.b.c.d/len`, now taken.
    pub fn take(&mut self, network_id: &str) -> Result<String, String> {
        let p = self
            .pools
            .get_mut(network_id)
            .ok_or_else(|| format!("network {network_id} not found"))?;
        for &(cidr, first, last) in &p.ranges {
            if let Some(ip) = (first..=last).find(|ip| !p.used.contains(ip)) {
                p.used.insert(ip);
                return Ok(format!("{}/{}", Ipv4Addr::from(ip), cidr.len));
            }
        }
        Err(format!(
            "could not allocate an address on network {network_id}: no address left in its subnets"
        ))
    }
}

fn pool_of(n: &Network) -> Pool {
    let mut p = Pool::default();
    for s in &n.subnets {
        let Some(cidr) = Cidr::parse(&s.subnet) else {
            continue;
        };
        let (net_first, net_last) = (cidr.addr, cidr.addr | !mask(cidr.len));
        let (mut first, mut last) = if cidr.len >= 31 {
            (net_first, net_last)
        } else {
            (net_first + 1, net_last - 1)
        };
        if let Some(range) = Cidr::parse(&s.ip_range).filter(|_| !s.ip_range.is_empty()) {
            first = first.max(range.addr);
            last = last.min(range.addr | !mask(range.len));
        }
        if let Some(gw) = bare(&s.gateway) {
            p.used.insert(gw);
        }
        if first <= last {
            p.ranges.push((cidr, first, last));
        }
    }
    p
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// The swarm's ingress network, if it has one.
pub fn ingress(state: &StoreState) -> Option<&Network> {
    state.networks.values().find(|n| n.is_ingress())
}

/// Finds a network by ID, full name, or ID prefix (how specs name them).
fn find_network<'a>(state: &'a StoreState, target: &str) -> Option<&'a Network> {
    state.networks.get(target).or_else(|| {
        state
            .networks
            .values()
            .find(|n| n.name() == target)
            .or_else(|| state.networks.values().find(|n| n.id.starts_with(target)))
    })
}

/// Whether a service publishes a port in ingress mode (it then has a VIP on ingress).
pub fn publishes_ingress(svc: &Service) -> bool {
    spec_ports(svc).iter().any(shoal_api::spec::port_is_ingress)
}

/// Whether a service publishes any port: its tasks then join ingress, the network of the
/// routing mesh (ingress mode) and of the node's forwarding to its own task (host mode).
pub fn publishes(svc: &Service) -> bool {
    !spec_ports(svc).is_empty()
}

/// Whether a service's name resolves to a virtual IP (the default) rather than its tasks.
pub fn is_vip(svc: &Service) -> bool {
    !matches!(
        svc.spec.endpoint_spec.as_ref().and_then(|e| e.mode),
        Some(engine::EndpointSpecModeEnum::DNSRR)
    )
}

/// The networks (ID, aliases) a task of `svc` with `spec` is attached to, in order: ingress
/// first when the service publishes in ingress mode, then the spec's networks. `Err` names a
/// network that does not exist.
pub fn task_networks(
    state: &StoreState,
    svc: Option<&Service>,
    spec: Option<&engine::TaskSpec>,
) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    if svc.is_some_and(publishes) {
        if let Some(n) = ingress(state) {
            out.push((n.id.clone(), Vec::new()));
        }
    }
    for a in spec.and_then(|s| s.networks.as_deref()).unwrap_or(&[]) {
        let target = a.target.as_deref().unwrap_or("");
        let n = find_network(state, target).ok_or_else(|| format!("network {target} not found"))?;
        if out.iter().any(|(id, _)| *id == n.id) {
            continue;
        }
        out.push((n.id.clone(), a.aliases.clone().unwrap_or_default()));
    }
    Ok(out)
}

/// The attachments of a task about to leave `new`, taking its addresses from `book`. Nothing
/// is taken when one of its networks is missing.
pub fn attach(
    state: &StoreState,
    book: &mut AddressBook,
    t: &Task,
) -> Result<Vec<TaskAttachment>, String> {
    let svc = state.services.get(&t.service_id);
    let nets = task_networks(state, svc, Some(&*t.spec))?;
    let mut out = Vec::with_capacity(nets.len());
    for (network_id, aliases) in nets {
        let address = book.take(&network_id)?;
        out.push(TaskAttachment {
            network_id,
            address,
            aliases,
        });
    }
    Ok(out)
}

/// The virtual IPs a service should have (VIP mode): one on each network its tasks attach to,
/// the ones it holds kept. Networks whose pool is exhausted are left out.
pub fn virtual_ips(
    state: &StoreState,
    book: &mut AddressBook,
    svc: &Service,
) -> Option<Vec<engine::ServiceEndpointVirtualIps>> {
    if !is_vip(svc) {
        return None;
    }
    let nets = task_networks(state, Some(svc), svc.spec.task_template.as_ref()).ok()?;
    let held = svc
        .endpoint
        .as_ref()
        .and_then(|e| e.virtual_ips.as_deref())
        .unwrap_or(&[]);
    let ingress_id = ingress(state).map(|n| n.id.as_str());
    let mut out = Vec::with_capacity(nets.len());
    for (network_id, _) in nets {
        // Host-mode ports put the tasks on ingress, but only ingress-mode ones are balanced
        // over a VIP there.
        if Some(network_id.as_str()) == ingress_id && !publishes_ingress(svc) {
            continue;
        }
        let kept = held
            .iter()
            .find(|v| v.network_id.as_deref() == Some(network_id.as_str()))
            .and_then(|v| v.addr.clone());
        let addr = match kept {
            Some(a) => a,
            None => match book.take(&network_id) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(service = %svc.id, error = %e, "no virtual IP");
                    continue;
                }
            },
        };
        out.push(engine::ServiceEndpointVirtualIps {
            network_id: Some(network_id),
            addr: Some(addr),
        });
    }
    (!out.is_empty()).then_some(out)
}

/// The networks a node holds an address on: ingress always, and those of the tasks that have
/// not ended there.
pub fn node_networks(state: &StoreState, node_id: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = ingress(state).map(|n| n.id.clone()).into_iter().collect();
    for t in state.tasks_on_node(node_id) {
        if t.status.state.is_terminal() {
            continue;
        }
        for a in &t.networks {
            if state.networks.contains_key(&a.network_id) {
                out.insert(a.network_id.clone());
            }
        }
    }
    out
}

/// The node addresses a node should hold: the ones it has on the networks of
/// [`node_networks`], and new ones from `book` for the others.
pub fn node_addresses(
    state: &StoreState,
    book: &mut AddressBook,
    node_id: &str,
) -> BTreeMap<String, String> {
    let current = state.nodes.get(node_id).map(|n| &n.network_addresses);
    let mut out = BTreeMap::new();
    for net in node_networks(state, node_id) {
        let addr = match current.and_then(|c| c.get(&net)) {
            Some(a) => a.clone(),
            None => match book.take(&net) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(node = %node_id, error = %e, "no node address");
                    continue;
                }
            },
        };
        out.insert(net, addr);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::{node, replicated, state, task};
    use shoal_api::{Meta, NetworkSubnet, TaskState};

    fn network(id: &str, subnet: &str, ingress: bool) -> Network {
        let c = Cidr::parse(subnet).unwrap();
        Network {
            id: id.into(),
            meta: Meta::new_now(),
            spec: Box::new(engine::NetworkCreateRequest {
                name: id.into(),
                ingress: Some(ingress),
                ..Default::default()
            }),
            subnets: vec![NetworkSubnet {
                subnet: subnet.into(),
                gateway: c.first_host().to_string(),
                ip_range: String::new(),
            }],
            vni: 4096,
        }
    }

    fn with_networks(mut st: StoreState, nets: Vec<Network>) -> StoreState {
        for n in nets {
            st.networks.insert(n.id.clone(), n);
        }
        st
    }

    fn on(mut s: Service, nets: &[&str], publish: bool) -> Service {
        s.spec.task_template.as_mut().unwrap().networks = Some(
            nets.iter()
                .map(|n| engine::NetworkAttachmentConfig {
                    target: Some(n.to_string()),
                    aliases: Some(vec![format!("{n}-alias")]),
                    ..Default::default()
                })
                .collect(),
        );
        if publish {
            s.spec.endpoint_spec = Some(engine::EndpointSpec {
                mode: None,
                ports: Some(vec![engine::EndpointPortConfig {
                    target_port: Some(80),
                    published_port: Some(4000),
                    ..Default::default()
                }]),
            });
        }
        s
    }

    #[test]
    fn addresses_skip_the_gateway_and_never_repeat() {
        let st = with_networks(
            state(vec![], vec![], vec![]),
            vec![network("net", "10.0.1.0/30", false)],
        );
        let mut b = AddressBook::of(&st);
        // .0 network, .1 gateway, .3 broadcast: one address left.
        assert_eq!(b.take("net").unwrap(), "10.0.1.2/30");
        let err = b.take("net").unwrap_err();
        assert!(err.contains("no address left"), "{err}");
        assert!(b.take("other").unwrap_err().contains("not found"));
    }

    #[test]
    fn tasks_attach_to_ingress_first_then_their_networks() {
        let svc = on(replicated("web", 1), &["webnet"], true);
        let st = with_networks(
            state(vec![node("n1")], vec![svc.clone()], vec![]),
            vec![
                network("ingress", "10.0.0.0/24", true),
                network("webnet", "10.0.1.0/24", false),
            ],
        );
        let mut b = AddressBook::of(&st);
        let t = task(&svc, 1, None, TaskState::New);
        let a = attach(&st, &mut b, &t).unwrap();
        assert_eq!(
            a.iter()
                .map(|a| (a.network_id.as_str(), a.address.as_str()))
                .collect::<Vec<_>>(),
            [("ingress", "10.0.0.2/24"), ("webnet", "10.0.1.2/24")]
        );
        assert_eq!(a[1].aliases, ["webnet-alias"]);
        // The VIPs come from the same book: the next addresses.
        let v = virtual_ips(&st, &mut b, &svc).unwrap();
        assert_eq!(v[0].addr.as_deref(), Some("10.0.0.3/24"));
        assert_eq!(v[1].addr.as_deref(), Some("10.0.1.3/24"));
    }

    #[test]
    fn a_missing_network_is_an_error_and_takes_nothing() {
        let svc = on(replicated("web", 1), &["ghost"], false);
        let st = state(vec![], vec![svc.clone()], vec![]);
        let mut b = AddressBook::of(&st);
        let err = attach(&st, &mut b, &task(&svc, 1, None, TaskState::New)).unwrap_err();
        assert_eq!(err, "network ghost not found");
    }

    #[test]
    fn ended_tasks_free_their_addresses_and_held_ones_stay() {
        let svc = on(replicated("web", 1), &["webnet"], false);
        let mut live = task(&svc, 1, None, TaskState::Running);
        live.networks = vec![TaskAttachment {
            network_id: "webnet".into(),
            address: "10.0.1.2/24".into(),
            aliases: vec![],
        }];
        let mut dead = task(&svc, 2, None, TaskState::Failed);
        dead.networks = vec![TaskAttachment {
            network_id: "webnet".into(),
            address: "10.0.1.3/24".into(),
            aliases: vec![],
        }];
        let st = with_networks(
            state(vec![], vec![svc], vec![live, dead]),
            vec![network("webnet", "10.0.1.0/24", false)],
        );
        let mut b = AddressBook::of(&st);
        assert_eq!(b.take("webnet").unwrap(), "10.0.1.3/24");
    }

    #[test]
    fn nodes_hold_ingress_and_the_networks_of_their_tasks() {
        let svc = on(replicated("web", 1), &["webnet"], false);
        let mut t = task(&svc, 1, Some("n1"), TaskState::Running);
        t.networks = vec![TaskAttachment {
            network_id: "webnet".into(),
            address: "10.0.1.2/24".into(),
            aliases: vec![],
        }];
        let mut n2 = node("n2");
        n2.network_addresses
            .insert("ingress".into(), "10.0.0.9/24".into());
        let st = with_networks(
            state(vec![node("n1"), n2], vec![svc], vec![t]),
            vec![
                network("ingress", "10.0.0.0/24", true),
                network("webnet", "10.0.1.0/24", false),
            ],
        );
        let mut b = AddressBook::of(&st);
        let n1 = node_addresses(&st, &mut b, "n1");
        assert_eq!(
            n1.into_iter().collect::<Vec<_>>(),
            [
                ("ingress".to_string(), "10.0.0.2/24".to_string()),
                ("webnet".to_string(), "10.0.1.3/24".to_string())
            ]
        );
        // Kept as held; a network with no task there is not held.
        let n2 = node_addresses(&st, &mut b, "n2");
        assert_eq!(
            n2.into_iter().collect::<Vec<_>>(),
            [("ingress".to_string(), "10.0.0.9/24".to_string())]
        );
    }
}
