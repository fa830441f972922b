//! Resource sampling: CPU and memory usage of many containers at once, as percentages of their limits.
//!
//! The original system read `docker stats` one container at a time (1-2 s each)
//! and reported CPU per core, so one busy core on an 8-core host read as
//! "critical". Here:
//!
//! - a reading is a pair of *cumulative* counters ([`ResourceReading`]); usage is
//!   the difference between two readings of the same container
//!   ([`usage_between`], a pure function), so no call ever waits for the engine
//!   to measure an interval;
//! - CPU % is relative to what the container may use: its own limit
//!   (`--cpus`, or CFS quota/period) or, when unlimited, all host cores. 100 %
//!   means "the whole limit is used", never "one core is busy";
//! - readings come straight from the container's cgroup files when they are
//!   visible ([`CgroupReader`], microseconds each) and otherwise from the
//!   engine's one-shot stats call; [`Sampler`] reads many containers
//!   concurrently, with a bound.
//!
//! # Cgroup files when HemoStat runs in a container
//!
//! The operator's own container does not see other containers' cgroups under its
//! `/sys/fs/cgroup` (it has its own cgroup namespace). Mount the host's hierarchy
//! read-only and point the reader at it:
//!
//! ```text
//! docker run -v /var/run/docker.sock:/var/run/docker.sock \
//!            -v /sys/fs/cgroup:/host/sys/fs/cgroup:ro  hemostat run --cgroup-root /host/sys/fs/cgroup
//! ```
//!
//! i.e. `CgroupReader::new("/host/sys/fs/cgroup")`. When the files are not there
//! (another cgroup driver layout, rootless Docker, a remote engine) the sampler
//! falls back to [`ContainerEngine::read_resources`] without configuration.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::stream::{self, StreamExt};

use crate::engine::ContainerEngine;
use crate::model::container::{ContainerInfo, ContainerState, HostInfo};
/// Kept for `controller::sample`'s signatures until they name `crate::model::usage::Usage`.
pub use crate::model::usage::Usage;
use crate::model::usage::{ResourceReading, usage_between};

/// Where the host's cgroup hierarchy is usually mounted.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Above this a memory "limit" means unlimited (cgroup v1 reports ~2^63 rounded to a page).
const UNLIMITED_MEMORY: u64 = 1 << 62;

/// Reads a container's counters straight from its cgroup files (v1 or v2; cgroupfs or
/// systemd layout) under a configurable root.
#[derive(Clone, Debug)]
pub struct CgroupReader {
    root: PathBuf,
    /// Whether `root` is a v2 (unified) hierarchy, found out on the first read.
    unified: std::sync::Arc<std::sync::OnceLock<bool>>,
}

impl Default for CgroupReader {
    fn default() -> Self {
        CgroupReader::new(DEFAULT_CGROUP_ROOT)
    }
}

/// Where one container's counters are: found once ([`CgroupReader::locate`]), then read every
/// pass without searching again ([`CgroupReader::read_at`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupFiles {
    /// `cpu.stat` (v2, `usage_usec`) or `cpuacct.usage` (v1, ns).
    cpu: PathBuf,
    /// `memory.current` or `memory.usage_in_bytes`.
    memory: PathBuf,
    /// `memory.stat`.
    memory_stat: PathBuf,
    /// `memory.max` or `memory.limit_in_bytes`.
    memory_limit: PathBuf,
    unified: bool,
}

