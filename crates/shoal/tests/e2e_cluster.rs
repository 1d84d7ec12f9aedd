//! Several `shoal daemon`s forming one swarm, driven by the real `docker` CLI as in Docker's
//! guide: `swarm init --advertise-addr`, `swarm join --token T ip:2377`, `node ls`, services
//! spread over the machines, logs from every node, manager failover, quorum loss, a worker
//! going down.
//!
//! Each daemon is a "machine" on its own loopback address (the whole 127/8 is local on Linux),
//! with its own data root and API socket; its cluster port is `<ip>:2377`. Each test uses its
//! own /24 (127.0.1.x, 127.0.2.x, ...) so tests can run in parallel. Every wait is bounded;
//! daemons and their task processes are stopped when a test ends, also on panic
//! (`TestDaemon`'s Drop).

mod common;

use common::cluster::*;
use common::{docker_cli, wait_for, TestDaemon};
use std::collections::HashMap;

#[test]
fn e2e_cluster_worker_joins_runs_tasks_and_serves_logs() {
    if docker_cli().is_none() {
        return;
    }
    let m = TestDaemon::start_at("127.0.1.2");
    let w = TestDaemon::start_at("127.0.1.3");
    let stranger = TestDaemon::start_at("127.0.1.4");
    let manager_id = init(&m);
    let worker_token = token(&m, "worker");
    assert!(worker_token.starts_with("SWMTKN-1-"), "{worker_token}");

    let out = join(&w, &worker_token, &m);
    assert_eq!(
        out.ok().trim(),
        "This node joined a swarm as a worker.",
        "{out:?}"
    );
    let info = w.get_json("/info");
    assert_eq!(info["Swarm"]["LocalNodeState"], "active", "{info}");
    assert_eq!(info["Swarm"]["ControlAvailable"], false, "{info}");
    let worker_id = node_id(&w);
    // A worker cannot manage.
    let out = w.docker(&["node", "ls"]);
    assert!(
        out.fails().contains("This node is not a swarm manager"),
        "{out:?}"
    );

    let rows = wait_nodes(&m, "two nodes ready", |rows| {
        rows.len() == 2 && rows.iter().all(|r| r.status == "Ready")
    });
    let by_id: HashMap<&str, &NodeRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(by_id[manager_id.as_str()].manager, "Leader");
    assert_eq!(by_id[worker_id.as_str()].manager, "");

    // Four replicas spread two and two.
    let out = m.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "spread",
        "--replicas",
        "4",
        "busybox",
        "sh",
        "-c",
        "echo line-from-a-task; exec sleep 6101",
    ]);
    out.ok();
    wait_for("2 tasks running on each node", LONG, || {
        let per = running_per_node(&m, "spread");
        if per.get(&manager_id) == Some(&2) && per.get(&worker_id) == Some(&2) {
            Ok(())
        } else {
            Err(format!("{per:?}"))
        }
    });

    // `service logs` merges the output of the tasks on both nodes.
    let node_of: HashMap<String, String> = m
        .tasks("spread")
        .iter()
        .filter_map(|t| {
            Some((
                t["ID"].as_str()?.to_string(),
                t["NodeID"].as_str()?.to_string(),
            ))
        })
        .collect();
    wait_for("log lines from both nodes", LONG, || {
        let out = m.docker(&["service", "logs", "--no-trunc", "spread"]);
        if out.code != 0 {
            return Err(out.stderr);
        }
        let mut nodes = std::collections::HashSet::new();
        for line in out.stdout.lines().chain(out.stderr.lines()) {
            let Some((prefix, text)) = line.split_once('|') else {
                continue;
            };
            if text.trim() != "line-from-a-task" {
                continue;
            }
            // spread.<slot>.<task id>@<hostname>
            let task = prefix
                .trim()
                .split('@')
                .next()
                .and_then(|n| n.rsplit('.').next())
                .unwrap_or("");
            if let Some(node) = node_of.get(task) {
                nodes.insert(node.clone());
            }
        }
        if nodes.contains(&manager_id) && nodes.contains(&worker_id) {
            Ok(())
        } else {
            Err(format!(
                "lines from {nodes:?}:\n{}{}",
                out.stdout, out.stderr
            ))
        }
    });

    // A wrong token (right CA, wrong secret) is refused with Docker's message; nothing joins.
    let (prefix, _) = worker_token.rsplit_once('-').unwrap();
    let wrong = format!("{prefix}-{}", "0".repeat(25));
    let out = join(&stranger, &wrong, &m);
    assert!(
        out.fails()
            .contains("A valid join token is necessary to join this cluster"),
        "{out:?}"
    );
    // A token pinning another CA is refused before anything is sent.
    let other_ca = format!(
        "SWMTKN-1-{}-{}",
        "1".repeat(50),
        worker_token.rsplit('-').next().unwrap()
    );
    let out = join(&stranger, &other_ca, &m);
    assert!(
        out.fails().contains("remote CA does not match fingerprint"),
        "{out:?}"
    );
    // A rotated token replaces the old one (same CA digest, new secret).
    let rotated = m
        .docker(&["swarm", "join-token", "--rotate", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    assert_ne!(rotated, worker_token);
    assert_eq!(rotated.rsplit_once('-').unwrap().0, prefix);
    let out = join(&stranger, &worker_token, &m);
    assert!(
        out.fails()
            .contains("A valid join token is necessary to join this cluster"),
        "{out:?}"
    );
    assert_eq!(
        stranger.get_json("/info")["Swarm"]["LocalNodeState"],
        "inactive"
    );
    assert_eq!(node_ls(&m).unwrap().len(), 2);

    // The worker leaves: it stops its tasks and forgets the swarm; the manager keeps it listed
    // until it is found down, then `node rm` deletes it.
    w.docker(&["swarm", "leave"]).ok();
    assert_eq!(w.get_json("/info")["Swarm"]["LocalNodeState"], "inactive");
    m.docker(&["swarm", "update", "--dispatcher-heartbeat", "1s"])
        .ok();
    wait_nodes(&m, "the worker down", |rows| {
        rows.iter().any(|r| r.id == worker_id && r.status == "Down")
    });
    m.docker(&["node", "rm", &worker_id]).ok();
    wait_for("the replicas back to 4 on the manager", LONG, || {
        let per = running_per_node(&m, "spread");
        if per.get(&manager_id) == Some(&4) && per.len() == 1 {
            Ok(())
        } else {
            Err(format!("{per:?}"))
        }
    });
    assert_eq!(node_ls(&m).unwrap().len(), 1);
}

#[test]
fn e2e_cluster_three_managers_fail_over_and_rejoin() {
    if docker_cli().is_none() {
        return;
    }
    let mut ds = managers(&["127.0.2.2", "127.0.2.3", "127.0.2.4"]);
    let ids: Vec<String> = ds.iter().map(node_id).collect();
    let rows = node_ls(&ds[1]).unwrap();
    let leader_id = rows
        .iter()
        .find(|r| r.manager == "Leader")
        .map(|r| r.id.clone())
        .expect("a leader");
    let leader = ids.iter().position(|id| *id == leader_id).unwrap();
    let survivor = (leader + 1) % 3;
    // Every manager answers control requests.
    for d in &ds {
        assert_eq!(d.get_json("/info")["Swarm"]["ControlAvailable"], true);
    }

    ds[leader].kill9();
    let rows = wait_nodes(&ds[survivor], "another manager to lead", |rows| {
        let leaders: Vec<&NodeRow> = rows.iter().filter(|r| r.manager == "Leader").collect();
        leaders.len() == 1
            && leaders[0].id != leader_id
            && rows
                .iter()
                .any(|r| r.id == leader_id && r.manager == "Unreachable")
    });
    assert_eq!(rows.len(), 3);

    // Writes work on the survivors, whichever of them leads.
    let out = ds[survivor].docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "after-failover",
        "busybox",
        "sleep",
        "6201",
    ]);
    out.ok();
    ds[survivor].wait_replicas(common::Cli::Docker, "after-failover", "1/1");

    // The old leader comes back as a reachable manager.
    ds[leader].restart();
    wait_nodes(&ds[survivor], "the old leader reachable again", |rows| {
        rows.iter().all(|r| r.status == "Ready")
            && rows.iter().filter(|r| r.manager == "Leader").count() == 1
            && rows
                .iter()
                .any(|r| r.id == leader_id && r.manager == "Reachable")
    });
    // And sees the write made while it was away.
    wait_for("the restarted manager to catch up", LONG, || {
        let out = ds[leader].docker(&["service", "ls", "--format", "{{.Name}}"]);
        if out.stdout.lines().any(|l| l == "after-failover") {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });

    // A manager leaves only with --force, and then leaves the Raft group too. Three of three
    // reachable: leaving keeps the quorum, and Docker's message says only that.
    let out = ds[leader].docker(&["swarm", "leave"]);
    let err = out.fails();
    assert!(
        err.contains("participating as a manager. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message."),
        "{out:?}"
    );
    ds[leader].docker(&["swarm", "leave", "--force"]).ok();
    assert_eq!(
        ds[leader].get_json("/info")["Swarm"]["LocalNodeState"],
        "inactive"
    );
    wait_nodes(
        &ds[survivor],
        "two managers left, the third a removable worker",
        |rows| {
            rows.len() == 3
                && rows.iter().filter(|r| r.manager == "Leader").count() == 1
                && rows.iter().filter(|r| r.manager == "Reachable").count() == 1
                && rows
                    .iter()
                    .any(|r| r.id == leader_id && r.manager.is_empty() && r.status == "Down")
        },
    );
    ds[survivor].docker(&["node", "rm", &leader_id]).ok();
    // The two that remain still make a majority.
    ds[survivor]
        .docker(&[
            "service",
            "create",
            "-d",
            "--name",
            "after-leave",
            "busybox",
            "sleep",
            "6202",
        ])
        .ok();
}

