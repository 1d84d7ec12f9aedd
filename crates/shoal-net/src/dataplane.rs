//! The node's data plane as the worker drives it ([`shoal_agent::network::TaskNetwork`]):
//! [`DataPlane`] keeps the kernel state, the routing mesh and the embedded DNS in line with the
//! node's [`NetworkMap`] and gives each task with attachments its network.
//!
//! ```text
//!  update(map) ─► overlays: ensure each of the map (changed ones), remove the others
//!              ─► routing mesh: kernel → `ip shoal` table of the node (only when it changed)
//!                               userspace → proxy listeners per published port
//!              ─► each attached task: its `ip shoal` table (VIPs), when it changed
//!              ─► DNS: the new map
//!  attach(task) ─► wait (bounded) until the map has every network of the task
//!               ─► namespace + veths ─► DNS sockets in it ─► VIP rules ─► /etc files
//!  detach(task) ─► DNS sockets closed ─► namespace and veths removed
//! ```
//!
//! In the userspace mode the kernel still builds overlays and namespaces (links, addresses,
//! routes) but no nftables rules: published ports are served by [`Proxy`], and services in VIP
//! mode resolve to their tasks' addresses (as `dnsrr`), since a VIP needs NAT.

use crate::dns::{self, DnsConfig, DnsServer};
use crate::kernel::{self, Kernel, KernelError};
use crate::proxy::Proxy;
use shoal_agent::network::{Attached, TaskNetwork};
use shoal_agent::runtime::MountedFile;
use shoal_api::netmap::{
    EndpointMode, NetworkMap, OverlayPlan, Protocol, PublishMode, TaskAttachment,
};
use shoal_api::Task;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};

/// How long `attach` waits for the map to carry a task's networks (the node's address on a
/// network is allocated just after the task is assigned).
const ATTACH_WAIT: Duration = Duration::from_secs(15);

/// How the routing mesh and VIPs are implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datapath {
    /// nftables NAT in the node's and the tasks' namespaces.
    Kernel,
    /// A proxy in the daemon for published ports; VIP names resolve to the tasks.
    Userspace,
}

impl Datapath {
    pub fn as_str(self) -> &'static str {
        match self {
            Datapath::Kernel => "kernel",
            Datapath::Userspace => "userspace",
        }
    }

    /// The best datapath this node can run: the kernel one when `nft` can program NAT here
    /// (checked with a dry run of a NAT table), else userspace.
    pub async fn probe() -> Datapath {
        let check = "table ip shoal_probe {\n chain c {\n  type nat hook prerouting priority dstnat;\n  tcp dport 1 dnat to numgen inc mod 1 map { 0 : 127.0.0.1 }\n }\n}\n";
        let ok = async {
            let mut child = tokio::process::Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take()?;
            stdin.write_all(check.as_bytes()).await.ok()?;
            drop(stdin);
            child.wait().await.ok().map(|s| s.success())
        }
        .await;
        if ok == Some(true) {
            Datapath::Kernel
        } else {
            Datapath::Userspace
        }
    }
}

/// Whether this process may build a data plane at all (namespaces, links): it runs as root.
pub fn supported() -> bool {
    nix::unistd::geteuid().is_root() && std::path::Path::new("/proc/self/ns/net").exists()
}

/// An error of the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
}

#[derive(Default)]
struct State {
    /// The overlays as last ensured, by VNI.
    overlays: BTreeMap<u32, OverlayPlan>,
    /// The node's ruleset as last applied (kernel datapath).
    node_rules: Option<String>,
    /// The published ports the proxy serves (userspace datapath).
    proxied: BTreeMap<(Protocol, u16), Vec<SocketAddr>>,
    /// Attached tasks.
    tasks: HashMap<String, AttachedTask>,
}

struct AttachedTask {
    netns: PathBuf,
    attachments: Vec<TaskAttachment>,
    rules: Option<String>,
}

