//! The daemon goes away and comes back on the same data root: `kill -9` (task processes keep
//! running and are adopted) and a clean SIGTERM stop (task processes are stopped, then
//! replaced). Either way the cluster, node, services and tasks are back, and there is exactly
//! one process per running task.

mod common;

use common::{
    any_cli, flow, kill9, pids_running, table, wait_for, wait_pids, Cli, TestDaemon, WAIT,
};
use serde_json::Value;
use std::collections::HashSet;

/// What must survive a restart.
#[derive(Debug, PartialEq)]
struct Identity {
    cluster: String,
    node: String,
    service: String,
}

fn identity(d: &TestDaemon, service: &str) -> Identity {
    let swarm = d.get_json("/swarm");
    let nodes = d.get_json("/nodes");
    let svc = d.get_json(&format!("/services/{service}"));
    Identity {
        cluster: swarm["ID"].as_str().unwrap_or_default().to_string(),
        node: nodes[0]["ID"].as_str().unwrap_or_default().to_string(),
        service: svc["ID"].as_str().unwrap_or_default().to_string(),
    }
}

/// The service's tasks when settled: `n` of them desired and observed running, one per slot,
/// and exactly `n` processes running `argv`. Returns the running task IDs, or what was seen.
fn settled(d: &TestDaemon, service: &str, n: usize, argv: &[&str]) -> Result<Vec<String>, String> {
    let tasks = d.tasks(service);
    let live: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["DesiredState"] == "running")
        .collect();
    let slots: HashSet<u64> = live.iter().filter_map(|t| t["Slot"].as_u64()).collect();
    let pids = pids_running(argv);
    if live.len() != n
        || slots.len() != n
        || !live.iter().all(|t| t["Status"]["State"] == "running")
        || pids.len() != n
    {
        return Err(format!("processes {pids:?}, tasks {tasks:#?}"));
    }
    let mut ids: Vec<String> = live
        .iter()
        .filter_map(|t| t["ID"].as_str().map(String::from))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Waits until [`settled`] holds and `also` accepts the running task IDs; returns them.
#[track_caller]
fn wait_settled(
    d: &TestDaemon,
    service: &str,
    n: usize,
    argv: &[&str],
    also: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    wait_for(&format!("{n} settled tasks of {service}"), WAIT, || {
        let ids = settled(d, service, n, argv)?;
        if also(&ids) {
            Ok(ids)
        } else {
            Err(format!("running tasks {ids:?}"))
        }
    })
}

#[track_caller]
fn service_ls_row(d: &TestDaemon, cli: Cli, name: &str) -> Vec<String> {
    let out = d.cli_run(cli, &["service", "ls", "--filter", &format!("name={name}")]);
    let rows = table(out.ok());
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    rows[0].clone()
}

