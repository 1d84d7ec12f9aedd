//! The task reaper: keeps task history bounded and clears out removed tasks.
//!
//! ```text
//!  task of a deleted service ─────────────► desired remove
//!  desired remove and (stopped | never reached a node | node deleted) ──► deleted
//!  per slot (per node for global services): more than the history limit ──► delete the
//!     oldest tasks that are stopped (or were shut down before reaching a node)
//! ```
//!
//! The limit is the cluster's `TaskHistoryRetentionLimit` (5 when unset; negative keeps
//! everything), or, as swarmkit, `MaxAttempts + 1` for a service with a restart max attempts.
//! The newest task of a slot is never deleted: it is what tells the orchestrator a slot whose
//! restart policy said "no more" should stay empty.

use crate::orchestrator::{Intent, Plan};
use chrono::{DateTime, Utc};
use shoal_api::spec::{self, ServiceMode};
use shoal_api::{Task, TaskState};
use shoal_store::StoreState;
use std::collections::HashMap;

/// The cluster's task history retention limit (5 when there is no cluster object yet).
pub fn history_limit(state: &StoreState) -> i64 {
    state
        .cluster
        .as_ref()
        .map(|c| spec::task_history_limit(&c.spec))
        .unwrap_or(spec::DEFAULT_TASK_HISTORY_LIMIT)
}

/// A stopped task, or one shut down before it reached a node.
fn cleanable(t: &Task) -> bool {
    t.status.state.is_terminal()
        || (t.status.state < TaskState::Assigned && t.desired_state > TaskState::Running)
}

/// Deletes the oldest cleanable tasks of one slot until at most `limit` are left (never the
/// newest one).
fn trim(mut tasks: Vec<&Task>, limit: usize, plan: &mut Plan) {
    let newest = tasks
        .iter()
        .max_by_key(|t| (t.meta.created_at, t.id.as_str()))
        .map(|t| t.id.clone());
    tasks.sort_by_key(|t| (t.status.timestamp, t.meta.created_at));
    let mut left = tasks.len();
    for t in tasks {
        if left <= limit {
            break;
        }
        if cleanable(t) && newest.as_deref() != Some(t.id.as_str()) {
            plan.push(Intent::DeleteTask {
                task_id: t.id.clone(),
            });
            left -= 1;
        }
    }
}

