//! The kernel data plane of one node: overlay bridges and VXLAN devices, one network namespace
//! per task, and nftables rules (the routing mesh in the node's namespace, service virtual IPs
//! in each task's namespace).
//!
//! ```text
//!   node namespace (the daemon's: a `shoal machine`'s own namespace, or the host's)
//!
//!     underlay (eth0, 192.168.x.y) ◄──── UDP 4789 ────► other nodes
//!          ▲
//!          │ VXLAN encapsulation (local = underlay, flood list = peers)
//!   ┌──────┴──────┐        ┌──────────────────────────────┐
//!   │ shx<vni>    │        │ shb<vni>  bridge             │  node_address (10.0.1.2/24),
//!   │ vxlan, mtu  ├─port──►│ mtu 1450, learning           │  the tasks' gateway; nft table
//!   │ 1450        │        │                              │  `ip shoal`: routing mesh DNAT,
//!   └─────────────┘        └──────┬───────────────┬───────┘  masquerade out of shb*
//!                                 │ port          │ port
//!                          shv<hash(task,0)>  shv<hash(task2,0)> ...  (veth host ends)
//!   ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ┼ ─ ─ ─ ─ ─ ─ ─ ┼ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─
//!   /run/netns/shtask-<12 of id>  │               │
//!     lo up                     eth0 10.0.1.5/24  eth1 (second attachment) ...
//!     default via the first non-internal overlay's node address
//!     nft table `ip shoal`: VIP ─► numgen round robin over the service's tasks
//! ```
//!
//! What is done how:
//! - netlink ([`rtnetlink`]): bridges, VXLAN devices (id, local, dstport, learning), veth pairs,
//!   controller, MTU, up, moving the peer into the task namespace and renaming it, addresses,
//!   the default route, and the VXLAN flood entries (all-zeros FDB entries, appended with
//!   `NLM_F_APPEND` as `bridge fdb append` does).
//! - `ip netns add` creates the namespace files (it sets up the shared `/run/netns` mount);
//!   removal (unmount + unlink) is done in-process.
//! - `nft -f -` applies rulesets (replacing the `ip shoal` table in one transaction), run
//!   inside the target namespace by `setns()` before exec.
//! - sysctls are written from a thread inside the node's namespace: `ip_forward`,
//!   `bridge-nf-call-iptables=0`, and `route_localnet` on each overlay bridge so that
//!   `localhost:<published>` reaches the routing mesh, made safe by the `ip shoal_guard` table
//!   (new connections from the overlays to 127.0.0.0/8 are dropped).
//! - ctnetlink (`netlink-packet-netfilter`): forgetting UDP flows DNATed to backends that are
//!   gone ([`Kernel::flush_stale_udp`]).
//!
//! How the agent drives it, on every new [`NetworkMap`]:
//! 1. [`Kernel::ensure_overlay`] for each network of the map; [`Kernel::remove_overlay`] for the
//!    VNIs of [`Kernel::overlays`] the map no longer has.
//! 2. Per task starting: [`Kernel::ensure_task`] (pairs from [`attachments_with_overlays`]),
//!    then the shim `setns()`s into the returned path; per task gone: [`Kernel::remove_task`]
//!    (after a restart, [`Kernel::tasks`] tells which namespaces are left).
//! 3. [`Kernel::apply_rules`] with [`node_rules`] (node) and [`task_rules`] (each task), then
//!    [`Kernel::flush_stale_udp`] on each. [`Kernel::rules_supported`] tells whether this path
//!    works at all (else the userspace proxy). On `swarm leave`: [`Kernel::cleanup_all`].
//!
//! Every operation applies a desired state and is idempotent; leftovers of a crash (a half-made
//! veth pair, a dead namespace file, a device with other parameters) are repaired. Task
//! namespaces carry an owner mark (the alias of their `lo`: the node namespace's identity), so
//! [`Kernel::tasks`] lists only this node's tasks even when several `shoal machine`s share one
//! `/run/netns`.

mod conntrack;
mod netns;
mod nl;
pub mod rules;

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use netlink_packet_route::link::{InfoKind, InfoVxlan};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, LinkVxlan};
use shoal_api::netmap::{NetworkMap, OverlayPlan, TaskAttachment};

pub use netns::NETNS_DIR;
pub use rules::{node_rules, task_rules};