/// One node's data plane.
pub struct DataPlane {
    datapath: Datapath,
    node_id: String,
    kernel: Kernel,
    dns: DnsServer,
    proxy: Proxy,
    map_tx: watch::Sender<Arc<NetworkMap>>,
    state: Mutex<State>,
}

impl DataPlane {
    /// The data plane of the node `node_id`, in the daemon's network namespace. Call inside a
    /// tokio runtime.
    pub fn new(node_id: &str, datapath: Datapath) -> Result<Self, DataPlaneError> {
        let (map_tx, _) = watch::channel(Arc::new(NetworkMap::default()));
        Ok(DataPlane {
            datapath,
            node_id: node_id.to_string(),
            kernel: Kernel::new()?,
            dns: DnsServer::new(DnsConfig::from_node())?,
            proxy: Proxy::new(),
            map_tx,
            state: Mutex::new(State::default()),
        })
    }

    pub fn datapath(&self) -> Datapath {
        self.datapath
    }

    /// The map as the DNS answers from it: in the userspace datapath VIP names resolve to the
    /// tasks (no NAT serves the VIPs).
    fn dns_view(&self, map: &Arc<NetworkMap>) -> Arc<NetworkMap> {
        if self.datapath == Datapath::Kernel {
            return Arc::clone(map);
        }
        let mut m = (**map).clone();
        for s in &mut m.services {
            s.endpoint_mode = EndpointMode::Dnsrr;
        }
        Arc::new(m)
    }

    /// Makes each overlay of `plans` exist as planned (only those that changed since they were
    /// last made), recording them in `st`.
    async fn ensure_overlays(
        &self,
        st: &mut State,
        plans: &[&OverlayPlan],
        map: &NetworkMap,
    ) -> Result<(), KernelError> {
        let underlay: Ipv4Addr = map.underlay.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
        for &plan in plans {
            if st.overlays.get(&plan.vni) != Some(plan) {
                self.kernel
                    .ensure_overlay(plan, underlay, map.data_path_port)
                    .await?;
                st.overlays.insert(plan.vni, plan.clone());
            }
        }
        Ok(())
    }

