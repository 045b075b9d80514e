//! The browser processes: a bounded pool of headless Chromium, each
//! used by one check at a time.
//!
//! At most `max_concurrent` browsers exist at once (running a check or idle):
//! a check takes an idle one or, when none is idle, launches one, and a check
//! that finds every browser busy waits (inside its timeout). A browser goes
//! back to the pool only after a check that finished cleanly, while its
//! processes' memory (the whole process group's proportional set: shared
//! pages counted once) is within
//! `memory_mb` and it has run fewer than [`MAX_USES`] checks; otherwise it is
//! killed, its process group with it. An attempt cut by its timeout (a hung
//! page) never returns its browser.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::cdp::Cdp;
pub use crate::config::settings::BrowserOptions;

/// Checks one browser process runs before it is replaced (bounds what a leak can grow to).
pub const MAX_USES: u32 = 200;
/// An idle browser older than this is closed rather than reused.
pub const IDLE_FOR: Duration = Duration::from_secs(300);
/// How long a browser may take to open its DevTools port.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// The last lines of a browser's stderr kept for an error message.
const STDERR_LINES: usize = 5;

/// Counts of the pool, for `/metrics`, the benchmark and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Browser processes alive now (running a check or idle).
    pub live: usize,
    /// The most alive at once since the start.
    pub peak: usize,
    /// Browsers launched since the start.
    pub launched: u64,
    /// Browsers killed for their memory, their age in checks or a failed check.
    pub retired: u64,
}

/// The bounded pool of browsers (none is launched until a browser check runs).
#[derive(Debug)]
pub struct BrowserPool {
    opts: BrowserOptions,
    permits: Semaphore,
    idle: Mutex<Vec<(Browser, Instant)>>,
    live: Arc<AtomicUsize>,
    peak: AtomicUsize,
    launched: AtomicU64,
    retired: AtomicU64,
    /// The process groups of the browsers alive.
    groups: Arc<Mutex<Vec<u32>>>,
}

/// One browser process and its DevTools connection.
#[derive(Debug)]
pub struct Browser {
    pub cdp: Cdp,
    child: tokio::process::Child,
    pid: u32,
    uses: u32,
    live: Arc<AtomicUsize>,
    groups: Arc<Mutex<Vec<u32>>>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(self.pid);
        let _ = self.child.start_kill();
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.groups.lock().retain(|g| *g != self.pid);
    }
}

#[cfg(target_os = "linux")]
fn kill_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(not(target_os = "linux"))]
fn kill_group(_pid: u32) {}

/// A browser lent to one check; back to the pool on drop if [`Lease::keep`] was called.
#[derive(Debug)]
pub struct Lease<'a> {
    pool: &'a BrowserPool,
    browser: Option<Browser>,
    keep: bool,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    pub fn cdp(&self) -> &Cdp {
        &self
            .browser
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
            .cdp
    }

    /// The browser's memory: the proportional set of its whole process group, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.browser
            .as_ref()
            .map_or(0, |b| group_memory_bytes(b.pid))
    }

    /// The check finished cleanly and the browser is within its memory
    /// budget (the caller measured it): it may serve another.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(b) = self.browser.take() else {
            return;
        };
        // Its memory was measured by the check that called `keep`: not again here.
        if self.keep && b.uses < MAX_USES {
            self.pool.idle.lock().push((b, Instant::now()));
        } else {
            self.pool.retired.fetch_add(1, Ordering::Relaxed);
            drop(b);
        }
    }
}

impl BrowserPool {
    pub fn new(opts: BrowserOptions) -> BrowserPool {
        BrowserPool {
            permits: Semaphore::new(opts.max_concurrent.max(1)),
            opts,
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
            peak: AtomicUsize::new(0),
            launched: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            groups: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The memory of every browser alive: their process groups' proportional sets, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        let groups = self.groups.lock().clone();
        groups.into_iter().map(group_memory_bytes).sum()
    }

    pub fn options(&self) -> &BrowserOptions {
        &self.opts
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            live: self.live.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            launched: self.launched.load(Ordering::Relaxed),
            retired: self.retired.load(Ordering::Relaxed),
        }
    }

    /// A browser for one check: an idle one, or a new one. Waits while every
    /// browser the pool may run is busy.
    pub async fn lease(&self) -> Result<Lease<'_>, String> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "the browser pool is closed (the prober is stopping)".to_string())?;
        let reused = {
            let mut idle = self.idle.lock();
            // Only a browser that is still running and not stale is reused.
            let mut found = None;
            while let Some((mut b, since)) = idle.pop() {
                if since.elapsed() < IDLE_FOR && matches!(b.child.try_wait(), Ok(None)) {
                    found = Some(b);
                    break;
                }
            }
            found
        };
        let mut browser = match reused {
            Some(b) => b,
            None => self.launch().await?,
        };
        browser.uses += 1;
        Ok(Lease {
            pool: self,
            browser: Some(browser),
            keep: false,
            _permit: permit,
        })
    }

    async fn launch(&self) -> Result<Browser, String> {
        let exe = self.opts.resolve_executable()?;
        let profile = tempfile::Builder::new()
            .prefix("prober-browser-")
            .tempdir()
            .map_err(|e| format!("cannot create the browser's profile directory: {e}"))?;
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(flags(&self.opts, profile.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot run the browser {} ({e}); install Debian's chromium-headless-shell package or set browser.executable",
                exe.display()
            )
        })?;
        let pid = child.id().unwrap_or(0);
        // From here the process counts: a failed start below still kills it.
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(live, Ordering::Relaxed);
        self.launched.fetch_add(1, Ordering::Relaxed);
        let stderr = Arc::new(Mutex::new(Vec::<String>::new()));
        if let Some(err) = child.stderr.take() {
            let lines = Arc::clone(&stderr);
            tokio::spawn(async move {
                let mut r = tokio::io::BufReader::new(err).lines();
                while let Ok(Some(l)) = r.next_line().await {
                    let mut v = lines.lock();
                    if v.len() == STDERR_LINES {
                        v.remove(0);
                    }
                    v.push(l);
                }
            });
        }
        let guard = Started {
            pid,
            live: &self.live,
            armed: true,
        };
        let (port, path) = devtools_port(profile.path(), &mut child, &exe, &stderr).await?;
        let cdp = Cdp::connect(port, &path).await?;
        let mut guard = guard;
        guard.armed = false;
        self.groups.lock().push(pid);
        Ok(Browser {
            cdp,
            child,
            pid,
            uses: 0,
            live: Arc::clone(&self.live),
            groups: Arc::clone(&self.groups),
            _profile: profile,
        })
    }
}

