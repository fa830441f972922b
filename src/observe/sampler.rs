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
use crate::model::usage::{ResourceReading, Usage, memory_limit_of, usage_between};

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
    /// The directory of `cpu.stat` (v2, `usage_usec`) or `cpuacct.usage` (v1, ns).
    cpu_dir: PathBuf,
    /// The directory of the memory files (v1), `None` when it is `cpu_dir` (v2, unified).
    /// Only the directories are kept: a file's path is built when it is opened or read by
    /// path (a path per file was 0.75 MB of the operator's heap at 1000 containers).
    memory_dir: Option<PathBuf>,
}

impl CgroupFiles {
    /// Files of a v2 (unified) cgroup directory.
    fn unified(dir: PathBuf) -> Self {
        CgroupFiles {
            cpu_dir: dir,
            memory_dir: None,
        }
    }

    /// Files of a v1 cgroup: the `cpuacct` and `memory` hierarchies' directories.
    fn split(cpu_dir: PathBuf, memory_dir: PathBuf) -> Self {
        CgroupFiles {
            cpu_dir,
            memory_dir: Some(memory_dir),
        }
    }

    /// A v2 (unified) cgroup: one directory, v2 file names and formats.
    fn is_unified(&self) -> bool {
        self.memory_dir.is_none()
    }

    fn memory_file(&self, name: &str) -> PathBuf {
        self.memory_dir.as_ref().unwrap_or(&self.cpu_dir).join(name)
    }

    /// `cpu.stat` or `cpuacct.usage`.
    pub fn cpu(&self) -> PathBuf {
        let name = if self.is_unified() {
            "cpu.stat"
        } else {
            "cpuacct.usage"
        };
        self.cpu_dir.join(name)
    }

    /// `memory.current` or `memory.usage_in_bytes`.
    pub fn memory(&self) -> PathBuf {
        self.memory_file(if self.is_unified() {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        })
    }

    /// `memory.stat`.
    pub fn memory_stat(&self) -> PathBuf {
        self.memory_file("memory.stat")
    }

    /// `memory.max` or `memory.limit_in_bytes`.
    pub fn memory_limit(&self) -> PathBuf {
        self.memory_file(if self.is_unified() {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        })
    }

    /// A reading from the text of the files.
    fn reading(
        &self,
        at: Instant,
        cpu: &str,
        usage: &str,
        stat: &str,
        limit: Option<u64>,
    ) -> Option<ResourceReading> {
        let cpu_total_ns = self.cpu_ns(cpu)?;
        let usage = parse_u64(usage)?;
        Some(reading_of(
            at,
            cpu_total_ns,
            usage,
            self.inactive_file(stat),
            limit,
        ))
    }

    /// The CPU counter, in ns.
    fn cpu_ns(&self, cpu: &str) -> Option<u64> {
        if self.is_unified() {
            parse_v2_cpu_usage_ns(cpu)
        } else {
            parse_u64(cpu)
        }
    }

    /// The reclaimable page cache `memory.stat` shows (0 when it does not say).
    fn inactive_file(&self, stat: &str) -> u64 {
        let key = if self.is_unified() {
            "inactive_file"
        } else {
            "total_inactive_file"
        };
        stat_value(stat, key).unwrap_or(0)
    }
}

/// A reading: the memory in use is the usage counter minus the reclaimable page cache.
fn reading_of(
    at: Instant,
    cpu_total_ns: u64,
    usage: u64,
    inactive_file: u64,
    limit: Option<u64>,
) -> ResourceReading {
    ResourceReading {
        at,
        cpu_total_ns,
        memory_used_bytes: usage.saturating_sub(inactive_file.min(usage)),
        memory_limit_bytes: limit,
    }
}

