//! Address allocation for overlay networks: subnets from the swarm's default address pool and
//! VXLAN network identifiers (swarmkit's network allocator, IPv4 only).
//!
//! ```text
//!  network create ──► IPAM.Config given? ──yes──► each Subnet valid, inside no other network's
//!                          │                      subnet (and none inside it); Gateway inside
//!                          no                     it (default: the first host)
//!                          ▼
//!                    first block of /SubnetSize in the pools (`--default-addr-pool`, default
//!                    10.0.0.0/8 with /24) that overlaps no allocated subnet
//!                ──► VNI: the smallest unused from 4096 up (the ingress network gets 4096)
//! ```
//!
//! Pure functions of the store's networks, so the result is the same on every manager.

use shoal_api::{engine, NetworkSubnet};
use shoal_store::StoreState;
use std::net::Ipv4Addr;

/// The first VXLAN identifier handed out (the ingress network's, as in Docker).
pub const FIRST_VNI: u32 = 4096;
/// The default address pool of a swarm initialised without `--default-addr-pool`.
pub const DEFAULT_POOL: &str = "10.0.0.0/8";
/// The default size of the subnets taken from the pool.
pub const DEFAULT_SUBNET_SIZE: u8 = 24;
/// The ingress network's subnet (Docker's).
pub const INGRESS_SUBNET: &str = "10.0.0.0/24";

