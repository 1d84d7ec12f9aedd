//! The replicated orchestrator: one live task per slot `1..=replicas`.
//!
//! ```text
//!  tasks of the service ─┬─ on a deleted / down node ─────► desired shutdown (replaced now)
//!                        ├─ on a drained node ────────────► desired shutdown (replacement waits
//!                        │                                   for it to stop)
//!                        ├─ node no longer meets constraints ► rejected (then restarted)
//!                        ├─ slot > replicas ──────────────► desired remove   (scale down)
//!                        └─ slot ≤ replicas ──────────────► slot reconcile + restart policy
//!  slots ──► rolling updater (tasks from an older spec, in batches)
//! ```

use super::slot::{self, TaskView};
use super::update::{self, SlotEntry};
use super::{wants_to_run, Intent, Plan, ServiceCtx};
use shoal_api::{NodeAvailability, NodeState, TaskState};

/// Message of a task rejected because its node stopped meeting the constraints.
pub const REJECTED_MESSAGE: &str = "task rejected by constraint enforcer";
/// Error of such a task.
pub const REJECTED_ERR: &str = "assigned node no longer meets constraints";

/// Plans a replicated service with `replicas` slots.
pub(crate) fn plan_service<'a>(ctx: &ServiceCtx<'a>, replicas: u64, plan: &mut Plan) {
    let mut views = ctx.views();
    check_nodes(ctx, &mut views, plan);

    // Group by slot without a map: sort, then walk the runs of equal slots.
    views.sort_by_key(|v| v.t.slot);
    let mut states: Vec<SlotEntry<'a>> = Vec::with_capacity(usize::try_from(replicas).unwrap_or(0));
    let mut next_missing = 1u64;
    let mut i = 0;
    while i < views.len() {
        let n = views[i].t.slot;
        let mut j = i + 1;
        while j < views.len() && views[j].t.slot == n {
            j += 1;
        }
        let tasks = &mut views[i..j];
        i = j;
        if n == 0 || n > replicas {
            // Scaled away (or not a slot at all): every task of the slot goes.
            for v in tasks.iter() {
                plan.set_desired(v.t, TaskState::Remove);
            }
            continue;
        }
        fill(ctx, &mut next_missing, n, replicas, &mut states, plan);
        slot::supervise(tasks, plan);
        let state = slot::reconcile(ctx, n, None, tasks, true, TaskState::Running, plan);
        states.push(SlotEntry {
            slot: n,
            node: None,
            state,
        });
    }
    fill(
        ctx,
        &mut next_missing,
        replicas + 1,
        replicas,
        &mut states,
        plan,
    );
    update::plan_update(ctx, &states, replicas, plan);
}

/// Gives every slot from `*next` up to (not including) `upto` (at most `replicas`), which has
/// no task at all, a new one; then moves `*next` past `upto`.
fn fill<'a>(
    ctx: &ServiceCtx<'a>,
    next: &mut u64,
    upto: u64,
    replicas: u64,
    states: &mut Vec<SlotEntry<'a>>,
    plan: &mut Plan,
) {
    while *next < upto.min(replicas + 1) {
        let state = slot::reconcile(ctx, *next, None, &mut [], true, TaskState::Running, plan);
        states.push(SlotEntry {
            slot: *next,
            node: None,
            state,
        });
        *next += 1;
    }
    *next = (*next).max(upto + 1);
}