#[test]
fn e2e_cluster_without_quorum_writes_fail_and_reads_work() {
    if docker_cli().is_none() {
        return;
    }
    let mut ds = managers(&["127.0.3.2", "127.0.3.3", "127.0.3.4"]);
    ds[1].kill9();
    ds[2].kill9();
    let out = ds[0].docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "no-quorum",
        "busybox",
        "sleep",
        "6301",
    ]);
    assert!(
        out.fails()
            .contains("Make sure more than half of the managers are online."),
        "{out:?}"
    );
    // Reads still answer.
    assert_eq!(node_ls(&ds[0]).unwrap().len(), 3);
    ds[0].docker(&["service", "ls"]).ok();

    ds[1].restart();
    ds[2].restart();
    wait_for("writes to work again", LONG, || {
        let out = ds[0].docker(&[
            "service",
            "create",
            "-d",
            "--name",
            "quorum-back",
            "busybox",
            "sleep",
            "6302",
        ]);
        if out.code == 0 {
            return Ok(());
        }
        // An earlier attempt may have been committed after all.
        let ls = ds[0].docker(&["service", "ls", "--format", "{{.Name}}"]);
        if ls.stdout.lines().any(|l| l == "quorum-back") {
            return Ok(());
        }
        Err(format!("{out:?}"))
    });
    ds[0].wait_replicas(common::Cli::Docker, "quorum-back", "1/1");
}

