//! Uniqueness rules the store enforces when a batch is applied, on every replica alike.
//!
//! A control transaction checks these rules against the state of the manager that runs it, but
//! two managers (or one manager retrying after a timeout) can each pass that check and both
//! commit. So the rules are checked again by [`crate::StoreState::check`], in log order, and the
//! later entry is refused everywhere (as swarmkit's store refuses a second object with a name
//! already in its unique index):
//!
//! ```text
//!  service created or renamed ──► its name (case-insensitive) held by no other service
//!                                 else Conflict("name conflicts with an existing object: ...")
//!  service created or updated ──► every published port it did not hold before is free:
//!                                 ingress ports are exclusive, host-mode ports may be shared
//!                                 by host-mode services; else Invalid("port '..' is already
//!                                 in use by service '..' (..) as an ingress port")
//!
//!  network, secret or config    ──► its name (case-insensitive) held by no other object of
//!  created or renamed              its kind, else Conflict with Docker's text:
//!                                  "network with name X already exists",
//!                                  "rpc error: code = AlreadyExists desc = secret X already exists"
//!                                  (config likewise)
//! ```
//!
//! Only what a batch *adds* is checked (a new name, a newly published port), so a state that
//! already holds a violation (written before these rules) does not block unrelated updates.

use crate::state::{Action, Batch, StoreState};
use crate::StoreError;
use shoal_api::spec::{port_is_ingress as is_ingress, port_protocol as protocol};
use shoal_api::{Object, ObjectKind, Service};
use std::collections::BTreeMap;
use std::collections::BTreeSet;

