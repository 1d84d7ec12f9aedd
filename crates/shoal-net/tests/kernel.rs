//! Integration tests of the kernel data plane (root, `ip` and `nft` needed; skipped otherwise).
//!
//! Each test builds a private lab of namespaces named `shnt-<pid>-*`: a "switch" namespace
//! holding a bridge (the underlay 10.97.0.0/24, with a client address .254) and two "nodes",
//! each with one veth on that bridge. Each node runs its own [`Kernel`] on a thread that entered
//! its namespace. Nothing is done in the host namespace; everything made is removed on drop,
//! panics included.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sched::CloneFlags;
use shoal_api::netmap::{
    Backend, EndpointMode, NetAddress, NetworkMap, OverlayPlan, PortPlan, Protocol, PublishMode,
    ServicePlan, TaskAttachment,
};
use shoal_net::kernel::{self, Kernel, KernelError};

const PORT: u16 = 4789;

fn can_run() -> bool {
    let have = |bin: &str| {
        Command::new(bin)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !nix::unistd::geteuid().is_root() || !have("ip") || !have("nft") {
        eprintln!("skipped: needs root, ip and nft");
        return false;
    }
    true
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ns_path(name: &str) -> PathBuf {
    Path::new(kernel::NETNS_DIR).join(name)
}

fn enter(path: &Path) {
    let f = std::fs::File::open(path).expect("open namespace");
    nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Runs `f` on a thread inside namespace `path`.
fn in_ns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(path);
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

/// Runs `f` with a [`Kernel`] made inside node namespace `node`, bounded in time.
fn on_node<T: Send, F, Fut>(node: &str, f: F) -> T
where
    F: FnOnce(Kernel) -> Fut + Send,
    Fut: Future<Output = Result<T, KernelError>>,
{
    let path = ns_path(node);
    in_ns(&path, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let k = Kernel::new().expect("kernel");
            tokio::time::timeout(Duration::from_secs(60), f(k))
                .await
                .expect("kernel operation timed out")
                .expect("kernel operation")
        })
    })
}

/// A TCP server in a namespace answering every connection with `reply`, until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Path, port: u16, reply: &'static str) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = ns.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
            l.set_nonblocking(true).expect("nonblocking");
            tx.send(()).expect("ready");
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(reply.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("server ready");
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP echo server (one connection, line by line) in a namespace; ends with its client.
fn echo_server(ns: &Path, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        enter(&ns);
        let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        tx.send(()).expect("ready");
        if let Ok((s, _)) = l.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let mut w = s.try_clone().expect("clone");
            let mut r = std::io::BufReader::new(s);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) > 0 {
                if w.write_all(line.as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("server ready");
}

/// A client connection opened from a namespace (the socket keeps the namespace it was made in).
struct Conn(std::io::BufReader<TcpStream>);

impl Conn {
    fn open(ns: &Path, addr: &str) -> Conn {
        let addr: SocketAddr = addr.parse().expect("address");
        let s = in_ns(ns, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        })
        .expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Conn(std::io::BufReader::new(s))
    }

    fn ask(&mut self, text: &str) -> String {
        self.0
            .get_mut()
            .write_all(format!("{text}\n").as_bytes())
            .expect("write");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.0, &mut line).expect("read");
        line.trim_end().to_string()
    }
}

