//! The rolling updater: replaces tasks made from an older spec, a few slots at a time.
//!
//! ```text
//!  update_status: none/completed ──(a slot runs an old-spec task)──► updating "update in progress"
//!     updating: per plan
//!       a task created by this update failed (failure, rejection or early exit)
//!           ├─ failure action pause    ──► paused "update paused due to failure or early
//!           │                                       termination of task <id>"
//!           ├─ failure action rollback ──► spec := previous spec, rollback_started
//!           └─ continue                ──► ignored
//!       in flight < parallelism (0 = all) and the delay since the last task started has passed
//!           ──► update more slots:  stop-first: old desired shutdown + new task gated on it
//!                                   start-first: new task; the old one stops once it runs
//!       nothing left and nothing in flight, monitor period over ──► completed "update completed"
//!     paused: nothing happens until the service is updated again (the API resets the status)
//! ```
//!
//! The same machine runs a rollback (`rollback_started` → `rollback_completed`, with the
//! service's rollback config). Progress is read from the tasks' versions and timestamps and
//! `update_status.started_at`, so it survives a manager restart. Approximations (documented):
//! a failure counts if a current-version task created after the update started ended in
//! failure while the update runs (swarmkit only counts the ones it created, within `monitor`
//! of running); the failure ratio is over all slots of the service.

use super::slot::{self, SlotState, TaskView};
use super::{Intent, Plan, ServiceCtx};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use shoal_api::engine::{self, ServiceUpdateStatusStateEnum as S};
use shoal_api::spec::{self, FailureAction, UpdateConfig, UpdateOrder};
use shoal_api::TaskState;

/// One slot (or global node) as the updater sees it.
#[derive(Clone, Debug)]
pub(crate) struct SlotEntry<'a> {
    pub slot: u64,
    pub node: Option<&'a str>,
    pub state: SlotState<'a>,
}

/// Builds an `UpdateStatus` (through serde, so it works whatever date type the Engine API
/// models were compiled with).
pub fn status(
    state: S,
    message: &str,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
) -> engine::ServiceUpdateStatus {
    let mut v = serde_json::json!({ "State": state, "Message": message });
    if let Some(t) = started_at {
        v["StartedAt"] = t.to_rfc3339_opts(SecondsFormat::Nanos, true).into();
    }
    if let Some(t) = completed_at {
        v["CompletedAt"] = t.to_rfc3339_opts(SecondsFormat::Nanos, true).into();
    }
    serde_json::from_value(v).unwrap_or_else(|_| engine::ServiceUpdateStatus {
        state: Some(state),
        message: Some(message.to_string()),
        ..Default::default()
    })
}