#[test]
fn e2e_kill9_and_restart_adopts_running_tasks() {
    let cli = any_cli();
    let (mut d, node_id) = TestDaemon::with_swarm(cli);
    let argv = ["sleep", "6201"];
    let svc_id = flow::create(
        &d,
        cli,
        &[
            "--name",
            "web",
            "--replicas",
            "3",
            "busybox",
            "sleep",
            "6201",
        ],
    );
    d.wait_replicas(cli, "web", "3/3");
    let tasks = wait_settled(&d, "web", 3, &argv, |_| true);
    let pids = pids_running(&argv);
    let before = identity(&d, "web");
    assert_eq!(before.node, node_id);
    assert_eq!(before.service, svc_id);

    d.kill9();
    // The task processes do not depend on the daemon.
    assert_eq!(pids_running(&argv), pids);

    d.restart();
    assert_eq!(identity(&d, "web"), before);
    // The same tasks, adopted: same IDs, same processes, nothing started twice.
    wait_settled(&d, "web", 3, &argv, |ids| ids == tasks);
    assert_eq!(pids_running(&argv), pids);
    d.wait_replicas(cli, "web", "3/3");
    let row = service_ls_row(&d, cli, "web");
    assert_eq!(row[0], svc_id[..12]);
    let out = d.cli_run(cli, &["node", "ls"]);
    let nodes = table(out.ok());
    assert_eq!(nodes.len(), 1, "{}", out.stdout);
    assert_eq!(nodes[0][0], format!("{node_id} *"));
    assert_eq!(
        &nodes[0][2..5],
        ["Ready", "Active", "Leader"],
        "{}",
        out.stdout
    );
    let info = d.cli_run(cli, &["info"]);
    assert!(
        info.ok().lines().any(|l| l == " Swarm: active"),
        "{}",
        info.stdout
    );

    // The restarted daemon manages them: a later change is carried out around them...
    let out = d.cli_run(cli, &["service", "scale", "-d", "web=4"]);
    assert_eq!(out.ok().trim(), "web scaled to 4");
    let grown = wait_settled(&d, "web", 4, &argv, |_| true);
    assert!(
        tasks.iter().all(|t| grown.contains(t)),
        "{tasks:?} -> {grown:?}"
    );
    let now = pids_running(&argv);
    assert!(pids.iter().all(|p| now.contains(p)), "{pids:?} -> {now:?}");

    // ...and an adopted task's exit is noticed and the task replaced.
    kill9(pids[0]);
    let after = wait_settled(&d, "web", 4, &argv, |ids| ids != grown);
    assert!(!pids_running(&argv).contains(&pids[0]));
    let failed: Vec<Value> = d
        .tasks("web")
        .into_iter()
        .filter(|t| t["Status"]["State"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["Status"]["Err"], "task: non-zero exit (137)");
    let failed_id = failed[0]["ID"].as_str().unwrap_or_default().to_string();
    assert!(tasks.contains(&failed_id) && !after.contains(&failed_id));
    d.wait_replicas(cli, "web", "4/4");
    d.wait_no_zombies();
}

#[test]
fn e2e_sigterm_stop_and_restart() {
    let cli = any_cli();
    let (mut d, node_id) = TestDaemon::with_swarm(cli);
    let argv = ["sleep", "6211"];
    let svc_id = flow::create(
        &d,
        cli,
        &[
            "--name",
            "web",
            "--replicas",
            "3",
            "busybox",
            "sleep",
            "6211",
        ],
    );
    d.wait_replicas(cli, "web", "3/3");
    let tasks = wait_settled(&d, "web", 3, &argv, |_| true);
    let before = identity(&d, "web");
    assert_eq!(before.node, node_id);
    assert_eq!(before.service, svc_id);

    assert!(d.stop(), "the daemon did not exit on SIGTERM:\n{}", d.log());
    // Without --live-restore a stopping daemon stops its tasks, shims included.
    wait_pids(&argv, 0);
    let data_root = d.data_root().display().to_string();
    wait_for("no shim left", WAIT, || {
        let shims: Vec<i32> = common::procs()
            .into_iter()
            .filter(|p| p.state != 'Z' && p.argv.iter().any(|a| a.starts_with(&data_root)))
            .map(|p| p.pid)
            .collect();
        if shims.is_empty() {
            Ok(())
        } else {
            Err(format!("{shims:?}"))
        }
    });

    d.restart();
    assert_eq!(identity(&d, "web"), before);
    // The stopped tasks are seen as ended and replaced (after the restart delay).
    let now = wait_settled(&d, "web", 3, &argv, |ids| {
        ids.iter().all(|t| !tasks.contains(t))
    });
    d.wait_replicas(cli, "web", "3/3");
    // The old ones are history of their slots.
    let all = d.tasks("web");
    for old in &tasks {
        let t = all
            .iter()
            .find(|t| t["ID"] == old.as_str())
            .unwrap_or_else(|| panic!("task {old} is gone: {all:#?}"));
        assert_eq!(t["DesiredState"], "shutdown", "{t:#}");
    }
    let out = d.cli_run(cli, &["service", "ps", "web"]);
    let rows = table(out.ok());
    assert_eq!(
        rows.iter().filter(|r| r[4] == "Running").count(),
        3,
        "{}",
        out.stdout
    );
    assert_eq!(
        rows.iter().filter(|r| r[1].starts_with("\\_ web.")).count(),
        3,
        "{}",
        out.stdout
    );

    // A second clean stop and start: the same again, nothing else.
    assert!(d.stop(), "the daemon did not exit on SIGTERM:\n{}", d.log());
    wait_pids(&argv, 0);
    d.restart();
    assert_eq!(identity(&d, "web"), before);
    wait_settled(&d, "web", 3, &argv, |ids| {
        ids.iter().all(|t| !now.contains(t))
    });
    d.wait_replicas(cli, "web", "3/3");
}
