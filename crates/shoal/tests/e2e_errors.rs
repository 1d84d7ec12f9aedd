//! Refusals against a real daemon: Docker's status codes and messages, through the API and the
//! CLI, and the stored state unchanged afterwards.

mod common;

use common::{any_cli, flow, table, wait_pids, Cli, TestDaemon};
use serde_json::{json, Value};

const NOT_A_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";
const ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";

/// The `message` of an error body.
#[track_caller]
fn message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["message"].as_str().unwrap_or_default().to_string()
}

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    swarm: Value,
    nodes: Value,
    services: Value,
    tasks: Vec<(String, String, String)>,
}

fn snapshot(d: &TestDaemon) -> Snapshot {
    let mut tasks: Vec<(String, String, String)> = d
        .get_json("/tasks")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t["ID"].as_str().unwrap_or_default().to_string(),
                t["DesiredState"].as_str().unwrap_or_default().to_string(),
                t["Status"]["State"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    tasks.sort();
    let mut nodes = d.get_json("/nodes");
    // A node's heartbeats may touch its status and version; the rest must not change.
    for n in nodes.as_array_mut().into_iter().flatten() {
        n["Version"] = Value::Null;
        n["UpdatedAt"] = Value::Null;
    }
    Snapshot {
        swarm: d.get_json("/swarm"),
        nodes,
        services: d.get_json("/services"),
        tasks,
    }
}

#[test]
fn e2e_calls_before_swarm_init_are_refused() {
    let d = TestDaemon::start();
    for cli in [Cli::Shoal, Cli::Docker] {
        if cli == Cli::Docker && common::docker_cli().is_none() {
            continue;
        }
        for args in [
            &["node", "ls"][..],
            &["service", "ls"],
            &["service", "ps", "web"],
        ] {
            let out = d.cli_run(cli, args);
            assert_eq!(out.code, 1, "{out:?}");
            assert_eq!(
                out.stderr,
                format!("Error response from daemon: {NOT_A_MANAGER}\n"),
                "{out:?}"
            );
        }
        let out = d.cli_run(cli, &["swarm", "leave"]);
        assert_eq!(out.code, 1, "{out:?}");
        assert_eq!(
            out.stderr,
            "Error response from daemon: This node is not part of a swarm\n"
        );
        let out = d.cli_run(cli, &["info"]);
        assert!(
            out.ok().lines().any(|l| l == " Swarm: inactive"),
            "{}",
            out.stdout
        );
    }
    for (method, path, body) in [
        ("GET", "/nodes", None),
        ("GET", "/services", None),
        ("GET", "/tasks", None),
        ("GET", "/swarm", None),
        (
            "POST",
            "/services/create",
            Some(r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}}"#),
        ),
    ] {
        let (code, body) = d.api(method, path, body);
        assert_eq!(code, 503, "{method} {path}: {body}");
        assert_eq!(message(&body), NOT_A_MANAGER, "{method} {path}");
    }
    let (code, body) = d.api("POST", "/swarm/leave", None);
    assert_eq!(
        (code, message(&body).as_str()),
        (503, "This node is not part of a swarm")
    );
    // Nothing was created on the way.
    assert!(!d.data_root().join("swarm").exists());
}

