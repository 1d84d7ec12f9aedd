//! The properties a run must keep, checked while it runs and once it has settled.
//!
//! ```text
//!  continuously                                     after healing and quiescence
//!  ────────────                                     ────────────────────────────
//!  (1) TermLog: every (term, leader) seen in any    (2) every acknowledged client write is in
//!      manager's Raft metrics; two leaders in one       every manager's state (ledger check)
//!      term is a violation (standard Raft:          (3) every manager's state is the same
//!      openraft's single-term-leader, see TermLog)
//!  (S) every manager's store: at most one task per  (4) each replicated service: slots 1..=N
//!      slot that is desired running AND running         have exactly one task desired running
//!  (P) the agents: at most one live process per         and running, none above N; the agents
//!      slot (tasks being removed excepted)              run exactly those tasks
//!  (R) a restarted manager recovers at least what   (1) again over the whole run
//!      it had applied before the crash
//! ```
//!
//! Violations are collected in [`Violations`]; the driver stops the run at the first one. A
//! violation that matches a known, reported defect is recorded as a hit and shown with the run
//! instead (`SHOAL_SIM_STRICT=1`: a violation like any other).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use shoal_api::spec::{self, ServiceMode};
use shoal_api::TaskState;
use shoal_store::StoreState;

/// Invariant violations seen so far (shared by every observer of a run), and hits of known
/// defects, which are reported with the run instead of failing it.
#[derive(Clone, Default)]
pub struct Violations {
    seen: Arc<Mutex<Vec<String>>>,
    known: Arc<Mutex<Vec<String>>>,
}

impl Violations {
    /// Records a violation.
    pub fn report(&self, what: impl Into<String>) {
        if let Ok(mut v) = self.seen.lock() {
            v.push(what.into());
        }
    }

    /// Records a hit of a known defect (once per distinct description).
    pub fn known(&self, what: impl Into<String>) {
        let what = what.into();
        if let Ok(mut k) = self.known.lock() {
            if !k.contains(&what) {
                k.push(what);
            }
        }
    }

    /// The first violation, if any.
    pub fn first(&self) -> Option<String> {
        self.seen.lock().ok().and_then(|v| v.first().cloned())
    }

    /// Every violation.
    pub fn all(&self) -> Vec<String> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Every known defect hit.
    pub fn known_hits(&self) -> Vec<String> {
        self.known.lock().map(|k| k.clone()).unwrap_or_default()
    }
}

/// Whether known defects are violations too (`SHOAL_SIM_STRICT=1`).
pub fn strict() -> bool {
    std::env::var_os("SHOAL_SIM_STRICT").is_some()
}

/// Service names are unique (case-insensitive), as the store enforces when entries apply: two
/// creates of one name through two managers, or a create retried after a timeout, leave one.
pub fn service_names_unique(state: &StoreState) -> Result<(), String> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for svc in state.services.values() {
        if let Some(other) = seen.insert(svc.name().to_ascii_lowercase(), &svc.id) {
            return Err(format!(
                "services {other} and {} are both named {}",
                svc.id,
                svc.name()
            ));
        }
    }
    Ok(())
}

/// Whether this build of openraft can elect two leaders in one term. Without its
/// `single-term-leader` feature, openraft identifies a leader by `(term, node id)`, totally
/// ordered, and a voter that granted `(t, 3)` grants `(t, 4)` too: a term can have several
/// leaders, the later with the higher node id (safe by openraft's own rules, not standard
/// Raft). shoal-raft builds openraft with `single-term-leader`, so this is `false`.
pub fn openraft_allows_leaders_per_term() -> bool {
    std::any::type_name::<shoal_raft::openraft::CommittedLeaderId<u64>>().contains("leader_id_adv")
}

/// Invariant (1): the leaders seen for each term, from every manager's metrics.
///
/// Strict (standard Raft; the default, since shoal-raft builds openraft with one leader per
/// term): a second leader in a term is a violation. Lenient (only for a build of openraft with
/// multi-leader terms): it is recorded as an anomaly, reported with the run, and the driver
/// checks the consequences instead (no acknowledged write lost, every manager converges).
#[derive(Clone, Default)]
pub struct TermLog {
    seen: Arc<Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>>,
    lenient: bool,
    anomalies: Arc<Mutex<Vec<String>>>,
}

impl TermLog {
    /// A log that treats a second leader in a term as a violation unless `lenient`.
    pub fn new(lenient: bool) -> TermLog {
        TermLog {
            lenient,
            ..TermLog::default()
        }
    }

    /// The log for this build: strict (this build of openraft has one leader per term); lenient
    /// only for a build of openraft that allows several leaders per term, unless
    /// `SHOAL_SIM_STRICT` (or `SHOAL_SIM_STRICT_TERMS`) is set.
    pub fn for_build() -> TermLog {
        let strict = strict() || std::env::var_os("SHOAL_SIM_STRICT_TERMS").is_some();
        TermLog::new(!strict && openraft_allows_leaders_per_term())
    }