/// A UDP server in a namespace answering every datagram with `reply`, until dropped.
struct UdpServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpServer {
    fn start(ns: &Path, port: u16, reply: &'static str) -> UdpServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = ns.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            tx.send(()).expect("ready");
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(reply.as_bytes(), from);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("server ready");
        UdpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a datagram from namespace `ns` to `addr` and returns the answer (retried a few times).
fn udp_ask(ns: &Path, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().expect("address");
    in_ns(ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        for _ in 0..6 {
            s.send_to(b"?", addr).map_err(|e| e.to_string())?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Err(format!("no answer from {addr}"))
    })
}

/// A UDP client socket made in a namespace, on a fixed source port (one conntrack flow).
struct UdpClient(UdpSocket);

impl UdpClient {
    fn new(ns: &Path, bind: &str) -> UdpClient {
        let s = in_ns(ns, || UdpSocket::bind(bind)).expect("bind udp client");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        UdpClient(s)
    }

    fn ask(&self, addr: &str) -> String {
        let mut buf = [0u8; 64];
        for _ in 0..6 {
            self.0.send_to(b"?", addr).expect("send");
            if let Ok((n, _)) = self.0.recv_from(&mut buf) {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        panic!("no answer from {addr}");
    }
}

/// Connects from namespace `ns` to `addr` and reads the reply (`Err` text on failure).
fn fetch(ns: &Path, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().expect("address");
    in_ns(ns, || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out)
            .map_err(|e| format!("read {addr}: {e}"))?;
        Ok(out)
    })
}

/// Like [`fetch`], retried a few times (the first packets over a fresh overlay may go to ARP).
fn fetch_retry(ns: &Path, addr: &str) -> String {
    let mut last = String::new();
    for _ in 0..5 {
        match fetch(ns, addr) {
            Ok(s) => return s,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{last}");
}

/// The scratch lab: switch + two node namespaces, and the task IDs the test uses.
struct Lab {
    sw: String,
    a: String,
    b: String,
    tasks: Vec<String>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let name = |n: &str| format!("shnt-{pid}-{tag}{n}");
        let lab = Lab {
            sw: name("s"),
            a: name("a"),
            b: name("b"),
            tasks: ["a", "b"]
                .iter()
                .map(|n| format!("t{pid:08x}{tag}{n}0000000000"))
                .collect(),
        };
        let (sw, a, b) = (lab.sw.as_str(), lab.a.as_str(), lab.b.as_str());
        for ns in [sw, a, b] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", sw, "link", "add", "br0", "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            sw,
            "addr",
            "add",
            "10.97.0.254/24",
            "dev",
            "br0",
        ]);
        sh(&["ip", "-n", sw, "link", "set", "br0", "up"]);
        for (i, ns) in [a, b].iter().enumerate() {
            let host = format!("u{i}");
            sh(&[
                "ip", "-n", sw, "link", "add", &host, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            sh(&["ip", "-n", sw, "link", "set", &host, "master", "br0", "up"]);
            let addr = format!("10.97.0.{}/24", i + 1);
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    fn sw(&self) -> PathBuf {
        ns_path(&self.sw)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for t in &self.tasks {
            let _ = Command::new("ip")
                .args(["netns", "del", &kernel::task_netns_name(t)])
                .output();
        }
        for ns in [&self.sw, &self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn underlay(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 97, 0, i)
}

fn overlay(id: &str, vni: u32, third: u8, node: u8, peer: u8, ingress: bool) -> OverlayPlan {
    OverlayPlan {
        id: id.into(),
        name: id.into(),
        vni,
        subnet: format!("10.{third}.0.0/24"),
        node_address: format!("10.{third}.0.{node}/24"),
        peers: vec![underlay(peer).to_string()],
        ingress,
        internal: false,
        mtu: 1450,
    }
}

fn attach(net: &OverlayPlan, host: u8) -> TaskAttachment {
    let third = net.subnet.split('.').nth(1).unwrap_or("0").to_string();
    TaskAttachment {
        network_id: net.id.clone(),
        address: format!("10.{third}.0.{host}/24"),
        aliases: vec![],
    }
}

fn backend(task: &str, node: &str, addrs: &[(&str, String)]) -> Backend {
    Backend {
        task_id: task.into(),
        slot: 1,
        node_id: node.into(),
        addresses: addrs
            .iter()
            .map(|(n, ip)| NetAddress {
                network_id: n.to_string(),
                ip: ip.clone(),
            })
            .collect(),
    }
}

fn links(ns: &str) -> String {
    sh(&["ip", "-n", ns, "-o", "link", "show"])
}

#[test]
fn kernel_overlay_tasks_mesh_vip_and_cleanup() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("m");
    let (ta, tb) = (lab.tasks[0].clone(), lab.tasks[1].clone());
    // Node A is 10.97.0.1 (overlay .1), node B 10.97.0.2 (overlay .2).
    let ing_a = overlay("ing", 4096, 98, 1, 2, true);
    let web_a = overlay("web", 4097, 99, 1, 2, false);
    let ing_b = overlay("ing", 4096, 98, 2, 1, true);
    let web_b = overlay("web", 4097, 99, 2, 1, false);
    let atts_a = vec![
        (ing_a.clone(), attach(&ing_a, 10)),
        (web_a.clone(), attach(&web_a, 10)),
    ];
    let atts_b = vec![
        (ing_b.clone(), attach(&ing_b, 20)),
        (web_b.clone(), attach(&web_b, 20)),
    ];

    // Overlays (twice: idempotent) and tasks.
    let (ing_a_r, web_a_r, ta_r, atts_a_r) = (&ing_a, &web_a, &ta, &atts_a);
    let pa = on_node(&lab.a, |k| async move {
        for round in ["first", "again"] {
            let t = std::time::Instant::now();
            k.ensure_overlay(ing_a_r, underlay(1), PORT).await?;
            k.ensure_overlay(web_a_r, underlay(1), PORT).await?;
            eprintln!("ensure_overlay x2 ({round}): {:?}", t.elapsed());
        }
        assert_eq!(k.overlays().await?, vec![4096, 4097]);
        assert!(k.rules_supported().await);
        let t = std::time::Instant::now();
        let p1 = k.ensure_task(ta_r, atts_a_r).await?;
        eprintln!("ensure_task, 2 attachments (new): {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let p2 = k.ensure_task(ta_r, atts_a_r).await?;
        eprintln!("ensure_task, 2 attachments (again): {:?}", t.elapsed());
        assert_eq!(p1, p2);
        Ok(p1)
    });
    assert_eq!(pa, kernel::task_netns_path(&ta));
    let tb_r = &tb;
    let pb = on_node(&lab.b, |k| async move {
        k.ensure_overlay(&ing_b, underlay(2), PORT).await?;
        k.ensure_overlay(&web_b, underlay(2), PORT).await?;
        k.ensure_task(tb_r, &atts_b).await
    });

    // Devices as asked.
    let la = links(&lab.a);
    assert!(la.contains("shb4096") && la.contains("shx4097"), "{la}");
    let vx = sh(&["ip", "-n", &lab.a, "-d", "link", "show", "shx4096"]);
    assert!(
        vx.contains("mtu 1450") && vx.contains("master shb4096"),
        "{vx}"
    );
    assert!(
        vx.contains("vxlan id 4096") && vx.contains("local 10.97.0.1"),
        "{vx}"
    );
    assert!(vx.contains("dstport 4789"), "{vx}");
    let fdb = sh(&["bridge", "-n", &lab.a, "fdb", "show", "dev", "shx4096"]);
    assert!(fdb.contains("00:00:00:00:00:00 dst 10.97.0.2"), "{fdb}");
    let eth = sh(&[
        "ip",
        "-n",
        &kernel::task_netns_name(&ta),
        "-o",
        "addr",
        "show",
    ]);
    assert!(
        eth.contains("eth0") && eth.contains("10.98.0.10/24"),
        "{eth}"
    );
    assert!(
        eth.contains("eth1") && eth.contains("10.99.0.10/24"),
        "{eth}"
    );
    let tns_a = kernel::task_netns_name(&ta);
    let v6 = sh(&["ip", "-n", &tns_a, "-6", "-o", "addr", "show"]);
    assert!(!v6.contains("eth0"), "no IPv6 on task interfaces: {v6}");
    assert!(v6.contains("::1/128"), "loopback keeps IPv6: {v6}");
    let v6 = sh(&[
        "ip", "-n", &lab.a, "-6", "-o", "addr", "show", "dev", "shb4096",
    ]);
    assert!(v6.trim().is_empty(), "no IPv6 on the bridge: {v6}");
    let route = sh(&[
        "ip",
        "-n",
        &kernel::task_netns_name(&ta),
        "route",
        "show",
        "default",
    ]);
    assert!(route.contains("via 10.98.0.1"), "{route}");

    // Servers in both tasks; task A reaches task B across the overlay on both networks.
    let _sa = Server::start(&pa, 8080, "ta");
    let _sb = Server::start(&pb, 8080, "tb");
    assert_eq!(fetch_retry(&pa, "10.99.0.20:8080"), "tb");
    assert_eq!(fetch_retry(&pa, "10.98.0.20:8080"), "tb");
    assert_eq!(fetch_retry(&pb, "10.99.0.10:8080"), "ta");

    // Routing mesh on A: port 4000 -> the task on B (ingress addresses); 4001 has no task.
    let node_a = "node-a";
    let mut map = NetworkMap {
        underlay: underlay(1).to_string(),
        data_path_port: PORT,
        networks: vec![ing_a_plan(), web_a_plan()],
        services: vec![
            ServicePlan {
                id: "app".into(),
                name: "app".into(),
                endpoint_mode: EndpointMode::Vip,
                vips: vec![NetAddress {
                    network_id: "web".into(),
                    ip: "10.99.0.100".into(),
                }],
                ports: vec![
                    PortPlan {
                        protocol: Protocol::Tcp,
                        target: 8080,
                        published: 4000,
                        mode: PublishMode::Ingress,
                    },
                    PortPlan {
                        protocol: Protocol::Udp,
                        target: 5300,
                        published: 4000,
                        mode: PublishMode::Ingress,
                    },
                ],
                aliases: vec![],
                backends: vec![backend(
                    &tb,
                    "node-b",
                    &[("ing", "10.98.0.20".into()), ("web", "10.99.0.20".into())],
                )],
            },
            ServicePlan {
                id: "none".into(),
                name: "none".into(),
                endpoint_mode: EndpointMode::Vip,
                vips: vec![NetAddress {
                    network_id: "web".into(),
                    ip: "10.99.0.101".into(),
                }],
                ports: vec![PortPlan {
                    protocol: Protocol::Tcp,
                    target: 8080,
                    published: 4001,
                    mode: PublishMode::Ingress,
                }],
                aliases: vec![],
                backends: vec![],
            },
        ],
    };
    let rules = kernel::node_rules(&map, node_a);
    on_node(&lab.a, |k| async move {
        k.apply_rules(None, &rules).await?;
        k.apply_rules(None, &rules).await
    });
    // From outside (the switch), and from node A itself.
    assert_eq!(fetch_retry(&lab.sw(), "10.97.0.1:4000"), "tb");
    assert_eq!(fetch_retry(&ns_path(&lab.a), "10.97.0.1:4000"), "tb");
    assert_eq!(
        fetch(&ns_path(&lab.a), "127.0.0.1:4000"),
        Ok("tb".to_string())
    );
    // UDP through the mesh.
    let _ub = UdpServer::start(&pb, 5300, "tb");
    assert_eq!(udp_ask(&lab.sw(), "10.97.0.1:4000"), Ok("tb".to_string()));
    // A published port without tasks is refused, even with something listening on the node.
    let _squat = Server::start(&ns_path(&lab.a), 4001, "node");
    let refused = fetch(&lab.sw(), "10.97.0.1:4001");
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("refused")),
        "{refused:?}"
    );

    // An established connection through the mesh survives a restart of the data plane: a new
    // Kernel applying the same state again (devices untouched, rules replaced atomically).
    echo_server(&pb, 9000);
    map.services[0].ports.push(PortPlan {
        protocol: Protocol::Tcp,
        target: 9000,
        published: 4002,
        mode: PublishMode::Ingress,
    });
    let rules = kernel::node_rules(&map, node_a);
    let r2 = rules.clone();
    on_node(&lab.a, |k| async move { k.apply_rules(None, &r2).await });
    let mut conn = Conn::open(&lab.sw(), "10.97.0.1:4002");
    assert_eq!(conn.ask("one"), "one");
    let (ing, web, t, atts) = (&ing_a, &web_a, &ta, &atts_a);
    on_node(&lab.a, |k| async move {
        k.ensure_overlay(ing, underlay(1), PORT).await?;
        k.ensure_overlay(web, underlay(1), PORT).await?;
        k.ensure_task(t, atts).await?;
        k.apply_rules(None, &rules).await
    });
    assert_eq!(conn.ask("two"), "two");
    drop(conn);

    // Both tasks as backends: connections alternate.
    map.services[0].backends.push(backend(
        &ta,
        node_a,
        &[("ing", "10.98.0.10".into()), ("web", "10.99.0.10".into())],
    ));
    let rules = kernel::node_rules(&map, node_a);
    on_node(&lab.a, |k| async move { k.apply_rules(None, &rules).await });
    let mut seen: Vec<String> = (0..4)
        .map(|_| fetch_retry(&lab.sw(), "10.97.0.1:4000"))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec!["ta".to_string(), "tb".to_string()]);
    // Hairpin: task A reaches the mesh of its own node.
    let hair: Vec<String> = (0..2).map(|_| fetch_retry(&pa, "10.97.0.1:4000")).collect();
    assert!(hair.iter().all(|h| h == "ta" || h == "tb"), "{hair:?}");

    // The VIP inside task A's namespace: balanced over both tasks; a VIP without tasks refuses.
    let trules = kernel::task_rules(&map, &[attach(&web_a, 10)]);
    assert!(trules.contains("10.99.0.100"), "{trules}");
    let pa2 = pa.clone();
    on_node(&lab.a, |k| async move {
        k.apply_rules(Some(&pa2), &trules).await
    });
    let mut seen: Vec<String> = (0..4)
        .map(|_| fetch_retry(&pa, "10.99.0.100:8080"))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec!["ta".to_string(), "tb".to_string()]);
    let refused = fetch(&pa, "10.99.0.101:8080");
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("refused")),
        "{refused:?}"
    );

    // A UDP flow keeps its backend while it lives, even when that backend is dropped, until
    // the stale flows are flushed: then it goes to a current backend.
    let _ua = UdpServer::start(&pa, 5300, "ta");
    let client = UdpClient::new(&lab.sw(), "10.97.0.254:40000");
    let first = client.ask("10.97.0.1:4000");
    let (gone_task, other) = if first == "ta" {
        (&ta, "tb")
    } else {
        (&tb, "ta")
    };
    let mut shrunk = map.clone();
    shrunk.services[0]
        .backends
        .retain(|b| &b.task_id != gone_task);
    let rules = kernel::node_rules(&shrunk, node_a);
    let (m2, r2) = (&shrunk, &rules);
    on_node(&lab.a, |k| async move { k.apply_rules(None, r2).await });
    assert_eq!(
        client.ask("10.97.0.1:4000"),
        first,
        "the flow keeps its backend"
    );
    let flushed = on_node(&lab.a, |k| async move { k.flush_stale_udp(None, m2).await });
    assert!(flushed >= 1, "{flushed}");
    assert_eq!(client.ask("10.97.0.1:4000"), other);
    let again = on_node(&lab.a, |k| async move { k.flush_stale_udp(None, m2).await });
    assert_eq!(again, 0);

    // A port published in host mode goes to the node's own task only.
    let mut hosted = shrunk.clone();
    hosted.services.push(ServicePlan {
        id: "hosted".into(),
        name: "hosted".into(),
        endpoint_mode: EndpointMode::Dnsrr,
        vips: vec![],
        ports: vec![PortPlan {
            protocol: Protocol::Tcp,
            target: 8080,
            published: 8081,
            mode: PublishMode::Host,
        }],
        aliases: vec![],
        backends: vec![
            backend(&ta, node_a, &[("web", "10.99.0.10".into())]),
            backend(&tb, "node-b", &[("web", "10.99.0.20".into())]),
        ],
    });
    let rules = kernel::node_rules(&hosted, node_a);
    let r2 = &rules;
    on_node(&lab.a, |k| async move { k.apply_rules(None, r2).await });
    for _ in 0..3 {
        assert_eq!(fetch_retry(&lab.sw(), "10.97.0.1:8081"), "ta");
    }

    // Listing: A sees only its own task although B's namespace is in the same /run/netns.
    let prefix_a = kernel::task_prefix(&ta).to_string();
    let listed = on_node(&lab.a, |k| async move { k.tasks().await });
    assert_eq!(listed, vec![prefix_a]);

    // Clean-up leaves nothing.
    let pa3 = pa.clone();
    on_node(&lab.a, |k| async move {
        k.remove_rules(Some(&pa3)).await?;
        k.cleanup_all().await?;
        k.cleanup_all().await
    });
    on_node(&lab.b, |k| async move { k.cleanup_all().await });
    for ns in [&lab.a, &lab.b] {
        let l = links(ns);
        assert!(
            !l.contains("shb") && !l.contains("shx") && !l.contains("shv"),
            "{l}"
        );
        let t = sh(&["ip", "netns", "exec", ns, "nft", "list", "tables"]);
        assert!(!t.contains("shoal"), "{t}");
    }
    let names = sh(&["ip", "netns", "list"]);
    for t in &lab.tasks {
        assert!(!names.contains(&kernel::task_netns_name(t)), "{names}");
    }
    drop(lab);
    let names = sh(&["ip", "netns", "list"]);
    assert!(
        !names.contains(&format!("shnt-{}-m", std::process::id())),
        "{names}"
    );
}

fn ing_a_plan() -> OverlayPlan {
    overlay("ing", 4096, 98, 1, 2, true)
}

fn web_a_plan() -> OverlayPlan {
    overlay("web", 4097, 99, 1, 2, false)
}

#[test]
fn kernel_repairs_leftovers_and_syncs_peers() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("r");
    let ta = lab.tasks[0].clone();
    let ing_a = overlay("ing", 4096, 98, 1, 2, true);
    let atts = vec![(ing_a.clone(), attach(&ing_a, 10))];

