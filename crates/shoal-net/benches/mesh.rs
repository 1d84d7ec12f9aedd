//! Routing-mesh benchmark: the same client against a task directly and through each datapath
//! of the routing mesh, side by side in one run, printing figures (never asserting them).
//!
//! ```text
//!  loopback   client ─────────────────────────────► backend            direct
//!             client ─► userspace proxy (splice) ─► backend            Proxy, splice(2)
//!             client ─► userspace proxy (copy) ───► backend            Proxy, copy_bidirectional
//!
//!  netns      node namespace                          task namespace     (root + ip + nft only)
//!  (scratch)  client ─────────────── veth ──────────► backend            direct to 10.96.x.2
//!             client ─► nft DNAT + masquerade ─ veth ► backend           node:4000 (kernel path)
//!             client ─► userspace proxy ─────── veth ► backend           node:5000 / 5001
//! ```
//!
//! For every path: (a) one TCP stream's throughput (bulk send into a sink, timed until the sink
//! confirms the byte count), (b) request/response latency (64-byte ping-pong on one connection;
//! p50 and p99), (c) new connections per second (connect, one round trip, close). Rounds are
//! interleaved across the paths of a group so drifting machine load hits them alike; throughput
//! and connection rates are the median of the rounds, latency percentiles are over all samples.
//!
//! The scratch namespaces are `shbench-<pid>-n` and `shbench-<pid>-t`, joined by a veth with
//! 10.96.x.0/24 addresses; the nftables table lives in the node namespace and goes with it.
//! They are removed at the end, on panic (a guard), and at the next run if a killed run left
//! them behind.
//!
//! Environment: `SHOAL_MESH_ROUNDS` (3), `SHOAL_MESH_BULK_MS` (1000 per round and path),
//! `SHOAL_MESH_PINGS` (10000 per round and path), `SHOAL_MESH_CONN_MS` (500 per round and path),
//! `SHOAL_MESH_PROXY_WORKERS` (2: the proxy's runtime threads), `SHOAL_MESH_PIPE` (splice pipe
//! size in bytes, default `ProxyConfig::default()`), `SHOAL_MESH_NETNS=0` to skip the
//! namespace part.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_net::proxy::{Protocol, Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// How long and how often each figure is measured.
#[derive(Clone, Copy)]
struct Settings {
    rounds: usize,
    bulk: Duration,
    pings: usize,
    conn_time: Duration,
    /// At most this many connections per round and path (the ephemeral ports are finite and
    /// closed connections linger in TIME_WAIT).
    conn_max: usize,
    /// Worker threads of the proxy's runtime.
    proxy_workers: usize,
    /// `ProxyConfig::pipe_size` (0: the default).
    pipe_size: usize,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Self {
        Settings {
            rounds: env_u64("SHOAL_MESH_ROUNDS", 3).max(1) as usize,
            bulk: Duration::from_millis(env_u64("SHOAL_MESH_BULK_MS", 1000)),
            pings: env_u64("SHOAL_MESH_PINGS", 10_000).max(100) as usize,
            conn_time: Duration::from_millis(env_u64("SHOAL_MESH_CONN_MS", 500)),
            conn_max: 8_000,
            proxy_workers: env_u64("SHOAL_MESH_PROXY_WORKERS", 2).max(1) as usize,
            pipe_size: env_u64("SHOAL_MESH_PIPE", ProxyConfig::default().pipe_size as u64) as usize,
        }
    }
}

/// Where the client connects for one path.
#[derive(Clone)]
struct Path {
    name: String,
    /// Reads everything until end of file, then answers with the byte count (u64, LE).
    sink: SocketAddr,
    /// Echoes until end of file.
    echo: SocketAddr,
}

#[derive(Default)]
struct Samples {
    mbps: Vec<f64>,
    /// Cores used by the proxy threads during the bulk runs.
    proxy_cpu: Vec<f64>,
    rtts: Vec<Duration>,
    conns: Vec<f64>,
    errors: Vec<String>,
}

struct Summary {
    name: String,
    mbps: f64,
    proxy_cpu: f64,
    p50: Duration,
    p99: Duration,
    conns: f64,
    errors: Vec<String>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------- client side (blocking)

/// CPU time so far of this process's proxy runtime threads (`mesh-proxy*`), from
/// /proc/self/task/*/schedstat (nanoseconds on a CPU).
fn proxy_cpu() -> Duration {
    let mut total = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("mesh-proxy") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total)
}

