//! One slot (a replicated slot number, or a global service's node): the restart supervisor
//! and the "exactly one live task" rule shared by every mode.
//!
//! ```text
//!  tasks of the slot ──► supervise: desired running + observed terminal ─► desired shutdown
//!                    ──► live tasks (desired ≤ running, not terminal)
//!                          ├─ clean ones: keep the most advanced, shut the others
//!                          │   (and the old-spec ones once the clean one runs: start-first)
//!                          └─ none live: look at the latest task L
//!                               none                → create
//!                               L still stopping    → create
//!                               L stopped on request→ create
//!                               L ended on its own  → restart policy: create (gated on the
//!                                                     delay, shoal.start-after) or leave empty
//!                             a task created here waits (shoal.wait-for) for every task of the
//!                             slot still on a live node, not only for L
//! ```
//!
//! Why every task and not just the latest: a stop-first update superseded by another before
//! its old task A stopped leaves a latest task B that never reached a node (shut down at once);
//! gating the next one on B alone would start it while A still runs.

use super::restart;
use super::{wants_to_run, Plan, ServiceCtx};
use crate::allocator::{START_AFTER_LABEL, WAIT_FOR_LABEL};
use chrono::{DateTime, SecondsFormat, Utc};
use shoal_api::{NodeAvailability, Task, TaskState};

/// A task as this plan sees it: the stored task plus what the plan already decided for it.
#[derive(Clone, Debug)]
pub(crate) struct TaskView<'a> {
    pub t: &'a Task,
    pub desired: TaskState,
    pub state: TaskState,
    pub ended_at: DateTime<Utc>,
    /// Ended on its own (not on the orchestrator's request), as seen in this plan.
    pub ended_on_its_own: bool,
}

impl<'a> TaskView<'a> {
    pub fn new(t: &'a Task) -> Self {
        TaskView {
            t,
            desired: t.desired_state,
            state: t.status.state,
            ended_at: t.status.timestamp,
            ended_on_its_own: false,
        }
    }

    /// Wanted running and not finished.
    pub fn live(&self) -> bool {
        wants_to_run(self.desired) && !self.state.is_terminal()
    }

    fn rank(&self) -> (TaskState, DateTime<Utc>, &str) {
        (self.state, self.t.meta.created_at, self.t.id.as_str())
    }
}

/// Marks tasks that ended while wanted running as desired `shutdown` (jobs: a `complete`
/// task with desired `complete` is simply done).
pub(crate) fn supervise(views: &mut [TaskView<'_>], plan: &mut Plan) {
    for v in views.iter_mut() {
        if !wants_to_run(v.desired) || !v.state.is_terminal() {
            continue;
        }
        if v.desired == TaskState::Complete && v.state == TaskState::Complete {
            continue;
        }
        plan.set_desired(v.t, TaskState::Shutdown);
        v.desired = TaskState::Shutdown;
        v.ended_on_its_own = true;
    }
}

/// Asks the task (still wanted running) to stop, in this plan.
pub(crate) fn shut_down(v: &mut TaskView<'_>, plan: &mut Plan) {
    plan.set_desired(v.t, TaskState::Shutdown);
    v.desired = TaskState::Shutdown;
}

/// The live task of a slot made from the current spec.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CleanTask {
    pub state: TaskState,
    pub created_at: DateTime<Utc>,
    /// When its status last changed (when it reached `running`, for a running task).
    pub status_at: DateTime<Utc>,
}

/// What a slot looks like after reconciling, for the rolling updater.
#[derive(Clone, Debug, Default)]
pub(crate) struct SlotState<'a> {
    /// The live task made from the current spec, if any.
    pub clean: Option<CleanTask>,
    /// The live task made from an older spec, if any.
    pub dirty: Option<TaskView<'a>>,
    /// A task was created in this plan.
    pub created: bool,
    /// Tasks of the slot still on a live node (observed assigned to running, whatever their
    /// desired state): a new task of the slot that must not overlap them waits for them all.
    pub on_nodes: Vec<&'a str>,
}

