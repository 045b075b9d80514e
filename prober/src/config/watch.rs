//! Hot reload triggers: file-system notifications under the probe paths and SIGHUP.
//!
//! Both end in [`Core::reload`], which applies a valid probe set as a diff and
//! keeps the errors of an invalid one (so this module only decides *when*).
//!
//! File changes come from `notify`'s recommended watcher (inotify on Linux),
//! recursive under every probe directory; a probe *file* is watched through its
//! directory, so an editor that saves by writing a new file and renaming it over
//! the old one is still seen. Notifications are filtered (hidden and temporary
//! files, anything not `.yaml`/`.yml`, and plain reads are ignored; new, removed
//! and renamed directories count) and debounced: editors save in several steps,
//! so a reload waits for [`QUIET`] without a notification (at most [`MAX_DELAY`]
//! after the first). Then the files must have *settled*: their sizes and modification
//! times are read twice, [`QUIET`] apart, and the reload waits until both readings
//! agree (at most [`SETTLE_LIMIT`]), so a file still being written is not applied
//! half-written. A file emptied in place (truncate, then write) is handled by
//! [`Core::reload`], which keeps the probes of a file that holds none until the file
//! is deleted. A probe path that cannot be watched (missing, inotify limit)
//! is reported once and tried again every [`RETRY`]; SIGHUP and
//! `POST /api/v1/reload` work whatever the watcher's state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::daemon::Core;

/// Quiet time after the last notification before reloading.
pub const QUIET: Duration = Duration::from_millis(300);
/// Longest a stream of notifications can put a reload off.
pub const MAX_DELAY: Duration = Duration::from_secs(3);
/// Longest the files may keep changing before a reload applies them as they are.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How often a probe path that cannot be watched is tried again.
pub const RETRY: Duration = Duration::from_secs(2);

const OTHER_TRIGGERS: &str = "SIGHUP and POST /api/v1/reload still reload the probes";

/// Starts the reload triggers; they end when `stop` is cancelled.
///
/// Everything that can fail here is logged; the daemon goes on without the trigger.
pub fn spawn(core: Arc<Core>, stop: CancellationToken) {
    spawn_sighup(core.clone(), stop.clone());
    let (tx, rx) = unbounded_channel();
    if let Some(watch) = Watch::start(&core.settings.probes, tx) {
        tokio::spawn(watch_loop(core, watch, rx, stop));
    }
}

/// Runs one reload off the async threads (it reads files); its outcome is logged
/// and recorded by [`Core::reload`].
async fn reload(core: &Arc<Core>, trigger: &'static str) {
    let core = core.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || core.reload(trigger)).await {
        tracing::error!(trigger, "the reload did not finish: {e}");
    }
}

#[cfg(unix)]
fn spawn_sighup(core: Arc<Core>, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered now, not in the task: a SIGHUP right after start must not kill the process.
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "cannot listen for SIGHUP ({e}); probe file changes and POST /api/v1/reload still reload the probes"
            );
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP received: reloading the probe files");
                    reload(&core, "sighup").await;
                }
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_sighup(_core: Arc<Core>, _stop: CancellationToken) {}

/// What the watcher's callback tells the reload loop.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    /// Something that may change the probe set.
    Changed,
    /// A watched directory itself was removed or moved away: watch it again when it is back.
    Gone(PathBuf),
}

/// A configured probe path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A directory: every `.yaml`/`.yml` file below it, hidden entries excepted.
    Dir(PathBuf),
    /// One file, whatever its name.
    File(PathBuf),
}

impl Target {
    fn new(path: &Path) -> Target {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if abs.is_dir() {
            Target::Dir(abs)
        } else if abs.is_file() || is_yaml(&abs) {
            Target::File(abs)
        } else {
            // Missing: a directory, unless it is named like a probe file.
            Target::Dir(abs)
        }
    }

    /// The directory to watch, and how.
    fn watch(&self) -> (PathBuf, RecursiveMode) {
        match self {
            Target::Dir(d) => (d.clone(), RecursiveMode::Recursive),
            Target::File(f) => (
                f.parent().map_or_else(|| f.clone(), Path::to_path_buf),
                RecursiveMode::NonRecursive,
            ),
        }
    }

    /// Whether `kind` happening to `path` may change what this target loads.
    fn covers(&self, path: &Path, kind: &EventKind) -> bool {
        let dir = match self {
            Target::File(f) => return path == f,
            Target::Dir(d) => d,
        };
        let Ok(rel) = path.strip_prefix(dir) else {
            return false;
        };
        if rel.as_os_str().is_empty() {
            return true; // the directory itself: removed or moved away
        }
        let hidden = rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        if hidden {
            return false;
        }
        if is_yaml(path) {
            return true;
        }
        // A directory appearing or going takes its probe files with it.
        match kind {
            EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder) => true,
            EventKind::Create(_) => path.is_dir(),
            EventKind::Modify(ModifyKind::Name(_)) => {
                path.is_dir() || (path.extension().is_none() && !path.exists())
            }
            _ => false,
        }
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Whether an event of this kind can change a file's content or existence
/// (reads, including the reload's own, and metadata changes cannot).
fn kind_matters(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) | EventKind::Other => {
            false
        }
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    }
}

