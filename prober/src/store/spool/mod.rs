//! The spool: every result not yet acknowledged by Postgres, on local disk,
//! so a crash or a kill loses at most [`WRITE_EVERY`] of runs (an operating
//! system crash or a power cut at most `spool.sync_every`).
//!
//! Append-only segment files `<id>.seg` in `spool.dir`, each a header
//! ([`MAGIC`], which names the format's version) and frames: a length, a
//! CRC-32C, a kind byte and the payload ([`codec`]). A segment holds a probe's
//! identity (name, version, definition) once, before its first run, so each
//! segment reads alone. Frames are gathered in memory and written by one
//! thread: to the operating system every [`WRITE_EVERY`], `fdatasync`ed every
//! `sync_every` (group commit: one sync for every run of the interval).
//!
//! A segment is deleted once every run in it is written to Postgres or
//! dropped (the queue says so with [`Spool::done`]); at start every segment
//! left is replayed into the queue (the store skips runs it holds, so a run
//! written just before a crash counts once). A torn last frame (the crash
//! came mid-write) ends its segment's replay, logged; a segment of an
//! unknown format is set aside as `<id>.seg.unreadable`, never deleted.
//!
//! One process per directory: `LOCK` is held (`flock`) while the spool is open.

pub mod codec;
mod frame;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use self::frame::{frame, walk, KIND_META, KIND_RUN};
use crate::run::ProbeMeta;

/// First bytes of every segment: the format and its version.
pub const MAGIC: &[u8; 8] = b"PRSPOOL1";
/// A segment is closed (and a new one begun) past this size.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// Gathered frames reach the operating system at least this often: what a
/// kill of the process can lose.
pub const WRITE_EVERY: Duration = Duration::from_millis(100);
/// Frames gathered and not yet written are bounded: past this (the disk
/// stalled: a hung `fdatasync`, a frozen network volume) new runs wait in
/// memory only, as without a spool, until the writer catches up. 64 MiB is
/// ~7 minutes at 1,000 runs/s.
pub const MAX_PENDING: usize = 64 << 20;
/// Segment ids from file names at or past this are not ours (a file put
/// there by hand): ignored, so ids never reach [`NOT_SPOOLED`] or wrap.
const MAX_SEGMENT_ID: u64 = 1 << 48;
/// The segment of a run that was not spooled ([`MAX_PENDING`]): no segment.
pub const NOT_SPOOLED: u64 = u64::MAX;

/// Why the spool cannot be opened: the daemon does not start.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot use spool directory {dir}: {source}; set spool.dir (PROBER_SPOOL_DIR) to a writable directory, or --no-spool (PROBER_NO_SPOOL=true, spool.enabled: false) to keep results in memory only")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("spool directory {dir} is in use by another prober process; give each instance its own spool.dir (PROBER_SPOOL_DIR)")]
    Locked { dir: PathBuf },
    #[error("cannot start the spool's writer thread: {0}; raise the process's thread or pids limit, or run with --no-spool (PROBER_NO_SPOOL=true) to keep results in memory only")]
    Thread(io::Error),
}

/// A segment left by an earlier process: its runs are queued again, on
/// disk (the queue reads them back with [`Spool::read_back`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub segment: u64,
    /// Runs in it that can be read back.
    pub runs: u64,
    /// Their encoded bytes.
    pub bytes: u64,
}
/// A run of one segment: its probe and its bytes.
pub type SegmentRun = (Arc<ProbeMeta>, Box<[u8]>);

/// Where a spooled run is ([`Spool::place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In its segment's file: it can be read back.
    Written,
    /// Gathered, not written yet.
    Pending,
    /// Never to be written: not spooled, or its segment's write failed.
    Never,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    sync_every: Duration,
    state: Mutex<State>,
    /// The writer's side: only the syncing thread takes it.
    file: Mutex<Option<(u64, File)>>,
    /// This directory's instance id (see [`Spool::instance`]).
    instance: String,
    _lock: File,
}

