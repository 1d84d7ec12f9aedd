//! Unit tests of the pure parts: names, rule rendering (checked with `nft -c` when we can).

use shoal_api::netmap::{
    Backend, EndpointMode, NetAddress, NetworkMap, OverlayPlan, PortPlan, Protocol, PublishMode,
    ServicePlan, TaskAttachment,
};

use super::rules::{guard_rules, GUARD_TABLE};
use super::*;

fn overlay(id: &str, vni: u32, node: &str, ingress: bool, internal: bool) -> OverlayPlan {
    OverlayPlan {
        id: id.into(),
        name: id.into(),
        vni,
        subnet: "10.0.0.0/24".into(),
        node_address: node.into(),
        peers: vec![],
        ingress,
        internal,
        mtu: 1450,
    }
}

fn backend(task: &str, node: &str, addrs: &[(&str, &str)]) -> Backend {
    Backend {
        task_id: task.into(),
        slot: 1,
        node_id: node.into(),
        addresses: addrs
            .iter()
            .map(|(n, ip)| NetAddress {
                network_id: n.to_string(),
                ip: ip.to_string(),
            })
            .collect(),
    }
}

fn service(
    id: &str,
    vips: &[(&str, &str)],
    ports: Vec<PortPlan>,
    backends: Vec<Backend>,
) -> ServicePlan {
    ServicePlan {
        id: id.into(),
        name: id.into(),
        endpoint_mode: EndpointMode::Vip,
        vips: vips
            .iter()
            .map(|(n, ip)| NetAddress {
                network_id: n.to_string(),
                ip: ip.to_string(),
            })
            .collect(),
        ports,
        aliases: vec![],
        backends,
    }
}

fn port(protocol: Protocol, published: u16, target: u16, mode: PublishMode) -> PortPlan {
    PortPlan {
        protocol,
        target,
        published,
        mode,
    }
}

fn sample() -> NetworkMap {
    NetworkMap {
        underlay: "192.168.1.1".into(),
        data_path_port: 4789,
        networks: vec![
            overlay("ing", 4096, "10.255.0.2/16", true, false),
            overlay("web", 4097, "10.0.1.2/24", false, false),
        ],
        services: vec![
            service(
                "app",
                &[("ing", "10.255.0.5"), ("web", "10.0.1.5")],
                vec![
                    port(Protocol::Tcp, 4000, 80, PublishMode::Ingress),
                    port(Protocol::Udp, 5353, 53, PublishMode::Ingress),
                ],
                vec![
                    backend("t1", "n1", &[("ing", "10.255.0.6"), ("web", "10.0.1.6")]),
                    backend("t2", "n2", &[("ing", "10.255.0.7"), ("web", "10.0.1.7")]),
                ],
            ),
            service(
                "empty",
                &[("web", "10.0.1.9")],
                vec![port(Protocol::Tcp, 4001, 80, PublishMode::Ingress)],
                vec![],
            ),
            service(
                "hosted",
                &[],
                vec![port(Protocol::Tcp, 8080, 80, PublishMode::Host)],
                vec![
                    backend("t3", "n1", &[("web", "10.0.1.10")]),
                    backend("t4", "n2", &[("web", "10.0.1.11")]),
                ],
            ),
            service(
                "one",
                &[("web", "10.0.1.20")],
                vec![],
                vec![backend("t5", "n2", &[("web", "10.0.1.21")])],
            ),
        ],
    }
}

/// Checks a ruleset with `nft -c` (never committed) when nft is installed and we are root.
fn nft_check(ruleset: &str) {
    nft_check_table(rules::TABLE, ruleset)
}

