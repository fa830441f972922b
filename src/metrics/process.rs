//! The standard `process_*` metrics of this process, read from `/proc/self` at every scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads `/proc/self/{stat,limits,fd}`; on a system without `/proc` it exposes nothing.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

/// What one read of `/proc/self` gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ProcessReading {
    /// User + system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: i64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: i64,
    /// Start time since the Unix epoch, in seconds.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: i64,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<i64>,
    /// Threads.
    pub threads: i64,
}

/// The clock ticks per second of `/proc/*/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS: f64 = 100.0;

/// Parses `/proc/self/stat` (fields after the command, which may hold spaces and parentheses),
/// given the page size and the system boot time (`btime` of `/proc/stat`).
pub(crate) fn parse_stat(stat: &str, page_size: i64, boot_time: f64) -> Option<ProcessReading> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields are numbered from 3 (state) in proc(5); index = number - 3.
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let utime = num(14)?;
    let stime = num(15)?;
    Some(ProcessReading {
        cpu_seconds: (utime + stime) / TICKS,
        threads: num(20)? as i64,
        start_time_seconds: boot_time + num(22)? / TICKS,
        virtual_bytes: num(23)? as i64,
        resident_bytes: num(24)? as i64 * page_size,
        ..ProcessReading::default()
    })
}

fn read() -> Option<ProcessReading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    // The page size is 4 KiB on the platforms HemoStat ships for; /proc/self/statm agrees.
    let mut reading = parse_stat(&stat, 4096, boot_time)?;
    reading.open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as i64)
        .unwrap_or(0);
    reading.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        });
    Some(reading)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(r.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                r.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                r.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                r.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                r.open_fds as f64,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                r.threads as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        if let Some(max) = r.max_fds {
            let g = ConstGauge::new(max as f64);
            g.encode(encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_line_is_read_even_with_spaces_and_parentheses_in_the_command() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456789 2000 18446744073709551615";
        let r = parse_stat(stat, 4096, 1_700_000_000.0).unwrap();
        assert_eq!(r.cpu_seconds, 3.0);
        assert_eq!(r.threads, 7);
        assert_eq!(r.start_time_seconds, 1_700_000_010.0);
        assert_eq!(r.virtual_bytes, 123_456_789);
        assert_eq!(r.resident_bytes, 2000 * 4096);
        assert!(parse_stat("garbage", 4096, 0.0).is_none());
    }

    #[test]
    fn this_process_can_be_read() {
        let r = read().expect("/proc/self is readable on Linux");
        assert!(
            r.resident_bytes > 0 && r.open_fds > 0 && r.threads >= 1,
            "{r:?}"
        );
    }
}