impl CgroupReader {
    /// A reader of the hierarchy mounted at `root` (e.g. `/host/sys/fs/cgroup`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupReader {
            root: root.into(),
            unified: Default::default(),
        }
    }

    /// The root this reader looks under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The container's counters, or `None` when its cgroup files are not visible here.
    pub fn read(&self, container_id: &str) -> Option<ResourceReading> {
        self.read_at(&self.locate(container_id)?)
    }

    /// Finds the container's cgroup files, `None` when they are not visible here.
    pub fn locate(&self, id: &str) -> Option<CgroupFiles> {
        let unified = *self
            .unified
            .get_or_init(|| self.root.join("cgroup.controllers").exists());
        if unified {
            let dir = Self::layouts(id)
                .into_iter()
                .map(|l| self.root.join(l))
                .find(|d| d.join("cpu.stat").is_file())?;
            Some(CgroupFiles {
                cpu: dir.join("cpu.stat"),
                memory: dir.join("memory.current"),
                memory_stat: dir.join("memory.stat"),
                memory_limit: dir.join("memory.max"),
                unified,
            })
        } else {
            let find = |controllers: &[&str], file: &str| {
                controllers.iter().find_map(|c| {
                    Self::layouts(id)
                        .into_iter()
                        .map(|l| self.root.join(c).join(l))
                        .find(|d| d.join(file).is_file())
                })
            };
            let cpu_dir = find(&["cpuacct", "cpu,cpuacct"], "cpuacct.usage")?;
            let mem_dir = find(&["memory"], "memory.usage_in_bytes")?;
            Some(CgroupFiles {
                cpu: cpu_dir.join("cpuacct.usage"),
                memory: mem_dir.join("memory.usage_in_bytes"),
                memory_stat: mem_dir.join("memory.stat"),
                memory_limit: mem_dir.join("memory.limit_in_bytes"),
                unified,
            })
        }
    }

    /// Reads the counters from files found by [`Self::locate`]; `None` when they are gone
    /// (the container stopped, or its cgroup was recreated elsewhere).
    pub fn read_at(&self, files: &CgroupFiles) -> Option<ResourceReading> {
        let at = Instant::now();
        let cpu = fs::read_to_string(&files.cpu).ok()?;
        let cpu_total_ns = if files.unified {
            parse_v2_cpu_usage_ns(&cpu)?
        } else {
            parse_u64(&cpu)?
        };
        let usage = parse_u64(&fs::read_to_string(&files.memory).ok()?)?;
        let stat = fs::read_to_string(&files.memory_stat).unwrap_or_default();
        let inactive = if files.unified {
            "inactive_file"
        } else {
            "total_inactive_file"
        };
        let cache = stat_value(&stat, inactive).unwrap_or(0);
        let limit = fs::read_to_string(&files.memory_limit)
            .ok()
            .and_then(|s| parse_limit(&s));
        Some(ResourceReading {
            at,
            cpu_total_ns,
            memory_used_bytes: usage.saturating_sub(cache.min(usage)),
            memory_limit_bytes: limit,
        })
    }

    /// Container directories relative to one hierarchy: cgroupfs, then systemd driver.
    fn layouts(id: &str) -> [PathBuf; 2] {
        [
            PathBuf::from("docker").join(id),
            PathBuf::from("system.slice").join(format!("docker-{id}.scope")),
        ]
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// `key value` lines (`memory.stat`, `cpu.stat`).
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| parse_u64(v)).flatten()
    })
}

/// cgroup v2 `cpu.stat` gives `usage_usec`.
fn parse_v2_cpu_usage_ns(cpu_stat: &str) -> Option<u64> {
    stat_value(cpu_stat, "usage_usec").map(|us| us.saturating_mul(1000))
}

/// `memory.max` (`max` = unlimited) or `memory.limit_in_bytes` (≈2^63 = unlimited).
fn parse_limit(s: &str) -> Option<u64> {
    match s.trim() {
        "max" => None,
        v => parse_u64(v).filter(|l| *l > 0 && *l < UNLIMITED_MEMORY),
    }
}

/// How many containers are read at once when the engine's stats API is used. Each one-shot
/// call mostly waits for the engine's stats collector (about a second), so a pass takes about
/// ⌈containers / this⌉ seconds: 256 keeps a pass over a few hundred containers near one tick,
/// with a bounded number of connections to the engine.
pub const DEFAULT_CONCURRENCY: usize = 256;

/// Samples many containers per pass and turns consecutive readings into [`Usage`].
///
/// Keeps the previous reading of each container, so a container's first pass yields
/// nothing; containers that are gone, or no longer running, are forgotten.
pub struct Sampler<D> {
    docker: D,
    /// `None` when cgroup files are known not to be visible: always use the engine.
    cgroups: Option<CgroupReader>,
    concurrency: usize,
    previous: HashMap<String, ResourceReading>,
    /// Where each container's cgroup files were found, so a pass does not search again.
    located: HashMap<String, CgroupFiles>,
}

