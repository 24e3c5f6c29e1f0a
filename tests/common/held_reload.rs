//! Holding a `SIGHUP` reload in the middle: the config file becomes an empty FIFO, so the reload
//! blocks reading it until the test writes a config, and the test can see what happens while a
//! reload runs.

use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::gateway::Gateway;

/// Replaces the config file with an empty FIFO, so the next reload blocks reading it.
pub fn make_fifo(path: &Path) {
    std::fs::remove_file(path).expect("remove config");
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: mkfifo reads the NUL-terminated path and nothing else.
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Waits until a reload has the FIFO open for reading (opening it for writing without blocking
/// succeeds only then); the write end keeps the reload waiting until it is written and dropped.
pub async fn reload_reading(gw: &Gateway) -> File {
    let path = gw.config_path().to_path_buf();
    super::poll(Duration::from_secs(15), || {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .ok();
        std::future::ready(opened)
    })
    .await
    .unwrap_or_else(|| panic!("no reload reads the config:\n{}", gw.log()))
}

/// Hands a waiting reload its config and lets it read to the end.
pub fn feed(mut fifo: File, config: &str) {
    fifo.write_all(config.as_bytes()).expect("write the config");
}
