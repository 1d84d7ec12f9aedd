//! nftables rule rendering: pure functions from the [`NetworkMap`] to the text of the `ip shoal`
//! table, one for the node's namespace (the routing mesh) and one per task namespace (service
//! virtual IPs). Nothing here touches the kernel, so it is tested without root; the tests also
//! check the text with `nft -c` when nft is installed and we are root.
//!
//! ```text
//!  node namespace (table ip shoal)
//!    prerouting  nat  dstnat   fib daddr type local ─► jump mesh
//!    output      nat  -100     fib daddr type local ─► jump mesh
//!    mesh                      <proto> dport P ─► dnat to numgen inc mod N map { i : task_i . target }
//!    postrouting nat  srcnat   ct status dnat, out on shb* ─► masquerade (replies come back here)
//!    input       filter        <proto> dport P of a service without tasks ─► reject
//!
//!  node namespace (table ip shoal_guard, set up with the first overlay)
//!    input       filter -1     in on shb*, to 127.0.0.0/8, not a reply ─► drop
//!
//!  task namespace (table ip shoal)
//!    output      nat  -100     ip daddr VIP ─► dnat to numgen inc mod N map { i : task_i }
//!    vip_reject  filter        ip daddr VIP of a service without tasks ─► reject
//! ```

use std::fmt::Write as _;

use shoal_api::netmap::{EndpointMode, NetworkMap, Protocol, PublishMode, TaskAttachment};

/// The name of every table Shoal writes (family `ip`).
pub const TABLE: &str = "shoal";

/// The table that guards the node's loopback addresses (family `ip`).
pub const GUARD_TABLE: &str = "shoal_guard";

/// The prefix of the overlay bridges, matched by the masquerade rule.
const BRIDGE_MATCH: &str = "shb*";

/// `dnat to ...` over `targets` (bare addresses), with a port when given: a plain DNAT for one
/// target, round robin (`numgen inc`) over several. `targets` must not be empty.
fn dnat_to(targets: &[&str], port: Option<u16>) -> String {
    let one = |ip: &str| match port {
        Some(p) => (format!("{ip}:{p}"), format!("{ip} . {p}")),
        None => (ip.to_string(), ip.to_string()),
    };
    if targets.len() == 1 {
        return format!("dnat to {}", one(targets[0]).0);
    }
    let entries: Vec<String> = targets
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("{i} : {}", one(ip).1))
        .collect();
    format!(
        "dnat to numgen inc mod {} map {{ {} }}",
        targets.len(),
        entries.join(", ")
    )
}

/// The reject statement for a protocol: a TCP reset, an ICMP port unreachable for UDP.
fn reject_for(proto: Protocol) -> &'static str {
    match proto {
        Protocol::Tcp => "reject with tcp reset",
        Protocol::Udp => "reject",
    }
}