fn nft_check_table(table: &str, ruleset: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: nft -c skipped");
        return;
    }
    let child = Command::new("nft")
        .args(["-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("nft not installed: nft -c skipped");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(replace_table(table, ruleset).as_bytes())
        .expect("write ruleset");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft -c rejected:\n{ruleset}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn names_fit_and_are_stable() {
    let id = "abcdef0123456789abcdef";
    assert_eq!(task_prefix(id), "abcdef012345");
    assert_eq!(task_prefix("short"), "short");
    assert_eq!(task_netns_name(id), "shtask-abcdef012345");
    assert_eq!(
        task_netns_path(id),
        PathBuf::from("/run/netns/shtask-abcdef012345")
    );
    let v0 = host_veth_name(id, 0);
    let v1 = host_veth_name(id, 1);
    assert_eq!(v0.len(), 11);
    assert!(v0.starts_with("shv"));
    assert_ne!(v0, v1);
    // The full ID and its prefix name the same devices (removal works from either).
    assert_eq!(v0, host_veth_name("abcdef012345", 0));
    assert_ne!(v0, host_veth_name("abcdef012346", 0));
    assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    assert!(bridge_name(16_777_215).len() <= 15);
    assert_eq!(vxlan_name(4097), "shx4097");
}

#[test]
fn task_ids_must_name_a_file() {
    assert!(check_task_id("abcdef0123456789").is_ok());
    assert!(check_task_id("../../etc/x").is_err());
    assert!(check_task_id("a/b").is_err());
    assert!(check_task_id("").is_err());
}

#[test]
fn cidr_parsing() {
    assert_eq!(
        parse_cidr("x", "10.0.1.2/24").expect("ok"),
        ("10.0.1.2".parse().expect("ip"), 24)
    );
    assert_eq!(parse_cidr("x", "10.0.1.2").expect("ok").1, 32);
    assert!(parse_cidr("x", "10.0.1.2/33").is_err());
    assert!(parse_cidr("x", "nope/24").is_err());
}

#[test]
fn gateway_skips_internal_overlays() {
    let att = |n: &str| TaskAttachment {
        network_id: n.into(),
        address: "10.0.0.9/24".into(),
        aliases: vec![],
    };
    let internal = overlay("a", 1, "10.0.0.1/24", false, true);
    let open = overlay("b", 2, "10.0.2.1/24", false, false);
    assert_eq!(
        default_gateway(&[(internal.clone(), att("a")), (open.clone(), att("b"))]).expect("ok"),
        Some("10.0.2.1".parse().expect("ip"))
    );
    assert_eq!(
        default_gateway(&[(open, att("b")), (internal.clone(), att("a"))]).expect("ok"),
        Some("10.0.2.1".parse().expect("ip"))
    );
    assert_eq!(default_gateway(&[(internal, att("a"))]).expect("ok"), None);
}

#[test]
fn node_rules_route_mesh_host_ports_and_reject() {
    let text = node_rules(&sample(), "n1");
    let expected = "table ip shoal {
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tfib daddr type local jump mesh
\t}
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tfib daddr type local jump mesh
\t}
\tchain mesh {
\t\ttcp dport 4000 dnat to numgen inc mod 2 map { 0 : 10.255.0.6 . 80, 1 : 10.255.0.7 . 80 }
\t\tudp dport 5353 dnat to numgen inc mod 2 map { 0 : 10.255.0.6 . 53, 1 : 10.255.0.7 . 53 }
\t\ttcp dport 8080 dnat to 10.0.1.10:80
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tct status dnat oifname \"shb*\" masquerade
\t\tip saddr { 10.0.0.0/24 } oifname != \"shb*\" masquerade
\t}
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\ttcp dport 4001 reject with tcp reset
\t}
}
";
    assert_eq!(text, expected);
    nft_check(&text);

    // On the other node the host-mode port goes to its own task.
    let other = node_rules(&sample(), "n2");
    assert!(
        other.contains("tcp dport 8080 dnat to 10.0.1.11:80"),
        "{other}"
    );
    // A node without a task of the host-mode service leaves the port alone.
    let none = node_rules(&sample(), "n3");
    assert!(!none.contains("8080"), "{none}");
    nft_check(&none);
}

#[test]
fn node_rules_empty_without_ports_and_reject_only() {
    let mut map = sample();
    map.services.retain(|s| s.ports.is_empty());
    // Only the tasks' way out remains.
    let egress = node_rules(&map, "n1");
    assert!(!egress.contains("dnat"), "{egress}");
    assert!(
        egress.contains("ip saddr { 10.0.0.0/24 } oifname != \"shb*\" masquerade"),
        "{egress}"
    );
    nft_check(&egress);
    map.networks.clear();
    assert_eq!(node_rules(&map, "n1"), "");

    let mut map = sample();
    map.services.retain(|s| s.id == "empty");
    let text = node_rules(&map, "n1");
    assert!(!text.contains("dnat"), "{text}");
    assert!(
        text.contains("tcp dport 4001 reject with tcp reset"),
        "{text}"
    );
    nft_check(&text);

    // Without an ingress network, ingress ports cannot be routed: rejected.
    let mut map = sample();
    map.networks.retain(|n| !n.ingress);
    let text = node_rules(&map, "n1");
    assert!(
        text.contains("tcp dport 4000 reject with tcp reset"),
        "{text}"
    );
    assert!(text.contains("udp dport 5353 reject\n"), "{text}");
    nft_check(&text);
}

