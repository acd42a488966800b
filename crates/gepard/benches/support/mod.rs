//! What the execution benches share: latency statistics, the machine's description and load,
//! and readings of other processes from `/proc` (CPU time, peak and current memory, children).
//! Standard library only: `gepard-server`'s `sse_fanout` bench includes it by path too.

#![allow(dead_code)]

use std::time::Duration;

/// Latency statistics of one series, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Nearest-rank percentile of an ascending list.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

impl Stats {
    /// Statistics of `samples`.
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        #[allow(clippy::cast_precision_loss)]
        let mean = if ms.is_empty() {
            0.0
        } else {
            ms.iter().sum::<f64>() / ms.len() as f64
        };
        Self {
            n: ms.len(),
            mean,
            p50: pct(&ms, 50.0),
            p95: pct(&ms, 95.0),
            p99: pct(&ms, 99.0),
            max: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// Reads an environment knob, falling back to `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// One line naming the machine: CPU model, cores, and the load right now.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    format!("{model}, {cores} cores, load average {}", load_average())
}

/// Kernel clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time of a process from `/proc/<pid>/stat`: its own (user + system), and that of its
/// children it has waited for (`cutime + cstime`: the run-job children of a server).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// The process itself.
    pub own: Duration,
    /// Its reaped children, summed.
    pub children: Duration,
}

/// Fields of `/proc/<pid>/stat` after the command name (which may contain spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU time of `pid` so far.
pub fn cpu(pid: u32) -> Option<Cpu> {
    let f = stat_fields(pid)?;
    // After the name: state is field 3, so utime (14) is index 11, then stime, cutime, cstime.
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let secs = |a: f64, b: f64| Duration::from_secs_f64((a + b) / TICKS_PER_SECOND);
    Some(Cpu {
        own: secs(tick(11)?, tick(12)?),
        children: secs(tick(13)?, tick(14)?),
    })
}

/// The parent of `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Live child processes of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent_of(p) == Some(pid))
        .collect()
}

/// Memory of a process from `/proc/<pid>/status`, in MiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss: f64,
    /// Peak resident set size since the process started (`VmHWM`).
    pub hwm: f64,
}

/// Memory of `pid`, or `None` once it has exited.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|k| k / 1024.0)
    };
    Some(Memory {
        rss: kib("VmRSS:")?,
        hwm: kib("VmHWM:")?,
    })
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}
