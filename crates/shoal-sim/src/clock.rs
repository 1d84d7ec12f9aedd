//! Simulated time: [`SimClock`] gives the wall-clock `now` handed to the orchestrators and the
//! agents, and [`Journal`] records what happened, stamped with simulated time.
//!
//! ```text
//!  tokio::time (paused) ── elapsed ──► SimClock::now() = max(Utc::now(), start wall + elapsed)
//!                                                         │
//!            Manager::pass(now), agent status timestamps ◄┘
//! ```
//!
//! The tokio clock is paused, so it jumps ahead whenever every task waits on a timer; restart
//! delays, update monitors and Raft timeouts pass in no real time. Some store code stamps objects
//! with `Utc::now()` itself (creation times, manager-set statuses); taking the maximum keeps the
//! simulated `now` from ever being earlier than those stamps, so a gate computed from one of them
//! always opens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The simulation's clock: tokio's paused time mapped onto the wall clock.
#[derive(Clone, Debug)]
pub struct SimClock {
    wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl SimClock {
    /// A clock starting now (call inside the runtime).
    pub fn new() -> SimClock {
        SimClock {
            wall: Utc::now(),
            start: tokio::time::Instant::now(),
        }
    }

    /// Simulated time since the start of the run.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The wall-clock time the simulation is at.
    pub fn now(&self) -> DateTime<Utc> {
        let sim = self.wall + TimeDelta::from_std(self.elapsed()).unwrap_or(TimeDelta::zero());
        sim.max(Utc::now())
    }
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::new()
    }
}

/// What happened in a run, one line per event, for the failure report. With `SHOAL_SIM_TRACE`
/// set, lines are also printed as they happen.
#[derive(Clone)]
pub struct Journal {
    clock: SimClock,
    lines: Arc<Mutex<Vec<String>>>,
    echo: bool,
}

impl Journal {
    /// An empty journal stamped by `clock`.
    pub fn new(clock: SimClock) -> Journal {
        Journal {
            clock,
            lines: Arc::default(),
            echo: std::env::var_os("SHOAL_SIM_TRACE").is_some(),
        }
    }

    /// Records one event.
    pub fn note(&self, what: impl AsRef<str>) {
        let e = self.clock.elapsed();
        let line = format!(
            "[{:>4}.{:03}s] {}",
            e.as_secs(),
            e.subsec_millis(),
            what.as_ref()
        );
        if self.echo {
            eprintln!("{line}");
        }
        if let Ok(mut l) = self.lines.lock() {
            l.push(line);
        }
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l[l.len().saturating_sub(n)..].to_vec())
            .unwrap_or_default()
    }

    /// Number of lines recorded.
    pub fn len(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
