//! Tests of the resolution rules, the task files, and the server over real sockets (loopback,
//! plus one root-only test inside a scratch network namespace).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use shoal_api::netmap::{
    Backend, EndpointMode, NetAddress, NetworkMap, OverlayPlan, ServicePlan, TaskAttachment,
};

use super::*;

const NET_A: &str = "neta";
const NET_B: &str = "netb";
const NET_C: &str = "netc";

fn overlay(id: &str, name: &str, third: u8) -> OverlayPlan {
    OverlayPlan {
        id: id.into(),
        name: name.into(),
        vni: 4096 + u32::from(third),
        subnet: format!("10.0.{third}.0/24"),
        node_address: format!("10.0.{third}.254/24"),
        peers: Vec::new(),
        ingress: false,
        internal: false,
        mtu: 1450,
    }
}

fn addr(net: &str, ip: &str) -> NetAddress {
    NetAddress {
        network_id: net.into(),
        ip: ip.into(),
    }
}

fn backend(task: &str, slot: u64, node: &str, addresses: Vec<NetAddress>) -> Backend {
    Backend {
        task_id: task.into(),
        slot,
        node_id: node.into(),
        addresses,
    }
}

fn service(name: &str, mode: EndpointMode) -> ServicePlan {
    ServicePlan {
        id: format!("id-{name}"),
        name: name.into(),
        endpoint_mode: mode,
        vips: Vec::new(),
        ports: Vec::new(),
        aliases: Vec::new(),
        backends: Vec::new(),
    }
}

/// web (vip) on A and B; db (dnsrr) on B; secret on C only; agent (global) on A; idle (dnsrr,
/// no task) on A.
fn map() -> NetworkMap {
    let mut web = service("web", EndpointMode::Vip);
    web.vips = vec![addr(NET_A, "10.0.1.2"), addr(NET_B, "10.0.2.2")];
    web.aliases = vec![(NET_A.into(), vec!["frontend".into(), "www.Example".into()])];
    web.backends = vec![
        backend(
            "t1",
            1,
            "n1",
            vec![addr(NET_A, "10.0.1.5"), addr(NET_B, "10.0.2.5")],
        ),
        backend(
            "t2",
            2,
            "n2",
            vec![addr(NET_A, "10.0.1.6"), addr(NET_B, "10.0.2.6")],
        ),
    ];
    let mut db = service("db", EndpointMode::Dnsrr);
    db.aliases = vec![(NET_B.into(), vec!["database".into()])];
    db.backends = vec![
        backend("t3", 1, "n1", vec![addr(NET_B, "10.0.2.7")]),
        backend("t4", 2, "n2", vec![addr(NET_B, "10.0.2.8")]),
    ];
    let mut secret = service("secret", EndpointMode::Vip);
    secret.vips = vec![addr(NET_C, "10.0.3.2")];
    secret.backends = vec![backend("t6", 1, "n1", vec![addr(NET_C, "10.0.3.5")])];
    let mut agent = service("agent", EndpointMode::Vip);
    agent.vips = vec![addr(NET_A, "10.0.1.3")];
    agent.backends = vec![backend("t5", 0, "node1", vec![addr(NET_A, "10.0.1.9")])];
    let mut idle = service("idle", EndpointMode::Dnsrr);
    idle.aliases = vec![(NET_A.into(), Vec::new())];
    NetworkMap {
        underlay: "192.168.1.10".into(),
        data_path_port: 4789,
        networks: vec![
            overlay(NET_A, "appnet", 1),
            overlay(NET_B, "backnet", 2),
            overlay(NET_C, "othernet", 3),
        ],
        services: vec![web, db, secret, agent, idle],
    }
}