/// IDs of the tasks in `views` still on a live node (see [`SlotState::on_nodes`]). A task on
/// a node that is down or gone is not waited for: nobody will report it stopped.
pub(crate) fn on_live_nodes<'a>(ctx: &ServiceCtx<'a>, views: &[TaskView<'a>]) -> Vec<&'a str> {
    views
        .iter()
        .filter(|v| v.state.is_active_on_node() && ctx.node_alive(v.t.node_id.as_deref()))
        .map(|v| v.t.id.as_str())
        .collect()
}

/// Gates `t` on `tasks` (`shoal.wait-for`, comma-separated IDs), if there are any.
pub(crate) fn wait_for(t: &mut Task, tasks: &[&str]) {
    if !tasks.is_empty() {
        t.labels.insert(WAIT_FOR_LABEL.into(), tasks.join(","));
    }
}

/// Reconciles one slot; `can_create` is false where no new task may go (a paused node).
pub(crate) fn reconcile<'a>(
    ctx: &ServiceCtx<'a>,
    slot: u64,
    node_id: Option<&str>,
    views: &mut [TaskView<'a>],
    can_create: bool,
    desired: TaskState,
    plan: &mut Plan,
) -> SlotState<'a> {
    let mut out = SlotState::default();
    // The most advanced live task from the current spec, and from an older one.
    let (mut best_clean, mut best_dirty): (Option<usize>, Option<usize>) = (None, None);
    let mut dirty_flags: Vec<bool> = Vec::new();
    if views.len() > 1 {
        dirty_flags.resize(views.len(), false);
    }
    for i in 0..views.len() {
        if !views[i].live() {
            continue;
        }
        let dirty = ctx.is_dirty(views[i].t);
        if let Some(f) = dirty_flags.get_mut(i) {
            *f = dirty;
        }
        let best = if dirty {
            &mut best_dirty
        } else {
            &mut best_clean
        };
        if best.is_none_or(|b| views[i].rank() > views[b].rank()) {
            *best = Some(i);
        }
    }
    if views.len() > 1 {
        let clean_running = best_clean.is_some_and(|b| views[b].state >= TaskState::Running);
        for (i, v) in views.iter_mut().enumerate() {
            if !v.live() || Some(i) == best_clean {
                continue;
            }
            let dirty = dirty_flags.get(i).copied().unwrap_or(false);
            // Extra clean ones go; old-spec ones go once a clean one runs (start-first), or
            // when they are extras themselves.
            if !dirty || clean_running || Some(i) != best_dirty {
                shut_down(v, plan);
            }
        }
        if clean_running {
            best_dirty = None;
        }
    }
    if let Some(b) = best_clean {
        out.clean = Some(CleanTask {
            state: views[b].state,
            created_at: views[b].t.meta.created_at,
            status_at: views[b].t.status.timestamp,
        });
    }
    if let Some(b) = best_dirty {
        out.dirty = Some(views[b].clone());
    }
    out.on_nodes = on_live_nodes(ctx, views);
    if out.clean.is_some() || out.dirty.is_some() || !can_create {
        return out;
    }

    // Nothing live: decide from the latest task.
    let latest = views
        .iter()
        .max_by(|a, b| {
            (a.t.meta.created_at, a.t.id.as_str()).cmp(&(b.t.meta.created_at, b.t.id.as_str()))
        })
        .cloned();
    let mut new = match &latest {
        None => ctx.new_task(slot, node_id.map(Into::into)),
        // It was asked to stop: the replacement starts once it has (see the gate below).
        Some(l) if !l.state.is_terminal() => ctx.new_task(slot, node_id.map(Into::into)),
        Some(l)
            if !l.ended_on_its_own
                && matches!(
                    l.state,
                    TaskState::Shutdown | TaskState::Remove | TaskState::Orphaned
                ) =>
        {
            // Stopped on the orchestrator's request (an ineligible node that came back).
            ctx.new_task(slot, node_id.map(Into::into))
        }
        Some(l) if ctx.is_dirty(l.t) => ctx.new_task(slot, node_id.map(Into::into)),
        Some(l) => {
            let policy = shoal_api::spec::restart_policy(&l.t.spec);
            let is_job = desired == TaskState::Complete;
            if !restart::should_restart(&policy, is_job, l.t, l.state, l.ended_at) {
                return out;
            }
            let mut t = ctx.new_task(slot, node_id.map(Into::into));
            t.labels = restart::replacement_labels(&policy, l.t, t.spec_version, ctx.now);
            let drained = ctx
                .node(l.t.node_id.as_deref())
                .is_some_and(|n| n.availability() == NodeAvailability::Drain);
            if let Some(at) = restart::start_after(&policy, l.ended_at, drained) {
                if at > ctx.now {
                    t.labels.insert(
                        START_AFTER_LABEL.into(),
                        at.to_rfc3339_opts(SecondsFormat::Nanos, true),
                    );
                    plan.wake_at(at);
                }
            }
            tracing::debug!(service = %ctx.service.id, slot, old = %l.t.id, "restarting task");
            t
        }
    };
    // Whatever the slot's history: not before every task of the slot still on a live node has
    // stopped (a task on a down or deleted node is replaced at once, with no restart delay
    // either: see `restart::start_after`).
    wait_for(&mut new, &out.on_nodes);
    new.desired_state = desired;
    if desired == TaskState::Complete {
        new.job_iteration = Some(ctx.service.job_iteration);
    }
    out.clean = Some(CleanTask {
        state: TaskState::New,
        created_at: ctx.now,
        status_at: ctx.now,
    });
    out.created = true;
    plan.push(super::Intent::CreateTask(Box::new(new)));
    out
}
