//! Operating-system bits: the open-file limit, the wall clock events carry, and the CPU time and
//! resident memory of processes read from `/proc`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, grows the descriptor table to match, and
/// returns the soft limit now in force.
///
/// 10 000 streams need 10 000 descriptors in the client and as many in the upstream; the usual
/// soft default of 1 024 is far too low. The table is grown while the process has one thread:
/// grown later, on demand, each doubling would stall the load tool's threads for tens of
/// milliseconds (an RCU grace period), and that stall would show up in every path's figures.
pub fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        // F_DUPFD at the top of the range makes the kernel size the table for it; the table
        // keeps that size after the copy is closed.
        if let Ok(highest) = libc::c_int::try_from(limit.rlim_cur.saturating_sub(1)) {
            let copy = libc::fcntl(0, libc::F_DUPFD, highest);
            if copy >= 0 {
                libc::close(copy);
            }
        }
    }
    limit.rlim_cur
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch: the send time events carry.
pub fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// User plus system CPU seconds a process has used so far (all its threads), from
/// `/proc/PID/stat`; `None` if the process is gone.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the
    // last `)`. Field 3 (state) is the first there, so utime (14) and stime (15) are 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) as f64 / ticks)
}

/// Resident set size in KiB (`VmRSS` of `/proc/PID/status`); `None` if the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Sum of [`cpu_secs`] over `pids`, counting processes that are gone as 0.
pub fn total_cpu_secs(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_secs(p)).sum()
}

/// Sum of [`rss_kib`] over `pids`, counting processes that are gone as 0.
pub fn total_rss_kib(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| rss_kib(p)).sum()
}

/// Worker threads for a runtime: the `--threads` flag, else the CPUs this process may run on
/// (which honours `taskset`).
pub fn threads(flag: Option<usize>) -> usize {
    flag.filter(|&n| n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_secs(pid).is_some());
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert_eq!(cpu_secs(u32::MAX), None);
    }
}