#[test]
fn e2e_refused_requests_leave_the_state_unchanged() {
    let cli = any_cli();
    let (d, _) = TestDaemon::with_swarm(cli);
    let web_id = flow::create(
        &d,
        cli,
        &[
            "--name",
            "web",
            "--replicas",
            "2",
            "busybox",
            "sleep",
            "6301",
        ],
    );
    d.wait_replicas(cli, "web", "2/2");
    wait_pids(&["sleep", "6301"], 2);
    // A write that makes the version the client holds stale.
    let stale = d.get_json(&format!("/services/{web_id}"));
    let stale_version = stale["Version"]["Index"].as_u64().expect("version");
    let out = d.cli_run(
        cli,
        &[
            "service",
            "update",
            "-d",
            "--label-add",
            "tier=front",
            "web",
        ],
    );
    assert_eq!(out.ok().trim(), "web");
    let before = snapshot(&d);

    // Malformed JSON bodies.
    for (body, want) in [
        (r#"{"Name": "x","#, "invalid JSON"),
        ("{not json", "invalid JSON"),
        (r#"{"Name": 5}"#, "invalid JSON"),
        (r#"{"Name": "x"} trailing"#, "unexpected content after JSON"),
    ] {
        let (code, resp) = d.api("POST", "/services/create", Some(body));
        assert_eq!(code, 400, "{body}: {resp}");
        assert!(message(&resp).starts_with(want), "{body}: {resp}");
    }

    // Unknown service.
    let out = d.cli_run(cli, &["service", "inspect", "nope"]);
    assert_eq!((out.code, out.stdout.as_str()), (1, "[]\n"), "{out:?}");
    assert_eq!(out.stderr, "Error: no such service: nope\n");
    let out = d.cli_run(cli, &["service", "logs", "nope"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stderr, "no such task or service: nope\n");
    for args in [
        &["service", "rm", "nope"][..],
        &["service", "update", "--env-add", "A=1", "nope"],
    ] {
        let out = d.cli_run(cli, args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert_eq!(
            out.stderr, "Error response from daemon: service nope not found\n",
            "{args:?}"
        );
    }
    let out = d.cli_run(cli, &["service", "ps", "nope"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stderr, "no such service: nope\n");
    let (code, body) = d.api("GET", "/services/nope", None);
    assert_eq!(
        (code, message(&body).as_str()),
        (404, "service nope not found")
    );
    let (code, body) = d.api("DELETE", "/services/nope", None);
    assert_eq!(
        (code, message(&body).as_str()),
        (404, "service nope not found")
    );
    let (code, _) = d.api(
        "POST",
        "/services/nope/update?version=1",
        Some(&stale["Spec"].to_string()),
    );
    assert_eq!(code, 404);

    // Unknown node.
    let out = d.cli_run(cli, &["node", "inspect", "nope"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        "Error response from daemon: node nope not found\n"
    );
    let out = d.cli_run(cli, &["node", "update", "--availability", "drain", "nope"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        "Error response from daemon: node nope not found\n"
    );
    let (code, body) = d.api("GET", "/nodes/nope", None);
    assert_eq!(
        (code, message(&body).as_str()),
        (404, "node nope not found")
    );

    // A constraint that does not parse.
    let out = d.cli_run(
        cli,
        &[
            "service",
            "create",
            "--name",
            "bad",
            "--constraint",
            "node.hostname",
            "busybox",
            "sleep",
            "6302",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        "Error response from daemon: constraint expected one operator from ==, !=\n"
    );
    let spec = json!({
        "Name": "bad",
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Args": ["sleep", "6302"]},
            "Placement": {"Constraints": ["node.hostname=!x"]}
        }
    });
    let (code, body) = d.api("POST", "/services/create", Some(&spec.to_string()));
    assert_eq!(code, 400, "{body}");

    // A stale version.
    let (code, body) = d.api(
        "POST",
        &format!("/services/{web_id}/update?version={stale_version}"),
        Some(&stale["Spec"].to_string()),
    );
    assert_eq!(code, 500, "{body}");
    assert!(message(&body).contains("update out of sequence"), "{body}");

    // Negative replicas, on create and on update.
    let neg = json!({
        "Name": "neg",
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "6303"]}},
        "Mode": {"Replicated": {"Replicas": -1}}
    });
    let (code, body) = d.api("POST", "/services/create", Some(&neg.to_string()));
    assert_eq!(code, 400, "{body}");
    let current = d.get_json(&format!("/services/{web_id}"));
    let mut spec = current["Spec"].clone();
    spec["Mode"]["Replicated"]["Replicas"] = json!(-1);
    let (code, body) = d.api(
        "POST",
        &format!(
            "/services/{web_id}/update?version={}",
            current["Version"]["Index"]
        ),
        Some(&spec.to_string()),
    );
    assert_eq!(code, 400, "{body}");
    let out = d.cli_run(cli, &["service", "scale", "web=-1"]);
    assert_eq!(out.code, 1, "{out:?}");

    // A name in use.
    let out = d.cli_run(
        cli,
        &[
            "service", "create", "--name", "web", "busybox", "sleep", "6304",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.starts_with("Error response from daemon: ")
            && out
                .stderr
                .contains("name conflicts with an existing object"),
        "{out:?}"
    );
    let (code, _) = d.api(
        "POST",
        "/services/create",
        Some(&current["Spec"].to_string()),
    );
    assert_eq!(code, 409);

    // A second init.
    let out = d.cli_run(cli, &["swarm", "init"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        format!("Error response from daemon: {ALREADY_IN_SWARM}\n")
    );
    let (code, body) = d.api(
        "POST",
        "/swarm/init",
        Some(r#"{"ListenAddr":"0.0.0.0:2377"}"#),
    );
    assert_eq!((code, message(&body).as_str()), (503, ALREADY_IN_SWARM));
    // Leaving a manager's swarm needs --force.
    let out = d.cli_run(cli, &["swarm", "leave"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message."), "{out:?}");

    // None of it changed anything.
    assert_eq!(snapshot(&d), before);
    assert_eq!(common::pids_running(&["sleep", "6301"]).len(), 2);
    for n in ["6302", "6303", "6304"] {
        assert!(common::pids_running(&["sleep", n]).is_empty());
    }
}

#[test]
fn e2e_unknown_constraint_key_leaves_the_task_pending() {
    // As in Docker: `node.foo==bar` parses, but no node has that attribute, so the task waits.
    let cli = any_cli();
    let (d, _) = TestDaemon::with_swarm(cli);
    flow::create(
        &d,
        cli,
        &[
            "--name",
            "nowhere",
            "--constraint",
            "node.foo==bar",
            "busybox",
            "sleep",
            "6311",
        ],
    );
    let ps = ["service", "ps", "--no-trunc", "nowhere"];
    common::wait_for("the scheduler's verdict", common::WAIT, || {
        let out = d.cli_run(cli, &ps);
        let rows = table(&out.stdout);
        match rows.first() {
            Some(r) if r.len() > 5 => Ok(r.clone()),
            _ => Err(format!("{out:?}")),
        }
    });
    let out = d.cli_run(cli, &ps);
    let rows = table(out.ok());
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert_eq!(rows[0][1], "nowhere.1");
    assert_eq!(rows[0][3], "Running", "no node: {}", out.stdout); // DESIRED STATE (NODE is empty)
    assert!(rows[0][4].starts_with("Pending "), "{}", out.stdout);
    assert_eq!(
        rows[0][5], "\"no suitable node (scheduling constraints not satisfied on 1 node)\"",
        "{}",
        out.stdout
    );
    let row = d.cli_run(cli, &["service", "ls"]);
    assert_eq!(table(row.ok())[0][3], "0/1");
    // A service that can run is scheduled meanwhile, and the pending one still is not.
    d.sync_point(cli, "elsewhere", 6312);
    assert!(common::pids_running(&["sleep", "6311"]).is_empty());
    assert_eq!(d.tasks("nowhere").len(), 1);
}