    /// `observer` saw `leader` leading `term` (a node seeing itself as leader observes itself).
    /// The first time a second leader shows up in a term, returns its description: a violation
    /// when strict, else an anomaly (also kept in [`TermLog::anomalies`]).
    pub fn observe(&self, term: u64, leader: u64, observer: u64) -> Option<String> {
        let Ok(mut seen) = self.seen.lock() else {
            return None;
        };
        let leaders = seen.entry(term).or_default();
        if leaders.contains_key(&leader) {
            return None;
        }
        leaders.insert(leader, observer);
        if leaders.len() < 2 {
            return None;
        }
        let who: Vec<String> = leaders
            .iter()
            .map(|(l, by)| format!("manager {l} (seen by manager {by})"))
            .collect();
        let what = format!("two leaders in term {term}: {}", who.join(" and "));
        if self.lenient {
            if let Ok(mut a) = self.anomalies.lock() {
                a.push(what.clone());
            }
        }
        Some(what)
    }

    /// Whether a second leader in a term is only an anomaly.
    pub fn is_lenient(&self) -> bool {
        self.lenient
    }

    /// Terms that had several leaders (lenient mode).
    pub fn anomalies(&self) -> Vec<String> {
        self.anomalies.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Terms in which a leader was seen.
    pub fn terms(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// Invariant (S): in `state`, at most one task per replicated slot is desired running and
/// running. Returns the offending slot.
pub fn at_most_one_running_per_slot(state: &StoreState) -> Result<(), String> {
    let mut per_slot: BTreeMap<(&str, u64), Vec<&str>> = BTreeMap::new();
    for t in state.tasks.values() {
        if t.slot > 0
            && t.desired_state == TaskState::Running
            && t.status.state == TaskState::Running
        {
            per_slot
                .entry((t.service_id.as_str(), t.slot))
                .or_default()
                .push(t.id.as_str());
        }
    }
    match per_slot.iter().find(|(_, ids)| ids.len() > 1) {
        None => Ok(()),
        Some(((service, slot), ids)) => Err(format!(
            "slot {slot} of service {} has {} tasks desired running and running: {}",
            service_name(state, service),
            ids.len(),
            ids.join(", ")
        )),
    }
}

/// Invariant (4): every replicated service runs exactly one task (desired running, running) in
/// each slot `1..=replicas` and none above, and no other task of it is still desired running
/// (a duplicate stuck before running). Returns every problem found.
pub fn replicas_converged(state: &StoreState) -> Result<(), String> {
    let mut problems = Vec::new();
    for svc in state.services.values() {
        let ServiceMode::Replicated { replicas } = spec::service_mode(&svc.spec) else {
            continue;
        };
        let mut slots: BTreeMap<u64, usize> = BTreeMap::new();
        for t in state.tasks_of_service(&svc.id) {
            if t.desired_state == TaskState::Running && t.status.state == TaskState::Running {
                *slots.entry(t.slot).or_default() += 1;
            } else if t.desired_state == TaskState::Running {
                problems.push(format!(
                    "service {}: task {} (slot {}) is desired running but {}",
                    svc.name(),
                    t.id,
                    t.slot,
                    t.status.state.as_str()
                ));
            }
        }
        let running: usize = slots.values().sum();
        let bad: Vec<String> = (1..=replicas.max(slots.keys().last().copied().unwrap_or(0)))
            .filter_map(|slot| {
                let n = slots.get(&slot).copied().unwrap_or(0);
                let want = usize::from(slot <= replicas);
                (n != want).then(|| format!("slot {slot}: {n} running (want {want})"))
            })
            .collect();
        if running as u64 != replicas || !bad.is_empty() || slots.contains_key(&0) {
            problems.push(format!(
                "service {} wants {replicas} replicas, {running} run: {}",
                svc.name(),
                bad.join("; ")
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Invariant (P): processes the agents run, as `(task, service, slot)`; at most one per slot
/// among tasks that `state` does not have on their way out (desired `remove`, which a scale-down
/// followed by a scale-up may legitimately overlap with the slot's new task).
///
/// (A stop-first update superseded before its old task stopped used to start the new task at
/// once, a known defect this check tolerated; fixed in shoal-manager, it is a violation now.)
pub fn at_most_one_process_per_slot(
    state: &StoreState,
    processes: &[(String, String, u64)],
) -> Result<(), String> {
    let mut per_slot: BTreeMap<(&str, u64), Vec<&str>> = BTreeMap::new();
    for (task, service, slot) in processes {
        let leaving = state
            .tasks
            .get(task)
            .is_none_or(|t| t.desired_state >= TaskState::Remove);
        if *slot > 0 && !leaving {
            per_slot
                .entry((service.as_str(), *slot))
                .or_default()
                .push(task.as_str());
        }
    }
    if let Some(((service, slot), ids)) = per_slot.iter().find(|(_, ids)| ids.len() > 1) {
        return Err(format!(
            "slot {slot} of service {} runs {} processes at once: tasks {}",
            service_name(state, service),
            ids.len(),
            ids.join(", ")
        ));
    }
    Ok(())
}

/// After settling: the agents run exactly the tasks that are desired running and running.
pub fn processes_match(
    state: &StoreState,
    processes: &[(String, String, u64)],
) -> Result<(), String> {
    let running: BTreeSet<&str> = processes.iter().map(|(t, _, _)| t.as_str()).collect();
    let wanted: BTreeSet<&str> = state
        .tasks
        .values()
        .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running)
        .map(|t| t.id.as_str())
        .collect();
    if running == wanted {
        return Ok(());
    }
    let extra: Vec<&str> = running.difference(&wanted).copied().collect();
    let missing: Vec<&str> = wanted.difference(&running).copied().collect();
    Err(format!(
        "agents run tasks the store does not want running: {extra:?}; \
         tasks the store shows running that no agent runs: {missing:?}"
    ))
}

/// A one-line description of every task, for failure reports.
pub fn describe_tasks(state: &StoreState) -> Vec<String> {
    state
        .tasks
        .values()
        .map(|t| {
            format!(
                "{} {}.{} node={} desired={} state={} v{} spec_v{} err={:?}",
                t.id,
                service_name(state, &t.service_id),
                t.slot,
                t.node_id.as_deref().unwrap_or("-"),
                t.desired_state.as_str(),
                t.status.state.as_str(),
                t.meta.version,
                t.spec_version,
                t.status.err
            )
        })
        .collect()
}

fn service_name<'a>(state: &'a StoreState, id: &'a str) -> &'a str {
    state
        .services
        .get(id)
        .map(|s| s.name())
        .filter(|n| !n.is_empty())
        .unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_in_one_term_is_reported() {
        let log = TermLog::new(false);
        assert!(log.observe(3, 1, 1).is_none());
        assert!(log.observe(3, 1, 2).is_none());
        assert!(log.observe(4, 2, 2).is_none());
        let v = log.observe(3, 2, 3).expect("violation");
        assert!(v.contains("term 3"), "{v}");
        assert!(log.observe(3, 2, 1).is_none(), "reported once");
        assert_eq!(log.terms(), 2);
        assert!(log.anomalies().is_empty());

        let lenient = TermLog::new(true);
        assert!(lenient.observe(3, 1, 1).is_none());
        assert!(lenient.observe(3, 2, 2).is_some());
        assert_eq!(lenient.anomalies().len(), 1);
    }

    fn task(
        id: &str,
        spec_version: u64,
        desired: &str,
        state: &str,
        node: Option<&str>,
        wait_for: Option<&str>,
    ) -> shoal_api::Task {
        let labels: BTreeMap<&str, &str> = wait_for
            .map(|w| (shoal_manager::allocator::WAIT_FOR_LABEL, w))
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": id,
            "meta": shoal_api::Meta::new_now(),
            "service_id": "s",
            "service_name": "web",
            "slot": 1,
            "node_id": node,
            "spec": {},
            "spec_version": spec_version,
            "desired_state": desired,
            "status": {"timestamp": chrono::Utc::now(), "state": state},
            "labels": labels,
        }))
        .expect("a task")
    }

    fn state_of(tasks: Vec<shoal_api::Task>) -> StoreState {
        let mut st = StoreState::default();
        let actions = tasks
            .into_iter()
            .map(|t| shoal_store::Action::Create(shoal_api::Object::Task(t)))
            .collect();
        st.apply(1, &shoal_store::Batch { actions }).expect("apply");
        st
    }

    #[test]
    fn a_slot_running_two_processes_is_a_violation() {
        // The superseded stop-first update (once a known defect): A still runs, C started.
        let a = task("a", 1, "shutdown", "running", Some("n1"), None);
        let b = task("b", 2, "shutdown", "shutdown", None, Some("a"));
        let c = task("c", 3, "running", "running", Some("n2"), Some("b"));
        let st = state_of(vec![a, b, c]);
        let procs = vec![
            ("a".to_string(), "s".to_string(), 1),
            ("c".to_string(), "s".to_string(), 1),
        ];
        let e = at_most_one_process_per_slot(&st, &procs).expect_err("two processes");
        assert!(e.contains("runs 2 processes at once"), "{e}");
        // One process per slot is fine.
        assert_eq!(at_most_one_process_per_slot(&st, &procs[1..]), Ok(()));
    }

    #[test]
    fn shoal_raft_builds_openraft_with_one_leader_per_term() {
        // shoal-raft builds openraft with `single-term-leader` (standard Raft): invariant (1)
        // is strict for this build, with no environment variable.
        assert!(!openraft_allows_leaders_per_term());
        assert!(!TermLog::for_build().is_lenient());
    }
}
