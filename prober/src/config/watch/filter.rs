//! Which file-system events may change the probe set, and which directories
//! to watch for them.
//!
//! A probe *file* is watched through its directory, so an editor that saves by
//! writing a new file and renaming it over the old one is still seen. Events
//! are filtered: hidden and temporary files, anything not `.yaml`/`.yml`, and
//! plain reads are ignored; new, removed and renamed directories count.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind};
use notify::{Event, EventKind, RecursiveMode};

/// A configured probe path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A directory: every `.yaml`/`.yml` file below it, hidden entries excepted.
    Dir(PathBuf),
    /// One file, whatever its name.
    File(PathBuf),
}

impl Target {
    pub fn new(path: &Path) -> Target {
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
pub fn relevant(targets: &[Target], event: &Event) -> bool {
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
pub fn gone<'a>(watched: &'a [(PathBuf, RecursiveMode)], event: &Event) -> Option<&'a PathBuf> {
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
pub fn plan(targets: &[Target]) -> Vec<(PathBuf, RecursiveMode)> {
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
}
