//! Changing a running node's role: `docker node promote` / `docker node demote` against real
//! daemons, each on its own loopback address in 127.0.60.x (see e2e_cluster.rs for the setup).

mod common;

use common::cluster::*;
use common::{docker_cli, wait_for, TestDaemon};
use std::collections::HashMap;

/// IDs of the running tasks of `service`, by node.
fn task_ids(d: &TestDaemon, service: &str) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for t in d.running_tasks(service) {
        if t["DesiredState"] == "running" {
            m.entry(t["NodeID"].as_str().unwrap_or("").to_string())
                .or_default()
                .push(t["ID"].as_str().unwrap_or("").to_string());
        }
    }
    m
}

#[test]
fn e2e_cluster_promote_and_demote_a_running_worker() {
    if docker_cli().is_none() {
        return;
    }
    let m = TestDaemon::start_at("127.0.60.2");
    let w1 = TestDaemon::start_at("127.0.60.3");
    let w2 = TestDaemon::start_at("127.0.60.4");
    let manager_id = init(&m);
    m.docker(&["swarm", "update", "--dispatcher-heartbeat", "1s"])
        .ok();
    let t = token(&m, "worker");
    for w in [&w1, &w2] {
        let out = join(w, &t, &m);
        assert_eq!(out.ok().trim(), "This node joined a swarm as a worker.");
    }
    let w1_id = node_id(&w1);
    wait_nodes(&m, "three nodes ready", |rows| {
        rows.len() == 3 && rows.iter().all(|r| r.status == "Ready")
    });
    m.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "through-roles",
        "--replicas",
        "3",
        "busybox",
        "sleep",
        "6601",
    ])
    .ok();
    let before = wait_for("one task on each node", LONG, || {
        let per = task_ids(&m, "through-roles");
        if per.len() == 3 && per.values().all(|v| v.len() == 1) {
            Ok(per)
        } else {
            Err(format!("{per:?}"))
        }
    });

    // Promote: the CLI prints Docker's line; the node joins Raft and serves the API.
    let out = m.docker(&["node", "promote", &w1_id]);
    assert_eq!(
        out.ok(),
        format!("Node {w1_id} promoted to a manager in the swarm.\n"),
        "{out:?}"
    );
    wait_nodes(&m, "the promoted node reachable", |rows| {
        rows.iter()
            .any(|r| r.id == w1_id && r.manager == "Reachable" && r.status == "Ready")
            && rows
                .iter()
                .any(|r| r.id == manager_id && r.manager == "Leader")
    });
    wait_for("the promoted node to answer control requests", LONG, || {
        let info = w1.get_json("/info");
        if info["Swarm"]["ControlAvailable"] == true {
            Ok(())
        } else {
            Err(info.to_string())
        }
    });
    // Its writes are forwarded to the leader; its reads show the whole swarm.
    wait_for("a write on the promoted node", LONG, || {
        let out = w1.docker(&[
            "service",
            "create",
            "-d",
            "--name",
            "from-promoted",
            "busybox",
            "sleep",
            "6602",
        ]);
        let ls = m.docker(&["service", "ls", "--format", "{{.Name}}"]);
        if ls.stdout.lines().any(|l| l == "from-promoted") {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });
    let rows = node_ls(&w1).expect("node ls on the promoted node");
    assert_eq!(rows.len(), 3, "{rows:?}");
    m.wait_replicas(common::Cli::Docker, "from-promoted", "1/1");
    // Its task kept running through the change of roles.
    let now = task_ids(&m, "through-roles");
    assert_eq!(now.get(&w1_id), before.get(&w1_id), "{now:?}");

    // Demote it back: out of Raft, no manager status, a worker again; its task still runs.
    let out = wait_for("the demotion to be accepted", LONG, || {
        let out = m.docker(&["node", "demote", &w1_id]);
        if out.code == 0 {
            Ok(out)
        } else {
            Err(format!("{out:?}"))
        }
    });
    assert_eq!(
        out.stdout,
        format!("Manager {w1_id} demoted in the swarm.\n"),
        "{out:?}"
    );
    wait_nodes(&m, "the demoted node a worker", |rows| {
        rows.iter()
            .any(|r| r.id == w1_id && r.manager.is_empty() && r.status == "Ready")
            && rows.iter().filter(|r| !r.manager.is_empty()).count() == 1
    });
    wait_for("the demoted node to refuse control requests", LONG, || {
        let out = w1.docker(&["node", "ls"]);
        if out.code != 0 && out.stderr.contains("This node is not a swarm manager") {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });
    let now = task_ids(&m, "through-roles");
    assert_eq!(now.get(&w1_id), before.get(&w1_id), "{now:?}");
    // The single manager left can still write, and cannot be demoted.
    m.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "after-demotion",
        "busybox",
        "sleep",
        "6603",
    ])
    .ok();
    let out = m.docker(&["node", "demote", &manager_id]);
    assert_eq!(
        out.fails().trim(),
        "Error response from daemon: rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm",
        "{out:?}"
    );
}

