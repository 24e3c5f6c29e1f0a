//! Tells the service manager what the process is doing, over systemd's notify protocol
//! (`sd_notify`), so a `Type=notify` unit knows when ssegate is ready, reloading or stopping,
//! which process is the main one after a graceful upgrade, and that the process is alive.
//!
//! Without it systemd can only guess: `Type=simple` calls a process ready the moment it is
//! started, before any socket is bound, and `Type=forking` waits for a fork and a pid file. With
//! it, `systemctl start` returns once every listener accepts connections, `systemctl status`
//! shows reloads and drains, and the watchdog restarts a process that stopped running.
//!
//! The messages, and who sends them:
//!
//! | when | message |
//! | --- | --- |
//! | every listener and the metrics address listen in this process | `MAINPID=<pid>`, `READY=1` |
//! | a SIGHUP reload starts | `RELOADING=1`, `MONOTONIC_USEC=<now>` |
//! | it ends (applied or rejected) | `READY=1` |
//! | SIGTERM or SIGINT: the drain begins | `STOPPING=1` |
//! | SIGQUIT: the sockets go to a new process | a `STATUS=` line only |
//! | with `WATCHDOG_USEC` set, every half interval while serving | `WATCHDOG=1` |
//!
//! `MAINPID=` makes a process started by `ExecReload` (`ssegate -u`) the unit's main process; it
//! is sent at every start, which is harmless when it is the main process already. The old process
//! of an upgrade does not send `STOPPING=1`: the unit is not stopping, and systemd would take it
//! as the whole service going down and stop the new process with it. It stops its watchdog pings
//! instead, so that only the new process keeps the unit alive.
//!
//! Readiness is read from the kernel rather than assumed: Pingora binds its listeners inside its
//! services' runtimes and says nothing when they are bound, so [`NotifyService`] looks for
//! listening sockets with the configured addresses among the process's own descriptors. On an
//! upgrade the sockets come from the old process and are found at once.
//!
//! Without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`/`forking`) nothing is sent and
//! nothing is logged. A message that cannot be sent is logged once, as a warning.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use sd_notify::NotifyState;

/// Where the process is, as far as the service manager is told.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Started, not yet listening: reloads are not reported (a `READY=1` at the end of one
    /// would tell systemd the process is ready before its listeners are).
    Starting,
    /// `READY=1` sent.
    Serving,
    /// Draining, after SIGTERM, SIGINT or SIGQUIT: no more `READY=1` or watchdog pings.
    Ending,
}

/// The phase, and the lock that keeps messages in the order the phases change.
static PHASE: Mutex<Phase> = Mutex::new(Phase::Starting);

/// Whether a service manager listens: `NOTIFY_SOCKET` is set. Read once, at the first message.
fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()))
}

/// Runs `f` with the phase, holding the lock, so a reload's `READY=1` cannot slip in after a
/// `STOPPING=1` sent by another thread.
fn with_phase<T>(f: impl FnOnce(&mut Phase) -> T) -> T {
    let mut phase = PHASE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut phase)
}

/// Sends one datagram; a failure is logged once as a warning, then at debug level.
fn send(states: &[NotifyState]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states) {
        let message = states
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        if WARNED.swap(true, Ordering::Relaxed) {
            log::debug!("cannot notify the service manager ({message}): {e}");
        } else {
            log::warn!(
                "cannot notify the service manager ({message}) on NOTIFY_SOCKET: {e}; further \
                 failures are logged at debug level"
            );
        }
    }
}

/// A SIGHUP reload begins. systemd 253 and later want the monotonic clock with `RELOADING=1` (a
/// `Type=notify-reload` unit fails the reload without it); systemd 252 ignores the field.
pub(crate) fn reloading() {
    if !enabled() {
        return;
    }
    with_phase(|phase| {
        if *phase != Phase::Serving {
            return;
        }
        let mut states = vec![NotifyState::Reloading];
        match NotifyState::monotonic_usec_now() {
            Ok(now) => states.push(now),
            Err(e) => log::debug!("cannot read the monotonic clock for RELOADING=1: {e}"),
        }
        states.push(NotifyState::Status("reloading the config"));
        send(&states);
    });
}

/// A SIGHUP reload ended: applied (`true`) or rejected, the config in force staying.
pub(crate) fn reloaded(applied: bool) {
    if !enabled() {
        return;
    }
    with_phase(|phase| {
        if *phase != Phase::Serving {
            return;
        }
        let status = if applied {
            "serving; config reloaded"
        } else {
            "serving; config reload rejected, the previous config stays in force"
        };
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    });
}

/// SIGTERM or SIGINT: the process stops accepting and drains its streams, then exits.
pub(crate) fn stopping() {
    if !enabled() {
        return;
    }
    with_phase(|phase| {
        *phase = Phase::Ending;
        send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping; draining open streams"),
        ]);
    });
}

/// SIGQUIT: the listening sockets go to a new process, which will send `MAINPID=` and
/// `READY=1`; this one drains and exits. Not `STOPPING=1`: the service goes on.
pub(crate) fn handing_over() {
    if !enabled() {
        return;
    }
    with_phase(|phase| {
        *phase = Phase::Ending;
        send(&[NotifyState::Status(
            "upgrading; listening sockets handed to a new process, draining open streams",
        )]);
    });
}

