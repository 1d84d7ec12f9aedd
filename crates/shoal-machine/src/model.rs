//! The pure part of machines: name rules, address allocation on a subnet, the JSON record kept
//! per machine, interface names, and what `ls` / `env` print. Nothing here touches the host.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::MachineError;

/// Default subnet of the host bridge.
pub const DEFAULT_SUBNET: &str = "10.97.0.0/24";
/// Default host bridge.
pub const DEFAULT_BRIDGE: &str = "shoal-br0";

/// docker-machine's rule: a letter or digit, then letters, digits, `-` and `.`.
pub fn validate_name(name: &str) -> Result<(), MachineError> {
    let mut chars = name.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }
        _ => false,
    };
    // The namespace name `shoal-NAME` must stay a usable file name.
    if ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(MachineError::InvalidName)
    }
}

/// An IPv4 subnet `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/len` (host bits must be zero; the prefix must leave room for hosts).
    pub fn parse(s: &str) -> Result<Subnet, MachineError> {
        let bad = || MachineError::InvalidSubnet(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let network: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let sub = Subnet { network, prefix };
        if u32::from(network) & !sub.mask() != 0 {
            return Err(bad());
        }
        Ok(sub)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` is a usable host address of this subnet (not network, not broadcast).
    pub fn contains_host(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(self.network);
        let i = u32::from(ip);
        i & self.mask() == n && i != n && i != n | !self.mask()
    }

    /// The host side of the bridge: the first host address (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The first free address after the gateway, skipping `used`.
    pub fn allocate(&self, used: &[Ipv4Addr]) -> Result<Ipv4Addr, MachineError> {
        let n = u32::from(self.network);
        let last = n | !self.mask();
        (n + 2..last)
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| MachineError::SubnetFull(self.to_string()))
    }

    /// Checks a requested address: in the subnet, not the gateway, not taken.
    pub fn check_requested(&self, ip: Ipv4Addr, used: &[Ipv4Addr]) -> Result<(), MachineError> {
        if !self.contains_host(ip) || ip == self.gateway() {
            return Err(MachineError::InvalidIp(ip.to_string(), self.to_string()));
        }
        if used.contains(&ip) {
            return Err(MachineError::IpInUse(ip.to_string()));
        }
        Ok(())
    }
}

impl Subnet {
    /// Whether this subnet shares addresses with a route destination such as `10.0.0.0/8`,
    /// `192.168.1.0/24` or `10.97.0.5` (`default` and unparsable entries never clash).
    pub fn overlaps(&self, dest: &str) -> bool {
        let (ip, len) = dest.split_once('/').unwrap_or((dest, "32"));
        let (Ok(ip), Ok(len)) = (ip.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
            return false;
        };
        if len > 32 {
            return false;
        }
        let shorter = len.min(self.prefix);
        let mask = if shorter == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(shorter))
        };
        u32::from(ip) & mask == u32::from(self.network) & mask
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether a machine should be running (what `stop`/`start` last asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Running,
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "Running",
            State::Stopped => "Stopped",
        }
    }
}

/// `<machine dir>/config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub driver: String,
    pub ip: Ipv4Addr,
    pub subnet: Subnet,
    pub bridge: String,
    pub created: String,
    pub state: State,
    /// Pid of the machine's daemon while it runs.
    #[serde(default)]
    pub pid: Option<u32>,
}

impl Record {
    /// The machine's network namespace.
    pub fn netns(&self) -> String {
        netns_name(&self.name)
    }
    /// The host side of the machine's veth pair.
    pub fn veth(&self) -> String {
        veth_name(&self.name)
    }
}

/// `shoal-NAME`.
pub fn netns_name(name: &str) -> String {
    format!("shoal-{name}")
}

/// Host-side veth name: `shm` + 8 hex digits of a stable hash of the name (interface names are
/// limited to 15 bytes, machine names are not).
pub fn veth_name(name: &str) -> String {
    // FNV-1a, stable across builds.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("shm{h:08x}")
}

/// One row of `machine ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsRow {
    pub name: String,
    pub active: bool,
    pub driver: String,
    pub state: String,
    pub url: String,
    pub swarm: String,
    pub docker: String,
    pub errors: String,
}

