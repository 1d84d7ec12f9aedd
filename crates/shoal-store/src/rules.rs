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
//! ```
//!
//! Only what a batch *adds* is checked (a new name, a newly published port), so a state that
//! already holds a violation (written before these rules) does not block unrelated updates.

use crate::state::{Action, Batch, StoreState};
use crate::StoreError;
use shoal_api::spec::{port_is_ingress as is_ingress, port_protocol as protocol};
use shoal_api::{Object, ObjectKind, Service};
use std::collections::BTreeMap;

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
}
