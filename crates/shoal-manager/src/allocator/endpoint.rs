//! Service endpoints: the published ports a service actually holds (swarmkit's port allocator).
//!
//! ```text
//!  Spec.EndpointSpec.Ports            Endpoint.Ports (what `service ls` / inspect show)
//!  ───────────────────────            ───────────────────────────────────────────────────
//!  {Target 80, Published 8080}   ──►  {tcp, 80, 8080, ingress}
//!  {Target 80}  (ingress)        ──►  {tcp, 80, 30000, ingress}  the one it held before for
//!                                      the same name/target/protocol, else the lowest port of
//!                                      30000-32767 no service publishes (any protocol-equal
//!                                      port, spec or endpoint, any mode)
//!  {Target 80, PublishMode host} ──►  {tcp, 80, host}             left unpublished
//! ```
//!
//! The leader's allocator pass computes endpoints from the store alone (so a new leader reaches
//! the same answer, and a port held before is kept) and writes the service; the store's rule
//! (`shoal-store/src/rules.rs`) refuses, when the entry is applied, a port another service took
//! meanwhile, and the next pass allocates again. A clash between explicit ports is refused
//! earlier, at `service create` / `update`, with Docker's message.
//!
//! Virtual IPs (`Endpoint.VirtualIPs`) are added by the allocator pass from its
//! [`AddressBook`](super::addresses::AddressBook).

use shoal_api::engine;
use shoal_api::spec::{port_is_ingress, port_protocol};
use shoal_api::Service;
use shoal_store::StoreState;
use std::collections::{BTreeMap, BTreeSet};

/// The first port of the dynamic range ingress ports are given when the spec leaves them 0.
pub const DYNAMIC_PORT_START: i64 = 30000;
/// The last port of the dynamic range (inclusive).
pub const DYNAMIC_PORT_END: i64 = 32767;