/// One container's counter files, held open when the descriptor budget allows: a pass reads
/// them from offset 0 (`pread`) with no path lookup, which in the cgroup filesystem costs
/// several times the read itself (measured here: 35 µs to open and read `cpuacct.usage`, 3 µs
/// to read it again; `memory.stat` 72 µs and 17 µs). Over budget, the files are read by path.
#[derive(Debug)]
pub struct LocatedCgroup {
    /// Where the files are.
    pub files: CgroupFiles,
    handles: Option<Handles>,
    /// The memory limit, read again every [`LIMIT_REREAD_EVERY`] readings (it changes only
    /// with `docker update`).
    limit: Option<u64>,
    reads_since_limit: u32,
    /// The reclaimable page cache `memory.stat` last showed, read again every
    /// [`STAT_REREAD_EVERY`] readings, or at once when the decision may depend on it (see
    /// [`CgroupReader::read_located`]).
    inactive_file: Option<u64>,
    reads_since_stat: u32,
}

#[derive(Debug)]
struct Handles {
    cpu: fs::File,
    memory: fs::File,
    memory_stat: fs::File,
}

impl LocatedCgroup {
    /// Whether its files are held open.
    pub fn is_open(&self) -> bool {
        self.handles.is_some()
    }
}

/// How many readings of open files go by between two reads of the memory limit file (5 min
/// at the default 5 s interval). The limit the engine reports in an inspection comes first
/// anyway; this one serves only a container without a limit of its own.
pub const LIMIT_REREAD_EVERY: u32 = 60;

/// How many readings of open files may go by between two reads of `memory.stat` while no
/// decision depends on its page-cache figure. `memory.stat` costs most of a reading: the
/// kernel formats some 35 counters for it (17 µs here, against 3 µs for a counter file).
pub const STAT_REREAD_EVERY: u32 = 6;

/// How many descriptors one container's open files take.
pub const DESCRIPTORS_PER_CONTAINER: usize = 3;

