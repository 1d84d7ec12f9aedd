//! Each node's [`NetworkMap`]: the data plane it must build, computed from the store and sent
//! with its assignment set (see `shoal_api::netmap`).
//!
//! ```text
//!  node.network_addresses ──► overlays of the node (ingress always; others while a task of
//!                             it runs there): VNI, subnet, its own address, the peers (other
//!                             nodes holding an address there, not down: VXLAN flood list)
//!  services ──► VIPs (Endpoint.VirtualIPs), published ports (Endpoint.Ports), aliases,
//!               backends = tasks running and meant to run (a task with a health check is
//!               `starting` until healthy, so only healthy ones take traffic)
//! ```
//!
//! A pure function of the store, the same on every manager.

use crate::allocator::addresses;
use shoal_api::engine;
use shoal_api::netmap::{
    Backend, EndpointMode, NetAddress, NetworkMap, OverlayPlan, PortPlan, Protocol, PublishMode,
    ServicePlan, DEFAULT_DATA_PATH_PORT, OVERLAY_MTU,
};
use shoal_api::{NodeState, Service, TaskState};
use shoal_store::StoreState;

/// The bare host of an address that may carry a port (`10.0.0.1:2377`) or a prefix.
fn host_of(addr: &str) -> &str {
    let a = addr.split('/').next().unwrap_or(addr);
    match a.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && !h.contains(':') => h,
        _ => a,
    }
}

fn bare_ip(addr: &str) -> String {
    addr.split('/').next().unwrap_or(addr).to_string()
}