    async fn apply(&self, map: &NetworkMap) -> Result<(), DataPlaneError> {
        let mut st = self.state.lock().await;
        // Overlays.
        let wanted: BTreeMap<u32, &OverlayPlan> = map.networks.iter().map(|n| (n.vni, n)).collect();
        let plans: Vec<&OverlayPlan> = wanted.values().copied().collect();
        self.ensure_overlays(&mut st, &plans, map).await?;
        let in_use: HashSet<&str> = st
            .tasks
            .values()
            .flat_map(|t| t.attachments.iter().map(|a| a.network_id.as_str()))
            .collect();
        let mut stale: Vec<u32> = self
            .kernel
            .overlays()
            .await?
            .into_iter()
            .filter(|v| !wanted.contains_key(v))
            .collect();
        stale.retain(|v| {
            st.overlays
                .get(v)
                .is_none_or(|p| !in_use.contains(p.id.as_str()))
        });
        for vni in stale {
            self.kernel.remove_overlay(vni).await?;
            st.overlays.remove(&vni);
        }
        // The routing mesh.
        match self.datapath {
            Datapath::Kernel => {
                let rules = kernel::node_rules(map, &self.node_id);
                if st.node_rules.as_ref() != Some(&rules) {
                    self.kernel.apply_rules(None, &rules).await?;
                    st.node_rules = Some(rules);
                    // UDP flows DNATed to a task that is gone would go on to it.
                    if let Err(e) = self.kernel.flush_stale_udp(None, map).await {
                        tracing::debug!(error = %e, "forgetting stale UDP flows failed");
                    }
                }
            }
            Datapath::Userspace => {
                let want = proxied_ports(map, &self.node_id);
                for (key, backends) in &want {
                    if st.proxied.get(key) != Some(backends) {
                        if let Err(e) = self.proxy.set_port(key.0, key.1, backends.clone()).await {
                            tracing::warn!(port = key.1, error = %e, "publishing a port failed");
                            continue;
                        }
                        st.proxied.insert(*key, backends.clone());
                    }
                }
                let gone: Vec<(Protocol, u16)> = st
                    .proxied
                    .keys()
                    .filter(|k| !want.contains_key(k))
                    .copied()
                    .collect();
                for key in gone {
                    self.proxy.remove_port(key.0, key.1).await;
                    st.proxied.remove(&key);
                }
            }
        }
        // The tasks' VIP rules.
        if self.datapath == Datapath::Kernel {
            for (id, t) in st.tasks.iter_mut() {
                let rules = kernel::task_rules(map, &t.attachments);
                if t.rules.as_ref() != Some(&rules) {
                    match self.kernel.apply_rules(Some(&t.netns), &rules).await {
                        Ok(()) => {
                            t.rules = Some(rules);
                            let _ = self.kernel.flush_stale_udp(Some(&t.netns), map).await;
                        }
                        Err(e) => tracing::warn!(task = %id, error = %e, "task rules not applied"),
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits until the map carries every network of `task` and returns it.
    async fn map_with(&self, task: &Task) -> Result<Arc<NetworkMap>, String> {
        let mut rx = self.map_tx.subscribe();
        let has_all = |m: &NetworkMap| {
            task.networks
                .iter()
                .all(|a| m.network(&a.network_id).is_some())
        };
        let res = tokio::time::timeout(ATTACH_WAIT, rx.wait_for(|m| has_all(m))).await;
        match res {
            Ok(Ok(m)) => Ok(Arc::clone(&m)),
            _ => {
                let m = self.map_tx.borrow().clone();
                let missing: Vec<&str> = task
                    .networks
                    .iter()
                    .filter(|a| m.network(&a.network_id).is_none())
                    .map(|a| a.network_id.as_str())
                    .collect();
                Err(format!(
                    "network {} is not ready on this node",
                    missing.join(", ")
                ))
            }
        }
    }

    async fn attach_task(&self, task: &Task, hostname: &str) -> Result<Attached, String> {
        let map = self.map_with(task).await?;
        let mut pairs = Vec::with_capacity(task.networks.len());
        for a in &task.networks {
            let plan = map
                .network(&a.network_id)
                .ok_or_else(|| format!("network {} is not ready on this node", a.network_id))?;
            pairs.push((plan.clone(), a.clone()));
        }
        let mut st = self.state.lock().await;
        // The overlays may be newer than the last update applied.
        let plans: Vec<&OverlayPlan> = pairs.iter().map(|(plan, _)| plan).collect();
        self.ensure_overlays(&mut st, &plans, &map)
            .await
            .map_err(|e| e.to_string())?;
        let netns = self
            .kernel
            .ensure_task(&task.id, &pairs)
            .await
            .map_err(|e| e.to_string())?;
        // A task may reuse the address (and so the MAC) of a task that ran on another node:
        // bridges and VXLAN devices that learned the MAC there would send its frames away.
        // One ARP broadcast from each interface teaches every node where it is now.
        let gateways: Vec<(Ipv4Addr, Ipv4Addr)> = pairs
            .iter()
            .filter_map(|(plan, a)| Some((a.ip().parse().ok()?, bare(&plan.node_address)?)))
            .collect();
        if let Err(e) = announce(&netns, gateways) {
            tracing::debug!(task = %task.id, error = %e, "announcing the task's addresses failed");
        }
        let dns_addr = SocketAddr::V4(SocketAddrV4::new(dns::EMBEDDED_DNS_ADDR, 53));
        let (udp, tcp) = dns::bind_in_netns(&netns, dns_addr)
            .map_err(|e| format!("starting the task's DNS server: {e}"))?;
        // Names resolve on the task's own networks; ingress only carries the routing mesh
        // (Docker's ingress has no service discovery either).
        let networks: Vec<String> = pairs
            .iter()
            .filter(|(plan, _)| !plan.ingress)
            .map(|(_, a)| a.network_id.clone())
            .collect();
        self.dns
            .add_task(&task.id, networks, udp, tcp)
            .map_err(|e| e.to_string())?;
        let mut rules = None;
        if self.datapath == Datapath::Kernel {
            let r = kernel::task_rules(&map, &task.networks);
            self.kernel
                .apply_rules(Some(&netns), &r)
                .await
                .map_err(|e| e.to_string())?;
            rules = Some(r);
        }
        st.tasks.insert(
            task.id.clone(),
            AttachedTask {
                netns: netns.clone(),
                attachments: task.networks.clone(),
                rules,
            },
        );
        let search = dns::node_resolv_conf().search;
        Ok(Attached {
            netns,
            files: vec![
                file("/etc/hostname", format!("{hostname}\n")),
                file("/etc/hosts", dns::hosts_file(hostname, &task.networks)),
                file("/etc/resolv.conf", dns::resolv_conf(&search)),
            ],
        })
    }

    /// Removes everything the data plane made on this node (`swarm leave`).
    pub async fn remove_all(&self) {
        let mut st = self.state.lock().await;
        for id in st.tasks.keys() {
            self.dns.remove_task(id);
        }
        st.tasks.clear();
        self.proxy.shutdown().await;
        st.proxied.clear();
        if let Err(e) = self.kernel.cleanup_all().await {
            tracing::warn!(error = %e, "removing the data plane failed");
        }
        st.overlays.clear();
        st.node_rules = None;
    }
}

fn bare(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next()?.parse().ok()
}

/// From inside the task's namespace, sends one datagram from each of its addresses to the
/// node's address on that network: the fresh namespace has no neighbour entries, so the kernel
/// broadcasts an ARP request from the task's MAC first, which every bridge and VXLAN device on
/// the overlay learns from (the local bridge: this veth; the other nodes: this node).
fn announce(netns: &std::path::Path, pairs: Vec<(Ipv4Addr, Ipv4Addr)>) -> std::io::Result<()> {
    let ns = std::fs::File::open(netns)?;
    std::thread::Builder::new()
        .name("shoal-announce".into())
        .spawn(move || -> std::io::Result<()> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            for (from, to) in pairs {
                let s = std::net::UdpSocket::bind(SocketAddrV4::new(from, 0))?;
                // The discard port: nothing answers, the ARP exchange is what counts.
                let _ = s.send_to(&[0], SocketAddrV4::new(to, 9));
            }
            Ok(())
        })?
        .join()
        .map_err(|_| std::io::Error::other("the announcing thread panicked"))?
}

fn file(target: &str, data: String) -> MountedFile {
    MountedFile {
        target: target.to_string(),
        data: data.into_bytes(),
        uid: 0,
        gid: 0,
        mode: 0o644,
    }
}

/// The ports the userspace proxy serves and where to: ingress ports to every backend's ingress
/// address, host ports to this node's own backends.
fn proxied_ports(map: &NetworkMap, node_id: &str) -> BTreeMap<(Protocol, u16), Vec<SocketAddr>> {
    let mut out = BTreeMap::new();
    for svc in &map.services {
        for p in &svc.ports {
            let backends: Vec<SocketAddr> = map
                .port_targets(svc, p.mode, node_id)
                .into_iter()
                .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
                .map(|ip| SocketAddr::V4(SocketAddrV4::new(ip, p.target)))
                .collect();
            if p.mode == PublishMode::Host && backends.is_empty() {
                continue;
            }
            out.insert((p.protocol, p.published), backends);
        }
    }
    out
}

#[async_trait::async_trait]
impl TaskNetwork for DataPlane {
    async fn update(&self, map: &NetworkMap) {
        let map = Arc::new(map.clone());
        self.dns.set_map(self.dns_view(&map));
        if let Err(e) = self.apply(&map).await {
            tracing::warn!(error = %e, "applying the network map failed");
        }
        self.map_tx.send_replace(map);
    }

    async fn attach(&self, task: &Task, hostname: &str) -> Result<Option<Attached>, String> {
        if task.networks.is_empty() {
            return Ok(None);
        }
        match self.attach_task(task, hostname).await {
            Ok(a) => Ok(Some(a)),
            Err(e) => {
                self.detach(&task.id).await;
                Err(e)
            }
        }
    }

    async fn detach(&self, task_id: &str) {
        let mut st = self.state.lock().await;
        self.dns.remove_task(task_id);
        st.tasks.remove(task_id);
        if let Err(e) = self.kernel.remove_task(task_id).await {
            tracing::warn!(task = %task_id, error = %e, "removing the task's network failed");
        }
    }

    async fn retain(&self, keep: &HashSet<String>) {
        let prefixes: HashSet<&str> = keep.iter().map(|id| kernel::task_prefix(id)).collect();
        let found = match self.kernel.tasks().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "listing task namespaces failed");
                return;
            }
        };
        for prefix in found {
            if !prefixes.contains(prefix.as_str()) {
                tracing::info!(task = %prefix, "removing the network of a task no longer assigned");
                if let Err(e) = self.kernel.remove_task(&prefix).await {
                    tracing::warn!(task = %prefix, error = %e, "removing a leftover task network failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::netmap::{Backend, NetAddress, PortPlan, ServicePlan};

    fn map() -> NetworkMap {
        let backend = |task: &str, node: &str, ip: &str| Backend {
            task_id: task.into(),
            slot: 1,
            node_id: node.into(),
            addresses: vec![NetAddress {
                network_id: "ing".into(),
                ip: ip.into(),
            }],
        };
        NetworkMap {
            underlay: "192.168.1.1".into(),
            data_path_port: 4789,
            networks: vec![OverlayPlan {
                id: "ing".into(),
                name: "ingress".into(),
                vni: 4096,
                subnet: "10.0.0.0/24".into(),
                node_address: "10.0.0.2/24".into(),
                peers: vec![],
                ingress: true,
                internal: false,
                mtu: 1450,
            }],
            services: vec![ServicePlan {
                id: "s".into(),
                name: "web".into(),
                endpoint_mode: EndpointMode::Vip,
                vips: vec![],
                ports: vec![
                    PortPlan {
                        protocol: Protocol::Tcp,
                        target: 80,
                        published: 4000,
                        mode: PublishMode::Ingress,
                    },
                    PortPlan {
                        protocol: Protocol::Udp,
                        target: 53,
                        published: 5353,
                        mode: PublishMode::Host,
                    },
                ],
                aliases: vec![],
                backends: vec![
                    backend("t1", "n1", "10.0.0.5"),
                    backend("t2", "n2", "10.0.0.6"),
                ],
            }],
        }
    }

    #[test]
    fn the_proxy_serves_ingress_ports_everywhere_and_host_ports_locally() {
        let m = map();
        let on_n1 = proxied_ports(&m, "n1");
        assert_eq!(
            on_n1[&(Protocol::Tcp, 4000)],
            [
                "10.0.0.5:80".parse().unwrap(),
                "10.0.0.6:80".parse::<SocketAddr>().unwrap()
            ]
        );
        assert_eq!(
            on_n1[&(Protocol::Udp, 5353)],
            ["10.0.0.5:53".parse::<SocketAddr>().unwrap()]
        );
        // A node without a task of the service does not answer its host-mode port.
        let on_n3 = proxied_ports(&m, "n3");
        assert!(!on_n3.contains_key(&(Protocol::Udp, 5353)));
        assert_eq!(on_n3[&(Protocol::Tcp, 4000)].len(), 2);
    }
}