/// The whole file from offset 0 into `buf` (one `pread` for a counter file: a short read is
/// its end), as text.
fn read_from_start<'b>(file: &fs::File, buf: &'b mut Vec<u8>) -> Option<&'b str> {
    use std::os::unix::fs::FileExt;
    buf.clear();
    let mut filled = 0;
    loop {
        if buf.len() < filled + 4096 {
            buf.resize(filled + 8192, 0);
        }
        let n = file.read_at(&mut buf[filled..], filled as u64).ok()?;
        filled += n;
        if n == 0 || filled < buf.len() {
            break;
        }
    }
    buf.truncate(filled);
    std::str::from_utf8(buf).ok()
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
            Some(CgroupFiles::unified(dir))
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
            Some(CgroupFiles::split(cpu_dir, mem_dir))
        }
    }

    /// Reads the counters from files found by [`Self::locate`]; `None` when they are gone
    /// (the container stopped, or its cgroup was recreated elsewhere).
    pub fn read_at(&self, files: &CgroupFiles) -> Option<ResourceReading> {
        let at = Instant::now();
        let cpu = fs::read_to_string(files.cpu()).ok()?;
        let usage = fs::read_to_string(files.memory()).ok()?;
        let stat = fs::read_to_string(files.memory_stat()).unwrap_or_default();
        let limit = fs::read_to_string(files.memory_limit())
            .ok()
            .and_then(|s| parse_limit(&s));
        files.reading(at, &cpu, &usage, &stat, limit)
    }

    /// Opens the files of one container (`open` false: only remembers where they are), and
    /// reads them once.
    pub fn open(&self, files: CgroupFiles, open: bool) -> Option<(LocatedCgroup, ResourceReading)> {
        let handles = open
            .then(|| {
                Some(Handles {
                    cpu: fs::File::open(files.cpu()).ok()?,
                    memory: fs::File::open(files.memory()).ok()?,
                    memory_stat: fs::File::open(files.memory_stat()).ok()?,
                })
            })
            .flatten();
        let mut located = LocatedCgroup {
            files,
            handles,
            limit: None,
            reads_since_limit: LIMIT_REREAD_EVERY,
            inactive_file: None,
            reads_since_stat: 0,
        };
        let reading = self.read_located(&mut located, &mut Vec::new(), Some(0))?;
        Some((located, reading))
    }

    /// Reads the counters of a located container (from its open files when it has them);
    /// `None` when they are gone: a stopped container's cgroup is removed, and a restarted
    /// one gets a new one (its open files then fail to read, or are unlinked).
    ///
    /// `exact_from`: the usage counter (bytes) from which a decision may depend on the memory
    /// in use, so the page cache subtracted from it must be read now (`Some(0)`: always;
    /// `None`: no decision reads memory). Below it, the memory in use (usage minus page cache)
    /// is below it too, whatever the cache: the page-cache figure of an earlier reading, at
    /// most [`STAT_REREAD_EVERY`] readings old, serves.
    pub fn read_located(
        &self,
        located: &mut LocatedCgroup,
        buf: &mut Vec<u8>,
        exact_from: Option<u64>,
    ) -> Option<ResourceReading> {
        let Some(h) = &located.handles else {
            return self.read_at(&located.files);
        };
        let at = Instant::now();
        let cpu_total_ns = located.files.cpu_ns(read_from_start(&h.cpu, buf)?)?;
        let usage = parse_u64(read_from_start(&h.memory, buf)?)?;
        if located.reads_since_limit >= LIMIT_REREAD_EVERY {
            // A removed cgroup's files fail to read (ENODEV); a file unlinked from another
            // filesystem (a test's) still reads, so look at its link count now and then.
            use std::os::unix::fs::MetadataExt;
            if h.cpu.metadata().ok()?.nlink() == 0 {
                return None;
            }
            located.limit = fs::read_to_string(located.files.memory_limit())
                .ok()
                .and_then(|s| parse_limit(&s));
            located.reads_since_limit = 0;
        }
        located.reads_since_limit += 1;
        let stale_ok = located.reads_since_stat < STAT_REREAD_EVERY
            && exact_from.is_none_or(|from| usage < from);
        let inactive_file = match located.inactive_file {
            Some(cached) if stale_ok => {
                located.reads_since_stat += 1;
                cached
            }
            _ => {
                let stat = read_from_start(&h.memory_stat, buf).unwrap_or_default();
                let fresh = located.files.inactive_file(stat);
                located.inactive_file = Some(fresh);
                located.reads_since_stat = 1;
                fresh
            }
        };
        Some(reading_of(
            at,
            cpu_total_ns,
            usage,
            inactive_file,
            located.limit,
        ))
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
    /// Where each container's cgroup files were found (and their open files), so a pass
    /// does not search again.
    located: HashMap<String, LocatedCgroup>,
    /// How many containers' files may be held open ([`DESCRIPTORS_PER_CONTAINER`] each).
    open_budget: usize,
    /// Containers with open files in the pass under way.
    open_in_pass: usize,
    /// The buffer files are read into.
    buf: Vec<u8>,
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
            open_budget: crate::util::fd_limit::cache_budget(crate::util::fd_limit::soft_limit())
                / DESCRIPTORS_PER_CONTAINER,
            open_in_pass: 0,
            buf: Vec::new(),
        }
    }

    /// Sets how many containers' cgroup files may be held open (the others are read by path);
    /// by default what the open-file limit leaves beyond [`crate::util::fd_limit::RESERVED`].
    pub fn with_open_budget(mut self, containers: usize) -> Self {
        self.open_budget = containers;
        self
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

    /// The cgroup reading of `id` from where its files were found last pass (held open), or
    /// found (and opened, within the budget) now.
    fn read_cgroup(
        &mut self,
        id: &str,
        located: &mut HashMap<String, LocatedCgroup>,
        exact_from: Option<u64>,
    ) -> Option<ResourceReading> {
        let cgroups = self.cgroups.as_ref()?;
        if let Some(mut known) = self.located.remove(id)
            && let Some(reading) = cgroups.read_located(&mut known, &mut self.buf, exact_from)
        {
            self.open_in_pass += usize::from(known.is_open());
            located.insert(id.to_owned(), known);
            return Some(reading);
        }
        let files = cgroups.locate(id)?;
        let open = self.open_in_pass < self.open_budget;
        let (found, reading) = cgroups.open(files, open)?;
        self.open_in_pass += usize::from(found.is_open());
        located.insert(id.to_owned(), found);
        Some(reading)
    }

    /// Reads every running container of `containers` (cgroup files first, the engine's stats
    /// API concurrently for the rest) and returns the usage of each one that also had a
    /// reading in the previous pass, sorted by id. Every memory figure is exact (see
    /// [`Self::sample_with`]).
    pub async fn sample(
        &mut self,
        containers: &[ContainerInfo],
        host: &HostInfo,
    ) -> Vec<(String, Usage)> {
        self.sample_with(containers, host, |_| Some(0.0)).await
    }

    /// [`Self::sample`], where `exact_from(container)` is the memory percentage from which a
    /// decision about it depends on its memory in use (its policy's memory threshold; `0`
    /// for a trend, which every sample feeds; `None` when no decision reads its memory).
    /// Below it, the page cache subtracted from its usage counter may be a few readings old
    /// (at most [`STAT_REREAD_EVERY`]): the memory in use is below the threshold whatever
    /// the cache, since the counter itself is.
    pub async fn sample_with(
        &mut self,
        containers: &[ContainerInfo],
        host: &HostInfo,
        exact_from: impl Fn(&ContainerInfo) -> Option<f64>,
    ) -> Vec<(String, Usage)> {
        let running: Vec<&ContainerInfo> = containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect();
        let mut located = HashMap::with_capacity(running.len());
        self.open_in_pass = 0;
        let mut readings: Vec<(String, crate::engine::Result<ResourceReading>)> =
            Vec::with_capacity(running.len());
        let mut from_api: Vec<String> = Vec::new();
        for c in running {
            let exact = exact_from(c).map(|percent| {
                let cgroup_limit = self.previous.get(&c.id).and_then(|p| p.memory_limit_bytes);
                let of = memory_limit_of(&c.limits, cgroup_limit, host);
                (percent.max(0.0) / 100.0 * of as f64) as u64
            });
            let reading = self.read_cgroup(&c.id, &mut located, exact);
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
    async fn open_cgroup_files_read_fresh_counters_within_the_descriptor_budget() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "cgroup.controllers", "cpu memory\n");
        let put = |id: &str, usec: u64, memory: u64| {
            let dir = root.path().join("docker").join(format!("{id}-id"));
            write(&dir, "cpu.stat", &format!("usage_usec {usec}\n"));
            write(&dir, "memory.current", &format!("{memory}\n"));
            write(&dir, "memory.stat", "inactive_file 100\n");
            write(&dir, "memory.max", "1000000\n");
        };
        let h = host(2, GIB);
        let containers = [
            crate::engine::fake::running("aaa", &[]),
            crate::engine::fake::running("bbb", &[]),
        ];
        // (budget, containers whose files are held open)
        for (budget, want_open) in [(0, 0), (1, 1), (5, 2)] {
            put("aaa", 1_000, 10_000);
            put("bbb", 1_000, 10_000);
            let engine = std::sync::Arc::new(crate::engine::fake::FakeEngine::default());
            let mut sampler =
                Sampler::new(engine, Some(CgroupReader::new(root.path()))).with_open_budget(budget);
            assert!(sampler.sample(&containers, &h).await.is_empty());
            let open = sampler.located.values().filter(|l| l.is_open()).count();
            assert_eq!(open, want_open, "budget {budget}");
            // New counter values are read through the open files as through paths.
            put("aaa", 501_000, 20_100);
            put("bbb", 1_001_000, 40_100);
            let usages = sampler.sample(&containers, &h).await;
            let used: Vec<u64> = usages.iter().map(|(_, u)| u.memory_used_bytes).collect();
            assert_eq!(used, [20_000, 40_000], "budget {budget}");
            assert!(
                usages[1].1.cpu_percent > usages[0].1.cpu_percent,
                "budget {budget}"
            );
        }
    }

    #[test]
    fn the_page_cache_figure_is_read_again_when_a_decision_may_depend_on_it() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "cgroup.controllers", "cpu memory\n");
        let dir = root.path().join("docker/aaa-id");
        write(&dir, "cpu.stat", "usage_usec 1\n");
        write(&dir, "memory.max", "max\n");
        let put = |usage: u64, inactive: u64| {
            write(&dir, "memory.current", &format!("{usage}\n"));
            write(&dir, "memory.stat", &format!("inactive_file {inactive}\n"));
        };
        let reader = CgroupReader::new(root.path());
        put(10_000, 4_000);
        let files = reader.locate("aaa-id").expect("located");
        let (mut located, first) = reader.open(files, true).expect("opened");
        assert!(located.is_open());
        assert_eq!(first.memory_used_bytes, 6_000);
        let mut buf = Vec::new();
        let mut used = |located: &mut LocatedCgroup, exact_from| {
            reader
                .read_located(located, &mut buf, exact_from)
                .expect("a reading")
                .memory_used_bytes
        };
        // The cache fell from 4000 to 1000 (it was reclaimed as the process grew).
        put(10_000, 1_000);
        // (exact from, memory in use: with the earlier cache figure, or the fresh one)
        let cases = [
            (None, 6_000),         // nothing reads memory: the earlier figure
            (Some(20_000), 6_000), // usage below the threshold: cannot cross it
            (Some(10_000), 9_000), // usage at the threshold: read now
            (Some(0), 9_000),      // a trend: every reading
        ];
        for (exact_from, want) in cases {
            put(10_000, 4_000);
            located.inactive_file = None;
            used(&mut located, None);
            put(10_000, 1_000);
            assert_eq!(
                used(&mut located, exact_from),
                want,
                "exact from {exact_from:?}"
            );
        }
        // However little depends on it, the figure is at most STAT_REREAD_EVERY readings old.
        put(10_000, 4_000);
        located.inactive_file = None;
        used(&mut located, None);
        put(10_000, 1_000);
        let seen: Vec<u64> = (0..STAT_REREAD_EVERY)
            .map(|_| used(&mut located, None))
            .collect();
        let mut want = vec![6_000; STAT_REREAD_EVERY as usize - 1];
        want.push(9_000);
        assert_eq!(seen, want);
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
        let found = &sampler.located.get("aaa-id").expect("located").files;
        assert_eq!(found.cpu(), cgroupfs.join("cpu.stat"));
        put(&cgroupfs, 2_000);
        assert_eq!(sampler.sample(std::slice::from_ref(&c), &h).await.len(), 1);

        // Its cgroup moved (another driver layout): found again, not lost.
        fs::remove_dir_all(&cgroupfs).unwrap();
        let systemd = root.path().join("system.slice/docker-aaa-id.scope");
        put(&systemd, 3_000);
        // (In a real cgroup hierarchy the removed files fail to read at once; here they
        // still read until the next look at their link count.)
        for _ in 0..LIMIT_REREAD_EVERY {
            assert_eq!(sampler.sample(std::slice::from_ref(&c), &h).await.len(), 1);
        }
        assert_eq!(
            sampler.located["aaa-id"].files.cpu(),
            systemd.join("cpu.stat")
        );
        // Stopped: forgotten.
        assert!(sampler.sample(&[], &h).await.is_empty());
        assert!(sampler.located.is_empty());
    }
}
