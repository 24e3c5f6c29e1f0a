//! A stand-in for systemd's notify socket: a Unix datagram socket the test binds and passes to
//! ssegate as `NOTIFY_SOCKET`, recording each message with the PID of the process that sent it
//! (from the kernel's `SCM_CREDENTIALS`, as systemd reads it, not from what the message claims).
//!
//! When a message with `READY=1` arrives, the receiving thread at once looks up the sender's
//! listening TCP sockets and connects to each, so a test can tell what accepted connections at
//! the moment the process said it was ready, whatever the test itself was doing then.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One datagram as received.
#[derive(Debug, Clone)]
pub struct Message {
    /// The sender, as the kernel reports it.
    pub pid: u32,
    pub text: String,
    pub at: Instant,
    /// For a `READY=1`: the sender's listening addresses that accepted a connection right
    /// when the message arrived.
    pub accepting: Vec<SocketAddr>,
}

impl Message {
    /// The value of `KEY=` in the message.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    /// Whether the message has the line `KEY=value`.
    pub fn has(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }
}

pub struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<Message>>>,
    stop: Arc<AtomicBool>,
    receiver: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads an int of the size given from `on`.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_PASSCRED: {}", std::io::Error::last_os_error());
        // Lets the thread look at `stop` now and then.
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let receiver = {
            let (messages, stop) = (messages.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(message) = receive(&socket) {
                        messages.lock().unwrap().push(message);
                    }
                }
            })
        };
        NotifySocket {
            path,
            messages,
            stop,
            receiver: Some(receiver),
            _dir: dir,
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("UTF-8 temp path")
    }

    /// Every message so far, in arrival order.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// The messages so far from process `pid`.
    pub fn from(&self, pid: u32) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.pid == pid)
            .collect()
    }

    /// Waits up to `timeout` for the `n`th message (counting from 1) from `pid` that `matches`,
    /// and returns it; fails the test, listing every message, if none comes.
    pub async fn wait_nth(
        &self,
        pid: u32,
        n: usize,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Message) -> bool,
    ) -> Message {
        let found = super::poll(timeout, || {
            let found = self.from(pid).into_iter().filter(|m| matches(m)).nth(n - 1);
            std::future::ready(found)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "no {what} from pid {pid} within {timeout:?}; received: {:#?}",
                self.messages()
            )
        })
    }

    /// Waits for the first message from `pid` that has `KEY=value`.
    pub async fn wait_for(&self, pid: u32, key: &str, value: &str, timeout: Duration) -> Message {
        let what = format!("{key}={value}");
        self.wait_nth(pid, 1, &what, timeout, |m| m.has(key, value))
            .await
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(receiver) = self.receiver.take() {
            let _ = receiver.join();
        }
    }
}

/// Receives one datagram with its sender's credentials; `None` on a timeout.
fn receive(socket: &UnixDatagram) -> Option<Message> {
    let mut buf = [0u8; 4096];
    // Room for one `ucred` control message, aligned as `cmsghdr` needs.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no buffers); the fields are set below.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: the buffers the header points to live until the call returns.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, 0) };
    if n < 0 {
        return None;
    }
    let at = Instant::now();
    let mut pid = 0;
    // SAFETY: walks the control messages the kernel wrote into `control`, within its length.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
            {
                let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                pid = cred.pid as u32;
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    let text = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
    let ready = text.lines().any(|l| l == "READY=1");
    let accepting = if ready {
        listening_tcp(pid)
            .into_iter()
            .filter(|addr| TcpStream::connect_timeout(addr, Duration::from_secs(1)).is_ok())
            .collect()
    } else {
        Vec::new()
    };
    Some(Message {
        pid,
        text,
        at,
        accepting,
    })
}

/// The IPv4 addresses process `pid` listens on (from `/proc/PID/net/tcp` and its descriptors).
pub fn listening_tcp(pid: u32) -> Vec<SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| {
                    let link = std::fs::read_link(fd.path()).ok()?;
                    let link = link.to_str()?;
                    Some(
                        link.strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A");
            if !listening || !inodes.iter().any(|i| Some(&i.as_str()) == fields.get(9)) {
                return None;
            }
            let (ip, port) = fields.get(1)?.split_once(':')?;
            // The address is the kernel's 32-bit value in network order, printed as a host
            // integer.
            let ip = Ipv4Addr::from(u32::from_be(u32::from_str_radix(ip, 16).ok()?));
            let port = u16::from_str_radix(port, 16).ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        })
        .collect()
}
