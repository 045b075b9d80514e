//! The bounded queue between probing and Postgres.
//!
//! Probing never waits on the store: a finished run is pushed here and the
//! writer takes batches from the front. When Postgres is away the queue
//! grows up to its capacity; past it the oldest results are dropped, counted
//! and logged, never silently: every dropped result is in exactly one log
//! line (at most one line per [`DROP_REPORT_EVERY`], the rest reported by the
//! next line or by [`ResultQueue::report_drops`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::run::RunRecord;

/// At most one log line about dropped results per this.
pub const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct ResultQueue {
    items: Mutex<VecDeque<RunRecord>>,
    capacity: usize,
    notify: Notify,
    dropped: AtomicU64,
    /// Taken by the writer and not yet written or put back.
    in_flight: AtomicUsize,
    drops: Mutex<DropLog>,
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
    pub fn new(capacity: usize) -> ResultQueue {
        ResultQueue {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            drops: Mutex::new(DropLog::default()),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, VecDeque<RunRecord>> {
        self.items.lock()
    }

    /// Adds a result; drops the oldest one if the queue is full.
    pub fn push(&self, r: RunRecord) {
        let overflow = {
            let mut q = self.lock();
            let overflow = if q.len() >= self.capacity {
                q.pop_front()
            } else {
                None
            };
            q.push_back(r);
            overflow
        };
        if let Some(lost) = overflow {
            self.drop_counted(&lost.meta.name, 1);
        }
        self.notify.notify_one();
    }

    /// Takes up to `n` results from the front; they count in
    /// [`ResultQueue::depth`] until [`ResultQueue::written`] or
    /// [`ResultQueue::put_back`].
    pub fn take(&self, n: usize) -> Vec<RunRecord> {
        let mut q = self.lock();
        let n = n.min(q.len());
        self.in_flight.fetch_add(n, Ordering::Relaxed);
        q.drain(..n).collect()
    }

    /// The writer stored `n` results it took.
    pub fn written(&self, n: usize) {
        self.in_flight
            .fetch_sub(n.min(self.in_flight()), Ordering::Relaxed);
    }

    /// Puts a batch that could not be written back at the front, in order.
    pub fn put_back(&self, batch: Vec<RunRecord>) {
        self.written(batch.len());
        let mut lost: Option<(String, u64)> = None;
        {
            let mut q = self.lock();
            for r in batch.into_iter().rev() {
                if q.len() >= self.capacity {
                    // The batch holds the oldest results: they are the ones to lose.
                    let e = lost.get_or_insert_with(|| (r.meta.name.clone(), 0));
                    e.1 += 1;
                    continue;
                }
                q.push_front(r);
            }
        }
        if let Some((probe, n)) = lost {
            self.drop_counted(&probe, n);
        }
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
            probe = d.probe.as_deref().unwrap_or(""),
            "result queue full while Postgres was unavailable: dropped the oldest results; raise queue_capacity or restore Postgres"
        );
        d.unreported = 0;
        d.probe = None;
        d.last_line = Some(Instant::now());
    }

    /// Results queued, not counting those the writer is writing.
    pub fn len(&self) -> usize {
        self.lock().len()
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
