//! Runs the control-plane simulation over a few seeds per topology.
//!
//! - default: a handful of seeds (fast enough for every `cargo test`)
//! - `SHOAL_SIM_SEEDS=200`: seeds 0..200 for each topology
//! - `SHOAL_SIM_SEED=17`: exactly that seed (with `SHOAL_SIM_MANAGERS=3` or `5` to pick one
//!   topology); a failure prints the seed and the line to rerun it
//! - `SHOAL_SIM_PROFILE=hostile`: [`SimConfig::hostile`] instead of [`SimConfig::new`]
//!
//! Seeds of one topology run on one thread each after the other; the topologies run in
//! parallel as separate tests.

use shoal_sim::{run, SimConfig};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn seeds(default: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    if let Some(s) = env_u64("SHOAL_SIM_SEED") {
        return vec![s];
    }
    match env_u64("SHOAL_SIM_SEEDS") {
        Some(n) => (0..n).collect(),
        None => default.collect(),
    }
}

fn run_seeds(managers: u64, default: std::ops::RangeInclusive<u64>) {
    if env_u64("SHOAL_SIM_MANAGERS").is_some_and(|m| m != managers) {
        return;
    }
    let cfg = match std::env::var("SHOAL_SIM_PROFILE").as_deref() {
        Ok("hostile") => SimConfig::hostile(managers),
        _ => SimConfig::new(managers),
    };
    let mut failures = Vec::new();
    let seeds = seeds(default);
    let start = std::time::Instant::now();
    for seed in &seeds {
        match run(*seed, &cfg) {
            Ok(report) => println!("{report}"),
            Err(f) => {
                eprintln!("{f}");
                failures.push(format!("seed {seed}: {}", f.reason));
            }
        }
    }
    println!(
        "{} seeds with {managers} managers in {:.1?}",
        seeds.len(),
        start.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed with {managers} managers (rerun one with \
         SHOAL_SIM_SEED=<seed> {}):\n{}",
        failures.len(),
        seeds.len(),
        cfg.env(),
        failures.join("\n")
    );
}

#[test]
fn three_managers_under_faults() {
    run_seeds(3, 1..=4);
}

#[test]
fn five_managers_under_faults() {
    run_seeds(5, 1..=2);
}

/// Without faults the harness itself must be quiet: elections, writes, orchestration and agents
/// converge (also shows `run_paused` inside a paused tokio test).
#[tokio::test(start_paused = true)]
async fn without_faults_everything_converges() {
    let mut cfg = SimConfig::new(3);
    cfg.chaos = std::time::Duration::from_secs(8);
    cfg.crashes = false;
    cfg.partitions = false;
    cfg.network_faults = false;
    cfg.worker_outages = false;
    let report = shoal_sim::run_paused(7, cfg)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    assert_eq!(report.crashes, 0);
    assert!(report.writes.0 > 5, "writes were acknowledged: {report}");
    assert!(report.objects.1 > 0, "tasks ran: {report}");
}