impl<D: ContainerEngine> Sampler<D> {
    /// A sampler that prefers `cgroups` (when given and readable) and falls back to `docker`.
    pub fn new(docker: D, cgroups: Option<CgroupReader>) -> Self {
        Sampler {
            docker,
            cgroups,
            concurrency: DEFAULT_CONCURRENCY,
            previous: HashMap::new(),
            located: HashMap::new(),
        }
    }

    /// Sets how many containers are read at once (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// One reading of one container: cgroup files if visible, else the engine's one-shot stats.
    pub async fn read(&self, id: &str) -> crate::engine::Result<ResourceReading> {
        if let Some(reading) = self.cgroups.as_ref().and_then(|c| c.read(id)) {
            return Ok(reading);
        }
        self.docker.read_resources(id).await
    }

    /// A named future (not a closure's async block) so the stream above stays `Send` for any
    /// lifetime, which `tokio::spawn` of a sampling task requires.
    async fn read_for(&self, id: String) -> (String, crate::engine::Result<ResourceReading>) {
        let reading = self.docker.read_resources(&id).await;
        (id, reading)
    }

    /// The cgroup reading of `id` from where its files were found last pass, or found now.
    fn read_cgroup(
        &self,
        cgroups: &CgroupReader,
        id: &str,
        located: &mut HashMap<String, CgroupFiles>,
    ) -> Option<ResourceReading> {
        if let Some(files) = self.located.get(id)
            && let Some(reading) = cgroups.read_at(files)
        {
            located.insert(id.to_owned(), files.clone());
            return Some(reading);
        }
        let files = cgroups.locate(id)?;
        let reading = cgroups.read_at(&files)?;
        located.insert(id.to_owned(), files);
        Some(reading)
    }

    /// Reads every running container of `containers` (cgroup files first, the engine's stats
    /// API concurrently for the rest) and returns the usage of each one that also had a
    /// reading in the previous pass, sorted by id.
    pub async fn sample(
        &mut self,
        containers: &[ContainerInfo],
        host: &HostInfo,
    ) -> Vec<(String, Usage)> {
        let running: Vec<&ContainerInfo> = containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect();
        let mut located = HashMap::with_capacity(running.len());
        let mut readings: Vec<(String, crate::engine::Result<ResourceReading>)> =
            Vec::with_capacity(running.len());
        let mut from_api: Vec<String> = Vec::new();
        for c in running {
            let reading = self
                .cgroups
                .as_ref()
                .and_then(|cg| self.read_cgroup(cg, &c.id, &mut located));
            match reading {
                Some(r) => readings.push((c.id.clone(), Ok(r))),
                None => from_api.push(c.id.clone()),
            }
        }
        if !from_api.is_empty() {
            let fetched: Vec<_> = stream::iter(from_api)
                .map(|c| self.read_for(c))
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            readings.extend(fetched);
        }
        self.located = located;

        let by_id: HashMap<&str, &ContainerInfo> =
            containers.iter().map(|c| (c.id.as_str(), c)).collect();
        let mut previous = HashMap::with_capacity(readings.len());
        let mut usages = Vec::with_capacity(readings.len());
        for (id, reading) in readings {
            let reading = match reading {
                Ok(r) => r,
                Err(e) => {
                    if !e.is_not_found() {
                        tracing::debug!(container = %id, error = %e, "no resource reading");
                    }
                    continue;
                }
            };
            if let Some(prev) = self.previous.get(&id)
                && let Some(container) = by_id.get(id.as_str())
                && let Some(usage) = usage_between(prev, &reading, &container.limits, host)
            {
                usages.push((id.clone(), usage));
            }
            previous.insert(id, reading);
        }
        // Only what was read this pass survives: gone and stopped containers are forgotten.
        self.previous = previous;
        usages.sort_by(|a, b| a.0.cmp(&b.0));
        usages
    }