/// Whether `event` may change the probe set.
fn relevant(targets: &[Target], event: &Event) -> bool {
    if event.need_rescan() {
        return true; // the kernel dropped events: anything may have changed
    }
    kind_matters(&event.kind)
        && event
            .paths
            .iter()
            .any(|p| targets.iter().any(|t| t.covers(p, &event.kind)))
}

/// The watched directory that `event` removed or moved away, if any.
fn gone<'a>(watched: &'a [(PathBuf, RecursiveMode)], event: &Event) -> Option<&'a PathBuf> {
    let lost = matches!(
        event.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    );
    if !lost {
        return None;
    }
    watched
        .iter()
        .map(|(w, _)| w)
        .find(|w| event.paths.iter().any(|p| p == *w))
}

/// The directories to watch for `targets`: one recursive watch per directory
/// (none for a directory inside another), a file's directory unless already covered.
fn plan(targets: &[Target]) -> Vec<(PathBuf, RecursiveMode)> {
    let all: Vec<(PathBuf, RecursiveMode)> = targets.iter().map(Target::watch).collect();
    let mut out: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for (path, mode) in &all {
        let covered = all.iter().any(|(other, other_mode)| {
            *other_mode == RecursiveMode::Recursive
                && path.starts_with(other)
                && (path != other || *mode == RecursiveMode::NonRecursive)
        });
        if !covered && !out.iter().any(|(p, _)| p == path) {
            out.push((path.clone(), *mode));
        }
    }
    out
}

/// The file watcher and the directories it does not watch (yet).
struct Watch {
    watcher: RecommendedWatcher,
    watched: Arc<Vec<(PathBuf, RecursiveMode)>>,
    /// Indexes into `watched` of the directories not being watched.
    unwatched: Vec<usize>,
}

