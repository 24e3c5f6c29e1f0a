//! Runs the real `ssegate` binary on 127.0.0.1 with a config written for the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::free_port;

pub const BIN: &str = env!("CARGO_BIN_EXE_ssegate");

pub struct Gateway {
    /// The proxy listener.
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    child: Child,
    log_path: PathBuf,
    config_path: PathBuf,
    /// The harness's part of the config (`pingora:`, `listeners:`, `metrics:`).
    header: String,
    dir: std::sync::Arc<tempfile::TempDir>,
}

impl Gateway {
    /// Starts ssegate with `upstreams:` and `routes:` from `body`; the harness adds the
    /// `pingora:`, `listeners:` and `metrics:` sections with fresh ports and a temp directory.
    pub async fn start(body: &str) -> Gateway {
        Gateway::start_with("", body).await
    }

    /// Like [`Gateway::start`], with extra lines for the `pingora:` section (indented by two).
    pub async fn start_with(pingora_extra: &str, body: &str) -> Gateway {
        Gateway::start_full(pingora_extra, "", body).await
    }

    /// Like [`Gateway::start_with`], with extra keys for the listener (indented by four).
    pub async fn start_full(pingora_extra: &str, listener_extra: &str, body: &str) -> Gateway {
        Gateway::start_env(pingora_extra, listener_extra, &[], body).await
    }

    /// Like [`Gateway::start_full`], with extra environment variables for the process.
    pub async fn start_env(
        pingora_extra: &str,
        listener_extra: &str,
        env: &[(&str, &str)],
        body: &str,
    ) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let header = format!(
            "pingora:\n  threads: 2\n  pid_file: {d}/ssegate.pid\n  upgrade_sock: {d}/upgrade.sock\n\
             {pingora_extra}listeners:\n  - address: {addr}\n{listener_extra}metrics:\n  address: {metrics_addr}\n",
            d = dir.path().display()
        );
        let config_path = dir.path().join("ssegate.yaml");
        std::fs::write(&config_path, format!("{header}{body}")).expect("write config");
        let log_path = dir.path().join("ssegate.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ssegate");
        let mut gateway = Gateway {
            addr,
            metrics_addr,
            child,
            log_path,
            config_path,
            header,
            dir: std::sync::Arc::new(dir),
        };
        gateway.wait_ready().await;
        gateway
    }

    async fn wait_ready(&mut self) {
        let (addr, metrics_addr) = (self.addr, self.metrics_addr);
        let exited = std::cell::Cell::new(None);
        let ready = super::eventually_async(Duration::from_secs(15), || {
            let status = self.child.try_wait().ok().flatten();
            exited.set(status);
            async move {
                status.is_some()
                    || (tokio::net::TcpStream::connect(addr).await.is_ok()
                        && tokio::net::TcpStream::connect(metrics_addr).await.is_ok())
            }
        })
        .await;
        if let Some(status) = exited.get() {
            panic!("ssegate exited early ({status}):\n{}", self.log());
        }
        assert!(ready, "ssegate did not start:\n{}", self.log());
    }

    /// Starts a second process with `-u` on the same sockets and the config `body`: it takes the
    /// listening sockets over once this one is sent SIGQUIT.
    pub fn start_upgrade(&self, body: &str) -> Gateway {
        self.start_upgrade_env(&[], body)
    }

    /// Like [`Gateway::start_upgrade`], with extra environment variables for the new process.
    pub fn start_upgrade_env(&self, env: &[(&str, &str)], body: &str) -> Gateway {
        self.rewrite_config(body);
        let log_path = self.dir.path().join("ssegate-upgraded.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(BIN)
            .arg("-u")
            .arg("-c")
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ssegate -u");
        Gateway {
            addr: self.addr,
            metrics_addr: self.metrics_addr,
            child,
            log_path,
            config_path: self.config_path.clone(),
            header: self.header.clone(),
            dir: self.dir.clone(),
        }
    }

    /// Replaces the `upstreams:` and `routes:` of the config file (for a reload).
    pub fn rewrite_config(&self, body: &str) {
        std::fs::write(&self.config_path, format!("{}{body}", self.header)).expect("write config");
    }

    /// The config file ssegate was started with (and re-reads on SIGHUP).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything ssegate wrote to stderr so far (logs and access log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The access-log lines so far.
    pub fn access_log(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" access] "))
            .map(str::to_string)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// File descriptors the ssegate process has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// Resident memory of the ssegate process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS")
    }

    /// A numeric field of `/proc/PID/status` (units dropped), e.g. `VmRSS` or `FDSize`.
    pub fn status_field(&self, name: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/PID/status"))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (`TERM`, `QUIT`, `HUP`, ...) to the ssegate process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        super::poll(timeout, || {
            std::future::ready(self.child.try_wait().ok().flatten())
        })
        .await
    }

    /// Waits up to 10 s until the process (a `-u` one) listens on the upgrade socket, ready to
    /// take the listening sockets over; fails the test if it does not.
    pub async fn wait_upgrade_listening(&mut self) {
        let path = self.dir.path().join("upgrade.sock");
        let pid = self.pid();
        // Stops early if the process exits (a broken config): the assertion below says so.
        let listening = super::eventually(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
                || listening_unix_inodes(&path.to_string_lossy())
                    .iter()
                    .any(|inode| process_holds_socket(pid, *inode))
        })
        .await;
        let listening = listening && matches!(self.child.try_wait(), Ok(None));
        let exited = self.child.try_wait().ok().flatten();
        assert!(
            listening,
            "ssegate -u (exit: {exited:?}) does not listen on {}:\n{}",
            path.display(),
            self.log()
        );
    }

    pub async fn scrape(&self) -> String {
        let scraped = match super::client::get(self.metrics_addr, "/metrics").await {
            Ok(resp) => resp.text().await,
            Err(e) => Err(e),
        };
        scraped.unwrap_or_else(|e| panic!("scrape {}: {e}\n{}", self.metrics_addr, self.log()))
    }

    /// Waits up to 3 s for a sample to reach `want` and fails the test if it does not. A client
    /// sees its response before ssegate's `logging` phase counts it, so counts lag a little.
    pub async fn expect_metric(&self, sample: &str, want: f64) {
        let got = std::cell::Cell::new(None);
        let reached = super::eventually_async(Duration::from_secs(3), || async {
            got.set(self.metric(sample).await);
            got.get() == Some(want)
        })
        .await;
        assert!(reached, "{sample} is {:?}, expected {want}", got.get());
    }

    /// The value of one sample, e.g. `ssegate_streams_active{route="chat"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        sample_value(&self.scrape().await, sample)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `name{labels}` in Prometheus text; labels must be given in the exported order.
pub fn sample_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok())?
    })
}

/// Runs `ssegate -t -c path`.
pub fn check(path: &Path) -> Output {
    Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run ssegate -t")
}

/// Inodes of the Unix sockets listening on `path` (from `/proc/net/unix`).
fn listening_unix_inodes(path: &str) -> Vec<u64> {
    // Num RefCount Protocol Flags Type St Inode Path; flag __SO_ACCEPTCON (0x10000): listening.
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let listening = flags & 0x10000 != 0;
            (listening && fields.get(7) == Some(&path)).then(|| fields.get(6)?.parse().ok())?
        })
        .collect()
}

/// Whether process `pid` has the socket with `inode` open.
fn process_holds_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want))
        })
        .unwrap_or(false)
}
