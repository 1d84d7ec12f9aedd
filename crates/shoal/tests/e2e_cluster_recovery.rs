//! A swarm surviving the loss of machines, with real daemons on loopback addresses in
//! 127.0.62.x – 127.0.65.x (see e2e_cluster.rs for the setup): `swarm init
//! --force-new-cluster` after the majority of managers is gone; 3 managers + 2 workers losing
//! two managers, a worker, and all of them at once.

mod common;

use common::cluster::*;
use common::{docker_cli, wait_for, TestDaemon};

fn create(d: &TestDaemon, name: &str, replicas: &str, cmd: &str) -> common::Out {
    d.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--replicas",
        replicas,
        "busybox",
        "sleep",
        cmd,
    ])
}

fn service_names(d: &TestDaemon) -> Vec<String> {
    d.docker(&["service", "ls", "--format", "{{.Name}}"])
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}

/// Creates `name` on `d`, retrying while the swarm settles (an attempt may have been
/// committed even though it reported an error).
fn create_eventually(d: &TestDaemon, name: &str, cmd: &str) {
    wait_for(&format!("creating {name}"), LONG, || {
        let out = create(d, name, "1", cmd);
        if out.code == 0 || service_names(d).iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });
}

#[test]
fn e2e_cluster_force_new_cluster_recovers_a_swarm_without_majority() {
    if docker_cli().is_none() {
        return;
    }
    let mut ds = managers(&["127.0.62.2", "127.0.62.3", "127.0.62.4"]);
    let ids: Vec<String> = ds.iter().map(node_id).collect();
    create(&ds[0], "kept", "3", "6621").ok();
    ds[0].wait_replicas(common::Cli::Docker, "kept", "3/3");

    ds[1].kill9();
    ds[2].kill9();
    let out = create(&ds[0], "refused", "1", "6622");
    assert!(
        out.fails()
            .contains("Make sure more than half of the managers are online."),
        "{out:?}"
    );

    let out = ds[0].docker(&["swarm", "init", "--force-new-cluster"]);
    assert!(
        out.ok().contains(&format!(
            "Swarm initialized: current node ({}) is now a manager.",
            ids[0]
        )),
        "{out:?}"
    );
    // This manager alone leads; the others are down and no longer managers.
    wait_nodes(&ds[0], "one manager, the others down workers", |rows| {
        rows.len() == 3
            && rows
                .iter()
                .any(|r| r.id == ids[0] && r.manager == "Leader" && r.status == "Ready")
            && rows
                .iter()
                .filter(|r| r.id != ids[0])
                .all(|r| r.manager.is_empty() && r.status == "Down")
    });
    // The services are intact, their tasks run (the lost managers' tasks are replaced), and
    // writes work.
    assert!(service_names(&ds[0]).contains(&"kept".to_string()));
    ds[0].wait_replicas(common::Cli::Docker, "kept", "3/3");
    create_eventually(&ds[0], "after-recovery", "6623");
    ds[0].wait_replicas(common::Cli::Docker, "after-recovery", "1/1");

    // An old manager coming back is refused; it cannot disturb the new cluster.
    ds[1].restart();
    create_eventually(&ds[0], "with-old-manager-back", "6624");

    // A new manager joins the recovered swarm.
    let fresh = TestDaemon::start_at("127.0.62.5");
    let out = join(&fresh, &token(&ds[0], "manager"), &ds[0]);
    assert_eq!(
        out.ok().trim(),
        "This node joined a swarm as a manager.",
        "{out:?}"
    );
    let fresh_id = node_id(&fresh);
    wait_nodes(&ds[0], "the new manager reachable", |rows| {
        rows.iter()
            .any(|r| r.id == fresh_id && r.manager == "Reachable" && r.status == "Ready")
    });
    wait_for("the new manager to see the services", LONG, || {
        let names = service_names(&fresh);
        if names.contains(&"kept".to_string()) && names.contains(&"after-recovery".to_string()) {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    });
    create_eventually(&fresh, "from-new-manager", "6625");
}

/// Three managers and two workers, every node ready; the heartbeat period is 1s so a dead
/// node is found quickly. Returns (managers, workers).
fn five_nodes(net: &str) -> (Vec<TestDaemon>, Vec<TestDaemon>) {
    let ms = managers(&[
        &format!("127.0.{net}.2"),
        &format!("127.0.{net}.3"),
        &format!("127.0.{net}.4"),
    ]);
    ms[0]
        .docker(&["swarm", "update", "--dispatcher-heartbeat", "1s"])
        .ok();
    let t = token(&ms[0], "worker");
    let mut ws = Vec::new();
    for ip in [format!("127.0.{net}.5"), format!("127.0.{net}.6")] {
        let w = TestDaemon::start_at(&ip);
        let out = join(&w, &t, &ms[1]);
        assert_eq!(out.ok().trim(), "This node joined a swarm as a worker.");
        ws.push(w);
    }
    wait_nodes(&ms[0], "five nodes ready", |rows| {
        rows.len() == 5
            && rows.iter().all(|r| r.status == "Ready")
            && rows.iter().filter(|r| r.manager == "Leader").count() == 1
            && rows.iter().filter(|r| r.manager == "Reachable").count() == 2
    });
    (ms, ws)
}

/// Waits until `service` runs `n` tasks (desired running), none on `not_on`; returns them
/// by node.
fn wait_spread(
    d: &TestDaemon,
    service: &str,
    n: usize,
    not_on: &[&str],
) -> std::collections::HashMap<String, usize> {
    wait_for(&format!("{n} tasks of {service} running"), LONG, || {
        let per = running_per_node(d, service);
        if per.values().sum::<usize>() == n && not_on.iter().all(|id| !per.contains_key(*id)) {
            Ok(per)
        } else {
            Err(format!("{per:?}"))
        }
    })
}

#[test]
fn e2e_cluster_five_nodes_lose_a_worker_then_the_majority() {
    if docker_cli().is_none() {
        return;
    }
    let (mut ms, mut ws) = five_nodes("63");
    let mids: Vec<String> = ms.iter().map(node_id).collect();
    let w0 = node_id(&ws[0]);
    create(&ms[0], "everywhere", "5", "6631").ok();
    let per = wait_spread(&ms[0], "everywhere", 5, &[]);
    assert_eq!(per.len(), 5, "one task per node: {per:?}");

    // A worker dies: its task runs elsewhere.
    ws[0].kill9();
    wait_nodes(&ms[1], "the worker down", |rows| {
        rows.iter().any(|r| r.id == w0 && r.status == "Down")
    });
    wait_spread(&ms[1], "everywhere", 5, &[&w0]);
    ms[0].wait_replicas(common::Cli::Docker, "everywhere", "5/5");
    // It comes back and stops the task that was replaced.
    ws[0].restart();
    wait_nodes(&ms[0], "the worker back", |rows| {
        rows.iter().any(|r| r.id == w0 && r.status == "Ready")
    });
    wait_spread(&ms[0], "everywhere", 5, &[&w0]);

    // One manager away: demoting another would lose the quorum, and is refused.
    let rows = node_ls(&ms[0]).expect("node ls");
    let leader = rows
        .iter()
        .find(|r| r.manager == "Leader")
        .map(|r| r.id.clone())
        .expect("a leader");
    let li = mids
        .iter()
        .position(|id| *id == leader)
        .expect("leader index");
    let (a, b) = ((li + 1) % 3, (li + 2) % 3);
    ms[a].kill9();
    wait_nodes(&ms[li], "a manager unreachable", |rows| {
        rows.iter()
            .any(|r| r.id == mids[a] && r.manager == "Unreachable")
    });
    let out = ms[li].docker(&["node", "demote", &mids[b]]);
    assert_eq!(
        out.fails().trim(),
        "Error response from daemon: rpc error: code = FailedPrecondition desc = can't remove member from the raft: this would result in a loss of quorum",
        "{out:?}"
    );
    // Two of three away: writes are refused with Docker's message; reads answer.
    ms[b].kill9();
    let out = create(&ms[li], "no-majority", "1", "6632");
    assert!(
        out.fails()
            .contains("Make sure more than half of the managers are online."),
        "{out:?}"
    );
    assert_eq!(node_ls(&ms[li]).expect("node ls").len(), 5);
    // Back after a restart.
    ms[a].restart();
    ms[b].restart();
    create_eventually(&ms[li], "majority-back", "6633");
    ms[li].wait_replicas(common::Cli::Docker, "majority-back", "1/1");
    wait_nodes(&ms[a], "all five ready again", |rows| {
        rows.len() == 5
            && rows.iter().all(|r| r.status == "Ready")
            && rows.iter().filter(|r| r.manager == "Leader").count() == 1
            && rows.iter().filter(|r| r.manager == "Reachable").count() == 2
    });
}

#[test]
fn e2e_cluster_five_nodes_restarted_at_once_keep_their_state() {
    if docker_cli().is_none() {
        return;
    }
    let (mut ms, mut ws) = five_nodes("64");
    create(&ms[0], "survivor", "5", "6641").ok();
    create(&ms[1], "second", "2", "6642").ok();
    wait_spread(&ms[0], "survivor", 5, &[]);
    wait_spread(&ms[0], "second", 2, &[]);
    let ids = |d: &TestDaemon| -> Vec<String> {
        let mut v: Vec<String> = node_ls(d)
            .expect("node ls")
            .into_iter()
            .map(|r| r.id)
            .collect();
        v.sort();
        v
    };
    let nodes_before = ids(&ms[0]);
    let mut services_before = service_names(&ms[0]);
    services_before.sort();
    let tasks_before = |d: &TestDaemon| -> Vec<String> {
        let mut v: Vec<String> = ["survivor", "second"]
            .iter()
            .flat_map(|s| d.running_tasks(s))
            .filter(|t| t["DesiredState"] == "running")
            .filter_map(|t| t["ID"].as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    let running_before = tasks_before(&ms[0]);
    assert_eq!(running_before.len(), 7);

    // Every machine at once: kill -9 (task processes keep running), then start them all.
    for d in ms.iter_mut().chain(ws.iter_mut()) {
        d.kill9();
    }
    for d in ms.iter_mut().chain(ws.iter_mut()) {
        d.restart();
    }
    wait_nodes(&ms[2], "the same five nodes ready", |rows| {
        rows.len() == 5
            && rows.iter().all(|r| r.status == "Ready")
            && rows.iter().filter(|r| r.manager == "Leader").count() == 1
            && rows.iter().filter(|r| r.manager == "Reachable").count() == 2
    });
    assert_eq!(ids(&ms[2]), nodes_before);
    let mut services = service_names(&ms[1]);
    services.sort();
    assert_eq!(services, services_before);
    ms[0].wait_replicas(common::Cli::Docker, "survivor", "5/5");
    ms[0].wait_replicas(common::Cli::Docker, "second", "2/2");
    // The running tasks were adopted, not replaced.
    wait_for("the same tasks running", LONG, || {
        let now = tasks_before(&ms[0]);
        if now == running_before {
            Ok(())
        } else {
            Err(format!("{now:?} vs {running_before:?}"))
        }
    });
    create_eventually(&ms[2], "after-restart", "6643");
}
