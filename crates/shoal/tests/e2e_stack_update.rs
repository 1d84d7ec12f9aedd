//! Rolling updates of a stack: a service of 6 replicas with `update_config` parallelism 2,
//! no delay and `max_failure_ratio: 0` is deployed (version `a`), then deployed again with a
//! new version whose tasks fail to start (its program is missing). With `failure_action:
//! pause` the update pauses with swarmkit's message after the first batch and the 4 other
//! replicas keep running the old version; with `failure_action: rollback` the service goes
//! back to the old spec and all 6 replicas run version `a` again.
//!
//! A new task that never runs stays in flight until it fails, so with no delay it is the
//! failure, not a timer, that stops the update from going on to the next batch.
//!
//! The daemons' swarm addresses are in this file's block, 127.0.82.x.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{any_cli, table, wait_for, Cli, TestDaemon};

const STACK: &str = "roll";
const SERVICE: &str = "roll_app";
/// The bound of the waits for the update to pause or roll back.
const UPDATE_WAIT: Duration = Duration::from_secs(60);
/// The `ERROR` column of `ps --no-trunc` for a task of version `b`.
const START_FAILED: &str =
    "\"starting task failed: exec: \"shoal-e2e-no-such-app\": executable file not found in $PATH\"";

/// The stack's file: version `a` runs `sleep {sleep}`, version `b` a program that does not
/// exist.
fn stack_file(version: &str, sleep: u32, failure_action: &str) -> String {
    let command = if version == "a" {
        format!("[\"sleep\", \"{sleep}\"]")
    } else {
        "[\"shoal-e2e-no-such-app\"]".to_string()
    };
    format!(
        r#"version: "3.8"
services:
  app:
    image: busybox
    command: {command}
    environment:
      VERSION: {version}
    deploy:
      replicas: 6
      restart_policy:
        condition: on-failure
        delay: 1s
      update_config:
        parallelism: 2
        delay: 0s
        failure_action: {failure_action}
        monitor: 2s
        max_failure_ratio: 0
      rollback_config:
        parallelism: 2
        monitor: 1s
"#
    )
}

fn write(d: &TestDaemon, text: &str) -> PathBuf {
    let p = d.root().join("docker-compose.yml");
    std::fs::write(&p, text).expect("write compose file");
    p
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A one-node swarm at `ip` with the stack deployed at version `a` through `cli`, its 6 tasks
/// running; returns the daemon, the compose file and the service ID.
fn deployed(ip: &str, cli: Cli, sleep: u32, failure_action: &str) -> (TestDaemon, PathBuf, String) {
    let d = TestDaemon::start_at(ip);
    d.cli_run(cli, &["swarm", "init", "--advertise-addr", d.ip()])
        .ok();
    let file = write(&d, &stack_file("a", sleep, failure_action));
    let out = d.cli_run(cli, &["stack", "deploy", "-c", path(&file), STACK]);
    let mut lines: Vec<&str> = out.ok().lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["Creating network roll_default", "Creating service roll_app"],
        "{out:?}"
    );
    let arg = sleep.to_string();
    common::wait_pids(&["sleep", &arg], 6);
    common::flow::wait_running_ids(&d, SERVICE, 6);
    let id = d.get_json(&format!("/services/{SERVICE}"))["ID"]
        .as_str()
        .expect("service ID")
        .to_string();
    (d, file, id)
}

/// Deploys the failing version `b` (same stack, same file path) and checks the CLI's lines.
fn deploy_failing(d: &TestDaemon, cli: Cli, file: &Path, id: &str, sleep: u32, action: &str) {
    write(d, &stack_file("b", sleep, action));
    let out = d.cli_run(cli, &["stack", "deploy", "-c", path(file), STACK]);
    assert_eq!(
        out.ok(),
        format!("Updating service {SERVICE} (id: {id})\n"),
        "{out:?}"
    );
}

