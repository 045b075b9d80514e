//! The last stretch before a tick, waited for with sub-millisecond precision.
//!
//! tokio's timer has a resolution of 1 ms: it rounds a deadline up to its next
//! millisecond, and its driver's `epoll_wait` timeout is rounded up to whole
//! milliseconds again, so a tick on tokio's timer alone starts ≈ 1 ms late at
//! the median (BENCHMARKS.md, "lateness floor"), half the p99 budget of 2 ms.
//! So the wait for a tick goes to one timer thread: a heap of deadlines and
//! `recv_timeout`, a futex wait with a nanosecond timeout (an hrtimer). A
//! deadline more than [`FAR`] away is first slept on tokio's timer until
//! [`HANDOVER`] before it, so the heap holds only the ticks of the next minute;
//! a nearer one goes to the thread at once, so the waiting task is woken once.
//!
//! Only for the system clock: with paused tokio time (tests) the scheduler
//! uses tokio's timer alone. If the thread cannot start, tokio's timer is used.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long before a far deadline tokio's timer hands over to the timer
/// thread: more than tokio's own lateness (≈ 1–2 ms), so it happens in time.
pub const HANDOVER: Duration = Duration::from_millis(3);
/// Deadlines further than this are slept on tokio's timer first.
pub const FAR: Duration = Duration::from_secs(60);

type Request = (Instant, oneshot::Sender<()>);

static TIMER: OnceLock<Option<mpsc::Sender<Request>>> = OnceLock::new();

fn timer() -> Option<&'static mpsc::Sender<Request>> {
    TIMER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            match std::thread::Builder::new()
                .name("prober-timer".into())
                .spawn(move || run(rx))
            {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the timer thread; ticks use tokio's 1 ms timer");
                    None
                }
            }
        })
        .as_ref()
}

/// Waits until `at` on the timer thread (on tokio's timer first if it is far).
pub async fn sleep_until(at: tokio::time::Instant) {
    let now = tokio::time::Instant::now();
    if at >= now + FAR {
        tokio::time::sleep_until(at.checked_sub(HANDOVER).unwrap_or(at)).await;
    }
    if tokio::time::Instant::now() >= at {
        return;
    }
    let Some(tx) = timer() else {
        return tokio::time::sleep_until(at).await;
    };
    let (done, wait) = oneshot::channel();
    if tx.send((at.into_std(), done)).is_err() || wait.await.is_err() {
        tokio::time::sleep_until(at).await;
    }
}

/// A deadline in the heap; ordered by time, then by arrival.
struct Entry {
    at: Instant,
    seq: u64,
    done: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The timer thread: fires every due deadline, then waits for the next one or a new request.
fn run(rx: mpsc::Receiver<Request>) {
    let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = heap.pop() {
                // The waiter may be gone (its probe stopped): nothing to tell.
                let _ = e.done.send(());
            }
        }
        let request = match heap.peek() {
            Some(Reverse(next)) => match rx.recv_timeout(next.at.saturating_duration_since(now)) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(r) => Some(r),
                Err(_) => return,
            },
        };
        if let Some((at, done)) = request {
            seq += 1;
            heap.push(Reverse(Entry { at, seq, done }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_never_ends_before_its_deadline() {
        let start = tokio::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for ms in [5u64, 1, 4, 0, 2] {
            let at = start + Duration::from_millis(ms);
            set.spawn(async move {
                sleep_until(at).await;
                tokio::time::Instant::now() >= at
            });
        }
        let mut ended_after = Vec::new();
        while let Some(r) = set.join_next().await {
            ended_after.push(r.expect("the sleep does not panic"));
        }
        assert_eq!(ended_after, vec![true; 5]);
    }
}