use nl::Nl;

/// The prefix of overlay bridges (`shb<vni>`).
pub const BRIDGE_PREFIX: &str = "shb";
/// The prefix of VXLAN devices (`shx<vni>`).
pub const VXLAN_PREFIX: &str = "shx";
/// The prefix of task namespaces (`shtask-<12 chars of the task ID>`).
pub const TASK_NS_PREFIX: &str = "shtask-";
/// The prefix of the host ends of task veths.
pub const VETH_PREFIX: &str = "shv";
/// The prefix of a veth peer before it is moved into its task namespace and renamed.
const PEER_PREFIX: &str = "shp";
/// The most attachments a task can have (bounds the clean-up of host veth names).
pub const MAX_ATTACHMENTS: usize = 16;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{cmd}: {msg}")]
    Command { cmd: String, msg: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {what}: {value:?}")]
    Invalid { what: &'static str, value: String },
    #[error("overlay {0} is not set up on this node (no bridge {BRIDGE_PREFIX}{0})")]
    NoOverlay(u32),
    #[error("a task can have at most {MAX_ATTACHMENTS} network attachments")]
    TooManyAttachments,
}

/// The name of the bridge of overlay `vni`.
pub fn bridge_name(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

/// The name of the VXLAN device of overlay `vni`.
pub fn vxlan_name(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// The 12-character prefix of a task ID that names its namespace.
pub fn task_prefix(task_id: &str) -> &str {
    match task_id.char_indices().nth(12) {
        Some((i, _)) => &task_id[..i],
        None => task_id,
    }
}

/// Refuses task IDs that could not name a file (IDs are alphanumeric).
fn check_task_id(task_id: &str) -> Result<(), KernelError> {
    let p = task_prefix(task_id);
    if p.is_empty()
        || !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(KernelError::Invalid {
            what: "task ID",
            value: task_id.to_string(),
        });
    }
    Ok(())
}

/// The name of a task's namespace.
pub fn task_netns_name(task_id: &str) -> String {
    format!("{TASK_NS_PREFIX}{}", task_prefix(task_id))
}

/// The path of a task's namespace file (what the shim `setns()`s into).
pub fn task_netns_path(task_id: &str) -> PathBuf {
    netns::path_of(&task_netns_name(task_id))
}

/// 32-bit FNV-1a: stable across builds and versions, unlike std's hasher.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn veth_hash(task_id: &str, index: usize) -> u32 {
    fnv1a(format!("{}/{index}", task_prefix(task_id)).as_bytes())
}

/// The host end of a task's veth for attachment `index` (`shv` + 8 hex digits).
pub fn host_veth_name(task_id: &str, index: usize) -> String {
    format!("{VETH_PREFIX}{:08x}", veth_hash(task_id, index))
}

fn peer_veth_name(task_id: &str, index: usize) -> String {
    format!("{PEER_PREFIX}{:08x}", veth_hash(task_id, index))
}

/// The hardware address of an interface with IPv4 address `ip` on an overlay: `02:42` and the
/// address's four bytes, so a reused address keeps its MAC and the neighbour caches of the
/// other tasks and nodes stay right (as Docker does). Also the bridges' own address, which
/// then never changes as ports come and go.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Parses `a.b.c.d/len` (or a bare address, taken as /32).
fn parse_cidr(what: &'static str, s: &str) -> Result<(Ipv4Addr, u8), KernelError> {
    let bad = || KernelError::Invalid {
        what,
        value: s.to_string(),
    };
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, len.parse::<u8>().map_err(|_| bad())?),
        None => (s, 32),
    };
    if len > 32 {
        return Err(bad());
    }
    Ok((ip.parse().map_err(|_| bad())?, len))
}

/// The gateway of a task: the node address on the first attachment whose overlay is not
/// internal.
fn default_gateway(
    attachments: &[(OverlayPlan, TaskAttachment)],
) -> Result<Option<Ipv4Addr>, KernelError> {
    match attachments.iter().find(|(n, _)| !n.internal) {
        Some((n, _)) => Ok(Some(parse_cidr("node address", &n.node_address)?.0)),
        None => Ok(None),
    }
}

