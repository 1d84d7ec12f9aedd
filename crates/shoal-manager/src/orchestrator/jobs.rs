//! Job modes: tasks that run to completion (desired state `complete`).
//!
//! ```text
//!  replicated job: until total_completions tasks completed, keep at most max_concurrent
//!                  running; a failed task is restarted in its slot per the restart policy
//!  global job:     one task per eligible node, run once
//!  tasks of an earlier job iteration that still run ──► desired remove
//! ```
//!
//! Basic on purpose: no rolling update (a new iteration replaces the job), slots count from 1.

use super::global;
use super::replicated::check_nodes;
use super::slot::{self, TaskView};
use super::{Plan, ServiceCtx};
use shoal_api::TaskState;
use std::collections::{BTreeMap, BTreeSet};

/// Splits the service's tasks into the current job iteration's (returned) and older ones
/// (still-running ones are removed).
fn current_iteration<'a>(ctx: &ServiceCtx<'a>, plan: &mut Plan) -> Vec<TaskView<'a>> {
    let iteration = ctx.service.job_iteration;
    let mut current = Vec::new();
    for v in ctx.views() {
        if v.t.job_iteration.unwrap_or(0) == iteration {
            current.push(v);
        } else if !v.state.is_terminal() {
            plan.set_desired(v.t, TaskState::Remove);
        }
    }
    current
}

/// Plans a replicated job.
pub(crate) fn plan_replicated(
    ctx: &ServiceCtx<'_>,
    max_concurrent: u64,
    total_completions: u64,
    plan: &mut Plan,
) {
    let mut views = current_iteration(ctx, plan);
    check_nodes(ctx, &mut views, plan);
    let mut slots: BTreeMap<u64, Vec<TaskView<'_>>> = BTreeMap::new();
    for v in views {
        slots.entry(v.t.slot).or_default().push(v);
    }

    let (mut complete, mut running) = (0u64, 0u64);
    let mut used: BTreeSet<u64> = BTreeSet::new();
    for (&n, tasks) in slots.iter_mut() {
        slot::supervise(tasks, plan);
        if tasks.iter().any(|v| v.state == TaskState::Complete) {
            complete += 1;
            used.insert(n);
            continue;
        }
        let st = slot::reconcile(ctx, n, None, tasks, true, TaskState::Complete, plan);
        if st.clean.is_some() || st.dirty.is_some() {
            running += 1;
            used.insert(n);
        }
    }

    let room = max_concurrent.saturating_sub(running);
    let left = total_completions.saturating_sub(complete + running);
    let mut next = 0u64;
    for _ in 0..room.min(left) {
        next += 1;
        while used.contains(&next) {
            next += 1;
        }
        used.insert(next);
        let mut none: Vec<TaskView<'_>> = Vec::new();
        slot::reconcile(ctx, next, None, &mut none, true, TaskState::Complete, plan);
    }
}

/// Plans a global job.
pub(crate) fn plan_global(ctx: &ServiceCtx<'_>, plan: &mut Plan) {
    let views = current_iteration(ctx, plan);
    global::plan_nodes(ctx, views, TaskState::Complete, plan, false);
}

/// A global job is done on a node once a task of the current iteration completed there.
pub(crate) fn node_done(ctx: &ServiceCtx<'_>, tasks: &[TaskView<'_>]) -> bool {
    tasks.iter().any(|v| {
        v.state == TaskState::Complete
            && v.t.job_iteration.unwrap_or(0) == ctx.service.job_iteration
    })
}

#[cfg(test)]
mod tests {
    use super::super::plan;
    use super::super::testutil::*;
    use super::*;
    use chrono::Utc;
    use shoal_api::engine;

    fn job(total: i64, max: i64) -> shoal_api::Service {
        service(
            "job",
            engine::ServiceSpecMode {
                replicated_job: Some(engine::ServiceSpecModeReplicatedJob {
                    max_concurrent: Some(max),
                    total_completions: Some(total),
                }),
                ..Default::default()
            },
        )
    }

    fn job_task(s: &shoal_api::Service, slot: u64, state: TaskState) -> shoal_api::Task {
        let mut t = task(s, slot, Some("n1"), state);
        t.desired_state = TaskState::Complete;
        t.job_iteration = Some(0);
        t
    }

    #[test]
    fn runs_at_most_max_concurrent_until_total() {
        let s = job(5, 2);
        let st = state(vec![node("n1")], vec![s.clone()], vec![]);
        let p = plan(&st, Utc::now());
        let c = created(&p);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|t| t.desired_state == TaskState::Complete));
        assert!(c.iter().all(|t| t.job_iteration == Some(0)));

        // 4 done, 1 running: nothing more.
        let mut tasks: Vec<_> = (1..=4)
            .map(|i| job_task(&s, i, TaskState::Complete))
            .collect();
        tasks.push(job_task(&s, 5, TaskState::Running));
        let st = state(vec![node("n1")], vec![s.clone()], tasks);
        assert!(plan(&st, Utc::now()).is_empty());

        // 3 done, none running: two more (slots 4 and 5).
        let tasks: Vec<_> = (1..=3)
            .map(|i| job_task(&s, i, TaskState::Complete))
            .collect();
        let st = state(vec![node("n1")], vec![s], tasks);
        let p = plan(&st, Utc::now());
        let mut slots: Vec<u64> = created(&p).iter().map(|t| t.slot).collect();
        slots.sort();
        assert_eq!(slots, vec![4, 5]);
    }

    #[test]
    fn failed_job_task_is_retried_in_its_slot() {
        let s = job(1, 1);
        let t = job_task(&s, 1, TaskState::Failed);
        let id = t.id.clone();
        let st = state(vec![node("n1")], vec![s], vec![t]);
        let p = plan(&st, Utc::now());
        assert_eq!(desired(&p), vec![(id, TaskState::Shutdown)]);
        let c = created(&p);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].slot, 1);
    }

    #[test]
    fn global_job_runs_once_per_node() {
        let s = service(
            "gj",
            engine::ServiceSpecMode {
                global_job: Some(HashMap::new()),
                ..Default::default()
            },
        );
        let mut done = task(&s, 0, Some("a"), TaskState::Complete);
        done.desired_state = TaskState::Complete;
        done.job_iteration = Some(0);
        let st = state(vec![node("a"), node("b")], vec![s], vec![done]);
        let p = plan(&st, Utc::now());
        let c = created(&p);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].node_id.as_deref(), Some("b"));
        assert_eq!(c[0].desired_state, TaskState::Complete);
    }

    use std::collections::HashMap;
}
