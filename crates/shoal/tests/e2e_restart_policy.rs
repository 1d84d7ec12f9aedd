//! What happens when a task's process ends: replaced per the restart policy (default: any,
//! 5 s delay), with the ended task kept in history.

mod common;

use common::{any_cli, flow, kill9, table, wait_for, wait_pids, TestDaemon, WAIT};

#[test]
fn e2e_killed_task_is_replaced_by_default() {
    let cli = any_cli();
    let (d, _) = TestDaemon::with_swarm(cli);
    flow::create(&d, cli, &["--name", "crash", "busybox", "sleep", "6101"]);
    let argv = ["sleep", "6101"];
    let old_pid = wait_pids(&argv, 1)[0];
    let old_task = flow::wait_running_ids(&d, "crash", 1);
    assert_eq!(old_task.len(), 1);

    kill9(old_pid);
    // The default policy (condition any, delay 5 s) starts a replacement in the same slot.
    let new_pid = wait_for("a replacement process", WAIT, || {
        let p = common::pids_running(&argv);
        match p.as_slice() {
            [p] if *p != old_pid => Ok(*p),
            _ => Err(format!("{p:?}")),
        }
    });
    assert_ne!(new_pid, old_pid);
    d.wait_replicas(cli, "crash", "1/1");
    let new_task = flow::running_ids(&d, "crash");
    assert_eq!(new_task.len(), 1);
    assert_ne!(new_task, old_task);

    let out = d.cli_run(cli, &["service", "ps", "crash"]);
    let rows = table(out.ok());
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    assert_eq!(rows[0][0], new_task[0][..12], "{}", out.stdout);
    assert_eq!(rows[0][1], "crash.1");
    assert_eq!(rows[0][4], "Running");
    assert_eq!(rows[1][0], old_task[0][..12], "{}", out.stdout);
    assert_eq!(rows[1][1], "\\_ crash.1");
    assert_eq!(rows[1][4], "Shutdown");
    assert!(rows[1][5].starts_with("Failed "), "{}", out.stdout);
    assert_eq!(
        rows[1][6], "\"task: non-zero exit (137)\"",
        "{}",
        out.stdout
    );

    let t = d.task(&old_task[0]);
    assert_eq!(t["Status"]["State"], "failed");
    assert_eq!(t["Status"]["Err"], "task: non-zero exit (137)");
    assert_eq!(t["Status"]["ContainerStatus"]["ExitCode"], 137);
    d.wait_no_zombies();
}