/// The service's `UpdateStatus` (state, message).
fn update_status(d: &TestDaemon) -> (String, String) {
    let s = d.get_json(&format!("/services/{SERVICE}"));
    let st = &s["UpdateStatus"];
    (
        st["State"].as_str().unwrap_or_default().to_string(),
        st["Message"].as_str().unwrap_or_default().to_string(),
    )
}

#[track_caller]
fn wait_update_state(d: &TestDaemon, state: &str) -> String {
    wait_for(&format!("the update to be {state}"), UPDATE_WAIT, || {
        let (s, m) = update_status(d);
        if s == state {
            Ok(m)
        } else {
            Err(format!("{s}: {m}"))
        }
    })
}

/// `VERSION=` of a container spec.
fn version_in(container_spec: &serde_json::Value) -> String {
    container_spec["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.strip_prefix("VERSION="))
        .collect()
}

fn slot_of(t: &serde_json::Value) -> u64 {
    t["Slot"].as_u64().unwrap_or_default()
}

/// Tasks of the service as (ID, slot, version, state, desired state).
fn tasks(d: &TestDaemon) -> Vec<(String, u64, String, String, String)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    d.tasks(SERVICE)
        .iter()
        .map(|t| {
            (
                s(&t["ID"]),
                slot_of(t),
                version_in(&t["Spec"]["ContainerSpec"]),
                s(&t["Status"]["State"]),
                s(&t["DesiredState"]),
            )
        })
        .collect()
}

/// Checks that every process `sleep {sleep}` runs version `a`; returns how many run.
fn old_processes(sleep: u32) -> usize {
    let arg = sleep.to_string();
    let pids = common::pids_running(&["sleep", &arg]);
    for pid in &pids {
        let env = common::environ(*pid);
        assert!(
            env.iter().any(|e| e == "VERSION=a"),
            "process {pid} runs {env:?}"
        );
    }
    pids.len()
}