fn nets(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn found(ips: &[&str]) -> Answer {
    Answer::Found(ips.iter().map(|s| s.parse().unwrap()).collect())
}

#[test]
fn service_name_gives_the_vip_of_the_first_shared_network() {
    let m = map();
    assert_eq!(resolve(&m, &nets(&[NET_A]), "web"), found(&["10.0.1.2"]));
    assert_eq!(resolve(&m, &nets(&[NET_B]), "web"), found(&["10.0.2.2"]));
    assert_eq!(
        resolve(&m, &nets(&[NET_B, NET_A]), "web"),
        found(&["10.0.2.2"])
    );
    // A service whose tasks are all gone still has its VIP.
    let mut m2 = m.clone();
    m2.services[0].backends.clear();
    assert_eq!(resolve(&m2, &nets(&[NET_A]), "web"), found(&["10.0.1.2"]));
}

#[test]
fn names_are_case_insensitive_and_ignore_a_trailing_dot() {
    let m = map();
    for name in ["WEB", "Web.", "web.", "TASKS.Web.", "WeB.2"] {
        assert!(
            matches!(resolve(&m, &nets(&[NET_A]), name), Answer::Found(_)),
            "{name}"
        );
    }
    assert_eq!(
        resolve(&m, &nets(&[NET_A]), "WWW.EXAMPLE."),
        found(&["10.0.1.2"])
    );
}

#[test]
fn dnsrr_service_gives_its_running_tasks() {
    let m = map();
    assert_eq!(
        resolve(&m, &nets(&[NET_B]), "db"),
        found(&["10.0.2.7", "10.0.2.8"])
    );
    // Known but with no running task: forwarded, as Docker does.
    assert_eq!(resolve(&m, &nets(&[NET_A]), "idle"), Answer::NotOurs);
    assert_eq!(resolve(&m, &nets(&[NET_A]), "tasks.idle"), Answer::NotOurs);
}

#[test]
fn tasks_name_gives_every_task_on_the_shared_network() {
    let m = map();
    assert_eq!(
        resolve(&m, &nets(&[NET_A]), "tasks.web"),
        found(&["10.0.1.5", "10.0.1.6"])
    );
    assert_eq!(
        resolve(&m, &nets(&[NET_B, NET_A]), "tasks.web"),
        found(&["10.0.2.5", "10.0.2.6"])
    );
    assert_eq!(
        resolve(&m, &nets(&[NET_B]), "tasks.db"),
        found(&["10.0.2.7", "10.0.2.8"])
    );
    assert_eq!(resolve(&m, &nets(&[NET_A]), "tasks.nope"), Answer::NotOurs);
}

#[test]
fn aliases_resolve_as_the_service_on_their_network_only() {
    let m = map();
    assert_eq!(
        resolve(&m, &nets(&[NET_A]), "frontend"),
        found(&["10.0.1.2"])
    );
    assert_eq!(
        resolve(&m, &nets(&[NET_A]), "tasks.frontend"),
        found(&["10.0.1.5", "10.0.1.6"])
    );
    // The alias is declared on A only.
    assert_eq!(resolve(&m, &nets(&[NET_B]), "frontend"), Answer::NotOurs);
    assert_eq!(
        resolve(&m, &nets(&[NET_B]), "database"),
        found(&["10.0.2.7", "10.0.2.8"])
    );
}

#[test]
fn slot_names_give_that_task() {
    let m = map();
    let a = nets(&[NET_A]);
    assert_eq!(resolve(&m, &a, "web.2"), found(&["10.0.1.6"]));
    assert_eq!(resolve(&m, &a, "web.1.t1"), found(&["10.0.1.5"]));
    assert_eq!(resolve(&m, &a, "web.2.t1"), Answer::NotOurs);
    assert_eq!(resolve(&m, &a, "web.3"), Answer::NotOurs);
    // A global service's tasks are named after their node.
    assert_eq!(resolve(&m, &a, "agent.node1"), found(&["10.0.1.9"]));
    assert_eq!(resolve(&m, &a, "agent.node1.t5"), found(&["10.0.1.9"]));
    assert_eq!(resolve(&m, &a, "agent.0"), Answer::NotOurs);
}

#[test]
fn services_on_other_networks_are_invisible() {
    let m = map();
    let ab = nets(&[NET_A, NET_B]);
    for name in ["secret", "tasks.secret", "secret.1", "secret.othernet"] {
        assert_eq!(resolve(&m, &ab, name), Answer::NotOurs, "{name}");
    }
    assert_eq!(resolve(&m, &nets(&[NET_A]), "db"), Answer::NotOurs);
    assert_eq!(resolve(&m, &nets(&[NET_C]), "secret"), found(&["10.0.3.2"]));
    // No network, nothing of ours.
    assert_eq!(resolve(&m, &[], "web"), Answer::NotOurs);
}

#[test]
fn network_name_suffix_restricts_the_lookup() {
    let m = map();
    let ab = nets(&[NET_A, NET_B]);
    assert_eq!(resolve(&m, &ab, "web.backnet"), found(&["10.0.2.2"]));
    assert_eq!(
        resolve(&m, &ab, "tasks.web.backnet"),
        found(&["10.0.2.5", "10.0.2.6"])
    );
    assert_eq!(resolve(&m, &ab, "web.1.appnet"), found(&["10.0.1.5"]));
    assert_eq!(resolve(&m, &nets(&[NET_A]), "web.backnet"), Answer::NotOurs);
}

#[test]
fn other_names_are_not_ours() {
    let m = map();
    let a = nets(&[NET_A]);
    for name in ["example.com", "", ".", "tasks.", "web.example.com"] {
        assert_eq!(resolve(&m, &a, name), Answer::NotOurs, "{name:?}");
    }
}

#[test]
fn reverse_names_tasks_and_vips() {
    let m = map();
    let ab = nets(&[NET_A, NET_B]);
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(
        reverse(&m, &ab, ip("10.0.1.6")).as_deref(),
        Some("web.2.t2.appnet")
    );
    assert_eq!(
        reverse(&m, &ab, ip("10.0.2.7")).as_deref(),
        Some("db.1.t3.backnet")
    );
    assert_eq!(
        reverse(&m, &ab, ip("10.0.1.9")).as_deref(),
        Some("agent.node1.t5.appnet")
    );
    assert_eq!(
        reverse(&m, &ab, ip("10.0.1.2")).as_deref(),
        Some("web.appnet")
    );
    assert_eq!(reverse(&m, &ab, ip("10.0.3.5")), None);
    assert_eq!(reverse(&m, &ab, ip("8.8.8.8")), None);
}

#[test]
fn resolv_conf_points_at_the_embedded_server() {
    assert_eq!(resolv_conf(&[]), "nameserver 127.0.0.11\noptions ndots:0\n");
    assert_eq!(
        resolv_conf(&["corp.example".into(), "example".into()]),
        "search corp.example example\nnameserver 127.0.0.11\noptions ndots:0\n"
    );
}

#[test]
fn hosts_file_lists_loopback_and_the_task_addresses() {
    let hosts = hosts_file(
        "0123456789ab",
        &[
            TaskAttachment {
                network_id: NET_A.into(),
                address: "10.0.1.5/24".into(),
                aliases: Vec::new(),
            },
            TaskAttachment {
                network_id: NET_B.into(),
                address: "10.0.2.5/24".into(),
                aliases: Vec::new(),
            },
        ],
    );
    let lines: Vec<&str> = hosts.lines().collect();
    assert_eq!(lines[0], "127.0.0.1\tlocalhost");
    assert_eq!(lines[1], "::1\tlocalhost ip6-localhost ip6-loopback");
    assert_eq!(lines[lines.len() - 2], "10.0.1.5\t0123456789ab");
    assert_eq!(lines[lines.len() - 1], "10.0.2.5\t0123456789ab");
}

#[test]
fn node_resolv_conf_parsing_skips_loopback_servers() {
    let conf = ResolvConf::parse(
        "# comment\n; also\nnameserver 127.0.0.53\nnameserver 10.1.2.3\n\
         nameserver fe80::1%eth0\nnameserver ::1\nnameserver bogus\n\
         domain old.example\nsearch a.example b.example\noptions edns0\n",
    );
    assert_eq!(conf.search, vec!["a.example", "b.example"]);
    assert_eq!(conf.nameservers.len(), 4);
    let ups: Vec<String> = conf.upstreams().iter().map(|a| a.to_string()).collect();
    assert_eq!(ups, vec!["10.1.2.3:53", "[fe80::1]:53"]);
}

#[test]
fn the_server_needs_a_runtime() {
    assert!(matches!(
        DnsServer::new(DnsConfig::default()),
        Err(DnsError::NoRuntime)
    ));
}

// ---- the server over sockets ----

/// A test never waits longer than this for a datagram (a guard against hanging, not a timing
/// assertion).
const WAIT: Duration = Duration::from_secs(10);

fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg.to_vec().unwrap()
}