/// The data plane of `node_id`.
pub fn build(s: &StoreState, node_id: &str) -> NetworkMap {
    let Some(node) = s.nodes.get(node_id) else {
        return NetworkMap::default();
    };
    let underlay = host_of(&node.status.addr).to_string();
    let data_path_port = s
        .cluster
        .as_ref()
        .map(|c| c.data_path_port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
        .unwrap_or(DEFAULT_DATA_PATH_PORT);
    let mut networks = Vec::new();
    for (net_id, addr) in &node.network_addresses {
        let Some(n) = s.networks.get(net_id) else {
            continue;
        };
        let Some(subnet) = n.subnets.first() else {
            continue;
        };
        let mut peers: Vec<String> = s
            .nodes
            .values()
            .filter(|o| o.id != node.id && o.status.state != NodeState::Down)
            .filter(|o| o.network_addresses.contains_key(net_id))
            .map(|o| host_of(&o.status.addr).to_string())
            .filter(|a| !a.is_empty() && *a != underlay)
            .collect();
        peers.sort();
        peers.dedup();
        networks.push(OverlayPlan {
            id: n.id.clone(),
            name: n.name().to_string(),
            vni: n.vni,
            subnet: subnet.subnet.clone(),
            node_address: addr.clone(),
            peers,
            ingress: n.is_ingress(),
            internal: n.spec.internal.unwrap_or(false),
            mtu: OVERLAY_MTU,
        });
    }
    let services = s
        .services
        .values()
        .map(|svc| service_plan(s, svc))
        .collect();
    NetworkMap {
        underlay,
        data_path_port,
        networks,
        services,
    }
}

fn service_plan(s: &StoreState, svc: &Service) -> ServicePlan {
    let endpoint = svc.endpoint.as_ref();
    let vips = endpoint
        .and_then(|e| e.virtual_ips.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter_map(|v| {
            Some(NetAddress {
                network_id: v.network_id.clone()?,
                ip: bare_ip(v.addr.as_deref()?),
            })
        })
        .collect();
    let ports = endpoint
        .and_then(|e| e.ports.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter_map(port_plan)
        .collect();
    let aliases = addresses::task_networks(s, Some(svc), svc.spec.task_template.as_ref())
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, a)| !a.is_empty())
        .collect();
    let mut backends: Vec<Backend> = s
        .tasks_of_service(&svc.id)
        .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
        .filter_map(|t| {
            Some(Backend {
                task_id: t.id.clone(),
                slot: t.slot,
                node_id: t.node_id.clone()?,
                addresses: t
                    .networks
                    .iter()
                    .map(|a| NetAddress {
                        network_id: a.network_id.clone(),
                        ip: a.ip().to_string(),
                    })
                    .collect(),
            })
        })
        .collect();
    backends.sort_by(|a, b| (a.slot, &a.task_id).cmp(&(b.slot, &b.task_id)));
    ServicePlan {
        id: svc.id.clone(),
        name: svc.name().to_string(),
        endpoint_mode: if addresses::is_vip(svc) {
            EndpointMode::Vip
        } else {
            EndpointMode::Dnsrr
        },
        vips,
        ports,
        aliases,
        backends,
    }
}

fn port_plan(p: &engine::EndpointPortConfig) -> Option<PortPlan> {
    use engine::EndpointPortConfigProtocolEnum as P;
    let protocol = match p.protocol {
        Some(P::UDP) => Protocol::Udp,
        Some(P::SCTP) => return None,
        _ => Protocol::Tcp,
    };
    Some(PortPlan {
        protocol,
        target: u16::try_from(p.target_port?).ok()?,
        published: u16::try_from(p.published_port?).ok().filter(|&n| n != 0)?,
        mode: if shoal_api::spec::port_is_ingress(p) {
            PublishMode::Ingress
        } else {
            PublishMode::Host
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::{node, replicated, state, task};
    use shoal_api::netmap::TaskAttachment;
    use shoal_api::{Meta, Network, NetworkSubnet};

    fn network(id: &str, subnet: &str, vni: u32, ingress: bool) -> Network {
        Network {
            id: id.into(),
            meta: Meta::new_now(),
            spec: Box::new(engine::NetworkCreateRequest {
                name: format!("{id}-name"),
                ingress: Some(ingress),
                ..Default::default()
            }),
            subnets: vec![NetworkSubnet {
                subnet: subnet.into(),
                gateway: String::new(),
                ip_range: String::new(),
            }],
            vni,
        }
    }

    #[test]
    fn the_map_has_the_nodes_overlays_peers_and_running_backends() {
        let mut svc = replicated("web", 2);
        svc.spec.task_template.as_mut().unwrap().networks =
            Some(vec![engine::NetworkAttachmentConfig {
                target: Some("webnet".into()),
                aliases: Some(vec!["www".into()]),
                ..Default::default()
            }]);
        svc.endpoint = Some(engine::ServiceEndpoint {
            spec: None,
            ports: Some(vec![engine::EndpointPortConfig {
                protocol: Some(engine::EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(80),
                published_port: Some(4000),
                publish_mode: Some(engine::EndpointPortConfigPublishModeEnum::INGRESS),
                name: None,
            }]),
            virtual_ips: Some(vec![engine::ServiceEndpointVirtualIps {
                network_id: Some("webnet".into()),
                addr: Some("10.0.1.2/24".into()),
            }]),
        });
        let attach = |ip: &str| {
            vec![TaskAttachment {
                network_id: "webnet".into(),
                address: format!("{ip}/24"),
                aliases: vec![],
            }]
        };
        let mut t1 = task(&svc, 1, Some("n2"), TaskState::Running);
        t1.networks = attach("10.0.1.5");
        let mut t2 = task(&svc, 2, Some("n1"), TaskState::Starting);
        t2.networks = attach("10.0.1.6");
        let mut n1 = node("n1");
        n1.status.addr = "192.168.9.1".into();
        n1.network_addresses
            .insert("webnet".into(), "10.0.1.3/24".into());
        let mut n2 = node("n2");
        n2.status.addr = "192.168.9.2:2377".into();
        n2.network_addresses
            .insert("webnet".into(), "10.0.1.4/24".into());
        let mut n3 = node("n3");
        n3.status.addr = "192.168.9.3".into();
        n3.status.state = NodeState::Down;
        n3.network_addresses
            .insert("webnet".into(), "10.0.1.7/24".into());
        let mut st = state(vec![n1, n2, n3], vec![svc], vec![t1.clone(), t2]);
        st.networks.insert(
            "webnet".into(),
            network("webnet", "10.0.1.0/24", 4097, false),
        );
        let m = build(&st, "n1");
        assert_eq!(m.underlay, "192.168.9.1");
        assert_eq!(m.data_path_port, 4789);
        assert_eq!(m.networks.len(), 1);
        let n = &m.networks[0];
        assert_eq!(
            (n.vni, n.subnet.as_str(), n.node_address.as_str()),
            (4097, "10.0.1.0/24", "10.0.1.3/24")
        );
        assert_eq!(n.peers, ["192.168.9.2"], "down nodes are not peers");
        let s = &m.services[0];
        assert_eq!(s.vip_on("webnet"), Some("10.0.1.2"));
        assert_eq!(s.aliases, [("webnet".to_string(), vec!["www".to_string()])]);
        assert_eq!(s.ports[0].published, 4000);
        assert_eq!(s.ports[0].mode, PublishMode::Ingress);
        // Only the running task takes traffic (the other is still starting).
        assert_eq!(s.backends.len(), 1);
        assert_eq!(s.backends[0].task_id, t1.id);
        assert_eq!(s.backends[0].ip_on("webnet"), Some("10.0.1.5"));
        assert_eq!(build(&st, "ghost"), NetworkMap::default());
    }
}
