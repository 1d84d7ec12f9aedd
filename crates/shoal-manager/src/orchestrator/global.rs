//! The global orchestrator: one live task on every eligible node.
//!
//! ```text
//!  node ready, active, meets constraints ──► slot reconcile (create / restart / dedupe)
//!  node paused, or not ready yet          ──► keep what runs there, add nothing
//!  node down, drained, or constraints no
//!  longer met                             ──► desired shutdown, no replacement
//!  node deleted                           ──► desired remove (the reaper deletes them)
//! ```
//!
//! Tasks are created pre-assigned (`node_id` set, slot 0); the scheduler only confirms that
//! their node passes its filters.

use super::slot::{self, TaskView};
use super::update::{self, SlotEntry};
use super::{wants_to_run, Intent, Plan, ServiceCtx};
use shoal_api::{NodeAvailability, NodeState, TaskState};
use std::collections::BTreeMap;

/// Plans a global service.
pub(crate) fn plan_service(ctx: &ServiceCtx<'_>, plan: &mut Plan) {
    plan_nodes(ctx, ctx.views(), TaskState::Running, plan, true);
}

/// The per-node reconcile shared with global jobs (`desired` = `complete`, no updater).
pub(crate) fn plan_nodes<'a>(
    ctx: &ServiceCtx<'a>,
    views: Vec<TaskView<'a>>,
    desired: TaskState,
    plan: &mut Plan,
    update: bool,
) {
    let mut by_node: BTreeMap<&str, Vec<TaskView<'_>>> = BTreeMap::new();
    for v in views {
        match v.t.node_id.as_deref() {
            Some(n) => by_node.entry(n).or_default().push(v),
            // A global task always names its node; anything else is stray.
            None => plan.set_desired(v.t, TaskState::Remove),
        }
    }

    let mut entries: Vec<SlotEntry<'_>> = Vec::new();
    for (&node_id, tasks) in by_node.iter_mut() {
        let Some(n) = ctx.node(Some(node_id)) else {
            for v in tasks.iter() {
                plan.set_desired(v.t, TaskState::Remove);
                if !v.state.is_terminal() {
                    plan.push(Intent::Orphan {
                        task_id: v.t.id.clone(),
                    });
                }
            }
            continue;
        };
        let keep = n.status.state != NodeState::Down
            && n.availability() != NodeAvailability::Drain
            && ctx.constraints_ok(n);
        if !keep {
            for v in tasks.iter_mut() {
                if wants_to_run(v.desired)
                    && !(v.desired == TaskState::Complete && v.state == TaskState::Complete)
                {
                    slot::shut_down(v, plan);
                }
            }
            continue;
        }
        slot::supervise(tasks, plan);
        let can_create = n.is_ready() && n.availability() == NodeAvailability::Active;
        if desired == TaskState::Complete && super::jobs::node_done(ctx, tasks) {
            continue;
        }
        let st = slot::reconcile(ctx, 0, Some(node_id), tasks, can_create, desired, plan);
        entries.push(SlotEntry {
            slot: 0,
            node: Some(node_id),
            state: st,
        });
    }
    for n in ctx.state.nodes.values() {
        if by_node.contains_key(n.id.as_str()) {
            continue;
        }
        let eligible =
            n.is_ready() && n.availability() == NodeAvailability::Active && ctx.constraints_ok(n);
        if !eligible {
            continue;
        }
        let mut none: Vec<TaskView<'_>> = Vec::new();
        let st = slot::reconcile(ctx, 0, Some(&n.id), &mut none, true, desired, plan);
        entries.push(SlotEntry {
            slot: 0,
            node: Some(&n.id),
            state: st,
        });
    }
    if update {
        let total = entries.len() as u64;
        update::plan_update(ctx, &entries, total, plan);
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan;
    use super::super::testutil::*;
    use super::*;
    use chrono::Utc;
    use shoal_api::engine;

    #[test]
    fn one_task_per_ready_active_node() {
        let s = global("agent");
        let mut paused = node("paused");
        paused.spec.availability = Some(engine::NodeSpecAvailabilityEnum::PAUSE);
        let mut down = node("down");
        down.status.state = NodeState::Down;
        let st = state(vec![node("a"), node("b"), paused, down], vec![s], vec![]);
        let p = plan(&st, Utc::now());
        let mut nodes: Vec<String> = created(&p)
            .iter()
            .filter_map(|t| t.node_id.clone())
            .collect();
        nodes.sort();
        assert_eq!(nodes, vec!["a", "b"]);
        assert!(created(&p).iter().all(|t| t.slot == 0));
    }

    #[test]
    fn constraints_select_nodes_and_ineligible_nodes_lose_their_task() {
        let mut s = global("agent");
        if let Some(t) = s.spec.task_template.as_mut() {
            t.placement = Some(engine::TaskSpecPlacement {
                constraints: Some(vec!["node.labels.agent==yes".into()]),
                ..Default::default()
            });
        }
        let mut yes = node("yes");
        yes.spec.labels = Some([("agent".to_string(), "yes".to_string())].into());
        let on_no = task(&s, 0, Some("no"), TaskState::Running);
        let no_id = on_no.id.clone();
        let mut drained = node("drained");
        drained.spec.availability = Some(engine::NodeSpecAvailabilityEnum::DRAIN);
        drained.spec.labels = yes.spec.labels.clone();
        let on_drained = task(&s, 0, Some("drained"), TaskState::Running);
        let dr_id = on_drained.id.clone();
        let on_gone = task(&s, 0, Some("gone"), TaskState::Running);
        let gone_id = on_gone.id.clone();
        let st = state(
            vec![yes, node("no"), drained],
            vec![s],
            vec![on_no, on_drained, on_gone],
        );
        let p = plan(&st, Utc::now());
        let c = created(&p);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].node_id.as_deref(), Some("yes"));
        let d = desired(&p);
        assert!(d.contains(&(no_id, TaskState::Shutdown)));
        assert!(d.contains(&(dr_id, TaskState::Shutdown)));
        assert!(d.contains(&(gone_id, TaskState::Remove)));
    }

    #[test]
    fn node_coming_back_gets_a_task_again() {
        let s = global("agent");
        let mut old = task(&s, 0, Some("a"), TaskState::Shutdown);
        old.desired_state = TaskState::Shutdown;
        let st = state(vec![node("a")], vec![s], vec![old]);
        let p = plan(&st, Utc::now());
        assert_eq!(created(&p).len(), 1);
    }

    #[test]
    fn converged_global_service_plans_nothing() {
        let s = global("agent");
        let t = task(&s, 0, Some("a"), TaskState::Running);
        let st = state(vec![node("a")], vec![s], vec![t]);
        assert!(plan(&st, Utc::now()).is_empty());
    }
}
