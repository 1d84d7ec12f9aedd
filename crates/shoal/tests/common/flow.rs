//! The one-machine swarm flow of issue "Core: a one-machine swarm", driven through either CLI:
//! init, info, node ls, service create/ls/ps/scale/logs/update/inspect/rm, swarm leave.
//! Assertions are on what the commands print, on the task processes in /proc, and on the API.

use super::*;
use serde_json::Value;

/// The node ID in `Swarm initialized: current node (ID) is now a manager.`
#[track_caller]
pub fn init_node_id(stdout: &str) -> String {
    let first = stdout.lines().next().unwrap_or("");
    let id = first
        .strip_prefix("Swarm initialized: current node (")
        .and_then(|r| r.strip_suffix(") is now a manager."))
        .unwrap_or_else(|| panic!("unexpected swarm init output:\n{stdout}"));
    assert_eq!(id.len(), 25, "a node ID: {id}");
    id.to_string()
}

/// `swarm init` through `cli`; returns the node ID.
#[track_caller]
pub fn init(d: &TestDaemon, cli: Cli) -> String {
    let out = d.cli_run(cli, &["swarm", "init"]);
    let id = init_node_id(out.ok());
    assert!(
        out.stdout
            .contains("To add a worker to this swarm, run the following command:")
            && out.stdout.contains("swarm join --token SWMTKN-1-"),
        "{}",
        out.stdout
    );
    id
}

/// `service create -d ...`; returns the printed service ID.
#[track_caller]
pub fn create(d: &TestDaemon, cli: Cli, args: &[&str]) -> String {
    let mut all = vec!["service", "create", "-d"];
    all.extend_from_slice(args);
    let out = d.cli_run(cli, &all);
    let id = out.ok().trim().to_string();
    assert_eq!(id.len(), 25, "service create prints the ID: {out:?}");
    id
}

/// IDs of the tasks of `service` that run.
pub fn running_ids(d: &TestDaemon, service: &str) -> Vec<String> {
    let mut v: Vec<String> = d
        .running_tasks(service)
        .iter()
        .filter(|t| t["DesiredState"] == "running")
        .filter_map(|t| t["ID"].as_str().map(String::from))
        .collect();
    v.sort();
    v
}

/// Waits until exactly `n` tasks of `service` run (as reported, not just as processes).
#[track_caller]
pub fn wait_running_ids(d: &TestDaemon, service: &str, n: usize) -> Vec<String> {
    wait_for(&format!("{n} running tasks of {service}"), WAIT, || {
        let ids = running_ids(d, service);
        if ids.len() == n {
            Ok(ids)
        } else {
            Err(format!("{ids:?}"))
        }
    })
}

/// The `HOSTNAME` column of `node ls`.
#[track_caller]
pub fn node_hostname(d: &TestDaemon, cli: Cli) -> String {
    let out = d.cli_run(cli, &["node", "ls"]);
    let rows = table(out.ok());
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    rows[0][1].clone()
}

