//! The allocator: moves new tasks to `pending` once they may be scheduled.
//!
//! ```text
//!  new ──(start gates open)──► network attachments + task addresses ([`addresses`]) ──► pending
//!   │      shoal.start-after  = not before this time (restart delay)
//!   │      shoal.wait-for     = not before that task stopped (stop-first update, drain)
//!   └─ desired shutdown/remove before it was ever pending ──► shutdown
//! ```
//!
//! Services' published ports are allocated here too ([`endpoint`]): each pass gives every
//! service whose `Endpoint` does not match its spec one (`SetEndpoint`), ingress ports the spec
//! leaves 0 taken from 30000-32767. Tasks do not wait for it (nothing routes to the published
//! ports yet). The same pass gives services their virtual IPs, tasks their addresses on the
//! networks they attach to (ingress when the service publishes in ingress mode, then the
//! spec's networks), and nodes their own address on each overlay they take part in, from one
//! [`addresses::AddressBook`] so nothing handed out in a pass collides. A task attached to no
//! network is released by the orchestrator that creates it ([`release_created`]); one that
//! needs addresses waits for this pass.

pub mod addresses;
pub mod endpoint;

use crate::orchestrator::{wants_to_run, Intent, Plan};
use chrono::{DateTime, Utc};
use shoal_api::{NodeState, Task, TaskState};
use shoal_store::StoreState;

/// Label: the task may not be scheduled before this RFC 3339 time (a restart delay).
pub const START_AFTER_LABEL: &str = "shoal.start-after";
/// Label: the task may not be scheduled before the tasks with these IDs (comma-separated)
/// stopped.
pub const WAIT_FOR_LABEL: &str = "shoal.wait-for";
/// Status message of a task the allocator released to the scheduler (swarmkit's).
pub const PENDING_MESSAGE: &str = "pending task scheduling";

/// Why a new task is not released yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Its restart delay ends then.
    Until(DateTime<Utc>),
    /// The task it replaces is still stopping.
    WaitFor(String),
}

/// The gate that still holds `t` at `now`, if any.
pub fn hold(state: &StoreState, t: &Task, now: DateTime<Utc>) -> Option<Hold> {
    if let Some(at) = t
        .labels
        .get(START_AFTER_LABEL)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
    {
        if at > now {
            return Some(Hold::Until(at));
        }
    }
    // Comma-separated: a replacement waits for every task of its slot still on a node.
    for old_id in t
        .labels
        .get(WAIT_FOR_LABEL)
        .into_iter()
        .flat_map(|v| v.split(','))
    {
        if let Some(old) = state.tasks.get(old_id) {
            let node_alive = old
                .node_id
                .as_deref()
                .and_then(|n| state.nodes.get(n))
                .is_some_and(|n| n.status.state != NodeState::Down);
            if old.status.state.is_active_on_node() && node_alive {
                return Some(Hold::WaitFor(old_id.to_string()));
            }
        }
    }
    None
}

/// Whether a task can be released without an allocation pass: it is attached to no network
/// (its addresses are given by [`plan`], which sees every address handed out in one pass).
fn needs_no_addresses(state: &StoreState, t: &Task) -> bool {
    let svc = state.services.get(&t.service_id);
    addresses::task_networks(state, svc, Some(&*t.spec)).is_ok_and(|n| n.is_empty())
}

/// Releases a task the orchestrator is about to create, in memory: when no gate holds it
/// and it is attached to no network, it becomes `pending` exactly as [`plan`] would make it
/// in a later transaction. Returns whether it was released (a held task stays `new`, for
/// [`plan`] to release when its gate opens).
pub fn release_created(state: &StoreState, t: &mut Task, now: DateTime<Utc>) -> bool {
    if t.status.state != TaskState::New || !wants_to_run(t.desired_state) {
        return false;
    }
    if hold(state, t, now).is_some() || !needs_no_addresses(state, t) {
        return false;
    }
    t.status.state = TaskState::Pending;
    t.status.message = PENDING_MESSAGE.into();
    t.status.timestamp = now;
    true
}