/// docker-machine's `ls` table: columns padded to the widest cell plus three spaces.
pub fn format_ls(rows: &[LsRow]) -> String {
    let header = [
        "NAME", "ACTIVE", "DRIVER", "STATE", "URL", "SWARM", "DOCKER", "ERRORS",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        table.push(vec![
            r.name.clone(),
            if r.active { "*" } else { "-" }.to_string(),
            r.driver.clone(),
            r.state.clone(),
            r.url.clone(),
            r.swarm.clone(),
            r.docker.clone(),
            r.errors.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What `machine env NAME` prints (POSIX shells).
pub fn format_env(name: &str, url: &str) -> String {
    format!(
        "export DOCKER_HOST=\"{url}\"\nexport DOCKER_MACHINE_NAME=\"{name}\"\n\
         # Run this command to configure your shell: \n# eval $(shoal machine env {name})\n"
    )
}

/// What `machine env --unset` prints.
pub fn format_unset() -> String {
    "unset DOCKER_TLS_VERIFY\nunset DOCKER_HOST\nunset DOCKER_CERT_PATH\nunset DOCKER_MACHINE_NAME\n\
     # Run this command to configure your shell: \n# eval $(shoal machine env --unset)\n"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_machine_rule() {
        for ok in ["myvm1", "a", "m-1.example", "9lives"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "my_vm", "my vm", "a/b", "é"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn subnets_parse_and_reject() {
        let s = Subnet::parse("10.97.0.0/24").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 97, 0, 1));
        assert_eq!(s.to_string(), "10.97.0.0/24");
        for bad in [
            "10.97.0.1/24",
            "10.97.0.0",
            "10.97.0.0/31",
            "x/24",
            "10.97.0.0/ab",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allocation_skips_gateway_and_used_and_ends_at_broadcast() {
        let s = Subnet::parse("10.98.7.0/30").unwrap();
        assert_eq!(s.allocate(&[]).unwrap(), Ipv4Addr::new(10, 98, 7, 2));
        assert!(s.allocate(&[Ipv4Addr::new(10, 98, 7, 2)]).is_err());
        let s = Subnet::parse("10.97.0.0/24").unwrap();
        let used = [Ipv4Addr::new(10, 97, 0, 2), Ipv4Addr::new(10, 97, 0, 4)];
        assert_eq!(s.allocate(&used).unwrap(), Ipv4Addr::new(10, 97, 0, 3));
    }

    #[test]
    fn requested_addresses_are_checked() {
        let s = Subnet::parse("10.97.0.0/24").unwrap();
        let used = [Ipv4Addr::new(10, 97, 0, 2)];
        assert!(s
            .check_requested(Ipv4Addr::new(10, 97, 0, 9), &used)
            .is_ok());
        for bad in [
            [10, 97, 0, 1],
            [10, 97, 0, 0],
            [10, 97, 0, 255],
            [10, 97, 1, 5],
        ] {
            assert!(s.check_requested(Ipv4Addr::from(bad), &used).is_err());
        }
        assert!(matches!(
            s.check_requested(Ipv4Addr::new(10, 97, 0, 2), &used),
            Err(MachineError::IpInUse(_))
        ));
    }

    #[test]
    fn overlaps_with_routes() {
        let s = Subnet::parse("10.97.0.0/24").unwrap();
        for yes in ["10.0.0.0/8", "10.97.0.0/24", "10.97.0.128/25", "10.97.0.5"] {
            assert!(s.overlaps(yes), "{yes}");
        }
        for no in [
            "default",
            "10.98.0.0/24",
            "192.168.1.0/24",
            "fe80::/64",
            "x/8",
        ] {
            assert!(!s.overlaps(no), "{no}");
        }
    }

    #[test]
    fn records_round_trip_through_json() {
        let r = Record {
            name: "myvm1".into(),
            driver: "netns".into(),
            ip: Ipv4Addr::new(10, 97, 0, 2),
            subnet: Subnet::parse("10.97.0.0/24").unwrap(),
            bridge: DEFAULT_BRIDGE.into(),
            created: "2026-11-26T10:00:00Z".into(),
            state: State::Running,
            pid: Some(42),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"ip\":\"10.97.0.2\""), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
        assert_eq!(r.netns(), "shoal-myvm1");
        assert!(r.veth().len() <= 15);
        assert_ne!(veth_name("a"), veth_name("b"));
    }

    #[test]
    fn ls_table_matches_docker_machine_layout() {
        let rows = [LsRow {
            name: "myvm1".into(),
            active: true,
            driver: "netns".into(),
            state: "Running".into(),
            url: "unix:///m/docker.sock".into(),
            swarm: String::new(),
            docker: "v0.1.0".into(),
            errors: String::new(),
        }];
        let out = format_ls(&rows);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "NAME    ACTIVE   DRIVER   STATE     URL                     SWARM   DOCKER   ERRORS"
        );
        assert_eq!(
            lines[1],
            "myvm1   *        netns    Running   unix:///m/docker.sock           v0.1.0"
        );
    }

    #[test]
    fn env_output_has_the_shell_hint() {
        let out = format_env("m1", "unix:///x/docker.sock");
        assert!(out.starts_with("export DOCKER_HOST=\"unix:///x/docker.sock\"\n"));
        assert!(out.contains("# Run this command to configure your shell: \n"));
        assert!(out.ends_with("# eval $(shoal machine env m1)\n"));
        assert!(format_unset().contains("unset DOCKER_HOST\n"));
    }
}