/// The text `nft -f` gets to replace table `ip <table>` with `ruleset` atomically (an empty
/// ruleset just deletes the table).
fn replace_table(table: &str, ruleset: &str) -> String {
    format!("table ip {table}\ndelete table ip {table}\n{ruleset}")
}

/// Replaces (or with an empty ruleset, removes) table `ip <table>` in namespace `ns` with one
/// `nft -f -` transaction. Removing succeeds when nft is not installed (nothing was applied).
async fn nft_replace(ns: &File, table: &str, ruleset: &str) -> Result<(), KernelError> {
    let script = replace_table(table, ruleset);
    match netns::run("nft", &["-f", "-"], Some(&script), Some(ns)).await {
        Err(KernelError::Io { source, .. })
            if ruleset.is_empty() && source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        r => r.map(|_| ()),
    }
}

/// Turns IPv6 off on a device (or with `all`/`default`, the namespace) when IPv6 exists.
fn disable_ipv6(dev: &str) -> Result<(), KernelError> {
    let path = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
    if Path::new(&path).exists() {
        write_sysctl(&path, "1")?;
    }
    Ok(())
}

fn write_sysctl(path: &str, value: &str) -> Result<(), KernelError> {
    std::fs::write(path, value).map_err(|source| KernelError::Io {
        what: format!("writing {path}"),
        source,
    })
}

/// Pairs a task's attachments with the overlays of the node's map, in the task's order (what
/// [`Kernel::ensure_task`] takes); fails on an attachment to a network the map lacks.
pub fn attachments_with_overlays(
    map: &NetworkMap,
    attachments: &[TaskAttachment],
) -> Result<Vec<(OverlayPlan, TaskAttachment)>, KernelError> {
    attachments
        .iter()
        .map(|a| match map.network(&a.network_id) {
            Some(n) => Ok((n.clone(), a.clone())),
            None => Err(KernelError::Invalid {
                what: "attachment (network not in the node's map)",
                value: a.network_id.clone(),
            }),
        })
        .collect()
}

/// The data plane of the node whose network namespace the daemon runs in.
pub struct Kernel {
    nl: Nl,
    /// The node's own namespace, for the threads and commands that must run there.
    own_ns: File,
    /// Marks task namespaces as this node's (the alias of their `lo`).
    owner: String,
    setup_done: AtomicBool,
    /// Whether the guard table is in place, so `route_localnet` may be turned on.
    localnet: AtomicBool,
    /// Serialises changes, so concurrent calls never race on one device.
    lock: tokio::sync::Mutex<()>,
}