/// `StartedAt` of an update status.
pub fn started_at(s: &engine::ServiceUpdateStatus) -> Option<DateTime<Utc>> {
    let v = serde_json::to_value(s).ok()?;
    let text = v.get("StartedAt")?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The service's rollback configuration with swarmkit's defaults (parallelism 1, pause,
/// monitor 5 s, stop-first).
pub fn rollback_config(s: &engine::ServiceSpec) -> UpdateConfig {
    use engine::ServiceSpecRollbackConfigFailureActionEnum as F;
    use engine::ServiceSpecRollbackConfigOrderEnum as O;
    let d = UpdateConfig::default();
    let Some(r) = &s.rollback_config else {
        return d;
    };
    UpdateConfig {
        parallelism: r.parallelism.map(|p| p.max(0) as u64).unwrap_or(1),
        delay: r.delay.map(spec::ns).unwrap_or(d.delay),
        failure_action: match r.failure_action {
            Some(F::CONTINUE) => FailureAction::Continue,
            _ => FailureAction::Pause,
        },
        monitor: r
            .monitor
            .filter(|m| *m > 0)
            .map(spec::ns)
            .unwrap_or(d.monitor),
        max_failure_ratio: r.max_failure_ratio.unwrap_or(0.0),
        order: match r.order {
            Some(O::START_FIRST) => UpdateOrder::StartFirst,
            _ => UpdateOrder::StopFirst,
        },
    }
}

fn delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Plans the rolling update of a service whose slots are `entries` (`total` slots).
pub(crate) fn plan_update(
    ctx: &ServiceCtx<'_>,
    entries: &[SlotEntry<'_>],
    total: u64,
    plan: &mut Plan,
) {
    let svc = ctx.service;
    let now = ctx.now;
    let current = svc.update_status.as_ref();
    let state = current.and_then(|s| s.state);
    if matches!(state, Some(S::PAUSED | S::ROLLBACK_PAUSED)) {
        return;
    }
    let rolling_back = state == Some(S::ROLLBACK_STARTED);
    let cfg = if rolling_back {
        rollback_config(&svc.spec)
    } else {
        spec::update_config(&svc.spec)
    };
    let dirty: Vec<&SlotEntry<'_>> = entries
        .iter()
        .filter(|e| e.state.dirty.is_some() && e.state.clean.is_none())
        .collect();

    let in_progress = matches!(state, Some(S::UPDATING | S::ROLLBACK_STARTED));
    let started = if in_progress {
        current.and_then(started_at).unwrap_or(svc.meta.updated_at)
    } else {
        if dirty.is_empty() {
            return;
        }
        tracing::info!(service = %svc.id, slots = dirty.len(), "starting rolling update");
        plan.push(Intent::SetUpdateStatus {
            service_id: svc.id.clone(),
            status: Some(status(S::UPDATING, "update in progress", Some(now), None)),
        });
        now
    };

    // Failures of tasks created by this update.
    if in_progress && cfg.failure_action != FailureAction::Continue {
        let mut failed: Vec<(DateTime<Utc>, &str)> = ctx
            .tasks
            .iter()
            .filter(|t| {
                t.spec_version == svc.spec_version
                    && t.meta.created_at >= started
                    && t.status.timestamp >= started
                    && matches!(
                        t.status.state,
                        TaskState::Failed | TaskState::Rejected | TaskState::Complete
                    )
            })
            .map(|t| (t.status.timestamp, t.id.as_str()))
            .collect();
        failed.sort();
        let ratio = failed.len() as f64 / total.max(1) as f64;
        if let Some((_, first)) = failed.first() {
            if ratio > cfg.max_failure_ratio {
                fail(ctx, &cfg, rolling_back, first, started, plan);
                return;
            }
        }
    }

    let inflight = entries
        .iter()
        .filter(|e| {
            e.state.clean.is_some_and(|c| {
                c.created_at >= started && (c.state < TaskState::Running || e.state.dirty.is_some())
            })
        })
        .count();
    let last_running = entries
        .iter()
        .filter_map(|e| e.state.clean)
        .filter(|c| c.created_at >= started && c.state == TaskState::Running)
        .map(|c| c.status_at)
        .max();

    if dirty.is_empty() {
        if inflight == 0 && in_progress {
            let monitor = if cfg.delay >= cfg.monitor {
                cfg.delay + std::time::Duration::from_secs(1)
            } else {
                cfg.monitor
            };
            let done_at = last_running.unwrap_or(started) + delta(monitor);
            if now >= done_at {
                let (st, msg) = if rolling_back {
                    (S::ROLLBACK_COMPLETED, "rollback completed")
                } else {
                    (S::COMPLETED, "update completed")
                };
                tracing::info!(service = %svc.id, "{msg}");
                plan.push(Intent::SetUpdateStatus {
                    service_id: svc.id.clone(),
                    status: Some(status(st, msg, Some(started), Some(now))),
                });
            } else {
                plan.wake_at(done_at);
            }
        }
        return;
    }

    let parallelism = if cfg.parallelism == 0 {
        usize::MAX
    } else {
        usize::try_from(cfg.parallelism).unwrap_or(usize::MAX)
    };
    let room = parallelism.saturating_sub(inflight);
    if room == 0 {
        return;
    }
    if let (false, Some(last)) = (cfg.delay.is_zero(), last_running) {
        let next = last + delta(cfg.delay);
        if now < next {
            plan.wake_at(next);
            return;
        }
    }
    for e in dirty.into_iter().take(room) {
        let Some(old) = &e.state.dirty else {
            continue;
        };
        replace(ctx, &cfg, e, old, plan);
    }
}

fn replace(
    ctx: &ServiceCtx<'_>,
    cfg: &UpdateConfig,
    e: &SlotEntry<'_>,
    old: &TaskView<'_>,
    plan: &mut Plan,
) {
    let mut new = ctx.new_task(e.slot, e.node.map(Into::into));
    if cfg.order == UpdateOrder::StopFirst {
        plan.set_desired(old.t, TaskState::Shutdown);
        // Not only `old`: an earlier stop-first update superseded by this one may have left
        // its own old task still stopping while `old` (its replacement) never reached a node.
        slot::wait_for(&mut new, &e.state.on_nodes);
    }
    tracing::debug!(service = %ctx.service.id, slot = e.slot, old = %old.t.id, new = %new.id, "updating task");
    plan.push(Intent::CreateTask(Box::new(new)));
}

fn fail(
    ctx: &ServiceCtx<'_>,
    cfg: &UpdateConfig,
    rolling_back: bool,
    task_id: &str,
    started: DateTime<Utc>,
    plan: &mut Plan,
) {
    let svc = ctx.service;
    let pause = |plan: &mut Plan, st: S, msg: String| {
        tracing::warn!(service = %svc.id, "{msg}");
        plan.push(Intent::SetUpdateStatus {
            service_id: svc.id.clone(),
            status: Some(status(st, &msg, Some(started), None)),
        });
    };
    if rolling_back {
        let msg = format!("rollback paused due to failure or early termination of task {task_id}");
        return pause(plan, S::ROLLBACK_PAUSED, msg);
    }
    if cfg.failure_action == FailureAction::Rollback && svc.previous_spec.is_some() {
        let message =
            format!("update rolled back due to failure or early termination of task {task_id}");
        tracing::warn!(service = %svc.id, "{message}");
        plan.push(Intent::Rollback {
            service_id: svc.id.clone(),
            message,
        });
        return;
    }
    let msg = format!("update paused due to failure or early termination of task {task_id}");
    pause(plan, S::PAUSED, msg);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{plan, Intent};
    use super::*;
    use crate::allocator::WAIT_FOR_LABEL;
    use shoal_api::Service;

    fn updated(mut s: Service, cfg: engine::ServiceSpecUpdateConfig) -> Service {
        s.previous_spec = Some(s.spec.clone());
        s.spec_version = 2;
        if let Some(t) = s.spec.task_template.as_mut() {
            t.force_update = Some(1);
        }
        s.spec.update_config = Some(cfg);
        s
    }

    fn update_status_of(p: &Plan) -> Option<engine::ServiceUpdateStatus> {
        p.intents.iter().find_map(|i| match i {
            Intent::SetUpdateStatus { status, .. } => status.clone(),
            _ => None,
        })
    }

    #[test]
    fn status_round_trips_started_at() {
        let t = Utc::now();
        let s = status(S::UPDATING, "update in progress", Some(t), None);
        assert_eq!(s.state, Some(S::UPDATING));
        assert_eq!(s.message.as_deref(), Some("update in progress"));
        assert_eq!(started_at(&s), Some(t));
    }

    #[test]
    fn starts_an_update_one_slot_at_a_time_stop_first() {
        let base = replicated("web", 3);
        let tasks: Vec<_> = (1..=3)
            .map(|i| task(&base, i, Some("n1"), TaskState::Running))
            .collect();
        let s = updated(
            base,
            engine::ServiceSpecUpdateConfig {
                parallelism: Some(1),
                ..Default::default()
            },
        );
        let st = state(vec![node("n1")], vec![s], tasks.clone());
        let p = plan(&st, Utc::now());
        let us = update_status_of(&p).unwrap_or_default();
        assert_eq!(us.state, Some(S::UPDATING));
        assert_eq!(us.message.as_deref(), Some("update in progress"));
        let c = created(&p);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].spec_version, 2);
        assert_eq!(c[0].slot, 1);
        assert_eq!(
            c[0].labels.get(WAIT_FOR_LABEL),
            Some(&tasks[0].id),
            "stop-first: the new task waits for the old one"
        );
        assert_eq!(
            desired(&p),
            vec![(tasks[0].id.clone(), TaskState::Shutdown)]
        );
    }

    #[test]
    fn a_superseded_stop_first_update_waits_for_the_task_still_running() {
        // Update 1 (v2): A (v1) runs and is stopping; its replacement B never reached a node.
        let base = replicated("web", 1);
        let mut a = task(&base, 1, Some("n1"), TaskState::Running);
        a.desired_state = TaskState::Shutdown;
        let v2 = updated(base, engine::ServiceSpecUpdateConfig::default());
        let mut b = task(&v2, 1, None, TaskState::New);
        b.labels.insert(WAIT_FOR_LABEL.into(), a.id.clone());
        // Update 2 (v3) before A stopped.
        let mut v3 = v2.clone();
        v3.spec_version = 3;
        if let Some(t) = v3.spec.task_template.as_mut() {
            t.force_update = Some(2);
        }
        let st = state(vec![node("n1")], vec![v3], vec![a.clone(), b.clone()]);
        let now = Utc::now();
        let p = plan(&st, now);
        assert_eq!(desired(&p), vec![(b.id.clone(), TaskState::Shutdown)]);
        let c = created(&p);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].spec_version, 3);
        assert_eq!(
            c[0].labels.get(WAIT_FOR_LABEL),
            Some(&a.id),
            "gated on the task still running, not on the one that never started"
        );
        // And the allocator holds it while A runs, releases it once A stopped.
        let mut st = state(vec![node("n1")], vec![], vec![a.clone(), c[0].clone()]);
        assert_eq!(
            crate::allocator::hold(&st, c[0], now),
            Some(crate::allocator::Hold::WaitFor(a.id.clone()))
        );
        if let Some(t) = st.tasks.get_mut(&a.id) {
            t.status.state = TaskState::Shutdown;
        }
        assert_eq!(crate::allocator::hold(&st, c[0], now), None);
    }

    #[test]
    fn a_replacement_waits_for_every_task_of_the_slot_still_on_a_node() {
        // Two tasks of slot 1 still stopping on live nodes (a start-first update's old task and
        // its replacement, say): the next stop-first replacement waits for both.
        let base = replicated("web", 1);
        let mut a = task(&base, 1, Some("n1"), TaskState::Running);
        a.desired_state = TaskState::Shutdown;
        let mut b = task(&base, 1, Some("n2"), TaskState::Running);
        b.meta.created_at = a.meta.created_at + TimeDelta::seconds(1);
        let s = updated(base, engine::ServiceSpecUpdateConfig::default());
        let st = state(
            vec![node("n1"), node("n2")],
            vec![s],
            vec![a.clone(), b.clone()],
        );
        let now = Utc::now();
        let p = plan(&st, now);
        let c = created(&p);
        assert_eq!(c.len(), 1);
        let gate: Vec<&str> = c[0]
            .labels
            .get(WAIT_FOR_LABEL)
            .map(|g| g.split(',').collect())
            .unwrap_or_default();
        assert_eq!(gate.len(), 2, "{gate:?}");
        assert!(gate.contains(&a.id.as_str()) && gate.contains(&b.id.as_str()));
        // Held until both stopped.
        let mut st = state(
            vec![node("n1"), node("n2")],
            vec![],
            vec![a.clone(), b.clone()],
        );
        if let Some(t) = st.tasks.get_mut(&b.id) {
            t.status.state = TaskState::Shutdown;
        }
        assert_eq!(
            crate::allocator::hold(&st, c[0], now),
            Some(crate::allocator::Hold::WaitFor(a.id.clone()))
        );
        // A's node goes down: nobody will report A stopped; not waited for.
        if let Some(n) = st.nodes.get_mut("n1") {
            n.status.state = shoal_api::NodeState::Down;
        }
        assert_eq!(crate::allocator::hold(&st, c[0], now), None);
    }

    #[test]
    fn parallelism_zero_updates_everything_start_first_keeps_old_running() {
        let base = replicated("web", 3);
        let tasks: Vec<_> = (1..=3)
            .map(|i| task(&base, i, Some("n1"), TaskState::Running))
            .collect();
        let s = updated(
            base,
            engine::ServiceSpecUpdateConfig {
                parallelism: Some(0),
                order: Some(engine::ServiceSpecUpdateConfigOrderEnum::START_FIRST),
                ..Default::default()
            },
        );
        let st = state(vec![node("n1")], vec![s], tasks);
        let p = plan(&st, Utc::now());
        assert_eq!(created(&p).len(), 3);
        assert!(desired(&p).is_empty());
        assert!(created(&p).iter().all(|t| t.labels.is_empty()));
    }

    #[test]
    fn in_flight_slot_blocks_the_next_and_completion_waits_for_monitor() {
        let base = replicated("web", 2);
        let old2 = task(&base, 2, Some("n1"), TaskState::Running);
        let mut s = updated(base.clone(), engine::ServiceSpecUpdateConfig::default());
        let t0 = Utc::now() - TimeDelta::seconds(60);
        s.update_status = Some(status(S::UPDATING, "update in progress", Some(t0), None));
        let mut new1 = task(&s, 1, Some("n1"), TaskState::Assigned);
        new1.meta.created_at = t0 + TimeDelta::seconds(1);
        let st = state(
            vec![node("n1")],
            vec![s.clone()],
            vec![new1.clone(), old2.clone()],
        );
        assert!(plan(&st, Utc::now()).is_empty(), "slot 1 in flight");

        // Slot 1 runs: slot 2 is next.
        new1.status.state = TaskState::Running;
        new1.status.timestamp = t0 + TimeDelta::seconds(2);
        let st = state(vec![node("n1")], vec![s.clone()], vec![new1.clone(), old2]);
        let p = plan(&st, Utc::now());
        assert_eq!(created(&p).len(), 1);
        assert_eq!(created(&p)[0].slot, 2);

        // Both done: completed once the monitor period (5 s) after the last start is over.
        let mut new2 = task(&s, 2, Some("n1"), TaskState::Running);
        new2.meta.created_at = t0 + TimeDelta::seconds(3);
        let last = Utc::now();
        new2.status.timestamp = last;
        let st = state(vec![node("n1")], vec![s], vec![new1, new2]);
        let p = plan(&st, last);
        assert!(p.intents.is_empty());
        assert_eq!(p.next_wakeup, Some(last + TimeDelta::seconds(5)));
        let p = plan(&st, last + TimeDelta::seconds(6));
        let us = update_status_of(&p).unwrap_or_default();
        assert_eq!(us.state, Some(S::COMPLETED));
        assert_eq!(us.message.as_deref(), Some("update completed"));
        assert_eq!(started_at(&us), Some(t0));
    }

    #[test]
    fn failure_pauses_the_update() {
        let base = replicated("web", 2);
        let old2 = task(&base, 2, Some("n1"), TaskState::Running);
        let mut s = updated(base, engine::ServiceSpecUpdateConfig::default());
        let t0 = Utc::now() - TimeDelta::seconds(10);
        s.update_status = Some(status(S::UPDATING, "update in progress", Some(t0), None));
        let mut bad = task(&s, 1, Some("n1"), TaskState::Failed);
        bad.meta.created_at = t0 + TimeDelta::seconds(1);
        bad.status.timestamp = t0 + TimeDelta::seconds(2);
        bad.desired_state = TaskState::Shutdown;
        let bad_id = bad.id.clone();
        let st = state(vec![node("n1")], vec![s.clone()], vec![bad, old2]);
        let p = plan(&st, Utc::now());
        let us = update_status_of(&p).unwrap_or_default();
        assert_eq!(us.state, Some(S::PAUSED));
        assert_eq!(
            us.message,
            Some(format!(
                "update paused due to failure or early termination of task {bad_id}"
            ))
        );
        // Paused: the remaining old task is left alone.
        let mut paused = s;
        paused.update_status = Some(us);
        let old = task(&paused, 2, Some("n1"), TaskState::Running);
        let mut old = old;
        old.spec_version = 1;
        std::sync::Arc::make_mut(&mut old.spec).force_update = None;
        let st = state(vec![node("n1")], vec![paused], vec![old]);
        let p = plan(&st, Utc::now());
        assert!(update_status_of(&p).is_none());
        assert!(created(&p).iter().all(|t| t.slot != 2));
    }

    #[test]
    fn rollback_failure_action_restores_previous_spec() {
        let base = replicated("web", 1);
        let mut s = updated(
            base,
            engine::ServiceSpecUpdateConfig {
                failure_action: Some(engine::ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
                ..Default::default()
            },
        );
        let t0 = Utc::now() - TimeDelta::seconds(10);
        s.update_status = Some(status(S::UPDATING, "update in progress", Some(t0), None));
        let mut bad = task(&s, 1, Some("n1"), TaskState::Failed);
        bad.meta.created_at = t0 + TimeDelta::seconds(1);
        bad.status.timestamp = t0 + TimeDelta::seconds(2);
        bad.desired_state = TaskState::Shutdown;
        let st = state(vec![node("n1")], vec![s], vec![bad]);
        let p = plan(&st, Utc::now());
        assert!(p
            .intents
            .iter()
            .any(|i| matches!(i, Intent::Rollback { message, .. } if message.starts_with("update rolled back due to failure"))));
    }
}
