//! Name resolution over a [`NetworkMap`], as seen from one task: pure functions, no I/O.
//!
//! The rules follow Docker's embedded DNS server. Names are case-insensitive and a trailing dot
//! is ignored. Only networks the asking task is attached to are searched, in the order the task
//! lists them; the first network on which a name has addresses answers:
//!
//! | name                                  | answer                                               |
//! |---------------------------------------|------------------------------------------------------|
//! | `<service>` or a network alias of it  | the VIP on that network (`vip`), or the running      |
//! |                                       | tasks' addresses there (`dnsrr`)                     |
//! | `tasks.<service>` / `tasks.<alias>`   | the running tasks' addresses on that network         |
//! | `<service>.<slot>[.<task id>]`        | that task's address (global services: the node ID   |
//! |                                       | stands in for the slot)                              |
//! | any of the above + `.<network name>`  | the same, looked up on that network only             |
//!
//! Everything else, including a known name with no address right now (a `dnsrr` service with no
//! running task), is [`Answer::NotOurs`]: the server forwards it to the node's resolvers, as
//! Docker does.

use std::net::Ipv4Addr;

use shoal_api::netmap::{Backend, EndpointMode, NetworkMap, ServicePlan};

/// What the embedded server answers for a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A name of ours, with its addresses (never empty), in a stable order: VIP, or backends
    /// in the map's order. The server rotates them between answers for round robin.
    Found(Vec<Ipv4Addr>),
    /// Not a name of the task's networks: forward it to the node's resolvers.
    NotOurs,
}

/// Resolves `name` (an A query) for a task attached to `task_networks` (network IDs).
pub fn resolve(map: &NetworkMap, task_networks: &[String], name: &str) -> Answer {
    let name = normalize(name);
    if name.is_empty() {
        return Answer::NotOurs;
    }
    for net in task_networks {
        let ips = lookup_on(map, net, &name);
        if !ips.is_empty() {
            return Answer::Found(ips);
        }
    }
    // `<name>.<network name>`: the same lookup restricted to that network.
    for net in task_networks {
        let Some(plan) = map.network(net) else {
            continue;
        };
        let suffix = format!(".{}", plan.name.to_ascii_lowercase());
        if let Some(inner) = name.strip_suffix(&suffix) {
            let ips = lookup_on(map, net, inner);
            if !ips.is_empty() {
                return Answer::Found(ips);
            }
        }
    }
    Answer::NotOurs
}

/// Reverse lookup (PTR) of an address on the task's networks: a task's address gives its task
/// name (`<service>.<slot>.<task id>`), a VIP its service name, each followed by
/// `.<network name>` as Docker answers. `None`: not ours, forward the query.
pub fn reverse(map: &NetworkMap, task_networks: &[String], ip: Ipv4Addr) -> Option<String> {
    let text = ip.to_string();
    for net in task_networks {
        let net_name = map.network(net).map(|n| n.name.as_str()).unwrap_or(net);
        for svc in map.services.iter().filter(|s| s.on_network(net)) {
            if svc.vip_on(net) == Some(text.as_str()) {
                return Some(format!("{}.{}", svc.name, net_name));
            }
            if let Some(b) = svc
                .backends
                .iter()
                .find(|b| b.ip_on(net) == Some(text.as_str()))
            {
                return Some(format!("{}.{}", task_name(svc, b), net_name));
            }
        }
    }
    None
}

/// A task's name as Docker names its container: `<service>.<slot>.<task id>`, with the node ID
/// in place of the slot for a global service.
pub fn task_name(service: &ServicePlan, backend: &Backend) -> String {
    format!(
        "{}.{}.{}",
        service.name,
        slot_label(backend),
        backend.task_id
    )
}

/// Lower case, without the trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn slot_label(backend: &Backend) -> String {
    if backend.slot == 0 {
        backend.node_id.clone()
    } else {
        backend.slot.to_string()
    }
}

/// Whether `name` (normalized) names `svc` on `net`: its name or one of its aliases there.
fn names_service(svc: &ServicePlan, net: &str, name: &str) -> bool {
    svc.name.eq_ignore_ascii_case(name)
        || svc
            .aliases
            .iter()
            .filter(|(n, _)| n == net)
            .flat_map(|(_, aliases)| aliases)
            .any(|a| a.eq_ignore_ascii_case(name))
}

/// The addresses `name` has on one network (empty: none).
fn lookup_on(map: &NetworkMap, net: &str, name: &str) -> Vec<Ipv4Addr> {
    let services = || map.services.iter().filter(|s| s.on_network(net));

    // The service name, or a network alias of it.
    if let Some(svc) = services().find(|s| names_service(s, net, name)) {
        let ips = service_addresses(svc, net);
        if !ips.is_empty() {
            return ips;
        }
    }
    // tasks.<service or alias>
    if let Some(inner) = name.strip_prefix("tasks.") {
        if let Some(svc) = services().find(|s| names_service(s, net, inner)) {
            let ips = backend_addresses(svc.backends.iter(), net);
            if !ips.is_empty() {
                return ips;
            }
        }
    }
    // <service>.<slot> and <service>.<slot>.<task id>
    if let Some((svc_name, rest)) = name.split_once('.') {
        let (slot, task) = match rest.split_once('.') {
            Some((slot, task)) => (slot, Some(task)),
            None => (rest, None),
        };
        if let Some(svc) = services().find(|s| s.name.eq_ignore_ascii_case(svc_name)) {
            let matching = svc.backends.iter().filter(|b| {
                slot_label(b).eq_ignore_ascii_case(slot)
                    && task.is_none_or(|t| b.task_id.eq_ignore_ascii_case(t))
            });
            let ips = backend_addresses(matching, net);
            if !ips.is_empty() {
                return ips;
            }
        }
    }
    Vec::new()
}

/// What the service name answers on `net`.
fn service_addresses(svc: &ServicePlan, net: &str) -> Vec<Ipv4Addr> {
    if svc.endpoint_mode == EndpointMode::Vip {
        if let Some(vip) = svc.vip_on(net).and_then(|v| v.parse().ok()) {
            return vec![vip];
        }
    }
    backend_addresses(svc.backends.iter(), net)
}

fn backend_addresses<'a>(backends: impl Iterator<Item = &'a Backend>, net: &str) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for ip in backends.filter_map(|b| b.ip_on(net)?.parse().ok()) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}
