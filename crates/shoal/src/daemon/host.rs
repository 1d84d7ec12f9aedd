//! Facts about the machine the daemon runs on: hostname, CPUs, memory, kernel, OS.

use shoal_api::engine;
use std::collections::HashMap;

/// What the daemon reports about its host.
#[derive(Clone, Debug)]
pub struct Host {
    pub hostname: String,
    pub ncpu: i64,
    pub mem_total: i64,
    pub kernel: String,
    pub os: String,
    pub arch: String,
}

impl Host {
    pub fn probe() -> Host {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1);
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<i64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(0);
        let uts = nix::sys::utsname::uname().ok();
        let kernel = uts
            .as_ref()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("PRETTY_NAME=")).map(|l| {
                    l.trim_start_matches("PRETTY_NAME=")
                        .trim_matches('"')
                        .to_string()
                })
            })
            .unwrap_or_else(|| "Linux".into());
        Host {
            hostname,
            ncpu,
            mem_total,
            kernel,
            os,
            arch: std::env::consts::ARCH.to_string(),
        }
    }

    /// The host with `cpus` CPUs and `memory_mb` MB of memory reported instead of the probed
    /// figures (a `shoal machine` sized at create time); `None` keeps the probed one.
    pub fn with_resources(mut self, cpus: Option<u32>, memory_mb: Option<u64>) -> Host {
        if let Some(c) = cpus {
            self.ncpu = i64::from(c);
        }
        if let Some(m) = memory_mb.and_then(|m| i64::try_from(m.saturating_mul(1024 * 1024)).ok()) {
            self.mem_total = m;
        }
        self
    }

    /// The node description an agent registers with.
    pub fn node_description(
        &self,
        engine_labels: HashMap<String, String>,
    ) -> engine::NodeDescription {
        engine::NodeDescription {
            hostname: Some(self.hostname.clone()),
            platform: Some(engine::Platform {
                architecture: Some(self.arch.clone()),
                os: Some("linux".into()),
            }),
            resources: Some(engine::ResourceObject {
                nano_cpus: Some(self.ncpu * 1_000_000_000),
                memory_bytes: Some(self.mem_total),
                generic_resources: None,
            }),
            engine: Some(engine::EngineDescription {
                engine_version: Some(crate::VERSION.to_string()),
                labels: Some(engine_labels),
                plugins: Some(vec![]),
            }),
            tls_info: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_given_replace_the_probed_ones() {
        let probed = Host::probe();
        let h = probed.clone().with_resources(Some(3), Some(512));
        assert_eq!((h.ncpu, h.mem_total), (3, 512 * 1024 * 1024));
        let d = h.node_description(HashMap::new());
        let r = d.resources.unwrap();
        assert_eq!(r.nano_cpus, Some(3_000_000_000));
        assert_eq!(r.memory_bytes, Some(512 * 1024 * 1024));
        let same = probed.clone().with_resources(None, None);
        assert_eq!((same.ncpu, same.mem_total), (probed.ncpu, probed.mem_total));
    }
}
