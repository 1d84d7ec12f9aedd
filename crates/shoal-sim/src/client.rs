//! The simulated client: creates, scales and updates services through whichever manager the
//! schedule picks, and keeps a [`Ledger`] of every write and how it ended.
//!
//! ```text
//!  every 150-700 ms (simulated, `client_pause_ms`):  pick an op and a manager
//!     Control::{create,update}_service on that manager's store
//!        Ok                                   ─► Acked      (must survive: invariant 2)
//!        "not the leader" (no forwarding)     ─► retry on the leader (never proposed)
//!        out of sequence (stale read)         ─► retry with a fresh read
//!        manager down                         ─► retry on the leader (connection refused)
//!        no quorum, shut down, timed out      ─► Ambiguous  (may or may not be applied)
//!        anything else (validation, conflict,
//!        refused when applied)                ─► Rejected   (must not be applied)
//! ```
//!
//! Every write sets the service label `sim.write` to its own number, so the final state shows
//! exactly which write a service's spec came from. The client issues one write at a time, so
//! write numbers follow real time, and Raft commits writes in that order: after the last
//! acknowledged write to a service, only later ambiguous writes may have replaced it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_api::engine;
use shoal_api::spec::{self, ServiceMode};
use shoal_manager::control::{Control, ControlError};
use shoal_store::StoreState;
use tokio::sync::watch;

use crate::clock::{Journal, SimClock};
use crate::cluster::Cluster;
use crate::config::SimConfig;
use crate::glue::{is_not_leader, is_rejected};

/// The service label holding the number of the write the spec came from.
pub const MARKER: &str = "sim.write";
/// Prefix of the names of the services the client creates.
pub const NAME_PREFIX: &str = "sim-";

/// How a write ended, as the client saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `Ok`: applied on a majority; it must never be lost.
    Acked,
    /// Definitely not applied.
    Rejected(String),
    /// Unknown: it may have been committed.
    Ambiguous(String),
}

/// The kind of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `service create`.
    Create,
    /// `service scale` (replicas only).
    Scale,
    /// `service update --image` (a rolling update).
    Update,
}

/// One client write.
#[derive(Clone, Debug)]
pub struct WriteRec {
    /// Its number (the `sim.write` label).
    pub n: u64,
    /// The service's name.
    pub service: String,
    /// What it did.
    pub op: Op,
    /// The replicas and image of the spec it sent (last attempt).
    pub replicas: i64,
    /// See `replicas`.
    pub image: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Managers tried, in order.
    pub via: Vec<u64>,
    /// When it was issued (simulated).
    pub at: Duration,
}

/// Every client write of a run.
#[derive(Default)]
pub struct Ledger(Mutex<Vec<WriteRec>>);

impl Ledger {
    fn push(&self, w: WriteRec) {
        if let Ok(mut l) = self.0.lock() {
            l.push(w);
        }
    }

    /// Every write so far.
    pub fn all(&self) -> Vec<WriteRec> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Counts of acked, ambiguous and rejected writes.
    pub fn counts(&self) -> (usize, usize, usize) {
        let all = self.all();
        let n = |f: fn(&Outcome) -> bool| all.iter().filter(|w| f(&w.outcome)).count();
        (
            n(|o| *o == Outcome::Acked),
            n(|o| matches!(o, Outcome::Ambiguous(_))),
            n(|o| matches!(o, Outcome::Rejected(_))),
        )
    }