    let (net, atts2, t2) = (ing_a.clone(), atts.clone(), ta.clone());
    let pa = on_node(&lab.a, |k| async move {
        k.ensure_overlay(&net, underlay(1), PORT).await?;
        k.ensure_task(&t2, &atts2).await
    });
    let tns = kernel::task_netns_name(&ta);

    // Flood list follows the peers: add two, then drop one.
    let mut net = ing_a.clone();
    net.peers = vec!["10.97.0.2".into(), "10.97.0.77".into(), "10.97.0.1".into()];
    let n2 = net.clone();
    on_node(&lab.a, |k| async move {
        k.ensure_overlay(&n2, underlay(1), PORT).await
    });
    let fdb = sh(&["bridge", "-n", &lab.a, "fdb", "show", "dev", "shx4096"]);
    assert!(
        fdb.contains("dst 10.97.0.2 ") && fdb.contains("dst 10.97.0.77 "),
        "{fdb}"
    );
    assert!(
        !fdb.contains("dst 10.97.0.1 "),
        "own address is no peer: {fdb}"
    );
    net.peers = vec!["10.97.0.77".into()];
    let n2 = net.clone();
    on_node(&lab.a, |k| async move {
        k.ensure_overlay(&n2, underlay(1), PORT).await
    });
    let fdb = sh(&["bridge", "-n", &lab.a, "fdb", "show", "dev", "shx4096"]);
    assert!(
        !fdb.contains("dst 10.97.0.2 ") && fdb.contains("dst 10.97.0.77 "),
        "{fdb}"
    );

