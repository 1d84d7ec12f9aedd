//! Service endpoints and the task list's label filter, end to end on a one-machine swarm:
//! `service create -p 8080:80` and `-p 80` (an ingress port from the dynamic range) show
//! `*:8080->80/tcp` and `*:30000->80/tcp` in `service ls` (the same with both CLIs) and
//! `Endpoint.Ports` in `service inspect`; a published port another service holds is refused
//! with Docker's message; `stack rm --detach=false` waits for the stack's tasks to stop, which
//! the daemon still lists by the stack's label after the service is removed.
//!
//! The daemons' swarm addresses are in this file's block, 127.0.76.x.

mod common;

use common::{table, wait_for, Cli, TestDaemon, WAIT};

/// `service ls` rows as (name, ports).
fn ports(d: &TestDaemon, cli: Cli) -> Vec<(String, String)> {
    let out = d.cli_run(cli, &["service", "ls", "--format", "{{.Name}}\t{{.Ports}}"]);
    out.ok()
        .lines()
        .map(|l| {
            let (name, ports) = l.split_once('\t').unwrap_or((l, ""));
            (name.to_string(), ports.to_string())
        })
        .collect()
}

#[track_caller]
fn wait_ports(d: &TestDaemon, cli: Cli, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect();
    wait_for(&format!("service ls ports {want:?}"), WAIT, || {
        let got = ports(d, cli);
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
}

fn endpoint_flow(cli: Cli, ip: &str) {
    let d = TestDaemon::start_at(ip);
    d.cli_run(cli, &["swarm", "init", "--advertise-addr", d.ip()])
        .ok();
    let create = |name: &str, publish: &str| {
        d.cli_run(
            cli,
            &[
                "service", "create", "--detach", "--name", name, "-p", publish, "busybox", "sleep",
                "3176",
            ],
        )
    };
    create("fixed", "8080:80").ok();
    create("dynamic", "80").ok();
    wait_ports(
        &d,
        cli,
        &[("dynamic", "*:30000->80/tcp"), ("fixed", "*:8080->80/tcp")],
    );
    // Both CLIs print the column alike (docker formats it from Endpoint.Ports).
    if common::docker_cli().is_some() {
        let other = if cli == Cli::Docker {
            Cli::Shoal
        } else {
            Cli::Docker
        };
        assert_eq!(ports(&d, other), ports(&d, cli));
    }
    let svc = d.get_json("/services/dynamic");
    assert_eq!(
        svc["Endpoint"]["Ports"],
        serde_json::json!([
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 30000, "PublishMode": "ingress"}
        ]),
        "{svc}"
    );
    assert_eq!(
        svc["Endpoint"]["Spec"], svc["Spec"]["EndpointSpec"],
        "{svc}"
    );
    // Ports published in ingress mode give the service a virtual IP on ingress (as Docker).
    let vips = svc["Endpoint"]["VirtualIPs"]
        .as_array()
        .expect("VirtualIPs");
    let ingress = d.get_json("/networks/ingress");
    assert_eq!(vips.len(), 1, "{svc}");
    assert_eq!(vips[0]["NetworkID"], ingress["Id"], "{svc}");
    assert!(
        vips[0]["Addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("10.0.0.") && a.ends_with("/24")),
        "{svc}"
    );
    let fixed = d.get_json("/services/fixed");
    assert_eq!(
        fixed["Endpoint"]["Ports"][0]["PublishedPort"], 8080,
        "{fixed}"
    );
    let inspect = d.cli_run(
        cli,
        &[
            "service",
            "inspect",
            "--format",
            "{{json .Endpoint.Ports}}",
            "fixed",
        ],
    );
    let shown: serde_json::Value =
        serde_json::from_str(inspect.ok().trim()).unwrap_or_else(|e| panic!("{e}: {inspect:?}"));
    assert_eq!(
        shown,
        serde_json::json!([
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}
        ]),
        "{inspect:?}"
    );

    // A port another service holds, explicitly or from the dynamic range, is refused.
    let fixed_id = fixed["ID"].as_str().unwrap_or_default().to_string();
    let dynamic_id = svc["ID"].as_str().unwrap_or_default().to_string();
    for (port, holder, id) in [
        ("8080", "fixed", &fixed_id),
        ("30000", "dynamic", &dynamic_id),
    ] {
        let out = create("clash", &format!("{port}:81"));
        let err = out.fails();
        assert!(
            err.contains(&format!(
                "port '{port}' is already in use by service '{holder}' ({id}) as an ingress port"
            )),
            "{out:?}"
        );
    }
    // A second dynamic port is the next free one; freed ports are given again.
    create("third", "81").ok();
    wait_ports(
        &d,
        cli,
        &[
            ("dynamic", "*:30000->80/tcp"),
            ("fixed", "*:8080->80/tcp"),
            ("third", "*:30001->81/tcp"),
        ],
    );
    d.cli_run(cli, &["service", "rm", "dynamic"]).ok();
    create("fourth", "82").ok();
    wait_ports(
        &d,
        cli,
        &[
            ("fixed", "*:8080->80/tcp"),
            ("fourth", "*:30000->82/tcp"),
            ("third", "*:30001->81/tcp"),
        ],
    );
}

#[test]
fn e2e_endpoint_ports_with_shoal() {
    endpoint_flow(Cli::Shoal, "127.0.76.2");
}

#[test]
fn e2e_endpoint_ports_with_docker() {
    if common::docker_cli().is_none() {
        return;
    }
    endpoint_flow(Cli::Docker, "127.0.76.3");
}

/// A task that ignores SIGTERM, so it stops only at the end of its grace period.
const SLOW_STOP: &str = r#"version: "3.8"
services:
  web:
    image: busybox
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    stop_grace_period: 8s
"#;

fn stack_rm_waits_flow(cli: Cli, ip: &str) {
    let d = TestDaemon::start_at(ip);
    d.cli_run(cli, &["swarm", "init", "--advertise-addr", d.ip()])
        .ok();
    let file = d.root().join("slow.yml");
    std::fs::write(&file, SLOW_STOP).expect("write compose file");
    let file = file.to_str().expect("utf-8 path").to_string();
    d.cli_run(cli, &["stack", "deploy", "-d", "-c", &file, "slow"])
        .ok();
    d.wait_replicas(cli, "slow_web", "1/1");
    let filters = serde_json::json!({"label": ["com.docker.stack.namespace=slow"]}).to_string();
    let by_label = format!("/tasks?filters={}", common::urlencode(&filters));

    let mut seen_after_removal = false;
    let rm = std::thread::scope(|s| {
        let rm = s.spawn(|| d.cli_run(cli, &["stack", "rm", "--detach=false", "slow"]));
        // While the command waits: the service is gone, its task still stopping is still
        // selected by the stack's label.
        while !rm.is_finished() {
            let services = d.get_json("/services");
            let tasks = d.get_json(&by_label);
            let listed = tasks.as_array().map_or(0, Vec::len);
            if services.as_array().is_some_and(Vec::is_empty) && listed > 0 {
                seen_after_removal = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        rm.join().expect("stack rm thread")
    });
    assert_eq!(
        rm.ok(),
        "Removing service slow_web\nRemoving network slow_default\n",
        "{rm:?}"
    );
    assert!(
        seen_after_removal,
        "stack rm --detach=false returned before the removed service's task stopped"
    );
    // When it returned, no task of the stack was still running.
    let tasks = d.get_json(&by_label);
    let running: Vec<&serde_json::Value> = tasks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["Status"]["State"] == "running")
        .collect();
    assert!(running.is_empty(), "{running:?}");
    let ls = d.cli_run(cli, &["stack", "ls"]);
    assert!(table(ls.ok()).is_empty(), "{ls:?}");
}

#[test]
fn e2e_endpoint_stack_rm_waits_with_shoal() {
    stack_rm_waits_flow(Cli::Shoal, "127.0.76.4");
}

#[test]
fn e2e_endpoint_stack_rm_waits_with_docker() {
    if common::docker_cli().is_none() {
        return;
    }
    stack_rm_waits_flow(Cli::Docker, "127.0.76.5");
}