#[test]
fn e2e_cluster_worker_down_tasks_move() {
    if docker_cli().is_none() {
        return;
    }
    let m = TestDaemon::start_at("127.0.4.2");
    let mut w = TestDaemon::start_at("127.0.4.3");
    let manager_id = init(&m);
    m.docker(&["swarm", "update", "--dispatcher-heartbeat", "1s"])
        .ok();
    let out = join(&w, &token(&m, "worker"), &m);
    assert_eq!(out.ok().trim(), "This node joined a swarm as a worker.");
    let worker_id = node_id(&w);
    wait_nodes(&m, "two nodes ready", |rows| {
        rows.len() == 2 && rows.iter().all(|r| r.status == "Ready")
    });
    m.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "movers",
        "--replicas",
        "2",
        "busybox",
        "sleep",
        "6401",
    ])
    .ok();
    wait_for("one task on each node", LONG, || {
        let per = running_per_node(&m, "movers");
        if per.get(&manager_id) == Some(&1) && per.get(&worker_id) == Some(&1) {
            Ok(())
        } else {
            Err(format!("{per:?}"))
        }
    });

    w.kill9();
    wait_nodes(&m, "the worker down", |rows| {
        rows.iter().any(|r| r.id == worker_id && r.status == "Down")
    });
    wait_for("both tasks on the manager", LONG, || {
        let per = running_per_node(&m, "movers");
        if per.get(&manager_id) == Some(&2) && !per.contains_key(&worker_id) {
            Ok(())
        } else {
            Err(format!("{per:?}"))
        }
    });

    // Once removed, the node's certificate is refused: restarted, it cannot come back.
    m.docker(&["node", "rm", &worker_id]).ok();
    w.restart();
    wait_for("the removed node to be refused", LONG, || {
        let log = w.log();
        if log.contains("needs a node certificate") {
            Ok(())
        } else {
            Err(log.lines().rev().take(10).collect::<Vec<_>>().join("\n"))
        }
    });
    assert_eq!(node_ls(&m).unwrap().len(), 1);
}