    // A VXLAN device with other parameters (a changed data path port) is remade.
    let n2 = net.clone();
    on_node(&lab.a, |k| async move {
        k.ensure_overlay(&n2, underlay(1), 4790).await
    });
    let vx = sh(&["ip", "-n", &lab.a, "-d", "link", "show", "shx4096"]);
    assert!(
        vx.contains("dstport 4790") && vx.contains("master shb4096"),
        "{vx}"
    );

    // Crash leftovers: the host end of the veth gone, an address changed, the bridge down.
    let host = kernel::host_veth_name(&ta, 0);
    sh(&["ip", "-n", &lab.a, "link", "del", &host]);
    sh(&["ip", "-n", &lab.a, "link", "set", "shb4096", "down"]);
    let (atts2, t2) = (atts.clone(), ta.clone());
    let n2 = net.clone();
    on_node(&lab.a, |k| async move {
        k.ensure_overlay(&n2, underlay(1), 4790).await?;
        k.ensure_task(&t2, &atts2).await
    });
    let l = links(&lab.a);
    assert!(l.contains(&host) && l.contains("master shb4096"), "{l}");
    let eth = sh(&["ip", "-n", &tns, "-o", "addr", "show", "eth0"]);
    assert!(eth.contains("10.98.0.10/24"), "{eth}");
    // The node reaches the task again.
    let _s = Server::start(&pa, 8080, "ta");
    assert_eq!(fetch_retry(&ns_path(&lab.a), "10.98.0.10:8080"), "ta");