#[derive(Debug, Default)]
struct State {
    /// Frames not yet written.
    pending: Vec<u8>,
    /// The segment new runs go to, and its size with `pending`.
    current: u64,
    current_bytes: u64,
    /// Probes whose identity is in the current segment: their id there.
    /// Keyed by the `Arc`'s address, which cannot be reused while held here.
    metas: HashMap<usize, (u64, Arc<ProbeMeta>)>,
    /// Every segment: runs in it not yet done, and its size.
    segments: BTreeMap<u64, Segment>,
    /// A write failed: logged once until one succeeds.
    failing: bool,
    /// Runs are not spooled ([`MAX_PENDING`]): logged once until a write succeeds.
    stalled: bool,
    /// Segments whose write failed: their runs after it never reach the file.
    unwritten: std::collections::BTreeSet<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Segment {
    outstanding: u64,
    bytes: u64,
}

impl Spool {
    /// Opens (creating) `dir`, takes its lock, and reads every segment left
    /// by an earlier process: those runs are returned, in order, to be queued again.
    pub fn open(dir: &Path, sync_every: Duration) -> Result<(Spool, Vec<Replayed>), SpoolError> {
        let fail = |source| SpoolError::Dir {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(fail)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(fail)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(fail(e)),
        }
        let instance = instance_id(dir).map_err(fail)?;
        let mut ids = Vec::new();
        let mut aside_max: Option<u64> = None;
        for entry in fs::read_dir(dir).map_err(fail)? {
            let name = entry.map_err(fail)?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|id| *id < MAX_SEGMENT_ID)
            {
                ids.push(id);
            } else if let Some(id) = name
                .strip_suffix(".seg.unreadable")
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|id| *id < MAX_SEGMENT_ID)
            {
                // Never reused: a later set-aside must not overwrite it.
                aside_max = aside_max.max(Some(id));
            }
        }
        ids.sort_unstable();
        let mut state = State::default();
        let mut replayed = Vec::new();
        for &id in &ids {
            let path = segment_path(dir, id);
            let (mut runs, mut bytes) = (0, 0);
            let counted = walk(&path, 0, |_, run| {
                runs += 1;
                bytes += run.len() as u64;
                true
            });
            match counted {
                Ok(()) => {
                    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    state.segments.insert(
                        id,
                        Segment {
                            outstanding: runs,
                            bytes: size,
                        },
                    );
                    if runs > 0 {
                        replayed.push(Replayed {
                            segment: id,
                            runs,
                            bytes,
                        });
                    }
                }
                Err(e) => {
                    let aside = path.with_extension("seg.unreadable");
                    tracing::error!(segment = %path.display(), error = %e, set_aside = %aside.display(), "a spool segment cannot be read: it is set aside, not replayed; its runs are not stored");
                    let _ = fs::rename(&path, &aside);
                }
            }
        }
        state.current = ids.last().copied().max(aside_max).map_or(0, |l| l + 1);
        state.segments.insert(state.current, Segment::default());
        if !replayed.is_empty() {
            tracing::info!(
                runs = replayed.iter().map(|r| r.runs).sum::<u64>(),
                segments = ids.len(),
                dir = %dir.display(),
                "replaying results an earlier process spooled but had not stored"
            );
        }
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                sync_every,
                state: Mutex::new(state),
                file: Mutex::new(None),
                instance,
                _lock: lock,
            },
            replayed,
        ))
    }

    /// An id kept in the directory across restarts, and held by one process
    /// at a time (the lock): what this process claims in Postgres under it
    /// was claimed by this process or by an earlier one that has stopped.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Appends an encoded run of `meta`; returns the segment it is in and
    /// where its frame starts there, or [`NOT_SPOOLED`] while the disk does
    /// not keep up.
    pub fn append(&self, meta: &Arc<ProbeMeta>, run: &[u8]) -> (u64, u32) {
        let mut s = self.state.lock();
        let s = &mut *s;
        if s.pending.len() >= MAX_PENDING {
            if !std::mem::replace(&mut s.stalled, true) {
                tracing::error!(dir = %self.dir.display(), waiting_mib = MAX_PENDING >> 20, "the spool's disk does not keep up (its writes have not finished): new results wait in memory only, and a crash now loses them, until it does; check the spool directory's volume");
            }
            return (NOT_SPOOLED, 0);
        }
        let key = Arc::as_ptr(meta) as usize;
        let next_id = s.metas.len() as u64;
        let start = s.pending.len();
        let id = match s.metas.get(&key) {
            Some((id, _)) => *id,
            None => {
                s.metas.insert(key, (next_id, meta.clone()));
                frame(&mut s.pending, KIND_META, next_id, |out| {
                    codec::encode_meta(meta, out)
                });
                next_id
            }
        };
        // The run's frame starts after the header, the frames before it in
        // the segment, and its probe's identity if that came first.
        let at = MAGIC.len() as u64 + s.current_bytes + (s.pending.len() - start) as u64;
        frame(&mut s.pending, KIND_RUN, id, |out| {
            out.extend_from_slice(run)
        });
        s.current_bytes += (s.pending.len() - start) as u64;
        let seg = s.segments.entry(s.current).or_default();
        seg.outstanding += 1;
        // A segment rolls at SEGMENT_BYTES and a frame is at most MAX_FRAME.
        (s.current, u32::try_from(at).unwrap_or(u32::MAX))
    }

    /// Whether the run framed at `at` in segment `seg` is in its file yet.
    pub fn place(&self, seg: u64, at: u32) -> Place {
        if seg == NOT_SPOOLED {
            return Place::Never;
        }
        let s = self.state.lock();
        match s.segments.get(&seg) {
            // Whole gathered chunks are written: a frame is in or out.
            Some(g) if g.bytes > u64::from(at) => Place::Written,
            Some(_) if seg == s.current => Place::Pending,
            // An earlier segment is complete unless its write failed.
            Some(_) if s.unwritten.contains(&seg) => Place::Never,
            Some(_) => Place::Pending,
            None => Place::Never,
        }
    }

    /// Reads back the runs of segment `seg` framed at or after byte `from`:
    /// after the first `skip`, at most `max_runs`, stopping once `max_bytes`
    /// are read. Also whether the segment ended before `max_runs` (its file
    /// damaged since: those runs are lost). Blocking (reads the file).
    pub fn read_back(
        &self,
        seg: u64,
        from: u32,
        skip: u64,
        max_runs: u64,
        max_bytes: usize,
    ) -> io::Result<(Vec<SegmentRun>, bool)> {
        let (mut seen, mut bytes) = (0u64, 0usize);
        let mut runs = Vec::new();
        walk(&segment_path(&self.dir, seg), from as usize, |meta, run| {
            seen += 1;
            if seen > skip {
                bytes += run.len();
                runs.push((meta.clone(), run.into()));
            }
            (runs.len() as u64) < max_runs && bytes < max_bytes
        })?;
        let ended = (runs.len() as u64) < max_runs && bytes < max_bytes;
        Ok((runs, ended))
    }

    /// `n` runs of segment `seg` are stored or dropped: none of them need replaying.
    pub fn done(&self, seg: u64, n: u64) {
        let mut s = self.state.lock();
        if let Some(g) = s.segments.get_mut(&seg) {
            g.outstanding = g.outstanding.saturating_sub(n);
        }
    }

    /// Bytes in segments on disk and gathered for them.
    pub fn bytes(&self) -> u64 {
        let s = self.state.lock();
        s.segments.values().map(|g| g.bytes).sum::<u64>() + s.pending.len() as u64
    }

    /// Writes what is gathered to the operating system, `fdatasync`s when
    /// `sync`, and deletes the segments whose runs are all done. Blocking:
    /// call it from a thread that may block.
    /// `closing`: no run comes after this flush, so the current segment goes
    /// too when its runs are all done.
    pub fn flush(&self, sync: bool, closing: bool) {
        let mut file = self.file.lock();
        let (seg, pending) = {
            let mut s = self.state.lock();
            let pending = std::mem::take(&mut s.pending);
            let seg = s.current;
            if s.current_bytes >= SEGMENT_BYTES {
                s.roll();
            }
            (seg, pending)
        };
        let written = self.write(&mut file, seg, &pending, sync);
        let mut s = self.state.lock();
        match written {
            Ok(()) => {
                if let Some(g) = s.segments.get_mut(&seg) {
                    g.bytes += pending.len() as u64;
                }
                if std::mem::take(&mut s.failing) | std::mem::take(&mut s.stalled) {
                    tracing::info!(dir = %self.dir.display(), "the spool is written again");
                }
            }
            Err(e) => {
                // What the failed write left in the file may be torn, and the
                // runs gathered since name probes whose identity was in the
                // lost frames: they are given up (they still wait in memory)
                // and later runs go to a new segment, which reads alone.
                *file = None;
                s.pending.clear();
                // Both lose frames: the one written, and the one begun
                // since if it rolled.
                s.unwritten.insert(seg);
                let current = s.current;
                s.unwritten.insert(current);
                s.roll();
                if !std::mem::replace(&mut s.failing, true) {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot write the spool: results still wait in memory for Postgres, but a crash now loses them; free space in the spool directory or fix its permissions");
                }
            }
        }
        let finished: Vec<u64> = s
            .segments
            .iter()
            .filter(|(id, g)| (**id < s.current || closing) && g.outstanding == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in &finished {
            s.segments.remove(id);
            s.unwritten.remove(id);
        }
        // Unlinked without the state lock: probing appends meanwhile.
        drop(s);
        for id in finished {
            if file.as_ref().is_some_and(|(open, _)| *open == id) {
                *file = None;
            }
            let path = segment_path(&self.dir, id);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot delete a spooled segment whose runs are all stored; it will be replayed (harmlessly) at the next start");
                }
            }
        }
    }

    fn write(
        &self,
        file: &mut Option<(u64, File)>,
        seg: u64,
        pending: &[u8],
        sync: bool,
    ) -> io::Result<()> {
        if pending.is_empty() && !sync {
            return Ok(());
        }
        if file.as_ref().is_none_or(|(id, _)| *id != seg) {
            if pending.is_empty() {
                return Ok(());
            }
            // The segment being closed keeps the promise too: its last frames
            // were written without a sync when the roll came.
            if let Some((_, old)) = file.take() {
                old.sync_data()?;
            }
            let path = segment_path(&self.dir, seg);
            let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
            if f.metadata()?.len() == 0 {
                f.write_all(MAGIC)?;
                if let Some(g) = self.state.lock().segments.get_mut(&seg) {
                    g.bytes += MAGIC.len() as u64;
                }
            }
            // The new file's directory entry must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            *file = Some((seg, f));
        }
        let Some((_, f)) = file else {
            return Ok(());
        };
        f.write_all(pending)?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Writes and syncs until `stop`: every [`WRITE_EVERY`] to the operating
    /// system, every `sync_every` to the disk. On a thread of its own (it blocks).
    pub fn run(
        self: Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<std::thread::JoinHandle<()>, SpoolError> {
        std::thread::Builder::new()
            .name("prober-spool".into())
            .spawn(move || {
                let mut last_sync = std::time::Instant::now();
                loop {
                    let stopping = stop.is_cancelled();
                    let sync = stopping || last_sync.elapsed() >= self.sync_every;
                    self.flush(sync, stopping);
                    if sync {
                        last_sync = std::time::Instant::now();
                    }
                    if stopping {
                        return;
                    }
                    std::thread::sleep(WRITE_EVERY.min(self.sync_every));
                }
            })
            .map_err(SpoolError::Thread)
    }
}

impl State {
    /// Starts a new segment for the runs that come next.
    fn roll(&mut self) {
        self.current += 1;
        self.current_bytes = 0;
        self.metas.clear();
        self.segments.insert(self.current, Segment::default());
    }
}

/// The directory's instance id, from its `instance` file (created with a
/// new UUID when missing or unreadable).
fn instance_id(dir: &Path) -> io::Result<String> {
    let path = dir.join("instance");
    if let Ok(text) = fs::read_to_string(&path) {
        if let Ok(id) = uuid::Uuid::parse_str(text.trim()) {
            return Ok(id.to_string());
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = dir.join("instance.tmp");
    fs::write(&tmp, format!("{id}\n"))?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, &path)?;
    // The new name must survive a crash too, or claims made under this id
    // would not be recovered after one.
    File::open(dir)?.sync_all()?;
    Ok(id)
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

#[cfg(test)]
mod tests;
