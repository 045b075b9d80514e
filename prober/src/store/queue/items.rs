//! The queue's runs, oldest first, in three parts: `front` in memory (what
//! the writer takes next), `disk` (runs only in spool segments, read back
//! into the front when it runs low), and `back` in memory (the newest, until
//! the spool has written them). Without a spool, or while the front is
//! under the memory window, every run is in the front; past the window new
//! runs go to the back and, once written to the spool, to the disk part, so
//! memory holds a window of an outage, not all of it.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::run::ProbeMeta;
use crate::store::spool::{Place, Spool};

/// What the queue holds beside a run's binary form: the entry (its probe,
/// segment, and the box's pointer and length) and the allocator's rounding.
pub const ENTRY_OVERHEAD: usize = 64;

/// A queued run: its probe, its spool segment and frame, its binary form.
#[derive(Debug)]
pub(super) struct Entry {
    pub meta: Arc<ProbeMeta>,
    pub segment: u64,
    /// Where the run's frame starts in its segment.
    pub at: u32,
    pub bytes: Box<[u8]>,
}

impl Entry {
    pub fn cost(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// Runs on disk only: consecutive run frames of one segment from the frame
/// at byte `from`, of which the first `skip` are gone (read back or dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Range {
    pub segment: u64,
    pub from: u32,
    pub skip: u64,
    pub count: u64,
    /// What the runs left would cost in memory.
    pub bytes: usize,
}

impl Range {
    pub fn left(&self) -> u64 {
        self.count - self.skip
    }
}

/// A run the queue let go of to make room.
pub(super) enum Lost {
    Memory(Entry),
    /// On disk, in this segment.
    Disk(u64),
}

#[derive(Debug, Default)]
pub(super) struct Items {
    pub front: VecDeque<Entry>,
    pub disk: VecDeque<Range>,
    pub back: VecDeque<Entry>,
    pub front_bytes: usize,
    pub back_bytes: usize,
    pub disk_bytes: usize,
    pub disk_runs: usize,
}

impl Items {
    /// Runs held, in memory and on disk.
    pub fn len(&self) -> usize {
        self.front.len() + self.disk_runs + self.back.len()
    }

    /// Bytes held (what the runs would cost in memory).
    pub fn bytes(&self) -> usize {
        self.front_bytes + self.disk_bytes + self.back_bytes
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.front_bytes + self.back_bytes
    }

    /// Adds the newest run: to the front, or behind the disk part once the
    /// front holds `window` (with a spool) or runs are on disk.
    pub fn push_back(&mut self, e: Entry, window: Option<usize>) {
        let behind = !self.disk.is_empty()
            || !self.back.is_empty()
            || window.is_some_and(|w| self.front_bytes + e.cost() > w);
        if behind {
            self.back_bytes += e.cost();
            self.back.push_back(e);
        } else {
            self.push_front_back(e);
        }
    }

    fn push_front_back(&mut self, e: Entry) {
        self.front_bytes += e.cost();
        self.front.push_back(e);
    }

    /// Puts a run back at the very front (a batch not written).
    pub fn push_front(&mut self, e: Entry) {
        self.front_bytes += e.cost();
        self.front.push_front(e);
    }

    /// Takes up to `n` runs from the front.
    pub fn take_front(&mut self, n: usize) -> Vec<Entry> {
        let n = n.min(self.front.len());
        let taken: Vec<Entry> = self.front.drain(..n).collect();
        self.front_bytes -= taken.iter().map(Entry::cost).sum::<usize>();
        taken
    }

    /// Lets go of the oldest run.
    pub fn pop_oldest(&mut self) -> Option<Lost> {
        if let Some(e) = self.front.pop_front() {
            self.front_bytes -= e.cost();
            return Some(Lost::Memory(e));
        }
        if let Some(r) = self.disk.front_mut() {
            let segment = r.segment;
            // Its size is not known without reading it: the range's average.
            let cost = r.bytes / r.left().max(1) as usize;
            self.take_from_disk(1, cost);
            return Some(Lost::Disk(segment));
        }
        let e = self.back.pop_front()?;
        self.back_bytes -= e.cost();
        Some(Lost::Memory(e))
    }

    /// `n` runs costing `cost` leave the first disk range.
    fn take_from_disk(&mut self, n: u64, cost: usize) {
        let Some(r) = self.disk.front_mut() else {
            return;
        };
        let n = n.min(r.left());
        let cost = if n == r.left() {
            r.bytes
        } else {
            cost.min(r.bytes)
        };
        r.skip += n;
        r.bytes -= cost;
        self.disk_bytes -= cost;
        self.disk_runs -= n as usize;
        if r.left() == 0 {
            self.disk.pop_front();
        }
    }

    /// Moves the back's runs on: to the disk part once the spool has
    /// written them (their memory freed), or to the front when nothing is on
    /// disk and the front is under half the window (the outage is over).
    pub fn balance(&mut self, window: usize, spool: &Spool) {
        while let Some(e) = self.back.front() {
            let to_front = self.disk.is_empty() && self.front_bytes < window / 2;
            let place = if to_front {
                Place::Never
            } else {
                spool.place(e.segment, e.at)
            };
            let Some(e) = (place != Place::Pending)
                .then(|| self.back.pop_front())
                .flatten()
            else {
                break;
            };
            self.back_bytes -= e.cost();
            match place {
                Place::Written => self.spill(&e),
                // Never written (the disk stalled or failed): it stays in
                // memory, ahead of its turn rather than blocking the rest.
                _ => self.push_front_back(e),
            }
        }
    }

    /// Adds a written run to the disk part (its range, or a new one).
    fn spill(&mut self, e: &Entry) {
        let cost = e.cost();
        match self.disk.back_mut() {
            // The back holds a segment's runs in the order they were framed.
            Some(r) if r.segment == e.segment => {
                r.count += 1;
                r.bytes += cost;
            }
            _ => self.disk.push_back(Range {
                segment: e.segment,
                from: e.at,
                skip: 0,
                count: 1,
                bytes: cost,
            }),
        }
        self.disk_bytes += cost;
        self.disk_runs += 1;
    }

    /// Adds a whole range (a segment replayed at start) behind the rest.
    pub fn push_range(&mut self, r: Range) {
        self.disk_bytes += r.bytes;
        self.disk_runs += r.left() as usize;
        self.disk.push_back(r);
    }

    /// Runs read back from `read` (a copy of the first range when the read
    /// began) go to the front; those dropped meanwhile are skipped. `ended`:
    /// the segment held fewer runs than the range; the rest are returned
    /// (lost) as their count.
    pub fn read_back(
        &mut self,
        read: &Range,
        runs: Vec<(Arc<ProbeMeta>, Box<[u8]>)>,
        ended: bool,
    ) -> u64 {
        let Some(r) = self.disk.front() else {
            return 0;
        };
        if r.segment != read.segment || r.from != read.from {
            // Every run of it was dropped meanwhile.
            return 0;
        }
        let gone = r.skip - read.skip;
        let got = runs.len() as u64;
        for (meta, bytes) in runs.into_iter().skip(gone as usize) {
            let e = Entry {
                meta,
                segment: read.segment,
                at: 0,
                bytes,
            };
            let cost = e.cost();
            self.take_from_disk(1, cost);
            self.push_front_back(e);
        }
        let mut lost = 0;
        if ended {
            let left = self
                .disk
                .front()
                .filter(|r| r.segment == read.segment && r.from == read.from);
            if let Some(r) = left {
                lost = r.left();
                debug_assert!(r.skip >= read.skip + got);
                self.take_from_disk(lost, r.bytes);
            }
        }
        lost
    }
}