    // The task's address changes in place; the other end of the pair gone the other way.
    sh(&["ip", "-n", &tns, "link", "del", "eth0"]);
    let atts3 = vec![(ing_a.clone(), attach(&ing_a, 11))];
    let t2 = ta.clone();
    on_node(&lab.a, |k| async move { k.ensure_task(&t2, &atts3).await });
    let eth = sh(&["ip", "-n", &tns, "-o", "addr", "show", "eth0"]);
    assert!(
        eth.contains("10.98.0.11/24") && !eth.contains("10.98.0.10/"),
        "{eth}"
    );
    assert!(links(&lab.a).contains(&host));
    // ... and in place, on a live interface.
    let atts4 = vec![(ing_a.clone(), attach(&ing_a, 12))];
    let t2 = ta.clone();
    on_node(&lab.a, |k| async move { k.ensure_task(&t2, &atts4).await });
    let link = sh(&["ip", "-n", &tns, "-o", "addr", "show", "eth0"]);
    assert!(
        link.contains("10.98.0.12/24") && !link.contains("10.98.0.11/"),
        "{link}"
    );
    let link = sh(&["ip", "-n", &tns, "link", "show", "eth0"]);
    assert!(
        link.contains("02:42:0a:62:00:0c") && link.contains("state UP"),
        "{link}"
    );
    let route = sh(&["ip", "-n", &tns, "route", "show", "default"]);
    assert!(route.contains("via 10.98.0.1"), "{route}");