/// (a) Sends for `dur`, then half-closes and waits for the sink's count: MB/s, and the share
/// of one core the proxy threads used meanwhile.
fn bulk(addr: SocketAddr, dur: Duration) -> io::Result<(f64, f64)> {
    let cpu0 = proxy_cpu();
    let mut s = TcpStream::connect(addr)?;
    let buf = vec![0x5au8; 256 << 10];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur {
        s.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = (proxy_cpu().saturating_sub(cpu0)).as_secs_f64();
    let got = u64::from_le_bytes(ack);
    if got != sent {
        return Err(io::Error::other(format!("sink got {got} of {sent} bytes")));
    }
    Ok((sent as f64 / secs / 1e6, cpu / secs))
}

/// (b) 64-byte ping-pong on one connection: one round-trip time per ping.
fn pings(addr: SocketAddr, n: usize, out: &mut Vec<Duration>) -> io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let msg = [0x42u8; 64];
    let mut back = [0u8; 64];
    for i in 0..n + n / 10 {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        if i >= n / 10 {
            // The first tenth warms up.
            out.push(t.elapsed());
        }
    }
    Ok(())
}

/// (c) Connections per second: connect, one 1-byte round trip, close.
fn conns(addr: SocketAddr, dur: Duration, max: usize) -> io::Result<f64> {
    let start = Instant::now();
    let mut count = 0usize;
    while start.elapsed() < dur && count < max {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        count += 1;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// Each round's pings per path are taken in this many interleaved slices.
const LATENCY_SLICES: usize = 5;

/// Measures every path of a group, interleaving the rounds.
fn measure(paths: &[Path], set: Settings) -> Vec<Summary> {
    let mut samples: Vec<Samples> = paths.iter().map(|_| Samples::default()).collect();
    for _ in 0..set.rounds {
        for (p, s) in paths.iter().zip(&mut samples) {
            match bulk(p.sink, set.bulk) {
                Ok((v, cpu)) => {
                    s.mbps.push(v);
                    s.proxy_cpu.push(cpu);
                }
                Err(e) => s.errors.push(format!("throughput: {e}")),
            }
        }
        // Latency in finer slices, so every path sees the same mix of machine states.
        for _ in 0..LATENCY_SLICES {
            for (p, s) in paths.iter().zip(&mut samples) {
                if let Err(e) = pings(p.echo, set.pings / LATENCY_SLICES, &mut s.rtts) {
                    s.errors.push(format!("latency: {e}"));
                }
            }
        }
        for (p, s) in paths.iter().zip(&mut samples) {
            match conns(p.echo, set.conn_time, set.conn_max) {
                Ok(v) => s.conns.push(v),
                Err(e) => s.errors.push(format!("connections: {e}")),
            }
        }
    }
    paths
        .iter()
        .zip(samples)
        .map(|(p, mut s)| {
            s.rtts.sort();
            Summary {
                name: p.name.clone(),
                mbps: median(&mut s.mbps),
                proxy_cpu: median(&mut s.proxy_cpu),
                p50: percentile(&s.rtts, 0.50),
                p99: percentile(&s.rtts, 0.99),
                conns: median(&mut s.conns),
                errors: s.errors,
            }
        })
        .collect()
}

// ---------------------------------------------------------------- servers (tokio)

/// A runtime whose threads live in a network namespace (when given): sockets made by its
/// tasks belong to that namespace.
fn runtime(name: &str, workers: usize, netns: Option<&Arc<File>>) -> Runtime {
    let netns = netns.cloned();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .on_thread_start(move || {
            if let Some(ns) = &netns {
                if let Err(e) = nix::sched::setns(ns.as_ref(), nix::sched::CloneFlags::CLONE_NEWNET)
                {
                    // A thread outside the namespace would measure the wrong thing.
                    eprintln!("setns failed: {e}");
                    std::process::abort();
                }
            }
        })
        .build()
        .expect("tokio runtime")
}

/// Runs a blocking closure on a thread inside a network namespace (or here, when None).
fn in_netns<T: Send>(netns: Option<&File>, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some(ns) = netns {
                    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .expect("setns into the scratch namespace");
                }
                f()
            })
            .join()
            .expect("measuring thread")
    })
}

/// Starts a sink and an echo server on `ip` (ephemeral ports) in `rt`: their addresses.
fn start_backend(rt: &Runtime, ip: Ipv4Addr) -> (SocketAddr, SocketAddr) {
    rt.block_on(rt_spawned(async move {
        let sink = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("bind sink");
        let echo = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("bind echo");
        let addrs = (
            sink.local_addr().expect("addr"),
            echo.local_addr().expect("addr"),
        );
        tokio::spawn(async move {
            while let Ok((mut s, _)) = sink.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 << 10];
                    let mut total = 0u64;
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(n) => total += n as u64,
                            Err(_) => return,
                        }
                    }
                    let _ = s.write_all(&total.to_le_bytes()).await;
                });
            }
        });
        tokio::spawn(async move {
            while let Ok((s, _)) = echo.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if w.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        addrs
    }))
}

