//! Watching the probe files: yields "these probe files changed" once a burst
//! of changes is over and the files have settled. Applying a reload is the
//! daemon's (`daemon::reload`); this module only decides *when*.
//!
//! File changes come from `notify`'s recommended watcher (inotify on Linux)
//! through `notify-debouncer-full`, recursive under every probe directory; a
//! probe *file* is watched through its directory ([`filter`]). The debouncer
//! coalesces the steps of an editor's save ([`QUIET`]); then the files must
//! have *settled* ([`settle`]): read twice, [`QUIET`] apart, until both readings
//! agree (at most [`SETTLE_LIMIT`]). A stream of changes thus yields one
//! [`Changed`]. A probe path that cannot be watched (missing, inotify limit) is
//! reported once and tried again every [`RETRY`]; SIGHUP and
//! `POST /api/v1/reload` work whatever the watcher's state.

mod filter;
mod settle;
mod watcher;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use settle::{fingerprint, Settle};
use watcher::{Notice, Watch};

/// Quiet time after the last notification before the files are looked at.
pub const QUIET: Duration = Duration::from_millis(300);
/// Longest the files may keep changing before a reload applies them as they are.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How often a probe path that cannot be watched is tried again.
pub const RETRY: Duration = Duration::from_secs(2);

const OTHER_TRIGGERS: &str = "SIGHUP and POST /api/v1/reload still reload the probes";

/// The probe files changed and have settled: time to reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The paths seen changing (empty when unknown: the watcher lost events,
    /// or a path came back after it could not be watched).
    pub paths: Vec<PathBuf>,
}

/// Starts watching the probe `paths`; the receiver yields a [`Changed`] for each
/// settled burst of changes and ends when `stop` is cancelled (or at once when
/// no watcher can be had: that is logged, and the daemon goes on without it).
pub fn spawn(paths: Vec<PathBuf>, stop: CancellationToken) -> mpsc::Receiver<Changed> {
    let (changed_tx, changed_rx) = mpsc::channel(1);
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(watch) = Watch::start(&paths, tx) {
        tokio::spawn(watch_loop(paths, watch, rx, changed_tx, stop));
    }
    changed_rx
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Turns the watcher's notices into [`Changed`]: waits for the files to
/// settle, and re-watches paths that went away.
async fn watch_loop(
    paths: Vec<PathBuf>,
    mut watch: Watch,
    mut rx: mpsc::UnboundedReceiver<Notice>,
    out: mpsc::Sender<Changed>,
    stop: CancellationToken,
) {
    let mut settle = Settle::default();
    // When to look at the files next; `None`: nothing pending.
    let mut due: Option<Instant> = None;
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut retry = tokio::time::interval_at(Instant::now() + RETRY, RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let unwatched = !watch.unwatched.is_empty();
        tokio::select! {
            () = stop.cancelled() => break,
            notice = rx.recv() => match notice {
                Some(Notice::Changed(changed)) => {
                    for p in changed {
                        if !seen.contains(&p) {
                            seen.push(p);
                        }
                    }
                    // The debouncer waited for quiet already: look now (unless a look is pending).
                    due.get_or_insert_with(Instant::now);
                }
                Some(Notice::Gone(path)) => {
                    watch.lost(&path);
                    due.get_or_insert_with(Instant::now);
                }
                None => break,
            },
            () = sleep_until(due) => {
                let reading = fingerprint(&paths).await;
                if !settle.settled(reading, Instant::now()) {
                    // Look again after another quiet time.
                    due = Some(Instant::now() + QUIET);
                    continue;
                }
                due = None;
                let changed = Changed { paths: std::mem::take(&mut seen) };
                tokio::select! {
                    () = stop.cancelled() => break,
                    sent = out.send(changed) => if sent.is_err() { break },
                }
            }
            _ = retry.tick(), if unwatched => {
                if watch.retry() {
                    // Files may have changed while nobody watched.
                    due.get_or_insert_with(Instant::now);
                }
            }
        }
    }
    // Dropping the debouncer stops its thread and the watcher.
    drop(watch);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir =
                std::env::temp_dir().join(format!("prober-{name}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(path: &std::path::Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    #[tokio::test]
    async fn a_burst_of_saves_yields_one_change_and_other_files_none() {
        let dir = TempDir::new("watch");
        let file = dir.0.join("a.yaml");
        write(&file, "# empty\n");
        let stop = CancellationToken::new();
        let mut changes = spawn(vec![dir.0.clone()], stop.clone());
        let none_within = |d: Duration| tokio::time::timeout(d, std::future::pending::<()>());
        let _ = none_within(QUIET).await;

        write(&dir.0.join("notes.txt"), "not a probe file");
        write(&dir.0.join(".a.yaml.swp"), "an editor's");
        let ignored = tokio::time::timeout(QUIET * 4, changes.recv()).await;
        assert!(ignored.is_err(), "{ignored:?}");

        // An editor saving in steps, then a few quick saves.
        for i in 0..6 {
            write(&file, &"#".repeat(i + 1));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let changed = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await;
        let Ok(Some(changed)) = changed else {
            panic!("no change reported: {changed:?}");
        };
        assert!(changed.paths.contains(&file), "{changed:?}");
        let again = tokio::time::timeout(QUIET * 4, changes.recv()).await;
        assert!(again.is_err(), "one burst, one change: {again:?}");

        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
        assert!(matches!(ended, Ok(None)), "{ended:?}");
    }
}
