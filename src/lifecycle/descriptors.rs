//! Makes room for descriptors at start: raises the open-file limit, then grows the process's
//! descriptor table once, instead of while connections pour in.
//!
//! A stream holds two descriptors, and the usual soft `RLIMIT_NOFILE` is 1 024: about 500
//! streams. Wherever nothing outside raised it (a container, whose runtime gives a soft limit of
//! 1 024 under a hard limit of 524 288; a shell), ssegate raises the soft limit to the hard one
//! at start, as nginx's `worker_rlimit_nofile` does by hand. That is safe here:
//! every socket is polled with epoll, never `select`, which is what the low soft limit protects.
//! The hard limit stays the operator's (`LimitNOFILE=` under systemd).
//!
//! Linux grows a process's descriptor table by doubling it (64, 128, ... slots) when a new
//! descriptor does not fit. In a multi-threaded process each growth waits for an RCU grace
//! period (`expand_fdtable` calls `synchronize_rcu`), which stalls the thread that accepts or
//! connects for tens of milliseconds. A proxy holds two descriptors per stream, so without this
//! the 250th, 500th, 1 000th ... stream of a burst waits: measured on a burst of 1 000 streams,
//! the streams opened right at 256 and 512 waited 25–30 ms for their response head, against
//! under 1 ms for the others. (nginx does not see it: its workers are single-threaded, and the
//! kernel skips the wait then.)
//!
//! Reserving the table at start costs 8 bytes of kernel memory per slot and no process memory.
//! It runs as a background service ([`ReserveTable`]), so that it happens in the process that
//! serves: Pingora's daemon mode forks, and a fork copies only as much table as is in use.

use std::fs::File;
use std::os::fd::AsRawFd;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

/// A background service that raises the limit and reserves the table when the server starts,
/// then ends.
pub(crate) struct ReserveTable;

#[async_trait]
impl BackgroundService for ReserveTable {
    async fn start(&self, _shutdown: ShutdownWatch) {
        match raise_soft_limit() {
            Ok(Some((from, to))) => log::info!("open-file limit raised from {from} to {to}"),
            Ok(None) => {}
            Err(e) => log::warn!("could not raise the open-file limit to its hard limit: {e}"),
        }
        match reserve_table() {
            Some(slots) => log::debug!("descriptor table reserved for {slots} descriptors"),
            None => log::warn!("could not reserve the descriptor table; it grows on demand"),
        }
    }
}

/// Sets the soft `RLIMIT_NOFILE` to the hard one; returns the limits before and after, or
/// `None` if the soft limit was already there.
pub(crate) fn raise_soft_limit() -> std::io::Result<Option<(u64, u64)>> {
    let mut limit = open_files_limit()?;
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(None);
    }
    let from = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some((from, limit.rlim_cur)))
}

fn open_files_limit() -> std::io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(limit)
}

/// Slots reserved at most: enough for 32 000 streams, 512 KiB of kernel memory. Beyond it the
/// table still grows, one stall per doubling.
const MAX_RESERVED: u64 = 64 * 1024;

/// Grows the descriptor table to the soft `RLIMIT_NOFILE` (at most [`MAX_RESERVED`]); returns
/// the number of slots, or `None` if the kernel refused (nothing is lost then: the table grows
/// on demand as before).
pub(crate) fn reserve_table() -> Option<u64> {
    let limit = open_files_limit().ok()?;
    let slots = limit.rlim_cur.min(MAX_RESERVED);
    let highest = libc::c_int::try_from(slots.checked_sub(1)?).ok()?;
    let probe = File::open("/dev/null").ok()?;
    // F_DUPFD returns the lowest free descriptor at or above `highest`: the table grows to hold
    // it, and keeps that size after the copy is closed.
    // SAFETY: fcntl on a descriptor this function owns; the copy is closed at once.
    let copy = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_DUPFD, highest) };
    if copy < 0 {
        return None;
    }
    // SAFETY: `copy` is a descriptor this function just created and nothing else uses.
    unsafe { libc::close(copy) };
    Some(slots)
}
