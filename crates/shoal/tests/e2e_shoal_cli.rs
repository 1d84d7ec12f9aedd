//! The one-machine swarm through the `shoal` CLI, and its output next to docker's.

mod common;

use common::{flow, Cli};

#[test]
fn e2e_shoal_cli_one_machine_swarm() {
    flow::swarm_flow(Cli::Shoal, 6011);
}

/// A table with the time in `CURRENT STATE` ("Running 3 seconds ago") cut to the state, so two
/// listings taken moments apart compare equal.
fn without_ago(out: &str) -> (String, Vec<Vec<String>>) {
    let head = common::header(out);
    let state_col = head.split(' ').position(|c| c == "CURRENT").map(|i| i - 1); // "DESIRED STATE" is two words
    let rows = common::table(out)
        .into_iter()
        .map(|mut r| {
            if let Some(i) = state_col.filter(|i| *i < r.len()) {
                r[i] = r[i].split(' ').next().unwrap_or("").to_string();
            }
            r
        })
        .collect();
    (head, rows)
}

#[test]
fn e2e_shoal_output_matches_docker() {
    if common::docker_cli().is_none() {
        return;
    }
    let d = common::TestDaemon::start();
    flow::init(&d, Cli::Docker);
    flow::create(
        &d,
        Cli::Docker,
        &[
            "--name",
            "web",
            "--replicas",
            "3",
            "busybox",
            "sleep",
            "6021",
        ],
    );
    flow::create(
        &d,
        Cli::Shoal,
        &[
            "--name",
            "api",
            "--replicas",
            "2",
            "--env",
            "X=1",
            "--label",
            "tier=back",
            "busybox",
            "sleep",
            "6022",
        ],
    );
    flow::create(
        &d,
        Cli::Docker,
        &[
            "--name",
            "talk",
            "busybox",
            "sh",
            "-c",
            "echo one; echo two >&2; exec sleep 6023",
        ],
    );
    d.wait_replicas(Cli::Docker, "web", "3/3");
    d.wait_replicas(Cli::Docker, "api", "2/2");
    d.wait_replicas(Cli::Docker, "talk", "1/1");
    common::wait_for("talk's output", common::WAIT, || {
        let out = d.docker(&["service", "logs", "talk"]);
        if out.stdout.lines().count() + out.stderr.lines().count() == 2 {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });

    // Same text, byte for byte.
    for args in [
        &["service", "ls"][..],
        &["service", "ls", "-q"],
        &["service", "ls", "--filter", "name=api"],
        &[
            "service",
            "ls",
            "--format",
            "{{.Name}}: {{.Replicas}} {{.Image}}",
        ],
        &["node", "ls"],
        &["node", "ls", "-q"],
        &["service", "ps", "-q", "web"],
        &["service", "inspect", "--pretty", "api"],
        &[
            "service",
            "inspect",
            "--format",
            "{{.Spec.Name}} {{json .Spec.Labels}}",
            "api",
        ],
        &["node", "inspect", "--pretty", "self"],
        &["service", "logs", "talk"],
        &["service", "logs", "--raw", "talk"],
        &["service", "logs", "--tail", "1", "--no-task-ids", "talk"],
        // Errors: same message, same exit code.
        &["service", "inspect", "nope"],
        &["node", "inspect", "nope"],
        &["service", "rm", "nope"],
        &["service", "scale", "nope=2"],
        &["service", "logs", "nope"],
        &["service", "ps", "nope"],
        &["service", "update", "--env-add", "A=1", "nope"],
        &["node", "update", "--availability", "drain", "nope"],
        &["swarm", "leave"],
        &["swarm", "init"],
        &[
            "service", "create", "--name", "web", "busybox", "sleep", "6024",
        ],
        &[
            "service",
            "create",
            "--constraint",
            "node.hostname",
            "busybox",
            "sleep",
            "6024",
        ],
    ] {
        let want = d.docker(args);
        let got = d.shoal(args);
        assert_eq!(
            got.code, want.code,
            "{args:?}: docker {want:?}\nshoal {got:?}"
        );
        assert_eq!(got.stdout, want.stdout, "{args:?}: stdout differs");
        assert_eq!(got.stderr, want.stderr, "{args:?}: stderr differs");
    }

    // Same tables, up to how long ago a task changed state.
    for args in [
        &["service", "ps", "web"][..],
        &["service", "ps", "api", "talk"],
        &["service", "ps", "--no-trunc", "web"],
        &["service", "ps", "--filter", "desired-state=running", "web"],
    ] {
        let want = d.docker(args);
        let got = d.shoal(args);
        assert_eq!(
            without_ago(got.ok()),
            without_ago(want.ok()),
            "{args:?}:\ndocker:\n{}\nshoal:\n{}",
            want.stdout,
            got.stdout
        );
    }

    // Same JSON (as values: docker re-marshals its Go structs).
    for name in ["web", "api"] {
        let want: serde_json::Value =
            serde_json::from_str(d.docker(&["service", "inspect", name]).ok()).expect("json");
        let got: serde_json::Value =
            serde_json::from_str(d.shoal(&["service", "inspect", name]).ok()).expect("json");
        assert_eq!(got, want, "service inspect {name}");
    }
}