/// Runs a future on a worker thread of the current runtime (so its sockets are made in the
/// runtime's namespace, not on the thread calling `block_on`).
async fn rt_spawned<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    tokio::spawn(f).await.expect("task")
}

/// Publishes `published.0` towards the sink and `published.1` towards the echo server on a
/// proxy in `rt`.
fn publish(rt: &Runtime, proxy: &Proxy, published: (u16, u16), sink: SocketAddr, echo: SocketAddr) {
    let proxy = proxy.clone();
    rt.block_on(rt_spawned(async move {
        proxy
            .set_port(Protocol::Tcp, published.0, vec![sink])
            .await
            .expect("publish sink");
        proxy
            .set_port(Protocol::Tcp, published.1, vec![echo])
            .await
            .expect("publish echo");
    }));
}

/// Two distinct free TCP ports on 0.0.0.0 here (bound and released together: the proxy takes
/// them right after).
fn free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("a free port");
    let (a, b) = (bind(), bind());
    let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
    (port(&a), port(&b))
}

// ---------------------------------------------------------------- scratch namespaces

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file());
    found
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The node and task namespaces of this run; removed on drop (also when unwinding).
struct Scratch {
    ip: PathBuf,
    node: String,
    task: String,
    /// The third octet of 10.96.x.0/24.
    octet: u8,
}

impl Scratch {
    fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 96, self.octet, 1)
    }

    fn task_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 96, self.octet, 2)
    }

    fn ns_file(name: &str) -> Result<Arc<File>, String> {
        File::open(format!("/run/netns/{name}"))
            .map(Arc::new)
            .map_err(|e| format!("open /run/netns/{name}: {e}"))
    }

    /// Removes namespaces left by runs that were killed (their pid is gone).
    fn remove_stale(ip: &PathBuf) {
        let Ok(out) = Command::new(ip).args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(rest) = name.strip_prefix("shbench-") else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or("");
            if !pid.is_empty()
                && pid.chars().all(|c| c.is_ascii_digit())
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = Command::new(ip).args(["netns", "del", name]).status();
            }
        }
    }

    fn create(ip: PathBuf) -> Result<Scratch, String> {
        Self::remove_stale(&ip);
        let pid = std::process::id();
        let scratch = Scratch {
            node: format!("shbench-{pid}-n"),
            task: format!("shbench-{pid}-t"),
            octet: 100 + (pid % 100) as u8,
            ip,
        };
        let ip = &scratch.ip;
        let (n, t) = (scratch.node.as_str(), scratch.task.as_str());
        run(Command::new(ip).args(["netns", "add", n]))?;
        run(Command::new(ip).args(["netns", "add", t]))?;
        run(Command::new(ip).args([
            "-n", n, "link", "add", "shbmesh0", "type", "veth", "peer", "name", "eth0", "netns", t,
        ]))?;
        let node_cidr = format!("{}/24", scratch.node_ip());
        let task_cidr = format!("{}/24", scratch.task_ip());
        run(Command::new(ip).args(["-n", n, "addr", "add", &node_cidr, "dev", "shbmesh0"]))?;
        run(Command::new(ip).args(["-n", t, "addr", "add", &task_cidr, "dev", "eth0"]))?;
        for (ns, dev) in [(n, "shbmesh0"), (n, "lo"), (t, "eth0"), (t, "lo")] {
            run(Command::new(ip).args(["-n", ns, "link", "set", dev, "up"]))?;
        }
        // As on a machine (KERNEL-NETWORK-NOTES): forwarding on; and room for many short
        // connections from the node (each closed one waits in TIME_WAIT).
        run(Command::new(ip).args([
            "netns",
            "exec",
            n,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward && \
             echo 1024 65000 > /proc/sys/net/ipv4/ip_local_port_range && \
             echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse",
        ]))?;
        Ok(scratch)
    }

    /// The routing mesh's rule shape (crates/shoal-net/src/kernel/rules.rs): published port →
    /// `numgen inc` map over the tasks, in prerouting and output for local addresses, and a
    /// masquerade of DNATed connections leaving on the overlay bridge (`shb*`).
    fn program_mesh(&self, nft: &PathBuf, rules: &[(u16, SocketAddr)]) -> Result<(), String> {
        let mut mesh = String::new();
        for (published, target) in rules {
            mesh.push_str(&format!(
                "\t\ttcp dport {published} dnat to numgen inc mod 1 map {{ 0 : {} . {} }}\n",
                target.ip(),
                target.port()
            ));
        }
        let table = format!(
            "table ip shoal {{\n\
             \tchain prerouting {{\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\tfib daddr type local jump mesh\n\
             \t}}\n\
             \tchain output {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\tfib daddr type local jump mesh\n\
             \t}}\n\
             \tchain mesh {{\n{mesh}\t}}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tct status dnat oifname \"shb*\" masquerade\n\
             \t}}\n\
             }}\n"
        );
        let mut child = Command::new(&self.ip)
            .args(["netns", "exec", &self.node])
            .arg(nft)
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(table.as_bytes())
                .map_err(|e| format!("nft: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nft -f: {}\n{table}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for ns in [&self.node, &self.task] {
            let _ = Command::new(&self.ip).args(["netns", "del", ns]).status();
        }
    }
}