#[test]
fn e2e_cluster_autolocked_manager_needs_its_unlock_key() {
    if docker_cli().is_none() {
        return;
    }
    let mut m = TestDaemon::start_at("127.0.5.2");
    let out = m.docker(&["swarm", "init", "--autolock", "--advertise-addr", m.ip()]);
    assert!(out.ok().contains("SWMKEY-1-"), "{out:?}");
    let key = m
        .docker(&["swarm", "unlock-key", "-q"])
        .ok()
        .trim()
        .to_string();
    assert!(out.stdout.contains(&key), "{out:?}");
    m.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "locked-away",
        "busybox",
        "sleep",
        "6501",
    ])
    .ok();

    m.kill9();
    m.restart();
    let info = m.get_json("/info");
    assert_eq!(info["Swarm"]["LocalNodeState"], "locked", "{info}");
    let out = m.docker(&["service", "ls"]);
    assert!(out.fails().contains("swarm unlock"), "{out:?}");
    let body =
        serde_json::json!({ "UnlockKey": "SWMKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" });
    let (code, text) = m.api("POST", "/swarm/unlock", Some(&body.to_string()));
    assert!(code >= 400, "{code} {text}");
    let body = serde_json::json!({ "UnlockKey": key });
    let (code, text) = m.api("POST", "/swarm/unlock", Some(&body.to_string()));
    assert_eq!(code, 200, "{text}");
    assert_eq!(m.get_json("/info")["Swarm"]["LocalNodeState"], "active");
    m.wait_replicas(common::Cli::Docker, "locked-away", "1/1");
}

#[test]
fn e2e_cluster_autolock_turned_on_by_update_and_the_unlock_key_rotated() {
    if docker_cli().is_none() {
        return;
    }
    let mut m = TestDaemon::start_at("127.0.5.6");
    m.docker(&["swarm", "init", "--advertise-addr", m.ip()])
        .ok();
    let out = m.docker(&["swarm", "unlock-key", "-q"]);
    assert!(out.fails().contains("no unlock key"), "{out:?}");

    let unlock = |m: &TestDaemon, key: &str| {
        let body = serde_json::json!({ "UnlockKey": key });
        m.api("POST", "/swarm/unlock", Some(&body.to_string()))
    };
    let key_in = |text: &str| {
        text.split_whitespace()
            .find(|w| w.starts_with("SWMKEY-1-"))
            .map(str::to_string)
    };

    // Turned on: the CLI prints the key; after a restart the manager is locked until unlocked.
    let out = m.docker(&["swarm", "update", "--autolock=true"]);
    let key = key_in(out.ok()).unwrap_or_else(|| panic!("no unlock key printed: {out:?}"));
    assert_eq!(m.docker(&["swarm", "unlock-key", "-q"]).ok().trim(), key);
    m.stop();
    m.restart();
    assert_eq!(m.get_json("/info")["Swarm"]["LocalNodeState"], "locked");
    let (code, text) = unlock(&m, &key);
    assert_eq!(code, 200, "{text}");
    assert_eq!(m.get_json("/info")["Swarm"]["LocalNodeState"], "active");

    // Rotated: the old key no longer opens the restarted manager, the new one does.
    let out = m.docker(&["swarm", "unlock-key", "--rotate"]);
    let new_key = key_in(out.ok()).unwrap_or_else(|| panic!("no new key printed: {out:?}"));
    assert_ne!(new_key, key);
    m.stop();
    m.restart();
    assert_eq!(m.get_json("/info")["Swarm"]["LocalNodeState"], "locked");
    let (code, text) = unlock(&m, &key);
    assert!(code >= 400, "the old key must be refused: {code} {text}");
    let (code, text) = unlock(&m, &new_key);
    assert_eq!(code, 200, "{text}");

    // Turned off: a restart no longer locks.
    m.docker(&["swarm", "update", "--autolock=false"]).ok();
    m.stop();
    m.restart();
    assert_eq!(m.get_json("/info")["Swarm"]["LocalNodeState"], "active");
}