impl Kernel {
    /// Connects to the kernel in the calling thread's network namespace. Must be called within
    /// a tokio runtime (the netlink connection runs as a task on it).
    pub fn new() -> Result<Kernel, KernelError> {
        let own_ns = netns::open(Path::new("/proc/thread-self/ns/net"))?;
        let meta = own_ns.metadata().map_err(|source| KernelError::Io {
            what: "reading the node's namespace".into(),
            source,
        })?;
        Ok(Kernel {
            nl: Nl::connect()?,
            owner: format!("shoal-node:{}:{}", meta.dev(), meta.ino()),
            own_ns,
            setup_done: AtomicBool::new(false),
            localnet: AtomicBool::new(false),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    fn own_ns(&self) -> Result<File, KernelError> {
        self.own_ns.try_clone().map_err(|source| KernelError::Io {
            what: "duplicating the namespace handle".into(),
            source,
        })
    }

    /// Once per node: `net.ipv4.ip_forward=1`; `net.bridge.bridge-nf-call-iptables=0` where
    /// br_netfilter exists (so bridged overlay traffic never meets another firewall's FORWARD
    /// drop, and hairpin through the routing mesh works); and the guard table (see
    /// [`rules::guard_rules`]) that makes `route_localnet` on the bridges safe.
    async fn ensure_node_setup(&self) -> Result<(), KernelError> {
        if self.setup_done.load(Ordering::Acquire) {
            return Ok(());
        }
        let guard = nft_replace(&self.own_ns()?, rules::GUARD_TABLE, &rules::guard_rules()).await;
        match guard {
            Ok(_) => self.localnet.store(true, Ordering::Release),
            Err(e) => {
                // Without nftables there is no kernel routing mesh to reach from localhost
                // anyway; the overlays still work.
                tracing::warn!("no nftables guard ({e}): localhost is kept off the overlays");
                self.localnet.store(false, Ordering::Release);
            }
        }
        netns::on_thread(self.own_ns()?, || {
            write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
            let brnf = "/proc/sys/net/bridge/bridge-nf-call-iptables";
            if Path::new(brnf).exists() {
                write_sysctl(brnf, "0")?;
            }
            Ok(())
        })
        .await?;
        self.setup_done.store(true, Ordering::Release);
        Ok(())
    }

    /// Per-device settings of an overlay: `route_localnet` on the bridge (when the guard table
    /// is in place), so `localhost:<published>` on the node reaches the routing mesh (the
    /// DNATed packets leave with a loopback source until masqueraded); IPv6 off on the bridge
    /// and the VXLAN device (overlays are IPv4: no link-local chatter over the tunnels).
    async fn set_overlay_sysctls(&self, bridge: &str, vxlan: &str) -> Result<(), KernelError> {
        let localnet = self.localnet.load(Ordering::Acquire);
        let (bridge, vxlan) = (bridge.to_string(), vxlan.to_string());
        netns::on_thread(self.own_ns()?, move || {
            if localnet {
                write_sysctl(
                    &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
                    "1",
                )?;
            }
            for dev in [&bridge, &vxlan] {
                disable_ipv6(dev)?;
            }
            Ok(())
        })
        .await
    }

    /// Makes overlay `net` exist on this node: bridge `shb<vni>` (MTU, `node_address`, up),
    /// VXLAN device `shx<vni>` (VNI, local `underlay`, UDP `port`, learning) enslaved to it,
    /// and flood entries for exactly `net.peers`.
    pub async fn ensure_overlay(
        &self,
        net: &OverlayPlan,
        underlay: Ipv4Addr,
        port: u16,
    ) -> Result<(), KernelError> {
        let _g = self.lock.lock().await;
        self.ensure_node_setup().await?;
        let (addr, prefix) = parse_cidr("node address", &net.node_address)?;
        let mut peers = Vec::new();
        for p in &net.peers {
            let ip: Ipv4Addr = p.parse().map_err(|_| KernelError::Invalid {
                what: "peer address",
                value: p.clone(),
            })?;
            if ip != underlay && !peers.contains(&ip) {
                peers.push(ip);
            }
        }
        let nl = &self.nl;

        // The bridge.
        let br_name = bridge_name(net.vni);
        let br = match nl.link(&br_name).await? {
            Some(l) if l.kind == Some(InfoKind::Bridge) => l,
            other => {
                if let Some(l) = other {
                    nl.del_link(l.index, &br_name).await?;
                }
                let msg = LinkBridge::new(&br_name)
                    .mtu(net.mtu)
                    .address(mac_for(addr).to_vec())
                    .build();
                nl.add_link(msg, &br_name).await?;
                nl.link(&br_name)
                    .await?
                    .ok_or(KernelError::NoOverlay(net.vni))?
            }
        };
        let br = nl.set_mac(br, mac_for(addr)).await?;
        nl.conform(&br, net.mtu, None).await?;
        nl.set_only_addr(&br, addr, prefix).await?;

        // The VXLAN device.
        let vx_name = vxlan_name(net.vni);
        let matches = |l: &nl::Link| {
            l.kind == Some(InfoKind::Vxlan)
                && l.vxlan.contains(&InfoVxlan::Id(net.vni))
                && l.vxlan.contains(&InfoVxlan::Local(underlay))
                && l.vxlan.contains(&InfoVxlan::Port(port))
        };
        let vx = match nl.link(&vx_name).await? {
            Some(l) if matches(&l) => l,
            other => {
                if let Some(l) = other {
                    nl.del_link(l.index, &vx_name).await?;
                }
                let msg = LinkVxlan::new(&vx_name, net.vni)
                    .local(underlay)
                    .port(port)
                    .learning(true)
                    .mtu(net.mtu)
                    .controller(br.index)
                    .up()
                    .build();
                nl.add_link(msg, &vx_name).await?;
                nl.link(&vx_name)
                    .await?
                    .ok_or(KernelError::NoOverlay(net.vni))?
            }
        };
        nl.conform(&vx, net.mtu, Some(br.index)).await?;
        self.set_overlay_sysctls(&br_name, &vx_name).await?;

        // Flood entries: exactly the peers.
        let have = nl.flood_entries(vx.index).await?;
        for ip in &have {
            if !peers.contains(ip) {
                nl.del_flood(vx.index, *ip).await?;
            }
        }
        for ip in &peers {
            if !have.contains(ip) {
                nl.add_flood(vx.index, *ip).await?;
            }
        }
        Ok(())
    }

    /// Removes overlay `vni` (its VXLAN device and bridge); missing parts are fine.
    pub async fn remove_overlay(&self, vni: u32) -> Result<(), KernelError> {
        let _g = self.lock.lock().await;
        self.nl.del_link_named(&vxlan_name(vni)).await?;
        self.nl.del_link_named(&bridge_name(vni)).await
    }

    /// The VNIs of the overlays present on this node (by device name), sorted.
    pub async fn overlays(&self) -> Result<Vec<u32>, KernelError> {
        let mut out: Vec<u32> = self
            .nl
            .links()
            .await?
            .iter()
            .filter_map(|l| {
                l.name
                    .strip_prefix(BRIDGE_PREFIX)
                    .or_else(|| l.name.strip_prefix(VXLAN_PREFIX))
                    .and_then(|v| v.parse().ok())
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Makes task `task_id`'s namespace (`/run/netns/shtask-<12 of id>`) exist with `lo` up and
    /// one interface per attachment (`eth0`, `eth1`, ... in order: a veth whose host end is on
    /// the overlay's bridge), each with its address and the overlay's MTU, and the default route
    /// via the node address of the first non-internal overlay. Each overlay must have been set
    /// up with [`Kernel::ensure_overlay`]. Returns the namespace's path.
    pub async fn ensure_task(
        &self,
        task_id: &str,
        attachments: &[(OverlayPlan, TaskAttachment)],
    ) -> Result<PathBuf, KernelError> {
        check_task_id(task_id)?;
        if attachments.len() > MAX_ATTACHMENTS {
            return Err(KernelError::TooManyAttachments);
        }
        let _g = self.lock.lock().await;
        let nl = &self.nl;
        let task = task_prefix(task_id).to_string();
        let gateway = default_gateway(attachments)?;
        let mut wanted = Vec::new();
        for (net, att) in attachments {
            let (ip, prefix) = parse_cidr("task address", &att.address)?;
            let br = nl
                .link(&bridge_name(net.vni))
                .await?
                .ok_or(KernelError::NoOverlay(net.vni))?;
            wanted.push((br.index, net.mtu, ip, prefix));
        }
        let n = wanted.len();

        let path = netns::create(&task_netns_name(&task)).await?;

        // Which host ends exist (by attachment index).
        let mut host = Vec::with_capacity(n);
        for i in 0..n {
            host.push(nl.link(&host_veth_name(&task, i)).await?);
        }

        // In the task namespace: owner mark and lo up; drop interfaces whose host end is gone,
        // extra interfaces, and half-moved peers; report which ethN remain.
        let host_present: Vec<bool> = host.iter().map(|h| h.is_some()).collect();
        let owner = self.owner.clone();
        let eth_present: Vec<bool> =
            netns::with_netlink(netns::open(&path)?, move |tnl| async move {
                // The overlays are IPv4 (as Docker's are by default): no IPv6 on the task's
                // interfaces moved in from now on; `lo` keeps `::1`.
                disable_ipv6("default")?;
                let links = tnl.links().await?;
                if let Some(lo) = links.iter().find(|l| l.name == "lo") {
                    if !lo.up || lo.alias.as_deref() != Some(owner.as_str()) {
                        let msg = LinkUnspec::new_with_index(lo.index)
                            .alias(owner)
                            .up()
                            .build();
                        tnl.set_link(msg, "lo").await?;
                    }
                }
                let mut present = vec![false; n];
                for l in &links {
                    let idx = l
                        .name
                        .strip_prefix("eth")
                        .and_then(|s| s.parse::<usize>().ok());
                    match idx {
                        Some(i) if i < n && host_present[i] => present[i] = true,
                        Some(_) => tnl.del_link(l.index, &l.name).await?,
                        None if l.name.starts_with(PEER_PREFIX) => {
                            tnl.del_link(l.index, &l.name).await?
                        }
                        None => {}
                    }
                }
                Ok(present)
            })
            .await?;

        // In the node namespace: (re)make the missing pairs, move the peers in.
        let ns_file = netns::open(&path)?;
        for (i, &(br, mtu, _, _)) in wanted.iter().enumerate() {
            let name = host_veth_name(&task, i);
            let peer = peer_veth_name(&task, i);
            let mut link = host[i].take();
            if link.is_some() && !eth_present[i] {
                if let Some(l) = link.take() {
                    nl.del_link(l.index, &name).await?;
                }
            }
            if link.is_none() {
                // A peer left in the node namespace by a crash goes with its pair.
                nl.del_link_named(&peer).await?;
                nl.add_link(LinkVeth::new(&name, &peer).mtu(mtu).build(), &name)
                    .await?;
                let p = nl.link(&peer).await?.ok_or_else(|| KernelError::Invalid {
                    what: "veth peer (vanished)",
                    value: peer.clone(),
                })?;
                let msg = LinkUnspec::new_with_index(p.index)
                    .setns_by_fd(ns_file.as_raw_fd())
                    .build();
                nl.set_link(msg, &peer).await?;
                link = nl.link(&name).await?;
            }
            let l = link.ok_or_else(|| KernelError::Invalid {
                what: "veth (vanished)",
                value: name.clone(),
            })?;
            nl.conform(&l, mtu, Some(br)).await?;
        }

        // In the task namespace: rename the new peers, MTU, address, up, default route.
        let peers: Vec<String> = (0..n).map(|i| peer_veth_name(&task, i)).collect();
        netns::with_netlink(ns_file, move |tnl| async move {
            for (i, (_, mtu, ip, prefix)) in wanted.into_iter().enumerate() {
                let eth = format!("eth{i}");
                let link = match tnl.link(&eth).await? {
                    Some(l) => l,
                    None => {
                        let p = tnl
                            .link(&peers[i])
                            .await?
                            .ok_or_else(|| KernelError::Invalid {
                                what: "veth peer (not in the task namespace)",
                                value: peers[i].clone(),
                            })?;
                        let msg = LinkUnspec::new_with_index(p.index)
                            .name(eth.clone())
                            .build();
                        tnl.set_link(msg, &eth).await?;
                        tnl.link(&eth).await?.ok_or_else(|| KernelError::Invalid {
                            what: "renamed veth (vanished)",
                            value: eth.clone(),
                        })?
                    }
                };
                let link = tnl.set_mac(link, mac_for(ip)).await?;
                tnl.conform(&link, mtu, None).await?;
                tnl.set_only_addr(&link, ip, prefix).await?;
            }
            tnl.set_default_route(gateway).await
        })
        .await?;
        Ok(path)
    }

    /// Removes task `task_id`'s interfaces and namespace; missing parts are fine. The task's
    /// processes must be gone (a process still inside keeps the namespace alive).
    pub async fn remove_task(&self, task_id: &str) -> Result<(), KernelError> {
        check_task_id(task_id)?;
        let _g = self.lock.lock().await;
        let task = task_prefix(task_id).to_string();
        let name = task_netns_name(&task);
        let path = netns::path_of(&name);
        if netns::is_netns(&path) {
            netns::with_netlink(netns::open(&path)?, |tnl| async move {
                for l in tnl.links().await? {
                    if l.name.starts_with("eth") || l.name.starts_with(PEER_PREFIX) {
                        tnl.del_link(l.index, &l.name).await?;
                    }
                }
                Ok(())
            })
            .await?;
        }
        let names: Vec<String> = (0..MAX_ATTACHMENTS)
            .flat_map(|i| [host_veth_name(&task, i), peer_veth_name(&task, i)])
            .collect();
        for l in self.nl.links().await? {
            if names.contains(&l.name) {
                self.nl.del_link(l.index, &l.name).await?;
            }
        }
        netns::remove(&name);
        Ok(())
    }

    /// The tasks (12-character ID prefixes) whose namespaces this node made, sorted.
    ///
    /// A namespace file that is not a live namespace here is never listed: a daemon started
    /// with `ip netns exec` (a `shoal machine`) mounts its namespaces in a mount namespace of
    /// its own, so another node's live namespaces look like empty files from here. (A dead file
    /// of this node's own, left by a crash, is replaced when the task is ensured again.)
    pub async fn tasks(&self) -> Result<Vec<String>, KernelError> {
        let mut out = Vec::new();
        for name in netns::list(TASK_NS_PREFIX) {
            let path = netns::path_of(&name);
            let Some(task) = name.strip_prefix(TASK_NS_PREFIX) else {
                continue;
            };
            if !netns::is_netns(&path) {
                continue;
            }
            let Ok(f) = File::open(&path) else {
                continue;
            };
            let alias = netns::with_netlink(f, |tnl| async move {
                Ok(tnl.link("lo").await?.and_then(|l| l.alias))
            })
            .await?;
            if alias.as_deref() == Some(self.owner.as_str()) {
                out.push(task.to_string());
            }
        }
        Ok(out)
    }

    /// Replaces the `ip shoal` table of a namespace (the task namespace at `netns`, or the
    /// node's own) with `ruleset` (as made by [`node_rules`] or [`task_rules`]) in one `nft`
    /// transaction; an empty ruleset removes the table.
    pub async fn apply_rules(
        &self,
        netns: Option<&Path>,
        ruleset: &str,
    ) -> Result<(), KernelError> {
        let ns = match netns {
            Some(p) => netns::open(p)?,
            None => self.own_ns()?,
        };
        nft_replace(&ns, rules::TABLE, ruleset).await
    }

    /// Forgets the UDP flows of a namespace (the task namespace at `netns`, or the node's own)
    /// that were DNATed to an overlay address that is no longer a backend of any service in
    /// `map`, so their next datagrams are balanced over the current backends instead of going
    /// to a task that is gone. Call it after applying the rules of a changed map. Returns how
    /// many flows were forgotten.
    pub async fn flush_stale_udp(
        &self,
        netns: Option<&Path>,
        map: &NetworkMap,
    ) -> Result<usize, KernelError> {
        let ns = match netns {
            Some(p) => netns::open(p)?,
            None => self.own_ns()?,
        };
        let mut keep: Vec<Ipv4Addr> = Vec::new();
        for svc in &map.services {
            for b in &svc.backends {
                keep.extend(
                    b.addresses
                        .iter()
                        .filter_map(|a| a.ip.parse::<Ipv4Addr>().ok()),
                );
            }
        }
        let mut subnets = Vec::new();
        for n in &map.networks {
            subnets.push(parse_cidr("subnet", &n.subnet)?);
        }
        netns::on_thread(ns, move || conntrack::flush_stale_udp(&keep, &subnets)).await
    }

    /// Whether the kernel path of the routing mesh can work here: `nft` is installed and the
    /// kernel takes a NAT chain with the expressions the rules use (checked with `nft -c`,
    /// which changes nothing). The agent uses the userspace proxy when it cannot.
    pub async fn rules_supported(&self) -> bool {
        let probe = "table ip shoal_probe {\n\
                     \tchain c {\n\
                     \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
                     \t\tfib daddr type local tcp dport 9 dnat to numgen inc mod 2 map { 0 : 10.0.0.1 . 9, 1 : 10.0.0.2 . 9 }\n\
                     \t}\n\
                     }\n";
        let Ok(ns) = self.own_ns() else {
            return false;
        };
        netns::run("nft", &["-c", "-f", "-"], Some(probe), Some(&ns))
            .await
            .is_ok()
    }

    /// Deletes the `ip shoal` table of a namespace (as [`Kernel::apply_rules`] picks it), if
    /// any (without nft installed there is none: a no-op).
    pub async fn remove_rules(&self, netns: Option<&Path>) -> Result<(), KernelError> {
        self.apply_rules(netns, "").await
    }

    /// Removes everything this node made: its task namespaces, every overlay, the node's
    /// `ip shoal` and guard tables (for `swarm leave` and shutdown without tasks).
    pub async fn cleanup_all(&self) -> Result<(), KernelError> {
        for t in self.tasks().await? {
            self.remove_task(&t).await?;
        }
        for vni in self.overlays().await? {
            self.remove_overlay(vni).await?;
        }
        self.remove_rules(None).await?;
        nft_replace(&self.own_ns()?, rules::GUARD_TABLE, "").await?;
        self.setup_done.store(false, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
