//! Hand-written scenarios on the simulation's building blocks, for faults whose timing the
//! random schedule only hits now and then.
//!
//! A timed-out orchestration write that commits later:
//!
//! ```text
//!  leader L ── pass 1: CreateTask(slot 1) ──► log index i      (L cut off)
//!           ◄─ NoQuorum after propose_timeout: the pass "failed", the entry is still in L's log
//!  network heals before the followers' election timeout: L is still the leader
//!  (read barrier: a heartbeat round to a quorum, done before replication's back-off ends)
//!  pass 2 ── plans on a store without entry i ── CreateTask(slot 1) again (fresh ID)
//!  entry i commits, then pass 2's entry: two tasks desired running in slot 1
//! ```
//!
//! Waiting for the leader's own log to be applied before planning rules it out; a read barrier
//! alone does not (it covers what was committed when it was called). The manager now awaits a
//! pass guard before every pass, and the daemon's leader (like the simulation's,
//! `PassGuard::OwnLog`) uses `shoal_manager::guard::OwnLogGuard`: read barrier, own log applied.
//!
//! The same held for a client retrying `service create` after a timeout: the name check ran
//! only in the transaction, against the leader's applied state, so the first attempt committing
//! late left two services with one name; with follower forwarding, two clients creating one
//! name through two followers at once got the same result. (Fixed: the store checks service
//! names and published ports again when an entry applies.)
//!
//! And a write forwarded from a lagging follower that the store refuses when applying it (a
//! stale version) was reported as a success if the follower then caught up from a snapshot:
//! the refusal was only recorded by applying the entry. (Fixed: the proposer reports the
//! leader's refusal.)
//!
//! Finally a new leader that plans at once, before committing an entry of its own term, plans
//! on a store that lacks its predecessor's last writes (a read barrier is enough there; the
//! daemon's guard starts with one).
//!
//! The `#[ignore]`d tests show the defects: they fail while the defects exist.

use std::sync::Arc;
use std::time::Duration;

use shoal_api::{engine, TaskState};
use shoal_manager::control::{Control, ControlError};
use shoal_manager::guard::OwnLogGuard;
use shoal_manager::manager::Manager;
use shoal_sim::clock::{Journal, SimClock};
use shoal_sim::cluster::{eventually, Cluster, Live};
use shoal_sim::glue::SimLog;
use shoal_sim::invariants::Violations;
use shoal_sim::SimConfig;

/// How the leader plans (again) in the scenarios below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replan {
    /// A read barrier, then a plain `Manager::pass`.
    ReadBarrierOnly,
    /// What each pass of the daemon's leader loop (`Manager::run`) is: `Manager::guarded_pass`
    /// behind the leader guard (read barrier, then the leader's own log applied).
    Guarded,
}

/// A manager over `leader`'s store with the daemon's leader guard.
fn guarded_manager(leader: &Live) -> Manager {
    Manager::with_guard(
        leader.store.clone(),
        OwnLogGuard::shared(SimLog {
            node: leader.raft.clone(),
            wait: Duration::from_secs(5),
        }),
    )
}

/// Plans on `leader` as `how` says.
async fn replan(leader: &Live, clock: &SimClock, how: Replan) {
    match how {
        Replan::ReadBarrierOnly => {
            leader.raft.read_barrier().await.expect("read barrier");
            Manager::new(leader.store.clone())
                .pass(clock.now())
                .await
                .expect("the pass");
        }
        Replan::Guarded => {
            guarded_manager(leader)
                .guarded_pass(clock.now())
                .await
                .expect("the guarded pass");
        }
    }
}

/// Three managers with idle role loops (the tests run the passes themselves) and a short
/// proposal timeout, bootstrapped; returns the cluster and its clock.
async fn quiet_cluster() -> (Arc<Cluster>, SimClock) {
    quiet_cluster_with(|_| {}).await
}

