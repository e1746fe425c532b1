//! CPU time and memory of a process, from `/proc` (Linux).

use std::time::Duration;

/// What `/proc/<pid>` says about a process at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// User + system CPU time, all threads.
    pub(crate) cpu: Duration,
    /// Resident set size, bytes.
    pub(crate) rss: u64,
    /// Peak resident set size so far, bytes.
    pub(crate) hwm: u64,
    /// Threads.
    pub(crate) threads: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `pid` None is this process.
pub(crate) fn usage(pid: Option<u32>) -> anyhow::Result<Usage> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |pid| format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let (ticks, threads) = parse_stat(&stat)?;
    Ok(Usage {
        cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64),
        rss: status_kib(&status, "VmRSS:") * 1024,
        hwm: status_kib(&status, "VmHWM:") * 1024,
        threads,
    })
}

/// `utime + stime` in clock ticks, and the thread count.
fn parse_stat(stat: &str) -> anyhow::Result<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc stat format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime 15, num_threads 20.
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(n - 3)
            .ok_or_else(|| anyhow::anyhow!("/proc stat too short"))?
            .parse()?)
    };
    Ok((field(14)? + field(15)?, field(20)?))
}

/// The parent's pid (field 4) from a `/proc/<pid>/stat` line.
pub(crate) fn parent_pid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time the whole machine spent busy (all cores, every process), from `/proc/stat`.
pub(crate) fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|field| field.parse::<u64>().ok())
                .enumerate()
                // user nice system idle iowait irq softirq steal: all but idle and iowait
                .filter(|(i, _)| *i < 8 && *i != 3 && *i != 4)
                .map(|(_, ticks)| ticks)
                .sum()
        })
        .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// `sysconf(_SC_CLK_TCK)`: 100 on Linux.
fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (pkcv proxy) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0 100 12345 678 18446744073709551615";
        assert_eq!(parse_stat(stat).unwrap(), (300, 3));
        assert_eq!(parent_pid(stat), Some(1));
    }

    #[test]
    fn parses_status() {
        let status = "Name:\tx\nVmHWM:\t   10240 kB\nVmRSS:\t    8192 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), 8192);
        assert_eq!(status_kib(status, "VmHWM:"), 10240);
    }
}