    // A dead namespace file (a crash between creating and mounting it) is replaced.
    drop(_s);
    let t2 = ta.clone();
    on_node(&lab.a, |k| async move { k.remove_task(&t2).await });
    assert!(!links(&lab.a).contains(&host));
    std::fs::write(kernel::task_netns_path(&ta), b"").expect("dead file");
    // Not claimed by listing (it could be another daemon's, mounted in its own mount
    // namespace), but replaced when the task is ensured.
    let listed = on_node(&lab.a, |k| async move { k.tasks().await });
    assert!(
        !listed.contains(&kernel::task_prefix(&ta).to_string()),
        "{listed:?}"
    );
    let (atts2, t2) = (atts.clone(), ta.clone());
    on_node(&lab.a, |k| async move { k.ensure_task(&t2, &atts2).await });
    let eth = sh(&["ip", "-n", &tns, "-o", "addr", "show", "eth0"]);
    assert!(eth.contains("10.98.0.10/24"), "{eth}");

    on_node(&lab.a, |k| async move { k.cleanup_all().await });
    assert!(!Path::new(&kernel::task_netns_path(&ta)).exists());
    let l = links(&lab.a);
    assert!(
        !l.contains("shb") && !l.contains("shx") && !l.contains("shv"),
        "{l}"
    );
}
