//! The bounded queue between probing and Postgres.
//!
//! Probing never waits on the store: a finished run is pushed here and the
//! writer takes batches from the front. When Postgres is away the queue
//! grows up to its capacity; past it the oldest results are dropped, counted
//! and logged, never silently: every dropped result is in exactly one log
//! line (at most one line per [`DROP_REPORT_EVERY`], the rest reported by the
//! next line or by [`ResultQueue::report_drops`]).
//!
//! A queued run is held in its binary form ([`codec`], ~150 bytes for a
//! typical HTTP run rather than ~2 KB as a [`RunRecord`]) and, with a spool,
//! written to disk in the same form: a run leaves the spool when it is
//! written to Postgres or dropped. With a spool, memory holds a window of
//! the queue (`spool.memory_bytes`); the rest is read back from the spool's
//! segments as the writer drains (`items.rs`).

mod items;

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

pub use self::items::ENTRY_OVERHEAD;
use self::items::{Entry, Items, Lost, Range};
use super::spool::{codec, Replayed, Spool};
use crate::run::RunRecord;

/// At most one log line about dropped results per this.
pub const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct ResultQueue {
    items: Mutex<Items>,
    capacity: usize,
    /// Most bytes queued, counting each run's binary form and [`ENTRY_OVERHEAD`].
    max_bytes: usize,
    spool: Option<Arc<Spool>>,
    /// With a spool: the memory the front may hold before new runs wait on disk.
    window: Option<usize>,
    notify: Notify,
    dropped: AtomicU64,
    /// Taken by the writer and not yet written or put back.
    in_flight: AtomicUsize,
    drops: Mutex<DropLog>,
}

/// Runs the writer took: write [`Batch::records`], then hand the batch back
/// with [`ResultQueue::written`] or [`ResultQueue::put_back`].
#[derive(Debug)]
pub struct Batch {
    pub records: Vec<RunRecord>,
    entries: Vec<Entry>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Drops not yet in a log line.
#[derive(Debug, Default)]
struct DropLog {
    unreported: u64,
    /// The probe of the newest unreported drop.
    probe: Option<String>,
    last_line: Option<Instant>,
}

impl ResultQueue {
    /// A queue in memory only, bounded by its length alone.
    pub fn new(capacity: usize) -> ResultQueue {
        ResultQueue {
            items: Mutex::new(Items::default()),
            capacity: capacity.max(1),
            max_bytes: usize::MAX,
            spool: None,
            window: None,
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            drops: Mutex::new(DropLog::default()),
        }
    }

