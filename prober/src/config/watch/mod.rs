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