async fn ask_udp(server: SocketAddr, id: u16, name: &str, qtype: RecordType) -> Message {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&query(id, name, qtype), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("no answer from the DNS server")
        .unwrap();
    let msg = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(msg.metadata.id, id);
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    msg
}

async fn ask_tcp(server: SocketAddr, id: u16, name: &str, qtype: RecordType) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
        let q = query(id, name, qtype);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        stream.write_all(&framed).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    };
    let msg = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("no answer from the DNS server over TCP");
    assert_eq!(msg.metadata.id, id);
    msg
}

fn a_answers(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

/// A server serving one task on networks A then B, on loopback sockets: (server, UDP, TCP).
fn serve(config: DnsConfig) -> (DnsServer, SocketAddr, SocketAddr) {
    let server = DnsServer::new(config).unwrap();
    server.set_map(Arc::new(map()));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (u, t) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    server
        .add_task("client", nets(&[NET_A, NET_B]), udp, tcp)
        .unwrap();
    (server, u, t)
}

/// A stand-in upstream resolver on loopback (UDP and TCP on one port) answering every A query
/// with 192.0.2.1 (and 192.0.2.2 over TCP), echoing the query.
async fn fake_upstream() -> SocketAddr {
    let (udp, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
            break (udp, tcp);
        }
    };
    let at = udp.local_addr().unwrap();
    fn reply(q: &[u8], ip: Ipv4Addr) -> Vec<u8> {
        let q = Message::from_vec(q).unwrap();
        let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        r.metadata.recursion_available = true;
        let name = q.queries[0].name().clone();
        r.add_query(q.queries[0].clone());
        r.add_answer(Record::from_rdata(name, 30, RData::A(A(ip))));
        r.to_vec().unwrap()
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = udp
                .send_to(&reply(&buf[..n], Ipv4Addr::new(192, 0, 2, 1)), from)
                .await;
        }
    });
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let Ok(len) = s.read_u16().await else { return };
                let mut buf = vec![0u8; usize::from(len)];
                if s.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let r = reply(&buf, Ipv4Addr::new(192, 0, 2, 2));
                let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&r);
                let _ = s.write_all(&framed).await;
            });
        }
    });
    at
}