/// The `ip shoal` table of a node's own namespace: the routing mesh.
///
/// - Ports published in ingress mode answer on every local address of the node and are balanced
///   round robin over every backend of the service (their addresses on the ingress network),
///   wherever they run; a service without backends (or without an ingress address for any)
///   rejects the port instead of leaving clients hanging.
/// - Ports published in host mode go to this node's own backends of the service (`node_id`)
///   only, on the first of their addresses that is on a network this node has; a node without
///   such a task leaves the port alone.
/// - Connections DNATed here and leaving on an overlay bridge are masqueraded, so the replies
///   of a task on another node come back through this node.
///
/// Returns an empty string when there is nothing to program (the caller then removes the table).
pub fn node_rules(map: &NetworkMap, node_id: &str) -> String {
    let mut mesh = Vec::new();
    let mut reject = Vec::new();
    for svc in &map.services {
        for port in &svc.ports {
            if port.published == 0 {
                continue;
            }
            let proto = port.protocol.as_str();
            let targets = map.port_targets(svc, port.mode, node_id);
            if !targets.is_empty() {
                mesh.push(format!(
                    "{proto} dport {} {}",
                    port.published,
                    dnat_to(&targets, Some(port.target))
                ));
            } else if port.mode == PublishMode::Ingress {
                reject.push(format!(
                    "{proto} dport {} {}",
                    port.published,
                    reject_for(port.protocol)
                ));
            }
        }
    }
    // Tasks reach beyond their overlays through the node: what leaves it from an overlay
    // subnet on any other link is masqueraded (Docker's docker_gwbridge does the same).
    let mut egress: Vec<&str> = map
        .networks
        .iter()
        .filter(|n| !n.internal)
        .map(|n| n.subnet.as_str())
        .collect();
    egress.sort_unstable();
    egress.dedup();
    if mesh.is_empty() && reject.is_empty() && egress.is_empty() {
        return String::new();
    }
    let mut out = format!("table ip {TABLE} {{\n");
    if !mesh.is_empty() {
        out.push_str(
            "\tchain prerouting {\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\tfib daddr type local jump mesh\n\
             \t}\n\
             \tchain output {\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\tfib daddr type local jump mesh\n\
             \t}\n\
             \tchain mesh {\n",
        );
        for r in &mesh {
            let _ = writeln!(out, "\t\t{r}");
        }
        out.push_str("\t}\n");
    }
    if !mesh.is_empty() || !egress.is_empty() {
        out.push_str(
            "\tchain postrouting {\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n",
        );
        if !mesh.is_empty() {
            let _ = writeln!(
                out,
                "\t\tct status dnat oifname \"{BRIDGE_MATCH}\" masquerade"
            );
        }
        if !egress.is_empty() {
            let _ = writeln!(
                out,
                "\t\tip saddr {{ {} }} oifname != \"{BRIDGE_MATCH}\" masquerade",
                egress.join(", ")
            );
        }
        out.push_str("\t}\n");
    }
    if !reject.is_empty() {
        out.push_str(
            "\tchain input {\n\
             \t\ttype filter hook input priority filter; policy accept;\n",
        );
        for r in &reject {
            let _ = writeln!(out, "\t\t{r}");
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// The `ip shoal_guard` table of a node's namespace. The overlay bridges have `route_localnet`
/// on, so that `localhost:<published>` on the node goes through the routing mesh (the DNATed
/// packet leaves with its loopback source until the masquerade); this drops what that would
/// otherwise let in: new connections from the overlays to the node's loopback addresses.
pub fn guard_rules() -> String {
    format!(
        "table ip {GUARD_TABLE} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter - 1; policy accept;\n\
         \t\tiifname \"{BRIDGE_MATCH}\" ip daddr 127.0.0.0/8 ct state != {{ established, related }} drop\n\
         \t}}\n\
         }}\n"
    )
}

/// The `ip shoal` table of a task's namespace: the virtual IPs of the services (VIP mode) on the
/// networks the task is attached to, each DNATed round robin to the service's backends'
/// addresses on that network (ports unchanged); a VIP without backends is rejected.
///
/// Returns an empty string when there is nothing to program.
pub fn task_rules(map: &NetworkMap, attachments: &[TaskAttachment]) -> String {
    let mut dnat = Vec::new();
    let mut reject = Vec::new();
    for svc in &map.services {
        if svc.endpoint_mode != EndpointMode::Vip {
            continue;
        }
        for att in attachments {
            let Some(vip) = svc.vip_on(&att.network_id) else {
                continue;
            };
            let targets: Vec<&str> = svc
                .backends
                .iter()
                .filter_map(|b| b.ip_on(&att.network_id))
                .collect();
            if targets.is_empty() {
                reject.push(format!(
                    "ip daddr {vip} meta l4proto tcp reject with tcp reset"
                ));
                reject.push(format!("ip daddr {vip} reject"));
            } else {
                dnat.push(format!("ip daddr {vip} {}", dnat_to(&targets, None)));
            }
        }
    }
    if dnat.is_empty() && reject.is_empty() {
        return String::new();
    }
    let mut out = format!("table ip {TABLE} {{\n");
    if !dnat.is_empty() {
        out.push_str(
            "\tchain output {\n\
             \t\ttype nat hook output priority -100; policy accept;\n",
        );
        for r in &dnat {
            let _ = writeln!(out, "\t\t{r}");
        }
        out.push_str("\t}\n");
    }
    if !reject.is_empty() {
        out.push_str(
            "\tchain vip_reject {\n\
             \t\ttype filter hook output priority filter; policy accept;\n",
        );
        for r in &reject {
            let _ = writeln!(out, "\t\t{r}");
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}