/// A published port: (port, protocol, ingress).
type Port = (i64, &'static str, bool);

/// Checks the service rules for the services `batch` creates or updates.
pub(crate) fn check_services(state: &StoreState, batch: &Batch) -> Result<(), StoreError> {
    // The services as they will be after the batch, for the IDs it touches.
    let mut after: BTreeMap<&str, Option<&Service>> = BTreeMap::new();
    let mut written: Vec<&str> = Vec::new();
    for action in &batch.actions {
        match action {
            Action::Create(Object::Service(s)) | Action::Update(Object::Service(s)) => {
                after.insert(s.id.as_str(), Some(s));
                if !written.contains(&s.id.as_str()) {
                    written.push(s.id.as_str());
                }
            }
            Action::Delete(ObjectKind::Service, id) => {
                after.insert(id.as_str(), None);
            }
            _ => {}
        }
    }
    if written.is_empty() {
        return Ok(());
    }
    let all: Vec<&Service> = state
        .services
        .values()
        .filter(|s| !after.contains_key(s.id.as_str()))
        .chain(after.values().flatten().copied())
        .collect();
    for id in written {
        let Some(svc) = after.get(id).copied().flatten() else {
            continue;
        };
        let before = state.services.get(id);
        let name = svc.name();
        let renamed = before.is_none_or(|b| !b.name().eq_ignore_ascii_case(name));
        let others = || all.iter().copied().filter(|s| s.id != id);
        if renamed && !name.is_empty() && others().any(|o| o.name().eq_ignore_ascii_case(name)) {
            return Err(StoreError::Conflict(format!(
                "name conflicts with an existing object: service {name} already exists"
            )));
        }
        let held = before.map(ports).unwrap_or_default();
        let claimed: Vec<Port> = ports(svc)
            .into_iter()
            .filter(|p| !held.contains(p))
            .collect();
        if claimed.is_empty() {
            continue;
        }
        for other in others() {
            for (port, proto, ingress) in ports(other) {
                let clash = claimed
                    .iter()
                    .any(|&(p, pr, ing)| p == port && pr == proto && (ing || ingress));
                if clash {
                    let how = if ingress {
                        "an ingress"
                    } else {
                        "a host-published"
                    };
                    return Err(StoreError::Invalid(format!(
                        "port '{port}' is already in use by service '{}' ({}) as {how} port",
                        other.name(),
                        other.id
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The name of a named object of the kinds [`check_names`] covers.
fn unique_name(o: &Object) -> Option<&str> {
    match o {
        Object::Network(n) => Some(n.name()),
        Object::Secret(s) => Some(s.name()),
        Object::Config(c) => Some(c.name()),
        _ => None,
    }
}

/// Docker's refusal of a second object of `kind` named `name`.
pub(crate) fn name_conflict(kind: ObjectKind, name: &str) -> StoreError {
    StoreError::Conflict(match kind {
        ObjectKind::Network => format!("network with name {name} already exists"),
        other => format!(
            "rpc error: code = AlreadyExists desc = {} {name} already exists",
            other.as_str()
        ),
    })
}

/// Checks that the networks, secrets and configs `batch` creates or renames take names no
/// other object of their kind holds (case-insensitively), counting the batch's own writes.
pub(crate) fn check_names(state: &StoreState, batch: &Batch) -> Result<(), StoreError> {
    let touches = batch.actions.iter().any(|a| match a {
        Action::Create(o) | Action::Update(o) => unique_name(o).is_some(),
        Action::Delete(..) => false,
    });
    if !touches {
        return Ok(());
    }
    // Names held per kind as the batch goes: (kind, lowercase name) -> holder ID.
    let mut held: BTreeMap<(ObjectKind, String), String> = BTreeMap::new();
    let mut seeded: BTreeSet<ObjectKind> = BTreeSet::new();
    let seed = |kind: ObjectKind, held: &mut BTreeMap<(ObjectKind, String), String>| {
        let names: Vec<(String, String)> = match kind {
            ObjectKind::Network => state
                .networks
                .values()
                .map(|n| (n.name().to_ascii_lowercase(), n.id.clone()))
                .collect(),
            ObjectKind::Secret => state
                .secrets
                .values()
                .map(|n| (n.name().to_ascii_lowercase(), n.id.clone()))
                .collect(),
            ObjectKind::Config => state
                .configs
                .values()
                .map(|n| (n.name().to_ascii_lowercase(), n.id.clone()))
                .collect(),
            _ => Vec::new(),
        };
        for (name, id) in names {
            held.entry((kind, name)).or_insert(id);
        }
    };
    for action in &batch.actions {
        let kind = match action {
            Action::Create(o) | Action::Update(o) => o.kind(),
            Action::Delete(kind, _) => *kind,
        };
        if !matches!(
            kind,
            ObjectKind::Network | ObjectKind::Secret | ObjectKind::Config
        ) {
            continue;
        }
        if seeded.insert(kind) {
            seed(kind, &mut held);
        }
        match action {
            Action::Delete(kind, id) => held.retain(|(k, _), holder| !(k == kind && holder == id)),
            Action::Create(o) | Action::Update(o) => {
                let Some(name) = unique_name(o) else {
                    continue;
                };
                let key = (kind, name.to_ascii_lowercase());
                match held.get(&key) {
                    Some(holder) if holder != o.id() => return Err(name_conflict(kind, name)),
                    Some(_) => {}
                    None => {
                        // A rename frees the old name.
                        held.retain(|(k, _), holder| !(*k == kind && holder == o.id()));
                        held.insert(key, o.id().to_string());
                    }
                }
            }
        }
    }
    Ok(())
}

/// A network's holdings: its ID, subnet ranges and VNI.
type Held = (String, Vec<(u32, u32)>, u32);

/// `a.b.c.d/n` as (first, last) address, for overlap checks.
fn range_of(cidr: &str) -> Option<(u32, u32)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let first = u32::from(ip) & mask;
    Some((first, first | !mask))
}

/// Checks that the networks `batch` creates take subnets and a VXLAN identifier no other
/// network holds (two managers allocating at once both pick the first free block; the later
/// write is refused everywhere).
pub(crate) fn check_network_allocations(
    state: &StoreState,
    batch: &Batch,
) -> Result<(), StoreError> {
    let touches = batch.actions.iter().any(|a| {
        matches!(
            a,
            Action::Create(Object::Network(_)) | Action::Delete(ObjectKind::Network, _)
        )
    });
    if !touches {
        return Ok(());
    }
    // (holder, subnet ranges, VNI) of every network as the batch goes.
    let held = |n: &shoal_api::Network| {
        let ranges: Vec<(u32, u32)> = n
            .subnets
            .iter()
            .filter_map(|s| range_of(&s.subnet))
            .collect();
        (n.id.clone(), ranges, n.vni)
    };
    let mut taken: Vec<Held> = state.networks.values().map(held).collect();
    for action in &batch.actions {
        match action {
            Action::Create(Object::Network(n)) => {
                let (id, mine, vni) = held(n);
                for (holder, ranges, other_vni) in &taken {
                    if *holder == id {
                        continue;
                    }
                    if vni != 0 && *other_vni == vni {
                        return Err(StoreError::Invalid(format!(
                            "VXLAN identifier {vni} is already in use"
                        )));
                    }
                    let overlaps = mine
                        .iter()
                        .any(|(f, l)| ranges.iter().any(|(of, ol)| f <= ol && of <= l));
                    if overlaps {
                        return Err(StoreError::Invalid(
                            "invalid pool request: Pool overlaps with other one on this address space"
                                .into(),
                        ));
                    }
                }
                taken.push((id, mine, vni));
            }
            Action::Delete(ObjectKind::Network, id) => taken.retain(|(holder, _, _)| holder != id),
            _ => {}
        }
    }
    Ok(())
}

/// The published ports of a service: its spec's and its allocated endpoint's.
fn ports(svc: &Service) -> Vec<Port> {
    let spec = svc
        .spec
        .endpoint_spec
        .as_ref()
        .and_then(|e| e.ports.as_deref())
        .unwrap_or(&[]);
    let allocated = svc
        .endpoint
        .as_ref()
        .and_then(|e| e.ports.as_deref())
        .unwrap_or(&[]);
    let mut out: Vec<Port> = Vec::new();
    for p in spec.iter().chain(allocated) {
        let published = p.published_port.unwrap_or(0);
        if published == 0 {
            continue;
        }
        let port = (published, protocol(p), is_ingress(p));
        if !out.contains(&port) {
            out.push(port);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::{Action, Batch, StoreError, StoreState};
    use shoal_api::{engine, Meta, Object, ObjectKind, Service};

    fn service(id: &str, name: &str, ports: &[(i64, bool)]) -> Service {
        let ports: Vec<engine::EndpointPortConfig> = ports
            .iter()
            .map(|&(p, ingress)| engine::EndpointPortConfig {
                published_port: Some(p),
                target_port: Some(80),
                publish_mode: Some(if ingress {
                    engine::EndpointPortConfigPublishModeEnum::INGRESS
                } else {
                    engine::EndpointPortConfigPublishModeEnum::HOST
                }),
                ..Default::default()
            })
            .collect();
        Service {
            id: id.into(),
            meta: Meta::new_now(),
            spec: Box::new(engine::ServiceSpec {
                name: Some(name.into()),
                endpoint_spec: Some(engine::EndpointSpec {
                    ports: Some(ports),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            previous_spec: None,
            spec_version: 1,
            endpoint: None,
            update_status: None,
            registry_auth: None,
            job_iteration: 0,
        }
    }

    fn batch(actions: Vec<Action>) -> Batch {
        Batch { actions }
    }

    fn create(s: Service) -> Action {
        Action::Create(Object::Service(s))
    }

    #[test]
    fn a_second_service_with_a_taken_name_is_refused_on_apply() {
        let mut st = StoreState::default();
        st.apply(1, &batch(vec![create(service("a", "web", &[]))]))
            .unwrap();
        let err = st
            .apply(2, &batch(vec![create(service("b", "WEB", &[]))]))
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::Conflict(
                "name conflicts with an existing object: service WEB already exists".into()
            )
        );
        assert_eq!(st.services.len(), 1);
        // Two creates of one name in one batch: refused as a whole.
        let err = st
            .apply(
                3,
                &batch(vec![
                    create(service("c", "api", &[])),
                    create(service("d", "api", &[])),
                ]),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert_eq!(st.services.len(), 1);
        // Once the holder is gone (even earlier in the same batch) the name is free.
        st.apply(
            4,
            &batch(vec![
                Action::Delete(ObjectKind::Service, "a".into()),
                create(service("e", "web", &[])),
            ]),
        )
        .unwrap();
        assert_eq!(st.services["e"].name(), "web");
    }

    #[test]
    fn updates_that_keep_the_name_pass_even_over_an_old_duplicate() {
        let mut st = StoreState::default();
        st.apply(1, &batch(vec![create(service("a", "web", &[]))]))
            .unwrap();
        // A duplicate written before the rule existed (straight into the state).
        st.services.insert("b".into(), service("b", "web", &[]));
        let mut b = st.services["b"].clone();
        b.spec_version = 2;
        st.apply(2, &batch(vec![Action::Update(Object::Service(b))]))
            .unwrap();
        assert_eq!(st.services["b"].spec_version, 2);
    }

    #[test]
    fn published_ports_stay_exclusive_on_apply() {
        let mut st = StoreState::default();
        st.apply(1, &batch(vec![create(service("a", "a", &[(8080, true)]))]))
            .unwrap();
        let err = st
            .apply(2, &batch(vec![create(service("b", "b", &[(8080, true)]))]))
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::Invalid(
                "port '8080' is already in use by service 'a' (a) as an ingress port".into()
            )
        );
        let err = st
            .apply(3, &batch(vec![create(service("c", "c", &[(8080, false)]))]))
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        // Host-mode ports may be shared by host-mode services.
        st.apply(
            4,
            &batch(vec![create(service("h1", "h1", &[(9000, false)]))]),
        )
        .unwrap();
        st.apply(
            5,
            &batch(vec![create(service("h2", "h2", &[(9000, false)]))]),
        )
        .unwrap();
        let err = st
            .apply(6, &batch(vec![create(service("i", "i", &[(9000, true)]))]))
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::Invalid(
                "port '9000' is already in use by service 'h1' (h1) as a host-published port"
                    .into()
            )
        );
        // An update that keeps its own port is fine.
        let mut a = st.services["a"].clone();
        a.spec_version = 2;
        st.apply(7, &batch(vec![Action::Update(Object::Service(a))]))
            .unwrap();
    }

    #[test]
    fn refusals_round_trip_through_the_rejection_text() {
        for e in [
            StoreError::OutOfSequence,
            StoreError::Conflict("name conflicts with an existing object: x".into()),
            StoreError::Invalid("port '1' is already in use".into()),
            StoreError::NotFound {
                kind: ObjectKind::Service,
                id: "s".into(),
            },
        ] {
            assert_eq!(StoreError::from_rejection(&e.to_rejection()), e);
        }
        // Reasons from a manager that sent plain text are still refusals.
        assert_eq!(
            StoreError::from_rejection("update out of sequence"),
            StoreError::OutOfSequence
        );
        assert_eq!(
            StoreError::from_rejection("something else"),
            StoreError::Conflict("something else".into())
        );
    }

    fn secret(id: &str, name: &str) -> shoal_api::Secret {
        shoal_api::Secret {
            id: id.into(),
            meta: Meta::new_now(),
            spec: engine::SecretSpec {
                name: Some(name.into()),
                data: Some("c2VjcmV0".into()),
                ..Default::default()
            },
        }
    }

    fn network(id: &str, name: &str) -> shoal_api::Network {
        shoal_api::Network {
            id: id.into(),
            meta: Meta::new_now(),
            spec: Box::new(engine::NetworkCreateRequest {
                name: name.into(),
                driver: Some("overlay".into()),
                ..Default::default()
            }),
            subnets: Vec::new(),
            vni: 4097,
        }
    }

    #[test]
    fn network_secret_and_config_names_are_unique_per_kind_on_apply() {
        let mut st = StoreState::default();
        st.apply(
            1,
            &batch(vec![
                Action::Create(Object::Secret(secret("s1", "db"))),
                Action::Create(Object::Network(network("n1", "db"))),
            ]),
        )
        .unwrap();
        let err = st
            .apply(
                2,
                &batch(vec![Action::Create(Object::Secret(secret("s2", "DB")))]),
            )
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::Conflict(
                "rpc error: code = AlreadyExists desc = secret DB already exists".into()
            )
        );
        let err = st
            .apply(
                3,
                &batch(vec![Action::Create(Object::Network(network("n2", "db")))]),
            )
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::Conflict("network with name db already exists".into())
        );
        // A config may share a secret's name: the rule is per kind.
        let config = shoal_api::Config {
            id: "c1".into(),
            meta: Meta::new_now(),
            spec: engine::ConfigSpec {
                name: Some("db".into()),
                ..Default::default()
            },
        };
        st.apply(4, &batch(vec![Action::Create(Object::Config(config))]))
            .unwrap();
        // Two creates of one name in one batch are refused as a whole.
        let err = st
            .apply(
                5,
                &batch(vec![
                    Action::Create(Object::Secret(secret("s3", "x"))),
                    Action::Create(Object::Secret(secret("s4", "x"))),
                ]),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert_eq!(st.secrets.len(), 1);
        // Updating the holder keeps its name; once deleted the name is free again.
        let mut s1 = st.secrets["s1"].clone();
        s1.spec.labels = Some([("a".to_string(), "b".to_string())].into());
        st.apply(6, &batch(vec![Action::Update(Object::Secret(s1))]))
            .unwrap();
        st.apply(
            7,
            &batch(vec![
                Action::Delete(ObjectKind::Secret, "s1".into()),
                Action::Create(Object::Secret(secret("s5", "db"))),
            ]),
        )
        .unwrap();
        assert_eq!(st.secrets["s5"].name(), "db");
    }

    #[test]
    fn snapshots_without_networks_secrets_or_configs_still_load() {
        let old = r#"{"cluster":null,"nodes":{},"services":{},"tasks":{},"last_index":7}"#;
        let st: StoreState = serde_json::from_str(old).unwrap();
        assert_eq!(st.last_index, 7);
        assert!(st.networks.is_empty() && st.secrets.is_empty() && st.configs.is_empty());
    }

    #[test]
    fn network_subnets_and_vnis_stay_exclusive_on_apply() {
        let mut st = StoreState::default();
        let mut a = network("a", "a");
        a.subnets = vec![shoal_api::NetworkSubnet {
            subnet: "10.0.1.0/24".into(),
            gateway: "10.0.1.1".into(),
            ip_range: String::new(),
        }];
        st.apply(1, &batch(vec![Action::Create(Object::Network(a.clone()))]))
            .unwrap();
        // Another manager allocated the same block at the same time.
        let mut b = a.clone();
        b.id = "b".into();
        b.spec.name = "b".into();
        b.vni = 4098;
        let err = st
            .apply(2, &batch(vec![Action::Create(Object::Network(b.clone()))]))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(ref m) if m.contains("overlaps")),
            "{err:?}"
        );
        b.subnets[0].subnet = "10.0.0.0/16".into();
        assert!(st
            .apply(3, &batch(vec![Action::Create(Object::Network(b.clone()))]))
            .is_err());
        b.subnets[0].subnet = "10.0.2.0/24".into();
        b.vni = a.vni;
        let err = st
            .apply(4, &batch(vec![Action::Create(Object::Network(b.clone()))]))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(ref m) if m.contains("VXLAN")),
            "{err:?}"
        );
        b.vni = 4098;
        st.apply(5, &batch(vec![Action::Create(Object::Network(b))]))
            .unwrap();
        assert_eq!(st.networks.len(), 2);
    }
}
