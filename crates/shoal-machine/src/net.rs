//! Network plumbing of machines. The machines of one bridge hang off a "switch": a network
//! namespace of its own (`shoal-sw-BRIDGE`) holding the bridge, with bridge netfilter turned off
//! inside it. Bridged traffic between machines thus never meets the host's firewall (a Docker
//! engine leaves an `ip filter` FORWARD chain with policy drop, and the host's
//! `net.bridge.bridge-nf-call-iptables=1` would send bridged frames through it). The host keeps
//! its reachability to the machines through one veth pair whose host end is named as the bridge
//! and carries the gateway address.
//!
//! ```text
//!  host:            BRIDGE (gateway .1) ═╗
//!  shoal-sw-BRIDGE:       host ── br0 ── shmXXXXXXXX ─┐     (bridge-nf-call-*=0)
//!  shoal-NAME:                                  eth0 ═┘     (.2, .3, ...; ip_forward=1)
//! ```
//!
//! Every `ensure_*` step makes only what is missing, so `start` rebuilds after a host reboot.

use crate::host::Host;
use crate::model::{Record, SWITCH_BRIDGE, SWITCH_UPLINK};
use crate::MachineError;

/// Bridge netfilter off (`-e`: keys this kernel lacks are skipped).
const NO_BRIDGE_NF: [&str; 3] = [
    "net.bridge.bridge-nf-call-iptables=0",
    "net.bridge.bridge-nf-call-ip6tables=0",
    "net.bridge.bridge-nf-call-arptables=0",
];

fn sysctl(h: &dyn Host, netns: &str, settings: &[&str]) -> Result<(), MachineError> {
    let mut args = vec!["netns", "exec", netns, "sysctl", "-qew"];
    args.extend_from_slice(settings);
    h.ip(&args)
}

/// Whether `bridge` on the host is something else than a switch's host link: a host interface
/// of that name without its switch namespace is not ours.
pub fn foreign_bridge(h: &dyn Host, bridge: &str) -> bool {
    h.link_exists(None, bridge) && !h.netns_exists(&crate::model::switch_netns_name(bridge))
}

/// The switch namespace, its bridge, and the host link with the gateway address.
pub fn ensure_switch(h: &dyn Host, rec: &Record) -> Result<(), MachineError> {
    let sw = rec.switch();
    let bridge = rec.bridge.as_str();
    if foreign_bridge(h, bridge) {
        return Err(MachineError::ForeignBridge(bridge.to_string()));
    }
    if !h.netns_exists(&sw) {
        h.ip(&["netns", "add", &sw])?;
        sysctl(h, &sw, &NO_BRIDGE_NF)?;
    }
    if !h.link_exists(Some(&sw), SWITCH_BRIDGE) {
        h.ip(&[
            "-n",
            &sw,
            "link",
            "add",
            "name",
            SWITCH_BRIDGE,
            "type",
            "bridge",
        ])?;
    }
    h.ip(&["-n", &sw, "link", "set", SWITCH_BRIDGE, "up"])?;
    if !h.link_exists(None, bridge) {
        h.ip(&[
            "link",
            "add",
            "name",
            bridge,
            "type",
            "veth",
            "peer",
            "name",
            SWITCH_UPLINK,
            "netns",
            &sw,
        ])?;
    }
    h.ip(&[
        "-n",
        &sw,
        "link",
        "set",
        SWITCH_UPLINK,
        "master",
        SWITCH_BRIDGE,
        "up",
    ])?;
    let gw = format!("{}/{}", rec.subnet.gateway(), rec.subnet.prefix);
    h.ip(&["addr", "replace", &gw, "dev", bridge])?;
    h.ip(&["link", "set", bridge, "up"])
}

/// The machine's namespace and its veth pair to the switch, addressed, up, with a default route
/// via the gateway and the sysctls its data plane needs.
pub fn ensure_machine(h: &dyn Host, rec: &Record) -> Result<(), MachineError> {
    let ns = rec.netns();
    let sw = rec.switch();
    let veth = rec.veth();
    if !h.netns_exists(&ns) {
        h.ip(&["netns", "add", &ns])?;
    }
    if !h.link_exists(Some(&sw), &veth) {
        h.ip(&[
            "-n", &sw, "link", "add", "name", &veth, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
    }
    h.ip(&[
        "-n",
        &sw,
        "link",
        "set",
        &veth,
        "master",
        SWITCH_BRIDGE,
        "up",
    ])?;
    let addr = format!("{}/{}", rec.ip, rec.subnet.prefix);
    h.ip(&["-n", &ns, "addr", "replace", &addr, "dev", "eth0"])?;
    h.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    h.ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    let gw = rec.subnet.gateway().to_string();
    h.ip(&["-n", &ns, "route", "replace", "default", "via", &gw])?;
    let mut settings = vec!["net.ipv4.ip_forward=1"];
    settings.extend_from_slice(&NO_BRIDGE_NF);
    sysctl(h, &ns, &settings)
}

/// The machine's links down (a stopped machine is unreachable).
pub fn links_down(h: &dyn Host, rec: &Record) -> Result<(), MachineError> {
    if h.netns_exists(&rec.netns()) {
        h.ip(&["-n", &rec.netns(), "link", "set", "eth0", "down"])?;
    }
    if h.link_exists(Some(&rec.switch()), &rec.veth()) {
        h.ip(&["-n", &rec.switch(), "link", "set", &rec.veth(), "down"])?;
    }
    Ok(())
}

/// The machine's veth pair and namespace; every step is tried, the first error returned.
pub fn remove_machine(h: &dyn Host, rec: &Record) -> Result<(), MachineError> {
    let mut first = None;
    // Deleting the link first makes it go now; a namespace's links go asynchronously.
    if h.link_exists(Some(&rec.switch()), &rec.veth()) {
        if let Err(e) = h.ip(&["-n", &rec.switch(), "link", "del", &rec.veth()]) {
            first.get_or_insert(e);
        }
    }
    if h.netns_exists(&rec.netns()) {
        if let Err(e) = h.ip(&["netns", "del", &rec.netns()]) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// The host link and the switch namespace of `bridge` (when its last machine goes).
pub fn remove_switch(h: &dyn Host, bridge: &str) -> Result<(), MachineError> {
    let sw = crate::model::switch_netns_name(bridge);
    let mut first = None;
    // Only a host link whose switch exists is ours.
    if h.netns_exists(&sw) {
        if h.link_exists(None, bridge) {
            if let Err(e) = h.ip(&["link", "del", bridge]) {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = h.ip(&["netns", "del", &sw]) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