/// `stack ps` lists the failed tasks of the new version with the reason.
#[track_caller]
fn assert_ps_shows_failures(d: &TestDaemon, cli: Cli) {
    let out = d.cli_run(cli, &["stack", "ps", "--no-trunc", STACK]);
    let rows = table(out.ok());
    let failed: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r.get(5).is_some_and(|c| c.starts_with("Failed ")))
        .collect();
    assert!(!failed.is_empty(), "{}", out.stdout);
    for r in &failed {
        assert_eq!(
            r.get(6).map(String::as_str),
            Some(START_FAILED),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn e2e_stack_failing_update_pauses_and_the_old_version_keeps_serving() {
    let cli = Cli::Shoal;
    let (d, file, id) = deployed("127.0.82.3", cli, 8211, "pause");
    let old: BTreeSet<String> = common::flow::running_ids(&d, SERVICE).into_iter().collect();

    deploy_failing(&d, cli, &file, &id, 8211, "pause");
    let message = wait_update_state(&d, "paused");
    let failed_task = message
        .strip_prefix("update paused due to failure or early termination of task ")
        .unwrap_or_else(|| panic!("{message}"));
    let t = d.task(failed_task);
    assert_eq!(version_in(&t["Spec"]["ContainerSpec"]), "b", "{t}");
    assert_eq!(t["Status"]["State"], "failed", "{t}");

    // Paused: the failed slots are restarted (with the new spec, after the restart delay, and
    // fail again) while the others are left alone. Wait until a restarted task failed too, so
    // the updater had every chance to go on.
    let replaced = wait_for("a restarted task to fail again", UPDATE_WAIT, || {
        let ts = tasks(&d);
        let new_slots: BTreeSet<u64> = ts.iter().filter(|t| t.2 == "b").map(|t| t.1).collect();
        let failed_twice = new_slots.iter().any(|s| {
            ts.iter()
                .filter(|t| t.1 == *s && t.2 == "b" && t.3 == "failed")
                .count()
                >= 2
        });
        if failed_twice {
            Ok(new_slots)
        } else {
            Err(format!("{ts:?}"))
        }
    });
    assert_eq!(update_status(&d).0, "paused");
    assert!(
        (1..=2).contains(&replaced.len()),
        "parallelism 2, yet slots {replaced:?} were updated: {:?}",
        tasks(&d)
    );
    // Every other slot still runs its old task (same ID, version a); no task of version a
    // was started, and none runs in an updated slot.
    let ts = tasks(&d);
    let still: Vec<&(String, u64, String, String, String)> = ts
        .iter()
        .filter(|t| t.2 == "a" && t.3 == "running" && t.4 == "running")
        .collect();
    assert_eq!(still.len(), 6 - replaced.len(), "{ts:?}");
    for t in &still {
        assert!(old.contains(&t.0), "a new task of version a runs: {ts:?}");
        assert!(!replaced.contains(&t.1), "{ts:?}");
    }
    let slots: BTreeSet<u64> = still.iter().map(|t| t.1).chain(replaced.clone()).collect();
    assert_eq!(slots, (1..=6).collect(), "{ts:?}");
    assert_eq!(old_processes(8211), 6 - replaced.len());

    // The service is on the new spec, paused; `stack ps` and `service ps` show the failures.
    let svc = d.get_json(&format!("/services/{SERVICE}"));
    assert_eq!(
        version_in(&svc["Spec"]["TaskTemplate"]["ContainerSpec"]),
        "b",
        "{svc}"
    );
    assert_ps_shows_failures(&d, cli);
    let out = d.cli_run(cli, &["service", "inspect", "--pretty", SERVICE]);
    assert!(out.ok().contains(" State:\t\tpaused\n"), "{}", out.stdout);
    if common::docker_cli().is_some() {
        let out = d.docker(&["service", "ps", "--no-trunc", SERVICE]);
        let rows = table(out.ok());
        assert!(
            rows.iter()
                .any(|r| r.get(5).is_some_and(|c| c.starts_with("Failed "))
                    && r.get(6).map(String::as_str) == Some(START_FAILED)),
            "{}",
            out.stdout
        );
    }
    d.wait_no_zombies();
}

#[test]
fn e2e_stack_failing_update_rolls_back_to_the_old_version() {
    let cli = any_cli();
    let (d, file, id) = deployed("127.0.82.4", cli, 8221, "rollback");
    let old: BTreeSet<String> = common::flow::running_ids(&d, SERVICE).into_iter().collect();

    deploy_failing(&d, cli, &file, &id, 8221, "rollback");
    let message = wait_update_state(&d, "rollback_completed");
    assert_eq!(message, "rollback completed");

    // The spec is version a again; 6 tasks of it run, on the slots 1..=6.
    let svc = d.get_json(&format!("/services/{SERVICE}"));
    assert_eq!(
        version_in(&svc["Spec"]["TaskTemplate"]["ContainerSpec"]),
        "a",
        "{svc}"
    );
    let running = common::flow::wait_running_ids(&d, SERVICE, 6);
    let ts = tasks(&d);
    let slots: BTreeSet<u64> = ts
        .iter()
        .filter(|t| running.contains(&t.0))
        .map(|t| {
            assert_eq!(t.2, "a", "{ts:?}");
            t.1
        })
        .collect();
    assert_eq!(slots, (1..=6).collect(), "{ts:?}");
    // Only the slots of the first batch were touched: the others kept their old task.
    let new_slots: BTreeSet<u64> = ts.iter().filter(|t| t.2 == "b").map(|t| t.1).collect();
    assert!((1..=2).contains(&new_slots.len()), "{ts:?}");
    let kept = running.iter().filter(|id| old.contains(*id)).count();
    assert_eq!(kept, 6 - new_slots.len(), "{ts:?}");
    assert_eq!(common::wait_pids(&["sleep", "8221"], 6).len(), 6);
    assert_eq!(old_processes(8221), 6);
    assert_ps_shows_failures(&d, cli);
    d.wait_replicas(cli, SERVICE, "6/6");
    d.wait_no_zombies();
}
