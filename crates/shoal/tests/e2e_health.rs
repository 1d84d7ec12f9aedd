//! Health checks of the process runtime (`--health-cmd ...`): a task with a check is reported
//! running only once healthy, an unhealthy task fails with swarmkit's `dockerexec: unhealthy
//! container` and is replaced, and a start-first update to a version that never becomes healthy
//! keeps the old task running and pauses. Daemons use loopback addresses 127.0.80.x.

mod common;

use common::{any_cli, flow, wait_for, wait_pids, Cli, TestDaemon, WAIT};
use std::time::Duration;

/// A single-node swarm whose daemon advertises `ip`.
fn swarm_at(ip: &str) -> (TestDaemon, Cli) {
    let cli = any_cli();
    let d = TestDaemon::start_at(ip);
    flow::init(&d, cli);
    (d, cli)
}

/// A marker file path unique to this test run.
fn marker(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_string_lossy().into_owned()
}

/// Every task of `service` as (ID, state, desired state, err).
fn states(d: &TestDaemon, service: &str) -> Vec<(String, String, String, String)> {
    d.tasks(service)
        .iter()
        .map(|t| {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&t["ID"]),
                s(&t["Status"]["State"]),
                s(&t["DesiredState"]),
                s(&t["Status"]["Err"]),
            )
        })
        .collect()
}

#[test]
fn e2e_task_runs_only_once_healthy_and_fails_when_unhealthy() {
    let (d, cli) = swarm_at("127.0.80.2");
    let tmp = tempfile::tempdir().expect("tempdir");
    let ready = marker(&tmp, "ready");
    let health = format!("test -f {ready}");
    flow::create(
        &d,
        cli,
        &[
            "--name",
            "hc",
            "--health-cmd",
            &health,
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            "--health-start-period",
            "10m",
            "--health-start-interval",
            "1s",
            "busybox",
            "sleep",
            "8021",
        ],
    );
    // The process runs, but the task stays `starting` while the probe fails.
    wait_pids(&["sleep", "8021"], 1);
    let task = wait_for("the task to be starting", WAIT, || {
        match states(&d, "hc").as_slice() {
            [(id, st, _, _)] if st == "starting" => Ok(id.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    // Several probes fail within the start period: still not running.
    std::thread::sleep(Duration::from_secs(3));
    let t = d.task(&task);
    assert_eq!(t["Status"]["State"], "starting", "{t}");
    assert_eq!(d.running_tasks("hc").len(), 0);

    std::fs::write(&ready, b"").expect("marker");
    wait_for("the task to run once healthy", WAIT, || {
        let t = d.task(&task);
        if t["Status"]["State"] == "running" {
            Ok(())
        } else {
            Err(t["Status"].to_string())
        }
    });

    // Healthy -> unhealthy after 2 failed probes: stopped (SIGTERM) and failed, then replaced.
    std::fs::remove_file(&ready).expect("remove marker");
    wait_for("the unhealthy task to fail", WAIT, || {
        let t = d.task(&task);
        if t["Status"]["State"] == "failed" {
            Ok(())
        } else {
            Err(t["Status"].to_string())
        }
    });
    let t = d.task(&task);
    assert_eq!(
        t["Status"]["Err"], "task: non-zero exit (143): dockerexec: unhealthy container",
        "{t}"
    );
    wait_for("a replacement task", WAIT, || {
        let s = states(&d, "hc");
        if s.iter()
            .any(|(id, _, desired, _)| id != &task && desired == "running")
        {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    d.wait_no_zombies();
}

#[test]
fn e2e_never_healthy_task_fails_and_is_replaced() {
    let (d, cli) = swarm_at("127.0.80.3");
    flow::create(
        &d,
        cli,
        &[
            "--name",
            "sick",
            "--health-cmd",
            "exit 1",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            "--restart-delay",
            "1s",
            "busybox",
            "sleep",
            "8031",
        ],
    );
    let failed = wait_for("a task failed as unhealthy", WAIT, || {
        let s = states(&d, "sick");
        match s.iter().find(|(_, st, _, _)| st == "failed") {
            Some(f) => Ok(f.clone()),
            None => Err(format!("{s:?}")),
        }
    });
    assert_eq!(failed.3, "dockerexec: unhealthy container", "{failed:?}");
    wait_for("a replacement task", WAIT, || {
        let s = states(&d, "sick");
        if s.len() >= 2 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    // No task of this service was ever reported running.
    assert!(d.running_tasks("sick").is_empty());
    d.wait_no_zombies();
}

#[test]
fn e2e_start_first_update_waits_for_health_and_pauses() {
    let (d, cli) = swarm_at("127.0.80.4");
    let tmp = tempfile::tempdir().expect("tempdir");
    let ok = marker(&tmp, "v1");
    std::fs::write(&ok, b"").expect("marker");
    let health = format!("test -f {ok}");
    flow::create(
        &d,
        cli,
        &[
            "--name",
            "up",
            "--health-cmd",
            &health,
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            "--update-order",
            "start-first",
            "--update-failure-action",
            "pause",
            "--update-monitor",
            "2s",
            "busybox",
            "sleep",
            "8041",
        ],
    );
    let old = flow::wait_running_ids(&d, "up", 1).remove(0);
    let old_pid = wait_pids(&["sleep", "8041"], 1)[0];

    let never = format!("test -f {}", marker(&tmp, "never"));
    d.cli_run(
        cli,
        &[
            "service",
            "update",
            "-d",
            "--health-cmd",
            &never,
            "--args",
            "sleep 8042",
            "up",
        ],
    )
    .ok();
    wait_for("the update to pause", Duration::from_secs(60), || {
        let s = d.get_json("/services/up");
        let st = &s["UpdateStatus"];
        if st["State"] == "paused" {
            Ok(())
        } else {
            Err(st.to_string())
        }
    });
    // The new version never became running; the old task kept running throughout.
    let t = d.task(&old);
    assert_eq!(t["Status"]["State"], "running", "{t}");
    assert_eq!(t["DesiredState"], "running", "{t}");
    assert_eq!(common::pids_running(&["sleep", "8041"]), vec![old_pid]);
    let s = states(&d, "up");
    assert!(
        s.iter().any(|(id, st, _, err)| id != &old
            && st == "failed"
            && err == "dockerexec: unhealthy container"),
        "{s:?}"
    );
    d.wait_no_zombies();
}