#[test]
fn e2e_cluster_the_leader_demoted_hands_over_and_keeps_its_tasks() {
    if docker_cli().is_none() {
        return;
    }
    let m = TestDaemon::start_at("127.0.60.12");
    let w = TestDaemon::start_at("127.0.60.13");
    let m_id = init(&m);
    m.docker(&["swarm", "update", "--dispatcher-heartbeat", "1s"])
        .ok();
    join(&w, &token(&m, "worker"), &m).ok();
    let w_id = node_id(&w);
    m.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "leader-demoted",
        "--replicas",
        "2",
        "busybox",
        "sleep",
        "6611",
    ])
    .ok();
    let before = wait_for("one task on each node", LONG, || {
        let per = task_ids(&m, "leader-demoted");
        if per.len() == 2 && per.values().all(|v| v.len() == 1) {
            Ok(per)
        } else {
            Err(format!("{per:?}"))
        }
    });
    m.docker(&["node", "promote", &w_id]).ok();
    wait_nodes(&m, "the promoted node reachable", |rows| {
        rows.iter()
            .any(|r| r.id == w_id && r.manager == "Reachable" && r.status == "Ready")
    });

    // The leader demotes itself: it leaves Raft, the other manager leads, it runs on as a
    // worker with its task.
    let out = m.docker(&["node", "demote", &m_id]);
    assert_eq!(
        out.ok(),
        format!("Manager {m_id} demoted in the swarm.\n"),
        "{out:?}"
    );
    wait_nodes(&w, "the other manager leading alone", |rows| {
        rows.iter().any(|r| r.id == w_id && r.manager == "Leader")
            && rows
                .iter()
                .any(|r| r.id == m_id && r.manager.is_empty() && r.status == "Ready")
    });
    wait_for("the demoted leader to be a worker", LONG, || {
        let info = m.get_json("/info");
        if info["Swarm"]["ControlAvailable"] == false && info["Swarm"]["LocalNodeState"] == "active"
        {
            Ok(())
        } else {
            Err(info.to_string())
        }
    });
    w.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "after-handover",
        "busybox",
        "sleep",
        "6612",
    ])
    .ok();
    w.wait_replicas(common::Cli::Docker, "after-handover", "1/1");
    let now = task_ids(&w, "leader-demoted");
    assert_eq!(now.get(&m_id), before.get(&m_id), "{now:?}");
    let out = w.docker(&["node", "demote", &w_id]);
    assert_eq!(
        out.fails().trim(),
        "Error response from daemon: rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm",
        "{out:?}"
    );
}

#[test]
fn e2e_cluster_a_manager_demoted_while_down_comes_back_as_a_worker() {
    if docker_cli().is_none() {
        return;
    }
    let mut ds = managers(&["127.0.60.22", "127.0.60.23", "127.0.60.24"]);
    ds[0]
        .docker(&["swarm", "update", "--dispatcher-heartbeat", "1s"])
        .ok();
    let ids: Vec<String> = ds.iter().map(node_id).collect();
    let leader = node_ls(&ds[0])
        .expect("node ls")
        .into_iter()
        .find(|r| r.manager == "Leader")
        .map(|r| r.id)
        .expect("a leader");
    let li = ids
        .iter()
        .position(|id| *id == leader)
        .expect("leader index");
    let away = (li + 1) % 3;
    ds[away].kill9();
    wait_nodes(&ds[li], "a manager unreachable", |rows| {
        rows.iter()
            .any(|r| r.id == ids[away] && r.manager == "Unreachable")
    });
    // The two left are a majority of the two that remain: the demotion is allowed.
    let out = ds[li].docker(&["node", "demote", &ids[away]]);
    assert_eq!(
        out.ok(),
        format!("Manager {} demoted in the swarm.\n", ids[away]),
        "{out:?}"
    );
    wait_nodes(&ds[li], "two managers and a worker", |rows| {
        rows.iter().filter(|r| !r.manager.is_empty()).count() == 2
            && rows
                .iter()
                .any(|r| r.id == ids[away] && r.manager.is_empty())
    });
    // Back: it learns it is a worker now and stays one; the managers keep writing.
    ds[away].restart();
    wait_for("the demoted manager to run as a worker", LONG, || {
        let info = ds[away].get_json("/info");
        if info["Swarm"]["ControlAvailable"] == false && info["Swarm"]["LocalNodeState"] == "active"
        {
            Ok(())
        } else {
            Err(info.to_string())
        }
    });
    wait_nodes(&ds[li], "all three ready, two managers", |rows| {
        rows.iter().all(|r| r.status == "Ready")
            && rows.iter().filter(|r| r.manager == "Leader").count() == 1
            && rows.iter().filter(|r| r.manager == "Reachable").count() == 1
    });
    let other = (li + 2) % 3;
    ds[other]
        .docker(&[
            "service",
            "create",
            "-d",
            "--name",
            "after-stale-manager",
            "busybox",
            "sleep",
            "6621",
        ])
        .ok();
    ds[li].wait_replicas(common::Cli::Docker, "after-stale-manager", "1/1");
}
