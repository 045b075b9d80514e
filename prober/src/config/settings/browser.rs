//! `browser:` in `prober.yaml`: how browser checks run their browsers.

use std::path::PathBuf;

use serde::Deserialize;

use super::sink::Sink;
use super::SettingsArgs;

/// Browsers tried, in order, when `browser.executable` is not set.
pub const CANDIDATES: [&str; 4] = [
    "chromium-headless-shell",
    "chromium",
    "chromium-browser",
    "google-chrome",
];
/// Browsers at once when `browser.max_concurrent` is not set.
pub const DEFAULT_MAX_CONCURRENT: usize = 2;
/// A browser's memory budget (its process group's proportional set size) when `browser.memory_mb` is not set.
pub const DEFAULT_MEMORY_MB: u64 = 1024;

/// How browsers are run: `browser:` in `prober.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserOptions {
    /// The browser's executable; `None`: the first of [`CANDIDATES`] on `PATH`.
    pub executable: Option<PathBuf>,
    pub max_concurrent: usize,
    pub memory_mb: u64,
    /// Where failure screenshots are kept, a directory per probe.
    pub screenshots: PathBuf,
    /// Screenshots kept per probe (the oldest are deleted).
    pub screenshots_per_probe: usize,
    /// Chromium's sandbox for the pages it renders. Off only where it cannot
    /// work (a container without user namespaces); as root it is always off,
    /// since Chromium refuses to sandbox as root.
    pub sandbox: bool,
}

/// Screenshots kept per probe when `browser.screenshots_per_probe` is not set.
pub const DEFAULT_SCREENSHOTS_PER_PROBE: usize = 20;

impl Default for BrowserOptions {
    fn default() -> Self {
        BrowserOptions {
            executable: None,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            memory_mb: DEFAULT_MEMORY_MB,
            screenshots: std::env::temp_dir().join("prober-screenshots"),
            screenshots_per_probe: DEFAULT_SCREENSHOTS_PER_PROBE,
            sandbox: true,
        }
    }
}

impl BrowserOptions {
    /// The executable to run: the one set, or the first candidate found on `PATH`.
    pub fn resolve_executable(&self) -> Result<PathBuf, String> {
        if let Some(e) = &self.executable {
            return Ok(e.clone());
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for name in CANDIDATES {
            for dir in std::env::split_paths(&path) {
                let f = dir.join(name);
                if f.is_file() {
                    return Ok(f);
                }
            }
        }
        Err(format!(
            "no browser found: none of {} is on PATH; install Debian's chromium-headless-shell (or chromium) package, or set browser.executable in prober.yaml",
            CANDIDATES.join(", ")
        ))
    }
}

/// Where `prober run` keeps failure screenshots unless `browser.screenshots`
/// says otherwise (relative to the working directory).
pub const DEFAULT_SCREENSHOTS_DIR: &str = "screenshots";
/// The most browsers `browser.max_concurrent` allows (each is hundreds of MB).
pub const MAX_BROWSERS: usize = 64;
/// The least `browser.memory_mb`: below it Chromium cannot load a page.
pub const MIN_MEMORY_MB: u64 = 128;
/// The most `browser.memory_mb` (1 TiB): in bytes, a larger budget
/// overflowed, wrapped to 0 and replaced the browser after every check.
pub const MAX_MEMORY_MB: u64 = 1 << 20;

/// `browser:` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BrowserFile {
    pub(super) executable: Option<PathBuf>,
    pub(super) max_concurrent: Option<usize>,
    pub(super) memory_mb: Option<u64>,
    pub(super) screenshots: Option<PathBuf>,
    pub(super) screenshots_per_probe: Option<usize>,
    pub(super) sandbox: Option<bool>,
}

/// The file's values over the defaults; `screenshots` defaults to
/// [`DEFAULT_SCREENSHOTS_DIR`] when the file is read (the daemon).
pub(super) fn browser_of(sink: &mut Sink, args: &SettingsArgs, f: BrowserFile) -> BrowserOptions {
    let d = BrowserOptions::default();
    let max_concurrent = f.max_concurrent.unwrap_or(d.max_concurrent);
    if !(1..=MAX_BROWSERS).contains(&max_concurrent) {
        sink.error(
            "browser.max_concurrent",
            format!("{max_concurrent} browsers: write 1 to {MAX_BROWSERS} (default {}); each takes hundreds of MB", d.max_concurrent),
        );
    }
    let memory_mb = f.memory_mb.unwrap_or(d.memory_mb);
    if memory_mb < MIN_MEMORY_MB {
        sink.error(
            "browser.memory_mb",
            format!(
                "{memory_mb} MB is too little for a browser; at least {MIN_MEMORY_MB} (default {})",
                d.memory_mb
            ),
        );
    } else if memory_mb > MAX_MEMORY_MB {
        sink.error(
            "browser.memory_mb",
            format!(
                "{memory_mb} MB is more than a browser can be held to; at most {MAX_MEMORY_MB} (1 TiB; default {})",
                d.memory_mb
            ),
        );
    }
    let per_probe = f.screenshots_per_probe.unwrap_or(d.screenshots_per_probe);
    if per_probe == 0 {
        sink.error(
            "browser.screenshots_per_probe",
            "keep at least 1 screenshot per probe",
        );
    }
    BrowserOptions {
        executable: f.executable,
        max_concurrent: max_concurrent.clamp(1, MAX_BROWSERS),
        memory_mb: memory_mb.max(MIN_MEMORY_MB),
        screenshots: (args.screenshots_dir.clone())
            .or(f.screenshots)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SCREENSHOTS_DIR)),
        screenshots_per_probe: per_probe.max(1),
        sandbox: !args.no_browser_sandbox && f.sandbox.unwrap_or(true),
    }
}