/// Sends `MAINPID=` and `READY=1` once the process listens on every address, then, if systemd
/// asked for a watchdog (`WATCHDOG_USEC`), `WATCHDOG=1` every half interval until the drain.
///
/// The pings come from a timer on one of Pingora's runtimes, after a check of the phase lock:
/// a process whose runtimes or signal handling hang stops pinging, and systemd restarts it.
pub(crate) struct NotifyService {
    addresses: Vec<SocketAddr>,
}

impl NotifyService {
    /// `addresses`: every address the process must listen on before it is ready.
    pub(crate) fn new(addresses: Vec<SocketAddr>) -> Self {
        NotifyService { addresses }
    }
}

/// How often the descriptors are looked at while the listeners are being bound.
const LISTEN_POLL: Duration = Duration::from_millis(10);

#[async_trait]
impl BackgroundService for NotifyService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if !enabled() {
            return;
        }
        if !wait_listening(&self.addresses, &mut shutdown).await {
            return;
        }
        let ready = with_phase(|phase| {
            if *phase != Phase::Starting {
                return false;
            }
            *phase = Phase::Serving;
            send(&[
                NotifyState::MainPid(std::process::id()),
                NotifyState::Ready,
                NotifyState::Status("serving"),
            ]);
            true
        });
        if !ready {
            return;
        }
        log::info!(
            "told the service manager: ready (MAINPID={})",
            std::process::id()
        );

        let Some(timeout) = sd_notify::watchdog_enabled() else {
            return;
        };
        let period = timeout / 2;
        log::info!("watchdog: WatchdogSec={timeout:?}, pinging every {period:?}");
        let mut ticks = tokio::time::interval(period);
        // After a stall, one ping, not a burst of the missed ones.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                changed = shutdown.changed() => if changed.is_err() { return },
            }
            let serving = with_phase(|phase| {
                if *phase == Phase::Serving && !*shutdown.borrow() {
                    send(&[NotifyState::Watchdog]);
                    true
                } else {
                    false
                }
            });
            if !serving {
                return;
            }
        }
    }
}

/// Waits until the process listens on every one of `addresses`; `false` if the server shuts
/// down first.
async fn wait_listening(addresses: &[SocketAddr], shutdown: &mut ShutdownWatch) -> bool {
    let mut waited = Duration::ZERO;
    loop {
        if *shutdown.borrow() {
            return false;
        }
        let listening = listening_addresses();
        let missing: Vec<&SocketAddr> = addresses
            .iter()
            .filter(|a| !listening.contains(a))
            .collect();
        if missing.is_empty() {
            return true;
        }
        if waited == Duration::from_secs(10) {
            log::warn!(
                "not ready after 10s: not listening on {missing:?} yet; the service manager is \
                 told once every address listens"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(LISTEN_POLL) => waited += LISTEN_POLL,
            // A change is looked at at the top of the loop; an error means the server is gone.
            changed = shutdown.changed() => if changed.is_err() { return false },
        }
    }
}

/// The local addresses of the listening TCP sockets among this process's descriptors.
fn listening_addresses() -> Vec<SocketAddr> {
    let Ok(descriptors) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    descriptors
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<RawFd>().ok())
        .filter_map(|fd| listening_address(fd).ok().flatten())
        .collect()
}

/// The local address of `fd` if it is a listening IPv4 or IPv6 socket. The descriptor may be
/// closed (and its number reused) meanwhile by another thread: the calls only read, and a
/// wrong answer is corrected at the next look.
fn listening_address(fd: RawFd) -> io::Result<Option<SocketAddr>> {
    let mut accepting: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `accepting`, an int of that size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        // Not a socket (ENOTSOCK), or gone: not a listener.
        return Ok(None);
    }
    if accepting == 0 {
        return Ok(None);
    }
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `storage`, a sockaddr_storage of that
    // size, and sets `len` to the size of the address.
    if unsafe { libc::getsockname(fd, storage.as_mut_ptr().cast(), &mut len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zeroed, then (partly) written by getsockname; every bit pattern is valid for it.
    let storage = unsafe { storage.assume_init() };
    Ok(socket_addr(&storage))
}

/// Converts a socket address from the kernel to Rust's, for the two IP families.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which fits in it.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which fits in it.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_every_address_listens() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addresses = [first.local_addr().unwrap(), second.local_addr().unwrap()];
        // The second address is free again, and nothing listens on it.
        drop(second);
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let mut waiting = Box::pin(async move { wait_listening(&addresses, &mut rx).await });
        for _ in 0..5 {
            assert!(
                tokio::time::timeout(LISTEN_POLL * 3, waiting.as_mut())
                    .await
                    .is_err(),
                "ready while {} does not listen",
                addresses[1]
            );
        }
        let second = std::net::TcpListener::bind(addresses[1]).unwrap();
        let ready = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(ready, Ok(true));
        drop((first, second, tx));
    }

    #[tokio::test]
    async fn a_shutdown_ends_the_wait() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = free.local_addr().unwrap();
        drop(free);
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let waiting = tokio::spawn(async move { wait_listening(&[address], &mut rx).await });
        tx.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(ended, Ok(Ok(false))), "{ended:?}");
    }

    #[test]
    fn finds_a_listening_socket_and_not_a_bound_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(listening_addresses().contains(&addr));

        let v6 = std::net::TcpListener::bind("[::1]:0");
        if let Ok(v6) = v6 {
            assert!(listening_addresses().contains(&v6.local_addr().unwrap()));
        }

        // Connected and unconnected sockets are not listeners.
        let client = std::net::TcpStream::connect(addr).unwrap();
        assert!(!listening_addresses().contains(&client.local_addr().unwrap()));
        drop(listener);
        assert!(!listening_addresses().contains(&addr));
    }
}