#[test]
fn task_rules_vips_on_attached_networks() {
    let map = sample();
    let att = TaskAttachment {
        network_id: "web".into(),
        address: "10.0.1.30/24".into(),
        aliases: vec![],
    };
    let text = task_rules(&map, std::slice::from_ref(&att));
    let expected = "table ip shoal {
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr 10.0.1.5 dnat to numgen inc mod 2 map { 0 : 10.0.1.6, 1 : 10.0.1.7 }
\t\tip daddr 10.0.1.20 dnat to 10.0.1.21
\t}
\tchain vip_reject {
\t\ttype filter hook output priority filter; policy accept;
\t\tip daddr 10.0.1.9 meta l4proto tcp reject with tcp reset
\t\tip daddr 10.0.1.9 reject
\t}
}
";
    assert_eq!(text, expected);
    nft_check(&text);

    // DNS round robin services have no VIP rule; no attached network, no rules.
    let mut map2 = map.clone();
    for s in &mut map2.services {
        s.endpoint_mode = EndpointMode::Dnsrr;
    }
    assert_eq!(task_rules(&map2, std::slice::from_ref(&att)), "");
    let other = TaskAttachment {
        network_id: "elsewhere".into(),
        ..att
    };
    assert_eq!(task_rules(&map, &[other]), "");
}

#[test]
fn replace_table_deletes_first() {
    let s = replace_table(rules::TABLE, "table ip shoal {\n}\n");
    assert!(
        s.starts_with("table ip shoal\ndelete table ip shoal\n"),
        "{s}"
    );
    nft_check("");
}

#[test]
fn guard_drops_new_overlay_connections_to_loopback() {
    let g = guard_rules();
    assert!(g.starts_with("table ip shoal_guard {"), "{g}");
    assert!(
        g.contains(
            "iifname \"shb*\" ip daddr 127.0.0.0/8 ct state != { established, related } drop"
        ),
        "{g}"
    );
    nft_check_table(GUARD_TABLE, &g);
}

#[test]
fn attachments_pair_with_the_maps_overlays() {
    let map = sample();
    let att = |n: &str| TaskAttachment {
        network_id: n.into(),
        address: "10.0.1.30/24".into(),
        aliases: vec![],
    };
    let paired = attachments_with_overlays(&map, &[att("web"), att("ing")]).expect("paired");
    assert_eq!(paired.len(), 2);
    assert_eq!(paired[0].0.vni, 4097);
    assert_eq!(paired[1].0.vni, 4096);
    assert_eq!(paired[1].1.network_id, "ing");
    assert!(attachments_with_overlays(&map, &[att("nope")]).is_err());
}

#[test]
fn mac_follows_the_address() {
    assert_eq!(
        mac_for("10.255.0.7".parse().expect("ip")),
        [0x02, 0x42, 10, 255, 0, 7]
    );
}

#[test]
fn kernel_is_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Kernel>();
}

#[test]
fn subnet_membership() {
    use super::conntrack::in_subnet;
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().expect("ip");
    assert!(in_subnet(ip("10.0.1.7"), ip("10.0.1.0"), 24));
    assert!(!in_subnet(ip("10.0.2.7"), ip("10.0.1.0"), 24));
    assert!(in_subnet(ip("10.255.3.4"), ip("10.255.0.0"), 16));
    assert!(in_subnet(ip("1.2.3.4"), ip("0.0.0.0"), 0));
    assert!(in_subnet(ip("1.2.3.4"), ip("1.2.3.4"), 32));
    assert!(!in_subnet(ip("1.2.3.5"), ip("1.2.3.4"), 32));
}

#[test]
fn new_outside_a_runtime_is_an_error() {
    assert!(Kernel::new().is_err());
}
