//! The files a task's resolver reads (`/etc/resolv.conf`, `/etc/hosts`), and the node's own
//! resolvers the embedded server forwards to.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use shoal_api::netmap::TaskAttachment;

/// The address the embedded server answers on inside every task's network namespace.
pub const EMBEDDED_DNS_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 11);

/// The node's resolver configuration.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of the real upstream servers, used when the node's resolv.conf only
/// names the local stub (127.0.0.53), as Docker does.
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// A task's `/etc/resolv.conf`: the embedded server, the node's search domains and Docker's
/// `ndots:0`.
pub fn resolv_conf(search: &[String]) -> String {
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str("search ");
        out.push_str(&search.join(" "));
        out.push('\n');
    }
    out.push_str(&format!("nameserver {EMBEDDED_DNS_ADDR}\n"));
    out.push_str("options ndots:0\n");
    out
}

/// A task's `/etc/hosts`: the loopback lines Docker writes, then the task's address on each
/// attached network with its hostname.
pub fn hosts_file(hostname: &str, attachments: &[TaskAttachment]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for a in attachments {
        out.push_str(&format!("{}\t{hostname}\n", a.ip()));
    }
    out
}

/// What a resolv.conf text says: its name servers and search domains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text; unknown lines and unparsable addresses are skipped.
    pub fn parse(text: &str) -> Self {
        let mut out = ResolvConf::default();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // A scoped IPv6 address (`fe80::1%eth0`) keeps only the address.
                    let addr = words.next().map(|w| w.split('%').next().unwrap_or(w));
                    if let Some(ip) = addr.and_then(|w| w.parse().ok()) {
                        out.nameservers.push(ip);
                    }
                }
                // `domain` and `search` override one another; the last one wins.
                Some("search") | Some("domain") => {
                    out.search = words.map(str::to_string).collect();
                }
                _ => {}
            }
        }
        out
    }

    /// The name servers the embedded server may forward to (port 53). Loopback servers are
    /// left out as Docker does (where it forwards from, they would be the task's own loopback,
    /// or this server itself); systemd-resolved's stub is replaced by its upstream list in
    /// [`node_resolv_conf`].
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .filter(|ip| !ip.is_loopback())
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect()
    }

    /// Whether the only name server is systemd-resolved's local stub.
    fn is_systemd_stub(&self) -> bool {
        !self.nameservers.is_empty()
            && self
                .nameservers
                .iter()
                .all(|ip| *ip == IpAddr::from([127, 0, 0, 53]))
    }
}

/// The node's resolver configuration: /etc/resolv.conf, or systemd-resolved's upstream list
/// when the former only names the local stub. A missing file reads as empty.
pub fn node_resolv_conf() -> ResolvConf {
    let read = |p: &str| {
        std::fs::read_to_string(Path::new(p))
            .map(|t| ResolvConf::parse(&t))
            .unwrap_or_default()
    };
    let host = read(HOST_RESOLV_CONF);
    if host.is_systemd_stub() {
        let real = read(SYSTEMD_RESOLV_CONF);
        if !real.upstreams().is_empty() {
            return ResolvConf {
                nameservers: real.nameservers,
                search: host.search,
            };
        }
    }
    host
}