async fn quiet_cluster_with(tweak: impl FnOnce(&mut SimConfig)) -> (Arc<Cluster>, SimClock) {
    let mut cfg = SimConfig::new(3);
    cfg.pass_interval = Duration::from_secs(3600);
    cfg.raft.propose_timeout_ms = 300;
    tweak(&mut cfg);
    let clock = SimClock::new();
    let journal = Journal::new(clock.clone());
    let cluster: Arc<Cluster> =
        Cluster::start(&cfg, 1, clock.clone(), journal, Violations::default())
            .await
            .expect("cluster");
    assert!(
        eventually(Duration::from_secs(10), Duration::from_millis(10), || {
            cluster.leader().is_some()
        })
        .await
    );
    shoal_sim::sim::bootstrap(&cluster, &cfg)
        .await
        .expect("bootstrap");
    (cluster, clock)
}

fn web() -> engine::ServiceSpec {
    engine::ServiceSpec {
        name: Some("web".into()),
        mode: Some(engine::ServiceSpecMode {
            replicated: Some(engine::ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        task_template: Some(engine::TaskSpec {
            container_spec: Some(engine::TaskSpecContainerSpec {
                image: Some("busybox".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs the timed-out write scenario, planning the second time as `how` says; returns how many
/// tasks of the service end up desired running.
async fn timed_out_write_then_replan(how: Replan) -> usize {
    let (cluster, clock) = quiet_cluster().await;
    let leader = cluster.leader().expect("leader");
    let service = Control::new(leader.store.clone())
        .create_service(web(), None)
        .await
        .expect("service created");

    // Pass 1 while the leader is cut off: its write times out but stays in the leader's log,
    // and replication to the followers backs off.
    cluster.net().isolate(leader.id);
    let manager = Manager::new(leader.store.clone());
    let first = manager.pass(clock.now()).await;
    assert!(first.is_err(), "the first pass cannot commit: {first:?}");
    let m = leader.raft.metrics();
    assert!(m.last_log > m.last_applied, "a proposal is pending: {m:?}");
    cluster.net().heal();
    assert_eq!(
        leader.raft.metrics().role,
        shoal_raft::RaftRole::Leader,
        "still the leader"
    );

    // Pass 2 as `how` says.
    replan(&leader, &clock, how).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let desired = leader.store.view(|s| {
        s.tasks_of_service(&service)
            .filter(|t| t.desired_state == TaskState::Running)
            .count()
    });
    cluster.shutdown().await;
    desired
}

/// The daemon's leader loop after a pass whose write timed out: it used to plan the slot again
/// at once (two tasks). Each pass of `Manager::run` is now a `guarded_pass`: the leader guard
/// waits for the leader's own log, the timed-out entry included, to be applied first. (With a
/// plain `pass` instead, this fails: two tasks.)
#[tokio::test(start_paused = true)]
async fn replanning_after_a_timed_out_write_duplicates_the_slot() {
    assert_eq!(timed_out_write_then_replan(Replan::Guarded).await, 1);
}

/// Documentation, kept ignored: a read barrier alone does not cover the leader's pending
/// proposals (it waits for what was committed when it was called, and the timed-out entry is
/// not committed yet), so the slot gets two tasks: why the leader guard also waits for the own
/// log. Run with `--ignored` to see it fail.
#[tokio::test(start_paused = true)]
#[ignore = "demonstrates that a read barrier alone does not cover the leader's pending proposals"]
async fn a_read_barrier_does_not_cover_a_timed_out_write() {
    assert_eq!(
        timed_out_write_then_replan(Replan::ReadBarrierOnly).await,
        1
    );
}

/// A client retrying `service create` after a timeout: both attempts commit. The name check
/// in the retry's transaction passes (the first attempt is not applied yet), but the store
/// refuses the second entry when it applies (the first one holds the name by then), on every
/// manager alike: one service, and the retry is told the name is taken, as Docker tells a
/// retry whose first attempt went through. (Before the fix: two services named `web`.)
#[tokio::test(start_paused = true)]
async fn a_retried_create_after_a_timeout_duplicates_the_name() {
    let (cluster, _clock) = quiet_cluster().await;
    let leader = cluster.leader().expect("leader");
    let control = Control::new(leader.store.clone());
    cluster.net().isolate(leader.id);
    let first = control.create_service(web(), None).await;
    assert!(first.is_err(), "times out: {first:?}");
    cluster.net().heal();
    // The client retries at once, as `docker service create` run again would.
    let second = control.create_service(web(), None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let named_web = leader
        .store
        .view(|s| s.services.values().filter(|s| s.name() == "web").count());
    cluster.shutdown().await;
    match &second {
        Ok(_) => {}
        Err(ControlError::Conflict(m)) => assert_eq!(
            m, "name conflicts with an existing object: service web already exists",
            "the retry is refused with Docker's conflict"
        ),
        Err(e) => panic!("the retry fails only with a name conflict: {e:?}"),
    }
    assert_eq!(named_web, 1, "services named web");
}

/// A write that is forwarded from a lagging follower and refused when applied (its version is
/// stale) is reported as a success when the follower then catches up from a snapshot instead of
/// applying the entry, if the refusal is looked up in the follower's own apply. Fixed: the
/// proposer reports the refusal the leader saw (`RaftError::Rejected` carries it).
#[tokio::test(start_paused = true)]
async fn a_forwarded_write_refused_on_apply_is_not_acknowledged() {
    let (cluster, _clock) = quiet_cluster_with(|cfg| {
        cfg.forwarding = true;
        cfg.daemon_rejections = true;
        cfg.raft.propose_timeout_ms = 2_000;
        // A snapshot after every entry, nothing kept below it: a follower that is behind always
        // catches up from a snapshot.
        cfg.raft.snapshot_every = 1;
        cfg.raft.keep_after_snapshot = 0;
    })
    .await;
    let leader = cluster.leader().expect("leader");
    let on_leader = Control::new(leader.store.clone());
    let id = on_leader
        .create_service(web(), None)
        .await
        .expect("created");
    let follower = cluster
        .all_live()
        .into_iter()
        .find(|l| l.id != leader.id)
        .expect("a follower");
    assert!(
        eventually(Duration::from_secs(5), Duration::from_millis(10), || {
            follower.store.view(|s| s.services.contains_key(&id))
        })
        .await
    );

    // The follower is down while the service changes a few times.
    cluster.crash(follower.id).await;
    for i in 0..5 {
        let svc = on_leader.resolve_service("web").expect("web");
        let mut spec = (*svc.spec).clone();
        spec.labels = Some([("rev".to_string(), i.to_string())].into());
        on_leader
            .update_service(&id, svc.meta.version, spec, None, false)
            .await
            .expect("update on the leader");
    }
    cluster.open(follower.id).await.expect("restart");
    let follower = cluster.live(follower.id).expect("up again");

    // A client on the restarted follower updates from what that follower shows: stale.
    let on_follower = Control::new(follower.store.clone());
    let stale = on_follower
        .resolve_service("web")
        .expect("web on the follower");
    let mut spec = (*stale.spec).clone();
    spec.labels = Some([("rev".to_string(), "stale".to_string())].into());
    let res = on_follower
        .update_service(&id, stale.meta.version, spec, None, false)
        .await;
    let applied = leader.store.view(|s| {
        s.services[&id]
            .spec
            .labels
            .as_ref()
            .and_then(|l| l.get("rev").cloned())
    });
    cluster.shutdown().await;
    assert_eq!(
        applied.as_deref(),
        Some("4"),
        "the stale write was not applied"
    );
    assert!(
        res.is_err(),
        "the stale write was not applied, yet the client was told it succeeded"
    );
}

/// The same with rejections reported directly by the proposer: the client is told.
#[tokio::test(start_paused = true)]
async fn a_forwarded_write_refused_on_apply_is_reported_when_the_proposer_says_so() {
    let (cluster, _clock) = quiet_cluster_with(|cfg| {
        cfg.forwarding = true;
        cfg.daemon_rejections = false;
        cfg.raft.propose_timeout_ms = 2_000;
        cfg.raft.snapshot_every = 1;
        cfg.raft.keep_after_snapshot = 0;
    })
    .await;
    let leader = cluster.leader().expect("leader");
    let on_leader = Control::new(leader.store.clone());
    let id = on_leader
        .create_service(web(), None)
        .await
        .expect("created");
    let follower = cluster
        .all_live()
        .into_iter()
        .find(|l| l.id != leader.id)
        .expect("a follower");
    assert!(
        eventually(Duration::from_secs(5), Duration::from_millis(10), || {
            follower.store.view(|s| s.services.contains_key(&id))
        })
        .await
    );
    cluster.crash(follower.id).await;
    let svc = on_leader.resolve_service("web").expect("web");
    on_leader
        .update_service(&id, svc.meta.version, (*svc.spec).clone(), None, false)
        .await
        .expect("update on the leader");
    cluster.open(follower.id).await.expect("restart");
    let follower = cluster.live(follower.id).expect("up again");
    let on_follower = Control::new(follower.store.clone());
    let stale = on_follower
        .resolve_service("web")
        .expect("web on the follower");
    let res = on_follower
        .update_service(&id, stale.meta.version, (*stale.spec).clone(), None, false)
        .await;
    cluster.shutdown().await;
    let refused = match &res {
        Err(ControlError::OutOfSequence) => true,
        Err(ControlError::Unavailable(m)) => shoal_sim::glue::is_rejected(m),
        _ => false,
    };
    assert!(refused, "the stale write is refused: {res:?}");
}

/// A new leader plans with `guard` as soon as it leads, after the old leader committed a task
/// that the new one has in its log but has not applied yet (it learns the commit index only by
/// committing an entry of its own term). Returns how many tasks end up desired running.
async fn new_leader_plans(how: Replan) -> usize {
    let (cluster, clock) = quiet_cluster().await;
    let old = cluster.leader().expect("leader");
    let service = Control::new(old.store.clone())
        .create_service(web(), None)
        .await
        .expect("service created");
    // The old leader creates the slot's task (one committed entry), then is cut off while the
    // message telling the followers that the entry is committed is still on its way (slow
    // links: the entry reaches them, its commit does not).
    for f in cluster.ids().into_iter().filter(|id| *id != old.id) {
        cluster
            .net()
            .set_link_delay(old.id, f, Duration::from_millis(40));
    }
    let plan = old
        .store
        .view(|s| shoal_manager::orchestrator::plan(s, clock.now()));
    old.store
        .update(|tx| {
            Ok::<_, shoal_store::StoreError>(shoal_manager::orchestrator::apply(tx, &plan.intents))
        })
        .await
        .expect("the task is created");
    cluster.net().isolate(old.id);
    cluster.net().clear_faults();
    // Between the two others, a round trip takes a moment (as on any real network): the new
    // leader needs it to commit an entry of its own term, and so to learn what is committed.
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != old.id)
        .collect();
    cluster
        .net()
        .set_link_delay(others[0], others[1], Duration::from_millis(20));
    let new = loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if let Some(l) = cluster.leader().filter(|l| l.id != old.id) {
            break l;
        }
    };
    let before = new.store.view(|s| s.tasks_of_service(&service).count());
    replan(&new, &clock, how).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let desired = new.store.view(|s| {
        s.tasks_of_service(&service)
            .filter(|t| t.desired_state == TaskState::Running)
            .count()
    });
    cluster.shutdown().await;
    assert_eq!(
        before, 0,
        "the new leader had not applied the task when it took over"
    );
    desired
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_behind_a_read_barrier_plans_once() {
    assert_eq!(new_leader_plans(Replan::ReadBarrierOnly).await, 1);
}

/// What the daemon's leader loop does: `Manager::run` as soon as this manager leads. It used
/// to plan on a store that lacked the old leader's last writes (two tasks); its passes are now
/// guarded passes, whose read barrier brings those writes in first. (With a plain `pass`
/// instead, this fails: two tasks.)
#[tokio::test(start_paused = true)]
async fn a_new_leader_planning_at_once_duplicates_the_slot() {
    assert_eq!(new_leader_plans(Replan::Guarded).await, 1);
}

/// Two clients create the same service name at the same time through two followers: each
/// follower checks the name against its own store, both forward, both commit; the store
/// refuses the second entry when it applies (before the fix, both services existed).
#[tokio::test(start_paused = true)]
async fn concurrent_creates_through_two_followers_duplicate_the_name() {
    let (cluster, _clock) = quiet_cluster_with(|cfg| {
        cfg.forwarding = true;
        cfg.raft.propose_timeout_ms = 2_000;
    })
    .await;
    let leader = cluster.leader().expect("leader");
    let followers: Vec<_> = cluster
        .all_live()
        .into_iter()
        .filter(|l| l.id != leader.id)
        .collect();
    let a = Control::new(followers[0].store.clone());
    let b = Control::new(followers[1].store.clone());
    let (ra, rb) = tokio::join!(a.create_service(web(), None), b.create_service(web(), None));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let named_web = leader
        .store
        .view(|s| s.services.values().filter(|s| s.name() == "web").count());
    cluster.shutdown().await;
    assert_eq!(named_web, 1, "services named web ({ra:?}, {rb:?})");
    let (won, lost) = match (&ra, &rb) {
        (Ok(_), other) | (other, Ok(_)) => (true, other),
        _ => (false, &ra),
    };
    assert!(won, "one create succeeds: {ra:?} {rb:?}");
    assert!(
        matches!(lost, Err(ControlError::Conflict(m)) if m.contains("name conflicts")),
        "the other is refused with Docker's conflict: {ra:?} {rb:?}"
    );
}

/// A stop-first rolling update replaced by a second update before the first one's old task has
/// stopped: the second replacement was gated on the first replacement (which never reached a
/// node), not on the old task still running, so it was scheduled at once and the slot ran two
/// tasks. Found by the random simulation (seed 50, five managers). One store, no Raft: this is
/// orchestration alone. Fixed: a replacement waits for every task of its slot still on a node.
#[tokio::test(start_paused = true)]
async fn a_second_stop_first_update_waits_for_the_task_still_running() {
    use shoal_api::{Object, TaskStatus};
    let store = shoal_store::Store::new();
    let clock = SimClock::new();
    let manager = Manager::new(store.clone());
    let control = Control::new(store.clone());
    for i in 0..2 {
        let node = serde_json::from_value::<shoal_api::Node>(serde_json::json!({
            "id": format!("n{i}"),
            "meta": shoal_api::Meta::new_now(),
            "spec": engine::NodeSpec::default(),
            "description": engine::NodeDescription::default(),
            "status": {"state": "ready", "message": "", "addr": "10.0.0.1"},
            "role": "worker",
            "manager_status": null,
        }))
        .expect("node");
        store
            .update(|tx| tx.create(Object::Node(node)))
            .await
            .expect("node created");
    }
    let id = control.create_service(web(), None).await.expect("created");
    // What an agent does: report a task's state.
    let report = |task: String, state: TaskState| {
        let store = store.clone();
        async move {
            store
                .update(|tx| {
                    let mut t = tx.get_task(&task).expect("task");
                    t.status = TaskStatus::new(state, state.as_str());
                    tx.update(Object::Task(t))
                })
                .await
                .expect("status reported")
        }
    };
    let update_image = |image: &'static str| {
        let control = &control;
        let id = id.clone();
        async move {
            let svc = control.resolve_service(&id).expect("service");
            let mut spec = (*svc.spec).clone();
            spec.task_template
                .as_mut()
                .and_then(|t| t.container_spec.as_mut())
                .expect("container spec")
                .image = Some(image.into());
            control
                .update_service(&id, svc.meta.version, spec, None, false)
                .await
                .expect("updated");
        }
    };
    let tasks = |store: &shoal_store::Store| {
        store.view(|s| {
            s.tasks_of_service(&id)
                .map(|t| (t.id.clone(), t.desired_state, t.status.state))
                .collect::<Vec<_>>()
        })
    };

    manager.pass(clock.now()).await.expect("pass");
    let (old, _, state) = tasks(&store)[0].clone();
    assert_eq!(state, TaskState::Assigned);
    report(old.clone(), TaskState::Running).await;

    // Update 1: the old task is asked to stop; its replacement waits for it.
    update_image("busybox:2").await;
    manager.pass(clock.now()).await.expect("pass");
    // Update 2 before the old task has stopped (its agent is slow).
    update_image("busybox:3").await;
    manager.pass(clock.now()).await.expect("pass");
    manager.pass(clock.now()).await.expect("pass");

    let all = tasks(&store);
    let old_now = all.iter().find(|(t, _, _)| *t == old).expect("old task");
    assert_eq!(old_now.2, TaskState::Running, "the old task still runs");
    let started: Vec<_> = all
        .iter()
        .filter(|(t, d, s)| *t != old && *d == TaskState::Running && *s >= TaskState::Assigned)
        .collect();
    assert!(
        started.is_empty(),
        "stop-first: nothing may be handed to a node while the old task runs, yet {started:?} \
         was (all tasks: {all:?})"
    );
}

/// A manager that catches up from a snapshot whose last entry is a new leader's blank entry
/// ends with `StoreState::last_index` = that entry's index (`Store::restore_bytes` raises it to
/// the snapshot index), while the managers that applied the log keep the index of the last
/// store write: the replicas' states differ. Found by the random simulation (seed 75, five
/// managers). Fixed: a restore keeps the snapshot's own `last_index`.
#[tokio::test(start_paused = true)]
async fn a_replica_restored_from_a_snapshot_has_the_same_state() {
    let (cluster, _clock) = quiet_cluster_with(|cfg| {
        cfg.raft.propose_timeout_ms = 2_000;
        cfg.raft.snapshot_every = 1;
        cfg.raft.keep_after_snapshot = 0;
    })
    .await;
    let leader = cluster.leader().expect("leader");
    let ids = cluster.ids();
    let others: Vec<u64> = ids.into_iter().filter(|id| *id != leader.id).collect();
    let (away, next) = (others[0], others[1]);
    // One manager is cut off while a store write commits and leadership moves (the new
    // leader's first entry is a blank one, and the latest snapshot ends with it).
    cluster.net().isolate(away);
    Control::new(leader.store.clone())
        .create_service(web(), None)
        .await
        .expect("created");
    let next_node = cluster.live(next).expect("up");
    // With one leader per term (standard Raft) the old leader, which steps down when it sees
    // the higher term, may win the election that follows instead: ask again until `next` leads.
    let mut leads = false;
    for _ in 0..20 {
        next_node
            .raft
            .raft()
            .trigger()
            .elect()
            .await
            .expect("elect");
        leads = eventually(Duration::from_secs(3), Duration::from_millis(10), || {
            cluster.leader().is_some_and(|l| l.id == next)
                && next_node.raft.metrics().last_applied == next_node.raft.metrics().last_log
        })
        .await;
        if leads {
            break;
        }
    }
    assert!(leads, "manager {next} leads");
    cluster.net().heal();
    let away_node = cluster.live(away).expect("up");
    assert!(
        eventually(Duration::from_secs(10), Duration::from_millis(10), || {
            away_node.raft.metrics().last_applied == next_node.raft.metrics().last_applied
        })
        .await,
        "manager {away} caught up"
    );
    let index = |l: &shoal_sim::cluster::Live| l.store.view(|s| s.last_index);
    let (a, b) = (index(&away_node), index(&next_node));
    let same = shoal_sim::cluster::state_json(&away_node.store)
        == shoal_sim::cluster::state_json(&next_node.store);
    cluster.shutdown().await;
    assert!(
        same,
        "last_index {a} on the restored replica, {b} on the leader"
    );
}