#[test]
fn e2e_cluster_one_unlock_key_for_every_manager() {
    if docker_cli().is_none() {
        return;
    }
    let first = TestDaemon::start_at("127.0.61.2");
    let out = first.docker(&[
        "swarm",
        "init",
        "--autolock",
        "--advertise-addr",
        first.ip(),
    ]);
    assert!(out.ok().contains("SWMKEY-1-"), "{out:?}");
    let t = token(&first, "manager");
    let mut ds = vec![first];
    for ip in ["127.0.61.3", "127.0.61.4"] {
        let d = TestDaemon::start_at(ip);
        join(&d, &t, &ds[0]).ok();
        ds.push(d);
    }
    wait_nodes(&ds[0], "three managers", |rows| {
        rows.len() == 3
            && rows.iter().all(|r| r.status == "Ready")
            && rows.iter().filter(|r| r.manager == "Reachable").count() == 2
    });
    let keys = |ds: &[TestDaemon]| -> Vec<String> {
        ds.iter()
            .map(|d| {
                d.docker(&["swarm", "unlock-key", "-q"])
                    .ok()
                    .trim()
                    .to_string()
            })
            .collect()
    };
    let key = keys(&ds)[0].clone();
    assert!(key.starts_with("SWMKEY-1-"), "{key}");
    assert_eq!(keys(&ds), vec![key.clone(); 3]);
    ds[0]
        .docker(&[
            "service", "create", "-d", "--name", "one-key", "busybox", "sleep", "6611",
        ])
        .ok();

    // A joined manager restarted is locked, and the swarm's key opens it.
    let unlock = |d: &TestDaemon, key: &str| {
        let body = serde_json::json!({ "UnlockKey": key });
        d.api("POST", "/swarm/unlock", Some(&body.to_string()))
    };
    // Its key store follows the swarm's key within a second of joining; wait until it does.
    let wait_locked_after_restart = |d: &mut TestDaemon| {
        wait_for("the manager to come back locked", LONG, || {
            d.stop();
            d.restart();
            let state = d.get_json("/info")["Swarm"]["LocalNodeState"].clone();
            if state == "locked" {
                Ok(())
            } else {
                Err(state.to_string())
            }
        })
    };
    wait_locked_after_restart(&mut ds[2]);
    let (code, text) = unlock(&ds[2], &key);
    assert_eq!(code, 200, "{text}");
    ds[2].wait_replicas(common::Cli::Docker, "one-key", "1/1");

    // Rotated on one manager: every manager shows the new key, and it opens any of them.
    let out = ds[1].docker(&["swarm", "unlock-key", "--rotate", "-q"]);
    let new_key = out.ok().trim().to_string();
    assert!(
        new_key.starts_with("SWMKEY-1-") && new_key != key,
        "{out:?}"
    );
    wait_for("every manager to show the new key", LONG, || {
        let k = keys(&ds);
        if k.iter().all(|k| *k == new_key) {
            Ok(())
        } else {
            Err(format!("{k:?}"))
        }
    });
    // A manager rewraps within a second of seeing the new key: restart one until the new key
    // is what opens it; then the old one is refused.
    wait_for("the new key to open a restarted manager", LONG, || {
        ds[0].stop();
        ds[0].restart();
        let state = ds[0].get_json("/info")["Swarm"]["LocalNodeState"].clone();
        if state != "locked" {
            return Err(format!("not locked: {state}"));
        }
        let (code, text) = unlock(&ds[0], &new_key);
        if code == 200 {
            return Ok(());
        }
        let _ = unlock(&ds[0], &key);
        // Give the unlocked manager its second to see the new key and rewrap before the next
        // restart, or every attempt restarts it too early.
        std::thread::sleep(std::time::Duration::from_secs(2));
        Err(format!("{code} {text}"))
    });
    ds[0].stop();
    ds[0].restart();
    assert_eq!(ds[0].get_json("/info")["Swarm"]["LocalNodeState"], "locked");
    let (code, text) = unlock(&ds[0], &key);
    assert!(code >= 400, "the old key must be refused: {code} {text}");
    let (code, text) = unlock(&ds[0], &new_key);
    assert_eq!(code, 200, "{text}");

    // Turned off for the whole swarm: restarts no longer lock.
    ds[1].docker(&["swarm", "update", "--autolock=false"]).ok();
    wait_for("no manager to have an unlock key", LONG, || {
        let k: Vec<String> = ds
            .iter()
            .map(|d| d.docker(&["swarm", "unlock-key", "-q"]).stderr)
            .collect();
        if k.iter().all(|e| e.contains("no unlock key")) {
            Ok(())
        } else {
            Err(format!("{k:?}"))
        }
    });
    wait_for("a restarted manager to be unlocked", LONG, || {
        ds[2].stop();
        ds[2].restart();
        let state = ds[2].get_json("/info")["Swarm"]["LocalNodeState"].clone();
        if state == "active" {
            return Ok(());
        }
        let _ = unlock(&ds[2], &new_key);
        // As above: let it follow the swarm (no key any more) before restarting it again.
        std::thread::sleep(std::time::Duration::from_secs(2));
        Err(state.to_string())
    });
}