// ---------------------------------------------------------------- groups

/// The userspace proxies measured: splice (the default on Linux), the portable copy, and a
/// splice with another pipe size when `SHOAL_MESH_PIPE_ALT` asks for one.
fn proxy_variants(set: Settings) -> Vec<(String, Proxy)> {
    let mut out = vec![
        (
            "splice".to_string(),
            Proxy::with_config(ProxyConfig {
                pipe_size: set.pipe_size,
                ..ProxyConfig::default()
            }),
        ),
        (
            "copy".to_string(),
            Proxy::with_config(ProxyConfig {
                splice: false,
                ..ProxyConfig::default()
            }),
        ),
    ];
    let alt = env_u64("SHOAL_MESH_PIPE_ALT", 0) as usize;
    if alt > 0 {
        out.push((
            format!("splice, pipe {} KiB", alt >> 10),
            Proxy::with_config(ProxyConfig {
                pipe_size: alt,
                ..ProxyConfig::default()
            }),
        ));
    }
    out
}

/// Starts one backend per variant and publishes it through that variant's proxy (on
/// `ports(i)`); returns the paths to measure.
fn userspace_paths(
    prefix: &str,
    variants: &[(String, Proxy)],
    (backends, proxies): (&Runtime, &Runtime),
    backend_ip: Ipv4Addr,
    backend_addr: impl Fn(SocketAddr) -> SocketAddr,
    ports: impl Fn(usize) -> (u16, u16),
    client_addr: impl Fn(u16) -> SocketAddr,
) -> Vec<Path> {
    variants
        .iter()
        .enumerate()
        .map(|(i, (name, proxy))| {
            let (sink, echo) = start_backend(backends, backend_ip);
            let published = ports(i);
            publish(
                proxies,
                proxy,
                published,
                backend_addr(sink),
                backend_addr(echo),
            );
            Path {
                name: format!("{prefix} userspace ({name})"),
                sink: client_addr(published.0),
                echo: client_addr(published.1),
            }
        })
        .collect()
}

