//! The restart supervisor's decisions: whether a task that ended gets a replacement, when the
//! replacement may start, and the restart history it carries.
//!
//! ```text
//!  task ended on its own (complete | failed | rejected | shutdown not requested)
//!     │ condition none                        → no replacement (the slot stays empty)
//!     │ condition on-failure and `complete`   → no replacement
//!     │ max attempts reached (within window)  → no replacement
//!     ▼
//!  replacement: labels shoal.restart.count = n+1, shoal.restart.history = [..., now]
//!               start gate  = ended_at + delay   (no delay when the node was drained)
//! ```
//!
//! Only tasks that ended on their own come here. A task whose node went down (or was deleted)
//! did not end: the orchestrator stops it and replaces it at once, without the restart delay
//! (default 5 s) and without counting a restart. The delay is there to slow a crash loop; a
//! dead node is not one, and waiting would only add to the time its tasks are missing.
//! (Swarmkit applies the delay there too, skipping it only for drained nodes.)
//!
//! The history lives in the replacement's labels rather than in memory, so a manager restart
//! (or a new leader) counts the same attempts, and the task reaper trimming old tasks does not
//! reset the count. Attempts are counted per slot (per node for global services) and reset
//! when the spec version changes, as swarmkit does.

use chrono::{DateTime, TimeDelta, Utc};
use shoal_api::spec::{RestartCondition, RestartPolicy};
use shoal_api::{Task, TaskState};
use std::collections::HashMap;

/// Label: how many restarts led to this task (same slot, same spec version).
pub const RESTART_COUNT_LABEL: &str = "shoal.restart.count";
/// Label: times of the most recent restarts (unix milliseconds, comma-separated), kept while a
/// restart window is set.
pub const RESTART_HISTORY_LABEL: &str = "shoal.restart.history";

