//! What the kernel tells through `/proc`: CPU ticks of a process, of the
//! whole machine, resident memory, and a line describing the machine.

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
pub const USER_HZ: u64 = 100;

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// utime + stime + cutime + cstime (fields 14 to 17) of a `/proc/<pid>/stat`
/// line, in clock ticks: the process's own CPU and that of its children it
/// has waited for (exited ones).
pub fn stat_ticks_with_children(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut sum = 0u64;
    for i in 11..15 {
        sum += fields.get(i)?.parse::<u64>().ok()?;
    }
    Some(sum)
}

/// CPU of every process named `postgres*` on this host, in µs, exited
/// children included (the postmaster waits for its backends, so theirs is
/// in its cutime and cstime once they are gone): backends, the WAL writer,
/// the checkpointer, autovacuum. Includes other databases' backends, so it
/// means something on a quiet machine only. `None` without a `postgres` process.
pub fn postgres_cluster_cpu_us() -> Option<u64> {
    let mut ticks = 0u64;
    let mut seen = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let comm = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(c, _)| c);
        if comm.is_some_and(|c| c.starts_with("postgres")) {
            if let Some(t) = stat_ticks_with_children(&stat) {
                ticks += t;
                seen = true;
            }
        }
    }
    seen.then_some(ticks * (1_000_000 / USER_HZ))
}

/// User + system CPU of the whole process (all threads, exited ones included), µs.
pub fn process_cpu_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    Some(stat_ticks(&stat)? * (1_000_000 / USER_HZ))
}

/// CPU ticks of another process.
pub fn pid_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// (busy, total) jiffies of the whole machine, from `/proc/stat`.
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

/// Jiffies the hypervisor gave to other guests while this machine's CPUs
/// wanted to run (`steal` of `/proc/stat`): on a shared virtual machine the
/// lateness figures cannot be better than the host lets them be.
pub fn steal_jiffies() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().next()?.split_whitespace().nth(8)?.parse().ok()
}

/// Peak resident set size in KiB (`VmHWM`, what `ru_maxrss` reports).
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// `VmHWM` of another process, KiB.
pub fn pid_peak_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&text, "VmHWM:")
}

/// A KiB field of `/proc/self/status`.
pub fn status_kib(field: &str) -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

/// The number after `field` in a `/proc/*/status` text.
fn kib_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Cores, CPU model, memory and kernel, for the first line of every table.
pub fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown", str::trim)
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_reads_utime_and_stime_past_a_name_with_spaces() {
        let line = "42 (a b) c) S 1 42 42 0 -1 4194304 98 0 0 0 36 1 0 0 20 0 1 0 142689";
        assert_eq!(stat_ticks(line), Some(37));
        assert_eq!(stat_ticks_with_children(line), Some(37));
        let parent = "7 (postgres) S 1 7 7 0 -1 4194304 98 0 0 0 36 1 500 20 20 0 1 0 142689";
        assert_eq!(stat_ticks_with_children(parent), Some(557));
    }

    #[test]
    fn a_status_field_is_read_in_kib() {
        let status = "Name:\tprober\nVmHWM:\t   63488 kB\nVmRSS:\t   61000 kB\n";
        assert_eq!(kib_field(status, "VmHWM:"), Some(63488));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }
}