fn stop(proxies: Runtime, backends: Runtime, variants: Vec<(String, Proxy)>) {
    proxies.block_on(async {
        for (_, proxy) in &variants {
            proxy.shutdown().await;
        }
    });
    drop(variants);
    proxies.shutdown_timeout(Duration::from_secs(1));
    backends.shutdown_timeout(Duration::from_secs(1));
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn loopback_group(set: Settings) -> Vec<Summary> {
    let backends = runtime("mesh-backend", 1, None);
    let proxies = runtime("mesh-proxy", set.proxy_workers, None);
    let lo = Ipv4Addr::LOCALHOST;
    let direct = start_backend(&backends, lo);
    let variants = proxy_variants(set);
    let mut paths = vec![Path {
        name: "loopback direct".into(),
        sink: direct.0,
        echo: direct.1,
    }];
    paths.extend(userspace_paths(
        "loopback",
        &variants,
        (&backends, &proxies),
        lo,
        |a| a,
        |_| free_ports(),
        |p| SocketAddr::from((lo, p)),
    ));
    let out = measure(&paths, set);
    stop(proxies, backends, variants);
    out
}

/// Why the namespace group cannot run here, or None.
fn netns_unavailable() -> Option<String> {
    if std::env::var("SHOAL_MESH_NETNS").as_deref() == Ok("0") {
        return Some("SHOAL_MESH_NETNS=0".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    for tool in ["ip", "nft"] {
        if find_tool(tool).is_none() {
            return Some(format!("no `{tool}` command"));
        }
    }
    None
}

fn netns_group(set: Settings) -> Result<Vec<Summary>, String> {
    let ip = find_tool("ip").ok_or("no ip")?;
    let nft = find_tool("nft").ok_or("no nft")?;
    let scratch = Scratch::create(ip)?;
    let node_ns = Scratch::ns_file(&scratch.node)?;
    let task_ns = Scratch::ns_file(&scratch.task)?;

    let backends = runtime("mesh-backend", 1, Some(&task_ns));
    let proxies = runtime("mesh-proxy", set.proxy_workers, Some(&node_ns));
    let any = Ipv4Addr::UNSPECIFIED;
    let task_addr = |a: SocketAddr| SocketAddr::from((scratch.task_ip(), a.port()));
    let node_addr = |p: u16| SocketAddr::from((scratch.node_ip(), p));
    let pair = |b: (SocketAddr, SocketAddr)| (task_addr(b.0), task_addr(b.1));
    let direct = pair(start_backend(&backends, any));
    let kernel = pair(start_backend(&backends, any));

    scratch.program_mesh(&nft, &[(4000, kernel.0), (4001, kernel.1)])?;
    let variants = proxy_variants(set);
    let mut paths = vec![
        Path {
            name: "netns direct (node -> task)".into(),
            sink: direct.0,
            echo: direct.1,
        },
        Path {
            name: "netns kernel (nft DNAT)".into(),
            sink: node_addr(4000),
            echo: node_addr(4001),
        },
    ];
    paths.extend(userspace_paths(
        "netns",
        &variants,
        (&backends, &proxies),
        any,
        task_addr,
        |i| (5000 + 2 * i as u16, 5001 + 2 * i as u16),
        node_addr,
    ));
    let out = in_netns(Some(node_ns.as_ref()), || measure(&paths, set));
    stop(proxies, backends, variants);
    drop(scratch);
    Ok(out)
}

// ---------------------------------------------------------------- report

fn print_group(title: &str, rows: &[Summary]) {
    let Some(direct) = rows.first() else {
        return;
    };
    println!("\n{title}");
    println!(
        "{:<34} {:>7} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>6} {:>6}",
        "path",
        "MB/s",
        "ratio",
        "p50 µs",
        "p99 µs",
        "+p50 µs",
        "+p99 µs",
        "conn/s",
        "ratio",
        "proxy"
    );
    for r in rows {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{:<34} {:>7.0} {:>5.0}% {:>7.1} {:>7.1} {:>8.1} {:>8.1} {:>8.0} {:>5.0}% {:>5.0}%",
            r.name,
            r.mbps,
            100.0 * r.mbps / direct.mbps,
            us(r.p50),
            us(r.p99),
            us(r.p50) - us(direct.p50),
            us(r.p99) - us(direct.p99),
            r.conns,
            100.0 * r.conns / direct.conns,
            100.0 * r.proxy_cpu,
        );
        for e in &r.errors {
            println!("    error: {e}");
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a test run (`cargo test --benches`) does not: stay quick.
    let benching = std::env::args().any(|a| a == "--bench");
    let mut set = Settings::from_env();
    if !benching {
        set = Settings {
            rounds: 1,
            bulk: Duration::from_millis(100),
            pings: 200,
            conn_time: Duration::from_millis(50),
            conn_max: 200,
            ..set
        };
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "routing mesh benchmark: {cores} cores, load average {}; {} rounds, bulk {} ms, {} pings, \
         connections {} ms per round and path; proxy runtime {} workers, pipe size {}",
        loadavg(),
        set.rounds,
        set.bulk.as_millis(),
        set.pings,
        set.conn_time.as_millis(),
        set.proxy_workers,
        if set.pipe_size == 0 {
            "default".to_string()
        } else {
            set.pipe_size.to_string()
        },
    );
    let started = Instant::now();
    print_group(
        "loopback (backend, proxy and client in one namespace)",
        &loopback_group(set),
    );
    let netns = if benching {
        netns_unavailable()
    } else {
        // A quick test run leaves the host's namespaces alone (other tests count them).
        Some("not a benchmark run (cargo bench)".to_string())
    };
    match netns {
        Some(why) => println!("\nnetns group skipped: {why}"),
        None => match netns_group(set) {
            Ok(rows) => print_group(
                "netns (client in the node namespace, backend in the task namespace, one veth)",
                &rows,
            ),
            Err(e) => println!("\nnetns group failed: {e}"),
        },
    }
    println!(
        "\nproxy: the share of one core the userspace proxy's threads used during the throughput runs"
    );
    println!(
        "goals: throughput >= 90% of direct (kernel), >= 70% (userspace); added p99 < 50 µs; \
         total {:.0} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}