/// Kills a browser whose start failed (the child is killed on drop; this kills its group and uncounts it).
struct Started<'a> {
    pid: u32,
    live: &'a AtomicUsize,
    armed: bool,
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pid);
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The browser's command line: headless, no first-run or background
/// traffic, its JavaScript heap within half the memory budget, DevTools on a
/// loopback port chosen by the system.
fn flags(opts: &BrowserOptions, profile: &Path) -> Vec<String> {
    let mut f: Vec<String> = [
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--mute-audio",
        "--hide-scrollbars",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
    ]
    .map(String::from)
    .into();
    // Chromium cannot sandbox its renderers when run as root: it refuses to start without this.
    if !opts.sandbox || running_as_root() {
        f.push("--no-sandbox".into());
    }
    f.push(format!(
        "--js-flags=--max-old-space-size={}",
        (opts.memory_mb / 2).max(64)
    ));
    f.push(format!("--user-data-dir={}", profile.display()));
    f.push("about:blank".into());
    f
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The port and browser path the browser wrote to `DevToolsActivePort` in its profile.
async fn devtools_port(
    profile: &Path,
    child: &mut tokio::process::Child,
    exe: &Path,
    stderr: &Mutex<Vec<String>>,
) -> Result<(u16, String), String> {
    let file = profile.join("DevToolsActivePort");
    let until = Instant::now() + LAUNCH_TIMEOUT;
    while Instant::now() < until {
        if let Ok(text) = tokio::fs::read_to_string(&file).await {
            let mut lines = text.lines();
            if let (Some(Ok(port)), Some(path)) =
                (lines.next().map(str::parse::<u16>), lines.next())
            {
                return Ok((port, path.to_string()));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(format!(
                "the browser {} exited ({status}) before it opened its DevTools port; its last words: {}",
                exe.display(),
                stderr.lock().join(" | ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "the browser {} did not open its DevTools port within {}s; the machine may be overloaded (see browser.max_concurrent)",
        exe.display(),
        LAUNCH_TIMEOUT.as_secs()
    ))
}

/// The memory of every process in the group `pgid`, in bytes: each one's
/// proportional set size (`Pss` of `/proc/<pid>/smaps_rollup`: a page shared
/// by the browser's processes counted once, split between them), or its
/// resident set where that file cannot be read. 0 where `/proc` is not.
pub fn group_memory_bytes(pgid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let page = page_size();
    let mut bytes = 0u64;
    for e in dir.flatten() {
        let name = e.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((pgrp, rss)) = group_and_rss(&stat) else {
            continue;
        };
        if pgrp != pgid {
            continue;
        }
        let pss = std::fs::read_to_string(e.path().join("smaps_rollup"))
            .ok()
            .and_then(|t| pss_kib(&t));
        bytes += pss.map_or(rss * page, |k| k * 1024);
    }
    bytes
}

/// The `Pss:` of a `smaps_rollup` text, in KiB.
fn pss_kib(rollup: &str) -> Option<u64> {
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `(pgrp, rss pages)` of a `/proc/<pid>/stat` line (fields 5 and 24; the command may hold spaces and parentheses).
fn group_and_rss(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(2)?.parse().ok()?, f.get(21)?.parse().ok()?))
}

#[cfg(target_os = "linux")]
fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(not(target_os = "linux"))]
fn page_size() -> u64 {
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_group_and_resident_pages() {
        let line = "4242 (chrome (renderer)) S 4200 4200 4200 0 -1 4194560 1 0 0 0 3 1 0 0 20 0 9 0 100 1000000 2500 18446744073709551615 0 0";
        assert_eq!(group_and_rss(line), Some((4200, 2500)));
        assert_eq!(group_and_rss("garbage"), None);
    }

    #[test]
    fn a_rollup_gives_its_proportional_set() {
        let text = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:              102400 kB\nPss:               51234 kB\nPss_Dirty:  10 kB\n";
        assert_eq!(pss_kib(text), Some(51234));
        assert_eq!(pss_kib("Rss: 1 kB\n"), None);
    }

    #[test]
    fn this_process_group_has_a_resident_set() {
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (pgrp, _) = group_and_rss(&me).unwrap();
        assert!(group_memory_bytes(pgrp) > 1024 * 1024);
    }
}