/// The endpoint a service created or updated in this transaction should have now (its
/// published ports and VIPs, as the allocator pass would give them), so the pass finds nothing
/// to write right after the change: a client that reads the service and updates it at once
/// does not meet a version bumped behind its back. Keeps the current endpoint when no port is
/// free (the pass retries).
pub fn endpoint_now(
    state: &StoreState,
    svc: &shoal_api::Service,
) -> Option<shoal_api::engine::ServiceEndpoint> {
    let mut ports = endpoint::PortMap::of(state);
    let mut book = addresses::AddressBook::of(state);
    match endpoint::allocate(svc, &mut ports) {
        Ok(mut e) => {
            e.virtual_ips = addresses::virtual_ips(state, &mut book, svc);
            if endpoint::needs_write(svc, &e) {
                Some(e)
            } else {
                svc.endpoint.clone()
            }
        }
        Err(_) => svc.endpoint.clone(),
    }
}

/// Plans the services' endpoints and the release of new tasks.
pub fn plan(state: &StoreState, now: DateTime<Utc>) -> Plan {
    let mut plan = Plan::default();
    let mut ports = endpoint::PortMap::of(state);
    let mut book = addresses::AddressBook::of(state);
    for s in state.services.values() {
        match endpoint::allocate(s, &mut ports) {
            Ok(mut e) => {
                e.virtual_ips = addresses::virtual_ips(state, &mut book, s);
                if endpoint::needs_write(s, &e) {
                    plan.push(Intent::SetEndpoint {
                        service_id: s.id.clone(),
                        endpoint: Box::new(e),
                    });
                }
            }
            Err(e) => tracing::debug!(service = %s.id, error = %e, "port allocation failed"),
        }
    }
    for t in state.tasks.values() {
        if t.status.state != TaskState::New {
            continue;
        }
        if !wants_to_run(t.desired_state) {
            plan.push(Intent::SetStatus {
                task_id: t.id.clone(),
                from: TaskState::New,
                to: TaskState::Shutdown,
                message: t.status.message.clone(),
            });
            continue;
        }
        match hold(state, t, now) {
            Some(Hold::Until(at)) => {
                plan.wake_at(at);
                continue;
            }
            Some(Hold::WaitFor(_)) => continue,
            None => {}
        }
        match addresses::attach(state, &mut book, t) {
            Ok(networks) => plan.push(Intent::Release {
                task_id: t.id.clone(),
                networks,
            }),
            Err(e) => tracing::debug!(task = %t.id, error = %e, "allocation failed"),
        }
    }
    for n in state.nodes.values() {
        let want = addresses::node_addresses(state, &mut book, &n.id);
        if want != n.network_addresses {
            plan.push(Intent::SetNodeAddresses {
                node_id: n.id.clone(),
                addresses: want,
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::*;
    use chrono::{SecondsFormat, TimeDelta};

    fn released(p: &Plan) -> Vec<String> {
        p.intents
            .iter()
            .filter_map(|i| match i {
                Intent::Release { task_id, .. } => Some(task_id.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn new_tasks_become_pending() {
        let s = replicated("web", 1);
        let t = task(&s, 1, None, TaskState::New);
        let id = t.id.clone();
        let st = state(vec![], vec![s], vec![t]);
        let p = plan(&st, Utc::now());
        assert_eq!(released(&p), vec![id]);
    }

    #[test]
    fn start_after_gate_holds_until_its_time() {
        let s = replicated("web", 1);
        let mut t = task(&s, 1, None, TaskState::New);
        let now = Utc::now();
        let at = now + TimeDelta::seconds(3);
        t.labels.insert(
            START_AFTER_LABEL.into(),
            at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        );
        let st = state(vec![], vec![s], vec![t]);
        let p = plan(&st, now);
        assert!(released(&p).is_empty());
        assert_eq!(p.next_wakeup, Some(at));
        assert_eq!(released(&plan(&st, at)).len(), 1);
    }

    #[test]
    fn wait_for_gate_holds_while_the_old_task_runs_on_a_live_node() {
        let s = replicated("web", 1);
        let mut old = task(&s, 1, Some("n1"), TaskState::Running);
        old.desired_state = TaskState::Shutdown;
        let mut new = task(&s, 1, None, TaskState::New);
        new.labels.insert(WAIT_FOR_LABEL.into(), old.id.clone());
        let st = state(
            vec![node("n1")],
            vec![s.clone()],
            vec![old.clone(), new.clone()],
        );
        assert!(released(&plan(&st, Utc::now())).is_empty());
        // Once it stopped (or its node went down, or it was deleted) the new one goes.
        let mut stopped = old.clone();
        stopped.status.state = TaskState::Shutdown;
        let st = state(
            vec![node("n1")],
            vec![s.clone()],
            vec![stopped, new.clone()],
        );
        assert_eq!(released(&plan(&st, Utc::now())).len(), 1);
        let mut down = node("n1");
        down.status.state = NodeState::Down;
        let st = state(vec![down], vec![s.clone()], vec![old, new.clone()]);
        assert_eq!(released(&plan(&st, Utc::now())).len(), 1);
        let st = state(vec![], vec![s], vec![new]);
        assert_eq!(released(&plan(&st, Utc::now())).len(), 1);
    }

    fn with_ports(id: &str, published: &[i64]) -> shoal_api::Service {
        let mut s = replicated(id, 1);
        s.spec.endpoint_spec = Some(shoal_api::engine::EndpointSpec {
            mode: None,
            ports: Some(
                published
                    .iter()
                    .map(|&p| shoal_api::engine::EndpointPortConfig {
                        target_port: Some(80),
                        published_port: Some(p),
                        ..Default::default()
                    })
                    .collect(),
            ),
        });
        s
    }

    fn endpoints(p: &Plan) -> Vec<(String, Vec<Option<i64>>)> {
        p.intents
            .iter()
            .filter_map(|i| match i {
                Intent::SetEndpoint {
                    service_id,
                    endpoint,
                } => Some((
                    service_id.clone(),
                    endpoint
                        .ports
                        .iter()
                        .flatten()
                        .map(|p| p.published_port)
                        .collect(),
                )),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn endpoints_are_written_once_and_unique_across_services() {
        use shoal_api::Object;
        let store = shoal_store::Store::new();
        let a = with_ports("a", &[8080]);
        let b = with_ports("b", &[0]);
        let c = with_ports("c", &[0]);
        store
            .update(|tx| {
                for s in [&a, &b, &c] {
                    tx.create(Object::Service(s.clone()))?;
                }
                Ok::<_, shoal_store::StoreError>(())
            })
            .await
            .unwrap();
        let p = store.view(|st| plan(st, Utc::now()));
        assert_eq!(
            endpoints(&p),
            vec![
                ("a".to_string(), vec![Some(8080)]),
                ("b".to_string(), vec![Some(30000)]),
                ("c".to_string(), vec![Some(30001)]),
            ]
        );
        store
            .update(|tx| {
                Ok::<_, shoal_store::StoreError>(crate::orchestrator::apply(tx, &p.intents))
            })
            .await
            .unwrap();
        // Allocated: the next pass (another leader's too) has nothing to write.
        assert!(endpoints(&store.view(|st| plan(st, Utc::now()))).is_empty());
        let shown = store.view(|st| st.services["c"].endpoint.clone()).unwrap();
        assert_eq!(shown.ports.unwrap()[0].published_port, Some(30001));
        // A service asking for a port another one was given is refused when applied.
        let d = with_ports("d", &[30000]);
        let err = store
            .update(|tx| tx.create(Object::Service(d.clone())))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "port '30000' is already in use by service 'b' (b) as an ingress port"
        );
        // Once `b` is gone its port is the lowest free one again.
        store
            .update(|tx| {
                tx.delete(shoal_api::ObjectKind::Service, "b")?;
                tx.create(Object::Service(with_ports("e", &[0])))
            })
            .await
            .unwrap();
        let p = store.view(|st| plan(st, Utc::now()));
        assert_eq!(endpoints(&p), vec![("e".to_string(), vec![Some(30000)])]);
    }

    #[test]
    fn new_task_no_longer_wanted_is_shut_down() {
        let s = replicated("web", 1);
        let mut t = task(&s, 1, None, TaskState::New);
        t.desired_state = TaskState::Remove;
        let st = state(vec![], vec![s], vec![t]);
        let p = plan(&st, Utc::now());
        assert!(matches!(
            p.intents.as_slice(),
            [Intent::SetStatus {
                to: TaskState::Shutdown,
                ..
            }]
        ));
    }
}