/// Plans deletions and removals.
pub fn plan(state: &StoreState, _now: DateTime<Utc>) -> Plan {
    let mut plan = Plan::default();

    for t in state.tasks.values() {
        if !state.services.contains_key(&t.service_id) && t.desired_state < TaskState::Remove {
            plan.push(Intent::SetDesired {
                task_id: t.id.clone(),
                state: TaskState::Remove,
            });
            continue;
        }
        if t.desired_state == TaskState::Remove {
            let node_gone = t
                .node_id
                .as_deref()
                .is_some_and(|n| !state.nodes.contains_key(n));
            if t.status.state.is_terminal() || t.status.state < TaskState::Assigned || node_gone {
                plan.push(Intent::DeleteTask {
                    task_id: t.id.clone(),
                });
            }
        }
    }

    // History: one scan, keyed by (service, slot or node), then trimmed per group.
    let default_limit = history_limit(state);
    let limits: HashMap<&str, (Option<usize>, bool)> = state
        .services
        .values()
        .map(|s| {
            let attempts = s
                .spec
                .task_template
                .as_ref()
                .map(|t| spec::restart_policy(t).max_attempts)
                .unwrap_or(0);
            let limit = if attempts > 0 {
                i64::try_from(attempts)
                    .unwrap_or(i64::MAX)
                    .saturating_add(1)
            } else {
                default_limit
            };
            let mode = spec::service_mode(&s.spec);
            let global = mode.is_global() || matches!(mode, ServiceMode::GlobalJob);
            (s.id.as_str(), (usize::try_from(limit).ok(), global))
        })
        .collect();
    type Key<'a> = (&'a str, u64, &'a str);
    let mut keyed: Vec<(Key<'_>, &Task)> = Vec::new();
    for t in state.tasks.values() {
        if t.desired_state == TaskState::Remove {
            continue;
        }
        let Some(&(Some(_), global)) = limits.get(t.service_id.as_str()) else {
            continue;
        };
        let key = if global {
            (t.service_id.as_str(), 0, t.node_id.as_deref().unwrap_or(""))
        } else {
            (t.service_id.as_str(), t.slot, "")
        };
        keyed.push((key, t));
    }
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for group in keyed.chunk_by(|a, b| a.0 == b.0) {
        let limit = limits
            .get(group[0].0 .0)
            .and_then(|l| l.0)
            .unwrap_or(usize::MAX);
        if group.len() > limit {
            trim(group.iter().map(|(_, t)| *t).collect(), limit, &mut plan);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::*;
    use chrono::TimeDelta;
    use shoal_api::engine;

    fn deleted(p: &Plan) -> Vec<String> {
        p.intents
            .iter()
            .filter_map(|i| match i {
                Intent::DeleteTask { task_id } => Some(task_id.clone()),
                _ => None,
            })
            .collect()
    }

    fn history(s: &shoal_api::Service, n: usize) -> Vec<Task> {
        let t0 = Utc::now() - TimeDelta::seconds(100);
        let mut v: Vec<Task> = (0..n)
            .map(|i| {
                let mut t = task(s, 1, Some("n1"), TaskState::Failed);
                t.desired_state = TaskState::Shutdown;
                t.meta.created_at = t0 + TimeDelta::seconds(i as i64);
                t.status.timestamp = t0 + TimeDelta::seconds(i as i64);
                t
            })
            .collect();
        let mut live = task(s, 1, Some("n1"), TaskState::Running);
        live.meta.created_at = t0 + TimeDelta::seconds(n as i64);
        live.status.timestamp = t0 + TimeDelta::seconds(n as i64);
        v.push(live);
        v
    }

    #[test]
    fn keeps_at_most_the_limit_per_slot_deleting_the_oldest() {
        let s = replicated("web", 1);
        let tasks = history(&s, 7);
        let st = state(vec![node("n1")], vec![s], tasks.clone());
        let p = plan(&st, Utc::now());
        let d = deleted(&p);
        assert_eq!(d.len(), 3, "8 tasks, limit 5");
        assert_eq!(
            d,
            vec![
                tasks[0].id.clone(),
                tasks[1].id.clone(),
                tasks[2].id.clone()
            ]
        );
    }

    #[test]
    fn cluster_limit_and_max_attempts_apply() {
        let mut s = replicated("web", 1);
        let tasks = history(&s, 4);
        let mut st = state(vec![node("n1")], vec![s.clone()], tasks.clone());
        st.cluster = Some(shoal_api::Cluster {
            id: "c".into(),
            meta: shoal_api::Meta::new_now(),
            spec: engine::SwarmSpec {
                orchestration: Some(engine::SwarmSpecOrchestration {
                    task_history_retention_limit: Some(2),
                }),
                ..Default::default()
            },
            worker_join_token: String::new(),
            manager_join_token: String::new(),
            root_ca_cert: String::new(),
            root_ca_key: String::new(),
            removed_nodes: Vec::new(),
            unlock_key: String::new(),
            default_addr_pool: vec![],
            subnet_size: 24,
            data_path_port: 4789,
        });
        assert_eq!(deleted(&plan(&st, Utc::now())).len(), 3);
        if let Some(t) = s.spec.task_template.as_mut() {
            t.restart_policy = Some(engine::TaskSpecRestartPolicy {
                max_attempts: Some(3),
                ..Default::default()
            });
        }
        st.services.insert(s.id.clone(), s);
        assert_eq!(
            deleted(&plan(&st, Utc::now())).len(),
            1,
            "keep max attempts + 1"
        );
    }

    #[test]
    fn deleted_service_tasks_are_removed_then_deleted_once_stopped() {
        let s = replicated("web", 1);
        let running = task(&s, 1, Some("n1"), TaskState::Running);
        let st = state(vec![node("n1")], vec![], vec![running.clone()]);
        let p = plan(&st, Utc::now());
        assert_eq!(
            p.intents,
            vec![Intent::SetDesired {
                task_id: running.id.clone(),
                state: TaskState::Remove
            }]
        );
        let mut stopping = running.clone();
        stopping.desired_state = TaskState::Remove;
        let st = state(vec![node("n1")], vec![], vec![stopping.clone()]);
        assert!(deleted(&plan(&st, Utc::now())).is_empty());
        let mut stopped = stopping;
        stopped.status.state = TaskState::Shutdown;
        let st = state(vec![node("n1")], vec![], vec![stopped.clone()]);
        assert_eq!(deleted(&plan(&st, Utc::now())), vec![stopped.id]);
    }

    #[test]
    fn the_newest_task_of_a_slot_is_kept() {
        let s = replicated("web", 1);
        let mut tasks = history(&s, 7);
        tasks.pop();
        let newest = tasks[6].id.clone();
        let st = state(vec![node("n1")], vec![s], tasks);
        let mut st = st;
        st.cluster = None;
        let d = deleted(&plan(&st, Utc::now()));
        assert_eq!(d.len(), 2);
        assert!(!d.contains(&newest));
    }
}
