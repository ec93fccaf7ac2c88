//! CPU time, peak RSS and load from `/proc` (BENCHMARKING.md §4).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Clock ticks per second (`getconf CLK_TCK`; 100 when that fails, Linux's usual value).
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// `utime + stime` (fields 14 and 15) of a `/proc/…/stat` file, as a duration.
pub fn cpu_time(stat: &Path) -> std::io::Result<Duration> {
    let text = std::fs::read_to_string(stat)?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("malformed stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let ticks = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| std::io::Error::other("malformed stat"))
    };
    let total = ticks(14 - 3)? + ticks(15 - 3)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks() as f64))
}

/// The `stat` file of process `pid`.
pub fn process_stat(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/stat"))
}

/// The `stat` file of the calling thread (stable for the thread's life).
pub fn current_thread_stat() -> std::io::Result<PathBuf> {
    // `/proc/thread-self` links to `<pid>/task/<tid>`.
    let link = std::fs::read_link("/proc/thread-self")?;
    Ok(Path::new("/proc").join(link).join("stat"))
}

/// Peak resident set size (`VmHWM`) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resident set size (`VmRSS`) of process `pid` now, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Machine-wide CPU time from `/proc/stat`: (busy, iowait, total) in ticks, where busy
/// excludes idle and iowait.
pub fn machine_ticks() -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = fields.iter().take(8).sum();
    let iowait = fields.get(4).copied().unwrap_or(0);
    let idle = fields.get(3).copied().unwrap_or(0) + iowait;
    Some((total.saturating_sub(idle), iowait, total))
}

/// The fractions of the machine's CPU time that were busy, and waiting for I/O, between two
/// [`machine_ticks`] readings.
pub fn busy_fraction(
    from: Option<(u64, u64, u64)>,
    to: Option<(u64, u64, u64)>,
) -> Option<(f64, f64)> {
    let ((b0, w0, t0), (b1, w1, t1)) = (from?, to?);
    let total = t1.checked_sub(t0).filter(|t| *t > 0)? as f64;
    Some((
        b1.saturating_sub(b0) as f64 / total,
        w1.saturating_sub(w0) as f64 / total,
    ))
}

/// The CPU model name, from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// CPU-seconds of a process that may be absent (the Kafka broker run by the services script,
/// whose pid file may be missing): `None` when unreadable.
pub fn optional_cpu_time(stat: Option<&Path>) -> Option<Duration> {
    stat.and_then(|p| cpu_time(p).ok())
}

/// `/proc/<pid>/stat` of a service the services script started, from its pid file
/// (`pid_file` relative to `IMPULSE_SERVICES_DIR`, or to `<workspace>/.services`), when it runs.
pub fn service_stat(pid_file: &str) -> Option<PathBuf> {
    let dir = match std::env::var("IMPULSE_SERVICES_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => crate::workspace_root().join(".services"),
    };
    let pid: u32 = std::fs::read_to_string(dir.join(pid_file))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = process_stat(pid);
    stat.exists().then_some(stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_rss() {
        let stat = process_stat(std::process::id());
        let before = cpu_time(&stat).expect("own stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = cpu_time(&stat).expect("own stat");
        assert!(after >= before);
        assert!(peak_rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert!(current_thread_stat().expect("thread-self").exists());
        let (busy, _, total) = machine_ticks().expect("/proc/stat");
        assert!(busy <= total && total > 0);
    }
}