/// The whole flow through `cli`, with task commands `sleep {n}`, `sleep {n+1}`, `sleep {n+2}`.
pub fn swarm_flow(cli: Cli, n: u32) {
    let d = TestDaemon::start();
    let web_cmd = n.to_string();
    let web_argv = ["sleep", web_cmd.as_str()];
    let echo_cmd = (n + 1).to_string();
    let echo_argv = ["sleep", echo_cmd.as_str()];
    let last_cmd = (n + 2).to_string();
    let last_argv = ["sleep", last_cmd.as_str()];

    // ---- swarm init, info, node ls
    let node_id = init(&d, cli);
    let info = d.cli_run(cli, &["info"]);
    let info = info.ok();
    for want in [
        " Swarm: active",
        &format!("  NodeID: {node_id}"),
        "  Is Manager: true",
        "  Managers: 1",
        "  Nodes: 1",
    ] {
        assert!(
            info.lines().any(|l| l == want),
            "info lacks {want:?}:\n{info}"
        );
    }
    let out = d.cli_run(cli, &["node", "ls"]);
    assert_eq!(
        header(out.ok()),
        "ID HOSTNAME STATUS AVAILABILITY MANAGER STATUS ENGINE VERSION"
    );
    let rows = table(&out.stdout);
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert_eq!(rows[0][0], format!("{node_id} *"), "{}", out.stdout);
    assert_eq!(
        &rows[0][2..5],
        ["Ready", "Active", "Leader"],
        "{}",
        out.stdout
    );
    let hostname = rows[0][1].clone();

    // ---- service create, ls, ps
    let web_id = create(
        &d,
        cli,
        &[
            "--name",
            "web",
            "--replicas",
            "3",
            "busybox",
            "sleep",
            &web_cmd,
        ],
    );
    d.wait_replicas(cli, "web", "3/3");
    let out = d.cli_run(cli, &["service", "ls"]);
    assert_eq!(header(out.ok()), "ID NAME MODE REPLICAS IMAGE PORTS");
    let rows = table(&out.stdout);
    assert_eq!(
        rows,
        vec![vec![
            web_id[..12].to_string(),
            "web".into(),
            "replicated".into(),
            "3/3".into(),
            "busybox:latest".into()
        ]],
        "{}",
        out.stdout
    );
    let first_pids = wait_pids(&web_argv, 3);
    let first_tasks = running_ids(&d, "web");
    assert_eq!(first_tasks.len(), 3);

    let out = d.cli_run(cli, &["service", "ps", "web"]);
    assert_eq!(
        header(out.ok()),
        "ID NAME IMAGE NODE DESIRED STATE CURRENT STATE ERROR PORTS"
    );
    let mut rows = table(&out.stdout);
    rows.sort_by(|a, b| a[1].cmp(&b[1]));
    assert_eq!(rows.len(), 3, "{}", out.stdout);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[1], format!("web.{}", i + 1), "{}", out.stdout);
        assert_eq!(r[2], "busybox:latest", "{}", out.stdout);
        assert_eq!(r[3], hostname, "{}", out.stdout);
        assert_eq!(r[4], "Running", "{}", out.stdout);
        assert!(r[5].starts_with("Running "), "{}", out.stdout);
        assert!(
            first_tasks.iter().any(|t| t.starts_with(&r[0])),
            "{}",
            out.stdout
        );
    }

    // ---- scale: waits for convergence without -d; the running tasks are kept
    let out = d.cli_run(cli, &["service", "scale", "web=5"]);
    assert_eq!(
        out.ok().lines().next(),
        Some("web scaled to 5"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("converged") || out.stderr.contains("converged"),
        "{out:?}"
    );
    let ls = d.cli_run(cli, &["service", "ls"]);
    assert_eq!(table(ls.ok())[0][3], "5/5", "{}", ls.stdout);
    let scaled_tasks = running_ids(&d, "web");
    assert_eq!(scaled_tasks.len(), 5);
    assert!(
        first_tasks.iter().all(|t| scaled_tasks.contains(t)),
        "scaling replaced tasks: {first_tasks:?} -> {scaled_tasks:?}"
    );
    let pids = wait_pids(&web_argv, 5);
    assert!(first_pids.iter().all(|p| pids.contains(p)));
    // And detached.
    let out = d.cli_run(cli, &["service", "scale", "-d", "web=4"]);
    assert_eq!(out.ok().trim(), "web scaled to 4");
    d.wait_replicas(cli, "web", "4/4");
    wait_pids(&web_argv, 4);
    let out = d.cli_run(cli, &["service", "scale", "-d", "web=5"]);
    assert_eq!(out.ok().trim(), "web scaled to 5");
    d.wait_replicas(cli, "web", "5/5");
    wait_pids(&web_argv, 5);

    // ---- logs
    let script = format!("echo hello; echo host=$HOSTNAME; exec sleep {echo_cmd}");
    create(&d, cli, &["--name", "echo", "busybox", "sh", "-c", &script]);
    let echo_pid = wait_pids(&echo_argv, 1)[0];
    let logs = wait_for("two log lines", WAIT, || {
        let out = d.cli_run(cli, &["service", "logs", "echo"]);
        if out.code == 0 && out.lines().len() == 2 {
            Ok(out)
        } else {
            Err(format!("{out:?}"))
        }
    });
    let lines = logs.lines();
    let (prefix, text) = lines[0]
        .split_once("    | ")
        .unwrap_or_else(|| panic!("log line {:?}", lines[0]));
    assert_eq!(text, "hello");
    // echo.1.<12 chars of the task ID>@<node hostname>
    let (name, node) = prefix.split_once('@').expect("task@node");
    assert_eq!(node, hostname);
    let short_task = name.strip_prefix("echo.1.").expect("echo.1.<task>");
    assert_eq!(short_task.len(), 12, "{name}");
    assert_eq!(lines[1], format!("{prefix}    | host={short_task}"));
    let echo_task = wait_running_ids(&d, "echo", 1);
    assert!(echo_task[0].starts_with(short_task), "{echo_task:?}");
    // The task's own environment says the same.
    assert!(
        environ(echo_pid).contains(&format!("HOSTNAME={short_task}")),
        "{:?}",
        environ(echo_pid)
    );

    let out = d.cli_run(cli, &["service", "logs", "--tail", "1", "echo"]);
    assert_eq!(
        out.lines(),
        vec![format!("{prefix}    | host={short_task}")]
    );
    let out = d.cli_run(cli, &["service", "logs", "--timestamps", "echo"]);
    let stamped = out.lines();
    assert_eq!(stamped.len(), 2, "{out:?}");
    for (l, want) in stamped.iter().zip(&lines) {
        let (ts, rest) = l.split_once(' ').expect("timestamp first");
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "not a timestamp: {ts}"
        );
        assert_eq!(rest, want);
    }
    let out = d.cli_run(cli, &["service", "logs", "--raw", "echo"]);
    assert_eq!(
        out.lines(),
        vec!["hello".to_string(), format!("host={short_task}")]
    );
    let out = d.cli_run(cli, &["service", "logs", "--no-task-ids", "echo"]);
    assert_eq!(
        out.lines()[0],
        format!("echo.1@{hostname}    | hello"),
        "{out:?}"
    );

    // ---- update --env-add: every task is replaced; the new processes have K=V
    let out = d.cli_run(cli, &["service", "update", "--env-add", "K=V", "web"]);
    assert_eq!(out.ok().lines().next(), Some("web"), "{out:?}");
    assert!(
        out.stdout.contains("converged") || out.stderr.contains("converged"),
        "{out:?}"
    );
    let new_pids = wait_for("5 web processes with K=V", WAIT, || {
        let p = pids_running(&web_argv);
        let envs: Vec<Vec<String>> = p.iter().map(|p| environ(*p)).collect();
        if p.len() == 5 && envs.iter().all(|e| e.contains(&"K=V".to_string())) {
            Ok(p)
        } else {
            Err(format!("{p:?}: {envs:?}"))
        }
    });
    assert!(new_pids.iter().all(|p| !first_pids.contains(p)));
    let updated = running_ids(&d, "web");
    assert_eq!(updated.len(), 5);
    assert!(updated.iter().all(|t| !scaled_tasks.contains(t)));
    for pid in &new_pids {
        let env = environ(*pid);
        let host = env
            .iter()
            .find_map(|e| e.strip_prefix("HOSTNAME="))
            .unwrap_or_else(|| panic!("no HOSTNAME in {env:?}"));
        assert!(
            updated.iter().any(|t| t[..12] == *host),
            "HOSTNAME={host} is no task's short ID ({updated:?})"
        );
    }
    let out = d.cli_run(cli, &["service", "ps", "web"]);
    let rows = table(out.ok());
    for slot in 1..=5 {
        let name = format!("web.{slot}");
        let current: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == name).collect();
        assert_eq!(current.len(), 1, "{}", out.stdout);
        assert_eq!(current[0][4], "Running", "{}", out.stdout);
        let history = format!("\\_ {name}");
        let old: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == history).collect();
        assert!(!old.is_empty(), "no history for {name}:\n{}", out.stdout);
        for r in old {
            assert_eq!(r[4], "Shutdown", "{}", out.stdout);
            assert!(r[5].starts_with("Shutdown "), "{}", out.stdout);
        }
    }
    // History rows follow their slot's current task.
    let names: Vec<String> = rows.iter().map(|r| r[1].clone()).collect();
    let first_hist = names
        .iter()
        .position(|n| n == "\\_ web.1")
        .expect("web.1 history");
    assert_eq!(names[first_hist - 1], "web.1", "{}", out.stdout);

    // ---- inspect
    let out = d.cli_run(cli, &["service", "inspect", "web"]);
    let v: Value = serde_json::from_str(out.ok()).expect("inspect prints JSON");
    let s = &v[0];
    assert_eq!(s["ID"], web_id.as_str());
    assert_eq!(s["Spec"]["Name"], "web");
    assert_eq!(s["Spec"]["Mode"]["Replicated"]["Replicas"], 5);
    let c = &s["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(c["Image"], "busybox:latest");
    assert_eq!(c["Args"], serde_json::json!(["sleep", web_cmd]));
    assert_eq!(c["Env"], serde_json::json!(["K=V"]));
    // Defaults are shown (insertDefaults), as docker does.
    assert_eq!(
        s["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"],
        "any"
    );
    assert_eq!(s["Spec"]["UpdateConfig"]["Parallelism"], 1);
    assert!(s["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Env"].is_null());
    let out = d.cli_run(
        cli,
        &[
            "service",
            "inspect",
            "--format",
            "{{.Spec.Name}} {{.Spec.Mode.Replicated.Replicas}} {{.ID}}",
            "web",
        ],
    );
    assert_eq!(out.ok().trim(), format!("web 5 {web_id}"));
    let out = d.cli_run(cli, &["service", "inspect", "--pretty", "web"]);
    let pretty = out.ok();
    assert!(pretty.contains(&format!("ID:\t\t{web_id}\n")), "{pretty}");
    assert!(pretty.contains("Name:\t\tweb\n"), "{pretty}");
    assert!(pretty.contains(" Replicas:\t5\n"), "{pretty}");
    assert!(pretty.contains(" Env:\t\tK=V"), "{pretty}");

    // Round trip: the spec read back and sent again is stored as is and replaces no task.
    let raw = d.get_json(&format!("/services/{web_id}"));
    let version = raw["Version"]["Index"].as_u64().expect("version");
    let spec = raw["Spec"].clone();
    let (code, body) = d.api(
        "POST",
        &format!("/services/{web_id}/update?version={version}"),
        Some(&spec.to_string()),
    );
    assert_eq!(code, 200, "{body}");
    let again = d.get_json(&format!("/services/{web_id}"));
    assert_eq!(again["Spec"], spec);
    assert!(again["Version"]["Index"].as_u64() > Some(version));
    // The orchestrator handles events in order: once a later scale is done, it has seen the
    // round trip too.
    let out = d.cli_run(cli, &["service", "scale", "-d", "web=4"]);
    out.ok();
    d.wait_replicas(cli, "web", "4/4");
    wait_pids(&web_argv, 4);
    let kept = running_ids(&d, "web");
    assert!(
        kept.iter().all(|t| updated.contains(t)),
        "the round trip replaced tasks: {updated:?} -> {kept:?}"
    );

    // ---- rm
    let out = d.cli_run(cli, &["service", "rm", "web", "echo"]);
    assert_eq!(out.ok().lines().collect::<Vec<_>>(), ["web", "echo"]);
    let out = d.cli_run(cli, &["service", "ls"]);
    assert_eq!(table(out.ok()).len(), 0, "{}", out.stdout);
    wait_pids(&web_argv, 0);
    wait_pids(&echo_argv, 0);
    wait_for("no zombie shims", WAIT, || {
        let z = d.zombie_children();
        if z.is_empty() {
            Ok(())
        } else {
            Err(format!("zombies: {z:?}"))
        }
    });

    // ---- leave: every task process goes
    create(
        &d,
        cli,
        &[
            "--name",
            "last",
            "--replicas",
            "2",
            "busybox",
            "sleep",
            &last_cmd,
        ],
    );
    wait_pids(&last_argv, 2);
    let out = d.cli_run(cli, &["swarm", "leave", "--force"]);
    assert_eq!(out.ok().trim(), "Node left the swarm.");
    wait_pids(&last_argv, 0);
    let info = d.cli_run(cli, &["info"]);
    assert!(
        info.ok().lines().any(|l| l == " Swarm: inactive"),
        "{}",
        info.stdout
    );
    let out = d.cli_run(cli, &["node", "ls"]);
    assert!(
        out.fails().contains("This node is not a swarm manager."),
        "{out:?}"
    );
    let tasks_dir = d.data_root().join("runtime/process/tasks");
    let left: Vec<_> = std::fs::read_dir(&tasks_dir)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "task state left after leave: {left:?}");
}