#[tokio::test]
async fn answers_service_names_with_ttl_600() {
    let (_server, udp, _) = serve(DnsConfig::default());
    let msg = ask_udp(udp, 7, "web.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.metadata.authoritative);
    assert_eq!(a_answers(&msg), vec![Ipv4Addr::new(10, 0, 1, 2)]);
    assert_eq!(msg.answers[0].ttl, 600);
    assert_eq!(msg.queries[0].name().to_ascii(), "web.");

    // The client's spelling of the name is kept.
    let msg = ask_udp(udp, 8, "DB.", RecordType::A).await;
    assert_eq!(msg.answers[0].name.to_ascii(), "DB.");
    let mut ips = a_answers(&msg);
    ips.sort();
    assert_eq!(
        ips,
        vec![Ipv4Addr::new(10, 0, 2, 7), Ipv4Addr::new(10, 0, 2, 8)]
    );
}

#[tokio::test]
async fn several_addresses_are_rotated_between_answers() {
    let (_server, udp, _) = serve(DnsConfig::default());
    let first = a_answers(&ask_udp(udp, 1, "tasks.web.", RecordType::A).await);
    let second = a_answers(&ask_udp(udp, 2, "tasks.web.", RecordType::A).await);
    assert_eq!(first.len(), 2);
    let (mut a, mut b) = (first.clone(), second.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_ne!(first[0], second[0]);
}

#[tokio::test]
async fn aaaa_and_other_types_of_our_names_are_empty() {
    let (_server, udp, _) = serve(DnsConfig::default());
    for qtype in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let msg = ask_udp(udp, 3, "web.", qtype).await;
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError, "{qtype}");
        assert!(msg.answers.is_empty(), "{qtype}");
    }
}

#[tokio::test]
async fn ptr_names_our_addresses() {
    let (_server, udp, _) = serve(DnsConfig::default());
    let msg = ask_udp(udp, 4, "6.1.0.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    match &msg.answers[..] {
        [r] => match &r.data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "web.2.t2.appnet."),
            other => panic!("not a PTR: {other:?}"),
        },
        other => panic!("answers: {other:?}"),
    }
}

#[tokio::test]
async fn a_new_map_changes_the_answers() {
    let (server, udp, _) = serve(DnsConfig::default());
    let mut m = map();
    m.services[0].vips = vec![addr(NET_A, "10.0.1.200")];
    server.set_map(Arc::new(m));
    let msg = ask_udp(udp, 5, "web.", RecordType::A).await;
    assert_eq!(a_answers(&msg), vec![Ipv4Addr::new(10, 0, 1, 200)]);
}