/// An IPv4 prefix: network address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: u32,
    pub len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` (host bits are cleared, as Go's `net.ParseCIDR` returns the network).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        if len > 32 {
            return None;
        }
        Some(Cidr {
            addr: u32::from(ip) & mask(len),
            len,
        })
    }

    fn last(&self) -> u32 {
        self.addr | !mask(self.len)
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.addr <= other.last() && other.addr <= self.last()
    }

    pub fn contains(&self, ip: u32) -> bool {
        ip & mask(self.len) == self.addr
    }

    /// The first host address (the default gateway).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(if self.len >= 31 {
            self.addr
        } else {
            self.addr + 1
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// The subnets every stored network holds.
fn allocated(state: &StoreState) -> Vec<Cidr> {
    state
        .networks
        .values()
        .flat_map(|n| n.subnets.iter())
        .filter_map(|s| Cidr::parse(&s.subnet))
        .collect()
}

/// Checks a requested IPAM configuration and allocates its subnets, or one subnet from the
/// pools when it names none.
pub fn allocate_subnets(
    state: &StoreState,
    ipam: Option<&engine::Ipam>,
    pools: &[String],
    subnet_size: u32,
) -> Result<Vec<NetworkSubnet>, String> {
    if let Some(driver) = ipam.and_then(|i| i.driver.as_deref()) {
        if !driver.is_empty() && driver != "default" {
            return Err("invalid IPAM specified".into());
        }
    }
    let taken = allocated(state);
    let configs = ipam.and_then(|i| i.config.as_deref()).unwrap_or(&[]);
    let mut out: Vec<NetworkSubnet> = Vec::new();
    let mut mine: Vec<Cidr> = Vec::new();
    for c in configs {
        let raw = c.subnet.as_deref().unwrap_or("");
        if raw.is_empty() {
            continue;
        }
        let subnet =
            Cidr::parse(raw).ok_or_else(|| format!("ipam configuration: invalid subnet {raw}"))?;
        if taken.iter().chain(&mine).any(|t| t.overlaps(&subnet)) {
            return Err(
                "invalid pool request: Pool overlaps with other one on this address space".into(),
            );
        }
        let range = c.ip_range.clone().unwrap_or_default();
        if !range.is_empty() {
            let r = Cidr::parse(&range)
                .ok_or_else(|| format!("ipam configuration: invalid range {range}"))?;
            if !subnet.contains(r.addr) {
                return Err(format!(
                    "ipam configuration: subnet {raw} does not contain range {range}"
                ));
            }
        }
        let gateway = match c.gateway.as_deref().unwrap_or("") {
            "" => subnet.first_host().to_string(),
            g => {
                let ip: Ipv4Addr = g
                    .parse()
                    .map_err(|_| format!("ipam configuration: invalid gateway {g}"))?;
                if !subnet.contains(u32::from(ip)) {
                    return Err(format!(
                        "ipam configuration: subnet {raw} does not contain gateway {g}"
                    ));
                }
                g.to_string()
            }
        };
        mine.push(subnet);
        out.push(NetworkSubnet {
            subnet: subnet.to_string(),
            gateway,
            ip_range: range,
        });
    }
    if !out.is_empty() {
        return Ok(out);
    }
    let subnet = from_pools(&taken, pools, subnet_size)?;
    Ok(vec![NetworkSubnet {
        subnet: subnet.to_string(),
        gateway: subnet.first_host().to_string(),
        ip_range: String::new(),
    }])
}

/// The first free subnet of `subnet_size` bits in `pools` (the defaults when empty).
pub fn from_pools(taken: &[Cidr], pools: &[String], subnet_size: u32) -> Result<Cidr, String> {
    let size = if subnet_size == 0 {
        DEFAULT_SUBNET_SIZE
    } else {
        u8::try_from(subnet_size.min(32)).unwrap_or(DEFAULT_SUBNET_SIZE)
    };
    let defaults = [DEFAULT_POOL.to_string()];
    let pools = if pools.is_empty() {
        &defaults[..]
    } else {
        pools
    };
    for pool in pools {
        let Some(pool) = Cidr::parse(pool) else {
            continue;
        };
        if size < pool.len {
            continue;
        }
        let step: u64 = 1u64 << (32 - u32::from(size));
        let mut at = u64::from(pool.addr);
        let end = u64::from(pool.last());
        while at <= end {
            let candidate = Cidr {
                addr: at as u32,
                len: size,
            };
            match taken.iter().find(|t| t.overlaps(&candidate)) {
                None => return Ok(candidate),
                // Jump past the block that is in the way.
                Some(t) => {
                    let next = (u64::from(t.last()) + 1).max(at + step);
                    at = next.div_ceil(step) * step;
                }
            }
        }
    }
    Err("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into())
}

/// The smallest VXLAN identifier no stored network uses, from [`FIRST_VNI`] up.
pub fn next_vni(state: &StoreState) -> u32 {
    let used: std::collections::BTreeSet<u32> = state.networks.values().map(|n| n.vni).collect();
    (FIRST_VNI..)
        .find(|v| !used.contains(v))
        .unwrap_or(FIRST_VNI)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Meta, Network};

    fn net(id: &str, subnet: &str, vni: u32) -> Network {
        Network {
            id: id.into(),
            meta: Meta::new_now(),
            spec: Box::new(engine::NetworkCreateRequest {
                name: id.into(),
                ..Default::default()
            }),
            subnets: vec![NetworkSubnet {
                subnet: subnet.into(),
                gateway: String::new(),
                ip_range: String::new(),
            }],
            vni,
        }
    }

    fn state(nets: &[Network]) -> StoreState {
        let mut st = StoreState::default();
        for n in nets {
            st.networks.insert(n.id.clone(), n.clone());
        }
        st
    }

    #[test]
    fn subnets_come_from_the_pool_in_order_skipping_taken_ones() {
        let st = state(&[
            net("ingress", "10.0.0.0/24", 4096),
            net("b", "10.0.2.0/23", 4097),
        ]);
        let got = allocate_subnets(&st, None, &[], 0).unwrap();
        assert_eq!(got[0].subnet, "10.0.1.0/24");
        assert_eq!(got[0].gateway, "10.0.1.1");
        let st = state(&[
            net("ingress", "10.0.0.0/24", 4096),
            net("b", "10.0.1.0/24", 4097),
            net("c", "10.0.2.0/23", 4098),
        ]);
        let got = allocate_subnets(&st, None, &[], 24).unwrap();
        assert_eq!(got[0].subnet, "10.0.4.0/24");
    }

    #[test]
    fn a_custom_pool_and_size_are_used_and_can_run_out() {
        let pools = vec!["192.168.0.0/23".to_string()];
        let st = state(&[]);
        let got = allocate_subnets(&st, None, &pools, 24).unwrap();
        assert_eq!(got[0].subnet, "192.168.0.0/24");
        let st = state(&[
            net("a", "192.168.0.0/24", 4096),
            net("b", "192.168.1.0/24", 4097),
        ]);
        let err = allocate_subnets(&st, None, &pools, 24).unwrap_err();
        assert!(err.starts_with("could not find an available"), "{err}");
        // A second pool is tried when the first is full.
        let pools = vec!["192.168.0.0/23".to_string(), "172.20.0.0/16".to_string()];
        let got = allocate_subnets(&st, None, &pools, 26).unwrap();
        assert_eq!(got[0].subnet, "172.20.0.0/26");
    }

    #[test]
    fn requested_subnets_are_checked() {
        let st = state(&[net("ingress", "10.0.0.0/24", 4096)]);
        let ipam = |subnet: &str, gw: Option<&str>| engine::Ipam {
            driver: None,
            config: Some(vec![engine::IpamConfig {
                subnet: Some(subnet.into()),
                gateway: gw.map(str::to_string),
                ..Default::default()
            }]),
            options: None,
        };
        let got = allocate_subnets(&st, Some(&ipam("10.20.0.0/16", None)), &[], 24).unwrap();
        assert_eq!(got[0].subnet, "10.20.0.0/16");
        assert_eq!(got[0].gateway, "10.20.0.1");
        let got =
            allocate_subnets(&st, Some(&ipam("10.20.0.0/16", Some("10.20.9.9"))), &[], 24).unwrap();
        assert_eq!(got[0].gateway, "10.20.9.9");
        let err = allocate_subnets(&st, Some(&ipam("10.0.0.0/16", None)), &[], 24).unwrap_err();
        assert!(err.contains("overlaps"), "{err}");
        let err = allocate_subnets(&st, Some(&ipam("nope", None)), &[], 24).unwrap_err();
        assert_eq!(err, "ipam configuration: invalid subnet nope");
        let err = allocate_subnets(&st, Some(&ipam("10.30.0.0/16", Some("10.31.0.1"))), &[], 24)
            .unwrap_err();
        assert_eq!(
            err,
            "ipam configuration: subnet 10.30.0.0/16 does not contain gateway 10.31.0.1"
        );
    }

    #[test]
    fn vnis_are_the_smallest_free_from_4096() {
        assert_eq!(next_vni(&state(&[])), 4096);
        let st = state(&[net("a", "10.0.0.0/24", 4096), net("b", "10.0.1.0/24", 4098)]);
        assert_eq!(next_vni(&st), 4097);
    }

    #[test]
    fn cidrs_parse_and_print() {
        let c = Cidr::parse("10.1.2.3/16").unwrap();
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(c.overlaps(&Cidr::parse("10.1.200.0/24").unwrap()));
        assert!(!c.overlaps(&Cidr::parse("10.2.0.0/24").unwrap()));
    }
}