impl Watch {
    /// Starts watching `paths`; `None` (with a warning) when no watcher can be had at all.
    fn start(paths: &[PathBuf], tx: UnboundedSender<Notice>) -> Option<Watch> {
        let targets: Arc<Vec<Target>> = Arc::new(paths.iter().map(|p| Target::new(p)).collect());
        let watched = Arc::new(plan(&targets));
        let handler = {
            let targets = targets.clone();
            let watched = watched.clone();
            move |res: notify::Result<Event>| handle(&targets, &watched, &tx, res)
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
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
            watcher,
            watched,
            unwatched: Vec::new(),
        };
        for i in 0..watch.watched.len() {
            let (path, mode) = &watch.watched[i];
            match watch.watcher.watch(path, *mode) {
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
    fn lost(&mut self, path: &Path) {
        if let Some(i) = self.watched.iter().position(|(p, _)| p == path) {
            if !self.unwatched.contains(&i) {
                // A directory moved away is still watched under its old name: drop that watch.
                let _ = self.watcher.unwatch(path);
                tracing::warn!(
                    path = %path.display(),
                    "the probe path was removed or moved; it is watched again once it is back ({OTHER_TRIGGERS})"
                );
                self.unwatched.push(i);
            }
        }
    }

    /// Tries the unwatched directories again; true when one is now watched.
    fn retry(&mut self) -> bool {
        let mut any = false;
        let watched = self.watched.clone();
        self.unwatched.retain(|&i| {
            let (path, mode) = &watched[i];
            match self.watcher.watch(path, *mode) {
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

/// The watcher's callback (on notify's thread): filters and forwards.
fn handle(
    targets: &[Target],
    watched: &[(PathBuf, RecursiveMode)],
    tx: &UnboundedSender<Notice>,
    res: notify::Result<Event>,
) {
    match res {
        Ok(event) => {
            if let Some(w) = gone(watched, &event) {
                let _ = tx.send(Notice::Gone(w.clone()));
            }
            if relevant(targets, &event) {
                tracing::debug!(kind = ?event.kind, paths = ?event.paths, "probe files changed");
                let _ = tx.send(Notice::Changed);
            }
        }
        Err(e) => {
            tracing::warn!(
                "the probe file watcher reported a problem: {e}; some changes may be missed \
                 (reloading now); {OTHER_TRIGGERS}"
            );
            let _ = tx.send(Notice::Changed);
        }
    }
}

/// When to reload after a burst of notifications.
#[derive(Debug, Clone, Copy)]
struct Debounce {
    quiet: Duration,
    max: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debounce {
    fn new(quiet: Duration, max: Duration) -> Debounce {
        Debounce {
            quiet,
            max,
            first: None,
            last: None,
        }
    }

    fn poke(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending reload is due: `quiet` after the last notification, at most `max` after the first.
    fn due(&self) -> Option<Instant> {
        Some((self.last? + self.quiet).min(self.first? + self.max))
    }

    fn clear(&mut self) {
        self.first = None;
        self.last = None;
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The size and modification time of every probe file: what changes while one is written.
type Fingerprint = Vec<(PathBuf, Option<(u64, std::time::SystemTime)>)>;

async fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let paths = paths.to_vec();
    let read = move || {
        crate::config::load::probe_files(&paths)
            .into_iter()
            .map(|f| {
                let meta = std::fs::metadata(&f).ok();
                let stamp = meta.and_then(|m| Some((m.len(), m.modified().ok()?)));
                (f, stamp)
            })
            .collect()
    };
    tokio::task::spawn_blocking(read).await.unwrap_or_default()
}

/// Whether the files settled since the last look; remembers this look for the next.
#[derive(Default)]
struct Settle {
    /// The last reading, and when the files were first seen changing.
    last: Option<(Fingerprint, Instant)>,
}

impl Settle {
    /// True when `now`'s reading equals the last one, or the files changed for [`SETTLE_LIMIT`].
    fn settled(&mut self, reading: Fingerprint, now: Instant) -> bool {
        match self.last.take() {
            Some((prev, _)) if prev == reading => true,
            Some((_, since)) if now.duration_since(since) >= SETTLE_LIMIT => {
                tracing::warn!(
                    "the probe files kept changing for {}s; reloading them as they are now",
                    SETTLE_LIMIT.as_secs()
                );
                true
            }
            Some((_, since)) => {
                self.last = Some((reading, since));
                false
            }
            None => {
                self.last = Some((reading, now));
                false
            }
        }
    }
}

async fn watch_loop(
    core: Arc<Core>,
    mut watch: Watch,
    mut rx: UnboundedReceiver<Notice>,
    stop: CancellationToken,
) {
    let mut debounce = Debounce::new(QUIET, MAX_DELAY);
    let mut settle = Settle::default();
    let mut retry = tokio::time::interval_at(Instant::now() + RETRY, RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = debounce.due();
        let unwatched = !watch.unwatched.is_empty();
        tokio::select! {
            () = stop.cancelled() => break,
            notice = rx.recv() => match notice {
                Some(Notice::Changed) => debounce.poke(Instant::now()),
                Some(Notice::Gone(path)) => {
                    watch.lost(&path);
                    debounce.poke(Instant::now());
                }
                None => break,
            },
            () = sleep_until(due) => {
                debounce.clear();
                let reading = fingerprint(&core.settings.probes).await;
                if settle.settled(reading, Instant::now()) {
                    reload(&core, "file-change").await;
                } else {
                    // Look again after another quiet time.
                    debounce.poke(Instant::now());
                }
            }
            _ = retry.tick(), if unwatched => {
                if watch.retry() {
                    // Files may have changed while nobody watched.
                    debounce.poke(Instant::now());
                }
            }
        }
    }
    // Dropping the watcher stops notify's thread.
    drop(watch);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    fn dir() -> Vec<Target> {
        vec![Target::Dir(PathBuf::from("/nonexistent/probes"))]
    }

    #[test]
    fn yaml_changes_count_and_reads_hidden_and_temporary_files_do_not() {
        use notify::event::DataChange;
        let t = dir();
        let modify = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(relevant(&t, &ev(modify, "/nonexistent/probes/a.yaml")));
        assert!(relevant(&t, &ev(modify, "/nonexistent/probes/sub/a.yml")));
        assert!(relevant(
            &t,
            &ev(
                EventKind::Remove(RemoveKind::File),
                "/nonexistent/probes/a.yaml"
            )
        ));
        assert!(relevant(
            &t,
            &ev(
                EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::To)),
                "/nonexistent/probes/a.yaml"
            )
        ));
        // The reload's own reads.
        for read in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(!relevant(&t, &ev(read, "/nonexistent/probes/a.yaml")));
        }
        assert!(!relevant(
            &t,
            &ev(
                EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any)),
                "/nonexistent/probes/a.yaml"
            )
        ));
        for ignored in [
            "/nonexistent/probes/.a.yaml.swp",
            "/nonexistent/probes/.hidden.yaml",
            "/nonexistent/probes/.git/x.yaml",
            "/nonexistent/probes/a.yaml~",
            "/nonexistent/probes/a.yaml.tmp",
            "/nonexistent/probes/4913",
            "/nonexistent/probes/README.md",
            "/elsewhere/a.yaml",
        ] {
            assert!(!relevant(&t, &ev(modify, ignored)), "{ignored}");
        }
    }

    #[test]
    fn directories_appearing_or_going_count() {
        let t = dir();
        assert!(relevant(
            &t,
            &ev(
                EventKind::Create(CreateKind::Folder),
                "/nonexistent/probes/team"
            )
        ));
        assert!(relevant(
            &t,
            &ev(
                EventKind::Remove(RemoveKind::Folder),
                "/nonexistent/probes/team"
            )
        ));
        assert!(relevant(
            &t,
            &ev(
                EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::From)),
                "/nonexistent/probes/team"
            )
        ));
        assert!(!relevant(
            &t,
            &ev(
                EventKind::Create(CreateKind::Folder),
                "/nonexistent/probes/.git"
            )
        ));
        assert!(!relevant(
            &t,
            &ev(
                EventKind::Remove(RemoveKind::File),
                "/nonexistent/probes/4913"
            )
        ));
        let rescan = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(relevant(&t, &rescan));
    }

    #[test]
    fn a_probe_file_is_watched_through_its_directory_and_only_it_counts() {
        let t = vec![Target::File(PathBuf::from("/nonexistent/conf/probes.txt"))];
        assert_eq!(
            plan(&t),
            vec![(
                PathBuf::from("/nonexistent/conf"),
                RecursiveMode::NonRecursive
            )]
        );
        let write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(relevant(&t, &ev(write, "/nonexistent/conf/probes.txt")));
        assert!(!relevant(&t, &ev(write, "/nonexistent/conf/other.yaml")));
    }

    #[test]
    fn nested_and_repeated_paths_are_watched_once() {
        let t = vec![
            Target::Dir(PathBuf::from("/p")),
            Target::Dir(PathBuf::from("/p/sub")),
            Target::File(PathBuf::from("/p/a.yaml")),
            Target::File(PathBuf::from("/q/a.yaml")),
            Target::File(PathBuf::from("/q/b.yaml")),
            Target::Dir(PathBuf::from("/p")),
        ];
        assert_eq!(
            plan(&t),
            vec![
                (PathBuf::from("/p"), RecursiveMode::Recursive),
                (PathBuf::from("/q"), RecursiveMode::NonRecursive),
            ]
        );
    }

    #[test]
    fn a_removed_watched_directory_is_noticed() {
        let watched = vec![(
            PathBuf::from("/nonexistent/probes"),
            RecursiveMode::Recursive,
        )];
        let removed = ev(EventKind::Remove(RemoveKind::Folder), "/nonexistent/probes");
        assert_eq!(gone(&watched, &removed), watched.first().map(|w| &w.0));
        let child = ev(
            EventKind::Remove(RemoveKind::Folder),
            "/nonexistent/probes/x",
        );
        assert_eq!(gone(&watched, &child), None);
    }

    #[test]
    fn a_reload_waits_for_two_equal_readings_or_the_settle_limit() {
        let t0 = Instant::now();
        let reading = |len: u64| -> Fingerprint {
            vec![(
                PathBuf::from("/p/a.yaml"),
                Some((len, std::time::SystemTime::UNIX_EPOCH)),
            )]
        };
        let mut s = Settle::default();
        assert!(
            !s.settled(reading(0), t0),
            "a first reading is never enough"
        );
        assert!(!s.settled(reading(10), t0 + QUIET), "still growing");
        assert!(s.settled(reading(10), t0 + QUIET * 2), "unchanged: settled");
        // Changing all the time: applied at the limit, counted from the first change.
        assert!(!s.settled(reading(1), t0));
        let mut applied_at = None;
        for i in 2..200u64 {
            let now = t0 + QUIET * i as u32;
            let settled = s.settled(reading(i), now);
            assert_eq!(settled, now - t0 >= SETTLE_LIMIT, "{i}");
            if settled {
                applied_at = Some(now - t0);
                break;
            }
        }
        assert_eq!(applied_at, Some(SETTLE_LIMIT));
    }

    #[test]
    fn a_burst_reloads_once_after_the_quiet_time_and_a_stream_at_most_max_after_its_start() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debounce::new(ms(300), ms(3_000));
        assert_eq!(d.due(), None);
        d.poke(t0);
        d.poke(t0 + ms(100));
        d.poke(t0 + ms(250));
        assert_eq!(d.due(), Some(t0 + ms(550)));
        for i in 0..40 {
            d.poke(t0 + ms(100 * i));
        }
        assert_eq!(d.due(), Some(t0 + ms(3_000)));
        d.clear();
        assert_eq!(d.due(), None);
    }
}