#[test]
fn e2e_restart_condition_none_does_not_replace() {
    let cli = any_cli();
    let (d, _) = TestDaemon::with_swarm(cli);
    flow::create(
        &d,
        cli,
        &[
            "--name",
            "once",
            "--restart-condition",
            "none",
            "busybox",
            "sleep",
            "6111",
        ],
    );
    let argv = ["sleep", "6111"];
    let pid = wait_pids(&argv, 1)[0];
    let task = flow::wait_running_ids(&d, "once", 1).remove(0);
    kill9(pid);
    wait_for("the task to fail and be shut down", WAIT, || {
        let t = d.task(&task);
        if t["Status"]["State"] == "failed" && t["DesiredState"] == "shutdown" {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
    // Anything the orchestrator would have done about it is done once a later service runs.
    d.sync_point(cli, "later", 6112);
    assert_eq!(d.tasks("once").len(), 1, "{:?}", d.tasks("once"));
    assert!(common::pids_running(&argv).is_empty());
    let out = d.cli_run(cli, &["service", "ls", "--filter", "name=once"]);
    assert_eq!(table(out.ok())[0][3], "0/1", "{}", out.stdout);
    let out = d.cli_run(cli, &["service", "ps", "once"]);
    let rows = table(out.ok());
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert_eq!(rows[0][1], "once.1");
    assert_eq!(rows[0][4], "Shutdown");
    assert!(rows[0][5].starts_with("Failed "), "{}", out.stdout);
    assert_eq!(rows[0][6], "\"task: non-zero exit (137)\"");
    d.wait_no_zombies();
}

#[test]
fn e2e_restart_condition_on_failure() {
    let cli = any_cli();
    let (d, _) = TestDaemon::with_swarm(cli);
    // A clean exit is not a failure: not replaced.
    flow::create(
        &d,
        cli,
        &[
            "--name",
            "clean",
            "--restart-condition",
            "on-failure",
            "busybox",
            "sh",
            "-c",
            "exit 0",
        ],
    );
    // A failing one is, until the attempts run out.
    flow::create(
        &d,
        cli,
        &[
            "--name",
            "failing",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "100ms",
            "--restart-max-attempts",
            "2",
            "busybox",
            "sh",
            "-c",
            "exit 3",
        ],
    );
    wait_for("clean's task to complete", WAIT, || {
        let t = d.tasks("clean");
        if t.iter()
            .any(|t| t["Status"]["State"] == "complete" && t["DesiredState"] == "shutdown")
        {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });
    wait_for("failing's three attempts", WAIT, || {
        let t = d.tasks("failing");
        let failed = t
            .iter()
            .filter(|t| t["Status"]["State"] == "failed" && t["DesiredState"] == "shutdown")
            .count();
        if failed == 3 {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });
    d.sync_point(cli, "later", 6121);
    assert_eq!(d.tasks("clean").len(), 1, "{:?}", d.tasks("clean"));
    assert_eq!(d.tasks("failing").len(), 3, "{:?}", d.tasks("failing"));

    let out = d.cli_run(cli, &["service", "ps", "clean"]);
    let rows = table(out.ok());
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert_eq!(rows[0][4], "Shutdown");
    assert!(rows[0][5].starts_with("Complete "), "{}", out.stdout);
    let out = d.cli_run(cli, &["service", "ps", "failing"]);
    let rows = table(out.ok());
    assert_eq!(rows.len(), 3, "{}", out.stdout);
    assert_eq!(rows[0][1], "failing.1");
    for r in &rows[1..] {
        assert_eq!(r[1], "\\_ failing.1", "{}", out.stdout);
    }
    for r in &rows {
        assert!(r[5].starts_with("Failed "), "{}", out.stdout);
        assert_eq!(r[6], "\"task: non-zero exit (3)\"", "{}", out.stdout);
    }
    // Every shim of the ended tasks has been reaped.
    d.wait_no_zombies();
}

/// `UpdateStatus.State` and `Message` of a service.
fn update_status(d: &TestDaemon, service: &str) -> (String, String) {
    let s = d.get_json(&format!("/services/{service}"));
    let st = &s["UpdateStatus"];
    (
        st["State"].as_str().unwrap_or_default().to_string(),
        st["Message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn e2e_paused_update_is_reset_by_the_next_update() {
    let cli = any_cli();
    let (d, _) = TestDaemon::with_swarm(cli);
    flow::create(
        &d,
        cli,
        &[
            "--name",
            "upd",
            "--replicas",
            "2",
            "busybox",
            "sleep",
            "6131",
        ],
    );
    wait_pids(&["sleep", "6131"], 2);
    // An update whose tasks fail pauses (the default failure action).
    let out = d.cli_run(
        cli,
        &["service", "update", "-d", "--args", "sh -c 'exit 1'", "upd"],
    );
    assert_eq!(out.ok().trim(), "upd");
    let (_, message) = wait_for("the update to pause", WAIT, || {
        let st = update_status(&d, "upd");
        if st.0 == "paused" {
            Ok(st)
        } else {
            Err(format!("{st:?}"))
        }
    });
    assert!(
        message.starts_with("update paused due to failure or early termination of task "),
        "{message}"
    );
    // A new spec resets the status (as swarmkit does) and its update runs to completion.
    let out = d.cli_run(
        cli,
        &["service", "update", "-d", "--args", "sleep 6132", "upd"],
    );
    assert_eq!(out.ok().trim(), "upd");
    assert_ne!(update_status(&d, "upd").0, "paused");
    wait_for("the update to complete", WAIT, || {
        let st = update_status(&d, "upd");
        if st == ("completed".to_string(), "update completed".to_string()) {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    });
    wait_pids(&["sleep", "6132"], 2);
    wait_pids(&["sleep", "6131"], 0);
    d.wait_replicas(cli, "upd", "2/2");
    let out = d.cli_run(cli, &["service", "inspect", "--pretty", "upd"]);
    assert!(
        out.ok().contains(" State:\t\tcompleted\n"),
        "{}",
        out.stdout
    );
}
