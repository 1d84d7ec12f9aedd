//! The one-machine swarm through the real `docker` CLI (skipped when it is not installed; set
//! `SHOAL_E2E_REQUIRE_DOCKER=1` to make that a failure).

mod common;

use common::{docker_cli, flow, Cli};

#[test]
fn e2e_docker_cli_one_machine_swarm() {
    if docker_cli().is_none() {
        return;
    }
    flow::swarm_flow(Cli::Docker, 6001);
}