    /// How many containers have a previous reading.
    pub fn tracked(&self) -> usize {
        self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::container::ResourceLimits;

    const GIB: u64 = 1 << 30;

    fn host(cpus: u32, memory_bytes: u64) -> HostInfo {
        HostInfo {
            engine_id: "engine".into(),
            cpus,
            memory_bytes,
            server_version: "20.10".into(),
            cgroup_version: "1".into(),
            cgroup_driver: "cgroupfs".into(),
        }
    }

    fn reading(at: Instant, cpu_total_ns: u64, memory_used_bytes: u64) -> ResourceReading {
        ResourceReading {
            at,
            cpu_total_ns,
            memory_used_bytes,
            memory_limit_bytes: None,
        }
    }

    fn cpus(n: f64) -> ResourceLimits {
        ResourceLimits {
            nano_cpus: Some((n * 1e9) as i64),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_percent_is_relative_to_the_limit_or_all_host_cores() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let two_s = 2_000_000_000u64;
        let quota = ResourceLimits {
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            ..Default::default()
        };
        // (what, cpu ns used over 2 s, limits, host cores, expected %)
        let cases = [
            (
                "busy one core, 8-core unlimited host",
                two_s,
                ResourceLimits::default(),
                8,
                12.5,
            ),
            (
                "busy one core, 2-core unlimited host",
                two_s,
                ResourceLimits::default(),
                2,
                50.0,
            ),
            ("limit 0.5 CPU fully used", two_s / 2, cpus(0.5), 8, 100.0),
            ("limit 0.5 CPU half used", two_s / 4, cpus(0.5), 8, 50.0),
            ("quota 1.5 CPU fully used", two_s * 3 / 2, quota, 8, 100.0),
            (
                "limit above host cores is capped",
                two_s * 2,
                cpus(4.0),
                2,
                100.0,
            ),
            ("idle", 0, cpus(1.0), 8, 0.0),
        ];
        for (what, used, limits, cores, want) in cases {
            let usage = usage_between(
                &reading(t0, 1_000, 0),
                &reading(t1, 1_000 + used, 0),
                &limits,
                &host(cores, 8 * GIB),
            )
            .expect(what);
            assert!(
                (usage.cpu_percent - want).abs() < 1e-9,
                "{what}: got {} want {want}",
                usage.cpu_percent
            );
        }
    }

    #[test]
    fn memory_percent_is_of_the_limit_when_smaller_than_host_memory() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let limited = |bytes| ResourceLimits {
            memory_bytes: Some(bytes),
            ..Default::default()
        };
        // (what, used, limits, kernel-reported limit, expected %, expected denominator)
        let cases = [
            (
                "limit 1 GiB, half used",
                GIB / 2,
                limited(GIB),
                None,
                50.0,
                GIB,
            ),
            (
                "unlimited: of host memory",
                2 * GIB,
                ResourceLimits::default(),
                None,
                25.0,
                8 * GIB,
            ),
            (
                "limit above host memory: of host memory",
                4 * GIB,
                limited(16 * GIB),
                None,
                50.0,
                8 * GIB,
            ),
            (
                "limit only known to the kernel",
                GIB / 4,
                ResourceLimits::default(),
                Some(GIB),
                25.0,
                GIB,
            ),
        ];
        for (what, used, limits, kernel_limit, want, denominator) in cases {
            let now = ResourceReading {
                memory_limit_bytes: kernel_limit,
                ..reading(t1, 10, used)
            };
            let usage =
                usage_between(&reading(t0, 0, 0), &now, &limits, &host(8, 8 * GIB)).expect(what);
            assert!(
                (usage.memory_percent - want).abs() < 1e-9,
                "{what}: {usage:?}"
            );
            assert_eq!(usage.memory_limit_bytes, denominator, "{what}");
            assert_eq!(usage.memory_used_bytes, used, "{what}");
        }
    }

    #[test]
    fn no_usage_on_counter_reset_or_empty_interval() {
        let t0 = Instant::now();
        let h = host(2, GIB);
        let none = ResourceLimits::default();
        let reset = usage_between(
            &reading(t0, 5_000, 0),
            &reading(t0 + Duration::from_secs(1), 10, 0),
            &none,
            &h,
        );
        assert_eq!(
            reset, None,
            "counter went backwards: the container restarted"
        );
        let same_instant = usage_between(&reading(t0, 0, 0), &reading(t0, 10, 0), &none, &h);
        assert_eq!(same_instant, None);
        let backwards = usage_between(
            &reading(t0 + Duration::from_secs(1), 0, 0),
            &reading(t0, 10, 0),
            &none,
            &h,
        );
        assert_eq!(backwards, None);
    }

    #[test]
    fn limits_parse_max_and_huge_values_as_unlimited() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("8388608\n"), Some(8_388_608));
        assert_eq!(parse_limit("garbage"), None);
    }

    fn write(dir: &Path, file: &str, content: &str) {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join(file), content).expect("write");
    }

    #[test]
    fn reads_cgroup_v2_files_in_both_driver_layouts() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "cgroup.controllers", "cpu memory\n");
        let layouts = [
            ("aaa", root.path().join("docker/aaa"), Some(64 << 20)),
            (
                "bbb",
                root.path().join("system.slice/docker-bbb.scope"),
                None,
            ),
        ];
        for (id, dir, limit) in &layouts {
            write(
                dir,
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
            );
            write(dir, "memory.current", "10000\n");
            write(
                dir,
                "memory.stat",
                "anon 6000\nfile 4000\nactive_file 1000\ninactive_file 3000\n",
            );
            let max = limit.map_or("max\n".to_string(), |l: u64| format!("{l}\n"));
            write(dir, "memory.max", &max);
            let r = CgroupReader::new(root.path()).read(id).expect(id);
            assert_eq!(r.cpu_total_ns, 1_500_000, "{id}");
            assert_eq!(r.memory_used_bytes, 7000, "{id}");
            assert_eq!(r.memory_limit_bytes, *limit, "{id}");
        }
        assert_eq!(CgroupReader::new(root.path()).read("ccc"), None);
    }

    #[test]
    fn reads_cgroup_v1_files_in_the_systemd_layout() {
        let root = tempfile::tempdir().expect("tempdir");
        let scope = "system.slice/docker-ddd.scope";
        write(
            &root.path().join("cpu,cpuacct").join(scope),
            "cpuacct.usage",
            "123456789\n",
        );
        let mem = root.path().join("memory").join(scope);
        write(&mem, "memory.usage_in_bytes", "50000\n");
        write(
            &mem,
            "memory.stat",
            "cache 20000\ninactive_file 1\ntotal_inactive_file 15000\n",
        );
        write(&mem, "memory.limit_in_bytes", "9223372036854771712\n");
        let r = CgroupReader::new(root.path()).read("ddd").expect("reading");
        assert_eq!(r.cpu_total_ns, 123_456_789);
        assert_eq!(r.memory_used_bytes, 35_000);
        assert_eq!(r.memory_limit_bytes, None);
    }

    #[tokio::test]
    async fn cgroup_files_are_located_once_and_again_when_they_move() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "cgroup.controllers", "cpu memory\n");
        let put = |dir: &Path, usec: u64| {
            write(dir, "cpu.stat", &format!("usage_usec {usec}\n"));
            write(dir, "memory.current", "10000\n");
            write(dir, "memory.stat", "inactive_file 0\n");
            write(dir, "memory.max", "max\n");
        };
        let cgroupfs = root.path().join("docker/aaa-id");
        put(&cgroupfs, 1_000);
        let engine = std::sync::Arc::new(crate::engine::fake::FakeEngine::default());
        let mut sampler = Sampler::new(engine, Some(CgroupReader::new(root.path())));
        let c = crate::engine::fake::running("aaa", &[]);
        let h = host(2, GIB);
        assert!(
            sampler
                .sample(std::slice::from_ref(&c), &h)
                .await
                .is_empty()
        );
        let found = sampler.located.get("aaa-id").cloned().expect("located");
        assert_eq!(found.cpu, cgroupfs.join("cpu.stat"));
        put(&cgroupfs, 2_000);
        assert_eq!(sampler.sample(std::slice::from_ref(&c), &h).await.len(), 1);

        // Its cgroup moved (another driver layout): found again, not lost.
        fs::remove_dir_all(&cgroupfs).unwrap();
        let systemd = root.path().join("system.slice/docker-aaa-id.scope");
        put(&systemd, 3_000);
        assert_eq!(sampler.sample(std::slice::from_ref(&c), &h).await.len(), 1);
        assert_eq!(sampler.located["aaa-id"].cpu, systemd.join("cpu.stat"));
        // Stopped: forgotten.
        assert!(sampler.sample(&[], &h).await.is_empty());
        assert!(sampler.located.is_empty());
    }
}
