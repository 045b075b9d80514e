//! The bounded queue between probing and Postgres.
//!
//! Probing never waits on the store: a finished run is pushed here and the
//! writer takes batches from the front. When Postgres is away the queue
//! grows up to its capacity; past it the oldest results are dropped, counted
//! and logged, never silently.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::run::RunRecord;

#[derive(Debug)]
pub struct ResultQueue {
    items: Mutex<VecDeque<RunRecord>>,
    capacity: usize,
    notify: Notify,
    dropped: AtomicU64,
}

impl ResultQueue {
    pub fn new(capacity: usize) -> ResultQueue {
        ResultQueue {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
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
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // One line per power of two keeps a long outage from flooding the log.
            if n.is_power_of_two() {
                tracing::error!(
                    dropped_total = n,
                    capacity = self.capacity,
                    oldest_probe = %lost.meta.name,
                    "result queue full while Postgres is unavailable: dropped the oldest result; raise queue_capacity or restore Postgres"
                );
            }
        }
        self.notify.notify_one();
    }

    /// Takes up to `n` results from the front.
    pub fn take(&self, n: usize) -> Vec<RunRecord> {
        let mut q = self.lock();
        let n = n.min(q.len());
        q.drain(..n).collect()
    }

    /// Puts a batch that could not be written back at the front, in order.
    pub fn put_back(&self, batch: Vec<RunRecord>) {
        let mut q = self.lock();
        for r in batch.into_iter().rev() {
            if q.len() >= self.capacity {
                // The batch holds the oldest results: they are the ones to lose.
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            q.push_front(r);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
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

    /// Waits until something is pushed.
    pub async fn pushed(&self) {
        self.notify.notified().await;
    }
}