/// Restarts that led to `t`.
pub fn restart_count(t: &Task) -> u64 {
    t.labels
        .get(RESTART_COUNT_LABEL)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Times of the recorded restarts that led to `t`, oldest first.
pub fn restart_history(t: &Task) -> Vec<DateTime<Utc>> {
    t.labels
        .get(RESTART_HISTORY_LABEL)
        .map(|v| {
            v.split(',')
                .filter_map(|ms| ms.trim().parse::<i64>().ok())
                .filter_map(DateTime::<Utc>::from_timestamp_millis)
                .collect()
        })
        .unwrap_or_default()
}

fn delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Whether `ended` (which reached `state` at `ended_at` on its own) gets a replacement.
pub fn should_restart(
    policy: &RestartPolicy,
    is_job: bool,
    ended: &Task,
    state: TaskState,
    ended_at: DateTime<Utc>,
) -> bool {
    match policy.condition {
        RestartCondition::None => return false,
        RestartCondition::OnFailure if state == TaskState::Complete => return false,
        RestartCondition::Any if is_job && state == TaskState::Complete => return false,
        _ => {}
    }
    if policy.max_attempts == 0 {
        return true;
    }
    if policy.window.is_zero() {
        return restart_count(ended) < policy.max_attempts;
    }
    let since = ended_at - delta(policy.window);
    let recent = restart_history(ended)
        .into_iter()
        .filter(|t| *t > since)
        .count() as u64;
    recent < policy.max_attempts
}

/// Labels of the replacement of `ended`: the restart count and history carried forward.
pub fn replacement_labels(
    policy: &RestartPolicy,
    ended: &Task,
    new_spec_version: u64,
    now: DateTime<Utc>,
) -> HashMap<String, String> {
    let same_version = ended.spec_version == new_spec_version;
    let (count, mut history) = if same_version {
        (restart_count(ended), restart_history(ended))
    } else {
        (0, Vec::new())
    };
    let mut labels = HashMap::new();
    labels.insert(RESTART_COUNT_LABEL.to_string(), (count + 1).to_string());
    if !policy.window.is_zero() && policy.max_attempts > 0 {
        history.push(now);
        let keep = usize::try_from(policy.max_attempts).unwrap_or(usize::MAX);
        let skip = history.len().saturating_sub(keep);
        let v: Vec<String> = history[skip..]
            .iter()
            .map(|t| t.timestamp_millis().to_string())
            .collect();
        labels.insert(RESTART_HISTORY_LABEL.to_string(), v.join(","));
    }
    labels
}

/// When the replacement may start: `ended_at + delay`, or `None` for no delay (a zero delay,
/// or the old task's node was drained).
pub fn start_after(
    policy: &RestartPolicy,
    ended_at: DateTime<Utc>,
    node_drained: bool,
) -> Option<DateTime<Utc>> {
    if node_drained || policy.delay.is_zero() {
        return None;
    }
    Some(ended_at + delta(policy.delay))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::{replicated, task};
    use std::time::Duration;

    fn policy(condition: RestartCondition, max: u64, window_s: u64) -> RestartPolicy {
        RestartPolicy {
            condition,
            delay: Duration::from_secs(5),
            max_attempts: max,
            window: Duration::from_secs(window_s),
        }
    }

    #[test]
    fn conditions() {
        let s = replicated("web", 1);
        let t = task(&s, 1, Some("n"), TaskState::Failed);
        let now = Utc::now();
        let any = policy(RestartCondition::Any, 0, 0);
        let onf = policy(RestartCondition::OnFailure, 0, 0);
        let none = policy(RestartCondition::None, 0, 0);
        assert!(should_restart(&any, false, &t, TaskState::Complete, now));
        assert!(!should_restart(&any, true, &t, TaskState::Complete, now));
        assert!(should_restart(&any, true, &t, TaskState::Failed, now));
        assert!(should_restart(&onf, false, &t, TaskState::Failed, now));
        assert!(should_restart(&onf, false, &t, TaskState::Shutdown, now));
        assert!(!should_restart(&onf, false, &t, TaskState::Complete, now));
        assert!(!should_restart(&none, false, &t, TaskState::Failed, now));
    }

    #[test]
    fn max_attempts_count_restarts_and_reset_on_new_version() {
        let s = replicated("web", 1);
        let p = policy(RestartCondition::Any, 2, 0);
        let now = Utc::now();
        let mut t = task(&s, 1, Some("n"), TaskState::Failed);
        // Original task: 0 restarts so far.
        assert!(should_restart(&p, false, &t, TaskState::Failed, now));
        t.labels = replacement_labels(&p, &t, 1, now);
        assert_eq!(restart_count(&t), 1);
        assert!(should_restart(&p, false, &t, TaskState::Failed, now));
        t.labels = replacement_labels(&p, &t, 1, now);
        assert_eq!(restart_count(&t), 2);
        assert!(!should_restart(&p, false, &t, TaskState::Failed, now));
        // A new spec version starts counting again.
        let l = replacement_labels(&p, &t, 2, now);
        assert_eq!(l.get(RESTART_COUNT_LABEL).map(String::as_str), Some("1"));
    }

    #[test]
    fn window_counts_recent_restarts_only() {
        let s = replicated("web", 1);
        let p = policy(RestartCondition::Any, 2, 60);
        let t0 = Utc::now();
        let mut t = task(&s, 1, Some("n"), TaskState::Failed);
        t.labels = replacement_labels(&p, &t, 1, t0);
        t.labels = replacement_labels(&p, &t, 1, t0 + TimeDelta::seconds(1));
        assert_eq!(restart_history(&t).len(), 2);
        assert!(!should_restart(
            &p,
            false,
            &t,
            TaskState::Failed,
            t0 + TimeDelta::seconds(2)
        ));
        // Ended long after: both restarts fell out of the window.
        assert!(should_restart(
            &p,
            false,
            &t,
            TaskState::Failed,
            t0 + TimeDelta::seconds(120)
        ));
        // The history keeps at most max_attempts entries.
        t.labels = replacement_labels(&p, &t, 1, t0 + TimeDelta::seconds(3));
        assert_eq!(restart_history(&t).len(), 2);
        assert_eq!(restart_count(&t), 3);
    }

    #[test]
    fn delay_is_skipped_for_drained_nodes() {
        let p = policy(RestartCondition::Any, 0, 0);
        let t0 = Utc::now();
        assert_eq!(start_after(&p, t0, false), Some(t0 + TimeDelta::seconds(5)));
        assert_eq!(start_after(&p, t0, true), None);
        let zero = RestartPolicy {
            delay: Duration::ZERO,
            ..p
        };
        assert_eq!(start_after(&zero, t0, false), None);
    }
}