    /// Invariant (2) on one manager's final state: every acknowledged write is there (or was
    /// replaced by a later write that may have been applied), and no rejected write is.
    pub fn check(&self, state: &StoreState) -> Result<(), String> {
        let all = self.all();
        let mut by_service: BTreeMap<&str, Vec<&WriteRec>> = BTreeMap::new();
        for w in &all {
            by_service.entry(w.service.as_str()).or_default().push(w);
        }
        let mut problems = Vec::new();
        for (name, writes) in by_service {
            let last_acked = writes.iter().rposition(|w| w.outcome == Outcome::Acked);
            let allowed: Vec<u64> = match last_acked {
                Some(i) => std::iter::once(writes[i])
                    .chain(
                        writes[i + 1..]
                            .iter()
                            .copied()
                            .filter(|w| matches!(w.outcome, Outcome::Ambiguous(_))),
                    )
                    .map(|w| w.n)
                    .collect(),
                None => writes
                    .iter()
                    .filter(|w| matches!(w.outcome, Outcome::Ambiguous(_)))
                    .map(|w| w.n)
                    .collect(),
            };
            let svc = state.services.values().find(|s| s.name() == name);
            let Some(svc) = svc else {
                if let Some(i) = last_acked {
                    let w = writes[i];
                    problems.push(format!(
                        "acknowledged write w{} ({:?} of {name}) lost: the service does not exist",
                        w.n, w.op
                    ));
                }
                continue;
            };
            let marker = svc
                .spec
                .labels
                .as_ref()
                .and_then(|l| l.get(MARKER))
                .and_then(|m| m.parse::<u64>().ok());
            let Some(w) = marker.and_then(|m| writes.iter().find(|w| w.n == m)) else {
                problems.push(format!(
                    "service {name} carries marker {marker:?}, which no write of it set"
                ));
                continue;
            };
            if let Outcome::Rejected(why) = &w.outcome {
                problems.push(format!(
                    "write w{} ({:?} of {name}) failed ({why}) but was applied",
                    w.n, w.op
                ));
                continue;
            }
            if !allowed.contains(&w.n) {
                let acked = last_acked.map(|i| writes[i].n);
                problems.push(format!(
                    "acknowledged write w{} to {name} lost: the service shows the spec of w{} \
                     (allowed: {allowed:?})",
                    acked.unwrap_or_default(),
                    w.n
                ));
                continue;
            }
            let replicas = match spec::service_mode(&svc.spec) {
                ServiceMode::Replicated { replicas } => replicas as i64,
                _ => -1,
            };
            if replicas != w.replicas || image_of(&svc.spec) != w.image {
                problems.push(format!(
                    "service {name} shows marker w{} but replicas {replicas} image {} \
                     (the write sent replicas {} image {})",
                    w.n,
                    image_of(&svc.spec),
                    w.replicas,
                    w.image
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

fn image_of(spec: &engine::ServiceSpec) -> String {
    spec.task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn set_replicas(spec: &mut engine::ServiceSpec, replicas: i64) {
    spec.mode = Some(engine::ServiceSpecMode {
        replicated: Some(engine::ServiceSpecModeReplicated {
            replicas: Some(replicas),
        }),
        ..Default::default()
    });
}

fn set_image(spec: &mut engine::ServiceSpec, image: &str) {
    spec.task_template
        .get_or_insert_with(Default::default)
        .container_spec
        .get_or_insert_with(Default::default)
        .image = Some(image.to_string());
}

fn set_marker(spec: &mut engine::ServiceSpec, n: u64) {
    spec.labels
        .get_or_insert_with(HashMap::new)
        .insert(MARKER.into(), n.to_string());
}

/// A new service's spec: replicated, a short restart delay, a fast rolling update.
fn new_spec(
    rng: &mut StdRng,
    name: &str,
    replicas: i64,
    image: &str,
    n: u64,
) -> engine::ServiceSpec {
    use engine::ServiceSpecUpdateConfigFailureActionEnum as F;
    let mut spec = engine::ServiceSpec {
        name: Some(name.into()),
        task_template: Some(engine::TaskSpec {
            restart_policy: Some(engine::TaskSpecRestartPolicy {
                condition: Some(engine::TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(rng.random_range(50..=500) * 1_000_000),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_config: Some(engine::ServiceSpecUpdateConfig {
            parallelism: Some(rng.random_range(1..=2)),
            delay: Some(0),
            failure_action: Some(if rng.random_bool(0.5) {
                F::PAUSE
            } else {
                F::CONTINUE
            }),
            monitor: Some(500_000_000),
            ..Default::default()
        }),
        ..Default::default()
    };
    set_replicas(&mut spec, replicas);
    set_image(&mut spec, image);
    set_marker(&mut spec, n);
    spec
}

/// Issues writes until `stop` turns true (finishing the one in progress).
pub async fn run_client(
    cluster: Arc<Cluster>,
    ledger: Arc<Ledger>,
    cfg: SimConfig,
    seed: u64,
    clock: SimClock,
    journal: Journal,
    stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    let mut created = 0usize;
    loop {
        let (lo, hi) = cfg.client_pause_ms;
        let pause = Duration::from_millis(rng.random_range(lo..=hi.max(lo)));
        tokio::time::sleep(pause).await;
        if *stop.borrow() {
            return;
        }
        n += 1;
        // What exists, as the leader sees it (a client would `service ls`).
        let existing: Vec<String> = match cluster.leader() {
            Some(l) => l.store.view(|s| {
                s.services
                    .values()
                    .map(|svc| svc.name().to_string())
                    .filter(|name| name.starts_with(NAME_PREFIX))
                    .collect()
            }),
            None => ledger
                .all()
                .into_iter()
                .filter(|w| w.op == Op::Create && w.outcome == Outcome::Acked)
                .map(|w| w.service)
                .collect(),
        };
        let create = created < cfg.max_services && (existing.is_empty() || rng.random_bool(0.25));
        let (op, service) = if create {
            created += 1;
            (Op::Create, format!("{NAME_PREFIX}{created}"))
        } else if existing.is_empty() {
            continue;
        } else {
            let name = existing[rng.random_range(0..existing.len())].clone();
            let op = if rng.random_bool(0.5) {
                Op::Scale
            } else {
                Op::Update
            };
            (op, name)
        };
        let replicas = if op == Op::Scale && rng.random_bool(0.1) {
            0
        } else {
            rng.random_range(1..=cfg.max_replicas)
        };
        let image = format!("registry.sim/app:{n}");
        let spec = new_spec(&mut rng, &service, replicas, &image, n);
        let target = rng.random_range(1..=cfg.managers);
        let at = clock.elapsed();
        let (outcome, via, sent) = perform(
            &cluster, &mut rng, op, &service, spec, replicas, &image, n, target,
        )
        .await;
        let (replicas, image) = sent.unwrap_or((replicas, image));
        journal.note(format!(
            "client w{n} {op:?} {service} replicas={replicas} image={image} via {via:?}: {outcome:?}"
        ));
        ledger.push(WriteRec {
            n,
            service,
            op,
            replicas,
            image,
            outcome,
            via,
            at,
        });
    }
}

/// One write, with the retries a client makes. Returns the outcome, the managers tried, and
/// the (replicas, image) of the spec last sent.
#[allow(clippy::too_many_arguments)]
async fn perform(
    cluster: &Cluster,
    rng: &mut StdRng,
    op: Op,
    service: &str,
    create_spec: engine::ServiceSpec,
    replicas: i64,
    image: &str,
    n: u64,
    mut target: u64,
) -> (Outcome, Vec<u64>, Option<(i64, String)>) {
    let mut via = Vec::new();
    let mut sent = None;
    let mut last = String::new();
    for _ in 0..6 {
        let Some(live) = cluster.live(target) else {
            // Connection refused: nothing was sent. Try the leader (or anyone) next.
            target = cluster
                .leader()
                .map(|l| l.id)
                .unwrap_or_else(|| rng.random_range(1..=cluster.ids().len() as u64));
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        via.push(target);
        let control = Control::new(live.store.clone());
        let res = match op {
            Op::Create => {
                sent = Some((replicas, image.to_string()));
                control
                    .create_service(create_spec.clone(), None)
                    .await
                    .map(|_| ())
            }
            Op::Scale | Op::Update => match control.resolve_service(service) {
                Err(e) => Err(e),
                Ok(svc) => {
                    let mut spec = (*svc.spec).clone();
                    if op == Op::Scale {
                        set_replicas(&mut spec, replicas);
                    } else {
                        set_image(&mut spec, image);
                    }
                    set_marker(&mut spec, n);
                    let r = match spec::service_mode(&spec) {
                        ServiceMode::Replicated { replicas } => replicas as i64,
                        _ => -1,
                    };
                    sent = Some((r, image_of(&spec)));
                    control
                        .update_service(&svc.id, svc.meta.version, spec, None, false)
                        .await
                }
            },
        };
        let is_leader = cluster.leader().map(|l| l.id) == Some(target);
        match res {
            Ok(()) => return (Outcome::Acked, via, sent),
            Err(ControlError::Unavailable(m)) if is_not_leader(&m) => {
                // No leader known: wait for an election, as a client retrying would.
                let wait = match cluster.leader() {
                    Some(l) => {
                        target = l.id;
                        50
                    }
                    None => 400,
                };
                last = m;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Err(ControlError::OutOfSequence) => {
                last = "update out of sequence".into();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(ControlError::NotFound(m)) if !is_leader => {
                // A follower that has not caught up yet: ask the leader.
                target = cluster.leader().map(|l| l.id).unwrap_or(target);
                last = m;
            }
            Err(ControlError::Unavailable(m)) if is_rejected(&m) => {
                return (Outcome::Rejected(m), via, sent)
            }
            Err(ControlError::Unavailable(m)) => return (Outcome::Ambiguous(m), via, sent),
            Err(e) => return (Outcome::Rejected(e.to_string()), via, sent),
        }
    }
    (
        Outcome::Rejected(format!("gave up after 6 attempts, last: {last}")),
        via,
        sent,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Meta, Object, Service};

    fn rec(n: u64, op: Op, replicas: i64, outcome: Outcome) -> WriteRec {
        WriteRec {
            n,
            service: "sim-1".into(),
            op,
            replicas,
            image: "img".into(),
            outcome,
            via: vec![1],
            at: Duration::ZERO,
        }
    }

    fn state_with(marker: u64, replicas: i64) -> StoreState {
        let mut spec = engine::ServiceSpec {
            name: Some("sim-1".into()),
            ..Default::default()
        };
        set_replicas(&mut spec, replicas);
        set_image(&mut spec, "img");
        set_marker(&mut spec, marker);
        // Through serde, so fields other crates add with defaults need no change here.
        let svc: Service = serde_json::from_value(serde_json::json!({
            "id": "s1",
            "meta": Meta::new_now(),
            "spec": spec,
            "previous_spec": null,
            "spec_version": 1,
        }))
        .expect("a service");
        let mut st = StoreState::default();
        st.apply(
            1,
            &shoal_store::Batch {
                actions: vec![shoal_store::Action::Create(Object::Service(svc))],
            },
        )
        .expect("apply");
        st
    }

    fn ledger(writes: Vec<WriteRec>) -> Ledger {
        Ledger(Mutex::new(writes))
    }

    #[test]
    fn the_last_acknowledged_write_must_show() {
        let l = ledger(vec![
            rec(1, Op::Create, 2, Outcome::Acked),
            rec(2, Op::Scale, 3, Outcome::Acked),
        ]);
        assert!(l.check(&state_with(2, 3)).is_ok());
        let err = l.check(&state_with(1, 2)).unwrap_err();
        assert!(err.contains("acknowledged write w2"), "{err}");
        let err = l.check(&StoreState::default()).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = l.check(&state_with(2, 4)).unwrap_err();
        assert!(err.contains("replicas 4"), "{err}");
    }

    #[test]
    fn later_ambiguous_writes_may_show_rejected_ones_may_not() {
        let l = ledger(vec![
            rec(1, Op::Create, 2, Outcome::Acked),
            rec(2, Op::Scale, 3, Outcome::Ambiguous("timeout".into())),
            rec(3, Op::Scale, 4, Outcome::Rejected("conflict".into())),
        ]);
        assert!(l.check(&state_with(1, 2)).is_ok());
        assert!(l.check(&state_with(2, 3)).is_ok());
        let err = l.check(&state_with(3, 4)).unwrap_err();
        assert!(err.contains("failed (conflict) but was applied"), "{err}");
        // A create that never was acknowledged may be missing.
        let l = ledger(vec![rec(1, Op::Create, 2, Outcome::Ambiguous("t".into()))]);
        assert!(l.check(&StoreState::default()).is_ok());
        assert!(l.check(&state_with(1, 2)).is_ok());
    }
}