/// A published port: (port, protocol).
type Key = (i64, &'static str);

/// Who publishes which port, across every service: what a dynamic allocation must avoid.
#[derive(Clone, Debug, Default)]
pub struct PortMap {
    holders: BTreeMap<Key, BTreeSet<String>>,
}

impl PortMap {
    /// Every port published by a service of `state`, in its spec or its allocated endpoint.
    pub fn of(state: &StoreState) -> Self {
        let mut m = PortMap::default();
        for s in state.services.values() {
            for p in spec_ports(s).iter().chain(endpoint_ports(s)) {
                let published = p.published_port.unwrap_or(0);
                if published > 0 {
                    m.hold((published, port_protocol(p)), &s.id);
                }
            }
        }
        m
    }

    fn hold(&mut self, key: Key, service_id: &str) {
        self.holders
            .entry(key)
            .or_default()
            .insert(service_id.to_string());
    }

    /// Whether no service but `service_id` publishes `key`.
    fn free_for(&self, key: Key, service_id: &str) -> bool {
        self.holders
            .get(&key)
            .is_none_or(|h| h.iter().all(|id| id == service_id))
    }
}

pub(crate) fn spec_ports(s: &Service) -> &[engine::EndpointPortConfig] {
    s.spec
        .endpoint_spec
        .as_ref()
        .and_then(|e| e.ports.as_deref())
        .unwrap_or(&[])
}

fn endpoint_ports(s: &Service) -> &[engine::EndpointPortConfig] {
    s.endpoint
        .as_ref()
        .and_then(|e| e.ports.as_deref())
        .unwrap_or(&[])
}

fn protocol_enum(p: &engine::EndpointPortConfig) -> engine::EndpointPortConfigProtocolEnum {
    use engine::EndpointPortConfigProtocolEnum as P;
    match p.protocol {
        Some(P::UDP) => P::UDP,
        Some(P::SCTP) => P::SCTP,
        _ => P::TCP,
    }
}

/// Whether the allocated port `held` was made for the spec port `want` (same name, target,
/// protocol, mode): its published port is then kept.
fn same_port(held: &engine::EndpointPortConfig, want: &engine::EndpointPortConfig) -> bool {
    held.name.as_deref().unwrap_or("") == want.name.as_deref().unwrap_or("")
        && held.target_port.unwrap_or(0) == want.target_port.unwrap_or(0)
        && port_protocol(held) == port_protocol(want)
        && port_is_ingress(held) == port_is_ingress(want)
}

/// The endpoint `s` should have, reserving in `ports` the ports it gives `s`. `Err` when the
/// dynamic range has no free port left (the service keeps its endpoint until one frees).
pub fn allocate(s: &Service, ports: &mut PortMap) -> Result<engine::ServiceEndpoint, String> {
    use engine::EndpointPortConfigPublishModeEnum as Mode;
    let wanted = spec_ports(s);
    let mut previous: Vec<&engine::EndpointPortConfig> = endpoint_ports(s)
        .iter()
        .filter(|p| p.published_port.unwrap_or(0) > 0)
        .collect();
    // The ports this spec names itself are not for its dynamic ones.
    let mut mine: BTreeSet<Key> = wanted
        .iter()
        .filter(|p| p.published_port.unwrap_or(0) > 0)
        .map(|p| (p.published_port.unwrap_or(0), port_protocol(p)))
        .collect();
    let mut out = Vec::with_capacity(wanted.len());
    for p in wanted {
        let ingress = port_is_ingress(p);
        let protocol = port_protocol(p);
        let mut published = p.published_port.filter(|&n| n > 0);
        if published.is_none() && ingress {
            let kept = previous
                .iter()
                .position(|h| {
                    let key = (h.published_port.unwrap_or(0), protocol);
                    same_port(h, p) && !mine.contains(&key) && ports.free_for(key, &s.id)
                })
                .map(|i| previous.remove(i).published_port.unwrap_or(0));
            let port = match kept {
                Some(port) => port,
                None => (DYNAMIC_PORT_START..=DYNAMIC_PORT_END)
                    .find(|&n| !mine.contains(&(n, protocol)) && ports.free_for((n, protocol), &s.id))
                    .ok_or_else(|| {
                        format!(
                            "could not allocate a published port for target port {} of service {}: the dynamic range {DYNAMIC_PORT_START}-{DYNAMIC_PORT_END} is exhausted",
                            p.target_port.unwrap_or(0),
                            s.name()
                        )
                    })?,
            };
            mine.insert((port, protocol));
            published = Some(port);
        }
        out.push(engine::EndpointPortConfig {
            name: p.name.clone().filter(|n| !n.is_empty()),
            protocol: Some(protocol_enum(p)),
            target_port: p.target_port,
            published_port: published,
            publish_mode: Some(if ingress { Mode::INGRESS } else { Mode::HOST }),
        });
    }
    for &key in &mine {
        ports.hold(key, &s.id);
    }
    Ok(engine::ServiceEndpoint {
        spec: s.spec.endpoint_spec.clone(),
        ports: (!out.is_empty()).then_some(out),
        virtual_ips: None,
    })
}

/// Whether `s` must be written with `computed`. A service that publishes nothing and never
/// had an endpoint stored is left alone (the API shows its live endpoint spec), so creating
/// one costs no second write; any other difference is written.
pub fn needs_write(s: &Service, computed: &engine::ServiceEndpoint) -> bool {
    match &s.endpoint {
        None => computed.ports.is_some() || computed.virtual_ips.is_some(),
        Some(current) => current != computed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::{replicated, state};
    use engine::EndpointPortConfigPublishModeEnum as Mode;

    fn port(target: i64, published: i64, mode: Option<Mode>) -> engine::EndpointPortConfig {
        engine::EndpointPortConfig {
            target_port: Some(target),
            published_port: (published > 0).then_some(published),
            publish_mode: mode,
            ..Default::default()
        }
    }

    fn publishing(id: &str, ports: Vec<engine::EndpointPortConfig>) -> Service {
        let mut s = replicated(id, 1);
        s.spec.endpoint_spec = Some(engine::EndpointSpec {
            mode: Some(engine::EndpointSpecModeEnum::VIP),
            ports: Some(ports),
        });
        s
    }

    fn published(e: &engine::ServiceEndpoint) -> Vec<Option<i64>> {
        e.ports.iter().flatten().map(|p| p.published_port).collect()
    }

    #[test]
    fn ports_are_filled_with_defaults_and_dynamic_ones_from_30000() {
        let s = publishing(
            "web",
            vec![
                port(80, 8080, None),
                port(81, 0, None),
                port(82, 0, Some(Mode::HOST)),
            ],
        );
        let st = state(vec![], vec![s.clone()], vec![]);
        let e = allocate(&s, &mut PortMap::of(&st)).unwrap();
        assert_eq!(published(&e), vec![Some(8080), Some(30000), None]);
        let p = &e.ports.as_ref().unwrap()[0];
        assert_eq!(
            p.protocol,
            Some(engine::EndpointPortConfigProtocolEnum::TCP)
        );
        assert_eq!(p.publish_mode, Some(Mode::INGRESS));
        assert_eq!(e.ports.as_ref().unwrap()[2].publish_mode, Some(Mode::HOST));
        assert_eq!(e.spec, s.spec.endpoint_spec);
        assert!(e.virtual_ips.is_none());
    }

    #[test]
    fn dynamic_ports_avoid_other_services_and_are_kept_once_held() {
        // `a` holds 30000 explicitly, `b` was given 30001 earlier.
        let a = publishing("a", vec![port(80, 30000, None)]);
        let mut b = publishing("b", vec![port(80, 0, None)]);
        b.endpoint = Some(engine::ServiceEndpoint {
            spec: b.spec.endpoint_spec.clone(),
            ports: Some(vec![port(80, 30001, Some(Mode::INGRESS))]),
            virtual_ips: None,
        });
        let c = publishing("c", vec![port(80, 0, None), port(90, 0, None)]);
        let st = state(vec![], vec![a, b.clone(), c.clone()], vec![]);
        let mut map = PortMap::of(&st);
        let eb = allocate(&b, &mut map).unwrap();
        assert_eq!(published(&eb), vec![Some(30001)]);
        let ec = allocate(&c, &mut map).unwrap();
        assert_eq!(published(&ec), vec![Some(30002), Some(30003)]);
        // A later service in the same pass does not get c's ports either.
        let d = publishing("d", vec![port(80, 0, None)]);
        assert_eq!(
            published(&allocate(&d, &mut map).unwrap()),
            vec![Some(30004)]
        );
        // Another protocol is another port.
        let mut u = port(80, 0, None);
        u.protocol = Some(engine::EndpointPortConfigProtocolEnum::UDP);
        let e = publishing("e", vec![u]);
        assert_eq!(
            published(&allocate(&e, &mut map).unwrap()),
            vec![Some(30000)]
        );
    }

    #[test]
    fn a_kept_port_that_another_service_claimed_is_replaced() {
        let a = publishing("a", vec![port(80, 30000, None)]);
        let mut b = publishing("b", vec![port(80, 0, None)]);
        b.endpoint = Some(engine::ServiceEndpoint {
            spec: None,
            ports: Some(vec![port(80, 30000, Some(Mode::INGRESS))]),
            virtual_ips: None,
        });
        let st = state(vec![], vec![a, b.clone()], vec![]);
        let e = allocate(&b, &mut PortMap::of(&st)).unwrap();
        assert_eq!(published(&e), vec![Some(30001)]);
    }

    #[test]
    fn an_exhausted_range_is_an_error() {
        let mut holders = Vec::new();
        for (i, n) in (DYNAMIC_PORT_START..=DYNAMIC_PORT_END).enumerate() {
            holders.push(publishing(&format!("h{i}"), vec![port(80, n, None)]));
        }
        let s = publishing("web", vec![port(80, 0, None)]);
        holders.push(s.clone());
        let st = state(vec![], holders, vec![]);
        let err = allocate(&s, &mut PortMap::of(&st)).unwrap_err();
        assert!(err.contains("exhausted"), "{err}");
        // Host-mode ports left 0 need nothing from the range.
        let h = publishing("host", vec![port(80, 0, Some(Mode::HOST))]);
        assert_eq!(
            published(&allocate(&h, &mut PortMap::of(&st)).unwrap()),
            vec![None]
        );
    }

    #[test]
    fn services_without_ports_need_no_write() {
        let s = replicated("web", 1);
        let st = state(vec![], vec![s.clone()], vec![]);
        let e = allocate(&s, &mut PortMap::of(&st)).unwrap();
        assert!(!needs_write(&s, &e));
        let p = publishing("p", vec![port(80, 8080, None)]);
        let e = allocate(&p, &mut PortMap::of(&st)).unwrap();
        assert!(needs_write(&p, &e));
        let mut done = p.clone();
        done.endpoint = Some(e.clone());
        assert!(!needs_write(&done, &e));
        // Its ports removed later, then its mode changed: the stored copy follows.
        done.spec.endpoint_spec = Some(engine::EndpointSpec {
            mode: Some(engine::EndpointSpecModeEnum::DNSRR),
            ports: None,
        });
        let e = allocate(&done, &mut PortMap::of(&st)).unwrap();
        assert!(e.ports.is_none());
        assert!(needs_write(&done, &e));
    }
}
