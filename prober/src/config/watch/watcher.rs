//! The debounced file watcher (`notify-debouncer-full` over `notify`'s
//! recommended watcher, inotify on Linux) and the directories it does not watch yet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc::UnboundedSender;

use super::filter::{gone, plan, relevant, Target};
use super::{OTHER_TRIGGERS, QUIET, RETRY};

/// What the watcher's callback tells the watch loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// These paths changed in a way that may change the probe set (empty when
    /// unknown: the watcher failed, so anything may have changed).
    Changed(Vec<PathBuf>),
    /// A watched directory itself was removed or moved away: watch it again when it is back.
    Gone(PathBuf),
}

/// The file watcher and the directories it does not watch (yet).
pub struct Watch {
    debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    watched: Arc<Vec<(PathBuf, RecursiveMode)>>,
    /// Indexes into `watched` of the directories not being watched.
    pub unwatched: Vec<usize>,
}

impl Watch {
    /// Starts watching `paths`; `None` (with a warning) when no watcher can be had at all.
    ///
    /// Editors save in several steps: the debouncer coalesces what happens to a
    /// path within [`QUIET`] into one event, and delivers them in batches.
    pub fn start(paths: &[PathBuf], tx: UnboundedSender<Notice>) -> Option<Watch> {
        let targets: Vec<Target> = paths.iter().map(|p| Target::new(p)).collect();
        let watched = Arc::new(plan(&targets));
        let handler = {
            let watched = watched.clone();
            move |res: DebounceEventResult| handle(&targets, &watched, &tx, res)
        };
        let debouncer = match new_debouncer(QUIET, None, handler) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    "cannot start the probe file watcher ({e}; on Linux see the inotify limits \
                     fs.inotify.max_user_instances and max_user_watches): probe file changes are \
                     not applied automatically; {OTHER_TRIGGERS}"
                );
                return None;
            }
        };
        let mut watch = Watch {
            debouncer,
            watched,
            unwatched: Vec::new(),
        };
        for i in 0..watch.watched.len() {
            let (path, mode) = &watch.watched[i];
            match watch.debouncer.watch(path, *mode) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "watching for probe file changes")
                }
                Err(e) => {
                    warn_unwatched(path, &e);
                    watch.unwatched.push(i);
                }
            }
        }
        Some(watch)
    }

    /// A watched directory went away: watch it again once it is back.
    pub fn lost(&mut self, path: &Path) {
        if let Some(i) = self.watched.iter().position(|(p, _)| p == path) {
            if !self.unwatched.contains(&i) {
                // A directory moved away is still watched under its old name: drop that watch.
                let _ = self.debouncer.unwatch(path);
                tracing::warn!(
                    path = %path.display(),
                    "the probe path was removed or moved; it is watched again once it is back ({OTHER_TRIGGERS})"
                );
                self.unwatched.push(i);
            }
        }
    }

    /// Tries the unwatched directories again; true when one is now watched.
    pub fn retry(&mut self) -> bool {
        let mut any = false;
        let watched = self.watched.clone();
        self.unwatched.retain(|&i| {
            let (path, mode) = &watched[i];
            match self.debouncer.watch(path, *mode) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "now watching the probe path for changes");
                    any = true;
                    false
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), "still cannot watch the probe path: {e}");
                    true
                }
            }
        });
        any
    }
}

fn warn_unwatched(path: &Path, e: &notify::Error) {
    let hint = match e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            " (the inotify watch limit is reached: raise fs.inotify.max_user_watches)"
        }
        _ => "",
    };
    tracing::warn!(
        path = %path.display(),
        "cannot watch the probe path for changes: {e}{hint}; changes there are not applied \
         automatically (tried again every {}s); {OTHER_TRIGGERS}",
        RETRY.as_secs()
    );
}

/// The debouncer's callback (on its thread): filters a batch and forwards it.
fn handle(
    targets: &[Target],
    watched: &[(PathBuf, RecursiveMode)],
    tx: &UnboundedSender<Notice>,
    res: DebounceEventResult,
) {
    match res {
        Ok(events) => {
            let mut any = false;
            let mut changed: Vec<PathBuf> = Vec::new();
            for event in &events {
                let event = &event.event;
                if let Some(w) = gone(watched, event) {
                    let _ = tx.send(Notice::Gone(w.clone()));
                }
                if relevant(targets, event) {
                    tracing::debug!(kind = ?event.kind, paths = ?event.paths, "probe files changed");
                    any = true;
                    for p in &event.paths {
                        if !changed.contains(p) {
                            changed.push(p.clone());
                        }
                    }
                }
            }
            if any {
                let _ = tx.send(Notice::Changed(changed));
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(
                    "the probe file watcher reported a problem: {e}; some changes may be missed \
                     (reloading now); {OTHER_TRIGGERS}"
                );
            }
            let _ = tx.send(Notice::Changed(Vec::new()));
        }
    }
}