    /// A queue of at most `capacity` runs and `max_bytes`; with a spool,
    /// holding at most `window` bytes in memory, and first the runs
    /// `replayed` from it (an earlier process's, not yet stored; on disk).
    pub fn bounded(
        capacity: usize,
        max_bytes: usize,
        spool: Option<(Arc<Spool>, usize)>,
        replayed: Vec<Replayed>,
    ) -> ResultQueue {
        let window = spool.as_ref().map(|(_, w)| (*w).max(1));
        let q = ResultQueue {
            spool: spool.map(|(s, _)| s),
            window,
            max_bytes: max_bytes.max(1),
            ..ResultQueue::new(capacity)
        };
        for r in replayed {
            let mut items = q.lock();
            items.push_range(Range {
                segment: r.segment,
                from: 0,
                skip: 0,
                count: r.runs,
                bytes: usize::try_from(r.bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_add(ENTRY_OVERHEAD.saturating_mul(r.runs as usize)),
            });
            let lost = q.room(&mut items, 0);
            drop(items);
            q.lost(lost);
        }
        q
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Items> {
        self.items.lock()
    }

    /// Adds a result (to the spool too, if there is one); drops the oldest
    /// one if the queue is full.
    pub fn push(&self, r: &RunRecord) {
        let mut bytes = Vec::with_capacity(192);
        codec::encode_run(r, &mut bytes);
        let (segment, at) = self
            .spool
            .as_ref()
            .map_or((0, 0), |s| s.append(&r.meta, &bytes));
        let e = Entry {
            meta: r.meta.clone(),
            segment,
            at,
            bytes: bytes.into_boxed_slice(),
        };
        let lost = {
            let mut q = self.lock();
            let lost = self.room(&mut q, e.cost());
            q.push_back(e, self.window);
            if let (Some(w), Some(spool)) = (self.window, &self.spool) {
                q.balance(w, spool);
            }
            lost
        };
        self.lost(lost);
        self.notify.notify_one();
    }

    /// Lets go of the oldest runs until one more costing `cost` fits (with
    /// `cost` 0: until what is held fits).
    fn room(&self, q: &mut Items, cost: usize) -> Vec<Lost> {
        let mut lost = Vec::new();
        while q.len() > 0
            && (q.len() + usize::from(cost > 0) > self.capacity
                || q.bytes() + cost > self.max_bytes)
        {
            lost.extend(q.pop_oldest());
        }
        lost
    }

    /// Counts and logs runs let go of, and tells the spool.
    fn lost(&self, lost: Vec<Lost>) {
        if lost.is_empty() {
            return;
        }
        let probe = lost.iter().find_map(|l| match l {
            Lost::Memory(e) => Some(e.meta.name.clone()),
            Lost::Disk(_) => None,
        });
        self.drop_counted(
            probe.as_deref().unwrap_or("(a run on disk)"),
            lost.len() as u64,
        );
        let mut memory = Vec::new();
        for l in lost {
            match l {
                Lost::Memory(e) => memory.push(e),
                Lost::Disk(seg) => {
                    if let Some(s) = &self.spool {
                        s.done(seg, 1);
                    }
                }
            }
        }
        self.spooled_done(&memory);
    }

    /// Takes up to `n` results from the front; they count in
    /// [`ResultQueue::depth`] until [`ResultQueue::written`] or
    /// [`ResultQueue::put_back`].
    pub fn take(&self, n: usize) -> Batch {
        self.read_back(n);
        let taken: Vec<Entry> = {
            let mut q = self.lock();
            let taken = q.take_front(n);
            self.in_flight.fetch_add(taken.len(), Ordering::Relaxed);
            taken
        };
        let mut batch = Batch {
            records: Vec::with_capacity(taken.len()),
            entries: Vec::with_capacity(taken.len()),
        };
        for e in taken {
            match codec::decode_run(&e.bytes, e.meta.clone()) {
                Ok(r) => {
                    batch.records.push(r);
                    batch.entries.push(e);
                }
                Err(err) => {
                    // Only a run replayed from a damaged spool can get here
                    // (frames are checksummed, so hardly ever).
                    tracing::error!(probe = %e.meta.name, error = %err, "a queued run cannot be read back: it is dropped");
                    self.written_entries(std::slice::from_ref(&e));
                    self.drop_counted(&e.meta.name, 1);
                }
            }
        }
        batch
    }

    /// Before a take: when the front holds fewer than `n` runs and some are
    /// on disk, reads the first range back (half a window at most). The
    /// file is read without the queue's lock, so probing never waits on it.
    fn read_back(&self, n: usize) {
        let (Some(window), Some(spool)) = (self.window, &self.spool) else {
            return;
        };
        let read = {
            let mut q = self.lock();
            q.balance(window, spool);
            if q.front.len() >= n {
                return;
            }
            match q.disk.front() {
                Some(r) => r.clone(),
                None => return,
            }
        };
        let got = spool.read_back(
            read.segment,
            read.from,
            read.skip,
            read.left(),
            (window / 2).max(1),
        );
        let (runs, ended) = match got {
            Ok(got) => got,
            // The segment is gone or not ours: its runs cannot come back.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::InvalidData
                ) =>
            {
                tracing::error!(segment = read.segment, error = %e, "cannot read queued runs back from the spool: they are dropped; check the spool directory");
                (Vec::new(), true)
            }
            // Anything else may pass (too many open files, an I/O error of
            // a network volume): the runs stay queued, tried at the next take.
            Err(e) => {
                tracing::warn!(segment = read.segment, error = %e, "cannot read queued runs back from the spool yet; trying again at the next write");
                return;
            }
        };
        let lost = self.lock().read_back(&read, runs, ended);
        if lost > 0 {
            tracing::error!(segment = read.segment, lost, "queued runs were missing from their spool segment (damaged or removed since written): they are dropped");
            self.drop_counted("(a run on disk)", lost);
            spool.done(read.segment, lost);
        }
    }

    /// The writer stored the runs of `batch`.
    pub fn written(&self, batch: Batch) {
        self.written_entries(&batch.entries);
    }

    fn written_entries(&self, entries: &[Entry]) {
        self.in_flight
            .fetch_sub(entries.len().min(self.in_flight()), Ordering::Relaxed);
        self.spooled_done(entries);
    }

    /// Tells the spool these runs need no replay (stored or dropped).
    fn spooled_done(&self, entries: &[Entry]) {
        let Some(spool) = &self.spool else {
            return;
        };
        for chunk in entries.chunk_by(|a, b| a.segment == b.segment) {
            spool.done(chunk[0].segment, chunk.len() as u64);
        }
    }

    /// Puts a batch that could not be written back at the front, in order.
    pub fn put_back(&self, batch: Batch) {
        self.in_flight
            .fetch_sub(batch.len().min(self.in_flight()), Ordering::Relaxed);
        let mut lost = Vec::new();
        {
            let mut q = self.lock();
            for e in batch.entries.into_iter().rev() {
                if q.len() >= self.capacity || q.bytes() + e.cost() > self.max_bytes {
                    // The batch holds the oldest results: they are the ones to lose.
                    lost.push(Lost::Memory(e));
                    continue;
                }
                q.push_front(e);
            }
        }
        self.lost(lost);
    }

    /// Counts `n` dropped results and logs them, at most one line per
    /// [`DROP_REPORT_EVERY`] (a long outage does not flood the log; the
    /// next line carries the ones in between).
    fn drop_counted(&self, probe: &str, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        let mut d = self.drops.lock();
        d.unreported += n;
        d.probe = Some(probe.to_string());
        if d.last_line.is_none_or(|t| t.elapsed() >= DROP_REPORT_EVERY) {
            self.log_drops(&mut d);
        }
    }

    /// Logs the drops not yet in a log line, if any (the writer calls it
    /// once a write succeeds, and the daemon at shutdown).
    pub fn report_drops(&self) {
        let mut d = self.drops.lock();
        if d.unreported > 0 {
            self.log_drops(&mut d);
        }
    }

    fn log_drops(&self, d: &mut DropLog) {
        tracing::error!(
            dropped = d.unreported,
            dropped_total = self.dropped(),
            capacity = self.capacity,
            max_bytes = self.max_bytes,
            probe = d.probe.as_deref().unwrap_or(""),
            "result queue full while Postgres was unavailable: dropped the oldest results; raise queue_capacity or queue_max_bytes, or restore Postgres"
        );
        d.unreported = 0;
        d.probe = None;
        d.last_line = Some(Instant::now());
    }

    /// Results queued, not counting those the writer is writing.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Bytes queued (not counting the batch being written), by [`ENTRY_OVERHEAD`]
    /// and binary form, in memory and on disk.
    pub fn bytes(&self) -> usize {
        self.lock().bytes()
    }

    /// Of [`ResultQueue::bytes`], those held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.lock().memory_bytes()
    }

    /// With a spool, the memory window (`spool.memory_bytes`).
    pub fn window(&self) -> Option<usize> {
        self.window
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Results not yet stored: queued and being written.
    pub fn depth(&self) -> usize {
        self.len() + self.in_flight()
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Results dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Drops counted but not yet in a log line.
    pub fn unreported_drops(&self) -> u64 {
        self.drops.lock().unreported
    }

    /// Waits until something is pushed.
    pub async fn pushed(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests;