/// Shuts down live tasks whose node is gone, down or drained, and rejects those whose node no
/// longer satisfies the service's constraints.
pub(crate) fn check_nodes(ctx: &ServiceCtx<'_>, views: &mut [TaskView<'_>], plan: &mut Plan) {
    for v in views.iter_mut() {
        if !wants_to_run(v.desired) || v.state.is_terminal() {
            continue;
        }
        let Some(node_id) = v.t.node_id.as_deref() else {
            continue;
        };
        match ctx.node(Some(node_id)) {
            None => {
                tracing::info!(task = %v.t.id, node = node_id, "node deleted: replacing task");
                slot::shut_down(v, plan);
                plan.push(Intent::Orphan {
                    task_id: v.t.id.clone(),
                });
                v.state = TaskState::Orphaned;
                v.ended_at = ctx.now;
            }
            Some(n) if n.status.state == NodeState::Down => {
                tracing::info!(task = %v.t.id, node = node_id, "node down: replacing task");
                slot::shut_down(v, plan);
            }
            Some(n) if n.availability() == NodeAvailability::Drain => {
                tracing::info!(task = %v.t.id, node = node_id, "node drained: replacing task");
                slot::shut_down(v, plan);
            }
            Some(n)
                if n.availability() == NodeAvailability::Active
                    && v.state >= TaskState::Assigned
                    && !ctx.constraints_ok(n) =>
            {
                tracing::info!(task = %v.t.id, node = node_id, "{REJECTED_ERR}");
                plan.push(Intent::Reject {
                    task_id: v.t.id.clone(),
                    message: REJECTED_MESSAGE.into(),
                    err: REJECTED_ERR.into(),
                });
                v.state = TaskState::Rejected;
                v.ended_at = ctx.now;
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{plan, Intent};
    use super::*;
    use crate::allocator::{START_AFTER_LABEL, WAIT_FOR_LABEL};
    use chrono::{TimeDelta, Utc};
    use shoal_api::engine;

    #[test]
    fn creates_one_task_per_slot() {
        let s = replicated("web", 3);
        let st = state(vec![node("n1")], vec![s], vec![]);
        let p = plan(&st, Utc::now());
        let c = created(&p);
        assert_eq!(c.len(), 3);
        let mut slots: Vec<u64> = c.iter().map(|t| t.slot).collect();
        slots.sort();
        assert_eq!(slots, vec![1, 2, 3]);
        for t in c {
            assert_eq!(t.status.state, TaskState::New);
            assert_eq!(t.desired_state, TaskState::Running);
            assert_eq!(t.service_name, "web");
            assert_eq!(t.spec_version, 1);
            assert!(t.spec.container_spec.is_some());
        }
        assert!(p.next_wakeup.is_none());
    }

    #[test]
    fn converged_service_plans_nothing() {
        let s = replicated("web", 2);
        let tasks = vec![
            task(&s, 1, Some("n1"), TaskState::Running),
            task(&s, 2, Some("n1"), TaskState::Running),
        ];
        let st = state(vec![node("n1")], vec![s], tasks);
        assert!(plan(&st, Utc::now()).is_empty());
    }

    #[test]
    fn scale_down_removes_highest_slots() {
        let s = replicated("web", 1);
        let tasks = vec![
            task(&s, 1, Some("n1"), TaskState::Running),
            task(&s, 2, Some("n1"), TaskState::Running),
            task(&s, 3, Some("n1"), TaskState::Running),
        ];
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let st = state(vec![node("n1")], vec![s], tasks);
        let p = plan(&st, Utc::now());
        let d = desired(&p);
        assert_eq!(d.len(), 2);
        assert!(d.contains(&(ids[1].clone(), TaskState::Remove)));
        assert!(d.contains(&(ids[2].clone(), TaskState::Remove)));
        assert!(created(&p).is_empty());
    }

    #[test]
    fn failed_task_is_replaced_after_the_delay() {
        let s = replicated("web", 1);
        let mut t = task(&s, 1, Some("n1"), TaskState::Failed);
        let now = Utc::now();
        t.status.timestamp = now;
        let id = t.id.clone();
        let st = state(vec![node("n1")], vec![s], vec![t]);
        let p = plan(&st, now);
        assert_eq!(desired(&p), vec![(id, TaskState::Shutdown)]);
        let c = created(&p);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].slot, 1);
        let gate = c[0]
            .labels
            .get(START_AFTER_LABEL)
            .cloned()
            .unwrap_or_default();
        assert!(!gate.is_empty(), "default delay 5 s gates the start");
        assert_eq!(p.next_wakeup, Some(now + TimeDelta::seconds(5)));
        assert_eq!(super::super::restart::restart_count(c[0]), 1);
    }

    #[test]
    fn restart_condition_none_leaves_the_slot_empty() {
        let mut s = replicated("web", 1);
        if let Some(t) = s.spec.task_template.as_mut() {
            t.restart_policy = Some(engine::TaskSpecRestartPolicy {
                condition: Some(engine::TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            });
        }
        let t = task(&s, 1, Some("n1"), TaskState::Complete);
        let id = t.id.clone();
        let st = state(vec![node("n1")], vec![s.clone()], vec![t.clone()]);
        let p = plan(&st, Utc::now());
        assert_eq!(desired(&p), vec![(id, TaskState::Shutdown)]);
        assert!(created(&p).is_empty());
        // Once marked, nothing more happens.
        let mut t2 = t;
        t2.desired_state = TaskState::Shutdown;
        let st = state(vec![node("n1")], vec![s], vec![t2]);
        assert!(plan(&st, Utc::now()).is_empty());
    }

    #[test]
    fn on_failure_with_exit_zero_is_not_restarted() {
        let mut s = replicated("web", 1);
        if let Some(t) = s.spec.task_template.as_mut() {
            t.restart_policy = Some(engine::TaskSpecRestartPolicy {
                condition: Some(engine::TaskSpecRestartPolicyConditionEnum::ON_FAILURE),
                ..Default::default()
            });
        }
        let ok = task(&s, 1, Some("n1"), TaskState::Complete);
        let st = state(vec![node("n1")], vec![s.clone()], vec![ok]);
        assert!(created(&plan(&st, Utc::now())).is_empty());
        let bad = task(&s, 1, Some("n1"), TaskState::Failed);
        let st = state(vec![node("n1")], vec![s], vec![bad]);
        assert_eq!(created(&plan(&st, Utc::now())).len(), 1);
    }

    #[test]
    fn down_node_tasks_are_replaced_at_once_drained_ones_after_they_stop() {
        let s = replicated("web", 2);
        let t1 = task(&s, 1, Some("down"), TaskState::Running);
        let t2 = task(&s, 2, Some("drained"), TaskState::Running);
        let (id1, id2) = (t1.id.clone(), t2.id.clone());
        let mut down = node("down");
        down.status.state = NodeState::Down;
        let mut drained = node("drained");
        drained.spec.availability = Some(engine::NodeSpecAvailabilityEnum::DRAIN);
        let st = state(vec![down, drained, node("ok")], vec![s], vec![t1, t2]);
        let p = plan(&st, Utc::now());
        let d = desired(&p);
        assert!(d.contains(&(id1.clone(), TaskState::Shutdown)));
        assert!(d.contains(&(id2.clone(), TaskState::Shutdown)));
        let c = created(&p);
        assert_eq!(c.len(), 2);
        let by_slot = |n: u64| c.iter().find(|t| t.slot == n).map(|t| t.labels.clone());
        assert_eq!(
            by_slot(1).and_then(|l| l.get(WAIT_FOR_LABEL).cloned()),
            None
        );
        assert_eq!(
            by_slot(2).and_then(|l| l.get(WAIT_FOR_LABEL).cloned()),
            Some(id2)
        );
    }

    #[test]
    fn a_task_on_a_down_node_is_replaced_without_the_restart_delay() {
        // A restart delay (here 10 s; 5 s by default) is for tasks that end on their own (a
        // crash loop); a node that died is no reason to wait.
        let mut s = replicated("web", 1);
        if let Some(t) = s.spec.task_template.as_mut() {
            t.restart_policy = Some(engine::TaskSpecRestartPolicy {
                condition: Some(engine::TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(10_000_000_000),
                ..Default::default()
            });
        }
        let mut down = node("down");
        down.status.state = NodeState::Down;
        for state_on_node in [TaskState::Assigned, TaskState::Running] {
            let t = task(&s, 1, Some("down"), state_on_node);
            let id = t.id.clone();
            let st = state(
                vec![down.clone(), node("ok")],
                vec![s.clone()],
                vec![t.clone()],
            );
            let now = Utc::now();
            let p = plan(&st, now);
            assert_eq!(desired(&p), vec![(id, TaskState::Shutdown)]);
            let c = created(&p);
            assert_eq!(c.len(), 1, "replaced in the same pass");
            assert!(
                !c[0].labels.contains_key(START_AFTER_LABEL),
                "no restart delay: {:?}",
                c[0].labels
            );
            assert!(
                !c[0].labels.contains_key(WAIT_FOR_LABEL),
                "nothing to wait for"
            );
            assert_eq!(p.next_wakeup, None);
            // The next pass (the old task still shows running: its agent is gone) keeps it so.
            let mut old = t;
            old.desired_state = TaskState::Shutdown;
            let st = state(
                vec![down.clone(), node("ok")],
                vec![s.clone()],
                vec![old, c[0].clone()],
            );
            assert!(plan(&st, now).is_empty());
        }
    }

    #[test]
    fn a_crash_is_still_restarted_after_the_delay_when_its_node_is_alive() {
        let s = replicated("web", 1);
        let mut t = task(&s, 1, Some("n1"), TaskState::Failed);
        let now = Utc::now();
        t.status.timestamp = now;
        let st = state(vec![node("n1")], vec![s], vec![t]);
        let c = plan(&st, now);
        assert!(created(&c)[0].labels.contains_key(START_AFTER_LABEL));
    }

    #[test]
    fn node_that_no_longer_meets_constraints_rejects_its_task() {
        let mut s = replicated("web", 1);
        if let Some(t) = s.spec.task_template.as_mut() {
            t.placement = Some(engine::TaskSpecPlacement {
                constraints: Some(vec!["node.labels.zone==east".into()]),
                ..Default::default()
            });
        }
        let mut t = task(&s, 1, Some("n1"), TaskState::Running);
        t.spec = s.spec.task_template.clone().unwrap_or_default().into();
        let id = t.id.clone();
        let st = state(vec![node("n1")], vec![s], vec![t]);
        let p = plan(&st, Utc::now());
        assert!(p.intents.iter().any(|i| matches!(
            i,
            Intent::Reject { task_id, err, .. } if *task_id == id && err == REJECTED_ERR
        )));
        assert!(desired(&p).contains(&(id, TaskState::Shutdown)));
        assert_eq!(created(&p).len(), 1);
    }

    #[test]
    fn tasks_of_a_deleted_node_are_orphaned_and_replaced_at_once() {
        let s = replicated("web", 1);
        let t = task(&s, 1, Some("gone"), TaskState::Running);
        let id = t.id.clone();
        let st = state(vec![node("n1")], vec![s], vec![t]);
        let p = plan(&st, Utc::now());
        assert!(p.intents.contains(&Intent::Orphan {
            task_id: id.clone()
        }));
        assert!(desired(&p).contains(&(id, TaskState::Shutdown)));
        let c = created(&p);
        assert_eq!(c.len(), 1);
        assert!(c[0].labels.is_empty(), "no delay, nothing to wait for");
    }

    #[test]
    fn duplicate_live_tasks_in_a_slot_keep_the_most_advanced() {
        let s = replicated("web", 1);
        let a = task(&s, 1, Some("n1"), TaskState::Running);
        let b = task(&s, 1, None, TaskState::Pending);
        let bid = b.id.clone();
        let st = state(vec![node("n1")], vec![s], vec![a, b]);
        let p = plan(&st, Utc::now());
        assert_eq!(desired(&p), vec![(bid, TaskState::Shutdown)]);
        assert!(created(&p).is_empty());
    }
}