#[tokio::test]
async fn other_names_are_forwarded_upstream() {
    let upstream = fake_upstream().await;
    let (_server, udp, tcp) = serve(DnsConfig {
        upstreams: vec![upstream],
        ..DnsConfig::default()
    });
    let msg = ask_udp(udp, 9, "example.com.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_answers(&msg), vec![Ipv4Addr::new(192, 0, 2, 1)]);
    assert_eq!(msg.answers[0].ttl, 30);
    // A service on a network the task is not on is somebody else's name.
    let msg = ask_udp(udp, 10, "secret.", RecordType::A).await;
    assert_eq!(a_answers(&msg), vec![Ipv4Addr::new(192, 0, 2, 1)]);
    // AAAA of a name that is not ours goes upstream too (the fake answers A records).
    let msg = ask_udp(udp, 11, "example.com.", RecordType::AAAA).await;
    assert_eq!(a_answers(&msg), vec![Ipv4Addr::new(192, 0, 2, 1)]);
    // Over TCP, to the upstream's TCP side.
    let msg = ask_tcp(tcp, 12, "example.com.", RecordType::A).await;
    assert_eq!(a_answers(&msg), vec![Ipv4Addr::new(192, 0, 2, 2)]);
}

#[tokio::test]
async fn tcp_answers_our_names() {
    let (_server, _, tcp) = serve(DnsConfig::default());
    let msg = ask_tcp(tcp, 13, "web.2.", RecordType::A).await;
    assert_eq!(a_answers(&msg), vec![Ipv4Addr::new(10, 0, 1, 6)]);
}

#[tokio::test]
async fn servfail_without_a_working_upstream() {
    let (_server, udp, _) = serve(DnsConfig::default());
    let msg = ask_udp(udp, 14, "example.com.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert!(msg.answers.is_empty());

    // An upstream that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (_server2, udp2, _) = serve(DnsConfig {
        upstreams: vec![silent.local_addr().unwrap()],
        timeout: Duration::from_millis(200),
        ..DnsConfig::default()
    });
    let msg = ask_udp(udp2, 15, "example.com.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn removed_tasks_stop_being_served() {
    let (server, udp, tcp) = serve(DnsConfig::default());
    assert_eq!(server.tasks(), vec!["client".to_string()]);
    ask_udp(udp, 16, "web.", RecordType::A).await;
    assert!(server.remove_task("client"));
    assert!(!server.remove_task("client"));
    assert!(server.tasks().is_empty());
    // The listener closes once its aborted task is dropped by the runtime.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if tokio::net::TcpStream::connect(tcp).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the TCP listener is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- inside a network namespace (root only) ----

/// A scratch namespace `shdns-<pid>`, deleted on drop.
struct ScratchNetns(String);

impl ScratchNetns {
    fn create() -> Option<Self> {
        let name = format!("shdns-{}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
        let ns = ScratchNetns(name);
        let up = std::process::Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        up.then_some(ns)
    }

    fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn own_netns() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_and_answers_inside_a_task_namespace() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to create a network namespace");
        return;
    }
    let Some(ns) = ScratchNetns::create() else {
        eprintln!("skipped: could not create a network namespace here");
        return;
    };
    let before = own_netns();
    let at: SocketAddr = (EMBEDDED_DNS_ADDR, 53).into();
    let (udp, tcp) = bind_in_netns(&ns.path(), at).unwrap();
    assert_eq!(own_netns(), before, "the calling thread changed namespace");
    assert_eq!(udp.local_addr().unwrap(), at);
    let server = DnsServer::new(DnsConfig::default()).unwrap();
    server.set_map(Arc::new(map()));
    server.add_task("nstask", nets(&[NET_A]), udp, tcp).unwrap();

    // A client inside the namespace gets the answer.
    let path = ns.path();
    // A client in its own thread, which joins the namespace and ends.
    let client = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let file = std::fs::File::open(path)?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(WAIT))?;
        sock.send_to(&query(21, "web.", RecordType::A), at)?;
        let mut buf = vec![0u8; 65535];
        let n = sock.recv(&mut buf)?;
        Ok(buf[..n].to_vec())
    });
    let answer = tokio::task::spawn_blocking(move || client.join())
        .await
        .unwrap()
        .expect("the client thread panicked")
        .expect("no answer inside the namespace");
    let msg = Message::from_vec(&answer).unwrap();
    assert_eq!(a_answers(&msg), vec![Ipv4Addr::new(10, 0, 1, 2)]);
    assert!(server.remove_task("nstask"));
}

#[tokio::test]
async fn a_silent_upstream_is_skipped_for_the_next() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = fake_upstream().await;
    let (_server, udp, _) = serve(DnsConfig {
        upstreams: vec![silent.local_addr().unwrap(), upstream],
        timeout: Duration::from_millis(200),
        ..DnsConfig::default()
    });
    let msg = ask_udp(udp, 17, "example.org.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_answers(&msg), vec![Ipv4Addr::new(192, 0, 2, 1)]);
}
